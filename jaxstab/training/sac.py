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

Stateful actors (``SACConfig(actor="irt")``): the loop carries ``policy_state [num_envs, S]``
(reset to ``initial_policy_state`` when an episode ends, by termination or truncation), acts
with ``(obs, policy_state)`` and stores augmented observations ``[obs, policy_state]`` and
``[next_obs, new_policy_state]`` in the buffer (see :func:`jaxstab.agents.sac.make_sac`).
Evaluation episodes start from the initial policy state too. Stateless actors have ``S = 0``.

Chunked execution: :func:`make_runner` cuts the same run into ``num_evals`` chunks of one
evaluation interval each (:class:`jaxstab.training.loop.Runner`); ``make_train`` is exactly
``finalize(scan(run_chunk, init(key, hparams)))``, so :func:`jaxstab.training.loop.run` can
drive it chunk by chunk with progress, checkpoints and resumption.

``jax.jit(jax.vmap(train))(keys, hparams)`` trains many seeds and hyperparameter settings at
once without recompiling (the warm-up switch depends only on the loop index, so it stays a real
``lax.cond`` under ``vmap``). On the CPU that vmap runs the seeds one after another inside the
program by default (``make_train(..., seed_vmap="auto")``, see
:func:`jaxstab.training.loop.with_seed_layout`): measured faster there than batching them;
``seed_vmap="vectorize"`` gives the batched program.

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
from jaxstab.agents.sac.sac import SACConfig, SACHParams, SACState, make_sac, make_sac_acting
from jaxstab.replay import ReplayBufferState, Transition, replay_add, replay_init, replay_sample
from jaxstab.training.loop import Runner, scan_chunks, with_seed_layout


class SACRunnerState(NamedTuple):
    """Loop carry of the SAC training scan.

    Attributes:
      agent: :class:`SACState`.
      buffer: replay buffer.
      env_state: batched gymnax env state (leading axis ``num_envs``).
      obs: ``[num_envs, obs_dim]`` float32 current observations.
      key: PRNG key.
      policy_state: ``[num_envs, S]`` float32 policy state of a stateful actor (``S = 0`` for a
        stateless one).
    """

    agent: SACState
    buffer: ReplayBufferState
    env_state: Any
    obs: jax.Array
    key: jax.Array
    policy_state: jax.Array


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


