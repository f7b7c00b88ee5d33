"""Test helper: walk a jaxpr and its sub-jaxprs (scan, while, cond, custom rules, pjit)."""

from __future__ import annotations


def _subjaxprs(eqn):
    for value in eqn.params.values():
        for sub in (value if isinstance(value, (tuple, list)) else (value,)):
            inner = getattr(sub, "jaxpr", sub)  # a ClosedJaxpr holds its Jaxpr
            if hasattr(inner, "eqns"):
                yield inner


def primitive_names(jaxpr) -> set[str]:
    """Names of every primitive in ``jaxpr`` and its nested jaxprs."""
    out = set()
    for eqn in jaxpr.eqns:
        out.add(eqn.primitive.name)
        for inner in _subjaxprs(eqn):
            out |= primitive_names(inner)
    return out


def dot_batch_sizes(jaxpr) -> set[tuple[int, ...]]:
    """Sizes of the batch dimensions of every ``dot_general`` in ``jaxpr`` (a ``Jaxpr``, e.g.
    ``jax.make_jaxpr(f)(*args).jaxpr``) and in every jaxpr nested in its equations' parameters;
    ``()`` for an unbatched product."""
    out = set()
    for eqn in jaxpr.eqns:
        if eqn.primitive.name == "dot_general":
            _, (lhs_batch, _) = eqn.params["dimension_numbers"]
            out.add(tuple(int(eqn.invars[0].aval.shape[d]) for d in lhs_batch))
        for inner in _subjaxprs(eqn):
            out |= dot_batch_sizes(inner)
    return out
