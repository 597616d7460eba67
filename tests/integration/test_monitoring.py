"""The monitoring host: Prometheus scrapes exactly the fleet, runs the tested rules, alerts.

Prometheus and Alertmanager run on the monitoring group's hosts (role
monitoring), a node exporter on every host (role node_exporter). The targets
are computed here from the inventory, as the role computes them: job `node` on
every GPU node, gateway and monitoring host, job `ai-inference-service` on every
GPU node, job `dcgm` (NVIDIA's dcgm-exporter, role dcgm_exporter; a stand-in
image in the lab) on every GPU node with GPUs, and Prometheus and Alertmanager
themselves.

The fault tests (a stopped exporter, a GPU fault, a stopped monitoring host)
change the lab and put it back: molecule only, or AI_FLEET_PLAY_TESTS=1 against a lab.
"""

from __future__ import annotations

import json
import re
import time
from urllib.parse import quote

import pytest
import yaml
from conftest import ROOT, inventory_groups, needs_plays, run_ok, wait_for
from fleet import host_of
from gpu_faults import CHECKER_METRICS, DCGM_CONTAINER, Lab, dcgm_counters

RULES = ROOT / "roles" / "monitoring" / "files" / "ai-fleet.rules.yml"
DASHBOARD = ROOT / "roles" / "monitoring" / "files" / "ai-fleet-dashboard.json"
EXPORTER_METRICS = ROOT / "tests" / "unit" / "monitoring" / "exporter-metrics.yml"
SCRAPE_WAIT_S = 60
# ExporterDown: `for: 1m`, plus a scrape interval to notice and one to evaluate.
EXPORTER_DOWN_GOAL_S = 120


class Monitoring:
    """The lab's first monitoring host, queried from the host itself."""

    def __init__(self, inventory: str):
        """Read the inventory's groups; skip when it has no monitoring host."""
        groups = inventory_groups(inventory)
        self.groups = {name: sorted(groups.get(name, {}).get("hosts", [])) for name in groups}
        self.inventory = inventory
        hosts = self.groups.get("monitoring", [])
        if not hosts:
            pytest.skip("the inventory has no monitoring host")
        self.name = hosts[0]
        self.host = host_of(inventory, self.name)
        variables = self.host.ansible.get_variables()
        self.prometheus = f"http://127.0.0.1:{variables.get('monitoring_prometheus_port', 9090)}"
        self.alertmanager = (
            f"http://127.0.0.1:{variables.get('monitoring_alertmanager_port', 9093)}"
        )

    def gateway_host(self, name: str):
        return host_of(self.inventory, name)

    def get(self, url: str):
        return json.loads(run_ok(self.host, "curl", "-fsS", "--max-time", "10", url))

    def query(self, expr: str) -> list[dict]:
        """The result of an instant PromQL query."""
        return self.get(f"{self.prometheus}/api/v1/query?query={quote(expr)}")["data"]["result"]

    def targets(self) -> dict[tuple[str, str], str]:
        """{(job, instance): health} of every active target."""
        active = self.get(f"{self.prometheus}/api/v1/targets?state=active")["data"]["activeTargets"]
        return {(t["labels"]["job"], t["labels"]["instance"]): t["health"] for t in active}

    def expected_targets(self) -> set[tuple[str, str]]:
        """What the role must scrape, from the inventory."""
        nodes, gateways = self.groups.get("gpu_nodes", []), self.groups.get("gateways", [])
        monitors = self.groups.get("monitoring", [])
        expected = {("node", h) for h in nodes + gateways + monitors}
        expected |= {(job, h) for h in nodes for job in ("ai-inference-service", "dcgm")}
        expected |= {(job, h) for h in gateways for job in ("nginx", "access-log")}
        expected |= {("prometheus", self.name), ("alertmanager", self.name)}
        return expected

    def firing(self, alertname: str) -> list[dict]:
        """The firing alerts of that name, as Prometheus evaluates them."""
        alerts = self.get(f"{self.prometheus}/api/v1/alerts")["data"]["alerts"]
        return [
            a for a in alerts if a["labels"]["alertname"] == alertname and a["state"] == "firing"
        ]

    def in_alertmanager(self, alertname: str) -> list[dict]:
        alerts = self.get(f"{self.alertmanager}/api/v2/alerts")
        return [a for a in alerts if a["labels"]["alertname"] == alertname]


