"""Running statistics and reward normalization (optax-style: pure init/update, NamedTuple states).

- :class:`RunningStats` with :func:`running_stats_init`, :func:`running_stats_update`,
  :func:`running_stats_merge`, :func:`running_stats_reduce`: count/mean/sum of squared
  deviations, merged with Chan et al.'s parallel formula (exact and associative, so statistics
  gathered per environment under ``vmap`` combine into the statistics of the concatenation).
- :class:`RewardNormalizerState` with :func:`reward_normalizer_init`,
  :func:`reward_normalizer_update`, :func:`reward_normalizer_normalize`: Stable-Baselines3
  ``VecNormalize`` reward path (divide by the running std of a discounted return accumulator,
  no mean subtraction, clip, reset on episode end).
- :class:`WindowedStats` with :func:`windowed_stats_init`, :func:`windowed_stats_update`,
  :func:`windowed_stats_mean`, :func:`windowed_stats_var`, :func:`windowed_stats_normalize`:
  mean/variance over the last ``W`` entries (a fixed-size ring buffer), the seed's "last N
  steps" normalizer.

Every state is a NamedTuple of arrays with explicit dtypes (scalars are 0-d arrays), so states
can be carried through ``lax.scan`` and batched with ``vmap``.
"""

from __future__ import annotations

import numbers
from typing import NamedTuple, Sequence

import jax
import jax.numpy as jnp
import numpy as np

from jaxstab._validation import concrete_value as _concrete

Array = jax.Array

__all__ = [
    "RewardNormalizerState",
    "RunningStats",
    "WindowedStats",
    "reward_normalizer_init",
    "reward_normalizer_normalize",
    "reward_normalizer_update",
    "reward_normalizer_update_rollout",
    "running_stats_init",
    "running_stats_mean",
    "running_stats_merge",
    "running_stats_reduce",
    "running_stats_std",
    "running_stats_update",
    "running_stats_var",
    "windowed_stats_init",
    "windowed_stats_mean",
    "windowed_stats_normalize",
    "windowed_stats_std",
    "windowed_stats_update",
    "windowed_stats_var",
]



def _check_shape(shape, name: str = "shape") -> tuple[int, ...]:
    if isinstance(shape, numbers.Integral):
        shape = (int(shape),)
    try:
        shape = tuple(int(s) for s in shape)
    except TypeError as e:
        raise TypeError(f"{name} must be a tuple of ints, got {shape!r}.") from e
    if any(s < 0 for s in shape):
        raise ValueError(f"{name} must have non-negative sizes, got {shape}.")
    return shape


def _check_float_dtype(dtype, name: str = "dtype"):
    if not jnp.issubdtype(dtype, jnp.floating):
        raise TypeError(f"{name} must be a floating dtype, got {dtype}.")
    return jnp.dtype(dtype)


# ----------------------------------------------------------------------------------------------
# running statistics (Chan et al.)
# ----------------------------------------------------------------------------------------------
class RunningStats(NamedTuple):
    """Sufficient statistics of a stream: count, mean and sum of squared deviations.

    Attributes:
      count: 0-d float array (same dtype as ``mean``), number of samples seen (may be
        fractional when a pseudo-count prior is used, as SB3's ``epsilon``).
      mean: ``[*shape]`` float array, the running mean.
      m2: ``[*shape]`` float array, sum of squared deviations from the mean
        (``var = m2 / count``).

    Properties ``var`` (population variance, ``ddof = 0``) and ``std`` compute from these.
    """

    count: Array
    mean: Array
    m2: Array

    @property
    def var(self) -> Array:
        return running_stats_var(self)

    @property
    def std(self) -> Array:
        return running_stats_std(self)


