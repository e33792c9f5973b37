"""Sweeps: the grid's parsing and refusals, packing (a packed cell is bit for bit the config run alone), the
sweep's folder and figures, reuse of stored cells, and the Dask engine surviving a killed worker."""

import json
import os
import signal
import threading
import time

import numpy as np
import pytest
from conftest import TINY, run_cli

import l2rebound
from l2rebound import engines, store, sweeps
from l2rebound.config import ConfigError
from l2rebound.grid import MAX_CELLS, cell_configs, coordinates, make_axis, parse_axis
from l2rebound.kinds.epoch.engine import run as run_epoch_experiment
from l2rebound.kinds.epoch.engine import run_cells as run_epoch_cells

COMPACT = TINY.replace(storage=sweeps.CELL_STORAGE)
"""TINY as a sweep stores its cells by default."""
CLI_TINY = ["--teacher-dims", "2,4,1", "--dataset-size", "64", "--test-set-size", "16", "--epochs", "5", "--runs", "2",
            "--initial-permut", "1e-2", "--no-progress"]


# ------------------------------------------------------------------------------------------------- grid


def test_axes_parse_lists_ranges_and_dims():
    assert parse_axis("learning-rate=1e-3,1e-2") == ("learning_rate", (1e-3, 1e-2), False)
    assert parse_axis("learning_rate=1e-4:1e-1:4").values == pytest.approx((1e-4, 1e-3, 1e-2, 1e-1))
    assert parse_axis("learning-rate=1e-4:1e-1:4").log
    assert parse_axis("epochs=10:40:4").values == (10, 20, 30, 40)
    assert parse_axis("teacher-dims=2,4,1/2,8,1").values == ((2, 4, 1), (2, 8, 1))
    assert parse_axis("optimizer=gd,adam").values == ("gd", "adam")


@pytest.mark.parametrize("spec, message", [
    ("speed=1,2", "no config field 'speed'"),
    ("learning-rate=fast", "'fast' is not a value of --learning-rate"),
    ("optimizer=gd,sgd", None),  # refused by the config, naming the cell
    ("learning-rate=", "expects FIELD=V1,V2"),
    ("learning-rate=1e-3,1e-3", "repeated value"),
    ("epochs=1:3:5", "5 integers do not fit"),
    ("learning-rate=1:0.1:3", "START < STOP"),
])
def test_bad_axes_are_refused_naming_the_field(spec, message):
    with pytest.raises(ConfigError, match=message or "cell optimizer=sgd: --optimizer must be one of"):
        cell_configs(TINY, [parse_axis(spec)])


def test_fields_the_set_up_does_not_use_are_refused():
    with pytest.raises(ConfigError, match="the vanilla rule does not use it"):
        cell_configs(TINY, [make_axis("alpha", [1e-4, 1e-3])])
    with pytest.raises(ConfigError, match="--grid: sweep the noise level with noise-sigma"):
        parse_axis("noise-levels=1e-3,1e-2")
    with pytest.raises(ConfigError, match="margin is only used with --projection margin"):
        cell_configs(TINY, [make_axis("margin", [1e-3, 1e-2])])


def test_product_zip_and_the_cell_limit():
    lr, alpha, seed = make_axis("learning_rate", [0.1, 0.2]), make_axis("alpha", [1, 2]), make_axis("seed", [5, 6, 7])
    assert len(coordinates([lr, alpha, seed])) == 12
    zipped = coordinates([lr, alpha, seed], [("learning-rate", "alpha")])
    assert len(zipped) == 6 and {(c["learning_rate"], c["alpha"]) for c in zipped} == {(0.1, 1), (0.2, 2)}
    with pytest.raises(ConfigError, match="differ in length"):
        coordinates([lr, seed], [("learning_rate", "seed")])
    many = make_axis("seed", list(range(MAX_CELLS + 1)))
    with pytest.raises(ConfigError, match="--yes"):
        cell_configs(TINY, [many])


