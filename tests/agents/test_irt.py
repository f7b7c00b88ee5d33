"""Tests for jaxstab.agents.sac.irt: the IRT prototype policy head (seed 000, issue 5)."""

import math

import jax
import jax.numpy as jnp
import numpy as np
import ot
import pytest

from jaxstab.agents.sac import (
    IRTActor,
    IRTConfig,
    SACConfig,
    default_hparams,
    default_target_entropy,
    effective_policy,
    make_policy,
    make_sac,
    make_sac_acting,
)
from jaxstab.agents.sac import losses as sac_losses
from jaxstab.agents.sac.irt import ot_prototype_weights

OBS, M, K = 3, 4, 4

TINY = IRTConfig(num_tokens=3, token_dim=5, num_prototypes=M, sinkhorn_eps=0.2,
                 sinkhorn_max_iters=200)


def _actor(cfg=TINY, hidden=(8,), k=K):
    return IRTActor(hidden, k, cfg)


def _inputs(key, batch=(5,), m=M):
    k1, k2 = jax.random.split(key)
    obs = jax.random.uniform(k1, batch + (OBS,))
    w_prev = jax.random.dirichlet(k2, jnp.ones(m), batch)
    return obs, w_prev


def _init(actor, key=0, batch=(5,)):
    obs, w_prev = _inputs(jax.random.key(100 + key), batch)
    return actor.init(jax.random.key(key), obs, w_prev), obs, w_prev


def _np(x):
    return np.asarray(x, np.float64)


def _dense(p, x):
    return x @ _np(p["kernel"]) + _np(p["bias"])


def _np_fitness(params, obs):
    p = params["params"]
    h = np.maximum(_dense(p["Dense_0"], _np(obs)), 0.0)
    return h, _dense(p["fitness"], h)


def _np_softmax(x):
    z = np.exp(x - x.max(-1, keepdims=True))
    return z / z.sum(-1, keepdims=True)


def _np_replicator(w, f, c, cfg):
    adv = np.clip(f - np.sum(w * f, -1, keepdims=True), -cfg.advantage_clip, cfg.advantage_clip)
    eta = cfg.eta0 + cfg.eta1 * np.clip(c, 0, cfg.crisis_max)[..., None]
    fl = cfg.replicator_floor
    return _np_softmax(np.log((1 - fl) * w + fl / w.shape[-1]) + eta * adv)


# ---------------------------------------------------------------------------- shapes, simplex
@pytest.mark.parametrize("batch", [(5,), (2, 3)])
def test_shapes_and_weights_on_simplex(batch):
    actor = _actor()
    params, obs, w_prev = _init(actor, batch=batch)
    mean, log_std, w = actor.apply(params, obs, w_prev)
    assert mean.shape == batch + (K,) and log_std.shape == batch + (K,) and w.shape == batch + (M,)
    assert mean.dtype == log_std.dtype == w.dtype == jnp.float32
    assert bool(jnp.all(w >= 0)) and np.allclose(jnp.sum(w, -1), 1.0, atol=1e-6)
    assert bool(jnp.all((log_std >= -5.0) & (log_std <= 2.0)))
    assert actor.policy_state_dim == M
    np.testing.assert_array_equal(actor.initial_policy_state((2,)), np.full((2, M), 1.0 / M))
    # The action mean is the w-mixture of the prototype means.
    mu = params["params"]["prototype_means"]
    np.testing.assert_allclose(mean, jnp.einsum("...j,jk->...k", w, mu), rtol=1e-5, atol=1e-7)


def test_bad_inputs():
    actor = _actor()
    params, obs, w_prev = _init(actor)
    with pytest.raises(ValueError, match="policy_state"):
        actor.apply(params, obs, w_prev[:, :3])
    with pytest.raises(ValueError, match="batch shape"):
        actor.apply(params, obs, w_prev[:2])
    with pytest.raises(ValueError, match="alpha"):
        IRTConfig(alpha=1.5)
    with pytest.raises(ValueError, match="ot_capacity"):
        IRTConfig(ot_capacity=1.0)
    with pytest.raises(ValueError, match="num_prototypes"):
        IRTConfig(num_prototypes=1)
    with pytest.raises(TypeError, match="use_ot"):
        IRTConfig(use_ot=1)
    with pytest.raises(ValueError, match="simplex policy"):
        SACConfig(actor="irt", policy="tanh_gaussian")
    with pytest.raises(ValueError, match="actor"):
        SACConfig(actor="transformer")
    with pytest.raises(TypeError, match="IRTConfig"):
        SACConfig(actor="irt", policy="projected_gaussian", irt={"alpha": 0.3})
    hash(SACConfig(actor="irt", policy="logistic_normal", irt=TINY))  # static: hashable


