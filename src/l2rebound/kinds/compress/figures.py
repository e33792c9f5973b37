"""The compression experiment's figures: one run's networks as node-link diagrams, and the comparison of the
vanilla, trained and pruned students (matplotlib).

``networks_figure`` draws one run's teacher, trained and pruned student as node-link diagrams, the students
relabelled onto the teacher so that their unit i stands for the teacher's unit i (the units past the teacher's
width, drawn below those, are the extra ones: a pruning that recovers the teacher leaves them dead, grey).
``comparison_figure`` puts both claims on one page: per run, the clean test loss and the aligned ℓ₂ of the
vanilla, trained and pruned students, with the certified lower bounds of the distances, the alive units per
layer against the teacher's widths and how often the support was recovered.
"""

from __future__ import annotations

import textwrap

import numpy as np
from matplotlib.figure import Figure
from matplotlib.lines import Line2D

from l2rebound.diagrams import network_figure
from l2rebound.kinds.compress.result import (
    PHASES,
    SHRUNK,
    CompressionResult,
    finished,
    left_out,
    rule_text,
    shrink_ratio,
    teacher_norms,
    units_table,
    values_of,
    verdicts,
)
from l2rebound.kinds.epoch.figures import figures as epoch_figures
from l2rebound.plots import DPI, L2, subtitle
from l2rebound.results import proven_optimal

COLOURS = {"vanilla": "tab:blue", "before": "tab:orange", "after": "tab:green"}
RUN_COLOUR = "darkgrey"  # the lines joining one run's students
# the runs' points are spread over this width around their student's x, so that they do not hide each other
SPREAD = 0.24


def figures(result: CompressionResult, squared: bool = False) -> dict[str, Figure]:
    """The networks of the first finished run, the comparison of the students, and the training phase's
    views as the epoch experiment draws them."""
    return {"networks": networks_figure(result), "comparison": comparison_figure(result),
            **epoch_figures(result, squared)}


# ---- the networks of one run -----------------------------------------------------------------------------
def _finite_run(result: CompressionResult, run: int) -> bool:
    return bool(np.all(np.isfinite(result.teacher[run]))
                and all(np.all(np.isfinite(result.students[name][run]))
                        for name in ("aligned_before", "aligned_after")))


def _note(text: str) -> Figure:
    """A figure that holds one line of text: what a view shows when there is nothing to draw."""
    fig = Figure(figsize=(6, 1.5), dpi=DPI)
    fig.text(0.5, 0.5, text, ha="center", va="center")
    return fig


def networks_figure(result: CompressionResult, run: int | None = None) -> Figure:
    """Run ``run`` (1..R; default the first whose students are finite) as three node-link diagrams side by
    side: its teacher, its trained student and its pruned (and fine-tuned) student, both students relabelled
    onto the teacher padded with zero units (``students["aligned_*"]``), so that their first units stand for the
    teacher's and the units past the teacher's widths (drawn below) are the extra ones, grey once dead. The title
    names the run, the pruning threshold, whether the teacher's support was recovered and the aligned ℓ₂ after
    pruning (with its certified lower bound where the search did not prove it the minimum). Raises
    ``ValueError`` for a run out of range or a diverged one; without ``run``, a result whose every run diverged
    gets a figure that says so."""
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
            raise ValueError(f"run {run} diverged, so its students are not finite and cannot be drawn; "
                             "pick another run.")
    tune = config.finetune_epochs
    panels = [("teacher", result.teacher[index], config.teacher_dims),
              (f"student, trained {config.epochs} epochs", result.students["aligned_before"][index],
               config.student_dims),
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
             f"{float(row['threshold']):.3g}\n{support}; {distance}")
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
    return [f"vanilla\n{epochs + tune} epochs,\nno regulariser", f"trained\n{epochs} epochs,\n{rule_text(config)}",
            ("pruned\nby search" if config.prune_method == "search" else f"pruned\n|θ| < {config.prune_threshold:g}")
            + (f",\n+{tune} epochs masked" if tune else ",\nnot fine-tuned")]



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
    loss = np.column_stack([values_of(result, f"clean_test_loss_{phase}") for phase in PHASES])
    _per_run(loss_ax, loss)
    loss_ax.set_ylabel("clean test loss (vs. the teacher)")
    loss_ax.set_title("clean test loss (lower is better)", fontsize="medium")
    upper = np.column_stack([values_of(result, f"l2_aligned_{phase}") for phase in PHASES])
    lower = np.column_stack([values_of(result, f"l2_aligned_lower_{phase}") for phase in PHASES])
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
        lines += ["", f"trained students' ‖θ‖: a median {shrink_ratio(result):.0%}",
                  "  of their teachers' (shrunk toward 0)"]
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

