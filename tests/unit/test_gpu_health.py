"""The GPU health checker (roles/gpu_health/files/ai_gpu_health.py): tiers, parsing, verdicts.

The pure parts against the XID catalogue's tiers and recorded kernel log and
nvidia-smi outputs (tests/fixtures/gpu-health), then the program itself, run
as the role installs it (beside nvidia_smi.py), with the stand-in nvidia-smi:
once per output set, and as a service whose verdict turns within two rounds
of an XID being logged.
"""

from __future__ import annotations

import contextlib
import ipaddress
import json
import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import threading
import time
import urllib.error
import urllib.request
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest
from plugin_loader import ROOT, load_module

MODULE_UTILS = ROOT / "plugins" / "module_utils"
CHECKER = ROOT / "roles" / "gpu_health" / "files" / "ai_gpu_health.py"
FIXTURES = ROOT / "tests" / "fixtures" / "gpu-health"
KERNEL_LOG = FIXTURES / "kernel-log"
FAKE_SMI = FIXTURES / "nvidia-smi"

sys.path.insert(0, str(MODULE_UTILS))
health = load_module(CHECKER)
nvidia_smi = health.nvidia_smi


# --- the XID catalogue's tiers ---------------------------------------------------------------


@pytest.mark.parametrize(
    ("xid", "tier"),
    [
        (48, "remove"),  # double-bit ECC error
        (62, "remove"),  # micro-controller halt
        (109, "remove"),  # context switch timeout: the catalogue resets the GPU
        (145, "remove"),  # NVLink5, sub-codes not decoded
        (64, "remove"),  # page retirement / row remapper failure
        (74, "remove"),  # NVLink
        (79, "remove"),  # fallen off the bus
        (95, "remove"),  # uncontained ECC error
        (119, "remove"),  # GSP RPC timeout
        (120, "remove"),  # GSP error
        (140, "remove"),  # unrecovered ECC error
        (13, "alert"),  # graphics engine exception: the application's
        (31, "alert"),  # MMU fault: the application's
        (43, "alert"),
        (45, "alert"),
        (63, "alert"),  # a row marked for remapping: recorded, not a failure
        (92, "alert"),
        (94, "alert"),  # contained ECC error: the application restarts
        (61, "alert"),  # unused in the current catalogue
        (122, "alert"),
        (1000, "alert"),  # not in the catalogue: reported, never silently dropped
    ],
)
def test_each_xid_has_the_tier_of_nvidia_s_immediate_action(xid, tier):
    assert health.xid_tier(xid)[0] == tier


def test_xid_154_removes_unless_the_recovery_action_went_back_to_none():
    reset = "GPU recovery action changed from 0x0 (None) to 0x1 (GPU Reset Required)"
    reboot = "GPU recovery action changed from 0x0 (None) to 0x2 (Node Reboot Required)"
    cleared = "GPU recovery action changed from 0x1 (GPU Reset Required) to 0x0 (None)"
    assert health.xid_tier(154, reset) == (
        "remove",
        "GPU recovery action changed to GPU Reset Required",
    )
    assert health.xid_tier(154, reboot)[0] == "remove"
    assert health.xid_tier(154, cleared)[0] == "alert"
    # The value decides, with or without a label; text not understood removes.
    assert health.xid_tier(154, "GPU recovery action changed from 0x0 to 0x4")[0] == "remove"
    assert health.xid_tier(154, "something else")[0] == "remove"


def test_every_tier_is_remove_or_alert_and_every_meaning_is_written():
    for xid, (tier, meaning) in health.XID_TIERS.items():
        assert tier in ("remove", "alert"), xid
        assert meaning.strip(), xid
    for code, (tier, meaning) in health.SMI_EXIT.items():
        assert tier in ("remove", "alert"), code
        assert meaning.strip(), code


# --- kernel log lines ------------------------------------------------------------------------


def test_an_xid_line_of_current_drivers_is_read():
    found = health.parse_xid(
        "NVRM: Xid (PCI:0000:9A:00): 79, pid='<unknown>', name=<unknown>, "
        "GPU has fallen off the bus."
    )
    assert found == {
        "pci": "0000:9a:00",
        "xid": 79,
        "text": "pid='<unknown>', name=<unknown>, GPU has fallen off the bus.",
        "tier": "remove",
        "meaning": "GPU has fallen off the bus",
    }


@pytest.mark.parametrize(
    ("line", "xid", "text"),
    [
        ("NVRM: Xid (PCI:0000:3b:00): 79, GPU has fallen off the bus.", 79, "GPU has fallen off"),
        (
            "NVRM: Xid (PCI:0000:3b:00 GPU-I:01 GPU-CI:00): 31, pid=88, name=python3, MMU Fault",
            31,
            "pid=88, name=python3, MMU Fault",
        ),
        (
            "NVRM: Xid (PCI:0000:3b:00): 45, pid=88, name=python3, Ch 00000010 caused by "
            "previous Xid 79",
            45,
            "pid=88",
        ),
    ],
)
def test_xid_lines_of_every_driver_generation_are_read(line, xid, text):
    found = health.parse_xid(line)
    assert (found["pci"], found["xid"]) == ("0000:3b:00", xid)
    assert found["text"].startswith(text)


