"""jaxstab environments (installed as ``jaxstab.envs``).

gymnax-compatible: ``reset(key, params) -> (obs, state)`` and
``step(key, state, action, params) -> (obs, state, reward, terminated, truncated, info)``.
The portfolio environment on real S&P 500 data arrives with its own issue.
"""

__all__: list[str] = []
