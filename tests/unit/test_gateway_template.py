"""The gateway's nginx configuration (roles/ai_gateway/templates/ai_gateway.conf.j2).

Rendered by Ansible's own template module with the role's defaults and vars (as the
role renders it), for representative variable sets, then:

1. a real ``nginx -t`` accepts every rendering (TLS with a certificate made here by
   openssl);
2. a real nginx runs some of them on free ports, as this user, in front of a stand-in
   node on loopback that echoes the request headers it received, and the edge behaves:
   no nginx version, X-Forwarded-For not spoofable, X-Request-ID sanitised, the deep
   health check only for its allow-list, rate and connection limits that refuse at once
   with 429, max_conns per node, HTTP to HTTPS redirect with HSTS, no session tickets.

Skipped, with the reason, where nginx (or openssl, for TLS) is not installed.
"""

from __future__ import annotations

import http.client
import json
import os
import re
import selectors
import shutil
import signal
import socket
import ssl
import subprocess
import sys
import tempfile
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest
import yaml
from nginx_harness import NGINX
from plugin_loader import ROOT, ansible_env, load_plugin

ROLE = ROOT / "roles" / "ai_gateway"
TEMPLATE = ROLE / "templates" / "ai_gateway.conf.j2"

CIPHERS = [
    "ECDHE-ECDSA-AES128-GCM-SHA256",
    "ECDHE-RSA-AES128-GCM-SHA256",
    "ECDHE-ECDSA-AES256-GCM-SHA384",
    "ECDHE-RSA-AES256-GCM-SHA384",
    "ECDHE-ECDSA-CHACHA20-POLY1305",
    "ECDHE-RSA-CHACHA20-POLY1305",
]


upstream = load_plugin("filter", "ai_upstream")


OPENSSL = shutil.which("openssl")
# Runs ansible-playbook and nginx: left out of `make check`.
pytestmark = [
    pytest.mark.playbook,
    pytest.mark.skipif(
        NGINX is None, reason="nginx is not installed; install it to check the gateway template"
    ),
]
needs_openssl = pytest.mark.skipif(
    OPENSSL is None, reason="openssl is not installed; it makes the TLS test certificate"
)


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


# --- the stand-in node: echoes what the gateway sent it ------------------------------


class EchoNode(BaseHTTPRequestHandler):
    """Answers every GET with the path, headers and peer it saw; /slow after a second."""

    protocol_version = "HTTP/1.1"
    # One write per answer (flushed by the server): no delayed-ACK stalls.
    wbufsize = -1

    def do_GET(self):
        if self.path.endswith("/slow"):
            time.sleep(1.0)
        body = json.dumps(
            {"path": self.path, "headers": dict(self.headers), "peer": self.client_address[0]}
        ).encode()
        self.send_response(200)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, *args):
        pass


class EchoServer(ThreadingHTTPServer):
    """A thread per connection, and room for a burst of connections at once."""

    daemon_threads = True
    request_queue_size = 128


@pytest.fixture(scope="module")
def node():
    server = EchoServer(("127.0.0.1", 0), EchoNode)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    yield server.server_address[1]
    server.shutdown()


# --- the variable sets, rendered by Ansible ---------------------------------------------


