"""SAC benchmark: Pendulum-v1 learning (vmapped seeds) and replay-buffer throughput.

Prints Markdown tables and writes ``benchmarks/results/bench_sac_<platform>.{md,json}``:

1. Pendulum-v1, ``--steps`` environment steps (default 20k), 8 seeds in one ``jit(vmap(train))``:
   final and best deterministic evaluation return (mean +- std over seeds), compile time and run
   time measured separately, environment steps per second for 1 and 8 seeds.
2. Replay buffer: one ``add`` of ``num_envs`` transitions plus one ``sample`` of 256, inside a
   jitted ``lax.scan`` of 1000 iterations, for jaxstab's ring buffer and (if importable)
   flashbax's item buffer.

Usage: ``python benchmarks/bench_sac.py [--steps 20000] [--seeds 8] [--quick]``.
Peers (rejax, SBX, SB3) run side by side in ``benchmarks/bench_peers.py --suite sac``
(their virtual environments: ``benchmarks/peers/setup.sh``).
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


class _PortfolioBandit:
    """n-asset bandit on the simplex (gymnax protocol): reward = w . mu, constant observation.

    ``mu`` has one best asset (0.02) and the rest spread in [-0.01, 0.01], like daily returns.
    """

    def __init__(self, n: int):
        from gymnax.environments import environment, spaces

        self._environment, self._spaces = environment, spaces
        mu = np.linspace(-0.01, 0.01, n)
        mu[n // 2] = 0.02
        self.mu = jnp.asarray(mu, jnp.float32)
        self.n = n

        class _Env(environment.Environment):
            def step_env(inner, key, state, action, params):
                new = environment.EnvState(time=state.time + 1)
                return (jnp.ones((1,), jnp.float32), new, jnp.dot(action, self.mu),
                        jnp.zeros((), bool), {})

            def reset_env(inner, key, params):
                return jnp.ones((1,), jnp.float32), environment.EnvState(time=0)

            def action_space(inner, params=None):
                return spaces.Box(0.0, 1.0, (n,))

            def observation_space(inner, params):
                return spaces.Box(0.0, 1.0, (1,))

        self.env = _Env()
        self.params = environment.EnvParams(max_steps_in_episode=20)


def bench_simplex_targets(n: int = 20, steps: int = 4000, seeds: int = 3) -> list:
    """Projected Gaussian with the seed's target -n vs the scale-aware default, and the
    logistic normal: behaviour noise and return of the STOCHASTIC policy after training."""
    from jaxstab.agents.sac import default_target_entropy, make_sac_actor

    bandit = _PortfolioBandit(n)
    best = float(jnp.max(bandit.mu))
    rows = []
    for policy, target, label in [
        ("projected_gaussian", -float(n), "seed: -n"),
        ("projected_gaussian", None, "default (sigma = 0.25/n)"),
        ("logistic_normal", None, "default (exact density)"),
    ]:
        cfg = SACConfig(hidden_sizes=(64, 64), batch_size=128, buffer_size=steps,
                        warmup_steps=500, total_steps=steps, eval_interval=steps,
                        eval_episodes=2, policy=policy)
        te = default_target_entropy(policy, n) if target is None else target
        hp = default_hparams(cfg, n, gamma=0.9, reward_scale=100.0, target_entropy=te,
                             actor_lr=1e-3, critic_lr=1e-3, alpha_lr=1e-3)
        # Seeds run one after another: the vmapped 3-seed version of this program intermittently
        # deadlocked on the 2-core CPU with jax 0.10.2 (see the notes of the results file).
        train = jax.jit(make_train(cfg, bandit.env, bandit.params))
        outs = [jax.block_until_ready(train(k, hp))
                for k in jax.random.split(jax.random.key(1), seeds)]
        out = jax.tree_util.tree_map(lambda *xs: jnp.stack(xs), *outs)
        sample, mode, _ = make_sac_actor(n, cfg)
        obs = jnp.ones((1000, 1), jnp.float32)
        actor_params = out.state.agent.actor_params
        w = jax.vmap(lambda p, k: sample(p, obs, k))(
            actor_params, jax.random.split(jax.random.key(2), seeds))  # [S, 1000, n]
        w_det = jax.vmap(lambda p: mode(p, obs[:1])[0])(actor_params)  # [S, n]
        stoch_ret = np.asarray(jnp.einsum("skn,n->sk", w, bandit.mu).mean(axis=1))
        det_ret = np.asarray(w_det @ bandit.mu)
        noise = np.asarray(jnp.mean(jnp.linalg.norm(w - w_det[:, None, :], axis=-1), axis=1))
        alpha = np.asarray(out.metrics["alpha"][:, -1])
        rows.append([policy, label, round(te, 2), n, f"{det_ret.mean() / best:.3f}",
                     f"{stoch_ret.mean() / best:.3f}", f"{noise.mean():.3f}",
                     f"{alpha.mean():.3g}"])
    return rows


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

        import importlib.metadata as md

        candidates.append(("flashbax " + md.version("flashbax"), theirs))
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
    import faulthandler

    faulthandler.dump_traceback_later(1500, exit=True)  # a deadlock shows a stack, not silence
    ap = argparse.ArgumentParser()
    ap.add_argument("--steps", type=int, default=20_000)
    ap.add_argument("--seeds", type=int, default=8)
    ap.add_argument("--hidden", type=int, default=64)
    ap.add_argument("--quick", action="store_true", help="2k steps, 2 seeds (smoke run)")
    args = ap.parse_args()
    if args.quick:
        args.steps, args.seeds = 2_000, 2
    t0 = time.perf_counter()
    rows, extra = bench_pendulum(args.steps, args.seeds, args.hidden)
    print(f"[bench_sac] pendulum done in {time.perf_counter() - t0:.0f}s", flush=True)
    replay_rows = bench_replay()
    print(f"[bench_sac] replay done in {time.perf_counter() - t0:.0f}s", flush=True)
    simplex_rows = bench_simplex_targets(steps=1000 if args.quick else 4000)
    print(f"[bench_sac] simplex done in {time.perf_counter() - t0:.0f}s", flush=True)
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
        + "\n\nSimplex policies on a 20-asset bandit (reward = w . mu, daily-return scale, best asset "
        "0.02; reward_scale 100, gamma 0.9, 3 seeds, 4000 steps): return of the deterministic and "
        "of the stochastic policy as a fraction of the best achievable, and the mean L2 distance "
        "of sampled weights from the deterministic weights (behaviour noise; weights are ~1/n = "
        "0.05 each).\n\n"
        + markdown_table(["policy", "target entropy", "H*", "n", "det. return / best",
                          "stoch. return / best", "behaviour noise ||w - w_det||",
                          "final alpha"], simplex_rows)
        + "\n\nThe simplex runs use one jit per configuration and loop over seeds: the vmapped "
        "3-seed 20-asset projected-Gaussian program intermittently deadlocked (all threads idle "
        "after compiling) on the 2-core CPU with jax 0.10.2, even with jaxstab's scheduler flag."
        + "\n\nPeers (rejax, SBX, SB3) not run: they need separate virtual environments."
    )
    write_results(
        "bench_sac", "SAC on Pendulum-v1 (vmapped seeds) and replay-buffer throughput",
        ["task", "seeds", "env steps", "final return (mean +- std)",
         "best return (mean +- std)", "seeds >= -250", "compile s", "run s", "env steps/s (all seeds)",
         "skipped updates"],
        rows, notes, extra={**extra, "replay": replay_rows, "simplex": simplex_rows})


if __name__ == "__main__":
    main()
