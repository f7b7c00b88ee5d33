"""Tests of the chunked training driver (jaxstab.training.loop).

A toy runner (a random-walk recurrence with a NumPy reference) covers the driver itself;
a real PPO run is SIGKILLed in a subprocess and resumed from its orbax checkpoint.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from _jaxpr_tools import dot_batch_sizes

from jaxstab.training import loop

REPO = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
WORKER = os.path.join(REPO, "tests", "_train_worker.py")
STEPS_PER_CHUNK = 3


def _toy_runner(num_chunks: int = 4) -> loop.Runner:
    """x_t = decay * x_{t-1} + N(fold_in(key, t)), t = 0, 1, ...; 3 steps per chunk."""

    def init(key, hp):
        del hp
        return {"x": jnp.zeros((), jnp.float32), "key": key, "t": jnp.zeros((), jnp.int32)}

    def run_chunk(c, hp, chunk_index):
        def step(c, _):
            x = c["x"] * hp["decay"] + jax.random.normal(jax.random.fold_in(c["key"], c["t"]))
            return {"x": x, "key": c["key"], "t": c["t"] + 1}, x

        c, xs = jax.lax.scan(step, c, None, length=STEPS_PER_CHUNK)
        return c, {"x": xs, "chunk": jnp.full((STEPS_PER_CHUNK,), chunk_index, jnp.int32)}

    def finalize(c, out):
        return c["x"], jnp.reshape(out["x"], (-1,))

    return loop.Runner(init, run_chunk, num_chunks, finalize)


_TOY = _toy_runner()


def _reference(key, decay: float, steps: int) -> np.ndarray:
    x, xs = 0.0, []
    for t in range(steps):
        x = decay * x + float(jax.random.normal(jax.random.fold_in(key, t)))
        xs.append(x)
    return np.array(xs)


def _inputs(decays=(0.5, 0.9)):
    keys = jax.random.split(jax.random.key(0), len(decays))
    return keys, {"decay": jnp.asarray(decays, jnp.float32)}


def test_run_matches_numpy_reference_and_scan():
    keys, hp = _inputs()
    seen = []
    carry, out = loop.run(_TOY, keys, hp, progress=False,
                          on_chunk=lambda i, o: seen.append((i, np.array(o["x"]))))
    n = _TOY.num_chunks * STEPS_PER_CHUNK
    assert out["x"].shape == (2, _TOY.num_chunks, STEPS_PER_CHUNK)
    for s, d in enumerate((0.5, 0.9)):
        ref = _reference(keys[s], d, n)
        np.testing.assert_allclose(out["x"][s].reshape(-1), ref, rtol=1e-5, atol=1e-6)
        np.testing.assert_allclose(carry["x"][s], ref[-1], rtol=1e-5, atol=1e-6)
    # the chunk index reaches run_chunk; on_chunk sees each chunk once, in order, [S, ...]
    np.testing.assert_array_equal(out["chunk"][:, :, 0], [[0, 1, 2, 3]] * 2)
    assert [i for i, _ in seen] == [0, 1, 2, 3]
    np.testing.assert_array_equal(np.stack([x for _, x in seen], 1), out["x"])
    # finalize per seed == vmap(scan_chunks): the whole run as one program
    last, xs = loop.finalize(_TOY, carry, out)
    last_s, xs_s = jax.jit(jax.vmap(lambda k, h: loop.scan_chunks(_TOY, k, h)))(keys, hp)
    np.testing.assert_allclose(xs, xs_s, rtol=1e-6, atol=1e-6)
    np.testing.assert_allclose(last, last_s, rtol=1e-6, atol=1e-6)


def test_progress_line_and_formatter(capsys):
    keys, hp = _inputs()
    loop.run(_TOY, keys, hp)
    err = capsys.readouterr().err
    assert "chunk 4/4" in err and "eta" in err and "elapsed" in err
    loop.run(_TOY, keys, hp, progress=lambda i, o: f"custom{i}:{o['x'].shape}")
    err = capsys.readouterr().err
    assert "custom3:(2, 3)" in err and "chunk 4/4" in err
    loop.run(_TOY, keys, hp, progress=False)
    assert capsys.readouterr().err == ""


def test_default_metrics_text_is_seed_mean_of_last_value():
    out = {"episode_return": np.array([[1.0, 10.0], [3.0, 20.0]]), "other": np.zeros((2, 2))}
    assert loop._default_metrics(0, out) == "episode_return 15"


class _Crash(RuntimeError):
    pass


def test_crash_and_resume_in_process_equals_uninterrupted(tmp_path):
    keys, hp = _inputs()
    ref_carry, ref_out = loop.run(_TOY, keys, hp, progress=False)
    d = tmp_path / "ckpt"

    def crash_at_2(i, o):
        if i == 2:
            raise _Crash  # raised after chunk 2 ran, before its checkpoint is written

    with pytest.raises(_Crash):
        loop.run(_TOY, keys, hp, checkpoint_dir=d, save_every=1, progress=False,
                 on_chunk=crash_at_2, metadata={"name": "toy"})
    assert sorted(int(p) for p in os.listdir(d) if p.isdigit()) == [1, 2]
    seen = []
    carry, out = loop.run(_TOY, keys, hp, checkpoint_dir=d, resume=True, progress=False,
                          on_chunk=lambda i, o: seen.append(i), metadata={"name": "toy"})
    assert seen == [2, 3]  # resumed after 2 complete chunks
    for a, b in zip(jax.tree_util.tree_leaves((carry, out)),
                    jax.tree_util.tree_leaves((ref_carry, ref_out))):
        if jnp.issubdtype(a.dtype, jax.dtypes.prng_key):
            a, b = jax.random.key_data(a), jax.random.key_data(b)
        np.testing.assert_array_equal(np.asarray(a), np.asarray(b))
    # keep=3 latest steps; a finished run resumes to itself without running a chunk
    assert sorted(int(p) for p in os.listdir(d) if p.isdigit()) == [2, 3, 4]
    seen.clear()
    carry2, _ = loop.run(_TOY, keys, hp, checkpoint_dir=d, resume=True, progress=False,
                         on_chunk=lambda i, o: seen.append(i), metadata={"name": "toy"})
    assert seen == []
    np.testing.assert_array_equal(carry2["x"], ref_carry["x"])
    # save_every=3 with 4 chunks: steps 3 and 4 (the last chunk is always saved)
    d2 = tmp_path / "every3"
    loop.run(_TOY, keys, hp, checkpoint_dir=d2, save_every=3, keep=None, progress=False)
    assert sorted(int(p) for p in os.listdir(d2) if p.isdigit()) == [3, 4]
    desc = json.loads((d2 / loop.RUN_FILE).read_text())
    assert desc["num_chunks"] == 4 and desc["num_seeds"] == 2


def test_resume_into_a_different_run_is_refused(tmp_path):
    keys, hp = _inputs()
    d = tmp_path / "ckpt"
    loop.run(_TOY, keys, hp, checkpoint_dir=d, progress=False, metadata={"lr": 1e-3})
    with pytest.raises(FileExistsError, match="resume=True"):
        loop.run(_TOY, keys, hp, checkpoint_dir=d, progress=False, metadata={"lr": 1e-3})
    with pytest.raises(ValueError, match=r"metadata\['lr'\]"):
        loop.run(_TOY, keys, hp, checkpoint_dir=d, resume=True, progress=False,
                 metadata={"lr": 3e-4})
    with pytest.raises(ValueError, match="hparams differ"):
        loop.run(_TOY, keys, {"decay": jnp.asarray([0.5, 0.8], jnp.float32)},
                 checkpoint_dir=d, resume=True, progress=False, metadata={"lr": 1e-3})
    k3, hp3 = _inputs((0.5, 0.9, 0.1))
    with pytest.raises(ValueError, match="num_seeds"):
        loop.run(_TOY, k3, hp3, checkpoint_dir=d, resume=True, progress=False,
                 metadata={"lr": 1e-3})
    with pytest.raises(ValueError, match="keys_sha256"):
        loop.run(_TOY, jax.random.split(jax.random.key(1), 2), hp, checkpoint_dir=d,
                 resume=True, progress=False, metadata={"lr": 1e-3})
    with pytest.raises(ValueError, match="num_chunks"):
        loop.run(_toy_runner(5), keys, hp, checkpoint_dir=d, resume=True, progress=False,
                 metadata={"lr": 1e-3})


def test_argument_errors():
    keys, hp = _inputs()
    with pytest.raises(TypeError, match="runner"):
        loop.run((_TOY.init, _TOY.run_chunk, 4, _TOY.finalize), keys, hp)
    with pytest.raises(ValueError, match="num_chunks"):
        loop.run(_TOY._replace(num_chunks=0), keys, hp)
    with pytest.raises(ValueError, match="leading seed axis"):
        loop.run(_TOY, keys, {"decay": jnp.float32(0.5)})
    with pytest.raises(ValueError, match="save_every"):
        loop.run(_TOY, keys, hp, save_every=0)
    with pytest.raises(ValueError, match="keep"):
        loop.run(_TOY, keys, hp, keep=0)
    with pytest.raises(ValueError, match="keys"):
        loop.run(_TOY, jax.random.key(0), hp)
    b = loop.broadcast_hparams({"decay": 0.5}, 2)
    assert b["decay"].shape == (2,)


# ---------------------------------------------------------------- real crash (SIGKILL)
def _env(cache_env: dict[str, str]):
    env = dict(os.environ)
    env["PYTHONPATH"] = REPO + os.pathsep + env.get("PYTHONPATH", "")
    env.update(cache_env)  # the resumed worker loads the first worker's compiled program
    return env


@pytest.mark.slow
@pytest.mark.timeout(1200)
def test_sigkilled_ppo_run_resumes_to_the_uninterrupted_result(tmp_path, compile_cache_env):
    """A PPO CartPole run (2 seeds, 6 chunks, rollback + reward norm, checkpoint per chunk) is
    SIGKILLed after its third chunk (two checkpoints on disk), resumed in a new process and
    must end with the final carry (parameters, optimizer, env, normalizer and rollback states,
    PRNG keys) and all metrics *bitwise* equal to an uninterrupted run of the same chunked
    program in this process."""
    sys.path.insert(0, os.path.join(REPO, "tests"))
    try:
        import _train_worker as W
    finally:
        sys.path.pop(0)
    d, out = tmp_path / "ckpt", tmp_path / "final.npz"
    # the worker pauses 30 s after chunk 2 only (checkpoints of chunks 0 and 1 are on disk)
    cmd = [sys.executable, WORKER, "--dir", str(d), "--out", str(out), "--sleep", "30",
           "--pause-at", "2"]
    p = subprocess.Popen(cmd, cwd=REPO, env=_env(compile_cache_env),
                         stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True)
    lines = []
    try:
        for line in p.stdout:  # blocks until the worker prints
            lines.append(line.strip())
            if line.strip() == "chunk 2":  # chunks 0 and 1 are saved; it now sleeps 30 s
                os.kill(p.pid, signal.SIGKILL)
                break
    finally:
        if p.poll() is None:
            try:
                p.wait(timeout=60)
            except subprocess.TimeoutExpired:
                os.kill(p.pid, signal.SIGKILL)
                p.wait()
    assert p.returncode == -signal.SIGKILL, (p.returncode, lines)
    assert not out.exists()
    steps = sorted(int(x) for x in os.listdir(d) if x.isdigit())
    assert steps == [1, 2], steps

    r = subprocess.run(cmd[:-4] + ["--sleep", "0", "--resume"], cwd=REPO,
                       env=_env(compile_cache_env), capture_output=True, text=True, timeout=900)
    assert r.returncode == 0, r.stderr[-3000:]
    got = r.stdout.split()
    assert got[:2] == ["start", "2"] and "chunk 0" not in r.stdout and "done" in got, r.stdout

    runner, keys, hp = W.setup()
    ref = W.flat_arrays(*loop.run(runner, keys, hp, progress=False))
    with np.load(out) as f:
        assert sorted(f.files) == sorted(ref)
        for name in ref:
            np.testing.assert_array_equal(f[name], ref[name], err_msg=name)


# ----------------------------------------------------------------------------- map_seeds
def _mlp_seed_fn(params, x, scale):
    """One seed: a 2-layer tanh MLP applied to x, plus a per-seed scan (a loop in the body)."""
    h = jnp.tanh(x @ params["w1"])
    y = h @ params["w2"] * scale

    def step(c, _):
        return c * 0.5 + jnp.sum(y), c

    last, trace = jax.lax.scan(step, jnp.zeros((), jnp.float32), None, length=4)
    return {"y": y, "last": last, "trace": trace}


@pytest.mark.parametrize("seeds_per_batch", [1, 2, 3, 5, 8])
def test_map_seeds_equals_vmap_and_a_loop_of_single_seeds(seeds_per_batch):
    s = 5  # 2 and 3 do not divide it: the remainder group is covered
    k1, k2, k3 = jax.random.split(jax.random.key(1), 3)
    params = {"w1": jax.random.normal(k1, (s, 6, 16)), "w2": jax.random.normal(k2, (s, 16, 3))}
    x = jax.random.normal(k3, (7, 6))  # shared by every seed (in_axes None)
    scale = jnp.arange(1, s + 1, dtype=jnp.float32)
    ref = jax.jit(jax.vmap(_mlp_seed_fn, in_axes=(0, None, 0)))(params, x, scale)
    got = jax.jit(loop.map_seeds(_mlp_seed_fn, seeds_per_batch=seeds_per_batch,
                                 in_axes=(0, None, 0)))(params, x, scale)
    assert jax.tree_util.tree_structure(got) == jax.tree_util.tree_structure(ref)
    for k in ref:
        assert got[k].shape == ref[k].shape and got[k].dtype == ref[k].dtype, k
        np.testing.assert_allclose(np.asarray(got[k]), np.asarray(ref[k]), rtol=1e-5,
                                   atol=1e-5, err_msg=k)
    # and each seed equals the function applied to that seed alone
    for i in range(s):
        one = _mlp_seed_fn(jax.tree_util.tree_map(lambda a: a[i], params), x, scale[i])
        np.testing.assert_allclose(np.asarray(got["y"][i]), np.asarray(one["y"]), rtol=1e-5,
                                   atol=1e-5)
    # None is exactly jax.vmap
    same = jax.jit(loop.map_seeds(_mlp_seed_fn, in_axes=(0, None, 0)))(params, x, scale)
    for k in ref:
        np.testing.assert_array_equal(np.asarray(same[k]), np.asarray(ref[k]))


def test_with_seed_layout_loop_and_vectorize(monkeypatch):
    """``jax.vmap`` of a ``with_seed_layout`` function: "loop" has no product batched over the
    seeds (only groups of 1) and equals single-seed calls; "vectorize" batches them; "auto"
    follows the backend; in_axes None, nested vmaps and map_seeds' groups work."""
    s = 7  # no other axis of the toy has this size
    k1, k2, k3 = jax.random.split(jax.random.key(2), 3)
    params = {"w1": jax.random.normal(k1, (s, 6, 16)), "w2": jax.random.normal(k2, (s, 16, 3))}
    x = jax.random.normal(k3, (s, 5, 6))
    scale = jnp.arange(1, s + 1, dtype=jnp.float32)
    ref = jax.jit(jax.vmap(_mlp_seed_fn))(params, x, scale)
    layouts = {}
    for mode in loop.SEED_VMAP_MODES:
        fn = loop.with_seed_layout(_mlp_seed_fn, mode)
        assert fn.vectorized is _mlp_seed_fn and fn.seed_vmap == mode
        jaxpr = jax.make_jaxpr(jax.vmap(fn))(params, x, scale).jaxpr
        layouts[mode] = dot_batch_sizes(jaxpr)
        got = jax.jit(jax.vmap(fn))(params, x, scale)
        for k in ref:
            assert got[k].shape == ref[k].shape, k
            np.testing.assert_allclose(np.asarray(got[k]), np.asarray(ref[k]), rtol=1e-5,
                                       atol=1e-5, err_msg=f"{mode} {k}")
    assert (s,) in layouts["vectorize"]
    assert layouts["loop"] and all(b in ((), (1,)) for b in layouts["loop"]), layouts["loop"]
    expected_auto = "loop" if jax.default_backend() == "cpu" else "vectorize"
    assert layouts["auto"] == layouts[expected_auto]
    assert loop.resolve_seed_vmap("auto", backend="cpu") == "loop"
    assert loop.resolve_seed_vmap("auto", backend="gpu") == "vectorize"
    fn = loop.with_seed_layout(_mlp_seed_fn, "loop")
    # an argument shared by every seed (in_axes None) stays unbatched inside the rule
    shared = jax.jit(jax.vmap(fn, in_axes=(0, None, 0)))(params, x[0], scale)
    ref_shared = jax.vmap(_mlp_seed_fn, in_axes=(0, None, 0))(params, x[0], scale)
    np.testing.assert_allclose(np.asarray(shared["y"]), np.asarray(ref_shared["y"]), rtol=1e-5,
                               atol=1e-5)
    # nested vmaps (e.g. seeds x hyperparameters): same values
    nest = lambda t: jax.tree_util.tree_map(lambda a: a[:6].reshape((2, 3) + a.shape[1:]), t)  # noqa: E731
    nested = jax.jit(jax.vmap(jax.vmap(fn)))(nest(params), nest(x), nest(scale))
    np.testing.assert_allclose(np.asarray(nested["y"]).reshape(ref["y"][:6].shape),
                               np.asarray(ref["y"][:6]), rtol=1e-5, atol=1e-5)
    # keyword arguments reach the rule by position
    kw = jax.jit(jax.vmap(lambda p, xx, sc: fn(p, x=xx, scale=sc)))(params, x, scale)
    np.testing.assert_allclose(np.asarray(kw["y"]), np.asarray(ref["y"]), rtol=1e-5, atol=1e-5)
    # "auto" decides when the vmap is traced: on another backend the rule vectorizes
    auto = loop.with_seed_layout(_mlp_seed_fn, "auto")
    monkeypatch.setattr(jax, "default_backend", lambda: "gpu")
    on_gpu = dot_batch_sizes(jax.make_jaxpr(jax.vmap(auto))(params, x, scale).jaxpr)
    monkeypatch.undo()
    assert on_gpu == layouts["vectorize"]
    # map_seeds' groups vectorize the plain function: a product batched over a group of 3
    grouped = jax.make_jaxpr(loop.map_seeds(fn, seeds_per_batch=3))(params, x, scale).jaxpr
    assert (3,) in dot_batch_sizes(grouped)
    with pytest.raises(ValueError, match="seed_vmap"):
        loop.with_seed_layout(_mlp_seed_fn, "sequential")
    with pytest.raises(ValueError, match="seed_vmap"):
        loop.resolve_seed_vmap(None)


