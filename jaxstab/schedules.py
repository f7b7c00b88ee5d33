"""Entropy-coefficient and learning-rate schedules on top of optax, plus reduce-on-plateau.

- :func:`entropy_schedule`: ``"linear"``, ``"cosine"``, ``"exponential"`` from ``init_value``
  to ``end_value`` over ``decay_steps`` steps, constant afterwards (seed 001).
- :func:`lr_schedule`: ``"constant"``, ``"step"``, ``"exponential"``, ``"cosine"``,
  ``"linear"`` learning-rate schedules (seed 002).
- :func:`reduce_lr_on_plateau`: a documented wrapper of ``optax.contrib.reduce_on_plateau``.
- :func:`schedule_info`: progress / value / remaining steps of a schedule at a step.

A schedule is an optax ``Schedule``: a pure function ``step -> value`` that works on traced
integer steps, so it can be evaluated inside ``jit``/``scan`` from a carried step counter.
"""

from __future__ import annotations

import numbers
from typing import Callable, NamedTuple

import jax
import jax.numpy as jnp
import numpy as np
import optax

Array = jax.Array
Schedule = Callable[[jax.typing.ArrayLike], Array]

__all__ = [
    "ENTROPY_SCHEDULE_KINDS",
    "LR_SCHEDULE_KINDS",
    "ScheduleInfo",
    "entropy_schedule",
    "lr_schedule",
    "reduce_lr_on_plateau",
    "schedule_info",
]

ENTROPY_SCHEDULE_KINDS = ("linear", "cosine", "exponential")
LR_SCHEDULE_KINDS = ("constant", "step", "exponential", "cosine", "linear")


def _real(value, name: str, *, positive: bool = False, nonneg: bool = False) -> float:
    """Validate a concrete finite real number and return it as a Python float."""
    if isinstance(value, jax.core.Tracer):
        raise TypeError(f"{name} must be a concrete number when building a schedule "
                        f"(got a traced value); build schedules outside jit.")
    if isinstance(value, bool):
        raise TypeError(f"{name} must be a real number, got {value!r}.")
    try:
        arr = np.asarray(value)
    except Exception as e:  # pragma: no cover
        raise TypeError(f"{name} must be a real number, got {value!r}.") from e
    if arr.shape != () or arr.dtype.kind not in "iuf":
        raise TypeError(f"{name} must be a real scalar, got {value!r}.")
    v = float(arr)
    if not np.isfinite(v):
        raise ValueError(f"{name} must be finite, got {v!r}.")
    if positive and v <= 0:
        raise ValueError(f"{name} must be > 0, got {v!r}.")
    if nonneg and v < 0:
        raise ValueError(f"{name} must be >= 0, got {v!r}.")
    return v


def _real_or_traced(value, name: str, *, positive: bool = False, nonneg: bool = False):
    """Like :func:`_real` for concrete values; a traced value (a swept hyperparameter inside
    ``jit``/``vmap``) is passed through unvalidated, cast to a 0-d array."""
    if isinstance(value, jax.core.Tracer):
        if jnp.ndim(value) != 0:
            raise ValueError(f"{name} must be a scalar, got shape {jnp.shape(value)}.")
        return value
    return _real(value, name, positive=positive, nonneg=nonneg)


def _steps(value, name: str) -> int:
    if isinstance(value, bool) or not isinstance(value, numbers.Integral):
        raise TypeError(f"{name} must be a Python int, got {value!r}.")
    if value <= 0:
        raise ValueError(f"{name} must be a positive int, got {value!r}.")
    return int(value)


def _finalize(fn: Schedule, dtype, end_step: int | None = None, end_value: float | None = None
              ) -> Schedule:
    """Cast a schedule's output to ``dtype``; pin the value to ``end_value`` from ``end_step``."""

    def schedule(count):
        value = jnp.asarray(fn(count)).astype(dtype)
        if end_step is not None:
            value = jnp.where(jnp.asarray(count) >= end_step, jnp.asarray(end_value, dtype), value)
        return value

    return schedule


def _blend(weights: Callable[[jax.Array], tuple[jax.Array, jax.Array]], init, end,
           decay_steps: int) -> Schedule:
    """``w_init(p) * init + w_end(p) * end`` with ``p = min(t, T) / T``.

    Written as a weighted sum of the two endpoints rather than optax's ``end + (init - end) *
    f(p)``: the difference form cancels when the endpoints differ by many orders of magnitude
    (a schedule rising from 1e-30 to 1e30 returned 0.0 at step 0); the weighted sum returns
    ``init`` exactly at step 0 and stays within float rounding of the exact value, relative to
    the value itself. ``T - min(t, T)`` is formed in integers so ``1 - p`` has no cancellation
    either. (The end value from step ``T`` on is pinned by :func:`_finalize`.)
    """

    def schedule(count):
        c = jnp.clip(jnp.asarray(count), 0, decay_steps)
        p_end = c / decay_steps
        p_init = (decay_steps - c) / decay_steps
        w_init, w_end = weights(p_init, p_end)
        # exact at step 0 (XLA may divide by T as a multiplication by a rounded 1 / T)
        return jnp.where(c == 0, init, w_init * init + w_end * end)

    return schedule


