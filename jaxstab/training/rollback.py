"""In-graph rollback: keep the last good snapshot in the carried state and fall back to it.

A training step produces a *candidate* snapshot (any pytree, typically ``(params, opt_state)``)
together with scalar diagnostics of that step (loss, KL between the old and the new policy, a
reward). :func:`rollback_update` decides, with ``jnp.where`` only, whether the candidate is
accepted or the previous good snapshot is returned instead. Everything is a pure function over
the :class:`RollbackState` NamedTuple, so it runs inside ``jit``/``lax.scan`` and per seed under
``vmap`` (each seed rolls back on its own). It follows the optax pattern: ``init`` builds the
state, ``update`` maps (state, candidate, diagnostics) to (accepted snapshot, state, metrics).

Triggers (each can be switched off statically in :class:`RollbackConfig`); with
``m_L``/``m_R`` the means of the last ``cfg.window`` *accepted* losses/rewards and ``n_L``/``n_R``
how many such values exist:

* ``nonfinite``:  loss, kl or reward is NaN/Inf, or any inexact leaf of ``candidate`` (or of the
  optional ``grads``) is NaN/Inf.
* ``kl``:          ``kl > kl_threshold``.
* ``loss_spike``:  ``n_L >= min_history`` and ``loss - m_L > (loss_spike_factor - 1) * |m_L|``.
  For a positive mean this is the seed's ``loss > factor * mean``; for a negative mean (PPO
  surrogate losses are often negative) it still means "worse than the mean by (factor - 1)
  times its magnitude", where the seed's literal rule would fire on every improvement.
* ``reward_drop``: ``n_R >= min_history`` and ``reward < m_R - (1 - reward_drop_factor) * |m_R|``.
  For a positive mean this is the seed's ``reward < factor * mean``; for a negative mean
  (``m_R = -10``, factor 0.5) it fires below ``-15``, i.e. on a drop of half the mean's
  magnitude, where the literal rule (``reward < -5``) would fire on ordinary rewards.

With a mean of exactly zero the spike/drop rules fire on any strict worsening; choose
``min_history`` and the window so the mean is informative.

If any trigger fires, the previous good snapshot is returned and stays the good snapshot; the
rejected diagnostics are *not* added to the history (so a bad step cannot raise the mean and
mask the next one), and the best-reward record is not touched. Otherwise the candidate becomes
the good snapshot, its loss and reward are appended to the ring buffers and the best record is
updated when ``reward > best_reward``.

Statistics (seed 001 ``get_statistics``): :func:`rollback_count`, :func:`last_rollback_step`,
:func:`best_reward`, :func:`best_step`, :func:`best_snapshot`, :func:`rollback_statistics`.

Reference: DESIGN.md, "Checkpoint and rollback"; seed 001, "Checkpoint & Rollback".
"""

from __future__ import annotations

import dataclasses
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp

__all__ = [
    "RollbackConfig",
    "RollbackHParams",
    "MetricWindow",
    "RollbackState",
    "rollback_init",
    "rollback_update",
    "rollback_count",
    "last_rollback_step",
    "best_reward",
    "best_step",
    "best_snapshot",
    "rollback_statistics",
    "METRIC_KEYS",
]

PyTree = Any


@dataclasses.dataclass(frozen=True)
class RollbackConfig:
    """Static rollback options (changing one recompiles).

    Attributes:
      window: length of the ring buffers of recent accepted losses and rewards (>= 1).
      check_nonfinite: reject steps with a NaN/Inf loss, kl, reward, candidate or grads leaf.
      check_kl: reject steps with ``kl > kl_threshold``.
      check_loss_spike: reject loss spikes relative to the recent mean (see module docstring).
      check_reward_drop: reject reward drops relative to the recent mean.
      keep_best: also carry a copy of the snapshot with the highest accepted reward (doubles
        the memory of the snapshot; ``best_snapshot`` is ``None`` in the state otherwise).
    """

    window: int = 10
    check_nonfinite: bool = True
    check_kl: bool = True
    check_loss_spike: bool = True
    check_reward_drop: bool = True
    keep_best: bool = True

    def __post_init__(self) -> None:
        if not isinstance(self.window, int) or isinstance(self.window, bool) or self.window < 1:
            raise ValueError(f"RollbackConfig.window must be an int >= 1, got {self.window!r}")
        for name in ("check_nonfinite", "check_kl", "check_loss_spike", "check_reward_drop",
                     "keep_best"):
            if not isinstance(getattr(self, name), bool):
                raise TypeError(f"RollbackConfig.{name} must be a bool, got "
                                f"{getattr(self, name)!r}")


