"""Tests of ``benchmarks/bench_cpu_scheduler.py``: its job list, table and argument checks.

The table runs on fake runner results checked against hand-computed medians and ratios; the
runners themselves are exercised by ``tests/test_bench_peers.py`` and the benchmark.
"""

from __future__ import annotations

import pytest
from _bench_loader import load_benchmark

bs = load_benchmark("bench_cpu_scheduler")


def _r(lib, setting, rate, algo="ppo"):
    return {"lib": lib, "algo": algo, "seeds": 16, "steps": 512, "setting": setting,
            "steps_per_s": rate}


def test_settings_switch_the_scheduler_flag_and_the_opt_out():
    on, off = bs.SETTINGS["guard on"], bs.SETTINGS["guard off"]
    assert on["XLA_FLAGS"] == "--xla_cpu_enable_concurrency_optimized_scheduler=false"
    assert off["XLA_FLAGS"] == "" and off["JAXSTAB_CPU_SCHEDULER_WORKAROUND"] == "0"


def test_jobs_pair_jaxstab_with_rejax_and_leave_out_a_zero_budget():
    got = [(j.lib, j.algo, j.steps, j.seeds) for j in bs.jobs(1024, 2000)]
    assert got == [("jaxstab", "ppo", 1024, 1), ("rejax", "ppo", 1024, 1),
                   ("jaxstab", "ppo", 1024, 16), ("rejax", "ppo", 1024, 16),
                   ("jaxstab", "sac", 2000, 1), ("rejax", "sac", 2000, 1),
                   ("jaxstab", "sac", 2000, 8), ("rejax", "sac", 2000, 8)]
    assert [(j.algo, j.seeds) for j in bs.jobs(0, 2000, sac_seeds=(8,))] == [("sac", 8)] * 2


def test_table_medians_speedups_and_ratios():
    res = [_r("jaxstab", "guard on", 100.0), _r("jaxstab", "guard on", 120.0),
           _r("jaxstab", "guard off", 150.0), _r("jaxstab", "guard off", 130.0),
           _r("rejax", "guard on", 110.0), _r("rejax", "guard off", 121.0),
           {**_r("rejax", "guard off", None), "error": "timed out"}]  # a failed run is left out
    rows = bs.table(res)
    assert rows[0] == ["ppo", 16, 512, "jaxstab", 110, 140, "1.27x"]  # 140 / 110
    assert rows[1] == ["ppo", 16, 512, "rejax", 110, 121, "1.10x"]
    assert rows[2] == ["ppo", 16, 512, "jaxstab / rejax", "1.00x", "1.16x", ""]  # 140 / 121


def test_table_marks_a_missing_side():
    rows = bs.table([_r("jaxstab", "guard on", 100.0, algo="sac")])
    assert rows[0][4:] == [100, "-", "-"]
    assert rows[-1][4:6] == ["-", "-"]


@pytest.mark.parametrize("argv,match", [(["--repeats", "0"], "--repeats"),
                                        (["--calls", "0"], "--calls"),
                                        (["--ppo-steps", "-1"], "--ppo-steps"),
                                        (["--ppo-steps", "0", "--sac-steps", "0"], "nothing")])
def test_main_refuses_bad_counts_before_running_anything(argv, match):
    with pytest.raises(SystemExit, match=match):
        bs.main(argv + ["--peers-dir", "/nonexistent-peers"])
