"""Unit tests of the ai_node filter (plugins/filter/ai_node.py)."""

from __future__ import annotations

import importlib.util
import os
import sys
from pathlib import Path

import pytest
from ansible.errors import AnsibleFilterError

ROOT = Path(__file__).resolve().parents[3]
PLUGIN = ROOT / "plugins" / "filter" / "ai_node.py"
spec = importlib.util.spec_from_file_location("ai_node_filter_under_test", PLUGIN)
ai_node = importlib.util.module_from_spec(spec)
sys.modules[spec.name] = ai_node
spec.loader.exec_module(ai_node)
marker = ai_node.ai_node_archive_marker


def test_filter_is_registered():
    assert set(ai_node.FilterModule().filters()) == {"ai_node_archive_marker"}


def test_marker_is_stable_for_an_unchanged_archive(tmp_path):
    archive = tmp_path / "inference.tar"
    archive.write_bytes(b"x" * 1000)
    first = marker(str(archive), "inference")
    assert first.startswith("inference.tar.") and first.endswith(".loaded")
    assert marker(str(archive), "inference") == first


def test_a_replaced_archive_gets_another_marker(tmp_path):
    archive = tmp_path / "inference.tar"
    archive.write_bytes(b"x" * 1000)
    os.utime(archive, ns=(1_000_000_000, 1_000_000_000))
    before = marker(str(archive), "inference")
    # Same size, new content written later: the modification time tells.
    archive.write_bytes(b"y" * 1000)
    os.utime(archive, ns=(2_000_000_000, 2_000_000_000))
    assert marker(str(archive), "inference") != before
    # Same modification time, other size.
    archive.write_bytes(b"y" * 1001)
    os.utime(archive, ns=(2_000_000_000, 2_000_000_000))
    assert marker(str(archive), "inference") != before


def test_the_archive_is_not_read(tmp_path, monkeypatch):
    archive = tmp_path / "edge.tar"
    archive.write_bytes(b"z")

    def refuse(*args, **kwargs):
        raise AssertionError("the archive was opened")

    monkeypatch.setattr("builtins.open", refuse)
    assert marker(str(archive), "edge_llm").startswith("edge_llm.tar.")


def test_keys_get_their_own_markers(tmp_path):
    archive = tmp_path / "same.tar"
    archive.write_bytes(b"x")
    assert marker(str(archive), "inference") != marker(str(archive), "edge_llm")


@pytest.mark.parametrize(
    ("path", "key", "message"),
    [
        (
            "/nonexistent/ai.tar",
            "inference",
            "inference: cannot read the image archive /nonexistent/ai.tar",
        ),
        ("", "inference", "inference: no archive path given"),
        ("/x.tar", "Bad Key", "the archive key must be a lower-case name"),
    ],
)
def test_bad_input_is_named(path, key, message):
    with pytest.raises(AnsibleFilterError, match=message):
        marker(path, key)
