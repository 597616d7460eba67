"""The lab's dcgm-exporter stand-in (tests/images/dcgm-exporter) and the role's counters file.

The program runs as the image runs it (the role's flags, -f with the role's counters
file), on a free loopback port, with a fault file of the test's own; the metrics are
checked against the counters file, the real exporter's labels and the GPUs of the
stand-in nvidia-smi (tests/fixtures/gpu-health). The role's counters file itself is
checked against the real exporter's CSV rules.
"""

from __future__ import annotations

import contextlib
import json
import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from dataclasses import dataclass, field
from pathlib import Path

import pytest
from plugin_loader import ROOT

IMAGE = ROOT / "tests" / "images" / "dcgm-exporter"
STANDIN = IMAGE / "dcgm_exporter.py"
DEFAULT_COUNTERS = IMAGE / "default-counters.csv"
COUNTERS = ROOT / "roles" / "dcgm_exporter" / "files" / "ai-fleet-counters.csv"
SMI_HEALTHY = ROOT / "tests" / "fixtures" / "gpu-health" / "outputs" / "healthy" / "gpu.csv"

MODEL = "NVIDIA H100 80GB HBM3"
DRIVER = "580.95.05"
FB_TOTAL = 81559
BASE_LABELS = ["gpu", "UUID", "pci_bus_id", "device", "modelName", "Hostname"]
WATCHES = ["PCIE", "NVLINK", "PMU", "MCU", "MEM", "SM", "INFOROM", "THERMAL", "POWER", "DRIVER"]
XID_COUNT = "DCGM_EXP_XID_ERRORS_COUNT"
HEALTH = "DCGM_EXP_GPU_HEALTH_STATUS"
#: The labels each metric adds after the label fields (in name order, as the real
#: exporter's template writes Go maps).
OWN_LABELS = {
    XID_COUNT: ["window_size_in_ms", "xid"],
    HEALTH: ["health_error_code", "health_watch"],
}
#: Variables of the exporter that would change what the tests expect.
EXPORTER_ENV = (
    "DCGM_EXPORTER_COLLECTORS",
    "DCGM_EXPORTER_LISTEN",
    "DCGM_EXPORTER_INTERVAL",
    "DCGM_EXPORTER_XID_COUNT_WINDOW_SIZE",
    "STANDIN_GPUS",
    "STANDIN_FAULT_FILE",
)


# --- helpers ----------------------------------------------------------------------------------


def counters_of(path: Path) -> list[tuple[str, str, str]]:
    """(field, type, help) of each line of a counters file, as dcgm-exporter reads them."""
    found = []
    for line in path.read_text().splitlines():
        if not line.strip() or line.startswith("#"):
            continue
        name, kind, help_text = (part.strip() for part in line.split(",", 2))
        found.append((name, kind, help_text))
    return found


def smi_gpus() -> dict[str, tuple[str, str]]:
    """The stand-in nvidia-smi's GPUs: index -> (UUID, PCI bus id)."""
    rows = [line.split(", ") for line in SMI_HEALTHY.read_text().splitlines()]
    return {index: (uuid, bus) for index, uuid, bus, *_ in rows}


@dataclass
class Sample:
    """One sample line: its labels in their order, and its value."""

    labels: list[tuple[str, str]]
    value: str

    @property
    def names(self) -> list[str]:
        """The label names, in order."""
        return [name for name, _ in self.labels]

    def __getitem__(self, name: str) -> str:
        """The value of label ``name``."""
        return dict(self.labels)[name]


@dataclass
class Family:
    """A metric's HELP, TYPE and samples."""

    help: str
    type: str
    samples: list[Sample] = field(default_factory=list)

    def by_gpu(self) -> dict[str, list[Sample]]:
        """The samples of each GPU."""
        found: dict[str, list[Sample]] = {}
        for sample in self.samples:
            found.setdefault(sample["gpu"], []).append(sample)
        return found

    def value(self, gpu: str, **labels: str) -> str:
        """The value of the one sample of GPU ``gpu`` with ``labels``."""
        matching = [
            s.value
            for s in self.samples
            if s["gpu"] == gpu and all(s[k] == v for k, v in labels.items())
        ]
        assert len(matching) == 1, (gpu, labels, matching)
        return matching[0]


