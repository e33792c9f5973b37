"""The compression experiment's figures and summary on one small computed result: the networks figure draws the
teacher and the aligned students edge for edge, the comparison figure plots exactly the compression table's
columns per run, the summary's counts match the table, diverged runs are left out with a note, a bad run is
refused, and no JAX is imported."""

import dataclasses
import re
import subprocess
import sys
import warnings

import numpy as np
import pytest
from matplotlib.collections import LineCollection

from l2rebound.config import presets
from l2rebound.diagrams import edges
from l2rebound.kinds.compress import figures as C
from l2rebound.kinds.compress.result import compression_summary, compression_table
from l2rebound.layout import layers
from l2rebound.results import proven_optimal

PHASES = ("vanilla", "before", "after")  # the order the comparison figure draws them in
slow = pytest.mark.slow  # the tests that use ``result``: computing it compiles three trainings


@pytest.fixture(scope="module")
def result():
    from l2rebound.kinds.compress.engine import run as run_compress_experiment

    config = presets["D"].replace(epochs=60, runs=2, dataset_size=300, test_set_size=60, finetune_epochs=10,
                                  align_every=30)
    return run_compress_experiment(config)


def diverge(result, run, phases=("before", "after", "vanilla")):
    """A copy of ``result`` in which run ``run`` (1-based) diverged in the given phases: its students and
    table entries of those phases as the engine writes them for a diverged run (NaN, -1 for counts and the
    support, the phase's divergence epoch); a divergence in training also marks ``diverged_at`` and the training
    metrics."""
    r = run - 1
    students = {name: values.copy() for name, values in result.students.items()}
    table = {name: values.copy() for name, values in result.compression.items()}
    integer = {c.name for c in compression_table(result.config).columns if c.integer}
    names = {"before": ("before", "aligned_before"), "after": ("after", "aligned_after"), "vanilla": ("vanilla",)}
    for phase in phases:
        for name in names[phase]:
            students[name][r] = np.nan
        for column, values in table.items():
            if column.endswith("_" + phase) and not column.startswith("diverged_at"):
                values[r] = -1 if column in integer else np.nan
    changes = {"students": students, "compression": table}
    if "after" in phases:
        for column in ("nonzero_after", *(c for c in table if c.startswith("alive_units"))):
            table[column][r] = -1
        table["support_recovered"][r] = -1
        table["diverged_at_finetune"][r] = 0
    if "vanilla" in phases:
        table["diverged_at_vanilla"][r] = 5
    if "before" in phases:
        diverged_at = result.diverged_at.copy()
        diverged_at[r] = 30
        metrics = {name: values.copy() for name, values in result.metrics.items()}
        for values in metrics.values():
            values[r, 30:] = np.nan
        changes.update(diverged_at=diverged_at, metrics=metrics)
    return dataclasses.replace(result, **changes)


def by_gid(ax, gid):
    return [line for line in ax.get_lines() if line.get_gid() == gid]


def data_axes(fig):
    """The axes that plot runs (each has a line per run with a ``run k`` gid)."""
    return [ax for ax in fig.axes if any(str(line.get_gid()).startswith("run ") for line in ax.get_lines())]


def weights_collection(ax):
    (found,) = [c for c in ax.collections if isinstance(c, LineCollection) and c.get_label() == "weights"]
    return found


@slow
def test_the_networks_figure_draws_the_teacher_and_the_aligned_students_edge_for_edge(result):
    config = result.config
    assert (result.students["aligned_before"][0] != result.students["before"][0]).any()  # a relabelling happened
    fig = C.networks_figure(result)
    panels = [ax for ax in fig.axes if any(c.get_label() == "weights" for c in ax.collections)]
    assert len(panels) == 3
    expected = [(result.teacher[0], config.teacher_dims), (result.students["aligned_before"][0], config.student_dims),
                (result.students["aligned_after"][0], config.student_dims)]
    for ax, (theta, dims) in zip(panels, expected):
        drawn = weights_collection(ax).get_segments()
        assert len(drawn) == sum(np.count_nonzero(w) for w, _ in layers(theta, dims))
        tallest = max(config.student_dims)  # every panel's hidden layers start at the top of the widest
        np.testing.assert_array_equal(np.asarray(drawn), edges(theta, dims, tallest)[0])  # the aligned θ, edge for edge
    raw = edges(result.students["before"][0], config.student_dims)[0]
    assert not np.array_equal(np.asarray(weights_collection(panels[1]).get_segments()), raw)
    assert len(weights_collection(panels[2]).get_segments()) < len(weights_collection(panels[1]).get_segments())
    title = fig._suptitle.get_text()
    assert title.startswith("Run 1 of 2") and f"{config.prune_threshold:g}" in title
    assert ("not recovered" in title) == (result.compression["support_recovered"][0] == 0)
    upper, lower = result.compression["l2_aligned_after"][0], result.compression["l2_aligned_lower_after"][0]
    assert f"{upper:.4g}" in title
    assert (f"≥ {lower:.4g}" in title) == (not proven_optimal(upper, lower))
    assert "fine-tuned 10 epochs" in panels[2].get_title()
    assert C.networks_figure(result, run=2)._suptitle.get_text().startswith("Run 2 of 2")


