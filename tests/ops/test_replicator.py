"""Tests for jaxstab.ops.replicator.replicator_step.

References: values derived by hand with ``math.exp``, an independent NumPy implementation of
the formula (valid inputs), float64 central finite differences, and property tests with
extreme and non-finite inputs.
"""

from __future__ import annotations

import functools
import math

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from hypothesis.extra import numpy as hnp

from jaxstab.ops.replicator import replicator_step


def np_replicator(w, f, c, *, eta0, eta1, advantage_clip=10.0, crisis_max=1.0, floor=1e-6):
    """The formula in NumPy float64 for valid inputs (w >= 0 with a positive entry, finite f)."""
    w = np.asarray(w, np.float64)
    f = np.asarray(f, np.float64)
    w = w / w.sum(-1, keepdims=True)
    m = w.shape[-1]
    adv = np.clip(f - (w * f).sum(-1, keepdims=True), -advantage_clip, advantage_clip)
    c = np.clip(np.nan_to_num(np.asarray(c, np.float64)), 0.0, crisis_max)[..., None]
    logits = np.log((1 - floor) * w + floor / m) + (eta0 + eta1 * c) * adv
    e = np.exp(logits - logits.max(-1, keepdims=True))
    return e / e.sum(-1, keepdims=True)


_step = jax.jit(replicator_step)


# --------------------------------------------------------------------------- hand-derived values


def test_hand_two_prototypes(strict_dtypes):
    # baseline 0.5, advantage (0.5, -0.5), eta 1: w ∝ (0.5 e^0.5, 0.5 e^-0.5) = sigmoid(1).
    w = replicator_step(jnp.array([0.5, 0.5]), jnp.array([1.0, 0.0]), 0.0, eta0=1.0, eta1=0.0,
                        floor=0.0)
    s = 1.0 / (1.0 + math.exp(-1.0))
    np.testing.assert_allclose(np.asarray(w), [s, 1 - s], rtol=1e-6)


def test_hand_three_prototypes_with_crisis():
    # w = (.2, .3, .5), f = (1, 2, 3): baseline 2.3, advantage (-1.3, -0.3, 0.7);
    # c = 0.5: eta = 0.1 + 0.4 * 0.5 = 0.3.
    w = replicator_step(jnp.array([0.2, 0.3, 0.5]), jnp.array([1.0, 2.0, 3.0]), 0.5,
                        eta0=0.1, eta1=0.4, floor=0.0)
    u = [0.2 * math.exp(0.3 * -1.3), 0.3 * math.exp(0.3 * -0.3), 0.5 * math.exp(0.3 * 0.7)]
    np.testing.assert_allclose(np.asarray(w), np.array(u) / sum(u), rtol=1e-6)


def test_hand_floor_makes_zero_weights_safe():
    # w = (1, 0), f = (0, 1): baseline 0, advantage (0, 1); floor 0.01 mixes to (0.995, 0.005).
    w = replicator_step(jnp.array([1.0, 0.0]), jnp.array([0.0, 1.0]), 0.0, eta0=1.0, eta1=0.0,
                        floor=0.01)
    u = [0.995, 0.005 * math.e]
    np.testing.assert_allclose(np.asarray(w), np.array(u) / sum(u), rtol=1e-6)
    # floor = 0 keeps the zero weight exactly zero (absorbing), and is still finite.
    w0 = replicator_step(jnp.array([1.0, 0.0]), jnp.array([0.0, 1.0]), 0.0, eta0=1.0, eta1=0.0,
                         floor=0.0)
    np.testing.assert_array_equal(np.asarray(w0), [1.0, 0.0])


