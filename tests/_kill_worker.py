"""Worker for the randomized SIGKILL tests in tests/test_kill_random.py (not a test module).

Two modes, both printing flushed progress lines on stdout so that a test can SIGKILL the
process at chosen or random moments:

``train``: a tiny PPO CartPole run (the configuration of ``tests/_train_worker.py`` with
``NUM_CHUNKS`` one-update chunks, 2 seeds) through :func:`jaxstab.training.loop.run`, saving
every ``--save-every`` chunks. From ``on_chunk(i, outputs)`` it prints ``chunk <i>`` and sleeps
``--sleep`` seconds; if the loop is about to save after chunk ``i`` it then prints
``saving <i + 1>`` (``loop.run`` calls ``on_chunk`` right before that chunk's save). Because
``loop.run`` saves synchronously, the line ``chunk <i>`` also means that every checkpoint
of steps ``<= i`` is complete. With ``--resume`` it continues from the newest complete
checkpoint. At the end it writes every leaf of the final carry and stacked outputs to ``--out``
(.npz, written under a temporary name and renamed) and prints ``done``.

``tight``: a :class:`jaxstab.checkpoint.Checkpointer` that saves ``tight_state(s)`` for
``s = latest + 1, latest + 2, ...`` in a loop without pausing (``max_to_keep=2``), printing
``saving <s>`` before and ``saved <s>`` after each save; it never ends by itself.

Usage:
  python tests/_kill_worker.py train --dir D --out F.npz [--sleep 0.08] [--save-every 2]
      [--keep 2] [--resume]
  python tests/_kill_worker.py tight --dir D
"""

from __future__ import annotations

import argparse
import dataclasses
import os
import sys
import time

_TESTS = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, os.path.dirname(_TESTS))

import jaxstab  # noqa: E402,F401  (CPU guard before JAX starts)

import numpy as np  # noqa: E402

#: chunks (one PPO update of 2 envs x 16 steps each) of the ``train`` run
NUM_CHUNKS = 32
#: float32 elements of the ``tight`` state's array (1 MiB: a save takes a while)
TIGHT_SIZE = 1 << 18


def train_worker():
    """The module ``tests/_train_worker.py`` (loaded by path; its PPO configuration is reused)."""
    import importlib.util

    if "_train_worker" not in sys.modules:
        spec = importlib.util.spec_from_file_location(
            "_train_worker", os.path.join(_TESTS, "_train_worker.py"))
        mod = importlib.util.module_from_spec(spec)
        spec.loader.exec_module(mod)
        sys.modules["_train_worker"] = mod
    return sys.modules["_train_worker"]


def setup():
    """``(runner, keys, hparams, metadata)`` of the ``train`` run (also used by the test)."""
    import gymnax
    import jax

    from jaxstab.agents.ppo.ppo import ppo_hparams
    from jaxstab.training import loop
    from jaxstab.training.ppo import make_runner

    W = train_worker()
    cfg = dataclasses.replace(W.CFG, total_timesteps=NUM_CHUNKS * W.CFG.num_envs
                              * W.CFG.num_steps)
    env, env_params = gymnax.make("CartPole-v1")
    runner = make_runner(cfg, env, env_params, updates_per_chunk=1)
    assert runner.num_chunks == NUM_CHUNKS, runner.num_chunks
    keys = jax.random.split(jax.random.key(2025), W.NUM_SEEDS)
    hparams = loop.broadcast_hparams(ppo_hparams(lr=1e-3), W.NUM_SEEDS)
    return runner, keys, hparams, {"cfg": cfg, "num_seeds": W.NUM_SEEDS}


def tight_state(step: int) -> dict:
    """The pytree the ``tight`` mode saves as step ``step`` (NumPy leaves; a test recomputes
    it): ``{"w": step * arange(TIGHT_SIZE) mod 2**20 (float32, exact), "step": int32}``."""
    w = ((np.arange(TIGHT_SIZE, dtype=np.int64) * step) % (1 << 20)).astype(np.float32)
    return {"w": w, "step": np.asarray(step, np.int32)}


def _train(args: argparse.Namespace) -> None:
    from jaxstab.training import loop

    runner, keys, hparams, metadata = setup()
    n, every = runner.num_chunks, args.save_every

    def on_chunk(i, outputs):
        del outputs
        print(f"chunk {i}", flush=True)
        if args.sleep:
            time.sleep(args.sleep)
        if (i + 1) % every == 0 or i + 1 == n:
            print(f"saving {i + 1}", flush=True)

    keep = None if args.keep == 0 else args.keep
    carry, outputs = loop.run(runner, keys, hparams, checkpoint_dir=args.dir,
                              save_every=every, keep=keep, resume=args.resume, progress=False,
                              on_chunk=on_chunk, metadata=metadata)
    tmp = args.out + ".tmp.npz"
    np.savez(tmp, **train_worker().flat_arrays(carry, outputs))
    os.replace(tmp, args.out)
    print("done", flush=True)


def _tight(args: argparse.Namespace) -> None:
    from jaxstab.checkpoint import Checkpointer

    with Checkpointer(args.dir, max_to_keep=2) as ckpt:
        step = (ckpt.latest_step() or 0) + 1
        print(f"start {step}", flush=True)
        while True:
            print(f"saving {step}", flush=True)
            ckpt.save(step, tight_state(step), metadata={"step": step})
            print(f"saved {step}", flush=True)
            step += 1


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("mode", choices=("train", "tight"))
    ap.add_argument("--dir", required=True)
    ap.add_argument("--out")
    ap.add_argument("--sleep", type=float, default=0.08)
    ap.add_argument("--save-every", type=int, default=2)
    ap.add_argument("--keep", type=int, default=2, help="0 keeps every checkpoint")
    ap.add_argument("--resume", action="store_true")
    args = ap.parse_args(argv)
    if args.mode == "train":
        if not args.out:
            ap.error("train needs --out")
        _train(args)
    else:
        _tight(args)


if __name__ == "__main__":
    main()
