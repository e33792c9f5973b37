"""l2rebound: teacher–student experiments on tanh networks.

How far a student's parameters are from its teacher's while it trains (the ℓ₂-distance rebound)::

    import l2rebound
    result = l2rebound.run(preset="A", runs=3)   # or l2rebound.load("results/epoch-<hash>")
    result.frame()                               # pandas: one row per run and epoch
    result.figure()                              # matplotlib

Importing the package changes nothing global: JAX's settings (64-bit types, devices, lowerings) stay as
the caller left them; the engine switches float64 on for its own calls only, and is imported at the first
run. The experiment kinds are ``kinds()`` (``registry.KindSpec`` each); another package adds its own through
the entry point group ``l2rebound.kinds``, a notebook with ``register_kind``.
"""

from importlib import metadata

from l2rebound.api import load, run, sweep
from l2rebound.config import Config, ConfigError, presets
from l2rebound.registry import KindSpec, kinds, register_kind
from l2rebound.results import Result
from l2rebound.store import StoreError

try:
    __version__ = metadata.version("l2rebound")
except metadata.PackageNotFoundError:  # run from a source tree that was never installed
    __version__ = "unknown"



def __getattr__(name: str):
    """The built-in kinds' result types by class name (``l2rebound.EpochResult``, ...), imported when asked for."""
    from l2rebound import registry

    for reference in registry.BUILTIN_KINDS.values():
        spec = registry.resolve(reference)
        if spec.result.rpartition(":")[2] == name:
            return spec.result_type()
    raise AttributeError(f"module 'l2rebound' has no attribute {name!r}")


__all__ = ["Config", "ConfigError", "KindSpec", "Result", "StoreError", "__version__", "kinds", "load", "presets",
           "register_kind", "run", "sweep"]
