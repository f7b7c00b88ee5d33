"""Tests for jaxstab.ops.sinkhorn: forward vs POT/NumPy, marginals, flags, gradients vs central
finite differences (float64) and unrolled autodiff, vmap/jit, float32 accuracy, bad input."""

from __future__ import annotations

import warnings

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from hypothesis import given, settings, strategies as st

from jaxstab.ops.sinkhorn import SinkhornOutput, default_tolerance, sinkhorn


_jit_sinkhorn = jax.jit(sinkhorn, static_argnames=("max_iters", "tol", "implicit"))


def _problem(seed: int, m: int, big_m: int, batch: tuple[int, ...] = (), dtype=np.float64):
    rng = np.random.default_rng(seed)
    cost = rng.uniform(0.0, 1.0, size=batch + (m, big_m))
    a = rng.uniform(0.5, 1.5, size=batch + (m,))
    b = rng.uniform(0.5, 1.5, size=batch + (big_m,))
    a /= a.sum(-1, keepdims=True)
    b /= b.sum(-1, keepdims=True)
    return cost.astype(dtype), a.astype(dtype), b.astype(dtype)


def _numpy_sinkhorn(cost, a, b, eps, iters=20000):
    """Independent float64 reference: log-domain Sinkhorn in NumPy (scipy logsumexp)."""
    from scipy.special import logsumexp

    f = np.zeros_like(a)
    g = np.zeros_like(b)
    for _ in range(iters):
        f = eps * np.log(a) - eps * logsumexp((g[None, :] - cost) / eps, axis=1)
        g = eps * np.log(b) - eps * logsumexp((f[:, None] - cost) / eps, axis=0)
        p = np.exp((f[:, None] + g[None, :] - cost) / eps)
        if np.abs(p.sum(1) - a).sum() < 1e-13:
            break
    return p, f, g


def _rel(x, y):
    x, y = np.asarray(x, np.float64), np.asarray(y, np.float64)
    return np.linalg.norm(x - y) / max(np.linalg.norm(y), 1e-300)


# ------------------------------------------------------------------------------ forward


@pytest.mark.parametrize("m,big_m,eps", [(3, 3, 0.05), (7, 5, 0.1), (12, 20, 1.0)])
def test_forward_matches_pot_and_numpy(x64, m, big_m, eps):
    import ot

    cost, a, b = _problem(0, m, big_m)
    out = sinkhorn(cost, a, b, eps, tol=1e-13, max_iters=50000)
    assert bool(out.converged)
    p_pot = ot.sinkhorn(a, b, cost, eps, method="sinkhorn_log", stopThr=1e-15, numItermax=200000)
    np.testing.assert_allclose(out.plan, p_pot, rtol=1e-8, atol=1e-14)
    p_np, f_np, g_np = _numpy_sinkhorn(cost, a, b, eps)
    np.testing.assert_allclose(out.plan, p_np, rtol=1e-8, atol=1e-14)
    # Potentials in the documented gauge mean(f) = 0.
    shift = f_np.mean()
    np.testing.assert_allclose(out.f, f_np - shift, atol=1e-9)
    np.testing.assert_allclose(out.g, g_np + shift, atol=1e-9)
    assert abs(float(jnp.mean(out.f))) < 1e-12


def test_forward_matches_ott_float32():
    from ott.geometry import geometry
    from ott.problems.linear import linear_problem
    from ott.solvers.linear import sinkhorn as ott_sinkhorn

    cost, a, b = _problem(1, 10, 14, dtype=np.float32)
    out = sinkhorn(cost, a, b, 0.1)
    with jax.numpy_rank_promotion("allow"):  # ott relies on implicit rank promotion
        geom = geometry.Geometry(cost_matrix=jnp.asarray(cost), epsilon=0.1)
        ref = ott_sinkhorn.Sinkhorn(threshold=1e-6, max_iterations=5000)(
            linear_problem.LinearProblem(geom, jnp.asarray(a), jnp.asarray(b)))
    assert out.plan.dtype == jnp.float32
    np.testing.assert_allclose(out.plan, ref.matrix, rtol=2e-4, atol=1e-7)


