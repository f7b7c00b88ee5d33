"""End-to-end SAC training compiled to one XLA program: ``make_train(cfg, env, env_params)``.

``train(key, hparams)`` runs ``cfg.total_steps`` environment transitions over ``cfg.num_envs``
vectorized gymnax environments inside a single ``lax.scan``:

1. act: random actions for the first ``cfg.warmup_steps`` transitions, then samples of the policy;
2. step every environment (gymnax >= 1.0: ``obs, state, reward, terminated, truncated, info``;
   environments auto-reset inside ``step``, so the stored next observation is
   ``info["final_observation"]`` and only ``terminated`` stops bootstrapping);
3. add the transitions to the replay buffer;
4. after warm-up, ``cfg.updates_per_step`` SAC updates on uniform minibatches;
5. every ``cfg.eval_interval`` transitions, ``cfg.eval_episodes`` deterministic evaluation
   episodes (latent-mean action) on fresh environments, in the compiled program.

``jax.jit(jax.vmap(train))(keys, hparams)`` trains many seeds and hyperparameter settings at
once without recompiling (the warm-up switch depends only on the loop index, so it stays a real
``lax.cond`` under ``vmap``).

Environment protocol (gymnax): ``env.reset(key, params) -> (obs, state)``,
``env.step(key, state, action, params) -> (obs, state, reward, terminated, truncated, info)`` with
``info["final_observation"]``, ``env.observation_space(params).shape``,
``env.action_space(params)`` (a Box with ``low``/``high`` for the tanh policy; simplex policies
pass their weights unchanged), and ``env_params.max_steps_in_episode`` (or
``eval_max_steps``) bounding evaluation episodes.
"""

from __future__ import annotations

import math
from typing import Any, Callable, NamedTuple

import jax
import jax.numpy as jnp
import numpy as np

from jaxstab.agents.sac.networks import SACNetworks
from jaxstab.agents.sac.sac import SACConfig, SACHParams, SACState, make_sac, make_sac_actor
from jaxstab.replay import ReplayBufferState, Transition, replay_add, replay_init, replay_sample


class SACRunnerState(NamedTuple):
    """Loop carry of the SAC training scan.

    Attributes:
      agent: :class:`SACState`.
      buffer: replay buffer.
      env_state: batched gymnax env state (leading axis ``num_envs``).
      obs: ``[num_envs, obs_dim]`` float32 current observations.
      key: PRNG key.
    """

    agent: SACState
    buffer: ReplayBufferState
    env_state: Any
    obs: jax.Array
    key: jax.Array


class SACTrainOutput(NamedTuple):
    """Result of ``train``.

    Attributes:
      state: final :class:`SACRunnerState`.
      metrics: dict of ``[num_iterations]`` float32 arrays (one entry per vectorized env step):
        SAC update metrics averaged over that step's updates (zeros before learning starts),
        ``updated`` (1.0 once learning has started), ``reward`` (mean reward of the step).
      eval_returns: ``[num_evals]`` float32 mean undiscounted evaluation return.
      eval_steps: ``[num_evals]`` int32 environment transitions done before each evaluation.
    """

    state: SACRunnerState
    metrics: dict[str, jax.Array]
    eval_returns: jax.Array
    eval_steps: jax.Array


def _space_dim(space: Any, name: str) -> int:
    shape = getattr(space, "shape", None)
    if shape is None:
        raise TypeError(f"{name} must have a .shape (a gymnax Box), got {type(space).__name__}")
    return int(np.prod(shape)) if len(shape) else 1


