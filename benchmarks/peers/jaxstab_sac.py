"""jaxstab SAC on Pendulum-v1, the "ours" side of ``benchmarks/bench_peers.py``.

Runs ``jax.jit(jax.vmap(jaxstab.training.sac.make_train(...)))`` over ``--seeds`` seeds (with
``--seeds-per-batch B``: ``jaxstab.training.loop.map_seeds``, groups of B seeds in a loop)
with the settings shared with the peer runners (``--hidden`` x ``--hidden`` networks for actor and
twin critics, batch 256, one gradient step per environment step, 1000 random warm-up steps, replay
capacity = ``--steps``, lr 1e-3 for actor, critics and temperature, gamma 0.99, tau 0.005,
target entropy -1) and prints ONE JSON line::

    {"peer": "jaxstab", "algo": "sac", "env": "Pendulum-v1", "steps": ..., "seeds": ...,
     "compile_s": ..., "run_s": ..., "run_s_all": [...], "steps_per_s": ...,
     "final_returns": [...], "eval": "...", "versions": {...}}

``run_s`` is the median over ``--repeats`` calls of the compiled program (compile excluded),
``steps_per_s = seeds * steps / run_s``. ``final_returns[i]`` is seed i's last in-training
evaluation: the mean undiscounted return of ``--eval-episodes`` episodes with the deterministic
(latent-mean) action, taken at the end of training; evaluations run every ``steps // 10``
steps inside the timed program, like rejax's; ``eval_curve[i]`` lists all of seed i's
evaluations (after ``eval_steps`` environment steps).

``jax.vmap(train)`` runs the seeds as ``make_train``'s default ``seed_vmap="auto"`` decides (on
the CPU: one after another inside the program); ``--vectorize 1`` builds ``train`` with
``seed_vmap="vectorize"`` (every operation batched over the seeds) and reports itself as
"jaxstab, vectorized".

With ``--cpu-devices D`` the process gets D CPU devices (``jaxstab.distributed.use_cpu_devices``,
before JAX starts) and the seeds run through
``jaxstab.distributed.sweep``, S/D per device; ``compile_s`` is then the first call minus the
fastest timed call (``sweep`` has no separate compile step).

Run from the repository root with the project's interpreter:
``python benchmarks/peers/jaxstab_sac.py --steps 20000 --seeds 8``.
"""

from __future__ import annotations

import os
import sys

_HERE = os.path.dirname(os.path.abspath(__file__))
sys.path[:0] = [_HERE, os.path.dirname(os.path.dirname(_HERE))]

import _runner_common as rc  # noqa: E402
import jaxstab  # noqa: E402,F401  (applies the CPU scheduler guard before JAX initializes)

import jax  # noqa: E402
import jax.numpy as jnp  # noqa: E402
import numpy as np  # noqa: E402

from jaxstab.agents.sac import SACConfig, default_hparams  # noqa: E402
from jaxstab.distributed import sweep, use_cpu_devices  # noqa: E402
from jaxstab.training.loop import map_seeds  # noqa: E402
from jaxstab.training.sac import make_train  # noqa: E402


def main(argv: list[str] | None = None) -> dict:
    args = rc.parse_args(__doc__, argv, steps=20_000, seeds=8, repeats=True,
                         extra_ints={"--seeds-per-batch": 0, "--cpu-devices": 0,
                                     "--vectorize": 0})
    spb = args.seeds_per_batch or None  # 0: one vmap over all seeds
    if sum(bool(x) for x in (spb, args.cpu_devices, args.vectorize)) > 1:
        raise ValueError("--cpu-devices, --seeds-per-batch and --vectorize are exclusive")
    if args.cpu_devices:
        use_cpu_devices(args.cpu_devices)
    import gymnax  # imported here: importing gymnax starts JAX's backend
    rc.check_steps(args.steps, minimum=2_000, multiple=10)

    env, env_params = gymnax.make("Pendulum-v1")
    cfg = SACConfig(hidden_sizes=(args.hidden, args.hidden), batch_size=256,
                    buffer_size=args.steps, warmup_steps=rc.LEARNING_STARTS,
                    total_steps=args.steps, eval_interval=args.steps // 10,
                    eval_episodes=args.eval_episodes)
    hp = default_hparams(cfg, 1, actor_lr=1e-3, critic_lr=1e-3, alpha_lr=1e-3)
    n = args.seeds
    hps = jax.tree_util.tree_map(lambda x: jnp.broadcast_to(x, (n,)), hp)
    train = make_train(cfg, env, env_params,
                       seed_vmap="vectorize" if args.vectorize else "auto")
    keys_for = lambda rep: jax.random.split(jax.random.key(args.seed + rep), n)  # noqa: E731
    if args.cpu_devices:
        compile_s, times, out = rc.time_first_call(
            lambda rep: sweep(train, keys_for(rep), hps), repeats=args.repeats,
            block=jax.block_until_ready)
    else:
        compile_s, times, out = rc.time_compiled(
            jax.jit(map_seeds(train, seeds_per_batch=spb)), lambda rep: (keys_for(rep), hps),
            repeats=args.repeats, block=jax.block_until_ready)
    return rc.emit_result(
        peer=rc.jaxstab_name(spb, args.cpu_devices, bool(args.vectorize)), algo="sac",
        env="Pendulum-v1", steps=args.steps, seeds=n,
        hidden=args.hidden, times=times, compile_s=compile_s, parallel_seeds=True,
        final_returns=np.asarray(out.eval_returns)[:, -1],
        eval=(f"deterministic (latent-mean) action, mean of {args.eval_episodes} episodes at "
              "the end of training (last of 10 in-training evaluations)"),
        eval_curve=np.asarray(out.eval_returns).tolist(),
        eval_steps=np.asarray(out.eval_steps)[0].tolist(),
        skipped_updates=int(np.asarray(out.metrics["skipped_total"])[:, -1].sum()),
        seeds_per_batch=spb, cpu_devices=args.cpu_devices or None,
        versions=rc.versions("jax", "jaxlib", "flax", "optax", "gymnax"),
    )


if __name__ == "__main__":
    main()