@pytest.fixture(scope="module")
def monitoring(ansible_inventory):
    return Monitoring(ansible_inventory)


def test_prometheus_scrapes_exactly_the_fleet_and_every_target_is_up(monitoring):
    expected = monitoring.expected_targets()
    assert wait_for(
        lambda: monitoring.targets() == dict.fromkeys(expected, "up"), SCRAPE_WAIT_S, 3
    ), monitoring.targets()
    # Prometheus' own count: nodes x {node, dcgm, ai-inference-service} + gateways
    # x {node, nginx, access-log} + the monitoring host's node exporter,
    # Prometheus and Alertmanager.
    nodes, gateways = monitoring.groups["gpu_nodes"], monitoring.groups["gateways"]
    assert len(monitoring.targets()) == 3 * len(nodes) + 3 * len(gateways) + 3


def test_the_fleet_s_own_metrics_arrive_for_every_node_and_gateway(monitoring):
    nodes, gateways = monitoring.groups["gpu_nodes"], monitoring.groups["gateways"]

    def by_instance(expr):
        return {r["metric"]["instance"]: r["value"][1] for r in monitoring.query(expr)}

    wanted = {
        "ai_gpu_health_healthy": dict.fromkeys(nodes, "1"),
        "ai_gpu_health_nvidia_smi_exit_code": dict.fromkeys(nodes, "0"),
        "ai_gateway_membership_breaker_open": dict.fromkeys(gateways, "0"),
        # The node exporter's own metric that the rules read, from every host.
        'node_textfile_scrape_error{job="node"}': dict.fromkeys(
            nodes + gateways + monitoring.groups["monitoring"], "0"
        ),
        # The service's /metrics (its request counters) through the node firewall.
        'up{job="ai-inference-service"}': dict.fromkeys(nodes, "1"),
    }

    def found():
        return {expr: by_instance(expr) for expr in wanted}

    # Each target is scraped on its own schedule (a monitoring host just
    # started has not scraped all of them yet).
    assert wait_for(lambda: found() == wanted, SCRAPE_WAIT_S, 3), found()


def test_every_dcgm_metric_the_rules_and_dashboard_read_arrives_for_every_node(monitoring):
    """Each DCGM metric the rules or the dashboard read, per GPU, with dcgm-exporter's labels.

    Only those: a GPU that lacks a field (retired pages on GPUs that remap
    rows instead) leaves it out, as the real exporter does.
    """
    nodes = monitoring.groups["gpu_nodes"]
    read = set(re.findall(r"\bDCGM_[A-Z_]+", RULES.read_text() + DASHBOARD.read_text()))
    counters = read & dcgm_counters()
    assert {"DCGM_FI_DEV_GPU_TEMP", "DCGM_EXP_GPU_HEALTH_STATUS"} <= counters, read
    labels = {"gpu", "UUID", "pci_bus_id", "device", "modelName", "Hostname"}

    def missing():
        found = monitoring.query(
            'count by (__name__, instance) ({job="dcgm", __name__=~"DCGM_.*"})'
        )
        seen = {(r["metric"]["__name__"], r["metric"]["instance"]) for r in found}
        return sorted({(c, n) for c in counters for n in nodes} - seen)

    assert wait_for(lambda: not missing(), SCRAPE_WAIT_S, 3), missing()
    for name in nodes:
        temps = monitoring.query(f'DCGM_FI_DEV_GPU_TEMP{{job="dcgm", instance="{name}"}}')
        assert len(temps) == 8, temps
        for sample in temps:
            assert labels <= set(sample["metric"]), sample["metric"]
            assert sample["metric"]["DCGM_FI_DRIVER_VERSION"], sample["metric"]


