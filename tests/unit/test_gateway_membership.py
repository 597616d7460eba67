"""The gateway membership service (roles/ai_gateway/files/ai_gateway_membership.py).

Its decisions, with polls simulated every 2 s: removal after two bad verdicts in
a row, return after a healthy minute, a fault that flaps for five minutes moving
the node at most twice, the breaker at half the fleet, operator drains left
alone. Then the service's settings, the checkers' answers, and its rounds
against a real nginx: the include file rendered by the role's own renderer,
checked by nginx -t, swapped, the reload proven, the previous file put back
when nginx refuses.
"""

from __future__ import annotations

import fcntl
import json
import os
import signal
import socket
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest
from ansible.module_utils.parsing.convert_bool import boolean
from nginx_harness import NGINX, needs_nginx, scratch_conf
from plugin_loader import ROOT, load_module

# Installed beside the service on a gateway; here from where the repository keeps them.
sys.path.insert(0, str(ROOT / "plugins" / "filter"))
sys.path.insert(0, str(ROOT / "plugins" / "module_utils"))
membership = load_module(ROOT / "roles" / "ai_gateway" / "files" / "ai_gateway_membership.py")
HEALTHY, UNHEALTHY, UNKNOWN = membership.HEALTHY, membership.UNHEALTHY, membership.UNKNOWN
RULES = membership.Rules()
POLL_S = 2.0
NODES = ["gpu-1", "gpu-2", "gpu-3", "gpu-4"]


class Gateway:
    """The service's state across simulated polls, and every event it reported."""

    def __init__(self, nodes=NODES, rules=RULES, drained=()):
        """A gateway in front of ``nodes``, with ``drained`` drained by an operator."""
        self.nodes, self.rules, self.drained = list(nodes), rules, set(drained)
        self.state, self.now, self.events, self.down = membership.State(), 0.0, [], []

    def poll(self, **verdicts):
        """One poll; nodes not named answer healthy. Keyword: node name with - as _."""
        answers = {n: (HEALTHY, "") for n in self.nodes}
        for key, verdict in verdicts.items():
            answers[key.replace("_", "-")] = verdict
        self.state, self.down, events = membership.decide(
            self.state, answers, self.drained, self.now, self.rules
        )
        self.events += events
        self.now += POLL_S
        return events

    def run(self, seconds, **verdicts):
        for _ in range(round(seconds / POLL_S)):
            self.poll(**verdicts)


BAD = (UNHEALTHY, "XID 79 (GPU has fallen off the bus)")


def test_two_bad_verdicts_in_a_row_remove_the_node_one_does_not():
    gateway = Gateway()
    assert gateway.poll(gpu_2=BAD) == []
    assert gateway.down == []
    gateway.poll()  # a good one in between starts the count again
    assert gateway.poll(gpu_2=BAD) == []
    assert gateway.poll(gpu_2=BAD) == [
        {"node": "gpu-2", "event": "removed", "why": "XID 79 (GPU has fallen off the bus)"}
    ]
    assert gateway.down == ["gpu-2"]


def test_removal_takes_at_most_two_polls_after_the_fault():
    gateway = Gateway()
    started = gateway.now
    while "gpu-1" not in gateway.down:
        gateway.poll(gpu_1=BAD)
    assert gateway.now - started <= 2 * POLL_S


def test_no_answer_from_a_held_out_node_restarts_its_healthy_wait():
    gateway = Gateway()
    gateway.run(4, gpu_1=BAD)
    gateway.run(40)
    gateway.run(30, gpu_1=(UNKNOWN, "timed out"))
    gateway.run(40)
    assert gateway.down == ["gpu-1"]  # 40 s + silence + 40 s is not a healthy minute
    gateway.run(22)
    assert gateway.down == []


def test_a_checker_that_does_not_answer_changes_nothing():
    gateway = Gateway()
    gateway.run(30, gpu_3=(UNKNOWN, "timed out"))
    assert gateway.down == [] and gateway.events == []
    gateway.poll(gpu_3=BAD)
    gateway.poll(gpu_3=BAD)
    gateway.run(300, gpu_3=(UNKNOWN, "timed out"))
    assert gateway.down == ["gpu-3"]  # and an unknown does not return it either


