"""Stabilized Soft Actor-Critic: networks, policies, losses and the pure ``(init, update)`` pair.

See :func:`make_sac`; training loops live in :mod:`jaxstab.training.sac`. The IRT prototype
policy (seed 000) is :mod:`jaxstab.agents.sac.irt`, selected with ``SACConfig(actor="irt")``.
"""

from jaxstab.agents.sac.irt import IRTActor, IRTConfig
from jaxstab.agents.sac.networks import (
    ACTOR_KINDS,
    Actor,
    CriticEnsemble,
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
    tanh_log_det_jacobian,
)
from jaxstab.agents.sac.sac import (
    SACActing,
    SACConfig,
    SACHParams,
    SACState,
    default_hparams,
    default_networks,
    effective_policy,
    make_actor_apply,
    make_sac,
    make_sac_acting,
    make_sac_actor,
)

__all__ = [
    "ACTOR_KINDS",
    "Actor",
    "CriticEnsemble",
    "IRTActor",
    "IRTConfig",
    "POLICY_KINDS",
    "Policy",
    "SACActing",
    "SACConfig",
    "SACHParams",
    "SACNetworks",
    "SACState",
    "SIMPLEX_POLICY_KINDS",
    "default_hparams",
    "default_networks",
    "default_target_entropy",
    "effective_policy",
    "make_actor_apply",
    "make_policy",
    "make_sac",
    "make_sac_acting",
    "make_sac_actor",
    "make_sac_networks",
    "policy_state_dim",
    "tanh_log_det_jacobian",
]
