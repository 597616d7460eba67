"""Inventory plugin ai_guide_nodes: GPU nodes from the original guide's environment variables.

The original deployment guide configured its scripts with environment variables:
``GPU_AI_NODES`` (SSH entries ``host:ssh-port``), ``AI_INFERENCE_UPSTREAMS`` (the
gateway's entries ``host:public-port``), ``MODEL_DIR``, ``AI_HTTP_PORT`` and so on.
This plugin turns the same variables into an inventory, so that an operator's
existing settings work unchanged.

Parsing, pairing and validation are the module-level functions below; they are
pure (apart from reading the entry files) and need none of Ansible's inventory
machinery. ``InventoryModule`` only gathers the options and adds the result to
the inventory. Every error raises ``AnsibleParserError`` with a message that starts
with the name of the variable (or option) at fault.
"""

from __future__ import annotations

import ipaddress
import os
import posixpath
import re
from collections import Counter
from dataclasses import dataclass

from ansible.errors import AnsibleParserError
from ansible.plugins.inventory import BaseInventoryPlugin

DOCUMENTATION = r"""
---
name: ai_guide_nodes
author: AI inference fleet maintainers
version_added: "1.6.0"
short_description: GPU nodes from the original guide's environment variables
description:
  - Builds the group of GPU nodes from the environment variables of the original
    deployment guide (C(GPU_AI_NODES), C(AI_INFERENCE_UPSTREAMS), C(MODEL_DIR),
    C(AI_HTTP_PORT), C(UNIT_MANAGER_PORT), C(AI_INFERENCE_MAX_FAILS),
    C(AI_INFERENCE_FAIL_TIMEOUT)), so that the settings operators already export keep
    working. Every variable can also be set as an option in the inventory source; an
    option in the source wins over the environment variable. A value that is empty or
    only blanks counts as unset.
  - "Entry lists (O(gpu_ai_nodes), O(ai_inference_upstreams) and their files): entries
    are separated by blanks, commas or line breaks; C(#) starts a comment that runs to the
    end of the line. An entry is C(host:port), or C(host) alone for the default port.
    C(host) is a host name (RFC 1123), an IPv4 address, or an IPv6 address in brackets
    (C([2001:db8::1]:2201), or C([2001:db8::1]) alone)."
  - "Each SSH entry (O(gpu_ai_nodes)) is one GPU node: C(ansible_host) and C(ansible_port)
    (default 22). Its inventory host name is its host, or C(host-port) when the same host
    is listed with several SSH ports (a NAT box that forwards ports to several servers).
    IPv6 hosts are named without brackets and with C(-) for C(:), e.g. C(2001-db8--1)."
  - "Each public entry (O(ai_inference_upstreams)) is the address the gateway uses for a
    node: C(ai_node_public_host) and C(ai_node_public_port) (default O(ai_http_port)). When
    no public list is given, each node's public host is its SSH host and its public port
    O(ai_http_port)."
  - "Pairing of the two lists: they must have the same number of entries. When the public
    list names exactly the hosts of the SSH list, each as many times, entries are paired by
    host name (the order of the hosts may differ); a host listed several times in both (a
    NAT box forwarding ports to several servers) is paired in order of appearance, its first
    SSH entry with its first public entry. When no public host is also an SSH host, entries
    are paired by position (the first SSH entry with the first public entry, and so on: the
    NAT case with separate addresses). Any other case is an error naming the entries: some
    hosts in both lists and some in one only, or a host listed a different number of times
    in each. Use the same host names in both lists, or none."
  - "Errors, raised before anything is added to the inventory, start with the variable (or
    option) at fault and name the entry, and for a file its path and line: a malformed entry
    (empty host, C(host:) without a port, a port that is no integer or outside 1-65535, an
    IPv6 address without brackets, any other character that does not belong), the same entry
    twice in one list, lists of different lengths, pairing that is neither by host nor by
    position, two entries that would get the same inventory host name, a list and its file
    both set, and no SSH entries at all."
  - "Group variables, set only when given (otherwise the roles' defaults apply):
    C(ai_node_model_dir) (O(model_dir), an absolute path), C(ai_node_http_port)
    (O(ai_http_port)), C(ai_node_unit_manager_port) (O(unit_manager_port)),
    C(ai_gateway_max_fails) (O(ai_inference_max_fails), an integer >= 0) and
    C(ai_gateway_fail_timeout) (O(ai_inference_fail_timeout), an nginx time such as C(30s) or
    a number of seconds, kept as written). Group variables from C(group_vars/) files next to
    the inventory take precedence over these."
  - The values count as written by the operator, like an inventory file's (the plugin
    is trusted for templates); host names, addresses, ports and times cannot hold
    templates anyway.
options:
  plugin:
    description: The name of this plugin; it makes the file an inventory source of this plugin.
    type: str
    required: true
    choices: [ai_guide_nodes]
  gpu_ai_nodes:
    description:
      - SSH entries of the GPU nodes, C(host:ssh-port) (C(host) alone means port 22).
      - A string as in the environment variable, or, in the inventory source, a YAML list
        of entries.
      - Set this or O(gpu_ai_nodes_file), not both.
    type: raw
    env:
      - name: GPU_AI_NODES
  gpu_ai_nodes_file:
    description:
      - File with the SSH entries, same syntax as O(gpu_ai_nodes); errors name its line.
      - A relative path is relative to the inventory source's folder when set as an option,
        and to the current directory when set in the environment.
    type: str
    env:
      - name: GPU_AI_NODES_FILE
  ai_inference_upstreams:
    description:
      - Public entries, C(host:public-port), the addresses the gateway uses (C(host) alone
        means O(ai_http_port)). Paired with the SSH entries as described above.
      - A string as in the environment variable, or, in the inventory source, a YAML list
        of entries.
      - Optional. Set this or O(ai_inference_upstreams_file), not both.
    type: raw
    env:
      - name: AI_INFERENCE_UPSTREAMS
  ai_inference_upstreams_file:
    description:
      - File with the public entries, same syntax as O(ai_inference_upstreams). Relative
        paths as for O(gpu_ai_nodes_file).
    type: str
    env:
      - name: AI_INFERENCE_UPSTREAMS_FILE
  model_dir:
    description: Group variable C(ai_node_model_dir), the nodes' model folder; an absolute path.
    type: str
    env:
      - name: MODEL_DIR
  ai_http_port:
    description:
      - Group variable C(ai_node_http_port), the node API's host port (1-65535).
      - Also the public port of public entries without a port, and of every node when no
        public list is given (8800 when this is not set either).
    type: str
    env:
      - name: AI_HTTP_PORT
  unit_manager_port:
    description: Group variable C(ai_node_unit_manager_port) (1-65535).
    type: str
    env:
      - name: UNIT_MANAGER_PORT
  ai_inference_max_fails:
    description: Group variable C(ai_gateway_max_fails), nginx C(max_fails) (an integer >= 0).
    type: str
    env:
      - name: AI_INFERENCE_MAX_FAILS
  ai_inference_fail_timeout:
    description:
      - Group variable C(ai_gateway_fail_timeout), nginx C(fail_timeout), kept as written.
      - An nginx time such as C(30s), C(1m) or C(1m30s) (units y M w d h m s, in that order),
        or a number of seconds.
    type: str
    env:
      - name: AI_INFERENCE_FAIL_TIMEOUT
  group:
    description: The group the nodes are added to, and that holds the group variables.
    type: str
    default: gpu_nodes
notes:
  - The inventory source file's name must end in C(ai_guide_nodes.yml) or
    C(ai_guide_nodes.yaml).
  - "To write a static inventory once:
    C(ansible-inventory -i ai_guide_nodes.yml --list --yaml --export --output hosts.yml)."
"""

