"""Tests of the compiled PPO training loop (jaxstab.training.ppo)."""

import dataclasses
import gymnax
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from gymnax.environments import spaces

from jaxstab.agents.ppo.ppo import PPOConfig, PPOHParams, ppo_hparams
from jaxstab.training import loop
from jaxstab.training.ppo import (
    default_updates_per_chunk,
    gae,
    make_evaluate,
    make_runner,
    make_train,
)


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
    """rollback_kl = 1e-30: every judged update is rejected (its k3 KL is > 0). Update 0 is applied,
    judged after the next rollout and rejected (back to the initial parameters, update 1
    skipped); update 2 is applied from the restored parameters and rejected at iteration 3.
    With 4 updates the run ends on the initial parameters."""
    env, env_params = gymnax.make("CartPole-v1")
    cfg = PPOConfig(**{**_SMALL, "total_timesteps": 128}, rollback=True, reward_norm=True,
                    early_stopping=True)
    train = jax.jit(make_train(cfg, env, env_params))
    key = jax.random.key(3)
    rs, m = train(key, ppo_hparams(rollback_kl=1e-30))  # any applied update exceeds it
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
    # 3 updates: update 2 is applied and has no next rollout; finalize judges it (KL trigger)
    # and reverts it, so this run also ends on the initial parameters
    cfg3 = dataclasses.replace(cfg, total_timesteps=96)
    assert cfg3.num_updates == 3
    rs3, m3 = jax.jit(make_train(cfg3, env, env_params))(key, ppo_hparams(rollback_kl=1e-30))
    for a, b in zip(jax.tree_util.tree_leaves(rs3.ppo.params), jax.tree_util.tree_leaves(p0)):
        np.testing.assert_array_equal(a, b)
    np.testing.assert_array_equal(m3["rollback"], [0.0, 1.0, 1.0])
    np.testing.assert_array_equal(m3["trigger_kl"], [0.0, 1.0, 1.0])
    assert float(m3["rollback_count"][-1]) == 2.0
    assert float(m3["update_kl"][2]) > 0.0
    # the same run without the KL trigger keeps update 2 (final parameters moved)
    cfg3b = dataclasses.replace(cfg3, rollback_triggers=("nonfinite",))
    rs3b, m3b = jax.jit(make_train(cfg3b, env, env_params))(key, ppo_hparams(rollback_kl=1e-30))
    assert float(m3b["rollback_count"][-1]) == 0.0
    assert not all(np.array_equal(a, b) for a, b in zip(
        jax.tree_util.tree_leaves(rs3b.ppo.params), jax.tree_util.tree_leaves(p0)))
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


# ---------------------------------------------------------------- chunked runner
def test_default_updates_per_chunk():
    # 500k CartPole steps: 976 = 16 x 61 updates -> 16 chunks of 61
    assert default_updates_per_chunk(976) == 61
    assert default_updates_per_chunk(1000) == 50  # 20 chunks
    assert default_updates_per_chunk(100) == 5
    assert default_updates_per_chunk(4) == 1  # fewer than 10 updates: one per chunk
    assert default_updates_per_chunk(97) == 1  # prime: 97 chunks is nearer 10..50 than 1
    for n in (6, 48, 61, 976, 2048):
        d = default_updates_per_chunk(n)
        assert n % d == 0


