"""Worker processes for tests/test_distributed.py (not a test module).

Two modes, each run in a fresh interpreter because the CPU device count must be fixed before JAX
creates its backend:

``devices --out F.npz [--algos ppo sac]`` (with ``XLA_FLAGS=--xla_force_host_platform_device_count=8``):
  single process, 8 CPU devices. Trains the tiny PPO (CartPole) and SAC (Pendulum) sweeps both
  unsharded (``jax.jit(jax.vmap(train))`` on one device) and with :func:`jaxstab.distributed.sweep`
  (8 and 16 seeds over 8 devices; PPO also 11 seeds with ``pad=True``) and saves every output
  leaf, plus the message of the uneven-seed ValueError, to ``F.npz`` for the test to compare.

``multiprocess --coordinator HOST:PORT --process-id I --num-processes N --local-devices K
  --out F.npz``:
  one process of an N-process run (jax.distributed, gloo CPU collectives), each with K CPU
  devices. All processes train the same sharded PPO sweep of ``8`` seeds; process 0 gathers the
  result with :func:`jaxstab.distributed.to_host` and writes ``F.npz``.

The tiny configurations and the seeds/hyperparameters are defined here once (``ppo_setup``,
``sac_setup``) so both modes train exactly the same sweeps. Progress lines go to stdout, flushed.
"""

from __future__ import annotations

import argparse
import os
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

import jaxstab  # noqa: E402,F401  (CPU guard before JAX starts)

import jax  # noqa: E402
import jax.numpy as jnp  # noqa: E402
import numpy as np  # noqa: E402

from jaxstab import distributed as dist  # noqa: E402

NUM_SEEDS = 16


def log(msg: str) -> None:
    print(f"[{time.strftime('%H:%M:%S')} pid {os.getpid()}] {msg}", flush=True)


def ppo_setup():
    """Tiny CartPole PPO: train function, 16 keys, per-seed learning rates."""
    import gymnax

    from jaxstab.agents.ppo import PPOConfig, ppo_hparams
    from jaxstab.training.ppo import make_train

    env, env_params = gymnax.make("CartPole-v1")
    cfg = PPOConfig(num_envs=4, num_steps=16, num_epochs=2, num_minibatches=2,
                    total_timesteps=4 * 16 * 3, hidden_sizes=(16, 16))
    train = make_train(cfg, env, env_params)
    keys = jax.random.split(jax.random.key(0), NUM_SEEDS)
    # per-seed learning rate: exercises sharded hyperparameter leaves (others are shared 0-d)
    hp = ppo_hparams()._replace(lr=jnp.linspace(1e-3, 3e-3, NUM_SEEDS, dtype=jnp.float32))
    return train, keys, hp


def sac_setup():
    """Tiny Pendulum SAC: train function, 16 keys, shared (0-d) hyperparameters."""
    import gymnax

    from jaxstab.agents.sac import SACConfig, default_hparams
    from jaxstab.training.sac import make_train

    env, env_params = gymnax.make("Pendulum-v1")
    cfg = SACConfig(hidden_sizes=(16,), batch_size=32, buffer_size=256, warmup_steps=64,
                    total_steps=128, eval_interval=64, eval_episodes=2, num_envs=4)
    train = make_train(cfg, env, env_params)
    keys = jax.random.split(jax.random.key(1), NUM_SEEDS)
    hp = default_hparams(cfg, 1, actor_lr=1e-3, critic_lr=1e-3, alpha_lr=1e-3)
    return train, keys, hp


def _in_axes(hp):
    return jax.tree_util.tree_map(lambda x: 0 if np.ndim(x) else None, hp)


def _rows(hp, n):
    return jax.tree_util.tree_map(lambda x: x[:n] if np.ndim(x) else x, hp)


def _store(out: dict, prefix: str, tree) -> None:
    for path, leaf in jax.tree_util.tree_flatten_with_path(dist.to_host(tree))[0]:
        out[prefix + jax.tree_util.keystr(path)] = np.asarray(leaf)


