"""Every boolean flag is read through ``| bool`` wherever it decides something.

``-e flag=false``, INI inventories and AWX surveys give the *string* ``'false'``,
which Jinja finds true: ``when: not docker_engine_replace_conflicting_packages``
then skips the refusal and the next task removes docker.io. Argument specs
accept the string as a bool but do not convert the variable, so each use has to.

The flags: every option declared ``type: bool`` in a role's
``meta/argument_specs.yml``, every role default that is ``true``/``false`` and
every ``true``/``false`` that a playbook sets as a variable. Every task file,
handler file, vars and defaults file, template and playbook is parsed (YAML,
then Jinja's own parser) and each reference to a flag (``flag``,
``hostvars[h].flag``, ``hostvars[h]['flag']``) is checked:

- in a conditional (``when``, ``failed_when``, ``changed_when``, ``until``, the
  ``that`` of ``assert``) every reference must be ``flag | bool`` (or
  ``flag | default(...) | bool``, or ``flag is defined``);
- in any other template, a reference that decides something (``{% if %}``, an
  inline ``if``, ``not``, ``and``, ``or``, a comparison, a test, ``ternary``,
  ``selectattr('flag')``) must be ``| bool`` too, and so must a bare
  ``{{ flag }}`` stored in a variable (``vars``, ``set_fact``, defaults), which
  only moves the string on to a later conditional. A bare ``{{ flag }}`` given
  to a module option is converted by the module and is allowed.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import jinja2
import pytest
import yaml
from jinja2 import nodes

ROOT = Path(__file__).resolve().parents[2]
ROLES = ROOT / "roles"
PLAYBOOKS = [ROOT / "site.yml", *sorted((ROOT / "playbooks").glob("*.yml"))]

CONDITIONAL_KEYS = frozenset({"when", "failed_when", "changed_when", "until"})
ASSERT_MODULES = frozenset({"assert", "ansible.builtin.assert", "ansible.legacy.assert"})
SET_FACT_MODULES = frozenset({"set_fact", "ansible.builtin.set_fact", "ansible.legacy.set_fact"})
TASK_LISTS = ("block", "rescue", "always")
PLAY_TASK_LISTS = ("pre_tasks", "tasks", "post_tasks", "handlers")
# Filters that pass the value through unchanged on the way to `| bool`.
PASS_THROUGH_FILTERS = frozenset({"default", "d"})
# Tests that say nothing about the flag's truth.
NEUTRAL_TESTS = frozenset({"defined", "undefined"})
# Filters whose first argument is an attribute whose truth decides.
ATTRIBUTE_TRUTH_FILTERS = frozenset({"selectattr", "rejectattr"})

ENV = jinja2.Environment(extensions=["jinja2.ext.do", "jinja2.ext.loopcontrols"])

# Jinja's lexer decodes string literals such as '\*' (regular expressions) with a warning.
pytestmark = pytest.mark.filterwarnings("ignore:invalid escape sequence:DeprecationWarning")


# ---------------------------------------------------------------- YAML with line numbers
class _Str(str):
    """A YAML string that knows where it starts."""

    __slots__ = ("line", "literal")


class _Dict(dict):
    """A YAML mapping that knows where it starts."""

    line = 0


class _Loader(yaml.SafeLoader):
    """PyYAML's safe loader, plus line numbers and Ansible's own tags."""


def _construct_str(loader, node):
    value = _Str(loader.construct_scalar(node))
    # A block scalar's text starts on the line after its indicator.
    value.line = node.start_mark.line + 1 + (1 if node.style in ("|", ">") else 0)
    value.literal = node.style == "|"
    return value


def _construct_map(loader, node):
    data = _Dict()
    data.line = node.start_mark.line + 1
    yield data
    data.update(loader.construct_mapping(node, deep=True))


def _construct_unsafe(loader, node):
    # !unsafe strings are never templated: nothing to check.
    return str(loader.construct_scalar(node))


_Loader.add_constructor("tag:yaml.org,2002:str", _construct_str)
_Loader.add_constructor("tag:yaml.org,2002:map", _construct_map)
_Loader.add_constructor("!unsafe", _construct_unsafe)
_Loader.add_constructor("!vault", _construct_unsafe)


def load_yaml(path: Path):
    return yaml.load(path.read_text(encoding="utf-8"), Loader=_Loader)


# ---------------------------------------------------------------- the flags
def spec_flags(specs) -> set[str]:
    """Options declared ``type: bool`` in a role's argument specs (any entry point)."""
    flags = set()
    for entry in ((specs or {}).get("argument_specs") or {}).values():
        for name, option in ((entry or {}).get("options") or {}).items():
            if isinstance(option, dict) and option.get("type") == "bool":
                flags.add(str(name))
    return flags


