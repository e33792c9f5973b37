"""l2rebound: teacher–student experiments on tanh networks.

How far a student's parameters are from its teacher's while it trains (the ℓ₂-distance rebound).
Importing the package switches JAX to float64 before any array exists; float32 stays available per
experiment through ``Config.dtype``.
"""

import jax

jax.config.update("jax_enable_x64", True)

from l2rebound.config import Config, ConfigError  # noqa: E402

__all__ = ["Config", "ConfigError"]
