"""Judge the GPU nodes behind the gateway: which ones go into the upstream.

Four filters, documented in the adjacent ``ai_gateway_probe_targets.yml``,
``ai_gateway_verdicts.yml``, ``ai_gateway_verdict_urls.yml`` and
``ai_gateway_bad_networks.yml``
(``ansible-doc -t filter ai_gateway_verdicts``):

``ai_gateway_probe_targets(entries, hostvars, path='/health')``
    The nodes that need a probe from the gateway: not drained, and without a
    health verdict of their own (the fact ``ai_node_health``) in this run or
    with a healthy one (the gateway checks that it reaches them itself).

``ai_gateway_verdicts(entries, hostvars, probes=None)``
    Gives every node that is not drained a verdict, from its ``ai_node_health``
    fact and the gateway's probe of it, and splits the server entries into the
    upstream, the nodes left out, and the reasons why.

``ai_gateway_verdict_urls(entries, hostvars, port=9402)``
    Where the gateway's membership service asks each primary node for its GPU
    health verdict (the node's ``gpu_health`` checker), by host name.

``ai_gateway_bad_networks(values)``
    The entries of a list that are not an IP address or network (CIDR), for
    the settings check of the gateway's address lists.

``entries`` are the server entries of ``ai_upstream_servers``. Both filters are
deterministic: every list comes out sorted by inventory host name in natural
order (``gpu-2`` before ``gpu-10``), whatever the order of the inputs. Errors
raise ``AnsibleFilterError`` with a message that names the host and the
variable at fault.
"""

from __future__ import annotations

import ipaddress
import json
import re
from collections.abc import Mapping, Sequence

from ansible.errors import AnsibleFilterError

#: The fact a GPU node publishes with its own verdict, ``{healthy, message}``.
VAR_HEALTH = "ai_node_health"
VAR_DRAIN = "ai_node_drain"
VAR_BACKUP = "ai_gateway_backup"
VAR_PROBE = "ai_gateway_probe"

#: ``source`` of a verdict.
SOURCE_FACT = VAR_HEALTH
SOURCE_PROBE = "probe"

DEFAULT_PATH = "/health"
#: The GPU health checker's settings on a node (role gpu_health) and its default port.
VAR_CHECKER = "gpu_health_enabled"
VAR_CHECKER_PORT = "gpu_health_port"
DEFAULT_CHECKER_PORT = 9402
EXPECTED_FACT = "{healthy: <bool>, message: <str>}"

#: Keys a server entry must have for these filters (``ai_upstream_servers``
#: gives all of them).
ENTRY_KEYS = ("host_name", "address", "port", "backup", "down")


class VerdictError(ValueError):
    """A validation failure; the filters re-raise it as AnsibleFilterError."""


def is_list(value):
    """Tell whether ``value`` is a list-like sequence (not a string)."""
    return isinstance(value, Sequence) and not isinstance(value, (str, bytes))


def natural_key(name):
    """Sort key that orders ``gpu-2`` before ``gpu-10``; ties broken by the raw name.

    The same order as ``ai_upstream_servers`` gives its entries.
    """
    parts = re.split(r"([0-9]+)", name)
    return [int(p) if i % 2 else p.lower() for i, p in enumerate(parts)], name


def format_endpoint(address, port):
    """Return ``address:port``, with an IPv6 address in brackets."""
    if ":" in str(address):
        return f"[{address}]:{port}"
    return f"{address}:{port}"


def check_entries(entries):
    """Validate the server entries and return them sorted by host name."""
    if not is_list(entries):
        kind = type(entries).__name__
        raise VerdictError(
            f"entries must be a list of server entries (from ai_upstream_servers), got {kind}"
        )
    seen = set()
    for index, entry in enumerate(entries):
        if not isinstance(entry, Mapping):
            kind = type(entry).__name__
            raise VerdictError(f"entry {index} must be a dictionary, got {kind}")
        host = entry.get("host_name")
        if not isinstance(host, str) or not host:
            raise VerdictError(f"entry {index}: host_name must be a non-empty string, got {host!r}")
        missing = [key for key in ENTRY_KEYS if key not in entry]
        if missing:
            raise VerdictError(
                f"host '{host}': {', '.join(missing)} missing from the entry "
                "(build the entries with ai_upstream_servers)"
            )
        if host in seen:
            raise VerdictError(f"host '{host}' appears in more than one entry")
        seen.add(host)
    return sorted(entries, key=lambda entry: natural_key(entry["host_name"]))