def variable_sets(workdir: Path, node_port: int = 8800) -> dict[str, dict]:
    """Each set's variables over the role's defaults (ports chosen free for the runs)."""
    tls = {
        "ai_gateway_tls_enabled": True,
        "ai_gateway_tls_certificate_path": str(workdir / "tls" / "gateway.crt"),
        "ai_gateway_tls_certificate_key_path": str(workdir / "tls" / "gateway.key"),
    }
    local = {"ai_gateway_listen_ipv6": False, "ai_gateway_conf_dir": str(workdir / "servers")}
    return {
        # The role's defaults as they are (ports 80 and [::]:80; nginx -t binds nothing).
        "defaults": {"ai_gateway_conf_dir": str(workdir / "servers")},
        "plain": {**local, "ai_gateway_http_port": free_port()},
        "tls": {
            **local,
            **tls,
            "ai_gateway_http_port": free_port(),
            "ai_gateway_https_port": free_port(),
        },
        "tls_443": {**tls, "ai_gateway_conf_dir": str(workdir / "servers")},
        "tls_only": {
            **local,
            **tls,
            "ai_gateway_http_enabled": False,
            "ai_gateway_https_port": free_port(),
            "ai_gateway_hsts_max_age": 0,
        },
        "tls_no_redirect": {
            **local,
            **tls,
            "ai_gateway_http_redirect": False,
            "ai_gateway_http_port": free_port(),
            "ai_gateway_https_port": free_port(),
            "ai_gateway_hsts_max_age": 600,
        },
        "trusted": {
            **local,
            "ai_gateway_http_port": free_port(),
            "ai_gateway_trusted_proxies": ["127.0.0.1", "10.0.0.0/8", "2001:db8::/32"],
            "ai_gateway_deep_health_allow": ["192.0.2.0/24", "2001:db8:1::/48"],
        },
        "limits_off": {
            **local,
            "ai_gateway_http_port": free_port(),
            "ai_gateway_limit_req_enabled": False,
            "ai_gateway_limit_conn_per_ip": 0,
            "ai_gateway_upstream_zone_size": "",
            "ai_gateway_load_balancing": "round_robin",
            "ai_gateway_default_server": False,
            "ai_gateway_server_names": ["gw.example"],
            "ai_gateway_deep_health_allow": [],
        },
        "queued": {
            **local,
            "ai_gateway_http_port": free_port(),
            "ai_gateway_limit_req_nodelay": False,
            "ai_gateway_limit_conn_per_ip": 0,
        },
        "conn_limit": {
            **local,
            "ai_gateway_http_port": free_port(),
            "ai_gateway_limit_req_enabled": False,
            "ai_gateway_limit_conn_per_ip": 2,
        },
        # The request metrics: the per-request log (node names from the upstream
        # entries, as nodes.yml builds them) and stub_status on loopback.
        "metrics": {
            **local,
            "ai_gateway_http_port": free_port(),
            "ai_gateway_metrics_enabled": True,
            "ai_gateway_metrics_log": str(workdir / "ai-gateway-metrics.log"),
            "ai_gateway_metrics_status_port": free_port(),
            "__ai_gateway_entries": [
                {"host_name": "gpu-1", "address": "127.0.0.1", "port": node_port},
                {"host_name": "gpu-2", "address": "2001:db8::2", "port": 8800},
            ],
        },
    }


def render_all(workdir: Path, sets: dict[str, dict]) -> dict[str, str]:
    """Render the template once per variable set, over the role's defaults and vars.

    One play, Ansible's own templating (the ``template`` lookup, which renders as the
    ``template`` module does: same engine, ``trim_blocks``), each set's variables on
    top of the role's, the results written once as JSON.
    """
    out = workdir / "rendered.json"
    play = {
        "name": "Render the gateway configuration with each variable set",
        "hosts": "localhost",
        "connection": "local",
        "gather_facts": False,
        "vars_files": [str(ROLE / "defaults" / "main.yml"), str(ROLE / "vars" / "main.yml")],
        "vars": {"variable_sets": sets},
        "tasks": [
            {
                "name": "Render each set",
                "ansible.builtin.set_fact": {
                    "rendered": (
                        "{{ rendered | default({}) | combine({item.key: "
                        f"lookup('ansible.builtin.template', '{TEMPLATE}', "
                        "template_vars=item.value)}) }}"
                    )
                },
                "loop": "{{ variable_sets | dict2items }}",
            },
            {
                "name": "Write the renderings",
                "ansible.builtin.copy": {
                    "content": "{{ rendered | to_json }}",
                    "dest": str(out),
                    "mode": "0644",
                },
            },
        ],
    }
    playbook = workdir / "render.yml"
    playbook.write_text(yaml.safe_dump([play], sort_keys=False))
    env = {
        **os.environ,
        "ANSIBLE_CACHE_PLUGIN": "memory",
        "ANSIBLE_NOCOLOR": "1",
        **ansible_env(),
    }
    command = [
        sys.executable,
        "-m",
        "ansible.cli.playbook",
        "-i",
        "localhost,",
        "-e",
        f"ansible_python_interpreter={sys.executable}",
        str(playbook),
    ]
    result = subprocess.run(
        command, capture_output=True, text=True, cwd=ROOT, env=env, timeout=300, check=False
    )
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    renderings = json.loads(out.read_text())
    for name, text in renderings.items():
        (workdir / f"{name}.conf").write_text(text)
    return renderings


