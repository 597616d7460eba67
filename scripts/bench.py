#!/usr/bin/env python3
"""Measure the project's speed on lab fleets: the deploy path and the request path.

Run through ``make bench`` (scripts/bench.sh does the set-up first). Every fleet is a
lab of containers on this machine's Docker engine, reached over SSH as a real fleet,
on its own network (``ai-fleet-bench``), created and removed by this script.

Deploy path, for each fleet size (GPU nodes, plus one gateway):
  - the first converge of ``site.yml`` on fresh hosts (``--converge-repeat`` times),
  - a no-op re-run with the project's ``ansible.cfg`` (``--repeat`` times),
  - the same no-op with Ansible's defaults (``--repeat`` times),
  - the per-task profile of a no-op (the slowest tasks, summed over hosts' runs).

Request path, on a fleet of ``--request-nodes`` nodes (the stand-in node takes
``--inference-seconds`` per inference and holds 20 sessions, as the real one):
  - light load (one connection): p50/p99 directly to a node and through the gateway;
  - scale-out: POSTs at a fixed concurrency through the gateway with 1, 2, 4 nodes
    serving (the others drained), successful requests per second, p50, p99;
  - large audio: ASR of several sizes with the guide's chunk settings and with fast
    ones, directly and through the gateway, and whether the gateway wrote the request
    body to disk (nginx's client body folder changed during the requests).

Raw results go to ``<results>/bench-<time>.json`` (and ``latest.json``), the logs of
every run to ``<results>/logs``, a Markdown summary to ``<results>/summary.md`` and
charts to ``<results>/*.png``. Load is aimed only at the bench fleet's own addresses
and loopback, and every load run is bounded in time.
"""

from __future__ import annotations

import argparse
import base64
import hashlib
import http.client
import ipaddress
import json
import os
import re
import resource
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
import xml.etree.ElementTree as ET
from dataclasses import dataclass, field
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
NETWORK = "ai-fleet-bench"
PREFIX = "ai-bench"
GATEWAY = f"{PREFIX}-gateway-1"
REPO = f"{PREFIX}-repo"
# Ports of the node stack and the gateway (role defaults).
NODE_PORT = 8800
GATEWAY_PORT = 80
# The guide's workaround for an old unit-manager, and settings without it.
WORKAROUND = {"ai_node_audio_stream_chunk_size": 512, "ai_node_audio_stream_chunk_delay_ms": 10}
FAST = {"ai_node_audio_stream_chunk_size": 65536, "ai_node_audio_stream_chunk_delay_ms": 0}
RECAP = re.compile(r"^(\S+)\s+: ok=(\d+)\s+changed=(\d+)\s+unreachable=(\d+)\s+failed=(\d+)", re.M)
# profile_tasks prints, under each task's header, the time the previous one took;
# the last task's time comes under "TASKS RECAP".
TASK_LINE = re.compile(r"^(?:TASK|PLAY|RUNNING HANDLER) \[(.*?)\]|^TASKS RECAP")
ELAPSED = re.compile(r"\((\d+):(\d+):([\d.]+)\)\s+(\d+):(\d+):([\d.]+)")


class BenchError(Exception):
    """A step of the bench failed; the message says which and where its log is."""


