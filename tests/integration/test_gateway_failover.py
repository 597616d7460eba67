"""A node whose stack stops is dropped from the gateway, and comes back when restored.

Stops ai-inference-service on the first GPU node, re-runs the gateway play
(playbooks/gateways.yml, which probes each node's /health when no node play ran
before it), and checks that the node left the include file while requests
through the gateway keep succeeding on the other nodes; then restores the node,
re-runs the play and checks it is back. Runs plays: molecule only, or
AI_FLEET_PLAY_TESTS=1 against another fleet.
"""

from __future__ import annotations

import uuid

import pytest
import testinfra
from conftest import (
    AI_NODE_DEFAULTS,
    ROOT,
    http_get,
    inventory_groups,
    needs_plays,
    run_ok,
    run_playbook,
    wait_for,
)

pytestmark = needs_plays

GATEWAY_PLAY = ROOT / "playbooks" / "gateways.yml"
INCLUDE_FILE = "ai_inference_service.servers.local.conf"


def _host(inventory: str, name: str):
    return testinfra.get_host(f"ansible://{name}?ansible_inventory={inventory}")


@pytest.fixture(scope="module")
def fleet(ansible_inventory):
    """The first gateway and every GPU node: (name, host, settings, upstream address)."""
    groups = inventory_groups(ansible_inventory)
    gateway_name = sorted(groups["gateways"]["hosts"])[0]
    gateway = _host(ansible_inventory, gateway_name)
    gw_vars = gateway.ansible.get_variables()
    include = "{}/{}".format(
        gw_vars.get("ai_gateway_conf_dir", "/etc/nginx/ai-gateway.d"),
        gw_vars.get("ai_gateway_servers_file", INCLUDE_FILE),
    )
    nodes = []
    for name in sorted(groups["gpu_nodes"]["hosts"]):
        host = _host(ansible_inventory, name)
        settings = {**AI_NODE_DEFAULTS, **host.ansible.get_variables()}
        address = settings.get("ai_node_public_host") or settings.get("ansible_host") or name
        port = settings.get("ai_node_public_port") or settings["ai_node_http_port"]
        nodes.append((name, host, settings, f"{address}:{port}"))
    gw_port = gw_vars.get("ai_gateway_http_port", 80)
    return gateway, include, f"http://127.0.0.1:{gw_port}", nodes


def server_lines(gateway, include: str) -> list[str]:
    """The `server` lines of the gateway's include file."""
    content = gateway.file(include).content_string
    return [line.strip() for line in content.splitlines() if line.strip().startswith("server ")]


def listed(lines: list[str], upstream: str) -> bool:
    """Whether a server line for host:port is in the upstream (and not marked down)."""
    return any(line.split()[1] == upstream and " down" not in line for line in lines)


def test_stopped_node_is_dropped_then_restored(fleet, ansible_inventory):
    gateway, include, gateway_url, nodes = fleet
    if len(nodes) < 2:
        pytest.skip("needs at least two GPU nodes")
    (name, host, settings, upstream), others = nodes[0], nodes[1:]
    container = settings["ai_node_inference_container"]
    assert listed(server_lines(gateway, include), upstream), "the node is not listed to begin with"

    run_ok(host, "docker", "stop", container)
    try:
        result = run_playbook(ansible_inventory, GATEWAY_PLAY)
        output = result.stdout + result.stderr
        assert result.returncode == 0, output[-3000:]
        assert f"{name} ({upstream}) is unhealthy" in output, output[-3000:]

        lines = server_lines(gateway, include)
        assert not listed(lines, upstream), f"{name} is still in the upstream: {lines}"
        for _, _, _, other in others:
            assert listed(lines, other), f"{other} is missing from the upstream: {lines}"

        ids = [f"failover-{uuid.uuid4().hex[:12]}-{i}" for i in range(6)]
        for request_id in ids:
            status, body = http_get(
                gateway, gateway_url + "/api/v1/ai/info", {"X-Request-ID": request_id}
            )
            assert status == 200, body
            assert body["request_id"] == request_id
        served = "".join(
            run_ok(h, "docker", "logs", "--since", "5m", s["ai_node_inference_container"])
            for _, h, s, _ in others
        )
        assert all(request_id in served for request_id in ids), "a request was not served"
    finally:
        run_ok(host, "docker", "start", container)
        port = settings["ai_node_http_port"]
        wait_for(lambda: host.run(f"curl -fsS http://127.0.0.1:{port}/health").rc == 0, 60)
        restored = run_playbook(ansible_inventory, GATEWAY_PLAY)

    assert restored.returncode == 0, (restored.stdout + restored.stderr)[-3000:]
    assert listed(server_lines(gateway, include), upstream), f"{name} did not come back"
