"""PPO training compiled to one XLA program: ``make_train(cfg, env, env_params) -> train``.

``train(key, hparams)`` is a single ``lax.scan`` over ``cfg.num_updates`` iterations of
(rollout of ``num_steps`` steps in ``num_envs`` vmapped gymnax environments -> GAE -> one PPO
update of ``num_epochs x num_minibatches`` steps), so ``jax.jit(jax.vmap(train))(keys, hparams)``
trains many seeds (and hyperparameter settings) at once.

Terminated vs truncated (gymnax >= 1.0): ``env.step`` returns ``(obs, state, reward, terminated,
truncated, info)`` and auto-resets, so ``obs`` after a finished episode is already the next
episode's first observation; the true last observation is ``info["final_observation"]``. The
GAE here uses ``V(final_observation)`` as the next value of every step (it equals the next
observation when the episode continues), bootstraps through truncation and cuts at termination:

    delta_t = r_t + gamma * (1 - terminated_t) * V(s'_t) - V(s_t)
    A_t     = delta_t + gamma * lambda * (1 - done_t) * A_{t+1}
    done_t  = terminated_t | truncated_t

An environment that does not provide ``info["final_observation"]`` gets the post-reset
observation instead (documented fallback: truncated steps then bootstrap from the wrong state).

Episode returns (raw rewards, before any normalization) are accumulated per environment and
reported per update as the mean over the episodes completed in that rollout
(``metrics["episode_return"]``, with ``metrics["episodes"]`` the count; 0 when none completed),
the PureJaxRL measure. :func:`make_evaluate` gives a deterministic evaluation instead.

Reward normalization (``cfg.reward_norm``): SB3 VecNormalize semantics per environment (reset on
``terminated | truncated``), applied to each rollout after it is collected with
:func:`jaxstab.normalization.reward_normalizer_update_rollout` (the same as
``reward_normalizer_update`` step by step, to rounding, in a parallel prefix scan; the rewards do
not influence the actions, so nothing in the rollout depends on them); GAE and the value targets
use the normalized rewards, the reported returns the raw ones.

Rollback (``cfg.rollback``, :mod:`jaxstab.training.rollback`): the parameters produced by
update ``k`` are judged after they collected rollout ``k + 1``, with update ``k``'s total loss,
its KL (``metrics["kl_last_epoch"]``: PPO's own k3 estimate of KL(rollout policy || current)
over the last epoch's minibatch steps, i.e. every sample once at the parameters of the update's
last pass; no extra forward pass) and the *mean raw reward per step* of the new rollout (always
defined, unlike a per-episode return when no episode ended in the rollout). The last update has
no next rollout: :func:`make_runner`'s ``finalize`` judges it with the triggers that need none
(non-finite, KL, loss spike) and reverts it on a trigger (its metrics row then shows
``rollback``). On an
enabled trigger (``cfg.rollback_triggers``: non-finite, KL > ``rollback_kl``, reward drop by
default; loss spike opt-in, see :class:`PPOConfig`) the last good
``(params, opt_state)`` is restored and update ``k + 1`` is skipped (its rollout came from the
rejected parameters); the next rollout is collected with the restored parameters and updated
from normally (the restored parameters are not judged a second time). Everything is
``jnp.where`` on the carried state, so it works per seed under ``vmap``.
"""

from __future__ import annotations

import math
from typing import Any, Callable, NamedTuple

import jax
import jax.numpy as jnp
import numpy as np

from jaxstab.agents.common import tree_select
from jaxstab.agents.ppo.networks import (
    PolicyOutput,
    distribution,
    env_action,
    sample_with_noise,
    sampling_noise,
    value_from_head,
)
from jaxstab.agents.ppo.ppo import (
    Batch,
    Demos,
    PPOConfig,
    PPOHParams,
    PPOState,
    _as_f32,
    make_ppo,
    networks_from_config,
)
from jaxstab.training import envstep as ES
from jaxstab.training.loop import Runner, scan_chunks


