"""Chunked training driver: run a compiled training program chunk by chunk from Python.

``make_train(...)`` gives one ``lax.scan`` over a whole run; that is the fastest way to train,
but it cannot report progress, save checkpoints or survive a crash. Every trainer in jaxstab
therefore also offers ``make_runner(...) -> Runner``: the same run cut into ``num_chunks``
pure, vmap-able pieces, with

    train(key, hp) == finalize(*scan(run_chunk, init(key, hp), chunk_index=0..num_chunks-1))

(the trainers build ``make_train`` exactly that way). :func:`run` executes
``jax.jit(jax.vmap(runner.run_chunk))`` once per chunk over a batch of seeds, and between two
chunks (on the host, outside the compiled program) it

* prints a one-line progress report (chunk i/N, elapsed time, ETA, live metrics) to stderr;
* calls ``on_chunk(chunk_index, outputs)``;
* every ``save_every`` chunks saves ``(carry, chunk count, outputs so far)`` with
  :class:`jaxstab.checkpoint.Checkpointer` (orbax, atomic): a process killed at any moment
  resumes from its last complete checkpoint with ``resume=True`` and, since the chunk program
  is deterministic and the carry is restored bit for bit (SHA-256 checked), ends with exactly
  the result of an uninterrupted run (``tests/training/test_loop.py`` SIGKILLs a real PPO run).

Checkpoint layout: step ``c`` of the orbax directory holds the state after ``c`` chunks:
``{"carry": carry [S, ...], "outputs": outputs [S, num_chunks, ...]}`` (the output buffer has
its full size from the start, chunks not yet run are zero, so every step has the same
structure). ``<checkpoint_dir>/jaxstab_run.json`` records what the run is (number of seeds
and chunks, the PRNG keys, the hyperparameters, the caller's ``metadata`` such as the
config); resuming into a directory that holds a different run raises :class:`ValueError`
naming the differences, before anything is restored.

Overhead: the carry stays on the device between chunks; only the per-chunk outputs (metrics)
are copied to the host. ``benchmarks/bench_ppo.py --section chunked`` measures chunked against
one jitted scan.

Example:
  >>> from jaxstab.training import ppo, loop
  >>> env, env_params = gymnax.make("CartPole-v1")
  >>> runner = ppo.make_runner(PPOConfig(total_timesteps=100_000), env, env_params)
  >>> keys = jax.random.split(jax.random.key(0), 4)
  >>> hp = loop.broadcast_hparams(ppo_hparams(), 4)
  >>> carry, outputs = loop.run(runner, keys, hp, checkpoint_dir="/tmp/run1", resume=True)
  >>> state, metrics = loop.finalize(runner, carry, outputs)   # as jax.vmap(train)
"""

from __future__ import annotations

import functools
import hashlib
import inspect
import json
import math
import os
import sys
import time
from typing import Any, Callable, Mapping, NamedTuple

import jax
import jax.numpy as jnp
import numpy as np

__all__ = ["Runner", "run", "finalize", "broadcast_hparams", "scan_chunks", "map_seeds",
           "with_seed_layout", "resolve_seed_vmap", "SEED_VMAP_MODES", "RUN_FILE"]

#: name of the run-description file written into a checkpoint directory.
RUN_FILE = "jaxstab_run.json"
_FORMAT = "jaxstab-loop-v1"


class Runner(NamedTuple):
    """A training run cut into chunks (the protocol every ``make_runner`` returns).

    Attributes:
      init: ``init(key, hparams) -> carry``; pure, vmap-able (one seed).
      run_chunk: ``run_chunk(carry, hparams, chunk_index) -> (carry, outputs)``; pure,
        vmap-able; ``chunk_index`` is a 0-d int32 array (traced: one compilation serves every
        chunk); ``outputs`` is a dict of arrays (metrics of the chunk).
      num_chunks: Python int >= 1.
      finalize: ``finalize(carry, stacked_outputs) -> result`` of ``make_train``'s
        ``train(key, hparams)``; ``stacked_outputs`` are the outputs of every chunk stacked on
        a leading chunk axis ``[num_chunks, ...]``.
    """

    init: Callable[[jax.Array, Any], Any]
    run_chunk: Callable[[Any, Any, jax.Array], tuple[Any, dict]]
    num_chunks: int
    finalize: Callable[[Any, Any], Any]


def _check_runner(runner: Any) -> None:
    if not isinstance(runner, Runner):
        raise TypeError(f"runner must be a jaxstab.training.loop.Runner, got {type(runner)}")
    if isinstance(runner.num_chunks, bool) or not isinstance(runner.num_chunks, int) \
            or runner.num_chunks < 1:
        raise ValueError(f"runner.num_chunks must be an int >= 1, got {runner.num_chunks!r}")


