"""Presampled auto-resets (``jaxstab.training.envstep``) equal gymnax's ``env.step``: the same
flags, integers and keys exactly, floats to rounding (XLA may fuse the step's arithmetic
differently in the two loops)."""

from __future__ import annotations

import warnings

import gymnax
import jax
import jax.numpy as jnp
import numpy as np
import pytest
from gymnax.wrappers import FlattenObservationWrapper

from jaxstab.training import envstep as ES


def _random_actions(env, env_params, key, shape):
    space = env.action_space(env_params)
    keys = jax.random.split(key, int(np.prod(shape)))
    acts = jax.vmap(space.sample)(keys)
    return jnp.reshape(acts, shape + acts.shape[1:])


def _rollouts(env, env_params, key, T, N):
    """The same T x N random-action rollout with env.step and with presampled resets."""
    k_reset, k_steps, k_act = jax.random.split(key, 3)
    obs0, state0 = jax.vmap(env.reset, in_axes=(0, None))(jax.random.split(k_reset, N),
                                                         env_params)
    keys = jax.random.split(k_steps, (T, N))
    actions = _random_actions(env, env_params, k_act, (T, N))

    def plain(state, xs):
        k, a = xs
        out = jax.vmap(env.step, in_axes=(0, 0, 0, None))(k, state, a, env_params)
        return out[1], (out[0], out[2], out[3], out[4], out[5]["final_observation"])

    # the presampled side through the stepper PPO uses (presample_resets + step_presampled)
    stepper = ES.rollout_stepper(env, env_params, T, N)
    assert stepper.presampled

    def pre(state, xs):
        k, a, resets = xs
        out = stepper.step(k, state, a, resets)
        return out[1], (out[0], out[2], out[3], out[4], out[5]["final_observation"])

    @jax.jit
    def run():
        s1, a = jax.lax.scan(plain, state0, (keys, actions))
        key_step, resets = stepper.prepare(keys)
        s2, b = jax.lax.scan(pre, state0, (key_step, actions, resets))
        return (s1, a), (s2, b)

    return run()


@pytest.mark.parametrize("name", ["CartPole-v1", "Pendulum-v1", "Acrobot-v1", "Catch-bsuite",
                                  "FourRooms-misc", "portfolio"])
def test_presampled_steps_equal_env_step(name):
    if name == "portfolio":  # jaxstab's own environment (gymnax's base step)
        from jaxstab.runs import make_env

        env, env_params = make_env(name)
    else:
        env, env_params = gymnax.make(name)
    assert ES.can_presample(env, env_params, 64, 4)
    (s1, a), (s2, b) = _rollouts(env, env_params, jax.random.key(3), 64, 4)
    for x, y in zip(jax.tree_util.tree_leaves((s1, a)), jax.tree_util.tree_leaves((s2, b))):
        x, y = np.asarray(x), np.asarray(y)
        if np.issubdtype(x.dtype, np.floating):
            np.testing.assert_allclose(x, y, rtol=1e-5, atol=1e-6)
        else:
            np.testing.assert_array_equal(x, y)
    done = np.asarray(a[2]) | np.asarray(a[3])
    if name in ("CartPole-v1", "Catch-bsuite"):  # the others end no episode in 64 steps
        assert done.sum() >= 4  # the comparison covered auto-resets


def test_can_presample_falls_back():
    env, env_params = gymnax.make("CartPole-v1")
    # a wrapper overrides step: its semantics are not gymnax's base step, so no presampling
    wrapped = FlattenObservationWrapper(env)
    assert not ES.can_presample(wrapped, env_params, 8, 2)
    # too many resets to hold: CartPole's reset is 4 floats of state + 4 of obs + time
    assert ES.can_presample(env, env_params, 128, 4)
    assert not ES.can_presample(env, env_params, 2**20, 64)
    assert not ES.rollout_stepper(wrapped, env_params, 8, 2).presampled
    assert not ES.rollout_stepper(env, env_params, 2**20, 64).presampled


def test_can_presample_refuses_a_changed_gymnax_step(monkeypatch):
    """A gymnax release whose ``Environment.step`` body differs from the one
    ``step_presampled`` restates (another source hash) falls back to ``env.step``, warning once
    per source."""
    from gymnax.environments.environment import Environment

    env, env_params = gymnax.make("CartPole-v1")
    base = Environment.step
    assert ES.step_source_hash(base) in ES.VERIFIED_STEP_SOURCES  # the installed gymnax

    def step(self, key, state, action, params=None):  # a "new release": other body
        return base(self, key, state, action, params)

    monkeypatch.setattr(Environment, "step", step)
    monkeypatch.setattr(ES, "_warned_sources", set())
    assert type(env).step is step  # still the base class's step, so only the hash can tell
    with pytest.warns(RuntimeWarning, match="not the version"):
        assert not ES.can_presample(env, env_params, 8, 2)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        assert not ES.can_presample(env, env_params, 8, 2)  # warned once
    monkeypatch.setattr(ES, "VERIFIED_STEP_SOURCES",
                        {ES.step_source_hash(step): "test", **ES.VERIFIED_STEP_SOURCES})
    assert ES.can_presample(env, env_params, 8, 2)


def test_ppo_training_with_and_without_presampling(monkeypatch):
    """PPO's rollout takes the presampled path for CartPole; forcing the plain ``env.step``
    path gives the same episodes (returns, lengths, counts) and parameters to rounding."""
    from jaxstab.agents.ppo.ppo import PPOConfig, ppo_hparams
    from jaxstab.training.ppo import make_train

    env, env_params = gymnax.make("CartPole-v1")
    cfg = PPOConfig(num_envs=4, num_steps=32, num_epochs=2, num_minibatches=2,
                    total_timesteps=128 * 8, hidden_sizes=(16, 16))
    hp = ppo_hparams(lr=1e-3)
    calls = []
    real = ES.can_presample
    monkeypatch.setattr(ES, "can_presample", lambda *a: calls.append(real(*a)) or calls[-1])
    st_a, m_a = jax.jit(make_train(cfg, env, env_params))(jax.random.key(0), hp)
    monkeypatch.setattr(ES, "can_presample", lambda *a: False)
    st_b, m_b = jax.jit(make_train(cfg, env, env_params))(jax.random.key(0), hp)
    assert calls == [True]
    for k in ("episode_return", "episode_length", "episodes", "reward_mean"):
        np.testing.assert_array_equal(np.asarray(m_a[k]), np.asarray(m_b[k]))
    assert float(np.sum(m_a["episodes"])) > 10
    for x, y in zip(jax.tree_util.tree_leaves(st_a.ppo.params),
                    jax.tree_util.tree_leaves(st_b.ppo.params)):
        np.testing.assert_allclose(np.asarray(x), np.asarray(y), rtol=1e-4, atol=1e-6)