def running_stats_init(shape: Sequence[int] | int = (), dtype=jnp.float32, *,
                       prior_count: float = 0.0, prior_var: float = 1.0) -> RunningStats:
    """Empty running statistics, optionally with a pseudo-count prior.

    With ``prior_count = eps > 0`` the state starts as ``eps`` pseudo-observations with mean 0
    and variance ``prior_var`` (Stable-Baselines3's ``RunningMeanStd(epsilon=1e-4)`` is
    ``prior_count=1e-4, prior_var=1``). Merging two such states counts the prior twice.

    Args:
      shape: shape of one observation (``()`` for scalars).
      dtype: floating dtype of the statistics.
      prior_count: pseudo-count ``>= 0`` (0: exactly empty).
      prior_var: variance of the pseudo-observations (``>= 0``).

    Returns:
      :class:`RunningStats` with ``count`` 0-d and ``mean``, ``m2`` of ``shape``, all ``dtype``.

    Raises:
      ValueError: negative sizes, ``prior_count`` or ``prior_var``.
      TypeError: non-floating ``dtype``.

    Example:
      >>> s = running_stats_update(running_stats_init(), jnp.array([1.0, 2.0, 3.0]))
      >>> float(s.mean), float(s.var)
      (2.0, 0.6666666865348816)
    """
    shape = _check_shape(shape)
    dtype = _check_float_dtype(dtype)
    if not (np.isfinite(prior_count) and prior_count >= 0):
        raise ValueError(f"prior_count must be finite and >= 0, got {prior_count!r}.")
    if not (np.isfinite(prior_var) and prior_var >= 0):
        raise ValueError(f"prior_var must be finite and >= 0, got {prior_var!r}.")
    return RunningStats(
        count=jnp.full((), prior_count, dtype),
        mean=jnp.zeros(shape, dtype),
        m2=jnp.full(shape, prior_count * prior_var, dtype),
    )


def running_stats_merge(a: RunningStats, b: RunningStats) -> RunningStats:
    """Combine two statistics exactly (Chan et al.'s parallel formula).

    With ``n = n_a + n_b`` and ``delta = mean_b - mean_a``::

        mean = mean_a + delta * n_b / n
        m2   = m2_a + m2_b + delta^2 * n_a * n_b / n

    This is the statistics of the concatenated samples, so the merge is associative and
    commutative (up to rounding). Merging with an empty state (``count = 0``) is the identity.

    Args:
      a, b: :class:`RunningStats` with equal shapes and dtypes (leading batch axes allowed on
        all three fields alike, e.g. per-environment statistics).

    Returns:
      :class:`RunningStats` of the union.

    Raises:
      ValueError / TypeError: if shapes or dtypes differ.

    Reference: Chan, Golub, LeVeque, "Updating Formulae and a Pairwise Algorithm for Computing
    Sample Variances", 1979.

    Example:
      >>> x = jnp.arange(6.0)
      >>> a = running_stats_update(running_stats_init(), x[:2])
      >>> b = running_stats_update(running_stats_init(), x[2:])
      >>> float(running_stats_merge(a, b).mean)
      2.5
    """
    for name, fa, fb in zip(RunningStats._fields, a, b):
        fa, fb = jnp.asarray(fa), jnp.asarray(fb)
        if fa.shape != fb.shape:
            raise ValueError(f"cannot merge RunningStats with {name} shapes {fa.shape} and "
                             f"{fb.shape}.")
        if fa.dtype != fb.dtype:
            raise TypeError(f"cannot merge RunningStats with {name} dtypes {fa.dtype} and "
                            f"{fb.dtype}.")
    n = a.count + b.count
    pos = n > 0
    safe_n = jnp.where(pos, n, jnp.ones_like(n))
    wb = jnp.where(pos, b.count / safe_n, jnp.zeros_like(n))
    cross = jnp.where(pos, a.count * b.count / safe_n, jnp.zeros_like(n))
    # field shapes: count [...], mean [..., *shape]; align count on the trailing axes
    extra = a.mean.ndim - a.count.ndim
    wb = jnp.reshape(wb, wb.shape + (1,) * extra)
    cross = jnp.reshape(cross, cross.shape + (1,) * extra)
    delta = b.mean - a.mean
    return RunningStats(count=n, mean=a.mean + delta * wb, m2=a.m2 + b.m2 + delta * delta * cross)


