"""Tests for jaxstab.agents.sac: policies, losses vs NumPy, guards, jit/vmap, one trace."""

import math

import distrax
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from jaxstab.agents.sac import (
    SACConfig,
    default_hparams,
    default_target_entropy,
    make_policy,
    make_sac,
    make_sac_networks,
    tanh_log_det_jacobian,
)
from jaxstab.agents.sac import losses as sac_losses
from jaxstab.replay import Transition

OBS, ACT, B = 3, 2, 6


def _batch(key, n_act=ACT, b=B, simplex=False):
    k1, k2, k3, k4, k5 = jax.random.split(key, 5)
    if simplex:
        action = jax.random.dirichlet(k2, jnp.ones(n_act), (b,))
    else:
        action = jax.random.uniform(k2, (b, n_act), minval=-1, maxval=1)
    return Transition(obs=jax.random.normal(k1, (b, OBS)), action=action,
                      reward=jax.random.normal(k3, (b,)),
                      next_obs=jax.random.normal(k4, (b, OBS)),
                      terminated=jax.random.bernoulli(k5, 0.3, (b,)))


def _cfg(**kw):
    base = dict(hidden_sizes=(8,), batch_size=B, warmup_steps=B)
    base.update(kw)
    return SACConfig(**base)


def _trees_equal(a, b):
    return all(bool(jnp.array_equal(x, y, equal_nan=True)) for x, y in
               zip(jax.tree_util.tree_leaves(a), jax.tree_util.tree_leaves(b)))


# ----------------------------------------------------------------------------------- policies
def test_tanh_log_det_stable_vs_naive_and_distrax(x64):
    u = jnp.linspace(-6.0, 6.0, 101)
    naive = jnp.log(1.0 - jnp.tanh(u) ** 2)
    np.testing.assert_allclose(tanh_log_det_jacobian(u), naive, rtol=1e-10, atol=1e-10)
    ref = distrax.Tanh().forward_log_det_jacobian(u)
    np.testing.assert_allclose(tanh_log_det_jacobian(u), ref, rtol=1e-8, atol=1e-8)
    # Far in the tails the naive form is -inf in float32; the stable one is exact: ~ -2|u| + 2 log 2.
    big = jnp.array([-40.0, 40.0], jnp.float32)
    assert bool(jnp.all(jnp.isinf(jnp.log(1.0 - jnp.tanh(big) ** 2))))
    np.testing.assert_allclose(tanh_log_det_jacobian(big), -80.0 + 2 * math.log(2), rtol=1e-6)


def test_tanh_gaussian_log_prob_vs_distrax(x64):
    pol = make_policy("tanh_gaussian", 3)
    mean = jnp.array([[0.3, -0.5, 1.0]])
    log_std = jnp.array([[-0.2, 0.1, -1.0]])
    a, logp = pol.sample(mean, log_std, jax.random.key(3))
    dist = distrax.Transformed(distrax.MultivariateNormalDiag(mean, jnp.exp(log_std)),
                               distrax.Block(distrax.Tanh(), 1))
    np.testing.assert_allclose(logp, dist.log_prob(a), rtol=1e-6)
    assert bool(jnp.all(jnp.abs(a) < 1))


def test_logistic_normal_density_vs_change_of_variables(x64):
    n = 4
    pol = make_policy("logistic_normal", n)
    assert pol.latent_dim == n - 1
    mean = jnp.array([0.2, -0.4, 0.7])
    log_std = jnp.array([-0.3, 0.2, -0.1])
    key = jax.random.key(7)
    a, logp = pol.sample(mean, log_std, key)
    u = mean + jnp.exp(log_std) * jax.random.normal(key, mean.shape, mean.dtype)
    # Reference: latent Gaussian density minus log|det d a_{1:n-1} / d u| (autodiff Jacobian).
    jac = jax.jacfwd(lambda v: pol.mode(v)[: n - 1])(u)
    ref = distrax.MultivariateNormalDiag(mean, jnp.exp(log_std)).log_prob(u) - jnp.linalg.slogdet(
        jac)[1]
    np.testing.assert_allclose(logp, ref, rtol=1e-10)
    np.testing.assert_allclose(jnp.sum(a), 1.0, rtol=1e-12)
    np.testing.assert_allclose(a, pol.mode(u), rtol=1e-12)


