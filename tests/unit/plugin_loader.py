"""Loading a plugin of plugins/ in a unit test (the plugins are not a Python package)."""

from __future__ import annotations

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
