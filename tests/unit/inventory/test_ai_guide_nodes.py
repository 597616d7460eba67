"""Unit tests of the inventory plugin ai_guide_nodes (plugins/inventory/ai_guide_nodes.py).

Most tests call the module's pure functions. A few load the plugin through Ansible's
plugin loader (options and environment fallbacks), and the last ones run the real
``ansible-inventory`` with the repository's ansible.cfg.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import yaml
from ansible.errors import AnsibleParserError
from ansible.inventory.data import InventoryData
from ansible.parsing.dataloader import DataLoader
from ansible.plugins.loader import inventory_loader
from plugin_loader import ROOT, load_plugin

PLUGIN = ROOT / "plugins" / "inventory" / "ai_guide_nodes.py"
EXAMPLE_SOURCE = ROOT / "docs" / "migrating" / "ai_guide_nodes.yml"

guide = load_plugin("inventory", "ai_guide_nodes")
Setting = guide.Setting

#: Every variable the plugin reads from the environment.
GUIDE_VARIABLES = tuple(guide.OPTIONS)


def settings(**values):
    """``Setting`` for each keyword, labelled with the variable's own name."""
    return {name: Setting(name, value) for name, value in values.items()}


def build(**values):
    return guide.build_inventory(settings(**values))


def fails(**values):
    """Build from ``values``, expect GuideError, return its message."""
    with pytest.raises(guide.GuideError) as info:
        build(**values)
    return str(info.value)


def node(host, port, public_host=None, public_port=8800):
    return {
        "ansible_host": host,
        "ansible_port": port,
        "ai_node_public_host": host if public_host is None else public_host,
        "ai_node_public_port": public_port,
    }


# --- entry syntax ------------------------------------------------------------


def test_split_entries_takes_blanks_commas_newlines_and_comments():
    text = "a:1 b:2,c:3\n\n# a comment line\n d:4 ,\t e # trailing comment, f:6\n,,g"
    assert guide.split_entries(text) == [
        (1, "a:1"),
        (1, "b:2"),
        (1, "c:3"),
        (4, "d:4"),
        (4, "e"),
        (5, "g"),
    ]


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("gpu-1.example.com:2201", ("gpu-1.example.com", 2201)),
        ("gpu-1", ("gpu-1", 7)),
        ("10.0.0.1:22", ("10.0.0.1", 22)),
        ("10.0.0.1", ("10.0.0.1", 7)),
        ("[2001:db8::1]:2201", ("2001:db8::1", 2201)),
        ("[2001:DB8:0:0::1]", ("2001:db8::1", 7)),
        ("gpu.example.com.:65535", ("gpu.example.com.", 65535)),
        ("gpu:022", ("gpu", 22)),
    ],
)
def test_parse_entry(text, expected):
    assert guide.parse_entry(text, 7) == expected


# --- lists from the environment and from files ---------------------------------


def test_nodes_from_the_variable():
    result = build(GPU_AI_NODES="10.0.0.1:2201 10.0.0.2:2202, gpu-3")
    assert result == {
        "hosts": {
            "10.0.0.1": node("10.0.0.1", 2201),
            "10.0.0.2": node("10.0.0.2", 2202),
            "gpu-3": node("gpu-3", 22),
        },
        "vars": {},
    }
    # The operator's order is kept.
    assert list(result["hosts"]) == ["10.0.0.1", "10.0.0.2", "gpu-3"]


def test_nodes_and_upstreams_from_files(tmp_path):
    nodes = tmp_path / "nodes.txt"
    nodes.write_text("# GPU nodes, SSH through NAT\n10.0.0.1:2201   # first\n\n10.0.0.2:2202,\n")
    upstreams = tmp_path / "upstreams.txt"
    upstreams.write_text("203.0.113.5:18801\n203.0.113.5:18802  # second\n")
    result = build(GPU_AI_NODES_FILE=str(nodes), AI_INFERENCE_UPSTREAMS_FILE=str(upstreams))
    assert result["hosts"] == {
        "10.0.0.1": node("10.0.0.1", 2201, "203.0.113.5", 18801),
        "10.0.0.2": node("10.0.0.2", 2202, "203.0.113.5", 18802),
    }


def test_relative_file_is_relative_to_the_current_directory(tmp_path, monkeypatch):
    (tmp_path / "nodes.txt").write_text("gpu-1:2201\n")
    monkeypatch.chdir(tmp_path)
    assert list(build(GPU_AI_NODES_FILE="nodes.txt")["hosts"]) == ["gpu-1"]


