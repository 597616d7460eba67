"""Every plugin of the project documents itself: `ansible-doc` renders each one."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest
from plugin_loader import ansible_env

# Runs ansible, ansible-playbook or nginx: left out of `make check`.
pytestmark = pytest.mark.playbook


# (plugin type, name, an option its documentation must describe)
DOCUMENTED = [
    ("filter", "ai_upstream_servers", "defaults"),
    ("filter", "ai_upstream_conf", "header"),
    ("filter", "ai_gateway_probe_targets", "path"),
    ("filter", "ai_gateway_verdicts", "probes"),
    ("filter", "ai_fleet_batches", "size"),
    ("filter", "ai_fleet_roll_plan", "drain"),
    ("filter", "ai_fleet_fingerprint", "paths"),
    ("filter", "ai_fleet_report", "gateways"),
    ("filter", "docker_engine_daemon_errors", "_input"),
    ("filter", "docker_engine_daemon_foreign", "managed"),
    ("filter", "ai_node_archive_marker", "key"),
    ("filter", "ai_node_test_audio", "_input"),
    ("module", "nvidia_gpu_facts", None),
    ("module", "nginx_reload", "drain_timeout"),
    ("module", "ai_settings_check", "secrets"),
    ("inventory", "ai_guide_nodes", "gpu_ai_nodes"),
]

#: Plugin types without a RETURN section (an inventory plugin returns nothing).
NO_RETURN = {"inventory"}


@pytest.mark.parametrize(("kind", "name", "option"), DOCUMENTED)
def test_ansible_doc_renders(kind, name, option):
    env = {
        **os.environ,
        **ansible_env(),
    }
    command = [sys.executable, "-m", "ansible.cli.doc", "-t", kind, "--json", name]
    result = subprocess.run(command, capture_output=True, text=True, env=env, check=False)
    assert result.returncode == 0, result.stderr
    doc = json.loads(result.stdout)[name]
    assert doc["doc"].get("name", doc["doc"].get("module")) == name
    assert doc["doc"]["short_description"]
    if option:
        assert option in doc["doc"]["options"]
    assert name in doc["examples"]
    if kind in NO_RETURN:
        assert not doc["return"]
    else:
        assert doc["return"]
