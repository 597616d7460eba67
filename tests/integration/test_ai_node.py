"""The AI node stack on every GPU node: containers, ports, mounts, API bodies."""

from __future__ import annotations

import re

import pytest
import yaml
from conftest import http_get, inspect, run_ok, wait_for

testinfra_hosts = ["ansible://gpu_nodes"]

RFC3339 = re.compile(r"^\d{4}-\d{2}-\d{2}T\d{2}:\d{2}:\d{2}(\.\d+)?(Z|[+-]\d{2}:\d{2})$")
CAPABILITIES = {"speech_recognition", "emotion_detection", "synthesis_detection"}


def base_url(node_vars: dict) -> str:
    """The node's HTTP API as seen from the node itself."""
    return f"http://127.0.0.1:{node_vars['ai_node_http_port']}"


@pytest.mark.parametrize(
    "container",
    ["ai_node_inference_container", "ai_node_unit_manager_container", "ai_node_llm_container"],
)
def test_container_runs_and_is_healthy(host, node_vars, container):
    name = node_vars[container]

    def health():
        state = inspect(host, name)["State"]
        assert state["Running"], f"{name} is not running: {state}"
        return state.get("Health", {}).get("Status") == "healthy" and state

    state = wait_for(health, timeout=120)
    assert state, f"{name} did not become healthy: {inspect(host, name)['State'].get('Health')}"
    assert inspect(host, name)["HostConfig"]["RestartPolicy"]["Name"] == "unless-stopped"


def test_llm_node_carries_the_gpu_request(host, node_vars):
    requests = inspect(host, node_vars["ai_node_llm_container"])["HostConfig"]["DeviceRequests"]
    if not node_vars["ai_node_gpu_enabled"]:
        assert not requests
        return
    assert len(requests) == 1
    assert requests[0]["Driver"] == "nvidia"
    assert requests[0]["Count"] == int(node_vars["ai_node_gpu_count"])
    assert requests[0]["Capabilities"] == [["gpu"]]


def test_health_answers_with_the_contract_body(host, node_vars):
    status, body = http_get(host, base_url(node_vars) + "/health")
    assert status == 200
    assert body["status"] == "ok"
    assert body["service"] == "ai-inference-service"
    assert RFC3339.match(body["time"]), body


def test_info_answers_with_the_contract_body(host, node_vars):
    status, body = http_get(
        host, base_url(node_vars) + "/api/v1/ai/info", {"X-Request-ID": "node-suite-info"}
    )
    assert status == 200
    assert body["code"] == 200
    assert body["message"] == "success"
    assert body["request_id"] == "node-suite-info"
    data = body["data"]
    assert data["service"] == "ai-inference-service"
    assert set(data["capabilities"]) == CAPABILITIES
    assert set(data["models"]) == {"asr", "emotion", "synthesis"}


def test_deep_health_is_healthy(host, node_vars):
    status, body = http_get(host, base_url(node_vars) + "/api/v1/ai/health")
    assert status == 200, body
    assert body["data"]["status"] == "healthy"


def test_unit_manager_is_not_published_unless_asked(host, node_vars):
    """The unit-manager has no authentication: by default no host port reaches it."""
    if node_vars["ai_node_unit_manager_publish"]:
        pytest.skip("ai_node_unit_manager_publish is true on this host")
    port = node_vars["ai_node_unit_manager_port"]
    container = inspect(host, node_vars["ai_node_unit_manager_container"])
    assert not container["HostConfig"]["PortBindings"]
    assert not host.socket(f"tcp://0.0.0.0:{port}").is_listening
    assert not host.socket(f"tcp://127.0.0.1:{port}").is_listening


def test_containers_are_hardened(host, node_vars):
    """No privilege gain, every capability dropped, a process limit: the role's defaults."""
    for key in (
        "ai_node_inference_container",
        "ai_node_unit_manager_container",
        "ai_node_llm_container",
    ):
        config = inspect(host, node_vars[key])["HostConfig"]
        assert "no-new-privileges:true" in (config["SecurityOpt"] or []), key
        assert config["CapDrop"] == ["ALL"], key
        assert config["PidsLimit"] == 4096, key


