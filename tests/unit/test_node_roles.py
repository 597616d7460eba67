"""The node roles are applied in one order, and the role's list of them says the same.

roles/ai_fleet/tasks/host.yml and node.yml apply the node roles; vars/main.yml
lists them for the settings checks (validate.yml) and the fingerprint. A role
added to one and not the other would go unchecked or leave a node undrained.
"""

from __future__ import annotations

import yaml
from plugin_loader import ROOT

ROLE = ROOT / "roles" / "ai_fleet"


def applied_roles(tasks_file: str) -> list[str]:
    """The roles a task file imports, in order, following its import_tasks."""
    names: list[str] = []
    for task in yaml.safe_load((ROLE / "tasks" / tasks_file).read_text()):
        if "ansible.builtin.import_tasks" in task:
            names += applied_roles(task["ansible.builtin.import_tasks"])
        elif "ansible.builtin.import_role" in task:
            names.append(task["ansible.builtin.import_role"]["name"])
    return list(dict.fromkeys(names))


def test_the_listed_node_roles_are_those_node_yml_applies_in_its_order():
    listed = yaml.safe_load((ROLE / "vars" / "main.yml").read_text())["__ai_fleet_node_roles"]
    assert applied_roles("node.yml") == listed


def test_node_yml_applies_the_host_preparation_then_the_stack():
    assert applied_roles("node.yml") == [*applied_roles("host.yml"), "ai_node"]


def test_the_fingerprint_covers_both_task_files():
    text = (ROLE / "vars" / "main.yml").read_text()
    assert "/tasks/node.yml'" in text and "/tasks/host.yml'" in text
