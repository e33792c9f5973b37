"""Tests of l2rebound.plots on hand-made EpochResults: files written atomically and well-formed, the
summary's numbers, the exact-start (ℓ₂ = 0) case on log axes, diverged runs left out and reported."""

import warnings
import xml.etree.ElementTree as ET

import numpy as np
import pytest

from l2rebound.config import Config
from l2rebound.kinds.epoch.result import EpochResult, summary_table
from l2rebound.plots import normalise, write_figures

RUNS, EPOCHS, DIP = 3, 20, 7


def make_result(l2=None, diverged_at=None, runs=RUNS, epochs=EPOCHS):
    """Synthetic result: ℓ₂ falls to a minimum at epoch DIP in every run, then rises linearly; losses decay."""
    t = np.arange(epochs + 1, dtype=float)
    scale = 1.0 + 0.1 * np.arange(runs)[:, None]
    if l2 is None:
        l2 = scale * (0.01 + 0.001 * np.abs(t - DIP) * np.where(t < DIP, 3.0, 1.0))
    train = scale * (0.5 * np.exp(-t / 5) + 1e-3)
    metrics = {"l2": l2, "train_loss": train, "test_loss": 1.2 * train, "clean_test_loss": 0.8 * train,
               "stalled": np.zeros_like(train), "l2_aligned": np.full_like(train, np.nan),
               "l2_normal_form": np.full_like(train, np.nan)}
    diverged_at = np.full(runs, -1) if diverged_at is None else np.asarray(diverged_at)
    for r, e in enumerate(diverged_at):
        if e >= 0:
            for v in metrics.values():
                v[r, e:] = np.nan
    return EpochResult(Config(runs=runs, epochs=epochs), metrics, np.zeros((runs, 4)), np.zeros((runs, 4)),
                       diverged_at, np.zeros(0, int), np.zeros((runs, 0, 4)))


def plot_quietly(result, folder):
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        return write_figures(result, folder)


def test_plot_writes_four_wellformed_files_atomically(tmp_path):
    result = make_result()
    paths = plot_quietly(result, tmp_path)
    stem = result.config.figure_stem()
    assert sorted(p.name for p in paths) == sorted(
        f"{stem}_{view}.{ext}" for view in ("normalised", "absolute") for ext in ("svg", "png"))
    assert stem == "epoch_epochs=20_runs=3"
    for p in paths:
        assert p.parent == tmp_path and p.stat().st_size > 0
        if p.suffix == ".png":
            assert p.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
        else:
            assert ET.parse(p).getroot().tag.endswith("svg")
    assert sorted(tmp_path.iterdir()) == sorted(paths)  # no temp files left behind


def test_svg_carries_titles_and_min_epoch(tmp_path):
    import matplotlib

    with matplotlib.rc_context({"svg.fonttype": "none"}):  # keep text as text so it can be searched
        paths = plot_quietly(make_result(diverged_at=[-1, 5, -1]), tmp_path)
    normalised = next(p for p in paths if p.name.endswith("_normalised.svg")).read_text()
    absolute = next(p for p in paths if p.name.endswith("_absolute.svg")).read_text()
    assert "normalised to [0, 1]" in normalised and "averaged over 2 runs" in normalised
    assert f"minimum of the mean normalised ℓ₂ curve: epoch {DIP}" in normalised
    assert f"minimum of the mean ℓ₂ curve: epoch {DIP}" in absolute
    assert "1 of 3 runs diverged, not shown" in absolute
    assert "epochs=20; 3 runs" in absolute


def test_summary_reports_min_epoch_and_ratio():
    result = make_result()
    table = summary_table(result)
    rows = {line[:22].strip(): line[22:] for line in table.splitlines()}
    assert rows["epoch of min ℓ₂"].split()[:3] == ["7", "±", "0"]
    l2 = result.metrics["l2"]
    ratio = l2[:, -1] / l2[:, DIP]
    assert float(rows["final/min ratio"].split()[0]) == pytest.approx(ratio.mean(), rel=1e-3)
    assert "diverged" not in table


def test_exact_start_plots_without_warnings(tmp_path):
    t = np.arange(EPOCHS + 1, dtype=float)
    l2 = np.tile(1e-3 * np.sqrt(t), (RUNS, 1))  # 0 at epoch 0, only grows
    paths = plot_quietly(make_result(l2=l2), tmp_path)
    assert len(paths) == 4 and all(p.stat().st_size > 0 for p in paths)
    assert "epoch of min ℓ₂" in summary_table(make_result(l2=l2))


def test_diverged_run_excluded_and_reported(tmp_path):
    result = make_result(diverged_at=[-1, 5, -1])
    table = summary_table(result)
    assert "run 2 diverged at epoch 5" in table
    assert "over 2 runs" in table
    final_train = float(next(x for x in table.splitlines() if x.startswith("final train loss"))[22:].split()[0])
    assert final_train == pytest.approx(result.metrics["train_loss"][[0, 2], -1].mean(), rel=1e-3)
    assert len(plot_quietly(result, tmp_path)) == 4


