#!/usr/bin/python
"""Ansible module nginx_reload: reload nginx when needed, prove the load, wait for requests."""

from __future__ import annotations

import os
import time

from ansible.module_utils.basic import AnsibleModule
from ansible.module_utils.nginx_proc import (
    NginxProcError,
    container_master_pid,
    generations,
    is_alive,
    new_workers,
    read_master_pid,
    stale_files,
)

DOCUMENTATION = r"""
---
module: nginx_reload
short_description: Reload nginx when its files are newer than its last load, and prove the load
version_added: "0.2.0"
description:
  - Decides whether nginx must be reloaded, that is when O(reload) is true, or when a
    file of O(config_files) was modified after the last load this module recorded in
    O(stamp_file). A reload that did not happen in one run (the run stopped, the
    reload failed) is therefore done by the next run.
  - Runs O(reload_command) and, when O(pid_file) is given, checks that nginx really
    loaded the new configuration - a new generation of worker processes appears.
    A reload command can return 0 while nginx keeps its old configuration (for
    example when a new listen port is taken); the module then fails and does not
    record the load.
  - With O(drain_timeout), waits until the worker processes of earlier
    configurations have exited, that is until every request that was in flight when
    the configuration changed has finished. This is how a drained server is known to
    be idle.
options:
  reload_command:
    description: The argv that reloads nginx (no shell), for example C([systemctl, reload, nginx]).
    type: list
    elements: str
    required: true
  pid_file:
    description:
      - nginx's pid file, as seen on this host. Needed to prove the load and to wait
        for in-flight requests; empty when nginx runs in another PID namespace (a
        container), and then neither is done unless O(container) is given.
    type: str
    default: ""
  container:
    description:
      - The Docker container whose main process is nginx's master (nginx run in
        the foreground, as the official images and the original guide's gateway
        run it). Its pid on this host is read with C(docker inspect), so that the
        load is proven and a drain waits for the requests in flight, as with
        O(pid_file). Not together with a non-empty O(pid_file).
    type: str
    default: ""
  config_files:
    description: The configuration files whose changes need a reload.
    type: list
    elements: path
    default: []
  stamp_file:
    description: Where the module records the time of the last load it proved.
    type: path
    required: true
  reload:
    description: Reload even when no file is newer than the last recorded load.
    type: bool
    default: false
  load_timeout:
    description: Seconds to wait for the new worker processes after the reload.
    type: int
    default: 10
  drain_timeout:
    description:
      - Seconds to wait for the workers of earlier configurations to exit. V(0)
        does not wait. The module fails when some are still running after that.
    type: int
    default: 0
attributes:
  check_mode:
    support: full
    description: Reports whether a reload is needed; reloads and waits for nothing.
  diff_mode:
    support: none
  idempotent:
    support: full
    description: A reload is done only when O(reload) is true or a file is newer than the last load.
author:
  - AI fleet maintainers
"""

EXAMPLES = r"""
- name: Reload nginx when its files changed since the last load
  nginx_reload:
    reload_command: [systemctl, reload, nginx]
    pid_file: /run/nginx.pid
    config_files:
      - /etc/nginx/conf.d/ai_gateway.conf
      - /etc/nginx/ai-gateway.d/ai_inference_service.servers.local.conf
    stamp_file: /var/lib/ai-gateway/loaded

- name: After marking a server down, wait until its in-flight requests are done
  nginx_reload:
    reload_command: [systemctl, reload, nginx]
    pid_file: /run/nginx.pid
    config_files: [/etc/nginx/ai-gateway.d/ai_inference_service.servers.local.conf]
    stamp_file: /var/lib/ai-gateway/loaded
    drain_timeout: 300

- name: Reload nginx that runs in a container, and prove the load
  nginx_reload:
    reload_command: [docker, exec, meeting-nginx-gateway, nginx, -s, reload]
    container: meeting-nginx-gateway
    config_files: [/srv/meeting-system/nginx/conf.d/ai_inference_service.servers.local.conf]
    stamp_file: /var/lib/ai-gateway/loaded
"""

RETURN = r"""
reloaded:
  description: Whether nginx was reloaded (in check mode, whether it would be).
  returned: always
  type: bool
stale_files:
  description: The files modified after the last recorded load.
  returned: always
  type: list
  elements: str
verified:
  description: Whether nginx's worker processes could be read to prove the load.
  returned: always
  type: bool
master_pid:
  description:
    - nginx's master process (its pid on this host), or 0 without O(pid_file) or O(container).
  returned: always
  type: int
draining:
  description: Worker processes of earlier configurations found before the wait.
  returned: always
  type: int
drain_seconds:
  description: Seconds waited for them to exit.
  returned: always
  type: float
"""

POLL_SECONDS = 0.2


def stamp_time(path):
    """Return the modification time of the stamp file, or None when there is none."""
    try:
        return os.stat(path).st_mtime
    except OSError:
        return None


