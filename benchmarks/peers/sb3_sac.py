"""Stable-Baselines3 (PyTorch) SAC on Pendulum-v1 for ``benchmarks/bench_peers.py``.

Run inside the sb3 venv (torch CPU build). Standalone: imports only stable_baselines3 (and its
gymnasium/torch), numpy and ``_runner_common.py`` (stdlib + numpy). Settings match
``jaxstab_sac.py``: ``--hidden`` x ``--hidden`` networks (``net_arch``), batch 256, 1
environment, ``train_freq=1, gradient_steps=1``, replay capacity ``--steps``,
``learning_starts=1000``, lr 1e-3, gamma 0.99, tau 0.005, automatic entropy with target -1.
torch runs with ``--torch-threads`` threads (default 1).
Seeds run one after another (SB3 has no vectorized seeds); ``steps_per_s`` is the
aggregate ``seeds * steps / sum(run times)``
(``steps_per_s_learning``: the rate after the 1000 warm-up steps, when every step also
does a gradient step; the orchestrator compares against that one), ``run_s`` the mean
time of one seed's
``model.learn``. No compilation: ``compile_s`` is null.

Evaluation: ``evaluate_policy(model, env, n_eval_episodes=--eval-episodes, deterministic=True)``
after training (not timed); ``final_returns[i]`` is seed i's mean return. The peer is run on a
reduced budget for steps/s; its returns are not comparable to full-budget runs.

Prints ONE JSON line. Usage:
``.venv-peers/sb3/bin/python benchmarks/peers/sb3_sac.py --steps 3000``.
"""

from __future__ import annotations

import os
import sys

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

import _runner_common as rc  # noqa: E402


def main(argv=None):
    args = rc.parse_args(__doc__, argv, steps=3_000, seeds=1, torch_threads=True)

    import gymnasium as gym
    import torch
    from stable_baselines3 import SAC

    torch.set_num_threads(args.torch_threads)

    def make_model(seed):
        return SAC("MlpPolicy", gym.make("Pendulum-v1"), learning_rate=1e-3,
                   buffer_size=args.steps, learning_starts=rc.LEARNING_STARTS, batch_size=256,
                   tau=0.005, gamma=0.99, train_freq=1, gradient_steps=1, target_entropy=-1.0,
                   policy_kwargs=dict(net_arch=[args.hidden, args.hidden]),
                   seed=seed, device="cpu", verbose=0)

    runs = rc.run_seeds_sequentially(make_model, lambda: gym.make("Pendulum-v1"),
                                     steps=args.steps, args=args,
                                     learning_starts=rc.LEARNING_STARTS)
    return rc.emit_sequential(
        peer="sb3", algo="sac", env="Pendulum-v1", steps=args.steps, args=args, runs=runs,
        compile_s=None, torch_threads=torch.get_num_threads(),
        versions=rc.versions("stable_baselines3", "torch", "gymnasium", "numpy"),
    )


if __name__ == "__main__":
    main()