@dataclass
class Bench:
    """Where the bench writes and how it runs Ansible."""

    results: Path
    venv: Path
    log_dir: Path = field(init=False)
    work: Path = field(init=False)

    def __post_init__(self) -> None:
        """Create the results and work folders."""
        self.log_dir = self.results / "logs"
        self.log_dir.mkdir(parents=True, exist_ok=True)
        self.work = ROOT / ".bench"
        self.work.mkdir(exist_ok=True)

    @property
    def inventory(self) -> Path:
        """The bench fleet's inventory folder."""
        return self.work / "inventory"

    def env(self, defaults: bool = False) -> dict:
        """Return the environment of an Ansible run (project settings or Ansible's defaults)."""
        env = dict(os.environ)
        env.update(
            {
                "PATH": f"{self.venv / 'bin'}{os.pathsep}{env.get('PATH', '')}",
                "LAB_NETWORK": NETWORK,
                "LAB_IMAGE_ARCHIVES": str(ROOT / ".cache" / "images"),
                "ANSIBLE_NOCOLOR": "1",
                "ANSIBLE_FORCE_COLOR": "0",
                "PROFILE_TASKS_TASK_OUTPUT_LIMIT": "all",
                # The bench's fact cache: emptied before each first converge.
                "ANSIBLE_CACHE_PLUGIN_CONNECTION": str(self.work / "facts"),
            }
        )
        if defaults:
            env["ANSIBLE_CONFIG"] = str(ROOT / "scripts" / "bench-ansible-defaults.cfg")
        return env

    def ansible(self, name: str, argv: list[str], defaults: bool = False) -> dict:
        """Run an Ansible command; return its wall time, recap and log path."""
        log = self.log_dir / f"{name}.log"
        before = resource.getrusage(resource.RUSAGE_CHILDREN)
        start = time.monotonic()
        with log.open("w") as out:
            proc = subprocess.run(
                argv,
                cwd=ROOT,
                env=self.env(defaults),
                stdout=out,
                stderr=subprocess.STDOUT,
                check=False,
            )
        after = resource.getrusage(resource.RUSAGE_CHILDREN)
        # CPU time of the controller's processes only (ansible, its forks, ssh): the
        # lab hosts' own work is not counted, as it would run on the servers.
        cpu = (after.ru_utime - before.ru_utime) + (after.ru_stime - before.ru_stime)
        seconds = time.monotonic() - start
        text = log.read_text(errors="replace")
        recap = {
            m[0]: {
                "ok": int(m[1]),
                "changed": int(m[2]),
                "unreachable": int(m[3]),
                "failed": int(m[4]),
            }
            for m in RECAP.findall(text)
        }
        if proc.returncode != 0:
            raise BenchError(f"{' '.join(argv[:4])} failed (exit {proc.returncode}); see {log}")
        return {
            "seconds": round(seconds, 2),
            "controller_cpu_s": round(cpu, 2),
            "recap": recap,
            "log": str(log.relative_to(self.results)),
        }

    def playbook(self, name: str, playbook: str, *extra: str, defaults: bool = False) -> dict:
        """Run a playbook against the bench fleet."""
        return self.ansible(
            name,
            ["ansible-playbook", "-i", str(self.inventory), playbook, *extra],
            defaults=defaults,
        )


def docker(*argv: str, check: bool = True) -> str:
    """Run a docker command and return its output."""
    proc = subprocess.run(["docker", *argv], capture_output=True, text=True, check=False)
    if check and proc.returncode != 0:
        raise BenchError(f"docker {' '.join(argv)}: {proc.stderr.strip()}")
    return proc.stdout


def network_gateway() -> str:
    """Create the bench network when missing; return this machine's address on it."""
    if not docker("network", "ls", "--quiet", "--filter", f"name=^{NETWORK}$").strip():
        docker("network", "create", "--label", f"ai-fleet-lab={NETWORK}", NETWORK)
    config = json.loads(docker("network", "inspect", NETWORK))[0]["IPAM"]["Config"]
    gateway = config[0].get("Gateway") or str(
        next(ipaddress.ip_network(config[0]["Subnet"]).hosts())
    )
    return gateway


def container_address(name: str) -> str:
    """Return the address of a bench host on the bench network."""
    info = json.loads(docker("inspect", name))[0]
    address = info["NetworkSettings"]["Networks"][NETWORK]["IPAddress"]
    if not ipaddress.ip_address(address).is_private:
        raise BenchError(f"{name} has a non-private address {address}: not a load target")
    return address


def node_names(count: int) -> list[str]:
    """Return the names of a fleet's GPU nodes."""
    return [f"{PREFIX}-gpu-{i}" for i in range(1, count + 1)]