def running_stats_reduce(stats: RunningStats, axis: int = 0) -> RunningStats:
    """Merge a stack of statistics along a leading axis in closed form (k-way Chan merge).

    ``count = sum n_k``, ``mean = sum n_k mean_k / count``,
    ``m2 = sum m2_k + sum n_k (mean_k - mean)^2``: the same result as folding
    :func:`running_stats_merge` over the stack, in one pass. Typical use: per-environment
    statistics from ``vmap(running_stats_update)`` reduced to global ones.

    Args:
      stats: :class:`RunningStats` whose fields share a leading stack axis ``axis`` (count
        ``[K]``, mean and m2 ``[K, *shape]`` for ``axis=0``).
      axis: the stack axis (must be a leading axis of ``count``).

    Returns:
      :class:`RunningStats` without that axis.

    Raises:
      ValueError: if ``count`` has no axis ``axis``.
    """
    if stats.count.ndim == 0:
        raise ValueError("stats must carry a stack axis (count has shape ()); nothing to reduce.")
    axis = int(axis)
    if not -stats.count.ndim <= axis < stats.count.ndim:
        raise ValueError(f"axis {axis} out of range for count of shape {stats.count.shape}.")
    axis %= stats.count.ndim
    extra = stats.mean.ndim - stats.count.ndim
    n_k = jnp.reshape(stats.count, stats.count.shape + (1,) * extra)
    n = jnp.sum(stats.count, axis=axis)
    pos = n > 0
    safe_n = jnp.where(pos, n, jnp.ones_like(n))
    safe_n_b = jnp.reshape(safe_n, safe_n.shape + (1,) * extra)
    pos_b = jnp.reshape(pos, pos.shape + (1,) * extra)
    mean = jnp.where(pos_b, jnp.sum(n_k * stats.mean, axis=axis) / safe_n_b,
                     jnp.zeros_like(jnp.sum(stats.mean, axis=axis)))
    dev = stats.mean - jnp.expand_dims(mean, axis)
    m2 = jnp.sum(stats.m2, axis=axis) + jnp.sum(n_k * dev * dev, axis=axis)
    return RunningStats(count=n, mean=mean, m2=m2)


def running_stats_update(state: RunningStats, batch: Array,
                         axis: int | Sequence[int] = 0) -> RunningStats:
    """Add a batch of observations: its (two-pass) moments merged with Chan's formula.

    Args:
      state: current :class:`RunningStats` (fields without batch axes: ``count`` 0-d, ``mean``
        ``[*shape]``). Use ``vmap`` for per-environment statistics.
      batch: array whose non-reduced axes equal ``state.mean.shape``; cast to the state's dtype.
      axis: axis or axes of ``batch`` holding the samples (default: the leading axis).

    Returns:
      the updated :class:`RunningStats` (same shapes and dtypes).

    Raises:
      ValueError: if the remaining shape of ``batch`` differs from ``state.mean.shape`` or an
        axis is out of range.
      TypeError: if ``batch`` is not numeric.

    Example:
      >>> s = running_stats_init(shape=(2,))
      >>> s = running_stats_update(s, jnp.array([[0.0, 1.0], [2.0, 3.0]]))
      >>> s.mean
      Array([1., 2.], dtype=float32)
    """
    batch = jnp.asarray(batch)
    if not (jnp.issubdtype(batch.dtype, jnp.floating) or jnp.issubdtype(batch.dtype, jnp.integer)
            or batch.dtype == jnp.bool_):
        raise TypeError(f"batch must be numeric, got dtype {batch.dtype}.")
    if state.count.ndim != 0:
        raise ValueError("state has batch axes (count is not 0-d); vmap running_stats_update over "
                         "them.")
    if batch.ndim == 0:
        raise ValueError("batch must have a sample axis, got a 0-d array.")
    axes_in = (axis,) if isinstance(axis, numbers.Integral) else tuple(axis)
    if not axes_in:
        raise ValueError("axis must name at least one sample axis.")
    axes_set = set()
    for a in axes_in:
        if isinstance(a, bool) or not isinstance(a, numbers.Integral):
            raise TypeError(f"axis must be an int or a sequence of ints, got {axis!r}.")
        if not -batch.ndim <= a < batch.ndim:
            raise ValueError(f"axis {a} out of range for batch of shape {batch.shape}.")
        axes_set.add(int(a) % batch.ndim)
    axes = tuple(sorted(axes_set))
    rest = tuple(s for i, s in enumerate(batch.shape) if i not in axes)
    if rest != state.mean.shape:
        raise ValueError(f"batch of shape {batch.shape} reduced over axes {axes} gives {rest}, "
                         f"expected the statistics' shape {state.mean.shape}.")
    dtype = state.mean.dtype
    x = batch.astype(dtype)
    nb = int(np.prod([batch.shape[a] for a in axes]))
    if nb == 0:
        return state
    b_mean = jnp.mean(x, axis=axes)
    dev = x - jnp.expand_dims(b_mean, axes)
    b_m2 = jnp.sum(dev * dev, axis=axes)
    b = RunningStats(count=jnp.full((), nb, dtype), mean=b_mean, m2=b_m2)
    return running_stats_merge(state, b)


