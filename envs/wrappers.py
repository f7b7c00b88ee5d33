"""Stress wrappers for gymnax-style environments (reward scale, heavy tails, regimes, faults).

Each wrapper takes any environment with gymnax's >= 1.0 protocol

    reset(key, params) -> (obs, state)
    step(key, state, action, params) -> (obs, state, reward, terminated, truncated, info)

(auto-reset inside ``step``; ``info["final_observation"]`` is the true last observation of an
episode that just ended, and equals ``obs`` when it did not end) and returns an environment with
the same protocol. Everything is pure JAX: wrapped environments ``jit`` and ``vmap`` like the
originals, and spaces / ``default_params`` / ``max_steps_in_episode`` pass through.

The inner environment always receives the caller's ``key`` unchanged; the wrapper's own noise
uses ``jax.random.fold_in(key, tag)``, so a wrapped environment visits exactly the states of
the unwrapped one under the same keys and actions (only rewards/observations are perturbed).

Wrappers (all documented with their exact formula):

- :class:`RewardScale`: ``r' = scale * r`` (reward x1e-3, x1e3 stress).
- :class:`StudentTReward`: ``r' = r + scale * t``, ``t ~ Student-t(df)`` (df = 2: infinite
  variance, heavy tails).
- :class:`RegimeSwitch`: ``r' = r`` for the first ``switch_step`` steps of an environment
  instance, then ``r' = factor * r`` (``factor = -1`` flips the sign). The count lives in the
  wrapper state, runs across auto-resets and restarts only at ``reset``.
- :class:`NonFiniteInjection`: with probability ``reward_frac`` the reward is replaced by
  ``value`` (NaN or +-Inf); independently with probability ``obs_frac`` the observation emitted by
  the step is replaced element-wise by ``value`` (see the class for how ``final_observation``
  stays consistent).

Example:
  >>> import gymnax
  >>> env, params = gymnax.make("Pendulum-v1")
  >>> env = RewardScale(env, 1e3)
  >>> obs, state = env.reset(jax.random.key(0), params)
  >>> obs, state, r, term, trunc, info = env.step(jax.random.key(1), state, jnp.zeros(1), params)
"""

from __future__ import annotations

import math
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp

__all__ = [
    "NonFiniteInjection",
    "RegimeState",
    "RegimeSwitch",
    "RewardScale",
    "StressWrapper",
    "StudentTReward",
]

# fold_in tags of the wrappers' own randomness (distinct so stacked wrappers draw independently)
_TAG_STUDENT_T = 0x5157
_TAG_NAN_REWARD = 0x4E41
_TAG_NAN_OBS = 0x4E42


def _check_finite_number(name: str, value: Any) -> float:
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise TypeError(f"{name} must be a Python number, got {type(value).__name__}")
    value = float(value)
    if not math.isfinite(value):
        raise ValueError(f"{name} must be finite, got {value}")
    return value


def _float_reward(reward: Any) -> jax.Array:
    reward = jnp.asarray(reward)
    if not jnp.issubdtype(reward.dtype, jnp.floating):
        reward = reward.astype(jnp.float32)
    return reward


class StressWrapper:
    """Base class: forwards everything (spaces, params, attributes) to the wrapped environment.

    Subclasses override :meth:`step` (and :meth:`reset` if they keep state).

    Args:
      env: a gymnax-style environment (see the module docstring).
    """

    def __init__(self, env: Any) -> None:
        for attr in ("reset", "step"):
            if not callable(getattr(env, attr, None)):
                raise TypeError(f"env must have a callable {attr}() (gymnax protocol), "
                                f"got {type(env).__name__}")
        self._env = env

    @property
    def unwrapped(self) -> Any:
        """The innermost environment."""
        env = self._env
        while isinstance(env, StressWrapper):
            env = env._env
        return env

    def __getattr__(self, name: str) -> Any:
        # only called when normal lookup fails: spaces, default_params, name, num_actions, ...
        if name == "_env":
            raise AttributeError(name)
        return getattr(self._env, name)

    def reset(self, key: jax.Array, params: Any = None) -> tuple[Any, Any]:
        """Reset the wrapped environment (``(obs, state)``)."""
        return self._env.reset(key, params)

    def step(self, key: jax.Array, state: Any, action: Any, params: Any = None
             ) -> tuple[Any, Any, jax.Array, jax.Array, jax.Array, dict[str, Any]]:
        """Step the wrapped environment unchanged."""
        return self._env.step(key, state, action, params)