class RollbackHParams(NamedTuple):
    """Traced rollback thresholds (sweep them with ``vmap``; defaults from seed 001).

    Attributes:
      kl_threshold: float, reject when ``kl > kl_threshold``.
      loss_spike_factor: float (> 1 is meaningful), e.g. 3.0: reject when the loss exceeds the
        recent mean by ``(factor - 1) * |mean|``.
      reward_drop_factor: float in [0, 1], e.g. 0.5: reject when the reward falls below the
        recent mean by ``(1 - factor) * |mean|``.
      min_history: int, number of accepted values needed before spike/drop triggers can fire
        (values above ``cfg.window`` can never be reached, which disables those triggers).
    """

    kl_threshold: Any = 0.1
    loss_spike_factor: Any = 3.0
    reward_drop_factor: Any = 0.5
    min_history: Any = 5


class MetricWindow(NamedTuple):
    """Ring buffer of the last accepted values of one scalar diagnostic.

    Attributes:
      values: [window] float32; slot ``i`` is valid iff ``i < min(count, window)``.
      count: () int32, number of values ever appended.
    """

    values: jax.Array
    count: jax.Array


class RollbackState(NamedTuple):
    """Carried rollback state.

    Attributes:
      snapshot: the last accepted (good) snapshot, same pytree as ``rollback_init``'s argument.
      best_snapshot: snapshot with the highest accepted reward (``None`` if not ``keep_best``).
      losses: :class:`MetricWindow` of accepted losses.
      rewards: :class:`MetricWindow` of accepted rewards.
      step: () int32, number of ``rollback_update`` calls so far.
      rollback_count: () int32, number of rejected candidates.
      consecutive_rollbacks: () int32, rejections since the last accepted candidate.
      last_rollback_step: () int32, ``step`` index of the last rejection (-1 if none).
      best_reward: () float32, highest accepted reward (-inf if none).
      best_step: () int32, ``step`` index at which it was accepted (-1 if none).
    """

    snapshot: PyTree
    best_snapshot: PyTree
    losses: MetricWindow
    rewards: MetricWindow
    step: jax.Array
    rollback_count: jax.Array
    consecutive_rollbacks: jax.Array
    last_rollback_step: jax.Array
    best_reward: jax.Array
    best_step: jax.Array


#: Keys of the metrics dict returned by :func:`rollback_update` (all 0-d arrays).
METRIC_KEYS = (
    "rollback", "trigger_nonfinite", "trigger_kl", "trigger_loss_spike", "trigger_reward_drop",
    "rollback_count", "consecutive_rollbacks", "last_rollback_step", "best_reward", "best_step",
    "loss_mean", "reward_mean",
)


def _check_cfg(cfg: RollbackConfig) -> None:
    if not isinstance(cfg, RollbackConfig):
        raise TypeError(f"cfg must be a RollbackConfig, got {type(cfg).__name__}")


def _empty_window(window: int) -> MetricWindow:
    return MetricWindow(values=jnp.zeros((window,), jnp.float32), count=jnp.zeros((), jnp.int32))


def _copy_tree(tree: PyTree) -> PyTree:
    # A real copy, so that donating/deleting the caller's buffers cannot alias into the state.
    return jax.tree_util.tree_map(lambda x: jnp.array(x, copy=True), tree)