EXAMPLES = r"""
# ai_guide_nodes.yml - everything from the guide's environment variables:
#   export GPU_AI_NODES="10.0.0.11:2201 10.0.0.12:2202"
#   export MODEL_DIR=/models AI_HTTP_PORT=8800
#   ansible-inventory -i ai_guide_nodes.yml --graph
plugin: ai_guide_nodes

# NAT: one box forwards SSH ports to two servers; the gateway reaches them on other
# ports of another address. Entries are paired by position (no host in both lists).
# plugin: ai_guide_nodes
# gpu_ai_nodes: 203.0.113.5:2201 203.0.113.5:2202
# ai_inference_upstreams: 198.51.100.5:18801 198.51.100.5:18802

# The lists as YAML lists.
# plugin: ai_guide_nodes
# gpu_ai_nodes:
#   - 10.0.0.11:2201
#   - 10.0.0.12:2202
#   - "[2001:db8::13]:22"

# The lists in files, one entry a line with comments; relative to this file.
# plugin: ai_guide_nodes
# gpu_ai_nodes_file: nodes.txt
# ai_inference_upstreams_file: upstreams.txt
# model_dir: /srv/models
# ai_inference_fail_timeout: 30s
"""

#: SSH port of an entry without one.
DEFAULT_SSH_PORT = 22
#: Public port of an entry without one when AI_HTTP_PORT is not set.
DEFAULT_HTTP_PORT = 8800

