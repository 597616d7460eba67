#!/usr/bin/env python3
"""Which GPU nodes a gateway sends traffic to, from the nodes' own health verdicts.

The decisions of the gateway's membership service, as pure functions: every
few seconds the service polls each node's GPU health checker
(roles/gpu_health/files/ai_gpu_health.py, ``GET /verdict``) and feeds the
answers to ``decide``, which returns the nodes to mark ``down`` and what
changed. The rules:

- a node is removed after ``remove_after`` unhealthy verdicts in a row;
- it returns only after it has answered healthy for ``return_after_s``
  seconds without a break; each removal within ``flap_window_s`` of its
  last return doubles that time (at most ``max_return_after_s``), so that a
  fault that comes and goes moves the node out once and back once;
- a hardware fault stays out until the operator acknowledges it on the node
  (the checker's verdict stays unhealthy until then);
- a checker that does not answer changes nothing (nginx's own checks still
  see a node that is down; the monitoring alerts on the checker), except
  that a held-out node's healthy wait starts again;
- an operator-drained node is never returned;
- never more than half of the nodes out of the gateway, drained ones
  included, and never the last: past that the breaker opens, removes nothing
  more and waits for a person (``reset_breaker``; the service's
  ``breaker_reset_file``); returns go on meanwhile.

The service (``Service``, ``main``) judges the primary servers only (backups
stay as the inventory has them) and counts servers the inventory marks down
as drained.
"""

from __future__ import annotations

import contextlib
import fcntl
import http.client
import json
import math
import os
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.request
from concurrent.futures import ThreadPoolExecutor
from dataclasses import asdict, dataclass, field, replace

# ai_upstream.py and nginx_proc.py are installed beside this file.
sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import ai_upstream
import nginx_proc

#: A checker that answered, healthy or not, and one that did not.
HEALTHY, UNHEALTHY, UNKNOWN = "healthy", "unhealthy", "unknown"


@dataclass(frozen=True)
class Rules:
    """The service's settings."""

    remove_after: int = 2
    return_after_s: float = 60.0
    max_return_after_s: float = 900.0
    flap_window_s: float = 600.0
    max_out_share: float = 0.5

    def problems(self) -> list[str]:
        """Return what is wrong with the settings (empty when nothing)."""
        found = []
        if self.remove_after < 1:
            found.append(f"remove_after must be 1 or more, not {self.remove_after}")
        if self.return_after_s < 0 or self.max_return_after_s < self.return_after_s:
            found.append("return_after_s must be 0 or more and at most max_return_after_s")
        if not 0 < self.max_out_share < 1:
            found.append(f"max_out_share must be above 0 and below 1, not {self.max_out_share}")
        return found


@dataclass(frozen=True)
class NodeState:
    """What the service remembers of one node between polls."""

    out: bool = False
    bad_in_row: int = 0
    healthy_since: float | None = None
    removed_at: float | None = None
    returned_at: float | None = None
    return_after_s: float = 0.0
    cause: str = ""


@dataclass(frozen=True)
class State:
    """The service's memory: each node's state and the breaker."""

    nodes: dict = field(default_factory=dict)
    breaker_open: bool = False
    breaker_reason: str = ""


def most_out(total: int, share: float) -> int:
    """Return how many of ``total`` nodes may be out at once: at most ``share``, never all."""
    return max(0, min(total - 1, math.floor(total * share)))


def _remove_wait(node: NodeState, now: float, rules: Rules) -> float:
    """Return the healthy time a node removed now must show before it returns."""
    flapping = node.returned_at is not None and now - node.returned_at <= rules.flap_window_s
    if flapping and node.return_after_s:
        return min(rules.max_return_after_s, node.return_after_s * 2)
    return rules.return_after_s


