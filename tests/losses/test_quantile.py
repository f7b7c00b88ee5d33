"""Tests for jaxstab.losses.quantile: NumPy brute force, closed forms, finite differences."""

import itertools

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from jaxstab.losses.quantile import (
    VARIANCE_SCALING_MODES,
    VarianceScalingState,
    quantile_huber_loss,
    quantile_midpoints,
    truncate_quantiles,
    variance_scaled_quantile_loss,
    variance_scaling_init,
    variance_scaling_spread,
)

pytestmark = pytest.mark.usefixtures("strict_dtypes")


# ---------------------------------------------------------------------------------------------
# NumPy references (written independently, as double loops)
# ---------------------------------------------------------------------------------------------
def np_qh_loss_single(pred, target, kappa):
    """Brute-force quantile Huber loss of one example: sum over i, mean over j."""
    n, m = len(pred), len(target)
    total = 0.0
    for i in range(n):
        tau = (2 * (i + 1) - 1) / (2 * n)
        acc = 0.0
        for j in range(m):
            u = float(target[j]) - float(pred[i])
            w = abs(tau - (1.0 if u < 0 else 0.0))
            if kappa == 0:
                h = abs(u)
            elif abs(u) <= kappa:
                h = 0.5 * u * u / kappa
            else:
                h = kappa * (abs(u) - 0.5 * kappa) / kappa
            acc += w * h
        total += acc / m
    return total


def np_qh_loss(pred, target, kappa):
    pred, target = np.asarray(pred, np.float64), np.asarray(target, np.float64)
    batch = np.broadcast_shapes(pred.shape[:-1], target.shape[:-1])
    pred = np.broadcast_to(pred, batch + pred.shape[-1:])
    target = np.broadcast_to(target, batch + target.shape[-1:])
    kappa = np.broadcast_to(np.asarray(kappa, np.float64), batch)
    out = np.zeros(batch)
    for idx in itertools.product(*[range(b) for b in batch]):
        out[idx] = np_qh_loss_single(pred[idx], target[idx], float(kappa[idx]))
    return out


def np_qh_grad_single(pred, target, kappa):
    """Closed-form d loss / d pred_i = -mean_j |tau_i - 1{u<0}| clip(u/kappa, -1, 1)."""
    n, m = len(pred), len(target)
    g = np.zeros(n)
    for i in range(n):
        tau = (2 * (i + 1) - 1) / (2 * n)
        for j in range(m):
            u = float(target[j]) - float(pred[i])
            w = abs(tau - (1.0 if u < 0 else 0.0))
            d = np.sign(u) if kappa == 0 else np.clip(u / kappa, -1, 1)
            g[i] -= w * d / m
    return g


# ---------------------------------------------------------------------------------------------
# midpoints
# ---------------------------------------------------------------------------------------------
@pytest.mark.parametrize("n", [1, 2, 5, 32])
def test_midpoints_closed_form(n):
    tau = quantile_midpoints(n)
    assert tau.shape == (n,) and tau.dtype == jnp.float32
    expected = np.array([(2 * i - 1) / (2 * n) for i in range(1, n + 1)])
    np.testing.assert_allclose(np.asarray(tau), expected, rtol=1e-7)
    # midpoints of N equal bins: symmetric around 1/2 and spaced 1/N apart
    np.testing.assert_allclose(np.asarray(tau) + np.asarray(tau)[::-1], 1.0, rtol=1e-6)


def test_midpoints_dtype_and_errors(x64):
    assert quantile_midpoints(3, jnp.float64).dtype == jnp.float64
    np.testing.assert_array_equal(np.asarray(quantile_midpoints(4, jnp.float64)),
                                  [0.125, 0.375, 0.625, 0.875])
    for bad in (0, -2, 2.5, True):
        with pytest.raises(ValueError, match="n must be"):
            quantile_midpoints(bad)
    with pytest.raises(TypeError, match="dtype"):
        quantile_midpoints(3, jnp.int32)