def test_marginals_error_and_flags(x64):
    cost, a, b = _problem(2, 9, 6, batch=(4,))
    tol = 1e-10
    out = sinkhorn(cost, a, b, 0.1, tol=tol)
    plan = np.asarray(out.plan)
    assert plan.shape == (4, 9, 6) and out.f.shape == (4, 9) and out.g.shape == (4, 6)
    assert out.iterations.dtype == jnp.int32 and out.converged.dtype == jnp.bool_
    np.testing.assert_array_equal(out.converged, True)
    err_rows = np.abs(plan.sum(-1) - a).sum(-1) / a.sum(-1)
    np.testing.assert_allclose(out.error, err_rows, rtol=1e-3, atol=1e-15)
    assert np.all(err_rows <= tol)
    np.testing.assert_allclose(plan.sum(-2), b, atol=1e-13)
    # plan is exp((f + g - C) / eps)
    f, g = np.asarray(out.f), np.asarray(out.g)
    np.testing.assert_allclose(plan, np.exp((f[..., :, None] + g[..., None, :] - cost) / 0.1),
                               rtol=1e-12)


@settings(max_examples=12, deadline=None)
@given(seed=st.integers(0, 10_000), m=st.sampled_from([1, 3, 8]), big_m=st.sampled_from([2, 8]),
       eps=st.sampled_from([0.05, 0.2, 1.0]))
def test_marginals_property(seed, m, big_m, eps):
    cost, a, b = _problem(seed, m, big_m, dtype=np.float32)
    out = _jit_sinkhorn(cost, a, b, eps)
    tol = default_tolerance(np.float32)
    assert bool(out.converged)
    plan = np.asarray(out.plan, np.float64)
    assert np.abs(plan.sum(1) - a).sum() / a.sum() <= 2 * tol
    np.testing.assert_allclose(plan.sum(0), b, rtol=1e-4, atol=1e-7)
    assert np.all(np.isfinite(out.plan)) and np.all(plan >= 0)


def test_nonconvergence_reported(x64):
    cost, a, b = _problem(3, 16, 16)
    out = sinkhorn(cost, a, b, 0.005, max_iters=2)
    assert not bool(out.converged)
    assert int(out.iterations) == 2
    assert float(out.error) > default_tolerance(np.float64)
    true_err = np.abs(np.asarray(out.plan).sum(1) - a).sum() / a.sum()
    np.testing.assert_allclose(out.error, true_err, rtol=1e-6)
    unrolled = sinkhorn(cost, a, b, 0.005, max_iters=2, implicit=False)
    assert not bool(unrolled.converged) and int(unrolled.iterations) == 2


def test_per_element_freezing(x64):
    # Element 0 has a constant cost (converges after one update), element 1 is hard.
    cost, a, b = _problem(4, 8, 8, batch=(2,))
    cost[0] = 0.3
    out = sinkhorn(cost, a, b, 0.02, tol=1e-9, max_iters=5000)
    singles = [sinkhorn(cost[i], a[i], b[i], 0.02, tol=1e-9, max_iters=5000) for i in range(2)]
    np.testing.assert_array_equal(out.iterations, [int(s.iterations) for s in singles])
    assert int(out.iterations[0]) <= 2 < int(out.iterations[1])
    for i, s in enumerate(singles):
        np.testing.assert_allclose(out.plan[i], s.plan, rtol=1e-12, atol=1e-15)
    # Unrolled mode freezes too: same counts, same plans.
    unrolled = sinkhorn(cost, a, b, 0.02, tol=1e-9, max_iters=3000, implicit=False)
    np.testing.assert_array_equal(unrolled.converged, True)
    assert int(unrolled.iterations[0]) <= 2 < int(unrolled.iterations[1])


