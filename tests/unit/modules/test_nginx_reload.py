"""Unit tests of the nginx_reload module and module_utils/nginx_proc.py.

The /proc readers run on a fake /proc; the module runs against a real nginx
(started here on loopback ports, as this user), including a reload that nginx
refuses after `nginx -t` passed (a listen port taken) and a drain that waits for
a request in flight.
"""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import threading
import time
import urllib.request
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest
from conftest import PLUGINS, load, run_main
from nginx_harness import NGINX, needs_nginx, scratch_conf

# Runs ansible, ansible-playbook or nginx: left out of `make check`.
pytestmark = pytest.mark.playbook

proc = load("ansible.module_utils.nginx_proc", PLUGINS / "module_utils" / "nginx_proc.py")
module = load("nginx_reload_under_test", PLUGINS / "modules" / "nginx_reload.py")


# --- /proc readers on a fake /proc -------------------------------------------------


def fake_process(root: Path, pid: int, ppid: int, title: str, state: str = "S") -> None:
    folder = root / str(pid)
    folder.mkdir(parents=True)
    comm = title.split(":", maxsplit=1)[0]
    # The command name may hold spaces and parentheses: the parser must cope.
    (folder / "stat").write_text(f"{pid} ({comm} (x) y) {state} {ppid} 1 1 0 -1 4194560 1\n")
    (folder / "cmdline").write_text(title.replace(" ", "\0") + "\0")


def test_parse_stat_reads_state_and_ppid_after_an_odd_command_name():
    assert proc.parse_stat("42 (a) b (c)) R 7 42 42 0 -1") == ("R", 7)


def test_generations_split_current_and_shutting_down_workers(tmp_path):
    fake_process(tmp_path, 10, 1, "nginx: master process /usr/sbin/nginx")
    fake_process(tmp_path, 11, 10, "nginx: worker process is shutting down")
    fake_process(tmp_path, 12, 10, "nginx: worker process")
    fake_process(tmp_path, 13, 10, "nginx: worker process", state="Z")
    fake_process(tmp_path, 20, 1, "nginx: worker process")
    (tmp_path / "self").mkdir()
    current, old = proc.generations(10, str(tmp_path))
    assert [w["pid"] for w in current] == [12]
    assert [w["pid"] for w in old] == [11]
    assert proc.new_workers(current, {11}) == current
    assert proc.new_workers(current, {11, 12}) == []


def test_is_alive_is_false_for_missing_and_zombie_processes(tmp_path):
    fake_process(tmp_path, 5, 1, "nginx: worker process", state="Z")
    fake_process(tmp_path, 6, 1, "nginx: worker process")
    assert not proc.is_alive(4, str(tmp_path))
    assert not proc.is_alive(5, str(tmp_path))
    assert proc.is_alive(6, str(tmp_path))


def test_read_master_pid_names_the_file_when_nginx_is_not_running(tmp_path):
    with pytest.raises(proc.NginxProcError, match=r"nginx.pid does not exist: nginx is not"):
        proc.read_master_pid(str(tmp_path / "nginx.pid"))
    (tmp_path / "nginx.pid").write_text("garbage\n")
    with pytest.raises(proc.NginxProcError, match="holds no pid"):
        proc.read_master_pid(str(tmp_path / "nginx.pid"))
    (tmp_path / "nginx.pid").write_text("123\n")
    assert proc.read_master_pid(str(tmp_path / "nginx.pid")) == 123


def test_container_master_pid_is_the_nginx_master_that_runs_the_container(tmp_path):
    fake_process(tmp_path, 40, 1, "nginx: master process nginx -g daemon off;")
    fake_process(tmp_path, 41, 1, "/bin/sh /docker-entrypoint.sh")
    assert proc.container_master_pid("40\n", "gw", str(tmp_path)) == 40
    not_running = r"container gw is not running \(docker inspect: '0'\)"
    with pytest.raises(proc.NginxProcError, match=not_running):
        proc.container_master_pid("0\n", "gw", str(tmp_path))
    with pytest.raises(proc.NginxProcError, match="container gw is not running"):
        proc.container_master_pid("", "gw", str(tmp_path))
    with pytest.raises(
        proc.NginxProcError,
        match=r"main process of container gw \(pid 41\) is '/bin/sh /docker-entrypoint.sh', "
        "not an nginx master",
    ):
        proc.container_master_pid("41", "gw", str(tmp_path))


def test_stale_files_are_those_modified_after_the_last_load(tmp_path):
    old, new = tmp_path / "old.conf", tmp_path / "new.conf"
    old.write_text("a")
    new.write_text("b")
    os.utime(old, (1000, 1000))
    os.utime(new, (3000, 3000))
    paths = [str(old), str(new), str(tmp_path / "missing.conf")]
    assert proc.stale_files(paths, 2000) == [str(new)]
    assert proc.stale_files(paths, None) == [str(old), str(new)]


