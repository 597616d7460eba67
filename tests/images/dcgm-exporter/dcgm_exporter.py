#!/usr/bin/env python3
"""Stand-in of NVIDIA's dcgm-exporter (tests and the lab only: no GPU, no DCGM).

Serves the metrics of the lab's fake GPUs, the ones the stand-in nvidia-smi of
tests/fixtures/gpu-health describes (same UUIDs, PCI bus ids, model and driver),
on ``/metrics`` in Prometheus text format 0.0.4, with the real exporter's flags,
counters-file format, metric names and labels. Faults are injected through a JSON
file re-read on every scrape (``STANDIN_FAULT_FILE``, default
/var/lib/dcgm-standin/faults.json); tests/images/README.md describes its format.

Installed in the image as /usr/bin/dcgm-exporter; the standard library only, and
Python 3.11 (the lab base image's) or later.
"""

from __future__ import annotations

import argparse
import http.server
import json
import math
import os
import signal
import socket
import socketserver
import sys
import threading
import time
from dataclasses import dataclass, field

VERSION = "4.5.2-4.8.1"
DEFAULT_COLLECTORS = "/etc/dcgm-exporter/default-counters.csv"
DEFAULT_ADDRESS = ":9400"
DEFAULT_INTERVAL_MS = 30000
DEFAULT_XID_WINDOW_MS = 300000
DEFAULT_FAULT_FILE = "/var/lib/dcgm-standin/faults.json"
DEFAULT_GPUS = 8
MAX_GPUS = 256

# The GPUs of tests/fixtures/gpu-health (the stand-in nvidia-smi) and of the lab's
# package repository's driver.
MODEL_NAME = "NVIDIA H100 80GB HBM3"
DRIVER_VERSION = "580.95.05"
FB_TOTAL_MIB = 81559
BUS_NUMBERS = ("18", "2A", "3A", "5D", "9A", "AB", "BA", "DB")

METRIC_TYPES = ("gauge", "counter", "label")
XID_COUNT = "DCGM_EXP_XID_ERRORS_COUNT"
HEALTH_STATUS = "DCGM_EXP_GPU_HEALTH_STATUS"
EXP_FIELDS = (XID_COUNT, HEALTH_STATUS)
# DCGM's health watches, in the order the exporter lists them; their results.
WATCHES = ("PCIE", "NVLINK", "PMU", "MCU", "MEM", "SM", "INFOROM", "THERMAL", "POWER", "DRIVER")
HEALTH_RESULTS = {0: "pass", 10: "warn", 20: "fail"}
HEALTH_OK = "DCGM_FR_OK"

CONTENT_TYPE = "text/plain; version=0.0.4; charset=utf-8"


class ConfigError(Exception):
    """A setting or counters-file line the exporter refuses to start with."""


class FaultError(Exception):
    """A fault file that cannot be applied (served as healthy GPUs)."""


# --- the GPUs -------------------------------------------------------------------------------


@dataclass(frozen=True)
class Gpu:
    """One fake GPU: its identity as DCGM and nvidia-smi report it."""

    index: int

    @property
    def uuid(self) -> str:
        """UUID: those of the stand-in nvidia-smi (…1a00, …1a10, … …1a70), then onwards."""
        return f"GPU-4f1c7b2e-9d0a-4c8e-b6a1-0e5f3c2d{0x1A00 + 0x10 * self.index:04x}"

    @property
    def pci_bus_id(self) -> str:
        """PCI bus id: the stand-in nvidia-smi's for the first 8, then in further domains."""
        return f"{self.index // 8:08X}:{BUS_NUMBERS[self.index % 8]}:00.0"

    @property
    def device(self) -> str:
        """The device name the exporter gives it (its /dev/nvidiaN)."""
        return f"nvidia{self.index}"


