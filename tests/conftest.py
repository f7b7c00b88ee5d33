"""Shared pytest configuration.

``import jaxstab`` comes first so its CPU guard (DESIGN.md platform note) is in XLA_FLAGS before
JAX creates a backend. Rank promotion raises everywhere; float64 is switched on per test with
the ``x64`` fixture (``jax.enable_x64`` context), never globally.
"""

import jaxstab  # noqa: F401  (must precede any JAX computation)

import jax
import pytest

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
