"""A parser for the subset of YAML that service configs use (the standard library has none).

Supported:
- block mappings nested by indentation (spaces only), keys plain or quoted;
- scalars: "double-quoted" (JSON escapes), 'single-quoted' ('' for a quote), integers,
  floats, true/false, null/~ and empty values (None), and plain strings;
- block sequences of scalars (`- item`) and flow sequences of scalars (`[a, "b"]`);
- comments: whole lines, and ` # ...` after a value.
Anything else (anchors, tags, multi-line or block scalars, flow mappings other than `{}`,
sequences of mappings, several documents) raises YamlError with the line number.
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass

# `key: value` or `key:`; a plain key may not start with an indicator character.
KEY = re.compile(
    r"""(?P<key>"[^"]*"|'[^']*'|[^\s#'"\[\]{},&*!|>%@`][^:]*?)\s*:(?:\s+(?P<value>.*))?$"""
)
INTEGER = re.compile(r"[-+]?(0|[1-9][0-9]*)")
FLOAT = re.compile(r"[-+]?([0-9]+\.[0-9]*|\.[0-9]+)([eE][-+]?[0-9]+)?")
UNSUPPORTED_START = tuple("&*!|>%@`{")


class YamlError(ValueError):
    """Input outside the supported subset, or malformed."""


@dataclass(frozen=True)
class Line:
    """One meaningful line: its number, indentation and text without the comment."""

    number: int
    indent: int
    text: str


def parse(text: str) -> dict:
    """Parse a document whose top level is a mapping (an empty document gives {})."""
    lines = _meaningful_lines(text)
    if not lines:
        return {}
    value, end = _block(lines, 0, lines[0].indent)
    if end < len(lines):
        raise YamlError(f"line {lines[end].number}: unexpected indentation")
    if not isinstance(value, dict):
        raise YamlError("the top level must be a mapping")
    return value


def _meaningful_lines(text: str) -> list[Line]:
    """Split into lines, dropping blank lines, comments and the document marker."""
    lines = []
    for number, raw in enumerate(text.splitlines(), start=1):
        content = _strip_comment(raw).rstrip()
        if not content.strip() or content == "---":
            continue
        body = content.lstrip(" ")
        if body.startswith("\t") or "\t" in content[: len(content) - len(body)]:
            raise YamlError(f"line {number}: tabs are not allowed in indentation")
        lines.append(Line(number, len(content) - len(body), body))
    return lines


def _strip_comment(raw: str) -> str:
    """Cut a `#` comment that starts a line or follows whitespace, outside quotes."""
    quote = None
    for i, char in enumerate(raw):
        if quote:
            if char == quote:
                quote = None
        elif char in "\"'" and (i == 0 or raw[i - 1] in " \t:[,"):
            quote = char
        elif char == "#" and (i == 0 or raw[i - 1] in " \t"):
            return raw[:i]
    return raw


def _block(lines: list[Line], start: int, indent: int) -> tuple[object, int]:
    """Parse the mapping or sequence starting at lines[start]; return it and the next index."""
    if _is_item(lines[start].text):
        return _sequence(lines, start, indent)
    return _mapping(lines, start, indent)


def _is_item(text: str) -> bool:
    """Whether a line is a block sequence item."""
    return text == "-" or text.startswith("- ")


def _mapping(lines: list[Line], index: int, indent: int) -> tuple[dict, int]:
    """Parse `key: value` lines at one indentation."""
    mapping: dict = {}
    while index < len(lines) and lines[index].indent == indent and not _is_item(lines[index].text):
        line = lines[index]
        match = KEY.match(line.text)
        if not match:
            raise YamlError(f"line {line.number}: expected `key: value`, got {line.text!r}")
        key = _scalar(match["key"], line.number)
        if key in mapping:
            raise YamlError(f"line {line.number}: duplicate key {key!r}")
        index += 1
        if match["value"]:
            mapping[key] = _scalar(match["value"], line.number)
        elif index < len(lines) and (
            lines[index].indent > indent
            or (lines[index].indent == indent and _is_item(lines[index].text))
        ):
            mapping[key], index = _block(lines, index, lines[index].indent)
        else:
            mapping[key] = None
    if index < len(lines) and lines[index].indent > indent:
        raise YamlError(f"line {lines[index].number}: unexpected indentation")
    return mapping, index


def _sequence(lines: list[Line], index: int, indent: int) -> tuple[list, int]:
    """Parse `- item` lines of scalars at one indentation."""
    items = []
    while index < len(lines) and lines[index].indent == indent and _is_item(lines[index].text):
        line = lines[index]
        item = line.text[1:].strip()
        if KEY.match(item) or _is_item(item):
            raise YamlError(f"line {line.number}: only sequences of scalars are supported")
        items.append(_scalar(item, line.number))
        index += 1
    if index < len(lines) and lines[index].indent > indent:
        raise YamlError(f"line {lines[index].number}: unexpected indentation")
    return items, index


def _scalar(text: str, number: int) -> object:
    """Convert one scalar (or flow sequence of scalars) to its Python value."""
    text = text.strip()
    if text.startswith('"'):
        if len(text) < 2 or not text.endswith('"'):
            raise YamlError(f"line {number}: unterminated double-quoted string")
        try:
            return json.loads(text)
        except ValueError as err:
            raise YamlError(f"line {number}: bad double-quoted string: {err}") from None
    if text.startswith("'"):
        if len(text) < 2 or not text.endswith("'"):
            raise YamlError(f"line {number}: unterminated single-quoted string")
        return text[1:-1].replace("''", "'")
    if text.startswith("["):
        return _flow_sequence(text, number)
    if text == "{}":
        return {}
    if text.startswith(UNSUPPORTED_START):
        raise YamlError(f"line {number}: unsupported YAML construct {text!r}")
    return _plain(text)


def _plain(text: str) -> object:
    """Resolve a plain scalar: null, boolean, integer, float or string."""
    if text in ("", "~", "null", "Null", "NULL"):
        return None
    if text in ("true", "True", "TRUE"):
        return True
    if text in ("false", "False", "FALSE"):
        return False
    if INTEGER.fullmatch(text):
        return int(text)
    if FLOAT.fullmatch(text):
        return float(text)
    return text


def _flow_sequence(text: str, number: int) -> list:
    """Parse `[a, "b", 3]` (scalars only, on one line)."""
    if not text.endswith("]"):
        raise YamlError(f"line {number}: flow sequences must end on the same line")
    inner = text[1:-1].strip()
    if not inner:
        return []
    items, current, quote = [], "", None
    for char in inner:
        if quote:
            quote = None if char == quote else quote
        elif char in "\"'":
            quote = char
        elif char == ",":
            items.append(current)
            current = ""
            continue
        elif char in "[]{}":
            raise YamlError(f"line {number}: nested flow collections are not supported")
        current += char
    items.append(current)
    return [_scalar(item, number) for item in items]