def test_an_xid_line_of_older_drivers_and_dmesg_s_timestamps_are_read(tmp_path):
    log_file = tmp_path / "dmesg.log"
    shutil.copy(KERNEL_LOG / "dmesg-old-format.log", log_file)
    found = health.KernelLog(str(log_file)).read(now=5.0)
    assert [(x["pci"], x["xid"], x["tier"]) for x in found] == [("0000:9a:00", 79, "remove")]


@pytest.mark.parametrize(
    "message",
    [
        "NVRM: GPU 0000:9a:00.0: GPU has fallen off the bus.",
        "nvidia-persistenced[1843]: device 0000:9a:00.0 - persistence mode enabled.",
        "NVRM: Xid is not a number here: (PCI:0000:9a:00): seventy-nine",
        "",
    ],
)
def test_other_kernel_messages_are_not_xids(message):
    assert health.parse_xid(message) is None


def test_kmsg_records_and_their_continuation_lines():
    assert health.parse_kmsg_record("3,2211,5231789012,-;NVRM: Xid (PCI:0000:9a:00): 79, x") == (
        2211,
        5231.789012,
        "NVRM: Xid (PCI:0000:9a:00): 79, x",
    )
    assert health.parse_kmsg_record(" SUBSYSTEM=pci") is None


def test_nvidia_smi_s_and_the_kernel_s_addresses_of_one_gpu_agree():
    assert health.gpu_address("00000000:3A:00.0") == "0000:3a:00"
    assert health.gpu_address("0000:3a:00") == "0000:3a:00"
    assert health.gpu_address("PCI:0000:3a:00") == "pci:0000:3a:00"  # not an address: kept


def test_the_kernel_log_file_gives_each_xid_once_and_only_complete_lines(tmp_path):
    log_file = tmp_path / "kern.log"
    log_file.write_text((KERNEL_LOG / "xid-79.kmsg").read_text())
    log = health.KernelLog(str(log_file))
    first = log.read(now=100.0)
    assert [(x["xid"], x["pci"], x["at"]) for x in first] == [(79, "0000:9a:00", 100.0)]
    assert log.read(now=101.0) == []
    text = (KERNEL_LOG / "xid-13.kmsg").read_text()
    with log_file.open("a") as handle:
        handle.write(text[:40])  # a line still being written
    assert log.read(now=102.0) == []
    with log_file.open("a") as handle:
        handle.write(text[40:])
    assert [x["xid"] for x in log.read(now=103.0)] == [13]
    # Rotated (or truncated): read from the start of the new file.
    log_file.unlink()
    log_file.write_text((KERNEL_LOG / "xid-48.kmsg").read_text())
    assert [x["xid"] for x in log.read(now=104.0)] == [48, 63]


def test_a_file_truncated_in_place_gives_its_new_xids(tmp_path):
    log_file = tmp_path / "kern.log"
    log_file.write_text((KERNEL_LOG / "xid-79.kmsg").read_text())
    log = health.KernelLog(str(log_file))
    first = log.read(now=1.0)
    with log_file.open("r+") as handle:
        handle.truncate(0)
    assert log.read(now=2.0) == []
    log_file.write_text((KERNEL_LOG / "xid-79.kmsg").read_text())  # same inode, same offsets
    again = log.read(now=3.0)
    assert [x["xid"] for x in again] == [79]
    assert again[0]["key"] != first[0]["key"]


def test_a_missing_kernel_log_file_gives_nothing(tmp_path):
    assert health.KernelLog(str(tmp_path / "none")).read(now=1.0) == []


def test_dev_kmsg_records_are_timed_from_the_boot(tmp_path):
    # A FIFO stands in for the character device: read as records, non-blocking.
    fifo = tmp_path / "kmsg"
    os.mkfifo(fifo)
    uptime = tmp_path / "uptime"
    uptime.write_text("10000.50 20000.00\n")
    log = health.KernelLog(str(fifo), uptime_path=str(uptime))
    writer = os.open(fifo, os.O_RDWR | os.O_NONBLOCK)
    try:
        assert log.read(now=50000.5) == []
        record = (KERNEL_LOG / "xid-95.kmsg").read_text().splitlines()[0]
        os.write(writer, (record + "\n").encode())
        found = log.read(now=50000.5)
    finally:
        os.close(writer)
    assert [(x["xid"], x["tier"], x["key"]) for x in found] == [(95, "remove", "kmsg:4410")]
    # Booted at 50000.5 - 10000.5 = 40000; logged 9120.30045 s after.
    assert found[0]["at"] == pytest.approx(40000 + 9120.300450)


# --- nvidia-smi ------------------------------------------------------------------------------