def test_unequal_masses_rescale_b(x64):
    cost, a, b = _problem(5, 5, 6)
    with pytest.warns(UserWarning, match="rescaled"):
        out = sinkhorn(cost, 2.0 * a, b, 0.1, tol=1e-12)
    ref = sinkhorn(cost, a, b, 0.1, tol=1e-12)
    np.testing.assert_allclose(out.plan, 2.0 * ref.plan, rtol=1e-9)
    np.testing.assert_allclose(np.asarray(out.plan).sum(0), 2.0 * b, rtol=1e-10)


# ------------------------------------------------------------------------------ transforms


def test_vmap_equals_batched_and_jit_equals_eager():
    cost, a, b = _problem(6, 6, 9, batch=(5,), dtype=np.float32)
    batched = sinkhorn(cost, a, b, 0.1)
    vmapped = jax.vmap(lambda c, x, y: sinkhorn(c, x, y, 0.1))(cost, a, b)
    jitted = jax.jit(lambda c, x, y, e: sinkhorn(c, x, y, e))(cost, a, b, jnp.float32(0.1))
    for other in (vmapped, jitted):
        for name in SinkhornOutput._fields:
            np.testing.assert_allclose(getattr(other, name), getattr(batched, name),
                                       rtol=2e-5, atol=1e-7, err_msg=name)
    # Python loop over the batch
    for i in range(5):
        single = _jit_sinkhorn(cost[i], a[i], b[i], 0.1)
        np.testing.assert_allclose(batched.plan[i], single.plan, rtol=2e-5, atol=1e-7)
        assert int(batched.iterations[i]) == int(single.iterations)
    # Several leading batch dims
    nested = sinkhorn(cost.reshape(5, 1, 6, 9), a.reshape(5, 1, 6), b.reshape(5, 1, 9), 0.1)
    assert nested.plan.shape == (5, 1, 6, 9) and nested.iterations.shape == (5, 1)
    np.testing.assert_allclose(nested.plan[:, 0], batched.plan, rtol=1e-6, atol=1e-8)


def test_vmap_over_epsilon_and_grad_under_jit():
    cost, a, b = _problem(7, 4, 5, dtype=np.float32)
    epss = jnp.asarray([0.05, 0.1, 0.5], jnp.float32)
    outs = jax.vmap(lambda e: sinkhorn(cost, a, b, e).plan)(epss)
    for i, e in enumerate([0.05, 0.1, 0.5]):
        np.testing.assert_allclose(outs[i], _jit_sinkhorn(cost, a, b, e).plan, rtol=1e-5, atol=1e-8)
    loss = lambda c, e: jnp.sum(sinkhorn(c, a, b, e).plan * c)  # noqa: E731
    g_eager = jax.grad(loss, argnums=(0, 1))(jnp.asarray(cost), jnp.float32(0.1))
    g_jit = jax.jit(jax.grad(loss, argnums=(0, 1)))(jnp.asarray(cost), jnp.float32(0.1))
    for x, y in zip(g_eager, g_jit):
        np.testing.assert_allclose(x, y, rtol=1e-5, atol=1e-7)


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_dtype_preserved(dtype, x64, strict_dtypes):
    cost, a, b = _problem(8, 4, 6, dtype=dtype)
    out = sinkhorn(jnp.asarray(cost), jnp.asarray(a), jnp.asarray(b), 0.2)
    for x in (out.plan, out.f, out.g, out.error):
        assert x.dtype == dtype
    grads = jax.grad(lambda c, e: jnp.sum(sinkhorn(c, jnp.asarray(a), jnp.asarray(b), e).plan ** 2),
                     argnums=(0, 1))(jnp.asarray(cost), jnp.asarray(0.2, dtype))
    assert grads[0].dtype == dtype and grads[1].dtype == dtype


# ------------------------------------------------------------------------------ gradients


def _loss_weights(m, big_m, seed):
    rng = np.random.default_rng(seed + 100)
    return rng.normal(size=(m, big_m)), rng.normal(size=m), rng.normal(size=big_m)


