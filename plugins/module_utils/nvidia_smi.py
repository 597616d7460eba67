"""Parse what nvidia-smi and sysfs say about NVIDIA GPUs.

Pure functions shared by the nvidia_gpu_facts module and its unit tests: no
Ansible imports, no side effects except reading the PCI device folder given.
"""

from __future__ import annotations

import os
import re

NVIDIA_PCI_VENDOR = "0x10de"
# PCI base class 0x03: display controller (0x0300 VGA, 0x0302 3D controller,
# which is what data-centre GPUs report). NVSwitches (0x0680) are not GPUs.
DISPLAY_CLASS_PREFIX = "0x03"

# The --query-gpu fields, in the order of the CSV columns.
QUERY_FIELDS = (
    "index",
    "name",
    "uuid",
    "pci.bus_id",
    "memory.total",
    "memory.used",
    "driver_version",
    "mig.mode.current",
)
QUERY_ARGS = (
    "--query-gpu=" + ",".join(QUERY_FIELDS),
    "--format=csv,noheader,nounits",
)
# What the GPU health checker (roles/gpu_health) reads every few seconds.
HEALTH_FIELDS = (
    "index",
    "uuid",
    "pci.bus_id",
    "retired_pages.pending",
    "ecc.errors.uncorrected.volatile.total",
    "temperature.gpu",
)
HEALTH_ARGS = (
    "--query-gpu=" + ",".join(HEALTH_FIELDS),
    "--format=csv,noheader,nounits",
)
# Row remapping (Ampere and later), read less often.
REMAP_FIELDS = ("gpu_bus_id", "remapped_rows.pending", "remapped_rows.failure")
REMAP_ARGS = (
    "--query-remapped-rows=" + ",".join(REMAP_FIELDS),
    "--format=csv,noheader,nounits",
)
# `nvidia-smi -q` prints the driver and CUDA versions in its header whatever
# the display filter; COMPUTE keeps the rest short.
HEADER_ARGS = ("-q", "-d", "COMPUTE")

# Values nvidia-smi prints for a field the GPU or driver cannot report.
_NOT_AVAILABLE = {
    "[N/A]",
    "N/A",
    "[Not Supported]",
    "[Unknown Error]",
    "[Insufficient Permissions]",
}

_CUDA_VERSION = re.compile(r"CUDA Version\s*:\s*([0-9]+(?:\.[0-9]+)*)")

# Error states, from the output of a failed nvidia-smi run.
_ERRORS = (
    ("driver_library_mismatch", re.compile(r"Driver/library version mismatch", re.IGNORECASE)),
    ("no_driver", re.compile(r"couldn't communicate with the NVIDIA driver", re.IGNORECASE)),
    ("no_devices", re.compile(r"No devices were found", re.IGNORECASE)),
    ("not_installed", re.compile(r"command not found|No such file or directory", re.IGNORECASE)),
)


class NvidiaSmiParseError(ValueError):
    """The output of nvidia-smi is not what the query asked for."""


def _value(raw: str) -> str | None:
    raw = raw.strip()
    return None if raw in _NOT_AVAILABLE or raw == "" else raw


def _number(raw: str, what: str = "a number") -> int | None:
    """Return a whole number nvidia-smi printed (None when it cannot report one)."""
    value = _value(raw)
    if value is None:
        return None
    try:
        return int(float(value))
    except ValueError as exc:
        raise NvidiaSmiParseError(f"not {what}: {raw!r}") from exc


def parse_query(text: str) -> list[dict]:
    """Parse `nvidia-smi --query-gpu=<QUERY_FIELDS> --format=csv,noheader,nounits`.

    One line per GPU, values separated by commas. A comma inside the GPU name
    (never seen, but not excluded) is kept in the name.
    """
    gpus = []
    for lineno, line in enumerate(text.splitlines(), start=1):
        if not line.strip():
            continue
        parts = [p.strip() for p in line.split(",")]
        extra = len(parts) - len(QUERY_FIELDS)
        if extra < 0:
            raise NvidiaSmiParseError(
                f"line {lineno}: {len(parts)} values, expected {len(QUERY_FIELDS)}: {line!r}"
            )
        if extra:
            parts = [parts[0], ", ".join(parts[1 : 2 + extra]), *parts[2 + extra :]]
        # Same length here (checked above); zip(strict=) needs Python 3.10, RHEL 9 has 3.9.
        raw = dict(zip(QUERY_FIELDS, parts))
        try:
            index = int(raw["index"])
        except ValueError as exc:
            raise NvidiaSmiParseError(f"line {lineno}: index is not a number: {line!r}") from exc
        mig = _value(raw["mig.mode.current"])
        gpus.append(
            {
                "index": index,
                "name": raw["name"],
                "uuid": raw["uuid"],
                "pci_bus_id": raw["pci.bus_id"],
                "memory_total_mib": _number(raw["memory.total"], "a number of MiB"),
                "memory_used_mib": _number(raw["memory.used"], "a number of MiB"),
                "driver_version": _value(raw["driver_version"]),
                "mig_mode": mig,
                "mig_enabled": mig == "Enabled",
            }
        )
    return sorted(gpus, key=lambda gpu: gpu["index"])