def host_vars_of(host, hostvars):
    """Return the variables of ``host``, validated."""
    if not isinstance(hostvars, Mapping):
        kind = type(hostvars).__name__
        raise VerdictError(f"hostvars must be a dictionary of host variables, got {kind}")
    if host not in hostvars:
        raise VerdictError(f"host '{host}' is not in hostvars (not in the inventory?)")
    host_vars = hostvars[host]
    if not isinstance(host_vars, Mapping):
        raise VerdictError(f"host '{host}': its hostvars entry must be a dictionary")
    return host_vars


def judged(entries):
    """Return the entries that get a verdict: all but the drained (``down``) ones."""
    return [entry for entry in entries if not entry["down"]]


def published(entry, hostvars):
    """Tell whether the node of ``entry`` published ``ai_node_health`` in this run."""
    return VAR_HEALTH in host_vars_of(entry["host_name"], hostvars)


def needs_probe(entry, hostvars):
    """Tell whether the gateway probes the node of ``entry``.

    Every node that is not drained is probed unless it published an unhealthy
    (or malformed) verdict of its own: a node that says it is healthy may still
    be out of the gateway's reach (a firewall, a NAT rule, a wrong public port).
    """
    host_vars = host_vars_of(entry["host_name"], hostvars)
    return VAR_HEALTH not in host_vars or fact_verdict(host_vars[VAR_HEALTH])[0]


def probe_url(entry, path):
    """Return the URL of the probe of one node: ``http://<address>:<port><path>``."""
    return f"http://{format_endpoint(entry['address'], entry['port'])}{path}"


def build_probe_targets(entries, hostvars, path):
    """Validate the inputs and return the nodes to probe, sorted by host name."""
    if not isinstance(path, str) or not path.startswith("/"):
        raise VerdictError(f"path must be a string starting with '/', got {path!r}")
    return [
        {
            "host_name": entry["host_name"],
            "address": entry["address"],
            "port": entry["port"],
            "url": probe_url(entry, path),
        }
        for entry in judged(check_entries(entries))
        if needs_probe(entry, hostvars)
    ]


def ai_gateway_probe_targets(entries, hostvars, path=DEFAULT_PATH):
    """Return the GPU nodes the gateway must probe, with the URL of each probe.

    A node is probed when it is not drained and published no ``ai_node_health``
    in this run, or a healthy one. Each target is ``{host_name, address, port,
    url}``.
    """
    try:
        return build_probe_targets(entries, hostvars, path)
    except VerdictError as e:
        raise AnsibleFilterError(f"ai_gateway_probe_targets: {e}") from None


def fact_to_json(fact):
    """Return ``fact`` as JSON text for a message (anything not JSON as a string)."""
    return json.dumps(fact, default=str)


def fact_verdict(fact):
    """Return ``(healthy, message)`` of a published ``ai_node_health`` fact.

    A fact that is not ``{healthy: <bool>, message: <str>}`` counts as
    unhealthy ("malformed"); a missing or empty message reads ``no message``.
    """
    if isinstance(fact, Mapping) and isinstance(fact.get("healthy"), bool):
        message = fact.get("message")
        return fact["healthy"], (str(message) if message else "") or "no message"
    return False, f"malformed {VAR_HEALTH}, expected {EXPECTED_FACT}, got {fact_to_json(fact)}"


def probe_verdict(result):
    """Return ``(healthy, message)`` of one result of the probe (``uri``) task.

    Healthy means HTTP 200 with ``{"status": "ok"}``. A skipped probe (the task
    runs only when ``ai_gateway_probe`` is true) trusts the node.
    """
    if result.get("skipped"):
        return True, f"not probed ({VAR_PROBE} is false)"
    item = result.get("item") or {}
    url = result.get("url") or item.get("url") or item.get("address")
    status = result.get("status")
    if status == 200:
        body = result.get("json")
        if isinstance(body, Mapping) and body.get("status") == "ok":
            return True, f"{url} answered 200 ok"
        return False, f'{url} answered 200 without {{"status": "ok"}}'
    reason = result.get("msg") or f"HTTP {'?' if status is None else status}"
    return False, f"GET {url}: {reason}"


