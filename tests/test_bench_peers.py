"""Tests of ``benchmarks/bench_peers.py`` (the peer-comparison orchestrator).

The parsing, aggregation and ratio logic run on fake runner output and are checked against
NumPy re-computations; one slow test runs jaxstab's own SAC runner for real at a tiny budget.
None of them needs the peers' virtual environments.
"""

from __future__ import annotations

import json
import os
import sys

import numpy as np
import pytest
from _bench_loader import load_benchmark

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


bp = load_benchmark("bench_peers")


def _fake(peer, steps, seeds, run_s, returns, **extra):
    return {"peer": peer, "algo": "sac", "env": "Pendulum-v1", "steps": steps, "seeds": seeds,
            "compile_s": extra.pop("compile_s", 10.0), "run_s": run_s,
            "steps_per_s": seeds * steps / run_s, "final_returns": list(returns),
            "versions": {"x": "1"}, **extra}


def test_parse_result_line_skips_noise_and_takes_last_result():
    first = _fake("rejax", 100, 1, 1.0, [-1.0])
    last = _fake("rejax", 200, 2, 2.0, [-3.0, -4.0])
    stdout = "\n".join([
        "UserWarning: something {not json",
        json.dumps(first),
        '{"other": 1}',
        json.dumps(last),
        "trailing log line",
    ])
    assert bp.parse_result_line(stdout) == last


@pytest.mark.parametrize("stdout, match", [
    ("no json here\n", "no JSON result line"),
    ('{"peer": "x", "steps": 1}', "lacks keys"),
    (json.dumps({**_fake("x", 10, 2, 1.0, [0.0, 1.0]), "final_returns": [0.0]}), "entries for 2"),
])
def test_parse_result_line_rejects_bad_output(stdout, match):
    with pytest.raises(ValueError, match=match):
        bp.parse_result_line(stdout)


def test_summarize_matches_numpy():
    x = [-150.0, -210.5, -1265.0, -130.25]
    s = bp.summarize(x)
    assert s["mean"] == pytest.approx(np.mean(x))
    assert s["std"] == pytest.approx(np.std(x))
    assert (s["min"], s["max"]) == (min(x), max(x))
    with pytest.raises(ValueError, match="values"):
        bp.summarize([])


def test_aggregate_ratios_and_targets_on_fake_results():
    results = [
        _fake("jaxstab", 1000, 1, 2.0, [-200.0]),          # 500 steps/s
        _fake("rejax", 1000, 1, 4.0, [-300.0]),            # 250 steps/s
        _fake("jaxstab", 1000, 1, 1.0, [-200.0]),          # 1000 steps/s -> median 750
        _fake("rejax", 1000, 1, 5.0, [-300.0]),            # 200 steps/s -> median 225
        _fake("jaxstab", 1000, 4, 8.0, [-150.0, -160.0, -170.0, -400.0]),  # 500 steps/s
        _fake("rejax", 1000, 4, 10.0, [-140.0, -900.0, -1200.0, -130.0]),  # 400 steps/s
        _fake("sb3", 300, 1, 10.0, [-1500.0], compile_s=None, steps_per_s_learning=20.0),
        {"peer": "sbx", "steps": 300, "seeds": 1, "error": "exit code 1: boom"},
    ]
    agg = bp.aggregate(results)
    j1 = agg[("jaxstab", 1000, 1)]
    assert j1["reps"] == 2 and j1["rate"] == pytest.approx(750.0)
    assert j1["run_s"] == pytest.approx(1.5)
    assert agg[("rejax", 1000, 1)]["rate"] == pytest.approx(225.0)
    assert agg[("sb3", 300, 1)]["rate"] == pytest.approx(20.0)  # the learning-phase rate
    assert agg[("sb3", 300, 1)]["compile_s"] is None
    assert agg[("sbx", 300, 1)]["reps"] == 0 and "boom" in agg[("sbx", 300, 1)]["errors"][0]
    jn = agg[("jaxstab", 1000, 4)]["returns"]
    assert jn["mean"] == pytest.approx(np.mean([-150, -160, -170, -400]))

    rows = bp.ratio_rows(agg, ("jaxstab", 1000, 1), ("jaxstab", 1000, 4), ("rejax", 1000, 1),
                         ("rejax", 1000, 4), [("sb3", 300, 1), ("sbx", 300, 1)],
                         {"rejax_1": 1.5, "rejax_n": 1.5, "sb3": 15.0})
    by_name = {r[0]: r for r in rows}
    r1 = by_name["vs rejax, 1 seed"]
    assert r1[3] == f"{750 / 225:.2f}x" and r1[6] == "yes"
    assert r1[4] == f"{1000 / 250:.2f}x"  # best of the repetitions on each side
    rn = by_name["vs rejax, 4 seeds"]
    assert rn[3] == f"{500 / 400:.2f}x" and rn[6] == "NO"  # 1.25 < 1.5
    rs = by_name["vs sb3 (1 seed, 300 steps)"]
    assert rs[3] == f"{750 / 20:.2f}x" and rs[6] == "yes"  # 37.5 >= 15
    assert by_name["vs sbx (1 seed, 300 steps)"][3] == "n/a"  # failed run: no ratio

    learn = bp.learning_rows(agg, [(("jaxstab", 1000, 4), ("rejax", 1000, 4))])
    # means -220 (ours) vs -592.5 (rejax): ours is better, but within 2 standard errors
    se = np.sqrt(np.var([-150, -160, -170, -400], ddof=1) / 4
                 + np.var([-140, -900, -1200, -130], ddof=1) / 4)
    assert 372.5 < 2 * se
    assert learn[0][3].startswith("yes (difference +372.5 within 2 standard errors")
    assert learn[0][1].startswith(f"{np.mean([-150, -160, -170, -400]):.1f} +- ")

    table = bp.main_table_rows(agg)
    assert [r[0] for r in table if r[2] == 1 and r[1] == 1000] == ["jaxstab", "rejax"]
    assert any(r[0] == "sbx" and r[5] == "FAILED" for r in table)


