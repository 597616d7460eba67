#!/usr/bin/env python3
"""ai-gpu-health: a GPU node's fitness to serve, judged every few seconds, without Ansible.

Runs on each GPU node as a systemd service (Python standard library only, the
host's own Python). Every ``--interval`` seconds it reads:

- the kernel log (``/dev/kmsg``, or a file): NVIDIA XID errors, each once,
  tiered by NVIDIA's XID catalogue (XID_TIERS): a hardware-class fault
  ("remove": the GPU needs a reset, a reboot or a repair) makes the node
  unhealthy until an operator acknowledges it; an application-class one
  ("alert", such as 13 or 94) only counts;
- ``nvidia-smi`` (every ``--smi-interval`` seconds): its exit code (9 driver
  not loaded, 12 NVML missing, 15 GPU lost, 18 driver/library mismatch, ...),
  the number of GPUs against ``--expected-gpus``, uncorrectable (double-bit)
  ECC errors since the driver loaded, retired pages pending, the temperature;
  and row remapping (every ``--remap-interval`` seconds): a remap failure;
- DCGM's health watches, where NVIDIA's dcgm-exporter runs on the node
  (``--dcgm-url``, its ``/metrics``): a watch that fails removes the node
  while it fails, one that warns alerts. An exporter that does not answer
  keeps the last findings (``ai_gpu_health_dcgm_up`` 0; the monitoring
  alerts on it).

It publishes the verdict as JSON on ``http://<listen>:<port>/verdict`` (200
when healthy, 503 when not; the gateways' membership service polls it) to
loopback and the ``--allow`` networks only (the gateways; ``--open``: everyone),
and as node-exporter textfile metrics (``ai_gpu_health_*``). ``--once`` checks once,
prints the verdict and exits 0 (healthy) or 1.

An operator acknowledges the hardware faults seen so far (after a GPU reset,
a reboot or a repair) by writing the current time to the ``--ack-file``
(``{"acknowledged_at": <unix seconds>}``); faults logged before it no longer
count. nvidia-smi's own findings need no acknowledgement: they count while
nvidia-smi reports them.
"""

from __future__ import annotations

import argparse
import contextlib
import http.client
import ipaddress
import json
import os
import re
import socket
import subprocess
import sys
import threading
import time
import urllib.request
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

# nvidia_smi.py is installed beside this file (from plugins/module_utils/).
sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import nvidia_smi

REMOVE = "remove"
ALERT = "alert"
#: How long an alert-tier XID stays listed in the verdict.
ALERT_FOR_S = 600

# NVIDIA's XID catalogue (docs.nvidia.com/deploy/xid-errors), tiered by the
# catalogue's immediate action: RESET_GPU, RESTART_BM, RESTART_VM,
# WORKFLOW_XID_48 or WORKFLOW_NVLINK_ERR -> REMOVE; RESTART_APP or IGNORE ->
# ALERT. Codes the catalogue lists as unused, and XIDs not listed, are ALERT
# (reported with their number, never ignored). 144-150 (NVLink5) carry
# sub-codes that decide NVIDIA's action; they are removed without decoding.
XID_TIERS: dict[int, tuple[str, str]] = {
    8: (ALERT, "GPU stopped processing (application)"),
    13: (ALERT, "graphics engine exception (application)"),
    31: (ALERT, "GPU memory page fault (application)"),
    32: (ALERT, "invalid or corrupted push buffer stream"),
    38: (ALERT, "driver firmware error"),
    43: (ALERT, "GPU stopped processing (reset channel verification)"),
    45: (ALERT, "preemptive cleanup, due to previous errors"),
    48: (REMOVE, "double-bit ECC error"),
    44: (ALERT, "graphics engine fault during context switch"),
    61: (ALERT, "unused in the current catalogue (was: micro-controller breakpoint)"),
    62: (REMOVE, "internal micro-controller halt"),
    63: (ALERT, "ECC page retirement or row remapping recording event"),
    64: (REMOVE, "ECC page retirement or row remapper recording failure"),
    68: (ALERT, "video processor exception"),
    69: (ALERT, "graphics engine class error"),
    74: (REMOVE, "NVLink error"),
    79: (REMOVE, "GPU has fallen off the bus"),
    92: (ALERT, "high single-bit ECC error rate"),
    94: (ALERT, "contained ECC error (the application restarts)"),
    95: (REMOVE, "uncontained ECC error"),
    109: (REMOVE, "context switch timeout"),
    119: (REMOVE, "GSP RPC timeout"),
    120: (REMOVE, "GSP error"),
    121: (ALERT, "C2C link corrected error"),
    122: (ALERT, "unused in the current catalogue (was: SPI PMU RPC read failure)"),
    123: (ALERT, "unused in the current catalogue (was: SPI PMU RPC write failure)"),
    136: (REMOVE, "link training failure"),
    140: (REMOVE, "unrecovered ECC error"),
    143: (REMOVE, "GPU initialization failure"),
    **{n: (REMOVE, "NVLink error (sub-codes not decoded)") for n in range(144, 151)},
    151: (REMOVE, "key rotation error"),
    155: (REMOVE, "NVLink link down"),
}
# XID 154 says that the GPU's recovery action changed, to the value after "to":
# anything but 0x0 (None) - GPU Reset Required, Node Reboot Required, Drain and
# Reset, Drain P2P, and the 610 drivers' OS Reboot or PF FLR - removes the node.
XID_RECOVERY_ACTION = 154
_RECOVERY_TO = re.compile(r"to\s+(0x[0-9a-fA-F]+)\s*(?:\(([^)]*)\))?")

