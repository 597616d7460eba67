"""MIGRATING.md, followed on a lab fleet built the original guide's way, under load.

The original guide and its scripts are described in docs/original-guide.md.

The lab is first turned into a fleet the guide's scripts would have left:

- every GPU node runs the guide's Compose stack (fleet.run_guide_stack: its
  container names, labels, ports and IPC volume) and no firewall of this project;
- the spare GPU host stands in for the guide's gateway machine: Docker, and
  nginx in the container `meeting-nginx-gateway` (tests/images/guide-gateway),
  its nginx.conf and conf.d bind-mounted read-only from /srv/meeting-system/nginx
  (tests/fixtures/guide-gateway). conf.d holds the guide's committed
  ai_inference_service.servers.conf (a placeholder `down` server and a local
  `backup`) and the ai_inference_service.servers.local.conf its generator
  script wrote (with its timestamp).

Then MIGRATING.md's steps, one test each, in order; a steady load (loadgen.py)
runs through the guide's gateway during every step that touches the serving
fleet, and every request is counted (.cache/test-results/operations-under-load.json):

1. the node lists imported from GPU_AI_NODES / AI_INFERENCE_UPSTREAMS with the
   documented export command;
2. site.yml without the switch: refused, nothing changed anywhere;
3. the gateway taken over in existing mode (playbooks/gateways.yml): the include
   file rewritten, the placeholder reported, nginx validated and reloaded with
   `docker exec`, the reload proven on the container's master process; none fails;
4. a change that the container's `nginx -t` refuses (a node name the container
   cannot resolve): the previous file is put back, nginx is not reloaded and
   keeps serving; none fails;
5. site.yml with ai_node_adopt: every node drained, taken over and put back,
   one at a time; none fails;
6. the placeholder disabled on request, then a rerun of site.yml that changes
   nothing, and playbooks/verify.yml finding no fault.

Afterwards the lab is given back: the guide's gateway container is removed and
site.yml runs on the lab's own inventory. Runs plays and replaces the fleet's
services: molecule only, or AI_FLEET_PLAY_TESTS=1 on a lab with a spare GPU host.
"""

from __future__ import annotations

import json
import os
import re
import subprocess
import time
import urllib.request
from pathlib import Path

import pytest
import yaml
from conftest import AI_NODE_DEFAULTS, ROOT, inventory_groups, needs_plays, run_ok, run_playbook
from fleet import (
    GUIDE_PROJECT,
    STACK_CONTAINERS,
    UnderLoad,
    container_address,
    guide_stack,
    host_of,
    record,
    remove_guide_stack,
    run_guide_stack,
)

pytestmark = needs_plays

SPARE_GROUP = "spare_gpu_nodes"
GATEWAY_CONTAINER = "meeting-nginx-gateway"
GUIDE_NGINX = "/srv/meeting-system/nginx"
CONF_D = f"{GUIDE_NGINX}/conf.d"
INCLUDE = f"{CONF_D}/ai_inference_service.servers.local.conf"
PLACEHOLDER = f"{CONF_D}/ai_inference_service.servers.conf"
GUIDE_FIXTURES = ROOT / "tests" / "fixtures" / "guide-gateway"
LAB_GROUP_VARS = ROOT / "molecule" / "shared" / "inventory" / "group_vars"
# Where the node role keeps the configuration the guide's service ran with.
ADOPTED_CONFIG = "/etc/ai-node/adopted-ai-inference-service.yaml"
RENDERED_CONFIG = "/etc/ai-node/ai-inference-service.yaml"
ENV_FILE = "/etc/ai-node/ai-inference-service.env"
# A name the gateway host resolves (its /etc/hosts) but its nginx container does not.
HOST_ONLY_NAME = "guide-node-1.lab"

GUIDE_GATEWAY_SETUP = """\
- name: The guide's gateway machine, with Docker and the guide's nginx files
  hosts: "{{ guide_gateway_host }}"
  become: true
  vars:
    docker_engine_source: distribution
  roles:
    - role: docker_engine
  tasks:
    - name: Copy the guide's nginx configuration
      ansible.builtin.copy:
        src: "{{ guide_fixtures }}/"
        dest: /srv/meeting-system/nginx/
        mode: "0644"
        directory_mode: "0755"

    - name: Copy the guide's gateway image
      ansible.builtin.copy:
        src: "{{ guide_image_archive }}"
        dest: /var/tmp/guide-gateway.tar
        mode: "0644"

    - name: Load the guide's gateway image
      community.docker.docker_image_load:
        path: /var/tmp/guide-gateway.tar

- name: The guide's GPU nodes have no firewall of this project
  hosts: gpu_nodes
  become: true
  tasks:
    - name: Remove the node API firewall
      ansible.builtin.include_role:
        name: ai_node_firewall
      vars:
        ai_node_firewall_enabled: false
"""


