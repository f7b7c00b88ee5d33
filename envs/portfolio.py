"""Portfolio allocation on daily market data as a gymnax environment (pure JAX, jit/vmap-able).

One step is one trading day. Notation for the step that earns the log return row ``j`` of
``params.log_returns`` (``r_j [N]``, simple returns ``R_j = exp(r_j) - 1``; with ``cash=True``
a last entry ``0`` is appended for cash, so ``A = N + 1`` actions, otherwise ``A = N``):

* the agent holds ``h`` (``state.weights [A]``): the weights chosen on the previous step,
  drifted by the previous day's returns (1/N over the risky assets at reset);
* it chooses target weights ``w = sanitize(action)`` at the close of the previous day;
* ``turnover = sum_i |w_i - h_i|``; ``cost = cost_bps * 1e-4``;
* portfolio return after costs ``x = w . R_j - cost * turnover`` (``info["portfolio_return"]``);
* reward ``= log(1 + x)`` (``log1p``); if ``1 + x <= 0`` the episode terminates (ruin,
  ``terminated=True``) and the reward is the finite floor ``log(RUIN_FLOOR) = log(1e-6)``
  (the same floor applies to any ``1 + x < 1e-6``);
* the held weights drift to ``h'_i = w_i (1 + R_{j,i}) / (1 + w . R_j)`` (costs are taken
  proportionally from all positions, so they do not change relative weights).

Action sanitization (deterministic, documented): non-finite entries become 0, negative entries
are clipped to 0, and the result is divided by its sum; an action whose sum is then 0 becomes
equal weight ``1/A`` over all ``A`` entries. A valid simplex action passes unchanged up to
float rounding (division by a sum of ~1).

Observation (one flat vector of ``params.log_returns.dtype``, float32 by default; see
:func:`obs_layout`), in order:

1. ``"returns"``: the last ``W = window`` daily log returns ``[W, N]`` flattened row-major,
   most recent last (rows ``j - W .. j - 1`` before the step that earns row ``j``);
2. ``"volatility"`` (only with ``features=("volatility",)``): per-asset population std of
   those ``W`` log returns ``[N]``;
3. ``"weights"``: the held (drifted) weights ``h [A]``;
4. ``"crisis"``: the crisis level ``[1]`` in [0, 1] computed through row ``j - 1`` (formula
   in :mod:`jaxstab.envs.data`: realized volatility of the 1/N index over 20 days relative to
   252 days, and the 1/N index's drawdown from its one-year peak). It is always the LAST entry.

Episodes: in training mode (``random_start=True``) an episode starts at a uniformly random
in-split day ``s in [0, S - E]`` and lasts ``E = max_steps_in_episode`` steps (default 252),
then ``truncated=True``. :func:`eval_params` gives the deterministic mode: start at the
split's first day, ``E = S`` (the whole split). As in every gymnax >= 1.0 environment,
``step`` auto-resets when ``terminated or truncated``: the returned observation is then the
next episode's first one and ``info["final_observation"]`` holds the true last observation.
``info`` also carries ``portfolio_return`` (``x`` above), ``turnover``, ``weights`` (``w``),
``gross_return`` (``w . R_j``) and ``log_wealth`` (cumulative reward of the episode).
"""

from __future__ import annotations

from typing import Any, Sequence

import jax
import jax.numpy as jnp
import numpy as np
from flax import struct
from gymnax.environments import spaces
from gymnax.environments.environment import Environment

from . import data as _data

__all__ = [
    "FEATURES",
    "PortfolioEnv",
    "PortfolioParams",
    "PortfolioState",
    "RUIN_FLOOR",
    "eval_params",
    "make_portfolio",
    "obs_layout",
    "sanitize_weights",
]

RUIN_FLOOR = 1e-6
FEATURES = ("volatility",)