def test_ipv6_entries():
    result = build(
        GPU_AI_NODES="[2001:db8::1]:2201 [2001:db8::2]",
        AI_INFERENCE_UPSTREAMS="[2001:db8:1::1]:18801 [2001:db8:1::2]",
    )
    assert result["hosts"] == {
        "2001-db8--1": node("2001:db8::1", 2201, "2001:db8:1::1", 18801),
        "2001-db8--2": node("2001:db8::2", 22, "2001:db8:1::2", 8800),
    }


# --- public entries and pairing --------------------------------------------------


def test_without_upstreams_the_public_address_is_the_ssh_host_and_ai_http_port():
    result = build(GPU_AI_NODES="gpu-1:2201 gpu-2", AI_HTTP_PORT="9000")
    assert result["hosts"] == {
        "gpu-1": node("gpu-1", 2201, public_port=9000),
        "gpu-2": node("gpu-2", 22, public_port=9000),
    }


def test_bare_public_host_gets_ai_http_port():
    result = build(
        GPU_AI_NODES="10.0.0.1:2201 10.0.0.2:2202",
        AI_INFERENCE_UPSTREAMS="203.0.113.1 203.0.113.2:18802",
        AI_HTTP_PORT="9000",
    )
    assert result["hosts"]["10.0.0.1"]["ai_node_public_port"] == 9000
    assert result["hosts"]["10.0.0.2"]["ai_node_public_port"] == 18802


def test_pairing_by_host_name_ignores_order_and_case():
    result = build(
        GPU_AI_NODES="gpu-1.example.com:2201 gpu-2.example.com:2202",
        AI_INFERENCE_UPSTREAMS="GPU-2.example.com:18802 gpu-1.example.com.:18801",
    )
    assert result["hosts"] == {
        "gpu-1.example.com": node("gpu-1.example.com", 2201, "gpu-1.example.com.", 18801),
        "gpu-2.example.com": node("gpu-2.example.com", 2202, "GPU-2.example.com", 18802),
    }


def test_pairing_by_position_when_no_host_is_shared():
    result = build(
        GPU_AI_NODES="nat.example.com:2201 nat.example.com:2202 10.0.0.3",
        AI_INFERENCE_UPSTREAMS="203.0.113.5:18802 203.0.113.5:18801 203.0.113.6",
    )
    assert result["hosts"] == {
        "nat.example.com-2201": node("nat.example.com", 2201, "203.0.113.5", 18802),
        "nat.example.com-2202": node("nat.example.com", 2202, "203.0.113.5", 18801),
        "10.0.0.3": node("10.0.0.3", 22, "203.0.113.6", 8800),
    }


def test_lists_of_different_lengths():
    message = fails(GPU_AI_NODES="a:1 b:2 c:3", AI_INFERENCE_UPSTREAMS="x:1 y:2")
    assert message.startswith("GPU_AI_NODES has 3 entries but AI_INFERENCE_UPSTREAMS has 2")


def test_empty_upstreams_file_is_a_length_mismatch(tmp_path):
    upstreams = tmp_path / "upstreams.txt"
    upstreams.write_text("# nothing yet\n")
    message = fails(GPU_AI_NODES="a:1", AI_INFERENCE_UPSTREAMS_FILE=str(upstreams))
    assert message.startswith("GPU_AI_NODES has 1 entries but AI_INFERENCE_UPSTREAMS_FILE has 0")


def test_pairing_with_some_hosts_shared_is_an_error():
    message = fails(GPU_AI_NODES="gpu-1:2201 gpu-2:2202", AI_INFERENCE_UPSTREAMS="gpu-1 lb-2")
    assert message.startswith("GPU_AI_NODES and AI_INFERENCE_UPSTREAMS can be paired neither")
    assert "hosts in both lists: 'gpu-1:2201'" in message
    assert "only in GPU_AI_NODES: 'gpu-2:2202'" in message
    assert "only in AI_INFERENCE_UPSTREAMS: 'lb-2'" in message
    assert "use the same host names in both lists" in message
    assert "or no common host name at all" in message


