"""Pieces shared by the standalone peer runners in ``benchmarks/peers/``.

Every runner (``jaxstab_*.py``, ``rejax_*.py``, ``sb3_*.py``, ``sbx_*.py``) runs as a script in its
own virtual environment, so this module imports nothing beyond the standard library and NumPy at
module level. The few helpers that drive a library (:func:`time_compiled`,
:func:`rejax_eval_callback`, :func:`time_rejax`, :func:`run_seeds_sequentially`) receive that
library's objects as arguments or import them inside the function, so they are only called from
the runners whose environment has the library.

A runner imports this module after putting its own directory on ``sys.path``::

    sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
    import _runner_common as rc

and ends by printing ONE JSON result line with :func:`emit_result`. ``benchmarks/bench_peers.py``
(``parse_result_line``) reads the last stdout line that is a JSON object with a ``"peer"`` key and
requires ``steps``, ``seeds``, ``run_s``, ``steps_per_s`` and ``final_returns`` (one entry per
seed). The line's keys::

    {"peer", "algo", "env", "steps", "seeds", "hidden": [h, h], "compile_s" (null if none),
     "run_s", "run_s_all": [...], "steps_per_s", "final_returns": [...], "eval": "...",
     <runner-specific extras>, "versions": {package: version or null}}

Timing has two meanings, chosen by ``parallel_seeds`` (see :func:`timing_fields`): runners that
train all seeds in one vectorized program (jaxstab, rejax) report the median program time over
repeats and ``steps_per_s = seeds * steps / run_s``; runners that train seeds one after another
(SB3, SBX) report the mean per-seed time and ``steps_per_s = seeds * steps / sum(times)``.
"""

from __future__ import annotations

import argparse
import importlib.metadata as md
import json
import time
from typing import Any, Callable, Sequence

import numpy as np

#: SB3/SBX's ``learning_starts`` (and rejax's ``fill_buffer``, jaxstab's ``warmup_steps``) in the
#: SAC runners: the environment steps collected before the first gradient step.
LEARNING_STARTS = 1_000

#: Help text of ``--torch-threads`` (the PyTorch runners).
_TORCH_THREADS_HELP = ("torch.set_num_threads (default 1: on the shared 2-core machine torch's "
                       "default of 2 threads ran PPO 30x slower under load)")


def make_parser(description: str, *, steps: int, seeds: int, repeats: bool = False,
                torch_threads: bool = False) -> argparse.ArgumentParser:
    """The runners' common command line.

    Flags: ``--steps`` (environment steps per seed), ``--seeds``, ``--hidden`` (width of both
    hidden layers, default 64), ``--eval-episodes`` (default 10), ``--seed`` (base seed, default
    0), and optionally ``--repeats`` (timed calls of a compiled program, default 1) and
    ``--torch-threads`` (default 1). Runners add their own flags to the returned parser.

    Args:
      description: the parser's description (the runner's docstring's first line).
      steps: default of ``--steps``.
      seeds: default of ``--seeds``.
      repeats: whether to add ``--repeats``.
      torch_threads: whether to add ``--torch-threads``.

    Returns:
      The :class:`argparse.ArgumentParser`.

    Example:
      >>> ap = make_parser("demo", steps=3_000, seeds=1)
      >>> ap.parse_args(["--steps", "300"]).steps
      300
    """
    ap = argparse.ArgumentParser(description=description)
    ap.add_argument("--steps", type=int, default=steps)
    ap.add_argument("--seeds", type=int, default=seeds)
    ap.add_argument("--hidden", type=int, default=64)
    ap.add_argument("--eval-episodes", type=int, default=10)
    if repeats:
        ap.add_argument("--repeats", type=int, default=1)
    ap.add_argument("--seed", type=int, default=0)
    if torch_threads:
        ap.add_argument("--torch-threads", type=int, default=1, help=_TORCH_THREADS_HELP)
    return ap


