"""Tests for jaxstab.schedules: hand-computed values, exact end points, plateau behaviour."""

import math

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

from jaxstab.schedules import (
    ENTROPY_SCHEDULE_KINDS,
    LR_SCHEDULE_KINDS,
    ScheduleInfo,
    entropy_schedule,
    lr_schedule,
    reduce_lr_on_plateau,
    schedule_info,
)


def _v(sched, t):
    return float(sched(t))


# ---------------------------------------------------------------------------------------------
# entropy schedules
# ---------------------------------------------------------------------------------------------
def test_entropy_linear_hand_values():
    s = entropy_schedule("linear", 0.01, 0.001, 100)
    assert _v(s, 0) == pytest.approx(0.01, rel=1e-6)
    assert _v(s, 50) == pytest.approx(0.0055, rel=1e-6)
    assert _v(s, 25) == pytest.approx(0.01 - 0.25 * 0.009, rel=1e-6)
    assert _v(s, 100) == np.float32(0.001)
    assert _v(s, 10_000) == np.float32(0.001)


def test_entropy_cosine_hand_values_and_end_is_value_not_fraction():
    init, end, t = 0.02, 0.005, 8
    s = entropy_schedule("cosine", init, end, t)
    assert _v(s, 0) == pytest.approx(init, rel=1e-6)
    assert _v(s, 4) == pytest.approx((init + end) / 2, rel=1e-6)
    assert _v(s, 2) == pytest.approx(end + (init - end) * 0.5 * (1 + math.cos(math.pi / 4)),
                                     rel=1e-6)
    assert _v(s, 8) == np.float32(end)
    assert _v(s, 50) == np.float32(end)
    # the trap this avoids: optax's alpha is a fraction of init_value
    naive = optax.cosine_decay_schedule(init, t, alpha=end)
    assert float(naive(t)) == pytest.approx(init * end)
    assert abs(float(naive(t)) - end) > 1e-3


def test_entropy_exponential_hand_values_and_exact_end():
    s = entropy_schedule("exponential", 0.01, 0.001, 100)
    assert _v(s, 0) == pytest.approx(0.01, rel=1e-6)
    assert _v(s, 50) == pytest.approx(math.sqrt(0.01 * 0.001), rel=1e-5)  # geometric mean
    assert _v(s, 25) == pytest.approx(0.01 * 0.1**0.25, rel=1e-5)
    assert _v(s, 200) == np.float32(0.001)
    # hits end_value exactly at decay_steps, for awkward ratios too
    rng = np.random.default_rng(0)
    for _ in range(20):
        init = float(rng.uniform(1e-3, 1.0))
        end = float(rng.uniform(1e-5, 1.0))
        steps = int(rng.integers(1, 10_000))
        sched = entropy_schedule("exponential", init, end, steps)
        assert _v(sched, steps) == np.float32(end), (init, end, steps)
        assert _v(sched, steps + 7) == np.float32(end)
        mid = steps // 2
        assert _v(sched, mid) == pytest.approx(init * (end / init) ** (mid / steps), rel=1e-4)


@pytest.mark.parametrize("kind", ENTROPY_SCHEDULE_KINDS)
def test_entropy_schedules_monotone_increasing_and_jit(kind):
    s = entropy_schedule(kind, 0.001, 0.1, 20)  # increasing schedules work as well
    vals = np.array([_v(s, t) for t in range(25)])
    assert np.all(np.diff(vals) >= -1e-9)
    assert vals[0] == pytest.approx(0.001, rel=1e-5) and vals[-1] == np.float32(0.1)
    jitted = jax.jit(s)
    for t in (0, 7, 20, 24):
        assert float(jitted(jnp.asarray(t, jnp.int32))) == pytest.approx(vals[t], rel=1e-6)
    assert s(3).dtype == jnp.float32 and s(3).shape == ()


@pytest.mark.parametrize("kind", ["linear", "cosine"])
@pytest.mark.parametrize("init,end", [(1e-30, 1e30), (1e30, 1e-30), (1e-8, 1.0), (1.0, 1e-8),
                                      (0.0, 0.01), (0.01, 0.0), (0.3, 0.3)])
