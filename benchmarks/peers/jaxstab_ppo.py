"""jaxstab PPO on CartPole-v1, the "ours" side of ``benchmarks/bench_peers.py``.

PureJaxRL's hyperparameters: 4 envs x 128 steps, 4 epochs, 4 minibatches, lr 2.5e-4 annealed
linearly to 0, clip 0.2, value clip 0.2, ent 0.01, vf 0.5, global grad norm 0.5, gamma 0.99,
lambda 0.95, 64x64 tanh networks; every other :class:`jaxstab.agents.ppo.PPOConfig` field at its
default, i.e. with jaxstab's default stabilizers ON (log-ratio clamp ``clamp_log_ratio`` and the
non-finite update skip ``skip_nonfinite``; early stopping, reward normalization, rollback and the
quantile head are off by default). ``--steps`` is rounded down to whole updates of 512 steps
(500k -> 976 updates = 499,712 steps), as PureJaxRL does.

The timed program is ``jit(vmap(train then evaluate))`` over ``--seeds`` seeds (with
``--seeds-per-batch B``: ``jaxstab.training.loop.map_seeds``, groups of B seeds in a loop);
evaluation (``jaxstab.training.ppo.make_evaluate``: argmax action, ``--eval-episodes`` episodes run
to the first termination or truncation, at most 500 steps) is inside it, as rejax's is. Prints ONE
JSON line; ``final_returns[i]`` is seed i's mean evaluation return, ``train_returns[i]`` the mean
return of the training episodes completed in the last 10 updates.

With ``--cpu-devices D`` the process gets D CPU devices (``jaxstab.distributed.use_cpu_devices``,
before JAX starts) and the seeds run through
``jaxstab.distributed.sweep``, S/D per device; ``compile_s`` is then the first call minus the
fastest timed call (``sweep`` has no separate compile step).

Usage: ``python benchmarks/peers/jaxstab_ppo.py --steps 500000 --seeds 16``.
"""

from __future__ import annotations

import os
import sys

_HERE = os.path.dirname(os.path.abspath(__file__))
sys.path[:0] = [_HERE, os.path.dirname(os.path.dirname(_HERE))]

import _runner_common as rc  # noqa: E402
import jaxstab  # noqa: E402,F401  (applies the CPU scheduler guard before JAX initializes)

import jax  # noqa: E402
import numpy as np  # noqa: E402

from jaxstab.agents.ppo.ppo import PPOConfig, ppo_hparams  # noqa: E402
from jaxstab.distributed import sweep, use_cpu_devices  # noqa: E402
from jaxstab.training.loop import map_seeds  # noqa: E402
from jaxstab.training.ppo import make_evaluate, make_train  # noqa: E402


def main(argv: list[str] | None = None) -> dict:
    args = rc.parse_args(__doc__, argv, steps=500_000, seeds=16, repeats=True,
                         extra_ints={"--seeds-per-batch": 0, "--cpu-devices": 0})
    spb = args.seeds_per_batch or None  # 0: one vmap over all seeds
    if args.cpu_devices:
        if spb:
            raise ValueError("--cpu-devices and --seeds-per-batch are exclusive")
        use_cpu_devices(args.cpu_devices)
    import gymnax  # imported here: importing gymnax starts JAX's backend
    rc.check_steps(args.steps, minimum=512, why="(one update)")

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

    n = args.seeds
    keys_for = lambda rep: jax.random.split(jax.random.key(args.seed + rep), n)  # noqa: E731
    if args.cpu_devices:
        compile_s, times, (ev, m) = rc.time_first_call(
            lambda rep: sweep(train_eval, keys_for(rep), hp), repeats=args.repeats,
            block=jax.block_until_ready)
    else:
        compile_s, times, (ev, m) = rc.time_compiled(
            jax.jit(map_seeds(train_eval, seeds_per_batch=spb, in_axes=(0, None))),
            lambda rep: (keys_for(rep), hp), repeats=args.repeats, block=jax.block_until_ready)
    steps = cfg.num_updates * cfg.num_envs * cfg.num_steps
    r = np.asarray(m["episode_return"])[:, -10:]
    k = np.asarray(m["episodes"])[:, -10:]
    train_ret = (r * k).sum(-1) / np.maximum(k.sum(-1), 1)
    return rc.emit_result(
        peer=rc.jaxstab_name(spb, args.cpu_devices), algo="ppo",
        env="CartPole-v1", steps=steps, seeds=n, hidden=args.hidden,
        times=times, compile_s=compile_s, parallel_seeds=True,
        final_returns=np.asarray(ev).mean(axis=1),
        eval=(f"argmax action, mean of {args.eval_episodes} episodes after training "
              "(inside the timed program)"),
        train_returns=[float(x) for x in train_ret],
        stabilizers={"clamp_log_ratio": cfg.clamp_log_ratio,
                     "skip_nonfinite": cfg.skip_nonfinite,
                     "early_stopping": cfg.early_stopping, "reward_norm": cfg.reward_norm,
                     "rollback": cfg.rollback, "value_kind": cfg.value_kind},
        seeds_per_batch=spb, cpu_devices=args.cpu_devices or None,
        versions=rc.versions("jax", "jaxlib", "flax", "optax", "gymnax"),
    )


if __name__ == "__main__":
    main()
