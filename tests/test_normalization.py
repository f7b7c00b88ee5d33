"""Tests for jaxstab.normalization: Chan merges, VecNormalize reward path, windowed stats."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from jaxstab.normalization import (
    RewardNormalizerState,
    RunningStats,
    WindowedStats,
    reward_normalizer_init,
    reward_normalizer_normalize,
    reward_normalizer_update,
    reward_normalizer_update_rollout,
    running_stats_init,
    running_stats_mean,
    running_stats_merge,
    running_stats_reduce,
    running_stats_std,
    running_stats_update,
    running_stats_var,
    windowed_stats_init,
    windowed_stats_mean,
    windowed_stats_normalize,
    windowed_stats_std,
    windowed_stats_update,
    windowed_stats_var,
)

# the library code is strict-dtype clean (explicit casts everywhere)
pytestmark = pytest.mark.usefixtures("strict_dtypes")


# ---------------------------------------------------------------------------------------------
# running statistics
# ---------------------------------------------------------------------------------------------
def _merge_in_order(parts, order, tree):
    """Merge RunningStats `parts` following a random binary tree given by `order`/`tree`."""
    items = [parts[i] for i in order]
    k = 0
    while len(items) > 1:
        j = tree[k % len(tree)] % (len(items) - 1)
        k += 1
        merged = running_stats_merge(items[j], items[j + 1])
        items = items[:j] + [merged] + items[j + 2:]
    return items[0]


@settings(max_examples=40, deadline=None)
@given(
    data=st.lists(st.floats(-1e3, 1e3, allow_nan=False), min_size=1, max_size=40),
    cuts=st.lists(st.integers(0, 40), max_size=6),
    seed=st.integers(0, 2**31 - 1),
    offset=st.floats(-1e4, 1e4),
)
def test_merge_any_partition_any_order_equals_concatenation(data, cuts, seed, offset):
    with jax.enable_x64(True):
        x = np.asarray(data, np.float64) + offset
        bounds = sorted({0, len(x), *[c % (len(x) + 1) for c in cuts]})
        chunks = [x[a:b] for a, b in zip(bounds[:-1], bounds[1:])]
        parts = [running_stats_update(running_stats_init(dtype=jnp.float64), jnp.asarray(c))
                 for c in chunks]
        parts.append(running_stats_init(dtype=jnp.float64))  # an empty state is an identity
        rng = np.random.default_rng(seed)
        order = rng.permutation(len(parts))
        tree = rng.integers(0, 1000, size=8).tolist()
        s = _merge_in_order(parts, order, tree)
        assert float(s.count) == len(x)
        # rounding scales: the mean's with the offset, the variance's with the spread only
        scale = max(1.0, float(np.max(np.abs(x))))
        spread = max(1.0, float(np.max(np.abs(x - x.mean()))))
        np.testing.assert_allclose(float(running_stats_mean(s)), x.mean(), rtol=1e-10,
                                   atol=1e-13 * scale)
        np.testing.assert_allclose(float(running_stats_var(s)), x.var(), rtol=1e-10,
                                   atol=1e-12 * spread**2)
        # closed-form k-way reduce agrees with the pairwise merges
        stacked = jax.tree.map(lambda *f: jnp.stack(f), *parts)
        r = running_stats_reduce(stacked)
        np.testing.assert_allclose(float(r.mean), x.mean(), rtol=1e-10, atol=1e-13 * scale)
        np.testing.assert_allclose(float(r.var), x.var(), rtol=1e-10, atol=1e-12 * spread**2)


def test_vmap_over_envs_then_merge(x64):
    rng = np.random.default_rng(0)
    num_envs, t, dim = 6, 7, 3
    x = rng.normal(loc=5.0, scale=2.0, size=(num_envs, t, dim))
    init = jax.vmap(lambda _: running_stats_init((dim,), jnp.float64))(jnp.arange(num_envs))
    per_env = jax.vmap(running_stats_update)(init, jnp.asarray(x))
    assert per_env.count.shape == (num_envs,) and per_env.mean.shape == (num_envs, dim)
    flat = x.reshape(-1, dim)
    reduced = running_stats_reduce(per_env)
    np.testing.assert_allclose(np.asarray(reduced.mean), flat.mean(0), rtol=1e-10)
    np.testing.assert_allclose(np.asarray(reduced.var), flat.var(0), rtol=1e-10)
    # a sequential fold of pairwise merges (in reverse env order) gives the same
    acc = running_stats_init((dim,), jnp.float64)
    for e in reversed(range(num_envs)):
        acc = running_stats_merge(acc, jax.tree.map(lambda f: f[e], per_env))
    np.testing.assert_allclose(np.asarray(acc.mean), flat.mean(0), rtol=1e-10)
    np.testing.assert_allclose(np.asarray(acc.var), flat.var(0), rtol=1e-10)
    # vmapped pairwise merge of two stacks of per-env statistics
    second = jax.vmap(running_stats_update)(init, jnp.asarray(x[:, ::-1] * 2.0))
    both = jax.vmap(running_stats_merge)(per_env, second)
    for e in range(num_envs):
        ref = np.concatenate([x[e], x[e, ::-1] * 2.0])
        np.testing.assert_allclose(np.asarray(both.mean[e]), ref.mean(0), rtol=1e-10)
        np.testing.assert_allclose(np.asarray(both.var[e]), ref.var(0), rtol=1e-10)


def test_sequential_updates_and_axes(x64):
    rng = np.random.default_rng(1)
    x = rng.normal(size=(5, 4, 2))
    s = running_stats_init((2,), jnp.float64)
    for i in range(5):
        s = running_stats_update(s, jnp.asarray(x[i]))
    flat = x.reshape(-1, 2)
    np.testing.assert_allclose(np.asarray(s.mean), flat.mean(0), rtol=1e-12)
    np.testing.assert_allclose(np.asarray(s.var), flat.var(0), rtol=1e-12)
    np.testing.assert_allclose(np.asarray(running_stats_var(s, ddof=1)), flat.var(0, ddof=1),
                               rtol=1e-12)
    np.testing.assert_allclose(np.asarray(running_stats_std(s)), flat.std(0), rtol=1e-12)
    # several sample axes at once, and a non-leading sample axis
    s2 = running_stats_update(running_stats_init((2,), jnp.float64), jnp.asarray(x), axis=(0, 1))
    np.testing.assert_allclose(np.asarray(s2.var), flat.var(0), rtol=1e-12)
    s3 = running_stats_update(running_stats_init((5,), jnp.float64), jnp.asarray(x[:, :, 0]),
                              axis=1)
    np.testing.assert_allclose(np.asarray(s3.mean), x[:, :, 0].mean(1), rtol=1e-12)


def test_large_offset_is_numerically_stable():
    # float32, mean 1e4 and std 1: the naive sum-of-squares formula loses everything here
    rng = np.random.default_rng(2)
    x = (1e4 + rng.normal(size=(50, 20))).astype(np.float32)
    s = running_stats_init()
    for row in x:
        s = running_stats_update(s, jnp.asarray(row))
    np.testing.assert_allclose(float(s.var), x.astype(np.float64).var(), rtol=1e-3)


def test_sb3_prior_count_matches_reference(x64):
    # SB3 RunningMeanStd(epsilon=1e-4): mean 0, var 1, count 1e-4, update_from_moments
    rng = np.random.default_rng(3)
    batches = [rng.normal(size=(4,)) * 3 + 1 for _ in range(5)]
    mean, var, count = 0.0, 1.0, 1e-4
    s = running_stats_init((), jnp.float64, prior_count=1e-4)
    for b in batches:
        bm, bv, bc = b.mean(), b.var(), b.shape[0]
        delta = bm - mean
        tot = count + bc
        m2 = var * count + bv * bc + delta**2 * count * bc / tot
        mean, var, count = mean + delta * bc / tot, m2 / tot, tot
        s = running_stats_update(s, jnp.asarray(b))
    np.testing.assert_allclose(float(s.mean), mean, rtol=1e-12)
    np.testing.assert_allclose(float(s.var), var, rtol=1e-12)
    np.testing.assert_allclose(float(s.count), count, rtol=1e-12)


def test_running_stats_dtypes_jit_and_errors():
    s = running_stats_init((3,))
    assert s.count.shape == () and s.count.dtype == jnp.float32
    assert s.mean.dtype == jnp.float32 and s.m2.shape == (3,)
    assert float(s.var.sum()) == 0.0  # empty: zeros, not NaN
    traces = []

    @jax.jit
    def step(state, batch):
        traces.append(1)
        return running_stats_update(state, batch)

    s1 = step(s, jnp.ones((4, 3), jnp.float32))
    s2 = step(s1, jnp.ones((4, 3), jnp.float32))
    assert jax.tree.map(lambda x: (x.shape, x.dtype), s2) == jax.tree.map(
        lambda x: (x.shape, x.dtype), s)
    assert len(traces) == 1  # the initial state's dtypes/weak types match the updated one's
    with pytest.raises(ValueError, match="statistics' shape"):
        running_stats_update(s, jnp.ones((4, 2)))
    with pytest.raises(ValueError, match="axis"):
        running_stats_update(s, jnp.ones((4, 3)), axis=2)
    with pytest.raises(ValueError, match="sample axis"):
        running_stats_update(running_stats_init(), jnp.ones(()))
    with pytest.raises(ValueError, match="shapes"):
        running_stats_merge(s, running_stats_init((2,)))
    with pytest.raises(ValueError, match="stack axis"):
        running_stats_reduce(s)
    with pytest.raises(TypeError, match="dtype"):
        running_stats_init((), jnp.int32)
    with pytest.raises(ValueError, match="prior_count"):
        running_stats_init((), prior_count=-1.0)
    assert isinstance(s, RunningStats)


# ---------------------------------------------------------------------------------------------
# reward normalizer vs a NumPy VecNormalize reward path
# ---------------------------------------------------------------------------------------------
class NumpyVecNormalizeReward:
    """Straightforward NumPy re-implementation of SB3 VecNormalize's reward path."""

    def __init__(self, num_envs, gamma, clip, eps, prior=1e-4):
        self.returns = np.zeros(num_envs)
        self.mean, self.var, self.count = 0.0, 1.0, prior
        self.gamma, self.clip, self.eps = gamma, clip, eps

    def _update(self, arr):
        bm, bv, bc = arr.mean(axis=0), arr.var(axis=0), arr.shape[0]
        delta = bm - self.mean
        tot = self.count + bc
        m2 = self.var * self.count + bv * bc + delta**2 * self.count * bc / tot
        self.mean, self.var, self.count = self.mean + delta * bc / tot, m2 / tot, tot

    def step(self, reward, done):
        self.returns = self.returns * self.gamma + reward
        self._update(self.returns)
        out = np.clip(reward / np.sqrt(self.var + self.eps), -self.clip, self.clip)
        self.returns[done] = 0
        return out