def write_inventory(bench: Bench, nodes: int, controller: str, inference_seconds: float) -> None:
    """Write the bench fleet's inventory: N GPU nodes (every second on SSH port 2222), a gateway."""
    node_vars = {
        # The stand-in node as a loaded GPU node: load time, inference time.
        "ai_node_llm_env": {
            "STANDIN_MODEL_LOAD_SECONDS": "3",
            "STANDIN_INFERENCE_SECONDS": str(inference_seconds),
        },
        # This machine measures the nodes directly too.
        "ai_node_firewall_allowed_networks": [f"{controller}/32"],
    }
    hosts = {}
    for i, name in enumerate(node_names(nodes), start=1):
        hosts[name] = dict(node_vars, **({"ansible_port": 2222} if i % 2 == 0 else {}))
    inventory = {
        "all": {
            "children": {
                "package_repos": {"hosts": {REPO: {}}},
                "gpu_nodes": {"hosts": hosts},
                "gateways": {
                    "hosts": {
                        GATEWAY: {
                            # One client (this machine) sends all the load: the per-client
                            # edge limits would measure themselves, not the path.
                            "ai_gateway_limit_req_enabled": False,
                            "ai_gateway_limit_conn_per_ip": 0,
                        }
                    }
                },
            }
        }
    }
    bench.inventory.mkdir(parents=True, exist_ok=True)
    for stale in bench.inventory.glob("*.yml"):
        stale.unlink()
    (bench.inventory / "hosts.yml").write_text(
        "# Written by scripts/bench.py for one bench fleet; rewritten on every run.\n"
        + json.dumps(inventory, indent=2)
        + "\n"
    )


def recreate_fleet(bench: Bench, nodes: int, args: argparse.Namespace, tag: str) -> None:
    """Remove the bench fleet, then create and prepare N fresh GPU nodes and a gateway."""
    destroy_fleet(bench, f"{tag}-destroy")
    controller = network_gateway()
    write_inventory(bench, nodes, controller, args.inference_seconds)
    shutil.rmtree(bench.work / "facts", ignore_errors=True)
    bench.ansible(
        f"{tag}-create",
        [
            "ansible-playbook",
            "-i",
            str(bench.inventory / "hosts.yml"),
            "molecule/shared/create.yml",
            "-e",
            f"lab_inventory_dir={bench.inventory}",
        ],
    )
    bench.playbook(f"{tag}-prepare", "molecule/shared/prepare.yml")


def destroy_fleet(bench: Bench, name: str) -> None:
    """Remove every bench host and the bench network."""
    bench.ansible(name, ["ansible-playbook", "molecule/shared/destroy.yml"])


def changed_total(run: dict) -> int:
    """Count the changed tasks over every host of a run."""
    return sum(host["changed"] for host in run["recap"].values())


def task_profile(log: Path, top: int) -> list[dict]:
    """Return the slowest tasks of a run (profile_tasks), each summed over its runs."""
    lines = log.read_text(errors="replace").splitlines()
    totals: dict[str, float] = {}
    counts: dict[str, int] = {}
    previous = None
    for i, line in enumerate(lines):
        match = TASK_LINE.match(line)
        if not match or i + 1 >= len(lines):
            continue
        elapsed = ELAPSED.search(lines[i + 1])
        if elapsed and previous:
            seconds = int(elapsed[1]) * 3600 + int(elapsed[2]) * 60 + float(elapsed[3])
            totals[previous] = totals.get(previous, 0.0) + seconds
            counts[previous] = counts.get(previous, 0) + 1
        previous = match[1]
    ranked = sorted(totals.items(), key=lambda item: -item[1])[:top]
    return [{"task": name, "seconds": round(sec, 2), "runs": counts[name]} for name, sec in ranked]


def summary(values: list[float]) -> dict:
    """Min, median and every value of repeated measurements."""
    return {"min": min(values), "median": round(statistics.median(values), 2), "runs": values}


def bench_deploy(bench: Bench, args: argparse.Namespace, rows: list[dict]) -> None:
    """Measure converge and no-op times for each fleet size (appended to rows)."""
    for nodes in args.sizes:
        tag = f"deploy-{nodes}"
        converge, noop, noop_defaults, noop_cpu = [], [], [], []
        for r in range(1, args.converge_repeat + 1):
            recreate_fleet(bench, nodes, args, f"{tag}-{r}")
            run = bench.playbook(f"{tag}-{r}-converge", "site.yml")
            converge.append(run["seconds"])
            print(f"bench: {nodes} node(s): first converge {run['seconds']} s", flush=True)
        changed = []
        for r in range(1, args.repeat + 1):
            run = bench.playbook(f"{tag}-noop-{r}", "site.yml")
            noop.append(run["seconds"])
            noop_cpu.append(run["controller_cpu_s"])
            changed.append(changed_total(run))
            if r == 1:
                profile = task_profile(bench.results / run["log"], args.profile_top)
        for r in range(1, (args.defaults_repeat or args.repeat) + 1):
            run = bench.playbook(f"{tag}-noop-defaults-{r}", "site.yml", defaults=True)
            noop_defaults.append(run["seconds"])
            changed.append(changed_total(run))
        row = {
            "nodes": nodes,
            "first_converge_s": summary(converge),
            "noop_s": summary(noop),
            "noop_defaults_s": summary(noop_defaults),
            "noop_controller_cpu_s": summary(noop_cpu),
            "noop_changed": changed,
            "profile": profile,
        }
        print(
            f"bench: {nodes} node(s): no-op {row['noop_s']['median']} s (defaults "
            f"{row['noop_defaults_s']['median']} s), changed {changed}",
            flush=True,
        )
        if any(changed):
            raise BenchError(f"a no-op re-run changed something on {nodes} node(s): {changed}")
        rows.append(row)
        if nodes == args.request_nodes and args.requests:
            bench_requests_on(bench, args, rows)