def test_clipping_is_active():
    w_prev = jnp.array([0.5, 0.5])
    kw = dict(eta0=0.1, eta1=0.0, advantage_clip=10.0, floor=0.0)
    # f = (100, 0): advantage (50, -50) clipped to (10, -10); step (1, -1): sigmoid(2).
    big = replicator_step(w_prev, jnp.array([100.0, 0.0]), 0.0, **kw)
    s = 1.0 / (1.0 + math.exp(-2.0))
    np.testing.assert_allclose(np.asarray(big), [s, 1 - s], rtol=1e-6)
    at_clip = replicator_step(w_prev, jnp.array([20.0, 0.0]), 0.0, **kw)  # advantage exactly 10
    np.testing.assert_array_equal(np.asarray(big), np.asarray(at_clip))
    unclipped = replicator_step(w_prev, jnp.array([100.0, 0.0]), 0.0,
                                **{**kw, "advantage_clip": 100.0})
    s_un = 1.0 / (1.0 + math.exp(-10.0))
    np.testing.assert_allclose(np.asarray(unclipped), [s_un, 1 - s_un], rtol=1e-6)
    # Infinite fitness saturates at the same clipped step.
    inf = replicator_step(w_prev, jnp.array([jnp.inf, 0.0]), 0.0, **kw)
    np.testing.assert_allclose(np.asarray(inf), np.asarray(big), rtol=1e-6)


def test_crisis_saturation_is_active():
    w_prev = jnp.array([0.2, 0.3, 0.5])
    f = jnp.array([1.0, 2.0, 3.0])
    step = functools.partial(replicator_step, w_prev, f, eta0=0.1, eta1=2.0, crisis_max=1.0)
    one = np.asarray(step(1.0))
    np.testing.assert_array_equal(np.asarray(step(5.0)), one)  # saturated at c_max
    np.testing.assert_array_equal(np.asarray(step(jnp.inf)), one)
    zero = np.asarray(step(0.0))
    np.testing.assert_array_equal(np.asarray(step(jnp.nan)), zero)  # NaN -> 0
    np.testing.assert_array_equal(np.asarray(step(-3.0)), zero)  # clipped below at 0
    np.testing.assert_array_equal(np.asarray(step(-jnp.inf)), zero)
    half = np.asarray(step(0.5))
    assert not np.allclose(half, one) and not np.allclose(half, zero)  # the crisis term acts
    np.testing.assert_allclose(one, np_replicator(w_prev, f, 1.0, eta0=0.1, eta1=2.0), rtol=1e-5)
    np.testing.assert_allclose(half, np_replicator(w_prev, f, 0.5, eta0=0.1, eta1=2.0), rtol=1e-5)


# --------------------------------------------------------------------------- reference & sanitizing


def test_matches_numpy_reference_batched(x64):
    rng = np.random.default_rng(0)
    w = rng.dirichlet(np.ones(6), size=(4, 5))
    w[0, 0, 2] = 0.0  # exact zeros, as the simplex projection produces
    f = rng.normal(size=(4, 5, 6)) * 8  # some advantages beyond the clip
    c = rng.uniform(-0.5, 2.0, size=(4, 5))
    kw = dict(eta0=0.3, eta1=0.7, advantage_clip=5.0, crisis_max=1.5, floor=1e-4)
    out = replicator_step(jnp.asarray(w), jnp.asarray(f), jnp.asarray(c), **kw)
    assert out.dtype == jnp.float64
    np.testing.assert_allclose(np.asarray(out), np_replicator(w, f, c, **kw), rtol=1e-12)


def test_w_prev_sanitization():
    f = jnp.array([[0.3, -1.0, 2.0]] * 5)
    kw = dict(eta0=0.5, eta1=0.0)
    w_bad = jnp.array([
        [jnp.nan, 0.5, 0.5],  # NaN entry -> uniform
        [jnp.inf, 0.0, 0.0],  # inf entry -> uniform
        [0.0, 0.0, 0.0],  # no positive entry -> uniform
        [2.0, 6.0, 2.0],  # unnormalized -> (0.2, 0.6, 0.2)
        [-1.0, 3.0, 1.0],  # negative clipped -> (0, 0.75, 0.25)
    ])
    out = np.asarray(replicator_step(w_bad, f, 0.0, **kw))
    uniform = np.asarray(replicator_step(jnp.full((3,), 1 / 3), f[0], 0.0, **kw))
    for i in range(3):
        np.testing.assert_allclose(out[i], uniform, rtol=1e-6)
    np.testing.assert_allclose(out[3], np_replicator([0.2, 0.6, 0.2], f[0], 0.0, **kw), rtol=1e-5)
    np.testing.assert_allclose(out[4], np_replicator([0.0, 0.75, 0.25], f[0], 0.0, **kw),
                               rtol=1e-5)
    # NaN fitness counts as 0.
    nan_f = replicator_step(jnp.array([0.2, 0.8]), jnp.array([jnp.nan, 1.0]), 0.0, **kw)
    zero_f = replicator_step(jnp.array([0.2, 0.8]), jnp.array([0.0, 1.0]), 0.0, **kw)
    np.testing.assert_array_equal(np.asarray(nan_f), np.asarray(zero_f))


