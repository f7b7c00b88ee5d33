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
