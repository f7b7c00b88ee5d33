"""Tests of ``benchmarks/bench_sinkhorn.py``'s solver section (Cholesky vs CG backward).

The section runs for real at tiny sizes: every row must report both solvers, gradients that
agree, and the solver ``linear_solver="auto"`` really picks; the figure is drawn from the rows.
"""

from __future__ import annotations

import os

from _bench_loader import load_benchmark

bs = load_benchmark("bench_sinkhorn")


def test_solver_rows_at_tiny_sizes_and_figure(tmp_path):
    rows = bs.bench_solvers(((3, 8, 0.1), (2, 20, 0.05)), repeats=1)
    col = {c: i for i, c in enumerate(bs.SOLVER_COLUMNS)}
    assert [r[col["m=M"]] for r in rows] == [8, 20]
    assert [r[col["auto picks"]] for r in rows] == ["cholesky", "cg"]  # 16 is the switch
    assert [r[col["converged"]] for r in rows] == [True, True]
    for r in rows:
        assert len(r) == len(bs.SOLVER_COLUMNS)
        for name in ("bwd ms cholesky", "bwd ms cg", "fwd+bwd ms cholesky", "fwd+bwd ms cg"):
            assert r[col[name]] > 0
        assert r[col["bwd cholesky/cg"]] > 0 and r[col["fwd+bwd cholesky/cg"]] > 0
        assert float(r[col["grad rel diff"]]) < 1e-4  # float32 gradients of the two solvers
    path = bs.solver_figure(rows, str(tmp_path / "fig" / "solver.png"))
    assert os.path.getsize(path) > 1000
    with open(path, "rb") as f:
        assert f.read(8) == b"\x89PNG\r\n\x1a\n"