def test_one_nat_box_for_ssh_and_api_pairs_a_repeated_host_in_order():
    result = build(
        GPU_AI_NODES="nat:2201 gpu-3:22 nat:2202",
        AI_INFERENCE_UPSTREAMS="gpu-3:8800 nat:18801 nat:18802",
    )
    assert result["hosts"] == {
        "nat-2201": node("nat", 2201, "nat", 18801),
        "gpu-3": node("gpu-3", 22, "gpu-3", 8800),
        "nat-2202": node("nat", 2202, "nat", 18802),
    }


def test_host_repeated_a_different_number_of_times_is_an_error():
    message = fails(
        GPU_AI_NODES="nat:2201 nat:2202 gpu-3",
        AI_INFERENCE_UPSTREAMS="nat:18801 gpu-3 gpu-3:8801",
    )
    assert message.startswith("GPU_AI_NODES and AI_INFERENCE_UPSTREAMS can be paired neither")
    assert (
        "hosts listed a different number of times in each list: "
        "'nat:2201', 'nat:2202', 'gpu-3'" in message
    )


def test_pairing_errors_in_files_name_the_lines(tmp_path):
    nodes = tmp_path / "nodes.txt"
    nodes.write_text("gpu-1:2201\ngpu-2:2202\n")
    message = fails(GPU_AI_NODES_FILE=str(nodes), AI_INFERENCE_UPSTREAMS="gpu-1 lb-2")
    assert "only in GPU_AI_NODES_FILE: 'gpu-2:2202' (line 2)" in message


# --- inventory host names --------------------------------------------------------


def test_same_host_with_several_ports_is_named_host_port():
    result = build(GPU_AI_NODES="nat:2201 nat:2202 [2001:db8::1]:22 [2001:db8::1]:23 other")
    assert list(result["hosts"]) == [
        "nat-2201",
        "nat-2202",
        "2001-db8--1-22",
        "2001-db8--1-23",
        "other",
    ]
    assert result["hosts"]["nat-2202"]["ansible_host"] == "nat"
    assert result["hosts"]["2001-db8--1-23"]["ansible_host"] == "2001:db8::1"


def test_two_entries_with_the_same_name_are_an_error():
    message = fails(GPU_AI_NODES="nat:2201 nat:2202 nat-2201:22")
    assert message.startswith("GPU_AI_NODES: entries 'nat:2201' and 'nat-2201:22' would both")
    assert "inventory host 'nat-2201'" in message


# --- malformed entries and duplicates ----------------------------------------------


MALFORMED = [
    (":22", "no host before ':'"),
    ("gpu:", "no port after ':'"),
    ("gpu:ssh", "port 'ssh' is not an integer"),
    ("gpu:-1", "port '-1' is not an integer"),
    ("gpu:22x", "port '22x' is not an integer"),
    ("gpu:0", "port 0 is out of range (1-65535)"),
    ("gpu:65536", "port 65536 is out of range (1-65535)"),
    ("gpu:22:23", "more than one ':'"),
    ("2001:db8::1", "IPv6 addresses need brackets"),
    ("2001:db8::1:22", "IPv6 addresses need brackets"),
    ("[2001:db8::1", "'[' without a closing ']'"),
    ("[2001:db8::1]22", "unexpected '22' after ']'"),
    ("[2001:db8::1]:", "no port after ':'"),
    ("[gpu-1]:22", "'gpu-1' is not a valid IPv6 address"),
    ("[fe80::1%eth0]:22", "zone indexes are not supported"),
    ("gpu_1:22", "'gpu_1' is not a valid host name"),
    ("gpu;:22", "'gpu;' is not a valid host name"),
    ("-gpu:22", "'-gpu' is not a valid host name"),
    ("http://gpu:22", "more than one ':'"),
    ("gpu/1:22", "'gpu/1' is not a valid host name"),
    ("10.0.0.256:22", "'10.0.0.256' is not a valid IPv4 address"),
    ("gpu]:22", "'gpu]' is not a valid host name"),
]


@pytest.mark.parametrize(("entry", "problem"), MALFORMED)
def test_malformed_ssh_entry(entry, problem):
    message = fails(GPU_AI_NODES=f"gpu-0:2200 {entry}")
    assert message.startswith(f"GPU_AI_NODES: entry '{entry}': ")
    assert problem in message


@pytest.mark.parametrize(("entry", "problem"), MALFORMED[:6])
def test_malformed_public_entry(entry, problem):
    message = fails(GPU_AI_NODES="gpu-0:2200 gpu-1", AI_INFERENCE_UPSTREAMS=f"lb-0 {entry}")
    assert message.startswith(f"AI_INFERENCE_UPSTREAMS: entry '{entry}': ")
    assert problem in message


