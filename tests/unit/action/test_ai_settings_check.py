"""Unit tests of the action ai_settings_check (plugins/action/ai_settings_check.py)."""

from __future__ import annotations

import base64
import json
import os
import random
import re
import subprocess
import sys

import pytest
import yaml
from plugin_loader import ROOT, load_plugin

check = load_plugin("action", "ai_settings_check")

# Random-looking secrets, the same in every run: the parallel test workers
# (pytest-xdist) must collect the same test ids.
_RANDOM = random.Random(20261202)


def token_hex(nbytes: int) -> str:
    """Return a random-looking hex secret of nbytes bytes, as secrets.token_hex does."""
    return _RANDOM.randbytes(nbytes).hex()


def token_urlsafe(nbytes: int) -> str:
    """Return a random-looking URL-safe secret of nbytes bytes, as secrets.token_urlsafe does."""
    return base64.urlsafe_b64encode(_RANDOM.randbytes(nbytes)).rstrip(b"=").decode()


GOOD_SECRETS = [
    token_hex(32),
    token_hex(16),
    token_urlsafe(32),
    token_urlsafe(24),
]


@pytest.mark.parametrize("value", GOOD_SECRETS)
def test_random_secrets_are_accepted(value):
    assert check.secret_problems(value) == []


@pytest.mark.parametrize(
    ("value", "reason"),
    [
        (None, "not set"),
        ("", "not set"),
        (12345678901234567890123456789012, "not text"),
        (" " * 32, "whitespace"),
        ("a" * 32, "guessable"),
        ("a" * 64, "guessable"),
        ("ab" * 32, "guessable"),
        ("abcdefghij" * 4, "guessable"),
        ("0123456789abcdefghijklmnopqrstuvwxyz", "guessable"),
        ("zyxwvutsrqponmlkjihgfedcba9876543210", "guessable"),
        ("too-short", "fewer than 32"),
        (" " + token_hex(32), "whitespace"),
        (token_hex(32) + "\n", "line break"),
        (token_hex(16) + "\r\n" + token_hex(16), "line break"),
        (token_hex(16) + "\t" + token_hex(16), "control"),
        ("your-secret-key-change-in-production-min-32-chars", "published"),
        ("lab-only-jwt-secret-0123456789abcdef0123456789abcdef", "published"),
        ("replace-with-the-output-of: openssl rand -hex 32", "published"),
        ("CHANGEME-" + token_hex(16), "placeholder"),
        ("example-" + token_hex(16), "placeholder"),
    ],
)
def test_weak_secrets_are_refused_without_quoting_them(value, reason):
    reasons = check.secret_problems(value)
    assert reasons, f"{value!r} was accepted"
    assert any(reason in r for r in reasons), reasons
    if isinstance(value, str) and value.strip():
        assert all(value.strip() not in r for r in reasons)


def _published_secret_values() -> list[str]:
    """Every literal value this repository assigns to a secret, in any file a reader can see."""
    found = set()
    pattern = re.compile(
        r"""(?:_secret|JWT_SECRET|jwt_secret)["']?\s*[:=]\s*["']?([^"'\n{}]{8,})["']?"""
    )
    for path in ROOT.rglob("*"):
        if any(part in {".git", ".venv", ".collections", ".cache", ".lab"} for part in path.parts):
            continue
        if not path.is_file() or path.suffix not in {".yml", ".yaml", ".example", ".md", ".env"}:
            continue
        for match in pattern.finditer(path.read_text(encoding="utf-8", errors="replace")):
            value = match.group(1).strip()
            if value.startswith(("{{", "$", "<")) or (" " in value and ":" not in value):
                continue
            found.add(value)
    return sorted(found)


def test_the_example_inventory_placeholder_is_refused():
    example = ROOT / "inventory.example" / "group_vars" / "all" / "vault.yml.example"
    value = yaml.safe_load(example.read_text())["vault_ai_node_jwt_secret"]
    assert check.secret_problems(value)


def test_every_secret_published_in_this_repository_is_refused():
    published = _published_secret_values()
    assert "replace-with-the-output-of: openssl rand -hex 32" in published
    for value in published:
        assert check.secret_problems(value), f"the published value {value!r} would be accepted"


@pytest.mark.parametrize(("value", "ok"), [(1, True), ("8800", True), (65535, True)])
def test_ports_accepted(value, ok):
    assert (check.port_problem(value) is None) is ok


@pytest.mark.parametrize("value", [0, 65536, "88oo", "", None, True, -1, "8800.5"])
def test_ports_refused(value):
    assert check.port_problem(value) == "a port number from 1 to 65535"


def test_ranges():
    assert check.range_problem("10", 0, 10000) is None
    assert check.range_problem(-1, 0, 10000) == "a whole number from 0 to 10000"
    assert check.range_problem("ten", 0, 10) == "a whole number from 0 to 10"
    assert check.range_problem(False, 0, 10) is not None


