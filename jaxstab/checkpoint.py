"""Disk checkpoints on orbax-checkpoint: atomic saves, keep-N latest, keep-best, safe restore.

In-graph rollback (:mod:`jaxstab.training.rollback`) protects a run from bad *updates*; disk
checkpoints protect it from a *crash*: a run killed at any moment resumes from its last complete
checkpoint.

How a checkpoint is laid out. Each step is one orbax step directory ``<directory>/<step>`` with
two items written by a single orbax save:

* ``state``: the pytree's leaves, flattened in ``jax.tree_util`` order and stored as
  ``{"00000": leaf_0, "00001": leaf_1, ...}`` (typed PRNG keys as their ``key_data``), so any
  pytree (dicts, NamedTuple states, flax ``struct`` dataclasses, optax states) round-trips as
  long as the caller supplies a target of the same structure;
* ``meta`` (JSON): the step, the user's metadata (config, seed...), the leaf paths, shapes and
  dtypes, the PRNG key implementations and a SHA-256 of every leaf's bytes.

Atomicity. orbax writes a step into ``<step>.orbax-checkpoint-tmp-*`` and renames it to
``<step>`` only after every file is written; unfinished temporary directories are never listed
as steps and are removed when a :class:`Checkpointer` opens the directory. A process killed
mid-save therefore leaves the previous steps as the latest complete ones (tested by SIGKILL-ing
a training process, ``tests/test_checkpoint.py``). This covers process crashes; surviving power
loss additionally depends on the file system's rename/fsync guarantees.

Retention. The ``max_to_keep`` most recent steps are kept, plus the ``keep_best`` best steps by
``metrics[best_metric]`` (``best_mode`` ``"max"`` or ``"min"``; a NaN or missing metric ranks
worst), via orbax's ``AnyPreservationPolicy(LatestN, BestN)``.

Restore. :meth:`Checkpointer.restore` reads the newest step (or a given one) into the structure
of a target pytree (arrays or ``jax.ShapeDtypeStruct``, e.g. from ``jax.eval_shape``). A step
that cannot be read (missing or truncated files, unreadable metadata, a leaf whose SHA-256 does
not match) raises :class:`CorruptCheckpointError` when asked for explicitly; when restoring the
latest step it is reported with a :class:`CheckpointFallbackWarning`, moved aside to
``<directory>/corrupt-<step>-<time>`` (so that training can save that step number again) and
the previous step is tried. orbax reads every step's metrics file when a directory is opened,
so a step with an unreadable metrics or step-metadata JSON file is moved aside (with the same
warning) already when :class:`Checkpointer` is constructed. A target whose structure does not
match the checkpoint is a caller error: :class:`ValueError`, no fallback.

Example:
  >>> import tempfile
  >>> state = {"w": jnp.ones(3), "key": jax.random.key(0)}
  >>> with Checkpointer(tempfile.mkdtemp(), max_to_keep=2) as ckpt:
  ...     _ = ckpt.save(10, state, metrics={"reward": 1.0}, metadata={"lr": 3e-4})
  ...     restored = ckpt.restore(state)
  >>> restored.step, restored.metadata["lr"]
  (10, 0.0003)

Reference: DESIGN.md, "Checkpoint and rollback"; orbax-checkpoint ``CheckpointManager``.
"""

from __future__ import annotations

import dataclasses
import datetime
import hashlib
import json
import math
import os
import shutil
import warnings
from typing import Any, Mapping, NamedTuple

import jax
import jax.numpy as jnp
import numpy as np

__all__ = [
    "Checkpointer",
    "RestoredCheckpoint",
    "CorruptCheckpointError",
    "CheckpointFallbackWarning",
    "save_pytree",
    "restore_pytree",
    "pytree_to_arrays",
    "arrays_to_pytree",
]

PyTree = Any
_FORMAT = "jaxstab-pytree-v1"
_STATE = "state"
_META = "meta"


