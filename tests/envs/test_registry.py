"""Registry: "portfolio" and every gymnax name; unknown names list the valid ones."""

import gymnax
import jax
import numpy as np
import pytest

import jaxstab.envs as envs
from jaxstab.envs import ENV_NAMES, make
from jaxstab.envs.portfolio import PortfolioEnv, PortfolioParams


def test_env_names():
    assert ENV_NAMES[0] == "portfolio"
    assert set(gymnax.registered_envs) <= set(ENV_NAMES)
    assert len(ENV_NAMES) == len(set(ENV_NAMES)) == len(gymnax.registered_envs) + 1


def test_make_portfolio_kwargs_pass_through():
    env, params = make("portfolio", split="validation", cash=True, window=5, cost_bps=3.0)
    assert isinstance(env, PortfolioEnv) and isinstance(params, PortfolioParams)
    assert params.num_actions == 21 and params.window == 5
    assert float(params.cost) == pytest.approx(3e-4)
    assert env.action_space(params).shape == (21,)
    obs, state = env.reset(jax.random.key(0), params)
    assert obs.shape == env.observation_space(params).shape == (5 * 20 + 21 + 1,)
    # the same object through the package namespace
    assert envs.make is make


def test_make_gymnax():
    env, params = make("CartPole-v1")
    ref_env, ref_params = gymnax.make("CartPole-v1")
    assert type(env) is type(ref_env) and params == ref_params
    obs, _ = env.reset(jax.random.key(0), params)
    ref_obs, _ = ref_env.reset(jax.random.key(0), ref_params)
    np.testing.assert_array_equal(obs, ref_obs)


def test_unknown_name():
    with pytest.raises(ValueError, match=r"unknown environment name 'Portfolio'.*portfolio, .*CartPole-v1"):
        make("Portfolio")
    with pytest.raises(TypeError, match="name must be a string"):
        make(3)
