"""Test helper: facts about a jaxpr and its sub-jaxprs (scan, while, cond, custom rules, pjit).

Sub-jaxprs are found with ``benchmarks/bench_roofline.py``'s :func:`sub_jaxprs` (the walker its
FLOP count uses).
"""

from __future__ import annotations

from _bench_loader import load_benchmark

_sub_jaxprs = load_benchmark("bench_roofline").sub_jaxprs


def _nested(eqn):
    for value in eqn.params.values():
        yield from _sub_jaxprs(value)


def primitive_names(jaxpr) -> set[str]:
    """Names of every primitive in ``jaxpr`` and its nested jaxprs."""
    out = set()
    for eqn in jaxpr.eqns:
        out.add(eqn.primitive.name)
        for inner in _nested(eqn):
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
        for inner in _nested(eqn):
            out |= dot_batch_sizes(inner)
    return out