def healthy_values(index: int, collected_s: float) -> dict[str, int | float | str]:
    """Every field the stand-in knows, with GPU ``index``'s healthy value.

    Integers are DCGM's int64 fields, floats its doubles, strings its string fields
    (usable as labels only). ``collected_s`` is the time covered by the collections
    so far: the energy counter grows with it, everything else is constant.
    """
    n = index % 8
    power = 118.25 + 4.5 * n
    fb_used = 4096 + 1024 * n
    util = 12 + 5 * n
    return {
        # Clocks, temperatures, power
        "DCGM_FI_DEV_SM_CLOCK": 1980,
        "DCGM_FI_DEV_MEM_CLOCK": 2619,
        "DCGM_FI_DEV_MEMORY_TEMP": 38 + n,
        "DCGM_FI_DEV_GPU_TEMP": 36 + n,
        "DCGM_FI_DEV_POWER_USAGE": power,
        "DCGM_FI_DEV_POWER_MGMT_LIMIT": 700.0,
        "DCGM_FI_DEV_TOTAL_ENERGY_CONSUMPTION": (
            4_000_000_000 + 37_000_000 * index + int(collected_s * power * 1000)
        ),
        # PCIe, NVLink
        "DCGM_FI_DEV_PCIE_REPLAY_COUNTER": 0,
        "DCGM_FI_DEV_NVLINK_BANDWIDTH_TOTAL": 0,
        # Utilisation, framebuffer
        "DCGM_FI_DEV_GPU_UTIL": util,
        "DCGM_FI_DEV_MEM_COPY_UTIL": 3 + 2 * n,
        "DCGM_FI_DEV_ENC_UTIL": 0,
        "DCGM_FI_DEV_DEC_UTIL": 0,
        "DCGM_FI_DEV_FB_TOTAL": FB_TOTAL_MIB,
        "DCGM_FI_DEV_FB_USED": fb_used,
        "DCGM_FI_DEV_FB_FREE": FB_TOTAL_MIB - fb_used,
        # Errors, violations
        "DCGM_FI_DEV_XID_ERRORS": 0,
        "DCGM_FI_DEV_ECC_SBE_VOL_TOTAL": 0,
        "DCGM_FI_DEV_ECC_DBE_VOL_TOTAL": 0,
        "DCGM_FI_DEV_ECC_SBE_AGG_TOTAL": 0,
        "DCGM_FI_DEV_ECC_DBE_AGG_TOTAL": 0,
        "DCGM_FI_DEV_RETIRED_SBE": 0,
        "DCGM_FI_DEV_RETIRED_DBE": 0,
        "DCGM_FI_DEV_RETIRED_PENDING": 0,
        "DCGM_FI_DEV_UNCORRECTABLE_REMAPPED_ROWS": 0,
        "DCGM_FI_DEV_CORRECTABLE_REMAPPED_ROWS": 0,
        "DCGM_FI_DEV_ROW_REMAP_FAILURE": 0,
        "DCGM_FI_DEV_ROW_REMAP_PENDING": 0,
        "DCGM_FI_DEV_POWER_VIOLATION": 0,
        "DCGM_FI_DEV_THERMAL_VIOLATION": 0,
        "DCGM_FI_DEV_SYNC_BOOST_VIOLATION": 0,
        "DCGM_FI_DEV_BOARD_LIMIT_VIOLATION": 0,
        "DCGM_FI_DEV_LOW_UTIL_VIOLATION": 0,
        "DCGM_FI_DEV_RELIABILITY_VIOLATION": 0,
        "DCGM_FI_DEV_CLOCK_THROTTLE_REASONS": 0,
        "DCGM_FI_DEV_VGPU_LICENSE_STATUS": 0,
        # Profiling (DCP) fields: ratios, and bytes per second
        "DCGM_FI_PROF_GR_ENGINE_ACTIVE": util / 100,
        "DCGM_FI_PROF_SM_ACTIVE": util / 110,
        "DCGM_FI_PROF_SM_OCCUPANCY": util / 200,
        "DCGM_FI_PROF_PIPE_TENSOR_ACTIVE": util / 150,
        "DCGM_FI_PROF_DRAM_ACTIVE": util / 120,
        "DCGM_FI_PROF_PIPE_FP64_ACTIVE": 0.0,
        "DCGM_FI_PROF_PIPE_FP32_ACTIVE": util / 400,
        "DCGM_FI_PROF_PIPE_FP16_ACTIVE": util / 300,
        "DCGM_FI_PROF_PCIE_TX_BYTES": 52_000_000 + 1_000_000 * n,
        "DCGM_FI_PROF_PCIE_RX_BYTES": 61_000_000 + 1_000_000 * n,
        "DCGM_FI_PROF_NVLINK_TX_BYTES": 0,
        "DCGM_FI_PROF_NVLINK_RX_BYTES": 0,
        # Static information (labels)
        "DCGM_FI_DRIVER_VERSION": DRIVER_VERSION,
        "DCGM_FI_NVML_VERSION": f"12.{DRIVER_VERSION}",
        "DCGM_FI_DEV_NAME": MODEL_NAME,
        "DCGM_FI_DEV_BRAND": "NVIDIA",
        "DCGM_FI_DEV_SERIAL": f"{1652922001000 + index}",
        "DCGM_FI_DEV_VBIOS_VERSION": "96.00.99.00.01",
        "DCGM_FI_DEV_MINOR_NUMBER": index,
    }


