"""The fleet's state in one report: every node, every gateway, every fault.

One filter, documented in the adjacent ``ai_fleet_report.yml``
(``ansible-doc -t filter ai_fleet_report``):

``ai_fleet_report(nodes, gateways)``
    From what ``playbooks/verify.yml`` read on each GPU node and each gateway,
    returns ``{nodes, gateways, faults, table}``: a row per host, every fault as a
    sentence that names the host, and the report as a text table.

Deterministic: hosts in natural order (``gpu-2`` before ``gpu-10``).
"""

from __future__ import annotations

import re
from collections.abc import Mapping

from ansible.errors import AnsibleFilterError

_SERVER = re.compile(r"^\s*server\s+(\S+?)((?:\s+[^;\s]+)*)\s*;", re.MULTILINE)


class ReportError(ValueError):
    """A validation failure; the filter re-raises it as AnsibleFilterError."""


def natural_key(name):
    """Sort key that orders ``gpu-2`` before ``gpu-10``; ties broken by the raw name."""
    parts = re.split(r"([0-9]+)", name)
    return [int(p) if i % 2 else p.lower() for i, p in enumerate(parts)], name


def endpoint(entry):
    """Return ``address:port`` of a server entry, with an IPv6 address in brackets."""
    address = str(entry["address"])
    return f"[{address}]:{entry['port']}" if ":" in address else f"{address}:{entry['port']}"


def parse_servers(text):
    """Return ``{endpoint: down}`` of the ``server`` lines of an include file."""
    return {found.group(1): "down" in found.group(2).split() for found in _SERVER.finditer(text)}


def gpu_summary(gpu):
    """Return ``(text, fault)`` about a node's GPUs from its ``nvidia_gpu`` facts."""
    if not isinstance(gpu, Mapping) or not gpu:
        return "not read", None
    devices = len(gpu.get("pci_devices") or [])
    smi = gpu.get("nvidia_smi") or {}
    if not devices:
        return "no NVIDIA GPU", None
    if smi.get("state") != "ok":
        return f"{devices} GPU(s), nvidia-smi: {smi.get('state')}", (
            f"nvidia-smi does not work ({smi.get('state')}): {smi.get('msg', '')}".strip()
        )
    return (
        f"{gpu.get('gpu_count', 0)} GPU(s), driver {gpu.get('driver_version')}, "
        f"CUDA {gpu.get('cuda_version')}",
        None,
    )


def container_faults(containers):
    """Return ``(text, faults)`` about the node stack's containers."""
    parts, faults = [], []
    for name in sorted(containers or {}):
        info = containers[name] or {}
        state, health = info.get("state", "missing"), info.get("health") or ""
        image = str(info.get("image", ""))[7:19] or "-"
        parts.append(f"{name} {state}{'/' + health if health else ''} {image}")
        if state != "running":
            faults.append(f"container {name} is {state}")
        elif health not in ("", "healthy", "starting"):
            faults.append(f"container {name} is {health}")
    if not containers:
        faults.append("no container of the node stack was read")
    return "; ".join(parts), faults


def node_row(host, node, gateways):
    """Return ``(row, faults)`` of one GPU node."""
    if not node.get("reachable"):
        reason = node.get("msg") or "unreachable"
        return {"host": host, "reachable": False, "summary": reason}, [f"{host}: {reason}"]
    status = node.get("status") or {}
    faults = []
    gpus, gpu_fault = gpu_summary(node.get("gpu"))
    if gpu_fault:
        faults.append(gpu_fault)
    containers, more = container_faults(status.get("containers"))
    faults += more
    if status.get("health") != "ok":
        faults.append(f"/health: {status.get('health')}")
    deep = str(status.get("deep_health", ""))
    if deep != "healthy" and not deep.startswith("not checked"):
        faults.append(f"deep health: {deep}")
    if node.get("recorded") in (None, ""):
        faults.append("not deployed by this project yet (run site.yml)")
    elif node.get("recorded") != node.get("desired"):
        faults.append("not deployed as the inventory says: a change is pending (run site.yml)")
    drained_on = sorted(g for g, gw in gateways.items() if host in (gw.get("drain_record") or []))
    drained = bool(node.get("drain_var")) or bool(drained_on)
    served = {}
    for name, gateway in gateways.items():
        entry = (gateway.get("entries") or {}).get(host)
        if entry is None:
            continue
        servers = parse_servers(gateway.get("servers") or "")
        where = endpoint(entry)
        served[name] = "absent" if where not in servers else "down" if servers[where] else "up"
        if not drained and served[name] != "up":
            faults.append(f"not served by gateway {name} ({where} is {served[name]})")
        if drained and served[name] == "up":
            faults.append(f"drained, but gateway {name} still sends it requests ({where} is up)")
    row = {
        "host": host,
        "reachable": True,
        "gpus": gpus,
        "containers": containers,
        "health": status.get("health"),
        "deep_health": deep,
        "drained": drained,
        "drained_by": (["ai_node_drain"] if node.get("drain_var") else []) + drained_on,
        "gateways": dict(sorted(served.items())),
    }
    return row, [f"{host}: {fault}" for fault in faults]