def test_plan_interleaves_ours_and_rejax():
    for suite in ("sac", "ppo"):
        jobs = bp.plan(suite, quick=False, repeats=2)["jobs"]
        jr = [j for j in jobs if j.lib in ("jaxstab", "rejax")]
        assert [j.lib for j in jr] == ["jaxstab", "rejax"] * (len(jr) // 2)
        # each rejax job has the same budget as the jaxstab job right before it
        assert all(a.key[1:] == b.key[1:] for a, b in zip(jr[::2], jr[1::2]))
    with pytest.raises(ValueError, match="suite"):
        bp.plan("dqn", quick=True, repeats=1)



def test_eval_episodes_reach_every_runner():
    jobs = bp.plan("sac", quick=True, repeats=1)["jobs"]
    assert bp.with_eval_episodes(jobs, None) == jobs
    more = bp.with_eval_episodes(jobs, 100)
    assert len(more) == len(jobs)
    for a, b in zip(jobs, more):
        assert b.argv() == a.argv() + ["--eval-episodes", "100"]
        assert b.key == a.key  # the same comparison rows
    with pytest.raises(ValueError, match="eval episodes"):
        bp.with_eval_episodes(jobs, 0)


def test_plan_with_seed_groups_adds_a_grouped_jaxstab_job_before_each_n_seed_rejax_job():
    for suite, n in (("sac", 8), ("ppo", 16)):
        p = bp.plan(suite, quick=False, repeats=1, repeats_n=2, sac_big_steps=0,
                    seeds_per_batch=4)
        many = [j for j in p["jobs"] if j.seeds == n and j.lib in ("jaxstab", "rejax")]
        # repetition r runs both sides with --seed 1000 * r (distinct runs, same seeds per pair)
        assert [(j.lib, j.extra) for j in many] == [
            ("jaxstab", ()), ("jaxstab", ("--seeds-per-batch", "4")), ("rejax", ()),
            ("jaxstab", ("--seed", "1000")),
            ("jaxstab", ("--seeds-per-batch", "4", "--seed", "1000")),
            ("rejax", ("--seed", "1000"))]
        assert p["ours_g"] == ("jaxstab, groups of 4", many[0].steps, n)
        assert (p["ours_g"], ("rejax", many[0].steps, n)) in p["learn"]
        assert bp.plan(suite, quick=False, repeats=1)["ours_g"] is None
    # the grouped row of the ratio table
    agg = bp.aggregate([_fake("jaxstab, groups of 4", 1000, 4, 2.0, [-150.0] * 4),
                        _fake("rejax", 1000, 4, 4.0, [-160.0] * 4)])
    rows = bp.ratio_rows(agg, ("jaxstab", 1000, 1), ("jaxstab", 1000, 4), ("rejax", 1000, 1),
                         ("rejax", 1000, 4), [], {"rejax_n": 1.5},
                         ours_g=("jaxstab, groups of 4", 1000, 4))
    g = {r[0]: r for r in rows}["jaxstab, groups of 4 vs rejax, 4 seeds"]
    assert g[3] == "2.00x" and g[6] == "yes"


def test_plan_with_cpu_devices_adds_a_sharded_pair_and_compares_it_both_ways():
    p = bp.plan("ppo", quick=False, repeats=1, repeats_n=2, cpu_devices=2)
    many = [(j.lib, j.extra) for j in p["jobs"] if j.seeds == 16]
    dev0, dev1 = ("--cpu-devices", "2"), ("--cpu-devices", "2", "--seed", "1000")
    assert many == [("jaxstab", ()), ("rejax", ()), ("jaxstab", dev0), ("rejax", dev0),
                    ("jaxstab", ("--seed", "1000")), ("rejax", ("--seed", "1000")),
                    ("jaxstab", dev1), ("rejax", dev1)]
    ours_d = ("jaxstab, 2 CPU devices", 499_712, 16)
    rej_d = ("rejax, 2 CPU devices", 499_712, 16)
    assert p["extra_pairs"] == [(ours_d, ("rejax", 499_712, 16)), (ours_d, rej_d)]
    assert (ours_d, rej_d) in p["learn"]
    agg = bp.aggregate([_fake(ours_d[0], 1000, 4, 1.0, [0.0] * 4),
                        _fake("rejax", 1000, 4, 3.0, [0.0] * 4),
                        _fake(rej_d[0], 1000, 4, 2.0, [0.0] * 4)])
    rows = bp.ratio_rows(agg, ("jaxstab", 1000, 1), ("jaxstab", 1000, 4), ("rejax", 1000, 1),
                         ("rejax", 1000, 4), [], {"rejax_n": 1.5},
                         extra_pairs=[((ours_d[0], 1000, 4), ("rejax", 1000, 4)),
                                      ((ours_d[0], 1000, 4), (rej_d[0], 1000, 4))])
    by = {r[0]: r for r in rows}
    assert by["jaxstab, 2 CPU devices vs rejax, 4 seeds"][3] == "3.00x"
    assert by["jaxstab, 2 CPU devices vs rejax, 2 CPU devices, 4 seeds"][3:7] == [
        "2.00x", "2.00x", ">= 1.5x", "yes"]
    learn = bp.learning_rows(agg, [((ours_d[0], 1000, 4), (rej_d[0], 1000, 4))])
    assert learn[0][0] == "1000 steps x 4 seeds (jaxstab, 2 CPU devices vs rejax, 2 CPU devices)"


def test_sac_second_budget_pairs_are_compared_and_named_with_their_budget():
    p = bp.plan("sac", quick=False, repeats=1, sac_big_steps=50_000, seeds_per_batch=1,
                cpu_devices=2)
    big = [(j.lib, j.extra) for j in p["jobs"] if j.steps == 50_000]
    assert big == [("jaxstab", ()), ("jaxstab", ("--seeds-per-batch", "1")), ("rejax", ()),
                   ("jaxstab", ("--cpu-devices", "2")), ("rejax", ("--cpu-devices", "2"))]
    ours_d, rej_d = ("jaxstab, 2 CPU devices", 50_000, 8), ("rejax, 2 CPU devices", 50_000, 8)
    assert p["budget_pairs"] == [
        (("jaxstab", 50_000, 8), ("rejax", 50_000, 8)),
        (("jaxstab, groups of 1", 50_000, 8), ("rejax", 50_000, 8)),
        (ours_d, ("rejax", 50_000, 8)), (ours_d, rej_d)]
    assert (ours_d, rej_d) in p["learn"]
    # every second-budget pair against rejax on one device has its learning row too
    assert (("jaxstab, groups of 1", 50_000, 8), ("rejax", 50_000, 8)) in p["learn"]
    assert (("jaxstab", 50_000, 8), ("rejax", 50_000, 8)) in p["learn"]
    assert bp.plan("sac", quick=False, repeats=1, sac_big_steps=0)["budget_pairs"] == []
    assert bp.plan("ppo", quick=False, repeats=1, cpu_devices=2)["budget_pairs"] == []
    agg = bp.aggregate([_fake("jaxstab", 50_000, 8, 10.0, [0.0] * 8),
                        _fake("rejax", 50_000, 8, 16.0, [0.0] * 8),
                        _fake(ours_d[0], 50_000, 8, 5.0, [0.0] * 8)])
    rows = bp.ratio_rows(agg, ("jaxstab", 20_000, 1), ("jaxstab", 20_000, 8),
                         ("rejax", 20_000, 1), ("rejax", 20_000, 8), [], {"rejax_n": 1.5},
                         budget_pairs=p["budget_pairs"])
    by = {r[0]: r for r in rows}
    assert by["jaxstab vs rejax, 8 seeds, 50000 steps"][3:7] == ["1.60x", "1.60x", ">= 1.5x",
                                                                  "yes"]
    assert by["jaxstab, 2 CPU devices vs rejax, 8 seeds, 50000 steps"][3] == "3.20x"
    # a pair with a missing side (the grouped job did not run) is reported, not dropped
    assert by["jaxstab, groups of 1 vs rejax, 8 seeds, 50000 steps"][1] == "n/a"
    assert by["jaxstab, 2 CPU devices vs rejax, 2 CPU devices, 8 seeds, 50000 steps"][6] == "n/a"


def test_one_seed_repetitions_use_distinct_seeds_and_returns_are_pooled():
    p = bp.plan("sac", quick=False, repeats=3, sac_big_steps=0)
    ones = [j for j in p["jobs"] if j.seeds == 1 and j.lib in ("jaxstab", "rejax")]
    assert [j.extra for j in ones] == [(), (), ("--seed", "1000"), ("--seed", "1000"),
                                       ("--seed", "2000"), ("--seed", "2000")]
    agg = bp.aggregate([_fake("jaxstab", 1000, 2, 1.0, [-100.0, -200.0]),
                        _fake("jaxstab", 1000, 2, 1.0, [-300.0, -400.0])])
    a = agg[("jaxstab", 1000, 2)]
    assert a["final_returns"] == [-100.0, -200.0, -300.0, -400.0]
    assert a["returns"]["mean"] == pytest.approx(-250.0)


def _with_curve(res, curve, steps):
    return {**res, "eval_curve": curve, "eval_steps": steps}


def test_curve_rows_compare_every_evaluation_and_the_area_under_the_curve(tmp_path):
    rng = np.random.default_rng(0)
    ours = rng.normal([-900.0, -400.0, -200.0], 30.0, size=(6, 3))
    peer = rng.normal([-1200.0, -900.0, -250.0], 30.0, size=(6, 3))
    agg = bp.aggregate([
        _with_curve(_fake("jaxstab", 300, 3, 1.0, list(ours[:3, -1])), ours[:3].tolist(),
                    [100, 200, 300]),
        _with_curve(_fake("jaxstab", 300, 3, 1.0, list(ours[3:, -1])), ours[3:].tolist(),
                    [100, 200, 300]),
        # the peer also evaluated at step 50; only common steps are compared
        _with_curve(_fake("rejax", 300, 6, 1.0, list(peer[:, -1])),
                    np.c_[np.zeros(6), peer].tolist(), [50, 100, 200, 300]),
    ])
    agg[("rejax", 300, 3)] = agg.pop(("rejax", 300, 6))
    rows, verdict = bp.curve_rows(agg, ("jaxstab", 300, 3), ("rejax", 300, 3))
    assert [r[0] for r in rows[:-1]] == [100, 200, 300]
    for j, r in enumerate(rows[:-1]):
        assert r[1] == f"{ours[:, j].mean():.1f} +- {ours[:, j].std(ddof=1):.1f}"
        assert r[3] == f"{ours[:, j].mean() - peer[:, j].mean():+.1f}"
    diff = ours.mean(1).mean() - peer.mean(1).mean()
    two_se = 2 * np.sqrt(ours.mean(1).var(ddof=1) / 6 + peer.mean(1).var(ddof=1) / 6)
    assert rows[-1][3] == f"{diff:+.1f} (2 standard errors: {two_se:.1f})"
    assert verdict == "yes"
    # swapped sides: significantly worse
    assert bp.curve_rows(agg, ("rejax", 300, 3), ("jaxstab", 300, 3))[1] == "NO"
    # equal curves: a tie; missing curves: None
    agg2 = bp.aggregate([_with_curve(_fake("jaxstab", 300, 3, 1.0, [0.0] * 3),
                                     ours[:3].tolist(), [100, 200, 300]),
                         _with_curve(_fake("rejax", 300, 3, 1.0, [0.0] * 3),
                                     ours[:3].tolist(), [100, 200, 300])])
    assert bp.curve_rows(agg2, ("jaxstab", 300, 3), ("rejax", 300, 3))[1] == "tie"
    assert bp.curve_rows(agg, ("jaxstab", 300, 3), ("sb3", 300, 1)) is None
    png = bp.curve_figure(agg, [(("jaxstab", 300, 3), ("rejax", 300, 3))],
                          str(tmp_path / "fig" / "c.png"))
    assert png and os.path.getsize(png) > 1000


def test_missing_peer_environment_names_setup_script(tmp_path):
    with pytest.raises(FileNotFoundError, match="setup.sh"):
        bp.peer_python("rejax", str(tmp_path))
    with pytest.raises(SystemExit, match="setup.sh"):
        bp.main(["--suite", "sac", "--peers-dir", str(tmp_path / "nope")])


@pytest.mark.slow
@pytest.mark.timeout(600)
def test_plan_with_vectorized_sac_rows():
    """``vectorized``: each 8-seed jaxstab SAC job is followed by its ``--vectorize 1`` twin,
    compared with rejax at both budgets (speed and learning); PPO has no such rows."""
    p = bp.plan("sac", quick=False, repeats=1, repeats_n=1, sac_big_steps=50_000,
                vectorized=True)
    many = [(j.lib, j.steps, j.extra) for j in p["jobs"] if j.seeds == 8]
    assert many == [("jaxstab", 20_000, ()), ("jaxstab", 20_000, ("--vectorize", "1")),
                    ("rejax", 20_000, ()), ("jaxstab", 50_000, ()),
                    ("jaxstab", 50_000, ("--vectorize", "1")), ("rejax", 50_000, ())]
    vec20, vec50 = (bp.VECTORIZED_NAME, 20_000, 8), (bp.VECTORIZED_NAME, 50_000, 8)
    assert p["extra_pairs"] == [(vec20, ("rejax", 20_000, 8))]
    assert (vec50, ("rejax", 50_000, 8)) in p["budget_pairs"]
    assert (vec20, ("rejax", 20_000, 8)) in p["learn"]
    assert (vec50, ("rejax", 50_000, 8)) in p["learn"]
    assert bp.plan("sac", quick=False, repeats=1)["extra_pairs"] == []
    with pytest.raises(ValueError, match="SAC suite only"):
        bp.plan("ppo", quick=False, repeats=1, vectorized=True)


@pytest.mark.slow
@pytest.mark.timeout(600)
def test_real_tiny_vectorized_run_reports_its_name(tmp_path):
    """The runner's ``--vectorize 1`` builds the batched program and names itself as the
    orchestrator expects."""
    res = bp.run_job(bp.Job("jaxstab", "sac", 2_000, 2, ("--vectorize", "1")), str(tmp_path),
                     timeout=560)
    assert "error" not in res, res.get("error")
    assert res["peer"] == bp.VECTORIZED_NAME and res["seeds"] == 2
    assert len(res["final_returns"]) == 2


def test_real_tiny_run_of_our_sac_runner(tmp_path):
    """jaxstab's runner for real (2000 steps, 1 seed) through run_job, no peer venv needed."""
    res = bp.run_job(bp.Job("jaxstab", "sac", 2_000, 1), str(tmp_path), timeout=560)
    assert "error" not in res, res.get("error")
    assert res["peer"] == "jaxstab" and res["steps"] == 2_000 and res["seeds"] == 1
    assert res["run_s"] > 0 and res["compile_s"] > 0
    assert res["steps_per_s"] == pytest.approx(2_000 / res["run_s"], rel=2e-3)
    (ret,) = res["final_returns"]
    # Pendulum's per-step reward lies in [-(pi^2 + 0.1 * 8^2 + 0.001 * 2^2), 0]; 200 steps.
    assert -200 * (np.pi ** 2 + 6.4 + 0.004) <= ret <= 0.0
    agg = bp.aggregate([res])
    assert agg[("jaxstab", 2_000, 1)]["rate"] == pytest.approx(res["steps_per_s"])


@pytest.mark.slow
@pytest.mark.timeout(600)
def test_real_tiny_run_of_our_ppo_runner_on_two_cpu_devices(tmp_path):
    """jaxstab's PPO runner with --cpu-devices 2 (jaxstab.distributed.sweep in a fresh
    interpreter) against the same runner on one device: same seeds, same final returns up to
    float rounding of two updates, reported under its own library name."""
    one = bp.run_job(bp.Job("jaxstab", "ppo", 1_024, 2), str(tmp_path), timeout=280)
    two = bp.run_job(bp.Job("jaxstab", "ppo", 1_024, 2, ("--cpu-devices", "2")), str(tmp_path),
                     timeout=280)
    assert "error" not in one and "error" not in two, (one.get("error"), two.get("error"))
    assert two["peer"] == "jaxstab, 2 CPU devices" and two["cpu_devices"] == 2
    assert one["peer"] == "jaxstab" and one["cpu_devices"] is None
    assert two["compile_s"] > 0 and two["run_s"] > 0
    # CartPole returns lie in [0, 500]; the two layouts train the same seeds
    assert all(0.0 <= r <= 500.0 for r in two["final_returns"])
    np.testing.assert_allclose(two["final_returns"], one["final_returns"], rtol=0.05)
    bad = bp.run_job(bp.Job("jaxstab", "ppo", 1_024, 2,
                            ("--cpu-devices", "2", "--seeds-per-batch", "1")),
                     str(tmp_path), timeout=120)
    assert "exclusive" in bad["error"]


def test_results_header_command_has_no_machine_paths():
    sys.path.insert(0, ROOT)
    from benchmarks._common import command_line

    root = os.path.join(os.sep, "repo", "x")
    cmd = command_line([os.path.join(root, "benchmarks", "bench_peers.py"), "--peers-dir",
                        os.path.join(os.sep, "tmp", "peers"), "--out",
                        os.path.join(root, "benchmarks", "results"), "--repeats", "2"], root)
    assert cmd == ("python benchmarks/bench_peers.py --peers-dir DIR --out benchmarks/results "
                   "--repeats 2")
    assert os.sep + "tmp" not in cmd and root not in cmd


def test_flags_note_says_whether_the_cpu_scheduler_guard_was_on():
    on = bp.flags_note("--xla_cpu_enable_concurrency_optimized_scheduler=false")
    off = bp.flags_note("")
    assert "guard on" in on and "guard off" not in on
    assert "guard off" in off and "JAXSTAB_CPU_SCHEDULER_WORKAROUND=0" in off
    # a user's explicit =true is also the XLA default scheduler
    assert "guard off" in bp.flags_note("--xla_cpu_enable_concurrency_optimized_scheduler=true")
    # =0 switches the scheduler off as =false does: the guard was on
    assert "guard on" in bp.flags_note("--xla_cpu_enable_concurrency_optimized_scheduler=0")


def test_write_results_keeps_a_given_machine_description(tmp_path, monkeypatch):
    """A re-rendered result keeps the original run's machine line (date included)."""
    common = load_benchmark("_common")
    monkeypatch.setattr(common, "RESULTS_DIR", str(tmp_path))
    machine = {**common.machine_info(), "date": "2001-02-03 04:05 UTC"}
    md = common.write_results("t", "T", ["a"], [[1]], "n", machine=machine, command="x")
    assert "; 2001-02-03 04:05 UTC." in open(md).read()
    with open(md[:-3] + ".json") as fh:
        assert json.load(fh)["machine"]["date"] == "2001-02-03 04:05 UTC"
    md = common.write_results("t", "T", ["a"], [[1]], "n", command="x")  # default: now
    assert "2001-02-03" not in open(md).read()


def test_machine_line_says_when_the_process_was_pinned_to_fewer_cores(tmp_path, monkeypatch):
    """A run under `taskset -c 0` on a bigger machine says so in its header; an old machine
    description without the affinity field renders as before."""
    common = load_benchmark("_common")
    monkeypatch.setattr(common, "RESULTS_DIR", str(tmp_path))
    base = common.machine_info()
    assert base["cores_usable"] == len(os.sched_getaffinity(0))
    pinned = {**base, "cpu_count": 8, "cores_usable": 1}
    md = open(common.write_results("t", "T", ["a"], [[1]], machine=pinned, command="x")).read()
    assert "(8 cores, this process pinned to 1)" in md
    for info in ({**base, "cpu_count": 8, "cores_usable": 8},
                 {k: v for k, v in {**base, "cpu_count": 8}.items() if k != "cores_usable"}):
        md = open(common.write_results("t", "T", ["a"], [[1]], machine=info, command="x")).read()
        assert "(8 cores)" in md and "pinned" not in md