def decide(
    state: State, verdicts: dict, drained: set, now: float, rules: Rules
) -> tuple[State, list[str], list[dict]]:
    """Return (new state, nodes to mark down, events) after one poll.

    ``verdicts``: ``{node: (HEALTHY|UNHEALTHY|UNKNOWN, cause text)}`` for every
    node of the upstream. ``drained``: the nodes an operator drained. The nodes
    to mark down are the drained ones and those the service holds out.
    """
    nodes = dict(state.nodes)
    events = []
    breaker_open, breaker_reason = state.breaker_open, state.breaker_reason
    limit = most_out(len(verdicts), rules.max_out_share)

    def out_now():
        return {n for n in verdicts if n in drained or nodes.get(n, NodeState()).out}

    for name in sorted(verdicts):
        verdict, cause = verdicts[name]
        node = nodes.get(name, NodeState())
        if verdict == UNKNOWN:
            # Out, it must answer healthy for the whole wait: no answer breaks it.
            nodes[name] = replace(node, healthy_since=None) if node.out else node
            continue
        if verdict == HEALTHY:
            node = replace(
                node,
                bad_in_row=0,
                healthy_since=node.healthy_since if node.healthy_since is not None else now,
            )
            waited = now - node.healthy_since
            # A wait set under a higher limit (the settings changed since) is capped by today's.
            if node.out and waited >= min(node.return_after_s, rules.max_return_after_s):
                node = replace(node, out=False, returned_at=now, cause="")
                if name not in drained:
                    events.append(
                        {"node": name, "event": "returned", "why": f"healthy for {waited:.0f} s"}
                    )
            nodes[name] = node
            continue
        node = replace(node, bad_in_row=node.bad_in_row + 1, healthy_since=None, cause=cause)
        if not node.out and node.bad_in_row >= rules.remove_after and name not in drained:
            if breaker_open:
                nodes[name] = node
                continue
            if len(out_now() | {name}) > limit:
                breaker_open = True
                breaker_reason = (
                    f"{name} is unhealthy ({cause}), but {len(out_now())} of {len(verdicts)} "
                    f"node(s) are out already and at most {limit} may be"
                )
                events.append({"node": name, "event": "breaker_open", "why": breaker_reason})
                nodes[name] = node
                continue
            node = replace(
                node, out=True, removed_at=now, return_after_s=_remove_wait(node, now, rules)
            )
            events.append({"node": name, "event": "removed", "why": cause})
        nodes[name] = node
    for name in list(nodes):
        if name not in verdicts:
            del nodes[name]  # left the inventory
    down = sorted(out_now())
    return State(nodes, breaker_open, breaker_reason), down, events


def reset_breaker(state: State) -> State:
    """Close the breaker (a person has looked): removals resume at the next poll."""
    return replace(state, breaker_open=False, breaker_reason="")


# --- the service: polls, renders, swaps, reloads ---------------------------------------------
#
# Installed beside ai_upstream.py (plugins/filter: the one renderer of the include
# file, also the ai_gateway role's) and nginx_proc.py (plugins/module_utils: how a
# reload is proven, also the nginx_reload module's).

#: The settings file's keys (written by the ai_gateway role) and their types.
CONFIG_KEYS = {
    "include_file": str,
    # null: the renderer's default header (what the role's own file has).
    "header": (str, type(None)),
    "allow_loopback": bool,
    "entries": list,
    "verdict_urls": dict,
    "drain_record": str,
    "state_file": str,
    "metrics_file": str,
    "validate_command": list,
    "reload_command": list,
    "pid_file": str,
    "poll_interval_s": (int, float),
    "poll_timeout_s": (int, float),
    "load_timeout_s": (int, float),
    "rules": dict,
    # Its presence closes the breaker at the next round (then it is removed).
    "breaker_reset_file": str,
    # Set to the time a proven reload started ("": none): the role's nginx_reload
    # module reloads when a file of the gateway is newer than this stamp.
    "loaded_stamp": str,
    # Each round holds this lock; while the pause file exists (an Ansible run
    # writes the gateway's files) rounds are skipped (see Service.round).
    "lock_file": str,
    "pause_file": str,
}

