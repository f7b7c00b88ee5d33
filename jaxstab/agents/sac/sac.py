"""Stabilized Soft Actor-Critic as a pure ``(init, update)`` pair.

``update(state, batch, hparams, key) -> (state, metrics)`` performs one gradient step on the
critics, the actor and the temperature. All three gradients are taken at the same (pre-update)
parameters; the critic target uses Polyak-averaged target critics and bootstraps with
``1 - terminated`` only. Each gradient goes through ``optax.chain(clip_by_global_norm(max_norm),
adam(lr))`` with ``max_norm`` and ``lr`` TRACED hyperparameters (so a ``vmap`` over
:class:`SACHParams` sweeps them without recompiling); ``SACConfig.max_grad_norm = None`` removes
the clipping stage (static switch).

Guard: if any loss, the temperature gradient, the new temperature or the global norm of the actor
or critic gradient is non-finite (a NaN/Inf gradient, or one whose squared norm overflows
float32), the whole update is skipped — parameters, optimizer states, target critics and
temperature keep their previous values — and ``state.skipped`` is incremented;
``metrics["skipped"]`` is 1.0 for that step. With finite gradients and finite (validated)
learning rates every Adam step (at most a few times the learning rate per weight), hence every
new parameter and target, is finite unless a learning rate is near the float32 limit (~1e37),
so checking a handful of scalars (the norms are computed for the metrics anyway) replaces one
reduction per parameter leaf (10-15% of the update's time on a 2-core CPU).

Reference: Haarnoja et al., "Soft Actor-Critic Algorithms and Applications", arXiv:1812.05905;
Kuznetsov et al., "Controlling Overestimation Bias with Truncated Mixture of Continuous
Distributional Quantile Critics" (TQC), ICML 2020.
"""

from __future__ import annotations

import dataclasses
from typing import Any, Callable, NamedTuple

import jax
import jax.numpy as jnp
import numpy as np
import optax

from jaxstab._validation import check_range
from jaxstab.agents.common import tree_select
from jaxstab.agents.sac import losses as sac_losses
from jaxstab.agents.sac.irt import IRTConfig
from jaxstab.agents.sac.networks import (
    ACTOR_KINDS,
    SACNetworks,
    make_sac_networks,
    policy_state_dim,
)
from jaxstab.agents.sac.policies import (
    POLICY_KINDS,
    SIMPLEX_POLICY_KINDS,
    Policy,
    default_target_entropy,
    make_policy,
)
from jaxstab.replay import Transition

CRITIC_KINDS = ("mse", "quantile")
VARIANCE_SCALING_MODES = ("none", "seed", "normalize")


