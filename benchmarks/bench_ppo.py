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

Three more sections (``--section``):

* ``stabilizers``: overhead of each stabilizer. Every stabilizer on (log-ratio clamp,
  non-finite step guard, global gradient clipping, advantage normalization, KL early stopping,
  reward normalization, rollback) against the same configuration with one of them switched
  off, in steps/s of the compiled program; the repetitions of all variants are interleaved
  (round robin, the order rotated each round) and the minimum time over repetitions is used
  (the least disturbed run on a shared machine; medians are reported alongside). Overhead of a
  stabilizer = ``t(all on) / t(all on but that one) - 1``; the target is under 5%.
  Results: ``benchmarks/results/bench_ppo_overhead_<platform>.md`` (``--seeds 1``) or
  ``bench_ppo_overhead_<S>seeds_<platform>.md`` (``--seeds S`` vmapped seeds), with
  ``_one_core`` before ``_<platform>`` when the process may run on one core only (``taskset -c
  0 python ...``: the stabilizers' own cost without XLA's two-thread scheduling effects).
* ``chunked``: one ``jax.jit(jax.vmap(train))`` program against the chunk-by-chunk driver
  ``jaxstab.training.loop.run`` (default chunking, without and with a checkpoint after every
  chunk), same seeds, interleaved repetitions, compile excluded (target: under 3%). Results:
  ``benchmarks/results/bench_ppo_chunked_<platform>.md``.

* ``shuffle``: the minibatch shuffle. ``jax.random.permutation`` against
  ``jaxstab.agents.common.permutation`` (single-operand sorts of packed integers, what PPO
  uses) for ``S`` vmapped seeds and batch sizes ``n``, in microseconds per call inside a jitted
  ``lax.scan`` (median of interleaved repetitions). Results:
  ``benchmarks/results/bench_ppo_shuffle_<platform>.md``.

