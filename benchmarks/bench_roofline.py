"""How fast could SAC and PPO run on this machine at all? A matmul roofline for the issue targets.

The issue targets compare steps/s with peers measured on the same machine. Two of them (SAC at
least 15x Stable-Baselines3, PPO at least 80x SB3) were set from SB3 figures measured when
the issue was written (SAC 64 steps/s, PPO 1.3k); on this machine SB3 runs several times faster,
which moves the targets. This script asks whether a target steps/s is reachable by ANY
implementation of the same algorithm and networks, by counting the matrix multiplications that
every SAC / PPO step must do and timing them on this machine:

* **necessary matmul FLOPs per environment step** (closed form, :func:`sac_matmuls`,
  :func:`ppo_matmuls`): forward passes, weight gradients and input gradients of the dense layers
  that the algorithm cannot skip (SAC: target actor and critics, critic loss, actor loss through
  the critics, acting; PPO: acting, one value per sample, and for every epoch the forward and
  backward passes of actor and critic). Cross-checked against the dot products in jaxstab's own
  programs (:func:`dot_flops` walks the jaxpr) -- they should be equal or, where jaxstab computes
  more, larger;
* **bound A** = necessary FLOPs / this machine's peak matmul rate (the best of a large square
  matmul on all cores and the step's own large products): no implementation that does those
  multiplications can beat it, whatever its kernels;
* **bound B** = the sum of the measured times of exactly those multiplications, one by one, with
  XLA's CPU kernels (what an XLA program such as jaxstab's or rejax's spends on matmuls alone,
  with zero time for anything else); an estimate where a program could fuse a small product into
  other work, so it is also given for the large products alone (every dimension >= ``LARGE``),
  which XLA runs as their own matmul calls;
* next to them: jaxstab's measured steps/s (one seed, the peer runner) and, with ``--peers-dir``,
  SB3's (same runners and budgets as ``bench_peers.py``), and the target k x SB3.

A target above bound A is out of reach for any implementation; one above bound B (large products
only) is out of reach for an XLA program on this machine. Run: ``python benchmarks/bench_roofline.py [--peers-dir DIR]``.
"""

from __future__ import annotations

import argparse
import os
import sys
import time
from typing import Any, NamedTuple, Sequence

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from benchmarks import _common as C  # noqa: E402  (imports jaxstab first: the CPU guard)

import jax  # noqa: E402
import jax.numpy as jnp  # noqa: E402
import numpy as np  # noqa: E402


class MatMul(NamedTuple):
    """``count`` products of an ``[m, k]`` by a ``[k, n]`` matrix (``2 m k n`` FLOPs each)."""

    m: int
    k: int
    n: int
    count: int
    what: str

    @property
    def flops(self) -> int:
        return 2 * self.m * self.k * self.n * self.count


#: products with every dimension at least this large count in "bound B, large products only"
LARGE = 64


def mlp_layers(in_dim: int, hidden: Sequence[int], out_dim: int) -> list[tuple[int, int]]:
    """``(fan_in, fan_out)`` of each dense layer of an MLP."""
    dims = [int(in_dim), *map(int, hidden), int(out_dim)]
    return list(zip(dims[:-1], dims[1:]))


def forward(layers: list[tuple[int, int]], rows: int, count: int, what: str) -> list[MatMul]:
    """``x W`` of every layer for ``rows`` inputs."""
    return [MatMul(rows, i, o, count, f"{what} fwd") for i, o in layers]


def weight_grads(layers: list[tuple[int, int]], rows: int, count: int, what: str
                 ) -> list[MatMul]:
    """``dW = x^T g`` of every layer: an ``[in, rows] x [rows, out]`` product."""
    return [MatMul(i, rows, o, count, f"{what} dW") for i, o in layers]


def input_grads(layers: list[tuple[int, int]], rows: int, count: int, what: str, *,
                first_cols: int | None = 0) -> list[MatMul]:
    """``dx = g W^T`` of every layer but the first; the first layer's only for ``first_cols``
    of its inputs (0: not needed, e.g. for constant inputs; SAC's actor loss needs the action's
    columns of the critic's first layer)."""
    out = [MatMul(rows, o, i, count, f"{what} dx") for i, o in layers[1:]]
    if first_cols:
        i, o = layers[0]
        out.insert(0, MatMul(rows, o, min(first_cols, i), count, f"{what} dx (first layer)"))
    return out


