"""Property fuzzing (hypothesis) of the public ops with extreme and non-finite values.

Each property is what the op's docstring promises: no crash on any input; finite output where
the docstring says so (with the documented non-finite policy otherwise); a ValueError naming the
argument where it documents one. Inputs mix exact extremes (0, -0, +-1e-30, +-1e30, +-3e38)
with random float32 values; examples are few (CI time) and shapes are drawn from small fixed
sets so every shape compiles once.
"""

import math

import jax.numpy as jnp
import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from hypothesis.extra import numpy as hnp

from jaxstab.losses.quantile import quantile_huber_loss
from jaxstab.normalization import (
    reward_normalizer_init,
    reward_normalizer_update,
    running_stats_init,
    running_stats_mean,
    running_stats_update,
)
from jaxstab.ops import normalize_advantages, project_simplex, replicator_step, sinkhorn
from jaxstab.schedules import entropy_schedule, lr_schedule

FUZZ = settings(max_examples=25, deadline=None, derandomize=True,
                suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large])

F30 = float(np.float32(1e30))  # 1e30 rounded to float32 (hypothesis needs exact bounds)
EXTREMES = [0.0, -0.0, 1e-30, -1e-30, F30, -F30, 1.0, -1.0, 3e38, -3e38]
NONFINITE = [math.nan, math.inf, -math.inf]

finite_f32 = st.one_of(st.sampled_from(EXTREMES),
                       st.floats(-F30, F30, allow_nan=False, width=32))
any_f32 = st.one_of(finite_f32, st.sampled_from(NONFINITE))


def arrays(shape, elements=any_f32):
    return hnp.arrays(np.float32, shape, elements=elements)


# --------------------------------------------------------------------------- project_simplex

@FUZZ
@given(st.sampled_from([1, 3, 40]).flatmap(lambda n: arrays((4, n))))
def test_project_simplex_documented_nonfinite_policy(z):
    p = np.asarray(project_simplex(jnp.asarray(z)))
    assert p.shape == z.shape and p.dtype == z.dtype
    n = z.shape[-1]
    for zi, pi in zip(z, p):
        poisoned = np.isnan(zi).any() or np.isposinf(zi).any() or np.isneginf(zi).all()
        if poisoned:
            assert np.isnan(pi).all()
        else:  # finite slice, possibly with -inf entries (weight exactly 0)
            assert np.isfinite(pi).all() and (pi >= 0).all()
            assert abs(pi.sum(dtype=np.float64) - 1.0) <= 4 * n * np.finfo(np.float32).eps
            assert (pi[np.isneginf(zi)] == 0).all()


# --------------------------------------------------------------------------- replicator_step

@FUZZ
@given(st.sampled_from([1, 4]).flatmap(lambda m: st.tuples(arrays((3, m)), arrays((3, m)))),
       arrays((3,)), finite_f32, finite_f32)
def test_replicator_step_always_finite_on_simplex(wf, crisis, eta0, eta1):
    w_prev, fitness = wf
    w = np.asarray(replicator_step(jnp.asarray(w_prev), jnp.asarray(fitness),
                                   jnp.asarray(crisis), eta0=eta0, eta1=eta1))
    assert w.shape == w_prev.shape
    assert np.isfinite(w).all() and (w >= 0).all()
    np.testing.assert_allclose(w.sum(-1, dtype=np.float64), 1.0, atol=1e-5)


@pytest.mark.parametrize("name", ["eta0", "eta1"])
@pytest.mark.parametrize("bad", NONFINITE)
def test_replicator_step_rejects_nonfinite_eta(name, bad):
    kw = {"eta0": 0.1, "eta1": 0.1, name: bad}
    with pytest.raises(ValueError, match=name):
        replicator_step(jnp.full((3,), 1 / 3), jnp.zeros((3,)), 0.0, **kw)


# --------------------------------------------------------------------------------- sinkhorn

POSITIVE = st.sampled_from([1e-30, 1e-3, 0.5, 1.0, 1e3, 1e30])


@FUZZ
@given(arrays((3, 4), st.one_of(st.sampled_from([0.0, 1e-30, -1e-30, 1.0, 1e3, -1e3]),
                                st.floats(-10, 10, width=32))),
       hnp.arrays(np.float32, (3,), elements=POSITIVE),
       hnp.arrays(np.float32, (4,), elements=POSITIVE),
       st.sampled_from([1e-3, 0.1, 1.0, 1e3, 1e30]))
