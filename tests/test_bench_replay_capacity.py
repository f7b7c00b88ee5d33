"""Tests of ``benchmarks/bench_replay_capacity.py`` and its runner ``peers/replay_sample.py``.

The table logic runs on fake runner results (checked against hand-computed medians); the
jaxstab runner runs for real at tiny sizes. The rejax side needs the peer environment and is
exercised by the benchmark itself, not here.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest
from _bench_loader import load_benchmark

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


br = load_benchmark("bench_replay_capacity")


def _res(lib, seeds, us):
    return {"replay": lib, "version": "0", "seeds": seeds, "sampling": "x",
            "us_per_step": {str(k): v for k, v in us.items()}}


def test_parse_line_takes_the_last_result_line_and_rejects_none():
    a, b = _res("jaxstab", 1, {10: 1.0}), _res("jaxstab", 1, {10: 2.0})
    out = "warning {not json\n" + json.dumps(a) + "\n" + json.dumps(b) + "\ntrailing text\n"
    assert br.parse_line(out) == b
    with pytest.raises(ValueError, match="no result line"):
        br.parse_line('{"peer": "rejax"}\nnothing else')


def test_table_takes_medians_per_library_seed_count_and_capacity():
    results = [_res("jaxstab", 1, {100: 10.0, 200: 12.0}), _res("rejax", 1, {100: 50.0, 200: 90.0}),
               _res("jaxstab", 1, {100: 14.0, 200: 12.0}), _res("rejax", 1, {100: 70.0, 200: 30.0}),
               _res("jaxstab", 8, {100: 5.0, 200: 6.0})]
    rows = br.table(results, (100, 200))
    # medians of two values are their means: jaxstab (10, 14) -> 12, rejax (50, 70) -> 60
    assert rows[0] == [100, 1, 12.0, 60.0, "5.0x"]
    assert rows[1] == [200, 1, 12.0, 60.0, "5.0x"]
    # a library that did not run at a seed count is reported as n/a, not dropped
    assert rows[2] == [100, 8, 5.0, "n/a", "n/a"] and rows[3] == [200, 8, 6.0, "n/a", "n/a"]


@pytest.mark.slow
def test_real_tiny_run_of_the_jaxstab_runner():
    proc = subprocess.run(
        [sys.executable, os.path.join(ROOT, "benchmarks", "peers", "replay_sample.py"),
         "--lib", "jaxstab", "--capacities", "300", "1000", "--iters", "5", "--repeats", "1",
         "--seeds", "2"], capture_output=True, text=True, timeout=300, cwd=ROOT,
        env={**os.environ, "PYTHONPATH": ROOT})
    assert proc.returncode == 0, proc.stderr[-2000:]
    res = br.parse_line(proc.stdout)
    assert res["replay"] == "jaxstab" and res["seeds"] == 2
    assert set(res["us_per_step"]) == {"300", "1000"}
    assert all(0 < v < 1e6 for v in res["us_per_step"].values())
    bad = subprocess.run(
        [sys.executable, os.path.join(ROOT, "benchmarks", "peers", "replay_sample.py"),
         "--lib", "jaxstab", "--capacities", "100"], capture_output=True, text=True,
        timeout=300, cwd=ROOT, env={**os.environ, "PYTHONPATH": ROOT})
    assert bad.returncode != 0 and "every capacity must be >= 256" in bad.stderr


def test_sac_step_scale_follows_the_sac_results_file(tmp_path):
    rows = [{"peer": "rejax", "seeds": 1, "steps": 20000, "steps_per_s": 1000.0},
            {"peer": "jaxstab", "seeds": 8, "steps": 20000, "steps_per_s": 1500.0},
            {"peer": "jaxstab", "seeds": 1, "steps": 20000, "steps_per_s": 2000.0}]
    (tmp_path / "bench_peers_sac_20k50k_cpu.json").write_text(json.dumps({"results": rows}))
    text = br.sac_step_scale("cpu", str(tmp_path))
    assert "500 us" in text and "2000 steps/s" in text  # 1e6 / 2000, jaxstab's 1-seed row
    assert br.sac_step_scale("gpu", str(tmp_path)) == ""  # no file for that platform
    (tmp_path / "bench_peers_sac_20k50k_cpu.json").write_text("{not json")
    assert br.sac_step_scale("cpu", str(tmp_path)) == ""


@pytest.mark.parametrize("flag", ["--calls", "--repeats", "--iters"])
def test_main_refuses_counts_below_one_before_running_anything(flag):
    with pytest.raises(SystemExit, match="--calls"):
        br.main([flag, "0", "--peers-dir", "/nonexistent-peers"])