def squeeze(text: str) -> str:
    """The YAML callback wraps long messages: compare with single spaces."""
    return " ".join(text.split())


def recap(output: str) -> dict[str, dict[str, int]]:
    """`{host: {ok, changed, failed, ...}}` from a play's PLAY RECAP."""
    found = {}
    for host, counts in re.findall(r"^(\S+)\s+:\s+(ok=.*)$", output, re.MULTILINE):
        found[host] = {k: int(v) for k, v in re.findall(r"(\w+)=(\d+)", counts)}
    return found


def get(url: str) -> int:
    try:
        with urllib.request.urlopen(url, timeout=10) as answer:
            return answer.status
    except OSError:
        return 0


class Move:
    """The lab, its guide-built state, and the inventory MIGRATING.md builds for it."""

    def __init__(self, lab_inventory: str, tmp: Path):
        """Read the lab from its inventory; nothing changes yet."""
        groups = inventory_groups(lab_inventory)
        self.lab_inventory = lab_inventory
        self.hostvars = groups["_meta"]["hostvars"]
        self.lab_nodes = sorted(groups["gpu_nodes"]["hosts"])
        spares = sorted(groups.get(SPARE_GROUP, {}).get("hosts", []))
        self.gateway_name = spares[0] if spares else None
        self.repos = sorted(groups.get("package_repos", {}).get("hosts", []))
        self.inventory = tmp / "inventory"
        self.tmp = tmp
        self.address = {name: container_address(name) for name in [*self.lab_nodes, *spares]}
        self.url = f"http://{self.address.get(self.gateway_name)}:80"

    def host(self, name: str):
        return host_of(self.lab_inventory, name)

    @property
    def gateway(self):
        return self.host(self.gateway_name)

    def ssh_port(self, name: str) -> int:
        return int(self.hostvars[name].get("ansible_port", 22))

    def settings(self, name: str) -> dict:
        return {**AI_NODE_DEFAULTS, **self.host(name).ansible.get_variables()}

    def play(self, playbook: str, *args: str, inventory: str | None = None, ok: bool = True):
        """Run a playbook (on the migration inventory by default); return (rc, output)."""
        result = run_playbook(inventory or str(self.inventory), ROOT / playbook, args=args)
        output = result.stdout + result.stderr
        if ok:
            assert result.returncode == 0, f"{playbook} failed:\n{output[-5000:]}"
        return result.returncode, output

    def nginx_processes(self) -> tuple[str, set[str]]:
        """(master pid, worker pids) of the guide's gateway container."""
        top = run_ok(self.gateway, "docker", "top", GATEWAY_CONTAINER, "-o", "pid,args")
        rows = [line.split(None, 1) for line in top.splitlines()[1:] if line.strip()]
        master = [pid for pid, args in rows if args.startswith("nginx: master")]
        workers = {pid for pid, args in rows if args == "nginx: worker process"}
        return master[0], workers

    def include_servers(self) -> dict[str, str]:
        """`{address:port: up|down}` of the include file on the gateway host."""
        text = self.gateway.file(INCLUDE).content_string
        lines = [line.rstrip(";").split() for line in text.splitlines()]
        return {w[1]: "down" if w[-1] == "down" else "up" for w in lines if w and w[0] == "server"}

    def upstreams(self) -> set[str]:
        return {f"{self.address[name]}:8800" for name in self.lab_nodes}

    def connection(self) -> dict:
        """The lab's SSH settings for every host (user, key, known_hosts, become)."""
        first = self.hostvars[self.lab_nodes[0]]
        keys = (
            "ansible_user",
            "ansible_private_key_file",
            "ansible_ssh_private_key_file",
            "ansible_ssh_common_args",
        )
        return {**{k: first[k] for k in keys if k in first}, "ansible_become": True}


