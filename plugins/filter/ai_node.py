"""Controller-side helpers of the ai_node role.

Two filters, each documented in the adjacent ``<name>.yml``
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
"""

from __future__ import annotations

import base64
import hashlib
import math
import os
import re
import struct

from ansible.errors import AnsibleFilterError

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


class FilterModule:
    """Filters of the ai_node role."""

    def filters(self):
        """Map filter names to functions."""
        return {
            "ai_node_archive_marker": ai_node_archive_marker,
            "ai_node_test_audio": ai_node_test_audio,
        }