def running_stats_mean(state: RunningStats) -> Array:
    """The running mean ``[*shape]`` (0 before any sample)."""
    return state.mean


def running_stats_var(state: RunningStats, ddof: int = 0) -> Array:
    """Variance ``m2 / (count - ddof)`` (``ddof = 0``: population variance, as SB3/NumPy).

    Args:
      state: :class:`RunningStats`.
      ddof: delta degrees of freedom (Python int, 0 or 1).

    Returns:
      ``[*shape]`` array of the state's dtype; 0 where ``count <= ddof``.
    """
    if ddof not in (0, 1):
        raise ValueError(f"ddof must be 0 or 1, got {ddof!r}.")
    denom = state.count - ddof
    extra = state.m2.ndim - state.count.ndim
    denom = jnp.reshape(denom, denom.shape + (1,) * extra)
    pos = denom > 0
    safe = jnp.where(pos, denom, jnp.ones_like(denom))
    return jnp.where(pos, state.m2 / safe, jnp.zeros_like(state.m2))


def running_stats_std(state: RunningStats, ddof: int = 0) -> Array:
    """Standard deviation ``sqrt(running_stats_var(state, ddof))``."""
    return jnp.sqrt(running_stats_var(state, ddof))


# ----------------------------------------------------------------------------------------------
# reward normalization (SB3 VecNormalize)
# ----------------------------------------------------------------------------------------------
class RewardNormalizerState(NamedTuple):
    """State of the VecNormalize-style reward normalizer.

    Attributes:
      returns: ``[num_envs]`` float, discounted return accumulator per environment.
      ret_stats: :class:`RunningStats` (scalar shape) of the accumulated returns.
      step: 0-d int32, number of updates so far (for the warm-up).
    """

    returns: Array
    ret_stats: RunningStats
    step: Array


def reward_normalizer_init(num_envs: int, dtype=jnp.float32, *,
                           prior_count: float = 1e-4) -> RewardNormalizerState:
    """Initial reward-normalizer state for ``num_envs`` environments.

    Args:
      num_envs: number of parallel environments (positive Python int).
      dtype: floating dtype of the accumulator and statistics.
      prior_count: pseudo-count of the return statistics' prior (mean 0, variance 1);
        ``1e-4`` is SB3's ``RunningMeanStd(epsilon=1e-4)``, 0 starts exactly empty.

    Returns:
      :class:`RewardNormalizerState` with zero returns.

    Raises:
      ValueError: if ``num_envs < 1`` or ``prior_count < 0``.
    """
    if isinstance(num_envs, bool) or not isinstance(num_envs, numbers.Integral) or num_envs < 1:
        raise ValueError(f"num_envs must be a positive Python int, got {num_envs!r}.")
    dtype = _check_float_dtype(dtype)
    return RewardNormalizerState(
        returns=jnp.zeros((int(num_envs),), dtype),
        ret_stats=running_stats_init((), dtype, prior_count=prior_count, prior_var=1.0),
        step=jnp.zeros((), jnp.int32),
    )


def _check_reward_hparams(gamma, clip, eps) -> None:
    for name, value, lo, lo_open, hi in (("gamma", gamma, 0.0, False, 1.0),
                                         ("clip", clip, 0.0, True, np.inf),
                                         ("eps", eps, 0.0, False, np.inf)):
        c = _concrete(value)
        if c is None:
            continue
        if c.shape != ():
            raise ValueError(f"{name} must be a scalar, got shape {c.shape}.")
        v = float(c)
        bad = (np.isnan(v) or v < lo or (lo_open and v == lo) or v > hi
               or (name != "clip" and not np.isfinite(v)))
        if bad:
            lo_s = "(" if lo_open else "["
            raise ValueError(f"{name} must be in {lo_s}{lo}, {hi}], got {v!r}.")


def _check_warmup(warmup_steps) -> None:
    c_w = _concrete(warmup_steps)
    if c_w is not None and (c_w.shape != () or c_w < 0):
        raise ValueError(f"warmup_steps must be a scalar >= 0, got {warmup_steps!r}.")


