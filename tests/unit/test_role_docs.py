"""The argument specs are the one source of each role's variable documentation.

Every variable of a role's defaults is declared in its meta/argument_specs.yml
with the same default and a type its value has; the README's variable tables
are generated from the specs (scripts/role_docs.py) and must be current.
"""

from __future__ import annotations

import subprocess
import sys

import pytest
import yaml
from plugin_loader import ROOT, load_module

ROLES = sorted(
    p for p in (ROOT / "roles").iterdir() if (p / "meta" / "argument_specs.yml").is_file()
)
TYPES = {
    "str": str,
    "path": str,
    "int": int,
    "bool": bool,
    "list": list,
    "dict": dict,
    "float": (int, float),
}


def options(role) -> dict:
    """Every option of every entry point of the role: {name: spec}."""
    specs = yaml.safe_load((role / "meta" / "argument_specs.yml").read_text())["argument_specs"]
    found: dict = {}
    for entry in specs.values():
        for name, spec in (entry.get("options") or {}).items():
            found.setdefault(name, spec)
    return found


def defaults(role) -> dict:
    """The role's defaults/main.yml."""
    path = role / "defaults" / "main.yml"
    return (yaml.safe_load(path.read_text()) if path.is_file() else None) or {}


def test_every_readme_shows_what_the_specs_say():
    result = subprocess.run(
        [sys.executable, str(ROOT / "scripts" / "role_docs.py"), "--check"],
        capture_output=True,
        text=True,
        check=False,
    )
    assert result.returncode == 0, result.stdout + result.stderr


@pytest.mark.parametrize("role", ROLES, ids=lambda p: p.name)
def test_every_default_is_declared_with_the_same_value_and_its_type(role):
    declared = options(role)
    problems = []
    for name, value in defaults(role).items():
        spec = declared.get(name)
        if spec is None:
            problems.append(f"{name}: in defaults/main.yml, not in meta/argument_specs.yml")
            continue
        if "default" in spec and spec["default"] != value:
            problems.append(
                f"{name}: defaults/main.yml has {value!r}, the spec {spec['default']!r}"
            )
        templated = isinstance(value, str) and "{{" in value
        wanted = TYPES.get(spec.get("type", "str"))
        if wanted and value is not None and not templated and not isinstance(value, wanted):
            kind = spec.get("type", "str")
            problems.append(f"{name}: {value!r} is not of the spec's type {kind}")
        if wanted is int and isinstance(value, bool):
            problems.append(f"{name}: {value!r} is a bool, the spec says int")
    assert problems == []


@pytest.mark.parametrize("role", ROLES, ids=lambda p: p.name)
def test_every_spec_default_is_in_the_defaults(role):
    missing = [
        name
        for name, spec in options(role).items()
        if "default" in spec and name not in defaults(role)
    ]
    assert missing == [], f"declared with a default but not set in defaults/main.yml: {missing}"


def test_the_generator_renders_markup_and_defaults():
    role_docs = load_module(ROOT / "scripts" / "role_docs.py")
    rows = role_docs.table(
        {
            "x_port": {"type": "int", "default": 8080, "description": ["The C(port) | I(here)."]},
            "x_url": {"type": "str", "description": "Computed."},
            "x_name": {
                "type": "str",
                "required": True,
                "description": "A name.",
                "choices": ["a", "b"],
            },
        },
        {"x_url": "{{ foo }}/bar"},
    )
    assert rows[2] == "| `x_port` | int | `8080` | The `port` \\| *here*. |"
    assert rows[3] == "| `x_url` | str | computed (see description) | Computed. |"
    assert rows[4] == "| `x_name` | str | required | A name. Choices: `a`, `b`. |"
