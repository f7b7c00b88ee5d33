"""SAC policy distributions: tanh-squashed Gaussian, projected Gaussian, logistic normal.

Every policy maps a Gaussian in a *latent* space ``u ~ N(mean, diag(exp(log_std))^2)``
(reparameterized: ``u = mean + exp(log_std) * eps``, ``eps = jax.random.normal(key, mean.shape)``)
to an action, and reports a log-probability used by SAC's entropy terms. What that
log-probability (and hence "entropy" ``H = -E[log pi]``) means differs:

``"tanh_gaussian"`` (box actions in ``[-1, 1]^d``; latent dim ``d``)
  ``a = tanh(u)``; exact density of ``a`` w.r.t. Lebesgue measure on ``(-1,1)^d``:
  ``log pi(a) = log N(u) - sum_i log(1 - tanh(u_i)^2)``, the log-det in the stable form
  ``log(1 - tanh(u)^2) = 2 (log 2 - u - softplus(-2u))``. Entropy is the differential
  entropy of the action. Default target entropy ``-d`` (Haarnoja et al. 2018).

``"projected_gaussian"`` (simplex actions, seed 000 Tier 1; latent dim ``n``)
  ``a = argmin_{w in simplex} ||w - u||`` (Euclidean projection, Duchi et al. 2008);
  ``log pi = log N(u; mean, sigma)``, the log-density of the LATENT, not of the action (the
  action has no density: the projection is many-to-one and puts mass on faces of the simplex).
  "Entropy" is therefore the latent Gaussian's entropy ``sum_i (0.5 log(2 pi e) + log sigma_i)``;
  it can be raised along directions the projection ignores (the all-ones direction, coordinates
  pushed below zero) without changing behaviour. SAC's usual ``-n`` target entropy implies
  ``sigma = exp(-1) / sqrt(2 pi e) ~ 0.09`` per coordinate whatever ``n``: noise comparable to or
  larger than weights of size ``1/n``. The default target here instead fixes the latent
  noise relative to the action scale: ``sigma* = relative_scale / n``, i.e.
  ``H* = n (0.5 log(2 pi e) + log(relative_scale / n))``.

``"logistic_normal"`` (simplex actions with an exact density; latent dim ``n - 1``)
  Additive log-ratio parameterization with the last coordinate as reference:
  ``a = softmax([u_1, ..., u_{n-1}, 0])``, so ``u_i = log(a_i / a_n)``. Its density w.r.t.
  Lebesgue measure on the first ``n - 1`` coordinates ``(a_1..a_{n-1})`` of the open simplex is
  ``log pi(a) = log N(u; mean, sigma) - sum_{i=1}^{n} log a_i`` (Aitchison & Shen 1980; the
  Jacobian of ``a -> u`` has determinant ``1 / prod_{i=1}^n a_i``). Entropy is the differential
  entropy on that (n-1)-dimensional chart: ``H(a) = H(u) + E[sum_i log a_i]``. Its maximum,
  the uniform distribution on the simplex, is ``log(1/(n-1)!)`` (so targets above that are
  unreachable and drive alpha to infinity). Near the centre ``a ~ 1/n`` a latent std ``s``
  moves each weight by about ``s`` of its size, so the default target is the entropy of that
  distribution centred at the uniform allocation (to leading order in ``s``):
  ``H* = (n-1)(0.5 log(2 pi e) + log relative_scale) - n log n``. Note that ``H(a)`` depends on
  the location: a concentrated allocation has much lower entropy than a diversified one with the
  same latent noise, so the entropy bonus also favours diversification.

``"softmax_gaussian"`` (simplex actions; latent dim ``n``; seed 000 BEFORE its Tier 1 fix)
  ``a = softmax(u)`` with an ``n``-dimensional latent and the seed's "Jacobian approximation"
  ``log pi = log N(u; mean, sigma) - sum_{i=1}^n log a_i``. This is NOT a density of ``a``:
  softmax is invariant to ``u + t 1``, so ``n`` latent dimensions map onto an ``(n-1)``-dimensional
  simplex (the formula is the logistic normal's with one redundant latent direction, along which
  entropy can be bought for free). Kept for reproduction and ablation (IRT's
  ``use_projection=False``). Default target entropy: the logistic-normal rule with ``n`` latent
  dimensions, ``n (0.5 log(2 pi e) + log relative_scale) - n log n``.

The deterministic ("mode") action used for evaluation maps the latent mean through the same
squashing (for the logistic normal this is the median-like image of the mean, not the density's
mode).
"""