def _two_losses(out, weights):
    """[loss of the plan, loss of the potentials] (each tested separately)."""
    w, wf, wg = (jnp.asarray(x, out.plan.dtype) for x in weights)
    return jnp.stack([jnp.sum(w * out.plan), jnp.sum(wf * out.f) + jnp.sum(wg * out.g)])


# (m, M, eps): sizes 3..32, both m < M and m > M, eps in {0.05, 0.1, 1.0}.
GRAD_CASES = [(3, 3, 0.05), (6, 4, 0.1), (12, 7, 1.0), (32, 17, 0.1), (17, 32, 0.05)]


@pytest.mark.parametrize("solver", ["cholesky", "cg"])
@pytest.mark.parametrize("m,big_m,eps", GRAD_CASES)
def test_gradients_vs_finite_differences(x64, m, big_m, eps, solver):
    cost, a, b = _problem(10 + m + big_m, m, big_m)
    weights = _loss_weights(m, big_m, m)
    rng = np.random.default_rng(m * big_m)
    h = 1e-6

    @jax.jit
    def losses(c, x, y, e):
        return _two_losses(sinkhorn(c, x, y, e, tol=1e-14, max_iters=100000,
                                    linear_solver=solver), weights)

    out = sinkhorn(cost, a, b, eps, tol=1e-14, max_iters=100000, linear_solver=solver)
    assert bool(out.converged)
    jac = jax.jit(jax.jacrev(losses, argnums=(0, 1, 2, 3)))(cost, a, b, jnp.float64(eps))
    args = [cost, a, b, eps]
    for i in range(4):
        directions = [rng.normal(size=np.shape(args[i]))]
        if i in (1, 2):  # a zero-sum (simplex-tangent) and a mass-changing direction
            directions = [directions[0] - directions[0].mean(), np.abs(directions[0]) * args[i]]
        for d in directions:
            step = h * eps if i == 3 else h
            plus, minus = list(args), list(args)
            plus[i] = args[i] + step * d
            minus[i] = args[i] - step * d
            fd = (np.asarray(losses(*plus)) - np.asarray(losses(*minus))) / (2 * step)
            an = np.tensordot(np.asarray(jac[i]), d, axes=d.ndim)
            for k, lname in enumerate(("plan", "potentials")):
                full = np.linalg.norm(np.asarray(jac[i])[k]) * np.linalg.norm(d)
                scale = max(abs(fd[k]), 1e-3 * full)
                assert abs(fd[k] - an[k]) <= 1e-6 * scale, (lname, i, fd[k], an[k])


@pytest.mark.parametrize("m,big_m,eps", [(3, 4, 0.05), (9, 6, 0.1), (16, 16, 1.0)])
def test_implicit_vs_unrolled_at_convergence(x64, m, big_m, eps):
    cost, a, b = _problem(20 + m, m, big_m)
    weights = _loss_weights(m, big_m, 1)

    def losses(c, x, y, e, implicit):
        out = sinkhorn(c, x, y, e, tol=1e-14, max_iters=3000, implicit=implicit)
        return _two_losses(out, weights)

    jac = jax.jit(jax.jacrev(losses, argnums=(0, 1, 2, 3)), static_argnums=4)
    j_imp = jac(cost, a, b, jnp.float64(eps), True)
    j_unr = jac(cost, a, b, jnp.float64(eps), False)
    for i, (x, y) in enumerate(zip(j_imp, j_unr)):
        for k in range(2):
            assert _rel(x[k], y[k]) <= 1e-6, (k, i, _rel(x[k], y[k]))


