"""A sweep's grid: which config fields vary over which values, and the configs of its cells.

An axis is one field and its values, parsed and validated like the field's CLI option: ``learning-rate=
1e-3,1e-2`` (a list), ``learning-rate=1e-4:1e-1:4`` (START:STOP:COUNT: log-spaced for floats, linear for
integers, both ends included), ``teacher-dims=2,4,1/2,8,1`` (values that hold commas are separated by
``/``). Axes make a product; a zipped pair of axes of equal length varies together. Bad input raises
``ConfigError`` with one line naming the field (and, for a value the config refuses, the cell).

No JAX here.
"""

from __future__ import annotations

import dataclasses
import itertools
from collections.abc import Iterable
from typing import Any, NamedTuple

import numpy as np

from l2rebound.config import Config, ConfigError, flag, option
from l2rebound.rules import all_rules, rule

MAX_CELLS = 10_000
"""More cells than this need an explicit yes (``--yes``): a typo in a range should not start a week of work."""
MAX_VALUES = 1_000_000
"""Most values one axis may hold (beyond it a range is a typo, and would fill the memory before any check)."""


class Axis(NamedTuple):
    """One swept field (its ``Config`` name) and its values, in order; ``log``: the values are positive and
    log-spaced (figures use log axes)."""

    field: str
    values: tuple
    log: bool = False


def _fields() -> dict[str, dataclasses.Field]:
    return {f.name: f for f in dataclasses.fields(Config) if f.metadata.get("cli") is not False}


def python_name(name: str) -> str:
    """A field name in either spelling (``learning-rate``, ``--learning-rate``, ``learning_rate``) in Python
    spelling; unchecked."""
    return name.strip().lstrip("-").replace("-", "_")


def field_name(name: str) -> str:
    """The ``Config`` field of ``name`` in CLI spelling (``learning-rate``, ``--learning-rate``) or Python
    spelling (``learning_rate``); ``ConfigError`` for no such field."""
    field = python_name(name)
    if field not in _fields():
        raise ConfigError(f"--grid: no config field {name!r}; fields: {', '.join(map(option, _fields()))}")
    return field


def _parse_value(field: str, text: str):
    meta = _fields()[field].metadata
    try:
        return meta["parse"](text) if meta["parse"] else text
    except (ValueError, ConfigError) as error:
        raise ConfigError(f"--grid {option(field)}: {text!r} is not a value of {flag(field)} ({error})") from None


def parse_axis(spec: str) -> Axis:
    """``FIELD=V1,V2,...`` or ``FIELD=START:STOP:COUNT`` (see the module docstring) -> ``Axis``."""
    name, sep, text = str(spec).partition("=")
    if not sep or not text.strip():
        raise ConfigError(f"--grid expects FIELD=V1,V2,... or FIELD=START:STOP:COUNT, got {spec!r}")
    field = field_name(name)
    kind = type(_fields()[field].default)
    if kind is tuple or field == "student_dims":
        if field == "noise_levels":
            raise ConfigError("--grid: sweep the noise level with noise-sigma (the noise experiment sweeps "
                              "noise-levels itself)")
        return make_axis(field, [_parse_value(field, part) for part in text.split("/")])
    if ":" in text and kind in (int, float):
        try:
            start, stop, count = text.split(":")
            start, stop, count = float(start), float(stop), int(count)
        except ValueError:
            raise ConfigError(f"--grid {name}: START:STOP:COUNT needs two numbers and a count, got {text!r}") from None
        if not (np.isfinite(start) and np.isfinite(stop) and 2 <= count <= MAX_VALUES and start < stop):
            raise ConfigError(f"--grid {name}: START:STOP:COUNT needs finite START < STOP and 2 <= COUNT <= "
                              f"{MAX_VALUES}, got {text!r}")
        start, stop = kind(start), kind(stop)
        if kind is float and start > 0:
            return make_axis(field, [float(v) for v in np.geomspace(start, stop, count)], log=True)
        if kind is int and count > stop - start + 1:
            raise ConfigError(f"--grid {name}: {count} integers do not fit between {start} and {stop}")
        values = np.linspace(start, stop, count)
        return make_axis(field, [round(v) if kind is int else float(v) for v in values])
    return make_axis(field, [_parse_value(field, part) for part in text.split(",")])


def make_axis(field: str, values, log: bool | None = None) -> Axis:
    """``Axis`` of ``field`` (either spelling) over ``values`` (Python values), refusing an empty or repeated
    list; ``log`` by default when every value is a positive float and they span more than a decade."""
    field = field_name(field)
    if not _fields()[field].metadata.get("described", True):
        raise ConfigError(f"--grid {option(field)}: how the cells are kept is one choice for the whole sweep "
                          f"({flag(field)}), not an axis")
    if isinstance(values, (str, bytes)) or not isinstance(values, Iterable):  # a string would be its letters
        raise ConfigError(f"--grid {option(field)}: expects a list of values, got {values!r}")
    values = tuple(_typed(field, v) for v in values)
    if not values:
        raise ConfigError(f"--grid {option(field)}: no values")
    if len(values) > MAX_VALUES:
        raise ConfigError(f"--grid {option(field)}: {len(values)} values, more than {MAX_VALUES}")
    seen: set = set()
    for value in values:
        if value in seen:
            raise ConfigError(f"--grid {option(field)}: repeated value {value!r}")
        seen.add(value)
    if log is None:
        numbers = all(isinstance(v, float) and v > 0 for v in values)
        log = numbers and len(values) > 2 and max(values) / min(values) > 10
    return Axis(field, values, log)