# ---------------------------------------------------------------------------------------------
# quantile Huber loss
# ---------------------------------------------------------------------------------------------
@pytest.mark.parametrize("n,m", [(1, 1), (3, 5), (8, 4), (16, 16)])
@pytest.mark.parametrize("kappa", [0.0, 0.3, 1.0, 2.5])
def test_quantile_huber_matches_double_loop(n, m, kappa):
    rng = np.random.default_rng(n * 100 + m)
    pred = rng.normal(size=(3, n)).astype(np.float32) * 2
    target = rng.normal(size=(3, m)).astype(np.float32) * 2
    out = quantile_huber_loss(jnp.asarray(pred), jnp.asarray(target), kappa=kappa)
    assert out.shape == (3,) and out.dtype == jnp.float32
    np.testing.assert_allclose(np.asarray(out), np_qh_loss(pred, target, kappa), rtol=2e-5,
                               atol=1e-6)
    # the traced-kappa path gives the same values
    out_arr = jax.jit(lambda p, t, k: quantile_huber_loss(p, t, kappa=k))(
        jnp.asarray(pred), jnp.asarray(target), jnp.asarray(kappa, jnp.float32))
    np.testing.assert_allclose(np.asarray(out_arr), np.asarray(out), rtol=1e-6, atol=1e-7)


def test_quantile_huber_per_sample_kappa_and_batch_axes():
    rng = np.random.default_rng(0)
    pred = rng.normal(size=(2, 4, 6)).astype(np.float32)
    target = rng.normal(size=(2, 4, 5)).astype(np.float32)
    kappa = np.array([[0.0, 0.5, 1.0, 3.0], [2.0, 0.0, 0.1, 1.0]], np.float32)
    out = quantile_huber_loss(jnp.asarray(pred), jnp.asarray(target), kappa=jnp.asarray(kappa))
    assert out.shape == (2, 4)
    np.testing.assert_allclose(np.asarray(out), np_qh_loss(pred, target, kappa), rtol=2e-5,
                               atol=1e-6)
    # kappa broadcasting over trailing batch axis only ([4] against batch [2, 4])
    out2 = quantile_huber_loss(jnp.asarray(pred), jnp.asarray(target),
                               kappa=jnp.asarray(kappa[1]))
    np.testing.assert_allclose(np.asarray(out2),
                               np_qh_loss(pred, target, np.broadcast_to(kappa[1], (2, 4))),
                               rtol=2e-5, atol=1e-6)


def test_quantile_huber_broadcast_critics_axis():
    # TQC: pred [B, C, N] from C critics against shared target atoms [B, 1, M]
    rng = np.random.default_rng(1)
    pred = rng.normal(size=(3, 2, 5)).astype(np.float32)
    target = rng.normal(size=(3, 1, 7)).astype(np.float32)
    out = quantile_huber_loss(jnp.asarray(pred), jnp.asarray(target), kappa=1.0)
    assert out.shape == (3, 2)
    np.testing.assert_allclose(np.asarray(out), np_qh_loss(pred, target, 1.0), rtol=2e-5)


def test_quantile_huber_vmap_equals_loop():
    rng = np.random.default_rng(2)
    pred = jnp.asarray(rng.normal(size=(5, 4)).astype(np.float32))
    target = jnp.asarray(rng.normal(size=(5, 3)).astype(np.float32))
    f = lambda p, t: quantile_huber_loss(p, t, kappa=0.7)  # noqa: E731
    batched = jax.vmap(f)(pred, target)
    looped = np.array([float(f(pred[b], target[b])) for b in range(5)])
    np.testing.assert_allclose(np.asarray(batched), looped, rtol=1e-6)
    assert f(pred[0], target[0]).shape == ()


