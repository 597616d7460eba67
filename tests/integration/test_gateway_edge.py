"""The gateway's edge as an operator sees it, through a running gateway.

Runs under molecule and, unchanged, against a real fleet:
    pytest tests/integration/test_gateway_edge.py --ansible-inventory=inventory --connection=ansible

Requests are sent from the gateway host itself (python3 is there: Ansible needs it),
to the gateway's own listener, as tests/integration/test_gateway.py does:

- no answer names nginx's version (``Server: nginx`` or none, error pages too);
- an ``X-Forwarded-For: 1.2.3.4`` sent by a client does not reach the node as the
  client's address. The node service neither echoes nor logs that header (the
  stand-in logs its socket peer, the gateway), so what nginx sends to the node is
  captured on the gateway host with a packet socket; without the privilege for one,
  the configuration nginx runs (``nginx -T``) is checked instead;
- a bad ``X-Request-ID`` (200 characters, spaces, quotes) is replaced by nginx's own
  id, a good one reaches the node and comes back;
- the nodes' deep check ``/api/v1/ai/health`` answers the gateway host itself
  (127.0.0.1) and refuses (403) a client address not in ai_gateway_deep_health_allow
  (the gateway host's own address on the nodes' network);
- a burst beyond rate + burst from one client gets 429 answers at once, not queued.

The TLS test runs the gateway play (playbooks/gateways.yml) with TLS on and a
certificate made here, checks the redirect, HSTS and TLS settings, then runs the play
again as the inventory has it and removes its certificate: molecule only, or
AI_FLEET_PLAY_TESTS=1 against another fleet. It is skipped where the inventory turns
TLS on itself.

Environment:
  AI_FLEET_GATEWAY_URL   base URL of the gateway as seen from the gateway host (default
                         http://127.0.0.1:<ai_gateway_http_port>, or https on
                         ai_gateway_https_port when plain HTTP is off or redirects)
"""

from __future__ import annotations

import importlib.util
import ipaddress
import json
import os
import re
import shutil
import subprocess
import time
import urllib.parse
import uuid
from pathlib import Path

import pytest
import yaml
from conftest import ROOT, needs_plays, run_ok, run_playbook

testinfra_hosts = ["ansible://gateways"]

GATEWAY_PLAY = ROOT / "playbooks" / "gateways.yml"
UPSTREAM_FILTER = ROOT / "plugins" / "filter" / "ai_upstream.py"

# The ai_gateway role's defaults of the settings these tests read.
GATEWAY_DEFAULTS = {
    "ai_gateway_mode": "managed",
    "ai_gateway_node_group": "gpu_nodes",
    "ai_gateway_default_port": 8800,
    "ai_gateway_allow_loopback_nodes": False,
    "ai_gateway_server_names": [],
    "ai_gateway_http_enabled": True,
    "ai_gateway_http_port": 80,
    "ai_gateway_tls_enabled": False,
    "ai_gateway_https_port": 443,
    "ai_gateway_http_redirect": True,
    "ai_gateway_hsts_max_age": 31536000,
    "ai_gateway_tls_ciphers": [
        "ECDHE-ECDSA-AES128-GCM-SHA256",
        "ECDHE-RSA-AES128-GCM-SHA256",
        "ECDHE-ECDSA-AES256-GCM-SHA384",
        "ECDHE-RSA-AES256-GCM-SHA384",
        "ECDHE-ECDSA-CHACHA20-POLY1305",
        "ECDHE-RSA-CHACHA20-POLY1305",
    ],
    "ai_gateway_health_path": "/health",
    "ai_gateway_trusted_proxies": [],
    "ai_gateway_deep_health_allow": ["127.0.0.1", "::1"],
    "ai_gateway_limit_req_enabled": True,
    "ai_gateway_limit_req_rate": 50,
    "ai_gateway_limit_req_burst": 10,
    "ai_gateway_limit_req_nodelay": True,
    "ai_gateway_limit_req_status": 429,
    "ai_gateway_limit_conn_per_ip": 32,
    "ai_gateway_limit_conn_status": 429,
}

