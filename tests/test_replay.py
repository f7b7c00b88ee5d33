"""Tests for jaxstab.replay: ring-buffer semantics against a NumPy reference."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from jaxstab.replay import Transition, replay_add, replay_init, replay_sample


def _example(obs_dim=3, act_dim=2):
    return Transition(obs=jnp.zeros(obs_dim, jnp.float32), action=jnp.zeros(act_dim, jnp.float32),
                      reward=jnp.zeros((), jnp.float32), next_obs=jnp.zeros(obs_dim, jnp.float32),
                      terminated=jnp.zeros((), bool))


def _batch(start, n, obs_dim=3, act_dim=2):
    ids = np.arange(start, start + n, dtype=np.float32)
    return Transition(obs=jnp.asarray(np.repeat(ids[:, None], obs_dim, 1)),
                      action=jnp.asarray(np.repeat(-ids[:, None], act_dim, 1)),
                      reward=jnp.asarray(ids * 10),
                      next_obs=jnp.asarray(np.repeat(ids[:, None] + 0.5, obs_dim, 1)),
                      terminated=jnp.asarray(ids.astype(int) % 2 == 0))


def test_init_shapes_and_dtypes():
    buf = replay_init(_example(), 7)
    assert buf.data.obs.shape == (7, 3) and buf.data.obs.dtype == jnp.float32
    assert buf.data.terminated.shape == (7,) and buf.data.terminated.dtype == jnp.bool_
    assert buf.size.dtype == jnp.int32 and buf.insert_pos.dtype == jnp.int32
    assert buf.size.shape == () and int(buf.size) == 0


def test_ring_buffer_matches_numpy_reference():
    cap = 5
    buf = replay_init(_example(), cap)
    ref_reward = np.zeros(cap, np.float32)
    ref_pos, ref_size, start = 0, 0, 0
    add = jax.jit(replay_add)
    for n in (2, 3, 2, 4, 1):
        buf = add(buf, _batch(start, n))
        for i in range(n):
            ref_reward[(ref_pos + i) % cap] = (start + i) * 10
        ref_pos = (ref_pos + n) % cap
        ref_size = min(ref_size + n, cap)
        start += n
        np.testing.assert_array_equal(np.asarray(buf.data.reward), ref_reward)
        assert int(buf.insert_pos) == ref_pos and int(buf.size) == ref_size
    # Fields of one item stay together.
    ids = np.asarray(buf.data.reward) / 10
    np.testing.assert_array_equal(np.asarray(buf.data.obs)[:, 0], ids)
    np.testing.assert_array_equal(np.asarray(buf.data.action)[:, 1], -ids)
    np.testing.assert_array_equal(np.asarray(buf.data.terminated), ids.astype(int) % 2 == 0)


def test_sample_only_filled_and_uniform():
    cap = 50
    buf = replay_add(replay_init(_example(), cap), _batch(0, 8))
    sample = jax.jit(replay_sample, static_argnums=2)(buf, jax.random.key(0), 16000)
    ids = np.asarray(sample.reward) / 10
    assert set(np.unique(ids)) <= set(range(8))
    np.testing.assert_array_equal(np.asarray(sample.obs)[:, 0], ids)  # rows stay consistent
    counts = np.bincount(ids.astype(int), minlength=8)
    expected = 16000 / 8
    chi2 = np.sum((counts - expected) ** 2 / expected)
    assert chi2 < 24.3  # chi-square(7) 0.999 quantile


def test_vmap_over_buffers():
    bufs = jax.vmap(lambda _: replay_init(_example(), 4))(jnp.arange(3))
    batches = jax.vmap(lambda s: jax.tree_util.tree_map(lambda x: x + s, _batch(0, 2)))(
        jnp.arange(3.0))
    bufs = jax.vmap(replay_add)(bufs, batches)
    assert bufs.data.reward.shape == (3, 4)
    np.testing.assert_array_equal(np.asarray(bufs.size), [2, 2, 2])
    np.testing.assert_allclose(np.asarray(bufs.data.reward[:, 1]), [10, 11, 12])


def test_bad_inputs():
    with pytest.raises(ValueError, match="capacity"):
        replay_init(_example(), 0)
    buf = replay_init(_example(), 4)
    with pytest.raises(ValueError, match="capacity"):
        replay_add(buf, _batch(0, 5))
    with pytest.raises(ValueError, match="shape"):
        replay_add(buf, _batch(0, 2, obs_dim=4))
    with pytest.raises(ValueError, match="structure"):
        replay_add(buf, {"obs": jnp.zeros((2, 3))})
    with pytest.raises(ValueError, match="batch_size"):
        replay_sample(buf, jax.random.key(0), 0)