def test_logistic_normal_n2_integrates_to_one(x64):
    # n = 2: a_1 = sigmoid(u) on (0, 1); integrate exp(log pi) over a_1 by quadrature.
    pol = make_policy("logistic_normal", 2)
    mean, log_std = jnp.array([0.4]), jnp.array([-0.2])
    eps = jnp.linspace(-12, 12, 20001)[:, None]
    u = mean[None, :] + jnp.exp(log_std)[None, :] * eps
    a1 = jax.nn.sigmoid(u[:, 0])
    z = (u - mean[None, :]) / jnp.exp(log_std)[None, :]
    lat = jnp.sum(-0.5 * z**2 - log_std[None, :] - 0.5 * math.log(2 * math.pi), axis=-1)
    logp = lat - jnp.log(a1) - jnp.log1p(-a1)
    # The policy's own log-prob agrees with this formula at sampled points.
    for i in (0, 5000, 10000, 15000):
        key = jax.random.key(i)
        a_s, lp_s = pol.sample(mean, log_std, key)
        ue = mean + jnp.exp(log_std) * jax.random.normal(key, (1,), jnp.float64)
        s = jax.nn.sigmoid(ue[0])
        ref = (-0.5 * ((ue[0] - mean[0]) / jnp.exp(log_std[0])) ** 2 - log_std[0]
               - 0.5 * math.log(2 * math.pi) - jnp.log(s) - jnp.log1p(-s))
        np.testing.assert_allclose(lp_s, ref, rtol=1e-10)
    mass = jnp.trapezoid(jnp.exp(logp), a1)
    np.testing.assert_allclose(mass, 1.0, rtol=1e-6)


def test_projected_gaussian_latent_log_prob(x64):
    n = 5
    pol = make_policy("projected_gaussian", n)
    mean = jnp.linspace(-0.2, 0.4, n)
    log_std = jnp.full((n,), -1.0)
    key = jax.random.key(1)
    a, logp = pol.sample(mean, log_std, key)
    u = mean + jnp.exp(log_std) * jax.random.normal(key, (n,), jnp.float64)
    ref = distrax.MultivariateNormalDiag(mean, jnp.exp(log_std)).log_prob(u)
    np.testing.assert_allclose(logp, ref, rtol=1e-10)
    assert bool(jnp.all(a >= 0)) and abs(float(jnp.sum(a)) - 1) < 1e-10
    # Projection reference: NumPy sort-based (Duchi et al.) on the same latent.
    un = np.asarray(u)
    s = np.sort(un)[::-1]
    css = np.cumsum(s)
    rho = np.nonzero(s + (1 - css) / np.arange(1, n + 1) > 0)[0][-1]
    theta = (css[rho] - 1) / (rho + 1)
    np.testing.assert_allclose(a, np.maximum(un - theta, 0), atol=1e-12)


def test_default_target_entropies():
    assert default_target_entropy("tanh_gaussian", 6) == -6.0
    for n in (3, 20):
        sigma = 0.25 / n
        ref = distrax.MultivariateNormalDiag(jnp.zeros(n), jnp.full((n,), sigma)).entropy()
        np.testing.assert_allclose(default_target_entropy("projected_gaussian", n), ref, rtol=1e-5)
        # Logistic normal centred at the uniform allocation with latent std 0.25: Monte Carlo
        # entropy with the density from an autodiff change of variables (independent of ours).
        pol = make_policy("logistic_normal", n)
        u = 0.25 * jax.random.normal(jax.random.key(n), (4000, n - 1))
        gauss = distrax.MultivariateNormalDiag(jnp.zeros(n - 1), jnp.full((n - 1,), 0.25))
        logdet = jax.vmap(lambda v: jnp.linalg.slogdet(
            jax.jacfwd(lambda w: pol.mode(w)[: n - 1])(v))[1])(u)
        mc_entropy = -jnp.mean(jax.vmap(gauss.log_prob)(u) - logdet)
        np.testing.assert_allclose(default_target_entropy("logistic_normal", n), mc_entropy,
                                   atol=0.05 * n)
        # Reachable: below the uniform distribution's entropy log(1/(n-1)!).
        assert default_target_entropy("logistic_normal", n) < -math.lgamma(n)
    # The seed's -n target implies sigma ~ 0.09 for the projected Gaussian whatever n.
    sigma_seed = math.exp(-1 - 0.5 * math.log(2 * math.pi * math.e))
    assert abs(sigma_seed - 0.0893) < 1e-3
    with pytest.raises(ValueError, match="kind"):
        default_target_entropy("beta", 3)