def rollback_init(snapshot: PyTree, cfg: RollbackConfig) -> RollbackState:
    """Initial rollback state whose good snapshot is ``snapshot``.

    Args:
      snapshot: any pytree of arrays (params, optimizer state, PRNG keys...); it is the
        fallback until a candidate is accepted.
      cfg: static :class:`RollbackConfig`.

    Returns:
      :class:`RollbackState` with empty histories, zero counts, ``last_rollback_step = -1``,
      ``best_reward = -inf`` and ``best_step = -1``. If ``cfg.keep_best`` the best snapshot
      starts as a copy of ``snapshot``.

    Raises:
      TypeError: if ``cfg`` is not a RollbackConfig or ``snapshot`` has non-array leaves.

    Example:
      >>> cfg = RollbackConfig(window=4)
      >>> state = rollback_init({"w": jnp.zeros(3)}, cfg)
      >>> int(state.rollback_count), int(state.last_rollback_step)
      (0, -1)
    """
    _check_cfg(cfg)
    for leaf in jax.tree_util.tree_leaves(snapshot):
        if not hasattr(leaf, "dtype") or not hasattr(leaf, "shape"):
            raise TypeError(f"snapshot leaves must be arrays, got a {type(leaf).__name__}")
    snapshot = _copy_tree(snapshot)
    return RollbackState(
        snapshot=snapshot,
        best_snapshot=_copy_tree(snapshot) if cfg.keep_best else None,
        losses=_empty_window(cfg.window),
        rewards=_empty_window(cfg.window),
        step=jnp.zeros((), jnp.int32),
        rollback_count=jnp.zeros((), jnp.int32),
        consecutive_rollbacks=jnp.zeros((), jnp.int32),
        last_rollback_step=jnp.full((), -1, jnp.int32),
        best_reward=jnp.full((), -jnp.inf, jnp.float32),
        best_step=jnp.full((), -1, jnp.int32),
    )


def _scalar(name: str, value: Any) -> jax.Array:
    arr = jnp.asarray(value)
    if arr.ndim != 0:
        raise ValueError(f"{name} must be a scalar (0-d) per call (use vmap for a batch of "
                         f"seeds), got shape {arr.shape}")
    if not (jnp.issubdtype(arr.dtype, jnp.floating) or jnp.issubdtype(arr.dtype, jnp.integer)):
        raise TypeError(f"{name} must be a real number, got dtype {arr.dtype}")
    return arr.astype(jnp.float32)


def _is_key(x: Any) -> bool:
    return hasattr(x, "dtype") and jnp.issubdtype(x.dtype, jax.dtypes.prng_key)


def _tree_finite(tree: PyTree) -> jax.Array:
    flags = [jnp.all(jnp.isfinite(x)) for x in jax.tree_util.tree_leaves(tree)
             if not _is_key(x) and jnp.issubdtype(jnp.asarray(x).dtype, jnp.inexact)]
    if not flags:
        return jnp.asarray(True)
    return jnp.stack(flags).all()


def _check_same_structure(candidate: PyTree, snapshot: PyTree) -> None:
    c_leaves, c_def = jax.tree_util.tree_flatten(candidate)
    s_leaves, s_def = jax.tree_util.tree_flatten(snapshot)
    if c_def != s_def:
        raise ValueError("candidate must have the pytree structure of the snapshot given to "
                         f"rollback_init: got {c_def}, expected {s_def}")
    for i, (c, s) in enumerate(zip(c_leaves, s_leaves)):
        if jnp.shape(c) != jnp.shape(s) or jnp.result_type(c) != jnp.result_type(s):
            raise ValueError(
                f"candidate leaf {i} has shape {jnp.shape(c)} and dtype {jnp.result_type(c)}, "
                f"the snapshot has {jnp.shape(s)} and {jnp.result_type(s)}: they must match "
                "(a dtype change would also make a jitted loop retrace)")


def _window_mean(w: MetricWindow) -> tuple[jax.Array, jax.Array]:
    size = w.values.shape[0]
    n = jnp.minimum(w.count, size)
    valid = jnp.arange(size, dtype=jnp.int32) < n
    total = jnp.sum(jnp.where(valid, w.values, jnp.zeros_like(w.values)))
    mean = total / jnp.maximum(n, 1).astype(jnp.float32)
    return mean, n


def _window_push(w: MetricWindow, value: jax.Array, accept: jax.Array) -> MetricWindow:
    size = w.values.shape[0]
    pos = w.count % size
    written = w.values.at[pos].set(value)
    return MetricWindow(values=jnp.where(accept, written, w.values),
                        count=w.count + accept.astype(jnp.int32))


def _select(pred: jax.Array, on_true: PyTree, on_false: PyTree) -> PyTree:
    return jax.tree_util.tree_map(lambda a, b: jnp.where(pred, a, b), on_true, on_false)