# The TLS test's certificate and key, beside (never over) the inventory's own.
TEST_CERTIFICATE = "/etc/nginx/tls/ai-gateway-edge-test.crt"
TEST_KEY = "/etc/nginx/tls/ai-gateway-edge-test.key"

# Runs on the gateway host. Reads a JSON job from argv[1], prints a JSON answer.
#   get     one GET per request, each on its own connection: {status, headers, body}
#   burst   `count` GETs sent at once, each on its own connection (connected first,
#           then released together): [[status, seconds to the status line, sent at], ...]
#   sniff   one GET while a packet socket captures what nginx sends to the node: the
#           headers of the upstream request that carries `marker` (nginx adds
#           X-Real-IP, which the client does not send)
#   tls12   one TLSv1.2 handshake: cipher, version, whether a session ticket came
#   source  the gateway host's own address towards a node (no packet is sent)
CLIENT = r"""
import http.client, json, socket, ssl, sys, threading, time, urllib.parse
job = json.loads(sys.argv[1])

def connect(url, timeout):
    u = urllib.parse.urlsplit(url)
    if u.scheme == "https":
        return http.client.HTTPSConnection(u.hostname, u.port or 443, timeout=timeout,
                                           context=ssl._create_unverified_context())
    return http.client.HTTPConnection(u.hostname, u.port or 80, timeout=timeout)

def target(url):
    u = urllib.parse.urlsplit(url)
    return (u.path or "/") + ("?" + u.query if u.query else "")

def get(req):
    conn = connect(req["url"], job.get("timeout", 60))
    try:
        conn.request("GET", target(req["url"]), headers=req.get("headers", {}))
        resp = conn.getresponse()
        raw = resp.read().decode("utf-8", "replace")
        try:
            body = json.loads(raw)
        except ValueError:
            body = raw
        headers = {k.lower(): v for k, v in resp.getheaders()}
        return {"status": resp.status, "headers": headers, "body": body, "error": ""}
    except Exception as exc:
        return {"status": -1, "headers": {}, "body": None, "error": repr(exc)}
    finally:
        conn.close()

def burst(req, count):
    barrier = threading.Barrier(count)
    results = [None] * count
    def one(i):
        conn = connect(req["url"], 30)
        try:
            conn.connect()
            barrier.wait(timeout=30)
            started = time.monotonic()
            conn.request("GET", target(req["url"]), headers=req.get("headers", {}))
            resp = conn.getresponse()
            results[i] = [resp.status, time.monotonic() - started, started]
            resp.read()
        except Exception as exc:
            results[i] = [-1, repr(exc), 0.0]
        finally:
            conn.close()
    threads = [threading.Thread(target=one, args=(i,)) for i in range(count)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    return results

def sniff(req, marker):
    marker = marker.encode()
    try:
        capture = socket.socket(socket.AF_PACKET, socket.SOCK_RAW, socket.ntohs(3))
    except (AttributeError, OSError) as exc:
        return {"error": "cannot open a packet socket: " + repr(exc)}
    capture.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 8 << 20)
    capture.settimeout(0.2)
    answer = get(req)
    deadline, upstream = time.monotonic() + 5, None
    while upstream is None and time.monotonic() < deadline:
        try:
            frame = capture.recv(65535)
        except socket.timeout:
            continue
        at = frame.find(marker)
        start = frame.rfind(b"GET ", 0, at) if at >= 0 else -1
        if start < 0:
            continue
        head = frame[start:].split(b"\r\n\r\n", 1)[0].decode("latin-1").split("\r\n")
        headers = {}
        for line in head[1:]:
            name, _, value = line.partition(":")
            headers[name.strip().lower()] = value.strip()
        if "x-real-ip" in headers:
            upstream = {"request_line": head[0], "headers": headers}
    capture.close()
    return {"answer": answer, "upstream": upstream, "error": ""}

def tls12(url):
    u = urllib.parse.urlsplit(url)
    context = ssl._create_unverified_context()
    context.maximum_version = ssl.TLSVersion.TLSv1_2
    with socket.create_connection((u.hostname, u.port or 443), timeout=10) as raw:
        with context.wrap_socket(raw, server_hostname=job.get("sni") or None) as tls:
            tls.sendall(b"GET / HTTP/1.1\r\nHost: " + (job.get("sni") or u.hostname).encode()
                        + b"\r\nConnection: close\r\n\r\n")
            tls.recv(1024)
            name, version, _ = tls.cipher()
            return {"cipher": name, "version": version, "ticket": tls.session.has_ticket}

def source(address, port):
    family, kind, _, _, where = socket.getaddrinfo(address, port, type=socket.SOCK_DGRAM)[0]
    with socket.socket(family, kind) as probe:
        probe.connect(where)
        return probe.getsockname()[0]

mode = job["mode"]
if mode == "get":
    out = [get(req) for req in job["requests"]]
elif mode == "burst":
    out = burst(job["request"], job["count"])
elif mode == "sniff":
    out = sniff(job["request"], job["marker"])
elif mode == "tls12":
    out = tls12(job["url"])
else:
    out = source(job["address"], job["port"])
print(json.dumps(out))
"""