@dataclasses.dataclass(frozen=True)
class SACConfig:
    """Static SAC choices (hashable; changing any field recompiles).

    Attributes:
      hidden_sizes: hidden widths of actor and critics.
      num_critics: critic ensemble size K (2 = twin critics).
      batch_size: minibatch size per gradient step.
      buffer_size: replay capacity (transitions).
      policy: ``"tanh_gaussian" | "projected_gaussian" | "logistic_normal"``.
      critic: ``"mse"`` (twin critics, min in target and actor loss) or ``"quantile"``
        (TQC: ``num_quantiles`` atoms per critic, pooled targets with the top
        ``tqc_drop * num_critics`` atoms dropped, actor maximizes the mean of all atoms).
      num_quantiles: atoms per critic for ``critic="quantile"``.
      tqc_drop: atoms dropped per critic from the pooled target (TQC's ``d``).
      variance_scaling: quantile-loss variance scaling ``"none" | "seed" | "normalize"``.
      updates_per_step: gradient steps per vectorized environment step (UTD).
      num_envs: parallel environments.
      warmup_steps: environment transitions collected with random actions before learning
        (must be >= batch_size).
      total_steps: total environment transitions (all envs together).
      eval_interval: environment transitions between deterministic evaluations.
      eval_episodes: episodes per evaluation.
      max_grad_norm: default global-norm clip (the seed's 10.0); ``None`` disables clipping
        (then ``SACHParams.max_grad_norm`` is ignored).
      log_std_min, log_std_max: actor log-std bounds.
      target_relative_scale: relative noise scale defining the simplex policies' default
        target entropy (see :func:`default_target_entropy`).
      skip_nonfinite: skip (and count) an update whose losses or gradient norms are non-finite
        (see the module docstring), leaving parameters, optimizer states and target networks
        unchanged. Turn off only to demonstrate what the guard prevents.
      actor: ``"mlp"`` (stateless Gaussian-latent MLP) or ``"irt"`` (the IRT prototype policy
        of :mod:`jaxstab.agents.sac.irt`; needs a simplex ``policy``; its prototype weights are
        carried as policy state and stored in the replay buffer as augmented observations).
      irt: :class:`IRTConfig` used when ``actor="irt"`` (with ``irt.use_projection=False`` the
        effective policy is ``"softmax_gaussian"``, see :func:`effective_policy`).
    """

    hidden_sizes: tuple[int, ...] = (256, 256)
    num_critics: int = 2
    batch_size: int = 256
    buffer_size: int = 100_000
    policy: str = "tanh_gaussian"
    critic: str = "mse"
    num_quantiles: int = 25
    tqc_drop: int = 2
    variance_scaling: str = "none"
    updates_per_step: int = 1
    num_envs: int = 1
    warmup_steps: int = 1_000
    total_steps: int = 20_000
    eval_interval: int = 2_000
    eval_episodes: int = 5
    max_grad_norm: float | None = 10.0
    log_std_min: float = -5.0
    log_std_max: float = 2.0
    target_relative_scale: float = 0.25
    skip_nonfinite: bool = True
    actor: str = "mlp"
    irt: IRTConfig = IRTConfig()

    def __post_init__(self) -> None:
        object.__setattr__(self, "hidden_sizes", tuple(int(h) for h in self.hidden_sizes))
        if not self.hidden_sizes or min(self.hidden_sizes) < 1:
            raise ValueError(f"hidden_sizes must be a non-empty tuple of positive ints, got "
                             f"{self.hidden_sizes!r}")
        if not (np.isfinite(self.target_relative_scale) and self.target_relative_scale > 0):
            raise ValueError(f"target_relative_scale must be finite and > 0, got "
                             f"{self.target_relative_scale!r}")
        if self.actor not in ACTOR_KINDS:
            raise ValueError(f"actor must be one of {ACTOR_KINDS}, got {self.actor!r}")
        if not isinstance(self.irt, IRTConfig):
            raise TypeError(f"irt must be an IRTConfig, got {type(self.irt).__name__}")
        if self.actor == "irt" and self.policy not in SIMPLEX_POLICY_KINDS:
            raise ValueError(f"actor='irt' needs a simplex policy {SIMPLEX_POLICY_KINDS}, got "
                             f"policy={self.policy!r}")
        if self.policy not in POLICY_KINDS:
            raise ValueError(f"policy must be one of {POLICY_KINDS}, got {self.policy!r}")
        if self.critic not in CRITIC_KINDS:
            raise ValueError(f"critic must be one of {CRITIC_KINDS}, got {self.critic!r}")
        if self.variance_scaling not in VARIANCE_SCALING_MODES:
            raise ValueError(f"variance_scaling must be one of {VARIANCE_SCALING_MODES}, got "
                             f"{self.variance_scaling!r}")
        for name in ("num_critics", "batch_size", "buffer_size", "num_quantiles",
                     "updates_per_step", "num_envs", "total_steps", "eval_interval",
                     "eval_episodes"):
            v = getattr(self, name)
            if not isinstance(v, int) or isinstance(v, bool) or v < 1:
                raise ValueError(f"{name} must be a positive int, got {v!r}")
        if self.critic == "mse" and self.variance_scaling != "none":
            raise ValueError("variance_scaling applies to critic='quantile' only; got "
                             f"variance_scaling={self.variance_scaling!r} with critic='mse'")
        if not isinstance(self.tqc_drop, int) or not 0 <= self.tqc_drop < self.num_quantiles:
            raise ValueError(f"tqc_drop must be an int in [0, num_quantiles), got {self.tqc_drop!r}")
        if not isinstance(self.warmup_steps, int) or self.warmup_steps < self.batch_size:
            raise ValueError(f"warmup_steps must be an int >= batch_size ({self.batch_size}), got "
                             f"{self.warmup_steps!r}")
        if self.max_grad_norm is not None and not self.max_grad_norm > 0:
            raise ValueError(f"max_grad_norm must be > 0 or None, got {self.max_grad_norm!r}")
        if not self.log_std_min < self.log_std_max:
            raise ValueError("log_std_min must be < log_std_max")