def make_certificate(folder: Path) -> None:
    folder.mkdir(parents=True, exist_ok=True)
    subprocess.run(
        [OPENSSL, "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "2",
         "-subj", "/CN=gateway.test", "-keyout", str(folder / "gateway.key"),
         "-out", str(folder / "gateway.crt")],
        check=True, capture_output=True,
    )  # fmt: skip


WRAPPER = """\
worker_processes 1;
pid {d}/nginx.pid;
error_log {d}/error.log;
events {{ worker_connections 512; }}
http {{
    # As the distribution's nginx.conf has it: one access log for every server.
    access_log {d}/access.log;
    client_body_temp_path {d}/client_body;
    proxy_temp_path {d}/proxy;
    fastcgi_temp_path {d}/fastcgi;
    uwsgi_temp_path {d}/uwsgi;
    scgi_temp_path {d}/scgi;
    include {conf};
}}
"""


def _nginx_version():
    result = subprocess.run([NGINX, "-v"], capture_output=True, text=True, check=False)
    found = re.search(r"nginx/([0-9]+)\.([0-9]+)\.([0-9]+)", result.stderr + result.stdout)
    return tuple(int(part) for part in found.groups()) if found else (0, 0, 0)


class Gateway:
    """One rendered configuration inside a minimal nginx.conf of its own."""

    def __init__(self, workdir: Path, name: str, variables: dict):
        """Write the nginx.conf that includes the rendering of set ``name``."""
        self.name = name
        self.vars = variables
        self.dir = workdir / f"run-{name}"
        self.dir.mkdir(exist_ok=True)
        self.conf = self.dir / "nginx.conf"
        self.conf.write_text(WRAPPER.format(d=self.dir, conf=workdir / f"{name}.conf"))

    def argv(self, *extra: str) -> list[str]:
        argv = [NGINX, "-c", str(self.conf), "-p", f"{self.dir}/"]
        if _nginx_version() >= (1, 19, 5):
            argv += ["-e", str(self.dir / "error.log")]
        return argv + list(extra)

    def test(self) -> tuple[int, str]:
        result = subprocess.run(self.argv("-t"), capture_output=True, text=True, check=False)
        return result.returncode, result.stderr + result.stdout

    def start(self) -> None:
        subprocess.run(self.argv(), check=True, capture_output=True)
        pid_file = self.dir / "nginx.pid"
        deadline = time.monotonic() + 5
        while not pid_file.exists():
            assert time.monotonic() < deadline, f"nginx for {self.name} did not start"
            time.sleep(0.05)
        port = self.vars.get("ai_gateway_http_port") or self.vars.get("ai_gateway_https_port")
        deadline = time.monotonic() + 5
        while True:
            try:
                socket.create_connection(("127.0.0.1", port), timeout=1).close()
                break
            except OSError:
                assert time.monotonic() < deadline, f"nginx for {self.name} does not listen"
                time.sleep(0.05)

    def stop(self) -> None:
        pid_file = self.dir / "nginx.pid"
        if pid_file.exists():
            master = int(pid_file.read_text())
            os.kill(master, signal.SIGTERM)
            deadline = time.monotonic() + 5
            while pid_file.exists() and time.monotonic() < deadline:
                time.sleep(0.05)