KNOWN_VALUES = healthy_values(0, 0)
KNOWN_FIELDS = frozenset(KNOWN_VALUES) | frozenset(EXP_FIELDS)


# --- the counters file ------------------------------------------------------------------------


@dataclass(frozen=True)
class Counter:
    """One line of the counters file: the DCGM field, its Prometheus type, its help."""

    name: str
    type: str
    help: str


def parse_counters(text: str, source: str) -> list[Counter]:
    """Parse a counters file as dcgm-exporter does, or raise ConfigError naming the line.

    Lines starting with ``#`` and blank lines are skipped; each other line is
    ``FIELD, type, help`` (the help is the rest after the second comma). The type is
    gauge, counter or label; the field must be one the stand-in knows (the real
    exporter refuses fields DCGM does not know), string fields only as labels, the
    exporter's own DCGM_EXP_* fields never as labels, and no field twice.
    """
    counters: list[Counter] = []
    seen: dict[str, int] = {}
    for lineno, line in enumerate(text.splitlines(), 1):
        stripped = line.strip()
        if not stripped or stripped.startswith("#"):
            continue
        where = f"{source}:{lineno}: {line.rstrip()!r}"
        parts = [part.strip() for part in line.split(",", 2)]
        if len(parts) < 3:
            raise ConfigError(
                f"malformed CSV record, {where}: expected 3 fields (FIELD, type, help)"
            )
        name, kind, help_text = parts
        if kind not in METRIC_TYPES:
            raise ConfigError(
                f"could not find Prometheus metric type {kind!r}, {where}: "
                f"expected one of {', '.join(METRIC_TYPES)}"
            )
        if name not in KNOWN_FIELDS:
            raise ConfigError(f"could not find DCGM field {name!r}, {where}")
        if name in EXP_FIELDS and kind == "label":
            raise ConfigError(f"{name} cannot be a label, {where}")
        if isinstance(KNOWN_VALUES.get(name), str) and kind != "label":
            raise ConfigError(f"{name} is a string field, usable only as a label, {where}")
        if name in seen:
            raise ConfigError(f"{name} listed twice (line {seen[name]} too), {where}")
        seen[name] = lineno
        counters.append(Counter(name, kind, help_text))
    return counters


def load_counters(path: str) -> list[Counter]:
    """Read and parse the counters file ``path`` (ConfigError when unreadable or refused)."""
    try:
        with open(path, encoding="utf-8") as handle:
            text = handle.read()
    except (OSError, UnicodeDecodeError) as problem:
        raise ConfigError(f"cannot read the counters file {path}: {problem}") from problem
    return parse_counters(text, path)


