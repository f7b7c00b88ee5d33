"""Rollout stepping with the environments' auto-resets drawn before the rollout.

gymnax's ``Environment.step(key, state, action, params)`` splits ``key`` into
``(key_step, key_reset)``, runs ``step_env(key_step, ...)`` and ``reset_env(key_reset, ...)`` on
*every* step, and keeps the reset only where the episode ended. Inside a rollout loop that is
two random-number calls per step (the split and the reset's draws); XLA's CPU backend runs
threefry as a rolled loop of small kernels, which made them most of a CartPole rollout step.

:func:`presample_resets` does the same split and the same ``reset_env`` for all ``T`` steps of a
rollout at once, before the loop (one batched call each), and :func:`step_presampled` then takes
one step with ``step_env`` and the step's precomputed reset. Given the same keys the results are
those of ``env.step`` (same keys, same functions, the same selection; only the reset work moves
out of the loop): flags, integers and keys identical, floats equal to rounding (XLA may fuse the
step's arithmetic differently in the two programs; tested on five gymnax environments and
jaxstab's portfolio environment). It applies to environments that use gymnax's own
``Environment.step`` (not overridden, e.g. not a wrapper) and whose ``T x N`` reset states and
observations fit in :data:`MAX_PRESAMPLED_BYTES`; :func:`can_presample` says so.
:func:`rollout_stepper` makes that choice once and returns the two calls a rollout needs
(``prepare`` before the loop, ``step`` inside it), falling back to ``env.step`` otherwise.

:func:`step_presampled` restates the body of gymnax's ``Environment.step``; should a gymnax
release change that body, the restatement would drift from it. So :func:`can_presample` also
compares the installed ``Environment.step`` source with the one it was checked against
(:data:`VERIFIED_STEP_SOURCES`, SHA-256) and, for any other, falls back to ``env.step`` with a
warning (the same results, slower) until the new body has been checked and its hash added.
"""

from __future__ import annotations

import functools
import hashlib
import inspect
import warnings
from typing import Any, Callable, NamedTuple

import jax
import jax.numpy as jnp
import numpy as np

from jaxstab.agents.common import tree_select

#: Largest total size of the ``T x N`` precomputed reset states and observations.
MAX_PRESAMPLED_BYTES = 64 * 2**20


#: SHA-256 of the source of gymnax's ``Environment.step`` that :func:`step_presampled`
#: restates (checked by the equality tests in ``tests/training/test_envstep.py``).
VERIFIED_STEP_SOURCES = {
    "289de941726d4e1e194f4bb9bd4a93ddb8ae951052b29196e3801f464f11438b": "gymnax 1.0.1",
}

_warned_sources: set[str | None] = set()


def _gymnax_base_step():
    try:
        from gymnax.environments.environment import Environment
    except ImportError:  # pragma: no cover - gymnax is a runtime dependency
        return None
    return Environment.step


@functools.lru_cache(maxsize=None)
def step_source_hash(step: Any) -> str | None:
    """SHA-256 of a ``step`` function's source (None where the source cannot be read)."""
    try:
        src = inspect.getsource(step)
    except (OSError, TypeError):
        return None
    return hashlib.sha256(src.encode()).hexdigest()


def _verified(base: Any) -> bool:
    digest = step_source_hash(base)
    if digest in VERIFIED_STEP_SOURCES:
        return True
    if digest not in _warned_sources:
        _warned_sources.add(digest)
        warnings.warn(
            "gymnax's Environment.step is not the version jaxstab's presampled auto-resets "
            f"were checked against (source SHA-256 {digest}; checked: "
            f"{sorted(VERIFIED_STEP_SOURCES.values())}); PPO rollouts use env.step instead "
            "(the same results, slower)", RuntimeWarning, stacklevel=3)
    return False