@needs_plays
def test_a_gpu_temperature_dcgm_reports_reaches_prometheus(monitoring, lab):
    name = sorted(lab.nodes)[0]
    lab.dcgm_faults(name, {"gpus": {"1": {"temperature": 93}}})
    try:
        query = f'DCGM_FI_DEV_GPU_TEMP{{job="dcgm", instance="{name}", gpu="1"}}'
        assert wait_for(
            lambda: [r["value"][1] for r in monitoring.query(query)] == ["93"], SCRAPE_WAIT_S, 3
        ), monitoring.query(query)
    finally:
        lab.dcgm_faults(name, {})


def test_every_exporter_metric_the_rules_and_dashboard_read_exists(monitoring):
    """The distribution's exporters' names (tests/unit/monitoring/exporter-metrics.yml) are real."""
    listed = yaml.safe_load(EXPORTER_METRICS.read_text())
    names = {name for group in listed.values() for name in group}

    def missing():
        return sorted(n for n in names if not monitoring.query(f"count({n})"))

    assert wait_for(lambda: not missing(), SCRAPE_WAIT_S, 3), missing()


def test_the_dashboard_is_installed_for_grafana(monitoring):
    installed = monitoring.host.file("/usr/local/share/ai-fleet/grafana/ai-fleet-dashboard.json")
    assert installed.exists
    assert json.loads(installed.content_string) == json.loads(DASHBOARD.read_text())


def test_requests_through_each_gateway_are_counted_per_node(monitoring):
    """The per-request log, read by mtail: every node that answered is named, each count grows."""
    nodes, gateways = monitoring.groups["gpu_nodes"], monitoring.groups["gateways"]

    def counts():
        found = monitoring.query("sum by (instance, node) (ai_gateway_requests_total)")
        return {(r["metric"]["instance"], r["metric"]["node"]): float(r["value"][1]) for r in found}

    before = counts()
    for gateway in gateways:
        host = monitoring.gateway_host(gateway)
        port = host.ansible.get_variables().get("ai_gateway_http_port", 80)
        for _ in range(20):
            run_ok(
                host, "curl", "-fsS", "-o", "/dev/null", f"http://127.0.0.1:{port}/api/v1/ai/info"
            )
    wanted = {(g, n) for g in gateways for n in nodes}

    def grown():
        now = counts()
        return all(now.get(key, 0) > before.get(key, 0) for key in wanted)

    assert wait_for(grown, SCRAPE_WAIT_S, 3), (before, counts())
    up = {r["metric"]["instance"]: r["value"][1] for r in monitoring.query("nginx_up")}
    assert up == dict.fromkeys(gateways, "1")


def test_the_rules_are_loaded_and_the_watchdog_reaches_alertmanager(monitoring):
    wanted = {
        rule["alert"]
        for group in yaml.safe_load(RULES.read_text())["groups"]
        for rule in group["rules"]
    }
    groups = monitoring.get(f"{monitoring.prometheus}/api/v1/rules")["data"]["groups"]
    loaded = {rule["name"] for group in groups for rule in group["rules"]}
    assert loaded == wanted
    assert all(rule["health"] == "ok" for group in groups for rule in group["rules"])
    assert wait_for(lambda: monitoring.in_alertmanager("Watchdog"), SCRAPE_WAIT_S, 3)


@pytest.fixture
def lab(ansible_inventory):
    found = Lab(ansible_inventory)
    if len(found.nodes) < 2:
        pytest.skip("needs two GPU nodes: the last node is never held out")
    yield found
    found.heal()