# --- the fault file ---------------------------------------------------------------------------


@dataclass
class GpuFault:
    """What the fault file injects on one GPU."""

    vanished: bool = False
    xids: list[int] = field(default_factory=list)
    xid_time: float | None = None
    values: dict[str, int | float] = field(default_factory=dict)
    health: dict[str, tuple[int, str]] = field(default_factory=dict)

    def xid_counts(self, now: float, window_ms: int) -> dict[int, int]:
        """The XIDs seen in the window ending ``now``, each with how often."""
        if self.xid_time is not None and now - self.xid_time > window_ms / 1000:
            return {}
        counts: dict[int, int] = {}
        for xid in self.xids:
            counts[xid] = counts.get(xid, 0) + 1
        return counts


# Fault keys that set a count (true counts as 1) on some fields.
COUNT_KEYS = {
    "ecc_dbe": ("DCGM_FI_DEV_ECC_DBE_VOL_TOTAL", "DCGM_FI_DEV_ECC_DBE_AGG_TOTAL"),
    "ecc_sbe": ("DCGM_FI_DEV_ECC_SBE_VOL_TOTAL", "DCGM_FI_DEV_ECC_SBE_AGG_TOTAL"),
    "retired_pending": ("DCGM_FI_DEV_RETIRED_PENDING",),
}
# Fault keys that set a flag (0 or 1).
FLAG_KEYS = {
    "remap_pending": "DCGM_FI_DEV_ROW_REMAP_PENDING",
    "remap_failure": "DCGM_FI_DEV_ROW_REMAP_FAILURE",
}
GPU_KEYS = frozenset(
    {"vanished", "xid", "xid_time", "temperature", "health", "fields", *COUNT_KEYS, *FLAG_KEYS}
)


def _is_number(value: object) -> bool:
    return isinstance(value, int | float) and not isinstance(value, bool) and math.isfinite(value)


def _count(value: object, where: str) -> int:
    if isinstance(value, bool):
        return int(value)
    if isinstance(value, int) and value >= 0:
        return value
    raise FaultError(f"{where}: expected true, false or a count (0 or more), not {value!r}")


def _flag(value: object, where: str) -> int:
    if isinstance(value, bool):
        return int(value)
    raise FaultError(f"{where}: expected true or false, not {value!r}")


def _xids(value: object, where: str) -> list[int]:
    items = value if isinstance(value, list) else [value]
    if not items or not all(
        isinstance(x, int) and not isinstance(x, bool) and x > 0 for x in items
    ):
        raise FaultError(f"{where}: expected an XID number or a list of them, not {value!r}")
    return items


def _health(value: object, where: str) -> dict[str, tuple[int, str]]:
    items = value if isinstance(value, list) else [value]
    results: dict[str, tuple[int, str]] = {}
    for item in items:
        if not isinstance(item, dict) or set(item) - {"watch", "status", "code"}:
            raise FaultError(f"{where}: expected {{watch, status, code}} or a list, not {item!r}")
        watch, status = item.get("watch"), item.get("status")
        code = item.get("code", HEALTH_OK if status == 0 else None)
        if watch not in WATCHES:
            raise FaultError(f"{where}: watch {watch!r} is not one of {', '.join(WATCHES)}")
        if status not in HEALTH_RESULTS or isinstance(status, bool):
            raise FaultError(f"{where}: status {status!r} of {watch} is not 0, 10 or 20")
        if not isinstance(code, str) or not code:
            raise FaultError(f"{where}: {watch} needs a code such as DCGM_FR_VOLATILE_DBE_DETECTED")
        if watch in results:
            raise FaultError(f"{where}: watch {watch} given twice")
        results[watch] = (status, code)
    return results


