"""Tests for jaxstab.training.rollback (in-graph rollback to the last good snapshot).

The reference is a plain-Python model of the documented rules (lists, no JAX); sequences use
values on a dyadic grid so float32 sums are exact and boundary cases are decided the same way.
"""

from __future__ import annotations

import math

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from jaxstab.training.rollback import (
    METRIC_KEYS,
    MetricWindow,
    RollbackConfig,
    RollbackHParams,
    RollbackState,
    best_reward,
    best_snapshot,
    best_step,
    last_rollback_step,
    rollback_count,
    rollback_init,
    rollback_statistics,
    rollback_update,
)

HP = RollbackHParams(kl_threshold=0.1, loss_spike_factor=3.0, reward_drop_factor=0.5,
                     min_history=3)


# --------------------------------------------------------------------------- reference model
def f32k(x):
    return np.float32(x)


class RefRollback:
    """Plain-Python statement of the documented trigger rules."""

    def __init__(self, snapshot, cfg: RollbackConfig, hp: RollbackHParams):
        self.cfg, self.hp = cfg, hp
        self.snapshot = snapshot
        self.best_snapshot = snapshot
        self.losses: list[float] = []
        self.rewards: list[float] = []
        self.step = 0
        self.count = 0
        self.consecutive = 0
        self.last = -1
        self.best_reward = -math.inf
        self.best_step = -1

    def update(self, candidate, loss, kl, reward, cand_finite=True):
        cfg, hp = self.cfg, self.hp
        finite = math.isfinite(loss) and math.isfinite(kl) and math.isfinite(reward) and cand_finite
        t_nf = cfg.check_nonfinite and not finite
        t_kl = cfg.check_kl and f32k(kl) > f32k(hp.kl_threshold)
        lw = self.losses[-cfg.window:]
        rw = self.rewards[-cfg.window:]
        # float32 throughout, like the library (grid values make the sums exact).
        f32 = np.float32
        lm = f32(sum(lw)) / f32(len(lw)) if lw else f32(0.0)
        rm = f32(sum(rw)) / f32(len(rw)) if rw else f32(0.0)
        t_sp = bool(cfg.check_loss_spike and len(lw) >= hp.min_history
                    and f32(loss) - lm > (f32(hp.loss_spike_factor) - f32(1)) * abs(lm))
        t_dr = bool(cfg.check_reward_drop and len(rw) >= hp.min_history
                    and f32(reward) < rm - (f32(1) - f32(hp.reward_drop_factor)) * abs(rm))
        t_kl = bool(t_kl)
        rb = t_nf or t_kl or t_sp or t_dr
        if rb:
            self.count += 1
            self.consecutive += 1
            self.last = self.step
        else:
            self.consecutive = 0
            self.snapshot = candidate
            self.losses.append(loss)
            self.rewards.append(reward)
            if reward > self.best_reward:
                self.best_reward, self.best_step = reward, self.step
                self.best_snapshot = candidate
        self.step += 1
        return dict(rollback=rb, trigger_nonfinite=t_nf, trigger_kl=t_kl,
                    trigger_loss_spike=t_sp, trigger_reward_drop=t_dr)


def _snap(v):
    return {"w": jnp.asarray(v, jnp.float32), "count": jnp.asarray(0, jnp.int32)}


def _run_eager(cfg, hp, losses, kls, rewards, snaps):
    state = rollback_init(snaps[0], cfg)
    out = []
    for t in range(len(losses)):
        accepted, state, m = rollback_update(state, snaps[t + 1], loss=losses[t], kl=kls[t],
                                             reward=rewards[t], hparams=hp, cfg=cfg)
        out.append((accepted, m))
    return state, out