# nvidia-smi's exit codes (its manual's RETURN VALUE, NVML's return codes):
# those that say the GPUs cannot serve remove the node; those that say the
# check itself could not run are reported, without removing it.
SMI_EXIT: dict[int, tuple[str, str]] = {
    2: (ALERT, "a supplied argument or flag is invalid"),
    3: (ALERT, "the requested operation is not available on the target device"),
    4: (ALERT, "no permission to access the device or perform the operation"),
    6: (ALERT, "a query to find an object was unsuccessful"),
    8: (REMOVE, "a device's external power cables are not properly attached"),
    9: (REMOVE, "the NVIDIA driver is not loaded"),
    10: (REMOVE, "the NVIDIA kernel module detected an interrupt issue with a GPU"),
    12: (REMOVE, "the NVML shared library could not be found or loaded"),
    13: (ALERT, "the local NVML does not implement this function"),
    14: (REMOVE, "the infoROM is corrupted"),
    15: (REMOVE, "the GPU has fallen off the bus or has otherwise become inaccessible"),
    16: (REMOVE, "the GPU requires a reset"),
    18: (REMOVE, "driver/library version mismatch"),
    255: (ALERT, "other error or internal driver error"),
}

# An XID line of the NVIDIA kernel module, in the kernel log (open-gpu-kernel-modules):
#   NVRM: Xid (PCI:0000:3b:00): 79, GPU has fallen off the bus.         (process unknown)
#   NVRM: Xid (PCI:0000:3b:00): 13, pid=3291, name=python3, Graphics Exception: ...
#   NVRM: Xid (PCI:0000:3b:00): 79, pid='<unknown>', name=<unknown>, ...   (535 and older)
#   NVRM: Xid (PCI:0000:3b:00 GPU-I:01 GPU-CI:00): 31, ...                  (a MIG instance)
#   NVRM: Xid (0000:3b:00): 79, ...                                          (older still)
_XID_LINE = re.compile(
    r"NVRM: Xid \((?:PCI:)?(?P<pci>[0-9A-Fa-f]{4}:[0-9A-Fa-f]{2}:[0-9A-Fa-f]{2}(?:\.[0-7])?)"
    r"(?: GPU-I:\d+)?(?: GPU-CI:\d+)?\):\s*(?P<xid>\d+),\s*(?P<text>.*)$"
)
# A /dev/kmsg record: "<priority>,<sequence>,<microseconds since boot>,<flags>;<message>".
_KMSG_RECORD = re.compile(r"^(?P<prio>\d+),(?P<seq>\d+),(?P<usec>\d+),[^;]*;(?P<message>.*)$")


def gpu_address(pci_bus_id: str) -> str:
    """Return a GPU's PCI address as the kernel log writes it: ``0000:3a:00``.

    nvidia-smi writes ``00000000:3A:00.0`` (8-digit domain, function), the XID
    lines ``0000:3a:00``: one form, so that the causes and metrics of one GPU agree.
    """
    parts = pci_bus_id.strip().lower().split(":")
    if len(parts) != 3:
        return pci_bus_id.strip().lower()
    domain, bus, device = parts
    if re.fullmatch(r"[0-9a-f]+", domain):
        domain = f"{int(domain, 16):04x}"
    return f"{domain}:{bus}:{device.split('.', 1)[0]}"


def xid_tier(xid: int, text: str = "", unknown: str = ALERT) -> tuple[str, str]:
    """(tier, meaning) of one XID: REMOVE or ALERT, and what NVIDIA's catalogue calls it."""
    if xid == XID_RECOVERY_ACTION:
        match = _RECOVERY_TO.search(text)
        if not match:
            return REMOVE, "GPU recovery action changed (to an action not understood)"
        value, label = int(match.group(1), 16), (match.group(2) or match.group(1)).strip()
        return (ALERT if value == 0 else REMOVE), f"GPU recovery action changed to {label}"
    return XID_TIERS.get(xid, (unknown, "not in the checker's XID table"))


def parse_xid(message: str, unknown: str = ALERT) -> dict | None:
    """Return the XID in one kernel log message, or None: ``{pci, xid, text, tier, meaning}``."""
    match = _XID_LINE.search(message.strip())
    if not match:
        return None
    xid = int(match.group("xid"))
    text = match.group("text").strip()
    tier, meaning = xid_tier(xid, text, unknown)
    pci = gpu_address(match.group("pci"))
    return {"pci": pci, "xid": xid, "text": text, "tier": tier, "meaning": meaning}


