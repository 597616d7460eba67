"""Controller-side helpers of the ai_node role.

Six filters, each documented in the adjacent ``<name>.yml``
(``ansible-doc -t filter <name>``):

``ai_node_archive_marker(path, key)``
    The name of the marker file a node keeps once it has loaded the image
    archive ``path`` (a file on the controller) under ``key``:
    ``<key>.tar.<12 hex digits>.loaded``. The digits come from the archive's
    name, size and modification time (nanoseconds), as rsync decides what
    changed, so a multi-gigabyte archive is never read to find that it is the
    one already shipped; a rebuilt or replaced archive gets another marker.

``ai_node_test_audio(size)``
    Base64 of a WAV file of exactly ``size`` bytes (16 kHz, mono, 16-bit PCM,
    a 440 Hz tone): the same payload on every run, for the large-audio check
    of the node's health gate.

``ai_node_build_marker(files, root, key, dockerfile, args=None)``
    The name of the marker file a node keeps once it has built image ``key``
    from a source tree: ``<key>.build.<12 hex digits>.built``, the digits from
    every file of the build context but its ``.git`` folder (its path below
    ``root``, checksum and mode, as ``ansible.builtin.find`` with ``get_checksum``
    lists them), the
    Dockerfile and the build arguments. A changed source gets another marker,
    so the image is built again.

``ai_node_config_merge(base, managed, overrides=None, source='')``
    The service configuration the role renders: every key of ``base`` (the
    configuration file the service ran with, YAML text), with the keys the role
    manages and then the operator's overrides deep-merged over it; the JWT
    secret left out (it comes from the environment).

``ai_node_config_secrets(base, managed, overrides=None, source='')``
    The secret keys that merge leaves out of the file (passwords, tokens, ...),
    as the environment variables the service reads them from
    (``redis.password`` -> ``REDIS_PASSWORD``), for the 0600 environment file.

``ai_node_config_changes(base, managed, overrides=None, source='')``
    The keys of ``base`` whose value that merge changes, as
    ``key: old -> new`` lines, for the report of a takeover.
"""

from __future__ import annotations

import base64
import hashlib
import json
import math
import os
import re
import struct

import yaml
from ansible.errors import AnsibleFilterError
from ansible.utils.vars import merge_hash

KEY = re.compile(r"^[a-z][a-z0-9_]*$")

# The test audio: 16 kHz mono 16-bit PCM, a 440 Hz tone at a third of full scale.
SAMPLE_RATE = 16000
TONE_HZ = 440
AMPLITUDE = 10000
WAV_HEADER_BYTES = 44
# Large enough for any audio a node is asked to take (the gateway's body limit is 100M).
MAX_TEST_AUDIO_BYTES = 64 * 1024 * 1024


def archive_identity(path):
    """Return the archive's name, size and modification time as one string."""
    stat = os.stat(path)
    return f"{os.path.basename(path)} {stat.st_size} {stat.st_mtime_ns}"


def marker_name(key, identity):
    """Return the marker file name of an archive key and identity string."""
    digest = hashlib.sha256(identity.encode()).hexdigest()[:12]
    return f"{key}.tar.{digest}.loaded"


def ai_node_archive_marker(path, key):
    """Return the marker file name for the image archive at ``path`` (see module docs)."""
    if not isinstance(key, str) or not KEY.match(key):
        raise AnsibleFilterError(
            f"ai_node_archive_marker: the archive key must be a lower-case name, not {key!r}"
        )
    if not isinstance(path, str) or not path:
        raise AnsibleFilterError(f"ai_node_archive_marker: {key}: no archive path given")
    try:
        return marker_name(key, archive_identity(path))
    except OSError as e:
        raise AnsibleFilterError(
            f"ai_node_archive_marker: {key}: cannot read the image archive {path} on the "
            f"controller: {e.strerror}"
        ) from None


def wav_header(data_bytes):
    """Return the 44-byte RIFF/WAVE header of ``data_bytes`` bytes of PCM samples."""
    block_align = 2
    return struct.pack(
        "<4sI4s4sIHHIIHH4sI",
        b"RIFF",
        36 + data_bytes,
        b"WAVE",
        b"fmt ",
        16,
        1,
        1,
        SAMPLE_RATE,
        SAMPLE_RATE * block_align,
        block_align,
        16,
        b"data",
        data_bytes,
    )


