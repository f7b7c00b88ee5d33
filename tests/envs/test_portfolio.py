"""Portfolio environment vs an independent NumPy float64 re-computation on the bundled data."""

import csv
import gzip
import os

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from jaxstab.envs import data as D
from jaxstab.envs.portfolio import (
    RUIN_FLOOR,
    eval_params,
    make_portfolio,
    obs_layout,
    sanitize_weights,
)

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
CSV = os.path.join(ROOT, "envs", "data", "sp500_20_daily.csv.gz")


@pytest.fixture(scope="module")
def raw():
    with gzip.open(CSV, "rt") as f:
        rows = list(csv.reader(f))
    dates = np.array([r[0] for r in rows[1:]], dtype="datetime64[D]")
    prices = np.array([[float(x) for x in r[1:]] for r in rows[1:]])
    return dates, prices


@pytest.fixture(scope="module")
def val():
    return make_portfolio("validation", cost_bps=25.0, window=10, features=("volatility",))


def _np_sanitize(a):
    a = np.where(np.isfinite(a), a, 0.0)
    a = np.maximum(a, 0.0)
    s = a.sum()
    return a / s if s > 0 else np.full(a.shape, 1.0 / a.size)


def _np_rollout(prices, t0, actions, cost, cash):
    """NumPy loop: day k earns prices[t0+k]/prices[t0+k-1] - 1; holding starts at 1/N."""
    n = prices.shape[1]
    held = np.concatenate([np.full(n, 1.0 / n), np.zeros(int(cash))])
    out = []
    for k, a in enumerate(actions):
        w = _np_sanitize(np.asarray(a, np.float64))
        R = prices[t0 + k] / prices[t0 + k - 1] - 1.0
        if cash:
            R = np.concatenate([R, [0.0]])
        to = np.abs(w - held).sum()
        gross = w @ R
        x = gross - cost * to
        out.append((x, to, np.log(1.0 + x), w))
        held = w * (1.0 + R) / (1.0 + gross)
    return out, held


def _run(env, params, state, actions):
    def body(s, a):
        obs, s, r, te, tr, info = env.step(jax.random.key(0), s, a, params)
        return s, (obs, r, te, tr, info)
    return jax.lax.scan(body, state, jnp.asarray(actions))


@pytest.mark.parametrize("cash", [False, True])
def test_steps_match_numpy(raw, cash):
    dates, prices = raw
    env, params = make_portfolio("validation", cost_bps=25.0, window=10, cash=cash)
    params = eval_params(params)
    sd = D.split(D.load_prices(), "validation", window=10)
    t0 = int(np.flatnonzero(dates == sd.dates[0])[0])
    rng = np.random.default_rng(3 + cash)
    a_dim = params.num_actions
    T = 60
    seqs = [rng.dirichlet(np.full(a_dim, 0.3), T),                 # random simplex points
            np.eye(a_dim)[rng.integers(0, a_dim, T)],               # concentrated, high turnover
            rng.normal(0.05, 0.1, (T, a_dim))]                     # off the simplex: sanitized
    seqs[2][5, 3] = np.nan
    seqs[2][7] = -1.0                                              # all negative -> equal weight
    for actions in seqs:
        obs0, state = env.reset(jax.random.key(1), params)
        final, (obs, r, te, tr, info) = _run(env, params, state, actions.astype(np.float32))
        ref, held = _np_rollout(prices, t0, actions, 25e-4, cash)
        x, to, lg, w = map(np.array, zip(*ref))
        np.testing.assert_allclose(info["portfolio_return"], x, atol=2e-7, rtol=1e-5)
        np.testing.assert_allclose(info["turnover"], to, atol=1e-6, rtol=1e-5)
        np.testing.assert_allclose(r, lg, atol=2e-7, rtol=1e-5)
        np.testing.assert_allclose(info["weights"], w, atol=1e-6)
        np.testing.assert_allclose(final.weights, held, atol=1e-6)
        np.testing.assert_allclose(final.log_wealth, lg.sum(), rtol=1e-5, atol=1e-6)
        assert not np.asarray(te).any() and not np.asarray(tr).any()


