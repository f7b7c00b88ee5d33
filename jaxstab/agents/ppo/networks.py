"""PPO actor-critic networks as ``init``/``apply`` pairs, and their action distributions.

Three policy kinds share one interface:

- ``"discrete"``: categorical over ``action_dim`` actions, parameterized by logits.
- ``"gaussian"``: diagonal Gaussian with a state-independent log standard deviation. The
  environment receives the sample clipped to the action bounds; the log-probability is that of
  the unclipped sample (the usual PPO convention).
- ``"tanh_gaussian"``: the same Gaussian in a latent space ``u``; the environment receives
  ``low + (tanh(u) + 1) (high - low) / 2``. The rollout stores the *latent* ``u``: the ratio
  ``pi_new(a)/pi_old(a)`` is the ratio of the latent densities (the tanh Jacobian does not depend
  on the parameters and cancels), the KL between two tanh-Gaussians equals the KL between their
  latent Gaussians (KL is invariant under an invertible map), and no ``atanh`` of a saturated
  action is ever taken. The entropy bonus uses the latent Gaussian's entropy (the squashed
  entropy has no closed form; this is the common choice, e.g. in CleanRL-style tanh policies).
- ``"softmax_gaussian"``: simplex actions (portfolio weights). A Gaussian over ``action_dim``
  logits ``u``; the environment receives ``softmax(u)`` (bounds of the action space are
  ignored: the action lies on the probability simplex). The rollout stores the latent ``u``
  and the PPO ratio, KL and entropy are those of the latent Gaussian. This is exact, not an
  approximation: treat ``softmax`` as part of the environment, then the agent acts in
  ``R^action_dim`` with a Gaussian policy whose density is known exactly, and the policy
  gradient of that (equivalent) problem is the one PPO estimates. (The softmax is not
  invertible, since ``u + c 1`` gives the same weights, so no density of the weights
  themselves is needed or used.) Caveat: the latent direction ``1`` does not change
  behaviour, so an entropy bonus can raise the entropy along it for free (it makes
  ``log_std`` grow without exploring); prefer a small ``ent_coef`` (or 0).

The critic head is either ``"scalar"`` (one value) or ``"quantile"`` (``num_quantiles`` atoms at
midpoints ``tau_i = (2i-1)/(2N)``; the value is their mean).
"""

from __future__ import annotations

from typing import Any, Callable, NamedTuple

import distrax
import flax.linen as nn
import jax
import jax.numpy as jnp

from jaxstab.agents.common import MLP

POLICY_KINDS = ("discrete", "gaussian", "tanh_gaussian", "softmax_gaussian")
VALUE_KINDS = ("scalar", "quantile")
ACTIVATIONS = {"tanh": nn.tanh, "relu": nn.relu}


class PolicyOutput(NamedTuple):
    """Distribution parameters produced by the actor.

    Attributes:
      loc: ``[..., action_dim]`` float: logits (discrete) or latent Gaussian mean.
      log_std: ``[..., action_dim]`` float: latent log standard deviation (zeros for discrete,
        where it is unused).
    """

    loc: jax.Array
    log_std: jax.Array


class PPONetworks(NamedTuple):
    """Pure functions of the PPO actor-critic.

    Attributes:
      init: ``init(key, obs) -> params`` for one example observation ``[obs_dim]``.
      apply: ``apply(params, obs) -> (PolicyOutput, value_out)`` for ``obs [..., obs_dim]``;
        ``value_out`` is ``[...]`` (scalar head) or ``[..., num_quantiles]`` (quantile head).
      apply_policy: ``apply_policy(params, obs) -> PolicyOutput``, the actor alone (the same
        numbers as ``apply(params, obs)[0]``; the rollout and evaluation need nothing else).
      apply_value: ``apply_value(params, obs) -> value_out``, the critic alone (the same numbers
        as ``apply(params, obs)[1]``).
      policy_kind: one of :data:`POLICY_KINDS`.
      value_kind: one of :data:`VALUE_KINDS`.
      action_dim: number of discrete actions or continuous action dimensions.
      obs_dim: flat observation size.
      num_quantiles: atoms of the quantile head (1 for the scalar head).
    """

    init: Callable[[jax.Array, jax.Array], Any]
    apply: Callable[[Any, jax.Array], tuple[PolicyOutput, jax.Array]]
    apply_policy: Callable[[Any, jax.Array], PolicyOutput]
    apply_value: Callable[[Any, jax.Array], jax.Array]
    policy_kind: str
    value_kind: str
    action_dim: int
    obs_dim: int
    num_quantiles: int


