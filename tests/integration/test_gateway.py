"""The nginx gateways: valid configuration, the upstream include file, traffic to every node.

Runs under molecule and, unchanged, against a real fleet:
    pytest tests/integration/test_gateway.py --ansible-inventory=inventory --connection=ansible

The gateway's settings come from its inventory variables over the ai_gateway
role's defaults; the GPU nodes and their addresses come from the inventory,
resolved by the project's own filter (plugins/filter/ai_upstream.py), exactly as
the role resolves them. HTTP requests are sent from the gateway host itself.

Environment:
  AI_FLEET_GATEWAY_URL       base URL of the gateway as seen from the gateway host
                             (default http://127.0.0.1:<ai_gateway_http_port>, or https
                             on ai_gateway_https_port when plain HTTP is off)
  AI_FLEET_NODE_CONTAINER    ai-inference-service container on the nodes (default: the
                             node's ai_node_inference_container, else ai-inference-service)
  AI_FLEET_NODE_LOGS=0       skip the proof from the nodes' logs, for a service build that
                             does not log the X-Request-ID of each request
"""

from __future__ import annotations

import importlib.util
import json
import os
import re
import shlex
import uuid
from pathlib import Path

import pytest
import testinfra
from conftest import run_ok

testinfra_hosts = ["ansible://gateways"]

CAPABILITIES = {"speech_recognition", "emotion_detection", "synthesis_detection"}
UPSTREAM_FILTER = Path(__file__).resolve().parents[2] / "plugins" / "filter" / "ai_upstream.py"

# The ai_gateway role's defaults of the settings these tests read.
GATEWAY_DEFAULTS = {
    "ai_gateway_mode": "managed",
    "ai_gateway_node_group": "gpu_nodes",
    "ai_gateway_servers_file": "ai_inference_service.servers.local.conf",
    "ai_gateway_default_port": 8800,
    "ai_gateway_default_weight": 1,
    "ai_gateway_default_max_fails": 3,
    "ai_gateway_default_fail_timeout": "30s",
    "ai_gateway_probe_path": "/health",
    "ai_gateway_validate_command": ["nginx", "-t"],
    "ai_gateway_server_names": [],
    "ai_gateway_http_enabled": True,
    "ai_gateway_http_port": 80,
    "ai_gateway_tls_enabled": False,
    "ai_gateway_https_port": 443,
    "ai_gateway_tls_certificate_key": "",
    "ai_gateway_tls_certificate_key_path": "/etc/nginx/tls/ai-gateway.key",
    "ai_gateway_health_path": "/health",
}
CONF_DIR_DEFAULTS = {"managed": "/etc/nginx/ai-gateway.d", "existing": "/etc/nginx/conf.d"}

# Runs on the gateway host (python3 is there: Ansible needs it). Reads a JSON job
# from argv[1], prints a JSON list of {status, body, error}, one per request.
# "requests" go one after another over a single keep-alive connection, so they
# reach one nginx worker, whose least_conn picks among idle nodes in turn: they
# spread over every node, and stay under the per-IP rate limit (a request over
# the rate waits for its turn instead of being rejected).
CLIENT = r"""
import http.client, json, ssl, sys, time, urllib.parse
job = json.loads(sys.argv[1])
def connect(url):
    u = urllib.parse.urlsplit(url)
    if u.scheme == "https":
        return http.client.HTTPSConnection(u.hostname, u.port or 443, timeout=job["timeout"],
                                           context=ssl._create_unverified_context())
    return http.client.HTTPConnection(u.hostname, u.port or 80, timeout=job["timeout"])
results, conns = [], {}
for req in job["requests"]:
    time.sleep(job.get("pace", 0))
    u = urllib.parse.urlsplit(req["url"])
    key = (u.scheme, u.netloc) if job["keepalive"] else None
    try:
        conn = conns.get(key) or connect(req["url"])
        if key:
            conns[key] = conn
        conn.request("GET", u.path or "/", headers=req.get("headers", {}))
        resp = conn.getresponse()
        raw = resp.read().decode("utf-8", "replace")
        if not key:
            conn.close()
        try:
            body = json.loads(raw)
        except ValueError:
            body = raw
        results.append({"status": resp.status, "body": body, "error": ""})
    except Exception as exc:
        conns.pop(key, None)
        results.append({"status": -1, "body": None, "error": repr(exc)})
print(json.dumps(results))
"""


def load_upstream_filter():
    """The project's upstream filter module, loaded from its file."""
    spec = importlib.util.spec_from_file_location("ai_upstream", UPSTREAM_FILTER)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def as_bool(value) -> bool:
    """An inventory boolean (YAML bool, or a string from an INI inventory)."""
    if isinstance(value, str):
        return value.strip().lower() in {"1", "true", "yes", "on", "y", "t"}
    return bool(value)


