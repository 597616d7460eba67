"""Read an nginx master's worker processes from /proc, to tell whether a reload took effect.

nginx loads a configuration by starting a new generation of worker processes; the
workers of the previous generation stop accepting connections, finish the requests
they hold, and exit (meanwhile their title reads ``nginx: worker process is shutting
down``). A reload that nginx refuses after ``nginx -t`` passed (a listen port taken,
a file the master cannot read) starts no new workers, and the old ones keep serving
the old configuration. So:

- a reload took effect when a worker that did not exist before the reload appears;
- the requests that were in flight before a reload are done when every worker of
  the previous generation has exited.

Pure functions over a ``/proc``-like folder, so that tests can give a fake one.
"""

from __future__ import annotations

import os

PROC = "/proc"
WORKER_TITLE = "nginx: worker process"
SHUTTING_DOWN_TITLE = "nginx: worker process is shutting down"


class NginxProcError(Exception):
    """nginx's master process cannot be found or read."""


def read_text(path):
    """Return the text of ``path``, or None when it does not exist or cannot be read."""
    try:
        with open(path, encoding="utf-8", errors="replace") as handle:
            return handle.read()
    except OSError:
        return None


def read_master_pid(pid_file):
    """Return the pid written in nginx's pid file.

    Raises NginxProcError when the file is missing or holds no pid.
    """
    text = read_text(pid_file)
    if text is None:
        raise NginxProcError(f"nginx's pid file {pid_file} does not exist: nginx is not running")
    text = text.strip()
    if not text.isdigit():
        raise NginxProcError(f"nginx's pid file {pid_file} holds no pid: {text[:40]!r}")
    return int(text)


def container_master_pid(inspect_output, container, proc=PROC):
    """Return the host pid of the nginx master that is the main process of a container.

    ``inspect_output`` is what ``docker inspect --format '{{.State.Pid}}' CONTAINER``
    printed. Raises NginxProcError when the container is not running or its main
    process is not an nginx master (nginx started under a shell or a supervisor,
    whose workers could not be told from other processes).
    """
    text = (inspect_output or "").strip()
    if not text.isdigit() or int(text) == 0:
        raise NginxProcError(
            f"container {container} is not running (docker inspect: {text[:80]!r})"
        )
    pid = int(text)
    title = process_title(pid, proc)
    if not title.startswith("nginx: master process"):
        raise NginxProcError(
            f"the main process of container {container} (pid {pid}) is {title[:80]!r}, "
            "not an nginx master: run nginx in the foreground as the container's command "
            "(nginx -g 'daemon off;'), or give no container and accept unproven reloads"
        )
    return pid


def parse_stat(text):
    """Return ``(state, ppid)`` from the text of ``/proc/PID/stat``.

    The command name (field 2) is in parentheses and may hold spaces and
    parentheses itself; the fields after the last ``)`` are fixed.
    """
    rest = text[text.rindex(")") + 2 :].split()
    return rest[0], int(rest[1])


def process_title(pid, proc=PROC):
    """Return the command line (title) of a process, arguments joined by spaces."""
    raw = read_text(os.path.join(proc, str(pid), "cmdline")) or ""
    return " ".join(part for part in raw.split("\0") if part).strip()


def children(master_pid, proc=PROC):
    """Return ``[{pid, title}]`` of the master's live child processes, by pid."""
    found = []
    for name in os.listdir(proc):
        if not name.isdigit():
            continue
        stat = read_text(os.path.join(proc, name, "stat"))
        if not stat:
            continue
        state, ppid = parse_stat(stat)
        if ppid != master_pid or state == "Z":
            continue
        found.append({"pid": int(name), "title": process_title(name, proc)})
    return sorted(found, key=lambda child: child["pid"])


def is_alive(pid, proc=PROC):
    """Tell whether a process exists (and is not a zombie)."""
    stat = read_text(os.path.join(proc, str(pid), "stat"))
    if not stat:
        return False
    return parse_stat(stat)[0] != "Z"


def generations(master_pid, proc=PROC):
    """Split the master's workers into ``(current, shutting_down)`` lists of children."""
    workers = children(master_pid, proc)
    current = [w for w in workers if w["title"] == WORKER_TITLE]
    old = [w for w in workers if w["title"] == SHUTTING_DOWN_TITLE]
    return current, old


def stale_files(paths, since):
    """Return the paths modified after ``since`` (seconds since the epoch).

    A path that does not exist is not stale (it is part of no configuration).
    ``since`` None (no load recorded yet) makes every existing path stale.
    """
    stale = []
    for path in paths:
        try:
            mtime = os.stat(path).st_mtime
        except OSError:
            continue
        if since is None or mtime > since:
            stale.append(path)
    return stale


def new_workers(current, before_pids):
    """Return the current workers that did not exist before a reload."""
    return [worker for worker in current if worker["pid"] not in before_pids]
