"""A sweep's result: one tidy table over its cells and runs, its phase diagrams, and its folder.

A sweep varies config fields over a grid (``grid``); each cell is an ordinary result in the store, of a kind
that records curves over epochs (``KindSpec.sweepable``). The
sweep's own folder ``OUT/sweep-<hash>/`` holds ``sweep.json`` (the grid, the base config and the cells'
config hashes), ``summary.csv`` and ``summary.parquet`` (``SUMMARY``: one row per cell and run, the swept
fields first) and the figures: one swept field gives each statistic against it (mean and spread over runs),
two give heatmaps, more are split into panels by ``facet`` fields.

Everything here works on stored NumPy arrays (no JAX).
"""

from __future__ import annotations

import dataclasses
import hashlib
import itertools
import json
import math
import shlex
import textwrap
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from l2rebound import registry, store
from l2rebound.config import Config, ConfigError, flag, option
from l2rebound.grid import Axis, coordinates, label, python_name
from l2rebound.results import Result

if TYPE_CHECKING:
    import pandas
    from matplotlib.figure import Figure

SUMMARY = ("run", "run_seed", "l2_start", "l2_min", "l2_min_epoch", "l2_final", "rebound", "train_loss_final",
           "test_loss_final", "clean_test_loss_final", "diverged_at", "l2_aligned_final")
"""Columns of the summary after the swept fields. ``run_seed``: the seed run r draws from (the config's seed
+ r; a swept ``seed`` is the config's); ``rebound`` = l2_final / l2_min (NaN where l2_min is 0: a start at the
teacher has no rebound to measure); ``l2_aligned_final`` is NaN
where the cell records no aligned distance (``align_every`` 0)."""
DEFAULT_STATS = Result.sweep_stats
BASE_STATS = tuple(name for name in SUMMARY if name not in ("run", "run_seed", "diverged_at"))
"""The statistics a figure of any sweep can show (``--stat``); a kind adds the ``summary`` columns of its
tables (``stats_of``)."""


def kind_columns(config: Config) -> list:
    """The ``results.Column``s that the kind of ``config`` adds to a sweep's summary, in their order."""
    return [column for _, column in registry.kind(config.experiment).result_type().summary_columns(config)]


def stats_of(base: Config) -> tuple[tuple[str, ...], tuple[str, ...]]:
    """(the statistics a sweep of ``base``'s experiment can draw, its default ones)."""
    own = tuple(column.name for column in kind_columns(base))
    return BASE_STATS + own, registry.kind(base.experiment).result_type().sweep_stats


def stat_labels(base: Config) -> dict[str, str]:
    """Each statistic's axis label: ``STAT_LABELS``, and the labels of the kind's own columns."""
    return {**STAT_LABELS, **{column.name: column.label for column in kind_columns(base)}}


SCHEMA = 1

CELL_STORAGE = "compact"
"""How a sweep stores its cells unless told otherwise (``Config.storage``): a sweep holds many cells, and its
summary, ``plot``, ``analyze`` and ``align`` of the last epoch read nothing that the compact form leaves out."""


def rebound_statistics(l2) -> dict[str, np.ndarray]:
    """The rebound statistics of curves ℓ₂ (R, E + 1), (R,) each: ``l2_start``, ``l2_min`` and ``l2_min_epoch``
    (its first epoch; over the finite epochs, those before a divergence), ``l2_final`` and ``rebound`` =
    l2_final / l2_min (NaN where the minimum is 0: a start at the teacher has no rebound to measure)."""
    l2 = np.asarray(l2, float)
    finite = np.where(np.isfinite(l2), l2, np.inf)
    minimum = finite.min(axis=1)
    with np.errstate(invalid="ignore", divide="ignore"):
        rebound = np.where(minimum > 0, l2[:, -1] / minimum, np.nan)
    return {"l2_start": l2[:, 0], "l2_min": minimum, "l2_min_epoch": finite.argmin(axis=1), "l2_final": l2[:, -1],
            "rebound": rebound}


