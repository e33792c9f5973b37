"""The noise experiment (the seed's C): linear response, exact zeros, common random numbers, one compile."""

import dataclasses

import numpy as np
import pytest

from l2rebound import cli, store
from l2rebound.config import Config
from l2rebound.fit import DRIFT_LIMIT, STALLED_LIMIT, fit_power_law, precision_floor, rounding_drift
from l2rebound.kinds.noise.engine import run as run_noise_experiment
from l2rebound.kinds.noise.engine import sweep as noise_sweep
from l2rebound.train import train_block

pytestmark = pytest.mark.usefixtures("x64")  # these tests call the engine's internals

SMALL = dict(experiment="noise", teacher_dims=(2, 6, 5, 1), dataset_size=300, test_set_size=60, epochs=100, runs=3,
             noise_levels=(1e-5, 1e-4, 1e-3, 1e-2))


@pytest.fixture(scope="module")
def result():
    return run_noise_experiment(Config(**SMALL))


def test_vanilla_gd_gives_linear_response(result):
    fit = fit_power_law(result)
    assert abs(fit.k - 1) < 0.05, fit
    assert fit.k_low <= fit.k <= fit.k_high
    assert fit.used.all()
    squared = fit_power_law(result, squared=True)
    assert abs(squared.k - 2) < 0.1


def test_common_random_numbers_make_each_run_a_smooth_curve(result):
    per_sigma = result.metrics["l2"] / result.levels[:, None]  # (S, R): constant in the linear regime
    assert np.all(np.abs(per_sigma / per_sigma[0] - 1) < 0.01)
    assert np.ptp(per_sigma[0]) > 0.01 * per_sigma[0].mean()  # while runs (different data) differ
    np.testing.assert_array_equal(result.student_init, np.broadcast_to(result.teacher, result.student_init.shape))


def test_zero_noise_leaves_the_student_exactly_at_the_teacher():
    zero = noise_sweep(Config(**SMALL), [0.0, 1e-3])
    assert (zero.metrics["l2"][0] == 0).all() and (zero.metrics["clean_test_loss"][0] == 0).all()
    assert (zero.metrics["l2"][1] > 0).all()


def test_same_config_gives_identical_numbers(result):
    again = run_noise_experiment(result.config)
    for name, values in result.metrics.items():
        np.testing.assert_array_equal(again.metrics[name], values, err_msg=name)


def test_a_sweep_over_noise_levels_or_step_size_compiles_once(result):
    before = train_block._cache_size()
    noise_sweep(Config(**SMALL), [2e-5, 3e-4, 5e-3, 0.2])  # same study shape: 4 levels x 3 runs
    noise_sweep(Config(**{**SMALL, "learning_rate": 3e-2}), [1e-5, 1e-4, 1e-3, 1e-2])
    assert train_block._cache_size() == before


@pytest.mark.slow
def test_float32_warns_at_small_sigma_and_leaves_those_levels_out(tmp_path, capsys):
    args = ["noise", "--teacher-dims", "2,6,5,1", "--dataset-size", "300", "--test-set-size", "60", "--epochs", "100",
            "--runs", "3", "--noise-levels", "1e-5,1e-3,3e-2,1e-1,0.3", "--dtype", "float32", "--out", str(tmp_path),
            "--no-progress"]
    assert cli.main(args) == 0
    captured = capsys.readouterr()
    assert "warning: float32" in captured.err and "1e-05" in captured.err.split("warning: float32")[1]
    rows = {line.split()[0]: line for line in captured.out.splitlines() if line.strip()[:1].isdigit()}
    assert rows["1e-05"].endswith("no (precision floor)")  # about 20 x its ℓ₂ can have been rounded away
    # a few percent of the steps stall at 3e-2 too (more than STALLED_LIMIT), but they lose nothing that shows
    assert all(rows[sigma].endswith("yes") for sigma in ("0.03", "0.1", "0.3")), captured.out


@pytest.mark.slow
def test_float32_fits_the_levels_whose_rounded_away_steps_do_not_matter():
    """Bug: every float32 level of preset C was at the precision floor (σ = 1 included), because more than 1% of
    the steps stall at every σ: hidden-to-hidden weights of units whose output weight is near 0 get steps
    below half an ulp. The floor now weighs the stalls by the displacement they can remove."""
    config = Config(experiment="noise", dataset_size=1000, test_set_size=200, epochs=100, runs=2, dtype="float32",
                    noise_levels=(1e-5, 1e-4, 1e-3, 1e-2, 1e-1, 1.0))
    result = run_noise_experiment(config)
    levels, l2 = result.levels, result.metrics["l2"]
    stalled = result.metrics["stalled"].mean(axis=1)
    assert (stalled > STALLED_LIMIT).all(), stalled  # the old rule (stalled > 1%) marked every level
    floor = precision_floor(result)
    np.testing.assert_array_equal(floor, levels < 1e-2)
    np.testing.assert_array_less(rounding_drift(result)[levels >= 1e-2], DRIFT_LIMIT * l2[levels >= 1e-2].mean(axis=1))
    fit = fit_power_law(result)
    np.testing.assert_array_equal(fit.used, levels >= 1e-2)
    assert abs(fit.k - 1) < 0.01, fit
    # common random numbers: ℓ₂/σ is each run's constant where rounding does not distort ℓ₂ (the fitted
    # levels), and leaves it at the marked ones (in float64 it is flat to 2e-3 at every one of these levels)
    per_sigma = l2 / levels[:, None] / (l2[-2] / levels[-2])
    assert np.abs(per_sigma[levels >= 1e-2] - 1).max() < 5e-3, per_sigma
    assert (np.abs(per_sigma[levels <= 1e-4] - 1).max(axis=1) > 2e-2).all(), per_sigma


