"""The compression experiment's result: the trained, pruned and vanilla students of each run, the
``compression.csv`` table, and the text summary (NumPy only).

A ``CompressionResult`` holds, per run, the student trained E epochs under the config's rule ("trained"), the
same student with every |θ| < ``prune_threshold`` set to 0 and fine-tuned F epochs ("pruned"), and a student
trained E + F epochs from the same start without regulariser or pruning ("vanilla"). Two claims are tested:
pruning leaves about as many hidden units alive as the teacher has (ideally its exact sparsity pattern,
``support_recovered``), and the pruned student is at least as close to its teacher, in clean test loss and in
ℓ₂ distance modulo the symmetry group, as the vanilla one. Runs are numbered 1..R as in ``compression.csv``; a
run whose values are not finite (diverged, in training, fine-tuning or the vanilla training) is left out of
what it lacks, and a note says so.
"""

from __future__ import annotations

import warnings
from dataclasses import dataclass
from typing import TYPE_CHECKING, ClassVar

import numpy as np

from l2rebound.kinds.epoch.result import EpochResult
from l2rebound.layout import num_params
from l2rebound.results import L2, METRICS, Column, Table, as_float, as_int, per_epoch, per_epoch_table, proven_optimal

if TYPE_CHECKING:
    import pandas


STUDENTS = ("before", "after", "aligned_before", "aligned_after", "vanilla")
"""The compression experiment's students per run (``students.npz``): θ_E, the pruned (and fine-tuned) θ, both
also relabelled onto the padded teacher by their certified alignment, and the final vanilla θ."""


