"""Scaling of sharded seed sweeps (jaxstab.distributed.sweep) over 1, 2, 4, 8 devices.

For each device count ``d`` and each number of seeds ``S`` it trains a short PPO CartPole-v1 run
per seed with :func:`jaxstab.distributed.sweep` on a 1-D mesh of ``d`` devices and reports the
compile time, the run time of the compiled program (median of ``--repeats``), the aggregate
environment steps per second ``S * steps_per_seed / run_time``, the speedup over one device and
the parallel efficiency ``sps(d) / (d * sps(1))`` at the same ``S``.

Each device count runs in its own interpreter: on the CPU the devices are forced with
``XLA_FLAGS=--xla_force_host_platform_device_count=d``, which must be set before JAX starts. On a
machine with accelerators (GPU/TPU) nothing is forced: ``d`` takes the first ``d`` real devices,
and device counts above the machine's are skipped. The script needs no change between the two.

Read CPU numbers for what they are: forced CPU devices are slices of the same cores (this
machine's 2). One CPU device does not use a multi-core CPU well for a training program made of
many small operations, so speedups up to about the core count are possible and devices beyond
it only add overhead (an earlier version of this note said one device already used every core
and the ideal speedup was 1x; measurements on a 2-core Intel Xeon contradict it, see
``docs/distributed.md``).

Usage: ``python benchmarks/bench_scaling.py [--devices 1 2 4 8] [--seeds 8 64 1024]
[--updates 2] [--repeats 2] [--quick]``.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, ROOT)

DEVICE_FLAG = "--xla_force_host_platform_device_count"
NUM_ENVS, NUM_STEPS = 4, 64


def _child_env(force_devices: int | None) -> dict[str, str]:
    env = dict(os.environ)
    flags = [f for f in env.get("XLA_FLAGS", "").split() if not f.startswith(DEVICE_FLAG)]
    if force_devices is not None:
        flags.append(f"{DEVICE_FLAG}={force_devices}")
    env["XLA_FLAGS"] = " ".join(flags)
    env["PYTHONPATH"] = ROOT + os.pathsep + env.get("PYTHONPATH", "")
    return env


def probe() -> None:
    """Child mode: print the default platform and its device count as JSON."""
    import jaxstab  # noqa: F401  (CPU guard)
    import jax

    devs = jax.devices()
    print(json.dumps({"platform": devs[0].platform, "num_devices": len(devs),
                      "device_kind": devs[0].device_kind}), flush=True)


def child(devices: int, seeds: list[int], updates: int, repeats: int) -> None:
    """Child mode: time sweeps of ``seeds`` on a mesh of ``devices`` devices; JSON lines out."""
    import jaxstab  # noqa: F401  (CPU guard)
    import gymnax
    import jax

    from jaxstab import distributed as dist
    from jaxstab.agents.ppo import PPOConfig, ppo_hparams
    from jaxstab.training.ppo import make_train

    avail = jax.devices()
    if len(avail) < devices:
        raise SystemExit(f"asked for {devices} devices, {len(avail)} available")
    mesh = dist.default_mesh(devices=avail[:devices])
    env, env_params = gymnax.make("CartPole-v1")
    steps_per_seed = NUM_ENVS * NUM_STEPS * updates
    cfg = PPOConfig(num_envs=NUM_ENVS, num_steps=NUM_STEPS, num_epochs=2, num_minibatches=2,
                    total_timesteps=steps_per_seed)
    train = make_train(cfg, env, env_params)
    hp = ppo_hparams()
    for s in seeds:
        keys = jax.random.split(jax.random.key(0), s)
        t0 = time.perf_counter()
        jax.block_until_ready(dist.sweep(train, keys, hp, mesh=mesh))  # compile + first run
        first = time.perf_counter() - t0
        runs = []
        for _ in range(repeats):
            t0 = time.perf_counter()
            out = jax.block_until_ready(dist.sweep(train, keys, hp, mesh=mesh))
            runs.append(time.perf_counter() - t0)
        runs.sort()
        run_s = runs[len(runs) // 2]
        ret = float(jax.device_get(out[1]["episode_return"][:, -1]).mean())
        print(json.dumps({"devices": devices, "seeds": s, "steps_per_seed": steps_per_seed,
                          "compile_s": max(first - run_s, 0.0), "run_s": run_s,
                          "sps": s * steps_per_seed / run_s, "final_return": ret,
                          "platform": avail[0].platform}), flush=True)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--devices", type=int, nargs="+", default=[1, 2, 4, 8])
    ap.add_argument("--seeds", type=int, nargs="+", default=[8, 64, 1024])
    ap.add_argument("--updates", type=int, default=2,
                    help=f"PPO updates per seed ({NUM_ENVS} envs x {NUM_STEPS} steps each)")
    ap.add_argument("--repeats", type=int, default=2)
    ap.add_argument("--timeout", type=int, default=1800, help="seconds per device count")
    ap.add_argument("--quick", action="store_true", help="CI-sized: devices 1 2, seeds 8 16")
    ap.add_argument("--_child", type=int, default=None, help=argparse.SUPPRESS)
    ap.add_argument("--_probe", action="store_true", help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args._probe:
        return probe()
    if args._child is not None:
        return child(args._child, args.seeds, args.updates, args.repeats)
    if args.quick:
        args.devices, args.seeds, args.updates, args.repeats = [1, 2], [8, 16], 2, 1

    me = os.path.abspath(__file__)
    p = subprocess.run([sys.executable, me, "--_probe"], env=_child_env(None),
                       capture_output=True, text=True, timeout=300)
    if p.returncode:
        raise SystemExit(f"probe failed:\n{p.stderr[-3000:]}")
    info = json.loads(p.stdout.strip().splitlines()[-1])
    on_cpu = info["platform"] == "cpu"
    print(f"platform {info['platform']} ({info['device_kind']}), {info['num_devices']} "
          f"device(s); {'forcing CPU device counts' if on_cpu else 'using real devices'}",
          flush=True)

    load_before = os.getloadavg() if hasattr(os, "getloadavg") else None
    results = []
    for d in args.devices:
        if not on_cpu and d > info["num_devices"]:
            print(f"skip {d} devices: only {info['num_devices']} available", flush=True)
            continue
        cmd = [sys.executable, me, "--_child", str(d), "--updates", str(args.updates),
               "--repeats", str(args.repeats), "--seeds", *map(str, args.seeds)]
        t0 = time.time()
        # stream the child's JSON lines so partial results are visible as they come
        err = tempfile.TemporaryFile("w+")
        proc = subprocess.Popen(cmd, env=_child_env(d if on_cpu else None),
                                stdout=subprocess.PIPE, stderr=err, text=True)
        try:
            for line in proc.stdout:
                if line.startswith("{"):
                    r = json.loads(line)
                    results.append(r)
                    print(f"d={r['devices']} S={r['seeds']}: {r['sps']:.0f} steps/s "
                          f"(run {r['run_s']:.2f}s, compile {r['compile_s']:.1f}s)", flush=True)
            rc = proc.wait(timeout=max(1.0, args.timeout - (time.time() - t0)))
        finally:
            if proc.poll() is None:
                proc.kill()
                proc.wait()
        if rc:
            err.seek(0)
            raise SystemExit(f"{d}-device run failed:\n{err.read()[-3000:]}")
        err.close()
        print(f"  {d} device(s) done in {time.time() - t0:.0f}s", flush=True)

    base = {r["seeds"]: r["sps"] for r in results if r["devices"] == 1}
    rows = []
    for r in sorted(results, key=lambda r: (r["seeds"], r["devices"])):
        b = base.get(r["seeds"])
        speedup = r["sps"] / b if b else float("nan")
        rows.append([r["seeds"], r["devices"], r["steps_per_seed"], round(r["compile_s"], 1),
                     round(r["run_s"], 3), round(r["sps"]), round(speedup, 2),
                     round(speedup / r["devices"], 2), round(r["final_return"], 1)])
    cols = ["seeds", "devices", "steps/seed", "compile s", "run s", "aggregate steps/s",
            "speedup vs 1 device", "efficiency sps(d)/(d sps(1))", "return (last update)"]
    kind = ("forced CPU devices (--xla_force_host_platform_device_count), all sharing the "
            "same cores" if on_cpu else f"real {info['device_kind']} devices")
    notes = (
        f"PPO CartPole-v1, {NUM_ENVS} envs x {NUM_STEPS} steps x {args.updates} updates per seed "
        f"(2 epochs x 2 minibatches, 64x64 networks), jaxstab.distributed.sweep over a 1-D mesh "
        f"of d {kind}; run time is the median of {args.repeats} runs after a compile+run. "
        "Efficiency = (aggregate steps/s at d devices) / (d x steps/s at 1 device), same seeds.\n"
        + ("\nOn the CPU the d devices are slices of the same cores. One device does not use "
           "a multi-core CPU well for these programs of many small operations, so speedups up "
           "to about the core count are possible; devices beyond it only add overhead."
           if on_cpu else ""))
    if load_before is not None:
        notes += (f"\nLoad average (1, 5, 15 min) at start {tuple(round(x, 1) for x in load_before)}"
                  f", at end {tuple(round(x, 1) for x in os.getloadavg())} "
                  f"({os.cpu_count()} cores): anything well above the core count means other "
                  "jobs took most of the CPU and the timings are not comparable.\n")
    from benchmarks._common import write_results

    write_results("bench_scaling", "Sharded seed sweeps: scaling over devices", cols, rows,
                  notes, extra={"results": results, "probe": info})


if __name__ == "__main__":
    main()