def build_guide_fleet(move: Move) -> None:
    """Turn the lab into the fleet the guide's scripts would have built."""
    setup = move.tmp / "guide-setup.yml"
    setup.write_text(GUIDE_GATEWAY_SETUP)
    extra = move.tmp / "guide-setup.json"
    extra.write_text(
        json.dumps(
            {
                "guide_gateway_host": move.gateway_name,
                "guide_fixtures": str(GUIDE_FIXTURES),
                "guide_image_archive": str(ROOT / ".cache" / "images" / "guide-gateway.tar"),
            }
        )
    )
    result = run_playbook(move.lab_inventory, setup, extra_vars=extra)
    assert result.returncode == 0, (result.stdout + result.stderr)[-5000:]
    for name in move.lab_nodes:
        run_guide_stack(move.host(name), move.settings(name), name)
    # What gen_ai_inference_service_servers_conf.sh writes: a timestamp, one line a node.
    generated = "".join(
        f"server {upstream} max_fails=3 fail_timeout=30s;\n"
        for upstream in sorted(move.upstreams())
    )
    stamp = time.strftime("%Y-%m-%d %H:%M:%S")
    gateway = move.gateway
    run_ok(
        gateway,
        "sh",
        "-c",
        f"printf '%s\\n' '# generated at {stamp}' > {INCLUDE} && printf '{generated}' >> {INCLUDE}",
    )
    gateway.run(f"docker rm -f {GATEWAY_CONTAINER}")
    # The guide's gateway never had this project's state (drain record, reload stamp).
    run_ok(gateway, "rm", "-rf", "/var/lib/ai-gateway")
    mounts = [
        *("-v", f"{GUIDE_NGINX}/nginx.conf:/etc/nginx/nginx.conf:ro"),
        *("-v", f"{GUIDE_NGINX}/ai_proxy_params:/etc/nginx/ai_proxy_params:ro"),
        *("-v", f"{CONF_D}:/etc/nginx/conf.d:ro"),
    ]
    run_ok(
        gateway,
        *("docker", "run", "-d", "--name", GATEWAY_CONTAINER, "--restart", "unless-stopped"),
        *("-p", "80:80", *mounts, "ai-fleet-lab/guide-gateway:latest"),
    )
    deadline = time.monotonic() + 60
    while get(f"{move.url}/api/v1/ai/info") != 200:
        assert time.monotonic() < deadline, "the guide's gateway does not serve the nodes"
        time.sleep(1)


def write_migration_inventory(move: Move) -> None:
    """The inventory folder MIGRATING.md builds, beside the exported node list."""
    inventory = move.inventory
    (inventory / "group_vars").mkdir(parents=True, exist_ok=True)
    for name in ("all.yml", "gpu_nodes.yml"):
        (inventory / "group_vars" / name).write_text((LAB_GROUP_VARS / name).read_text())
    (inventory / "group_vars" / "gateways.yml").write_text(
        yaml.safe_dump(
            {
                "ai_gateway_mode": "existing",
                "ai_gateway_container": GATEWAY_CONTAINER,
                "ai_gateway_conf_dir": CONF_D,
            }
        )
    )
    gateway = {"ansible_host": move.address[move.gateway_name]}
    # The lab's package repository, named by the lab's group_vars; never reached.
    repos = {name: {"ansible_connection": "local"} for name in move.repos}
    hosts = {
        "all": {
            "vars": move.connection(),
            "children": {
                "gateways": {"hosts": {move.gateway_name: gateway}},
                "package_repos": {"hosts": repos},
            },
        }
    }
    (inventory / "hosts.yml").write_text(yaml.safe_dump(hosts))


@pytest.fixture(scope="module")
def move(ansible_inventory, tmp_path_factory):
    lab = Move(ansible_inventory, tmp_path_factory.mktemp("migration"))
    if lab.gateway_name is None:
        pytest.skip(f"needs a spare GPU host (group {SPARE_GROUP}) to run the guide's gateway")
    if len(lab.lab_nodes) < 2:
        pytest.skip("needs at least two GPU nodes")
    build_guide_fleet(lab)
    write_migration_inventory(lab)
    yield lab
    lab.gateway.run(f"docker rm -f {GATEWAY_CONTAINER}")
    for name in lab.lab_nodes:
        remove_guide_stack(lab.host(name))
        lab.host(name).run(f"rm -f {ADOPTED_CONFIG}")
    # The lab as it was: the project's stack, the firewall open to the lab's gateways.
    lab.play("site.yml", inventory=lab.lab_inventory)


