"""What each experiment kind returns, stores and shows: NumPy arrays, a pandas table and matplotlib figures.

Nothing here imports JAX: results are loaded, tabulated, fitted and plotted without the engine. An
experiment kind is a ``Result`` subclass registered in ``KINDS`` under its name (the ``Config.experiment``
value and the CLI command): it declares the engine function that computes it, the shapes of its arrays,
the files the store writes for it and its figures. Adding a kind touches one place: a subclass here with
``@register_kind`` and its engine function.

Shapes, with R runs, E epochs, S noise levels, K kept epochs and P parameters of the student
(``P_teacher`` of the teacher), are stated on each class.
"""

from __future__ import annotations

import dataclasses
import importlib
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, ClassVar

import numpy as np

from l2rebound.config import Config
from l2rebound.layout import num_params

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

KINDS: dict[str, type[Result]] = {}
"""Experiment kinds by name: the registered ``Result`` subclasses."""


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


def register_kind(cls: type[Result]) -> type[Result]:
    """Class decorator: make ``cls`` the experiment kind ``cls.kind``."""
    if cls.kind in KINDS:
        raise ValueError(f"an experiment kind named {cls.kind!r} is already registered")
    KINDS[cls.kind] = cls
    return cls


@dataclass(frozen=True, repr=False, eq=False)
class Result:
    """The outcome of one experiment: its ``config``, NumPy arrays (see each kind) and, once computed or
    loaded, its ``manifest`` (where and how it was computed: package and JAX versions, backend, fast path,
    host, date; see ``provenance``).

    ``frame()`` gives the tidy table, ``figure(view)`` a matplotlib figure (nothing is written), ``save(out)``
    stores it, ``summary()`` gives the key numbers as text."""

    kind: ClassVar[str]
    help: ClassVar[str]
    """One line: what the experiment measures (the CLI's command list)."""
    description: ClassVar[str]
    """A paragraph: how it is set up (the command's ``--help``)."""
    engine: ClassVar[str]
    """``module:function`` of the engine function ``(config, on_progress, checkpoint) -> Result``."""
    views: ClassVar[tuple[str, ...]]
    """Names of its figures; the first is ``figure()``'s default."""
    stored_tables: ClassVar[tuple[str, ...]]
    """Stems of the CSV files it is stored as (the keys of ``tables()``)."""
    stored_arrays: ClassVar[tuple[str, ...]]
    """Stems of the ``.npz`` files it is stored as (the keys of ``arrays()``)."""

    config: Config
    manifest: dict[str, Any] | None = field(default=None, kw_only=True, compare=False)

    # ---- what every kind provides -------------------------------------------------------------------
    @classmethod
    def trainings(cls, config: Config) -> int:
        """Independent trainings the engine runs for ``config`` (each of ``config.epochs`` epochs)."""
        return config.runs

    @classmethod
    def kept_students(cls, config: Config) -> int:
        """Epochs at which each training keeps its student (memory and disk it needs)."""
        return 0

    @classmethod
    def run_epochs(cls, config: Config) -> int:
        """Run-epochs the engine reports through its ``on_progress`` (a progress bar's total)."""
        return cls.trainings(config) * config.epochs

    @classmethod
    def stored_values(cls, config: Config) -> tuple[int, int]:
        """(values in the CSV tables, values in the ``.npz`` arrays) of the stored result of ``config``: what
        the store checks there is room for before it trains."""
        raise NotImplementedError

    def tables(self) -> dict[str, dict[str, np.ndarray]]:
        """The CSV files of the stored result: file stem -> column name -> values (one per row).
        ``metrics`` is the tidy table that ``frame()`` returns."""
        raise NotImplementedError

    def arrays(self) -> dict[str, dict[str, np.ndarray]]:
        """The ``.npz`` files of the stored result: file stem -> array name -> array."""
        raise NotImplementedError

    @classmethod
    def from_files(cls, config: Config, tables: dict[str, dict[str, np.ndarray]],
                   arrays: dict[str, dict[str, np.ndarray]], manifest: dict | None) -> Result:
        """Inverse of ``tables`` and ``arrays`` (the store reads the files those name)."""
        raise NotImplementedError

    def figures(self, squared: bool = False) -> dict[str, Figure]:
        """Every view (``views``) as a matplotlib ``Figure``; ``squared``: ℓ₂² instead of ℓ₂ (the quantity of
        the original figures)."""
        raise NotImplementedError

    @classmethod
    def file_suffix(cls, view: str, squared: bool) -> str:
        """What a view's file name carries after the config's stem: ``{stem}_{suffix}.{svg,png}``."""
        return view + ("_l2sq" if squared else "")

    def summary(self, squared: bool = False) -> str:
        """The key numbers as plain text."""
        raise NotImplementedError

    def warnings(self) -> list[str]:
        """One line for each thing a reader must know before trusting the numbers (diverged runs, steps
        rounded away in float32)."""
        raise NotImplementedError

    def shapes(self) -> dict[str, tuple[int, ...]]:
        """The shape each array must have for this result's config: name -> shape."""
        raise NotImplementedError

    # ---- the same for every kind --------------------------------------------------------------------
    def validate(self) -> None:
        """Raise ``ValueError`` naming the first array whose shape or type does not fit the config."""
        for name, shape in self.shapes().items():
            group, _, key = name.partition(".")  # "metrics.l2": the entry l2 of the dict self.metrics
            array = np.asarray(getattr(self, group).get(key) if key else getattr(self, group))
            kinds = "fib" if group == "compression" else "fi" if name.endswith(("epochs", "diverged_at")) else "f"
            if array.shape != shape or array.dtype.kind not in kinds:
                raise ValueError(f"{name} has shape {array.shape} and type {array.dtype}; the config needs {shape}")

    def frame(self) -> pandas.DataFrame:
        """The tidy table of ``metrics.csv`` as a pandas DataFrame (integer columns stay integers)."""
        import pandas

        return pandas.DataFrame(self.tables()["metrics"])

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


