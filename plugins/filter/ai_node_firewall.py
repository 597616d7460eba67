"""Who may reach a GPU node's API port, and the iptables rules that say so.

Three filters, documented in the adjacent ``ai_node_firewall_sources.yml``,
``ai_node_firewall_problems.yml`` and ``ai_node_firewall_rules.yml``
(``ansible-doc -t filter ai_node_firewall_sources``):

``ai_node_firewall_sources(gateways, hostvars, networks=None, group='gateways')``
    The source networks allowed to open connections to the node API: every
    address of every gateway, plus the operator's networks, validated,
    deduplicated and sorted, split by IP family.

``ai_node_firewall_problems(gateways, hostvars, networks=None, group='gateways')``
    The same judgement as a list of problem lines (empty when all is well), for
    a validation step that reports every refused setting at once.

``ai_node_firewall_rules(sources, port, family='ipv4', chain='AI-NODE-API', deny='drop',``
``open=False)``
    The rules of the node's own chain, exactly as ``iptables -S <chain>`` prints
    them, so that the live chain can be compared with the wanted one line by line.

All three are deterministic and validate every input; errors name the host and
the variable at fault.
"""

from __future__ import annotations

import ipaddress
import re
from collections.abc import Mapping, Sequence

from ansible.errors import AnsibleFilterError

#: Variable of a gateway host: its source addresses, instead of its facts.
VAR_SOURCES = "ai_node_firewall_source_addresses"
#: Variable of a node: further networks allowed to reach the API port.
VAR_NETWORKS = "ai_node_firewall_allowed_networks"
#: Variable of a node: the switch that opens the port to everyone on purpose.
VAR_OPEN = "ai_node_firewall_open"
#: Facts read from a gateway (``ansible_facts`` keys; ``ansible_<key>`` when injected).
FACT_KEYS = ("all_ipv4_addresses", "all_ipv6_addresses")

DEFAULT_GROUP = "gateways"
DEFAULT_CHAIN = "AI-NODE-API"
FAMILIES = ("ipv4", "ipv6")
DENY_TARGETS = {"drop": "DROP", "reject": "REJECT --reject-with tcp-reset"}

#: iptables chain names: at most 28 characters (29 with the terminating NUL);
#: no leading '-' or '!', no blank. Built-in targets cannot be chain names.
_CHAIN = re.compile(r"[A-Za-z0-9_][A-Za-z0-9_.-]{0,27}")
_RESERVED_CHAINS = frozenset(
    {"ACCEPT", "DROP", "QUEUE", "RETURN", "INPUT", "OUTPUT", "FORWARD", "PREROUTING"}
    | {"POSTROUTING", "DOCKER-USER"}
)
_DIGITS = re.compile(r"[0-9]+")
_SPLIT = re.compile(r"[\s,]+")

NETWORK_EXAMPLE = "an IP address or network such as 10.0.0.5, 10.0.0.0/24 or 2001:db8::/64"


class FirewallError(ValueError):
    """A validation failure; the filters re-raise it as AnsibleFilterError."""


def is_set(value):
    """Tell whether an inventory value counts as set (``None`` and ``''`` do not)."""
    return value is not None and value != ""


def is_list(value):
    """Tell whether ``value`` is a list-like sequence (not a string)."""
    return isinstance(value, Sequence) and not isinstance(value, (str, bytes))


def as_items(value):
    """Return a variable's items: a list as given, a string split on commas and blanks.

    INI inventories and ``-e`` give strings, so ``"10.0.0.5, 10.0.1.0/24"`` is
    two items.
    """
    if is_list(value):
        return list(value)
    if isinstance(value, str):
        return [part for part in _SPLIT.split(value.strip()) if part]
    return [value]


def parse_network(value):
    """Return ``value`` as an ``ip_network``, or raise FirewallError saying why not.

    Accepts an address (``10.0.0.5`` is ``10.0.0.5/32``), a network whose host
    bits may be set (``10.0.1.7/24`` is ``10.0.1.0/24``, as iptables reads it),
    and an IPv6 address in brackets. Refuses every address (``/0``): opening the
    port to everyone is ``ai_node_firewall_open``, on purpose.
    """
    if isinstance(value, (ipaddress.IPv4Network, ipaddress.IPv6Network)):
        network = value
    else:
        if not isinstance(value, str) or not value.strip():
            raise FirewallError(f"given {value!r}, expected {NETWORK_EXAMPLE}")
        text = value.strip()
        if text.startswith("[") and "]" in text:
            address, _, rest = text[1:].partition("]")
            text = address + rest
        if "%" in text:
            raise FirewallError(f"given {value!r}, expected {NETWORK_EXAMPLE} (no zone index)")
        try:
            network = ipaddress.ip_network(text, strict=False)
        except ValueError:
            raise FirewallError(f"given {value!r}, expected {NETWORK_EXAMPLE}") from None
    if network.prefixlen == 0:
        raise FirewallError(
            f"given {value!r}, which is every address; expected a narrower network "
            f"(set {VAR_OPEN}: true to open the port to everyone on purpose)"
        )
    return network