def test_design_formula_for_plan_gradient(x64):
    """dL/dC = -(1/eps) P * (G - alpha_i - beta_j) with the coupled (alpha, beta) system."""
    m, big_m, eps = 5, 7, 0.1
    cost, a, b = _problem(30, m, big_m)
    w = np.random.default_rng(0).normal(size=(m, big_m))
    out = sinkhorn(cost, a, b, eps, tol=1e-14)
    grad = jax.grad(lambda c: jnp.sum(w * sinkhorn(c, a, b, eps, tol=1e-14).plan ** 2))(cost)
    p = np.asarray(out.plan)
    gmat = 2 * w * p
    r, c = p.sum(1), p.sum(0)
    kkt = np.block([[np.diag(r), p], [p.T, np.diag(c)]])
    rhs = np.concatenate([(p * gmat).sum(1), (p * gmat).sum(0)])
    sol = np.linalg.lstsq(kkt, rhs, rcond=None)[0]
    alpha, beta = sol[:m], sol[m:]
    ref = -(1.0 / eps) * p * (gmat - alpha[:, None] - beta[None, :])
    np.testing.assert_allclose(grad, ref, rtol=1e-7, atol=1e-10)
    np.testing.assert_allclose(np.asarray(grad).sum(0), 0.0, atol=1e-9)
    np.testing.assert_allclose(np.asarray(grad).sum(1), 0.0, atol=1e-9)


def test_seed_backward_formula_is_wrong(x64):
    """The seed's grad_C = -P/eps * (G/P - row_avg - col_avg) disagrees with ours (and FD)."""
    m, big_m, eps = 6, 6, 0.1
    cost, a, b = _problem(31, m, big_m)
    w = np.random.default_rng(1).normal(size=(m, big_m))
    ours = np.asarray(jax.grad(lambda c: jnp.sum(w * sinkhorn(c, a, b, eps, tol=1e-14).plan))(cost))
    p = np.asarray(sinkhorn(cost, a, b, eps, tol=1e-14).plan)
    ratio = w / p
    seed = -p / eps * (ratio - ratio.mean(1, keepdims=True) - ratio.mean(0, keepdims=True))
    assert _rel(seed, ours) > 1.0


def test_unrolled_truncated_matches_finite_differences(x64):
    """implicit=False is the exact derivative of the truncated (10-step) algorithm."""
    cost, a, b = _problem(32, 5, 4)
    w = np.random.default_rng(2).normal(size=(5, 4))

    def loss(c):
        return jnp.sum(w * sinkhorn(c, a, b, 0.05, max_iters=10, tol=0.0, implicit=False).plan)

    out = sinkhorn(cost, a, b, 0.05, max_iters=10, tol=0.0, implicit=False)
    assert int(out.iterations) == 10 and not bool(out.converged)
    d = np.random.default_rng(3).normal(size=cost.shape)
    h = 1e-6
    fd = (float(loss(cost + h * d)) - float(loss(cost - h * d))) / (2 * h)
    an = float(np.sum(np.asarray(jax.grad(loss)(cost)) * d))
    assert abs(fd - an) <= 1e-6 * abs(fd)


@pytest.mark.parametrize("solver", ["cholesky", "cg"])
@pytest.mark.parametrize("m,big_m,eps",
                         [(8, 8, 0.01), (16, 24, 0.01), (32, 32, 0.01), (12, 9, 0.1)])
def test_float32_gradients_accurate(m, big_m, eps, solver):
    """Default float32 tolerance: gradients within 1e-4 (relative norm) of float64 (the
    float64 reference always by Cholesky)."""
    cost, a, b = _problem(40 + m, m, big_m)
    weights = _loss_weights(m, big_m, 2)

    def loss(c, x, y, e, s):
        out = sinkhorn(c, x, y, e, max_iters=20000, linear_solver=s)
        return jnp.sum(_two_losses(out, weights)), out

    def grad(*args):
        return jax.jit(jax.value_and_grad(loss, argnums=(0, 1, 2, 3), has_aux=True),
                       static_argnums=4)(*args)

    with jax.enable_x64(True):
        _, g64 = grad(cost, a, b, jnp.float64(eps), "cholesky")
        g64 = [np.asarray(x) for x in g64]
    (_, out32), g32 = grad(*(jnp.asarray(x, jnp.float32) for x in (cost, a, b, eps)), solver)
    assert bool(out32.converged)
    for i, (x, y) in enumerate(zip(g32, g64)):
        assert x.dtype == jnp.float32
        assert np.all(np.isfinite(x))
        assert _rel(x, y) <= 1e-4, (i, _rel(x, y))


