"""Unit tests of the ai_gateway filters (plugins/filter/ai_gateway.py)."""

from __future__ import annotations

import json
import os
import random
import subprocess
import sys

import pytest
from ansible.errors import AnsibleFilterError
from plugin_loader import ROOT, load_plugin

FILTERS = ROOT / "plugins" / "filter"

ai_gateway = load_plugin("filter", "ai_gateway")
targets = ai_gateway.ai_gateway_probe_targets
verdicts = ai_gateway.ai_gateway_verdicts
bad_networks = ai_gateway.ai_gateway_bad_networks
verdict_urls = ai_gateway.ai_gateway_verdict_urls
# The entries come from ai_upstream_servers in the role: the tests build them the same way.
ai_upstream = load_plugin("filter", "ai_upstream")
servers = ai_upstream.ai_upstream_servers

URL1 = "http://10.0.0.1:8800/health"
URL2 = "http://10.0.0.2:8800/health"
REFUSED = (
    "Status code was -1 and not [200]: Request failed: "
    "<urlopen error [Errno 111] Connection refused>"
)
TIMED_OUT = "Status code was -1 and not [200]: Request failed: <urlopen error timed out>"


def fails(func, *args, **kwargs):
    """Call func, expect AnsibleFilterError, return its message."""
    with pytest.raises(AnsibleFilterError) as info:
        func(*args, **kwargs)
    return str(info.value.message)


def fleet(**host_vars):
    """Return (entries, hostvars) of GPU nodes gpu-1, gpu-2, ... with the given variables.

    Each keyword is a host name (``gpu_1`` for ``gpu-1``); the address is 10.0.0.<n>.
    """
    hostvars = {}
    for index, (key, extra) in enumerate(host_vars.items(), 1):
        hostvars[key.replace("_", "-")] = {"ansible_host": f"10.0.0.{index}", **extra}
    return servers(list(hostvars), hostvars), hostvars


def probe(host, status=200, body=None, msg=None, url=None):
    """Return a result of the probe (uri) task for one target, as Ansible registers it."""
    index = int(host.rsplit("-", 1)[1])
    item = {
        "host_name": host,
        "address": f"10.0.0.{index}",
        "port": 8800,
        "url": f"http://10.0.0.{index}:8800/health",
    }
    result = {"changed": False, "failed": False, "item": item, "ansible_loop_var": "item"}
    result["status"] = status
    result["url"] = url or item["url"]
    if body is not None:
        result["json"] = body
    if msg is not None:
        result["msg"] = msg
    return result


def skipped(host):
    """Return a skipped result of the probe task (ai_gateway_probe is false)."""
    result = probe(host)
    return {
        "changed": False,
        "skipped": True,
        "skip_reason": "Conditional result was False",
        "false_condition": "ai_gateway_probe | bool",
        "item": result["item"],
        "ansible_loop_var": "item",
    }


def registered(*results):
    """Return the registered variable of the probe task."""
    return {"changed": False, "msg": "All items completed", "results": list(results)}


def names(entries):
    return [entry["host_name"] for entry in entries]


OK = {"status": "ok"}


# --- plugin wiring ---------------------------------------------------------


def test_filter_module_maps_names_to_functions():
    assert ai_gateway.FilterModule().filters() == {
        "ai_gateway_probe_targets": targets,
        "ai_gateway_verdicts": verdicts,
        "ai_gateway_bad_networks": bad_networks,
        "ai_gateway_verdict_urls": verdict_urls,
    }


# --- ai_gateway_probe_targets ----------------------------------------------------


def test_targets_are_the_nodes_not_drained_and_not_reported_unhealthy():
    entries, hostvars = fleet(
        gpu_1={},
        gpu_2={"ai_node_health": {"healthy": True, "message": "ready"}},
        gpu_3={"ai_node_drain": True},
        gpu_4={"ai_node_health": "garbage"},
        gpu_5={"ai_node_health": {"healthy": False, "message": "GPU lost"}},
    )
    assert targets(entries, hostvars) == [
        {"host_name": "gpu-1", "address": "10.0.0.1", "port": 8800, "url": URL1},
        {"host_name": "gpu-2", "address": "10.0.0.2", "port": 8800, "url": URL2},
    ]


