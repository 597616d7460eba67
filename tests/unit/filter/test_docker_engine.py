"""Unit tests of the docker_engine filter (plugins/filter/docker_engine.py)."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest
import yaml
from ansible.plugins.filter.core import combine
from plugin_loader import ROOT, load_plugin

PLUGIN = ROOT / "plugins" / "filter" / "docker_engine.py"
docker_engine = load_plugin("filter", "docker_engine")
errors = docker_engine.docker_engine_daemon_errors
foreign = docker_engine.docker_engine_daemon_foreign

DEFAULTS = yaml.safe_load((ROOT / "roles/docker_engine/defaults/main.yml").read_text())[
    "docker_engine_daemon_options"
]
NVIDIA = {
    "runtimes": {"nvidia": {"path": "/usr/bin/nvidia-container-runtime", "args": []}},
    "default-runtime": "nvidia",
}


def test_filter_is_registered():
    assert set(docker_engine.FilterModule().filters()) == {
        "docker_engine_daemon_errors",
        "docker_engine_daemon_foreign",
    }


def test_the_role_defaults_and_the_toolkit_options_pass():
    assert errors({"docker_engine_daemon_options": DEFAULTS}) == []
    assert (
        errors(
            {
                "docker_engine_daemon_options": DEFAULTS,
                "docker_engine_daemon_options_nvidia": NVIDIA,
            }
        )
        == []
    )


def test_a_numeric_log_opt_names_the_variable_and_the_fix():
    options = {**DEFAULTS, "log-opts": {"max-size": "100m", "max-file": 3}}
    assert errors({"docker_engine_daemon_options": options}) == [
        "docker_engine_daemon_options: log-opts.max-file is an integer (3); "
        'dockerd wants every log-opts value as a string: "3"'
    ]


def test_a_boolean_log_opt_is_refused_with_its_string():
    (problem,) = errors({"docker_engine_daemon_options": {"log-opts": {"compress": True}}})
    assert problem.endswith(
        "log-opts.compress is a boolean (True); dockerd wants every log-opts value as a string: "
        '"true"'
    )


def test_the_problem_is_named_after_the_variable_that_set_the_value():
    sources = {
        "docker_engine_daemon_options": DEFAULTS,
        "docker_engine_daemon_options_logs": {"log-opts": {"max-file": 5}},
        "docker_engine_daemon_options_zz": {"debug": True},
    }
    (problem,) = errors(sources)
    assert problem.startswith("docker_engine_daemon_options_logs: log-opts.max-file is an integer")


def test_a_later_variable_that_fixes_the_value_wins():
    sources = {
        "docker_engine_daemon_options": {"log-opts": {"max-file": 3}},
        "docker_engine_daemon_options_fix": {"log-opts": {"max-file": "3"}},
    }
    assert errors(sources) == []


@pytest.mark.parametrize(
    ("options", "expected"),
    [
        (
            {"live-restore": "true"},
            "live-restore is a string ('true'); dockerd wants true or false",
        ),
        ({"mtu": "1500"}, "mtu is a string ('1500'); dockerd wants a whole number"),
        ({"mtu": True}, "mtu is a boolean (True); dockerd wants a whole number"),
        ({"data-root": 5}, "data-root is an integer (5); dockerd wants a string"),
        (
            {"dns": ["1.1.1.1", 8]},
            "dns is a list (['1.1.1.1', 8]); dockerd wants a list of strings",
        ),
        ({"dns": "1.1.1.1"}, "dns is a string ('1.1.1.1'); dockerd wants a list of strings"),
        ({"log-level": "verbose"}, "log-level is 'verbose'; dockerd knows debug, info, warn"),
        ({"log-opts": "max-size=1m"}, "log-opts is a string; dockerd wants a mapping of strings"),
        (
            {"log-opts": {"max-file": "three"}},
            "log-opts.max-file is 'three'; dockerd wants a count",
        ),
        (
            {"log-opts": {"max-size": "100 megs"}},
            "log-opts.max-size is '100 megs'; dockerd wants a size",
        ),
        (
            {"default-runtime": "nvidia"},
            "default-runtime is 'nvidia', which no runtimes entry defines",
        ),
        ({"runtimes": ["nvidia"]}, "runtimes is a list; dockerd wants a mapping of runtimes"),
        (
            {"runtimes": {"nvidia": "/usr/bin/x"}},
            "runtimes.nvidia is a string; dockerd wants a mapping",
        ),
        (
            {"runtimes": {"nvidia": {"path": 1}}},
            "runtimes.nvidia.path is an integer; dockerd wants",
        ),
        (
            {"runtimes": {"n": {"path": "/x", "runtimeArgs": "-d"}}},
            "runtimes.n.runtimeArgs must be a list",
        ),
        (
            {"labels": {"a": "b"}},
            "labels is a mapping ({'a': 'b'}); dockerd wants a list of strings",
        ),
    ],
)
def test_known_options_are_typed_as_dockerd_decodes_them(options, expected):
    (problem,) = errors({"docker_engine_daemon_options_x": options})
    assert problem.startswith(f"docker_engine_daemon_options_x: {expected}"), problem


@pytest.mark.parametrize(
    "options",
    [
        {"log-level": "warn", "mtu": 9000, "dns": ["1.1.1.1"], "iptables": False},
        {"default-runtime": "runc"},
        {"default-runtime": "io.containerd.runsc.v1"},
        {"log-driver": "journald", "log-opts": {"tag": "{{.Name}}"}},
        {"log-driver": "syslog", "log-opts": {"max-file": "whatever"}},
        {"log-opts": {"max-size": "1.5GiB", "max-file": "10"}},
        {"some-future-option": {"nested": [1, 2.5, None, True]}},
        {"features": {"buildkit": True}},
    ],
)
def test_good_options_pass(options):
    assert errors({"docker_engine_daemon_options": options}) == []


@pytest.mark.parametrize(
    ("options", "expected"),
    [
        ({"labels": {"a", "b"}}, "labels is a set, which JSON cannot hold"),
        ({"x": float("nan")}, "x is nan, which JSON cannot hold"),
        ({"x": {1: "a"}}, "x.1 has the key 1 (an integer); JSON keys are strings"),
        ({"x": [object()]}, "x.0 is a object, which JSON cannot hold"),
    ],
)
def test_what_json_cannot_hold_is_refused_first(options, expected):
    (problem,) = errors({"docker_engine_daemon_options": options})
    assert problem == f"docker_engine_daemon_options: {expected}"


def test_a_variable_that_is_not_a_mapping_is_named():
    assert errors(
        {"docker_engine_daemon_options": DEFAULTS, "docker_engine_daemon_options_x": "a"}
    ) == ["docker_engine_daemon_options_x is a string, not a mapping of daemon options"]
    assert errors(["a"]) == ["the daemon options are a list, not {variable: options}"]


@pytest.mark.parametrize(
    "sources",
    [
        [DEFAULTS, NVIDIA],
        [{"a": {"b": 1, "c": [1]}}, {"a": {"c": [2], "d": {"e": 1}}}, {"a": {"d": {"f": 2}}}],
        [{"a": {"b": 1}}, {"a": 5}, {"a": {"c": 1}}],
        [{}, {"x": None}],
    ],
)
def test_the_merge_is_the_one_combine_recursive_makes(sources):
    assert docker_engine.merge(sources) == combine(sources, recursive=True)


# docker_engine_daemon_foreign: the keys of an existing daemon.json.

ADOPTED = {
    "data-root": "/srv/docker",
    "live-restore": False,
    "registry-mirrors": ["https://mirror.example.internal"],
}
MANAGED = combine([DEFAULTS, NVIDIA], recursive=True)


def test_no_file_and_an_empty_file_hold_nothing_foreign():
    for text in (None, "", "  \n", "\ufeff"):
        result = foreign(text, DEFAULTS, None)
        assert result == {
            "problem": "",
            "foreign": [],
            "dropped": [],
            "managed": ["live-restore", "log-driver", "log-opts"],
            "config": DEFAULTS,
        }, repr(text)


def test_without_a_record_every_key_no_option_sets_is_foreign_and_kept():
    result = foreign(json.dumps(ADOPTED), MANAGED, None)
    assert result["problem"] == ""
    assert result["foreign"] == ["data-root", "registry-mirrors"]
    assert result["dropped"] == []
    # The options win for the keys they set (live-restore), whole (log-opts, runtimes).
    assert result["config"] == {
        **MANAGED,
        "data-root": "/srv/docker",
        "registry-mirrors": ["https://mirror.example.internal"],
    }
    assert result["managed"] == sorted(MANAGED)


def test_a_key_the_role_wrote_before_and_no_option_sets_is_dropped():
    existing = {**DEFAULTS, "debug": True, "dns": ["10.0.0.2"]}
    record = json.dumps(["debug", "live-restore", "log-driver", "log-opts"])
    result = foreign(json.dumps(existing), DEFAULTS, record)
    assert result["foreign"] == ["dns"]
    assert result["dropped"] == ["debug"]
    assert result["config"] == {**DEFAULTS, "dns": ["10.0.0.2"]}


def test_the_toolkit_s_keys_leave_with_the_toolkit_once_recorded():
    written = foreign(None, MANAGED, None)["config"]
    record = json.dumps(foreign(None, MANAGED, None)["managed"])
    result = foreign(json.dumps(written), DEFAULTS, record)
    assert result["dropped"] == ["default-runtime", "runtimes"]
    assert result["foreign"] == []
    assert result["config"] == DEFAULTS


def test_the_result_is_the_same_once_written():
    first = foreign(json.dumps(ADOPTED), MANAGED, None)
    again = foreign(json.dumps(first["config"]), MANAGED, json.dumps(first["managed"]))
    assert again == first


def test_a_managed_value_replaces_the_file_s_whole_value():
    existing = {"log-opts": {"max-size": "1g", "compress": "true"}}
    result = foreign(json.dumps(existing), DEFAULTS, None)
    assert result["config"]["log-opts"] == DEFAULTS["log-opts"]
    assert result["foreign"] == []


@pytest.mark.parametrize(
    "record",
    [None, "", "not json", "{}", '{"a": 1}', '["debug", 1]', '"debug"', "null"],
)
def test_a_record_that_is_not_a_list_of_keys_drops_nothing(record):
    existing = {**DEFAULTS, "debug": True}
    result = foreign(json.dumps(existing), DEFAULTS, record)
    assert result["foreign"] == ["debug"]
    assert result["dropped"] == []


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ('{\n  "data-root": "/srv/docker",\n}\n', "is not JSON ("),
        ("data-root: /srv/docker\n", "is not JSON ("),
        ('{"a": 1} {"b": 2}', "is not JSON (Extra data"),
        ('{"mtu": NaN}', "is not JSON (NaN is not a JSON number)"),
        ('["data-root"]', "holds a list, not a JSON object"),
        ('"data-root"', "holds a string, not a JSON object"),
        ("3", "holds an integer, not a JSON object"),
        ("null", "holds null, not a JSON object"),
    ],
)
def test_a_file_that_is_not_a_json_object_is_a_problem_and_nothing_of_it_is_kept(text, expected):
    result = foreign(text, DEFAULTS, None)
    assert result["problem"].startswith(expected), result["problem"]
    assert result["foreign"] == []
    assert result["config"] == DEFAULTS


def test_values_are_kept_as_json_has_them():
    existing = '{"labels": ["name={{.Name}}"], "mtu": 9000, "x": {"y": [1.5, null, true]}}'
    result = foreign(existing, {}, None)
    assert result["config"] == {
        "labels": ["name={{.Name}}"],
        "mtu": 9000,
        "x": {"y": [1.5, None, True]},
    }


def test_the_inputs_are_checked():
    with pytest.raises(TypeError, match="must be a mapping"):
        foreign(None, ["a"], None)
    with pytest.raises(TypeError, match="its text or None"):
        foreign({"a": 1}, DEFAULTS, None)


@pytest.mark.playbook
def test_the_filter_documents_itself():
    env = {**os.environ, "ANSIBLE_FILTER_PLUGINS": str(PLUGIN.parent)}
    name = "docker_engine_daemon_foreign"
    command = [sys.executable, "-m", "ansible.cli.doc", "-t", "filter", "--json", name]
    done = subprocess.run(command, capture_output=True, text=True, env=env, check=False)
    assert done.returncode == 0, done.stderr
    doc = json.loads(done.stdout)[name]
    assert doc["doc"]["name"] == name
    assert {"_input", "managed", "recorded"} <= set(doc["doc"]["options"])
    assert name in doc["examples"]
    assert set(doc["return"]["_value"]["contains"]) == {
        "problem",
        "foreign",
        "dropped",
        "managed",
        "config",
    }


def test_the_choice_is_declared_where_the_role_is_entered():
    specs = yaml.safe_load((ROOT / "roles/docker_engine/meta/argument_specs.yml").read_text())
    defaults = yaml.safe_load((ROOT / "roles/docker_engine/defaults/main.yml").read_text())
    for entry in ("main", "daemon_config"):
        option = specs["argument_specs"][entry]["options"]["docker_engine_daemon_foreign_keys"]
        assert option["choices"] == ["keep", "refuse"], entry
        assert option["default"] == defaults["docker_engine_daemon_foreign_keys"] == "keep"
