"""Action ai_settings_check: check a role's settings on the controller, one short line each.

Documented in ``plugins/modules/ai_settings_check.py`` (``ansible-doc ai_settings_check``).

Everything here runs on the controller and reads only variables: nothing on the
host is touched, so the check can run before any host changes (the first play
of every playbook, ``playbooks/validate.yml``) and in check mode.

The pure functions below do the judging; ``ActionModule`` only gathers the
variables and reports. Each problem is one line that names the variable, what was
given and what is expected; a value of a variable marked ``no_log`` in the
argument spec, or listed in ``secrets``, never appears in any message.
"""

from __future__ import annotations

import ipaddress
import itertools
import math
import re
from collections import Counter
from collections.abc import Iterable, Mapping, Sequence
from pathlib import Path
from typing import Any

import yaml
from ansible.errors import AnsibleError
from ansible.module_utils.common.arg_spec import ArgumentSpecValidator
from ansible.plugins.action import ActionBase

#: Secrets that were published (in this repository, its history, or upstream's
#: example configuration): anyone can read them, so none protects anything.
PUBLISHED_SECRETS = frozenset(
    {
        "your-secret-key-change-in-production-min-32-chars",
        "lab-only-jwt-secret-0123456789abcdef0123456789abcdef",
        "replace-with-the-output-of: openssl rand -hex 32",
    }
)

#: Words that mark a placeholder rather than a secret (case-insensitive).
PLACEHOLDER_MARKERS = (
    "replace-with",
    "replace_me",
    "replace-me",
    "change-me",
    "changeme",
    "change-in-production",
    "your-secret",
    "placeholder",
    "example",
)

#: Fewest characters, distinct characters and estimated bits a secret must have.
SECRET_MIN_LENGTH = 32
SECRET_MIN_DISTINCT = 10
SECRET_MIN_BITS = 96

SECRET_RULES = (
    f"at least {SECRET_MIN_LENGTH} characters of random text "
    "(for example from `openssl rand -hex 32`)"
)

#: How many characters of a given value a message shows.
SHOWN = 60

HIDDEN = "********"


def shown(value: Any) -> str:
    """Return ``value`` as a message shows it: ``repr`` for text, shortened."""
    text = repr(value) if isinstance(value, str) else str(value)
    return text if len(text) <= SHOWN else text[: SHOWN - 3] + "..."


def problem(name: str, given: Any, expected: str, *, secret: bool = False) -> str:
    """Return one problem line: the variable, what was given (unless secret), what is expected."""
    given_text = "a value that is hidden (secret)" if secret else shown(given)
    return f"{name}: given {given_text}, expected {expected}"


def _is_sequence_run(value: str) -> bool:
    """Whether most neighbouring characters are equal or consecutive (``aaaa``, ``abcd``)."""
    steps = [ord(b) - ord(a) for a, b in itertools.pairwise(value)]
    trivial = sum(1 for step in steps if step in (-1, 0, 1))
    return trivial * 2 > len(steps)


def _is_repetition(value: str) -> bool:
    """Whether ``value`` is a shorter text repeated (``abcabcabc``)."""
    return len(value) > 1 and value in (value + value)[1:-1]


def entropy_bits(value: str) -> float:
    """Estimate the bits of ``value``: Shannon entropy of its characters times its length."""
    if not value:
        return 0.0
    counts = Counter(value)
    total = len(value)
    per_char = -sum(n / total * math.log2(n / total) for n in counts.values())
    return per_char * total


def secret_problems(value: Any, published: Iterable[str] = PUBLISHED_SECRETS) -> list[str]:
    """Return why ``value`` is not a usable secret, without ever quoting it; empty when it is.

    Refused: anything but text; leading or trailing whitespace; CR, LF or other
    control characters; fewer than ``SECRET_MIN_LENGTH`` characters; a published
    value or a placeholder marker; too few distinct characters, a repeated or
    sequential pattern, or fewer than ``SECRET_MIN_BITS`` estimated bits.
    """
    if value is None or (isinstance(value, str) and value == ""):
        return ["it is not set"]
    if not isinstance(value, str):
        return [f"it is a {type(value).__name__}, not text"]
    reasons = []
    if value != value.strip():
        reasons.append("it starts or ends with whitespace")
    if "\n" in value or "\r" in value:
        reasons.append("it contains a line break (CR or LF)")
    elif any(ord(ch) < 32 or ord(ch) == 127 for ch in value):
        reasons.append("it contains control characters")
    if len(value) < SECRET_MIN_LENGTH:
        reasons.append(f"it has {len(value)} characters, fewer than {SECRET_MIN_LENGTH}")
    lowered = value.strip().lower()
    if value.strip() in set(published) or value in set(published):
        reasons.append("it is a published value (an example or a test value anyone can read)")
    elif any(marker in lowered for marker in PLACEHOLDER_MARKERS):
        reasons.append("it is a placeholder, not a secret")
    stripped = value.strip()
    if stripped and len(value) >= SECRET_MIN_LENGTH and not reasons:
        distinct = len(set(stripped))
        if (
            distinct < SECRET_MIN_DISTINCT
            or _is_repetition(stripped)
            or _is_sequence_run(stripped)
            or entropy_bits(stripped) < SECRET_MIN_BITS
        ):
            reasons.append("it is trivially guessable (too few distinct characters or a pattern)")
    return reasons