def scan_chunks(runner: Runner, key: jax.Array, hparams: Any) -> Any:
    """``finalize(*lax.scan(run_chunk))`` from ``init``: the whole run as one program (one seed).

    This is the reference semantics of a :class:`Runner` (``make_train`` of the trainers is
    this function). Pure; ``jax.jit(jax.vmap(...))`` it like ``train``.

    Args:
      runner: :class:`Runner`.
      key: a PRNG key.
      hparams: the trainer's hyperparameters (one setting).

    Returns:
      ``runner.finalize(carry, stacked_outputs)``.
    """
    _check_runner(runner)
    carry = runner.init(key, hparams)

    def body(c, i):
        return runner.run_chunk(c, hparams, i)

    carry, outputs = jax.lax.scan(body, carry, jnp.arange(runner.num_chunks, dtype=jnp.int32))
    return runner.finalize(carry, outputs)


def broadcast_hparams(hparams: Any, num_seeds: int) -> Any:
    """Give every leaf of ``hparams`` a leading seed axis ``[num_seeds, ...]`` (copies).

    Args:
      hparams: pytree of scalars / arrays for one setting.
      num_seeds: S >= 1.

    Returns:
      The same pytree with leaves ``jnp.broadcast_to(leaf, (S,) + leaf.shape)``.
    """
    if isinstance(num_seeds, bool) or not isinstance(num_seeds, int) or num_seeds < 1:
        raise ValueError(f"num_seeds must be an int >= 1, got {num_seeds!r}")
    return jax.tree_util.tree_map(
        lambda x: jnp.broadcast_to(jnp.asarray(x), (num_seeds,) + jnp.shape(x)), hparams)


def _check_seeds_per_batch(seeds_per_batch: Any) -> None:
    if seeds_per_batch is not None and (isinstance(seeds_per_batch, bool)
                                        or not isinstance(seeds_per_batch, int)
                                        or seeds_per_batch < 1):
        raise ValueError(f"seeds_per_batch must be None or an int >= 1, got {seeds_per_batch!r}")


