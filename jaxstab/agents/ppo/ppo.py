"""Stabilized PPO update: ``make_ppo(cfg, networks) -> (init, update)``.

One call of ``update(state, batch, hparams, key)`` is one PPO update: ``num_epochs`` passes of
``num_minibatches`` shuffled minibatches over a rollout batch, all inside ``lax.scan``.

Stabilizers (seed 004, DESIGN.md "PPO"):

- log-ratio clamp before ``exp`` (``+-hparams.logratio_clip``, default 10; ``cfg.clamp_log_ratio``);
- non-finite ratio guard (neutral ratio 1.0, counted) and extreme-ratio statistics;
- KL estimators ``k1``, ``k3`` and the exact KL (distrax) between the rollout policy and the
  current one;
- SB3 early stopping (``cfg.early_stopping``): before each minibatch step the KL estimate of that
  minibatch under the current parameters is compared with ``1.5 * target_kl``; if it exceeds it
  (or is not finite), that step and every remaining step of every remaining epoch are skipped.
  Inside ``lax.scan`` this is a carried ``stopped`` flag that masks the parameter update;
- advantage normalization through :func:`jaxstab.ops.advantages.normalize_advantages`
  (per minibatch by default);
- global gradient-norm clipping (traced ``max_grad_norm``, default 0.5) and Adam with eps 1e-5;
- a skipped step when the loss or a gradient is non-finite (``cfg.skip_nonfinite``), counted;
- optional value clipping (off by default), a quantile value head with quantile-Huber loss;
- optional behaviour cloning from demonstrations with the BC/PPO loss ratio reported and an
  adaptive BC coefficient.

References: Schulman et al. 2017 (PPO); Stable-Baselines3 ``PPO.train`` (early stopping at
``1.5 * target_kl``); Huang et al. 2022, "The 37 implementation details of PPO".
"""

from __future__ import annotations

import dataclasses
from typing import Any, Callable, NamedTuple

import jax
import jax.numpy as jnp
import numpy as np
import optax

from jaxstab._validation import check_range
from jaxstab.agents.common import permutation, tree_select
from jaxstab.agents.ppo import losses as L
from jaxstab.agents.ppo.networks import (
    ACTIVATIONS,
    POLICY_KINDS,
    VALUE_KINDS,
    PolicyOutput,
    PPONetworks,
    distribution,
    make_networks,
)

ADV_NORM_MODES = ("none", "global", "group", "robust")
ADV_NORM_SCOPES = ("minibatch", "batch")
LR_SCHEDULES = ("constant", "linear", "cosine", "exponential", "step", "plateau")
ENT_SCHEDULES = ("constant", "linear", "cosine", "exponential")
VARIANCE_SCALING_MODES = ("none", "seed", "normalize")
ROLLBACK_TRIGGERS = ("nonfinite", "kl", "loss_spike", "reward_drop")


