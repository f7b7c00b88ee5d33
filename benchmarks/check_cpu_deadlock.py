"""Re-check the jax CPU deadlock (DESIGN.md platform note, README) on the installed JAX.

Runs, in subprocesses with and without ``--xla_cpu_enable_concurrency_optimized_scheduler=false``
(interleaved, several trials, each with a timeout):

* ``tests/_vmapped_init_program.py --init flax``: the minimal reproducer (vmapped LAPACK-QR
  orthogonal inits);
* ``tests/_vmapped_init_program.py --init jaxstab``: the same with jaxstab's LAPACK-free init;
* ``tests/_vmapped_program.py``: a PureJaxRL-shaped vmapped 2-seed PPO program.

and records whether each finished. Use it on every new JAX release to decide whether
jaxstab's default guard is still needed.

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

TESTS = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "tests")
PROGRAMS = {
    "init-flax": [os.path.join(TESTS, "_vmapped_init_program.py"), "--init", "flax"],
    "init-jaxstab": [os.path.join(TESTS, "_vmapped_init_program.py"), "--init", "jaxstab"],
}


def run_once(program: list[str], with_guard: bool, timeout: float) -> tuple[str, float]:
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
        out = subprocess.run([sys.executable, *program], env=env, capture_output=True, text=True, timeout=timeout)
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
    programs = dict(PROGRAMS)
    programs["ppo-shaped"] = [os.path.join(TESTS, "_vmapped_program.py"), "--seeds", str(a.seeds),
                              "--steps", str(a.steps)]
    rows = []
    for trial in range(a.trials):
        for name, program in programs.items():
            for guard in (True, False):
                status, secs = run_once(program, guard, a.timeout)
                rows.append([trial, name, f"{CPU_SCHEDULER_FLAG}=false" if guard else "(none)", status,
                             round(secs, 1)])
                print(rows[-1], flush=True)
    write_results("check_cpu_deadlock", "CPU deadlock re-check (vmapped multi-seed programs)",
                  ["trial", "program", "scheduler flag", "status", "wall s"], rows,
                  notes="Programs: tests/_vmapped_init_program.py (--init flax / jaxstab), "
                        f"tests/_vmapped_program.py --seeds {a.seeds} --steps {a.steps}. "
                        "A hang is intermittent: 'finished' in a few trials is evidence, not proof.")


if __name__ == "__main__":
    main()