# --------------------------------------------------------------------------- init / getters
def test_init_values_and_dtypes():
    cfg = RollbackConfig(window=4)
    state = rollback_init({"p": jnp.ones(3), "k": jax.random.key(0)}, cfg)
    assert state.losses.values.shape == (4,) and state.losses.values.dtype == jnp.float32
    for x, dt, val in [(state.step, jnp.int32, 0), (state.rollback_count, jnp.int32, 0),
                       (state.consecutive_rollbacks, jnp.int32, 0),
                       (state.last_rollback_step, jnp.int32, -1),
                       (state.best_step, jnp.int32, -1)]:
        assert x.shape == () and x.dtype == dt and int(x) == val
    assert state.best_reward.dtype == jnp.float32 and float(state.best_reward) == -np.inf
    assert int(rollback_count(state)) == 0 and int(last_rollback_step(state)) == -1
    assert float(best_reward(state)) == -np.inf and int(best_step(state)) == -1
    np.testing.assert_array_equal(best_snapshot(state)["p"], np.ones(3))
    stats = rollback_statistics(state)
    assert int(stats["updates"]) == 0 and int(stats["loss_history_len"]) == 0


def test_config_and_argument_errors():
    with pytest.raises(ValueError, match="window"):
        RollbackConfig(window=0)
    with pytest.raises(TypeError, match="keep_best"):
        RollbackConfig(keep_best=1)
    cfg = RollbackConfig(window=3)
    state = rollback_init(_snap([0.0, 0.0]), cfg)
    with pytest.raises(ValueError, match="candidate"):
        rollback_update(state, {"w": jnp.zeros(3)}, loss=0.0, hparams=HP, cfg=cfg)
    with pytest.raises(ValueError, match="candidate leaf"):
        rollback_update(state, _snap(np.zeros(3)), loss=0.0, hparams=HP, cfg=cfg)
    bad_dtype = {"w": jnp.zeros(2, jnp.float32), "count": jnp.zeros((), jnp.float32)}
    with pytest.raises(ValueError, match="dtype"):
        rollback_update(state, bad_dtype, loss=0.0, hparams=HP, cfg=cfg)
    with pytest.raises(ValueError, match="loss"):
        rollback_update(state, _snap([1.0, 1.0]), loss=jnp.zeros(2), hparams=HP, cfg=cfg)
    with pytest.raises(ValueError, match="reward"):
        rollback_update(state, _snap([1.0, 1.0]), loss=0.0, reward=jnp.zeros(2), hparams=HP,
                        cfg=cfg)
    with pytest.raises(TypeError, match="hparams"):
        rollback_update(state, _snap([1.0, 1.0]), loss=0.0, hparams=(0.1, 3.0, 0.5, 3), cfg=cfg)
    with pytest.raises(TypeError, match="min_history"):
        rollback_update(state, _snap([1.0, 1.0]), loss=0.0, hparams=HP._replace(min_history=2.5),
                        cfg=cfg)
    with pytest.raises(ValueError, match="window"):
        rollback_update(state, _snap([1.0, 1.0]), loss=0.0, hparams=HP,
                        cfg=RollbackConfig(window=5))
    no_best = rollback_init(_snap([0.0, 0.0]), RollbackConfig(keep_best=False))
    assert no_best.best_snapshot is None
    with pytest.raises(ValueError, match="keep_best"):
        best_snapshot(no_best)


# --------------------------------------------------------------------------- each trigger
def _with_history(cfg, losses, rewards, kl=0.0):
    """State after accepting len(losses) steps whose candidates are [i, i]."""
    state = rollback_init(_snap([0.0, 0.0]), cfg)
    for i, (lo, re) in enumerate(zip(losses, rewards)):
        _, state, m = rollback_update(state, _snap([i + 1.0, i + 1.0]), loss=lo, kl=kl,
                                      reward=re, hparams=HP, cfg=cfg)
        assert not bool(m["rollback"]), (i, m)
    return state