def test_pieces_group_by_what_compiles_and_split_for_workers():
    cells = [TINY.replace(learning_rate=lr) for lr in (0.01, 0.02, 0.03, 0.04)] + [TINY.replace(epochs=6)]
    assert [len(p) for p in engines.pieces(cells)] == [4, 1]
    assert [len(p) for p in engines.pieces(cells, parts=2)] == [2, 2, 1]
    # each group is capped by what its own configs need: here 2 runs for TINY's, 4 for the longer ones
    longer = [TINY.replace(epochs=6, learning_rate=lr) for lr in (0.01, 0.02, 0.03)]
    limit = {5: 2, 6: 4}
    assert [len(p) for p in engines.pieces(cells[:2] + longer, max_runs=lambda c: limit[c.epochs])] == [1, 1, 2, 1]
    assert make_axis("teacher_dims", ["2,4,1", (2, 8, 1)]).values == ((2, 4, 1), (2, 8, 1))
    with pytest.raises(ConfigError, match="teacher-dims"):
        make_axis("teacher_dims", [3])


# ---------------------------------------------------------------------------------------------- packing


@pytest.mark.parametrize("dtype", ["float64", "float32"])
def test_a_packed_cell_is_bit_for_bit_the_config_run_alone(dtype):
    # the default network on enough samples for XLA's results to depend on a chunk's size, had chunks mixed cells
    base = TINY.replace(teacher_dims=(2, 25, 25, 1), dataset_size=500, test_set_size=100, epochs=30, runs=3,
                        dtype=dtype)
    cells = [base, base.replace(initial_permut=1e-3), base.replace(learning_rate=2e-2, runs=12, seed=7)]
    for config, packed in zip(cells, run_epoch_cells(cells)):
        alone = run_epoch_experiment(config)
        for name in alone.metrics:
            np.testing.assert_array_equal(packed.metrics[name], alone.metrics[name], err_msg=name)
        np.testing.assert_array_equal(packed.kept_theta, alone.kept_theta)
        np.testing.assert_array_equal(packed.student_init, alone.student_init)


def test_cells_that_differ_in_shape_cannot_pack():
    with pytest.raises(ValueError, match="more than traced fields"):
        run_epoch_cells([TINY, TINY.replace(epochs=6)])


# -------------------------------------------------------------------------------------- sweeps stored


@pytest.fixture(scope="module")
def swept(tmp_path_factory):
    out = tmp_path_factory.mktemp("sweep")
    code, text, err = run_cli("sweep", *CLI_TINY, "--grid", "learning-rate=1e-2,3e-2", "--grid", "seed=1:3:2",
                              "--out", out)
    assert code == 0, err
    return out, text


def test_a_sweep_stores_cells_as_ordinary_results_and_a_summary(swept):
    out, text = swept
    folder = next(out.glob("sweep-*"))
    description = json.loads((folder / "sweep.json").read_text())
    assert len(description["cells"]) == 4 and all((out / f"epoch-{h}").is_dir() for h in description["cells"])
    frame = l2rebound.sweeps.load(folder).frame()
    assert len(frame) == 4 * 2 and list(frame.columns[:2]) == ["learning_rate", "seed"]
    assert list(frame.columns[2:]) == list(sweeps.SUMMARY)
    import pandas as pd

    pd.testing.assert_frame_equal(pd.read_parquet(folder / "summary.parquet"), frame)
    # the cells are what `l2rebound epoch` writes for the same config, compact: it reuses them
    code, out_text, _ = run_cli("epoch", *CLI_TINY, "--learning-rate", "3e-2", "--seed", "3", "--storage", "compact",
                                "--out", out)
    assert code == 0 and "reusing the stored result" in out_text
    cell = store.load(store.result_dir(out, COMPACT.replace(learning_rate=3e-2, seed=3)))
    row = frame[(frame.learning_rate == 3e-2) & (frame.seed == 3) & (frame.run == 1)]
    assert row.l2_final.iloc[0] == cell.metrics["l2"][0, -1]
    assert row.rebound.iloc[0] == pytest.approx(cell.metrics["l2"][0, -1] / np.min(cell.metrics["l2"][0]))


