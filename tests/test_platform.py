"""The jax 0.10.2 CPU deadlock guard (DESIGN.md, platform note)."""

import dataclasses
import os
import subprocess
import sys
import textwrap

import pytest

from jaxstab import _platform

FLAG = _platform.CPU_SCHEDULER_FLAG


def _run(code: str, env_updates: dict[str, str | None], timeout: float = 120) -> subprocess.CompletedProcess:
    env = dict(os.environ)
    for k, v in env_updates.items():
        if v is None:
            env.pop(k, None)
        else:
            env[k] = v
    return subprocess.run([sys.executable, "-c", textwrap.dedent(code)], env=env, capture_output=True,
                          text=True, timeout=timeout)


def test_flag_added_when_absent():
    env = {"XLA_FLAGS": "--xla_dump_to=/dev/null"}
    assert _platform.apply_cpu_workarounds(env) is True
    assert env["XLA_FLAGS"] == f"--xla_dump_to=/dev/null {FLAG}=false"


def test_user_setting_wins():
    env = {"XLA_FLAGS": f"{FLAG}=true"}
    assert _platform.apply_cpu_workarounds(env) is False
    assert env["XLA_FLAGS"] == f"{FLAG}=true"


@pytest.mark.parametrize("value", ["0", "1", "maybe", None])
def test_user_setting_is_found_by_name_not_substring(value):
    """Any value the user gave the flag is kept (XLA judges it); a longer flag name that starts
    with the same characters is not the user's setting, so the guard is still added."""
    mine = FLAG if value is None else f"{FLAG}={value}"
    env = {"XLA_FLAGS": f"--xla_dump_to=/dev/null {mine}"}
    assert _platform.apply_cpu_workarounds(env) is False
    assert env["XLA_FLAGS"] == f"--xla_dump_to=/dev/null {mine}"
    other = {"XLA_FLAGS": f"{FLAG}_x=true"}
    assert _platform.apply_cpu_workarounds(other) is True
    assert other["XLA_FLAGS"] == f"{FLAG}_x=true {FLAG}=false"


@pytest.mark.parametrize("value", ["0", "false", "off"])
def test_opt_out(value):
    env = {_platform.OPT_OUT_ENV: value}
    assert _platform.apply_cpu_workarounds(env) is False
    assert "XLA_FLAGS" not in env


@pytest.mark.parametrize("flags,value", [
    ("", None),
    ("--xla_force_host_platform_device_count=2", None),
    ("--xla_cpu_enable_concurrency_optimized_scheduler=false", False),
    ("--xla_cpu_enable_concurrency_optimized_scheduler=0", False),
    ("--xla_cpu_enable_concurrency_optimized_scheduler=FALSE", False),
    ("--xla_cpu_enable_concurrency_optimized_scheduler=true", True),
    ("--xla_cpu_enable_concurrency_optimized_scheduler", True),
    # the last occurrence wins
    ("--xla_cpu_enable_concurrency_optimized_scheduler=false "
     "--xla_cpu_enable_concurrency_optimized_scheduler=1", True),
    # another flag whose name starts the same is not this one
    ("--xla_cpu_enable_concurrency_optimized_scheduler_x=false", None),
])
def test_scheduler_flag_value(flags, value):
    assert _platform.scheduler_flag_value(flags) is value


def test_scheduler_flag_value_rejects_a_non_boolean():
    with pytest.raises(ValueError, match="non-boolean"):
        _platform.scheduler_flag_value("--xla_cpu_enable_concurrency_optimized_scheduler=maybe")


def test_idempotent():
    env: dict[str, str] = {}
    assert _platform.apply_cpu_workarounds(env) is True
    assert _platform.apply_cpu_workarounds(env) is False
    assert env["XLA_FLAGS"].count(FLAG) == 1


def test_import_sets_process_environment():
    out = _run("import os, jaxstab; print(os.environ['XLA_FLAGS'])",
               {"XLA_FLAGS": None, _platform.OPT_OUT_ENV: None})
    assert out.returncode == 0, out.stderr
    assert f"{FLAG}=false" in out.stdout


