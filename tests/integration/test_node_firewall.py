"""The node API firewall (role ai_node_firewall) on every GPU node.

Proves from the outside what the role promises: each gateway reaches the node
API port, another GPU node that is not a gateway does not, the chain and its
single jump at the top of DOCKER-USER are in place and match the wanted rules,
and a restart of Docker puts the rules back.

Runs under molecule and, unchanged, against a real fleet:
    pytest tests/integration/test_node_firewall.py --ansible-inventory=inventory \
        --connection=ansible --sudo
(iptables needs root on the nodes). The Docker restart test restarts Docker on
the first GPU node: it runs under molecule, or with AI_FLEET_PLAY_TESTS=1.

The address a node is reached at is its ai_node_public_host, else its
ansible_host, else its inventory name, as the gateways reach it. Connections
are opened from the gateway and node hosts themselves (python3 is there:
Ansible needs it).
"""

from __future__ import annotations

import ipaddress
import json
import re

import pytest
import testinfra
from conftest import PLAYS_ALLOWED, http_get, run_ok, wait_for

testinfra_hosts = ["ansible://gpu_nodes"]

# The role's defaults and fixed names (roles/ai_node_firewall).
FIREWALL_DEFAULTS = {
    "ai_node_firewall_enabled": True,
    "ai_node_firewall_open": False,
    "ai_node_firewall_gateway_group": "gateways",
}
SCRIPT = "/usr/local/sbin/ai-node-firewall"
UNIT = "ai-node-firewall.service"
CHAIN = "AI-NODE-API"
PARENT = "DOCKER-USER"
JUMP = f"-A {PARENT} -j {CHAIN}"
# A source the test adds to the node's chain, after the final deny rule: it
# changes nothing that reaches the port (TEST-NET-1, never a real client).
MARKER = f"-A {CHAIN} -s 192.0.2.254/32 -j RETURN"

# Seconds a refused connection may take (a dropped SYN times out).
REFUSED_TIMEOUT = 4

needs_disruption = pytest.mark.skipif(
    not PLAYS_ALLOWED,
    reason="restarts Docker on a node: molecule only, or AI_FLEET_PLAY_TESTS=1",
)

# Runs on a host: opens a TCP connection and asks for /health; prints JSON.
PROBE = r"""
import json, socket, sys
address, port, timeout = sys.argv[1], int(sys.argv[2]), float(sys.argv[3])
out = {"connected": False, "status": None, "body": "", "error": "", "source": ""}
try:
    with socket.create_connection((address, port), timeout=timeout) as conn:
        out["connected"] = True
        out["source"] = conn.getsockname()[0]
        request = "GET /health HTTP/1.0\r\nHost: %s\r\nConnection: close\r\n\r\n" % address
        conn.sendall(request.encode())
        data = b""
        while True:
            chunk = conn.recv(65536)
            if not chunk:
                break
            data += chunk
    head, _, body = data.decode("utf-8", "replace").partition("\r\n\r\n")
    out["status"] = int(head.split()[1])
    out["body"] = body
except Exception as exc:
    out["error"] = repr(exc)
print(json.dumps(out))
"""

# Runs on a host: the source address it would use towards an address (no packet sent).
SOURCE = r"""
import socket, sys
family, _, _, _, target = socket.getaddrinfo(sys.argv[1], 9, proto=socket.IPPROTO_UDP)[0]
sock = socket.socket(family, socket.SOCK_DGRAM)
sock.connect(target)
print(sock.getsockname()[0])
"""


def as_bool(value) -> bool:
    """An inventory boolean (YAML bool, or a string from an INI inventory)."""
    if isinstance(value, str):
        return value.strip().lower() in {"1", "true", "yes", "on", "y", "t"}
    return bool(value)


def inventory_host(host, name: str):
    """A testinfra host for another host of the inventory, same connection options."""
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


def probe(client, address: str, port: int, timeout: float) -> dict:
    """Connect from the client host to address:port and GET /health."""
    return json.loads(run_ok(client, "python3", "-c", PROBE, address, str(port), str(timeout)))


def chain_rules(host, chain: str) -> list[str]:
    """`iptables -S chain` on the host."""
    return run_ok(host, "iptables", "-w", "-S", chain).splitlines()


@pytest.fixture
def fw(host, node_vars) -> dict:
    """The node's firewall settings, where it is reached, and the wanted rules."""
    if host.backend.NAME != "ansible":
        pytest.skip("needs the ansible backend (--connection=ansible and an inventory)")
    settings = {**FIREWALL_DEFAULTS, **node_vars}
    if not as_bool(settings["ai_node_firewall_enabled"]):
        pytest.skip("ai_node_firewall_enabled is false on this host")
    port = settings.get("ai_node_firewall_port")
    if not re.fullmatch(r"[0-9]+", str(port)):
        port = settings["ai_node_http_port"]
    settings["port"] = int(port)
    name = host.backend.host
    settings["name"] = name
    settings["address"] = (
        settings.get("ai_node_public_host") or settings.get("ansible_host") or name
    )
    # The wanted rules, as the installed script renders them.
    rendered = run_ok(host, SCRIPT, "render").splitlines()
    settings["wanted_ipv4"] = rendered[1 : rendered.index("# ipv6")]
    allowed, is_open = [], False
    for line in rendered:
        words = line.split()
        if line.startswith(f"-A {CHAIN} ") and words[-1] == "RETURN" and "--ctorigdstport" in words:
            if "-s" in words:
                allowed.append(ipaddress.ip_network(words[words.index("-s") + 1]))
            else:
                is_open = True
    settings["allowed"], settings["open"] = allowed, is_open
    runner = host.backend.ansible_runner
    settings["gateways"] = sorted(runner.get_hosts(settings["ai_node_firewall_gateway_group"]))
    settings["nodes"] = sorted(runner.get_hosts("gpu_nodes"))
    return settings