# ------------------------------------------------------------- each piece against a reference
def test_ot_readout_matches_pot_partial_transport():
    """w_ot against POT's log-domain Sinkhorn on the same dummy-augmented problem."""
    key = jax.random.key(3)
    tokens = jax.random.normal(key, (2, 3, 5))
    protos = jax.random.normal(jax.random.key(4), (M, 5))
    cfg = IRTConfig(num_prototypes=M, sinkhorn_eps=0.2, sinkhorn_max_iters=500)
    w = ot_prototype_weights(tokens, protos, cfg)
    t, p = _np(tokens), _np(protos)
    for b in range(2):
        tn = t[b] / np.linalg.norm(t[b], axis=-1, keepdims=True)
        pn = p / np.linalg.norm(p, axis=-1, keepdims=True)
        cost = np.vstack([1.0 - tn @ pn.T, np.zeros((1, M))])
        a = np.array([1 / 3] * 3 + [cfg.ot_capacity - 1.0])
        bb = np.full(M, cfg.ot_capacity / M)
        plan = ot.sinkhorn(a, bb, cost, 0.2, method="sinkhorn_log", numItermax=10000,
                           stopThr=1e-12)
        ref = plan[:3].sum(0) / plan[:3].sum()
        np.testing.assert_allclose(w[b], ref, rtol=2e-4, atol=1e-6)
    # The readout depends on the state: a balanced plan's column sums would be constant 1/M.
    assert float(jnp.max(jnp.abs(w[0] - w[1]))) > 1e-3


def test_replicator_only_matches_numpy_and_reads_crisis_from_last_obs():
    cfg = IRTConfig(num_tokens=3, token_dim=5, num_prototypes=M, use_ot=False, eta1=2.0)
    actor = _actor(cfg)
    params, obs, w_prev = _init(actor)
    _, _, w = actor.apply(params, obs, w_prev)
    _, f = _np_fitness(params, obs)
    ref = _np_replicator(_np(w_prev), f, _np(obs)[:, -1], cfg)
    np.testing.assert_allclose(w, ref, rtol=1e-5, atol=1e-7)
    # The crisis level is read from obs[..., -1]: changing it changes the step size.
    _, _, w2 = actor.apply(params, obs.at[:, -1].set(0.0), w_prev)
    ref2 = _np_replicator(_np(w_prev), _np_fitness(params, obs.at[:, -1].set(0.0))[1],
                          np.zeros(5), cfg)
    np.testing.assert_allclose(w2, ref2, rtol=1e-5, atol=1e-7)
    assert not np.allclose(w, w2)
    # crisis_index=None: no crisis signal (eta = eta0) regardless of the observation.
    cfg_none = IRTConfig(num_tokens=3, token_dim=5, num_prototypes=M, use_ot=False, eta1=2.0,
                         crisis_index=None)
    _, _, w3 = _actor(cfg_none).apply(params, obs, w_prev)
    ref3 = _np_replicator(_np(w_prev), _np_fitness(params, obs)[1], np.zeros(5), cfg)
    np.testing.assert_allclose(w3, ref3, rtol=1e-5, atol=1e-7)


def test_mixture_is_convex_combination_and_degenerate_case():
    actor = _actor()
    params, obs, w_prev = _init(actor)
    _, _, w_mix = actor.apply(params, obs, w_prev)
    _, _, w_rep = _actor(TINY.__class__(**{**TINY.__dict__, "use_ot": False})).apply(
        params, obs, w_prev)
    _, _, w_ot = _actor(TINY.__class__(**{**TINY.__dict__, "use_replicator": False})).apply(
        params, obs, w_prev)
    np.testing.assert_allclose(w_mix, 0.7 * w_rep + 0.3 * w_ot, rtol=1e-5, atol=1e-7)
    # Neither piece: a memoryless softmax gate over the fitness head (documented degenerate case).
    none = _actor(TINY.__class__(**{**TINY.__dict__, "use_ot": False, "use_replicator": False}))
    _, _, w0 = none.apply(params, obs, w_prev)
    np.testing.assert_allclose(w0, _np_softmax(_np_fitness(params, obs)[1]), rtol=1e-5,
                               atol=1e-7)
    _, _, w0b = none.apply(params, obs, jnp.roll(w_prev, 1, axis=-1))
    np.testing.assert_array_equal(w0, w0b)  # no memory