SAMPLE = re.compile(r"^([A-Za-z_:][A-Za-z0-9_:]*)\{(.*)\} (\S+)$")
LABEL = re.compile(r'([A-Za-z_][A-Za-z0-9_]*)="((?:[^"\\]|\\.)*)"(,|$)')


def parse_metrics(text: str) -> dict[str, Family]:
    """Parse Prometheus text format strictly: HELP, TYPE, then that family's samples."""
    families: dict[str, Family] = {}
    current = None
    lines = text.splitlines()
    assert text.endswith("\n") or not text
    for number, line in enumerate(lines):
        if line.startswith("# HELP "):
            name, _, help_text = line[len("# HELP ") :].partition(" ")
            assert name not in families, f"{name} declared twice"
            typed = re.fullmatch(rf"# TYPE {re.escape(name)} (\w+)", lines[number + 1])
            assert typed, f"no TYPE line after {line!r}"
            families[name] = current = Family(help_text, typed.group(1))
            continue
        if line.startswith("# TYPE "):
            continue
        match = SAMPLE.match(line)
        assert match, f"not a sample line: {line!r}"
        assert current is not None and match.group(1) in families, f"{line!r} before its HELP"
        assert match.group(1) == list(families)[-1], f"{line!r} outside its family"
        labels = [(m.group(1), m.group(2)) for m in LABEL.finditer(match.group(2))]
        rebuilt = ",".join(f'{k}="{v}"' for k, v in labels)
        assert rebuilt == match.group(2), f"malformed labels: {line!r}"
        families[match.group(1)].samples.append(Sample(labels, match.group(3)))
    return families


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def get(port: int, path: str) -> tuple[int, str, str]:
    """GET ``path``: (status, content type, body)."""
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{port}{path}", timeout=5) as answer:
            return answer.status, answer.headers["Content-Type"], answer.read().decode()
    except urllib.error.HTTPError as refused:
        return refused.code, refused.headers["Content-Type"], refused.read().decode()


def clean_env(**extra: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if k not in EXPORTER_ENV}
    env.update(extra)
    return env


@dataclass
class Running:
    """A running stand-in: its port, its fault file, and (once stopped) its log."""

    port: int
    fault_file: Path
    process: subprocess.Popen
    log: str = ""

    def scrape(self) -> dict[str, Family]:
        status, content_type, body = get(self.port, "/metrics")
        assert status == 200
        assert content_type == "text/plain; version=0.0.4; charset=utf-8"
        return parse_metrics(body)

    def faults(self, document: dict | str) -> None:
        """Write the fault file (a dict as JSON, a string as it is)."""
        text = document if isinstance(document, str) else json.dumps(document)
        self.fault_file.write_text(text)


@contextlib.contextmanager
def standin(tmp_path: Path, *flags: str, env: dict[str, str] | None = None):
    """The stand-in on a free loopback port until it answers /health; SIGTERM after."""
    port = free_port()
    fault_file = tmp_path / "faults.json"
    args = ["-f", str(COUNTERS), "-a", f"127.0.0.1:{port}", "-c", "5000", *flags]
    process = subprocess.Popen(
        [sys.executable, str(STANDIN), *args],
        env=clean_env(STANDIN_FAULT_FILE=str(fault_file), **(env or {})),
        stderr=subprocess.PIPE,
        text=True,
    )
    running = Running(port, fault_file, process)
    try:
        deadline = time.monotonic() + 10
        while True:
            assert process.poll() is None, f"exited {process.returncode}: {process.stderr.read()}"
            with contextlib.suppress(OSError):
                if get(port, "/health")[0] == 200:
                    break
            assert time.monotonic() < deadline, "no answer on /health in 10 s"
            time.sleep(0.05)
        yield running
    finally:
        process.send_signal(signal.SIGTERM)
        stopped = time.monotonic()
        _, running.log = process.communicate(timeout=10)
    assert time.monotonic() - stopped < 3, "SIGTERM did not stop it promptly"
    assert process.returncode == 0, running.log


