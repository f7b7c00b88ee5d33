"""Input-validation helpers shared by the ops, losses and stateful transforms."""

from __future__ import annotations

from typing import Any

import jax
import numpy as np


def concrete_value(x: Any) -> np.ndarray | None:
    """NumPy value of ``x`` if it is known at trace time (not a tracer), else None.

    Used to check values (signs, finiteness, ranges) of arguments eagerly and at trace time
    while leaving traced arguments alone, so the checks cost nothing inside ``jit``.
    """
    if isinstance(x, jax.core.Tracer):
        return None
    try:
        return np.asarray(x)
    except Exception:  # pragma: no cover - exotic array-likes
        return None


def check_range(name: str, value: Any, low: float | None = None, high: float | None = None, *,
                low_inclusive: bool = False, high_inclusive: bool = True) -> None:
    """Raise ``ValueError`` naming ``name`` unless every concrete entry of ``value`` is finite
    and inside the interval (``(low, high]`` by default; ``None`` = unbounded).

    Arrays (a vmapped sweep of values) are checked entry by entry; traced values are skipped.

    Raises:
      ValueError: a non-finite or out-of-range entry, with the offending value in the message.
    """
    v = concrete_value(value)
    if v is None:
        return
    if not np.issubdtype(v.dtype, np.number):
        raise ValueError(f"{name} must be a number, got {value!r}")
    v = v.astype(np.float64)
    lo = "[" if low_inclusive else "("
    hi = "]" if high_inclusive else ")"
    interval = (f"{lo}{'-inf' if low is None else low}, {'inf' if high is None else high}{hi}")
    bad = ~np.isfinite(v)
    if low is not None:
        bad |= (v < low) if low_inclusive else (v <= low)
    if high is not None:
        bad |= (v > high) if high_inclusive else (v >= high)
    if np.any(bad):
        shown = v.reshape(-1)[np.argmax(bad.reshape(-1))]
        raise ValueError(f"{name} must be finite and in {interval}, got {shown!r}")
