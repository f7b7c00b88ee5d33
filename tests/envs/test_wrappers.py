"""Stress wrappers (jaxstab.envs.wrappers) against the unwrapped gymnax environments and NumPy."""

import gymnax
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from jaxstab.envs import wrappers as W


def _rollout(env, params, n_envs, n_steps, seed=0, discrete=False):
    """Random-action rollout of ``n_envs`` vmapped envs (jit): stacked step outputs [T, E, ...]."""
    k_reset, k_act, k_step = jax.random.split(jax.random.key(seed), 3)

    @jax.jit
    def run():
        obs, state = jax.vmap(env.reset, in_axes=(0, None))(
            jax.random.split(k_reset, n_envs), params)

        def step(carry, ks):
            obs, state = carry
            ka, ke = ks
            if discrete:
                act = jax.random.randint(ka, (n_envs,), 0, 2)
            else:
                act = jax.random.uniform(ka, (n_envs, 1), minval=-2.0, maxval=2.0)
            obs2, state, r, te, tr, info = jax.vmap(env.step, in_axes=(0, 0, 0, None))(
                jax.random.split(ke, n_envs), state, act, params)
            return (obs2, state), dict(obs=obs2, reward=r, term=te, trunc=tr,
                                       final=info["final_observation"])

        ks = (jax.random.split(k_act, n_steps), jax.random.split(k_step, n_steps))
        return jax.lax.scan(step, (obs, state), ks)[1]

    return jax.device_get(run())


@pytest.fixture(scope="module")
def cartpole():
    return gymnax.make("CartPole-v1")


@pytest.fixture(scope="module")
def pendulum():
    return gymnax.make("Pendulum-v1")


@pytest.fixture(scope="module")
def cartpole_ref(cartpole):
    env, params = cartpole
    return _rollout(env, params, 4, 300, discrete=True)


def _same_dynamics(out, ref):
    for k in ("obs", "term", "trunc", "final"):
        np.testing.assert_array_equal(out[k], ref[k])


@pytest.mark.parametrize("scale", [1e-3, 1e3])
def test_reward_scale_is_exact_and_keeps_dynamics(cartpole, cartpole_ref, scale):
    env, params = cartpole
    out = _rollout(W.RewardScale(env, scale), params, 4, 300, discrete=True)
    _same_dynamics(out, cartpole_ref)
    # episodes ended (auto-reset exercised) and the reward is exactly the float32 product
    assert cartpole_ref["term"].sum() + cartpole_ref["trunc"].sum() > 10
    expected = np.asarray(cartpole_ref["reward"], np.float32) * np.float32(scale)
    np.testing.assert_array_equal(np.asarray(out["reward"]), expected)


def test_reward_scale_pendulum_continuous(pendulum):
    env, params = pendulum
    ref = _rollout(env, params, 3, 250)
    out = _rollout(W.RewardScale(env, 1e3), params, 3, 250)
    _same_dynamics(out, ref)
    assert ref["trunc"].sum() == 3  # Pendulum truncates at 200 steps: one auto-reset per env
    np.testing.assert_array_equal(out["reward"], ref["reward"].astype(np.float32) * np.float32(1e3))


def test_student_t_noise_distribution(cartpole, cartpole_ref):
    env, params = cartpole
    scale = 2.5
    out = _rollout(W.StudentTReward(env, scale=scale, df=2.0), params, 4, 300, discrete=True)
    _same_dynamics(out, cartpole_ref)
    noise = ((out["reward"] - cartpole_ref["reward"]) / scale).ravel().astype(np.float64)
    # many more samples for the distribution check: 20 envs x 500 steps
    big_ref = _rollout(env, params, 20, 500, seed=3, discrete=True)
    big = _rollout(W.StudentTReward(env, scale=scale, df=2.0), params, 20, 500, seed=3,
                   discrete=True)
    t = np.sort(((big["reward"] - big_ref["reward"]) / scale).ravel().astype(np.float64))
    n = t.size
    cdf = 0.5 + t / (2.0 * np.sqrt(t ** 2 + 2.0))  # Student-t(2) closed-form CDF
    ks = np.max(np.maximum(np.arange(1, n + 1) / n - cdf, cdf - np.arange(n) / n))
    assert ks < 1.63 / np.sqrt(n)  # KS test at the 1% level
    # heavy tail: P(|t| > 10) = 1 - 10/sqrt(102) ~ 0.0099 (a Gaussian would give ~0)
    assert 0.006 < np.mean(np.abs(t) > 10) < 0.014
    assert np.all(np.isfinite(noise))


def test_student_t_zero_scale_is_identity(cartpole, cartpole_ref):
    env, params = cartpole
    out = _rollout(W.StudentTReward(env, scale=0.0), params, 4, 300, discrete=True)
    np.testing.assert_array_equal(out["reward"], cartpole_ref["reward"])


