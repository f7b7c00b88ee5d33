"""Tests for jaxstab.distributed: sharded sweeps equal unsharded ones; two real processes.

Fast tests run in the pytest process (one CPU device). The 8-device checks need
``--xla_force_host_platform_device_count=8`` before JAX starts, and conftest.py has already
started JAX here, so they run ``tests/_distributed_worker.py`` in fresh interpreters and compare
its saved outputs here:

* ``devices``: one process, 8 CPU devices: tiny PPO (CartPole) and SAC (Pendulum) sweeps of 8 and
  16 seeds sharded over 8 devices vs ``jax.jit(jax.vmap(train))`` on one device; 11 seeds raise
  the uneven-seed error, and with ``pad=True`` give the first 11 rows of the reference.
* ``multiprocess``: two processes x 4 CPU devices joined with ``jax.distributed`` (gloo) on a free
  localhost port train the 8-seed PPO sweep together; process 0 writes the results.

Equality is to float tolerance, not bitwise: the 8-device program goes through XLA's SPMD
pipeline, which simplifies the per-device module differently from the single-device one (for
example divisions left as divisions in one and turned into reciprocal-multiplies in the other),
so float32 results differ in the last bits (measured: relative differences ~1e-7 on losses,
~3e-6 on SAC evaluation returns after 128 steps). Integer and boolean outputs (environment
states, episode counts) must agree exactly. The two-process run executes the same per-device
program as the one-process 8-device run and must match it bit for bit.
"""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import time
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from jaxstab import distributed as dist

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
WORKER = os.path.join(REPO, "tests", "_distributed_worker.py")
WORKER_TIMEOUT = 840  # seconds (< pytest's 900); ~1 minute each on a quiet 2-core machine
DEVICE_FLAG = "--xla_force_host_platform_device_count"


# ----------------------------------------------------------------------------- in-process tests

def _toy_train(key, hparams):
    """A small pure 'training run': 20 SGD steps of a linear model on key-dependent data."""
    k_x, k_w = jax.random.split(key)
    x = jax.random.normal(k_x, (32, 3))
    y = x @ jnp.array([1.0, -2.0, 0.5]) + 0.1 * jax.random.normal(k_w, (32,))

    def step(w, _):
        g = jax.grad(lambda w: jnp.mean((x @ w - y) ** 2))(w)
        w = w - hparams["lr"] * g * hparams["scale"]
        return w, jnp.mean((x @ w - y) ** 2)

    w, losses = jax.lax.scan(step, jnp.zeros(3), None, length=20)
    return {"w": w, "losses": losses, "key": jax.random.split(key)[0]}


def _mesh1():
    return dist.default_mesh(devices=jax.devices()[:1])


def test_sweep_one_device_is_bitwise_jit_vmap_and_matches_loop():
    keys = jax.random.split(jax.random.key(3), 4)
    hp = {"lr": jnp.array([0.01, 0.02, 0.05, 0.1], jnp.float32), "scale": jnp.float32(1.0)}
    out = dist.sweep(_toy_train, keys, hp, mesh=_mesh1())
    ref = jax.jit(jax.vmap(_toy_train, in_axes=(0, {"lr": 0, "scale": None})))(keys, hp)
    assert out["w"].shape == (4, 3) and out["losses"].shape == (4, 20)
    assert out["w"].sharding.spec == jax.sharding.PartitionSpec("seeds")
    np.testing.assert_array_equal(np.asarray(out["w"]), np.asarray(ref["w"]))
    np.testing.assert_array_equal(np.asarray(out["losses"]), np.asarray(ref["losses"]))
    np.testing.assert_array_equal(dist.to_host(out["key"]), np.asarray(
        jax.random.key_data(ref["key"])))
    for i in range(4):  # independent reference: one un-vmapped run per seed
        single = _toy_train(keys[i], {"lr": hp["lr"][i], "scale": hp["scale"]})
        np.testing.assert_allclose(np.asarray(out["w"][i]), np.asarray(single["w"]),
                                   rtol=1e-5, atol=1e-6)


def test_sweep_raw_uint32_keys_and_shared_hparams():
    raw = jnp.stack([jax.random.PRNGKey(i) for i in range(2)])  # [2, 2] uint32
    hp = {"lr": 0.05, "scale": np.float32(2.0)}
    out = dist.sweep(_toy_train, raw, hp, mesh=_mesh1())
    for i in range(2):
        single = _toy_train(raw[i], {"lr": jnp.float32(0.05), "scale": jnp.float32(2.0)})
        np.testing.assert_allclose(np.asarray(out["w"][i]), np.asarray(single["w"]),
                                   rtol=1e-5, atol=1e-6)
    assert out["key"].dtype == jnp.uint32 and out["key"].shape == (2, 2)


