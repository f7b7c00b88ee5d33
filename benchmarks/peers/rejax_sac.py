"""rejax SAC on Pendulum-v1 for ``benchmarks/bench_peers.py`` (run inside the rejax venv).

Standalone: imports only rejax, jax, numpy and
``_runner_common.py`` (stdlib + numpy). Settings match ``jaxstab_sac.py``: ``--hidden`` x
``--hidden`` ReLU networks (actor and 2 critics), batch 256, 1 environment, one gradient step per
environment step (``num_epochs=1``), replay capacity ``--steps``, learning starts after 1000
steps (rejax's ``fill_buffer``; rejax collects those with its policy, jaxstab with uniform random
actions), lr 1e-3 (rejax uses one lr for actor, critics and temperature), gamma 0.99, Polyak
0.995 (tau 0.005) every step, target entropy -1 (rejax's -action_dim). rejax's optimizer clips
gradients element-wise with ``max_grad_norm`` (default inf = off); jaxstab clips the global
norm at 10.

Evaluation: rejax's own callback samples STOCHASTIC actions on 128 episodes; we replace it
(``algo.replace(eval_callback=...)``) by a deterministic one like jaxstab's: action
``loc + scale * tanh(mean)``, mean undiscounted return of ``--eval-episodes`` episodes, every
``steps // 10`` steps inside the timed program. ``final_returns[i]`` is the last evaluation of
seed i, ``eval_curve[i]`` all of seed i's evaluations (after ``eval_steps`` environment
steps: rejax evaluates after every ``eval_freq`` steps, warm-up included).

Prints ONE JSON line (see ``benchmarks/bench_peers.py`` for the schema).
Usage: ``.venv-peers/rejax/bin/python benchmarks/peers/rejax_sac.py --steps 20000 --seeds 8``.
"""

from __future__ import annotations

import os
import sys

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

import _runner_common as rc  # noqa: E402

import jax.numpy as jnp  # noqa: E402
import numpy as np  # noqa: E402
from rejax import SAC  # noqa: E402


def _mean_action(actor, params, obs):
    dist = actor.apply(params, jnp.expand_dims(obs, 0), method="_action_dist")
    return jnp.squeeze(actor.action_loc + actor.action_scale * jnp.tanh(dist.mean()), 0)


def main(argv=None):
    args = rc.parse_args(__doc__, argv, steps=20_000, seeds=8, repeats=True,
                         extra_ints={"--cpu-devices": 0})
    if args.cpu_devices:
        rc.set_cpu_devices(args.cpu_devices)
    rc.check_steps(args.steps, minimum=2_000, multiple=10)

    algo = SAC.create(
        env="Pendulum-v1", total_timesteps=args.steps, eval_freq=args.steps // 10,
        skip_initial_evaluation=True, num_envs=1, num_epochs=1, batch_size=256,
        buffer_size=args.steps, fill_buffer=rc.LEARNING_STARTS, learning_rate=1e-3,
        gamma=0.99, polyak=0.995, target_update_freq=1,
        hidden_layer_sizes=(args.hidden, args.hidden), agent_kwargs={"activation": "relu"},
    )
    n = args.seeds
    compile_s, times, ev = rc.time_rejax(algo, _mean_action, seeds=n, seed=args.seed,
                                         repeats=args.repeats, eval_episodes=args.eval_episodes,
                                         cpu_devices=args.cpu_devices)
    return rc.emit_result(
        peer="rejax" if not args.cpu_devices else f"rejax, {args.cpu_devices} CPU devices",
        algo="sac", env="Pendulum-v1", steps=args.steps, seeds=n,
        hidden=args.hidden, times=times, compile_s=compile_s, parallel_seeds=True,
        final_returns=ev[:, -1],  # ev: [seeds, num_evals]
        eval=(f"deterministic action loc + scale * tanh(mean), mean of {args.eval_episodes} "
              "episodes at the end of training (last of 10 in-training evaluations)"),
        eval_curve=np.asarray(ev, np.float64).tolist(),
        eval_steps=[(i + 1) * (args.steps // 10) for i in range(ev.shape[1])],
        cpu_devices=args.cpu_devices or None,
        versions=rc.versions("rejax", "jax", "jaxlib", "flax", "optax", "gymnax"),
    )


if __name__ == "__main__":
    main()