def sac_matmuls(obs_dim: int, action_dim: int, hidden: Sequence[int], batch: int, *,
                num_critics: int = 2, num_envs: int = 1) -> list[MatMul]:
    """The dense-layer products of one SAC environment step with one update (per seed).

    Actor ``obs -> 2 * action_dim`` (mean, log-std), ``num_critics`` critics ``(obs, action) ->
    1``. Update on ``batch`` samples: the next action from the actor and the target critics
    (forward); the critic loss (critics forward, weight gradients, input gradients of all but
    the first layer, whose input is data); the actor loss (actor forward, critics forward, the
    critics' input gradients down to the action, the actor's weight gradients and input
    gradients but the first layer's). Acting: the actor on ``num_envs`` observations.
    """
    actor = mlp_layers(obs_dim, hidden, 2 * action_dim)
    critic = mlp_layers(obs_dim + action_dim, hidden, 1)
    k, b = num_critics, batch
    return [
        *forward(actor, num_envs, 1, "acting: actor"),
        *forward(actor, b, 1, "target: actor"),
        *forward(critic, b, k, "target: critics"),
        *forward(critic, b, k, "critic loss: critics"),
        *weight_grads(critic, b, k, "critic loss: critics"),
        *input_grads(critic, b, k, "critic loss: critics"),
        *forward(actor, b, 1, "actor loss: actor"),
        *forward(critic, b, k, "actor loss: critics"),
        *input_grads(critic, b, k, "actor loss: critics", first_cols=action_dim),
        *weight_grads(actor, b, 1, "actor loss: actor"),
        *input_grads(actor, b, 1, "actor loss: actor"),
    ]


def ppo_matmuls(obs_dim: int, num_actions: int, hidden: Sequence[int], *, num_envs: int,
                num_steps: int, num_epochs: int, num_minibatches: int) -> list[MatMul]:
    """The dense-layer products of one PPO update (``num_envs x num_steps`` environment steps).

    Separate actor ``obs -> num_actions`` and critic ``obs -> 1``. Rollout: the actor on
    ``num_envs`` observations per step; values: the critic once per sample plus the
    observations after the last step (the least any GAE needs); update: for every epoch and
    minibatch, actor and critic forward, weight gradients and input gradients of all but the
    first layer.
    """
    actor = mlp_layers(obs_dim, hidden, num_actions)
    critic = mlp_layers(obs_dim, hidden, 1)
    n = num_envs * num_steps
    if n % num_minibatches:
        raise ValueError(f"num_envs * num_steps ({n}) must be a multiple of num_minibatches "
                         f"({num_minibatches})")
    mb, count = n // num_minibatches, num_epochs * num_minibatches
    out = [*forward(actor, num_envs, num_steps, "rollout: actor"),
           *forward(critic, n + num_envs, 1, "values: critic")]
    for name, layers in (("actor", actor), ("critic", critic)):
        out += [*forward(layers, mb, count, f"update: {name}"),
                *weight_grads(layers, mb, count, f"update: {name}"),
                *input_grads(layers, mb, count, f"update: {name}")]
    return out


def total_flops(mms: Sequence[MatMul]) -> int:
    return int(sum(m.flops for m in mms))


def sub_jaxprs(value: Any):
    """Jaxprs held in an equation parameter (a jaxpr, closed jaxpr or a tuple of them)."""
    if isinstance(value, (list, tuple)):
        for v in value:
            yield from sub_jaxprs(v)
    elif hasattr(value, "eqns"):
        yield value
    elif hasattr(value, "jaxpr") and hasattr(value.jaxpr, "eqns"):
        yield value.jaxpr


def live_jaxpr(fn: Any, *args: Any) -> Any:
    """``jax.make_jaxpr(fn)(*args)`` without its dead equations.

    A custom VJP returns every cotangent (e.g. jaxstab's dense layer computes the weight
    gradient of a critic that the actor loss only differentiates through), and XLA removes the
    unused ones; counting them would overstate the work, so equations whose results nothing
    uses are dropped first (JAX's own dead-code elimination).
    """
    from jax._src.interpreters import partial_eval as pe  # no public API for this

    closed = jax.make_jaxpr(fn)(*args)
    jaxpr, _ = pe.dce_jaxpr(closed.jaxpr, [True] * len(closed.jaxpr.outvars))
    return jaxpr


