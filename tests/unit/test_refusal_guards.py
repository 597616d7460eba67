"""The refusals hold when their flag is the string 'false'.

``-e flag=false``, an INI inventory and an AWX survey give the string
``'false'``, which Jinja finds true. These tests run the roles' own task files,
unchanged, with ``ansible-playbook --check`` on this machine (local
connection, no root, nothing written outside a temporary folder) and check
that each refusal still happens:

- docker_engine (``tasks/conflicting_packages.yml``): conflicting packages
  installed and ``docker_engine_replace_conflicting_packages`` 'false': the
  run stops and the removal is never reached;
- nvidia_driver (``tasks/preflight.yml``): Secure Boot on and
  ``nvidia_driver_secure_boot_signed_modules`` 'false': the run stops before
  anything else is read;
- nvidia_driver (``tasks/preflight.yml``): another branch installed and
  ``nvidia_driver_upgrade`` 'false': the driver is left alone (the role ends).

A third run, without a faked driver package, shows that a driver installed
with NVIDIA's ``.run`` installer (its programs there, its module loaded) is
left alone too, and that a host without one goes on.

Each runs twice: the flags from an INI inventory (strings), and from
``-e name=false`` on the command line. Hosts with ``'true'`` are the controls:
there the guard opens, so the tests do not pass merely because the task fails.

What is faked: the host's state, through variables and folders. The
installed conflicting packages and the installed driver are extra variables
(``__docker_engine_installed_conflicts``, ``__nvidia_driver_installed_version``
and ``_branch``, which outrank what ``package_facts`` finds); the GPU is a
sysfs-like folder (``nvidia_driver_pci_devices_dir``); Secure Boot is an efivars
file (``nvidia_driver_efivars_dir``); the package removal goes to a stand-in
module (``ansible_package_use``) that only reports what it was asked to remove.
``package_facts`` runs for real (read only). About 15-25 s on 2 cores (two runs at once).
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
from plugin_loader import ansible_env

# Runs ansible, ansible-playbook or nginx: left out of `make check`.
pytestmark = pytest.mark.playbook

ROOT = Path(__file__).resolve().parents[2]
SECURE_BOOT_VAR = "SecureBoot-8be4df61-93ca-11d2-aa0d-00e098032b8c"

REFUSE_CONFLICTS = "Stop when conflicting packages are installed and replacing them is not allowed"
REMOVE_CONFLICTS = "Remove the conflicting packages"
REFUSE_SECURE_BOOT = "Refuse unsigned kernel modules under Secure Boot"
READ_INSTALLED = "Read the installed packages"
LEAVE_BRANCH = "Say why the driver is left alone"
LEAVE_UNPACKAGED = "Say why the driver installed outside the package manager is left alone"

# Hosts of the INI inventory: inline host variables written `name=false` reach
# the roles as strings ('false', 'true'), as from any INI inventory.
INVENTORY = """\
[all:vars]
ansible_connection=local

[docker_conflicts]
docker-true docker_engine_replace_conflicting_packages=true
docker-cli

[nvidia]
sb-false nvidia_driver_efivars_dir={efivars_on} nvidia_driver_secure_boot_signed_modules=false
sb-true-upgrade-true nvidia_driver_efivars_dir={efivars_on} \
nvidia_driver_secure_boot_signed_modules=true nvidia_driver_upgrade=true
sb-cli nvidia_driver_efivars_dir={efivars_on}
upgrade-cli nvidia_driver_efivars_dir={efivars_off}
runfile nvidia_driver_efivars_dir={efivars_off} \
nvidia_driver_runfile_programs="['{tmp}/usr/bin/nvidia-installer']" \
nvidia_driver_proc_version_file={tmp}/proc/driver/nvidia/version
no-runfile nvidia_driver_efivars_dir={efivars_off} \
nvidia_driver_runfile_programs="['{tmp}/none/nvidia-installer']" \
nvidia_driver_proc_version_file={tmp}/none/version

[nvidia:vars]
nvidia_driver_pci_devices_dir={pci}
"""
INVENTORY_HOSTS = "docker-true,sb-false,sb-true-upgrade-true"
CLI_HOSTS = "docker-cli,sb-cli,upgrade-cli"
UNPACKAGED_HOSTS = "runfile,no-runfile"
# /proc/driver/nvidia/version of a driver 580 loaded from NVIDIA's .run installer.
PROC_VERSION = (
    "NVRM version: NVIDIA UNIX Open Kernel Module for x86_64  580.95.05  Release Build  "
    "(dvs-builder@U22-I3-AE18-23-3)  Tue Sep 23 09:55:41 UTC 2025\n"
    "GCC version:  gcc version 12.2.0 (Debian 12.2.0-14+deb12u1)\n"
)
CLI_FLAGS = [
    "docker_engine_replace_conflicting_packages=false",
    "nvidia_driver_secure_boot_signed_modules=false",
    "nvidia_driver_upgrade=false",
]

# A play whose hosts have all failed ends the whole run: the nvidia play comes
# first, as it always keeps a host (upgrade-cli, the controls).
PLAYBOOK = """\
---
- name: nvidia_driver's preflight
  hosts: nvidia
  gather_facts: false
  tasks:
    - name: Record the type of the flag
      ansible.builtin.set_fact:
        flag_type: >-
          {{ nvidia_driver_secure_boot_signed_modules | default('unset') | type_debug }}

    - name: Run the preflight
      ansible.builtin.include_role:
        name: nvidia_driver
        tasks_from: preflight