def _int(values) -> np.ndarray:
    return np.asarray(values).astype(np.int64)


def _float(values, config: Config) -> np.ndarray:
    """Metrics read back in the dtype they were computed in (the CSV holds them exactly)."""
    return np.asarray(values).astype(config.dtype)


def _column(table: dict[str, np.ndarray], name: str, config: Config) -> np.ndarray:
    """The metric ``name`` of a stored table, as ``_float``; NaN for a column of ``ADDED_COLUMNS`` that the
    version which stored the table did not write."""
    if name in ADDED_COLUMNS and name not in table:
        return np.full(len(next(iter(table.values()))), np.nan, config.dtype)
    return _float(table[name], config)


def _per_epoch(metrics: dict[str, np.ndarray], names, first: int = 0) -> dict[str, np.ndarray]:
    """The tidy table of per-run, per-epoch ``metrics`` (R, T) each: columns run (1..R), epoch (``first`` ..
    ``first`` + T − 1) and ``names``, one row per run and epoch."""
    runs, epochs = metrics["l2"].shape
    return {"run": np.repeat(np.arange(1, runs + 1), epochs), "epoch": np.tile(first + np.arange(epochs), runs),
            **{name: metrics[name].reshape(-1) for name in names}}


def proven_optimal(upper, lower) -> np.ndarray:
    """Where the aligned distance ``upper`` is proven to be the minimum over the group: its certified lower
    bound ``lower`` (same shape) is within ``OPTIMAL_RTOL`` of it. False where either is NaN."""
    upper, lower = np.asarray(upper, float), np.asarray(lower, float)
    with np.errstate(invalid="ignore"):
        return lower >= upper * (1 - OPTIMAL_RTOL)


