"""Tests of the PPO update (jaxstab.agents.ppo.ppo) on synthetic batches."""

import distrax
import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

from jaxstab.agents.common import permutation
from jaxstab.agents.ppo import networks as N
from jaxstab.agents.ppo.ppo import (
    Batch,
    Demos,
    PPOConfig,
    PPOHParams,
    make_ppo,
    networks_from_config,
    ppo_hparams,
)

OBS_DIM, N_ACT, B = 3, 2, 32


_CACHE = {}


def _jit_update(ppo):
    """One jitted update per PPO object (compiles once per configuration in this module)."""
    key = id(ppo)
    if key not in _CACHE:
        _CACHE[key] = (ppo, jax.jit(ppo.update))
    return _CACHE[key][1]


def _setup(**cfg_kw):
    kw = dict(num_envs=4, num_steps=8, num_epochs=3, num_minibatches=4, total_timesteps=32 * 10,
              hidden_sizes=(16, 16))
    kw.update(cfg_kw)
    cfg = PPOConfig(**kw)
    act_dim = N_ACT if cfg.policy_kind == "discrete" else 2
    nets = networks_from_config(cfg, OBS_DIM, act_dim)
    return cfg, nets


def _batch(cfg, nets, params, key, *, logp_shift=None):
    k1, k2, k3, k4 = jax.random.split(key, 4)
    b = cfg.batch_size
    obs = jax.random.normal(k1, (b, OBS_DIM))
    pout, vout = nets.apply(params, obs)
    dist = N.distribution(cfg.policy_kind, pout)
    action = dist.sample(seed=k2)
    logp = dist.log_prob(action)
    if logp_shift is not None:
        logp = logp - logp_shift
    adv = jax.random.normal(k3, (b,))
    ret = N.value_from_head(cfg.value_kind, vout) + jax.random.normal(k4, (b,))
    group = jnp.arange(b, dtype=jnp.int32) % cfg.num_envs
    return Batch(obs, action, logp, vout, adv, ret, pout, group)


def _leaves_equal(a, b):
    return all(np.array_equal(x, y) for x, y in zip(jax.tree_util.tree_leaves(a),
                                                     jax.tree_util.tree_leaves(b)))


# ---------------------------------------------------------------- networks
@pytest.mark.parametrize("policy_kind,value_kind", [("discrete", "scalar"),
                                                    ("tanh_gaussian", "quantile")])
def test_networks_actor_and_critic_alone_equal_apply(policy_kind, value_kind):
    """``apply_policy`` / ``apply_value`` (the rollout's actor-only step and its batched critic
    call) give ``apply``'s numbers, and the parameter tree keeps its names."""
    cfg, nets = _setup(policy_kind=policy_kind, value_kind=value_kind)
    params = nets.init(jax.random.key(0), jnp.zeros(OBS_DIM))
    names = set(params["params"])
    assert names == ({"actor", "critic"} if policy_kind == "discrete"
                     else {"actor", "critic", "log_std"})
    obs = jax.random.normal(jax.random.key(1), (5, 3, OBS_DIM))
    pout, v = nets.apply(params, obs)
    pa = nets.apply_policy(params, obs)
    np.testing.assert_array_equal(pa.loc, pout.loc)
    np.testing.assert_array_equal(pa.log_std, pout.log_std)
    np.testing.assert_array_equal(nets.apply_value(params, obs), v)
    assert v.shape == ((5, 3) if value_kind == "scalar" else (5, 3, nets.num_quantiles))
    with pytest.raises(ValueError, match="obs_dim"):
        nets.apply_value(params, jnp.zeros((2, OBS_DIM + 1)))


