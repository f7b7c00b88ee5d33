"""Stable-Baselines3 (PyTorch) PPO on CartPole-v1 for ``benchmarks/bench_peers.py``.

Run inside the sb3 venv (torch CPU build). Standalone: imports only stable_baselines3 (and its
gymnasium/torch), numpy. PureJaxRL's hyperparameters as in ``jaxstab_ppo.py``: 4 envs
(``make_vec_env``, DummyVecEnv) x 128 steps (``n_steps``), 4 epochs, minibatch 128 (= 4
minibatches), lr 2.5e-4 annealed linearly to 0 (SB3's progress-remaining schedule), clip 0.2,
ent 0.01, vf 0.5, global grad norm 0.5, gamma 0.99, lambda 0.95, 64x64 tanh networks (separate
actor and critic MLPs, SB3's default for PPO). No value clipping (SB3's ``clip_range_vf=None``
default). torch runs with ``--torch-threads`` threads (default 1).
Seeds run one after another; ``steps_per_s`` is the aggregate
``seeds * steps / sum(run times)`` of ``model.learn`` (no compilation: ``compile_s`` null).

Evaluation: ``evaluate_policy(..., deterministic=True)`` over ``--eval-episodes`` episodes after
training (not timed). Reduced budget: for steps/s only.

Prints ONE JSON line. Usage:
``.venv-peers/sb3/bin/python benchmarks/peers/sb3_ppo.py --steps 30000``.
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
    ap.add_argument("--steps", type=int, default=30_000)
    ap.add_argument("--seeds", type=int, default=1)
    ap.add_argument("--hidden", type=int, default=64)
    ap.add_argument("--eval-episodes", type=int, default=10)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--torch-threads", type=int, default=1,
                    help="torch.set_num_threads (default 1: on the shared 2-core machine torch's "
                    "default of 2 threads ran PPO 30x slower under load)")
    args = ap.parse_args(argv)
    steps = max(args.steps // 512, 1) * 512

    import gymnasium as gym
    import torch
    from stable_baselines3 import PPO
    from stable_baselines3.common.env_util import make_vec_env
    from stable_baselines3.common.evaluation import evaluate_policy

    torch.set_num_threads(args.torch_threads)
    times, finals = [], []
    for s in range(args.seeds):
        env = make_vec_env("CartPole-v1", n_envs=4, seed=args.seed + s)
        model = PPO("MlpPolicy", env, learning_rate=lambda p: 2.5e-4 * p, n_steps=128,
                    batch_size=128, n_epochs=4, gamma=0.99, gae_lambda=0.95, clip_range=0.2,
                    ent_coef=0.01, vf_coef=0.5, max_grad_norm=0.5,
                    policy_kwargs=dict(net_arch=[args.hidden, args.hidden],
                                       activation_fn=torch.nn.Tanh),
                    seed=args.seed + s, device="cpu", verbose=0)
        t0 = time.perf_counter()
        model.learn(total_timesteps=steps)
        times.append(time.perf_counter() - t0)
        mean, _ = evaluate_policy(model, gym.make("CartPole-v1"),
                                  n_eval_episodes=args.eval_episodes, deterministic=True)
        finals.append(float(mean))
    print(json.dumps({
        "peer": "sb3", "algo": "ppo", "env": "CartPole-v1", "steps": steps, "seeds": args.seeds,
        "hidden": [args.hidden, args.hidden], "compile_s": None,
        "run_s": round(float(np.mean(times)), 3), "run_s_all": [round(t, 3) for t in times],
        "steps_per_s": args.seeds * steps / sum(times), "final_returns": finals,
        "eval": (f"evaluate_policy deterministic=True, mean of {args.eval_episodes} episodes "
                 "after training"),
        "torch_threads": torch.get_num_threads(),
        "versions": _versions("stable_baselines3", "torch", "gymnasium", "numpy"),
    }), flush=True)


if __name__ == "__main__":
    main()