- name: docker_engine's conflicting-packages step
  hosts: docker_conflicts
  gather_facts: false
  tasks:
    - name: Record the type of the flag
      ansible.builtin.set_fact:
        flag_type: >-
          {{ docker_engine_replace_conflicting_packages | default('unset') | type_debug }}

    - name: Run the step
      ansible.builtin.include_role:
        name: docker_engine
        tasks_from: conflicting_packages
"""

# Reports what it was asked to remove; touches nothing.
STAND_IN_PACKAGE_MODULE = '''\
#!/usr/bin/python
"""Test stand-in for the package manager: reports, changes nothing."""
from ansible.module_utils.basic import AnsibleModule



def main():
    module = AnsibleModule(
        argument_spec={"name": {"type": "list", "elements": "str"}, "state": {"type": "str"}},
        supports_check_mode=True,
    )
    module.exit_json(changed=True, stand_in=True, removed=module.params["name"])


main()
'''

ANSIBLE_CFG = """\
[defaults]
stdout_callback = ansible.posix.json
forks = 8
gathering = explicit
fact_caching = memory
interpreter_python = auto_silent
retry_files_enabled = False
local_tmp = {tmp}/ansible-local
remote_tmp = {tmp}/ansible-remote
"""

FAKES = {
    # Installed on the host, as package_facts would have found them.
    "__docker_engine_installed_conflicts": ["docker.io", "containerd", "runc"],
    # Branch 570 installed, the role wants 580.
    "__nvidia_driver_installed_version": "570.86.15-1",
    "__nvidia_driver_installed_branch": "570",
    "ansible_package_use": "ai_fleet_test_package",
    "ansible_python_interpreter": sys.executable,
}


def _host_results(report: dict) -> dict[str, dict[str, list[dict]]]:
    """{host: {task name without the role prefix: [results]}} from the json callback."""
    found: dict[str, dict[str, list[dict]]] = {}
    for play in report["plays"]:
        for task in play["tasks"]:
            name = task["task"]["name"].split(" : ", 1)[-1]
            for host, result in task["hosts"].items():
                found.setdefault(host, {}).setdefault(name, []).append(result)
    return found


@pytest.fixture(scope="module")
def runs(tmp_path_factory) -> dict[str, dict[str, dict[str, list[dict]]]]:
    """Both runs (INI inventory, -e), each as {host: {task: [results]}}."""
    if not (ROOT / ".collections" / "ansible_collections" / "ansible" / "posix").is_dir():
        pytest.fail("ansible.posix is not in .collections: run scripts/bootstrap.sh first")
    tmp = tmp_path_factory.mktemp("guards")
    gpu = tmp / "pci" / "0000:01:00.0"
    gpu.mkdir(parents=True)
    (gpu / "vendor").write_text("0x10de\n")
    (gpu / "class").write_text("0x030200\n")
    (gpu / "device").write_text("0x2330\n")
    efivars_on, efivars_off = tmp / "efivars-on", tmp / "efivars-off"
    efivars_on.mkdir()
    efivars_off.mkdir()
    # 4 bytes of attributes, then 1: Secure Boot enabled.
    (efivars_on / SECURE_BOOT_VAR).write_bytes(b"\x06\x00\x00\x00\x01")
    library = tmp / "library"
    library.mkdir()
    (library / "ai_fleet_test_package.py").write_text(STAND_IN_PACKAGE_MODULE)
    (tmp / "ansible.cfg").write_text(ANSIBLE_CFG.format(tmp=tmp))
    (tmp / "usr" / "bin").mkdir(parents=True)
    (tmp / "usr" / "bin" / "nvidia-installer").write_text("#!/bin/sh\n")
    (tmp / "proc" / "driver" / "nvidia").mkdir(parents=True)
    (tmp / "proc" / "driver" / "nvidia" / "version").write_text(PROC_VERSION)
    (tmp / "inventory.ini").write_text(
        INVENTORY.format(efivars_on=efivars_on, efivars_off=efivars_off, pci=tmp / "pci", tmp=tmp)
    )
    (tmp / "guards.yml").write_text(PLAYBOOK)
    (tmp / "fakes.json").write_text(json.dumps(FAKES))
    # No driver package: what package_facts finds on this machine decides.
    unpackaged = {k: v for k, v in FAKES.items() if not k.startswith("__nvidia_driver_installed_")}
    (tmp / "unpackaged.json").write_text(json.dumps(unpackaged))

    env = {
        **os.environ,
        # The repository's paths (ansible.cfg's), the stand-in module first.
        **ansible_env(library=str(library)),
        "ANSIBLE_CONFIG": str(tmp / "ansible.cfg"),
        "NO_COLOR": "1",
    }
    base = [
        *(sys.executable, "-m", "ansible.cli.playbook"),
        *("-i", str(tmp / "inventory.ini"), "--check", str(tmp / "guards.yml")),
    ]
    fakes = ["-e", f"@{tmp / 'fakes.json'}"]
    # The runs at once: each spends its time in package_facts.
    started = {
        run: subprocess.Popen(
            [*base, *extra],
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
            env=env,
            cwd=tmp,
        )
        for run, extra in (
            ("inventory", [*fakes, "--limit", INVENTORY_HOSTS]),
            (
                "cli",
                [*fakes, "--limit", CLI_HOSTS, *(a for flag in CLI_FLAGS for a in ("-e", flag))],
            ),
            ("unpackaged", ["-e", f"@{tmp / 'unpackaged.json'}", "--limit", UNPACKAGED_HOSTS]),
        )
    }
    results = {}
    for run, process in started.items():
        stdout, stderr = process.communicate(timeout=300)
        # rc 2: some hosts failed, as they should.
        assert process.returncode in (0, 2), stdout[-3000:] + stderr[-3000:]
        results[run] = _host_results(json.loads(stdout))
    return results


def only(results: dict, host: str, task: str) -> dict:
    (result,) = results[host][task]
    return result


def test_conflicting_packages_are_not_removed_with_string_false(runs):
    results, host = runs["cli"], "docker-cli"
    assert only(results, host, "Record the type of the flag")["ansible_facts"]["flag_type"] == "str"
    refusal = only(results, host, REFUSE_CONFLICTS)
    assert refusal.get("failed") is True, refusal
    assert "docker.io, containerd, runc" in refusal["msg"]
    assert "Nothing was changed" in refusal["msg"]
    assert REMOVE_CONFLICTS not in results[host]


def test_conflicting_packages_are_removed_with_true(runs):
    """Control: 'true' opens the guard, and the removal gets the packages."""
    results = runs["inventory"]
    assert only(results, "docker-true", REFUSE_CONFLICTS).get("skipped") is True
    removal = only(results, "docker-true", REMOVE_CONFLICTS)
    assert removal.get("stand_in") is True, removal
    assert removal["removed"] == ["docker.io", "containerd", "runc"]


@pytest.mark.parametrize(("run", "host"), [("inventory", "sb-false"), ("cli", "sb-cli")])
def test_secure_boot_refusal_holds_with_string_false(runs, run, host):
    results = runs[run]
    assert only(results, host, "Record the type of the flag")["ansible_facts"]["flag_type"] == "str"
    refusal = only(results, host, REFUSE_SECURE_BOOT)
    assert refusal.get("failed") is True, refusal
    assert "Secure Boot is enabled" in refusal["msg"]
    assert "Nothing was changed" in refusal["msg"]
    # The run stopped there: the installed packages were not even read.
    assert READ_INSTALLED not in results[host]


def test_secure_boot_refusal_opens_with_true(runs):
    """Control: with signed modules declared ('true'), the preflight goes on."""
    results = runs["inventory"]
    assert only(results, "sb-true-upgrade-true", REFUSE_SECURE_BOOT).get("skipped") is True
    assert READ_INSTALLED in results["sb-true-upgrade-true"]


def test_other_branch_is_left_alone_with_string_false(runs):
    said = only(runs["cli"], "upgrade-cli", LEAVE_BRANCH)
    assert not said.get("skipped"), said
    assert "570.86.15-1 (branch 570) is installed, not branch 580" in said["msg"]
    assert "It is left as it is" in said["msg"]


def test_other_branch_is_moved_with_true(runs):
    """Control: nvidia_driver_upgrade 'true' lets the role go on to the install."""
    assert only(runs["inventory"], "sb-true-upgrade-true", LEAVE_BRANCH).get("skipped") is True


def test_driver_from_the_run_installer_is_left_alone(runs):
    results = runs["unpackaged"]["runfile"]
    said = only(runs["unpackaged"], "runfile", LEAVE_UNPACKAGED)
    assert not said.get("skipped"), said
    for text in (
        "runfile: an NVIDIA driver is installed outside the package manager",
        "usr/bin/nvidia-installer",
        "loaded module 580.95.05",
        "It is left as it is",
        "run nvidia-uninstall on the host, reboot",
    ):
        assert text in said["msg"], said["msg"]
    # The role ended there: the other-branch step was never reached.
    assert LEAVE_BRANCH not in results


def test_host_without_a_driver_goes_on_to_the_install(runs):
    """Control: nothing of a .run installer there, and the preflight goes on."""
    results = runs["unpackaged"]["no-runfile"]
    assert only(runs["unpackaged"], "no-runfile", LEAVE_UNPACKAGED).get("skipped") is True
    assert only(runs["unpackaged"], "no-runfile", LEAVE_BRANCH).get("skipped") is True
    assert READ_INSTALLED in results
