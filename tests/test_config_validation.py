"""Input validation of every user-facing config and constructor: a bad value raises a
ValueError/TypeError whose message names the argument.

Each case is ``id: (call, name)``: ``call()`` must raise ValueError or TypeError and ``name``
must appear in the message. (Missing validation found while writing these is listed in the
issue-7 report, not tested here.)
"""

import math
import re
import warnings

import jax.numpy as jnp
import pytest

from jaxstab.agents.ppo.ppo import PPOConfig, ppo_hparams
from jaxstab.agents.sac import SACConfig, default_hparams, make_sac
from jaxstab.checkpoint import Checkpointer
from jaxstab.envs import make, make_portfolio
from jaxstab.ops import sinkhorn
from jaxstab.replay import replay_init
from jaxstab.schedules import entropy_schedule, lr_schedule
from jaxstab.training.rollback import RollbackConfig

C = SACConfig(hidden_sizes=(8,), batch_size=4, warmup_steps=4)
ex = {"x": jnp.zeros(3)}


def _cases(tmp):
    return {
        # SACConfig
        "SACConfig.batch_size=0": (lambda: SACConfig(batch_size=0), "batch_size"),
        "SACConfig.buffer_size=-1": (lambda: SACConfig(buffer_size=-1), "buffer_size"),
        "SACConfig.num_critics=0": (lambda: SACConfig(num_critics=0), "num_critics"),
        "SACConfig.policy=bogus": (lambda: SACConfig(policy="bogus"), "policy"),
        "SACConfig.critic=bogus": (lambda: SACConfig(critic="bogus"), "critic"),
        "SACConfig.variance_scaling=bogus": (
            lambda: SACConfig(critic="quantile", variance_scaling="bogus"),
            "variance_scaling"),
        "SACConfig.max_grad_norm=0": (lambda: SACConfig(max_grad_norm=0.0), "max_grad_norm"),
        "SACConfig.max_grad_norm=-1": (lambda: SACConfig(max_grad_norm=-1.0), "max_grad_norm"),
        "SACConfig.max_grad_norm=nan": (lambda: SACConfig(max_grad_norm=math.nan), "max_grad_norm"),
        "SACConfig.warmup_steps<batch": (
            lambda: SACConfig(batch_size=64, warmup_steps=8),
            "warmup_steps"),
        "SACConfig.tqc_drop=-1": (lambda: SACConfig(tqc_drop=-1), "tqc_drop"),
        "SACConfig.total_steps=0": (lambda: SACConfig(total_steps=0), "total_steps"),
        "SACConfig.log_std_min>=max": (
            lambda: SACConfig(log_std_min=2.0, log_std_max=-5.0),
            "log_std"),
        "SACConfig.batch_size=2.5": (lambda: SACConfig(batch_size=2.5), "batch_size"),
        # default_hparams
        "default_hparams unknown field": (lambda: default_hparams(C, 1, bogus=1.0), "bogus"),
        "default_hparams actor_lr=-1e-3": (lambda: default_hparams(C, 1, actor_lr=-1e-3),
                                           "actor_lr"),
        "default_hparams critic_lr=nan": (lambda: default_hparams(C, 1, critic_lr=math.nan),
                                          "critic_lr"),
        "default_hparams alpha_lr sweep with a negative entry": (
            lambda: default_hparams(C, 1, alpha_lr=jnp.array([1e-3, -1e-3])), "alpha_lr"),
        "default_hparams gamma=1.5": (lambda: default_hparams(C, 1, gamma=1.5), "gamma"),
        "default_hparams gamma=0": (lambda: default_hparams(C, 1, gamma=0.0), "gamma"),
        "default_hparams tau=0": (lambda: default_hparams(C, 1, tau=0.0), "tau"),
        "default_hparams max_grad_norm=-1": (lambda: default_hparams(C, 1, max_grad_norm=-1.0),
                                             "max_grad_norm"),
        "SACConfig.hidden_sizes=(0,)": (lambda: SACConfig(hidden_sizes=(0,)), "hidden_sizes"),
        "SACConfig.target_relative_scale=0": (lambda: SACConfig(target_relative_scale=0.0),
                                              "target_relative_scale"),
        "make_sac obs_dim=0": (lambda: make_sac(0, 1, C), "obs_dim"),
        "make_sac action_dim=0": (lambda: make_sac(3, 0, C), "action_dim"),
        "make_sac simplex action_dim=1": (
            lambda: make_sac(3, 1, SACConfig(policy="logistic_normal", hidden_sizes=(8,),
                                             batch_size=4, warmup_steps=4)),
            "action_dim"),
        # PPOConfig / ppo_hparams ranges
        "PPOConfig.hidden_sizes=(0,)": (lambda: PPOConfig(hidden_sizes=(0,)), "hidden_sizes"),
        "PPOConfig.activation=bogus": (lambda: PPOConfig(activation="bogus"), "activation"),
        "PPOConfig.rollback_window=0": (lambda: PPOConfig(rollback_window=0), "rollback_window"),
        "PPOConfig.rollback_min_history=-1": (lambda: PPOConfig(rollback_min_history=-1),
                                              "rollback_min_history"),
        "PPOConfig.huber_kappa=-1": (lambda: PPOConfig(huber_kappa=-1.0), "huber_kappa"),
        "PPOConfig.lr_decay_rate=0": (lambda: PPOConfig(lr_decay_rate=0.0), "lr_decay_rate"),
        "PPOConfig.lr_step_size=0": (lambda: PPOConfig(lr_step_size=0), "lr_step_size"),
        "PPOConfig.ratio_high=-1": (lambda: PPOConfig(ratio_high=-1.0), "ratio_high"),
        "ppo_hparams lr=-1e-3": (lambda: ppo_hparams(lr=-1e-3), "lr"),
        "ppo_hparams lr sweep with nan": (lambda: ppo_hparams(lr=jnp.array([1e-3, math.nan])),
                                          "lr"),
        "ppo_hparams gamma=1.5": (lambda: ppo_hparams(gamma=1.5), "gamma"),
        "ppo_hparams gae_lambda=-0.1": (lambda: ppo_hparams(gae_lambda=-0.1), "gae_lambda"),
        "ppo_hparams clip_eps=0": (lambda: ppo_hparams(clip_eps=0.0), "clip_eps"),
        "ppo_hparams max_grad_norm=-1": (lambda: ppo_hparams(max_grad_norm=-1.0), "max_grad_norm"),
        "ppo_hparams logratio_clip=0": (lambda: ppo_hparams(logratio_clip=0.0), "logratio_clip"),
        "ppo_hparams ent_coef=-0.01": (lambda: ppo_hparams(ent_coef=-0.01), "ent_coef"),
        "ppo_hparams reward_clip=0": (lambda: ppo_hparams(reward_clip=0.0), "reward_clip"),
        # PPOConfig
        "PPOConfig.num_envs=0": (lambda: PPOConfig(num_envs=0), "num_envs"),
        "PPOConfig.num_steps=-1": (lambda: PPOConfig(num_steps=-1), "num_steps"),
        "PPOConfig.num_epochs=0": (lambda: PPOConfig(num_epochs=0), "num_epochs"),
        "PPOConfig.num_minibatches=0": (lambda: PPOConfig(num_minibatches=0), "num_minibatches"),
        "PPOConfig.num_minibatches=3 nondiv": (
            lambda: PPOConfig(num_minibatches=3),
            "num_minibatches"),
        "PPOConfig.total_timesteps<rollout": (
            lambda: PPOConfig(total_timesteps=10),
            "total_timesteps"),
        "PPOConfig.hidden_sizes list": (lambda: PPOConfig(hidden_sizes=[64, 64]), "hidden_sizes"),
        "PPOConfig.policy_kind=bogus": (lambda: PPOConfig(policy_kind="bogus"), "policy_kind"),
        "PPOConfig.adv_norm=bogus": (lambda: PPOConfig(adv_norm="bogus"), "adv_norm"),
        "PPOConfig.kl_estimator=bogus": (lambda: PPOConfig(kl_estimator="bogus"), "kl_estimator"),
        "PPOConfig.lr_schedule=bogus": (lambda: PPOConfig(lr_schedule="bogus"), "lr_schedule"),
        "PPOConfig.rollback_triggers bogus": (
            lambda: PPOConfig(rollback_triggers=("bogus",)),
            "rollback_triggers"),
        "PPOConfig.num_quantiles=0": (
            lambda: PPOConfig(value_kind="quantile", num_quantiles=0),
            "num_quantiles"),
        # ppo_hparams
        "ppo_hparams unknown": (lambda: ppo_hparams(bogus=1.0), "bogus"),
        # RollbackConfig
        "RollbackConfig.window=0": (lambda: RollbackConfig(window=0), "window"),
        "RollbackConfig.window=-3": (lambda: RollbackConfig(window=-3), "window"),
        "RollbackConfig.window=2.5": (lambda: RollbackConfig(window=2.5), "window"),
        "RollbackConfig.check_kl=1": (lambda: RollbackConfig(check_kl=1), "check_kl"),
        # schedules
        "entropy_schedule kind": (lambda: entropy_schedule("bogus", 0.1, 0.01, 10), "kind"),
        "entropy_schedule decay_steps=0": (
            lambda: entropy_schedule("linear", 0.1, 0.01, 0),
            "decay_steps"),
        "entropy_schedule decay_steps=-5": (
            lambda: entropy_schedule("linear", 0.1, 0.01, -5),
            "decay_steps"),
        "entropy_schedule exponential init=0": (
            lambda: entropy_schedule("exponential", 0.0, 0.01, 10),
            "init_value"),
        "entropy_schedule exponential end=-1": (
            lambda: entropy_schedule("exponential", 0.1, -1.0, 10),
            "end_value"),
        "lr_schedule kind": (lambda: lr_schedule("bogus", 1e-3), "kind"),
        "lr_schedule init=-1": (lambda: lr_schedule("constant", -1e-3), "init_value"),
        "lr_schedule cosine missing decay_steps": (
            lambda: lr_schedule("cosine", 1e-3),
            "decay_steps"),
        "lr_schedule step decay_rate=-1": (
            lambda: lr_schedule("step", 1e-3, decay_rate=-0.5, step_size=3),
            "decay_rate"),
        # Checkpointer
        "Checkpointer directory=None": (lambda: Checkpointer(None), "directory"),
        "Checkpointer directory=''": (lambda: Checkpointer(""), "directory"),
        "Checkpointer max_to_keep=0": (lambda: Checkpointer(tmp, max_to_keep=0), "max_to_keep"),
        "Checkpointer max_to_keep=-1": (lambda: Checkpointer(tmp, max_to_keep=-1), "max_to_keep"),
        "Checkpointer best_mode": (lambda: Checkpointer(tmp, best_mode="bogus"), "best_mode"),
        "Checkpointer keep_best=-1": (lambda: Checkpointer(tmp, keep_best=-1), "keep_best"),
        "Checkpointer save_interval_steps=0": (
            lambda: Checkpointer(tmp, save_interval_steps=0),
            "save_interval_steps"),
        "Checkpointer best_metric=3": (lambda: Checkpointer(tmp, best_metric=3), "best_metric"),
        # sinkhorn
        "sinkhorn eps<0": (
            lambda: sinkhorn(jnp.ones((3, 4)), jnp.full(3, 1/3), jnp.full(4, .25), -0.1),
            "epsilon"),
        "sinkhorn eps shape": (
            lambda: sinkhorn(jnp.ones((3, 4)), jnp.full(3, 1/3), jnp.full(4, .25), jnp.ones(2)),
            "epsilon"),
        "sinkhorn a shape": (
            lambda: sinkhorn(jnp.ones((3, 4)), jnp.full(4, 1/4), jnp.full(4, .25), 0.1),
            "`a`"),
        "sinkhorn b shape": (
            lambda: sinkhorn(jnp.ones((3, 4)), jnp.full(3, 1/3), jnp.full(3, 1/3), 0.1),
            "`b`"),
        "sinkhorn cost 1-d": (
            lambda: sinkhorn(jnp.ones(4), jnp.full(3, 1/3), jnp.full(4, .25), 0.1),
            "cost"),
        "sinkhorn max_iters=0": (
            lambda: sinkhorn(jnp.ones((3, 4)), jnp.full(3, 1 / 3), jnp.full(4, .25), 0.1,
                             max_iters=0),
            "max_iters"),
        "sinkhorn tol<0": (
            lambda: sinkhorn(jnp.ones((3, 4)), jnp.full(3, 1/3), jnp.full(4, .25), 0.1, tol=-1e-3),
            "tol"),
        # replay
        "replay_init capacity=0": (lambda: replay_init(ex, 0), "capacity"),
        "replay_init capacity=-5": (lambda: replay_init(ex, -5), "capacity"),
        "replay_init capacity=2.5": (lambda: replay_init(ex, 2.5), "capacity"),
        "replay_init empty example": (lambda: replay_init({}, 10), "example"),
        # envs
        "envs.make unknown": (lambda: make("NoSuchEnv-v0"), "name"),
        "envs.make non-str": (lambda: make(3), "name"),
        "make_portfolio split": (lambda: make_portfolio("bogus"), "split"),
        "make_portfolio window=0": (lambda: make_portfolio(window=0), "window"),
        "make_portfolio window=-1": (lambda: make_portfolio(window=-1), "window"),
        "make_portfolio cost_bps=-1": (lambda: make_portfolio(cost_bps=-1.0), "cost_bps"),
        "make_portfolio episode_length=0": (
            lambda: make_portfolio(episode_length=0),
            "episode_length"),
        "make_portfolio features bogus": (lambda: make_portfolio(features=("bogus",)), "features"),
        "make_portfolio dtype int": (lambda: make_portfolio(dtype=jnp.int32), "dtype"),
    }


CASE_IDS = list(_cases("unused"))


@pytest.mark.parametrize("case", CASE_IDS)
def test_bad_value_raises_naming_the_argument(case, tmp_path):
    fn, name = _cases(str(tmp_path))[case]
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        with pytest.raises((ValueError, TypeError)) as err:
            fn()
    assert re.search(re.escape(name), str(err.value)), (case, str(err.value))


def test_good_values_construct():
    SACConfig(hidden_sizes=(8,), batch_size=4, warmup_steps=4, max_grad_norm=None)
    PPOConfig(num_envs=2, num_steps=8, num_minibatches=2, total_timesteps=16)
    RollbackConfig(window=1)
    entropy_schedule("exponential", 0.1, 0.01, 10)
    lr_schedule("step", 1e-3, decay_rate=0.5, step_size=3)
    replay_init(ex, 1)


def test_sinkhorn_mismatched_marginal_masses_warn():
    with pytest.warns(Warning):
        out = sinkhorn(jnp.ones((3, 4)), jnp.full((3,), 1 / 3), jnp.full((4,), 0.5), 0.1)
    # b is rescaled to the mass of a (documented): the plan's column sums are b / 2
    assert jnp.allclose(out.plan.sum(-2), 0.25, atol=1e-4)
