"""A vmapped multi-seed PPO-shaped training program (regression program for the CPU guard).

Shape of PureJaxRL's PPO (orthogonal init included): rollout scan over vectorized gymnax CartPole envs, GAE reverse scan,
epochs x shuffled minibatches with Adam and global-norm clipping, the whole thing under
``jax.jit(jax.vmap(train))``. Prints "finished" and the XLA_FLAGS in force.

Usage: python tests/_vmapped_program.py --seeds 2 --steps 100000
"""

import argparse
import os
import time

import jaxstab  # noqa: F401  (applies the CPU scheduler guard unless the user opted out)

import flax.linen as nn
import gymnax
import jax
import jax.numpy as jnp
import numpy as np
import optax


class _Net(nn.Module):
    """PureJaxRL-style actor-critic with flax's (LAPACK QR) orthogonal init."""

    @nn.compact
    def __call__(self, x):
        ortho = nn.initializers.orthogonal
        h = nn.tanh(nn.Dense(64, kernel_init=ortho(np.sqrt(2)))(x))
        h = nn.tanh(nn.Dense(64, kernel_init=ortho(np.sqrt(2)))(h))
        return nn.Dense(2, kernel_init=ortho(0.01))(h), nn.Dense(1, kernel_init=ortho(1.0))(h)[..., 0]


def make_train(total_steps: int, num_envs: int = 4, num_steps: int = 128, num_minibatches: int = 4):
    env, env_params = gymnax.make("CartPole-v1")
    net = _Net()
    tx = optax.chain(optax.clip_by_global_norm(0.5), optax.adam(2.5e-4, eps=1e-5))
    num_updates = total_steps // (num_envs * num_steps)

    def train(key):
        key, k_init, k_reset = jax.random.split(key, 3)
        params = net.init(k_init, jnp.zeros((4,)))
        opt_state = tx.init(params)
        obs, env_state = jax.vmap(env.reset, (0, None))(jax.random.split(k_reset, num_envs), env_params)

        def update(carry, _):
            params, opt_state, obs, env_state, key = carry

            def step(c, _):
                obs, env_state, key = c
                key, k_act, k_step = jax.random.split(key, 3)
                logits, _ = net.apply(params, obs)
                action = jax.random.categorical(k_act, logits)
                out = jax.vmap(env.step, (0, 0, 0, None))(jax.random.split(k_step, num_envs), env_state,
                                                          action, env_params)
                return (out[0], out[1], key), (obs, action, out[2], out[3].astype(jnp.float32))

            (obs, env_state, key), (o, a, r, done) = jax.lax.scan(step, (obs, env_state, key), None, num_steps)
            _, v_last = net.apply(params, obs)
            _, v = net.apply(params, o)

            def gae(c, x):
                g, v_next = c
                rew, d, val = x
                delta = rew + 0.99 * v_next * (1 - d) - val
                g = delta + 0.99 * 0.95 * (1 - d) * g
                return (g, val), g

            _, adv = jax.lax.scan(gae, (jnp.zeros_like(v_last), v_last), (r, done, v), reverse=True)
            ret = adv + v

            def loss(p, o, a, adv, ret):
                logits, val = net.apply(p, o)
                logp = jnp.take_along_axis(jax.nn.log_softmax(logits), a[..., None], -1)[..., 0]
                adv = (adv - adv.mean()) / (adv.std() + 1e-8)
                return -(logp * adv).mean() + 0.5 * ((val - ret) ** 2).mean()

            def epoch(c, _):
                params, opt_state, key = c
                key, k_perm = jax.random.split(key)
                perm = jax.random.permutation(k_perm, num_envs * num_steps)
                batches = jax.tree_util.tree_map(
                    lambda x: x.reshape((-1,) + x.shape[2:])[perm].reshape((num_minibatches, -1) + x.shape[2:]),
                    (o, a, adv, ret))

                def minibatch(c, b):
                    params, opt_state = c
                    l, g = jax.value_and_grad(loss)(params, *b)
                    upd, opt_state = tx.update(g, opt_state, params)
                    return (optax.apply_updates(params, upd), opt_state), l

                (params, opt_state), l = jax.lax.scan(minibatch, (params, opt_state), batches)
                return (params, opt_state, key), l.mean()

            (params, opt_state, key), losses = jax.lax.scan(epoch, (params, opt_state, key), None, 4)
            return (params, opt_state, obs, env_state, key), losses.mean()

        _, losses = jax.lax.scan(update, (params, opt_state, obs, env_state, key), None, num_updates)
        return losses

    return train


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--seeds", type=int, default=2)
    parser.add_argument("--steps", type=int, default=100_000)
    args = parser.parse_args()
    t0 = time.perf_counter()
    train = jax.jit(jax.vmap(make_train(args.steps)))
    losses = jax.block_until_ready(train(jax.random.split(jax.random.key(0), args.seeds)))
    assert bool(jnp.all(jnp.isfinite(losses)))
    print(f"finished in {time.perf_counter() - t0:.1f}s, losses {losses.shape}; "
          f"XLA_FLAGS={os.environ.get('XLA_FLAGS', '')}", flush=True)


if __name__ == "__main__":
    main()
