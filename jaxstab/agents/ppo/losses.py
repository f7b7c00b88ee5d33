"""PPO loss pieces as pure functions of batched arrays (seed 004 fixes included).

- :func:`guarded_ratio`: ``r = exp(clip(logp_new - logp_old, -c, c))`` with a non-finite guard
  (neutral ratio 1.0 where non-finite, counted) and extreme-ratio statistics.
- :func:`ppo_clip_loss`: the clipped surrogate ``-mean(min(r A, clip(r, 1-eps, 1+eps) A))``.
- :func:`kl_estimate`: k1 = ``logp_old - logp_new``; k3 = ``expm1(r) - r`` with
  ``r = logp_new - logp_old`` (Schulman 2020, "Approximating KL divergence"); both are unbiased
  for KL(old || new) under samples from the old policy, k3 is non-negative.
- :func:`exact_kl`: KL(old || new) in closed form through distrax (categorical, Gaussian).
- :func:`value_loss`: ``0.5 (V - R)^2``, optionally clipped around the old value (off by default).
- :func:`bc_loss`: behaviour-cloning negative log-likelihood of demonstration actions.

Shapes: ``B`` is the (mini)batch size; losses are means over it.
"""

from __future__ import annotations

from typing import NamedTuple

import jax
import jax.numpy as jnp

from jaxstab.agents.ppo.networks import PolicyOutput, distribution

KL_ESTIMATORS = ("k1", "k3", "exact")


def _check_same_shape(**arrays: jax.Array) -> None:
    shapes = {k: jnp.shape(v) for k, v in arrays.items()}
    if len(set(shapes.values())) != 1:
        raise ValueError(f"arguments must have the same shape, got {shapes}")


class RatioStats(NamedTuple):
    """Statistics of the importance ratio over a (mini)batch; all 0-d float32.

    Attributes:
      max: largest finite ratio (after clamp).
      min: smallest finite ratio (after clamp).
      frac_high: fraction of ratios above ``high``.
      frac_low: fraction of ratios below ``low``.
      frac_clamped: fraction of log-ratios outside ``[-log_ratio_clip, log_ratio_clip]``.
      nonfinite_count: number of non-finite ratios replaced by 1.0.
      nonfinite_frac: that number divided by ``B``.
    """

    max: jax.Array
    min: jax.Array
    frac_high: jax.Array
    frac_low: jax.Array
    frac_clamped: jax.Array
    nonfinite_count: jax.Array
    nonfinite_frac: jax.Array