class CorruptCheckpointError(ValueError):
    """A checkpoint on disk is incomplete, truncated or fails its integrity check."""


class CheckpointFallbackWarning(UserWarning):
    """The newest checkpoint was unreadable and an older one was restored instead."""


class RestoredCheckpoint(NamedTuple):
    """What :meth:`Checkpointer.restore` returns.

    Attributes:
      step: int, the step that was restored.
      state: the pytree, with the target's structure and the saved dtypes: ``jax.Array``
        leaves (typed PRNG keys re-wrapped with their saved implementation), NumPy arrays
        where the target leaf is a NumPy array (see :func:`arrays_to_pytree`).
      metadata: dict, the JSON metadata passed to ``save``.
      metrics: dict or None, the metrics passed to ``save``.
    """

    step: int
    state: PyTree
    metadata: dict
    metrics: dict | None


# --------------------------------------------------------------------------- pytree encoding
def _is_key(x: Any) -> bool:
    return hasattr(x, "dtype") and jnp.issubdtype(x.dtype, jax.dtypes.prng_key)


def _dtype_name(x: Any) -> str:
    return str(x.dtype)


def _leaf_digest(arr: np.ndarray) -> str:
    return hashlib.sha256(np.ascontiguousarray(arr).tobytes()).hexdigest()