def test_malformed_entry_in_a_file_names_the_path_and_line(tmp_path):
    nodes = tmp_path / "nodes.txt"
    nodes.write_text("# nodes\ngpu-1:2201\n\ngpu-2:22 gpu-3:99999 # bad\n")
    message = fails(GPU_AI_NODES_FILE=str(nodes))
    assert message == (
        f"GPU_AI_NODES_FILE: {nodes} line 4: entry 'gpu-3:99999': "
        "port 99999 is out of range (1-65535)"
    )


def test_malformed_public_entry_in_a_file(tmp_path):
    upstreams = tmp_path / "upstreams.txt"
    upstreams.write_text("lb-1\nlb-2:\n")
    message = fails(GPU_AI_NODES="a b", AI_INFERENCE_UPSTREAMS_FILE=str(upstreams))
    assert message.startswith(f"AI_INFERENCE_UPSTREAMS_FILE: {upstreams} line 2: entry 'lb-2:'")


def test_unreadable_file_names_the_variable_and_path(tmp_path):
    missing = tmp_path / "missing.txt"
    message = fails(GPU_AI_NODES_FILE=str(missing))
    assert message.startswith(f"GPU_AI_NODES_FILE: cannot read {missing}: ")


@pytest.mark.parametrize(
    ("nodes", "first", "second"),
    [
        ("gpu-1:2201 gpu-2 gpu-1:2201", "gpu-1:2201", "gpu-1:2201"),
        ("gpu-1 gpu-1:22", "gpu-1", "gpu-1:22"),
        ("GPU-1:22,gpu-1:22", "GPU-1:22", "gpu-1:22"),
        ("[2001:db8::1]:22 [2001:db8:0::1]", "[2001:db8::1]:22", "[2001:db8:0::1]"),
    ],
)
def test_duplicate_ssh_entry(nodes, first, second):
    message = fails(GPU_AI_NODES=nodes)
    assert message.startswith(f"GPU_AI_NODES: entry '{second}' is listed twice")
    assert f"'{first}' and '{second}' are both" in message


def test_duplicate_public_entry():
    message = fails(GPU_AI_NODES="a:1 b:2", AI_INFERENCE_UPSTREAMS="lb:18801 lb:18801")
    assert message.startswith("AI_INFERENCE_UPSTREAMS: entry 'lb:18801' is listed twice")


def test_duplicate_public_entry_through_the_default_port():
    message = fails(
        GPU_AI_NODES="a:1 b:2", AI_INFERENCE_UPSTREAMS="lb lb:9000", AI_HTTP_PORT="9000"
    )
    assert message.startswith("AI_INFERENCE_UPSTREAMS: entry 'lb:9000' is listed twice")


def test_duplicate_in_a_file_names_both_lines(tmp_path):
    nodes = tmp_path / "nodes.txt"
    nodes.write_text("gpu-1:2201\ngpu-2:2202\ngpu-1:2201\n")
    message = fails(GPU_AI_NODES_FILE=str(nodes))
    assert message.startswith(f"GPU_AI_NODES_FILE: {nodes} line 3: entry 'gpu-1:2201'")
    assert "'gpu-1:2201' (line 1) and 'gpu-1:2201' (line 3)" in message


# --- variable and file, no nodes ----------------------------------------------------


def test_nodes_variable_and_file_both_set(tmp_path):
    nodes = tmp_path / "nodes.txt"
    nodes.write_text("gpu-1\n")
    message = fails(GPU_AI_NODES="gpu-1", GPU_AI_NODES_FILE=str(nodes))
    assert message.startswith("GPU_AI_NODES and GPU_AI_NODES_FILE are both set")


def test_upstreams_variable_and_file_both_set(tmp_path):
    upstreams = tmp_path / "upstreams.txt"
    upstreams.write_text("lb-1\n")
    message = fails(
        GPU_AI_NODES="gpu-1",
        AI_INFERENCE_UPSTREAMS="lb-1",
        AI_INFERENCE_UPSTREAMS_FILE=str(upstreams),
    )
    assert message.startswith("AI_INFERENCE_UPSTREAMS and AI_INFERENCE_UPSTREAMS_FILE are both set")