def reward_normalizer_normalize(state: RewardNormalizerState, reward: Array, *, clip=10.0,
                                eps=1e-8) -> Array:
    """Normalize rewards with the current statistics, without updating anything (evaluation).

    ``clip(reward / sqrt(var(returns) + eps), -clip, clip)``; no mean subtraction.

    Args:
      state: :class:`RewardNormalizerState`.
      reward: ``[num_envs]`` (or any shape) float rewards.
      clip: clip bound ``> 0`` (``inf`` allowed); may be traced.
      eps: added to the variance, ``>= 0``; may be traced.

    Returns:
      normalized rewards, same shape, the state's dtype.
    """
    _check_reward_hparams(0.0, clip, eps)
    dtype = state.returns.dtype
    reward = jnp.asarray(reward).astype(dtype)
    scale = jnp.sqrt(running_stats_var(state.ret_stats) + jnp.asarray(eps).astype(dtype))
    c = jnp.asarray(clip).astype(dtype)
    return jnp.clip(reward / scale, -c, c)


def reward_normalizer_update(state: RewardNormalizerState, reward: Array, done: Array, *,
                             gamma, clip=10.0, eps=1e-8,
                             warmup_steps=0) -> tuple[Array, RewardNormalizerState]:
    """One VecNormalize reward step: update the return statistics, then normalize.

    In Stable-Baselines3's order (``VecNormalize.step_wait``)::

        returns = returns * gamma + reward          # per environment
        ret_stats.update(returns)                   # batch over environments (Chan merge)
        normalized = clip(reward / sqrt(ret_stats.var + eps), -clip, clip)   # no mean removal
        returns[done] = 0                           # episode end

    ``done`` is SB3's done: the episode ended for any reason (terminated or truncated), since
    the accumulator is per episode. During the first ``warmup_steps`` updates the raw reward is
    returned (statistics still update), the seed's "warm-up".

    Non-finite rewards (NaN/Inf) are left out of the statistics (they enter the per-environment
    return accumulator as 0) but are passed through non-finite in the output, so a learner's
    non-finite guard still sees them; without this one NaN reward would poison the variance
    estimate, and with it every later normalized reward, for the rest of the run.

    Args:
      state: :class:`RewardNormalizerState` from :func:`reward_normalizer_init`.
      reward: ``[num_envs]`` float rewards of this step.
      done: ``[num_envs]`` bool (or 0/1) episode-end flags of this step.
      gamma: discount in ``[0, 1]`` (may be traced).
      clip: clip bound ``> 0`` (may be traced).
      eps: variance epsilon ``>= 0`` (may be traced).
      warmup_steps: number of initial updates that pass rewards through unnormalized (int,
        may be traced).

    Returns:
      ``(normalized_reward [num_envs], new_state)``; dtypes follow the state.

    Raises:
      ValueError: shape mismatch or out-of-range concrete hyperparameters.

    Reference: Stable-Baselines3 ``VecNormalize`` (``_update_reward``, ``normalize_reward``).

    Example:
      >>> s = reward_normalizer_init(2)
      >>> r, s = reward_normalizer_update(s, jnp.array([1.0, 2.0]), jnp.array([False, True]),
      ...                                 gamma=0.99)
      >>> r.shape, s.returns.tolist()
      ((2,), [1.0, 0.0])
    """
    _check_reward_hparams(gamma, clip, eps)
    _check_warmup(warmup_steps)
    dtype = state.returns.dtype
    num_envs = state.returns.shape[0]
    reward = jnp.asarray(reward)
    done = jnp.asarray(done)
    if reward.shape != (num_envs,):
        raise ValueError(f"reward must have shape ({num_envs},) (num_envs), got {reward.shape}.")
    if done.shape != (num_envs,):
        raise ValueError(f"done must have shape ({num_envs},) (num_envs), got {done.shape}.")
    if not (jnp.issubdtype(reward.dtype, jnp.floating) or jnp.issubdtype(reward.dtype,
                                                                          jnp.integer)):
        raise TypeError(f"reward must be numeric, got dtype {reward.dtype}.")
    reward = reward.astype(dtype)
    done = done.astype(jnp.bool_)
    g = jnp.asarray(gamma).astype(dtype)

    # A non-finite reward must not poison the running statistics for the rest of the run: it
    # enters the return accumulator as 0 and still comes out non-finite below, so the learner's
    # own non-finite guards see it.
    returns = state.returns * g + jnp.where(jnp.isfinite(reward), reward, jnp.zeros_like(reward))
    ret_stats = running_stats_update(state.ret_stats, returns)
    new_state = RewardNormalizerState(returns=returns, ret_stats=ret_stats,
                                      step=state.step + jnp.ones((), jnp.int32))
    normalized = reward_normalizer_normalize(new_state, reward, clip=clip, eps=eps)
    in_warmup = state.step < jnp.asarray(warmup_steps).astype(jnp.int32)
    normalized = jnp.where(in_warmup | ~jnp.isfinite(reward), reward, normalized)
    new_state = new_state._replace(returns=jnp.where(done, jnp.zeros_like(returns), returns))
    return normalized, new_state