@register_kind
@dataclass(frozen=True, repr=False, eq=False)
class EpochResult(Result):
    """The epoch experiment: R students, each trained on its own teacher and data; every epoch recorded.

    metrics: name -> (R, E + 1), epoch 0 = before training; NaN from a run's divergence on. The ``METRICS``
        at every epoch; the ``DISTANCES`` at ``kept_epochs`` only, NaN at the others.
    teacher: (R, P_teacher) each run's teacher after projection, in the teacher's own shape.
    student_init: (R, P) each run's initial student.
    diverged_at: (R,) first epoch with a non-finite metric, -1 for runs that finished.
    kept_epochs: (K,) the epochs 0, k, 2k, ..., E for ``align_every`` = k (empty for 0).
    kept_theta: (R, K, P) the students at those epochs.
    """

    kind: ClassVar[str] = "epoch"
    help: ClassVar[str] = "ℓ₂ distance and losses vs epoch (experiments A and B of ℓ₂-Experiments)"
    description: ClassVar[str] = (
        "Train R students on data from their teachers and record, for every epoch, the ℓ₂ distance to the "
        "teacher and the train, test and clean test losses.")
    engine: ClassVar[str] = "l2rebound.experiments:run_epoch_experiment"
    views: ClassVar[tuple[str, ...]] = ("absolute", "normalised")
    stored_tables: ClassVar[tuple[str, ...]] = ("metrics", "runs")
    stored_arrays: ClassVar[tuple[str, ...]] = ("params", "trajectory")

    metrics: dict[str, np.ndarray]
    teacher: np.ndarray
    student_init: np.ndarray
    diverged_at: np.ndarray
    kept_epochs: np.ndarray
    kept_theta: np.ndarray

    @classmethod
    def kept_students(cls, config):
        return kept_count(config)

    @classmethod
    def stored_values(cls, config):
        runs, kept = config.runs, kept_count(config)
        teacher, student = num_params(config.teacher_dims), num_params(config.student_dims)
        tables = runs * (config.epochs + 1) * (len(COLUMNS) + 2) + 3 * runs  # metrics.csv (+ run, epoch); runs.csv
        return tables, runs * (teacher + student + kept * student) + kept

    def shapes(self):
        c = self.config
        runs, students, kept = c.runs, num_params(c.student_dims), kept_count(c)
        return {**{f"metrics.{name}": (runs, c.epochs + 1) for name in COLUMNS},
                "teacher": (runs, num_params(c.teacher_dims)), "student_init": (runs, students),
                "diverged_at": (runs,), "kept_epochs": (kept,), "kept_theta": (runs, kept, students)}

    def tables(self):
        run = np.arange(1, len(self.metrics["l2"]) + 1)
        return {
            "metrics": _per_epoch(self.metrics, COLUMNS),
            "runs": {"run": run, "seed": self.config.seed + run, "diverged_at": _int(self.diverged_at)},
        }

    def arrays(self):
        return {"params": {"teacher": self.teacher, "student_init": self.student_init},
                "trajectory": {"epochs": self.kept_epochs, "theta": self.kept_theta}}

    @classmethod
    def from_files(cls, config, tables, arrays, manifest):
        shape = (config.runs, config.epochs + 1)
        metrics = {name: _column(tables["metrics"], name, config).reshape(shape) for name in COLUMNS}
        return cls(config, metrics, arrays["params"]["teacher"], arrays["params"]["student_init"],
                   _int(tables["runs"]["diverged_at"]), arrays["trajectory"]["epochs"], arrays["trajectory"]["theta"],
                   manifest=manifest)

    def figures(self, squared=False):
        from l2rebound.plots import epoch_figures

        return epoch_figures(self, squared)

    def summary(self, squared=False):
        from l2rebound.plots import summary_table

        return summary_table(self)

    def warnings(self):
        from l2rebound.fit import STALLED_LIMIT

        config, lines = self.config, []
        for run, epoch in enumerate(self.diverged_at, start=1):
            if epoch >= 0:
                lines.append(f"run {run} diverged at epoch {epoch} (non-finite loss): try a smaller --learning-rate "
                             f"(now {config.learning_rate:g})")
        if config.dtype == "float32" and config.epochs and not np.all(self.diverged_at >= 0):
            stalled = float(np.nanmean(self.metrics["stalled"][:, 1:]))
            if stalled > STALLED_LIMIT:
                lines.append(f"warning: float32: {stalled:.0%} of parameter steps fell below the parameters' "
                             "precision and were rounded away; use --dtype float64")
        return lines


