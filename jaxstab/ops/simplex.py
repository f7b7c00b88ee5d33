"""Euclidean projection onto the probability simplex, with its closed-form Jacobian.

The projection of ``z in R^n`` onto ``Delta^n = {p : p >= 0, sum(p) = 1}`` is

    p = max(z - theta, 0),   theta the unique root of  sum_i max(z_i - theta, 0) = 1

(Duchi et al. 2008; Held, Wolfe & Crowder 1974). Equivalently, with ``u`` the entries of ``z``
sorted in decreasing order, ``theta = max_k (sum_{i<=k} u_i - 1) / k``: the prefix averages
``t_k`` increase exactly while ``u_k > t_k`` (the support condition of Duchi et al.), so their
maximum is attained at the support size ``rho``. That identity needs no gather and lets us find
``theta`` without sorting:

* ``n <= 32`` (``_PAIRWISE_MAX_N``): for every entry ``i`` the prefix that ends at it is the set
  ``{j : z_j >= z_i}``; ``theta = max_i (sum_{z_j >= z_i} z_j - 1) / #{z_j >= z_i}``, an exact
  O(n^2) formula made of comparisons and sums (ties are counted together, which gives the same
  maximum because the support never splits a tie).
* ``n > 32``: bisection on ``theta`` inside the bracket ``[max(z) - 1, max(z)]`` for
  ``nmant + 2`` steps (25 in float32, 54 in float64), then two Michelot steps
  ``theta <- (sum_{z_i > theta} z_i - 1) / #{z_i > theta}``, which snap ``theta`` to the exact
  value for the support found (Michelot 1986; Condat 2016).

Both avoid XLA's comparator sort, which dominates the sort-based algorithm (optax's) on CPU: see
``benchmarks/bench_projection.py`` for the measured comparison against
``optax.projections.projection_simplex`` that justifies keeping this implementation.

Derivative (``jax.custom_jvp``): almost everywhere ``dp = J dz`` with
``J = diag(s) - s s^T / |S|``, ``s = 1{p > 0}`` the support indicator. ``J`` is symmetric and
idempotent, so one rule serves forward mode (``jvp``/``jacfwd``) and reverse mode
(``grad``/``vjp``/``jacrev``). At the measure-zero points where some ``z_i == theta`` exactly the
entry is treated as outside the support (a one-sided derivative).
"""

from __future__ import annotations

import jax
import jax.numpy as jnp

__all__ = ["project_simplex"]

# Up to this many entries along the projected axis the exact pairwise formula is used; above it,
# bisection + Michelot. Chosen from benchmarks/bench_projection.py on a 2-core CPU (pairwise is
# fastest at n = 8 and 30 and slowest at n = 128, where its O(n^2) work and memory dominate).
_PAIRWISE_MAX_N = 32
_MICHELOT_STEPS = 2


def _theta_pairwise(z: jax.Array) -> jax.Array:
    """Exact threshold by the all-pairs prefix formula. ``z [..., n]`` -> ``theta [..., 1]``."""
    zj = z[..., None, :]  # [..., 1, n]
    ge = zj >= z[..., :, None]  # [..., n(i), n(j)]: z_j >= z_i
    prefix_sum = jnp.sum(jnp.where(ge, zj, jnp.zeros((), z.dtype)), axis=-1)  # [..., n]
    prefix_len = jnp.sum(ge, axis=-1).astype(z.dtype)  # [..., n], >= 1 for finite z_i
    return jnp.max((prefix_sum - 1) / prefix_len, axis=-1, keepdims=True)


def _theta_bisect(z: jax.Array) -> jax.Array:
    """Threshold by bisection + Michelot refinement. ``z [..., n]`` -> ``theta [..., 1]``."""
    zero = jnp.zeros((), z.dtype)
    hi = jnp.max(z, axis=-1, keepdims=True)  # sum(relu(z - hi)) = 0 < 1 (hi = 0 after the shift)
    lo = hi - 1  # sum(relu(z - lo)) >= 1: theta in [lo, hi)

    def bisect(_, bracket):
        lo, hi = bracket
        mid = 0.5 * (lo + hi)
        excess = jnp.sum(jnp.maximum(z - mid, zero), axis=-1, keepdims=True) - 1
        above = excess > 0  # theta > mid
        return jnp.where(above, mid, lo), jnp.where(above, hi, mid)

    steps = jnp.finfo(z.dtype).nmant + 2
    lo, _ = jax.lax.fori_loop(0, steps, bisect, (lo, hi), unroll=True)

    theta = lo
    for _ in range(_MICHELOT_STEPS):
        inside = z > theta
        count = jnp.sum(inside, axis=-1, keepdims=True).astype(z.dtype)
        total = jnp.sum(jnp.where(inside, z, zero), axis=-1, keepdims=True)
        # count == 0 would need theta >= max(z) = 0; defensive: keep theta then.
        theta = jnp.where(count > 0, (total - 1) / jnp.maximum(count, 1), theta)
    return theta


def _project_last(z: jax.Array) -> jax.Array:
    """Projection along the last axis with the non-finite policy applied. No custom rule."""
    n = z.shape[-1]
    # Half precision sums are too coarse: compute in float32 and cast back.
    work = z.astype(jnp.float32) if jnp.finfo(z.dtype).bits < 32 else z
    # The projection is invariant to z -> z - c 1. Shifting by the maximum puts every support
    # entry in (-1, 0] (theta >= max(z) - 1), and z_i - max(z) is exact there (Sterbenz), so the
    # rounding error is O(n eps) whatever the magnitude of z, not O(n eps max|z|).
    work = work - jnp.max(work, axis=-1, keepdims=True)
    theta = _theta_pairwise(work) if n <= _PAIRWISE_MAX_N else _theta_bisect(work)
    p = jnp.maximum(work - theta, jnp.zeros((), work.dtype))
    # Policy: NaN or +inf anywhere in a row, or a row that is entirely -inf, -> the row is NaN.
    # (-inf entries alone get weight exactly 0, the limit of the projection.)
    bad = jnp.any(jnp.isnan(work) | (work == jnp.inf), axis=-1, keepdims=True) | jnp.all(
        work == -jnp.inf, axis=-1, keepdims=True
    )
    p = jnp.where(bad, jnp.full((), jnp.nan, work.dtype), p)
    return p.astype(z.dtype)