class SACHParams(NamedTuple):
    """Traced SAC hyperparameters (0-d float32 arrays; ``vmap`` over them to sweep).

    Attributes:
      actor_lr, critic_lr, alpha_lr: Adam learning rates.
      gamma: discount.
      tau: Polyak coefficient for target critics (``target <- (1-tau) target + tau online``).
      init_log_alpha: initial ``log alpha`` (used by ``init``).
      target_entropy: temperature target ``H*``.
      max_grad_norm: global-norm clip for every network (ignored if ``SACConfig.max_grad_norm``
        is None).
      reward_scale: multiplies rewards in the TD target.
    """

    actor_lr: jax.Array
    critic_lr: jax.Array
    alpha_lr: jax.Array
    gamma: jax.Array
    tau: jax.Array
    init_log_alpha: jax.Array
    target_entropy: jax.Array
    max_grad_norm: jax.Array
    reward_scale: jax.Array


def effective_policy(cfg: SACConfig) -> str:
    """The policy kind SAC actually uses: ``cfg.policy``, or ``"softmax_gaussian"`` for an IRT
    actor with ``cfg.irt.use_projection=False`` (the seed's pre-Tier-1 softmax policy)."""
    if cfg.actor == "irt" and not cfg.irt.use_projection:
        return "softmax_gaussian"
    return cfg.policy


def default_networks(cfg: SACConfig, action_dim: int) -> SACNetworks:
    """The networks :func:`make_sac` builds for ``cfg`` when none are given."""
    policy = make_policy(effective_policy(cfg), action_dim)
    num_atoms = cfg.num_quantiles if cfg.critic == "quantile" else 1
    return make_sac_networks(policy.latent_dim, hidden_sizes=cfg.hidden_sizes,
                             num_critics=cfg.num_critics, num_atoms=num_atoms,
                             log_std_min=cfg.log_std_min, log_std_max=cfg.log_std_max,
                             actor=cfg.actor, irt=cfg.irt)


def make_actor_apply(actor: Any) -> Callable[[Any, jax.Array], tuple[jax.Array, jax.Array,
                                                                     jax.Array]]:
    """``apply(params, obs_aug [..., obs_dim + S]) -> (mean, log_std, new_policy_state [..., S])``
    for a stateless (``S = 0``) or stateful actor; splits the augmented observation."""
    psd = policy_state_dim(actor)

    def apply(params: Any, obs_aug: jax.Array) -> tuple[jax.Array, jax.Array, jax.Array]:
        if psd == 0:
            mean, log_std = actor.apply(params, obs_aug)
            return mean, log_std, obs_aug[..., :0]
        return actor.apply(params, obs_aug[..., :-psd], obs_aug[..., -psd:])

    return apply


def default_hparams(cfg: SACConfig, action_dim: int, **overrides: float) -> SACHParams:
    """Default hyperparameters as 0-d float32 arrays.

    Defaults: ``actor_lr = critic_lr = alpha_lr = 3e-4``, ``gamma = 0.99``, ``tau = 0.005``,
    ``init_log_alpha = 0`` (alpha = 1), ``target_entropy = default_target_entropy(cfg.policy,
    action_dim, cfg.target_relative_scale)``, ``max_grad_norm = cfg.max_grad_norm or 10``,
    ``reward_scale = 1``.

    Args:
      cfg: static config.
      action_dim: action dimension.
      **overrides: any :class:`SACHParams` field.

    Returns:
      :class:`SACHParams`.

    Raises:
      TypeError: on an unknown field name.
      ValueError: a non-finite value, a learning rate < 0, ``max_grad_norm`` <= 0, or ``gamma``
        / ``tau`` outside ``(0, 1]`` (arrays of values for a sweep are checked entry by entry).
    """
    values = dict(
        actor_lr=3e-4, critic_lr=3e-4, alpha_lr=3e-4, gamma=0.99, tau=0.005, init_log_alpha=0.0,
        target_entropy=default_target_entropy(effective_policy(cfg), action_dim,
                                              cfg.target_relative_scale),
        max_grad_norm=cfg.max_grad_norm if cfg.max_grad_norm is not None else 10.0,
        reward_scale=1.0,
    )
    unknown = set(overrides) - set(values)
    if unknown:
        raise TypeError(f"unknown SACHParams fields: {sorted(unknown)}")
    values.update(overrides)
    for name in ("actor_lr", "critic_lr", "alpha_lr"):   # 0 freezes that part
        check_range(name, values[name], 0.0, None, low_inclusive=True)
    check_range("max_grad_norm", values["max_grad_norm"], 0.0, None)
    for name in ("gamma", "tau"):
        check_range(name, values[name], 0.0, 1.0)
    for name in ("init_log_alpha", "target_entropy"):
        check_range(name, values[name])
    check_range("reward_scale", values["reward_scale"])
    return SACHParams(**{k: jnp.asarray(v, jnp.float32) for k, v in values.items()})


