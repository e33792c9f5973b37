"""The on-disk result store: layout, an exact round trip, atomic writes, a store that cannot take a result,
a write failing after training, damaged files, and the lock of a result."""

import collections
import csv
import dataclasses
import errno
import hashlib
import io
import json
import os
import re
import shutil
import stat
import subprocess
import sys
import tempfile
import threading
import time
import zipfile
from pathlib import Path

import jax
import numpy as np
import pytest
from conftest import TINY, TINY_NOISE, run_cli

import l2rebound
from l2rebound import api, experiments, kernel, provenance, registry, store
from l2rebound import config as config_module
from l2rebound.config import Config, example, presets
from l2rebound.kinds.epoch.engine import run as run_epoch_experiment
from l2rebound.kinds.epoch.result import EpochResult
from l2rebound.kinds.noise.result import NoiseResult
from l2rebound.layout import num_params
from l2rebound.results import COLUMNS, DISTANCES, kept_epochs, stored_students

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


def compact(result: EpochResult) -> EpochResult:
    """``result`` of the compact form: the students of the last epoch alone."""
    return dataclasses.replace(result, config=result.config.replace(storage="compact"))


def same_bits(a, b) -> bool:
    a, b = np.asarray(a), np.asarray(b)
    return a.dtype == b.dtype and a.shape == b.shape and a.tobytes() == b.tobytes()


def is_same(loaded: EpochResult, original: EpochResult) -> bool:
    return (loaded.config == original.config and set(loaded.metrics) == set(COLUMNS)
            and all(same_bits(loaded.metrics[name], original.metrics[name]) for name in COLUMNS)
            and same_bits(loaded.kept_epochs, original.kept_epochs)
            and same_bits(loaded.kept_theta, original.kept_theta)
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
                                     "l2_aligned", "l2_aligned_lower", "l2_normal_form"]
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
    with pytest.raises(store.StoreWriteError, match=re.escape(f"cannot write the result to {folder} (disk gone)")):
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
    assert manifest["schema"] == 2 and manifest["numerics"] == config_module.NUMERICS_VERSION  # full: readable before 3
    assert manifest["dtype"] == "float64" and manifest["backend"] == "cpu" and manifest["device_count"] >= 1
    with jax.enable_x64(True):  # as in the engine
        assert manifest["fast_path"] == kernel.fast_path("float64")
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


# ---- a store that cannot take the result: refused before training, nothing made ----------------------

CLI_TINY = ["--teacher-dims", "2,4,1", "--dataset-size", "64", "--test-set-size", "16", "--epochs", "5", "--runs", "2",
            "--initial-permut", "1e-2", "--no-progress"]
"""The options of ``TINY``."""


def forbid_training(monkeypatch):
    monkeypatch.setattr(api, "compute", lambda *args, **kwargs: pytest.fail("trained although the store was refused"))


def run_tiny(*argv):
    """``l2rebound epoch TINY *argv`` in-process: (exit code, stdout, stderr)."""
    return run_cli("epoch", *CLI_TINY, *argv)


def read_only_folders_stop_writes() -> bool:
    """Whether a folder without write permission keeps this process out (not so for root, which writes
    anyway unless it runs without the capability to override permissions)."""
    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(tmp) / "read-only"
        folder.mkdir(mode=0o555)
        try:
            (folder / "probe").touch()
        except PermissionError:
            return True
        finally:
            folder.chmod(0o755)
        return False


@pytest.mark.skipif(not read_only_folders_stop_writes(),
                    reason="this user writes into read-only folders (root): simulated in the next test")
@pytest.mark.parametrize("below", ["", "new/deeper"], ids=["--out read-only", "parent read-only"])
def test_a_read_only_store_is_refused_before_training(below, tmp_path, monkeypatch):
    forbid_training(monkeypatch)
    locked = tmp_path / "locked"
    locked.mkdir()
    locked.chmod(0o555)
    try:
        with pytest.raises(store.StoreWriteError, match=re.escape(f"{locked} is not writable")):
            api.execute(TINY, locked / below, progress=False)
        assert list(locked.iterdir()) == []
    finally:
        locked.chmod(0o755)