class RewardScale(StressWrapper):
    """Multiply every reward by a constant: ``r' = scale * r`` (computed in the reward's dtype).

    Args:
      env: gymnax-style environment.
      scale: finite Python float (e.g. ``1e-3`` or ``1e3``).

    Raises:
      TypeError: if ``scale`` is not a number. ValueError: if it is not finite.

    Example:
      >>> env = RewardScale(gymnax.make("Pendulum-v1")[0], 1e3)
    """

    def __init__(self, env: Any, scale: float) -> None:
        super().__init__(env)
        self.scale = _check_finite_number("scale", scale)

    def step(self, key, state, action, params=None):
        obs, state, reward, term, trunc, info = self._env.step(key, state, action, params)
        reward = _float_reward(reward)
        return obs, state, reward * jnp.asarray(self.scale, reward.dtype), term, trunc, info


class StudentTReward(StressWrapper):
    """Add heavy-tailed noise to rewards: ``r' = r + scale * t``, ``t ~ Student-t(df)``.

    With ``df = 2`` (default) the noise has a finite mean (0) and infinite variance; its
    quantiles are ``P(|t| > x) = 1 - x / sqrt(x^2 + 2)``.

    Args:
      env: gymnax-style environment.
      scale: finite non-negative noise scale.
      df: degrees of freedom, > 0.

    Raises:
      TypeError / ValueError: on a non-number, negative or non-finite ``scale`` or ``df <= 0``.

    Example:
      >>> env = StudentTReward(gymnax.make("Pendulum-v1")[0], scale=1.0, df=2.0)
    """

    def __init__(self, env: Any, scale: float = 1.0, df: float = 2.0) -> None:
        super().__init__(env)
        self.scale = _check_finite_number("scale", scale)
        if self.scale < 0:
            raise ValueError(f"scale must be >= 0, got {scale}")
        self.df = _check_finite_number("df", df)
        if self.df <= 0:
            raise ValueError(f"df must be > 0, got {df}")

    def step(self, key, state, action, params=None):
        obs, state, reward, term, trunc, info = self._env.step(key, state, action, params)
        reward = _float_reward(reward)
        noise = jax.random.t(jax.random.fold_in(key, _TAG_STUDENT_T), self.df, reward.shape,
                             reward.dtype)
        return obs, state, reward + jnp.asarray(self.scale, reward.dtype) * noise, term, trunc, info


class RegimeState(NamedTuple):
    """State of :class:`RegimeSwitch`.

    Attributes:
      env_state: the wrapped environment's state.
      t: 0-d int32, steps taken since the last ``reset`` (not restarted by auto-resets).
    """

    env_state: Any
    t: jax.Array


class RegimeSwitch(StressWrapper):
    """Change the reward regime after a fixed number of steps.

    ``r'_t = r_t`` for steps ``t = 0 .. switch_step - 1`` (``t`` counted per environment instance
    from its ``reset``, across episodes) and ``r'_t = factor * r_t`` from step ``switch_step`` on.
    ``factor = -1`` flips the reward's sign; ``factor = 10`` multiplies its scale.

    Note for vectorized training: each of ``num_envs`` environments counts its own steps, so the
    switch happens after ``switch_step * num_envs`` transitions in total.

    Args:
      env: gymnax-style environment.
      switch_step: non-negative int, the first step of the new regime.
      factor: finite reward multiplier of the new regime.

    Raises:
      TypeError / ValueError: on a non-int or negative ``switch_step`` or a non-finite ``factor``.

    Example:
      >>> env = RegimeSwitch(gymnax.make("Pendulum-v1")[0], switch_step=5_000, factor=-1.0)
    """

    def __init__(self, env: Any, switch_step: int, factor: float = -1.0) -> None:
        super().__init__(env)
        if isinstance(switch_step, bool) or not isinstance(switch_step, int):
            raise TypeError(f"switch_step must be an int, got {type(switch_step).__name__}")
        if switch_step < 0:
            raise ValueError(f"switch_step must be >= 0, got {switch_step}")
        self.switch_step = switch_step
        self.factor = _check_finite_number("factor", factor)

    def reset(self, key, params=None):
        obs, env_state = self._env.reset(key, params)
        return obs, RegimeState(env_state, jnp.zeros((), jnp.int32))

    def step(self, key, state: RegimeState, action, params=None):
        obs, env_state, reward, term, trunc, info = self._env.step(
            key, state.env_state, action, params)
        reward = _float_reward(reward)
        switched = state.t >= self.switch_step
        reward = jnp.where(switched, reward * jnp.asarray(self.factor, reward.dtype), reward)
        return obs, RegimeState(env_state, state.t + 1), reward, term, trunc, info