class SACState(NamedTuple):
    """Carried SAC state.

    Attributes:
      actor_params, critic_params, target_critic_params: flax parameter pytrees.
      log_alpha: 0-d float32 temperature (log).
      actor_opt_state, critic_opt_state, alpha_opt_state: optax states.
      loss_state: state of a stateful critic loss (variance scaling), ``()`` if none.
      step: 0-d int32 number of update calls (including skipped ones).
      skipped: 0-d int32 number of skipped (non-finite) updates.
    """

    actor_params: Any
    critic_params: Any
    target_critic_params: Any
    log_alpha: jax.Array
    actor_opt_state: Any
    critic_opt_state: Any
    alpha_opt_state: Any
    loss_state: Any
    step: jax.Array
    skipped: jax.Array


def _optimizer(cfg: SACConfig, lr: jax.Array, max_norm: jax.Array) -> optax.GradientTransformation:
    if cfg.max_grad_norm is None:
        return optax.adam(lr)
    return optax.chain(optax.clip_by_global_norm(max_norm), optax.adam(lr))


def make_sac(obs_dim: int, action_dim: int, cfg: SACConfig,
             networks: SACNetworks | None = None
             ) -> tuple[Callable[[jax.Array, SACHParams], SACState],
                        Callable[[SACState, Transition, SACHParams, jax.Array],
                                 tuple[SACState, dict[str, jax.Array]]]]:
    """Build SAC's pure ``init`` and ``update`` functions.

    Stateful actors (``S = policy_state_dim(actor) > 0``, e.g. ``cfg.actor="irt"``): batch
    observations are AUGMENTED, ``batch.obs = [obs, policy_state]`` and ``batch.next_obs =
    [next_obs, next_policy_state]`` of width ``obs_dim + S``; the actor is applied to the split
    parts and the critics to the augmented vector. With ``S = 0`` nothing changes.

    Args:
      obs_dim: (raw) observation dimension (flat observations ``[B, obs_dim]``).
      action_dim: action dimension.
      cfg: :class:`SACConfig`.
      networks: optional custom :class:`SACNetworks` (default: :func:`default_networks`); the
        actor must output ``(mean, log_std)`` of size ``Policy.latent_dim`` (plus the new
        policy state if stateful), the critic ``[K, B, N]``.

    Returns:
      ``init(key, hparams) -> SACState`` and
      ``update(state, batch: Transition, hparams, key) -> (SACState, metrics)``; ``batch``
      leaves are ``[B, ...]``; ``metrics`` is a dict of 0-d float32 arrays: ``critic_loss``,
      ``actor_loss``, ``alpha_loss``, ``alpha``, ``entropy`` (``-mean log pi``), ``q_mean``,
      ``target_q_mean``, ``actor_grad_norm``, ``critic_grad_norm``, ``alpha_grad_norm``
      (pre-clip global norms), ``skipped`` (1.0 if this update was skipped), ``skipped_total``;
      for quantile critics also the variance-scaling statistics (``vs_*``).

    Raises:
      ValueError: on non-positive dims, or a simplex policy with ``action_dim < 2``.

    Example:
      >>> cfg = SACConfig(hidden_sizes=(64, 64))
      >>> init, update = make_sac(obs_dim=3, action_dim=1, cfg=cfg)
      >>> hp = default_hparams(cfg, action_dim=1)
      >>> state = init(jax.random.key(0), hp)
      >>> state, metrics = jax.jit(update)(state, batch, hp, jax.random.key(1))  # batch: Transition
    """
    if not isinstance(obs_dim, int) or obs_dim < 1:
        raise ValueError(f"obs_dim must be a positive int, got {obs_dim!r}")
    policy: Policy = make_policy(effective_policy(cfg), action_dim)
    if networks is None:
        networks = default_networks(cfg, action_dim)
    actor, critic = networks.actor, networks.critic
    psd = policy_state_dim(actor)
    actor_apply = make_actor_apply(actor)
    critic_loss_impl = _make_critic_loss(cfg)

    def init(key: jax.Array, hparams: SACHParams) -> SACState:
        k_actor, k_critic = jax.random.split(key)
        obs = jnp.zeros((1, obs_dim), jnp.float32)
        act = jnp.zeros((1, action_dim), jnp.float32)
        if psd:
            pstate = jnp.full((1, psd), 1.0 / psd, jnp.float32)
            actor_params = actor.init(k_actor, obs, pstate)
            obs = jnp.concatenate([obs, pstate], axis=-1)
        else:
            actor_params = actor.init(k_actor, obs)
        critic_params = critic.init(k_critic, obs, act)
        log_alpha = jnp.asarray(hparams.init_log_alpha, jnp.float32).reshape(())
        tx = _optimizer(cfg, hparams.actor_lr, hparams.max_grad_norm)
        return SACState(
            actor_params=actor_params,
            critic_params=critic_params,
            target_critic_params=jax.tree_util.tree_map(jnp.copy, critic_params),
            log_alpha=log_alpha,
            actor_opt_state=tx.init(actor_params),
            critic_opt_state=tx.init(critic_params),
            alpha_opt_state=tx.init(log_alpha),
            loss_state=critic_loss_impl.init(),
            step=jnp.zeros((), jnp.int32),
            skipped=jnp.zeros((), jnp.int32),
        )

    def update(state: SACState, batch: Transition, hparams: SACHParams, key: jax.Array
               ) -> tuple[SACState, dict[str, jax.Array]]:
        for name, nd in (("obs", 2), ("action", 2), ("reward", 1), ("next_obs", 2),
                         ("terminated", 1)):
            if jnp.ndim(getattr(batch, name)) != nd:
                raise ValueError(f"batch.{name} must have {nd} dims, got shape "
                                 f"{jnp.shape(getattr(batch, name))}")
        k_next, k_pi = jax.random.split(key)
        alpha = jnp.exp(state.log_alpha)

        # Critic target from the target critics and a fresh next action.
        next_mean, next_log_std, _ = actor_apply(state.actor_params, batch.next_obs)
        next_action, next_logp = policy.sample(next_mean, next_log_std, k_next)
        q_next = critic.apply(state.target_critic_params, batch.next_obs, next_action)  # [K,B,N]

        def critic_loss_fn(critic_params):
            q = critic.apply(critic_params, batch.obs, batch.action)
            return critic_loss_impl.loss(q, q_next, batch, next_logp, alpha, hparams,
                                         state.loss_state)

        (c_loss, (c_aux, new_loss_state)), c_grads = jax.value_and_grad(
            critic_loss_fn, has_aux=True)(state.critic_params)

        def actor_loss_fn(actor_params):
            mean, log_std, _ = actor_apply(actor_params, batch.obs)
            action, logp = policy.sample(mean, log_std, k_pi)
            q = critic.apply(state.critic_params, batch.obs, action)
            return sac_losses.actor_loss(logp, critic_loss_impl.actor_value(q), alpha), logp

        (a_loss, logp), a_grads = jax.value_and_grad(actor_loss_fn, has_aux=True)(
            state.actor_params)

        def alpha_loss_fn(log_alpha):
            return sac_losses.temperature_loss(log_alpha, logp, hparams.target_entropy)

        t_loss, t_grad = jax.value_and_grad(alpha_loss_fn)(state.log_alpha)

        actor_tx = _optimizer(cfg, hparams.actor_lr, hparams.max_grad_norm)
        critic_tx = _optimizer(cfg, hparams.critic_lr, hparams.max_grad_norm)
        alpha_tx = _optimizer(cfg, hparams.alpha_lr, hparams.max_grad_norm)
        a_upd, actor_opt = actor_tx.update(a_grads, state.actor_opt_state, state.actor_params)
        c_upd, critic_opt = critic_tx.update(c_grads, state.critic_opt_state, state.critic_params)
        t_upd, alpha_opt = alpha_tx.update(t_grad, state.alpha_opt_state, state.log_alpha)
        actor_params = optax.apply_updates(state.actor_params, a_upd)
        critic_params = optax.apply_updates(state.critic_params, c_upd)
        log_alpha = optax.apply_updates(state.log_alpha, t_upd)
        target = optax.incremental_update(critic_params, state.target_critic_params, hparams.tau)

        proposed = state._replace(
            actor_params=actor_params, critic_params=critic_params, target_critic_params=target,
            log_alpha=log_alpha, actor_opt_state=actor_opt, critic_opt_state=critic_opt,
            alpha_opt_state=alpha_opt, loss_state=new_loss_state)
        # Finite losses and finite global gradient norms (computed anyway for the metrics) make
        # every Adam step, hence every new parameter and target, finite; a norm is non-finite iff
        # a gradient is NaN/Inf or its squared norm overflows float32 (skipped too). Scalar
        # checks instead of one reduction per parameter leaf.
        a_norm, c_norm = optax.tree.norm(a_grads), optax.tree.norm(c_grads)
        ok = jnp.all(jnp.isfinite(jnp.stack([c_loss, a_loss, t_loss, a_norm, c_norm,
                                             jnp.reshape(t_grad, ()),
                                             jnp.reshape(log_alpha, ())])))
        if cfg.skip_nonfinite:
            new_state = tree_select(ok, proposed, state)
        else:
            new_state = proposed
        skipped = state.skipped + jnp.where(ok, 0, 1).astype(jnp.int32)
        new_state = new_state._replace(step=state.step + jnp.ones((), jnp.int32), skipped=skipped)

        metrics = {
            "critic_loss": c_loss,
            "actor_loss": a_loss,
            "alpha_loss": t_loss,
            "alpha": alpha,
            "entropy": -jnp.mean(logp),
            "actor_grad_norm": a_norm,
            "critic_grad_norm": c_norm,
            "alpha_grad_norm": jnp.abs(t_grad),
            "skipped": jnp.where(ok, 0.0, 1.0).astype(jnp.float32),
            "skipped_total": skipped.astype(jnp.float32),
            **c_aux,
        }
        metrics = {k: jnp.asarray(v, jnp.float32).reshape(()) for k, v in metrics.items()}
        return new_state, metrics

    return init, update