def usable_fact_address(text):
    """Return a gateway fact address as a host network, or None when it cannot be a source.

    Loopback, link-local, multicast and unspecified addresses are left out: no
    connection from another host comes from them.
    """
    try:
        address = ipaddress.ip_address(str(text).split("%", 1)[0])
    except ValueError:
        return None
    if address.is_loopback or address.is_link_local or address.is_multicast:
        return None
    if address.is_unspecified:
        return None
    return ipaddress.ip_network(address)


def gateway_facts(host_vars):
    """Return the gateway's fact addresses, or None when its network facts were not gathered."""
    facts = host_vars.get("ansible_facts")
    facts = facts if isinstance(facts, Mapping) else {}
    found = None
    for key in FACT_KEYS:
        value = facts.get(key)
        if value is None:
            value = host_vars.get(f"ansible_{key}")
        if value is None:
            continue
        found = (found or []) + (as_items(value) if value else [])
    return found


def ip_literal(value):
    """Return ``value`` as a host network when it is an IP literal, else None."""
    if not isinstance(value, str) or not value:
        return None
    text = value[1:-1] if value.startswith("[") and value.endswith("]") else value
    try:
        return ipaddress.ip_network(ipaddress.ip_address(text))
    except ValueError:
        return None


def gateway_sources(name, host_vars, group):
    """Return ``(networks, problems)`` of one gateway.

    In order: its ``ai_node_firewall_source_addresses`` when set; else the
    addresses of its gathered facts; else its ``ansible_host`` (or its inventory
    name) when that is an IP literal. Otherwise a problem that says what to set.
    """
    if not isinstance(host_vars, Mapping):
        return [], [f"gateway '{name}' (group '{group}') is not in hostvars"]
    explicit = host_vars.get(VAR_SOURCES)
    if is_set(explicit):
        networks, problems = [], []
        items = as_items(explicit)
        if not items:
            problems.append(
                f"{VAR_SOURCES} (gateway '{name}'): given {explicit!r}, expected at least one "
                f"{NETWORK_EXAMPLE}"
            )
        for index, item in enumerate(items):
            try:
                networks.append(parse_network(item))
            except FirewallError as e:
                problems.append(f"{VAR_SOURCES}[{index}] (gateway '{name}'): {e}")
        return networks, problems
    addresses = gateway_facts(host_vars)
    if addresses:
        networks = [n for n in (usable_fact_address(a) for a in addresses) if n is not None]
        if networks:
            return networks, []
    connect = host_vars.get("ansible_host")
    connect_var = "ansible_host"
    if not is_set(connect):
        connect, connect_var = host_vars.get("inventory_hostname", name), "its inventory name"
    network = ip_literal(connect)
    if network is not None:
        return [network], []
    facts_state = (
        "its network facts list no usable address"
        if addresses is not None
        else "its network facts are not gathered"
    )
    return [], [
        f"{VAR_SOURCES} (gateway '{name}'): not set, and the gateway's address is unknown "
        f"({facts_state}; {connect_var} {connect!r} is not an IP address); expected its "
        f"addresses in {VAR_SOURCES} on '{name}', an IP address as its ansible_host, or its "
        "facts gathered in the play (gather_subset: network)"
    ]


def collect(gateways, hostvars, networks, group):
    """Return ``({'ipv4': [...], 'ipv6': [...]}, problems)``; sources sorted, deduplicated."""
    problems = []
    found = []
    if gateways is None:
        gateways = []
    if not is_list(gateways):
        problems.append(
            f"group '{group}': expected a list of inventory host names, got {gateways!r}"
        )
        gateways = []
    if not isinstance(hostvars, Mapping):
        raise FirewallError(f"hostvars must be a dictionary, got {type(hostvars).__name__}")
    for name in gateways:
        gateway_networks, gateway_problems = gateway_sources(str(name), hostvars.get(name), group)
        found.extend(gateway_networks)
        problems.extend(gateway_problems)
    if not is_set(networks):
        networks = []
    for index, item in enumerate(as_items(networks)):
        try:
            found.append(parse_network(item))
        except FirewallError as e:
            problems.append(f"{VAR_NETWORKS}[{index}]: {e}")
    unique = sorted(set(found), key=lambda n: (n.version, int(n.network_address), n.prefixlen))
    sources = {
        "ipv4": [n.with_prefixlen for n in unique if n.version == 4],
        "ipv6": [n.with_prefixlen for n in unique if n.version == 6],
    }
    if not unique and not problems:
        problems.append(
            f"{VAR_NETWORKS}: given {list(as_items(networks))!r} and group '{group}' has no "
            f"gateway, so nobody could reach the node API; expected gateways in group '{group}' "
            f"or at least one network here (or {VAR_OPEN}: true to open the port on purpose)"
        )
    return sources, problems