def test_target_url_uses_path_and_brackets_ipv6():
    hostvars = {
        "gpu-1": {"ansible_host": "2001:db8::1", "ai_node_public_port": 18800},
        "gpu-2": {"ansible_host": "gpu-2.example.net"},
    }
    entries = servers(list(hostvars), hostvars)
    assert [t["url"] for t in targets(entries, hostvars, path="/healthz")] == [
        "http://[2001:db8::1]:18800/healthz",
        "http://gpu-2.example.net:8800/healthz",
    ]


def test_targets_sorted_in_natural_host_order():
    hosts = ["gpu-10", "gpu-2", "gpu-1"]
    hostvars = {h: {"ansible_host": f"10.0.0.{i}"} for i, h in enumerate(hosts, 1)}
    entries = servers(hosts, hostvars)
    rng = random.Random(7)
    rng.shuffle(entries)
    assert names(targets(entries, hostvars)) == ["gpu-1", "gpu-2", "gpu-10"]


@pytest.mark.parametrize("path", ["health", "", None])
def test_targets_reject_a_path_without_slash(path):
    entries, hostvars = fleet(gpu_1={})
    assert fails(targets, entries, hostvars, path=path) == (
        f"ai_gateway_probe_targets: path must be a string starting with '/', got {path!r}"
    )


def test_targets_reject_a_host_missing_from_hostvars():
    entries, _ = fleet(gpu_1={})
    assert fails(targets, entries, {}) == (
        "ai_gateway_probe_targets: host 'gpu-1' is not in hostvars (not in the inventory?)"
    )


# --- verdicts from the nodes' own ai_node_health ------------------------------------


def test_published_healthy_verdict_confirmed_by_the_gateway_probe():
    entries, hostvars = fleet(gpu_1={"ai_node_health": {"healthy": True, "message": "ready"}})
    result = verdicts(entries, hostvars, registered(probe("gpu-1", body=OK)))
    assert result["verdicts"] == {
        "gpu-1": {"healthy": True, "message": "ready", "source": "ai_node_health"}
    }
    assert result["upstream"] == entries
    assert result["usable"] == entries
    assert result["left_out"] == []
    assert result["left_out_reasons"] == []
    assert result["unusable_reasons"] == []


@pytest.mark.parametrize("message", ["", None])
def test_published_verdict_without_message(message):
    fact = {"healthy": True} if message is None else {"healthy": True, "message": message}
    entries, hostvars = fleet(gpu_1={"ai_node_health": fact})
    result = verdicts(entries, hostvars, registered(probe("gpu-1", body=OK)))
    assert result["verdicts"]["gpu-1"]["message"] == "no message"


def test_published_unhealthy_verdict_leaves_the_node_out():
    entries, hostvars = fleet(
        gpu_1={"ai_node_health": {"healthy": False, "message": "GPU 0 lost"}},
        gpu_2={"ai_node_health": {"healthy": True, "message": "ready"}},
    )
    result = verdicts(entries, hostvars, registered(probe("gpu-2", body=OK)))
    assert result["verdicts"]["gpu-1"] == {
        "healthy": False,
        "message": "GPU 0 lost",
        "source": "ai_node_health",
    }
    assert names(result["upstream"]) == ["gpu-2"]
    assert names(result["left_out"]) == ["gpu-1"]
    assert result["left_out_reasons"] == [
        "gpu-1 (10.0.0.1:8800) is unhealthy (ai_node_health): GPU 0 lost"
    ]
    assert names(result["usable"]) == ["gpu-2"]


@pytest.mark.parametrize(
    ("fact", "shown"),
    [
        ("ok", '"ok"'),
        ({"healthy": "yes", "message": "ready"}, '{"healthy": "yes", "message": "ready"}'),
        ({"status": "ok"}, '{"status": "ok"}'),
        ([True], "[true]"),
        (None, "null"),
    ],
)
def test_malformed_published_verdict_counts_as_unhealthy(fact, shown):
    entries, hostvars = fleet(gpu_1={"ai_node_health": fact}, gpu_2={})
    result = verdicts(entries, hostvars, registered(probe("gpu-2", body=OK)))
    message = "malformed ai_node_health, expected {healthy: <bool>, message: <str>}, got " + shown
    assert result["verdicts"]["gpu-1"] == {
        "healthy": False,
        "message": message,
        "source": "ai_node_health",
    }
    assert result["left_out_reasons"] == [
        f"gpu-1 (10.0.0.1:8800) is unhealthy (ai_node_health): {message}"
    ]
    assert names(result["upstream"]) == ["gpu-2"]