class _CriticLoss(NamedTuple):
    init: Callable[[], Any]
    loss: Callable[..., tuple[jax.Array, tuple[dict[str, jax.Array], Any]]]
    actor_value: Callable[[jax.Array], jax.Array]


def _make_critic_loss(cfg: SACConfig) -> _CriticLoss:
    if cfg.critic == "mse":
        def loss(q, q_next, batch, next_logp, alpha, hparams, loss_state):
            next_v = jnp.min(q_next[..., 0], axis=0)
            target = sac_losses.soft_td_target(batch.reward, batch.terminated, next_v, next_logp,
                                               alpha, hparams.gamma, hparams.reward_scale)
            q0 = q[..., 0]
            aux = {"q_mean": jnp.mean(q0), "target_q_mean": jnp.mean(target)}
            return sac_losses.mse_critic_loss(q0, target), (aux, loss_state)

        return _CriticLoss(lambda: (), loss, lambda q: jnp.min(q[..., 0], axis=0))
    return _CriticLoss(*sac_losses.make_quantile_critic_loss(
        num_critics=cfg.num_critics, num_quantiles=cfg.num_quantiles, tqc_drop=cfg.tqc_drop,
        variance_scaling=cfg.variance_scaling))


__all__ = ["CRITIC_KINDS", "SACConfig", "SACHParams", "SACState", "default_hparams",
           "default_networks", "effective_policy", "make_actor_apply", "make_sac"]