@dataclasses.dataclass(frozen=True)
class PPOConfig:
    """Static PPO configuration (hashable; changing it recompiles).

    Attributes:
      policy_kind: ``"discrete"``, ``"gaussian"``, ``"tanh_gaussian"`` or
        ``"softmax_gaussian"`` (simplex actions: the environment receives the softmax of a
        Gaussian latent over ``action_dim`` logits; see :mod:`jaxstab.agents.ppo.networks`).
      value_kind: ``"scalar"`` or ``"quantile"`` (value = mean of the quantiles).
      num_quantiles: atoms of the quantile head.
      hidden_sizes: actor and critic MLP widths.
      activation: ``"tanh"`` or ``"relu"``.
      init_log_std: initial log std of continuous policies.
      num_envs: parallel environments in a rollout.
      num_steps: steps per environment per rollout.
      num_epochs: passes over the rollout per update.
      num_minibatches: minibatches per epoch (must divide ``num_envs * num_steps``).
      total_timesteps: environment steps of a whole training run (sets ``num_updates``).
      adv_norm: advantage normalization mode: ``"none"``, ``"global"``, ``"group"`` (groups are
        environments) or ``"robust"`` (median / IQR).
      adv_norm_scope: ``"minibatch"`` (default, SB3/PureJaxRL) or ``"batch"`` (once per update).
      kl_estimator: ``"k1"``, ``"k3"`` (default, as SB3) or ``"exact"`` (closed form, distrax).
      early_stopping: SB3 early stopping at ``1.5 * target_kl`` (off by default, like SB3's
        ``target_kl=None``).
      clamp_log_ratio: clamp the log-ratio to ``+-logratio_clip`` before ``exp``.
      value_clipping: PPO2 value clipping around the rollout value with ``vf_clip_eps`` (off by
        default, as DESIGN.md asks; note PureJaxRL's CartPole recipe has it on, and on CartPole
        with that recipe it mattered in our runs: see ``tests/training/test_ppo_train.py``).
      skip_nonfinite: skip (and count) a minibatch step whose loss or global gradient norm is
        non-finite (a NaN/Inf gradient, or a squared norm that overflows float32).
      clip_grad_norm: global gradient-norm clipping at ``hparams.max_grad_norm`` (default on;
        False removes the transform, for ablations and overhead measurements).
      lr_schedule: ``"constant"``, ``"linear"``, ``"cosine"`` or ``"exponential"`` from ``lr`` to
        ``lr_end`` over ``num_updates`` updates (constant within an update, as PureJaxRL), or
        ``"step"``: ``lr * lr_decay_rate^floor(update / lr_step_size)``, or ``"plateau"``:
        reduce-on-plateau (``lr * scale``; ``scale`` starts at 1 and is multiplied by
        ``plateau_factor`` after ``plateau_patience`` consecutive updates whose monitored value
        did not improve). The training loop monitors the rollout's mean episode return (an
        update whose rollout completed no episode is not counted); update ``k`` uses the scale
        after seeing rollout ``k``. Improvement means ``return > best + plateau_atol``
        (optax's ``contrib.reduce_on_plateau`` on ``-return``, with ``rtol = 0``: a relative
        tolerance on a negated return would have the wrong sign). The state is
        ``PPOState.plateau``, per seed under ``vmap``. Exponential needs ``lr_end > 0``.
        Shapes come from :mod:`jaxstab.schedules`.
      lr_decay_rate, lr_step_size: parameters of the ``"step"`` schedule.
      plateau_factor, plateau_patience, plateau_atol, plateau_cooldown, plateau_min_scale:
        parameters of the ``"plateau"`` schedule (see
        :func:`jaxstab.schedules.reduce_lr_on_plateau`; ``plateau_atol`` is in units of
        return and must be > 0).
      ent_schedule: same kinds for the entropy coefficient, ``ent_coef`` to ``ent_coef_end``.
      variance_scaling: quantile critic loss scaling mode (``"none"``, ``"seed"``, ``"normalize"``;
        see :mod:`jaxstab.losses.quantile`).
      huber_kappa: Huber threshold of the quantile loss.
      bc: add a behaviour-cloning loss on user demonstrations.
      adaptive_bc: shrink the BC coefficient when ``bc_coef * BC / |PPO| > bc_max_ratio``.
      ratio_high, ratio_low: thresholds of the extreme-ratio fractions.
      reward_norm: SB3 VecNormalize-style reward scaling in the training loop.
      rollback: in-graph rollback in the training loop (:mod:`jaxstab.training.rollback`;
        triggers: non-finite, KL over ``rollback_kl``, loss spike, reward drop).
      rollback_window: length of the rollback's loss / reward history.
      rollback_min_history: accepted updates needed before spike / drop triggers can fire.
      rollback_triggers: enabled triggers, a subset of :data:`ROLLBACK_TRIGGERS`. The loss
        spike is opt-in: PPO's total loss is dominated by the value loss, which jumps whenever
        the data changes (on CartPole it rises tenfold the first time episodes fail again in a
        mostly-solved regime); measured with it on, 500k-step CartPole runs rolled back in
        ~260 of 976 updates and ended near return 250 instead of 500 (benchmarks/bench_ppo.py).
    """

    policy_kind: str = "discrete"
    value_kind: str = "scalar"
    num_quantiles: int = 32
    hidden_sizes: tuple[int, ...] = (64, 64)
    activation: str = "tanh"
    init_log_std: float = 0.0
    num_envs: int = 4
    num_steps: int = 128
    num_epochs: int = 4
    num_minibatches: int = 4
    total_timesteps: int = 500_000
    adv_norm: str = "global"
    adv_norm_scope: str = "minibatch"
    kl_estimator: str = "k3"
    early_stopping: bool = False
    clamp_log_ratio: bool = True
    value_clipping: bool = False
    skip_nonfinite: bool = True
    clip_grad_norm: bool = True
    lr_schedule: str = "constant"
    lr_decay_rate: float = 0.5
    lr_step_size: int = 100
    plateau_factor: float = 0.5
    plateau_patience: int = 10
    plateau_atol: float = 1e-3
    plateau_cooldown: int = 0
    plateau_min_scale: float = 0.0
    ent_schedule: str = "constant"
    variance_scaling: str = "none"
    huber_kappa: float = 1.0
    bc: bool = False
    adaptive_bc: bool = False
    ratio_high: float = 100.0
    ratio_low: float = 0.01
    reward_norm: bool = False
    rollback: bool = False
    rollback_window: int = 10
    rollback_min_history: int = 5
    rollback_triggers: tuple[str, ...] = ("nonfinite", "kl", "reward_drop")

    def __post_init__(self) -> None:
        _check_choice("policy_kind", self.policy_kind, POLICY_KINDS)
        _check_choice("value_kind", self.value_kind, VALUE_KINDS)
        _check_choice("adv_norm", self.adv_norm, ADV_NORM_MODES)
        _check_choice("adv_norm_scope", self.adv_norm_scope, ADV_NORM_SCOPES)
        _check_choice("kl_estimator", self.kl_estimator, L.KL_ESTIMATORS)
        _check_choice("lr_schedule", self.lr_schedule, LR_SCHEDULES)
        _check_choice("ent_schedule", self.ent_schedule, ENT_SCHEDULES)
        _check_choice("variance_scaling", self.variance_scaling, VARIANCE_SCALING_MODES)
        for name in ("num_quantiles", "num_envs", "num_steps", "num_epochs", "num_minibatches"):
            if int(getattr(self, name)) < 1:
                raise ValueError(f"{name} must be >= 1, got {getattr(self, name)}")
        if not isinstance(self.hidden_sizes, tuple):
            raise TypeError(
                f"hidden_sizes must be a tuple (hashable), got {type(self.hidden_sizes)}")
        if not self.hidden_sizes or min(int(h) for h in self.hidden_sizes) < 1:
            raise ValueError(f"hidden_sizes must be a non-empty tuple of positive ints, got "
                             f"{self.hidden_sizes!r}")
        _check_choice("activation", self.activation, tuple(ACTIVATIONS))
        if int(self.rollback_window) < 1:
            raise ValueError(f"rollback_window must be >= 1, got {self.rollback_window!r}")
        if int(self.rollback_min_history) < 0:
            raise ValueError(f"rollback_min_history must be >= 0, got "
                             f"{self.rollback_min_history!r}")
        if int(self.lr_step_size) < 1:
            raise ValueError(f"lr_step_size must be >= 1, got {self.lr_step_size!r}")
        for name in ("huber_kappa", "lr_decay_rate", "ratio_high", "ratio_low"):
            v = getattr(self, name)
            if not (np.isfinite(v) and v > 0):
                raise ValueError(f"{name} must be finite and > 0, got {v!r}")
        if (self.num_envs * self.num_steps) % self.num_minibatches:
            raise ValueError(
                f"num_minibatches={self.num_minibatches} must divide num_envs * num_steps = "
                f"{self.num_envs * self.num_steps}")
        if self.total_timesteps < self.num_envs * self.num_steps:
            raise ValueError(
                f"total_timesteps={self.total_timesteps} is smaller than one rollout "
                f"(num_envs * num_steps = {self.num_envs * self.num_steps})")
        if self.value_kind == "scalar" and self.variance_scaling != "none":
            raise ValueError("variance_scaling needs value_kind='quantile'")
        bad = set(self.rollback_triggers) - set(ROLLBACK_TRIGGERS)
        if not isinstance(self.rollback_triggers, tuple) or bad:
            raise ValueError(f"rollback_triggers must be a tuple drawn from {ROLLBACK_TRIGGERS}, "
                             f"got {self.rollback_triggers!r}")
        if self.value_kind == "quantile" and self.value_clipping:
            raise ValueError("value_clipping is only implemented for value_kind='scalar'")
        if self.lr_schedule == "plateau":
            if not self.plateau_atol > 0:
                raise ValueError(f"plateau_atol must be > 0, got {self.plateau_atol!r}")
            _plateau_transform(self)  # validates factor, patience, cooldown, min_scale

    @property
    def batch_size(self) -> int:
        """Transitions per rollout: ``num_envs * num_steps``."""
        return self.num_envs * self.num_steps

    @property
    def minibatch_size(self) -> int:
        """``batch_size // num_minibatches``."""
        return self.batch_size // self.num_minibatches

    @property
    def num_updates(self) -> int:
        """PPO updates in a run: ``total_timesteps // batch_size``."""
        return self.total_timesteps // self.batch_size


