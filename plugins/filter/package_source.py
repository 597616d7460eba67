"""Facts about package repositories that the role package_source checks before a host changes.

Four filters, each documented in an adjacent ``<name>.yml``
(``ansible-doc -t filter <name>``):

``package_source_key_fingerprints(text)``
    The fingerprints of the primary keys in an OpenPGP public key file
    (ASCII-armoured, as vendors publish them, or binary), read with no
    ``gpg`` on either machine: version 4 keys (SHA-1 over the key packet, as
    ``gpg --show-keys`` prints) and version 5/6 keys (SHA-256).

``package_source_key_problem(text, expected, url)``
    Why a downloaded repository key must not be trusted: it holds no key,
    its primary key is not one of the expected fingerprints, or it holds
    another primary key besides. Empty when it is the key expected.

``package_source_apt_components(text, components)``
    An apt sources file (one-line ``sources.list`` or deb822 ``.sources``)
    with the components added to every entry of the distribution's archive
    (every entry that lists ``main``), the way ``add-apt-repository contrib``
    changes it; comments and every other line are kept as they are.

``package_source_dnf_enabled_stream(text, module)``
    The enabled stream of a dnf module, read from the output of
    ``dnf module list --enabled <module>``; empty when none is.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import re
from collections.abc import Iterable

ARMOR_BEGIN = "-----BEGIN PGP PUBLIC KEY BLOCK-----"
ARMOR_END = "-----END PGP PUBLIC KEY BLOCK-----"
TAG_PUBLIC_KEY = 6


class KeyFormatError(ValueError):
    """The text is not an OpenPGP public key file this filter can read."""


def dearmor(text: str) -> bytes:
    """Return the binary packets of every armoured public key block in ``text``.

    Armour headers (``Version:``, ``Comment:``) and the CRC line are skipped;
    the CRC is checked when present.
    """
    out = bytearray()
    inside = False
    body: list[str] = []
    headers = True
    crc = None
    for raw in text.splitlines():
        line = raw.strip()
        if line == ARMOR_BEGIN:
            inside, headers, body, crc = True, True, [], None
            continue
        if not inside:
            continue
        if line == ARMOR_END:
            data = _b64(body)
            if crc is not None and _crc24(data) != crc:
                raise KeyFormatError("the armour checksum does not match its data")
            out += data
            inside = False
            continue
        if headers:
            if ":" in line and not line.endswith("="):
                continue
            headers = False
            if not line:
                continue
        if line.startswith("=") and len(line) == 5:
            crc = int.from_bytes(_b64([line[1:]]), "big")
        elif line:
            body.append(line)
    if inside:
        raise KeyFormatError(f"no {ARMOR_END} line")
    return bytes(out)


def _b64(lines: list[str]) -> bytes:
    """Decode base64 lines, naming the fault."""
    try:
        return base64.b64decode("".join(lines), validate=True)
    except (binascii.Error, ValueError) as exc:
        raise KeyFormatError(f"the armoured data is not base64 ({exc})") from None


def _crc24(data: bytes) -> int:
    """Return the CRC-24 of RFC 4880, section 6.1."""
    crc = 0xB704CE
    for byte in data:
        crc ^= byte << 16
        for _ in range(8):
            crc <<= 1
            if crc & 0x1000000:
                crc ^= 0x1864CFB
    return crc & 0xFFFFFF


def packets(data: bytes) -> Iterable[tuple[int, bytes]]:
    """Yield (tag, body) of every OpenPGP packet in ``data`` (RFC 4880/9580 framing)."""
    pos = 0
    while pos < len(data):
        first = data[pos]
        if not first & 0x80:
            raise KeyFormatError(f"byte {pos} does not start an OpenPGP packet")
        pos += 1
        if first & 0x40:  # new format
            tag = first & 0x3F
            length, pos = _new_length(data, pos)
        else:  # old format
            tag = (first >> 2) & 0x0F
            kind = first & 0x03
            if kind == 3:
                length = len(data) - pos
            else:
                size = (1, 2, 4)[kind]
                length = int.from_bytes(data[pos : pos + size], "big")
                pos += size
        if pos + length > len(data):
            raise KeyFormatError("a packet runs past the end of the data")
        yield tag, data[pos : pos + length]
        pos += length


def _new_length(data: bytes, pos: int) -> tuple[int, int]:
    """Read a new-format packet length at ``pos``; return (length, next position)."""
    if pos >= len(data):
        raise KeyFormatError("a packet header runs past the end of the data")
    first = data[pos]
    if first < 192:
        return first, pos + 1
    if first < 224:
        return ((first - 192) << 8) + data[pos + 1] + 192, pos + 2
    if first == 255:
        return int.from_bytes(data[pos + 1 : pos + 5], "big"), pos + 5
    raise KeyFormatError("partial body lengths do not occur in public key files")


def fingerprint(body: bytes) -> str:
    """Return the fingerprint of one public key packet body, upper-case hex."""
    version = body[0] if body else 0
    if version == 4:
        digest = hashlib.sha1(b"\x99" + len(body).to_bytes(2, "big") + body, usedforsecurity=False)
    elif version == 5:
        digest = hashlib.sha256(b"\x9a" + len(body).to_bytes(4, "big") + body)
    elif version == 6:
        digest = hashlib.sha256(b"\x9b" + len(body).to_bytes(4, "big") + body)
    else:
        raise KeyFormatError(f"public key packet of version {version}, not 4, 5 or 6")
    return digest.hexdigest().upper()


def package_source_key_fingerprints(text: str | bytes) -> list[str]:
    """Return the fingerprints of the primary keys in an OpenPGP public key file."""
    if isinstance(text, str):
        if ARMOR_BEGIN not in text:
            raise KeyFormatError(f"no {ARMOR_BEGIN} line")
        data = dearmor(text)
    else:
        data = bytes(text)
    return [fingerprint(body) for tag, body in packets(data) if tag == TAG_PUBLIC_KEY]


def normalise_fingerprint(value: str) -> str:
    """Return a fingerprint written by people (spaces, 0x, lower case) as gpg prints it."""
    return re.sub(r"\s+", "", str(value)).upper().removeprefix("0X")


def package_source_key_problem(text: str | bytes, expected: Iterable[str], url: str = "") -> str:
    """Say why a downloaded key must not be trusted; empty when it is the key expected."""
    where = f" from {url}" if url else ""
    wanted = [normalise_fingerprint(f) for f in expected or []]
    if not wanted:
        return f"no expected fingerprint is set for the key{where}: nothing to check it against"
    try:
        found = package_source_key_fingerprints(text)
    except KeyFormatError as exc:
        return f"the key{where} is not an OpenPGP public key file: {exc}"
    if not found:
        return f"the file{where} holds no public key"
    unexpected = [f for f in found if f not in wanted]
    if unexpected:
        return (
            f"the key{where} has the fingerprint {', '.join(unexpected)}, "
            f"not the one expected ({', '.join(wanted)})"
        )
    return ""


_ONE_LINE = re.compile(
    r"^(?P<head>\s*deb(?:-src)?\s+(?:\[[^\]]*\]\s+)?\S+\s+\S+)(?P<comps>(?:\s+\S+)*)\s*$"
)


def _add(components: list[str], wanted: Iterable[str]) -> list[str]:
    """Return the components with the wanted ones appended, each once."""
    return components + [c for c in wanted if c not in components]


def package_source_apt_components(text: str, components: Iterable[str]) -> dict:
    """Add components to every entry of the distribution's archive in an apt sources file.

    Returns ``{"content": new text, "changed": bool, "entries": number of entries changed}``.
    """
    wanted = list(components)
    lines = (text or "").split("\n")
    changed = 0
    if any(re.match(r"^\s*(Types|URIs|Suites)\s*:", line, re.I) for line in lines):
        for i, line in enumerate(lines):
            match = re.match(r"^(\s*Components\s*:\s*)(.*?)(\s*)$", line, re.I)
            if match and "main" in match.group(2).split():
                comps = _add(match.group(2).split(), wanted)
                new = match.group(1) + " ".join(comps) + match.group(3)
                if new != line:
                    lines[i], changed = new, changed + 1
    else:
        for i, line in enumerate(lines):
            match = _ONE_LINE.match(line)
            if match and "main" in match.group("comps").split():
                new = (
                    match.group("head") + " " + " ".join(_add(match.group("comps").split(), wanted))
                )
                if new != line:
                    lines[i], changed = new, changed + 1
    return {"content": "\n".join(lines), "changed": changed > 0, "entries": changed}


def package_source_dnf_enabled_stream(text: str, module: str) -> str:
    """Return the enabled stream of ``module`` in ``dnf module list`` output, or ''."""
    for line in (text or "").splitlines():
        fields = line.split()
        if len(fields) < 2 or fields[0] != module:
            continue
        stream, marks = fields[1], fields[2] if len(fields) > 2 else ""
        if "[e]" in stream:
            return stream.split("[", 1)[0]
        if marks.startswith("[") and "[e]" in marks:
            return stream
    return ""


class FilterModule:
    """Ansible filter plugin: package repository checks."""

    def filters(self):
        """Map filter names to functions."""
        return {
            "package_source_key_fingerprints": package_source_key_fingerprints,
            "package_source_key_problem": package_source_key_problem,
            "package_source_apt_components": package_source_apt_components,
            "package_source_dnf_enabled_stream": package_source_dnf_enabled_stream,
        }