def test_all_diverged_raises(tmp_path):
    result = make_result(diverged_at=[3, 5, 4])
    with pytest.raises(ValueError, match="all 3 runs diverged"):
        write_figures(result, tmp_path)
    with pytest.raises(ValueError, match="all 3 runs diverged"):
        summary_table(result)
    assert list(tmp_path.iterdir()) == []


def test_normalise_rows_and_constant_row():
    x = np.array([[2.0, 4.0, 3.0], [5.0, 5.0, 5.0]])
    np.testing.assert_array_equal(normalise(x), [[0.0, 1.0, 0.5], [0.0, 0.0, 0.0]])


def test_aligned_distances_are_a_second_curve_drawn_at_their_epochs(tmp_path):
    import matplotlib

    result = make_result()
    every = np.arange(0, EPOCHS + 1, 5)
    for name, scale in (("l2_aligned", 0.5), ("l2_normal_form", 0.8)):
        result.metrics[name][:, every] = scale * result.metrics["l2"][:, every]
    with matplotlib.rc_context({"svg.fonttype": "none"}):
        paths = plot_quietly(result, tmp_path)
    normalised = next(p for p in paths if p.name.endswith("_normalised.svg")).read_text()
    absolute = next(p for p in paths if p.name.endswith("_absolute.svg")).read_text()
    assert "ℓ₂ aligned" in normalised and "ℓ₂ aligned" in absolute
    assert "normal forms" in absolute and "normal forms" not in normalised
    rows = {line[:22].strip(): line[22:] for line in summary_table(result).splitlines()}
    assert float(rows["final aligned ℓ₂"].split()[0]) == pytest.approx(0.5 * result.metrics["l2"][:, -1].mean(),
                                                                      rel=1e-3)


def test_the_mean_curve_minimum_and_the_runs_minima_are_told_apart():
    """Two runs with minima at epochs 4 and 16: the figures mark the mean curve's minimum and give the runs' own
    (10 ± 6), and the summary's row of the runs' own minima names the mean curve's beside it."""
    t = np.arange(EPOCHS + 1, dtype=float)
    l2 = np.stack([1 + 0.003 * (t - 4) ** 2, 1.2 + 0.001 * (t - 16) ** 2])
    result = make_result(l2=l2, runs=2)
    mean_curve = int(l2.mean(axis=0).argmin())
    assert mean_curve not in (4, 10, 16)  # three different numbers, as in a real result
    for view, fig in result.figures().items():
        legend = [text.get_text() for text in fig.axes[0].get_legend().get_texts()]
        curve = "the mean normalised ℓ₂ curve" if view == "normalised" else "the mean ℓ₂ curve"
        wanted = int(normalise(l2).mean(axis=0).argmin()) if view == "normalised" else mean_curve
        assert f"minimum of {curve}: epoch {wanted}; each run's own minimum: epoch 10.0 ± 6.0" in legend, legend
    row = next(line for line in summary_table(result).splitlines() if line.startswith("epoch of min ℓ₂"))
    assert row[22:].split()[:3] == ["10", "±", "6"]
    assert f"(each run's own minimum; the mean curve's: epoch {mean_curve})" in row


def test_aligned_distances_are_drawn_where_computed_never_above_the_raw_distance():
    """The aligned ℓ₂, recorded every 5 epochs, is at most the raw ℓ₂ there; between two kept epochs the raw ℓ₂
    dips below both. Markers at the kept epochs, no line joining them, never above the raw ℓ₂."""
    result = make_result()
    every = np.arange(0, EPOCHS + 1, 5)  # DIP = 7 lies between 5 and 10
    result.metrics["l2_aligned"][:, every] = 0.999 * result.metrics["l2"][:, every]
    fig = result.figures()["absolute"]
    raw = result.metrics["l2"].mean(axis=0)
    drawn = [line for line in fig.axes[0].get_lines() if line.get_label().startswith("ℓ₂ aligned")]
    assert len(drawn) == 1 and drawn[0].get_linestyle() == "None"
    x, y = drawn[0].get_data()
    np.testing.assert_array_equal(x, every)
    assert np.all(y <= raw[every])
    joined = np.interp(DIP, every, result.metrics["l2_aligned"].mean(axis=0)[every])
    assert joined > raw[DIP]  # what a line between the markers would have shown


def test_normalise_ignores_missing_entries():
    x = np.array([[np.nan, 2.0, np.nan, 4.0], [1.0, np.nan, 3.0, np.nan]])
    np.testing.assert_array_equal(normalise(x), [[np.nan, 0.0, np.nan, 1.0], [0.0, np.nan, 1.0, np.nan]])


