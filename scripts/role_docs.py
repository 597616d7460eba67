"""Write each role README's variable tables from the role's meta/argument_specs.yml.

The argument specs are the one source of a role's variable documentation (name,
type, default, choices, description); the README shows them between two
markers, and `--check` (run by the unit tests) fails when a README is not what
the specs give.

    python scripts/role_docs.py            rewrite the READMEs' generated sections
    python scripts/role_docs.py --check    exit 1 naming each README that is stale
"""

from __future__ import annotations

import argparse
import json
import re
import sys
from pathlib import Path

import yaml

ROOT = Path(__file__).resolve().parents[1]
BEGIN = "<!-- BEGIN variables: generated from meta/argument_specs.yml by scripts/role_docs.py -->"
END = "<!-- END variables -->"
MARKUP = re.compile(r"\b([CIVOBUM])\(([^()]*)\)")


def plain(text: str) -> str:
    """Return ansible-doc markup (C(x), I(x), V(x), O(x), ...) as Markdown, on one line."""

    def one(match: re.Match) -> str:
        kind, value = match.groups()
        return f"*{value}*" if kind == "I" else f"`{value}`"

    return MARKUP.sub(one, " ".join(str(text).split())).replace("|", "\\|")


def show_default(spec: dict, defaults: dict, name: str) -> str:
    """Return the default as the table shows it."""
    if "default" in spec:
        value = spec["default"]
    elif name in defaults:
        value = defaults[name]
    else:
        return "required" if spec.get("required") else "(unset)"
    if isinstance(value, str) and "{{" in value:
        return "computed (see description)"
    if isinstance(value, str):
        return f"`{value}`" if value else '`""`'
    return f"`{json.dumps(value)}`".replace("|", "\\|")


def table(options: dict, defaults: dict) -> list[str]:
    """Return the Markdown rows of one entry point's options."""
    rows = ["| variable | type | default | description |", "|---|---|---|---|"]
    for name, spec in options.items():
        kind = spec.get("type", "str")
        if kind == "list" and spec.get("elements"):
            kind = f"list of {spec['elements']}"
        description = spec.get("description", "")
        if isinstance(description, list):
            description = " ".join(str(d) for d in description)
        text = plain(description)
        if spec.get("choices"):
            text += " Choices: " + ", ".join(f"`{c}`" for c in spec["choices"]) + "."
        rows.append(f"| `{name}` | {kind} | {show_default(spec, defaults, name)} | {text} |")
    return rows


def generated(role: Path) -> str:
    """Return the generated block of one role (markers included)."""
    specs = yaml.safe_load((role / "meta" / "argument_specs.yml").read_text())["argument_specs"]
    defaults_file = role / "defaults" / "main.yml"
    defaults = (yaml.safe_load(defaults_file.read_text()) if defaults_file.exists() else None) or {}
    lines = [BEGIN, ""]
    seen: set[str] = set()
    entry_points = sorted(specs, key=lambda e: (e != "main", list(specs).index(e)))
    for entry in entry_points:
        options = {k: v for k, v in (specs[entry].get("options") or {}).items() if k not in seen}
        if not options:
            continue
        seen.update(options)
        if len(entry_points) > 1 or entry != "main":
            title = "the role" if entry == "main" else f"entry point `{entry}`"
            lines += [f"Variables of {title}:", ""]
        lines += [*table(options, defaults), ""]
    lines.append(END)
    return "\n".join(lines)


def updated(readme: str, block: str) -> str:
    """Return the README with its generated block replaced (or added as a Variables section)."""
    if BEGIN in readme and END in readme:
        head, rest = readme.split(BEGIN, 1)
        return head + block + rest.split(END, 1)[1]
    return readme.rstrip("\n") + "\n\n## Variables\n\n" + block + "\n"


def main() -> int:
    """Rewrite or check every role README."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--check", action="store_true", help="only report stale READMEs")
    args = parser.parse_args()
    stale = []
    roles = [p for p in (ROOT / "roles").iterdir() if (p / "meta" / "argument_specs.yml").is_file()]
    for role in sorted(roles):
        path = role / "README.md"
        current = path.read_text()
        new = updated(current, generated(role))
        if new != current:
            stale.append(str(path.relative_to(ROOT)))
            if not args.check:
                path.write_text(new)
    if args.check and stale:
        print("stale (run python scripts/role_docs.py): " + ", ".join(stale))
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