@pytest.fixture
def exporter(tmp_path):
    with standin(tmp_path) as running:
        yield running


def refused(tmp_path: Path, *args: str) -> subprocess.CompletedProcess:
    """Run the stand-in with ``args`` where it must not start; the finished process."""
    return subprocess.run(
        [sys.executable, str(STANDIN), *args],
        env=clean_env(STANDIN_FAULT_FILE=str(tmp_path / "faults.json")),
        capture_output=True,
        text=True,
        timeout=10,
        check=False,
    )


# --- the role's counters file -----------------------------------------------------------------


def test_the_role_s_counters_file_is_what_the_real_exporter_s_csv_reader_accepts():
    # Go's encoding/csv, as dcgm-exporter reads it: '#' comments only in column 1,
    # only truly empty lines skipped, every record the same 3 fields, no quotes.
    names = []
    for number, line in enumerate(COUNTERS.read_text().splitlines(), 1):
        where = f"line {number}: {line!r}"
        if line == "" or line.startswith("#"):
            continue
        assert line.strip(), f"{where}: spaces only (a record, not a blank line, for Go's csv)"
        parts = line.split(",")
        assert len(parts) == 3, f"{where}: {len(parts)} fields, expected FIELD, type, help"
        assert '"' not in line, f"{where}: a quote (the real exporter's CSV reader refuses it)"
        name, kind, help_text = (part.strip() for part in parts)
        assert re.fullmatch(r"DCGM_(FI|EXP)_[A-Z0-9_]+", name), where
        assert kind in ("gauge", "counter", "label"), where
        assert help_text, f"{where}: no help text"
        names.append(name)
    duplicates = sorted({n for n in names if names.count(n) > 1})
    assert not duplicates, f"listed more than once: {duplicates}"
    assert len(names) == len(counters_of(COUNTERS)) > 0


# --- the metrics ------------------------------------------------------------------------------


def test_every_field_of_the_counters_file_is_served_with_its_help_and_type(exporter):
    families = exporter.scrape()
    expected = [(n, k, h) for n, k, h in counters_of(COUNTERS) if k != "label"]
    assert [(name, f.type, f.help) for name, f in families.items()] == expected


def test_the_driver_version_is_a_label_on_every_sample_not_a_metric(exporter):
    families = exporter.scrape()
    assert ("DCGM_FI_DRIVER_VERSION", "label", "Driver Version") in counters_of(COUNTERS)
    assert "DCGM_FI_DRIVER_VERSION" not in families
    for family in families.values():
        assert {s["DCGM_FI_DRIVER_VERSION"] for s in family.samples} == {DRIVER}


def test_every_sample_has_the_exporter_s_labels_in_its_order(exporter):
    gpus = smi_gpus()
    hostname = socket.gethostname()
    for name, family in exporter.scrape().items():
        for sample in family.samples:
            expected = [*BASE_LABELS, "DCGM_FI_DRIVER_VERSION", *OWN_LABELS.get(name, [])]
            assert sample.names == expected, (name, sample.labels)
            gpu = sample["gpu"]
            assert (sample["UUID"], sample["pci_bus_id"]) == gpus[gpu]
            assert sample["device"] == f"nvidia{gpu}"
            assert sample["modelName"] == MODEL
            assert sample["Hostname"] == hostname


def test_eight_gpus_by_default_those_of_the_stand_in_nvidia_smi(exporter):
    families = exporter.scrape()
    assert sorted(smi_gpus()) == [str(i) for i in range(8)]
    for name, family in families.items():
        by_gpu = family.by_gpu()
        assert sorted(by_gpu, key=int) == [str(i) for i in range(8)], name
        per_gpu = len(WATCHES) if name == HEALTH else 1
        assert all(len(samples) == per_gpu for samples in by_gpu.values()), name