def run_summary(result: Result) -> dict[str, np.ndarray]:
    """The ``SUMMARY`` columns of one result with curves over epochs, then the kind's own
    (``Result.sweep_columns``), (R,) each. A diverged run's final values are NaN; its minimum is over the epochs
    before it diverged."""
    runs = np.arange(1, result.config.runs + 1)
    final = {name: np.asarray(result.metrics[name], float)[:, -1] for name in ("train_loss", "test_loss",
                                                                                "clean_test_loss", "l2_aligned")}
    return {"run": runs, "run_seed": result.config.seed + runs, **rebound_statistics(result.metrics["l2"]),
            "train_loss_final": final["train_loss"], "test_loss_final": final["test_loss"],
            "clean_test_loss_final": final["clean_test_loss"], "diverged_at": np.asarray(result.diverged_at),
            "l2_aligned_final": final["l2_aligned"],
            **result.sweep_columns()}


def sweep_hash(base: Config, axes: list[Axis], zipped: list[tuple[str, str]]) -> str:
    """12 hex digits naming the sweep: its base config's hash and its grid."""
    text = json.dumps({"base": base.config_hash(), "axes": [[a.field, list(a.values)] for a in axes],
                       "zip": [list(pair) for pair in zipped]}, sort_keys=True)  # floats as repr: exact
    return hashlib.sha256(text.encode()).hexdigest()[:12]


@dataclass(frozen=True, eq=False)
class SweepResult:
    """A finished sweep. ``cells``: each cell's swept field values, in grid order; ``hashes``: their configs'
    hashes (their folders ``OUT/<experiment>-<hash>``); ``columns``: the summary, name -> (rows,) with rows = cells ×
    runs, the swept fields first (tuple values as text)."""

    base: Config
    axes: tuple[Axis, ...]
    zipped: tuple[tuple[str, str], ...]
    cells: tuple[dict[str, Any], ...]
    hashes: tuple[str, ...]
    columns: dict[str, np.ndarray]
    stats: tuple[str, ...] = DEFAULT_STATS
    facet: tuple[str, ...] = ()

    @classmethod
    def from_results(cls, base: Config, axes, zipped, cells, results: list[Result], stats=DEFAULT_STATS,
                     facet=()) -> SweepResult:
        parts = []
        for cell, result in zip(cells, results, strict=True):
            fields = {name: np.array([label(v) if isinstance(v, tuple) else v] * result.config.runs)
                      for name, v in cell.items()}
            parts.append({**fields, **run_summary(result)})
        columns = {name: np.concatenate([p[name] for p in parts]) for name in parts[0]}
        return cls(base, tuple(axes), tuple(map(tuple, zipped)), tuple(cells),
                   tuple(r.config.config_hash() for r in results), columns, tuple(stats), tuple(facet))

    @property
    def name(self) -> str:
        return f"sweep-{sweep_hash(self.base, list(self.axes), list(self.zipped))}"

    def __repr__(self) -> str:
        fields = " x ".join(a.field for a in self.axes)
        return (f"{type(self).__name__}({self.base.experiment} over {fields}: {len(self.cells)} cells, "
                f"{len(self.columns['run'])} runs; stats {', '.join(self.stats)})")

    def frame(self) -> pandas.DataFrame:
        """The summary as a pandas DataFrame, one row per cell and run."""
        import pandas as pd

        return pd.DataFrame(self.columns)

    def figures(self) -> dict[str, Figure]:
        """``{stat: figure}`` for each statistic of ``stats``, split into panels by ``facet``; see
        ``stat_figure``."""
        return {stat: stat_figure(self, stat, self.facet) for stat in self.stats}

    def figure(self, stat: str | None = None) -> Figure:
        return stat_figure(self, stat or self.stats[0], self.facet)

    def save(self, out: str | Path) -> Path:
        """Write ``sweep.json``, ``summary.csv``, ``summary.parquet`` and the figures into ``OUT/<name>/``
        (each file atomically, ``sweep.json`` last: it marks the sweep finished); returns the folder."""
        folder = Path(out) / self.name
        folder.mkdir(parents=True, exist_ok=True)
        description = {"schema": SCHEMA, "base": self.base.to_dict(),
                       "axes": [{"field": a.field, "values": [list(v) if isinstance(v, tuple) else v for v in a.values],
                                 "log": a.log} for a in self.axes],
                       "zip": [list(pair) for pair in self.zipped], "cells": list(self.hashes),
                       "stats": list(self.stats), "facet": list(self.facet)}
        self.write_tables(folder)
        self.write_figures(folder)
        store.write_atomic(folder / "sweep.json", lambda tmp: tmp.write_text(json.dumps(description, indent=1)))
        return folder

    def write_tables(self, folder: Path) -> list[Path]:
        """Write the summary into ``folder`` as ``summary.csv`` and ``summary.parquet`` (atomically)."""
        return [store.write_atomic(Path(folder) / "summary.csv", lambda tmp: self.frame().to_csv(tmp, index=False)),
                store.write_atomic(Path(folder) / "summary.parquet",
                                   lambda tmp: self.frame().to_parquet(tmp, index=False))]

    def write_figures(self, folder: Path) -> list[Path]:
        from l2rebound.plots import write_figure

        return [path for stat, fig in self.figures().items()
                for path in write_figure(fig, Path(folder) / f"sweep_{stat}")]

    def summary(self) -> str:
        """Plain text: per cell, the mean of each statistic over its finished runs, and how many diverged."""
        stats = self.stats
        frame = self.frame()
        fields = [a.field for a in self.axes]
        diverged = (frame.diverged_at >= 0).groupby([frame[f] for f in fields], sort=False).sum()
        means = frame[frame.diverged_at < 0].groupby(fields, sort=False)[list(stats)].mean()
        means = means.reindex(diverged.index)  # a cell whose runs all diverged: NaN
        lines = ["  ".join(f"{option(f):>14}" for f in fields) + "  " + "  ".join(f"{s:>12}" for s in stats)
                 + "  diverged"]
        for (key, row), count in zip(means.iterrows(), diverged, strict=True):
            key = key if isinstance(key, tuple) else (key,)
            lines.append("  ".join(f"{label(v):>14}" for v in key) + "  " + "  ".join(f"{row[s]:>12.4g}" for s in stats)
                         + f"  {int(count):>8}")
        return "\n".join(lines)