# --- a node that says it is healthy must also be reachable from the gateway -----------


@pytest.mark.parametrize(
    ("failed", "reason"),
    [
        (probe("gpu-1", status=-1, msg=REFUSED), f"GET {URL1}: {REFUSED}"),
        (probe("gpu-1", status=-1, msg=TIMED_OUT), f"GET {URL1}: {TIMED_OUT}"),
        (probe("gpu-1", status=503, msg="HTTP Error 503"), f"GET {URL1}: HTTP Error 503"),
        (
            probe("gpu-1", body={"status": "starting"}),
            f'{URL1} answered 200 without {{"status": "ok"}}',
        ),
    ],
)
def test_node_reported_healthy_but_unreachable_is_left_out(failed, reason):
    entries, hostvars = fleet(
        gpu_1={"ai_node_health": {"healthy": True, "message": "ready"}},
        gpu_2={"ai_node_health": {"healthy": True, "message": "ready"}},
    )
    assert names(targets(entries, hostvars)) == ["gpu-1", "gpu-2"]
    result = verdicts(entries, hostvars, registered(failed, probe("gpu-2", body=OK)))
    message = f"the node reported healthy (ready), but the gateway cannot reach it: {reason}"
    assert result["verdicts"]["gpu-1"] == {"healthy": False, "message": message, "source": "probe"}
    assert names(result["upstream"]) == names(result["usable"]) == ["gpu-2"]
    assert names(result["left_out"]) == ["gpu-1"]
    assert result["left_out_reasons"] == [f"gpu-1 (10.0.0.1:8800) is unhealthy (probe): {message}"]
    assert "cannot reach it" in result["left_out_reasons"][0]


def test_every_node_reported_healthy_but_unreachable_leaves_nothing_usable():
    entries, hostvars = fleet(
        gpu_1={"ai_node_health": {"healthy": True, "message": "ready"}},
        gpu_2={"ai_node_health": {"healthy": True, "message": "ready"}},
    )
    probes = registered(
        probe("gpu-1", status=-1, msg=REFUSED), probe("gpu-2", status=-1, msg=TIMED_OUT)
    )
    result = verdicts(entries, hostvars, probes)
    assert result["usable"] == []
    assert all("the gateway cannot reach it" in r for r in result["unusable_reasons"])
    assert [r.split(" ")[0] for r in result["unusable_reasons"]] == ["gpu-1", "gpu-2"]


def test_node_reported_unhealthy_is_not_probed_and_keeps_its_reason():
    entries, hostvars = fleet(
        gpu_1={"ai_node_health": {"healthy": False, "message": "model missing"}},
        gpu_2={"ai_node_health": {"healthy": True, "message": "ready"}},
    )
    assert names(targets(entries, hostvars)) == ["gpu-2"]
    result = verdicts(entries, hostvars, registered(probe("gpu-2", body=OK)))
    assert result["left_out_reasons"] == [
        "gpu-1 (10.0.0.1:8800) is unhealthy (ai_node_health): model missing"
    ]


def test_probing_off_trusts_a_node_reported_healthy():
    entries, hostvars = fleet(
        gpu_1={"ai_node_health": {"healthy": True, "message": "ready"}},
        gpu_2={},
    )
    result = verdicts(entries, hostvars, registered(skipped("gpu-1"), skipped("gpu-2")))
    assert result["verdicts"] == {
        "gpu-1": {"healthy": True, "message": "ready", "source": "ai_node_health"},
        "gpu-2": {
            "healthy": True,
            "message": "not probed (ai_gateway_probe is false)",
            "source": "probe",
        },
    }
    assert names(result["usable"]) == ["gpu-1", "gpu-2"]