def test_an_uninformative_normal_form_is_left_out_of_the_figure(tmp_path):
    import matplotlib

    result = make_result()
    every = np.arange(0, EPOCHS + 1, 5)
    result.metrics["l2_aligned"][:, every] = result.metrics["l2"][:, every]
    result.metrics["l2_normal_form"][:, every] = 100.0  # the seed's zero-bias teachers: never below raw ℓ₂
    with matplotlib.rc_context({"svg.fonttype": "none"}):
        paths = plot_quietly(result, tmp_path)
    absolute = next(p for p in paths if p.name.endswith("_absolute.svg")).read_text()
    assert "ℓ₂ aligned" in absolute and "normal forms" not in absolute
    assert "final normal-form ℓ₂" in summary_table(result)


def test_the_summary_says_when_the_normal_form_is_undefined():
    result = make_result()
    every = np.arange(0, EPOCHS + 1, 5)
    result.metrics["l2_aligned"][:, every] = result.metrics["l2"][:, every]
    result.metrics["l2_normal_form"][:, every] = 100.0  # zero-bias teachers: never below the raw ℓ₂ (preset A, B)
    rows = {line[:22].strip(): line[22:] for line in summary_table(result).splitlines()}
    row = rows["final normal-form ℓ₂"]
    assert "normal form undefined" in row and "see the aligned ℓ₂" in row
    assert float(row.split()[0]) == pytest.approx(100.0)  # the number stays, for who wants it
    assert "undefined" not in rows["final aligned ℓ₂"]
    # below the raw ℓ₂ at one recorded epoch (as the figure's test): informative, no note
    result.metrics["l2_normal_form"][:, every[-2]] = 0.5 * result.metrics["l2"][:, every[-2]]
    assert "undefined" not in summary_table(result)
    # not recorded at all (align_every = 0 leaves only NaN): no row, no note
    assert "normal-form" not in summary_table(make_result())


def test_an_exact_start_trained_zero_epochs_plots_on_linear_axes(tmp_path):
    result = make_result(l2=np.zeros((RUNS, 1)), epochs=0)
    paths = plot_quietly(result, tmp_path)
    assert len(paths) == 4 and all(p.stat().st_size > 0 for p in paths)


def test_squared_draws_l2_squared_under_its_own_names(tmp_path):
    result = make_result()
    paths = write_figures(result, tmp_path, squared=True)
    stem = result.config.figure_stem()
    assert sorted(p.name for p in paths) == sorted(
        f"{stem}_{view}_l2sq.{ext}" for view in ("normalised", "absolute") for ext in ("svg", "png"))
    top = result.figure("absolute", squared=True).axes[0]
    assert top.get_ylabel() == "ℓ₂²"
    drawn = top.get_lines()[0].get_ydata()  # the mean of ℓ₂² over runs
    np.testing.assert_allclose(drawn, (result.metrics["l2"] ** 2).mean(axis=0))


def test_a_result_gives_its_views_as_figures_and_refuses_others():
    result = make_result()
    assert result.figure().axes[0].get_yscale() == "log"  # the default view: absolute
    assert result.figure("normalised").axes[0].get_yscale() == "linear"
    with pytest.raises(ValueError, match="absolute, normalised"):
        result.figure("spectrum")


def test_the_theory_summary_of_a_noise_result_compares_level_by_level():
    """Levels five decades apart: the summary states the predicted/measured ratio per level and run (here 1.01
    at the lowest level and 0.99 elsewhere), never a mean of ℓ₂ over the levels, which only the largest fill."""
    from l2rebound.kinds.noise.result import NoiseResult
    from l2rebound.plots import theory_summary
    from l2rebound.results import COLUMNS

    config = Config(experiment="noise", teacher_dims=(2, 4, 1), noise_levels=(1e-5, 1e-3, 1e-1, 1.0), runs=2)
    sigma = np.asarray(config.noise_levels)
    l2 = 0.02 * sigma[:, None] * np.array([1.0, 1.5])
    metrics = {name: l2 if name == "l2" else np.zeros_like(l2) for name in COLUMNS}
    result = NoiseResult(config, sigma, metrics, np.ones(17), np.zeros((2, 17)), np.full(l2.shape, -1))
    predicted = l2 * np.where(sigma[:, None] == 1e-5, 1.01, 0.99)
    analysis = {"predicted_l2": predicted, "parts": np.ones((4, 2, 4)), "gn_eigenvalues": np.ones((2, 17)),
                "hessian_eigenvalues": np.ones(17), "unsettled": np.ones(2, int), "null": np.zeros(2, int)}
    first = theory_summary(result, analysis).splitlines()[0]
    assert first.startswith("final ℓ₂, predicted linear response / measured, per level and finished run (4 levels)")
    geometric = np.exp(np.mean(np.log(predicted / l2)))
    assert f"geometric mean {geometric:.6g}, from 0.99 to 1.01; largest relative gap 0.01" in first
    assert f"{l2.mean():.4g}" not in first