def test_a_removed_node_returns_after_a_healthy_minute_without_a_break():
    gateway = Gateway()
    gateway.run(4, gpu_1=BAD)
    gateway.run(50)
    gateway.poll(gpu_1=BAD)  # the minute starts again
    gateway.run(58)
    assert gateway.down == ["gpu-1"]
    gateway.run(4)
    assert gateway.down == []
    assert gateway.events[-1]["event"] == "returned"


def test_a_fault_flapping_every_30_s_for_5_minutes_moves_the_node_at_most_twice():
    gateway = Gateway()
    for half_minute in range(10):
        gateway.run(30, **({"gpu_4": BAD} if half_minute % 2 == 0 else {}))
    assert gateway.down == ["gpu-4"]  # out through the whole flapping
    gateway.run(120)
    moves = [e for e in gateway.events if e["node"] == "gpu-4"]
    assert [e["event"] for e in moves] == ["removed", "returned"]


def test_a_node_removed_again_soon_after_its_return_waits_twice_as_long():
    gateway = Gateway()
    gateway.run(4, gpu_1=BAD)
    gateway.run(62)
    assert gateway.down == []
    gateway.run(4, gpu_1=BAD)
    assert gateway.state.nodes["gpu-1"].return_after_s == 120
    gateway.run(100)
    assert gateway.down == ["gpu-1"]
    gateway.run(22)
    assert gateway.down == []


def test_a_wait_set_under_a_higher_limit_is_capped_by_the_new_one():
    held = membership.State(
        {"gpu-1": membership.NodeState(out=True, removed_at=0.0, return_after_s=480.0)}
    )
    rules = membership.Rules(return_after_s=15, max_return_after_s=30)
    verdicts = {"gpu-1": (HEALTHY, ""), "gpu-2": (HEALTHY, "")}
    state, down, _ = membership.decide(held, verdicts, set(), 100.0, rules)
    assert down == ["gpu-1"]
    state, down, events = membership.decide(state, verdicts, set(), 130.0, rules)
    assert (down, [e["event"] for e in events]) == ([], ["returned"])


def test_at_most_half_the_nodes_go_out_then_the_breaker_waits_for_a_person():
    gateway = Gateway()
    every = {n.replace("-", "_"): BAD for n in NODES}
    gateway.run(20, **every)
    assert len(gateway.down) == 2
    assert gateway.state.breaker_open
    assert "at most 2 may be" in gateway.state.breaker_reason
    assert [e["event"] for e in gateway.events].count("breaker_open") == 1
    assert gateway.down == ["gpu-1", "gpu-2"]
    # Open: returns go on (gpu-2 recovers), removals do not (gpu-3 is still bad)...
    gateway.run(70, gpu_1=BAD, gpu_3=BAD, gpu_4=BAD)
    assert gateway.down == ["gpu-1"]
    # ...until a person closes the breaker: then removals resume, within the limit.
    gateway.state = membership.reset_breaker(gateway.state)
    assert not gateway.state.breaker_open
    gateway.run(4, gpu_1=BAD, gpu_3=BAD, gpu_4=BAD)
    assert gateway.down == ["gpu-1", "gpu-3"]
    assert gateway.state.breaker_open  # gpu-4 would be the third


def test_the_last_node_is_never_removed():
    gateway = Gateway(nodes=["gpu-1"])
    gateway.run(20, gpu_1=BAD)
    assert gateway.down == [] and gateway.state.breaker_open
    assert membership.most_out(1, 0.5) == 0
    assert membership.most_out(2, 0.5) == 1
    assert membership.most_out(5, 0.5) == 2


def test_an_operator_drained_node_stays_down_whatever_its_gpu_says():
    gateway = Gateway(drained={"gpu-2"})
    gateway.run(10, gpu_2=BAD)
    gateway.run(300)
    assert gateway.down == ["gpu-2"] and gateway.events == []


def test_drained_nodes_count_towards_the_breaker():
    gateway = Gateway(drained={"gpu-1"})
    gateway.run(10, gpu_2=BAD, gpu_3=BAD)
    assert len(gateway.down) == 2 and gateway.state.breaker_open


