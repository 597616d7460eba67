"""Unit tests of the ai_node filter (plugins/filter/ai_node.py)."""

from __future__ import annotations

import base64
import io
import itertools
import os
import re
import struct
import wave

import pytest
from ansible.errors import AnsibleFilterError
from plugin_loader import load_plugin

ai_node = load_plugin("filter", "ai_node")
marker = ai_node.ai_node_archive_marker


def test_filter_is_registered():
    assert set(ai_node.FilterModule().filters()) == {
        "ai_node_archive_marker",
        "ai_node_test_audio",
        "ai_node_build_marker",
        "ai_node_config_merge",
        "ai_node_config_changes",
        "ai_node_config_secrets",
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


# --- the service configuration: every key of the file the service ran with ---

merge = ai_node.ai_node_config_merge
changes = ai_node.ai_node_config_changes

# Shaped like upstream's ai-inference-service.yaml: more sections than the role manages.
UPSTREAM = """\
server:
  host: 0.0.0.0
  port: 8085
  read_timeout: 60
log:
  level: info
  file: logs/ai-inference-service.log
jwt:
  secret: your-secret-key-change-in-production-min-32-chars
  expire_hours: 24
redis:
  host: redis
  port: 6379
etcd:
  endpoints: [etcd:2379]
monitoring:
  enabled: true
ai:
  request:
    max_single_delta_len: 2048
    audio_stream_chunk_size: 512
    audio_stream_chunk_delay_ms: 10
"""

MANAGED = {
    "server": {"host": "0.0.0.0", "port": 8085},
    "zmq": {"unit_manager_host": "edge-unit-manager", "unit_manager_port": 19001},
    "ai": {"request": {"audio_stream_chunk_size": 65536, "audio_stream_chunk_delay_ms": 0}},
}


def test_every_key_of_the_file_is_kept_under_the_managed_ones():
    merged = merge(UPSTREAM, MANAGED)
    assert merged["log"] == {"level": "info", "file": "logs/ai-inference-service.log"}
    assert merged["redis"] == {"host": "redis", "port": 6379}
    assert merged["etcd"] == {"endpoints": ["etcd:2379"]}
    assert merged["monitoring"] == {"enabled": True}
    assert merged["server"] == {"host": "0.0.0.0", "port": 8085, "read_timeout": 60}
    assert merged["zmq"]["unit_manager_host"] == "edge-unit-manager"
    assert merged["ai"]["request"] == {
        "max_single_delta_len": 2048,
        "audio_stream_chunk_size": 65536,
        "audio_stream_chunk_delay_ms": 0,
    }


def test_the_overrides_win_and_the_jwt_secret_is_left_out():
    merged = merge(
        UPSTREAM, MANAGED, {"redis": {"host": "redis.internal"}, "log": {"level": "debug"}}
    )
    assert merged["redis"] == {"host": "redis.internal", "port": 6379}
    assert merged["log"]["level"] == "debug"
    assert merged["jwt"] == {"expire_hours": 24}
    assert merge("jwt: {secret: x}", {}) == {"jwt": {}}
    assert merge("", MANAGED) == MANAGED
    assert merge(None, {}) == {}


def test_a_mapping_replaces_a_scalar_and_lists_are_replaced_whole():
    assert merge("a: 1\nb: [1, 2]", {"a": {"x": 1}, "b": [3]}) == {"a": {"x": 1}, "b": [3]}


def test_the_changes_name_every_value_the_node_ran_with_that_now_differs():
    assert changes(UPSTREAM, MANAGED) == [
        "ai.request.audio_stream_chunk_size: 512 -> 65536",
        "ai.request.audio_stream_chunk_delay_ms: 10 -> 0",
    ]
    assert changes(UPSTREAM, MANAGED, {"etcd": {"endpoints": ["e1:2379", "e2:2379"]}})[0] == (
        'etcd.endpoints: ["etcd:2379"] -> ["e1:2379", "e2:2379"]'
    )
    # The secret is never shown, though the result leaves it out.
    assert not [line for line in changes(UPSTREAM, {}) if "secret" in line]
    assert changes(UPSTREAM, {}) == []


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("a: [1", "guide.yaml is not YAML"),
        ("- 1\n- 2\n", "guide.yaml must be a YAML mapping, got list"),
        ("just text", "guide.yaml must be a YAML mapping, got str"),
    ],
)
def test_a_file_that_is_not_a_mapping_is_named(text, message):
    with pytest.raises(AnsibleFilterError, match=message):
        merge(text, {}, source="guide.yaml")
    with pytest.raises(AnsibleFilterError, match=message):
        changes(text, {}, source="guide.yaml")


# --- the marker of an image built from a source tree --------------------------

build_marker = ai_node.ai_node_build_marker
CONTEXT = [
    {"path": "/src/backend/ai-inference-service/Dockerfile", "checksum": "aa", "mode": "0644"},
    {"path": "/src/backend/ai-inference-service/main.go", "checksum": "bb", "mode": "0644"},
]