def _yes(raw: str) -> bool | None:
    value = _value(raw)
    return None if value is None else value.lower() in ("yes", "1", "true")


def _rows(text: str, fields: tuple) -> list[tuple[int, str, dict]]:
    """Return ``(line number, line, {field: value})`` of each line of a CSV answer.

    Every line must have exactly one value per field (no field of these
    queries holds a comma).
    """
    rows = []
    for lineno, line in enumerate(text.splitlines(), start=1):
        if not line.strip():
            continue
        parts = [p.strip() for p in line.split(",")]
        if len(parts) != len(fields):
            raise NvidiaSmiParseError(
                f"line {lineno}: {len(parts)} values, expected {len(fields)}: {line!r}"
            )
        rows.append((lineno, line, dict(zip(fields, parts))))
    return rows


#: Bracketed values that only say a field does not apply; any other (``[GPU requires
#: reset]``, ``[GPU is lost]``, ``[Unknown Error]``) says the GPU is in trouble.
_NOT_APPLICABLE = {"[N/A]", "N/A", "[Not Supported]", "[Insufficient Permissions]"}


def parse_health_query(text: str) -> list[dict]:
    """Parse `nvidia-smi <HEALTH_ARGS>`: what the GPU health checker reads every few seconds.

    One line per GPU. A field the GPU cannot report (``[N/A]``: retired pages on
    a GPU that remaps rows instead, ECC on a GPU without it) is None; a field
    that reports an error instead of a value is None too, and listed in the
    GPU's ``errors`` (``"<field>: [GPU requires reset]"``).
    """
    gpus = []
    for lineno, line, answered in _rows(text, HEALTH_FIELDS):
        errors = [
            f"{name}: {value}"
            for name, value in answered.items()
            if value.startswith("[") and value not in _NOT_APPLICABLE
        ]
        raw = {k: "[N/A]" if v.startswith("[") else v for k, v in answered.items()}
        try:
            index = int(raw["index"])
        except ValueError as exc:
            raise NvidiaSmiParseError(f"line {lineno}: index is not a number: {line!r}") from exc
        gpus.append(
            {
                "index": index,
                "uuid": raw["uuid"],
                "pci_bus_id": raw["pci.bus_id"],
                "retired_pages_pending": _yes(raw["retired_pages.pending"]),
                "ecc_uncorrected_volatile": _number(raw["ecc.errors.uncorrected.volatile.total"]),
                "temperature_c": _number(raw["temperature.gpu"]),
                "errors": errors,
            }
        )
    return sorted(gpus, key=lambda gpu: gpu["index"])


def parse_remapped_rows(text: str) -> dict[str, dict]:
    """Parse `nvidia-smi <REMAP_ARGS>`: ``{pci bus id: {pending, failure}}``.

    GPUs without row remapping (before Ampere) print nothing, or ``[N/A]``.
    """
    found = {}
    for _, _, raw in _rows(text, REMAP_FIELDS):
        found[raw["gpu_bus_id"]] = {
            "pending": _yes(raw["remapped_rows.pending"]),
            "failure": _yes(raw["remapped_rows.failure"]),
        }
    return found


def parse_cuda_version(text: str) -> str | None:
    """Return the CUDA version from the header of `nvidia-smi -q` (or of plain `nvidia-smi`)."""
    match = _CUDA_VERSION.search(text)
    return match.group(1) if match else None


def classify_failure(rc: int, output: str) -> str:
    """Name the state of a failed nvidia-smi run from its exit code and output."""
    if rc == 127:
        return "not_installed"
    for state, pattern in _ERRORS:
        if pattern.search(output):
            return state
    return "error"


def first_line(text: str) -> str:
    """Return the first non-empty line of a command's output (its message)."""
    for line in text.splitlines():
        if line.strip():
            return line.strip()
    return ""


def _read(path: str) -> str | None:
    try:
        with open(path, encoding="ascii") as handle:
            return handle.read().strip().lower()
    except OSError:
        return None


def scan_pci(devices_dir: str) -> list[dict]:
    """NVIDIA GPUs in a sysfs PCI device folder (/sys/bus/pci/devices).

    Returns one entry per device whose vendor is NVIDIA and whose class is a
    display controller, sorted by address. A missing folder means no devices.
    """
    try:
        names = sorted(os.listdir(devices_dir))
    except OSError:
        return []
    found = []
    for name in names:
        base = os.path.join(devices_dir, name)
        vendor = _read(os.path.join(base, "vendor"))
        pci_class = _read(os.path.join(base, "class"))
        if vendor != NVIDIA_PCI_VENDOR or not pci_class:
            continue
        if not pci_class.startswith(DISPLAY_CLASS_PREFIX):
            continue
        found.append(
            {
                "address": name,
                "vendor_id": vendor,
                "device_id": _read(os.path.join(base, "device")),
                "class": pci_class,
            }
        )
    return found