# --- verdicts from the gateway's probes ---------------------------------------------


def test_probe_200_ok_is_healthy():
    entries, hostvars = fleet(gpu_1={})
    result = verdicts(entries, hostvars, registered(probe("gpu-1", body=OK)))
    assert result["verdicts"] == {
        "gpu-1": {"healthy": True, "message": f"{URL1} answered 200 ok", "source": "probe"}
    }
    assert names(result["upstream"]) == ["gpu-1"]


@pytest.mark.parametrize("body", [None, {}, {"status": "degraded"}, ["ok"], "ok"])
def test_probe_200_without_status_ok_is_unhealthy(body):
    entries, hostvars = fleet(gpu_1={}, gpu_2={})
    probes = registered(probe("gpu-1", body=body), probe("gpu-2", body=OK))
    result = verdicts(entries, hostvars, probes)
    message = f'{URL1} answered 200 without {{"status": "ok"}}'
    assert result["verdicts"]["gpu-1"] == {"healthy": False, "message": message, "source": "probe"}
    assert result["left_out_reasons"] == [f"gpu-1 (10.0.0.1:8800) is unhealthy (probe): {message}"]


def test_probe_http_503_is_unhealthy():
    msg = "Status code was 503 and not [200]: HTTP Error 503: Service Unavailable"
    entries, hostvars = fleet(gpu_1={}, gpu_2={})
    probes = registered(probe("gpu-1", status=503, msg=msg), probe("gpu-2", body=OK))
    result = verdicts(entries, hostvars, probes)
    assert result["verdicts"]["gpu-1"]["message"] == f"GET {URL1}: {msg}"
    assert result["left_out_reasons"] == [
        f"gpu-1 (10.0.0.1:8800) is unhealthy (probe): GET {URL1}: {msg}"
    ]


def test_probe_status_without_msg_reads_http_status():
    entries, hostvars = fleet(gpu_1={}, gpu_2={})
    probes = registered(probe("gpu-1", status=502), probe("gpu-2", body=OK))
    assert verdicts(entries, hostvars, probes)["verdicts"]["gpu-1"]["message"] == (
        f"GET {URL1}: HTTP 502"
    )


@pytest.mark.parametrize("msg", [REFUSED, TIMED_OUT])
def test_probe_connection_error_is_unhealthy(msg):
    entries, hostvars = fleet(gpu_1={}, gpu_2={})
    probes = registered(probe("gpu-1", status=-1, msg=msg), probe("gpu-2", body=OK))
    result = verdicts(entries, hostvars, probes)
    assert result["verdicts"]["gpu-1"] == {
        "healthy": False,
        "message": f"GET {URL1}: {msg}",
        "source": "probe",
    }
    assert names(result["left_out"]) == ["gpu-1"]
    assert names(result["upstream"]) == names(result["usable"]) == ["gpu-2"]


def test_probe_without_url_falls_back_to_the_target_url():
    entries, hostvars = fleet(gpu_1={}, gpu_2={})
    failed = probe("gpu-1", status=-1, msg=REFUSED)
    del failed["url"]
    result = verdicts(entries, hostvars, registered(failed, probe("gpu-2", body=OK)))
    assert result["verdicts"]["gpu-1"]["message"] == f"GET {URL1}: {REFUSED}"


def test_skipped_probe_trusts_the_node():
    entries, hostvars = fleet(gpu_1={}, gpu_2={})
    result = verdicts(entries, hostvars, registered(skipped("gpu-1"), skipped("gpu-2")))
    assert result["verdicts"]["gpu-1"] == {
        "healthy": True,
        "message": "not probed (ai_gateway_probe is false)",
        "source": "probe",
    }
    assert names(result["upstream"]) == names(result["usable"]) == ["gpu-1", "gpu-2"]


def test_probes_may_be_the_results_list():
    entries, hostvars = fleet(gpu_1={})
    as_list = verdicts(entries, hostvars, [probe("gpu-1", body=OK)])
    assert as_list == verdicts(entries, hostvars, registered(probe("gpu-1", body=OK)))