def _reward_sequence(seed, t, num_envs, scale=5.0):
    rng = np.random.default_rng(seed)
    rewards = rng.normal(loc=0.3, scale=scale, size=(t, num_envs))
    rewards[rng.random((t, num_envs)) < 0.02] *= 40.0  # outliers that hit the clip
    dones = rng.random((t, num_envs)) < 0.05
    return rewards, dones


def _run_jax(rewards, dones, dtype, **kw):
    state = reward_normalizer_init(rewards.shape[1], dtype)

    def body(s, rd):
        r, d = rd
        out, s = reward_normalizer_update(s, r, d, **kw)
        return s, out

    return jax.lax.scan(jax.jit(body), state, (jnp.asarray(rewards, dtype), jnp.asarray(dones)))


def test_reward_normalizer_matches_vecnormalize_float64(x64):
    rewards, dones = _reward_sequence(0, 300, 4)
    ref = NumpyVecNormalizeReward(4, gamma=0.99, clip=4.0, eps=1e-8)
    expected = np.stack([ref.step(r, d) for r, d in zip(rewards, dones)])
    state, out = _run_jax(rewards, dones, jnp.float64, gamma=0.99, clip=4.0, eps=1e-8)
    assert np.any(np.abs(expected) == 4.0)  # the clip was exercised
    np.testing.assert_allclose(np.asarray(out), expected, rtol=1e-10, atol=1e-12)
    np.testing.assert_allclose(np.asarray(state.returns), ref.returns, rtol=1e-10, atol=1e-12)
    np.testing.assert_allclose(float(running_stats_var(state.ret_stats)), ref.var, rtol=1e-10)
    assert int(state.step) == 300