def test_a_node_gone_from_the_inventory_is_forgotten():
    gateway = Gateway()
    gateway.run(4, gpu_1=BAD)
    gateway.nodes.remove("gpu-1")
    gateway.poll()
    assert "gpu-1" not in gateway.state.nodes and gateway.down == []


@pytest.mark.parametrize(
    ("rules", "problem"),
    [
        (membership.Rules(remove_after=0), "remove_after must be 1 or more"),
        (membership.Rules(return_after_s=-1), "return_after_s must be 0 or more"),
        (membership.Rules(max_return_after_s=10), "at most max_return_after_s"),
        (membership.Rules(max_out_share=1), "max_out_share must be above 0 and below 1"),
    ],
)
def test_bad_settings_are_named(rules, problem):
    assert any(problem in p for p in rules.problems())
    assert membership.Rules().problems() == []


# --- the service's settings and the checkers' answers ----------------------------------------


def entry(name: str, address: str, port: int = 8800) -> dict:
    return {
        "host_name": name,
        "address": address,
        "port": port,
        "weight": 1,
        "max_fails": 3,
        "fail_timeout": "30s",
        "max_conns": 20,
        "backup": False,
        "down": False,
    }


def settings(folder, **changes) -> dict:
    config = {
        "include_file": str(folder / "servers.conf"),
        "header": "",
        "allow_loopback": True,
        "entries": [entry(f"gpu-{i}", f"127.0.0.{i}") for i in (1, 2, 3, 4)],
        "verdict_urls": {f"gpu-{i}": f"http://127.0.0.{i}:9402/verdict" for i in (1, 2, 3, 4)},
        "drain_record": str(folder / "drained.json"),
        "state_file": str(folder / "membership-state.json"),
        "metrics_file": str(folder / "membership.prom"),
        "validate_command": ["true"],
        "reload_command": ["true"],
        "pid_file": str(folder / "nginx.pid"),
        "poll_interval_s": 2,
        "poll_timeout_s": 1.5,
        "load_timeout_s": 5,
        "rules": {"remove_after": 2, "return_after_s": 60},
        "breaker_reset_file": str(folder / "reset-breaker"),
        "loaded_stamp": str(folder / "loaded"),
        "lock_file": str(folder / "membership.lock"),
        "pause_file": str(folder / "membership.pause"),
    }
    return {**config, **changes}


def test_good_settings_load():
    config, rules = membership.load_config(json.dumps(settings(ROOT)), "membership.json")
    assert rules == membership.Rules(remove_after=2, return_after_s=60)
    assert config["entries"][0]["host_name"] == "gpu-1"


@pytest.mark.parametrize(
    ("change", "problem"),
    [
        ({"entries": "gpu-1"}, "entries must be a list"),
        (
            {"verdict_urls": {"gpu-9": "http://x"}},
            "verdict_urls names nodes that have no entry: gpu-9",
        ),
        ({"rules": {"remove_after": 0}}, "rules: remove_after must be 1 or more"),
        ({"rules": {"remove_afterr": 2}}, "rules: "),
        ({"poll_timeout_s": 0}, "poll_timeout_s must be above 0"),
        ({"surprise": 1}, "surprise is not a known setting"),
    ],
)
def test_bad_settings_are_refused_naming_the_file_and_the_key(change, problem):
    with pytest.raises(membership.ServiceError, match=r"^membership\.json: ") as refused:
        membership.load_config(json.dumps(settings(ROOT, **change)), "membership.json")
    assert problem in str(refused.value)


def test_missing_settings_are_each_named():
    with pytest.raises(membership.ServiceError) as refused:
        membership.load_config('{"header": ""}', "m.json")
    assert "include_file is missing" in str(refused.value)
    assert "rules is missing" in str(refused.value)
    with pytest.raises(membership.ServiceError, match="not JSON"):
        membership.load_config("{", "m.json")