def bool_valued(mapping) -> set[str]:
    """Variables a mapping sets to ``true`` or ``false``."""
    if not isinstance(mapping, dict):
        return set()
    return {str(name) for name, value in mapping.items() if isinstance(value, bool)}


def playbook_flags(plays) -> set[str]:
    """Variables the plays, their roles and tasks set to ``true`` or ``false``."""
    flags = set()
    for play in plays or []:
        if not isinstance(play, dict):
            continue
        flags |= bool_valued(play.get("vars"))
        for role in play.get("roles") or []:
            if isinstance(role, dict):
                flags |= bool_valued(role.get("vars")) | bool_valued(role)
        for key in PLAY_TASK_LISTS:
            for task in iter_tasks(play.get(key)):
                flags |= bool_valued(task.get("vars"))
    # Play keywords written as role parameters are not variables.
    return flags - {"become", "gather_facts", "any_errors_fatal", "ignore_errors", "public"}


def iter_tasks(tasks):
    """Every task of a task list, blocks included, depth first."""
    for task in tasks or []:
        if not isinstance(task, dict):
            continue
        yield task
        for key in TASK_LISTS:
            yield from iter_tasks(task.get(key))


def all_flags() -> set[str]:
    flags = set()
    for role in sorted(p for p in ROLES.iterdir() if p.is_dir()):
        specs = role / "meta" / "argument_specs.yml"
        if specs.exists():
            flags |= spec_flags(load_yaml(specs))
        for defaults in sorted((role / "defaults").glob("*.yml")):
            flags |= bool_valued(load_yaml(defaults))
    for playbook in PLAYBOOKS:
        flags |= playbook_flags(load_yaml(playbook))
    return flags


# ---------------------------------------------------------------- the check
@dataclass(frozen=True)
class Finding:
    path: str
    line: int
    where: str
    variable: str
    why: str

    def __str__(self) -> str:
        """Say where, which variable and what is wrong, on one line."""
        return f"{self.path}:{self.line}: {self.where}: {self.variable} {self.why}"


def flag_name(node, flags) -> str | None:
    """The flag a node reads: ``flag``, ``x.flag`` or ``x['flag']``; else None."""
    if isinstance(node, nodes.Name) and node.ctx == "load" and node.name in flags:
        return node.name
    if isinstance(node, nodes.Getattr) and node.attr in flags:
        return node.attr
    if (
        isinstance(node, nodes.Getitem)
        and isinstance(node.arg, nodes.Const)
        and node.arg.value in flags
    ):
        return node.arg.value
    return None


def deciding(child, parent) -> bool:
    """Whether ``parent`` uses the value ``child`` for its truth."""
    if isinstance(parent, nodes.If | nodes.CondExpr):
        return child is parent.test
    if isinstance(parent, nodes.Not | nodes.And | nodes.Or | nodes.Compare | nodes.Operand):
        return True
    if isinstance(parent, nodes.Test):
        return child is parent.node
    if isinstance(parent, nodes.Filter):
        return parent.name == "ternary" and child is parent.node
    return False


def verdict(ref, parents, context: str) -> str | None:
    """Why a flag reference is wrong, or None when it is read through ``| bool``.

    ``context``: ``conditional`` (a when/that...), ``store`` (a value kept in a
    variable) or ``argument`` (a module option, a message).
    """
    child, index = ref, len(parents) - 1
    # flag | default(false) | bool: climb the pass-through filters first.
    while (
        index >= 0
        and isinstance(parents[index], nodes.Filter)
        and parents[index].name in PASS_THROUGH_FILTERS
        and parents[index].node is child
    ):
        child, index = parents[index], index - 1
    parent = parents[index] if index >= 0 else None
    guarded = (
        isinstance(parent, nodes.Filter) and parent.name == "bool" and parent.node is child
    ) or (isinstance(parent, nodes.Test) and parent.node is child and parent.name in NEUTRAL_TESTS)
    if guarded:
        return None
    if context == "conditional":
        return "is used in a conditional without | bool"
    if deciding(child, parent):
        return "decides an expression without | bool"
    if context == "store" and (parent is None or isinstance(parent, nodes.Output)):
        return "is stored in a variable without | bool (a later conditional sees the string)"
    return None