WRK_LATENCY = re.compile(r"^\s+(50|75|90|99)%\s+([\d.]+)(us|ms|s)\s*$", re.M)
WRK_REQUESTS = re.compile(r"(\d+) requests in ([\d.]+)(us|ms|s|m)")
WRK_NON2XX = re.compile(r"Non-2xx or 3xx responses: (\d+)")
WRK_ERRORS = re.compile(r"Socket errors: connect (\d+), read (\d+), write (\d+), timeout (\d+)")
UNIT = {"us": 1e-3, "ms": 1.0, "s": 1000.0, "m": 60000.0}


def wrk(log: Path, url: str, *, connections: int, seconds: int, body: str | None = None) -> dict:
    """Run wrk (bounded in time) against a bench address; parse throughput and latency."""
    host = url.split("/")[2].rsplit(":", 1)[0]
    if not (ipaddress.ip_address(host).is_private or ipaddress.ip_address(host).is_loopback):
        raise BenchError(f"refusing to aim load at {host}: only loopback and the bench network")
    argv = [
        "wrk",
        "-t",
        str(min(2, connections)),
        "-c",
        str(connections),
        "-d",
        f"{seconds}s",
        "--timeout",
        "30s",
        "--latency",
    ]
    script = None
    if body is not None:
        with tempfile.NamedTemporaryFile("w", suffix=".lua", delete=False) as lua:
            lua.write(
                'wrk.method = "POST"\nwrk.headers["Content-Type"] = "application/json"\n'
                f"wrk.body = {json.dumps(body)}\n"
            )
        script = lua
        argv += ["-s", script.name]
    proc = subprocess.run(
        [*argv, url], capture_output=True, text=True, timeout=seconds + 60, check=False
    )
    if script:
        os.unlink(script.name)
    log.write_text(proc.stdout + proc.stderr)
    if proc.returncode != 0:
        raise BenchError(f"wrk {url} failed: {proc.stderr.strip()}")
    result = {"url": url, "connections": connections, "seconds": seconds, **parse_wrk(proc.stdout)}
    if result["ok_per_s"] == 0:
        raise BenchError(f"wrk {url}: no request succeeded; see {log}")
    return result


def parse_wrk(out: str) -> dict:
    """Parse wrk's report: requests, failures, successful requests per second, percentiles (ms)."""
    requests_match = WRK_REQUESTS.search(out)
    if not requests_match:
        raise BenchError(f"wrk printed no request count: {out.strip()[:300]}")
    total = int(requests_match[1])
    duration_s = float(requests_match[2]) * UNIT[requests_match[3]] / 1000
    non2xx_match = WRK_NON2XX.search(out)
    non2xx = int(non2xx_match[1]) if non2xx_match else 0
    errors_match = WRK_ERRORS.search(out)
    errors = sum(int(x) for x in errors_match.groups()) if errors_match else 0
    latency = {f"p{p}": round(float(v) * UNIT[u], 3) for p, v, u in WRK_LATENCY.findall(out)}
    return {
        "requests": total,
        "failed": non2xx + errors,
        "ok_per_s": round((total - non2xx) / duration_s, 1),
        **latency,
    }


def drain(bench: Bench, tag: str, nodes: list[str], undrain: bool = False) -> None:
    """Drain (or put back) nodes on the bench gateway."""
    playbook = "playbooks/undrain.yml" if undrain else "playbooks/drain.yml"
    bench.playbook(tag, playbook, "-e", f"ai_fleet_nodes={','.join(nodes)}")