def _linear(init, end, decay_steps: int) -> Schedule:
    # init + (end - init) * p, as (1 - p) * init + p * end
    return _blend(lambda q, p: (q, p), init, end, decay_steps)


def _cosine(init, end, decay_steps: int) -> Schedule:
    # end + (init - end) * 0.5 * (1 + cos(pi p)), as cos^2(pi p / 2) * init + sin^2(pi p / 2) * end
    # (optax.cosine_decay_schedule's alpha is a fraction of init_value and cannot express init 0)
    return _blend(lambda q, p: (jnp.sin(0.5 * jnp.pi * q) ** 2, jnp.sin(0.5 * jnp.pi * p) ** 2),
                  init, end, decay_steps)


def _exponential_to(init, end, decay_steps: int) -> Schedule:
    # init * (end / init) ** (t / T): decay_rate = end / init per decay_steps steps; optax's
    # end_value bounds it, and _finalize pins it to exactly end_value from step T on.
    if isinstance(init, float) and isinstance(end, float):
        return optax.exponential_decay(init_value=init, transition_steps=decay_steps,
                                       decay_rate=end / init, end_value=end)

    # traced init/end (optax needs a concrete decay_rate): the same formula written out.
    def schedule(count):
        p = jnp.clip(jnp.asarray(count) / decay_steps, 0.0, 1.0)
        return init * jnp.exp(p * jnp.log(end / init))

    return schedule


def entropy_schedule(kind: str, init_value: float, end_value: float, decay_steps: int, *,
                     dtype=jnp.float32) -> Schedule:
    """Entropy-coefficient schedule from ``init_value`` to ``end_value`` over ``decay_steps``.

    With ``p = min(t, T) / T`` (``T = decay_steps``)::

        linear:      init + (end - init) * p                     (optax.linear_schedule)
        cosine:      end + (init - end) * 0.5 * (1 + cos(pi p))  (optax.cosine_decay_schedule
                                                                  on init - end, plus end)
        exponential: init * (end / init) ** p                    (optax.exponential_decay)

    and exactly ``end_value`` for ``t >= T``. Note that ``optax.cosine_decay_schedule``'s
    ``alpha`` is a fraction of the initial value; here ``end_value`` is the final value itself.
    Increasing schedules (``end > init``) work as well. Linear and cosine are evaluated as
    weighted sums of the endpoints (``(1 - p) * init + p * end`` and
    ``cos^2(pi p / 2) * init + sin^2(pi p / 2) * end``), not optax's difference form, so they
    return ``init`` exactly at step 0 and keep float32 accuracy relative to the value even
    when the endpoints differ by many orders of magnitude (the difference form returned 0.0 at
    step 0 for a schedule rising from 1e-30 to 1e30).

    Args:
      kind: ``"linear"``, ``"cosine"`` or ``"exponential"``.
      init_value: value at step 0 (``> 0`` for exponential). May be a traced 0-d array (a
        swept hyperparameter under ``jit``/``vmap``); it is then not validated.
      end_value: value from step ``decay_steps`` on (``> 0`` for exponential); may be traced.
      decay_steps: ``T``, a positive Python int.
      dtype: dtype of the returned values.

    Returns:
      an optax ``Schedule``: ``step`` (int, may be traced) -> 0-d array of ``dtype``.

    Raises:
      ValueError: unknown ``kind`` (the message lists the valid kinds), ``decay_steps <= 0``,
        non-finite values, or non-positive values for ``"exponential"``.
      TypeError: non-numeric arguments.

    Example:
      >>> sched = entropy_schedule("cosine", 0.01, 0.001, 100)
      >>> [round(float(sched(t)), 6) for t in (0, 50, 100, 1000)]
      [0.01, 0.0055, 0.001, 0.001]
    """
    if kind not in ENTROPY_SCHEDULE_KINDS:
        raise ValueError(f"kind must be one of {ENTROPY_SCHEDULE_KINDS}, got {kind!r}.")
    t = _steps(decay_steps, "decay_steps")
    positive = kind == "exponential"
    init = _real_or_traced(init_value, "init_value", positive=positive)
    end = _real_or_traced(end_value, "end_value", positive=positive)
    if kind == "linear":
        fn = _linear(init, end, t)
    elif kind == "cosine":
        fn = _cosine(init, end, t)
    else:
        fn = _exponential_to(init, end, t)
    return _finalize(fn, dtype, t, end)