def reward_normalizer_update_rollout(state: RewardNormalizerState, rewards: Array, dones: Array,
                                     *, gamma, clip=10.0, eps=1e-8,
                                     warmup_steps=0) -> tuple[Array, RewardNormalizerState]:
    """``T`` steps of :func:`reward_normalizer_update` at once, in log depth instead of a loop.

    The same mathematics as scanning :func:`reward_normalizer_update` over the rows of
    ``rewards``/``dones`` (the step-``t`` reward is normalized with the statistics of every
    return up to and including step ``t``), computed with two parallel prefix scans
    (``jax.lax.associative_scan``): the return accumulator ``R_t = a_t R_{t-1} + r_t`` (an affine
    recurrence, ``a_t = gamma`` or 0 after an episode end) and the running statistics (Chan's
    merge, :func:`running_stats_merge`, is associative). Results agree with the sequential
    updates to rounding (the operations are grouped differently; ``tests/test_normalization.py``
    compares them in float64 and float32). Use it when the rewards of a whole rollout are known
    before they are needed, e.g. after collecting a PPO rollout: on a CPU it replaces ``T``
    sequential steps of ~15 tiny operations each.

    Args:
      state: :class:`RewardNormalizerState`.
      rewards: ``[T, num_envs]`` float rewards, step by step.
      dones: ``[T, num_envs]`` bool episode-end flags.
      gamma, clip, eps, warmup_steps: as :func:`reward_normalizer_update` (``warmup_steps``
        counts single steps, so a warm-up may end inside the rollout).

    Returns:
      ``(normalized [T, num_envs], new_state)``.

    Raises:
      ValueError: shape mismatch or out-of-range concrete hyperparameters.
    """
    _check_reward_hparams(gamma, clip, eps)
    _check_warmup(warmup_steps)
    dtype = state.returns.dtype
    num_envs = state.returns.shape[0]
    rewards = jnp.asarray(rewards)
    dones = jnp.asarray(dones)
    if rewards.ndim != 2 or rewards.shape[1] != num_envs or rewards.shape[0] < 1:
        raise ValueError(f"rewards must have shape (T, {num_envs}) with T >= 1, got "
                         f"{rewards.shape}.")
    if dones.shape != rewards.shape:
        raise ValueError(f"dones must have the shape of rewards {rewards.shape}, got "
                         f"{dones.shape}.")
    if not (jnp.issubdtype(rewards.dtype, jnp.floating)
            or jnp.issubdtype(rewards.dtype, jnp.integer)):
        raise TypeError(f"rewards must be numeric, got dtype {rewards.dtype}.")
    t_len = rewards.shape[0]
    rewards = rewards.astype(dtype)
    dones = dones.astype(jnp.bool_)
    g = jnp.asarray(gamma).astype(dtype)
    finite = jnp.isfinite(rewards)
    r = jnp.where(finite, rewards, jnp.zeros_like(rewards))

    # R_t = a_t R_{t-1} + r_t with a_0 = gamma (state.returns is already reset) and
    # a_t = gamma * (1 - done_{t-1}): compose the affine maps x -> a x + b in a prefix scan.
    keep = jnp.concatenate([jnp.ones((1, num_envs), jnp.bool_), ~dones[:-1]], axis=0)
    a = jnp.where(keep, g, jnp.zeros_like(r))

    def affine(first, second):  # apply first, then second
        a1, b1 = first
        a2, b2 = second
        return a1 * a2, b1 * a2 + b2

    a_cum, b_cum = jax.lax.associative_scan(affine, (a, r))
    returns = a_cum * state.returns[None, :] + b_cum  # [T, N]

    # Running statistics after each step: the state merged with the prefix merge of the
    # per-step batch statistics (every step adds num_envs samples).
    b_mean = jnp.mean(returns, axis=1)
    dev = returns - b_mean[:, None]
    batch = RunningStats(count=jnp.full((t_len,), num_envs, dtype), mean=b_mean,
                         m2=jnp.sum(dev * dev, axis=1))
    prefix = jax.lax.associative_scan(running_stats_merge, batch)
    s0 = state.ret_stats
    stats = running_stats_merge(
        RunningStats(*(jnp.broadcast_to(x, (t_len,)) for x in s0)), prefix)

    scale = jnp.sqrt(running_stats_var(stats) + jnp.asarray(eps).astype(dtype))  # [T]
    c = jnp.asarray(clip).astype(dtype)
    normalized = jnp.clip(rewards / scale[:, None], -c, c)
    step = state.step + jnp.arange(t_len, dtype=jnp.int32)
    in_warmup = step < jnp.asarray(warmup_steps).astype(jnp.int32)
    normalized = jnp.where(in_warmup[:, None] | ~finite, rewards, normalized)
    last = RunningStats(*(x[-1] for x in stats))
    new_state = RewardNormalizerState(
        returns=jnp.where(dones[-1], jnp.zeros_like(returns[-1]), returns[-1]),
        ret_stats=last, step=state.step + jnp.asarray(t_len, jnp.int32))
    return normalized, new_state