@pytest.fixture(scope="module")
def workdir():
    # Short: nginx's paths stay readable in messages.
    folder = Path(tempfile.mkdtemp(prefix="aigw-"))
    yield folder
    shutil.rmtree(folder, ignore_errors=True)


@pytest.fixture(scope="module")
def sets(workdir, node):
    return variable_sets(workdir, node)


@pytest.fixture(scope="module")
def rendered(workdir, sets, node):
    if OPENSSL:
        make_certificate(workdir / "tls")
    servers = workdir / "servers"
    servers.mkdir()
    entries = [{"host_name": "gpu-1", "address": "127.0.0.1", "port": node}]
    text = upstream.ai_upstream_conf(entries, allow_loopback=True)
    (servers / "ai_inference_service.servers.local.conf").write_text(text)
    return render_all(workdir, sets)


@pytest.fixture
def run(workdir, sets, rendered):
    """Start nginx with one rendered set; stopped after the test."""
    started = []

    def start(name: str) -> Gateway:
        gateway = Gateway(workdir, name, sets[name])
        started.append(gateway)
        gateway.start()
        return gateway

    yield start
    for gateway in started:
        gateway.stop()


# --- HTTP helpers -------------------------------------------------------------------------


def request(port, path, headers=None, tls=False):
    """One GET on its own connection; return (status, headers, body text)."""
    if tls:
        # The gateway's certificate is a self-signed one made for the test.
        context = ssl._create_unverified_context()
        conn = http.client.HTTPSConnection("127.0.0.1", port, timeout=10, context=context)
    else:
        conn = http.client.HTTPConnection("127.0.0.1", port, timeout=10)
    try:
        conn.request("GET", path, headers=headers or {})
        answer = conn.getresponse()
        return answer.status, dict(answer.getheaders()), answer.read().decode()
    finally:
        conn.close()


def echoed(port, path="/api/v1/ai/info", headers=None, **kwargs) -> dict:
    """What the stand-in node received for one request through the gateway."""
    status, _, body = request(port, path, headers, **kwargs)
    assert status == 200, (status, body)
    return json.loads(body)


def burst(port, path, count, hold=0.0):
    """Send ``count`` requests at once, each on its own connection.

    Returns ``[(status, seconds from sending to the status line)]``.
    """
    raw = f"GET {path} HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close\r\n\r\n".encode()
    sockets = [socket.create_connection(("127.0.0.1", port), timeout=10) for _ in range(count)]
    selector = selectors.DefaultSelector()
    sent = {}
    for sock in sockets:
        sock.sendall(raw)
        sent[sock] = time.monotonic()
        sock.setblocking(False)
        selector.register(sock, selectors.EVENT_READ, b"")
    results = {}
    deadline = time.monotonic() + 15 + hold
    while len(results) < count and time.monotonic() < deadline:
        for key, _ in selector.select(timeout=0.5):
            sock, data = key.fileobj, key.data + key.fileobj.recv(4096)
            selector.modify(sock, selectors.EVENT_READ, data)
            if b"\r\n" in data and sock not in results:
                status = int(data.split(b" ", 2)[1])
                results[sock] = (status, time.monotonic() - sent[sock])
                selector.unregister(sock)
    for sock in sockets:
        sock.close()
    assert len(results) == count, f"{count - len(results)} requests got no answer"
    return [results[sock] for sock in sockets]


def no_version(headers, body):
    """Assert that neither the Server header nor an error page shows nginx's version."""
    assert headers.get("Server") in ("nginx", None), headers
    assert not re.search(r"nginx/[0-9]", body), body


# --- nginx -t on every rendering ----------------------------------------------------------