def load(folder: str | Path) -> SweepResult:
    """The sweep stored in ``folder`` (``OUT/sweep-<hash>``), from its ``sweep.json`` and its cells' results
    beside it; ``StoreError`` when it or a cell cannot be read."""
    folder = Path(folder)
    try:
        description = json.loads((folder / "sweep.json").read_text())
        if description.get("schema") != SCHEMA:
            raise ValueError(f"schema {description.get('schema')!r}")
        base = Config.from_dict(description["base"])
        axes = [Axis(a["field"], tuple(tuple(v) if isinstance(v, list) else v for v in a["values"]), a["log"])
                for a in description["axes"]]
        zipped = [tuple(pair) for pair in description["zip"]]
    except (OSError, ValueError, KeyError, TypeError, ConfigError) as error:
        raise store.StoreError(f"{folder} is not a finished sweep folder ({error})") from None
    cells = coordinates(axes, zipped)
    if len(cells) != len(description["cells"]):
        raise store.StoreError(f"{folder / 'sweep.json'} lists {len(description['cells'])} cells where its grid has "
                               f"{len(cells)}: run the sweep again")
    stats, facet = description.get("stats", stats_of(base)[1]), description.get("facet", ())
    results = []
    for cell, config_hash in zip(cells, description["cells"]):
        cell_folder = folder.parent / f"{base.experiment}-{config_hash}"
        if not store.is_finished(cell_folder):
            where = ", ".join(f"{option(k)}={label(v)}" for k, v in cell.items())
            raise store.StoreError(f"the cell {where} of {folder} is not stored ({cell_folder} is gone): "
                                   f"`{command(base, axes, zipped, folder.parent, stats, facet)}` computes it again "
                                   "and reuses the stored cells")
        results.append(store.load(cell_folder))
    return SweepResult.from_results(base, axes, zipped, cells, results, stats, facet)