#: A pause file older than this is left over from a run that was killed: ignored.
PAUSE_MAX_S = 1800.0


#: How a settings error names the expected type, where the type's own name does not say it.
KIND_NAMES = {
    "header": "a string or null",
    "poll_interval_s": "a number",
    "poll_timeout_s": "a number",
    "load_timeout_s": "a number",
}


class ServiceError(Exception):
    """A setting, a file or a command the service cannot work with."""


def load_config(text: str, source: str) -> tuple[dict, Rules]:
    """Return the checked settings and rules from the settings file's JSON text."""
    try:
        config = json.loads(text)
    except ValueError as exc:
        raise ServiceError(f"{source}: not JSON ({exc})") from None
    if not isinstance(config, dict):
        raise ServiceError(f"{source}: must hold a JSON object")
    problems = [f"{key} is missing" for key in CONFIG_KEYS if key not in config]
    problems += [f"{key} is not a known setting" for key in config if key not in CONFIG_KEYS]
    for key, kind in CONFIG_KEYS.items():
        if key in config and not isinstance(config[key], kind):
            expected = KIND_NAMES.get(key) or f"a {kind.__name__}"
            problems.append(f"{key} must be {expected}")
    if not problems:
        names = {e.get("host_name") for e in config["entries"] if isinstance(e, dict)}
        unknown = sorted(set(config["verdict_urls"]) - names)
        if unknown:
            problems.append(f"verdict_urls names nodes that have no entry: {', '.join(unknown)}")
        try:
            rules = Rules(**config["rules"])
        except TypeError as exc:
            problems.append(f"rules: {exc}")
        else:
            problems += [f"rules: {p}" for p in rules.problems()]
        for key in ("poll_interval_s", "poll_timeout_s", "load_timeout_s"):
            if config[key] <= 0:
                problems.append(f"{key} must be above 0")
    if problems:
        raise ServiceError(f"{source}: " + "; ".join(problems))
    return config, rules


def read_drained(path: str) -> set:
    """Return the nodes the gateway's drain record drains (none when there is no record)."""
    try:
        with open(path, encoding="utf-8") as handle:
            record = json.load(handle)
    except FileNotFoundError:
        return set()
    except (OSError, ValueError) as exc:
        raise ServiceError(f"the drain record {path} cannot be read: {exc}") from None
    drained = record.get("drained", []) if isinstance(record, dict) else None
    if not isinstance(drained, list) or not all(isinstance(n, str) for n in drained):
        raise ServiceError(f'the drain record {path} must hold {{"drained": [<host names>]}}')
    return set(drained)


def verdict_of(status: int | None, body: bytes) -> tuple[str, str]:
    """Return (HEALTHY|UNHEALTHY|UNKNOWN, cause) from a checker's answer."""
    if status not in (200, 503):
        return UNKNOWN, f"no verdict (HTTP {status})" if status else "no answer"
    try:
        answer = json.loads(body)
    except ValueError:
        return UNKNOWN, "the verdict is not JSON"
    if not isinstance(answer, dict) or not isinstance(answer.get("healthy"), bool):
        return UNKNOWN, "the verdict has no healthy field"
    if answer["healthy"] and status == 200:
        return HEALTHY, ""
    causes = answer.get("causes")
    causes = causes if isinstance(causes, list) else []
    text = "; ".join(str(c.get("detail", c)) for c in causes if isinstance(c, dict))
    return UNHEALTHY, text or "unhealthy (no cause given)"


def fetch(url: str, timeout: float) -> tuple[int | None, bytes]:
    """GET a checker's verdict: (HTTP status or None, body)."""
    try:
        with urllib.request.urlopen(url, timeout=timeout) as answer:
            return answer.status, answer.read(65536)
    except urllib.error.HTTPError as refused:
        try:
            return refused.code, refused.read(65536)
        except (OSError, http.client.HTTPException):
            return refused.code, b""
    except (OSError, ValueError, http.client.HTTPException):
        return None, b""


