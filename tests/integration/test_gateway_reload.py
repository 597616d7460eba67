"""A reload that nginx refuses after `nginx -t` passed is rolled back, and a missed reload is done.

1. A process on the gateway holds a port; the gateway play is run with the
   gateway's HTTP port set to it. `nginx -t` accepts the configuration (it binds
   nothing), `systemctl reload` returns 0, but nginx keeps its old configuration.
   The play must see that (no new worker processes), put the previous files
   back, reload, and fail naming the port's problem; the gateway keeps serving
   on its port.
2. The include file is touched behind the role's back (as a run that stopped
   between writing and reloading leaves it): the next run reloads.

Runs plays: molecule only, or AI_FLEET_PLAY_TESTS=1 against another fleet.
"""

from __future__ import annotations

import uuid

import pytest
import testinfra
from conftest import ROOT, inventory_groups, needs_plays, run_ok, run_playbook

pytestmark = needs_plays

GATEWAY_PLAY = ROOT / "playbooks" / "gateways.yml"
SITE = "/etc/nginx/conf.d/ai_gateway.conf"
INCLUDE = "/etc/nginx/ai-gateway.d/ai_inference_service.servers.local.conf"
TAKEN_PORT = 8097


@pytest.fixture(scope="module")
def gateway(ansible_inventory):
    name = sorted(inventory_groups(ansible_inventory)["gateways"]["hosts"])[0]
    host = testinfra.get_host(f"ansible://{name}?ansible_inventory={ansible_inventory}")
    if host.ansible.get_variables().get("ai_gateway_mode", "managed") != "managed":
        pytest.skip("the gateway's nginx is not managed by the role")
    return name, host


def workers(host) -> set[str]:
    out = host.run("pgrep -f 'nginx: worker process$'").stdout
    return set(out.split())


def test_a_reload_nginx_refuses_is_rolled_back(gateway, ansible_inventory, tmp_path):
    _, host = gateway
    before = host.file(SITE).content_string
    marker = f"/tmp/hold-{uuid.uuid4().hex[:8]}"
    holder = (
        f"python3 -c 'import socket,time,os; s=socket.socket(); "
        f"s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1); "
        f's.bind(("0.0.0.0", {TAKEN_PORT})); s.listen(); '
        f'open("{marker}", "w").write(str(os.getpid())); '
        f"time.sleep(120)' >/dev/null 2>&1 &"
    )
    run_ok(host, "sh", "-c", holder)
    run_ok(host, "sh", "-c", f"for i in $(seq 50); do [ -e {marker} ] && exit 0; sleep 0.1; done")
    extra = tmp_path / "taken.yml"
    extra.write_text(f"ai_gateway_http_port: {TAKEN_PORT}\nai_gateway_listen_ipv6: false\n")
    try:
        result = run_playbook(ansible_inventory, GATEWAY_PLAY, extra_vars=extra)
    finally:
        host.run(f"kill $(cat {marker}); rm -f {marker}")
    output = result.stdout + result.stderr
    assert result.returncode != 0, output[-3000:]
    assert "nginx did not load the new configuration" in output, output[-3000:]
    assert "nginx was reloaded onto the configuration put back" in output, output[-3000:]
    assert host.file(SITE).content_string == before
    status = host.run("curl -fsS -o /dev/null -w '%{http_code}' http://127.0.0.1:80/health")
    assert status.stdout == "200", status.stderr


def test_a_missed_reload_is_done_by_the_next_run(gateway, ansible_inventory):
    _, host = gateway
    first = run_playbook(ansible_inventory, GATEWAY_PLAY)
    assert first.returncode == 0, (first.stdout + first.stderr)[-3000:]
    old = workers(host)
    run_ok(host, "touch", INCLUDE)
    result = run_playbook(ansible_inventory, GATEWAY_PLAY)
    output = result.stdout + result.stderr
    assert result.returncode == 0, output[-3000:]
    assert "changed=1" in output, output[-2000:]
    assert workers(host) - old, "nginx did not start new workers"
    again = run_playbook(ansible_inventory, GATEWAY_PLAY)
    assert "changed=0" in again.stdout, again.stdout[-2000:]
