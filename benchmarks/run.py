"""One entry point for the benchmark suites: ``python -m benchmarks.run --suite quick|full``.

Also reachable as ``jaxstab bench [--suite quick|full] [--only NAME ...] [--list]`` from a source
checkout. Every benchmark is a script in ``benchmarks/`` (``bench_*.py``, ``check_*.py``) that
prints a Markdown table and writes ``benchmarks/results/<name>_<platform>.{md,json}`` (machine,
versions, date) through :mod:`benchmarks._common`; this runner calls each in a subprocess with
the suite's arguments and prints a summary (status, wall time, result file).

Suites:

* ``quick``: CI-sized runs (``--quick`` or small arguments; a few minutes in all on a CPU). The
  committed full-size result files are restored afterwards, so a quick run never overwrites
  published numbers; its summary goes to ``results/bench_suite_quick_<platform>.md``.
* ``full``: the published tables (tens of minutes to hours on a CPU; run on a GPU where one is
  available: results are recorded per platform, ``*_gpu.md`` beside ``*_cpu.md``). Peers
  (``bench_peers``) need their own virtual environments (``benchmarks/peers/setup.sh``) and the
  ``bench`` extra: ``pip install ".[bench]"``.

Built in: ``loop_overhead`` (:func:`bench_loop_overhead`): the cost of running a training
program chunk by chunk from Python (:func:`jaxstab.training.loop.run`, what ``jaxstab train``
does, with its progress line and metrics file) against one compiled ``lax.scan``, for PPO on
CartPole-v1 and SAC on Pendulum-v1, with and without a checkpoint after every chunk.
"""

from __future__ import annotations

import argparse
import glob
import io
import os
import shutil
import subprocess
import sys
import tempfile
import time
from typing import Any, Sequence

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(HERE)
if ROOT not in sys.path:
    sys.path.insert(0, ROOT)

SUITES = ("quick", "full")

#: per-script arguments of each suite; scripts not listed get ``--quick`` in the quick suite if
#: they accept it (and nothing in the full suite). ``None``: not part of that suite.
ARGS: dict[str, dict[str, list[str] | None]] = {
    "bench_ppo": {"quick": ["--timesteps", "32768", "--seeds", "1", "2"], "full": []},
    "bench_projection": {"quick": ["--repeats", "3", "--sizes", "8", "30"], "full": []},
    "bench_seed_batching": {"quick": ["--sac-steps", "2000", "--sac-seeds", "2", "--ppo-steps",
                                      "16384", "--ppo-seeds", "2", "--batches", "1",
                                      "--repeats", "1"], "full": []},
    "check_cpu_deadlock": {"quick": ["--trials", "1", "--steps", "20000", "--timeout", "120"],
                           "full": []},
    # peers need their own virtual environments (benchmarks/peers/setup.sh)
    "bench_peers": {"quick": None, "full": ["--suite", "all"]},
    "bench_replay_capacity": {"quick": None, "full": []},
    "bench_cpu_scheduler": {"quick": None, "full": []},
}
BUILTIN = ("loop_overhead",)


def discover() -> list[str]:
    """Benchmark names: ``bench_*.py`` / ``check_*.py`` scripts in ``benchmarks/`` + built-ins."""
    names = sorted(os.path.splitext(os.path.basename(p))[0]
                   for pat in ("bench_*.py", "check_*.py")
                   for p in glob.glob(os.path.join(HERE, pat)))
    return names + list(BUILTIN)


def script_args(name: str, suite: str) -> list[str] | None:
    """Arguments of a script in a suite (None: skipped in that suite)."""
    if name in ARGS:
        return ARGS[name].get(suite)
    if suite == "full":
        return []
    with open(os.path.join(HERE, name + ".py"), encoding="utf-8") as fh:
        src = fh.read()
    return ["--quick"] if '"--quick"' in src else []


def _snapshot_results() -> dict[str, bytes]:
    out = {}
    for p in glob.glob(os.path.join(HERE, "results", "**", "*"), recursive=True):
        if os.path.isfile(p):
            with open(p, "rb") as fh:
                out[p] = fh.read()
    return out


def _restore_results(snap: dict[str, bytes], keep: Sequence[str] = ()) -> None:
    for p in glob.glob(os.path.join(HERE, "results", "**", "*"), recursive=True):
        if os.path.isfile(p) and p not in snap and os.path.basename(p).split(".")[0] not in keep:
            os.remove(p)
    for p, data in snap.items():
        with open(p, "wb") as fh:
            fh.write(data)