def test_1_the_node_lists_are_imported_with_the_documented_command(move):
    nodes = " ".join(f"{move.address[n]}:{move.ssh_port(n)}" for n in move.lab_nodes)
    upstreams = ",".join(sorted(move.upstreams()))
    env = dict(
        os.environ,
        GPU_AI_NODES=nodes,
        AI_INFERENCE_UPSTREAMS=upstreams,
        ANSIBLE_INVENTORY_ANY_UNPARSED_IS_FAILED="true",
        # Under molecule the suites run with molecule's ansible.cfg, not the
        # project's (which names plugins/inventory): name the plugins here.
        ANSIBLE_INVENTORY_PLUGINS=str(ROOT / "plugins" / "inventory"),
    )
    exported = move.inventory / "gpu_nodes.yml"
    subprocess.run(
        [
            *("ansible-inventory", "-i", "docs/migrating/ai_guide_nodes.yml"),
            *("--list", "--yaml", "--export", "--output", str(exported)),
        ],
        cwd=ROOT,
        env=env,
        check=True,
        capture_output=True,
    )
    groups = inventory_groups(str(move.inventory))
    assert sorted(groups["gpu_nodes"]["hosts"]) == sorted(move.address[n] for n in move.lab_nodes)
    for name in move.lab_nodes:
        found = groups["_meta"]["hostvars"][move.address[name]]
        assert found["ansible_host"] == move.address[name]
        assert int(found["ansible_port"]) == move.ssh_port(name)
        assert found["ai_node_public_host"] == move.address[name]
        assert int(found["ai_node_public_port"]) == 8800
    assert sorted(groups["gateways"]["hosts"]) == [move.gateway_name]


def test_2_site_yml_refuses_the_guide_nodes_without_the_switch(move):
    stacks = {name: guide_stack(move.host(name)) for name in move.lab_nodes}
    include = move.gateway.file(INCLUDE).content_string
    code, output = move.play("site.yml", ok=False)
    output = squeeze(output)
    assert code != 0
    for name in move.lab_nodes:
        node = move.address[name]
        refused = f"{node}: this node runs the original guide's Compose stack"
        assert refused in output, output[-4000:]
    assert f"Compose project {GUIDE_PROJECT}" in output
    assert "set ai_node_adopt: true" in output
    assert "Apply the node roles" not in output, output[-4000:]
    assert {name: guide_stack(move.host(name)) for name in move.lab_nodes} == stacks
    assert move.gateway.file(INCLUDE).content_string == include


def test_3_the_guide_gateway_is_taken_over_in_existing_mode(move):
    master, workers = move.nginx_processes()
    with UnderLoad(move, "take over the guide's gateway") as run:
        _, output = move.play("playbooks/gateways.yml")
    record("taking over the guide's gateway container (existing mode)", run.counts)
    assert run.counts["failed"] == 0, run.counts
    output = squeeze(output)
    # The placeholder beside the include file is reported, not touched.
    assert f"nginx also includes {PLACEHOLDER} into upstream ai_inference_service" in output
    assert "server 127.0.0.1:8085 backup" in output
    assert "a backup server gets the traffic when every node is down" in output
    assert (
        move.gateway.file(PLACEHOLDER).content_string
        == (GUIDE_FIXTURES / "conf.d" / "ai_inference_service.servers.conf").read_text()
    )
    # The generator's file is now the role's: every node, no timestamp.
    text = move.gateway.file(INCLUDE).content_string
    assert "generated at" not in text
    assert move.include_servers() == dict.fromkeys(move.upstreams(), "up")
    # Reloaded through docker exec, and proven: the same master, new workers.
    new_master, new_workers = move.nginx_processes()
    assert new_master == master
    assert new_workers and not new_workers & workers