# ---------------------------------------------------------------- loss vs hand-written reference
def test_first_step_matches_reference_loss_clip_and_adam_eps():
    """One minibatch, one epoch: the parameter change equals Adam's first step
    ``-lr * g / (|g| + 1e-5)`` on the globally clipped gradient of an independently written
    loss (clipped surrogate on globally normalized advantages + 0.5 * value MSE - 0.01 * H)."""
    cfg, nets = _setup(num_epochs=1, num_minibatches=1)
    ppo = make_ppo(cfg, nets)
    state = ppo.init(jax.random.key(0))
    batch = _batch(cfg, nets, state.params, jax.random.key(1), logp_shift=0.1)
    max_norm, lr = 1e-3, 3e-3
    hp = ppo_hparams(lr=lr, max_grad_norm=max_norm)

    def ref_loss(params):
        pout, v = nets.apply(params, batch.obs)
        d = distrax.Categorical(logits=pout.loc)
        ratio = jnp.exp(d.log_prob(batch.action) - batch.logp)
        a = batch.advantages
        a = (a - a.mean()) / (a.std() + 1e-8)
        pg = -jnp.mean(jnp.minimum(ratio * a, jnp.clip(ratio, 0.8, 1.2) * a))
        vl = 0.5 * jnp.mean((v - batch.returns) ** 2)
        return pg + 0.5 * vl - 0.01 * jnp.mean(d.entropy())

    g = jax.grad(ref_loss)(state.params)
    gnorm = optax.tree.norm(g)
    assert float(gnorm) > max_norm  # clipping is active
    gc = jax.tree_util.tree_map(lambda x: x * max_norm / gnorm, g)
    expected = jax.tree_util.tree_map(lambda p, x: p - lr * x / (jnp.abs(x) + 1e-5),
                                      state.params, gc)
    new_state, m = _jit_update(ppo)(state, batch, hp, jax.random.key(2))
    for a, b in zip(jax.tree_util.tree_leaves(new_state.params),
                    jax.tree_util.tree_leaves(expected)):
        np.testing.assert_allclose(a, b, rtol=1e-4, atol=1e-7)
    np.testing.assert_allclose(m["total_loss"], ref_loss(state.params), rtol=1e-5)
    np.testing.assert_allclose(m["grad_norm"], gnorm, rtol=1e-4)
    assert int(new_state.update_step) == 1


# ---------------------------------------------------------------- early stopping
def test_early_stopping_stops_at_the_predicted_minibatch():
    """lr = 0 keeps the policy fixed, so each sample's k3 KL is known: zero everywhere except
    one 'poisoned' sample with log-ratio 3 (k3 = e^3 - 4). The update must stop before the
    first minibatch that contains it, which we locate by replaying the documented shuffle."""
    cfg, nets = _setup(early_stopping=True, kl_estimator="k3")
    ppo = make_ppo(cfg, nets)
    state = ppo.init(jax.random.key(0))
    mb = cfg.minibatch_size
    update = _jit_update(ppo)
    seen = set()
    for seed in range(12):
        poison = seed % cfg.batch_size
        shift = jnp.zeros(cfg.batch_size).at[poison].set(3.0)
        batch = _batch(cfg, nets, state.params, jax.random.key(100 + seed), logp_shift=shift)
        key = jax.random.key(seed)
        k_perm, _ = jax.random.split(jax.random.split(key, cfg.num_epochs)[0])
        perm = np.asarray(permutation(k_perm, cfg.batch_size))
        expected = int(np.where(perm == poison)[0][0]) // mb
        new_state, m = update(state, batch, ppo_hparams(lr=0.0, target_kl=0.01), key)
        assert float(m["num_applied_steps"]) == expected
        assert float(m["early_stopped"]) == 1.0
        # the stopping minibatch's KL (k3 mean with one poisoned sample) is in the reported mean
        seen.add(expected)
    assert len(seen) >= 3  # the check exercised several stopping positions


def test_early_stopping_masks_updates_and_off_switch():
    cfg, nets = _setup(early_stopping=True)
    ppo = make_ppo(cfg, nets)
    state = ppo.init(jax.random.key(0))
    # every sample far off-policy: the very first check fires, nothing changes
    batch = _batch(cfg, nets, state.params, jax.random.key(1), logp_shift=2.0)
    new_state, m = _jit_update(ppo)(state, batch, ppo_hparams(lr=1e-2), jax.random.key(2))
    assert float(m["num_applied_steps"]) == 0.0
    assert _leaves_equal(new_state.params, state.params)
    assert _leaves_equal(new_state.opt_state, state.opt_state)
    # on-policy batch with a small lr: never stops
    batch = _batch(cfg, nets, state.params, jax.random.key(1))
    new_state, m = _jit_update(ppo)(state, batch, ppo_hparams(lr=1e-5), jax.random.key(2))
    assert float(m["num_applied_steps"]) == cfg.num_epochs * cfg.num_minibatches
    assert float(m["early_stopped"]) == 0.0
    # switched off: the off-policy batch is trained on fully
    cfg2, _ = _setup(early_stopping=False)
    ppo2 = make_ppo(cfg2, nets)
    batch = _batch(cfg, nets, state.params, jax.random.key(1), logp_shift=2.0)
    _, m = _jit_update(ppo2)(state, batch, ppo_hparams(), jax.random.key(2))
    assert float(m["num_applied_steps"]) == cfg.num_epochs * cfg.num_minibatches


