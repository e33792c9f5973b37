"""The on-disk result store: layout, an exact round trip, and atomic writes."""

import csv
import json
import os
import shutil
import stat

import numpy as np
import pytest

import jax
from conftest import TINY
from l2rebound import config as config_module
from l2rebound import provenance, store
from l2rebound.experiments import kept_epochs, run_epoch_experiment
from l2rebound.results import COLUMNS, DISTANCES, EpochResult

PARAMS = 2 * 4 + 4 + 4 * 1 + 1  # weights and biases of a 2,4,1 network


@pytest.fixture(scope="module")
def result() -> EpochResult:
    return run_epoch_experiment(TINY)


def synthetic(diverged_at=(-1, 3)) -> EpochResult:
    """A result for TINY with awkward floats: subnormals, the largest double, -0, inf, NaN after divergence."""
    rng = np.random.default_rng(7)
    shape = (TINY.runs, TINY.epochs + 1)
    metrics = {name: rng.standard_normal(shape) ** 2 for name in COLUMNS}
    kept = kept_epochs(TINY)
    for name in DISTANCES:  # recorded at the kept epochs only
        metrics[name][:, np.setdiff1d(np.arange(TINY.epochs + 1), kept)] = np.nan
    metrics["train_loss"].flat[:8] = [0.0, -0.0, 1 / 3, 5e-324, 2.2250738585072014e-308, 1.7976931348623157e308,
                                      np.nextafter(1.0, 2.0), np.inf]
    metrics["l2"][0, 1] = np.pi * 1e-300
    for run, epoch in enumerate(diverged_at):
        if epoch >= 0:
            for values in metrics.values():
                values[run, epoch:] = np.nan
    teacher = rng.standard_normal((TINY.runs, PARAMS))
    return EpochResult(TINY, metrics, teacher, teacher + 1e-2 * rng.uniform(-1, 1, teacher.shape),
                       np.asarray(diverged_at), kept, rng.standard_normal((TINY.runs, len(kept), PARAMS)))


def same_bits(a, b) -> bool:
    a, b = np.asarray(a), np.asarray(b)
    return a.dtype == b.dtype and a.shape == b.shape and a.tobytes() == b.tobytes()


def is_same(loaded: EpochResult, original: EpochResult) -> bool:
    return (loaded.config == original.config and set(loaded.metrics) == set(COLUMNS)
            and all(same_bits(loaded.metrics[name], original.metrics[name]) for name in COLUMNS)
            and same_bits(loaded.kept_epochs, original.kept_epochs) and same_bits(loaded.kept_theta, original.kept_theta)
            and same_bits(loaded.teacher, original.teacher) and same_bits(loaded.student_init, original.student_init)
            and np.array_equal(loaded.diverged_at, original.diverged_at))


def assert_same(loaded: EpochResult, original: EpochResult) -> None:
    assert loaded.config == original.config
    assert set(loaded.metrics) == set(COLUMNS)
    assert same_bits(loaded.kept_epochs, original.kept_epochs) and same_bits(loaded.kept_theta, original.kept_theta)
    for name in COLUMNS:
        assert same_bits(loaded.metrics[name], original.metrics[name]), name
    assert same_bits(loaded.teacher, original.teacher)
    assert same_bits(loaded.student_init, original.student_init)
    assert np.array_equal(loaded.diverged_at, original.diverged_at)


def leftovers(out):
    return sorted(p.name for p in out.iterdir() if p.name.startswith(".tmp-"))


def test_round_trip_of_a_real_run_is_bitwise(result, tmp_path):
    folder = store.save(tmp_path, result)
    assert folder == store.result_dir(tmp_path, TINY)
    assert_same(store.load(folder), result)
    assert store.load_config(folder) == TINY


def test_round_trip_keeps_special_values_bitwise(tmp_path):
    original = synthetic()
    loaded = store.load(store.save(tmp_path, original))
    assert_same(loaded, original)
    assert np.signbit(loaded.metrics["train_loss"].flat[1])  # -0.0 stays negative
    assert np.isnan(loaded.metrics["l2"][1, 3:]).all() and not np.isnan(loaded.metrics["l2"][1, :3]).any()