def _replace(cfg, **kw):
    return cfg.__class__(**{**cfg.__dict__, **kw})


@pytest.mark.parametrize("field,value", [("use_ot", False), ("use_replicator", False),
                                         ("alpha", 0.8), ("sinkhorn_eps", 0.05),
                                         ("ot_capacity", 4.0), ("eta0", 2.0),
                                         ("advantage_clip", 0.01)])
def test_each_switch_changes_the_weights(field, value):
    actor = _actor()
    params, obs, w_prev = _init(actor)
    _, _, w = actor.apply(params, obs, w_prev)
    _, _, w2 = _actor(_replace(TINY, **{field: value})).apply(params, obs, w_prev)
    assert float(jnp.max(jnp.abs(w - w2))) > 1e-4, field


def test_use_projection_switches_to_softmax_policy():
    on = SACConfig(actor="irt", policy="projected_gaussian", irt=TINY, hidden_sizes=(8,),
                   batch_size=4, warmup_steps=4)
    off = SACConfig(actor="irt", policy="projected_gaussian", hidden_sizes=(8,), batch_size=4,
                    warmup_steps=4, irt=_replace(TINY, use_projection=False))
    assert effective_policy(on) == "projected_gaussian"
    assert effective_policy(off) == "softmax_gaussian"
    hp_on, hp_off = default_hparams(on, M), default_hparams(off, M)
    assert float(hp_off.target_entropy) == pytest.approx(
        default_target_entropy("softmax_gaussian", M), rel=1e-6)
    # (equal to the projected Gaussian's default: n (0.5 log 2 pi e + log(s/n)) is the same number)
    assert float(hp_on.target_entropy) == pytest.approx(float(hp_off.target_entropy), rel=1e-6)
    a_on, a_off = make_sac_acting(M, on), make_sac_acting(M, off)
    init, _ = make_sac(OBS, M, on)
    params = init(jax.random.key(0), hp_on).actor_params
    obs, w_prev = _inputs(jax.random.key(1))
    x_on, ps_on = jax.jit(a_on.mode)(params, obs, w_prev)
    x_off, ps_off = jax.jit(a_off.mode)(params, obs, w_prev)
    np.testing.assert_array_equal(ps_on, ps_off)  # same head, same weights
    mean, _, _ = jax.jit(_actor().apply)(params, obs, w_prev)
    np.testing.assert_allclose(x_off, jax.nn.softmax(mean, -1), rtol=1e-5, atol=1e-7)
    assert not np.allclose(x_on, x_off)


def test_softmax_gaussian_log_prob_is_the_seed_formula(x64):
    pol = make_policy("softmax_gaussian", 3)
    mean = jnp.array([0.2, -0.1, 0.4])
    log_std = jnp.array([-0.5, 0.1, -0.2])
    a, logp = pol.sample(mean, log_std, jax.random.key(0))
    u = mean + jnp.exp(log_std) * jax.random.normal(jax.random.key(0), (3,), mean.dtype)
    gauss = np.sum(-0.5 * ((_np(u) - _np(mean)) / np.exp(_np(log_std))) ** 2 - _np(log_std)
                   - 0.5 * math.log(2 * math.pi))
    np.testing.assert_allclose(a, _np_softmax(_np(u)), rtol=1e-12)
    np.testing.assert_allclose(logp, gauss - np.sum(np.log(_np_softmax(_np(u)))), rtol=1e-12)


# ------------------------------------------------------------------------------- gradients
def test_actor_loss_gradients_finite_and_reach_every_parameter():
    cfg = SACConfig(hidden_sizes=(8,), batch_size=6, warmup_steps=6, policy="projected_gaussian",
                    actor="irt", irt=TINY)
    init, _ = make_sac(OBS, M, cfg)
    hp = default_hparams(cfg, M)
    state = init(jax.random.key(0), hp)
    acting = make_sac_acting(M, cfg)
    from jaxstab.agents.sac import default_networks

    nets = default_networks(cfg, M)
    obs, w_prev = _inputs(jax.random.key(1), (6,))
    obs_aug = jnp.concatenate([obs, w_prev], -1)

    def loss(actor_params):
        mean, log_std, _ = nets.actor.apply(actor_params, obs, w_prev)
        a, logp = acting.policy.sample(mean, log_std, jax.random.key(2))
        q = nets.critic.apply(state.critic_params, obs_aug, a)
        return sac_losses.actor_loss(logp, jnp.min(q[..., 0], axis=0), 0.2)

    grads = jax.jit(jax.grad(loss))(state.actor_params)
    flat = jax.tree_util.tree_flatten_with_path(grads)[0]
    names = {jax.tree_util.keystr(p) for p, _ in flat}
    for part in ("prototype_means", "prototypes", "tokens", "fitness", "log_std", "Dense_0"):
        assert any(part in n for n in names), part
    for path, g in flat:
        assert bool(jnp.all(jnp.isfinite(g))), jax.tree_util.keystr(path)
        assert float(jnp.max(jnp.abs(g))) > 0, jax.tree_util.keystr(path)