class _ActorCritic(nn.Module):
    hidden_sizes: tuple[int, ...]
    action_dim: int
    policy_kind: str
    value_out: int
    activation: str
    init_log_std: float

    def setup(self):
        act = ACTIVATIONS[self.activation]
        # attribute names give the parameter names: {"actor", "critic", "log_std"}
        self.actor = MLP(self.hidden_sizes, self.action_dim, activation=act, out_scale=0.01)
        self.critic = MLP(self.hidden_sizes, self.value_out, activation=act, out_scale=1.0)
        if self.policy_kind != "discrete":
            self.log_std = self.param(
                "log_std", nn.initializers.constant(self.init_log_std), (self.action_dim,))

    def policy(self, obs: jax.Array) -> PolicyOutput:
        loc = self.actor(obs)
        if self.policy_kind == "discrete":
            log_std = jnp.zeros_like(loc)
        else:
            log_std = jnp.broadcast_to(self.log_std.astype(loc.dtype), loc.shape)
        return PolicyOutput(loc, log_std)

    def value(self, obs: jax.Array) -> jax.Array:
        return self.critic(obs)

    def __call__(self, obs: jax.Array) -> tuple[PolicyOutput, jax.Array]:
        return self.policy(obs), self.value(obs)


def make_networks(
    *,
    obs_dim: int,
    action_dim: int,
    policy_kind: str = "discrete",
    value_kind: str = "scalar",
    num_quantiles: int = 32,
    hidden_sizes: tuple[int, ...] = (64, 64),
    activation: str = "tanh",
    init_log_std: float = 0.0,
) -> PPONetworks:
    """Build separate actor and critic MLPs (orthogonal init, PureJaxRL layout).

    Args:
      obs_dim: flat observation size (> 0).
      action_dim: number of actions (discrete) or action dimensions (continuous), > 0.
      policy_kind: ``"discrete"``, ``"gaussian"``, ``"tanh_gaussian"`` or
        ``"softmax_gaussian"``.
      value_kind: ``"scalar"`` or ``"quantile"``.
      num_quantiles: atoms of the quantile head (>= 1; ignored for the scalar head).
      hidden_sizes: hidden widths shared by actor and critic.
      activation: ``"tanh"`` or ``"relu"``.
      init_log_std: initial latent log standard deviation (continuous kinds).

    Returns:
      :class:`PPONetworks`.

    Raises:
      ValueError: on an unknown kind, a non-positive size or an unknown activation.

    Example:
      >>> nets = make_networks(obs_dim=4, action_dim=2)
      >>> params = nets.init(jax.random.key(0), jnp.zeros(4))
      >>> pout, v = nets.apply(params, jnp.zeros((3, 4)))   # v.shape == (3,)
    """
    if policy_kind not in POLICY_KINDS:
        raise ValueError(f"policy_kind must be one of {POLICY_KINDS}, got {policy_kind!r}")
    if value_kind not in VALUE_KINDS:
        raise ValueError(f"value_kind must be one of {VALUE_KINDS}, got {value_kind!r}")
    if activation not in ACTIVATIONS:
        raise ValueError(f"activation must be one of {tuple(ACTIVATIONS)}, got {activation!r}")
    for name, val in (("obs_dim", obs_dim), ("action_dim", action_dim),
                      ("num_quantiles", num_quantiles)):
        if int(val) < 1:
            raise ValueError(f"{name} must be >= 1, got {val}")
    if any(int(h) < 1 for h in hidden_sizes):
        raise ValueError(f"hidden_sizes must be positive, got {hidden_sizes}")

    value_out = 1 if value_kind == "scalar" else int(num_quantiles)
    module = _ActorCritic(tuple(int(h) for h in hidden_sizes), int(action_dim), policy_kind,
                          value_out, activation, float(init_log_std))

    def init(key: jax.Array, obs: jax.Array) -> Any:
        obs = jnp.asarray(obs)
        if obs.shape[-1] != obs_dim:
            raise ValueError(f"obs must have last dimension obs_dim={obs_dim}, got {obs.shape}")
        return module.init(key, obs)

    def check(obs: jax.Array) -> None:
        if obs.shape[-1] != obs_dim:
            raise ValueError(f"obs must have last dimension obs_dim={obs_dim}, got {obs.shape}")

    def squeeze(v: jax.Array) -> jax.Array:
        return v[..., 0] if value_kind == "scalar" else v

    def apply(params: Any, obs: jax.Array) -> tuple[PolicyOutput, jax.Array]:
        check(obs)
        pout, v = module.apply(params, obs)
        return pout, squeeze(v)

    def apply_policy(params: Any, obs: jax.Array) -> PolicyOutput:
        check(obs)
        return module.apply(params, obs, method=_ActorCritic.policy)

    def apply_value(params: Any, obs: jax.Array) -> jax.Array:
        check(obs)
        return squeeze(module.apply(params, obs, method=_ActorCritic.value))

    return PPONetworks(init, apply, apply_policy, apply_value, policy_kind, value_kind,
                       int(action_dim), int(obs_dim), value_out)


def distribution(policy_kind: str, pout: PolicyOutput) -> distrax.Distribution:
    """The distribution whose samples the rollout stores (latent Gaussian for tanh kinds).

    Args:
      policy_kind: one of :data:`POLICY_KINDS`.
      pout: :class:`PolicyOutput` with leaves ``[..., action_dim]``.

    Returns:
      ``distrax.Categorical(logits=loc)`` (event shape ``()``) or
      ``distrax.MultivariateNormalDiag(loc, exp(log_std))`` (event shape ``[action_dim]``).
    """
    if policy_kind == "discrete":
        return distrax.Categorical(logits=pout.loc)
    if policy_kind in ("gaussian", "tanh_gaussian", "softmax_gaussian"):
        return distrax.MultivariateNormalDiag(pout.loc, jnp.exp(pout.log_std))
    raise ValueError(f"policy_kind must be one of {POLICY_KINDS}, got {policy_kind!r}")


