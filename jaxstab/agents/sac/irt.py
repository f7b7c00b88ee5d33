"""IRT policy head: optimal transport and replicator dynamics over learnable prototypes.

The "IRT" actor of seed 000, rebuilt only from :mod:`jaxstab.ops` (``sinkhorn`` with implicit
gradients, ``replicator_step``) and fed into SAC's simplex policies. For one observation ``s``
(observation vector ``o``, environment crisis level ``c = o[crisis_index]`` in ``[0, 1]``) and
the previous prototype weights ``w_prev`` (the POLICY STATE, on the M-simplex):

1. Encoder and tokens. ``h = relu-MLP(o)``; ``m`` "epitope" tokens ``t_i = (W_t h + b_t)_i``
   in ``R^d`` (``i = 1..m``).
2. Prototypes. ``M`` learnable prototypes, each an embedding ``p_j in R^d`` and a latent
   action mean ``mu_j in R^k`` (``k`` = latent dimension of the simplex policy).
3. Cost. Cosine cost ``C_ij = 1 - <t_i, p_j> / (|t_i| |p_j|)`` in ``[0, 2]``.
4. Optimal transport (``use_ot``). A balanced plan between tokens with marginal ``1/m`` each
   and prototypes with marginal ``1/M`` each has column sums ``1/M`` WHATEVER the cost: the
   literal "OT mass per prototype = column sums of the plan" is constant and carries no
   information about the state. We therefore solve the entropic *partial* transport of the
   tokens' unit mass into prototypes of capacity ``kappa / M`` each (``kappa = ot_capacity >
   1``), written as a balanced problem with one dummy token of mass ``kappa - 1`` (Chapel et
   al. 2020): rows ``a = (1/m, ..., 1/m, kappa - 1)``, columns ``b = (kappa/M, ...)``, the
   dummy row's cost is 0 (a row-constant cost does not change the plan)::

       P = sinkhorn([C; 0], a, b, eps).plan            [(m + 1) x M]
       w_ot_j = sum_{i <= m} P_ij / sum_{i <= m, l} P_il

   i.e. the column sums of the plan restricted to the real tokens: how much of the state's
   mass each prototype absorbs. ``kappa -> 1`` gives the uniform (uninformative) readout,
   large ``kappa`` approaches each token's soft nearest prototype. Gradients flow through
   Sinkhorn by implicit differentiation (``sinkhorn_implicit=True``, seed Tier 4) or by
   unrolled autodiff of exactly ``sinkhorn_max_iters`` iterations (``False``).
5. Replicator (``use_replicator``). Fitness ``f = W_f h + b_f in R^M`` from a learned head;
   one clipped, crisis-heated replicator step (seed Tier 2, :func:`jaxstab.ops.replicator_step`)::

       w_rep = softmax(log w_prev + eta(c) clip(f - <w_prev, f>, -A, A)),
       eta(c) = eta0 + eta1 clip(c, 0, c_max).

   The seed's alternative of fitness from the critic (``f_j = Q(s, action of prototype j)``) is
   NOT implemented: it makes the actor depend on the critic parameters inside SAC's actor loss;
   the learned head is trained end to end by the actor loss instead.
6. Mixing. ``w = (1 - alpha) w_rep + alpha w_ot`` (``alpha`` default 0.3); with only one of the
   two pieces enabled, ``w`` is that piece; with NEITHER, ``w = softmax(f)``: a memoryless
   softmax gate over the prototypes (the replicator step from uniform weights with ``eta = 1``
   and no clipping). ``w`` is also the next policy state.
7. Action distribution. Latent mean ``mean = sum_j w_j mu_j``, ``log_std`` from a head squashed
   into ``[log_std_min, log_std_max]``; the simplex policy (``SACConfig.policy``: the projected
   Gaussian of seed Tier 1 or the exact-density logistic normal; ``use_projection=False``
   switches to the seed's original softmax policy, ``"softmax_gaussian"``) turns
   ``(mean, log_std)`` into an allocation and a log-probability.

Policy state in SAC. The policy is recurrent through ``w_prev``, so the agent's Markov state is
``(o, w_prev)``: the training loop keeps ``policy_state [num_envs, M]`` (uniform ``1/M`` at every
episode start), and the replay buffer stores AUGMENTED observations ``[o, w_prev]`` and
``[o', w]`` (``w`` the state the actor produced while acting, as in R2D2's "stored state").
Critics see the augmented observation too, which is correct: the value of a stateful policy
depends on its state. :class:`IRTActor` is called as ``(obs, policy_state) -> (mean, log_std,
new_policy_state)``; the SAC update splits augmented observations itself.

Cost: with ``use_ot`` every actor call solves ``B`` small ``(m + 1) x M`` Sinkhorn problems
(``sinkhorn_max_iters`` caps the loop); ``sinkhorn_implicit=True`` adds one dense
``min(m + 1, M)``-sized Cholesky solve per problem in the forward (Newton polish) and in the
backward pass. On the CPU these are batched LAPACK calls (``potrf``/``trsm``); under ``vmap``
over seeds they run through the same batched-kernel path as the QR behind the jax 0.10.2 CPU
hang (README platform note). A vmapped 8-seed SAC+IRT training finished in 9 of 9 tries on a
2-core machine (no hang observed), but that is evidence, not proof.

References: Cuturi (2013); Chapel, Alaya & Gasso (2020), "Partial optimal transport with
applications on positive-unlabeled learning" (dummy-point reduction); Hofbauer & Sigmund (1998);
seed 000 (Tiers 1, 2, 4).
"""