def _fields(value: object, where: str) -> dict[str, int | float]:
    if not isinstance(value, dict):
        raise FaultError(f"{where}: expected an object of DCGM field names and numbers")
    for name, number in value.items():
        if isinstance(KNOWN_VALUES.get(name), str) or name not in KNOWN_VALUES:
            raise FaultError(f"{where}: {name!r} is not a numeric DCGM field the stand-in knows")
        if not _is_number(number):
            raise FaultError(f"{where}.{name}: expected a number, not {number!r}")
    return dict(value)


def _values(entry: dict, where: str) -> dict[str, int | float]:
    """The field values an entry's counts, flags and temperature set."""
    values: dict[str, int | float] = {}
    for key, names in COUNT_KEYS.items():
        if key in entry:
            values.update(dict.fromkeys(names, _count(entry[key], f"{where}.{key}")))
    for key, name in FLAG_KEYS.items():
        if key in entry:
            values[name] = _flag(entry[key], f"{where}.{key}")
    if "temperature" in entry:
        if not _is_number(entry["temperature"]):
            raise FaultError(f"{where}.temperature: expected a number of degrees C")
        values["DCGM_FI_DEV_GPU_TEMP"] = entry["temperature"]
    return values


def parse_gpu_fault(entry: object, where: str) -> GpuFault:
    """One GPU's entry of the fault file (FaultError when it has an unknown key or value)."""
    if not isinstance(entry, dict):
        raise FaultError(f"{where}: expected an object, not {entry!r}")
    unknown = sorted(set(entry) - GPU_KEYS)
    if unknown:
        raise FaultError(f"{where}: unknown key(s) {', '.join(unknown)}")
    fault = GpuFault(
        vanished=bool(_flag(entry.get("vanished", False), f"{where}.vanished")),
        values=_values(entry, where),
    )
    if "xid" in entry:
        fault.xids = _xids(entry["xid"], f"{where}.xid")
        fault.values["DCGM_FI_DEV_XID_ERRORS"] = fault.xids[-1]
    if "xid_time" in entry:
        if not _is_number(entry["xid_time"]):
            raise FaultError(f"{where}.xid_time: expected Unix seconds, not {entry['xid_time']!r}")
        fault.xid_time = float(entry["xid_time"])
    if "health" in entry:
        fault.health = _health(entry["health"], f"{where}.health")
    if "fields" in entry:
        fault.values.update(_fields(entry["fields"], f"{where}.fields"))
    return fault


def parse_faults(text: str, gpu_count: int) -> dict[int, GpuFault]:
    """The fault file's content: GPU index -> its faults (empty text: none)."""
    if not text.strip():
        return {}
    try:
        document = json.loads(text)
    except ValueError as problem:
        raise FaultError(f"not JSON: {problem}") from problem
    if not isinstance(document, dict) or set(document) - {"gpus"}:
        raise FaultError('expected an object {"gpus": {"<index>": {...}}}')
    gpus = document.get("gpus", {})
    if not isinstance(gpus, dict):
        raise FaultError('"gpus": expected an object of GPU indexes')
    faults: dict[int, GpuFault] = {}
    for key, entry in gpus.items():
        if not (key.isdigit() and int(key) < gpu_count):
            raise FaultError(f"gpus: no GPU {key!r} (GPUs 0 to {gpu_count - 1})")
        faults[int(key)] = parse_gpu_fault(entry, f"gpus.{key}")
    return faults


class FaultSource:
    """The fault file, re-read on every scrape; logs each change of its content once."""

    def __init__(self, path: str, gpu_count: int) -> None:
        """Watch ``path`` for faults on GPUs 0 to ``gpu_count`` - 1."""
        self.path = path
        self.gpu_count = gpu_count
        self._lock = threading.Lock()
        self._last = ""

    def read(self) -> dict[int, GpuFault]:
        """The faults now: none when the file is missing, empty or invalid (logged)."""
        text = ""
        try:
            with open(self.path, encoding="utf-8") as handle:
                text = handle.read()
            faults = parse_faults(text, self.gpu_count)
        except FileNotFoundError:
            faults = {}
        except (OSError, UnicodeDecodeError, FaultError) as problem:
            reason = problem if isinstance(problem, FaultError) else f"cannot read it: {problem}"
            self._note(
                text or repr(problem), f"fault file {self.path}: {reason}; serving healthy GPUs"
            )
            return {}
        listed = ", ".join(str(index) for index in sorted(faults)) or "none"
        self._note(text, f"fault file {self.path}: faults on GPU(s) {listed}")
        return faults

    def _note(self, text: str, message: str) -> None:
        with self._lock:
            if text == self._last:
                return
            self._last = text
        log(message)