def command(base: Config, axes: list[Axis], zipped, out: Path, stats=(), facet=()) -> str:
    """The ``l2rebound sweep`` command line of the sweep of ``base`` over ``axes`` (``zipped`` pairs) stored under
    ``out``, with its ``stats`` (left out when the default) and ``facet``: run again, it trains only the cells
    that are not stored."""

    def text(value) -> str:
        return ",".join(map(str, value)) if isinstance(value, tuple) else repr(value) if isinstance(value, float) \
            else str(value)

    words = ["l2rebound", "sweep", "--out", str(out)]
    if base.experiment != Config.experiment:
        words += ["--experiment", base.experiment]
    fields = base.changed_fields()  # the swept ones too: the same base, the same sweep folder
    if base.student_dims != base.teacher_dims:  # a student of the default widths is no change, but for its teacher
        fields["student_dims"] = base.student_dims
    fields.pop("storage", None)  # the command's own default is the sweep's, not the config's
    if base.storage != CELL_STORAGE:
        fields["storage"] = base.storage
    for name, value in fields.items():
        words += [flag(name), text(value)]
    for axis in axes:
        words += ["--grid", f"{option(axis.field)}=" + ("/" if isinstance(axis.values[0], tuple) else ",").join(
            map(text, axis.values))]
    words += [word for pair in zipped for word in ("--zip", ",".join(map(option, pair)))]
    if tuple(stats) and tuple(stats) != stats_of(base)[1]:
        words += ["--stat", ",".join(stats)]
    words += [word for field in facet for word in ("--facet", option(field))]
    return shlex.join(words)


THEORY_STATS = ("rebound", "l2_min_epoch")
"""The statistics that ``analyze`` of a sweep puts beside their linear-response prediction."""


def with_theory(result: SweepResult, predicted: list) -> SweepResult:
    """``result`` with, for each of ``THEORY_STATS``, the column ``<stat>_predicted``: the statistic of the
    predicted ℓ₂ curves of each cell's runs (``predicted``: one (R, E + 1) array per cell, in grid order), and
    ``THEORY_STATS`` as the statistics it draws."""
    stats = [rebound_statistics(curves) for curves in predicted]
    added = {f"{stat}_predicted": np.concatenate([cell[stat] for cell in stats]) for stat in THEORY_STATS}
    return dataclasses.replace(result, columns={**result.columns, **added}, stats=THEORY_STATS)


def theory_table(result: SweepResult) -> str:
    """Plain text for a sweep ``with_theory``: per cell, the mean over finished runs of each measured statistic
    and of its prediction, and the largest absolute gap between the two over its finished runs (NaN for a
    cell whose runs all diverged)."""
    every = result.frame()
    fields = [a.field for a in result.axes]
    frame = every[every.diverged_at < 0]
    frame = frame.assign(rebound_gap=(frame.rebound_predicted - frame.rebound).abs(),
                         l2_min_epoch_gap=(frame.l2_min_epoch_predicted - frame.l2_min_epoch).abs())
    columns = ["rebound", "rebound_predicted", "rebound_gap", "l2_min_epoch", "l2_min_epoch_predicted",
               "l2_min_epoch_gap"]
    cells = every.groupby(fields, sort=False).size().index  # every cell, those whose runs all diverged too
    table = frame.groupby(fields, sort=False)[columns].agg(["mean", "max"]).reindex(cells)
    heads = ("rebound", "predicted", "gap", "epoch of min", "predicted", "gap (epochs)")
    lines = ["  ".join(f"{option(f):>14}" for f in fields) + "  " + "  ".join(f"{h:>12}" for h in heads)]
    for key, row in table.iterrows():
        key = key if isinstance(key, tuple) else (key,)
        values = [row[(c, "max" if c.endswith("gap") else "mean")] for c in columns]
        lines.append("  ".join(f"{label(v):>14}" for v in key) + "  " + "  ".join(f"{v:>12.4g}" for v in values))
    return "\n".join(lines)


def write_theory(result: SweepResult, folder: Path) -> list[Path]:
    """Store a sweep ``with_theory`` in its folder: ``theory.csv`` (one row per cell and run: the summary with
    the predicted statistics) and, for each of ``THEORY_STATS``, ``sweep_theory_<stat>.{svg,png}`` (measured
    and predicted side by side, one scale). Returns the paths."""
    from l2rebound.plots import write_figure

    folder = Path(folder)
    paths = [store.write_atomic(folder / "theory.csv", lambda tmp: result.frame().to_csv(tmp, index=False))]
    for stat in THEORY_STATS:
        paths += write_figure(stat_figure(result, stat, result.facet, predicted=True), folder / f"sweep_theory_{stat}")
    return paths


