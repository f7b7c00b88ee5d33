"""jaxstab.agents.common: the LAPACK-free orthogonal initializer and the guards."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from jaxstab.agents.common import orthogonal_init, permutation, tree_all_finite, tree_select


@pytest.mark.parametrize("shape", [(64, 64), (3, 64), (64, 1), (256, 40), (4, 5, 6)])
def test_orthogonal_init_is_orthonormal(shape):
    w = orthogonal_init(2.0)(jax.random.key(0), shape)
    assert w.shape == shape and w.dtype == jnp.float32
    m = np.asarray(w, np.float64).reshape(-1, shape[-1]) / 2.0
    gram = m.T @ m if m.shape[0] >= m.shape[1] else m @ m.T
    np.testing.assert_allclose(gram, np.eye(gram.shape[0]), atol=2e-6)


def test_orthogonal_init_matches_qr_of_same_gaussian():
    """Gram-Schmidt gives the Q of the QR decomposition with positive diag(R) (NumPy reference)."""
    key = jax.random.key(3)
    n, k = 20, 7
    w = np.asarray(orthogonal_init()(key, (n, k)), np.float64)
    a = np.asarray(jax.random.normal(key, (n, k), jnp.float32), np.float64)
    q, r = np.linalg.qr(a)
    q = q * np.sign(np.diag(r))
    np.testing.assert_allclose(w, q, atol=1e-5)


def test_orthogonal_init_distribution_matches_flax():
    """Same distribution as flax's QR-based init: entry variance 1/n for square matrices."""
    keys = jax.random.split(jax.random.key(1), 400)
    ours = jax.vmap(lambda k: orthogonal_init()(k, (16, 16)))(keys)
    theirs = jax.vmap(lambda k: jax.nn.initializers.orthogonal()(k, (16, 16)))(keys)
    assert abs(float(ours.var()) - float(theirs.var())) < 0.1 / 16
    assert abs(float(ours.mean())) < 0.01


def test_orthogonal_init_rejects_vectors():
    with pytest.raises(ValueError, match="rank >= 2"):
        orthogonal_init()(jax.random.key(0), (5,))


def test_tree_guards():
    good = {"a": jnp.ones(3), "b": jnp.zeros((), jnp.int32)}
    bad = {"a": jnp.array([1.0, jnp.nan, 0.0]), "b": jnp.zeros((), jnp.int32)}
    assert bool(tree_all_finite(good)) and not bool(tree_all_finite(bad))
    picked = tree_select(tree_all_finite(bad), bad, good)
    np.testing.assert_array_equal(picked["a"], good["a"])


def test_fast_dot_general_values_and_gradients_match_plain_matmul():
    """nn.Dense's custom-VJP matmul: same values and gradients as x @ W (also under vmap,
    with leading batch dimensions, and in float64 against central finite differences)."""
    from jaxstab.agents.common import fast_dot_general

    dims = (((2,), (0,)), ((), ()))
    x = jax.random.normal(jax.random.key(0), (3, 5, 4))
    w = jax.random.normal(jax.random.key(1), (4, 6))
    g = jax.random.normal(jax.random.key(2), (3, 5, 6))

    def f(fn):
        return lambda x, w: jnp.sum(jnp.tanh(fn(x, w, dims)) * g)

    ours = jax.grad(f(fast_dot_general), argnums=(0, 1))(x, w)
    ref = jax.grad(f(jax.lax.dot_general), argnums=(0, 1))(x, w)
    np.testing.assert_allclose(fast_dot_general(x, w, dims), x @ w, rtol=1e-6, atol=1e-6)
    for a, b in zip(ours, ref):
        np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-5)
    # vmapped over a stack of weights (the SAC critic ensemble)
    ws = jnp.stack([w, 2 * w])
    vg = jax.vmap(jax.grad(f(fast_dot_general), argnums=1), in_axes=(None, 0))(x, ws)
    vr = jax.vmap(jax.grad(f(jax.lax.dot_general), argnums=1), in_axes=(None, 0))(x, ws)
    np.testing.assert_allclose(vg, vr, rtol=1e-5, atol=1e-5)
    # a non-Dense contraction falls back to lax.dot_general
    other = (((1,), (1,)), ((0,), (0,)))
    a = jax.random.normal(jax.random.key(3), (2, 3, 4))
    b = jax.random.normal(jax.random.key(4), (2, 3, 5))
    np.testing.assert_array_equal(fast_dot_general(a, b, other), jax.lax.dot_general(a, b, other))