@struct.dataclass
class PortfolioParams:
    """Environment parameters: the split's data (traced) and static settings.

    Attributes:
      log_returns: ``[H + S, N]`` log returns (float32 by default); rows ``0..H-1`` are history
        before the split, row ``H + k`` is the split's ``k``-th day.
      crisis: ``[H + S]`` crisis level in [0, 1] computed through each row.
      cost: 0-d transaction cost per unit turnover (``cost_bps * 1e-4``); traced, so it can be
        swept with ``vmap``.
      max_steps_in_episode: static episode length ``E`` (``<= S``).
      window: static observation window ``W`` (``<= H``).
      history: static ``H``.
      cash: static; True adds a cash asset (last action entry, return 0).
      features: static tuple of extra observation features (subset of ``FEATURES``).
      random_start: static; True = training mode (random start day), False = start at day 0.
    """

    log_returns: jax.Array
    crisis: jax.Array
    cost: jax.Array
    max_steps_in_episode: int = struct.field(pytree_node=False, default=252)
    window: int = struct.field(pytree_node=False, default=20)
    history: int = struct.field(pytree_node=False, default=20)
    cash: bool = struct.field(pytree_node=False, default=False)
    features: tuple[str, ...] = struct.field(pytree_node=False, default=())
    random_start: bool = struct.field(pytree_node=False, default=True)

    @property
    def num_assets(self) -> int:
        """``N`` risky assets."""
        return int(self.log_returns.shape[-1])

    @property
    def num_actions(self) -> int:
        """``A = N + cash``."""
        return self.num_assets + int(self.cash)

    @property
    def num_steps(self) -> int:
        """``S``: trading days in the split."""
        return int(self.log_returns.shape[-2]) - self.history

    @property
    def obs_dim(self) -> int:
        """Length of the flat observation."""
        return obs_layout(self)["crisis"].stop


@struct.dataclass
class PortfolioState:
    """Environment state.

    Attributes:
      time: 0-d int32, steps taken in this episode.
      start: 0-d int32, in-split index of the episode's first day.
      weights: ``[A]`` held weights (drifted), the dtype of ``params.log_returns``.
      log_wealth: 0-d, sum of rewards so far in this episode.
    """

    time: jax.Array
    start: jax.Array
    weights: jax.Array
    log_wealth: jax.Array


def obs_layout(params: PortfolioParams) -> dict[str, slice]:
    """Where each part of the flat observation lives.

    Returns:
      ``{"returns": [0, W*N), "volatility": next N (only with that feature),
      "weights": next A, "crisis": the last entry}`` as slices, in this order.

    Example:
      >>> env, p = make_portfolio("test")
      >>> obs_layout(p)["crisis"]
      slice(420, 421, None)
    """
    n, w = params.num_assets, params.window
    out: dict[str, slice] = {"returns": slice(0, w * n)}
    pos = w * n
    for f in params.features:
        out[f] = slice(pos, pos + n)
        pos += n
    a = params.num_actions
    out["weights"] = slice(pos, pos + a)
    out["crisis"] = slice(pos + a, pos + a + 1)
    return out


def sanitize_weights(action: jax.Array) -> jax.Array:
    """Map any ``[..., A]`` action to the simplex deterministically.

    ``a <- where(isfinite(a), a, 0)``; ``a <- max(a, 0)``; ``w = a / sum(a)``, or ``1/A``
    everywhere if ``sum(a) == 0``. If ``max(a) > 2^100`` the entries are first multiplied by
    ``2^-100`` (exact in float32/float64) so that the sum cannot overflow.

    Args:
      action: ``[..., A]`` floating array.

    Returns:
      ``[..., A]`` weights on the simplex, same dtype.
    """
    a = jnp.where(jnp.isfinite(action), action, 0)
    a = jnp.maximum(a, 0)
    # huge entries: scale by an exact power of two first so that the sum cannot overflow
    big = jnp.max(a, axis=-1, keepdims=True) > 2.0 ** 100
    a = jnp.where(big, a * 2.0 ** -100, a)
    s = jnp.sum(a, axis=-1, keepdims=True)
    ok = s > 0
    return jnp.where(ok, a / jnp.where(ok, s, 1), 1.0 / action.shape[-1]).astype(action.dtype)


def eval_params(params: PortfolioParams) -> PortfolioParams:
    """Deterministic evaluation mode: start at the split's first day, walk the whole split."""
    return params.replace(random_start=False, max_steps_in_episode=params.num_steps)


