"""Platform guards applied before JAX initializes its backends.

jax 0.10.2 on small CPU machines (2 cores) can deadlock while running a vmapped multi-seed
training program: the program compiles, then every thread idles forever. Turning off XLA's
concurrency-optimized CPU scheduler makes the same program finish (see DESIGN.md, "Platform
note"). jaxstab therefore adds

    --xla_cpu_enable_concurrency_optimized_scheduler=false

to ``XLA_FLAGS`` when ``jaxstab`` is imported, unless

* the user already set that flag in ``XLA_FLAGS`` (any value wins: it is yours), or
* ``JAXSTAB_CPU_SCHEDULER_WORKAROUND=0`` is set in the environment.

XLA reads ``XLA_FLAGS`` once, when the first backend is created. Import ``jaxstab`` (or call
:func:`apply_cpu_workarounds`) before running any JAX computation; if a backend already exists
the call warns and changes nothing it cannot change. The flag only affects the CPU backend.
"""

from __future__ import annotations

import os
import warnings

CPU_SCHEDULER_FLAG = "--xla_cpu_enable_concurrency_optimized_scheduler"
OPT_OUT_ENV = "JAXSTAB_CPU_SCHEDULER_WORKAROUND"


def _scheduler_flag_settings(xla_flags: str) -> list[str]:
    """The raw values given to :data:`CPU_SCHEDULER_FLAG` in ``xla_flags``, in order (``"true"``
    for the bare flag); a flag whose name merely starts the same is another flag."""
    out = []
    for token in xla_flags.split():
        name, eq, raw = token.partition("=")
        if name == CPU_SCHEDULER_FLAG:
            out.append(raw if eq else "true")
    return out


def scheduler_flag_value(xla_flags: str) -> bool | None:
    """The value ``xla_flags`` (an ``XLA_FLAGS`` string) gives XLA's concurrency-optimized CPU
    scheduler: False when it is switched off (``=false`` or ``=0``, jaxstab's guard), True when
    switched on (``=true``, ``=1`` or the bare flag), None when the flag is absent (XLA's default,
    on). The last occurrence wins, as in XLA's own parsing.

    Raises:
      ValueError: the flag is given a value that is not a boolean.
    """
    value = None
    for raw in _scheduler_flag_settings(xla_flags):
        raw = raw.strip().lower()
        if raw not in ("true", "false", "1", "0"):
            raise ValueError(f"XLA_FLAGS: {CPU_SCHEDULER_FLAG} has a non-boolean value {raw!r}")
        value = raw in ("true", "1")
    return value


def _backend_already_initialized() -> bool:
    """Best-effort check whether JAX has already created its backends."""
    import sys

    if "jax" not in sys.modules:
        return False
    try:  # private API; absence just means we cannot tell.
        from jax._src import xla_bridge  # type: ignore

        return bool(getattr(xla_bridge, "_backends", {}))
    except Exception:  # pragma: no cover - depends on JAX internals
        return False


def apply_cpu_workarounds(environ: "os._Environ[str] | dict[str, str] | None" = None) -> bool:
    """Add the CPU-scheduler workaround to ``XLA_FLAGS`` if the user has not decided otherwise.

    Args:
      environ: mapping to modify (defaults to ``os.environ``); a plain dict is accepted so the
        decision logic can be tested without touching the process environment.

    Returns:
      True if the flag was added by this call, False if it was already present, opted out,
      or the backend was already initialized.
    """
    env = os.environ if environ is None else environ
    if env.get(OPT_OUT_ENV, "1").strip().lower() in ("0", "false", "no", "off"):
        return False
    flags = env.get("XLA_FLAGS", "")
    # the user's own setting of the flag (any value, even one XLA will reject) wins
    if _scheduler_flag_settings(flags):
        return False
    if environ is None and _backend_already_initialized():
        warnings.warn(
            "jaxstab: JAX backends were initialized before jaxstab was imported, so the CPU "
            f"scheduler workaround ({CPU_SCHEDULER_FLAG}=false) cannot take effect. Import jaxstab "
            "first or set XLA_FLAGS yourself if vmapped multi-seed runs hang on the CPU.",
            RuntimeWarning,
            stacklevel=3,
        )
        return False
    env["XLA_FLAGS"] = (flags + " " if flags else "") + f"{CPU_SCHEDULER_FLAG}=false"
    return True
