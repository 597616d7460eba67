"""daemon.json is checked before it is written, and never left broken.

Runs docker_engine's ``daemon_config`` entry point and its restart handler,
unchanged, with ``ansible-playbook`` on this machine, against stand-ins: the
file is written to a temporary folder (``__docker_engine_daemon_json_path``,
an extra variable), ``dockerd`` and ``journalctl`` are scripts first on PATH,
and the service manager is a module in a temporary library that overrides
``systemd``/``service``/``sysvinit`` and starts "Docker" unless daemon.json
holds the marker ``fails-to-start``. The play first checks that the service
manager it reaches is the stand-in: this machine's Docker is never touched.

- options dockerd would refuse (``max-file: 3``) fail before anything is
  written, naming the host and the variable;
- a dockerd with ``--validate`` (Docker 23 and later) checks the file before
  it replaces the old one; without one (Debian's 20.10) the file is written;
- Docker that does not start with a new file gets the previous one back (or
  none, when there was none), is started with it, and the run fails with
  dockerd's last log lines.

One ansible-playbook run, a host per scenario: about 15 s on 2 idle cores.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
PREVIOUS = '{\n  "live-restore": true,\n  "previous": "file"\n}\n'

DOCKERD = """\
#!/bin/sh
# Test stand-in for dockerd: --help, and --validate when AI_FLEET_TEST_VALIDATES=1.
case "$1" in
  --help)
    echo "Usage: dockerd [OPTIONS]"
    echo "      --config-file string   Daemon configuration file"
    if [ "$AI_FLEET_TEST_VALIDATES" = 1 ]; then
      echo "      --validate             Validate daemon configuration and exit"
    fi
    exit 0 ;;
  --validate)
    [ "$AI_FLEET_TEST_VALIDATES" = 1 ] || { echo "unknown flag: --validate" >&2; exit 125; }
    if grep -q unknown-to-dockerd "$3"; then
      echo "unable to configure the Docker daemon with file $3: the following directives" \\
        "don't match any configuration option: unknown-to-dockerd" >&2
      exit 1
    fi
    echo "configuration OK"
    exit 0 ;;
esac
echo "stand-in dockerd: not started" >&2
exit 2
"""

JOURNALCTL = """\
#!/bin/sh
# Test stand-in for journalctl: dockerd's last words.
echo "Starting Docker Application Container Engine..."
echo "dockerd[4242]: failed to start daemon: stand-in refuses fails-to-start"
echo "docker.service: Failed with result 'exit-code'."
"""

SERVICE = '''\
#!/usr/bin/python
"""Test stand-in for the service manager: logs each call, starts unless told not to."""
import json
import os

from ansible.module_utils.basic import AnsibleModule


def main():
    module = AnsibleModule(
        argument_spec={
            "name": {"type": "str", "required": True},
            "state": {"type": "str"},
            "enabled": {"type": "bool"},
        },
        supports_check_mode=True,
    )
    path = os.environ["AI_FLEET_TEST_DAEMON_JSON"]
    content = open(path).read() if os.path.exists(path) else None
    call = {"name": module.params["name"], "state": module.params["state"], "daemon_json": content}
    with open(os.environ["AI_FLEET_TEST_SERVICE_LOG"], "a") as log:
        log.write(json.dumps(call) + "\\n")
    if module.params["state"] in ("started", "restarted", "reloaded") and "fails-to-start" in (
        content or ""
    ):
        module.fail_json(msg="Unable to restart service docker: Job for docker.service failed")
    module.exit_json(changed=True, stand_in=True, state=module.params["state"])


main()
'''

FACTS = '''\
#!/usr/bin/python
"""Test stand-in facts: the service manager is systemd (the stand-in in this library)."""
from ansible.module_utils.basic import AnsibleModule

AnsibleModule(argument_spec={}, supports_check_mode=True).exit_json(
    changed=False, ansible_facts={"service_mgr": "systemd"}
)
'''

PLAYBOOK = """\
---
- name: docker_engine's daemon.json, against stand-ins
  hosts: all
  gather_facts: false
  # Per scenario: whether the stand-in dockerd validates, where daemon.json is.
  environment:
    AI_FLEET_TEST_VALIDATES: "{{ validates }}"
    AI_FLEET_TEST_DAEMON_JSON: "{{ test_dir }}/etc-docker/daemon.json"
    AI_FLEET_TEST_SERVICE_LOG: "{{ test_dir }}/service.log"
  tasks:
    # A fact outranks the role's own variable, in its handlers too.
    - name: Point the role at this scenario's daemon.json
      ansible.builtin.set_fact:
        __docker_engine_daemon_json_path: "{{ test_dir }}/etc-docker/daemon.json"

    - name: Use the stand-in service manager
      ai_fleet_test_facts:

    - name: Reach the service manager once
      ansible.builtin.service:
        name: ai-fleet-test-probe
        state: started
      register: probe

    - name: Stop unless the service manager is the stand-in
      ansible.builtin.assert:
        that: probe.stand_in | default(false)

    - name: Write daemon.json
      ansible.builtin.include_role:
        name: docker_engine
        tasks_from: daemon_config

    - name: Restart Docker when daemon.json changed
      ansible.builtin.meta: flush_handlers