def outputs(name: str) -> tuple[str, str, int]:
    folder = FIXTURES / "outputs" / name
    read = lambda n: (folder / n).read_text() if (folder / n).exists() else ""  # noqa: E731
    return read("gpu.csv"), read("remapped-rows.csv"), int(read("rc").strip() or 0)


def test_a_healthy_eight_gpu_answer_is_parsed():
    gpus = nvidia_smi.parse_health_query(outputs("healthy")[0])
    assert len(gpus) == 8
    assert gpus[2] == {
        "index": 2,
        "uuid": "GPU-4f1c7b2e-9d0a-4c8e-b6a1-0e5f3c2d1a20",
        "pci_bus_id": "00000000:3A:00.0",
        "retired_pages_pending": None,  # [N/A]: this GPU remaps rows instead
        "ecc_uncorrected_volatile": 0,
        "temperature_c": 32,
        "errors": [],
    }
    rows = nvidia_smi.parse_remapped_rows(outputs("healthy")[1])
    assert rows["00000000:DB:00.0"] == {"pending": False, "failure": False}


def test_an_answer_with_too_few_fields_is_an_error_that_quotes_the_line():
    with pytest.raises(nvidia_smi.NvidiaSmiParseError, match=r"line 1: 3 values, expected 6"):
        nvidia_smi.parse_health_query("0, GPU-1, 00000000:18:00.0\n")


@pytest.mark.parametrize(
    ("name", "tier", "says"),
    [
        ("exit-9", "remove", "exited 9: the NVIDIA driver is not loaded (NVIDIA-SMI has failed"),
        ("exit-12", "remove", "exited 12: the NVML shared library could not be found"),
        ("exit-15", "remove", "exited 15: the GPU has fallen off the bus"),
        ("exit-18", "remove", "exited 18: driver/library version mismatch (Failed to initialize"),
    ],
)
def test_nvidia_smi_s_exit_codes_name_the_fault(name, tier, says):
    folder = FIXTURES / "outputs" / name
    rc = int((folder / "rc").read_text())
    causes, alerts, gpus = health.smi_findings(rc, (folder / "message.txt").read_text(), "", 8)
    assert (len(causes), alerts, gpus) == (1, [], [])
    assert causes[0]["tier"] == tier and causes[0]["code"] == rc
    assert says in causes[0]["detail"]


def test_a_check_that_could_not_run_alerts_without_removing():
    causes, alerts, _ = health.smi_findings(4, "", "Insufficient Permissions", 8)
    assert causes == [] and alerts[0]["tier"] == "alert" and "exited 4" in alerts[0]["detail"]
    assert "(Insufficient Permissions)" in alerts[0]["detail"]
    causes, alerts, _ = health.smi_findings(77, "", "", 8)
    assert causes == [] and "does not document" in alerts[0]["detail"]


def test_a_hung_or_missing_nvidia_smi_removes():
    assert health.smi_findings(None, "", "", 8)[0][0]["detail"] == (
        "nvidia-smi did not answer in time"
    )
    assert health.smi_findings(127, "", "", 8)[0][0]["detail"] == "nvidia-smi is not installed"


def test_an_answer_not_understood_removes_when_gpus_are_expected():
    causes, alerts, _ = health.smi_findings(0, "garbage\n", "", 8)
    assert causes[0]["tier"] == "remove" and "not understood" in causes[0]["detail"]
    causes, alerts, _ = health.smi_findings(0, "garbage\n", "", 0)
    assert causes == [] and "not understood" in alerts[0]["detail"]


def test_a_warning_on_stderr_does_not_spoil_the_answer():
    causes, _, gpus = health.smi_findings(0, outputs("healthy")[0], "WARNING: infoROM\n", 8)
    assert (causes, len(gpus)) == ([], 8)


def test_a_gpu_that_reports_an_error_instead_of_a_value_removes():
    line = "3, GPU-x, 00000000:5D:00.0, [N/A], [GPU requires reset], [GPU requires reset]\n"
    gpus = nvidia_smi.parse_health_query(line)
    assert gpus[0]["ecc_uncorrected_volatile"] is None
    assert gpus[0]["errors"] == [
        "ecc.errors.uncorrected.volatile.total: [GPU requires reset]",
        "temperature.gpu: [GPU requires reset]",
    ]
    causes, _, _ = health.smi_findings(0, line, "", 1)
    assert [(c["kind"], c["gpu"]) for c in causes] == [("nvidia_smi", "0000:5d:00")]


def test_a_gpu_fewer_than_expected_removes():
    causes, _, gpus = health.smi_findings(0, outputs("gpu-missing")[0], "", 8)
    assert len(gpus) == 7
    assert [c["detail"] for c in causes] == ["7 GPU(s) found, 8 expected"]
    # Not checked when nothing is expected.
    assert health.smi_findings(0, outputs("gpu-missing")[0], "", 0)[0] == []


def test_a_double_bit_error_removes_and_names_the_gpu():
    causes, _, _ = health.smi_findings(0, outputs("dbe")[0], "", 8)
    assert [(c["kind"], c["gpu"]) for c in causes] == [("ecc_uncorrected", "0000:3a:00")]