@pytest.mark.parametrize("kappa", [0.0, 0.5, 1.0])
def test_quantile_huber_gradient_closed_form_and_fd(x64, kappa):
    rng = np.random.default_rng(3)
    pred = rng.normal(size=(6,))
    target = rng.normal(size=(9,))
    f = lambda p: quantile_huber_loss(p, jnp.asarray(target), kappa=kappa)  # noqa: E731
    g = np.asarray(jax.grad(f)(jnp.asarray(pred)))
    np.testing.assert_allclose(g, np_qh_grad_single(pred, target, kappa), rtol=1e-10, atol=1e-12)
    # central finite differences along a random direction (the loss is piecewise smooth; the
    # random data keeps all |u| away from 0 and kappa by far more than h)
    v = rng.normal(size=(6,))
    h = 1e-6
    fd = (float(f(jnp.asarray(pred + h * v))) - float(f(jnp.asarray(pred - h * v)))) / (2 * h)
    np.testing.assert_allclose(g @ v, fd, rtol=1e-6, atol=1e-9)


def test_quantile_huber_zero_array_kappa_gradient_finite(x64):
    pred = jnp.array([[0.0, 1.0, 2.0]])
    target = jnp.array([[0.5, 1.0, 3.0]])  # includes u == 0 exactly
    g = jax.grad(lambda p: quantile_huber_loss(p, target, kappa=jnp.zeros((1,))).sum())(pred)
    assert np.all(np.isfinite(np.asarray(g)))
    gk = jax.grad(lambda k: quantile_huber_loss(pred, target, kappa=k).sum())(jnp.ones((1,)))
    assert np.all(np.isfinite(np.asarray(gk)))


def test_quantile_huber_float64_dtype(x64):
    p = jnp.zeros((2, 3), jnp.float64)
    t = jnp.ones((2, 4), jnp.float64)
    out = quantile_huber_loss(p, t, kappa=jnp.asarray(1.0, jnp.float64))
    assert out.dtype == jnp.float64
    np.testing.assert_allclose(np.asarray(out), np_qh_loss(np.zeros((2, 3)), np.ones((2, 4)), 1.0),
                               rtol=1e-12)


def test_quantile_huber_errors():
    p = jnp.zeros((2, 3))
    with pytest.raises(ValueError, match="same rank"):
        quantile_huber_loss(p, jnp.zeros((3,)))
    with pytest.raises(ValueError, match="broadcast"):
        quantile_huber_loss(p, jnp.zeros((3, 3)))
    with pytest.raises(TypeError, match="same dtype"):
        with jax.enable_x64(True):
            quantile_huber_loss(p, jnp.zeros((2, 3), jnp.float64))
    with pytest.raises(TypeError, match="pred"):
        quantile_huber_loss(jnp.zeros((2, 3), jnp.int32), jnp.zeros((2, 3), jnp.int32))
    with pytest.raises(ValueError, match="kappa"):
        quantile_huber_loss(p, p, kappa=-1.0)
    with pytest.raises(ValueError, match="kappa"):
        quantile_huber_loss(p, p, kappa=jnp.array([1.0, -0.5]))
    with pytest.raises(ValueError, match="kappa"):
        quantile_huber_loss(p, p, kappa=jnp.ones((3,)))
    with pytest.raises(ValueError, match="atom"):
        quantile_huber_loss(p, jnp.zeros((2, 0)))


# ---------------------------------------------------------------------------------------------
# TQC truncation
# ---------------------------------------------------------------------------------------------
@pytest.mark.parametrize("c,n,d", [(1, 5, 0), (2, 5, 2), (5, 25, 2), (3, 4, 3)])
def test_truncate_quantiles_matches_numpy_sort(c, n, d):
    rng = np.random.default_rng(c * n + d)
    q = rng.normal(size=(4, c, n)).astype(np.float32)
    out = truncate_quantiles(jnp.asarray(q), d)
    expected = np.sort(q.reshape(4, c * n), axis=-1)[:, : c * n - d * c]
    assert out.shape == (4, c * n - d * c)
    np.testing.assert_array_equal(np.asarray(out), expected)


def test_truncate_quantiles_errors():
    q = jnp.zeros((2, 3, 4))
    with pytest.raises(ValueError, match="drop_per_critic"):
        truncate_quantiles(q, 4)
    with pytest.raises(ValueError, match="drop_per_critic"):
        truncate_quantiles(q, -1)
    with pytest.raises(TypeError, match="drop_per_critic"):
        truncate_quantiles(q, 1.0)
    with pytest.raises(ValueError, match=r"\[..., C, N\]"):
        truncate_quantiles(jnp.zeros((4,)), 1)