def test_a_folder_the_os_reports_read_only_is_refused_before_training(tmp_path, monkeypatch, capsys):
    """What a user meets under a read-only parent of ``--out``, simulated for any user (root writes into a
    read-only folder anyway): ``os.access`` reports the parent as not writable, as the OS does for a
    non-root user or on a read-only file system. One line, exit 2, nothing made, nothing trained."""
    parent = tmp_path / "shared"
    parent.mkdir()
    access = os.access

    def read_only(path, mode, **kwargs):
        return False if os.fspath(path) == os.fspath(parent) and mode & os.W_OK else access(path, mode, **kwargs)

    monkeypatch.setattr(os, "access", read_only)
    forbid_training(monkeypatch)
    code, out, err = run_tiny("--out", parent / "results")
    assert code == 2 and out == ""
    assert err == (f"l2rebound: error: cannot store results in {parent / 'results'}: {parent} is not writable; make "
                   "it writable or choose another output folder (--out)\n")
    assert list(parent.iterdir()) == []


def test_out_under_a_file_is_refused_before_training(tmp_path, monkeypatch):
    forbid_training(monkeypatch)
    file = tmp_path / "notes.txt"
    file.write_text("keep me")
    with pytest.raises(store.StoreWriteError, match=re.escape(f"{file} is a file, not a folder")):
        api.execute(TINY, file / "results", progress=False)
    assert file.read_text() == "keep me" and list(tmp_path.iterdir()) == [file]


def test_a_store_without_room_is_refused_before_training(tmp_path, monkeypatch, capsys):
    """A full disk, simulated: ``shutil.disk_usage`` reports 100 kB free, where TINY's result asks for about
    1 MB (mostly the room kept for figures)."""
    monkeypatch.setattr(shutil, "disk_usage", lambda path: DiskUsage(total=10**9, used=10**9 - 10**5, free=10**5))
    forbid_training(monkeypatch)
    out = tmp_path / "out"
    code, _, err = run_tiny("--out", out)
    assert code == 2 and len(err.splitlines()) == 1
    assert err.startswith(f"l2rebound: error: cannot store results in {out}: this result needs about 1.09 MB on "
                          f"disk and {tmp_path} has 100 kB free; free space there")
    assert list(tmp_path.iterdir()) == []


DiskUsage = collections.namedtuple("DiskUsage", "total used free")
"""What ``shutil.disk_usage`` returns, in bytes."""


def stored_bytes(folder) -> int:
    return sum(p.stat().st_size for p in folder.iterdir())


def synthetic_noise() -> NoiseResult:
    """A noise result for TINY_NOISE with random values."""
    rng = np.random.default_rng(3)
    shape = (len(TINY_NOISE.noise_levels), TINY_NOISE.runs)
    return NoiseResult(TINY_NOISE, np.asarray(TINY_NOISE.noise_levels),
                       {name: rng.standard_normal(shape) for name in COLUMNS}, rng.standard_normal(PARAMS),
                       rng.standard_normal((TINY_NOISE.runs, PARAMS)), np.full(shape, -1))


def synthetic_noise_compact() -> NoiseResult:
    original = synthetic_noise()
    return dataclasses.replace(original, config=original.config.replace(storage="compact"))


@pytest.mark.parametrize("make", [synthetic, synthetic_noise], ids=["epoch", "noise"])
def test_the_room_asked_for_holds_every_stored_value(make, tmp_path):
    """The estimate counts exactly the values a result stores, and no value's CSV text is longer than the
    bytes it allows: the awkward floats of ``synthetic`` (subnormals, the largest double) are the longest."""
    original = make()
    tables, arrays = type(original).stored_values(original.config)
    assert tables == sum(len(columns) * len(next(iter(columns.values()))) for columns in original.tables().values())
    assert arrays == sum(np.size(a) for stem in original.arrays().values() for a in stem.values())
    folder = store.save(tmp_path, original)
    data = sum((folder / f"{stem}.csv").stat().st_size for stem in original.tables())
    assert data <= tables * store.CSV_BYTES_PER_VALUE
    assert stored_bytes(folder) + store.FIGURE_BYTES <= store.stored_size(original.config)



# ---- the compact form: the same numbers in a tenth of the room --------------------------------------------