def test_empty_variable_does_not_count_as_set(tmp_path):
    nodes = tmp_path / "nodes.txt"
    nodes.write_text("gpu-1\n")
    result = build(GPU_AI_NODES="  ", GPU_AI_NODES_FILE=str(nodes), AI_INFERENCE_UPSTREAMS="")
    assert list(result["hosts"]) == ["gpu-1"]


@pytest.mark.parametrize("value", [None, "", "  \n", "# no nodes yet", " , ,"])
def test_no_nodes(value):
    message = fails(GPU_AI_NODES=value)
    assert message.startswith("GPU_AI_NODES or GPU_AI_NODES_FILE is empty or unset")


def test_no_nodes_in_the_file(tmp_path):
    nodes = tmp_path / "nodes.txt"
    nodes.write_text("# gpu-1:2201\n\n")
    message = fails(GPU_AI_NODES_FILE=str(nodes))
    assert message.startswith("GPU_AI_NODES or GPU_AI_NODES_FILE is empty or unset")


def test_no_variable_at_all():
    with pytest.raises(guide.GuideError, match=r"^GPU_AI_NODES or GPU_AI_NODES_FILE is empty"):
        guide.build_inventory({})


# --- group variables -------------------------------------------------------------------


def test_group_vars_mapping():
    result = build(
        GPU_AI_NODES="gpu-1",
        MODEL_DIR="/srv/models",
        AI_HTTP_PORT="8810",
        UNIT_MANAGER_PORT="8811",
        AI_INFERENCE_MAX_FAILS="0",
        AI_INFERENCE_FAIL_TIMEOUT="1m30s",
    )
    assert result["vars"] == {
        "ai_node_model_dir": "/srv/models",
        "ai_node_http_port": 8810,
        "ai_node_unit_manager_port": 8811,
        "ai_gateway_max_fails": 0,
        "ai_gateway_fail_timeout": "1m30s",
    }


def test_only_given_group_vars_are_set():
    result = build(GPU_AI_NODES="gpu-1", AI_INFERENCE_FAIL_TIMEOUT="30", MODEL_DIR="")
    assert result["vars"] == {"ai_gateway_fail_timeout": "30"}


@pytest.mark.parametrize("value", ["30s", "10", "0", "1m", "1h30m", "1d", "1y2M3w4d5h6m7s"])
def test_fail_timeout_accepted_and_kept_as_written(value):
    result = build(GPU_AI_NODES="gpu-1", AI_INFERENCE_FAIL_TIMEOUT=value)
    assert result["vars"]["ai_gateway_fail_timeout"] == value


@pytest.mark.parametrize(
    ("variable", "value", "problem"),
    [
        ("MODEL_DIR", "models", "must be an absolute path, got 'models'"),
        ("MODEL_DIR", "./models", "must be an absolute path"),
        ("AI_HTTP_PORT", "0", "must be a port, an integer from 1 to 65535, got '0'"),
        ("AI_HTTP_PORT", "65536", "must be a port"),
        ("AI_HTTP_PORT", "http", "must be a port"),
        ("AI_HTTP_PORT", "8800.0", "must be a port"),
        ("UNIT_MANAGER_PORT", "-1", "must be a port"),
        ("AI_INFERENCE_MAX_FAILS", "-1", "must be an integer >= 0, got '-1'"),
        ("AI_INFERENCE_MAX_FAILS", "three", "must be an integer >= 0"),
        ("AI_INFERENCE_FAIL_TIMEOUT", "30 s", "must be an nginx time"),
        ("AI_INFERENCE_FAIL_TIMEOUT", "500ms", "must be an nginx time"),
        ("AI_INFERENCE_FAIL_TIMEOUT", "30m1h", "must be an nginx time"),
        ("AI_INFERENCE_FAIL_TIMEOUT", "s", "must be an nginx time"),
        ("AI_INFERENCE_FAIL_TIMEOUT", "-5", "must be an nginx time"),
    ],
)
def test_group_var_validation(variable, value, problem):
    message = fails(GPU_AI_NODES="gpu-1", **{variable: value})
    assert message.startswith(f"{variable}: ")
    assert problem in message


