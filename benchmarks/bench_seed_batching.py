"""Many seeds at once: one vmap over all seeds against groups of seeds in a loop.

``jaxstab.training.loop.map_seeds(train, seeds_per_batch=B)`` computes the same result as
``jax.vmap(train)`` but runs the seeds in groups of ``B`` (a ``lax.map`` over groups inside the
compiled program). On a CPU the small networks of RL can run faster that way; by how much
varies from run to run on a shared machine (SAC, 8 seeds: from 1.03x to 1.30x in groups of 1).
The cause, as far as measured: one JAX CPU device's thread pool splits the wide operations of a
many-seed vmap over its threads, and for operations this small the split costs more than it
gains. Run the script pinned to one core (``taskset -c 0 python benchmarks/bench_seed_batching.py
--name bench_seed_batching_one_core``: JAX sizes its pool from the CPU affinity, so nothing is
split; the results header says "pinned to 1") and the all-seed vmap runs 1.2-1.3x faster than on
two cores while grouping gains at most 1.10x (2-core Intel Xeon, 2026-12-06). Earlier scratch
measurements (not committed): the extra cost of one vmap sat in the update steps and not in the
warm-up steps; the replay buffer is not it (add + sample cost 9-11 us per seed-step under vmap
at every capacity from 2k to 50k); a minimal hand-written SAC update (no metrics, no guards)
loses as much per seed under vmap (+13-23%) as jaxstab's, so the effect is not specific to
jaxstab's code.

This script measures the effect on the peer-benchmark workloads:

* SAC, Pendulum-v1, 64x64 networks, batch 256, one gradient step per environment step,
  ``--sac-seeds`` seeds (default 8) for ``--sac-steps`` steps (settings of
  ``benchmarks/peers/jaxstab_sac.py``);
* PPO, CartPole-v1, PureJaxRL hyperparameters, ``--ppo-seeds`` seeds (default 16) for
  ``--ppo-steps`` steps (settings of ``benchmarks/peers/jaxstab_ppo.py``, training only).

Every variant (``vmap`` and each ``B`` of ``--batches``) is compiled once (compile time reported
separately), then the repetitions run interleaved (round robin) and the table reports the
minimum and median wall time and the aggregate environment steps/s (seeds x steps / time) of
the minimum. Also reported: the largest difference of the final evaluation / episode returns
against the vmapped run (XLA rounds differently inside a loop than in a wide batch, and RL
runs are chaotic: differences grow with the run length; the per-seed mathematics is the same).

Usage: ``python benchmarks/bench_seed_batching.py [--sac-steps 10000] [--ppo-steps 250000]
[--batches 1 2 4] [--repeats 2]``.
Results: ``benchmarks/results/bench_seed_batching_<platform>.md``.
"""

from __future__ import annotations

import argparse
import os
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from benchmarks._common import write_results  # noqa: E402  (applies the CPU guard first)

import gymnax  # noqa: E402
import jax  # noqa: E402
import jax.numpy as jnp  # noqa: E402
import numpy as np  # noqa: E402

from jaxstab.agents.ppo.ppo import PPOConfig, ppo_hparams  # noqa: E402
from jaxstab.agents.sac import SACConfig, default_hparams  # noqa: E402
from jaxstab.training import ppo as ppo_training  # noqa: E402
from jaxstab.training import sac as sac_training  # noqa: E402
from jaxstab.training.loop import map_seeds  # noqa: E402


