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
  dockerd's last log lines;
- the keys of an existing file that no option sets and that the role did not
  write before (its record, ``daemon.json.managed-keys``) are kept with their
  values, or refused before anything changes; a key the role wrote and no
  option sets any more is removed; a file that is not a JSON object stops the
  host, untouched. A second run changes nothing, a check run writes nothing.

One ansible-playbook run, a host per scenario, with a ``--check --diff`` run of
one more at the same time, then a second run of two of them: about 75 s on 2
cores busy with other work.
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
PREVIOUS = '{\n  "live-restore": true,\n  "previous": "file"\n}\n'
RECORD = "daemon.json.managed-keys"
# The role's record of the keys it wrote to PREVIOUS, where a scenario has one.
PREVIOUS_RECORD = '["live-restore", "previous"]\n'
# Docker set up by hand: two keys no option sets, one (live-restore) that one does.
ADOPTED = (
    '{\n  "data-root": "/srv/docker",\n  "live-restore": false,\n'
    '  "registry-mirrors": ["https://mirror.example.internal"]\n}\n'
)
# Written by an earlier run whose options had debug: true (its record lists
# debug); since then someone added dns and a label that looks like Jinja.
WRITTEN_WITH_DEBUG = json.dumps(
    {
        "debug": True,
        "dns": ["10.0.0.2"],
        "labels": ["name={{.Name}}"],
        "live-restore": True,
        "log-driver": "json-file",
        "log-opts": {"max-file": "3", "max-size": "100m"},
    },
    indent=2,
    sort_keys=True,
)
RECORD_WITH_DEBUG = '["debug", "live-restore", "log-driver", "log-opts"]\n'
# A hand edit with a trailing comma.
NOT_JSON = '{\n  "data-root": "/srv/docker",\n}\n'
MANAGED = ["live-restore", "log-driver", "log-opts"]

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
    "start-fails": (
        {"docker_engine_daemon_options": {"fails-to-start": True}},
        (PREVIOUS, PREVIOUS_RECORD),
        False,
    ),
    "start-fails-first-file": (
        {"docker_engine_daemon_options": {"fails-to-start": True}},
        None,
        False,
    ),
    # A node adopted with its Docker: keys no option sets, no record yet.
    "adopt-keep": ({}, ADOPTED, True),
    "adopt-refuse": ({"docker_engine_daemon_foreign_keys": "refuse"}, ADOPTED, True),
    "adopt-check": ({}, ADOPTED, True),
    "record-drops-a-key": ({}, (WRITTEN_WITH_DEBUG, RECORD_WITH_DEBUG), True),
    "not-json": ({}, NOT_JSON, True),
    # The file's own runtimes give way to the options' (the toolkit's): its
    # default-runtime, kept, would name a runtime that is no longer there.
    "kept-key-breaks-dockerd": (
        {"docker_engine_daemon_options_nvidia": {"runtimes": {"nvidia": {"path": "/x"}}}},
        '{"default-runtime": "custom", "runtimes": {"custom": {"path": "/usr/bin/custom"}}}\n',
        True,
    ),
    "unknown-choice": ({"docker_engine_daemon_foreign_keys": "drop"}, ADOPTED, True),
}
# Run in check mode only (the main run leaves it out).
CHECK_ONLY = "adopt-check"
# Run a second time, after the main run.
RUN_TWICE = ("adopt-keep", "record-drops-a-key")


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
        "path": str(daemon_json),
        "record": (work / "etc-docker" / RECORD).read_text()
        if (work / "etc-docker" / RECORD).exists()
        else None,
        "backups": sorted(
            p.name for p in daemon_json.parent.glob("daemon.json.*") if p.name != RECORD
        ),
    }


def _start(harness, *options: str) -> subprocess.Popen:
    """Start the playbook with ``options``."""
    tmp, env = harness
    command = [sys.executable, "-m", "ansible.cli.playbook", "-i", str(tmp / "inventory.json")]
    return subprocess.Popen(
        [*command, *options, str(tmp / "daemon_json.yml")],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env=env,
        cwd=tmp,
    )


