"""jaxstab.agents.common: the LAPACK-free orthogonal initializer and the guards."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from jaxstab.agents.common import orthogonal_init, tree_all_finite, tree_select


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