def poll(urls: dict, timeout: float, fetcher=fetch) -> dict:
    """Return every node's (verdict, cause), the checkers asked all at once."""
    with ThreadPoolExecutor(max_workers=min(32, max(1, len(urls)))) as pool:
        answers = {name: pool.submit(fetcher, url, timeout) for name, url in urls.items()}
        return {name: verdict_of(*future.result()) for name, future in answers.items()}


def render(config: dict, down: list[str]) -> str:
    """Return the include file's text with ``down`` marked down (the role's own renderer)."""
    try:
        return ai_upstream.render_conf(
            config["entries"], config["header"], config["allow_loopback"], down=list(down)
        )
    except ai_upstream.UpstreamError as exc:
        raise ServiceError(f"the include file cannot be rendered: {exc}") from None


def run(command: list[str]) -> tuple[int, str]:
    """Run a command: (exit status, output)."""
    try:
        done = subprocess.run(command, capture_output=True, text=True, timeout=60, check=False)
    except (OSError, subprocess.TimeoutExpired) as exc:
        return 127, str(exc)
    return done.returncode, (done.stdout + done.stderr).strip()


def reload_proven(config: dict, command_runner=run) -> str:
    """Reload nginx and wait for a new worker generation; return "" or what went wrong."""
    try:
        master = nginx_proc.read_master_pid(config["pid_file"])
    except nginx_proc.NginxProcError as exc:
        return str(exc)
    before = {w["pid"] for w in nginx_proc.generations(master)[0]}
    rc, output = command_runner(config["reload_command"])
    if rc != 0:
        return f"{' '.join(config['reload_command'])} failed ({rc}): {output}"
    started = time.monotonic()
    while time.monotonic() - started < config["load_timeout_s"]:
        if nginx_proc.new_workers(nginx_proc.generations(master)[0], before):
            return ""
        time.sleep(0.05)
    return f"no new nginx worker within {config['load_timeout_s']} s: the reload did not load"


def swap(config: dict, text: str, command_runner=run, force: bool = False) -> str:
    """Put ``text`` in place of the include file, proven by nginx -t and a reload.

    Returns "" when nginx serves the new file, or what went wrong: then the
    previous file is back (and loaded again when the reload is what failed).
    A file already on disk is left alone, unless ``force`` (then it is checked
    and loaded again).
    """
    path = config["include_file"]
    previous = read_text(path)
    if previous == text and not force:
        return ""
    write_atomically(path, text)
    rc, output = command_runner(config["validate_command"])
    if rc != 0:
        restore(path, previous)
        return f"nginx refused the new file ({' '.join(config['validate_command'])}): {output}"
    problem = reload_proven(config, command_runner)
    if problem:
        restore(path, previous)
        again = reload_proven(config, command_runner)
        return problem + (f"; reloading the previous file: {again}" if again else "")
    return ""


def read_text(path: str) -> str | None:
    """Return a file's text, or None when there is no such file."""
    try:
        with open(path, encoding="utf-8") as handle:
            return handle.read()
    except FileNotFoundError:
        return None


def stamp(path: str, at: float) -> None:
    """Set the modification time of ``path`` to ``at``, creating it; never move it back."""
    existed = os.path.exists(path)
    with open(path, "a", encoding="utf-8"):
        pass
    if not existed or os.stat(path).st_mtime < at:
        os.utime(path, (at, at))


def paused_since(path: str, now: float) -> float | None:
    """Return when the pause file was made, or None (no file, or one too old to count)."""
    try:
        made = os.stat(path).st_mtime
    except FileNotFoundError:
        return None
    return made if now - made <= PAUSE_MAX_S else None


def write_atomically(path: str, text: str) -> None:
    """Write ``text`` to ``path`` through a temporary file in the same folder and a rename."""
    folder = os.path.dirname(path) or "."
    handle, temporary = tempfile.mkstemp(dir=folder, prefix=".membership.")
    with os.fdopen(handle, "w", encoding="utf-8") as out:
        out.write(text)
    os.chmod(temporary, 0o644)
    os.replace(temporary, path)