def inventory_host(host, name: str):
    """A testinfra host for another host of the gateway's inventory, same connection options."""
    backend = host.backend
    return testinfra.get_host(
        f"ansible://{name}",
        ansible_inventory=backend.ansible_inventory,
        ssh_config=backend.ssh_config,
        ssh_identity_file=backend.ssh_identity_file,
        force_ansible=backend.force_ansible,
        sudo=backend.sudo,
        sudo_user=backend.sudo_user,
    )


def http(
    host, requests: list[dict], keepalive: bool = False, timeout: int = 10, pace: float = 0.0
) -> list[dict]:
    """Send GET requests from the host, ``pace`` seconds apart; one {status, body, error} each."""
    job = json.dumps(
        {"requests": requests, "keepalive": keepalive, "timeout": timeout, "pace": pace}
    )
    return json.loads(run_ok(host, "python3", "-c", CLIENT, job))


@pytest.fixture(scope="module")
def gateway(host) -> dict:
    """The gateway's settings: inventory variables over the role's defaults."""
    if host.backend.NAME != "ansible":
        pytest.skip("needs the ansible backend (--connection=ansible and an inventory)")
    variables = host.ansible.get_variables()
    if "gateways" not in variables.get("group_names", []):
        pytest.skip(f"{host.backend.hostname} is not in the gateways group")
    settings = {**GATEWAY_DEFAULTS, **variables}
    mode = settings["ai_gateway_mode"]
    conf_dir = settings.get("ai_gateway_conf_dir") or CONF_DIR_DEFAULTS[mode]
    settings["servers_path"] = f"{conf_dir}/{settings['ai_gateway_servers_file']}"
    if os.environ.get("AI_FLEET_GATEWAY_URL"):
        settings["url"] = os.environ["AI_FLEET_GATEWAY_URL"].rstrip("/")
    elif as_bool(settings["ai_gateway_http_enabled"]) or mode == "existing":
        settings["url"] = f"http://127.0.0.1:{settings['ai_gateway_http_port']}"
    else:
        settings["url"] = f"https://127.0.0.1:{settings['ai_gateway_https_port']}"
    names = settings["ai_gateway_server_names"]
    settings["headers"] = {"Host": names[0]} if names else {}
    return settings


@pytest.fixture(scope="module")
def nodes(host, gateway) -> list[dict]:
    """Upstream entries of every GPU node, as the role's filter resolves them from the inventory.

    Each entry carries its `line` in the include file and whether it answers
    `/health` from the gateway now (`healthy`).
    """
    runner = host.backend.ansible_runner
    names = runner.get_hosts(gateway["ai_gateway_node_group"])
    assert names, f"the inventory has no hosts in group {gateway['ai_gateway_node_group']}"
    upstream = load_upstream_filter()
    defaults = {
        "port": gateway["ai_gateway_default_port"],
        "weight": gateway["ai_gateway_default_weight"],
        "max_fails": gateway["ai_gateway_default_max_fails"],
        "fail_timeout": gateway["ai_gateway_default_fail_timeout"],
    }
    hostvars = {name: runner.get_variables(name) for name in names}
    entries = upstream.ai_upstream_servers(names, hostvars, defaults)
    probes = http(
        host,
        [
            {
                "url": f"http://{upstream.format_endpoint(e['address'], e['port'])}"
                f"{gateway['ai_gateway_probe_path']}"
            }
            for e in entries
        ],
        timeout=5,
    )
    for entry, probe in zip(entries, probes, strict=True):
        entry["line"] = upstream.server_line(entry)
        body = probe["body"] if isinstance(probe["body"], dict) else {}
        entry["healthy"] = probe["status"] == 200 and body.get("status") == "ok"
        entry["vars"] = hostvars[entry["host_name"]]
    return entries


def test_nginx_configuration_is_valid(host, gateway):
    result = host.run(shlex.join(gateway["ai_gateway_validate_command"]))
    assert result.rc == 0, f"nginx -t failed: {result.stderr}"


def test_include_file_lists_every_healthy_node(host, gateway, nodes):
    servers = host.file(gateway["servers_path"])
    assert servers.is_file, f"{gateway['servers_path']} is missing"
    lines = [
        line.strip()
        for line in servers.content_string.splitlines()
        if line.strip() and not line.lstrip().startswith("#")
    ]
    assert lines, f"{gateway['servers_path']} lists no server"
    known = {entry["line"] for entry in nodes}
    assert set(lines) <= known, f"servers not in the inventory: {set(lines) - known}"
    assert len(lines) == len(set(lines)), f"a server is listed twice: {lines}"
    for entry in nodes:
        if entry["down"] or entry["healthy"]:
            assert entry["line"] in lines, (
                f"{entry['host_name']} is {'drained' if entry['down'] else 'healthy'} but "
                f"{entry['line']!r} is not in {gateway['servers_path']} (if the node play "
                "of the last run judged it unhealthy, run playbooks/gateways.yml again)"
            )
    assert any(" down;" not in line and " backup" not in line for line in lines)


