"""What every experiment kind returns, stores and shows: the ``Result`` base class, the metrics the engine
records, and the column specs of the stored tables.

Nothing here imports JAX, matplotlib or pandas at import: results are loaded, tabulated and summarised
without the engine. A kind's own result type lives in its folder (``l2rebound.kinds.<name>.result``) and is
found through the registry (``registry.KindSpec.result``); it declares its tables as ``Table`` specs, from
which the CSV files, the store's size estimate and a sweep's summary columns all derive.

Shapes, with R runs, E epochs, S noise levels, K kept epochs and P parameters of the student
(``P_teacher`` of the teacher), are stated on each kind's class.
"""

from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, ClassVar, NamedTuple

import numpy as np

from l2rebound import registry
from l2rebound.config import Config

if TYPE_CHECKING:
    import pandas
    from matplotlib.figure import Figure

METRICS = ("l2", "train_loss", "test_loss", "clean_test_loss", "stalled")
"""Recorded per run and epoch by the training engine. ``stalled``: fraction of parameters whose step into
this epoch was non-zero but rounded away (below half an ulp of the parameter); 0 at epoch 0."""
DISTANCES = ("l2_aligned", "l2_aligned_lower", "l2_normal_form")
"""Distances modulo the symmetry group, computed on the host from kept students: the best relabelling found
(an upper bound on the minimum over the group), a certified lower bound on that minimum (both from one
``certify.certified_align`` call searching at most ``Config.align_budget`` nodes beyond the root), and the
distance between normal forms."""
ADDED_COLUMNS = ("l2_aligned_lower",)
"""Columns that results stored by earlier versions lack: read back as NaN (never computed)."""
OPTIMAL_RTOL = 1e-6
"""A stored aligned distance counts as proven optimal when its lower bound is within this relative distance
of it: far above the certified search's own floating-point margin and float32's rounding of both numbers,
far below the gap that an unfinished search leaves."""
COLUMNS = METRICS + DISTANCES
"""Every per-run quantity of a result's ``metrics``."""
L2 = "ℓ₂"
"""How texts and figures write the distance."""


class Column(NamedTuple):
    """One column of a stored table: its ``name``; ``integer``: written as an integer (counts, run numbers,
    0/1 flags; -1 marks a count that does not exist); ``summary``: for a per-run column that a sweep's summary
    carries (and can draw), its place among those columns (1, 2, ...; 0: not carried), with ``label`` as its
    figures' axis label."""

    name: str
    integer: bool = False
    summary: int = 0
    label: str = ""


class Table(NamedTuple):
    """A stored CSV table: ``rows`` rows of ``columns``."""

    rows: int
    columns: tuple[Column, ...]

    @property
    def names(self) -> tuple[str, ...]:
        return tuple(column.name for column in self.columns)


def columns(names, integer=()) -> tuple[Column, ...]:
    """``Column``s named ``names``, those in ``integer`` integer."""
    return tuple(Column(name, name in integer) for name in names)


def kept_epochs(config: Config) -> np.ndarray:
    """The epochs whose students the epoch experiment keeps: 0, k, 2k, ... and E, for ``align_every`` k."""
    if config.align_every == 0:
        return np.zeros(0, int)
    return np.union1d(np.arange(0, config.epochs + 1, config.align_every), [config.epochs])


def kept_count(config: Config) -> int:
    """``len(kept_epochs(config))``, counted without listing them (a config too large to run must be
    refused without first filling the memory)."""
    every = config.align_every
    return 0 if every == 0 else config.epochs // every + 1 + (config.epochs % every != 0)


def stored_count(config: Config) -> int:
    """How many of the ``kept_epochs`` a stored result holds the students of: all of them, or under
    ``storage`` compact the last alone (none with ``align_every`` 0)."""
    kept = kept_count(config)
    return min(kept, 1) if config.storage == "compact" else kept