def gateway_row(name, gateway):
    """Return ``(row, faults)`` of one gateway."""
    if not gateway.get("reachable"):
        reason = gateway.get("msg") or "unreachable"
        return {"host": name, "reachable": False, "summary": reason}, [f"{name}: {reason}"]
    faults = []
    if gateway.get("nginx_t") != "ok":
        faults.append(f"nginx -t fails: {gateway.get('nginx_t')}")
    if gateway.get("loaded") != "current":
        faults.append(f"loaded configuration: {gateway.get('loaded')}")
    servers = parse_servers(gateway.get("servers") or "")
    if not servers:
        faults.append(f"no server in {gateway.get('servers_file')}")
    row = {
        "host": name,
        "reachable": True,
        "nginx_t": gateway.get("nginx_t"),
        "loaded": gateway.get("loaded"),
        "servers": [f"{where}{' down' if down else ''}" for where, down in servers.items()],
        "drain_record": sorted(gateway.get("drain_record") or [], key=natural_key),
    }
    return row, [f"{name}: {fault}" for fault in faults]


def table(node_rows, gateway_rows, faults):
    """Return the report as text: one line per node, one per gateway, then the faults."""
    lines = ["GPU nodes:"]
    for row in node_rows:
        if not row["reachable"]:
            lines.append(f"  {row['host']}: UNREACHABLE ({row['summary']})")
            continue
        served = ", ".join(f"{g} {state}" for g, state in row["gateways"].items()) or "no gateway"
        drained = f"DRAINED ({', '.join(row['drained_by'])})" if row["drained"] else "in service"
        lines.append(
            f"  {row['host']}: {drained}; {row['gpus']}; health {row['health']}, deep "
            f"{row['deep_health']}; {row['containers']}; gateways: {served}"
        )
    lines.append("Gateways:")
    for row in gateway_rows:
        if not row["reachable"]:
            lines.append(f"  {row['host']}: UNREACHABLE ({row['summary']})")
            continue
        record = ", ".join(row["drain_record"]) or "none"
        lines.append(
            f"  {row['host']}: nginx -t {row['nginx_t']}; loaded {row['loaded']}; "
            f"servers: {', '.join(row['servers']) or 'none'}; drain record: {record}"
        )
    lines.append(f"Faults: {len(faults)}" if faults else "Faults: none")
    lines += [f"  - {fault}" for fault in faults]
    return "\n".join(lines)


def check_hosts(value, what):
    """Validate ``{host: {...}}`` and return its items in natural order."""
    if not isinstance(value, Mapping):
        raise ReportError(f"{what} must be a dictionary of host states, got {type(value).__name__}")
    for host, state in value.items():
        if not isinstance(state, Mapping):
            raise ReportError(f"{what}: the state of host '{host}' must be a dictionary")
    return sorted(value.items(), key=lambda item: natural_key(str(item[0])))


def build_report(nodes, gateways):
    """Validate the inputs and return the report."""
    gateway_items = check_hosts(gateways, "gateways")
    by_gateway = {}
    for name, gateway in gateway_items:
        entries = {
            e["host_name"]: e for e in gateway.get("entries") or [] if isinstance(e, Mapping)
        }
        by_gateway[name] = {**gateway, "entries": entries}
    node_rows, gateway_rows, faults = [], [], []
    for host, node in check_hosts(nodes, "nodes"):
        reachable = {g: gw for g, gw in by_gateway.items() if gw.get("reachable")}
        row, more = node_row(host, node, reachable)
        node_rows.append(row)
        faults += more
    for name, gateway in gateway_items:
        row, more = gateway_row(name, gateway)
        gateway_rows.append(row)
        faults += more
    return {
        "nodes": node_rows,
        "gateways": gateway_rows,
        "faults": faults,
        "table": table(node_rows, gateway_rows, faults),
    }


def ai_fleet_report(nodes, gateways):
    """Return ``{nodes, gateways, faults, table}`` for the states read by verify.yml."""
    try:
        return build_report(nodes, gateways)
    except ReportError as e:
        raise AnsibleFilterError(f"ai_fleet_report: {e}") from None


class FilterModule:
    """The fleet report filter."""

    def filters(self):
        """Map filter names to functions."""
        return {"ai_fleet_report": ai_fleet_report}