def as_bool(value) -> bool:
    """An inventory boolean (YAML bool, or a string from an INI inventory)."""
    if isinstance(value, str):
        return value.strip().lower() in {"1", "true", "yes", "on", "y", "t"}
    return bool(value)


def client(host, **job):
    """Run the client on the host with one job; return its JSON answer."""
    return json.loads(run_ok(host, "python3", "-c", CLIENT, json.dumps(job)))


def get(host, url, headers=None):
    """One GET from the host; {status, headers (lower-case names), body, error}."""
    (answer,) = client(host, mode="get", requests=[{"url": url, "headers": headers or {}}])
    return answer


def covered(address: str, networks) -> bool:
    """Whether an IP address lies in one of the networks (addresses or CIDR)."""
    ip = ipaddress.ip_address(address)
    for network in networks:
        try:
            if ip in ipaddress.ip_network(str(network), strict=False):
                return True
        except ValueError:
            continue
    return False


def assert_no_version(answer, what):
    """Neither the Server header nor an error page names nginx's version."""
    assert answer["headers"].get("server") in ("nginx", None), (what, answer["headers"])
    body = answer["body"] if isinstance(answer["body"], str) else json.dumps(answer["body"])
    assert not re.search(r"nginx/[0-9]", body or ""), (what, body)


def load_upstream_filter():
    """The project's upstream filter module, loaded from its file."""
    spec = importlib.util.spec_from_file_location("ai_upstream_for_edge", UPSTREAM_FILTER)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def base_url(settings: dict) -> str:
    """The URL that serves the API, as seen from the gateway host."""
    if os.environ.get("AI_FLEET_GATEWAY_URL"):
        return os.environ["AI_FLEET_GATEWAY_URL"].rstrip("/")
    tls = as_bool(settings["ai_gateway_tls_enabled"])
    http = as_bool(settings["ai_gateway_http_enabled"])
    if tls and (not http or as_bool(settings["ai_gateway_http_redirect"])):
        return f"https://127.0.0.1:{settings['ai_gateway_https_port']}"
    return f"http://127.0.0.1:{settings['ai_gateway_http_port']}"


@pytest.fixture(scope="module")
def gateway(host) -> dict:
    """The gateway's settings: inventory variables over the role's defaults."""
    if host.backend.NAME != "ansible":
        pytest.skip("needs the ansible backend (--connection=ansible and an inventory)")
    variables = host.ansible.get_variables()
    if "gateways" not in variables.get("group_names", []):
        pytest.skip(f"{host.backend.hostname} is not in the gateways group")
    settings = {**GATEWAY_DEFAULTS, **variables}
    if settings["ai_gateway_mode"] != "managed":
        pytest.skip("existing mode: the gateway's edge is not the role's")
    settings["url"] = base_url(settings)
    names = settings["ai_gateway_server_names"]
    settings["headers"] = {"Host": names[0]} if names else {}
    return settings


