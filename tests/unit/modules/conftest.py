"""Load the project's module_utils and modules the way Ansible does at run time.

Ansible puts plugins/module_utils/* under the ansible.module_utils namespace;
the tests register them there before importing a module.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from ansible.module_utils.testing import patch_module_args
from plugin_loader import ROOT, load_module

PLUGINS = ROOT / "plugins"
FIXTURES = Path(__file__).resolve().parent / "fixtures"


def load(name: str, path: Path):
    """Import a file as module `name`."""
    return load_module(path, name)


for _util in sorted((PLUGINS / "module_utils").glob("*.py")):
    load(f"ansible.module_utils.{_util.stem}", _util)


def run_main(module, args: dict, capsys) -> dict:
    """Run a module's main() with ``args``; return its JSON result, checking the exit status."""
    with patch_module_args(args), pytest.raises(SystemExit) as exited:
        module.main()
    result = json.loads(capsys.readouterr().out)
    assert exited.value.code == (1 if result.get("failed") else 0), result
    return result
