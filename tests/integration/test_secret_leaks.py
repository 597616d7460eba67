"""No secret in any output: a converge, a no-op re-run and a failing run at -vvv.

The runs use a new JWT secret on one GPU node (behind one gateway), with
`--diff`, `log_path` and a fact cache, and the failing run makes the service
print its secret into its log before it dies, so that the failure report (the
last log lines of each container) has it to hide. Then none of these may hold
either secret (the new one or the fleet's own): the output of any run, the log
file, the fact cache, the node's non-secret files (the service configuration,
the fleet fingerprint) and the gateway's files. A last run puts the fleet's own
settings back. The result is written to .cache/test-results/secret-leaks.json.

These tests run ansible-playbook against the suite's inventory. They run under
molecule; against another fleet only with AI_FLEET_PLAY_TESTS=1.
"""

from __future__ import annotations

import json
import re
import secrets

import pytest
import testinfra
from conftest import ROOT, inventory_groups, needs_plays, run_playbook

pytestmark = needs_plays

SITE = ROOT / "site.yml"
RESULTS = ROOT / ".cache" / "test-results" / "secret-leaks.json"
NODE_FILES = ("/etc/ai-node/ai-inference-service.yaml", "/var/lib/ai-fleet/node.fingerprint")
GATEWAY_FILES = (
    "/etc/nginx/ai-gateway.d/ai_inference_service.servers.local.conf",
    "/etc/nginx/conf.d/ai_gateway.conf",
    "/var/lib/ai-gateway/drained.json",
)
MASK = "********"


@pytest.fixture(scope="module")
def runs(ansible_inventory, tmp_path_factory):
    """Run the four plays once for the module; return what they left behind."""
    tmp = tmp_path_factory.mktemp("secret-leaks")
    groups = inventory_groups(ansible_inventory)
    node = sorted(groups["gpu_nodes"]["hosts"])[0]
    gateway = sorted(groups["gateways"]["hosts"])[0]
    node_host = testinfra.get_host(f"ansible://{node}?ansible_inventory={ansible_inventory}")
    fleet_secret = _env_secret(node_host)
    new_secret = secrets.token_hex(32)
    log_file = tmp / "ansible.log"
    env = {
        "ANSIBLE_LOG_PATH": str(log_file),
        "ANSIBLE_CACHE_PLUGIN": "ansible.builtin.jsonfile",
        "ANSIBLE_CACHE_PLUGIN_CONNECTION": str(tmp / "facts"),
        "ANSIBLE_GATHERING": "smart",
    }
    args = ("-vvv", "--diff", "--limit", f"{node},{gateway}")

    def play(name: str, extra: dict):
        extra_file = tmp / f"{name}.json"
        extra_file.write_text(json.dumps(extra))
        result = run_playbook(ansible_inventory, SITE, extra_vars=extra_file, args=args, env=env)
        return result.returncode, result.stdout + result.stderr

    with_new = {"ai_node_jwt_secret": new_secret}
    failing = {
        **with_new,
        # The service prints its secret, then dies: the failure report shows its log.
        "ai_node_inference_command": [
            "sh",
            "-c",
            'echo "starting with JWT_SECRET=$JWT_SECRET"; sleep 2; exit 3',
        ],
        "ai_node_health_timeout": 6,
    }
    outputs = {}
    codes = {}
    for name, extra in (
        ("converge", with_new),
        ("re-run", with_new),
        ("failing", failing),
        ("restore", {}),
    ):
        codes[name], outputs[name] = play(name, extra)
    files = {f"{node}:{path}": node_host.run(f"cat {path}").stdout for path in NODE_FILES}
    gateway_host = testinfra.get_host(f"ansible://{gateway}?ansible_inventory={ansible_inventory}")
    files.update(
        {f"{gateway}:{path}": gateway_host.run(f"cat {path}").stdout for path in GATEWAY_FILES}
    )
    return {
        "codes": codes,
        "outputs": outputs,
        "log": log_file.read_text() if log_file.exists() else "",
        "facts": "\n".join(p.read_text() for p in (tmp / "facts").glob("*") if p.is_file()),
        "files": files,
        "secrets": {"new": new_secret, "fleet": fleet_secret},
        "node": node,
        "node_host": node_host,
    }


def _env_secret(host) -> str:
    text = host.run("cat /etc/ai-node/ai-inference-service.env").stdout
    found = re.findall(r"^JWT_SECRET=(.+)$", text, re.M)
    assert len(found) == 1, "the node's environment file has no JWT_SECRET"
    return found[0]


def _where(runs: dict, secret: str) -> list[str]:
    places = [f"output of the {name} run" for name, out in runs["outputs"].items() if secret in out]
    if secret in runs["log"]:
        places.append("the log file (log_path)")
    if secret in runs["facts"]:
        places.append("the fact cache")
    places += [f"file {name}" for name, text in runs["files"].items() if secret in text]
    return places


def test_the_runs_did_what_they_should(runs):
    codes = runs["codes"]
    outputs = runs["outputs"]
    assert codes["converge"] == 0, outputs["converge"][-3000:]
    assert codes["re-run"] == 0, outputs["re-run"][-3000:]
    recap = re.search(
        rf"^{re.escape(runs['node'])}\s+: ok=\d+\s+changed=(\d+)", outputs["re-run"], re.M
    )
    assert recap and recap.group(1) == "0", "the re-run changed the node"
    assert codes["failing"] != 0, "the failing run did not fail"
    assert codes["restore"] == 0, outputs["restore"][-3000:]
    # The new secret reached the node; the restore put the fleet's own back.
    assert _env_secret(runs["node_host"]) == runs["secrets"]["fleet"]


def test_the_failure_report_shows_the_log_with_the_secret_masked(runs):
    failing = runs["outputs"]["failing"]
    assert f"starting with JWT_SECRET={MASK}" in failing, failing[-4000:]


@pytest.mark.parametrize("which", ["new", "fleet"])
def test_no_secret_anywhere(runs, which):
    secret = runs["secrets"][which]
    places = _where(runs, secret)
    RESULTS.parent.mkdir(parents=True, exist_ok=True)
    previous = json.loads(RESULTS.read_text()) if RESULTS.exists() else {}
    previous[which] = {
        "found_in": places,
        "runs": list(runs["outputs"]),
        "verbosity": "-vvv --diff, log_path, jsonfile fact cache",
        "bytes_searched": sum(len(o) for o in runs["outputs"].values())
        + len(runs["log"])
        + len(runs["facts"]),
    }
    RESULTS.write_text(json.dumps(previous, indent=2))
    assert not places, f"the {which} secret appears in: {', '.join(places)}"