def test_policy_bad_inputs():
    with pytest.raises(ValueError, match="kind"):
        make_policy("dirichlet?", 3)
    with pytest.raises(ValueError, match="action_dim"):
        make_policy("logistic_normal", 1)


# ------------------------------------------------------------------------------------- losses
def _np_gauss_logp(u, mean, log_std):
    z = (u - mean) / np.exp(log_std)
    return np.sum(-0.5 * z**2 - log_std - 0.5 * np.log(2 * np.pi), axis=-1)


def test_mse_losses_match_numpy_by_hand():
    cfg = _cfg()
    init, update = make_sac(OBS, ACT, cfg)
    nets = make_sac_networks(ACT, hidden_sizes=cfg.hidden_sizes)
    hp = default_hparams(cfg, ACT, init_log_alpha=math.log(0.5), gamma=0.9, reward_scale=2.0)
    state = init(jax.random.key(0), hp)
    # Make the target critics differ from the online ones.
    state = state._replace(target_critic_params=jax.tree_util.tree_map(
        lambda x: x * 0.9, state.critic_params))
    batch = _batch(jax.random.key(1))
    key = jax.random.key(2)
    _, m = jax.jit(update)(state, batch, hp, key)

    k_next, k_pi = jax.random.split(key)
    alpha, gamma, scale = 0.5, 0.9, 2.0
    f = lambda x: np.asarray(x, np.float64)  # noqa: E731
    # next action (tanh Gaussian) and its log-prob, by hand
    mean, log_std = map(f, nets.actor.apply(state.actor_params, batch.next_obs))
    u = mean + np.exp(log_std) * f(jax.random.normal(k_next, mean.shape))
    a_next = np.tanh(u)
    logp_next = _np_gauss_logp(u, mean, log_std) - np.sum(np.log(1 - np.tanh(u) ** 2), -1)
    q_next = f(nets.critic.apply(state.target_critic_params, batch.next_obs,
                                 jnp.asarray(a_next, jnp.float32)))[..., 0]
    y = scale * f(batch.reward) + gamma * (1 - f(batch.terminated)) * (
        q_next.min(0) - alpha * logp_next)
    q = f(nets.critic.apply(state.critic_params, batch.obs, batch.action))[..., 0]
    critic_loss = 0.5 * np.sum(np.mean((q - y) ** 2, axis=1))
    # actor
    mean, log_std = map(f, nets.actor.apply(state.actor_params, batch.obs))
    u = mean + np.exp(log_std) * f(jax.random.normal(k_pi, mean.shape))
    a_pi = np.tanh(u)
    logp = _np_gauss_logp(u, mean, log_std) - np.sum(np.log(1 - np.tanh(u) ** 2), -1)
    q_pi = f(nets.critic.apply(state.critic_params, batch.obs, jnp.asarray(a_pi, jnp.float32)))
    actor_loss = np.mean(alpha * logp - q_pi[..., 0].min(0))
    alpha_loss = -math.log(0.5) * np.mean(logp + float(hp.target_entropy))

    np.testing.assert_allclose(m["critic_loss"], critic_loss, rtol=2e-4)
    np.testing.assert_allclose(m["actor_loss"], actor_loss, rtol=2e-4, atol=1e-5)
    np.testing.assert_allclose(m["alpha_loss"], alpha_loss, rtol=2e-4, atol=1e-5)
    np.testing.assert_allclose(m["entropy"], -np.mean(logp), rtol=2e-4, atol=1e-5)
    np.testing.assert_allclose(m["alpha"], 0.5, rtol=1e-6)
    np.testing.assert_allclose(m["target_q_mean"], np.mean(y), rtol=2e-4, atol=1e-5)


