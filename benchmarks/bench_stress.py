"""Stress and ablation suite: which stabilizer prevents which failure (issues 3 and 7).

For every stress setting (reward x1e-3, reward x1e3, learning rate x10, Student-t(2) reward
noise, a mid-training regime switch of the reward scale, NaN injection into rewards) and every
algorithm (SAC on gymnax Pendulum-v1, PPO on gymnax CartPole-v1; SAC on the portfolio
environment once ``jaxstab.envs.make_portfolio`` exists) it trains: all stabilizers on, each one
switched off in turn, all off; ``--seeds`` seeds vmapped in one jit per configuration. Stress
settings are applied with :mod:`jaxstab.envs.wrappers` (``lr x10`` through the hyperparameters).

SAC stabilizers (critic = TQC quantile critic, 2 x 25 atoms, 64x64 networks):
  global gradient clipping (``max_grad_norm`` 10 vs None), the non-finite update skip
  (``skip_nonfinite``), and the quantile-loss variance scaling (``"normalize"`` vs the seed's
  ``"seed"`` rule vs ``"none"``). "all off" = no clipping, no skip, ``variance_scaling="seed"``:
  seed 000's configuration. With reward x1e3 that is issue 3's reproduction of seed 000's
  failure; for that setting the script also turns each stabilizer back *on* alone.
PPO stabilizers (CartPole, PureJaxRL hyperparameters, 4 envs x 128 steps):
  log-ratio clamp, non-finite skip, gradient clipping (0.5 vs off = 1e9), advantage
  normalization (global vs none), reward normalization, in-graph rollback, KL early stopping.

Per configuration: fraction of seeds diverged (non-finite parameters, or final deterministic
return on the *clean* environment below a threshold: SAC Pendulum < -1000, about a random
policy; PPO CartPole < 50), seeds with non-finite parameters, skipped (non-finite) updates,
rollbacks, final return mean +- std, and for SAC max/final alpha (ent_coef) and max critic loss.
Figures: ``benchmarks/results/figures/bench_stress_{sac,ppo}.png`` and the seed-000 figure
``bench_stress_sac_seed000.png``.

Which variants run per setting is set by ``SAC_PLAN`` / ``PPO_PLAN`` (the full grid did not fit
the shared 2-core machine; the settings where a stabilizer matters most get every variant), and
variants that differ only in traced hyperparameters share one compiled program as vmapped lanes.
Setting ``none`` (no stress) gives the reference runs.

Usage: ``python benchmarks/bench_stress.py --algo sac|ppo|all [--seeds 8] [--quick]
[--settings ...] [--variants ...] [--sac-steps N] [--ppo-steps N] [--budget-min M] [--tag T]``;
``--quick`` is a tiny smoke run that writes nothing; ``--budget-min`` stops starting new settings
after M minutes; ``--summarize`` prints the critic-loss / alpha statistics used by the verdicts
from the committed results; ``--rewrite [--verdicts FILE]`` re-renders the committed tables,
notes and figures from their JSON.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from typing import Any

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from benchmarks._common import RESULTS_DIR, write_results  # noqa: E402  (CPU guard first)

import gymnax  # noqa: E402
import jax  # noqa: E402
import jax.numpy as jnp  # noqa: E402
import numpy as np  # noqa: E402

from jaxstab.agents.common import tree_all_finite  # noqa: E402
from jaxstab.agents.ppo.ppo import PPOConfig, ppo_hparams  # noqa: E402
from jaxstab.agents.sac import SACConfig, default_hparams, make_sac_actor  # noqa: E402
from jaxstab.envs import wrappers as W  # noqa: E402
from jaxstab.training import ppo as ppo_training  # noqa: E402
from jaxstab.training import sac as sac_training  # noqa: E402

SETTINGS = ("none", "reward x1e3", "NaN rewards", "lr x10", "regime switch", "student-t rewards",
            "reward x1e-3")
SAC_COLLAPSE = -1000.0
PPO_COLLAPSE = 50.0
NAN_FRAC = 1e-3
SAC_BATCH = 64
SAC_ATOMS = 10
STUDENT_T_SCALE = 1.0
REGIME_FACTOR = 10.0

# SAC variants: name -> (max_grad_norm, skip_nonfinite, variance_scaling)
SAC_ALL_ON = dict(skip_nonfinite=True, variance_scaling="normalize")
NO_CLIP = dict(max_grad_norm=1e9)  # clip_by_global_norm(1e9): the identity on finite gradients
# name -> (SACConfig overrides (static), SACHParams overrides (vmapped lanes of one program))
SAC_VARIANTS = {
    "all on": ({}, {}),
    "- grad clip": ({}, NO_CLIP),
    "- nonfinite skip": (dict(skip_nonfinite=False), {}),
    "vs seed (- normalize)": (dict(variance_scaling="seed"), {}),
    "vs none (- normalize)": (dict(variance_scaling="none"), {}),
    "all off (seed 000)": (dict(skip_nonfinite=False, variance_scaling="seed"), NO_CLIP),
}
# issue 3: from seed 000's configuration, each stabilizer back on alone (reward x1e3 only)
SAC_SEED000_EXTRA = {
    "seed 000 + grad clip": (dict(skip_nonfinite=False, variance_scaling="seed"), {}),
    "seed 000 + nonfinite skip": (dict(variance_scaling="seed"), NO_CLIP),
    "seed 000 + vs normalize": (dict(skip_nonfinite=False), NO_CLIP),
}

PPO_ALL_ON = dict(clamp_log_ratio=True, skip_nonfinite=True, adv_norm="global",
                  reward_norm=True, rollback=True, early_stopping=True)
OFF = 1e9  # a threshold so large that the stabilizer never acts (shares the compiled program)
PPO_VARIANTS = {
    "all on": ({}, {}),
    "- logratio clamp": ({}, dict(logratio_clip=OFF)),
    "- grad clip": ({}, dict(max_grad_norm=OFF)),
    "- early stop": ({}, dict(target_kl=OFF)),
    "- nonfinite skip": (dict(skip_nonfinite=False), {}),
    "- rollback": (dict(rollback=False), {}),
    "- reward norm": (dict(reward_norm=False), {}),
    "- adv norm": (dict(adv_norm="none"), {}),
    "all off": (dict(skip_nonfinite=False, adv_norm="none", reward_norm=False, rollback=False,
                     early_stopping=False), dict(logratio_clip=OFF, max_grad_norm=OFF)),
}

# Which variants run per setting (the full grid did not fit this shared machine's budget; the
# settings where a stabilizer can matter most get the full set).
SAC_PLAN = {
    "reward x1e3": list(SAC_VARIANTS) + list(SAC_SEED000_EXTRA),
    "NaN rewards": ["all on", "- grad clip", "- nonfinite skip", "all off (seed 000)"],
}
SAC_PLAN["none"] = ["all on", "- grad clip"]
PPO_PLAN_NONE = ["all on", "- logratio clamp", "- grad clip", "- early stop"]
SAC_DEFAULT_PLAN = ["all on", "- grad clip", "all off (seed 000)"]
PPO_PLAN = {"NaN rewards": list(PPO_VARIANTS), "none": PPO_PLAN_NONE}
PPO_DEFAULT_PLAN = ["all on", "- logratio clamp", "- grad clip", "- early stop",
                    "- reward norm", "all off"]


def wrap(env: Any, setting: str, steps_per_env: int) -> Any:
    """The stressed training environment of a setting (``lr x10`` leaves it unchanged)."""
    if setting == "reward x1e-3":
        return W.RewardScale(env, 1e-3)
    if setting == "reward x1e3":
        return W.RewardScale(env, 1e3)
    if setting == "student-t rewards":
        return W.StudentTReward(env, scale=STUDENT_T_SCALE, df=2.0)
    if setting == "regime switch":
        return W.RegimeSwitch(env, switch_step=steps_per_env // 2, factor=REGIME_FACTOR)
    if setting == "NaN rewards":
        return W.NonFiniteInjection(env, reward_frac=NAN_FRAC, value="nan")
    if setting in ("lr x10", "none"):
        return env
    raise ValueError(f"unknown setting {setting!r}")


def _downsample(x: np.ndarray, points: int = 100) -> np.ndarray:
    """[S, T] -> [S, points] block means (NaN-aware: a block with a NaN stays NaN)."""
    s, t = x.shape
    b = max(1, t // points)
    t2 = (t // b) * b
    return x[:, :t2].reshape(s, t2 // b, b).mean(-1)


def _stats(x: np.ndarray) -> str:
    x = np.asarray(x, np.float64)
    return f"{np.nanmean(x):.1f} +- {np.nanstd(x):.1f}" if np.isfinite(x).any() else "nan"


# ----------------------------------------------------------------------------------------- SAC

def sac_clean_eval(cfg: SACConfig, env: Any, env_params: Any, episodes: int = 5):
    """``evaluate(actor_params, key) -> mean return`` of the deterministic policy (clean env)."""
    _, deterministic_action, _ = make_sac_actor(1, cfg)
    space = env.action_space(env_params)
    low, high = jnp.asarray(space.low, jnp.float32), jnp.asarray(space.high, jnp.float32)
    steps = int(env_params.max_steps_in_episode)

    def evaluate(actor_params, key):
        k0, k1 = jax.random.split(key)
        obs, st = jax.vmap(env.reset, in_axes=(0, None))(jax.random.split(k0, episodes),
                                                         env_params)

        def step(c, k):
            obs, st, ret, alive = c
            a = deterministic_action(actor_params, obs.reshape(episodes, -1))
            a = low + 0.5 * (a + 1.0) * (high - low)
            obs, st, r, te, tr, _ = jax.vmap(env.step, in_axes=(0, 0, 0, None))(
                jax.random.split(k, episodes), st, a, env_params)
            ret = ret + jnp.where(alive, r, 0.0)
            return (obs, st, ret, alive & ~(te | tr)), None

        c0 = (obs, st, jnp.zeros(episodes), jnp.ones(episodes, bool))
        (_, _, ret, _), _ = jax.lax.scan(step, c0, jax.random.split(k1, steps))
        return jnp.mean(ret)

    return evaluate


def _split_lanes(res: dict, lanes: int, seeds: int) -> list[dict]:
    return [{k: np.asarray(v)[i * seeds:(i + 1) * seeds] for k, v in res.items()}
            for i in range(lanes)]


def _batched(hps: list, seeds: int):
    """Stack per-lane hparams, each repeated ``seeds`` times: leaves ``[lanes * seeds]``."""
    return jax.tree_util.tree_map(lambda *xs: jnp.repeat(jnp.stack(xs), seeds, axis=0), *hps)


def run_sac(setting: str, static: dict, lanes: list[tuple[str, dict]], seeds: int,
            steps: int) -> list[dict]:
    """One compiled program: ``len(lanes) x seeds`` vmapped runs sharing a static config."""
    env, env_params = gymnax.make("Pendulum-v1")
    kw = {**SAC_ALL_ON, **static}
    cfg = SACConfig(hidden_sizes=(64, 64), batch_size=SAC_BATCH, buffer_size=steps,
                    critic="quantile", num_quantiles=SAC_ATOMS, tqc_drop=1,
                    warmup_steps=max(SAC_BATCH, min(1000, steps // 10)), total_steps=steps,
                    eval_interval=steps, eval_episodes=1, max_grad_norm=10.0,
                    skip_nonfinite=kw["skip_nonfinite"], variance_scaling=kw["variance_scaling"])
    lr = 1e-2 if setting == "lr x10" else 1e-3
    hps = _batched([default_hparams(cfg, 1, **{"actor_lr": lr, "critic_lr": lr, "alpha_lr": lr,
                                               **hp}) for _, hp in lanes], seeds)
    n = len(lanes) * seeds
    train = sac_training.make_train(cfg, wrap(env, setting, steps), env_params)
    evaluate = sac_clean_eval(cfg, env, env_params)

    def run(keys, hps):
        out = jax.vmap(train)(keys, hps)
        ag = out.state.agent
        finite = jax.vmap(lambda a: tree_all_finite((a.actor_params, a.critic_params,
                                                     a.log_alpha)))(ag)
        ret = jax.vmap(evaluate)(ag.actor_params, jax.random.split(jax.random.key(123), n))
        m = out.metrics
        return dict(finite=finite, ret=ret, skipped=ag.skipped, alpha=m["alpha"],
                    critic_loss=m["critic_loss"], updated=m["updated"])

    keys = jnp.tile(jax.random.split(jax.random.key(0), seeds), (len(lanes),))
    t0 = time.perf_counter()
    compiled = jax.jit(run).lower(keys, hps).compile()
    t1 = time.perf_counter()
    res_all = jax.device_get(compiled(keys, hps))
    t2 = time.perf_counter()
    out = []
    for (name, _), res in zip(lanes, _split_lanes(res_all, len(lanes), seeds)):
        finite = np.asarray(res["finite"])
        ret = np.where(finite, np.asarray(res["ret"], np.float64), np.nan)
        diverged = (~finite) | ~(np.nan_to_num(ret, nan=-np.inf) >= SAC_COLLAPSE)
        upd = np.asarray(res["updated"]) > 0
        alpha = np.where(upd, np.asarray(res["alpha"], np.float64), np.nan)
        closs = np.where(upd, np.asarray(res["critic_loss"], np.float64), np.nan)
        nonfinite_steps = upd & (~np.isfinite(alpha) | ~np.isfinite(closs))
        fin_a = np.where(np.isfinite(alpha), alpha, np.nan)
        fin_c = np.where(np.isfinite(closs), closs, np.nan)
        final_alpha = alpha[:, -1]
        with np.errstate(all="ignore"):
            out.append(dict(
                algo="sac", setting=setting, variant=name, seeds=seeds, steps=steps,
                diverged_frac=float(diverged.mean()), nonfinite_params=int((~finite).sum()),
                skipped_per_seed=float(np.mean(res["skipped"])),
                nonfinite_metric_steps=int(nonfinite_steps.sum()),
                ret=ret.tolist(), ret_str=_stats(ret), max_alpha=float(np.nanmax(fin_a)),
                final_alpha_median=float(np.nanmedian(final_alpha))
                if np.isfinite(final_alpha).any() else float("nan"),
                final_alpha_nonfinite=int((~np.isfinite(final_alpha)).sum()),
                max_critic_loss=float(np.nanmax(fin_c)), compile_s=t1 - t0, run_s=t2 - t1,
                alpha_traj=_downsample(alpha).tolist(), closs_traj=_downsample(closs).tolist()))
    return out


# ----------------------------------------------------------------------------------------- PPO

def run_ppo(setting: str, static: dict, lanes: list[tuple[str, dict]], seeds: int,
            steps: int) -> list[dict]:
    """One compiled program: ``len(lanes) x seeds`` vmapped runs sharing a static config."""
    env, env_params = gymnax.make("CartPole-v1")
    cfg = PPOConfig(**{**dict(num_envs=4, num_steps=128, num_epochs=4, num_minibatches=4,
                              total_timesteps=steps, lr_schedule="linear"),
                       **PPO_ALL_ON, **static})
    lr = 2.5e-3 if setting == "lr x10" else 2.5e-4
    hps = _batched([ppo_hparams(**{"lr": lr, **hp}) for _, hp in lanes], seeds)
    n = len(lanes) * seeds
    train = ppo_training.make_train(cfg, wrap(env, setting, steps // cfg.num_envs), env_params)
    evaluate = ppo_training.make_evaluate(cfg, env, env_params, num_envs=8)

    def run(keys, hps):
        rs, m = jax.vmap(train)(keys, hps)
        params = rs.ppo.params
        finite = jax.vmap(tree_all_finite)(params)
        ret = jax.vmap(lambda p, k: jnp.mean(evaluate(p, k)))(
            params, jax.random.split(jax.random.key(123), n))
        out = dict(finite=finite, ret=ret, skips=jnp.sum(m["num_nonfinite_skips"], -1),
                   train_return=m["episode_return"])
        out["rollbacks"] = (m["rollback_count"][:, -1] if "rollback_count" in m
                            else jnp.zeros(n))
        return out

    keys = jnp.tile(jax.random.split(jax.random.key(0), seeds), (len(lanes),))
    t0 = time.perf_counter()
    compiled = jax.jit(run).lower(keys, hps).compile()
    t1 = time.perf_counter()
    res_all = jax.device_get(compiled(keys, hps))
    t2 = time.perf_counter()
    out = []
    for (name, _), res in zip(lanes, _split_lanes(res_all, len(lanes), seeds)):
        finite = np.asarray(res["finite"])
        ret = np.where(finite, np.asarray(res["ret"], np.float64), np.nan)
        diverged = (~finite) | ~(np.nan_to_num(ret, nan=-np.inf) >= PPO_COLLAPSE)
        tr = np.asarray(res["train_return"], np.float64)
        out.append(dict(algo="ppo", setting=setting, variant=name, seeds=seeds, steps=steps,
                        diverged_frac=float(diverged.mean()),
                        nonfinite_params=int((~finite).sum()),
                        skipped_per_seed=float(np.mean(res["skips"])),
                        rollbacks_per_seed=float(np.mean(res["rollbacks"])),
                        ret=ret.tolist(), ret_str=_stats(ret), compile_s=t1 - t0,
                        run_s=t2 - t1, return_traj=_downsample(tr, 50).tolist()))
    return out


# ------------------------------------------------------------------------------ output, figures

SAC_COLUMNS = ["setting", "variant", "diverged", "non-finite params", "non-finite updates/seed",
               "NaN metric steps", "final return (clean)", "max alpha", "final alpha (median)",
               "max critic loss", "compile s", "run s"]
PPO_COLUMNS = ["setting", "variant", "diverged", "non-finite params", "non-finite steps/seed",
               "rollbacks/seed", "final return (clean)", "compile s", "run s"]


def _row(r: dict) -> list:
    div = f"{r['diverged_frac'] * r['seeds']:.0f}/{r['seeds']}"
    if r["algo"] == "sac":
        fa = f"{r['final_alpha_median']:.3g}" + (
            f" ({r['final_alpha_nonfinite']} nan)" if r["final_alpha_nonfinite"] else "")
        return [r["setting"], r["variant"], div, r["nonfinite_params"],
                round(r["skipped_per_seed"], 1), r["nonfinite_metric_steps"], r["ret_str"],
                f"{r['max_alpha']:.3g}", fa, f"{r['max_critic_loss']:.3g}",
                round(r["compile_s"], 1), round(r["run_s"], 1)]
    return [r["setting"], r["variant"], div, r["nonfinite_params"],
            round(r["skipped_per_seed"], 1), round(r["rollbacks_per_seed"], 1), r["ret_str"],
            round(r["compile_s"], 1), round(r["run_s"], 1)]


def _figure(results: list[dict], algo: str, path: str, only_setting: str | None = None) -> None:
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    rs = [r for r in results if r["algo"] == algo and
          (only_setting is None or r["setting"] == only_setting)]
    settings = [s for s in SETTINGS if any(r["setting"] == s for r in rs)]
    if not settings:
        return
    if algo == "ppo":
        _ppo_figure(rs, settings, path)
        return
    rows = ("alpha_traj", "closs_traj")
    labels = {"alpha_traj": "alpha (ent_coef), median over seeds",
              "closs_traj": "critic loss, max over seeds"}
    fig, axes = plt.subplots(len(rows), len(settings), figsize=(4.2 * len(settings),
                                                                  3.2 * len(rows)),
                             squeeze=False)
    for j, s in enumerate(settings):
        for i, key in enumerate(rows):
            ax = axes[i][j]
            for r in rs:
                if r["setting"] != s:
                    continue
                y = np.asarray(r[key], np.float64)
                with np.errstate(all="ignore"):
                    agg = (np.nanmax(y, 0) if key == "closs_traj" else np.nanmedian(y, 0))
                x = np.linspace(0, r["steps"], agg.shape[0])
                ax.plot(x, agg, label=r["variant"], lw=1.2)
            ax.set_yscale("log")
            ax.set_title(f"{s}: {labels[key]}", fontsize=8)
            ax.set_xlabel("env steps", fontsize=8)
            ax.tick_params(labelsize=7)
    axes[0][0].legend(fontsize=6)
    fig.tight_layout()
    os.makedirs(os.path.dirname(path), exist_ok=True)
    fig.savefig(path, dpi=90)
    plt.close(fig)


def _ppo_figure(rs: list[dict], settings: list[str], path: str) -> None:
    """Final clean return (mean +- std over seeds, dots = seeds) per variant and setting."""
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, len(settings), figsize=(3.6 * len(settings), 3.8), squeeze=False)
    for j, s in enumerate(settings):
        ax = axes[0][j]
        sub = [r for r in rs if r["setting"] == s]
        for i, r in enumerate(sub):
            y = np.asarray(r["ret"], np.float64)
            fin = np.isfinite(y)
            ax.bar(i, np.mean(y[fin]) if fin.any() else 0.0,
                   yerr=np.std(y[fin]) if fin.any() else 0.0, color="tab:blue" if fin.all()
                   else "tab:red", alpha=0.6)
            ax.plot(np.full(fin.sum(), i), y[fin], "k.", ms=3)
            if not fin.all():
                ax.text(i, 10, f"{(~fin).sum()} NaN", ha="center", fontsize=6, rotation=90)
        ax.axhline(PPO_COLLAPSE, color="gray", lw=0.8, ls="--")
        ax.set_xticks(range(len(sub)))
        ax.set_xticklabels([r["variant"] for r in sub], rotation=60, ha="right", fontsize=7)
        ax.set_ylim(0, 520)
        ax.set_title(f"PPO CartPole, {s}: clean return", fontsize=8)
        ax.tick_params(labelsize=7)
    fig.tight_layout()
    os.makedirs(os.path.dirname(path), exist_ok=True)
    fig.savefig(path, dpi=90)
    plt.close(fig)


def _seed000_figure(results: list[dict], path: str) -> None:
    """Per-seed alpha and critic-loss trajectories of issue 3's reward x1e3 runs."""
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    rs = [r for r in results if r["algo"] == "sac" and r["setting"] == "reward x1e3"]
    if not rs:
        return
    fig, axes = plt.subplots(2, len(rs), figsize=(3.3 * len(rs), 5.5), squeeze=False)
    for j, r in enumerate(rs):
        for i, key in enumerate(("alpha_traj", "closs_traj")):
            y = np.asarray(r[key], np.float64)
            x = np.linspace(0, r["steps"], y.shape[1])
            for s in range(y.shape[0]):
                axes[i][j].plot(x, y[s], lw=0.8)
            axes[i][j].set_yscale("log")
            axes[i][j].set_title(f"{r['variant']}\n{'alpha' if i == 0 else 'critic loss'}",
                                 fontsize=7)
            axes[i][j].tick_params(labelsize=6)
    fig.suptitle("SAC Pendulum, reward x1e3, quantile critic: per-seed trajectories "
                 "(gaps = NaN)", fontsize=9)
    fig.tight_layout()
    fig.savefig(path, dpi=90)
    plt.close(fig)


