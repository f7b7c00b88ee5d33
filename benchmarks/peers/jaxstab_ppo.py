"""jaxstab PPO on CartPole-v1, the "ours" side of ``benchmarks/bench_peers.py``.

PureJaxRL's hyperparameters: 4 envs x 128 steps, 4 epochs, 4 minibatches, lr 2.5e-4 annealed
linearly to 0, clip 0.2, value clip 0.2, ent 0.01, vf 0.5, global grad norm 0.5, gamma 0.99,
lambda 0.95, 64x64 tanh networks; every other :class:`jaxstab.agents.ppo.PPOConfig` field at its
default, i.e. with jaxstab's default stabilizers ON (log-ratio clamp ``clamp_log_ratio`` and the
non-finite update skip ``skip_nonfinite``; early stopping, reward normalization, rollback and the
quantile head are off by default). ``--steps`` is rounded down to whole updates of 512 steps
(500k -> 976 updates = 499,712 steps), as PureJaxRL does.

The timed program is ``jit(vmap(train then evaluate))`` over ``--seeds`` seeds; evaluation
(``jaxstab.training.ppo.make_evaluate``: argmax action, ``--eval-episodes`` episodes run to the
first termination or truncation, at most 500 steps) is inside it, as rejax's is. Prints ONE JSON
line; ``final_returns[i]`` is seed i's mean evaluation return, ``train_returns[i]`` the mean
return of the training episodes completed in the last 10 updates.

Usage: ``python benchmarks/peers/jaxstab_ppo.py --steps 500000 --seeds 16``.
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
import numpy as np  # noqa: E402

from jaxstab.agents.ppo.ppo import PPOConfig, ppo_hparams  # noqa: E402
from jaxstab.training.ppo import make_evaluate, make_train  # noqa: E402


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
    ap.add_argument("--steps", type=int, default=500_000)
    ap.add_argument("--seeds", type=int, default=16)
    ap.add_argument("--hidden", type=int, default=64)
    ap.add_argument("--eval-episodes", type=int, default=10)
    ap.add_argument("--repeats", type=int, default=1)
    ap.add_argument("--seed", type=int, default=0)
    args = ap.parse_args(argv)
    if args.steps < 512:
        raise ValueError(f"--steps must be >= 512 (one update), got {args.steps}")

    env, env_params = gymnax.make("CartPole-v1")
    cfg = PPOConfig(num_envs=4, num_steps=128, num_epochs=4, num_minibatches=4,
                    lr_schedule="linear", value_clipping=True, total_timesteps=args.steps,
                    hidden_sizes=(args.hidden, args.hidden), activation="tanh")
    hp = ppo_hparams(lr=2.5e-4, lr_end=0.0, clip_eps=0.2, vf_clip_eps=0.2, ent_coef=0.01,
                     vf_coef=0.5, max_grad_norm=0.5, gamma=0.99, gae_lambda=0.95)
    train = make_train(cfg, env, env_params)
    evaluate = make_evaluate(cfg, env, env_params, num_envs=args.eval_episodes)

    def train_eval(key, hp):
        k_train, k_eval = jax.random.split(key)
        state, metrics = train(k_train, hp)
        return evaluate(state.ppo.params, k_eval), metrics

    fn = jax.jit(jax.vmap(train_eval, in_axes=(0, None)))
    n = args.seeds
    keys = jax.random.split(jax.random.key(args.seed), n)
    t0 = time.perf_counter()
    compiled = fn.lower(keys, hp).compile()
    compile_s = time.perf_counter() - t0
    times = []
    for rep in range(args.repeats):
        keys = jax.random.split(jax.random.key(args.seed + rep), n)
        t0 = time.perf_counter()
        ev, m = jax.block_until_ready(compiled(keys, hp))
        times.append(time.perf_counter() - t0)
    run_s = float(np.median(times))
    steps = cfg.num_updates * cfg.num_envs * cfg.num_steps
    r = np.asarray(m["episode_return"])[:, -10:]
    k = np.asarray(m["episodes"])[:, -10:]
    train_ret = (r * k).sum(-1) / np.maximum(k.sum(-1), 1)
    result = {
        "peer": "jaxstab", "algo": "ppo", "env": "CartPole-v1", "steps": steps, "seeds": n,
        "hidden": [args.hidden, args.hidden], "compile_s": round(compile_s, 3),
        "run_s": round(run_s, 3), "run_s_all": [round(t, 3) for t in times],
        "steps_per_s": n * steps / run_s,
        "final_returns": [float(x) for x in np.asarray(ev).mean(axis=1)],
        "train_returns": [float(x) for x in train_ret],
        "eval": (f"argmax action, mean of {args.eval_episodes} episodes after training "
                 "(inside the timed program)"),
        "stabilizers": {"clamp_log_ratio": cfg.clamp_log_ratio,
                        "skip_nonfinite": cfg.skip_nonfinite,
                        "early_stopping": cfg.early_stopping, "reward_norm": cfg.reward_norm,
                        "rollback": cfg.rollback, "value_kind": cfg.value_kind},
        "versions": _versions("jax", "jaxlib", "flax", "optax", "gymnax"),
    }
    print(json.dumps(result), flush=True)
    return result


if __name__ == "__main__":
    main()