def attribute_truth(node, flags) -> str | None:
    """``selectattr('flag')`` / ``rejectattr('flag', 'true')``: the attribute's truth decides."""
    if not (isinstance(node, nodes.Filter) and node.name in ATTRIBUTE_TRUTH_FILTERS):
        return None
    if not node.args or not isinstance(node.args[0], nodes.Const):
        return None
    name = node.args[0].value
    second = node.args[1] if len(node.args) > 1 else None
    test = second.value if isinstance(second, nodes.Const) else ""
    if name in flags and test not in NEUTRAL_TESTS:
        return name
    return None


def check_ast(tree, flags, context):
    """(line, variable, why) of each wrong flag reference in a parsed template."""
    found = []

    def visit(node, parents):
        name = flag_name(node, flags)
        if name is not None:
            why = verdict(node, parents, context)
            if why:
                found.append((node.lineno, name, why))
        name = attribute_truth(node, flags)
        if name is not None:
            found.append((node.lineno, name, f"is tested for truth by {node.name}()"))
        for child in node.iter_child_nodes():
            visit(child, [*parents, node])

    visit(tree, [])
    return found


def check_template(text, flags, context):
    """Check one template string; a template Jinja cannot parse is a finding too."""
    if context != "conditional" and "{{" not in text and "{%" not in text:
        return []
    if context == "conditional" and "{{" not in text and "{%" not in text:
        text = "{{ (" + text + "\n) }}"
    try:
        tree = ENV.parse(text)
    except jinja2.TemplateSyntaxError as error:
        return [(error.lineno, "?", f"cannot be parsed: {error.message}")]
    return check_ast(tree, flags, context)


# ---------------------------------------------------------------- walking the files
class FileChecker:
    """Collects the findings of one file."""

    def __init__(self, path: Path, flags, root: Path):
        """Check ``path`` (shown relative to ``root``) for uses of ``flags``."""
        self.path = path
        self.rel = str(path.relative_to(root))
        self.flags = flags
        self.findings: list[Finding] = []

    def value(self, value, where, context, line=0):
        """Check every string in a YAML value (recursively)."""
        if isinstance(value, dict):
            for key, item in value.items():
                self.value(item, f"{where}.{key}", context, getattr(value, "line", line))
        elif isinstance(value, list):
            for item in value:
                self.value(item, where, context, line)
        elif isinstance(value, str):
            start = getattr(value, "line", line)
            for lineno, name, why in check_template(value, self.flags, context):
                offset = (lineno - 1) if getattr(value, "literal", False) else 0
                self.findings.append(Finding(self.rel, start + offset, where, name, why))

    def task(self, task):
        label = f'task "{task.get("name", "(unnamed)")}"'
        for key, value in task.items():
            if key in TASK_LISTS:
                self.tasks(value)
            elif key in CONDITIONAL_KEYS:
                self.value(value, f"{label} {key}", "conditional", task.line)
            elif key == "vars" or key in SET_FACT_MODULES:
                self.value(value, f"{label} {key}", "store", task.line)
            elif key in ASSERT_MODULES and isinstance(value, dict):
                rest = {k: v for k, v in value.items() if k != "that"}
                self.value(value.get("that"), f"{label} assert.that", "conditional", task.line)
                self.value(rest, f"{label} {key}", "argument", task.line)
            else:
                self.value(value, f"{label} {key}", "argument", task.line)

    def tasks(self, tasks):
        for task in tasks or []:
            if isinstance(task, dict):
                self.task(task)

    def play(self, play):
        label = f'play "{play.get("name", "(unnamed)")}"'
        for key, value in play.items():
            if key in PLAY_TASK_LISTS:
                self.tasks(value)
            elif key == "vars":
                self.value(value, f"{label} vars", "store", play.line)
            elif key == "roles":
                for role in value or []:
                    if isinstance(role, dict):
                        self.task(role)
            else:
                self.value(value, f"{label} {key}", "argument", play.line)


