"""Load the project's module_utils and modules the way Ansible does at run time.

Ansible puts plugins/module_utils/* under the ansible.module_utils namespace;
the tests register them there before importing a module.
"""

from __future__ import annotations

import importlib.util
import json
import sys
from pathlib import Path

import pytest
from ansible.module_utils.testing import patch_module_args

PLUGINS = Path(__file__).resolve().parents[3] / "plugins"
FIXTURES = Path(__file__).resolve().parent / "fixtures"


def load(name: str, path: Path):
    """Import a file as module `name`."""
    spec = importlib.util.spec_from_file_location(name, path)
    module = importlib.util.module_from_spec(spec)
    sys.modules[name] = module
    spec.loader.exec_module(module)
    return module


for _util in sorted((PLUGINS / "module_utils").glob("*.py")):
    load(f"ansible.module_utils.{_util.stem}", _util)


def run_main(module, args: dict, capsys) -> dict:
    """Run a module's main() with ``args``; return its JSON result, checking the exit status."""
    with patch_module_args(args), pytest.raises(SystemExit) as exited:
        module.main()
    result = json.loads(capsys.readouterr().out)
    assert exited.value.code == (1 if result.get("failed") else 0), result
    return result