def can_presample(env: Any, env_params: Any, num_steps: int, num_envs: int) -> bool:
    """True iff ``env`` steps with gymnax's own ``Environment.step`` in the version
    :func:`step_presampled` restates (:data:`VERIFIED_STEP_SOURCES`; another one falls back
    with a warning) and the ``num_steps x num_envs`` resets fit in
    :data:`MAX_PRESAMPLED_BYTES`."""
    base = _gymnax_base_step()
    if base is None or getattr(type(env), "step", None) is not base:
        return False
    if not _verified(base):
        return False
    for name in ("step_env", "reset_env", "is_truncated"):
        if not callable(getattr(env, name, None)):
            return False
    shapes = jax.eval_shape(lambda k: env.reset_env(k, env_params), jax.random.key(0))
    per_env = sum(int(np.prod(x.shape)) * np.dtype(x.dtype).itemsize
                  for x in jax.tree_util.tree_leaves(shapes))
    return per_env * int(num_steps) * int(num_envs) <= MAX_PRESAMPLED_BYTES


def presample_resets(env: Any, env_params: Any, keys: jax.Array):
    """Split every step key as ``env.step`` does and run the resets of all steps at once.

    Args:
      env: a gymnax environment (see :func:`can_presample`).
      env_params: its parameters.
      keys: ``[T, N]`` PRNG keys, the keys ``env.step`` would get at each step and environment.

    Returns:
      ``(step_keys [T, N], reset_obs [T, N, ...], reset_state [T, N, ...])``.
    """
    split = jax.vmap(jax.vmap(jax.random.split))(keys)  # [T, N, 2]
    key_step, key_reset = split[:, :, 0], split[:, :, 1]
    reset_obs, reset_state = jax.vmap(jax.vmap(env.reset_env, in_axes=(0, None)),
                                      in_axes=(0, None))(key_reset, env_params)
    return key_step, reset_obs, reset_state


def step_presampled(env: Any, env_params: Any, key_step: jax.Array, state: Any, action: Any,
                    reset_obs: Any, reset_state: Any):
    """One ``env.step`` of one environment with its reset precomputed (vmap it over envs).

    Returns what gymnax's ``Environment.step`` returns: ``(obs, state, reward, terminated,
    truncated, info)`` with ``info["final_observation"]`` the observation before the auto-reset.
    """
    obs_st, state_st, reward, terminated, info = env.step_env(key_step, state, action,
                                                              env_params)
    truncated = env.is_truncated(state_st, env_params)
    done = jnp.logical_or(terminated, truncated)
    state = tree_select(done, reset_state, state_st)
    obs = tree_select(done, reset_obs, obs_st)
    info = {**info, "terminated": terminated, "truncated": truncated,
            "final_observation": obs_st}
    return obs, state, reward, terminated, truncated, info


class RolloutStepper(NamedTuple):
    """How a rollout of ``num_steps x num_envs`` environment steps calls the environment.

    Attributes:
      presampled: whether the auto-resets are drawn before the rollout (:func:`can_presample`).
      prepare: ``keys [T, N] -> (step_keys [T, N], resets)``, called once before the rollout
        loop; ``resets`` (None without presampling) is scanned over along with the keys.
      step: ``(keys [N], states, actions [N], resets_t) -> (obs, state, reward, terminated,
        truncated, info)`` for all environments of one step (``resets_t``: that step's slice of
        ``resets``); ``env.step``'s results either way.
    """

    presampled: bool
    prepare: Callable[[jax.Array], tuple[jax.Array, Any]]
    step: Callable[..., tuple]


def rollout_stepper(env: Any, env_params: Any, num_steps: int, num_envs: int
                    ) -> RolloutStepper:
    """The presampled path (:func:`presample_resets` + :func:`step_presampled`) where
    :func:`can_presample` allows it, else ``env.step`` with the same keys."""
    if can_presample(env, env_params, num_steps, num_envs):
        def prepare(keys):
            key_step, reset_obs, reset_state = presample_resets(env, env_params, keys)
            return key_step, (reset_obs, reset_state)

        one = functools.partial(step_presampled, env, env_params)

        def step(keys, states, actions, resets):
            return jax.vmap(one)(keys, states, actions, *resets)

        return RolloutStepper(True, prepare, step)

    def step_plain(keys, states, actions, resets):
        del resets
        return jax.vmap(env.step, in_axes=(0, 0, 0, None))(keys, states, actions, env_params)

    return RolloutStepper(False, lambda keys: (keys, None), step_plain)