def test_map_seeds_argument_errors():
    f = lambda a, b: a + b  # noqa: E731
    for bad in (0, -1, 1.5, True, "2"):
        with pytest.raises(ValueError, match="seeds_per_batch"):
            loop.map_seeds(f, seeds_per_batch=bad)
    with pytest.raises(ValueError, match="in_axes entries must be 0 or None"):
        loop.map_seeds(f, seeds_per_batch=1, in_axes=(0, 1))(jnp.ones(3), jnp.ones((2, 3)))
    with pytest.raises(ValueError, match="2 entries for 3 arguments"):
        loop.map_seeds(lambda a, b, c: a, seeds_per_batch=1, in_axes=(0, 0))(
            jnp.ones(3), jnp.ones(3), jnp.ones(3))
    with pytest.raises(ValueError, match="different leading"):
        loop.map_seeds(f, seeds_per_batch=1)(jnp.ones(3), jnp.ones(4))
    with pytest.raises(ValueError, match="at least one argument"):
        loop.map_seeds(f, seeds_per_batch=1, in_axes=None)(jnp.ones(3), jnp.ones(3))
    with pytest.raises(ValueError, match="seeds_per_batch"):
        loop.run(_TOY, *_inputs(), progress=False, seeds_per_batch=0)


def test_run_in_seed_batches_matches_vmapped_run_and_resumes_with_another_batching(tmp_path):
    keys, hp = _inputs((0.5, 0.9, 0.7))
    ref_carry, ref_out = loop.run(_TOY, keys, hp, progress=False)
    carry, out = loop.run(_TOY, keys, hp, progress=False, seeds_per_batch=2)
    np.testing.assert_allclose(np.asarray(out["x"]), np.asarray(ref_out["x"]), rtol=1e-6)
    np.testing.assert_array_equal(np.asarray(out["chunk"]), np.asarray(ref_out["chunk"]))
    np.testing.assert_allclose(np.asarray(carry["x"]), np.asarray(ref_carry["x"]), rtol=1e-6)
    # a run checkpointed with seeds_per_batch=1 and stopped after 2 chunks resumes vmapped
    d = tmp_path / "ck"

    def stop(i, _):
        if i == 1:
            raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        loop.run(_TOY, keys, hp, progress=False, checkpoint_dir=d, seeds_per_batch=1,
                 on_chunk=stop)
    _, resumed = loop.run(_TOY, keys, hp, progress=False, checkpoint_dir=d, resume=True)
    np.testing.assert_allclose(np.asarray(resumed["x"]), np.asarray(ref_out["x"]), rtol=1e-6)


