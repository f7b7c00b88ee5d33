"""Losses: pure functions of predictions and targets returning losses (and metrics).

- :func:`quantile_midpoints`, :func:`quantile_huber_loss`: QR-DQN / TQC quantile critic loss.
- :func:`truncate_quantiles`: TQC's pooled truncation of target atoms.
- :func:`variance_scaled_quantile_loss` with :class:`VarianceScalingState` /
  :func:`variance_scaling_init`: seed 003's critic-loss scaling (modes ``"none"``, ``"seed"``,
  ``"normalize"``).
"""

from jaxstab.losses.quantile import (
    VARIANCE_SCALING_MODES,
    VarianceScalingState,
    quantile_huber_loss,
    quantile_midpoints,
    truncate_quantiles,
    variance_scaled_quantile_loss,
    variance_scaling_init,
    variance_scaling_spread,
)

__all__ = [
    "VARIANCE_SCALING_MODES",
    "VarianceScalingState",
    "quantile_huber_loss",
    "quantile_midpoints",
    "truncate_quantiles",
    "variance_scaled_quantile_loss",
    "variance_scaling_init",
    "variance_scaling_spread",
]