def port_problem(value: Any) -> str | None:
    """Return what is wrong with ``value`` as a TCP port (1-65535), or None."""
    if isinstance(value, bool):
        return "a port number from 1 to 65535"
    try:
        number = int(str(value).strip(), 10)
    except ValueError:
        return "a port number from 1 to 65535"
    if not 1 <= number <= 65535:
        return "a port number from 1 to 65535"
    return None


def range_problem(value: Any, low: int, high: int) -> str | None:
    """Return what is wrong with ``value`` as a whole number from ``low`` to ``high``, or None."""
    expected = f"a whole number from {low} to {high}"
    if isinstance(value, bool):
        return expected
    try:
        number = int(str(value).strip(), 10)
    except ValueError:
        return expected
    return None if low <= number <= high else expected


def bind_address_problem(
    value: Any, host_addresses: Sequence[str] | None, *, allow_any: bool = True
) -> str | None:
    """Return what is wrong with ``value`` as an address to publish a port on, or None.

    It must be an IP literal: ``0.0.0.0`` / ``::`` (every address, unless
    ``allow_any`` is false), a loopback address, or an address the host owns (one of
    ``host_addresses``; not checked when that is None, as when facts are missing).
    """
    expected = "an IP address this host owns, a loopback address" + (
        ", or 0.0.0.0 / :: (every address)" if allow_any else ""
    )
    try:
        address = ipaddress.ip_address(str(value).strip("[]"))
    except ValueError:
        return f"an IP literal: {expected}"
    if address.is_unspecified:
        return None if allow_any else expected
    if address.is_loopback:
        return None
    if host_addresses is None:
        return None
    owned = set()
    for item in host_addresses:
        try:
            owned.add(ipaddress.ip_address(str(item).split("%")[0]))
        except ValueError:
            continue
    if address in owned:
        return None
    return f"{expected} (the host has {', '.join(sorted(map(str, owned))) or 'no address'})"


def nested_keys(value: Any, path: str) -> bool:
    """Whether the nested mapping ``value`` has the dotted key ``path`` (``jwt.secret``)."""
    current = value
    for part in path.split("."):
        if not isinstance(current, Mapping) or part not in current:
            return False
        current = current[part]
    return True


def _expected_from_spec(spec: Mapping[str, Any]) -> str:
    """Describe what a spec option accepts: its type, elements and choices."""
    kind = spec.get("type", "str")
    words = {
        "int": "a whole number",
        "bool": "true or false",
        "str": "text",
        "path": "a path",
        "list": "a list",
        "dict": "a mapping",
        "raw": "a value",
        "float": "a number",
    }
    expected = words.get(kind, kind)
    if kind == "list" and spec.get("elements"):
        expected += f" of {words.get(spec['elements'], spec['elements'])}"
    if spec.get("choices"):
        expected = "one of " + ", ".join(str(c) for c in spec["choices"])
    return expected


def spec_problems(
    options: Mapping[str, Mapping[str, Any]], values: Mapping[str, Any]
) -> dict[str, str]:
    """Check ``values`` against argument spec ``options``, one variable at a time.

    Returns, by variable, one problem line for each that is missing (``required``)
    or that the spec refuses (type, choices, elements, nested options). Values of
    ``no_log`` options never appear.
    """
    problems = {}
    for name in sorted(options):
        spec = dict(options[name])
        secret = bool(spec.get("no_log"))
        if name not in values:
            if spec.get("required"):
                problems[name] = f"{name}: not set, expected {_expected_from_spec(spec)}"
            continue
        value = values[name]
        if value is None and not spec.get("required"):
            continue
        check_spec = {k: v for k, v in spec.items() if k not in ("description", "default")}
        result = ArgumentSpecValidator({name: check_spec}).validate({name: value})
        if not result.error_messages:
            continue
        line = problem(name, value, _expected_from_spec(spec), secret=secret)
        detail = "; ".join(_without(result.error_messages, value if secret else None))
        detail = re.sub(r"\s+", " ", detail)
        if "unable to convert" not in detail and "must be one of" not in detail:
            # Choices, elements, nested options: the validator's words say which.
            line += f" ({detail[:157] + '...' if len(detail) > 160 else detail})"
        problems[name] = line
    return problems


def _without(messages: Iterable[str], secret: Any) -> list[str]:
    """Return ``messages`` with every occurrence of ``secret`` replaced by a mask."""
    if not isinstance(secret, str) or not secret:
        return list(messages)
    return [message.replace(secret, HIDDEN) for message in messages]