def test_published_verdict_wins_and_probes_cover_the_rest():
    entries, hostvars = fleet(
        gpu_1={"ai_node_health": {"healthy": True, "message": "ready"}},
        gpu_2={},
    )
    probes = registered(probe("gpu-1", body=OK), probe("gpu-2", status=-1, msg=REFUSED))
    result = verdicts(entries, hostvars, probes)
    assert result["verdicts"]["gpu-1"]["source"] == "ai_node_health"
    assert result["verdicts"]["gpu-2"]["source"] == "probe"
    assert names(result["upstream"]) == ["gpu-1"]


def test_ipv6_node_is_named_with_brackets():
    hostvars = {"gpu-1": {"ansible_host": "2001:db8::1"}, "gpu-2": {"ansible_host": "10.0.0.2"}}
    entries = servers(list(hostvars), hostvars)
    failed = probe("gpu-1", status=-1, msg=REFUSED, url="http://[2001:db8::1]:8800/health")
    result = verdicts(entries, hostvars, registered(failed, probe("gpu-2", body=OK)))
    assert result["left_out_reasons"] == [
        "gpu-1 ([2001:db8::1]:8800) is unhealthy (probe): "
        f"GET http://[2001:db8::1]:8800/health: {REFUSED}"
    ]


# --- drained and backup nodes ---------------------------------------------------------


def test_drained_node_stays_down_and_is_never_judged():
    entries, hostvars = fleet(
        gpu_1={"ai_node_drain": True, "ai_node_health": {"healthy": False, "message": "x"}},
        gpu_2={"ai_node_drain": True},
        gpu_3={},
    )
    assert names(targets(entries, hostvars)) == ["gpu-3"]
    result = verdicts(entries, hostvars, registered(probe("gpu-3", body=OK)))
    assert set(result["verdicts"]) == {"gpu-3"}
    assert names(result["upstream"]) == ["gpu-1", "gpu-2", "gpu-3"]
    assert [entry["down"] for entry in result["upstream"]] == [True, True, False]
    assert result["left_out"] == []
    assert names(result["usable"]) == ["gpu-3"]
    assert result["unusable_reasons"] == [
        "gpu-1 is drained (ai_node_drain)",
        "gpu-2 is drained (ai_node_drain)",
    ]


def test_probe_result_for_a_drained_node_is_rejected():
    entries, hostvars = fleet(gpu_1={"ai_node_drain": True}, gpu_2={})
    probes = registered(probe("gpu-1", body=OK), probe("gpu-2", body=OK))
    assert fails(verdicts, entries, hostvars, probes) == (
        "ai_gateway_verdicts: probes: result(s) for host(s) 'gpu-1', which are drained, "
        "published an unhealthy ai_node_health or are not in entries"
    )


def test_healthy_backup_is_in_the_upstream_but_not_usable():
    entries, hostvars = fleet(gpu_1={"ai_gateway_backup": True}, gpu_2={})
    probes = registered(probe("gpu-1", body=OK), probe("gpu-2", body=OK))
    result = verdicts(entries, hostvars, probes)
    assert names(result["upstream"]) == ["gpu-1", "gpu-2"]
    assert result["upstream"][0]["backup"] is True
    assert names(result["usable"]) == ["gpu-2"]
    assert result["unusable_reasons"] == ["gpu-1 is a backup server only (ai_gateway_backup)"]


def test_unhealthy_backup_is_left_out():
    entries, hostvars = fleet(gpu_1={"ai_gateway_backup": True}, gpu_2={})
    probes = registered(probe("gpu-1", status=503, msg="HTTP Error 503"), probe("gpu-2", body=OK))
    result = verdicts(entries, hostvars, probes)
    assert names(result["upstream"]) == ["gpu-2"]
    assert names(result["left_out"]) == ["gpu-1"]
    assert result["unusable_reasons"] == result["left_out_reasons"]


# --- no usable node ---------------------------------------------------------------------


