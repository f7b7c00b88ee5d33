"""The ``jaxstab`` command line.

    jaxstab train [--algo sac|ppo] [--env portfolio|<gymnax name>] [--seeds N] [--steps N]
                  [--set key=value ...] [--out DIR] [--resume] [--no-progress] [--seed S]
                  [--save-every CHUNKS] [--seeds-per-batch B] [--cpu-devices D]
    jaxstab eval RUN_DIR [--split validation|test] [--episodes N]
    jaxstab bench [--suite quick|full] [--only NAME ...] [--list]
    jaxstab keys [--algo sac|ppo] [--env NAME]       # valid --set keys
    jaxstab demo                                     # a short tour of the numerical core

``jaxstab train`` with no argument runs the main job: SAC on the bundled S&P 500 data
(``portfolio``) for a few minutes on a laptop CPU, and prints where its run directory is.
Bad names and values exit with code 2 and a message listing the valid choices (see
``docs/cli.md``).
"""

from __future__ import annotations

import argparse
import os
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


def _train(args: argparse.Namespace) -> int:
    mesh = None
    if args.cpu_devices is not None:  # before anything starts JAX (runs imports gymnax)
        from jaxstab import distributed

        try:
            distributed.use_cpu_devices(args.cpu_devices)
        except RuntimeError as e:
            raise SystemExit(f"jaxstab train: error: --cpu-devices: {e}") from None
        mesh = distributed.default_mesh()
    from jaxstab import runs

    out = args.out
    cfg_path = os.path.join(out, "config.json") if out else None
    if args.resume:
        if not out:
            raise runs.UsageError("--resume needs --out RUN_DIR (the run to continue)")
        if os.path.isfile(cfg_path):
            spec = runs.load_spec(out)
            given = [n for n in ("algo", "env", "seeds", "steps", "set", "seed")
                     if getattr(args, n) not in (None, [])]
            if given:
                print(f"note: resuming {out} with its saved config; ignoring "
                      f"{', '.join('--' + g for g in given)}", file=sys.stderr)
        else:
            spec = _resolve_from_args(args)
    else:
        spec = _resolve_from_args(args)
        if out and os.path.isdir(os.path.join(out, "checkpoints")) and os.listdir(
                os.path.join(out, "checkpoints")):
            raise runs.UsageError(f"{out} already holds a run; pass --resume to continue it or "
                                  "choose another --out")
    if mesh is not None and spec.seeds % args.cpu_devices:
        raise runs.UsageError(f"--cpu-devices {args.cpu_devices} must divide the number of seeds "
                              f"({spec.seeds})")
    out = out or runs.default_run_dir(spec)
    summary = runs.train_run(spec, out, resume=args.resume, progress=not args.no_progress,
                             save_every=args.save_every, argv=["jaxstab"] + list(args.argv),
                             seeds_per_batch=args.seeds_per_batch, mesh=mesh)
    fr = summary.get("final_return") or {}
    rk = summary.get("return_key")
    if fr and fr.get("mean") is not None:
        per = ", ".join("nan" if v is None else f"{v:.4g}" for v in fr["per_seed"])
        print(f"final {rk}: {fr['mean']:.4g} +- {fr['std']:.3g} over {spec.seeds} seed(s) [{per}]")
    print(f"wall time {summary.get('wall_s')} s, {summary.get('env_steps_per_s')} env steps/s")
    print(f"run directory: {os.path.abspath(out)}")
    for p in summary.get("plots", []):
        print(f"  plot: {p}")
    print(f"next: jaxstab eval {out}")
    return 0


def _resolve_from_args(args: argparse.Namespace):
    from jaxstab import runs

    return runs.resolve(args.algo or "sac", args.env or runs.DEFAULT_ENV, seeds=args.seeds,
                        steps=args.steps, overrides=args.set, seed=args.seed or 0)


def _eval(args: argparse.Namespace) -> int:
    from jaxstab import runs

    if not os.path.isdir(args.run_dir):
        raise runs.UsageError(f"run directory {args.run_dir} does not exist")
    rec = runs.evaluate_run(args.run_dir, split=args.split, episodes=args.episodes,
                            seed=args.seed)
    print(rec.get("table", ""))
    if "return_mean" in rec:
        per = ", ".join(f"{v:.4g}" for v in rec["return_per_seed"])
        print(f"{rec['algo']} on {rec['env']}: deterministic return over {rec['episodes']} "
              f"episode(s): {rec['return_mean']:.4g} +- {rec['return_std']:.3g} [{per}]")
    print(f"wrote {rec.get('path', args.run_dir)}")
    for p in rec.get("plots", []):
        print(f"  plot: {p}")
    return 0


def _keys(args: argparse.Namespace) -> int:
    from jaxstab import runs

    keys = runs.config_keys(args.algo)
    print(f"{args.algo} config (static, --set name=value or cfg.name=value):")
    print("  " + ", ".join(keys["config"]))
    print(f"{args.algo} hyperparameters (traced, --set name=value or hp.name=value):")
    print("  " + ", ".join(keys["hparams"]))
    if args.env:
        types_ = runs._env_kwarg_types(args.env) if args.env in runs.env_names() else None
        if args.env not in runs.env_names():
            raise runs.UsageError(f"unknown environment {args.env!r}; valid: "
                                  f"{', '.join(runs.env_names())}")
        print(f"{args.env} environment (--set env.name=value):")
        print("  " + (", ".join(types_) if types_ else "(any keyword of its factory)"))
    print("environments: " + ", ".join(runs.env_names()))
    return 0