# ----------------------------------------------------------------------------- loop overhead
def bench_loop_overhead(quick: bool = False, repeats: int | None = None) -> str:
    """Chunked driver (progress line + metrics file [+ checkpoints]) vs one compiled scan.

    For each workload the three variants run interleaved ``repeats`` times after a warm-up
    (compilation excluded from every timing); the table reports median wall times and the
    overhead ``chunked / scan - 1``.

    Returns:
      The Markdown path written by :func:`benchmarks._common.write_results`.
    """
    from benchmarks._common import write_results

    import gymnax
    import jax
    import numpy as np

    from jaxstab import runs
    from jaxstab.agents.ppo import PPOConfig, ppo_hparams
    from jaxstab.agents.sac import SACConfig, default_hparams
    from jaxstab.training import loop, ppo, sac

    repeats = repeats or (2 if quick else 3)
    seeds = 2 if quick else 4
    work = []
    env, params = gymnax.make("CartPole-v1")
    pcfg = PPOConfig(total_timesteps=65_536 if quick else 500_000)
    work.append(("PPO CartPole-v1", pcfg.total_timesteps, ppo.make_runner(pcfg, env, params),
                 loop.broadcast_hparams(ppo_hparams(), seeds)))
    env, params = gymnax.make("Pendulum-v1")
    steps = 4_000 if quick else 10_000
    scfg = SACConfig(hidden_sizes=(64, 64), total_steps=steps, eval_interval=steps // 10,
                     buffer_size=steps, warmup_steps=1_000)
    work.append(("SAC Pendulum-v1", steps, sac.make_runner(scfg, env, params),
                 loop.broadcast_hparams(default_hparams(scfg, 1), seeds)))

    rows = []
    keys = jax.random.split(jax.random.key(0), seeds)
    for label, total, runner, hp in work:
        scan = jax.jit(jax.vmap(lambda k, h, r=runner: loop.scan_chunks(r, k, h)))
        jax.block_until_ready(scan(keys, hp))  # compile

        def chunked(ckpt: bool, r=runner, h=hp) -> None:
            tmp = tempfile.mkdtemp(prefix="jaxstab-overhead-")
            writer = runs.MetricsWriter(os.path.join(tmp, "metrics.jsonl"), seeds, 1)
            err, sys.stderr = sys.stderr, io.StringIO()  # the progress line is formatted
            try:
                carry, outs = loop.run(r, keys, h, progress=True, on_chunk=writer,
                                       checkpoint_dir=os.path.join(tmp, "ckpt") if ckpt
                                       else None)
                jax.block_until_ready(loop.finalize(r, carry, outs))
            finally:
                sys.stderr = err
                shutil.rmtree(tmp, ignore_errors=True)

        chunked(False)  # compile the chunk program
        jax.block_until_ready(loop.finalize(runner, *loop.run(runner, keys, hp, progress=False)))
        times: dict[str, list[float]] = {"scan": [], "chunked": [], "chunked+ckpt": []}
        for _ in range(repeats):
            t0 = time.perf_counter()
            jax.block_until_ready(scan(keys, hp))
            times["scan"].append(time.perf_counter() - t0)
            t0 = time.perf_counter()
            chunked(False)
            times["chunked"].append(time.perf_counter() - t0)
            t0 = time.perf_counter()
            chunked(True)
            times["chunked+ckpt"].append(time.perf_counter() - t0)
        med = {k: float(np.median(v)) for k, v in times.items()}
        rows.append([label, seeds, total, runner.num_chunks, round(med["scan"], 3),
                     round(med["chunked"], 3), f"{100 * (med['chunked'] / med['scan'] - 1):+.1f}%",
                     round(med["chunked+ckpt"], 3),
                     f"{100 * (med['chunked+ckpt'] / med['scan'] - 1):+.1f}%"])
        print(rows[-1], flush=True)
    load = os.getloadavg() if hasattr(os, "getloadavg") else None
    notes = (f"Median of {repeats} interleaved repeats after warm-up (compilation excluded). "
             "'chunked' = jaxstab.training.loop.run with the progress line and the run "
             "directory's metrics.jsonl writer (what `jaxstab train` does); '+ckpt' adds an "
             "orbax checkpoint of the carry and outputs after every chunk. Load average at the "
             f"end: {load}. On a shared machine the ratios are noisy: rerun on a quiet one.")
    name = "bench_loop_overhead" + ("_quick" if quick else "")
    return write_results(name, "Chunked training driver vs one compiled scan",
                         ["workload", "seeds", "steps/seed", "chunks", "scan s", "chunked s",
                          "overhead", "chunked+ckpt s", "overhead (ckpt)"], rows, notes)


