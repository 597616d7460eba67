"""Unit tests of the ai_fleet_report filter (plugins/filter/ai_fleet_report.py)."""

from __future__ import annotations

import copy

import pytest
from ansible.errors import AnsibleFilterError
from plugin_loader import load_plugin

plugin = load_plugin("filter", "ai_fleet_report")
report = plugin.ai_fleet_report

CONTAINER = {"image": "sha256:0123456789abcdef", "state": "running", "health": "healthy"}


def node(**changes):
    state = {
        "reachable": True,
        "gpu": {
            "pci_devices": [{"address": "0000:18:00.0"}],
            "gpu_count": 1,
            "driver_version": "580.95.05",
            "cuda_version": "13.0",
            "nvidia_smi": {"state": "ok"},
        },
        "status": {
            "containers": {n: dict(CONTAINER) for n in ("edge-unit-manager", "edge-llm-node")},
            "health": "ok",
            "deep_health": "healthy",
        },
        "recorded": "abc",
        "desired": "abc",
        "drain_var": False,
    }
    state.update(changes)
    return state


def gateway(servers, record=(), **changes):
    state = {
        "reachable": True,
        "nginx_t": "ok",
        "loaded": "current",
        "servers_file": "/etc/nginx/ai-gateway.d/s.conf",
        "servers": servers,
        "entries": [
            {"host_name": "gpu-1", "address": "10.0.0.1", "port": 8800},
            {"host_name": "gpu-2", "address": "10.0.0.2", "port": 8800},
        ],
        "drain_record": list(record),
    }
    state.update(changes)
    return state


GOOD = "server 10.0.0.1:8800 max_fails=3 fail_timeout=30s;\nserver 10.0.0.2:8800 max_fails=3;\n"


def test_a_healthy_fleet_has_no_fault():
    result = report({"gpu-2": node(), "gpu-1": node()}, {"gw-1": gateway(GOOD)})
    assert result["faults"] == []
    assert [row["host"] for row in result["nodes"]] == ["gpu-1", "gpu-2"]
    assert result["nodes"][0]["gateways"] == {"gw-1": "up"}
    assert "1 GPU(s), driver 580.95.05, CUDA 13.0" in result["table"]
    assert result["table"].endswith("Faults: none")


def test_a_drained_node_is_down_and_not_a_fault():
    servers = GOOD.replace("10.0.0.2:8800 max_fails=3;", "10.0.0.2:8800 max_fails=3 down;")
    result = report({"gpu-1": node(), "gpu-2": node()}, {"gw-1": gateway(servers, ["gpu-2"])})
    assert result["faults"] == []
    assert result["nodes"][1]["drained"] is True
    assert result["nodes"][1]["drained_by"] == ["gw-1"]
    assert "gpu-2: DRAINED (gw-1)" in result["table"]


def test_every_fault_is_named():
    sick = node(
        status={
            "containers": {"edge-llm-node": {**CONTAINER, "state": "exited"}},
            "health": "Status code was -1: Connection refused",
            "deep_health": "Service unhealthy: edge-llm error (code -6)",
        },
        recorded="old",
    )
    broken_gpu = node(gpu={"pci_devices": [{}], "nvidia_smi": {"state": "driver_library_mismatch"}})
    gateways = {
        "gw-1": gateway(GOOD.replace("10.0.0.1", "10.0.0.9"), loaded="not current: a.conf"),
        "gw-2": {"reachable": False, "msg": "ssh: connect timed out"},
    }
    faults = report({"gpu-1": sick, "gpu-2": broken_gpu}, gateways)["faults"]
    assert "gpu-1: container edge-llm-node is exited" in faults
    assert "gpu-1: /health: Status code was -1: Connection refused" in faults
    assert "gpu-1: deep health: Service unhealthy: edge-llm error (code -6)" in faults
    assert "gpu-1: not deployed as the inventory says: a change is pending (run site.yml)" in faults
    assert "gpu-1: not served by gateway gw-1 (10.0.0.1:8800 is absent)" in faults
    assert any(
        f.startswith("gpu-2: nvidia-smi does not work (driver_library_mismatch)") for f in faults
    )
    assert "gw-1: loaded configuration: not current: a.conf" in faults
    assert "gw-2: ssh: connect timed out" in faults


def test_a_drained_node_still_up_on_a_gateway_is_a_fault():
    result = report({"gpu-1": node(drain_var=True), "gpu-2": node()}, {"gw-1": gateway(GOOD)})
    assert result["faults"] == [
        "gpu-1: drained, but gateway gw-1 still sends it requests (10.0.0.1:8800 is up)"
    ]


def test_unreachable_node_and_node_without_gpu():
    result = report(
        {"gpu-1": {"reachable": False, "msg": "unreachable"}, "gpu-2": node(gpu={})},
        {"gw-1": gateway(GOOD)},
    )
    assert result["faults"] == ["gpu-1: unreachable"]
    assert "gpu-1: UNREACHABLE" in result["table"]
    no_gpu = node(gpu={"pci_devices": [], "nvidia_smi": {"state": "not_installed"}})
    assert "no NVIDIA GPU" in report({"gpu-2": no_gpu}, {})["table"]


def test_inputs_are_validated():
    with pytest.raises(AnsibleFilterError, match="nodes must be a dictionary"):
        report([], {})
    with pytest.raises(AnsibleFilterError, match="state of host 'gw-1' must be a dictionary"):
        report({}, {"gw-1": "up"})


def test_the_inputs_are_not_changed():
    nodes, gateways = {"gpu-1": node()}, {"gw-1": gateway(GOOD)}
    before = copy.deepcopy((nodes, gateways))
    report(nodes, gateways)
    assert (nodes, gateways) == before