def test_implicit_backward_memory_flat_in_iterations():
    cost, a, b = _problem(50, 16, 16, batch=(4,), dtype=np.float32)

    def peak(n, implicit):
        fn = jax.jit(jax.grad(lambda c: jnp.sum(
            sinkhorn(c, a, b, 0.05, max_iters=n, tol=0.0, implicit=implicit).plan ** 2)))
        ma = fn.lower(jnp.asarray(cost)).compile().memory_analysis()
        return ma.temp_size_in_bytes

    assert peak(1000, True) == peak(10, True)
    assert peak(200, False) > 5 * peak(10, False)


# ------------------------------------------------------------------------------ bad input


def test_bad_input_messages():
    cost, a, b = _problem(60, 3, 4, dtype=np.float32)
    with pytest.raises(ValueError, match="`cost`"):
        sinkhorn(cost[0], a, b, 0.1)
    with pytest.raises(ValueError, match="`a`"):
        sinkhorn(cost, a[:2], b, 0.1)
    with pytest.raises(ValueError, match="`b`"):
        sinkhorn(cost, a, b[:3], 0.1)
    with pytest.raises(ValueError, match="`b`"):
        sinkhorn(cost[None], a[None], b, 0.1)
    with pytest.raises(ValueError, match="`epsilon`"):
        sinkhorn(cost, a, b, 0.0)
    with pytest.raises(ValueError, match="`epsilon`"):
        sinkhorn(cost, a, b, -1.0)
    with pytest.raises(ValueError, match="`epsilon`"):
        sinkhorn(cost, a, b, jnp.ones(2))
    with pytest.raises(ValueError, match="`a`"):
        sinkhorn(cost, np.array([0.5, 0.5, 0.0], np.float32), b, 0.1)
    with pytest.raises(ValueError, match="`b`"):
        sinkhorn(cost, a, -b, 0.1)
    bad = cost.copy()
    bad[0, 0] = np.inf
    with pytest.raises(ValueError, match="`cost`"):
        sinkhorn(bad, a, b, 0.1)
    bad[0, 0] = np.nan
    with pytest.raises(ValueError, match="`cost`"):
        sinkhorn(bad, a, b, 0.1)
    with pytest.raises(ValueError, match="`max_iters`"):
        sinkhorn(cost, a, b, 0.1, max_iters=0)
    with pytest.raises(ValueError, match="`tol`"):
        sinkhorn(cost, a, b, 0.1, tol=-1.0)
    with pytest.raises(ValueError, match="`linear_solver`"):
        sinkhorn(cost, a, b, 0.1, linear_solver="lu")
    with pytest.raises(TypeError, match="`cost`"):
        sinkhorn(cost.astype(np.complex64), a, b, 0.1)


def test_traced_epsilon_is_not_concretized():
    cost, a, b = _problem(61, 3, 4, dtype=np.float32)
    # epsilon traced under jit and grad: no float() on it, no error.
    g = jax.jit(jax.grad(lambda e: jnp.sum(sinkhorn(cost, a, b, e).plan * cost)))(jnp.float32(0.2))
    assert np.isfinite(float(g))
    # equal masses: no warning
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        sinkhorn(cost, a, b, 0.2)