``python benchmarks/bench_ppo.py --section stabilizers --timesteps 100000 --repeats 5``
``python benchmarks/bench_ppo.py --section chunked --timesteps 100000 --seeds 4 --repeats 5``
``python benchmarks/bench_ppo.py --section shuffle --seeds 1 16 --repeats 5``
"""

from __future__ import annotations

import argparse
import os
import shutil
import sys
import tempfile
import time

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from benchmarks._common import usable_cores, write_results  # noqa: E402  (CPU guard first)

import gymnax  # noqa: E402
import jax  # noqa: E402
import jax.numpy as jnp  # noqa: E402
import numpy as np  # noqa: E402

from jaxstab.agents.common import permutation, permutation_rounds  # noqa: E402
from jaxstab.agents.ppo.ppo import PPOConfig, ppo_hparams  # noqa: E402
from jaxstab.training import loop  # noqa: E402
from jaxstab.training.ppo import make_runner, make_train  # noqa: E402

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


HP = dict(lr=2.5e-4, lr_end=0.0, clip_eps=0.2, vf_clip_eps=0.2, ent_coef=0.01, vf_coef=0.5,
          max_grad_norm=0.5, gamma=0.99, gae_lambda=0.95, target_kl=0.015, rollback_kl=0.1,
          rollback_loss_factor=10.0, rollback_reward_factor=0.5)

#: every stabilizer on (PureJaxRL CartPole base); each entry below switches one of them off
ALL_ON = dict(clamp_log_ratio=True, skip_nonfinite=True, clip_grad_norm=True, adv_norm="global",
              early_stopping=True, reward_norm=True, rollback=True)
STABILIZERS = {
    "log-ratio clamp": dict(clamp_log_ratio=False),
    "non-finite step guard": dict(skip_nonfinite=False),
    "gradient clipping (0.5)": dict(clip_grad_norm=False),
    "advantage normalization": dict(adv_norm="none"),
    "KL early stopping (k3, 1.5 x 0.015)": dict(early_stopping=False),
    "reward normalization": dict(reward_norm=False),
    "rollback (nonfinite, kl, reward drop)": dict(rollback=False),
}


def _interleaved_times(fns: dict, repeats: int) -> tuple[dict, dict]:
    """Run each blocking callable ``repeats`` times, round robin with a rotating order.

    Returns ``(wall, cpu)``: per name, the wall-clock seconds and the CPU seconds of this
    process (all threads, ``time.process_time``) of every repetition. On a shared,
    oversubscribed machine the wall time mostly measures the other users' load; the CPU time
    measures the work done (it still includes thread-pool spinning and cache contention).
    """
    names = list(fns)
    wall = {n: [] for n in names}
    cpu = {n: [] for n in names}
    for r in range(repeats):
        order = names[r % len(names):] + names[:r % len(names)]
        for n in order:
            c0, t0 = time.process_time(), time.perf_counter()
            fns[n]()
            wall[n].append(time.perf_counter() - t0)
            cpu[n].append(time.process_time() - c0)
    return wall, cpu


def stabilizer_section(timesteps: int, seeds: int, repeats: int) -> None:
    env, env_params = gymnax.make("CartPole-v1")
    hp = ppo_hparams(**HP)
    keys = jax.random.split(jax.random.key(0), seeds)
    variants = {"all stabilizers on": {}, **{f"all on but {k}": v for k, v in
                                             STABILIZERS.items()},
                "all off": {k: v for d in STABILIZERS.values() for k, v in d.items()},
                "library defaults": {k: PPOConfig.__dataclass_fields__[k].default
                                     for k in ALL_ON}}
    fns, cfgs, compile_s, finals = {}, {}, {}, {}
    for name, over in variants.items():
        cfg = PPOConfig(**{**BASE, **ALL_ON, **over}, total_timesteps=timesteps)
        cfgs[name] = cfg
        train = jax.jit(jax.vmap(make_train(cfg, env, env_params), in_axes=(0, None)))
        t0 = time.perf_counter()
        compiled = train.lower(keys, hp).compile()
        compile_s[name] = time.perf_counter() - t0
        _, m = jax.block_until_ready(compiled(keys, hp))  # warm-up run
        finals[name] = final_return(m)
        fns[name] = (lambda c: lambda: jax.block_until_ready(c(keys, hp)))(compiled)
        print(f"compiled {name}: {compile_s[name]:.1f} s", flush=True)
    times, cpu = _interleaved_times(fns, repeats)
    steps = cfgs["all stabilizers on"].num_updates * cfgs["all stabilizers on"].batch_size * seeds
    w_all, c_all = min(times["all stabilizers on"]), min(cpu["all stabilizers on"])
    rows = []
    for name in variants:
        t_min, t_med, c_min = min(times[name]), float(np.median(times[name])), min(cpu[name])
        ovh_w = ovh_c = verdict = ""
        if name.startswith("all on but ") or name == "all off":
            ovh_w = f"{100 * (w_all / t_min - 1):+.1f}%"
            ovh_c = f"{100 * (c_all / c_min - 1):+.1f}%"
            if name != "all off":
                verdict = "ok" if c_all / c_min - 1 < 0.05 else "over 5%"
        rows.append([name, round(compile_s[name], 1), round(t_min, 3), round(t_med, 3),
                     round(c_min, 3), int(steps / t_min), ovh_c, verdict, ovh_w,
                     round(float(np.mean(finals[name])), 1)])
    cols = ["variant", "compile s", "wall s (min)", "wall s (median)", "CPU s (min)",
            "env steps/s (min wall)", "overhead (CPU time)", "vs 5% target (CPU)",
            "overhead (wall time)", "final return (warm-up run)"]
    notes = (f"Produced by `python benchmarks/bench_ppo.py --section stabilizers --timesteps "
             f"{timesteps} --seeds {seeds} --repeats {repeats}`. CartPole-v1, PureJaxRL "
             "hyperparameters (4 envs x 128 steps, 4 epochs, 4 minibatches, lr 2.5e-4 annealed, "
             "clip 0.2, ent 0.01, vf 0.5, value clip 0.2, grad norm 0.5), "
             f"{timesteps} steps x {seeds} vmapped seed(s). 'all stabilizers on' = log-ratio "
             "clamp, non-finite step guard, gradient clipping, advantage normalization (global, "
             "per minibatch), KL early stopping, reward normalization, rollback. Overhead of a "
             "stabilizer = t(all on) / t(all on but it) - 1 with t the minimum over "
             f"{repeats} interleaved repetitions (rotating order), from the process CPU time "
             "(judged against the 5% target) and from the wall time; 'all off' row: the "
             "overhead of all of them together. Compile excluded. The library "
             "defaults are clamp + non-finite guard + gradient clipping + global advantage "
             "normalization (early stopping, reward normalization and rollback are opt-in). "
             "Differences of a few percent are within this shared machine's noise: compare "
             "the median column too. Early stopping masks the steps it skips (they still run), "
             "so it cannot make a run faster.")
    # one file per seed count: the 1-seed table (the reference) is not overwritten by a
    # many-seed run, which measures a different (compute-bound) regime
    name = "bench_ppo_overhead" if seeds == 1 else f"bench_ppo_overhead_{seeds}seeds"
    if usable_cores() == 1:
        # a run pinned to one core (`taskset -c 0`) measures the stabilizers' own work without
        # XLA's two-thread scheduling effects; its own file, next to the two-core one
        name += "_one_core"
    title = "PPO on CartPole-v1: overhead of each stabilizer" + (
        "" if seeds == 1 else f" ({seeds} vmapped seeds)")
    write_results(name, title, cols, rows, notes, extra={"wall_times": times, "cpu_times": cpu})


def chunked_section(timesteps: int, seeds: int, repeats: int) -> None:
    env, env_params = gymnax.make("CartPole-v1")
    cfg = PPOConfig(**BASE, total_timesteps=timesteps)
    hp = ppo_hparams(**HP)
    keys = jax.random.split(jax.random.key(0), seeds)
    hps = loop.broadcast_hparams(hp, seeds)
    train = jax.jit(jax.vmap(make_train(cfg, env, env_params), in_axes=(0, None)))
    t0 = time.perf_counter()
    compiled = train.lower(keys, hp).compile()
    c_single = time.perf_counter() - t0
    runner = make_runner(cfg, env, env_params)
    t0 = time.perf_counter()
    loop.run(runner, keys, hps, progress=False)  # compiles (cached per runner)
    c_chunk = time.perf_counter() - t0
    tmp = tempfile.mkdtemp(prefix="bench_ppo_ckpt_")

    def chunked_ckpt():
        d = os.path.join(tmp, "run")
        shutil.rmtree(d, ignore_errors=True)
        loop.run(runner, keys, hps, progress=False, checkpoint_dir=d, save_every=1, keep=2)

    fns = {
        "one program: jit(vmap(train))": lambda: jax.block_until_ready(compiled(keys, hp)),
        f"loop.run, {runner.num_chunks} chunks": lambda: jax.block_until_ready(
            loop.finalize(runner, *loop.run(runner, keys, hps, progress=False))),
        f"loop.run, {runner.num_chunks} chunks + progress line": lambda: jax.block_until_ready(
            loop.finalize(runner, *loop.run(runner, keys, hps, progress=True))),
        f"loop.run, {runner.num_chunks} chunks + checkpoint each chunk": chunked_ckpt,
    }
    for f in fns.values():  # warm-up (finalize's compile, orbax start-up)
        f()
    times, cpu = _interleaved_times(fns, repeats)
    shutil.rmtree(tmp, ignore_errors=True)
    first = "one program: jit(vmap(train))"
    base, cbase = min(times[first]), min(cpu[first])
    steps = cfg.num_updates * cfg.batch_size * seeds
    rows = []
    for name, ts in times.items():
        t_min, c_min = min(ts), min(cpu[name])
        rows.append([name, round(t_min, 3), round(float(np.median(ts)), 3), round(c_min, 3),
                     int(steps / t_min),
                     "" if name == first else f"{100 * (c_min / cbase - 1):+.1f}%",
                     "" if name == first else f"{100 * (t_min / base - 1):+.1f}%"])
    cols = ["driver", "wall s (min)", "wall s (median)", "CPU s (min)", "env steps/s",
            "overhead (CPU time)", "overhead (wall time)"]
    notes = (f"Produced by `python benchmarks/bench_ppo.py --section chunked --timesteps "
             f"{timesteps} --seeds {seeds} --repeats {repeats}`. CartPole-v1 PPO, library "
             f"default stabilizers, PureJaxRL hyperparameters, {timesteps} steps x {seeds} "
             f"vmapped seeds, {cfg.num_updates} updates in {runner.num_chunks} chunks of "
             f"{cfg.num_updates // runner.num_chunks}; minimum over {repeats} interleaved "
             f"repetitions, compile excluded (one program {c_single:.1f} s; chunked driver "
             f"{c_chunk:.1f} s including its first run). Target for the driver without "
             "checkpoints: under 3%.")
    write_results("bench_ppo_chunked", "PPO: chunked driver (loop.run) vs one compiled program",
                  cols, rows, notes, extra={"wall_times": times, "cpu_times": cpu})


SHUFFLE_SIZES = (512, 2048, 8192)  # CartPole's PureJaxRL batch (4 x 128), then larger rollouts


SHUFFLE_COLUMNS = ["seeds (vmapped)", "n", "jax.random.permutation us",
                   "jaxstab permutation us", "speed-up"]


def shuffle_rows(seeds: list[int], repeats: int, sizes=SHUFFLE_SIZES,
                 calls: int = 500) -> list[list]:
    """Time ``jax.random.permutation`` against :func:`jaxstab.agents.common.permutation`
    (one row per seed count and size, :data:`SHUFFLE_COLUMNS`)."""

    impls = {"jax.random.permutation": jax.random.permutation, "jaxstab permutation": permutation}

    def program(impl, n, s):
        perm = jax.vmap(lambda k: impl(k, n))

        def body(acc, k):
            p = perm(jax.random.split(k, s))
            return acc + p[:, 0].sum().astype(jnp.float32), None

        keys = jax.random.split(jax.random.key(0), calls)
        run = jax.jit(lambda: jax.lax.scan(body, jnp.zeros(()), keys)[0]).lower().compile()
        return lambda: jax.block_until_ready(run())

    rows = []
    for s in seeds:
        for n in sizes:
            fns = {name: program(impl, n, s) for name, impl in impls.items()}
            for f in fns.values():
                f()  # warm-up
            wall, _ = _interleaved_times(fns, repeats)
            us = {name: 1e6 * float(np.median(ts)) / calls for name, ts in wall.items()}
            a, b = us["jax.random.permutation"], us["jaxstab permutation"]
            row = [s, n, round(a, 1), round(b, 1), f"{a / b:.2f}x"]
            print(row, flush=True)
            rows.append(row)
    return rows


def shuffle_section(seeds: list[int], repeats: int, sizes=SHUFFLE_SIZES,
                    calls: int = 500) -> None:
    rows = shuffle_rows(seeds, repeats, sizes, calls)
    notes = (f"Microseconds per call of S vmapped permutations of n elements (keys split inside "
             f"the program), inside one jitted `lax.scan` of {calls} calls; median of {repeats} "
             "interleaved repetitions. jaxstab's `permutation` sorts packed uint32 integers "
             "(32 - bit_length(n - 1) random bits above the element's position) with a "
             "single-operand sort, in as many rounds as `jax.random.permutation`'s rule "
             "(n^3 <= 2^(rounds x random bits)) asks for with those bits (rounds: "
             + ", ".join(f"{permutation_rounds(n)} for n = {n}" for n in sizes) + "); "
             "`jax.random.permutation` sorts (key, index) pairs with a two-operand comparator. "
             "PPO shuffles the batch once per epoch: 4 calls per update with PureJaxRL's "
             "CartPole settings (n = 512).")
    write_results("bench_ppo_shuffle", "PPO minibatch shuffle: jax.random.permutation vs "
                  "jaxstab permutation", SHUFFLE_COLUMNS, rows, notes)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--timesteps", type=int, default=500_000)
    ap.add_argument("--seeds", type=int, nargs="+", default=[1, 16])
    ap.add_argument("--variants", nargs="+", default=list(VARIANTS), choices=list(VARIANTS),
                    metavar="VARIANT")
    ap.add_argument("--repeats", type=int, default=1)
    ap.add_argument("--section", choices=["variants", "stabilizers", "chunked", "shuffle"],
                    default="variants")
    args = ap.parse_args()
    if args.section == "shuffle":
        shuffle_section(args.seeds, max(args.repeats, 1))
        return
    if args.section == "stabilizers":
        stabilizer_section(args.timesteps, args.seeds[0], max(args.repeats, 1))
        return
    if args.section == "chunked":
        chunked_section(args.timesteps, args.seeds[0], max(args.repeats, 1))
        return
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