AWKWARD = np.array([0.0, -0.0, 5e-324, -5e-324, 2.2250738585072014e-308, 1.7976931348623157e308, np.inf, -np.inf,
                    np.nan, -np.nan, 1 / 3, np.nextafter(1.0, 2.0)])
"""Doubles a format could lose: signed zeros, subnormals, the extremes, infinities, NaNs of either sign."""


def every_double(count: int, seed: int = 0) -> np.ndarray:
    """``AWKWARD`` and ``count`` doubles of random bit patterns (NaN payloads and subnormals among them)."""
    bits = np.random.default_rng(seed).integers(0, 2**64, count, dtype=np.uint64, endpoint=False)
    return np.concatenate([AWKWARD, bits.view(np.float64)])


def test_a_parquet_table_round_trips_every_double_and_integer_bitwise(tmp_path):
    doubles = every_double(5000)
    integers = np.concatenate([[np.iinfo(np.int64).min, -1, 0, 1, 2**53 + 1, np.iinfo(np.int64).max],
                               np.arange(len(doubles) - 6)])
    path = tmp_path / "table.parquet"
    store._write_parquet(path, {"run": integers, "l2": doubles, "flag": doubles > 0})
    back = store._read_parquet(path)
    assert list(back) == ["run", "l2", "flag"]
    assert same_bits(back["run"], integers) and same_bits(back["l2"], doubles)
    assert same_bits(back["flag"], (doubles > 0).astype(float))  # like the CSV: what is not an integer is a double


def test_a_compressed_array_round_trips_every_double_bitwise(tmp_path):
    arrays = {"theta": every_double(6000 - len(AWKWARD)).reshape(2, 3, 1000), "epochs": np.arange(3)}
    path = tmp_path / "arrays.npz"
    store._write_npz(path, arrays, TINY.replace(storage="compact"))
    back = store._read_npz(path)
    assert all(same_bits(back[name], arrays[name]) for name in arrays)


@pytest.mark.parametrize("make", [lambda result: compact(result), lambda result: compact(synthetic())],
                         ids=["real run", "special values"])
def test_a_compact_result_round_trips_bitwise(make, result, tmp_path):
    original = make(result)
    loaded = store.load(store.save(tmp_path, original))
    assert_same(loaded, original)
    assert loaded.config.storage == "compact" and loaded.frame().equals(original.frame())


def test_compact_folder_layout(result, tmp_path):
    """Parquet tables, compressed arrays, the students of the last epoch; the config says which form."""
    original = compact(result)
    folder = store.save(tmp_path, original)
    assert folder == store.result_dir(tmp_path, original.config) != store.result_dir(tmp_path, TINY)
    assert sorted(p.name for p in folder.iterdir()) == ["config.json", "manifest.json", "metrics.parquet",
                                                           "params.npz", "runs.parquet", "trajectory.npz"]
    assert json.loads((folder / "config.json").read_text())["storage"] == "compact"
    assert json.loads((folder / "manifest.json").read_text())["schema"] == 3  # older versions refuse it by name
    import pandas as pd

    assert pd.read_parquet(folder / "metrics.parquet").equals(result.frame())  # any Parquet reader reads it
    with np.load(folder / "trajectory.npz") as trajectory:
        assert trajectory["epochs"].tolist() == [TINY.epochs]
        assert same_bits(trajectory["theta"], result.kept_theta[:, -1:])
    for name in ("params.npz", "trajectory.npz"):
        with zipfile.ZipFile(folder / name) as archive:
            assert {entry.compress_type for entry in archive.infolist()} == {zipfile.ZIP_DEFLATED}, name


def test_a_full_config_is_stored_and_named_as_before_the_compact_form(result, tmp_path):
    """A full result's config.json names no storage, so its hash is the one it had before the field existed,
    and a folder written then (schema 2, no storage in config.json) loads as full."""
    folder = store.save(tmp_path, result)
    stored = json.loads((folder / "config.json").read_text())
    assert "storage" not in stored and Config.from_dict(stored) == TINY
    canonical = json.dumps({**stored, "numerics": config_module.NUMERICS_VERSION}, sort_keys=True,
                           separators=(",", ":"))
    assert TINY.config_hash() == hashlib.sha256(canonical.encode()).hexdigest()[:12]
    manifest = json.loads((folder / "manifest.json").read_text())
    (folder / "manifest.json").write_text(json.dumps({**manifest, "schema": 2}))
    assert_same(store.load(folder), result)