def restore(path: str, previous: str | None) -> None:
    """Put the previous include file back (or remove a file that was not there)."""
    if previous is None:
        with contextlib.suppress(FileNotFoundError):
            os.remove(path)
    else:
        write_atomically(path, previous)


def state_to_json(state: State) -> dict:
    """Return the state as it is kept on disk (the role reads the nodes held out)."""
    return {
        "held_out": sorted(n for n, s in state.nodes.items() if s.out),
        "breaker_open": state.breaker_open,
        "breaker_reason": state.breaker_reason,
        "nodes": {n: asdict(s) for n, s in sorted(state.nodes.items())},
    }


def state_from_json(data: dict) -> State:
    """Return the state kept on disk (an unreadable one starts afresh, nothing held out)."""
    try:
        nodes = {n: NodeState(**s) for n, s in data.get("nodes", {}).items()}
        return State(nodes, bool(data.get("breaker_open")), str(data.get("breaker_reason", "")))
    except (AttributeError, TypeError):
        return State()


def kept_membership(previous: State, new: State) -> State:
    """Return ``new`` with each node in or out as in ``previous`` (its counts kept).

    For a round whose file nginx did not take: who is out did not change, but
    the verdicts seen still count towards the next decision.
    """
    nodes = {}
    for name, node in new.nodes.items():
        before = previous.nodes.get(name, NodeState())
        nodes[name] = replace(
            node,
            out=before.out,
            removed_at=before.removed_at,
            returned_at=before.returned_at,
            return_after_s=before.return_after_s,
        )
    return replace(new, nodes=nodes)


class Service:
    """One gateway's membership service: its settings, state and last round."""

    def __init__(self, config: dict, rules: Rules):
        """Start from the state kept on disk."""
        self.config, self.rules = config, rules
        try:
            with open(config["state_file"], encoding="utf-8") as handle:
                self.state = state_from_json(json.load(handle))
        except (OSError, ValueError):
            self.state = State()
        self.swap_failures = 0
        # The first round loads its file even when it is already on disk: a
        # service stopped between a write and its reload left nginx behind.
        self.loaded = False
        self.paused = False

    def round(self, now: float, verdicts: dict | None = None) -> list[dict]:
        """Run one round under the lock, unless an Ansible run has paused the service.

        The lock and the pause file are how a run of the ai_gateway role and
        the service never write the gateway's files at once: the run creates
        the pause file, then takes the lock (so that a round under way ends
        first), writes, validates and reloads, and removes the pause file.
        """
        config = self.config
        if not config["lock_file"]:
            return self.judge(now, verdicts)
        with open(config["lock_file"], "a", encoding="utf-8") as lock:
            fcntl.flock(lock, fcntl.LOCK_EX)
            pause = config["pause_file"] and paused_since(config["pause_file"], now)
            if pause:
                if self.paused:
                    return []
                self.paused = True
                return [{"node": "", "event": "paused", "why": "an Ansible run writes the files"}]
            events = []
            if self.paused:
                self.paused = False
                events.append({"node": "", "event": "resumed", "why": "the run is over"})
            return events + self.judge(now, verdicts)

    def judge(self, now: float, verdicts: dict | None = None) -> list[dict]:
        """Poll, decide, and put the include file in line; return the round's events.

        Only the primary servers are judged (backups stay as the inventory has
        them); servers the inventory marks down count as drained; a server
        whose node runs no checker (no verdict URL) counts as healthy.
        """
        config = self.config
        events = []
        if config["breaker_reset_file"] and os.path.exists(config["breaker_reset_file"]):
            with contextlib.suppress(FileNotFoundError):
                os.remove(config["breaker_reset_file"])
            if self.state.breaker_open:
                self.state = reset_breaker(self.state)
                events.append({"node": "", "event": "breaker_reset", "why": "by request"})
        if verdicts is None:
            verdicts = poll(config["verdict_urls"], config["poll_timeout_s"])
        primaries = [e["host_name"] for e in config["entries"] if not e.get("backup")]
        verdicts = {
            n: verdicts.get(n, (UNKNOWN, "no answer"))
            if n in config["verdict_urls"]
            else (HEALTHY, "no checker")
            for n in primaries
        }
        drained = read_drained(config["drain_record"]) | {
            e["host_name"] for e in config["entries"] if e.get("down")
        }
        state, down, decided = decide(self.state, verdicts, drained, now, self.rules)
        started = time.time()
        reloading = False
        try:
            text = render(config, down)
            reloading = not self.loaded or read_text(config["include_file"]) != text
            problem = swap(config, text, force=not self.loaded)
        except (ServiceError, OSError) as exc:
            problem = str(exc)
        if not problem and reloading and config["loaded_stamp"]:
            # nginx read every file as it was when this reload started: after
            # the include file was written, and no later than now.
            try:
                written = os.stat(config["include_file"]).st_mtime
                stamp(config["loaded_stamp"], max(started, min(written, time.time())))
            except OSError as exc:
                events.append({"node": "", "event": "stamp_failed", "why": str(exc)})
        if problem:
            self.swap_failures += 1
            # Nothing changed in nginx: the decisions are dropped, and made again next round.
            wanted = ", ".join(f"{e['event']} {e['node']}" for e in decided) or "no change"
            events.append({"node": "", "event": "swap_failed", "why": f"{problem} ({wanted})"})
            state = kept_membership(self.state, state)
        else:
            self.loaded = True
            events += decided
        self.state = state
        write_atomically(config["state_file"], json.dumps(state_to_json(state), indent=2) + "\n")
        if config["metrics_file"]:
            write_atomically(config["metrics_file"], service_metrics(state, down, self))
        return events


