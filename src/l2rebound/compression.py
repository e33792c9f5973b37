"""The compression experiment's figures and summary: does a wide student, trained under a sparsifying
regulariser and pruned, shrink to its narrow teacher, and what does that cost against a vanilla student?

A ``CompressionResult`` holds, per run, the student trained E epochs under the config's rule ("trained"), the
same student with every |θ| < ``prune_threshold`` set to 0 and fine-tuned F epochs ("pruned"), and a student
trained E + F epochs from the same start without regulariser or pruning ("vanilla"). Two claims are tested:
pruning leaves about as many hidden units alive as the teacher has (ideally its exact sparsity pattern,
``support_recovered``), and the pruned student is at least as close to its teacher, in clean test loss and in
ℓ₂ distance modulo the symmetry group, as the vanilla one.

``networks_figure`` draws one run's teacher, trained and pruned student as node-link diagrams, the students
relabelled onto the teacher so that their unit i stands for the teacher's unit i (the units past the teacher's
width, drawn below those, are the extra ones: a pruning that recovers the teacher leaves them dead, grey). ``comparison_figure`` puts both claims on one page: per run, the clean
test loss and the aligned ℓ₂ of the vanilla, trained and pruned students, with the certified lower bounds of
the distances, the alive units per layer against the teacher's widths and how often the support was recovered.
``compression_summary`` gives the same numbers as plain text.

NumPy and matplotlib only (no JAX): a stored result is drawn without the engine. Runs are numbered 1..R as in
``compression.csv``; a run whose values are not finite (diverged, in training, fine-tuning or the vanilla
training) is left out of what it lacks, and a note says so.
"""

from __future__ import annotations

import textwrap
import warnings

import numpy as np
from matplotlib.figure import Figure
from matplotlib.lines import Line2D

from l2rebound.diagrams import network_figure
from l2rebound.layout import num_params
from l2rebound.plots import DPI, L2, subtitle
from l2rebound.results import CompressionResult, proven_optimal

PHASES = ("vanilla", "before", "after")
"""The students compared, as the suffixes of their ``compression.csv`` columns, in the order drawn."""
NAMES = {"vanilla": "vanilla", "before": "trained", "after": "pruned"}
"""What the figures and the summary call them."""
COLOURS = {"vanilla": "tab:blue", "before": "tab:orange", "after": "tab:green"}
RUN_COLOUR = "darkgrey"  # the lines joining one run's students
SPREAD = 0.24  # the runs' points are spread over this width around their student's x, so that they do not hide each other
SHRUNK = 0.5  # a trained student with ‖θ‖ below this share of its teacher's cannot be near it (a note says so)


# ---- the numbers ------------------------------------------------------------------------------------------
def _column(result: CompressionResult, name: str) -> np.ndarray:
    return np.asarray(result.compression[name], dtype=float)


def finished(result: CompressionResult, phase: str) -> np.ndarray:
    """Bool (R,): the runs whose ``phase`` student ("vanilla", "before", "after") has a finite clean test loss
    and aligned ℓ₂ (the others diverged)."""
    return np.isfinite(_column(result, f"clean_test_loss_{phase}")) & np.isfinite(_column(result, f"l2_aligned_{phase}"))


def pruned_counted(result: CompressionResult) -> np.ndarray:
    """Bool (R,): the runs whose pruned student is finite, so that its counts (non-zero entries, alive units,
    support) mean something (the engine writes -1 for the others)."""
    return finished(result, "after") & (_column(result, "nonzero_after") >= 0)


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


def _rule(config) -> str:
    return config.train + ("" if config.train == "vanilla" else f", α={config.alpha:g}")


# ---- the networks of one run -----------------------------------------------------------------------------
def _finite_run(result: CompressionResult, run: int) -> bool:
    return bool(np.all(np.isfinite(result.teacher[run]))
                and all(np.all(np.isfinite(result.students[name][run])) for name in ("aligned_before", "aligned_after")))


def _note(text: str) -> Figure:
    """A figure that holds one line of text: what a view shows when there is nothing to draw."""
    fig = Figure(figsize=(6, 1.5), dpi=DPI)
    fig.text(0.5, 0.5, text, ha="center", va="center")
    return fig