def test_entropy_schedule_relative_accuracy_across_magnitudes(kind, init, end):
    """Against a float64 reference, relative to the value: exact init at step 0 (the difference
    form ``end + (init - end) * f(p)`` returned 0.0 at step 0 for 1e-30 -> 1e30), and within a
    few float32 ulps of the value at every step, however far apart the endpoints are."""
    T = 1000
    s = jax.jit(entropy_schedule(kind, init, end, T))
    ts = np.array([0, 1, 2, 10, 333, 500, 998, 999, 1000, 1001])
    got = np.array([float(s(jnp.asarray(t))) for t in ts])
    p = np.minimum(ts, T) / T
    w_end = p if kind == "linear" else 0.5 * (1 - np.cos(np.pi * p))
    want = (1 - w_end) * np.float64(init) + w_end * np.float64(end)
    assert got[0] == np.float32(init) and got[-2] == np.float32(end)
    # relative to the value itself (both weights are >= 0: no cancellation)
    np.testing.assert_allclose(got, want, rtol=5e-6, atol=1e-45)
    if init == end:  # constant up to rounding of the two weights' sum
        np.testing.assert_allclose(got, np.float32(init), rtol=3e-7)


def test_entropy_schedule_dtype_float64(x64):
    s = entropy_schedule("exponential", 0.01, 0.001, 10, dtype=jnp.float64)
    assert s(3).dtype == jnp.float64
    assert float(s(10)) == 0.001
    assert float(s(5)) == pytest.approx(math.sqrt(1e-5), rel=1e-12)


def test_entropy_schedule_errors():
    with pytest.raises(ValueError, match="linear.*cosine.*exponential"):
        entropy_schedule("step", 1.0, 0.1, 10)
    for steps in (0, -5):
        with pytest.raises(ValueError, match="decay_steps"):
            entropy_schedule("linear", 1.0, 0.1, steps)
    with pytest.raises(TypeError, match="decay_steps"):
        entropy_schedule("linear", 1.0, 0.1, 10.5)
    with pytest.raises(ValueError, match="end_value"):
        entropy_schedule("exponential", 1.0, 0.0, 10)
    with pytest.raises(ValueError, match="init_value"):
        entropy_schedule("exponential", -1.0, 0.1, 10)
    with pytest.raises(ValueError, match="init_value"):
        entropy_schedule("cosine", float("nan"), 0.1, 10)
    with pytest.raises(TypeError, match="concrete"):
        jax.jit(lambda n: lr_schedule("step", 1.0, decay_rate=n, step_size=2)(0))(0.5)


@pytest.mark.parametrize("kind", ENTROPY_SCHEDULE_KINDS)
def test_entropy_schedule_traced_values_under_vmap(kind):
    # init/end as swept (traced) hyperparameters agree with schedules built from Python floats
    inits = np.array([0.05, 0.01, 0.002], np.float32)
    ends = np.array([0.001, 0.004, 0.02], np.float32)
    steps = jnp.arange(0, 30, 3, dtype=jnp.int32)
    vals = jax.jit(jax.vmap(lambda a, b: jax.vmap(entropy_schedule(kind, a, b, 21))(steps)))(
        jnp.asarray(inits), jnp.asarray(ends))
    for i in range(3):
        ref = entropy_schedule(kind, float(inits[i]), float(ends[i]), 21)
        expected = np.array([float(ref(int(t))) for t in steps])
        np.testing.assert_allclose(np.asarray(vals[i]), expected, rtol=2e-6)
        assert float(vals[i, -1]) == np.float32(ends[i])  # exact end value when traced too


def test_lr_schedule_traced_init_value():
    for kind, kw in [("constant", {}), ("step", dict(decay_rate=0.5, step_size=4)),
                     ("exponential", dict(decay_rate=0.9)), ("cosine", dict(decay_steps=10)),
                     ("linear", dict(decay_steps=10, end_value=1e-5))]:
        lrs = jnp.array([1e-3, 3e-4], jnp.float32)
        vals = jax.vmap(lambda lr: lr_schedule(kind, lr, **kw)(7))(lrs)
        for i in range(2):
            ref = lr_schedule(kind, float(lrs[i]), **kw)(7)
            np.testing.assert_allclose(float(vals[i]), float(ref), rtol=1e-6, err_msg=kind)


# ---------------------------------------------------------------------------------------------
# learning-rate schedules
# ---------------------------------------------------------------------------------------------
def test_lr_constant():
    s = lr_schedule("constant", 3e-4)
    assert _v(s, 0) == _v(s, 10**6) == np.float32(3e-4)


