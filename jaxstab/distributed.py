"""Scale-out on JAX's own SPMD engine: seed/hyperparameter sweeps over every device, every host.

A jaxstab training function ``train(key, hparams)`` is pure and has no cross-seed reductions, so
a sweep over ``S`` seeds is ``jax.vmap(train)`` over a leading axis. :func:`sweep` splits that
axis into ``D`` equal blocks, one per device of a 1-D :class:`jax.sharding.Mesh` (all devices by
default, including other processes' devices after :func:`initialize`), and runs, on each device,

    outputs[d * S/D : (d + 1) * S/D] = vmap(train)(keys[d * S/D : (d + 1) * S/D], hparams[...])

with :func:`jax.shard_map` inside :func:`jax.jit`. The result is a pytree of global
:class:`jax.Array` s with leading axis ``S``, sharded along the mesh axis (``NamedSharding(mesh,
P(axis_name))``); :func:`to_host` fetches them as NumPy arrays on every process.

Why ``shard_map`` and not ``jit`` with ``in_shardings``/``out_shardings`` alone: with shard_map the
per-device program *is* ``vmap(train)`` over the local block, by construction, with no
collective anywhere (the sweep needs none). With plain ``jit`` the partitioner (GSPMD/Shardy)
propagates the seed sharding through every ``scan``, ``cond`` and gather of the training loop
and may choose to replicate or reshard an intermediate; that is correct but costs communication
we cannot rule out by inspection, and it is what the equality tests below would then depend on.

Equality with the unsharded run: each seed's computation is the same sequence of operations in
both programs (vmap adds a batch dimension, never mixes seeds), so results agree seed by seed.
They are not guaranteed to be bitwise identical, because XLA compiles the per-device program for
a batch of ``S/D`` seeds, while the unsharded program has a batch of ``S``; a different batch
size can change fusion, vectorization and the blocking of batched matrix products, hence the
order of floating-point additions inside a seed. ``tests/test_distributed.py`` measures which
case holds for PPO and SAC on this platform (see ``docs/distributed.md``).

Multi-host: call :func:`initialize` (a thin wrapper over :func:`jax.distributed.initialize`)
first in every process, then call :func:`sweep` with the *same* arguments in every process
(SPMD: every process runs the same program). Each process computes only its own devices'
blocks; :func:`to_host` gathers the full result to every process.
"""

from __future__ import annotations

import functools
import os
from typing import Any, Callable, NamedTuple, Sequence

import jax
import numpy as np
from jax.sharding import Mesh, NamedSharding
from jax.sharding import PartitionSpec as P

__all__ = [
    "DistributedInfo",
    "default_mesh",
    "initialize",
    "is_main_process",
    "use_cpu_devices",
    "sweep",
    "to_host",
]

ENV_COORDINATOR = "JAXSTAB_COORDINATOR_ADDRESS"
ENV_NUM_PROCESSES = "JAXSTAB_NUM_PROCESSES"
ENV_PROCESS_ID = "JAXSTAB_PROCESS_ID"
ENV_LOCAL_DEVICE_COUNT = "JAXSTAB_LOCAL_DEVICE_COUNT"


class DistributedInfo(NamedTuple):
    """What :func:`initialize` set up.

    Attributes:
      process_index: this process's id, ``0 <= process_index < process_count``.
      process_count: number of processes.
      local_device_count: devices owned by this process.
      device_count: devices of all processes together.
      platform: backend platform of the devices (``"cpu"``, ``"gpu"``, ``"tpu"``).
    """

    process_index: int
    process_count: int
    local_device_count: int
    device_count: int
    platform: str


def _env_int(name: str) -> int | None:
    raw = os.environ.get(name)
    if raw is None or raw.strip() == "":
        return None
    try:
        return int(raw)
    except ValueError:
        raise ValueError(f"environment variable {name} must be an integer, got {raw!r}") from None


