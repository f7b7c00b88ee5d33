"""Evaluate any deterministic allocation policy over a whole split, and three classical baselines.

Everything is rolled out through :class:`~jaxstab.envs.portfolio.PortfolioEnv` itself in
evaluation mode (:func:`~jaxstab.envs.portfolio.eval_params`: from the split's first day to its
last, deterministic), so agents and baselines share the same return, cost, drift and turnover
conventions, and the metrics are :func:`jaxstab.envs.metrics.summary` of the per-step
``info["portfolio_return"]`` (simple, after costs) and ``info["turnover"]``.

Baselines (``BASELINES``):

* ``"equal_weight"``: 1/N over the risky assets every day (cash 0), paying costs on the daily
  rebalancing turnover back from the drifted weights.
* ``"buy_and_hold"``: 1/N at the start (the environment's initial holding, so no entry cost),
  never rebalanced: the target each day is the held, drifted weights (turnover 0).
* ``"min_variance"``: long-only minimum variance ``argmin_{w in simplex} w^T Sigma w`` over the
  risky assets, ``Sigma`` the sample covariance (``ddof = 1``) of the simple returns of the last
  ``lookback = 60`` days before the decision (fewer at the very start of the data), rebalanced
  every ``rebalance_every = 21`` trading days (monthly) from the split's first day and held
  (drifting, no trading) in between. Solved in JAX without LAPACK (so it may run under
  ``vmap``): FISTA projected gradient with adaptive restart on the simplex
  (:func:`jaxstab.ops.project_simplex`), step ``1 / (2 G)`` with ``G`` the Gershgorin bound
  ``max_i sum_j |Sigma_ij| >= lambda_max``, 500 iterations.

Termination (ruin) inside an evaluation stops the accounting: later periods are masked out.
"""

from __future__ import annotations

from typing import Any, Callable, NamedTuple

import jax
import jax.numpy as jnp

from jaxstab.ops import project_simplex

from .metrics import summary
from .portfolio import PortfolioEnv, PortfolioParams, PortfolioState, eval_params

__all__ = [
    "BASELINES",
    "Rollout",
    "baseline",
    "baselines_summary",
    "evaluate_policy",
    "min_variance_weights",
    "rollout",
]

BASELINES = ("equal_weight", "buy_and_hold", "min_variance")


class Rollout(NamedTuple):
    """Per-step series of one evaluation episode (``S`` = days in the split).

    Attributes:
      returns: ``[S]`` simple portfolio returns after costs (0 after a termination).
      turnover: ``[S]`` turnover (0 after a termination).
      weights: ``[S, A]`` sanitized target weights chosen for each day.
      rewards: ``[S]`` rewards (log growth).
      mask: ``[S]`` bool, True up to and including the terminating step.
    """

    returns: jax.Array
    turnover: jax.Array
    weights: jax.Array
    rewards: jax.Array
    mask: jax.Array


def rollout(env: PortfolioEnv, params: PortfolioParams,
            target_fn: Callable[[jax.Array, PortfolioState, Any], tuple[jax.Array, Any]],
            key: jax.Array, carry: Any = None) -> Rollout:
    """Walk the whole split with ``target_fn(obs, env_state, carry) -> (weights, carry)``.

    Args:
      env: the portfolio environment.
      params: its parameters (switched to evaluation mode with :func:`eval_params`).
      target_fn: pure function of the observation ``[obs_dim]``, the environment state and a
        user carry, returning target weights ``[A]`` and the new carry.
      key: PRNG key (the environment is deterministic in evaluation mode; the key is split
        per step and only passed to ``env.step``).
      carry: initial user carry (any pytree).

    Returns:
      :class:`Rollout`.
    """
    params = eval_params(params)
    steps = params.num_steps
    k_reset, k_steps = jax.random.split(key)
    obs, state = env.reset(k_reset, params)

    def body(c, k):
        obs, state, user, alive = c
        w, user = target_fn(obs, state, user)
        obs, state, reward, term, trunc, info = env.step(k, state, w, params)
        out = (jnp.where(alive, info["portfolio_return"], 0),
               jnp.where(alive, info["turnover"], 0), info["weights"],
               jnp.where(alive, reward, 0), alive)
        alive = alive & ~term
        return (obs, state, user, alive), out

    init = (obs, state, carry, jnp.ones((), bool))
    _, (ret, to, w, rew, mask) = jax.lax.scan(body, init, jax.random.split(k_steps, steps))
    return Rollout(returns=ret, turnover=to, weights=w, rewards=rew, mask=mask)