def test_reward_normalizer_matches_vecnormalize_float32():
    rewards, dones = _reward_sequence(1, 200, 3, scale=0.01)  # daily-return-sized rewards
    ref = NumpyVecNormalizeReward(3, gamma=0.95, clip=5.0, eps=1e-8)
    expected = np.stack([ref.step(r, d) for r, d in zip(rewards, dones)])
    state, out = _run_jax(rewards, dones, jnp.float32, gamma=0.95, clip=5.0, eps=1e-8)
    assert out.dtype == jnp.float32 and state.returns.dtype == jnp.float32
    np.testing.assert_allclose(np.asarray(out), expected, rtol=2e-4, atol=2e-5)


@pytest.mark.parametrize("dtype,rtol", [("float64", 1e-12), ("float32", 2e-5)])
def test_rollout_update_equals_step_by_step_updates_and_vecnormalize(dtype, rtol):
    """reward_normalizer_update_rollout over rollouts of 37 steps == the per-step update
    (and the NumPy VecNormalize reference), with episode ends, NaN/Inf rewards and a warm-up
    that ends inside a rollout."""
    with jax.enable_x64(dtype == "float64"):
        dt = jnp.dtype(dtype)
        rewards, dones = _reward_sequence(3, 3 * 37, 4)
        rewards[5, 1], rewards[40, 2] = np.nan, -np.inf
        kw = dict(gamma=0.99, clip=0.05, eps=1e-8, warmup_steps=50)
        state_seq, out_seq = _run_jax(rewards, dones, dt, **kw)
        state = reward_normalizer_init(4, dt)
        outs = []
        roll = jax.jit(lambda s, r, d: reward_normalizer_update_rollout(s, r, d, **kw))
        for k in range(3):  # three rollouts: the state is carried between them
            sl = slice(37 * k, 37 * (k + 1))
            out, state = roll(state, jnp.asarray(rewards[sl], dt), jnp.asarray(dones[sl]))
            outs.append(np.asarray(out))
        out = np.concatenate(outs)
        assert out.dtype == dt and int(state.step) == 3 * 37
        seq = np.asarray(out_seq)
        np.testing.assert_array_equal(np.isfinite(out), np.isfinite(seq))
        np.testing.assert_array_equal(out[:50][np.isfinite(out[:50])],
                                      rewards[:50][np.isfinite(rewards[:50])].astype(dt))
        fin = np.isfinite(seq)
        np.testing.assert_allclose(out[fin], seq[fin], rtol=rtol, atol=rtol)
        assert np.any(np.abs(out[50:][fin[50:]]) == np.asarray(0.05, dt))  # clip hit
        for a, b in zip(jax.tree_util.tree_leaves(state), jax.tree_util.tree_leaves(state_seq)):
            np.testing.assert_allclose(np.asarray(a), np.asarray(b), rtol=rtol, atol=rtol)
        # the VecNormalize reference (finite rewards only past the warm-up)
        ref = NumpyVecNormalizeReward(4, gamma=0.99, clip=0.05, eps=1e-8)
        clean = np.where(np.isfinite(rewards), rewards, 0.0)
        expected = np.stack([ref.step(r, d) for r, d in zip(clean, dones)])
        ok = fin.copy()
        ok[:50] = False
        np.testing.assert_allclose(out[ok], expected[ok], rtol=100 * rtol, atol=100 * rtol)


