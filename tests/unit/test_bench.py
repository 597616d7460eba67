"""Unit tests of the bench's parsers and reports (scripts/bench.py).

`make test` also runs the bench itself, briefly (scripts/bench.sh --smoke).
"""

from __future__ import annotations

import pytest
from plugin_loader import ROOT, load_module

bench = load_module(ROOT / "scripts" / "bench.py")

WRK_OUTPUT = """Running 3s test @ http://172.18.0.2:80/api/v1/ai/emotion
  2 threads and 20 connections
  Thread Stats   Avg      Stdev     Max   +/- Stdev
    Latency   512.33ms  100.12ms   1.10s    90.00%
    Req/Sec    20.00      5.00     30.00     70.00%
  Latency Distribution
     50%  500.12ms
     75%  510.00ms
     90%  530.00ms
     99%    1.05s
  120 requests in 3.00s, 60.00KB read
  Socket errors: connect 0, read 1, write 0, timeout 2
  Non-2xx or 3xx responses: 15
Requests/sec:     40.00
Transfer/sec:     20.00KB
"""


def test_wrk_report_is_parsed():
    parsed = bench.parse_wrk(WRK_OUTPUT)
    assert parsed["requests"] == 120
    # Failed: non-2xx answers and socket errors; per second: successful answers only.
    assert parsed["failed"] == 18
    assert parsed["ok_per_s"] == 35.0
    assert parsed["p50"] == 500.12
    assert parsed["p99"] == 1050.0


def test_wrk_microseconds_and_no_failures():
    out = (
        "  Latency Distribution\n     50%  490.00us\n     99%    1.20ms\n"
        "  3890 requests in 2.00s, 1MB read\n"
    )
    parsed = bench.parse_wrk(out)
    assert parsed == {"requests": 3890, "failed": 0, "ok_per_s": 1945.0, "p50": 0.49, "p99": 1.2}


def test_wrk_without_a_count_is_an_error():
    with pytest.raises(bench.BenchError, match="no request count"):
        bench.parse_wrk("unable to connect to 172.18.0.2:80 Connection refused\n")


def test_load_is_refused_outside_the_lab(tmp_path):
    with pytest.raises(bench.BenchError, match="only loopback and the bench network"):
        bench.wrk(tmp_path / "x.txt", "http://8.8.8.8:80/", connections=1, seconds=1)


def test_task_profile_sums_each_task(tmp_path):
    log = tmp_path / "run.log"
    log.write_text(
        "TASK [ai_node : Run the unit-manager] ****\n"
        "Tuesday 01 December 2026  14:46:00 +0000 (0:00:00.100)       0:00:01.000 ****\n"
        "ok: [a]\n\n"
        "TASK [docker_engine : Write daemon.json] ****\n"
        "Tuesday 01 December 2026  14:46:02 +0000 (0:00:02.000)       0:00:03.000 ****\n"
        "TASK [ai_node : Run the unit-manager] ****\n"
        "Tuesday 01 December 2026  14:46:03 +0000 (0:00:00.500)       0:00:03.500 ****\n"
        "PLAY RECAP ****\n"
        "a : ok=3 changed=0\n\n"
        "TASKS RECAP ****\n"
        "Tuesday 01 December 2026  14:46:06 +0000 (0:00:03.000)       0:00:06.500 ****\n"
    )
    profile = bench.task_profile(log, top=5)
    assert profile[0] == {"task": "ai_node : Run the unit-manager", "seconds": 5.0, "runs": 2}
    assert profile[1] == {"task": "docker_engine : Write daemon.json", "seconds": 0.5, "runs": 1}


def test_audio_body_is_deterministic_and_sized():
    body = bench.audio_body(1000)
    assert body == bench.audio_body(1000)
    assert body.startswith(b'{"audio_data": "') and len(body) == len('{"audio_data": ""}') + 1336


def test_summary_table_and_per_node_cost():
    s = bench.summary
    report = {
        "machine": {"cpus": 2, "cpu": "cpu", "memory_gib": 23.0, "ansible": "ansible [core 2.21]"},
        "deploy": [
            {
                "nodes": n,
                "first_converge_s": s([100.0 * n]),
                "noop_s": s([20.0 + 10 * n]),
                "noop_defaults_s": s([60.0 * n]),
                "noop_controller_cpu_s": s([10.0 * n]),
                "noop_changed": [0, 0],
            }
            for n in (1, 2)
        ],
    }
    text = bench.markdown(report)
    assert "| 2 | 200.0 / 200.0 s | 40.0 / 40.0 s | 120.0 s | 3.00x | 1.33x | 20.0 s | 0 |" in text
    assert "costs the controller 10.00 CPU-seconds and the no-op 10.00 s" in text


def test_options_are_checked():
    with pytest.raises(SystemExit):
        bench.parse_args(["--sizes", "one,two"])
    with pytest.raises(SystemExit):
        bench.parse_args(["--sizes", "1,2", "--request-nodes", "4"])
    smoke = bench.parse_args(["--smoke"])
    assert smoke.sizes == [2] and smoke.repeat == 1 and smoke.request_nodes == 2


def test_junit_report_counts_one_case(tmp_path):
    ok, failed = tmp_path / "ok.xml", tmp_path / "failed.xml"
    bench.write_junit(ok, None)
    bench.write_junit(failed, "a no-op re-run changed something on 2 node(s): [1, 0]")
    assert 'tests="1" failures="0"' in ok.read_text()
    text = failed.read_text()
    assert 'failures="1"' in text and "a no-op re-run changed something" in text