def compression_table(config) -> Table:
    """The columns of ``compression.csv``, one row per run, for a config with H hidden layers. ``before``: the
    trained student at epoch E; ``after``: pruned (at ``prune_threshold``, or by search: ``threshold`` is then
    each run's) and fine-tuned ``finetune_epochs``;
    ``vanilla``: the student trained without regulariser or pruning for E + F epochs from the same start on the
    same data. ``alive_units_h``: hidden units of layer h with a non-zero incoming and a non-zero outgoing
    weight after pruning; ``teacher_units_h``: the teacher's width. ``support_recovered`` (0/1), ``l1_after``
    and ``l0_after`` compare the aligned pruned student with the padded teacher (``pruning.recovery``).
    ``diverged_at_finetune``, ``diverged_at_vanilla``: the first epoch of that phase with a non-finite metric,
    counted from the phase's start (-1: finished; the training phase's is ``diverged_at``). Counts are -1,
    values NaN, for a pruned student that is not finite. The ``summary`` columns enter a sweep's summary (the
    mean of ``support_recovered`` over runs is the fraction of runs that recovered the teacher's pattern)."""
    layers = range(1, len(config.student_dims) - 1)

    def count(name):
        return Column(name, integer=True)

    def summary(name, place, label, integer=False):
        return Column(name, integer, place, label)

    return Table(config.runs, (
        count("run"), Column("threshold"), count("nonzero_before"),
        summary("nonzero_after", 6, "non-zero parameters", integer=True),
        *(count(f"alive_units_{h}") for h in layers), *(count(f"teacher_units_{h}") for h in layers),
        Column("train_loss_before"), Column("train_loss_after"), Column("clean_test_loss_before"),
        summary("clean_test_loss_after", 4, "clean test loss after pruning"), Column("l2_before"), Column("l2_after"),
        Column("l2_aligned_before"), summary("l2_aligned_after", 2, "aligned ℓ₂ after pruning"),
        Column("l2_aligned_lower_before"), summary("l2_aligned_lower_after", 3, "its certified lower bound"),
        summary("support_recovered", 1, "fraction of runs recovering the support", integer=True), Column("l1_after"),
        summary("l0_after", 7, "support entries differing from the teacher's", integer=True),
        summary("clean_test_loss_vanilla", 5, "clean test loss, vanilla student"), Column("l2_aligned_vanilla"),
        Column("l2_aligned_lower_vanilla"), count("diverged_at_finetune"), count("diverged_at_vanilla")))


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
    compression: column -> (R,), ``compression_table``.
    students: name -> (R, P), ``STUDENTS``.
    """

    kind: ClassVar[str] = "compress"
    sweep_stats: ClassVar[tuple[str, ...]] = ("support_recovered", "l2_aligned_after")
    mixed_groups: ClassVar[tuple[str, ...]] = ("compression",)

    finetune: dict[str, np.ndarray]
    vanilla: dict[str, np.ndarray]
    compression: dict[str, np.ndarray]
    students: dict[str, np.ndarray]

    @classmethod
    def run_epochs(cls, config):
        return config.runs * 2 * (config.epochs + config.finetune_epochs)

    @classmethod
    def table_specs(cls, config):
        runs, span = config.runs, config.epochs + config.finetune_epochs
        return {**super().table_specs(config), "finetune": per_epoch_table(runs, config.finetune_epochs + 1, METRICS),
                "vanilla": per_epoch_table(runs, span + 1, METRICS), "compression": compression_table(config)}

    @classmethod
    def array_shapes(cls, config):
        students = (config.runs, num_params(config.student_dims))
        return {**super().array_shapes(config), "students": dict.fromkeys(STUDENTS, students)}

    def shapes(self):
        c = self.config
        runs = c.runs
        return {**super().shapes(),
                **{f"finetune.{name}": (runs, c.finetune_epochs + 1) for name in METRICS},
                **{f"vanilla.{name}": (runs, c.epochs + c.finetune_epochs + 1) for name in METRICS},
                **{f"compression.{name}": (runs,) for name in compression_table(c).names},
                **{f"students.{name}": shape for name, shape in self.array_shapes(c)["students"].items()}}

    def table_data(self):
        return {**super().table_data(), "finetune": per_epoch(self.finetune, METRICS, first=self.config.epochs),
                "vanilla": per_epoch(self.vanilla, METRICS), "compression": self.compression}

    def arrays(self):
        return {**super().arrays(), "students": dict(self.students)}

    @classmethod
    def from_files(cls, config, tables, arrays, manifest):
        epoch = EpochResult.from_files(config, tables, arrays, manifest)

        def phase(table, epochs):
            return {name: as_float(table[name], config).reshape(config.runs, epochs) for name in METRICS}

        span = config.epochs + config.finetune_epochs + 1
        integer = {column.name for column in compression_table(config).columns if column.integer}
        compression = {name: as_int(values) if name in integer else values
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

    def warnings(self):
        lines = super().warnings() + set_up_warnings(self.config)
        for phase, what in (("finetune", "fine-tuning its pruned student"),
                            ("vanilla", "training its vanilla student")):
            for run, epoch in enumerate(self.compression[f"diverged_at_{phase}"], start=1):
                if epoch >= 0 and not (phase == "finetune" and self.diverged_at[run - 1] >= 0):  # said above
                    lines.append(f"run {run} diverged at epoch {epoch} of {what} (non-finite loss)")
        return lines

    def sweep_columns(self):
        """The ``summary`` columns of ``compression.csv`` (NaN where the pruned student, or for
        ``clean_test_loss_vanilla`` the vanilla one, diverged), and ``diverged_at`` counting the fine-tuning
        after the training (E + its epoch), so that a run whose pruned student diverged is left out of a sweep's
        figures like one whose training did."""
        tuned, trained = np.asarray(self.compression["diverged_at_finetune"]), np.asarray(self.diverged_at)
        return {**super().sweep_columns(),
                "diverged_at": np.where(trained >= 0, trained, np.where(tuned >= 0, self.config.epochs + tuned, -1))}

    def summary(self, squared=False):
        return compression_summary(self) + "\n\ntraining phase:\n" + super().summary(squared)


def set_up_warnings(config) -> list[str]:
    """What makes a compression set-up answer less than it asks: a student as wide as its teacher (no
    ``student_dims`` given: nothing beyond the teacher to prune), and the vanilla rule, under which the trained
    student is itself a vanilla student (with no fine-tuning, the same numbers as the "vanilla" one)."""
    lines = []
    if config.student_dims == config.teacher_dims:
        lines.append("warning: the student is as wide as its teacher (no --student-dims): there are no extra units "
                     "to prune, so the experiment cannot show a compression; --preset D pads a 2,10,5,1 teacher into "
                     "a 2,25,25,1 student")
    if config.train == "vanilla":
        same = ", so 'trained' and 'vanilla' are the same student" if not config.finetune_epochs else ""
        lines.append(f"warning: --train vanilla: the trained student is trained by the vanilla rule too{same}; "
                     "compare a regulariser with it (--train drr or l1, as --preset D)")
    return lines


# ---- the numbers ------------------------------------------------------------------------------------------
PHASES = ("vanilla", "before", "after")
"""The students compared, as the suffixes of their ``compression.csv`` columns, in the order drawn."""
NAMES = {"vanilla": "vanilla", "before": "trained", "after": "pruned"}
"""What the figures and the summary call them."""
SHRUNK = 0.5  # a trained student with ‖θ‖ below this share of its teacher's cannot be near it (a note says so)


def values_of(result: CompressionResult, name: str) -> np.ndarray:
    """The column ``name`` of ``compression.csv`` as floats (R,)."""
    return np.asarray(result.compression[name], dtype=float)


def finished(result: CompressionResult, phase: str) -> np.ndarray:
    """Bool (R,): the runs whose ``phase`` student ("vanilla", "before", "after") has a finite clean test loss
    and aligned ℓ₂ (the others diverged)."""
    return (np.isfinite(values_of(result, f"clean_test_loss_{phase}"))
            & np.isfinite(values_of(result, f"l2_aligned_{phase}")))


def pruned_counted(result: CompressionResult) -> np.ndarray:
    """Bool (R,): the runs whose pruned student is finite, so that its counts (non-zero entries, alive units,
    support) mean something (the engine writes -1 for the others)."""
    return finished(result, "after") & (values_of(result, "nonzero_after") >= 0)


def left_out(result: CompressionResult) -> list[str]:
    """One line per run that lacks some student, naming the students left out for it."""
    lines = []
    for run in range(result.config.runs):
        lost = [NAMES[phase] for phase in PHASES if not finished(result, phase)[run]]
        if lost:
            names = lost[0] if len(lost) == 1 else f"{', '.join(lost[:-1])} and {lost[-1]}"
            lines.append(f"run {run + 1} diverged: {names} student{'s' if len(lost) > 1 else ''} left out")
    return lines


def hidden_layers(result: CompressionResult) -> range:
    return range(1, len(result.config.student_dims) - 1)


def teacher_norms(result: CompressionResult) -> np.ndarray:
    """(R,) ‖θ_teacher‖: the aligned ℓ₂ of θ = 0, which no relabelling changes."""
    return np.linalg.norm(np.asarray(result.teacher, dtype=float), axis=1)


def shrink_ratio(result: CompressionResult) -> float:
    """The median over runs of the trained student's ‖θ‖ over its teacher's (NaN if every run diverged)."""
    sizes = np.linalg.norm(np.asarray(result.students["before"], dtype=float), axis=1) / teacher_norms(result)
    return float(np.median(sizes[np.isfinite(sizes)])) if np.isfinite(sizes).any() else float("nan")


def _median_range(values) -> str:
    values = np.asarray(values)
    if not values.size:
        return "—"
    low, mid, high = np.min(values), np.median(values), np.max(values)
    number = (lambda v: f"{v:g}") if np.all(values == np.round(values)) else (lambda v: f"{v:.4g}")
    return number(mid) if low == high else f"{number(mid)} [{number(low)}, {number(high)}]"


def _mean_std(values) -> str:
    values = np.asarray(values, dtype=float)
    return f"{np.mean(values):.4g} ± {np.std(values):.3g}" if values.size else "—"


def rule_text(config) -> str:
    return config.train + ("" if config.train == "vanilla" else f", α={config.alpha:g}")


def pruning_text(config) -> str:
    """How the trained students were pruned, for people."""
    if config.prune_method == "search":
        return f"pruned by search (training loss within {1 + config.tamade_tolerance:g}x the unpruned one)"
    return f"pruned at |θ| < {config.prune_threshold:g}"


def tuning_text(config) -> str:
    """How the pruned students were fine-tuned, for people."""
    plain = config.finetune_train == "vanilla" and config.train != "vanilla"
    return f"fine-tuned {config.finetune_epochs} epochs" + (" without the regulariser" if plain else "")



def units_table(result: CompressionResult) -> list[str]:
    """The text beside the comparison: alive units per hidden layer (median and range over the runs whose
    pruned student is finite) against the teacher's widths, the support recovered, the non-zero entries."""
    ok = pruned_counted(result)
    lines = ["alive hidden units after pruning", f"{'layer':<7}{'teacher':>8}  {'pruned: median [range]'}"]
    for h in hidden_layers(result):
        alive = values_of(result, f"alive_units_{h}")[ok]
        lines.append(f"{h:<7}{result.config.teacher_dims[h]:>8}  {_median_range(alive)}"
                     f"   (of {result.config.student_dims[h]})")
    recovered = int(np.sum(values_of(result, "support_recovered")[ok] > 0))
    lines += ["", f"support recovered in {recovered} of {int(ok.sum())} runs",
              f"non-zero entries: {_median_range(values_of(result, 'nonzero_after')[ok])}",
              f"  of {num_params(result.config.student_dims)} (teacher: {num_params(result.config.teacher_dims)})"]
    return lines