def test_values_are_plain_strings_and_ints():
    result = build(GPU_AI_NODES="gpu-1:2201", MODEL_DIR="/m", AI_HTTP_PORT="8800")
    host_vars = result["hosts"]["gpu-1"]
    assert type(host_vars["ansible_host"]) is str
    assert type(host_vars["ansible_port"]) is int
    assert type(host_vars["ai_node_public_port"]) is int
    assert type(result["vars"]["ai_node_http_port"]) is int
    assert type(result["vars"]["ai_node_model_dir"]) is str


# --- the plugin through Ansible's plugin loader -----------------------------------------


@pytest.fixture
def clean_env(monkeypatch):
    """No variable of the guide in the environment."""
    for name in GUIDE_VARIABLES:
        monkeypatch.delenv(name, raising=False)
    return monkeypatch


def load_source(path):
    """Parse the inventory source ``path`` with the plugin; return the InventoryData."""
    inventory_loader.add_directory(str(PLUGIN.parent))
    plugin = inventory_loader.get("ai_guide_nodes")
    assert plugin is not None
    inventory = InventoryData()
    plugin.parse(inventory, DataLoader(), str(path))
    return inventory


def members(inventory, group):
    """Names of the hosts of ``group``, in inventory order."""
    return [host.name for host in inventory.groups[group].hosts]


def host_vars(inventory, name):
    wanted = ("ansible_host", "ansible_port", "ai_node_public_host", "ai_node_public_port")
    return {key: inventory.get_host(name).vars[key] for key in wanted}


def test_plugin_reads_the_environment(tmp_path, clean_env):
    source = tmp_path / "ai_guide_nodes.yml"
    source.write_text("plugin: ai_guide_nodes\n")
    clean_env.setenv("GPU_AI_NODES", "10.0.0.1:2201 10.0.0.2:2202")
    clean_env.setenv("MODEL_DIR", "/models")
    inventory = load_source(source)
    assert members(inventory, "gpu_nodes") == ["10.0.0.1", "10.0.0.2"]
    assert host_vars(inventory, "10.0.0.2") == node("10.0.0.2", 2202)
    assert inventory.groups["gpu_nodes"].vars == {"ai_node_model_dir": "/models"}


def test_plugin_options_win_over_the_environment(tmp_path, clean_env):
    source = tmp_path / "site.ai_guide_nodes.yml"
    source.write_text(
        "plugin: ai_guide_nodes\ngpu_ai_nodes: gpu-1:2201\nai_http_port: 9000\ngroup: ai_nodes\n"
    )
    clean_env.setenv("GPU_AI_NODES", "ignored:22")
    clean_env.setenv("AI_HTTP_PORT", "8800")
    inventory = load_source(source)
    assert members(inventory, "ai_nodes") == ["gpu-1"]
    assert "ignored" not in inventory.hosts
    assert host_vars(inventory, "gpu-1") == node("gpu-1", 2201, public_port=9000)
    assert inventory.groups["ai_nodes"].vars == {"ai_node_http_port": 9000}


def test_plugin_list_options_take_yaml_lists(tmp_path, clean_env):
    source = tmp_path / "ai_guide_nodes.yml"
    source.write_text(
        "plugin: ai_guide_nodes\n"
        "gpu_ai_nodes:\n"
        "  - nat:2201\n"
        "  - nat:2202\n"
        "ai_inference_upstreams: [203.0.113.5:18801, 203.0.113.5:18802]\n"
    )
    inventory = load_source(source)
    assert members(inventory, "gpu_nodes") == ["nat-2201", "nat-2202"]
    assert host_vars(inventory, "nat-2202") == node("nat", 2202, "203.0.113.5", 18802)


def test_plugin_list_option_of_something_else(tmp_path, clean_env):
    source = tmp_path / "ai_guide_nodes.yml"
    source.write_text("plugin: ai_guide_nodes\ngpu_ai_nodes: {gpu-1: 22}\n")
    with pytest.raises(AnsibleParserError, match=r"^gpu_ai_nodes: must be a string of entries"):
        load_source(source)


def test_plugin_file_option_is_relative_to_the_source(tmp_path, clean_env):
    folder = tmp_path / "inventory"
    folder.mkdir()
    (folder / "nodes.txt").write_text("gpu-1:2201 # first\ngpu-2:2202\n")
    source = folder / "ai_guide_nodes.yaml"
    source.write_text("plugin: ai_guide_nodes\ngpu_ai_nodes_file: nodes.txt\n")
    clean_env.chdir(tmp_path)
    inventory = load_source(source)
    assert members(inventory, "gpu_nodes") == ["gpu-1", "gpu-2"]


