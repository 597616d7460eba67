"""Docker Engine on the GPU nodes: running, configured, able to run a container."""

from __future__ import annotations

import json
import os

from conftest import run_ok

testinfra_hosts = ["ansible://gpu_nodes"]

# An image present on every node and a command in it that prints "probe-ok".
# The lab loads a tiny busybox probe image; against a real fleet, name an image
# the nodes have, e.g. AI_FLEET_PROBE_IMAGE=<inference image>
# AI_FLEET_PROBE_COMMAND="sh -c 'echo probe-ok'".
PROBE_IMAGE = os.environ.get("AI_FLEET_PROBE_IMAGE", "ai-fleet-lab/probe:latest")
PROBE_COMMAND = os.environ.get("AI_FLEET_PROBE_COMMAND", "/bin/busybox echo probe-ok")


def test_docker_service_is_running_and_enabled(host):
    service = host.service("docker")
    assert service.is_running
    assert service.is_enabled


def test_engine_answers_on_its_socket(host, docker_info):
    assert host.socket("unix:///run/docker.sock").is_listening
    assert docker_info["ServerVersion"], docker_info
    assert docker_info["LoggingDriver"] == "json-file"
    assert docker_info["LiveRestoreEnabled"] is True


def test_daemon_json_is_valid_and_rotates_logs(host):
    daemon_json = host.file("/etc/docker/daemon.json")
    assert daemon_json.user == "root"
    assert daemon_json.mode == 0o644
    options = json.loads(daemon_json.content_string)
    assert options["log-driver"] == "json-file"
    assert options["log-opts"]["max-size"]
    assert int(options["log-opts"]["max-file"]) >= 1


def test_community_docker_needs_are_installed(host):
    assert host.run("python3 -c 'import requests'").rc == 0


def test_engine_starts_a_container_from_a_local_image(host):
    run_ok(host, "docker", "image", "inspect", PROBE_IMAGE)
    name = "ai-fleet-engine-probe"
    host.run(f"docker rm -f {name}")
    result = host.run(
        f"docker run --rm --name {name} --network none --pull never {PROBE_IMAGE} {PROBE_COMMAND}"
    )
    assert result.rc == 0, f"the probe container failed: {result.stderr}"
    assert result.stdout.strip() == "probe-ok"
