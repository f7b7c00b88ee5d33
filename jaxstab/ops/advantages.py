"""Advantage normalization for policy-gradient losses (seed 004, fix #3).

Four modes, all over the elements of the array passed in (call it per minibatch, as SB3 does):

* ``"none"``:   ``a`` unchanged (the original PPO paper).
* ``"global"``: ``(a - mean(a)) / (std(a) + eps)``.
* ``"group"``:  the same per group id, ``(a - mean_g) / (std_g + eps)`` with segment sums
  (jit-able; the number of groups is static). A group of one element maps to 0.
* ``"robust"``: ``(a - median(a)) / s`` with ``s = IQR(a) / 1.349`` (``IQR / 1.349``
  estimates the standard deviation of a Gaussian from its quartiles and ignores outliers) when
  ``s > eps``; otherwise ``s = std(a) + eps``. The fallback matters: when more than half of the
  advantages are equal (sparse rewards) the IQR is exactly 0, and seed 004's
  ``clamp(iqr, min=1e-8)`` would blow the few non-zero advantages up by ``1e8``; with the
  fallback they are scaled as in ``"global"`` mode. No outlier-sensitive statistic enters while
  the IQR is positive (a floor such as ``0.1 * std`` would let one large outlier set the scale
  again), so a positive IQR is trusted however small it is.

Standard deviations are population ones (``ddof = 0``, like ``jnp.std``; SB3 uses PyTorch's
unbiased ``std``, a factor ``sqrt(n / (n - 1))`` apart).
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np

from jaxstab._validation import concrete_value as _concrete

__all__ = ["normalize_advantages", "ADVANTAGE_MODES"]

ADVANTAGE_MODES = ("none", "global", "group", "robust")

# IQR of a standard normal: 2 * Phi^{-1}(0.75) = 1.3489795...
_IQR_TO_STD = 1.3489795003921634


def _group_normalize(a: jax.Array, groups: jax.Array, num_groups: int, eps: jax.Array) -> jax.Array:
    flat = a.reshape(-1)
    ids = groups.reshape(-1)
    in_range = (ids >= 0) & (ids < num_groups)
    zero = jnp.zeros((), a.dtype)
    seg = lambda x: jax.ops.segment_sum(x, ids, num_segments=num_groups)  # drops out-of-range ids
    count = seg(jnp.ones_like(flat))  # [G]
    safe_count = jnp.maximum(count, 1)
    safe_ids = jnp.where(in_range, ids, 0)
    # Shift each group by its maximum first (exact for a constant group, which then maps to 0
    # exactly instead of to rounding noise / eps), then a two-pass mean and variance.
    shift = jax.ops.segment_max(jnp.where(in_range, flat, -jnp.inf), ids, num_segments=num_groups)
    shift = jnp.where(count > 0, shift, zero)
    shifted = flat - shift[safe_ids]
    mean = seg(jnp.where(in_range, shifted, zero)) / safe_count  # [G]
    centered = shifted - mean[safe_ids]
    var = seg(jnp.where(in_range, centered, zero) ** 2) / safe_count
    std = jnp.sqrt(var)
    out = centered / (std[safe_ids] + eps)
    return jnp.where(in_range, out, zero).reshape(a.shape)


def normalize_advantages(
    adv: jax.Array,
    mode: str = "global",
    *,
    groups: jax.Array | None = None,
    num_groups: int | None = None,
    eps: jax.Array | float = 1e-8,
) -> jax.Array:
    """Normalize advantages: ``"none"``, ``"global"``, ``"group"`` or ``"robust"``.

    * global: ``(a - mean) / (std + eps)`` over all elements;
    * group:  ``(a_i - mean_{g(i)}) / (std_{g(i)} + eps)`` with ``g = groups``;
    * robust: ``(a - median) / s``, ``s = IQR / 1.349`` if that exceeds ``eps``, else
      ``std + eps`` (quartiles by linear interpolation, as ``numpy.quantile``); the fallback
      keeps a zero IQR (sparse advantages) from amplifying the non-zero ones by ``1 / eps``
      (module docstring).

    Constant inputs give zeros in every mode except ``"none"`` (no NaN); so does a group with a
    single element. All modes are jit-able (``mode`` and ``num_groups`` are static).

    Args:
      adv: advantages, any shape ``[...]``, floating dtype.
      mode: one of ``"none"``, ``"global"``, ``"group"``, ``"robust"``.
      groups: ``"group"`` mode only: int array, same shape as ``adv``, ids in
        ``[0, num_groups)``. Elements with an id outside that range are returned as 0 (they are
        excluded from every group's statistics); when ``groups`` is concrete (not traced) such
        ids raise instead.
      num_groups: ``"group"`` mode only: static Python int >= 1, the number of group ids.
      eps: added to the standard deviation (global, group, robust fallback) and the threshold
        below which the robust mode ignores the IQR; scalar, may be traced.

    Returns:
      array of the shape and dtype of ``adv``.

    Raises:
      ValueError: unknown ``mode`` (the message lists the valid ones); ``"group"`` mode without
        ``groups`` or ``num_groups``, with ``groups`` of another shape, ``num_groups < 1`` or
        concrete ids out of range; ``groups``/``num_groups`` given for another mode; non-scalar
        ``eps``; empty ``adv`` (except mode ``"none"``).
      TypeError: ``adv`` is not floating, ``groups`` is not an integer array, or
        ``num_groups`` is not a Python int.

    References:
      Seed 004 (variants A, B, C); SB3 ``PPO.train`` (global, per minibatch).

    Example:
      >>> import jax.numpy as jnp
      >>> from jaxstab.ops.advantages import normalize_advantages
      >>> normalize_advantages(jnp.array([1.0, 3.0]))  # mean 2, std 1
      Array([-1.,  1.], dtype=float32)
      >>> normalize_advantages(jnp.array([1.0, 3.0, 5.0, 10.0]), "group",
      ...                      groups=jnp.array([0, 0, 1, 1]), num_groups=2)
      Array([-1.,  1., -1.,  1.], dtype=float32)
    """
    if mode not in ADVANTAGE_MODES:
        raise ValueError(
            f"normalize_advantages: unknown `mode`={mode!r}; valid modes are {ADVANTAGE_MODES}."
        )
    adv = jnp.asarray(adv)
    if not jnp.issubdtype(adv.dtype, jnp.floating):
        raise TypeError(f"normalize_advantages: `adv` must be floating, got dtype {adv.dtype}.")
    if mode != "group" and (groups is not None or num_groups is not None):
        raise ValueError(
            f"normalize_advantages: `groups`/`num_groups` are only used with mode='group', "
            f"got mode={mode!r}."
        )
    if mode == "none":
        return adv
    if adv.size == 0:
        raise ValueError(f"normalize_advantages: `adv` is empty (shape {adv.shape}).")
    eps_ = jnp.asarray(eps)
    if eps_.ndim != 0:
        raise ValueError(f"normalize_advantages: `eps` must be a scalar, got shape {eps_.shape}.")
    if mode == "group":
        if groups is None or num_groups is None:
            raise ValueError(
                "normalize_advantages: mode='group' needs `groups` (int array shaped like "
                "`adv`) and `num_groups` (static int), got "
                f"groups={'None' if groups is None else 'array'}, num_groups={num_groups!r}."
            )
        if not isinstance(num_groups, (int, np.integer)) or isinstance(num_groups, bool):
            raise TypeError(
                "normalize_advantages: `num_groups` must be a Python int, got "
                f"{type(num_groups).__name__}."
            )
        num_groups = int(num_groups)
        if num_groups < 1:
            raise ValueError(f"normalize_advantages: `num_groups` must be >= 1, got {num_groups}.")
        groups_arr = jnp.asarray(groups)
        if not jnp.issubdtype(groups_arr.dtype, jnp.integer):
            raise TypeError(
                "normalize_advantages: `groups` must be an integer array, got dtype "
                f"{groups_arr.dtype}."
            )
        if groups_arr.shape != adv.shape:
            raise ValueError(
                f"normalize_advantages: `groups` shape {groups_arr.shape} must equal `adv` shape "
                f"{adv.shape}."
            )
        concrete = _concrete(groups)
        if concrete is not None and concrete.size and (
            concrete.min() < 0 or concrete.max() >= num_groups
        ):
            raise ValueError(
                f"normalize_advantages: `groups` ids must lie in [0, {num_groups}), got range "
                f"[{concrete.min()}, {concrete.max()}]."
            )
    else:
        groups_arr = None

    out_dtype = adv.dtype
    if jnp.finfo(out_dtype).bits < 32:  # half precision: compute in float32, cast back
        adv = adv.astype(jnp.float32)
    eps_ = eps_.astype(adv.dtype)
    return _normalize(adv, mode, groups_arr, num_groups, eps_).astype(out_dtype)


def _normalize(
    adv: jax.Array, mode: str, groups: jax.Array | None, num_groups: int | None, eps_: jax.Array
) -> jax.Array:
    """The normalization itself, on validated inputs (float32 or wider)."""
    if mode == "global":
        shifted = adv - jnp.max(adv)  # exact for constant input: zeros, not rounding noise / eps
        centered = shifted - jnp.mean(shifted)
        return centered / (jnp.sqrt(jnp.mean(centered**2)) + eps_)

    if mode == "robust":
        q25, q50, q75 = jnp.quantile(
            adv.reshape(-1), jnp.asarray([0.25, 0.5, 0.75], adv.dtype), method="linear"
        )
        iqr_scale = (q75 - q25) / _IQR_TO_STD
        scale = jnp.where(iqr_scale > eps_, iqr_scale, jnp.std(adv) + eps_)
        return (adv - q50) / scale

    # mode == "group" (validated by the caller)
    return _group_normalize(adv, groups, num_groups, eps_)