def test_row_remapping_failure_removes_and_pending_alerts():
    rows = nvidia_smi.parse_remapped_rows(outputs("remap-failure")[1])
    causes, alerts = health.remap_findings(rows)
    assert [(c["kind"], c["gpu"]) for c in causes] == [("row_remap_failure", "0000:ab:00")]
    assert alerts == []
    causes, alerts = health.remap_findings(
        nvidia_smi.parse_remapped_rows(outputs("remap-pending")[1])
    )
    assert causes == [] and [(a["kind"], a["gpu"]) for a in alerts] == [
        ("row_remap_pending", "0000:5d:00")
    ]


# --- DCGM's health watches (dcgm-exporter's /metrics) ---------------------------------------

DCGM_LABELS = (
    'gpu="{gpu}",UUID="GPU-{gpu}",pci_bus_id="00000000:{bus}:00.0",device="nvidia{gpu}",'
    'modelName="NVIDIA H100 80GB HBM3",Hostname="gpu-1",DCGM_FI_DRIVER_VERSION="580.95.05"'
)


def dcgm_metrics(results: dict[tuple[int, str], tuple[int, str]]) -> str:
    """dcgm-exporter's health family for GPUs 0 and 1, every watch passing unless in ``results``."""
    lines = [
        "# HELP DCGM_FI_DEV_GPU_TEMP GPU temperature (in C).",
        "# TYPE DCGM_FI_DEV_GPU_TEMP gauge",
        f"DCGM_FI_DEV_GPU_TEMP{{{DCGM_LABELS.format(gpu=0, bus='18')}}} 41",
        "# HELP DCGM_EXP_GPU_HEALTH_STATUS Current DCGM-reported GPU health status.",
        "# TYPE DCGM_EXP_GPU_HEALTH_STATUS gauge",
    ]
    for gpu, bus in ((0, "18"), (1, "2A")):
        for watch in ("PCIE", "MEM", "THERMAL"):
            value, code = results.get((gpu, watch), (0, "DCGM_FR_OK"))
            labels = DCGM_LABELS.format(gpu=gpu, bus=bus)
            lines.append(
                f'DCGM_EXP_GPU_HEALTH_STATUS{{{labels},health_watch="{watch}",'
                f'health_error_code="{code}"}} {value}'
            )
    return "\n".join(lines) + "\n"


def test_a_failing_dcgm_health_watch_removes_and_a_warning_alerts():
    assert health.dcgm_health_findings(dcgm_metrics({})) == ([], [])
    causes, alerts = health.dcgm_health_findings(
        dcgm_metrics(
            {
                (1, "MEM"): (20, "DCGM_FR_VOLATILE_DBE_DETECTED"),
                (0, "THERMAL"): (10, "DCGM_FR_CLOCKS_EVENT_THERMAL"),
            }
        )
    )
    assert [(c["kind"], c["tier"], c["gpu"], c["watch"]) for c in causes] == [
        ("dcgm_health", "remove", "0000:2a:00", "MEM")
    ]
    assert "DCGM_FR_VOLATILE_DBE_DETECTED" in causes[0]["detail"]
    assert [(a["tier"], a["gpu"], a["watch"]) for a in alerts] == [
        ("alert", "0000:18:00", "THERMAL")
    ]
    result = health.verdict(
        "gpu-1",
        xids=[],
        acknowledged_at=0.0,
        smi=([], [], []),
        remap=([], []),
        expected_gpus=8,
        now=1000.0,
        dcgm=(causes, alerts),
    )
    assert result["healthy"] is False and result["causes"] == causes
    # Other families, comments and unparsable values are not health results.
    assert health.dcgm_health_findings('DCGM_EXP_GPU_HEALTH_STATUS{gpu="0"} NaNx\n# x\n') == (
        [],
        [],
    )


# --- verdicts and metrics --------------------------------------------------------------------


def xids_of(name: str, at: float) -> list[dict]:
    found = []
    for line in (KERNEL_LOG / name).read_text().splitlines():
        record = health.parse_kmsg_record(line)
        xid = record and health.parse_xid(record[2])
        if xid:
            found.append({**xid, "at": at, "key": f"{name}:{record[0]}"})
    return found


def judge(xids, acknowledged_at=0.0, smi=((), (), ()), now=1000.0):
    return health.verdict(
        "gpu-1",
        xids=xids,
        acknowledged_at=acknowledged_at,
        smi=tuple(list(part) for part in smi),
        remap=([], []),
        expected_gpus=8,
        now=now,
    )


def test_a_hardware_xid_makes_the_node_unhealthy_with_its_cause():
    result = judge(xids_of("xid-79.kmsg", at=990.0))
    assert result["healthy"] is False
    assert result["causes"] == [
        {
            "kind": "xid",
            "tier": "remove",
            "detail": "XID 79 (GPU has fallen off the bus): pid='<unknown>', name=<unknown>, "
            "GPU has fallen off the bus.",
            "gpu": "0000:9a:00",
            "xid": 79,
            "at": 990.0,
        }
    ]