TAG = [""]  # output-name suffix (--tag), e.g. "_baseline" for the unstressed reference runs


def write_all(results: list[dict], algo: str, notes: str) -> None:
    rs = [r for r in results if r["algo"] == algo]
    if not rs:
        return
    title = ("Stress & ablation: SAC (Pendulum-v1, TQC critic)" if algo == "sac"
             else "Stress & ablation: PPO (CartPole-v1)")
    cols = SAC_COLUMNS if algo == "sac" else PPO_COLUMNS
    slim = [{k: v for k, v in r.items() if not k.endswith("_traj")} for r in rs]
    md = write_results(f"bench_stress_{algo}{TAG[0]}", title, cols, [_row(r) for r in rs], notes,
                       extra={"runs": slim})
    with open(md) as fh:
        text = fh.read().replace(f"python benchmarks/bench_stress_{algo}{TAG[0]}.py",
                                 f"python benchmarks/bench_stress.py --algo {algo}"
                                 + (f" --tag {TAG[0]}" if TAG[0] else ""))
    with open(md, "w") as fh:
        fh.write(text)
    with open(os.path.join(RESULTS_DIR, f"bench_stress_{algo}{TAG[0]}_trajectories.json"),
              "w") as fh:
        json.dump([{k: v for k, v in r.items() if k.endswith("_traj") or k in
                    ("setting", "variant", "steps")} for r in rs], fh)
    fig_dir = os.path.join(RESULTS_DIR, "figures")
    _figure(results, algo, os.path.join(fig_dir, f"bench_stress_{algo}{TAG[0]}.png"))
    if algo == "sac" and not TAG[0]:
        _seed000_figure(results, os.path.join(fig_dir, "bench_stress_sac_seed000.png"))