def _np_quantile_huber(pred, target, kappa=1.0):
    n = pred.shape[-1]
    tau = (2 * np.arange(1, n + 1) - 1) / (2 * n)
    total = 0.0
    for i in range(n):
        for j in range(target.shape[-1]):
            u = target[j] - pred[i]
            h = 0.5 * u * u if abs(u) <= kappa else kappa * (abs(u) - 0.5 * kappa)
            total += abs(tau[i] - (u < 0)) * h / kappa / target.shape[-1]
    return total


def test_tqc_quantile_loss_matches_numpy_by_hand():
    cfg = _cfg(critic="quantile", num_quantiles=4, tqc_drop=1, num_critics=2)
    init, update = make_sac(OBS, ACT, cfg)
    nets = make_sac_networks(ACT, hidden_sizes=cfg.hidden_sizes, num_atoms=4)
    hp = default_hparams(cfg, ACT, init_log_alpha=math.log(0.3), gamma=0.95)
    state = init(jax.random.key(4), hp)
    batch = _batch(jax.random.key(5))
    key = jax.random.key(6)
    _, m = jax.jit(update)(state, batch, hp, key)

    k_next, k_pi = jax.random.split(key)
    f = lambda x: np.asarray(x, np.float64)  # noqa: E731
    mean, log_std = map(f, nets.actor.apply(state.actor_params, batch.next_obs))
    u = mean + np.exp(log_std) * f(jax.random.normal(k_next, mean.shape))
    logp_next = _np_gauss_logp(u, mean, log_std) - np.sum(np.log(1 - np.tanh(u) ** 2), -1)
    qn = f(nets.critic.apply(state.target_critic_params, batch.next_obs,
                             jnp.asarray(np.tanh(u), jnp.float32)))  # [K, B, N]
    q = f(nets.critic.apply(state.critic_params, batch.obs, batch.action))
    losses = []
    for b in range(B):
        pooled = np.sort(qn[:, b, :].reshape(-1))[: 2 * 4 - 2]
        y = f(batch.reward)[b] + 0.95 * (1 - f(batch.terminated)[b]) * (
            pooled - 0.3 * logp_next[b])
        for k in range(2):
            losses.append(_np_quantile_huber(q[k, b], y))
    np.testing.assert_allclose(m["critic_loss"], np.mean(losses), rtol=2e-4)
    # TQC actor: mean over all critics' atoms.
    mean, log_std = map(f, nets.actor.apply(state.actor_params, batch.obs))
    u = mean + np.exp(log_std) * f(jax.random.normal(k_pi, mean.shape))
    logp = _np_gauss_logp(u, mean, log_std) - np.sum(np.log(1 - np.tanh(u) ** 2), -1)
    qp = f(nets.critic.apply(state.critic_params, batch.obs, jnp.asarray(np.tanh(u), jnp.float32)))
    np.testing.assert_allclose(m["actor_loss"], np.mean(0.3 * logp - qp.mean(axis=(0, 2))),
                               rtol=2e-4, atol=1e-5)
    assert "vs_weight" in m and "vs_quantile_var_mean" in m


def test_soft_td_target_bootstraps_on_terminated_only():
    r = jnp.array([1.0, 1.0])
    y = sac_losses.soft_td_target(r, jnp.array([True, False]), jnp.array([5.0, 5.0]),
                                  jnp.array([0.0, 0.0]), 0.1, 0.5)
    np.testing.assert_allclose(y, [1.0, 3.5])
    with pytest.raises(ValueError, match="reward"):
        sac_losses.soft_td_target(r[:, None], r, r, r, 0.1, 0.5)