def parse_kmsg_record(record: str) -> tuple[int, float, str] | None:
    """(sequence, seconds since boot, message) of a /dev/kmsg record; None for a continuation."""
    match = _KMSG_RECORD.match(record)
    if not match:
        return None
    return int(match.group("seq")), int(match.group("usec")) / 1e6, match.group("message")


def boot_time(uptime_text: str, now: float) -> float:
    """Unix time of the boot, from /proc/uptime's text."""
    return now - float(uptime_text.split(maxsplit=1)[0])


class KernelLog:
    """New XID records of the kernel log since the last read, each once.

    ``/dev/kmsg`` (or any character device) is read as kmsg records, one per
    read, from the oldest still in the ring buffer: each XID is timed from the
    boot and keyed by its sequence number, the same across restarts. A regular
    file (the lab's, a test's) is read as the lines appended since the last
    read; ``position`` (inode, offset, generation) is kept by the caller across
    restarts, and the file is read from its start again when it was replaced
    or truncated (a new generation, so that its keys are new).
    """

    def __init__(self, path: str, uptime_path="/proc/uptime", position=None, unknown=ALERT):
        """Open nothing yet: the first read opens the log."""
        self.path, self.uptime_path, self.unknown = path, uptime_path, unknown
        self.handle = None
        self.device = False
        self.position = dict(position or {"inode": None, "offset": 0, "generation": 0})

    def read(self, now: float) -> list[dict]:
        """Return the XIDs logged since the last call, each with ``at`` (unix time) and ``key``."""
        if self.handle is None and os.path.exists(self.path) and not os.path.isfile(self.path):
            self.device = True
            self.handle = os.open(self.path, os.O_RDONLY | os.O_NONBLOCK)
        return self._read_device(now) if self.device else self._read_file(now)

    def _read_device(self, now: float) -> list[dict]:
        try:
            with open(self.uptime_path, encoding="ascii") as handle:
                booted = boot_time(handle.read(), now)
        except OSError:
            booted = 0.0
        found = []
        while True:
            try:
                chunk = os.read(self.handle, 8192)
            except BlockingIOError:
                break
            except BrokenPipeError:
                # Records were overwritten before they were read: go on with the next.
                continue
            if not chunk:
                break
            # One record per read; its continuation lines (" KEY=value") follow it.
            record = parse_kmsg_record(chunk.decode("utf-8", "replace").split("\n", 1)[0])
            if record is None:
                continue
            sequence, since_boot, message = record
            xid = parse_xid(message, self.unknown)
            if xid:
                found.append({**xid, "at": booted + since_boot, "key": f"kmsg:{sequence}"})
        return found

    def _read_file(self, now: float) -> list[dict]:
        try:
            stat = os.stat(self.path)
        except OSError:
            return []
        where = self.position
        if stat.st_ino != where["inode"] or stat.st_size < where["offset"]:
            generation = where["generation"] + (where["inode"] is not None)
            self.position = where = {"inode": stat.st_ino, "offset": 0, "generation": generation}
        found = []
        with open(self.path, encoding="utf-8", errors="replace") as handle:
            handle.seek(where["offset"])
            while True:
                start = handle.tell()
                line = handle.readline()
                if not line.endswith("\n"):
                    break  # nothing more, or a line still being written
                where["offset"] = handle.tell()
                record = parse_kmsg_record(line.rstrip("\n"))
                xid = parse_xid(record[2] if record else line, self.unknown)
                if xid:
                    key = f"file:{where['inode']}:{where['generation']}:{start}"
                    found.append({**xid, "at": now, "key": key})
        return found