def test_the_build_marker_names_the_image_and_is_stable_in_any_order():
    first = build_marker(CONTEXT, "/src/backend", "inference", "ai-inference-service/Dockerfile")
    assert re.fullmatch(r"inference\.build\.[0-9a-f]{12}\.built", first)
    again = build_marker(
        CONTEXT[::-1], "/src/backend/", "inference", "ai-inference-service/Dockerfile"
    )
    assert again == first


@pytest.mark.parametrize(
    "change",
    [
        {"files": [{**CONTEXT[0], "checksum": "ab"}, CONTEXT[1]]},
        {"files": [{**CONTEXT[0], "mode": "0755"}, CONTEXT[1]]},
        {"files": CONTEXT[:1]},
        {"files": [*CONTEXT, {"path": "/src/backend/new.txt", "checksum": "cc"}]},
        {"dockerfile": "ai-inference-service/Dockerfile.gpu"},
        {"args": {"GO_VERSION": "1.22"}},
        {"root": "/elsewhere"},
    ],
)
def test_any_change_of_the_source_gives_another_marker(change):
    base = {
        "files": CONTEXT,
        "root": "/src/backend",
        "dockerfile": "ai-inference-service/Dockerfile",
    }
    before = build_marker(base["files"], base["root"], "inference", base["dockerfile"])
    merged = {**base, **change}
    after = build_marker(
        merged["files"], merged["root"], "inference", merged["dockerfile"], merged.get("args")
    )
    assert after != before


def test_the_build_marker_refuses_what_find_did_not_give():
    with pytest.raises(AnsibleFilterError, match="each file needs path and checksum"):
        build_marker([{"path": "/src/x"}], "/src", "inference", "Dockerfile")
    with pytest.raises(AnsibleFilterError, match="key must match"):
        build_marker([], "/src", "Inference!", "Dockerfile")


def test_values_templated_by_ansible_are_shown_and_merged():
    """Ansible hands templated values as subclasses of str and int: they must not break."""

    class Templated(int):
        pass

    class TemplatedText(str):
        pass

    managed = {"ai": {"request": {"audio_stream_chunk_delay_ms": Templated(10)}}}
    base = "ai: {request: {audio_stream_chunk_delay_ms: 20}}\nredis: {host: r}\n"
    assert changes(base, managed) == ["ai.request.audio_stream_chunk_delay_ms: 20 -> 10"]
    assert changes(base, {"redis": {"host": TemplatedText("r2")}}) == ['redis.host: "r" -> "r2"']
    assert merge(base, managed)["ai"]["request"]["audio_stream_chunk_delay_ms"] == 10


# --- secrets of the configuration: out of the file, into the environment ------

secrets_of = ai_node.ai_node_config_secrets
WITH_PASSWORDS = """\
jwt: {secret: jwt-value, expire_hours: 24}
redis: {host: r1, password: redis-pass}
etcd: {endpoints: [e1], auth_token: etcd-token}
storage: {access_key: ak, secret_key: sk, bucket: b, api-key: x1}
monitoring: {password: ""}
"""


def test_secret_keys_leave_the_file_and_go_to_the_environment():
    merged = merge(WITH_PASSWORDS, {})
    text = repr(merged)
    for value in ("jwt-value", "redis-pass", "etcd-token", "ak", "sk", "x1"):
        assert value not in text
    assert merged["redis"] == {"host": "r1"}
    assert merged["storage"] == {"bucket": "b"}
    assert secrets_of(WITH_PASSWORDS, {}) == {
        "REDIS_PASSWORD": "redis-pass",
        "ETCD_AUTH_TOKEN": "etcd-token",
        "STORAGE_ACCESS_KEY": "ak",
        "STORAGE_SECRET_KEY": "sk",
        "STORAGE_API_KEY": "x1",
    }
    # An override of a secret goes to the environment too.
    assert secrets_of("", {}, {"redis": {"password": "p2"}}) == {"REDIS_PASSWORD": "p2"}


def test_a_changed_secret_is_reported_without_its_value():
    reported = changes(WITH_PASSWORDS, {}, {"redis": {"password": "new-pass"}})
    assert reported == ["redis.password: (secret) changed"]
    assert not [line for line in changes(WITH_PASSWORDS, {}) if "pass" in line or "token" in line]


def test_a_secret_on_several_lines_is_refused_without_its_value():
    with pytest.raises(
        AnsibleFilterError, match=r"redis.password of kept.yaml holds a secret"
    ) as err:
        secrets_of("redis: {password: 'a\n\nb'}", {}, source="kept.yaml")
    assert "a\nb" not in str(err.value)


def test_the_git_folder_of_a_checkout_does_not_count():
    args = ("/src/backend", "inference", "ai-inference-service/Dockerfile")
    fetched = [*CONTEXT, {"path": "/src/backend/.git/objects/ab/cdef", "checksum": "ee"}]
    assert build_marker(fetched, *args) == build_marker(CONTEXT, *args)
    ignored = [*CONTEXT, {"path": "/src/backend/.gitignore", "checksum": "ff"}]
    assert build_marker(ignored, *args) != build_marker(CONTEXT, *args)