def _typed(field: str, value):
    """``value`` as the field holds it (an int 1 for a float field is 1.0, a list of dims a tuple), so that
    equal settings compare and print alike; a value of the wrong kind raises ``ConfigError``."""
    kind = type(_fields()[field].default)
    if field.endswith("_dims") and isinstance(value, str):
        return _parse_value(field, value)
    try:
        if isinstance(value, (list, tuple)):
            return tuple(int(v) for v in value)
        if field.endswith("_dims"):
            raise TypeError(value)
        if kind is float and not isinstance(value, bool):
            return float(value)
        if kind is int and not isinstance(value, bool) and float(value) == int(value):
            return int(value)
    except (TypeError, ValueError, OverflowError):
        raise ConfigError(f"--grid {option(field)}: {value!r} is not a value of {flag(field)}") from None
    return value


def zip_fields(zipped) -> list[tuple[str, str]]:
    """Zipped pairs of field names in either spelling, as ``Config`` field names; ``ConfigError`` unless each is
    a pair."""
    pairs = []
    for pair in zipped:
        if len(pair) != 2:
            raise ConfigError(f"--zip expects two fields FIELD1,FIELD2, got {','.join(pair)!r}")
        pairs.append((field_name(pair[0]), field_name(pair[1])))
    return pairs


def label(value: Any) -> str:
    """A cell value as a figure or table shows it: ``0.01``, ``2,25,25,1``, ``drr``."""
    if isinstance(value, tuple):
        return ",".join(map(str, value))
    return f"{value:g}" if isinstance(value, float) else str(value)


def coordinates(axes: list[Axis], zipped: list[tuple[str, str]] = ()) -> list[dict[str, Any]]:
    """Every cell's field values: the product of the axes, where each zipped pair (two axes' fields, of equal
    length) counts as one axis whose values go together."""
    by_field = {axis.field: axis for axis in axes}
    if len(by_field) != len(axes):
        raise ConfigError("--grid: a field is swept twice; give each field one --grid")
    paired: dict[str, str] = {}
    for a, b in zip_fields(zipped):
        for f in (a, b):
            if f not in by_field:
                raise ConfigError(f"--zip {option(a)},{option(b)}: {option(f)} has no --grid")
            if f in paired or a == b:
                raise ConfigError(f"--zip: {option(f)} is zipped twice")
        if len(by_field[a].values) != len(by_field[b].values):
            raise ConfigError(f"--zip {option(a)},{option(b)}: the two lists differ in length "
                              f"({len(by_field[a].values)} and {len(by_field[b].values)})")
        paired[a], paired[b] = b, a
    groups, seen = [], set()
    for axis in axes:
        if axis.field in seen:
            continue
        partner = paired.get(axis.field)
        fields = (axis.field, partner) if partner else (axis.field,)
        seen.update(fields)
        groups.append([dict(zip(fields, values)) for values in zip(*(by_field[f].values for f in fields))])
    return [dict(itertools.chain.from_iterable(part.items() for part in combo)) for combo in itertools.product(*groups)]


def cell_configs(base: Config, axes: list[Axis], zipped: list[tuple[str, str]] = (), yes: bool = False
                 ) -> list[tuple[dict[str, Any], Config]]:
    """(field values, config) of every cell of the grid over ``base``; ``ConfigError`` naming the field or
    the cell for anything the config refuses, a field ``base``'s experiment or rule does not use, or more
    than ``MAX_CELLS`` cells without ``yes``."""
    if not axes:
        raise ConfigError("--grid: give at least one FIELD=VALUES to sweep")
    for axis in axes:
        meta = _fields()[axis.field].metadata
        if base.experiment not in meta.get("experiments", (base.experiment,)):
            raise ConfigError(f"--grid {option(axis.field)}: the {base.experiment} experiment does not use it")
    cells = coordinates(axes, zipped)
    if len(cells) > MAX_CELLS and not yes:
        raise ConfigError(f"the grid has {len(cells)} cells, more than {MAX_CELLS}: check the ranges, or confirm with "
                          "--yes")
    out = []
    for cell in cells:
        try:
            config = base.replace(**cell)
        except ConfigError as error:
            where = ", ".join(f"{option(k)}={label(v)}" for k, v in cell.items())
            raise ConfigError(f"cell {where}: {error}") from None
        unused = [f for f in cell if f in ("alpha", "beta", "rho") and f not in rule(config.train).uses]
        if unused:
            raise ConfigError(
                f"--grid {option(unused[0])}: the {config.train} rule does not use it (choose --train "
                f"{' or '.join(name for name, member in all_rules().items() if unused[0] in member.uses)})")
        out.append((cell, config))
    return out
