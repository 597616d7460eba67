"""Unit tests of the docker_engine filter (plugins/filter/docker_engine.py)."""

from __future__ import annotations

import importlib.util
import sys
from pathlib import Path

import pytest
import yaml
from ansible.plugins.filter.core import combine

ROOT = Path(__file__).resolve().parents[3]
PLUGIN = ROOT / "plugins" / "filter" / "docker_engine.py"
spec = importlib.util.spec_from_file_location("docker_engine_filter_under_test", PLUGIN)
docker_engine = importlib.util.module_from_spec(spec)
sys.modules[spec.name] = docker_engine
spec.loader.exec_module(docker_engine)
errors = docker_engine.docker_engine_daemon_errors

DEFAULTS = yaml.safe_load((ROOT / "roles/docker_engine/defaults/main.yml").read_text())[
    "docker_engine_daemon_options"
]
NVIDIA = {
    "runtimes": {"nvidia": {"path": "/usr/bin/nvidia-container-runtime", "args": []}},
    "default-runtime": "nvidia",
}


def test_filter_is_registered():
    assert set(docker_engine.FilterModule().filters()) == {"docker_engine_daemon_errors"}


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
