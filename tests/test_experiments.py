"""The seed's phenomena on small configs, reproducibility and run chunking."""

import logging

import jax
import numpy as np
import pytest
from conftest import TINY, InterruptAt, assert_same_result, progress_around

from l2rebound import experiments, store
from l2rebound.certify import Budget, certified_align, node_budget
from l2rebound.config import PRESETS, Config
from l2rebound.experiments import kept_work
from l2rebound.genericity import RATIO_BOUND, format_report, genericity_report, report_generic
from l2rebound.kinds.epoch.engine import run as run_epoch_experiment
from l2rebound.nets import pad
from l2rebound.symmetry import l2_aligned, normal_form_distance

pytestmark = pytest.mark.usefixtures("x64")  # these tests call the engine's internals

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


@pytest.mark.slow
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
    # the second chunk's one block had finished: it is kept too, and says so
    assert kept_work(checkpoint) == "trainings 1–10 finished; trainings 11–12 trained to epoch 20 of 20"
    skipped = []
    resumed = run_epoch_experiment(config, skipped.append, checkpoint)
    assert sum(skipped) == config.runs * config.epochs and checkpoint.count() == 2
    assert kept_work(checkpoint) == "trainings 1–12 finished"
    fresh = run_epoch_experiment(config)
    for name, values in fresh.metrics.items():
        np.testing.assert_array_equal(resumed.metrics[name], values, err_msg=name)
    np.testing.assert_array_equal(resumed.teacher, fresh.teacher)


@pytest.mark.parametrize("stop_at", [1, 3])
def test_an_interrupt_inside_a_chunk_keeps_its_finished_blocks_and_resumes_bit_identically(tmp_path, stop_at):
    """Ten runs are one chunk: the blocks of epochs it finished before the interrupt are kept, and training goes
    on from them to the numbers of an uninterrupted run, every table and array."""
    config = TINY.replace(runs=10, epochs=250, align_every=20)  # blocks of 42 epochs: 6 of them
    checkpoint = store.Checkpoint(tmp_path, config)
    interrupt = InterruptAt(stop_at)
    with pytest.raises(KeyboardInterrupt):
        run_epoch_experiment(config, interrupt, checkpoint)
    kept = checkpoint.load(f"runs-000001-{config.runs}")
    stands_at = int(kept["epochs_done"])
    assert sum(interrupt.reports) <= stands_at * config.runs < config.runs * config.epochs  # a block reported is kept
    assert kept_work(checkpoint) == f"trainings 1–10 trained to epoch {stands_at} of 250"
    progress = []
    resumed = run_epoch_experiment(config, progress.append, checkpoint)
    assert progress[0] == stands_at * config.runs and sum(progress) == config.runs * config.epochs
    assert_same_result(resumed, run_epoch_experiment(config))


def test_blocks_kept_by_another_config_are_not_resumed(tmp_path):
    config = TINY.replace(runs=10, epochs=250)  # blocks of 42 epochs
    other = store.Checkpoint(tmp_path, config.replace(teacher_dims=(2, 5, 1)))
    with pytest.raises(KeyboardInterrupt):
        run_epoch_experiment(config.replace(teacher_dims=(2, 5, 1)), InterruptAt(3), other)
    assert int(other.load(f"runs-000001-{config.runs}")["blocks_done"]) >= 3
    mine = store.Checkpoint(tmp_path, config)
    mine.folder.mkdir()
    for path in other.folder.iterdir():  # the other shapes' blocks, in this config's place
        path.rename(mine.folder / path.name)
    progress = []
    resumed = run_epoch_experiment(config, progress.append, mine)
    assert progress[0] == config.runs * 42  # trained from epoch 0
    np.testing.assert_array_equal(resumed.metrics["l2"], run_epoch_experiment(config).metrics["l2"])


def test_aligned_distances_are_recorded_every_k_epochs_from_the_kept_students():
    config = Config(teacher_dims=(2, 4, 3, 1), dataset_size=100, test_set_size=20, epochs=25, runs=2,
                    student_init="random", bias_init="uniform", align_every=10)
    result = run_epoch_experiment(config)
    np.testing.assert_array_equal(result.kept_epochs, [0, 10, 20, 25])
    np.testing.assert_array_equal(result.kept_theta[:, 0], result.student_init)
    recorded = np.isfinite(result.metrics["l2_aligned"])
    assert recorded[:, result.kept_epochs].all() and recorded.sum() == 2 * 4
    teacher = [pad(t, config.teacher_dims, config.student_dims) for t in result.teacher]
    for r in range(2):
        for i, epoch in enumerate(result.kept_epochs):
            theta = result.kept_theta[r, i]
            assert result.metrics["l2"][r, epoch] == pytest.approx(np.linalg.norm(theta - teacher[r]), rel=1e-12)
            budget = Budget(nodes=node_budget(config.student_dims, config.align_budget))  # to the end: a small net
            aligned = certified_align(theta, teacher[r], config.student_dims, budget)
            assert result.metrics["l2_aligned"][r, epoch] == aligned.upper
            assert result.metrics["l2_aligned_lower"][r, epoch] == aligned.lower <= aligned.upper
            # the search starts from the heuristic alignment: never worse than it
            assert aligned.upper <= l2_aligned(theta, teacher[r], config.student_dims) * (1 + 1e-15)
            assert result.metrics["l2_normal_form"][r, epoch] == normal_form_distance(theta, teacher[r],
                                                                                   config.student_dims)
    # a random start is far from its teacher in raw coordinates, less so modulo the symmetries
    assert (result.metrics["l2_aligned"][:, 0] < 0.9 * result.metrics["l2"][:, 0]).all()
    assert (result.metrics["l2_aligned"][recorded] <= result.metrics["l2"][recorded] + 1e-12).all()


