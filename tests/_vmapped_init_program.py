"""Minimal reproducer of the jax 0.10.2 CPU hang: orthogonal inits vmapped over seeds.

``jax.jit(jax.vmap(init))`` of six orthogonally initialized layers, run ``--repeats`` times.
With ``--init flax`` (LAPACK QR, as PureJaxRL's networks use) and no scheduler flag this hung
in every try on a 2-core CPU: two batched QR kernels run concurrently on XLA's 2-thread
intra-op pool and each waits for sub-tasks that need a free thread. ``--init jaxstab`` uses
:func:`jaxstab.agents.common.orthogonal_init` (no LAPACK). Prints "finished" at the end.
"""

import argparse
import os
import time

import jaxstab  # noqa: F401  (applies the CPU scheduler guard unless the user opted out)

import jax

from jaxstab.agents.common import orthogonal_init

SHAPES = [(17, 256), (256, 256), (256, 40), (40, 256), (256, 256), (256, 1)]


def main() -> None:
    p = argparse.ArgumentParser()
    p.add_argument("--init", choices=("flax", "jaxstab"), default="flax")
    p.add_argument("--seeds", type=int, default=3)
    p.add_argument("--repeats", type=int, default=300)
    args = p.parse_args()
    init = jax.nn.initializers.orthogonal() if args.init == "flax" else orthogonal_init()

    def many(key):
        return [init(k, s) for k, s in zip(jax.random.split(key, len(SHAPES)), SHAPES)]

    fn = jax.jit(jax.vmap(many))
    t0 = time.perf_counter()
    for i in range(args.repeats):
        jax.block_until_ready(fn(jax.random.split(jax.random.key(i), args.seeds)))
    print(f"finished in {time.perf_counter() - t0:.1f}s ({args.init} init); "
          f"XLA_FLAGS={os.environ.get('XLA_FLAGS', '')}", flush=True)


if __name__ == "__main__":
    main()
