"""PNG plots for run directories (matplotlib, Agg backend, imported lazily).

Importing this module does not import matplotlib; each function does, and selects the
non-interactive ``Agg`` backend so plots work on headless machines and inside tests. Every
function writes PNG files and returns their paths.

Seed bands: for a metric recorded per chunk and per seed (``[chunks, seeds]``) the learning
curve shows the mean over seeds as a line, the min-max range as a light band and
mean +- std as a darker band (NaN entries, e.g. SAC losses before learning starts, are ignored).
"""

from __future__ import annotations

import math
import os
from typing import Any, Mapping, Sequence

import numpy as np

#: metrics drawn by :func:`learning_curves` besides the return, when present
DEFAULT_PANELS = ("critic_loss", "actor_loss", "alpha", "entropy", "total_loss", "value_loss",
                  "policy_loss", "approx_kl", "kl", "skipped_total", "rollback_count",
                  "actor_grad_norm", "critic_grad_norm", "grad_norm")


def _plt():
    import matplotlib

    if matplotlib.get_backend().lower() != "agg":
        try:
            matplotlib.use("Agg", force=True)
        except Exception:  # noqa: BLE001 - a backend already in use stays in use
            pass
    import matplotlib.pyplot as plt

    return plt


def seed_band(values: Any) -> dict[str, np.ndarray]:
    """Statistics over seeds of a ``[T, S]`` array: mean, std, min, max (NaN-aware).

    Args:
      values: ``[T, S]`` array-like (T points, S seeds); NaN entries are ignored.

    Returns:
      dict of ``[T]`` float64 arrays ``mean``, ``std``, ``lo`` (min), ``hi`` (max); NaN where
      a row has no finite entry.

    Example:
      >>> seed_band([[1.0, 3.0], [2.0, np.nan]])["mean"]
      array([2., 2.])
    """
    v = np.asarray(values, np.float64)
    if v.ndim != 2:
        raise ValueError(f"values must be [T, S], got shape {v.shape}")
    fin = np.isfinite(v)
    cnt = fin.sum(1)
    z = np.where(fin, v, 0.0)
    with np.errstate(invalid="ignore", divide="ignore"):
        mean = np.where(cnt > 0, z.sum(1) / np.maximum(cnt, 1), np.nan)
        var = np.where(cnt > 0, (np.where(fin, v - mean[:, None], 0.0) ** 2).sum(1)
                       / np.maximum(cnt, 1), np.nan)
    lo = np.where(cnt > 0, np.where(fin, v, np.inf).min(1), np.nan)
    hi = np.where(cnt > 0, np.where(fin, v, -np.inf).max(1), np.nan)
    return {"mean": mean, "std": np.sqrt(var), "lo": lo, "hi": hi}


def _band(ax: Any, x: np.ndarray, values: np.ndarray, label: str, color: str | None = None):
    b = seed_band(values)
    line, = ax.plot(x, b["mean"], label=label, color=color)
    c = line.get_color()
    if values.shape[1] > 1:
        ax.fill_between(x, b["lo"], b["hi"], color=c, alpha=0.15, linewidth=0)
        ax.fill_between(x, b["mean"] - b["std"], b["mean"] + b["std"], color=c, alpha=0.3,
                        linewidth=0)
    return line


def learning_curves(records: Sequence[Mapping[str, Any]], out_dir: str, *, title: str = "",
                    panels: Sequence[str] = DEFAULT_PANELS) -> list[str]:
    """Write ``learning_curve.png`` (return) and ``training_metrics.png`` (losses etc.).

    Args:
      records: metrics.jsonl records (``step`` and per-seed lists, see :mod:`jaxstab.runs`).
      out_dir: the ``plots/`` directory.
      title: figure title.
      panels: metric names drawn in ``training_metrics.png`` when present.

    Returns:
      Paths of the PNG files written.
    """
    from jaxstab.runs import metric_matrix, return_key

    plt = _plt()
    os.makedirs(out_dir, exist_ok=True)
    paths = []
    if not records:
        return paths
    steps = np.asarray([r["step"] for r in records], np.float64)
    seeds = max((len(v) for r in records for v in r.values() if isinstance(v, list)), default=1)
    rk = return_key(records)
    if rk is not None:
        fig, ax = plt.subplots(figsize=(6.4, 4.0))
        m = metric_matrix(records, rk)
        _band(ax, steps[: len(m)], m, f"{rk} (mean over {seeds} seeds)")
        ax.set_xlabel("environment steps per seed")
        ax.set_ylabel(rk)
        ax.set_title(title or "learning curve")
        ax.grid(alpha=0.3)
        ax.legend(loc="best", fontsize=8, title="band: min-max, mean+-std", title_fontsize=7)
        fig.tight_layout()
        p = os.path.join(out_dir, "learning_curve.png")
        fig.savefig(p, dpi=110)
        plt.close(fig)
        paths.append(p)
    names = [n for n in panels if n in records[-1] and n != rk]
    if names:
        cols = min(3, len(names))
        rows = math.ceil(len(names) / cols)
        fig, axes = plt.subplots(rows, cols, figsize=(4.0 * cols, 2.8 * rows), squeeze=False)
        for ax, name in zip(axes.ravel(), names):
            m = metric_matrix(records, name)
            _band(ax, steps[: len(m)], m, name)
            ax.set_title(name, fontsize=9)
            ax.grid(alpha=0.3)
            ax.tick_params(labelsize=7)
        for ax in axes.ravel()[len(names):]:
            ax.axis("off")
        fig.suptitle(title, fontsize=10)
        fig.tight_layout()
        p = os.path.join(out_dir, "training_metrics.png")
        fig.savefig(p, dpi=100)
        plt.close(fig)
        paths.append(p)
    return paths