class PortfolioEnv(Environment):
    """Long-only daily portfolio allocation (see the module docstring for the exact dynamics).

    Stateless: everything lives in :class:`PortfolioParams`, so one instance serves every
    split and setting. ``reset(key, params)`` / ``step(key, state, action, params)`` follow
    gymnax >= 1.0 (6-tuple, auto-reset, ``info["final_observation"]``).
    """

    def __init__(self) -> None:
        super().__init__()
        self._default: PortfolioParams | None = None

    # Stateless, so all instances are interchangeable: equal hashes let gymnax's jitted
    # ``step``/``reset`` (``self`` is a static argument) share one compilation cache.
    def __eq__(self, other: object) -> bool:
        return type(other) is type(self)

    def __hash__(self) -> int:
        return hash(type(self))

    @property
    def name(self) -> str:
        return "portfolio"

    @property
    def default_params(self) -> PortfolioParams:
        """The bundled data's training split with default settings (built once)."""
        if self._default is None:
            self._default = make_portfolio("train")[1]
        return self._default

    # -- gymnax hooks ------------------------------------------------------------------------

    def reset_env(self, key: jax.Array, params: PortfolioParams
                  ) -> tuple[jax.Array, PortfolioState]:
        dt = params.log_returns.dtype
        s, e = params.num_steps, params.max_steps_in_episode
        if params.random_start and s > e:
            start = jax.random.randint(key, (), 0, s - e + 1, dtype=jnp.int32)
        else:
            start = jnp.zeros((), jnp.int32)
        n, a = params.num_assets, params.num_actions
        weights = jnp.concatenate([jnp.full((n,), 1.0 / n, dt), jnp.zeros((a - n,), dt)])
        state = PortfolioState(time=jnp.zeros((), jnp.int32), start=start, weights=weights,
                               log_wealth=jnp.zeros((), dt))
        return self.get_obs(state, params), state

    def step_env(self, key: jax.Array, state: PortfolioState, action: jax.Array,
                 params: PortfolioParams
                 ) -> tuple[jax.Array, PortfolioState, jax.Array, jax.Array, dict[str, Any]]:
        del key
        dt = params.log_returns.dtype
        a_dim = params.num_actions
        action = jnp.asarray(action)
        if action.shape != (a_dim,):
            raise ValueError(f"action must have shape ({a_dim},) (N={params.num_assets} assets"
                             f"{' + cash' if params.cash else ''}), got {action.shape}")
        if not jnp.issubdtype(action.dtype, jnp.floating):
            action = action.astype(dt)
        w = sanitize_weights(action.astype(dt))
        j = params.history + state.start + state.time
        lr = jax.lax.dynamic_index_in_dim(params.log_returns, j, axis=0, keepdims=False)
        r = jnp.expm1(lr)
        if params.cash:
            r = jnp.concatenate([r, jnp.zeros((1,), dt)])
        turnover = jnp.sum(jnp.abs(w - state.weights))
        gross = jnp.dot(w, r)
        net = gross - params.cost.astype(dt) * turnover
        ruin = ~(net > -1.0)  # also catches NaN
        log_floor = jnp.asarray(np.log(RUIN_FLOOR), dt)
        growth = jnp.log1p(jnp.where(ruin, 0.0, net))
        reward = jnp.where(ruin, log_floor, jnp.maximum(growth, log_floor)).astype(dt)
        denom = 1.0 + gross
        ok = denom > 0
        drifted = jnp.where(ok, w * (1.0 + r) / jnp.where(ok, denom, 1.0), w)
        new_state = PortfolioState(time=state.time + 1, start=state.start,
                                   weights=drifted.astype(dt),
                                   log_wealth=(state.log_wealth + reward).astype(dt))
        obs = self.get_obs(new_state, params)
        info = {"portfolio_return": net.astype(dt), "gross_return": gross.astype(dt),
                "turnover": turnover.astype(dt), "weights": w,
                "log_wealth": new_state.log_wealth}
        return obs, new_state, reward, ruin, info

    def get_obs(self, state: PortfolioState, params: PortfolioParams | None = None,
                key: jax.Array | None = None) -> jax.Array:
        """Flat observation for ``state`` (layout: :func:`obs_layout`)."""
        del key
        if params is None:
            params = self.default_params
        dt = params.log_returns.dtype
        wdw = params.window
        j = params.history + state.start + state.time
        window = jax.lax.dynamic_slice_in_dim(params.log_returns, j - wdw, wdw, axis=0)
        parts = [window.reshape(-1)]
        for f in params.features:
            if f == "volatility":
                parts.append(jnp.std(window, axis=0))
            else:  # pragma: no cover - validated in make_portfolio
                raise ValueError(f"unknown feature {f!r}")
        crisis = jax.lax.dynamic_slice_in_dim(params.crisis, j - 1, 1, axis=0)
        parts += [state.weights, crisis.astype(dt)]
        return jnp.concatenate(parts).astype(dt)

    def is_terminated(self, state: PortfolioState, params: PortfolioParams) -> jax.Array:
        """Ruin is decided inside ``step_env``; a state alone never is terminal."""
        return jnp.zeros((), bool)

    # -- spaces ----------------------------------------------------------------------------

    def action_space(self, params: PortfolioParams | None = None) -> spaces.Box:
        """Box ``[0, 1]^A`` (actions are sanitized onto the simplex)."""
        params = self.default_params if params is None else params
        return spaces.Box(0.0, 1.0, (params.num_actions,), params.log_returns.dtype)

    def observation_space(self, params: PortfolioParams | None = None) -> spaces.Box:
        """Unbounded Box of shape ``(obs_dim,)``."""
        params = self.default_params if params is None else params
        return spaces.Box(-jnp.inf, jnp.inf, (params.obs_dim,), params.log_returns.dtype)

    @property
    def num_actions(self) -> int:  # gymnax API; depends on params, default split's value
        return self.default_params.num_actions

    def obs_layout(self, params: PortfolioParams) -> dict[str, slice]:
        """Same as the module-level :func:`obs_layout`."""
        return obs_layout(params)