def dot_flops(jaxpr: Any, inside_while: bool = False) -> tuple[int, int]:
    """FLOPs of the ``dot_general`` equations of a (closed) jaxpr, sub-jaxprs included.

    ``scan`` bodies count ``length`` times, ``cond`` the most expensive branch, ``while``
    bodies once (their trip count is not static). Dead equations count too: pass
    :func:`live_jaxpr`'s result.

    Returns:
      ``(flops, dots_in_while_bodies)``: the total, and how many dot equations sit in while
      bodies (counted once each, so the total is a lower bound when that is non-zero).
    """
    jaxpr = getattr(jaxpr, "jaxpr", jaxpr)
    total, in_while = 0, 0
    for eqn in jaxpr.eqns:
        name = eqn.primitive.name
        if name == "dot_general":
            (lc, _rc), _ = eqn.params["dimension_numbers"]
            lhs = eqn.invars[0].aval.shape
            contracted = int(np.prod([lhs[d] for d in lc])) if lc else 1
            total += 2 * int(np.prod(eqn.outvars[0].aval.shape)) * contracted
            in_while += inside_while
            continue
        if name == "cond":
            costs = [dot_flops(b, inside_while) for b in eqn.params["branches"]]
            total += max(c[0] for c in costs)
            in_while += max(c[1] for c in costs)
            continue
        mult = int(eqn.params["length"]) if name == "scan" else 1
        for key, value in eqn.params.items():
            for sub in sub_jaxprs(value):
                f, w = dot_flops(sub, inside_while or (name == "while" and key == "body_jaxpr"))
                total += mult * f
                in_while += w
    return total, in_while


def time_matmul(m: int, k: int, n: int, *, inner: int = 200, repeats: int = 5) -> float:
    """Seconds per ``[m, k] x [k, n]`` float32 product with XLA's CPU kernels.

    ``inner`` products run in one ``lax.scan``, each on an operand that depends on the maximum
    of the previous product (so none is hoisted, and no entry can be skipped: a maximum has no
    algebraic shortcut through a product, as a slice or a sum would); the same loop with the
    dependency and a maximum over the operand instead of the product is timed too and its time
    subtracted. Best of ``repeats``.
    """
    key_a, key_b = jax.random.split(jax.random.key(0))
    a = jax.random.normal(key_a, (m, k), jnp.float32)
    b = jax.random.normal(key_b, (k, n), jnp.float32) / np.sqrt(k)

    def run(with_product: bool):
        def body(c, _):
            aa = a + c  # the dependency: c is 0 but the compiler cannot know
            out = aa @ b if with_product else aa
            return c * 0.0 + 1e-30 * jnp.max(out), None

        return jax.jit(lambda: jax.lax.scan(body, jnp.float32(0.0), None, length=inner)[0])

    best = {}
    for flag in (True, False):
        fn = run(flag)
        fn().block_until_ready()
        ts = []
        for _ in range(repeats):
            t = time.perf_counter()
            fn().block_until_ready()
            ts.append(time.perf_counter() - t)
        best[flag] = min(ts) / inner
    return max(best[True] - best[False], 1e-9)


def peak_rate(size: int = 1024, repeats: int = 5) -> float:
    """FLOP/s of a ``size x size`` float32 matmul on all of this process's cores (best of
    ``repeats``; the matrices are large enough for XLA to split the work over its threads)."""
    return 2.0 * size ** 3 / time_matmul(size, size, size, inner=10, repeats=repeats)


def bounds(mms: Sequence[MatMul], steps: int, peak: float, times: dict[tuple, float]
           ) -> dict[str, float]:
    """Bound A (FLOPs at ``peak``) and bound B (sum of the measured product times), as the
    largest possible environment steps/s when ``mms`` are the products of ``steps`` steps."""
    flops = total_flops(mms)
    t_b = sum(times[(m.m, m.k, m.n)] * m.count for m in mms)
    t_large = sum(times[(m.m, m.k, m.n)] * m.count for m in mms
                  if min(m.m, m.k, m.n) >= LARGE)
    return {"mflop_per_step": flops / steps / 1e6, "bound_a": steps * peak / flops,
            "bound_b": steps / t_b, "bound_b_large": steps / t_large}



COLUMNS = ["algorithm (1 seed)", "matmul MFLOP per env step (necessary)",
           "jaxstab program MFLOP per env step", "bound A steps/s (peak rate)",
           "bound B steps/s (XLA, these shapes)", "bound B, large products only",
           "jaxstab steps/s", "jaxstab / bound B", "SB3 steps/s", "target", "target steps/s",
           "target / bound A", "target / bound B", "target / bound B (large only)"]