@pytest.mark.parametrize("m,n", [(8, 8), (127, 30), (128, 128), (129, 64), (200, 150)])
def test_blocked_gram_equals_the_full_product_and_is_symmetric(m, n):
    from jaxstab.ops.sinkhorn import _GRAM_SPLIT, _gram

    a = np.random.default_rng(m + n).random((m, n)).astype(np.float32)
    g = np.asarray(jax.jit(_gram)(jnp.asarray(a)))
    ref = a.astype(np.float64) @ a.astype(np.float64).T
    assert g.shape == (m, m)
    np.testing.assert_allclose(g, ref, rtol=2e-6, atol=1e-6 * np.abs(ref).max())
    if m >= _GRAM_SPLIT:  # the upper block is the transpose of the lower one, exactly
        assert np.array_equal(g[: m // 2, m // 2:], g[m // 2:, : m // 2].T)


def test_implicit_gradient_with_the_blocked_gram_equals_the_unblocked_one(monkeypatch):
    import importlib

    S = importlib.import_module("jaxstab.ops.sinkhorn")
    rng = np.random.default_rng(0)
    m = S._GRAM_SPLIT  # the smallest size that takes the blocked path
    cost = jnp.asarray(rng.random((2, m, m)), jnp.float32)
    a = jnp.asarray(rng.random((2, m)) + 0.5, jnp.float32)
    b = jnp.asarray(rng.random((2, m)) + 0.5, jnp.float32)
    w = jnp.asarray(rng.standard_normal((2, m, m)), jnp.float32)

    def grads():  # the Gram matrix is formed on the Cholesky path only
        return np.asarray(jax.jit(jax.grad(lambda c: jnp.sum(
            w * S.sinkhorn(c, a, b, 0.1, linear_solver="cholesky").plan)))(cost))

    blocked = grads()
    monkeypatch.setattr(S, "_GRAM_SPLIT", 10 ** 9)
    full = grads()
    assert np.all(np.isfinite(blocked))
    np.testing.assert_allclose(blocked, full, rtol=1e-4, atol=1e-5 * np.abs(full).max())


@pytest.mark.parametrize("m", [1, 2, 5, 16])
def test_small_spd_solve_matches_numpy_in_float64(x64, m):
    """The LAPACK-free Cholesky solve of the backward pass, against numpy's dense solve."""
    from jaxstab.ops.sinkhorn import _spd_solve_small

    rng = np.random.default_rng(m)
    q = rng.standard_normal((m, m))
    k = q @ q.T + 0.1 * np.eye(m)  # SPD, condition number in the hundreds for m = 16
    rhs = rng.standard_normal(m)
    x = np.asarray(jax.jit(_spd_solve_small)(jnp.asarray(k), jnp.asarray(rhs)))
    np.testing.assert_allclose(x, np.linalg.solve(k, rhs), rtol=1e-9,
                               atol=1e-12 * np.abs(np.linalg.solve(k, rhs)).max())


@pytest.mark.parametrize("m,n", [(4, 8), (16, 16), (20, 5)])
def test_implicit_gradient_small_solve_equals_the_lapack_cholesky(monkeypatch, m, n):
    """Sides up to _SMALL_SOLVE solve without LAPACK; the gradients equal the LAPACK path's
    (the smaller side decides: (20, 5) solves a 5 x 5 system)."""
    import importlib

    S = importlib.import_module("jaxstab.ops.sinkhorn")
    assert min(m, n) <= S._SMALL_SOLVE
    rng = np.random.default_rng(m * n)
    cost = jnp.asarray(rng.random((2, m, n)), jnp.float32)
    a = jnp.asarray(rng.random((2, m)) + 0.5, jnp.float32)
    b = jnp.asarray(rng.random((2, n)) + 0.5, jnp.float32)
    w = jnp.asarray(rng.standard_normal((2, m, n)), jnp.float32)

    def grads():
        fn = jax.jit(jax.grad(lambda c: jnp.sum(
            w * S.sinkhorn(c, a, b, 0.1, linear_solver="cholesky").plan)))
        lapack = "lapack" in fn.lower(cost).as_text()
        return np.asarray(fn(cost)), lapack

    small, small_lapack = grads()
    monkeypatch.setattr(S, "_SMALL_SOLVE", 0)
    ref, ref_lapack = grads()
    assert not small_lapack and ref_lapack  # the two paths really differ
    assert np.all(np.isfinite(small))
    np.testing.assert_allclose(small, ref, rtol=1e-4, atol=1e-5 * np.abs(ref).max())


def _deflated_system(m, n, seed, eps=0.1):
    """(A, v, rhs) of the backward's deflated Schur system for a converged float64 plan."""
    cost, a, b = _problem(seed, m, n)
    p = np.asarray(sinkhorn(cost, a, b, eps, tol=1e-13, max_iters=100000).plan)
    r, c = p.sum(1), p.sum(0)
    a_mat = p / np.sqrt(r)[:, None] / np.sqrt(c)[None, :]
    v = np.sqrt(r) / np.linalg.norm(np.sqrt(r))
    rhs = np.random.default_rng(seed).normal(size=m)
    rhs = rhs - v * (v @ rhs)
    return a_mat, v, rhs


@pytest.mark.parametrize("m,n,eps", [(3, 5, 0.1), (20, 30, 0.05), (40, 24, 0.02)])
def test_cg_solve_matches_numpy_in_float64(x64, m, n, eps):
    """The matrix-free CG solve of (I - A A^T + v v^T) x = rhs, against numpy's dense solve."""
    from jaxstab.ops.sinkhorn import _spd_solve_cg

    a_mat, v, rhs = _deflated_system(m, n, m + n, eps)
    k = np.eye(m) - a_mat @ a_mat.T + np.outer(v, v)
    ref = np.linalg.solve(k, rhs)
    x = np.asarray(jax.jit(_spd_solve_cg, static_argnums=3)(
        jnp.asarray(a_mat), jnp.asarray(v), jnp.asarray(rhs), 2 * m + 10))
    np.testing.assert_allclose(x, ref, rtol=1e-8, atol=1e-10 * np.abs(ref).max())
    # the iteration cap is honoured: one step is not a solve (so the comparison above can fail)
    one = np.asarray(_spd_solve_cg(jnp.asarray(a_mat), jnp.asarray(v), jnp.asarray(rhs), 1))
    if m > 3:
        assert np.linalg.norm(one - ref) > 1e-3 * np.linalg.norm(ref)


@pytest.mark.parametrize("m,n", [(17, 40), (40, 17), (24, 24)])
def test_cg_gradients_equal_cholesky_gradients_and_call_no_lapack(x64, m, n):
    """Above a side of 16 the default ("auto") is the CG solve: same gradients as the dense
    Cholesky path (float64, all four inputs), and no LAPACK call in the program."""
    cost, a, b = _problem(70 + m + n, m, n, batch=(2,))
    weights = _loss_weights(m, n, 3)

    def loss(c, x, y, e, s):
        out = sinkhorn(c, x, y, e, tol=1e-13, max_iters=100000, linear_solver=s)
        return jnp.sum(jax.vmap(_two_losses, in_axes=(0, None))(out, weights))

    grads = {s: jax.jit(jax.grad(loss, argnums=(0, 1, 2, 3)), static_argnums=4)
             for s in ("auto", "cg", "cholesky")}
    args = (cost, a, b, jnp.float64(0.1))
    g = {s: fn(*args, s) for s, fn in grads.items()}
    for i in range(4):
        np.testing.assert_allclose(np.asarray(g["auto"][i]), np.asarray(g["cg"][i]), rtol=0,
                                   atol=0)
        assert _rel(g["cg"][i], g["cholesky"][i]) <= 1e-9, (i, _rel(g["cg"][i], g["cholesky"][i]))
    texts = {s: grads[s].lower(*args, s).as_text() for s in ("auto", "cholesky")}
    assert "lapack" not in texts["auto"] and "lapack" in texts["cholesky"]


@pytest.mark.parametrize("solver", ["cholesky", "cg"])
def test_nonfinite_cotangent_gives_nonfinite_gradient(solver):
    """A NaN reaching the backward is not hidden: the gradient is NaN for both solvers (CG never
    treats a NaN residual as converged, which would return a zero solve)."""
    cost, a, b = _problem(90, 20, 24, dtype=np.float32)

    def loss(c):
        out = sinkhorn(c, a, b, 0.1, linear_solver=solver)
        return jnp.sum(out.f * jnp.float32(np.nan)) + jnp.sum(out.plan)

    g = np.asarray(jax.jit(jax.grad(loss))(cost))
    assert np.isnan(g).any()