def test_rollout_update_rejects_bad_shapes():
    s = reward_normalizer_init(3)
    with pytest.raises(ValueError, match="rewards must have shape"):
        reward_normalizer_update_rollout(s, jnp.ones((4, 2)), jnp.zeros((4, 2), bool), gamma=0.9)
    with pytest.raises(ValueError, match="dones must have the shape"):
        reward_normalizer_update_rollout(s, jnp.ones((4, 3)), jnp.zeros((4,), bool), gamma=0.9)
    with pytest.raises(ValueError, match="gamma"):
        reward_normalizer_update_rollout(s, jnp.ones((4, 3)), jnp.zeros((4, 3), bool), gamma=2.0)
    with pytest.raises(ValueError, match="warmup_steps"):
        reward_normalizer_update_rollout(s, jnp.ones((4, 3)), jnp.zeros((4, 3), bool), gamma=0.9,
                                         warmup_steps=-1)
    with pytest.raises(ValueError, match="warmup_steps"):
        reward_normalizer_update(s, jnp.ones(3), jnp.zeros(3, bool), gamma=0.9, warmup_steps=-1)


def test_reward_normalizer_nonfinite_reward_does_not_poison_statistics(x64):
    # A NaN/Inf reward passes through non-finite (so learners' guards see it), but the
    # statistics continue exactly as if that reward had been 0.
    rewards, dones = _reward_sequence(2, 120, 3)
    poisoned = rewards.copy()
    poisoned[10, 1], poisoned[50, 0] = np.nan, np.inf
    zeroed = np.where(np.isfinite(poisoned), poisoned, 0.0)
    ref = NumpyVecNormalizeReward(3, gamma=0.99, clip=4.0, eps=1e-8)
    expected = np.stack([ref.step(r, d) for r, d in zip(zeroed, dones)])
    state, out = _run_jax(poisoned, dones, jnp.float64, gamma=0.99, clip=4.0, eps=1e-8)
    out = np.asarray(out)
    assert np.isnan(out[10, 1]) and not np.isfinite(out[50, 0])
    finite = np.isfinite(poisoned)
    np.testing.assert_allclose(out[finite], expected[finite], rtol=1e-10, atol=1e-12)
    assert np.isfinite(float(running_stats_var(state.ret_stats)))
    np.testing.assert_allclose(float(running_stats_var(state.ret_stats)), ref.var, rtol=1e-10)