def _results(run: subprocess.Popen, returncode: int) -> dict[str, dict[str, list[dict]]]:
    """Wait for a run: {host: {task: [results, in order]}}."""
    stdout, stderr = run.communicate()
    assert run.returncode == returncode, stdout[-3000:] + stderr[-3000:]
    tasks: dict[str, dict[str, list[dict]]] = {name: {} for name in SCENARIOS}
    for play in json.loads(stdout)["plays"]:
        for task in play["tasks"]:
            name = task["task"]["name"].split(" : ", 1)[-1]
            for host, result in task["hosts"].items():
                tasks[host].setdefault(name, []).append(result)
    return tasks


@pytest.fixture(scope="module")
def harness(tmp_path_factory):
    """The stand-ins, the playbook and a host per scenario: (folder, environment)."""
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
    (tmp / "ansible.cfg").write_text(ANSIBLE_CFG.format(tmp=tmp))
    (tmp / "daemon_json.yml").write_text(PLAYBOOK)
    hosts = {}
    for name, (variables, previous, validates) in SCENARIOS.items():
        (tmp / name / "etc-docker").mkdir(parents=True)
        # The previous daemon.json, or (daemon.json, the role's record of its keys).
        before, record = previous if isinstance(previous, tuple) else (previous, None)
        if before is not None:
            (tmp / name / "etc-docker" / "daemon.json").write_text(before)
        if record is not None:
            (tmp / name / "etc-docker" / RECORD).write_text(record)
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
        # The repository's paths (ansible.cfg's), the stand-in modules first.
        **ansible_env(library=str(library)),
        "ANSIBLE_CONFIG": str(tmp / "ansible.cfg"),
        "PATH": f"{tmp / 'bin'}:{os.environ.get('PATH', '')}",
        "NO_COLOR": "1",
    }
    return tmp, env


@pytest.fixture(scope="module")
def both_runs(harness):
    """At once: the check-only host in check mode, every other host for real."""
    check = _start(harness, "--check", "--diff", "--limit", CHECK_ONLY)
    real = _start(harness, "--limit", f"all:!{CHECK_ONLY}")
    # rc 2: the scenarios that must fail did.
    tasks = _results(real, returncode=2)
    tasks[CHECK_ONLY] = _results(check, returncode=0)[CHECK_ONLY]
    return {name: _outcome(harness[0], name, tasks[name]) for name in SCENARIOS}


@pytest.fixture(scope="module")
def runs(both_runs):
    """One run, one host per scenario but the check-only one: {scenario: outcome}."""
    return {name: run for name, run in both_runs.items() if name != CHECK_ONLY}


@pytest.fixture(scope="module")
def check_run(both_runs):
    """The check-only host, run with --check --diff: its outcome."""
    return both_runs[CHECK_ONLY]


@pytest.fixture(scope="module")
def second_runs(harness, runs):
    """The hosts of RUN_TWICE run again: {scenario: outcome}."""
    tasks = _results(_start(harness, "--limit", ",".join(RUN_TWICE)), returncode=0)
    return {name: _outcome(harness[0], name, tasks[name]) for name in RUN_TWICE}


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
    # The new file dropped "previous" (recorded, no option sets it); the record
    # is put back with the file that has it.
    assert "previous" not in json.loads(run["service"][0]["daemon_json"])
    assert run["record"] == PREVIOUS_RECORD


def test_docker_that_does_not_start_with_a_first_file_runs_without_one(runs):
    run = runs["start-fails-first-file"]
    message = the_failure(run)
    assert run["daemon_json"] is None
    assert run["service"][-1]["daemon_json"] is None
    assert "there was none before, the new one was removed" in message
    assert "Docker runs again with it" in message
    assert run["record"] is None


def test_an_adopted_file_keeps_the_keys_no_option_sets(runs):
    run = runs["adopt-keep"]
    assert run["failed"] == []
    assert json.loads(run["daemon_json"]) == {
        "data-root": "/srv/docker",
        "registry-mirrors": ["https://mirror.example.internal"],
        # The options win for the keys they set.
        "live-restore": True,
        "log-driver": "json-file",
        "log-opts": {"max-file": "3", "max-size": "100m"},
    }
    # The record lists what the options set, not the kept keys.
    assert json.loads(run["record"]) == MANAGED
    (said,) = run["tasks"]["Say which keys of the current daemon.json are kept as they are"]
    assert said["msg"] == (
        f"adopt-keep: {run['path']} keeps keys that no daemon option sets, with their values: "
        "data-root, registry-mirrors (docker_engine_daemon_foreign_keys: keep; declare them in "
        "docker_engine_daemon_options for this project to manage them)."
    )
    assert [call["state"] for call in run["service"]] == ["restarted"]
    assert len(run["backups"]) == 1