# --- the metrics ------------------------------------------------------------------------------


def _escape_label(value: str) -> str:
    return value.replace("\\", "\\\\").replace("\n", "\\n").replace('"', '\\"')


def _escape_help(value: str) -> str:
    return value.replace("\\", "\\\\").replace("\n", "\\n")


def _format(value: float | str) -> str:
    """A value as the exporter writes it: int64 fields as integers, doubles with %f."""
    if isinstance(value, float):
        return f"{value:f}"
    return str(value)


@dataclass(frozen=True)
class Scrape:
    """What one answer to /metrics is made of."""

    counters: list[Counter]
    gpus: list[Gpu]
    faults: dict[int, GpuFault]
    hostname: str
    xid_window_ms: int
    collected_s: float
    now: float


def render(scrape: Scrape) -> str:
    """The /metrics body: per non-label field, HELP, TYPE and one sample per listed GPU.

    Labels: gpu, UUID, pci_bus_id, device, modelName, Hostname, then the label
    fields and the metric's own labels, each group in name order (as the real
    exporter's template ranges over Go maps). A family without samples (no GPU
    listed) is left out, as the real exporter does.
    """
    label_counters = [c for c in scrape.counters if c.type == "label"]
    rows = []
    for gpu in scrape.gpus:
        fault = scrape.faults.get(gpu.index) or GpuFault()
        if fault.vanished:
            continue
        values = healthy_values(gpu.index, scrape.collected_s)
        values.update(fault.values)
        labels = (
            f'gpu="{gpu.index}",UUID="{gpu.uuid}",pci_bus_id="{gpu.pci_bus_id}",'
            f'device="{gpu.device}",modelName="{_escape_label(MODEL_NAME)}",'
            f'Hostname="{_escape_label(scrape.hostname)}"'
        )
        for counter in sorted(label_counters, key=lambda c: c.name):
            labels += f',{counter.name}="{_escape_label(_format(values[counter.name]))}"'
        rows.append((fault, values, labels))
    lines: list[str] = []
    for counter in scrape.counters:
        if counter.type == "label" or not rows:
            continue
        name = counter.name
        lines.append(f"# HELP {name} {_escape_help(counter.help)}")
        lines.append(f"# TYPE {name} {counter.type}")
        for fault, values, labels in rows:
            if name == XID_COUNT:
                counts = fault.xid_counts(scrape.now, scrape.xid_window_ms) or {0: 0}
                window = scrape.xid_window_ms
                lines.extend(
                    f'{name}{{{labels},window_size_in_ms="{window}",xid="{xid}"}} {count}'
                    for xid, count in counts.items()
                )
            elif name == HEALTH_STATUS:
                for watch in WATCHES:
                    status, code = fault.health.get(watch, (0, HEALTH_OK))
                    lines.append(
                        f'{name}{{{labels},health_error_code="{_escape_label(code)}",'
                        f'health_watch="{watch}"}} {status}'
                    )
            else:
                lines.append(f"{name}{{{labels}}} {_format(values[name])}")
    return "".join(f"{line}\n" for line in lines)


# --- the server -------------------------------------------------------------------------------


def log(message: str) -> None:
    """One line on stderr."""
    print(f"dcgm-exporter: {message}", file=sys.stderr, flush=True)