def map_seeds(fn: Callable[..., Any], *, seeds_per_batch: int | None = None,
              in_axes: int | None | tuple[int | None, ...] = 0) -> Callable[..., Any]:
    """``jax.vmap(fn)`` over a leading seed axis, or the same result computed in batches of seeds.

    ``seeds_per_batch=None`` is exactly ``jax.vmap(fn, in_axes=in_axes)`` (for a ``fn`` built by
    :func:`with_seed_layout`, as SAC's ``make_train`` is, its ``seed_vmap`` decides how
    that vmap runs). An int ``b`` runs a
    ``jax.lax.map`` (a sequential loop inside the compiled program) over groups of ``b`` seeds,
    each group vmapped (also for ``b = 1``: a vmap of one seed; ``fn.vectorized`` where ``fn``
    has one); a last group of ``S mod b``
    seeds is vmapped on its own. The output has the same structure and shapes as the vmap's.
    Every seed computes the same mathematics, but XLA may round differently in a narrower batch
    (tiling, fusion), and RL runs are chaotic: results drift apart from the all-seed vmap over
    a long run. With ``b = 1`` each seed's result equals, bit for bit in our tests, a vmapped
    run of that seed alone (``tests/training/test_sac_train.py``).

    Why: on a multi-core CPU, one JAX device's thread pool splits the wide operations of a
    many-seed vmap over its threads, and for the small networks of RL that split costs more
    than it gains; narrower groups are split less. Measured on a 2-core Intel Xeon
    (``benchmarks/results/bench_seed_batching_cpu.md``, interleaved): PPO CartPole 16 seeds ran
    1.24x faster in groups of 4 than all vmapped (1.13x in groups of 1 or 2), SAC Pendulum 8
    seeds 1.30x in groups of 1 (an earlier run: 1.03x). The same runs with the process pinned to
    one core (``taskset -c 0``, a one-thread pool: ``bench_seed_batching_one_core_cpu.md``)
    ran the all-seed vmap 1.19x (SAC) and 1.28x (PPO) faster than on two cores, and there
    grouping gained at most 1.10x (PPO groups of 4: 1.06x, groups of 1: 0.88x; SAC:
    1.03-1.10x). The best group size depends on the workload and the machine: measure before
    choosing; to use several cores, give each its own program
    (:func:`jaxstab.distributed.use_cpu_devices` and :func:`jaxstab.distributed.sweep`).
    On a GPU keep ``None`` (one wide vmap fills the device).

    Args:
      fn: a function of one seed (``fn(key, hparams, ...)``), vmap-able.
      seeds_per_batch: ``None`` (one vmap over all seeds) or an int >= 1.
      in_axes: ``0`` or ``None`` per positional argument (as ``jax.vmap``; ``None`` =
        broadcast to every seed); a single value applies to every argument.

    Returns:
      ``mapped(*args)`` with the seed axis leading on every output leaf.

    Raises:
      ValueError: for a ``seeds_per_batch`` that is not None or a positive int, or ``in_axes``
        entries other than 0 / None (only with ``seeds_per_batch``), or mapped arguments whose
        leading axes differ.

    Example:
      >>> train = ppo.make_train(cfg, env, env_params)
      >>> out = jax.jit(map_seeds(train, seeds_per_batch=4, in_axes=(0, None)))(keys, hp)
    """
    _check_seeds_per_batch(seeds_per_batch)
    if seeds_per_batch is None:
        return jax.vmap(fn, in_axes=in_axes)
    fn = getattr(fn, "vectorized", fn)  # groups are vectorized whatever fn's seed layout

    def mapped(*args):
        axes = tuple(in_axes) if isinstance(in_axes, (tuple, list)) else (in_axes,) * len(args)
        if len(axes) != len(args):
            raise ValueError(f"in_axes has {len(axes)} entries for {len(args)} arguments")
        if any(a not in (0, None) for a in axes):
            raise ValueError(f"in_axes entries must be 0 or None with seeds_per_batch, got "
                             f"{in_axes!r}")
        idx = [i for i, a in enumerate(axes) if a == 0]
        if not idx:
            raise ValueError("map_seeds needs at least one argument mapped over seeds (in_axes 0)")
        sizes = {int(jnp.shape(x)[0]) for i in idx for x in jax.tree_util.tree_leaves(args[i])}
        if len(sizes) != 1:
            raise ValueError("mapped arguments have different leading (seed) sizes: "
                             f"{sorted(sizes)}")

        def one(xs):
            full = list(args)
            for i, x in zip(idx, xs):
                full[i] = x
            return fn(*full)

        xs = tuple(args[i] for i in idx)
        s = sizes.pop()
        b = min(seeds_per_batch, s)
        # groups of 1 are vmapped too: measured faster on CPU than the unbatched program (SAC
        # Pendulum, 8 seeds x 6000 steps, 3 interleaved runs: 2157 vs 1937 steps/s). Explicit
        # shapes, not lax.map's batch_size, whose reshape fails on zero-size leaves.
        n = s // b
        groups = jax.tree_util.tree_map(
            lambda x: jnp.reshape(x[:n * b], (n, b) + tuple(x.shape[1:])), xs)
        out = jax.lax.map(jax.vmap(one), groups)
        out = jax.tree_util.tree_map(
            lambda y: jnp.reshape(y, (n * b,) + tuple(y.shape[2:])), out)
        if s % b:
            rest = jax.vmap(one)(jax.tree_util.tree_map(lambda x: x[n * b:], xs))
            out = jax.tree_util.tree_map(lambda y, z: jnp.concatenate([y, z]), out, rest)
        return out

    return mapped


#: values of ``seed_vmap`` (:func:`with_seed_layout`, ``make_train(..., seed_vmap=...)``).
SEED_VMAP_MODES = ("auto", "loop", "vectorize")


def resolve_seed_vmap(seed_vmap: str, backend: str | None = None) -> str:
    """``"loop"`` or ``"vectorize"``: what ``seed_vmap`` means on ``backend``.

    ``"auto"`` is ``"loop"`` on the CPU and ``"vectorize"`` on any other backend (GPU, TPU);
    ``backend`` defaults to ``jax.default_backend()``.

    Raises:
      ValueError: if ``seed_vmap`` is not one of :data:`SEED_VMAP_MODES`.
    """
    if not isinstance(seed_vmap, str) or seed_vmap not in SEED_VMAP_MODES:
        raise ValueError(f"seed_vmap must be one of {SEED_VMAP_MODES}, got {seed_vmap!r}")
    if seed_vmap != "auto":
        return seed_vmap
    return "loop" if (backend or jax.default_backend()) == "cpu" else "vectorize"


