"""Preflight refusals of the ai_node role, run for real against one GPU node.

Each case runs the role with one bad setting and checks that the play fails
with a message naming the host and what to fix, and that the running stack is
left exactly as it was (same containers, same start times, same files).

These tests run ansible-playbook against the suite's inventory. They run under
molecule; against another fleet only with AI_FLEET_PLAY_TESTS=1.
"""

from __future__ import annotations

import pytest
import testinfra
from conftest import AI_NODE_DEFAULTS, inspect, inventory_groups, needs_plays, run_role

pytestmark = needs_plays


@pytest.fixture(scope="module")
def node(ansible_inventory):
    """The first GPU node of the inventory: (name, testinfra host, its settings)."""
    name = sorted(inventory_groups(ansible_inventory)["gpu_nodes"]["hosts"])[0]
    host = testinfra.get_host(f"ansible://{name}?ansible_inventory={ansible_inventory}")
    settings = {**AI_NODE_DEFAULTS, **host.ansible.get_variables()}
    return name, host, settings


def snapshot(host, settings: dict) -> dict:
    """What must not change: each container's id and start time, the rendered files."""
    state = {}
    for key in (
        "ai_node_inference_container",
        "ai_node_unit_manager_container",
        "ai_node_llm_container",
    ):
        info = inspect(host, settings[key])
        state[settings[key]] = (info["Id"], info["State"]["StartedAt"], info["State"]["Running"])
    config_dir = settings["ai_node_config_dir"]
    for name in ("ai-inference-service.yaml", "ai-inference-service.env"):
        state[name] = host.file(f"{config_dir}/{name}").md5sum
    return state


def refuse(
    node, ansible_inventory, tmp_path, extra_vars: dict, *expected: str, hidden: str = ""
) -> None:
    """Assert the role refuses extra_vars with every expected text, the stack untouched.

    `hidden` is a value (a secret) that must not appear anywhere in the output.
    """
    name, host, settings = node
    before = snapshot(host, settings)
    result = run_role(ansible_inventory, name, extra_vars, tmp_path)
    output = result.stdout + result.stderr
    assert result.returncode != 0, f"the play did not fail:\n{output[-3000:]}"
    for text in (name, *expected):
        assert text in output, f"{text!r} is not in the failure:\n{output[-3000:]}"
    if hidden:
        assert hidden not in output, "the refused secret appears in the output"
    assert snapshot(host, settings) == before, "the running stack was touched"


def test_weak_jwt_secret_is_refused(node, ansible_inventory, tmp_path):
    refuse(
        node,
        ansible_inventory,
        tmp_path,
        {"ai_node_jwt_secret": "too-short"},
        "ai_node_jwt_secret: given a value that is hidden (secret)",
        "fewer than 32",
        hidden="too-short",
    )


def test_published_example_jwt_secret_is_refused(node, ansible_inventory, tmp_path):
    example = "your-secret-key-change-in-production-min-32-chars"
    refuse(
        node,
        ansible_inventory,
        tmp_path,
        {"ai_node_jwt_secret": example},
        "ai_node_jwt_secret: given a value that is hidden (secret)",
        "it is a published value",
        hidden=example,
    )


def test_missing_model_file_is_refused(node, ansible_inventory, tmp_path):
    model_dir = node[2]["ai_node_model_dir"]
    refuse(
        node,
        ansible_inventory,
        tmp_path,
        {"ai_node_extra_model_files": ["whisper-encoder.onnx"]},
        f"{model_dir}/whisper-encoder.onnx",
        "missing in",
        "code -5",
    )


def test_taken_port_is_refused(node, ansible_inventory, tmp_path):
    _, host, _ = node
    port = 18899
    unit = "ai-fleet-test-port-holder"
    host.run(f"systemctl stop {unit}")
    holder = host.run(f"systemd-run --unit={unit} python3 -m http.server {port} --bind 0.0.0.0")
    assert holder.rc == 0, holder.stderr
    try:
        assert host.socket(f"tcp://0.0.0.0:{port}").is_listening or _wait_listening(host, port)
        refuse(
            node,
            ansible_inventory,
            tmp_path,
            {"ai_node_http_port": port},
            f"port {port} is in use by python3",
            "ai_node_http_port",
        )
    finally:
        host.run(f"systemctl stop {unit}")


def _wait_listening(host, port: int) -> bool:
    """Wait a few seconds for a listener on the port."""
    result = host.run(
        f"for i in $(seq 1 20); do ss -ltn | grep -q ':{port} ' && exit 0; sleep 0.25; done; exit 1"
    )
    return result.rc == 0
