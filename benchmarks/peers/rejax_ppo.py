"""rejax PPO on CartPole-v1 for ``benchmarks/bench_peers.py`` (run inside the rejax venv).

Standalone: imports only rejax, jax, optax, numpy and
``_runner_common.py`` (stdlib + numpy). PureJaxRL's hyperparameters, as in
``jaxstab_ppo.py``: 4 envs x 128 steps, 4 epochs, 4 minibatches, lr 2.5e-4 annealed linearly to
0 over all minibatch steps (an optax schedule passed as rejax's ``learning_rate``), clip 0.2,
ent 0.01, vf 0.5, gamma 0.99, lambda 0.95, 64x64 tanh networks, ``--steps`` rounded down to whole
updates of 512 (500k -> 976 updates). Differences that are rejax's design: separate actor and
critic optimizers, ``max_grad_norm=0.5`` clips gradients element-wise (``optax.clip``), not by
global norm. Like ours (and PureJaxRL) it clips the value prediction to +-``clip_eps`` around
the rollout's value (rejax 0.1.3 ``update_critic``).

Evaluation: rejax's own callback samples actions on 128 episodes; we replace it by a
deterministic one (argmax of the logits, ``--eval-episodes`` episodes) run once at the end,
inside the timed program (``eval_freq = total steps``, no initial evaluation).
``final_returns[i]`` is seed i's mean evaluation return.

Prints ONE JSON line. Usage: ``.venv-peers/rejax/bin/python benchmarks/peers/rejax_ppo.py``.
"""

from __future__ import annotations

import os
import sys

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

import _runner_common as rc  # noqa: E402

import jax.numpy as jnp  # noqa: E402
import optax  # noqa: E402
from rejax import PPO  # noqa: E402


def _argmax_action(actor, params, obs):
    dist = actor.apply(params, jnp.expand_dims(obs, 0), method="_action_dist")
    return jnp.squeeze(jnp.argmax(dist.logits, axis=-1), 0)


def main(argv=None):
    args = rc.parse_args(__doc__, argv, steps=500_000, seeds=16, repeats=True,
                         extra_ints={"--cpu-devices": 0})
    if args.cpu_devices:
        rc.set_cpu_devices(args.cpu_devices)
    rc.check_steps(args.steps, minimum=512, why="(one update)")
    num_updates = args.steps // 512
    steps = num_updates * 512
    lr = optax.linear_schedule(2.5e-4, 0.0, transition_steps=num_updates * 4 * 4)

    algo = PPO.create(
        env="CartPole-v1", total_timesteps=steps, eval_freq=steps, skip_initial_evaluation=True,
        num_envs=4, num_steps=128, num_epochs=4, num_minibatches=4, learning_rate=lr,
        max_grad_norm=0.5, gamma=0.99, gae_lambda=0.95, clip_eps=0.2, ent_coef=0.01,
        vf_coef=0.5, agent_kwargs={"activation": "tanh",
                                   "hidden_layer_sizes": (args.hidden, args.hidden)},
    )
    n = args.seeds
    compile_s, times, ev = rc.time_rejax(algo, _argmax_action, seeds=n, seed=args.seed,
                                         repeats=args.repeats, eval_episodes=args.eval_episodes,
                                         cpu_devices=args.cpu_devices)
    return rc.emit_result(
        peer="rejax" if not args.cpu_devices else f"rejax, {args.cpu_devices} CPU devices",
        algo="ppo", env="CartPole-v1", steps=steps, seeds=n, hidden=args.hidden,
        times=times, compile_s=compile_s, parallel_seeds=True,
        final_returns=ev[:, -1],  # ev: [seeds, 1]
        eval=(f"argmax action, mean of {args.eval_episodes} episodes after training (inside the "
              "timed program)"),
        cpu_devices=args.cpu_devices or None,
        versions=rc.versions("rejax", "jax", "jaxlib", "flax", "optax", "gymnax"),
    )


if __name__ == "__main__":
    main()