class NonFiniteInjection(StressWrapper):
    """Replace a random fraction of rewards and/or observations by NaN or +-Inf.

    Per step, independently: with probability ``reward_frac`` the reward becomes ``value``; with
    probability ``obs_frac`` the observation produced by the step becomes ``value`` in every
    element. The poisoned observation is the step's *next observation*: it is written into
    ``info["final_observation"]`` and, when the episode continues (``obs`` is then the same
    observation), into ``obs`` too; when the episode ended, ``obs`` is the fresh reset observation
    and stays clean. So ``obs == final_observation`` whenever the episode did not end, as in the
    unwrapped environment.

    Args:
      env: gymnax-style environment with floating observations.
      reward_frac: probability in [0, 1] that a step's reward is replaced.
      obs_frac: probability in [0, 1] that a step's observation is replaced.
      value: the injected value: ``"nan"``, ``"inf"``, ``"-inf"`` or a float (e.g. ``1e30``).

    Raises:
      ValueError: on a fraction outside [0, 1] or an unknown ``value`` string.
      TypeError: on non-number fractions, or (at trace time) integer observations with
        ``obs_frac > 0``.

    Example:
      >>> env = NonFiniteInjection(gymnax.make("CartPole-v1")[0], reward_frac=0.01, value="nan")
    """

    _NAMED = {"nan": math.nan, "inf": math.inf, "-inf": -math.inf}

    def __init__(self, env: Any, reward_frac: float = 0.0, obs_frac: float = 0.0,
                 value: str | float = "nan") -> None:
        super().__init__(env)
        for name, frac in (("reward_frac", reward_frac), ("obs_frac", obs_frac)):
            frac = _check_finite_number(name, frac)
            if not 0.0 <= frac <= 1.0:
                raise ValueError(f"{name} must be in [0, 1], got {frac}")
        self.reward_frac = float(reward_frac)
        self.obs_frac = float(obs_frac)
        if isinstance(value, str):
            if value.lower() not in self._NAMED:
                raise ValueError(f"value must be one of {sorted(self._NAMED)} or a float, "
                                 f"got {value!r}")
            self.value = self._NAMED[value.lower()]
        elif isinstance(value, (int, float)) and not isinstance(value, bool):
            self.value = float(value)
        else:
            raise TypeError(f"value must be a str or float, got {type(value).__name__}")

    def step(self, key, state, action, params=None):
        obs, state, reward, term, trunc, info = self._env.step(key, state, action, params)
        reward = _float_reward(reward)
        if self.reward_frac > 0:
            hit_r = jax.random.bernoulli(jax.random.fold_in(key, _TAG_NAN_REWARD),
                                         self.reward_frac, reward.shape)
            reward = jnp.where(hit_r, jnp.asarray(self.value, reward.dtype), reward)
        if self.obs_frac > 0:
            final_obs = info["final_observation"] if "final_observation" in info else obs
            if not jnp.issubdtype(jnp.asarray(final_obs).dtype, jnp.floating):
                raise TypeError("obs_frac > 0 needs floating observations, got dtype "
                                f"{jnp.asarray(final_obs).dtype}")
            hit_o = jax.random.bernoulli(jax.random.fold_in(key, _TAG_NAN_OBS), self.obs_frac)
            done = jnp.logical_or(term, trunc)
            bad = jnp.full_like(final_obs, self.value)
            new_final = jnp.where(hit_o, bad, final_obs)
            obs = jnp.where(hit_o & ~done, jnp.full_like(obs, self.value), obs)
            info = {**info, "final_observation": new_final}
        return obs, state, reward, term, trunc, info