def test_import_after_backend_init_warns():
    code = """
    import warnings, jax, jax.numpy as jnp
    jnp.ones(1).block_until_ready()
    with warnings.catch_warnings(record=True) as w:
        warnings.simplefilter("always")
        import jaxstab
    print(any("scheduler workaround" in str(x.message) for x in w))
    """
    out = _run(code, {"XLA_FLAGS": None, _platform.OPT_OUT_ENV: None})
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip().endswith("True")


@pytest.mark.slow
@pytest.mark.timeout(600)
def test_vmapped_multiseed_training_finishes():
    """Regression: a vmapped 2-seed, 100k-step PPO-style program must finish (not hang).

    On jax 0.10.2 / 2-core CPUs this program shape deadlocked without the guard. A hang here
    shows up as a subprocess timeout.
    """
    here = os.path.dirname(os.path.abspath(__file__))
    script = os.path.join(here, "_vmapped_program.py")
    env = dict(os.environ)
    env.pop("XLA_FLAGS", None)
    env.pop(_platform.OPT_OUT_ENV, None)
    root = os.path.dirname(here)
    env["PYTHONPATH"] = os.pathsep.join(p for p in (root, env.get("PYTHONPATH", "")) if p)
    try:
        out = subprocess.run([sys.executable, script, "--seeds", "2", "--steps", "100000"], env=env,
                             capture_output=True, text=True, timeout=480)
    except subprocess.TimeoutExpired:  # pragma: no cover - this is the failure being guarded
        pytest.fail("vmapped multi-seed program did not finish in 480 s (CPU scheduler deadlock?)")
    assert out.returncode == 0, out.stderr[-2000:]
    assert "finished" in out.stdout
    assert f"{FLAG}=false" in out.stdout


def _script_env(opt_out: bool) -> dict[str, str]:
    env = dict(os.environ)
    env.pop("XLA_FLAGS", None)
    env.pop(_platform.OPT_OUT_ENV, None)
    if opt_out:
        env[_platform.OPT_OUT_ENV] = "0"
    root = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    env["PYTHONPATH"] = os.pathsep.join(p for p in (root, env.get("PYTHONPATH", "")) if p)
    return env


@pytest.mark.slow
@pytest.mark.timeout(300)
@pytest.mark.parametrize("init,opt_out", [("flax", False), ("jaxstab", True)])
def test_vmapped_orthogonal_inits_finish(init, opt_out):
    """Minimal reproducer of the hang (batched LAPACK QR kernels on the intra-op pool).

    flax's QR-based init must finish with the guard on; jaxstab's LAPACK-free init must finish
    even with the guard switched off. A hang shows up as a timeout.
    """
    script = os.path.join(os.path.dirname(os.path.abspath(__file__)), "_vmapped_init_program.py")
    try:
        out = subprocess.run([sys.executable, script, "--init", init], env=_script_env(opt_out),
                             capture_output=True, text=True, timeout=240)
    except subprocess.TimeoutExpired:  # pragma: no cover - the failure being guarded
        pytest.fail(f"vmapped orthogonal inits ({init}) did not finish in 240 s (CPU deadlock)")
    assert out.returncode == 0, out.stderr[-2000:]
    assert "finished" in out.stdout


def test_jaxstab_networks_use_no_lapack_at_init():
    """The vmapped init of jaxstab's MLP compiles to plain XLA ops (no LAPACK custom calls)."""
    import jax
    import jax.numpy as jnp

    from jaxstab.agents.common import MLP

    net = MLP((32, 32), 3)
    keys = jax.random.split(jax.random.key(0), 3)
    hlo = jax.jit(jax.vmap(lambda k: net.init(k, jnp.zeros(5)))).lower(keys).as_text()
    assert "custom_call" not in hlo and "lapack" not in hlo.lower()
    # flax's QR-based orthogonal init does call LAPACK: the check above can fail.
    import flax.linen as nn

    qr_hlo = jax.jit(jax.vmap(lambda k: nn.initializers.orthogonal()(k, (8, 8)))).lower(keys).as_text()
    assert "custom_call" in qr_hlo