@pytest.mark.parametrize(
    ("status", "body", "verdict"),
    [
        (200, b'{"healthy": true, "causes": []}', (HEALTHY, "")),
        (
            503,
            b'{"healthy": false, "causes": [{"detail": "XID 79 (GPU has fallen off the bus)"}]}',
            (UNHEALTHY, "XID 79 (GPU has fallen off the bus)"),
        ),
        (503, b'{"healthy": false}', (UNHEALTHY, "unhealthy (no cause given)")),
        (None, b"", (UNKNOWN, "no answer")),
        (500, b"oops", (UNKNOWN, "no verdict (HTTP 500)")),
        (200, b"<html>", (UNKNOWN, "the verdict is not JSON")),
        (200, b'{"ok": 1}', (UNKNOWN, "the verdict has no healthy field")),
    ],
)
def test_a_checker_s_answer_is_healthy_unhealthy_or_unknown(status, body, verdict):
    assert membership.verdict_of(status, body) == verdict


def test_every_checker_is_asked_at_once():
    def slow(url, timeout):
        time.sleep(0.5)
        return 200, b'{"healthy": true}'

    started = time.monotonic()
    found = membership.poll({f"gpu-{i}": f"http://x/{i}" for i in range(8)}, 1.0, fetcher=slow)
    assert time.monotonic() - started < 1.5
    assert set(found.values()) == {(HEALTHY, "")}


def test_the_include_file_is_the_role_s_rendering_and_never_empty(tmp_path):
    config = settings(tmp_path)
    text = membership.render(config, ["gpu-2"])
    assert (
        text.splitlines()[1]
        == "server 127.0.0.2:8800 max_fails=3 fail_timeout=30s max_conns=20 down;"
    )
    with pytest.raises(membership.ServiceError, match="no usable server"):
        membership.render(config, ["gpu-1", "gpu-2", "gpu-3", "gpu-4"])


@pytest.fixture
def no_nginx(monkeypatch):
    """Swaps that write the file and succeed (the rules, not nginx, are under test)."""
    monkeypatch.setattr(
        membership,
        "swap",
        lambda config, text, force=False: (
            membership.write_atomically(config["include_file"], text) or ""
        ),
    )


def downs(config) -> list[str]:
    lines = Path(config["include_file"]).read_text().splitlines()
    return [ln.split()[1] for ln in lines if ln.endswith(" down;")]


@pytest.mark.usefixtures("no_nginx")
def test_a_paused_service_writes_nothing_until_the_run_is_over(tmp_path):
    config, rules = membership.load_config(json.dumps(settings(tmp_path)), "m.json")
    service = membership.Service(config, rules)
    bad = {f"gpu-{i}": (HEALTHY, "") for i in (1, 2, 3, 4)} | {"gpu-2": (UNHEALTHY, "XID 79")}
    assert service.round(0.0, bad) == []
    Path(config["pause_file"]).touch()
    assert [e["event"] for e in service.round(2.0, bad)] == ["paused"]
    assert service.round(4.0, bad) == []  # said once
    assert not Path(config["include_file"]).exists() or downs(config) == []
    Path(config["pause_file"]).unlink()
    assert [e["event"] for e in service.round(6.0, bad)] == ["resumed", "removed"]
    assert downs(config) == ["127.0.0.2:8800"]


@pytest.mark.usefixtures("no_nginx")
def test_a_pause_file_left_by_a_killed_run_is_ignored_after_half_an_hour(tmp_path):
    config, rules = membership.load_config(json.dumps(settings(tmp_path)), "m.json")
    service = membership.Service(config, rules)
    Path(config["pause_file"]).touch()
    old = time.time() - membership.PAUSE_MAX_S - 5
    os.utime(config["pause_file"], (old, old))
    healthy = {f"gpu-{i}": (HEALTHY, "") for i in (1, 2, 3, 4)}
    assert service.round(time.time(), healthy) == []
    assert Path(config["include_file"]).exists()