class Transition(NamedTuple):
    """One vmapped environment step; leaves ``[num_envs, ...]`` (``[T, num_envs, ...]`` stacked).

    Attributes:
      obs: observation the action was taken in. action: raw (stored) action. logp: its
      log-probability. value_out: critic output (``None`` per step: filled in for the whole
      rollout after it, in one batched critic call). reward: raw reward. train_reward: reward used
      for learning (normalized; ``None`` without reward normalization, when it is ``reward``).
      terminated, truncated: bool flags. final_obs: true next observation (before auto-reset).
      loc, log_std: policy parameters (``None`` unless the exact KL needs them).
    """

    obs: jax.Array
    action: jax.Array
    logp: jax.Array
    value_out: jax.Array
    reward: jax.Array
    train_reward: jax.Array
    terminated: jax.Array
    truncated: jax.Array
    final_obs: jax.Array
    loc: jax.Array
    log_std: jax.Array


class _RollbackCarry(NamedTuple):
    """Rollback state plus the diagnostics of the last update, judged after its rollout."""

    rb: Any
    pending_loss: jax.Array
    pending_kl: jax.Array
    pending: jax.Array  # 0-d bool: an applied update awaits judgement
    hparams: Any  # RollbackHParams of the latest chunk (finalize judges the last update)


class RunnerState(NamedTuple):
    """Carry of the training scan.

    Attributes:
      ppo: :class:`PPOState`.
      env_state: batched gymnax state (``num_envs``).
      obs: ``[num_envs, obs_dim]`` float32 current observations.
      ep_return: ``[num_envs]`` float32 running raw episode returns.
      ep_length: ``[num_envs]`` int32 running episode lengths.
      reward_norm: reward-normalizer state (``()`` when off).
      rollback: rollback state (``()`` when off).
      key: PRNG key.
    """

    ppo: PPOState
    env_state: Any
    obs: jax.Array
    ep_return: jax.Array
    ep_length: jax.Array
    reward_norm: Any
    rollback: Any
    key: jax.Array


def gae(
    rewards: jax.Array,
    values: jax.Array,
    next_values: jax.Array,
    terminated: jax.Array,
    truncated: jax.Array,
    gamma: jax.Array | float,
    gae_lambda: jax.Array | float,
) -> tuple[jax.Array, jax.Array]:
    """Generalized advantage estimation with terminated/truncated handled separately.

    ``delta_t = r_t + gamma (1 - term_t) V'_t - V_t``;
    ``A_t = delta_t + gamma lambda (1 - (term_t | trunc_t)) A_{t+1}``; ``A_T = 0``.

    Args:
      rewards: ``[T, ...]`` float.
      values: ``[T, ...]`` float, ``V(s_t)``.
      next_values: ``[T, ...]`` float, ``V(s'_t)`` of the true next observation (before reset).
      terminated, truncated: ``[T, ...]`` bool.
      gamma, gae_lambda: scalars (traced allowed).

    Returns:
      ``(advantages [T, ...], returns [T, ...])`` with ``returns = advantages + values``.

    Raises:
      ValueError: if the shapes differ.

    Reference: Schulman et al. 2016 (GAE); Pardo et al. 2018 (time limits in RL).

    Example:
      >>> adv, ret = gae(jnp.ones((3, 1)), jnp.zeros((3, 1)), jnp.zeros((3, 1)),
      ...                jnp.zeros((3, 1), bool), jnp.zeros((3, 1), bool), 0.9, 1.0)
    """
    arrays = (rewards, values, next_values, terminated, truncated)
    if len({jnp.shape(x) for x in arrays}) != 1:
        raise ValueError("rewards, values, next_values, terminated, truncated must share a "
                         f"shape, got {[jnp.shape(x) for x in arrays]}")
    dtype = values.dtype
    g = jnp.asarray(gamma, dtype)
    lam = jnp.asarray(gae_lambda, dtype)
    not_term = 1.0 - terminated.astype(dtype)
    not_done = 1.0 - jnp.logical_or(terminated, truncated).astype(dtype)
    deltas = rewards.astype(dtype) + g * not_term * next_values - values

    # A_t = delta_t + c_t A_{t+1} (c_t = gamma lambda not_done_t) is a composition of affine
    # maps x -> d + c x, which is associative: a parallel (log-depth) scan instead of T
    # sequential steps (on CPU each sequential step costs a few kernel launches).
    coef = g * lam * not_done

    def compose(later, earlier):
        c_l, d_l = later
        c_e, d_e = earlier
        return c_e * c_l, d_e + c_e * d_l

    _, adv = jax.lax.associative_scan(compose, (coef, deltas), reverse=True)
    return adv, adv + values