#: The guide's variables, in the order they are validated.
NODES = "GPU_AI_NODES"
NODES_FILE = "GPU_AI_NODES_FILE"
UPSTREAMS = "AI_INFERENCE_UPSTREAMS"
UPSTREAMS_FILE = "AI_INFERENCE_UPSTREAMS_FILE"
MODEL_DIR = "MODEL_DIR"
HTTP_PORT = "AI_HTTP_PORT"
UNIT_MANAGER_PORT = "UNIT_MANAGER_PORT"
MAX_FAILS = "AI_INFERENCE_MAX_FAILS"
FAIL_TIMEOUT = "AI_INFERENCE_FAIL_TIMEOUT"

#: Option of the inventory source for each variable (the option's env fallback).
OPTIONS = {
    NODES: "gpu_ai_nodes",
    NODES_FILE: "gpu_ai_nodes_file",
    UPSTREAMS: "ai_inference_upstreams",
    UPSTREAMS_FILE: "ai_inference_upstreams_file",
    MODEL_DIR: "model_dir",
    HTTP_PORT: "ai_http_port",
    UNIT_MANAGER_PORT: "unit_manager_port",
    MAX_FAILS: "ai_inference_max_fails",
    FAIL_TIMEOUT: "ai_inference_fail_timeout",
}

#: Group variable set from each variable.
GROUP_VARS = {
    MODEL_DIR: "ai_node_model_dir",
    HTTP_PORT: "ai_node_http_port",
    UNIT_MANAGER_PORT: "ai_node_unit_manager_port",
    MAX_FAILS: "ai_gateway_max_fails",
    FAIL_TIMEOUT: "ai_gateway_fail_timeout",
}

PAIRING_HINT = (
    "use the same host names in both lists (each as many times) to pair by host, "
    "or no common host name at all to pair by position"
)

_DIGITS = re.compile(r"[0-9]+")
_DOTTED_NUMBERS = re.compile(r"[0-9.]+")
_LABEL = re.compile(r"[A-Za-z0-9](?:[A-Za-z0-9-]{0,61}[A-Za-z0-9])?")
_SEPARATORS = re.compile(r"[\s,]+")
# nginx time with seconds resolution (as fail_timeout takes it): units in
# decreasing order, each at most once; a plain number means seconds.
_NGINX_TIME = re.compile("".join(f"(?:[0-9]+{unit})?" for unit in "yMwdhms"))


class GuideError(ValueError):
    """A validation failure; the message starts with the variable's name."""


@dataclass(frozen=True)
class Setting:
    """One variable as given: ``label`` names it in messages, ``value`` is None when unset."""

    label: str
    value: str | None = None

    @property
    def is_set(self):
        """Tell whether a value was given (empty or blank counts as unset)."""
        return self.value is not None and str(self.value).strip() != ""


@dataclass(frozen=True)
class Entry:
    """One entry of a list: ``host`` as written (IPv6 compressed, no brackets) and ``port``."""

    host: str
    port: int
    text: str
    line: int | None = None

    @property
    def key(self):
        """Identity of the host for comparisons: names ignore case and a trailing dot."""
        return self.host.lower().rstrip(".")

    @property
    def is_ipv6(self):
        """Tell whether the host is an IPv6 address."""
        return ":" in self.host


