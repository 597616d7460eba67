"""Unit tests of the monitoring filter (plugins/filter/ai_monitoring.py)."""

from __future__ import annotations

import pytest
from ansible.errors import AnsibleFilterError
from plugin_loader import load_plugin

targets = load_plugin("filter", "ai_monitoring").ai_monitoring_targets


PORT = "node_exporter_port must be a port number from 1 to 65535, got"
ADDRESS = "ansible_host must be an IP address or a DNS name, got"
LABEL = "is not a label name (letters, digits and _, not starting with a digit or __)"


def fails(*args, **kwargs):
    """Call the filter, expect AnsibleFilterError, return its message."""
    with pytest.raises(AnsibleFilterError) as info:
        targets(*args, **kwargs)
    return str(info.value.message)


def test_one_group_per_host_named_as_the_inventory_names_it():
    hostvars = {
        "gpu-10": {"ansible_host": "10.0.0.10"},
        "gpu-2": {"ansible_host": "2001:db8::2", "node_exporter_port": "9200"},
        "gpu-1": {},
    }
    got = targets(
        ["gpu-10", "gpu-2", "gpu-1"],
        hostvars,
        "node_exporter_port",
        9100,
        labels={"fleet_role": "gpu_node"},
    )
    assert got == [
        {"targets": ["gpu-1:9100"], "labels": {"instance": "gpu-1", "fleet_role": "gpu_node"}},
        {
            "targets": ["[2001:db8::2]:9200"],
            "labels": {"instance": "gpu-2", "fleet_role": "gpu_node"},
        },
        {"targets": ["10.0.0.10:9100"], "labels": {"instance": "gpu-10", "fleet_role": "gpu_node"}},
    ]


def test_hosts_whose_exporter_is_off_are_left_out_and_the_flag_is_checked():
    hostvars = {
        "a": {"ansible_host": "10.0.0.1", "x_enabled": "false"},
        "b": {"ansible_host": "10.0.0.2"},
    }
    got = targets(["a", "b"], hostvars, "x_port", 1, enabled_var="x_enabled")
    assert [g["labels"]["instance"] for g in got] == ["b"]
    hostvars["a"]["x_enabled"] = "maybe"
    assert fails(["a"], hostvars, "x_port", 1, enabled_var="x_enabled") == (
        "ai_monitoring_targets: host 'a': x_enabled must be a boolean, got 'maybe'"
    )


def test_no_hosts_no_targets():
    assert targets([], {}, "node_exporter_port", 9100) == []


@pytest.mark.parametrize(
    ("host_vars", "message"),
    [
        ({"node_exporter_port": 0}, f"host 'gpu-1': {PORT} 0"),
        ({"node_exporter_port": "http"}, f"host 'gpu-1': {PORT} 'http'"),
        ({"node_exporter_port": True}, f"host 'gpu-1': {PORT} True"),
        ({"ansible_host": "10.0.0.1 "}, None),
        ({"ansible_host": "bad host"}, f"host 'gpu-1': {ADDRESS} 'bad host'"),
        ({"ansible_host": ""}, f"host 'gpu-1': {ADDRESS} ''"),
        ({"ansible_host": ["10.0.0.1"]}, f"host 'gpu-1': {ADDRESS} ['10.0.0.1']"),
    ],
)
def test_bad_host_variables_name_the_host_and_the_variable(host_vars, message):
    if message is None:
        assert targets(["gpu-1"], {"gpu-1": host_vars}, "node_exporter_port", 9100)[0][
            "targets"
        ] == ["10.0.0.1:9100"]
    else:
        assert (
            fails(["gpu-1"], {"gpu-1": host_vars}, "node_exporter_port", 9100)
            == f"ai_monitoring_targets: {message}"
        )


def test_a_host_name_that_is_not_a_dns_name_is_refused():
    assert fails(["gpu_1"], {"gpu_1": {}}, "p", 9100) == (
        "ai_monitoring_targets: host 'gpu_1' must be an IP address or a DNS name, got 'gpu_1'"
    )


def test_two_hosts_at_one_endpoint_are_refused_naming_both():
    hostvars = {"a": {"ansible_host": "10.0.0.1"}, "b": {"ansible_host": "10.0.0.1"}}
    assert fails(["a", "b"], hostvars, "node_exporter_port", 9100) == (
        "ai_monitoring_targets: hosts 'a' and 'b' are both at 10.0.0.1:9100 (their ansible_host "
        "and node_exporter_port): each host needs an endpoint of its own"
    )
    hostvars["b"]["node_exporter_port"] = 9101
    assert len(targets(["a", "b"], hostvars, "node_exporter_port", 9100)) == 2


def test_a_host_missing_from_hostvars_is_named():
    assert fails(["ghost"], {}, "p", 1) == (
        "ai_monitoring_targets: host 'ghost' is not in hostvars (not in the inventory?)"
    )


@pytest.mark.parametrize(
    ("labels", "message"),
    [
        ("role", "labels must be a dictionary, got str"),
        ({"1x": "a"}, f"labels: '1x' {LABEL}"),
        ({"__address__": "a"}, f"labels: '__address__' {LABEL}"),
        ({"instance": "a"}, "labels: 'instance' is set by the filter (the inventory host name)"),
        ({"role": 1}, "labels: role must be a string, got 1"),
    ],
)
def test_labels_prometheus_would_refuse_are_refused(labels, message):
    assert fails(["a"], {"a": {}}, "p", 1, labels=labels) == f"ai_monitoring_targets: {message}"


@pytest.mark.parametrize(
    ("hosts", "port_var", "port"), [("gpu-1", "p", 1), (["a"], "bad var", 1), (["a"], "p", 70000)]
)
def test_bad_arguments_are_refused(hosts, port_var, port):
    assert fails(hosts, {"a": {}}, port_var, port).startswith("ai_monitoring_targets: ")


@pytest.mark.parametrize(
    ("listen", "local", "written"),
    [
        ("0.0.0.0", "127.0.0.1", "0.0.0.0"),
        ("", "127.0.0.1", ""),
        ("::", "[::1]", "[::]"),
        ("10.0.0.5", "10.0.0.5", "10.0.0.5"),
        ("2001:db8::5", "[2001:db8::5]", "[2001:db8::5]"),
        ("127.0.0.1", "127.0.0.1", "127.0.0.1"),
    ],
)
def test_where_a_role_reads_its_own_service_and_how_a_listen_address_is_written(
    listen, local, written
):
    module = load_plugin("filter", "ai_monitoring")
    assert module.ai_local_host(listen) == local
    assert module.ai_listen_host(listen) == written