def smi_findings(
    rc: int | None, stdout: str, stderr: str, expected_gpus: int
) -> tuple[list, list, list]:
    """Return (causes, alerts, gpus) from one run of nvidia-smi's health query.

    ``rc`` None: nvidia-smi did not answer in time (a GPU that has fallen off
    the bus often hangs it). Only the standard output is the answer; a failing
    nvidia-smi's message may be on either.
    """
    if rc is None:
        return [cause("nvidia_smi", REMOVE, "nvidia-smi did not answer in time")], [], []
    if rc == 127:
        return [cause("nvidia_smi", REMOVE, "nvidia-smi is not installed")], [], []
    if rc != 0:
        tier, meaning = SMI_EXIT.get(rc, (ALERT, "an exit code nvidia-smi does not document"))
        detail = f"nvidia-smi exited {rc}: {meaning}"
        message = nvidia_smi.first_line(stdout) or nvidia_smi.first_line(stderr)
        if message:
            detail += f" ({message})"
        found = [cause("nvidia_smi", tier, detail, code=rc)]
        return (found, [], []) if tier == REMOVE else ([], found, [])
    try:
        gpus = nvidia_smi.parse_health_query(stdout)
    except nvidia_smi.NvidiaSmiParseError as exc:
        # GPUs that cannot be counted cannot be vouched for when some are expected.
        tier = REMOVE if expected_gpus else ALERT
        found = [cause("nvidia_smi", tier, f"nvidia-smi's answer not understood: {exc}")]
        return (found, [], []) if tier == REMOVE else ([], found, [])
    causes, alerts = [], []
    if expected_gpus and len(gpus) < expected_gpus:
        causes.append(
            cause("gpu_count", REMOVE, f"{len(gpus)} GPU(s) found, {expected_gpus} expected")
        )
    for gpu in gpus:
        where = gpu_address(gpu["pci_bus_id"])
        if gpu["errors"]:
            detail = "nvidia-smi reports " + ", ".join(gpu["errors"])
            causes.append(cause("nvidia_smi", REMOVE, detail, gpu=where))
        if gpu["ecc_uncorrected_volatile"]:
            causes.append(
                cause(
                    "ecc_uncorrected",
                    REMOVE,
                    f"{gpu['ecc_uncorrected_volatile']} uncorrectable ECC error(s) since the "
                    "driver loaded",
                    gpu=where,
                )
            )
        if gpu["retired_pages_pending"]:
            alerts.append(
                cause("retired_pages_pending", ALERT, "retired pages wait for a reset", gpu=where)
            )
    return causes, alerts, gpus


def remap_findings(rows: dict[str, dict]) -> tuple[list, list]:
    """(causes, alerts) from row remapping: a failure removes, a pending remap alerts."""
    causes, alerts = [], []
    for bus_id, state in sorted(rows.items()):
        where = gpu_address(bus_id)
        if state["failure"]:
            causes.append(
                cause("row_remap_failure", REMOVE, "row remapping failed (repair)", gpu=where)
            )
        elif state["pending"]:
            alerts.append(
                cause("row_remap_pending", ALERT, "a remapped row waits for a reset", gpu=where)
            )
    return causes, alerts


# dcgm-exporter's DCGM health watches: one sample per GPU and watch, 0 pass, 10 warn, 20 fail.
DCGM_HEALTH_METRIC = "DCGM_EXP_GPU_HEALTH_STATUS"
DCGM_WARN = 10
DCGM_FAIL = 20
_PROM_SAMPLE = re.compile(
    r"^(?P<name>[A-Za-z_:][A-Za-z0-9_:]*)(?:\{(?P<labels>.*)\})?\s+(?P<value>\S+)"
)
_PROM_LABEL = re.compile(r'([A-Za-z_][A-Za-z0-9_]*)="((?:[^"\\]|\\.)*)"')


def dcgm_health_findings(text: str) -> tuple[list, list]:
    """(causes, alerts) from dcgm-exporter's metrics: a failing watch removes, a warning alerts."""
    causes, alerts = [], []
    for line in text.splitlines():
        sample = _PROM_SAMPLE.match(line)
        if not sample or sample["name"] != DCGM_HEALTH_METRIC:
            continue
        labels = dict(_PROM_LABEL.findall(sample["labels"] or ""))
        try:
            value = float(sample["value"])
        except ValueError:
            continue
        if value < DCGM_WARN:
            continue
        watch = labels.get("health_watch", "?")
        code = labels.get("health_error_code", "?")
        where = gpu_address(labels.get("pci_bus_id", "")) or f"gpu {labels.get('gpu', '?')}"
        if value >= DCGM_FAIL:
            detail = f"DCGM health watch {watch} fails ({code})"
            causes.append(cause("dcgm_health", REMOVE, detail, gpu=where, watch=watch))
        else:
            detail = f"DCGM health watch {watch} warns ({code})"
            alerts.append(cause("dcgm_health", ALERT, detail, gpu=where, watch=watch))
    return causes, alerts


def read_url(url: str, timeout: float) -> str:
    """Return the body of a GET of ``url`` (no proxy); OSError when it cannot be read."""
    opener = urllib.request.build_opener(urllib.request.ProxyHandler({}))
    with opener.open(url, timeout=timeout) as answer:
        return answer.read().decode("utf-8", "replace")


def cause(kind: str, tier: str, detail: str, **more) -> dict:
    """One reason in a verdict."""
    return {"kind": kind, "tier": tier, "detail": detail, **more}


def xid_cause(xid: dict) -> dict:
    """Return a verdict's reason for one logged XID."""
    return cause(
        "xid",
        xid["tier"],
        f"XID {xid['xid']} ({xid['meaning']}): {xid['text']}",
        gpu=xid["pci"],
        xid=xid["xid"],
        at=round(xid["at"], 3),
    )


