"""Pieces shared by the agents: MLP networks, a LAPACK-free orthogonal init, update guards."""

from __future__ import annotations

from typing import Any, Callable, Sequence

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np


def orthogonal_init(scale: float = 1.0) -> Callable[..., jax.Array]:
    """Orthogonal initializer (Saxe et al. 2014) built from Gram-Schmidt, without LAPACK.

    Same distribution as ``flax.linen.initializers.orthogonal``: the Q factor (with positive
    diagonal R) of a Gaussian matrix, i.e. Haar-distributed orthonormal rows or columns, times
    ``scale``. It is computed by classical Gram-Schmidt applied twice ("CGS2", orthogonal to
    float rounding) inside a ``lax.scan`` instead of a LAPACK QR.

    Why: on the CPU, jax 0.10.2 runs batched LAPACK kernels (here the QR of an orthogonal init
    under ``vmap`` over seeds) through ``ParallelBatchMap`` on XLA's intra-op thread pool. When
    two such kernels run concurrently on a 2-thread pool, each blocks waiting for sub-tasks that
    need a free pool thread, and the whole program hangs with every thread idle (stack traces in
    the README's platform note). Networks built by jaxstab therefore never call LAPACK at init.

    Args:
      scale: gain multiplying the orthonormal matrix.

    Returns:
      ``init(key, shape, dtype=float32) -> array`` for shapes of rank >= 2 (the last axis is the
      output axis, the others are flattened), usable as a flax ``kernel_init``.
    """

    def init(key: jax.Array, shape: Sequence[int], dtype: Any = jnp.float32) -> jax.Array:
        if len(shape) < 2:
            raise ValueError(f"orthogonal_init needs a shape of rank >= 2, got {tuple(shape)}")
        n_rows, n_cols = int(np.prod(shape[:-1])), int(shape[-1])
        n, k = max(n_rows, n_cols), min(n_rows, n_cols)
        a = jax.random.normal(key, (n, k), jnp.float32)

        def body(q: jax.Array, j_col: tuple[jax.Array, jax.Array]) -> tuple[jax.Array, None]:
            j, v = j_col
            for _ in range(2):  # CGS2: re-orthogonalize once
                v = v - q @ (q.T @ v)
            v = v / jnp.maximum(jnp.linalg.norm(v), jnp.finfo(v.dtype).tiny)
            return jax.lax.dynamic_update_index_in_dim(q, v, j, axis=1), None

        q, _ = jax.lax.scan(body, jnp.zeros((n, k), jnp.float32), (jnp.arange(k), a.T))
        if n_rows < n_cols:
            q = q.T
        return (scale * q).reshape(tuple(shape)).astype(dtype)

    return init


@jax.custom_vjp
def _matmul(x: jax.Array, w: jax.Array) -> jax.Array:
    return jnp.matmul(x, w)


def _matmul_fwd(x, w):
    return jnp.matmul(x, w), (x, w)


def _matmul_bwd(res, g):
    x, w = res
    x2 = jnp.reshape(x, (-1, x.shape[-1]))
    g2 = jnp.reshape(g, (-1, g.shape[-1]))
    # Materialize the transposes: XLA's CPU backend otherwise emits the weight gradient
    # x^T g as a dot contracting dimension 0 of both operands, which it runs on a generic
    # (several times slower) path instead of its fast matmul library; the barrier stops the
    # transposes from being folded back into the dot. Same math (up to rounding order).
    xt, wt = jax.lax.optimization_barrier((x2.T, w.T))
    dx = jnp.reshape(jnp.matmul(g2, wt), x.shape)
    return dx, jnp.matmul(xt, g2)


_matmul.defvjp(_matmul_fwd, _matmul_bwd)


def fast_dot_general(lhs: jax.Array, rhs: jax.Array, dimension_numbers: Any,
                     precision: Any = None, preferred_element_type: Any = None) -> jax.Array:
    """``lax.dot_general`` for ``nn.Dense`` whose backward pass runs fast on CPU.

    A dense layer ``x @ W`` (``x [..., in]``, ``W [in, out]``) goes through a matmul with a
    custom VJP (``dx = g W^T``, ``dW = x^T g`` with the transposes materialized); anything
    else falls back to ``jax.lax.dot_general``. Values and gradients are those of
    ``x @ W`` (up to float rounding order).
    """
    (lc, rc), (lb, rb) = dimension_numbers
    if (rhs.ndim == 2 and tuple(lc) == (lhs.ndim - 1,) and tuple(rc) == (0,) and not lb
            and not rb and precision is None and preferred_element_type is None
            and lhs.dtype == rhs.dtype):
        return _matmul(lhs, rhs)
    return jax.lax.dot_general(lhs, rhs, dimension_numbers, precision=precision,
                               preferred_element_type=preferred_element_type)


