"""rejax SAC on Pendulum-v1 for ``benchmarks/bench_peers.py`` (run inside the rejax venv).

Standalone: imports only rejax, jax and numpy. Settings match ``jaxstab_sac.py``: ``--hidden`` x
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
seed i.

Prints ONE JSON line (see ``benchmarks/bench_peers.py`` for the schema).
Usage: ``.venv-peers/rejax/bin/python benchmarks/peers/rejax_sac.py --steps 20000 --seeds 8``.
"""

from __future__ import annotations

import argparse
import importlib.metadata as md
import json
import time

import jax
import jax.numpy as jnp
import numpy as np
from rejax import SAC
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
    ap.add_argument("--steps", type=int, default=20_000)
    ap.add_argument("--seeds", type=int, default=8)
    ap.add_argument("--hidden", type=int, default=64)
    ap.add_argument("--eval-episodes", type=int, default=10)
    ap.add_argument("--repeats", type=int, default=1)
    ap.add_argument("--seed", type=int, default=0)
    args = ap.parse_args(argv)
    if args.steps < 2_000 or args.steps % 10:
        raise ValueError(f"--steps must be a multiple of 10 and >= 2000, got {args.steps}")

    algo = SAC.create(
        env="Pendulum-v1", total_timesteps=args.steps, eval_freq=args.steps // 10,
        skip_initial_evaluation=True, num_envs=1, num_epochs=1, batch_size=256,
        buffer_size=args.steps, fill_buffer=1_000, learning_rate=1e-3, gamma=0.99,
        polyak=0.995, target_update_freq=1, hidden_layer_sizes=(args.hidden, args.hidden),
        agent_kwargs={"activation": "relu"},
    )
    n_eval = args.eval_episodes

    def det_eval(algo, ts, rng):
        actor = algo.actor

        def act(obs, rng):
            dist = actor.apply(ts.actor_ts.params, jnp.expand_dims(obs, 0), method="_action_dist")
            a = actor.action_loc + actor.action_scale * jnp.tanh(dist.mean())
            return jnp.squeeze(a, 0)

        lengths, returns = evaluate(act, rng, algo.env, algo.env_params, n_eval,
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
    ev = np.asarray(ev)  # [seeds, num_evals]
    print(json.dumps({
        "peer": "rejax", "algo": "sac", "env": "Pendulum-v1", "steps": args.steps, "seeds": n,
        "hidden": [args.hidden, args.hidden], "compile_s": round(compile_s, 3),
        "run_s": round(run_s, 3), "run_s_all": [round(t, 3) for t in times],
        "steps_per_s": n * args.steps / run_s,
        "final_returns": [float(x) for x in ev[:, -1]],
        "eval": (f"deterministic action loc + scale * tanh(mean), mean of {n_eval} episodes at "
                 "the end of training (last of 10 in-training evaluations)"),
        "versions": _versions("rejax", "jax", "jaxlib", "flax", "optax", "gymnax"),
    }), flush=True)


if __name__ == "__main__":
    main()