def make_runner(cfg: SACConfig, env: Any, env_params: Any, *,
                networks: SACNetworks | None = None, eval_max_steps: int | None = None,
                seed_vmap: str = "auto") -> Runner:
    """SAC training cut into chunks of one evaluation interval (:mod:`jaxstab.training.loop`).

    ``init(key, hparams) -> SACRunnerState``; ``run_chunk(carry, hparams, chunk_index) ->
    (carry, outputs)`` runs ``eval_interval / num_envs`` vectorized environment steps (acting,
    replay, updates) and one deterministic evaluation; ``outputs`` holds the per-step metrics
    (leaves ``[eval_interval / num_envs]``) and ``"eval_return"`` (0-d float32).
    ``finalize(carry, stacked)`` turns the stacked outputs ``[num_chunks, ...]`` into
    :class:`SACTrainOutput`, exactly what :func:`make_train`'s ``train`` returns (which is this
    runner scanned). ``chunk_index`` selects warm-up vs learning steps: keep it unbatched
    (``in_axes=None``) under ``vmap`` so the warm-up switch stays a real ``lax.cond``.

    Args:
      cfg, env, env_params, networks, eval_max_steps: as :func:`make_train`.
      seed_vmap: how ``jax.vmap(run_chunk)`` (as :func:`jaxstab.training.loop.run` calls it)
        runs its seeds, as in :func:`make_train` (default ``"auto"``: one after another on the
        CPU).

    Returns:
      :class:`jaxstab.training.loop.Runner` with ``num_chunks = total_steps // eval_interval``.

    Raises:
      ValueError, TypeError: as :func:`make_train`.

    Example:
      >>> runner = make_runner(cfg, env, env_params)
      >>> carry = runner.init(jax.random.key(0), hp)
      >>> step = jax.jit(runner.run_chunk)
      >>> outs = []
      >>> for c in range(runner.num_chunks):
      ...     carry, out = step(carry, hp, jnp.int32(c)); outs.append(out)
      >>> result = runner.finalize(carry, jax.tree_util.tree_map(lambda *x: jnp.stack(x), *outs))
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

    sac_init, update = make_sac(obs_dim, action_dim, cfg, networks)
    acting = make_sac_acting(action_dim, cfg, networks)
    psd = acting.policy_state_dim

    iters_per_eval = cfg.eval_interval // e
    num_evals = cfg.total_steps // cfg.eval_interval
    warmup_iters = math.ceil(cfg.warmup_steps / e)

    v_reset = jax.vmap(env.reset, in_axes=(0, None))
    v_step = jax.vmap(env.step, in_axes=(0, 0, 0, None))

    def flat_obs(obs: jax.Array) -> jax.Array:
        return obs.reshape(obs.shape[0], -1).astype(jnp.float32)

    def augment(obs: jax.Array, pstate: jax.Array) -> jax.Array:
        return jnp.concatenate([obs, pstate], axis=-1) if psd else obs

    def evaluate(actor_params: Any, key: jax.Array) -> jax.Array:
        k_reset, k_steps = jax.random.split(key)
        obs, env_state = v_reset(jax.random.split(k_reset, cfg.eval_episodes), env_params)

        class EvalCarry(NamedTuple):
            obs: jax.Array
            env_state: Any
            ret: jax.Array
            alive: jax.Array
            policy_state: jax.Array

        def step(carry: EvalCarry, k: jax.Array) -> tuple[EvalCarry, None]:
            act, pstate = acting.mode(actor_params, flat_obs(carry.obs), carry.policy_state)
            env_act = jax.vmap(to_env)(act)
            obs, env_state, reward, term, trunc, _ = v_step(
                jax.random.split(k, cfg.eval_episodes), carry.env_state, env_act, env_params)
            ret = carry.ret + jnp.where(carry.alive, reward.astype(jnp.float32), 0.0)
            alive = carry.alive & ~(term | trunc)
            return EvalCarry(obs, env_state, ret, alive, pstate), None

        carry0 = EvalCarry(obs, env_state, jnp.zeros((cfg.eval_episodes,), jnp.float32),
                           jnp.ones((cfg.eval_episodes,), bool),
                           acting.initial_policy_state(cfg.eval_episodes))
        final, _ = jax.lax.scan(step, carry0, jax.random.split(k_steps, eval_max_steps))
        return jnp.mean(final.ret)

    def example_transition(obs: jax.Array, pstate: jax.Array) -> Transition:
        o = augment(obs, pstate)[0]
        return Transition(obs=o, action=jnp.zeros((action_dim,), jnp.float32),
                          reward=jnp.zeros((), jnp.float32), next_obs=o,
                          terminated=jnp.zeros((), bool))

    def init(key: jax.Array, hparams: SACHParams) -> SACRunnerState:
        k_agent, k_env, k_loop = jax.random.split(key, 3)
        agent = sac_init(k_agent, hparams)
        obs, env_state = v_reset(jax.random.split(k_env, e), env_params)
        obs = flat_obs(obs)
        pstate = acting.initial_policy_state(e)
        buffer = replay_init(example_transition(obs, pstate), cfg.buffer_size)
        return SACRunnerState(agent, buffer, env_state, obs, k_loop, pstate)

    def run_chunk(runner: SACRunnerState, hparams: SACHParams, c: jax.Array
                  ) -> tuple[SACRunnerState, dict[str, jax.Array]]:
        example = example_transition(runner.obs, runner.policy_state)
        dummy_batch = jax.tree_util.tree_map(
            lambda x: jnp.zeros((cfg.batch_size,) + x.shape, x.dtype), example)
        metric_shapes = jax.eval_shape(update, runner.agent, dummy_batch, hparams, runner.key)[1]

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
            pol_act, new_pstate = acting.sample(runner.agent.actor_params, runner.obs,
                                                runner.policy_state, k_pol)
            act = jnp.where(learning, pol_act, acting.random_action(k_rand, (e,)).astype(
                pol_act.dtype))
            next_obs, env_state, reward, term, trunc, info = v_step(
                jax.random.split(k_step, e), runner.env_state, jax.vmap(to_env)(act), env_params)
            transition = Transition(obs=augment(runner.obs, runner.policy_state), action=act,
                                    reward=reward.astype(jnp.float32),
                                    next_obs=augment(flat_obs(info["final_observation"]),
                                                     new_pstate),
                                    terminated=term.astype(bool))
            buffer = replay_add(runner.buffer, transition)
            agent, metrics = jax.lax.cond(learning, do_updates, no_updates,
                                          runner.agent, buffer, k_upd)
            metrics = {**metrics, "reward": jnp.mean(transition.reward)}
            if psd:
                done = (term | trunc)[:, None]
                pstate = jnp.where(done, acting.initial_policy_state(e), new_pstate)
            else:
                pstate = runner.policy_state
            return SACRunnerState(agent, buffer, env_state, flat_obs(next_obs), key, pstate), \
                metrics

        c = jnp.asarray(c, jnp.int32)
        its = c * iters_per_eval + jnp.arange(iters_per_eval, dtype=jnp.int32)
        runner, metrics = jax.lax.scan(env_step, runner, its)
        key, k_eval = jax.random.split(runner.key)
        ret = evaluate(runner.agent.actor_params, k_eval)
        return runner._replace(key=key), {**metrics, "eval_return": ret}

    def finalize(runner: SACRunnerState, stacked: dict[str, jax.Array]) -> SACTrainOutput:
        metrics = {k: v.reshape(-1) for k, v in stacked.items() if k != "eval_return"}
        eval_steps = jnp.arange(1, num_evals + 1, dtype=jnp.int32) * cfg.eval_interval
        return SACTrainOutput(runner, metrics, stacked["eval_return"], eval_steps)

    return Runner(init=init, run_chunk=with_seed_layout(run_chunk, seed_vmap),
                  num_chunks=num_evals, finalize=finalize)


def make_train(cfg: SACConfig, env: Any, env_params: Any, *, networks: SACNetworks | None = None,
               eval_max_steps: int | None = None, seed_vmap: str = "auto"
               ) -> Callable[[jax.Array, SACHParams], SACTrainOutput]:
    """Build ``train(key, hparams) -> SACTrainOutput`` for a gymnax-style environment.

    ``train`` is :func:`make_runner`'s ``init``, a ``lax.scan`` of ``run_chunk`` over the
    ``total_steps // eval_interval`` chunks, and ``finalize``.

    Args:
      cfg: :class:`SACConfig` (``total_steps`` and ``eval_interval`` must be multiples of
        ``num_envs``, and ``total_steps`` a multiple of ``eval_interval``).
      env: gymnax environment (see the module docstring for the protocol).
      env_params: its parameters (closed over as constants).
      networks: optional custom networks (passed to :func:`make_sac`).
      eval_max_steps: evaluation episode cap (default ``env_params.max_steps_in_episode``).
      seed_vmap: how ``jax.vmap(train)`` runs its seeds
        (:func:`jaxstab.training.loop.with_seed_layout`): ``"auto"`` (default) loops over the
        seeds inside the program on the CPU and vectorizes them elsewhere; ``"loop"``;
        ``"vectorize"`` (the plain vmapped program).

    Returns:
      Pure ``train(key, hparams)``; jit- and vmap-able over ``key`` and ``hparams``;
      ``train.vectorized`` is the same function without the seed-layout rule.

    Raises:
      ValueError: on inconsistent step counts, a missing evaluation cap or an unknown
        ``seed_vmap``.
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
    # the seed layout is decided once, for the whole run: chunks without a rule of their own
    runner = make_runner(cfg, env, env_params, networks=networks, eval_max_steps=eval_max_steps,
                         seed_vmap="vectorize")

    def train(key: jax.Array, hparams: SACHParams) -> SACTrainOutput:
        return scan_chunks(runner, key, hparams)

    return with_seed_layout(train, seed_vmap)


__all__ = ["SACRunnerState", "SACTrainOutput", "make_runner", "make_train"]
