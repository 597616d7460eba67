"""Bad input is refused before any host changes: the matrix.

Each case runs `site.yml` against the fleet with one wrong variable, inventory
entry or file, and checks that the run stops in its first play
(playbooks/validate.yml) with a short message naming the host and the variable,
and that no host changed: the containers of every node (ids, start times), the
rendered files, and every gateway's configuration are the same before and after
the whole matrix. The count and the run time are written to
.cache/test-results/bad-input.json for the README.

These tests run ansible-playbook against the suite's inventory. They run under
molecule; against another fleet only with AI_FLEET_PLAY_TESTS=1.
"""

from __future__ import annotations

import json
import re
import secrets
import time
from pathlib import Path

import pytest
import testinfra
import yaml
from conftest import ROOT, inventory_groups, needs_plays, run_playbook

pytestmark = needs_plays

SITE = ROOT / "site.yml"
RESULTS = ROOT / ".cache" / "test-results" / "bad-input.json"
NODE_FILES = (
    "/etc/ai-node/ai-inference-service.yaml",
    "/etc/ai-node/ai-inference-service.env",
    "/etc/docker/daemon.json",
    "/var/lib/ai-fleet/node.fingerprint",
)
GATEWAY_FILES = (
    "/etc/nginx/ai-gateway.d/ai_inference_service.servers.local.conf",
    "/etc/nginx/conf.d/ai_gateway.conf",
    "/var/lib/ai-gateway/drained.json",
)
CONTAINERS = ("ai-inference-service", "edge-unit-manager", "edge-llm-node")
PLACEHOLDER = yaml.safe_load(
    (ROOT / "inventory.example/group_vars/all/vault.yml.example").read_text()
)["vault_ai_node_jwt_secret"]
UPSTREAM_EXAMPLE = "your-secret-key-change-in-production-min-32-chars"
LEAKY = "leak-" + secrets.token_hex(16)

# (case id, extra vars for every host, expected texts). The variable's name is
# always the first expected text; it must appear on a line that names a host.
VARIABLE_CASES = [
    ("port-not-a-number", {"ai_node_http_port": "88oo"}, ["ai_node_http_port", "given '88oo'"]),
    ("port-too-high", {"ai_node_http_port": 70000}, ["ai_node_http_port", "1 to 65535"]),
    (
        "unit-manager-port-zero",
        {"ai_node_unit_manager_publish": True, "ai_node_unit_manager_port": 0},
        ["ai_node_unit_manager_port", "1 to 65535"],
    ),
    (
        "bind-address-not-owned",
        {"ai_node_http_bind_address": "203.0.113.7"},
        ["ai_node_http_bind_address", "this host owns"],
    ),
    (
        "bind-address-interface-name",
        {"ai_node_http_bind_address": "eth0"},
        ["ai_node_http_bind_address", "an IP literal"],
    ),
    (
        "unit-manager-public-without-opt-in",
        {"ai_node_unit_manager_publish": True, "ai_node_unit_manager_bind_address": "0.0.0.0"},
        ["ai_node_unit_manager_bind_address", "ai_node_unit_manager_expose"],
    ),
    (
        "chunk-size-zero",
        {"ai_node_audio_stream_chunk_size": 0},
        ["ai_node_audio_stream_chunk_size", "from 64 to"],
    ),
    (
        "chunk-delay-negative",
        {"ai_node_audio_stream_chunk_delay_ms": -5},
        ["ai_node_audio_stream_chunk_delay_ms", "from 0 to 10000"],
    ),
    (
        "delta-len-not-a-number",
        {"ai_node_max_single_delta_len": "2k"},
        ["ai_node_max_single_delta_len", "given '2k'"],
    ),
    ("secret-spaces", {"ai_node_jwt_secret": " " * 40}, ["ai_node_jwt_secret", "whitespace"]),
    ("secret-one-letter", {"ai_node_jwt_secret": "a" * 40}, ["ai_node_jwt_secret", "guessable"]),
    (
        "secret-placeholder",
        {"ai_node_jwt_secret": PLACEHOLDER},
        ["ai_node_jwt_secret", "published"],
    ),
    (
        "secret-upstream-example",
        {"ai_node_jwt_secret": UPSTREAM_EXAMPLE},
        ["ai_node_jwt_secret", "published"],
    ),
    (
        "secret-with-line-break",
        {"ai_node_jwt_secret": secrets.token_hex(20) + "\nEXTRA=1"},
        ["ai_node_jwt_secret", "line break"],
    ),
    (
        "secret-in-config-overrides",
        {"ai_node_config_overrides": {"jwt": {"secret": LEAKY}}},
        ["ai_node_config_overrides", "jwt.secret"],
    ),
    (
        "secret-in-container-env",
        {"ai_node_inference_env": {"JWT_SECRET": LEAKY}},
        ["ai_node_inference_env", "JWT_SECRET"],
    ),
    ("image-source-unknown", {"ai_node_image_source": "ftp"}, ["ai_node_image_source", "one of"]),
    (
        "flag-not-boolean",
        {"ai_node_gpu_enabled": "maybe"},
        ["ai_node_gpu_enabled", "true or false"],
    ),
    ("gpu-count-zero", {"ai_node_gpu_count": 0}, ["ai_node_gpu_count", "ai_node_gpu_enabled"]),
    (
        "image-archive-missing",
        {
            "ai_node_image_archives": {
                "inference": "/nonexistent/ai.tar",
                "edge_llm": "/nonexistent/e.tar",
            }
        },
        ["ai_node_image_archives", "/nonexistent/ai.tar"],
    ),
    ("docker-source-unknown", {"docker_engine_source": "snap"}, ["docker_engine_source", "one of"]),
    (
        "driver-branch-not-a-branch",
        {"nvidia_driver_branch": "latest"},
        ["nvidia_driver_branch", "given latest"],
    ),
    (
        "driver-modules-unknown",
        {"nvidia_driver_kernel_modules": "closed-source"},
        ["nvidia_driver_kernel_modules", "one of"],
    ),
    (
        "reboot-timeout-too-short",
        {"nvidia_driver_reboot_timeout": 5},
        ["nvidia_driver_reboot_timeout", "from 60 to"],
    ),
    (
        "gateway-port-too-high",
        {"ai_gateway_http_port": 99999},
        ["ai_gateway_http_port", "1 to 65535"],
    ),
    (
        "gateway-rate-zero",
        {"ai_gateway_limit_req_rate": 0},
        ["ai_gateway_limit_req_rate", "at least 1"],
    ),
    (
        "gateway-mode-unknown",
        {"ai_gateway_mode": "apache"},
        ["ai_gateway_mode", "one of"],
    ),
    (
        "gateway-container-in-managed-mode",
        {"ai_gateway_container": "meeting-nginx-gateway"},
        ["ai_gateway_container", "is for existing mode"],
    ),
    (
        "gateway-sibling-includes-unknown",
        {"ai_gateway_sibling_includes": "delete"},
        ["ai_gateway_sibling_includes", "one of"],
    ),
    (
        "build-source-not-on-the-controller",
        {
            "ai_node_image_source": "build",
            "ai_node_build_source_src": "/nonexistent/meeting-system",
        },
        ["ai_node_build_source_src", "expected a folder on the controller"],
    ),
]

