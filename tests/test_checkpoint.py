"""Tests for jaxstab.checkpoint (orbax-backed disk checkpoints).

Includes a real crash test: a training process is SIGKILLed at several moments, restarted
with --resume, and must end with exactly the parameters of an uninterrupted run.
"""

from __future__ import annotations

import dataclasses
import glob
import os
import shutil
import signal
import subprocess
import sys
import threading
import time
import warnings
from typing import NamedTuple

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

from jaxstab.checkpoint import (
    CheckpointFallbackWarning,
    Checkpointer,
    CorruptCheckpointError,
    arrays_to_pytree,
    pytree_to_arrays,
    restore_pytree,
    save_pytree,
)
from jaxstab.training.rollback import RollbackConfig, rollback_init

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
WORKER = os.path.join(REPO, "tests", "_ckpt_worker.py")


class Inner(NamedTuple):
    w: jax.Array
    count: jax.Array


class Outer(NamedTuple):
    inner: Inner
    key: jax.Array
    rbg_key: jax.Array
    opt_state: object
    extra: dict


@dataclasses.dataclass(frozen=True)
class _Cfg:
    lr: float = 3e-4
    layers: tuple = (64, 64)


def _state(seed: int = 0, scale: float = 1.0) -> Outer:
    k = jax.random.key(seed)
    w = jax.random.normal(k, (3, 4), jnp.float32) * scale
    params = {"w": w, "b": jnp.arange(4, dtype=jnp.float32) * scale}
    opt = optax.adam(1e-3)
    opt_state = opt.init(params)
    _, opt_state = opt.update(params, opt_state, params)
    return Outer(
        inner=Inner(w=w, count=jnp.asarray(seed + 7, jnp.int32)),
        key=jax.random.split(k, 3),
        rbg_key=jax.random.key(seed, impl="rbg"),
        opt_state=opt_state,
        extra={"bf16": (jnp.ones((2,), jnp.bfloat16) * (seed + 1)),
               "i8": jnp.array([-3, 4], jnp.int8), "flag": jnp.array(True),
               "f64_host": np.linspace(0, 1, 3), "scalar": jnp.float32(seed) * 0.5},
    )


def _assert_tree_equal(a, b):
    assert jax.tree_util.tree_structure(a) == jax.tree_util.tree_structure(b)
    for x, y in zip(jax.tree_util.tree_leaves(a), jax.tree_util.tree_leaves(b)):
        assert x.dtype == y.dtype, (x.dtype, y.dtype)
        assert x.shape == y.shape
        if jnp.issubdtype(x.dtype, jax.dtypes.prng_key):
            assert str(jax.random.key_impl(x)) == str(jax.random.key_impl(y))
            x, y = jax.random.key_data(x), jax.random.key_data(y)
        np.testing.assert_array_equal(np.asarray(x), np.asarray(y))


def _state_files(step_dir: str) -> list[str]:
    return sorted(f for f in glob.glob(os.path.join(step_dir, "state", "**"), recursive=True)
                  if os.path.isfile(f) and f"{os.sep}d{os.sep}" in f)


