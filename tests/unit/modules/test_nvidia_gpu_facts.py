"""Unit tests of the nvidia_gpu_facts module and its parser (module_utils/nvidia_smi.py)."""

from __future__ import annotations

import os
import stat

import pytest
from conftest import FIXTURES, PLUGINS, load, run_main

nvidia_smi = load("ansible.module_utils.nvidia_smi", PLUGINS / "module_utils" / "nvidia_smi.py")
module = load("nvidia_gpu_facts_under_test", PLUGINS / "modules" / "nvidia_gpu_facts.py")

SMI = FIXTURES / "nvidia-smi"


def recorded(name: str) -> str:
    return (SMI / name).read_text(encoding="utf-8")


def fake_run(query: tuple[int, str], header: tuple[int, str] | None = None):
    """Return a run(argv) that answers the query and the -q header with recorded outputs."""
    calls = []

    def run(argv):
        calls.append(argv)
        if any(arg.startswith("--query-gpu=") for arg in argv):
            return query[0], query[1], ""
        assert header is not None, f"unexpected call {argv}"
        return header[0], header[1], ""

    run.calls = calls
    return run


# --- parsing --------------------------------------------------------------------


def test_single_gpu_is_parsed():
    gpus = nvidia_smi.parse_query(recorded("single-gpu.query.txt"))
    assert gpus == [
        {
            "index": 0,
            "name": "NVIDIA H100 80GB HBM3",
            "uuid": "GPU-5c3f2b8e-9a41-4d7e-8b2c-6f1e0a9d3c47",
            "pci_bus_id": "00000000:18:00.0",
            "memory_total_mib": 81559,
            "memory_used_mib": 0,
            "driver_version": "580.95.05",
            "mig_mode": "Disabled",
            "mig_enabled": False,
        }
    ]


def test_eight_gpus_are_parsed_in_index_order():
    gpus = nvidia_smi.parse_query(recorded("eight-gpus.query.txt"))
    assert [g["index"] for g in gpus] == list(range(8))
    assert len({g["uuid"] for g in gpus}) == 8
    assert [g["pci_bus_id"][9:11] for g in gpus] == ["18", "2A", "3A", "5D", "9A", "AB", "BA", "DB"]
    assert {g["memory_total_mib"] for g in gpus} == {81559}
    assert gpus[3]["memory_used_mib"] == 71234


def test_mig_mode_is_reported_per_gpu():
    gpus = nvidia_smi.parse_query(recorded("mig.query.txt"))
    assert [(g["mig_mode"], g["mig_enabled"]) for g in gpus] == [
        ("Enabled", True),
        ("Disabled", False),
    ]


def test_not_available_values_become_null():
    line = "0, Tesla T4, GPU-1, 00000000:00:1E.0, [N/A], [Not Supported], 580.95.05, [N/A]\n"
    (gpu,) = nvidia_smi.parse_query(line)
    assert gpu["memory_total_mib"] is None
    assert gpu["memory_used_mib"] is None
    assert gpu["mig_mode"] is None
    assert gpu["mig_enabled"] is False


def test_a_comma_in_the_name_stays_in_the_name():
    line = "0, Odd, Name, GPU-1, 00000000:01:00.0, 1024, 0, 580.95.05, Disabled"
    (gpu,) = nvidia_smi.parse_query(line)
    assert gpu["name"] == "Odd, Name"
    assert gpu["uuid"] == "GPU-1"


@pytest.mark.parametrize(
    "text",
    ["0, NVIDIA H100, GPU-1, 00000000:01:00.0", "x, A, B, C, 1, 2, 3, Disabled"],
)
def test_output_that_is_not_the_query_fails_to_parse(text):
    with pytest.raises(nvidia_smi.NvidiaSmiParseError):
        nvidia_smi.parse_query(text)


@pytest.mark.parametrize(
    ("name", "version"),
    [
        ("single-gpu.header.txt", "13.0"),
        ("eight-gpus.header.txt", "13.0"),
        ("mig.header.txt", "13.0"),
    ],
)
def test_cuda_version_comes_from_the_header(name, version):
    assert nvidia_smi.parse_cuda_version(recorded(name)) == version


def test_cuda_version_of_the_plain_table_header():
    header = "| NVIDIA-SMI 580.95.05    Driver Version: 580.95.05      CUDA Version: 13.0     |"
    assert nvidia_smi.parse_cuda_version(header) == "13.0"
    assert nvidia_smi.parse_cuda_version("no version here") is None


