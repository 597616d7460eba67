"""Shared helpers of the testinfra suites.

The suites run under molecule and, unchanged, against a real fleet:
    pytest tests/integration --ansible-inventory=inventory --connection=ansible
Each test module selects its hosts with `testinfra_hosts` (an inventory group).
Settings a role reads (container names, ports) come from the host's inventory
variables, falling back to the role's defaults.
"""

from __future__ import annotations

import json
import os
import subprocess
import time
from pathlib import Path

import pytest
import yaml

# tests/unit is on the path (pyproject.toml): ansible.cfg's paths, read in one place.
from plugin_loader import ansible_env

ROOT = Path(__file__).resolve().parents[2]

# Suites that run plays against the fleet (refusals, failover) run under
# molecule, or against another fleet when this variable is set.
PLAYS_ALLOWED = bool(
    os.environ.get("MOLECULE_INVENTORY_FILE") or os.environ.get("AI_FLEET_PLAY_TESTS")
)
needs_plays = pytest.mark.skipif(
    not PLAYS_ALLOWED,
    reason="runs plays against the fleet: molecule only, or AI_FLEET_PLAY_TESTS=1",
)

# The ai_node role's defaults, read from the role (none of them is a template).
AI_NODE_DEFAULTS = yaml.safe_load(
    (ROOT / "roles" / "ai_node" / "defaults" / "main.yml").read_text()
)


def quote(arg: str) -> str:
    """Quote one argument for the host's shell."""
    return "'" + str(arg).replace("'", "'\\''") + "'"


def run_ok(host, *argv: str) -> str:
    """Run a command on the host, fail the test with its output unless it exits 0."""
    result = host.run(" ".join(quote(a) for a in argv))
    assert result.rc == 0, f"{' '.join(argv)} failed on {host.backend.hostname}: {result.stderr}"
    return result.stdout


def inspect(host, name: str) -> dict:
    """`docker inspect` of one container on the host."""
    return json.loads(run_ok(host, "docker", "inspect", name))[0]


def http_get(host, url: str, headers: dict | None = None) -> tuple[int, dict]:
    """GET a URL from the host itself; return (status, JSON body)."""
    argv = ["curl", "-sS", "--max-time", "60", "-o", "-", "-w", "\n%{http_code}"]
    for key, value in (headers or {}).items():
        argv += ["-H", f"{key}: {value}"]
    out = run_ok(host, *argv, url)
    body, _, status = out.rstrip("\n").rpartition("\n")
    return int(status), json.loads(body)


def wait_for(predicate, timeout: float, interval: float = 2.0):
    """Call predicate until it returns a truthy value or timeout seconds pass."""
    deadline = time.monotonic() + timeout
    while True:
        value = predicate()
        if value or time.monotonic() > deadline:
            return value
        time.sleep(interval)


def run_playbook(  # noqa: PLR0913 (keyword-only options of one command)
    inventory: str,
    playbook: Path,
    *,
    limit: str | None = None,
    extra_vars: Path | None = None,
    args: tuple[str, ...] = (),
    env: dict[str, str] | None = None,
) -> subprocess.CompletedProcess:
    """Run a playbook of this repository against the inventory; return the finished process.

    ``env`` adds to (or overrides) the environment, for example ANSIBLE_LOG_PATH.
    """
    env = {**os.environ, "ANSIBLE_NOCOLOR": "1", **(env or {})}
    for var, value in ansible_env().items():
        env.setdefault(var, value)
    # The lab's image archives, for an inventory copied elsewhere by a test
    # (the lab's group_vars find them beside the lab's own inventory otherwise).
    env.setdefault("LAB_IMAGE_ARCHIVES", str(ROOT / ".cache" / "images"))
    argv = ["ansible-playbook", "-i", inventory, str(playbook), *args]
    if limit:
        argv += ["--limit", limit]
    if extra_vars:
        argv += ["-e", f"@{extra_vars}"]
    return subprocess.run(
        argv, capture_output=True, text=True, cwd=ROOT, env=env, timeout=1500, check=False
    )


AI_NODE_PLAYBOOK = """\
- name: Deploy the AI node stack
  hosts: gpu_nodes
  gather_facts: false
  become: true
  roles:
    - role: ai_node
"""


def run_role(ansible_inventory: str, name: str, extra_vars: dict, tmp_path: Path):
    """Run the ai_node role on one host with extra vars; return the completed process."""
    playbook = tmp_path / "ai_node.yml"
    playbook.write_text(AI_NODE_PLAYBOOK)
    extra = tmp_path / "extra.json"
    extra.write_text(json.dumps(extra_vars))
    return run_playbook(ansible_inventory, playbook, limit=name, extra_vars=extra)


def inventory_groups(inventory: str) -> dict:
    """The inventory as `ansible-inventory --list` prints it."""
    out = subprocess.run(
        ["ansible-inventory", "-i", inventory, "--list"],
        check=True,
        capture_output=True,
        text=True,
        cwd=ROOT,
    ).stdout
    return json.loads(out)


@pytest.fixture
def node_vars(host) -> dict:
    """The ai_node settings of this host: inventory variables over the role's defaults."""
    return {**AI_NODE_DEFAULTS, **host.ansible.get_variables()}


@pytest.fixture
def docker_info(host) -> dict:
    """`docker info` of the host's engine, as a dict."""
    return json.loads(run_ok(host, "docker", "info", "--format", "{{json .}}"))


@pytest.fixture(scope="session")
def ansible_inventory(request) -> str | None:
    """The inventory the suite runs against (molecule's, or --ansible-inventory)."""
    return request.config.option.ansible_inventory or os.environ.get("MOLECULE_INVENTORY_FILE")
