"""A real nginx for the unit tests that need one: the binary, and a throwaway nginx.conf."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest

#: nginx's temporary folders, each kept in the test's own folder.
TEMP_PATHS = ("client_body", "proxy", "fastcgi", "uwsgi", "scgi")


def nginx_binary() -> str | None:
    """Return the path of nginx (on PATH, or where distributions put it), or None."""
    for candidate in (shutil.which("nginx"), "/usr/sbin/nginx", "/usr/local/sbin/nginx"):
        if candidate and Path(candidate).is_file():
            return candidate
    return None


NGINX = nginx_binary()
needs_nginx = pytest.mark.skipif(NGINX is None, reason="nginx is not installed")


def scratch_conf(folder, http: str) -> str:
    """Return an nginx.conf that keeps its pid, logs and temporary files in ``folder``.

    ``http`` goes inside its ``http`` block (upstreams, servers), indented as given.
    """
    temp = "".join(f"    {name}_temp_path {folder}/{name};\n" for name in TEMP_PATHS)
    return (
        "worker_processes 1;\n"
        f"pid {folder}/nginx.pid;\n"
        f"error_log {folder}/error.log;\n"
        "events { worker_connections 64; }\n"
        "http {\n"
        "    access_log off;\n"
        f"{temp}{http}"
        "}\n"
    )