@pytest.mark.parametrize(
    ("name", "rc", "state"),
    [
        ("driver-library-mismatch.txt", 18, "driver_library_mismatch"),
        ("no-driver.txt", 9, "no_driver"),
        ("no-devices.txt", 6, "no_devices"),
        ("command-not-found.txt", 127, "not_installed"),
        ("command-not-found.txt", 1, "not_installed"),
    ],
)
def test_failures_are_classified(name, rc, state):
    assert nvidia_smi.classify_failure(rc, recorded(name)) == state


def test_an_unknown_failure_is_an_error():
    assert nvidia_smi.classify_failure(255, "Unable to determine the device handle") == "error"


# --- query_gpus: what the module returns for each answer of nvidia-smi ---------------


@pytest.mark.parametrize(("prefix", "count"), [("single-gpu", 1), ("eight-gpus", 8), ("mig", 2)])
def test_query_gpus_with_a_working_driver(prefix, count):
    run = fake_run((0, recorded(f"{prefix}.query.txt")), (0, recorded(f"{prefix}.header.txt")))
    facts = module.query_gpus(run, "/usr/bin/nvidia-smi")
    assert facts["nvidia_smi"] == {"state": "ok", "path": "/usr/bin/nvidia-smi", "rc": 0, "msg": ""}
    assert facts["gpu_count"] == count
    assert facts["driver_version"] == "580.95.05"
    assert facts["cuda_version"] == "13.0"
    assert run.calls[0] == [
        "/usr/bin/nvidia-smi",
        "--query-gpu=index,name,uuid,pci.bus_id,memory.total,memory.used,driver_version,mig.mode.current",
        "--format=csv,noheader,nounits",
    ]
    assert run.calls[1] == ["/usr/bin/nvidia-smi", "-q", "-d", "COMPUTE"]


def test_query_gpus_when_the_header_query_fails_still_reports_gpus():
    run = fake_run((0, recorded("single-gpu.query.txt")), (3, ""))
    facts = module.query_gpus(run, "/usr/bin/nvidia-smi")
    assert facts["gpu_count"] == 1
    assert facts["cuda_version"] is None


@pytest.mark.parametrize(
    ("name", "rc", "state", "msg"),
    [
        (
            "driver-library-mismatch.txt",
            18,
            "driver_library_mismatch",
            "Failed to initialize NVML: Driver/library version mismatch",
        ),
        ("no-driver.txt", 9, "no_driver", "NVIDIA-SMI has failed because it couldn't"),
        ("no-devices.txt", 6, "no_devices", "No devices were found"),
        (
            "command-not-found.txt",
            127,
            "not_installed",
            "bash: line 1: nvidia-smi: command not found",
        ),
    ],
)
def test_query_gpus_reports_why_nvidia_smi_failed(name, rc, state, msg):
    run = fake_run((rc, recorded(name)))
    facts = module.query_gpus(run, "/usr/bin/nvidia-smi")
    assert facts["nvidia_smi"]["state"] == state
    assert facts["nvidia_smi"]["rc"] == rc
    assert facts["nvidia_smi"]["msg"].startswith(msg)
    assert facts["gpus"] == []
    assert facts["gpu_count"] == 0
    assert facts["driver_version"] is None
    assert len(run.calls) == 1


def test_query_gpus_without_nvidia_smi_runs_nothing():
    run = fake_run((0, ""))
    facts = module.query_gpus(run, None)
    assert facts["nvidia_smi"]["state"] == "not_installed"
    assert facts["nvidia_smi"]["path"] is None
    assert run.calls == []


# --- PCI scan --------------------------------------------------------------------


def make_device(root, address, vendor, device, pci_class):
    path = root / address
    path.mkdir(parents=True)
    (path / "vendor").write_text(f"{vendor}\n")
    (path / "device").write_text(f"{device}\n")
    (path / "class").write_text(f"{pci_class}\n")


def test_scan_pci_finds_nvidia_display_controllers_only(tmp_path):
    make_device(tmp_path, "0000:00:02.0", "0x8086", "0x46a6", "0x030000")  # Intel VGA
    make_device(tmp_path, "0000:18:00.0", "0x10de", "0x2330", "0x030200")  # H100 (3D)
    make_device(tmp_path, "0000:01:00.0", "0x10DE", "0x2204", "0x030000")  # RTX 3090 (VGA)
    make_device(tmp_path, "0000:05:00.0", "0x10de", "0x22a3", "0x068000")  # NVSwitch
    make_device(tmp_path, "0000:01:00.1", "0x10de", "0x1aef", "0x040300")  # its HDMI audio
    make_device(tmp_path, "0000:00:03.0", "0x1af4", "0x1000", "0x020000")  # virtio net
    found = nvidia_smi.scan_pci(str(tmp_path))
    assert found == [
        {
            "address": "0000:01:00.0",
            "vendor_id": "0x10de",
            "device_id": "0x2204",
            "class": "0x030000",
        },
        {
            "address": "0000:18:00.0",
            "vendor_id": "0x10de",
            "device_id": "0x2330",
            "class": "0x030200",
        },
    ]


