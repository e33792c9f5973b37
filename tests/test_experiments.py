"""The seed's phenomena on small configs, reproducibility and run chunking."""

import numpy as np
import pytest

from l2rebound import store
from l2rebound.config import PRESETS, Config
from l2rebound.experiments import run_epoch_experiment

# Small enough for seconds, large enough that the rebound of Experiment A is still visible.
SMALL = dict(dataset_size=2000, test_set_size=200, epochs=300, runs=3)


@pytest.fixture(scope="module")
def preset_a():
    return run_epoch_experiment(Config(**SMALL, **PRESETS["A"]))


@pytest.fixture(scope="module")
def preset_b():
    return run_epoch_experiment(Config(**SMALL, **PRESETS["B"]))


def test_a_rebounds_each_run_while_the_loss_falls(preset_a):
    l2, loss = preset_a.metrics["l2"], preset_a.metrics["train_loss"]
    assert (preset_a.diverged_at == -1).all()
    best = l2.argmin(axis=1)
    assert ((best > 10) & (best < 250)).all(), best  # an interior minimum ...
    assert (l2[:, -1] / l2.min(axis=1) > 1.02).all(), l2[:, -1] / l2.min(axis=1)  # ... and a rise after it
    assert (loss[:, -1] < loss[:, 0] / 10).all()


def test_a_without_the_regulariser_barely_moves():
    result = run_epoch_experiment(Config(**SMALL, **{**PRESETS["A"], "train": "vanilla"}))
    l2, loss = result.metrics["l2"], result.metrics["train_loss"]
    assert (np.abs(l2[:, -1] / l2[:, 0] - 1) < 5e-3).all()
    assert (np.abs(np.diff(l2, axis=1)) < 1e-3 * l2[:, :1]).all()  # no rebound anywhere
    assert (loss[:, -1] < loss[:, 0] / 10).all()


def test_b_moves_away_from_an_exact_start(preset_b):
    l2, loss, clean = (preset_b.metrics[k] for k in ("l2", "train_loss", "clean_test_loss"))
    assert (l2[:, 0] == 0).all() and (clean[:, 0] == 0).all()
    assert (np.diff(l2, axis=1) >= 0).all()  # monotone rise from exactly 0
    assert (l2[:, -1] > 1e-6).all() and (l2[:, -1] < 1e-4).all()
    assert (loss[:, -1] < loss[:, 0]).all()
    # the noise is being fitted: the clean loss grows from exactly 0 while the train loss falls
    assert ((clean[:, -1] > clean[:, 10]) & (clean[:, 10] > 0)).all()


def test_same_config_gives_identical_numbers(preset_b):
    again = run_epoch_experiment(preset_b.config)
    for name, values in preset_b.metrics.items():
        np.testing.assert_array_equal(again.metrics[name], values, err_msg=name)
    np.testing.assert_array_equal(again.teacher, preset_b.teacher)
    np.testing.assert_array_equal(again.student_init, preset_b.student_init)


def test_each_run_draws_from_seed_plus_r_whatever_the_chunking():
    tiny = dict(teacher_dims=(2, 5, 1), dataset_size=50, test_set_size=10, epochs=20, noise_sigma=1e-2)
    many = run_epoch_experiment(Config(**tiny, runs=12))  # chunks of 10 and 2 (padded)
    tail = run_epoch_experiment(Config(**tiny, runs=2, seed=52))  # runs 1, 2 of seed 52 = runs 11, 12 of seed 42
    np.testing.assert_array_equal(many.teacher[10:], tail.teacher)
    np.testing.assert_allclose(many.metrics["l2"][10:], tail.metrics["l2"], rtol=1e-12)
    assert not np.allclose(many.teacher[0], many.teacher[1])  # runs differ


def test_an_interrupted_experiment_resumes_from_its_finished_chunks(tmp_path):
    config = Config(teacher_dims=(2, 5, 1), dataset_size=50, test_set_size=10, epochs=20, noise_sigma=1e-2, runs=12)
    checkpoint = store.Checkpoint(tmp_path, config)
    done = []

    def crash_in_second_chunk(n):
        done.append(n)
        if sum(done) > 10 * config.epochs:
            raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        run_epoch_experiment(config, crash_in_second_chunk, checkpoint)
    assert checkpoint.count() == 1
    skipped = []
    resumed = run_epoch_experiment(config, skipped.append, checkpoint)
    assert sum(skipped) == config.runs * config.epochs and checkpoint.count() == 2
    fresh = run_epoch_experiment(config)
    for name, values in fresh.metrics.items():
        np.testing.assert_array_equal(resumed.metrics[name], values, err_msg=name)
    np.testing.assert_array_equal(resumed.teacher, fresh.teacher)