from __future__ import annotations

import dataclasses
from typing import Sequence

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np

from jaxstab.agents.common import orthogonal_init
from jaxstab.ops.replicator import replicator_step
from jaxstab.ops.sinkhorn import sinkhorn


@dataclasses.dataclass(frozen=True)
class IRTConfig:
    """Static choices of the IRT policy head (frozen, hashable; every piece switchable).

    Attributes:
      num_tokens: number of "epitope" tokens ``m``.
      token_dim: token and prototype embedding dimension ``d``.
      num_prototypes: number of prototypes ``M`` (= policy-state dimension).
      alpha: OT share of the mixture ``w = (1 - alpha) w_rep + alpha w_ot``, in ``[0, 1]``.
      use_ot: include the optimal-transport readout ``w_ot``.
      use_replicator: include the replicator step ``w_rep``.
      use_projection: use ``SACConfig.policy`` (projected Gaussian / logistic normal); False
        switches to the seed's pre-fix softmax policy (``"softmax_gaussian"``).
      sinkhorn_implicit: implicit Sinkhorn gradients (True) or unrolled autodiff through a fixed
        ``sinkhorn_max_iters`` iterations (False).
      sinkhorn_eps: entropic regularization (costs lie in ``[0, 2]``).
      sinkhorn_max_iters: Sinkhorn iteration cap (the exact count when unrolled).
      sinkhorn_tol: relative marginal tolerance (None: 1e-5 in float32, 1e-9 in float64).
      ot_capacity: total prototype capacity ``kappa > 1`` of the partial transport (see the
        module docstring).
      eta0, eta1: replicator step size ``eta(c) = eta0 + eta1 clip(c, 0, crisis_max)``.
      advantage_clip: replicator advantage clip ``A`` (seed Tier 2: 10).
      crisis_max: crisis saturation level (seed Tier 2: 1).
      replicator_floor: uniform floor mixed into ``w_prev`` before its log.
      crisis_index: index of the crisis level in the (raw) observation's last axis (default
        -1: the last element); None: no crisis signal (``c = 0``).
      prototype_scale: std of the initial prototype action means ``mu_j``.
    """

    num_tokens: int = 4
    token_dim: int = 16
    num_prototypes: int = 8
    alpha: float = 0.3
    use_ot: bool = True
    use_replicator: bool = True
    use_projection: bool = True
    sinkhorn_implicit: bool = True
    sinkhorn_eps: float = 0.1
    sinkhorn_max_iters: int = 50
    sinkhorn_tol: float | None = None
    ot_capacity: float = 2.0
    eta0: float = 0.5
    eta1: float = 1.0
    advantage_clip: float = 10.0
    crisis_max: float = 1.0
    replicator_floor: float = 1e-6
    crisis_index: int | None = -1
    prototype_scale: float = 0.1

    def __post_init__(self) -> None:
        for name in ("num_tokens", "token_dim", "num_prototypes", "sinkhorn_max_iters"):
            v = getattr(self, name)
            if not isinstance(v, int) or isinstance(v, bool) or v < 1:
                raise ValueError(f"IRTConfig.{name} must be a positive int, got {v!r}")
        if self.num_prototypes < 2:
            raise ValueError(f"IRTConfig.num_prototypes must be >= 2, got {self.num_prototypes}")
        for name in ("use_ot", "use_replicator", "use_projection", "sinkhorn_implicit"):
            if not isinstance(getattr(self, name), bool):
                raise TypeError(f"IRTConfig.{name} must be a bool, got {getattr(self, name)!r}")
        if not 0.0 <= self.alpha <= 1.0:
            raise ValueError(f"IRTConfig.alpha must be in [0, 1], got {self.alpha!r}")
        if not self.sinkhorn_eps > 0:
            raise ValueError(f"IRTConfig.sinkhorn_eps must be > 0, got {self.sinkhorn_eps!r}")
        if self.sinkhorn_tol is not None and not self.sinkhorn_tol >= 0:
            raise ValueError(f"IRTConfig.sinkhorn_tol must be >= 0 or None, got "
                             f"{self.sinkhorn_tol!r}")
        if not self.ot_capacity > 1.0:
            raise ValueError(f"IRTConfig.ot_capacity must be > 1, got {self.ot_capacity!r}")
        for name in ("advantage_clip", "crisis_max", "prototype_scale"):
            if not getattr(self, name) >= 0:
                raise ValueError(f"IRTConfig.{name} must be >= 0, got {getattr(self, name)!r}")
        if not 0.0 <= self.replicator_floor < 1.0:
            raise ValueError(f"IRTConfig.replicator_floor must be in [0, 1), got "
                             f"{self.replicator_floor!r}")
        if not (np.isfinite(self.eta0) and np.isfinite(self.eta1)):
            raise ValueError("IRTConfig.eta0 and eta1 must be finite")
        if self.crisis_index is not None and (not isinstance(self.crisis_index, int)
                                              or isinstance(self.crisis_index, bool)):
            raise TypeError(f"IRTConfig.crisis_index must be an int or None, got "
                            f"{self.crisis_index!r}")