# ---------------------------------------------------------------------- temperature & guard
@pytest.mark.parametrize("direction", [+1, -1])
def test_temperature_moves_toward_target_entropy(direction):
    cfg = _cfg()
    init, update = make_sac(OBS, ACT, cfg)
    hp0 = default_hparams(cfg, ACT, alpha_lr=1e-2)
    state = init(jax.random.key(0), hp0)
    batch = _batch(jax.random.key(1))
    _, m = update(state, batch, hp0, jax.random.key(2))
    # Target far above (below) the current entropy: alpha must rise (fall).
    hp = hp0._replace(target_entropy=m["entropy"] + 5.0 * direction)
    step = jax.jit(update)
    for i in range(5):
        state, _ = step(state, batch, hp, jax.random.key(10 + i))
    assert direction * float(state.log_alpha) > 0.04


@pytest.mark.parametrize("field,bad", [("reward", float("nan")), ("obs", float("inf")),
                                       ("reward", 3e38)])
def test_poisoned_batch_is_skipped(field, bad):
    # 3e38 is finite: the guard must also catch the overflow it causes in the losses and the
    # gradient norms (the guard checks scalars, not every parameter leaf).
    cfg = _cfg()
    init, update = make_sac(OBS, ACT, cfg)
    hp = default_hparams(cfg, ACT)
    state = init(jax.random.key(0), hp)
    batch = _batch(jax.random.key(1))
    step = jax.jit(update)
    state, m = step(state, batch, hp, jax.random.key(2))  # one good update first
    assert float(m["skipped"]) == 0.0
    bad_val = getattr(batch, field).at[0].set(bad)
    new, m = step(state, batch._replace(**{field: bad_val}), hp, jax.random.key(3))
    assert float(m["skipped"]) == 1.0 and float(m["skipped_total"]) == 1.0
    assert int(new.skipped) == 1 and int(new.step) == int(state.step) + 1
    for name in ("actor_params", "critic_params", "target_critic_params", "log_alpha",
                 "actor_opt_state", "critic_opt_state", "alpha_opt_state", "loss_state"):
        assert _trees_equal(getattr(new, name), getattr(state, name)), name
    # A good update afterwards proceeds and changes the parameters.
    newer, m = step(new, batch, hp, jax.random.key(4))
    assert float(m["skipped"]) == 0.0 and int(newer.skipped) == 1
    assert not _trees_equal(newer.actor_params, new.actor_params)


def test_grad_clip_norm_is_a_traced_hparam():

    def run(cfg, max_norm):
        init, update = make_sac(OBS, ACT, cfg)
        hp = default_hparams(cfg, ACT, max_grad_norm=max_norm)
        state = init(jax.random.key(0), hp)
        for i in range(3):
            state, m = update(state, _batch(jax.random.key(20 + i)), hp, jax.random.key(i))
        return state

    on = _cfg()
    a, b = run(on, 1e-4), run(on, 1e4)
    assert not _trees_equal(a.critic_params, b.critic_params)
    off = _cfg(max_grad_norm=None)
    c, d = run(off, 1e-4), run(off, 1e4)
    assert _trees_equal(c.critic_params, d.critic_params)
    # An inactive clip (huge max norm) equals no clipping stage at all.
    for x, y in zip(jax.tree_util.tree_leaves(b), jax.tree_util.tree_leaves(d)):
        np.testing.assert_allclose(x, y, rtol=1e-6, atol=1e-7)


# ------------------------------------------------------------------------- jit / vmap / trace
def test_jit_equals_eager_and_one_trace():
    cfg = _cfg(critic="quantile", num_quantiles=3, tqc_drop=1, variance_scaling="normalize")
    init, update = make_sac(OBS, ACT, cfg)
    hp = default_hparams(cfg, ACT)
    state = init(jax.random.key(0), hp)
    batch = _batch(jax.random.key(1))
    traces = []

    def counted(state, batch, hp, key):
        traces.append(1)
        return update(state, batch, hp, key)

    step = jax.jit(counted)
    s_jit, s_eager = state, state
    for i in range(3):
        s_jit, m_jit = step(s_jit, batch, hp, jax.random.key(i))
        if i < 2:
            s_eager, m_eager = update(s_eager, batch, hp, jax.random.key(i))
            s_jit2, m_jit2 = s_jit, m_jit
    assert len(traces) == 1
    s_jit, m_jit = s_jit2, m_jit2
    for k in m_jit:
        np.testing.assert_allclose(m_jit[k], m_eager[k], rtol=1e-4, atol=1e-5, err_msg=k)
    for x, y in zip(jax.tree_util.tree_leaves(s_jit), jax.tree_util.tree_leaves(s_eager)):
        assert x.dtype == y.dtype and x.shape == y.shape
        np.testing.assert_allclose(x, y, rtol=1e-4, atol=1e-5)


