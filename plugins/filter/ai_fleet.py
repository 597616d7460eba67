"""Plan a change of the GPU node fleet: which nodes go together, which are drained first.

Two filters, documented in the adjacent ``ai_fleet_batches.yml`` and
``ai_fleet_roll_plan.yml`` (``ansible-doc -t filter ai_fleet_roll_plan``):

``ai_fleet_batches(hosts, size)``
    Splits hosts into batches the way a play's ``serial`` does: a number, a
    percentage of the hosts, or a list of those (the last one repeats).

``ai_fleet_roll_plan(hosts, hostvars, size, drain='always')``
    The batches of a roll, each ``{nodes, drain}``: the nodes to change together
    and those of them to take out of every gateway first.

``ai_fleet_fingerprint(host_vars, paths=[])``
    A digest of what a node is told to be: its settings of the node roles (the
    options their argument specs declare) and the controller files the node
    roles ship (their code, image archives). A node whose recorded digest
    differs has a change coming.

Deterministic: hosts are ordered by name in natural order (``gpu-2`` before
``gpu-10``). Errors raise ``AnsibleFilterError`` with a message that names the
variable at fault.
"""

from __future__ import annotations

import hashlib
import json
import math
import os
import re
from collections.abc import Mapping, Sequence

import yaml
from ansible.errors import AnsibleFilterError
from ansible.module_utils.parsing.convert_bool import boolean

VAR_SIZE = "ai_fleet_batch_size"
VAR_SERVING = "ai_fleet_serving"
VAR_DISRUPTIVE = "ai_fleet_disruptive"
DRAIN_MODES = ("always", "disruptive")

_PERCENT = re.compile(r"([0-9]+(?:\.[0-9]+)?)\s*%")


#: Declared settings that change nothing on a node: read only by the gateways, or saying
#: how to get there (taking over the original guide's stack, what to do with keys of an
#: existing daemon.json) or what to check after.
SETTINGS_LEFT_OUT = frozenset(
    {
        "ai_node_drain",
        "docker_engine_daemon_foreign_keys",
        "ai_node_public_host",
        "ai_node_public_port",
        "ai_node_adopt",
        "ai_node_adopt_containers",
        "ai_node_large_audio_check",
        "ai_node_large_audio_check_bytes",
    }
)
#: Files larger than this are identified by size and modification time, not content.
HASHED_FILE_LIMIT = 1024 * 1024


class PlanError(ValueError):
    """A validation failure; the filters re-raise it as AnsibleFilterError."""


def is_list(value):
    """Tell whether ``value`` is a list-like sequence (not a string)."""
    return isinstance(value, Sequence) and not isinstance(value, (str, bytes))


def natural_key(name):
    """Sort key that orders ``gpu-2`` before ``gpu-10``; ties broken by the raw name."""
    parts = re.split(r"([0-9]+)", name)
    return [int(p) if i % 2 else p.lower() for i, p in enumerate(parts)], name


def batch_count(size, total):
    """Return how many hosts one batch of ``size`` takes out of ``total`` (at least 1).

    ``size`` is a positive integer (or a string of digits) or a percentage such as
    ``"25%"`` of ``total``, rounded down as Ansible's ``serial`` does.
    """
    if isinstance(size, str) and size.strip().isdigit():
        size = int(size)
    if isinstance(size, int) and not isinstance(size, bool):
        if size < 1:
            raise PlanError(f"{VAR_SIZE} must be at least 1, got {size}")
        return size
    if isinstance(size, str):
        found = _PERCENT.fullmatch(size.strip())
        if found:
            percent = float(found.group(1))
            if not 0 < percent <= 100:
                raise PlanError(f"{VAR_SIZE} must be a percentage from 1% to 100%, got {size!r}")
            return max(1, math.floor(total * percent / 100))
    raise PlanError(
        f"{VAR_SIZE} must be a number of nodes (1, 2, ...), a percentage such as '25%', "
        f"or a list of those, got {size!r}"
    )


def check_hosts(hosts):
    """Validate a host list and return it sorted in natural order."""
    if not is_list(hosts):
        raise PlanError(f"hosts must be a list of inventory host names, got {type(hosts).__name__}")
    for host in hosts:
        if not isinstance(host, str) or not host:
            raise PlanError(f"hosts must contain inventory host names, got {host!r}")
    if len(set(hosts)) != len(hosts):
        raise PlanError("hosts lists a host twice")
    return sorted(hosts, key=natural_key)


def split(hosts, size):
    """Return ``hosts`` (already checked) in consecutive batches of ``size``."""
    sizes = list(size) if is_list(size) else [size]
    if not sizes:
        raise PlanError(f"{VAR_SIZE} must not be an empty list")
    counts = [batch_count(each, len(hosts)) for each in sizes]
    batches, start, index = [], 0, 0
    while start < len(hosts):
        count = counts[min(index, len(counts) - 1)]
        batches.append(hosts[start : start + count])
        start += count
        index += 1
    return batches


