"""Prometheus scrape targets of the fleet, from the inventory.

One filter, documented in the adjacent ``ai_monitoring_targets.yml``
(``ansible-doc -t filter ai_monitoring_targets``):

``ai_monitoring_targets(hosts, hostvars, port_var, port, labels=None, enabled_var=None)``
    Turns inventory hosts into a Prometheus ``file_sd`` target list: one target
    group per host, ``{"targets": ["<address>:<port>"], "labels": {"instance":
    "<inventory host name>", ...}}``.

``ai_listen_host(listen)`` / ``ai_local_host(listen)``
    A listen address as a URL or a flag writes it (IPv6 in brackets), and the
    address a role reads its own service at on the host itself (loopback for a
    service that listens on every address).

The target list is deterministic (hosts sorted in natural order, ``gpu-2`` before
``gpu-10``) and every input is validated: errors raise ``AnsibleFilterError``
with a message that names the host and the variable at fault.
"""

from __future__ import annotations

import ipaddress
import re
from collections.abc import Mapping, Sequence

from ansible.errors import AnsibleFilterError

#: Where a host is reached, in this order; the inventory host name otherwise.
VAR_ADDRESS = "ansible_host"
#: Prometheus label names (``__``-prefixed names are Prometheus' own).
_LABEL_NAME = re.compile(r"[a-zA-Z_][a-zA-Z0-9_]*")
_HOST_LABEL = re.compile(r"[A-Za-z0-9](?:[A-Za-z0-9-]{0,61}[A-Za-z0-9])?")
_TRUE = ("true", "yes", "on", "1")
_FALSE = ("false", "no", "off", "0")


class TargetError(ValueError):
    """A validation failure; the filter re-raises it as AnsibleFilterError."""


def natural_key(name):
    """Sort key that orders ``gpu-2`` before ``gpu-10``; ties broken by the raw name."""
    parts = re.split(r"([0-9]+)", name)
    return [int(p) if i % 2 else p.lower() for i, p in enumerate(parts)], name


def parse_port(value, where):
    """Return ``value`` as a TCP port number (1-65535); ``where`` names it in the error."""
    text = str(value).strip()
    if isinstance(value, bool) or not text.isdigit() or not 1 <= int(text) <= 65535:
        raise TargetError(f"{where} must be a port number from 1 to 65535, got {value!r}")
    return int(text)


def parse_flag(value, where):
    """Return ``value`` as a boolean, accepting Ansible's spellings; refuse anything else."""
    if isinstance(value, bool):
        return value
    text = str(value).strip().lower()
    if text in _TRUE:
        return True
    if text in _FALSE:
        return False
    raise TargetError(f"{where} must be a boolean, got {value!r}")


def parse_address(value, where):
    """Return an IP address (normalised) or a DNS name, refusing anything else."""
    text = str(value).strip() if isinstance(value, str) else ""
    try:
        return str(ipaddress.ip_address(text))
    except ValueError:
        pass
    name = text[:-1] if text.endswith(".") else text
    labels = name.split(".")
    if not name or len(name) > 253 or not all(_HOST_LABEL.fullmatch(label) for label in labels):
        raise TargetError(f"{where} must be an IP address or a DNS name, got {value!r}")
    return name


def check_labels(labels):
    """Validate the extra labels: a dictionary of label names to strings."""
    if labels is None:
        return {}
    if not isinstance(labels, Mapping):
        raise TargetError(f"labels must be a dictionary, got {type(labels).__name__}")
    for name, value in labels.items():
        if not isinstance(name, str) or not _LABEL_NAME.fullmatch(name) or name.startswith("__"):
            raise TargetError(
                f"labels: {name!r} is not a label name (letters, digits and _, "
                "not starting with a digit or __)"
            )
        if name == "instance":
            raise TargetError("labels: 'instance' is set by the filter (the inventory host name)")
        if not isinstance(value, str):
            raise TargetError(f"labels: {name} must be a string, got {value!r}")
    return dict(labels)