def notes_for(algo: str, args: argparse.Namespace, verdicts: str) -> str:
    try:
        from jaxstab.envs import make_portfolio  # noqa: F401
        portfolio = ("SAC on the portfolio environment (simplex policy): pending. "
                     "`jaxstab.envs.make_portfolio` arrived during this session, after the "
                     "compute budget of this run was spent; not wired into this script yet.")
    except ImportError:
        portfolio = ("SAC on the portfolio environment: pending (`jaxstab.envs.make_portfolio` "
                     "does not exist yet).")
    if algo == "sac":
        head = (f"SAC: {args.sac_steps} env steps per seed, {args.seeds} seeds vmapped in one jit "
                "per static configuration (variants that differ only in hyperparameters share "
                f"the program as extra vmapped lanes); 64x64 actor/critics, TQC quantile critic "
                f"(2 critics x {SAC_ATOMS} atoms, drop 1 per critic), batch {SAC_BATCH}, lr 1e-3 "
                "(x10 = 1e-2), 1 update per step, warm-up "
                f"{max(SAC_BATCH, min(1000, args.sac_steps // 10))} random steps. 'all on' = "
                "gradient clipping at global norm 10, skip_nonfinite, "
                "variance_scaling='normalize'. Clipping off = SACHParams.max_grad_norm 1e9 "
                "(clip_by_global_norm at 1e9 is the identity on every finite gradient of these "
                "runs; it lets on/off share one compiled program). 'all off (seed 000)' = no "
                "clip, no skip, variance_scaling='seed' (seed 000's configuration). Diverged = "
                f"non-finite parameters or clean deterministic return < {SAC_COLLAPSE:g} (about a "
                "random policy; 5 episodes). Critic loss and alpha are per-step training metrics "
                "(critic loss is in the stressed reward's units: the quantile-Huber loss is "
                "linear in large errors, so x1e3 rewards give roughly 1e3x larger losses by "
                "construction; compare critic losses within a setting only); 'non-finite "
                "updates/seed' is "
                "SACState.skipped (updates with "
                "non-finite loss/gradients/parameters: skipped when the guard is on, counted "
                "but applied when it is off); 'NaN metric steps' counts (seed, step) pairs whose "
                "alpha or critic loss was non-finite. "
                "Budgets are small because this 2-core machine was shared (load 15-23): read the "
                "returns as 'learning started or not', not as converged performance. ")
    else:
        head = (f"PPO: {args.ppo_steps} env steps per seed, {args.seeds} seeds vmapped in one jit "
                "per static configuration; PureJaxRL CartPole settings (4 envs x 128 steps, "
                "4 epochs x 4 minibatches, lr 2.5e-4 linear decay (x10 = 2.5e-3), clip 0.2). "
                "'all on' = "
                "log-ratio clamp, non-finite skip, grad clip 0.5, global advantage normalization, "
                "reward normalization, rollback (nonfinite, kl, reward drop), KL early stopping "
                "(k3, target 0.015). Log-ratio clamp, grad clip and early stopping are switched "
                "off through their hyperparameters (logratio_clip, max_grad_norm, target_kl = 1e9: "
                "they never act, and the variants share one compiled program as vmapped lanes); "
                "the others through PPOConfig. Diverged = non-finite "
                f"parameters or clean deterministic return < {PPO_COLLAPSE:g} (8 episodes). "
                "'non-finite steps/seed' counts minibatch steps with a non-finite loss or "
                "gradient (skipped when the guard is on, applied when it is off); rollbacks are "
                "the rollback's final count. ")
    stress = (f"Stress settings: reward x1e-3 / x1e3 (RewardScale); lr x10; Student-t rewards "
              f"(r + {STUDENT_T_SCALE:g} * t_2); regime switch (rewards x{REGIME_FACTOR:g} from "
              f"half of each environment's steps on, RegimeSwitch); NaN rewards "
              f"(NonFiniteInjection, reward_frac={NAN_FRAC:g}). Returns are measured on the clean "
              "environment. " + portfolio)
    return head + stress + "\n\n" + verdicts