def test_folder_layout(result, tmp_path):
    folder = store.save(tmp_path, result)
    digest = TINY.config_hash()
    assert folder.name == f"epoch-{digest}" and len(digest) == 12 and int(digest, 16) >= 0
    assert sorted(p.name for p in folder.iterdir()) == ["config.json", "manifest.json", "metrics.csv", "params.npz",
                                                           "runs.csv", "trajectory.npz"]
    assert json.loads((folder / "config.json").read_text()) == TINY.to_dict()
    assert stat.S_IMODE(folder.stat().st_mode) & 0o055 == 0o055  # readable like the files, not owner-only

    with open(folder / "metrics.csv", newline="") as f:
        reader = csv.DictReader(f)
        assert reader.fieldnames == ["run", "epoch", "l2", "train_loss", "test_loss", "clean_test_loss", "stalled",
                                     "l2_aligned", "l2_normal_form"]
        rows = list(reader)
    assert len(rows) == TINY.runs * (TINY.epochs + 1)
    assert [(r["run"], r["epoch"]) for r in rows] == [  # tidy: integers, run-major
        (str(run), str(epoch)) for run in range(1, TINY.runs + 1) for epoch in range(TINY.epochs + 1)]
    for row in rows:  # %.17g: the text parses back to the very same double
        for name in COLUMNS:
            assert np.array_equal(float(row[name]), result.metrics[name][int(row["run"]) - 1, int(row["epoch"])],
                                  equal_nan=True)

    with open(folder / "runs.csv", newline="") as f:
        runs = list(csv.DictReader(f))
    assert runs == [{"run": str(r), "seed": str(TINY.seed + r), "diverged_at": "-1"} for r in (1, 2)]

    with np.load(folder / "params.npz") as params:
        assert sorted(params.files) == ["student_init", "teacher"]
        assert params["teacher"].shape == params["student_init"].shape == (TINY.runs, PARAMS)
    with np.load(folder / "trajectory.npz") as trajectory:
        assert trajectory["epochs"].tolist() == [0, TINY.epochs]  # align_every 10 > epochs: first and last
        assert same_bits(trajectory["theta"], result.kept_theta) and result.kept_theta.shape == (TINY.runs, 2, PARAMS)
        assert same_bits(trajectory["theta"][:, 0], result.student_init)
    assert leftovers(tmp_path) == []


def test_is_finished_only_for_a_stored_result(result, tmp_path):
    folder = store.result_dir(tmp_path, TINY)
    assert not store.is_finished(folder)
    folder.mkdir()
    assert not store.is_finished(folder)  # an empty folder is not a result
    folder.rmdir()
    store.save(tmp_path, result)
    assert store.is_finished(folder)


def test_interrupted_save_leaves_no_result_and_a_later_save_sweeps(result, tmp_path, monkeypatch):
    def interrupted(*args, **kwargs):
        raise KeyboardInterrupt

    monkeypatch.setattr(np, "savez", interrupted)
    with pytest.raises(KeyboardInterrupt):
        store.save(tmp_path, result)
    folder = store.result_dir(tmp_path, TINY)
    assert not folder.exists() and not store.is_finished(folder)
    assert leftovers(tmp_path) == []
    monkeypatch.undo()

    # A run killed outright (no except clause runs) leaves its temp folder behind, half-written.
    stale = tmp_path / f".tmp-{folder.name}-killed"
    stale.mkdir()
    (stale / "metrics.csv").write_text("run,epoch,l2\n1,0,0.5\n1,1,")
    assert not store.is_finished(folder)
    assert store.save(tmp_path, result) == folder
    assert not stale.exists() and leftovers(tmp_path) == []
    assert_same(store.load(folder), result)