def host_vars_of(host, hostvars):
    """Return the variables of ``host``, refusing a host that is not in ``hostvars``."""
    if not isinstance(hostvars, Mapping):
        raise TargetError(f"hostvars must be a dictionary, got {type(hostvars).__name__}")
    if host not in hostvars:
        raise TargetError(f"host '{host}' is not in hostvars (not in the inventory?)")
    return hostvars[host]


def endpoint(address, port):
    """Return ``address:port``, with an IPv6 address in brackets."""
    return f"[{address}]:{port}" if ":" in address else f"{address}:{port}"


def target_group(host, host_vars, port_var, port, labels):
    """Return the file_sd target group of one host."""
    where = f"host '{host}': {VAR_ADDRESS}" if VAR_ADDRESS in host_vars else f"host '{host}'"
    address = parse_address(host_vars.get(VAR_ADDRESS, host), where)
    if port_var in host_vars:
        port = parse_port(host_vars[port_var], f"host '{host}': {port_var}")
    return {"targets": [endpoint(address, port)], "labels": {"instance": host, **labels}}


def build_targets(hosts, hostvars, port_var, port, *, labels=None, enabled_var=None):  # noqa: PLR0913
    """Validate the inputs and return the target groups, sorted by host name."""
    if isinstance(hosts, (str, bytes)) or not isinstance(hosts, Sequence):
        raise TargetError(f"the hosts must be a list of inventory host names, got {hosts!r}")
    if not isinstance(port_var, str) or not _LABEL_NAME.fullmatch(port_var):
        raise TargetError(f"port_var must be a variable name, got {port_var!r}")
    default_port = parse_port(port, "port")
    extra = check_labels(labels)
    groups, seen = [], {}
    for host in sorted({str(h) for h in hosts}, key=natural_key):
        host_vars = host_vars_of(host, hostvars)
        if enabled_var and not parse_flag(
            host_vars.get(enabled_var, True), f"host '{host}': {enabled_var}"
        ):
            continue
        group = target_group(host, host_vars, port_var, default_port, extra)
        target = group["targets"][0]
        if target.lower() in seen:
            raise TargetError(
                f"hosts '{seen[target.lower()]}' and '{host}' are both at {target} "
                f"(their {VAR_ADDRESS} and {port_var}): each host needs an endpoint of its own"
            )
        seen[target.lower()] = host
        groups.append(group)
    return groups


def ai_monitoring_targets(hosts, hostvars, port_var, port, *, labels=None, enabled_var=None):  # noqa: PLR0913
    """Return the Prometheus file_sd target groups of ``hosts``.

    Each host is reached at its ``ansible_host`` (else its inventory name) and
    at its ``port_var`` variable (else ``port``); its ``instance`` label is its
    inventory host name. Hosts whose ``enabled_var`` is false are left out.
    """
    try:
        return build_targets(
            hosts, hostvars, port_var, port, labels=labels, enabled_var=enabled_var
        )
    except TargetError as e:
        raise AnsibleFilterError(f"ai_monitoring_targets: {e}") from None


def ai_listen_host(listen):
    """Return a listen address as URLs and ``host:port`` flags write it (IPv6 in brackets)."""
    text = str(listen)
    return f"[{text}]" if ":" in text else text


def ai_local_host(listen):
    """Return where a service listening on ``listen`` is reached from its own host.

    ``0.0.0.0`` (or empty) is reached at ``127.0.0.1``, ``::`` at ``[::1]``; a
    single address at itself (IPv6 in brackets).
    """
    text = str(listen)
    if text in ("0.0.0.0", ""):
        return "127.0.0.1"
    if text == "::":
        return "[::1]"
    return ai_listen_host(text)


class FilterModule:
    """The project's monitoring filters."""

    def filters(self):
        """Map filter names to functions."""
        return {
            "ai_monitoring_targets": ai_monitoring_targets,
            "ai_listen_host": ai_listen_host,
            "ai_local_host": ai_local_host,
        }