def is_sweep(folder: str | Path) -> bool:
    return (Path(folder) / "sweep.json").is_file()


# ------------------------------------------------------------------------------------------------ figures

STAT_LABELS = {"rebound": "rebound ℓ₂(E) / min ℓ₂", "l2_min_epoch": "epoch of min ℓ₂", "l2_start": "ℓ₂ at epoch 0",
               "l2_min": "min ℓ₂", "l2_final": "ℓ₂ at epoch E", "train_loss_final": "train loss at E",
               "test_loss_final": "test loss at E", "clean_test_loss_final": "clean test loss at E",
               "l2_aligned_final": "aligned ℓ₂ at E"}


def plotted_axes(result: SweepResult, facet) -> tuple[list[Axis], list[Axis]]:
    """(the axes a panel shows, the facet axes that split panels); zipped pairs count as one axis (the first
    field's)."""
    partners = {b for _, b in result.zipped}
    shown = [a for a in result.axes if a.field not in partners]
    wanted = {python_name(f) for f in facet}
    unknown = wanted - {a.field for a in shown}
    if unknown:
        raise ConfigError(f"--facet {option(min(unknown))} is not a swept field that figures show "
                          f"({', '.join(option(a.field) for a in shown)}; of a zipped pair, the first)")
    facet = [a for a in shown if a.field in wanted]
    inner = [a for a in shown if a not in facet]
    if not 1 <= len(inner) <= 2:
        raise ConfigError(f"a figure shows one or two swept fields; this sweep has {len(inner)} besides the --facet "
                          f"ones ({', '.join(option(a.field) for a in inner)}): name the others with --facet")
    return inner, facet


def _tick(result: SweepResult, axis: Axis, value) -> str:
    partner = dict(result.zipped).get(axis.field)
    if partner is None:
        return label(value)
    other = dict(zip(axis.values, next(a for a in result.axes if a.field == partner).values))[value]
    return f"{label(value)} / {label(other)}"


def stat_figure(result: SweepResult, stat: str, facet=(), predicted: bool = False) -> Figure:
    """The statistic ``stat`` over the grid: against one swept field, the mean over finished runs with its
    min–max band (log axes where the values are log-spaced); over two, a heatmap of the mean with the values
    written in the cells and a colour bar; one panel per combination of the ``facet`` fields' values. With
    ``predicted`` (a sweep ``with_theory``), each panel is followed by the linear response's prediction of the
    statistic, on the same scale."""
    from matplotlib.figure import Figure

    allowed, _ = stats_of(result.base)
    if stat not in allowed:
        raise ConfigError(f"--stat must be among {', '.join(allowed)} (got {stat!r})")
    inner, facets = plotted_axes(result, facet)
    everything = result.frame()
    frame = everything[everything.diverged_at < 0]
    shown = [stat] + ([f"{stat}_predicted"] if predicted else [])
    finite = frame[shown].to_numpy().ravel()
    finite = finite[np.isfinite(finite)]
    from matplotlib.colors import LogNorm, Normalize

    low, high = (finite.min(), finite.max()) if len(finite) else (0.0, 1.0)
    scale = (LogNorm if _spans_decades(finite) else Normalize)(low, high)  # one colour scale for every panel
    panels = [(dict(zip([a.field for a in facets], values)), column) for values in
              itertools.product(*(a.values for a in facets)) for column in shown] or [({}, stat)]
    cols = min(3, len(panels))
    rows = math.ceil(len(panels) / cols)
    width = 5.5 if len(inner) == 1 else max(6.0, 2.5 + 1.0 * len(inner[0].values))
    height = 4.2 if len(inner) == 1 else max(4.0, 1.8 + 0.5 * len(inner[1].values))
    fig = Figure(figsize=(width * cols, height * rows + 0.4), layout="constrained")
    axes = np.atleast_1d(fig.subplots(rows, cols, squeeze=False, sharey=predicted and len(inner) == 1)).ravel()
    for ax in axes[len(panels):]:
        ax.set_visible(False)
    name = stat_labels(result.base).get(stat, stat)
    for ax, (panel, column) in zip(axes, panels):
        mine, every = frame, everything
        for field, value in panel.items():
            value = label(value) if isinstance(value, tuple) else value
            mine, every = mine[mine[field] == value], every[every[field] == value]
        title = ", ".join(f"{option(k)}={label(v)}" for k, v in panel.items())
        if predicted:
            title = ", ".join([*([title] if title else []), "predicted (linear response)" if column != stat
                               else "measured"])
        if len(inner) == 1:
            _line(ax, result, inner[0], mine, column, name)
        else:
            _heatmap(fig, ax, result, inner, mine, every, column, name, scale)
        ax.set_title(title, fontsize="small")
    swept = tuple(a.field for a in result.axes)
    fig.suptitle(textwrap.fill(f"{name}, mean over finished runs: {result.base.describe(skip=swept)}"
                               + ("" if "runs" in swept else f"; {result.base.runs} runs per cell"),
                               int(10 * width * cols)), fontsize="medium")
    return fig


