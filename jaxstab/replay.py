"""JAX-native fixed-capacity replay buffer (a ring buffer held in a pytree).

The buffer is a pure value: ``replay_init`` allocates it, ``replay_add`` writes a batch of
transitions at the insertion pointer (overwriting the oldest once full), ``replay_sample`` draws
indices uniformly from the filled part. All three are jit-, vmap- and scan-friendly; the
capacity and batch sizes are static (shapes), the pointer and fill level are 0-d int32 arrays.

Example:
  >>> import jax, jax.numpy as jnp
  >>> from jaxstab.replay import Transition, replay_init, replay_add, replay_sample
  >>> ex = Transition(obs=jnp.zeros(3), action=jnp.zeros(1), reward=jnp.zeros(()),
  ...                 next_obs=jnp.zeros(3), terminated=jnp.zeros((), bool))
  >>> buf = replay_init(ex, capacity=1000)
  >>> batch = jax.tree_util.tree_map(lambda x: jnp.stack([x] * 4), ex)
  >>> buf = replay_add(buf, batch)
  >>> sample = replay_sample(buf, jax.random.key(0), 32)   # leaves have leading axis 32
"""

from __future__ import annotations

from typing import Any, NamedTuple

import jax
import jax.numpy as jnp


class Transition(NamedTuple):
    """One environment transition (or a batch of them along leading axes).

    Attributes:
      obs: observation ``[..., obs_dim]``.
      action: action taken, in the agent's action space ``[..., action_dim]``.
      reward: reward ``[...]`` float32.
      next_obs: the observation *after* the step, before any auto-reset (gymnax's
        ``info["final_observation"]``) ``[..., obs_dim]``.
      terminated: true terminal flag ``[...]`` bool; time-limit truncation is NOT terminal.
    """

    obs: jax.Array
    action: jax.Array
    reward: jax.Array
    next_obs: jax.Array
    terminated: jax.Array


class ReplayBufferState(NamedTuple):
    """Ring-buffer state.

    Attributes:
      data: pytree like the example transition, every leaf with a leading ``capacity`` axis.
      insert_pos: 0-d int32, index where the next transition is written.
      size: 0-d int32, number of valid entries (``<= capacity``).
    """

    data: Any
    insert_pos: jax.Array
    size: jax.Array


def _capacity(state: ReplayBufferState) -> int:
    return int(jax.tree_util.tree_leaves(state.data)[0].shape[0])


def replay_init(example: Any, capacity: int) -> ReplayBufferState:
    """Allocate an empty buffer for items shaped like ``example``.

    Args:
      example: a pytree of arrays describing ONE item (no leading batch axis).
      capacity: number of items the buffer holds (static Python int > 0).

    Returns:
      ``ReplayBufferState`` with zero-filled storage ``[capacity, *leaf.shape]`` per leaf
      (dtypes preserved), ``insert_pos = size = 0`` (int32).

    Raises:
      ValueError: if ``capacity`` is not a positive int or ``example`` has no leaves.
    """
    if not isinstance(capacity, int) or isinstance(capacity, bool) or capacity <= 0:
        raise ValueError(f"capacity must be a positive int, got {capacity!r}")
    if not jax.tree_util.tree_leaves(example):
        raise ValueError("example must be a pytree with at least one array leaf")
    data = jax.tree_util.tree_map(
        lambda x: jnp.zeros((capacity,) + jnp.shape(x), jnp.asarray(x).dtype), example)
    return ReplayBufferState(data=data, insert_pos=jnp.zeros((), jnp.int32),
                             size=jnp.zeros((), jnp.int32))


def replay_add(state: ReplayBufferState, batch: Any) -> ReplayBufferState:
    """Write a batch of items at the insertion pointer, overwriting the oldest when full.

    ``positions = (insert_pos + arange(n)) mod capacity``; ``size = min(size + n, capacity)``.

    Args:
      state: buffer state.
      batch: pytree with the buffer's structure, every leaf ``[n, *item_shape]`` (same n).

    Returns:
      The new ``ReplayBufferState``.

    Raises:
      ValueError: if the structure/shapes do not match the buffer or ``n > capacity``.
    """
    capacity = _capacity(state)
    leaves, treedef = jax.tree_util.tree_flatten(batch)
    buf_leaves, buf_treedef = jax.tree_util.tree_flatten(state.data)
    if treedef != buf_treedef:
        raise ValueError(f"batch structure {treedef} does not match buffer {buf_treedef}")
    n = None
    for x, b in zip(leaves, buf_leaves):
        if x.ndim < 1 or x.shape[1:] != b.shape[1:]:
            raise ValueError(
                f"batch leaf shape {x.shape} does not match item shape {b.shape[1:]} with a leading "
                "batch axis")
        if n is None:
            n = x.shape[0]
        elif x.shape[0] != n:
            raise ValueError("all batch leaves need the same leading size")
    if n > capacity:
        raise ValueError(f"batch of {n} items exceeds buffer capacity {capacity}")
    idx = (state.insert_pos + jnp.arange(n, dtype=jnp.int32)) % capacity
    data = jax.tree_util.tree_map(lambda b, x: b.at[idx].set(x.astype(b.dtype)), state.data, batch)
    return ReplayBufferState(
        data=data,
        insert_pos=((state.insert_pos + n) % capacity).astype(jnp.int32),
        size=jnp.minimum(state.size + n, capacity).astype(jnp.int32),
    )


def replay_sample(state: ReplayBufferState, key: jax.Array, batch_size: int) -> Any:
    """Draw ``batch_size`` items uniformly (with replacement) from the filled part.

    Args:
      state: buffer state; must hold at least one item (with ``size == 0`` the result is
        the zero-filled slot 0, which callers avoid with a warm-up).
      key: PRNG key.
      batch_size: static number of items to draw.

    Returns:
      Pytree like the buffer's data with leaves ``[batch_size, *item_shape]``.

    Raises:
      ValueError: if ``batch_size`` is not a positive int.
    """
    if not isinstance(batch_size, int) or isinstance(batch_size, bool) or batch_size <= 0:
        raise ValueError(f"batch_size must be a positive int, got {batch_size!r}")
    idx = jax.random.randint(key, (batch_size,), 0, jnp.maximum(state.size, 1), dtype=jnp.int32)
    return jax.tree_util.tree_map(lambda b: b[idx], state.data)


__all__ = ["ReplayBufferState", "Transition", "replay_add", "replay_init", "replay_sample"]