@pytest.fixture(scope="module")
def own_address(host, gateway) -> str:
    """The gateway host's own address on the nodes' network (not loopback)."""
    runner = host.backend.ansible_runner
    names = runner.get_hosts(gateway["ai_gateway_node_group"])
    assert names, f"the inventory has no hosts in group {gateway['ai_gateway_node_group']}"
    hostvars = {name: runner.get_variables(name) for name in names}
    defaults = {
        "port": gateway["ai_gateway_default_port"],
        "allow_loopback": as_bool(gateway["ai_gateway_allow_loopback_nodes"]),
    }
    entry = load_upstream_filter().ai_upstream_servers(names, hostvars, defaults)[0]
    address = client(host, mode="source", address=entry["address"], port=entry["port"])
    if ipaddress.ip_address(address).is_loopback:
        pytest.skip(f"the gateway reaches {entry['host_name']} over loopback")
    return address


def on(url: str, address: str) -> str:
    """The same base URL on another address of the gateway host."""
    parts = urllib.parse.urlsplit(url)
    literal = f"[{address}]" if ":" in address else address
    port = f":{parts.port}" if parts.port else ""
    return f"{parts.scheme}://{literal}{port}{parts.path}"


# --- what every answer says about nginx ---------------------------------------------------


def test_no_answer_names_the_nginx_version(host, gateway):
    url, headers = gateway["url"], gateway["headers"]
    checked = {
        "health": get(host, url + gateway["ai_gateway_health_path"], headers),
        "api": get(host, url + "/api/v1/ai/info", headers),
        "404": get(host, url + "/no-such-path", headers),
    }
    assert checked["health"]["status"] == 200, checked["health"]
    assert checked["api"]["status"] == 200, checked["api"]
    assert checked["404"]["status"] == 404, checked["404"]
    for what, answer in checked.items():
        assert_no_version(answer, what)


# --- the client's address and request id as the node gets them ------------------------------


def test_a_spoofed_forwarded_for_does_not_reach_the_node(host, gateway):
    if covered("127.0.0.1", gateway["ai_gateway_trusted_proxies"]):
        pytest.skip("127.0.0.1 is a trusted proxy here: its X-Forwarded-For is believed")
    marker = f"edge-xff-{uuid.uuid4().hex}"
    headers = {**gateway["headers"], "X-Forwarded-For": "1.2.3.4", "X-Request-ID": marker}
    request = {"url": gateway["url"] + "/api/v1/ai/info", "headers": headers}
    captured = client(host, mode="sniff", request=request, marker=marker)
    if captured["error"]:
        if gateway["ai_gateway_trusted_proxies"]:
            pytest.skip(f"trusted proxies are set and {captured['error']}")
        # No packet socket here: at least the configuration the gateway runs.
        config = run_ok(host, "nginx", "-T")
        assert "proxy_set_header X-Forwarded-For $remote_addr;" in config, captured["error"]
        assert "$proxy_add_x_forwarded_for" not in config
        pytest.skip(f"checked the configuration only: {captured['error']}")
    assert captured["answer"]["status"] == 200, captured["answer"]
    assert captured["answer"]["body"]["request_id"] == marker
    upstream = captured["upstream"]
    assert upstream, f"no request to a node carrying {marker} was seen on the gateway host"
    assert upstream["headers"]["x-forwarded-for"] == "127.0.0.1", upstream
    assert upstream["headers"]["x-real-ip"] == "127.0.0.1", upstream
    assert "1.2.3.4" not in json.dumps(upstream), upstream