def test_standin_gpus_sets_the_number_of_gpus_and_none_lists_no_metric(tmp_path):
    with standin(tmp_path, env={"STANDIN_GPUS": "2"}) as running:
        families = running.scrape()
        assert {s["gpu"] for f in families.values() for s in f.samples} == {"0", "1"}
    with standin(tmp_path, env={"STANDIN_GPUS": "0"}) as running:
        assert get(running.port, "/metrics")[2] == ""


def test_the_healthy_values_are_plausible(exporter):
    families = exporter.scrape()

    def values(name: str) -> list[float]:
        return [float(s.value) for s in families[name].samples]

    assert all(35 <= t <= 45 for t in values("DCGM_FI_DEV_GPU_TEMP"))
    assert all(35 <= t <= 45 for t in values("DCGM_FI_DEV_MEMORY_TEMP"))
    assert all(0 < u < 100 for u in values("DCGM_FI_DEV_GPU_UTIL"))
    assert all(50 < p < 700 for p in values("DCGM_FI_DEV_POWER_USAGE"))
    assert all(v > 0 for v in values("DCGM_FI_DEV_TOTAL_ENERGY_CONSUMPTION"))
    used, free = values("DCGM_FI_DEV_FB_USED"), values("DCGM_FI_DEV_FB_FREE")
    assert [u + f for u, f in zip(used, free, strict=True)] == [FB_TOTAL] * 8
    for name in (
        "DCGM_FI_DEV_XID_ERRORS",
        "DCGM_FI_DEV_PCIE_REPLAY_COUNTER",
        "DCGM_FI_DEV_ECC_SBE_VOL_TOTAL",
        "DCGM_FI_DEV_ECC_DBE_VOL_TOTAL",
        "DCGM_FI_DEV_ECC_DBE_AGG_TOTAL",
        "DCGM_FI_DEV_RETIRED_SBE",
        "DCGM_FI_DEV_RETIRED_DBE",
        "DCGM_FI_DEV_RETIRED_PENDING",
        "DCGM_FI_DEV_UNCORRECTABLE_REMAPPED_ROWS",
        "DCGM_FI_DEV_CORRECTABLE_REMAPPED_ROWS",
        "DCGM_FI_DEV_ROW_REMAP_FAILURE",
        "DCGM_FI_DEV_ROW_REMAP_PENDING",
    ):
        assert set(values(name)) == {0}, name
    # No XID in the window: one series per GPU, xid="0", value 0.
    for sample in families[XID_COUNT].samples:
        assert (sample["xid"], sample["window_size_in_ms"], sample.value) == ("0", "300000", "0")
    # Every watch of every GPU passes.
    for samples in families[HEALTH].by_gpu().values():
        assert [s["health_watch"] for s in samples] == WATCHES
        assert {(s["health_error_code"], s.value) for s in samples} == {("DCGM_FR_OK", "0")}


def test_the_text_is_what_promtool_accepts(exporter):
    found = shutil.which("promtool") or ROOT / ".cache" / "prometheus" / "usr" / "bin" / "promtool"
    if not Path(found).is_file():
        pytest.skip("promtool not found (scripts/promtool.sh unpacks it)")
    exporter.faults({"gpus": {"1": {"xid": [79, 79, 48]}}})
    body = get(exporter.port, "/metrics")[2]
    checked = subprocess.run(
        [str(found), "check", "metrics"], input=body, capture_output=True, text=True, check=False
    )
    # 3: only lint findings, which NVIDIA's names and labels have too (camelCase
    # labels, counters without _total); 1 would be a parse error.
    assert checked.returncode in (0, 3), checked.stdout + checked.stderr
    lint = (
        "label names should be written in 'snake_case' not 'camelCase'",
        'counter metrics should have "_total" suffix',
        "metric name should not include type 'counter'",
    )
    for line in (checked.stdout + checked.stderr).splitlines():
        assert line.split(" ", 1)[1] in lint, line


