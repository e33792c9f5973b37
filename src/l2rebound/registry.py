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
  ``l2rebound.rules`` (a ``rules.Rule``) and ``l2rebound.optimizers`` (a ``rules.Optimizer``), loaded the
  first time a name is looked up;
* ``register_kind`` in the running process (a notebook, a test).

A name that is taken already is refused: a second member under one name would silently replace the first
one's numbers. This module imports nothing heavier than ``importlib``: ``config`` validates names and fields
against it without loading any kind's code.
"""

from __future__ import annotations

import functools
import importlib
from collections.abc import Mapping
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
}
"""The package's own kinds: name -> reference to its ``KindSpec``. The first is the default experiment."""


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
    example: config fields of a small example that runs in seconds (tests, docs).
    sweepable: a sweep can run it per cell: it records per-run curves over epochs (``curves``).
    packable: ``"module:function"`` training several of its configs that differ only in traced fields in one
        compiled program, ``(configs, on_progress, checkpoints) -> [Result]``; None: one config at a time.
    curves: its metrics are curves over epochs, (R, E + 1) per name, and it keeps students every
        ``align_every`` epochs (``kept_epochs``, ``kept_theta``): rebound statistics, ``align``, normalised
        views. Otherwise its metrics are final values over noise levels, (S, R), with ``levels`` (S,).
    theory: the linear-response analysis (``l2rebound analyze``) applies to it.
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
    example: Mapping[str, Any] = field(default_factory=dict)
    sweepable: bool = False
    packable: str | None = None
    curves: bool = False
    theory: bool = False

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


def _entry_points(group: str) -> dict[str, Any]:
    """The entry points of ``group`` in the installed packages: name -> ``EntryPoint`` (not loaded)."""
    from importlib.metadata import entry_points

    return {point.name: point for point in entry_points(group=group)}


_RUNTIME_KINDS: dict[str, KindSpec] = {}


def _check_name(spec: KindSpec, name: str) -> KindSpec:
    if not isinstance(spec, KindSpec) or spec.name != name:
        raise TypeError(f"the experiment kind {name!r} must be a KindSpec named {name!r}, got {spec!r}")
    return spec


@functools.cache
def _kind(name: str) -> KindSpec:
    if name in BUILTIN_KINDS:
        return _check_name(resolve(BUILTIN_KINDS[name]), name)
    if name in _RUNTIME_KINDS:
        return _RUNTIME_KINDS[name]
    return _check_name(_entry_points(KIND_GROUP)[name].load(), name)


def kind_names() -> tuple[str, ...]:
    """Every kind's name: the built-in ones first, then those of installed packages and of this process. No
    kind is loaded."""
    names = dict.fromkeys([*BUILTIN_KINDS, *_entry_points(KIND_GROUP), *_RUNTIME_KINDS])
    return tuple(names)


def kind(name: str) -> KindSpec:
    """The spec of the kind ``name`` (``KeyError`` when there is none)."""
    if name not in kind_names():
        raise KeyError(name)
    return _kind(name)


def kinds() -> Mapping[str, KindSpec]:
    """Every kind's spec by name (each is loaded)."""
    return MappingProxyType({name: kind(name) for name in kind_names()})


def register_kind(spec: KindSpec) -> KindSpec:
    """Add ``spec`` for this process (a plugin package uses the ``l2rebound.kinds`` entry point instead); a
    taken name is refused (``ValueError``)."""
    if spec.name in kind_names():
        raise ValueError(f"an experiment kind named {spec.name!r} is registered already")
    _RUNTIME_KINDS[_check_name(spec, spec.name).name] = spec
    return spec


def plugin_members(group: str) -> dict[str, Any]:
    """The members that installed packages add to ``group`` (``RULE_GROUP``, ``OPTIMIZER_GROUP``), loaded:
    name -> object."""
    return {name: point.load() for name, point in _entry_points(group).items()}