def test_align_every_zero_keeps_nothing():
    result = run_epoch_experiment(Config(teacher_dims=(2, 4, 1), dataset_size=50, test_set_size=10, epochs=5, runs=1,
                                         align_every=0))
    assert result.kept_theta.shape == (1, 0, 17) and np.isnan(result.metrics["l2_aligned"]).all()


def test_margin_projection_keeps_teacher_and_student_generic_with_room_to_spare():
    eps = 0.05
    config = Config(teacher_dims=(2, 5, 4, 1), dataset_size=200, test_set_size=20, epochs=30, runs=2,
                    initial_permut=1e-2, projection="margin", margin=eps, align_every=1)
    result = run_epoch_experiment(config)
    assert (result.diverged_at == -1).all()
    for theta in [*result.teacher, *result.kept_theta[:, 1:].reshape(-1, result.kept_theta.shape[-1])]:
        report = genericity_report(theta, config.teacher_dims, ratio_bound=RATIO_BOUND)
        assert report_generic(report), format_report(report)
        for layer in report:  # the jitter round after the margin moves entries by a few ulps at most
            assert layer["min_abs_weight"] >= eps * (1 - 1e-12) and layer["min_abs_bias"] >= eps * (1 - 1e-12)
            assert layer["min_bias_gap"] is None or layer["min_bias_gap"] >= eps * (1 - 1e-9)
    # the seed's zero-bias teacher got biases eps, 2 eps, ... apart
    assert np.all(np.abs(result.teacher[0][10:15]) >= eps * (1 - 1e-12))


def test_the_numbers_do_not_depend_on_the_block_length(monkeypatch):
    """A wide network's blocks are cut short (progress every epoch or few); the block length is bookkeeping
    only: every table and array equals the one of blocks of ``BLOCK_EPOCHS``."""
    config = TINY.replace(runs=3, epochs=30, align_every=7)
    long = run_epoch_experiment(config)
    monkeypatch.setattr(experiments, "BLOCK_WORK", 1)  # one epoch per block
    assert experiments.block_length(config) == 1
    assert_same_result(run_epoch_experiment(config), long)


def test_blocks_of_a_wide_network_are_short_and_of_a_preset_full_length():
    assert experiments.block_length(Config(**PRESETS["A"])) == 46  # 501 steps: 11 equal blocks of at most 50
    wide = Config(teacher_dims=(2, 1000, 1000, 1), dataset_size=500, epochs=5)
    assert experiments.block_length(wide) == 1


def test_one_compile_serves_every_block_of_an_experiment(caplog):
    # the one compile is compile_ahead's, in its own thread, which enters the caller's (thread-local) 64-bit
    # scope: a second would mean that its guess of the call, or of that scope, was wrong
    config = Config(teacher_dims=(2, 3, 2, 1), dataset_size=40, test_set_size=10, epochs=120, runs=2, align_every=100)
    jax.config.update("jax_log_compiles", True)
    try:
        with caplog.at_level(logging.WARNING):
            run_epoch_experiment(config)  # 121 steps: three blocks; kept epochs 0, 100, 120 fall in two of them
    finally:
        jax.config.update("jax_log_compiles", False)
    compiles = [r for r in caplog.records if "XLA compilation of jit(train_block)" in r.getMessage()]
    assert len(compiles) == 1, [r.getMessage()[:200] for r in compiles]


def test_a_diverging_run_finishes_with_nan_distances_and_students_from_its_divergence_on():
    # distances are measured while the next block trains; a diverged run's θ can still be finite but huge
    # (|θ| ~ 1e156 makes the assignment's cost NaN), so its kept students must be NaN by then
    config = Config(learning_rate=200.0, initial_permut=0.1, dataset_size=500, test_set_size=100, epochs=100, runs=2,
                    align_every=5)
    result = run_epoch_experiment(config)
    assert np.all(result.diverged_at >= 0)
    for r, start in enumerate(result.diverged_at):
        after = result.kept_epochs >= start
        assert np.isnan(result.kept_theta[r, after]).all() and np.isfinite(result.kept_theta[r, ~after]).all()
        for name in ("l2", "l2_aligned", "l2_normal_form"):
            assert np.isnan(result.metrics[name][r, start:]).all()
        assert np.isfinite(result.metrics["l2_aligned"][r, result.kept_epochs[~after]]).all()


def test_training_holds_the_state_of_one_block_only():
    """The state kept for an interrupt is the latest block's: the live arrays do not grow with the blocks."""
    config = TINY.replace(epochs=1000, optimizer="adam", align_every=0)  # 21 blocks of epochs
    sizes = []

    def measure(n):
        sizes.append(sum(a.nbytes for a in jax.live_arrays()))

    run_epoch_experiment(config, measure)
    assert len(sizes) >= 20 and max(sizes[5:]) <= 1.5 * sizes[2], sizes


def test_the_last_progress_comes_after_the_last_alignment(monkeypatch):
    """The host work on a block's kept students (their certified alignment) is done before the block counts
    as progress: a bar does not show 100 % while the last students are still being aligned."""
    config = Config(teacher_dims=(2, 3, 1), dataset_size=32, test_set_size=8, epochs=6, runs=1, align_every=3)
    events, _ = progress_around(monkeypatch, experiments, "distances",
                                lambda progress: experiments.run_experiment(config, on_progress=progress))
    assert "align" in events and events[-1] == "progress"