@pytest.mark.parametrize("estimator", ["k1", "exact"])
def test_early_stopping_other_estimators(estimator):
    cfg, nets = _setup(early_stopping=True, kl_estimator=estimator)
    ppo = make_ppo(cfg, nets)
    state = ppo.init(jax.random.key(0))
    batch = _batch(cfg, nets, state.params, jax.random.key(1))
    # exact KL needs a different behaviour policy: shift its logits
    far = batch.pout_old._replace(loc=batch.pout_old.loc + jnp.array([[3.0, -3.0]]))
    d_far = N.distribution("discrete", far)
    act = d_far.sample(seed=jax.random.key(5))  # behaviour actions come from the old policy
    batch = batch._replace(pout_old=far, action=act, logp=d_far.log_prob(act))
    _, m = _jit_update(ppo)(state, batch, ppo_hparams(lr=0.0), jax.random.key(2))
    assert float(m["num_applied_steps"]) == 0.0
    if estimator == "exact":
        pout, _ = nets.apply(state.params, batch.obs)
        p0 = jax.nn.softmax(far.loc)
        ref = np.sum(p0 * (jax.nn.log_softmax(far.loc) - jax.nn.log_softmax(pout.loc)), -1)
        # only the first minibatch is evaluated before the stop; its KL is a mean over it
        assert float(m["approx_kl"]) > 1.5 * 0.015
        assert float(m["approx_kl"]) <= float(np.max(ref)) + 1e-6


# ---------------------------------------------------------------- non-finite guards
def test_nonfinite_ratio_guard_counts_and_trains():
    cfg, nets = _setup()
    ppo = make_ppo(cfg, nets)
    state = ppo.init(jax.random.key(0))
    batch = _batch(cfg, nets, state.params, jax.random.key(1))
    batch = batch._replace(logp=batch.logp.at[jnp.array([3, 17])].set(jnp.nan))
    new_state, m = _jit_update(ppo)(state, batch, ppo_hparams(), jax.random.key(2))
    assert float(m["ratio_nonfinite_count"]) == 2 * cfg.num_epochs
    assert float(m["num_applied_steps"]) == cfg.num_epochs * cfg.num_minibatches
    assert float(m["num_nonfinite_skips"]) == 0.0
    assert all(np.all(np.isfinite(x)) for x in jax.tree_util.tree_leaves(new_state.params))
    assert not _leaves_equal(new_state.params, state.params)


def test_nonfinite_gradient_step_is_skipped():
    cfg, nets = _setup(adv_norm="none")
    ppo = make_ppo(cfg, nets)
    state = ppo.init(jax.random.key(0))
    batch = _batch(cfg, nets, state.params, jax.random.key(1))
    batch = batch._replace(advantages=batch.advantages.at[5].set(jnp.inf))
    new_state, m = _jit_update(ppo)(state, batch, ppo_hparams(), jax.random.key(2))
    # the minibatch holding sample 5 is skipped once per epoch
    assert float(m["num_nonfinite_skips"]) == cfg.num_epochs
    assert float(m["num_applied_steps"]) == cfg.num_epochs * (cfg.num_minibatches - 1)
    assert all(np.all(np.isfinite(x)) for x in jax.tree_util.tree_leaves(new_state.params))
    assert all(np.all(np.isfinite(x)) for x in jax.tree_util.tree_leaves(new_state.opt_state)
               if jnp.issubdtype(jnp.asarray(x).dtype, jnp.inexact))


