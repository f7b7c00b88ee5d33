"""Agents: ``make_*`` factories returning pure ``(init, update)`` pairs."""
