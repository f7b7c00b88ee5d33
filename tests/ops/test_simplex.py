"""Tests for jaxstab.ops.simplex.project_simplex.

References: a NumPy sort-based projection (Duchi et al. 2008, written here), the closed-form
Jacobian built in NumPy from the reference's support, float64 central finite differences,
optax.projections.projection_simplex, and the projection's variational inequality.
"""

from __future__ import annotations

import functools

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from hypothesis.extra import numpy as hnp

from jaxstab.ops.simplex import _PAIRWISE_MAX_N, project_simplex

# Sizes on both sides of the pairwise / bisection switch.
SIZES = (1, 2, 3, 7, _PAIRWISE_MAX_N, _PAIRWISE_MAX_N + 1, 70)

_jit_project = jax.jit(project_simplex, static_argnames="axis")


def np_project(z: np.ndarray) -> np.ndarray:
    """Sort-based projection of every row of ``z [..., n]`` (Duchi et al. 2008, Fig. 1)."""
    z = np.asarray(z, np.float64)
    n = z.shape[-1]
    u = -np.sort(-z, axis=-1)
    css = np.cumsum(u, axis=-1)
    k = np.arange(1, n + 1)
    cond = u - (css - 1) / k > 0
    rho = n - np.argmax(cond[..., ::-1], axis=-1)  # largest k with cond true (1-based)
    theta = (np.take_along_axis(css, (rho - 1)[..., None], axis=-1) - 1) / rho[..., None]
    return np.maximum(z - theta, 0.0)


def np_jacobian(p: np.ndarray) -> np.ndarray:
    s = (p > 0).astype(np.float64)
    return np.diag(s) - np.outer(s, s) / s.sum()


# --------------------------------------------------------------------------- known values


@pytest.mark.parametrize(
    "z, expected",
    [
        ([0.5, 1.0, -1.0], [0.25, 0.75, 0.0]),  # theta = 0.25
        ([3.0, 0.0], [1.0, 0.0]),  # gap > 1: a vertex
        ([0.0, 0.0, 0.0, 0.0], [0.25, 0.25, 0.25, 0.25]),  # theta = -1/4
        ([0.2, 0.3, 0.5], [0.2, 0.3, 0.5]),  # already on the simplex
        ([10.2, 10.3, 10.5], [0.2, 0.3, 0.5]),  # translation along 1 changes nothing
        ([2.0, 2.0, 0.0], [0.5, 0.5, 0.0]),  # tie in the support
        ([1.0, 0.0, 0.0], [1.0, 0.0, 0.0]),  # ties exactly at the threshold (theta = 0)
        ([-5.0], [1.0]),  # n = 1
    ],
)
def test_hand_values(z, expected, strict_dtypes):
    p = project_simplex(jnp.asarray(z, jnp.float32))
    np.testing.assert_allclose(np.asarray(p), expected, atol=2e-6)


# --------------------------------------------------------------------------- references


@pytest.mark.parametrize("n", SIZES)
def test_matches_numpy_reference_and_optax(n, x64):
    rng = np.random.default_rng(n)
    z = rng.normal(size=(64, n)) * rng.choice([0.01, 1.0, 30.0], size=(64, 1))
    z[:16] = np.round(z[:16] * 2) / 2  # many ties
    p = np.asarray(_jit_project(jnp.asarray(z)))
    ref = np_project(z)
    np.testing.assert_allclose(p, ref, atol=1e-12 * max(1.0, np.abs(z).max()) * n)
    peer = np.asarray(jax.vmap(optax.projections.projection_simplex)(jnp.asarray(z)))
    np.testing.assert_allclose(p, peer, atol=1e-11 * max(1.0, np.abs(z).max()) * n)


@pytest.mark.parametrize("n", [8, 30, 128])
def test_float32_accuracy_against_float64_reference(n):
    rng = np.random.default_rng(100 + n)
    z = rng.normal(size=(256, n)).astype(np.float32)
    p = np.asarray(_jit_project(jnp.asarray(z)))
    assert p.dtype == np.float32
    np.testing.assert_allclose(p, np_project(z.astype(np.float64)), atol=2e-6)
    np.testing.assert_allclose(p.sum(-1), 1.0, atol=4e-6)


# --------------------------------------------------------------------------- properties

_elements = st.floats(-1e3, 1e3, allow_nan=False, allow_infinity=False, width=64)


@st.composite
def _vectors(draw):
    n = draw(st.sampled_from(SIZES))
    z = draw(hnp.arrays(np.float64, (n,), elements=_elements))
    if draw(st.booleans()):  # quantize: ties everywhere
        z = np.round(z / 50.0) * 0.25
    return z