def evaluate_policy(env: PortfolioEnv, params: PortfolioParams, policy_fn: Callable,
                    key: jax.Array, *, policy_state: Any = None
                    ) -> tuple[dict[str, jax.Array], jax.Array, jax.Array]:
    """Roll a deterministic policy over the whole split and compute its metrics.

    Args:
      env, params: from :func:`~jaxstab.envs.portfolio.make_portfolio` (any mode; evaluation
        mode is applied here).
      policy_fn: ``policy_fn(obs [obs_dim]) -> weights [A]``; or, when ``policy_state`` is
        given, ``policy_fn(obs, policy_state) -> (weights, policy_state)`` (e.g. the IRT
        policy's previous prototype weights). Weights off the simplex are sanitized by the
        environment.
      key: PRNG key.
      policy_state: optional initial policy state.

    Returns:
      ``(metrics, returns [S], weights [S, A])``: ``metrics`` is
      :func:`~jaxstab.envs.metrics.summary` (with turnover) of the masked series.

    Example:
      >>> env, params = make_portfolio("validation")
      >>> n = params.num_actions
      >>> m, r, w = evaluate_policy(env, params, lambda obs: jnp.ones(n) / n, jax.random.key(0))
      >>> r.shape
      (756,)
    """
    if policy_state is None:
        def target(obs, state, user):
            return policy_fn(obs), user
    else:
        def target(obs, state, user):
            return policy_fn(obs, user)
    ro = rollout(env, params, target, key, policy_state)
    return summary(ro.returns, ro.turnover, ro.mask), ro.returns, ro.weights


# ------------------------------------------------------------------------------------------
# minimum variance


def min_variance_weights(cov: jax.Array, *, iters: int = 500) -> jax.Array:
    """Long-only minimum variance ``argmin_{w in simplex} w^T cov w`` without LAPACK.

    FISTA (accelerated projected gradient) with function-value restart; step ``1 / L`` with
    ``L = 2 max_i sum_j |cov_ij| >= 2 lambda_max(cov)`` (Gershgorin). Starts from 1/N.

    Args:
      cov: ``[N, N]`` symmetric positive semi-definite.
      iters: iterations (static).

    Returns:
      ``[N]`` weights on the simplex (cov's dtype). 1/N when ``cov`` is 0.
    """
    cov = jnp.asarray(cov)
    if cov.ndim != 2 or cov.shape[0] != cov.shape[1]:
        raise ValueError(f"cov must be [N, N], got shape {cov.shape}")
    n = cov.shape[0]
    lip = 2.0 * jnp.max(jnp.sum(jnp.abs(cov), axis=1))
    step = jnp.where(lip > 0, 1.0 / jnp.where(lip > 0, lip, 1.0), 0.0)
    w0 = jnp.full((n,), 1.0 / n, cov.dtype)

    def f(w):
        return w @ cov @ w

    def body(_, c):
        w, y, t = c
        cand = project_simplex(y - (2.0 * step) * (cov @ y))
        restart = f(cand) > f(w)  # momentum overshot: drop it and restart from w
        t_next = 0.5 * (1.0 + jnp.sqrt(1.0 + 4.0 * t * t))
        y_next = cand + ((t - 1.0) / t_next) * (cand - w)
        return (jnp.where(restart, w, cand), jnp.where(restart, w, y_next),
                jnp.where(restart, jnp.ones_like(t), t_next))

    w, _, _ = jax.lax.fori_loop(0, iters, body, (w0, w0, jnp.ones((), cov.dtype)))
    return w


