"""The week's operations on a serving fleet, each under a steady load through the gateway.

A load (loadgen.py: GET /api/v1/ai/info at 10/s, POST /api/v1/ai/asr with
300 KB of audio from two workers) runs through the first gateway during each
event, and every request is counted:

- every node's llm stack restarted at once (what a new edge-llm image does
  without the rolling update): requests fail - the contrast;
- a rolling update that recreates every container of every node: none fails;
- drain a node, then undrain it: none fails, and no request reaches the node
  after the drain returned, even across a run of the gateway play;
- add a third node with site.yml: none fails, the other nodes' containers are
  untouched, and the new node got requests only after its deep check passed;
- remove it: none fails, its stack is gone, the gateways drop it;
- one node's stack killed without warning, then the gateway play: no GET fails,
  the POSTs that fail were in flight at the kill; the node rejoins once back;
- a roll whose first node fails its health gate: the roll stops, that node stays
  drained, the other node is untouched, none fails.

Taking over nodes of the original guide (docs/original-guide.md) under load is
test_migration.py.

Every count goes to .cache/test-results/operations-under-load.json. Runs plays
and restarts the fleet's services: molecule only, or AI_FLEET_PLAY_TESTS=1 with
AI_FLEET_LOAD_URL (the gateway as seen from here) against another lab.
"""

from __future__ import annotations

import os
import re
import threading
import time
from pathlib import Path

import pytest
import yaml
from conftest import (
    AI_NODE_DEFAULTS,
    ROOT,
    inventory_groups,
    needs_plays,
    run_ok,
    run_playbook,
)
from fleet import SETTLE_SECONDS, UnderLoad, container_address, host_of, record

pytestmark = needs_plays

PLAYBOOKS = ROOT / "playbooks"
INCLUDE_FILE = "/etc/nginx/ai-gateway.d/ai_inference_service.servers.local.conf"
SPARE_GROUP = "spare_gpu_nodes"
# Recreates every container of every node: their log options change.
CHANGE = {"ai_node_log_max_size": "20m"}


class Fleet:
    """The lab under test: its inventory, gateway, nodes, and the load's target."""

    def __init__(self, inventory: str, tmp: Path):
        """Read the lab from its inventory."""
        groups = inventory_groups(inventory)
        self.inventory = inventory
        self.gateway_name = sorted(groups["gateways"]["hosts"])[0]
        self.gateway = host_of(inventory, self.gateway_name)
        self.nodes = sorted(groups["gpu_nodes"]["hosts"])
        self.spares = sorted(groups.get(SPARE_GROUP, {}).get("hosts", []))
        address = container_address(self.gateway_name)
        self.url = os.environ.get("AI_FLEET_LOAD_URL") or (address and f"http://{address}:80")
        self.change = tmp / "change.yml"
        self.change.write_text(yaml.safe_dump(CHANGE))
        self.tmp = tmp

    def host(self, name: str, inventory: str | None = None):
        return host_of(inventory or self.inventory, name)

    def settings(self, name: str) -> dict:
        return {**AI_NODE_DEFAULTS, **self.host(name).ansible.get_variables()}

    def play(self, playbook: str, *args: str, inventory: str | None = None, ok: bool = True):
        """Run a playbook with the module's change, return its output."""
        play_args = ("-e", f"@{self.change}", *args)
        result = run_playbook(inventory or self.inventory, PLAYBOOKS / playbook, args=play_args)
        output = result.stdout + result.stderr
        if ok:
            assert result.returncode == 0, f"{playbook} failed:\n{output[-4000:]}"
        return result.returncode, output

    def servers(self) -> dict[str, str]:
        """`{address:port: up|down}` of the gateway's include file."""
        text = self.gateway.file(INCLUDE_FILE).content_string
        lines = [line.rstrip(";").split() for line in text.splitlines()]
        return {w[1]: "down" if w[-1] == "down" else "up" for w in lines if w and w[0] == "server"}

    def upstream(self, name: str, inventory: str | None = None) -> str:
        """The `address:port` the gateways reach a node at."""
        found = self.host(name, inventory).ansible.get_variables()
        settings = {**AI_NODE_DEFAULTS, **found}
        address = settings.get("ai_node_public_host") or settings.get("ansible_host") or name
        return f"{address}:{settings.get('ai_node_public_port') or settings['ai_node_http_port']}"

    def containers(self, name: str, inventory: str | None = None) -> dict:
        """`{container: (id, started)}` of a node's stack."""
        host = self.host(name, inventory)
        found = {}
        for container in ("ai-inference-service", "edge-unit-manager", "edge-llm-node"):
            result = host.run(
                f"docker inspect -f '{{{{.Id}}}} {{{{.State.StartedAt}}}}' {container}"
            )
            found[container] = tuple(result.stdout.split()) if result.rc == 0 else None
        return found

    def served(self, name: str) -> int:
        """AI requests (info, asr) a node's service has answered since it started."""
        metrics = run_ok(self.host(name), "curl", "-fsS", "http://127.0.0.1:8800/metrics")
        pattern = (
            r'ai_inference_http_requests_total\{[^}]*route="/api/v1/ai/(?:info|asr)"[^}]*\} (\d+)'
        )
        return sum(int(n) for n in re.findall(pattern, metrics))