@pytest.mark.usefixtures("no_nginx")
def test_a_round_waits_for_the_lock_an_ansible_run_holds(tmp_path):
    config, rules = membership.load_config(json.dumps(settings(tmp_path)), "m.json")
    service = membership.Service(config, rules)
    healthy = {f"gpu-{i}": (HEALTHY, "") for i in (1, 2, 3, 4)}
    with open(config["lock_file"], "a") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        worker = threading.Thread(target=service.round, args=(0.0, healthy))
        worker.start()
        worker.join(0.5)
        assert worker.is_alive(), "the round did not wait for the lock"
        assert not Path(config["include_file"]).exists()
    worker.join(5)
    assert not worker.is_alive() and Path(config["include_file"]).exists()


@pytest.mark.usefixtures("no_nginx")
def test_a_node_without_a_checker_counts_healthy_and_returns(tmp_path):
    urls = {f"gpu-{i}": f"http://127.0.0.{i}:9402/verdict" for i in (1, 2, 3)}
    config, rules = membership.load_config(
        json.dumps(settings(tmp_path, verdict_urls=urls)), "m.json"
    )
    service = membership.Service(config, rules)
    held = membership.NodeState(out=True, removed_at=0.0, return_after_s=60.0)
    service.state = membership.State({"gpu-4": held})
    healthy = {f"gpu-{i}": (HEALTHY, "") for i in (1, 2, 3)}
    service.round(10.0, healthy)
    assert downs(config) == ["127.0.0.4:8800"]
    events = service.round(75.0, healthy)
    assert [(e["event"], e["node"]) for e in events] == [("returned", "gpu-4")]
    assert downs(config) == []


def test_the_reload_stamp_only_moves_forward(tmp_path):
    path = tmp_path / "loaded"
    membership.stamp(str(path), 1000.0)
    assert path.stat().st_mtime == 1000.0
    membership.stamp(str(path), 900.0)
    assert path.stat().st_mtime == 1000.0
    membership.stamp(str(path), 1100.0)
    assert path.stat().st_mtime == 1100.0


def test_the_service_and_the_role_s_filter_write_the_same_bytes(tmp_path):
    # The role renders the file with ai_upstream_conf(down=<held out>) and the
    # default header (null in the settings): a play run and the service agree.
    config, _ = membership.load_config(json.dumps(settings(tmp_path, header=None)), "m.json")
    from_role = membership.ai_upstream.ai_upstream_conf(
        config["entries"], allow_loopback=True, down=["gpu-2", "gone-from-inventory"]
    )
    assert membership.render(config, ["gpu-2"]) == from_role
    assert [line.endswith(" down;") for line in from_role.splitlines() if line[0] != "#"] == [
        False,
        True,
        False,
        False,
    ]


def test_the_drain_record_is_read_and_a_bad_one_named(tmp_path):
    record = tmp_path / "drained.json"
    assert membership.read_drained(str(record)) == set()
    record.write_text('{"drained": ["gpu-2"]}')
    assert membership.read_drained(str(record)) == {"gpu-2"}
    record.write_text('{"drained": "gpu-2"}')
    with pytest.raises(membership.ServiceError, match=r"must hold \{\"drained\""):
        membership.read_drained(str(record))


def test_a_fallback_boolean_agrees_with_ansible_s():
    """ai_upstream.py on a gateway has no Ansible: its own boolean must say what Ansible's does."""
    code = (
        "import sys; sys.modules['ansible'] = None; sys.path.insert(0, sys.argv[1]);"
        "import ai_upstream, json; out = {}\n"
        "for v in json.loads(sys.argv[2]):\n"
        "    try: out[repr(v)] = ai_upstream.boolean(v, strict=True)\n"
        "    except TypeError: out[repr(v)] = None\n"
        "print(json.dumps(out))"
    )
    values = ["yes", "No", " on ", "off", "1", "0", "true", "False", "t", "f", "y", "n", 1, 0]
    values += [1.0, 0.0, True, False, "maybe", "", 2, None, "2"]
    done = subprocess.run(
        [sys.executable, "-c", code, str(ROOT / "plugins" / "filter"), json.dumps(values)],
        capture_output=True,
        text=True,
        check=True,
    )
    fallback = json.loads(done.stdout)
    for value in values:
        try:
            expected = boolean(value, strict=True)
        except TypeError:
            expected = None
        assert fallback[repr(value)] == expected, value


# --- rounds against a real nginx -------------------------------------------------------------

