"""SAC loss terms as pure functions of arrays (networks are applied by the caller).

Conventions: ``B`` batch, ``K`` critics, ``N`` atoms per critic. Shapes are checked at trace time.

- Soft TD target (twin critics): ``y = c r + gamma (1 - terminated) (min_k Q'_k(s', a') - alpha
  log pi(a'|s'))``, ``a' ~ pi(.|s')``; ``c`` is the reward scale. Only ``terminated`` stops the
  bootstrap; time-limit truncation does not.
- MSE critic loss: ``0.5 sum_k mean_b (Q_k(s, a) - y)^2`` (Stable-Baselines3's convention).
- Actor loss: ``mean_b (alpha log pi(a|s) - min_k Q_k(s, a))``, ``a ~ pi(.|s)``, alpha fixed.
- Temperature loss: ``-log_alpha * mean_b sg(log pi(a|s) + H_target)``.

Reference: Haarnoja et al., "Soft Actor-Critic Algorithms and Applications", 2018.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp


def _check(name: str, x: jax.Array, ndim: int) -> None:
    if jnp.ndim(x) != ndim:
        raise ValueError(f"{name} must have {ndim} dims, got shape {jnp.shape(x)}")


def soft_td_target(reward: jax.Array, terminated: jax.Array, next_value: jax.Array,
                   next_log_prob: jax.Array, alpha: jax.Array, gamma: jax.Array,
                   reward_scale: jax.Array = 1.0) -> jax.Array:
    """Soft Bellman target ``c r + gamma (1 - terminated) (V' - alpha log pi')``.

    Args:
      reward: ``[B]`` float.
      terminated: ``[B]`` bool or float (1 = terminal; truncation must NOT be passed here).
      next_value: ``[B]`` (reduced over critics, e.g. min of twins) or ``[B, M]`` atoms.
      next_log_prob: ``[B]`` log pi(a'|s').
      alpha, gamma, reward_scale: 0-d (traced) scalars.

    Returns:
      Target of ``next_value``'s shape, under ``stop_gradient``.

    Raises:
      ValueError: on inconsistent shapes.
    """
    _check("reward", reward, 1)
    _check("terminated", terminated, 1)
    _check("next_log_prob", next_log_prob, 1)
    if next_value.shape[0] != reward.shape[0] or next_value.ndim not in (1, 2):
        raise ValueError(f"next_value must be [B] or [B, M] with B={reward.shape[0]}, got "
                         f"{next_value.shape}")
    not_done = 1.0 - terminated.astype(reward.dtype)
    if next_value.ndim == 2:
        reward, not_done, next_log_prob = reward[:, None], not_done[:, None], next_log_prob[:, None]
    soft_v = next_value - alpha * next_log_prob
    return jax.lax.stop_gradient(reward_scale * reward + gamma * not_done * soft_v)


def mse_critic_loss(q: jax.Array, target: jax.Array) -> jax.Array:
    """``0.5 * sum_k mean_b (q[k, b] - target[b])^2``.

    Args:
      q: ``[K, B]`` critic predictions.
      target: ``[B]`` (treated as constant).

    Returns:
      0-d loss.
    """
    _check("q", q, 2)
    _check("target", target, 1)
    if q.shape[1] != target.shape[0]:
        raise ValueError(f"q {q.shape} and target {target.shape} disagree on the batch size")
    err = q - jax.lax.stop_gradient(target)[None, :]
    return 0.5 * jnp.sum(jnp.mean(jnp.square(err), axis=1))


def actor_loss(log_prob: jax.Array, q: jax.Array, alpha: jax.Array) -> jax.Array:
    """``mean_b (alpha * log_prob[b] - q[b])`` with ``alpha`` held fixed.

    Args:
      log_prob: ``[B]`` log pi(a|s) of reparameterized actions.
      q: ``[B]`` critic value of those actions (min over twins, or mean over atoms for TQC).
      alpha: 0-d temperature.

    Returns:
      0-d loss.
    """
    _check("log_prob", log_prob, 1)
    _check("q", q, 1)
    return jnp.mean(jax.lax.stop_gradient(alpha) * log_prob - q)


def temperature_loss(log_alpha: jax.Array, log_prob: jax.Array,
                     target_entropy: jax.Array) -> jax.Array:
    """``-log_alpha * mean(sg(log_prob + target_entropy))``.

    Its gradient ``-mean(log_prob + H*) = H - H*`` (with ``H = -mean log_prob``) raises alpha when
    the policy's entropy is below target and lowers it when above.

    Args:
      log_alpha: 0-d.
      log_prob: ``[B]``.
      target_entropy: 0-d.

    Returns:
      0-d loss.
    """
    _check("log_alpha", log_alpha, 0)
    _check("log_prob", log_prob, 1)
    return -log_alpha * jnp.mean(jax.lax.stop_gradient(log_prob + target_entropy))


def make_quantile_critic_loss(*, num_critics: int, num_quantiles: int, tqc_drop: int,
                              variance_scaling: str = "none", kappa: float = 1.0,
                              decay: float = 0.99):
    """TQC distributional critic loss with the seed-003 variance-scaling modes.

    With ``K`` critics of ``N`` quantile atoms each: the target critics' next-state atoms are
    pooled, sorted and the top ``tqc_drop * K`` dropped (:func:`jaxstab.losses.quantile.
    truncate_quantiles`), giving ``M = K (N - tqc_drop)`` atoms ``z_j``; the target atoms are
    ``y_j = c r + gamma (1 - terminated) (z_j - alpha log pi(a'|s'))``. Every critic's atoms are
    regressed on all target atoms with the quantile Huber loss (sum over predicted atoms, mean over
    target atoms), averaged over batch and critics, through
    :func:`jaxstab.losses.quantile.variance_scaled_quantile_loss` in mode ``variance_scaling``
    (``"none" | "seed" | "normalize"``). The actor maximizes the mean over all critics' atoms.

    Args:
      num_critics, num_quantiles, tqc_drop: ``K``, ``N``, ``d`` (static ints).
      variance_scaling: mode, see above.
      kappa: Huber threshold (relative to the spread in ``"normalize"`` mode).
      decay: EMA decay of the spread statistics.

    Returns:
      ``(init, loss, actor_value)``: ``init() -> VarianceScalingState``;
      ``loss(q [K,B,N], q_next [K,B,N], batch, next_log_prob [B], alpha, hparams, state) ->
      (loss, (metrics, new_state))`` with metrics ``q_mean``, ``target_q_mean`` and ``vs_*``
      (weight and spread statistics); ``actor_value(q [K,B,N]) -> [B]``.
    """
    from jaxstab.losses.quantile import (
        truncate_quantiles,
        variance_scaled_quantile_loss,
        variance_scaling_init,
    )

    del num_critics, num_quantiles  # shapes are read from the arrays

    def init():
        return variance_scaling_init(jnp.float32)

    def loss(q, q_next, batch, next_log_prob, alpha, hparams, state):
        if q.ndim != 3 or q_next.shape != q.shape:
            raise ValueError(f"q and q_next must be [K, B, N] and equal, got {q.shape}, "
                             f"{q_next.shape}")
        atoms = truncate_quantiles(jnp.swapaxes(q_next, 0, 1), tqc_drop)  # [B, M]
        target = soft_td_target(batch.reward, batch.terminated, atoms, next_log_prob, alpha,
                                hparams.gamma, hparams.reward_scale)
        pred = jnp.swapaxes(q, 0, 1)  # [B, K, N]
        value, new_state, vs = variance_scaled_quantile_loss(
            pred, target[:, None, :], state, mode=variance_scaling, kappa=kappa, decay=decay)
        metrics = {"q_mean": jnp.mean(q), "target_q_mean": jnp.mean(target),
                   **{"vs_" + k: v for k, v in vs.items()}}
        return value, (metrics, new_state)

    def actor_value(q):
        return jnp.mean(q, axis=(0, 2))

    return init, loss, actor_value


__all__ = ["actor_loss", "make_quantile_critic_loss", "mse_critic_loss", "soft_td_target",
           "temperature_loss"]
