"""Shared helpers of the testinfra suites.

The suites run under molecule and, unchanged, against a real fleet:
    pytest tests/integration --ansible-inventory=inventory --connection=ansible
Each test module selects its hosts with `testinfra_hosts` (an inventory group).
"""

from __future__ import annotations

import json

import pytest


def run_ok(host, *argv: str) -> str:
    """Run a command on the host, fail the test with its output unless it exits 0."""
    result = host.run(" ".join(_quote(a) for a in argv))
    assert result.rc == 0, f"{' '.join(argv)} failed on {host.backend.hostname}: {result.stderr}"
    return result.stdout


def _quote(arg: str) -> str:
    """Quote one argument for the host's shell."""
    return "'" + arg.replace("'", "'\\''") + "'"


@pytest.fixture
def docker_info(host) -> dict:
    """`docker info` of the host's engine, as a dict."""
    return json.loads(run_ok(host, "docker", "info", "--format", "{{json .}}"))