def parse_args(doc: str | None, argv: Sequence[str] | None, *, steps: int, seeds: int,
               repeats: bool = False, torch_threads: bool = False,
               extra_ints: dict[str, int] | None = None) -> argparse.Namespace:
    """Parse a runner's command line: :func:`make_parser` plus integer flags ``extra_ints``.

    Args:
      doc: the runner's module docstring (its first line is the description).
      argv: the arguments (``None``: ``sys.argv[1:]``).
      steps, seeds, repeats, torch_threads: as in :func:`make_parser`.
      extra_ints: more integer flags, ``{"--flag": default}``.

    Returns:
      The parsed :class:`argparse.Namespace`.
    """
    ap = make_parser(doc_summary(doc), steps=steps, seeds=seeds, repeats=repeats,
                     torch_threads=torch_threads)
    for flag, default in (extra_ints or {}).items():
        ap.add_argument(flag, type=int, default=default)
    return ap.parse_args(argv)


def doc_summary(doc: str | None) -> str:
    """First line of a module docstring (the runners' ``--help`` description)."""
    return (doc or "").strip().split("\n")[0]


def check_steps(steps: int, *, minimum: int, multiple: int = 1, why: str = "") -> None:
    """Reject a ``--steps`` below ``minimum`` or not a multiple of ``multiple``.

    Raises:
      ValueError: naming ``--steps`` and the requirement.
    """
    if steps < minimum or steps % multiple:
        need = f">= {minimum}" + (f" {why}" if why else "")
        if multiple > 1:
            need = f"a multiple of {multiple} and {need}"
        raise ValueError(f"--steps must be {need}, got {steps}")


def versions(*names: str) -> dict[str, str | None]:
    """Installed versions of the distributions ``names`` (``None`` for one not installed).

    Example:
      >>> versions("numpy")["numpy"] is not None
      True
    """
    out: dict[str, str | None] = {}
    for n in names:
        try:
            out[n] = md.version(n)
        except md.PackageNotFoundError:
            out[n] = None
    return out


def time_compiled(jitted: Any, args_for: Callable[[int], tuple], *, repeats: int,
                  block: Callable[[Any], Any]) -> tuple[float, list[float], Any]:
    """Compile a jitted function ahead of time, then time ``repeats`` calls of it.

    The program is lowered and compiled on ``args_for(0)`` (timed as ``compile_s``); call ``r``
    runs on ``args_for(r)`` and is timed until ``block`` (``jax.block_until_ready``) returns.

    Args:
      jitted: a ``jax.jit``-wrapped function (anything with ``.lower(*args).compile()``).
      args_for: repeat index -> positional arguments (e.g. that repeat's seed keys).
      repeats: number of timed calls (>= 1).
      block: waits for the outputs and returns them.

    Returns:
      ``(compile_s, times, outputs)``: compile seconds, the ``repeats`` call times in seconds,
      and the last call's outputs.

    Raises:
      ValueError: if ``repeats < 1``.
    """
    if repeats < 1:
        raise ValueError(f"--repeats must be >= 1, got {repeats}")
    t0 = time.perf_counter()
    compiled = jitted.lower(*args_for(0)).compile()
    compile_s = time.perf_counter() - t0
    times, out = [], None
    for rep in range(repeats):
        args = args_for(rep)
        t0 = time.perf_counter()
        out = block(compiled(*args))
        times.append(time.perf_counter() - t0)
    return compile_s, times, out