def test_sweep_without_hparams_and_default_mesh():
    def train(key):
        return jax.random.normal(key, (5,))

    keys = jax.random.split(jax.random.key(0), jax.device_count())
    out = dist.sweep(train, keys)
    host = dist.to_host(out)
    assert isinstance(host, np.ndarray) and host.shape == (jax.device_count(), 5)
    np.testing.assert_array_equal(host[0], np.asarray(train(keys[0])))


def test_sweep_validates_arguments():
    keys = jax.random.split(jax.random.key(0), 4)
    good = {"lr": jnp.float32(0.1), "scale": jnp.float32(1.0)}
    with pytest.raises(ValueError, match=r"hparams\['lr'\].*shape \(3,\).*S=4"):
        dist.sweep(_toy_train, keys, {**good, "lr": jnp.ones(3)}, mesh=_mesh1())
    with pytest.raises(ValueError, match="keys"):
        dist.sweep(_toy_train, jax.random.key(0), good, mesh=_mesh1())
    with pytest.raises(ValueError, match="keys"):
        dist.sweep(_toy_train, np.zeros((4,), np.uint32), good, mesh=_mesh1())
    with pytest.raises(ValueError, match="at least one seed"):
        dist.sweep(_toy_train, keys[:0], good, mesh=_mesh1())
    with pytest.raises(ValueError, match="axis_name 'batch'"):
        dist.sweep(_toy_train, keys, good, mesh=_mesh1(), axis_name="batch")
    with pytest.raises(TypeError, match="train_fn"):
        dist.sweep("not a function", keys, good, mesh=_mesh1())


def test_to_host_converts_keys_and_leaves():
    tree = {"a": jnp.arange(3), "k": jax.random.split(jax.random.key(0), 2)}
    host = dist.to_host(tree)
    assert isinstance(host["a"], np.ndarray) and host["a"].tolist() == [0, 1, 2]
    np.testing.assert_array_equal(host["k"], np.asarray(jax.random.key_data(tree["k"])))


def test_initialize_rejects_partial_or_bad_configuration(monkeypatch):
    for var in (dist.ENV_COORDINATOR, dist.ENV_NUM_PROCESSES, dist.ENV_PROCESS_ID,
                dist.ENV_LOCAL_DEVICE_COUNT, "JAX_COORDINATOR_ADDRESS", "SLURM_JOB_ID",
                "OMPI_MCA_orte_hnp_uri"):
        monkeypatch.delenv(var, raising=False)
    with pytest.raises(ValueError, match="num_processes, process_id not given"):
        dist.initialize("localhost:1234")
    monkeypatch.setenv(dist.ENV_NUM_PROCESSES, "two")
    with pytest.raises(ValueError, match=dist.ENV_NUM_PROCESSES):
        dist.initialize("localhost:1234", process_id=0)
    monkeypatch.setenv(dist.ENV_NUM_PROCESSES, "2")
    with pytest.raises(ValueError, match="process_id"):
        dist.initialize("localhost:1234", process_id=2)
    with pytest.raises(ValueError, match="local_device_count"):
        dist.initialize("localhost:1234", process_id=0, local_device_count=0)
    # environment variables alone are read (and still validated)
    monkeypatch.setenv(dist.ENV_COORDINATOR, "localhost:1234")
    monkeypatch.setenv(dist.ENV_PROCESS_ID, "5")
    with pytest.raises(ValueError, match="process_id"):
        dist.initialize()
    assert not jax.distributed.is_initialized()


# ----------------------------------------------------------------------- subprocess helpers

def _env(num_devices: int | None) -> dict[str, str]:
    env = dict(os.environ)
    flags = [f for f in env.get("XLA_FLAGS", "").split() if not f.startswith(DEVICE_FLAG)]
    if num_devices is not None:
        flags.append(f"{DEVICE_FLAG}={num_devices}")
    env["XLA_FLAGS"] = " ".join(flags)
    env["JAX_PLATFORMS"] = "cpu"
    for var in (dist.ENV_COORDINATOR, dist.ENV_NUM_PROCESSES, dist.ENV_PROCESS_ID,
                dist.ENV_LOCAL_DEVICE_COUNT, "JAX_COORDINATOR_ADDRESS"):
        env.pop(var, None)
    env["PYTHONPATH"] = REPO + os.pathsep + env.get("PYTHONPATH", "")
    return env