def test_reward_normalizer_no_mean_subtraction_and_reset(x64):
    # a constant positive reward stays positive after normalization (no mean removal)
    s = reward_normalizer_init(2, jnp.float64, prior_count=0.0)
    for _ in range(20):
        out, s = reward_normalizer_update(s, jnp.array([1.0, 1.0]), jnp.array([False, False]),
                                          gamma=0.9)
    assert np.all(np.asarray(out) > 0)
    out, s = reward_normalizer_update(s, jnp.array([1.0, 1.0]), jnp.array([True, False]),
                                      gamma=0.9)
    assert float(s.returns[0]) == 0.0 and float(s.returns[1]) > 1.0
    # normalize (evaluation) does not change anything and uses the same formula
    r = jnp.array([0.5, -2.0])
    np.testing.assert_allclose(
        np.asarray(reward_normalizer_normalize(s, r)),
        np.clip(np.asarray(r) / np.sqrt(float(running_stats_var(s.ret_stats)) + 1e-8), -10, 10))


def test_reward_normalizer_warmup_passes_raw_rewards(x64):
    rewards, dones = _reward_sequence(2, 30, 2)
    ref = NumpyVecNormalizeReward(2, gamma=0.99, clip=10.0, eps=1e-8)
    expected = np.stack([ref.step(r, d) for r, d in zip(rewards, dones)])
    _, out = _run_jax(rewards, dones, jnp.float64, gamma=0.99, warmup_steps=5)
    np.testing.assert_allclose(np.asarray(out[:5]), rewards[:5], rtol=1e-12)
    # statistics kept updating during the warm-up, so afterwards it equals VecNormalize
    np.testing.assert_allclose(np.asarray(out[5:]), expected[5:], rtol=1e-10, atol=1e-12)


def test_reward_normalizer_vmapped_hparams():
    rewards, dones = _reward_sequence(3, 50, 2)
    gammas = jnp.array([0.9, 0.99], jnp.float32)

    def run(g):
        state = reward_normalizer_init(2)

        def body(s, rd):
            out, s = reward_normalizer_update(s, rd[0], rd[1], gamma=g)
            return s, out

        return jax.lax.scan(body, state, (jnp.asarray(rewards, jnp.float32), jnp.asarray(dones)))[1]

    outs = jax.vmap(run)(gammas)
    for i, g in enumerate([0.9, 0.99]):
        ref = NumpyVecNormalizeReward(2, gamma=g, clip=10.0, eps=1e-8)
        expected = np.stack([ref.step(r, d) for r, d in zip(rewards, dones)])
        np.testing.assert_allclose(np.asarray(outs[i]), expected, rtol=2e-4, atol=2e-5)


def test_reward_normalizer_errors():
    s = reward_normalizer_init(3)
    assert isinstance(s, RewardNormalizerState) and s.step.dtype == jnp.int32
    r, d = jnp.zeros(3), jnp.zeros(3, bool)
    with pytest.raises(ValueError, match="reward"):
        reward_normalizer_update(s, jnp.zeros(2), d, gamma=0.99)
    with pytest.raises(ValueError, match="done"):
        reward_normalizer_update(s, r, jnp.zeros(4, bool), gamma=0.99)
    with pytest.raises(ValueError, match="gamma"):
        reward_normalizer_update(s, r, d, gamma=1.5)
    with pytest.raises(ValueError, match="clip"):
        reward_normalizer_update(s, r, d, gamma=0.9, clip=0.0)
    with pytest.raises(ValueError, match="eps"):
        reward_normalizer_update(s, r, d, gamma=0.9, eps=-1.0)
    with pytest.raises(ValueError, match="num_envs"):
        reward_normalizer_init(0)