from __future__ import annotations

import math
from typing import Callable, NamedTuple

import jax
import jax.numpy as jnp

POLICY_KINDS = ("tanh_gaussian", "projected_gaussian", "logistic_normal", "softmax_gaussian")
SIMPLEX_POLICY_KINDS = ("projected_gaussian", "logistic_normal", "softmax_gaussian")
DEFAULT_RELATIVE_SCALE = 0.25
_HALF_LOG_2PI = 0.5 * math.log(2.0 * math.pi)


def gaussian_log_prob(u: jax.Array, mean: jax.Array, log_std: jax.Array) -> jax.Array:
    """Diagonal Gaussian log-density summed over the last axis.

    ``sum_i -0.5 ((u_i - mu_i)/sigma_i)^2 - log sigma_i - 0.5 log(2 pi)``.

    Args:
      u, mean, log_std: ``[..., k]`` float arrays (same shape).

    Returns:
      ``[...]`` log-density, dtype of ``u``.
    """
    z = (u - mean) * jnp.exp(-log_std)
    return jnp.sum(-0.5 * jnp.square(z) - log_std - _HALF_LOG_2PI, axis=-1)


def tanh_log_det_jacobian(u: jax.Array) -> jax.Array:
    """Elementwise ``log(1 - tanh(u)^2)`` in the stable form ``2 (log 2 - u - softplus(-2u))``.

    The naive form underflows to ``log(0) = -inf`` once ``|u| > ~9`` in float32; this one is exact
    and finite for all finite ``u``.

    Args:
      u: pre-squash latent, any shape, float.

    Returns:
      Same shape and dtype as ``u``.

    Example:
      >>> tanh_log_det_jacobian(jnp.array([0.0, 20.0]))  # [0, -38.6...]
    """
    return 2.0 * (math.log(2.0) - u - jax.nn.softplus(-2.0 * u))


class Policy(NamedTuple):
    """A squashed-Gaussian policy family (pure functions; no parameters).

    Attributes:
      kind: one of ``POLICY_KINDS``.
      action_dim: action dimension ``n``.
      latent_dim: Gaussian latent dimension (``n``, or ``n - 1`` for the logistic normal).
      sample: ``(mean [..., k], log_std [..., k], key) -> (action [..., n], log_prob [...])``.
      mode: ``mean [..., k] -> action [..., n]`` deterministic action.
      random_action: ``(key, batch_shape) -> action [*batch_shape, n]`` for warm-up
        (uniform on ``[-1,1]^n`` for box actions, Dirichlet(1) i.e. uniform on the simplex).
    """

    kind: str
    action_dim: int
    latent_dim: int
    sample: Callable[[jax.Array, jax.Array, jax.Array], tuple[jax.Array, jax.Array]]
    mode: Callable[[jax.Array], jax.Array]
    random_action: Callable[[jax.Array, tuple[int, ...]], jax.Array]


def _latent(mean: jax.Array, log_std: jax.Array, key: jax.Array) -> tuple[jax.Array, jax.Array]:
    eps = jax.random.normal(key, mean.shape, mean.dtype)
    u = mean + jnp.exp(log_std) * eps
    return u, gaussian_log_prob(u, mean, log_std)


def _simplex_projection() -> Callable[[jax.Array], jax.Array]:
    from jaxstab.ops.simplex import project_simplex  # imported lazily: a sibling module

    return project_simplex


def _uniform_simplex(key: jax.Array, shape: tuple[int, ...], n: int) -> jax.Array:
    e = jax.random.exponential(key, shape + (n,))
    return e / jnp.sum(e, axis=-1, keepdims=True)


