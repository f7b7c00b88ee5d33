"""rejax PPO on CartPole-v1 for ``benchmarks/bench_peers.py`` (run inside the rejax venv).

Standalone: imports only rejax, jax, optax and numpy. PureJaxRL's hyperparameters, as in
``jaxstab_ppo.py``: 4 envs x 128 steps, 4 epochs, 4 minibatches, lr 2.5e-4 annealed linearly to
0 over all minibatch steps (an optax schedule passed as rejax's ``learning_rate``), clip 0.2,
ent 0.01, vf 0.5, gamma 0.99, lambda 0.95, 64x64 tanh networks, ``--steps`` rounded down to whole
updates of 512 (500k -> 976 updates). Differences that are rejax's design: separate actor and
critic optimizers, ``max_grad_norm=0.5`` clips gradients element-wise (``optax.clip``), not by
global norm, and no value clipping.

Evaluation: rejax's own callback samples actions on 128 episodes; we replace it by a
deterministic one (argmax of the logits, ``--eval-episodes`` episodes) run once at the end,
inside the timed program (``eval_freq = total steps``, no initial evaluation).
``final_returns[i]`` is seed i's mean evaluation return.

Prints ONE JSON line. Usage: ``.venv-peers/rejax/bin/python benchmarks/peers/rejax_ppo.py``.
"""

from __future__ import annotations

import argparse
import importlib.metadata as md
import json
import time

import jax
import jax.numpy as jnp
import numpy as np
import optax
from rejax import PPO
from rejax.evaluate import evaluate


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
    ap.add_argument("--steps", type=int, default=500_000)
    ap.add_argument("--seeds", type=int, default=16)
    ap.add_argument("--hidden", type=int, default=64)
    ap.add_argument("--eval-episodes", type=int, default=10)
    ap.add_argument("--repeats", type=int, default=1)
    ap.add_argument("--seed", type=int, default=0)
    args = ap.parse_args(argv)
    if args.steps < 512:
        raise ValueError(f"--steps must be >= 512 (one update), got {args.steps}")
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
    n_eval = args.eval_episodes

    def det_eval(algo, ts, rng):
        actor = algo.actor

        def act(obs, rng):
            dist = actor.apply(ts.actor_ts.params, jnp.expand_dims(obs, 0), method="_action_dist")
            return jnp.squeeze(jnp.argmax(dist.logits, axis=-1), 0)

        _, returns = evaluate(act, rng, algo.env, algo.env_params, n_eval,
                              algo.env_params.max_steps_in_episode)
        return returns.mean()

    algo = algo.replace(eval_callback=det_eval)
    n = args.seeds
    train = jax.jit(jax.vmap(algo.train))
    keys = jax.random.split(jax.random.PRNGKey(args.seed), n)
    t0 = time.perf_counter()
    compiled = train.lower(keys).compile()
    compile_s = time.perf_counter() - t0
    times, ev = [], None
    for rep in range(args.repeats):
        keys = jax.random.split(jax.random.PRNGKey(args.seed + rep), n)
        t0 = time.perf_counter()
        _, ev = jax.block_until_ready(compiled(keys))
        times.append(time.perf_counter() - t0)
    run_s = float(np.median(times))
    ev = np.asarray(ev)  # [seeds, 1]
    print(json.dumps({
        "peer": "rejax", "algo": "ppo", "env": "CartPole-v1", "steps": steps, "seeds": n,
        "hidden": [args.hidden, args.hidden], "compile_s": round(compile_s, 3),
        "run_s": round(run_s, 3), "run_s_all": [round(t, 3) for t in times],
        "steps_per_s": n * steps / run_s,
        "final_returns": [float(x) for x in ev[:, -1]],
        "eval": (f"argmax action, mean of {n_eval} episodes after training (inside the timed "
                 "program)"),
        "versions": _versions("rejax", "jax", "jaxlib", "flax", "optax", "gymnax"),
    }), flush=True)


if __name__ == "__main__":
    main()
