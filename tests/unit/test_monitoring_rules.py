"""The fleet's alert rules and dashboard (roles/monitoring/files/), proven with promtool.

promtool comes from the distribution's prometheus package, the one the
monitoring host runs (scripts/promtool.sh unpacks it into .cache; the test
command does so before the unit tests).
"""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess

import pytest
import yaml
from plugin_loader import ROOT

RULES = ROOT / "roles" / "monitoring" / "files" / "ai-fleet.rules.yml"
RULE_TESTS = ROOT / "tests" / "unit" / "monitoring" / "ai-fleet.rules.test.yml"
#: Programs whose metrics the node exporter's textfile collector publishes.
CHECKER = ROOT / "roles" / "gpu_health" / "files" / "ai_gpu_health.py"
MEMBERSHIP = ROOT / "roles" / "ai_gateway" / "files" / "ai_gateway_membership.py"
#: The gateway's mtail program (its per-request log).
MTAIL = ROOT / "roles" / "ai_gateway" / "files" / "ai_gateway.mtail"
DASHBOARD = ROOT / "roles" / "monitoring" / "files" / "ai-fleet-dashboard.json"
#: dcgm-exporter's counters (its metric names; the lab's stand-in writes exactly these).
COUNTERS = ROOT / "roles" / "dcgm_exporter" / "files" / "ai-fleet-counters.csv"
#: Metrics of Prometheus itself and of the distribution's exporters that the
#: rules and the dashboard use (tests/integration/test_monitoring.py finds them
#: in the lab's Prometheus).
EXPORTER_METRICS = ROOT / "tests" / "unit" / "monitoring" / "exporter-metrics.yml"
OWN_METRICS = {
    name for names in yaml.safe_load(EXPORTER_METRICS.read_text()).values() for name in names
}
PROMQL_WORDS = {"and", "or", "unless", "on", "ignoring", "by", "without", "bool", "offset"}
PROMQL_WORDS |= {"group_left", "group_right"}


def promtool() -> str:
    """The path of promtool, or a failure that says how to get it."""
    found = os.environ.get("AI_FLEET_PROMTOOL") or shutil.which("promtool")
    cached = ROOT / ".cache" / "prometheus" / "usr" / "bin" / "promtool"
    if not found and cached.is_file():
        found = str(cached)
    if not found:
        pytest.fail("promtool not found: run scripts/promtool.sh (the test command does)")
    return found


def rules() -> list[dict]:
    """Every rule of the rules file."""
    groups = yaml.safe_load(RULES.read_text())["groups"]
    return [rule for group in groups for rule in group["rules"]]


def metric_names(expr: str) -> set[str]:
    """The metric names a PromQL expression reads (not functions, keywords or labels)."""
    text = re.sub(r'"[^"]*"', "", expr)
    text = re.sub(r"\{[^}]*\}|\[[^\]]*\]", " ", text)
    text = re.sub(r"\b(?:on|by|ignoring|without)\s*\([^)]*\)", " ", text)
    names = set()
    for match in re.finditer(r"[A-Za-z_:][A-Za-z0-9_:]*", text):
        following = text[match.end() :].lstrip()
        if match.group() in PROMQL_WORDS or following.startswith("("):
            continue
        if re.fullmatch(r"[0-9.]+[smhdwy]?", match.group()):
            continue
        names.add(match.group())
    return names


def emitted() -> set[str]:
    """Every metric name the fleet's own programs write, plus Prometheus' and node exporter's."""
    checker = re.findall(r'family\(\s*"([a-z_]+)"', CHECKER.read_text())
    membership = re.findall(r"# TYPE ([a-z_]+) ", MEMBERSHIP.read_text())
    mtail = set()
    for kind, name in re.findall(r"^(counter|gauge|histogram) ([a-z_]+)", MTAIL.read_text(), re.M):
        mtail |= {name} | (
            {f"{name}_bucket", f"{name}_sum", f"{name}_count"} if kind == "histogram" else set()
        )
    return set(checker) | set(membership) | mtail | dcgm_counters() | OWN_METRICS


def dcgm_counters() -> set[str]:
    """The metric names of dcgm-exporter's counters file (its label-type fields are labels)."""
    names = set()
    for line in COUNTERS.read_text().splitlines():
        if line.strip() and not line.lstrip().startswith("#"):
            name, kind, _ = (part.strip() for part in line.split(",", 2))
            if kind != "label":
                names.add(name)
    return names


