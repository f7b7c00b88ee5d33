"""Tests of jaxstab.agents.ppo.losses against hand values, NumPy closed forms and Monte Carlo."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from jaxstab.agents.ppo import losses as L
from jaxstab.agents.ppo.networks import PolicyOutput, distribution


# ---------------------------------------------------------------- clipped surrogate
def test_clip_loss_hand_values(strict_dtypes):
    ratio = jnp.array([0.5, 1.0, 1.5, 1.5, 0.5], jnp.float32)
    adv = jnp.array([1.0, -1.0, 1.0, -1.0, -1.0], jnp.float32)
    # min(rA, clip(r)A): 0.5, -1, 1.2, -1.5, -0.8 -> mean -0.32
    loss, m = L.ppo_clip_loss(ratio, adv, jnp.float32(0.2))
    np.testing.assert_allclose(loss, 0.32, rtol=1e-6)
    np.testing.assert_allclose(m["clip_fraction"], 0.8, rtol=1e-6)
    # gradient: unclipped branch active for items 0, 1, 3 (d/dr = -A/5), clipped for 2 and 4
    g = jax.grad(lambda r: L.ppo_clip_loss(r, adv, jnp.float32(0.2))[0])(ratio)
    np.testing.assert_allclose(g, [-0.2, 0.2, 0.0, 0.2, 0.0], atol=1e-7)


def test_clip_loss_matches_numpy_random():
    rng = np.random.default_rng(0)
    r = rng.lognormal(0, 0.5, 64).astype(np.float32)
    a = rng.normal(size=64).astype(np.float32)
    eps = 0.15
    ref = -np.mean(np.minimum(r * a, np.clip(r, 1 - eps, 1 + eps) * a))
    loss, _ = L.ppo_clip_loss(jnp.asarray(r), jnp.asarray(a), eps)
    np.testing.assert_allclose(loss, ref, rtol=1e-5)


def test_clip_loss_shape_error():
    with pytest.raises(ValueError, match="same shape"):
        L.ppo_clip_loss(jnp.ones(3), jnp.ones(4), 0.2)


# ---------------------------------------------------------------- ratio clamp and guard
def test_ratio_clamp_and_stats(strict_dtypes):
    new = jnp.array([0.0, 50.0, -50.0, 5.0], jnp.float32)
    old = jnp.zeros(4, jnp.float32)
    r, s = L.guarded_ratio(new, old, log_ratio_clip=jnp.float32(10.0))
    np.testing.assert_allclose(r, np.exp([0.0, 10.0, -10.0, 5.0]), rtol=1e-6)
    np.testing.assert_allclose(s.frac_clamped, 0.5)
    np.testing.assert_allclose(s.max, np.exp(10.0), rtol=1e-6)
    np.testing.assert_allclose(s.min, np.exp(-10.0), rtol=1e-6)
    np.testing.assert_allclose(s.frac_high, 0.5)  # e^10 and e^5 > 100
    np.testing.assert_allclose(s.frac_low, 0.25)  # e^-10 < 0.01
    assert float(s.nonfinite_count) == 0.0


def test_ratio_clamp_configurable_and_off():
    new = jnp.array([3.0, -3.0], jnp.float32)
    r, _ = L.guarded_ratio(new, jnp.zeros(2), log_ratio_clip=2.0)
    np.testing.assert_allclose(r, np.exp([2.0, -2.0]), rtol=1e-6)
    r, _ = L.guarded_ratio(new, jnp.zeros(2), log_ratio_clip=2.0, clamp=False)
    np.testing.assert_allclose(r, np.exp([3.0, -3.0]), rtol=1e-6)


def test_ratio_nonfinite_guard_value_and_gradient():
    new = jnp.array([0.5, 100.0, jnp.nan, -0.25], jnp.float32)
    old = jnp.array([0.0, 0.0, 0.0, -jnp.inf], jnp.float32)
    # no clamp: exp(100) overflows float32, NaN and x - (-inf) = inf are non-finite
    r, s = L.guarded_ratio(new, old, clamp=False)
    np.testing.assert_allclose(r, [np.exp(0.5), 1.0, 1.0, 1.0], rtol=1e-6)
    assert float(s.nonfinite_count) == 3.0
    np.testing.assert_allclose(s.nonfinite_frac, 0.75)
    g = jax.grad(lambda x: jnp.sum(L.guarded_ratio(x, old, clamp=False)[0]))(new)
    assert np.all(np.isfinite(g))
    np.testing.assert_allclose(g, [np.exp(0.5), 0.0, 0.0, 0.0], rtol=1e-6)
    # with the clamp the overflows (exp(100), exp(inf)) are clipped to exp(10); NaN is guarded
    r, s = L.guarded_ratio(new, old)
    np.testing.assert_allclose(r, np.exp([0.5, 10.0, 0.0, 10.0]), rtol=1e-6)
    assert float(s.nonfinite_count) == 1.0


def test_ratio_gradient_inside_clamp_unbounded_by_clamp(x64):
    # the clamp prevents overflow but inside the range the gradient is exp(l) (not bounded)
    new = jnp.array([9.0], jnp.float64)
    g = jax.grad(lambda x: jnp.sum(L.guarded_ratio(x, jnp.zeros(1, jnp.float64))[0]))(new)
    np.testing.assert_allclose(g, np.exp([9.0]), rtol=1e-12)
    # central finite differences
    h = 1e-6
    zero = jnp.zeros(1)
    fd = (L.guarded_ratio(new + h, zero)[0] - L.guarded_ratio(new - h, zero)[0]) / (2 * h)
    np.testing.assert_allclose(g, fd, rtol=1e-6)


# ---------------------------------------------------------------- KL
def test_kl_estimators_hand_values(strict_dtypes):
    lo = jnp.array([0.0, -1.0], jnp.float32)
    ln = jnp.array([-1.0, -0.5], jnp.float32)
    np.testing.assert_allclose(L.kl_estimate(lo, ln, "k1"), [1.0, -0.5], rtol=1e-6)
    r = np.array([-1.0, 0.5])
    np.testing.assert_allclose(L.kl_estimate(lo, ln, "k3"), np.expm1(r) - r, rtol=1e-6)
    with pytest.raises(ValueError, match="estimator"):
        L.kl_estimate(lo, ln, "k2")


def _np_gauss_kl(m0, s0, m1, s1):
    return np.sum(np.log(s1 / s0) + (s0 ** 2 + (m0 - m1) ** 2) / (2 * s1 ** 2) - 0.5, axis=-1)


def test_exact_kl_gaussian_closed_form():
    rng = np.random.default_rng(1)
    m0, m1 = rng.normal(size=(2, 5, 3))
    ls0, ls1 = rng.normal(scale=0.3, size=(2, 5, 3))
    old = PolicyOutput(jnp.asarray(m0, jnp.float32), jnp.asarray(ls0, jnp.float32))
    new = PolicyOutput(jnp.asarray(m1, jnp.float32), jnp.asarray(ls1, jnp.float32))
    ref = _np_gauss_kl(m0, np.exp(ls0), m1, np.exp(ls1))
    for kind in ("gaussian", "tanh_gaussian"):
        np.testing.assert_allclose(L.exact_kl(kind, old, new), ref, rtol=1e-4)


def test_exact_kl_categorical_closed_form():
    rng = np.random.default_rng(2)
    l0, l1 = rng.normal(size=(2, 6, 4))
    p0 = np.exp(l0) / np.exp(l0).sum(-1, keepdims=True)
    p1 = np.exp(l1) / np.exp(l1).sum(-1, keepdims=True)
    ref = np.sum(p0 * (np.log(p0) - np.log(p1)), -1)
    z = jnp.zeros((6, 4))
    kl = L.exact_kl("discrete", PolicyOutput(jnp.asarray(l0, jnp.float32), z),
                    PolicyOutput(jnp.asarray(l1, jnp.float32), z))
    np.testing.assert_allclose(kl, ref, rtol=1e-4, atol=1e-7)


@pytest.mark.parametrize("kind", ["gaussian", "discrete"])
def test_kl_estimators_agree_with_exact_in_expectation(kind):
    """k1 and k3 are unbiased for KL(old || new) under samples of the old policy."""
    n = 200_000
    if kind == "gaussian":
        old = PolicyOutput(jnp.array([[0.0, 0.3]]), jnp.array([[0.0, -0.2]]))
        new = PolicyOutput(jnp.array([[0.2, 0.1]]), jnp.array([[0.1, -0.3]]))
    else:
        old = PolicyOutput(jnp.array([[0.0, 0.5, -0.5]]), jnp.zeros((1, 3)))
        new = PolicyOutput(jnp.array([[0.3, 0.2, -0.4]]), jnp.zeros((1, 3)))
    big_old = jax.tree_util.tree_map(lambda x: jnp.broadcast_to(x, (n,) + x.shape[1:]), old)
    big_new = jax.tree_util.tree_map(lambda x: jnp.broadcast_to(x, (n,) + x.shape[1:]), new)
    d_old, d_new = distribution(kind, big_old), distribution(kind, big_new)
    a = d_old.sample(seed=jax.random.key(0))
    lo, ln = d_old.log_prob(a), d_new.log_prob(a)
    exact = float(L.exact_kl(kind, old, new)[0])
    assert exact > 0.01
    for est in ("k1", "k3"):
        v = np.asarray(L.kl_estimate(lo, ln, est), np.float64)
        se = v.std() / np.sqrt(n)
        assert abs(v.mean() - exact) < 5 * se + 1e-5, (est, v.mean(), exact, se)
    # k3 is non-negative per sample, k1 is not
    assert float(jnp.min(L.kl_estimate(lo, ln, "k3"))) >= 0.0
    assert float(jnp.min(L.kl_estimate(lo, ln, "k1"))) < 0.0


# ---------------------------------------------------------------- value and BC losses
def test_value_loss_hand_values(strict_dtypes):
    v = jnp.array([1.0, 0.0], jnp.float32)
    vo = jnp.array([0.0, 0.0], jnp.float32)
    ret = jnp.array([0.0, 2.0], jnp.float32)
    loss, m = L.value_loss(v, vo, ret)
    np.testing.assert_allclose(loss, 0.5 * (1.0 + 4.0) / 2)
    # clipped: item0 V_clip = 0.2 -> max(1, 0.04) = 1; item1 unchanged -> 4
    loss_c, m = L.value_loss(v, vo, ret, clip_eps=jnp.float32(0.2), clip=True)
    np.testing.assert_allclose(loss_c, 0.5 * (1.0 + 4.0) / 2)
    # a case where the clipped term wins: V moved away from the target beyond the clip
    v2, ret2 = jnp.array([-1.0], jnp.float32), jnp.array([1.0], jnp.float32)
    loss_c2, m2 = L.value_loss(v2, jnp.array([-0.5], jnp.float32), ret2, clip_eps=0.2, clip=True)
    np.testing.assert_allclose(loss_c2, 0.5 * max(4.0, (1.0 - (-0.7)) ** 2))
    np.testing.assert_allclose(m2["value_clip_fraction"], 1.0)


def test_bc_loss_matches_numpy():
    rng = np.random.default_rng(3)
    logits = rng.normal(size=(5, 3)).astype(np.float32)
    acts = np.array([0, 2, 1, 1, 0])
    logp = logits - np.log(np.exp(logits).sum(-1, keepdims=True))
    ref = -np.mean(logp[np.arange(5), acts])
    out = L.bc_loss("discrete", PolicyOutput(jnp.asarray(logits), jnp.zeros((5, 3))),
                    jnp.asarray(acts))
    np.testing.assert_allclose(out, ref, rtol=1e-5)


def test_losses_jit_equals_eager():
    rng = np.random.default_rng(4)
    new = jnp.asarray(rng.normal(size=32), jnp.float32)
    old = jnp.asarray(rng.normal(size=32), jnp.float32)
    adv = jnp.asarray(rng.normal(size=32), jnp.float32)

    def f(new, old, adv):
        r, s = L.guarded_ratio(new, old)
        loss, m = L.ppo_clip_loss(r, adv, 0.2)
        return loss, s.max, jnp.mean(L.kl_estimate(old, new, "k3"))

    for a, b in zip(f(new, old, adv), jax.jit(f)(new, old, adv)):
        np.testing.assert_allclose(a, b, rtol=1e-6)
