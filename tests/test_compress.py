"""The compression experiment: pruning, masked fine-tuning, recovery of the teacher's sparsity pattern (a case
that must recover it and one that must not), its store, CLI, bad input and sweeps over the threshold."""

import dataclasses

import jax
import numpy as np
import pytest
from conftest import run_cli

import l2rebound
from l2rebound import store
from l2rebound.config import Config, ConfigError, presets
from l2rebound.kinds.compress.result import set_up_warnings
from l2rebound.layout import draw_glorot, num_params
from l2rebound.nets import pad
from l2rebound.pruning import alive_units, bias_mask, prune, recovery, teacher_support

NEAR = Config(experiment="compress", teacher_dims=(2, 3, 2, 1), student_dims=(2, 5, 4, 1), initial_permut=1e-4,
              train="l1", alpha=1e-3, noise_sigma=0.0, epochs=20, finetune_epochs=10, prune_threshold=1e-2,
              projection_frequency=0, dataset_size=500, test_set_size=100, runs=2, align_every=10)
"""Students at their padded teachers plus 1e-4 noise under ℓ₁ pressure, pruned at 1e-2: the noise is pruned, the
teacher's weights above 1e-2 survive; every run must recover the teacher's pattern."""
FAR = NEAR.replace(student_init="random", train="vanilla", prune_threshold=1e-3, finetune_epochs=0)
"""Fresh wide students, no pressure, hardly pruned: dense, and certifiably not a relabelled teacher."""
CLI_NEAR = ("--teacher-dims", "2,3,2,1", "--student-dims", "2,5,4,1", "--initial-permut", "1e-4", "--train", "l1",
            "--alpha", "1e-3", "--noise-sigma", "0", "--epochs", "20", "--finetune-epochs", "10",
            "--projection-frequency", "0", "--dataset-size", "500", "--test-set-size", "100", "--runs", "2",
            "--align-every", "10")


@pytest.fixture(scope="module")
def near():
    return l2rebound.run(NEAR, progress=False)


def test_pruning_and_the_recovery_metrics_by_hand():
    theta = np.array([0.5, -1e-3, 2e-3, 0.0, np.nan, -0.2])
    pruned, mask = prune(theta, 2e-3)
    np.testing.assert_array_equal(pruned[[0, 1, 2, 3, 5]], [0.5, 0.0, 2e-3, 0.0, -0.2])
    assert np.isnan(pruned[4]) and mask.tolist() == [1, 0, 1, 0, 1, 1]
    dims = (1, 2, 1)  # θ = W1 (2), b1 (2), W2 (2), b2 (1)
    teacher = np.array([0.4, 0.0, 1e-6, 2e-3, 0.1, -0.25, 1e-6])  # a padded unit; biases moved off 0 by the projection
    assert bias_mask(dims).tolist() == [False, False, True, True, False, False, True]
    support = teacher_support(teacher, dims, zero_biases=True)
    assert support.tolist() == [True, False, False, False, True, True, False]
    assert teacher_support(teacher, dims, zero_biases=False).tolist() == [True, False, True, True, True, True, True]
    student = np.array([0.5, 0.0, 0.0, 0.0, 0.1, -0.2, 0.0])
    found = recovery(student, teacher, support)
    assert found["support_recovered"] and found["l0"] == 0
    assert found["l1"] == pytest.approx(0.1 + 1e-6 + 2e-3 + 0.05 + 1e-6)
    wrong = recovery(np.array([0.5, 0.0, 0.0, 3e-3, 0.1, -0.2, 0.0]), teacher, support)
    assert not wrong["support_recovered"] and wrong["l0"] == 1
    diverged = recovery(np.full(7, np.nan), teacher, support)
    assert not diverged["support_recovered"] and diverged["l0"] == -1


def padded(teachers, dims, wide) -> np.ndarray:
    """Teachers (R, P) padded to the student's widths (R, P_wide), in float64."""
    with jax.enable_x64(True):
        return np.stack([np.asarray(pad(t, dims, wide)) for t in teachers])


def test_alive_units_of_a_padded_network():
    dims, wide = (2, 3, 2, 1), (2, 5, 4, 1)
    theta = draw_glorot(np.random.default_rng(0), dims, 1e-3)
    assert alive_units(padded([theta], dims, wide)[0], wide) == (3, 2)


