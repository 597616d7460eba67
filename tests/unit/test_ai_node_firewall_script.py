"""The node firewall script (roles/ai_node_firewall/templates/ai-node-firewall.sh.j2).

The template is rendered as the role renders it (its rules from the project's
filter, its fixed names from the role's vars/main.yml) and run under `sh`
against a stand-in for iptables: a small emulator that keeps each family's
chains in a JSON file and understands what the script uses (`-S`, `-D`, `-F`,
`-X` and `iptables-restore --noflush`, all-or-nothing). What the real
iptables prints and does was checked on a Docker-in-Docker host; the
integration suite (tests/integration/test_node_firewall.py) runs it for real.
"""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
import textwrap
from pathlib import Path

import jinja2
import pytest
import yaml
from plugin_loader import ROOT, load_plugin

# Runs ansible, ansible-playbook or nginx: left out of `make check`.
pytestmark = pytest.mark.playbook

ROLE = ROOT / "roles" / "ai_node_firewall"
TEMPLATE = ROLE / "templates" / "ai-node-firewall.sh.j2"
UNIT = ROLE / "templates" / "ai-node-firewall.service.j2"
SHELLS = [shell for shell in ("dash", "bash") if shutil.which(shell)]

JUMP = "-A DOCKER-USER -j AI-NODE-API"

# The stand-in: `iptables`, `iptables-restore`, `ip6tables`, `ip6tables-restore`
# are links to this file; the family is in the name, the state in
# $FAKE_IPTABLES_STATE/<family>.json ({chain: [rule, ...]}), each call logged.
FAKE = textwrap.dedent(
    r"""
    #!PYTHON
    import json, os, sys
    name = os.path.basename(sys.argv[0])
    family = "ipv6" if name.startswith("ip6") else "ipv4"
    path = os.path.join(os.environ["FAKE_IPTABLES_STATE"], family + ".json")
    with open(os.path.join(os.environ["FAKE_IPTABLES_STATE"], "calls.log"), "a") as log:
        log.write(" ".join([name] + sys.argv[1:]) + "\n")
    chains = json.load(open(path)) if os.path.exists(path) else {}

    def fail(text):
        sys.stderr.write(name + ": " + text + "\n")
        sys.exit(1)

    def run(chains, argv):
        argv = [a for a in argv if a != "-w"]
        op, chain, rest = argv[0], argv[1] if len(argv) > 1 else "", argv[2:]
        if op != "-N" and chain not in chains:
            fail("No chain/target/match by that name: " + chain)
        if op == "-S":
            print("-N " + chain)
            for rule in chains[chain]:
                print("-A %s %s" % (chain, rule))
        elif op == "-N":
            if chain in chains:
                fail("Chain already exists")
            chains[chain] = []
        elif op == "-A":
            chains[chain].append(" ".join(rest))
        elif op == "-I":
            chains[chain].insert(int(rest[0]) - 1, " ".join(rest[1:]))
        elif op == "-D":
            rule = " ".join(rest)
            if rule not in chains[chain]:
                fail("Bad rule (does a matching rule exist in that chain?)")
            chains[chain].remove(rule)
        elif op == "-F":
            chains[chain] = []
        elif op == "-X":
            if chains[chain] or any(r.endswith("-j " + chain) for c in chains.values() for r in c):
                fail("Directory not empty / in use")
            del chains[chain]
        else:
            fail("unsupported " + op)

    before = json.dumps(chains, sort_keys=True)
    if name.endswith("-restore"):
        if "--noflush" not in sys.argv:
            fail("the script must never flush whole tables")
        work = json.loads(json.dumps(chains))
        for line in sys.stdin.read().splitlines():
            if not line or line == "*filter" or line == "COMMIT":
                continue
            if line.startswith(":"):
                work[line[1:].split()[0]] = []
            else:
                run(work, line.split())
        chains = work
    else:
        run(chains, sys.argv[1:])
    if json.dumps(chains, sort_keys=True) != before:
        with open(path + ".new", "w") as out:
            json.dump(chains, out)
        os.replace(path + ".new", path)
    """
).replace("#!PYTHON", "#!" + sys.executable + " -IS")