"""

ANSIBLE_CFG = """\
[defaults]
roles_path = {root}/roles
library = {library}:{root}/plugins/modules
module_utils = {root}/plugins/module_utils
filter_plugins = {root}/plugins/filter
collections_path = {root}/.collections
stdout_callback = ansible.posix.json
forks = 8
gathering = explicit
fact_caching = memory
interpreter_python = auto_silent
retry_files_enabled = False
local_tmp = {tmp}/ansible-local
remote_tmp = {tmp}/ansible-remote
"""

# Each scenario is a host: (its variables, previous daemon.json, dockerd validates).
SCENARIOS = {
    "good-first-write": ({}, None, False),
    "numeric-log-opt": (
        {"docker_engine_daemon_options": {"log-opts": {"max-size": "10m", "max-file": 3}}},
        PREVIOUS,
        False,
    ),
    "bad-fragment": (
        {"docker_engine_daemon_options_nvidia": {"default-runtime": "nvidia"}},
        PREVIOUS,
        True,
    ),
    "dockerd-refuses": (
        {"docker_engine_daemon_options": {"unknown-to-dockerd": True}},
        PREVIOUS,
        True,
    ),
    "start-fails": ({"docker_engine_daemon_options": {"fails-to-start": True}}, PREVIOUS, False),
    "start-fails-first-file": (
        {"docker_engine_daemon_options": {"fails-to-start": True}},
        None,
        False,
    ),
}


def _write_executable(path: Path, text: str) -> None:
    path.write_text(text)
    path.chmod(0o755)


def _outcome(tmp: Path, name: str, tasks: dict) -> dict:
    work = tmp / name
    daemon_json = work / "etc-docker" / "daemon.json"
    log = work / "service.log"
    calls = [json.loads(line) for line in log.read_text().splitlines()] if log.exists() else []
    return {
        "tasks": tasks,
        # In order; the restart whose failure the role handles comes first.
        "failed": [r for results in tasks.values() for r in results if r.get("failed")],
        "service": [c for c in calls if c["name"] == "docker"],
        "probe": [c for c in calls if c["name"] == "ai-fleet-test-probe"],
        "daemon_json": daemon_json.read_text() if daemon_json.exists() else None,
        "backups": sorted(p.name for p in daemon_json.parent.glob("daemon.json.*")),
    }


@pytest.fixture(scope="module")
def runs(tmp_path_factory):
    """One run, one host per scenario: {scenario: outcome}."""
    if not (ROOT / ".collections" / "ansible_collections" / "ansible" / "posix").is_dir():
        pytest.fail("ansible.posix is not in .collections: run scripts/bootstrap.sh first")
    tmp = tmp_path_factory.mktemp("daemon-json")
    (tmp / "bin").mkdir()
    _write_executable(tmp / "bin" / "dockerd", DOCKERD)
    _write_executable(tmp / "bin" / "journalctl", JOURNALCTL)
    library = tmp / "library"
    library.mkdir()
    for name in ("systemd", "service", "sysvinit"):
        (library / f"{name}.py").write_text(SERVICE)
    (library / "ai_fleet_test_facts.py").write_text(FACTS)
    (tmp / "ansible.cfg").write_text(ANSIBLE_CFG.format(root=ROOT, library=library, tmp=tmp))
    (tmp / "daemon_json.yml").write_text(PLAYBOOK)
    hosts = {}
    for name, (variables, previous, validates) in SCENARIOS.items():
        (tmp / name / "etc-docker").mkdir(parents=True)
        if previous is not None:
            (tmp / name / "etc-docker" / "daemon.json").write_text(previous)
        hosts[name] = {
            **variables,
            "test_dir": str(tmp / name),
            "validates": "1" if validates else "0",
            "ansible_connection": "local",
            "ansible_python_interpreter": sys.executable,
        }
    (tmp / "inventory.json").write_text(json.dumps({"all": {"hosts": hosts}}))
    env = {
        **os.environ,
        "ANSIBLE_CONFIG": str(tmp / "ansible.cfg"),
        "PATH": f"{tmp / 'bin'}:{os.environ.get('PATH', '')}",
        "NO_COLOR": "1",
    }
    command = [sys.executable, "-m", "ansible.cli.playbook", "-i", str(tmp / "inventory.json")]
    done = subprocess.run(
        [*command, str(tmp / "daemon_json.yml")],
        capture_output=True,
        text=True,
        env=env,
        cwd=tmp,
        check=False,
    )
    # rc 2: the scenarios that must fail did.
    assert done.returncode == 2, done.stdout[-3000:] + done.stderr[-3000:]
    tasks: dict[str, dict[str, list[dict]]] = {name: {} for name in SCENARIOS}
    for play in json.loads(done.stdout)["plays"]:
        for task in play["tasks"]:
            name = task["task"]["name"].split(" : ", 1)[-1]
            for host, result in task["hosts"].items():
                tasks[host].setdefault(name, []).append(result)
    return {name: _outcome(tmp, name, tasks[name]) for name in SCENARIOS}


def the_failure(run) -> str:
    """The message the host failed with (the last failure)."""
    return run["failed"][-1]["msg"]


def test_every_run_reached_the_stand_in_service_manager_only(runs):
    for name, run in runs.items():
        assert run["probe"], name
        assert all("daemon_json" in call for call in run["service"]), name


def test_good_options_are_written_and_docker_restarted(runs):
    run = runs["good-first-write"]
    assert run["failed"] == []
    assert json.loads(run["daemon_json"]) == {
        "live-restore": True,
        "log-driver": "json-file",
        "log-opts": {"max-file": "3", "max-size": "100m"},
    }
    assert [call["state"] for call in run["service"]] == ["restarted"]


def test_a_numeric_log_opt_is_refused_before_anything_is_written(runs):
    run = runs["numeric-log-opt"]
    message = the_failure(run)
    assert message.startswith("numeric-log-opt: dockerd would not start with these daemon options")
    assert (
        "docker_engine_daemon_options: log-opts.max-file is an integer (3); dockerd wants every "
        'log-opts value as a string: "3"' in message
    )
    assert "was not written; nothing was changed" in message
    assert run["daemon_json"] == PREVIOUS
    assert run["service"] == []
    assert run["backups"] == []


def test_a_bad_value_from_another_role_names_that_role_s_variable(runs):
    message = the_failure(runs["bad-fragment"])
    assert "docker_engine_daemon_options_nvidia: default-runtime is 'nvidia'" in message
    assert runs["bad-fragment"]["daemon_json"] == PREVIOUS


def test_dockerd_validate_keeps_the_old_file(runs):
    run = runs["dockerd-refuses"]
    (failed,) = run["tasks"]["Write /etc/docker/daemon.json"]
    assert failed.get("failed") is True
    assert "unknown-to-dockerd" in failed["msg"] + failed.get("stderr", "")
    assert run["daemon_json"] == PREVIOUS
    assert run["service"] == []


def test_docker_that_does_not_start_gets_the_previous_file_back(runs):
    run = runs["start-fails"]
    message = the_failure(run)
    assert run["daemon_json"] == PREVIOUS
    # The restart with the new file failed; the one with the previous file did not.
    assert [call["state"] for call in run["service"]] == ["restarted", "restarted"]
    assert "fails-to-start" in run["service"][0]["daemon_json"]
    assert run["service"][1]["daemon_json"] == PREVIOUS
    assert message.startswith("start-fails: Docker did not start (Unable to restart service docker")
    assert "the previous file was put back from" in message
    assert "Docker runs again with it" in message
    assert "dockerd[4242]: failed to start daemon: stand-in refuses fails-to-start" in message
    assert len(run["backups"]) == 1


def test_docker_that_does_not_start_with_a_first_file_runs_without_one(runs):
    run = runs["start-fails-first-file"]
    message = the_failure(run)
    assert run["daemon_json"] is None
    assert run["service"][-1]["daemon_json"] is None
    assert "there was none before, the new one was removed" in message
    assert "Docker runs again with it" in message