def test_a_student_at_its_teacher_under_pressure_recovers_its_pattern(near):
    table = near.compression
    assert table["support_recovered"].tolist() == [1, 1]
    assert table["l0_after"].tolist() == [0, 0]
    for h, width in ((1, 3), (2, 2)):
        assert table[f"alive_units_{h}"].tolist() == [width, width]
        assert table[f"teacher_units_{h}"].tolist() == [width, width]
    # the distance left is the ℓ₁ shrinkage and the teacher's own entries below the threshold: small, and proven
    assert (table["l2_aligned_after"] < 0.05).all()
    assert (table["l2_aligned_lower_after"] >= table["l2_aligned_after"] * (1 - 1e-9)).all()
    assert (table["nonzero_after"] < table["nonzero_before"]).all()
    after = near.students["after"]
    pruned, _ = prune(near.students["before"], NEAR.prune_threshold)
    assert ((after == 0) == (pruned == 0)).all()
    # the aligned student is a relabelling of the pruned one: same entries up to order and sign
    np.testing.assert_allclose(np.sort(np.abs(near.students["aligned_after"]), axis=1), np.sort(np.abs(after), axis=1))
    # fine-tuning started from the pruned student: its epoch 0 is the pruned student's
    teachers = padded(near.teacher, NEAR.teacher_dims, NEAR.student_dims)
    np.testing.assert_allclose(near.finetune["l2"][:, 0], np.linalg.norm(pruned - teachers, axis=1), rtol=1e-12)


@pytest.mark.parametrize(("fields", "recovered"), [
    ({"projection": "margin"}, [1, 1]),  # the teacher's zero biases at multiples of ε count as zero
    ({"prune_threshold": 0.0, "finetune_epochs": 0}, [0, 0]),  # nothing pruned: the start's noise stays
    ({"prune_threshold": 1e300}, [0, 0]),  # everything pruned
])
def test_recovery_needs_the_teachers_pattern_whatever_the_threshold(fields, recovered):
    result = l2rebound.run(NEAR.replace(**fields), progress=False)
    assert result.compression["support_recovered"].tolist() == recovered


def test_a_fresh_wide_student_does_not_recover_its_teacher():
    result = l2rebound.run(FAR, progress=False)
    table = result.compression
    assert table["support_recovered"].tolist() == [0, 0]
    assert (table["l0_after"] > 0).all()
    assert (table["alive_units_1"] > 3).all()
    # certified: no relabelling of the pruned student comes close to the teacher
    assert (table["l2_aligned_lower_after"] > 0.3).all()
    # the vanilla student is the same rule here, trained as long: its final numbers are the training phase's
    np.testing.assert_array_equal(result.vanilla["l2"][:, : FAR.epochs + 1], result.metrics["l2"])


def test_the_result_round_trips_through_the_store(near, tmp_path):
    folder = near.save(tmp_path)
    back = store.load(folder)
    assert type(back).__name__ == "CompressionResult"
    for name, values in near.compression.items():
        np.testing.assert_array_equal(back.compression[name], values, err_msg=name)
    for name in near.students:
        np.testing.assert_array_equal(back.students[name], near.students[name])
    frame = back.frame()
    runs, epochs, tune = NEAR.runs, NEAR.epochs, NEAR.finetune_epochs
    assert frame.groupby("phase").size().to_dict() == {"train": runs * (epochs + 1), "finetune": runs * (tune + 1),
                                                       "vanilla": runs * (epochs + tune + 1)}
    assert frame[frame.phase == "finetune"].epoch.min() == epochs
    assert (folder / "compression.csv").read_text().splitlines()[0].startswith("run,threshold,nonzero_before")
    code, out, err = run_cli("align", folder, "--run", "2")  # the last kept student of run 2, before pruning
    assert code == 0, err
    upper = float(next(line for line in out.splitlines() if line.startswith("upper")).split()[1])
    assert upper == pytest.approx(near.compression["l2_aligned_before"][1], rel=1e-12)


def test_the_command_writes_the_table_and_the_figures(tmp_path):
    code, out, err = run_cli("compress", *CLI_NEAR, "--prune-threshold", "1e-2", "--out", tmp_path)
    assert code == 0, err
    folder = next(tmp_path.glob("compress-*"))
    assert (folder / "compression.csv").is_file()
    for view in ("networks", "comparison", "absolute"):
        assert list(folder.glob(f"*_{view}.png")), view
    assert "support" in out and "warning" not in err  # a wider student under a regulariser: nothing to warn of


def test_a_set_up_that_cannot_compress_says_so():
    """Without --student-dims the student is as wide as its teacher, and under the default vanilla rule the
    trained student is a vanilla one: the same numbers, which a warning line explains."""
    same = l2rebound.run(Config(experiment="compress", teacher_dims=(2, 3, 1), dataset_size=64, test_set_size=16,
                                epochs=5, runs=2, initial_permut=1e-2), progress=False)
    for column in ("l2_aligned", "clean_test_loss"):
        np.testing.assert_array_equal(same.compression[f"{column}_before"], same.compression[f"{column}_vanilla"])
    lines = same.warnings()
    assert len(lines) == 2 and "as wide as its teacher" in lines[0]
    assert "'trained' and 'vanilla' are the same student" in lines[1]
    assert not set_up_warnings(presets["D"]) and not set_up_warnings(NEAR)
    assert set_up_warnings(NEAR.replace(train="vanilla")) == [
        "warning: --train vanilla: the trained student is trained by the vanilla rule too; compare a regulariser "
        "with it (--train drr or l1, as --preset D)"]  # fine-tuned: the two differ, but not by a regulariser