def test_no_usable_node_names_each_node_and_its_reason():
    entries, hostvars = fleet(
        gpu_1={"ai_node_health": {"healthy": False, "message": "driver mismatch"}},
        gpu_2={},
        gpu_3={"ai_node_drain": True},
        gpu_4={"ai_gateway_backup": True},
        gpu_5={"ai_node_health": ["bad"]},
    )
    probes = registered(
        probe("gpu-2", status=-1, msg=TIMED_OUT),
        probe("gpu-4", body=OK, url="http://10.0.0.4:8800/health"),
    )
    result = verdicts(entries, hostvars, probes)
    assert result["usable"] == []
    assert names(result["upstream"]) == ["gpu-3", "gpu-4"]
    assert result["unusable_reasons"] == [
        "gpu-1 (10.0.0.1:8800) is unhealthy (ai_node_health): driver mismatch",
        f"gpu-2 (10.0.0.2:8800) is unhealthy (probe): GET {URL2}: {TIMED_OUT}",
        "gpu-5 (10.0.0.5:8800) is unhealthy (ai_node_health): malformed ai_node_health, "
        'expected {healthy: <bool>, message: <str>}, got ["bad"]',
        "gpu-3 is drained (ai_node_drain)",
        "gpu-4 is a backup server only (ai_gateway_backup)",
    ]
    for host in ("gpu-1", "gpu-2", "gpu-3", "gpu-4", "gpu-5"):
        assert sum(reason.startswith(f"{host} ") for reason in result["unusable_reasons"]) == 1


def test_all_nodes_down_leaves_nothing_usable():
    entries, hostvars = fleet(gpu_1={}, gpu_2={})
    probes = registered(
        probe("gpu-1", status=-1, msg=REFUSED), probe("gpu-2", status=-1, msg=REFUSED)
    )
    result = verdicts(entries, hostvars, probes)
    assert result["upstream"] == result["usable"] == []
    assert names(result["left_out"]) == ["gpu-1", "gpu-2"]
    assert result["unusable_reasons"] == [
        f"gpu-1 (10.0.0.1:8800) is unhealthy (probe): GET {URL1}: {REFUSED}",
        f"gpu-2 (10.0.0.2:8800) is unhealthy (probe): GET {URL2}: {REFUSED}",
    ]


# --- deterministic ordering --------------------------------------------------------------


def test_output_does_not_depend_on_input_order():
    hosts = ["gpu-10", "gpu-9", "gpu-1", "gpu-2"]
    hostvars = {h: {"ansible_host": f"10.0.0.{h.split('-')[1]}"} for h in hosts}
    hostvars["gpu-9"]["ai_node_drain"] = True
    hostvars["gpu-2"]["ai_node_health"] = {"healthy": False, "message": "busy"}
    results = [
        probe("gpu-10", status=-1, msg=REFUSED),
        probe("gpu-1", body=OK),
    ]
    expected = verdicts(servers(hosts, hostvars), hostvars, registered(*results))
    assert names(expected["upstream"]) == ["gpu-1", "gpu-9"]
    assert names(expected["left_out"]) == ["gpu-2", "gpu-10"]
    assert list(expected["verdicts"]) == ["gpu-1", "gpu-2", "gpu-10"]
    rng = random.Random(1234)
    for _ in range(20):
        entries = servers(hosts, hostvars)
        rng.shuffle(entries)
        items = list(hostvars.items())
        rng.shuffle(items)
        shuffled = results[:]
        rng.shuffle(shuffled)
        assert verdicts(entries, dict(items), registered(*shuffled)) == expected


def test_upstream_entries_feed_ai_upstream_conf():
    conf = ai_upstream.ai_upstream_conf
    entries, hostvars = fleet(gpu_1={"ai_node_drain": True}, gpu_2={}, gpu_3={})
    probes = registered(probe("gpu-2", body=OK), probe("gpu-3", status=503, msg="HTTP 503"))
    upstream = verdicts(entries, hostvars, probes)["upstream"]
    assert conf(upstream, header="") == (
        "server 10.0.0.1:8800 max_fails=3 fail_timeout=30s max_conns=20 down;\n"
        "server 10.0.0.2:8800 max_fails=3 fail_timeout=30s max_conns=20;\n"
    )


def test_inputs_are_not_modified():
    entries, hostvars = fleet(gpu_1={}, gpu_2={"ai_node_drain": True})
    probes = registered(probe("gpu-1", status=-1, msg=REFUSED))
    before = json.dumps([entries, hostvars, probes], sort_keys=True)
    result = verdicts(entries, hostvars, probes)
    result["upstream"][0]["down"] = False
    assert json.dumps([entries, hostvars, probes], sort_keys=True) == before