@pytest.mark.parametrize("where", ["loss", "kl", "reward", "candidate", "grads", "inf"])
def test_nonfinite_trigger(where):
    cfg = RollbackConfig(window=4)
    state = _with_history(cfg, [1.0, 1.0], [1.0, 1.0])
    kw = dict(loss=1.0, kl=0.0, reward=1.0)
    cand = _snap([5.0, 5.0])
    grads = {"g": jnp.ones(2)}
    if where in ("loss", "kl", "reward"):
        kw[where] = float("nan")
    elif where == "candidate":
        cand = _snap([5.0, float("nan")])
    elif where == "grads":
        grads = {"g": jnp.array([0.0, jnp.nan])}
    else:
        cand = _snap([5.0, float("inf")])
    accepted, new, m = rollback_update(state, cand, hparams=HP, cfg=cfg, grads=grads, **kw)
    assert bool(m["trigger_nonfinite"]) and bool(m["rollback"])
    assert not bool(m["trigger_kl"]) and not bool(m["trigger_reward_drop"])
    np.testing.assert_array_equal(accepted["w"], [2.0, 2.0])
    # Same step with everything finite is accepted.
    accepted, _, m = rollback_update(state, _snap([5.0, 5.0]), loss=1.0, kl=0.0, reward=1.0,
                                     hparams=HP, cfg=cfg, grads={"g": jnp.ones(2)})
    assert not bool(m["rollback"]) and not bool(m["trigger_nonfinite"])
    np.testing.assert_array_equal(accepted["w"], [5.0, 5.0])
    # Switched off: the NaN candidate goes through.
    cfg_off = RollbackConfig(window=4, check_nonfinite=False)
    st_off = _with_history(cfg_off, [1.0, 1.0], [1.0, 1.0])
    accepted, _, m = rollback_update(st_off, _snap([5.0, float("nan")]), loss=1.0, kl=0.0,
                                     reward=1.0, hparams=HP, cfg=cfg_off)
    assert not bool(m["rollback"])
    assert np.isnan(np.asarray(accepted["w"])[1])


@pytest.mark.parametrize("kl,fires", [(0.09, False), (0.1, False), (0.1001, True), (5.0, True)])
def test_kl_trigger(kl, fires):
    cfg = RollbackConfig(window=4)
    state = rollback_init(_snap([0.0, 0.0]), cfg)
    accepted, _, m = rollback_update(state, _snap([1.0, 1.0]), loss=1.0, kl=kl, reward=0.0,
                                     hparams=HP, cfg=cfg)
    assert bool(m["trigger_kl"]) == fires and bool(m["rollback"]) == fires
    np.testing.assert_array_equal(accepted["w"], [0.0, 0.0] if fires else [1.0, 1.0])
    _, _, m = rollback_update(state, _snap([1.0, 1.0]), loss=1.0, kl=kl, reward=0.0,
                              hparams=HP, cfg=RollbackConfig(window=4, check_kl=False))
    assert not bool(m["rollback"])
    # kl=None (static) disables the trigger for that call.
    _, _, m = rollback_update(state, _snap([1.0, 1.0]), loss=1.0, hparams=HP, cfg=cfg)
    assert not bool(m["trigger_kl"])


@pytest.mark.parametrize("history,loss,fires", [
    ([1.0, 1.0, 1.0], 3.0, False),      # exactly factor * mean: not a spike
    ([1.0, 1.0, 1.0], 3.25, True),
    ([1.0, 2.0, 3.0], 6.0, False),      # mean 2: threshold 6
    ([1.0, 2.0, 3.0], 6.5, True),
    ([-1.0, -1.0, -1.0], 0.5, False),   # negative mean: threshold -1 + 2 = 1
    ([-1.0, -1.0, -1.0], 1.5, True),
    ([-1.0, -1.0, -1.0], -5.0, False),  # an improvement never fires
    ([1.0, 1.0], 100.0, False),         # fewer than min_history values
])
def test_loss_spike_trigger(history, loss, fires):
    cfg = RollbackConfig(window=4)
    state = _with_history(cfg, history, [0.0] * len(history))
    accepted, _, m = rollback_update(state, _snap([9.0, 9.0]), loss=loss, kl=0.0, reward=0.0,
                                     hparams=HP, cfg=cfg)
    assert bool(m["trigger_loss_spike"]) == fires
    assert bool(m["rollback"]) == fires
    np.testing.assert_allclose(m["loss_mean"], np.mean(history), rtol=0, atol=0)
    expect = [float(len(history))] * 2 if fires else [9.0, 9.0]
    np.testing.assert_array_equal(accepted["w"], expect)
    _, _, m = rollback_update(state, _snap([9.0, 9.0]), loss=loss, kl=0.0, reward=0.0,
                              hparams=HP, cfg=RollbackConfig(window=4, check_loss_spike=False))
    assert not bool(m["rollback"])