def test_a_second_run_changes_nothing(runs, second_runs):
    for name in RUN_TWICE:
        run, again = runs[name], second_runs[name]
        assert again["failed"] == [], name
        (write,) = again["tasks"]["Write /etc/docker/daemon.json"]
        (record,) = again["tasks"]["Record the keys this role wrote to daemon.json"]
        assert write["changed"] is False, name
        assert record["changed"] is False, name
        assert (again["daemon_json"], again["record"]) == (run["daemon_json"], run["record"])
        assert again["service"] == run["service"], name
        assert again["backups"] == run["backups"], name


def test_refuse_stops_before_anything_changes(runs):
    run = runs["adopt-refuse"]
    message = the_failure(run)
    assert message == (
        f"adopt-refuse: {run['path']} has keys that no daemon option sets: data-root, "
        "registry-mirrors. The file was not written (docker_engine_daemon_foreign_keys: refuse). "
        "To go on, set docker_engine_daemon_foreign_keys: keep to keep them as they are, or "
        "declare them in docker_engine_daemon_options so that this project manages them."
    )
    assert run["daemon_json"] == ADOPTED
    assert run["record"] is None
    assert run["backups"] == []
    assert run["service"] == []


def test_a_key_the_role_wrote_and_no_option_sets_is_removed(runs):
    run = runs["record-drops-a-key"]
    assert run["failed"] == []
    written = json.loads(run["daemon_json"])
    assert "debug" not in written
    # Added by hand since: foreign, kept as they are (a Jinja-like value too).
    assert written["dns"] == ["10.0.0.2"]
    assert written["labels"] == ["name={{.Name}}"]
    assert sorted(written) == sorted(["dns", "labels", *MANAGED])
    assert json.loads(run["record"]) == MANAGED
    (said,) = run["tasks"]["Say which keys of the current daemon.json are kept as they are"]
    assert said["msg"].startswith(
        f"record-drops-a-key: {run['path']} keeps keys that no daemon option sets, with their "
        "values: dns, labels ("
    )


def test_a_file_that_is_not_a_json_object_is_left_alone(runs):
    run = runs["not-json"]
    message = the_failure(run)
    assert message.startswith(f"not-json: {run['path']} is not JSON (")
    assert "dockerd does not start with it" in message
    assert "The file was not written. Fix the file, or move it aside" in message
    assert run["daemon_json"] == NOT_JSON
    assert run["record"] is None
    assert run["backups"] == []
    assert run["service"] == []


def test_kept_keys_are_checked_with_the_options(runs):
    run = runs["kept-key-breaks-dockerd"]
    message = the_failure(run)
    assert message.startswith(
        "kept-key-breaks-dockerd: dockerd would not start with the keys kept from "
    )
    assert (
        f"keys kept from {run['path']}: default-runtime is 'custom', which no runtimes entry "
        "defines" in message
    )
    assert "was not written; nothing was changed" in message
    assert run["record"] is None
    assert run["service"] == []


def test_an_unknown_choice_is_refused_before_anything_is_read(runs):
    run = runs["unknown-choice"]
    message = the_failure(run)
    assert "docker_engine_daemon_foreign_keys" in message
    assert "keep, refuse" in message
    assert run["daemon_json"] == ADOPTED
    assert run["record"] is None
    assert "Write /etc/docker/daemon.json" not in run["tasks"]


def test_check_mode_reads_shows_and_writes_nothing(check_run):
    run = check_run
    assert run["failed"] == []
    (write,) = run["tasks"]["Write /etc/docker/daemon.json"]
    assert write["changed"] is True
    assert '"data-root": "/srv/docker"' in write["diff"][0]["after"]
    assert '"log-driver": "json-file"' in write["diff"][0]["after"]
    (said,) = run["tasks"]["Say which keys of the current daemon.json are kept as they are"]
    assert "data-root, registry-mirrors" in said["msg"]
    assert run["daemon_json"] == ADOPTED
    assert run["record"] is None
    assert run["backups"] == []
    # The handler's restart, in check mode, saw the file as it was.
    assert all(call["daemon_json"] == ADOPTED for call in run["service"])