UPSTREAM_HTTP = """\
    upstream ai_inference_service {{
        include {d}/servers.conf;
    }}
    server {{
        listen 127.0.0.1:{port};
        location / {{ proxy_pass http://ai_inference_service; }}
    }}
"""


@pytest.fixture
def nginx(tmp_path):
    """A running nginx whose upstream includes tmp_path/servers.conf, and the service's settings."""
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    conf = tmp_path / "nginx.conf"
    conf.write_text(scratch_conf(tmp_path, UPSTREAM_HTTP.format(d=tmp_path, port=port)))
    config = settings(
        tmp_path,
        validate_command=[NGINX, "-t", "-q", "-c", str(conf), "-p", f"{tmp_path}/"],
        reload_command=[NGINX, "-s", "reload", "-c", str(conf), "-p", f"{tmp_path}/"],
    )
    (tmp_path / "servers.conf").write_text(membership.render(config, []))
    subprocess.run([NGINX, "-c", str(conf), "-p", f"{tmp_path}/"], check=True)
    deadline = time.monotonic() + 5
    while not (tmp_path / "nginx.pid").exists():
        assert time.monotonic() < deadline, "nginx did not start"
        time.sleep(0.05)
    yield config
    master = int((tmp_path / "nginx.pid").read_text())
    os.kill(master, signal.SIGQUIT)


def served_servers(config) -> list[str]:
    return [line for line in Path(config["include_file"]).read_text().splitlines() if line]


@pytest.mark.playbook
@needs_nginx
def test_a_round_holds_an_unhealthy_node_out_and_proves_the_reload(nginx):
    config, rules = membership.load_config(json.dumps(nginx), "membership.json")
    service = membership.Service(config, rules)
    verdicts = {f"gpu-{i}": (HEALTHY, "") for i in (1, 2, 3, 4)}
    verdicts["gpu-3"] = (UNHEALTHY, "XID 79 (GPU has fallen off the bus)")
    master = int(Path(config["pid_file"]).read_text())
    before = {w["pid"] for w in membership.nginx_proc.generations(master)[0]}
    assert service.round(100.0, verdicts) == []
    events = service.round(102.0, verdicts)
    assert events == [
        {"node": "gpu-3", "event": "removed", "why": "XID 79 (GPU has fallen off the bus)"}
    ]
    assert [line.endswith(" down;") for line in served_servers(config)] == [
        False,
        False,
        True,
        False,
    ]
    after = {w["pid"] for w in membership.nginx_proc.generations(master)[0]}
    assert after - before, "nginx started no new worker: the new file is not loaded"
    # The role's nginx_reload reads the stamp: no reload owed after a proven one.
    stamp = Path(config["loaded_stamp"])
    assert stamp.stat().st_mtime >= Path(config["include_file"]).stat().st_mtime
    loaded_at = stamp.stat().st_mtime_ns
    assert service.round(104.0, verdicts) == []
    assert stamp.stat().st_mtime_ns == loaded_at, "a round that changed nothing touched the stamp"
    kept = json.loads(Path(config["state_file"]).read_text())
    assert kept["held_out"] == ["gpu-3"] and kept["breaker_open"] is False
    metrics = Path(config["metrics_file"]).read_text()
    assert 'ai_gateway_membership_node_out{node="gpu-3"} 1' in metrics
    # A restarted service starts from what it kept: gpu-3 stays out.
    again = membership.Service(config, rules)
    assert again.state.nodes["gpu-3"].out


@pytest.mark.playbook
@needs_nginx
def test_a_file_nginx_refuses_is_put_back_and_nothing_changes(nginx):
    nginx["validate_command"] = ["sh", "-c", "echo 'host not found in upstream' >&2; exit 1"]
    config, rules = membership.load_config(json.dumps(nginx), "membership.json")
    service = membership.Service(config, rules)
    before = Path(config["include_file"]).read_text()
    bad = {f"gpu-{i}": (HEALTHY, "") for i in (1, 2, 3, 4)}
    bad["gpu-1"] = (UNHEALTHY, "nvidia-smi exited 18")
    service.round(100.0, bad)
    events = service.round(102.0, bad)
    assert [e["event"] for e in events] == ["swap_failed"]
    assert "host not found in upstream" in events[-1]["why"]
    assert "(removed gpu-1)" in events[-1]["why"]
    assert Path(config["include_file"]).read_text() == before
    assert not service.state.nodes["gpu-1"].out  # kept as it was: tried again next round
    # Both rounds: the first one loads the file on disk again (refused too).
    metrics = Path(config["metrics_file"]).read_text()
    assert "ai_gateway_membership_swap_failures_total 2" in metrics