# ---------------------------------------------------------------------------------------------
# variance scaling
# ---------------------------------------------------------------------------------------------
def _data(seed=0, b=16, n=8, m=8):
    rng = np.random.default_rng(seed)
    centre = rng.normal(size=(b, 1))
    spread = rng.uniform(0.3, 2.0, size=(b, 1))
    pred = np.sort(centre + spread * rng.normal(size=(b, n)), axis=-1).astype(np.float32)
    target = (centre + 0.5 + spread * rng.normal(size=(b, m))).astype(np.float32)
    return pred, target


def _grad(pred, target, state, **kw):
    def f(p):
        loss, _, _ = variance_scaled_quantile_loss(p, jax.lax.stop_gradient(target), state, **kw)
        return loss

    return np.asarray(jax.grad(f)(pred), np.float64)


def _adapted_state(pred, target, steps, **kw):
    state = variance_scaling_init()
    step = jax.jit(lambda s: variance_scaled_quantile_loss(pred, target, s, **kw)[1])
    for _ in range(steps):
        state = step(state)
    return state


@pytest.mark.parametrize("per_sample_weight", [False, True])
@pytest.mark.parametrize("adapt_steps", [0, 25])
def test_normalize_mode_gradient_invariant_to_reward_scale(per_sample_weight, adapt_steps):
    """The issue's requirement: scales 0.01, 1, 100 give the same critic gradient within 1%.

    Precisely: pred and target jointly scaled by s; the moving spread average has seen data of
    that scale (fresh state: the first update sets it; or after 25 updates); the gradient of
    the loss w.r.t. the predicted quantiles is compared across scales.
    """
    pred, target = _data()
    kw = dict(mode="normalize", kappa=1.0, per_sample_weight=per_sample_weight)
    grads = {}
    for s in (0.01, 1.0, 100.0):
        p, t = jnp.asarray(s * pred), jnp.asarray(s * target)
        state = _adapted_state(p, t, adapt_steps, **kw)
        grads[s] = _grad(p, t, state, **kw)
    ref = grads[1.0]
    assert np.linalg.norm(ref) > 1e-3
    for s in (0.01, 100.0):
        rel = np.linalg.norm(grads[s] - ref) / np.linalg.norm(ref)
        assert rel < 0.01, (s, rel)


def test_seed_and_none_modes_are_not_scale_invariant():
    pred, target = _data()
    norms = {mode: {} for mode in ("seed", "none")}
    for mode in norms:
        for s in (0.01, 1.0, 100.0):
            p, t = jnp.asarray(s * pred), jnp.asarray(s * target)
            norms[mode][s] = np.linalg.norm(_grad(p, t, variance_scaling_init(), mode=mode))
    # "seed": weight 0.1 at s = 0.01 (variance 1e-4 clipped) and 10 at s = 100 (clipped), on
    # top of the Huber loss' own scale dependence: orders of magnitude apart.
    assert norms["seed"][100.0] / norms["seed"][0.01] > 1e3
    # fixed kappa: quadratic region at small scale, linear at large scale
    assert norms["none"][100.0] / norms["none"][0.01] > 10


def test_invalid_mode_lists_valid_modes():
    p = jnp.zeros((2, 3))
    with pytest.raises(ValueError, match="none.*seed.*normalize"):
        variance_scaled_quantile_loss(p, p, variance_scaling_init(), mode="dsac")
    with pytest.raises(ValueError, match="decay"):
        variance_scaled_quantile_loss(p, p, variance_scaling_init(), decay=1.0)
    with pytest.raises(ValueError, match="kappa"):
        variance_scaled_quantile_loss(p, p, variance_scaling_init(), kappa=-0.1)
    with pytest.raises(TypeError, match="VarianceScalingState"):
        variance_scaled_quantile_loss(p, p, (0.0, 0.0))
    assert set(VARIANCE_SCALING_MODES) == {"none", "seed", "normalize"}