# ----------------------------------------------------------------------------------------------
# windowed statistics (ring buffer)
# ----------------------------------------------------------------------------------------------
class WindowedStats(NamedTuple):
    """Ring buffer holding the last ``W`` observations.

    Attributes:
      buffer: ``[W, *shape]`` float, the stored observations (slots beyond ``count`` unused).
      index: 0-d int32, slot the next observation goes to.
      count: 0-d int32, number of valid entries (``<= W``).
    """

    buffer: Array
    index: Array
    count: Array


def windowed_stats_init(window: int, shape: Sequence[int] | int = (),
                        dtype=jnp.float32) -> WindowedStats:
    """Empty ring buffer for statistics over the last ``window`` observations.

    Args:
      window: buffer length ``W`` (positive Python int; static).
      shape: shape of one observation.
      dtype: floating dtype.

    Returns:
      :class:`WindowedStats` with a zero ``[W, *shape]`` buffer.

    Raises:
      ValueError: if ``window < 1``.

    Example:
      >>> w = windowed_stats_update(windowed_stats_init(3), jnp.arange(5.0))
      >>> float(windowed_stats_mean(w))  # last three: 2, 3, 4
      3.0
    """
    if isinstance(window, bool) or not isinstance(window, numbers.Integral) or window < 1:
        raise ValueError(f"window must be a positive Python int, got {window!r}.")
    shape = _check_shape(shape)
    dtype = _check_float_dtype(dtype)
    return WindowedStats(buffer=jnp.zeros((int(window),) + shape, dtype),
                         index=jnp.zeros((), jnp.int32), count=jnp.zeros((), jnp.int32))


def windowed_stats_update(state: WindowedStats, values: Array) -> WindowedStats:
    """Append ``K`` observations in order (oldest first), overwriting the oldest entries.

    Args:
      state: :class:`WindowedStats`.
      values: ``[K, *shape]`` observations (``K`` static, any ``K >= 0``; when ``K > W`` only
        the last ``W`` are kept). A single observation is ``values[None]``.

    Returns:
      the updated :class:`WindowedStats`.

    Raises:
      ValueError: if ``values.shape[1:]`` differs from the observation shape.
    """
    values = jnp.asarray(values)
    w = state.buffer.shape[0]
    obs_shape = state.buffer.shape[1:]
    if values.ndim != len(obs_shape) + 1 or values.shape[1:] != obs_shape:
        raise ValueError(f"values must have shape [K, *{obs_shape}], got {values.shape}.")
    k = values.shape[0]
    if k == 0:
        return state
    if k > w:
        skipped = k - w
        values = values[skipped:]
        start = (state.index + jnp.asarray(skipped % w, jnp.int32)) % w
        k = w
    else:
        start = state.index
    idx = (start + jnp.arange(k, dtype=jnp.int32)) % w
    buffer = state.buffer.at[idx].set(values.astype(state.buffer.dtype))
    return WindowedStats(buffer=buffer, index=(start + k) % w,
                         count=jnp.minimum(state.count + k, w).astype(jnp.int32))


