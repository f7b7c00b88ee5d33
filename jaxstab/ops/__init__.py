"""Pure-functional numerical operators: arrays in, arrays (or small NamedTuples) out.

- :func:`project_simplex`: Euclidean projection onto the probability simplex.
- :func:`sinkhorn`: log-domain entropic optimal transport with exact implicit gradients.
- :func:`replicator_step`: stabilized log-space replicator dynamics step.
- :func:`normalize_advantages`: advantage normalization (none / global / group / robust).
"""

from jaxstab.ops.advantages import normalize_advantages
from jaxstab.ops.replicator import replicator_step
from jaxstab.ops.simplex import project_simplex
from jaxstab.ops.sinkhorn import SinkhornOutput, sinkhorn

__all__ = [
    "SinkhornOutput",
    "normalize_advantages",
    "project_simplex",
    "replicator_step",
    "sinkhorn",
]