@pytest.mark.parametrize("name", ["xid-13.kmsg", "xid-94.kmsg", "xid-154-cleared.kmsg"])
def test_an_application_xid_alerts_and_the_node_stays_in(name):
    result = judge(xids_of(name, at=990.0))
    assert result["healthy"] is True
    assert [a["kind"] for a in result["alerts"]] == ["xid"]
    # Listed for ten minutes.
    assert judge(xids_of(name, at=990.0), now=990.0 + 601)["alerts"] == []


@pytest.mark.parametrize("name", ["xid-48.kmsg", "xid-95.kmsg", "xid-154.kmsg"])
def test_ecc_and_recovery_action_xids_remove(name):
    assert judge(xids_of(name, at=990.0))["healthy"] is False


def test_a_hardware_fault_stays_until_acknowledged_and_only_older_ones_are():
    xids = xids_of("xid-79.kmsg", at=990.0)
    assert judge(xids, now=990.0 + 86400)["healthy"] is False  # a day later: still out
    assert judge(xids, acknowledged_at=995.0)["healthy"] is True
    later = xids_of("xid-95.kmsg", at=999.0)
    assert judge(xids + later, acknowledged_at=995.0)["causes"][0]["xid"] == 95


def metric_samples(text: str) -> dict[str, list[tuple[str, float]]]:
    """Check the Prometheus text format line by line; return {family: [(labels, value)]}."""
    families: dict[str, list] = {}
    declared: dict[str, str] = {}
    sample = re.compile(r'^([a-z_:][a-z0-9_:]*)(\{(?:[a-zA-Z_]\w*="(?:[^"\\]|\\.)*",?)*\})? (\S+)$')
    for line in text.splitlines():
        if line.startswith("# HELP "):
            name = line.split()[2]
            assert name not in families, f"{name} declared twice"
            families[name] = []
        elif line.startswith("# TYPE "):
            _, _, name, kind = line.split()
            assert kind in ("gauge", "counter") and name in families
            declared[name] = kind
        else:
            match = sample.match(line)
            assert match, f"not a sample line: {line!r}"
            assert match.group(1) in declared, f"{line!r} before its HELP and TYPE"
            families[match.group(1)].append((match.group(2) or "", float(match.group(3))))
    return families


def test_the_metrics_are_valid_text_format_and_say_what_the_verdict_says():
    result = judge(xids_of("xid-79.kmsg", at=990.0) + xids_of("xid-13.kmsg", at=991.0))
    text = health.metrics(result, {("79", "remove", "0000:9a:00"): 1}, 0, 0.012)
    families = metric_samples(text)
    assert families["ai_gpu_health_healthy"] == [("", 0.0)]
    assert sorted(families["ai_gpu_health_cause"]) == [
        ('{kind="xid",tier="alert",gpu="0000:18:00"}', 1.0),
        ('{kind="xid",tier="remove",gpu="0000:9a:00"}', 1.0),
    ]
    assert families["ai_gpu_health_xid_errors_total"] == [
        ('{xid="79",tier="remove",gpu="0000:9a:00"}', 1.0)
    ]
    assert families["ai_gpu_health_expected_gpus"] == [("", 8.0)]
    assert families["ai_gpu_health_nvidia_smi_exit_code"] == [("", 0.0)]
    # Two causes with the same labels: one series, counted (no duplicate series).
    twice = judge(xids_of("xid-13.kmsg", at=990.0) + xids_of("xid-13.kmsg", at=995.0))
    counted = metric_samples(health.metrics(twice, {}, 0, 0.01))["ai_gpu_health_cause"]
    assert counted == [('{kind="xid",tier="alert",gpu="0000:18:00"}', 2.0)]
    hung = health.metrics(judge([]), {}, None, 8.0)
    assert metric_samples(hung)["ai_gpu_health_nvidia_smi_exit_code"] == [("", -1.0)]


def test_an_unreadable_acknowledgement_counts_as_none(tmp_path):
    assert health.read_acknowledged(str(tmp_path / "none.json")) == 0.0
    (tmp_path / "bad.json").write_text("not json")
    assert health.read_acknowledged(str(tmp_path / "bad.json")) == 0.0
    (tmp_path / "ok.json").write_text('{"acknowledged_at": 1764650000.5}')
    assert health.read_acknowledged(str(tmp_path / "ok.json")) == 1764650000.5


# --- the program, as installed ---------------------------------------------------------------


