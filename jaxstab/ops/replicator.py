"""Stabilized discrete-time replicator dynamics in log space (seed 000, "Tier 2").

One step moves prototype weights ``w_prev`` on the simplex towards the prototypes whose fitness
beats the population average:

    a     = clip(f - <w, f>, -A, A)                        (clipped advantage)
    eta   = eta0 + eta1 * clip(nan_to_num(c), 0, c_max)    (crisis-heated, saturated step size)
    w_fl  = (1 - floor) * w + floor / M                    (uniform floor: log is finite)
    w_new = softmax(log w_fl + eta * a)

The unclipped rule ``w ∝ exp(eta * advantage)`` with unbounded advantage and crisis level is the
"exponential bomb" of seed 000; clipping bounds every step (``|log-ratio change| <= 2 eta A``)
and saturation bounds ``eta``. Near an interior rest point the discrete map is stable for
``eta < 2 / (||D|| max_i w_i*)`` (``D`` the fitness Jacobian; Hofbauer & Sigmund 1998).
"""

from __future__ import annotations

from typing import Any

import jax
import jax.numpy as jnp
import numpy as np

from jaxstab._validation import concrete_value as _concrete

__all__ = ["replicator_step"]



def _broadcasts_to(shape: tuple[int, ...], target: tuple[int, ...]) -> bool:
    if len(shape) > len(target):
        return False
    return all(a in (1, b) for a, b in zip(shape[::-1], target[::-1]))


def _scalar(name: str, value: Any, dtype: Any) -> jax.Array:
    arr = jnp.asarray(value)
    if arr.ndim != 0:
        raise ValueError(
            f"replicator_step: `{name}` must be a scalar (0-d), got shape {arr.shape}; "
            "batch hyperparameters with jax.vmap."
        )
    if not (jnp.issubdtype(arr.dtype, jnp.floating) or jnp.issubdtype(arr.dtype, jnp.integer)):
        raise TypeError(f"replicator_step: `{name}` must be a real number, got dtype {arr.dtype}.")
    return arr.astype(dtype)


def _sanitize_weights(w: jax.Array) -> jax.Array:
    """Rows of ``w [..., M]`` -> valid probability vectors (see replicator_step's policy)."""
    zero = jnp.zeros((), w.dtype)
    finite_row = jnp.all(jnp.isfinite(w), axis=-1, keepdims=True)
    w_pos = jnp.where(finite_row, jnp.maximum(w, zero), zero)  # NaN-free in every branch
    w_max = jnp.max(w_pos, axis=-1, keepdims=True)
    usable = finite_row & (w_max > 0)
    # Scale by the power of two just above the row maximum: exact, and the sum below lies in
    # [0.5, M) (no overflow). Dividing by the maximum itself is not safe: XLA rewrites x / b as
    # x * (1 / b) for a broadcast b, and 1 / finfo.max is subnormal, flushed to 0 on CPU.
    _, exponent = jnp.frexp(jnp.where(usable, w_max, jnp.ones((), w.dtype)))
    scaled = jnp.ldexp(w_pos, -exponent)
    normalized = scaled / jnp.sum(scaled, axis=-1, keepdims=True)
    uniform = jnp.full((), 1.0 / w.shape[-1], w.dtype)
    return jnp.where(usable, normalized, uniform)