def return_histogram(returns: Any, path: str, *, title: str = "") -> str:
    """Per-seed box plot of evaluation returns ``[S, episodes]``; returns ``path``."""
    plt = _plt()
    r = np.asarray(returns, np.float64)
    fig, ax = plt.subplots(figsize=(max(4.0, 0.6 * r.shape[0] + 2), 3.6))
    ax.boxplot(list(r), showmeans=True)
    ax.set_xticks(range(1, r.shape[0] + 1), [f"seed {i}" for i in range(r.shape[0])],
                  fontsize=8)
    ax.set_ylabel("episode return")
    ax.set_title(title or "evaluation returns")
    ax.grid(alpha=0.3)
    fig.tight_layout()
    os.makedirs(os.path.dirname(path) or ".", exist_ok=True)
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path


def drawdown(equity: Any) -> np.ndarray:
    """Drawdown series ``equity / running_max(equity) - 1`` (<= 0), along the last axis."""
    e = np.asarray(equity, np.float64)
    return e / np.maximum.accumulate(e, axis=-1) - 1.0


def portfolio_plots(curves: Mapping[str, Any], out_dir: str, *, weights: Any = None,
                    asset_names: Sequence[str] | None = None, dates: Sequence[Any] | None = None,
                    title: str = "", prefix: str = "") -> list[str]:
    """Equity curves, drawdowns and (optionally) weights over time.

    Args:
      curves: ``{label: equity}`` with equity ``[T]`` (one curve) or ``[S, T]`` (seeds: drawn
        as mean with a min-max band), starting near 1.
      out_dir: directory for ``equity.png``, ``drawdown.png``, ``weights.png``.
      weights: ``[T, n]`` portfolio weights of one policy (e.g. the first seed), or None.
      asset_names: ``n`` names for the weights legend.
      dates: ``T`` x-axis values (dates or indices).
      title: figure title prefix.
      prefix: file name prefix (``<prefix>equity.png`` ...).

    Returns:
      Paths written.
    """
    plt = _plt()
    os.makedirs(out_dir, exist_ok=True)
    paths = []

    def xs(n: int) -> Any:
        if dates is not None and len(dates) == n:
            return np.asarray(dates)
        return np.arange(n)

    for kind in ("equity", "drawdown"):
        fig, ax = plt.subplots(figsize=(7.5, 4.0))
        for label, eq in curves.items():
            e = np.asarray(eq, np.float64)
            y = e if kind == "equity" else drawdown(e)
            if y.ndim == 1:
                ax.plot(xs(y.shape[-1]), y, label=label, linewidth=1.0)
            else:
                _band(ax, xs(y.shape[-1]), y.T, f"{label} ({y.shape[0]} seeds)")
        ax.set_ylabel("wealth (start = 1)" if kind == "equity" else "drawdown")
        if kind == "equity":
            ax.set_yscale("log")
        ax.set_title(f"{title} {kind}".strip())
        ax.grid(alpha=0.3)
        ax.legend(fontsize=7, loc="best")
        fig.autofmt_xdate()
        fig.tight_layout()
        p = os.path.join(out_dir, f"{prefix}{kind}.png")
        fig.savefig(p, dpi=110)
        plt.close(fig)
        paths.append(p)
    if weights is not None:
        w = np.asarray(weights, np.float64)
        fig, ax = plt.subplots(figsize=(7.5, 4.0))
        labels = list(asset_names) if asset_names is not None and len(asset_names) == w.shape[1] \
            else [f"asset {i}" for i in range(w.shape[1])]
        ax.stackplot(xs(w.shape[0]), w.T, labels=labels, linewidth=0)
        ax.set_ylim(0, max(1.0, float(np.nanmax(w.sum(1))) if w.size else 1.0))
        ax.set_ylabel("weight")
        ax.set_title(f"{title} weights over time".strip())
        ax.legend(fontsize=6, ncol=4, loc="upper left", bbox_to_anchor=(1.0, 1.0))
        fig.autofmt_xdate()
        fig.tight_layout()
        p = os.path.join(out_dir, f"{prefix}weights.png")
        fig.savefig(p, dpi=110)
        plt.close(fig)
        paths.append(p)
    return paths


__all__ = ["DEFAULT_PANELS", "drawdown", "learning_curves", "portfolio_plots", "return_histogram",
           "seed_band"]