def test_a_sweep_run_again_reuses_every_cell_and_plot_redraws(swept, monkeypatch):
    out, _ = swept
    monkeypatch.setattr(engines, "compute_cells", lambda *a, **k: pytest.fail("a stored cell was trained again"))
    code, text, err = run_cli("sweep", *CLI_TINY, "--grid", "learning-rate=1e-2,3e-2", "--grid", "seed=1:3:2",
                              "--out", out)
    assert code == 0, err
    assert "4 stored, 0 to train" in text
    folder = next(out.glob("sweep-*"))
    for figure in folder.glob("sweep_*"):
        figure.unlink()
    code, text, err = run_cli("plot", folder)
    assert code == 0 and len(list(folder.glob("sweep_rebound.*"))) == 2


def test_values_are_kept_as_the_field_holds_them_and_zip_takes_either_spelling(tmp_path):
    result = l2rebound.sweep(TINY, {"noise_sigma": [0, 1e-3], "seed": [1, 2]}, zip=[("noise-sigma", "seed")],
                             out=tmp_path, progress=False)
    assert sorted(result.frame().noise_sigma.unique()) == [0.0, 1e-3]  # an int 0 first does not make them ints
    assert result.zipped == (("noise_sigma", "seed"),)
    assert "0 / 1" in [t.get_text() for t in result.figure("l2_final").axes[0].get_xticklabels()]


def test_rebound_is_undefined_where_the_minimum_is_zero():
    # starts at the teacher: ℓ₂ = 0 at epoch 0
    row = sweeps.run_summary(run_epoch_experiment(TINY.replace(initial_permut=0.0)))
    assert np.all(row["l2_min"] == 0) and np.all(np.isnan(row["rebound"]))


def test_the_python_api_sweeps_one_field_and_draws_it(tmp_path):
    result = l2rebound.sweep(TINY, {"learning_rate": [1e-2, 2e-2, 4e-2]}, out=tmp_path, progress=False)
    assert sorted(result.frame().learning_rate.unique()) == [1e-2, 2e-2, 4e-2]
    figure = result.figure("l2_final")
    assert figure.axes[0].get_xlabel() == "learning-rate"


@pytest.mark.parametrize("argv, message", [
    (["--grid", "learning-rate=1e-2,2e-2", "--grid", "seed=1,2", "--grid", "noise-sigma=0,1e-3"], "--facet"),
    (["--grid", "learning-rate=1e-2,2e-2", "--stat", "speed"], "--stat"),
    (["--grid", "learning-rate=1e-2,2e-2", "--workers", "2"], "--workers"),
    (["--grid", "learning-rate=1e-2", "--zip", "learning-rate"], "--zip"),
    (["--grid", "learning-rate=1e-2,2e-2", "--grid", "seed=1,2", "--facet", "nonsense"], "--facet nonsense"),
    (["--grid", "epochs=1:inf:3"], "finite START < STOP"),
    (["--grid", "learning-rate=1e-4:1e-1:100000000000"], "COUNT <="),
    (["--grid", "learning-rate=1e-2,2e-2", "--engine", "dask", "--scheduler", "garbage"], "--scheduler garbage"),
    (["--grid", "learning-rate=-1,1e-2"], "cell learning-rate=-1: --learning-rate must be a finite number > 0"),
])
def test_bad_sweeps_fail_in_one_line_and_write_nothing(argv, message, tmp_path):
    code, _, err = run_cli("sweep", *CLI_TINY, *argv, "--out", tmp_path / "out")
    assert code == 2 and message in err and len(err.strip().splitlines()) == 1, err
    assert not (tmp_path / "out").exists()


def test_a_third_field_is_drawn_as_panels_with_facet(tmp_path):
    code, _, err = run_cli("sweep", *CLI_TINY, "--epochs", "3", "--grid", "learning-rate=1e-2,2e-2", "--grid",
                           "seed=1,2", "--grid", "noise-sigma=0,1e-3", "--facet", "noise-sigma", "--out", tmp_path)
    assert code == 0, err
    figure = sweeps.load(next(tmp_path.glob("sweep-*"))).figure("l2_final")  # the facet is stored with the sweep
    assert sum(ax.get_visible() and bool(ax.images) for ax in figure.axes) == 2
    code, _, err = run_cli("plot", next(tmp_path.glob("sweep-*")))
    assert code == 0, err