def test_vmap_over_seeds_and_hparams_equals_loop():
    cfg = _cfg()
    init, update = make_sac(OBS, ACT, cfg)
    lrs = jnp.array([1e-3, 1e-2], jnp.float32)
    hps = jax.vmap(lambda lr: default_hparams(cfg, ACT)._replace(actor_lr=lr, critic_lr=lr))(lrs)
    keys = jax.random.split(jax.random.key(0), 2)
    batch = _batch(jax.random.key(1))

    def run(key, hp):
        k0, k1 = jax.random.split(key)
        state = init(k0, hp)
        state, m = update(state, batch, hp, k1)
        return update(state, batch, hp, jax.random.fold_in(k1, 1))

    s_v, m_v = jax.jit(jax.vmap(run))(keys, hps)
    run_one = jax.jit(run)
    for i in range(2):
        hp_i = jax.tree_util.tree_map(lambda x: x[i], hps)
        s_i, m_i = run_one(keys[i], hp_i)
        for x, y in zip(jax.tree_util.tree_leaves(s_v), jax.tree_util.tree_leaves(s_i)):
            np.testing.assert_allclose(x[i], y, rtol=1e-4, atol=1e-6)
        for k in m_i:
            np.testing.assert_allclose(m_v[k][i], m_i[k], rtol=1e-4, atol=1e-6)


@pytest.mark.parametrize("kind", ["projected_gaussian", "logistic_normal"])
def test_simplex_policies_update_and_stay_on_simplex(kind):
    n = 4
    cfg = _cfg(policy=kind)
    init, update = make_sac(OBS, n, cfg)
    hp = default_hparams(cfg, n)
    state = init(jax.random.key(0), hp)
    batch = _batch(jax.random.key(1), n_act=n, simplex=True)
    step = jax.jit(update)
    for i in range(3):
        state, m = step(state, batch, hp, jax.random.key(i))
        assert all(bool(jnp.isfinite(v)) for v in m.values())
    assert int(state.skipped) == 0
    pol = make_policy(kind, n)
    mean, log_std = make_sac_networks(pol.latent_dim, hidden_sizes=cfg.hidden_sizes).actor.apply(
        state.actor_params, batch.obs)
    a, _ = pol.sample(mean, log_std, jax.random.key(9))
    assert bool(jnp.all(a >= 0)) and np.allclose(jnp.sum(a, -1), 1.0, atol=1e-5)


# ------------------------------------------------------------------------------ validation
def test_config_and_batch_validation():
    with pytest.raises(ValueError, match="policy"):
        SACConfig(policy="gaussian")
    with pytest.raises(ValueError, match="critic"):
        SACConfig(critic="c51")
    with pytest.raises(ValueError, match="warmup_steps"):
        SACConfig(batch_size=256, warmup_steps=10)
    with pytest.raises(ValueError, match="variance_scaling"):
        SACConfig(critic="mse", variance_scaling="seed")
    with pytest.raises(ValueError, match="tqc_drop"):
        SACConfig(critic="quantile", num_quantiles=5, tqc_drop=5)
    with pytest.raises(ValueError, match="max_grad_norm"):
        SACConfig(max_grad_norm=0.0)
    with pytest.raises(TypeError, match="unknown"):
        default_hparams(SACConfig(), 1, learning_rate=1.0)
    cfg = _cfg()
    init, update = make_sac(OBS, ACT, cfg)
    hp = default_hparams(cfg, ACT)
    state = init(jax.random.key(0), hp)
    batch = _batch(jax.random.key(1))
    with pytest.raises(ValueError, match="batch.reward"):
        update(state, batch._replace(reward=batch.reward[:, None]), hp, jax.random.key(0))