def _check_choice(name: str, value: Any, choices: tuple[str, ...]) -> None:
    if value not in choices:
        raise ValueError(f"{name} must be one of {choices}, got {value!r}")


class PPOHParams(NamedTuple):
    """Traced PPO hyperparameters (sweep them with ``vmap``; build with :func:`ppo_hparams`).

    Attributes:
      lr: initial learning rate. lr_end: final learning rate of the schedule.
      gamma: discount. gae_lambda: GAE lambda.
      clip_eps: policy clip range. vf_clip_eps: value clip range (when value clipping is on).
      ent_coef: initial entropy coefficient. ent_coef_end: final entropy coefficient.
      vf_coef: value-loss coefficient. max_grad_norm: global gradient-norm clip (> 0).
      target_kl: early-stopping target (stop above ``1.5 * target_kl``).
      logratio_clip: half-width of the log-ratio clamp.
      bc_coef: behaviour-cloning coefficient. bc_max_ratio: BC/PPO ratio above which the
        adaptive BC coefficient shrinks. bc_min_coef: its floor.
      reward_clip: clip of normalized rewards (reward normalization).
      rollback_kl: KL threshold of the rollback trigger.
      rollback_loss_factor: loss-spike factor of the rollback trigger.
      rollback_reward_factor: reward-drop factor of the rollback trigger.
    """

    lr: Any = 2.5e-4
    lr_end: Any = 0.0
    gamma: Any = 0.99
    gae_lambda: Any = 0.95
    clip_eps: Any = 0.2
    vf_clip_eps: Any = 0.2
    ent_coef: Any = 0.01
    ent_coef_end: Any = 0.0
    vf_coef: Any = 0.5
    max_grad_norm: Any = 0.5
    target_kl: Any = 0.015
    logratio_clip: Any = 10.0
    bc_coef: Any = 0.0
    bc_max_ratio: Any = 1.0
    bc_min_coef: Any = 0.01
    reward_clip: Any = 10.0
    rollback_kl: Any = 0.1
    rollback_loss_factor: Any = 10.0
    rollback_reward_factor: Any = 0.5


