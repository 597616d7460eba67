"""Unit tests of the ai_node_firewall filters (plugins/filter/ai_node_firewall.py)."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest
from ansible.errors import AnsibleFilterError
from plugin_loader import ROOT, load_plugin

PLUGINS = ROOT / "plugins"

fw = load_plugin("filter", "ai_node_firewall")
sources = fw.ai_node_firewall_sources
problems = fw.ai_node_firewall_problems
rules = fw.ai_node_firewall_rules

TO_PORT = "-p tcp -m conntrack --ctorigdstport 8800 --ctdir ORIGINAL"
ESTABLISHED = "-A AI-NODE-API -m conntrack --ctstate RELATED,ESTABLISHED -j RETURN"
DROP = (
    "-A AI-NODE-API -p tcp -m conntrack --ctstate NEW --ctorigdstport 8800 --ctdir ORIGINAL -j DROP"
)


def facts(*addresses):
    """Host variables of a gateway whose network facts were gathered."""
    return {
        "ansible_facts": {
            "all_ipv4_addresses": [a for a in addresses if ":" not in a],
            "all_ipv6_addresses": [a for a in addresses if ":" in a],
        }
    }


# ---------------------------------------------------------------- sources


def test_gateway_facts_give_every_usable_address():
    hostvars = {"gw-1": facts("10.0.0.5", "172.17.0.1", "2001:db8::5", "fe80::1", "::1")}
    assert sources(["gw-1"], hostvars) == {
        "ipv4": ["10.0.0.5/32", "172.17.0.1/32"],
        "ipv6": ["2001:db8::5/128"],
    }


def test_injected_fact_variables_are_read_too():
    hostvars = {"gw-1": {"ansible_all_ipv4_addresses": ["10.0.0.5"]}}
    assert sources(["gw-1"], hostvars)["ipv4"] == ["10.0.0.5/32"]


def test_explicit_source_addresses_win_over_facts():
    hostvars = {
        "gw-1": {
            **facts("10.0.0.5"),
            "ai_node_firewall_source_addresses": ["198.51.100.7", "[2001:db8::7]"],
        }
    }
    assert sources(["gw-1"], hostvars) == {"ipv4": ["198.51.100.7/32"], "ipv6": ["2001:db8::7/128"]}


def test_explicit_source_addresses_may_be_one_string():
    hostvars = {"gw-1": {"ai_node_firewall_source_addresses": "10.0.0.7, 10.1.0.0/16 10.2.0.1"}}
    assert sources(["gw-1"], hostvars)["ipv4"] == ["10.0.0.7/32", "10.1.0.0/16", "10.2.0.1/32"]


def test_ansible_host_ip_literal_without_facts():
    hostvars = {"gw-1": {"ansible_host": "192.0.2.10"}, "gw-2": {"ansible_host": "[2001:db8::2]"}}
    assert sources(["gw-1", "gw-2"], hostvars) == {
        "ipv4": ["192.0.2.10/32"],
        "ipv6": ["2001:db8::2/128"],
    }


def test_inventory_name_ip_literal_without_ansible_host():
    hostvars = {"192.0.2.11": {"inventory_hostname": "192.0.2.11"}}
    assert sources(["192.0.2.11"], hostvars)["ipv4"] == ["192.0.2.11/32"]


def test_facts_with_only_loopback_fall_back_to_ansible_host():
    hostvars = {"gw-1": {**facts("127.0.0.1", "fe80::1"), "ansible_host": "192.0.2.10"}}
    assert sources(["gw-1"], hostvars)["ipv4"] == ["192.0.2.10/32"]


def test_allowed_networks_are_added_normalised_sorted_and_unique():
    hostvars = {"gw-1": facts("10.0.0.5")}
    result = sources(
        ["gw-1"],
        hostvars,
        networks=["10.20.3.4/16", "fd12:3456::/48", "10.0.0.5", "192.0.2.7", "10.3.0.0/16"],
    )
    assert result == {
        "ipv4": ["10.0.0.5/32", "10.3.0.0/16", "10.20.0.0/16", "192.0.2.7/32"],
        "ipv6": ["fd12:3456::/48"],
    }


def test_networks_alone_are_enough():
    assert sources([], {}, networks="10.9.0.0/16") == {"ipv4": ["10.9.0.0/16"], "ipv6": []}


def test_same_inputs_in_another_order_give_the_same_result():
    hostvars = {"a": facts("10.0.0.2", "2001:db8::2"), "b": facts("10.0.0.1")}
    assert sources(["a", "b"], hostvars) == sources(["b", "a"], dict(reversed(hostvars.items())))


def test_gateway_without_any_address_is_named():
    hostvars = {"gw-1": {"ansible_host": "gw-1.example.com"}}
    with pytest.raises(AnsibleFilterError) as error:
        sources(["gw-1"], hostvars)
    message = str(error.value)
    assert "gateway 'gw-1'" in message
    assert "ai_node_firewall_source_addresses" in message
    assert "'gw-1.example.com' is not an IP address" in message
    assert "not gathered" in message


def test_gateway_missing_from_hostvars_is_named():
    assert problems(["gw-9"], {}) == ["gateway 'gw-9' (group 'gateways') is not in hostvars"]


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        ("office", "given 'office', expected an IP address or network"),
        ("10.0.0.0/33", "given '10.0.0.0/33'"),
        ("0.0.0.0/0", "which is every address"),
        ("::/0", "ai_node_firewall_open: true"),
        ("fe80::1%eth0", "no zone index"),
        (42, "given 42"),
        ("", "given ''"),
    ],
)
def test_bad_allowed_network_names_variable_and_index(value, expected):
    found = problems([], {}, networks=["10.0.0.0/8", value])
    assert len(found) == 1
    assert found[0].startswith("ai_node_firewall_allowed_networks[1]: ")
    assert expected in found[0]


def test_bad_gateway_source_address_names_gateway_and_index():
    hostvars = {"gw-2": {"ai_node_firewall_source_addresses": ["10.0.0.1", "nope"]}}
    assert problems(["gw-2"], hostvars) == [
        "ai_node_firewall_source_addresses[1] (gateway 'gw-2'): given 'nope', expected an IP "
        "address or network such as 10.0.0.5, 10.0.0.0/24 or 2001:db8::/64"
    ]


def test_empty_source_address_list_is_refused():
    assert "at least one" in problems(["gw"], {"gw": {"ai_node_firewall_source_addresses": []}})[0]


def test_nobody_allowed_is_refused():
    found = problems([], {}, networks=[], group="edge")
    assert len(found) == 1
    assert "group 'edge' has no gateway" in found[0]
    assert "ai_node_firewall_open" in found[0]


def test_every_problem_is_listed_and_sources_raise_them_all():
    hostvars = {"gw-1": {"ansible_host": "gw.example.com"}, "gw-2": facts("10.0.0.2")}
    found = problems(["gw-1", "gw-2"], hostvars, networks=["bad"])
    assert len(found) == 2
    with pytest.raises(AnsibleFilterError) as error:
        sources(["gw-1", "gw-2"], hostvars, networks=["bad"])
    assert all(line in str(error.value) for line in found)


def test_no_problem_gives_an_empty_list():
    assert problems(["gw-1"], {"gw-1": facts("10.0.0.5")}) == []


def test_gateways_not_a_list_is_refused():
    assert "expected a list" in problems("gw-1", {"gw-1": facts("10.0.0.5")})[0]


def test_hostvars_not_a_mapping_is_refused():
    with pytest.raises(AnsibleFilterError, match="hostvars must be a dictionary"):
        sources(["gw-1"], ["gw-1"])


# ---------------------------------------------------------------- rules


def test_rules_ipv4_in_iptables_save_form():
    allowed = {"ipv4": ["10.0.0.5/32", "10.20.0.0/16"], "ipv6": ["2001:db8::5/128"]}
    assert rules(allowed, 8800) == [
        ESTABLISHED,
        f"-A AI-NODE-API -s 10.0.0.5/32 {TO_PORT} -j RETURN",
        f"-A AI-NODE-API -s 10.20.0.0/16 {TO_PORT} -j RETURN",
        DROP,
    ]


def test_rules_ipv6_take_only_ipv6_sources():
    allowed = {"ipv4": ["10.0.0.5/32"], "ipv6": ["2001:db8:0:0::5", "fd12:3456::/48"]}
    assert rules(allowed, "8800", family="ipv6") == [
        ESTABLISHED,
        f"-A AI-NODE-API -s 2001:db8::5/128 {TO_PORT} -j RETURN",
        f"-A AI-NODE-API -s fd12:3456::/48 {TO_PORT} -j RETURN",
        DROP,
    ]


def test_rules_from_a_plain_list_filter_the_family_and_deduplicate():
    assert rules(["10.0.0.5", "10.0.0.5/32", "2001:db8::1"], 8800, family="ipv4") == [
        ESTABLISHED,
        f"-A AI-NODE-API -s 10.0.0.5/32 {TO_PORT} -j RETURN",
        DROP,
    ]


def test_rules_without_sources_deny_everyone():
    assert rules({"ipv4": [], "ipv6": []}, 8800, family="ipv6") == [ESTABLISHED, DROP]


def test_rules_reject_with_tcp_reset():
    last = rules({"ipv4": []}, 9000, deny="reject", chain="MY-CHAIN")[-1]
    assert last == (
        "-A MY-CHAIN -p tcp -m conntrack --ctstate NEW --ctorigdstport 9000 --ctdir ORIGINAL "
        "-j REJECT --reject-with tcp-reset"
    )


def test_rules_open_on_purpose_let_everyone_through():
    assert rules({"ipv4": ["10.0.0.5/32"]}, 8800, open=True) == [
        ESTABLISHED,
        f"-A AI-NODE-API {TO_PORT} -j RETURN",
    ]


@pytest.mark.parametrize(
    ("kwargs", "expected"),
    [
        ({"port": 0}, "port: given 0"),
        ({"port": 65536}, "port: given 65536"),
        ({"port": "88oo"}, "port: given '88oo'"),
        ({"port": True}, "port: given True"),
        ({"family": "inet"}, "family: given 'inet'"),
        ({"chain": "-bad"}, "chain: given '-bad'"),
        ({"chain": "A" * 29}, "at most 28 characters"),
        ({"chain": "DOCKER-USER"}, "chain: given 'DOCKER-USER'"),
        ({"chain": "has space"}, "chain: given 'has space'"),
        ({"deny": "ignore"}, "deny: given 'ignore'"),
        ({"open": "yes"}, "open: given 'yes'"),
        ({"sources": {"ipv5": []}}, "unknown keys ['ipv5']"),
        ({"sources": "10.0.0.1"}, "sources: given '10.0.0.1'"),
        ({"sources": ["nope"]}, "sources[0]: given 'nope'"),
        ({"sources": ["0.0.0.0/0"]}, "every address"),
    ],
)
def test_rules_refuse_bad_arguments(kwargs, expected):
    arguments = {"sources": {"ipv4": []}, "port": 8800, **kwargs}
    with pytest.raises(AnsibleFilterError) as error:
        rules(arguments.pop("sources"), arguments.pop("port"), **arguments)
    assert str(error.value).startswith("ai_node_firewall_rules: ")
    assert expected in str(error.value)


def test_filter_module_maps_the_three_filters():
    assert set(fw.FilterModule().filters()) == {
        "ai_node_firewall_sources",
        "ai_node_firewall_problems",
        "ai_node_firewall_rules",
    }


@pytest.mark.parametrize(
    ("name", "option"),
    [
        ("ai_node_firewall_sources", "networks"),
        ("ai_node_firewall_problems", "networks"),
        ("ai_node_firewall_rules", "deny"),
    ],
)
@pytest.mark.playbook
def test_ansible_doc_renders(name, option):
    env = {**os.environ, "ANSIBLE_FILTER_PLUGINS": str(PLUGINS / "filter")}
    command = [sys.executable, "-m", "ansible.cli.doc", "-t", "filter", "--json", name]
    result = subprocess.run(command, capture_output=True, text=True, env=env, check=False)
    assert result.returncode == 0, result.stderr
    doc = json.loads(result.stdout)[name]
    assert doc["doc"]["name"] == name
    assert option in doc["doc"]["options"]
    assert name in doc["examples"]
    assert doc["return"]