def test_include_file_is_owned_by_root(host, gateway):
    servers = host.file(gateway["servers_path"])
    assert servers.user == "root"
    assert servers.mode == 0o644


def test_gateway_includes_the_servers(host, gateway):
    if gateway["ai_gateway_mode"] != "managed":
        pytest.skip("existing mode: the gateway's own configuration is not the role's")
    config = run_ok(host, "nginx", "-T")
    conf_dir = gateway["servers_path"].rsplit("/", 1)[0]
    assert f"include {conf_dir}/ai_inference_service.servers*.conf;" in config
    assert "upstream ai_inference_service {" in config
    assert "location ^~ /api/v1/ai/ {" in config


def test_tls_key_is_private(host, gateway):
    if (
        not as_bool(gateway["ai_gateway_tls_enabled"])
        or not gateway["ai_gateway_tls_certificate_key"]
    ):
        pytest.skip("the role writes no TLS key on this gateway")
    key = host.file(gateway["ai_gateway_tls_certificate_key_path"])
    assert key.user == "root"
    assert key.mode == 0o600


def test_gateway_health_is_answered_by_nginx(host, gateway):
    if gateway["ai_gateway_mode"] != "managed" and not os.environ.get("AI_FLEET_GATEWAY_URL"):
        pytest.skip("existing mode: the gateway's own health path is not the role's")
    url = gateway["url"] + gateway["ai_gateway_health_path"]
    (result,) = http(host, [{"url": url, "headers": gateway["headers"]}])
    assert result["status"] == 200, f"GET {url}: {result}"
    assert result["body"] == {"status": "ok", "service": "ai-gateway"}


def test_info_through_the_gateway_answers_the_envelope(host, gateway):
    request_id = f"gw-test-info-{uuid.uuid4()}"
    url = gateway["url"] + "/api/v1/ai/info"
    headers = {**gateway["headers"], "X-Request-ID": request_id}
    (result,) = http(host, [{"url": url, "headers": headers}])
    assert result["status"] == 200, f"GET {url}: {result}"
    body = result["body"]
    assert body["code"] == 200, body
    assert body["data"]["service"] == "ai-inference-service"
    assert isinstance(body["data"]["capabilities"], list)
    assert set(body["data"]["capabilities"]) >= CAPABILITIES
    # The client's X-Request-ID reaches the node unchanged.
    assert body["request_id"] == request_id


def test_gateway_gives_a_request_id_when_the_client_sends_none(host, gateway):
    (result,) = http(
        host, [{"url": gateway["url"] + "/api/v1/ai/info", "headers": gateway["headers"]}]
    )
    assert result["status"] == 200, result
    # nginx's $request_id: 32 hexadecimal digits.
    assert re.fullmatch(r"[0-9a-f]{32}", result["body"]["request_id"]), result["body"]


def test_requests_through_the_gateway_reach_every_node(host, gateway, nodes):
    if os.environ.get("AI_FLEET_NODE_LOGS", "1") == "0":
        pytest.skip("AI_FLEET_NODE_LOGS=0: the nodes do not log request ids")
    serving = [e for e in nodes if e["healthy"] and not e["down"] and not e["backup"]]
    assert serving, "no GPU node answers /health from the gateway"
    prefix = f"gw-test-{uuid.uuid4()}"
    count = max(10, 4 * len(serving))
    ids = [f"{prefix}-{i}" for i in range(count)]
    url = gateway["url"] + "/api/v1/ai/info"
    results = http(
        host,
        [{"url": url, "headers": {**gateway["headers"], "X-Request-ID": i}} for i in ids],
        keepalive=True,
        # Below the gateway's per-client rate (ai_gateway_limit_req_rate, 50 r/s by
        # default), which refuses the excess at once rather than queueing it.
        pace=1 / 40,
    )
    failed = [(i, r) for i, r in zip(ids, results, strict=True) if r["status"] != 200]
    assert not failed, f"{len(failed)} of {count} requests failed, first: {failed[0]}"

    missing = {}
    for entry in serving:
        node = inventory_host(host, entry["host_name"])
        container = os.environ.get("AI_FLEET_NODE_CONTAINER") or entry["vars"].get(
            "ai_node_inference_container", "ai-inference-service"
        )
        # The service may log to stdout or stderr; the requests were sent just now.
        logs = node.run(shlex.join(["docker", "logs", "--since", "5m", container]))
        assert logs.rc == 0, f"docker logs {container} on {entry['host_name']}: {logs.stderr}"
        if not re.search(re.escape(prefix) + r"-[0-9]+\b", logs.stdout + logs.stderr):
            missing[entry["host_name"]] = container
    assert not missing, (
        f"none of {count} requests with ids {prefix}-N reached {sorted(missing)} "
        f"(looked in the logs of containers {missing})"
    )