def rewrite(args: argparse.Namespace, verdicts: str) -> None:
    """Re-render the committed tables, notes and figures from their JSON files (no training)."""
    for algo in ("sac", "ppo"):
        stem = os.path.join(RESULTS_DIR, f"bench_stress_{algo}{TAG[0]}")
        if not os.path.exists(stem + "_cpu.json"):
            continue
        with open(stem + "_cpu.json") as fh:
            runs = json.load(fh)["runs"]
        with open(stem + "_trajectories.json") as fh:
            trajs = json.load(fh)
        results = [{**r, **t} for r, t in zip(runs, trajs)]
        write_all(results, algo, notes_for(algo, args, verdicts))


def summarize() -> None:
    """Print the claim-related statistics of the committed results (no training).

    Critic-loss variability per SAC configuration: over the second half of training, the
    coefficient of variation (std / mean) of the 100-point block-mean critic-loss trajectory
    of each seed, median over seeds; and the ratio of max to min (growth after the dip).
    """
    rows = []
    for tag in ("_baseline", "_baseline_vs", ""):
        path = os.path.join(RESULTS_DIR, f"bench_stress_sac{tag}_trajectories.json")
        if not os.path.exists(path):
            continue
        with open(path) as fh:
            for r in json.load(fh):
                c = np.asarray(r["closs_traj"], np.float64)
                a = np.asarray(r["alpha_traj"], np.float64)
                half = c[:, c.shape[1] // 2:]
                with np.errstate(all="ignore"):
                    cv = np.nanstd(half, 1) / np.nanmean(half, 1)
                    growth = c[:, -1] / np.nanmin(c, 1)
                rows.append([r["setting"], r["variant"], f"{np.nanmedian(cv):.3f}",
                             f"{np.nanmedian(growth):.2f}",
                             f"{np.nanmedian(np.nanmax(a, 1)):.3g}"])
    from benchmarks._common import markdown_table
    print(markdown_table(["setting", "variant", "critic-loss CV, 2nd half (median)",
                          "final / min critic loss (median)", "max alpha (median seed)"], rows))


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--algo", choices=("sac", "ppo", "all"), default="all")
    p.add_argument("--seeds", type=int, default=8)
    p.add_argument("--quick", action="store_true", help="tiny smoke run")
    p.add_argument("--settings", nargs="*", default=list(SETTINGS), choices=SETTINGS)
    p.add_argument("--variants", nargs="*", default=None, help="subset of variant names")
    p.add_argument("--sac-steps", type=int, default=4000)
    p.add_argument("--ppo-steps", type=int, default=100_000)
    p.add_argument("--rewrite", action="store_true",
                   help="re-render tables/notes/figures from the committed JSON and exit")
    p.add_argument("--summarize", action="store_true",
                   help="print claim statistics from the committed results and exit")
    p.add_argument("--tag", default="", help="suffix of the result files' names")
    p.add_argument("--budget-min", type=float, default=0.0,
                   help="minutes after which no new setting starts (0 = no limit)")
    p.add_argument("--verdicts", default="", help="file with the written verdicts (Markdown)")
    args = p.parse_args()
    TAG[0] = args.tag
    if args.summarize:
        summarize()
        return
    verdicts = ""
    if args.verdicts and os.path.exists(args.verdicts):
        with open(args.verdicts) as fh:
            verdicts = fh.read()
    if args.rewrite:
        rewrite(args, verdicts)
        return
    if args.quick:
        args.seeds, args.sac_steps, args.ppo_steps = 2, 1000, 4096
    algos = ("sac", "ppo") if args.algo == "all" else (args.algo,)
    results: list[dict] = []
    skipped: list[str] = []
    start = time.time()
    for algo in algos:
        for setting in args.settings:
            if algo == "sac":
                allv = {**SAC_VARIANTS, **SAC_SEED000_EXTRA}
                plan = SAC_PLAN.get(setting, SAC_DEFAULT_PLAN)
            else:
                allv = PPO_VARIANTS
                plan = PPO_PLAN.get(setting, PPO_DEFAULT_PLAN)
            variants = {k: allv[k] for k in (args.variants or plan) if k in allv}
            if args.budget_min and time.time() - start > 60 * args.budget_min:
                print(f"time budget of {args.budget_min} min used: skipping {algo} | {setting}",
                      flush=True)
                skipped.append(f"{algo} | {setting}")
                continue
            groups: dict[str, tuple[dict, list]] = {}
            for name, (static, hp) in variants.items():
                if args.variants and name not in args.variants:
                    continue
                groups.setdefault(repr(sorted(static.items())), (static, []))[1].append(
                    (name, hp))
            for static, lanes in groups.values():
                t0 = time.perf_counter()
                runner = run_sac if algo == "sac" else run_ppo
                steps = args.sac_steps if algo == "sac" else args.ppo_steps
                for r in runner(setting, static, lanes, args.seeds, steps):
                    results.append(r)
                    print(f"[{time.strftime('%H:%M:%S')}] {algo} | {setting} | {r['variant']}: "
                          f"{_row(r)[2:]}", flush=True)
                print(f"  program of {len(lanes)} lane(s): {time.perf_counter() - t0:.0f} s",
                      flush=True)
                if not args.quick:
                    write_all(results, algo, notes_for(algo, args, verdicts))
        if skipped:
            print("not run (time budget):", skipped, flush=True)
        if args.quick:
            # smoke run: print only, never overwrite committed results
            print(json.dumps([_row(r) for r in results if r["algo"] == algo], default=str))


if __name__ == "__main__":
    main()
