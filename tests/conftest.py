"""Shared pytest configuration.

``import jaxstab`` comes first so its CPU guard (DESIGN.md platform note) is in XLA_FLAGS before
JAX creates a backend. Rank promotion raises everywhere; float64 is switched on per test with
the ``x64`` fixture (``jax.enable_x64`` context), never globally.
"""

import os

# Several pytest-xdist workers share the machine: on a GPU none of them may grab most of its memory.
os.environ.setdefault("XLA_PYTHON_CLIENT_PREALLOCATE", "false")

import jaxstab  # noqa: F401,E402  (must precede any JAX computation)

import jax  # noqa: E402
import pytest  # noqa: E402

_MAX_WORKERS = 4


def pytest_xdist_auto_num_workers(config):
    """``-n auto``: one worker per usable core, at most 4 (each compiles its own programs)."""
    try:
        cores = len(os.sched_getaffinity(0))
    except AttributeError:  # not on Linux
        cores = os.cpu_count() or 1
    return max(1, min(cores, _MAX_WORKERS))


jax.config.update("jax_numpy_rank_promotion", "raise")


@pytest.fixture
def x64():
    """Run the test body with float64 enabled."""
    with jax.enable_x64(True):
        yield


@pytest.fixture
def strict_dtypes():
    """Strict dtype promotion (ops and losses tests only; it breaks optax's Adam globally)."""
    with jax.numpy_dtype_promotion("strict"):
        yield


@pytest.fixture(scope="session")
def compile_cache_env(tmp_path_factory) -> dict[str, str]:
    """Environment variables giving subprocesses a shared persistent compilation cache.

    A test that starts the same program in several processes (kill and resume) passes these to
    them: every process after the first loads the compiled executables instead of compiling
    again. One cache per pytest worker (session); the parent test process does not use it.
    """
    cache = tmp_path_factory.mktemp("jax_compilation_cache")
    return {"JAX_COMPILATION_CACHE_DIR": str(cache),
            "JAX_PERSISTENT_CACHE_MIN_COMPILE_TIME_SECS": "0",
            "JAX_PERSISTENT_CACHE_MIN_ENTRY_SIZE_BYTES": "0"}
