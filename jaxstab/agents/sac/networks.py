"""SAC networks: a Gaussian-latent actor and an ensemble of (distributional) critics.

Networks are flax modules used as init/apply pairs; parameters live in the agent state.
"""

from __future__ import annotations

from typing import NamedTuple, Sequence

import flax.linen as nn
import jax
import jax.numpy as jnp

from jaxstab.agents.common import MLP
from jaxstab.agents.sac.irt import IRTActor, IRTConfig

ACTOR_KINDS = ("mlp", "irt")


class Actor(nn.Module):
    """Maps observations to the latent Gaussian's ``(mean, log_std)``.

    ``log_std`` is squashed smoothly into ``[log_std_min, log_std_max]``:
    ``log_std = lo + 0.5 (hi - lo) (tanh(x) + 1)``.

    Attributes:
      hidden_sizes: hidden widths.
      latent_dim: Gaussian dimension ``k``.
      log_std_min, log_std_max: bounds of ``log_std``.

    Call:
      ``obs [..., obs_dim] -> (mean [..., k], log_std [..., k])``.
    """

    hidden_sizes: Sequence[int]
    latent_dim: int
    log_std_min: float = -5.0
    log_std_max: float = 2.0

    @nn.compact
    def __call__(self, obs: jax.Array) -> tuple[jax.Array, jax.Array]:
        out = MLP(tuple(self.hidden_sizes), 2 * self.latent_dim, out_scale=0.01)(obs)
        mean, raw = jnp.split(out, 2, axis=-1)
        lo, hi = self.log_std_min, self.log_std_max
        log_std = lo + 0.5 * (hi - lo) * (jnp.tanh(raw) + 1.0)
        return mean, log_std


class CriticEnsemble(nn.Module):
    """``num_critics`` independent Q-networks with ``num_atoms`` outputs each.

    Attributes:
      hidden_sizes: hidden widths of each critic.
      num_critics: ensemble size ``K``.
      num_atoms: outputs per critic ``N`` (1 for an MSE critic, quantiles for a distributional one).

    Call:
      ``(obs [B, obs_dim], action [B, act_dim]) -> q [K, B, N]``.
    """

    hidden_sizes: Sequence[int]
    num_critics: int = 2
    num_atoms: int = 1

    @nn.compact
    def __call__(self, obs: jax.Array, action: jax.Array) -> jax.Array:
        x = jnp.concatenate([obs, action.astype(obs.dtype)], axis=-1)
        ensemble = nn.vmap(
            MLP,
            variable_axes={"params": 0},
            split_rngs={"params": True},
            in_axes=None,
            out_axes=0,
            axis_size=self.num_critics,
        )
        return ensemble(tuple(self.hidden_sizes), self.num_atoms)(x)


class SACNetworks(NamedTuple):
    """The actor and critic modules of one SAC agent.

    A stateless actor (:class:`Actor`) maps ``obs -> (mean, log_std)``. A stateful actor (such as
    :class:`jaxstab.agents.sac.irt.IRTActor`) has an integer attribute ``policy_state_dim > 0``
    and maps ``(obs, policy_state) -> (mean, log_std, new_policy_state)``; the critic then sees
    augmented observations ``[obs, policy_state]``.
    """

    actor: nn.Module
    critic: CriticEnsemble


def policy_state_dim(actor: nn.Module) -> int:
    """Size of an actor's carried policy state (0 for a stateless actor)."""
    return int(getattr(actor, "policy_state_dim", 0))


def make_sac_networks(action_latent_dim: int, *, hidden_sizes: Sequence[int] = (256, 256),
                      num_critics: int = 2, num_atoms: int = 1, log_std_min: float = -5.0,
                      log_std_max: float = 2.0, actor: str = "mlp",
                      irt: IRTConfig | None = None) -> SACNetworks:
    """Build actor and critic-ensemble modules.

    Args:
      action_latent_dim: latent Gaussian dimension of the policy (``Policy.latent_dim``).
      hidden_sizes: hidden widths for both networks.
      num_critics: critic ensemble size.
      num_atoms: outputs per critic.
      log_std_min, log_std_max: actor log-std bounds.
      actor: ``"mlp"`` (:class:`Actor`) or ``"irt"`` (:class:`IRTActor`).
      irt: IRT settings for ``actor="irt"`` (default ``IRTConfig()``).

    Returns:
      :class:`SACNetworks`.

    Raises:
      ValueError: unknown ``actor``.
    """
    if actor not in ACTOR_KINDS:
        raise ValueError(f"actor must be one of {ACTOR_KINDS}, got {actor!r}")
    if actor == "irt":
        actor_module = IRTActor(tuple(hidden_sizes), action_latent_dim,
                                irt if irt is not None else IRTConfig(), log_std_min, log_std_max)
    else:
        actor_module = Actor(tuple(hidden_sizes), action_latent_dim, log_std_min, log_std_max)
    return SACNetworks(actor=actor_module,
                       critic=CriticEnsemble(tuple(hidden_sizes), num_critics, num_atoms))


__all__ = ["ACTOR_KINDS", "Actor", "CriticEnsemble", "SACNetworks", "make_sac_networks",
           "policy_state_dim"]