@pytest.mark.playbook
@needs_nginx
def test_a_reload_that_loads_nothing_puts_the_previous_file_back(nginx):
    nginx["reload_command"] = ["true"]  # exits 0, starts no new workers
    nginx["load_timeout_s"] = 0.5
    config, _ = membership.load_config(json.dumps(nginx), "membership.json")
    before = Path(config["include_file"]).read_text()
    problem = membership.swap(config, membership.render(config, ["gpu-4"]))
    assert "no new nginx worker within 0.5 s" in problem
    assert Path(config["include_file"]).read_text() == before


@pytest.mark.playbook
@needs_nginx
def test_a_drained_node_is_down_and_never_returned(nginx):
    config, rules = membership.load_config(json.dumps(nginx), "membership.json")
    Path(config["drain_record"]).write_text('{"drained": ["gpu-2"]}')
    service = membership.Service(config, rules)
    healthy = {f"gpu-{i}": (HEALTHY, "") for i in (1, 2, 3, 4)}
    for second in range(0, 400, 2):
        assert service.round(float(second), healthy) == []
    assert [line.endswith(" down;") for line in served_servers(config)] == [
        False,
        True,
        False,
        False,
    ]


@pytest.mark.playbook
@needs_nginx
def test_backups_are_not_judged_and_the_last_primary_is_never_removed(nginx):
    nginx["entries"][3]["backup"] = True
    nginx["entries"][2]["down"] = True  # the inventory's ai_node_drain
    config, rules = membership.load_config(json.dumps(nginx), "membership.json")
    service = membership.Service(config, rules)
    bad = {f"gpu-{i}": (UNHEALTHY, "XID 79") for i in (1, 2, 3, 4)}
    for second in range(0, 20, 2):
        service.round(float(second), bad)
    # 3 primaries, of which one may be out: gpu-3, down in the inventory, is that one.
    lines = served_servers(config)
    assert [line.endswith(" down;") for line in lines] == [False, False, True, False]
    assert lines[3].endswith(" backup;")
    assert service.state.breaker_open


@pytest.mark.playbook
@needs_nginx
def test_the_breaker_is_closed_by_its_reset_file(nginx):
    config, rules = membership.load_config(json.dumps(nginx), "membership.json")
    service = membership.Service(config, rules)
    bad = {f"gpu-{i}": (UNHEALTHY, "XID 79") for i in (1, 2, 3, 4)}
    for second in range(0, 10, 2):
        service.round(float(second), bad)
    assert service.state.breaker_open
    Path(config["breaker_reset_file"]).touch()
    events = service.round(10.0, bad)
    assert events[0]["event"] == "breaker_reset"
    assert not Path(config["breaker_reset_file"]).exists()
    assert service.state.breaker_open  # still half the fleet unhealthy: open again


@pytest.mark.playbook
@needs_nginx
def test_a_service_restarted_after_a_write_loads_the_file_on_its_first_round(nginx):
    config, rules = membership.load_config(json.dumps(nginx), "membership.json")
    # As if a service had written this file and stopped before reloading nginx.
    Path(config["include_file"]).write_text(membership.render(config, []))
    master = int(Path(config["pid_file"]).read_text())
    before = {w["pid"] for w in membership.nginx_proc.generations(master)[0]}
    healthy = {f"gpu-{i}": (HEALTHY, "") for i in (1, 2, 3, 4)}
    membership.Service(config, rules).round(0.0, healthy)
    after = {w["pid"] for w in membership.nginx_proc.generations(master)[0]}
    assert after - before, "the first round did not reload nginx"