@pytest.mark.parametrize("history,reward,fires", [
    ([10.0, 10.0, 10.0], 5.0, False),      # exactly factor * mean
    ([10.0, 10.0, 10.0], 4.75, True),
    ([10.0, 10.0, 10.0], 50.0, False),
    ([-10.0, -10.0, -10.0], -5.0, False),  # better than the mean
    ([-10.0, -10.0, -10.0], -14.5, False),
    ([-10.0, -10.0, -10.0], -15.5, True),  # drop of more than half the magnitude
    ([10.0, 10.0], -100.0, False),         # fewer than min_history values
])
def test_reward_drop_trigger(history, reward, fires):
    cfg = RollbackConfig(window=4)
    state = _with_history(cfg, [1.0] * len(history), history)
    accepted, _, m = rollback_update(state, _snap([9.0, 9.0]), loss=1.0, kl=0.0, reward=reward,
                                     hparams=HP, cfg=cfg)
    assert bool(m["trigger_reward_drop"]) == fires and bool(m["rollback"]) == fires
    _, _, m = rollback_update(state, _snap([9.0, 9.0]), loss=1.0, kl=0.0, reward=reward,
                              hparams=HP, cfg=RollbackConfig(window=4, check_reward_drop=False))
    assert not bool(m["rollback"])
    # reward=None: no drop trigger and the reward history is left alone.
    _, new, m = rollback_update(state, _snap([9.0, 9.0]), loss=1.0, kl=0.0, hparams=HP, cfg=cfg)
    assert not bool(m["trigger_reward_drop"])
    np.testing.assert_array_equal(new.rewards.values, state.rewards.values)
    assert int(new.rewards.count) == int(state.rewards.count)


def test_min_history_larger_than_window_disables_spike():
    cfg = RollbackConfig(window=2)
    state = _with_history(cfg, [1.0, 1.0, 1.0, 1.0], [1.0] * 4)
    _, _, m = rollback_update(state, _snap([0.0, 0.0]), loss=1e6, kl=0.0, reward=-1e6,
                              hparams=HP, cfg=cfg)
    assert not bool(m["rollback"])


# --------------------------------------------------------------------------- restore / history
def test_snapshot_restored_exactly_including_ints_and_keys():
    cfg = RollbackConfig(window=3)
    good = {"params": {"w": jnp.array([[0.1, -0.2], [1e-30, 3.0]], jnp.float32),
                       "b": jnp.array([7.0], jnp.bfloat16)},
            "opt": (jnp.asarray(12, jnp.int32), jnp.array([1.5, 2.5], jnp.float32)),
            "key": jax.random.key(3)}
    state = rollback_init(good, cfg)
    bad = {"params": {"w": jnp.full((2, 2), jnp.nan, jnp.float32),
                      "b": jnp.array([8.0], jnp.bfloat16)},
           "opt": (jnp.asarray(13, jnp.int32), jnp.array([0.0, 0.0], jnp.float32)),
           "key": jax.random.key(4)}
    accepted, new, m = rollback_update(state, bad, loss=1.0, kl=0.0, reward=0.0, hparams=HP,
                                       cfg=cfg)
    assert bool(m["rollback"])
    assert jax.tree_util.tree_structure(accepted) == jax.tree_util.tree_structure(good)
    for a, g in zip(jax.tree_util.tree_leaves(accepted), jax.tree_util.tree_leaves(good)):
        assert a.dtype == g.dtype and a.shape == g.shape
        if jnp.issubdtype(a.dtype, jax.dtypes.prng_key):
            a, g = jax.random.key_data(a), jax.random.key_data(g)
        np.testing.assert_array_equal(np.asarray(a), np.asarray(g))
    # The state's snapshot is still the good one, so a second bad step restores it again.
    accepted2, new2, _ = rollback_update(new, bad, loss=1.0, kl=0.0, reward=0.0, hparams=HP,
                                         cfg=cfg)
    np.testing.assert_array_equal(accepted2["params"]["w"], good["params"]["w"])
    assert int(new2.rollback_count) == 2 and int(new2.consecutive_rollbacks) == 2
    assert int(new2.last_rollback_step) == 1