@register_kind
@dataclass(frozen=True, repr=False, eq=False)
class NoiseResult(Result):
    """The noise experiment: one teacher; each run's student starts at it and trains at every noise level σ
    on the same inputs and unit noise (common random numbers); the metrics after the last epoch are kept.

    levels: (S,) the noise levels σ.
    metrics: name -> (S, R), the ``METRICS`` and ``DISTANCES`` after the last epoch (NaN for a diverged
        run); ``stalled`` is averaged over the epochs.
    teacher: (P_teacher,) the one teacher after projection.
    student_init: (R, P) each run's initial student (the same at every level).
    diverged_at: (S, R) first epoch with a non-finite metric, -1 for runs that finished.
    """

    kind: ClassVar[str] = "noise"
    help: ClassVar[str] = "ℓ₂ after training vs label noise σ, with a fitted power law (experiment C of ℓ₂-Experiments)"
    description: ClassVar[str] = (
        "One teacher; for each run the same inputs and unit noise z at every level σ (common random numbers). "
        "Each student starts at the teacher and trains on f(x) + σz; the distances after the last epoch are "
        "fitted by ℓ₂ ≈ c·σ^k.")
    engine: ClassVar[str] = "l2rebound.experiments:run_noise_experiment"
    views: ClassVar[tuple[str, ...]] = ("l2",)
    stored_tables: ClassVar[tuple[str, ...]] = ("metrics",)
    stored_arrays: ClassVar[tuple[str, ...]] = ("params",)

    levels: np.ndarray
    metrics: dict[str, np.ndarray]
    teacher: np.ndarray
    student_init: np.ndarray
    diverged_at: np.ndarray

    @classmethod
    def trainings(cls, config):
        return config.runs * len(config.noise_levels)

    @classmethod
    def stored_values(cls, config):
        teacher, student = num_params(config.teacher_dims), num_params(config.student_dims)
        # metrics.csv columns: level, sigma, run, the metrics, diverged_at
        return cls.trainings(config) * (len(COLUMNS) + 4), teacher + config.runs * student

    def shapes(self):
        c = self.config
        grid = (len(self.levels), c.runs)  # the config's levels, or those of ``experiments.noise_sweep``
        return {**{f"metrics.{name}": grid for name in COLUMNS}, "levels": grid[:1],
                "teacher": (num_params(c.teacher_dims),), "student_init": (c.runs, num_params(c.student_dims)),
                "diverged_at": grid}

    def tables(self):
        levels, runs = self.metrics["l2"].shape
        return {"metrics": {
            "level": np.repeat(np.arange(levels), runs), "sigma": np.repeat(self.levels, runs),
            "run": np.tile(np.arange(1, runs + 1), levels),
            **{name: self.metrics[name].reshape(-1) for name in COLUMNS},
            "diverged_at": _int(self.diverged_at).reshape(-1),
        }}

    def arrays(self):
        return {"params": {"teacher": self.teacher, "student_init": self.student_init}}

    @classmethod
    def from_files(cls, config, tables, arrays, manifest):
        shape = (len(config.noise_levels), config.runs)
        metrics = tables["metrics"]
        return cls(config, np.asarray(config.noise_levels),
                   {name: _column(metrics, name, config).reshape(shape) for name in COLUMNS},
                   arrays["params"]["teacher"], arrays["params"]["student_init"],
                   _int(metrics["diverged_at"]).reshape(shape), manifest=manifest)

    @classmethod
    def file_suffix(cls, view, squared):
        return "l2sq" if squared else "l2"

    def figures(self, squared=False):
        from l2rebound.plots import noise_figures

        return noise_figures(self, squared)

    def summary(self, squared=False):
        from l2rebound.plots import noise_summary

        return noise_summary(self, squared)

    def warnings(self):
        config, lines = self.config, []
        diverged = self.diverged_at >= 0
        for level in np.flatnonzero(diverged.any(axis=1)):
            lines.append(f"sigma={self.levels[level]:.3g}: {diverged[level].sum()} of {config.runs} runs diverged "
                         f"(first at epoch {self.diverged_at[level][diverged[level]].min()}): try a smaller "
                         f"--learning-rate (now {config.learning_rate:g})")
        if config.dtype == "float32" and not diverged.all():
            from l2rebound.fit import precision_floor

            low = self.levels[precision_floor(self)]
            if len(low):
                lines.append(f"warning: float32: at sigma = {', '.join(f'{v:.3g}' for v in low)} the parameter steps "
                             "rounded away can have moved the students by as much as their distance; these levels "
                             "are marked and left out of the fit (use --dtype float64)")
        return lines