# ---------------------------------------------------------------- jit / vmap / tracing
def test_jit_equals_eager_and_one_trace():
    cfg, nets = _setup(policy_kind="gaussian", num_epochs=1, num_minibatches=2)
    ppo = make_ppo(cfg, nets)
    state = ppo.init(jax.random.key(0))
    batch = _batch(cfg, nets, state.params, jax.random.key(1))
    hp = ppo_hparams(lr=1e-3)
    s_e, m_e = ppo.update(state, batch, hp, jax.random.key(2))
    traces = []

    def f(state, batch, hp, key):
        traces.append(1)
        return ppo.update(state, batch, hp, key)

    jf = jax.jit(f)
    s_j, m_j = jf(state, batch, hp, jax.random.key(2))
    for a, b in zip(jax.tree_util.tree_leaves(s_e), jax.tree_util.tree_leaves(s_j)):
        np.testing.assert_allclose(a, b, rtol=2e-5, atol=1e-7)
    for k in m_e:
        np.testing.assert_allclose(m_e[k], m_j[k], rtol=2e-5, atol=1e-7, err_msg=k)
    # feeding the new state and other hyperparameter values back does not retrace
    s2, _ = jf(s_j, batch, ppo_hparams(lr=3e-4, clip_eps=0.1), jax.random.key(3))
    jf(s2, batch, hp, jax.random.key(4))
    assert len(traces) == 1
    # state structure, shapes and dtypes are stable
    assert jax.tree_util.tree_structure(s2) == jax.tree_util.tree_structure(state)
    for a, b in zip(jax.tree_util.tree_leaves(s2), jax.tree_util.tree_leaves(state)):
        assert a.shape == b.shape and a.dtype == b.dtype


def test_vmap_over_hparams_equals_loop():
    cfg, nets = _setup()
    ppo = make_ppo(cfg, nets)
    state = ppo.init(jax.random.key(0))
    batch = _batch(cfg, nets, state.params, jax.random.key(1))
    lrs = jnp.array([1e-4, 1e-3], jnp.float32)
    clips = jnp.array([0.1, 0.3], jnp.float32)
    hp = ppo_hparams()._replace(lr=lrs, clip_eps=clips)
    axes = PPOHParams(*([None] * len(PPOHParams._fields)))._replace(lr=0, clip_eps=0)
    sv, mv = jax.jit(jax.vmap(ppo.update, in_axes=(None, None, axes, None)))(
        state, batch, hp, jax.random.key(2))
    for i in range(2):
        si, mi = _jit_update(ppo)(state, batch, ppo_hparams(lr=lrs[i], clip_eps=clips[i]),
                                     jax.random.key(2))
        for a, b in zip(jax.tree_util.tree_leaves(sv.params), jax.tree_util.tree_leaves(si.params)):
            np.testing.assert_allclose(a[i], b, rtol=1e-5, atol=1e-7)
        np.testing.assert_allclose(mv["policy_loss"][i], mi["policy_loss"], rtol=1e-5, atol=1e-7)


# ---------------------------------------------------------------- heads, policies, BC
@pytest.mark.parametrize("mode", ["none", "seed", "normalize"])
def test_quantile_head_loss_matches_reference(mode):
    cfg, nets = _setup(value_kind="quantile", num_quantiles=5, num_epochs=1, num_minibatches=1,
                       variance_scaling=mode)
    ppo = make_ppo(cfg, nets)
    state = ppo.init(jax.random.key(0))
    batch = _batch(cfg, nets, state.params, jax.random.key(1))
    _, m = _jit_update(ppo)(state, batch, ppo_hparams(), jax.random.key(2))
    # independent NumPy quantile-Huber loss (kappa = 1, sum over atoms, one target atom)
    _, q = nets.apply(state.params, batch.obs)
    q = np.asarray(q, np.float64)
    tau = (2 * np.arange(1, 6) - 1) / 10.0
    u = np.asarray(batch.returns, np.float64)[:, None] - q
    kappa = 1.0
    if mode == "normalize":  # kappa proportional to the (first, debiased) spread average
        kappa = float(np.mean(np.sqrt(np.var(q, axis=-1))))
    hub = np.where(np.abs(u) <= kappa, 0.5 * u ** 2, kappa * (np.abs(u) - 0.5 * kappa)) / kappa
    ref = np.mean(np.sum(np.abs(tau - (u < 0)) * hub, axis=-1))
    if mode == "seed":
        ref *= np.clip(np.mean(np.var(q, axis=-1)), 0.1, 10.0)
    np.testing.assert_allclose(m["value_loss"], ref, rtol=1e-4)
    v = N.value_from_head("quantile", jnp.asarray(q))
    np.testing.assert_allclose(v, q.mean(-1), rtol=1e-6, atol=1e-7)  # float32 mean vs float64