def rollback_update(
    state: RollbackState,
    candidate: PyTree,
    *,
    loss: Any,
    kl: Any = None,
    reward: Any = None,
    hparams: RollbackHParams,
    cfg: RollbackConfig,
    grads: PyTree = None,
) -> tuple[PyTree, RollbackState, dict[str, jax.Array]]:
    """Accept ``candidate`` or roll back to the last good snapshot.

    ``rollback = any(enabled triggers)`` (see the module docstring for each rule);
    ``accepted = where(rollback, state.snapshot, candidate)`` leafwise.

    Args:
      state: :class:`RollbackState` from :func:`rollback_init` or a previous update.
      candidate: pytree with the structure, shapes and dtypes of the snapshot.
      loss: () float, the loss of the step that produced ``candidate``.
      kl: () float or None, KL between the policy before and after the step; None (static)
        disables the KL trigger for this call.
      reward: () float or None, the reward attributed to ``candidate`` (e.g. the mean episode
        return of its rollouts); None (static) disables the drop trigger and best tracking for
        this call and leaves the reward history unchanged.
      hparams: :class:`RollbackHParams` of traced scalars.
      cfg: static :class:`RollbackConfig` (the one used for ``rollback_init``).
      grads: optional pytree (e.g. the gradients) whose non-finite inexact leaves also fire the
        ``nonfinite`` trigger.

    Returns:
      ``(accepted_snapshot, new_state, metrics)``: the snapshot to continue training from,
      the new state, and a dict with the keys :data:`METRIC_KEYS`: booleans ``rollback`` and
      ``trigger_*`` (each trigger's own verdict; disabled ones are False), int32
      ``rollback_count``, ``consecutive_rollbacks``, ``last_rollback_step``, ``best_step``,
      float32 ``best_reward`` and the history means ``loss_mean``/``reward_mean`` that the
      spike and drop rules compared against (0 when the history is empty).

    Raises:
      ValueError: if ``candidate`` does not match the snapshot, a diagnostic is not 0-d, or
        the state's buffers do not have ``cfg.window`` slots.
      TypeError: for a wrong ``cfg``/``hparams`` type or non-real diagnostics.

    Example:
      >>> cfg = RollbackConfig(window=4)
      >>> hp = RollbackHParams(kl_threshold=0.1)
      >>> state = rollback_init({"w": jnp.zeros(3)}, cfg)
      >>> params, state, m = rollback_update(state, {"w": jnp.full(3, jnp.nan)}, loss=1.0,
      ...                                    kl=0.0, reward=1.0, hparams=hp, cfg=cfg)
      >>> bool(m["rollback"]), bool(m["trigger_nonfinite"]), params["w"].tolist()
      (True, True, [0.0, 0.0, 0.0])
    """
    _check_cfg(cfg)
    if not isinstance(hparams, RollbackHParams):
        raise TypeError(f"hparams must be a RollbackHParams, got {type(hparams).__name__}")
    if not isinstance(state, RollbackState):
        raise TypeError(f"state must be a RollbackState, got {type(state).__name__}")
    if state.losses.values.shape != (cfg.window,):
        raise ValueError(f"state buffers have shape {state.losses.values.shape} but "
                         f"cfg.window={cfg.window}: pass the cfg used for rollback_init")
    _check_same_structure(candidate, state.snapshot)

    loss = _scalar("loss", loss)
    kl_arr = None if kl is None else _scalar("kl", kl)
    reward_arr = None if reward is None else _scalar("reward", reward)
    kl_threshold = _scalar("hparams.kl_threshold", hparams.kl_threshold)
    spike = _scalar("hparams.loss_spike_factor", hparams.loss_spike_factor)
    drop = _scalar("hparams.reward_drop_factor", hparams.reward_drop_factor)
    min_hist = jnp.asarray(hparams.min_history)
    if min_hist.ndim != 0 or not jnp.issubdtype(min_hist.dtype, jnp.integer):
        raise TypeError("hparams.min_history must be a 0-d integer, got "
                        f"{min_hist.dtype} of shape {min_hist.shape}")
    min_hist = min_hist.astype(jnp.int32)
    false = jnp.asarray(False)

    # Non-finite values anywhere in this step's outputs.
    finite = jnp.isfinite(loss) & _tree_finite(candidate)
    if kl_arr is not None:
        finite = finite & jnp.isfinite(kl_arr)
    if reward_arr is not None:
        finite = finite & jnp.isfinite(reward_arr)
    if grads is not None:
        finite = finite & _tree_finite(grads)
    t_nonfinite = ~finite if cfg.check_nonfinite else false

    t_kl = (kl_arr > kl_threshold) if (cfg.check_kl and kl_arr is not None) else false

    loss_mean, n_loss = _window_mean(state.losses)
    t_spike = false
    if cfg.check_loss_spike:
        t_spike = (n_loss >= min_hist) & (loss - loss_mean > (spike - 1.0) * jnp.abs(loss_mean))

    reward_mean, n_reward = _window_mean(state.rewards)
    t_drop = false
    if cfg.check_reward_drop and reward_arr is not None:
        t_drop = (n_reward >= min_hist) & (
            reward_arr < reward_mean - (1.0 - drop) * jnp.abs(reward_mean))

    rollback = t_nonfinite | t_kl | t_spike | t_drop
    accept = ~rollback

    accepted = _select(rollback, state.snapshot, candidate)
    losses = _window_push(state.losses, loss, accept)
    rewards = state.rewards
    best_reward_ = state.best_reward
    best_step_ = state.best_step
    best_snap = state.best_snapshot
    if reward_arr is not None:
        rewards = _window_push(state.rewards, reward_arr, accept)
        improved = accept & (reward_arr > state.best_reward)
        best_reward_ = jnp.where(improved, reward_arr, state.best_reward)
        best_step_ = jnp.where(improved, state.step, state.best_step)
        if cfg.keep_best:
            best_snap = _select(improved, candidate, state.best_snapshot)

    rb_i32 = rollback.astype(jnp.int32)
    new_state = RollbackState(
        snapshot=accepted,
        best_snapshot=best_snap,
        losses=losses,
        rewards=rewards,
        step=state.step + 1,
        rollback_count=state.rollback_count + rb_i32,
        consecutive_rollbacks=jnp.where(rollback, state.consecutive_rollbacks + 1,
                                        jnp.zeros((), jnp.int32)),
        last_rollback_step=jnp.where(rollback, state.step, state.last_rollback_step),
        best_reward=best_reward_,
        best_step=best_step_,
    )
    metrics = {
        "rollback": rollback,
        "trigger_nonfinite": t_nonfinite,
        "trigger_kl": t_kl,
        "trigger_loss_spike": t_spike,
        "trigger_reward_drop": t_drop,
        "rollback_count": new_state.rollback_count,
        "consecutive_rollbacks": new_state.consecutive_rollbacks,
        "last_rollback_step": new_state.last_rollback_step,
        "best_reward": new_state.best_reward,
        "best_step": new_state.best_step,
        "loss_mean": loss_mean,
        "reward_mean": reward_mean,
    }
    return accepted, new_state, metrics


