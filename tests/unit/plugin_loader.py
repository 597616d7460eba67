"""Loading a plugin of plugins/ in a unit test (the plugins are not a Python package)."""

from __future__ import annotations

import configparser
import importlib.util
import sys
from pathlib import Path
from types import ModuleType

ROOT = Path(__file__).resolve().parents[2]


def load_module(path: Path, name: str | None = None) -> ModuleType:
    """Import the file ``path`` as module ``name`` (default: ``<stem>_under_test``).

    The module is registered in sys.modules under that name before it runs.
    """
    spec = importlib.util.spec_from_file_location(name or f"{Path(path).stem}_under_test", path)
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module
    spec.loader.exec_module(module)
    return module


def load_plugin(kind: str, name: str) -> ModuleType:
    """Import plugins/<kind>/<name>.py as a module (plugins are not a package)."""
    return load_module(ROOT / "plugins" / kind / f"{name}.py", f"{kind}_{name}_under_test")


#: The path settings of ansible.cfg's [defaults] and the environment variables
#: that set them, for runs that cannot use the repository's ansible.cfg (molecule
#: writes its own; tests write theirs).
PATH_SETTINGS = {
    "roles_path": "ANSIBLE_ROLES_PATH",
    "filter_plugins": "ANSIBLE_FILTER_PLUGINS",
    "action_plugins": "ANSIBLE_ACTION_PLUGINS",
    "inventory_plugins": "ANSIBLE_INVENTORY_PLUGINS",
    "library": "ANSIBLE_LIBRARY",
    "module_utils": "ANSIBLE_MODULE_UTILS",
    "collections_path": "ANSIBLE_COLLECTIONS_PATH",
}


def project_paths(root: Path = ROOT) -> dict[str, list[str]]:
    """The plugin, role and collection paths the repository's ansible.cfg sets.

    Relative entries are made absolute from ``root``; ``~`` entries and absolute
    ones are kept as written. The one place these paths are written is ansible.cfg.
    """
    config = configparser.ConfigParser(interpolation=None)
    config.read(ROOT / "ansible.cfg")
    paths = {}
    for key in PATH_SETTINGS:
        entries = config.get("defaults", key).split(":")
        paths[key] = [e if e.startswith(("/", "~", "$")) else str(Path(root) / e) for e in entries]
    return paths


def ansible_env(root: Path = ROOT, **first: str) -> dict[str, str]:
    """Environment variables that give Ansible the repository's paths (ansible.cfg's).

    ``first`` puts a folder before the repository's for a setting, for example
    ``library=str(fakes)`` for test modules that stand in for real ones.
    """
    env = {}
    for key, entries in project_paths(root).items():
        env[PATH_SETTINGS[key]] = ":".join(([first[key]] if key in first else []) + entries)
    return env