def compression_columns(config: Config) -> tuple[str, ...]:
    """The columns of ``compression.csv`` (one row per run), for a config with H hidden layers. ``before``: the
    trained student at epoch E; ``after``: pruned at ``prune_threshold`` and fine-tuned ``finetune_epochs``;
    ``vanilla``: the student trained without regulariser or pruning for E + F epochs from the same start on the
    same data. ``alive_units_h``: hidden units of layer h with a non-zero incoming and a non-zero outgoing
    weight after pruning; ``teacher_units_h``: the teacher's width. ``support_recovered`` (0/1), ``l1_after``
    and ``l0_after`` compare the aligned pruned student with the padded teacher (``pruning.recovery``).
    ``diverged_at_finetune``, ``diverged_at_vanilla``: the first epoch of that phase with a non-finite metric,
    counted from the phase's start (-1: finished; the training phase's is ``diverged_at``). Counts are -1,
    values NaN, for a pruned student that is not finite."""
    layers = range(1, len(config.student_dims) - 1)
    return ("run", "threshold", "nonzero_before", "nonzero_after", *(f"alive_units_{h}" for h in layers),
            *(f"teacher_units_{h}" for h in layers), "train_loss_before", "train_loss_after",
            "clean_test_loss_before", "clean_test_loss_after", "l2_before", "l2_after", "l2_aligned_before",
            "l2_aligned_after", "l2_aligned_lower_before", "l2_aligned_lower_after", "support_recovered",
            "l1_after", "l0_after", "clean_test_loss_vanilla", "l2_aligned_vanilla", "l2_aligned_lower_vanilla",
            "diverged_at_finetune", "diverged_at_vanilla")


def integer_column(name: str) -> bool:
    """Whether the column ``name`` of ``compression.csv`` holds integers (counts, run numbers, 0/1 flags)."""
    return name in ("run", "nonzero_before", "nonzero_after", "support_recovered", "l0_after") or \
        name.startswith(("alive_units", "teacher_units", "diverged_at"))


STUDENTS = ("before", "after", "aligned_before", "aligned_after", "vanilla")
"""The compression experiment's students per run (``students.npz``): θ_E, the pruned (and fine-tuned) θ, both
also relabelled onto the padded teacher by their certified alignment, and the final vanilla θ."""