def test_the_floor_leaves_float64_alone(result):
    assert not precision_floor(result).any()
    assert (rounding_drift(result) < 1e-6 * result.metrics["l2"].mean(axis=1)).all()


def test_stored_noise_result_round_trips_and_redraws(result, tmp_path, capsys):
    folder = store.save(tmp_path, result)
    loaded = store.load(folder)
    np.testing.assert_array_equal(loaded.levels, result.levels)
    for name, values in result.metrics.items():
        np.testing.assert_array_equal(loaded.metrics[name], values)
    np.testing.assert_array_equal(loaded.teacher, result.teacher)
    np.testing.assert_array_equal(loaded.diverged_at, result.diverged_at)
    assert cli.main(["plot", str(folder), "--squared"]) == 0
    out = capsys.readouterr().out
    assert "ℓ₂² ≈" in out and list(folder.glob("*_l2sq.png")) and list(folder.glob("*_l2sq.svg"))


def test_too_few_levels_to_fit_still_plots_and_says_so(result, tmp_path, capsys):
    one = dataclasses.replace(result, levels=result.levels[:1], metrics={k: v[:1] for k, v in result.metrics.items()},
                              diverged_at=result.diverged_at[:1],
                              config=dataclasses.replace(result.config, noise_levels=result.config.noise_levels[:1]))
    with pytest.raises(ValueError, match="too few levels"):
        fit_power_law(one)
    folder = store.save(tmp_path, one)
    assert cli.main(["plot", str(folder)]) == 0  # the figure and table still come, without a fit
    assert "no power law fitted" in capsys.readouterr().out


@pytest.mark.parametrize("levels", ["", "0,1e-3", "-1e-3", "1e-3:1e-4:5", "1e-5:1:1", "1e-5:1", "a,b"])
def test_bad_noise_levels_exit_2_with_one_line(levels, tmp_path, capsys):
    try:
        code = cli.main(["noise", "--noise-levels", levels, "--out", str(tmp_path / "out")])
    except SystemExit as exit:
        code = exit.code
    assert code == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and "--noise-levels" in err
    assert not (tmp_path / "out").exists()


def test_final_distances_modulo_symmetry(result):
    l2, aligned, normal = (result.metrics[k] for k in ("l2", "l2_aligned", "l2_normal_form"))
    assert aligned.shape == l2.shape == normal.shape and np.isfinite(aligned).all()
    # near the teacher the best alignment is the identity: the aligned distance is the raw one
    np.testing.assert_allclose(aligned, l2, rtol=1e-12)
    # the identity is the best alignment here, so one particular g (the normal forms') can do no better
    assert (normal >= aligned * (1 - 1e-12)).all()


def test_the_fitted_line_and_the_curve_it_is_drawn_against_are_both_geometric_means():
    """ℓ₂ = c_r·σ^0.9 exactly, with runs an order of magnitude apart: the fit's line passes through the plotted
    curve at every level (the arithmetic mean over runs would lie above it)."""
    from l2rebound.kinds.noise.result import NoiseResult
    from l2rebound.results import COLUMNS

    config = Config(experiment="noise", teacher_dims=(2, 4, 1), noise_levels=(1e-4, 1e-3, 1e-2, 1e-1), runs=3)
    sigma = np.asarray(config.noise_levels)
    l2 = np.array([1e-3, 1e-2, 1e-1]) * sigma[:, None] ** 0.9
    metrics = {name: l2 if name == "l2" else np.zeros_like(l2) for name in COLUMNS}
    result = NoiseResult(config, sigma, metrics, np.ones(17), np.zeros((3, 17)), np.full(l2.shape, -1))
    lines = {line.get_label(): line for line in result.figures()["l2"].axes[0].get_lines()}
    curve = next(line for label, line in lines.items() if "geometric mean, as the fit" in label)
    fitted = next(line for label, line in lines.items() if label.startswith("fit "))
    np.testing.assert_allclose(curve.get_ydata(), fitted.get_ydata(), rtol=1e-12)
    assert np.all(l2.mean(axis=1) > 3 * curve.get_ydata())