def make_train(cfg: SACConfig, env: Any, env_params: Any, *, networks: SACNetworks | None = None,
               eval_max_steps: int | None = None
               ) -> Callable[[jax.Array, SACHParams], SACTrainOutput]:
    """Build ``train(key, hparams) -> SACTrainOutput`` for a gymnax-style environment.

    Args:
      cfg: :class:`SACConfig` (``total_steps`` and ``eval_interval`` must be multiples of
        ``num_envs``, and ``total_steps`` a multiple of ``eval_interval``).
      env: gymnax environment (see the module docstring for the protocol).
      env_params: its parameters (closed over as constants).
      networks: optional custom networks (passed to :func:`make_sac`).
      eval_max_steps: evaluation episode cap (default ``env_params.max_steps_in_episode``).

    Returns:
      Pure ``train(key, hparams)``; jit- and vmap-able over ``key`` and ``hparams``.

    Raises:
      ValueError: on inconsistent step counts or a missing evaluation cap.
      TypeError: if the spaces are not Box-like.

    Example:
      >>> env, env_params = gymnax.make("Pendulum-v1")
      >>> cfg = SACConfig(hidden_sizes=(64, 64), total_steps=20_000, eval_interval=2_000)
      >>> hp = default_hparams(cfg, 1, actor_lr=1e-3, critic_lr=1e-3, alpha_lr=1e-3)
      >>> hps = jax.tree_util.tree_map(lambda x: jnp.broadcast_to(x, (8,)), hp)
      >>> out = jax.jit(jax.vmap(make_train(cfg, env, env_params)))(
      ...     jax.random.split(jax.random.key(0), 8), hps)
      >>> out.eval_returns.shape   # (8, 10)
    """
    e = cfg.num_envs
    if cfg.total_steps % e or cfg.eval_interval % e:
        raise ValueError(f"total_steps ({cfg.total_steps}) and eval_interval ({cfg.eval_interval}) "
                         f"must be multiples of num_envs ({e})")
    if cfg.total_steps % cfg.eval_interval:
        raise ValueError(f"total_steps ({cfg.total_steps}) must be a multiple of eval_interval "
                         f"({cfg.eval_interval})")
    if eval_max_steps is None:
        eval_max_steps = getattr(env_params, "max_steps_in_episode", None)
        if eval_max_steps is None:
            raise ValueError("eval_max_steps is required when env_params has no "
                             "max_steps_in_episode")
    eval_max_steps = int(eval_max_steps)
    if eval_max_steps < 1:
        raise ValueError(f"eval_max_steps must be >= 1, got {eval_max_steps}")

    obs_dim = _space_dim(env.observation_space(env_params), "observation_space")
    action_space = env.action_space(env_params)
    action_dim = _space_dim(action_space, "action_space")
    action_shape = tuple(action_space.shape)
    if cfg.policy == "tanh_gaussian":
        low = jnp.broadcast_to(jnp.asarray(action_space.low, jnp.float32), action_shape).reshape(-1)
        high = jnp.broadcast_to(jnp.asarray(action_space.high, jnp.float32),
                                action_shape).reshape(-1)

        def to_env(a: jax.Array) -> jax.Array:
            return (low + 0.5 * (a + 1.0) * (high - low)).reshape(action_shape)
    else:
        def to_env(a: jax.Array) -> jax.Array:
            return a.reshape(action_shape)

    init, update = make_sac(obs_dim, action_dim, cfg, networks)
    sample_action, deterministic_action, random_action = make_sac_actor(action_dim, cfg, networks)

    iters_per_eval = cfg.eval_interval // e
    num_evals = cfg.total_steps // cfg.eval_interval
    warmup_iters = math.ceil(cfg.warmup_steps / e)

    v_reset = jax.vmap(env.reset, in_axes=(0, None))
    v_step = jax.vmap(env.step, in_axes=(0, 0, 0, None))

    def flat_obs(obs: jax.Array) -> jax.Array:
        return obs.reshape(obs.shape[0], -1).astype(jnp.float32)

    def evaluate(actor_params: Any, key: jax.Array) -> jax.Array:
        k_reset, k_steps = jax.random.split(key)
        obs, env_state = v_reset(jax.random.split(k_reset, cfg.eval_episodes), env_params)

        class EvalCarry(NamedTuple):
            obs: jax.Array
            env_state: Any
            ret: jax.Array
            alive: jax.Array

        def step(carry: EvalCarry, k: jax.Array) -> tuple[EvalCarry, None]:
            act = deterministic_action(actor_params, flat_obs(carry.obs))
            env_act = jax.vmap(to_env)(act)
            obs, env_state, reward, term, trunc, _ = v_step(
                jax.random.split(k, cfg.eval_episodes), carry.env_state, env_act, env_params)
            ret = carry.ret + jnp.where(carry.alive, reward.astype(jnp.float32), 0.0)
            alive = carry.alive & ~(term | trunc)
            return EvalCarry(obs, env_state, ret, alive), None

        carry0 = EvalCarry(obs, env_state, jnp.zeros((cfg.eval_episodes,), jnp.float32),
                           jnp.ones((cfg.eval_episodes,), bool))
        final, _ = jax.lax.scan(step, carry0, jax.random.split(k_steps, eval_max_steps))
        return jnp.mean(final.ret)

    def train(key: jax.Array, hparams: SACHParams) -> SACTrainOutput:
        k_agent, k_env, k_loop = jax.random.split(key, 3)
        agent = init(k_agent, hparams)
        obs, env_state = v_reset(jax.random.split(k_env, e), env_params)
        obs = flat_obs(obs)
        example = Transition(obs=obs[0], action=jnp.zeros((action_dim,), jnp.float32),
                             reward=jnp.zeros((), jnp.float32), next_obs=obs[0],
                             terminated=jnp.zeros((), bool))
        buffer = replay_init(example, cfg.buffer_size)
        runner = SACRunnerState(agent, buffer, env_state, obs, k_loop)

        dummy_batch = jax.tree_util.tree_map(
            lambda x: jnp.zeros((cfg.batch_size,) + x.shape, x.dtype), example)
        metric_shapes = jax.eval_shape(update, agent, dummy_batch, hparams, k_loop)[1]

        def do_updates(agent: SACState, buffer: ReplayBufferState, key: jax.Array
                       ) -> tuple[SACState, dict[str, jax.Array]]:
            def one(agent: SACState, k: jax.Array) -> tuple[SACState, dict[str, jax.Array]]:
                k_sample, k_update = jax.random.split(k)
                batch = replay_sample(buffer, k_sample, cfg.batch_size)
                return update(agent, batch, hparams, k_update)

            agent, metrics = jax.lax.scan(one, agent, jax.random.split(key, cfg.updates_per_step))
            metrics = {k: jnp.mean(v) for k, v in metrics.items()}
            return agent, {**metrics, "updated": jnp.ones((), jnp.float32)}

        def no_updates(agent: SACState, buffer: ReplayBufferState, key: jax.Array
                       ) -> tuple[SACState, dict[str, jax.Array]]:
            metrics = {k: jnp.zeros(v.shape, v.dtype) for k, v in metric_shapes.items()}
            return agent, {**metrics, "updated": jnp.zeros((), jnp.float32)}

        def env_step(runner: SACRunnerState, it: jax.Array
                     ) -> tuple[SACRunnerState, dict[str, jax.Array]]:
            key, k_pol, k_rand, k_step, k_upd = jax.random.split(runner.key, 5)
            learning = it >= warmup_iters
            pol_act = sample_action(runner.agent.actor_params, runner.obs, k_pol)
            act = jnp.where(learning, pol_act, random_action(k_rand, (e,)).astype(pol_act.dtype))
            next_obs, env_state, reward, term, trunc, info = v_step(
                jax.random.split(k_step, e), runner.env_state, jax.vmap(to_env)(act), env_params)
            transition = Transition(obs=runner.obs, action=act,
                                    reward=reward.astype(jnp.float32),
                                    next_obs=flat_obs(info["final_observation"]),
                                    terminated=term.astype(bool))
            buffer = replay_add(runner.buffer, transition)
            agent, metrics = jax.lax.cond(learning, do_updates, no_updates,
                                          runner.agent, buffer, k_upd)
            metrics = {**metrics, "reward": jnp.mean(transition.reward)}
            return SACRunnerState(agent, buffer, env_state, flat_obs(next_obs), key), metrics

        def chunk(runner: SACRunnerState, c: jax.Array
                  ) -> tuple[SACRunnerState, tuple[dict[str, jax.Array], jax.Array]]:
            its = c * iters_per_eval + jnp.arange(iters_per_eval, dtype=jnp.int32)
            runner, metrics = jax.lax.scan(env_step, runner, its)
            key, k_eval = jax.random.split(runner.key)
            ret = evaluate(runner.agent.actor_params, k_eval)
            return runner._replace(key=key), (metrics, ret)

        runner, (metrics, eval_returns) = jax.lax.scan(
            chunk, runner, jnp.arange(num_evals, dtype=jnp.int32))
        metrics = {k: v.reshape(-1) for k, v in metrics.items()}
        eval_steps = (jnp.arange(1, num_evals + 1, dtype=jnp.int32) * cfg.eval_interval)
        return SACTrainOutput(runner, metrics, eval_returns, eval_steps)

    return train


__all__ = ["SACRunnerState", "SACTrainOutput", "make_train"]
