"""l2rebound: teacher–student experiments on tanh networks.

How far a student's parameters are from its teacher's while it trains (the ℓ₂-distance rebound)::

    import l2rebound
    result = l2rebound.run(preset="A", runs=3)   # or l2rebound.load("results/epoch-<hash>")
    result.frame()                               # pandas: one row per run and epoch
    result.figure()                              # matplotlib

Importing the package changes nothing global: JAX's settings (64-bit types, devices, lowerings) stay as
the caller left them; the engine switches float64 on for its own calls only, and is imported at the first
run.
"""

from l2rebound.api import load, run, sweep
from l2rebound.config import Config, ConfigError, presets
from l2rebound.results import KINDS, EpochResult, NoiseResult, Result
from l2rebound.store import StoreError

__all__ = ["KINDS", "Config", "ConfigError", "EpochResult", "NoiseResult", "Result", "StoreError", "load", "presets",
           "run", "sweep"]
