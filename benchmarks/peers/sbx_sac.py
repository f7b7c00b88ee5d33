"""SBX (Stable-Baselines-Jax) SAC on Pendulum-v1 for ``benchmarks/bench_peers.py``.

Run inside the sb3 venv (which also holds sbx-rl). Standalone: imports only sbx (and its
gymnasium/jax/flax), numpy. Settings match ``jaxstab_sac.py`` and ``sb3_sac.py``:
``--hidden`` x ``--hidden`` networks, batch 256, 1 environment, ``train_freq=1,
gradient_steps=1``, replay capacity ``--steps``, ``learning_starts=1000``, lr 1e-3, gamma 0.99,
tau 0.005, automatic entropy with target -1. SBX jit-compiles its update functions (module-level
``jax.jit``, shared between model instances) on first use: a throw-away model first learns
``--warmup`` steps, and that time is reported as ``compile_s`` (compilation plus those steps);
then each seed's fresh model is timed. Seeds run one after another; ``steps_per_s`` is the
aggregate ``seeds * steps / sum(run times)``
(``steps_per_s_learning``: the rate after the 1000 warm-up steps, when every step also
does a gradient step; the orchestrator compares against that one).

Evaluation: ``evaluate_policy(..., deterministic=True)`` over ``--eval-episodes`` episodes after
training (not timed). Reduced budget: for steps/s only.

Prints ONE JSON line. Usage:
``.venv-peers/sb3/bin/python benchmarks/peers/sbx_sac.py --steps 3000``.
"""

from __future__ import annotations

import argparse
import importlib.metadata as md
import json
import time

import numpy as np


def _versions(*names):
    out = {}
    for n in names:
        try:
            out[n] = md.version(n)
        except md.PackageNotFoundError:
            out[n] = None
    return out


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--steps", type=int, default=3_000)
    ap.add_argument("--seeds", type=int, default=1)
    ap.add_argument("--hidden", type=int, default=64)
    ap.add_argument("--eval-episodes", type=int, default=10)
    ap.add_argument("--warmup", type=int, default=1_300)
    ap.add_argument("--seed", type=int, default=0)
    args = ap.parse_args(argv)

    import gymnasium as gym
    from sbx import SAC
    from stable_baselines3.common.callbacks import BaseCallback
    from stable_baselines3.common.evaluation import evaluate_policy

    class _LearnStart(BaseCallback):
        # records the wall time when the first gradient step is due (after learning_starts)
        def __init__(self):
            super().__init__()
            self.t = None

        def _on_step(self):
            if self.t is None and self.num_timesteps >= 1_000:
                self.t = time.perf_counter()
            return True

    def make(seed, buffer):
        return SAC("MlpPolicy", gym.make("Pendulum-v1"), learning_rate=1e-3,
                   buffer_size=buffer, learning_starts=1_000, batch_size=256, tau=0.005,
                   gamma=0.99, train_freq=1, gradient_steps=1, target_entropy=-1.0,
                   policy_kwargs=dict(net_arch=[args.hidden, args.hidden]), seed=seed,
                   verbose=0)

    t0 = time.perf_counter()
    make(10_000 + args.seed, args.warmup).learn(total_timesteps=args.warmup)
    compile_s = time.perf_counter() - t0
    times, finals, learn_rates = [], [], []
    for s in range(args.seeds):
        model = make(args.seed + s, args.steps)
        cb = _LearnStart()
        t0 = time.perf_counter()
        model.learn(total_timesteps=args.steps, callback=cb)
        t1 = time.perf_counter()
        times.append(t1 - t0)
        learn_rates.append((args.steps - 1_000) / (t1 - cb.t))
        mean, _ = evaluate_policy(model, gym.make("Pendulum-v1"),
                                  n_eval_episodes=args.eval_episodes, deterministic=True)
        finals.append(float(mean))
    print(json.dumps({
        "peer": "sbx", "algo": "sac", "env": "Pendulum-v1", "steps": args.steps,
        "seeds": args.seeds, "hidden": [args.hidden, args.hidden],
        "compile_s": round(compile_s, 3),
        "run_s": round(float(np.mean(times)), 3), "run_s_all": [round(t, 3) for t in times],
        "steps_per_s": args.seeds * args.steps / sum(times),
        "steps_per_s_learning": float(np.mean(learn_rates)), "final_returns": finals,
        "eval": (f"evaluate_policy deterministic=True, mean of {args.eval_episodes} episodes "
                 "after training"),
        "versions": _versions("sbx-rl", "stable_baselines3", "jax", "jaxlib", "flax", "optax",
                              "gymnasium"),
    }), flush=True)


if __name__ == "__main__":
    main()