@needs_plays
def test_a_stopped_exporter_alerts_within_2_minutes_and_the_node_keeps_serving(monitoring, lab):
    name = sorted(lab.nodes)[0]
    host = lab.nodes[name]
    run_ok(host, "systemctl", "stop", "prometheus-node-exporter")
    try:
        started = time.monotonic()

        def exporter_down():
            return [a for a in monitoring.firing("ExporterDown") if a["labels"]["instance"] == name]

        assert wait_for(exporter_down, EXPORTER_DOWN_GOAL_S + 30, 5), monitoring.targets()
        fired_after = time.monotonic() - started
        assert fired_after <= EXPORTER_DOWN_GOAL_S, f"ExporterDown after {fired_after:.0f} s"
        assert exporter_down()[0]["labels"]["job"] == "node"
        # Monitoring is not on the serving path: the node is in on every gateway.
        assert lab.up_everywhere(name)
        assert lab.verdict(name)["healthy"] is True
    finally:
        run_ok(host, "systemctl", "start", "prometheus-node-exporter")
    assert wait_for(lambda: monitoring.targets().get(("node", name)) == "up", SCRAPE_WAIT_S, 3)


@needs_plays
def test_a_stopped_dcgm_exporter_alerts_within_2_minutes_and_membership_is_unaffected(
    monitoring, lab
):
    name = sorted(lab.nodes)[-1]
    host = lab.nodes[name]
    run_ok(host, "docker", "stop", DCGM_CONTAINER)
    try:
        started = time.monotonic()

        def exporter_down():
            return [
                a
                for a in monitoring.firing("ExporterDown")
                if a["labels"]["instance"] == name and a["labels"]["job"] == "dcgm"
            ]

        assert wait_for(exporter_down, EXPORTER_DOWN_GOAL_S + 30, 5), monitoring.targets()
        fired_after = time.monotonic() - started
        assert fired_after <= EXPORTER_DOWN_GOAL_S, f"ExporterDown after {fired_after:.0f} s"
        # The checker cannot read DCGM's watches, which changes nothing: the
        # node stays healthy and in on every gateway.
        metrics = host.file(CHECKER_METRICS).content_string
        assert "ai_gpu_health_dcgm_up 0" in metrics, metrics
        assert lab.verdict(name)["healthy"] is True
        assert lab.up_everywhere(name)
    finally:
        run_ok(host, "docker", "start", DCGM_CONTAINER)
    assert wait_for(lambda: monitoring.targets().get(("dcgm", name)) == "up", SCRAPE_WAIT_S, 3)


@needs_plays
def test_a_gpu_fault_fires_its_alerts_and_the_gateway_s(monitoring, lab):
    name = sorted(lab.nodes)[-1]
    lab.nvidia_smi_answers(name, "dbe")
    assert wait_for(lambda: lab.down_everywhere(name), 15, 0.5)

    def firing_for(alertname, label="instance"):
        return [a for a in monitoring.firing(alertname) if a["labels"].get(label) == name]

    # The checker's metrics reach Prometheus at the next scrape (15 s) and its
    # rules evaluation (15 s); the gateway's NodeQuarantined names the node.
    assert wait_for(lambda: firing_for("GpuNodeUnhealthy"), 75, 3), monitoring.firing(
        "GpuNodeUnhealthy"
    )
    assert wait_for(lambda: firing_for("GpuEccUncorrectable"), 30, 3)
    assert wait_for(lambda: firing_for("NodeQuarantined", "node"), 30, 3)
    ecc = firing_for("GpuEccUncorrectable")[0]["labels"]
    assert ecc["severity"] == "critical" and ecc["gpu"], ecc


@needs_plays
def test_with_the_monitoring_host_stopped_a_bad_gpu_is_still_out_within_10_s(monitoring, lab):
    run_ok(monitoring.host, "systemctl", "stop", "prometheus", "prometheus-alertmanager")
    try:
        name = sorted(lab.nodes)[0]
        started = time.monotonic()
        lab.nvidia_smi_answers(name, "exit-18")
        removed_after = lab.wait_removed(name, started)
        assert removed_after <= 10, f"{name} held out after {removed_after:.1f} s"
    finally:
        run_ok(monitoring.host, "systemctl", "start", "prometheus", "prometheus-alertmanager")
    assert wait_for(
        lambda: monitoring.host.run(f"curl -fsS {monitoring.prometheus}/-/ready").rc == 0, 60, 2
    )