def sac_workload(steps: int, seeds: int):
    """``(fn(keys, hps) -> final eval returns [S], (keys, hps))`` of the SAC peer settings."""
    env, env_params = gymnax.make("Pendulum-v1")
    cfg = SACConfig(hidden_sizes=(64, 64), batch_size=256, buffer_size=steps, warmup_steps=1000,
                    total_steps=steps, eval_interval=steps // 10, eval_episodes=10)
    hp = default_hparams(cfg, 1, actor_lr=1e-3, critic_lr=1e-3, alpha_lr=1e-3)
    hps = jax.tree_util.tree_map(lambda x: jnp.broadcast_to(x, (seeds,)), hp)
    # the batched program: "vmap (all seeds)" means every operation batched over the seeds
    # (make_train's default would loop over the vmapped seeds on the CPU)
    train = sac_training.make_train(cfg, env, env_params, seed_vmap="vectorize")

    def one(key, h):
        return train(key, h).eval_returns[-1]

    return one, (jax.random.split(jax.random.key(0), seeds), hps), (0, 0)


def ppo_workload(steps: int, seeds: int):
    """Same for PPO; the output is each seed's mean episode return over its last 10 updates."""
    env, env_params = gymnax.make("CartPole-v1")
    cfg = PPOConfig(num_envs=4, num_steps=128, num_epochs=4, num_minibatches=4,
                    lr_schedule="linear", value_clipping=True, total_timesteps=steps,
                    hidden_sizes=(64, 64), activation="tanh")
    hp = ppo_hparams(lr=2.5e-4, lr_end=0.0, clip_eps=0.2, vf_clip_eps=0.2, ent_coef=0.01,
                     vf_coef=0.5, max_grad_norm=0.5, gamma=0.99, gae_lambda=0.95)
    train = ppo_training.make_train(cfg, env, env_params)

    def one(key, h):
        m = train(key, h)[1]
        r, k = m["episode_return"][-10:], m["episodes"][-10:]
        return jnp.sum(r * k) / jnp.maximum(jnp.sum(k), 1.0)

    steps_done = cfg.num_updates * cfg.num_envs * cfg.num_steps
    return one, (jax.random.split(jax.random.key(0), seeds), hp), (0, None), steps_done


def measure(name: str, fn, args, in_axes, batches, repeats: int, seeds: int, steps: int):
    """Compile every variant, run the repetitions interleaved; one table row per variant."""
    variants = {"vmap (all seeds)": None, **{f"groups of {b}": b for b in batches}}
    compiled, compile_s = {}, {}
    for label, b in variants.items():
        t0 = time.perf_counter()
        compiled[label] = jax.jit(map_seeds(fn, seeds_per_batch=b, in_axes=in_axes)).lower(
            *args).compile()
        compile_s[label] = time.perf_counter() - t0
        print(f"[{name}] {label}: compiled in {compile_s[label]:.1f}s", flush=True)
    times = {label: [] for label in variants}
    outs = {}
    labels = list(variants)
    for rep in range(repeats):
        order = labels[rep % len(labels):] + labels[:rep % len(labels)]
        for label in order:
            t0 = time.perf_counter()
            out = jax.block_until_ready(compiled[label](*args))
            times[label].append(time.perf_counter() - t0)
            outs[label] = np.asarray(out)
            print(f"[{name}] {label}: rep {rep} {times[label][-1]:.2f}s", flush=True)
    ref_t = min(times["vmap (all seeds)"])
    ref_out = outs["vmap (all seeds)"]
    rows = []
    for label in labels:
        t = min(times[label])
        rows.append([name, seeds, steps, label, round(compile_s[label], 1), round(t, 2),
                     round(float(np.median(times[label])), 2), round(seeds * steps / t),
                     f"{ref_t / t:.2f}x", round(float(np.max(np.abs(outs[label] - ref_out))), 1),
                     f"{np.mean(outs[label]):.1f}"])
    return rows


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--sac-steps", type=int, default=10_000)
    ap.add_argument("--sac-seeds", type=int, default=8)
    ap.add_argument("--ppo-steps", type=int, default=250_000)
    ap.add_argument("--ppo-seeds", type=int, default=16)
    ap.add_argument("--batches", type=int, nargs="+", default=[1, 2, 4])
    ap.add_argument("--repeats", type=int, default=2)
    ap.add_argument("--no-sac", action="store_true")
    ap.add_argument("--no-ppo", action="store_true")
    ap.add_argument("--name", default="bench_seed_batching",
                    help="stem of the result files (e.g. for a run under `taskset -c 0`)")
    args = ap.parse_args(argv)
    if any(b < 1 for b in args.batches) or args.repeats < 1:
        ap.error("--batches and --repeats must be >= 1")

    rows = []
    if not args.no_sac:
        fn, a, axes = sac_workload(args.sac_steps, args.sac_seeds)
        rows += measure("SAC Pendulum-v1", fn, a, axes, args.batches, args.repeats,
                        args.sac_seeds, args.sac_steps)
    if not args.no_ppo:
        fn, a, axes, steps = ppo_workload(args.ppo_steps, args.ppo_seeds)
        rows += measure("PPO CartPole-v1", fn, a, axes, args.batches, args.repeats,
                        args.ppo_seeds, steps)
    cols = ["workload", "seeds", "steps per seed", "seeds run as", "compile s", "wall s (min)",
            "wall s (median)", "env steps/s (min wall)", "speed vs vmap",
            "max |return diff| vs vmap", "mean final return"]
    notes = (
        "Same program and seeds in every row; only how the seeds are batched differs "
        "(`jaxstab.training.loop.map_seeds`). Repetitions interleaved (round robin, order "
        "rotated), compile excluded; steps/s = seeds x steps / min wall time. SAC: Pendulum-v1, "
        "64x64, batch 256, 1 gradient step per env step, 1000 warm-up steps, final return = last "
        "in-training evaluation (10 episodes, deterministic). PPO: CartPole-v1, PureJaxRL "
        "hyperparameters, default stabilizers, final return = mean return of the episodes of "
        "the last 10 updates. Return differences come from float rounding that differs between "
        "a loop and a wide batch and grows in chaotic RL runs; they are not a different "
        "algorithm (tests/training/test_loop.py checks map_seeds against vmap and against "
        "single-seed runs).")
    write_results(args.name, "Seeds vmapped all at once vs in groups (map_seeds)",
                  cols, rows, notes=notes)


if __name__ == "__main__":
    main()