def service_metrics(state: State, down: list[str], service: Service) -> str:
    """Return the service's node-exporter textfile metrics."""
    lines = [
        "# HELP ai_gateway_membership_node_out 1 for a node this gateway holds out "
        "(unhealthy GPUs).",
        "# TYPE ai_gateway_membership_node_out gauge",
    ]
    lines += [
        f'ai_gateway_membership_node_out{{node="{name}"}} {int(node.out)}'
        for name, node in sorted(state.nodes.items())
    ]
    lines += [
        "# HELP ai_gateway_membership_nodes_down Nodes marked down in the include file "
        "(held out or drained).",
        "# TYPE ai_gateway_membership_nodes_down gauge",
        f"ai_gateway_membership_nodes_down {len(down)}",
        "# HELP ai_gateway_membership_breaker_open 1 when the breaker stopped removals.",
        "# TYPE ai_gateway_membership_breaker_open gauge",
        f"ai_gateway_membership_breaker_open {int(state.breaker_open)}",
        "# HELP ai_gateway_membership_swap_failures_total Include file changes nginx refused.",
        "# TYPE ai_gateway_membership_swap_failures_total counter",
        f"ai_gateway_membership_swap_failures_total {service.swap_failures}",
    ]
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> int:
    """Run the service with the settings file given as the only argument."""
    args = sys.argv[1:] if argv is None else argv
    if len(args) != 1:
        print("usage: ai-gateway-membership <settings.json>", file=sys.stderr)
        return 2
    try:
        with open(args[0], encoding="utf-8") as handle:
            config, rules = load_config(handle.read(), args[0])
    except (OSError, ServiceError) as exc:
        print(exc, file=sys.stderr)
        return 2
    service = Service(config, rules)
    while True:
        started = time.monotonic()
        try:
            for event in service.round(time.time()):
                print(f"{event['event']}: {event['node']} {event['why']}".strip(), flush=True)
        except Exception as exc:  # the service goes on; nginx keeps the last good file
            print(f"round failed: {exc}", file=sys.stderr, flush=True)
        time.sleep(max(0.0, config["poll_interval_s"] - (time.monotonic() - started)))


if __name__ == "__main__":
    sys.exit(main())