FW = load_plugin("filter", "ai_node_firewall")
ROLE_VARS = {
    name: value
    for name, value in yaml.safe_load((ROLE / "vars" / "main.yml").read_text()).items()
    if isinstance(value, str) and "{{" not in value
}


def render(template: Path, sources: dict, port: int = 8800, **options) -> str:
    """Render a template of the role as its tasks do (rules from the project's filter)."""
    env = jinja2.Environment(keep_trailing_newline=True, undefined=jinja2.StrictUndefined)
    env.filters["bool"] = bool
    is_open = options.get("open", False)
    deny = options.get("deny", "drop")
    context = {
        **ROLE_VARS,
        "ansible_managed": "Ansible managed",
        "ai_node_firewall_port": port,
        "ai_node_firewall_open": is_open,
        "__ai_node_firewall_rules": {
            family: FW.ai_node_firewall_rules(
                sources, port, family=family, deny=deny, open=is_open, chain="AI-NODE-API"
            )
            for family in ("ipv4", "ipv6")
        },
    }
    return env.from_string(template.read_text()).render(context)


class Node:
    """A rendered script and a stand-in iptables with the state Docker leaves."""

    def __init__(self, tmp_path: Path, shell: str, ipv6: bool = True, docker: bool = True):
        """Install the stand-in tools, Docker's chains (unless not docker) and the script."""
        self.shell = shell
        self.state = tmp_path / "state"
        self.state.mkdir()
        self.bin = tmp_path / "bin"
        self.bin.mkdir()
        fake = self.bin / "fake-iptables"
        fake.write_text(FAKE.lstrip())
        fake.chmod(0o755)
        tools = ["iptables", "iptables-restore"] + (
            ["ip6tables", "ip6tables-restore"] if ipv6 else []
        )
        for tool in tools:
            (self.bin / tool).symlink_to(fake)
        for family in ("ipv4", "ipv6"):
            chains = {"DOCKER-USER": ["-j RETURN"]} if docker else {}
            (self.state / f"{family}.json").write_text(json.dumps(chains))
        self.script = tmp_path / "ai-node-firewall"
        self.write({"ipv4": ["10.0.0.5/32"], "ipv6": ["2001:db8::5/128"]})

    def write(self, sources: dict, **options) -> None:
        """(Re)install the script for these sources."""
        self.script.write_text(render(TEMPLATE, sources, **options))
        self.script.chmod(0o755)

    def run(self, *args: str, path: str | None = None) -> subprocess.CompletedProcess:
        """Run the script with the stand-in first on PATH (never the host's iptables)."""
        env = {"PATH": path or f"{self.bin}:/usr/bin:/bin", "FAKE_IPTABLES_STATE": str(self.state)}
        return subprocess.run(
            [self.shell, str(self.script), *args],
            capture_output=True,
            text=True,
            env=env,
            timeout=30,
            check=False,
        )

    def chains(self, family: str = "ipv4") -> dict:
        """The stand-in's chains of a family."""
        return json.loads((self.state / f"{family}.json").read_text())

    def set_chains(self, chains: dict, family: str = "ipv4") -> None:
        """Replace the chains of a family (a change made behind the script's back)."""
        (self.state / f"{family}.json").write_text(json.dumps(chains))

    def restores(self) -> int:
        """How many iptables-restore transactions ran."""
        log = self.state / "calls.log"
        calls = log.read_text().splitlines() if log.exists() else []
        return sum(1 for call in calls if "-restore" in call.split()[0])


@pytest.fixture
def node(tmp_path) -> Node:
    return Node(tmp_path, SHELLS[0])


def wanted_chain(sources: list[str], family: str = "ipv4", port: int = 8800) -> list[str]:
    """The rules of AI-NODE-API without the chain name, as the stand-in stores them."""
    lines = FW.ai_node_firewall_rules({family: sources}, port, family=family)
    return [line.split(" ", 2)[2] for line in lines]


def test_shells_are_there():
    assert SHELLS, "neither dash nor bash is installed"