def ai_fleet_batches(hosts, size=1):
    """Return the hosts in batches of ``size`` (number, percentage or list of those)."""
    try:
        return split(check_hosts(hosts), size)
    except PlanError as e:
        raise AnsibleFilterError(f"ai_fleet_batches: {e}") from None


def flag(hostvars, host, var):
    """Return a host's boolean flag ``var`` (false when unset)."""
    host_vars = hostvars.get(host) if isinstance(hostvars, Mapping) else None
    if not isinstance(host_vars, Mapping):
        raise PlanError(f"host '{host}' is not in hostvars")
    value = host_vars.get(var, False)
    try:
        return boolean(value, strict=True)
    except TypeError:
        raise PlanError(f"host '{host}': {var} must be a boolean, got {value!r}") from None


def roll_plan(hosts, hostvars, size, drain):
    """Validate the inputs and return the batches of the roll."""
    if drain not in DRAIN_MODES:
        raise PlanError(f"drain must be one of {', '.join(DRAIN_MODES)}, got {drain!r}")
    hosts = check_hosts(hosts)
    if drain == "always":
        rolled, calm = hosts, []
    else:
        rolled = [
            host
            for host in hosts
            if flag(hostvars, host, VAR_SERVING) and flag(hostvars, host, VAR_DISRUPTIVE)
        ]
        calm = [host for host in hosts if host not in rolled]
    plan = [{"nodes": calm, "drain": []}] if calm else []
    plan += [{"nodes": batch, "drain": batch} for batch in split(rolled, size)] if rolled else []
    return plan


def ai_fleet_roll_plan(hosts, hostvars, size=1, drain="always"):
    """Return the batches of a roll of the GPU nodes, each ``{nodes, drain}``.

    ``drain='always'``: every node goes in a batch of ``size`` and is drained
    first. ``drain='disruptive'``: only the nodes that serve (``ai_fleet_serving``)
    and whose change interrupts their service (``ai_fleet_disruptive``) do; all
    the others go first, together, without a drain.
    """
    try:
        return roll_plan(hosts, hostvars, size, drain)
    except PlanError as e:
        raise AnsibleFilterError(f"ai_fleet_roll_plan: {e}") from None


def file_identity(path):
    """Return what identifies a file's content: its bytes, or size and mtime when large."""
    stat = os.stat(path)
    if stat.st_size > HASHED_FILE_LIMIT:
        return f"{path} {stat.st_size} {stat.st_mtime_ns}".encode()
    with open(path, "rb") as handle:
        return path.encode() + b"\0" + handle.read()


def tree_files(path):
    """Return the files under ``path`` (or ``path`` itself), sorted, skipping caches."""
    if os.path.isfile(path):
        return [path]
    if not os.path.isdir(path):
        raise PlanError(f"paths: {path} is neither a file nor a folder on the controller")
    found = []
    for folder, subfolders, names in os.walk(path):
        subfolders[:] = sorted(d for d in subfolders if d != "__pycache__")
        found.extend(os.path.join(folder, name) for name in names if not name.endswith(".pyc"))
    return sorted(found)


def role_settings(path):
    """Return the option names that a role folder declares in its argument specs."""
    specs_path = os.path.join(path, "meta", "argument_specs.yml")
    if not os.path.isfile(specs_path):
        return set()
    with open(specs_path, encoding="utf-8") as handle:
        specs = (yaml.safe_load(handle) or {}).get("argument_specs") or {}
    return {name for entry in specs.values() for name in (entry or {}).get("options") or {}}


def fingerprint(host_vars, paths):
    """Validate the inputs and return the sha256 hex digest."""
    if not isinstance(host_vars, Mapping):
        raise PlanError(f"host_vars must be a dictionary, got {type(host_vars).__name__}")
    if not is_list(paths):
        raise PlanError(f"paths must be a list of controller paths, got {type(paths).__name__}")
    declared = set().union(*(role_settings(str(p)) for p in paths if p and os.path.isdir(str(p))))
    names = sorted(declared - SETTINGS_LEFT_OUT)
    settings = {name: host_vars[name] for name in names if name in host_vars}
    digest = hashlib.sha256(json.dumps(settings, sort_keys=True, default=str).encode())
    for path in sorted({str(p) for p in paths if p}):
        for name in tree_files(path):
            digest.update(file_identity(name))
    return digest.hexdigest()


def ai_fleet_fingerprint(host_vars, paths=()):
    """Return a digest of a node's node-role settings and of the given controller files.

    ``host_vars`` are the node's variables (``hostvars[inventory_hostname]``):
    those of the node roles count, except what the roles publish. ``paths`` are
    controller files or folders (the node roles, image archives).
    """
    try:
        return fingerprint(host_vars, paths)
    except PlanError as e:
        raise AnsibleFilterError(f"ai_fleet_fingerprint: {e}") from None


class FilterModule:
    """Filters that plan a change of the GPU node fleet."""

    def filters(self):
        """Map filter names to functions."""
        return {
            "ai_fleet_batches": ai_fleet_batches,
            "ai_fleet_roll_plan": ai_fleet_roll_plan,
            "ai_fleet_fingerprint": ai_fleet_fingerprint,
        }