def ppo_hparams(**kwargs: Any) -> PPOHParams:
    """:class:`PPOHParams` with every field a 0-d float32 array (one trace for any values).

    Raises:
      TypeError: on an unknown field name.
      ValueError: a non-finite value, or one outside its range: ``clip_eps``,
        ``vf_clip_eps``, ``max_grad_norm``, ``target_kl``, ``logratio_clip``, ``reward_clip``,
        ``bc_max_ratio``, ``rollback_kl``, ``rollback_loss_factor`` > 0; ``gamma`` in (0, 1];
        ``gae_lambda`` in [0, 1]; ``lr`` (0 freezes the parameters), ``lr_end``, ``ent_coef``, ``ent_coef_end``, ``vf_coef``,
        ``bc_coef``, ``bc_min_coef`` >= 0 (arrays for a sweep are checked entry by entry).
    """
    unknown = set(kwargs) - set(PPOHParams._fields)
    if unknown:
        raise TypeError(f"unknown PPOHParams fields: {sorted(unknown)}")
    hp = PPOHParams(**kwargs)
    for name in ("clip_eps", "vf_clip_eps", "max_grad_norm", "target_kl", "logratio_clip",
                 "reward_clip", "bc_max_ratio", "rollback_kl", "rollback_loss_factor"):
        check_range(name, getattr(hp, name), 0.0, None)
    check_range("gamma", hp.gamma, 0.0, 1.0)
    check_range("gae_lambda", hp.gae_lambda, 0.0, 1.0, low_inclusive=True)
    for name in ("lr", "lr_end", "ent_coef", "ent_coef_end", "vf_coef", "bc_coef", "bc_min_coef"):
        check_range(name, getattr(hp, name), 0.0, None, low_inclusive=True)
    check_range("rollback_reward_factor", hp.rollback_reward_factor)
    return PPOHParams(*(jnp.asarray(v, jnp.float32) for v in hp))


def _as_f32(hp: PPOHParams) -> PPOHParams:
    if not isinstance(hp, PPOHParams):
        raise TypeError(f"hparams must be a PPOHParams, got {type(hp)}")
    return PPOHParams(*(jnp.asarray(v, jnp.float32) for v in hp))


class Batch(NamedTuple):
    """A flattened rollout batch; leading axis ``B``.

    Attributes:
      obs: ``[B, obs_dim]`` float.
      action: ``[B]`` int32 (discrete) or ``[B, action_dim]`` float (latent for tanh).
      logp: ``[B]`` float log-probabilities under the behaviour policy.
      value_old: ``[B]`` (scalar head) or ``[B, num_quantiles]`` rollout critic outputs.
      advantages: ``[B]`` float GAE advantages (unnormalized).
      returns: ``[B]`` float value targets ``advantages + values``.
      pout_old: :class:`PolicyOutput` of the behaviour policy, leaves ``[B, action_dim]``.
      group: ``[B]`` int32 group index (environment) for group advantage normalization.
    """

    obs: jax.Array
    action: jax.Array
    logp: jax.Array
    value_old: jax.Array
    advantages: jax.Array
    returns: jax.Array
    pout_old: PolicyOutput
    group: jax.Array


class Demos(NamedTuple):
    """Demonstrations for the BC auxiliary loss: ``obs [D, obs_dim]``, ``action [D]``/``[D, A]``."""

    obs: jax.Array
    action: jax.Array


class PPOState(NamedTuple):
    """Carried PPO learner state.

    Attributes:
      params: network parameters.
      opt_state: optax state of ``clip_by_global_norm -> scale_by_adam(eps=1e-5) -> -lr``.
      update_step: 0-d int32, PPO updates done (drives the schedules).
      bc_scale: 0-d float32 multiplier of ``bc_coef`` (the adaptive BC coefficient's state).
      vs_state: :class:`jaxstab.losses.quantile.VarianceScalingState` (quantile head) or an
        unused 0-d float32 (scalar head).
      plateau: ``optax.contrib.ReduceLROnPlateauState`` (``lr_schedule="plateau"``; its
        ``scale`` multiplies ``lr``) or an unused 0-d float32.
    """

    params: Any
    opt_state: Any
    update_step: jax.Array
    bc_scale: jax.Array
    vs_state: Any
    plateau: Any = None


class PPO(NamedTuple):
    """``init(key) -> PPOState``; ``update(state, batch, hparams, key, *, monitor=None,
    monitor_valid=None) -> (state, metrics)``."""

    init: Callable[[jax.Array], PPOState]
    update: Callable[..., tuple[PPOState, dict]]