def test_a_good_request_id_is_echoed(host, gateway):
    good = f"edge-{uuid.uuid4()}"
    answer = get(
        host, gateway["url"] + "/api/v1/ai/info", {**gateway["headers"], "X-Request-ID": good}
    )
    assert answer["status"] == 200, answer
    assert answer["body"]["request_id"] == good
    # The stand-in node also sends it back as a header; docs/services.md only has the body.
    assert answer["headers"].get("x-request-id", good) == good


@pytest.mark.parametrize(
    "bad",
    ["r" * 200, "has spaces in it", 'quo"ted', "with 'quotes' and spaces", "semi;colon"],
    ids=["200-characters", "spaces", "double-quote", "quotes-and-spaces", "semicolon"],
)
def test_a_bad_request_id_is_replaced(host, gateway, bad):
    answer = get(
        host, gateway["url"] + "/api/v1/ai/info", {**gateway["headers"], "X-Request-ID": bad}
    )
    assert answer["status"] == 200, answer
    given = answer["body"]["request_id"]
    # nginx's $request_id: 32 hexadecimal digits.
    assert re.fullmatch(r"[0-9a-f]{32}", given), (bad, given)


# --- the nodes' deep check ---------------------------------------------------------------------


def test_deep_health_answers_the_gateway_itself(host, gateway):
    if not covered("127.0.0.1", gateway["ai_gateway_deep_health_allow"]):
        pytest.skip("127.0.0.1 is not in ai_gateway_deep_health_allow here")
    answer = get(host, gateway["url"] + "/api/v1/ai/health", gateway["headers"])
    assert answer["status"] == 200, answer
    assert answer["body"]["data"]["status"] == "healthy", answer["body"]


def test_deep_health_refuses_a_client_not_allowed(host, gateway, own_address):
    allowed = gateway["ai_gateway_deep_health_allow"]
    if covered(own_address, allowed):
        pytest.skip(f"{own_address} is in ai_gateway_deep_health_allow ({allowed})")
    url = on(gateway["url"], own_address)
    refused = get(host, url + "/api/v1/ai/health", gateway["headers"])
    assert refused["status"] == 403, (url, refused)
    assert_no_version(refused, "403")
    # The same client reaches the rest of the API.
    assert get(host, url + "/api/v1/ai/info", gateway["headers"])["status"] == 200


# --- the rate limit refuses at once -----------------------------------------------------------


