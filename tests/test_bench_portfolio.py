"""Tests of benchmarks/bench_portfolio.py: its evaluation helper against jaxstab.envs.baselines and
an independent NumPy re-computation, its stability summary against NumPy, and a tiny end-to-end
run of the script."""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from _bench_loader import load_benchmark

from jaxstab.envs import baseline, make_portfolio

bp = load_benchmark("bench_portfolio")


def test_evaluator_matches_equal_weight_baseline_and_numpy():
    env, params = make_portfolio("validation")
    a = params.num_actions
    ev = bp.make_split_evaluator(env, params, lambda w, obs, s: (w, s),
                                 lambda: jnp.zeros((0,), jnp.float32))
    # two "seeds": both the constant 1/N policy
    m, r = ev(jnp.full((2, a), 1.0 / a, jnp.float32))
    bm, br, _ = baseline("equal_weight", env, params)
    for k in bp.METRICS:
        np.testing.assert_allclose(np.asarray(m[k]), np.full(2, float(bm[k])), rtol=1e-5,
                                   atol=1e-7, err_msg=k)
    np.testing.assert_allclose(np.asarray(r[0]), np.asarray(br), rtol=1e-6, atol=1e-9)
    # independent NumPy re-computation of the Sharpe ratio and max drawdown from the returns
    x = np.asarray(r[0], np.float64)
    sharpe = np.mean(x) / np.std(x, ddof=1) * np.sqrt(252)
    wealth = np.cumprod(1 + x)
    mdd = np.min(wealth / np.maximum.accumulate(np.concatenate([[1.0], wealth]))[1:] - 1)
    np.testing.assert_allclose(float(m["sharpe"][0]), sharpe, rtol=1e-3)
    np.testing.assert_allclose(float(m["max_drawdown"][0]), mdd, rtol=1e-3, atol=1e-5)


def test_evaluator_carries_policy_state_per_seed():
    """A stateful policy whose state counts steps: seed 0 goes all-in on asset 0 on even days."""
    env, params = make_portfolio("validation")
    a = params.num_actions

    def policy(p, obs, s):
        w = jnp.where(s[0] % 2 == 0, jax.nn.one_hot(p, a), jnp.full((a,), 1.0 / a))
        return w, s + 1

    ev = bp.make_split_evaluator(env, params, policy, lambda: jnp.zeros((1,), jnp.int32))
    m, r = ev(jnp.array([0, 3]))
    assert r.shape == (2, params.num_steps)
    assert not np.allclose(np.asarray(r[0]), np.asarray(r[1]))
    assert np.all(np.asarray(m["turnover"]) > 0.5)  # switching every day costs turnover


def test_stability_summary_matches_numpy():
    rng = np.random.default_rng(0)
    outs = []
    for _ in range(3):
        o = {"alpha": rng.uniform(0.1, 2.0, (2, 10)).astype(np.float32),
             "critic_loss": rng.uniform(0, 20, (2, 10)).astype(np.float32),
             "skipped": (rng.uniform(size=(2, 10)) < 0.1).astype(np.float32),
             "updated": np.ones((2, 10), np.float32)}
        outs.append(o)
    outs[0]["updated"][:, :5] = 0.0
    outs[1]["critic_loss"][1, 3] = np.nan
    s = bp.sac_stability(outs, skip_fraction=0.2)
    cat = {k: np.concatenate([o[k] for o in outs], 1) for k in outs[0]}
    for i in range(2):
        idx = np.nonzero(cat["updated"][i])[0]
        late = idx[int(0.2 * len(idx)):]
        assert s["alpha_max"][i] == pytest.approx(float(np.max(cat["alpha"][i][late])))
        assert s["critic_loss_max"][i] == pytest.approx(float(np.nanmax(cat["critic_loss"][i][idx])))
        want = int(np.sum(cat["skipped"][i][idx] > 0.5) + np.sum(np.isnan(cat["critic_loss"][i][idx])))
        assert s["nonfinite"][i] == want


@pytest.mark.slow
def test_quick_runs_end_to_end(tmp_path):
    out = bp.main(["--quick", "--steps", "128", "--ppo-steps", "256", "--seeds", "2",
                   "--checkpoints", "2", "--no-ablation", "--hidden", "8"])
    assert not out["missing"], out["missing"]
    names = set(out["results"])
    assert any(n.startswith("SAC+IRT") for n in names)
    for res in out["results"].values():
        assert res["test"]["sharpe"].shape == (2,)
        assert np.all(np.isfinite(res["test"]["sharpe"]))
        assert np.all(res["selected"] >= 0) and np.all(res["selected"] < 2)
        # the selected checkpoint is the validation argmax per seed
        np.testing.assert_array_equal(res["selected"], np.argmax(res["val_sharpe"], axis=0))
        if "stability" in res:  # SAC runs learned (warm-up is half the run) without NaN
            assert np.all(np.isfinite(res["stability"]["critic_loss_max"]))
            assert sum(res["stability"]["nonfinite"]) == 0
    assert len(out["rows"]) == len(out["results"]) + 3