def initialize(
    coordinator_address: str | None = None,
    num_processes: int | None = None,
    process_id: int | None = None,
    local_device_count: int | None = None,
    *,
    local_device_ids: int | Sequence[int] | None = None,
    initialization_timeout: int = 300,
) -> DistributedInfo:
    """Join a multi-process JAX run (a thin wrapper over :func:`jax.distributed.initialize`).

    Call it once per process, before any JAX computation, in every process of the run. Each
    argument left ``None`` is read from the environment:

    ================== ==================================================================
    argument           environment variable
    ================== ==================================================================
    coordinator_address ``JAXSTAB_COORDINATOR_ADDRESS`` (then JAX's ``JAX_COORDINATOR_ADDRESS``)
    num_processes      ``JAXSTAB_NUM_PROCESSES``
    process_id         ``JAXSTAB_PROCESS_ID``
    local_device_count ``JAXSTAB_LOCAL_DEVICE_COUNT`` (CPU only)
    ================== ==================================================================

    If none of the first three is set anywhere, JAX's own cluster auto-detection runs (Slurm,
    Open MPI, Cloud TPU, Kubernetes). If only some are set, a ValueError names the missing ones.

    CPU: cross-process collectives use JAX's default CPU implementation in jax 0.10.2, gloo over
    TCP (``jax_cpu_collectives_implementation``, default ``"gloo"``); nothing needs to be set.
    ``local_device_count`` sets ``jax_num_cpu_devices`` (the same as
    ``XLA_FLAGS=--xla_force_host_platform_device_count=N``) so one process can own several CPU
    devices; it must be applied before the backend starts, so call this function first.
    On GPUs use ``local_device_ids`` (passed through to JAX) instead.

    Args:
      coordinator_address: ``"host:port"`` of process 0's coordinator service (every process
        passes the same address; process 0 binds the port).
      num_processes: total number of processes, >= 1.
      process_id: this process's id in ``[0, num_processes)``.
      local_device_count: number of CPU devices this process owns (CPU backend only).
      local_device_ids: devices visible to this process (GPU/TPU), passed to JAX.
      initialization_timeout: seconds to wait for all processes to connect.

    Returns:
      :class:`DistributedInfo` of the joined run.

    Raises:
      ValueError: on a partial or inconsistent configuration (naming the argument), or an
        environment variable that is not an integer.
      RuntimeError: if JAX's backend was already initialized (devices already created), or the
        distributed system was already initialized.

    Example:
      >>> # process 0 and process 1 of a two-process run on one machine (see docs/distributed.md)
      >>> info = initialize("localhost:12355", num_processes=2, process_id=0,
      ...                   local_device_count=4)                       # doctest: +SKIP
      >>> info.device_count                                              # doctest: +SKIP
      8
    """
    if jax.distributed.is_initialized():
        raise RuntimeError("jax.distributed is already initialized in this process")
    if coordinator_address is None:
        coordinator_address = (os.environ.get(ENV_COORDINATOR)
                               or os.environ.get("JAX_COORDINATOR_ADDRESS"))
    if num_processes is None:
        num_processes = _env_int(ENV_NUM_PROCESSES)
    if process_id is None:
        process_id = _env_int(ENV_PROCESS_ID)
    if local_device_count is None:
        local_device_count = _env_int(ENV_LOCAL_DEVICE_COUNT)

    given = {"coordinator_address": coordinator_address, "num_processes": num_processes,
             "process_id": process_id}
    missing = [k for k, v in given.items() if v is None]
    if 0 < len(missing) < 3 and not os.environ.get("SLURM_JOB_ID") \
            and not os.environ.get("OMPI_MCA_orte_hnp_uri"):
        raise ValueError(
            f"distributed configuration is incomplete: {', '.join(missing)} not given (pass them "
            f"or set {ENV_COORDINATOR}, {ENV_NUM_PROCESSES}, {ENV_PROCESS_ID})")
    if num_processes is not None and (not isinstance(num_processes, int) or num_processes < 1):
        raise ValueError(f"num_processes must be a positive int, got {num_processes!r}")
    if process_id is not None and num_processes is not None and (
            not isinstance(process_id, int) or not 0 <= process_id < num_processes):
        raise ValueError(f"process_id must be an int in [0, num_processes={num_processes}), "
                         f"got {process_id!r}")
    if local_device_count is not None:
        if not isinstance(local_device_count, int) or local_device_count < 1:
            raise ValueError(f"local_device_count must be a positive int, got "
                             f"{local_device_count!r}")
        try:
            jax.config.update("jax_num_cpu_devices", local_device_count)
        except Exception as err:  # the validator refuses once a backend exists
            raise RuntimeError(
                "local_device_count must be set before JAX creates its backend: call "
                "jaxstab.distributed.initialize before any JAX computation") from err

    jax.distributed.initialize(
        coordinator_address=coordinator_address, num_processes=num_processes,
        process_id=process_id, local_device_ids=local_device_ids,
        initialization_timeout=initialization_timeout)
    devices = jax.devices()
    return DistributedInfo(jax.process_index(), jax.process_count(), jax.local_device_count(),
                           len(devices), devices[0].platform)