def _env_dims(cfg: PPOConfig, env: Any, env_params: Any):
    obs_space = env.observation_space(env_params)
    obs_dim = int(np.prod(obs_space.shape))
    act_space = env.action_space(env_params)
    if cfg.policy_kind == "discrete":
        if not hasattr(act_space, "n"):
            raise ValueError("policy_kind='discrete' needs a discrete action space")
        return obs_dim, int(act_space.n), None, None
    if not hasattr(act_space, "low"):
        raise ValueError(f"policy_kind={cfg.policy_kind!r} needs a Box action space")
    shape = tuple(act_space.shape)
    action_dim = int(np.prod(shape)) if shape else 1
    low = jnp.broadcast_to(jnp.asarray(act_space.low, jnp.float32), (action_dim,))
    high = jnp.broadcast_to(jnp.asarray(act_space.high, jnp.float32), (action_dim,))
    return obs_dim, action_dim, low, high


def default_updates_per_chunk(num_updates: int) -> int:
    """Updates per chunk for :func:`make_runner`: a divisor of ``num_updates`` giving 10-50
    chunks (the count closest to 20 among those); if no divisor does, the one whose chunk count
    is nearest to that range in log scale (a prime ``num_updates`` gives chunks of 1 update).

    Args:
      num_updates: Python int >= 1.

    Returns:
      A divisor of ``num_updates``.
    """
    n = int(num_updates)
    if n < 1:
        raise ValueError(f"num_updates must be >= 1, got {num_updates!r}")
    divisors = [d for d in range(1, n + 1) if n % d == 0]

    def cost(d):
        chunks = n // d
        if 10 <= chunks <= 50:
            return (0.0, abs(math.log(chunks / 20.0)))
        edge = 10 if chunks < 10 else 50
        return (abs(math.log(chunks / edge)), 0.0)

    return min(divisors, key=cost)


