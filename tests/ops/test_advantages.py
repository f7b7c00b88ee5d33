"""Tests for jaxstab.ops.advantages.normalize_advantages against NumPy references."""

from __future__ import annotations


import jax
import jax.numpy as jnp
import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from hypothesis.extra import numpy as hnp

from jaxstab.ops.advantages import ADVANTAGE_MODES, normalize_advantages

EPS = 1e-8


def np_global(a, eps=EPS):
    a = np.asarray(a, np.float64)
    return (a - a.mean()) / (a.std() + eps)


def np_group(a, g, eps=EPS):
    a = np.asarray(a, np.float64)
    out = np.empty_like(a)
    for gid in np.unique(g):
        sel = g == gid
        x = a[sel]
        out[sel] = (x - x.mean()) / (x.std() + eps)
    return out


def np_robust(a, eps=EPS):
    a = np.asarray(a, np.float64)
    q25, q50, q75 = np.quantile(a, [0.25, 0.5, 0.75])
    iqr_scale = (q75 - q25) / 1.3489795003921634
    scale = iqr_scale if iqr_scale > eps else a.std() + eps
    return (a - np.median(a)) / scale


# --------------------------------------------------------------------------- references


def test_none_is_identity():
    a = jnp.array([[1.0, -2.0], [3.0, 7.0]])
    out = normalize_advantages(a, "none")
    assert out.dtype == a.dtype
    np.testing.assert_array_equal(np.asarray(out), np.asarray(a))


def test_global_hand_values_and_reference(strict_dtypes):
    np.testing.assert_allclose(np.asarray(normalize_advantages(jnp.array([1.0, 3.0]))), [-1, 1])
    a = np.random.default_rng(0).normal(3.0, 5.0, size=(8, 16)).astype(np.float32)
    out = normalize_advantages(jnp.asarray(a), "global")
    assert out.shape == a.shape and out.dtype == jnp.float32
    np.testing.assert_allclose(np.asarray(out), np_global(a), rtol=1e-5, atol=1e-5)


def test_group_reference_with_singleton_and_constant_groups():
    rng = np.random.default_rng(1)
    a = rng.normal(size=20).astype(np.float32) * 4
    g = rng.integers(0, 4, size=20)
    g[7] = 4  # group 4 has a single element
    a[g == 2] = 1.5  # group 2 is constant
    out = np.asarray(normalize_advantages(jnp.asarray(a), "group", groups=jnp.asarray(g),
                                          num_groups=6))  # group 5 is empty
    assert np.all(np.isfinite(out))
    assert out[7] == 0.0  # singleton -> 0
    np.testing.assert_array_equal(out[g == 2], 0.0)  # constant -> 0
    np.testing.assert_allclose(out, np_group(a, g), rtol=1e-5, atol=1e-5)
    # Normalization is per group: each group has mean 0 and std 1 (when not degenerate).
    for gid in (0, 1, 3):
        np.testing.assert_allclose(out[g == gid].mean(), 0.0, atol=1e-5)
        np.testing.assert_allclose(out[g == gid].std(), 1.0, atol=1e-5)


@settings(max_examples=60, deadline=None)
@given(
    a=hnp.arrays(np.float64, (24,), elements=st.floats(-1e3, 1e3)),
    g=hnp.arrays(np.int32, (24,), elements=st.integers(0, 4)),
)
def test_group_property_vs_numpy(a, g):
    with jax.enable_x64(True):
        out = np.asarray(_group5(jnp.asarray(a), jnp.asarray(g)))
    ref = np_group(a, g)
    for gid in np.unique(g):
        sel = g == gid
        if np.ptp(a[sel]) == 0:  # constant group (or singleton): exactly 0, no rounding noise
            np.testing.assert_array_equal(out[sel], 0.0)
        elif a[sel].std() > 1e-6 * max(1.0, np.abs(a[sel]).max()):  # well-conditioned
            np.testing.assert_allclose(out[sel], ref[sel], rtol=1e-7, atol=1e-7)


_group5 = jax.jit(lambda a, g: normalize_advantages(a, "group", groups=g, num_groups=5))


def test_robust_reference_and_outlier_resistance():
    rng = np.random.default_rng(2)
    a = rng.normal(size=101).astype(np.float32)
    out = normalize_advantages(jnp.asarray(a), "robust")
    np.testing.assert_allclose(np.asarray(out), np_robust(a), rtol=1e-5, atol=1e-5)
    # One huge outlier: the robust scores of the other entries barely move, the global ones do.
    b = a.copy()
    b[0] = 1e4
    robust_shift = np.abs(np.asarray(normalize_advantages(jnp.asarray(b), "robust"))[1:]
                          - np.asarray(out)[1:]).max()
    global_shift = np.abs(np.asarray(normalize_advantages(jnp.asarray(b), "global"))[1:]
                          - np.asarray(normalize_advantages(jnp.asarray(a), "global"))[1:]).max()
    assert robust_shift < 0.25 and global_shift > 1.0, (robust_shift, global_shift)
    np.testing.assert_allclose(np.asarray(normalize_advantages(jnp.asarray(b), "robust")),
                               np_robust(b), rtol=1e-5, atol=1e-5)