# --- the module against a real nginx ------------------------------------------------


CONF = """\
    server {{
        listen 127.0.0.1:{port};
        location /slow {{ proxy_pass http://127.0.0.1:{backend}; }}
        location / {{ return 200 "{body}"; }}
    }}
{extra}"""


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


class SlowBackend(BaseHTTPRequestHandler):
    """Answers after `delay` seconds: a request in flight during a drain."""

    delay = 2.0

    def do_GET(self):
        time.sleep(self.delay)
        self.send_response(200)
        self.send_header("Content-Length", "2")
        self.end_headers()
        self.wfile.write(b"ok")

    def log_message(self, *args):
        pass


@pytest.fixture
def nginx(tmp_path):
    """A real nginx on a loopback port; yields a helper to rewrite its configuration."""
    port, backend = free_port(), ThreadingHTTPServer(("127.0.0.1", 0), SlowBackend)
    threading.Thread(target=backend.serve_forever, daemon=True).start()
    conf = tmp_path / "nginx.conf"

    def write(body="one", extra=""):
        conf.write_text(
            scratch_conf(
                tmp_path,
                CONF.format(port=port, backend=backend.server_address[1], body=body, extra=extra),
            )
        )

    write()
    subprocess.run([NGINX, "-c", str(conf), "-p", str(tmp_path)], check=True, capture_output=True)
    helper = {
        "conf": conf,
        "write": write,
        "url": f"http://127.0.0.1:{port}/",
        "pid_file": str(tmp_path / "nginx.pid"),
        "reload_command": [NGINX, "-c", str(conf), "-p", str(tmp_path), "-s", "reload"],
        "stamp": str(tmp_path / "state" / "loaded"),
    }
    wait_until(lambda: Path(helper["pid_file"]).exists())
    yield helper
    master = int(Path(helper["pid_file"]).read_text())
    os.kill(master, signal.SIGTERM)
    backend.shutdown()


def wait_until(predicate, timeout=5.0):
    deadline = time.monotonic() + timeout
    while not predicate():
        assert time.monotonic() < deadline, "timed out"
        time.sleep(0.05)


def get(url: str) -> str:
    with urllib.request.urlopen(url, timeout=10) as answer:
        return answer.read().decode()


def run_module(args: dict, capsys) -> dict:
    return run_main(module, args, capsys)


def module_args(helper, **extra):
    return {
        "reload_command": helper["reload_command"],
        "pid_file": helper["pid_file"],
        "config_files": [str(helper["conf"])],
        "stamp_file": helper["stamp"],
        **extra,
    }


@needs_nginx
def test_a_changed_file_is_reloaded_once_and_then_left_alone(nginx, capsys):
    nginx["write"](body="two")
    first = run_module(module_args(nginx), capsys)
    assert first["changed"] and first["reloaded"] and first["verified"]
    assert first["stale_files"] == [str(nginx["conf"])]
    wait_until(lambda: get(nginx["url"]) == "two")
    again = run_module(module_args(nginx), capsys)
    assert not again["changed"]
    assert again["stale_files"] == []


@needs_nginx
def test_check_mode_reports_the_reload_without_doing_it(nginx, capsys):
    run_module(module_args(nginx), capsys)
    nginx["write"](body="three")
    checked = run_module(module_args(nginx, _ansible_check_mode=True), capsys)
    assert checked["changed"] and checked["reloaded"]
    assert get(nginx["url"]) == "one"
    # The reload is still owed: the next real run does it.
    assert run_module(module_args(nginx), capsys)["reloaded"]
    wait_until(lambda: get(nginx["url"]) == "three")


@needs_nginx
def test_a_reload_that_nginx_refuses_fails_and_stays_owed(nginx, capsys):
    run_module(module_args(nginx), capsys)
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        busy = taken.getsockname()[1]
        # nginx -t passes (it binds nothing); the master cannot bind the port.
        nginx["write"](body="four", extra=f"    server {{ listen 127.0.0.1:{busy}; }}\n")
        subprocess.run(
            [NGINX, "-t", "-c", str(nginx["conf"]), "-p", str(nginx["conf"].parent)],
            check=True,
            capture_output=True,
        )
        failed = run_module(module_args(nginx, load_timeout=2), capsys)
    assert failed["failed"]
    assert "nginx did not load the new configuration" in failed["msg"]
    assert get(nginx["url"]) == "one"
    # Not recorded as loaded: the next run reloads again.
    nginx["write"](body="five")
    assert run_module(module_args(nginx), capsys)["reloaded"]
    wait_until(lambda: get(nginx["url"]) == "five")