def bench_requests_on(bench: Bench, args: argparse.Namespace, rows: list[dict]) -> None:
    """Measure the request path on the deployed fleet of --request-nodes nodes."""
    results = {"inference_seconds": args.inference_seconds, "connections": args.connections}
    gateway = f"http://{container_address(GATEWAY)}:{GATEWAY_PORT}"
    names = node_names(args.request_nodes)
    first = f"http://{container_address(names[0])}:{NODE_PORT}"
    info = "/api/v1/ai/info"
    light = {
        target: wrk(
            bench.log_dir / f"light-{target}.txt",
            base + info,
            connections=1,
            seconds=args.light_seconds,
        )
        for target, base in (("direct", first), ("gateway", gateway))
    }
    light["gateway_adds_p50_ms"] = round(light["gateway"]["p50"] - light["direct"]["p50"], 3)
    results["light"] = light
    print(
        f"bench: light load p50: direct {light['direct']['p50']} ms, "
        f"gateway {light['gateway']['p50']} ms",
        flush=True,
    )
    body = json.dumps({"text": "the meeting went well and everyone agreed"})
    load = {"connections": args.connections, "seconds": args.load_seconds, "body": body}
    scale = []
    serving = list(names)
    for count in [n for n in (4, 2, 1) if n <= args.request_nodes]:
        if len(serving) > count:
            drain(bench, f"drain-to-{count}", serving[count:])
            serving = serving[:count]
        run = wrk(bench.log_dir / f"scale-{count}.txt", gateway + "/api/v1/ai/emotion", **load)
        run["nodes"] = count
        scale.append(run)
        print(
            f"bench: {count} node(s) through the gateway: {run['ok_per_s']} ok/s, "
            f"p50 {run.get('p50')} ms",
            flush=True,
        )
    results["scale"] = sorted(scale, key=lambda r: r["nodes"])
    results["direct_one_node"] = wrk(
        bench.log_dir / "scale-direct.txt", first + "/api/v1/ai/emotion", **load
    )
    if len(names) > 1:
        drain(bench, "undrain-all", names[1:], undrain=True)
    results["audio"] = bench_audio(bench, args, gateway, first)
    rows[-1]["requests"] = results


def audio_body(size: int) -> bytes:
    """Build an ASR request body with `size` bytes of deterministic synthetic audio."""
    chunks = []
    seed = b"ai-fleet-bench-audio"
    while sum(len(c) for c in chunks) < size:
        seed = hashlib.sha256(seed).digest()
        chunks.append(seed)
    audio = b"".join(chunks)[:size]
    return json.dumps({"audio_data": base64.b64encode(audio).decode()}).encode()


def post_seconds(url: str, body: bytes, timeout: float) -> float:
    """POST one request; return its latency in seconds (fails unless HTTP 200)."""
    host, port = url.split("/")[2].rsplit(":", 1)
    path = "/" + url.split("/", 3)[3]
    conn = http.client.HTTPConnection(host, int(port), timeout=timeout)
    start = time.monotonic()
    conn.request("POST", path, body=body, headers={"Content-Type": "application/json"})
    response = conn.getresponse()
    data = response.read()
    seconds = time.monotonic() - start
    conn.close()
    if response.status != 200:
        raise BenchError(f"POST {url} ({len(body)} bytes): HTTP {response.status} {data[:200]!r}")
    return seconds


def gateway_body_stamp() -> str:
    """Return the modification time of nginx's request body folder on the bench gateway.

    nginx creates (and at once unlinks) a file there for each request body larger than
    client_body_buffer_size: the folder's time changes exactly when a body went to disk.
    """
    return docker("exec", GATEWAY, "stat", "-c", "%y", "/var/lib/nginx/body").strip()