def use_cpu_devices(n: int | None = None) -> int:
    """Split this process's CPU into ``n`` JAX devices (default: one per core), before JAX starts.

    A training program is made of many small operations, and one JAX CPU device does not use a
    multi-core CPU well for it, however many seeds it vmaps (PPO CartPole, 16 seeds, 2 cores:
    1.44 cores busy on average on one device, 1.99 on two, which ran 3.1x faster). With one
    device per core, :func:`sweep` runs a per-device program on every core. Measured
    on a 2-core Intel Xeon (``benchmarks/results/bench_peers_*_cpu.md``): PPO CartPole 16 seeds
    and SAC Pendulum 8 seeds ran about 2.4x faster split over 2 devices than vmapped on one.

    Sets ``jax_num_cpu_devices`` (like ``XLA_FLAGS=--xla_force_host_platform_device_count=n``).
    Only the CPU backend is affected. Call it before anything starts JAX's backend, which
    includes ``import gymnax`` (it creates arrays at import).

    Args:
      n: number of CPU devices, a positive int; ``None`` = ``os.cpu_count()``.

    Returns:
      The number of CPU devices set.

    Raises:
      ValueError: ``n`` is not a positive int.
      RuntimeError: JAX's backend already exists (the setting could no longer take effect).

    Example:
      >>> import jaxstab.distributed as dist
      >>> dist.use_cpu_devices(2)                      # doctest: +SKIP
      >>> import gymnax                                # only now
    """
    if n is None:
        n = os.cpu_count() or 1
    if not isinstance(n, int) or isinstance(n, bool) or n < 1:
        raise ValueError(f"n must be a positive int (number of CPU devices), got {n!r}")
    from jaxstab._platform import _backend_already_initialized

    if _backend_already_initialized():
        have = len(jax.devices("cpu"))
        if have != n:
            raise RuntimeError(
                "use_cpu_devices must run before JAX starts its backend (before any JAX "
                "computation and before `import gymnax`, which creates arrays at import); it is "
                f"running already with {have} CPU device(s), not {n}")
        return n
    jax.config.update("jax_num_cpu_devices", n)
    return n


def is_main_process() -> bool:
    """True in process 0 (the process that should write results and print), else False."""
    return jax.process_index() == 0


def default_mesh(axis_name: str = "seeds", devices: Sequence[Any] | None = None) -> Mesh:
    """A 1-D mesh over ``devices`` (default ``jax.devices()``: every device of every process).

    Args:
      axis_name: name of the mesh axis the seeds are split along.
      devices: devices to use, in order.

    Returns:
      :class:`jax.sharding.Mesh` of shape ``(len(devices),)``.

    Example:
      >>> default_mesh().shape        # doctest: +SKIP
      OrderedDict([('seeds', 8)])
    """
    devs = jax.devices() if devices is None else list(devices)
    if not devs:
        raise ValueError("devices must not be empty")
    return Mesh(np.asarray(devs, dtype=object), (axis_name,))


def _global_array(x: Any, sharding: NamedSharding) -> jax.Array:
    """Place host data that every process holds in full as a global array with ``sharding``."""
    if isinstance(x, jax.Array) and not x.is_fully_addressable:
        return x  # already a global array (e.g. the output of an earlier sweep)
    host = np.asarray(x)
    return jax.make_array_from_callback(host.shape, sharding, lambda idx: host[idx])


@functools.lru_cache(maxsize=64)
def _compiled_sweep(train_fn: Callable[..., Any], mesh: Mesh, axis_name: str,
                    hp_treedef: Any, hp_batched: tuple[bool, ...], key_impl: Any,
                    has_hparams: bool) -> Callable[..., Any]:
    """jit(shard_map(vmap(train_fn))) for one (function, mesh, hparams layout); cached."""
    seeds = P(axis_name)

    def per_device(key_data: jax.Array, hp_leaves: list[jax.Array]) -> Any:
        keys = key_data if key_impl is None else jax.random.wrap_key_data(key_data, impl=key_impl)
        if not has_hparams:
            return jax.vmap(train_fn)(keys)
        in_axes = jax.tree_util.tree_unflatten(hp_treedef,
                                               [0 if b else None for b in hp_batched])
        hparams = jax.tree_util.tree_unflatten(hp_treedef, hp_leaves)
        return jax.vmap(train_fn, in_axes=(0, in_axes))(keys, hparams)

    hp_specs = [seeds if b else P() for b in hp_batched]
    # check_vma=False: training loops start scans from constants (not "varying" over the mesh
    # axis) and carry per-seed data; the program has no collectives, so the check buys nothing.
    mapped = jax.shard_map(per_device, mesh=mesh, in_specs=(seeds, hp_specs), out_specs=seeds,
                           check_vma=False)
    return jax.jit(mapped)