def networks_figure(result: CompressionResult, run: int | None = None) -> Figure:
    """Run ``run`` (1..R; default the first whose students are finite) as three node-link diagrams side by
    side: its teacher, its trained student and its pruned (and fine-tuned) student, both students relabelled
    onto the teacher padded with zero units (``students["aligned_*"]``), so that their first units stand for the
    teacher's and the units past the teacher's widths (drawn below) are the extra ones, grey once dead. The title names the run, the pruning
    threshold, whether the teacher's support was recovered and the aligned ℓ₂ after pruning (with its
    certified lower bound where the search did not prove it the minimum). Raises ``ValueError`` for a run
    out of range or a diverged one; without ``run``, a result whose every run diverged gets a figure that
    says so."""
    config = result.config
    runs = config.runs
    if run is None:
        found = [r for r in range(runs) if _finite_run(result, r)]
        if not found:
            return _note(f"no run of the {runs} has finite students to draw (they diverged)")
        index = found[0]
    else:
        if isinstance(run, bool) or int(run) != run or not 1 <= run <= runs:
            raise ValueError(f"run must be a run number from 1 to {runs} (got {run!r}).")
        index = int(run) - 1
        if not _finite_run(result, index):
            raise ValueError(f"run {run} diverged, so its students are not finite and cannot be drawn; pick another run.")
    tune = config.finetune_epochs
    panels = [("teacher", result.teacher[index], config.teacher_dims),
              (f"student, trained {config.epochs} epochs", result.students["aligned_before"][index], config.student_dims),
              ("student, pruned" + (f" and fine-tuned {tune} epochs" if tune else ""),
               result.students["aligned_after"][index], config.student_dims)]
    row = {name: values[index] for name, values in result.compression.items()}
    if row["support_recovered"]:
        support = "teacher's support recovered"
    else:
        support = f"teacher's support not recovered ({int(row['l0_after'])} entries differ)"
    upper, lower = float(row["l2_aligned_after"]), float(row["l2_aligned_lower_after"])
    distance = f"aligned {L2} to the teacher after pruning {upper:.4g}"
    if not proven_optimal(upper, lower):
        distance += f" (certified ≥ {lower:.4g})" if np.isfinite(lower) else " (no certified lower bound)"
    title = (f"Run {index + 1} of {runs}: {config.train} for {config.epochs} epochs, pruned at |θ| < "
             f"{config.prune_threshold:g}\n{support}; {distance}")
    return network_figure(panels, title=title)


# ---- both claims on one page ----------------------------------------------------------------------------
def _offsets(runs: int) -> np.ndarray:
    return (np.arange(runs) / (runs - 1) - 0.5) * SPREAD if runs > 1 else np.zeros(1)


