"""jaxstab.plots: seed-band statistics against NumPy, drawdowns, PNG files, lazy matplotlib."""

import os
import subprocess
import sys
import warnings

import numpy as np
import pytest

from jaxstab import plots

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
PNG_MAGIC = b"\x89PNG\r\n\x1a\n"


def _is_png(path):
    with open(path, "rb") as fh:
        return fh.read(8) == PNG_MAGIC and os.path.getsize(path) > 1000


def test_seed_band_matches_numpy_nan_functions():
    rng = np.random.default_rng(1)
    v = rng.normal(size=(7, 4))
    v[2, 1] = np.nan
    v[5, :] = np.nan
    b = plots.seed_band(v)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)
        np.testing.assert_allclose(b["mean"], np.nanmean(v, 1), equal_nan=True)
        np.testing.assert_allclose(b["std"], np.nanstd(v, 1), equal_nan=True)
        np.testing.assert_allclose(b["lo"], np.nanmin(v, 1), equal_nan=True)
        np.testing.assert_allclose(b["hi"], np.nanmax(v, 1), equal_nan=True)
    with pytest.raises(ValueError, match=r"\[T, S\]"):
        plots.seed_band(np.zeros(3))


def test_drawdown_against_loop():
    rng = np.random.default_rng(2)
    eq = np.cumprod(1 + rng.normal(0, 0.02, size=(3, 50)), axis=-1)
    dd = plots.drawdown(eq)
    for s in range(3):
        peak = -np.inf
        for t in range(50):
            peak = max(peak, eq[s, t])
            assert dd[s, t] == pytest.approx(eq[s, t] / peak - 1.0)
    assert (dd <= 0).all()


def test_learning_curves_write_pngs(tmp_path):
    rng = np.random.default_rng(3)
    recs = [{"chunk": c, "step": 100 * (c + 1), "time_s": float(c),
             "eval_return": rng.normal(size=3).tolist(),
             "critic_loss": [None, 1.0, 2.0] if c == 0 else rng.random(3).tolist(),
             "alpha": rng.random(3).tolist()} for c in range(6)]
    paths = plots.learning_curves(recs, str(tmp_path / "plots"), title="t")
    names = sorted(os.path.basename(p) for p in paths)
    assert names == ["learning_curve.png", "training_metrics.png"]
    assert all(_is_png(p) for p in paths)
    assert plots.learning_curves([], str(tmp_path / "empty")) == []


def test_portfolio_plots_write_pngs(tmp_path):
    rng = np.random.default_rng(4)
    r = rng.normal(0.0005, 0.01, size=(2, 60))
    w = rng.dirichlet(np.ones(5), size=60)
    dates = np.arange("2020-01-01", "2020-03-01", dtype="datetime64[D]")
    paths = plots.portfolio_plots({"agent": np.cumprod(1 + r, -1),
                                   "1/N": np.cumprod(1 + r[0] * 0.5)},
                                  str(tmp_path), weights=w, dates=dates,
                                  asset_names=list("abcde"), prefix="eval_test_")
    assert sorted(os.path.basename(p) for p in paths) == [
        "eval_test_drawdown.png", "eval_test_equity.png", "eval_test_weights.png"]
    assert all(_is_png(p) for p in paths)
    box = plots.return_histogram(rng.normal(size=(3, 5)), str(tmp_path / "box.png"))
    assert _is_png(box)


def test_importing_plots_does_not_import_matplotlib():
    code = ("import sys, jaxstab.plots, jaxstab.runs, jaxstab.cli; "
            "print('matplotlib' in sys.modules)")
    env = dict(os.environ, PYTHONPATH=ROOT + os.pathsep + os.environ.get("PYTHONPATH", ""))
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=env,
                         cwd=ROOT, timeout=120)
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip() == "False"