def _fd_check(cfg, seed=0):
    actor = IRTActor((5,), 3, cfg)
    obs, w_prev = _inputs(jax.random.key(seed), (2,), m=3)
    params = actor.init(jax.random.key(seed + 1), obs, w_prev)
    params = jax.tree_util.tree_map(lambda x: x.astype(jnp.float64), params)
    obs, w_prev = obs.astype(jnp.float64), w_prev.astype(jnp.float64)
    v = jax.random.normal(jax.random.key(7), (2, 3), jnp.float64)

    def f(p):
        mean, _, _ = actor.apply(p, obs, w_prev)
        return jnp.sum(mean * v)

    grad = jax.jit(jax.grad(f))(params)
    f = jax.jit(f)
    leaves, treedef = jax.tree_util.tree_flatten(params)
    keys = jax.random.split(jax.random.key(11), len(leaves))
    direction = jax.tree_util.tree_unflatten(
        treedef, [jax.random.normal(k, x.shape, jnp.float64) for k, x in zip(keys, leaves)])
    h = 1e-5
    plus = jax.tree_util.tree_map(lambda x, d: x + h * d, params, direction)
    minus = jax.tree_util.tree_map(lambda x, d: x - h * d, params, direction)
    fd = (f(plus) - f(minus)) / (2 * h)
    ad = sum(jnp.sum(g * d) for g, d in zip(jax.tree_util.tree_leaves(grad),
                                              jax.tree_util.tree_leaves(direction)))
    return float(ad), float(fd)


@pytest.mark.parametrize("implicit", [True, False])
def test_mean_gradient_matches_finite_differences_float64(x64, implicit):
    cfg = IRTConfig(num_tokens=2, token_dim=3, num_prototypes=3, sinkhorn_eps=0.3,
                    sinkhorn_max_iters=2000 if implicit else 7, sinkhorn_tol=1e-13,
                    sinkhorn_implicit=implicit, alpha=0.5)
    ad, fd = _fd_check(cfg)
    assert abs(fd) > 1e-6
    np.testing.assert_allclose(ad, fd, rtol=1e-6, atol=1e-9)


def test_implicit_equals_unrolled_at_convergence_and_differs_when_truncated(x64):
    def grads(implicit, iters):
        cfg = IRTConfig(num_tokens=2, token_dim=3, num_prototypes=3, sinkhorn_eps=0.3,
                        sinkhorn_max_iters=iters, sinkhorn_tol=1e-13, sinkhorn_implicit=implicit,
                        use_replicator=False)
        actor = IRTActor((5,), 3, cfg)
        obs, w_prev = _inputs(jax.random.key(0), (2,), m=3)
        params = actor.init(jax.random.key(1), obs, w_prev)
        params = jax.tree_util.tree_map(lambda x: x.astype(jnp.float64), params)
        return jax.jit(jax.grad(lambda p: jnp.sum(actor.apply(p, obs.astype(jnp.float64),
                                                      w_prev.astype(jnp.float64))[0] ** 2)))(params)

    g_imp, g_unr = grads(True, 3000), grads(False, 3000)
    for a, b in zip(jax.tree_util.tree_leaves(g_imp), jax.tree_util.tree_leaves(g_unr)):
        np.testing.assert_allclose(a, b, rtol=1e-6, atol=1e-10)
    g_short = grads(False, 2)  # the derivative of 2 Sinkhorn steps is a different function
    diff = max(float(jnp.max(jnp.abs(a - b))) for a, b in zip(
        jax.tree_util.tree_leaves(g_imp), jax.tree_util.tree_leaves(g_short)))
    assert diff > 1e-4