def lr_schedule(kind: str, init_value: float, *, decay_steps: int | None = None,
                end_value: float | None = None, decay_rate: float | None = None,
                step_size: int | None = None, dtype=jnp.float32) -> Schedule:
    """Learning-rate schedule (optax-backed).

    Kinds and their arguments (``t`` the step)::

        constant:    init                                          (no other argument)
        step:        max(init * decay_rate ** floor(t / step_size), end)   (end optional floor)
        exponential: max(init * decay_rate ** (t / step_size), end)  (step_size default 1;
                                                                     end optional floor)
        cosine:      end + (init - end) * 0.5 * (1 + cos(pi min(t, T) / T))   (end default 0)
        linear:      init + (end - init) * min(t, T) / T                      (end default 0)

    with ``T = decay_steps``; for ``decay_rate > 1`` the optional ``end_value`` of step /
    exponential is a ceiling instead of a floor (optax's convention).

    Args:
      kind: one of ``"constant"``, ``"step"``, ``"exponential"``, ``"cosine"``, ``"linear"``.
      init_value: learning rate at step 0 (``>= 0``); may be a traced 0-d array (swept).
      decay_steps: ``T`` for cosine and linear (positive int; required there).
      end_value: final value (cosine, linear) or bound (step, exponential); may be traced.
      decay_rate: multiplicative factor for step and exponential (``> 0``; required there).
      step_size: steps per factor ``decay_rate`` (required for step; default 1 for exponential).
      dtype: dtype of the returned values.

    Returns:
      an optax ``Schedule``: ``step -> 0-d array of dtype``.

    Raises:
      ValueError: unknown ``kind`` (lists the valid kinds), missing or out-of-range arguments
        (non-positive ``decay_steps`` / ``step_size`` / ``decay_rate``, negative values), or an
        argument that the kind does not use.
      TypeError: non-numeric arguments, or traced ones other than ``init_value`` /
        ``end_value``.

    Example:
      >>> sched = lr_schedule("step", 1e-3, decay_rate=0.9, step_size=100)
      >>> [round(float(sched(t)), 7) for t in (0, 99, 100, 250)]
      [0.001, 0.001, 0.0009, 0.00081]
    """
    if kind not in LR_SCHEDULE_KINDS:
        raise ValueError(f"kind must be one of {LR_SCHEDULE_KINDS}, got {kind!r}.")
    init = _real_or_traced(init_value, "init_value", nonneg=True)
    uses = {
        "constant": set(),
        "step": {"decay_rate", "step_size", "end_value"},
        "exponential": {"decay_rate", "step_size", "end_value"},
        "cosine": {"decay_steps", "end_value"},
        "linear": {"decay_steps", "end_value"},
    }[kind]
    given = {name for name, v in (("decay_steps", decay_steps), ("end_value", end_value),
                                  ("decay_rate", decay_rate), ("step_size", step_size))
             if v is not None}
    if given - uses:
        raise ValueError(f"lr_schedule kind {kind!r} does not use {sorted(given - uses)}; it "
                         f"takes {sorted(uses) or 'no other argument'}.")

    if kind == "constant":
        return _finalize(optax.constant_schedule(init), dtype)

    if kind in ("step", "exponential"):
        if decay_rate is None:
            raise ValueError(f"lr_schedule kind {kind!r} requires decay_rate.")
        rate = _real(decay_rate, "decay_rate", positive=True)
        if step_size is None:
            if kind == "step":
                raise ValueError("lr_schedule kind 'step' requires step_size.")
            step_size = 1
        size = _steps(step_size, "step_size")
        end = None if end_value is None else _real_or_traced(end_value, "end_value", nonneg=True)
        fn = optax.exponential_decay(init_value=init, transition_steps=size, decay_rate=rate,
                                     staircase=kind == "step", end_value=end)
        return _finalize(fn, dtype)

    if decay_steps is None:
        raise ValueError(f"lr_schedule kind {kind!r} requires decay_steps.")
    t = _steps(decay_steps, "decay_steps")
    end = 0.0 if end_value is None else _real_or_traced(end_value, "end_value", nonneg=True)
    if kind == "cosine":
        fn = _cosine(init, end, t)
    else:
        fn = optax.linear_schedule(init_value=init, end_value=end, transition_steps=t)
    return _finalize(fn, dtype, t, end)