def _window_cov(params: PortfolioParams, state: PortfolioState, lookback: int) -> jax.Array:
    """Sample covariance of the simple returns of the ``lookback`` rows before the decision."""
    j = params.history + state.start + state.time
    idx = j - lookback + jnp.arange(lookback)
    valid = (idx >= 0).astype(params.log_returns.dtype)
    rows = jnp.expm1(params.log_returns[jnp.maximum(idx, 0)])  # [L, N]
    cnt = jnp.sum(valid)
    mean = jnp.sum(rows * valid[:, None], axis=0) / jnp.maximum(cnt, 1.0)
    dev = (rows - mean[None, :]) * valid[:, None]
    return dev.T @ dev / jnp.maximum(cnt - 1.0, 1.0)


def baseline(name: str, env: PortfolioEnv, params: PortfolioParams,
             key: jax.Array | None = None, *, lookback: int = 60, rebalance_every: int = 21,
             iters: int = 500) -> tuple[dict[str, jax.Array], jax.Array, jax.Array]:
    """Metrics and series of one baseline over the whole split (see the module docstring).

    Args:
      name: one of :data:`BASELINES`.
      env, params: the environment and its parameters (evaluation mode is applied).
      key: PRNG key (default ``jax.random.key(0)``; results do not depend on it).
      lookback: ``min_variance`` estimation window (days).
      rebalance_every: ``min_variance`` rebalancing period (days).
      iters: ``min_variance`` solver iterations.

    Returns:
      ``(metrics, returns [S], weights [S, A])`` as :func:`evaluate_policy`.

    Raises:
      ValueError: unknown ``name`` or non-positive ``lookback`` / ``rebalance_every``.

    Example:
      >>> env, params = make_portfolio("test")
      >>> m, r, w = baseline("equal_weight", env, params)
      >>> bool(m["max_drawdown"] < 0)
      True
    """
    if name not in BASELINES:
        raise ValueError(f"unknown baseline {name!r}; valid: {BASELINES}")
    if lookback < 2 or rebalance_every < 1:
        raise ValueError(f"need lookback >= 2 and rebalance_every >= 1, got {lookback}, "
                         f"{rebalance_every}")
    key = jax.random.key(0) if key is None else key
    n, a = params.num_assets, params.num_actions
    dt = params.log_returns.dtype
    equal = jnp.concatenate([jnp.full((n,), 1.0 / n, dt), jnp.zeros((a - n,), dt)])

    def make_target(p: PortfolioParams) -> Callable:
        if name == "equal_weight":
            def target(obs, state, c):
                return equal, c
        elif name == "buy_and_hold":
            def target(obs, state, c):
                return state.weights, c
        else:
            def target(obs, state, c):
                def solve(_):
                    w = min_variance_weights(_window_cov(p, state, lookback), iters=iters)
                    return jnp.concatenate([w, jnp.zeros((a - n,), dt)]).astype(dt)

                return jax.lax.cond(state.time % rebalance_every == 0, solve,
                                    lambda _: state.weights, None), c
        return target

    ro = jax.jit(lambda k, p: rollout(env, p, make_target(p), k))(key, eval_params(params))
    return summary(ro.returns, ro.turnover, ro.mask), ro.returns, ro.weights


def baselines_summary(env: PortfolioEnv, params: PortfolioParams, **kwargs: Any
                      ) -> dict[str, dict[str, float]]:
    """``{baseline name: {metric: float}}`` for every baseline (host floats, for tables)."""
    out = {}
    for name in BASELINES:
        m, _, _ = baseline(name, env, params, **kwargs)
        out[name] = {k: float(v) for k, v in m.items()}
    return out