def test_render_prints_the_filter_rules(node):
    result = node.run("render")
    assert result.returncode == 0, result.stderr
    expected = ["# ipv4", "-N AI-NODE-API"]
    expected += FW.ai_node_firewall_rules({"ipv4": ["10.0.0.5/32"]}, 8800, family="ipv4")
    expected += ["# ipv6", "-N AI-NODE-API"]
    expected += FW.ai_node_firewall_rules({"ipv6": ["2001:db8::5/128"]}, 8800, family="ipv6")
    assert result.stdout.splitlines() == expected


@pytest.mark.parametrize("shell", SHELLS)
def test_check_then_apply_then_in_sync(tmp_path, shell):
    node = Node(tmp_path, shell)
    result = node.run("check")
    assert result.returncode == 2, result.stderr
    assert "ipv4: chain AI-NODE-API differs" in result.stdout
    assert "it has 0, first rule: -A DOCKER-USER -j RETURN" in result.stdout

    result = node.run("apply")
    assert result.returncode == 0, result.stderr
    assert result.stdout.splitlines() == ["ipv4: applied", "ipv6: applied"]
    for family, source in (("ipv4", "10.0.0.5/32"), ("ipv6", "2001:db8::5/128")):
        chains = node.chains(family)
        assert chains["DOCKER-USER"] == ["-j AI-NODE-API", "-j RETURN"]
        assert chains["AI-NODE-API"] == wanted_chain([source], family)
    # One atomic transaction per family.
    assert node.restores() == 2

    result = node.run("check")
    assert result.returncode == 0, result.stdout
    assert result.stdout.splitlines() == ["ipv4: in sync", "ipv6: in sync"]


def test_apply_twice_changes_nothing_the_second_time(node):
    assert node.run("apply").returncode == 0
    result = node.run("apply")
    assert result.returncode == 0
    assert result.stdout.splitlines() == ["ipv4: unchanged", "ipv6: unchanged"]
    assert node.restores() == 2


def test_new_sources_replace_the_chain_and_keep_one_jump(node):
    node.run("apply")
    node.write({"ipv4": ["10.0.0.6/32", "10.9.0.0/16"], "ipv6": []}, deny="reject")
    assert node.run("check").returncode == 2
    assert node.run("apply").returncode == 0
    chains = node.chains()
    assert chains["AI-NODE-API"][1:3] == [
        "-s 10.0.0.6/32 -p tcp -m conntrack --ctorigdstport 8800 --ctdir ORIGINAL -j RETURN",
        "-s 10.9.0.0/16 -p tcp -m conntrack --ctorigdstport 8800 --ctdir ORIGINAL -j RETURN",
    ]
    assert chains["AI-NODE-API"][-1].endswith("-j REJECT --reject-with tcp-reset")
    assert chains["DOCKER-USER"] == ["-j AI-NODE-API", "-j RETURN"]
    assert node.run("check").returncode == 0


def test_a_jump_that_is_not_first_or_not_alone_is_put_right(node):
    node.run("apply")
    chains = node.chains()
    chains["DOCKER-USER"] = [
        "-j RETURN",
        "-j AI-NODE-API",
        "-s 10.1.1.1/32 -j DROP",
        "-j AI-NODE-API",
    ]
    node.set_chains(chains)
    result = node.run("check")
    assert result.returncode == 2
    assert "it has 2, first rule: -A DOCKER-USER -j RETURN" in result.stdout
    assert node.run("apply").returncode == 0
    assert node.chains()["DOCKER-USER"] == ["-j AI-NODE-API", "-j RETURN", "-s 10.1.1.1/32 -j DROP"]


def test_a_rule_changed_by_hand_is_found_and_restored(node):
    node.run("apply")
    chains = node.chains()
    chains["AI-NODE-API"].insert(1, "-j RETURN")
    node.set_chains(chains)
    result = node.run("check")
    assert result.returncode == 2
    assert "  - -A AI-NODE-API -j RETURN" in result.stdout
    node.run("apply")
    assert node.chains()["AI-NODE-API"] == wanted_chain(["10.0.0.5/32"])