def write_stamp(path):
    """Record a proven load: create or touch the stamp file."""
    os.makedirs(os.path.dirname(path) or ".", mode=0o755, exist_ok=True)
    with open(path, "a", encoding="utf-8"):
        pass
    os.utime(path, None)


def wait_for(predicate, timeout):
    """Poll ``predicate`` until it is true or ``timeout`` seconds passed; return its last value."""
    deadline = time.monotonic() + timeout
    while True:
        value = predicate()
        if value or time.monotonic() >= deadline:
            return value
        time.sleep(POLL_SECONDS)


def reload_nginx(module, master):
    """Run the reload command; with a master pid, wait for a new worker generation.

    Returns the pids of the workers that served before the reload.
    """
    before = {worker["pid"] for worker in generations(master)[0]} if master else set()
    command = module.params["reload_command"]
    rc, out, err = module.run_command(command)
    if rc != 0:
        module.fail_json(
            msg=f"{' '.join(command)} failed (exit status {rc}): {(err or out).strip()}",
            reloaded=False,
        )
    if not master:
        return set()
    timeout = module.params["load_timeout"]
    if not wait_for(lambda: new_workers(generations(master)[0], before), timeout):
        module.fail_json(
            msg=(
                f"nginx did not load the new configuration: {' '.join(command)} returned 0, "
                f"but no new worker process started within {timeout} s, so nginx (master pid "
                f"{master}) still serves its previous configuration. nginx's error log says "
                "why (for example a listen port that is taken)."
            ),
            reloaded=False,
        )
    return before


def drain(module, master, previous):
    """Wait until the workers of earlier configurations have exited; return (count, seconds).

    ``previous`` are the workers that served before this run's reload: right after
    the reload they may not have taken the title of a shutting-down worker yet.
    """
    old = sorted(previous | {worker["pid"] for worker in generations(master)[1]})
    started = time.monotonic()
    timeout = module.params["drain_timeout"]
    left = wait_for(lambda: not [pid for pid in old if is_alive(pid)], timeout)
    waited = round(time.monotonic() - started, 1)
    if not left:
        running = [pid for pid in old if is_alive(pid)]
        module.fail_json(
            msg=(
                f"{len(running)} nginx worker process(es) of an earlier configuration (pids "
                f"{', '.join(map(str, running))}) still serve requests after {timeout} s; "
                "the requests in flight have not finished. Raise the timeout or look for "
                "requests that never end."
            ),
            draining=len(old),
            drain_seconds=waited,
        )
    return len(old), waited


def read_container_master(module, container):
    """Return the host pid of the nginx master that runs as the container's main process."""
    command = ["docker", "inspect", "--format", "{{.State.Pid}}", container]
    rc, out, err = module.run_command(command)
    if rc != 0:
        module.fail_json(
            msg=f"container {container}: {' '.join(command)} failed: {(err or out).strip()}"
        )
    try:
        return container_master_pid(out, container)
    except NginxProcError as error:
        module.fail_json(msg=str(error))
    return 0


def main():
    """Run the module."""
    module = AnsibleModule(
        argument_spec={
            "reload_command": {"type": "list", "elements": "str", "required": True},
            "pid_file": {"type": "str", "default": ""},
            "container": {"type": "str", "default": ""},
            "config_files": {"type": "list", "elements": "path", "default": []},
            "stamp_file": {"type": "path", "required": True},
            "reload": {"type": "bool", "default": False},
            "load_timeout": {"type": "int", "default": 10},
            "drain_timeout": {"type": "int", "default": 0},
        },
        supports_check_mode=True,
    )
    params = module.params
    if not params["reload_command"]:
        module.fail_json(msg="reload_command must be a non-empty argv list")
    if params["pid_file"] and params["container"]:
        module.fail_json(
            msg="pid_file and container exclude each other: nginx runs either on this host "
            f"(pid file {params['pid_file']}) or in container {params['container']}"
        )
    master = 0
    if params["container"]:
        master = read_container_master(module, params["container"])
    elif params["pid_file"]:
        try:
            master = read_master_pid(params["pid_file"])
        except NginxProcError as err:
            module.fail_json(msg=str(err))
        if not is_alive(master):
            module.fail_json(
                msg=f"nginx's pid file {params['pid_file']} names pid {master}, "
                "which is not running: nginx is down"
            )
    stale = stale_files(params["config_files"], stamp_time(params["stamp_file"]))
    needed = params["reload"] or bool(stale)
    result = {
        "changed": needed,
        "reloaded": needed,
        "stale_files": stale,
        "verified": bool(master),
        "master_pid": master,
        "draining": 0,
        "drain_seconds": 0.0,
    }
    if module.check_mode:
        module.exit_json(**result)
    previous = set()
    if needed:
        previous = reload_nginx(module, master)
        write_stamp(params["stamp_file"])
    if master and params["drain_timeout"] > 0:
        result["draining"], result["drain_seconds"] = drain(module, master, previous)
    module.exit_json(**result)


if __name__ == "__main__":
    main()
