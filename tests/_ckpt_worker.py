"""Worker for the crash/resume test in tests/test_checkpoint.py (not a test module).

Runs a small deterministic jitted training loop (SGD with momentum on a linear regression
whose mini-batches are drawn from ``fold_in(key, step)``), checkpointing every ``--every``
steps with :class:`jaxstab.checkpoint.Checkpointer`. With ``--resume`` it restores the newest
complete checkpoint and continues. At the end it writes the final state to ``--out`` (.npz,
written to a temporary name and renamed). Progress lines on stdout, flushed:
``start <step>``, ``saving <step>``, ``saved <step>``, ``done``.

Usage: python tests/_ckpt_worker.py --dir D --out F.npz [--steps 300] [--every 20]
       [--sleep 0.01] [--resume]
"""

from __future__ import annotations

import argparse
import os
import sys
import time
from typing import Any, NamedTuple

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

import jaxstab  # noqa: E402,F401  (CPU guard before JAX starts)

import jax  # noqa: E402
import jax.numpy as jnp  # noqa: E402
import numpy as np  # noqa: E402
import optax  # noqa: E402

from jaxstab.checkpoint import Checkpointer  # noqa: E402
from jaxstab.training.rollback import (  # noqa: E402
    RollbackConfig,
    RollbackHParams,
    RollbackState,
    rollback_init,
    rollback_update,
)

DIM = 8
BATCH = 32
OPT = optax.sgd(learning_rate=0.05, momentum=0.9)
RB_CFG = RollbackConfig(window=5, check_kl=False, check_reward_drop=False, keep_best=False)
RB_HP = RollbackHParams(min_history=3)


class TrainState(NamedTuple):
    params: dict
    opt_state: Any
    key: jax.Array
    step: jax.Array
    rollback: RollbackState


def init_state(seed: int = 0) -> TrainState:
    key = jax.random.key(seed)
    key, sub = jax.random.split(key)
    params = {"w": jax.random.normal(sub, (DIM,), jnp.float32) * 0.1,
              "b": jnp.zeros((), jnp.float32)}
    opt_state = OPT.init(params)
    return TrainState(params=params, opt_state=opt_state, key=key,
                      step=jnp.zeros((), jnp.int32),
                      rollback=rollback_init((params, opt_state), RB_CFG))


@jax.jit
def train_step(state: TrainState) -> TrainState:
    k = jax.random.fold_in(state.key, state.step)
    kx, kn = jax.random.split(k)
    x = jax.random.normal(kx, (BATCH, DIM), jnp.float32)
    w_true = jnp.linspace(-1.0, 1.0, DIM, dtype=jnp.float32)
    y = x @ w_true + 0.5 + 0.1 * jax.random.normal(kn, (BATCH,), jnp.float32)

    def loss_fn(p):
        return jnp.mean((x @ p["w"] + p["b"] - y) ** 2)

    loss, grads = jax.value_and_grad(loss_fn)(state.params)
    updates, opt_state = OPT.update(grads, state.opt_state, state.params)
    params = optax.apply_updates(state.params, updates)
    (params, opt_state), rb, _ = rollback_update(
        state.rollback, (params, opt_state), loss=loss, hparams=RB_HP, cfg=RB_CFG, grads=grads)
    return TrainState(params=params, opt_state=opt_state, key=state.key, step=state.step + 1,
                      rollback=rb)


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--dir", required=True)
    ap.add_argument("--out", required=True)
    ap.add_argument("--steps", type=int, default=300)
    ap.add_argument("--every", type=int, default=20)
    ap.add_argument("--sleep", type=float, default=0.01)
    ap.add_argument("--resume", action="store_true")
    args = ap.parse_args(argv)

    state = init_state()
    with Checkpointer(args.dir, max_to_keep=3) as ckpt:
        if args.resume and ckpt.latest_step() is not None:
            restored = ckpt.restore(state)
            state = restored.state
            assert restored.metadata["every"] == args.every
        print(f"start {int(state.step)}", flush=True)
        while int(state.step) < args.steps:
            state = train_step(state)
            step = int(state.step)
            if step % args.every == 0:
                print(f"saving {step}", flush=True)
                ckpt.save(step, state, metadata={"every": args.every, "steps": args.steps})
                print(f"saved {step}", flush=True)
            if args.sleep:
                time.sleep(args.sleep)
    leaves = jax.tree_util.tree_leaves(state)
    arrays = {f"leaf{i}": np.asarray(jax.random.key_data(x) if jnp.issubdtype(
        x.dtype, jax.dtypes.prng_key) else x) for i, x in enumerate(leaves)}
    tmp = args.out + ".tmp.npz"
    np.savez(tmp, **arrays)
    os.replace(tmp, args.out)
    print("done", flush=True)


if __name__ == "__main__":
    main()