def guarded_ratio(
    logp_new: jax.Array,
    logp_old: jax.Array,
    *,
    log_ratio_clip: jax.Array | float = 10.0,
    clamp: bool = True,
    high: float = 100.0,
    low: float = 0.01,
) -> tuple[jax.Array, RatioStats]:
    """Importance ratio with a log-ratio clamp before ``exp`` and a non-finite guard.

    ``l = logp_new - logp_old``; ``r = exp(clip(l, -c, c))`` if ``clamp`` else ``exp(l)``;
    entries where ``r`` is not finite become exactly 1.0 (neutral: the surrogate contributes
    ``A`` with zero gradient there). The clamp prevents overflow (``exp(88) = inf`` in float32);
    it does not bound the gradient inside the clamp range.

    Args:
      logp_new: ``[B]`` float, log-probabilities under the current policy.
      logp_old: ``[B]`` float, log-probabilities under the behaviour policy.
      log_ratio_clip: clamp half-width ``c`` (traced scalar allowed; default 10).
      clamp: apply the clamp (static).
      high, low: thresholds for the extreme-ratio fractions (static floats).

    Returns:
      ``(ratio [B], RatioStats)``.

    Raises:
      ValueError: if the shapes differ.

    Reference: seed 004 fixes #1 and "numerical checks"; Schulman et al. 2017 (PPO).

    Example:
      >>> r, stats = guarded_ratio(jnp.array([0.0, 50.0]), jnp.array([0.0, 0.0]))
      >>> # r == [1.0, exp(10)], stats.frac_clamped == 0.5
    """
    _check_same_shape(logp_new=logp_new, logp_old=logp_old)
    log_ratio = logp_new - logp_old
    c = jnp.asarray(log_ratio_clip, log_ratio.dtype)
    clamped = jnp.abs(log_ratio) > c
    if clamp:
        log_ratio = jnp.clip(log_ratio, -c, c)
    # Double-where: the masked branch must not feed NaN/inf into the gradient.
    ok = jnp.isfinite(jnp.exp(jax.lax.stop_gradient(log_ratio)))
    safe = jnp.where(ok, log_ratio, jnp.zeros_like(log_ratio))
    ratio = jnp.where(ok, jnp.exp(safe), jnp.ones_like(safe))
    n = log_ratio.size
    big = jnp.asarray(jnp.finfo(ratio.dtype).max, ratio.dtype)
    nonfinite = jnp.sum(~ok).astype(jnp.float32)
    stats = RatioStats(
        max=jnp.max(jnp.where(ok, ratio, -big)).astype(jnp.float32),
        min=jnp.min(jnp.where(ok, ratio, big)).astype(jnp.float32),
        frac_high=jnp.mean((ratio > high) & ok).astype(jnp.float32),
        frac_low=jnp.mean((ratio < low) & ok).astype(jnp.float32),
        frac_clamped=jnp.mean(clamped).astype(jnp.float32),
        nonfinite_count=nonfinite,
        nonfinite_frac=nonfinite / jnp.float32(max(n, 1)),
    )
    return ratio, stats


def ppo_clip_loss(
    ratio: jax.Array, advantages: jax.Array, clip_eps: jax.Array | float
) -> tuple[jax.Array, dict[str, jax.Array]]:
    """Clipped surrogate policy loss.

    ``L = -mean_b min(r_b A_b, clip(r_b, 1 - eps, 1 + eps) A_b)``.

    Args:
      ratio: ``[B]`` float importance ratios.
      advantages: ``[B]`` float advantages (already normalized if desired).
      clip_eps: clip range ``eps`` (traced scalar allowed).

    Returns:
      ``(loss 0-d, {"clip_fraction": mean(|r - 1| > eps)})``.

    Raises:
      ValueError: if the shapes differ.

    Reference: Schulman et al. 2017, "Proximal Policy Optimization Algorithms", eq. 7.

    Example:
      >>> loss, m = ppo_clip_loss(jnp.array([1.5]), jnp.array([1.0]), 0.2)   # loss == -1.2
    """
    _check_same_shape(ratio=ratio, advantages=advantages)
    eps = jnp.asarray(clip_eps, ratio.dtype)
    unclipped = ratio * advantages
    clipped = jnp.clip(ratio, 1.0 - eps, 1.0 + eps) * advantages
    loss = -jnp.mean(jnp.minimum(unclipped, clipped))
    clip_frac = jnp.mean((jnp.abs(ratio - 1.0) > eps).astype(ratio.dtype))
    return loss, {"clip_fraction": clip_frac}


def kl_estimate(logp_old: jax.Array, logp_new: jax.Array, estimator: str = "k3") -> jax.Array:
    """Per-sample Monte Carlo estimate of KL(old || new) from samples of the old policy.

    ``k1 = logp_old - logp_new``; ``k3 = expm1(r) - r`` with ``r = logp_new - logp_old``.

    Args:
      logp_old: ``[B]`` float.
      logp_new: ``[B]`` float.
      estimator: ``"k1"`` or ``"k3"`` (static).

    Returns:
      ``[B]`` per-sample estimates (their mean estimates the KL).

    Raises:
      ValueError: on an unknown estimator or shape mismatch.

    Reference: J. Schulman, "Approximating KL Divergence", 2020.

    Example:
      >>> kl_estimate(jnp.array([0.0]), jnp.array([-1.0]), "k3")   # expm1(-1) + 1 = e^-1
    """
    _check_same_shape(logp_old=logp_old, logp_new=logp_new)
    if estimator == "k1":
        return logp_old - logp_new
    if estimator == "k3":
        r = logp_new - logp_old
        return jnp.expm1(r) - r
    raise ValueError(f"estimator must be 'k1' or 'k3' (or 'exact' via exact_kl), got {estimator!r}")


