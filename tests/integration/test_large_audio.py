"""The original guide's large-audio fault, caught by the node's health gate.

The fault and its workaround: docs/original-guide.md (troubleshooting) and
docs/services.md (unit-manager protocol).

On one GPU node, with the role's large-audio check on (ai_node_large_audio_check):
an old unit-manager (the stand-in's STANDIN_UNIT_MANAGER_INPUT=recv, which parses
each recv() as one request) with fast chunk settings fails the node, and the failure
names the fault, the workaround settings and the upgrade; the same unit-manager with
the guide's workaround settings passes; the fixed unit-manager passes with fast
settings. The node is put back with its inventory settings at the end.

These tests run ansible-playbook against the suite's inventory. They run under
molecule; against another fleet only with AI_FLEET_PLAY_TESTS=1.
"""

from __future__ import annotations

import pytest
import testinfra
from conftest import AI_NODE_DEFAULTS, inventory_groups, needs_plays, run_ok, run_role

pytestmark = needs_plays

OLD_UNIT_MANAGER = {"ai_node_unit_manager_env": {"STANDIN_UNIT_MANAGER_INPUT": "recv"}}
FAST = {"ai_node_audio_stream_chunk_size": 65536, "ai_node_audio_stream_chunk_delay_ms": 0}
WORKAROUND = {
    "ai_node_max_single_delta_len": 2048,
    "ai_node_audio_stream_chunk_size": 512,
    "ai_node_audio_stream_chunk_delay_ms": 10,
}
CHECK = {"ai_node_large_audio_check": True, "ai_node_large_audio_check_bytes": 300000}
REQUEST_ID = "ai-node-large-audio-check"


@pytest.fixture(scope="module")
def node(ansible_inventory, tmp_path_factory):
    """The first GPU node: (name, testinfra host, settings); put back as the inventory says."""
    name = sorted(inventory_groups(ansible_inventory)["gpu_nodes"]["hosts"])[0]
    host = testinfra.get_host(f"ansible://{name}?ansible_inventory={ansible_inventory}")
    yield name, host, {**AI_NODE_DEFAULTS, **host.ansible.get_variables()}
    restored = run_role(ansible_inventory, name, {}, tmp_path_factory.mktemp("restore"))
    assert restored.returncode == 0, restored.stdout[-3000:]


def served_checks(host, settings: dict) -> list[str]:
    """The access-log lines of the large-audio check, each after the service's container id."""
    container = settings["ai_node_inference_container"]
    started = run_ok(host, "docker", "inspect", "-f", "{{.Id}}", container).strip()
    logs = run_ok(host, "docker", "logs", container)
    return [f"{started} {line}" for line in logs.splitlines() if f"request_id={REQUEST_ID}" in line]


def checked_since(before: list[str], after: list[str]) -> list[str]:
    """The check's log lines that were not there before (a recreated service has new ones)."""
    return [line for line in after if line not in before]


def test_old_unit_manager_with_fast_settings_fails_the_node_with_the_fix(
    node, ansible_inventory, tmp_path
):
    name, host, settings = node
    result = run_role(ansible_inventory, name, {**OLD_UNIT_MANAGER, **FAST, **CHECK}, tmp_path)
    output = result.stdout + result.stderr
    assert result.returncode != 0, f"the play did not fail:\n{output[-3000:]}"
    for text in (
        f"{name}: the node stack is not healthy",
        "POST /api/v1/ai/asr with 300000 bytes of WAV audio answered 500",
        "edge-llm error (code -2): json format error",
        "does not split its TCP input on newlines",
        "audio_stream_chunk_size 65536",
        "upgrade the unit-manager",
        "ai_node_audio_stream_chunk_size: 512",
        "ai_node_audio_stream_chunk_delay_ms: 10",
    ):
        assert text in output, f"{text!r} is not in the failure:\n{output[-3000:]}"
    served = served_checks(host, settings)
    assert served and "status=500" in served[-1], served


def test_old_unit_manager_with_the_workaround_passes(node, ansible_inventory, tmp_path):
    name, host, settings = node
    before = served_checks(host, settings)
    result = run_role(
        ansible_inventory, name, {**OLD_UNIT_MANAGER, **WORKAROUND, **CHECK}, tmp_path
    )
    assert result.returncode == 0, result.stdout[-3000:]
    served = checked_since(before, served_checks(host, settings))
    assert len(served) == 1 and "path=/api/v1/ai/asr status=200" in served[0], served


def test_fixed_unit_manager_with_fast_settings_passes(node, ansible_inventory, tmp_path):
    name, host, settings = node
    before = served_checks(host, settings)
    result = run_role(ansible_inventory, name, {**FAST, **CHECK}, tmp_path)
    assert result.returncode == 0, result.stdout[-3000:]
    served = checked_since(before, served_checks(host, settings))
    assert len(served) == 1 and "path=/api/v1/ai/asr status=200" in served[0], served
    container = settings["ai_node_unit_manager_container"]
    env = run_ok(host, "docker", "inspect", "-f", "{{json .Config.Env}}", container)
    assert "STANDIN_UNIT_MANAGER_INPUT" not in env