def bench_audio(bench: Bench, args: argparse.Namespace, gateway: str, first: str) -> list[dict]:
    """ASR latency of large audio with the workaround settings and with fast settings."""
    rows = []
    for label, settings in (("workaround", WORKAROUND), ("fast", FAST)):
        extra = []
        for key, value in settings.items():
            extra += ["-e", f"{key}={value}"]
        bench.playbook(f"audio-settings-{label}", "site.yml", *extra)
        for size in args.audio_sizes:
            body = audio_body(size * 1024)
            row = {"settings": label, **settings, "audio_kb": size, "body_bytes": len(body)}
            for target, base in (("direct", first), ("gateway", gateway)):
                before = gateway_body_stamp()
                runs = [
                    round(post_seconds(base + "/api/v1/ai/asr", body, 300) * 1000, 1)
                    for _ in range(args.audio_repeat)
                ]
                row[f"{target}_ms"] = summary(runs)
                if target == "gateway":
                    row["gateway_body_on_disk"] = gateway_body_stamp() != before
            row["gateway_adds_ms"] = round(
                row["gateway_ms"]["median"] - row["direct_ms"]["median"], 1
            )
            print(
                f"bench: ASR {size} KB, {label}: direct {row['direct_ms']['median']} ms, gateway "
                f"{row['gateway_ms']['median']} ms, body on disk {row['gateway_body_on_disk']}",
                flush=True,
            )
            rows.append(row)
    return rows


def machine() -> dict:
    """Describe the machine the bench ran on."""
    cpu = "unknown"
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    memory_gib = round(os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES") / 2**30, 1)
    version = subprocess.run(
        [str(ROOT / ".venv/bin/ansible"), "--version"], capture_output=True, text=True, check=False
    ).stdout.splitlines()[:1]
    return {
        "cpus": os.cpu_count(),
        "cpu": cpu,
        "memory_gib": memory_gib,
        "ansible": version[0] if version else "",
        "python": sys.version.split()[0],
    }


def table(header: list[str], rows: list[list]) -> list[str]:
    """Return the lines of a Markdown table."""
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    return lines + ["| " + " | ".join(str(cell) for cell in row) + " |" for row in rows]


def deploy_table(deploy: list[dict]) -> list[str]:
    """Return the deploy-path table."""
    base = deploy[0]["noop_s"]["median"]
    header = [
        "GPU nodes",
        "first converge (min / median)",
        "no-op, project settings (min / median)",
        "no-op, Ansible defaults (median)",
        "defaults / project",
        "no-op vs smallest fleet",
        "controller CPU per no-op",
        "changed on no-ops",
    ]
    rows = []
    for row in deploy:
        converge, noop, defaults = row["first_converge_s"], row["noop_s"], row["noop_defaults_s"]
        rows.append(
            [
                row["nodes"],
                f"{converge['min']} / {converge['median']} s",
                f"{noop['min']} / {noop['median']} s",
                f"{defaults['median']} s",
                f"{defaults['median'] / noop['median']:.2f}x",
                f"{noop['median'] / base:.2f}x",
                f"{row['noop_controller_cpu_s']['median']} s",
                max(row["noop_changed"]),
            ]
        )
    lines = table(header, rows)
    if len(deploy) > 1:
        first, last = deploy[0], deploy[-1]
        extra = last["nodes"] - first["nodes"]
        cpu = (
            last["noop_controller_cpu_s"]["median"] - first["noop_controller_cpu_s"]["median"]
        ) / extra
        wall = (last["noop_s"]["median"] - first["noop_s"]["median"]) / extra
        lines += [
            "",
            f"Each GPU node added costs the controller {cpu:.2f} CPU-seconds and the no-op "
            f"{wall:.2f} s of wall time (from {first['nodes']} to {last['nodes']} nodes).",
        ]
    return lines


def request_tables(nodes: int, requests: dict) -> list[str]:
    """Return the request-path tables."""
    light = requests["light"]
    runs = [
        ("GET info, direct to a node", light["direct"]),
        ("GET info, through the gateway", light["gateway"]),
    ]
    runs += [(f"POST emotion, gateway, {r['nodes']} node(s)", r) for r in requests["scale"]]
    runs.append(("POST emotion, direct to one node", requests["direct_one_node"]))
    lines = [
        f"Request path ({nodes}-node fleet, stand-in inference {requests['inference_seconds']} s, "
        "20 sessions per node):",
        "",
    ]
    lines += table(
        ["path", "connections", "ok requests/s", "p50 ms", "p99 ms", "failed"],
        [
            [name, r["connections"], r["ok_per_s"], r.get("p50"), r.get("p99"), r["failed"]]
            for name, r in runs
        ],
    )
    audio_rows = [
        [
            f"{a['audio_kb']} KB",
            f"{a['settings']} ({a['ai_node_audio_stream_chunk_size']} B chunks, "
            f"{a['ai_node_audio_stream_chunk_delay_ms']} ms apart)",
            f"{a['direct_ms']['median']} ms",
            f"{a['gateway_ms']['median']} ms",
            f"{a['gateway_adds_ms']} ms",
            "yes" if a["gateway_body_on_disk"] else "no",
        ]
        for a in requests["audio"]
    ]
    lines += [
        "",
        *table(
            [
                "ASR audio",
                "settings",
                "direct (median)",
                "gateway (median)",
                "gateway adds",
                "body on gateway disk",
            ],
            audio_rows,
        ),
    ]
    return lines


def markdown(report: dict) -> str:
    """Return the README-style tables of a report."""
    m = report["machine"]
    lines = [f"Machine: {m['cpus']} CPUs ({m['cpu']}), {m['memory_gib']} GiB; {m['ansible']}.", ""]
    deploy = report.get("deploy", [])
    if deploy:
        lines += [*deploy_table(deploy), ""]
    for row in deploy:
        if row.get("requests"):
            lines += [*request_tables(row["nodes"], row["requests"]), ""]
    return "\n".join(lines)


def line_chart(plt, path: Path, xs: list[int], lines: list[tuple], labels: tuple[str, str, str]):
    """Draw one chart: lines of (values, style, label) over xs; labels = (x, y, title)."""
    fig, ax = plt.subplots(figsize=(7, 4.5))
    for values, style, label in lines:
        ax.plot(xs, values, style, label=label)
    ax.set_xlabel(labels[0])
    ax.set_ylabel(labels[1])
    ax.set_title(labels[2])
    ax.set_xticks(xs)
    ax.grid(alpha=0.3)
    ax.legend()
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)
    return path.name