# ------------------------------------------------------------------------------------------------- Dask


@pytest.mark.slow
def test_dask_survives_a_killed_worker_with_the_same_numbers(tmp_path):
    distributed = pytest.importorskip("distributed")
    slow = TINY.replace(epochs=400, dataset_size=2000)
    grid = {"learning_rate": [1e-2, 2e-2, 3e-2, 4e-2]}
    local = l2rebound.sweep(slow, grid, out=tmp_path / "local", progress=False).frame()
    with distributed.LocalCluster(n_workers=2, threads_per_worker=1, dashboard_address=None,
                                  env=engines.WORKER_ENV) as cluster, distributed.Client(cluster) as client:
        killed = []

        def kill_one_busy_worker():  # once a piece is being trained, kill the process that trains it
            deadline = time.monotonic() + 60
            while time.monotonic() < deadline and not killed:
                busy = [w for w, tasks in client.processing().items() if tasks]
                if busy:
                    time.sleep(0.5)  # let it start
                    pid = client.run(os.getpid, workers=[busy[0]])[busy[0]]
                    os.kill(pid, signal.SIGKILL)
                    killed.append(pid)
                time.sleep(0.05)

        killer = threading.Thread(target=kill_one_busy_worker, daemon=True)
        killer.start()
        remote = l2rebound.sweep(slow, grid, out=tmp_path / "dask", engine="dask", scheduler=cluster.scheduler_address,
                                 progress=False).frame()
        killer.join()
    assert killed, "no worker was killed: the test did not test anything"
    import pandas as pd

    pd.testing.assert_frame_equal(remote, local)


def test_plot_of_a_sweep_names_the_command_that_recomputes_a_deleted_cell_and_restores_its_summary(tmp_path):
    import shlex
    import shutil

    out = tmp_path / "out"
    code, _, err = run_cli("sweep", *CLI_TINY, "--train", "drr", "--grid", "alpha=1e-4,1e-3", "--grid",
                           "teacher-dims=2,4,1/2,5,1", "--out", out)
    assert code == 0, err
    folder = next(out.glob("sweep-*"))
    summary = {name: (folder / name).read_bytes() for name in ("summary.csv", "summary.parquet")}
    for name in summary:
        (folder / name).unlink()
    code, text, err = run_cli("plot", folder)
    assert code == 0, err
    assert {name: (folder / name).read_bytes() for name in summary} == summary  # restored as they were

    cell = store.result_dir(out, COMPACT.replace(train="drr", alpha=1e-3, teacher_dims=(2, 5, 1)))
    shutil.rmtree(cell)
    code, _, err = run_cli("plot", folder)
    assert code == 2 and len(err.splitlines()) == 1 and "Traceback" not in err
    assert "the cell alpha=0.001, teacher-dims=2,5,1" in err and "--force" not in err
    command = shlex.split(err.split("`")[1])
    assert command[:2] == ["l2rebound", "sweep"]
    code, text, err = run_cli(*command[1:], "--no-progress")
    assert code == 0, err
    assert "3 stored, 1 to train" in text and cell.is_dir() and next(out.glob("sweep-*")) == folder
    assert run_cli("plot", folder)[0] == 0


def test_a_sweep_result_is_one_line_and_a_scalar_grid_is_refused_in_one_line(tmp_path):
    result = l2rebound.sweep(TINY, {"learning_rate": [1e-2, 2e-2]}, out=tmp_path, progress=False)
    assert repr(result) == "SweepResult(epoch over learning_rate: 2 cells, 4 runs; stats rebound, l2_min_epoch)"
    for grid in ({"learning_rate": 1e-2}, {"train": "drr"}):
        with pytest.raises(ConfigError, match=f"--grid {next(iter(grid)).replace('_', '-')}: expects a list"):
            l2rebound.sweep(TINY, grid, out=tmp_path, progress=False)