@settings(max_examples=80, deadline=None)
@given(z=_vectors(), seed=st.integers(0, 2**31 - 1))
def test_properties(z, seed):
    """On the simplex, idempotent, optimal (variational inequality), equal to the reference."""
    with jax.enable_x64(True):
        n = z.shape[-1]
        p = np.asarray(_jit_project(jnp.asarray(z)))
        scale = max(1.0, float(np.abs(z).max()))
        tol = 1e-13 * n * scale
        assert np.all(p >= 0)
        assert abs(p.sum() - 1.0) <= tol
        np.testing.assert_allclose(p, np_project(z), atol=tol)
        pp = np.asarray(_jit_project(jnp.asarray(p)))
        np.testing.assert_allclose(pp, p, atol=1e-13 * n)
        # <z - p, y - p> <= 0 for every y on the simplex: vertices and random interior points.
        rng = np.random.default_rng(seed)
        ys = np.concatenate([np.eye(n), rng.dirichlet(np.ones(n), size=8)])
        vi = (ys - p) @ (z - p)
        assert np.all(vi <= 1e-6 * scale), vi.max()


@settings(max_examples=40, deadline=None)
@given(z=hnp.arrays(np.float32, st.sampled_from([(4, 5), (3, 40)]),
                    elements=st.floats(-50, 50, width=32)))
def test_properties_float32(z):
    p = np.asarray(_jit_project(jnp.asarray(z)))
    assert p.dtype == np.float32
    assert np.all(p >= 0)
    np.testing.assert_allclose(p.sum(-1), 1.0, atol=2e-5)
    np.testing.assert_allclose(p, np_project(z), atol=2e-5)


def test_already_on_simplex_is_fixed_point(x64):
    rng = np.random.default_rng(0)
    for n in SIZES:
        y = rng.dirichlet(np.ones(n) * 0.3, size=16)
        y[0] = np.eye(n)[0]  # a vertex
        np.testing.assert_allclose(np.asarray(_jit_project(jnp.asarray(y))), y, atol=1e-14)


# --------------------------------------------------------------------------- derivatives


@pytest.mark.parametrize("n", [3, 7, _PAIRWISE_MAX_N + 8])
def test_jacobian_closed_form_fd_and_modes(n, x64):
    rng = np.random.default_rng(n)
    z = rng.normal(size=n) * 0.3
    z = jnp.asarray(z)
    p = np.asarray(project_simplex(z))
    assert 1 < (p > 0).sum() < n or n == 3  # a non-trivial support for the interesting sizes
    jf = np.asarray(jax.jacfwd(project_simplex)(z))
    jr = np.asarray(jax.jacrev(project_simplex)(z))
    np.testing.assert_allclose(jf, jr, atol=1e-14)
    np.testing.assert_allclose(jf, np_jacobian(np_project(np.asarray(z))), atol=1e-14)
    np.testing.assert_allclose(jf, jf.T, atol=1e-14)  # symmetric
    np.testing.assert_allclose(jf @ jf, jf, atol=1e-13)  # idempotent
    # Central finite differences along random directions (exact for a piecewise-linear map
    # when the support does not change within +-h).
    h = 1e-6
    for _ in range(3):
        v = rng.normal(size=n)
        fd = (np_project(np.asarray(z) + h * v) - np_project(np.asarray(z) - h * v)) / (2 * h)
        _, jvp = jax.jvp(project_simplex, (z,), (jnp.asarray(v),))
        np.testing.assert_allclose(np.asarray(jvp), fd, atol=1e-8)


def test_grad_batched_matches_fd_and_axis(x64):
    rng = np.random.default_rng(3)
    z = jnp.asarray(rng.normal(size=(4, 5, 6)))
    g = jnp.asarray(rng.normal(size=(4, 5, 6)))

    def loss(z, axis):
        return jnp.sum(g * jnp.sin(project_simplex(z, axis=axis)))

    for axis in (0, 1, -1):
        grad = np.asarray(jax.grad(loss)(z, axis))
        v = rng.normal(size=z.shape)
        h = 1e-6
        fd = (loss(z + h * v, axis) - loss(z - h * v, axis)) / (2 * h)
        assert np.isclose(np.sum(grad * v), float(fd), atol=1e-7)
        # Gradient of each slice sums to zero along the projected axis (J 1 = 0).
        np.testing.assert_allclose(grad.sum(axis=axis), 0.0, atol=1e-12)


def test_gradient_at_vertex_with_ties_is_zero(x64):
    # z = (1, 0, 0): p = e1, support {1}: J = 1 - 1 = 0 in the first entry, 0 elsewhere.
    jac = np.asarray(jax.jacrev(project_simplex)(jnp.asarray([1.0, 0.0, 0.0])))
    np.testing.assert_array_equal(jac, np.zeros((3, 3)))


# --------------------------------------------------------------------------- transforms


def test_axis_argument_equals_moveaxis():
    z = jax.random.normal(jax.random.key(0), (3, 40, 5))
    for axis in (0, 1, 2, -1, -2, -3):
        expected = jnp.moveaxis(project_simplex(jnp.moveaxis(z, axis, -1)), -1, axis)
        out = project_simplex(z, axis=axis)
        assert out.shape == z.shape
        np.testing.assert_allclose(np.asarray(out), np.asarray(expected), atol=0)
        np.testing.assert_allclose(np.asarray(out.sum(axis)), 1.0, atol=5e-6)


