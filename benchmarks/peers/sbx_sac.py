"""SBX (Stable-Baselines-Jax) SAC on Pendulum-v1 for ``benchmarks/bench_peers.py``.

Run inside the sb3 venv (which also holds sbx-rl). Standalone: imports only sbx (and its
gymnasium/jax/flax), numpy and
``_runner_common.py`` (stdlib + numpy). Settings match ``jaxstab_sac.py`` and ``sb3_sac.py``:
``--hidden`` x ``--hidden`` networks, batch 256, 1 environment, ``train_freq=1,
gradient_steps=1``, replay capacity ``--steps``, ``learning_starts=1000``, lr 1e-3, gamma 0.99,
tau 0.005, automatic entropy with target -1. SBX jit-compiles its update functions (module-level
``jax.jit``, shared between model instances) on first use: a throw-away model first learns
``--warmup`` steps, and that time is reported as ``compile_s`` (compilation plus those steps);
then each seed's fresh model is timed. Seeds run one after another; ``steps_per_s`` is the
aggregate ``seeds * steps / sum(run times)``
(``steps_per_s_learning``: the rate after the 1000 warm-up steps, when every step also
does a gradient step; the orchestrator compares against that one).

Evaluation and the reduced budget (for steps/s only) as in ``sb3_sac.py``. Prints ONE JSON line.
Usage: ``.venv-peers/sb3/bin/python benchmarks/peers/sbx_sac.py --steps 3000``.
"""

from __future__ import annotations

import os
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

import _runner_common as rc  # noqa: E402


def main(argv=None):
    args = rc.parse_args(__doc__, argv, steps=3_000, seeds=1, extra_ints={"--warmup": 1_300})

    import gymnasium as gym
    from sbx import SAC

    def make(seed, buffer):
        return SAC("MlpPolicy", gym.make("Pendulum-v1"), learning_rate=1e-3,
                   buffer_size=buffer, learning_starts=rc.LEARNING_STARTS, batch_size=256,
                   tau=0.005, gamma=0.99, train_freq=1, gradient_steps=1, target_entropy=-1.0,
                   policy_kwargs=dict(net_arch=[args.hidden, args.hidden]), seed=seed,
                   verbose=0)

    t0 = time.perf_counter()
    make(10_000 + args.seed, args.warmup).learn(total_timesteps=args.warmup)
    compile_s = time.perf_counter() - t0
    runs = rc.run_seeds_sequentially(lambda seed: make(seed, args.steps),
                                     lambda: gym.make("Pendulum-v1"), steps=args.steps,
                                     args=args, learning_starts=rc.LEARNING_STARTS)
    return rc.emit_sequential(
        peer="sbx", algo="sac", env="Pendulum-v1", steps=args.steps, args=args, runs=runs,
        compile_s=compile_s,
        versions=rc.versions("sbx-rl", "stable_baselines3", "jax", "jaxlib", "flax", "optax",
                             "gymnasium"),
    )


if __name__ == "__main__":
    main()