def _spans_decades(values) -> bool:
    """Whether positive ``values`` span more than two decades: then they are drawn on a log scale."""
    return len(values) > 0 and values.min() > 0 and values.max() / values.min() > 100


def _column(axis: Axis, values):
    return [label(v) if isinstance(v, tuple) else v for v in values]


def _line(ax, result: SweepResult, axis: Axis, frame, stat: str, name: str) -> None:
    keys = _column(axis, axis.values)
    groups = frame.groupby(axis.field)[stat]
    mean, low, high = (np.array([getattr(groups, f)().get(k, np.nan) for k in keys], float)
                       for f in ("mean", "min", "max"))
    numeric = not isinstance(axis.values[0], (str, tuple))
    x = np.asarray(axis.values, float) if numeric else np.arange(len(keys))
    ax.fill_between(x, low, high, alpha=0.2, lw=0, color="tab:orange", label="min–max over runs")
    ax.plot(x, mean, "o-", color="tab:orange", label="mean over runs")
    if axis.log:
        ax.set_xscale("log")
    if not numeric or result.zipped:
        ax.set_xticks(x, [_tick(result, axis, v) for v in axis.values], rotation=30 if not numeric else 0)
    if _spans_decades(frame[stat][np.isfinite(frame[stat])]):
        ax.set_yscale("log")
    ax.set_xlabel(option(axis.field))
    ax.set_ylabel(name)
    ax.grid(alpha=0.3, which="both")
    ax.legend(fontsize="small")


def _heatmap(fig, ax, result: SweepResult, inner: list[Axis], frame, every, stat: str, name: str, scale) -> None:
    """Heatmap of the mean of ``stat`` over the finished runs in ``frame``, coloured by the norm ``scale``; a
    cell without a value says whether all its runs (in ``every``) diverged or the statistic is undefined there."""
    across, down = inner
    table = frame.groupby([down.field, across.field])[stat].mean()
    finished = every.assign(ok=every.diverged_at < 0).groupby([down.field, across.field])["ok"].any()
    keys = [[(d, a) for a in _column(across, across.values)] for d in _column(down, down.values)]
    grid = np.array([[table.get(key, np.nan) for key in row] for row in keys], float)
    from matplotlib import colormaps

    colours = colormaps["viridis"].with_extremes(bad="lightgray")
    image = ax.imshow(grid, origin="lower", aspect="auto", cmap=colours, norm=scale)
    ax.set_xticks(range(len(across.values)), [_tick(result, across, v) for v in across.values], rotation=30)
    ax.set_yticks(range(len(down.values)), [_tick(result, down, v) for v in down.values])
    ax.set_xlabel(option(across.field))
    ax.set_ylabel(option(down.field))
    for (i, j), value in np.ndenumerate(grid):
        text = f"{value:.4g}" if np.isfinite(value) else "n/a" if finished.get(keys[i][j], False) else "diverged"
        ax.text(j, i, text, ha="center", va="center", fontsize="small",
                color="white" if np.isfinite(value) and scale(value) < 0.5 else "black")
    fig.colorbar(image, ax=ax, label=name)