def make_runner(
    cfg: PPOConfig,
    env: Any,
    env_params: Any,
    *,
    demos: Demos | None = None,
    updates_per_chunk: int | None = None,
) -> Runner:
    """PPO training cut into chunks of ``updates_per_chunk`` updates (:mod:`jaxstab.training.loop`).

    ``init(key, hparams) -> RunnerState``; ``run_chunk(state, hparams, chunk_index) ->
    (state, metrics)`` runs ``updates_per_chunk`` iterations (rollout, GAE, PPO update) in a
    ``lax.scan`` (metrics leaves ``[updates_per_chunk]``); ``finalize(state, stacked)`` reshapes
    the stacked metrics ``[num_chunks, updates_per_chunk]`` to ``[num_updates]`` and returns
    ``(state, metrics)``, exactly :func:`make_train`'s result. ``chunk_index`` is not used (every
    update's position comes from ``state.ppo.update_step``).

    Args:
      cfg, env, env_params, demos: as :func:`make_train`.
      updates_per_chunk: PPO updates per chunk; must divide ``cfg.num_updates``. Default
        :func:`default_updates_per_chunk` (10-50 chunks).

    Returns:
      :class:`jaxstab.training.loop.Runner` with ``num_chunks = num_updates // updates_per_chunk``.

    Raises:
      ValueError: if ``updates_per_chunk`` is not a positive divisor of ``cfg.num_updates``, or
        the action space does not match ``cfg.policy_kind``.

    Example:
      >>> runner = make_runner(PPOConfig(total_timesteps=100_000), env, env_params)
      >>> carry, out = loop.run(runner, jax.random.split(jax.random.key(0), 2),
      ...                       loop.broadcast_hparams(ppo_hparams(), 2))
    """
    num_updates = cfg.num_updates
    if updates_per_chunk is None:
        upc = default_updates_per_chunk(num_updates)
    else:
        if isinstance(updates_per_chunk, bool) or not isinstance(updates_per_chunk, int) \
                or updates_per_chunk < 1:
            raise ValueError(
                f"updates_per_chunk must be a positive int, got {updates_per_chunk!r}")
        if num_updates % updates_per_chunk:
            raise ValueError(
                f"updates_per_chunk={updates_per_chunk} does not divide cfg.num_updates="
                f"{num_updates} (total_timesteps // (num_envs * num_steps))")
        upc = updates_per_chunk
    num_chunks = num_updates // upc

    obs_dim, action_dim, low, high = _env_dims(cfg, env, env_params)
    nets = networks_from_config(cfg, obs_dim, action_dim)
    ppo = make_ppo(cfg, nets, demos)
    kind = cfg.policy_kind
    n_env = cfg.num_envs

    if cfg.reward_norm:
        from jaxstab import normalization as RN
    if cfg.rollback:
        from jaxstab.training import rollback as RB

        trig = cfg.rollback_triggers
        rb_cfg = RB.RollbackConfig(window=cfg.rollback_window, keep_best=False,
                                   check_nonfinite="nonfinite" in trig, check_kl="kl" in trig,
                                   check_loss_spike="loss_spike" in trig,
                                   check_reward_drop="reward_drop" in trig)

    def _rollback_hparams(hp: PPOHParams):
        return RB.RollbackHParams(hp.rollback_kl, hp.rollback_loss_factor,
                                  hp.rollback_reward_factor,
                                  jnp.asarray(cfg.rollback_min_history, jnp.int32))

    # auto-resets of a whole rollout drawn before it where possible (env.step's results)
    stepper = ES.rollout_stepper(env, env_params, cfg.num_steps, n_env)

    def flat_obs(o):
        return jnp.reshape(o, (o.shape[0], obs_dim)).astype(jnp.float32)

    def _judge(ppo_state, rb_state: _RollbackCarry, *, reward, hparams):
        """Judge the parameters of the pending update (if any) and revert them on a trigger.

        Nothing is judged before the first update or right after a rollback (``pending`` is
        False then: the restored parameters were already accepted once). ``reward=None`` (the
        last update, which has no next rollout) disables the reward-drop trigger.

        Returns:
          ``(ppo_state, rollback_state, rolled_back, triggers)`` with ``triggers`` the
          per-trigger verdicts (``trigger_*``, False when nothing was judged).
        """
        (good_params, good_opt), new_rb, rbm = RB.rollback_update(
            rb_state.rb, (ppo_state.params, ppo_state.opt_state), loss=rb_state.pending_loss,
            kl=rb_state.pending_kl, reward=reward, hparams=hparams, cfg=rb_cfg)
        judged = rb_state.pending
        rolled = judged & rbm["rollback"]
        ppo_state = ppo_state._replace(
            params=tree_select(rolled, good_params, ppo_state.params),
            opt_state=tree_select(rolled, good_opt, ppo_state.opt_state))
        triggers = {k: judged & rbm[k] for k in RB.METRIC_KEYS if k.startswith("trigger_")}
        return ppo_state, tree_select(judged, new_rb, rb_state.rb), rolled, triggers

    def init(key: jax.Array, hparams: PPOHParams) -> RunnerState:
        _as_f32(hparams)  # type check only
        k_init, k_reset, k_run = jax.random.split(key, 3)
        ppo_state = ppo.init(k_init)
        obs, env_state = jax.vmap(env.reset, in_axes=(0, None))(
            jax.random.split(k_reset, n_env), env_params)
        rn_state = RN.reward_normalizer_init(n_env) if cfg.reward_norm else ()
        rb_state = _RollbackCarry(
            RB.rollback_init((ppo_state.params, ppo_state.opt_state), rb_cfg),
            jnp.zeros((), jnp.float32), jnp.zeros((), jnp.float32),
            jnp.zeros((), bool), _rollback_hparams(_as_f32(hparams))) if cfg.rollback else ()
        return RunnerState(ppo_state, env_state, flat_obs(obs),
                           jnp.zeros((n_env,), jnp.float32), jnp.zeros((n_env,), jnp.int32),
                           rn_state, rb_state, k_run)

    def run_chunk(rs: RunnerState, hparams: PPOHParams, chunk_index: jax.Array):
        del chunk_index
        hp = _as_f32(hparams)

        def env_step(carry, xs):
            rs, stats = carry
            env_keys, noise, resets = xs
            # the actor alone: the critic's values are computed for the whole rollout at once
            # after it (nothing in the rollout depends on them)
            pout = nets.apply_policy(rs.ppo.params, rs.obs)
            action = sample_with_noise(kind, pout, noise)
            logp = distribution(kind, pout).log_prob(action)
            a_env = env_action(kind, action, low, high)
            nobs, env_state, reward, term, trunc, info = stepper.step(
                env_keys, rs.env_state, a_env, resets)
            reward = reward.astype(jnp.float32)
            term = term.astype(bool)
            trunc = trunc.astype(bool)
            done = term | trunc
            final_obs = flat_obs(info["final_observation"]) if "final_observation" in info \
                else flat_obs(nobs)
            ep_ret = rs.ep_return + reward
            ep_len = rs.ep_length + 1
            done_f = done.astype(jnp.float32)
            stats = {"ret_sum": stats["ret_sum"] + jnp.sum(ep_ret * done_f),
                     "len_sum": stats["len_sum"] + jnp.sum(ep_len.astype(jnp.float32) * done_f),
                     "count": stats["count"] + jnp.sum(done_f)}
            # fields nothing reads are not stored (None): the behaviour policy's parameters only
            # serve the exact KL; the normalized reward is filled in after the rollout
            keep_pout = cfg.kl_estimator == "exact"
            tr = Transition(rs.obs, action, logp, None, reward, None, term, trunc, final_obs,
                            pout.loc if keep_pout else None, pout.log_std if keep_pout else None)
            rs = rs._replace(env_state=env_state, obs=flat_obs(nobs),
                             ep_return=jnp.where(done, 0.0, ep_ret),
                             ep_length=jnp.where(done, 0, ep_len))
            return (rs, stats), tr

        def update_step(rs: RunnerState, _):
            k_roll, k_upd, k_next = jax.random.split(rs.key, 3)
            zero = jnp.zeros((), jnp.float32)
            stats0 = {"ret_sum": zero, "len_sum": zero, "count": zero}
            # all of the rollout's randomness in two calls (not 2-3 per step)
            k_env, k_act = jax.random.split(k_roll)
            env_keys = jax.random.split(k_env, (cfg.num_steps, n_env))
            noise = sampling_noise(kind, k_act, (cfg.num_steps, n_env), nets.action_dim)
            env_keys, resets = stepper.prepare(env_keys)
            (rs, stats), traj = jax.lax.scan(env_step, (rs, stats0), (env_keys, noise, resets))
            # traj leaves: [T, N, ...]
            if cfg.reward_norm:
                # the normalizer's T sequential steps in one parallel prefix scan (same
                # mathematics as reward_normalizer_update step by step, to rounding)
                norm_reward, rn_state = RN.reward_normalizer_update_rollout(
                    rs.reward_norm, traj.reward, traj.terminated | traj.truncated,
                    gamma=hp.gamma, clip=hp.reward_clip)
                traj = traj._replace(train_reward=norm_reward)
                rs = rs._replace(reward_norm=rn_state)
            # V(s_t) and V(s'_t) of every step in one batched critic call, with the parameters
            # that collected the rollout (before any rollback judgement below)
            vouts = nets.apply_value(rs.ppo.params,
                                     jnp.concatenate([traj.obs, traj.final_obs], axis=0))
            traj = traj._replace(value_out=vouts[:cfg.num_steps])
            values = value_from_head(cfg.value_kind, traj.value_out)
            next_values = value_from_head(cfg.value_kind, vouts[cfg.num_steps:])
            train_reward = traj.train_reward if cfg.reward_norm else traj.reward
            adv, ret = gae(train_reward, values, next_values, traj.terminated,
                           traj.truncated, hp.gamma, hp.gae_lambda)
            b = cfg.batch_size

            def flat(x):
                return jnp.reshape(x, (b,) + x.shape[2:])

            group = jnp.broadcast_to(jnp.arange(n_env, dtype=jnp.int32)[None, :],
                                     (cfg.num_steps, n_env))
            batch = Batch(obs=flat(traj.obs), action=flat(traj.action), logp=flat(traj.logp),
                          value_old=flat(traj.value_out), advantages=flat(adv),
                          returns=flat(ret),
                          pout_old=(PolicyOutput(flat(traj.loc), flat(traj.log_std))
                                    if traj.loc is not None else PolicyOutput(
                                        jnp.zeros((b, nets.action_dim), jnp.float32),
                                        jnp.zeros((b, nets.action_dim), jnp.float32))),
                          group=flat(group))
            count = stats["count"]
            episode_return = stats["ret_sum"] / jnp.maximum(count, 1.0)
            ppo_state = rs.ppo
            rb_state = rs.rollback
            rb_metrics = {}
            if cfg.rollback:
                # Judge the parameters that collected this rollout (the previous update's
                # result) with that update's loss and KL and this rollout's mean reward; on a
                # trigger, revert to the last good (params, opt_state) and skip this update.
                rb_hp = _rollback_hparams(hp)
                ppo_state, new_rb, rolled_back, triggers = _judge(
                    ppo_state, rb_state, reward=jnp.mean(traj.reward), hparams=rb_hp)
                rb_metrics = {"rollback": rolled_back,
                              "rollback_count": new_rb.rollback_count, **triggers}
            if cfg.lr_schedule == "plateau":
                # monitored value: this rollout's mean episode return (skipped without episodes)
                new_ppo, metrics = ppo.update(ppo_state, batch, hp, k_upd,
                                              monitor=episode_return, monitor_valid=count > 0)
            else:
                new_ppo, metrics = ppo.update(ppo_state, batch, hp, k_upd)
            if cfg.rollback:
                new_ppo = new_ppo._replace(
                    params=tree_select(rolled_back, ppo_state.params, new_ppo.params),
                    opt_state=tree_select(rolled_back, ppo_state.opt_state, new_ppo.opt_state),
                    bc_scale=jnp.where(rolled_back, ppo_state.bc_scale, new_ppo.bc_scale),
                    vs_state=tree_select(rolled_back, ppo_state.vs_state, new_ppo.vs_state))
                # the update's KL: PPO's own k3 estimate over its last epoch (no extra pass)
                kl_upd = metrics["kl_last_epoch"]
                rb_state = _RollbackCarry(new_rb, jnp.asarray(metrics["total_loss"], jnp.float32),
                                          jnp.asarray(kl_upd, jnp.float32), ~rolled_back, rb_hp)
                metrics["update_kl"] = kl_upd
            metrics = dict(metrics)
            metrics.update(rb_metrics)
            metrics["episode_return"] = episode_return
            metrics["episode_length"] = stats["len_sum"] / jnp.maximum(count, 1.0)
            metrics["episodes"] = count
            metrics["reward_mean"] = jnp.mean(traj.reward)
            metrics["train_reward_mean"] = jnp.mean(train_reward)
            metrics = {k: jnp.asarray(v, jnp.float32) for k, v in metrics.items()}
            rs = rs._replace(ppo=new_ppo, rollback=rb_state, key=k_next)
            return rs, metrics

        return jax.lax.scan(update_step, rs, None, length=upc)

    def finalize(rs: RunnerState, stacked: dict[str, jax.Array]):
        metrics = {k: jnp.reshape(v, (num_updates,) + v.shape[2:]) for k, v in stacked.items()}
        if cfg.rollback:
            # Judge the last update now (it has no next rollout, so no reward-drop verdict).
            rb_state = rs.rollback
            ppo_state, new_rb, rolled, triggers = _judge(rs.ppo, rb_state, reward=None,
                                                         hparams=rb_state.hparams)
            rs = rs._replace(ppo=ppo_state, rollback=rb_state._replace(
                rb=new_rb, pending=jnp.zeros((), bool)))
            last = num_updates - 1
            metrics["rollback"] = metrics["rollback"].at[last].set(
                jnp.maximum(metrics["rollback"][last], rolled.astype(jnp.float32)))
            metrics["rollback_count"] = metrics["rollback_count"].at[last].set(
                new_rb.rollback_count.astype(jnp.float32))
            for k in ("trigger_nonfinite", "trigger_kl", "trigger_loss_spike"):
                metrics[k] = metrics[k].at[last].set(jnp.maximum(
                    metrics[k][last], triggers[k].astype(jnp.float32)))
        return rs, metrics

    return Runner(init, run_chunk, num_chunks, finalize)