def test_observation_layout_and_content(raw, val):
    dates, prices = raw
    env, params = val
    params = eval_params(params)
    lay = obs_layout(params)
    n, w = 20, 10
    assert list(lay) == ["returns", "volatility", "weights", "crisis"]
    assert lay["returns"] == slice(0, w * n) and lay["volatility"] == slice(200, 220)
    assert lay["weights"] == slice(220, 240) and lay["crisis"] == slice(240, 241)
    assert params.obs_dim == 241 == env.observation_space(params).shape[0]
    sd = D.split(D.load_prices(), "validation", window=10)
    t0 = int(np.flatnonzero(dates == sd.dates[0])[0])
    lr_all = np.log(prices[1:] / prices[:-1])   # row k dated dates[k+1]
    crisis_all = D.crisis_level(lr_all)
    obs, state = env.reset(jax.random.key(0), params)
    acts = np.random.default_rng(0).dirichlet(np.ones(n), 5).astype(np.float32)
    for k in range(6):
        t = t0 + k                                # next return: prices[t]/prices[t-1]
        win = lr_all[t - 1 - w:t - 1]             # dated dates[t-w] .. dates[t-1]
        np.testing.assert_allclose(np.asarray(obs[lay["returns"]]).reshape(w, n), win,
                                   atol=1e-7, rtol=1e-6)
        np.testing.assert_allclose(obs[lay["volatility"]], win.std(axis=0), atol=1e-7,
                                   rtol=1e-5)
        np.testing.assert_allclose(obs[lay["weights"]], state.weights)
        np.testing.assert_allclose(obs[-1], crisis_all[t - 2], atol=1e-7)
        assert 0.0 <= float(obs[-1]) <= 1.0
        if k < 5:
            obs, state, *_ = env.step(jax.random.key(0), state, acts[k], params)
    assert obs.dtype == jnp.float32
    assert float(params.crisis.min()) >= 0 and float(params.crisis.max()) <= 1


def test_random_start_window_matches_data(raw):
    dates, prices = raw
    env, params = make_portfolio("train", window=5)
    sd = D.split(D.load_prices(), "train", window=5)
    lr_all = np.log(prices[1:] / prices[:-1])
    starts = []
    for i in range(5):
        obs, state = env.reset(jax.random.key(i), params)
        s = int(state.start)
        starts.append(s)
        assert 0 <= s <= params.num_steps - 252
        t = int(np.flatnonzero(dates == sd.dates[s])[0])
        np.testing.assert_allclose(np.asarray(obs[:100]).reshape(5, 20), lr_all[t - 6:t - 1],
                                   atol=1e-7, rtol=1e-6)
    assert len(set(starts)) > 1


def test_jit_equals_eager_and_vmap_equals_loop(val):
    env, params = val
    a = jnp.asarray(np.random.default_rng(0).dirichlet(np.ones(20), 3), jnp.float32)

    key = jax.random.key(5)
    obs, s = env.reset(key, params)
    s = s.replace(time=s.time + 3)
    jitted = jax.jit(env.step_env)(key, s, a[0], params)
    eager = env.step_env(key, s, a[0], params)   # op by op
    for x, y in zip(jax.tree.leaves(jitted), jax.tree.leaves(eager)):
        np.testing.assert_allclose(x, y, rtol=1e-6, atol=1e-7)

    # many environments at once; a few checked against single-env calls
    keys = jax.random.split(jax.random.key(7), 256)
    acts = jnp.asarray(np.random.default_rng(1).dirichlet(np.ones(20), 256), jnp.float32)
    obs, st = jax.vmap(env.reset, in_axes=(0, None))(keys, params)
    obs2, st2, r, te, tr, info = jax.vmap(env.step, in_axes=(0, 0, 0, None))(keys, st, acts,
                                                                              params)
    assert obs2.shape == (256, params.obs_dim) and r.shape == (256,)
    for i in (0, 77, 255):
        o, s = env.reset(keys[i], params)
        o_, s_, r_, *_ = env.step(keys[i], s, acts[i], params)
        np.testing.assert_allclose(obs[i], o, rtol=1e-6)
        np.testing.assert_allclose(obs2[i], o_, rtol=1e-6, atol=1e-7)
        np.testing.assert_allclose(r[i], r_, rtol=1e-6, atol=1e-8)


def test_truncation_and_auto_reset():
    env, params = make_portfolio("validation", episode_length=4, window=3)
    key = jax.random.key(11)
    obs, state = env.reset(key, params)
    a = jnp.full((20,), 0.05, jnp.float32)
    for i in range(4):
        k = jax.random.fold_in(key, i)
        obs_pre = env.get_obs(state.replace(time=state.time + 1), params)
        obs, state2, r, te, tr, info = env.step(k, state, a, params)
        assert not bool(te)
        assert bool(tr) == (i == 3) and bool(info["truncated"]) == (i == 3)
        fin = np.asarray(info["final_observation"])
        lay = obs_layout(params)
        np.testing.assert_allclose(fin[:lay["weights"].start], obs_pre[:lay["weights"].start])
        np.testing.assert_allclose(fin[-1], obs_pre[-1])
        if i < 3:
            np.testing.assert_allclose(fin[lay["weights"]], state2.weights)
        if i < 3:
            assert int(state2.time) == i + 1 and int(state2.start) == int(state.start)
            np.testing.assert_array_equal(obs, info["final_observation"])
        else:  # auto-reset: observation and state of the next episode (same key as gymnax)
            _, k_reset = jax.random.split(k)
            obs_r, state_r = env.reset(k_reset, params)
            assert int(state2.time) == 0
            np.testing.assert_array_equal(obs, obs_r)
            np.testing.assert_array_equal(state2.start, state_r.start)
            np.testing.assert_allclose(state2.weights, 0.05)
        state = state2
    # evaluation mode: the whole split from day 0, truncated exactly at the end
    ep = eval_params(params)
    assert ep.max_steps_in_episode == ep.num_steps == 756 and not ep.random_start
    _, s = env.reset(jax.random.key(0), ep)
    assert int(s.start) == 0
    _, (obs, r, te, tr, info) = _run(env, ep, s, np.full((756, 20), 0.05, np.float32))
    tr = np.asarray(tr)
    assert tr[-1] and not tr[:-1].any() and not np.asarray(te).any()