_any_float = st.floats(allow_nan=True, allow_infinity=True, width=32)


@settings(max_examples=150, deadline=None)
@given(
    w=hnp.arrays(np.float32, (3, 4), elements=_any_float),
    f=hnp.arrays(np.float32, (3, 4), elements=_any_float),
    c=hnp.arrays(np.float32, (3,), elements=_any_float),
    eta0=st.floats(-1e3, 1e6, width=32),
    eta1=st.floats(-1e3, 1e6, width=32),
    clip=st.sampled_from([0.0, 1.0, 10.0, 1e30, float("inf")]),
    floor=st.sampled_from([0.0, 1e-6, 0.5]),
)
def test_always_on_simplex_and_finite(w, f, c, eta0, eta1, clip, floor):
    out = np.asarray(_step(jnp.asarray(w), jnp.asarray(f), jnp.asarray(c), eta0=eta0, eta1=eta1,
                           advantage_clip=clip, floor=floor))
    assert out.shape == (3, 4) and out.dtype == np.float32
    assert np.all(np.isfinite(out)), out
    assert np.all(out >= 0)
    np.testing.assert_allclose(out.sum(-1), 1.0, atol=1e-6)


@settings(max_examples=40, deadline=None)
@given(
    w=hnp.arrays(np.float64, (2, 5), elements=st.floats(allow_nan=True, allow_infinity=True)),
    f=hnp.arrays(np.float64, (2, 5), elements=st.floats(allow_nan=True, allow_infinity=True)),
)
def test_always_on_simplex_and_finite_float64(w, f):
    with jax.enable_x64(True):
        out = np.asarray(_step(jnp.asarray(w), jnp.asarray(f), jnp.asarray(np.nan), eta0=1.0,
                               eta1=1.0))
        assert out.dtype == np.float64
        assert np.all(np.isfinite(out)) and np.all(out >= 0)
        np.testing.assert_allclose(out.sum(-1), 1.0, atol=1e-12)


# --------------------------------------------------------------------------- gradients


def test_gradients_finite_with_zero_weights_and_match_fd(x64):
    rng = np.random.default_rng(1)
    w = jnp.asarray([0.0, 0.3, 0.7, 0.0])
    f = jnp.asarray(rng.normal(size=4))
    g = jnp.asarray(rng.normal(size=4))

    def loss(w, f, eta0):
        return jnp.sum(g * replicator_step(w, f, 0.3, eta0=eta0, eta1=0.5, floor=1e-3))

    grads = jax.grad(loss, argnums=(0, 1, 2))(w, f, 0.4)
    for gr in grads:
        assert np.all(np.isfinite(np.asarray(gr)))
    h = 1e-6
    for i, x in enumerate((w, f)):
        v = jnp.asarray(rng.normal(size=4))
        args = [w, f, 0.4]
        plus, minus = list(args), list(args)
        plus[i], minus[i] = x + h * v, x - h * v
        fd = (loss(*plus) - loss(*minus)) / (2 * h)
        np.testing.assert_allclose(float(jnp.sum(grads[i] * v)), float(fd), rtol=1e-6, atol=1e-9)
    fd_eta = (loss(w, f, 0.4 + h) - loss(w, f, 0.4 - h)) / (2 * h)
    np.testing.assert_allclose(float(grads[2]), float(fd_eta), rtol=1e-6, atol=1e-9)


# --------------------------------------------------------------------------- dtypes & transforms