def probe_results(probes):
    """Return ``{host: result}`` of the registered probe task (or its ``results``)."""
    if probes is None:
        return {}
    results = probes.get("results", []) if isinstance(probes, Mapping) else probes
    if not is_list(results):
        kind = type(results).__name__
        raise VerdictError(f"probes must be the registered result of the probe task, got {kind}")
    by_host = {}
    for index, result in enumerate(results):
        item = result.get("item") if isinstance(result, Mapping) else None
        host = item.get("host_name") if isinstance(item, Mapping) else None
        if not isinstance(host, str) or not host:
            raise VerdictError(
                f"probes: result {index} has no item.host_name (loop over ai_gateway_probe_targets)"
            )
        if host in by_host:
            raise VerdictError(f"probes: host '{host}' has more than one result")
        by_host[host] = result
    return by_host


def reached_verdict(message, result):
    """Return ``(healthy, message, source)`` of a node that published a healthy verdict.

    The gateway's probe must confirm that it reaches the node; a skipped probe
    (``ai_gateway_probe`` false) trusts the node's word.
    """
    if result.get("skipped"):
        return True, message, SOURCE_FACT
    reached, probed = probe_verdict(result)
    if reached:
        return True, message, SOURCE_FACT
    return (
        False,
        f"the node reported healthy ({message}), but the gateway cannot reach it: {probed}",
        SOURCE_PROBE,
    )


def verdict_of(host, host_vars, results):
    """Return ``(healthy, message, source)`` of one node that is not drained.

    Takes the node's probe result out of ``results``.
    """
    if VAR_HEALTH in host_vars:
        healthy, message = fact_verdict(host_vars[VAR_HEALTH])
        if not healthy:
            return healthy, message, SOURCE_FACT
        if host not in results:
            raise VerdictError(
                f"host '{host}': published a healthy {VAR_HEALTH} but has no result in "
                "probes; the gateway probes every node of ai_gateway_probe_targets, "
                "healthy ones included"
            )
        return reached_verdict(message, results.pop(host))
    if host not in results:
        raise VerdictError(
            f"host '{host}': no {VAR_HEALTH} fact and no result in probes; "
            "probe every node of ai_gateway_probe_targets"
        )
    healthy, message = probe_verdict(results.pop(host))
    return healthy, message, SOURCE_PROBE


def judge(entries, hostvars, probes):
    """Return ``{host: {healthy, message, source}}`` for every node that is not drained."""
    results = probe_results(probes)
    verdicts = {}
    for entry in judged(entries):
        host = entry["host_name"]
        healthy, message, source = verdict_of(host, host_vars_of(host, hostvars), results)
        verdicts[host] = {"healthy": healthy, "message": message, "source": source}
    if results:
        names = ", ".join(f"'{host}'" for host in sorted(results, key=natural_key))
        raise VerdictError(
            f"probes: result(s) for host(s) {names}, which are drained, published an "
            f"unhealthy {VAR_HEALTH} or are not in entries"
        )
    return verdicts


def left_out_reason(entry, verdict):
    """Return the line that says why an unhealthy node is left out."""
    endpoint = format_endpoint(entry["address"], entry["port"])
    return (
        f"{entry['host_name']} ({endpoint}) is unhealthy ({verdict['source']}): "
        f"{verdict['message']}"
    )


def build_verdicts(entries, hostvars, probes):
    """Validate the inputs, judge the nodes and split the entries."""
    entries = check_entries(entries)
    verdicts = judge(entries, hostvars, probes)

    def healthy(entry):
        return entry["down"] or verdicts[entry["host_name"]]["healthy"]

    upstream = [dict(entry) for entry in entries if healthy(entry)]
    left_out = [dict(entry) for entry in entries if not healthy(entry)]
    usable = [entry for entry in upstream if not entry["down"] and not entry["backup"]]
    left_out_reasons = [left_out_reason(e, verdicts[e["host_name"]]) for e in left_out]
    unusable_reasons = (
        left_out_reasons
        + [f"{e['host_name']} is drained ({VAR_DRAIN})" for e in upstream if e["down"]]
        + [
            f"{e['host_name']} is a backup server only ({VAR_BACKUP})"
            for e in upstream
            if e["backup"] and not e["down"]
        ]
    )
    return {
        "verdicts": verdicts,
        "upstream": upstream,
        "left_out": left_out,
        "left_out_reasons": left_out_reasons,
        "usable": usable,
        "unusable_reasons": unusable_reasons,
    }