# --- invalid input -----------------------------------------------------------------------


def test_missing_probe_result_is_an_error():
    entries, hostvars = fleet(gpu_1={}, gpu_2={})
    assert fails(verdicts, entries, hostvars, registered(probe("gpu-1", body=OK))) == (
        "ai_gateway_verdicts: host 'gpu-2': no ai_node_health fact and no result in probes; "
        "probe every node of ai_gateway_probe_targets"
    )
    assert fails(verdicts, entries, hostvars).startswith(
        "ai_gateway_verdicts: host 'gpu-1': no ai_node_health fact"
    )


def test_probe_result_for_a_node_reported_unhealthy_is_rejected():
    entries, hostvars = fleet(
        gpu_1={"ai_node_health": {"healthy": False, "message": "down"}},
        gpu_2={"ai_node_health": {"healthy": True, "message": "ok"}},
    )
    probes = registered(probe("gpu-1", body=OK), probe("gpu-2", body=OK))
    assert "result(s) for host(s) 'gpu-1'" in fails(verdicts, entries, hostvars, probes)


def test_published_healthy_node_without_probe_result_is_an_error():
    entries, hostvars = fleet(gpu_1={"ai_node_health": {"healthy": True, "message": "ready"}})
    assert fails(verdicts, entries, hostvars) == (
        "ai_gateway_verdicts: host 'gpu-1': published a healthy ai_node_health but has no "
        "result in probes; the gateway probes every node of ai_gateway_probe_targets, "
        "healthy ones included"
    )


def test_duplicate_probe_result_is_rejected():
    entries, hostvars = fleet(gpu_1={})
    probes = registered(probe("gpu-1", body=OK), probe("gpu-1", body=OK))
    assert fails(verdicts, entries, hostvars, probes) == (
        "ai_gateway_verdicts: probes: host 'gpu-1' has more than one result"
    )


@pytest.mark.parametrize(
    ("probes", "expected"),
    [
        ("ok", "probes must be the registered result of the probe task, got str"),
        ({"results": 3}, "probes must be the registered result of the probe task, got int"),
        ([{"status": 200}], "probes: result 0 has no item.host_name"),
        ([{"item": "gpu-1"}], "probes: result 0 has no item.host_name"),
    ],
)
def test_invalid_probes_rejected(probes, expected):
    entries, hostvars = fleet(gpu_1={})
    assert fails(verdicts, entries, hostvars, probes).startswith(f"ai_gateway_verdicts: {expected}")


@pytest.mark.parametrize(
    ("entries", "expected"),
    [
        ("gpu-1", "entries must be a list of server entries (from ai_upstream_servers), got str"),
        (None, "entries must be a list of server entries (from ai_upstream_servers), got NoneType"),
        (["gpu-1"], "entry 0 must be a dictionary, got str"),
        ([{"address": "10.0.0.1"}], "entry 0: host_name must be a non-empty string, got None"),
        (
            [{"host_name": "gpu-1", "address": "10.0.0.1", "port": 8800}],
            "host 'gpu-1': backup, down missing from the entry "
            "(build the entries with ai_upstream_servers)",
        ),
    ],
)
def test_invalid_entries_rejected(entries, expected):
    hostvars = {"gpu-1": {}}
    assert fails(verdicts, entries, hostvars) == f"ai_gateway_verdicts: {expected}"
    assert fails(targets, entries, hostvars) == f"ai_gateway_probe_targets: {expected}"


def test_duplicate_entries_rejected():
    entries, hostvars = fleet(gpu_1={})
    assert fails(verdicts, entries + entries, hostvars) == (
        "ai_gateway_verdicts: host 'gpu-1' appears in more than one entry"
    )