def verdict(  # noqa: PLR0913 (every input of the verdict, named)
    node: str,
    *,
    xids: list[dict],
    acknowledged_at: float,
    smi: tuple[list, list, list],
    remap: tuple[list, list],
    expected_gpus: int,
    now: float,
    dcgm: tuple[list, list] = ([], []),
) -> dict:
    """Return the node's verdict: healthy unless a REMOVE-tier cause stands.

    Logged XIDs of the REMOVE tier stand until acknowledged (logged at or
    before ``acknowledged_at``); ALERT-tier ones are listed for ten minutes.
    """
    standing = [x for x in xids if x["at"] > acknowledged_at]
    causes = [xid_cause(x) for x in standing if x["tier"] == REMOVE] + smi[0] + remap[0] + dcgm[0]
    alerts = (
        [xid_cause(x) for x in standing if x["tier"] == ALERT and now - x["at"] <= ALERT_FOR_S]
        + smi[1]
        + remap[1]
        + dcgm[1]
    )
    return {
        "node": node,
        "healthy": not causes,
        "causes": causes,
        "alerts": alerts,
        "gpus": {"found": len(smi[2]), "expected": expected_gpus},
        "acknowledged_at": acknowledged_at,
        "checked_at": round(now, 3),
    }


def _label(value) -> str:
    return str(value).replace("\\", "\\\\").replace('"', '\\"').replace("\n", " ")


def metrics(
    result: dict, xid_counts: dict, smi_rc: int | None, duration: float, dcgm_up: int | None = None
) -> str:
    """Render the verdict as node-exporter textfile metrics (Prometheus text format).

    ``dcgm_up``: whether dcgm-exporter answered (None: not read, no sample).
    """
    lines = []
    counted: dict[tuple, int] = {}
    for c in result["causes"] + result["alerts"]:
        labels = (("kind", c["kind"]), ("tier", c["tier"]), ("gpu", c.get("gpu", "")))
        counted[labels] = counted.get(labels, 0) + 1

    def family(name: str, kind: str, text: str, samples: list[tuple[dict, float]]):
        lines.append(f"# HELP {name} {text}")
        lines.append(f"# TYPE {name} {kind}")
        for labels, value in samples:
            inner = ",".join(f'{k}="{_label(v)}"' for k, v in labels.items())
            lines.append(f"{name}{{{inner}}} {value:g}" if inner else f"{name} {value:g}")

    family(
        "ai_gpu_health_healthy",
        "gauge",
        "1 when the node's GPUs are fit to serve, 0 when a cause removes the node.",
        [({}, 1 if result["healthy"] else 0)],
    )
    family(
        "ai_gpu_health_cause",
        "gauge",
        "Standing reasons to remove the node (tier remove) or to alert (tier alert), counted.",
        [(dict(labels), n) for labels, n in sorted(counted.items())],
    )
    family(
        "ai_gpu_health_xid_errors_total",
        "counter",
        "XID errors read from the kernel log since the checker started, by XID, tier and GPU.",
        [
            ({"xid": xid, "tier": tier, "gpu": gpu}, n)
            for (xid, tier, gpu), n in sorted(xid_counts.items())
        ],
    )
    family(
        "ai_gpu_health_gpus",
        "gauge",
        "GPUs nvidia-smi reported in the last check.",
        [({}, result["gpus"]["found"])],
    )
    family(
        "ai_gpu_health_expected_gpus",
        "gauge",
        "GPUs the node is expected to have (0: not checked).",
        [({}, result["gpus"]["expected"])],
    )
    family(
        "ai_gpu_health_nvidia_smi_exit_code",
        "gauge",
        "Exit code of the last nvidia-smi run (-1: it did not answer in time).",
        [({}, -1 if smi_rc is None else smi_rc)],
    )
    if dcgm_up is not None:
        family(
            "ai_gpu_health_dcgm_up",
            "gauge",
            "1 when dcgm-exporter's health watches were read in the last check, 0 when not "
            "(the last ones read stand).",
            [({}, dcgm_up)],
        )
    family(
        "ai_gpu_health_last_check_timestamp_seconds",
        "gauge",
        "Unix time of the last check.",
        [({}, result["checked_at"])],
    )
    family(
        "ai_gpu_health_check_duration_seconds",
        "gauge",
        "How long the last check took.",
        [({}, round(duration, 6))],
    )
    return "\n".join(lines) + "\n"


def write_atomically(path: str, text: str) -> None:
    """Write ``text`` to ``path`` through a temporary file and a rename (OSError if it cannot)."""
    temporary = f"{path}.{os.getpid()}.tmp"
    try:
        with open(temporary, "w", encoding="utf-8") as handle:
            handle.write(text)
        os.chmod(temporary, 0o644)
        os.replace(temporary, path)
    except OSError:
        with contextlib.suppress(OSError):
            os.remove(temporary)
        raise


def read_acknowledged(path: str) -> float:
    """Return the time up to which the operator acknowledged the faults (0 when never)."""
    try:
        with open(path, encoding="utf-8") as handle:
            return float(json.load(handle).get("acknowledged_at", 0))
    except (OSError, ValueError, TypeError, AttributeError):
        return 0.0