def ai_gateway_verdicts(entries, hostvars, probes=None):
    """Judge the GPU nodes and return what goes into the gateway's upstream.

    Returns ``{verdicts, upstream, left_out, left_out_reasons, usable,
    unusable_reasons}``; see ``ai_gateway_verdicts.yml``.
    """
    try:
        return build_verdicts(entries, hostvars, probes)
    except VerdictError as e:
        raise AnsibleFilterError(f"ai_gateway_verdicts: {e}") from None


def checker_port(host, host_vars, default):
    """Return the port of a node's GPU health checker, validated."""
    value = host_vars.get(VAR_CHECKER_PORT, default)
    try:
        port = int(str(value).strip())
    except ValueError:
        port = 0
    if isinstance(value, bool) or not 1 <= port <= 65535:
        raise VerdictError(
            f"host '{host}': {VAR_CHECKER_PORT} must be a port number from 1 to 65535, "
            f"got {value!r}"
        )
    return port


def checker_enabled(host, host_vars):
    """Tell whether a node runs the GPU health checker (gpu_health_enabled, default true)."""
    value = host_vars.get(VAR_CHECKER, True)
    text = str(value).strip().lower()
    if text in ("true", "yes", "on", "1"):
        return True
    if text in ("false", "no", "off", "0"):
        return False
    raise VerdictError(f"host '{host}': {VAR_CHECKER} must be a boolean, got {value!r}")


def build_verdict_urls(entries, hostvars, port):
    """Validate the inputs and return {host name: verdict URL} for the judged nodes."""
    urls = {}
    for entry in check_entries(entries):
        host = entry["host_name"]
        host_vars = host_vars_of(host, hostvars)
        if entry["backup"] or not checker_enabled(host, host_vars):
            continue
        endpoint = format_endpoint(entry["address"], checker_port(host, host_vars, port))
        urls[host] = f"http://{endpoint}/verdict"
    return urls


def ai_gateway_verdict_urls(entries, hostvars, port=DEFAULT_CHECKER_PORT):
    """Return where the membership service reads each node's GPU health verdict.

    One URL per primary server entry (backups are not judged) whose node runs
    the checker (``gpu_health_enabled``, default true): ``http://<address>:
    <gpu_health_port, else port>/verdict``, the entry's address being the one
    the gateway already uses for the node.
    """
    try:
        return build_verdict_urls(entries, hostvars, port)
    except VerdictError as e:
        raise AnsibleFilterError(f"ai_gateway_verdict_urls: {e}") from None


def network_problem(value):
    """Return why ``value`` is not an IP address or network (CIDR), or None.

    Accepted: ``10.0.0.5``, ``10.0.0.0/8``, ``2001:db8::1``, ``2001:db8::/32``,
    as nginx's ``allow`` and ``set_real_ip_from`` take them. Refused: anything
    else, a network with host bits set (``10.0.0.1/8``), an IPv6 zone index.
    """
    if not isinstance(value, str) or not value or "%" in value:
        return "not an IP address or network"
    try:
        ipaddress.ip_network(value, strict=True)
    except ValueError:
        return "not an IP address or network"
    return None


def ai_gateway_bad_networks(values):
    """Return the entries of ``values`` that are not an IP address or network (CIDR).

    An empty list means every entry is valid. ``values`` that is not a list
    (a string, a mapping) is returned whole, as one bad entry.
    """
    if not is_list(values):
        return [values]
    return [value for value in values if network_problem(value)]


class FilterModule:
    """Filters that judge the GPU nodes behind the gateway."""

    def filters(self):
        """Map filter names to functions."""
        return {
            "ai_gateway_probe_targets": ai_gateway_probe_targets,
            "ai_gateway_verdicts": ai_gateway_verdicts,
            "ai_gateway_verdict_urls": ai_gateway_verdict_urls,
            "ai_gateway_bad_networks": ai_gateway_bad_networks,
        }