@dataclass(frozen=True)
class EntryList:
    """The entries of one variable; ``path`` is the file they were read from, if any."""

    label: str
    entries: tuple[Entry, ...]
    path: str | None = None

    def where(self, entry):
        """Return how messages locate ``entry``: the label, and the file path and line."""
        if self.path is None:
            return self.label
        return f"{self.label}: {self.path} line {entry.line}"

    def describe(self, entry):
        """Return ``entry`` as messages quote it, with its file line when it has one."""
        if self.path is None:
            return f"'{entry.text}'"
        return f"'{entry.text}' (line {entry.line})"


def split_entries(text):
    """Return ``(line_number, entry_text)`` for every entry of ``text``.

    Entries are separated by blanks, commas and line breaks; ``#`` starts a comment
    that runs to the end of its line.
    """
    found = []
    for number, line in enumerate(str(text).splitlines(), start=1):
        content = line.split("#", 1)[0]
        found.extend((number, token) for token in _SEPARATORS.split(content) if token)
    return found


def is_hostname(name):
    """Tell whether ``name`` is an RFC 1123 host name (one trailing dot allowed)."""
    name = name.removesuffix(".")
    if not name or len(name) > 253:
        return False
    return all(_LABEL.fullmatch(label) for label in name.split("."))


def parse_port(text, minimum=1, maximum=65535):
    """Return ``text`` (ASCII digits) as an int within the range; raise ValueError otherwise."""
    if not _DIGITS.fullmatch(text):
        raise ValueError(f"port {text!r} is not an integer")
    port = int(text)
    if not minimum <= port <= maximum:
        raise ValueError(f"port {port} is out of range ({minimum}-{maximum})")
    return port


def parse_ipv6(literal):
    """Return an IPv6 literal (without brackets) in compressed form; raise ValueError."""
    if "%" in literal:
        raise ValueError(f"IPv6 zone indexes are not supported ({literal!r})")
    try:
        return ipaddress.IPv6Address(literal).compressed
    except ValueError:
        raise ValueError(f"{literal!r} is not a valid IPv6 address") from None


def looks_like_ipv6(text):
    """Tell whether ``text`` is an IPv6 address, or one followed by ``:port``."""
    for candidate in (text, text.rpartition(":")[0]):
        try:
            ipaddress.IPv6Address(candidate)
        except ValueError:
            continue
        return True
    return False


def parse_host(host):
    """Return a host name or IPv4 address as written; raise ValueError when it is neither."""
    if _DOTTED_NUMBERS.fullmatch(host):
        try:
            return str(ipaddress.IPv4Address(host))
        except ValueError:
            raise ValueError(f"{host!r} is not a valid IPv4 address") from None
    if not is_hostname(host):
        raise ValueError(
            f"{host!r} is not a valid host name or IP address (host names are letters, "
            "digits, inner hyphens and dots; IPv6 addresses go in brackets)"
        )
    return str(host)


def parse_entry(text, default_port):
    """Return ``(host, port)`` of one entry ``host[:port]``; raise ValueError with the problem.

    IPv6 addresses are written in brackets, ``[addr]:port`` or ``[addr]``, and returned
    compressed without brackets. A missing port is ``default_port``.
    """
    if text.startswith("["):
        close = text.find("]")
        if close < 0:
            raise ValueError("'[' without a closing ']'")
        host = parse_ipv6(text[1:close])
        rest = text[close + 1 :]
        if not rest:
            return host, default_port
        if not rest.startswith(":"):
            raise ValueError(f"unexpected {rest!r} after ']' (write [address]:port)")
        port_text = rest[1:]
    else:
        if text.count(":") >= 2:
            raise ValueError(
                "IPv6 addresses need brackets, [address]:port"
                if looks_like_ipv6(text)
                else "more than one ':' (write host:port)"
            )
        host, colon, port_text = text.partition(":")
        if not host:
            raise ValueError("no host before ':'")
        host = parse_host(host)
        if not colon:
            return host, default_port
    if not port_text:
        raise ValueError("no port after ':' (write host:port, or the host alone)")
    return host, parse_port(port_text)