def make_train(
    cfg: PPOConfig,
    env: Any,
    env_params: Any,
    *,
    demos: Demos | None = None,
    updates_per_chunk: int | None = None,
) -> Callable[[jax.Array, PPOHParams], tuple[RunnerState, dict[str, jax.Array]]]:
    """Build ``train(key, hparams) -> (RunnerState, metrics)`` as one compiled program.

    ``train`` is :func:`jaxstab.training.loop.scan_chunks` of :func:`make_runner`: ``init``, a
    ``lax.scan`` over the chunks (each a ``lax.scan`` over its updates) and ``finalize``; the
    chunking does not change the computation (``tests/training/test_ppo_train.py`` checks the
    results against other chunk sizes and the chunk-by-chunk driver).

    Args:
      cfg: :class:`PPOConfig` (``num_updates = total_timesteps // (num_envs * num_steps)``).
      env: a gymnax environment (``reset(key, params)``, ``step(key, state, action, params)``
        returning the gymnax >= 1.0 6-tuple, ``observation_space``, ``action_space``).
      env_params: its parameters.
      demos: optional BC demonstrations (see :func:`jaxstab.agents.ppo.make_ppo`).
      updates_per_chunk: inner scan length (see :func:`make_runner`); default one chunk.

    Returns:
      ``train(key, hparams)``; ``metrics`` is a dict of ``[num_updates]`` float32 arrays
      (update metrics of :func:`make_ppo` plus ``episode_return``, ``episodes``,
      ``episode_length``, ``reward_mean``, and reward-normalization / rollback statistics when
      enabled).

    Raises:
      ValueError: if the action space does not match ``cfg.policy_kind``.

    Example:
      >>> env, env_params = gymnax.make("CartPole-v1")
      >>> train = make_train(PPOConfig(total_timesteps=100_000), env, env_params)
      >>> state, metrics = jax.jit(jax.vmap(train, in_axes=(0, None)))(
      ...     jax.random.split(jax.random.key(0), 4), ppo_hparams())
    """
    runner = make_runner(cfg, env, env_params, demos=demos,
                         updates_per_chunk=cfg.num_updates if updates_per_chunk is None
                         else updates_per_chunk)

    def train(key: jax.Array, hparams: PPOHParams):
        return scan_chunks(runner, key, hparams)

    return train


