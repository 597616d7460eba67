"""The GPU fault lab: the gateways' membership service and the nodes' GPU health checker.

What the fault suites share (test_gpu_health.py, test_monitoring.py): the
lab's gateways and GPU nodes from the inventory, where each node's checker
reads (a stand-in nvidia-smi whose output set is named in FAKE_STATE, a kernel
log the tests append XID lines to), and whether a node is down in the
gateways' include file.
"""

from __future__ import annotations

import json
import time

import pytest
from conftest import ROOT, inventory_groups, run_ok, wait_for
from fleet import container_address, host_of

SETTINGS = "/etc/ai-gateway/membership.json"
STATE = "/var/lib/ai-gateway/membership.json"
# The gateways' record of the operator's drains (playbooks/drain.yml).
DRAINED = "/var/lib/ai-gateway/drained.json"
METRICS = "/var/lib/prometheus/node-exporter/ai_gateway_membership.prom"
CHECKER_METRICS = "/var/lib/prometheus/node-exporter/ai_gpu_health.prom"
FAKE_STATE = "/etc/ai-gpu-health/fake-nvidia-smi.state"
ACK_FILE = "/var/lib/ai-gpu-health/acknowledged.json"
# The dcgm-exporter stand-in's fault file, in its container (tests/images/dcgm-exporter).
DCGM_CONTAINER = "dcgm-exporter"
DCGM_FAULTS = "/var/lib/dcgm-standin/faults.json"
DCGM_COUNTERS = ROOT / "roles" / "dcgm_exporter" / "files" / "ai-fleet-counters.csv"
# How a driver logs each fault (NVRM lines as the kernel log has them).
XID_LINES = {
    79: "NVRM: Xid (PCI:0000:18:00): 79, pid=0, name=python3, GPU has fallen off the bus.",
    13: "NVRM: Xid (PCI:0000:2a:00): 13, pid=2210, name=python3, Graphics SM Warp Exception "
    "on (GPC 0, TPC 1, SM 0): Illegal Instruction Encoding",
}


def dcgm_counters() -> set[str]:
    """The metric names of the project's dcgm-exporter counters (label-type fields are labels)."""
    names = set()
    for line in DCGM_COUNTERS.read_text().splitlines():
        if line.strip() and not line.lstrip().startswith("#"):
            name, kind, _ = (part.strip() for part in line.split(",", 2))
            if kind != "label":
                names.add(name)
    return names


class Lab:
    """The lab under test: its gateways, its GPU nodes, where the checker reads."""

    def __init__(self, inventory: str):
        """Read the lab from its inventory and the first gateway's membership settings."""
        groups = inventory_groups(inventory)
        self.inventory = inventory
        self.gateways = {n: host_of(inventory, n) for n in sorted(groups["gateways"]["hosts"])}
        self.nodes = {n: host_of(inventory, n) for n in sorted(groups["gpu_nodes"]["hosts"])}
        first = next(iter(self.gateways.values()))
        self.settings = json.loads(first.file(SETTINGS).content_string)
        address = container_address(next(iter(self.gateways)))
        self.url = address and f"http://{address}:80"

    def kernel_log(self, name: str) -> str:
        return self.nodes[name].ansible.get_variables()["gpu_health_kernel_log"]

    def endpoint(self, name: str) -> str:
        """The node's `address:port` in the include file."""
        entry = next(e for e in self.settings["entries"] if e["host_name"] == name)
        address = entry["address"]
        return f"[{address}]:{entry['port']}" if ":" in address else f"{address}:{entry['port']}"

    def down_on(self, gateway: str, name: str) -> bool:
        include = self.gateways[gateway].file(self.settings["include_file"]).content_string
        line = next(ln for ln in include.splitlines() if f" {self.endpoint(name)} " in ln)
        return line.rstrip(";").endswith(" down")

    def down_everywhere(self, name: str) -> bool:
        return all(self.down_on(g, name) for g in self.gateways)

    def up_everywhere(self, name: str) -> bool:
        return not any(self.down_on(g, name) for g in self.gateways)

    def verdict(self, name: str) -> dict:
        gateway = next(iter(self.gateways.values()))
        url = self.settings["verdict_urls"][name]
        result = gateway.run(f"curl -sS --max-time 5 {url}")
        assert result.rc == 0, f"{name}'s verdict cannot be read from the gateway: {result.stderr}"
        return json.loads(result.stdout)

    def inject_xid(self, name: str, xid: int) -> None:
        line = f"kernel: {XID_LINES[xid]}"
        run_ok(self.nodes[name], "sh", "-c", f"echo '{line}' >> {self.kernel_log(name)}")

    def nvidia_smi_answers(self, name: str, output_set: str) -> None:
        host = self.nodes[name]
        run_ok(host, "mkdir", "-p", "/etc/ai-gpu-health")
        run_ok(host, "sh", "-c", f"echo {output_set} > {FAKE_STATE}")

    def dcgm_faults(self, name: str, faults: dict) -> None:
        """What the node's dcgm-exporter stand-in reports from its next scrape ({}: healthy)."""
        text = json.dumps(faults)
        run_ok(
            self.nodes[name],
            "docker",
            "exec",
            DCGM_CONTAINER,
            "sh",
            "-c",
            f"mkdir -p $(dirname {DCGM_FAULTS}) && printf '%s' '{text}' > {DCGM_FAULTS}",
        )

    def wait_removed(self, name: str, since: float) -> float:
        """Seconds from ``since`` until the node is down on every gateway."""
        deadline = since + 60
        while time.monotonic() < deadline:
            if self.down_everywhere(name):
                return time.monotonic() - since
            time.sleep(0.2)
        pytest.fail(f"{name} was not held out within 60 s: {self.verdict(name)}")

    def breaker_open(self, gateway: str) -> bool:
        return json.loads(self.gateways[gateway].file(STATE).content_string)["breaker_open"]

    def close_breakers(self) -> None:
        """Close every open breaker, as an operator does once the faults are dealt with."""
        for gateway, host in self.gateways.items():
            if self.breaker_open(gateway):
                run_ok(host, "touch", "/var/lib/ai-gateway/breaker-reset")
                assert wait_for(lambda g=gateway: not self.breaker_open(g), 10, 0.5)

    def service_log(self, gateway: str, since: int | None = None) -> str:
        """The membership service's last 50 lines, or its lines since a unix time of the gateway."""
        window = f"--since @{since}" if since is not None else "-n 50"
        return (
            self.gateways[gateway]
            .run(f"journalctl -u ai-gateway-membership --no-pager {window} -o cat")
            .stdout
        )

    def clock(self, gateway: str) -> int:
        """The gateway's time (unix seconds), for service_log's ``since``."""
        return int(run_ok(self.gateways[gateway], "date", "+%s"))

    def heal(self) -> None:
        """Every node answers healthy, its faults acknowledged, and is in on every gateway."""
        for name, host in self.nodes.items():
            self.nvidia_smi_answers(name, "healthy")
            self.dcgm_faults(name, {})
            # What a test left standing is acknowledged (as playbooks/undrain.yml does).
            run_ok(host, "sh", "-c", f"echo '{{\"acknowledged_at\": '$(date +%s)'}}' > {ACK_FILE}")
        for name in self.nodes:
            assert wait_for(lambda n=name: self.verdict(n)["healthy"], 20, 0.5)
        self.close_breakers()
        for name in self.nodes:
            assert wait_for(lambda n=name: self.up_everywhere(n), 120, 1)