def stored_students(config: Config, epochs: np.ndarray, theta: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """The kept epochs (K,) and students (R, K, P) that the stored result of ``config`` holds, of the students
    ``theta`` (R, ``kept_count``, P) that an engine kept at ``epochs`` = ``kept_epochs(config)``: the last
    ``stored_count``."""
    first = len(epochs) - stored_count(config)
    return epochs[first:], theta[:, first:]


@dataclass(frozen=True, repr=False, eq=False)
class Result:
    """The outcome of one experiment: its ``config``, NumPy arrays (see each kind) and, once computed or
    loaded, its ``manifest`` (where and how it was computed: package and JAX versions, backend, fast path,
    host, date; see ``provenance``).

    ``frame()`` gives the tidy table, ``figure(view)`` a matplotlib figure (nothing is written), ``save(out)``
    stores it, ``summary()`` gives the key numbers as text. What the kind can do is its ``spec``'s
    (``registry.KindSpec``)."""

    kind: ClassVar[str]
    """The kind's name: its ``KindSpec.name``."""
    sweep_stats: ClassVar[tuple[str, ...]] = ("rebound", "l2_min_epoch")
    """The statistics a sweep of this kind draws by default."""
    mixed_groups: ClassVar[tuple[str, ...]] = ()
    """Dicts of arrays whose entries may hold floats, integers or flags (a table's columns); every other array
    holds floats, or integers where its name ends in ``epochs`` or ``diverged_at``."""

    config: Config
    manifest: dict[str, Any] | None = field(default=None, kw_only=True, compare=False)

    # ---- what every kind provides -------------------------------------------------------------------
    @classmethod
    def trainings(cls, config: Config) -> int:
        """Independent trainings the engine runs for ``config`` (each of ``config.epochs`` epochs)."""
        return config.runs

    @classmethod
    def kept_students(cls, config: Config) -> int:
        """Epochs at which each training keeps its student (the memory it needs; the stored result holds
        ``stored_count`` of them)."""
        return 0

    @classmethod
    def run_epochs(cls, config: Config) -> int:
        """Run-epochs the engine reports through its ``on_progress`` (a progress bar's total)."""
        return cls.trainings(config) * config.epochs

    @classmethod
    def table_specs(cls, config: Config) -> dict[str, Table]:
        """The CSV files of the stored result of ``config``: file stem -> ``Table``. ``metrics`` is the tidy
        table that ``frame()`` returns."""
        raise NotImplementedError

    @classmethod
    def array_shapes(cls, config: Config) -> dict[str, dict[str, tuple[int, ...]]]:
        """The ``.npz`` files of the stored result of ``config``: file stem -> array name -> shape."""
        raise NotImplementedError

    def table_data(self) -> dict[str, dict[str, np.ndarray]]:
        """The values of each table of ``table_specs``: file stem -> column name -> values (one per row)."""
        raise NotImplementedError

    def arrays(self) -> dict[str, dict[str, np.ndarray]]:
        """The ``.npz`` files of the stored result: file stem -> array name -> array."""
        raise NotImplementedError

    @classmethod
    def from_files(cls, config: Config, tables: dict[str, dict[str, np.ndarray]],
                   arrays: dict[str, dict[str, np.ndarray]], manifest: dict | None) -> Result:
        """Inverse of ``tables`` and ``arrays`` (the store reads the files those name)."""
        raise NotImplementedError

    @classmethod
    def file_suffix(cls, view: str, squared: bool) -> str:
        """What a view's file name carries after the config's stem: ``{stem}_{suffix}.{svg,png}``."""
        return view + ("_l2sq" if squared else "")

    def summary(self, squared: bool = False) -> str:
        """The key numbers as plain text (NumPy only: no matplotlib)."""
        raise NotImplementedError

    def warnings(self) -> list[str]:
        """One line for each thing a reader must know before trusting the numbers (diverged runs, steps
        rounded away in float32)."""
        raise NotImplementedError

    def shapes(self) -> dict[str, tuple[int, ...]]:
        """The shape each array must have for this result's config: name -> shape."""
        raise NotImplementedError

    @classmethod
    def summary_columns(cls, config: Config) -> list[tuple[str, Column]]:
        """(table stem, column) of each column that a sweep's summary carries for this kind, in their
        ``summary`` order."""
        found = [(stem, column) for stem, table in cls.table_specs(config).items() for column in table.columns
                 if column.summary]
        return sorted(found, key=lambda pair: pair[1].summary)

    def sweep_columns(self) -> dict[str, np.ndarray]:
        """The per-run columns (R,) that a sweep's summary adds for this kind (``summary_columns``), as floats,
        NaN where an integer column holds -1 (no count)."""
        wanted = self.summary_columns(self.config)
        data = self.table_data() if wanted else {}
        out = {}
        for stem, column in wanted:
            values = np.array(data[stem][column.name], float)
            if column.integer:
                values[values < 0] = np.nan
            out[column.name] = values
        return out

    # ---- the same for every kind --------------------------------------------------------------------
    @property
    def spec(self) -> registry.KindSpec:
        """What this result's kind is and can do."""
        return registry.kind(self.kind)

    @property
    def views(self) -> tuple[str, ...]:
        """Names of its figures; the first is ``figure()``'s default."""
        return self.spec.views

    @classmethod
    def stored_values(cls, config: Config) -> tuple[int, int]:
        """(values in the CSV tables, values in the ``.npz`` arrays) of the stored result of ``config``: what
        the store checks there is room for before it trains."""
        tables = sum(table.rows * len(table.columns) for table in cls.table_specs(config).values())
        arrays = sum(math.prod(shape) for files in cls.array_shapes(config).values() for shape in files.values())
        return tables, arrays

    def tables(self) -> dict[str, dict[str, np.ndarray]]:
        """The CSV files of the stored result, columns in the order of ``table_specs``: file stem -> column
        name -> values (integers as int64)."""
        data = self.table_data()
        return {stem: {c.name: as_int(data[stem][c.name]) if c.integer else np.asarray(data[stem][c.name])
                       for c in table.columns}
                for stem, table in self.table_specs(self.config).items()}

    def validate(self) -> None:
        """Raise ``ValueError`` naming the first array whose shape or type does not fit the config."""
        for name, shape in self.shapes().items():
            group, _, key = name.partition(".")  # "metrics.l2": the entry l2 of the dict self.metrics
            array = np.asarray(getattr(self, group).get(key) if key else getattr(self, group))
            kinds = "fib" if group in self.mixed_groups else "fi" if name.endswith(("epochs", "diverged_at")) else "f"
            if array.shape != shape or array.dtype.kind not in kinds:
                raise ValueError(f"{name} has shape {array.shape} and type {array.dtype}; the config needs {shape}")

    def frame(self) -> pandas.DataFrame:
        """The tidy table of ``metrics.csv`` as a pandas DataFrame (integer columns stay integers)."""
        import pandas

        return pandas.DataFrame(self.tables()["metrics"])

    def figures(self, squared: bool = False) -> dict[str, Figure]:
        """Every view (``views``) as a matplotlib ``Figure``; ``squared``: ℓ₂² instead of ℓ₂ (the quantity of
        the original figures)."""
        return self.spec.draw(self, squared)

    def figure(self, view: str | None = None, *, squared: bool = False) -> Figure:
        """One view as a matplotlib ``Figure`` (shown inline in a notebook; nothing is written).
        ``view``: one of ``views`` (default the first)."""
        view = view or self.views[0]
        if view not in self.views:
            raise ValueError(f"{self.kind} results have the views {', '.join(self.views)}, not {view!r}")
        return self.figures(squared)[view]

    def save(self, out: str | Path = "results") -> Path:
        """Store under the root ``out`` (atomically, in the folder named by the config's hash); returns the
        folder."""
        from l2rebound import store

        return store.save(Path(out), self)

    def __repr__(self) -> str:
        return (f"{type(self).__name__}({self.config.describe()}; {self.trainings(self.config)} trainings x "
                f"{self.config.epochs} epochs)")


def as_int(values) -> np.ndarray:
    """Values as int64 (a table's integer columns)."""
    return np.asarray(values).astype(np.int64)


def as_float(values, config: Config) -> np.ndarray:
    """Metrics read back in the dtype they were computed in (the CSV holds them exactly)."""
    return np.asarray(values).astype(config.dtype)


def metric_column(table: dict[str, np.ndarray], name: str, config: Config) -> np.ndarray:
    """The metric ``name`` of a stored table, as ``as_float``; NaN for a column of ``ADDED_COLUMNS`` that the
    version which stored the table did not write."""
    if name in ADDED_COLUMNS and name not in table:
        return np.full(len(next(iter(table.values()))), np.nan, config.dtype)
    return as_float(table[name], config)


def per_epoch(metrics: dict[str, np.ndarray], names, first: int = 0) -> dict[str, np.ndarray]:
    """The tidy table of per-run, per-epoch ``metrics`` (R, T) each: columns run (1..R), epoch (``first`` ..
    ``first`` + T − 1) and ``names``, one row per run and epoch."""
    runs, epochs = metrics["l2"].shape
    return {"run": np.repeat(np.arange(1, runs + 1), epochs), "epoch": np.tile(first + np.arange(epochs), runs),
            **{name: metrics[name].reshape(-1) for name in names}}


def per_epoch_table(runs: int, epochs: int, names) -> Table:
    """The ``Table`` of ``per_epoch``: ``runs`` × ``epochs`` rows, run and epoch (integers), then ``names``."""
    return Table(runs * epochs, (*columns(("run", "epoch"), ("run", "epoch")), *columns(names)))


def proven_optimal(upper, lower) -> np.ndarray:
    """Where the aligned distance ``upper`` is proven to be the minimum over the group: its certified lower
    bound ``lower`` (same shape) is within ``OPTIMAL_RTOL`` of it. False where either is NaN."""
    upper, lower = np.asarray(upper, float), np.asarray(lower, float)
    with np.errstate(invalid="ignore"):
        return lower >= upper * (1 - OPTIMAL_RTOL)


def finished_metrics(result) -> tuple[dict[str, np.ndarray], list[str]]:
    """The metrics of the runs of a result with per-epoch curves that finished, (R_ok, E + 1) each, and one
    line per diverged run (runs numbered 1..R as in the experiment). Raises ``ValueError`` if every run
    diverged."""
    diverged_at = np.asarray(result.diverged_at)
    ok = diverged_at == -1
    lines = [f"run {r + 1} diverged at epoch {diverged_at[r]}" for r in np.flatnonzero(~ok)]
    if not ok.any():
        raise ValueError(f"all {len(ok)} runs diverged, nothing to plot or summarise: " + "; ".join(lines))
    return {name: np.asarray(values, dtype=float)[ok] for name, values in result.metrics.items()}, lines


def kind_of(config: Config) -> type[Result]:
    """The result type of ``config``'s kind."""
    return registry.kind(config.experiment).result_type()


def compute(config: Config, on_progress=None, checkpoint=None) -> Result:
    """Run the engine entry of ``config``'s kind (imported here: the engine loads JAX)."""
    return registry.kind(config.experiment).compute(config, on_progress, checkpoint)


def with_manifest(result: Result, manifest: dict) -> Result:
    """``result`` carrying ``manifest``."""
    return dataclasses.replace(result, manifest=manifest)