@slow
@pytest.mark.parametrize("run", [0, 3, -1, 1.5, True])
def test_the_networks_figure_refuses_a_run_out_of_range(result, run):
    with pytest.raises(ValueError, match="from 1 to 2"):
        C.networks_figure(result, run=run)


@slow
def test_the_networks_figure_refuses_a_diverged_run_and_skips_it_by_default(result):
    broken = diverge(result, 1)
    with pytest.raises(ValueError, match="run 1 diverged"):
        C.networks_figure(broken, run=1)
    assert C.networks_figure(broken)._suptitle.get_text().startswith("Run 2 of 2")
    nothing = C.networks_figure(diverge(broken, 2))  # every run diverged: a figure that says so
    assert "no run of the 2 has finite students" in nothing.texts[0].get_text()


@slow
def test_the_comparison_plots_the_tables_columns_per_run(result):
    fig = C.comparison_figure(result)
    loss_ax, l2_ax = data_axes(fig)
    table = {name: np.asarray(values, float) for name, values in result.compression.items()}
    for ax, stem in ((loss_ax, "clean_test_loss"), (l2_ax, "l2_aligned")):
        columns = np.column_stack([table[f"{stem}_{phase}"] for phase in PHASES])
        for run in range(result.config.runs):
            (line,) = by_gid(ax, f"run {run + 1}")
            np.testing.assert_array_equal(line.get_ydata(), columns[run])
            assert np.all(np.diff(line.get_xdata()) > 0)  # vanilla, trained, pruned: left to right
        for i, phase in enumerate(PHASES):
            (points,) = by_gid(ax, f"points {phase}")
            np.testing.assert_array_equal(np.sort(points.get_ydata()), np.sort(columns[:, i]))
            (median,) = by_gid(ax, f"median {phase}")
            assert median.get_ydata()[0] == pytest.approx(np.median(columns[:, i]))
    assert loss_ax.get_yscale() == "log"  # the vanilla student's loss is decades below the others
    upper = np.column_stack([table[f"l2_aligned_{phase}"] for phase in PHASES])
    lower = np.column_stack([table[f"l2_aligned_lower_{phase}"] for phase in PHASES])
    unproven = ~proven_optimal(upper, lower)
    bounds = by_gid(l2_ax, "lower bounds")
    assert len(bounds) == int(unproven.any())
    if unproven.any():
        np.testing.assert_array_equal(np.sort(bounds[0].get_ydata()), np.sort(lower[unproven]))
    (norm,) = by_gid(l2_ax, "teacher norm")
    assert norm.get_ydata()[0] == pytest.approx(np.median(np.linalg.norm(result.teacher, axis=1)))
    text = "\n".join(t.get_text() for ax in fig.axes for t in ax.texts)
    recovered = int(result.compression["support_recovered"].sum())
    assert f"support recovered in {recovered} of 2 runs" in text
    for h, width in ((1, 10), (2, 5)):
        alive = result.compression[f"alive_units_{h}"]
        assert re.search(rf"^{h}\s+{width}\s+{np.median(alive):g}", text, re.MULTILINE)


def median_range(values):
    values = np.asarray(values)
    return f"{np.median(values):g}" if values.min() == values.max() else \
        f"{np.median(values):g} [{values.min()}, {values.max()}]"