def test_fast_dot_general_float64_finite_differences(x64):
    from jaxstab.agents.common import fast_dot_general

    dims = (((1,), (0,)), ((), ()))
    x = jax.random.normal(jax.random.key(5), (4, 3), jnp.float64)
    w = jax.random.normal(jax.random.key(6), (3, 2), jnp.float64)
    loss = lambda w: jnp.sum(jnp.sin(fast_dot_general(x, w, dims)))  # noqa: E731
    grad = np.asarray(jax.grad(loss)(w))
    eps = 1e-6
    fd = np.zeros_like(grad)
    for i in range(3):
        for j in range(2):
            e = np.zeros((3, 2))
            e[i, j] = eps
            fd[i, j] = (loss(w + e) - loss(w - e)) / (2 * eps)
    np.testing.assert_allclose(grad, fd, rtol=1e-7, atol=1e-9)


# ---------------------------------------------------------------- permutation
@pytest.mark.parametrize("n", [1, 2, 3, 7, 128, 512, 1000, 4097])
def test_permutation_is_a_permutation(n):
    p = jax.jit(permutation, static_argnums=1)(jax.random.key(n), n)
    assert p.dtype == jnp.int32 and p.shape == (n,)
    np.testing.assert_array_equal(np.sort(np.asarray(p)), np.arange(n))
    # deterministic in the key, different across keys
    np.testing.assert_array_equal(np.asarray(permutation(jax.random.key(n), n)), np.asarray(p))
    if n >= 7:
        assert not np.array_equal(np.asarray(permutation(jax.random.key(n + 1), n)), np.asarray(p))


def test_permutation_is_uniform_over_all_orders_of_four():
    """Chi-square over the 24 orders of 4 elements from 48,000 vmapped keys (df = 23; the
    statistic exceeds 60 with probability < 1e-4 under uniformity; the identity, a random
    rotation or a one-swap shuffle would give thousands)."""
    keys = jax.random.split(jax.random.key(0), 48_000)
    perms = np.asarray(jax.jit(jax.vmap(lambda k: permutation(k, 4)))(keys))
    codes = perms @ np.array([64, 16, 4, 1])
    _, counts = np.unique(codes, return_counts=True)
    assert len(counts) == 24
    expected = len(keys) / 24
    chi2 = float(np.sum((counts - expected) ** 2 / expected))
    assert chi2 < 60.0, chi2


def test_permutation_of_512_places_elements_uniformly():
    """The PPO batch size: where element 0 and element 511 land (8 bins, chi-square df = 7,
    < 30 with probability > 1 - 1e-4) and that i precedes i + 1 half of the time (ties of the
    packed random bits would favour the input order)."""
    keys = jax.random.split(jax.random.key(1), 8000)
    perms = np.asarray(jax.jit(jax.vmap(lambda k: permutation(k, 512)))(keys))
    pos = np.argsort(perms, axis=1)  # pos[r, i] = where element i landed
    for elem in (0, 511):
        counts = np.bincount(pos[:, elem] // 64, minlength=8)
        expected = len(keys) / 8
        assert float(np.sum((counts - expected) ** 2 / expected)) < 30.0, counts
    precedes = np.mean(pos[:, :-1] < pos[:, 1:])
    assert abs(precedes - 0.5) < 0.005, precedes


def test_permutation_rejects_empty():
    with pytest.raises(ValueError, match="n must be >= 1"):
        permutation(jax.random.key(0), 0)
