"""One battery for every registered experiment kind (``registry.kind_names()``: the built-in ones and those of
installed packages, the example plugin's included): each kind's example config (``KindSpec.example``) is run,
stored and read back, tabulated, drawn, summarised without matplotlib, refused with bad input, interrupted and
resumed, and its progress counted. A new kind is tested here with no new test code."""

import dataclasses
import subprocess
import sys

import numpy as np
import pandas as pd
import pytest
from conftest import assert_same_result
from matplotlib.figure import Figure

import l2rebound
from l2rebound import experiments, provenance, registry, store
from l2rebound.config import KIND_FIELDS, Config, ConfigError, choices_of, example, flag
from l2rebound.results import COLUMNS, compute, kind_of

KINDS = registry.kind_names()


@pytest.fixture(scope="module", params=KINDS)
def computed(request):
    return registry.kind(request.param), l2rebound.run(example(request.param), progress=False)


def test_every_kind_is_described_as_data():
    for name in KINDS:
        spec = registry.kind(name)
        assert spec.name == name and spec.help and "\n" not in spec.help and spec.description and spec.views
        assert set(spec.fields) <= set(KIND_FIELDS) and set(spec.required) <= {"align_every"} | set(spec.fields)
        assert not spec.packable or spec.sweepable, name  # packing serves sweeps
        assert example(name).experiment == name


def test_every_kind_round_trips_through_the_store(computed, tmp_path):
    spec, result = computed
    assert isinstance(result, spec.result_type()) and result.manifest["schema"] == provenance.schema_of(result.config)
    loaded = l2rebound.load(result.save(tmp_path))
    assert type(loaded) is type(result) and loaded.config == result.config and loaded.manifest == result.manifest
    pd.testing.assert_frame_equal(loaded.frame(), result.frame())
    for stem, arrays in result.arrays().items():
        for name, array in arrays.items():
            assert np.array_equal(loaded.arrays()[stem][name], array, equal_nan=True), (stem, name)


def test_every_kind_stores_what_its_column_specs_say(computed, tmp_path):
    spec, result = computed
    folder = result.save(tmp_path)
    tables = type(result).table_specs(result.config)
    assert sorted(p.stem for p in folder.glob("*.csv")) == sorted(tables)
    for stem, table in tables.items():
        lines = (folder / f"{stem}.csv").read_text().splitlines()
        assert lines[0].split(",") == list(table.names) and len(lines) == 1 + table.rows, stem
        for column in table.columns:
            values = result.tables()[stem][column.name]
            assert values.dtype.kind == ("i" if column.integer else "f"), (stem, column.name)
    arrays = type(result).array_shapes(result.config)
    assert sorted(p.stem for p in folder.glob("*.npz")) == sorted(arrays)
    for stem, shapes in arrays.items():
        with np.load(folder / f"{stem}.npz") as stored:
            assert {name: stored[name].shape for name in stored.files} == shapes, stem
    counted = sum(t.rows * len(t.columns) for t in tables.values()), sum(
        int(np.prod(s)) for files in arrays.values() for s in files.values())
    assert type(result).stored_values(result.config) == counted


def test_every_kind_gives_a_tidy_frame(computed):
    spec, result = computed
    frame = result.frame()
    config = result.config
    assert frame["run"].dtype == np.int64
    if not set(COLUMNS) <= set(frame.columns):  # a kind whose metrics are not the training engine's (procedure)
        table = type(result).table_specs(config)["metrics"]
        assert list(frame.columns) == list(table.names) and len(frame) == table.rows
        assert all(frame[c.name].dtype == np.int64 for c in table.columns if c.integer)
        return
    rows = frame[frame.phase == "train"] if "phase" in frame.columns else frame  # the training phase's
    assert len(rows) == type(result).trainings(config) * (config.epochs + 1 if spec.curves else 1)
    assert frame["run"].min() == 1 and frame["run"].max() == config.runs
    first_run = result.metrics["l2"][0] if spec.curves else result.metrics["l2"][:, 0]
    np.testing.assert_array_equal(rows[rows.run == 1]["l2"].to_numpy(), first_run)


def test_every_kind_draws_each_view_and_writes_nothing(computed, tmp_path, monkeypatch):
    spec, result = computed
    monkeypatch.chdir(tmp_path)
    for view in spec.views:
        for squared in (False, True):
            assert isinstance(result.figure(view, squared=squared), Figure)
    assert list(tmp_path.iterdir()) == []
    assert "trainings" in repr(result) and str(result.config.epochs) in repr(result)
    with pytest.raises(ValueError, match="views"):
        result.figure("no such view")


def test_every_kind_summarises_without_matplotlib(computed, tmp_path):
    spec, result = computed
    folder = result.save(tmp_path)
    code = ("import sys; sys.modules['matplotlib'] = None; import l2rebound; "
            f"print(l2rebound.load({str(folder)!r}).summary()); "
            "assert not any(m.startswith(('matplotlib', 'jax')) and sys.modules[m] for m in sys.modules)")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip() == result.summary().strip()


@pytest.mark.parametrize("name", KINDS)
def test_every_kind_refuses_the_fields_it_does_not_use(name):
    spec = registry.kind(name)
    unused = [f for f in KIND_FIELDS if f not in spec.fields] + list(spec.ignored)
    fields = {f.name: f for f in dataclasses.fields(Config)}
    for field in unused:
        default = getattr(Config(), field)
        value = {"noise_levels": (1e-3,), "alphas": (1e-3,), "finetune_epochs": 1}.get(field)
        if value is None:
            value = (next(c for c in choices_of(fields[field]) if c != default) if isinstance(default, str)
                     else 2 * default + 1)
        with pytest.raises(ConfigError, match=f"{flag(field)} is not used by the {name} experiment"):
            example(name).replace(**{field: value})
    for field in spec.required:
        with pytest.raises(ConfigError, match=f"the {name} experiment needs {flag(field)} >= 1"):
            example(name).replace(**{field: 0})
    with pytest.raises(ConfigError, match="--runs must be an integer >= 1"):
        example(name).replace(runs=0)


@pytest.mark.slow
@pytest.mark.parametrize("name", KINDS)
def test_every_kind_counts_its_progress_and_resumes_an_interrupted_run_bit_for_bit(name, tmp_path, monkeypatch):
    monkeypatch.setattr(experiments, "CHUNK_RUNS", 1)  # each run a chunk: an interrupt keeps the finished ones
    config = example(name).replace(runs=3)
    total = kind_of(config).run_epochs(config)
    counted = []
    fresh = compute(config, on_progress=counted.append)
    assert sum(counted) == total

    checkpoint = store.Checkpoint(tmp_path, config)
    done = []

    def interrupt(n):
        done.append(n)
        if sum(done) > total // 2:
            raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        compute(config, on_progress=interrupt, checkpoint=checkpoint)
    assert checkpoint.count() >= 1
    resumed_progress = []
    resumed = compute(config, on_progress=resumed_progress.append, checkpoint=checkpoint)
    assert sum(resumed_progress) == total  # kept chunks count as done
    assert_same_result(resumed, fresh)