@pytest.fixture(scope="module")
def fleet(ansible_inventory, tmp_path_factory):
    lab = Fleet(ansible_inventory, tmp_path_factory.mktemp("operations"))
    if not lab.url:
        pytest.skip("no gateway address to load: set AI_FLEET_LOAD_URL")
    if len(lab.nodes) < 2:
        pytest.skip("needs at least two GPU nodes")
    return lab


def test_restarting_every_node_at_once_fails_requests(fleet):
    def restart(name):
        run_ok(fleet.host(name), "docker", "restart", "edge-unit-manager", "edge-llm-node")

    with UnderLoad(fleet, "all at once") as run:
        threads = [threading.Thread(target=restart, args=(n,)) for n in fleet.nodes]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join()
        time.sleep(8)
    record("every node's llm stack restarted at once", run.counts)
    assert run.counts["failed"] > 0, run.counts


def test_rolling_update_recreating_every_container_fails_nothing(fleet):
    before = {name: fleet.containers(name) for name in fleet.nodes}
    with UnderLoad(fleet, "rolling update") as run:
        _, output = fleet.play("rolling_update.yml")
    record("rolling update recreating every container", run.counts)
    assert run.counts["failed"] == 0, run.counts
    for name in fleet.nodes:
        after = fleet.containers(name)
        assert all(after[c][0] != before[name][c][0] for c in after), f"{name} not recreated"
    assert set(fleet.servers().values()) == {"up"}, fleet.servers()
    assert "(drained first)" in output


def test_drain_then_undrain_fails_nothing_and_the_drained_node_gets_nothing(fleet):
    name = fleet.nodes[0]
    with UnderLoad(fleet, "drain and undrain") as run:
        fleet.play("drain.yml", "-e", f"ai_fleet_nodes={name}")
        served = fleet.served(name)
        assert fleet.servers()[fleet.upstream(name)] == "down"
        # The drain survives the gateway play.
        fleet.play("gateways.yml")
        assert fleet.servers()[fleet.upstream(name)] == "down"
        time.sleep(SETTLE_SECONDS)
        reached = fleet.served(name) - served
        _, report = fleet.play("verify.yml")
        fleet.play("undrain.yml", "-e", f"ai_fleet_nodes={name}")
    record("drain then undrain", run.counts, requests_to_drained_node=reached)
    assert run.counts["failed"] == 0, run.counts
    assert reached == 0, f"{reached} request(s) reached {name} after the drain returned"
    assert f"{name}: DRAINED" in report
    assert fleet.servers()[fleet.upstream(name)] == "up"


@pytest.fixture(scope="module")
def grown(fleet):
    """An inventory with the spare lab host moved into gpu_nodes."""
    if not fleet.spares:
        pytest.skip(f"no lab host in {SPARE_GROUP} to add")
    # The inventory is a file, or a folder (molecule's) with one hosts file beside
    # group_vars: the copy gets the changed hosts file and links to the rest.
    source = Path(fleet.inventory)
    if source.is_dir():
        source = next(p for p in sorted(source.iterdir()) if p.suffix in (".yml", ".yaml"))
    folder = fleet.tmp / "grown"
    folder.mkdir()
    for entry in source.parent.iterdir():
        if entry.name in ("group_vars", "host_vars"):
            (folder / entry.name).symlink_to(entry.resolve())
    data = yaml.safe_load(source.read_text())
    spare = fleet.spares[0]
    # Groups under all.children (a hand-written inventory) or at the top (molecule's).
    groups = data["all"].get("children") or data
    settings = groups[SPARE_GROUP]["hosts"].pop(spare)
    groups["gpu_nodes"]["hosts"][spare] = settings
    (folder / "hosts.yml").write_text(yaml.safe_dump(data))
    return spare, str(folder / "hosts.yml")