@pytest.mark.parametrize("dtype", [jnp.float32, jnp.bfloat16, jnp.float16])
def test_dtype_preserved(dtype):
    w = jnp.array([[0.2, 0.3, 0.5]], dtype)
    f = jnp.array([[1.0, 2.0, 3.0]], dtype)
    out = replicator_step(w, f, jnp.array([0.5]), eta0=0.1, eta1=0.4)
    assert out.dtype == dtype
    ref = np_replicator(np.asarray(w, np.float64), np.asarray(f, np.float64), [0.5], eta0=0.1,
                        eta1=0.4)
    np.testing.assert_allclose(np.asarray(out, np.float64), ref, atol=4 * float(jnp.finfo(dtype).eps))


def test_jit_vmap_and_broadcasting():
    rng = np.random.default_rng(2)
    w = jnp.asarray(rng.dirichlet(np.ones(5), size=7), jnp.float32)
    f = jnp.asarray(rng.normal(size=(7, 5)) * 3, jnp.float32)
    c = jnp.asarray(rng.uniform(0, 2, size=7), jnp.float32)
    kw = dict(eta0=0.2, eta1=0.5)
    batched = replicator_step(w, f, c, **kw)
    np.testing.assert_allclose(np.asarray(_step(w, f, c, **kw)), np.asarray(batched), atol=1e-7)
    vm = jax.vmap(functools.partial(replicator_step, **kw))(w, f, c)
    loop = jnp.stack([replicator_step(w[i], f[i], c[i], **kw) for i in range(7)])
    np.testing.assert_allclose(np.asarray(vm), np.asarray(batched), atol=1e-7)
    np.testing.assert_allclose(np.asarray(loop), np.asarray(batched), atol=1e-7)
    # Scalar crisis broadcasts; shared w_prev [M] broadcasts against fitness [B, M].
    scalar_c = replicator_step(w, f, 0.7, **kw)
    np.testing.assert_allclose(np.asarray(scalar_c),
                               np.asarray(replicator_step(w, f, jnp.full((7,), 0.7), **kw)),
                               atol=1e-7)
    shared = replicator_step(w[0], f, c, **kw)
    np.testing.assert_allclose(np.asarray(shared),
                               np.asarray(replicator_step(jnp.broadcast_to(w[0], (7, 5)), f, c,
                                                          **kw)), atol=1e-7)
    # Traced hyperparameters: a sweep over eta0 is a vmap.
    etas = jnp.array([0.0, 0.1, 1.0], jnp.float32)
    sweep = jax.vmap(lambda e: replicator_step(w, f, c, eta0=e, eta1=0.5))(etas)
    for i, e in enumerate([0.0, 0.1, 1.0]):
        np.testing.assert_allclose(np.asarray(sweep[i]),
                                   np.asarray(replicator_step(w, f, c, eta0=e, eta1=0.5)),
                                   atol=1e-6)


# --------------------------------------------------------------------------- errors


def test_errors():
    w, f = jnp.ones((2, 3)) / 3, jnp.zeros((2, 3))
    kw = dict(eta0=0.1, eta1=0.1)
    with pytest.raises(ValueError, match="same non-zero last dimension"):
        replicator_step(w, jnp.zeros((2, 4)), 0.0, **kw)
    with pytest.raises(ValueError, match="do not broadcast"):
        replicator_step(w, jnp.zeros((5, 3)), 0.0, **kw)
    with pytest.raises(ValueError, match="`crisis_level`"):
        replicator_step(w, f, jnp.zeros(3), **kw)
    with pytest.raises(ValueError, match="`w_prev`"):
        replicator_step(jnp.float32(1.0), f, 0.0, **kw)
    with pytest.raises(ValueError, match="`eta0`"):
        replicator_step(w, f, 0.0, eta0=jnp.ones(2), eta1=0.1)
    with pytest.raises(ValueError, match="`advantage_clip`"):
        replicator_step(w, f, 0.0, advantage_clip=-1.0, **kw)
    with pytest.raises(ValueError, match="`floor`"):
        replicator_step(w, f, 0.0, floor=1.0, **kw)
    with pytest.raises(ValueError, match="`eta1`"):
        replicator_step(w, f, 0.0, eta0=0.1, eta1=float("nan"))
    with pytest.raises(TypeError, match="`fitness`"):
        replicator_step(w, jnp.zeros((2, 3), jnp.complex64), 0.0, **kw)