def test_metrics_seed_mode_match_numpy():
    pred, target = _data(seed=5)
    pred = pred * 3.0  # variance above the lower clip
    loss, state, metrics = variance_scaled_quantile_loss(
        jnp.asarray(pred), jnp.asarray(target), variance_scaling_init(), mode="seed", kappa=1.0)
    var_b = np.var(pred.astype(np.float64), axis=-1)
    w = np.clip(var_b.mean(), 0.1, 10.0)
    base = np_qh_loss(pred, target, 1.0).mean()
    np.testing.assert_allclose(float(metrics["weight"]), w, rtol=1e-5)
    np.testing.assert_allclose(float(metrics["quantile_var_mean"]), var_b.mean(), rtol=1e-5)
    np.testing.assert_allclose(float(metrics["quantile_var_std"]), var_b.std(), rtol=1e-4)
    np.testing.assert_allclose(float(metrics["quantile_spread_mean"]), np.sqrt(var_b).mean(),
                               rtol=1e-5)
    np.testing.assert_allclose(float(metrics["loss_unscaled"]), base, rtol=1e-5)
    np.testing.assert_allclose(float(loss), w * base, rtol=1e-5)
    np.testing.assert_allclose(float(metrics["kappa_eff"]), 1.0)
    # debiased EMA after one update equals the batch statistic
    np.testing.assert_allclose(float(metrics["var_ema"]), var_b.mean(), rtol=1e-5)
    np.testing.assert_allclose(float(metrics["spread_ema"]), np.sqrt(var_b).mean(), rtol=1e-5)
    # the seed weight is a constant 0.1 for small rewards (daily returns)
    _, _, m_small = variance_scaled_quantile_loss(
        jnp.asarray(0.01 * pred), jnp.asarray(0.01 * target), variance_scaling_init(), mode="seed")
    assert float(m_small["weight"]) == pytest.approx(0.1)


def test_seed_mode_gradient_is_weight_times_plain_gradient():
    pred, target = _data(seed=6)
    pred = jnp.asarray(pred * 2.0)
    target = jnp.asarray(target)
    _, _, metrics = variance_scaled_quantile_loss(pred, target, variance_scaling_init(),
                                                  mode="seed")
    g_seed = _grad(pred, target, variance_scaling_init(), mode="seed")
    g_plain = np.asarray(jax.grad(lambda p: quantile_huber_loss(p, target).mean())(pred))
    np.testing.assert_allclose(g_seed, float(metrics["weight"]) * g_plain, rtol=1e-5, atol=1e-8)


def test_normalize_mode_ema_kappa_and_weights_match_numpy():
    decay = 0.9
    pred1, target1 = _data(seed=7)
    pred2, target2 = _data(seed=8)
    pred2 = 2.0 * pred2
    state = variance_scaling_init()
    _, state, _ = variance_scaled_quantile_loss(jnp.asarray(pred1), jnp.asarray(target1), state,
                                                decay=decay, kappa=0.5, per_sample_weight=True)
    loss, state, metrics = variance_scaled_quantile_loss(
        jnp.asarray(pred2), jnp.asarray(target2), state, decay=decay, kappa=0.5,
        per_sample_weight=True)
    s1 = np.sqrt(np.var(pred1.astype(np.float64), -1)).mean()
    v2_b = np.var(pred2.astype(np.float64), -1)
    s2 = np.sqrt(v2_b).mean()
    # debiased EMA: ((1-d) d s1 + (1-d) s2) / (1 - d^2)
    s_bar = ((1 - decay) * decay * s1 + (1 - decay) * s2) / (1 - decay**2)
    np.testing.assert_allclose(float(metrics["spread_ema"]), s_bar, rtol=1e-5)
    np.testing.assert_allclose(float(variance_scaling_spread(state)[0]), s_bar, rtol=1e-5)
    np.testing.assert_allclose(float(metrics["kappa_eff"]), 0.5 * s_bar, rtol=1e-5)
    w = np.clip(s_bar**2 / (v2_b + 0.1 * s_bar**2), 0.1, 10.0)
    per_ex = np_qh_loss(pred2, target2, 0.5 * s_bar)
    np.testing.assert_allclose(float(metrics["weight"]), w.mean(), rtol=1e-5)
    np.testing.assert_allclose(float(metrics["loss_unscaled"]), per_ex.mean(), rtol=1e-5)
    np.testing.assert_allclose(float(loss), (w * per_ex).mean(), rtol=1e-5)
    assert int(state.count) == 2