def test_history_not_polluted_by_rejected_step():
    cfg = RollbackConfig(window=4)
    state = _with_history(cfg, [1.0, 1.0, 1.0], [5.0, 5.0, 5.0])
    before = state
    # A huge loss is rejected ...
    _, state, m = rollback_update(state, _snap([9.0, 9.0]), loss=100.0, kl=0.0, reward=-50.0,
                                  hparams=HP, cfg=cfg)
    assert bool(m["trigger_loss_spike"]) and bool(m["trigger_reward_drop"])
    np.testing.assert_array_equal(state.losses.values, before.losses.values)
    np.testing.assert_array_equal(state.rewards.values, before.rewards.values)
    assert int(state.losses.count) == 3 and int(state.rewards.count) == 3
    # ... so 3.5 is still a spike against mean 1 (a polluted mean of 25.75 would accept it).
    _, state, m = rollback_update(state, _snap([9.0, 9.0]), loss=3.5, kl=0.0, reward=5.0,
                                  hparams=HP, cfg=cfg)
    assert bool(m["trigger_loss_spike"])
    np.testing.assert_allclose(m["loss_mean"], 1.0, rtol=0, atol=0)
    # A normal step is accepted and appended.
    _, state, m = rollback_update(state, _snap([9.0, 9.0]), loss=1.5, kl=0.0, reward=5.0,
                                  hparams=HP, cfg=cfg)
    assert not bool(m["rollback"]) and int(state.losses.count) == 4
    assert int(state.consecutive_rollbacks) == 0 and int(state.rollback_count) == 2


def test_ring_buffer_keeps_last_window_values():
    cfg = RollbackConfig(window=3)
    losses = [1.0, 2.0, 3.0, 4.0, 5.0]
    state = _with_history(cfg, losses, [0.0] * 5)
    mean_loss = float(jnp.sum(state.losses.values)) / 3
    assert mean_loss == pytest.approx(np.mean(losses[-3:]), abs=0)
    assert sorted(np.asarray(state.losses.values).tolist()) == losses[-3:]
    assert int(rollback_statistics(state)["loss_history_len"]) == 3


def test_best_tracking():
    cfg = RollbackConfig(window=4)
    state = rollback_init(_snap([0.0, 0.0]), cfg)
    rewards = [1.0, 3.0, 2.0, 100.0, 2.5]    # 100 arrives with a NaN candidate: rejected
    cands = [[1.0, 1.0], [2.0, 2.0], [3.0, 3.0], [np.nan, 4.0], [5.0, 5.0]]
    for r, c in zip(rewards, cands):
        _, state, m = rollback_update(state, _snap(c), loss=1.0, kl=0.0, reward=r, hparams=HP,
                                      cfg=cfg)
    assert float(best_reward(state)) == 3.0 and int(best_step(state)) == 1
    np.testing.assert_array_equal(best_snapshot(state)["w"], [2.0, 2.0])
    assert float(m["best_reward"]) == 3.0 and int(m["best_step"]) == 1
    assert int(last_rollback_step(state)) == 3 and int(rollback_count(state)) == 1


# --------------------------------------------------------------------------- transformations
def _random_sequence(rng, T):
    losses = rng.integers(-8, 40, size=T) / 4.0
    kls = rng.choice([0.0, 0.05, 0.25], size=T, p=[0.6, 0.3, 0.1])
    rewards = rng.integers(-40, 40, size=T) / 4.0
    bad = rng.random(T) < 0.1
    losses = np.where(rng.random(T) < 0.05, np.nan, losses)
    return losses.astype(np.float32), kls.astype(np.float32), rewards.astype(np.float32), bad


