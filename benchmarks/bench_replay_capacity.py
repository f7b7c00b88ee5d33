"""Replay-buffer cost against capacity: jaxstab.replay vs rejax's ReplayBuffer, side by side.

What one SAC environment step asks of the buffer (add one transition, sample a minibatch of
256), timed inside a jitted ``lax.scan`` at several capacities, for 1 seed and for 8 vmapped
seeds (time per seed). Each library runs in its own process (rejax in its peer environment,
``benchmarks/peers/setup.sh``) through ``benchmarks/peers/replay_sample.py``; the processes run
interleaved (jaxstab, rejax, jaxstab, rejax, ...) and each cell is the median over repetitions.

Why it matters: jaxstab samples uniformly with replacement (``jax.random.randint``, SB3's rule),
whose cost does not depend on the capacity; rejax samples without replacement with
``jax.random.choice(..., replace=False, p=...)`` over every slot, whose cost grows with the
capacity. This is most of the difference between the two libraries' SAC step rates in
``bench_peers.py --suite sac`` (replay capacity = the run's steps there: 20k and 50k; rejax's
default capacity is 131,072; SB3's is 1,000,000).

Usage: ``python benchmarks/bench_replay_capacity.py [--peers-dir DIR] [--repeats R] [--calls C]``.
Results: ``benchmarks/results/bench_replay_capacity_<platform>.md``.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time

import jax
import numpy as np

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, ROOT)

from benchmarks._common import write_results  # noqa: E402  (applies the CPU guard first)
from benchmarks.bench_peers import (  # noqa: E402
    add_peers_dir_argument, last_json_with, peer_python)

RUNNER = os.path.join(ROOT, "benchmarks", "peers", "replay_sample.py")
RESULTS_DIR = os.path.join(ROOT, "benchmarks", "results")
CAPACITIES = (20_000, 50_000, 131_072, 1_000_000)


def parse_line(stdout: str) -> dict:
    """The runner's result: the last stdout line that is a JSON object with a ``"replay"`` key.

    Raises:
      ValueError: if there is none.
    """
    obj = last_json_with(stdout, "replay")
    if obj is None or "us_per_step" not in obj:
        raise ValueError(f"no result line in the runner's output: {stdout[-500:]!r}")
    return obj


def sac_step_scale(platform: str, results_dir: str = RESULTS_DIR) -> str:
    """A sentence putting the buffer's cost next to a whole SAC step, read from the SAC results.

    Reads jaxstab's 1-seed Pendulum-v1 row of ``bench_peers_sac_20k50k_<platform>.json`` (written
    by ``bench_peers.py --suite sac``) so that the figure follows that file when it is re-run.
    Returns an empty string when the file or the row is missing or unreadable.
    """
    path = os.path.join(results_dir, f"bench_peers_sac_20k50k_{platform}.json")
    try:
        with open(path) as f:
            rows = json.load(f)["results"]
        row = next(r for r in rows
                   if r.get("peer") == "jaxstab" and r.get("seeds") == 1 and r.get("steps_per_s"))
    except (OSError, ValueError, KeyError, TypeError, StopIteration):
        return ""
    rate = float(row["steps_per_s"])
    return (f"For scale: one whole SAC environment step (acting, the update of actor, twin "
            f"critics and temperature, batch 256, 64x64) took {1e6 / rate:.0f} us for jaxstab at "
            f"1 seed in `results/{os.path.basename(path)[:-5]}.md` ({rate:.0f} steps/s, "
            f"{row['steps']} steps), where the replay capacity is the run's steps. ")


def run_one(lib: str, peers_dir: str, capacities, seeds: int, iters: int,
            timeout: float, calls: int = 3) -> dict:
    cmd = [peer_python(lib, peers_dir), RUNNER, "--lib", lib, "--seeds", str(seeds),
           "--iters", str(iters), "--repeats", str(calls),
           "--capacities", *[str(c) for c in capacities]]
    proc = subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True, timeout=timeout,
                          env={**os.environ, "PYTHONPATH": ROOT})
    if proc.returncode:
        raise RuntimeError(f"{lib} replay runner failed ({proc.returncode}): "
                           f"{proc.stderr[-1500:]}")
    return parse_line(proc.stdout)


def table(results: list[dict], capacities) -> list[list]:
    """Rows ``[capacity, seeds, jaxstab us, rejax us, rejax / jaxstab]`` (medians)."""
    rows = []
    for seeds in sorted({r["seeds"] for r in results}):
        for cap in capacities:
            med = {}
            for lib in ("jaxstab", "rejax"):
                vals = [r["us_per_step"][str(cap)] for r in results
                        if r["replay"] == lib and r["seeds"] == seeds]
                med[lib] = float(np.median(vals)) if vals else None
            a, b = med["jaxstab"], med["rejax"]
            rows.append([cap, seeds, "n/a" if a is None else round(a, 1),
                         "n/a" if b is None else round(b, 1),
                         "n/a" if a is None or b is None else f"{b / a:.1f}x"])
    return rows


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    add_peers_dir_argument(ap)
    ap.add_argument("--repeats", type=int, default=2, help="interleaved runs of each library")
    ap.add_argument("--iters", type=int, default=100, help="steps per timed scan")
    ap.add_argument("--capacities", type=int, nargs="+", default=list(CAPACITIES))
    ap.add_argument("--seeds", type=int, nargs="+", default=[1, 8])
    ap.add_argument("--calls", type=int, default=3,
                    help="timed calls per runner process (their median is the process's number)")
    ap.add_argument("--timeout", type=float, default=1800.0, help="seconds per runner process")
    args = ap.parse_args(argv)
    if args.repeats < 1 or args.iters < 1 or args.calls < 1 or min(args.seeds) < 1:
        raise SystemExit("--repeats, --iters, --calls and --seeds must be >= 1")
    peers_dir = os.path.abspath(args.peers_dir)
    peer_python("rejax", peers_dir)  # fail early with the setup hint
    results, load0 = [], os.getloadavg()
    for r in range(args.repeats):
        for seeds in args.seeds:
            for lib in ("jaxstab", "rejax"):
                t0 = time.perf_counter()
                res = run_one(lib, peers_dir, args.capacities, seeds, args.iters, args.timeout,
                              args.calls)
                results.append(res)
                print(f"[bench_replay_capacity] rep {r + 1} {lib} seeds={seeds}: "
                      f"{res['us_per_step']} ({time.perf_counter() - t0:.0f} s)", flush=True)
    load1 = os.getloadavg()
    rules = {r["replay"]: r["sampling"] for r in results}
    versions = {r["replay"]: r["version"] for r in results}
    notes = (
        "What one SAC environment step asks of the buffer: add 1 transition (Pendulum shapes: "
        "obs 3, action 1) to a full buffer and sample 256, inside one jitted lax.scan of "
        f"{args.iters} steps; microseconds per step and per seed (8 seeds: the step vmapped over "
        f"8 buffers, time / 8); median of {args.calls} timed calls per process, compile "
        "excluded; each "
        f"cell the median over {args.repeats} interleaved processes per library. Sampling rules: "
        + "; ".join(f"{k} {versions[k]}: {v}" for k, v in rules.items())
        + ". " + sac_step_scale(jax.devices()[0].platform)
        + "rejax's default capacity is 131,072, SB3's 1,000,000. "
        f"Load average (1/5/15 min): {load0[0]:.1f}/{load0[1]:.1f}/{load0[2]:.1f} at the start, "
        f"{load1[0]:.1f}/{load1[1]:.1f}/{load1[2]:.1f} at the end.")
    write_results("bench_replay_capacity",
                  "Replay buffer (add 1 + sample 256) against capacity: jaxstab vs rejax",
                  ["capacity", "seeds", "jaxstab us / step", "rejax us / step",
                   "rejax / jaxstab"], table(results, args.capacities), notes,
                  extra={"results": results})


if __name__ == "__main__":
    main()