def preset_a_cell(random_bits: bool = False) -> EpochResult:
    """A result of preset A's shape stored as a sweep's cell (compact), without training: 10 runs of 500 epochs,
    751 parameters, distances every 10 epochs. Values: positive doubles of full-entropy mantissas, as measured
    curves have, or (``random_bits``) random bit patterns, which nothing compresses."""
    config = presets["A"].replace(storage="compact")
    rng = np.random.default_rng(1)
    shape, params = (config.runs, config.epochs + 1), num_params(config.student_dims)

    def values(*shape):
        if random_bits:
            return rng.integers(0, 2**64, shape, dtype=np.uint64, endpoint=False).view(np.float64)
        return np.exp(rng.uniform(-12, 0, shape))

    metrics = {name: values(*shape) for name in COLUMNS}
    metrics["stalled"] = np.zeros(shape)  # float64 rounds no step away
    for name in DISTANCES:
        metrics[name][:, np.setdiff1d(np.arange(config.epochs + 1), kept_epochs(config))] = np.nan
    kept = kept_epochs(config)
    return EpochResult(config, metrics, values(config.runs, params), values(config.runs, params),
                       np.full(config.runs, -1), kept, values(config.runs, len(kept), params))


def test_a_preset_a_sweep_cell_takes_at_most_half_a_megabyte(tmp_path):
    cell = preset_a_cell()
    folder = store.save(tmp_path, cell)
    assert stored_bytes(folder) <= 500_000
    assert stored_bytes(folder) + store.FIGURE_BYTES <= store.stored_size(cell.config)
    assert_same(store.load(folder), cell)


@pytest.mark.parametrize("make", [lambda: compact(synthetic()), synthetic_noise_compact,
                                  lambda: preset_a_cell(random_bits=True)], ids=["epoch", "noise", "incompressible"])
def test_the_room_asked_for_holds_a_compact_result(make, tmp_path):
    """However badly its values compress."""
    original = make()
    folder = store.save(tmp_path, original)
    assert stored_bytes(folder) + store.FIGURE_BYTES <= store.stored_size(original.config)
    assert store.stored_size(original.config) < store.stored_size(original.config.replace(storage="full"))


def test_an_analysis_is_stored_in_the_results_form(result, tmp_path):
    analysis = {"predicted_l2": every_double(300), "version": np.asarray(2)}
    for original, compression in ((result, zipfile.ZIP_STORED), (compact(result), zipfile.ZIP_DEFLATED)):
        path = store.save_analysis(store.save(tmp_path, original), analysis)
        with zipfile.ZipFile(path) as archive:
            assert {entry.compress_type for entry in archive.infolist()} == {compression}
        loaded = store.load_analysis(path.parent)
        assert all(same_bits(loaded[name], analysis[name]) for name in analysis)