def _per_run(ax, values: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Each run's students (R, 3) as a grey line through coloured points, and the median of each student over
    its finite runs as a black bar; the y axis is logarithmic when the values span a decade or more (then values
    ≤ 0 are left out). Returns the x positions (R, 3) and the values drawn (NaN where left out)."""
    runs = len(values)
    finite = values[np.isfinite(values)]
    log = finite.size > 0 and finite.min() > 0 and finite.max() >= 10 * finite.min()
    shown = np.where(np.isfinite(values) & ((values > 0) if log else True), values, np.nan)
    x = np.arange(len(PHASES))[None, :] + _offsets(runs)[:, None]
    for r in range(runs):
        if np.any(np.isfinite(shown[r])):
            ax.plot(x[r], shown[r], "-", color=RUN_COLOUR, lw=0.8, zorder=1, gid=f"run {r + 1}")
    for i, phase in enumerate(PHASES):
        ok = np.isfinite(shown[:, i])
        ax.plot(x[ok, i], shown[ok, i], "o", color=COLOURS[phase], ms=5, mec="black", mew=0.4, zorder=4,
                gid=f"points {phase}")
        if ok.any():
            ax.plot([i], [np.median(shown[ok, i])], "_", color="black", ms=30, mew=2.2, zorder=5, gid=f"median {phase}")
    ax.set_xticks(range(len(PHASES)))
    ax.set_xlim(-0.5, len(PHASES) - 0.5)
    ax.set_yscale("log" if log else "linear")
    ax.grid(alpha=0.3, which="major", axis="y")
    return x, shown


def _tick_labels(config) -> list[str]:
    tune, epochs = config.finetune_epochs, config.epochs
    return [f"vanilla\n{epochs + tune} epochs,\nno regulariser", f"trained\n{epochs} epochs,\n{_rule(config)}",
            f"pruned\n|θ| < {config.prune_threshold:g}" + (f",\n+{tune} epochs masked" if tune else ",\nnot fine-tuned")]


def units_table(result: CompressionResult) -> list[str]:
    """The text beside the comparison: alive units per hidden layer (median and range over the runs whose
    pruned student is finite) against the teacher's widths, the support recovered, the non-zero entries."""
    ok = pruned_counted(result)
    lines = ["alive hidden units after pruning", f"{'layer':<7}{'teacher':>8}  {'pruned: median [range]'}"]
    for h in hidden_layers(result):
        alive = _column(result, f"alive_units_{h}")[ok]
        lines.append(f"{h:<7}{result.config.teacher_dims[h]:>8}  {_median_range(alive)}"
                     f"   (of {result.config.student_dims[h]})")
    recovered = int(np.sum(_column(result, "support_recovered")[ok] > 0))
    lines += ["", f"support recovered in {recovered} of {int(ok.sum())} runs",
              f"non-zero entries: {_median_range(_column(result, 'nonzero_after')[ok])}",
              f"  of {num_params(result.config.student_dims)} (teacher: {num_params(result.config.teacher_dims)})"]
    return lines


def beats_vanilla(result: CompressionResult) -> tuple[int, int, int, int]:
    """Of the runs where the pruned and the vanilla student are both finite (their count first), in how many
    the pruned one has the lower clean test loss, the smaller aligned ℓ₂ (upper bounds), and the certainly
    smaller one (its upper bound below the vanilla one's certified lower bound)."""
    both = finished(result, "after") & finished(result, "vanilla")
    upper = _column(result, "l2_aligned_after")[both]
    counts = (_column(result, "clean_test_loss_after")[both] < _column(result, "clean_test_loss_vanilla")[both],
              upper < _column(result, "l2_aligned_vanilla")[both], upper < _column(result, "l2_aligned_lower_vanilla")[both])
    return int(both.sum()), *(int(c.sum()) for c in counts)


def verdicts(result: CompressionResult) -> list[str]:
    """``beats_vanilla`` as lines of text."""
    n, loss, closer, certain = beats_vanilla(result)
    return [f"pruned beats vanilla, of {n} runs:", f"  clean test loss lower: {loss}",
            f"  aligned {L2} smaller:   {closer} ({certain} certified)"]


def comparison_figure(result: CompressionResult) -> Figure:
    """Per run, the vanilla, trained and pruned students side by side: their clean test loss (left) and their
    aligned ℓ₂ to the teacher (right), each run's three values joined by a grey line, the medians as black bars
    (log y where the values span a decade). On the right a hollow triangle on a thin line marks the certified
    lower bound of each distance that the search did not prove the minimum, and a dashed line ‖θ_teacher‖ (the
    distance of θ = 0, median over runs). Beside them: alive units per layer against the teacher's widths, how
    many runs recovered the teacher's support, the non-zero entries, and a note naming the runs left out
    (diverged). Where no student of any run is finite, a figure that says so."""
    config = result.config
    if not any(finished(result, phase).any() for phase in PHASES):
        return _note(f"every one of the {config.runs} runs diverged: there is nothing to compare")
    fig = Figure(figsize=(12.5, 6), dpi=DPI, layout="constrained")
    loss_ax, l2_ax, text_ax = fig.subplots(1, 3, width_ratios=[1, 1, 0.7])
    loss = np.column_stack([_column(result, f"clean_test_loss_{phase}") for phase in PHASES])
    _per_run(loss_ax, loss)
    loss_ax.set_ylabel("clean test loss (vs. the teacher)")
    loss_ax.set_title("clean test loss (lower is better)", fontsize="medium")
    upper = np.column_stack([_column(result, f"l2_aligned_{phase}") for phase in PHASES])
    lower = np.column_stack([_column(result, f"l2_aligned_lower_{phase}") for phase in PHASES])
    x, shown = _per_run(l2_ax, upper)
    norm = float(np.median(teacher_norms(result)))
    l2_ax.axhline(norm, color="dimgray", ls="--", lw=1, zorder=0, gid="teacher norm")
    handles = [Line2D([], [], color=RUN_COLOUR, lw=0.8, marker="o", mfc="white", mec="black", mew=0.4, ms=5,
                      label="one run: its three students joined"),
               Line2D([], [], color="black", ls="", marker="_", ms=16, mew=2.2, label="median over runs"),
               Line2D([], [], color="dimgray", ls="--", lw=1,
                      label=f"‖θ_teacher‖ = {norm:.3g} (median): the aligned {L2} of θ = 0")]
    with np.errstate(invalid="ignore"):
        gap = np.isfinite(shown) & np.isfinite(lower) & (lower > 0) & ~proven_optimal(upper, lower)
    if gap.any():
        l2_ax.vlines(x[gap], lower[gap], upper[gap], color="black", lw=0.7, zorder=2, gid="lower bound gaps")
        l2_ax.plot(x[gap], lower[gap], "v", mfc="white", mec="black", ms=5, mew=0.8, zorder=3, gid="lower bounds")
        handles.append(Line2D([], [], color="black", lw=0.7, marker="v", mfc="white", mec="black", ms=5,
                              label=f"certified lower bound on the aligned {L2} (where below it)"))
    l2_ax.set_ylabel(f"aligned {L2} to the teacher (best relabelling found)")
    l2_ax.set_title(f"{L2} distance to the teacher, modulo permutations and sign flips", fontsize="medium")
    for ax in (loss_ax, l2_ax):
        ax.set_xticklabels(_tick_labels(config), fontsize="small")
    fig.legend(handles=handles, loc="outside lower center", ncols=2, fontsize="small", frameon=False)
    text_ax.axis("off")
    lines = units_table(result) + [""] + verdicts(result)
    if shrink_ratio(result) < SHRUNK:
        lines += ["", f"trained students' ‖θ‖: a median {shrink_ratio(result):.0%}", "  of their teachers' (shrunk toward 0)"]
    notes = left_out(result)
    if notes:
        lines += ["", "left out (not finite):", *(textwrap.fill(note, 44, subsequent_indent="  ") for note in notes)]
    text = "\n".join(lines).replace(L2, "l2")  # the monospace font has no ℓ
    text_ax.text(0, 1, text, va="top", ha="left", family="monospace", fontsize="small",
                 transform=text_ax.transAxes)
    text_ax.text(0, 0, textwrap.fill(" ".join(subtitle(result).split()), 58), va="bottom", ha="left",
                 fontsize="x-small", color="dimgray", transform=text_ax.transAxes)
    fig.suptitle(f"Pruned, trained and vanilla students of {config.runs} runs: closer to the teacher after pruning?",
                 fontsize="medium")
    return fig


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
    header = (f"compression: trained {config.epochs} epochs ({_rule(config)}), pruned at |θ| < "
              f"{config.prune_threshold:g}, fine-tuned {config.finetune_epochs} epochs; vanilla: "
              f"{config.epochs + config.finetune_epochs} epochs, no regulariser")
    lines = [header, f"{'':<{width}}{'median [range]':<22}over {int(counted.sum())} of {config.runs} runs"]

    def row(name, text, note=""):
        lines.append(f"{name:<{width}}{text:<22}{note}".rstrip())

    nonzero_before = _column(result, "nonzero_before")
    row("non-zero entries, trained", _median_range(nonzero_before[trained & (nonzero_before >= 0)]), f"of {students}")
    row("non-zero entries, pruned", _median_range(_column(result, "nonzero_after")[counted]),
        f"of {students} (the teacher has {num_params(config.teacher_dims)})")
    for h in hidden_layers(result):
        row(f"alive units, hidden layer {h}", _median_range(_column(result, f"alive_units_{h}")[counted]),
            f"teacher {config.teacher_dims[h]}, of {config.student_dims[h]}")
    row("entries off the teacher's support", _median_range(_column(result, "l0_after")[counted]), "(l0_after)")
    recovered = int(np.sum(_column(result, "support_recovered")[counted] > 0))
    row("support recovered", f"{recovered} of {int(counted.sum())} runs")
    lines.append(f"{'':<{width}}{'mean ± std':<22}runs")
    for phase in PHASES:
        ok = finished(result, phase)
        upper, lower = _column(result, f"l2_aligned_{phase}")[ok], _column(result, f"l2_aligned_lower_{phase}")[ok]
        proven = proven_optimal(upper, lower)
        note = f"{int(ok.sum())}; proven minimal in {int(proven.sum())}"
        if not proven.all() and np.isfinite(lower).all():
            note += f"; certified lower bound {_mean_std(lower)}"
        row(f"aligned {L2}, {NAMES[phase]}", _mean_std(upper), note)
    norms = teacher_norms(result)
    row(f"‖θ_teacher‖ = aligned {L2} of θ = 0", _mean_std(norms), str(config.runs))
    for phase in PHASES:
        ok = finished(result, phase)
        row(f"clean test loss, {NAMES[phase]}", _mean_std(_column(result, f"clean_test_loss_{phase}")[ok]),
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
                     f"({_rule(config)}) has shrunk them toward θ = 0")
    return "\n".join(lines + left_out(result))