def jaxstab_sac_program_flops(hidden: int, batch: int) -> tuple[float, int]:
    """Dot FLOPs of one jaxstab SAC update plus acting (jaxpr count), per environment step."""
    from jaxstab.agents.sac import SACConfig, default_hparams
    from jaxstab.agents.sac.sac import make_sac, make_sac_acting
    from jaxstab.replay import Transition

    cfg = SACConfig(hidden_sizes=(hidden, hidden), batch_size=batch)
    init, update = make_sac(3, 1, cfg)
    acting = make_sac_acting(1, cfg)
    hp = default_hparams(cfg, 1)
    state = init(jax.random.key(0), hp)
    z = jnp.zeros
    batch_ = Transition(z((batch, 3)), z((batch, 1)), z((batch,)), z((batch, 3)),
                        z((batch,), bool))
    f_upd, w1 = dot_flops(live_jaxpr(update, state, batch_, hp, jax.random.key(1)))
    f_act, w2 = dot_flops(live_jaxpr(
        lambda p, o, k: acting.sample(p, o, acting.initial_policy_state(1), k),
        state.actor_params, z((1, 3)), jax.random.key(2)))
    return float(f_upd + f_act), w1 + w2


def jaxstab_ppo_program_flops(hidden: int) -> tuple[float, int]:
    """Dot FLOPs per environment step of jaxstab's PPO training loop (one chunk of one update
    of the PureJaxRL CartPole settings: rollout, values, GAE, update; jaxpr count; the
    parameter initialization is not part of it)."""
    import gymnax

    from jaxstab.agents.ppo.ppo import PPOConfig, ppo_hparams
    from jaxstab.training.ppo import make_runner

    env, env_params = gymnax.make("CartPole-v1")
    cfg = PPOConfig(num_envs=4, num_steps=128, num_epochs=4, num_minibatches=4,
                    hidden_sizes=(hidden, hidden), total_timesteps=512)
    runner = make_runner(cfg, env, env_params, updates_per_chunk=1)
    hp = ppo_hparams()
    carry = runner.init(jax.random.key(0), hp)
    flops, in_while = dot_flops(live_jaxpr(runner.run_chunk, carry, hp, jnp.int32(0)))
    return flops / 512.0, in_while


def measured_steps_per_s(lib: str, algo: str, steps: int, peers_dir: str | None,
                         timeout: float) -> float | None:
    """steps/s of one seed from the peer runner (``bench_peers.run_job``); None on error."""
    from benchmarks import bench_peers as BP

    if lib != "jaxstab" and peers_dir is None:
        return None
    res = BP.run_job(BP.Job(lib, algo, steps, 1), peers_dir or BP.PEERS_DIR_DEFAULT,
                     timeout=timeout)
    if "error" in res:
        print(f"[roofline] {lib} {algo}: {res['error'][:300]}", file=sys.stderr)
        return None
    return float(res["steps_per_s"])


def rows_for(algo: str, mms: list[MatMul], steps: int, peak: float, times: dict,
             program_mflop: float, ours: float | None, sb3: float | None, factor: float
             ) -> list[Any]:
    b = bounds(mms, steps, peak, times)
    target = factor * sb3 if sb3 else None

    def r(x: float | None, d: int = 0) -> Any:
        return None if x is None else round(x, d) if d else int(round(x))

    def frac(x: float | None, bound: float) -> str | None:
        return None if x is None else f"{x / bound:.2f}"

    return [algo, round(b["mflop_per_step"], 3), round(program_mflop, 3), r(b["bound_a"]),
            r(b["bound_b"]), r(b["bound_b_large"]), r(ours), frac(ours, b["bound_b"]), r(sb3),
            f"{factor:g}x SB3", r(target), frac(target, b["bound_a"]),
            frac(target, b["bound_b"]), frac(target, b["bound_b_large"])]


