"""Environment registry: ``make(name, **kwargs) -> (env, env_params)``.

``"portfolio"`` builds :func:`jaxstab.envs.portfolio.make_portfolio`; every gymnax name
(``gymnax.registered_envs``, e.g. ``"CartPole-v1"``, ``"Pendulum-v1"``) goes to
``gymnax.make``.
"""

from __future__ import annotations

from typing import Any

import gymnax

from .portfolio import make_portfolio

__all__ = ["ENV_NAMES", "make"]

#: Every name :func:`make` accepts: ``"portfolio"`` first, then gymnax's registered names.
ENV_NAMES: tuple[str, ...] = ("portfolio",) + tuple(gymnax.registered_envs)


def make(name: str, **kwargs: Any) -> tuple[Any, Any]:
    """Build an environment and its parameters by name.

    Args:
      name: ``"portfolio"`` or a gymnax environment name.
      **kwargs: keyword arguments of :func:`~jaxstab.envs.portfolio.make_portfolio` for
        ``"portfolio"``, of ``gymnax.make`` otherwise.

    Returns:
      ``(env, env_params)``.

    Raises:
      ValueError: unknown ``name`` (the message lists the valid names).
      TypeError: ``name`` is not a string.

    Example:
      >>> env, params = make("portfolio", split="validation", cash=True)
      >>> env.action_space(params).shape
      (21,)
    """
    if not isinstance(name, str):
        raise TypeError(f"name must be a string, got {type(name).__name__}")
    if name == "portfolio":
        return make_portfolio(**kwargs)
    if name in gymnax.registered_envs:
        return gymnax.make(name, **kwargs)
    raise ValueError(f"unknown environment name {name!r}; valid names: {', '.join(ENV_NAMES)}")
