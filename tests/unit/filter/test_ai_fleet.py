"""Unit tests of the ai_fleet filters (plugins/filter/ai_fleet.py)."""

from __future__ import annotations

import json

import pytest
from ansible.errors import AnsibleFilterError
from plugin_loader import load_plugin

ai_fleet = load_plugin("filter", "ai_fleet")
batches = ai_fleet.ai_fleet_batches
plan = ai_fleet.ai_fleet_roll_plan

NODES = [f"gpu-{n}" for n in (10, 2, 1, 3, 4, 5, 6, 7, 8, 9)]


def fails(func, *args, **kwargs):
    with pytest.raises(AnsibleFilterError) as info:
        func(*args, **kwargs)
    return str(info.value.message)


def test_filters_are_registered():
    assert set(ai_fleet.FilterModule().filters()) == {
        "ai_fleet_batches",
        "ai_fleet_roll_plan",
        "ai_fleet_fingerprint",
    }


def test_one_node_at_a_time_by_default_in_natural_order():
    assert batches(["gpu-10", "gpu-2", "gpu-1"]) == [["gpu-1"], ["gpu-2"], ["gpu-10"]]


@pytest.mark.parametrize(
    ("size", "sizes"),
    [
        (3, [3, 3, 3, 1]),
        ("3", [3, 3, 3, 1]),
        ("25%", [2, 2, 2, 2, 2]),
        ("5%", [1] * 10),
        ("100%", [10]),
        ("33.3 %", [3, 3, 3, 1]),
        ([1, "50%"], [1, 5, 4]),
        ([1, 2, 3], [1, 2, 3, 3, 1]),
        (20, [10]),
    ],
)
def test_batch_sizes(size, sizes):
    result = batches(NODES, size)
    assert [len(b) for b in result] == sizes
    assert [h for b in result for h in b] == [f"gpu-{n}" for n in range(1, 11)]


@pytest.mark.parametrize("size", [0, -1, "0%", "101%", "half", 1.5, True, None, []])
def test_bad_sizes_name_the_variable(size):
    assert "ai_fleet_batch_size must" in fails(batches, NODES, size)


def test_no_hosts_no_batches():
    assert batches([], 1) == []


@pytest.mark.parametrize("hosts", ["gpu-1", ["gpu-1", "gpu-1"], [""], [None]])
def test_bad_host_lists(hosts):
    assert "hosts" in fails(batches, hosts, 1)


HOSTVARS = {
    "gpu-1": {"ai_fleet_serving": True, "ai_fleet_disruptive": True},
    "gpu-2": {"ai_fleet_serving": True, "ai_fleet_disruptive": False},
    "gpu-3": {"ai_fleet_serving": False, "ai_fleet_disruptive": True},
    "gpu-4": {"ai_fleet_serving": "true", "ai_fleet_disruptive": "yes"},
    "gpu-5": {},
}


def test_always_drains_every_node_in_batches():
    assert plan(list(HOSTVARS), HOSTVARS, 2) == [
        {"nodes": ["gpu-1", "gpu-2"], "drain": ["gpu-1", "gpu-2"]},
        {"nodes": ["gpu-3", "gpu-4"], "drain": ["gpu-3", "gpu-4"]},
        {"nodes": ["gpu-5"], "drain": ["gpu-5"]},
    ]


def test_disruptive_drains_only_serving_nodes_whose_change_interrupts_them():
    assert plan(list(HOSTVARS), HOSTVARS, 1, "disruptive") == [
        {"nodes": ["gpu-2", "gpu-3", "gpu-5"], "drain": []},
        {"nodes": ["gpu-1"], "drain": ["gpu-1"]},
        {"nodes": ["gpu-4"], "drain": ["gpu-4"]},
    ]


def test_disruptive_with_nothing_to_drain_is_one_batch():
    assert plan(["gpu-2", "gpu-5"], HOSTVARS, 1, "disruptive") == [
        {"nodes": ["gpu-2", "gpu-5"], "drain": []}
    ]


def test_plan_errors():
    assert "drain must be one of" in fails(plan, ["gpu-1"], HOSTVARS, 1, "sometimes")
    assert "host 'gpu-9' is not in hostvars" in fails(plan, ["gpu-9"], HOSTVARS, 1, "disruptive")
    bad = {"gpu-1": {"ai_fleet_serving": "maybe"}}
    assert "gpu-1': ai_fleet_serving must be a boolean" in fails(
        plan, ["gpu-1"], bad, 1, "disruptive"
    )
    assert plan([], HOSTVARS) == []


fingerprint = ai_fleet.ai_fleet_fingerprint


def role_with_specs(tmp_path, *options):
    role = tmp_path / "ai_node"
    (role / "meta").mkdir(parents=True)
    specs = {"argument_specs": {"main": {"options": {o: {"type": "raw"} for o in options}}}}
    (role / "meta" / "argument_specs.yml").write_text(json.dumps(specs))
    return str(role)


def test_fingerprint_counts_the_settings_the_roles_declare(tmp_path):
    role = role_with_specs(tmp_path, "ai_node_http_port", "docker_engine_source", "ai_node_drain")
    base = {"ai_node_http_port": 8800, "docker_engine_source": "docker", "other": 1}
    same = fingerprint(base, [role])
    assert same == fingerprint({**base, "other": 2, "ansible_host": "10.0.0.9"}, [role])
    assert same == fingerprint({**base, "ai_node_health": {"healthy": True}}, [role])
    assert same == fingerprint({**base, "ai_node_drain": True}, [role])
    assert same != fingerprint({**base, "ai_node_http_port": 8801}, [role])
    assert len(same) == 64


def test_fingerprint_leaves_out_how_to_get_there_and_what_to_check(tmp_path):
    """Taking over the guide's stack and the large-audio check change no node: no drain."""
    options = ("ai_node_http_port", "ai_node_adopt", "ai_node_adopt_containers")
    role = role_with_specs(tmp_path, *options, "ai_node_large_audio_check")
    base = {"ai_node_http_port": 8800}
    same = fingerprint(base, [role])
    assert same == fingerprint(
        {**base, "ai_node_adopt": "true", "ai_node_adopt_containers": ["x"]}, [role]
    )
    assert same == fingerprint({**base, "ai_node_large_audio_check": True}, [role])


def test_fingerprint_counts_files_and_folders(tmp_path):
    role = tmp_path / "role"
    (role / "tasks").mkdir(parents=True)
    (role / "tasks" / "main.yml").write_text("- a\n")
    archive = tmp_path / "image.tar"
    archive.write_bytes(b"x" * (ai_fleet.HASHED_FILE_LIMIT + 1))
    first = fingerprint({}, [str(role), str(archive)])
    assert first == fingerprint({}, [str(archive), str(role)])
    (role / "tasks" / "main.yml").write_text("- b\n")
    second = fingerprint({}, [str(role), str(archive)])
    assert second != first
    archive.write_bytes(b"y" * (ai_fleet.HASHED_FILE_LIMIT + 2))
    assert fingerprint({}, [str(role), str(archive)]) != second


def test_fingerprint_errors(tmp_path):
    assert "is neither a file nor a folder" in fails(fingerprint, {}, [str(tmp_path / "gone")])
    assert "host_vars must be a dictionary" in fails(fingerprint, [], [])
    assert "paths must be a list" in fails(fingerprint, {}, "a")