@pytest.mark.parametrize(
    "name",
    [
        "defaults",
        "plain",
        "tls",
        "tls_443",
        "tls_only",
        "tls_no_redirect",
        "trusted",
        "limits_off",
        "queued",
        "conn_limit",
        "metrics",
    ],
)
def test_nginx_accepts_the_rendering(name, workdir, sets, rendered):
    if sets[name].get("ai_gateway_tls_enabled") and OPENSSL is None:
        pytest.skip("openssl is not installed; it makes the TLS test certificate")
    returncode, output = Gateway(workdir, name, sets[name]).test()
    assert returncode == 0, f"{name}:\n{output}\n{rendered[name]}"
    assert "test is successful" in output


def test_every_server_hides_the_nginx_version(rendered):
    for name, text in rendered.items():
        servers = text.count("\nserver {")
        assert servers >= 1
        assert text.count("server_tokens off;") == servers, name


def test_defaults_refuse_spoofed_client_addresses_and_bad_request_ids(rendered):
    text = rendered["defaults"]
    assert text.count("proxy_set_header X-Forwarded-For $remote_addr;") == 3
    assert "$proxy_add_x_forwarded_for" not in text
    assert "set_real_ip_from" not in text
    assert '"~^[A-Za-z0-9._:-]{1,64}$"  $http_x_request_id;' in text
    assert "limit_req zone=ai_gateway_per_ip burst=10 nodelay;" in text
    assert "limit_conn ai_gateway_conn_per_ip 32;" in text
    assert "limit_conn_status 429;" in text


def test_deep_health_is_an_exact_location_behind_its_allow_list(rendered):
    block = re.search(r"location = /api/v1/ai/health \{(.*?)\n    \}", rendered["defaults"], re.S)
    assert block, rendered["defaults"]
    lines = [line.strip() for line in block.group(1).strip().splitlines()]
    assert lines[:3] == ["allow 127.0.0.1;", "allow ::1;", "deny all;"]
    assert "proxy_pass http://ai_inference_service;" in lines
    nobody = re.search(
        r"location = /api/v1/ai/health \{(.*?)\n    \}", rendered["limits_off"], re.S
    )
    assert nobody.group(1).split("proxy_pass")[0].split() == ["deny", "all;"]


def test_trusted_proxies_pass_the_chain(rendered):
    text = rendered["trusted"]
    for proxy in ("127.0.0.1", "10.0.0.0/8", "2001:db8::/32"):
        assert f"set_real_ip_from {proxy};" in text
    assert "real_ip_header X-Forwarded-For;" in text
    assert "real_ip_recursive on;" in text
    assert text.count("proxy_set_header X-Forwarded-For $proxy_add_x_forwarded_for;") == 3


def test_tls_settings(rendered):
    text = rendered["tls"]
    assert f"ssl_ciphers {':'.join(CIPHERS)};" in text
    assert "ssl_protocols TLSv1.2 TLSv1.3;" in text
    assert "ssl_prefer_server_ciphers off;" in text
    assert "ssl_session_tickets off;" in text
    assert 'on      "max-age=31536000";' in text
    assert "add_header Strict-Transport-Security $ai_gateway_hsts always;" in text


def test_redirect_omits_port_443_and_names_another_port(rendered, sets):
    assert "return 301 https://$host$request_uri;" in rendered["tls_443"]
    port = sets["tls"]["ai_gateway_https_port"]
    assert f"return 301 https://$host:{port}$request_uri;" in rendered["tls"]


def test_no_hsts_header_when_max_age_is_0_and_no_redirect_without_http(rendered):
    assert "Strict-Transport-Security" not in rendered["tls_only"]
    assert "return 301" not in rendered["tls_only"]
    assert "Strict-Transport-Security" not in rendered["plain"]
    assert "return 301" not in rendered["tls_no_redirect"]


def test_limits_off_render_no_limits(rendered):
    text = rendered["limits_off"]
    for directive in ("limit_req", "limit_conn", "zone ai_inference_service", "least_conn"):
        assert directive not in text
    assert "server_name gw.example;" in text
    assert "default_server" not in text


# --- a real nginx in front of the stand-in node --------------------------------------------