def beats_vanilla(result: CompressionResult) -> tuple[int, int, int, int]:
    """Of the runs where the pruned and the vanilla student are both finite (their count first), in how many
    the pruned one has the lower clean test loss, the smaller aligned ℓ₂ (upper bounds), and the certainly
    smaller one (its upper bound below the vanilla one's certified lower bound)."""
    both = finished(result, "after") & finished(result, "vanilla")
    upper = values_of(result, "l2_aligned_after")[both]
    counts = (values_of(result, "clean_test_loss_after")[both] < values_of(result, "clean_test_loss_vanilla")[both],
              upper < values_of(result, "l2_aligned_vanilla")[both],
              upper < values_of(result, "l2_aligned_lower_vanilla")[both])
    return int(both.sum()), *(int(c.sum()) for c in counts)


def verdicts(result: CompressionResult) -> list[str]:
    """``beats_vanilla`` as lines of text."""
    n, loss, closer, certain = beats_vanilla(result)
    return [f"pruned beats vanilla, of {n} runs:", f"  clean test loss lower: {loss}",
            f"  aligned {L2} smaller:   {closer} ({certain} certified)"]



# ---- the summary -----------------------------------------------------------------------------------------
def compression_summary(result: CompressionResult) -> str:
    """The key numbers as plain text, over the runs whose students are finite: non-zero entries before and
    after pruning (of P), alive units per hidden layer against the teacher's widths, entries off the teacher's
    support (``l0_after``) as median [range], and in how many runs the support was recovered; the aligned ℓ₂
    and clean test loss of the vanilla, trained and pruned students as mean ± std, with the certified lower
    bounds and in how many runs each distance is proven minimal, ‖θ‖ of teachers and students, and in how many
    runs the pruned student's clean test loss is below the vanilla one's. Then one line per run left out."""
    config = result.config
    counted, trained = pruned_counted(result), finished(result, "before")
    students, width = num_params(config.student_dims), 36
    header = (f"compression: trained {config.epochs} epochs ({rule_text(config)}), {pruning_text(config)}, "
              f"{tuning_text(config)}; vanilla: {config.epochs + config.finetune_epochs} epochs, no regulariser")
    lines = [header, f"{'':<{width}}{'median [range]':<22}over {int(counted.sum())} of {config.runs} runs"]

    def row(name, text, note=""):
        lines.append(f"{name:<{width}}{text:<22}{note}".rstrip())

    nonzero_before = values_of(result, "nonzero_before")
    row("non-zero entries, trained", _median_range(nonzero_before[trained & (nonzero_before >= 0)]), f"of {students}")
    row("non-zero entries, pruned", _median_range(values_of(result, "nonzero_after")[counted]),
        f"of {students} (the teacher has {num_params(config.teacher_dims)})")
    for h in hidden_layers(result):
        row(f"alive units, hidden layer {h}", _median_range(values_of(result, f"alive_units_{h}")[counted]),
            f"teacher {config.teacher_dims[h]}, of {config.student_dims[h]}")
    row("entries off the teacher's support", _median_range(values_of(result, "l0_after")[counted]), "(l0_after)")
    recovered = int(np.sum(values_of(result, "support_recovered")[counted] > 0))
    row("support recovered", f"{recovered} of {int(counted.sum())} runs")
    lines.append(f"{'':<{width}}{'mean ± std':<22}runs")
    for phase in PHASES:
        ok = finished(result, phase)
        upper, lower = values_of(result, f"l2_aligned_{phase}")[ok], values_of(result, f"l2_aligned_lower_{phase}")[ok]
        proven = proven_optimal(upper, lower)
        note = f"{int(ok.sum())}; proven minimal in {int(proven.sum())}"
        if not proven.all() and np.isfinite(lower).all():
            note += f"; certified lower bound {_mean_std(lower)}"
        row(f"aligned {L2}, {NAMES[phase]}", _mean_std(upper), note)
    norms = teacher_norms(result)
    row(f"‖θ_teacher‖ = aligned {L2} of θ = 0", _mean_std(norms), str(config.runs))
    for phase in PHASES:
        ok = finished(result, phase)
        row(f"clean test loss, {NAMES[phase]}", _mean_std(values_of(result, f"clean_test_loss_{phase}")[ok]),
            str(int(ok.sum())))
    n, below, closer, certain = beats_vanilla(result)
    lines.append(f"pruned student's clean test loss below the vanilla one's in {below} of {n} runs")
    lines.append(f"pruned student's aligned {L2} below the vanilla one's in {closer} of {n} runs "
                 f"({certain} certified: below the vanilla one's lower bound)")
    sizes = {phase: np.linalg.norm(np.asarray(result.students[phase], dtype=float), axis=1) for phase in PHASES}
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)  # every run of a student diverged: NaN
        medians = {phase: float(np.nanmedian(size)) for phase, size in sizes.items()}
    ratio = shrink_ratio(result)
    lines.append(f"‖θ‖, median over runs: teacher {np.median(norms):.4g}, "
                 + ", ".join(f"{NAMES[phase]} {medians[phase]:.4g}" for phase in PHASES))
    if ratio < SHRUNK:
        lines.append(f"note: the trained students' ‖θ‖ is a median {ratio:.0%} of their teachers', and no relabelling "
                     f"brings a student closer than ‖θ_teacher‖ − ‖θ‖ to its teacher: the regulariser "
                     f"({rule_text(config)}) has shrunk them toward θ = 0")
    return "\n".join(lines + left_out(result))