@pytest.mark.parametrize("kind", ["gaussian", "tanh_gaussian"])
def test_continuous_update_runs_and_reports(kind):
    cfg, nets = _setup(policy_kind=kind, kl_estimator="exact", value_clipping=True)
    ppo = make_ppo(cfg, nets)
    state = ppo.init(jax.random.key(0))
    batch = _batch(cfg, nets, state.params, jax.random.key(1))
    new_state, m = _jit_update(ppo)(state, batch, ppo_hparams(lr=1e-3), jax.random.key(2))
    for k, v in m.items():
        assert v.shape == () and v.dtype == jnp.float32, k
        assert np.isfinite(v), k
    assert 0.0 <= float(m["approx_kl"]) < 0.1
    assert float(m["num_applied_steps"]) == cfg.num_epochs * cfg.num_minibatches


def test_bc_loss_pulls_policy_to_demos_and_adaptive_coef():
    rng = np.random.default_rng(0)
    demos = Demos(jnp.asarray(rng.normal(size=(16, OBS_DIM)), jnp.float32),
                  jnp.zeros((16,), jnp.int32))  # the demonstrator always picks action 0
    cfg, nets = _setup(bc=True, adv_norm="none")
    ppo = make_ppo(cfg, nets, demos)
    state = ppo.init(jax.random.key(0))
    batch = _batch(cfg, nets, state.params, jax.random.key(1))
    batch = batch._replace(advantages=jnp.zeros_like(batch.advantages))
    upd = _jit_update(ppo)
    p0 = jax.nn.softmax(nets.apply(state.params, demos.obs)[0].loc)[:, 0].mean()
    s = state
    for i in range(5):
        s, m = upd(s, batch, ppo_hparams(lr=1e-2, bc_coef=1.0), jax.random.key(i))
    p1 = jax.nn.softmax(nets.apply(s.params, demos.obs)[0].loc)[:, 0].mean()
    assert float(p1) > float(p0) + 0.1
    assert "bc_ppo_ratio" in m and float(s.bc_scale) == 1.0  # not adaptive: scale fixed
    # adaptive: BC dominates (ratio >> 1) so the coefficient shrinks, but not below the floor
    cfg2, _ = _setup(bc=True, adaptive_bc=True)
    ppo2 = make_ppo(cfg2, nets, demos)
    s2, m2 = _jit_update(ppo2)(state, _batch(cfg, nets, state.params, jax.random.key(1)),
                         ppo_hparams(bc_coef=10.0, bc_max_ratio=1.0, bc_min_coef=0.5),
                         jax.random.key(0))
    coef = 10.0 * float(s2.bc_scale)
    assert 0.5 - 1e-6 <= coef < 10.0
    with pytest.raises(ValueError, match="demos"):
        make_ppo(cfg2, nets)


# ---------------------------------------------------------------- schedules
def test_lr_and_entropy_schedules_follow_closed_forms():
    cfg, nets = _setup(lr_schedule="linear", ent_schedule="cosine", total_timesteps=32 * 4)
    ppo = make_ppo(cfg, nets)
    state = ppo.init(jax.random.key(0))
    batch = _batch(cfg, nets, state.params, jax.random.key(1))
    hp = ppo_hparams(lr=1e-3, lr_end=1e-4, ent_coef=0.02, ent_coef_end=0.004)
    upd = _jit_update(ppo)
    for t in range(5):
        state, m = upd(state, batch, hp, jax.random.key(t))
        p = min(t, 4) / 4
        np.testing.assert_allclose(m["lr"], 1e-3 + (1e-4 - 1e-3) * p, rtol=1e-5)
        np.testing.assert_allclose(m["ent_coef"], 0.004 + 0.016 * 0.5 * (1 + np.cos(np.pi * p)),
                                   rtol=1e-5)
    cfg, nets = _setup(lr_schedule="exponential", total_timesteps=32 * 4)
    ppo = make_ppo(cfg, nets)
    state = ppo.init(jax.random.key(0))
    state = state._replace(update_step=jnp.asarray(2, jnp.int32))
    _, m = _jit_update(ppo)(state, batch, hp, jax.random.key(0))
    np.testing.assert_allclose(m["lr"], 1e-3 * (0.1 ** 0.5), rtol=1e-5)