def test_script_and_unit_are_installed(host, fw):
    script = host.file(SCRIPT)
    assert script.is_file
    assert script.user == "root"
    assert script.mode == 0o755
    service = host.service(UNIT)
    assert service.is_enabled, f"{UNIT} is not enabled on {fw['name']}"
    assert service.is_running or host.run(f"systemctl is-active {UNIT}").stdout.strip() == "active"


def test_jump_is_first_in_docker_user_and_only_once(host, fw):
    rules = [line for line in chain_rules(host, PARENT) if line.startswith("-A ")]
    assert rules, f"{PARENT} is empty on {fw['name']}"
    assert rules[0] == JUMP, f"{PARENT} on {fw['name']} starts with {rules[0]!r}"
    assert rules.count(JUMP) == 1, rules


def test_chain_holds_the_wanted_rules(host, fw):
    assert chain_rules(host, CHAIN) == fw["wanted_ipv4"]
    port_rules = [line for line in fw["wanted_ipv4"] if f"--ctorigdstport {fw['port']} " in line]
    assert port_rules, f"no rule of {CHAIN} is about port {fw['port']}"
    last = port_rules[-1]
    if fw["open"]:
        assert last.endswith("-j RETURN")
    else:
        assert "--ctstate NEW" in last
        assert last.endswith(("-j DROP", "-j REJECT --reject-with tcp-reset")), last


def test_check_finds_the_live_rules_in_sync(host, fw):
    result = host.run(f"{SCRIPT} check")
    assert result.rc == 0, f"{SCRIPT} check on {fw['name']}: rc {result.rc}\n{result.stdout}"


def test_each_gateway_reaches_the_api(host, fw):
    if not fw["gateways"]:
        pytest.skip(f"no host in group {fw['ai_node_firewall_gateway_group']}")
    for name in fw["gateways"]:
        answer = probe(inventory_host(host, name), fw["address"], fw["port"], 10)
        assert answer["status"] == 200, (
            f"{name} -> {fw['name']} ({fw['address']}:{fw['port']}): {answer}"
        )
        assert json.loads(answer["body"])["status"] == "ok"


def test_another_gpu_node_is_refused(host, fw):
    if fw["open"]:
        pytest.skip("ai_node_firewall_open: the port is open to everyone on purpose")
    others = [n for n in fw["nodes"] if n != fw["name"] and n not in fw["gateways"]]
    tried = []
    for name in others:
        client = inventory_host(host, name)
        source = ipaddress.ip_address(
            run_ok(client, "python3", "-c", SOURCE, fw["address"]).strip()
        )
        if any(source in network for network in fw["allowed"]):
            continue  # an allowed network covers this node (ai_node_firewall_allowed_networks)
        answer = probe(client, fw["address"], fw["port"], REFUSED_TIMEOUT)
        assert not answer["connected"], (
            f"{name} ({source}) reached {fw['name']}:{fw['port']}, which only the gateways "
            f"and the allowed networks may: {answer}"
        )
        tried.append(name)
    if not tried:
        pytest.skip("no other GPU node outside the gateways and the allowed networks")


@needs_disruption
def test_rules_come_back_after_docker_restarts(host, fw, node_vars):
    if fw["name"] != fw["nodes"][0]:
        pytest.skip("restarts Docker on the first GPU node only")
    # A harmless change behind the script's back (after the final deny rule),
    # which only a new run of the script removes.
    run_ok(host, "iptables", "-w", "-A", CHAIN, "-s", "192.0.2.254/32", "-j", "RETURN")
    try:
        assert MARKER in chain_rules(host, CHAIN)
        assert host.run(f"{SCRIPT} check").rc == 2
        run_ok(host, "systemctl", "restart", "docker")
        back = wait_for(lambda: host.run(f"{SCRIPT} check").rc == 0, timeout=60)
        report = host.run(f"{SCRIPT} check").stdout
        assert back, f"the rules did not come back after restarting Docker:\n{report}"
        assert MARKER not in chain_rules(host, CHAIN)
        assert next(r for r in chain_rules(host, PARENT) if r.startswith("-A ")) == JUMP
        assert host.run(f"systemctl is-active {UNIT}").stdout.strip() == "active"
    finally:
        # Leave the node as it was: the wanted rules, Docker up, the API healthy.
        host.run(f"{SCRIPT} apply")
        url = f"http://127.0.0.1:{node_vars['ai_node_http_port']}/health"

        def healthy():
            result = host.run(f"curl -fsS --max-time 5 {url}")
            return result.rc == 0

        assert wait_for(healthy, timeout=180), (
            f"{fw['name']}: /health does not answer after the restart"
        )
        status, body = http_get(host, url)
        assert status == 200 and body["status"] == "ok"
        for name in fw["gateways"]:
            gateway = inventory_host(host, name)

            def reached(gateway=gateway):
                return probe(gateway, fw["address"], fw["port"], 5)["status"] == 200

            assert wait_for(reached, timeout=60), f"{name} no longer reaches {fw['name']}"
