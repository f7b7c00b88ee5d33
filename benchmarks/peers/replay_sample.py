"""Replay-buffer cost against capacity, for one library, in that library's environment.

Runs as a script: ``python benchmarks/peers/replay_sample.py --lib jaxstab|rejax
--capacities 20000 50000 ...`` (jaxstab in the repository's environment, rejax in its peer
environment made by ``benchmarks/peers/setup.sh``; ``benchmarks/bench_replay_capacity.py``
drives both). For each capacity it fills a buffer of Pendulum-shaped transitions (obs 3,
action 1) and times what one SAC environment step asks of it: add one transition and sample a
minibatch of 256, ``iters`` times inside one jitted ``lax.scan`` (median of ``repeats`` calls,
compile excluded); ``--seeds S`` vmaps the step over S buffers and reports the time per seed.
Prints one JSON line ``{"replay": lib, "version": ..., "seeds": S, "us_per_step":
{capacity: microseconds per seed}, "sampling": ...}``.

The libraries' sampling rules differ and that is what is measured: jaxstab draws uniformly
with replacement (``jax.random.randint``, cost independent of capacity, as SB3 does); rejax
draws without replacement with ``jax.random.choice(..., replace=False, p=...)`` over every slot
of the buffer (its ``ReplayBuffer.sample``).
"""

from __future__ import annotations

import argparse
import importlib.metadata as md
import json
import time

import numpy as np

OBS_DIM, ACT_DIM, BATCH = 3, 1, 256


def _jaxstab_step(capacity: int):
    import jax
    import jax.numpy as jnp

    from jaxstab.replay import Transition, replay_add, replay_init, replay_sample

    one = Transition(jnp.zeros((1, OBS_DIM)), jnp.zeros((1, ACT_DIM)), jnp.zeros((1,)),
                     jnp.zeros((1, OBS_DIM)), jnp.zeros((1,), bool))
    ex = jax.tree_util.tree_map(lambda x: x[0], one)
    full = jax.tree_util.tree_map(lambda x: jnp.ones((capacity,) + x.shape[1:], x.dtype), one)
    buf = replay_add(replay_init(ex, capacity), full)

    def step(buf, k):
        buf = replay_add(buf, one)
        return buf, jnp.sum(replay_sample(buf, k, BATCH).reward)

    return buf, step, "uniform with replacement (jax.random.randint)"


def _rejax_step(capacity: int):
    import jax
    import jax.numpy as jnp
    from gymnax.environments import spaces
    from rejax.buffers import Minibatch, ReplayBuffer

    obs_space = spaces.Box(-1.0, 1.0, (OBS_DIM,), jnp.float32)
    act_space = spaces.Box(-1.0, 1.0, (ACT_DIM,), jnp.float32)
    buf = ReplayBuffer.empty(capacity, obs_space, act_space)
    full = Minibatch(jnp.ones((capacity, OBS_DIM)), jnp.ones((capacity, ACT_DIM)),
                     jnp.ones((capacity,)), jnp.zeros((capacity,), bool),
                     jnp.ones((capacity, OBS_DIM)))
    buf = buf.extend(full)
    one = jax.tree_util.tree_map(lambda x: x[:1], full)

    def step(buf, k):
        buf = buf.extend(one)
        return buf, jnp.sum(buf.sample(BATCH, k).reward)

    return buf, step, "without replacement (jax.random.choice(replace=False, p=...))"


def time_steps(lib: str, capacity: int, iters: int, repeats: int,
               seeds: int = 1) -> tuple[float, str]:
    """Median microseconds per (add 1 + sample 256) step at ``capacity``, per seed; and the
    rule. ``seeds > 1``: that many buffers, the step vmapped over them (as in a vmapped SAC
    run), the time divided by ``seeds``."""
    import jax
    import jax.numpy as jnp

    buf, step, rule = (_jaxstab_step if lib == "jaxstab" else _rejax_step)(capacity)
    keys = jax.random.split(jax.random.key(0), (iters, seeds) if seeds > 1 else iters)
    if seeds > 1:
        buf = jax.tree_util.tree_map(lambda x: jnp.broadcast_to(x, (seeds,) + jnp.shape(x)),
                                     buf)
        step = jax.vmap(step)
    run = jax.jit(lambda b, ks: jax.lax.scan(step, b, ks)[1])
    compiled = run.lower(buf, keys).compile()
    jax.block_until_ready(compiled(buf, keys))
    times = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        jax.block_until_ready(compiled(buf, keys))
        times.append(time.perf_counter() - t0)
    return float(np.median(times)) / iters / seeds * 1e6, rule


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--lib", choices=["jaxstab", "rejax"], required=True)
    ap.add_argument("--capacities", type=int, nargs="+", default=[20_000, 50_000, 131_072])
    ap.add_argument("--iters", type=int, default=500)
    ap.add_argument("--repeats", type=int, default=5)
    ap.add_argument("--seeds", type=int, default=1,
                    help="buffers vmapped at once (the time is reported per seed)")
    args = ap.parse_args()
    if args.seeds < 1:
        raise SystemExit(f"--seeds must be >= 1, got {args.seeds}")
    if min(args.capacities) < BATCH:  # before any timing, not after the valid ones ran
        raise SystemExit(f"--capacities: every capacity must be >= {BATCH}, got "
                         f"{min(args.capacities)}")
    if args.lib == "jaxstab":
        import jaxstab  # noqa: F401  (the CPU guard and XLA flags, as in the SAC runs)
    out, rule = {}, ""
    for cap in args.capacities:
        out[str(cap)], rule = time_steps(args.lib, cap, args.iters, args.repeats, args.seeds)
    print(json.dumps({"replay": args.lib, "version": md.version(args.lib), "seeds": args.seeds,
                      "jax": md.version("jax"), "us_per_step": out, "sampling": rule}))


if __name__ == "__main__":
    main()