def make_evaluate(
    cfg: PPOConfig,
    env: Any,
    env_params: Any,
    *,
    num_envs: int = 8,
    max_steps: int | None = None,
) -> Callable[[Any, jax.Array], jax.Array]:
    """Deterministic evaluation: ``evaluate(params, key) -> returns [num_envs]``.

    Runs one episode per environment with the policy's mode (argmax of the logits; the Gaussian
    mean, clipped or tanh-squashed to the action bounds) and returns the undiscounted sum of
    rewards up to the first ``terminated | truncated``. Pure; ``vmap`` it over seeds' params.

    Args:
      cfg: the :class:`PPOConfig` the parameters were trained with.
      env, env_params: gymnax environment and parameters.
      num_envs: episodes evaluated in parallel.
      max_steps: scan length; default ``env_params.max_steps_in_episode`` (episodes still
        running at the end are cut there).

    Returns:
      ``evaluate(params, key) -> [num_envs] float32`` episode returns.

    Raises:
      ValueError: if ``max_steps`` is not given and ``env_params`` has no
        ``max_steps_in_episode``.
    """
    obs_dim, action_dim, low, high = _env_dims(cfg, env, env_params)
    nets = networks_from_config(cfg, obs_dim, action_dim)
    if max_steps is None:
        if not hasattr(env_params, "max_steps_in_episode"):
            raise ValueError("max_steps must be given for an env without max_steps_in_episode")
        max_steps = int(env_params.max_steps_in_episode)
    kind = cfg.policy_kind

    def evaluate(params: Any, key: jax.Array) -> jax.Array:
        k_reset, k_run = jax.random.split(key)
        obs, state = jax.vmap(env.reset, in_axes=(0, None))(
            jax.random.split(k_reset, num_envs), env_params)

        def step(carry, k):
            obs, state, ret, alive = carry
            pout = nets.apply_policy(params,
                                     jnp.reshape(obs, (num_envs, obs_dim)).astype(jnp.float32))
            raw = jnp.argmax(pout.loc, axis=-1) if kind == "discrete" else pout.loc
            a = env_action(kind, raw, low, high)
            obs, state, r, term, trunc, _ = jax.vmap(env.step, in_axes=(0, 0, 0, None))(
                jax.random.split(k, num_envs), state, a, env_params)
            ret = ret + jnp.where(alive, r.astype(jnp.float32), 0.0)
            alive = alive & ~(term.astype(bool) | trunc.astype(bool))
            return (obs, state, ret, alive), None

        init = (obs, state, jnp.zeros((num_envs,), jnp.float32), jnp.ones((num_envs,), bool))
        (_, _, ret, _), _ = jax.lax.scan(step, init, jax.random.split(k_run, max_steps))
        return ret

    return evaluate