def _jsonable(obj: Any) -> Any:
    """Convert dataclasses, NamedTuples, numpy scalars/arrays to JSON-able Python values."""
    if dataclasses.is_dataclass(obj) and not isinstance(obj, type):
        return {f.name: _jsonable(getattr(obj, f.name)) for f in dataclasses.fields(obj)}
    if isinstance(obj, tuple) and hasattr(obj, "_asdict"):
        return {k: _jsonable(v) for k, v in obj._asdict().items()}
    if isinstance(obj, Mapping):
        return {str(k): _jsonable(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [_jsonable(v) for v in obj]
    if _is_key(obj):
        return np.asarray(jax.random.key_data(obj)).tolist()
    if isinstance(obj, (np.ndarray, np.generic, jax.Array)):
        return np.asarray(obj).tolist()
    if isinstance(obj, float) and not math.isfinite(obj):
        return str(obj)  # JSON has no inf/nan
    if obj is None or isinstance(obj, (bool, int, float, str)):
        return obj
    raise TypeError(f"metadata value of type {type(obj).__name__} is not JSON serializable")


def pytree_to_arrays(tree: PyTree) -> tuple[dict[str, np.ndarray], dict]:
    """Flatten a pytree into host arrays plus a JSON-able description.

    Typed PRNG keys become their ``key_data`` (uint32) with the implementation name recorded.

    Args:
      tree: any pytree of arrays (``jax.Array``, ``np.ndarray``, Python/NumPy scalars).

    Returns:
      ``(arrays, spec)``: ``arrays`` maps ``"00000"...`` to ``np.ndarray`` leaves in flatten
      order (zero-size leaves are left out: the spec alone recreates them); ``spec`` holds ``paths`` (``jax.tree_util.keystr`` of each leaf), ``shapes``,
      ``dtypes`` (the original dtype names, ``key<impl>`` for keys), ``key_impls`` (impl name
      or None per leaf) and ``sha256`` per stored array.

    Raises:
      TypeError: if a leaf is not an array or scalar.
    """
    with_path, _ = jax.tree_util.tree_flatten_with_path(tree)
    arrays, paths, shapes, dtypes, impls, digests = {}, [], [], [], [], []
    for i, (path, leaf) in enumerate(with_path):
        name = f"{i:05d}"
        if _is_key(leaf):
            impl = str(jax.random.key_impl(leaf))
            arr = np.asarray(jax.random.key_data(leaf))
            dtypes.append(_dtype_name(leaf))
            shapes.append(list(leaf.shape))
        else:
            if not isinstance(leaf, (jax.Array, np.ndarray, np.generic, int, float, bool, complex)):
                raise TypeError(f"pytree leaf {jax.tree_util.keystr(path)} has unsupported type "
                                f"{type(leaf).__name__}")
            impl = None
            arr = np.asarray(leaf)
            dtypes.append(str(arr.dtype))
            shapes.append(list(arr.shape))
        if arr.size or impl is not None:
            # zero-size leaves (e.g. an empty policy state) are described by the spec alone:
            # orbax refuses to write them, and they carry no data to restore.
            arrays[name] = arr
        paths.append(jax.tree_util.keystr(path))
        impls.append(impl)
        digests.append(_leaf_digest(arr))
    spec = {"format": _FORMAT, "paths": paths, "shapes": shapes, "dtypes": dtypes,
            "key_impls": impls, "sha256": digests}
    return arrays, spec


def _target_signature(target: PyTree) -> tuple[Any, list[tuple[str, tuple, str, bool]]]:
    with_path, treedef = jax.tree_util.tree_flatten_with_path(target)
    sig = []
    for path, leaf in with_path:
        if not hasattr(leaf, "shape") or not hasattr(leaf, "dtype"):
            leaf = np.asarray(leaf)
        sig.append((jax.tree_util.keystr(path), tuple(leaf.shape), str(leaf.dtype),
                    _is_key(leaf)))
    return treedef, sig


def _check_target(spec: dict, target: PyTree, where: str) -> Any:
    """Validate target vs stored spec; return the treedef. ValueError on caller mismatch."""
    treedef, sig = _target_signature(target)
    paths = spec["paths"]
    if len(sig) != len(paths):
        raise ValueError(
            f"target has {len(sig)} leaves but the checkpoint {where} has {len(paths)}: "
            f"target paths {[s[0] for s in sig][:8]}..., checkpoint paths {paths[:8]}...")
    for (tpath, tshape, tdtype, _), cpath, cshape, cdtype in zip(
            sig, paths, spec["shapes"], spec["dtypes"]):
        if tpath != cpath or tshape != tuple(cshape) or tdtype != cdtype:
            raise ValueError(
                f"target leaf {tpath} (shape {tshape}, dtype {tdtype}) does not match the "
                f"checkpoint {where} leaf {cpath} (shape {tuple(cshape)}, dtype {cdtype})")
    return treedef


def arrays_to_pytree(arrays: Mapping[str, Any], spec: dict, target: PyTree, *,
                     verify: bool = True, where: str = "") -> PyTree:
    """Inverse of :func:`pytree_to_arrays` into the structure of ``target``.

    Args:
      arrays: mapping ``"00000"...`` -> array, as produced by :func:`pytree_to_arrays`.
      spec: the description returned alongside.
      target: pytree (arrays or ``jax.ShapeDtypeStruct``) with the saved structure.
      verify: check each array's SHA-256 against ``spec``.
      where: text naming the checkpoint in error messages.

    Returns:
      The pytree: ``jax.Array`` leaves where the target leaf is a JAX array or
      ``jax.ShapeDtypeStruct`` (keys re-wrapped), ``np.ndarray`` where it is a NumPy array or
      Python scalar, or where JAX cannot hold the saved dtype (float64 with x64 off).

    Raises:
      ValueError: if ``target`` does not match the saved structure, shapes or dtypes.
      CorruptCheckpointError: if an array is missing, has the wrong shape/dtype or fails the
        SHA-256 check.
    """
    treedef = _check_target(spec, target, where)
    target_leaves = jax.tree_util.tree_leaves(target)
    leaves = []
    for i, (path, shape, dtype, impl) in enumerate(
            zip(spec["paths"], spec["shapes"], spec["dtypes"], spec["key_impls"])):
        name = f"{i:05d}"
        if name not in arrays and impl is None and 0 in shape:
            arrays = {**arrays, name: np.zeros(tuple(shape), jnp.dtype(dtype))}
        if name not in arrays:
            raise CorruptCheckpointError(f"checkpoint {where}: array for leaf {path} is missing")
        arr = np.asarray(arrays[name])
        if verify and _leaf_digest(arr) != spec["sha256"][i]:
            raise CorruptCheckpointError(
                f"checkpoint {where}: leaf {path} fails its SHA-256 integrity check (the file "
                "was modified or truncated after it was written)")
        if impl is not None:
            leaves.append(jax.random.wrap_key_data(jnp.asarray(arr), impl=impl))
        else:
            if list(arr.shape) != list(shape) or str(arr.dtype) != dtype:
                raise CorruptCheckpointError(
                    f"checkpoint {where}: leaf {path} was read as {arr.shape} {arr.dtype}, "
                    f"saved as {tuple(shape)} {dtype}")
            as_jax = jnp.asarray(arr) if not isinstance(target_leaves[i], _HOST_TYPES) else None
            # Host (NumPy/Python) target leaves, and dtypes JAX would change (float64 while
            # x64 is off), come back as NumPy arrays: a restore never changes a dtype.
            leaves.append(as_jax if as_jax is not None and as_jax.dtype == arr.dtype else arr)
    return jax.tree_util.tree_unflatten(treedef, leaves)


_HOST_TYPES = (np.ndarray, np.generic, int, float, bool, complex)


def _abstract_arrays(spec: dict) -> dict[str, np.ndarray]:
    """Restore targets for orbax: host numpy arrays of the stored shapes and dtypes."""
    out = {}
    for i, (shape, dtype, impl) in enumerate(zip(spec["shapes"], spec["dtypes"],
                                                 spec["key_impls"])):
        if impl is not None:
            # key_data shape: key shape + impl's trailing shape (e.g. (2,) for threefry).
            kd = jax.random.key_data(jax.random.key(0, impl=impl))
            out[f"{i:05d}"] = np.zeros(tuple(shape) + tuple(kd.shape), np.asarray(kd).dtype)
        elif 0 not in shape:
            out[f"{i:05d}"] = np.zeros(tuple(shape), jnp.dtype(dtype))
    return out


def _ocp():
    import orbax.checkpoint as ocp  # imported lazily: orbax is heavy

    return ocp


def _restore_args(ocp, spec: dict):
    return ocp.args.StandardRestore(_abstract_arrays(spec))


# --------------------------------------------------------------------------- single pytree
def save_pytree(path: str | os.PathLike, tree: PyTree, metadata: Mapping[str, Any] | None = None,
                *, overwrite: bool = False) -> None:
    """Save one pytree (PRNG keys and NamedTuple states included) atomically to ``path``.

    Args:
      path: directory to create (must not exist unless ``overwrite``).
      tree: pytree of arrays.
      metadata: JSON-able dict stored alongside (dataclasses/NamedTuples are converted).
      overwrite: replace an existing checkpoint at ``path``.

    Raises:
      FileExistsError: if ``path`` exists and not ``overwrite``.
      TypeError: for a leaf or metadata value that cannot be stored.

    Example:
      >>> import tempfile, os
      >>> path = os.path.join(tempfile.mkdtemp(), "ckpt")
      >>> save_pytree(path, {"k": jax.random.key(1)})
      >>> restore_pytree(path, {"k": jax.random.key(0)})[0]["k"].dtype
      key<fry>
    """
    ocp = _ocp()
    path = os.path.abspath(os.fspath(path))
    if os.path.exists(path):
        if not overwrite:
            raise FileExistsError(f"path {path} exists; pass overwrite=True to replace it")
        shutil.rmtree(path)
    arrays, spec = pytree_to_arrays(tree)
    meta = {"spec": spec, "user": _jsonable(dict(metadata or {}))}
    with ocp.Checkpointer(ocp.CompositeCheckpointHandler()) as ckptr:
        ckptr.save(path, args=ocp.args.Composite(**{
            _STATE: ocp.args.StandardSave(arrays), _META: ocp.args.JsonSave(meta)}))


def restore_pytree(path: str | os.PathLike, target: PyTree, *,
                   verify: bool = True) -> tuple[PyTree, dict]:
    """Restore a pytree written by :func:`save_pytree` into the structure of ``target``.

    Args:
      path: the directory given to :func:`save_pytree`.
      target: pytree of arrays or ``jax.ShapeDtypeStruct`` with the saved structure.
      verify: check SHA-256 digests of the leaves.

    Returns:
      ``(tree, metadata)``.

    Raises:
      FileNotFoundError: if ``path`` does not exist.
      ValueError: if ``target`` does not match the saved structure.
      CorruptCheckpointError: if the checkpoint cannot be read or fails its integrity check.
    """
    ocp = _ocp()
    path = os.path.abspath(os.fspath(path))
    if not os.path.isdir(path):
        raise FileNotFoundError(f"no checkpoint at {path}")
    with ocp.Checkpointer(ocp.CompositeCheckpointHandler()) as ckptr:
        try:
            meta = ckptr.restore(path, args=ocp.args.Composite(
                **{_META: ocp.args.JsonRestore()}))[_META]
            spec = meta["spec"]
        except Exception as e:  # noqa: BLE001 - any read failure means a bad checkpoint
            raise CorruptCheckpointError(
                f"checkpoint {path}: metadata unreadable ({type(e).__name__}: {e})") from e
        _check_target(spec, target, path)
        try:
            arrays = ckptr.restore(path, args=ocp.args.Composite(
                **{_STATE: _restore_args(ocp, spec)}))[_STATE]
        except Exception as e:  # noqa: BLE001
            raise CorruptCheckpointError(
                f"checkpoint {path}: arrays unreadable ({type(e).__name__}: {e})") from e
    return arrays_to_pytree(arrays, spec, target, verify=verify, where=path), meta["user"]


# --------------------------------------------------------------------------- manager
class Checkpointer:
    """Step checkpoints in one directory: atomic, keep-N latest + keep-best, safe restore.

    Args:
      directory: root directory (created if missing).
      max_to_keep: number of most recent steps to keep (None keeps all).
      best_metric: key of the ``metrics`` dict used to rank steps (None: no best tracking).
      best_mode: ``"max"`` or ``"min"``.
      keep_best: number of best steps kept in addition to the latest ones.
      save_interval_steps: :meth:`save` writes only when ``step % save_interval_steps == 0``
        (or ``force=True``).
      verify: check every restored leaf against its saved SHA-256.
      quarantine_corrupt: when falling back, rename the unreadable step directory to
        ``corrupt-<step>-<time>`` so the step can be written again (also done on open for
        steps whose metrics JSON is unreadable; with False such a directory raises).
      async_save: let orbax write in a background thread (``save`` returns earlier; call
        :meth:`wait_until_finished` or :meth:`close`). Off by default.

    Raises:
      ValueError: for invalid options.
      CorruptCheckpointError: if orbax cannot open the directory even after moving aside
        steps with unreadable JSON files.

    Use as a context manager or call :meth:`close`.
    """

    def __init__(
        self,
        directory: str | os.PathLike,
        *,
        max_to_keep: int | None = 5,
        best_metric: str | None = None,
        best_mode: str = "max",
        keep_best: int = 1,
        save_interval_steps: int = 1,
        verify: bool = True,
        quarantine_corrupt: bool = True,
        async_save: bool = False,
    ) -> None:
        if max_to_keep is not None and (not isinstance(max_to_keep, int) or max_to_keep < 1):
            raise ValueError(f"max_to_keep must be None or an int >= 1, got {max_to_keep!r}")
        if best_mode not in ("max", "min"):
            raise ValueError(f"best_mode must be 'max' or 'min', got {best_mode!r}")
        if not isinstance(keep_best, int) or keep_best < 0:
            raise ValueError(f"keep_best must be an int >= 0, got {keep_best!r}")
        if not isinstance(save_interval_steps, int) or save_interval_steps < 1:
            raise ValueError("save_interval_steps must be an int >= 1, got "
                             f"{save_interval_steps!r}")
        if best_metric is not None and not isinstance(best_metric, str):
            raise TypeError(f"best_metric must be a str or None, got {best_metric!r}")
        if not isinstance(directory, (str, os.PathLike)) or not os.fspath(directory):
            raise TypeError(f"directory must be a non-empty path (str or os.PathLike), got "
                            f"{directory!r}")
        self.directory = os.path.abspath(os.fspath(directory))
        self.max_to_keep = max_to_keep
        self.best_metric = best_metric
        self.best_mode = best_mode
        self.keep_best = keep_best
        self.save_interval_steps = save_interval_steps
        self.verify = verify
        self.quarantine_corrupt = quarantine_corrupt
        self.async_save = async_save
        os.makedirs(self.directory, exist_ok=True)
        try:
            self._mngr = self._make_manager()
        except Exception as e:  # noqa: BLE001 - orbax reads every step's metrics on open
            # A step whose small JSON files (metrics, step metadata) are unreadable makes
            # orbax's constructor fail for the whole directory: move such steps aside.
            if not (self.quarantine_corrupt and self._quarantine_unreadable_json()):
                raise CorruptCheckpointError(
                    f"cannot open checkpoint directory {self.directory}: "
                    f"{type(e).__name__}: {e}") from e
            self._mngr = self._make_manager()

    # -- orbax plumbing
    def _quarantine_unreadable_json(self) -> bool:
        moved = []
        for name in sorted(os.listdir(self.directory)):
            step_dir = os.path.join(self.directory, name)
            if not (name.isdigit() and os.path.isdir(step_dir)):
                continue
            for rel in (os.path.join("metrics", "metrics"), "_CHECKPOINT_METADATA"):
                path = os.path.join(step_dir, rel)
                if not os.path.exists(path):
                    continue
                try:
                    with open(path, encoding="utf-8") as fh:
                        json.load(fh)
                except (ValueError, OSError) as e:
                    dst = self._move_aside(int(name))
                    warnings.warn(
                        f"checkpoint step {name} ({step_dir}): {rel} unreadable "
                        f"({type(e).__name__}: {e}); moved it to {dst}; the previous "
                        "checkpoints stay usable", CheckpointFallbackWarning, stacklevel=3)
                    moved.append(name)
                    break
        return bool(moved)

    def _move_aside(self, step: int) -> str:
        stamp = datetime.datetime.now(datetime.timezone.utc).strftime("%Y%m%dT%H%M%S%f")
        dst = os.path.join(self.directory, f"corrupt-{step}-{stamp}")
        os.replace(self.step_path(step), dst)
        return dst

    def _score(self, metrics: Any) -> float:
        worst = -math.inf if self.best_mode == "max" else math.inf
        try:
            value = float(metrics[self.best_metric])
        except (TypeError, KeyError, ValueError):
            return worst
        return worst if math.isnan(value) else value

    def _make_manager(self):
        ocp = _ocp()
        pp = ocp.checkpoint_managers
        policies = [pp.LatestN(n=self.max_to_keep)]
        if self.best_metric is not None and self.keep_best > 0:
            policies.append(pp.BestN(get_metric_fn=self._score, reverse=self.best_mode == "min",
                                     n=self.keep_best, keep_checkpoints_without_metrics=False))
        options = ocp.CheckpointManagerOptions(
            save_interval_steps=self.save_interval_steps,
            preservation_policy=pp.AnyPreservationPolicy(policies),
            create=True,
            cleanup_tmp_directories=True,
            enable_async_checkpointing=self.async_save,
            # best_fn only makes orbax write the metrics file into each step (so metrics and
            # keep-best survive a restart); retention is decided by preservation_policy.
            best_fn=self._score,
            best_mode=self.best_mode,
        )
        return ocp.CheckpointManager(self.directory, options=options, item_names=(_STATE, _META))

    def __enter__(self) -> "Checkpointer":
        return self

    def __exit__(self, *exc: Any) -> None:
        self.close()

    def close(self) -> None:
        """Wait for pending writes and release orbax resources."""
        self._mngr.wait_until_finished()
        self._mngr.close()

    def wait_until_finished(self) -> None:
        """Block until an asynchronous save has been committed."""
        self._mngr.wait_until_finished()

    def reload(self) -> None:
        """Re-read the list of steps from disk (after another process wrote to it)."""
        self._mngr.reload()

    # -- queries
    def all_steps(self) -> list[int]:
        """Complete steps on disk, ascending."""
        return sorted(int(s) for s in self._mngr.all_steps())

    def latest_step(self) -> int | None:
        """Newest complete step, or None."""
        steps = self.all_steps()
        return steps[-1] if steps else None

    def metrics(self, step: int) -> dict | None:
        """Metrics saved with ``step`` (None if none were given)."""
        return self._mngr.metrics(step)

    def best_step(self) -> int | None:
        """Step with the best ``best_metric`` among those on disk (None without any)."""
        if self.best_metric is None:
            raise ValueError("best_step needs Checkpointer(best_metric=...)")
        scored = [(self._score(self.metrics(s)), s) for s in self.all_steps()
                  if self.metrics(s) is not None]
        if not scored:
            return None
        pick = max if self.best_mode == "max" else min
        return pick(scored, key=lambda x: (x[0], x[1]) if self.best_mode == "max"
                    else (x[0], -x[1]))[1]

    def step_path(self, step: int) -> str:
        """Directory of a step (it exists only once the save has completed)."""
        return os.path.join(self.directory, str(step))

    # -- save
    def should_save(self, step: int) -> bool:
        """Whether :meth:`save` would write at ``step`` (interval and not already saved)."""
        return self._mngr.should_save(step)

    def save(self, step: int, state: PyTree, *, metrics: Mapping[str, Any] | None = None,
             metadata: Mapping[str, Any] | None = None, force: bool = False) -> bool:
        """Write ``state`` as step ``step`` (atomically) and apply the retention policy.

        Args:
          step: int >= 0, the training step (must exceed the latest saved step).
          state: pytree of arrays (params, optimizer state, PRNG keys, NamedTuple states...).
          metrics: dict of scalars (used for keep-best; NaN ranks worst).
          metadata: JSON-able dict (dataclass configs and NamedTuples are converted).
          force: save even if ``step`` is not a multiple of ``save_interval_steps``.

        Returns:
          True if a checkpoint was written.

        Raises:
          ValueError: for a negative or non-increasing ``step``.
          TypeError: for leaves or metadata that cannot be stored.
        """
        step = int(step)
        if step < 0:
            raise ValueError(f"step must be >= 0, got {step}")
        latest = self.latest_step()
        if latest is not None and step <= latest:
            raise ValueError(f"step {step} is not after the latest saved step {latest}")
        if not force and step % self.save_interval_steps != 0:
            return False
        arrays, spec = pytree_to_arrays(state)
        meta = {"step": step, "time": datetime.datetime.now(datetime.timezone.utc).isoformat(),
                "spec": spec, "user": _jsonable(dict(metadata or {}))}
        metrics_json = None
        if metrics is not None:
            metrics_json = {str(k): float(np.asarray(v)) for k, v in metrics.items()}
            if self.best_metric is not None and self.best_metric not in metrics_json:
                raise ValueError(f"metrics must contain the best_metric {self.best_metric!r}, "
                                 f"got keys {sorted(metrics_json)}")
        elif self.best_metric is not None:
            raise ValueError(f"metrics with {self.best_metric!r} are required when best_metric "
                             "is set")
        ocp = _ocp()
        return bool(self._mngr.save(
            step,
            args=ocp.args.Composite(**{_STATE: ocp.args.StandardSave(arrays),
                                       _META: ocp.args.JsonSave(meta)}),
            metrics=metrics_json if metrics_json is not None else {}, force=True))

    # -- restore
    def _read_step(self, step: int, target: PyTree) -> RestoredCheckpoint:
        ocp = _ocp()
        where = f"step {step} ({self.step_path(step)})"
        try:
            meta = self._mngr.restore(step, args=ocp.args.Composite(
                **{_META: ocp.args.JsonRestore()}))[_META]
            spec = meta["spec"]
            if spec.get("format") != _FORMAT:
                raise ValueError(f"unknown format {spec.get('format')!r}")
        except Exception as e:  # noqa: BLE001 - any read failure means a bad checkpoint
            raise CorruptCheckpointError(
                f"checkpoint {where}: metadata unreadable ({type(e).__name__}: {e})") from e
        _check_target(spec, target, where)  # caller error: ValueError, no fallback
        try:
            arrays = self._mngr.restore(step, args=ocp.args.Composite(
                **{_STATE: _restore_args(ocp, spec)}))[_STATE]
        except Exception as e:  # noqa: BLE001
            raise CorruptCheckpointError(
                f"checkpoint {where}: arrays unreadable ({type(e).__name__}: {e})") from e
        state = arrays_to_pytree(arrays, spec, target, verify=self.verify, where=where)
        return RestoredCheckpoint(step=step, state=state, metadata=meta["user"],
                                  metrics=self.metrics(step))

    def _quarantine(self, step: int) -> str | None:
        try:
            dst = self._move_aside(step)
        except OSError:
            return None
        self._mngr.reload()
        return dst

    def restore(self, target: PyTree, step: int | None = None, *,
                fallback: bool = True) -> RestoredCheckpoint:
        """Restore a step into the structure of ``target``.

        Args:
          target: pytree of arrays or ``jax.ShapeDtypeStruct`` (e.g.
            ``jax.eval_shape(init_fn, key)``) with the saved structure, shapes and dtypes;
            typed PRNG key leaves must be keys in the target too.
          step: the step to read; None reads the newest complete one.
          fallback: with ``step=None``, on a corrupt newest step warn
            (:class:`CheckpointFallbackWarning`), quarantine it and try the next older one.

        Returns:
          :class:`RestoredCheckpoint` ``(step, state, metadata, metrics)``.

        Raises:
          FileNotFoundError: if there is no checkpoint (or not ``step``).
          ValueError: if ``target`` does not match the saved structure.
          CorruptCheckpointError: if the requested step (or, with fallback, every step) is
            unreadable; the message lists each step's error.
        """
        self.wait_until_finished()
        self._mngr.reload()
        steps = self.all_steps()
        if step is not None:
            if int(step) not in steps:
                raise FileNotFoundError(f"no complete checkpoint for step {step} in "
                                        f"{self.directory} (steps: {steps})")
            return self._read_step(int(step), target)
        if not steps:
            raise FileNotFoundError(f"no checkpoint in {self.directory}")
        errors = []
        for s in reversed(steps):
            try:
                out = self._read_step(s, target)
            except CorruptCheckpointError as e:
                if not fallback:
                    raise
                errors.append(str(e))
                moved = self._quarantine(s) if self.quarantine_corrupt else None
                warnings.warn(
                    f"{e}; " + (f"moved it to {moved}; " if moved else "")
                    + "falling back to the previous checkpoint", CheckpointFallbackWarning,
                    stacklevel=2)
                continue
            return out
        raise CorruptCheckpointError(
            f"no readable checkpoint in {self.directory}:\n  " + "\n  ".join(errors))