@pytest.fixture
def installed(tmp_path, monkeypatch):
    """The checker as the role installs it (beside nvidia_smi.py), and the stand-ins' files.

    The stand-in nvidia-smi reads its output set from the state file, in the
    programs run here and in checkers made in this process (checker_for).
    """
    folder = tmp_path / "lib"
    folder.mkdir()
    shutil.copy(CHECKER, folder / CHECKER.name)
    shutil.copy(MODULE_UTILS / "nvidia_smi.py", folder / "nvidia_smi.py")
    state = tmp_path / "fake-nvidia-smi.state"
    state.write_text("healthy\n")
    (tmp_path / "kern.log").write_text("")
    (tmp_path / "textfile").mkdir()
    monkeypatch.setenv("FAKE_NVIDIA_SMI_STATE", str(state))
    env = {**os.environ, "FAKE_NVIDIA_SMI_STATE": str(state)}
    args = [
        sys.executable,
        str(folder / CHECKER.name),
        "--node=gpu-1",
        f"--nvidia-smi={FAKE_SMI}",
        f"--kernel-log={tmp_path / 'kern.log'}",
        f"--ack-file={tmp_path / 'ack.json'}",
        f"--textfile-dir={tmp_path / 'textfile'}",
        "--expected-gpus=8",
    ]
    return tmp_path, args, env


def check_once(installed, output_set: str) -> tuple[int, dict]:
    tmp, args, env = installed
    (tmp / "fake-nvidia-smi.state").write_text(output_set + "\n")
    done = subprocess.run(
        [*args, "--once", "--smi-timeout=2"], capture_output=True, text=True, env=env, check=False
    )
    return done.returncode, json.loads(done.stdout)


@pytest.mark.parametrize(
    ("output_set", "rc", "kinds"),
    [
        ("healthy", 0, []),
        ("gpu-missing", 1, ["gpu_count"]),
        ("dbe", 1, ["ecc_uncorrected"]),
        ("remap-failure", 1, ["row_remap_failure"]),
        ("remap-pending", 0, []),
        ("exit-9", 1, ["nvidia_smi"]),
        ("exit-12", 1, ["nvidia_smi"]),
        ("exit-15", 1, ["nvidia_smi"]),
        ("exit-18", 1, ["nvidia_smi"]),
        ("hang", 1, ["nvidia_smi"]),
    ],
)
def test_the_program_judges_each_recorded_output_once(installed, output_set, rc, kinds):
    code, result = check_once(installed, output_set)
    assert (code, [c["kind"] for c in result["causes"]]) == (rc, kinds), result
    prom = (installed[0] / "textfile" / "ai_gpu_health.prom").read_text()
    assert metric_samples(prom)["ai_gpu_health_healthy"] == [("", float(rc == 0))]


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def get_verdict(port: int) -> tuple[int, dict]:
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/verdict", timeout=2) as answer:
            return answer.status, json.load(answer)
    except urllib.error.HTTPError as refused:
        return refused.code, json.load(refused)


def wait_for(port: int, healthy: bool, seconds: float) -> tuple[float, dict]:
    """Seconds until the verdict says ``healthy``, and the verdict."""
    started = time.monotonic()
    while time.monotonic() - started < seconds:
        try:
            status, result = get_verdict(port)
        except OSError:
            status, result = None, {}
        if status == (200 if healthy else 503) and result.get("healthy") is healthy:
            return time.monotonic() - started, result
        time.sleep(0.05)
    raise AssertionError(f"the verdict did not turn healthy={healthy} in {seconds} s: {result}")