def ai_node_firewall_sources(gateways, hostvars, networks=None, group=DEFAULT_GROUP):
    """Return the networks allowed to reach the node API, by family.

    ``gateways`` are the inventory names of the gateway hosts (usually
    ``groups['gateways']``), ``hostvars`` the magic variable of the same name,
    ``networks`` the node's ``ai_node_firewall_allowed_networks``. Returns
    ``{'ipv4': ['10.0.0.5/32', ...], 'ipv6': ['2001:db8::5/128', ...]}``.
    """
    try:
        sources, problems = collect(gateways, hostvars, networks, group)
    except FirewallError as e:
        raise AnsibleFilterError(f"ai_node_firewall_sources: {e}") from None
    if problems:
        raise AnsibleFilterError("ai_node_firewall_sources: " + "; ".join(problems))
    return sources


def ai_node_firewall_problems(gateways, hostvars, networks=None, group=DEFAULT_GROUP):
    """Return what is wrong with the allowed sources, one line per problem (empty when none)."""
    try:
        return collect(gateways, hostvars, networks, group)[1]
    except FirewallError as e:
        return [str(e)]


def parse_port(value):
    """Return a TCP port (1-65535) as an int; ints and strings of digits are accepted."""
    number = value
    if isinstance(value, str) and _DIGITS.fullmatch(value):
        number = int(value)
    if not isinstance(number, int) or isinstance(number, bool) or not 1 <= number <= 65535:
        raise FirewallError(f"port: given {value!r}, expected a port number from 1 to 65535")
    return number


def render_rules(sources, port, *, family, chain, deny, is_open):  # noqa: PLR0913
    """Validate the arguments and return the rule lines (see ``ai_node_firewall_rules``)."""
    port = parse_port(port)
    if family not in FAMILIES:
        raise FirewallError(f"family: given {family!r}, expected one of {', '.join(FAMILIES)}")
    if not isinstance(chain, str) or not _CHAIN.fullmatch(chain) or chain in _RESERVED_CHAINS:
        raise FirewallError(
            f"chain: given {chain!r}, expected an iptables chain name of its own (letters, "
            "digits, '_', '-', '.', at most 28 characters)"
        )
    if deny not in DENY_TARGETS:
        raise FirewallError(f"deny: given {deny!r}, expected one of {', '.join(DENY_TARGETS)}")
    if not isinstance(is_open, bool):
        raise FirewallError(f"open: given {is_open!r}, expected true or false")
    if isinstance(sources, Mapping):
        unknown = set(sources) - set(FAMILIES)
        if unknown:
            raise FirewallError(
                f"sources: unknown keys {sorted(unknown)}, expected {', '.join(FAMILIES)}"
            )
        items = list(sources.get(family) or [])
    elif is_list(sources):
        items = list(sources)
    else:
        raise FirewallError(f"sources: given {sources!r}, expected a list or a dict by family")
    version = 4 if family == "ipv4" else 6
    networks = []
    for index, item in enumerate(items):
        try:
            network = parse_network(item)
        except FirewallError as e:
            raise FirewallError(f"sources[{index}]: {e}") from None
        if network.version == version and network not in networks:
            networks.append(network)
    to_port = f"-p tcp -m conntrack --ctorigdstport {port} --ctdir ORIGINAL"
    # Replies and the rest of a connection already let through: the fast path for
    # every packet Docker forwards, whatever its port.
    lines = [f"-A {chain} -m conntrack --ctstate RELATED,ESTABLISHED -j RETURN"]
    if is_open:
        lines.append(f"-A {chain} {to_port} -j RETURN")
        return lines
    lines.extend(f"-A {chain} -s {n.with_prefixlen} {to_port} -j RETURN" for n in networks)
    lines.append(
        f"-A {chain} -p tcp -m conntrack --ctstate NEW --ctorigdstport {port} --ctdir ORIGINAL "
        f"-j {DENY_TARGETS[deny]}"
    )
    return lines


def ai_node_firewall_rules(  # noqa: PLR0913
    sources, port, *, family="ipv4", chain=DEFAULT_CHAIN, deny="drop", open=False
):
    """Return the rules of ``chain`` for one IP family, as ``iptables -S chain`` prints them.

    Established and related traffic returns at once; new connections to ``port``
    (matched on the original destination port, before Docker's DNAT) from each
    source return to Docker's rules; any other new connection to the port is
    dropped (``deny='drop'``) or refused with a TCP reset (``deny='reject'``).
    With ``open=True`` every source returns: the port is open on purpose.
    """
    try:
        return render_rules(sources, port, family=family, chain=chain, deny=deny, is_open=open)
    except FirewallError as e:
        raise AnsibleFilterError(f"ai_node_firewall_rules: {e}") from None


class FilterModule:
    """Filters that decide who may reach a GPU node's API port."""

    def filters(self):
        """Map filter names to functions."""
        return {
            "ai_node_firewall_sources": ai_node_firewall_sources,
            "ai_node_firewall_problems": ai_node_firewall_problems,
            "ai_node_firewall_rules": ai_node_firewall_rules,
        }