def test_health_answers_ok_and_other_paths_404(exporter):
    assert get(exporter.port, "/health")[0::2] == (200, "OK")
    for path in ("/", "/metricsx", "/healthz", "/api/v1/metrics"):
        assert get(exporter.port, path)[0] == 404, path


def test_one_start_line_names_the_address_the_counters_file_and_the_gpu_count(tmp_path):
    with standin(tmp_path) as running:
        pass
    first = running.log.splitlines()[0]
    assert f"listening on 127.0.0.1:{running.port}" in first
    assert str(COUNTERS) in first
    assert "8 GPUs" in first


# --- faults -----------------------------------------------------------------------------------


def test_xid_79_on_gpu_0_shows_in_both_xid_metrics(exporter):
    exporter.faults({"gpus": {"0": {"xid": 79}}})
    families = exporter.scrape()
    xid = families["DCGM_FI_DEV_XID_ERRORS"]
    assert [xid.value(str(i)) for i in range(8)] == ["79"] + ["0"] * 7
    counts = families[XID_COUNT].by_gpu()
    assert [(s["xid"], s.value) for s in counts["0"]] == [("79", "1")]
    assert all([(s["xid"], s.value) for s in counts[str(i)]] == [("0", "0")] for i in range(1, 8))


def test_xids_are_counted_and_the_last_is_the_gauge(exporter):
    exporter.faults({"gpus": {"2": {"xid": [48, 94, 94]}}})
    families = exporter.scrape()
    assert families["DCGM_FI_DEV_XID_ERRORS"].value("2") == "94"
    counts = [(s["xid"], s.value) for s in families[XID_COUNT].by_gpu()["2"]]
    assert counts == [("48", "1"), ("94", "2")]


def test_an_xid_older_than_the_window_is_no_longer_counted(tmp_path):
    with standin(tmp_path, "-x", "60000") as running:
        running.faults({"gpus": {"1": {"xid": 79, "xid_time": time.time() - 61}}})
        families = running.scrape()
        assert families["DCGM_FI_DEV_XID_ERRORS"].value("1") == "79"
        assert families[XID_COUNT].value("1", xid="0", window_size_in_ms="60000") == "0"
        running.faults({"gpus": {"1": {"xid": 79, "xid_time": time.time() - 30}}})
        assert running.scrape()[XID_COUNT].value("1", xid="79") == "1"


@pytest.mark.parametrize(
    ("fault", "changed"),
    [
        (
            {"ecc_dbe": 2},
            {"DCGM_FI_DEV_ECC_DBE_VOL_TOTAL": "2", "DCGM_FI_DEV_ECC_DBE_AGG_TOTAL": "2"},
        ),
        (
            {"ecc_dbe": True},
            {"DCGM_FI_DEV_ECC_DBE_VOL_TOTAL": "1", "DCGM_FI_DEV_ECC_DBE_AGG_TOTAL": "1"},
        ),
        ({"remap_pending": True}, {"DCGM_FI_DEV_ROW_REMAP_PENDING": "1"}),
        ({"remap_failure": True}, {"DCGM_FI_DEV_ROW_REMAP_FAILURE": "1"}),
        ({"retired_pending": 3}, {"DCGM_FI_DEV_RETIRED_PENDING": "3"}),
        ({"temperature": 94}, {"DCGM_FI_DEV_GPU_TEMP": "94"}),
        (
            {"fields": {"DCGM_FI_DEV_PCIE_REPLAY_COUNTER": 17}},
            {"DCGM_FI_DEV_PCIE_REPLAY_COUNTER": "17"},
        ),
    ],
)
def test_a_fault_sets_its_fields_on_its_gpu_only(exporter, fault, changed):
    healthy = exporter.scrape()
    exporter.faults({"gpus": {"5": fault}})
    faulty = exporter.scrape()
    assert set(changed) <= set(faulty)
    for name, family in faulty.items():
        for gpu in map(str, range(8)):
            before = [s.value for s in healthy[name].by_gpu()[gpu]]
            after = [s.value for s in family.by_gpu()[gpu]]
            if gpu == "5" and name in changed:
                assert after == [changed[name]], name
            elif name != "DCGM_FI_DEV_TOTAL_ENERGY_CONSUMPTION":  # grows each collect interval
                assert after == before, (name, gpu)


