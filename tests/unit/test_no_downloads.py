"""Monitoring is air-gapped by construction: its roles download nothing.

The node exporter, Prometheus, Alertmanager, the gateways' exporters and the
GPU health checker come from the distribution's packages (through the package
sources the host already has) or from the project's own files; dcgm-exporter's
image from an archive shipped from the controller, or from the site's own
registry when the operator chooses it (the node stack's two sources). Every
task of these roles calls a module that fetches nothing from elsewhere, and
the URLs they read are the host's own services, on loopback.
"""

from __future__ import annotations

import re

import pytest
import yaml
from plugin_loader import ROOT

#: The task files that deploy monitoring.
TASK_FILES = sorted(
    [
        *(ROOT / "roles" / "node_exporter" / "tasks").glob("*.yml"),
        *(ROOT / "roles" / "monitoring" / "tasks").glob("*.yml"),
        *(ROOT / "roles" / "gpu_health" / "tasks").glob("*.yml"),
        *(ROOT / "roles" / "dcgm_exporter" / "tasks").glob("*.yml"),
        ROOT / "roles" / "ai_gateway" / "tasks" / "metrics.yml",
        ROOT / "roles" / "ai_gateway" / "tasks" / "metrics_absent.yml",
        ROOT / "roles" / "ai_gateway" / "tasks" / "membership.yml",
    ]
)
#: Modules that read or write only the host itself (packages from its own sources).
LOCAL_MODULES = {
    "ansible.builtin.apt",
    "ansible.builtin.dnf",
    "ansible.builtin.file",
    "ansible.builtin.copy",
    "ansible.builtin.template",
    "ansible.builtin.stat",
    "ansible.builtin.user",
    "ansible.builtin.systemd_service",
    "ansible.builtin.assert",
    "ansible.builtin.debug",
    "ansible.builtin.set_fact",
    "ansible.builtin.meta",
    "ansible.builtin.import_tasks",
    "ansible.builtin.include_tasks",
    "ansible.builtin.command",
    "ansible.builtin.uri",
    "ansible.builtin.find",
    "ai_settings_check",
    "nvidia_gpu_facts",
    "community.docker.docker_container",
    "community.docker.docker_image_info",
    # Only to load an archive (checked below).
    "community.docker.docker_image",
}
#: The one task file that pulls an image: from the registry the operator names
#: (dcgm_exporter_image_source: registry), as the node stack's images come.
REGISTRY_PULLS = {ROOT / "roles" / "dcgm_exporter" / "tasks" / "image-registry.yml"}
#: Task keywords, not modules.
KEYWORDS = {
    "name", "when", "loop", "loop_control", "register", "notify", "vars", "tags", "become",
    "check_mode", "changed_when", "failed_when", "until", "retries", "delay", "no_log",
    "block", "rescue", "always", "listen", "ignore_errors", "environment", "delegate_to",
    "run_once",
}  # fmt: skip
#: The programs the command tasks may run (nothing that fetches).
LOCAL_COMMANDS = {"date"}
#: What a download would look like in a local module's arguments.
REMOTE = re.compile(r"(https?|ftp)://(?!127\.0\.0\.1|\[::1\]|localhost)", re.I)


def tasks(path):
    """Every task of a task file, blocks opened."""
    found = []

    def walk(items):
        for task in items or []:
            found.append(task)
            for key in ("block", "rescue", "always"):
                walk(task.get(key))

    walk(yaml.safe_load(path.read_text()))
    return found


def module_of(task):
    """The module a task calls, or None for a block."""
    names = [key for key in task if key not in KEYWORDS]
    return names[0] if names else None


def test_the_monitoring_task_files_are_all_here():
    assert len(TASK_FILES) >= 12
    assert all(path.is_file() for path in TASK_FILES)


@pytest.mark.parametrize("path", TASK_FILES, ids=lambda p: str(p.relative_to(ROOT)))
def test_every_task_calls_a_module_that_fetches_nothing(path):
    problems = []
    for task in tasks(path):
        module = module_of(task)
        if module is None:
            continue
        arguments = task[module]
        if module == "community.docker.docker_image_pull" and path in REGISTRY_PULLS:
            continue
        if module == "community.docker.docker_image" and arguments.get("source") != "load":
            problems.append(f"{task.get('name')}: docker_image other than source: load")
        if module not in LOCAL_MODULES:
            problems.append(f"{task.get('name')}: {module} is not known to stay on the host")
        if REMOTE.search(yaml.safe_dump(arguments)):
            problems.append(f"{task.get('name')}: names a remote URL")
        if module == "ansible.builtin.apt" and isinstance(arguments, dict) and "deb" in arguments:
            problems.append(f"{task.get('name')}: apt deb= downloads a package file")
        if module == "ansible.builtin.command":
            argv = arguments.get("argv") if isinstance(arguments, dict) else None
            if not argv or argv[0] not in LOCAL_COMMANDS:
                problems.append(
                    f"{task.get('name')}: runs {argv or arguments!r}, not a known local command"
                )
    assert problems == []


def test_the_urls_the_roles_read_are_the_host_s_own():
    """Every uri task reads a URL built from a role variable that points at loopback."""
    role_vars = {}
    for role in ("node_exporter", "monitoring", "gpu_health", "ai_gateway", "dcgm_exporter"):
        role_vars.update(yaml.safe_load((ROOT / "roles" / role / "vars" / "main.yml").read_text()))
    for path in TASK_FILES:
        for task in tasks(path):
            if module_of(task) != "ansible.builtin.uri":
                continue
            url = str(task["ansible.builtin.uri"]["url"])
            if url.startswith("{{ item"):
                urls = [str(item["url"]) for item in task["loop"]]
            else:
                urls = [url]
            for each in urls:
                assert each.startswith(("http://127.0.0.1:", "{{ __")), (task["name"], each)
                if each.startswith("{{ __"):
                    var = re.match(r"\{\{ (__[a-z_]+)", each).group(1)
                    assert var in role_vars, (task["name"], var)
                    host_var = re.search(r"\{\{ (__[a-z_]+_host) \}\}", role_vars[var])
                    chain = role_vars[host_var.group(1)] if host_var else role_vars[var]
                    # ai_local_host: loopback for a service on every address
                    # (tests/unit/filter/test_ai_monitoring.py).
                    assert "| ai_local_host }}" in chain, (task["name"], var, chain)
