"""Published figures re-created: the presets carry the figures' recorded set-ups, the published view and its
statistics are what they say, and ``l2rebound reproduce`` runs end to end on small sizes."""

import dataclasses

import numpy as np
import pytest
from conftest import run_cli

from l2rebound import published, reproduce
from l2rebound.config import presets
from l2rebound.kinds.epoch.result import EpochResult
from l2rebound.kinds.noise.result import NoiseResult
from l2rebound.results import COLUMNS

# What the published figures' embedded titles record (``published`` module docstring), by preset field.
TITLES = {
    "A": {"learning_rate": 0.01, "noise_sigma": 0.0, "initial_permut": 1e-6, "epochs": 500, "runs": 20},
    "B": {"learning_rate": 0.01, "noise_sigma": 1e-3, "initial_permut": 0.0, "epochs": 500, "runs": 20},
    "C": {"learning_rate": 1e-5, "initial_permut": 0.0, "epochs": 100, "runs": 20},
}
SMALL = ["--runs", "2", "--dataset-size", "64", "--test-set-size", "16", "--teacher-dims", "2,4,1", "--no-progress"]


@pytest.mark.parametrize("figure", sorted(TITLES))
def test_presets_carry_what_the_figures_record(figure):
    config = presets[f"seed-{figure}"]
    assert {name: getattr(config, name) for name in TITLES[figure]} == TITLES[figure]
    assert config.train == "vanilla" and config.optimizer == "gd"  # no regulariser existed then
    assert config.experiment == ("noise" if figure == "C" else "epoch")


def epoch_result(l2, losses=None) -> EpochResult:
    """An epoch result with the given ℓ₂ (R, E + 1) and losses, for the view's arithmetic."""
    l2 = np.asarray(l2, float)
    runs, steps = l2.shape
    config = presets["seed-A"].replace(runs=runs, epochs=steps - 1, align_every=0)
    losses = l2 if losses is None else np.asarray(losses, float)
    metrics = {name: l2 if name == "l2" else losses for name in COLUMNS}
    params = np.zeros((runs, 17))  # a 2,4,1 network's: not read by the view
    return EpochResult(config=config, metrics=metrics, teacher=params, student_init=params,
                       diverged_at=np.full(runs, -1), kept_epochs=np.zeros(0, int), kept_theta=np.zeros((runs, 0, 17)))


def test_view_squares_l2_scales_each_run_and_skips_epoch_zero():
    # run 1: l2 = 1, 3, 2 (epoch 0 ignored) -> l2² 9, 4 -> [1, 0]; run 2: 5, 1, 2 -> 1, 4 -> [0, 1]
    result = epoch_result([[1.0, 3.0, 2.0], [5.0, 1.0, 2.0]], losses=[[7.0, 2.0, 4.0], [0.0, 1.0, 1.0]])
    view = reproduce.seed_view(result)
    np.testing.assert_allclose(view["l2"], [0.5, 0.5])
    np.testing.assert_allclose(view["train_loss"], [0.0, 0.5])  # run 2's losses are constant: 0


def test_view_leaves_out_diverged_runs():
    result = epoch_result([[1.0, 3.0, 2.0], [5.0, 1.0, 2.0]])
    result = dataclasses.replace(result, diverged_at=np.array([-1, 1]))
    np.testing.assert_allclose(reproduce.seed_view(result)["l2"], [1.0, 0.0])
    with pytest.raises(ValueError, match="every run diverged"):
        reproduce.seed_view(dataclasses.replace(result, diverged_at=np.array([1, 1])))


def test_shape_finds_start_minimum_and_end():
    assert reproduce.shape(np.array([0.4, 0.2, 0.1, 0.3, 0.9])) == reproduce.Shape(0.4, 0.1, 3, 0.9)


def test_a_result_shaped_like_figure_A_compares_to_zero_and_others_do_not():
    target = published.load("A")
    l2 = np.sqrt(np.concatenate([[np.nan], target["l2"].y]))  # one run: its own min-max scaling
    loss = np.concatenate([[np.nan], target["train_loss"].y])
    comparison = reproduce.compare("A", epoch_result(np.vstack([l2, l2]), np.vstack([loss, loss])))
    scaled = (target["l2"].y - target["l2"].y.min()) / np.ptp(target["l2"].y)
    assert comparison.rms["l2"] == pytest.approx(np.sqrt(np.mean((scaled - target["l2"].y) ** 2)))
    assert comparison.shapes["ours"].min_epoch == comparison.shapes["published"].min_epoch == 32
    flat = reproduce.compare("A", epoch_result(np.tile(np.linspace(1, 0, 501), (2, 1))))
    assert flat.rms["l2"] > 0.2