def _candidates(T, bad):
    w = np.arange(1, T + 1, dtype=np.float32)[:, None] * np.ones((1, 2), np.float32)
    w[bad, 1] = np.inf
    return w


def _ref_trajectory(losses, kls, rewards, cands, cfg, hp):
    ref = RefRollback(np.zeros(2, np.float32), cfg, hp)
    out = []
    for t in range(len(losses)):
        m = ref.update(cands[t], float(losses[t]), float(kls[t]), float(rewards[t]),
                       cand_finite=bool(np.all(np.isfinite(cands[t]))))
        out.append((ref.snapshot.copy(), m))
    return ref, out


def _scan_run(cfg, losses, kls, rewards, cands, hp):
    def body(state, x):
        lo, kl, re, c = x
        acc, state, m = rollback_update(state, _snap(c), loss=lo, kl=kl, reward=re,
                                        hparams=hp, cfg=cfg)
        return state, (acc["w"], m)

    state0 = rollback_init(_snap(jnp.zeros(2)), cfg)
    return jax.lax.scan(body, state0, (losses, kls, rewards, cands))


def test_scan_matches_reference_and_eager():
    cfg = RollbackConfig(window=4)
    rng = np.random.default_rng(0)
    T = 40
    losses, kls, rewards, bad = _random_sequence(rng, T)
    cands = _candidates(T, bad)
    hp = HP
    final, (acc, ms) = jax.jit(_scan_run, static_argnums=0)(cfg, losses, kls, rewards, cands, hp)
    ref, ref_out = _ref_trajectory(losses, kls, rewards, cands, cfg, hp)
    n_rb = 0
    for t, (snap, m_ref) in enumerate(ref_out):
        np.testing.assert_array_equal(np.asarray(acc[t]), snap)
        for k, v in m_ref.items():
            assert bool(ms[k][t]) == v, (t, k)
        n_rb += m_ref["rollback"]
    assert 3 <= n_rb < T, "the sequence should exercise both branches"
    assert int(final.rollback_count) == ref.count and int(final.last_rollback_step) == ref.last
    assert float(final.best_reward) == ref.best_reward and int(final.best_step) == ref.best_step
    np.testing.assert_array_equal(final.best_snapshot["w"], ref.best_snapshot)
    # Eager Python loop gives identical results.
    snaps = [_snap(jnp.zeros(2))] + [_snap(c) for c in cands]
    e_state, e_out = _run_eager(cfg, hp, losses, kls, rewards, snaps)
    for t, (a, m) in enumerate(e_out):
        np.testing.assert_array_equal(np.asarray(a["w"]), np.asarray(acc[t]))
        for k in METRIC_KEYS:
            np.testing.assert_array_equal(np.asarray(m[k]), np.asarray(ms[k][t]))
    for a, b in zip(jax.tree_util.tree_leaves(e_state), jax.tree_util.tree_leaves(final)):
        np.testing.assert_array_equal(np.asarray(a), np.asarray(b))