def test_promtool_accepts_the_rules():
    result = subprocess.run(
        [promtool(), "check", "rules", str(RULES)], capture_output=True, text=True, check=False
    )
    assert result.returncode == 0, result.stdout + result.stderr


def test_every_rule_test_passes():
    result = subprocess.run(
        [promtool(), "test", "rules", RULE_TESTS.name],
        cwd=RULE_TESTS.parent,
        capture_output=True,
        text=True,
        check=False,
    )
    assert result.returncode == 0, result.stdout + result.stderr


def test_every_alert_has_a_firing_and_a_quiet_case():
    cases = [
        case
        for test in yaml.safe_load(RULE_TESTS.read_text())["tests"]
        for case in test.get("alert_rule_test", [])
    ]
    problems = []
    for rule in rules():
        name = rule["alert"]
        mine = [case for case in cases if case["alertname"] == name]
        if not any(case.get("exp_alerts") for case in mine):
            problems.append(f"{name}: no case where it fires")
        if name != "Watchdog" and not any(not case.get("exp_alerts") for case in mine):
            problems.append(f"{name}: no case where it stays quiet")
    assert problems == []


def test_every_rule_has_a_severity_and_a_summary():
    for rule in rules():
        assert rule["labels"]["severity"] in {"none", "warning", "critical"}, rule["alert"]
        assert rule["annotations"]["summary"].strip(), rule["alert"]


def test_every_metric_a_rule_reads_is_written_by_an_exporter_of_the_fleet():
    known = emitted()
    assert {
        "ai_gpu_health_healthy",
        "ai_gateway_membership_breaker_open",
        "ai_gateway_requests_total",
        "ai_gateway_request_duration_seconds_bucket",
        "DCGM_FI_DEV_GPU_TEMP",
        "DCGM_EXP_GPU_HEALTH_STATUS",
    } <= known
    unknown = {
        rule["alert"]: sorted(metric_names(rule["expr"]) - known)
        for rule in rules()
        if metric_names(rule["expr"]) - known
    }
    assert unknown == {}


def dashboard_exprs() -> list[tuple[str, str]]:
    """(panel title, PromQL) of every query of the dashboard."""
    panels = json.loads(DASHBOARD.read_text())["panels"]
    return [(p["title"], t["expr"]) for p in panels for t in p.get("targets", [])]


def test_the_dashboard_is_grafana_json_on_a_chosen_prometheus():
    dashboard = json.loads(DASHBOARD.read_text())
    assert dashboard["uid"] == "ai-fleet"
    variables = {v["name"]: v for v in dashboard["templating"]["list"]}
    assert variables["datasource"]["type"] == "datasource"
    queried = [p for p in dashboard["panels"] if p["type"] != "row"]
    assert len(queried) >= 15
    for panel in queried:
        assert panel["datasource"]["uid"] == "${datasource}", panel["title"]
        assert panel["targets"], panel["title"]
    ids = [p["id"] for p in dashboard["panels"]]
    assert len(ids) == len(set(ids))


def test_promtool_parses_every_query_of_the_dashboard(tmp_path):
    rules = {
        "groups": [
            {
                "name": "dashboard",
                "rules": [
                    {"record": f"dashboard:query{i}", "expr": expr}
                    for i, (_, expr) in enumerate(dashboard_exprs())
                ],
            }
        ]
    }
    path = tmp_path / "dashboard.rules.yml"
    path.write_text(yaml.safe_dump(rules))
    result = subprocess.run(
        [promtool(), "check", "rules", str(path)], capture_output=True, text=True, check=False
    )
    assert result.returncode == 0, result.stdout + result.stderr


def test_every_metric_the_dashboard_reads_is_written_by_an_exporter_of_the_fleet():
    known = emitted()
    unknown = {
        title: sorted(metric_names(expr) - known)
        for title, expr in dashboard_exprs()
        if metric_names(expr) - known
    }
    assert unknown == {}


@pytest.mark.parametrize(
    ("expr", "names"),
    [
        ('up{job!="x"} == 0', {"up"}),
        ("vector(1)", set()),
        ('absent(up{job="node"})', {"up"}),
        ("increase(a_total[10m]) > 0", {"a_total"}),
        ("a == 1 unless on (instance) b", {"a", "b"}),
        ("time() - c > 60", {"c"}),
        ('sum by (node) (rate(d{code=~"5.."}[5m]))', {"d"}),
    ],
)
def test_the_metric_name_reader(expr, names):
    assert metric_names(expr) == names
