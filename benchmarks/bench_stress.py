"""Stress and ablation suite: which stabilizer prevents which failure (issues 3 and 7).

For every stress setting (reward x1e-3, reward x1e3, learning rate x10, Student-t(2) reward
noise, a mid-training regime switch of the reward scale, NaN injection into rewards) and every
algorithm / environment pair (``--algo``):

- ``sac``: SAC on gymnax Pendulum-v1,
- ``sac-portfolio``: SAC on the portfolio environment (``jaxstab.envs.make_portfolio``, bundled
  S&P 500 data, logistic-normal simplex policy),
- ``ppo``: PPO on gymnax CartPole-v1,
- ``ppo-pendulum``: PPO on gymnax Pendulum-v1 (Gaussian policy),

it trains: all stabilizers on, each one switched off in turn, all off; ``--seeds`` seeds
vmapped. The stress is the composition of :mod:`jaxstab.envs.wrappers`' formulas with *traced*
parameters (:class:`TracedStress`), so every setting of one static configuration is a vmapped
lane of one compiled program (``lr x10`` goes through the hyperparameters); before training, the
script checks that :class:`TracedStress` gives the rewards of the library wrapper of each setting
(same NaN positions, finite values equal to float32 rounding: :func:`check_traced_stress`).

SAC stabilizers (critic = TQC quantile critic, 2 x 10 atoms, 64x64 networks):
  global gradient clipping (``max_grad_norm`` 10 vs off), the non-finite update skip
  (``skip_nonfinite``), and the quantile-loss variance scaling (``"normalize"`` vs the seed's
  ``"seed"`` rule vs ``"none"``). "all off" = no clipping, no skip, ``variance_scaling="seed"``:
  seed 000's configuration. With reward x1e3 that is issue 3's reproduction of seed 000's
  failure; for that setting the script also turns each stabilizer back *on* alone.
PPO stabilizers: log-ratio clamp, non-finite skip, gradient clipping (0.5 vs off = 1e9),
  advantage normalization (global vs none), reward normalization, in-graph rollback, KL early
  stopping.

Per configuration: fraction of seeds diverged (non-finite parameters, or final deterministic
return on the *clean* environment below a collapse threshold, :data:`ENVS`), seeds with
non-finite parameters, non-finite (skipped) updates, rollbacks, final return mean +- std, and
for SAC max/final alpha (ent_coef) and max critic loss, with per-step trajectories. One table
``benchmarks/results/bench_stress_<algo>_cpu.{md,json}`` and one figure
``benchmarks/results/figures/bench_stress_<algo>.png`` per algorithm / environment pair
(``<algo>`` with ``-`` replaced by ``_``), plus the seed-000 figure
``bench_stress_sac_seed000.png``.
Results are *merged*: a run replaces the rows (setting, variant) it ran and keeps every other
row of the committed JSON, so the grid can be filled in several invocations.

Usage: ``python benchmarks/bench_stress.py --algo sac|sac-portfolio|ppo|ppo-pendulum|all
[--seeds 8] [--quick] [--settings ...] [--variants ...] [--sac-steps N] [--ppo-steps N]
[--budget-min M] [--tag T] [--group-settings K]``; ``--quick`` is a tiny smoke run that writes
nothing; ``--budget-min`` stops starting new programs after M minutes; ``--summarize`` prints the
critic-loss / alpha statistics used by the verdicts from the committed results; ``--rewrite
[--verdicts FILE]`` re-renders the committed tables, notes and figures from their JSON.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import sys
import time
import warnings
from typing import Any, Callable, NamedTuple

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
NAN_FRAC = 1e-3
SAC_BATCH = 64
SAC_ATOMS = 10
STUDENT_T_SCALE = 1.0
REGIME_FACTOR = 10.0


class EnvSpec(NamedTuple):
    """One algorithm / environment pair of the grid."""

    algo: str            # "sac" | "ppo"
    env_name: str        # jaxstab.envs.make name
    title: str
    collapse: str        # how "diverged" is decided (stated in the notes)
    base_lr: float
    ylim: tuple[float, float]


ENVS = {
    "sac": EnvSpec("sac", "Pendulum-v1", "SAC (Pendulum-v1, TQC critic)",
                   "non-finite parameters or clean deterministic return < -1000 (about a random "
                   "policy; 5 episodes)", 1e-3, (-1800.0, 0.0)),
    "sac-portfolio": EnvSpec(
        "sac", "portfolio", "SAC (portfolio, logistic-normal simplex policy, TQC critic)",
        "non-finite parameters, a non-finite evaluation, or an annualized return on the "
        "validation split (2013-2015, deterministic policy from day 0) more than 10 percentage "
        "points below the 1/N portfolio's", 3e-4, (-40.0, 40.0)),
    "ppo": EnvSpec("ppo", "CartPole-v1", "PPO (CartPole-v1)",
                   "non-finite parameters or clean deterministic return < 50 (8 episodes)",
                   2.5e-4, (0.0, 520.0)),
    "ppo-pendulum": EnvSpec("ppo", "Pendulum-v1", "PPO (Pendulum-v1, Gaussian policy)",
                            "non-finite parameters or clean deterministic return < -1000 (about "
                            "a random policy; 8 episodes)", 1e-3, (-1800.0, 0.0)),
}
SAC_COLLAPSE = -1000.0
PPO_COLLAPSE = {"ppo": 50.0, "ppo-pendulum": -1000.0}
PORTFOLIO_MARGIN = 10.0  # percentage points of annual return below 1/N

# name -> (SACConfig overrides (static), SACHParams overrides (vmapped lanes of one program))
SAC_ALL_ON = dict(skip_nonfinite=True, variance_scaling="normalize")
NO_CLIP = dict(max_grad_norm=1e9)  # clip_by_global_norm(1e9): the identity on finite gradients
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


def variants_for(algo: str, setting: str) -> dict[str, tuple[dict, dict]]:
    """The full variant set of a setting (SAC x1e3 adds issue 3's seed-000 variants)."""
    if algo == "ppo":
        return dict(PPO_VARIANTS)
    if setting == "reward x1e3":
        return {**SAC_VARIANTS, **SAC_SEED000_EXTRA}
    return dict(SAC_VARIANTS)


# ------------------------------------------------------------------------------ stress settings

class StressParams(NamedTuple):
    """Traced stress of one lane (0-d float32 arrays; identity = (1, 0, 0, 1, 0)).

    ``r' = where(t >= switch_step, factor, 1) * (scale * r + t_scale * T)`` with ``T ~
    Student-t(2)``, then replaced by NaN with probability ``nan_frac``: the formulas (and noise
    keys) of :class:`~jaxstab.envs.wrappers.RewardScale`, :class:`~jaxstab.envs.wrappers.
    StudentTReward`, :class:`~jaxstab.envs.wrappers.RegimeSwitch` and
    :class:`~jaxstab.envs.wrappers.NonFiniteInjection`; each setting uses one of them.
    """

    scale: jax.Array
    t_scale: jax.Array
    switch_step: jax.Array
    factor: jax.Array
    nan_frac: jax.Array


def stress_params(setting: str, steps_per_env: int) -> StressParams:
    """The :class:`StressParams` of a setting (``lr x10`` and ``none``: identity)."""
    v = dict(scale=1.0, t_scale=0.0, switch_step=0.0, factor=1.0, nan_frac=0.0)
    if setting == "reward x1e-3":
        v["scale"] = 1e-3
    elif setting == "reward x1e3":
        v["scale"] = 1e3
    elif setting == "student-t rewards":
        v["t_scale"] = STUDENT_T_SCALE
    elif setting == "regime switch":
        v["switch_step"], v["factor"] = float(steps_per_env // 2), REGIME_FACTOR
    elif setting == "NaN rewards":
        v["nan_frac"] = NAN_FRAC
    elif setting not in ("lr x10", "none"):
        raise ValueError(f"unknown setting {setting!r}")
    return StressParams(**{k: jnp.asarray(x, jnp.float32) for k, x in v.items()})


def library_wrap(env: Any, setting: str, steps_per_env: int) -> Any:
    """The same stress with the library wrappers (the reference of :func:`check_traced_stress`)."""
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


class TracedStress(W.StressWrapper):
    """All stress wrappers at once with traced parameters (:class:`StressParams`).

    Same protocol and state as :class:`~jaxstab.envs.wrappers.RegimeSwitch` (a step counter per
    environment instance, kept across auto-resets); the inner environment sees the caller's key
    unchanged and the noise uses the library wrappers' ``fold_in`` tags, so each setting's rewards
    equal its library wrapper's exactly.
    """

    def __init__(self, env: Any, sp: StressParams) -> None:
        super().__init__(env)
        self.sp = sp

    def reset(self, key, params=None):
        obs, env_state = self._env.reset(key, params)
        return obs, W.RegimeState(env_state, jnp.zeros((), jnp.int32))

    def step(self, key, state, action, params=None):
        obs, env_state, reward, term, trunc, info = self._env.step(
            key, state.env_state, action, params)
        r = W._float_reward(reward)
        sp = jax.tree_util.tree_map(lambda x: x.astype(r.dtype), self.sp)
        r = r * sp.scale
        noise = jax.random.t(jax.random.fold_in(key, W._TAG_STUDENT_T), 2.0, r.shape, r.dtype)
        r = jnp.where(sp.t_scale != 0, r + sp.t_scale * noise, r)
        r = jnp.where(state.t.astype(r.dtype) >= sp.switch_step, r * sp.factor, r)
        hit = jax.random.bernoulli(jax.random.fold_in(key, W._TAG_NAN_REWARD), sp.nan_frac,
                                   r.shape)
        r = jnp.where(hit & (sp.nan_frac > 0), jnp.asarray(jnp.nan, r.dtype), r)
        return obs, W.RegimeState(env_state, state.t + 1), r, term, trunc, info


def check_traced_stress(env: Any, env_params: Any, steps: int = 64) -> None:
    """Assert that :class:`TracedStress` equals the library wrapper of every setting.

    Random actions, ``steps`` steps, regime switch at ``steps // 2``; rewards compared exactly
    (same NaN positions; finite values to ``1e-6 * (|ref| + max |ref|)``: XLA fuses the
    environment's and the wrapper's arithmetic differently in the two programs, e.g. one
    multiply-add, which changes the last float32 bits). Raises AssertionError on any larger
    difference.
    """
    space = env.action_space(env_params)

    def rollout(wenv, key):
        k0, k1 = jax.random.split(key)
        _, st = wenv.reset(k0, env_params)

        def body(st, k):
            ka, ks = jax.random.split(k)
            a = space.sample(ka)
            _, st, r, _, _, _ = wenv.step(ks, st, a, env_params)
            return st, r

        return jax.lax.scan(body, st, jax.random.split(k1, steps))[1]

    key = jax.random.key(7)
    for s in SETTINGS:
        ref = jax.jit(lambda k: rollout(library_wrap(env, s, steps), k))(key)
        got = jax.jit(lambda k, sp: rollout(TracedStress(env, sp), k))(
            key, stress_params(s, steps))
        got, ref = np.asarray(got), np.asarray(ref)
        np.testing.assert_array_equal(np.isnan(got), np.isnan(ref), err_msg=s)
        fin = np.isfinite(ref)
        atol = 1e-6 * float(np.max(np.abs(ref[fin]))) if fin.any() else 0.0
        np.testing.assert_allclose(got[fin], ref[fin], rtol=1e-6, atol=atol, err_msg=s)


def _downsample(x: np.ndarray, points: int = 100) -> np.ndarray:
    """[S, T] -> [S, points] block means (NaN-aware: a block with a NaN stays NaN)."""
    s, t = x.shape
    b = max(1, t // points)
    t2 = (t // b) * b
    return x[:, :t2].reshape(s, t2 // b, b).mean(-1)


def _stats(x: np.ndarray) -> str:
    x = np.asarray(x, np.float64)
    return f"{np.nanmean(x):.1f} +- {np.nanstd(x):.1f}" if np.isfinite(x).any() else "nan"


def _stack(trees: list, seeds: int):
    """Stack per-lane pytrees, each repeated ``seeds`` times: leaves ``[lanes * seeds]``."""
    return jax.tree_util.tree_map(lambda *xs: jnp.repeat(jnp.stack(xs), seeds, axis=0), *trees)


Lane = tuple[str, str, dict]  # (setting, variant, hparam overrides)


def compile_and_run(run: Callable, lanes: list[Lane], seeds: int, hps: Any, sps: StressParams
                    ) -> tuple[list[dict], float, float]:
    """Compile ``run(keys, hps, sps)`` once for ``len(lanes) x seeds`` runs, run it, split lanes.

    Every lane uses the same ``seeds`` keys (``jax.random.split(key(0), seeds)``), so lanes
    differ only in their stabilizers / stress. Returns ``(per-lane dicts of [seeds, ...] NumPy
    arrays, compile seconds, run seconds)``.
    """
    keys = jnp.tile(jax.random.split(jax.random.key(0), seeds), (len(lanes),))
    t0 = time.perf_counter()
    compiled = jax.jit(run).lower(keys, hps, sps).compile()
    t1 = time.perf_counter()
    res = jax.device_get(compiled(keys, hps, sps))
    t2 = time.perf_counter()
    split = [{k: np.asarray(v)[i * seeds:(i + 1) * seeds] for k, v in res.items()}
             for i in range(len(lanes))]
    return split, t1 - t0, t2 - t1


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


def portfolio_clean_eval(cfg: SACConfig, action_dim: int):
    """``(evaluate(actor_params, key) -> annual return in %, 1/N's annual return in %)`` of the
    deterministic (latent-mean) policy over the whole validation split from day 0."""
    from benchmarks.bench_portfolio import sac_policy_fn
    from jaxstab.envs import evaluate_policy, make_portfolio

    env, val_p = make_portfolio("validation")
    policy_fn, init_state = sac_policy_fn(action_dim, cfg)
    n = int(val_p.num_actions)
    m_eq, _, _ = jax.jit(lambda k: evaluate_policy(env, val_p, lambda o: jnp.ones(n) / n, k))(
        jax.random.key(0))

    def evaluate(actor_params, key):
        m, _, _ = evaluate_policy(env, val_p, lambda o, s: policy_fn(actor_params, o, s), key,
                                  policy_state=init_state())
        return 100.0 * m["annual_return"]

    return evaluate, 100.0 * float(m_eq["annual_return"])


def sac_setup(name: str, static: dict, steps: int):
    """``(cfg, env, env_params, action_dim, hparam defaults)`` of a SAC grid entry."""
    kw = {**SAC_ALL_ON, **static}
    common = dict(hidden_sizes=(64, 64), batch_size=SAC_BATCH, buffer_size=steps,
                  critic="quantile", num_quantiles=SAC_ATOMS, tqc_drop=1,
                  warmup_steps=max(SAC_BATCH, min(1000, steps // 10)), total_steps=steps,
                  eval_interval=steps, eval_episodes=1, max_grad_norm=10.0,
                  skip_nonfinite=kw["skip_nonfinite"], variance_scaling=kw["variance_scaling"])
    if name == "sac-portfolio":
        from jaxstab.envs import make_portfolio
        env, env_params = make_portfolio("train")
        cfg = SACConfig(policy="logistic_normal", **common)
        hp0 = dict(reward_scale=100.0, init_log_alpha=math.log(0.1))
        return cfg, env, env_params, int(env_params.num_actions), hp0
    env, env_params = gymnax.make("Pendulum-v1")
    return SACConfig(**common), env, env_params, 1, {}


def run_sac(name: str, static: dict, lanes: list[Lane], seeds: int, steps: int) -> list[dict]:
    """One compiled program: ``len(lanes) x seeds`` vmapped runs sharing a static config."""
    spec = ENVS[name]
    cfg, env, env_params, action_dim, hp0 = sac_setup(name, static, steps)
    hps = _stack([default_hparams(cfg, action_dim, **{
        **hp0, **{k: spec.base_lr * (10.0 if s == "lr x10" else 1.0)
                  for k in ("actor_lr", "critic_lr", "alpha_lr")}, **hp}) for s, _, hp in lanes],
        seeds)
    sps = _stack([stress_params(s, steps // cfg.num_envs) for s, _, _ in lanes], seeds)
    n = len(lanes) * seeds
    if name == "sac-portfolio":
        evaluate, eq_ret = portfolio_clean_eval(cfg, action_dim)
        threshold = eq_ret - PORTFOLIO_MARGIN
    else:
        evaluate, threshold = sac_clean_eval(cfg, env, env_params), SAC_COLLAPSE

    def run(keys, hps, sps):
        out = jax.vmap(lambda k, hp, sp: sac_training.make_train(
            cfg, TracedStress(env, sp), env_params)(k, hp))(keys, hps, sps)
        ag = out.state.agent
        finite = jax.vmap(lambda a: tree_all_finite((a.actor_params, a.critic_params,
                                                     a.log_alpha)))(ag)
        ret = jax.vmap(evaluate)(ag.actor_params, jax.random.split(jax.random.key(123), n))
        m = out.metrics
        return dict(finite=finite, ret=ret, skipped=ag.skipped, alpha=m["alpha"],
                    critic_loss=m["critic_loss"], updated=m["updated"])

    split, compile_s, run_s = compile_and_run(run, lanes, seeds, hps, sps)
    out = []
    stamp = time.strftime("%H:%M", time.gmtime())
    for (setting, variant, _), res in zip(lanes, split):
        finite = np.asarray(res["finite"])
        ret = np.where(finite, np.asarray(res["ret"], np.float64), np.nan)
        diverged = (~finite) | ~(np.nan_to_num(ret, nan=-np.inf) >= threshold)
        upd = np.asarray(res["updated"]) > 0
        alpha = np.where(upd, np.asarray(res["alpha"], np.float64), np.nan)
        closs = np.where(upd, np.asarray(res["critic_loss"], np.float64), np.nan)
        nonfinite_steps = upd & (~np.isfinite(alpha) | ~np.isfinite(closs))
        fin_a = np.where(np.isfinite(alpha), alpha, np.nan)
        fin_c = np.where(np.isfinite(closs), closs, np.nan)
        final_alpha = alpha[:, -1]
        with np.errstate(all="ignore"):
            out.append(dict(
                algo=name, setting=setting, variant=variant, seeds=seeds, steps=steps,
                diverged_frac=float(diverged.mean()), nonfinite_params=int((~finite).sum()),
                skipped_per_seed=float(np.mean(res["skipped"])),
                nonfinite_metric_steps=int(nonfinite_steps.sum()),
                ret=ret.tolist(), ret_str=_stats(ret), max_alpha=float(np.nanmax(fin_a)),
                final_alpha_median=float(np.nanmedian(final_alpha))
                if np.isfinite(final_alpha).any() else float("nan"),
                final_alpha_nonfinite=int((~np.isfinite(final_alpha)).sum()),
                max_critic_loss=float(np.nanmax(fin_c)), compile_s=compile_s, run_s=run_s,
                lanes=len(lanes), run_utc=stamp, collapse_threshold=threshold,
                alpha_traj=_downsample(alpha).tolist(), closs_traj=_downsample(closs).tolist()))
    return out


# ----------------------------------------------------------------------------------------- PPO

def ppo_setup(name: str, static: dict, steps: int):
    """``(cfg, env, env_params, hparam defaults)`` of a PPO grid entry."""
    if name == "ppo-pendulum":
        env, env_params = gymnax.make("Pendulum-v1")
        base = dict(policy_kind="gaussian", num_envs=16, num_steps=128, num_epochs=10,
                    num_minibatches=8, total_timesteps=steps, lr_schedule="linear",
                    init_log_std=-0.5)
        hp0 = dict(gamma=0.9, gae_lambda=0.95, ent_coef=0.0, clip_eps=0.2)
    else:
        env, env_params = gymnax.make("CartPole-v1")
        base = dict(num_envs=4, num_steps=128, num_epochs=4, num_minibatches=4,
                    total_timesteps=steps, lr_schedule="linear")
        hp0 = {}
    return PPOConfig(**{**base, **PPO_ALL_ON, **static}), env, env_params, hp0


def run_ppo(name: str, static: dict, lanes: list[Lane], seeds: int, steps: int) -> list[dict]:
    """One compiled program: ``len(lanes) x seeds`` vmapped runs sharing a static config."""
    spec = ENVS[name]
    cfg, env, env_params, hp0 = ppo_setup(name, static, steps)
    hps = _stack([ppo_hparams(**{**hp0, "lr": spec.base_lr * (10.0 if s == "lr x10" else 1.0),
                                 **hp}) for s, _, hp in lanes], seeds)
    sps = _stack([stress_params(s, steps // cfg.num_envs) for s, _, _ in lanes], seeds)
    n = len(lanes) * seeds
    evaluate = ppo_training.make_evaluate(cfg, env, env_params, num_envs=8)
    threshold = PPO_COLLAPSE[name]

    def run(keys, hps, sps):
        rs, m = jax.vmap(lambda k, hp, sp: ppo_training.make_train(
            cfg, TracedStress(env, sp), env_params)(k, hp))(keys, hps, sps)
        params = rs.ppo.params
        finite = jax.vmap(tree_all_finite)(params)
        ret = jax.vmap(lambda p, k: jnp.mean(evaluate(p, k)))(
            params, jax.random.split(jax.random.key(123), n))
        out = dict(finite=finite, ret=ret, skips=jnp.sum(m["num_nonfinite_skips"], -1),
                   train_return=m["episode_return"])
        out["rollbacks"] = (m["rollback_count"][:, -1] if "rollback_count" in m
                            else jnp.zeros(n))
        return out

    split, compile_s, run_s = compile_and_run(run, lanes, seeds, hps, sps)
    out = []
    stamp = time.strftime("%H:%M", time.gmtime())
    for (setting, variant, _), res in zip(lanes, split):
        finite = np.asarray(res["finite"])
        ret = np.where(finite, np.asarray(res["ret"], np.float64), np.nan)
        diverged = (~finite) | ~(np.nan_to_num(ret, nan=-np.inf) >= threshold)
        tr = np.asarray(res["train_return"], np.float64)
        out.append(dict(algo=name, setting=setting, variant=variant, seeds=seeds, steps=steps,
                        diverged_frac=float(diverged.mean()),
                        nonfinite_params=int((~finite).sum()),
                        skipped_per_seed=float(np.mean(res["skips"])),
                        rollbacks_per_seed=float(np.mean(res["rollbacks"])),
                        ret=ret.tolist(), ret_str=_stats(ret), compile_s=compile_s,
                        run_s=run_s, lanes=len(lanes), run_utc=stamp,
                        collapse_threshold=threshold,
                        return_traj=_downsample(tr, 50).tolist()))
    return out


# ------------------------------------------------------------------------------ output, figures

SAC_COLUMNS = ["setting", "variant", "diverged", "non-finite params", "non-finite updates/seed",
               "NaN metric steps", "final return (clean)", "max alpha", "final alpha (median)",
               "max critic loss", "compile s", "run s", "run (UTC, load)"]
PPO_COLUMNS = ["setting", "variant", "diverged", "non-finite params", "non-finite steps/seed",
               "rollbacks/seed", "final return (clean)", "compile s", "run s", "run (UTC, load)"]


def _fname(name: str) -> str:
    return f"bench_stress_{name.replace('-', '_')}{TAG[0]}"


def _when(r: dict) -> str:
    if "run_utc" not in r:
        return "01:05 run (load 15-23)"
    return f"{r['run_utc']} ({r.get('load', float('nan')):.1f})"


def _row(r: dict) -> list:
    div = f"{r['diverged_frac'] * r['seeds']:.0f}/{r['seeds']}"
    if ENVS[r["algo"]].algo == "sac":
        fa = f"{r['final_alpha_median']:.3g}" + (
            f" ({r['final_alpha_nonfinite']} nan)" if r["final_alpha_nonfinite"] else "")
        return [r["setting"], r["variant"], div, r["nonfinite_params"],
                round(r["skipped_per_seed"], 1), r["nonfinite_metric_steps"], r["ret_str"],
                f"{r['max_alpha']:.3g}", fa, f"{r['max_critic_loss']:.3g}",
                round(r["compile_s"], 1), round(r["run_s"], 1), _when(r)]
    return [r["setting"], r["variant"], div, r["nonfinite_params"],
            round(r["skipped_per_seed"], 1), round(r["rollbacks_per_seed"], 1), r["ret_str"],
            round(r["compile_s"], 1), round(r["run_s"], 1), _when(r)]


def _return_bars(ax: Any, sub: list[dict], spec: EnvSpec, threshold: float | None) -> None:
    """Final clean return per variant: bar = mean, error bar = std, dots = seeds, red = NaN."""
    lo, hi = spec.ylim
    for i, r in enumerate(sub):
        y = np.asarray(r["ret"], np.float64)
        fin = np.isfinite(y)
        ax.bar(i, np.mean(y[fin]) if fin.any() else 0.0,
               yerr=np.std(y[fin]) if fin.any() else 0.0,
               color="tab:blue" if fin.all() else "tab:red", alpha=0.6)
        ax.plot(np.full(fin.sum(), i), np.clip(y[fin], lo, hi), "k.", ms=3)
        if not fin.all():
            ax.text(i, lo + 0.05 * (hi - lo), f"{(~fin).sum()} NaN", ha="center", fontsize=6,
                    rotation=90)
    if threshold is not None:
        ax.axhline(threshold, color="gray", lw=0.8, ls="--")
    ax.set_xticks(range(len(sub)))
    ax.set_xticklabels([r["variant"] for r in sub], rotation=60, ha="right", fontsize=6)
    ax.set_ylim(lo, hi)


def _figure(rs: list[dict], name: str, path: str) -> None:
    """One figure per algorithm / environment: a column per setting.

    SAC rows: alpha (median over seeds), critic loss (max over seeds), final clean return.
    PPO rows: final clean return, training episode return (median over seeds; stressed rewards).
    """
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    spec = ENVS[name]
    settings = [s for s in SETTINGS if any(r["setting"] == s for r in rs)]
    if not settings:
        return
    rows = (("alpha_traj", "closs_traj", "ret") if spec.algo == "sac"
            else ("ret", "return_traj"))
    labels = {"alpha_traj": "alpha (ent_coef), median seed",
              "closs_traj": "critic loss, max over seeds",
              "ret": ("validation annual return % (dashed: collapse)" if name == "sac-portfolio"
                      else "final clean return (dashed: collapse)"),
              "return_traj": "training episode return (stressed), median seed"}
    fig, axes = plt.subplots(len(rows), len(settings),
                             figsize=(3.3 * len(settings), 2.9 * len(rows)), squeeze=False)
    allv = list(variants_for(spec.algo, "reward x1e3"))
    colors = {v: plt.get_cmap("tab10" if len(allv) <= 10 else "tab20")(i)
              for i, v in enumerate(allv)}
    widest = max(settings, key=lambda s: sum(r["setting"] == s for r in rs))
    for j, s in enumerate(settings):
        sub = [r for r in rs if r["setting"] == s]
        for i, key in enumerate(rows):
            ax = axes[i][j]
            if key == "ret":
                thr = sub[0].get("collapse_threshold")
                if thr is None:
                    thr = SAC_COLLAPSE if spec.algo == "sac" else PPO_COLLAPSE.get(name)
                _return_bars(ax, sub, spec, thr)
            else:
                for r in sub:
                    if key not in r:
                        continue
                    y = np.asarray(r[key], np.float64)
                    if key == "return_traj" and spec.ylim[1] <= 0:
                        # updates that completed no episode report 0 (impossible for an
                        # episode of this environment's strictly negative rewards): left out
                        y = np.where(y == 0.0, np.nan, y)
                    with warnings.catch_warnings():  # all-NaN columns (diverged seeds) -> NaN
                        warnings.simplefilter("ignore", RuntimeWarning)
                        agg = (np.nanmax(y, 0) if key == "closs_traj" else np.nanmedian(y, 0))
                    x = np.linspace(0, r["steps"], agg.shape[0])
                    keep = np.isfinite(agg) if key == "return_traj" else slice(None)
                    ax.plot(x[keep], agg[keep], label=r["variant"], lw=1.0,
                            color=colors.get(r["variant"]))
                if key != "return_traj":
                    ax.set_yscale("log")
                ax.set_xlabel("env steps", fontsize=7)
                if s == widest:
                    ax.legend(fontsize=5)
            ax.set_title(f"{s}: {labels[key]}", fontsize=7)
            ax.tick_params(labelsize=6)
    fig.suptitle(f"Stress & ablation: {spec.title}, {rs[0]['seeds']} seeds per variant",
                 fontsize=9)
    fig.tight_layout()
    os.makedirs(os.path.dirname(path), exist_ok=True)
    fig.savefig(path, dpi=80)
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


def load_results(name: str) -> list[dict]:
    """The committed rows of ``name`` (JSON runs joined with their trajectories), or []."""
    stem = os.path.join(RESULTS_DIR, _fname(name))
    if not os.path.exists(stem + "_cpu.json"):
        return []
    with open(stem + "_cpu.json") as fh:
        runs = json.load(fh)["runs"]
    trajs = {}
    if os.path.exists(stem + "_trajectories.json"):
        with open(stem + "_trajectories.json") as fh:
            trajs = {(t["setting"], t["variant"]): t for t in json.load(fh)}
    return [{**r, **trajs.get((r["setting"], r["variant"]), {})} for r in runs]


def _order(name: str, r: dict) -> tuple:
    algo = ENVS[name].algo
    allv = list(variants_for(algo, "reward x1e3"))
    return (SETTINGS.index(r["setting"]),
            allv.index(r["variant"]) if r["variant"] in allv else len(allv))


def write_all(results: list[dict], name: str, notes: str) -> None:
    """Merge ``results`` of ``name`` into its committed rows and write table, JSON and figure.

    A new row replaces the committed row with the same (setting, variant); all other committed
    rows are kept.
    """
    merged = {(r["setting"], r["variant"]): r for r in load_results(name)}
    for r in results:
        if r["algo"] == name:
            merged[(r["setting"], r["variant"])] = r
    rs = sorted(merged.values(), key=lambda r: _order(name, r))
    if not rs:
        return
    spec = ENVS[name]
    cols = SAC_COLUMNS if spec.algo == "sac" else PPO_COLUMNS
    slim = [{k: v for k, v in r.items() if not k.endswith("_traj")} for r in rs]
    cmd = f"python benchmarks/bench_stress.py --algo {name}" + (
        f" --tag {TAG[0]}" if TAG[0] else "") + " (rows merged from several runs: see the " \
        "'run' column and benchmarks/results/bench_stress_verdicts.md)"
    md = write_results(_fname(name), f"Stress & ablation: {spec.title}", cols,
                       [_row(r) for r in rs], notes, extra={"runs": slim}, command=cmd)
    del md
    with open(os.path.join(RESULTS_DIR, f"{_fname(name)}_trajectories.json"), "w") as fh:
        json.dump([{k: v for k, v in r.items() if k.endswith("_traj") or k in
                    ("setting", "variant", "steps")} for r in rs], fh)
    fig_dir = os.path.join(RESULTS_DIR, "figures")
    _figure(rs, name, os.path.join(fig_dir, f"{_fname(name)}.png"))
    if name == "sac" and not TAG[0]:
        _seed000_figure(rs, os.path.join(fig_dir, "bench_stress_sac_seed000.png"))


def notes_for(name: str, args: argparse.Namespace, verdicts: str,
              rows: list[dict] | None = None) -> str:
    """The notes under a table; step and seed counts from ``rows`` when given, else ``args``."""
    spec = ENVS[name]
    if rows:
        steps = sorted({int(r["steps"]) for r in rows})
        args = argparse.Namespace(**{**vars(args), "seeds": max(int(r["seeds"]) for r in rows),
                                     "sac_steps": "/".join(map(str, steps)),
                                     "ppo_steps": "/".join(map(str, steps))})
    if spec.algo == "sac":
        port = name == "sac-portfolio"
        head = (f"SAC on {spec.env_name}: {args.sac_steps} env steps per seed, {args.seeds} seeds "
                "vmapped; all variants and settings of one static configuration are vmapped "
                "lanes of one compiled program ('compile s' / 'run s' are per program, shared "
                "by its lanes). 64x64 actor/critics, TQC quantile critic "
                f"(2 critics x {SAC_ATOMS} atoms, drop 1 per critic), batch {SAC_BATCH}, lr "
                f"{spec.base_lr:g} (x10 = {10 * spec.base_lr:g}), 1 update per step, warm-up "
                f"{max(SAC_BATCH, min(1000, int(str(args.sac_steps).split('/')[0]) // 10))} "
                "random steps"
                + (", logistic-normal simplex policy, initial alpha 0.1, SACHParams.reward_scale "
                   "100 (daily log returns in percent; applied after the stress), training on "
                   "the train split (to 2012) with 252-day episodes" if port else "")
                + ". 'all on' = gradient clipping at global norm 10, skip_nonfinite, "
                "variance_scaling='normalize'. Clipping off = SACHParams.max_grad_norm 1e9 "
                "(the identity on every finite gradient of these runs). 'all off (seed 000)' = "
                "no clip, no skip, variance_scaling='seed' (seed 000's configuration). Diverged "
                f"= {spec.collapse}"
                + (" (final return = that annualized validation return, in %)" if port else "")
                + ". Critic loss and alpha are per-step training metrics "
                "(critic loss is in the stressed reward's units: compare critic losses within "
                "a setting only); 'non-finite updates/seed' is SACState.skipped (updates with "
                "non-finite loss/gradients/parameters: skipped when the guard is on, counted "
                "but applied when it is off); 'NaN metric steps' counts (seed, step) pairs whose "
                "alpha or critic loss was non-finite. ")
    else:
        if name == "ppo":
            arch = ("PureJaxRL CartPole settings (4 envs x 128 steps, 4 epochs x 4 minibatches, "
                    "lr 2.5e-4 linear decay (x10 = 2.5e-3), clip 0.2)")
        else:
            arch = ("Gaussian policy (initial log std -0.5), 16 envs x 128 steps, 10 epochs x 8 "
                    "minibatches, lr 1e-3 linear decay (x10 = 1e-2), gamma 0.9, GAE 0.95, clip "
                    "0.2 (the config of tests/training/test_ppo_train.py, which reaches -400 after "
                    "300k steps)")
        head = (f"PPO on {spec.env_name}: {args.ppo_steps} env steps per seed, {args.seeds} seeds "
                f"vmapped; variants and settings of one static configuration are vmapped lanes "
                f"of one compiled program ('compile s' / 'run s' per program); {arch}. 'all on' = "
                "log-ratio clamp, non-finite skip, grad clip 0.5, global advantage normalization, "
                "reward normalization, rollback (nonfinite, kl, reward drop), KL early stopping "
                "(k3, target 0.015). Log-ratio clamp, grad clip and early stopping are switched "
                "off through their hyperparameters (logratio_clip, max_grad_norm, target_kl = "
                "1e9: they never act); the others through PPOConfig. Diverged = "
                f"{spec.collapse}. 'non-finite steps/seed' counts minibatch steps with a "
                "non-finite loss or gradient (skipped when the guard is on, applied when it is "
                "off); rollbacks are the rollback's final count. ")
    stress = (f"Stress settings: reward x1e-3 / x1e3; lr x10; Student-t rewards "
              f"(r + {STUDENT_T_SCALE:g} * t_2); regime switch (rewards x{REGIME_FACTOR:g} from "
              f"half of each environment's steps on); NaN rewards (reward_frac={NAN_FRAC:g}); "
              "the formulas of jaxstab.envs.wrappers (RewardScale, StudentTReward, RegimeSwitch, "
              "NonFiniteInjection) with traced parameters, checked equal to the wrappers before "
              "each run. Returns are measured on the clean environment. 'run (UTC, load)': when "
              "the row's program finished and the 1-minute load average of this shared 2-core "
              "machine at that time (rows marked '01:05 run' come from the first run, under "
              "load 15-23, with the library wrappers applied one setting per program). Budgets "
              "are small: read returns as 'learning started or not', not as converged "
              "performance.")
    return head + stress + "\n\n" + verdicts


def rewrite(args: argparse.Namespace, verdicts: str) -> None:
    """Re-render the committed tables, notes and figures from their JSON files (no training)."""
    for name in ENVS:
        rows = load_results(name)
        if rows:
            write_all([], name, notes_for(name, args, verdicts, rows))


def summarize() -> None:
    """Print the claim-related statistics of the committed results (no training).

    Critic-loss variability per SAC configuration: over the second half of training, the
    coefficient of variation (std / mean) of the 100-point block-mean critic-loss trajectory
    of each seed, median over seeds; and the ratio of max to min (growth after the dip).
    """
    rows = []
    for stem in ("sac_baseline", "sac_baseline_vs", "sac", "sac_portfolio"):
        path = os.path.join(RESULTS_DIR, f"bench_stress_{stem}_trajectories.json")
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
                rows.append([stem, r["setting"], r["variant"], f"{np.nanmedian(cv):.3f}",
                             f"{np.nanmedian(growth):.2f}",
                             f"{np.nanmedian(np.nanmax(a, 1)):.3g}"])
    from benchmarks._common import markdown_table
    print(markdown_table(["file", "setting", "variant", "critic-loss CV, 2nd half (median)",
                          "final / min critic loss (median)", "max alpha (median seed)"], rows))


def programs_for(name: str, settings: list[str], variants: list[str] | None,
                 group_settings: int) -> list[tuple[dict, list[Lane]]]:
    """Group the (setting, variant) cells of ``name`` into compiled programs.

    Cells sharing a static configuration share a program (as vmapped lanes), at most
    ``group_settings`` settings per program (0 = no limit). Order: the settings in chunks of
    ``group_settings`` as given, every static configuration of a chunk before the next chunk (so
    a time budget cuts whole settings, not whole variants).
    """
    algo = ENVS[name].algo
    k = group_settings or len(settings)
    progs: list[tuple[dict, list[Lane]]] = []
    for i in range(0, len(settings), k):
        groups: dict[str, tuple[dict, list[Lane]]] = {}
        for s in settings[i:i + k]:
            for v, (static, hp) in variants_for(algo, s).items():
                if variants and v not in variants:
                    continue
                groups.setdefault(repr(sorted(static.items())), (static, []))[1].append(
                    (s, v, hp))
        progs += list(groups.values())
    return progs


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--algo", choices=(*ENVS, "all"), default="all")
    p.add_argument("--seeds", type=int, default=8)
    p.add_argument("--quick", action="store_true", help="tiny smoke run (writes nothing)")
    p.add_argument("--settings", nargs="*", default=list(SETTINGS), choices=SETTINGS)
    p.add_argument("--variants", nargs="*", default=None, help="subset of variant names")
    p.add_argument("--sac-steps", type=int, default=4000)
    p.add_argument("--ppo-steps", type=int, default=100_000)
    p.add_argument("--group-settings", type=int, default=0,
                   help="at most this many settings per compiled program (0 = all)")
    p.add_argument("--rewrite", action="store_true",
                   help="re-render tables/notes/figures from the committed JSON and exit")
    p.add_argument("--summarize", action="store_true",
                   help="print claim statistics from the committed results and exit")
    p.add_argument("--tag", default="", help="suffix of the result files' names")
    p.add_argument("--budget-min", type=float, default=0.0,
                   help="minutes after which no new program starts (0 = no limit)")
    p.add_argument("--verdicts", default=os.path.join(RESULTS_DIR, "bench_stress_verdicts.md"),
                   help="file with the written verdicts (Markdown), appended to the notes")
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
    names = tuple(ENVS) if args.algo == "all" else (args.algo,)
    skipped: list[str] = []
    start = time.time()
    for name in names:
        spec = ENVS[name]
        results: list[dict] = []
        setup = sac_setup if spec.algo == "sac" else ppo_setup
        env, env_params = setup(name, {}, 1 << 16)[1:3]
        check_traced_stress(env, env_params)
        print(f"{name}: TracedStress == library wrappers for every setting", flush=True)
        for static, lanes in programs_for(name, args.settings, args.variants,
                                          args.group_settings):
            cells = [f"{s} | {v}" for s, v, _ in lanes]
            if args.budget_min and time.time() - start > 60 * args.budget_min:
                print(f"time budget of {args.budget_min} min used: skipping {name}: {cells}",
                      flush=True)
                skipped += [f"{name} | {c}" for c in cells]
                continue
            t0 = time.perf_counter()
            runner = run_sac if spec.algo == "sac" else run_ppo
            steps = args.sac_steps if spec.algo == "sac" else args.ppo_steps
            rs = runner(name, static, lanes, args.seeds, steps)
            load = os.getloadavg()[0]
            for r in rs:
                r["load"] = load
                results.append(r)
                print(f"[{time.strftime('%H:%M:%S')}] {name} | {r['setting']} | {r['variant']}: "
                      f"{_row(r)[2:]}", flush=True)
            print(f"  program of {len(lanes)} lane(s): {time.perf_counter() - t0:.0f} s "
                  f"(load {load:.1f})", flush=True)
            if not args.quick:
                write_all(results, name, notes_for(name, args, verdicts))
        if args.quick:
            # smoke run: print only, never overwrite committed results
            print(json.dumps([_row(r) for r in results], default=str))
    if skipped:
        print("not run (time budget):", skipped, flush=True)


if __name__ == "__main__":
    main()