@register_kind
@dataclass(frozen=True, repr=False, eq=False)
class CompressionResult(EpochResult):
    """The compression experiment: R students, wider than their teachers, trained for E epochs under the
    config's rule, pruned (every |θ| < ``prune_threshold`` set to 0), fine-tuned F = ``finetune_epochs`` epochs
    with the pruned entries held at 0, and compared with a vanilla student trained E + F epochs from the
    same start on the same data.

    metrics, teacher, student_init, diverged_at, kept_epochs, kept_theta: the training phase, as in
        ``EpochResult``.
    finetune: name -> (R, F + 1), the ``METRICS`` of the pruned student (epoch 0: just pruned).
    vanilla: name -> (R, E + F + 1), the ``METRICS`` of the vanilla student.
    compression: column -> (R,), ``compression_columns``.
    students: name -> (R, P), ``STUDENTS``.
    """

    kind: ClassVar[str] = "compress"
    help: ClassVar[str] = "prune a wide student after training: does it recover its teacher (the compression experiment)?"
    description: ClassVar[str] = (
        "Train R students wider than their teachers, prune every parameter with |θ| below --prune-threshold, "
        "fine-tune with the pruned entries held at 0 (--finetune-epochs), and compare them, aligned, with the "
        "teacher and with a vanilla student trained as long from the same start: surviving units, whether the "
        "teacher's sparsity pattern is recovered, distances and test losses.")
    engine: ClassVar[str] = "l2rebound.experiments:run_compress_experiment"
    views: ClassVar[tuple[str, ...]] = ("networks", "comparison", "absolute", "normalised")
    stored_tables: ClassVar[tuple[str, ...]] = ("metrics", "runs", "finetune", "vanilla", "compression")
    stored_arrays: ClassVar[tuple[str, ...]] = ("params", "trajectory", "students")

    finetune: dict[str, np.ndarray]
    vanilla: dict[str, np.ndarray]
    compression: dict[str, np.ndarray]
    students: dict[str, np.ndarray]

    @classmethod
    def run_epochs(cls, config):
        return config.runs * 2 * (config.epochs + config.finetune_epochs)

    @classmethod
    def stored_values(cls, config):
        tables, arrays = super().stored_values(config)
        runs, span = config.runs, config.epochs + config.finetune_epochs
        tables += runs * (config.finetune_epochs + 1 + span + 1) * (len(METRICS) + 2)
        tables += runs * len(compression_columns(config))
        return tables, arrays + runs * len(STUDENTS) * num_params(config.student_dims)

    def shapes(self):
        c = self.config
        runs, students = c.runs, num_params(c.student_dims)
        return {**super().shapes(),
                **{f"finetune.{name}": (runs, c.finetune_epochs + 1) for name in METRICS},
                **{f"vanilla.{name}": (runs, c.epochs + c.finetune_epochs + 1) for name in METRICS},
                **{f"compression.{name}": (runs,) for name in compression_columns(c)},
                **{f"students.{name}": (runs, students) for name in STUDENTS}}

    def tables(self):
        return {**super().tables(), "finetune": _per_epoch(self.finetune, METRICS, first=self.config.epochs),
                "vanilla": _per_epoch(self.vanilla, METRICS),
                "compression": {name: _int(self.compression[name]) if integer_column(name) else self.compression[name]
                                for name in compression_columns(self.config)}}

    def arrays(self):
        return {**super().arrays(), "students": dict(self.students)}

    @classmethod
    def from_files(cls, config, tables, arrays, manifest):
        epoch = EpochResult.from_files(config, tables, arrays, manifest)

        def phase(table, epochs):
            return {name: _float(table[name], config).reshape(config.runs, epochs) for name in METRICS}

        span = config.epochs + config.finetune_epochs + 1
        compression = {name: _int(values) if integer_column(name) else values
                       for name, values in tables["compression"].items()}
        return cls(config, epoch.metrics, epoch.teacher, epoch.student_init, epoch.diverged_at, epoch.kept_epochs,
                   epoch.kept_theta, phase(tables["finetune"], config.finetune_epochs + 1),
                   phase(tables["vanilla"], span), compression, dict(arrays["students"]), manifest=manifest)

    def frame(self) -> pandas.DataFrame:
        """Every epoch of the three phases as one tidy table: ``phase`` is ``train`` (epochs 0..E; the distances
        at the kept epochs), ``finetune`` (E..E + F: the pruned student) or ``vanilla`` (0..E + F)."""
        import pandas

        tables = self.tables()
        parts = [pandas.DataFrame(tables[name]).assign(phase=name if name != "metrics" else "train")
                 for name in ("metrics", "finetune", "vanilla")]
        frame = pandas.concat(parts, ignore_index=True)
        return frame[["phase", *[c for c in frame.columns if c != "phase"]]]

    def compression_frame(self) -> pandas.DataFrame:
        """``compression.csv`` as a pandas DataFrame: one row per run."""
        import pandas

        return pandas.DataFrame(self.tables()["compression"])

    def figures(self, squared=False):
        from l2rebound.compression import comparison_figure, networks_figure

        return {"networks": networks_figure(self), "comparison": comparison_figure(self),
                **super().figures(squared)}

    def warnings(self):
        lines = super().warnings()
        for phase, what in (("finetune", "fine-tuning its pruned student"), ("vanilla", "training its vanilla student")):
            for run, epoch in enumerate(self.compression[f"diverged_at_{phase}"], start=1):
                if epoch >= 0 and not (phase == "finetune" and self.diverged_at[run - 1] >= 0):  # said above
                    lines.append(f"run {run} diverged at epoch {epoch} of {what} (non-finite loss)")
        return lines

    def summary(self, squared=False):
        from l2rebound.compression import compression_summary

        return compression_summary(self) + "\n\ntraining phase:\n" + super().summary(squared)


def kind_of(config: Config) -> type[Result]:
    """The registered kind of ``config.experiment``."""
    return KINDS[config.experiment]


def compute(config: Config, on_progress=None, checkpoint=None) -> Result:
    """Run the engine function of ``config``'s kind (imported here: the engine loads JAX)."""
    module, function = kind_of(config).engine.split(":")
    return getattr(importlib.import_module(module), function)(config, on_progress, checkpoint)


def with_manifest(result: Result, manifest: dict) -> Result:
    """``result`` carrying ``manifest``."""
    return dataclasses.replace(result, manifest=manifest)