def test_a_sweep_without_out_is_computed_in_memory_like_run(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("TMPDIR", str(tmp_path / "tmp"))
    (tmp_path / "tmp").mkdir()
    import tempfile

    monkeypatch.setattr(tempfile, "tempdir", None)  # TMPDIR is read again
    grid = {"learning_rate": [1e-2, 2e-2]}
    in_memory = l2rebound.sweep(TINY, grid, progress=False)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["tmp"] and not list((tmp_path / "tmp").iterdir())
    stored = l2rebound.sweep(TINY, grid, out=tmp_path / "out", progress=False)
    assert in_memory.frame().equals(stored.frame())
    with pytest.raises(ConfigError, match="needs out="):
        l2rebound.sweep(TINY, grid, engine="dask", scheduler="tcp://localhost:1", progress=False)


def test_the_recompute_command_names_a_student_wider_than_its_teacher(tmp_path):
    import shlex

    from l2rebound.cli import build_parser, config_from_args
    from l2rebound.config import presets

    base = presets["D"].replace(runs=2, epochs=5, dataset_size=64, test_set_size=16)
    axes = [make_axis("alpha", [0.1, 0.2])]
    line = sweeps.command(base, axes, [], tmp_path)
    assert "--student-dims 2,25,25,1" in line and "--storage full" in line  # not the sweep's default form
    args = build_parser().parse_args(shlex.split(line)[1:])
    again = config_from_args(args, args.cell_experiment or "epoch")
    assert sweeps.sweep_hash(again, axes, []) == sweeps.sweep_hash(base, axes, [])
    assert "--storage" not in sweeps.command(base.replace(storage=sweeps.CELL_STORAGE), axes, [], tmp_path)


# ------------------------------------------------------------------------------------- the cells' form


def test_a_sweep_stores_its_cells_compact_unless_told_to_keep_everything(swept, tmp_path):
    out, _ = swept
    cells = json.loads((next(out.glob("sweep-*")) / "sweep.json").read_text())["cells"]
    for cell in cells:
        folder = out / f"epoch-{cell}"
        assert store.load_config(folder).storage == "compact" and (folder / "metrics.parquet").is_file()
        assert store.load(folder).kept_epochs.tolist() == [TINY.epochs]
    code, _, err = run_cli("sweep", *CLI_TINY, "--grid", "learning-rate=1e-2,3e-2", "--storage", "full", "--out",
                           tmp_path)
    assert code == 0, err
    full = store.load(store.result_dir(tmp_path, TINY.replace(learning_rate=3e-2)))
    assert full.kept_epochs.tolist() == [0, TINY.epochs] and full.config.storage == "full"
    api = l2rebound.sweep(TINY, {"learning_rate": [1e-2, 3e-2]}, out=tmp_path, progress=False)
    assert api.hashes == tuple(c.config_hash() for c in (COMPACT, COMPACT.replace(learning_rate=3e-2)))
    kept = l2rebound.sweep(TINY, {"learning_rate": [1e-2, 3e-2]}, out=tmp_path, progress=False, storage="full")
    assert kept.hashes[1] == full.config.config_hash()
    assert kept.frame().equals(api.frame())  # the same numbers in either form


def test_plot_analyze_and_align_work_on_a_compact_cell(swept, capsys):
    out, _ = swept
    folder = store.result_dir(out, COMPACT.replace(learning_rate=3e-2, seed=3))
    code, text, err = run_cli("plot", folder)
    assert code == 0 and "figure:" in text, err
    code, text, err = run_cli("analyze", next(out.glob("sweep-*")), "--no-progress")
    assert code == 0 and "rebound_predicted" not in err, err
    assert store.load_analysis(folder)["flat_fraction"].shape == (TINY.runs, 1, 3)  # the last epoch's students
    code, text, err = run_cli("align", folder, "--run", "2")
    stored = store.load(folder).metrics["l2_aligned"][1, -1]
    assert code == 0 and f"stored   l2_aligned {stored:.12g}" in text, err
    code, text, err = run_cli("align", folder, "--epoch", "0")
    assert code == 2 and len(err.splitlines()) == 1 and "Traceback" not in err
    assert f"kept epochs of {folder} ({TINY.epochs}), got 0" in err and "again with --storage full" in err