def test_jit_equals_eager_and_vmap_equals_loop():
    z = jax.random.normal(jax.random.key(1), (6, 4, 9)) * 2
    with jax.disable_jit():  # truly op by op, including the internal jit and loops
        eager = project_simplex(z)
        eager_big = project_simplex(z.reshape(6, 36) * 0.1)
    np.testing.assert_allclose(
        np.asarray(_jit_project(z.reshape(6, 36) * 0.1)), np.asarray(eager_big), atol=1e-7
    )
    np.testing.assert_allclose(np.asarray(_jit_project(z)), np.asarray(eager), atol=1e-7)
    vm = jax.vmap(project_simplex)(z)
    loop = jnp.stack([project_simplex(z[i]) for i in range(z.shape[0])])
    np.testing.assert_allclose(np.asarray(vm), np.asarray(loop), atol=1e-7)
    vm_axis = jax.vmap(functools.partial(project_simplex, axis=0), in_axes=2, out_axes=2)(z)
    np.testing.assert_allclose(np.asarray(vm_axis), np.asarray(project_simplex(z, axis=0)), atol=1e-7)


@pytest.mark.parametrize("dtype", [jnp.float32, jnp.bfloat16, jnp.float16])
def test_dtype_preserved(dtype):
    z = jax.random.normal(jax.random.key(2), (5, 12)).astype(dtype)
    p = project_simplex(z)
    assert p.dtype == dtype
    ref = np_project(np.asarray(z, np.float64))
    np.testing.assert_allclose(np.asarray(p, np.float64), ref, atol=float(jnp.finfo(dtype).eps) * 4)


def test_dtype_preserved_float64(x64):
    z = jnp.asarray(np.random.default_rng(0).normal(size=(3, 50)))
    assert project_simplex(z).dtype == jnp.float64
    assert jax.grad(lambda z: project_simplex(z)[0, 0])(z).dtype == jnp.float64


# --------------------------------------------------------------------------- non-finite policy


@pytest.mark.parametrize("n", [4, _PAIRWISE_MAX_N + 4])
def test_non_finite_policy(n):
    rng = np.random.default_rng(n)
    z = rng.normal(size=(6, n)).astype(np.float32)
    z[1, 2] = np.nan
    z[2, 0] = np.inf
    z[3, :] = -np.inf
    z[4, 1] = -np.inf
    z[4, 3] = -np.inf
    p = np.asarray(_jit_project(jnp.asarray(z)))
    assert np.all(np.isnan(p[1:4]))  # NaN, +inf, all -inf -> whole row NaN
    finite_rows = [0, 5]
    np.testing.assert_allclose(p[finite_rows], np_project(z[finite_rows]), atol=2e-6)
    # -inf entries get weight 0; the rest is the projection of the finite entries alone.
    keep = np.isfinite(z[4])
    assert np.all(p[4, ~keep] == 0)
    np.testing.assert_allclose(p[4, keep], np_project(z[4, keep]), atol=2e-6)
    # Derivatives: NaN rows give NaN, the other rows are unaffected (finite).
    grad = np.asarray(jax.grad(lambda z: jnp.sum(jnp.sin(project_simplex(z))))(jnp.asarray(z)))
    assert np.all(np.isnan(grad[1:4]))
    assert np.all(np.isfinite(grad[[0, 4, 5]]))
    assert np.all(grad[4, ~keep] == 0)


# --------------------------------------------------------------------------- errors


def test_errors():
    with pytest.raises(TypeError, match="`z`"):
        project_simplex(jnp.arange(3))
    with pytest.raises(ValueError, match="scalar"):
        project_simplex(jnp.float32(1.0))
    with pytest.raises(ValueError, match="`axis`"):
        project_simplex(jnp.ones((2, 3)), axis=2)
    with pytest.raises(ValueError, match="size 0"):
        project_simplex(jnp.ones((2, 0)))
    with pytest.raises(TypeError, match="`axis`"):
        project_simplex(jnp.ones((2, 3)), axis=1.0)


@pytest.mark.parametrize("n", [5, 30, 100])
def test_float32_accuracy_independent_of_offset(n):
    """Shifting by the maximum keeps float32 errors O(n eps) even for |z| ~ 1e4."""
    rng = np.random.default_rng(7)
    base = rng.normal(size=(32, n)) * 0.2
    for offset in (0.0, 33.0, -1e4, 1e4):
        z = (base + offset).astype(np.float32)
        p = np.asarray(_jit_project(jnp.asarray(z)))
        ref = np_project(z.astype(np.float64))  # the exact projection of the float32 input
        np.testing.assert_allclose(p, ref, atol=1e-6)
        np.testing.assert_allclose(p.sum(-1), 1.0, atol=2e-6)