def ot_prototype_weights(tokens: jax.Array, prototypes: jax.Array, cfg: IRTConfig) -> jax.Array:
    """OT readout ``w_ot``: mass each prototype absorbs from the tokens (partial transport).

    ``C_ij = 1 - cos(t_i, p_j)``; ``P = sinkhorn([C; 0], (1/m,..,1/m, kappa-1), (kappa/M,..))``;
    ``w_ot_j = sum_{i<=m} P_ij / sum_{i<=m,l} P_il`` (see the module docstring).

    Args:
      tokens: ``[..., m, d]`` float tokens.
      prototypes: ``[M, d]`` prototype embeddings.
      cfg: :class:`IRTConfig` (Sinkhorn settings, ``ot_capacity``).

    Returns:
      ``[..., M]`` weights on the simplex, dtype of ``tokens``.

    Raises:
      ValueError: mismatched embedding dimensions.

    Example:
      >>> w = ot_prototype_weights(jnp.ones((2, 3, 4)), jnp.eye(5, 4), IRTConfig(num_prototypes=5))
    """
    if tokens.ndim < 2 or prototypes.ndim != 2 or tokens.shape[-1] != prototypes.shape[-1]:
        raise ValueError(f"tokens [..., m, d] and prototypes [M, d] must share d, got "
                         f"{tokens.shape} and {prototypes.shape}")
    dtype = tokens.dtype
    m, big_m = tokens.shape[-2], prototypes.shape[0]
    batch = tokens.shape[:-2]
    tiny = jnp.asarray(1e-12, dtype)
    t_hat = tokens * jax.lax.rsqrt(jnp.sum(jnp.square(tokens), -1, keepdims=True) + tiny)
    p_hat = prototypes * jax.lax.rsqrt(jnp.sum(jnp.square(prototypes), -1, keepdims=True) + tiny)
    cost = 1.0 - jnp.einsum("...id,jd->...ij", t_hat, p_hat.astype(dtype))
    cost = jnp.concatenate([cost, jnp.zeros(batch + (1, big_m), dtype)], axis=-2)
    kappa = cfg.ot_capacity
    a = jnp.concatenate([jnp.full((m,), 1.0 / m, dtype), jnp.full((1,), kappa - 1.0, dtype)])
    b = jnp.full((big_m,), kappa / big_m, dtype)
    a = jnp.broadcast_to(a, batch + (m + 1,))
    b = jnp.broadcast_to(b, batch + (big_m,))
    out = sinkhorn(cost, a, b, jnp.asarray(cfg.sinkhorn_eps, dtype),
                   max_iters=cfg.sinkhorn_max_iters, tol=cfg.sinkhorn_tol,
                   implicit=cfg.sinkhorn_implicit)
    mass = jnp.sum(out.plan[..., :m, :], axis=-2)
    return mass / jnp.sum(mass, axis=-1, keepdims=True)


def mix_prototype_weights(w_prev: jax.Array, fitness: jax.Array, crisis: jax.Array,
                          w_ot: jax.Array | None, cfg: IRTConfig) -> jax.Array:
    """Prototype weights ``w`` from the replicator step and/or the OT readout (module step 6).

    Args:
      w_prev: ``[..., M]`` previous weights (policy state).
      fitness: ``[..., M]`` fitness from the learned head.
      crisis: ``[...]`` crisis level.
      w_ot: ``[..., M]`` OT readout, or None when ``cfg.use_ot`` is False.
      cfg: :class:`IRTConfig`.

    Returns:
      ``[..., M]`` weights on the simplex.
    """
    if cfg.use_replicator:
        w_rep = replicator_step(w_prev, fitness, crisis, eta0=cfg.eta0, eta1=cfg.eta1,
                                advantage_clip=cfg.advantage_clip, crisis_max=cfg.crisis_max,
                                floor=cfg.replicator_floor)
        if cfg.use_ot:
            return (1.0 - cfg.alpha) * w_rep + cfg.alpha * w_ot
        return w_rep
    if cfg.use_ot:
        return w_ot
    return jax.nn.softmax(fitness, axis=-1)


