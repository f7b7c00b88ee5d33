"""Stable-Baselines3 (PyTorch) PPO on CartPole-v1 for ``benchmarks/bench_peers.py``.

Run inside the sb3 venv (torch CPU build). Standalone: imports only stable_baselines3 (and its
gymnasium/torch), numpy and
``_runner_common.py`` (stdlib + numpy). PureJaxRL's hyperparameters as in ``jaxstab_ppo.py``: 4 envs
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

import os
import sys

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

import _runner_common as rc  # noqa: E402


def main(argv=None):
    args = rc.parse_args(__doc__, argv, steps=30_000, seeds=1, torch_threads=True)
    steps = max(args.steps // 512, 1) * 512

    import gymnasium as gym
    import torch
    from stable_baselines3 import PPO
    from stable_baselines3.common.env_util import make_vec_env

    torch.set_num_threads(args.torch_threads)

    def make_model(seed):
        return PPO("MlpPolicy", make_vec_env("CartPole-v1", n_envs=4, seed=seed),
                   learning_rate=lambda p: 2.5e-4 * p, n_steps=128, batch_size=128, n_epochs=4,
                   gamma=0.99, gae_lambda=0.95, clip_range=0.2, ent_coef=0.01, vf_coef=0.5,
                   max_grad_norm=0.5,
                   policy_kwargs=dict(net_arch=[args.hidden, args.hidden],
                                      activation_fn=torch.nn.Tanh),
                   seed=seed, device="cpu", verbose=0)

    runs = rc.run_seeds_sequentially(make_model, lambda: gym.make("CartPole-v1"), steps=steps,
                                     args=args)
    return rc.emit_sequential(
        peer="sb3", algo="ppo", env="CartPole-v1", steps=steps, args=args, runs=runs,
        compile_s=None, torch_threads=torch.get_num_threads(),
        versions=rc.versions("stable_baselines3", "torch", "gymnasium", "numpy"),
    )


if __name__ == "__main__":
    main()