def parse_entries(label, text, default_port, path=None):
    """Return the ``EntryList`` of ``text``, the value of the variable ``label``.

    ``path`` is the file ``text`` was read from; messages then name it and the line.
    """
    entries = []
    for line, token in split_entries(text):
        try:
            host, port = parse_entry(token, default_port)
        except ValueError as problem:
            where = label if path is None else f"{label}: {path} line {line}"
            raise GuideError(f"{where}: entry '{token}': {problem}") from None
        entries.append(Entry(host=host, port=port, text=token, line=line))
    result = EntryList(label=label, entries=tuple(entries), path=path)
    check_duplicates(result)
    return result


def read_entries_file(label, path, default_port):
    """Read the file ``path`` (the value of the variable ``label``) and parse its entries."""
    try:
        with open(path, encoding="utf-8") as handle:
            text = handle.read()
    except (OSError, UnicodeDecodeError) as problem:
        raise GuideError(f"{label}: cannot read {path}: {problem}") from None
    return parse_entries(label, text, default_port, path=path)


def resolve_path(value, base_dir=None):
    """Return the file path ``value`` with ``~`` expanded, relative to ``base_dir`` if given."""
    path = os.path.expanduser(str(value).strip())
    if base_dir is not None and not os.path.isabs(path):
        path = os.path.join(base_dir, path)
    return os.path.abspath(path)


def load_list(text, file, default_port):
    """Return the ``EntryList`` of a variable given as a string or as a file, or None.

    ``text`` and ``file`` are the two ``Setting``; setting both is an error. None when
    neither is set. A relative file path is relative to the current directory.
    """
    if text.is_set and file.is_set:
        raise GuideError(
            f"{text.label} and {file.label} are both set; set only one of them "
            "(the entries themselves, or the file that lists them)"
        )
    if text.is_set:
        return parse_entries(text.label, text.value, default_port)
    if file.is_set:
        return read_entries_file(file.label, resolve_path(file.value), default_port)
    return None


def check_duplicates(entry_list):
    """Raise GuideError when two entries of ``entry_list`` are the same host and port."""
    seen = {}
    for entry in entry_list.entries:
        first = seen.setdefault((entry.key, entry.port), entry)
        if first is not entry:
            raise GuideError(
                f"{entry_list.where(entry)}: entry '{entry.text}' is listed twice "
                f"({entry_list.describe(first)} and {entry_list.describe(entry)} are both "
                f"{format_endpoint(entry.host, entry.port)})"
            )


def format_endpoint(host, port):
    """Return ``host:port``, with an IPv6 host in brackets."""
    return f"[{host}]:{port}" if ":" in host else f"{host}:{port}"


def pair(nodes, publics):
    """Return ``(node, public)`` pairs of two ``EntryList``, in the order of ``nodes``.

    The lists must have the same length. They are paired by host name when ``publics``
    names exactly the hosts of ``nodes``, each as many times (a repeated host in order of
    appearance); by position when no host of ``publics`` is a host of ``nodes``. Anything
    else is an error naming the entries concerned.
    """
    if len(nodes.entries) != len(publics.entries):
        raise GuideError(
            f"{nodes.label} has {len(nodes.entries)} entries but {publics.label} has "
            f"{len(publics.entries)}; each SSH entry needs one public entry"
        )
    node_keys = Counter(entry.key for entry in nodes.entries)
    public_counts = Counter(entry.key for entry in publics.entries)
    public_keys = set(public_counts)
    if not public_keys & set(node_keys):
        return list(zip(nodes.entries, publics.entries, strict=True))
    if node_keys == public_counts:
        by_host = {}
        for entry in publics.entries:
            by_host.setdefault(entry.key, []).append(entry)
        return [(entry, by_host[entry.key].pop(0)) for entry in nodes.entries]
    repeated = [
        entry
        for entry in nodes.entries
        if entry.key in public_keys and node_keys[entry.key] != public_counts[entry.key]
    ]
    problems = []
    only_nodes = [entry for entry in nodes.entries if entry.key not in public_keys]
    only_publics = [entry for entry in publics.entries if entry.key not in node_keys]
    if only_nodes:
        problems.append(f"only in {nodes.label}: {quote_all(nodes, only_nodes)}")
    if only_publics:
        problems.append(f"only in {publics.label}: {quote_all(publics, only_publics)}")
    if repeated:
        problems.append(
            f"hosts listed a different number of times in each list: {quote_all(nodes, repeated)}"
        )
    shared = [entry for entry in nodes.entries if entry.key in public_keys]
    raise GuideError(
        f"{nodes.label} and {publics.label} can be paired neither by host nor by position: "
        f"hosts in both lists: {quote_all(nodes, shared)}; {'; '.join(problems)}; "
        f"{PAIRING_HINT}"
    )