def with_seed_layout(fn: Callable[..., Any], seed_vmap: str = "auto") -> Callable[..., Any]:
    """``fn`` (a one-seed program) with a batching rule that decides how ``jax.vmap`` runs it.

    ``"vectorize"``: ``jax.vmap(fn)`` is the ordinary vectorized program (every operation gets
    a leading seed axis). ``"loop"``: ``jax.vmap(fn)`` runs the seeds one after another inside
    the compiled program (:func:`map_seeds` with ``seeds_per_batch=1``; an argument with no
    batched leaf stays unbatched, the unbatched leaves of a partly batched one are broadcast);
    the results are those of single-seed runs up to float rounding. ``"auto"``
    (default) chooses when the vmap is traced (:func:`resolve_seed_vmap`: loop on the CPU).

    Why: on a small CPU the batched matrix products of a many-seed vmap run no faster per seed
    than one seed's, and XLA splits them over its threads at a loss; a loop of single seeds was
    the fastest one-device layout for SAC (Pendulum, 64x64 networks, 8 seeds, 2-core Xeon:
    ``benchmarks/results/bench_peers_sac_*_cpu.md``, rows "jaxstab" vs "jaxstab, vectorized").
    On a GPU one wide vmap fills the device. Only the innermost ``vmap`` of nested vmaps loops;
    :func:`map_seeds` with an int ``seeds_per_batch`` vmaps ``fn.vectorized`` (the plain
    function) in its groups.

    Args:
      fn: ``fn(*args)`` of one seed, every output a JAX array tree (keyword arguments are
        bound to their positions before the rule sees them).
      seed_vmap: one of :data:`SEED_VMAP_MODES`.

    Returns:
      A function computing ``fn``; it carries ``.vectorized`` (``fn`` itself) and
      ``.seed_vmap`` (the mode given). With ``"vectorize"`` the batching rule is not installed.

    Raises:
      ValueError: for an unknown ``seed_vmap``.
    """
    resolve_seed_vmap(seed_vmap, backend="cpu")  # validates the name
    if seed_vmap == "vectorize":
        def plain(*args, **kwargs):
            return fn(*args, **kwargs)
        wrapped = plain
    else:
        from jax.custom_batching import custom_vmap

        ruled = custom_vmap(fn)

        @ruled.def_vmap
        def _rule(axis_size, in_batched, *args):
            if resolve_seed_vmap(seed_vmap) == "vectorize":
                axes = jax.tree_util.tree_map(lambda b: 0 if b else None, tuple(in_batched))
                out = jax.vmap(fn, in_axes=axes)(*args)
            else:
                # an argument with no batched leaf stays unbatched (in_axes None: e.g. a chunk
                # index keeps a warm-up lax.cond a real branch); one with some batched leaves
                # gets the others broadcast
                axes, full = [], []
                for arg, batched in zip(args, in_batched):
                    flags = jax.tree_util.tree_leaves(batched)
                    if not any(flags):
                        axes.append(None)
                        full.append(arg)
                        continue
                    axes.append(0)
                    full.append(jax.tree_util.tree_map(
                        lambda x, b: x if b else jnp.broadcast_to(x, (axis_size,) + jnp.shape(x)),
                        arg, batched))
                out = map_seeds(fn, seeds_per_batch=1, in_axes=tuple(axes))(*full)
            return out, jax.tree_util.tree_map(lambda _: True, out)

        signature = inspect.signature(fn)

        def wrapped(*args, **kwargs):
            if kwargs:  # the batching rule takes positional arguments only
                args = signature.bind(*args, **kwargs).args
            return ruled(*args)

    functools.update_wrapper(wrapped, fn)
    wrapped.vectorized = fn
    wrapped.seed_vmap = seed_vmap
    return wrapped


def _strong(tree: Any) -> Any:
    """``tree`` with weak types removed (PRNG keys untouched).

    ``init`` may return weakly typed leaves (gymnax sets ``time=0``), while a carry restored from
    a checkpoint is strongly typed; without this a resumed run would compile ``run_chunk`` a
    second time (same result, ~10 s more).
    """
    return jax.tree_util.tree_map(
        lambda x: x if jnp.issubdtype(x.dtype, jax.dtypes.prng_key)
        else jax.lax.convert_element_type(x, x.dtype), tree)


@functools.lru_cache(maxsize=64)
def _compiled(runner: Runner, seeds_per_batch: int | None = None, mesh: Any = None):
    """Jitted, seed-mapped init / run_chunk / finalize of a runner (cached per runner).

    With a ``mesh``, ``run_chunk`` runs under ``jax.shard_map``: the seed axis of the carry and
    the hyperparameters split over the mesh's first axis, each device mapping its block of seeds
    (as :func:`jaxstab.distributed.sweep` does for a whole ``train``); no communication.
    """
    init = jax.jit(jax.vmap(lambda k, h: _strong(runner.init(k, h))))
    chunk_fn = map_seeds(runner.run_chunk, seeds_per_batch=seeds_per_batch, in_axes=(0, 0, None))
    if mesh is not None:
        from jax.sharding import PartitionSpec as P

        seeds = P(mesh.axis_names[0])
        chunk_fn = jax.shard_map(chunk_fn, mesh=mesh, in_specs=(seeds, seeds, P()),
                                 out_specs=seeds, check_vma=False)
    chunk = jax.jit(chunk_fn)
    fin = jax.jit(jax.vmap(runner.finalize))
    return init, chunk, fin


