"""The ``jaxstab`` command line.

    jaxstab demo            # a short tour of the numerical core (prints what it checks)

Training and evaluation commands arrive with the agents (see README).
"""

from __future__ import annotations

import argparse
import sys
import time

import jaxstab  # noqa: F401  (applies the CPU scheduler guard before JAX initializes)


def _demo(args: argparse.Namespace) -> int:
    import jax
    import jax.numpy as jnp

    from jaxstab.ops import normalize_advantages, project_simplex, replicator_step, sinkhorn

    key = jax.random.key(args.seed)
    k1, k2, k3 = jax.random.split(key, 3)
    print(f"jaxstab {jaxstab.__version__} on {jax.devices()[0].platform}")

    z = jax.random.normal(k1, (4, 6))
    w = project_simplex(z)
    print(f"project_simplex: 4x6 batch -> sums {jnp.round(w.sum(-1), 6)}, min {float(w.min()):.3g}")

    cost = jax.random.uniform(k2, (args.batch, 16, 16))
    a = jnp.full((args.batch, 16), 1 / 16)
    b = jnp.full((args.batch, 16), 1 / 16)
    t0 = time.perf_counter()
    out = sinkhorn(cost, a, b, 0.05)
    jax.block_until_ready(out.plan)
    print(f"sinkhorn: B={args.batch}, 16x16, eps=0.05 -> converged {int(out.converged.sum())}/{args.batch}, "
          f"max iterations {int(out.iterations.max())}, max marginal error {float(out.error.max()):.2e} "
          f"({time.perf_counter() - t0:.2f}s incl. compile)")

    def loss(c):
        return jnp.sum(sinkhorn(c, a, b, 0.05).plan * cost)

    g = jax.grad(loss)(cost)
    print(f"sinkhorn implicit gradient: finite {bool(jnp.all(jnp.isfinite(g)))}, "
          f"row sums of dL/dC ~ {float(jnp.abs(g.sum(-1)).max()):.1e}")

    w_prev = jnp.array([0.5, 0.5, 0.0, 0.0])
    fitness = jnp.array([1.0, jnp.nan, jnp.inf, -1e30])
    w_next = replicator_step(w_prev, fitness, jnp.nan, eta0=0.5, eta1=1.0)
    print(f"replicator_step with zeros, NaN and inf inputs -> {jnp.round(w_next, 4)} (sum {float(w_next.sum()):.6f})")

    adv = jax.random.normal(k3, (256,)) * 5 + 3
    for mode in ("none", "global", "robust"):
        n = normalize_advantages(adv, mode)
        print(f"normalize_advantages[{mode}]: mean {float(n.mean()):+.3f} std {float(n.std()):.3f}")
    return 0


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="jaxstab", description=__doc__.split("\n")[0])
    sub = parser.add_subparsers(dest="command", required=True)
    demo = sub.add_parser("demo", help="a short tour of the numerical core")
    demo.add_argument("--seed", type=int, default=0)
    demo.add_argument("--batch", type=int, default=256, help="Sinkhorn batch size (must be > 0)")
    demo.set_defaults(func=_demo)
    return parser


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    if getattr(args, "batch", 1) <= 0:
        parser.error(f"--batch must be a positive integer, got {args.batch}")
    return int(args.func(args))


if __name__ == "__main__":
    sys.exit(main())