def test_inference_container_carries_its_configuration_checksum(host, node_vars):
    """A changed configuration recreates the container, even when a run stopped in between."""
    labels = inspect(host, node_vars["ai_node_inference_container"])["Config"]["Labels"]
    assert len(labels.get("ai-node.configuration", "")) == 64


def test_unit_manager_listens_on_loopback_only(host, node_vars):
    if not node_vars["ai_node_unit_manager_publish"]:
        pytest.skip("ai_node_unit_manager_publish is false on this host")
    port = node_vars["ai_node_unit_manager_port"]
    bind = node_vars["ai_node_unit_manager_bind_address"]
    assert host.socket(f"tcp://{bind}:{port}").is_listening
    assert not host.socket(f"tcp://0.0.0.0:{port}").is_listening
    bindings = inspect(host, node_vars["ai_node_unit_manager_container"])["HostConfig"][
        "PortBindings"
    ]
    assert [b["HostIp"] for b in bindings["19001/tcp"]] == [bind]


def test_http_api_is_published(host, node_vars):
    assert host.socket(f"tcp://0.0.0.0:{node_vars['ai_node_http_port']}").is_listening


def test_ipc_volume_is_shared_at_tmp(host, node_vars):
    def tmp_mount(container):
        mounts = inspect(host, node_vars[container])["Mounts"]
        return [(m["Type"], m.get("Name")) for m in mounts if m["Destination"] == "/tmp"]

    expected = [("volume", node_vars["ai_node_ipc_volume"])]
    assert tmp_mount("ai_node_unit_manager_container") == expected
    assert tmp_mount("ai_node_llm_container") == expected
    # The llm node's sockets are visible from the unit-manager's side.
    listing = run_ok(
        host, "docker", "exec", node_vars["ai_node_unit_manager_container"], "ls", "-A", "/tmp/llm"
    )
    assert listing.strip(), "no IPC socket of the llm node in the shared /tmp"


def test_models_are_mounted_read_only(host, node_vars):
    mounts = inspect(host, node_vars["ai_node_llm_container"])["Mounts"]
    models = [m for m in mounts if m["Destination"] == "/work/models"]
    assert len(models) == 1
    assert models[0]["Source"] == node_vars["ai_node_model_dir"]
    assert models[0]["RW"] is False


def test_secret_stays_out_of_the_config_file(host, node_vars):
    config_dir = node_vars["ai_node_config_dir"]
    env_file = host.file(f"{config_dir}/ai-inference-service.env")
    assert env_file.mode == 0o600
    assert env_file.user == "root"
    secrets = [
        line.split("=", 1)[1]
        for line in env_file.content_string.splitlines()
        if line.startswith("JWT_SECRET=")
    ]
    assert len(secrets) == 1 and len(secrets[0]) >= 32
    config = host.file(f"{config_dir}/ai-inference-service.yaml").content_string
    assert secrets[0] not in config
    assert "max_single_delta_len" in config


def leaf_paths(tree: dict, prefix: tuple = ()) -> dict:
    """`{(key, ...): value}` of every value of nested mappings that is not a mapping."""
    found = {}
    for key, value in tree.items():
        if isinstance(value, dict) and value:
            found.update(leaf_paths(value, (*prefix, key)))
        else:
            found[(*prefix, key)] = value
    return found


def test_the_config_file_keeps_every_key_the_image_ships(host, node_vars):
    """The rendered file starts from the service's own file: no upstream setting is dropped."""
    shipped_text = run_ok(
        host,
        *("docker", "run", "--rm", "--network=none", "--entrypoint=cat"),
        node_vars["ai_node_inference_image"],
        node_vars["ai_node_config_image_file"],
    )
    shipped = leaf_paths(yaml.safe_load(shipped_text))
    config_dir = node_vars["ai_node_config_dir"]
    rendered = leaf_paths(
        yaml.safe_load(host.file(f"{config_dir}/ai-inference-service.yaml").content_string)
    )
    missing = [
        ".".join(path) for path in shipped if path not in rendered and path != ("jwt", "secret")
    ]
    assert missing == [], f"settings of the image's file dropped: {missing}"
    assert ("jwt", "secret") not in rendered
    # The sections the role does not manage keep the image's values.
    for path, value in shipped.items():
        if path[0] in {"log", "redis", "etcd", "monitoring"}:
            assert rendered[path] == value, path
