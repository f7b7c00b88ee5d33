"""Side-by-side peer benchmarks: jaxstab vs rejax, Stable-Baselines3 and SBX, in one run.

Each library runs in its own process: jaxstab's runners (``benchmarks/peers/jaxstab_*.py``) with
this interpreter, the peers' runners (``benchmarks/peers/{rejax,sb3,sbx}_*.py``) with the
interpreters of their virtual environments (rejax needs gymnax<1.0, SB3 needs torch; see
``benchmarks/peers/setup.sh``). Jobs are INTERLEAVED (ours, peer, ours, peer, ...) so that load
from other processes on a shared machine hits both sides alike. Every runner prints one JSON
line::

    {"peer", "algo", "env", "steps", "seeds", "compile_s", "run_s", "steps_per_s",
     "final_returns": [per seed], "eval", "versions", ...}

Suites:

* ``sac``: Pendulum-v1, 64x64 networks, batch 256, one gradient step per env step, lr 1e-3;
  jaxstab and rejax at 20k steps x 1 seed (timing, repeated), 20k x 8 and 50k x 8 vmapped
  seeds; SB3 and SBX at a reduced budget (3k steps, 1 seed) for steps/s only. Targets (issue 3):
  >= 1.5x rejax at 1 and 8 seeds, >= 15x SB3, better learning than rejax at equal budget
  (final returns, and the evaluation curves of both: mean at every evaluation, area under the
  curve, a figure in ``benchmarks/results/figures/bench_peers_sac_curves.png``).
* ``ppo``: CartPole-v1, PureJaxRL hyperparameters, 500k steps, 1 and 16 vmapped seeds for
  jaxstab (all default stabilizers on) and rejax; SB3 PPO at 30k steps for steps/s. Targets
  (issue 4): >= 1.2x rejax, >= 80x SB3.

Writes ``benchmarks/results/bench_peers_<suite>_<platform>.{md,json}`` (``--quick``:
``bench_peers_<suite>_quick_*``) through :func:`benchmarks._common.write_results`.

Extra rows: ``--{sac,ppo}-seeds-per-batch B`` runs jaxstab's N-seed jobs also in groups of B
(``map_seeds``); ``--cpu-devices D`` runs every N-seed pair also with the seeds split over D CPU
devices (ours through ``jaxstab.distributed.sweep``, rejax through the same ``shard_map`` in its
runner), compared with rejax on one device and on the same devices. Repetitions of a pair run
with distinct seeds (``--seed 1000 * r``) and their returns are pooled.

Usage: ``python benchmarks/bench_peers.py --suite sac|ppo|all [--quick] [--peers-dir DIR]``.
First create the peer environments: ``bash benchmarks/peers/setup.sh [DIR]`` (default DIR
``.venv-peers`` in the repository root).
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import os
import re
import subprocess
import sys
import time
from typing import Any, Sequence

import numpy as np

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
PEERS_DIR_DEFAULT = os.path.join(ROOT, ".venv-peers")
RUNNERS = os.path.join(ROOT, "benchmarks", "peers")

#: library -> (venv name under --peers-dir, or None for this interpreter)
VENVS = {"jaxstab": None, "rejax": "rejax", "sb3": "sb3", "sbx": "sb3"}

#: issue targets: (comparison key, minimum ratio ours / peer)
SAC_TARGETS = {"rejax_1": 1.5, "rejax_n": 1.5, "sb3": 15.0}
PPO_TARGETS = {"rejax_1": 1.2, "rejax_n": 1.2, "sb3": 80.0}

SAC_SETTINGS = (
    "Pendulum-v1, actor and twin critics 64x64 (ReLU), batch 256, 1 environment, one gradient "
    "step per environment step, replay capacity = steps, learning after 1000 steps, lr 1e-3 "
    "(actor, critics, temperature), gamma 0.99, tau 0.005, target entropy -1. jaxstab and rejax "
    "run all seeds in one jit(vmap(train)) (jaxstab's train, built with its default "
    "seed_vmap=\"auto\" since 2026-12-06, runs that vmap's seeds one after another inside the "
    "program on the CPU; rows \"jaxstab, vectorized\" batch every operation over the seeds, as "
    "jaxstab did before and rejax does); SB3 and SBX one seed on a reduced budget, for steps/s"
    " only (their steps/s is the rate after the 1000 warm-up steps, when every step does a "
    "gradient step; jaxstab's and rejax's include the cheap warm-up steps, 5% of 20k and 2% of "
    "50k, which flatters them by at most that much vs SB3/SBX). rejax clips gradients element-"
    "wise (off by default), jaxstab by global norm 10; rejax fills its first 1000 steps with its "
    "policy, jaxstab with uniform random actions."
)
PPO_SETTINGS = (
    "CartPole-v1, PureJaxRL hyperparameters: 4 envs x 128 steps, 4 epochs, 4 minibatches, lr "
    "2.5e-4 annealed linearly to 0, clip 0.2, ent 0.01, vf 0.5, max grad norm 0.5, gamma 0.99, "
    "lambda 0.95, 64x64 tanh networks; 976 updates = 499,712 steps for 500k. jaxstab with every "
    "default stabilizer on (log-ratio clamp, non-finite update skip; the opt-in ones, early "
    "stopping, reward normalization, rollback, quantile head, are off) and value clipping 0.2 (as"
    " PureJaxRL). rejax: separate actor/critic optimizers, element-wise gradient clipping (its "
    "design), value clipping at clip_eps 0.2 (as ours). SB3: DummyVecEnv of 4, 1 torch thread, "
    "reduced budget for "
    "steps/s only."
)


@dataclasses.dataclass(frozen=True)
class Job:
    """One runner invocation: ``lib`` runs ``benchmarks/peers/<lib>_<algo>.py`` with ``args``."""

    lib: str
    algo: str
    steps: int
    seeds: int
    extra: tuple[str, ...] = ()

    @property
    def script(self) -> str:
        return os.path.join(RUNNERS, f"{self.lib}_{self.algo}.py")

    @property
    def key(self) -> tuple[str, int, int]:
        return (self.lib, self.steps, self.seeds)

    def argv(self) -> list[str]:
        return [self.script, "--steps", str(self.steps), "--seeds", str(self.seeds),
                *self.extra]


def last_json_with(stdout: str, key: str) -> dict[str, Any] | None:
    """The last stdout line that is a JSON object holding ``key`` (None if there is none).

    Runners print one such result line; libraries may print warnings (even JSON-ish text)
    before it.
    """
    for line in reversed(stdout.strip().splitlines()):
        line = line.strip()
        if not line.startswith("{"):
            continue
        try:
            obj = json.loads(line)
        except json.JSONDecodeError:
            continue
        if isinstance(obj, dict) and key in obj:
            return obj
    return None


def parse_result_line(stdout: str) -> dict[str, Any]:
    """The runner's result: the last stdout line that is a JSON object with a ``"peer"`` key.

    Args:
      stdout: the runner's whole standard output (libraries may print warnings before it).

    Returns:
      The decoded dict.

    Raises:
      ValueError: if no such line exists or required keys are missing.
    """
    obj = last_json_with(stdout, "peer")
    if obj is None:
        raise ValueError("no JSON result line with a 'peer' key in the runner's output:\n"
                         + stdout[-1000:])
    missing = {"steps", "seeds", "run_s", "steps_per_s", "final_returns"} - set(obj)
    if missing:
        raise ValueError(f"runner result lacks keys {sorted(missing)}: {json.dumps(obj)[:200]}")
    if len(obj["final_returns"]) != obj["seeds"]:
        raise ValueError(f"final_returns has {len(obj['final_returns'])} entries for "
                         f"{obj['seeds']} seeds")
    return obj


def add_peers_dir_argument(ap: argparse.ArgumentParser) -> None:
    """``--peers-dir``, shared by the scripts that run peers in their own environments."""
    ap.add_argument("--peers-dir", default=PEERS_DIR_DEFAULT,
                    help="directory holding the peer venvs made by benchmarks/peers/setup.sh")


def peer_python(lib: str, peers_dir: str) -> str:
    """Interpreter for ``lib``: this one for jaxstab, ``<peers_dir>/<venv>/bin/python`` else.

    Raises:
      FileNotFoundError: if the peer's environment does not exist (with the setup command).
    """
    venv = VENVS[lib]
    if venv is None:
        return sys.executable
    py = os.path.join(peers_dir, venv, "bin", "python")
    if not os.path.exists(py):
        raise FileNotFoundError(
            f"peer environment for {lib!r} not found at {os.path.join(peers_dir, venv)}; create "
            f"the peer environments with `bash benchmarks/peers/setup.sh {peers_dir}` (or pass "
            "--peers-dir to where they are)")
    return py


def run_job(job: Job, peers_dir: str, *, timeout: float = 3600.0,
            env: dict[str, str] | None = None,
            cpu_affinity: set[int] | None = None) -> dict[str, Any]:
    """Run one job in a subprocess and return its parsed result (or an ``{"error": ...}`` dict).

    The child gets this process's environment (so the same ``XLA_FLAGS``, including jaxstab's
    CPU scheduler flag, reach every JAX library) plus ``env``; with ``cpu_affinity`` (a set of
    CPU numbers, Linux) it runs pinned to those cores (``os.sched_setaffinity``, as ``taskset``
    does; JAX sizes its CPU thread pool from the affinity mask). The pinning happens in a tiny
    bootstrap that then ``exec`` s the runner (the affinity survives ``exec``), not in a
    ``preexec_fn``, which would ``fork`` this multithreaded (JAX) process.
    """
    py = peer_python(job.lib, peers_dir)
    child_env = {**os.environ, **(env or {})}
    argv = [py, *job.argv()]
    if cpu_affinity is not None:
        argv = [py, "-c", "import os, sys; os.sched_setaffinity(0, "
                f"{sorted(int(c) for c in cpu_affinity)}); "
                "os.execv(sys.executable, [sys.executable] + sys.argv[1:])", *job.argv()]
    t0 = time.perf_counter()
    try:
        proc = subprocess.run(argv, cwd=ROOT, env=child_env, capture_output=True,
                              text=True, timeout=timeout)
    except subprocess.TimeoutExpired:
        return {"peer": job.lib, "steps": job.steps, "seeds": job.seeds,
                "error": f"timed out after {timeout:.0f} s (deadlock or overload)"}
    wall = time.perf_counter() - t0
    if proc.returncode != 0:
        tail = (proc.stderr or proc.stdout)[-800:]
        return {"peer": job.lib, "steps": job.steps, "seeds": job.seeds,
                "error": f"exit code {proc.returncode}: {tail}"}
    try:
        res = parse_result_line(proc.stdout)
    except ValueError as err:
        return {"peer": job.lib, "steps": job.steps, "seeds": job.seeds, "error": str(err)}
    res["wall_s"] = round(wall, 2)
    return res


def summarize(values: Sequence[float]) -> dict[str, float]:
    """Mean, population std, min and max of ``values`` (a non-empty sequence of floats)."""
    a = np.asarray(values, np.float64)
    if a.size == 0:
        raise ValueError("values must be non-empty")
    return {"mean": float(a.mean()), "std": float(a.std()), "min": float(a.min()),
            "max": float(a.max())}


def rate(res: dict[str, Any]) -> float:
    """Throughput used for ratios: ``steps_per_s_learning`` when present (SB3/SBX SAC: the rate
    after the warm-up steps), else ``steps_per_s``."""
    return float(res.get("steps_per_s_learning", res["steps_per_s"]))


def aggregate(results: Sequence[dict[str, Any]]) -> dict[tuple[str, int, int], dict[str, Any]]:
    """Group results by (library, steps, seeds): median rate / run / compile time over the
    repetitions, and the final returns and (when the runners report ``eval_curve``) the
    evaluation curves of every repetition pooled (one entry per seed and repetition; the
    repetitions of :func:`plan` run with distinct ``--seed`` values, so they are distinct runs)."""
    groups: dict[tuple[str, int, int], list[dict[str, Any]]] = {}
    for r in results:
        groups.setdefault((r["peer"], int(r["steps"]), int(r["seeds"])), []).append(r)
    out = {}
    for key, rs in groups.items():
        ok = [r for r in rs if "error" not in r]
        agg: dict[str, Any] = {"reps": len(ok), "errors": [r["error"] for r in rs if "error" in r]}
        if ok:
            agg["rate"] = float(np.median([rate(r) for r in ok]))
            agg["best"] = float(np.max([rate(r) for r in ok]))
            agg["rates"] = [rate(r) for r in ok]
            agg["run_s"] = float(np.median([r["run_s"] for r in ok]))
            cs = [r["compile_s"] for r in ok if r.get("compile_s") is not None]
            agg["compile_s"] = float(np.median(cs)) if cs else None
            agg["final_returns"] = [x for r in ok for x in r["final_returns"]]
            agg["returns"] = summarize(agg["final_returns"])
            curves = [r for r in ok if r.get("eval_curve")]
            if curves:
                agg["eval_curve"] = [c for r in curves for c in r["eval_curve"]]
                agg["eval_steps"] = curves[-1]["eval_steps"]
            agg["eval"] = ok[-1].get("eval", "")
            agg["versions"] = ok[-1].get("versions", {})
        out[key] = agg
    return out


def ratio_rows(agg: dict, ours_1: tuple, ours_n: tuple, rejax_1: tuple, rejax_n: tuple,
               slow_peers: Sequence[tuple], targets: dict[str, float],
               ours_g: tuple | None = None,
               extra_pairs: Sequence[tuple[tuple, tuple]] = (),
               budget_pairs: Sequence[tuple[tuple, tuple]] = ()) -> list[list[Any]]:
    """Rows ``[comparison, ours steps/s, peer steps/s, ratio, best-of ratio, target, met]``.

    Steps/s are medians over repetitions; "best-of ratio" divides the best (highest) steps/s of
    each side, the least load-disturbed estimate on a shared machine; "met" uses the median
    ratio.

    ``ours_1``/``rejax_1`` etc. are aggregate keys; ``ours_g`` (optional) the N-seed jaxstab
    run with its seeds in groups, compared with ``rejax_n``; ``extra_pairs`` more N-seed
    ``(ours, peer)`` pairs (e.g. both sides on several CPU devices), each held to the N-seed
    target; ``budget_pairs`` N-seed pairs at a second budget (SAC's 50k steps), named with their
    budget and held to the same target; ``slow_peers`` are keys of the reduced-budget peers
    (SB3, SBX), compared with ``ours_1``. A target of None is informational. Missing or failed
    entries give a row with ``n/a``.
    """
    rows = []

    def row(name: str, a: tuple, b: tuple, target: float | None) -> None:
        ra, rb = agg.get(a, {}).get("rate"), agg.get(b, {}).get("rate")
        tgt = f">= {target}x" if target else "-"
        if ra is None or rb is None:
            rows.append([name, "n/a" if ra is None else round(ra), "n/a" if rb is None
                         else round(rb), "n/a", "n/a", tgt, "n/a"])
            return
        q = ra / rb
        qb = agg[a]["best"] / agg[b]["best"]
        met = "-" if target is None else ("yes" if q >= target else "NO")
        rows.append([name, round(ra), round(rb), f"{q:.2f}x", f"{qb:.2f}x", tgt, met])

    row(f"vs rejax, {ours_1[2]} seed", ours_1, rejax_1, targets.get("rejax_1"))
    row(f"vs rejax, {ours_n[2]} seeds", ours_n, rejax_n, targets.get("rejax_n"))
    if ours_g is not None:
        row(f"{ours_g[0]} vs rejax, {ours_g[2]} seeds", ours_g, rejax_n, targets.get("rejax_n"))
    for a, b in extra_pairs:
        row(f"{a[0]} vs {b[0]}, {a[2]} seeds", a, b, targets.get("rejax_n"))
    for a, b in budget_pairs:
        row(f"{a[0]} vs {b[0]}, {a[2]} seeds, {a[1]} steps", a, b, targets.get("rejax_n"))
    for k in slow_peers:
        row(f"vs {k[0]} (1 seed, {k[1]} steps)", ours_1, k, targets.get(k[0]))
    return rows


def learning_rows(agg: dict, pairs: Sequence[tuple[tuple, tuple]]) -> list[list[Any]]:
    """Rows ``[budget, ours mean +- std (min..max), rejax ..., better]`` for equal-budget pairs;
    "better" = ours' mean final return is higher, flagged when the difference is within two
    standard errors of the difference of means (sample stds, ``std / sqrt(n - 1)`` each)."""
    rows = []
    for ours, peer in pairs:
        a, b = agg.get(ours, {}).get("returns"), agg.get(peer, {}).get("returns")
        fmt = (lambda s: "n/a" if s is None else
               f"{s['mean']:.1f} +- {s['std']:.1f} ({s['min']:.0f} .. {s['max']:.0f})")
        if a is None or b is None:
            better = "n/a"
        else:
            two_se = _two_se(np.asarray(agg[ours]["final_returns"], np.float64),
                             np.asarray(agg[peer]["final_returns"], np.float64))
            diff = a["mean"] - b["mean"]
            better = "yes" if diff > 0 else "NO"
            if abs(diff) < two_se:
                better += f" (difference {diff:+.1f} within 2 standard errors, {two_se:.1f})"
        label = f"{ours[1]} steps x {ours[2]} seeds"
        if ours[0] != "jaxstab" or peer[0] != "rejax":  # e.g. "jaxstab, groups of 4"
            label += f" ({ours[0]}" + (f" vs {peer[0]})" if peer[0] != "rejax" else ")")
        rows.append([label, fmt(a), fmt(b), better])
    return rows


def _two_se(a: np.ndarray, b: np.ndarray) -> float:
    """Two standard errors of ``mean(a) - mean(b)`` (sample standard deviations)."""
    return float(2 * np.sqrt(np.var(a, ddof=1) / len(a) + np.var(b, ddof=1) / len(b)))


def curve_rows(agg: dict, ours: tuple, peer: tuple) -> tuple[list[list[Any]], str] | None:
    """Learning curves of an equal-budget pair, evaluation by evaluation.

    Rows ``[env steps, ours mean +- std, peer mean +- std, difference]`` at every evaluation
    both sides report at the same step, then a row "area under the curve" (per run: the mean of
    its evaluations; then mean +- std over runs). Verdict: "yes" when ours' area is higher by
    more than two standard errors of the difference, "NO" when lower by more, else "tie"
    (difference within two standard errors). None when a side has no ``eval_curve``.

    Returns:
      ``(rows, verdict)`` or None.
    """
    a, b = agg.get(ours, {}), agg.get(peer, {})
    if not a.get("eval_curve") or not b.get("eval_curve"):
        return None
    ca, cb = np.asarray(a["eval_curve"], np.float64), np.asarray(b["eval_curve"], np.float64)
    common = [s for s in a["eval_steps"] if s in b["eval_steps"]]
    ia = [a["eval_steps"].index(s) for s in common]
    ib = [b["eval_steps"].index(s) for s in common]
    if not common or len(ca) < 2 or len(cb) < 2:
        return None
    ca, cb = ca[:, ia], cb[:, ib]

    def cell(x: np.ndarray) -> str:
        return f"{x.mean():.1f} +- {x.std(ddof=1):.1f}"

    rows = [[s, cell(ca[:, j]), cell(cb[:, j]), f"{ca[:, j].mean() - cb[:, j].mean():+.1f}"]
            for j, s in enumerate(common)]
    auc_a, auc_b = ca.mean(1), cb.mean(1)
    diff, two_se = auc_a.mean() - auc_b.mean(), _two_se(auc_a, auc_b)
    rows.append(["area under the curve (mean of the evaluations)", cell(auc_a), cell(auc_b),
                 f"{diff:+.1f} (2 standard errors: {two_se:.1f})"])
    verdict = "tie" if abs(diff) <= two_se else ("yes" if diff > 0 else "NO")
    return rows, verdict


def curve_figure(agg: dict, pairs: Sequence[tuple[tuple, tuple]], path: str) -> str | None:
    """PNG of the evaluation curves (mean line, min-max band) of every library in ``pairs``."""
    keys = [k for pair in pairs for k in pair if agg.get(k, {}).get("eval_curve")]
    keys = list(dict.fromkeys(keys))
    if not keys:
        return None
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(8, 4.8))
    for k in keys:
        c = np.asarray(agg[k]["eval_curve"], np.float64)
        x = np.asarray(agg[k]["eval_steps"])
        (line,) = ax.plot(x, c.mean(0), lw=2, marker="o", ms=3,
                          label=f"{k[0]}, {k[1]} steps ({len(c)} runs)")
        ax.fill_between(x, c.min(0), c.max(0), color=line.get_color(), alpha=0.15)
    ax.set_xlabel("environment steps")
    ax.set_ylabel("deterministic evaluation return")
    ax.set_title("Evaluation curves: mean over runs, band = min..max")
    ax.grid(alpha=0.3)
    ax.legend()
    os.makedirs(os.path.dirname(path), exist_ok=True)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path


def _runner_common():
    """``benchmarks/peers/_runner_common.py`` (standard library and NumPy only), whose
    :func:`jaxstab_name` names the rows jaxstab's runners report."""
    import importlib.util

    spec = importlib.util.spec_from_file_location("_bench_peers_runner_common",
                                                  os.path.join(RUNNERS, "_runner_common.py"))
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


_RC = _runner_common()

#: library name of jaxstab's SAC runs built with ``seed_vmap="vectorize"`` (the name
#: ``benchmarks/peers/jaxstab_sac.py --vectorize 1`` reports).
VECTORIZED_NAME = _RC.VECTORIZED_NAME


def grouped_name(seeds_per_batch: int) -> str:
    """Library name of jaxstab's runs with ``--seeds-per-batch`` (its runners report it)."""
    return _RC.jaxstab_name(seeds_per_batch, 0)


def plan(suite: str, quick: bool, repeats: int, *, repeats_n: int = 1,
         sac_big_steps: int = 50_000, seeds_per_batch: int = 0,
         cpu_devices: int = 0, vectorized: bool = False) -> dict[str, Any]:
    """Interleaved job list and the keys used in the ratio tables for one suite.

    ``repeats``: interleaved repetitions of the 1-seed (jaxstab, rejax) timing pair;
    ``repeats_n``: of each N-seed pair; ``sac_big_steps``: the second SAC budget (8 seeds;
    0 = only the first budget); ``seeds_per_batch`` > 0: every N-seed jaxstab job is followed
    by the same job with its seeds run in groups of that size
    (``jaxstab.training.loop.map_seeds``), compared with rejax in extra rows; ``cpu_devices``
    > 0: every N-seed pair is followed by the same pair with the seeds split over that many
    CPU devices (ours: ``jaxstab.distributed.sweep``; rejax: the same ``shard_map`` written in
    its runner), compared with rejax both ways (one device, and the same devices);
    ``vectorized`` (SAC only): every 8-seed jaxstab job is followed by the same job with
    ``make_train(..., seed_vmap="vectorize")`` ("jaxstab, vectorized": every operation batched
    over the seeds, where the default vmap loops over them on the CPU), compared with rejax in
    extra rows.

    Repetition r of a pair runs with ``--seed 1000 * r`` on both sides (same seeds for ours and
    the peer, distinct runs across repetitions), so the returns of all repetitions are pooled.
    """
    def seed(r: int) -> tuple[str, ...]:
        return ("--seed", str(1000 * r)) if r else ()

    if vectorized and suite != "sac":
        raise ValueError("vectorized rows exist for the SAC suite only")

    def grouped(algo: str, steps: int, n: int, r: int) -> list[Job]:
        jobs = []
        if seeds_per_batch > 0:
            jobs.append(Job("jaxstab", algo, steps, n,
                            ("--seeds-per-batch", str(seeds_per_batch)) + seed(r)))
        if vectorized:
            jobs.append(Job("jaxstab", algo, steps, n, ("--vectorize", "1") + seed(r)))
        return jobs

    def pair(algo: str, steps: int, n: int, r: int) -> list[Job]:
        jobs = [Job("jaxstab", algo, steps, n, seed(r)), *grouped(algo, steps, n, r),
                Job("rejax", algo, steps, n, seed(r))]
        if cpu_devices > 0:
            dev = ("--cpu-devices", str(cpu_devices)) + seed(r)
            jobs += [Job("jaxstab", algo, steps, n, dev), Job("rejax", algo, steps, n, dev)]
        return jobs

    budget: list[tuple[tuple, tuple]] = []  # N-seed pairs at SAC's second budget
    if suite == "sac":
        steps, big, n, slow = ((2_000, 2_000, 2, 1_300) if quick
                               else (20_000, sac_big_steps or 20_000, 8, 3_000))
        jobs = [Job("jaxstab", "sac", steps, 1), Job("rejax", "sac", steps, 1),
                Job("sb3", "sac", slow, 1), Job("sbx", "sac", slow, 1)]
        for r in range(1, max(repeats, 1)):
            jobs += [Job("jaxstab", "sac", steps, 1, seed(r)),
                     Job("rejax", "sac", steps, 1, seed(r))]
        for r in range(max(repeats_n, 1)):
            jobs += pair("sac", steps, n, r)
        if big != steps:
            for r in range(max(repeats_n, 1)):
                jobs += pair("sac", big, n, r)
        learn = [(("jaxstab", steps, n), ("rejax", steps, n))]
        if big != steps:
            learn.append((("jaxstab", big, n), ("rejax", big, n)))
            budget = [(("jaxstab", big, n), ("rejax", big, n))]
            if seeds_per_batch > 0:
                grouped_big = (grouped_name(seeds_per_batch), big, n)
                budget.append((grouped_big, ("rejax", big, n)))
                learn.append((grouped_big, ("rejax", big, n)))
            if vectorized:
                vec_big = (VECTORIZED_NAME, big, n)
                budget.append((vec_big, ("rejax", big, n)))
                learn.append((vec_big, ("rejax", big, n)))
            if cpu_devices > 0:
                ours_big = (f"jaxstab, {cpu_devices} CPU devices", big, n)
                rejax_big = (f"rejax, {cpu_devices} CPU devices", big, n)
                budget += [(ours_big, ("rejax", big, n)), (ours_big, rejax_big)]
                learn.append((ours_big, rejax_big))
        if seeds_per_batch > 0:
            learn.append(((grouped_name(seeds_per_batch), steps, n), ("rejax", steps, n)))
        slow_keys = [("sb3", slow, 1), ("sbx", slow, 1)]
        targets = SAC_TARGETS
    elif suite == "ppo":
        steps, n, slow = (20_480, 2, 2_048) if quick else (500_000, 16, 30_000)
        steps = steps // 512 * 512
        slow = slow // 512 * 512
        jobs = [Job("jaxstab", "ppo", steps, 1), Job("rejax", "ppo", steps, 1),
                Job("sb3", "ppo", slow, 1)]
        for r in range(1, max(repeats, 1)):
            jobs += [Job("jaxstab", "ppo", steps, 1, seed(r)),
                     Job("rejax", "ppo", steps, 1, seed(r))]
        for r in range(max(repeats_n, 1)):
            jobs += pair("ppo", steps, n, r)
        learn = [(("jaxstab", steps, n), ("rejax", steps, n))]
        if seeds_per_batch > 0:
            learn.append(((grouped_name(seeds_per_batch), steps, n), ("rejax", steps, n)))
        slow_keys = [("sb3", slow, 1)]
        targets = PPO_TARGETS
    else:
        raise ValueError(f"suite must be 'sac' or 'ppo', got {suite!r}")
    extra, extra_learn = [], []
    if vectorized:
        extra.append(((VECTORIZED_NAME, steps, n), ("rejax", steps, n)))
        extra_learn.append(extra[-1])
    if cpu_devices > 0:
        ours_d = (f"jaxstab, {cpu_devices} CPU devices", steps, n)
        d_pairs = [(ours_d, ("rejax", steps, n)),
                   (ours_d, (f"rejax, {cpu_devices} CPU devices", steps, n))]
        extra += d_pairs
        extra_learn.append(d_pairs[1])
    return {"jobs": jobs, "ours_1": ("jaxstab", steps, 1), "ours_n": ("jaxstab", steps, n),
            "rejax_1": ("rejax", steps, 1), "rejax_n": ("rejax", steps, n),
            "ours_g": ((grouped_name(seeds_per_batch), steps, n) if seeds_per_batch > 0
                       else None),
            "extra_pairs": extra, "budget_pairs": budget, "slow": slow_keys,
            "learn": learn + extra_learn,
            "targets": targets}


def main_table_rows(agg: dict) -> list[list[Any]]:
    order = {"jaxstab": 0, "rejax": 1, "sbx": 2, "sb3": 3}
    rows = []
    for key in sorted(agg, key=lambda k: (k[2], k[1], order.get(k[0], 9))):
        a = agg[key]
        if "rate" not in a:
            rows.append([key[0], key[1], key[2], "-", "-", "FAILED", "-", "-", 0,
                         "; ".join(e[:200] for e in a["errors"])])
            continue
        s = a["returns"]
        rows.append([key[0], key[1], key[2],
                     "-" if a["compile_s"] is None else round(a["compile_s"], 1),
                     round(a["run_s"], 1), round(a["rate"]),
                     f"{s['mean']:.1f} +- {s['std']:.1f}", f"{s['min']:.0f} / {s['max']:.0f}",
                     a["reps"], ", ".join(str(round(r)) for r in a["rates"])])
    return rows


def flags_note(xla_flags: str) -> str:
    """Say which XLA_FLAGS every JAX process ran with and whether jaxstab's CPU guard was on."""
    from jaxstab._platform import OPT_OUT_ENV, scheduler_flag_value

    if scheduler_flag_value(xla_flags) is False:
        which = ("jaxstab's CPU-scheduler guard on (set by `import jaxstab`, its default): XLA's "
                 "concurrency-optimized CPU scheduler is off for every library")
    else:
        which = (f"jaxstab's CPU-scheduler guard off (`{OPT_OUT_ENV}=0`): every library runs "
                 "with XLA's default concurrency-optimized CPU scheduler")
    return f"Every JAX process gets the same XLA_FLAGS (`{xla_flags}`): {which}."


def render(suite: str, quick: bool, p: dict[str, Any], results: list[dict[str, Any]],
           load0: Sequence[float], load1: Sequence[float], t_start: str, done: int,
           name: str | None = None, xla_flags: str | None = None,
           machine: dict[str, Any] | None = None) -> str:
    """Aggregate ``results`` (runner outputs, in run order) and write the suite's tables.

    ``name``: stem of the result files (default ``bench_peers_<suite>[_quick]``);
    ``xla_flags``: the ``XLA_FLAGS`` the jobs ran with (default: this process's); ``machine``:
    the machine description of the run (default: this process's, see ``write_results``).
    """
    if xla_flags is None:
        xla_flags = os.environ.get("XLA_FLAGS", "")
    from benchmarks._common import markdown_table, write_results

    agg = aggregate(results)
    rows = main_table_rows(agg)
    ratios = ratio_rows(agg, p["ours_1"], p["ours_n"], p["rejax_1"], p["rejax_n"], p["slow"],
                        p["targets"], p.get("ours_g"), p.get("extra_pairs", ()),
                        p.get("budget_pairs", ()))
    learning = learning_rows(agg, p["learn"])
    curves = []
    for ours, peer in p["learn"]:
        got = curve_rows(agg, ours, peer)
        if got is not None:
            curves.append((ours, peer, *got))
    name = name or (f"bench_peers_{suite}" + ("_quick" if quick else ""))
    figure = curve_figure(agg, p["learn"], os.path.join(ROOT, "benchmarks", "results", "figures",
                                                        f"{name}_curves.png"))
    libs = ("jaxstab", "rejax", "sb3", "sbx")
    versions = {lib: next((a["versions"] for k, a in agg.items()
                           if k[0] == lib and "versions" in a), None) for lib in libs}
    evals = {lib: next((a["eval"] for k, a in agg.items() if k[0] == lib and "eval" in a),
                       None) for lib in libs}
    settings = SAC_SETTINGS if suite == "sac" else PPO_SETTINGS
    notes = "\n\n".join([
        f"Jobs started {t_start} (the command is in the header above; a re-rendered file's "
        "header repeats the original options). Each library runs in its own "
        "process (peers in their own virtual environments, `benchmarks/peers/setup.sh`); jobs "
        "run interleaved (ours, peer, ours, peer, ...), one at a time. " + flags_note(xla_flags),
        settings,
        "Compile time is measured separately (`lower().compile()`"
        + ("; for SBX: a throw-away model's first 1300 steps, which includes jit compilation"
           if suite == "sac" else "")
        + "); run time is one call of the compiled program (median over repetitions where a "
        "configuration ran more than once; the last column lists each repetition's steps/s). "
        "steps/s = seeds x steps / run time. Repetitions of a pair run with distinct seeds "
        "(`--seed 1000 * r`, the same on both sides); their returns are pooled.",
        *(["Seed layouts other than the default vmap: \"jaxstab, vectorized\" is "
           "`make_train(..., seed_vmap=\"vectorize\")` in the same jit(vmap(train)); "
           "\"jaxstab, groups of B\" runs the seeds B at a "
           "time inside one program (`jaxstab.training.loop.map_seeds`); \"<library>, D CPU "
           "devices\" gives the process D CPU devices and splits the seeds over them, S/D per "
           "device (ours: `jaxstab.distributed.use_cpu_devices` + `sweep`, compile time = first "
           "call minus the fastest timed call; rejax: the same `shard_map` written into its "
           "runner). The same-layout row (both on D devices) compares the libraries; the row "
           "against rejax on one device compares what each ships."]
          if p.get("ours_g") or p.get("extra_pairs") else []),
        "Final return: " + "; ".join(f"{k}: {v}" for k, v in evals.items() if v) + ".",
        f"LOAD: this 2-core machine was shared with other jobs during the run: load average "
        f"(1/5/15 min) {load0[0]:.1f}/{load0[1]:.1f}/{load0[2]:.1f} at the start and "
        f"{load1[0]:.1f}/{load1[1]:.1f}/{load1[2]:.1f} at the end (of the jobs done so far). "
        "Absolute steps/s are noisy and lower than on a quiet machine; the interleaved "
        "ratios are more meaningful than the absolute numbers, and still noisy.",
        "Ratios (ours / peer steps/s, issue targets):\n\n"
        + markdown_table(["comparison", "jaxstab steps/s (median)", "peer steps/s (median)",
                          "ratio (medians)", "ratio (best of reps)", "target",
                          "met (medians)"], ratios),
        "Learning at equal budget (final return over seeds, mean +- std (min .. max)):\n\n"
        + markdown_table(["budget", "jaxstab", "rejax", "jaxstab better"], learning),
        *[(f"Learning curves, {o[1]} steps x {o[2]} seeds ({o[0]} vs {q[0]}; every "
           f"evaluation of every run, mean +- sample std over {len(agg[o]['eval_curve'])} vs "
           f"{len(agg[q]['eval_curve'])} runs). {o[0]} learns faster (area under the curve "
           f"higher by more than 2 standard errors): **{verdict}**.\n\n")
          + markdown_table(["env steps", o[0], q[0], "difference"], rows)
          for o, q, rows, verdict in curves],
        *([f"Figure: `benchmarks/results/figures/{os.path.basename(figure)}`."] if figure else []),
        "Versions: " + "; ".join(f"{k}: " + ", ".join(f"{n} {v}" for n, v in (vs or {}).items()
                                                         if v)
                                 for k, vs in versions.items() if vs) + ".",
    ])
    title = {"sac": "SAC on Pendulum-v1: jaxstab vs rejax, SBX, SB3",
             "ppo": "PPO on CartPole-v1: jaxstab vs rejax, SB3"}[suite]
    cols = ["library", "env steps", "seeds", "compile s", "run s", "env steps/s (all seeds)",
            "final return mean +- std", "min / max", "reps", "steps/s per rep"]
    if done < len(p["jobs"]):
        notes = (f"PARTIAL RESULTS: {done} of {len(p['jobs'])} jobs done so far (the "
                 "file is rewritten after every job).\n\n") + notes
    return write_results(name, title, cols, rows, notes,
                         extra={"results": results, "ratios": ratios, "learning": learning,
                                "curves": [{"ours": list(o), "peer": list(q), "rows": rows,
                                            "verdict": v} for o, q, rows, v in curves],
                                "load_start": list(load0), "load_end": list(load1),
                                "suite": suite, "quick": quick, "t_start": t_start,
                                "xla_flags": xla_flags,
                                "jobs_done": done, "jobs_planned": len(p["jobs"])},
                         machine=machine)


def with_eval_episodes(jobs: list[Job], episodes: int | None) -> list[Job]:
    """The jobs with ``--eval-episodes episodes`` added (every runner takes it; None: the
    runners' default of 10). More episodes lower the evaluation noise of the final returns
    (Pendulum's random start states make a 10-episode mean noisy) and add evaluation time to
    jaxstab's and rejax's timed programs (both evaluate inside them)."""
    if episodes is None:
        return list(jobs)
    if episodes < 1:
        raise ValueError(f"eval episodes must be >= 1, got {episodes}")
    return [dataclasses.replace(j, extra=j.extra + ("--eval-episodes", str(episodes)))
            for j in jobs]


def run_suite(suite: str, quick: bool, peers_dir: str, repeats: int, timeout: float, *,
              repeats_n: int = 1, sac_big_steps: int = 50_000, seeds_per_batch: int = 0,
              cpu_devices: int = 0, name: str | None = None,
              eval_episodes: int | None = None, vectorized: bool = False) -> str:
    """Run one suite's jobs interleaved, rewriting the result files after every job."""
    import benchmarks._common  # noqa: F401  (import jaxstab: its XLA_FLAGS reach the children)

    p = plan(suite, quick, repeats, repeats_n=repeats_n, sac_big_steps=sac_big_steps,
             seeds_per_batch=seeds_per_batch, cpu_devices=cpu_devices, vectorized=vectorized)
    p["jobs"] = with_eval_episodes(p["jobs"], eval_episodes)
    for lib in sorted({j.lib for j in p["jobs"]}):
        peer_python(lib, peers_dir)  # fail early with the setup hint
    load0 = os.getloadavg()
    t_start = time.strftime("%Y-%m-%d %H:%M:%S UTC", time.gmtime())
    results: list[dict[str, Any]] = []

    for i, job in enumerate(p["jobs"]):
        t0 = time.perf_counter()
        res = run_job(job, peers_dir, timeout=timeout)
        results.append(res)
        msg = res.get("error") or (f"{rate(res):.0f} steps/s, run {res['run_s']:.1f} s, "
                                   f"compile {res.get('compile_s')}, final "
                                   f"{np.mean(res['final_returns']):.1f}")
        print(f"[bench_peers {suite}] {i + 1}/{len(p['jobs'])} {job.lib} steps={job.steps} "
              f"seeds={job.seeds}: {msg} ({time.perf_counter() - t0:.0f} s wall, load "
              f"{os.getloadavg()[0]:.1f})", flush=True)
        if i + 1 < len(p["jobs"]) and not quick:
            render(suite, quick, p, results, load0, os.getloadavg(), t_start, i + 1, name)
    return render(suite, quick, p, results, load0, os.getloadavg(), t_start, len(p["jobs"]),
                  name)


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--suite", choices=["sac", "ppo", "all"], default="all")
    ap.add_argument("--quick", action="store_true", help="tiny budgets (smoke run)")
    add_peers_dir_argument(ap)
    ap.add_argument("--repeats", type=int, default=2,
                    help="interleaved repetitions of the 1-seed timing pairs")
    ap.add_argument("--repeats-n", type=int, default=1,
                    help="interleaved repetitions of each N-seed pair (distinct seeds)")
    ap.add_argument("--sac-big-steps", type=int, default=50_000,
                    help="second SAC budget at 8 seeds (0: only 20k)")
    ap.add_argument("--sac-seeds-per-batch", type=int, default=0, metavar="B",
                    help="also run jaxstab's 8-seed SAC jobs with the seeds in groups of B "
                         "(map_seeds); 0: not")
    ap.add_argument("--ppo-seeds-per-batch", type=int, default=0, metavar="B",
                    help="same for the 16-seed PPO jobs")
    ap.add_argument("--cpu-devices", type=int, default=0, metavar="D",
                    help="also run every N-seed pair with the seeds split over D CPU devices "
                         "(jaxstab.distributed.sweep; rejax through the same shard_map); 0: not")
    ap.add_argument("--sac-vectorized", action="store_true",
                    help="also run jaxstab's 8-seed SAC jobs with make_train(seed_vmap="
                         "'vectorize') (every operation batched over the seeds; the default "
                         "vmap loops over them on the CPU)")
    ap.add_argument("--timeout", type=float, default=3600.0, help="seconds per job")
    ap.add_argument("--eval-episodes", type=int, default=None, metavar="N",
                    help="evaluation episodes of every runner (default: the runners' 10); more "
                         "lower the noise of the final returns and slow the timed programs")
    ap.add_argument("--rerender", metavar="JSON",
                    help="rebuild the tables of --suite from a results JSON written by this "
                    "script (its raw runner outputs), without running anything")
    ap.add_argument("--name", metavar="STEM",
                    help="stem of the result files under benchmarks/results (default "
                    "bench_peers_<suite>); needs one --suite")
    args = ap.parse_args(argv)
    if args.name is not None and (args.suite == "all" or not re.fullmatch(r"[\w.-]+", args.name)):
        raise SystemExit("--name needs --suite sac or --suite ppo and a plain file stem "
                         f"(letters, digits, '_', '-', '.'), got {args.name!r}")
    if args.rerender:
        if args.suite == "all":
            raise SystemExit("--rerender needs --suite sac or --suite ppo")
        with open(args.rerender) as fh:
            data = json.load(fh)
        p = plan(args.suite, args.quick, args.repeats, repeats_n=args.repeats_n,
                 sac_big_steps=args.sac_big_steps,
                 seeds_per_batch=(args.sac_seeds_per_batch if args.suite == "sac"
                                  else args.ppo_seeds_per_batch), cpu_devices=args.cpu_devices,
                 vectorized=args.sac_vectorized and args.suite == "sac")
        found = re.search(r"\(started ([^)]*)\)", data.get("notes", ""))
        t_start = data.get("t_start") or (found.group(1) if found else data["machine"]["date"])
        render(args.suite, args.quick, p, data["results"], data["load_start"], data["load_end"],
               t_start, data.get("jobs_done", len(p["jobs"])), args.name,
               xla_flags=data.get("xla_flags", data["machine"].get("xla_flags", "")),
               machine=data["machine"])
        return
    peers_dir = os.path.abspath(args.peers_dir)
    if not os.path.isdir(peers_dir):
        raise SystemExit(f"--peers-dir {peers_dir} does not exist: create the peer environments "
                         f"with `bash benchmarks/peers/setup.sh {args.peers_dir}`")
    for suite in (["sac", "ppo"] if args.suite == "all" else [args.suite]):
        run_suite(suite, args.quick, peers_dir, args.repeats, args.timeout,
                  repeats_n=args.repeats_n, sac_big_steps=args.sac_big_steps,
                  seeds_per_batch=(args.sac_seeds_per_batch if suite == "sac"
                                   else args.ppo_seeds_per_batch), cpu_devices=args.cpu_devices,
                  name=args.name, eval_episodes=args.eval_episodes,
                  vectorized=args.sac_vectorized and suite == "sac")


if __name__ == "__main__":
    sys.path.insert(0, ROOT)
    main()