def _aval_key(tree: Any) -> tuple:
    """Hashable (structure, shapes, dtypes) of a pytree, the cache key of :func:`_specs`."""
    leaves, treedef = jax.tree_util.tree_flatten(tree)
    return (treedef, tuple((tuple(jnp.shape(x)), x.dtype if hasattr(x, "dtype")
                            else jnp.asarray(x).dtype) for x in leaves))


_SPEC_CACHE: dict = {}


def _specs(runner: Runner, keys_key: tuple, hp_key: tuple) -> tuple[Any, Any]:
    """Carry and per-chunk output shapes for given key / hparam shapes (traced once, cached)."""
    cache_key = (runner, keys_key, hp_key)
    if cache_key not in _SPEC_CACHE:
        init_fn, chunk_fn, _ = _compiled(runner)

        def unflatten(k):
            treedef, avals = k
            return jax.tree_util.tree_unflatten(
                treedef, [jax.ShapeDtypeStruct(sh, dt) for sh, dt in avals])

        keys_spec, hp_spec = unflatten(keys_key), unflatten(hp_key)
        carry_spec = jax.eval_shape(init_fn, keys_spec, hp_spec)
        chunk_spec = jax.eval_shape(chunk_fn, carry_spec, hp_spec,
                                    jax.ShapeDtypeStruct((), jnp.int32))[1]
        if len(_SPEC_CACHE) > 64:
            _SPEC_CACHE.clear()
        _SPEC_CACHE[cache_key] = (carry_spec, chunk_spec)
    return _SPEC_CACHE[cache_key]


def finalize(runner: Runner, carry: Any, stacked_outputs: Any) -> Any:
    """Per-seed results of a finished :func:`run`: ``jax.vmap(runner.finalize)`` (jitted).

    Args:
      runner: the :class:`Runner` given to :func:`run`.
      carry: carry returned by :func:`run` (leaves ``[S, ...]``).
      stacked_outputs: outputs returned by :func:`run` (leaves ``[S, num_chunks, ...]``).

    Returns:
      What ``jax.vmap(train)(keys, hparams)`` returns (leaves with a leading seed axis ``S``).
    """
    _check_runner(runner)
    return _compiled(runner)[2](carry, stacked_outputs)


# ----------------------------------------------------------------------------- run metadata
def _key_data(keys: jax.Array) -> np.ndarray:
    if jnp.issubdtype(keys.dtype, jax.dtypes.prng_key):
        return np.asarray(jax.random.key_data(keys))
    return np.asarray(keys)


def _normalize_json(obj: Any) -> Any:
    from jaxstab.checkpoint import _jsonable  # the checkpoint module's JSON conversion

    return json.loads(json.dumps(_jsonable(obj), sort_keys=True))


def _run_description(runner: Runner, keys: jax.Array, hparams: Any, carry_spec: Any,
                     metadata: Mapping[str, Any] | None) -> dict:
    leaves, treedef = jax.tree_util.tree_flatten(hparams)
    carry_leaves = jax.tree_util.tree_leaves(carry_spec)
    return _normalize_json({
        "format": _FORMAT,
        "num_chunks": runner.num_chunks,
        "num_seeds": int(keys.shape[0]),
        "keys_sha256": hashlib.sha256(np.ascontiguousarray(_key_data(keys)).tobytes())
        .hexdigest(),
        "hparams": {"structure": str(treedef),
                    "values": [np.asarray(x, np.float64).tolist() for x in leaves]},
        "carry": [[list(x.shape), str(x.dtype)] for x in carry_leaves],
        "user": dict(metadata or {}),
    })


def _differences(stored: dict, current: dict) -> list[str]:
    out = []
    for k in sorted(set(stored) | set(current)):
        a, b = stored.get(k), current.get(k)
        if k == "hparams" and a is not None and b is not None:
            same = a.get("structure") == b.get("structure") and len(a["values"]) == len(
                b["values"]) and all(
                np.shape(x) == np.shape(y) and np.allclose(x, y, rtol=1e-6, atol=0.0,
                                                           equal_nan=True)
                for x, y in zip(a["values"], b["values"]))
            if not same:
                out.append("hparams differ")
        elif k == "user":
            out.extend(_diff_tree(a, b, "metadata"))
        elif a != b:
            out.append(f"{k}: stored {_short(a)}, now {_short(b)}")
    return out