def tone(samples):
    """Return ``samples`` 16-bit little-endian samples of the test tone."""
    period = [
        round(AMPLITUDE * math.sin(2 * math.pi * TONE_HZ * i / SAMPLE_RATE))
        for i in range(SAMPLE_RATE // math.gcd(SAMPLE_RATE, TONE_HZ))
    ]
    whole, rest = divmod(samples, len(period))
    pcm = struct.pack(f"<{len(period)}h", *period)
    return pcm * whole + pcm[: 2 * rest]


def ai_node_test_audio(size):
    """Return base64 of a WAV file of exactly ``size`` bytes (see module docs)."""
    if isinstance(size, bool) or not isinstance(size, int):
        try:
            size = int(str(size), 10)
        except ValueError:
            raise AnsibleFilterError(
                f"ai_node_test_audio: the size must be a whole number of bytes, not {size!r}"
            ) from None
    if not WAV_HEADER_BYTES + 2 <= size <= MAX_TEST_AUDIO_BYTES:
        raise AnsibleFilterError(
            f"ai_node_test_audio: the size must be {WAV_HEADER_BYTES + 2} to "
            f"{MAX_TEST_AUDIO_BYTES} bytes, not {size}"
        )
    samples = (size - WAV_HEADER_BYTES) // 2
    data = tone(samples) + b"\0" * ((size - WAV_HEADER_BYTES) % 2)
    return base64.b64encode(wav_header(len(data)) + data).decode("ascii")


def ai_node_build_marker(files, root, key, dockerfile, args=None):
    """Return ``<key>.build.<12 hex>.built`` for a build context's files, Dockerfile and args.

    ``files`` are the entries of ``ansible.builtin.find`` (``path``, ``checksum``,
    ``mode``) under ``root``; their order does not matter.
    """
    if not isinstance(key, str) or not KEY.match(key):
        raise AnsibleFilterError(f"ai_node_build_marker: key must match {KEY.pattern}, got {key!r}")
    prefix = str(root).rstrip("/") + "/"
    lines = []
    for entry in files or []:
        try:
            path, checksum = str(entry["path"]), str(entry["checksum"])
        except (KeyError, TypeError):
            raise AnsibleFilterError(
                f"ai_node_build_marker: each file needs path and checksum (find with "
                f"get_checksum: true), got {entry!r}"
            ) from None
        relative = path[len(prefix) :] if path.startswith(prefix) else path
        if ".git" in relative.split("/"):
            continue
        lines.append(f"{relative}\0{checksum}\0{entry.get('mode', '')}")
    digest = hashlib.sha256()
    for line in sorted(lines):
        digest.update(line.encode() + b"\n")
    digest.update(f"dockerfile\0{dockerfile}\n".encode())
    for name, value in sorted((args or {}).items()):
        digest.update(f"arg\0{name}\0{value}\n".encode())
    return f"{key}.build.{digest.hexdigest()[:12]}.built"


#: Keys of the service configuration never written to the file: the JWT secret
#: reaches the service from the environment file (mode 0600) instead.
CONFIG_LEFT_OUT = (("jwt", "secret"),)
#: Names of keys that hold a secret: kept out of the world-readable file and
#: passed to the service in the environment file (mode 0600) instead.
SECRET_NAME = re.compile(
    r"(password|passwd|secret|token|(api|access|secret|private)[_-]?key|credentials?)$",
    re.IGNORECASE,
)
#: What lookup() returns for a key that is not there.
MISSING = object()


def parse_config(text, source):
    """Return the mapping of a configuration file's YAML text ({} for an empty file)."""
    if isinstance(text, dict):
        return text
    try:
        found = yaml.safe_load(str(text or "")) or {}
    except yaml.YAMLError as error:
        raise AnsibleFilterError(f"{source or 'the configuration'} is not YAML: {error}") from None
    if not isinstance(found, dict):
        raise AnsibleFilterError(
            f"{source or 'the configuration'} must be a YAML mapping, got {type(found).__name__}"
        )
    return found


def without(config, path):
    """Return ``config`` without the key at ``path`` (a tuple of keys), when it is there."""
    head, *rest = path
    if head not in config:
        return config
    if not rest:
        return {k: v for k, v in config.items() if k != head}
    if not isinstance(config[head], dict):
        return config
    return {**config, head: without(config[head], tuple(rest))}


def full_merge(base, managed, overrides, source):
    """Return ``base`` <- ``managed`` <- ``overrides`` deep-merged, nothing left out."""
    if not isinstance(managed, dict) or not isinstance(overrides or {}, dict):
        raise AnsibleFilterError("ai_node_config_merge: managed and overrides must be mappings")
    return merge_hash(merge_hash(parse_config(base, source), managed), overrides or {})


def is_secret(path):
    """Tell whether a configuration key holds a secret, by its last name."""
    return path in CONFIG_LEFT_OUT or bool(SECRET_NAME.search(str(path[-1])))


def env_name(path):
    """Return the environment variable the service reads a key from (a.b_c -> A_B_C)."""
    return re.sub(r"[^A-Z0-9]", "_", "_".join(map(str, path)).upper())


def ai_node_config_merge(base, managed, overrides=None, source=""):
    """Return ``base`` (YAML text or a mapping) <- ``managed`` <- ``overrides``, deep-merged.

    The keys the role does not manage keep the values of ``base``. The JWT secret
    and every key whose name says it holds a secret (password, token, ...) are
    left out: the environment file carries them (ai_node_config_secrets).
    """
    merged = full_merge(base, managed, overrides, source)
    for path, _ in list(leaves(merged)):
        if is_secret(path):
            merged = without(merged, path)
    return merged


def ai_node_config_secrets(base, managed, overrides=None, source=""):
    """Return ``{ENV_NAME: value}`` of the secret keys the merge leaves out of the file.

    The JWT secret is not among them (ai_node_jwt_secret sets it); empty values
    are left out. A value with a line break cannot go into an environment file
    and is refused, naming the key, never the value.
    """
    secrets = {}
    for path, value in leaves(full_merge(base, managed, overrides, source)):
        if path in CONFIG_LEFT_OUT or not is_secret(path) or value in (None, ""):
            continue
        if isinstance(value, (dict, list)) or "\n" in str(value) or "\r" in str(value):
            where = source or "the configuration"
            raise AnsibleFilterError(
                f"ai_node_config_secrets: {'.'.join(map(str, path))} of {where} holds a "
                "secret that is not one line of text (value not shown)"
            )
        secrets[env_name(path)] = str(value)
    return secrets


def leaves(config, prefix=()):
    """Yield ``(path, value)`` of every value that is not a mapping."""
    for key, value in config.items():
        if isinstance(value, dict) and value:
            yield from leaves(value, (*prefix, key))
        else:
            yield (*prefix, key), value


def lookup(config, path):
    """Return the value at ``path``, or a marker when it is not there."""
    for key in path:
        if not isinstance(config, dict) or key not in config:
            return MISSING
        config = config[key]
    return config


def ai_node_config_changes(base, managed, overrides=None, source=""):
    """Return ``key.path: old -> new`` for each value of ``base`` that the merge changes.

    Secret values are never shown: a changed one reads ``key.path: (secret) changed``;
    the JWT secret is not reported at all.
    """
    old = parse_config(base, source)
    new = full_merge(old, managed, overrides, source)
    changes = []
    for path, value in leaves(old):
        if path in CONFIG_LEFT_OUT:
            continue
        now, name = lookup(new, path), ".".join(map(str, path))
        if now is not MISSING and now == value:
            continue
        if is_secret(path):
            changes.append(f"{name}: (secret) {'removed' if now is MISSING else 'changed'}")
        else:
            shown = "(removed)" if now is MISSING else json_text(now)
            changes.append(f"{name}: {json_text(value)} -> {shown}")
    return changes


def json_text(value):
    """Show a configuration value compactly, as JSON on one line."""
    return json.dumps(value, sort_keys=True, default=str)


class FilterModule:
    """Filters of the ai_node role."""

    def filters(self):
        """Map filter names to functions."""
        return {
            "ai_node_archive_marker": ai_node_archive_marker,
            "ai_node_test_audio": ai_node_test_audio,
            "ai_node_build_marker": ai_node_build_marker,
            "ai_node_config_merge": ai_node_config_merge,
            "ai_node_config_changes": ai_node_config_changes,
            "ai_node_config_secrets": ai_node_config_secrets,
        }