class IRTActor(nn.Module):
    """IRT actor: ``(obs, policy_state) -> (mean, log_std, new_policy_state)``.

    See the module docstring for the equations.

    Attributes:
      hidden_sizes: encoder widths (relu MLP, LAPACK-free orthogonal init).
      latent_dim: Gaussian latent dimension ``k`` of the simplex policy.
      irt: :class:`IRTConfig`.
      log_std_min, log_std_max: bounds of ``log_std``.

    Call:
      ``obs [..., obs_dim]`` (raw observation, crisis level at ``irt.crisis_index``),
      ``policy_state [..., M]`` (previous prototype weights) ->
      ``mean [..., k]``, ``log_std [..., k]``, ``new_policy_state [..., M]`` (weights ``w``).
    """

    hidden_sizes: Sequence[int]
    latent_dim: int
    irt: IRTConfig = IRTConfig()
    log_std_min: float = -5.0
    log_std_max: float = 2.0

    @property
    def policy_state_dim(self) -> int:
        """Size ``M`` of the carried policy state."""
        return self.irt.num_prototypes

    def initial_policy_state(self, batch_shape: tuple[int, ...] = (),
                             dtype=jnp.float32) -> jax.Array:
        """Uniform prototype weights ``1/M``, shape ``[*batch_shape, M]``."""
        m = self.irt.num_prototypes
        return jnp.full(tuple(batch_shape) + (m,), 1.0 / m, dtype)

    @nn.compact
    def __call__(self, obs: jax.Array, policy_state: jax.Array
                 ) -> tuple[jax.Array, jax.Array, jax.Array]:
        cfg = self.irt
        big_m, k = cfg.num_prototypes, self.latent_dim
        if obs.ndim < 1 or policy_state.ndim < 1:
            raise ValueError(f"obs and policy_state need a last axis, got {obs.shape} and "
                             f"{policy_state.shape}")
        if policy_state.shape[-1] != big_m:
            raise ValueError(f"policy_state must have last dim num_prototypes={big_m}, got "
                             f"shape {policy_state.shape}")
        if policy_state.shape[:-1] != obs.shape[:-1]:
            raise ValueError(f"obs {obs.shape} and policy_state {policy_state.shape} must share "
                             "the batch shape")
        if cfg.crisis_index is not None and not -obs.shape[-1] <= cfg.crisis_index < obs.shape[-1]:
            raise ValueError(f"crisis_index {cfg.crisis_index} out of range for obs of shape "
                             f"{obs.shape}")
        h = obs
        for width in self.hidden_sizes:
            h = nn.relu(nn.Dense(width, kernel_init=orthogonal_init(np.sqrt(2.0)))(h))
        dtype = h.dtype
        mu = self.param("prototype_means", nn.initializers.normal(cfg.prototype_scale),
                        (big_m, k)).astype(dtype)

        w_ot = None
        if cfg.use_ot:
            m, d = cfg.num_tokens, cfg.token_dim
            tokens = nn.Dense(m * d, kernel_init=orthogonal_init(1.0), name="tokens")(h)
            tokens = tokens.reshape(tokens.shape[:-1] + (m, d))
            protos = self.param("prototypes", nn.initializers.normal(1.0), (big_m, d))
            w_ot = ot_prototype_weights(tokens, protos.astype(dtype), cfg)
        fitness = jnp.zeros(h.shape[:-1] + (big_m,), dtype)
        if cfg.use_replicator or not cfg.use_ot:
            fitness = nn.Dense(big_m, kernel_init=orthogonal_init(0.1), name="fitness")(h)
        if cfg.crisis_index is None:
            crisis = jnp.zeros(obs.shape[:-1], dtype)
        else:
            crisis = obs[..., cfg.crisis_index].astype(dtype)
        w = mix_prototype_weights(policy_state.astype(dtype), fitness, crisis, w_ot, cfg)

        mean = jnp.einsum("...j,jk->...k", w, mu)
        raw = nn.Dense(k, kernel_init=orthogonal_init(0.01), name="log_std")(h)
        lo, hi = self.log_std_min, self.log_std_max
        log_std = lo + 0.5 * (hi - lo) * (jnp.tanh(raw) + 1.0)
        return mean, log_std, w


__all__ = ["IRTActor", "IRTConfig", "mix_prototype_weights", "ot_prototype_weights"]
