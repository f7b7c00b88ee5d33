"""Re-check the jax CPU deadlock (DESIGN.md platform note) on the installed JAX.

Runs the vmapped multi-seed program of tests/_vmapped_program.py in subprocesses with and
without ``--xla_cpu_enable_concurrency_optimized_scheduler=false`` (interleaved, several trials,
each with a timeout) and records whether each finished. Use it on every new JAX release to
decide whether jaxstab's default guard is still needed.

    python benchmarks/check_cpu_deadlock.py [--trials 3] [--timeout 300]
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from benchmarks._common import write_results  # noqa: E402
from jaxstab._platform import CPU_SCHEDULER_FLAG, OPT_OUT_ENV  # noqa: E402

PROGRAM = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "tests",
                       "_vmapped_program.py")


def run_once(with_guard: bool, seeds: int, steps: int, timeout: float) -> tuple[str, float]:
    env = dict(os.environ)
    env.pop("XLA_FLAGS", None)
    root = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    env["PYTHONPATH"] = os.pathsep.join(p for p in (root, env.get("PYTHONPATH", "")) if p)
    if with_guard:
        env.pop(OPT_OUT_ENV, None)
    else:
        env[OPT_OUT_ENV] = "0"
    t0 = time.perf_counter()
    try:
        out = subprocess.run([sys.executable, PROGRAM, "--seeds", str(seeds), "--steps", str(steps)],
                             env=env, capture_output=True, text=True, timeout=timeout)
        status = "finished" if out.returncode == 0 and "finished" in out.stdout else f"error rc={out.returncode}"
    except subprocess.TimeoutExpired:
        status = f"HUNG (>{timeout:.0f}s)"
    return status, time.perf_counter() - t0


def main() -> None:
    p = argparse.ArgumentParser()
    p.add_argument("--trials", type=int, default=3)
    p.add_argument("--seeds", type=int, default=2)
    p.add_argument("--steps", type=int, default=100_000)
    p.add_argument("--timeout", type=float, default=300.0)
    a = p.parse_args()
    rows = []
    for trial in range(a.trials):
        for guard in (True, False):
            status, secs = run_once(guard, a.seeds, a.steps, a.timeout)
            rows.append([trial, f"{CPU_SCHEDULER_FLAG}=false" if guard else "(none)", status, round(secs, 1)])
            print(rows[-1], flush=True)
    write_results("check_cpu_deadlock", "CPU deadlock re-check (vmapped multi-seed PPO-shaped program)",
                  ["trial", "scheduler flag", "status", "wall s"], rows,
                  notes=f"Program: tests/_vmapped_program.py --seeds {a.seeds} --steps {a.steps}.")


if __name__ == "__main__":
    main()
