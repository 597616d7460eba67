"""ansible.cfg is the one place the project's role, plugin and collection paths are set.

Molecule writes its own ansible.cfg, so its base configuration gives the same
paths as environment variables: they must say what ansible.cfg says. Tests
that run Ansible take them from ansible.cfg (plugin_loader.ansible_env).
"""

from __future__ import annotations

import yaml
from plugin_loader import PATH_SETTINGS, ROOT, ansible_env, project_paths

MOLECULE_BASE = ROOT / ".config" / "molecule" / "config.yml"
MOLECULE_ROOT = "${MOLECULE_PROJECT_DIRECTORY}"


def test_ansible_cfg_sets_every_path_and_each_exists():
    paths = project_paths()
    assert set(paths) == set(PATH_SETTINGS)
    for key, entries in paths.items():
        inside = [e for e in entries if e.startswith(str(ROOT))]
        assert inside, f"ansible.cfg's {key} names no folder of the repository"
        for entry in inside:
            if not entry.endswith(".collections"):  # made by scripts/bootstrap.sh
                assert (ROOT / entry).is_dir(), f"ansible.cfg's {key}: {entry} is not a folder"


def test_molecule_gives_the_paths_ansible_cfg_gives():
    env = yaml.safe_load(MOLECULE_BASE.read_text())["provisioner"]["env"]
    expected = ansible_env(root=MOLECULE_ROOT)
    given = {k: v for k, v in env.items() if k in expected}
    assert given == expected, (
        f"{MOLECULE_BASE.relative_to(ROOT)} gives other paths than ansible.cfg: "
        f"{ {k: (given.get(k), v) for k, v in expected.items() if given.get(k) != v} }"
    )


def test_a_path_put_first_comes_before_the_repository_s():
    env = ansible_env(library="/tmp/fakes")
    assert env["ANSIBLE_LIBRARY"].split(":") == ["/tmp/fakes", str(ROOT / "plugins" / "modules")]
    assert env["ANSIBLE_FILTER_PLUGINS"] == str(ROOT / "plugins" / "filter")