def test_power_shape_fits_the_slope_and_reads_the_top_level():
    levels = np.geomspace(1e-4, 1, 9)
    got = reproduce.power_shape(levels, 3e-9 * levels**2)
    assert got.slope == pytest.approx(2.0) and got.top_value == pytest.approx(3e-9) and got.top_level == 1.0
    assert not got.floor_only
    bent = 3e-9 * levels**2 * np.where(levels > 0.1, 1.0, 0.5)  # the lower levels halved, as a floor would
    assert reproduce.power_shape(levels, bent, levels > 0.1).slope == pytest.approx(2.0)
    floored = reproduce.power_shape(levels, bent, levels > 0.5)  # one level above the floor: fit them all
    assert floored.floor_only and floored.slope != pytest.approx(2.0) and "precision floor" in floored.text()


def test_figure_C_compares_in_decades_at_the_published_levels():
    target = published.load("C")["l2"]
    config = presets["seed-C"].replace(runs=1, noise_levels=tuple(target.x), dtype="float64")  # no floor
    l2 = np.sqrt(10 * target.y)[:, None]  # ten times the published ℓ₂²: one decade everywhere
    metrics = {name: l2 if name == "l2" else np.zeros_like(l2) for name in COLUMNS}
    result = NoiseResult(config=config, levels=target.x, metrics=metrics, teacher=np.ones(17),
                         student_init=np.zeros((1, 17)), diverged_at=np.full((len(target.x), 1), -1))
    comparison = reproduce.compare("C", result)
    assert comparison.rms["l2"] == pytest.approx(1.0)
    assert comparison.shapes["ours"].slope == pytest.approx(comparison.shapes["published"].slope)


def test_reproduce_A_runs_small_draws_the_overlay_and_scans(tmp_path):
    code, out, err = run_cli("reproduce", "A", *SMALL, "--epochs", "6", "--scan", "1e-6,1e-3", "--out", tmp_path)
    assert code == 0, err
    assert "against published figure A: RMS difference l2" in out
    assert len(list(tmp_path.glob("epoch-*/*_published.png"))) == 1
    assert len(list(tmp_path.glob("epoch-*"))) == 4  # 2 scales x 2 dtypes, one of them the figure's own set-up
    rows = np.genfromtxt(next(tmp_path.glob("*_scan.csv")), delimiter=",", names=True, dtype=None, encoding=None)
    assert sorted(zip(rows["dtype"], rows["scale"])) == [("float32", 1e-6), ("float32", 1e-3), ("float64", 1e-6),
                                                       ("float64", 1e-3)]
    assert "<- best" in out


def test_reproduce_C_with_teachers_draws_their_spread(tmp_path):
    code, out, err = run_cli("reproduce", "C", *SMALL, "--epochs", "3", "--noise-levels", "1e-2,1e-1,1",
                             "--teachers", "2", "--out", tmp_path)
    assert code == 0, err
    assert "against published figure C (decades of ℓ₂²)" in out
    assert len(list(tmp_path.glob("noise-*"))) == 2


def test_rebound_explained_compares_the_rises_run_by_run():
    result = epoch_result([[2.0, 1.0, 2.0, 3.0], [1.0, 2.0, 3.0, 4.0], [3.0, 2.0, 1.0, 1.0]])
    predicted = np.sqrt([[4.0, 1.0, 2.0, 5.0], [1.0, 1.0, 1.0, 1.0], [1.0, 1.0, 1.0, 1.0]])
    # measured l2² rises 9 - 1 = 8, 16 - 1 = 15, 0; predicted 5 - 1 = 4, 0
    np.testing.assert_allclose(reproduce.rebound_explained(result, {"predicted_l2": predicted}), [0.5, 0.0, np.nan])


def test_reproduce_B_with_theory_draws_the_prediction(tmp_path):
    code, out, err = run_cli("reproduce", "B", *SMALL, "--epochs", "6", "--theory", "--out", tmp_path)
    assert code == 0, err
    assert "RMS difference theory" in out and "linear response: explains" in out
    assert len(list(tmp_path.glob("epoch-*/theory.npz"))) == 1


@pytest.mark.parametrize("argv, message", [
    (["C", "--theory"], "--theory"),
    (["A", "--teachers", "3"], "--teachers"),
    (["C", "--scan", "1e-6,1e-5"], "--scan"),
    (["A", "--noise-levels", "1e-3,1e-2"], "--noise-levels is not used by the epoch experiment"),
    (["D"], "invalid choice"),
    (["A", "--epochs", "1"], "--epochs must be 2 or more"),
    (["A", "--scan", "0,1e-6"], "--scan needs perturbation scales > 0"),
])
def test_reproduce_refuses_bad_input_in_one_line(argv, message, tmp_path):
    code, out, err = run_cli("reproduce", *argv, "--out", tmp_path / "out")
    assert code == 2 and message in err and len(err.strip().splitlines()) == 1
    assert not (tmp_path / "out").exists()