def time_first_call(call: Callable[[int], Any], *, repeats: int,
                    block: Callable[[Any], Any]) -> tuple[float, list[float], Any]:
    """Time a function that compiles on its first call (e.g. ``jaxstab.distributed.sweep``).

    Call 0 (compile + run) is made once untimed-for-runs; then ``repeats`` calls ``call(r)``
    are timed. ``compile_s`` is the first call's time minus the fastest timed call (an
    estimate: such functions expose no separate compile step).

    Returns:
      ``(compile_s, times, outputs of the last call)``.
    """
    if repeats < 1:
        raise ValueError(f"--repeats must be >= 1, got {repeats}")
    t0 = time.perf_counter()
    block(call(0))
    first = time.perf_counter() - t0
    times, out = [], None
    for rep in range(repeats):
        t0 = time.perf_counter()
        out = block(call(rep))
        times.append(time.perf_counter() - t0)
    return max(first - min(times), 0.0), times, out


#: library name of jaxstab's SAC runs with ``make_train(..., seed_vmap="vectorize")``.
VECTORIZED_NAME = "jaxstab, vectorized"


def jaxstab_name(seeds_per_batch: int | None, cpu_devices: int, vectorize: bool = False) -> str:
    """Library name jaxstab's runners report: how the seeds were run."""
    if cpu_devices:
        return f"jaxstab, {cpu_devices} CPU devices"
    if vectorize:
        return VECTORIZED_NAME
    return "jaxstab" if seeds_per_batch is None else f"jaxstab, groups of {seeds_per_batch}"


def timing_fields(times: Sequence[float], *, steps: int, seeds: int,
                  compile_s: float | None, parallel_seeds: bool) -> dict[str, Any]:
    """The JSON line's ``compile_s``, ``run_s``, ``run_s_all`` and ``steps_per_s``.

    With ``parallel_seeds`` (one program trains all seeds; ``times`` are repeats of it):
    ``run_s = median(times)`` and ``steps_per_s = seeds * steps / run_s``. Without (seeds trained
    one after another; ``times[i]`` is seed i's training time): ``run_s = mean(times)`` and
    ``steps_per_s = seeds * steps / sum(times)``. Seconds are rounded to milliseconds;
    ``steps_per_s`` is computed from the unrounded times.

    Raises:
      ValueError: if ``times`` is empty.
    """
    if len(times) == 0:
        raise ValueError("times is empty: no timed run")
    if parallel_seeds:
        run_s = float(np.median(times))
        steps_per_s = seeds * steps / run_s
    else:
        run_s = float(np.mean(times))
        steps_per_s = seeds * steps / sum(times)
    return {"compile_s": None if compile_s is None else round(compile_s, 3),
            "run_s": round(run_s, 3), "run_s_all": [round(t, 3) for t in times],
            "steps_per_s": steps_per_s}


def emit_result(*, peer: str, algo: str, env: str, steps: int, seeds: int, hidden: int,
                times: Sequence[float], compile_s: float | None, parallel_seeds: bool,
                final_returns: Any, eval: str, versions: dict[str, str | None],
                **extra: Any) -> dict[str, Any]:
    """Build the runner's result dict, print it as ONE JSON line (flushed) and return it.

    Args:
      peer, algo, env: what ran (e.g. ``"rejax"``, ``"sac"``, ``"Pendulum-v1"``).
      steps: environment steps per seed actually trained.
      seeds: number of seeds.
      hidden: hidden-layer width (reported as ``[hidden, hidden]``).
      times, compile_s, parallel_seeds: see :func:`timing_fields`.
      final_returns: per-seed final evaluation returns, shape ``[seeds]`` (any array-like).
      eval: how ``final_returns`` were measured, in words.
      versions: from :func:`versions`.
      **extra: runner-specific keys (e.g. ``steps_per_s_learning``, ``train_returns``),
        placed after ``eval``.

    Returns:
      The printed dict.
    """
    result: dict[str, Any] = {
        "peer": peer, "algo": algo, "env": env, "steps": int(steps), "seeds": int(seeds),
        "hidden": [hidden, hidden],
        **timing_fields(times, steps=steps, seeds=seeds, compile_s=compile_s,
                        parallel_seeds=parallel_seeds),
        "final_returns": [float(x) for x in np.asarray(final_returns, dtype=np.float64).ravel()],
        "eval": eval,
        **extra,
        "versions": versions,
    }
    print(json.dumps(result), flush=True)
    return result


