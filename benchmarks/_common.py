"""Shared helpers for benchmark scripts: machine description, timing, result tables.

Every script under benchmarks/ prints a Markdown table and writes it (plus JSON with the
machine, versions and date) to benchmarks/results/<name>_<platform>.{md,json}.
"""

from __future__ import annotations

import datetime as _dt
import json
import os
import platform
import statistics
import sys
import time
from typing import Any, Callable, Sequence

import jaxstab  # noqa: F401  (applies the CPU scheduler guard before JAX initializes)

import jax

RESULTS_DIR = os.path.join(os.path.dirname(os.path.abspath(__file__)), "results")


def usable_cores() -> int | None:
    """How many cores this process may run on (its CPU affinity, e.g. 1 under ``taskset -c 0``;
    JAX sizes its CPU thread pool from it); None where the platform cannot tell."""
    try:
        return len(os.sched_getaffinity(0))
    except (AttributeError, OSError):
        return None


def machine_info() -> dict[str, Any]:
    """Describe the machine and library versions the numbers were taken on."""
    import importlib.metadata as md

    def ver(name: str) -> str | None:
        try:
            return md.version(name)
        except md.PackageNotFoundError:
            return None

    cpu = platform.processor() or platform.machine()
    try:
        with open("/proc/cpuinfo") as fh:
            for line in fh:
                if line.startswith("model name"):
                    cpu = line.split(":", 1)[1].strip()
                    break
    except OSError:
        pass
    devices = jax.devices()
    return {
        "date": _dt.datetime.now(_dt.timezone.utc).strftime("%Y-%m-%d %H:%M UTC"),
        "platform": devices[0].platform,
        "device": str(devices[0].device_kind),
        "num_devices": len(devices),
        "cpu": cpu,
        "cpu_count": os.cpu_count(),
        "cores_usable": usable_cores(),
        "python": platform.python_version(),
        "versions": {
            n: ver(n)
            for n in ("jax", "jaxlib", "flax", "optax", "distrax", "gymnax", "numpy", "ott-jax", "jaxstab")
        },
        "xla_flags": os.environ.get("XLA_FLAGS", ""),
    }


def block(x: Any) -> Any:
    return jax.block_until_ready(x)


def time_fn(fn: Callable[[], Any], *, repeats: int = 5, warmup: int = 1) -> dict[str, float]:
    """Median / min wall time in seconds of ``fn()`` (which must block on its result)."""
    for _ in range(warmup):
        fn()
    times = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t0)
    return {"median_s": statistics.median(times), "min_s": min(times)}


def compiled_memory_bytes(jitted: Any, *args: Any) -> int | None:
    """Peak temp + output memory of a compiled program, from XLA's memory analysis."""
    try:
        ma = jitted.lower(*args).compile().memory_analysis()
    except Exception:  # pragma: no cover - backend dependent
        return None
    if ma is None:
        return None
    return int(ma.temp_size_in_bytes + ma.output_size_in_bytes + ma.argument_size_in_bytes)


def markdown_table(columns: Sequence[str], rows: Sequence[Sequence[Any]]) -> str:
    def fmt(v: Any) -> str:
        if isinstance(v, float):
            return f"{v:.4g}"
        return str(v)

    out = ["| " + " | ".join(columns) + " |", "|" + "|".join("---" for _ in columns) + "|"]
    out += ["| " + " | ".join(fmt(v) for v in row) + " |" for row in rows]
    return "\n".join(out)


def command_line(argv: list[str], root: str) -> str:
    """``python <script> <args>`` for a results header, with no path of this machine in it.

    Absolute paths (the script, arguments) become relative to ``root`` (the repository) or
    ``DIR`` when outside it (e.g. ``--peers-dir /somewhere``).

    Example:
      >>> command_line(["/r/benchmarks/b.py", "--peers-dir", "/x/p", "--n", "2"], "/r")
      'python benchmarks/b.py --peers-dir DIR --n 2'
    """
    def clean(a: str) -> str:
        if not os.path.isabs(a):
            return a
        return os.path.relpath(a, root) if a.startswith(root.rstrip(os.sep) + os.sep) else "DIR"

    return " ".join(["python", *(clean(a) for a in argv)])


def pinned_note(info: dict[str, Any]) -> str:
    """``", this process pinned to N"`` when the run could use fewer cores than the machine has
    (``info``: a :func:`machine_info` dict; older ones lack ``cores_usable``), else ``""``."""
    usable, total = info.get("cores_usable"), info.get("cpu_count")
    if usable is None or total is None or usable >= total:
        return ""
    return f", this process pinned to {usable}"


def write_results(name: str, title: str, columns: Sequence[str], rows: Sequence[Sequence[Any]],
                  notes: str = "", extra: dict[str, Any] | None = None,
                  command: str | None = None, machine: dict[str, Any] | None = None) -> str:
    """Print the table and write ``results/<name>_<platform>.{md,json}``; returns the md path.

    ``command`` is the command line recorded in the header (default: the running script and its
    arguments, relative to the repository root); ``machine`` the :func:`machine_info` of the run
    (default: this process's; a re-rendered result passes the original run's).
    """
    info = machine_info() if machine is None else machine
    if command is None:
        script = os.path.abspath(sys.argv[0]) if sys.argv and sys.argv[0] else ""
        root = os.path.dirname(RESULTS_DIR.rstrip(os.sep))
        root = os.path.dirname(root)
        if script.endswith(".py") and script.startswith(root + os.sep):
            command = command_line(sys.argv, root)
        else:
            command = f"python benchmarks/{name}.py"
    os.makedirs(RESULTS_DIR, exist_ok=True)
    stem = os.path.join(RESULTS_DIR, f"{name}_{info['platform']}")
    table = markdown_table(columns, rows)
    header = (
        f"# {title}\n\n"
        f"Machine: {info['cpu']} ({info['cpu_count']} cores{pinned_note(info)}), JAX platform "
        f"`{info['platform']}` "
        f"({info['device']}, {info['num_devices']} device(s)); {info['date']}.\n"
        f"Versions: " + ", ".join(f"{k} {v}" for k, v in info["versions"].items() if v) + ".\n"
        f"Produced by `{command}`.\n\n"
    )
    md = header + table + "\n" + (f"\n{notes.strip()}\n" if notes else "")
    print(md)
    with open(stem + ".md", "w") as fh:
        fh.write(md)
    with open(stem + ".json", "w") as fh:
        json.dump({"title": title, "machine": info, "columns": list(columns),
                   "rows": [list(r) for r in rows], "notes": notes, **(extra or {})},
                  fh, indent=2, default=str)
    return stem + ".md"
