"""Performance metrics of a series of per-period simple returns, in JAX.

All functions take simple returns ``r [..., T]`` (leading batch axes allowed, time last) and
an optional ``mask [..., T]`` (True/1 = the period counts; masked periods are ignored as if
absent). With ``n = sum(mask)`` and ``P = 252`` periods per year (daily data):

* ``annual_return = exp(P / n * sum log(1 + r)) - 1`` (geometric, compounded);
* ``annual_volatility = sqrt(P) * std(r)`` with the sample std (``ddof = 1``, as pandas);
* ``sharpe = sqrt(P) * mean(r) / std(r)`` (risk-free rate 0, arithmetic mean, ``ddof = 1``);
* ``sortino = sqrt(P) * mean(r) / dd`` with the downside deviation below target 0 over all
  periods ``dd = sqrt(sum min(r, 0)^2 / n)``;
* ``max_drawdown = min_t (V_t / max_{s <= t} V_s - 1) <= 0`` with ``V_t = prod_{s <= t}
  (1 + r_s)`` and ``V_0 = 1`` counted as a peak (so a first-day loss is a drawdown); e.g.
  ``-0.34`` for a 34% peak-to-trough loss;
* ``calmar = annual_return / |max_drawdown|`` (NaN when there is no drawdown);
* ``turnover``: mean per-period turnover ``sum_i |w_i - h_i|`` (``summary`` only).

Returns ``r <= -1`` (ruin) are treated as ``-1``: wealth 0, ``max_drawdown = -1``,
``annual_return = -1``. Zero volatility gives ``inf``/``NaN`` ratios (no guard: a constant
series has no meaningful Sharpe).
"""

from __future__ import annotations

import jax
import jax.numpy as jnp

__all__ = [
    "PERIODS_PER_YEAR",
    "annual_return",
    "annual_volatility",
    "calmar",
    "max_drawdown",
    "sharpe",
    "sortino",
    "summary",
]

PERIODS_PER_YEAR = 252


def _prep(r: jax.Array, mask: jax.Array | None) -> tuple[jax.Array, jax.Array, jax.Array]:
    r = jnp.asarray(r)
    if not jnp.issubdtype(r.dtype, jnp.floating):
        r = r.astype(jnp.float32)
    if r.ndim < 1:
        raise ValueError(f"returns must have a time axis [..., T], got shape {r.shape}")
    if mask is None:
        m = jnp.ones(r.shape, r.dtype)
    else:
        mask = jnp.asarray(mask)
        if mask.shape != r.shape:
            raise ValueError(f"mask shape {mask.shape} must equal returns shape {r.shape}")
        m = mask.astype(r.dtype)
    n = jnp.sum(m, axis=-1)
    return jnp.where(m > 0, r, 0), m, n


def _mean_std(r: jax.Array, m: jax.Array, n: jax.Array) -> tuple[jax.Array, jax.Array]:
    mean = jnp.sum(r * m, axis=-1) / n
    dev = (r - mean[..., None]) * m
    var = jnp.sum(dev * dev, axis=-1) / (n - 1)
    return mean, jnp.sqrt(var)


def annual_return(returns: jax.Array, mask: jax.Array | None = None) -> jax.Array:
    """Geometric annualized return ``exp(252 / n * sum log1p(r)) - 1``; shape ``[...]``."""
    r, m, n = _prep(returns, mask)
    g = jnp.sum(jnp.log1p(jnp.maximum(r, -1.0)) * m, axis=-1)
    return jnp.expm1(PERIODS_PER_YEAR * g / n)


def annual_volatility(returns: jax.Array, mask: jax.Array | None = None) -> jax.Array:
    """``sqrt(252) * std(r, ddof=1)``; shape ``[...]``."""
    r, m, n = _prep(returns, mask)
    return jnp.sqrt(PERIODS_PER_YEAR) * _mean_std(r, m, n)[1]