def test_responses_carry_no_nginx_version(run, sets):
    port = sets["plain"]["ai_gateway_http_port"]
    run("plain")
    for path, expected in (("/health", 200), ("/nothing-here", 404), ("/api/v1/ai/info", 200)):
        status, headers, body = request(port, path)
        assert status == expected, (path, status, body)
        no_version(headers, body)


def test_a_client_cannot_claim_an_address(run, sets):
    port = sets["plain"]["ai_gateway_http_port"]
    run("plain")
    seen = echoed(port, headers={"X-Forwarded-For": "1.2.3.4", "X-Real-IP": "1.2.3.4"})
    assert seen["headers"]["X-Forwarded-For"] == "127.0.0.1"
    assert seen["headers"]["X-Real-IP"] == "127.0.0.1"


@pytest.mark.parametrize(
    "good", ["gw-test-1", "a", "x" * 64, "0f8c6c1e-7b1a-4c55-9d2e-1f2a3b4c5d6e", "job:7.a_b"]
)
def test_a_good_request_id_reaches_the_node(run, sets, good):
    port = sets["plain"]["ai_gateway_http_port"]
    run("plain")
    assert echoed(port, headers={"X-Request-ID": good})["headers"]["X-Request-ID"] == good


@pytest.mark.parametrize(
    "bad", ["x" * 65, "y" * 200, "with space", 'quote"d', "semi;colon", "new%0Aline", "<script>"]
)
def test_a_bad_request_id_is_replaced(run, sets, bad):
    port = sets["plain"]["ai_gateway_http_port"]
    run("plain")
    given = echoed(port, headers={"X-Request-ID": bad})["headers"]["X-Request-ID"]
    assert re.fullmatch(r"[0-9a-f]{32}", given), given


def test_deep_health_answers_an_allowed_client(run, sets):
    port = sets["plain"]["ai_gateway_http_port"]
    run("plain")
    assert echoed(port, "/api/v1/ai/health")["path"] == "/api/v1/ai/health"
    # Other spellings of the same path are the same location.
    for path in ("/api/v1/ai//health", "/api/v1/ai/./health", "/api/v1/ai/%68ealth?x=1"):
        assert request(port, path)[0] == 200, path


def test_deep_health_refuses_a_client_not_allowed(run, sets):
    port = sets["trusted"]["ai_gateway_http_port"]
    run("trusted")
    for path in ("/api/v1/ai/health", "/api/v1/ai//health", "/api/v1/ai/%68ealth"):
        status, headers, body = request(port, path)
        assert status == 403, (path, status, body)
        no_version(headers, body)
    # The rest of the API is not affected.
    assert request(port, "/api/v1/ai/info")[0] == 200


def test_trusted_proxy_gives_the_client_address(run, sets):
    port = sets["trusted"]["ai_gateway_http_port"]
    run("trusted")
    # From a trusted proxy (127.0.0.1), through another trusted one (10.1.2.3).
    seen = echoed(port, headers={"X-Forwarded-For": "203.0.113.9, 10.1.2.3"})
    assert seen["headers"]["X-Real-IP"] == "203.0.113.9"
    chain = [part.strip() for part in seen["headers"]["X-Forwarded-For"].split(",")]
    assert chain[0] == "203.0.113.9"
    assert chain[-1] == "203.0.113.9"
    # The deep check's allow-list applies to that client.
    allowed = echoed(port, "/api/v1/ai/health", headers={"X-Forwarded-For": "192.0.2.44"})
    assert allowed["headers"]["X-Real-IP"] == "192.0.2.44"
    status = request(port, "/api/v1/ai/health", headers={"X-Forwarded-For": "198.51.100.1"})[0]
    assert status == 403