def test_a_vanished_gpu_is_not_listed_at_all(exporter):
    exporter.faults({"gpus": {"3": {"vanished": True}}})
    families = exporter.scrape()
    for name, family in families.items():
        assert sorted(family.by_gpu(), key=int) == ["0", "1", "2", "4", "5", "6", "7"], name


def test_a_failed_health_watch_is_20_with_its_code_on_that_watch_only(exporter):
    exporter.faults(
        {
            "gpus": {
                "0": {
                    "xid": 79,
                    "health": {
                        "watch": "MEM",
                        "status": 20,
                        "code": "DCGM_FR_VOLATILE_DBE_DETECTED",
                    },
                },
                "6": {
                    "health": [
                        {"watch": "THERMAL", "status": 10, "code": "DCGM_FR_CLOCKS_EVENT_THERMAL"}
                    ]
                },
            }
        }
    )
    health = exporter.scrape()[HEALTH]
    results = {
        (s["gpu"], s["health_watch"]): (s.value, s["health_error_code"]) for s in health.samples
    }
    assert len(results) == 8 * len(WATCHES)
    assert results.pop(("0", "MEM")) == ("20", "DCGM_FR_VOLATILE_DBE_DETECTED")
    assert results.pop(("6", "THERMAL")) == ("10", "DCGM_FR_CLOCKS_EVENT_THERMAL")
    assert set(results.values()) == {("0", "DCGM_FR_OK")}


def test_the_fault_file_is_read_again_on_every_scrape(exporter):
    def gpu0_xid() -> str:
        return exporter.scrape()["DCGM_FI_DEV_XID_ERRORS"].value("0")

    assert gpu0_xid() == "0"
    exporter.faults({"gpus": {"0": {"xid": 79}}})
    assert gpu0_xid() == "79"
    exporter.faults("")
    assert gpu0_xid() == "0"
    exporter.faults({"gpus": {"0": {"xid": 48}}})
    assert gpu0_xid() == "48"
    exporter.faults({})  # what tests/integration write to clear it
    assert gpu0_xid() == "0"
    exporter.faults({"gpus": {"0": {"xid": 94}}})
    assert gpu0_xid() == "94"
    exporter.fault_file.unlink()
    assert gpu0_xid() == "0"


@pytest.mark.parametrize(
    ("content", "message"),
    [
        ("{not json", "not JSON"),
        ('{"gpus": {"0": {"xid": 79, "vanish": true}}}', "unknown key(s) vanish"),
        ('{"gpus": {"8": {"xid": 79}}}', "no GPU '8'"),
        ('{"gpus": {"0": {"health": {"watch": "GPU", "status": 20, "code": "X"}}}}', "watch"),
        ('{"gpus": {"0": {"health": {"watch": "MEM", "status": 30, "code": "X"}}}}', "status"),
        ('{"gpus": {"0": {"health": {"watch": "MEM", "status": 20}}}}', "needs a code"),
        ('{"gpus": {"0": {"fields": {"DCGM_FI_NOPE": 1}}}}', "DCGM_FI_NOPE"),
    ],
)
def test_an_invalid_fault_file_is_served_healthy_with_a_message(tmp_path, content, message):
    with standin(tmp_path) as running:
        running.faults(content)
        families = running.scrape()
        assert set(families["DCGM_FI_DEV_XID_ERRORS"].by_gpu()) == set(map(str, range(8)))
        assert {s.value for s in families["DCGM_FI_DEV_XID_ERRORS"].samples} == {"0"}
        assert get(running.port, "/health")[0] == 200
    assert f"fault file {running.fault_file}:" in running.log
    assert message in running.log
    assert "serving healthy GPUs" in running.log


# --- flags and refusals -----------------------------------------------------------------------