def quote_all(entry_list, entries):
    """Return the entries as messages quote them, comma-separated."""
    return ", ".join(entry_list.describe(entry) for entry in entries)


def host_names(nodes):
    """Return the inventory host name of each entry of the ``EntryList`` ``nodes``.

    The name is the host; ``host-port`` when the host occurs with several ports. IPv6
    hosts are written with ``-`` for ``:``. Two entries with the same name are an error.
    """
    counts = Counter(entry.key for entry in nodes.entries)
    names = []
    by_name = {}
    for entry in nodes.entries:
        base = entry.host.replace(":", "-") if entry.is_ipv6 else entry.host
        name = f"{base}-{entry.port}" if counts[entry.key] > 1 else base
        other = by_name.setdefault(name, entry)
        if other is not entry:
            raise GuideError(
                f"{nodes.where(entry)}: entries {nodes.describe(other)} and "
                f"{nodes.describe(entry)} would both be the inventory host '{name}'; "
                "write the hosts so that their names differ"
            )
        names.append(name)
    return names


def check_port(setting):
    """Return the port a ``Setting`` gives, as an int (1-65535)."""
    try:
        return parse_port(str(setting.value).strip())
    except ValueError:
        raise GuideError(
            f"{setting.label}: must be a port, an integer from 1 to 65535, got {setting.value!r}"
        ) from None


def check_max_fails(setting):
    """Return nginx ``max_fails`` from a ``Setting``, as an int >= 0."""
    text = str(setting.value).strip()
    if not _DIGITS.fullmatch(text):
        raise GuideError(f"{setting.label}: must be an integer >= 0, got {setting.value!r}")
    return int(text)


def check_fail_timeout(setting):
    """Return nginx ``fail_timeout`` from a ``Setting``, as written (``30s``, ``1m``, ``10``)."""
    text = str(setting.value).strip()
    if not text or not (_NGINX_TIME.fullmatch(text) or _DIGITS.fullmatch(text)):
        raise GuideError(
            f"{setting.label}: must be an nginx time such as 30s, 1m or 1m30s (units y M w d "
            f"h m s, in that order) or a number of seconds, got {setting.value!r}"
        )
    return text


def check_model_dir(setting):
    """Return the model folder from a ``Setting``; it must be an absolute path."""
    text = str(setting.value).strip()
    if not posixpath.isabs(text):
        raise GuideError(f"{setting.label}: must be an absolute path, got {setting.value!r}")
    return text


#: How each variable that becomes a group variable is validated.
CHECKS = {
    MODEL_DIR: check_model_dir,
    HTTP_PORT: check_port,
    UNIT_MANAGER_PORT: check_port,
    MAX_FAILS: check_max_fails,
    FAIL_TIMEOUT: check_fail_timeout,
}


def group_vars(settings):
    """Return the group variables of the ``Setting`` in ``settings`` that are set.

    ``settings`` maps the guide's variable names (``MODEL_DIR``...) to ``Setting``.
    """
    result = {}
    for name, check in CHECKS.items():
        setting = settings.get(name)
        if setting is not None and setting.is_set:
            result[GROUP_VARS[name]] = check(setting)
    return result


def no_nodes(nodes, nodes_file):
    """Return the error for an SSH list that is unset, or that lists nothing."""
    return GuideError(
        f"{nodes.label} or {nodes_file.label} is empty or unset: set one of them to the SSH "
        f"entries of the GPU nodes, host:ssh-port separated by blanks or commas "
        f"(options {OPTIONS[NODES]} / {OPTIONS[NODES_FILE]} of the inventory source)"
    )