# (case id, variables of the second GPU node only, expected texts): wrong
# inventory entries, refused by the gateways' upstream check.
HOST_CASES = [
    # The address the gateways use for the first GPU node (filled in below).
    ("two-nodes-one-address", {"ai_node_public_host": None}, ["ai_node_public_host"]),
    ("public-port-zero", {"ai_node_public_port": 0}, ["ai_node_public_port"]),
    ("public-host-unspecified", {"ai_node_public_host": "0.0.0.0"}, ["ai_node_public_host"]),
    ("weight-huge", {"ai_gateway_weight": 100000}, ["ai_gateway_weight"]),
]


@pytest.fixture(scope="module")
def fleet(ansible_inventory, tmp_path_factory):
    """The inventory, the GPU nodes and gateways, and their state before the matrix."""
    groups = inventory_groups(ansible_inventory)
    nodes = sorted(groups["gpu_nodes"]["hosts"])
    gateways = sorted(groups["gateways"]["hosts"])
    hosts = {
        name: testinfra.get_host(f"ansible://{name}?ansible_inventory={ansible_inventory}")
        for name in nodes + gateways
    }
    state = {"inventory": ansible_inventory, "nodes": nodes, "gateways": gateways, "hosts": hosts}
    state["before"] = snapshot(state)
    state["cases"] = []
    state["tmp"] = tmp_path_factory.mktemp("bad-input")
    state["started"] = time.monotonic()
    yield state
    after = snapshot(state)
    RESULTS.parent.mkdir(parents=True, exist_ok=True)
    RESULTS.write_text(
        json.dumps(
            {
                "cases": len(state["cases"]),
                "refused": sum(1 for c in state["cases"] if c["refused"]),
                "seconds": round(time.monotonic() - state["started"]),
                "unchanged": after == state["before"],
                "ids": [c["id"] for c in state["cases"]],
            },
            indent=2,
        )
    )


def snapshot(state: dict) -> dict:
    """What no refused run may change: containers (id, start time) and files (md5)."""
    found = {}
    for name in state["nodes"]:
        host = state["hosts"][name]
        for container in CONTAINERS:
            result = host.run(
                f"docker inspect -f '{{{{.Id}}}} {{{{.State.StartedAt}}}}' {container}"
            )
            found[f"{name}:{container}"] = result.stdout.strip() if result.rc == 0 else None
        for path in NODE_FILES:
            found[f"{name}:{path}"] = _md5(host, path)
    for name in state["gateways"]:
        host = state["hosts"][name]
        for path in GATEWAY_FILES:
            found[f"{name}:{path}"] = _md5(host, path)
    return found