@needs_nginx
def test_the_drain_waits_for_the_request_in_flight(nginx, capsys):
    run_module(module_args(nginx), capsys)
    answers = []
    slow = threading.Thread(target=lambda: answers.append(get(nginx["url"] + "slow")))
    slow.start()
    time.sleep(0.5)  # the request is now held by the current worker
    nginx["write"](body="six")
    started = time.monotonic()
    result = run_module(module_args(nginx, drain_timeout=10), capsys)
    waited = time.monotonic() - started
    slow.join()
    assert result["reloaded"]
    assert result["draining"] >= 1
    assert answers == ["ok"]  # the request in flight was not cut
    assert 1.0 <= waited < 5.0, waited
    assert result["drain_seconds"] >= 1.0


@needs_nginx
def test_the_drain_fails_when_requests_outlive_the_timeout(nginx, capsys):
    run_module(module_args(nginx), capsys)
    slow = threading.Thread(target=lambda: get(nginx["url"] + "slow"))
    slow.start()
    time.sleep(0.5)
    nginx["write"](body="seven")
    result = run_module(module_args(nginx, drain_timeout=1), capsys)
    slow.join()
    assert result["failed"]
    assert "still serve requests after 1 s" in result["msg"]


def fake_docker(folder: Path, script: str, monkeypatch) -> None:
    """Put a `docker` that runs ``script`` (sh) first on PATH."""
    folder.mkdir(exist_ok=True)
    docker = folder / "docker"
    docker.write_text(f"#!/bin/sh\n{script}\n")
    docker.chmod(0o755)
    monkeypatch.setenv("PATH", f"{folder}:{os.environ['PATH']}")


@needs_nginx
def test_with_a_container_the_load_is_proven_through_its_main_process(
    nginx, capsys, tmp_path, monkeypatch
):
    master = Path(nginx["pid_file"]).read_text().strip()
    # docker inspect --format {{.State.Pid}} answers the host pid of nginx's master.
    fake_docker(tmp_path / "bin", f'[ "$1" = inspect ] && echo {master}', monkeypatch)
    args = {**module_args(nginx), "container": "meeting-nginx-gateway"}
    del args["pid_file"]
    run_module(args, capsys)
    nginx["write"](body="container")
    result = run_module(args, capsys)
    assert result["reloaded"] and result["verified"]
    assert result["master_pid"] == int(master)
    wait_until(lambda: get(nginx["url"]) == "container")


def test_a_container_that_is_not_running_is_named(tmp_path, capsys, monkeypatch):
    fake_docker(tmp_path / "bin", "echo 'Error: No such object: gw' >&2; exit 1", monkeypatch)
    args = {"reload_command": ["true"], "container": "gw", "stamp_file": str(tmp_path / "loaded")}
    result = run_module(args, capsys)
    assert result["failed"]
    inspect = "docker inspect --format {{.State.Pid}} gw"
    assert result["msg"].startswith(f"container gw: {inspect} failed")
    assert "No such object: gw" in result["msg"]


def test_pid_file_and_container_exclude_each_other(tmp_path, capsys):
    args = {
        "reload_command": ["true"],
        "container": "gw",
        "pid_file": str(tmp_path / "nginx.pid"),
        "stamp_file": str(tmp_path / "loaded"),
    }
    result = run_module(args, capsys)
    assert result["failed"]
    assert result["msg"].startswith("pid_file and container exclude each other")
    # Empty counts as not given (a role passes both, one empty): the pid file is used.
    args["container"] = ""
    assert "nginx is not running" in run_module(args, capsys)["msg"]


def test_a_missing_pid_file_says_nginx_is_not_running(tmp_path, capsys):
    args = {
        "reload_command": ["true"],
        "pid_file": str(tmp_path / "nginx.pid"),
        "stamp_file": str(tmp_path / "loaded"),
    }
    result = run_module(args, capsys)
    assert result["failed"]
    assert "nginx is not running" in result["msg"]


def test_without_a_pid_file_the_reload_runs_but_is_not_verified(tmp_path, capsys):
    conf = tmp_path / "a.conf"
    conf.write_text("x")
    marker = tmp_path / "reloaded"
    args = {
        "reload_command": ["touch", str(marker)],
        "config_files": [str(conf)],
        "stamp_file": str(tmp_path / "state" / "loaded"),
    }
    result = run_module(args, capsys)
    assert result["reloaded"] and not result["verified"]
    assert marker.exists()
    assert not run_module(args, capsys)["changed"]


def test_a_failing_reload_command_is_reported_with_its_output(tmp_path, capsys):
    conf = tmp_path / "a.conf"
    conf.write_text("x")
    args = {
        "reload_command": ["sh", "-c", "echo cannot reload >&2; exit 3"],
        "config_files": [str(conf)],
        "stamp_file": str(tmp_path / "loaded"),
    }
    result = run_module(args, capsys)
    assert result["failed"]
    assert "exit status 3" in result["msg"] and "cannot reload" in result["msg"]
    assert not (tmp_path / "loaded").exists()