def test_lr_step_hand_values():
    # seed 002: multiply by 0.9 every 100 episodes
    s = lr_schedule("step", 1e-3, decay_rate=0.9, step_size=100)
    expected = {0: 1e-3, 99: 1e-3, 100: 9e-4, 199: 9e-4, 200: 8.1e-4, 399: 7.29e-4}
    for t, v in expected.items():
        assert _v(s, t) == pytest.approx(v, rel=1e-6), t
    floored = lr_schedule("step", 1e-3, decay_rate=0.5, step_size=10, end_value=3e-4)
    assert _v(floored, 15) == pytest.approx(5e-4, rel=1e-6)
    assert _v(floored, 25) == pytest.approx(3e-4, rel=1e-6)
    assert _v(floored, 1000) == pytest.approx(3e-4, rel=1e-6)


def test_lr_exponential_hand_values():
    # seed 002: lr = 0.001 * 0.99 ** episode, and 0.001 * 0.998 ** episode floored at 1e-4
    s = lr_schedule("exponential", 1e-3, decay_rate=0.99)
    assert _v(s, 0) == pytest.approx(1e-3, rel=1e-6)
    assert _v(s, 100) == pytest.approx(1e-3 * 0.99**100, rel=1e-5)
    assert _v(s, 200) == pytest.approx(1e-3 * 0.99**200, rel=1e-5)
    floored = lr_schedule("exponential", 1e-3, decay_rate=0.998, end_value=1e-4)
    # float32(0.998) is 0.998 * (1 + 2.6e-8), so 0.998 ** 500 carries a 1.3e-5 relative error
    assert _v(floored, 500) == pytest.approx(1e-3 * 0.998**500, rel=5e-5)
    assert _v(floored, 5000) == pytest.approx(1e-4, rel=1e-6)
    per_10 = lr_schedule("exponential", 1.0, decay_rate=0.5, step_size=10)
    assert _v(per_10, 5) == pytest.approx(0.5**0.5, rel=1e-6)


def test_lr_cosine_and_linear_hand_values():
    c = lr_schedule("cosine", 1e-3, decay_steps=10, end_value=1e-4)
    assert _v(c, 0) == pytest.approx(1e-3, rel=1e-6)
    assert _v(c, 5) == pytest.approx(5.5e-4, rel=1e-5)
    assert _v(c, 10) == np.float32(1e-4) and _v(c, 11) == np.float32(1e-4)
    c0 = lr_schedule("cosine", 1e-3, decay_steps=10)
    assert _v(c0, 10) == 0.0 and _v(c0, 5) == pytest.approx(5e-4, rel=1e-5)
    lin = lr_schedule("linear", 1e-3, decay_steps=4, end_value=2e-4)
    assert [_v(lin, t) for t in range(6)] == pytest.approx(
        [1e-3, 8e-4, 6e-4, 4e-4, 2e-4, 2e-4], rel=1e-5)


def test_lr_schedule_usable_as_optax_learning_rate():
    sched = lr_schedule("step", 1.0, decay_rate=0.5, step_size=1)
    tx = optax.sgd(sched)
    params = jnp.zeros(())
    state = tx.init(params)
    steps = []
    for _ in range(3):
        updates, state = tx.update(jnp.ones(()), state, params)
        steps.append(float(updates))
    assert steps == pytest.approx([-1.0, -0.5, -0.25])


def test_lr_schedule_errors():
    with pytest.raises(ValueError, match="constant.*step.*exponential.*cosine.*linear"):
        lr_schedule("plateau", 1e-3)
    with pytest.raises(ValueError, match="decay_rate"):
        lr_schedule("step", 1e-3, step_size=10)
    with pytest.raises(ValueError, match="step_size"):
        lr_schedule("step", 1e-3, decay_rate=0.5)
    with pytest.raises(ValueError, match="step_size"):
        lr_schedule("step", 1e-3, decay_rate=0.5, step_size=0)
    with pytest.raises(ValueError, match="decay_rate"):
        lr_schedule("exponential", 1e-3, decay_rate=0.0)
    with pytest.raises(ValueError, match="decay_steps"):
        lr_schedule("cosine", 1e-3)
    with pytest.raises(ValueError, match="decay_steps"):
        lr_schedule("linear", 1e-3, decay_steps=-1)
    with pytest.raises(ValueError, match="does not use"):
        lr_schedule("constant", 1e-3, decay_steps=10)
    with pytest.raises(ValueError, match="does not use"):
        lr_schedule("cosine", 1e-3, decay_steps=10, decay_rate=0.5)
    with pytest.raises(ValueError, match="init_value"):
        lr_schedule("constant", -1e-3)
    assert set(LR_SCHEDULE_KINDS) == {"constant", "step", "exponential", "cosine", "linear"}