def _tail(text: str, n: int = 4000) -> str:
    return text[-n:] if text else "<empty>"


def _free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _wait_all(procs: list[subprocess.Popen], logs: list[Any], timeout: float
              ) -> tuple[bool, str]:
    """Wait for every process (killing all on timeout); return (timed_out, combined log tails)."""
    deadline = time.time() + timeout
    timed_out = False
    failed_at = None
    try:
        while any(p.poll() is None for p in procs):
            now = time.time()
            if now > deadline:
                timed_out = True
                break
            if failed_at is None and any(p.poll() not in (None, 0) for p in procs):
                failed_at = now  # one worker failed: give its peers a short grace period
            if failed_at is not None and now - failed_at > 30:
                break
            time.sleep(0.2)
    finally:
        for p in procs:
            if p.poll() is None:
                p.kill()
                p.wait(timeout=30)
    texts = []
    for log in logs:
        log.seek(0)
        texts.append(log.read())
        log.close()
    report = "\n".join(f"--- process {i} (rc={p.returncode}):\n{_tail(t)}"
                       for i, (p, t) in enumerate(zip(procs, texts)))
    return timed_out, report


@pytest.fixture(scope="module")
def devices_run(tmp_path_factory):
    """Run the 8-device worker once for PPO and once for SAC, concurrently (XLA compiles are
    mostly single-threaded, so two interpreters use both cores); returns the saved outputs."""
    tmp = tmp_path_factory.mktemp("dist")
    outs = {algo: str(tmp / f"devices_{algo}.npz") for algo in ("ppo", "sac")}
    procs, logs = [], []
    for algo, out in outs.items():
        log = open(tmp / f"devices_{algo}.log", "w+")
        logs.append(log)
        procs.append(subprocess.Popen(
            [sys.executable, WORKER, "devices", "--algos", algo, "--out", out], cwd=REPO,
            env=_env(8), stdout=log, stderr=subprocess.STDOUT, text=True))
    t0 = time.time()
    timed_out, report = _wait_all(procs, logs, WORKER_TIMEOUT)
    if timed_out:
        pytest.fail(f"8-device workers timed out after {WORKER_TIMEOUT}s (possible XLA CPU "
                    f"hang, see README 'CPU hang')\n{report}")
    ok = all(p.returncode == 0 for p in procs) and all(map(os.path.exists, outs.values()))
    assert ok, f"8-device workers failed after {time.time() - t0:.0f}s\n{report}"
    merged = {}
    for out in outs.values():
        with np.load(out) as data:
            merged.update({k: data[k] for k in data.files})
    return merged


def _assert_close(ref: np.ndarray, got: np.ndarray, name: str) -> None:
    assert ref.shape == got.shape and ref.dtype == got.dtype, (
        f"{name}: {got.shape} {got.dtype} vs reference {ref.shape} {ref.dtype}")
    if np.issubdtype(ref.dtype, np.floating):
        scale = 1.0 + (float(np.max(np.abs(ref))) if ref.size else 0.0)
        np.testing.assert_allclose(got, ref, rtol=0, atol=1e-4 * scale, err_msg=name)
    else:  # integer / bool leaves (env states, counters, keys): exactly equal
        np.testing.assert_array_equal(got, ref, err_msg=name)


def _compare(data: dict, algo: str, tag: str, rows: int, *, bitwise: bool = False) -> int:
    refs = [k for k in data if k.startswith(f"{algo}/ref")]
    assert len(refs) > 10, f"too few {algo} outputs saved: {refs}"
    for k in refs:
        got = data[k.replace("/ref", f"/{tag}", 1)]
        if bitwise:
            np.testing.assert_array_equal(got, data[k], err_msg=k)
        else:
            _assert_close(data[k][:rows], got, k.replace("/ref", f"/{tag}", 1))
    return len(refs)


# ---------------------------------------------------------------------- 8 forced CPU devices