def _lapack_calls(fn, *args) -> set[str]:
    """Names of the LAPACK custom calls in the lowered program of ``jax.jit(fn)(*args)``."""
    import re

    import jax

    return set(re.findall(r"lapack_\w+", jax.jit(fn).lower(*args).as_text()))


def test_vmapped_training_programs_call_no_lapack():
    """The hang needs batched LAPACK kernels; jaxstab's PPO and SAC programs contain none.

    Checked for the default PPO configuration (discrete and tanh-Gaussian policies) and SAC with
    twin or quantile critics or the IRT actor (whose Sinkhorn backward solves its Schur system
    with :func:`jaxstab.ops.sinkhorn._spd_solve_small`, plain XLA ops, at the default sizes and
    by conjugate gradients when both sides exceed 16). This is what
    makes ``JAXSTAB_CPU_SCHEDULER_WORKAROUND=0`` (XLA's faster default CPU scheduler; README
    platform note, "What the guard costs") safe for them. The last assertions: a Sinkhorn
    gradient with both sides longer than 16 is LAPACK-free by default (conjugate gradients)
    and calls LAPACK's Cholesky with ``linear_solver="cholesky"`` (so the check can fail).
    """
    import gymnax
    import jax
    import jax.numpy as jnp

    from jaxstab.agents.ppo.ppo import PPOConfig, ppo_hparams
    from jaxstab.agents.sac import IRTConfig, SACConfig, default_hparams
    from jaxstab.envs import make
    from jaxstab.ops import sinkhorn
    from jaxstab.training.ppo import make_train as make_ppo_train
    from jaxstab.training.sac import make_train as make_sac_train

    keys = jax.random.split(jax.random.key(0), 2)

    def sac_calls(cfg, env, env_params, n_actions):
        hp = default_hparams(cfg, n_actions)
        return _lapack_calls(jax.vmap(make_sac_train(cfg, env, env_params), (0, None)), keys, hp)

    small = dict(hidden_sizes=(8,), batch_size=4, buffer_size=64, warmup_steps=8,
                 total_steps=16, eval_interval=16, eval_episodes=1)
    pend, pend_params = gymnax.make("Pendulum-v1")
    for critic in ("mse", "quantile"):
        assert sac_calls(SACConfig(critic=critic, **small), pend, pend_params, 1) == set(), critic
    for name, kind in (("CartPole-v1", "discrete"), ("Pendulum-v1", "tanh_gaussian")):
        env, env_params = gymnax.make(name)
        cfg = PPOConfig(num_envs=2, num_steps=8, num_minibatches=2, num_epochs=1,
                        total_timesteps=32, hidden_sizes=(8,), policy_kind=kind)
        calls = _lapack_calls(jax.vmap(make_ppo_train(cfg, env, env_params), (0, None)), keys,
                              ppo_hparams())
        assert calls == set(), name
    port, port_params = make("portfolio")
    n = port.action_space(port_params).shape[0]
    irt = SACConfig(actor="irt", policy="projected_gaussian", **small,
                    irt=IRTConfig(num_tokens=2, token_dim=4, num_prototypes=3))
    assert sac_calls(irt, port, port_params, n) == set(), "IRT"
    # an IRT head whose Sinkhorn sides both exceed 16 (17 tokens + 1, 20 prototypes): CG
    irt_big = dataclasses.replace(irt, irt=IRTConfig(num_tokens=17, token_dim=4,
                                                     num_prototypes=20))
    assert sac_calls(irt_big, port, port_params, n) == set(), "IRT, CG backward"
    # long Sinkhorn sides: CG by default, LAPACK's Cholesky on request (the check can fail)
    def loss(cost, solver):
        a = jnp.full((40,), 1 / 40)
        return jnp.sum(sinkhorn(cost, a, a, 0.5, linear_solver=solver).plan * cost)

    costs = jnp.ones((2, 40, 40))
    assert _lapack_calls(jax.vmap(jax.grad(lambda c: loss(c, "auto"))), costs) == set()
    big = _lapack_calls(jax.vmap(jax.grad(lambda c: loss(c, "cholesky"))), costs)
    assert any("potrf" in c for c in big), big
