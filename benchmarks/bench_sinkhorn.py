"""Benchmark jaxstab.ops.sinkhorn: implicit vs unrolled gradients, and side by side with ott-jax.

Part 1 (iterations): forward+backward wall time and XLA compiled peak memory of the implicit
(custom VJP) and unrolled (reverse-mode through a scan) gradients for 10, 100 and 1000 Sinkhorn
iterations (tol = 0, so every problem runs the full count), B=256, m=M=32.

Part 2 (ott-jax): at equal tolerance, B=256 problems of size m=M=32 and m=M=128 (squared
Euclidean costs of uniform points in the unit square, epsilon=0.05, uniform marginals):
forward time, backward time (the VJP alone, from saved residuals), forward+backward time of
L = sum(W * P), and accuracy (row/column L1 marginal errors of each plan, computed in float64
NumPy; relative difference of the two gradients; difference to a float64 reference gradient).
ott-jax: ``Sinkhorn(threshold=tol, lse_mode=True, implicit_diff=ImplicitDiff())`` on
``Geometry(cost_matrix=C, epsilon=eps)``, vmapped over the batch (its defaults otherwise:
error checked every 10 iterations, lineax CG for the implicit solve).

Timings are medians over interleaved runs (ours, ott, ours, ott, ...), since the machine may be
shared. Run: ``python benchmarks/bench_sinkhorn.py [--quick]``.

Section ``solver`` (``--section solver``): the two linear solvers of the implicit gradient
(``linear_solver="cholesky"``: dense Gram matrix + Cholesky; ``"cg"``: matrix-free conjugate
gradients) on the same problems, from B=256 problems of m=M=16 up to one problem of
m=M=2048: backward time (the saved VJP alone), forward+backward time (the forward's Newton
polish uses the same solver), XLA compiled memory of the gradient, CG / Cholesky gradient
difference. It is why ``linear_solver="auto"`` (the default) uses CG above a side of 16. Results:
``benchmarks/results/bench_sinkhorn_solver_<platform>.md``.
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from benchmarks._common import (  # noqa: E402  (imports jaxstab first: CPU guard)
    compiled_memory_bytes, markdown_table, write_results)

import jax
import jax.numpy as jnp
import numpy as np

from jaxstab.ops.sinkhorn import sinkhorn

EPS = 0.05
TOL = 1e-5
MEMORY_RUN_LIMIT = 3 * 2**30  # do not execute programs whose compiled footprint exceeds this


def make_problem(batch: int, m: int, seed: int = 0):
    rng = np.random.default_rng(seed)
    x = rng.uniform(size=(batch, m, 2))
    y = rng.uniform(size=(batch, m, 2))
    cost = ((x[:, :, None, :] - y[:, None, :, :]) ** 2).sum(-1).astype(np.float32)
    a = np.full((batch, m), 1.0 / m, np.float32)
    w = rng.normal(size=(batch, m, m)).astype(np.float32)
    return jnp.asarray(cost), jnp.asarray(a), jnp.asarray(a), jnp.asarray(w)


def interleaved_medians(fns: dict, repeats: int) -> dict:
    """Median wall time of each blocking thunk, run round-robin after one warm-up each."""
    for fn in fns.values():
        fn()
    times = {k: [] for k in fns}
    for _ in range(repeats):
        for k, fn in fns.items():
            t0 = time.perf_counter()
            fn()
            times[k].append(time.perf_counter() - t0)
    return {k: statistics.median(v) for k, v in times.items()}


def mib(n):
    return None if n is None else round(n / 2**20, 1)


# ------------------------------------------------------------------------------ part 1


def bench_iterations(batch: int, m: int, iters_list, repeats: int):
    cost, a, b, w = make_problem(batch, m)
    rows = []
    mem = {}
    for n in iters_list:
        for implicit in (True, False):
            def loss(c, implicit=implicit, n=n):
                return jnp.sum(w * sinkhorn(c, a, b, EPS, max_iters=n, tol=0.0,
                                            implicit=implicit).plan)

            fb = jax.jit(jax.grad(loss))
            peak = compiled_memory_bytes(fb, cost)
            mem[(n, implicit)] = peak
            if peak is not None and peak > MEMORY_RUN_LIMIT:
                t = None
            else:
                t = interleaved_medians({"x": lambda: jax.block_until_ready(fb(cost))},
                                        repeats)["x"]
            rows.append((n, "implicit" if implicit else "unrolled",
                         None if t is None else round(t * 1e3, 2), mib(peak)))
    return rows, mem


# ------------------------------------------------------------------------------ part 2


def ott_solver(max_iters: int):
    from ott.geometry import geometry
    from ott.problems.linear import linear_problem
    from ott.solvers.linear import implicit_differentiation as imp
    from ott.solvers.linear import sinkhorn as ott_sinkhorn

    solver = ott_sinkhorn.Sinkhorn(threshold=TOL, lse_mode=True, max_iterations=max_iters,
                                   implicit_diff=imp.ImplicitDiff())

    def one(c, a, b):
        geom = geometry.Geometry(cost_matrix=c, epsilon=EPS)
        out = solver(linear_problem.LinearProblem(geom, a, b))
        return out.matrix, out.n_iters, out.converged

    return jax.vmap(one)


def marginal_errors(plan, a, b):
    p = np.asarray(plan, np.float64)
    a, b = np.asarray(a, np.float64), np.asarray(b, np.float64)
    row = np.abs(p.sum(-1) - a).sum(-1) / a.sum(-1)
    col = np.abs(p.sum(-2) - b).sum(-1) / b.sum(-1)
    return float(row.max()), float(col.max())


def bench_vs_ott(batch: int, m: int, repeats: int, max_iters: int = 5000):
    cost, a, b, w = make_problem(batch, m, seed=1)
    ott_batched = ott_solver(max_iters)

    def ours_plan(c):
        return sinkhorn(c, a, b, EPS, tol=TOL, max_iters=max_iters).plan

    def ott_plan(c):
        return ott_batched(c, a, b)[0]

    impls = {"jaxstab": ours_plan, "ott-jax": ott_plan}
    fwd = {k: jax.jit(f) for k, f in impls.items()}
    fb = {k: jax.jit(jax.grad(lambda c, f=f: jnp.sum(w * f(c)))) for k, f in impls.items()}
    vjp_apply = jax.jit(lambda fn, ct: fn(ct))
    vjps = {}
    for k, f in impls.items():
        _, vjp_fn = jax.jit(lambda c, f=f: jax.vjp(f, c))(cost)
        vjps[k] = vjp_fn

    thunks = {}
    for k in impls:
        thunks[(k, "fwd")] = lambda k=k: jax.block_until_ready(fwd[k](cost))
        thunks[(k, "bwd")] = lambda k=k: jax.block_until_ready(vjp_apply(vjps[k], w))
        thunks[(k, "fwd+bwd")] = lambda k=k: jax.block_until_ready(fb[k](cost))
    # Round-robin order: ours fwd, ott fwd, ours bwd, ott bwd, ...
    order = [(k, s) for s in ("fwd", "bwd", "fwd+bwd") for k in impls]
    med = interleaved_medians({key: thunks[key] for key in order}, repeats)

    ours_out = jax.jit(lambda c: sinkhorn(c, a, b, EPS, tol=TOL, max_iters=max_iters))(cost)
    ott_out = jax.jit(lambda c: ott_batched(c, a, b))(cost)
    g = {k: np.asarray(fb[k](cost), np.float64) for k in impls}
    with jax.enable_x64(True):
        c64, a64, b64, w64 = (jnp.asarray(np.asarray(x), jnp.float64) for x in (cost, a, b, w))
        g_ref = np.asarray(jax.jit(jax.grad(lambda c: jnp.sum(
            w64 * sinkhorn(c, a64, b64, EPS, tol=1e-10, max_iters=20000).plan)))(c64))

    def rel(x, y):
        return float(np.linalg.norm(x - y) / np.linalg.norm(y))

    acc = {
        "jaxstab": marginal_errors(ours_out.plan, a, b) + (rel(g["jaxstab"], g_ref),
                                                           int(np.max(ours_out.iterations))),
        "ott-jax": marginal_errors(ott_out[0], a, b) + (rel(g["ott-jax"], g_ref),
                                                        int(np.max(ott_out[1]))),
    }
    agreement = rel(g["jaxstab"], g["ott-jax"])
    rows = []
    for k in impls:
        row_err, col_err, grad_err, iters = acc[k]
        rows.append((m, k, round(med[(k, "fwd")] * 1e3, 2), round(med[(k, "bwd")] * 1e3, 2),
                     round(med[(k, "fwd+bwd")] * 1e3, 2), iters, f"{row_err:.2e}",
                     f"{col_err:.2e}", f"{grad_err:.2e}", f"{agreement:.2e}"))
    speed = {s: med[("ott-jax", s)] / med[("jaxstab", s)] for s in ("fwd", "bwd", "fwd+bwd")}
    return rows, speed


# ------------------------------------------------------------------------------ solver section

#: (batch, m = M, eps) of the solver section: about constant work per forward iteration at the
#: base eps, then three worse-conditioned (smaller eps) problems
SOLVER_SIZES = ((256, 16, EPS), (256, 32, EPS), (64, 64, EPS), (32, 128, EPS), (8, 256, EPS),
                (4, 512, EPS), (2, 1024, EPS), (1, 2048, EPS),
                (8, 256, 0.005), (8, 256, 0.001), (2, 1024, 0.005))
SOLVER_SIZES_QUICK = ((16, 8, EPS), (4, 32, EPS))


def bench_solvers(sizes, repeats: int):
    """Cholesky vs CG implicit gradients: rows of the solver table."""
    from jaxstab.ops.sinkhorn import _SMALL_SOLVE

    rows = []
    for batch, m, eps in sizes:
        cost, a, b, w = make_problem(batch, m, seed=2)
        fb, vjps, grads, mem = {}, {}, {}, {}
        for solver in ("cholesky", "cg"):
            def plan(c, solver=solver):
                return sinkhorn(c, a, b, eps, tol=TOL, max_iters=20000,
                                linear_solver=solver).plan

            fb[solver] = jax.jit(jax.grad(lambda c, plan=plan: jnp.sum(w * plan(c))))
            mem[solver] = compiled_memory_bytes(fb[solver], cost)
            _, vjps[solver] = jax.jit(lambda c, plan=plan: jax.vjp(plan, c))(cost)
            grads[solver] = np.asarray(fb[solver](cost), np.float64)
        vjp_apply = jax.jit(lambda fn, ct: fn(ct))
        thunks = {}
        for solver in ("cholesky", "cg"):
            thunks[(solver, "bwd")] = (
                lambda s=solver: jax.block_until_ready(vjp_apply(vjps[s], w)))
            thunks[(solver, "fwd+bwd")] = lambda s=solver: jax.block_until_ready(fb[s](cost))
        med = interleaved_medians(thunks, repeats)
        diff = float(np.linalg.norm(grads["cg"] - grads["cholesky"])
                     / np.linalg.norm(grads["cholesky"]))
        auto = "cholesky" if m <= _SMALL_SOLVE else "cg"
        converged = bool(np.all(np.asarray(jax.jit(lambda c: sinkhorn(
            c, a, b, eps, tol=TOL, max_iters=20000).converged)(cost))))
        rows.append((batch, m, eps, round(med[("cholesky", "bwd")] * 1e3, 2),
                     round(med[("cg", "bwd")] * 1e3, 2),
                     round(med[("cholesky", "bwd")] / med[("cg", "bwd")], 2),
                     round(med[("cholesky", "fwd+bwd")] * 1e3, 2),
                     round(med[("cg", "fwd+bwd")] * 1e3, 2),
                     round(med[("cholesky", "fwd+bwd")] / med[("cg", "fwd+bwd")], 2),
                     mib(mem["cholesky"]), mib(mem["cg"]), f"{diff:.1e}", auto, converged))
    return rows


SOLVER_COLUMNS = ["B", "m=M", "eps", "bwd ms cholesky", "bwd ms cg", "bwd cholesky/cg",
                  "fwd+bwd ms cholesky", "fwd+bwd ms cg", "fwd+bwd cholesky/cg",
                  "compiled MiB cholesky", "compiled MiB cg", "grad rel diff", "auto picks",
                  "converged"]


def solver_figure(rows, path: str) -> str:
    """Per-problem backward and forward+backward time of both solvers against the side length
    (log-log), from the rows of :func:`bench_solvers`; returns ``path``."""
    from jaxstab.plots import _plt

    plt = _plt()
    col = {c: i for i, c in enumerate(SOLVER_COLUMNS)}
    rows = [r for r in rows if r[col["eps"]] == EPS]  # one curve per solver: the base eps
    m = np.array([r[col["m=M"]] for r in rows], float)
    batch = np.array([r[col["B"]] for r in rows], float)
    fig, axes = plt.subplots(1, 2, figsize=(10, 4))
    for ax, what in zip(axes, ("bwd", "fwd+bwd")):
        for solver, style in (("cholesky", "o-"), ("cg", "s-")):
            t = np.array([r[col[f"{what} ms {solver}"]] for r in rows], float) / batch
            ax.loglog(m, t, style, label=solver)
        ax.set_xlabel("m = M (smaller side)")
        ax.set_ylabel("ms per problem")
        ax.set_title(f"Sinkhorn implicit gradient: {what}")
        ax.axvline(16.5, color="grey", lw=0.8, ls=":")
        ax.grid(True, which="both", alpha=0.3)
        ax.legend(title="linear_solver")
    fig.text(0.5, 0.005, "dotted line: 'auto' uses Cholesky left of it, CG right of it",
             ha="center", fontsize=8)
    fig.tight_layout(rect=(0, 0.03, 1, 1))
    os.makedirs(os.path.dirname(path), exist_ok=True)
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path


def solver_section(quick: bool, repeats: int) -> None:
    sizes = SOLVER_SIZES_QUICK if quick else SOLVER_SIZES
    rows = bench_solvers(sizes, repeats)
    notes = (
        f"Squared Euclidean costs of uniform points in the unit square, uniform marginals, "
        f"tol={TOL} (at most 20000 iterations; 'converged' = every problem of the row reached "
        f"it), float32, loss "
        f"sum(W*P) with a random W. Smaller eps makes the system worse conditioned (CG needs "
        f"more iterations, Cholesky's cost does not change). bwd = applying the "
        f"saved VJP alone (the linear solve plus O(mM) work); fwd+bwd = jax.grad of the loss "
        f"(Sinkhorn iterations, the Newton polish with the same solver, the backward). Times: "
        f"medians of {repeats} interleaved runs. Compiled MiB: XLA memory analysis of the "
        f"jitted gradient. 'grad rel diff' = relative norm difference of the CG and Cholesky "
        f"gradients. 'auto picks' = what linear_solver='auto' (the default) uses at this size.")
    if quick:
        print(markdown_table(SOLVER_COLUMNS, rows) + "\n\n" + notes)
        return
    figure = solver_figure(rows, os.path.join(os.path.dirname(os.path.abspath(__file__)),
                                              "results", "figures", "bench_sinkhorn_solver.png"))
    notes += f"\n\nFigure: `benchmarks/results/figures/{os.path.basename(figure)}`."
    write_results("bench_sinkhorn_solver", "Sinkhorn implicit gradient: Cholesky vs CG solve",
                  SOLVER_COLUMNS, rows, notes=notes)


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--quick", action="store_true", help="CI-sized run (small batch)")
    parser.add_argument("--section", choices=("ott", "solver"), default="ott",
                        help="ott: iterations and ott-jax comparison (default); solver: "
                             "Cholesky vs CG implicit gradients")
    args = parser.parse_args()
    if args.section == "solver":
        solver_section(args.quick, 3 if args.quick else 5)
        return
    if args.quick:
        batch, repeats, iters_list, sizes = 16, 3, (10, 100), (16,)
    else:
        batch, repeats, iters_list, sizes = 256, 7, (10, 100, 1000), (32, 128)

    it_rows, mem = bench_iterations(batch, 32 if not args.quick else 16, iters_list, repeats)
    imp_ratio = mem[(iters_list[-1], True)] / mem[(iters_list[0], True)]
    unr_ratio = mem[(iters_list[-1], False)] / mem[(iters_list[0], False)]
    it_notes = (
        f"B={batch}, m=M={32 if not args.quick else 16}, eps={EPS}, float32, tol=0 (every problem "
        f"runs exactly the listed iterations). Loss sum(W*P). Compiled memory = XLA memory "
        f"analysis (arguments + outputs + temporaries) of the jitted gradient. Memory ratio "
        f"{iters_list[-1]}/{iters_list[0]} iterations: implicit {imp_ratio:.3f}x, unrolled "
        f"{unr_ratio:.1f}x. Time '-' = not executed (compiled footprint above "
        f"{MEMORY_RUN_LIMIT / 2**30:.0f} GiB on a shared machine)."
    )
    it_table = markdown_table(["iterations", "mode", "fwd+bwd ms", "compiled MiB"],
                              [(n, mode, "-" if t is None else t, mm)
                               for n, mode, t, mm in it_rows])

    rows, speeds = [], {}
    for m in sizes:
        r, s = bench_vs_ott(batch, m, repeats)
        rows += r
        speeds[m] = s
    notes = (
        f"B={batch}, eps={EPS}, tol={TOL} for both (jaxstab: relative L1 row-marginal error, "
        f"checked every iteration, then one Newton polish step; ott-jax: L1 marginal error checked "
        f"every 10 iterations), float32. Times are medians of {repeats} interleaved runs in ms; "
        f"bwd = applying the saved VJP alone. Marginal errors are max over the batch, relative "
        f"L1, computed in float64 from the returned plans. 'grad err vs f64' = relative norm "
        f"difference to a float64 jaxstab gradient at tol 1e-10; 'grad agreement' = relative norm "
        f"difference between the jaxstab and ott-jax gradients.\n\n"
        + "\n".join(
            f"- m=M={m}: ott-jax time / jaxstab time: fwd {s['fwd']:.2f}x, bwd {s['bwd']:.2f}x, "
            f"fwd+bwd {s['fwd+bwd']:.2f}x (targets: >= 1x, >= 5x, >= 1.5x)."
            for m, s in speeds.items())
        + "\n\n## Implicit vs unrolled gradients, by iteration count\n\n" + it_table + "\n\n"
        + it_notes
    )
    columns = ["m=M", "impl", "fwd ms", "bwd ms", "fwd+bwd ms", "max iters used",
               "row marg err", "col marg err", "grad err vs f64", "grad agreement"]
    if args.quick:  # CI-sized check: print only, keep the committed full-size results
        print(markdown_table(columns, rows) + "\n\n" + notes)
        return
    write_results("bench_sinkhorn", "Sinkhorn: jaxstab vs ott-jax at equal tolerance", columns,
                  rows, notes=notes,
                  extra={"speedups": {str(k): v for k, v in speeds.items()},
                         "iterations_table": {"columns": ["iterations", "mode", "fwd+bwd ms",
                                                          "compiled MiB"],
                                              "rows": [list(r) for r in it_rows]},
                         "memory_ratio_implicit": imp_ratio,
                         "memory_ratio_unrolled": unr_ratio})


if __name__ == "__main__":
    main()