def make_sac_actor(action_dim: int, cfg: SACConfig, networks: SACNetworks | None = None
                   ) -> tuple[Callable[[Any, jax.Array, jax.Array], jax.Array],
                              Callable[[Any, jax.Array], jax.Array],
                              Callable[[jax.Array, tuple[int, ...]], jax.Array]]:
    """Acting functions matching :func:`make_sac` (same default networks for the same ``cfg``).

    For a stateful actor ``obs`` is the augmented observation ``[obs, policy_state]`` and the new
    policy state is dropped; use :func:`make_sac_acting` to carry it.

    Args:
      action_dim: action dimension.
      cfg: :class:`SACConfig`.
      networks: the custom networks given to :func:`make_sac`, if any.

    Returns:
      ``sample_action(actor_params, obs [B, obs_dim], key) -> action [B, action_dim]`` (stochastic),
      ``deterministic_action(actor_params, obs) -> action`` (squashed latent mean), and
      ``random_action(key, batch_shape) -> action`` (warm-up exploration).
    """
    acting = make_sac_acting(action_dim, cfg, networks)
    actor_apply = make_actor_apply(acting.actor)

    def sample_action(actor_params: Any, obs: jax.Array, key: jax.Array) -> jax.Array:
        mean, log_std, _ = actor_apply(actor_params, obs)
        return acting.policy.sample(mean, log_std, key)[0]

    def deterministic_action(actor_params: Any, obs: jax.Array) -> jax.Array:
        mean, _, _ = actor_apply(actor_params, obs)
        return acting.policy.mode(mean)

    return sample_action, deterministic_action, acting.random_action