def test_jit_equals_eager_single_step_and_one_trace():
    cfg = RollbackConfig(window=3)
    state = _with_history(cfg, [1.0, 1.0, 1.0], [2.0, 2.0, 2.0])
    traces = []

    def step(state, cand, loss, kl, reward, hp):
        traces.append(1)
        return rollback_update(state, cand, loss=loss, kl=kl, reward=reward, hparams=hp, cfg=cfg)

    jstep = jax.jit(step)
    hp = RollbackHParams(*(jnp.asarray(x, jnp.float32) for x in HP[:3]),
                         min_history=jnp.asarray(3, jnp.int32))
    args_list = [(_snap([4.0, 4.0]), 1.0, 0.0, 2.0), (_snap([5.0, 5.0]), 10.0, 0.0, 2.0),
                 (_snap([6.0, 6.0]), 1.0, 0.5, 2.0), (_snap([7.0, 7.0]), 1.0, 0.0, -2.0)]
    s_e, s_j = state, state
    for cand, lo, kl, re in args_list:
        a_e, s_e, m_e = step(s_e, cand, lo, kl, re, hp)
        a_j, s_j, m_j = jstep(s_j, cand, jnp.float32(lo), jnp.float32(kl), jnp.float32(re), hp)
        for x, y in zip(jax.tree_util.tree_leaves((a_e, s_e, m_e)),
                        jax.tree_util.tree_leaves((a_j, s_j, m_j))):
            assert x.dtype == y.dtype and x.shape == y.shape
            np.testing.assert_array_equal(np.asarray(x), np.asarray(y))
    assert len(traces) == len(args_list) + 1     # eager calls + a single jit trace
    # State structure, shapes and dtypes are stable across an update.
    sig = lambda s: [(x.shape, x.dtype) for x in jax.tree_util.tree_leaves(s)]
    assert sig(s_j) == sig(state)
    assert jax.tree_util.tree_structure(s_j) == jax.tree_util.tree_structure(state)


def test_vmap_over_seeds_equals_python_loop():
    cfg = RollbackConfig(window=4)
    S, T = 4, 30
    rng = np.random.default_rng(1)
    seqs = [_random_sequence(rng, T) for _ in range(S)]
    losses = np.stack([s[0] for s in seqs])
    kls = np.stack([s[1] for s in seqs])
    rewards = np.stack([s[2] for s in seqs])
    cands = np.stack([_candidates(T, s[3]) for s in seqs])
    # Per-seed thresholds: the sweep is a vmap, not a recompile.
    hp = RollbackHParams(kl_threshold=np.array([0.1, 0.01, 1.0, 0.1], np.float32),
                         loss_spike_factor=np.array([3.0, 2.0, 3.0, 1.5], np.float32),
                         reward_drop_factor=np.array([0.5, 0.5, 0.0, 0.9], np.float32),
                         min_history=np.array([3, 2, 4, 1], np.int32))
    run = jax.jit(jax.vmap(lambda lo, kl, re, c, h: _scan_run(cfg, lo, kl, re, c, h)))
    final, (acc, ms) = run(losses, kls, rewards, cands, hp)
    fired = np.zeros((S, 4), bool)
    for s in range(S):
        hp_s = RollbackHParams(*(np.asarray(x[s]).item() for x in hp))
        f_s, (acc_s, ms_s) = jax.jit(_scan_run, static_argnums=0)(
            cfg, losses[s], kls[s], rewards[s], cands[s], hp_s)
        np.testing.assert_array_equal(np.asarray(acc[s]), np.asarray(acc_s))
        for k in METRIC_KEYS:
            np.testing.assert_array_equal(np.asarray(ms[k][s]), np.asarray(ms_s[k]))
        for a, b in zip(jax.tree_util.tree_leaves(final), jax.tree_util.tree_leaves(f_s)):
            np.testing.assert_array_equal(np.asarray(a)[s], np.asarray(b))
        # And against the plain-Python model of the rules.
        ref, ref_out = _ref_trajectory(losses[s], kls[s], rewards[s], cands[s], cfg, hp_s)
        for t, (snap, m_ref) in enumerate(ref_out):
            np.testing.assert_array_equal(np.asarray(acc[s, t]), snap)
            for k, v in m_ref.items():
                assert bool(ms[k][s, t]) == v, (s, t, k)
        fired[s] = [np.any(ms[k][s]) for k in ("trigger_nonfinite", "trigger_kl",
                                               "trigger_loss_spike", "trigger_reward_drop")]
        assert int(final.rollback_count[s]) == ref.count
    # Seeds really differ in which triggers fired.
    assert len({tuple(r) for r in fired}) > 1
    np.testing.assert_array_equal(np.asarray(rollback_count(final)).shape, (S,))