# ---------------------------------------------------------------- errors
def test_config_and_input_errors():
    with pytest.raises(ValueError, match="num_minibatches"):
        PPOConfig(num_envs=3, num_steps=5, num_minibatches=4)
    with pytest.raises(ValueError, match="policy_kind"):
        PPOConfig(policy_kind="beta")
    with pytest.raises(ValueError, match="kl_estimator"):
        PPOConfig(kl_estimator="k2")
    with pytest.raises(ValueError, match="variance_scaling"):
        PPOConfig(variance_scaling="seed")
    with pytest.raises(ValueError, match="rollback_triggers"):
        PPOConfig(rollback_triggers=("nonfinite", "loss"))
    with pytest.raises(TypeError, match="unknown PPOHParams"):
        ppo_hparams(learning_rate=1.0)
    cfg, nets = _setup()
    ppo = make_ppo(cfg, nets)
    state = ppo.init(jax.random.key(0))
    batch = _batch(cfg, nets, state.params, jax.random.key(1))
    with pytest.raises(ValueError, match="batch.action"):
        ppo.update(state, batch._replace(action=batch.action[:, None]), ppo_hparams(),
                   jax.random.key(0))
    with pytest.raises(ValueError, match="divisible"):
        ppo.update(state, jax.tree_util.tree_map(lambda x: x[:30], batch), ppo_hparams(),
                   jax.random.key(0))
    with pytest.raises(TypeError, match="hparams"):
        ppo.update(state, batch, {"lr": 1.0}, jax.random.key(0))
    with pytest.raises(ValueError, match="obs_dim"):
        nets.apply(state.params, jnp.zeros((2, OBS_DIM + 1)))


def test_env_action_mapping():
    raw = jnp.array([[-100.0, 0.0], [0.5, 100.0]], jnp.float32)
    low, high = jnp.array([-2.0, 0.0]), jnp.array([2.0, 1.0])
    np.testing.assert_allclose(N.env_action("gaussian", raw, low, high),
                               [[-2.0, 0.0], [0.5, 1.0]])
    t = np.tanh(np.asarray(raw))
    ref = np.array([-2.0, 0.0]) + (t + 1) * np.array([4.0, 1.0]) / 2
    np.testing.assert_allclose(N.env_action("tanh_gaussian", raw, low, high), ref, rtol=1e-6)
    a = jnp.array([1, 0], jnp.int32)
    assert N.env_action("discrete", a) is a


# ---------------------------------------------------------------- reduce-on-plateau LR
def test_plateau_lr_drops_after_patience_and_not_before():
    """patience 3, factor 0.5, atol 0.1 (improvement: value > best + 0.1). Hand simulation:
    u0 1.0 new best | u1 2.0 new best | u2 2.05 no (1) | u3 1.5 no (2) | u4 2.09 no (3 = patience:
    scale 0.5, count 0) | u5 not valid, skipped | u6 2.2 new best | u7-u9 2.0 no (1, 2, 3: scale
    0.25). Update k trains with the scale after seeing value k."""
    cfg, nets = _setup(lr_schedule="plateau", plateau_patience=3, plateau_factor=0.5,
                       plateau_atol=0.1)
    ppo = make_ppo(cfg, nets)
    state = ppo.init(jax.random.key(0))
    batch = _batch(cfg, nets, state.params, jax.random.key(1))
    upd = jax.jit(ppo.update)
    values = [1.0, 2.0, 2.05, 1.5, 2.09, 100.0, 2.2, 2.0, 2.0, 2.0]
    valid = [True] * 5 + [False] + [True] * 4
    want_scale = [1, 1, 1, 1, 0.5, 0.5, 0.5, 0.5, 0.5, 0.25]
    want_count = [0, 0, 1, 2, 0, 0, 0, 1, 2, 0]
    hp = ppo_hparams(lr=1e-3)
    for k, (v, ok) in enumerate(zip(values, valid)):
        state, m = upd(state, batch, hp, jax.random.key(k), monitor=jnp.float32(v),
                       monitor_valid=jnp.asarray(ok))
        np.testing.assert_allclose(m["lr"], 1e-3 * want_scale[k], rtol=1e-6, err_msg=str(k))
        assert float(m["lr_scale"]) == want_scale[k], k
        assert float(m["plateau_count"]) == want_count[k], k
    # without a monitored value the plateau state does not move
    s2, m2 = upd(state, batch, hp, jax.random.key(99))
    assert float(m2["lr_scale"]) == 0.25 and _leaves_equal(s2.plateau, state.plateau)
    # a non-finite value never improves
    s3 = state
    for k in range(3):
        s3, m3 = upd(s3, batch, hp, jax.random.key(k), monitor=jnp.float32(np.nan),
                     monitor_valid=jnp.asarray(True))
    assert float(m3["lr_scale"]) == 0.125
    with pytest.raises(ValueError, match="plateau_atol"):
        PPOConfig(lr_schedule="plateau", plateau_atol=0.0)
    with pytest.raises(ValueError, match="factor"):
        PPOConfig(lr_schedule="plateau", plateau_factor=1.5)