def test_normalize_mode_gradient_treats_statistics_as_constants(x64):
    """Moving statistics are under stop_gradient: the gradient equals that of the plain loss at
    the frozen threshold kappa_eff (checked with central finite differences in float64)."""
    pred, target = _data(seed=9, b=4, n=5, m=6)
    pred, target = jnp.asarray(pred, jnp.float64), jnp.asarray(target, jnp.float64)
    state = variance_scaling_init(jnp.float64)
    _, _, metrics = variance_scaled_quantile_loss(pred, target, state, kappa=1.0)
    k = float(metrics["kappa_eff"])
    g = _grad(pred, target, state, kappa=1.0)
    frozen = lambda p: float(jnp.mean(quantile_huber_loss(p, target, kappa=k)))  # noqa: E731
    v = np.random.default_rng(0).normal(size=pred.shape)
    h = 1e-6
    fd = (frozen(pred + h * v) - frozen(pred - h * v)) / (2 * h)
    np.testing.assert_allclose(np.sum(g * v), fd, rtol=1e-6)
    g_frozen = np.asarray(jax.grad(lambda p: jnp.mean(quantile_huber_loss(p, target, kappa=k)))(
        pred))
    np.testing.assert_allclose(g, g_frozen, rtol=1e-10, atol=1e-14)
    # the check has power: letting kappa_eff depend on pred changes the gradient visibly
    g_leaky = np.asarray(jax.grad(lambda p: jnp.mean(quantile_huber_loss(
        p, target, kappa=jnp.mean(jnp.std(p, axis=-1)))))(pred))
    assert np.linalg.norm(g_leaky - g) > 1e-3 * np.linalg.norm(g)


def test_state_dtypes_stable_and_single_trace():
    pred, target = _data(seed=10)
    traces = []

    @jax.jit
    def step(state, p, t):
        traces.append(1)
        return variance_scaled_quantile_loss(p, t, state, mode="normalize", decay=0.95)

    state = variance_scaling_init()
    ref = jax.tree.map(lambda x: (x.shape, x.dtype), state)
    for _ in range(3):
        loss, state, metrics = step(state, jnp.asarray(pred), jnp.asarray(target))
        assert jax.tree.map(lambda x: (x.shape, x.dtype), state) == ref
    assert len(traces) == 1
    assert isinstance(state, VarianceScalingState)
    assert state.count.dtype == jnp.int32 and state.spread_ema.dtype == jnp.float32
    assert loss.shape == () and all(v.shape == () for v in metrics.values())
    for key in ("weight", "quantile_var_mean", "quantile_spread_mean", "spread_ema", "var_ema",
                "kappa_eff"):
        assert key in metrics


def test_traced_kappa_and_decay_under_vmap():
    pred, target = _data(seed=11, b=4)
    kappas = jnp.array([0.0, 0.5, 1.0], jnp.float32)

    def f(k):
        return variance_scaled_quantile_loss(jnp.asarray(pred), jnp.asarray(target),
                                             variance_scaling_init(), kappa=k,
                                             decay=jnp.asarray(0.9, jnp.float32))[0]

    batched = jax.vmap(f)(kappas)
    s_bar = np.sqrt(np.var(pred.astype(np.float64), -1)).mean()
    for i, k in enumerate([0.0, 0.5, 1.0]):
        np.testing.assert_allclose(float(batched[i]),
                                   np_qh_loss(pred, target, k * s_bar).mean(), rtol=2e-5)


def test_docstring_examples_run():
    import doctest

    import jaxstab.losses.quantile as mod

    result = doctest.testmod(mod, optionflags=doctest.NORMALIZE_WHITESPACE)
    assert result.attempted >= 4 and result.failed == 0