def test_runner_chunks_equal_make_train_and_loop_run():
    """make_train (one chunk) == make_train with 3 chunks of 2 updates, bitwise; the Python
    driver loop.run + finalize (a different XLA program per chunk) equals vmap(make_train) up
    to float32 rounding."""
    env, env_params = gymnax.make("CartPole-v1")
    cfg = PPOConfig(**{**_SMALL, "total_timesteps": 192}, reward_norm=True)
    assert cfg.num_updates == 6
    with pytest.raises(ValueError, match="does not divide"):
        make_runner(cfg, env, env_params, updates_per_chunk=4)
    with pytest.raises(ValueError, match="updates_per_chunk"):
        make_runner(cfg, env, env_params, updates_per_chunk=0)
    runner = make_runner(cfg, env, env_params, updates_per_chunk=2)
    assert runner.num_chunks == 3
    assert make_runner(cfg, env, env_params).num_chunks == 6
    keys = jax.random.split(jax.random.key(5), 2)
    hp = ppo_hparams(lr=1e-3)
    one = jax.jit(jax.vmap(make_train(cfg, env, env_params), in_axes=(0, None)))(keys, hp)
    three = jax.jit(jax.vmap(make_train(cfg, env, env_params, updates_per_chunk=2),
                             in_axes=(0, None)))(keys, hp)
    for a, b in zip(jax.tree_util.tree_leaves((one[0].ppo, one[1])),
                    jax.tree_util.tree_leaves((three[0].ppo, three[1]))):
        np.testing.assert_array_equal(a, b)
    seen = []
    carry, out = loop.run(runner, keys, loop.broadcast_hparams(hp, 2), progress=False,
                          on_chunk=lambda i, o: seen.append(i))
    assert seen == [0, 1, 2] and out["episode_return"].shape == (2, 3, 2)
    rs, m = loop.finalize(runner, carry, out)
    for a, b in zip(jax.tree_util.tree_leaves(rs.ppo.params),
                    jax.tree_util.tree_leaves(one[0].ppo.params)):
        np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-6)
    assert set(m) == set(one[1])
    for k in ("episode_return", "episodes", "total_loss", "lr", "train_reward_mean"):
        assert m[k].shape == (2, 6)
        np.testing.assert_allclose(m[k], one[1][k], rtol=1e-5, atol=1e-6, err_msg=k)


def test_plateau_lr_in_training_loop_follows_recorded_returns():
    """lr_schedule='plateau' driven by the rollout's mean episode return: the recorded lr
    sequence equals a NumPy re-simulation from the recorded returns (rollouts without a
    finished episode are skipped)."""
    env, env_params = gymnax.make("CartPole-v1")
    cfg = PPOConfig(**{**_SMALL, "num_steps": 8, "total_timesteps": 16 * 12},
                    lr_schedule="plateau", plateau_patience=2, plateau_factor=0.5,
                    plateau_atol=1.0)
    _, m = jax.jit(make_train(cfg, env, env_params))(jax.random.key(1), ppo_hparams(lr=1e-3))
    ret, n, lr = (np.asarray(m[k]) for k in ("episode_return", "episodes", "lr"))
    best, count, scale, want = -np.inf, 0, 1.0, []
    for r, e in zip(ret, n):
        if e > 0:
            if r > best + 1.0:
                best, count = r, 0
            else:
                count += 1
                if count == 2:
                    scale, count = scale * 0.5, 0
        want.append(1e-3 * scale)
    assert np.any(n == 0) and np.any(n > 0)  # both branches exercised
    assert min(want) < 1e-3  # the LR did drop in this run
    np.testing.assert_allclose(lr, want, rtol=1e-6)


class _SimplexEnv:
    """Toy gymnax-style environment with simplex actions over 3 assets.

    Reward ``w_0`` if the action ``w`` lies on the simplex (to 1e-5), else -1; episodes are
    truncated after 8 steps; the observation is a constant."""

    def reset(self, key, params=None):
        return jnp.ones((2,), jnp.float32), jnp.zeros((), jnp.int32)

    def step(self, key, state, action, params=None):
        on_simplex = jnp.all(action >= 0.0) & (jnp.abs(jnp.sum(action) - 1.0) < 1e-5)
        reward = jnp.where(on_simplex, action[0], -1.0)
        t = state + 1
        trunc = t >= 8
        obs = jnp.ones((2,), jnp.float32)
        info = {"final_observation": obs}
        return obs, jnp.where(trunc, 0, t), reward, jnp.zeros((), bool), trunc, info

    def observation_space(self, params=None):
        return spaces.Box(-1.0, 1.0, (2,), jnp.float32)

    def action_space(self, params=None):
        return spaces.Box(0.0, 1.0, (3,), jnp.float32)


def test_softmax_gaussian_trains_on_a_simplex_environment():
    env = _SimplexEnv()
    cfg = PPOConfig(policy_kind="softmax_gaussian", num_envs=4, num_steps=16, num_epochs=4,
                    num_minibatches=2, total_timesteps=64 * 40, hidden_sizes=(16,),
                    init_log_std=0.0)
    _, m = jax.jit(make_train(cfg, env, None))(jax.random.key(0),
                                               ppo_hparams(lr=1e-2, ent_coef=0.0))
    r = np.asarray(m["reward_mean"])
    assert np.all(r >= 0.0)  # every action the env received was on the simplex
    assert r[:3].mean() < 0.45 and r[-3:].mean() > r[:3].mean() + 0.2, r


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