def sharpe(returns: jax.Array, mask: jax.Array | None = None) -> jax.Array:
    """Annualized Sharpe ratio, risk-free rate 0: ``sqrt(252) mean(r) / std(r, ddof=1)``.

    Example:
      >>> round(float(sharpe(jnp.array([0.01, -0.005, 0.002, 0.004]))), 2)
      7.06
    """
    r, m, n = _prep(returns, mask)
    mean, std = _mean_std(r, m, n)
    return jnp.sqrt(PERIODS_PER_YEAR) * mean / std


def sortino(returns: jax.Array, mask: jax.Array | None = None) -> jax.Array:
    """``sqrt(252) mean(r) / sqrt(sum(min(r, 0)^2) / n)`` (target 0, all periods)."""
    r, m, n = _prep(returns, mask)
    mean = jnp.sum(r * m, axis=-1) / n
    down = jnp.minimum(r, 0) * m
    dd = jnp.sqrt(jnp.sum(down * down, axis=-1) / n)
    return jnp.sqrt(PERIODS_PER_YEAR) * mean / dd


def max_drawdown(returns: jax.Array, mask: jax.Array | None = None) -> jax.Array:
    """Maximum drawdown ``min_t V_t / max_{s<=t} V_s - 1`` (``<= 0``, ``V_0 = 1`` a peak)."""
    r, m, _ = _prep(returns, mask)
    logv = jnp.cumsum(jnp.log1p(jnp.maximum(r, -1.0)) * m, axis=-1)
    peak = jnp.maximum(jax.lax.cummax(logv, axis=logv.ndim - 1), 0.0)
    return jnp.min(jnp.expm1(logv - peak), axis=-1)


def calmar(returns: jax.Array, mask: jax.Array | None = None) -> jax.Array:
    """``annual_return / |max_drawdown|`` (NaN without a drawdown)."""
    ar = annual_return(returns, mask)
    mdd = max_drawdown(returns, mask)
    return jnp.where(mdd < 0, ar / jnp.where(mdd < 0, -mdd, 1.0), jnp.nan)


def summary(returns: jax.Array, turnover: jax.Array | None = None,
            mask: jax.Array | None = None) -> dict[str, jax.Array]:
    """All metrics of a return series (definitions in the module docstring).

    Args:
      returns: ``[..., T]`` per-period simple returns (after costs).
      turnover: optional ``[..., T]`` per-period turnover ``sum_i |w_i - h_i|``.
      mask: optional ``[..., T]`` bool/0-1, which periods count.

    Returns:
      dict of ``[...]`` arrays: ``annual_return``, ``annual_volatility``, ``sharpe``,
      ``sortino``, ``max_drawdown``, ``calmar``, ``total_return`` (``prod(1 + r) - 1``),
      ``num_periods``, and ``turnover`` (mean per period) if given.

    Example:
      >>> m = summary(jnp.array([0.01, -0.02, 0.015]))
      >>> round(float(m["max_drawdown"]), 4)
      -0.02
    """
    r = jnp.asarray(returns)
    if turnover is not None:
        t = jnp.asarray(turnover)
        if t.shape != r.shape:
            raise ValueError(f"turnover shape {t.shape} must equal returns shape {r.shape}")
    _prep(r, mask)  # validation at trace time
    return _summary(r, turnover, mask)


@jax.jit
def _summary(returns: jax.Array, turnover: jax.Array | None,
             mask: jax.Array | None) -> dict[str, jax.Array]:
    r, m, n = _prep(returns, mask)
    out = {
        "annual_return": annual_return(returns, mask),
        "annual_volatility": annual_volatility(returns, mask),
        "sharpe": sharpe(returns, mask),
        "sortino": sortino(returns, mask),
        "max_drawdown": max_drawdown(returns, mask),
        "calmar": calmar(returns, mask),
        "total_return": jnp.expm1(jnp.sum(jnp.log1p(jnp.maximum(r, -1.0)) * m, axis=-1)),
        "num_periods": n,
    }
    if turnover is not None:
        t = jnp.asarray(turnover).astype(r.dtype)
        out["turnover"] = jnp.sum(jnp.where(m > 0, t, 0) * m, axis=-1) / n
    return out