def sampling_noise(policy_kind: str, key: jax.Array, shape: tuple[int, ...],
                   action_dim: int) -> jax.Array:
    """Noise for :func:`sample_with_noise`, drawn for many steps at once.

    The rollout draws the noise of all its steps in one call (one random-number kernel per
    rollout instead of one per step; on CPU that is most of a small policy's sampling cost).

    Args:
      policy_kind: one of :data:`POLICY_KINDS`.
      key: PRNG key.
      shape: leading shape, e.g. ``(num_steps, num_envs)``.
      action_dim: number of actions (discrete) or action dimensions.

    Returns:
      ``[*shape, action_dim]`` float32: standard Gumbel noise (discrete) or standard normal
      noise (Gaussian kinds).

    Example:
      >>> g = sampling_noise("discrete", jax.random.key(0), (128, 4), 2)
    """
    full = tuple(shape) + (int(action_dim),)
    if policy_kind == "discrete":
        return jax.random.gumbel(key, full, jnp.float32)
    if policy_kind in POLICY_KINDS:
        return jax.random.normal(key, full, jnp.float32)
    raise ValueError(f"policy_kind must be one of {POLICY_KINDS}, got {policy_kind!r}")


def sample_with_noise(policy_kind: str, pout: PolicyOutput, noise: jax.Array) -> jax.Array:
    """Sample an action of :func:`distribution` from pre-drawn :func:`sampling_noise`.

    Discrete: the Gumbel-max trick ``argmax(logits + g)`` with ``g ~ Gumbel(0, 1)`` i.i.d.
    (exactly a sample of ``Categorical(softmax(logits))``). Gaussian kinds: the
    reparameterization ``loc + exp(log_std) * eps`` with ``eps ~ N(0, I)``.

    Args:
      policy_kind: one of :data:`POLICY_KINDS`.
      pout: :class:`PolicyOutput`, leaves ``[..., action_dim]``.
      noise: ``[..., action_dim]`` float, as drawn by :func:`sampling_noise`.

    Returns:
      ``[...]`` int32 (discrete) or ``[..., action_dim]`` float (the raw, stored action).
    """
    if noise.shape != pout.loc.shape:
        raise ValueError(f"noise must have the shape of pout.loc {pout.loc.shape}, "
                         f"got {noise.shape}")
    if policy_kind == "discrete":
        return jnp.argmax(pout.loc + noise, axis=-1).astype(jnp.int32)
    if policy_kind in POLICY_KINDS:
        return pout.loc + jnp.exp(pout.log_std) * noise.astype(pout.loc.dtype)
    raise ValueError(f"policy_kind must be one of {POLICY_KINDS}, got {policy_kind!r}")


def env_action(policy_kind: str, raw_action: jax.Array, low: Any = None,
               high: Any = None) -> jax.Array:
    """Map a stored (raw) action to what the environment receives.

    ``discrete``: unchanged. ``gaussian``: ``clip(a, low, high)`` (no-op if bounds are None).
    ``tanh_gaussian``: ``low + (tanh(u) + 1)(high - low)/2`` (``tanh(u)`` if bounds are None).
    ``softmax_gaussian``: ``softmax(u)`` over the last axis (bounds ignored), on the simplex.

    Args:
      policy_kind: one of :data:`POLICY_KINDS`.
      raw_action: ``[...]`` int32 (discrete) or ``[..., action_dim]`` float.
      low, high: broadcastable bounds or None.

    Returns:
      The environment action, same shape as ``raw_action``.
    """
    if policy_kind == "discrete":
        return raw_action
    if policy_kind == "gaussian":
        if low is None:
            return raw_action
        lo = jnp.broadcast_to(jnp.asarray(low, raw_action.dtype), raw_action.shape)
        hi = jnp.broadcast_to(jnp.asarray(high, raw_action.dtype), raw_action.shape)
        return jnp.clip(raw_action, lo, hi)
    if policy_kind == "tanh_gaussian":
        t = jnp.tanh(raw_action)
        if low is None:
            return t
        lo = jnp.broadcast_to(jnp.asarray(low, raw_action.dtype), raw_action.shape)
        hi = jnp.broadcast_to(jnp.asarray(high, raw_action.dtype), raw_action.shape)
        return lo + (t + 1.0) * (hi - lo) * 0.5
    if policy_kind == "softmax_gaussian":
        return jax.nn.softmax(raw_action, axis=-1)
    raise ValueError(f"policy_kind must be one of {POLICY_KINDS}, got {policy_kind!r}")


def value_from_head(value_kind: str, value_out: jax.Array) -> jax.Array:
    """Scalar value estimate: the head itself, or the mean of the quantile atoms. ``[...]``."""
    if value_kind == "scalar":
        return value_out
    return jnp.mean(value_out, axis=-1)
