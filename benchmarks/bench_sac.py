"""SAC benchmark: Pendulum-v1 learning (vmapped seeds) and replay-buffer throughput.

Prints Markdown tables and writes ``benchmarks/results/bench_sac_<platform>.{md,json}``:

1. Pendulum-v1, ``--steps`` environment steps (default 20k), 8 seeds in one ``jit(vmap(train))``:
   final and best deterministic evaluation return (mean +- std over seeds), compile time and run
   time measured separately, environment steps per second for 1 and 8 seeds.
2. Replay buffer: one ``add`` of ``num_envs`` transitions plus one ``sample`` of 256, inside a
   jitted ``lax.scan`` of 1000 iterations, for jaxstab's ring buffer and (if importable)
   flashbax's item buffer.

Usage: ``python benchmarks/bench_sac.py [--steps 20000] [--seeds 8] [--quick]``.
Peers (rejax, SBX, SB3) need separate virtual environments and are not run here.
"""

from __future__ import annotations

import argparse
import os
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from benchmarks._common import write_results  # noqa: E402  (imports jaxstab first)

import gymnax  # noqa: E402
import jax  # noqa: E402
import jax.numpy as jnp  # noqa: E402
import numpy as np  # noqa: E402

from jaxstab.agents.sac import SACConfig, default_hparams  # noqa: E402
from jaxstab.replay import Transition, replay_add, replay_init, replay_sample  # noqa: E402
from jaxstab.training.sac import make_train  # noqa: E402


def bench_pendulum(steps: int, seeds: int, hidden: int) -> tuple[list, dict]:
    env, params = gymnax.make("Pendulum-v1")
    cfg = SACConfig(hidden_sizes=(hidden, hidden), batch_size=256, buffer_size=steps,
                    warmup_steps=1_000, total_steps=steps, eval_interval=steps // 10,
                    eval_episodes=10)
    hp = default_hparams(cfg, 1, actor_lr=1e-3, critic_lr=1e-3, alpha_lr=1e-3)
    train = jax.jit(jax.vmap(make_train(cfg, env, params)))
    rows, extra = [], {}
    for n in sorted({1, seeds}):
        keys = jax.random.split(jax.random.key(0), n)
        hps = jax.tree_util.tree_map(lambda x: jnp.broadcast_to(x, (n,)), hp)
        t0 = time.perf_counter()
        compiled = train.lower(keys, hps).compile()
        compile_s = time.perf_counter() - t0
        t0 = time.perf_counter()
        out = jax.block_until_ready(compiled(keys, hps))
        run_s = time.perf_counter() - t0
        ev = np.asarray(out.eval_returns)
        final, best = ev[:, -1], ev.max(axis=1)
        skipped = int(np.asarray(out.metrics["skipped_total"])[:, -1].sum())
        rows.append([f"Pendulum-v1 SAC {hidden}x{hidden}", n, steps,
                     f"{final.mean():.1f} +- {final.std():.1f}",
                     f"{best.mean():.1f} +- {best.std():.1f}",
                     int((best >= -250).sum()), round(compile_s, 1), round(run_s, 1),
                     round(n * steps / run_s), skipped])
        extra[f"eval_returns_{n}_seeds"] = ev.tolist()
    return rows, extra


def bench_replay(num_envs: int = 1, capacity: int = 100_000, iters: int = 1000) -> list:
    ex = Transition(obs=jnp.zeros(3), action=jnp.zeros(1), reward=jnp.zeros(()),
                    next_obs=jnp.zeros(3), terminated=jnp.zeros((), bool))
    batch = jax.tree_util.tree_map(lambda x: jnp.stack([x] * num_envs), ex)
    rows = []

    @jax.jit
    def ours(key):
        def body(buf, k):
            buf = replay_add(buf, batch)
            return buf, jnp.sum(replay_sample(buf, k, 256).reward)
        return jax.lax.scan(body, replay_init(ex, capacity), jax.random.split(key, iters))[1]

    candidates = [("jaxstab.replay", ours)]
    try:
        import flashbax as fbx

        fb = fbx.make_item_buffer(max_length=capacity, min_length=1, sample_batch_size=256,
                                  add_batches=True)

        @jax.jit
        def theirs(key):
            def body(buf, k):
                buf = fb.add(buf, batch)
                return buf, jnp.sum(fb.sample(buf, k).experience.reward)
            return jax.lax.scan(body, fb.init(ex), jax.random.split(key, iters))[1]

        candidates.append(("flashbax " + getattr(fbx, "__version__", "?"), theirs))
    except Exception as err:  # optional peer
        print(f"flashbax not available ({type(err).__name__}: {err}); skipping it")

    for name, fn in candidates:
        jax.block_until_ready(fn(jax.random.key(0)))
        times = []
        for r in range(5):
            t0 = time.perf_counter()
            jax.block_until_ready(fn(jax.random.key(r)))
            times.append(time.perf_counter() - t0)
        rows.append([name, capacity, num_envs, 256, round(1e6 * float(np.median(times)) / iters, 2)])
    return rows


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--steps", type=int, default=20_000)
    ap.add_argument("--seeds", type=int, default=8)
    ap.add_argument("--hidden", type=int, default=64)
    ap.add_argument("--quick", action="store_true", help="2k steps, 2 seeds (smoke run)")
    args = ap.parse_args()
    if args.quick:
        args.steps, args.seeds = 2_000, 2
    rows, extra = bench_pendulum(args.steps, args.seeds, args.hidden)
    replay_rows = bench_replay()
    from benchmarks._common import markdown_table

    notes = (
        "Deterministic evaluation (latent-mean action), 10 episodes every steps/10 env steps. "
        "lr 1e-3 (actor, critic, temperature), batch 256, 1 env, 1 update per env step, "
        "warm-up 1000 random steps, gamma 0.99, tau 0.005, grad clip 10. "
        "'seeds >= -250' counts seeds whose best evaluation reached -250. Compile and run time "
        "are measured separately (run = one call of the compiled program). On a shared CPU "
        "wall times vary with other load.\n\n"
        "Replay buffer: microseconds per (add num_envs transitions + sample 256) inside a jitted "
        "scan of 1000 iterations (median of 5).\n\n"
        + markdown_table(["buffer", "capacity", "add size", "sample size", "us / add+sample"],
                         replay_rows)
        + "\n\nPeers (rejax, SBX, SB3) not run: they need separate virtual environments."
    )
    write_results(
        "bench_sac", "SAC on Pendulum-v1 (vmapped seeds) and replay-buffer throughput",
        ["task", "seeds", "env steps", "final return (mean +- std)",
         "best return (mean +- std)", "seeds >= -250", "compile s", "run s", "env steps/s (all seeds)",
         "skipped updates"],
        rows, notes, extra={**extra, "replay": replay_rows})


if __name__ == "__main__":
    main()