def test_plugin_errors_name_the_option_when_set_in_the_source(tmp_path, clean_env):
    source = tmp_path / "ai_guide_nodes.yml"
    source.write_text("plugin: ai_guide_nodes\ngpu_ai_nodes: 'gpu-1:'\n")
    with pytest.raises(AnsibleParserError, match=r"^gpu_ai_nodes: entry 'gpu-1:': no port"):
        load_source(source)


def test_plugin_errors_name_the_environment_variable(tmp_path, clean_env):
    source = tmp_path / "ai_guide_nodes.yml"
    source.write_text("plugin: ai_guide_nodes\n")
    clean_env.setenv("GPU_AI_NODES", "gpu-1")
    clean_env.setenv("UNIT_MANAGER_PORT", "99999")
    with pytest.raises(AnsibleParserError, match=r"^UNIT_MANAGER_PORT: must be a port"):
        load_source(source)


def test_plugin_option_and_environment_file_both_set(tmp_path, clean_env):
    source = tmp_path / "ai_guide_nodes.yml"
    source.write_text("plugin: ai_guide_nodes\ngpu_ai_nodes: gpu-1\n")
    clean_env.setenv("GPU_AI_NODES_FILE", str(tmp_path / "nodes.txt"))
    with pytest.raises(AnsibleParserError, match=r"^gpu_ai_nodes and GPU_AI_NODES_FILE are both"):
        load_source(source)


def test_plugin_without_nodes(tmp_path, clean_env):
    source = tmp_path / "ai_guide_nodes.yml"
    source.write_text("plugin: ai_guide_nodes\n")
    with pytest.raises(AnsibleParserError, match=r"^GPU_AI_NODES or GPU_AI_NODES_FILE is empty"):
        load_source(source)


@pytest.mark.parametrize(
    ("name", "accepted"),
    [
        ("ai_guide_nodes.yml", True),
        ("ai_guide_nodes.yaml", True),
        ("prod.ai_guide_nodes.yml", True),
        (".ai_guide_nodes.yml", True),
        ("hosts.yml", False),
        ("ai_guide_nodes.json", False),
        ("ai_guide_nodes.yml.bak", False),
    ],
)
def test_verify_file(tmp_path, name, accepted):
    path = tmp_path / name
    path.write_text("plugin: ai_guide_nodes\n")
    assert guide.InventoryModule().verify_file(str(path)) is accepted


def test_verify_file_needs_an_existing_file(tmp_path):
    assert guide.InventoryModule().verify_file(str(tmp_path / "ai_guide_nodes.yml")) is False


# --- the real ansible-inventory ---------------------------------------------------------


def ansible_inventory(*args, env=None):
    """Run ansible-inventory in the repository with its ansible.cfg; return the result."""
    executable = Path(sys.executable).with_name("ansible-inventory")
    if executable.exists():
        command = [str(executable)]
    else:
        command = [sys.executable, "-m", "ansible.cli.inventory"]
    clean = {key: value for key, value in os.environ.items() if key not in GUIDE_VARIABLES}
    full_env = {
        **clean,
        "ANSIBLE_CONFIG": str(ROOT / "ansible.cfg"),
        "ANSIBLE_INVENTORY_ANY_UNPARSED_IS_FAILED": "true",
        "ANSIBLE_NOCOLOR": "1",
        **(env or {}),
    }
    return subprocess.run(
        [*command, *args],
        capture_output=True,
        text=True,
        cwd=ROOT,
        env=full_env,
        timeout=120,
        check=False,
    )


NAT_FLEET = {
    "GPU_AI_NODES": "nat.example.com:2201 nat.example.com:2202 [1:2:3:4:5:6:7:8]:22",
    "AI_INFERENCE_UPSTREAMS": "203.0.113.5:18801, 203.0.113.5:18802 [2001:db8::2]",
    "MODEL_DIR": "/srv/models",
    "AI_HTTP_PORT": "8810",
    "AI_INFERENCE_MAX_FAILS": "2",
    "AI_INFERENCE_FAIL_TIMEOUT": "45s",
}
NAT_HOSTS = {
    "nat.example.com-2201": node("nat.example.com", 2201, "203.0.113.5", 18801),
    "nat.example.com-2202": node("nat.example.com", 2202, "203.0.113.5", 18802),
    "1-2-3-4-5-6-7-8": node("1:2:3:4:5:6:7:8", 22, "2001:db8::2", 8810),
}
NAT_GROUP_VARS = {
    "ai_node_model_dir": "/srv/models",
    "ai_node_http_port": 8810,
    "ai_gateway_max_fails": 2,
    "ai_gateway_fail_timeout": "45s",
}


