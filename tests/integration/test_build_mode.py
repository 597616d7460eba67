"""Build mode: the node's images built from the original guide's source tree.

A source tree laid out as the guide's repository (docs/original-guide.md) is made on
the controller (meeting-system: backend/ai-inference-service/Dockerfile,
deployment/gpu-ai/Dockerfile.edge-llm, Edge-LLM-Infra-master/...). Each
Dockerfile starts from the lab's stand-in image the node already has and adds a
VERSION file, so nothing is fetched. On one GPU node, with
ai_node_image_source: build and ai_node_build_source_src pointing at that tree:

- the build contexts reach the node, both images are built under the guide's
  names, and the stack runs them and passes its health gate;
- a second run changes nothing;
- a changed file of the unit-manager's source (the guide's fix: "upgrade the
  unit-manager, then rebuild") rebuilds the edge-llm image, not the other, and
  the unit-manager and llm node run the new image;
- a missing Dockerfile is named before anything is built.

The node is put back with its inventory settings at the end. Runs plays: under
molecule, or with AI_FLEET_PLAY_TESTS=1.
"""

from __future__ import annotations

import re

import pytest
import testinfra
from conftest import AI_NODE_DEFAULTS, inventory_groups, needs_plays, run_ok, run_role

pytestmark = needs_plays

SOURCE_DIR = "/opt/guide-build/meeting-system"
INFERENCE_IMAGE = "meeting-ai-inference-service:local"
EDGE_IMAGE = "meeting-edge-llm:local"
UNIT_MANAGER_SOURCE = "Edge-LLM-Infra-master/unit-manager/src/zmq_bus.cpp"


def write_source_tree(root, settings: dict) -> None:
    """The guide's meeting-system tree, each image one layer over the lab's stand-in."""
    files = {
        "backend/ai-inference-service/Dockerfile": (
            f"FROM {settings['ai_node_inference_image']}\n"
            "COPY ai-inference-service/VERSION /app/VERSION\n"
        ),
        "backend/ai-inference-service/VERSION": "1\n",
        "deployment/gpu-ai/Dockerfile.edge-llm": (
            f"FROM {settings['ai_node_edge_llm_image']}\n"
            f"COPY {UNIT_MANAGER_SOURCE} /work/zmq_bus.cpp\n"
        ),
        UNIT_MANAGER_SOURCE: "// recv() parsed as one request\n",
        "nginx/conf.d/ai_inference_service.servers.conf": "server 127.0.0.1:65535 down;\n",
    }
    for path, text in files.items():
        target = root / path
        target.parent.mkdir(parents=True, exist_ok=True)
        target.write_text(text)


@pytest.fixture(scope="module")
def build(ansible_inventory, tmp_path_factory):
    """(name, host, settings for build mode, source tree); the node put back at the end."""
    name = sorted(inventory_groups(ansible_inventory)["gpu_nodes"]["hosts"])[0]
    host = testinfra.get_host(f"ansible://{name}?ansible_inventory={ansible_inventory}")
    settings = {**AI_NODE_DEFAULTS, **host.ansible.get_variables()}
    tree = tmp_path_factory.mktemp("guide-source") / "meeting-system"
    write_source_tree(tree, settings)
    extra = {
        "ai_node_image_source": "build",
        "ai_node_inference_image": INFERENCE_IMAGE,
        "ai_node_edge_llm_image": EDGE_IMAGE,
        "ai_node_build_source_src": str(tree),
        "ai_node_build_source_dir": SOURCE_DIR,
    }
    yield name, host, extra, tree
    restored = run_role(ansible_inventory, name, {}, tmp_path_factory.mktemp("restore"))
    assert restored.returncode == 0, restored.stdout[-3000:]
    host.run(f"rm -rf {SOURCE_DIR}")


def image_id(host, image: str) -> str:
    return run_ok(host, "docker", "image", "inspect", "-f", "{{.Id}}", image).strip()


def running_image(host, container: str) -> str:
    return run_ok(host, "docker", "inspect", "-f", "{{.Image}}", container).strip()


def changed(output: str, name: str) -> int:
    found = re.search(rf"^{re.escape(name)}\s+:.*?changed=(\d+)", output, re.MULTILINE)
    assert found, output[-3000:]
    return int(found.group(1))


def test_the_guide_tree_is_copied_built_and_run(build, ansible_inventory, tmp_path):
    name, host, extra, _ = build
    result = run_role(ansible_inventory, name, extra, tmp_path)
    assert result.returncode == 0, (result.stdout + result.stderr)[-4000:]
    assert host.file(f"{SOURCE_DIR}/backend/ai-inference-service/Dockerfile").exists
    assert host.file(f"{SOURCE_DIR}/{UNIT_MANAGER_SOURCE}").exists
    version = run_ok(
        host, "docker", "run", "--rm", "--entrypoint", "cat", INFERENCE_IMAGE, "/app/VERSION"
    )
    assert version.strip() == "1"
    defaults = AI_NODE_DEFAULTS
    assert running_image(host, defaults["ai_node_inference_container"]) == image_id(
        host, INFERENCE_IMAGE
    )
    for container in (
        defaults["ai_node_unit_manager_container"],
        defaults["ai_node_llm_container"],
    ):
        assert running_image(host, container) == image_id(host, EDGE_IMAGE)
    health = run_ok(host, "curl", "-fsS", "http://127.0.0.1:8800/api/v1/ai/health")
    assert '"healthy"' in health


def test_a_second_run_builds_nothing(build, ansible_inventory, tmp_path):
    name, host, extra, _ = build
    before = image_id(host, INFERENCE_IMAGE), image_id(host, EDGE_IMAGE)
    result = run_role(ansible_inventory, name, extra, tmp_path)
    assert result.returncode == 0, (result.stdout + result.stderr)[-4000:]
    assert changed(result.stdout, name) == 0, result.stdout[-4000:]
    assert (image_id(host, INFERENCE_IMAGE), image_id(host, EDGE_IMAGE)) == before


def test_a_changed_unit_manager_source_rebuilds_its_image_only(build, ansible_inventory, tmp_path):
    name, host, extra, tree = build
    inference, edge = image_id(host, INFERENCE_IMAGE), image_id(host, EDGE_IMAGE)
    (tree / UNIT_MANAGER_SOURCE).write_text("// splits its TCP input on newlines\n")
    result = run_role(ansible_inventory, name, extra, tmp_path)
    assert result.returncode == 0, (result.stdout + result.stderr)[-4000:]
    new_edge = image_id(host, EDGE_IMAGE)
    assert new_edge != edge
    assert image_id(host, INFERENCE_IMAGE) == inference
    source = run_ok(
        host, "docker", "run", "--rm", "--entrypoint", "cat", EDGE_IMAGE, "/work/zmq_bus.cpp"
    )
    assert "splits its TCP input on newlines" in source
    defaults = AI_NODE_DEFAULTS
    for container in (
        defaults["ai_node_unit_manager_container"],
        defaults["ai_node_llm_container"],
    ):
        assert running_image(host, container) == new_edge


def test_a_missing_dockerfile_is_named(build, ansible_inventory, tmp_path):
    name, _, extra, _ = build
    wrong = {
        **extra,
        "ai_node_build_inference": {"context": "backend", "dockerfile": "nope/Dockerfile"},
    }
    result = run_role(ansible_inventory, name, wrong, tmp_path)
    output = " ".join((result.stdout + result.stderr).split())
    assert result.returncode != 0
    assert f"{name}: cannot build inference: no {SOURCE_DIR}/backend/nope/Dockerfile" in output, (
        output[-3000:]
    )
