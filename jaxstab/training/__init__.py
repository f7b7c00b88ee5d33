"""Training loops compiled end to end with ``lax.scan``."""