def test_failed_final_rename_keeps_the_previous_result(result, tmp_path, monkeypatch):
    folder = store.save(tmp_path, result)
    rename = os.rename
    failed = []

    def failing(src, dst):
        if os.fspath(dst) == os.fspath(folder) and not failed:  # putting the new result in place
            failed.append(src)
            raise OSError("disk gone")
        rename(src, dst)

    monkeypatch.setattr(os, "rename", failing)
    with pytest.raises(OSError, match="disk gone"):
        store.save(tmp_path, synthetic())
    monkeypatch.undo()
    assert failed
    assert_same(store.load(folder), result)
    assert leftovers(tmp_path) == []


def test_replacing_a_result_never_exposes_a_half_deleted_one(result, tmp_path, monkeypatch):
    """Interrupt the removal of the old result after it deleted one file: what sits at the result's
    place must still be a complete result (the old or the new), never config.json without its data."""
    folder = store.save(tmp_path, result)
    new = synthetic()
    rmtree = shutil.rmtree
    calls = []

    def cut_off(path, *args, **kwargs):
        calls.append(path)
        data = os.path.join(path, "metrics.csv")
        if len(calls) == 1 and os.path.exists(data):
            os.remove(data)
            raise KeyboardInterrupt
        rmtree(path, *args, **kwargs)

    monkeypatch.setattr(shutil, "rmtree", cut_off)
    try:
        store.save(tmp_path, new)
    except KeyboardInterrupt:
        pass
    monkeypatch.undo()
    assert calls, "save no longer removes the replaced result with shutil.rmtree; adapt this test"
    assert store.is_finished(folder)
    loaded = store.load(folder)  # complete: every file is there
    assert is_same(loaded, new) or is_same(loaded, result)
    # the next save sweeps whatever the interruption left
    store.save(tmp_path, new)
    assert leftovers(tmp_path) == []


def test_saving_again_replaces_the_result(result, tmp_path):
    store.save(tmp_path, result)
    folder = store.save(tmp_path, synthetic())
    assert_same(store.load(folder), synthetic())
    assert leftovers(tmp_path) == [] and [p.name for p in tmp_path.iterdir()] == [folder.name]


def test_a_result_carries_its_provenance(result, tmp_path):
    manifest = json.loads((store.save(tmp_path, result) / "manifest.json").read_text())
    assert manifest == result.manifest
    assert manifest["schema"] == provenance.SCHEMA_VERSION and manifest["numerics"] == config_module.NUMERICS_VERSION
    assert manifest["dtype"] == "float64" and manifest["backend"] == "cpu" and manifest["device_count"] >= 1
    assert manifest["fast_path"] in ("fused-kernel", "xla")
    assert manifest["jax"] == jax.__version__
    assert manifest["version"] and manifest["host"] and manifest["date"].startswith("20")
    commit = manifest["git_commit"]  # this checkout runs as an editable install
    assert commit is None or len(commit.removesuffix("+dirty")) == 40
    assert store.load(store.result_dir(tmp_path, TINY)).manifest == manifest


def test_a_result_stored_before_manifests_still_loads(result, tmp_path):
    folder = store.save(tmp_path, result)
    (folder / "manifest.json").unlink()
    loaded = store.load(folder)
    assert loaded.manifest is None
    assert_same(loaded, result)


def test_a_newer_schema_is_refused_by_name(result, tmp_path):
    folder = store.save(tmp_path, result)
    manifest = json.loads((folder / "manifest.json").read_text())
    (folder / "manifest.json").write_text(json.dumps({**manifest, "schema": provenance.SCHEMA_VERSION + 1}))
    with pytest.raises(store.StoreError, match=f"schema {provenance.SCHEMA_VERSION + 1}.*upgrade l2rebound"):
        store.load(folder)


def test_the_numerics_version_is_part_of_the_folder_name(monkeypatch):
    before = TINY.config_hash()
    monkeypatch.setattr(config_module, "NUMERICS_VERSION", config_module.NUMERICS_VERSION + 1)
    assert TINY.config_hash() != before