def test_4_a_change_nginx_refuses_is_put_back_and_nginx_keeps_serving(move):
    gateway, first = move.gateway, move.lab_nodes[0]
    host_vars = move.inventory / "host_vars" / f"{move.address[first]}.yml"
    host_vars.parent.mkdir(exist_ok=True)
    host_vars.write_text(yaml.safe_dump({"ai_node_public_host": HOST_ONLY_NAME}))
    # The gateway host resolves the name (its probe passes); the container does not.
    hosts_line = f"{move.address[first]} {HOST_ONLY_NAME}"
    run_ok(gateway, "sh", "-c", f"echo '{hosts_line}' >> /etc/hosts")
    before, processes = gateway.file(INCLUDE).content_string, move.nginx_processes()
    try:
        with UnderLoad(move, "a change the gateway refuses") as run:
            code, output = move.play("playbooks/gateways.yml", ok=False)
    finally:
        host_vars.unlink()
        # /etc/hosts of a lab host is a bind mount: rewritten in place, not replaced.
        kept = f"grep -v ' {HOST_ONLY_NAME}$' /etc/hosts > /tmp/hosts.kept"
        run_ok(gateway, "sh", "-c", f"{kept}; cat /tmp/hosts.kept > /etc/hosts")
    record("a change the guide's gateway refuses (nginx -t)", run.counts)
    output = squeeze(output)
    assert code != 0
    assert f"docker exec {GATEWAY_CONTAINER} nginx -t rejected the change" in output, output[-4000:]
    assert f'host not found in upstream "{HOST_ONLY_NAME}' in output, output[-4000:]
    assert f"put back: {INCLUDE}" in output
    assert "nginx was not reloaded and keeps serving its current configuration" in output
    assert gateway.file(INCLUDE).content_string == before
    assert move.nginx_processes() == processes
    assert run.counts["failed"] == 0, run.counts
    assert get(f"{move.url}/api/v1/ai/info") == 200


def test_5_every_node_is_adopted_one_at_a_time_without_a_failed_request(move):
    with UnderLoad(move, "adopt the guide's nodes") as run:
        _, output = move.play("site.yml", "-e", "ai_node_adopt=true")
    record("adopting every node of the guide behind its own gateway", run.counts)
    assert run.counts["failed"] == 0, run.counts
    output = squeeze(output)
    for name in move.lab_nodes:
        host = move.host(name)
        node = move.address[name]
        assert f"{node}: took over the stack of the original guide" in output, output[-4000:]
        assert guide_stack(host) == {}
        running = run_ok(host, "docker", "ps", "--format", "{{.Names}}").split()
        assert set(STACK_CONTAINERS) <= set(running), running
    assert f"Compose project {GUIDE_PROJECT}" in output
    assert "(drained first)" in output
    assert move.include_servers() == dict.fromkeys(move.upstreams(), "up")
    # Every setting the guide's service ran with is kept; the one the role manages is named.
    assert "ai.request.audio_stream_chunk_delay_ms: 20 -> 10" in output, output[-4000:]
    for secret in ("guide-redis-password-0123", "guide-node-secret-0123456789"):
        assert secret not in output
    for name in move.lab_nodes:
        host = move.host(name)
        kept = host.file(ADOPTED_CONFIG)
        assert kept.exists and kept.mode == 0o600 and kept.user == "root"
        rendered_text = host.file(RENDERED_CONFIG).content_string
        rendered = yaml.safe_load(rendered_text)
        # The guide's passwords stay out of the world-readable file: the 0600 env file has them.
        assert rendered["redis"] == {"host": "redis.guide.lab", "port": 6380, "db": 2}
        assert "guide-redis-password-0123" not in rendered_text
        env_file = host.file(ENV_FILE)
        assert env_file.mode == 0o600
        assert "REDIS_PASSWORD=guide-redis-password-0123" in env_file.content_string.splitlines()
        assert rendered["log"]["level"] == "debug"
        assert rendered["monitoring"] == {"enabled": False}
        assert rendered["server"]["read_timeout"] == 90
        assert rendered["jwt"] == {"expire_hours": 12}
        assert rendered["ai"]["request"]["audio_stream_chunk_delay_ms"] == 10


def test_6_the_placeholder_is_disabled_on_request_and_a_rerun_changes_nothing(move):
    disable = ("-e", "ai_gateway_sibling_includes=disable")
    move.play("site.yml", *disable)
    placeholder = move.gateway.file(PLACEHOLDER).content_string
    assert placeholder.startswith("# Disabled by the ai_gateway role")
    assert "# server 127.0.0.1:8085 backup;" in placeholder
    assert not [line for line in placeholder.splitlines() if line.startswith("server")]
    assert get(f"{move.url}/api/v1/ai/info") == 200
    _, output = move.play("site.yml", *disable)
    changed = {host: counts["changed"] for host, counts in recap(output).items()}
    assert changed and set(changed.values()) == {0}, changed
    # MIGRATING.md's last check: the fleet's report finds no fault (it exits non-zero on any).
    _, report = move.play("playbooks/verify.yml")
    assert move.gateway_name in report
    assert all(move.address[name] in report for name in move.lab_nodes), report[-3000:]