def test_open_on_purpose(node):
    node.write({"ipv4": [], "ipv6": []}, open=True)
    node.run("apply")
    assert node.chains()["AI-NODE-API"] == [
        "-m conntrack --ctstate RELATED,ESTABLISHED -j RETURN",
        "-p tcp -m conntrack --ctorigdstport 8800 --ctdir ORIGINAL -j RETURN",
    ]


def test_remove_deletes_chain_and_jumps_and_check_removed_agrees(node):
    assert node.run("check-removed").returncode == 0
    node.run("apply")
    chains = node.chains()
    chains["DOCKER-USER"].append("-j AI-NODE-API")
    node.set_chains(chains)
    result = node.run("check-removed")
    assert result.returncode == 2
    assert "ipv4: chain AI-NODE-API or its jump is present" in result.stdout
    result = node.run("remove")
    assert result.returncode == 0, result.stderr
    assert result.stdout.splitlines() == ["ipv4: removed", "ipv6: removed"]
    for family in ("ipv4", "ipv6"):
        assert node.chains(family) == {"DOCKER-USER": ["-j RETURN"]}
    assert node.run("check-removed").returncode == 0
    assert node.run("remove").stdout.splitlines() == [
        "ipv4: nothing to remove",
        "ipv6: nothing to remove",
    ]


@pytest.mark.parametrize("mode", ["apply", "check"])
def test_missing_iptables_is_an_error_that_says_so(node, mode):
    result = node.run(mode, path="/nonexistent:/usr/bin:/bin")
    assert result.returncode == 1
    assert "iptables (and iptables-restore) not found" in result.stderr
    assert "install the iptables package" in result.stderr


@pytest.mark.parametrize("mode", ["apply", "check"])
def test_missing_docker_chain_is_an_error_that_says_so(tmp_path, mode):
    node = Node(tmp_path, SHELLS[0], docker=False)
    result = node.run(mode)
    assert result.returncode == 1
    assert "iptables has no DOCKER-USER chain" in result.stderr
    assert "Docker is not running" in result.stderr
    assert node.chains() == {}


def test_ipv6_is_skipped_without_ip6tables(tmp_path):
    node = Node(tmp_path, SHELLS[0], ipv6=False)
    result = node.run("apply")
    assert result.returncode == 0, result.stderr
    assert result.stdout.splitlines() == [
        "ipv4: applied",
        "ipv6: skipped: ip6tables is not installed",
    ]
    assert node.run("check").returncode == 0


def test_ipv6_is_skipped_when_docker_does_not_filter_ipv6(node):
    node.set_chains({}, family="ipv6")
    result = node.run("apply")
    assert result.returncode == 0
    assert "ipv6: skipped: ip6tables has no DOCKER-USER chain" in result.stdout
    assert node.chains("ipv6") == {}
    assert node.run("check").returncode == 0


def test_unknown_mode_prints_usage(node):
    result = node.run("frobnicate")
    assert result.returncode == 64
    assert "usage:" in result.stderr


@pytest.mark.skipif(not shutil.which("shellcheck"), reason="shellcheck is not installed")
def test_shellcheck_finds_nothing(tmp_path):
    script = tmp_path / "ai-node-firewall"
    script.write_text(render(TEMPLATE, {"ipv4": ["10.0.0.5/32"], "ipv6": []}))
    result = subprocess.run(
        ["shellcheck", "--shell=sh", str(script)], capture_output=True, text=True, check=False
    )
    assert result.returncode == 0, result.stdout


def test_unit_runs_the_script_whenever_docker_starts():
    unit = render(UNIT, {"ipv4": [], "ipv6": []})
    lines = [line.strip() for line in unit.splitlines() if line and not line.startswith("#")]
    assert "Type=oneshot" in lines
    assert "RemainAfterExit=yes" in lines
    assert "After=docker.service" in lines
    assert "BindsTo=docker.service" in lines
    assert "PartOf=docker.service" in lines
    assert "WantedBy=docker.service" in lines
    assert f"ExecStart={ROLE_VARS['__ai_node_firewall_script']} apply" in lines
    assert not any(line.startswith("ExecStop") for line in lines)
