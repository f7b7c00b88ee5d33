"""Tests of ``benchmarks/bench_cpu_scheduler.py``: its job list, table and argument checks.

The table runs on fake runner results checked against hand-computed medians and ratios; the
runners themselves are exercised by ``tests/test_bench_peers.py`` and the benchmark.
"""

from __future__ import annotations

import os
import sys

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
    # one core: the guard on, and the only pinned setting
    assert bs.SETTINGS["one core"] == on and bs.PINNED == {"one core"}


def test_one_core_is_one_of_the_cores_this_process_may_use():
    core = bs.one_core()
    assert len(core) == 1 and core <= os.sched_getaffinity(0)


def test_run_job_pins_the_child_to_the_given_cores(tmp_path, monkeypatch):
    """A probe runner reports the affinity it sees: one core when pinned, all of ours when not."""
    (tmp_path / "jaxstab_probe.py").write_text(
        "import json, os\n"
        "print(json.dumps({'peer': 'probe', 'steps': 1, 'seeds': 1, 'run_s': 1.0,\n"
        "                  'steps_per_s': 1.0, 'final_returns': [0.0],\n"
        "                  'cores': sorted(os.sched_getaffinity(0))}))\n")
    monkeypatch.setattr(sys.modules["benchmarks.bench_peers"], "RUNNERS", str(tmp_path))
    job = bs.Job("jaxstab", "probe", 1, 1)
    core = bs.one_core()
    pinned = bs.run_job(job, str(tmp_path), timeout=60, cpu_affinity=core)
    free = bs.run_job(job, str(tmp_path), timeout=60)
    assert pinned["cores"] == sorted(core)
    assert free["cores"] == sorted(os.sched_getaffinity(0))


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
    rows = bs.table(res, ("guard on", "guard off"))
    assert rows[0] == ["ppo", 16, 512, "jaxstab", 110, 140, "1.27x"]  # 140 / 110
    assert rows[1] == ["ppo", 16, 512, "rejax", 110, 121, "1.10x"]
    assert rows[2] == ["ppo", 16, 512, "jaxstab / rejax", "1.00x", "1.16x", ""]  # 140 / 121


def test_table_with_three_settings_gives_two_speedups_and_three_ratios():
    res = [_r("jaxstab", "guard on", 100.0), _r("jaxstab", "guard off", 120.0),
           _r("jaxstab", "one core", 125.0), _r("rejax", "guard on", 80.0),
           _r("rejax", "guard off", 100.0), _r("rejax", "one core", 100.0)]
    rows = bs.table(res)  # default: every setting, "guard on" first
    assert rows[0] == ["ppo", 16, 512, "jaxstab", 100, 120, 125, "1.20x", "1.25x"]
    assert rows[1] == ["ppo", 16, 512, "rejax", 80, 100, 100, "1.25x", "1.25x"]
    assert rows[2] == ["ppo", 16, 512, "jaxstab / rejax", "1.25x", "1.20x", "1.25x", "", ""]


def test_table_marks_a_missing_side():
    rows = bs.table([_r("jaxstab", "guard on", 100.0, algo="sac")])
    assert rows[0][4:] == [100, "-", "-", "-", "-"]
    assert rows[-1][4:7] == ["-", "-", "-"]


@pytest.mark.parametrize("argv,match", [(["--repeats", "0"], "--repeats"),
                                        (["--calls", "0"], "--calls"),
                                        (["--ppo-steps", "-1"], "--ppo-steps"),
                                        (["--ppo-steps", "0", "--sac-steps", "0"], "nothing"),
                                        (["--settings", "guard on,fast"], "--settings"),
                                        (["--settings", "one core,one core"], "--settings"),
                                        (["--settings", ","], "--settings")])
def test_main_refuses_bad_counts_before_running_anything(argv, match):
    with pytest.raises(SystemExit, match=match):
        bs.main(argv + ["--peers-dir", "/nonexistent-peers"])