def test_training_loop_in_scan_recovers_from_injected_nan():
    """SGD on a quadratic inside lax.scan; a NaN gradient at step 5 is rolled back."""
    cfg = RollbackConfig(window=4, check_kl=False, check_reward_drop=False)
    hp = HP
    target = jnp.array([1.0, -2.0], jnp.float32)
    lr = 0.1

    def loss_fn(w):
        return jnp.sum((w - target) ** 2)

    def body(carry, t):
        w, rb = carry
        loss, g = jax.value_and_grad(loss_fn)(w)
        g = jnp.where(t == 5, jnp.nan, g)
        cand = w - lr * g
        w, rb, m = rollback_update(rb, cand, loss=loss, hparams=hp, cfg=cfg, grads=g)
        return (w, rb), m["rollback"]

    w0 = jnp.zeros(2, jnp.float32)
    (w, rb), flags = jax.lax.scan(body, (w0, rollback_init(w0, cfg)), jnp.arange(12))
    # Python reference: skip step 5.
    w_ref = np.zeros(2, np.float32)
    for t in range(12):
        if t != 5:
            w_ref = w_ref - np.float32(lr) * (2 * (w_ref - np.asarray(target)))
    np.testing.assert_allclose(np.asarray(w), w_ref, rtol=1e-6)
    assert np.asarray(flags).tolist() == [t == 5 for t in range(12)]
    assert int(rb.rollback_count) == 1 and int(rb.last_rollback_step) == 5


@settings(max_examples=25, deadline=None)
@given(st.lists(st.tuples(st.integers(-20, 40), st.integers(0, 3), st.integers(-40, 40),
                          st.booleans()), min_size=10, max_size=10),
       st.integers(1, 4), st.sampled_from([1.5, 2.0, 3.0]), st.sampled_from([0.0, 0.5, 0.75]),
       st.integers(0, 4))
def test_property_matches_reference(seq, window, spike, drop, min_hist):
    cfg = RollbackConfig(window=window)
    hp = RollbackHParams(0.5, spike, drop, min_hist)
    losses = np.array([s[0] / 4 for s in seq], np.float32)
    kls = np.array([s[1] / 4 for s in seq], np.float32)
    rewards = np.array([s[2] / 4 for s in seq], np.float32)
    bad = np.array([s[3] and i % 3 == 0 for i, s in enumerate(seq)])
    cands = _candidates(len(seq), bad)
    _, (acc, ms) = _jit_scan(cfg, losses, kls, rewards, cands, hp)
    ref, ref_out = _ref_trajectory(losses, kls, rewards, cands, cfg, hp)
    for t, (snap, m_ref) in enumerate(ref_out):
        np.testing.assert_array_equal(np.asarray(acc[t]), snap)
        for k, v in m_ref.items():
            assert bool(ms[k][t]) == v, (t, k)


_jit_scan = jax.jit(_scan_run, static_argnums=0)


def test_state_is_a_namedtuple_pytree():
    cfg = RollbackConfig(window=2)
    state = rollback_init({"a": jnp.ones(2)}, cfg)
    assert isinstance(state, RollbackState) and isinstance(state.losses, MetricWindow)
    leaves, treedef = jax.tree_util.tree_flatten(state)
    rebuilt = jax.tree_util.tree_unflatten(treedef, leaves)
    assert isinstance(rebuilt, RollbackState)


def test_x64_inputs_keep_state_dtypes(x64):
    cfg = RollbackConfig(window=3)
    snap = {"w": jnp.zeros(2, jnp.float64)}
    state = rollback_init(snap, cfg)
    hp = RollbackHParams(min_history=jnp.asarray(1, jnp.int64))
    _, new, m = rollback_update(state, {"w": jnp.ones(2, jnp.float64)},
                                loss=jnp.float64(1.0), kl=jnp.float64(0.0),
                                reward=jnp.float64(2.0), hparams=hp, cfg=cfg)
    sig = lambda s: [(x.shape, x.dtype) for x in jax.tree_util.tree_leaves(s)]
    assert sig(new) == sig(state)
    assert new.snapshot["w"].dtype == jnp.float64 and new.step.dtype == jnp.int32
    assert not bool(m["rollback"])
