"""Stabilized PPO: networks (init/apply pairs), losses, and the ``make_ppo`` update."""

from jaxstab.agents.ppo.losses import (
    RatioStats,
    bc_loss,
    exact_kl,
    guarded_ratio,
    kl_estimate,
    ppo_clip_loss,
    value_loss,
)
from jaxstab.agents.ppo.networks import (
    PolicyOutput,
    PPONetworks,
    distribution,
    env_action,
    make_networks,
    value_from_head,
)
from jaxstab.agents.ppo.ppo import (
    PPO,
    Batch,
    Demos,
    PPOConfig,
    PPOHParams,
    PPOState,
    make_ppo,
    networks_from_config,
    ppo_hparams,
)

__all__ = [
    "PPO", "Batch", "Demos", "PPOConfig", "PPOHParams", "PPONetworks", "PPOState",
    "PolicyOutput", "RatioStats", "bc_loss", "distribution", "env_action", "exact_kl",
    "guarded_ratio", "kl_estimate", "make_networks", "make_ppo", "networks_from_config",
    "ppo_clip_loss", "ppo_hparams", "value_from_head", "value_loss",
]