def test_ruin_terminates_with_finite_floor():
    prices = np.ones((12, 2))
    prices[8:, 0] = 1e-5          # asset 0 loses 99.999% on day 8
    md = D.load_prices(prices)
    env, params = make_portfolio("all", data=md, window=2, cost_bps=0.0, episode_length=None)
    params = eval_params(params)
    obs, state = env.reset(jax.random.key(0), params)
    terms, rewards = [], []
    for i in range(params.num_steps):
        # all-in asset 1, then all-in asset 0 on its crash day at 60% cost per unit turnover:
        # x = (1e-5 - 1) - 0.6 * 2 < -1
        p = params.replace(cost=jnp.asarray(0.6 if i == 5 else 0.0, jnp.float32))
        a = jnp.array([1.0, 0.0]) if i == 5 else jnp.array([0.0, 1.0])
        obs, state, r, te, tr, info = env.step(jax.random.key(i), state, a, p)
        terms.append(bool(te))
        rewards.append(float(r))
        if te:
            break
    # day index: the split starts at return row 2 (dated day 3); the crash return is row 7
    assert terms == [False] * 5 + [True]
    assert rewards[-1] == pytest.approx(np.log(RUIN_FLOOR), rel=1e-5)
    assert np.isfinite(rewards).all()
    assert bool(info["terminated"]) and not bool(tr)
    assert float(info["portfolio_return"]) <= -1.0
    assert int(state.time) == 0   # auto-reset after the ruin


def test_sanitize_and_bad_action_shape(val):
    env, params = val
    cases = np.array([[0.2, 0.3, 0.5], [np.nan, 1.0, 1.0], [-1.0, 2.0, 2.0], [0.0, 0.0, 0.0],
                      [-1.0, -np.inf, np.inf], [1e-30, 0.0, 0.0]])
    out = np.asarray(sanitize_weights(jnp.asarray(cases)))
    ref = np.stack([_np_sanitize(c) for c in cases])
    np.testing.assert_allclose(out, ref, rtol=1e-6)
    np.testing.assert_allclose(out.sum(-1), 1.0, rtol=1e-6)
    _, state = env.reset(jax.random.key(0), params)
    with pytest.raises(ValueError, match=r"action must have shape \(20,\)"):
        env.step(jax.random.key(0), state, jnp.ones(21) / 21, params)


def test_make_portfolio_errors():
    with pytest.raises(ValueError, match="cost_bps"):
        make_portfolio("test", cost_bps=-1.0)
    with pytest.raises(ValueError, match="features"):
        make_portfolio("test", features=("momentum",))
    with pytest.raises(ValueError, match="episode_length .* exceeds"):
        make_portfolio("validation", episode_length=10_000)
    with pytest.raises(ValueError, match="unknown split"):
        make_portfolio("holdout")


def test_state_dtypes_stable_and_one_trace(val):
    env, params = val
    env2, _ = make_portfolio("validation", window=10)
    assert env == env2 and hash(env) == hash(env2)   # share gymnax's jit cache
    _, s0 = env.reset(jax.random.key(0), params)
    traces = []

    def step(s, a):
        traces.append(1)
        return env.step_env(jax.random.key(0), s, a, params)[1]

    f = jax.jit(step)
    s = s0
    for _ in range(3):
        s = f(s, jnp.full((20,), 0.05, jnp.float32))
    assert len(traces) == 1
    for x, y in zip(jax.tree.leaves(s0), jax.tree.leaves(s)):
        assert x.dtype == y.dtype and x.shape == y.shape and not y.weak_type


_sanitize_jit = jax.jit(sanitize_weights)
BIG = float(np.float32(3e38))


@settings(max_examples=60, deadline=None)
@given(st.lists(st.one_of(st.floats(-BIG, BIG, width=32, allow_subnormal=False),
                          st.sampled_from([np.nan, np.inf, -np.inf, 0.0])),
                min_size=5, max_size=5))
def test_sanitize_property(values):
    a = np.array(values, np.float32)
    w = np.asarray(_sanitize_jit(jnp.asarray(a)))
    assert np.isfinite(w).all() and (w >= 0).all()
    np.testing.assert_allclose(w.sum(), 1.0, rtol=1e-5)
    np.testing.assert_allclose(w, _np_sanitize(a.astype(np.float64)), rtol=1e-5, atol=1e-6)
