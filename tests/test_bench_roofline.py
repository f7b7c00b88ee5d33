"""Tests of ``benchmarks/bench_roofline.py``: the FLOP accounting against independent programs.

The closed-form counts (``sac_matmuls``, ``ppo_matmuls``) are checked against the dot products
of small plain-JAX reference programs written here (no jaxstab code, counted by
``dot_flops(live_jaxpr(...))``), and jaxstab's own programs against the closed form, so an
accidental extra matrix product in jaxstab's SAC or PPO step fails a test.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
import pytest
from _bench_loader import load_benchmark

br = load_benchmark("bench_roofline")


def _init(key, layers):
    keys = jax.random.split(key, len(layers))
    return [(jax.random.normal(k, (i, o)) * 0.1, jnp.zeros((1, o))) for k, (i, o) in
            zip(keys, layers)]


def _mlp(params, x, act=jax.nn.relu):
    for w, b in params[:-1]:
        x = act(x @ w + b)
    w, b = params[-1]
    return x @ w + b


def _critic(params, obs, action):
    # first layer split into its observation and action columns, so that the actor loss
    # differentiates only through the action's columns (what the closed form counts)
    (w1, b1), rest = params[0], params[1:]
    obs_dim = obs.shape[-1]
    h = jax.nn.relu(obs @ w1[:obs_dim] + action @ w1[obs_dim:] + b1)
    for w, b in rest[:-1]:
        h = jax.nn.relu(h @ w + b)
    w, b = rest[-1]
    return h @ w + b


def _reference_sac_step(actor, critics, targets, batch, obs1):
    """One SAC step written from scratch: acting, target, critic loss, actor loss."""
    obs, action, reward, next_obs = batch

    def policy(p, o):
        out = _mlp(p, o)
        return jnp.tanh(out[:, :1])  # the mean's squashed action (deterministic: FLOPs only)

    acted = policy(actor, obs1)
    next_a = policy(actor, next_obs)
    q_next = jnp.minimum(*[_critic(t, next_obs, next_a) for t in targets])
    y = reward[:, None] + 0.99 * q_next  # [B, 1]

    def critic_loss(cs):
        return sum(jnp.mean((_critic(c, obs, action) - y) ** 2) for c in cs)

    def actor_loss(a):
        pa = policy(a, obs)
        return -jnp.mean(jnp.minimum(*[_critic(c, obs, pa) for c in critics]))

    return acted, jax.grad(critic_loss)(critics), jax.grad(actor_loss)(actor)


def test_sac_closed_form_equals_a_reference_program():
    obs_dim, act_dim, hidden, b = 3, 1, (32, 16), 40
    a_layers = br.mlp_layers(obs_dim, hidden, 2 * act_dim)
    c_layers = br.mlp_layers(obs_dim + act_dim, hidden, 1)
    k = jax.random.split(jax.random.key(0), 5)
    actor = _init(k[0], a_layers)
    critics = [_init(k[1], c_layers), _init(k[2], c_layers)]
    batch = (jnp.ones((b, obs_dim)), jnp.ones((b, act_dim)), jnp.ones(b), jnp.ones((b, obs_dim)))
    flops, in_while = br.dot_flops(br.live_jaxpr(
        _reference_sac_step, actor, critics, critics, batch, jnp.ones((1, obs_dim))))
    assert in_while == 0
    assert flops == br.total_flops(br.sac_matmuls(obs_dim, act_dim, hidden, b))


def test_ppo_update_closed_form_equals_a_reference_program():
    obs_dim, n_act, hidden = 4, 2, (32, 32)
    envs, steps, epochs, mbs = 2, 8, 3, 4
    a_layers = br.mlp_layers(obs_dim, hidden, n_act)
    c_layers = br.mlp_layers(obs_dim, hidden, 1)
    k = jax.random.split(jax.random.key(1), 2)
    params = (_init(k[0], a_layers), _init(k[1], c_layers))
    n, mb = envs * steps, envs * steps // mbs

    def program(params, obs_steps, last_obs):
        actor, critic = params
        logits = jnp.stack([_mlp(actor, o, jnp.tanh) for o in obs_steps])  # rollout
        values = _mlp(critic, jnp.concatenate([obs_steps.reshape(n, obs_dim), last_obs]),
                      jnp.tanh)

        def loss(p, o):  # squares: the outputs' values are needed, as in a real loss
            return jnp.sum(_mlp(p[0], o, jnp.tanh) ** 2) + jnp.sum(_mlp(p[1], o, jnp.tanh) ** 2)

        grads = [jax.grad(loss)(params, obs_steps.reshape(n, obs_dim)[i * mb:(i + 1) * mb])
                 for _ in range(epochs) for i in range(mbs)]
        return logits, values, grads

    flops, _ = br.dot_flops(br.live_jaxpr(program, params, jnp.ones((steps, envs, obs_dim)),
                                          jnp.ones((envs, obs_dim))))
    assert flops == br.total_flops(br.ppo_matmuls(
        obs_dim, n_act, hidden, num_envs=envs, num_steps=steps, num_epochs=epochs,
        num_minibatches=mbs))


def test_dot_flops_counts_scan_bodies_length_times_and_the_larger_cond_branch():
    x = jnp.ones((4, 5))
    w = jnp.ones((5, 6))

    def f(x, w, p):
        y, _ = jax.lax.scan(lambda c, _: (c, (c @ w).sum()), x, None, length=7)
        return jax.lax.cond(p, lambda: (x @ w) @ w.T, lambda: x)

    flops, in_while = br.dot_flops(br.live_jaxpr(f, x, w, True))
    # the scan's output is unused (dead), the cond's larger branch: 4x5x6 and 4x6x5 products
    assert flops == 2 * (2 * 4 * 5 * 6) and in_while == 0

    def g(x, w):
        y, outs = jax.lax.scan(lambda c, _: (c, (c @ w).sum()), x, None, length=7)
        return outs

    assert br.dot_flops(br.live_jaxpr(g, x, w))[0] == 7 * 2 * 4 * 5 * 6

    def h(x, sq):  # a dot in a while body, and one in a while nested in it: each counted once
        def body(c):
            i, y = c
            _, z = jax.lax.while_loop(lambda d: d[0] < 2, lambda d: (d[0] + 1, d[1] @ sq),
                                      (0, y @ sq))
            return i + 1, z
        return jax.lax.while_loop(lambda c: c[0] < 3, body, (0, x))[1]

    flops, in_while = br.dot_flops(br.live_jaxpr(h, x, jnp.ones((5, 5))))
    assert flops == 2 * (2 * 4 * 5 * 5) and in_while == 2


def test_jaxstab_sac_does_only_the_known_extra_product():
    # jaxstab's critic takes concat(obs, action), so the actor loss differentiates through all
    # of the first layer's input columns, not only the action's: 2 critics x 2 x B x h x obs_dim
    b, h = 256, 64
    flops, in_while = br.jaxstab_sac_program_flops(h, b)
    necessary = br.total_flops(br.sac_matmuls(3, 1, (h, h), b))
    assert in_while == 0
    assert flops - necessary == 2 * (2 * b * h * 3)


@pytest.mark.slow
def test_jaxstab_ppo_does_only_the_known_extra_product():
    # the critic runs on every step's observation and its final observation (2 x 512 rows)
    # where 512 + 4 would do: 508 extra critic forward rows of a 4 -> 64 -> 64 -> 1 network
    per_step, in_while = br.jaxstab_ppo_program_flops(64)
    necessary = br.total_flops(br.ppo_matmuls(4, 2, (64, 64), num_envs=4, num_steps=128,
                                              num_epochs=4, num_minibatches=4)) / 512
    extra_rows = 2 * 512 - (512 + 4)
    assert in_while == 0
    assert per_step * 512 - necessary * 512 == pytest.approx(
        extra_rows * 2 * (4 * 64 + 64 * 64 + 64 * 1), abs=0.5)


def test_bounds_arithmetic():
    mms = [br.MatMul(64, 64, 64, 3, "a"), br.MatMul(2, 64, 1, 5, "b")]
    times = {(64, 64, 64): 1e-5, (2, 64, 1): 1e-6}
    b = br.bounds(mms, 10, 1e11, times)
    flops = 3 * 2 * 64 ** 3 + 5 * 2 * 2 * 64
    assert b["mflop_per_step"] == pytest.approx(flops / 10 / 1e6)
    assert b["bound_a"] == pytest.approx(10 * 1e11 / flops)
    assert b["bound_b"] == pytest.approx(10 / (3e-5 + 5e-6))
    assert b["bound_b_large"] == pytest.approx(10 / 3e-5)
    row = br.rows_for("x", mms, 10, 1e11, times, 1.0, ours=None, sb3=100.0, factor=2.0)
    assert len(row) == len(br.COLUMNS)
    col = dict(zip(br.COLUMNS, row))
    assert col["target steps/s"] == 200 and col["jaxstab steps/s"] is None
    assert float(col["target / bound B (large only)"]) == pytest.approx(200 / (10 / 3e-5),
                                                                         abs=0.01)


def test_time_matmul_grows_with_the_product():
    small = br.time_matmul(64, 64, 64, inner=50, repeats=3)
    large = br.time_matmul(512, 256, 256, inner=20, repeats=3)
    assert 0 < small < large   # 128x the FLOPs


def test_ppo_matmuls_rejects_uneven_minibatches():
    with pytest.raises(ValueError, match="num_minibatches"):
        br.ppo_matmuls(4, 2, (8,), num_envs=3, num_steps=5, num_epochs=1, num_minibatches=2)