@pytest.mark.parametrize(("argv", "message"), [
    (("--prune-threshold", "-1"), "--prune-threshold must be a finite number >= 0"),
    (("--prune-threshold", "inf"), "--prune-threshold must be a finite number >= 0"),
    (("--prune-threshold", "0", "--finetune-epochs", "5"), "--finetune-epochs trains a pruned student"),
    (("--teacher-dims", "2,10,5,1", "--student-dims", "2,8,25,1"), "at least as wide"),
    (("--align-every", "0"), "needs --align-every >= 1"),
])
def test_bad_input_fails_in_one_line_and_writes_nothing(argv, message, tmp_path):
    code, out, err = run_cli("compress", "--preset", "D", *argv, "--out", tmp_path / "out")
    assert code == 2 and out == "" and len(err.splitlines()) == 1 and message in err
    assert not (tmp_path / "out").exists()


def test_the_pruning_fields_belong_to_the_compress_experiment():
    with pytest.raises(ConfigError, match="--prune-threshold is not used by the epoch experiment"):
        Config(prune_threshold=0.1)
    assert presets["D"].teacher_dims == (2, 10, 5, 1) and presets["D"].student_dims == (2, 25, 25, 1)
    assert presets["D"].prune_threshold == 1e-3 and presets["D"].projection_frequency == 0
    assert num_params(presets["D"].student_dims) == 751


def test_a_sweep_over_the_threshold_draws_the_recovery(tmp_path):
    code, _, err = run_cli("sweep", "--experiment", "compress", *CLI_NEAR, "--grid", "prune-threshold=1e-6,1e-2",
                             "--out", tmp_path)
    assert code == 0, err
    result = l2rebound.sweeps.load(next(tmp_path.glob("sweep-*")))
    frame = result.frame()
    recovered = frame.groupby("prune_threshold").support_recovered.mean().to_dict()
    assert recovered == {1e-6: 0.0, 1e-2: 1.0}  # at 1e-6 the start's noise survives pruning
    assert set(result.stats) == {"support_recovered", "l2_aligned_after"}
    assert list(next(tmp_path.glob("sweep-*")).glob("*support_recovered*.png"))


def test_a_compress_sweep_leaves_out_runs_whose_pruned_student_diverged(near):
    table = {name: values.copy() for name, values in near.compression.items()}
    for name in ("nonzero_after", "l0_after", "support_recovered"):
        table[name][0] = -1  # as the engine writes a pruned student that diverged
    table["diverged_at_finetune"][0] = 3
    summary = dataclasses.replace(near, compression=table).sweep_columns()
    assert np.isnan(summary["support_recovered"][0]) and np.isnan(summary["nonzero_after"][0])
    assert summary["support_recovered"][1] == 1
    assert summary["diverged_at"].tolist() == [NEAR.epochs + 3, -1]
    assert (near.compression["nonzero_after"] >= 0).all()  # the result itself is left as it was


def test_pruning_by_search_keeps_the_training_loss_within_its_tolerance():
    """The students pruned by search lose at most the tolerance of their training loss (random-gradient pruning
    removes only entries that cannot change the output), and the near students, whose noise sits below the
    teacher's weights, still recover the teacher's pattern; fine-tuning without the regulariser is vanilla."""
    config = NEAR.replace(prune_method="search", tamade_tolerance=0.05, finetune_train="vanilla")
    result = l2rebound.run(config, progress=False)
    before, after = result.metrics["train_loss"][:, config.epochs], result.finetune["train_loss"][:, 0]
    assert np.all(after <= (1 + config.tamade_tolerance) * before * (1 + 1e-12))
    assert np.all(result.compression["threshold"] > 0)
    np.testing.assert_array_equal(result.compression["nonzero_after"], (result.students["after"] != 0).sum(axis=1))
    tuned_by_the_rule = l2rebound.run(config.replace(finetune_train="same"), progress=False)
    assert not np.array_equal(tuned_by_the_rule.students["after"], result.students["after"])
    assert "pruned by search" in result.summary() and "without the regulariser" in result.summary()


def test_the_compression_progress_ends_after_its_alignments(monkeypatch):
    """The certified alignments of the trained and pruned students run before the last unit of progress, and
    every unit is counted once."""
    from conftest import TINY_COMPRESS, progress_around

    from l2rebound.kinds.compress import engine

    with jax.enable_x64(True):
        events, units = progress_around(monkeypatch, engine, "aligned_students",
                                        lambda progress: engine.run(TINY_COMPRESS, on_progress=progress))
    assert events.count("align") == 2 and events[-1] == "progress" and events[-2] == "align"
    assert sum(units) == engine.CompressionResult.run_epochs(TINY_COMPRESS)