# --------------------------------------------------------------------------- round trip
def test_roundtrip_structure_dtypes_metadata_metrics(tmp_path):
    state = _state(1)
    with Checkpointer(tmp_path / "run", max_to_keep=3) as ckpt:
        assert ckpt.save(5, state, metrics={"reward": np.float32(1.5), "loss": 0.25},
                         metadata={"cfg": _Cfg(), "seed": 1, "key": state.key[0]})
        assert ckpt.all_steps() == [5] and ckpt.latest_step() == 5
    # New process-equivalent: a fresh Checkpointer on the same directory.
    with Checkpointer(tmp_path / "run") as ckpt:
        out = ckpt.restore(state)
        _assert_tree_equal(out.state, state)
        assert isinstance(out.state, Outer) and isinstance(out.state.inner, Inner)
        assert out.step == 5
        assert out.metadata["cfg"] == {"lr": 3e-4, "layers": [64, 64]}
        assert out.metadata["seed"] == 1
        assert out.metadata["key"] == np.asarray(jax.random.key_data(state.key[0])).tolist()
        assert out.metrics == {"reward": 1.5, "loss": 0.25}
        # The float64 NumPy leaf stays float64 NumPy (JAX without x64 could not hold it).
        assert isinstance(out.state.extra["f64_host"], np.ndarray)
        assert isinstance(out.state.inner.w, jax.Array)
        # An abstract target works as well (float64 survives as NumPy, never downcast).
        abstract = jax.tree_util.tree_map(lambda x: jax.ShapeDtypeStruct(np.shape(x), x.dtype),
                                          state)
        out2 = ckpt.restore(abstract, step=5)
        _assert_tree_equal(out2.state, state)
        assert out2.state.extra["f64_host"].dtype == np.float64
        # And one from eval_shape, for a state built by a jitted init.
        jstate = state._replace(extra={k: v for k, v in state.extra.items() if k != "f64_host"})
        with pytest.raises(ValueError, match="leaves"):
            ckpt.restore(jax.eval_shape(lambda: jstate))
        # The restored key draws the same numbers.
        np.testing.assert_array_equal(jax.random.uniform(out2.state.key[1], (4,)),
                                      jax.random.uniform(state.key[1], (4,)))


def test_rollback_state_with_none_fields_roundtrip(tmp_path):
    cfg = RollbackConfig(window=3, keep_best=False)
    params = {"w": jnp.ones(2)}
    rb = rollback_init((params, optax.sgd(0.1, momentum=0.9).init(params)), cfg)
    assert rb.best_snapshot is None
    save_pytree(tmp_path / "rb", rb, {"note": "x"})
    out, meta = restore_pytree(tmp_path / "rb", rb)
    _assert_tree_equal(out, rb)
    assert out.best_snapshot is None and meta == {"note": "x"}


def test_zero_size_leaves_roundtrip(tmp_path):
    # e.g. the [num_envs, 0] policy state of a stateless SAC actor: orbax cannot write
    # zero-size arrays, so the spec alone recreates them.
    tree = {"w": jnp.arange(3.0), "ps": jnp.zeros((4, 0), jnp.float32),
            "i": np.zeros((0,), np.int32)}
    save_pytree(tmp_path / "z", tree)
    out, _ = restore_pytree(tmp_path / "z", tree)
    _assert_tree_equal(out, tree)
    assert out["ps"].shape == (4, 0) and out["i"].dtype == np.int32
    with Checkpointer(tmp_path / "mgr") as ck:
        ck.save(1, tree)
        ck.wait_until_finished()
        restored = ck.restore(jax.eval_shape(lambda: tree))
    _assert_tree_equal(restored.state, tree)


def test_save_restore_pytree_helpers(tmp_path):
    state = _state(2)
    state = state._replace(extra={k: v for k, v in state.extra.items() if k != "f64_host"})
    save_pytree(tmp_path / "one", state, metadata={"cfg": _Cfg(lr=0.1)})
    out, meta = restore_pytree(tmp_path / "one", jax.eval_shape(lambda: state))
    _assert_tree_equal(out, state)
    assert meta["cfg"]["lr"] == 0.1
    with pytest.raises(FileExistsError, match="overwrite"):
        save_pytree(tmp_path / "one", state)
    save_pytree(tmp_path / "one", _state(3), overwrite=True)
    out, _ = restore_pytree(tmp_path / "one", _state(0))
    _assert_tree_equal(out, _state(3))
    with pytest.raises(FileNotFoundError):
        restore_pytree(tmp_path / "missing", state)
    with pytest.raises(ValueError, match="leaves"):
        restore_pytree(tmp_path / "one", {"w": jnp.zeros(3)})


def test_pytree_encoding_sha_check():
    state = {"a": jnp.arange(5.0), "k": jax.random.key(0)}
    arrays, spec = pytree_to_arrays(state)
    assert spec["paths"] == ["['a']", "['k']"] and spec["key_impls"][0] is None
    _assert_tree_equal(arrays_to_pytree(arrays, spec, state), state)
    tampered = dict(arrays)
    tampered["00000"] = arrays["00000"].copy()
    tampered["00000"][2] += 1.0
    with pytest.raises(CorruptCheckpointError, match=r"\['a'\].*SHA-256"):
        arrays_to_pytree(tampered, spec, state)
    out = arrays_to_pytree(tampered, spec, state, verify=False)
    assert float(out["a"][2]) == 3.0
    with pytest.raises(TypeError, match="unsupported type"):
        pytree_to_arrays({"s": "text"})