def rollback_count(state: RollbackState) -> jax.Array:
    """Number of rejected candidates, () int32 (batched as ``[S]`` under vmap'd states)."""
    return state.rollback_count


def last_rollback_step(state: RollbackState) -> jax.Array:
    """Update index of the most recent rejection, () int32, -1 if there was none."""
    return state.last_rollback_step


def best_reward(state: RollbackState) -> jax.Array:
    """Highest accepted reward, () float32, -inf if no reward was accepted yet."""
    return state.best_reward


def best_step(state: RollbackState) -> jax.Array:
    """Update index at which the best reward was accepted, () int32, -1 if none."""
    return state.best_step


def best_snapshot(state: RollbackState) -> PyTree:
    """Snapshot with the highest accepted reward (the initial snapshot until one is accepted).

    Raises:
      ValueError: if the state was built with ``keep_best=False``.
    """
    if state.best_snapshot is None:
        raise ValueError("best_snapshot is not tracked: build the state with "
                         "RollbackConfig(keep_best=True)")
    return state.best_snapshot


def rollback_statistics(state: RollbackState) -> dict[str, jax.Array]:
    """All counters as a dict of arrays (seed 001 ``get_statistics``).

    Returns:
      dict with ``updates`` (int32), ``rollback_count`` (int32), ``consecutive_rollbacks``
      (int32), ``last_rollback_step`` (int32), ``best_reward`` (float32), ``best_step``
      (int32), ``loss_history_len`` and ``reward_history_len`` (int32, capped at the window).
    """
    size = state.losses.values.shape[-1]
    return {
        "updates": state.step,
        "rollback_count": state.rollback_count,
        "consecutive_rollbacks": state.consecutive_rollbacks,
        "last_rollback_step": state.last_rollback_step,
        "best_reward": state.best_reward,
        "best_step": state.best_step,
        "loss_history_len": jnp.minimum(state.losses.count, size),
        "reward_history_len": jnp.minimum(state.rewards.count, size),
    }