@dataclass
class Exporter:
    """The exporter's settings and state, shared by the request handlers."""

    counters: list[Counter]
    gpus: list[Gpu]
    faults: FaultSource
    interval_ms: int
    xid_window_ms: int
    started: float = field(default_factory=time.monotonic)

    def metrics(self) -> str:
        """Render /metrics now; values change once per collect interval, as DCGM's do."""
        collections = math.floor((time.monotonic() - self.started) / (self.interval_ms / 1000))
        return render(
            Scrape(
                counters=self.counters,
                gpus=self.gpus,
                faults=self.faults.read(),
                hostname=socket.gethostname(),
                xid_window_ms=self.xid_window_ms,
                collected_s=collections * self.interval_ms / 1000,
                now=time.time(),
            )
        )


class Handler(http.server.BaseHTTPRequestHandler):
    """GET /metrics and /health; anything else 404."""

    protocol_version = "HTTP/1.1"
    server_version = "dcgm-exporter-standin"
    exporter: Exporter

    def do_GET(self) -> None:
        """Answer a GET (or, through do_HEAD, a HEAD)."""
        path = self.path.split("?", 1)[0]
        if path == "/metrics":
            self._answer(200, self.exporter.metrics(), CONTENT_TYPE)
        elif path == "/health":
            self._answer(200, "OK", "text/plain; charset=utf-8")
        else:
            self._answer(404, "404 page not found\n", "text/plain; charset=utf-8")

    def do_HEAD(self) -> None:
        """Answer as GET, without the body."""
        self.do_GET()

    def _answer(self, status: int, body: str, content_type: str) -> None:
        data = body.encode("utf-8")
        self.send_response(status)
        self.send_header("Content-Type", content_type)
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        if self.command != "HEAD":
            self.wfile.write(data)

    def log_message(self, format: str, *args: object) -> None:
        """No access log (the real exporter writes none)."""


class Server(http.server.ThreadingHTTPServer):
    """The HTTP server; an IPv6 socket also takes IPv4 (":PORT" is every address)."""

    daemon_threads = True

    def server_bind(self) -> None:
        """Bind without HTTPServer's reverse lookup of the address."""
        if self.address_family == socket.AF_INET6:
            self.socket.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY, 0)
        socketserver.TCPServer.server_bind(self)
        self.server_name, self.server_port = self.server_address[:2]


def parse_address(text: str) -> tuple[str, int]:
    """``[HOST]:PORT`` (HOST may be bracketed IPv6) -> (host, port); empty host: all."""
    host, sep, port = text.rpartition(":")
    if not sep or not port.isdigit() or int(port) > 65535:
        raise ConfigError(f"invalid listen address {text!r}: expected [HOST]:PORT, e.g. :9400")
    if host.startswith("[") and host.endswith("]"):
        host = host[1:-1]
    return host, int(port)


def make_server(address: str, handler: type[Handler]) -> Server:
    """A server bound to ``address``: every address (IPv6 and IPv4) for ``:PORT``."""
    host, port = parse_address(address)
    if host:
        try:
            family, _, _, _, sockaddr = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM)[0]
        except OSError as problem:
            raise ConfigError(f"invalid listen address {address!r}: {problem}") from problem
        candidates = [(family, sockaddr[:2])]
    else:
        candidates = [(socket.AF_INET6, ("::", port)), (socket.AF_INET, ("0.0.0.0", port))]
    problem: OSError | None = None
    for family, sockaddr in candidates:
        server_class = type("BoundServer", (Server,), {"address_family": family})
        try:
            return server_class(sockaddr, handler)
        except OSError as failed:
            problem = failed
    raise ConfigError(f"cannot listen on {address}: {problem}")


# --- the command line -------------------------------------------------------------------------


