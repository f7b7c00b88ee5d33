"""Training loops compiled end to end with ``lax.scan``, and the chunked driver.

Submodules: :mod:`jaxstab.training.ppo` and :mod:`jaxstab.training.sac` (``make_train``,
``make_runner``), :mod:`jaxstab.training.loop` (``Runner``, ``run``, ``finalize``: chunk-by-chunk
training with progress, checkpoints and resume), :mod:`jaxstab.training.rollback`.

For convenience ``jaxstab.training.run``, ``Runner``, ``finalize``, ``scan_chunks``,
``broadcast_hparams`` and ``map_seeds`` re-export :mod:`jaxstab.training.loop`'s; they are
resolved lazily, so importing a light submodule (e.g. ``jaxstab.training.rollback``) does not
import the agents.
"""

from __future__ import annotations

from typing import Any

_LOOP_NAMES = ("Runner", "run", "finalize", "scan_chunks", "broadcast_hparams", "map_seeds")

__all__ = list(_LOOP_NAMES)


def __getattr__(name: str) -> Any:
    if name in _LOOP_NAMES:
        from jaxstab.training import loop

        return getattr(loop, name)
    raise AttributeError(f"module 'jaxstab.training' has no attribute {name!r}")