def exact_kl(policy_kind: str, old: PolicyOutput, new: PolicyOutput) -> jax.Array:
    """Closed-form KL(old || new) per sample, via distrax.

    Categorical: ``sum_a p_old(a) (log p_old(a) - log p_new(a))``. Diagonal Gaussian:
    ``sum_d log(s_new/s_old) + (s_old^2 + (m_old - m_new)^2) / (2 s_new^2) - 1/2``. For
    ``tanh_gaussian`` this is the latent Gaussians' KL, which equals the squashed policies' KL;
    for ``softmax_gaussian`` it is the latent Gaussians' KL (an upper bound on the KL of the
    induced distributions of simplex weights, by the data-processing inequality).

    Args:
      policy_kind: ``"discrete"``, ``"gaussian"``, ``"tanh_gaussian"`` or
        ``"softmax_gaussian"``.
      old, new: :class:`PolicyOutput` with leaves ``[B, action_dim]``.

    Returns:
      ``[B]`` float KL values.

    Example:
      >>> p = PolicyOutput(jnp.zeros((1, 2)), jnp.zeros((1, 2)))
      >>> exact_kl("gaussian", p, p)   # [0.]
    """
    _check_same_shape(old_loc=old.loc, new_loc=new.loc)
    return distribution(policy_kind, old).kl_divergence(distribution(policy_kind, new))


def value_loss(
    value: jax.Array,
    value_old: jax.Array,
    returns: jax.Array,
    *,
    clip_eps: jax.Array | float = 0.2,
    clip: bool = False,
) -> tuple[jax.Array, dict[str, jax.Array]]:
    """Squared-error value loss, optionally clipped around the rollout value.

    Unclipped: ``0.5 mean (V - R)^2``. Clipped (PPO2 style):
    ``0.5 mean max((V - R)^2, (V_old + clip(V - V_old, -eps, eps) - R)^2)``.

    Args:
      value: ``[B]`` float current value predictions.
      value_old: ``[B]`` float values recorded during the rollout.
      returns: ``[B]`` float regression targets (GAE returns).
      clip_eps: value clip range (traced allowed).
      clip: enable value clipping (static, off by default).

    Returns:
      ``(loss 0-d, {"value_clip_fraction": ...})``.

    Raises:
      ValueError: on a shape mismatch.

    Example:
      >>> value_loss(jnp.array([1.0]), jnp.array([0.0]), jnp.array([0.0]))[0]   # 0.5
    """
    _check_same_shape(value=value, value_old=value_old, returns=returns)
    err = jnp.square(value - returns)
    eps = jnp.asarray(clip_eps, value.dtype)
    frac = jnp.mean((jnp.abs(value - value_old) > eps).astype(value.dtype))
    if clip:
        v_clipped = value_old + jnp.clip(value - value_old, -eps, eps)
        err = jnp.maximum(err, jnp.square(v_clipped - returns))
    return 0.5 * jnp.mean(err), {"value_clip_fraction": frac}


def bc_loss(policy_kind: str, pout: PolicyOutput, actions: jax.Array) -> jax.Array:
    """Behaviour-cloning loss ``-mean_b log pi(a_b | s_b)`` on demonstration pairs.

    Args:
      policy_kind: one of the policy kinds.
      pout: :class:`PolicyOutput` for the demonstration observations, leaves ``[D, action_dim]``.
      actions: ``[D]`` int (discrete) or ``[D, action_dim]`` float raw actions (the latent
        for ``tanh_gaussian`` and ``softmax_gaussian``: for simplex demonstrations ``w`` pass
        e.g. ``log(w)``, any latent whose softmax is ``w``).

    Returns:
      0-d loss.
    """
    return -jnp.mean(distribution(policy_kind, pout).log_prob(actions))
