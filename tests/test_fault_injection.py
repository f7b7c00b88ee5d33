"""In-graph fault tolerance: NaN/Inf injected into rewards and observations during training.

With the guards on (SAC ``skip_nonfinite``; PPO ``skip_nonfinite`` + rollback) the parameters
stay finite and the guards report that they acted; with the guards off the same runs end with
non-finite parameters, so these tests fail if the guards stop working *or* if the injection
stops reaching the learner.
"""

import gymnax
import jax
import numpy as np
import pytest

from jaxstab.agents.common import tree_all_finite
from jaxstab.agents.ppo.ppo import PPOConfig, ppo_hparams
from jaxstab.agents.sac import SACConfig, default_hparams, make_sac
from jaxstab.envs.wrappers import NonFiniteInjection
from jaxstab.training import ppo as ppo_training
from jaxstab.training import sac as sac_training

pytestmark = pytest.mark.slow


def _sac_run(guards: bool):
    env, params = gymnax.make("Pendulum-v1")
    env = NonFiniteInjection(NonFiniteInjection(env, reward_frac=0.01, value="nan"),
                             obs_frac=0.002, value="inf")
    cfg = SACConfig(hidden_sizes=(16, 16), batch_size=32, buffer_size=800, warmup_steps=64,
                    total_steps=800, eval_interval=800, eval_episodes=1,
                    max_grad_norm=10.0 if guards else None, skip_nonfinite=guards)
    hp = default_hparams(cfg, 1, actor_lr=1e-3, critic_lr=1e-3, alpha_lr=1e-3)
    key = jax.random.key(0)
    out = jax.jit(sac_training.make_train(cfg, env, params))(key, hp)
    init, _ = make_sac(3, 1, cfg)
    initial = init(jax.random.split(key, 3)[0], hp)  # train's own agent key
    return jax.device_get(out), jax.device_get(initial)


def _sac_params(agent):
    return (agent.actor_params, agent.critic_params, agent.target_critic_params,
            agent.log_alpha)


def test_sac_guards_keep_parameters_finite_under_injected_nan_inf():
    out, initial = _sac_run(guards=True)
    agent = out.state.agent
    assert bool(tree_all_finite(_sac_params(agent)))
    assert bool(tree_all_finite((agent.actor_opt_state, agent.critic_opt_state)))
    n_updates = int(agent.step)
    skipped = int(agent.skipped)
    # the injection reached the learner, and the guard skipped exactly the poisoned updates
    assert 0 < skipped < n_updates
    np.testing.assert_allclose(float(np.sum(out.metrics["skipped"])), skipped)
    assert np.isnan(out.metrics["reward"]).any()  # NaN rewards were collected
    # learning still happened on the clean updates
    moved = jax.tree_util.tree_map(lambda a, b: np.abs(a - b).max(), agent.actor_params,
                                   initial.actor_params)
    assert max(jax.tree_util.tree_leaves(moved)) > 1e-3


def test_sac_without_guards_ends_with_nonfinite_parameters():
    out, _ = _sac_run(guards=False)
    assert not bool(tree_all_finite(_sac_params(out.state.agent)))


def _ppo_run(guards: bool):
    env, params = gymnax.make("CartPole-v1")
    env = NonFiniteInjection(NonFiniteInjection(env, reward_frac=0.005, value="nan"),
                             obs_frac=0.005, value="inf")
    cfg = PPOConfig(hidden_sizes=(16, 16), num_envs=2, num_steps=64, num_epochs=2,
                    num_minibatches=2, total_timesteps=4096, skip_nonfinite=guards,
                    rollback=guards)
    train = jax.jit(ppo_training.make_train(cfg, env, params))
    rs, metrics = train(jax.random.key(1), ppo_hparams(lr=1e-3))
    return jax.device_get(rs), jax.device_get(metrics)


def test_ppo_guards_keep_parameters_finite_under_injected_nan_inf():
    rs, m = _ppo_run(guards=True)
    assert bool(tree_all_finite(rs.ppo.params))
    assert bool(tree_all_finite(rs.ppo.opt_state))
    assert m["num_nonfinite_skips"].sum() > 0  # the guard acted
    assert np.isnan(m["reward_mean"]).any()  # and the injection reached the rollouts


def test_ppo_without_guards_ends_with_nonfinite_parameters():
    rs, _ = _ppo_run(guards=False)
    assert not bool(tree_all_finite(rs.ppo.params))