def _window_mask(state: WindowedStats) -> Array:
    w = state.buffer.shape[0]
    # valid slots: the `count` most recently written ones. Before the buffer wraps they are
    # 0..count-1; once full, all slots are valid.
    valid = jnp.arange(w, dtype=jnp.int32) < state.count
    return jnp.reshape(valid, (w,) + (1,) * (state.buffer.ndim - 1))


def windowed_stats_mean(state: WindowedStats) -> Array:
    """Mean of the valid entries (``[*shape]``; 0 when empty)."""
    mask = _window_mask(state)
    n = jnp.maximum(state.count, 1).astype(state.buffer.dtype)
    return jnp.sum(jnp.where(mask, state.buffer, jnp.zeros_like(state.buffer)), axis=0) / n


def windowed_stats_var(state: WindowedStats, ddof: int = 0) -> Array:
    """Variance of the valid entries, two-pass (``[*shape]``; 0 when ``count <= ddof``).

    Args:
      state: :class:`WindowedStats`.
      ddof: 0 (population variance) or 1.
    """
    if ddof not in (0, 1):
        raise ValueError(f"ddof must be 0 or 1, got {ddof!r}.")
    mask = _window_mask(state)
    mean = windowed_stats_mean(state)
    dev = jnp.where(mask, state.buffer - mean[None], jnp.zeros_like(state.buffer))
    denom = state.count - ddof
    safe = jnp.maximum(denom, 1).astype(state.buffer.dtype)
    return jnp.where(denom > 0, jnp.sum(dev * dev, axis=0) / safe, jnp.zeros_like(mean))


def windowed_stats_std(state: WindowedStats, ddof: int = 0) -> Array:
    """Standard deviation of the valid entries."""
    return jnp.sqrt(windowed_stats_var(state, ddof))


def windowed_stats_normalize(state: WindowedStats, x: Array, *, eps=1e-8, clip=None) -> Array:
    """The seed's windowed reward normalization ``clip((x - mean) / (std + eps), -clip, clip)``.

    Mean and (population) std are those of the last ``W`` entries in ``state``. Unlike
    :func:`reward_normalizer_update` (SB3 VecNormalize) this subtracts the mean, which changes
    the sign of rewards and hence the optimal policy of a task with episode-length-dependent
    returns; it is offered for reproducing seed 001. Update the state with
    :func:`windowed_stats_update` before or after, as the caller's protocol requires.

    Args:
      state: :class:`WindowedStats` with observation shape ``[*shape]``.
      x: ``[..., *shape]`` values to normalize (cast to the state's dtype).
      eps: added to the std, ``>= 0`` (may be traced).
      clip: optional bound ``> 0`` (may be traced); ``None`` for no clipping.

    Returns:
      normalized ``x`` with the same shape, the state's dtype.

    Example:
      >>> w = windowed_stats_update(windowed_stats_init(4), jnp.array([1.0, 3.0]))
      >>> windowed_stats_normalize(w, jnp.array([2.0, 4.0]), eps=0.0)
      Array([0., 2.], dtype=float32)
    """
    _check_reward_hparams(0.0, 1.0 if clip is None else clip, eps)
    dtype = state.buffer.dtype
    x = jnp.asarray(x).astype(dtype)
    obs_shape = state.buffer.shape[1:]
    if x.shape[x.ndim - len(obs_shape):] != obs_shape or x.ndim < len(obs_shape):
        raise ValueError(f"x must have shape [..., *{obs_shape}], got {x.shape}.")
    lead = (1,) * (x.ndim - len(obs_shape))
    mean = jnp.reshape(windowed_stats_mean(state), lead + obs_shape)
    std = jnp.reshape(windowed_stats_std(state), lead + obs_shape)
    out = (x - mean) / (std + jnp.asarray(eps).astype(dtype))
    if clip is not None:
        c = jnp.asarray(clip).astype(dtype)
        out = jnp.clip(out, -c, c)
    return out
