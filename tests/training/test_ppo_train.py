"""Tests of the compiled PPO training loop (jaxstab.training.ppo)."""

import gymnax
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from jaxstab.agents.ppo.ppo import PPOConfig, PPOHParams, ppo_hparams
from jaxstab.training.ppo import gae, make_evaluate, make_train


# ---------------------------------------------------------------- GAE
def _gae_numpy(r, v, nv, term, trunc, gamma, lam):
    t_len, n = r.shape
    adv = np.zeros((t_len, n))
    for j in range(n):
        acc = 0.0
        for t in reversed(range(t_len)):
            delta = r[t, j] + gamma * (0.0 if term[t, j] else nv[t, j]) - v[t, j]
            done = term[t, j] or trunc[t, j]
            acc = delta + gamma * lam * (0.0 if done else acc)
            adv[t, j] = acc
    return adv


def test_gae_hand_values_truncation_vs_termination():
    r = jnp.array([[1.0], [1.0]])
    v = jnp.zeros((2, 1))
    nv = jnp.array([[5.0], [7.0]])
    no = jnp.zeros((2, 1), bool)
    first = jnp.array([[True], [False]])
    # truncated at t=0: bootstrap from V(final obs)=5, but do not carry A_1 across the reset
    adv, ret = gae(r, v, nv, no, first, 0.5, 1.0)
    np.testing.assert_allclose(adv[:, 0], [1 + 0.5 * 5, 1 + 0.5 * 7])
    np.testing.assert_allclose(ret, adv)
    # terminated at t=0: no bootstrap at all
    adv, _ = gae(r, v, nv, first, no, 0.5, 1.0)
    np.testing.assert_allclose(adv[:, 0], [1.0, 1 + 0.5 * 7])
    # neither: A_0 = delta_0 + gamma * lam * A_1
    adv, _ = gae(r, v, nv, no, no, 0.5, 1.0)
    np.testing.assert_allclose(adv[:, 0], [1 + 2.5 + 0.5 * 4.5, 4.5])


def test_gae_matches_numpy_loop(x64):
    rng = np.random.default_rng(0)
    t_len, n = 9, 4
    r, v, nv = rng.normal(size=(3, t_len, n))
    term = rng.random((t_len, n)) < 0.15
    trunc = rng.random((t_len, n)) < 0.15
    adv, ret = gae(jnp.asarray(r), jnp.asarray(v), jnp.asarray(nv), jnp.asarray(term),
                   jnp.asarray(trunc), 0.97, 0.9)
    ref = _gae_numpy(r, v, nv, term, trunc, 0.97, 0.9)
    np.testing.assert_allclose(adv, ref, rtol=1e-12)
    np.testing.assert_allclose(ret, ref + v, rtol=1e-12)
    with pytest.raises(ValueError, match="share a shape"):
        gae(jnp.asarray(r), jnp.asarray(v[:-1]), jnp.asarray(nv), jnp.asarray(term),
            jnp.asarray(trunc), 0.97, 0.9)


# ---------------------------------------------------------------- compiled loop
_SMALL = dict(num_envs=2, num_steps=16, num_epochs=2, num_minibatches=2, total_timesteps=96,
              hidden_sizes=(16,))


def test_vmap_over_seeds_and_hparams_equals_loop():
    env, env_params = gymnax.make("CartPole-v1")
    cfg = PPOConfig(**_SMALL)
    train = make_train(cfg, env, env_params)
    keys = jax.random.split(jax.random.key(0), 2)
    lrs = jnp.array([1e-3, 3e-4], jnp.float32)
    axes = PPOHParams(*([None] * len(PPOHParams._fields)))._replace(lr=0)
    hp = ppo_hparams()._replace(lr=lrs)
    rs_v, m_v = jax.jit(jax.vmap(train, in_axes=(0, axes)))(keys, hp)
    single = jax.jit(train)
    for i in range(2):
        rs_i, m_i = single(keys[i], ppo_hparams(lr=lrs[i]))
        for a, b in zip(jax.tree_util.tree_leaves(rs_v.ppo.params),
                        jax.tree_util.tree_leaves(rs_i.ppo.params)):
            np.testing.assert_allclose(a[i], b, rtol=1e-4, atol=1e-6)
        for k in ("episode_return", "policy_loss", "value_loss", "approx_kl"):
            np.testing.assert_allclose(m_v[k][i], m_i[k], rtol=1e-4, atol=1e-6, err_msg=k)
    assert m_v["episode_return"].shape == (2, cfg.num_updates)
    assert int(rs_v.ppo.update_step[0]) == cfg.num_updates


