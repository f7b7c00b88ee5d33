"""What jaxstab's CPU-scheduler guard costs: jaxstab and rejax with the guard on and off, and on
one core.

``import jaxstab`` turns XLA's concurrency-optimized CPU scheduler off (the guard against the
jax 0.10.2 CPU hang, README "Platform note"). That scheduler runs independent parts of one
program on several cores at once, so switching it off costs speed. This script runs the
``bench_peers`` runners (PPO on CartPole-v1 with 1 and 16 seeds, SAC on Pendulum-v1 with 1
and 8 seeds, the seeds in one vmap, short budgets) for jaxstab and rejax in subprocesses with the
guard on (``XLA_FLAGS=--xla_cpu_enable_concurrency_optimized_scheduler=false``), off
(``JAXSTAB_CPU_SCHEDULER_WORKAROUND=0``, XLA's default scheduler) and with the guard on in a
process pinned to one core (``os.sched_setaffinity``, as ``taskset -c 0`` does: JAX then sizes
its CPU thread pool to one thread, so no operation is split across cores), interleaved
(for each repetition and job: each setting in turn), and tabulates steps/s, each setting's
speed-up over "guard on" for each library and the jaxstab/rejax ratio under each setting
(medians over repetitions).

Usage: ``python benchmarks/bench_cpu_scheduler.py [--peers-dir DIR] [--repeats R] [--calls C]
[--ppo-steps N] [--sac-steps N] [--settings NAME,...]``.
Results: ``benchmarks/results/bench_cpu_scheduler_<platform>.md``.
"""

from __future__ import annotations

import argparse
import os
import sys
import time
from typing import Any, Sequence

import numpy as np

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, ROOT)

from benchmarks._common import write_results  # noqa: E402  (imports jaxstab first)
from benchmarks.bench_peers import (  # noqa: E402
    Job, add_peers_dir_argument, peer_python, run_job)
from jaxstab._platform import CPU_SCHEDULER_FLAG, OPT_OUT_ENV  # noqa: E402

_GUARD_ON = {"XLA_FLAGS": f"{CPU_SCHEDULER_FLAG}=false", OPT_OUT_ENV: "1"}
SETTINGS = {  # name -> environment overrides of the child process
    "guard on": _GUARD_ON,
    "guard off": {"XLA_FLAGS": "", OPT_OUT_ENV: "0"},
    "one core": _GUARD_ON,  # and pinned (PINNED)
}
PINNED = {"one core"}  # settings whose child process is pinned to one core


def one_core() -> set[int]:
    """The first core this process may run on (the child of a pinned setting runs there)."""
    return {min(os.sched_getaffinity(0))}


def jobs(ppo_steps: int, sac_steps: int, ppo_seeds: Sequence[int] = (1, 16),
         sac_seeds: Sequence[int] = (1, 8), calls: int = 3) -> list[Job]:
    """The runner jobs, jaxstab before rejax for each algorithm and seed count (0 steps: leave
    that algorithm out); each runner times ``calls`` calls of its compiled program."""
    out = []
    for algo, steps, seeds in (("ppo", ppo_steps, ppo_seeds), ("sac", sac_steps, sac_seeds)):
        if steps:
            out += [Job(lib, algo, steps, n, ("--repeats", str(calls)))
                    for n in seeds for lib in ("jaxstab", "rejax")]
    return out