def make_policy(kind: str, action_dim: int) -> Policy:
    """Build the policy family ``kind`` for ``action_dim``-dimensional actions.

    Args:
      kind: ``"tanh_gaussian" | "projected_gaussian" | "logistic_normal" | "softmax_gaussian"``.
      action_dim: action dimension (>= 1; >= 2 for the simplex policies).

    Returns:
      A :class:`Policy`.

    Raises:
      ValueError: unknown ``kind`` or too small ``action_dim``.
    """
    if kind not in POLICY_KINDS:
        raise ValueError(f"kind must be one of {POLICY_KINDS}, got {kind!r}")
    if not isinstance(action_dim, int) or action_dim < 1:
        raise ValueError(f"action_dim must be a positive int, got {action_dim!r}")
    n = action_dim

    if kind == "tanh_gaussian":
        def sample(mean, log_std, key):
            u, logp = _latent(mean, log_std, key)
            return jnp.tanh(u), logp - jnp.sum(tanh_log_det_jacobian(u), axis=-1)

        def random_action(key, shape):
            return jax.random.uniform(key, tuple(shape) + (n,), minval=-1.0, maxval=1.0)

        return Policy(kind, n, n, sample, jnp.tanh, random_action)

    if n < 2:
        raise ValueError(f"action_dim must be >= 2 for simplex policy {kind!r}, got {n}")

    def random_simplex(key, shape):
        return _uniform_simplex(key, tuple(shape), n)

    if kind == "softmax_gaussian":
        def sample(mean, log_std, key):
            u, logp = _latent(mean, log_std, key)
            log_a = jax.nn.log_softmax(u, axis=-1)
            return jnp.exp(log_a), logp - jnp.sum(log_a, axis=-1)

        def mode(mean):
            return jax.nn.softmax(mean, axis=-1)

        return Policy(kind, n, n, sample, mode, random_simplex)

    if kind == "projected_gaussian":
        def sample(mean, log_std, key):
            u, logp = _latent(mean, log_std, key)
            return _simplex_projection()(u), logp

        def mode(mean):
            return _simplex_projection()(mean)

        return Policy(kind, n, n, sample, mode, random_simplex)

    def to_simplex(u):
        return jax.nn.softmax(jnp.concatenate([u, jnp.zeros_like(u[..., :1])], axis=-1), axis=-1)

    def sample(mean, log_std, key):
        u, logp = _latent(mean, log_std, key)
        full = jnp.concatenate([u, jnp.zeros_like(u[..., :1])], axis=-1)
        log_a = jax.nn.log_softmax(full, axis=-1)
        return jnp.exp(log_a), logp - jnp.sum(log_a, axis=-1)

    return Policy(kind, n, n - 1, sample, to_simplex, random_simplex)


def default_target_entropy(kind: str, action_dim: int,
                           relative_scale: float = DEFAULT_RELATIVE_SCALE) -> float:
    """A sound default SAC target entropy for policy ``kind`` (see the module docstring).

    - ``tanh_gaussian``: ``-n``.
    - ``projected_gaussian``: ``n (0.5 log(2 pi e) + log(relative_scale / n))`` (latent sigma
      ``relative_scale / n``, relative to weights of size ``1/n``). The seed's ``-n`` is available
      by passing ``target_entropy=-n`` in the hyperparameters.
    - ``logistic_normal``: ``(n-1)(0.5 log(2 pi e) + log relative_scale) - n log n``.
    - ``softmax_gaussian``: ``n (0.5 log(2 pi e) + log relative_scale) - n log n`` (the seed used
      ``-n``; pass it explicitly to reproduce).

    Args:
      kind: policy kind.
      action_dim: ``n``.
      relative_scale: target noise relative to the action scale (simplex policies only).

    Returns:
      Python float.

    Raises:
      ValueError: unknown kind or non-positive ``relative_scale``.
    """
    if kind not in POLICY_KINDS:
        raise ValueError(f"kind must be one of {POLICY_KINDS}, got {kind!r}")
    if not relative_scale > 0:
        raise ValueError(f"relative_scale must be > 0, got {relative_scale!r}")
    n = action_dim
    half_log_2pie = 0.5 * math.log(2.0 * math.pi * math.e)
    if kind == "tanh_gaussian":
        return -float(n)
    if kind == "projected_gaussian":
        return n * (half_log_2pie + math.log(relative_scale / n))
    if kind == "softmax_gaussian":
        return n * (half_log_2pie + math.log(relative_scale)) - n * math.log(n)
    return (n - 1) * (half_log_2pie + math.log(relative_scale)) - n * math.log(n)


__all__ = ["DEFAULT_RELATIVE_SCALE", "POLICY_KINDS", "SIMPLEX_POLICY_KINDS", "Policy",
           "default_target_entropy", "gaussian_log_prob", "make_policy", "tanh_log_det_jacobian"]