def test_scan_pci_of_a_missing_folder_is_empty(tmp_path):
    assert nvidia_smi.scan_pci(str(tmp_path / "absent")) == []


def test_scan_pci_skips_devices_with_unreadable_files(tmp_path):
    (tmp_path / "0000:00:04.0").mkdir()
    assert nvidia_smi.scan_pci(str(tmp_path)) == []


# --- the module as Ansible runs it --------------------------------------------------


def fake_nvidia_smi(tmp_path, prefix: str | None, failure: tuple[str, int] | None = None) -> str:
    """Write an executable that prints recorded outputs like nvidia-smi would."""
    path = tmp_path / "nvidia-smi"
    if failure:
        name, rc = failure
        body = f'cat "{SMI / name}"\nexit {rc}\n'
    else:
        body = (
            'case "$1" in\n'
            f'  --query-gpu=*) cat "{SMI / (prefix + ".query.txt")}" ;;\n'
            f'  -q) cat "{SMI / (prefix + ".header.txt")}" ;;\n'
            "  *) exit 2 ;;\n"
            "esac\n"
        )
    path.write_text("#!/bin/sh\n" + body)
    path.chmod(path.stat().st_mode | stat.S_IXUSR)
    return str(path)


def run_module(args: dict, capsys) -> dict:
    return run_main(module, args, capsys)


def test_module_reports_gpus_through_a_real_nvidia_smi_run(tmp_path, capsys):
    pci = tmp_path / "pci"
    make_device(pci, "0000:18:00.0", "0x10de", "0x2330", "0x030200")
    smi = fake_nvidia_smi(tmp_path, "eight-gpus")
    result = run_module({"nvidia_smi_path": smi, "pci_devices_dir": str(pci)}, capsys)
    facts = result["ansible_facts"]["nvidia_gpu"]
    assert result["changed"] is False
    assert facts["nvidia_smi"]["state"] == "ok"
    assert facts["gpu_count"] == 8
    assert facts["cuda_version"] == "13.0"
    assert facts["pci_devices"][0]["address"] == "0000:18:00.0"


def test_module_reports_a_mismatch_without_failing(tmp_path, capsys):
    smi = fake_nvidia_smi(tmp_path, None, ("driver-library-mismatch.txt", 18))
    result = run_module({"nvidia_smi_path": smi, "pci_devices_dir": str(tmp_path)}, capsys)
    facts = result["ansible_facts"]["nvidia_gpu"]
    assert "failed" not in result
    assert facts["nvidia_smi"]["state"] == "driver_library_mismatch"
    assert facts["nvidia_smi"]["rc"] == 18


def test_module_with_a_missing_nvidia_smi_path(tmp_path, capsys):
    args = {"nvidia_smi_path": str(tmp_path / "nope"), "pci_devices_dir": str(tmp_path)}
    facts = run_module(args, capsys)["ansible_facts"]["nvidia_gpu"]
    assert facts["nvidia_smi"]["state"] == "not_installed"
    assert facts["pci_devices"] == []


def test_module_finds_nothing_on_an_empty_path(tmp_path, capsys, monkeypatch):
    monkeypatch.setenv("PATH", str(tmp_path))
    monkeypatch.setattr(module.AnsibleModule, "get_bin_path", lambda *a, **k: None)
    facts = run_module({"pci_devices_dir": str(tmp_path)}, capsys)["ansible_facts"]["nvidia_gpu"]
    assert facts["nvidia_smi"] == {
        "state": "not_installed",
        "path": None,
        "rc": None,
        "msg": "nvidia-smi was not found",
    }


def test_module_only_scans_pci_when_asked(tmp_path, capsys):
    smi = fake_nvidia_smi(tmp_path, None, ("no-driver.txt", 9))
    args = {"nvidia_smi_path": smi, "pci_devices_dir": str(tmp_path), "query_nvidia_smi": False}
    facts = run_module(args, capsys)["ansible_facts"]["nvidia_gpu"]
    assert facts["nvidia_smi"]["state"] == "skipped"


def test_module_fails_on_output_it_cannot_parse(tmp_path, capsys):
    path = tmp_path / "nvidia-smi"
    path.write_text("#!/bin/sh\necho 'something else entirely'\n")
    os.chmod(path, 0o755)
    result = run_module({"nvidia_smi_path": str(path), "pci_devices_dir": str(tmp_path)}, capsys)
    assert result["failed"] is True
    assert "cannot parse the output of" in result["msg"]