def _diff_tree(a: Any, b: Any, where: str) -> list[str]:
    if isinstance(a, dict) and isinstance(b, dict):
        out = []
        for k in sorted(set(a) | set(b)):
            out.extend(_diff_tree(a.get(k), b.get(k), f"{where}[{k!r}]"))
        return out
    return [] if a == b else [f"{where}: stored {_short(a)}, now {_short(b)}"]


def _short(x: Any, n: int = 120) -> str:
    s = repr(x)
    return s if len(s) <= n else s[:n] + "..."


def _write_json_atomic(path: str, obj: dict) -> None:
    tmp = f"{path}.tmp-{os.getpid()}"
    with open(tmp, "w", encoding="utf-8") as fh:
        json.dump(obj, fh, indent=1, sort_keys=True)
        fh.flush()
        os.fsync(fh.fileno())
    os.replace(tmp, path)


# ----------------------------------------------------------------------------- progress
_PREFERRED = ("episode_return", "eval_return", "return", "total_loss", "policy_loss",
              "critic_loss", "value_loss", "actor_loss", "alpha", "entropy", "approx_kl")


def _default_metrics(chunk_index: int, outputs: Mapping[str, Any]) -> str:
    """Seed means of the last value in the chunk of up to four well-known metrics."""
    del chunk_index
    if not isinstance(outputs, Mapping):
        return ""
    names = [k for k in _PREFERRED if k in outputs][:4]
    parts = []
    for k in names:
        v = np.asarray(outputs[k], np.float64)
        if v.ndim >= 2:  # [S, per-chunk...]: last entry of the chunk
            v = v.reshape(v.shape[0], -1)[:, -1]
        with np.errstate(all="ignore"):
            m = float(np.nanmean(v)) if v.size and not np.all(np.isnan(v)) else float("nan")
        parts.append(f"{k} {m:.4g}")
    return " ".join(parts)


def _fmt_time(s: float) -> str:
    if not math.isfinite(s):
        return "?"
    s = int(round(s))
    h, rem = divmod(s, 3600)
    m, sec = divmod(rem, 60)
    return f"{h}:{m:02d}:{sec:02d}" if h else f"{m:02d}:{sec:02d}"


class _Progress:
    def __init__(self, progress: Any, num_chunks: int, start_chunk: int) -> None:
        self.enabled = progress is not False and progress is not None
        self.fmt = progress if callable(progress) else _default_metrics
        self.n = num_chunks
        self.start_chunk = start_chunk
        self.t0 = time.perf_counter()
        self.t_first = None  # time after the first chunk of this process (compile included)
        self.tty = hasattr(sys.stderr, "isatty") and sys.stderr.isatty()

    def update(self, chunk_index: int, outputs: Any) -> None:
        if not self.enabled:
            return
        now = time.perf_counter()
        done = chunk_index + 1
        elapsed = now - self.t0
        ran = done - self.start_chunk
        if self.t_first is None:
            self.t_first = now
            eta = elapsed * (self.n - done) / max(ran, 1)
        else:  # rate after the first chunk (which included compilation)
            eta = (now - self.t_first) / max(ran - 1, 1) * (self.n - done)
        width = 20
        filled = int(width * done / self.n)
        bar = "#" * filled + "." * (width - filled)
        try:
            metrics = self.fmt(chunk_index, outputs)
        except Exception as e:  # noqa: BLE001 - a formatter bug must not kill a long run
            metrics = f"(progress formatter failed: {type(e).__name__}: {e})"
        line = (f"[{bar}] chunk {done}/{self.n} elapsed {_fmt_time(elapsed)} "
                f"eta {_fmt_time(eta)}" + (f" | {metrics}" if metrics else ""))
        if self.tty:
            end = "\n" if done == self.n else ""
            sys.stderr.write("\r\033[K" + line + end)
        else:
            sys.stderr.write(line + "\n")
        sys.stderr.flush()


# ----------------------------------------------------------------------------- driver
def _check_inputs(keys: Any, hparams: Any) -> int:
    if not hasattr(keys, "shape") or len(keys.shape) < 1:
        raise ValueError("keys must be an array of PRNG keys with a leading seed axis [S], got "
                         f"{getattr(keys, 'shape', type(keys))}")
    if jnp.issubdtype(keys.dtype, jax.dtypes.prng_key) and keys.ndim != 1:
        raise ValueError(f"keys must be a 1-d array of typed PRNG keys [S], got {keys.shape}")
    s = int(keys.shape[0])
    if s < 1:
        raise ValueError("keys must hold at least one key")
    for path, leaf in jax.tree_util.tree_leaves_with_path(hparams):
        shape = jnp.shape(leaf)
        if len(shape) < 1 or shape[0] != s:
            raise ValueError(
                f"hparams leaf {jax.tree_util.keystr(path)} has shape {shape}; every leaf needs "
                f"the leading seed axis S={s} of keys (use loop.broadcast_hparams(hp, {s}))")
    return s