def reduce_lr_on_plateau(*, factor: float = 0.5, patience: int = 10, rtol: float = 1e-4,
                         atol: float = 0.0, cooldown: int = 0, accumulation_size: int = 1,
                         min_scale: float = 0.0) -> optax.GradientTransformationExtraArgs:
    """Reduce-on-plateau: ``optax.contrib.reduce_on_plateau`` with validated arguments.

    The transformation multiplies the updates by a ``scale`` (starting at 1). Every
    ``accumulation_size`` calls it averages the ``value`` passed to ``update``; when that
    average has not improved on the best one (``avg < (1 - rtol) * best - atol``) for
    ``patience`` consecutive checks, ``scale *= factor`` (never below ``min_scale``), then it
    waits ``cooldown`` checks. Chain it *after* the optimizer so it scales the final updates,
    i.e. the learning rate, and pass the monitored loss as ``value``::

        tx = optax.chain(optax.adam(3e-4), reduce_lr_on_plateau(factor=0.5, patience=10))
        updates, opt_state = tx.update(grads, opt_state, params, value=loss)

    The current scale is ``opt_state[-1].scale`` (a ``ReduceLROnPlateauState``). Defaults
    follow the seed (halve the learning rate); optax's own default factor is 0.1.

    Args:
      factor: multiplicative reduction in ``(0, 1)``.
      patience: checks without improvement before reducing (int ``>= 1``).
      rtol, atol: relative / absolute improvement thresholds (``>= 0``, not both 0;
        ``rtol <= 1``).
      cooldown: checks to wait after a reduction (int ``>= 0``).
      accumulation_size: number of ``value``s averaged per check (int ``>= 1``).
      min_scale: lower bound of the scale (``>= 0``).

    Returns:
      ``optax.GradientTransformationExtraArgs`` (its ``update`` takes ``value=``).

    Raises:
      ValueError: out-of-range arguments.
      TypeError: non-integer counts.

    Reference: optax ``contrib.reduce_on_plateau``; PyTorch ``ReduceLROnPlateau``.
    """
    fac = _real(factor, "factor")
    if not 0.0 < fac < 1.0:
        raise ValueError(f"factor must be in (0, 1), got {fac!r}.")
    pat = _steps(patience, "patience")
    r = _real(rtol, "rtol", nonneg=True)
    a = _real(atol, "atol", nonneg=True)
    if r == 0.0 and a == 0.0:
        raise ValueError("at least one of rtol and atol must be > 0.")
    if r > 1.0:
        raise ValueError(f"rtol must be <= 1, got {r!r}.")
    if isinstance(cooldown, bool) or not isinstance(cooldown, numbers.Integral):
        raise TypeError(f"cooldown must be a Python int, got {cooldown!r}.")
    if cooldown < 0:
        raise ValueError(f"cooldown must be >= 0, got {cooldown!r}.")
    acc = _steps(accumulation_size, "accumulation_size")
    ms = _real(min_scale, "min_scale", nonneg=True)
    return optax.contrib.reduce_on_plateau(factor=fac, patience=pat, rtol=r, atol=a,
                                           cooldown=int(cooldown), accumulation_size=acc,
                                           min_scale=ms)


class ScheduleInfo(NamedTuple):
    """Where a schedule stands at a step.

    Attributes:
      progress: 0-d float32, ``clip(step / total_steps, 0, 1)``.
      value: the schedule's value at ``step`` (0-d).
      remaining: 0-d int32, ``max(total_steps - step, 0)``.
    """

    progress: Array
    value: Array
    remaining: Array


def schedule_info(schedule: Schedule, step, total_steps: int) -> ScheduleInfo:
    """Progress, current value and remaining steps of ``schedule`` at ``step`` (seed 001's
    ``get_info``).

    Args:
      schedule: any optax schedule (``step -> value``).
      step: current step (int; may be traced).
      total_steps: the schedule's horizon, e.g. its ``decay_steps`` (positive Python int).

    Returns:
      :class:`ScheduleInfo` of 0-d arrays.

    Raises:
      ValueError: if ``total_steps <= 0`` or a concrete ``step`` is negative.
      TypeError: if ``schedule`` is not callable.

    Example:
      >>> info = schedule_info(entropy_schedule("linear", 1.0, 0.0, 10), 5, 10)
      >>> float(info.progress), float(info.value), int(info.remaining)
      (0.5, 0.5, 5)
    """
    if not callable(schedule):
        raise TypeError(f"schedule must be callable, got {type(schedule).__name__}.")
    total = _steps(total_steps, "total_steps")
    if not isinstance(step, jax.core.Tracer):
        c = np.asarray(step)
        if c.shape != () or c.dtype.kind not in "iu":
            raise TypeError(f"step must be an integer scalar, got {step!r}.")
        if c < 0:
            raise ValueError(f"step must be >= 0, got {int(c)}.")
    s = jnp.asarray(step).astype(jnp.int32)
    progress = jnp.clip(s.astype(jnp.float32) / total, 0.0, 1.0).astype(jnp.float32)
    remaining = jnp.maximum(total - s, 0).astype(jnp.int32)
    return ScheduleInfo(progress=progress, value=jnp.asarray(schedule(s)), remaining=remaining)