@pytest.mark.playbook
def test_ansible_inventory_list(tmp_path):
    source = tmp_path / "ai_guide_nodes.yml"
    source.write_text("plugin: ai_guide_nodes\n")
    result = ansible_inventory("-i", str(source), "--list", env=NAT_FLEET)
    assert result.returncode == 0, result.stderr
    listed = json.loads(result.stdout)
    assert listed["all"]["children"] == ["ungrouped", "gpu_nodes"]
    assert listed["gpu_nodes"]["hosts"] == list(NAT_HOSTS)
    # Without --export, every host shows the group variables too.
    assert listed["_meta"]["hostvars"] == {
        name: {**host, **NAT_GROUP_VARS} for name, host in NAT_HOSTS.items()
    }


@pytest.mark.playbook
def test_ansible_inventory_list_export(tmp_path):
    source = tmp_path / "ai_guide_nodes.yml"
    source.write_text("plugin: ai_guide_nodes\n")
    result = ansible_inventory("-i", str(source), "--list", "--export", env=NAT_FLEET)
    assert result.returncode == 0, result.stderr
    listed = json.loads(result.stdout)
    assert listed["gpu_nodes"]["hosts"] == list(NAT_HOSTS)
    assert listed["gpu_nodes"]["vars"] == NAT_GROUP_VARS
    assert listed["_meta"]["hostvars"] == NAT_HOSTS


@pytest.mark.playbook
def test_ansible_inventory_reads_the_example_source():
    result = ansible_inventory(
        "-i",
        str(EXAMPLE_SOURCE),
        "--graph",
        env={"GPU_AI_NODES": "10.0.0.1:2201 10.0.0.2:2202"},
    )
    assert result.returncode == 0, result.stderr
    assert "@gpu_nodes:" in result.stdout
    assert "--10.0.0.1" in result.stdout
    assert "--10.0.0.2" in result.stdout


@pytest.mark.playbook
def test_ansible_inventory_fails_on_a_bad_entry(tmp_path):
    source = tmp_path / "ai_guide_nodes.yml"
    source.write_text("plugin: ai_guide_nodes\n")
    output = tmp_path / "hosts.yml"
    result = ansible_inventory(
        "-i",
        str(source),
        "--list",
        "--yaml",
        "--export",
        "--output",
        str(output),
        env={"GPU_AI_NODES": "gpu-1:2201 gpu-2:"},
    )
    assert result.returncode != 0
    assert "GPU_AI_NODES: entry 'gpu-2:': no port after ':'" in result.stderr
    assert not output.exists()


def normalised(listing):
    """``ansible-inventory --list`` output with the group members as sets."""
    return {
        group: {
            key: sorted(value) if key in ("hosts", "children") else value
            for key, value in content.items()
        }
        for group, content in listing.items()
        if group != "_meta"
    } | {"_meta": {"hostvars": listing["_meta"]["hostvars"]}}


@pytest.mark.playbook
def test_static_hosts_yml_round_trip(tmp_path):
    """The documented export writes a YAML inventory that reads back the same."""
    source = tmp_path / "ai_guide_nodes.yml"
    shutil.copy(EXAMPLE_SOURCE, source)
    static = tmp_path / "hosts.yml"
    export = ("-i", str(source), "--list", "--yaml", "--export", "--output", str(static))
    result = ansible_inventory(*export, env=NAT_FLEET)
    assert result.returncode == 0, result.stderr
    written = yaml.safe_load(static.read_text())
    gpu_nodes = written["all"]["children"]["gpu_nodes"]
    assert gpu_nodes["hosts"] == NAT_HOSTS
    assert gpu_nodes["vars"] == NAT_GROUP_VARS
    for mode in ((), ("--export",)):
        original = ansible_inventory("-i", str(source), "--list", *mode, env=NAT_FLEET)
        read_back = ansible_inventory("-i", str(static), "--list", *mode)
        assert original.returncode == 0, original.stderr
        assert read_back.returncode == 0, read_back.stderr
        assert normalised(json.loads(read_back.stdout)) == normalised(json.loads(original.stdout))