def _bench(args: argparse.Namespace) -> int:
    from jaxstab import runs

    root = _repo_root()
    if root is None:
        raise runs.UsageError("jaxstab bench runs the scripts in benchmarks/ of a source "
                              "checkout: run it from the repository root (git clone ...; cd "
                              "jaxstab; jaxstab bench)")
    if root not in sys.path:
        sys.path.insert(0, root)
    from benchmarks import run as bench_run

    argv = ["--suite", args.suite]
    if args.only:
        argv += ["--only", *args.only]
    if args.list:
        argv.append("--list")
    if args.dry_run:
        argv.append("--dry-run")
    return int(bench_run.main(argv))


def _repo_root() -> str | None:
    for base in (os.getcwd(), os.path.dirname(os.path.dirname(os.path.abspath(__file__)))):
        if os.path.isfile(os.path.join(base, "benchmarks", "run.py")):
            return base
    return None


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="jaxstab", description=__doc__.split("\n")[0])
    sub = parser.add_subparsers(dest="command", required=True)

    train = sub.add_parser(
        "train", help="train SAC or PPO (seeds vmapped) into a run directory",
        description="Train an agent; with no argument: SAC on the bundled S&P 500 data.")
    train.add_argument("--algo", default=None, help="sac (default) or ppo")
    train.add_argument("--env", default=None,
                       help="'portfolio' (default, bundled S&P 500 data) or a gymnax name "
                            "such as Pendulum-v1, CartPole-v1")
    train.add_argument("--seeds", type=int, default=None,
                       help="seeds trained at once with vmap (default 2 on portfolio, else 4)")
    train.add_argument("--steps", type=int, default=None,
                       help="environment steps per seed (default: a few minutes on a CPU)")
    train.add_argument("--set", action="append", default=[], metavar="KEY=VALUE",
                       help="config / hyperparameter / env.<arg> override (repeatable); "
                            "`jaxstab keys` lists the valid keys")
    train.add_argument("--out", default=None,
                       help="run directory (default runs/<algo>-<env>-<timestamp>)")
    train.add_argument("--resume", action="store_true",
                       help="continue the run in --out from its last checkpoint")
    train.add_argument("--no-progress", action="store_true", help="no progress line")
    train.add_argument("--save-every", type=int, default=None, metavar="CHUNKS",
                       help="checkpoint every CHUNKS chunks (default: every chunk for SAC, "
                            "5 checkpoints per run for PPO)")
    train.add_argument("--seed", type=int, default=None, help="base PRNG seed (default 0)")
    train.add_argument("--seeds-per-batch", type=int, default=None, metavar="B",
                       help="run the seeds in groups of B (a loop inside the compiled program) "
                            "instead of one vmap over all of them; can be faster on a CPU "
                            "(PPO, 16 seeds in groups of 4: 1.2x on a 2-core machine; see "
                            "benchmarks/results/bench_seed_batching_cpu.md)")
    train.add_argument("--cpu-devices", type=int, default=None, metavar="D",
                       help="split the CPU into D JAX devices and the seeds over them (D must "
                            "divide --seeds); one per core uses every core: 2.3-2.5x faster "
                            "for 8-16 seeds on a 2-core machine (docs/distributed.md)")
    train.set_defaults(func=_train)

    ev = sub.add_parser("eval", help="evaluate a trained run: metrics table and plots")
    ev.add_argument("run_dir", help="a directory written by jaxstab train")
    ev.add_argument("--split", default=None,
                    help="portfolio data split: test (default), validation or train")
    ev.add_argument("--episodes", type=int, default=10,
                    help="episodes per seed (gymnax environments)")
    ev.add_argument("--seed", type=int, default=0)
    ev.set_defaults(func=_eval)

    bench = sub.add_parser("bench", help="run a benchmark suite (source checkout)")
    bench.add_argument("--suite", default="quick", help="quick (CI-sized) or full")
    bench.add_argument("--only", nargs="+", default=None, help="benchmark names to run")
    bench.add_argument("--list", action="store_true", help="list the benchmarks and exit")
    bench.add_argument("--dry-run", action="store_true", help="print the commands only")
    bench.set_defaults(func=_bench)

    keys = sub.add_parser("keys", help="list the valid --set keys and environments")
    keys.add_argument("--algo", default="sac", choices=("sac", "ppo"))
    keys.add_argument("--env", default=None)
    keys.set_defaults(func=_keys)
    demo = sub.add_parser("demo", help="a short tour of the numerical core")
    demo.add_argument("--seed", type=int, default=0)
    demo.add_argument("--batch", type=int, default=256, help="Sinkhorn batch size (must be > 0)")
    demo.set_defaults(func=_demo)
    return parser


def main(argv: list[str] | None = None) -> int:
    """Entry point of the ``jaxstab`` script; returns the exit code (2 for usage errors)."""
    parser = build_parser()
    argv = list(sys.argv[1:] if argv is None else argv)
    args = parser.parse_args(argv)
    args.argv = argv
    if getattr(args, "batch", 1) <= 0:
        parser.error(f"--batch must be a positive integer, got {args.batch}")
    for name in ("seeds", "steps", "episodes", "save_every", "seeds_per_batch", "cpu_devices"):
        v = getattr(args, name, None)
        if v is not None and v < 1:
            parser.error(f"--{name.replace('_', '-')} must be a positive integer, got {v}")
    from jaxstab.runs import UsageError

    try:
        return int(args.func(args))
    except UsageError as e:
        print(f"jaxstab {args.command}: error: {e}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print(f"jaxstab {args.command}: interrupted", file=sys.stderr)
        if args.command == "train":
            print("continue it with --resume (same --out)", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