@jax.custom_jvp
def _project_simplex_last(z: jax.Array) -> jax.Array:
    return _project_last(z)


@_project_simplex_last.defjvp
def _project_simplex_last_jvp(primals, tangents):
    (z,), (dz,) = primals, tangents
    p = _project_simplex_last(z)
    s = (p > 0).astype(p.dtype)
    # |S| >= 1 for every finite row; a NaN row has |S| = 0 and 0/0 makes its tangent NaN too.
    card = jnp.sum(s, axis=-1, keepdims=True)
    sdz = s * dz
    return p, sdz - s * (jnp.sum(sdz, axis=-1, keepdims=True) / card)


# One compiled program per shape/dtype for eager callers (inlined when called under jit).
_project_last_jit = jax.jit(_project_simplex_last)


def _check_input(z: jax.Array, axis: int) -> int:
    if not isinstance(axis, int) or isinstance(axis, bool):
        raise TypeError(f"project_simplex: `axis` must be a Python int, got {type(axis).__name__}.")
    if not jnp.issubdtype(z.dtype, jnp.floating):
        raise TypeError(
            f"project_simplex: `z` must have a real floating dtype, got {z.dtype}. "
            "Cast it first, e.g. z.astype(jnp.float32)."
        )
    if z.ndim == 0:
        raise ValueError("project_simplex: `z` must have at least one dimension, got a scalar.")
    if not -z.ndim <= axis < z.ndim:
        raise ValueError(f"project_simplex: `axis`={axis} is out of range for `z` of shape {z.shape}.")
    axis = axis % z.ndim
    if z.shape[axis] == 0:
        raise ValueError(f"project_simplex: `z` has size 0 along `axis`={axis} (shape {z.shape}).")
    return axis


def project_simplex(z: jax.Array, axis: int = -1) -> jax.Array:
    """Euclidean projection onto the probability simplex along ``axis``.

    ``p = argmin_{p >= 0, sum(p) = 1} ||p - z||_2 = max(z - theta, 0)`` with ``theta`` chosen so
    that ``sum(p) = 1``; every slice along ``axis`` is projected independently (any batch
    shape). Differentiable with the closed-form Jacobian ``J = diag(s) - s s^T / |S|``
    (``s = 1{p > 0}``) attached by ``jax.custom_jvp``: works with ``grad``, ``jvp``,
    ``jacfwd``, ``jacrev``, ``jit`` and ``vmap``.

    Non-finite inputs, per slice along ``axis`` (other slices are unaffected):

    * ``-inf`` entries get weight exactly ``0`` (the limit; usable as a mask);
    * a slice containing ``NaN`` or ``+inf``, or made only of ``-inf``, comes back all ``NaN``
      (and so does its derivative), so that finiteness guards such as
      ``jaxstab.agents.common.tree_all_finite`` see it instead of a silently valid point.

    Implementation: exact all-pairs threshold for ``n <= 32``, bisection + Michelot steps above
    (no sort; see the module docstring). The all-pairs path needs ``O(batch * n^2)`` temporary
    memory (XLA measured 36x the input's size at ``n = 32``; 3x on the bisection path). It is faster than
    ``jax.vmap(optax.projections.projection_simplex)`` on batched inputs (measured in
    ``benchmarks/bench_projection.py``), which is why this library keeps its own version.

    Args:
      z: real floating array ``[..., n, ...]``, ``n >= 1`` along ``axis``. float16/bfloat16
        are computed in float32 and cast back.
      axis: the axis holding the simplex coordinates (Python int, may be negative).

    Returns:
      ``p``: same shape and dtype as ``z``; ``p >= 0`` and ``p.sum(axis) == 1`` up to rounding
      (about ``n * eps``, independent of the magnitude of ``z``: it is shifted by its maximum
      first) for finite slices.

    Raises:
      TypeError: ``z`` is not a real floating array, or ``axis`` is not an int.
      ValueError: ``z`` is a scalar, ``axis`` is out of range, or ``z`` is empty along ``axis``.

    References:
      J. Duchi, S. Shalev-Shwartz, Y. Singer, T. Chandra, "Efficient projections onto the
      l1-ball for learning in high dimensions", ICML 2008. L. Condat, "Fast projection onto the
      simplex and the l1 ball", Math. Programming 158, 2016 (Michelot's algorithm, Jacobian).

    Example:
      >>> import jax.numpy as jnp
      >>> from jaxstab.ops.simplex import project_simplex
      >>> project_simplex(jnp.array([0.5, 1.0, -1.0]))
      Array([0.25, 0.75, 0.  ], dtype=float32)
      >>> project_simplex(jnp.array([[0.25, 0.25], [3.0, 0.0]]), axis=0)
      Array([[0.   , 0.625],
             [1.   , 0.375]], dtype=float32)
    """
    z = jnp.asarray(z)
    axis = _check_input(z, axis)
    if axis == z.ndim - 1:
        return _project_last_jit(z)
    return jnp.moveaxis(_project_last_jit(jnp.moveaxis(z, axis, -1)), -1, axis)
