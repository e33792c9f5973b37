"""What the package can run, as plain data: the experiment kinds, the training rules and the optimisers.

An experiment kind is described by a ``KindSpec``: its name (the ``Config.experiment`` value and the CLI
command), what it measures, the config fields it uses besides the common ones, a small example config, its
capabilities (``sweepable``, ``packable``, ``curves``, ``theory``) and where its parts live, as
``"module:attribute"`` references that are imported only when used: the result type (NumPy), the engine
entry (JAX) and the figures (matplotlib). Callers ask a spec what a kind can do; they never compare kind
names or result classes.

Members come from three places, looked up in this order:

* the built-in kinds of ``l2rebound.kinds`` (``BUILTIN_KINDS``) and the rules and optimisers of
  ``l2rebound.rules``;
* other installed packages, through the entry-point groups ``l2rebound.kinds`` (a ``KindSpec``),
  ``l2rebound.rules`` (a ``rules.Rule``) and ``l2rebound.optimizers`` (a ``rules.Optimizer``): their names
  are read from the installed packages' metadata once per process, and a member is loaded (its module
  imported) only when its name is looked up or every member is listed (the CLI's commands and choices);
* ``register_kind`` in the running process (a notebook, a test).

A name that is taken already (a built-in one, or one that two packages declare) is refused: a second member
under one name would silently replace the first one's numbers. A plugin that cannot be loaded, or whose
name is refused, is left out of the listings with one ``PluginWarning``, and looking its name up raises
``RegistryError`` saying why: one broken package does not stop the others. This module imports nothing
heavier than ``importlib``: ``config`` validates names and fields against it without loading any kind's code.
"""

from __future__ import annotations

import functools
import importlib
import re
import warnings
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from types import MappingProxyType
from typing import Any

KIND_GROUP = "l2rebound.kinds"
RULE_GROUP = "l2rebound.rules"
OPTIMIZER_GROUP = "l2rebound.optimizers"

BUILTIN_KINDS = {
    "epoch": "l2rebound.kinds.epoch:SPEC",
    "noise": "l2rebound.kinds.noise:SPEC",
    "compress": "l2rebound.kinds.compress:SPEC",
    "procedure": "l2rebound.kinds.procedure:SPEC",
}
"""The package's own kinds: name -> reference to its ``KindSpec``. The first is the default experiment."""


class RegistryError(ValueError):
    """A kind, rule or optimiser name that is not registered, or a plugin that cannot be loaded or takes a
    name registered already; the message says which and why."""


class PluginWarning(UserWarning):
    """A plugin left out of the listings (it cannot be loaded, or its name is taken)."""


@dataclass(frozen=True)
class KindSpec:
    """One experiment kind, as data.

    name: ``Config.experiment`` value and CLI command.
    help: one line (the command list); description: a paragraph (the command's ``--help``).
    result: ``"module:Class"`` of its ``results.Result`` subclass (NumPy only: tables, arrays, summary).
    engine: ``"module:function"`` computing it, ``(config, on_progress, checkpoint) -> Result`` (JAX).
    figures: ``"module:function"`` drawing it, ``(result, squared) -> {view: matplotlib Figure}``.
    views: its figures' names, the first being ``Result.figure()``'s default.
    fields: the kind-specific config fields it uses (``config.KIND_FIELDS``); the others must keep their
        defaults in its configs.
    required: config fields that must be at least 1 for this kind.
    ignored: general config fields that it does not read: a value other than the default is refused.
    example: config fields of a small example that runs in seconds (tests, docs).
    sweepable: a sweep can run it per cell: it records per-run curves over epochs (``curves``).
    packable: ``"module:function"`` training several of its configs that differ only in traced fields in one
        compiled program, ``(configs, on_progress, checkpoints) -> [Result]``; None: one config at a time.
    curves: its metrics are curves over epochs, (R, E + 1) per name, and it keeps students every
        ``align_every`` epochs (``kept_epochs``, ``kept_theta``): rebound statistics, ``align``, normalised
        views. Otherwise its metrics are final values over noise levels, (S, R), with ``levels`` (S,).
    theory: the linear-response analysis (``l2rebound analyze``) applies to it.
    rule_state: it trains rules that carry per-parameter state (``rules.Rule.blocks`` > 1).
    """

    name: str
    help: str
    description: str
    result: str
    engine: str
    figures: str
    views: tuple[str, ...]
    fields: tuple[str, ...] = ()
    required: tuple[str, ...] = ()
    ignored: tuple[str, ...] = ()
    example: Mapping[str, Any] = field(default_factory=dict, hash=False)
    sweepable: bool = False
    packable: str | None = None
    curves: bool = False
    theory: bool = False
    rule_state: bool = False

    def __post_init__(self) -> None:
        if not re.fullmatch(r"[a-z][a-z0-9_-]*", str(self.name)):
            raise ValueError(f"an experiment kind's name is a lower-case word (its CLI command), not {self.name!r}")
        if self.sweepable and not self.curves:
            raise ValueError(f"kind {self.name!r}: a sweep summarises curves over epochs; sweepable needs curves")
        if self.packable and not self.sweepable:
            raise ValueError(f"kind {self.name!r}: packing serves sweeps; packable needs sweepable")
        object.__setattr__(self, "example", MappingProxyType(dict(self.example)))  # frozen like the rest

    def result_type(self) -> type:
        """The result class (imports its module: NumPy)."""
        return resolve(self.result)

    def compute(self, config, on_progress=None, checkpoint=None):
        """Run the engine entry on ``config`` (imports the engine: JAX)."""
        return resolve(self.engine)(config, on_progress, checkpoint)

    def draw(self, result, squared: bool = False) -> dict:
        """Every view of ``result`` as a matplotlib Figure (imports matplotlib)."""
        return resolve(self.figures)(result, squared)