@pytest.mark.slow
@pytest.mark.parametrize("seeds", [8, 16])
@pytest.mark.parametrize("algo", ["ppo", "sac"])
def test_sharded_sweep_matches_unsharded(devices_run, algo, seeds):
    _compare(devices_run, algo, f"sharded{seeds}", seeds)
    # every output leaf was spread over all 8 devices
    assert devices_run[f"{algo}/devices_per_leaf_{seeds}"].tolist() == [8]
    # the comparison has teeth: different seeds really give different results
    ret = devices_run["ppo/ref[1]['episode_return']" if algo == "ppo" else "sac/ref.eval_returns"]
    assert not np.allclose(ret[0], ret[1])


@pytest.mark.slow
def test_uneven_seed_count_error_and_padding(devices_run):
    msg = str(devices_run["uneven_error"])
    assert "S=11" in msg and "8 devices" in msg and "pad=True" in msg
    n = _compare(devices_run, "ppo", "padded11", 11)
    assert devices_run["ppo/padded11[1]['episode_return']"].shape[0] == 11
    assert n > 10


# --------------------------------------------------------------------------- two processes

@pytest.mark.slow
def test_two_processes_train_one_sharded_sweep(devices_run, tmp_path):
    out = str(tmp_path / "multiprocess.npz")
    last_err = ""
    for attempt in range(2):  # a second try only if the free port was taken in between
        port = _free_port()
        procs, logs = [], []
        for pid in range(2):
            log = open(tmp_path / f"worker{pid}_{attempt}.log", "w+")
            logs.append(log)
            procs.append(subprocess.Popen(
                [sys.executable, WORKER, "multiprocess", "--coordinator", f"127.0.0.1:{port}",
                 "--process-id", str(pid), "--num-processes", "2", "--local-devices", "4",
                 "--out", out], cwd=REPO, env=_env(None), stdout=log,
                stderr=subprocess.STDOUT, text=True))
        timed_out, report = _wait_all(procs, logs, WORKER_TIMEOUT)
        if timed_out:
            pytest.fail(f"two-process run timed out after {WORKER_TIMEOUT}s\n{report}")
        if all(p.returncode == 0 for p in procs) and os.path.exists(out):
            break
        last_err = report
        if "address already in use" not in report.lower():
            break
    assert os.path.exists(out), f"two-process run failed\n{last_err}"
    with np.load(out) as data:
        mp = {k: data[k] for k in data.files}
    assert int(mp["process_count"]) == 2 and int(mp["device_count"]) == 8
    assert mp["addressable_shards"].tolist() == [4]  # each process held only its 4 devices
    merged = {**devices_run, **mp}
    n = _compare(merged, "ppo", "multiprocess8", 8)
    # same per-device program as the one-process 8-device run: identical bits
    for k in [k for k in devices_run if k.startswith("ppo/sharded8")]:
        np.testing.assert_array_equal(mp[k.replace("sharded8", "multiprocess8", 1)],
                                      devices_run[k], err_msg=k)
    assert n > 10


def _fresh_python(code: str) -> subprocess.CompletedProcess:
    env = {k: v for k, v in os.environ.items() if k != "XLA_FLAGS"}
    return subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                          timeout=300, env=env, cwd=REPO)


def test_use_cpu_devices_before_and_after_the_backend_starts():
    """In fresh interpreters: before JAX starts, n CPU devices appear and a sweep uses them all;
    after (``import gymnax`` starts the backend), a clear RuntimeError, unless nothing changes."""
    ok = _fresh_python(
        "import jaxstab.distributed as d, jax, jax.numpy as jnp\n"
        "assert d.use_cpu_devices(3) == 3\n"
        "assert jax.device_count() == 3, jax.devices()\n"
        "keys = jax.random.split(jax.random.key(0), 6)\n"
        "out = d.sweep(lambda k: jax.random.normal(k, (2,)), keys)\n"
        "assert len(out.sharding.device_set) == 3\n"
        "assert d.use_cpu_devices(3) == 3  # already so: no error\n"
        "print('OK')\n")
    assert ok.returncode == 0 and "OK" in ok.stdout, ok.stderr[-2000:]
    late = _fresh_python(
        "import jaxstab.distributed as d, gymnax\n"
        "try:\n"
        "    d.use_cpu_devices(2)\n"
        "except RuntimeError as e:\n"
        "    print('ERR', e)\n")
    assert late.returncode == 0 and "ERR" in late.stdout, late.stderr[-2000:]
    assert "before JAX starts its backend" in late.stdout and "gymnax" in late.stdout
    with pytest.raises(ValueError, match="positive int"):
        dist.use_cpu_devices(0)
    with pytest.raises(ValueError, match="positive int"):
        dist.use_cpu_devices(True)