def check_file(path: Path, flags, root: Path = ROOT) -> list[Finding]:
    checker = FileChecker(path, flags, root)
    parts = path.relative_to(root).parts
    if path.suffix == ".j2" or "templates" in parts:
        text = path.read_text(encoding="utf-8")
        for lineno, name, why in check_template(text, flags, "argument"):
            checker.findings.append(Finding(checker.rel, lineno, "template", name, why))
        return checker.findings
    data = load_yaml(path)
    if parts[0] == "roles" and parts[2] in ("tasks", "handlers"):
        checker.tasks(data)
    elif parts[0] == "roles" and parts[2] in ("vars", "defaults"):
        checker.value(data, "vars", "store", 1)
    else:
        for play in data or []:
            if isinstance(play, dict):
                checker.play(play)
    return checker.findings


def files_of(unit: str) -> list[Path]:
    if unit == "playbooks":
        return PLAYBOOKS
    role = ROLES / unit
    found = []
    for folder in ("tasks", "handlers", "vars", "defaults"):
        found += sorted((role / folder).rglob("*.yml"))
    found += sorted(p for p in (role / "templates").rglob("*") if p.is_file())
    return found


UNITS = [*sorted(p.name for p in ROLES.iterdir() if (p / "tasks").is_dir()), "playbooks"]
FLAGS = all_flags()


# ---------------------------------------------------------------- the tests
@pytest.mark.parametrize("unit", UNITS)
def test_flags_are_read_through_bool(unit):
    findings = [f for path in files_of(unit) for f in check_file(path, FLAGS)]
    assert not findings, (
        f"{len(findings)} flag use(s) without | bool (the string 'false' from -e, an INI "
        "inventory or a survey is true):\n" + "\n".join(map(str, findings))
    )


def test_the_flags_that_guard_refusals_are_known():
    """The scan is not empty: the guards that matter most are among the flags."""
    assert {
        "docker_engine_replace_conflicting_packages",
        "nvidia_driver_upgrade",
        "nvidia_driver_secure_boot_signed_modules",
        "nvidia_driver_skip_reboot",
        "nvidia_container_toolkit_default_runtime",
        "ai_node_drain",
    } <= FLAGS


CHECKER_CASES = [
    # (text, context, wrong?)
    ("not flag", "conditional", True),
    ("flag", "conditional", True),
    ("flag == false", "conditional", True),
    ("x | length > 0 and flag", "conditional", True),
    ("hostvars[h].flag", "conditional", True),
    ("hostvars[h]['flag']", "conditional", True),
    ("not (flag | bool)", "conditional", False),
    ("flag | bool", "conditional", False),
    ("flag | default(false) | bool", "conditional", False),
    ("flag is defined and flag | bool", "conditional", False),
    ("hostvars[h].flag | d(false) | bool", "conditional", False),
    ("other_flag_like_name", "conditional", False),
    ("{{ 'a' if flag else 'b' }}", "argument", True),
    ("{{ 'a' if flag | bool else 'b' }}", "argument", False),
    ("{% if flag %}x{% endif %}", "argument", True),
    ("{% if flag | bool %}x{% endif %}", "argument", False),
    ("{{ flag | ternary('a', 'b') }}", "argument", True),
    ("{{ x and not flag }}", "argument", True),
    ("{{ flag }}", "argument", False),
    ("{{ flag }}", "store", True),
    ("{{ flag | bool }}", "store", False),
    ("{{ hosts | selectattr('flag') | list }}", "argument", True),
    ("{{ hosts | selectattr('flag', 'defined') | list }}", "argument", False),
    ("{{ [a] if flag else [] }}", "store", True),
]


@pytest.mark.parametrize(("text", "context", "wrong"), CHECKER_CASES)
def test_the_checker(text, context, wrong):
    found = check_template(text, {"flag"}, context)
    assert bool(found) is wrong, found
    assert all(name in ("flag", "?") for _, name, _ in found)


def test_the_checker_names_file_line_task_and_variable(tmp_path):
    role = tmp_path / "roles" / "demo" / "tasks"
    role.mkdir(parents=True)
    (role / "main.yml").write_text(
        "---\n"
        "- name: Refuse\n"
        "  ansible.builtin.fail:\n"
        "    msg: no\n"
        "  when:\n"
        "    - x | length > 0\n"
        "    - not demo_flag\n",
        encoding="utf-8",
    )
    (finding,) = check_file(role / "main.yml", {"demo_flag"}, root=tmp_path)
    assert str(finding) == (
        'roles/demo/tasks/main.yml:7: task "Refuse" when: demo_flag '
        "is used in a conditional without | bool"
    )