def _plateau_transform(cfg: PPOConfig):
    from jaxstab.schedules import reduce_lr_on_plateau

    return reduce_lr_on_plateau(factor=cfg.plateau_factor, patience=cfg.plateau_patience,
                                rtol=0.0, atol=cfg.plateau_atol, cooldown=cfg.plateau_cooldown,
                                min_scale=cfg.plateau_min_scale)


def networks_from_config(cfg: PPOConfig, obs_dim: int, action_dim: int) -> PPONetworks:
    """:func:`make_networks` with the architecture fields of ``cfg``."""
    return make_networks(obs_dim=obs_dim, action_dim=action_dim, policy_kind=cfg.policy_kind,
                         value_kind=cfg.value_kind, num_quantiles=cfg.num_quantiles,
                         hidden_sizes=cfg.hidden_sizes, activation=cfg.activation,
                         init_log_std=cfg.init_log_std)


def _optimizer(max_grad_norm: jax.Array, lr: jax.Array,
               clip: bool = True) -> optax.GradientTransformation:
    return optax.chain(
        optax.clip_by_global_norm(max_grad_norm) if clip else optax.identity(),
        optax.scale_by_adam(eps=1e-5),
        optax.scale_by_learning_rate(lr),
    )


def _schedule_value(kind: str, init: jax.Array, end: jax.Array, step: jax.Array,
                    num_steps: int, *, decay_rate: float = 0.5, step_size: int = 1) -> jax.Array:
    """Value of a schedule with *traced* endpoints at integer ``step``.

    :mod:`jaxstab.schedules` takes Python floats (its schedules are static), while ``init`` and
    ``end`` are traced hyperparameters here. Linear and cosine schedules are affine in
    ``(init, end)``, so the library's unit schedule ``f`` (``1 -> 0`` over ``num_steps``) gives
    ``end + (init - end) f(t)``; exponential is ``init (end / init)^p`` with the progress
    ``p = 1 - f_linear(t)``; ``step`` is ``init * decay_rate^floor(t / step_size)``.
    """
    from jaxstab import schedules as S

    n = max(int(num_steps), 1)
    if kind == "constant":
        return init
    if kind in ("linear", "cosine"):
        f = S.lr_schedule(kind, 1.0, decay_steps=n, end_value=0.0)(step)
        return end + (init - end) * f
    if kind == "exponential":
        p = 1.0 - S.lr_schedule("linear", 1.0, decay_steps=n, end_value=0.0)(step)
        # p = 0 gives init even if end = 0 (where 0 * log(0) would be NaN)
        return jnp.where(p > 0, init * jnp.exp(p * (jnp.log(end) - jnp.log(init))), init)
    if kind == "step":
        return init * S.lr_schedule("step", 1.0, decay_rate=decay_rate, step_size=step_size)(step)
    raise ValueError(f"unknown schedule {kind!r}")


def _normalize_adv(cfg: PPOConfig, adv: jax.Array, group: jax.Array) -> jax.Array:
    if cfg.adv_norm == "none":
        return adv
    from jaxstab.ops.advantages import normalize_advantages

    if cfg.adv_norm == "group":
        return normalize_advantages(adv, "group", groups=group, num_groups=cfg.num_envs)
    return normalize_advantages(adv, cfg.adv_norm)


def _check_batch(cfg: PPOConfig, nets: PPONetworks, batch: Batch) -> int:
    if not isinstance(batch, Batch):
        raise TypeError(f"batch must be a Batch, got {type(batch)}")
    b = batch.obs.shape[0]
    if batch.obs.shape != (b, nets.obs_dim):
        raise ValueError(f"batch.obs must be [B, {nets.obs_dim}], got {batch.obs.shape}")
    if b % cfg.num_minibatches:
        raise ValueError(
            f"batch size {b} is not divisible by num_minibatches={cfg.num_minibatches}")
    act_shape = (b,) if cfg.policy_kind == "discrete" else (b, nets.action_dim)
    if batch.action.shape != act_shape:
        raise ValueError(f"batch.action must have shape {act_shape}, got {batch.action.shape}")
    v_shape = (b,) if cfg.value_kind == "scalar" else (b, cfg.num_quantiles)
    if batch.value_old.shape != v_shape:
        raise ValueError(f"batch.value_old must have shape {v_shape}, got {batch.value_old.shape}")
    for name in ("logp", "advantages", "returns", "group"):
        if getattr(batch, name).shape != (b,):
            raise ValueError(
                f"batch.{name} must have shape ({b},), got {getattr(batch, name).shape}")
    if batch.pout_old.loc.shape != (b, nets.action_dim):
        raise ValueError(f"batch.pout_old.loc must be [B, {nets.action_dim}], got "
                         f"{batch.pout_old.loc.shape}")
    return b


