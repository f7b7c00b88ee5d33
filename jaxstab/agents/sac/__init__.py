"""Stabilized Soft Actor-Critic: networks, policies, losses and the pure ``(init, update)`` pair.

See :func:`make_sac`; training loops live in :mod:`jaxstab.training.sac`.
"""

from jaxstab.agents.sac.networks import Actor, CriticEnsemble, SACNetworks, make_sac_networks
from jaxstab.agents.sac.policies import (
    POLICY_KINDS,
    Policy,
    default_target_entropy,
    make_policy,
    tanh_log_det_jacobian,
)
from jaxstab.agents.sac.sac import (
    SACConfig,
    SACHParams,
    SACState,
    default_hparams,
    make_sac,
    make_sac_actor,
)

__all__ = [
    "Actor",
    "CriticEnsemble",
    "POLICY_KINDS",
    "Policy",
    "SACConfig",
    "SACHParams",
    "SACNetworks",
    "SACState",
    "default_hparams",
    "default_target_entropy",
    "make_policy",
    "make_sac",
    "make_sac_actor",
    "make_sac_networks",
    "tanh_log_det_jacobian",
]
