"""Tests of ``benchmarks/bench_ppo.py``'s shuffle section (run for real at tiny sizes)."""

from __future__ import annotations

from _bench_loader import load_benchmark

bp = load_benchmark("bench_ppo")


def test_shuffle_rows_at_tiny_sizes():
    rows = bp.shuffle_rows([1, 3], repeats=1, sizes=(8, 100), calls=5)
    col = {c: i for i, c in enumerate(bp.SHUFFLE_COLUMNS)}
    assert [(r[col["seeds (vmapped)"]], r[col["n"]]) for r in rows] == [
        (1, 8), (1, 100), (3, 8), (3, 100)]
    for r in rows:
        assert len(r) == len(bp.SHUFFLE_COLUMNS)
        a, b = r[col["jax.random.permutation us"]], r[col["jaxstab permutation us"]]
        assert a > 0 and b > 0
        speed_up = r[col["speed-up"]]
        assert speed_up.endswith("x")  # from the unrounded times; a, b are rounded to 0.1 us
        assert abs(float(speed_up[:-1]) - a / b) <= 0.01 + 0.1 * a / b