def make_ppo(cfg: PPOConfig, networks: PPONetworks, demos: Demos | None = None) -> PPO:
    """Build the pure PPO ``(init, update)`` pair.

    Per minibatch, with ``r = exp(clip(logp - logp_old, -c, c))`` and normalized advantages A:
    ``loss = -mean min(r A, clip(r, 1-eps, 1+eps) A) + vf_coef * L_V - ent_coef * H
    + bc_coef * bc_scale * L_BC``.

    Args:
      cfg: :class:`PPOConfig`.
      networks: :class:`PPONetworks` matching ``cfg`` (see :func:`networks_from_config`).
      demos: optional :class:`Demos` (needed iff ``cfg.bc``); a random subset of
        ``min(D, minibatch_size)`` pairs is used per minibatch.

    Returns:
      :class:`PPO` with ``init(key) -> PPOState`` and
      ``update(state, batch, hparams, key) -> (state, metrics)``; metrics is a dict of 0-d
      float32 arrays (means over the minibatch steps evaluated before an early stop, counts,
      extreme-ratio maxima).

      Reduce-on-plateau (``cfg.lr_schedule == "plateau"``): ``update(..., monitor=v,
      monitor_valid=ok)`` first feeds the 0-d value ``v`` (higher is better, e.g. the mean
      episode return of the rollout in ``batch``) to the plateau state when ``ok`` (default
      True), then trains with ``lr * scale``; without ``monitor`` the state is not advanced.
      Metrics then include ``lr_scale`` and ``plateau_count``. Other schedules ignore
      ``monitor``.

      Shuffling (a documented contract, so runs are reproducible): epoch ``e`` uses
      ``k_perm, k_mb = jax.random.split(jax.random.split(key, num_epochs)[e])`` and visits
      minibatch ``j`` = ``batch[perm[j * mb : (j + 1) * mb]]`` with
      ``perm = jaxstab.agents.common.permutation(k_perm, B)`` (a uniformly random
      permutation like ``jax.random.permutation``, by faster single-operand sorts).

    Raises:
      ValueError: if ``networks`` does not match ``cfg`` or BC is on without demos.

    Example:
      >>> cfg = PPOConfig(num_envs=2, num_steps=8, num_minibatches=2, total_timesteps=16)
      >>> nets = networks_from_config(cfg, obs_dim=4, action_dim=2)
      >>> ppo = make_ppo(cfg, nets)
      >>> state = ppo.init(jax.random.key(0))
    """
    if networks.policy_kind != cfg.policy_kind or networks.value_kind != cfg.value_kind:
        raise ValueError("networks must be built with cfg.policy_kind and cfg.value_kind")
    if cfg.value_kind == "quantile" and networks.num_quantiles != cfg.num_quantiles:
        raise ValueError("networks.num_quantiles must equal cfg.num_quantiles")
    if cfg.bc and demos is None:
        raise ValueError("demos must be given when cfg.bc is True")
    if demos is not None:
        demos = Demos(jnp.asarray(demos.obs), jnp.asarray(demos.action))
        if demos.obs.ndim != 2 or demos.obs.shape[1] != networks.obs_dim:
            raise ValueError(f"demos.obs must be [D, {networks.obs_dim}], got {demos.obs.shape}")
        if demos.action.shape[0] != demos.obs.shape[0]:
            raise ValueError("demos.action and demos.obs must have the same leading size")
    nets = networks
    kind = cfg.policy_kind

    def init(key: jax.Array) -> PPOState:
        params = nets.init(key, jnp.zeros((nets.obs_dim,), jnp.float32))
        opt_state = _optimizer(jnp.float32(0.5), jnp.float32(1e-3), cfg.clip_grad_norm).init(params)
        if cfg.value_kind == "quantile":
            from jaxstab.losses.quantile import variance_scaling_init

            vs_state = variance_scaling_init()
        else:
            vs_state = jnp.zeros((), jnp.float32)
        if cfg.lr_schedule == "plateau":
            plateau = _plateau_transform(cfg).init(jnp.zeros((), jnp.float32))
        else:
            plateau = jnp.zeros((), jnp.float32)
        return PPOState(params, opt_state, jnp.zeros((), jnp.int32), jnp.ones((), jnp.float32),
                        vs_state, plateau)

    def value_term(vout: jax.Array, mb: Batch, hp: PPOHParams, vs_state: jax.Array):
        if cfg.value_kind == "scalar":
            vl, m = L.value_loss(vout, mb.value_old, mb.returns, clip_eps=hp.vf_clip_eps,
                                 clip=cfg.value_clipping)
            return vl, m, vs_state
        return _quantile_value_loss(cfg, vout, mb, hp, vs_state)

    def loss_fn(params, mb: Batch, hp: PPOHParams, ent_coef, bc_coef, demo_mb, vs_state):
        pout, vout = nets.apply(params, mb.obs)
        dist = distribution(kind, pout)
        logp = dist.log_prob(mb.action)
        ratio, rstats = L.guarded_ratio(logp, mb.logp, log_ratio_clip=hp.logratio_clip,
                                        clamp=cfg.clamp_log_ratio, high=cfg.ratio_high,
                                        low=cfg.ratio_low)
        adv = mb.advantages
        if cfg.adv_norm_scope == "minibatch":
            adv = _normalize_adv(cfg, adv, mb.group)
        pg_loss, pgm = L.ppo_clip_loss(ratio, adv, hp.clip_eps)
        entropy = jnp.mean(dist.entropy())
        vl, vm, new_vs = value_term(vout, mb, hp, vs_state)
        sg_logp = jax.lax.stop_gradient(logp)
        if cfg.kl_estimator == "exact":
            kl = jnp.mean(L.exact_kl(kind, mb.pout_old, jax.lax.stop_gradient(pout)))
        else:
            kl = jnp.mean(L.kl_estimate(mb.logp, sg_logp, cfg.kl_estimator))
        total = pg_loss + hp.vf_coef * vl - ent_coef * entropy
        aux = {"policy_loss": pg_loss, "value_loss": vl, "entropy": entropy, "approx_kl": kl,
               "kl_k1": jnp.mean(L.kl_estimate(mb.logp, sg_logp, "k1")),
               "kl_k3": jnp.mean(L.kl_estimate(mb.logp, sg_logp, "k3")), **pgm, **vm}
        if cfg.bc:
            bl = L.bc_loss(kind, nets.apply(params, demo_mb.obs)[0], demo_mb.action)
            total = total + bc_coef * bl
            aux["bc_loss"] = bl
            aux["bc_ppo_ratio"] = jnp.abs(bc_coef * bl) / (jnp.abs(pg_loss) + 1e-8)
        aux["total_loss"] = total
        aux = {k: jnp.asarray(v, jnp.float32) for k, v in aux.items()}
        return total, (aux, rstats, new_vs)

    grad_fn = jax.value_and_grad(loss_fn, has_aux=True)

    class _Carry(NamedTuple):
        params: Any
        opt_state: Any
        stopped: jax.Array
        bc_scale: jax.Array
        vs_state: Any

    def update(state: PPOState, batch: Batch, hparams: PPOHParams, key: jax.Array, *,
               monitor: jax.Array | None = None, monitor_valid: jax.Array | None = None):
        hp = _as_f32(hparams)
        b = _check_batch(cfg, nets, batch)
        mb_size = b // cfg.num_minibatches
        plateau = state.plateau
        if cfg.lr_schedule == "plateau":
            if plateau is None or not hasattr(plateau, "scale"):
                raise ValueError("lr_schedule='plateau' needs a PPOState from this init")
            if monitor is not None:
                m = jnp.asarray(monitor, jnp.float32)
                if m.shape != ():
                    raise ValueError(f"monitor must be a scalar, got shape {m.shape}")
                # reduce_on_plateau minimizes: feed the negated (maximized) monitored value
                _, stepped = _plateau_transform(cfg).update((), plateau, value=-m)
                valid = jnp.ones((), bool) if monitor_valid is None else jnp.asarray(
                    monitor_valid, bool)
                plateau = tree_select(valid, stepped, plateau)
            lr = hp.lr * plateau.scale
        else:
            lr = _schedule_value(cfg.lr_schedule, hp.lr, hp.lr_end, state.update_step,
                                 cfg.num_updates, decay_rate=cfg.lr_decay_rate,
                                 step_size=cfg.lr_step_size)
        ent_coef = _schedule_value(cfg.ent_schedule, hp.ent_coef, hp.ent_coef_end,
                                   state.update_step, cfg.num_updates)
        tx = _optimizer(hp.max_grad_norm, lr, cfg.clip_grad_norm)
        if cfg.adv_norm_scope == "batch":
            batch = batch._replace(advantages=_normalize_adv(cfg, batch.advantages, batch.group))

        def minibatch_step(carry: _Carry, xs):
            mb, k = xs
            if cfg.bc:
                d = demos.obs.shape[0]
                n = min(d, mb_size)
                idx = jax.random.choice(k, d, (n,), replace=False)
                demo_mb = Demos(demos.obs[idx], demos.action[idx])
            else:
                demo_mb = None
            bc_coef = hp.bc_coef * carry.bc_scale
            (loss, (aux, rstats, new_vs)), grads = grad_fn(
                carry.params, mb, hp, ent_coef, bc_coef, demo_mb, carry.vs_state)
            kl = aux["approx_kl"]
            active = ~carry.stopped
            if cfg.early_stopping:
                exceed = ~(kl <= 1.5 * hp.target_kl)  # non-finite KL also stops
                stopped = carry.stopped | exceed
            else:
                stopped = carry.stopped
            # One reduction instead of one per leaf: the global norm is needed anyway (metric,
            # clipping) and is non-finite iff a gradient is NaN/Inf or its squared norm
            # overflows float32 (then the clipped step would be 0 or NaN: skip it too).
            grad_norm = optax.tree.norm(grads)
            finite = jnp.isfinite(grad_norm) & jnp.isfinite(loss)
            apply = ~stopped
            if cfg.skip_nonfinite:
                apply = apply & finite
            updates, new_opt = tx.update(grads, carry.opt_state, carry.params)
            new_params = optax.apply_updates(carry.params, updates)
            params = tree_select(apply, new_params, carry.params)
            opt_state = tree_select(apply, new_opt, carry.opt_state)
            vs_state = tree_select(apply, new_vs, carry.vs_state)
            bc_scale = carry.bc_scale
            if cfg.bc and cfg.adaptive_bc:
                ratio_bc = aux["bc_ppo_ratio"]
                shrink = jnp.where(ratio_bc > hp.bc_max_ratio, hp.bc_max_ratio / ratio_bc, 1.0)
                floor = hp.bc_min_coef / jnp.maximum(hp.bc_coef, 1e-12)
                cand = jnp.maximum(bc_scale * shrink, jnp.minimum(floor, bc_scale))
                bc_scale = jnp.where(apply & jnp.isfinite(cand), cand, bc_scale)
                aux["bc_coef"] = hp.bc_coef * bc_scale
            out = {
                "aux": aux,
                "ratio": rstats,
                "active": active,
                "applied": apply,
                "nonfinite_skip": active & ~stopped & ~finite,
                "grad_norm": grad_norm.astype(jnp.float32),
            }
            return _Carry(params, opt_state, stopped, bc_scale, vs_state), out

        def epoch(carry: _Carry, k):
            k_perm, k_mb = jax.random.split(k)
            perm = permutation(k_perm, b)
            mbs = jax.tree_util.tree_map(
                lambda x: jnp.take(x, perm, axis=0).reshape(
                    (cfg.num_minibatches, mb_size) + x.shape[1:]), batch)
            keys = jax.random.split(k_mb, cfg.num_minibatches)
            return jax.lax.scan(minibatch_step, carry, (mbs, keys))

        carry0 = _Carry(state.params, state.opt_state, jnp.zeros((), bool), state.bc_scale,
                        state.vs_state)
        carry, out = jax.lax.scan(epoch, carry0, jax.random.split(key, cfg.num_epochs))
        # out leaves: [num_epochs, num_minibatches, ...]
        active = out["active"].astype(jnp.float32)
        n_active = jnp.maximum(jnp.sum(active), 1.0)
        metrics = {k: jnp.sum(v * active) / n_active for k, v in out["aux"].items()}
        metrics["grad_norm"] = jnp.sum(out["grad_norm"] * active) / n_active
        # k3 KL(rollout policy || current) over the last epoch that ran a step: every sample of
        # the batch once, at the parameters of the update's last pass (what rollback judges)
        ran = jnp.any(out["active"], axis=1)
        last = jnp.max(jnp.where(ran, jnp.arange(cfg.num_epochs), 0))
        w_last = active * (jnp.arange(cfg.num_epochs) == last)[:, None]
        metrics["kl_last_epoch"] = (jnp.sum(out["aux"]["kl_k3"] * w_last)
                                    / jnp.maximum(jnp.sum(w_last), 1.0))
        r = out["ratio"]
        metrics.update({
            "ratio_max": jnp.max(r.max), "ratio_min": jnp.min(r.min),
            "ratio_frac_high": jnp.mean(r.frac_high), "ratio_frac_low": jnp.mean(r.frac_low),
            "ratio_frac_clamped": jnp.mean(r.frac_clamped),
            "ratio_nonfinite_count": jnp.sum(r.nonfinite_count),
            "ratio_nonfinite_frac": jnp.mean(r.nonfinite_frac),
            "num_applied_steps": jnp.sum(out["applied"]).astype(jnp.float32),
            "num_nonfinite_skips": jnp.sum(out["nonfinite_skip"]).astype(jnp.float32),
            "early_stopped": carry.stopped.astype(jnp.float32),
            "lr": jnp.asarray(lr, jnp.float32), "ent_coef": jnp.asarray(ent_coef, jnp.float32),
        })
        if cfg.lr_schedule == "plateau":
            metrics["lr_scale"] = jnp.asarray(plateau.scale, jnp.float32)
            metrics["plateau_count"] = plateau.plateau_count.astype(jnp.float32)
        new_state = PPOState(carry.params, carry.opt_state, state.update_step + 1,
                             carry.bc_scale, carry.vs_state, plateau)
        return new_state, metrics

    return PPO(init, update)


def _quantile_value_loss(cfg: PPOConfig, quantiles: jax.Array, mb: Batch, hp: PPOHParams,
                         vs_state: Any):
    """Quantile-Huber loss of the critic atoms ``[B, N]`` against the scalar GAE return ``[B]``.

    The target distribution is the single atom ``R_b`` (``M = 1``); the loss is
    :func:`jaxstab.losses.quantile.variance_scaled_quantile_loss` in ``cfg.variance_scaling``
    mode (``"none"`` is the plain batch-mean quantile-Huber loss).
    """
    from jaxstab.losses.quantile import variance_scaled_quantile_loss

    target = jax.lax.stop_gradient(mb.returns)[:, None].astype(quantiles.dtype)
    loss, new_vs, m = variance_scaled_quantile_loss(
        quantiles, target, vs_state, mode=cfg.variance_scaling, kappa=cfg.huber_kappa)
    metrics = {"vs_weight": m["weight"], "quantile_var_mean": m["quantile_var_mean"],
               "kappa_eff": m["kappa_eff"]}
    return loss, metrics, new_vs