def load_spec(path: str, entry_point: str = "main") -> dict[str, Any]:
    """Load the options of ``entry_point`` from a role's ``meta/argument_specs.yml``."""
    try:
        data = yaml.safe_load(Path(path).read_text(encoding="utf-8"))
    except (OSError, yaml.YAMLError) as error:
        raise AnsibleError(f"ai_settings_check: cannot read {path}: {error}") from error
    try:
        return dict(data["argument_specs"][entry_point].get("options") or {})
    except (KeyError, TypeError) as error:
        raise AnsibleError(
            f"ai_settings_check: {path} has no argument_specs.{entry_point}"
        ) from error


def _forbidden_key_problem(value: Any, paths: Sequence[str]) -> str | None:
    """Return which of the dotted ``paths`` the mapping ``value`` sets, as a problem, or None."""
    for path in paths:
        if nested_keys(value, path):
            return (
                f"not to set {path} (it would land in a world-readable file; the role"
                " sets it from its secret variable)"
            )
    return None


def check_problems(args: Mapping[str, Any], get) -> dict[str, str]:
    """Judge the variables that ``args`` names (ports, addresses, ranges, secrets, keys).

    ``get(name)`` returns a variable's value, or raises ``KeyError`` when it is not
    defined, ``AnsibleError`` when it cannot be evaluated. Returns, by variable,
    one problem line.
    """
    any_ok = set(args.get("any_address") or [])
    addresses = args.get("host_addresses")
    ranges = args.get("ranges") or {}
    forbidden = args.get("forbidden_keys") or {}
    judges = [(name, port_problem) for name in args.get("ports") or []]
    judges += [
        (name, lambda v, n=name: bind_address_problem(v, addresses, allow_any=n in any_ok))
        for name in args.get("bind_addresses") or []
    ]
    judges += [
        (name, lambda v, r=ranges[name]: range_problem(v, int(r[0]), int(r[1])))
        for name in sorted(ranges)
    ]
    judges += [
        (name, lambda v, p=forbidden[name]: _forbidden_key_problem(v, p))
        for name in sorted(forbidden)
    ]
    found: dict[str, str] = {}
    for name, judge in judges + [(name, None) for name in args.get("secrets") or []]:
        try:
            value = get(name)
        except KeyError:
            found[name] = f"{name}: not set"
            continue
        except AnsibleError as error:
            found[name] = f"{name}: cannot be evaluated ({_first_line(error)})"
            continue
        if judge is None:
            reasons = secret_problems(value)
            if reasons:
                line = problem(name, value, SECRET_RULES, secret=True)
                found[name] = f"{line}: {'; '.join(reasons)}"
            continue
        expected = judge(value)
        if expected:
            # A mapping that sets a forbidden key may hold a secret: never shown.
            found[name] = problem(name, value, expected, secret=name in forbidden)
    return found


class ActionModule(ActionBase):
    """Check a role's settings from the task variables; fail with one line per problem."""

    TRANSFERS_FILES = False
    _VALID_ARGS = frozenset(
        (
            "spec",
            "entry_point",
            "ports",
            "bind_addresses",
            "any_address",
            "host_addresses",
            "secrets",
            "ranges",
            "forbidden_keys",
            "problems",
        )
    )

    def run(self, tmp=None, task_vars=None):
        """Gather the variables the spec and the checks name, judge them, report."""
        result = super().run(tmp, task_vars)
        task_vars = task_vars or {}
        args = self._task.args

        def get(name: str) -> Any:
            if name not in task_vars:
                raise KeyError(name)
            return self._templar.template(task_vars[name])

        found: dict[str, str] = {}
        options = {}
        if args.get("spec"):
            options = load_spec(args["spec"], args.get("entry_point", "main"))
        values = {}
        for name in options:
            try:
                values[name] = get(name)
            except KeyError:
                continue
            except AnsibleError as error:
                found[name] = f"{name}: cannot be evaluated ({_first_line(error)})"
        found = {**spec_problems(options, values), **found}
        # The checks are more precise than the spec's types: each replaces the
        # spec's line for the same variable.
        found.update(check_problems(args, get))
        problems = [found[name] for name in sorted(found)]
        problems.extend(str(p) for p in args.get("problems") or [])

        host = task_vars.get("inventory_hostname", "?")
        result["changed"] = False
        if problems:
            result["failed"] = True
            lines = "\n".join(f"  - {line}" for line in problems)
            result["msg"] = f"{host}: {len(problems)} setting(s) refused, nothing changed:\n{lines}"
        else:
            result["msg"] = f"{host}: settings accepted"
        return result


def _first_line(error: Exception) -> str:
    """Return the first line of an error's message."""
    return str(error).strip().splitlines()[0][:200] if str(error).strip() else type(error).__name__