def charts(report: dict, results: Path) -> list[str]:
    """Draw converge time against fleet size and throughput against node count."""
    try:
        import matplotlib  # noqa: PLC0415 (only the bench needs it)

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt  # noqa: PLC0415
    except ImportError:
        print("bench: no matplotlib, no charts (make bench installs it)", file=sys.stderr)
        return []
    drawn = []
    deploy = report.get("deploy", [])
    if deploy:
        median = lambda key: [row[key]["median"] for row in deploy]  # noqa: E731
        lines = [
            (median("first_converge_s"), "o-", "first converge"),
            (median("noop_s"), "o-", "no-op, project settings"),
            (median("noop_defaults_s"), "o--", "no-op, Ansible defaults"),
        ]
        labels = (
            "GPU nodes (plus one gateway)",
            "seconds (median)",
            f"site.yml on the lab ({report['machine']['cpus']} CPUs)",
        )
        sizes = [row["nodes"] for row in deploy]
        drawn.append(line_chart(plt, results / "converge.png", sizes, lines, labels))
    requests = next((r["requests"] for r in deploy if r.get("requests")), None)
    if requests and requests["scale"]:
        scale = requests["scale"]
        counts = [r["nodes"] for r in scale]
        lines = [
            ([r["ok_per_s"] for r in scale], "o-", "through the gateway"),
            ([scale[0]["ok_per_s"] * c / counts[0] for c in counts], ":", "linear from one node"),
        ]
        labels = (
            "GPU nodes serving",
            "successful requests/s",
            f"POST /api/v1/ai/emotion, {requests['connections']} connections",
        )
        drawn.append(line_chart(plt, results / "throughput.png", counts, lines, labels))
    return drawn