def rejax_eval_callback(evaluate: Callable, act: Callable[[Any, Any, Any], Any],
                        episodes: int) -> Callable:
    """A rejax ``eval_callback`` returning the mean return of ``episodes`` deterministic episodes.

    Args:
      evaluate: ``rejax.evaluate.evaluate``.
      act: ``(actor, actor_params, obs [obs_dim]) -> action`` (deterministic; jnp code).
      episodes: episodes per evaluation.

    Returns:
      ``callback(algo, train_state, rng) -> scalar`` for ``algo.replace(eval_callback=...)``.
    """
    def callback(algo, ts, rng):
        actor, params = algo.actor, ts.actor_ts.params
        _, returns = evaluate(lambda obs, _rng: act(actor, params, obs), rng, algo.env,
                              algo.env_params, episodes, algo.env_params.max_steps_in_episode)
        return returns.mean()

    return callback


def set_cpu_devices(n: int) -> None:
    """Give this process ``n`` CPU devices (``jax_num_cpu_devices``) before JAX starts.

    One per core lets a seed sweep run a per-device program on every core (the programs are
    made of many small operations, which XLA runs on one thread each). Imports ``jax`` inside.

    Raises:
      ValueError: ``--cpu-devices`` not a positive int.
      RuntimeError: the JAX backend already exists (then the setting cannot take effect).
    """
    if not isinstance(n, int) or n < 1:
        raise ValueError(f"--cpu-devices must be a positive int, got {n!r}")
    import jax

    try:
        jax.config.update("jax_num_cpu_devices", n)
    except Exception as err:  # refused once a backend exists
        raise RuntimeError("--cpu-devices must be applied before JAX creates its backend") from err


def shard_seeds(fn: Callable[..., Any], n_devices: int) -> Any:
    """``jit(shard_map(vmap(fn)))``: the leading seed axis of every argument and output split
    into ``n_devices`` equal blocks, one vmapped block per CPU device, no communication (what
    ``jaxstab.distributed.sweep`` does, written out for the peers' runners)."""
    import jax
    from jax.sharding import Mesh
    from jax.sharding import PartitionSpec as P

    devices = jax.devices()
    if len(devices) < n_devices:
        raise ValueError(f"--cpu-devices {n_devices}: only {len(devices)} devices exist")
    mesh = Mesh(np.asarray(devices[:n_devices], dtype=object), ("seeds",))
    return jax.jit(jax.shard_map(jax.vmap(fn), mesh=mesh, in_specs=P("seeds"),
                                 out_specs=P("seeds"), check_vma=False))


def time_rejax(algo: Any, act: Callable[[Any, Any, Any], Any], *, seeds: int, seed: int,
               repeats: int, eval_episodes: int, cpu_devices: int = 0
               ) -> tuple[float, list[float], Any]:
    """Time ``jit(vmap(algo.train))`` of a rejax algorithm with a deterministic evaluation.

    Replaces rejax's stochastic evaluation by :func:`rejax_eval_callback` with ``act``, then
    :func:`time_compiled` over ``seeds`` keys ``split(PRNGKey(seed + repeat), seeds)``; with
    ``cpu_devices`` > 0 the seeds are split over that many CPU devices (:func:`shard_seeds`).
    Imports ``jax`` and ``rejax`` inside (call it only in the rejax environment).

    Returns:
      ``(compile_s, times, eval_returns [seeds, num_evals])`` (the last repeat's evaluations).
    """
    import jax
    from rejax.evaluate import evaluate

    algo = algo.replace(eval_callback=rejax_eval_callback(evaluate, act, eval_episodes))
    program = (shard_seeds(algo.train, cpu_devices) if cpu_devices
               else jax.jit(jax.vmap(algo.train)))
    compile_s, times, (_, ev) = time_compiled(
        program,
        lambda rep: (jax.random.split(jax.random.PRNGKey(seed + rep), seeds),),
        repeats=repeats, block=jax.block_until_ready)
    return compile_s, times, ev