# ---------------------------------------------------------------------------------------------
# windowed statistics
# ---------------------------------------------------------------------------------------------
@pytest.mark.parametrize("window,shape", [(1, ()), (5, ()), (7, (2,))])
def test_windowed_stats_match_numpy_last_n(x64, window, shape):
    rng = np.random.default_rng(window)
    history = np.zeros((0,) + shape)
    state = windowed_stats_init(window, shape, jnp.float64)
    assert float(np.asarray(windowed_stats_var(state)).sum()) == 0.0
    for k in (1, 3, 1, window + 4, 2, 0, window, 1):
        chunk = rng.normal(loc=3.0, size=(k,) + shape)
        state = windowed_stats_update(state, jnp.asarray(chunk))
        history = np.concatenate([history, chunk])
        last = history[-window:]
        assert int(state.count) == len(last)
        np.testing.assert_allclose(np.asarray(windowed_stats_mean(state)), last.mean(0),
                                   rtol=1e-12)
        np.testing.assert_allclose(np.asarray(windowed_stats_var(state)), last.var(0),
                                   rtol=1e-10, atol=1e-14)
        np.testing.assert_allclose(np.asarray(windowed_stats_std(state)), last.std(0),
                                   rtol=1e-10, atol=1e-7)
        if len(last) > 1:
            np.testing.assert_allclose(np.asarray(windowed_stats_var(state, ddof=1)),
                                       last.var(0, ddof=1), rtol=1e-10)


def test_windowed_stats_jit_scan():
    window = 4
    xs = np.arange(10, dtype=np.float32)

    def body(s, x):
        s = windowed_stats_update(s, x[None])
        return s, (windowed_stats_mean(s), windowed_stats_var(s))

    state, (means, vars_) = jax.jit(lambda s, x: jax.lax.scan(body, s, x))(
        windowed_stats_init(window), jnp.asarray(xs))
    for t in range(10):
        last = xs[max(0, t + 1 - window): t + 1]
        np.testing.assert_allclose(float(means[t]), last.mean(), rtol=1e-6)
        np.testing.assert_allclose(float(vars_[t]), last.var(), rtol=1e-5, atol=1e-6)
    assert isinstance(state, WindowedStats)
    assert state.index.dtype == jnp.int32 and state.count.dtype == jnp.int32


def test_windowed_stats_normalize_matches_seed_formula():
    rng = np.random.default_rng(4)
    hist = rng.normal(loc=2.0, scale=3.0, size=(12, 2)).astype(np.float32)
    state = windowed_stats_update(windowed_stats_init(5, (2,)), jnp.asarray(hist))
    x = rng.normal(scale=20.0, size=(3, 2)).astype(np.float32)
    last = hist[-5:].astype(np.float64)
    expected = (x - last.mean(0)) / (last.std(0) + 1e-8)
    np.testing.assert_allclose(np.asarray(windowed_stats_normalize(state, jnp.asarray(x))),
                               expected, rtol=1e-5)
    clipped = windowed_stats_normalize(state, jnp.asarray(x), clip=2.0)
    np.testing.assert_allclose(np.asarray(clipped), np.clip(expected, -2, 2), rtol=1e-5)
    assert np.any(np.abs(expected) > 2)
    with pytest.raises(ValueError, match="x must"):
        windowed_stats_normalize(state, jnp.zeros((3,)))
    with pytest.raises(ValueError, match="clip"):
        windowed_stats_normalize(state, jnp.asarray(x), clip=-1.0)


def test_windowed_stats_errors():
    with pytest.raises(ValueError, match="window"):
        windowed_stats_init(0)
    s = windowed_stats_init(3, (2,))
    with pytest.raises(ValueError, match="values"):
        windowed_stats_update(s, jnp.zeros((4,)))


def test_docstring_examples_run():
    import doctest

    import jaxstab.normalization as mod

    result = doctest.testmod(mod, optionflags=doctest.NORMALIZE_WHITESPACE)
    assert result.attempted >= 5 and result.failed == 0
