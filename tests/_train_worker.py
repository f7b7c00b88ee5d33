"""Worker for the PPO crash/resume test in tests/training/test_loop.py (not a test module).

Trains a tiny PPO on CartPole-v1 for two seeds through :func:`jaxstab.training.loop.run`
with a checkpoint after every chunk. After each chunk it prints ``chunk <i>`` (flushed) and
sleeps ``--sleep`` seconds (only after chunk ``--pause-at`` when that is given), so a test can
SIGKILL it mid-run. With ``--resume`` it continues from the newest complete checkpoint and
first prints ``start <chunks already done>``. At the end it writes every leaf of the final
carry and of the stacked outputs to ``--out`` (.npz, written under a temporary name and
renamed) and prints ``done``.

Usage: python tests/_train_worker.py --dir D --out F.npz [--sleep 1.0] [--pause-at I] [--resume]
"""

from __future__ import annotations

import argparse
import os
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

import jaxstab  # noqa: E402,F401  (CPU guard before JAX starts)

import gymnax  # noqa: E402
import jax  # noqa: E402
import numpy as np  # noqa: E402

from jaxstab.agents.ppo.ppo import PPOConfig, ppo_hparams  # noqa: E402
from jaxstab.training import loop  # noqa: E402
from jaxstab.training.ppo import make_runner  # noqa: E402

#: the run: 6 updates of 2 envs x 16 steps, one update per chunk, rollback and reward norm on
CFG = PPOConfig(num_envs=2, num_steps=16, num_epochs=2, num_minibatches=2,
                total_timesteps=6 * 32, hidden_sizes=(16,), reward_norm=True, rollback=True)
NUM_SEEDS = 2


def setup():
    """``(runner, keys, hparams)`` of the test run (shared with the test's reference run)."""
    env, env_params = gymnax.make("CartPole-v1")
    runner = make_runner(CFG, env, env_params, updates_per_chunk=1)
    keys = jax.random.split(jax.random.key(2024), NUM_SEEDS)
    hparams = loop.broadcast_hparams(ppo_hparams(lr=1e-3), NUM_SEEDS)
    return runner, keys, hparams


def flat_arrays(carry, outputs) -> dict:
    """Every leaf of ``(carry, outputs)`` as NumPy (PRNG keys as their key data)."""
    out = {}
    for i, x in enumerate(jax.tree_util.tree_leaves((carry, outputs))):
        if hasattr(x, "dtype") and jax.numpy.issubdtype(x.dtype, jax.dtypes.prng_key):
            x = jax.random.key_data(x)
        out[f"leaf{i:04d}"] = np.asarray(x)
    return out


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--dir", required=True)
    ap.add_argument("--out", required=True)
    ap.add_argument("--sleep", type=float, default=1.0)
    ap.add_argument("--pause-at", type=int, default=None,
                    help="sleep only after this chunk (default: after every chunk)")
    ap.add_argument("--resume", action="store_true")
    args = ap.parse_args(argv)

    runner, keys, hparams = setup()
    if args.resume:
        from jaxstab.checkpoint import Checkpointer

        with Checkpointer(args.dir) as ck:
            print(f"start {ck.latest_step() or 0}", flush=True)

    def on_chunk(i, outputs):
        print(f"chunk {i}", flush=True)
        if args.sleep and (args.pause_at is None or i == args.pause_at):
            time.sleep(args.sleep)

    carry, outputs = loop.run(runner, keys, hparams, checkpoint_dir=args.dir, save_every=1,
                              keep=2, resume=args.resume, progress=False, on_chunk=on_chunk,
                              metadata={"cfg": CFG, "num_seeds": NUM_SEEDS})
    tmp = args.out + ".tmp.npz"
    np.savez(tmp, **flat_arrays(carry, outputs))
    os.replace(tmp, args.out)
    print("done", flush=True)


if __name__ == "__main__":
    main()