def run_smi(command: list[str], timeout: float) -> tuple[int | None, str, str]:
    """Return (exit code, stdout, stderr) of nvidia-smi; exit code None when it did not answer.

    A process stuck in the kernel (a GPU off the bus) may not even die when
    killed: it is left behind rather than waited for.
    """
    try:
        process = subprocess.Popen(
            command, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True
        )
    except OSError:
        return 127, "", ""
    try:
        stdout, stderr = process.communicate(timeout=timeout)
    except subprocess.TimeoutExpired:
        process.kill()
        return None, "", ""
    return process.returncode, stdout, stderr


class SmiRunner:
    """Runs nvidia-smi in a thread of its own, so that a hung one never stops the checks."""

    def __init__(self, command: list[str], timeout: float, ready: threading.Event | None = None):
        """Nothing runs until ``start``; ``ready`` is set whenever an answer comes."""
        self.command, self.timeout, self.ready = command, timeout, ready
        self.lock = threading.Lock()
        self.running_since: float | None = None
        self.answer: tuple[int | None, str, str] | None = None

    def start(self, now: float) -> None:
        """Start a run unless one is still going."""
        with self.lock:
            if self.running_since is not None:
                return
            self.running_since = now
        threading.Thread(target=self._run, daemon=True).start()

    def _run(self) -> None:
        answer = run_smi(self.command, self.timeout)
        with self.lock:
            self.answer, self.running_since = answer, None
        if self.ready is not None:
            self.ready.set()

    def take(self, now: float) -> tuple[int | None, str, str] | None:
        """Return the last finished answer once (None when nothing new).

        A run still going after its timeout (twice, to leave the kill time)
        answers "did not answer in time" meanwhile.
        """
        with self.lock:
            if self.running_since is not None and now - self.running_since > 2 * self.timeout:
                return None, "", ""
            answer, self.answer = self.answer, None
            return answer