def run_seeds_sequentially(make_model: Callable[[int], Any], make_eval_env: Callable[[], Any], *,
                           steps: int, args: argparse.Namespace,
                           learning_starts: int | None = None) -> dict[str, list[float]]:
    """Train and evaluate SB3-API models (SB3, SBX) one seed after another.

    For seed ``s`` in ``range(args.seeds)``: ``model = make_model(args.seed + s)``, time
    ``model.learn(total_timesteps=steps)``, then ``evaluate_policy(model, make_eval_env(),
    n_eval_episodes=args.eval_episodes, deterministic=True)`` (not timed). With ``learning_starts``,
    also the learning-phase rate ``(steps - learning_starts) / (t_end - t_first_gradient_step)``,
    the wall time of the first step at or past ``learning_starts`` being recorded by a callback
    (NaN if ``steps <= learning_starts``).
    Imports ``stable_baselines3`` inside (call it only in the sb3 environment).

    Returns:
      ``{"times": [seeds], "finals": [seeds]}`` plus ``"learn_rates": [seeds]`` with
      ``learning_starts``.
    """
    from stable_baselines3.common.callbacks import BaseCallback
    from stable_baselines3.common.evaluation import evaluate_policy

    class _LearnStart(BaseCallback):
        # records the wall time when the first gradient step is due (after learning_starts)
        def __init__(self) -> None:
            super().__init__()
            self.t: float | None = None

        def _on_step(self) -> bool:
            if self.t is None and self.num_timesteps >= learning_starts:
                self.t = time.perf_counter()
            return True

    out: dict[str, list[float]] = {"times": [], "finals": []}
    if learning_starts is not None:
        out["learn_rates"] = []
    for s in range(args.seeds):
        model = make_model(args.seed + s)
        cb = _LearnStart() if learning_starts is not None else None
        t0 = time.perf_counter()
        model.learn(total_timesteps=steps, callback=cb)
        t1 = time.perf_counter()
        out["times"].append(t1 - t0)
        if cb is not None:  # NaN when training never got past learning_starts
            out["learn_rates"].append((steps - learning_starts) / (t1 - cb.t)
                                      if cb.t is not None and steps > learning_starts
                                      else float("nan"))
        mean, _ = evaluate_policy(model, make_eval_env(), n_eval_episodes=args.eval_episodes,
                                  deterministic=True)
        out["finals"].append(float(mean))
    return out


def sb3_eval_text(episodes: int) -> str:
    """The ``eval`` description of the SB3/SBX runners."""
    return f"evaluate_policy deterministic=True, mean of {episodes} episodes after training"


def emit_sequential(*, peer: str, algo: str, env: str, steps: int, args: argparse.Namespace,
                    runs: dict[str, list[float]], compile_s: float | None,
                    versions: dict[str, str | None], **extra: Any) -> dict[str, Any]:
    """:func:`emit_result` for the output of :func:`run_seeds_sequentially`.

    Adds ``steps_per_s_learning`` (mean of the per-seed learning-phase rates) when ``runs`` has
    ``learn_rates``; ``eval`` is :func:`sb3_eval_text`; seeds, hidden width and evaluation
    episodes come from the parsed ``args``.
    """
    if "learn_rates" in runs:
        extra = {"steps_per_s_learning": float(np.mean(runs["learn_rates"])), **extra}
    return emit_result(peer=peer, algo=algo, env=env, steps=steps, seeds=args.seeds,
                       hidden=args.hidden, times=runs["times"], compile_s=compile_s,
                       parallel_seeds=False, final_returns=runs["finals"],
                       eval=sb3_eval_text(args.eval_episodes), versions=versions, **extra)
