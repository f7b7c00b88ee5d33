"""Metrics vs NumPy float64 formulas, masks, batching, hand-computed values."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from jaxstab.envs import metrics as M


def _np_metrics(r, to=None):
    r = np.asarray(r, np.float64)
    n = r.size
    mean, std = r.mean(), r.std(ddof=1)
    wealth = np.cumprod(1.0 + r)
    peak = np.maximum.accumulate(np.concatenate([[1.0], wealth]))[1:]
    mdd = (wealth / peak - 1.0).min()
    ann = wealth[-1] ** (252.0 / n) - 1.0
    out = {
        "annual_return": ann,
        "annual_volatility": std * np.sqrt(252),
        "sharpe": np.sqrt(252) * mean / std,
        "sortino": np.sqrt(252) * mean / np.sqrt(np.mean(np.minimum(r, 0.0) ** 2)),
        "max_drawdown": mdd,
        "calmar": ann / abs(mdd),
        "total_return": wealth[-1] - 1.0,
        "num_periods": float(n),
    }
    if to is not None:
        out["turnover"] = float(np.mean(to))
    return out


@pytest.fixture(scope="module")
def series():
    rng = np.random.default_rng(0)
    return rng.normal(4e-4, 0.012, 1000), rng.uniform(0, 0.1, 1000)


def test_summary_matches_numpy_float64(series, x64):
    r, to = series
    got = M.summary(jnp.asarray(r), jnp.asarray(to))
    ref = _np_metrics(r, to)
    assert set(got) == set(ref)
    for k in ref:
        assert got[k].dtype == jnp.float64
        np.testing.assert_allclose(got[k], ref[k], rtol=1e-10, err_msg=k)


def test_summary_float32_close(series):
    r, to = series
    got = M.summary(jnp.asarray(r, jnp.float32), jnp.asarray(to, jnp.float32))
    ref = _np_metrics(r, to)
    for k in ref:
        np.testing.assert_allclose(got[k], ref[k], rtol=2e-4, err_msg=k)


def test_mask_equals_truncation_and_batch(series, x64):
    r, to = series
    mask = np.arange(r.size) < 700
    got = M.summary(jnp.asarray(r), jnp.asarray(to), jnp.asarray(mask))
    ref = M.summary(jnp.asarray(r[:700]), jnp.asarray(to[:700]))
    for k in ref:
        np.testing.assert_allclose(got[k], ref[k], rtol=1e-12, err_msg=k)
    batch = jnp.asarray(np.stack([r, r[::-1], 0.5 * r]))
    b = M.summary(batch)
    for i, s in enumerate([r, r[::-1], 0.5 * r]):
        ref = _np_metrics(s)
        for k in ref:
            np.testing.assert_allclose(b[k][i], ref[k], rtol=1e-10, err_msg=k)
    vm = jax.vmap(M.summary)(batch)
    for k in vm:
        np.testing.assert_allclose(vm[k], b[k], rtol=1e-12)
    jitted = jax.jit(M.summary)(batch)
    for k in jitted:
        np.testing.assert_allclose(jitted[k], b[k], rtol=1e-12)


def test_hand_values(x64):
    r = jnp.array([0.10, -0.20, 0.05, 0.10])
    # wealth 1.1, 0.88, 0.924, 1.0164; peak 1.1 -> drawdown 0.88/1.1 - 1 = -0.2
    assert float(M.max_drawdown(r)) == pytest.approx(-0.2, rel=1e-12)
    # a first-day loss is a drawdown from V_0 = 1
    assert float(M.max_drawdown(jnp.array([-0.1, 0.05]))) == pytest.approx(-0.1, rel=1e-12)
    assert float(M.summary(r)["total_return"]) == pytest.approx(0.0164, rel=1e-10)
    # no drawdown: Calmar is NaN, drawdown 0
    up = jnp.array([0.01, 0.02])
    assert float(M.max_drawdown(up)) == 0.0 and np.isnan(float(M.calmar(up)))
    # 252 periods of 0.1% compounding: annual return (1.001)^252 - 1
    assert float(M.annual_return(jnp.full(252, 0.001))) == pytest.approx(1.001 ** 252 - 1,
                                                                            rel=1e-12)
    # ruin: a return of -1 (or below) means wealth 0
    ruin = jnp.array([0.1, -1.5, 0.0])
    assert float(M.max_drawdown(ruin)) == -1.0 and float(M.annual_return(ruin)) == -1.0


def test_bad_inputs():
    with pytest.raises(ValueError, match="mask shape"):
        M.summary(jnp.zeros(5), mask=jnp.ones(4, bool))
    with pytest.raises(ValueError, match="turnover shape"):
        M.summary(jnp.zeros(5), turnover=jnp.zeros(3))
    with pytest.raises(ValueError, match="time axis"):
        M.sharpe(jnp.zeros(()))