class Checker:
    """The checks, their state between rounds (kept in the state file), and the last verdict."""

    def __init__(self, options: argparse.Namespace):
        """Start from the state file when there is one; nothing else is read yet."""
        self.options = options
        saved = self._load_state(options.state_file)
        self.log = KernelLog(
            options.kernel_log, position=saved.get("log"), unknown=options.unknown_xid_tier
        )
        self.xids: dict[str, dict] = {x["key"]: x for x in saved.get("xids", [])}
        self.remap: tuple[list, list] = tuple(saved.get("remap", ([], [])))
        self.xid_counts: dict[tuple, int] = {}
        self.smi: tuple[list, list, list] = ([], [], [])
        self.smi_rc: int | None = 0
        self.dcgm: tuple[list, list] = tuple(saved.get("dcgm", ([], [])))
        self.dcgm_up: int | None = None
        # Set when nvidia-smi answers: the verdict is renewed at once, not at the next round.
        self.answered = threading.Event()
        self.smi_runner = SmiRunner(
            [options.nvidia_smi, *nvidia_smi.HEALTH_ARGS], options.smi_timeout, self.answered
        )
        self.remap_runner = SmiRunner(
            [options.nvidia_smi, *nvidia_smi.REMAP_ARGS], options.smi_timeout, self.answered
        )
        self.smi_at = self.remap_at = float("-inf")
        self.lock = threading.Lock()
        self.result: dict = {}
        self.problems: set[str] = set()

    @staticmethod
    def _load_state(path: str) -> dict:
        try:
            with open(path, encoding="utf-8") as handle:
                saved = json.load(handle)
            return saved if isinstance(saved, dict) else {}
        except (OSError, ValueError):
            return {}

    def _note(self, key: str, message: str) -> None:
        """Log a problem of the checker itself once, until it goes away (``_clear``)."""
        if key not in self.problems:
            self.problems.add(key)
            print(message, file=sys.stderr, flush=True)

    def _clear(self, key: str) -> None:
        self.problems.discard(key)

    def _write(self, path: str, text: str) -> None:
        try:
            write_atomically(path, text)
            self._clear(path)
        except OSError as exc:
            self._note(path, f"cannot write {path}: {exc}")

    def wait(self, seconds: float) -> bool:
        """Sleep until the next round is due or nvidia-smi answers; True when it answered.

        A round is also due when the next nvidia-smi run is, so that nvidia-smi
        keeps its own cadence whatever the round interval.
        """
        smi_due = self.smi_at + self.options.smi_interval - time.monotonic()
        return self.answered.wait(max(0.0, min(seconds, smi_due)))

    def prime(self) -> None:
        """Start the first runs of nvidia-smi and wait for them (at most their timeouts)."""
        now = time.monotonic()
        self.smi_at = self.remap_at = now
        self.smi_runner.start(now)
        self.remap_runner.start(now)
        deadline = now + 2 * self.options.smi_timeout + 1
        while time.monotonic() < deadline and (
            self.smi_runner.running_since is not None or self.remap_runner.running_since is not None
        ):
            time.sleep(0.02)

    def round(self, now: float) -> dict:
        """Run one round of checks; return (and keep) the verdict.

        ``now`` is the wall clock (what verdicts and acknowledgements are in);
        the runs of nvidia-smi are scheduled on the monotonic clock.
        """
        started = time.monotonic()
        # An answer that comes from here on wakes the next wait: none is lost.
        self.answered.clear()
        options = self.options
        acknowledged_at = read_acknowledged(options.ack_file)
        try:
            new = self.log.read(now)
            self._clear("kernel log")
        except OSError as exc:
            new = []
            self._note("kernel log", f"kernel log {options.kernel_log} cannot be read: {exc}")
        for xid in new:
            if xid["key"] not in self.xids:
                self.xids[xid["key"]] = xid
                count_key = (str(xid["xid"]), xid["tier"], xid["pci"])
                self.xid_counts[count_key] = self.xid_counts.get(count_key, 0) + 1
        # Forget what no longer counts: acknowledged faults, alerts past their ten minutes.
        self.xids = {
            key: x
            for key, x in self.xids.items()
            if x["at"] > acknowledged_at and (x["tier"] == REMOVE or now - x["at"] <= ALERT_FOR_S)
        }
        if started - self.smi_at >= options.smi_interval:
            self.smi_at = started
            self.smi_runner.start(started)
        answer = self.smi_runner.take(time.monotonic())
        if answer is not None:
            self.smi_rc = answer[0]
            self.smi = smi_findings(*answer, options.expected_gpus)
        if started - self.remap_at >= options.remap_interval and self.smi_rc == 0:
            self.remap_at = started
            self.remap_runner.start(started)
        rc, stdout, _ = self.remap_runner.take(time.monotonic()) or (None, "", "")
        with contextlib.suppress(nvidia_smi.NvidiaSmiParseError):
            # A run that fails keeps the last findings: a remap failure does not clear.
            if rc == 0:
                self.remap = remap_findings(nvidia_smi.parse_remapped_rows(stdout))
        if options.dcgm_url:
            self.read_dcgm()
        result = verdict(
            options.node,
            xids=list(self.xids.values()),
            acknowledged_at=acknowledged_at,
            smi=self.smi,
            remap=self.remap,
            expected_gpus=options.expected_gpus,
            now=now,
            dcgm=self.dcgm,
        )
        if options.textfile_dir:
            took = time.monotonic() - started
            text = metrics(result, self.xid_counts, self.smi_rc, took, self.dcgm_up)
            self._write(os.path.join(options.textfile_dir, "ai_gpu_health.prom"), text)
        if options.state_file:
            state = {
                "log": self.log.position,
                "xids": list(self.xids.values()),
                "remap": self.remap,
                "dcgm": self.dcgm,
            }
            self._write(options.state_file, json.dumps(state) + "\n")
        with self.lock:
            changed = self.result.get("causes") != result["causes"]
            self.result = result
        if changed:
            state = "healthy" if result["healthy"] else "UNHEALTHY"
            reasons = "; ".join(c["detail"] for c in result["causes"]) or "no fault"
            print(f"{state}: {reasons}", file=sys.stderr, flush=True)
        return result

    def read_dcgm(self) -> None:
        """Read DCGM's health watches from dcgm-exporter.

        An exporter that does not answer, or answers without health watches,
        changes nothing: the last findings stand (a failing GPU does not
        return because its exporter restarted), and ``dcgm_up`` says 0.
        """
        url = self.options.dcgm_url
        try:
            text = read_url(url, self.options.dcgm_timeout)
        except (OSError, ValueError, http.client.HTTPException) as exc:
            self.dcgm_up = 0
            self._note("dcgm", f"dcgm-exporter {url} cannot be read: {exc}")
            return
        if not re.search(rf"^{DCGM_HEALTH_METRIC}\{{", text, re.M):
            self.dcgm_up = 0
            self._note("dcgm", f"dcgm-exporter {url} answers without {DCGM_HEALTH_METRIC}")
            return
        self._clear("dcgm")
        self.dcgm, self.dcgm_up = dcgm_health_findings(text), 1

    def current(self, now: float) -> dict:
        """Return the last verdict; unhealthy when the checks stopped running (stale)."""
        with self.lock:
            result = dict(self.result)
        stale_after = 3 * max(self.options.interval, self.options.smi_interval)
        if not result or now - result["checked_at"] > stale_after:
            checked = result.get("checked_at", 0)
            stale = cause("checker", REMOVE, f"no check since {checked} (stale verdict)")
            result = {**result, "healthy": False, "causes": [*result.get("causes", []), stale]}
        return result


class VerdictServer(ThreadingHTTPServer):
    """The verdict's HTTP server (IPv4 or, for an IPv6 address, IPv6)."""

    daemon_threads = True

    def __init__(self, address: str, port: int, handler):
        """Listen on ``address``:``port``."""
        self.address_family = socket.AF_INET6 if ":" in address else socket.AF_INET
        super().__init__((address, port), handler)