@pytest.mark.parametrize(
    ("value", "allow_any", "ok"),
    [
        ("0.0.0.0", True, True),
        ("::", True, True),
        ("0.0.0.0", False, False),
        ("127.0.0.1", False, True),
        ("::1", False, True),
        ("10.0.0.5", True, True),
        ("[fd00::5]", True, True),
        ("10.0.0.6", True, False),
        ("eth0", True, False),
        ("gpu-1.example.com", True, False),
        ("10.0.0.5/24", True, False),
    ],
)
def test_bind_addresses(value, allow_any, ok):
    owned = ["10.0.0.5", "fd00::5", "fe80::1%eth0"]
    result = check.bind_address_problem(value, owned, allow_any=allow_any)
    assert (result is None) is ok, result
    if not ok:
        assert "IP" in result or "own" in result or "every address" not in result


def test_bind_address_ownership_is_not_judged_without_facts():
    assert check.bind_address_problem("10.0.0.6", None) is None
    assert check.bind_address_problem("eth0", None) is not None


def test_nested_keys():
    assert check.nested_keys({"jwt": {"secret": "x"}}, "jwt.secret")
    assert not check.nested_keys({"jwt": {"expiry": 1}}, "jwt.secret")
    assert not check.nested_keys({"jwt": "x"}, "jwt.secret")


def _ai_node_options():
    spec = yaml.safe_load((ROOT / "roles/ai_node/meta/argument_specs.yml").read_text())
    return spec["argument_specs"]["main"]["options"]


def test_spec_problems_name_the_variable_and_hide_secrets():
    options = _ai_node_options()
    found = check.spec_problems(
        options,
        {
            "ai_node_http_port": "88oo",
            "ai_node_image_source": "ftp",
            "ai_node_gpu_enabled": "maybe",
            "ai_node_jwt_secret": GOOD_SECRETS[0],
        },
    )
    assert set(found) == {"ai_node_http_port", "ai_node_image_source", "ai_node_gpu_enabled"}
    assert found["ai_node_http_port"].startswith("ai_node_http_port: given '88oo', expected")
    assert "registry, archive, build" in found["ai_node_image_source"]
    assert "true or false" in found["ai_node_gpu_enabled"]
    hidden = "secret-" + token_hex(8)
    found = check.spec_problems({"demo_key": {"type": "int", "no_log": True}}, {"demo_key": hidden})
    assert hidden not in found["demo_key"]
    assert "hidden" in found["demo_key"]


def test_spec_problems_accept_string_booleans_and_numbers():
    options = _ai_node_options()
    secret = {"ai_node_jwt_secret": GOOD_SECRETS[0]}
    assert check.spec_problems(options, {"ai_node_gpu_enabled": "false", **secret}) == {}
    assert check.spec_problems(options, {"ai_node_http_port": "8800", **secret}) == {}


def test_a_required_variable_that_is_missing_is_named():
    found = check.spec_problems(_ai_node_options(), {})
    assert found == {"ai_node_jwt_secret": "ai_node_jwt_secret: not set, expected text"}


def test_check_problems_never_show_a_forbidden_mapping():
    hidden = token_hex(20)
    values = {"ai_node_config_overrides": {"jwt": {"secret": hidden}}, "ai_node_jwt_secret": "a"}
    found = check.check_problems(
        {
            "forbidden_keys": {"ai_node_config_overrides": ["jwt.secret"]},
            "secrets": ["ai_node_jwt_secret", "ai_node_missing"],
        },
        values.__getitem__,
    )
    assert hidden not in json.dumps(found)
    assert "jwt.secret" in found["ai_node_config_overrides"]
    assert found["ai_node_missing"] == "ai_node_missing: not set"
    assert "fewer than 32" in found["ai_node_jwt_secret"]


PLAYBOOK = """\
- hosts: localhost
  connection: local
  gather_facts: false
  vars:
    demo_port: 8800
    demo_secret: "{{ lookup('ansible.builtin.env', 'DEMO_SECRET') }}"
  tasks:
    - ai_settings_check:
        ports: [demo_port]
        secrets: [demo_secret]
        ranges: {demo_delay: [0, 100]}
"""


@pytest.mark.parametrize(
    ("extra", "secret", "expected"),
    [
        ({"demo_delay": 5}, token_hex(32), "localhost: settings accepted"),
        (
            {"demo_delay": 500, "demo_port": "88oo"},
            "a" * 40,
            "localhost: 3 setting(s) refused",
        ),
    ],
)
@pytest.mark.playbook
def test_the_action_in_a_play(tmp_path, extra, secret, expected):
    playbook = tmp_path / "play.yml"
    playbook.write_text(PLAYBOOK)
    env = {
        **os.environ,
        "ANSIBLE_ACTION_PLUGINS": str(ROOT / "plugins" / "action"),
        "ANSIBLE_LIBRARY": str(ROOT / "plugins" / "modules"),
        "ANSIBLE_NOCOLOR": "1",
        "DEMO_SECRET": secret,
    }
    command = [
        sys.executable,
        "-m",
        "ansible.cli.playbook",
        "-i",
        "localhost,",
        str(playbook),
        "-v",
        "-e",
        json.dumps(extra),
    ]
    result = subprocess.run(command, capture_output=True, text=True, env=env, check=False)
    output = result.stdout + result.stderr
    assert expected in output, output
    assert secret not in output
    assert (result.returncode == 0) is (expected.endswith("accepted")), output
    if result.returncode:
        assert "demo_port: given '88oo', expected a port number from 1 to 65535" in output
        assert "demo_delay: given 500, expected a whole number from 0 to 100" in output
        assert "demo_secret: given a value that is hidden (secret)" in output