# --------------------------------------------------------------------------- retention
def test_keep_n_latest_across_restarts(tmp_path):
    d = tmp_path / "run"
    with Checkpointer(d, max_to_keep=2) as ckpt:
        for s in range(1, 7):
            ckpt.save(s, _state(s))
        assert ckpt.all_steps() == [5, 6]
    assert sorted(os.listdir(d)) == ["5", "6"]
    with Checkpointer(d, max_to_keep=2) as ckpt:
        ckpt.save(7, _state(7))
        ckpt.save(8, _state(8))
        assert ckpt.all_steps() == [7, 8]
        _assert_tree_equal(ckpt.restore(_state(0)).state, _state(8))
        _assert_tree_equal(ckpt.restore(_state(0), step=7).state, _state(7))


@pytest.mark.parametrize("mode", ["max", "min"])
def test_keep_best_by_metric(tmp_path, mode):
    rewards = [1.0, 9.0, 3.0, float("nan"), 2.0, 4.0, 0.5]
    d = tmp_path / mode
    with Checkpointer(d, max_to_keep=2, best_metric="reward", best_mode=mode) as ckpt:
        for s, r in enumerate(rewards[:4]):
            ckpt.save(s, _state(s), metrics={"reward": r})
    # Restart: the metrics are on disk, so keep-best still knows step 1 (or 0).
    with Checkpointer(d, max_to_keep=2, best_metric="reward", best_mode=mode) as ckpt:
        for s, r in enumerate(rewards[4:], start=4):
            ckpt.save(s, _state(s), metrics={"reward": r})
        finite = [(r, s) for s, r in enumerate(rewards) if not np.isnan(r)]
        best = (max if mode == "max" else min)(finite)[1]
        assert best == (1 if mode == "max" else 6)
        expected = sorted({5, 6, best}) if mode == "max" else [5, 6]
        assert ckpt.all_steps() == expected
        assert ckpt.best_step() == best
        _assert_tree_equal(ckpt.restore(_state(0), step=best).state, _state(best))
        assert ckpt.metrics(best) == {"reward": rewards[best]}


def test_keep_best_min_keeps_old_best(tmp_path):
    losses = [0.1, 5.0, 4.0, 3.0]
    with Checkpointer(tmp_path, max_to_keep=1, best_metric="loss", best_mode="min") as ckpt:
        for s, lo in enumerate(losses):
            ckpt.save(s, _state(s), metrics={"loss": lo})
        assert ckpt.all_steps() == [0, 3] and ckpt.best_step() == 0


def test_save_interval_and_argument_errors(tmp_path):
    with Checkpointer(tmp_path / "a", save_interval_steps=2) as ckpt:
        assert not ckpt.save(3, _state(0))
        assert ckpt.save(4, _state(0))
        assert ckpt.save(5, _state(0), force=True)
        with pytest.raises(ValueError, match="latest saved step 5"):
            ckpt.save(5, _state(0), force=True)
        with pytest.raises(ValueError, match="step must be >= 0"):
            Checkpointer(tmp_path / "b").save(-1, _state(0))
        with pytest.raises(TypeError, match="JSON"):
            ckpt.save(6, _state(0), metadata={"f": object()})
    with Checkpointer(tmp_path / "c", best_metric="reward") as ckpt:
        with pytest.raises(ValueError, match="reward"):
            ckpt.save(0, _state(0), metrics={"loss": 1.0})
        with pytest.raises(ValueError, match="reward"):
            ckpt.save(0, _state(0))
        with pytest.raises(FileNotFoundError, match="no checkpoint"):
            ckpt.restore(_state(0))
    with pytest.raises(ValueError, match="max_to_keep"):
        Checkpointer(tmp_path / "d", max_to_keep=0)
    with pytest.raises(ValueError, match="best_mode"):
        Checkpointer(tmp_path / "d", best_mode="up")
    with pytest.raises(ValueError, match="save_interval_steps"):
        Checkpointer(tmp_path / "d", save_interval_steps=0)