def test_robust_fallback_when_iqr_is_zero():
    # 90% zeros, a few +-1: IQR = 0, so the scale falls back to std (as in global mode).
    a = np.zeros(100, np.float32)
    a[:5], a[5:10] = 1.0, -1.0
    out = np.asarray(normalize_advantages(jnp.asarray(a), "robust"))
    np.testing.assert_allclose(out, a / a.std(), rtol=1e-5)
    np.testing.assert_allclose(out, np_robust(a), rtol=1e-5)
    assert np.abs(out).max() < 10  # seed 004's clamp(iqr, 1e-8) would give 1e8


@pytest.mark.parametrize("mode", ["global", "group", "robust"])
def test_constant_advantages_give_zeros(mode):
    a = jnp.full((3, 4), 2.5)
    kw = dict(groups=jnp.zeros((3, 4), jnp.int32), num_groups=1) if mode == "group" else {}
    out = np.asarray(normalize_advantages(a, mode, **kw))
    np.testing.assert_array_equal(out, 0.0)


# --------------------------------------------------------------------------- transforms & dtypes


@pytest.mark.parametrize("mode", ADVANTAGE_MODES)
def test_jit_equals_eager(mode):
    rng = np.random.default_rng(3)
    a = jnp.asarray(rng.normal(size=(4, 6)), jnp.float32)
    g = jnp.asarray(rng.integers(0, 3, size=(4, 6)), jnp.int32)
    kw = dict(groups=g, num_groups=3) if mode == "group" else {}
    eager = normalize_advantages(a, mode, **kw)
    if mode == "group":
        jitted = jax.jit(lambda a, g: normalize_advantages(a, mode, groups=g, num_groups=3))(a, g)
    else:
        jitted = jax.jit(lambda a: normalize_advantages(a, mode))(a)
    np.testing.assert_allclose(np.asarray(jitted), np.asarray(eager), rtol=1e-6, atol=1e-6)
    # jit with a traced eps.
    jit_eps = jax.jit(lambda a, e: normalize_advantages(a, mode, eps=e, **kw))(a, 1e-8)
    np.testing.assert_allclose(np.asarray(jit_eps), np.asarray(eager), rtol=1e-6, atol=1e-6)


def test_out_of_range_group_ids():
    a = jnp.array([1.0, 2.0, 3.0, 10.0])
    with pytest.raises(ValueError, match=r"\[0, 2\)"):
        normalize_advantages(a, "group", groups=jnp.array([0, 0, 1, 2]), num_groups=2)
    # Traced ids cannot be checked: out-of-range elements come back as 0 and do not pollute.
    out = jax.jit(lambda g: normalize_advantages(a, "group", groups=g, num_groups=2))(
        jnp.array([0, 0, -1, 2]))
    np.testing.assert_allclose(np.asarray(out), [-1.0, 1.0, 0.0, 0.0], atol=1e-6)


@pytest.mark.parametrize("mode", ["global", "group", "robust"])
def test_dtype_preserved_float64(mode, x64):
    a = jnp.asarray(np.random.default_rng(4).normal(size=10))
    kw = dict(groups=jnp.arange(10) % 2, num_groups=2) if mode == "group" else {}
    assert normalize_advantages(a, mode, **kw).dtype == jnp.float64


@pytest.mark.parametrize("dtype", [jnp.float32, jnp.bfloat16])
def test_dtype_preserved(dtype):
    a = jnp.asarray(np.random.default_rng(5).normal(size=10), dtype)
    for mode in ("none", "global", "robust"):
        assert normalize_advantages(a, mode).dtype == dtype


# --------------------------------------------------------------------------- errors


def test_errors():
    a = jnp.ones(4)
    with pytest.raises(ValueError, match="valid modes are .*none.*global.*group.*robust"):
        normalize_advantages(a, "median")
    with pytest.raises(ValueError, match="needs `groups`"):
        normalize_advantages(a, "group", num_groups=2)
    with pytest.raises(ValueError, match="needs `groups`"):
        normalize_advantages(a, "group", groups=jnp.zeros(4, jnp.int32))
    with pytest.raises(ValueError, match="`groups` shape"):
        normalize_advantages(a, "group", groups=jnp.zeros(3, jnp.int32), num_groups=1)
    with pytest.raises(TypeError, match="`groups`"):
        normalize_advantages(a, "group", groups=jnp.zeros(4), num_groups=1)
    with pytest.raises(TypeError, match="`num_groups`"):
        normalize_advantages(a, "group", groups=jnp.zeros(4, jnp.int32), num_groups=2.0)
    with pytest.raises(ValueError, match="`num_groups`"):
        normalize_advantages(a, "group", groups=jnp.zeros(4, jnp.int32), num_groups=0)
    with pytest.raises(ValueError, match="only used with mode='group'"):
        normalize_advantages(a, "global", num_groups=2)
    with pytest.raises(TypeError, match="`adv`"):
        normalize_advantages(jnp.ones(4, jnp.int32))
    with pytest.raises(ValueError, match="`eps`"):
        normalize_advantages(a, eps=jnp.ones(2))
    with pytest.raises(ValueError, match="empty"):
        normalize_advantages(jnp.ones((0,)), "global")