def test_adding_a_node_fails_nothing_and_touches_no_other_node(fleet, grown):
    spare, inventory = grown
    before = {name: fleet.containers(name) for name in fleet.nodes}
    with UnderLoad(fleet, "add a node") as run:
        fleet.play("../site.yml", inventory=inventory)
        time.sleep(SETTLE_SECONDS)
    record("add a third node", run.counts)
    assert run.counts["failed"] == 0, run.counts
    for name in fleet.nodes:
        assert fleet.containers(name) == before[name], f"{name} was touched"
    assert fleet.servers()[fleet.upstream(spare, inventory)] == "up"
    # Its first request from the gateway came after its deep health check passed.
    log = run_ok(fleet.host(spare, inventory), "docker", "logs", "ai-inference-service")
    lines = [line for line in log.splitlines() if "method=" in line]
    healthy = next(i for i, line in enumerate(lines) if "path=/api/v1/ai/health status=200" in line)
    first = next(
        i for i, line in enumerate(lines) if re.search(r"path=/api/v1/ai/(info|asr) ", line)
    )
    assert first > healthy, "the new node served before its deep check passed"


def test_removing_a_node_fails_nothing(fleet, grown):
    spare, inventory = grown
    with UnderLoad(fleet, "remove a node") as run:
        fleet.play("remove_node.yml", "-e", f"ai_fleet_nodes={spare}", inventory=inventory)
        # Deleted from the inventory: the gateway play drops its line.
        fleet.play("gateways.yml")
    record("remove the third node", run.counts)
    assert run.counts["failed"] == 0, run.counts
    assert all(v is None for v in fleet.containers(spare, inventory).values())
    assert fleet.upstream(spare, inventory) not in fleet.servers()
    # Twice is harmless.
    fleet.play("remove_node.yml", "-e", f"ai_fleet_nodes={spare}", inventory=inventory)


def test_a_killed_stack_fails_only_the_posts_in_flight(fleet):
    name = fleet.nodes[0]
    with UnderLoad(fleet, "kill") as run:
        run_ok(
            fleet.host(name),
            "docker",
            "kill",
            "ai-inference-service",
            "edge-unit-manager",
            "edge-llm-node",
        )
        killed = time.monotonic()
        fleet.play("gateways.yml")
        fleet.play("../site.yml")
    record(
        "one node's stack killed, then the gateway play",
        run.counts,
        asr_in_flight_at_kill=sum(
            1 for r in run.results if r.kind == "asr" and r.started <= killed <= r.ended
        ),
    )
    assert run.counts["get"]["failed"] == 0, run.counts
    late = [r for r in run.results if not r.ok and r.started > killed]
    assert not late, f"{len(late)} request(s) started after the kill failed"
    assert fleet.servers()[fleet.upstream(name)] == "up"


def test_a_node_failing_its_health_gate_stops_the_roll_and_stays_drained(fleet):
    first, second = fleet.nodes[0], fleet.nodes[1]
    untouched = fleet.containers(second)
    broken = fleet.tmp / "broken.yml"
    broken.write_text(yaml.safe_dump({"ai_node_inference_env": {"ZMQ_UNIT_MANAGER_PORT": "19999"}}))
    with UnderLoad(fleet, "failing roll") as run:
        code, output = fleet.play("rolling_update.yml", "-e", f"@{broken}", ok=False)
        drained = fleet.servers()[fleet.upstream(first)]
    record("a roll whose first node fails its health gate", run.counts)
    assert code != 0
    assert "The roll stopped after batch 1 of" in output, output[-4000:]
    assert f"{first}: failed at" in output and "deep health check" in output, output[-4000:]
    assert f"Not changed: {second}" in output
    assert drained == "down"
    assert fleet.containers(second) == untouched
    assert run.counts["failed"] == 0, run.counts
    # Fixed and rolled again, it comes back.
    fleet.play("rolling_update.yml", "--limit", f"{first},gateways")
    assert fleet.servers()[fleet.upstream(first)] == "up"
