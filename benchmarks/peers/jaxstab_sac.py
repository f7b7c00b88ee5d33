"""jaxstab SAC on Pendulum-v1, the "ours" side of ``benchmarks/bench_peers.py``.

Runs ``jax.jit(jax.vmap(jaxstab.training.sac.make_train(...)))`` over ``--seeds`` seeds with the
settings shared with the peer runners (``--hidden`` x ``--hidden`` networks for actor and twin
critics, batch 256, one gradient step per environment step, 1000 random warm-up steps, replay
capacity = ``--steps``, lr 1e-3 for actor, critics and temperature, gamma 0.99, tau 0.005,
target entropy -1) and prints ONE JSON line::

    {"peer": "jaxstab", "algo": "sac", "env": "Pendulum-v1", "steps": ..., "seeds": ...,
     "compile_s": ..., "run_s": ..., "run_s_all": [...], "steps_per_s": ...,
     "final_returns": [...], "eval": "...", "versions": {...}}

``run_s`` is the median over ``--repeats`` calls of the compiled program (compile excluded),
``steps_per_s = seeds * steps / run_s``. ``final_returns[i]`` is seed i's last in-training
evaluation: the mean undiscounted return of ``--eval-episodes`` episodes with the deterministic
(latent-mean) action, taken at the end of training; evaluations run every ``steps // 10``
steps inside the timed program, like rejax's.

Run from the repository root with the project's interpreter:
``python benchmarks/peers/jaxstab_sac.py --steps 20000 --seeds 8``.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__)))))

import jaxstab  # noqa: E402,F401  (applies the CPU scheduler guard before JAX initializes)

import gymnax  # noqa: E402
import jax  # noqa: E402
import jax.numpy as jnp  # noqa: E402
import numpy as np  # noqa: E402

from jaxstab.agents.sac import SACConfig, default_hparams  # noqa: E402
from jaxstab.training.sac import make_train  # noqa: E402


def _versions(*names: str) -> dict:
    import importlib.metadata as md

    out = {}
    for n in names:
        try:
            out[n] = md.version(n)
        except md.PackageNotFoundError:
            out[n] = None
    return out


def main(argv: list[str] | None = None) -> dict:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--steps", type=int, default=20_000)
    ap.add_argument("--seeds", type=int, default=8)
    ap.add_argument("--hidden", type=int, default=64)
    ap.add_argument("--eval-episodes", type=int, default=10)
    ap.add_argument("--repeats", type=int, default=1)
    ap.add_argument("--seed", type=int, default=0)
    args = ap.parse_args(argv)
    if args.steps < 2_000 or args.steps % 10:
        raise ValueError(f"--steps must be a multiple of 10 and >= 2000, got {args.steps}")

    env, env_params = gymnax.make("Pendulum-v1")
    cfg = SACConfig(hidden_sizes=(args.hidden, args.hidden), batch_size=256,
                    buffer_size=args.steps, warmup_steps=1_000, total_steps=args.steps,
                    eval_interval=args.steps // 10, eval_episodes=args.eval_episodes)
    hp = default_hparams(cfg, 1, actor_lr=1e-3, critic_lr=1e-3, alpha_lr=1e-3)
    n = args.seeds
    hps = jax.tree_util.tree_map(lambda x: jnp.broadcast_to(x, (n,)), hp)
    train = jax.jit(jax.vmap(make_train(cfg, env, env_params)))
    keys = jax.random.split(jax.random.key(args.seed), n)
    t0 = time.perf_counter()
    compiled = train.lower(keys, hps).compile()
    compile_s = time.perf_counter() - t0
    times, out = [], None
    for rep in range(args.repeats):
        keys = jax.random.split(jax.random.key(args.seed + rep), n)
        t0 = time.perf_counter()
        out = jax.block_until_ready(compiled(keys, hps))
        times.append(time.perf_counter() - t0)
    run_s = float(np.median(times))
    final = np.asarray(out.eval_returns)[:, -1]
    result = {
        "peer": "jaxstab", "algo": "sac", "env": "Pendulum-v1", "steps": args.steps, "seeds": n,
        "hidden": [args.hidden, args.hidden], "compile_s": round(compile_s, 3),
        "run_s": round(run_s, 3), "run_s_all": [round(t, 3) for t in times],
        "steps_per_s": n * args.steps / run_s,
        "final_returns": [float(x) for x in final],
        "eval": (f"deterministic (latent-mean) action, mean of {args.eval_episodes} episodes at "
                 "the end of training (last of 10 in-training evaluations)"),
        "skipped_updates": int(np.asarray(out.metrics["skipped_total"])[:, -1].sum()),
        "versions": _versions("jax", "jaxlib", "flax", "optax", "gymnax"),
    }
    print(json.dumps(result), flush=True)
    return result


if __name__ == "__main__":
    main()
