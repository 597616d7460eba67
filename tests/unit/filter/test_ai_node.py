"""Unit tests of the ai_node filter (plugins/filter/ai_node.py)."""

from __future__ import annotations

import base64
import importlib.util
import io
import itertools
import os
import struct
import sys
import wave
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
    assert set(ai_node.FilterModule().filters()) == {
        "ai_node_archive_marker",
        "ai_node_test_audio",
    }


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


# ---------------------------------------------------------------- ai_node_test_audio
def decoded_wav(size):
    """Decode the filter's payload for `size` and open it as a WAV file."""
    raw = base64.b64decode(ai_node.ai_node_test_audio(size), validate=True)
    return raw, wave.open(io.BytesIO(raw))


@pytest.mark.parametrize("size", [46, 47, 1000, 262144, 262145, "4096"])
def test_test_audio_is_a_wav_file_of_exactly_the_size(size):
    raw, wav = decoded_wav(size)
    assert len(raw) == int(size)
    assert (wav.getnchannels(), wav.getframerate(), wav.getsampwidth()) == (1, 16000, 2)
    assert wav.getnframes() == (int(size) - 44) // 2


def test_test_audio_is_the_same_on_every_run_and_a_tone_not_silence():
    assert ai_node.ai_node_test_audio(50000) == ai_node.ai_node_test_audio(50000)
    _, wav = decoded_wav(50000)
    samples = struct.unpack(f"<{wav.getnframes()}h", wav.readframes(wav.getnframes()))
    assert max(samples) > 9000 and min(samples) < -9000
    # 440 Hz at 16 kHz: 880 zero crossings per second of audio.
    crossings = sum(1 for a, b in itertools.pairwise(samples) if (a < 0) != (b < 0))
    seconds = len(samples) / 16000
    assert abs(crossings / seconds - 880) < 20


@pytest.mark.parametrize(
    ("size", "message"),
    [
        (45, "46 to 67108864 bytes, not 45"),
        (0, "not 0"),
        (64 * 1024 * 1024 + 1, "not 67108865"),
        ("big", "whole number of bytes, not 'big'"),
        (1.5, "whole number of bytes, not 1.5"),
        (True, "whole number of bytes, not True"),
    ],
)
def test_test_audio_refuses_a_bad_size(size, message):
    with pytest.raises(AnsibleFilterError, match="ai_node_test_audio") as err:
        ai_node.ai_node_test_audio(size)
    assert message in str(err.value)