def main(argv: list[str] | None = None) -> None:
    from benchmarks import bench_peers as BP

    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--peers-dir", default=None,
                    help="peer environments (benchmarks/peers/setup.sh); without it SB3 is not "
                         "run and the target columns stay empty")
    ap.add_argument("--hidden", type=int, default=64)
    ap.add_argument("--repeats", type=int, default=5)
    ap.add_argument("--timeout", type=float, default=1800.0)
    ap.add_argument("--skip-runs", action="store_true",
                    help="bounds only: do not run jaxstab or SB3 (for tests)")
    args = ap.parse_args(argv)
    h = (args.hidden, args.hidden)
    sac = sac_matmuls(3, 1, h, 256)
    ppo = ppo_matmuls(4, 2, h, num_envs=4, num_steps=128, num_epochs=4, num_minibatches=4)
    shapes = sorted({(m.m, m.k, m.n) for m in sac + ppo})
    times = {s: time_matmul(*s, repeats=args.repeats) for s in shapes}
    # tiny products are timed near zero (fused into the loop's reduction): the peak comes from
    # the large square product and the step's large products only
    peak = max(peak_rate(repeats=args.repeats),
               max(2.0 * m * k * n / t for (m, k, n), t in times.items()
                   if min(m, k, n) >= LARGE))
    sac_prog, w_sac = jaxstab_sac_program_flops(args.hidden, 256)
    ppo_prog, w_ppo = jaxstab_ppo_program_flops(args.hidden)
    runs = {}
    if not args.skip_runs:
        # the peer runners' own budgets (bench_peers.plan): SB3 on its reduced budget
        runs = {("jaxstab", "sac"): measured_steps_per_s("jaxstab", "sac", 20_000, None,
                                                         args.timeout),
                ("sb3", "sac"): measured_steps_per_s("sb3", "sac", 3_000, args.peers_dir,
                                                     args.timeout),
                ("jaxstab", "ppo"): measured_steps_per_s("jaxstab", "ppo", 499_712, None,
                                                         args.timeout),
                ("sb3", "ppo"): measured_steps_per_s("sb3", "ppo", 29_696, args.peers_dir,
                                                     args.timeout)}
    rows = [rows_for("SAC, Pendulum-v1, 1 update per step", sac, 1, peak, times, sac_prog / 1e6,
                     runs.get(("jaxstab", "sac")), runs.get(("sb3", "sac")),
                     BP.SAC_TARGETS["sb3"]),
            rows_for("PPO, CartPole-v1, PureJaxRL settings", ppo, 512, peak, times,
                     ppo_prog / 1e6, runs.get(("jaxstab", "ppo")), runs.get(("sb3", "ppo")),
                     BP.PPO_TARGETS["sb3"])]
    shape_lines = "; ".join(
        f"[{m}x{k}]x[{k}x{n}] " + (f"{t * 1e6:.1f} us ({2 * m * k * n / t / 1e9:.0f} GFLOP/s)"
                                   if t >= 1e-7 else "~0 us")
        for (m, k, n), t in times.items())
    notes = f"""
Networks {args.hidden}x{args.hidden}. SAC: obs 3, action 1 (actor outputs mean and log-std),
twin critics, batch 256, one environment, one update per environment step. PPO: obs 4, 2
actions, separate actor and critic, 4 envs x 128 steps, 4 epochs x 4 minibatches (one update =
512 environment steps).

Peak matmul rate (bound A): {peak / 1e9:.0f} GFLOP/s (the best of a 1024 x 1024 x 1024 product
on all cores and the large products below). Bound B times each product of the step with XLA's
CPU kernels, one product at a time (tiny products time near zero: XLA fuses them into the
timing loop's reduction): {shape_lines}.

jaxstab program MFLOP: the dot products in jaxstab's own programs, counted in their jaxprs (SAC:
one `update` plus acting; PPO: the whole `train` of one update, per environment step; dots
inside while bodies: SAC {w_sac}, PPO {w_ppo}, counted once). Larger than the necessary count
where jaxstab computes more (PPO: the critic on every step's observation AND its final
observation, 2 x 512 rows instead of 512 + 4).

jaxstab and SB3 steps/s: one seed, the peer runners of `bench_peers.py` with its budgets (SAC
20k steps for jaxstab, including 1000 warm-up steps without updates, 3000 for SB3; PPO 499,712
and 29,696). target = the issue's factor x SB3's steps/s measured here. A target / bound above
1 cannot be met: above bound A by any implementation doing these multiplications, above bound
B by any program whose matmuls run on XLA's CPU kernels, even with no time spent on anything
else (environment, activations, optimizer, random numbers, replay). Bound B sums isolated
timings, so it is an estimate where a program could fuse a small product into other work; the
"large products only" column keeps the products with every dimension >= {LARGE} (the hidden
layers' forward, input-gradient and weight-gradient products, which XLA runs as their own
matmul calls), a bound no XLA program escapes. The isolated timings are a best case (warm
caches, nothing else running), so real programs spend more on the same products.
"""
    C.write_results("bench_roofline", "SAC and PPO: matmul roofline vs the issue targets",
                    COLUMNS, rows, notes=notes,
                    extra={"peak_flops": peak, "matmul_seconds": {str(k): v for k, v in
                                                                  times.items()},
                           "runs": {f"{k[0]} {k[1]}": v for k, v in runs.items()}})


if __name__ == "__main__":
    main()