def test_a_burst_beyond_rate_and_burst_is_refused_at_once(run, sets):
    port = sets["plain"]["ai_gateway_http_port"]
    run("plain")
    # Defaults: 50 r/s, burst 10, nodelay; 32 requests in progress per address.
    results = burst(port, "/api/v1/ai/info", 30)
    accepted = sorted(seconds for status, seconds in results if status == 200)
    refused = sorted(seconds for status, seconds in results if status == 429)
    assert len(accepted) + len(refused) == 30, results
    assert 11 <= len(accepted) <= 14, results
    # Refused at once, not queued; the accepted burst is not held back either (queued,
    # its last request would wait 10 / 50 r/s = 0.2 s: see the next test).
    assert refused[len(refused) // 2] < 0.05, refused
    assert refused[-1] < 0.25, refused
    assert accepted[-1] < 0.15, accepted


def test_without_nodelay_the_burst_waits_for_its_turn(run, sets):
    port = sets["queued"]["ai_gateway_http_port"]
    run("queued")
    results = burst(port, "/api/v1/ai/info", 20)
    accepted = sorted(seconds for status, seconds in results if status == 200)
    refused = [seconds for status, seconds in results if status == 429]
    assert refused, results
    # The 10 requests of the burst leave at 50 r/s: the last one waited about 0.2 s.
    assert accepted[-1] >= 0.15, accepted


def test_limits_off_refuse_nothing(run, sets):
    port = sets["limits_off"]["ai_gateway_http_port"]
    run("limits_off")
    # 19 at once from one address: 50 r/s with a burst of 10 would refuse some. Below
    # the node's max_conns (20), every one is served.
    results = burst(port, "/api/v1/ai/info", 19)
    assert {status for status, _ in results} == {200}, results


def test_connections_per_client_are_capped(run, sets):
    port = sets["conn_limit"]["ai_gateway_http_port"]
    run("conn_limit")
    results = burst(port, "/api/v1/ai/slow", 4, hold=1.0)
    refused = [seconds for status, seconds in results if status == 429]
    assert sorted(status for status, _ in results) == [200, 200, 429, 429], results
    assert max(refused) < 0.25, refused


def test_max_conns_caps_the_connections_to_a_node(workdir, sets, run, node):
    include = workdir / "servers" / "ai_inference_service.servers.local.conf"
    before = include.read_text()
    entries = [{"host_name": "gpu-1", "address": "127.0.0.1", "port": node, "max_conns": 1}]
    include.write_text(upstream.ai_upstream_conf(entries, allow_loopback=True))
    try:
        port = sets["limits_off"]["ai_gateway_http_port"]
        run("limits_off")
        results = burst(port, "/api/v1/ai/slow", 3, hold=1.0)
    finally:
        include.write_text(before)
    statuses = sorted(status for status, _ in results)
    # One request holds the node's only slot; the others find no node free: 502 at once.
    assert statuses == [200, 502, 502], results
    assert max(seconds for status, seconds in results if status == 502) < 0.25, results


@needs_openssl
def test_http_redirects_to_https_except_the_health_path(run, sets):
    http_port = sets["tls"]["ai_gateway_http_port"]
    https_port = sets["tls"]["ai_gateway_https_port"]
    run("tls")
    status, headers, body = request(http_port, "/api/v1/ai/info?x=1")
    assert status == 301, (status, body)
    assert headers["Location"] == f"https://127.0.0.1:{https_port}/api/v1/ai/info?x=1"
    assert "Strict-Transport-Security" not in headers
    no_version(headers, body)
    status, headers, body = request(http_port, "/health")
    assert (status, json.loads(body)) == (200, {"status": "ok", "service": "ai-gateway"})
    assert "Strict-Transport-Security" not in headers


@needs_openssl
def test_https_sends_hsts_on_every_answer(run, sets):
    port = sets["tls"]["ai_gateway_https_port"]
    run("tls")
    for path, expected in (("/health", 200), ("/api/v1/ai/info", 200), ("/nothing", 404)):
        status, headers, body = request(port, path, tls=True)
        assert status == expected, (path, status, body)
        assert headers["Strict-Transport-Security"] == "max-age=31536000", (path, headers)
        no_version(headers, body)


@needs_openssl
def test_hsts_only_on_https_when_http_serves_the_api_too(run, sets):
    http_port = sets["tls_no_redirect"]["ai_gateway_http_port"]
    https_port = sets["tls_no_redirect"]["ai_gateway_https_port"]
    run("tls_no_redirect")
    status, headers, _ = request(http_port, "/api/v1/ai/info")
    assert status == 200
    assert "Strict-Transport-Security" not in headers
    status, headers, _ = request(https_port, "/api/v1/ai/info", tls=True)
    assert status == 200
    assert headers["Strict-Transport-Security"] == "max-age=600"


@needs_openssl
def test_https_only_has_no_hsts_at_max_age_0(run, sets):
    port = sets["tls_only"]["ai_gateway_https_port"]
    run("tls_only")
    status, headers, _ = request(port, "/api/v1/ai/info", tls=True)
    assert status == 200
    assert "Strict-Transport-Security" not in headers


@needs_openssl
def test_tls_12_uses_a_listed_cipher_and_issues_no_session_ticket(run, sets):
    port = sets["tls"]["ai_gateway_https_port"]
    run("tls")
    context = ssl._create_unverified_context()
    context.maximum_version = ssl.TLSVersion.TLSv1_2
    with (
        socket.create_connection(("127.0.0.1", port), timeout=10) as raw,
        context.wrap_socket(raw, server_hostname="gateway.test") as tls,
    ):
        tls.sendall(b"GET /health HTTP/1.1\r\nHost: gateway.test\r\nConnection: close\r\n\r\n")
        assert tls.recv(100).startswith(b"HTTP/1.1 200")
        name, version, _ = tls.cipher()
        assert version == "TLSv1.2"
        assert name in CIPHERS
        # A TLSv1.2 session ticket would be issued right after the handshake.
        assert not tls.session.has_ticket


@needs_openssl
def test_tls_refuses_ciphers_without_forward_secrecy(run, sets):
    port = sets["tls"]["ai_gateway_https_port"]
    run("tls")
    weak = ssl._create_unverified_context()
    weak.maximum_version = ssl.TLSVersion.TLSv1_2
    # RSA key exchange: no forward secrecy, not in the list.
    weak.set_ciphers("AES128-SHA:AES256-SHA:AES128-GCM-SHA256")
    with (
        pytest.raises(ssl.SSLError),
        socket.create_connection(("127.0.0.1", port), timeout=10) as raw,
    ):
        weak.wrap_socket(raw, server_hostname="gateway.test").close()


def test_metrics_off_by_default_render_no_log_and_no_status_server(rendered):
    assert "ai_gateway_metrics" not in rendered["defaults"]
    assert "stub_status" not in rendered["defaults"]


def test_each_proxied_request_is_logged_with_its_node_s_inventory_name(run, sets, workdir):
    gateway = run("metrics")
    port = sets["metrics"]["ai_gateway_http_port"]
    for _ in range(3):
        echoed(port)
    # Not proxied: not logged.
    assert request(port, "/health")[0] == 200
    assert request(port, "/nothing-here")[0] == 404
    log = workdir / "ai-gateway-metrics.log"
    assert wait_lines(log, 3)
    lines = log.read_text().splitlines()
    assert len(lines) == 3, lines
    for line in lines:
        node, status, request_time, _ = line.split("|")
        assert (node, status) == ("gpu-1", "200"), line
        assert re.fullmatch(r"[0-9]+\.[0-9]{3}", request_time), line
    # nginx's counters, for the nginx exporter, on loopback only.
    status_port = sets["metrics"]["ai_gateway_metrics_status_port"]
    code, _, body = request(status_port, "/stub_status")
    assert code == 200 and body.startswith("Active connections:"), body
    assert gateway.name == "metrics"


def wait_lines(path: Path, count: int) -> bool:
    """Wait until the log has ``count`` lines (nginx writes each at the request's end)."""
    deadline = time.monotonic() + 5
    while time.monotonic() < deadline:
        if path.exists() and len(path.read_text().splitlines()) >= count:
            return True
        time.sleep(0.05)
    return False