# --------------------------------------------------------------------------- corruption
def _three_steps(d):
    with Checkpointer(d, max_to_keep=5) as ckpt:
        for s in (10, 20, 30):
            ckpt.save(s, _state(s), metadata={"s": s})


def _corrupt(step_dir: str, how: str) -> None:
    if how == "truncate_data":
        files = _state_files(step_dir)
        assert files
        for f in files:
            with open(f, "r+b") as fh:
                fh.truncate(os.path.getsize(f) // 2)
    elif how == "delete_data":
        for f in _state_files(step_dir):
            os.remove(f)
    elif how == "delete_meta":
        os.remove(os.path.join(step_dir, "meta", "metadata"))
    elif how == "truncate_meta":
        with open(os.path.join(step_dir, "meta", "metadata"), "r+b") as fh:
            fh.truncate(25)
    elif how == "delete_manifest":
        for f in glob.glob(os.path.join(step_dir, "state", "**", "manifest.ocdbt"),
                           recursive=True):
            os.remove(f)
    else:
        raise AssertionError(how)


# When tensorstore fails to read one array, orbax's pending reads of the others can finish
# after its event loop closed; Python then reports "Event loop is closed" as an unraisable
# exception. It is noise from orbax's internals, not a failure of the restore being tested.
_ORBAX_LOOP_NOISE = pytest.mark.filterwarnings(
    "ignore::pytest.PytestUnraisableExceptionWarning")


@_ORBAX_LOOP_NOISE
@pytest.mark.parametrize("how", ["truncate_data", "delete_data", "delete_meta",
                                 "truncate_meta", "delete_manifest"])
def test_corrupt_latest_falls_back_with_warning(tmp_path, how):
    d = str(tmp_path / "run")
    _three_steps(d)
    _corrupt(os.path.join(d, "30"), how)
    with Checkpointer(d, max_to_keep=5) as ckpt:
        with pytest.raises(CorruptCheckpointError, match="step 30"):
            ckpt.restore(_state(0), step=30)
        with pytest.raises(CorruptCheckpointError, match="step 30"):
            ckpt.restore(_state(0), fallback=False)
        with pytest.warns(CheckpointFallbackWarning,
                          match=r"step 30 .*unreadable.*falling back") as rec:
            out = ckpt.restore(_state(0))
        assert len(rec) == 1
        assert out.step == 20 and out.metadata == {"s": 20}
        _assert_tree_equal(out.state, _state(20))
        # The bad step was moved aside, so training can write step 30 again.
        assert ckpt.all_steps() == [10, 20]
        assert any(n.startswith("corrupt-30-") for n in os.listdir(d))
        ckpt.save(30, _state(31))
        _assert_tree_equal(ckpt.restore(_state(0)).state, _state(31))


@_ORBAX_LOOP_NOISE
def test_silently_altered_arrays_fail_sha_and_fall_back(tmp_path):
    d = str(tmp_path / "run")
    _three_steps(d)
    other = str(tmp_path / "other")
    with Checkpointer(other) as ckpt:
        ckpt.save(30, _state(99))          # same structure, different values
    shutil.rmtree(os.path.join(d, "30", "state"))
    shutil.copytree(os.path.join(other, "30", "state"), os.path.join(d, "30", "state"))
    with Checkpointer(d) as ckpt:
        with pytest.warns(CheckpointFallbackWarning, match="SHA-256"):
            out = ckpt.restore(_state(0))
        assert out.step == 20
    with Checkpointer(other, verify=False) as ckpt:
        _assert_tree_equal(ckpt.restore(_state(0)).state, _state(99))


def test_corrupt_metrics_file_is_moved_aside_on_open(tmp_path):
    d = str(tmp_path / "run")
    with Checkpointer(d, best_metric="reward") as ckpt:
        for s in (1, 2, 3):
            ckpt.save(s, _state(s), metrics={"reward": float(s)})
    with open(os.path.join(d, "3", "metrics", "metrics"), "r+b") as fh:
        fh.truncate(3)
    with pytest.warns(CheckpointFallbackWarning, match=r"step 3 .*metrics.*unreadable"):
        ckpt = Checkpointer(d, best_metric="reward")
    with ckpt:
        assert ckpt.all_steps() == [1, 2] and ckpt.best_step() == 2
        out = ckpt.restore(_state(0))
        assert out.step == 2 and out.metrics == {"reward": 2.0}
        _assert_tree_equal(out.state, _state(2))


def test_async_save_roundtrip(tmp_path):
    with Checkpointer(tmp_path, max_to_keep=2, async_save=True) as ckpt:
        for s in range(4):
            ckpt.save(s, _state(s))
        out = ckpt.restore(_state(0))      # waits for the pending write
        assert out.step == 3 and ckpt.all_steps() == [2, 3]
        _assert_tree_equal(out.state, _state(3))


@_ORBAX_LOOP_NOISE
def test_all_corrupt_raises_listing_every_step(tmp_path):
    d = str(tmp_path / "run")
    _three_steps(d)
    for s in ("10", "20", "30"):
        _corrupt(os.path.join(d, s), "delete_meta")
    with Checkpointer(d) as ckpt:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", CheckpointFallbackWarning)
            with pytest.raises(CorruptCheckpointError, match=r"(?s)step 30.*step 20.*step 10"):
                ckpt.restore(_state(0))


def test_wrong_target_is_a_value_error_without_fallback(tmp_path):
    d = str(tmp_path / "run")
    _three_steps(d)
    wrong = _state(0)._replace(inner=Inner(w=jnp.zeros((4, 3)), count=jnp.asarray(0, jnp.int32)))
    with Checkpointer(d) as ckpt:
        with warnings.catch_warnings():
            warnings.simplefilter("error", CheckpointFallbackWarning)
            with pytest.raises(ValueError, match=r"inner.*\(4, 3\)") as err:
                ckpt.restore(wrong)
        assert not isinstance(err.value, CorruptCheckpointError)
        assert ckpt.all_steps() == [10, 20, 30]       # nothing was quarantined
        with pytest.raises(ValueError, match="leaves"):
            ckpt.restore({"w": jnp.zeros(3)})
        with pytest.raises(FileNotFoundError, match="step 15"):
            ckpt.restore(_state(0), step=15)


def test_unfinished_save_is_never_latest(tmp_path):
    """A save interrupted before orbax's final rename leaves only a tmp directory."""
    d = str(tmp_path / "run")
    _three_steps(d)
    # What a crash mid-save leaves behind: a partial step directory under orbax's tmp name.
    tmp = os.path.join(d, "40.orbax-checkpoint-tmp")
    shutil.copytree(os.path.join(d, "30"), tmp)
    for f in _state_files(tmp)[:1]:
        os.remove(f)
    with Checkpointer(d) as ckpt:
        assert ckpt.all_steps() == [10, 20, 30]
        with warnings.catch_warnings():
            warnings.simplefilter("error", CheckpointFallbackWarning)
            out = ckpt.restore(_state(0))
        assert out.step == 30
        ckpt.save(40, _state(40))                # the step can be written for real
        assert ckpt.latest_step() == 40
    assert not os.path.exists(tmp), "orbax removes unfinished tmp directories on open"


# --------------------------------------------------------------------------- crash test
def _worker_cmd(d, out, *extra):
    return [sys.executable, WORKER, "--dir", d, "--out", out, "--steps", "240", "--every", "20",
            "--sleep", "0.01", *extra]


def _env():
    env = dict(os.environ)
    env["PYTHONPATH"] = REPO + os.pathsep + env.get("PYTHONPATH", "")
    env.setdefault("JAX_PLATFORMS", "cpu")
    return env


def _run_to_end(cmd, timeout=120):
    p = subprocess.run(cmd, cwd=REPO, env=_env(), capture_output=True, text=True,
                       timeout=timeout)
    assert p.returncode == 0, p.stderr[-3000:]
    return p.stdout


def _kill_when(cmd, pattern: str, nth: int, delay: float, timeout=120):
    """Start the worker, wait for the nth stdout line starting with pattern, sleep, SIGKILL."""
    p = subprocess.Popen(cmd, cwd=REPO, env=_env(), stdout=subprocess.PIPE,
                         stderr=subprocess.DEVNULL, text=True)
    seen, lines = 0, []
    deadline = time.time() + timeout
    try:
        while time.time() < deadline:
            line = p.stdout.readline()
            if not line:
                break
            lines.append(line.strip())
            if line.startswith(pattern):
                seen += 1
                if seen == nth:
                    if delay:
                        time.sleep(delay)
                    p.send_signal(signal.SIGKILL)
                    break
        p.wait(timeout=30)
    finally:
        if p.poll() is None:
            p.kill()
            p.wait()
    assert p.returncode == -signal.SIGKILL, (p.returncode, lines[-5:])
    assert "done" not in lines
    return lines


def _scenario(tmp, name, kills, target):
    d = os.path.join(tmp, name)
    out = os.path.join(tmp, name + ".npz")
    starts, saw_tmp = [], False
    for i, (pattern, nth, delay) in enumerate(kills):
        cmd = _worker_cmd(d, out, *(["--resume"] if i else []))
        _kill_when(cmd, pattern, nth, delay)
        # A kill during a save leaves orbax's unfinished tmp directory, never a step.
        saw_tmp |= bool(glob.glob(os.path.join(d, "*.orbax-checkpoint-tmp*")))
        with Checkpointer(d, max_to_keep=3) as ckpt:
            steps = ckpt.all_steps()
            assert steps, "a checkpoint must exist before the kill"
            # Whatever moment the kill hit, the newest listed step is complete and readable.
            with warnings.catch_warnings():
                warnings.simplefilter("error", CheckpointFallbackWarning)
                ckpt.restore(target, step=steps[-1])
    stdout = _run_to_end(_worker_cmd(d, out, "--resume"))
    starts.append(int(stdout.splitlines()[0].split()[1]))
    assert not glob.glob(os.path.join(d, "*tmp*")), os.listdir(d)
    return out, starts, saw_tmp


def _worker_state_target():
    import importlib.util

    spec = importlib.util.spec_from_file_location("_ckpt_worker", WORKER)
    mod = importlib.util.module_from_spec(spec)
    sys.modules.setdefault("_ckpt_worker", mod)
    spec.loader.exec_module(mod)
    return jax.eval_shape(mod.init_state)


@pytest.mark.slow
@pytest.mark.timeout(300)
def test_sigkill_and_resume_matches_uninterrupted_run(tmp_path):
    tmp = str(tmp_path)
    ref_out = os.path.join(tmp, "ref.npz")
    scenarios = {
        # kill right after the first checkpoint is complete
        "after_first": [("saved", 1, 0.0)],
        # kill 10-20 ms into a save (measured: saves here take > 40 ms), twice
        "mid_save": [("saving", 3, 0.01), ("saving", 2, 0.02)],
        # two crashes: 0.35 s after the 2nd save, then 0.2 s into the resumed run's 1st save
        "twice": [("saved", 2, 0.35), ("saving", 1, 0.02)],
    }
    results, errors = {}, []
    target = _worker_state_target()

    def run(name, kills):
        try:
            results[name] = _scenario(tmp, name, kills, target)
        except BaseException as e:  # noqa: BLE001 - re-raised below
            errors.append((name, e))

    threads = [threading.Thread(target=run, args=item) for item in scenarios.items()]
    for t in threads:
        t.start()
    _run_to_end(_worker_cmd(os.path.join(tmp, "ref"), ref_out))
    for t in threads:
        t.join()
    if errors:
        raise errors[0][1]
    ref = np.load(ref_out)
    assert results["mid_save"][2], "no kill landed inside a save (no orbax tmp directory seen)"
    for name, (out, starts, _) in results.items():
        got = np.load(out)
        assert sorted(got.files) == sorted(ref.files)
        for k in ref.files:
            assert got[k].dtype == ref[k].dtype
            np.testing.assert_array_equal(got[k], ref[k], err_msg=f"{name}: {k}")
        assert starts[0] > 0, f"{name}: the final run did not resume"