def test_the_flags_environment_variables_set_what_the_flags_do(tmp_path):
    port = free_port()
    counters = tmp_path / "counters.csv"
    counters.write_text("DCGM_FI_DEV_GPU_TEMP, gauge, GPU temperature (in C).\n")
    env = clean_env(
        STANDIN_FAULT_FILE=str(tmp_path / "faults.json"),
        DCGM_EXPORTER_COLLECTORS=str(counters),
        DCGM_EXPORTER_LISTEN=f"127.0.0.1:{port}",
        DCGM_EXPORTER_INTERVAL="1000",
        DCGM_EXPORTER_XID_COUNT_WINDOW_SIZE="60000",
    )
    process = subprocess.Popen(
        [sys.executable, str(STANDIN)], env=env, stderr=subprocess.PIPE, text=True
    )
    try:
        deadline = time.monotonic() + 10
        while True:
            with contextlib.suppress(OSError):
                status, _, body = get(port, "/metrics")
                break
            assert process.poll() is None and time.monotonic() < deadline
            time.sleep(0.05)
    finally:
        process.send_signal(signal.SIGTERM)
        _, log = process.communicate(timeout=10)
    assert status == 200
    assert list(parse_metrics(body)) == ["DCGM_FI_DEV_GPU_TEMP"]
    assert "collect interval 1000 ms; XID window 60000 ms" in log


def test_the_image_s_default_counters_file_is_served(tmp_path):
    with standin(tmp_path, "-f", str(DEFAULT_COUNTERS)) as running:
        families = running.scrape()
    expected = [n for n, k, _ in counters_of(DEFAULT_COUNTERS) if k != "label"]
    assert list(families) == expected
    assert "DCGM_FI_DEV_DEC_UTIL" in families  # NVIDIA's line has a space before its comma


@pytest.mark.parametrize(
    ("line", "message"),
    [
        ("DCGM_FI_DEV_GPU_TEMP, gauge", "expected 3 fields"),
        ("DCGM_FI_DEV_GPU_TEMP", "expected 3 fields"),
        ("DCGM_FI_DEV_GPU_TEMP, histogramm, GPU temperature (in C).", "metric type 'histogramm'"),
        ("DCGM_FI_DEV_NOT_A_FIELD, gauge, Nothing.", "could not find DCGM field"),
        ("DCGM_FI_DEV_SM_CLOCK, gauge, Again.", "listed twice"),
        ("DCGM_FI_DRIVER_VERSION, gauge, Driver Version", "only as a label"),
    ],
)
def test_a_bad_counters_line_stops_it_with_a_message_naming_the_line(tmp_path, line, message):
    counters = tmp_path / "counters.csv"
    counters.write_text(f"# comment\nDCGM_FI_DEV_SM_CLOCK, gauge, SM clock.\n\n{line}\n")
    result = refused(tmp_path, "-f", str(counters), "-a", f"127.0.0.1:{free_port()}")
    assert result.returncode == 1, result.stderr
    assert f"{counters}:4:" in result.stderr
    assert repr(line) in result.stderr
    assert message in result.stderr


@pytest.mark.parametrize(
    "args",
    [
        ["--bogus"],
        ["-z", "1"],
        ["--collect-intervall", "5000"],
        ["extra-argument"],
    ],
)
def test_an_unknown_flag_stops_it(tmp_path, args):
    result = refused(tmp_path, "-f", str(COUNTERS), "-a", f"127.0.0.1:{free_port()}", *args)
    assert result.returncode != 0
    assert "unrecognized arguments" in result.stderr


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["-c", "soon"], "-c/--collect-interval"),
        (["-c", "0"], "-c/--collect-interval"),
        (["-x", "-5"], "-x/--xid-count-window-size"),
        (["-a", "9400"], "invalid listen address"),
        (["-f", "/nonexistent/counters.csv"], "cannot read the counters file"),
    ],
)
def test_a_bad_setting_stops_it_with_exit_1(tmp_path, args, message):
    result = refused(tmp_path, "-f", str(COUNTERS), "-a", f"127.0.0.1:{free_port()}", *args)
    assert result.returncode == 1, result.stderr
    assert message in result.stderr