def test_hostvars_must_be_a_mapping_of_mappings():
    entries, _ = fleet(gpu_1={})
    assert fails(verdicts, entries, ["gpu-1"]) == (
        "ai_gateway_verdicts: hostvars must be a dictionary of host variables, got list"
    )
    assert fails(verdicts, entries, {"gpu-1": "x"}) == (
        "ai_gateway_verdicts: host 'gpu-1': its hostvars entry must be a dictionary"
    )
    assert fails(verdicts, entries, {}) == (
        "ai_gateway_verdicts: host 'gpu-1' is not in hostvars (not in the inventory?)"
    )


# --- ai_gateway_bad_networks ----------------------------------------------------------


def test_bad_networks_accepts_addresses_and_networks():
    good = ["127.0.0.1", "::1", "10.0.0.0/8", "192.0.2.7/32", "2001:db8::/32", "0.0.0.0/0", "::/0"]
    assert bad_networks(good) == []
    assert bad_networks([]) == []


@pytest.mark.parametrize(
    "bad",
    [
        "10.0.0.1/8",
        "10.0.0.300",
        "10.0.0.0/33",
        "example.com",
        "all",
        "unix:",
        "fe80::1%eth0",
        "[::1]",
        "10.0.0.0/8;",
        "10.0.0.1 10.0.0.2",
        "",
        7,
        None,
    ],
)
def test_bad_networks_lists_each_bad_entry(bad):
    assert bad_networks(["10.0.0.0/8", bad, "::1"]) == [bad]


@pytest.mark.parametrize("value", ["10.0.0.0/8", {"a": 1}, None])
def test_bad_networks_refuses_a_value_that_is_not_a_list(value):
    assert bad_networks(value) == [value]


@pytest.mark.playbook
def test_bad_networks_is_documented():
    env = {**os.environ, "ANSIBLE_FILTER_PLUGINS": str(FILTERS)}
    command = [sys.executable, "-m", "ansible.cli.doc", "-t", "filter", "--json"]
    result = subprocess.run(
        [*command, "ai_gateway_bad_networks"], capture_output=True, text=True, env=env, check=False
    )
    assert result.returncode == 0, result.stderr
    doc = json.loads(result.stdout)["ai_gateway_bad_networks"]
    assert doc["doc"]["name"] == "ai_gateway_bad_networks"
    assert "_input" in doc["doc"]["options"]
    assert "ai_gateway_bad_networks" in doc["examples"]
    assert doc["return"]


# --- ai_gateway_verdict_urls -------------------------------------------------------


def test_verdict_urls_name_every_primary_node_that_runs_the_checker():
    entries, hostvars = fleet(
        gpu_1={},
        gpu_2={"gpu_health_port": "9500"},
        gpu_3={"ai_gateway_backup": True},
        gpu_4={"gpu_health_enabled": "false"},
        gpu_5={"ai_node_drain": True},
    )
    assert verdict_urls(entries, hostvars) == {
        "gpu-1": "http://10.0.0.1:9402/verdict",
        "gpu-2": "http://10.0.0.2:9500/verdict",
        # A drained node is still asked: the service counts it, and never returns it.
        "gpu-5": "http://10.0.0.5:9402/verdict",
    }


def test_verdict_urls_use_the_gateway_s_address_and_brackets_ipv6():
    hostvars = {"gpu-1": {"ansible_host": "2001:db8::1"}}
    entries = servers(["gpu-1"], hostvars)
    assert verdict_urls(entries, hostvars, port=9999) == {
        "gpu-1": "http://[2001:db8::1]:9999/verdict"
    }


@pytest.mark.parametrize(
    ("host_vars", "problem"),
    [
        (
            {"gpu_health_port": "94o2"},
            "host 'gpu-1': gpu_health_port must be a port number from 1 to 65535, got '94o2'",
        ),
        (
            {"gpu_health_port": 70000},
            "host 'gpu-1': gpu_health_port must be a port number from 1 to 65535, got 70000",
        ),
        (
            {"gpu_health_enabled": "maybe"},
            "host 'gpu-1': gpu_health_enabled must be a boolean, got 'maybe'",
        ),
    ],
)
def test_verdict_urls_refuse_bad_node_settings_naming_host_and_variable(host_vars, problem):
    entries, hostvars = fleet(gpu_1=host_vars)
    assert fails(verdict_urls, entries, hostvars) == f"ai_gateway_verdict_urls: {problem}"