def test_sinkhorn_no_crash_and_converged_means_valid(cost, a, b, eps):
    import warnings
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # documented mass-mismatch warning
        out = sinkhorn(jnp.asarray(cost), jnp.asarray(a), jnp.asarray(b), eps, max_iters=100)
    plan = np.asarray(out.plan, np.float64)
    assert plan.shape == (3, 4)
    if bool(out.converged):  # the docstring: converged/error describe the returned plan
        assert np.isfinite(plan).all() and (plan >= 0).all()
        assert np.isfinite(np.asarray(out.f)).all() and np.isfinite(np.asarray(out.g)).all()


@pytest.mark.parametrize("bad", NONFINITE)
def test_sinkhorn_rejects_nonfinite_cost(bad):
    with pytest.raises(ValueError, match="cost"):
        sinkhorn(jnp.ones((3, 4)).at[1, 2].set(bad), jnp.full((3,), 1 / 3), jnp.full((4,), 0.25),
                 0.1)


@pytest.mark.parametrize("bad", [0.0, -1.0, math.nan, math.inf])
@pytest.mark.parametrize("which", ["a", "b"])
def test_sinkhorn_rejects_bad_marginals(bad, which):
    a, b = jnp.full((3,), 1 / 3), jnp.full((4,), 0.25)
    if which == "a":
        a = a.at[0].set(bad)
    else:
        b = b.at[0].set(bad)
    with pytest.raises(ValueError, match=f"`{which}`"):
        sinkhorn(jnp.ones((3, 4)), a, b, 0.1)


@pytest.mark.parametrize("eps", [0.0, -1e-3, -1e30, math.nan, math.inf])
def test_sinkhorn_rejects_bad_epsilon(eps):
    with pytest.raises(ValueError, match="epsilon"):
        sinkhorn(jnp.ones((3, 4)), jnp.full((3,), 1 / 3), jnp.full((4,), 0.25), eps)


# ---------------------------------------------------------------------- normalize_advantages

@FUZZ
@given(arrays((8,)), st.sampled_from(["none", "global", "robust", "group"]))
def test_normalize_advantages_no_crash(adv, mode):
    kw = dict(groups=jnp.arange(8) % 2, num_groups=2) if mode == "group" else {}
    out = np.asarray(normalize_advantages(jnp.asarray(adv), mode, **kw))
    assert out.shape == adv.shape and out.dtype == adv.dtype
    if mode == "none":
        np.testing.assert_array_equal(out, adv)


@FUZZ
@given(st.sampled_from(EXTREMES), st.sampled_from(["global", "robust", "group"]))
def test_normalize_advantages_constant_inputs_give_zeros(c, mode):
    kw = dict(groups=jnp.arange(8) % 2, num_groups=2) if mode == "group" else {}
    out = np.asarray(normalize_advantages(jnp.full((8,), c, jnp.float32), mode, **kw))
    np.testing.assert_array_equal(out, np.zeros(8, np.float32))


def test_normalize_advantages_rejects_unknown_mode_and_bad_eps():
    with pytest.raises(ValueError, match="mode"):
        normalize_advantages(jnp.ones(4), "zscore")
    with pytest.raises(ValueError, match="eps"):
        normalize_advantages(jnp.ones(4), "global", eps=jnp.ones(2))


# ----------------------------------------------------------------------- quantile_huber_loss

@FUZZ
@given(arrays((2, 5), finite_f32.filter(lambda v: abs(v) <= F30)),
       arrays((2, 7), finite_f32.filter(lambda v: abs(v) <= F30)),
       st.sampled_from([0.0, 1e-30, 1.0, F30]))
def test_quantile_huber_loss_finite_nonnegative_for_finite_inputs(pred, target, kappa):
    loss = np.asarray(quantile_huber_loss(jnp.asarray(pred), jnp.asarray(target), kappa=kappa))
    assert loss.shape == (2,)
    assert np.isfinite(loss).all() and (loss >= 0).all()


@pytest.mark.parametrize("kappa", [-1.0, -1e-30, math.nan, math.inf])
def test_quantile_huber_loss_rejects_bad_kappa(kappa):
    with pytest.raises(ValueError, match="kappa"):
        quantile_huber_loss(jnp.zeros((2, 5)), jnp.zeros((2, 7)), kappa=kappa)


# ---------------------------------------------------------------------------- normalization