def build_inventory(settings):
    """Return ``{"hosts": {name: host_vars}, "vars": group_vars}`` from the guide's variables.

    ``settings`` maps the guide's variable names (``GPU_AI_NODES``, ``MODEL_DIR``...)
    to ``Setting``; missing names count as unset. Relative file paths are relative to
    the current directory. Raises GuideError on any invalid input.
    """
    settings = {name: settings.get(name) or Setting(name) for name in OPTIONS}
    variables = group_vars(settings)
    http_port = variables.get(GROUP_VARS[HTTP_PORT], DEFAULT_HTTP_PORT)
    nodes = load_list(settings[NODES], settings[NODES_FILE], DEFAULT_SSH_PORT)
    if nodes is None or not nodes.entries:
        raise no_nodes(settings[NODES], settings[NODES_FILE])
    publics = load_list(settings[UPSTREAMS], settings[UPSTREAMS_FILE], http_port)
    if publics is None:
        pairs = [(entry, Entry(entry.host, http_port, entry.text)) for entry in nodes.entries]
    else:
        pairs = pair(nodes, publics)
    hosts = {}
    for name, (node, public) in zip(host_names(nodes), pairs, strict=True):
        hosts[name] = {
            "ansible_host": str(node.host),
            "ansible_port": int(node.port),
            "ai_node_public_host": str(public.host),
            "ai_node_public_port": int(public.port),
        }
    return {"hosts": hosts, "vars": variables}


def entries_text(label, value):
    """Return the text of an entry list given as a string or as a list of entries.

    List items are joined with line breaks; items must be strings or numbers.
    """
    if value is None or isinstance(value, str):
        return plain(value)
    if isinstance(value, (list, tuple)) and all(
        isinstance(item, (str, int)) and not isinstance(item, bool) for item in value
    ):
        return "\n".join(str(item) for item in value)
    raise GuideError(f"{label}: must be a string of entries or a list of entries, got {value!r}")


def plain(value):
    """Return ``value`` as a plain ``str`` (no data tags of the config layer), or None."""
    return None if value is None else str(value)


class InventoryModule(BaseInventoryPlugin):
    """Add the GPU nodes of the guide's variables to the inventory."""

    NAME = "ai_guide_nodes"
    # The operator sets these values, as in an inventory file; without trust,
    # `ansible-inventory --list` would wrap every string as unsafe.
    trusted_by_default = True

    def verify_file(self, path):
        """Accept readable files named ``*ai_guide_nodes.yml`` or ``*ai_guide_nodes.yaml``."""
        if not super().verify_file(path):
            return False
        return str(path).endswith(("ai_guide_nodes.yml", "ai_guide_nodes.yaml"))

    def setting(self, name, source_dir):
        """Return the ``Setting`` of the guide's variable ``name`` from its option or env var.

        Messages name the environment variable when the value came from there, else
        the option of the inventory source. A relative file path set as an option is
        made relative to ``source_dir``, the inventory source's folder.
        """
        option = OPTIONS[name]
        value, origin = self.get_option_and_origin(option)
        label = name if value is None or str(origin).startswith("env:") else option
        if name in (NODES, UPSTREAMS):
            value = entries_text(label, value)
        setting = Setting(label=label, value=plain(value))
        if label == name:
            return setting
        if name in (NODES_FILE, UPSTREAMS_FILE) and setting.is_set:
            setting = Setting(label=option, value=resolve_path(setting.value, source_dir))
        return setting

    def parse(self, inventory, loader, path, cache=True):
        """Read the inventory source ``path`` and add the GPU nodes and group variables."""
        super().parse(inventory, loader, path, cache)
        self._read_config_data(path)
        group = plain(self.get_option("group"))
        if not group or not group.strip():
            raise AnsibleParserError("group: must be a group name, got an empty value")
        source_dir = os.path.dirname(os.path.abspath(str(path)))
        try:
            settings = {name: self.setting(name, source_dir) for name in OPTIONS}
            result = build_inventory(settings)
        except GuideError as problem:
            raise AnsibleParserError(str(problem)) from None
        group = self.inventory.add_group(group)
        for name, host_vars in result["hosts"].items():
            self.inventory.add_host(name, group=group)
            for key, value in host_vars.items():
                self.inventory.set_variable(name, key, value)
        for key, value in result["vars"].items():
            self.inventory.set_variable(group, key, value)