class SACActing(NamedTuple):
    """Acting functions that carry the policy state (see :func:`make_sac_acting`).

    Attributes:
      actor: the actor module.
      policy: the :class:`Policy` family.
      policy_state_dim: ``S`` (0 for a stateless actor).
      initial_policy_state: ``batch_size -> [batch_size, S]`` float32 (uniform ``1/S`` for IRT).
      sample: ``(actor_params, obs [B, obs_dim], policy_state [B, S], key) ->
        (action [B, n], new_policy_state [B, S])``.
      mode: ``(actor_params, obs, policy_state) -> (action, new_policy_state)``.
      random_action: ``(key, batch_shape) -> action``.
    """

    actor: Any
    policy: Policy
    policy_state_dim: int
    initial_policy_state: Callable[[int], jax.Array]
    sample: Callable[[Any, jax.Array, jax.Array, jax.Array], tuple[jax.Array, jax.Array]]
    mode: Callable[[Any, jax.Array, jax.Array], tuple[jax.Array, jax.Array]]
    random_action: Callable[[jax.Array, tuple[int, ...]], jax.Array]


def make_sac_acting(action_dim: int, cfg: SACConfig, networks: SACNetworks | None = None
                    ) -> SACActing:
    """Acting functions with an explicit policy state, for stateless and stateful actors alike.

    Args:
      action_dim: action dimension.
      cfg: :class:`SACConfig`.
      networks: the custom networks given to :func:`make_sac`, if any.

    Returns:
      :class:`SACActing`. The training loop stores ``[obs, policy_state]`` and
      ``[next_obs, new_policy_state]`` in the replay buffer and resets the policy state with
      ``initial_policy_state`` when an episode ends.

    Example:
      >>> acting = make_sac_acting(4, SACConfig(policy="projected_gaussian", actor="irt"))
      >>> ps = acting.initial_policy_state(2)          # [2, 8], all 1/8
      >>> a, ps = acting.sample(params, obs, ps, key)  # params from make_sac's init
    """
    policy = make_policy(effective_policy(cfg), action_dim)
    if networks is None:
        networks = default_networks(cfg, action_dim)
    actor = networks.actor
    psd = policy_state_dim(actor)
    actor_apply = make_actor_apply(actor)

    def initial_policy_state(batch_size: int) -> jax.Array:
        if psd == 0:
            return jnp.zeros((batch_size, 0), jnp.float32)
        return jnp.full((batch_size, psd), 1.0 / psd, jnp.float32)

    def _aug(obs: jax.Array, pstate: jax.Array) -> jax.Array:
        return jnp.concatenate([obs, pstate.astype(obs.dtype)], axis=-1) if psd else obs

    def sample(actor_params: Any, obs: jax.Array, pstate: jax.Array, key: jax.Array
               ) -> tuple[jax.Array, jax.Array]:
        mean, log_std, new = actor_apply(actor_params, _aug(obs, pstate))
        return policy.sample(mean, log_std, key)[0], (new if psd else pstate)

    def mode(actor_params: Any, obs: jax.Array, pstate: jax.Array
             ) -> tuple[jax.Array, jax.Array]:
        mean, _, new = actor_apply(actor_params, _aug(obs, pstate))
        return policy.mode(mean), (new if psd else pstate)

    return SACActing(actor, policy, psd, initial_policy_state, sample, mode,
                     policy.random_action)


__all__ += ["SACActing", "make_sac_acting", "make_sac_actor"]