def test_rollback_reverts_every_update_when_kl_trigger_always_fires():
    """rollback_kl = -1: every judged update is rejected (k3 KL >= 0). Update 0 is applied,
    judged after the next rollout and rejected (back to the initial parameters, update 1
    skipped); update 2 is applied from the restored parameters and rejected at iteration 3.
    With 4 updates the run ends on the initial parameters."""
    env, env_params = gymnax.make("CartPole-v1")
    cfg = PPOConfig(**{**_SMALL, "total_timesteps": 128}, rollback=True, reward_norm=True,
                    early_stopping=True)
    train = jax.jit(make_train(cfg, env, env_params))
    key = jax.random.key(3)
    rs, m = train(key, ppo_hparams(rollback_kl=-1.0))
    from jaxstab.training.ppo import networks_from_config  # same init as the loop

    k_init = jax.random.split(key, 3)[0]
    nets = networks_from_config(cfg, 4, 2)
    p0 = nets.init(k_init, jnp.zeros((4,), jnp.float32))
    for a, b in zip(jax.tree_util.tree_leaves(rs.ppo.params), jax.tree_util.tree_leaves(p0)):
        np.testing.assert_array_equal(a, b)
    assert cfg.num_updates == 4
    np.testing.assert_array_equal(m["rollback"], [0.0, 1.0, 0.0, 1.0])
    np.testing.assert_array_equal(m["trigger_kl"], [0.0, 1.0, 0.0, 1.0])
    assert float(m["rollback_count"][-1]) == 2.0
    # with a sane threshold nothing is rolled back in this short run
    rs2, m2 = train(key, ppo_hparams(rollback_kl=10.0, rollback_loss_factor=1e6,
                                     rollback_reward_factor=0.0))
    assert float(m2["rollback_count"][-1]) == 0.0
    # reward normalization is active: learning rewards differ from the raw +1 rewards
    assert np.all(m2["reward_mean"] == 1.0)
    assert not np.allclose(m2["train_reward_mean"], 1.0)
    assert np.all(np.abs(m2["train_reward_mean"]) <= 10.0)


def test_tanh_gaussian_pendulum_train_and_evaluate_small():
    env, env_params = gymnax.make("Pendulum-v1")
    cfg = PPOConfig(**_SMALL, policy_kind="tanh_gaussian", kl_estimator="exact",
                    early_stopping=True)
    train = jax.jit(make_train(cfg, env, env_params))
    rs, m = train(jax.random.key(0), ppo_hparams())
    for k, v in m.items():
        assert v.shape == (cfg.num_updates,) and np.all(np.isfinite(v)), k
    ret = make_evaluate(cfg, env, env_params, num_envs=2, max_steps=50)(
        rs.ppo.params, jax.random.key(1))
    # Pendulum rewards lie in [-16.27, 0]; 50 steps
    assert ret.shape == (2,) and np.all(ret <= 0.0) and np.all(ret >= -16.3 * 50)


# ---------------------------------------------------------------- learning (slow)
def _final_return(m, last=10):
    r = np.asarray(m["episode_return"])[:, -last:]
    n = np.asarray(m["episodes"])[:, -last:]
    return (r * n).sum(1) / np.maximum(n.sum(1), 1)


@pytest.mark.slow
def test_cartpole_purejaxrl_hyperparameters_reach_475():
    """PureJaxRL's CartPole settings: 4 envs x 128 steps, 4 epochs, 4 minibatches, lr 2.5e-4
    annealed linearly, clip 0.2, ent 0.01, vf 0.5, grad norm 0.5, gamma 0.99, lambda 0.95,
    value clipping at 0.2 (PureJaxRL clips the value loss), 500k steps, 5 seeds. Measured both
    ways: mean return of the episodes completed in the last 10 updates (stochastic policy) and a
    deterministic evaluation (argmax policy, 16 episodes)."""
    env, env_params = gymnax.make("CartPole-v1")
    cfg = PPOConfig(num_envs=4, num_steps=128, num_epochs=4, num_minibatches=4,
                    total_timesteps=500_000, lr_schedule="linear", value_clipping=True)
    hp = ppo_hparams(lr=2.5e-4, lr_end=0.0, clip_eps=0.2, vf_clip_eps=0.2, ent_coef=0.01,
                     vf_coef=0.5, max_grad_norm=0.5, gamma=0.99, gae_lambda=0.95)
    train = jax.jit(jax.vmap(make_train(cfg, env, env_params), in_axes=(0, None)))
    keys = jax.random.split(jax.random.key(42), 5)
    rs, m = train(keys, hp)
    final = _final_return(m)
    evaluate = jax.jit(jax.vmap(make_evaluate(cfg, env, env_params, num_envs=16)))
    det = np.asarray(evaluate(rs.ppo.params, keys)).mean(axis=1)
    assert np.all(np.isfinite(np.asarray(m["total_loss"])))
    assert np.sum(final >= 475.0) >= 4, final
    assert np.sum(det >= 475.0) >= 4, det


@pytest.mark.slow
def test_pendulum_gaussian_reaches_minus_400():
    """Continuous PPO on Pendulum-v1: 16 envs x 128 steps, 10 epochs x 8 minibatches,
    lr 1e-3 linear, gamma 0.9, reward normalization, 300k steps, 3 seeds (budget measured:
    -180 after 1M steps for 2 seeds; see the report)."""
    env, env_params = gymnax.make("Pendulum-v1")
    cfg = PPOConfig(policy_kind="gaussian", num_envs=16, num_steps=128, num_epochs=10,
                    num_minibatches=8, total_timesteps=300_000, lr_schedule="linear",
                    reward_norm=True, init_log_std=-0.5)
    hp = ppo_hparams(lr=1e-3, gamma=0.9, gae_lambda=0.95, ent_coef=0.0, clip_eps=0.2)
    train = jax.jit(jax.vmap(make_train(cfg, env, env_params), in_axes=(0, None)))
    keys = jax.random.split(jax.random.key(7), 3)
    rs, m = train(keys, hp)
    final = _final_return(m)
    assert np.all(final >= -400.0), final
    det = np.asarray(jax.jit(jax.vmap(make_evaluate(cfg, env, env_params, num_envs=8)))(
        rs.ppo.params, keys)).mean(axis=1)
    assert np.all(det >= -400.0), det