def replicator_step(
    w_prev: jax.Array,
    fitness: jax.Array,
    crisis_level: jax.Array | float,
    *,
    eta0: jax.Array | float,
    eta1: jax.Array | float,
    advantage_clip: jax.Array | float = 10.0,
    crisis_max: jax.Array | float = 1.0,
    floor: jax.Array | float = 1e-6,
) -> jax.Array:
    """One clipped, crisis-saturated replicator step in log space.

    ``log w~ = log((1 - floor) w + floor / M) + eta(c) * clip(f - <w, f>, -A, A)``,
    ``eta(c) = eta0 + eta1 * clip(nan_to_num(c), 0, c_max)``, ``w_new = softmax(log w~)``.

    The result is on the simplex and finite for every input, finite or not. Sanitization,
    applied per row (a slice ``[..., :]``) before the formula:

    * ``w_prev``: a row with any NaN/+-inf entry, or with no positive entry, is replaced by the
      uniform distribution ``1/M``; otherwise negative entries are clipped to 0 and the row is
      renormalized to sum 1 (so unnormalized positive weights are accepted). The baseline
      ``<w, f>`` uses this sanitized ``w``; the log uses its floored mix, so exact zeros (as the
      simplex projection produces) are safe.
    * ``fitness``: NaN -> 0, and values are clipped to ``+-finfo.max / 4`` (+-inf included)
      so the baseline cannot overflow; huge or infinite fitness then saturates the advantage
      at ``+-A``.
    * ``crisis_level``: NaN -> 0, then clipped to ``[0, crisis_max]`` (+inf -> ``crisis_max``,
      -inf -> 0).
    * the step ``eta * a`` is passed through ``nan_to_num`` and clipped to ``+-finfo.max / 4``,
      so even a NaN or absurd ``eta`` cannot produce a non-finite logit (a NaN step counts as 0).

    Args:
      w_prev: previous weights ``[..., M]``, floating dtype.
      fitness: prototype fitness ``[..., M]``; batch dims broadcast against ``w_prev``'s.
      crisis_level: crisis level, scalar or ``[...]`` broadcastable to the batch shape (the
        shape without ``M``). Any real dtype (cast to the compute dtype).
      eta0: base step size (0-d; traced values are fine).
      eta1: crisis sensitivity of the step size (0-d).
      advantage_clip: ``A > 0``, bound on ``|f - <w, f>|`` (default 10, as in seed 000).
      crisis_max: ``c_max >= 0``, saturation level of the crisis signal (default 1).
      floor: uniform floor mixed into ``w_prev`` before the log, ``0 <= floor < 1`` (default
        1e-6). With ``floor = 0`` zero weights stay exactly zero (absorbing) and the gradient
        with respect to them is not finite.

    Returns:
      ``w_new [..., M]`` (the broadcast batch shape), dtype ``result_type(w_prev, fitness)``
      (half precision is computed in float32 and cast back); rows sum to 1, entries >= 0.

    Raises:
      TypeError: non-real dtypes, or a non-floating result dtype.
      ValueError: ``w_prev``/``fitness`` are scalars, have different ``M``, or batch shapes that
        do not broadcast; ``crisis_level`` does not broadcast to the batch shape; a
        hyperparameter is not 0-d; or (when known at trace time) ``advantage_clip < 0``,
        ``crisis_max < 0``, ``floor`` outside ``[0, 1)``, or non-finite ``eta0``/``eta1``.

    References:
      J. Hofbauer, K. Sigmund, "Evolutionary Games and Population Dynamics", CUP 1998.
      Seed 000 (replicator advantage clipping and crisis saturation).

    Example:
      >>> import jax.numpy as jnp
      >>> from jaxstab.ops.replicator import replicator_step
      >>> w = replicator_step(jnp.array([0.5, 0.5]), jnp.array([1.0, 0.0]), 0.0,
      ...                     eta0=1.0, eta1=0.0, floor=0.0)
      >>> w  # softmax(log 0.5 + [0.5, -0.5])
      Array([0.7310586 , 0.26894143], dtype=float32)
    """
    w_prev = jnp.asarray(w_prev)
    fitness = jnp.asarray(fitness)
    crisis_level = jnp.asarray(crisis_level)
    for name, arr in (("w_prev", w_prev), ("fitness", fitness), ("crisis_level", crisis_level)):
        if not (jnp.issubdtype(arr.dtype, jnp.floating) or jnp.issubdtype(arr.dtype, jnp.integer)
                or arr.dtype == jnp.bool_):
            raise TypeError(f"replicator_step: `{name}` must be real, got dtype {arr.dtype}.")
    if w_prev.ndim == 0 or fitness.ndim == 0:
        raise ValueError(
            "replicator_step: `w_prev` and `fitness` must have a last axis M, got shapes "
            f"{w_prev.shape} and {fitness.shape}."
        )
    m = w_prev.shape[-1]
    if fitness.shape[-1] != m or m == 0:
        raise ValueError(
            f"replicator_step: `w_prev` {w_prev.shape} and `fitness` {fitness.shape} must have the "
            "same non-zero last dimension M."
        )
    try:
        batch = jnp.broadcast_shapes(w_prev.shape[:-1], fitness.shape[:-1])
    except ValueError as err:
        raise ValueError(
            f"replicator_step: batch shapes of `w_prev` {w_prev.shape} and `fitness` "
            f"{fitness.shape} do not broadcast."
        ) from err
    if not _broadcasts_to(crisis_level.shape, batch):
        raise ValueError(
            f"replicator_step: `crisis_level` of shape {crisis_level.shape} must broadcast to the "
            f"batch shape {batch} (the shape of `w_prev`/`fitness` without M)."
        )

    out_dtype = jnp.result_type(w_prev.dtype, fitness.dtype)
    if not jnp.issubdtype(out_dtype, jnp.floating):
        raise TypeError(
            "replicator_step: `w_prev`/`fitness` must give a floating result dtype, got "
            f"{out_dtype}; cast w_prev to a float dtype."
        )
    dtype = jnp.float32 if jnp.finfo(out_dtype).bits < 32 else out_dtype

    for name, value, ok, rule in (
        ("advantage_clip", advantage_clip, lambda v: v >= 0, ">= 0"),
        ("crisis_max", crisis_max, lambda v: v >= 0, ">= 0"),
        ("floor", floor, lambda v: (v >= 0) & (v < 1), "in [0, 1)"),
        ("eta0", eta0, np.isfinite, "finite"),
        ("eta1", eta1, np.isfinite, "finite"),
    ):
        v = _concrete(value)
        if v is not None and v.ndim == 0 and v.dtype.kind in "fiub" and not bool(ok(v)):
            raise ValueError(f"replicator_step: `{name}` must be {rule}, got {v}.")
    eta0_ = _scalar("eta0", eta0, dtype)
    eta1_ = _scalar("eta1", eta1, dtype)
    clip_ = _scalar("advantage_clip", advantage_clip, dtype)
    cmax_ = _scalar("crisis_max", crisis_max, dtype)
    floor_ = _scalar("floor", floor, dtype)

    big = jnp.asarray(jnp.finfo(dtype).max / 4, dtype)
    w = _sanitize_weights(jnp.broadcast_to(w_prev.astype(dtype), batch + (m,)))
    f = jnp.broadcast_to(fitness.astype(dtype), batch + (m,))
    f = jnp.clip(jnp.nan_to_num(f, nan=0.0, posinf=big, neginf=-big), -big, big)

    baseline = jnp.sum(w * f, axis=-1, keepdims=True)  # |baseline| <= big: a convex combination
    advantage = jnp.clip(f - baseline, -clip_, clip_)  # |f - baseline| <= 2 big: finite

    c = jnp.broadcast_to(crisis_level.astype(dtype), batch)[..., None]
    c = jnp.clip(jnp.nan_to_num(c, nan=0.0), jnp.zeros((), dtype), cmax_)
    eta = eta0_ + eta1_ * c  # [..., 1]

    step = jnp.clip(jnp.nan_to_num(eta * advantage, nan=0.0, posinf=big, neginf=-big), -big, big)
    log_w = jnp.log((1 - floor_) * w + floor_ / m)
    return jax.nn.softmax(log_w + step, axis=-1).astype(out_dtype)