def _md5(host, path: str) -> str | None:
    result = host.run(f"md5sum {path}")
    return result.stdout.split()[0] if result.rc == 0 else None


def refused(fleet, case_id: str, expected: list[str], *, inventory: str | None = None, extra=None):
    """Run site.yml; assert it stops in the validation play naming the host and the variable."""
    extra_file = fleet["tmp"] / f"{case_id}.json"
    extra_file.write_text(json.dumps(extra or {}))
    result = run_playbook(inventory or fleet["inventory"], SITE, extra_vars=extra_file)
    output = result.stdout + result.stderr
    fleet["cases"].append({"id": case_id, "refused": result.returncode != 0})
    assert result.returncode != 0, f"{case_id}: site.yml did not stop:\n{output[-3000:]}"
    # Stopped in the first play: no later play started, nothing changed.
    assert "PLAY [Prepare the GPU nodes" not in output, f"{case_id}: went past validation"
    assert "PLAY [Configure the nginx gateways]" not in output, f"{case_id}: went past validation"
    assert "Nothing was changed on any host" in output, output[-3000:]
    for recap in re.findall(r"^\S+\s+: ok=\d+\s+changed=(\d+)", output, re.M):
        assert recap == "0", f"{case_id}: a host reported changes:\n{output[-3000:]}"
    variable = expected[0]
    hosts = fleet["nodes"] + fleet["gateways"]
    named = [
        line
        for line in output.splitlines()
        if (variable in line and any(h in line for h in hosts))
        or line.strip().startswith(f"- {variable}:")
    ]
    assert named, f"{case_id}: no line names a host and {variable}:\n{output[-3000:]}"
    for text in expected:
        assert text in output, f"{case_id}: {text!r} is not in the output:\n{output[-3000:]}"
    assert LEAKY not in output, f"{case_id}: a refused secret appears in the output"
    return output


@pytest.mark.parametrize(
    ("case_id", "extra", "expected"), VARIABLE_CASES, ids=[c[0] for c in VARIABLE_CASES]
)
def test_a_bad_variable_is_refused_before_anything_changes(fleet, case_id, extra, expected):
    output = refused(fleet, case_id, expected, extra=extra)
    for value in extra.values():
        if isinstance(value, str) and "jwt_secret" in json.dumps(extra) and value.strip():
            assert value not in output, f"{case_id}: the refused secret appears in the output"


def _inventory_with(fleet, case_id: str, host_vars: dict) -> str:
    """A copy of the inventory whose second GPU node has ``host_vars`` as well."""
    source = Path(fleet["inventory"])
    if source.is_dir():
        source = next(p for p in sorted(source.iterdir()) if p.suffix in (".yml", ".yaml"))
    folder = fleet["tmp"] / case_id
    folder.mkdir()
    for entry in source.parent.iterdir():
        if entry.name == "group_vars":
            (folder / entry.name).symlink_to(entry.resolve())
    (folder / "hosts.yml").write_text(source.read_text())
    (folder / "host_vars").mkdir()
    node = fleet["nodes"][1] if len(fleet["nodes"]) > 1 else fleet["nodes"][0]
    existing = source.parent / "host_vars" / f"{node}.yml"
    merged = {**(yaml.safe_load(existing.read_text()) if existing.is_file() else {}), **host_vars}
    (folder / "host_vars" / f"{node}.yml").write_text(yaml.safe_dump(merged))
    return str(folder / "hosts.yml")


@pytest.mark.parametrize(
    ("case_id", "host_vars", "expected"), HOST_CASES, ids=[c[0] for c in HOST_CASES]
)
def test_a_bad_inventory_entry_is_refused_before_anything_changes(
    fleet, case_id, host_vars, expected
):
    if case_id == "two-nodes-one-address":
        if len(fleet["nodes"]) < 2:
            pytest.skip("needs two GPU nodes")
        first = fleet["nodes"][0]
        found = inventory_groups(fleet["inventory"])["_meta"]["hostvars"].get(first, {})
        address = found.get("ai_node_public_host") or found.get("ansible_host") or first
        host_vars = {"ai_node_public_host": address}
    refused(fleet, case_id, expected, inventory=_inventory_with(fleet, case_id, host_vars))


def test_no_host_changed_during_the_matrix(fleet):
    """Runs last in this module: every refused run left every host as it was."""
    assert len(fleet["cases"]) >= 25, f"only {len(fleet['cases'])} cases ran"
    after = snapshot(fleet)
    changed = {
        key: (fleet["before"][key], after[key])
        for key in after
        if after[key] != fleet["before"].get(key)
    }
    assert not changed, f"hosts changed during the refused runs: {changed}"