def may_read(client: str, allowed: list | None) -> bool:
    """Tell whether the address ``client`` may read the verdict.

    ``allowed`` is None when everyone may (``--open``); otherwise loopback and
    the addresses in one of the ``allowed`` networks may.
    """
    if allowed is None:
        return True
    try:
        address = ipaddress.ip_address(client.split("%", 1)[0])
    except ValueError:
        return False
    mapped = getattr(address, "ipv4_mapped", None)
    address = mapped or address
    return address.is_loopback or any(address in network for network in allowed)


def serve(
    checker: Checker, address: str, port: int, allowed: list | None = None
) -> ThreadingHTTPServer:
    """Start the verdict's HTTP server in a thread; return it.

    Only loopback and the ``allowed`` networks may read the verdict (None:
    everyone); anyone else gets 403 and nothing of the node.
    """

    class Handler(BaseHTTPRequestHandler):
        def do_GET(self):
            if not may_read(self.client_address[0], allowed):
                self.send_error(403, "only the gateways and the allowed networks read the verdict")
                return
            if self.path.split("?", 1)[0] not in ("/verdict", "/"):
                self.send_error(404, "GET /verdict")
                return
            result = checker.current(time.time())
            body = (json.dumps(result, sort_keys=True) + "\n").encode()
            self.send_response(200 if result.get("healthy") else 503)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(body)))
            self.send_header("Cache-Control", "no-store")
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, *args):
            """Log nothing: every gateway polls every few seconds."""

    server = VerdictServer(address, port, Handler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    return server


def options_from(argv: list[str]) -> argparse.Namespace:
    """Parse the command line."""
    parser = argparse.ArgumentParser(prog="ai-gpu-health", description=__doc__.split("\n")[0])
    parser.add_argument("--node", default=socket.gethostname(), help="name in the verdict")
    parser.add_argument("--interval", type=float, default=2.0, help="seconds between rounds")
    parser.add_argument("--smi-interval", type=float, default=5.0, help="seconds between runs")
    parser.add_argument("--remap-interval", type=float, default=60.0)
    parser.add_argument("--smi-timeout", type=float, default=8.0)
    parser.add_argument("--expected-gpus", type=int, default=0, help="0: not checked")
    parser.add_argument("--nvidia-smi", default="nvidia-smi")
    parser.add_argument("--kernel-log", default="/dev/kmsg")
    parser.add_argument(
        "--dcgm-url", default="", help="dcgm-exporter's /metrics (health watches); '': not read"
    )
    parser.add_argument("--dcgm-timeout", type=float, default=1.0)
    parser.add_argument("--ack-file", default="/var/lib/ai-gpu-health/acknowledged.json")
    parser.add_argument("--state-file", default="/var/lib/ai-gpu-health/state.json")
    parser.add_argument(
        "--unknown-xid-tier",
        choices=(ALERT, REMOVE),
        default=ALERT,
        help="tier of an XID the checker's table does not list",
    )
    parser.add_argument("--textfile-dir", default="", help="node-exporter's textfile folder")
    parser.add_argument("--listen", default="0.0.0.0", help="address of the verdict's server")
    parser.add_argument("--port", type=int, default=9402)
    parser.add_argument(
        "--allow",
        action="append",
        default=[],
        metavar="NETWORK",
        help="an address or network (CIDR) that may read the verdict, besides loopback",
    )
    parser.add_argument("--open", action="store_true", help="everyone may read the verdict")
    parser.add_argument("--once", action="store_true", help="check once, print, exit 0 or 1")
    options = parser.parse_args(argv)
    if options.interval <= 0 or options.smi_interval <= 0 or options.smi_timeout <= 0:
        parser.error("--interval, --smi-interval and --smi-timeout must be above 0")
    if options.expected_gpus < 0:
        parser.error("--expected-gpus must be 0 or more")
    networks = []
    for value in options.allow:
        try:
            networks.append(ipaddress.ip_network(value, strict=False))
        except ValueError:
            parser.error(f"--allow {value}: not an IP address or network")
    options.allowed = None if options.open else networks
    return options


def main(argv: list[str] | None = None) -> int:
    """Check once (--once) or forever."""
    options = options_from(sys.argv[1:] if argv is None else argv)
    checker = Checker(options)
    # No verdict before nvidia-smi has answered once (or failed to, in its time).
    checker.prime()
    if options.once:
        result = checker.round(time.time())
        print(json.dumps(result, indent=2, sort_keys=True))
        return 0 if result["healthy"] else 1
    checker.round(time.time())
    serve(checker, options.listen, options.port, options.allowed)
    while True:
        started = time.monotonic()
        try:
            checker.round(time.time())
        except Exception as exc:  # the checker goes on; a verdict that stops renewing turns stale
            print(f"check failed: {exc!r}", file=sys.stderr, flush=True)
        checker.wait(max(0.0, options.interval - (time.monotonic() - started)))


if __name__ == "__main__":
    sys.exit(main())