def test_the_service_turns_unhealthy_within_two_rounds_of_an_xid_and_back_once_acknowledged(
    installed,
):
    tmp, args, env = installed
    port = free_port()
    service = subprocess.Popen(
        [*args, "--listen=127.0.0.1", f"--port={port}", "--interval=0.5", "--smi-interval=0.5"],
        env=env,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        wait_for(port, healthy=True, seconds=10)
        with (tmp / "kern.log").open("a") as handle:
            handle.write((KERNEL_LOG / "xid-79.kmsg").read_text())
        took, result = wait_for(port, healthy=False, seconds=5)
        assert took <= 2 * 0.5 + 1.0, f"{took:.2f} s"
        assert result["causes"][0]["xid"] == 79
        # An application XID only alerts; an acknowledgement returns the node.
        with (tmp / "kern.log").open("a") as handle:
            handle.write((KERNEL_LOG / "xid-13.kmsg").read_text())
        deadline = time.monotonic() + 5
        while not get_verdict(port)[1]["alerts"]:
            assert time.monotonic() < deadline, "XID 13 never listed"
            time.sleep(0.05)
        status, result = get_verdict(port)
        assert (status, result["alerts"][0]["xid"]) == (503, 13)
        (tmp / "ack.json").write_text(json.dumps({"acknowledged_at": time.time()}))
        _, result = wait_for(port, healthy=True, seconds=5)
        assert result["alerts"] == []  # the 13 came before the acknowledgement too
        # nvidia-smi's own findings need none.
        (tmp / "fake-nvidia-smi.state").write_text("exit-18\n")
        wait_for(port, healthy=False, seconds=5)
        (tmp / "fake-nvidia-smi.state").write_text("healthy\n")
        wait_for(port, healthy=True, seconds=5)
    finally:
        service.send_signal(signal.SIGTERM)
        _, log = service.communicate(timeout=10)
    assert "UNHEALTHY: XID 79 (GPU has fallen off the bus)" in log
    assert "UNHEALTHY: nvidia-smi exited 18: driver/library version mismatch" in log


@contextlib.contextmanager
def serving(installed, *options: str):
    """The checker as a service on a free port, once healthy: yields the port, stops it after."""
    _, args, env = installed
    port = free_port()
    service = subprocess.Popen(
        [*args, f"--port={port}", *options], env=env, stderr=subprocess.DEVNULL
    )
    try:
        wait_for(port, healthy=True, seconds=10)
        yield port
    finally:
        service.send_signal(signal.SIGTERM)
        service.communicate(timeout=10)


def test_an_nvidia_smi_answer_renews_the_verdict_at_once_not_at_the_next_round(installed):
    # A round every 30 s: only nvidia-smi's answer (every 0.5 s) can renew the verdict.
    with serving(installed, "--listen=127.0.0.1", "--interval=30", "--smi-interval=0.5") as port:
        (installed[0] / "fake-nvidia-smi.state").write_text("exit-15\n")
        took, result = wait_for(port, healthy=False, seconds=10)
        assert took <= 0.5 + 1.0, f"{took:.2f} s"
        assert result["causes"][0]["kind"] == "nvidia_smi"


@pytest.mark.parametrize(
    ("client", "allowed", "may"),
    [
        ("127.0.0.1", [], True),
        ("::1", [], True),
        ("10.0.0.5", [], False),
        ("10.0.0.5", ["10.0.0.5/32"], True),
        ("10.0.0.6", ["10.0.0.5/32"], False),
        ("10.20.3.4", ["10.20.0.0/16"], True),
        ("::ffff:10.0.0.5", ["10.0.0.5/32"], True),
        ("2001:db8::5", ["2001:db8::/64"], True),
        ("2001:db8:1::5", ["2001:db8::/64"], False),
        ("fe80::1%eth0", ["fe80::/64"], True),
        ("not-an-address", ["0.0.0.0/0"], False),
        ("10.0.0.5", None, True),
    ],
)
def test_only_loopback_and_the_allowed_networks_read_the_verdict(client, allowed, may):
    networks = None if allowed is None else [ipaddress.ip_network(n) for n in allowed]
    assert health.may_read(client, networks) is may


def own_address() -> str | None:
    """An address of this machine that is not loopback (none: the test is skipped)."""
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as probe:
        try:
            probe.connect(("192.0.2.1", 9))
        except OSError:
            return None
        address = probe.getsockname()[0]
    return None if address.startswith("127.") else address


def test_a_reader_outside_the_allowed_networks_gets_403_and_nothing_of_the_node(installed):
    address = own_address()
    if not address:
        pytest.skip("this machine has no address besides loopback")
    elsewhere = next(
        n
        for n in ("198.51.100.0/24", "203.0.113.0/24")
        if ipaddress.ip_address(address) not in ipaddress.ip_network(n)
    )
    # Loopback may read it (the service is seen healthy), this machine's address may not.
    with serving(installed, "--listen=0.0.0.0", f"--allow={elsewhere}") as port:
        with pytest.raises(urllib.error.HTTPError) as refused:
            urllib.request.urlopen(f"http://{address}:{port}/verdict", timeout=2)
        assert refused.value.code == 403
        assert b"gpu-1" not in refused.value.read()
    with (
        serving(installed, "--listen=0.0.0.0", f"--allow={address}") as port,
        urllib.request.urlopen(f"http://{address}:{port}/verdict", timeout=2) as answer,
    ):
        assert json.load(answer)["node"] == "gpu-1"


def test_bad_options_are_refused_with_their_name(installed):
    _, args, env = installed
    done = subprocess.run(
        [*args, "--interval=0"], capture_output=True, text=True, env=env, check=False
    )
    assert done.returncode == 2
    assert "--interval, --smi-interval and --smi-timeout must be above 0" in done.stderr
    done = subprocess.run(
        [*args, "--allow=10.0.0.300"], capture_output=True, text=True, env=env, check=False
    )
    assert done.returncode == 2
    assert "--allow 10.0.0.300: not an IP address or network" in done.stderr


def checker_for(installed, *extra: str):
    tmp, args, _ = installed
    return health.Checker(
        health.options_from([*args[2:], f"--state-file={tmp / 'state.json'}", *extra])
    )


def test_an_acknowledged_fault_stays_acknowledged_when_the_checker_restarts(installed):
    tmp, _, _ = installed
    checker = checker_for(installed)
    checker.prime()
    (tmp / "kern.log").write_text((KERNEL_LOG / "xid-79.kmsg").read_text())
    assert checker.round(time.time())["healthy"] is False
    (tmp / "ack.json").write_text(json.dumps({"acknowledged_at": time.time()}))
    assert checker.round(time.time())["healthy"] is True
    restarted = checker_for(installed)
    restarted.prime()
    assert restarted.round(time.time())["healthy"] is True
    # And an unacknowledged one survives the restart.
    with (tmp / "kern.log").open("a") as handle:
        handle.write((KERNEL_LOG / "xid-95.kmsg").read_text())
    assert restarted.round(time.time())["healthy"] is False
    again = checker_for(installed)
    again.prime()
    assert again.round(time.time())["causes"][0]["xid"] == 95


def test_a_hung_nvidia_smi_never_stops_the_rounds_and_removes_the_node(installed):
    tmp, _, _ = installed
    (tmp / "fake-nvidia-smi.state").write_text("hang\n")
    checker = checker_for(installed, "--smi-timeout=0.5", "--smi-interval=0.1")
    started = time.monotonic()
    first = checker.round(time.time())
    assert time.monotonic() - started < 0.3, "a round waited for nvidia-smi"
    assert first["healthy"] is True  # no answer yet
    time.sleep(1.2)
    result = checker.round(time.time())
    assert [c["detail"] for c in result["causes"]] == ["nvidia-smi did not answer in time"]


def test_a_verdict_that_stopped_renewing_is_unhealthy(installed):
    checker = checker_for(installed, "--interval=1", "--smi-interval=1")
    checker.prime()
    now = time.time()
    assert checker.round(now)["healthy"] is True
    assert checker.current(now + 2)["healthy"] is True
    stale = checker.current(now + 10)
    assert stale["healthy"] is False and stale["causes"][-1]["kind"] == "checker"
    assert health.Checker(checker.options).current(now)["healthy"] is False  # never checked


def test_an_unwritable_textfile_folder_is_logged_once_and_the_checks_go_on(installed, capsys):
    tmp, _, _ = installed
    checker = checker_for(installed, f"--textfile-dir={tmp / 'missing'}")
    checker.prime()
    assert checker.round(time.time())["healthy"] is True
    assert checker.round(time.time())["healthy"] is True
    assert capsys.readouterr().err.count("cannot write") == 1
    assert list(tmp.glob("missing*")) == []


class DcgmStandIn:
    """A loopback HTTP server that answers /metrics with ``self.text`` (dcgm-exporter's part)."""

    def __init__(self):
        """Serve on a free loopback port, in a thread."""
        owner = self
        self.text = dcgm_metrics({})

        class Handler(BaseHTTPRequestHandler):
            def do_GET(self):
                body = owner.text.encode()
                self.send_response(200)
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            def log_message(self, *args):
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}/metrics"
        threading.Thread(target=self.server.serve_forever, daemon=True).start()