def table(results: Sequence[dict[str, Any]],
          settings: Sequence[str] = tuple(SETTINGS)) -> list[list[Any]]:
    """Rows ``[algo, seeds, steps, library, <steps/s under each setting>, <each other setting /
    the first>]`` and, per algorithm and seed count, ``[algo, seeds, steps, "jaxstab / rejax",
    <ratio under each setting>, "" ...]`` (medians over repetitions; "-" where a side is
    missing).

    ``results``: dicts with ``algo``, ``seeds``, ``steps``, ``lib``, ``setting`` (one of
    ``settings``; the first is the baseline of the speed-ups) and ``steps_per_s``; failed runs
    (no ``steps_per_s``) are left out.
    """
    groups: dict[tuple, list[float]] = {}
    for r in results:
        if r.get("steps_per_s") is not None:
            groups.setdefault((r["algo"], r["seeds"], r["steps"], r["lib"], r["setting"]),
                              []).append(float(r["steps_per_s"]))
    med = {k: float(np.median(v)) for k, v in groups.items()}
    rows: list[list[Any]] = []
    cases = sorted({k[:3] for k in med}, key=lambda c: (c[0] != "ppo", c))
    for case in cases:
        for lib in ("jaxstab", "rejax"):
            rates = [med.get((*case, lib, s)) for s in settings]
            if all(x is None for x in rates):
                continue
            base = rates[0]
            rows.append([*case, lib, *("-" if x is None else round(x) for x in rates),
                         *(f"{x / base:.2f}x" if x and base else "-" for x in rates[1:])])
        ratios = []
        for s in settings:
            a, b = med.get((*case, "jaxstab", s)), med.get((*case, "rejax", s))
            ratios.append(f"{a / b:.2f}x" if a and b else "-")
        rows.append([*case, "jaxstab / rejax", *ratios, *[""] * (len(settings) - 1)])
    return rows


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    add_peers_dir_argument(ap)
    ap.add_argument("--repeats", type=int, default=2, help="interleaved repetitions")
    ap.add_argument("--ppo-steps", type=int, default=61_440,
                    help="PPO steps per seed (multiple of 512; 0 leaves PPO out)")
    ap.add_argument("--sac-steps", type=int, default=6_000,
                    help="SAC steps per seed (>= 2000, multiple of 10; 0 leaves SAC out)")
    ap.add_argument("--calls", type=int, default=3,
                    help="timed calls of the compiled program inside each runner process")
    ap.add_argument("--timeout", type=float, default=1800.0, help="seconds per job")
    ap.add_argument("--settings", default=",".join(SETTINGS),
                    help="comma-separated settings to run, the first is the baseline of the "
                         f"speed-ups (from: {', '.join(SETTINGS)})")
    args = ap.parse_args(argv)
    if args.repeats < 1 or args.calls < 1 or args.ppo_steps < 0 or args.sac_steps < 0:
        raise SystemExit("--repeats and --calls must be >= 1, --ppo-steps / --sac-steps >= 0")
    if not (args.ppo_steps or args.sac_steps):
        raise SystemExit("--ppo-steps and --sac-steps are both 0: nothing to run")
    settings = [x.strip() for x in args.settings.split(",") if x.strip()]
    unknown = [x for x in settings if x not in SETTINGS]
    if unknown or not settings or len(set(settings)) != len(settings):
        raise SystemExit(f"--settings: unknown, repeated or none in {args.settings!r}; "
                         f"choose from {', '.join(SETTINGS)}")
    peers_dir = os.path.abspath(args.peers_dir)
    peer_python("rejax", peers_dir)  # fail early with the setup hint
    results, load0 = [], os.getloadavg()
    for r in range(args.repeats):
        for job in jobs(args.ppo_steps, args.sac_steps, calls=args.calls):
            for setting in settings:
                t0 = time.perf_counter()
                res = run_job(job, peers_dir, timeout=args.timeout, env=SETTINGS[setting],
                              cpu_affinity=one_core() if setting in PINNED else None)
                res.update(lib=job.lib, algo=job.algo, steps=job.steps, seeds=job.seeds,
                           setting=setting, rep=r)
                results.append(res)
                rate = res.get("steps_per_s")
                print(f"[bench_cpu_scheduler] rep {r + 1} {job.lib} {job.algo} {setting}: "
                      f"{'%.0f steps/s' % rate if rate else res.get('error')} "
                      f"({time.perf_counter() - t0:.0f} s)", flush=True)
    load1 = os.getloadavg()
    failed = [f"{x['lib']} {x['algo']} {x['setting']}: {x['error']}" for x in results
              if "error" in x]
    notes = (
        f"Guard on: `XLA_FLAGS={CPU_SCHEDULER_FLAG}=false` (jaxstab's default); guard off: "
        f"`{OPT_OUT_ENV}=0`, empty XLA_FLAGS (XLA's default concurrency-optimized CPU "
        "scheduler, what a JAX library that sets nothing runs with); one core: guard on, "
        "the runner process pinned to one core (`os.sched_setaffinity`, like `taskset -c 0`; "
        "JAX's CPU thread pool then has one thread). Runners: "
        "`benchmarks/peers/<lib>_<algo>.py` as in `bench_peers.py` (PPO: CartPole-v1, PureJaxRL "
        "hyperparameters; SAC: Pendulum-v1, 64x64, batch 256, replay capacity = steps; "
        "several seeds run in one vmap); each library in its own process, jobs "
        f"interleaved (each job under {', '.join(settings)}, in turn); steps/s = seeds x "
        "steps / run "
        f"time (the runner's median of {args.calls} calls), compile excluded, median over "
        f"{args.repeats} repetitions. Load average "
        f"(1/5/15 min): {load0[0]:.1f}/{load0[1]:.1f}/{load0[2]:.1f} at the start, "
        f"{load1[0]:.1f}/{load1[1]:.1f}/{load1[2]:.1f} at the end."
        + (" FAILED runs (left out): " + "; ".join(failed) if failed else ""))
    write_results("bench_cpu_scheduler",
                  "jaxstab's CPU-scheduler guard: steps/s with it on, off and on one core, "
                  "jaxstab and rejax",
                  ["algorithm", "seeds", "steps", "library", *(f"{x} steps/s" for x in settings),
                   *(f"{x} / {settings[0]}" for x in settings[1:])], table(results, settings),
                  notes, extra={"results": results, "settings": settings})


if __name__ == "__main__":
    main()
