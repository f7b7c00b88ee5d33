"""jaxstab: numerically stable, accelerator-first reinforcement learning in JAX.

Layers (imports only go down): ``jaxstab.ops`` (numerical operators) -> ``jaxstab.losses`` ->
``jaxstab.agents`` -> ``jaxstab.training``. Environments live in ``jaxstab.envs`` (the
top-level ``envs/`` directory of the source tree) and are never imported by the core.

Importing jaxstab applies a documented CPU guard for jax 0.10.2 (see ``jaxstab._platform``).
"""

from jaxstab._platform import apply_cpu_workarounds as _apply_cpu_workarounds

_apply_cpu_workarounds()


def _extend_path_for_source_checkout() -> None:
    # In an installed wheel jaxstab.envs is a real subpackage (pyproject maps envs/ to it).
    # When jaxstab is imported straight from a source checkout (cwd on sys.path), let the
    # import system find the top-level envs/ directory as jaxstab.envs as well.
    import os

    here = os.path.dirname(os.path.abspath(__file__))
    root = os.path.dirname(here)
    if not os.path.isdir(os.path.join(here, "envs")) and os.path.isfile(
        os.path.join(root, "envs", "__init__.py")
    ) and os.path.isfile(os.path.join(root, "pyproject.toml")):
        __path__.append(root)  # noqa: F821  (module __path__)


_extend_path_for_source_checkout()

__version__ = "0.1.0"

__all__ = ["__version__"]