@pytest.mark.parametrize("factor", [-1.0, 10.0])
def test_regime_switch_at_the_right_step_across_auto_resets(cartpole, cartpole_ref, factor):
    env, params = cartpole
    k = 137  # well after the first episodes end (random CartPole episodes last ~20 steps)
    out = _rollout(W.RegimeSwitch(env, switch_step=k, factor=factor), params, 4, 300,
                   discrete=True)
    _same_dynamics(out, cartpole_ref)
    first_done = np.argmax(cartpole_ref["term"] | cartpole_ref["trunc"], axis=0)
    assert np.all(first_done < k)  # the counter must survive auto-resets
    ref_r = np.asarray(cartpole_ref["reward"], np.float32)
    np.testing.assert_array_equal(out["reward"][:k], ref_r[:k])
    np.testing.assert_array_equal(out["reward"][k:], ref_r[k:] * np.float32(factor))


def test_regime_switch_counter_restarts_on_reset(pendulum):
    env, params = pendulum
    w = W.RegimeSwitch(env, switch_step=2, factor=-1.0)
    obs, st = w.reset(jax.random.key(0), params)
    a = jnp.zeros((1,))
    rs = []
    for i in range(3):
        obs, st, r, *_ = w.step(jax.random.key(i + 1), st, a, params)
        rs.append(float(r))
    _, st2 = w.reset(jax.random.key(9), params)
    assert int(st.t) == 3 and int(st2.t) == 0 and st2.t.dtype == jnp.int32
    assert rs[0] <= 0 and rs[1] <= 0 and rs[2] >= 0  # Pendulum rewards are <= 0; flipped from t=2


def test_nan_injection_fraction_within_binomial_bounds(cartpole, cartpole_ref):
    env, params = cartpole
    p = 0.05
    out = _rollout(W.NonFiniteInjection(env, reward_frac=p), params, 4, 300, discrete=True)
    _same_dynamics(out, cartpole_ref)
    hit = np.isnan(out["reward"])
    n = hit.size
    assert abs(hit.mean() - p) < 5 * np.sqrt(p * (1 - p) / n)
    np.testing.assert_array_equal(out["reward"][~hit], cartpole_ref["reward"][~hit])


@pytest.mark.parametrize("value,check", [("nan", np.isnan), ("inf", np.isposinf),
                                         ("-inf", np.isneginf)])
def test_obs_injection_consistent_with_final_observation(cartpole, cartpole_ref, value, check):
    env, params = cartpole
    p = 0.1
    out = _rollout(W.NonFiniteInjection(env, obs_frac=p, value=value), params, 4, 300,
                   discrete=True)
    done = cartpole_ref["term"] | cartpole_ref["trunc"]
    hit = check(out["final"]).all(-1)
    assert not (check(out["final"]).any(-1) & ~hit).any()  # whole observation or nothing
    n = hit.size
    assert abs(hit.mean() - p) < 5 * np.sqrt(p * (1 - p) / n)
    # final observation: poisoned where hit, otherwise the true one
    np.testing.assert_array_equal(out["final"][~hit], cartpole_ref["final"][~hit])
    # obs: poisoned iff hit and the episode continued; equal to final_observation when not done
    np.testing.assert_array_equal(check(out["obs"]).all(-1), hit & ~done)
    np.testing.assert_array_equal(out["obs"][~hit], cartpole_ref["obs"][~hit])
    np.testing.assert_array_equal(out["obs"][done], cartpole_ref["obs"][done])  # clean resets
    nd = ~done
    np.testing.assert_array_equal(out["obs"][nd], out["final"][nd])
    np.testing.assert_array_equal(out["reward"], cartpole_ref["reward"])
    np.testing.assert_array_equal(out["term"], cartpole_ref["term"])


def test_wrappers_stack_and_forward_attributes(pendulum):
    env, params = pendulum
    w = W.NonFiniteInjection(W.RegimeSwitch(W.RewardScale(env, 2.0), 5), reward_frac=0.5)
    assert w.observation_space(params).shape == env.observation_space(params).shape
    assert w.action_space(params).shape == env.action_space(params).shape
    assert w.default_params == env.default_params
    assert w.unwrapped is env
    obs, st = w.reset(jax.random.key(0), w.default_params)
    out = jax.jit(w.step)(jax.random.key(1), st, jnp.zeros((1,)), params)
    assert out[0].shape == obs.shape and out[2].shape == ()


def test_constructor_validation(pendulum):
    env, _ = pendulum
    with pytest.raises(ValueError, match="scale"):
        W.RewardScale(env, float("inf"))
    with pytest.raises(TypeError, match="scale"):
        W.RewardScale(env, "big")
    with pytest.raises(ValueError, match="scale"):
        W.StudentTReward(env, scale=-1.0)
    with pytest.raises(ValueError, match="df"):
        W.StudentTReward(env, df=0.0)
    with pytest.raises(ValueError, match="switch_step"):
        W.RegimeSwitch(env, switch_step=-1)
    with pytest.raises(TypeError, match="switch_step"):
        W.RegimeSwitch(env, switch_step=2.5)
    with pytest.raises(ValueError, match="factor"):
        W.RegimeSwitch(env, 3, factor=float("nan"))
    with pytest.raises(ValueError, match="reward_frac"):
        W.NonFiniteInjection(env, reward_frac=1.5)
    with pytest.raises(ValueError, match="obs_frac"):
        W.NonFiniteInjection(env, obs_frac=-0.1)
    with pytest.raises(ValueError, match="value"):
        W.NonFiniteInjection(env, value="zero")
    with pytest.raises(TypeError, match="env"):
        W.RewardScale(object(), 1.0)