# ---------------------------------------------------------------- simplex actions
def test_softmax_gaussian_actions_and_latent_density():
    raw = jnp.array([[0.0, 1.0, -2.0], [50.0, -50.0, 0.0]], jnp.float32)
    w = np.asarray(N.env_action("softmax_gaussian", raw, 0.0, 1.0))
    e = np.exp(np.asarray(raw, np.float64) - np.asarray(raw, np.float64).max(-1, keepdims=True))
    np.testing.assert_allclose(w, e / e.sum(-1, keepdims=True), rtol=1e-6, atol=1e-12)
    np.testing.assert_allclose(w.sum(-1), 1.0, rtol=1e-6)
    # the latent direction 1 does not change the action
    np.testing.assert_allclose(N.env_action("softmax_gaussian", raw + 3.0), w, rtol=1e-6)
    # the stored latent's log-density is the diagonal Gaussian's (NumPy reference)
    cfg, nets = _setup(policy_kind="softmax_gaussian")
    ppo = make_ppo(cfg, nets)
    state = ppo.init(jax.random.key(0))
    batch = _batch(cfg, nets, state.params, jax.random.key(1))
    mu, ls = np.asarray(batch.pout_old.loc, np.float64), np.asarray(batch.pout_old.log_std,
                                                                   np.float64)
    u = np.asarray(batch.action, np.float64)
    ref = np.sum(-0.5 * ((u - mu) / np.exp(ls)) ** 2 - ls - 0.5 * np.log(2 * np.pi), -1)
    np.testing.assert_allclose(batch.logp, ref, rtol=1e-5, atol=1e-5)
    _, m = _jit_update(ppo)(state, batch, ppo_hparams(), jax.random.key(2))
    # first minibatch of the first epoch is on-policy: every step ran, ratios near 1
    assert float(m["num_applied_steps"]) == cfg.num_epochs * cfg.num_minibatches
    assert np.isfinite(float(m["total_loss"])) and float(m["ratio_max"]) < 2.0


def test_sample_with_noise_matches_the_policy_distribution():
    """Gumbel-max and reparameterized samples have the distribution of N.distribution."""
    n = 200_000
    logits = jnp.asarray([[0.3, -1.0, 1.2]], jnp.float32)
    pout = N.PolicyOutput(jnp.broadcast_to(logits, (n, 3)), jnp.zeros((n, 3)))
    g = N.sampling_noise("discrete", jax.random.key(1), (n,), 3)
    a = np.asarray(N.sample_with_noise("discrete", pout, g))
    freq = np.bincount(a, minlength=3) / n
    p = np.exp(np.asarray(logits[0], np.float64))
    p /= p.sum()
    # 5 standard errors of a multinomial frequency
    assert np.all(np.abs(freq - p) < 5 * np.sqrt(p * (1 - p) / n)), (freq, p)
    assert a.dtype == np.int32

    loc = jnp.asarray([0.5, -2.0], jnp.float32)
    log_std = jnp.asarray([np.log(0.3), np.log(2.0)], jnp.float32)
    pg = N.PolicyOutput(jnp.broadcast_to(loc, (n, 2)), jnp.broadcast_to(log_std, (n, 2)))
    eps = N.sampling_noise("gaussian", jax.random.key(2), (n,), 2)
    x = np.asarray(N.sample_with_noise("gaussian", pg, eps), np.float64)
    std = np.exp(np.asarray(log_std, np.float64))
    assert np.all(np.abs(x.mean(0) - np.asarray(loc)) < 5 * std / np.sqrt(n))
    assert np.all(np.abs(x.std(0) / std - 1) < 0.01)
    with pytest.raises(ValueError, match="noise"):
        N.sample_with_noise("discrete", pout, g[:10])
    with pytest.raises(ValueError, match="policy_kind"):
        N.sampling_noise("beta", jax.random.key(0), (2,), 2)