def resolve(reference: str) -> Any:
    """The object that ``"module:attribute"`` names (the module is imported)."""
    module, _, name = reference.partition(":")
    return getattr(importlib.import_module(module), name)


@functools.cache
def _entry_points(group: str) -> dict[str, Any]:
    """The entry points of ``group`` in the installed packages, read once: name -> ``EntryPoint`` (not loaded),
    or the reason the name is refused (a string) where two packages declare it."""
    from importlib.metadata import entry_points

    found: dict[str, Any] = {}
    for point in entry_points(group=group):
        found[point.name] = (f"two installed packages declare the {group} entry point {point.name!r}"
                             if point.name in found else point)
    return found


def load_plugin(group: str, name: str, check: Callable[[Any], bool], taken=()) -> Any:
    """The member that the entry point ``name`` of ``group`` names, loaded; ``RegistryError`` when it is
    refused (its name is in ``taken``, or declared twice), cannot be loaded, or fails ``check``."""
    point = _entry_points(group).get(name)
    if point is None:
        raise RegistryError(f"no {group} entry point is named {name!r}")
    if isinstance(point, str) or name in taken:
        raise RegistryError(point if isinstance(point, str) else
                            f"the {group} entry point {name!r} takes a name registered already")
    try:
        member = point.load()
    except Exception as error:  # a broken package: said in one line, the others go on
        raise RegistryError(f"the {group} entry point {name!r} ({point.value}) cannot be loaded "
                            f"({type(error).__name__}: {error}); fix or uninstall the package that declares "
                            "it") from None
    if not check(member):
        raise RegistryError(f"the {group} entry point {name!r} ({point.value}) is not a member named {name!r}")
    return member


def plugin_names(group: str) -> tuple[str, ...]:
    """The names that installed packages declare in ``group`` (nothing is loaded)."""
    return tuple(_entry_points(group))


def listed(names, lookup: Callable[[str], Any]) -> dict[str, Any]:
    """``lookup(name)`` for each of ``names``, leaving out (with one ``PluginWarning`` each) those that raise
    ``RegistryError``."""
    out = {}
    for name in names:
        try:
            out[name] = lookup(name)
        except RegistryError as error:
            warnings.warn(str(error), PluginWarning, stacklevel=3)
    return out


_RUNTIME_KINDS: dict[str, KindSpec] = {}


def _is_kind(name: str) -> Callable[[Any], bool]:
    return lambda spec: isinstance(spec, KindSpec) and spec.name == name


@functools.cache
def _kind(name: str) -> KindSpec:
    if name in BUILTIN_KINDS:
        return resolve(BUILTIN_KINDS[name])
    if name in _RUNTIME_KINDS:
        return _RUNTIME_KINDS[name]
    return load_plugin(KIND_GROUP, name, _is_kind(name), taken=BUILTIN_KINDS)


def kind_names() -> tuple[str, ...]:
    """Every kind's name: the built-in ones first, then those of installed packages and of this process. No
    kind is loaded."""
    return tuple(dict.fromkeys([*BUILTIN_KINDS, *plugin_names(KIND_GROUP), *_RUNTIME_KINDS]))


def kind(name: str) -> KindSpec:
    """The spec of the kind ``name``; ``RegistryError`` when there is none or it cannot be loaded."""
    if name not in kind_names():
        raise RegistryError(f"no experiment kind is named {name!r} (registered: {', '.join(kind_names())})")
    return _kind(name)


def kinds() -> Mapping[str, KindSpec]:
    """Every kind's spec by name (each is loaded; a plugin that cannot be is left out with a warning)."""
    return MappingProxyType(listed(kind_names(), kind))


def kinds_with(capability: str) -> tuple[str, ...]:
    """The names of the kinds that have ``capability`` (a ``KindSpec`` field: ``sweepable``, ``curves``, ...)."""
    return tuple(name for name, spec in kinds().items() if getattr(spec, capability))


def register_kind(spec: KindSpec) -> KindSpec:
    """Add ``spec`` for this process (a plugin package uses the ``l2rebound.kinds`` entry point instead); a
    taken name is refused (``ValueError``)."""
    if not isinstance(spec, KindSpec):
        raise TypeError(f"register_kind takes a KindSpec, not {spec!r}")
    if spec.name in kind_names():
        raise ValueError(f"an experiment kind named {spec.name!r} is registered already")
    _RUNTIME_KINDS[spec.name] = spec
    return spec