# ---------------------------------------------------------------------------------------------
# schedule_info
# ---------------------------------------------------------------------------------------------
def test_schedule_info_values():
    s = entropy_schedule("linear", 1.0, 0.0, 10)
    for step, prog, val, rem in [(0, 0.0, 1.0, 10), (5, 0.5, 0.5, 5), (10, 1.0, 0.0, 0),
                                 (15, 1.0, 0.0, 0)]:
        info = schedule_info(s, step, 10)
        assert isinstance(info, ScheduleInfo)
        assert float(info.progress) == pytest.approx(prog)
        assert float(info.value) == pytest.approx(val, abs=1e-7)
        assert int(info.remaining) == rem
        assert info.progress.dtype == jnp.float32 and info.remaining.dtype == jnp.int32
    jitted = jax.jit(lambda t: schedule_info(s, t, 10))(jnp.asarray(3, jnp.int32))
    assert float(jitted.progress) == pytest.approx(0.3) and int(jitted.remaining) == 7
    assert float(jitted.value) == pytest.approx(0.7, rel=1e-6)


def test_schedule_info_errors():
    s = entropy_schedule("linear", 1.0, 0.0, 10)
    with pytest.raises(ValueError, match="total_steps"):
        schedule_info(s, 0, 0)
    with pytest.raises(ValueError, match="step"):
        schedule_info(s, -1, 10)
    with pytest.raises(TypeError, match="callable"):
        schedule_info(0.5, 0, 10)


# ---------------------------------------------------------------------------------------------
# reduce on plateau
# ---------------------------------------------------------------------------------------------
def test_reduce_on_plateau_reduces_after_patience():
    patience = 3
    tx = optax.chain(optax.sgd(1.0), reduce_lr_on_plateau(factor=0.5, patience=patience))
    params = jnp.zeros(())
    state = tx.init(params)
    update = jax.jit(lambda g, s, v: tx.update(g, s, params, value=v))
    grad = jnp.ones(())
    # improving losses: the learning rate stays
    for loss in (10.0, 9.0, 8.0, 7.0, 6.0):
        updates, state = update(grad, state, jnp.asarray(loss))
        assert float(updates) == pytest.approx(-1.0)
    # plateau: `patience` non-improving checks, then halved; again after another `patience`
    sizes = []
    for _ in range(2 * patience + 1):
        updates, state = update(grad, state, jnp.asarray(6.0))
        sizes.append(-float(updates))
    assert sizes == pytest.approx([1.0, 1.0, 0.5, 0.5, 0.5, 0.25, 0.25])
    assert float(state[-1].scale) == pytest.approx(0.25)
    # improvement resets the plateau counter
    updates, state = update(grad, state, jnp.asarray(1.0))
    assert -float(updates) == pytest.approx(0.25)
    updates, state = update(grad, state, jnp.asarray(1.0))
    assert -float(updates) == pytest.approx(0.25)


def test_reduce_on_plateau_min_scale_and_errors():
    tx = optax.chain(optax.sgd(1.0), reduce_lr_on_plateau(factor=0.1, patience=1,
                                                           min_scale=0.05))
    params = jnp.zeros(())
    state = tx.init(params)
    for _ in range(6):
        updates, state = tx.update(jnp.ones(()), state, params, value=jnp.asarray(1.0))
    assert -float(updates) == pytest.approx(0.05)
    with pytest.raises(ValueError, match="factor"):
        reduce_lr_on_plateau(factor=1.5)
    with pytest.raises(ValueError, match="patience"):
        reduce_lr_on_plateau(patience=0)
    with pytest.raises(ValueError, match="rtol"):
        reduce_lr_on_plateau(rtol=0.0, atol=0.0)
    with pytest.raises(ValueError, match="cooldown"):
        reduce_lr_on_plateau(cooldown=-1)


def test_docstring_examples_run():
    import doctest

    import jaxstab.schedules as mod

    result = doctest.testmod(mod, optionflags=doctest.NORMALIZE_WHITESPACE)
    assert result.attempted >= 3 and result.failed == 0