class MLP(nn.Module):
    """Multi-layer perceptron with orthogonal init (:func:`orthogonal_init`, LAPACK-free).

    Attributes:
      hidden_sizes: widths of the hidden layers.
      out_dim: output width.
      activation: hidden activation (default ``nn.relu``).
      out_scale: orthogonal-init gain of the output layer (small values give near-zero initial
        outputs, e.g. 0.01 for policy means).
    """

    hidden_sizes: Sequence[int]
    out_dim: int
    activation: Callable[[jax.Array], jax.Array] = nn.relu
    out_scale: float = 1.0

    @nn.compact
    def __call__(self, x: jax.Array) -> jax.Array:
        for width in self.hidden_sizes:
            x = nn.Dense(width, kernel_init=orthogonal_init(np.sqrt(2.0)),
                         dot_general=fast_dot_general)(x)
            x = self.activation(x)
        return nn.Dense(self.out_dim, kernel_init=orthogonal_init(self.out_scale),
                        dot_general=fast_dot_general)(x)


def tree_all_finite(tree: Any) -> jax.Array:
    """True (0-d bool array) iff every leaf of ``tree`` is finite."""
    leaves = [jnp.all(jnp.isfinite(x)) for x in jax.tree_util.tree_leaves(tree)
              if jnp.issubdtype(jnp.asarray(x).dtype, jnp.inexact)]
    if not leaves:
        return jnp.asarray(True)
    return jnp.stack(leaves).all()


def tree_select(pred: jax.Array, on_true: Any, on_false: Any) -> Any:
    """Leafwise ``jnp.where(pred, on_true, on_false)`` for a scalar predicate."""
    return jax.tree_util.tree_map(lambda a, b: jnp.where(pred, a, b), on_true, on_false)


def permutation_rounds(n: int) -> int:
    """Sort rounds :func:`permutation` uses for ``n`` elements (``n <= 2^24``): the fewest with
    ``n^3 <= 2^(rounds * (32 - bit_length(n - 1)))``, at least one."""
    s = max(1, (int(n) - 1).bit_length())
    return max(1, int(np.ceil(3.0 * np.log2(max(int(n), 1)) / (32 - s))))


def permutation(key: jax.Array, n: int) -> jax.Array:
    """A uniformly random permutation of ``arange(n)`` (int32), by single-operand sorts.

    ``jax.random.permutation`` sorts ``(random key, index)`` pairs with a two-operand
    comparator, which XLA's CPU backend runs several times slower than a sort of one array of
    integers (16 vmapped permutations of 512 on a 2-core Xeon: 0.96 ms vs 0.51 ms for the two
    rounds below; of 2048: 8.9 ms vs 2.2 ms; ``python benchmarks/bench_ppo.py --section
    shuffle``). Here each round packs ``32 - s`` random
    bits above the ``s = bit_length(n - 1)`` bits of an element's current position into one
    uint32, sorts those integers and reads the new order from the low bits. Equal random parts
    keep their current order, so a round alone is slightly biased towards it (for n = 512, two
    of the 512 elements share their 23 random bits with probability ~1.6%); as
    ``jax.random.permutation`` does, rounds are repeated until ``n^3 <= 2^(rounds * (32 - s))``
    (two rounds for n = 512; a later round re-orders the ties of an earlier one at random).

    Args:
      key: a PRNG key.
      n: the length, ``1 <= n <= 2^24`` (``jax.random.permutation`` is used above).

    Returns:
      ``[n]`` int32 array holding each of ``0 .. n-1`` once.

    Raises:
      ValueError: if ``n < 1``.
    """
    n = int(n)
    if n < 1:
        raise ValueError(f"n must be >= 1, got {n}")
    s = max(1, (n - 1).bit_length())
    if s > 24:
        return jax.random.permutation(key, n).astype(jnp.int32)
    rounds = permutation_rounds(n)
    position = jnp.arange(n, dtype=jnp.uint32)
    order = None  # the identity before the first round
    for k in jax.random.split(key, rounds):
        bits = jax.random.bits(k, (n,), jnp.uint32) >> s << s  # the top 32 - s bits
        low = (jax.lax.sort(bits | position) & jnp.uint32((1 << s) - 1)).astype(jnp.int32)
        order = low if order is None else order[low]
    return order