def run(
    runner: Runner,
    keys: jax.Array,
    hparams: Any,
    *,
    checkpoint_dir: str | os.PathLike | None = None,
    save_every: int = 1,
    keep: int | None = 3,
    resume: bool = False,
    progress: bool | Callable[[int, Mapping[str, Any]], str] = True,
    on_chunk: Callable[[int, Any], None] | None = None,
    metadata: Mapping[str, Any] | None = None,
    seeds_per_batch: int | None = None,
    mesh: Any = None,
) -> tuple[Any, Any]:
    """Run ``runner`` for ``S`` seeds chunk by chunk: progress, callbacks, checkpoints, resume.

    Executes ``carry = jit(vmap(init))(keys, hparams)`` then, for ``i = 0..num_chunks-1``,
    ``carry, out_i = jit(vmap(run_chunk, in_axes=(0, 0, None)))(carry, hparams, int32(i))``.
    The result equals ``jit(vmap(scan_chunks(runner)))`` up to XLA's compilation differences
    (in our tests bitwise for PPO; see ``tests/training/test_loop.py``).

    Args:
      runner: :class:`Runner` (e.g. from ``jaxstab.training.ppo.make_runner``).
      keys: ``[S]`` typed PRNG keys (one per seed; ``[S, 2]`` uint32 raw keys also work).
      hparams: the trainer's hyperparameters with a leading seed axis ``[S]`` on every leaf
        (:func:`broadcast_hparams` turns one setting into that).
      checkpoint_dir: directory for orbax checkpoints (None: no checkpoints, no resume).
      save_every: save after every ``save_every``-th chunk (int >= 1); the last chunk is
        always saved.
      keep: number of most recent checkpoints kept (None keeps all).
      resume: continue from the latest complete checkpoint in ``checkpoint_dir`` (starting
        fresh if there is none; a finished run is returned without running anything). Without
        ``resume`` the directory must not already hold checkpoints.
      progress: True prints one progress line per chunk to stderr (rewritten in place on a
        terminal): chunk i/N, elapsed, ETA (from the chunks after the first, which includes
        compilation) and live metrics (seed mean of the last value in the chunk of up to four
        of ``episode_return``, ``eval_return``, losses...); a callable
        ``progress(chunk_index, outputs) -> str`` replaces the metrics text; False is silent.
      on_chunk: called as ``on_chunk(chunk_index, outputs)`` after each chunk with the chunk's
        outputs as host NumPy arrays ``[S, ...]`` (before the chunk's checkpoint is written).
      metadata: JSON-able description of the run (e.g. the config dataclass), stored in the
        checkpoint directory and compared on resume.
      seeds_per_batch: ``None`` vmaps ``run_chunk`` over all seeds; an int runs the seeds in
        groups of that size (:func:`map_seeds`; faster for small networks on a CPU). Not part
        of the run's identity: a run may be resumed with another value.
      mesh: a ``jax.sharding.Mesh`` (e.g. ``jaxstab.distributed.default_mesh()`` after
        ``jaxstab.distributed.use_cpu_devices()``): the chunks run with the seeds split over its
        first axis, one block per device (``S`` must be a multiple of that axis' size);
        checkpoints hold the carry as host arrays (the shards gathered), so a run may be
        resumed with or without a mesh. None: one device.

    Returns:
      ``(carry, stacked_outputs)``: the final carry (device arrays ``[S, ...]``) and every
      chunk's outputs stacked on a chunk axis after the seed axis, host NumPy arrays
      ``[S, num_chunks, ...]``; :func:`finalize` turns them into ``train``'s results.

    Raises:
      TypeError: if ``runner`` is not a :class:`Runner`.
      ValueError: for keys / hparams without a matching seed axis, bad ``save_every`` /
        ``keep``, or resuming into a directory that holds a different run (different number
        of seeds or chunks, keys, hparams, carry shapes, or ``metadata``).
      FileExistsError: if ``checkpoint_dir`` already holds checkpoints and ``resume`` is False.
    """
    _check_runner(runner)
    if isinstance(save_every, bool) or not isinstance(save_every, int) or save_every < 1:
        raise ValueError(f"save_every must be an int >= 1, got {save_every!r}")
    if keep is not None and (isinstance(keep, bool) or not isinstance(keep, int) or keep < 1):
        raise ValueError(f"keep must be None or an int >= 1, got {keep!r}")
    if on_chunk is not None and not callable(on_chunk):
        raise TypeError(f"on_chunk must be callable or None, got {type(on_chunk)}")
    if not (isinstance(progress, bool) or callable(progress)):
        raise TypeError(f"progress must be a bool or a callable, got {type(progress)}")
    _check_inputs(keys, hparams)
    n = runner.num_chunks
    _check_seeds_per_batch(seeds_per_batch)
    if mesh is not None:
        if not hasattr(mesh, "axis_names") or not hasattr(mesh, "shape"):
            raise TypeError(f"mesh must be a jax.sharding.Mesh or None, got {type(mesh)}")
        width = int(mesh.shape[mesh.axis_names[0]])
        num_seeds = int(jax.tree_util.tree_leaves(keys)[0].shape[0])
        if num_seeds % width:
            raise ValueError(f"the number of seeds ({num_seeds}) must be a multiple of the "
                             f"{width} devices on the mesh axis {mesh.axis_names[0]!r}")
    init_fn, chunk_fn, _ = _compiled(runner, seeds_per_batch, mesh)

    carry_spec, chunk_spec = _specs(runner, _aval_key(keys), _aval_key(hparams))
    # full-size host buffer [S, num_chunks, ...] (constant checkpoint structure)
    buffer = jax.tree_util.tree_map(
        lambda x: np.zeros((x.shape[0], n) + tuple(x.shape[1:]), x.dtype), chunk_spec)

    ckpt = None
    start = 0
    carry = None
    try:
        if checkpoint_dir is not None:
            from jaxstab.checkpoint import Checkpointer

            directory = os.path.abspath(os.fspath(checkpoint_dir))
            desc = _run_description(runner, keys, hparams, carry_spec, metadata)
            run_file = os.path.join(directory, RUN_FILE)
            ckpt = Checkpointer(directory, max_to_keep=keep)
            if ckpt.latest_step() is not None:
                if not resume:
                    raise FileExistsError(
                        f"checkpoint_dir {directory} already holds checkpoints (steps "
                        f"{ckpt.all_steps()}); pass resume=True to continue that run or use a "
                        "new directory")
                if not os.path.isfile(run_file):
                    raise ValueError(f"checkpoint_dir {directory} holds checkpoints but no "
                                     f"{RUN_FILE}: not a directory written by loop.run")
                with open(run_file, encoding="utf-8") as fh:
                    stored = json.load(fh)
                diffs = _differences(stored, desc)
                if diffs:
                    raise ValueError(
                        f"checkpoint_dir {directory} holds a different run; resume needs the "
                        "same runner, seeds, hparams and metadata. Differences: "
                        + "; ".join(diffs))
                target = {"carry": carry_spec, "outputs": buffer}
                restored = ckpt.restore(target)
                start = int(restored.step)
                if not 1 <= start <= n:
                    raise ValueError(f"checkpoint step {start} is outside 1..{n}")
                carry = restored.state["carry"]
                buffer = jax.tree_util.tree_map(np.array, restored.state["outputs"])
            else:
                _write_json_atomic(run_file, desc)

        if carry is None:
            carry = init_fn(keys, hparams)
        bar = _Progress(progress, n, start)

        def collect(i: int, out: Any) -> None:
            out = jax.device_get(out)
            jax.tree_util.tree_map(lambda b, o: b.__setitem__((slice(None), i), o), buffer, out)
            bar.update(i, out)
            if on_chunk is not None:
                on_chunk(i, out)

        # Pipelined: chunk i+1 is dispatched (asynchronously) before chunk i's outputs are
        # fetched to the host, so progress, callbacks and copies overlap the computation.
        pending = None
        for i in range(start, n):
            carry, out = chunk_fn(carry, hparams, jnp.asarray(i, jnp.int32))
            if pending is not None:
                collect(*pending)
            pending = (i, out)
            if ckpt is not None and ((i + 1) % save_every == 0 or i + 1 == n):
                collect(*pending)
                pending = None
                # a carry sharded over a mesh is saved as is: the checkpointer copies every
                # leaf to one host array (np.asarray gathers the shards), so the checkpoint is
                # the same with or without a mesh and no device-side gather is needed
                ckpt.save(i + 1, {"carry": carry, "outputs": buffer},
                          metadata={"loop": _FORMAT, "chunks_done": i + 1, "num_chunks": n},
                          force=True)
        if pending is not None:
            collect(*pending)
    finally:
        if ckpt is not None:
            ckpt.close()
    return carry, buffer