@FUZZ
@given(arrays((5, 2)))
def test_running_stats_update_no_crash(batch):
    s = running_stats_update(running_stats_init(shape=(2,)), jnp.asarray(batch))
    m = np.asarray(running_stats_mean(s))
    assert m.shape == (2,) and int(s.count) == 5
    finite_cols = np.isfinite(batch).all(0) & (np.abs(batch) <= 1e30).all(0)
    assert np.isfinite(m[finite_cols]).all()


@FUZZ
@given(st.lists(arrays((4,), finite_f32.filter(lambda v: abs(v) <= F30)), min_size=1,
                max_size=4),
       st.sampled_from([1.0, 10.0, 1e30]))
def test_reward_normalizer_output_clipped_for_finite_rewards(rewards, clip):
    state = reward_normalizer_init(4)
    for r in rewards:
        out, state = reward_normalizer_update(state, jnp.asarray(r), jnp.zeros(4, bool),
                                              gamma=0.99, clip=clip)
        out = np.asarray(out)
        assert np.isfinite(out).all() and (np.abs(out) <= clip).all()


@pytest.mark.parametrize("kw,name", [(dict(gamma=1.5), "gamma"), (dict(gamma=math.nan), "gamma"),
                                     (dict(gamma=0.9, clip=0.0), "clip"),
                                     (dict(gamma=0.9, clip=-1.0), "clip"),
                                     (dict(gamma=0.9, eps=-1.0), "eps")])
def test_reward_normalizer_rejects_bad_hparams(kw, name):
    with pytest.raises(ValueError, match=name):
        reward_normalizer_update(reward_normalizer_init(2), jnp.ones(2), jnp.zeros(2, bool), **kw)


# -------------------------------------------------------------------------------- schedules

@FUZZ
@given(st.sampled_from(["linear", "cosine", "exponential"]),
       st.sampled_from([1e-30, 1e-8, 0.5, 1.0, 1e8, 1e30]),
       st.sampled_from([1e-30, 1e-8, 0.5, 1.0, 1e8, 1e30]),
       st.sampled_from([1, 7, 1000]))
def test_entropy_schedule_finite_between_endpoints(kind, init, end, steps):
    sched = entropy_schedule(kind, init, end, steps)
    lo, hi = min(init, end), max(init, end)
    for t in (0, 1, steps // 2, steps, steps + 5):
        v = float(sched(t))
        assert math.isfinite(v)
        # a weighted sum of the endpoints: within float32 rounding of [lo, hi], relative to
        # the values themselves (no absolute slack needed at any magnitude)
        assert lo * (1 - 1e-5) <= v <= hi * (1 + 1e-5)
    assert float(sched(0)) == pytest.approx(init, rel=1e-6)
    assert float(sched(steps + 5)) == pytest.approx(end, rel=1e-6)


@pytest.mark.parametrize("bad", NONFINITE)
@pytest.mark.parametrize("which", ["init_value", "end_value"])
def test_entropy_schedule_rejects_nonfinite(bad, which):
    kw = {"init_value": 0.1, "end_value": 0.01, which: bad}
    with pytest.raises(ValueError, match=which):
        entropy_schedule("linear", decay_steps=10, **kw)


@FUZZ
@given(st.sampled_from(["constant", "cosine", "linear", "step", "exponential"]),
       st.sampled_from([1e-30, 1e-4, 1.0, 1e30]))
def test_lr_schedule_finite_nonnegative(kind, init):
    kw = {"cosine": dict(decay_steps=10), "linear": dict(decay_steps=10),
          "step": dict(decay_rate=0.5, step_size=3), "exponential": dict(decay_rate=0.5)}
    sched = lr_schedule(kind, init, **kw.get(kind, {}))
    for t in (0, 1, 5, 10, 1000):
        v = float(sched(t))
        assert math.isfinite(v) and 0 <= v <= init * (1 + 1e-6)


@pytest.mark.parametrize("kw,name", [(dict(kind="linear", init_value=-1e-3, decay_steps=10),
                                      "init_value"),
                                     (dict(kind="linear", init_value=math.nan, decay_steps=10),
                                      "init_value"),
                                     (dict(kind="cosine", init_value=1e-3, decay_steps=0),
                                      "decay_steps"),
                                     (dict(kind="step", init_value=1e-3, decay_rate=0.0,
                                           step_size=3), "decay_rate"),
                                     (dict(kind="step", init_value=1e-3, decay_rate=0.5,
                                           step_size=0), "step_size"),
                                     (dict(kind="warmup", init_value=1e-3), "kind")])
def test_lr_schedule_rejects_bad_values(kw, name):
    with pytest.raises(ValueError, match=name):
        lr_schedule(**kw)