def test_a_burst_beyond_the_limit_is_refused_at_once(host, gateway):
    if not as_bool(gateway["ai_gateway_limit_req_enabled"]):
        pytest.skip("ai_gateway_limit_req_enabled is false here")
    rate = int(gateway["ai_gateway_limit_req_rate"])
    allowance = int(gateway["ai_gateway_limit_req_burst"]) + 1
    status = int(gateway["ai_gateway_limit_req_status"])
    count = allowance + 20
    # A full bucket to start from (earlier tests spent some of it).
    time.sleep(allowance / rate + 1)
    request = {"url": gateway["url"] + "/api/v1/ai/info", "headers": gateway["headers"]}
    try:
        results = client(host, mode="burst", request=request, count=count)
    finally:
        # Give the next tests their bucket back.
        time.sleep(allowance / rate + 1)
    failed = [r for r in results if r[0] not in (200, status)]
    assert not failed, failed
    refused = sorted(seconds for code, seconds, _ in results if code == status)
    accepted = [seconds for code, seconds, _ in results if code == 200]
    # The burst goes through, plus what the rate refills while the requests leave.
    spread = max(r[2] for r in results) - min(r[2] for r in results)
    refill = int(spread * rate) + 1
    assert allowance <= len(accepted) <= allowance + refill, (spread, results)
    assert len(refused) >= count - allowance - refill, (spread, results)
    # Refused at once, not queued until a slot frees (one every 1/rate seconds).
    assert refused[len(refused) // 2] < 0.05, refused
    assert refused[-1] < 0.5, refused
    answer = get(host, gateway["url"] + "/api/v1/ai/info", gateway["headers"])
    assert answer["status"] == 200, "the limit did not let the client back in"


# --- TLS: redirect, HSTS, ciphers, no session tickets (runs the gateway play) ------------------


def make_certificate(folder: Path) -> tuple[str, str]:
    """A self-signed certificate and key (PEM) for the gateway, made with openssl."""
    subprocess.run(
        ["openssl", "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "2",
         "-subj", "/CN=ai-gateway.test", "-keyout", str(folder / "key.pem"),
         "-out", str(folder / "cert.pem")],
        check=True, capture_output=True,
    )  # fmt: skip
    return (folder / "cert.pem").read_text(), (folder / "key.pem").read_text()


@needs_plays
def test_tls_redirects_and_sends_hsts(host, gateway, ansible_inventory, tmp_path):
    if as_bool(gateway["ai_gateway_tls_enabled"]):
        pytest.skip("the inventory turns TLS on: this test would replace its settings")
    if shutil.which("openssl") is None:
        pytest.skip("openssl is not installed on the controller; it makes the test certificate")
    name = host.backend.hostname
    certificate, key = make_certificate(tmp_path)
    extra = tmp_path / "tls.yml"
    extra.write_text(
        yaml.safe_dump(
            {
                "ai_gateway_tls_enabled": True,
                "ai_gateway_tls_certificate": certificate,
                "ai_gateway_tls_certificate_key": key,
                "ai_gateway_tls_certificate_path": TEST_CERTIFICATE,
                "ai_gateway_tls_certificate_key_path": TEST_KEY,
            }
        )
    )
    http_port, https_port = gateway["ai_gateway_http_port"], gateway["ai_gateway_https_port"]
    headers = gateway["headers"]
    host_name = headers.get("Host", "127.0.0.1")
    try:
        result = run_playbook(ansible_inventory, GATEWAY_PLAY, limit=name, extra_vars=extra)
        assert result.returncode == 0, (result.stdout + result.stderr)[-3000:]
        https = f"https://127.0.0.1:{https_port}"

        served = get(host, https + "/api/v1/ai/info", headers)
        assert served["status"] == 200, served
        max_age = int(gateway["ai_gateway_hsts_max_age"])
        hsts = served["headers"].get("strict-transport-security")
        assert hsts == (f"max-age={max_age}" if max_age else None), served["headers"]
        assert_no_version(served, "https")
        missing = get(host, https + "/no-such-path", headers)
        assert missing["status"] == 404
        assert missing["headers"].get("strict-transport-security") == hsts, "not on errors"

        session = client(host, mode="tls12", url=https, sni=headers.get("Host", ""))
        assert session["version"] == "TLSv1.2", session
        assert session["cipher"] in gateway["ai_gateway_tls_ciphers"], session
        assert session["ticket"] is False, "a TLSv1.2 session ticket was issued"

        if as_bool(gateway["ai_gateway_http_enabled"]):
            http = f"http://127.0.0.1:{http_port}"
            health = get(host, http + gateway["ai_gateway_health_path"], headers)
            assert health["status"] == 200, health
            assert health["body"] == {"status": "ok", "service": "ai-gateway"}
            moved = get(host, http + "/api/v1/ai/info?probe=1", headers)
            if as_bool(gateway["ai_gateway_http_redirect"]):
                port = "" if int(https_port) == 443 else f":{https_port}"
                assert moved["status"] == 301, moved
                location = f"https://{host_name}{port}/api/v1/ai/info?probe=1"
                assert moved["headers"]["location"] == location
                assert "strict-transport-security" not in moved["headers"]
                assert_no_version(moved, "301")
            else:
                assert moved["status"] == 200, moved
    finally:
        restored = run_playbook(ansible_inventory, GATEWAY_PLAY, limit=name)
        host.run(f"rm -f {TEST_CERTIFICATE} {TEST_KEY}")
    assert restored.returncode == 0, (restored.stdout + restored.stderr)[-3000:]
    back = get(host, gateway["url"] + "/api/v1/ai/info", headers)
    assert back["status"] == 200, back