def make_portfolio(split: str = "train", *, data: _data.MarketData | None = None,
                   window: int = 20, cost_bps: float = 10.0, cash: bool = False,
                   features: Sequence[str] = (), episode_length: int | None = 252,
                   splits: dict[str, tuple[Any, Any]] | None = None,
                   history: int | None = None, random_start: bool = True,
                   dtype: Any = jnp.float32) -> tuple[PortfolioEnv, PortfolioParams]:
    """Build the portfolio environment and its parameters for one split.

    Args:
      split: ``"train"`` (to 2012), ``"validation"`` (2013-2015), ``"test"`` (2016-2022),
        ``"all"``, or a key of ``splits`` (see :func:`jaxstab.envs.data.split`).
      data: a :class:`~jaxstab.envs.data.MarketData` (``load_prices(...)``); default the
        bundled 20 S&P 500 stocks.
      window: observation window ``W`` (days of log returns).
      cost_bps: transaction cost in basis points per unit turnover (>= 0).
      cash: add a cash asset (last action entry, return 0).
      features: extra observation features, a subset of ``("volatility",)``.
      episode_length: training episode length ``E`` (<= days in the split); None = the whole
        split.
      splits: date ranges overriding :data:`~jaxstab.envs.data.DEFAULT_SPLITS`.
      history: rows of earlier returns to keep (default ``max(window, 252)`` where available).
      random_start: training mode (True) or deterministic from day 0 (False); for full-split
        evaluation use :func:`eval_params`.
      dtype: dtype of the data arrays and so of observations and rewards (float32 default;
        float64 needs ``jax.enable_x64``).

    Returns:
      ``(env, params)``.

    Raises:
      ValueError: bad ``cost_bps``, ``features``, ``episode_length``, ``window``, or any data /
        split problem (see :func:`~jaxstab.envs.data.split`).

    Example:
      >>> env, params = make_portfolio("train")
      >>> obs, state = env.reset(jax.random.key(0), params)
      >>> obs.shape
      (421,)
    """
    if not np.isfinite(cost_bps) or cost_bps < 0:
        raise ValueError(f"cost_bps must be finite and >= 0, got {cost_bps!r}")
    if isinstance(features, str):
        features = (features,)
    features = tuple(features)
    bad = [f for f in features if f not in FEATURES]
    if bad or len(set(features)) != len(features):
        raise ValueError(f"features: unknown or repeated {features}; valid: {FEATURES}")
    if data is None:
        data = _data.load_prices()
    sd = _data.split(data, split, window=window, splits=splits, history=history)
    s = sd.dates.shape[0]
    if episode_length is None:
        episode_length = s
    if (not isinstance(episode_length, (int, np.integer)) or isinstance(episode_length, bool)
            or episode_length < 1):
        raise ValueError(f"episode_length must be an int >= 1 or None, got {episode_length!r}")
    if episode_length > s:
        raise ValueError(f"episode_length ({episode_length}) exceeds the {s} days of split "
                         f"{split!r}; use a shorter episode or episode_length=None")
    dtype = jnp.dtype(dtype)
    if not jnp.issubdtype(dtype, jnp.floating):
        raise ValueError(f"dtype must be a floating dtype, got {dtype}")
    params = PortfolioParams(
        log_returns=jnp.asarray(sd.log_returns, dtype),
        crisis=jnp.asarray(sd.crisis, dtype),
        cost=jnp.asarray(cost_bps * 1e-4, dtype),
        max_steps_in_episode=int(episode_length), window=int(window), history=int(sd.history),
        cash=bool(cash), features=features, random_start=bool(random_start))
    return PortfolioEnv(), params