def _env(name: str, default: object) -> str:
    """An environment variable's value; unset or empty: ``default``."""
    return os.environ.get(name) or str(default)


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    """The real exporter's flags the role uses, their environment variables and defaults."""
    parser = argparse.ArgumentParser(
        prog="dcgm-exporter",
        description="Stand-in of NVIDIA's dcgm-exporter (lab and tests only).",
        allow_abbrev=False,
    )
    parser.add_argument(
        "-f",
        "--collectors",
        default=_env("DCGM_EXPORTER_COLLECTORS", DEFAULT_COLLECTORS),
        help="path to the counters file [$DCGM_EXPORTER_COLLECTORS] (default %(default)s)",
    )
    parser.add_argument(
        "-a",
        "--address",
        default=_env("DCGM_EXPORTER_LISTEN", DEFAULT_ADDRESS),
        help="address to listen on, [HOST]:PORT [$DCGM_EXPORTER_LISTEN] (default %(default)s)",
    )
    parser.add_argument(
        "-c",
        "--collect-interval",
        default=_env("DCGM_EXPORTER_INTERVAL", DEFAULT_INTERVAL_MS),
        help="collection interval in ms [$DCGM_EXPORTER_INTERVAL] (default %(default)s)",
    )
    parser.add_argument(
        "-x",
        "--xid-count-window-size",
        default=_env("DCGM_EXPORTER_XID_COUNT_WINDOW_SIZE", DEFAULT_XID_WINDOW_MS),
        help="window of DCGM_EXP_XID_ERRORS_COUNT in ms "
        "[$DCGM_EXPORTER_XID_COUNT_WINDOW_SIZE] (default %(default)s)",
    )
    parser.add_argument(
        "-v", "--version", action="version", version=f"dcgm-exporter version {VERSION} (stand-in)"
    )
    return parser.parse_args(argv)


def positive_int(text: str, what: str) -> int:
    """``text`` as a positive integer (ConfigError naming ``what`` otherwise)."""
    value = int(text) if text.strip().isdigit() else 0
    if value <= 0:
        raise ConfigError(f"invalid value {text!r} for {what}: expected a positive integer")
    return value


def gpu_count() -> int:
    """How many GPUs the node has: STANDIN_GPUS (0 to MAX_GPUS; unset or empty: 8)."""
    text = _env("STANDIN_GPUS", DEFAULT_GPUS).strip()
    if not text.isdigit() or int(text) > MAX_GPUS:
        raise ConfigError(f"invalid STANDIN_GPUS {text!r}: expected 0 to {MAX_GPUS}")
    return int(text)


def _exit_on_signal(_signum: int, _frame: object) -> None:
    """Leave serve_forever through SystemExit (the process runs as PID 1)."""
    raise SystemExit(0)


def main(argv: list[str] | None = None) -> int:
    """Start the exporter (1 with a message on stderr when refused), serve until SIGTERM."""
    args = parse_args(argv)
    try:
        interval_ms = positive_int(args.collect_interval, "-c/--collect-interval")
        window_ms = positive_int(args.xid_count_window_size, "-x/--xid-count-window-size")
        count = gpu_count()
        counters = load_counters(args.collectors)
        fault_path = _env("STANDIN_FAULT_FILE", DEFAULT_FAULT_FILE)
        exporter = Exporter(
            counters=counters,
            gpus=[Gpu(index) for index in range(count)],
            faults=FaultSource(fault_path, count),
            interval_ms=interval_ms,
            xid_window_ms=window_ms,
        )
        handler = type("BoundHandler", (Handler,), {"exporter": exporter})
        server = make_server(args.address, handler)
    except ConfigError as problem:
        log(str(problem))
        return 1
    signal.signal(signal.SIGTERM, _exit_on_signal)
    signal.signal(signal.SIGINT, _exit_on_signal)
    bound = server.server_address
    log(
        f"stand-in {VERSION} listening on {args.address} ({bound[0]} port {bound[1]}); "
        f"counters file {args.collectors} ({len(counters)} fields); {count} GPUs; "
        f"collect interval {interval_ms} ms; XID window {window_ms} ms; fault file {fault_path}"
    )
    with server:
        try:
            server.serve_forever()
        finally:
            log("stopping")
    return 0


if __name__ == "__main__":
    sys.exit(main())