@slow
def test_the_summary_counts_match_the_table(result):
    summary = compression_summary(result)
    table = result.compression
    recovered = int(table["support_recovered"].sum())
    assert re.search(rf"^support recovered\s+{recovered} of 2 runs$", summary, re.MULTILINE)
    for name, column in (("non-zero entries, trained", "nonzero_before"), ("non-zero entries, pruned", "nonzero_after"),
                         ("alive units, hidden layer 1", "alive_units_1"),
                         ("alive units, hidden layer 2", "alive_units_2"),
                         ("entries off the teacher's support", "l0_after")):
        assert re.search(rf"^{re.escape(name)}\s+{re.escape(median_range(table[column]))}\s", summary,
                         re.MULTILINE), name
    assert "of 751" in summary and "the teacher has 91" in summary
    below = int(np.sum(table["clean_test_loss_after"] < table["clean_test_loss_vanilla"]))
    assert f"clean test loss below the vanilla one's in {below} of 2 runs" in summary
    for phase, name in (("vanilla", "vanilla"), ("before", "trained"), ("after", "pruned")):
        values = table[f"clean_test_loss_{phase}"]
        assert re.search(rf"^clean test loss, {name}\s+{np.mean(values):.4g} ± {np.std(values):.3g}\s+2$", summary,
                         re.MULTILINE)
        proven = int(proven_optimal(table[f"l2_aligned_{phase}"], table[f"l2_aligned_lower_{phase}"]).sum())
        assert re.search(rf"^aligned ℓ₂, {name}\s+{np.mean(table[f'l2_aligned_{phase}']):.4g} ± .*proven minimal in "
                         rf"{proven}\b", summary, re.MULTILINE)
    assert "diverged" not in summary


@slow
@pytest.mark.parametrize("phases", [("before", "after", "vanilla"), ("vanilla",)], ids=["whole run", "vanilla only"])
def test_a_diverged_run_is_left_out_with_a_note(result, phases):
    broken = diverge(result, 1, phases)
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # no all-NaN warnings, no log-scale complaints
        figures = broken.figures()
        summary = broken.summary()
    assert list(figures) == ["networks", "comparison", "absolute", "normalised"]
    note = "run 1 diverged: " + ("vanilla, trained and pruned students" if len(phases) == 3 else "vanilla student")
    assert note in summary
    fig = figures["comparison"]
    words = " ".join(" ".join(t.get_text() for ax in fig.axes for t in ax.texts).split())  # the note may be wrapped
    assert note in words
    loss_ax, l2_ax = data_axes(fig)
    for ax, stem in ((loss_ax, "clean_test_loss"), (l2_ax, "l2_aligned")):
        for phase in PHASES:
            (points,) = by_gid(ax, f"points {phase}")
            expected = result.compression[f"{stem}_{phase}"][1 if phase in phases else slice(None)]
            np.testing.assert_array_equal(np.sort(points.get_ydata()), np.sort(np.atleast_1d(expected)))
            (median,) = by_gid(ax, f"median {phase}")
            assert median.get_ydata()[0] == pytest.approx(np.median(expected))
    for phase, name in (("vanilla", "vanilla"), ("before", "trained"), ("after", "pruned")):
        values = result.compression[f"clean_test_loss_{phase}"][1 if phase in phases else slice(None)]
        runs = 1 if phase in phases else 2
        assert re.search(rf"^clean test loss, {name}\s+{np.mean(values):.4g} ± {np.std(values):.3g}\s+{runs}$",
                         summary, re.MULTILINE), name  # the mean over the runs left
    table = broken.compression
    text = "\n".join(t.get_text() for ax in fig.axes for t in ax.texts)
    kept = 1 if "after" in phases else 2
    recovered = int(table["support_recovered"][2 - kept:].sum())
    assert f"support recovered in {recovered} of {kept} runs" in text
    assert re.search(rf"^support recovered\s+{recovered} of {kept} runs$", summary, re.MULTILINE)
    if "after" in phases:
        assert not by_gid(loss_ax, "run 1") and not by_gid(l2_ax, "run 1")  # none of its students is left
        assert re.search(rf"^non-zero entries, pruned\s+{table['nonzero_after'][1]}\s", summary, re.MULTILINE)
    else:
        (line,) = by_gid(loss_ax, "run 1")  # its trained and pruned students are still drawn
        assert np.isnan(line.get_ydata()[0]) and np.isfinite(line.get_ydata()[1:]).all()


@slow
def test_every_run_diverged_gives_figures_that_say_so(result):
    broken = diverge(diverge(result, 1), 2)
    assert "every one of the 2 runs diverged" in C.comparison_figure(broken).texts[0].get_text()
    # every pruned student diverged, every training finished: all four views are drawn, none raises
    pruned_lost = diverge(diverge(result, 1, ("after",)), 2, ("after",))
    figures = pruned_lost.figures()
    assert "no run of the 2 has finite students" in figures["networks"].texts[0].get_text()
    assert set(figures) == set(result.views)


def test_the_modules_do_not_import_jax():
    code = ("import sys, l2rebound.kinds.compress.figures, l2rebound.kinds.compress.result; "
            "assert 'jax' not in sys.modules, 'jax was imported'")
    subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True, timeout=60)
