"""jaxstab environments (installed as ``jaxstab.envs``).

gymnax-compatible: ``reset(key, params) -> (obs, state)`` and
``step(key, state, action, params) -> (obs, state, reward, terminated, truncated, info)``
(auto-reset, ``info["final_observation"]``).

- :func:`make` / :data:`ENV_NAMES`: ``"portfolio"`` or any gymnax name.
- :func:`make_portfolio`, :class:`PortfolioEnv`, :class:`PortfolioParams`, :func:`obs_layout`,
  :func:`eval_params`: daily portfolio allocation on real S&P 500 prices (bundled) or your own.
- :func:`load_prices`, :func:`split`: data loading and date-based train/validation/test splits.
- :mod:`~jaxstab.envs.metrics` (:func:`summary`), :mod:`~jaxstab.envs.baselines`
  (:func:`evaluate_policy`, 1/N, buy-and-hold, minimum variance).
"""

from .baselines import BASELINES, baseline, evaluate_policy
from .data import DEFAULT_SPLITS, MarketData, SplitData, load_prices, split
from .metrics import summary
from .portfolio import (
    PortfolioEnv,
    PortfolioParams,
    PortfolioState,
    eval_params,
    make_portfolio,
    obs_layout,
    sanitize_weights,
)
from .registry import ENV_NAMES, make

__all__ = [
    "BASELINES",
    "DEFAULT_SPLITS",
    "ENV_NAMES",
    "MarketData",
    "PortfolioEnv",
    "PortfolioParams",
    "PortfolioState",
    "SplitData",
    "baseline",
    "eval_params",
    "evaluate_policy",
    "load_prices",
    "make",
    "make_portfolio",
    "obs_layout",
    "sanitize_weights",
    "split",
    "summary",
]