def test_the_program_reads_dcgm_health_and_a_silent_exporter_keeps_the_last_findings(installed):
    tmp, args, env = installed
    dcgm = DcgmStandIn()
    once = [
        *args,
        "--once",
        "--smi-timeout=2",
        f"--dcgm-url={dcgm.url}",
        f"--state-file={tmp / 'state.json'}",
    ]

    def check() -> tuple[int, dict, str]:
        done = subprocess.run(once, capture_output=True, text=True, env=env, check=False)
        return done.returncode, json.loads(done.stdout), done.stderr

    def dcgm_up() -> list:
        prom = (tmp / "textfile" / "ai_gpu_health.prom").read_text()
        return metric_samples(prom)["ai_gpu_health_dcgm_up"]

    try:
        assert check()[0] == 0
        assert dcgm_up() == [("", 1.0)]
        dcgm.text = dcgm_metrics({(0, "PCIE"): (20, "DCGM_FR_PCI_REPLAY_RATE")})
        rc, result, _ = check()
        assert rc == 1
        assert [(c["kind"], c["gpu"], c["watch"]) for c in result["causes"]] == [
            ("dcgm_health", "0000:18:00", "PCIE")
        ]
        # An answer without health watches (an older exporter, another counters
        # file) is not a healthy one: the last findings stand.
        dcgm.text = "# HELP DCGM_FI_DEV_GPU_TEMP x\n"
        rc, result, stderr = check()
        assert rc == 1 and "without DCGM_EXP_GPU_HEALTH_STATUS" in stderr
        assert dcgm_up() == [("", 0.0)]
    finally:
        dcgm.server.shutdown()
        dcgm.server.server_close()
    # The exporter gone (a restart, a crash): the failing watch still stands,
    # across restarts of the checker (its state file), and the metric says so.
    rc, result, stderr = check()
    assert rc == 1 and "cannot be read" in stderr, stderr
    assert [c["kind"] for c in result["causes"]] == ["dcgm_health"]
    assert dcgm_up() == [("", 0.0)]
    # Once DCGM says the watch passes, the node is healthy again.
    dcgm = DcgmStandIn()
    once[once.index(next(a for a in once if a.startswith("--dcgm-url=")))] = (
        f"--dcgm-url={dcgm.url}"
    )
    try:
        assert check()[0] == 0
    finally:
        dcgm.server.shutdown()
        dcgm.server.server_close()
