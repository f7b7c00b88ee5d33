"""PPO on CartPole-v1 with PureJaxRL's hyperparameters: throughput, final return, and the cost
of each stabilizer.

For every variant (the plain PPO core, then one stabilizer switched on at a time, then all of
them) and every seed count (1 and 16 vmapped seeds by default) it reports compile time
(separately), run time of the compiled program, environment steps per second and the final
return (mean return of the episodes completed in the last 10 updates; mean and minimum over
seeds). Settings: 4 envs x 128 steps, 4 epochs, 4 minibatches, lr 2.5e-4 annealed linearly,
clip 0.2, ent 0.01, vf 0.5, grad norm 0.5, gamma 0.99, lambda 0.95, value clipping 0.2 (as
PureJaxRL; the quantile head has no value clipping), 500k steps.

Usage: ``python benchmarks/bench_ppo.py [--timesteps N] [--seeds 1 16] [--variants a b ...]
[--repeats R]``. Peers (PureJaxRL, rejax, SB3) need their own virtual environments and are not
run by this script.
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
import numpy as np  # noqa: E402

from jaxstab.agents.ppo.ppo import PPOConfig, ppo_hparams  # noqa: E402
from jaxstab.training.ppo import make_train  # noqa: E402

BASE = dict(num_envs=4, num_steps=128, num_epochs=4, num_minibatches=4, lr_schedule="linear",
            value_clipping=True)

#: variant name -> PPOConfig overrides. "plain" switches off every guard that is on by default.
VARIANTS = {
    "plain": dict(clamp_log_ratio=False, skip_nonfinite=False),
    "default (clamp + non-finite skip)": dict(),
    "+ early stop (k3)": dict(early_stopping=True),
    "+ exact KL early stop": dict(early_stopping=True, kl_estimator="exact"),
    "+ reward norm": dict(reward_norm=True),
    "+ rollback (nonfinite, kl, reward drop)": dict(rollback=True),
    "+ rollback incl. loss spike": dict(rollback=True, rollback_triggers=(
        "nonfinite", "kl", "loss_spike", "reward_drop")),
    "+ quantile head (normalize, no value clip)": dict(value_kind="quantile",
                                                        variance_scaling="normalize",
                                                        value_clipping=False),
    "all": dict(early_stopping=True, reward_norm=True, rollback=True, value_kind="quantile",
                variance_scaling="normalize", value_clipping=False),
}


def final_return(m, last: int = 10) -> np.ndarray:
    r = np.asarray(m["episode_return"])[..., -last:]
    n = np.asarray(m["episodes"])[..., -last:]
    return (r * n).sum(-1) / np.maximum(n.sum(-1), 1)


def run_variant(name: str, overrides: dict, timesteps: int, seeds: int, repeats: int):
    env, env_params = gymnax.make("CartPole-v1")
    cfg = PPOConfig(**{**BASE, **overrides}, total_timesteps=timesteps)
    hp = ppo_hparams(lr=2.5e-4, lr_end=0.0, clip_eps=0.2, vf_clip_eps=0.2, ent_coef=0.01,
                     vf_coef=0.5, max_grad_norm=0.5, gamma=0.99, gae_lambda=0.95, target_kl=0.015,
                     rollback_kl=0.1, rollback_loss_factor=10.0, rollback_reward_factor=0.5)
    train = jax.jit(jax.vmap(make_train(cfg, env, env_params), in_axes=(0, None)))
    keys = jax.random.split(jax.random.key(0), seeds)
    t0 = time.perf_counter()
    compiled = train.lower(keys, hp).compile()
    compile_s = time.perf_counter() - t0
    times, finals = [], []
    for rep in range(repeats):
        keys = jax.random.split(jax.random.key(rep), seeds)
        t0 = time.perf_counter()
        _, m = compiled(keys, hp)
        jax.block_until_ready(m)
        times.append(time.perf_counter() - t0)
        finals.append(final_return(m))
    run_s = float(np.median(times))
    steps = cfg.num_updates * cfg.batch_size * seeds
    fin = np.concatenate(finals)
    extra = ""
    if "rollback_count" in m:
        extra = f"rollbacks/seed {float(np.mean(np.asarray(m['rollback_count'])[:, -1])):.1f}"
    if cfg.early_stopping:
        extra += f" applied steps/update {float(np.mean(m['num_applied_steps'])):.1f}/16"
    return [name, seeds, round(compile_s, 1), round(run_s, 2), int(steps / run_s),
            round(float(fin.mean()), 1), round(float(fin.min()), 1),
            int(np.sum(fin >= 475)), len(fin), extra.strip()]


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--timesteps", type=int, default=500_000)
    ap.add_argument("--seeds", type=int, nargs="+", default=[1, 16])
    ap.add_argument("--variants", nargs="+", default=list(VARIANTS), choices=list(VARIANTS),
                    metavar="VARIANT")
    ap.add_argument("--repeats", type=int, default=1)
    args = ap.parse_args()
    rows = []
    for name in args.variants:
        for s in args.seeds:
            row = run_variant(name, VARIANTS[name], args.timesteps, s, args.repeats)
            print(row, flush=True)
            rows.append(row)
    cols = ["variant", "seeds", "compile s", "run s", "env steps/s", "final return mean",
            "final return min", "runs >= 475", "runs", "notes"]
    notes = (f"{args.timesteps} steps per seed, PureJaxRL CartPole hyperparameters; final return "
             "= mean return of episodes completed in the last 10 updates; run time is the "
             f"median of {args.repeats} run(s) of the compiled program (compile excluded). "
             "Wall times on a shared machine drift; compare rows of one run only. Variants that "
             "change nothing numerically still compile to different XLA programs, and ulp-level "
             "differences change sampled trajectories, so final-return differences between "
             "variants are seed noise unless they exceed it.")
    write_results("bench_ppo", "PPO on CartPole-v1: throughput and stabilizer overhead", cols,
                  rows, notes)


if __name__ == "__main__":
    main()