COMPACT_DAMAGED = {
    "metrics.parquet cut short": ("metrics.parquet", lambda data: data[: len(data) // 2]),
    "metrics.parquet garbled": ("metrics.parquet", lambda data: data[:100] + b"x" * 50 + data[150:]),
    "runs.parquet empty": ("runs.parquet", lambda data: b""),
    "trajectory.npz cut short": ("trajectory.npz", lambda data: data[: len(data) // 2]),
}


@pytest.mark.parametrize("name, damage", COMPACT_DAMAGED.values(), ids=COMPACT_DAMAGED)
def test_a_damaged_compact_file_is_named_in_one_store_error(name, damage, result, tmp_path):
    folder = store.save(tmp_path, compact(result))
    path = folder / name
    path.write_bytes(damage(path.read_bytes()))
    with pytest.raises(store.StoreError) as error:
        store.load(folder)
    message = str(error.value)
    assert message.startswith((f"{path} cannot be read", f"{folder} cannot be read back: metrics.parquet"))
    assert message.endswith("--force") and "\n" not in message


# ---- a write failing after training: the finished chunks are kept, the same command resumes -----------

def no_space(*args, **kwargs):
    raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))


def test_a_result_that_cannot_be_written_keeps_its_chunk_and_resumes_bit_identically(result, tmp_path, monkeypatch,
                                                                                      capsys):
    """TINY holds its runs in one chunk (the case where all the work would be lost): the disk fills up after
    training, while the result is written."""
    out = tmp_path / "out"
    folder, partial = store.result_dir(out, TINY), store.Checkpoint(out, TINY).folder
    monkeypatch.setattr(store, "_write_table", no_space)
    code, _, err = run_tiny("--out", out)
    assert code == 2 and len(err.splitlines()) == 1 and "Traceback" not in err
    assert err == (f"l2rebound: error: cannot write the result to {folder} ([Errno {errno.ENOSPC}] "
                   f"{os.strerror(errno.ENOSPC)}); 1 finished chunk(s) of runs are kept in {partial}: free space or "
                   "fix permissions there and run the same command again to resume from them\n")
    assert sorted(p.name for p in out.iterdir()) == [partial.name]  # no result, no temp folder, no lock
    monkeypatch.undo()

    monkeypatch.setattr(experiments, "train_runs", lambda *args, **kwargs: pytest.fail("trained a kept chunk again"))
    said = []
    resumed_folder, resumed = api.execute(TINY, out, progress=False, say=said.append)
    assert f"resuming from {partial}: trainings 1–2 finished" in said
    assert resumed_folder == folder and sorted(p.name for p in out.iterdir()) == [folder.name]
    assert_same(resumed, result)
    assert_same(store.load(folder), result)


def test_a_chunk_that_cannot_be_kept_during_training_ends_in_one_line(tmp_path, monkeypatch, capsys):
    """The disk fills up between two chunks of runs (one run per chunk here): the first chunk stays."""
    # one run per chunk whatever the device count (the CLI in this process may have asked for one per core)
    monkeypatch.setattr(experiments, "chunk_size", lambda runs: 1)
    write_atomic, writes = store.write_atomic, []

    def second_fails(path, write):
        writes.append(path)
        return no_space() if len(writes) == 2 else write_atomic(path, write)

    monkeypatch.setattr(store, "write_atomic", second_fails)
    out = tmp_path / "out"
    partial = store.Checkpoint(out, TINY).folder
    code, _, err = run_tiny("--out", out)
    assert code == 2 and len(err.splitlines()) == 1 and "Traceback" not in err
    assert err == (f"l2rebound: error: cannot keep a finished chunk of runs in {partial} ([Errno {errno.ENOSPC}] "
                   f"{os.strerror(errno.ENOSPC)}); 1 finished chunk(s) of runs are kept in {partial}: free space or "
                   "fix permissions there and run the same command again to resume from them\n")
    assert sorted(p.name for p in out.iterdir()) == [partial.name] and store.Checkpoint(out, TINY).count() == 1


# ---- damaged files: one StoreError naming the file ---------------------------------------------------

def cut_mid_line(data: bytes) -> bytes:
    return data[: data.index(b"\n", len(data) // 2) + 4]


DAMAGED = {
    "params.npz cut short": ("params.npz", lambda data: data[: len(data) // 2]),
    "params.npz foreign": ("params.npz", lambda data: b"PK\x03\x04 not a zip archive"),
    "trajectory.npz cut short": ("trajectory.npz", lambda data: data[: len(data) // 2]),
    "trajectory.npz empty": ("trajectory.npz", lambda data: b""),
    "metrics.csv cut mid-line": ("metrics.csv", cut_mid_line),
    "metrics.csv garbled": ("metrics.csv", lambda data: data.replace(b"e", b"x")),
    "runs.csv empty": ("runs.csv", lambda data: b""),
    "manifest.json garbled": ("manifest.json", lambda data: data[:20]),
    "manifest.json not an object": ("manifest.json", lambda data: b"[1, 2]"),
    "config.json empty": ("config.json", lambda data: b""),
    "config.json garbled": ("config.json", lambda data: b'{"runs": '),
}


@pytest.mark.parametrize("name, damage", DAMAGED.values(), ids=DAMAGED)
def test_a_damaged_file_is_named_in_one_store_error(name, damage, result, tmp_path):
    folder = store.save(tmp_path, result)
    path = folder / name
    path.write_bytes(damage(path.read_bytes()))
    with pytest.raises(store.StoreError) as error:
        store.load(folder)
    message = str(error.value)
    assert message.startswith(f"{path} cannot be read") and message.endswith("--force") and "\n" not in message


def test_a_table_cut_at_a_line_end_is_named_among_the_files_that_do_not_fit(result, tmp_path):
    folder = store.save(tmp_path, result)
    path = folder / "metrics.csv"
    data = path.read_bytes()
    path.write_bytes(data[: data.index(b"\n", len(data) // 2) + 1])  # whole rows only: it parses, but is short
    with pytest.raises(store.StoreError, match=re.escape(f"{folder} cannot be read back: metrics.csv, runs.csv, "
                                                         "params.npz, trajectory.npz do not fit its config.json")):
        store.load(folder)


def test_a_damaged_stored_result_is_not_reused_silently(result, tmp_path, monkeypatch):
    forbid_training(monkeypatch)
    folder = store.save(tmp_path, result)
    (folder / "params.npz").write_bytes(b"")
    with pytest.raises(store.StoreError, match=re.escape(f"{folder / 'params.npz'} cannot be read back")):
        api.execute(TINY, tmp_path, progress=False)


def test_a_damaged_analysis_names_theory_npz_and_how_to_recompute_it(result, tmp_path):
    folder = store.save(tmp_path, result)
    path = store.save_analysis(folder, {"predicted_l2": np.linspace(0, 1, 1000)})
    path.write_bytes(path.read_bytes()[:300])
    with pytest.raises(store.StoreError) as error:
        store.load_analysis(folder)
    assert str(error.value).startswith(f"{path} cannot be read back (")
    assert str(error.value).endswith(f"delete it, or run `l2rebound analyze {folder} --force` to compute it again")


def test_a_damaged_chunk_of_runs_is_computed_again(tmp_path):
    checkpoint = store.Checkpoint(tmp_path, TINY)
    checkpoint.save("runs-000001-2", {"l2": np.arange(3.0)})
    assert np.array_equal(checkpoint.load("runs-000001-2")["l2"], np.arange(3.0))
    (checkpoint.folder / "runs-000001-2.npz").write_bytes(b"PK\x03\x04")
    assert checkpoint.load("runs-000001-2") is None


# ---- one command at a time per result ----------------------------------------------------------------

def wait_for(condition, seconds: float = 30) -> None:
    deadline = time.monotonic() + seconds
    while not condition():
        assert time.monotonic() < deadline, "timed out"
        time.sleep(0.01)


def test_the_lock_of_a_result_makes_another_holder_wait_and_is_removed(tmp_path):
    events = []

    def second():
        with store.lock(tmp_path, TINY, on_wait=lambda: events.append("waiting")):
            events.append("locked")

    with store.lock(tmp_path, TINY):
        assert store.lock_path(tmp_path, TINY).is_file()
        thread = threading.Thread(target=second)
        thread.start()
        wait_for(lambda: events)
        with store.lock(tmp_path, TINY):  # re-entrant within a thread
            events.append("re-entered")
        time.sleep(0.2)
        assert events == ["waiting", "re-entered"]
    thread.join(30)
    assert events == ["waiting", "re-entered", "locked"]
    assert not store.lock_path(tmp_path, TINY).exists()
    with store.lock(tmp_path, TINY.replace(runs=3)), store.lock(tmp_path, TINY):  # another result: its own lock
        pass


def test_a_save_removes_temp_folders_of_ended_processes_only(result, tmp_path):
    name = store.result_dir(tmp_path, TINY).name
    ended = subprocess.Popen(["true"])
    ended.wait()
    live = subprocess.Popen(["sleep", "60"])
    try:
        folders = {who: tmp_path / f".tmp-{name}-{pid}-x1y2z3" for who, pid in
                   (("live", live.pid), ("ended", ended.pid), ("this process", os.getpid()))}
        folders["an older version"] = tmp_path / f".tmp-{name}-x1y2z3"
        for folder in folders.values():
            folder.mkdir()
            (folder / "metrics.csv").write_text("run,epoch\n")
        store.save(tmp_path, result)
        assert [who for who, folder in folders.items() if folder.exists()] == ["live"]
    finally:
        live.kill()
        live.wait()


def test_a_command_that_waited_reuses_what_the_other_stored_even_with_force(result, tmp_path, monkeypatch):
    """``--force`` recomputes what was stored before it started, not what another command stored while it
    waited for that command (the same config, computed anew)."""
    forbid_training(monkeypatch)
    said, outcome = [], []

    def forced():
        outcome.append(api.execute(TINY, tmp_path, force=True, progress=False, say=said.append))

    with store.lock(tmp_path, TINY):  # as another command computing this result
        thread = threading.Thread(target=forced)
        thread.start()
        wait_for(lambda: said)
        store.save(tmp_path, result)
    thread.join(60)
    folder, reused = outcome[0]
    assert said == [(f"waiting for another l2rebound command that is computing or storing this result "
                     f"({store.lock_path(tmp_path, TINY)})"),
                    f"reusing the result that another command stored in {folder} while this one waited"]
    assert_same(reused, result)
    assert sorted(p.name for p in tmp_path.iterdir()) == [folder.name]


# ---- progress of a computation, as suits where stderr goes ---------------------------------------------

def test_progress_into_a_log_is_a_plain_line_every_ten_seconds():
    now = [100.0]
    stream = io.StringIO()
    with api.LogProgress(5000, stream=stream, clock=lambda: now[0]) as bar:
        for _ in range(50):  # 100 run-epochs every 0.5 s
            now[0] += 0.5
            bar.update(100)
    assert stream.getvalue() == ("l2rebound: 200/5000 run-epochs (4%), 1 s elapsed, ~24 s left\n"
                                 "l2rebound: 2200/5000 run-epochs (44%), 11 s elapsed, ~14 s left\n"
                                 "l2rebound: 4200/5000 run-epochs (84%), 21 s elapsed, ~4 s left\n"
                                 "l2rebound: 5000/5000 run-epochs (100%), 25 s elapsed\n")


def test_quick_work_shows_no_progress():
    now = [0.0]
    stream = io.StringIO()
    with api.LogProgress(10, unit="run", stream=stream, clock=lambda: now[0]) as bar:
        for _ in range(10):
            now[0] += 0.09
            bar.update()
    assert stream.getvalue() == ""


class Terminal(io.StringIO):
    def isatty(self):
        return True


def test_progress_is_a_bar_on_a_terminal_lines_in_a_log_and_nothing_when_off(monkeypatch):
    from tqdm import tqdm

    monkeypatch.setattr(sys, "stderr", Terminal())
    with api.progress_bar(10) as bar:
        assert isinstance(bar, tqdm)
    monkeypatch.setattr(sys, "stderr", io.StringIO())
    with api.progress_bar(10) as bar:
        assert isinstance(bar, api.LogProgress)
    with api.progress_bar(10, enabled=False) as bar:
        bar.update(10)
    assert sys.stderr.getvalue() == ""


def test_durations_read_naturally():
    assert [api._duration(s) for s in (0.4, 59, 119.4, 150, 7199, 7200, 36_000 + 300)] == [
        "0 s", "59 s", "119 s", "2 min", "120 min", "2 h 00 min", "10 h 05 min"]



@pytest.mark.slow
@pytest.mark.parametrize("name", registry.kind_names())
def test_every_kind_computes_and_stores_the_same_numbers_compact(name, tmp_path):
    """Compact: the tables and arrays of the full form, bit for bit, less the students before the last epoch."""
    full = l2rebound.run(example(name), progress=False)
    small = l2rebound.run(example(name).replace(storage="compact"), progress=False)
    expected = full.arrays()
    if "trajectory" in expected:
        epochs, theta = stored_students(small.config, full.kept_epochs, full.kept_theta)
        expected["trajectory"] = {"epochs": epochs, "theta": theta}
    loaded = store.load(store.save(tmp_path, small))
    assert not list(store.result_dir(tmp_path, small.config).glob("*.csv"))
    for got in (small, loaded):
        for stem, columns in full.tables().items():
            assert all(same_bits(got.tables()[stem][column], values) for column, values in columns.items()), stem
        for stem, arrays in expected.items():
            assert all(same_bits(got.arrays()[stem][key], array) for key, array in arrays.items()), stem