def parse_args(argv: list[str]) -> argparse.Namespace:
    """Parse the bench's options."""
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--sizes", default="1,2,4,8", help="fleet sizes in GPU nodes (default 1,2,4,8)")
    p.add_argument(
        "--repeat", type=int, default=3, help="no-op runs per size and configuration (default 3)"
    )
    p.add_argument(
        "--converge-repeat", type=int, default=3, help="first converges per size (default 3)"
    )
    p.add_argument(
        "--defaults-repeat", type=int, help="no-op runs with Ansible's defaults (default: --repeat)"
    )
    p.add_argument("--profile-top", type=int, default=25, help="slowest tasks kept per size")
    p.add_argument(
        "--no-requests", dest="requests", action="store_false", help="skip the request path"
    )
    p.add_argument(
        "--request-nodes", type=int, default=4, help="fleet size for the request path (default 4)"
    )
    p.add_argument(
        "--inference-seconds", type=float, default=0.5, help="stand-in inference time (default 0.5)"
    )
    p.add_argument(
        "--connections", type=int, default=80, help="connections of the scale-out load (default 80)"
    )
    p.add_argument(
        "--load-seconds", type=int, default=15, help="length of each load run (default 15)"
    )
    p.add_argument(
        "--light-seconds", type=int, default=10, help="length of each light-load run (default 10)"
    )
    p.add_argument(
        "--audio-sizes", default="100,500,1024", help="ASR audio sizes in KB (default 100,500,1024)"
    )
    p.add_argument(
        "--audio-repeat", type=int, default=3, help="requests per audio size and path (default 3)"
    )
    p.add_argument(
        "--smoke",
        action="store_true",
        help="a short run that exercises every step: 2 nodes, one run each, short loads",
    )
    p.add_argument("--results", default=str(ROOT / ".cache" / "bench"), help="results folder")
    p.add_argument("--keep", action="store_true", help="leave the last bench fleet running")
    p.add_argument("--junit", help="also write the run's outcome as a JUnit report to this file")
    args = p.parse_args(argv)
    if args.smoke:
        # Two nodes: a settings change drains one node at a time, never the last.
        args.sizes, args.repeat, args.converge_repeat, args.request_nodes = "2", 1, 1, 2
        args.connections, args.load_seconds, args.light_seconds = 20, 3, 2
        args.audio_sizes, args.audio_repeat, args.profile_top = "100", 1, 10
    try:
        args.sizes = sorted({int(s) for s in str(args.sizes).split(",")})
        args.audio_sizes = [int(s) for s in str(args.audio_sizes).split(",")]
    except ValueError:
        p.error(
            "--sizes and --audio-sizes take whole numbers separated by commas, for example 1,2,4,8"
        )
    if min(args.sizes) < 1 or args.repeat < 1 or args.converge_repeat < 1:
        p.error("sizes and repeats must be at least 1")
    if args.requests and args.request_nodes < 2:
        p.error("--request-nodes must be at least 2: a settings change drains one node at a time")
    if args.requests and args.request_nodes not in args.sizes:
        p.error(f"--request-nodes {args.request_nodes} must be one of --sizes {args.sizes}")
    return args


def write_junit(path: Path, error: str | None) -> None:
    """Write the run as one JUnit test case, so that a test summary counts it."""
    case = ET.Element("testcase", classname="bench", name="make bench --smoke")
    if error:
        ET.SubElement(case, "failure", message=error).text = error
    suite = ET.Element("testsuite", name="bench", tests="1", failures="1" if error else "0")
    suite.append(case)
    path.parent.mkdir(parents=True, exist_ok=True)
    ET.ElementTree(suite).write(path, encoding="unicode", xml_declaration=True)


def main(argv: list[str]) -> int:
    """Run the bench; write results, summary and charts."""
    args = parse_args(argv)
    if shutil.which("wrk") is None and args.requests:
        print("bench: wrk is not installed (make bench installs it)", file=sys.stderr)
        return 1
    results = Path(args.results)
    stamp = time.strftime("%Y%m%d-%H%M%S")
    bench = Bench(results=results / stamp, venv=ROOT / ".venv")
    report = {
        "started": stamp,
        "machine": machine(),
        "options": {k: v for k, v in vars(args).items()},
    }
    report["deploy"] = []
    try:
        bench_deploy(bench, args, report["deploy"])
    except BenchError as err:
        print(f"bench: {err}", file=sys.stderr)
        report["error"] = str(err)
    finally:
        if not args.keep:
            destroy_fleet(bench, "final-destroy")
        (bench.results / "bench.json").write_text(json.dumps(report, indent=2) + "\n")
        if report["deploy"]:
            (bench.results / "summary.md").write_text(markdown(report) + "\n")
            report["charts"] = charts(report, bench.results)
        latest = results / "latest"
        if latest.is_symlink() or latest.exists():
            latest.unlink()
        latest.symlink_to(stamp)
        if args.junit:
            write_junit(Path(args.junit), report.get("error"))
        print(f"bench: results in {bench.results}", flush=True)
    if report.get("error"):
        return 1
    print(markdown(report))
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