_MESH_SCRIPT = r'''
import sys
import jaxstab.distributed as dist
dist.use_cpu_devices(2)
import jax, jax.numpy as jnp, numpy as np
from jaxstab.training import loop

def init(key, hp):
    return {"x": jnp.zeros((), jnp.float32), "key": key, "t": jnp.zeros((), jnp.int32)}

def run_chunk(c, hp, chunk_index):
    def step(c, _):
        x = c["x"] * hp["decay"] + jax.random.normal(jax.random.fold_in(c["key"], c["t"]))
        return {"x": x, "key": c["key"], "t": c["t"] + 1}, x
    c, xs = jax.lax.scan(step, c, None, length=3)
    return c, {"x": xs, "chunk": jnp.full((3,), chunk_index, jnp.int32)}

toy = loop.Runner(init, run_chunk, 4, lambda c, o: c["x"])
keys = jax.random.split(jax.random.key(0), 4)
hp = {"decay": jnp.asarray([0.5, 0.9, 0.7, 0.3], jnp.float32)}
mesh = dist.default_mesh()
_, ref = loop.run(toy, keys, hp, progress=False)
carry, out = loop.run(toy, keys, hp, progress=False, mesh=mesh)
assert len(carry["x"].sharding.device_set) == 2, carry["x"].sharding
np.testing.assert_allclose(out["x"], ref["x"], rtol=1e-6)
np.testing.assert_array_equal(out["chunk"], ref["chunk"])

def stop(i, _):
    if i == 1:
        raise KeyboardInterrupt
try:
    loop.run(toy, keys, hp, progress=False, checkpoint_dir=sys.argv[1], mesh=mesh, on_chunk=stop)
    raise AssertionError("not interrupted")
except KeyboardInterrupt:
    pass
_, resumed = loop.run(toy, keys, hp, progress=False, checkpoint_dir=sys.argv[1], resume=True)
np.testing.assert_allclose(resumed["x"], ref["x"], rtol=1e-6)
try:
    loop.run(toy, keys[:3], {"decay": hp["decay"][:3]}, progress=False, mesh=mesh)
    raise AssertionError("3 seeds on 2 devices accepted")
except ValueError as e:
    assert "multiple of the 2 devices" in str(e), e
print("MESH OK")
'''


def test_run_with_seeds_split_over_two_cpu_devices_and_resume_on_one(tmp_path):
    """``loop.run(mesh=...)`` in a fresh interpreter with 2 CPU devices: equals the one-device
    run, its checkpoint (interrupted after chunk 1) resumes without a mesh to the same result,
    and a seed count the devices do not divide is refused."""
    env = {k: v for k, v in os.environ.items() if k != "XLA_FLAGS"}
    env["PYTHONPATH"] = REPO + os.pathsep + env.get("PYTHONPATH", "")
    res = subprocess.run([sys.executable, "-c", _MESH_SCRIPT, str(tmp_path / "ck")],
                         capture_output=True, text=True, env=env, timeout=300)
    assert res.returncode == 0 and "MESH OK" in res.stdout, res.stderr[-3000:]