def _pad_rows(x: np.ndarray, total: int) -> np.ndarray:
    extra = total - x.shape[0]
    if extra == 0:
        return x
    return np.concatenate([x, np.repeat(x[-1:], extra, axis=0)], axis=0)


def sweep(
    train_fn: Callable[..., Any],
    keys: Any,
    hparams: Any = None,
    *,
    mesh: Mesh | None = None,
    axis_name: str = "seeds",
    pad: bool = False,
) -> Any:
    """Run ``jax.vmap(train_fn)`` over ``S`` seeds, split evenly over the devices of ``mesh``.

    ``outputs[i] = train_fn(keys[i], hparams[i])`` for ``i < S`` (``hparams[i]`` takes row ``i`` of
    each per-seed leaf and the whole of each shared leaf). Device ``d`` of the mesh axis computes
    rows ``d * S/D .. (d + 1) * S/D - 1`` as one vmapped program (``jax.shard_map`` inside
    ``jax.jit``); no data moves between devices during training.

    Hyperparameter leaves: a 0-d leaf is shared by every seed (broadcast, replicated on every
    device); a leaf whose leading axis has length ``S`` is per seed (sharded with the keys). Any
    other shape is ambiguous and raises; broadcast non-scalar shared values yourself.

    Uneven sweeps: ``S`` must be a multiple of the number of devices ``D`` on the mesh axis;
    otherwise a ValueError, unless ``pad=True``, which appends ``ceil(S/D) * D - S`` copies of the
    last seed (its key and its hyperparameters), runs them, and strips them from the outputs
    (the padded seeds cost compute like real ones).

    Multi-host: call with identical arguments in every process after :func:`initialize`; the
    outputs are global arrays of which each process holds its own devices' rows; use
    :func:`to_host` to fetch the whole result.

    Args:
      train_fn: pure ``train(key, hparams) -> outputs`` (or ``train(key)`` when ``hparams`` is
        None), jit- and vmap-able; e.g. ``jaxstab.training.ppo.make_train(...)``. Cached by
        identity: reuse the same function object to avoid recompiling.
      keys: ``[S]`` typed PRNG keys (``jax.random.key``) or ``[S, 2]`` uint32 raw keys, the same
        in every process.
      hparams: pytree (e.g. ``PPOHParams``) of 0-d (shared) or ``[S, ...]`` (per-seed) leaves, or
        None.
      mesh: device mesh containing ``axis_name`` (default :func:`default_mesh`, all devices).
        Other axes of a multi-axis mesh replicate the computation.
      axis_name: mesh axis to split the seeds along.
      pad: pad an uneven ``S`` with copies of the last seed instead of raising.

    Returns:
      The outputs of ``train_fn`` with a leading axis ``S`` on every leaf, as global
      :class:`jax.Array` s sharded along ``axis_name`` (with ``pad=True`` and uneven ``S``, the
      padded rows are sliced off, so the slice's layout is chosen by XLA).

    Raises:
      ValueError: if ``keys`` has no leading seed axis or S = 0; if a hyperparameter leaf's shape
        is neither 0-d nor ``[S, ...]``; if ``S`` is not a multiple of the device count and
        ``pad`` is False; if ``axis_name`` is not an axis of ``mesh``.
      TypeError: if ``train_fn`` is not callable.

    Example:
      >>> env, env_params = gymnax.make("CartPole-v1")
      >>> train = make_train(PPOConfig(total_timesteps=100_000), env, env_params)
      >>> keys = jax.random.split(jax.random.key(0), 64)
      >>> state, metrics = sweep(train, keys, ppo_hparams())    # 64 seeds over all devices
      >>> returns = to_host(metrics["episode_return"])          # numpy [64, num_updates]
    """
    if not callable(train_fn):
        raise TypeError(f"train_fn must be callable, got {type(train_fn).__name__}")
    if mesh is None:
        mesh = default_mesh(axis_name)
    if axis_name not in mesh.axis_names:
        raise ValueError(f"axis_name {axis_name!r} is not an axis of mesh (axes "
                         f"{tuple(mesh.axis_names)})")
    num_shards = int(mesh.shape[axis_name])

    # Keys: typed keys travel as their raw uint32 data and are re-wrapped on each device.
    if isinstance(keys, jax.Array) and jax.dtypes.issubdtype(keys.dtype, jax.dtypes.prng_key):
        key_impl = jax.random.key_impl(keys)
        key_data = jax.random.key_data(keys)
        if keys.ndim != 1:
            raise ValueError(f"keys must be a 1-D array of typed keys [S], got shape {keys.shape}")
    else:
        key_impl = None
        key_data = keys
        if np.ndim(key_data) != 2:
            raise ValueError("keys must be [S] typed keys or [S, 2] raw uint32 keys, got shape "
                             f"{np.shape(key_data)}")
    num_seeds = int(np.shape(key_data)[0])
    if num_seeds == 0:
        raise ValueError("keys must hold at least one seed (S >= 1)")

    has_hparams = hparams is not None
    leaves, treedef = jax.tree_util.tree_flatten(hparams if has_hparams else ())
    batched = []
    for path_leaf, leaf in zip(jax.tree_util.tree_flatten_with_path(
            hparams if has_hparams else ())[0], leaves):
        shape = np.shape(leaf)
        if len(shape) == 0:
            batched.append(False)
        elif shape[0] == num_seeds:
            batched.append(True)
        else:
            name = jax.tree_util.keystr(path_leaf[0])
            raise ValueError(
                f"hparams{name} has shape {shape}: expected 0-d (shared by all seeds) or a "
                f"leading seed axis of length S={num_seeds}")

    padded = -(-num_seeds // num_shards) * num_shards
    if padded != num_seeds and not pad:
        raise ValueError(
            f"the number of seeds S={num_seeds} is not a multiple of the {num_shards} devices on "
            f"mesh axis {axis_name!r}: use a multiple of {num_shards} (e.g. {padded}) or pass "
            "pad=True to pad with copies of the last seed (stripped from the outputs)")

    seed_sharding = NamedSharding(mesh, P(axis_name))
    replicated = NamedSharding(mesh, P())

    def prepare(x: Any, is_batched: bool) -> jax.Array:
        if isinstance(x, jax.Array) and not x.is_fully_addressable:
            if padded != num_seeds and is_batched:
                raise ValueError("pad=True needs host-addressable inputs (not global arrays)")
            return x
        host = np.asarray(x)
        if is_batched:
            return _global_array(_pad_rows(host, padded), seed_sharding)
        return _global_array(host, replicated)

    key_arr = prepare(key_data, True)
    hp_arrs = [prepare(leaf, b) for leaf, b in zip(leaves, batched)]
    fn = _compiled_sweep(train_fn, mesh, axis_name, treedef, tuple(batched), key_impl,
                         has_hparams)
    out = fn(key_arr, hp_arrs)
    if padded != num_seeds:
        out = jax.tree_util.tree_map(lambda x: x[:num_seeds], out)
    return out


def to_host(tree: Any) -> Any:
    """Fetch a pytree of (possibly multi-process) arrays to NumPy on every process.

    Fully addressable arrays (single process) are copied with ``np.asarray``. Global arrays that
    span other processes are gathered with
    :func:`jax.experimental.multihost_utils.process_allgather` (a collective: every process must
    call ``to_host`` on the same tree). Typed PRNG key leaves are returned as their uint32 key
    data.

    Args:
      tree: pytree of :class:`jax.Array` (e.g. the outputs of :func:`sweep`).

    Returns:
      The same pytree with ``numpy.ndarray`` leaves of the global shapes.

    Example:
      >>> returns = to_host(metrics["episode_return"])   # doctest: +SKIP
    """
    from jax.experimental import multihost_utils

    def fetch(x: Any) -> Any:
        if isinstance(x, jax.Array) and jax.dtypes.issubdtype(x.dtype, jax.dtypes.prng_key):
            x = jax.random.key_data(x)
        if isinstance(x, jax.Array) and not x.is_fully_addressable:
            return np.asarray(multihost_utils.process_allgather(x, tiled=True))
        return np.asarray(x)

    return jax.tree_util.tree_map(fetch, tree)