def run_devices(out_path: str, algos: list[str]) -> None:
    devices = jax.devices()
    log(f"devices: {len(devices)} x {devices[0].platform}")
    if len(devices) != 8:
        raise SystemExit(f"expected 8 forced CPU devices, got {len(devices)} (XLA_FLAGS="
                         f"{os.environ.get('XLA_FLAGS')!r})")
    out: dict[str, np.ndarray] = {}
    for name in algos:
        setup = {"ppo": ppo_setup, "sac": sac_setup}[name]
        train, keys, hp = setup()
        t0 = time.perf_counter()
        with jax.default_device(devices[0]):
            ref = jax.jit(jax.vmap(train, in_axes=(0, _in_axes(hp))))(keys, hp)
            ref = jax.block_until_ready(ref)
        log(f"{name}: unsharded reference ({NUM_SEEDS} seeds, 1 device) "
            f"{time.perf_counter() - t0:.1f}s")
        _store(out, f"{name}/ref", ref)
        for s in (8, 16):
            t0 = time.perf_counter()
            res = jax.block_until_ready(dist.sweep(train, keys[:s], _rows(hp, s)))
            shardings = {str(x.sharding.spec) for x in jax.tree_util.tree_leaves(res)}
            ndev = {len(x.sharding.device_set) for x in jax.tree_util.tree_leaves(res)}
            log(f"{name}: sharded {s} seeds over 8 devices {time.perf_counter() - t0:.1f}s "
                f"(specs {shardings}, devices per leaf {ndev})")
            out[f"{name}/devices_per_leaf_{s}"] = np.asarray(sorted(ndev))
            _store(out, f"{name}/sharded{s}", res)
        if name == "ppo":
            try:
                dist.sweep(train, keys[:11], _rows(hp, 11))
            except ValueError as err:
                out["uneven_error"] = np.asarray(str(err))
            t0 = time.perf_counter()
            res = jax.block_until_ready(dist.sweep(train, keys[:11], _rows(hp, 11), pad=True))
            log(f"{name}: padded 11 -> 16 seeds {time.perf_counter() - t0:.1f}s")
            _store(out, f"{name}/padded11", res)
    tmp = out_path + ".tmp.npz"
    np.savez(tmp, **out)
    os.replace(tmp, out_path)
    log("done")


def run_multiprocess(args: argparse.Namespace) -> None:
    info = dist.initialize(args.coordinator, num_processes=args.num_processes,
                           process_id=args.process_id, local_device_count=args.local_devices,
                           initialization_timeout=120)
    log(f"joined: {info}")
    train, keys, hp = ppo_setup()
    t0 = time.perf_counter()
    res = dist.sweep(train, keys[:8], _rows(hp, 8))
    leaves = jax.tree_util.tree_leaves(res)
    local = {len(x.addressable_shards) for x in leaves}
    host = dist.to_host(res)  # collective: every process takes part
    log(f"sharded PPO sweep of 8 seeds over {info.device_count} devices "
        f"{time.perf_counter() - t0:.1f}s (addressable shards per leaf here: {local})")
    if dist.is_main_process():
        out = {}
        _store(out, "ppo/multiprocess8", host)
        out["device_count"] = np.asarray(info.device_count)
        out["process_count"] = np.asarray(info.process_count)
        out["addressable_shards"] = np.asarray(sorted(local))
        tmp = args.out + ".tmp.npz"
        np.savez(tmp, **out)
        os.replace(tmp, args.out)
        log(f"wrote {args.out}")
    jax.distributed.shutdown()
    log("done")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    sub = parser.add_subparsers(dest="mode", required=True)
    p_dev = sub.add_parser("devices")
    p_dev.add_argument("--out", required=True)
    p_dev.add_argument("--algos", nargs="+", choices=["ppo", "sac"], default=["ppo", "sac"])
    p_mp = sub.add_parser("multiprocess")
    p_mp.add_argument("--coordinator", required=True)
    p_mp.add_argument("--process-id", type=int, required=True)
    p_mp.add_argument("--num-processes", type=int, required=True)
    p_mp.add_argument("--local-devices", type=int, required=True)
    p_mp.add_argument("--out", required=True)
    args = parser.parse_args()
    if args.mode == "devices":
        run_devices(args.out, args.algos)
    else:
        run_multiprocess(args)


if __name__ == "__main__":
    main()