# ----------------------------------------------------------------------------- runner
def run_suite(suite: str, only: Sequence[str] | None = None, *, dry_run: bool = False,
              timeout: float | None = None) -> list[dict[str, Any]]:
    """Run a suite; returns one record per benchmark (name, command, status, seconds)."""
    names = discover()
    if only:
        bad = [n for n in only if n not in names]
        if bad:
            raise SystemExit(f"unknown benchmark(s) {bad}; valid: {', '.join(names)}")
        names = [n for n in names if n in only]
    records = []
    snap = _snapshot_results() if suite == "quick" and not dry_run else None
    try:
        for name in names:
            if name in BUILTIN:
                cmd = [sys.executable, "-m", "benchmarks.run", "--builtin", name] + (
                    ["--quick"] if suite == "quick" else [])
            else:
                args = script_args(name, suite)
                if args is None:
                    records.append({"name": name, "status": "skipped", "seconds": 0.0,
                                    "command": ""})
                    continue
                cmd = [sys.executable, os.path.join("benchmarks", name + ".py"), *args]
            shown = " ".join(["python"] + cmd[1:])
            print(f"== {name}: {shown}", flush=True)
            if dry_run:
                records.append({"name": name, "status": "dry-run", "seconds": 0.0,
                                "command": shown})
                continue
            t0 = time.perf_counter()
            try:
                rc = subprocess.run(cmd, cwd=ROOT, timeout=timeout).returncode
                status = "ok" if rc == 0 else f"failed (exit {rc})"
            except subprocess.TimeoutExpired:
                status = f"timeout ({timeout} s)"
            records.append({"name": name, "status": status, "command": shown,
                            "seconds": round(time.perf_counter() - t0, 1)})
    finally:
        if snap is not None:
            _restore_results(snap)
    return records


def main(argv: Sequence[str] | None = None) -> int:
    """CLI of ``python -m benchmarks.run`` (and ``jaxstab bench``); returns the exit code."""
    p = argparse.ArgumentParser(prog="python -m benchmarks.run", description=__doc__.split("\n")[0])
    p.add_argument("--suite", default="quick", choices=SUITES)
    p.add_argument("--only", nargs="+", default=None, help="benchmark names (see --list)")
    p.add_argument("--list", action="store_true", help="list benchmarks and their arguments")
    p.add_argument("--dry-run", action="store_true", help="print the commands only")
    p.add_argument("--timeout", type=float, default=None, help="per-benchmark limit (s)")
    p.add_argument("--builtin", default=None, choices=BUILTIN, help=argparse.SUPPRESS)
    p.add_argument("--quick", action="store_true", help=argparse.SUPPRESS)
    args = p.parse_args(argv)
    if args.builtin == "loop_overhead":
        bench_loop_overhead(quick=args.quick)
        return 0
    if args.list:
        for name in discover():
            a = {s: (["(built in)"] if name in BUILTIN else script_args(name, s))
                 for s in SUITES}
            print(f"{name:22s} " + "  ".join(
                f"{s}: {'skipped' if v is None else ' '.join(v) or '(defaults)'}"
                for s, v in a.items()))
        return 0
    records = run_suite(args.suite, args.only, dry_run=args.dry_run, timeout=args.timeout)
    if not args.dry_run:
        from benchmarks._common import write_results

        write_results(f"bench_suite_{args.suite}", f"Benchmark suite '{args.suite}'",
                      ["benchmark", "status", "seconds", "command"],
                      [[r["name"], r["status"], r["seconds"], r["command"]] for r in records],
                      "Produced by `python -m benchmarks.run --suite "
                      f"{args.suite}` (each benchmark's own table is in its result file).")
    failed = [r for r in records if r["status"] not in ("ok", "skipped", "dry-run")]
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
