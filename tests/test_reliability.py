"""Bad input and damaged files end in one line and a documented exit code, never a traceback, and nothing
is written on a refusal: seeds, noise levels, memory, long names, ``check``, and random option strings."""

import shutil
import tempfile
from pathlib import Path

import numpy as np
import pytest
from conftest import TINY, run_cli
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import l2rebound
from l2rebound import cli, store
from l2rebound.config import SEED_LIMIT, STEM_BYTES, Config, ConfigError

TINY_ARGS = ["--teacher-dims", "2,4,1", "--dataset-size", "64", "--test-set-size", "16", "--epochs", "5", "--runs",
             "2", "--initial-permut", "1e-2", "--no-progress"]


def one_error_line(err: str) -> bool:
    lines = [line for line in err.splitlines() if line.strip()]
    return len(lines) == 1 and lines[0].startswith("l2rebound") and "error" in lines[0]


@pytest.mark.parametrize("seed, runs, accepted", [
    (0, 1, True), (SEED_LIMIT - 2, 2, True), (SEED_LIMIT - 1, 2, False), (-1, 1, False), (2**64, 1, False),
])
def test_seeds_have_a_documented_range(seed, runs, accepted):
    if accepted:
        assert Config(seed=seed, runs=runs).seed == seed
    else:
        with pytest.raises(ConfigError,
                           match=r"--seed must be an integer (with 0 <= seed and seed \+ runs <= 2\^53|below)"):
            Config(seed=seed, runs=runs)


def test_the_largest_seeds_are_recorded_exactly(tmp_path):
    config = TINY.replace(seed=SEED_LIMIT - TINY.runs, epochs=1)
    folder = store.save(tmp_path, l2rebound.run(config, progress=False))
    text = (folder / "runs.csv").read_text().splitlines()
    assert [int(line.split(",")[1]) for line in text[1:]] == [SEED_LIMIT - 1, SEED_LIMIT]


@pytest.mark.parametrize("levels, message", [
    ("1e-3,1e-2,1e-3", "must not repeat a level"), ("1e-3,nan", "finite numbers > 0"), ("1e-3,inf", "finite numbers"),
])
def test_repeated_or_non_finite_noise_levels_are_refused(tmp_path, levels, message):
    code, _, err = run_cli("noise", "--noise-levels", levels, "--out", tmp_path / "out")
    assert code == 2 and one_error_line(err) and message in err
    assert not (tmp_path / "out").exists()


def test_a_config_too_large_for_the_machine_is_refused_before_anything_is_written(tmp_path):
    with pytest.raises(ConfigError, match="GiB of memory and the machine has"):
        l2rebound.run(teacher_dims=(2, 30000, 30000, 1), progress=False)
    code, _, err = run_cli("epoch", "--teacher-dims", "2,30000,30000,1", "--out", tmp_path / "out", "--no-progress")
    assert code == 2 and one_error_line(err)  # the store's check for room on disk may speak first
    assert not (tmp_path / "out").exists()


def test_long_figure_names_are_bounded_and_such_results_redraw(tmp_path):
    config = TINY.replace(teacher_dims=(2, 3, 3, 3, 3, 3, 3, 3, 3, 3, 3, 3, 3, 3, 3, 3, 3, 3, 3, 3, 1),
                          learning_rate=0.0123456789, noise_sigma=0.000123456789, initial_permut=0.0314159265,
                          alpha=0.000271828, beta=12.3456789, rho=0.00101, train="drr", optimizer="adam",
                          seed=123456789,
                          projection_frequency=3, perturbation="normal", bias_init="uniform", align_every=2)
    stem = config.figure_stem()
    assert len(stem.encode()) <= STEM_BYTES and stem.endswith("_cfg-" + config.config_hash()[:8])
    assert stem.startswith("epoch_teacher-dims=2,3,3")
    assert len(TINY.figure_stem().encode()) < STEM_BYTES and "_cfg-" not in TINY.figure_stem()  # short ones whole
    argv = ["epoch", "--no-progress", "--out", tmp_path]
    for name, value in config.changed_fields().items():
        argv += ["--" + name.replace("_", "-"), ",".join(map(str, value)) if isinstance(value, tuple) else value]
    code, out, err = run_cli(*argv)
    assert code == 0, err
    folder = store.result_dir(tmp_path, config)
    assert all(len(p.name.encode()) < 255 for p in folder.iterdir())
    code, out, err = run_cli("plot", folder, "--squared")
    assert code == 0, err
    assert f"figure: {folder / stem}_absolute_l2sq.png" in out


@pytest.fixture(scope="module")
def stored(tmp_path_factory):
    out = tmp_path_factory.mktemp("stored")
    code, _, err = run_cli("epoch", *TINY_ARGS, "--out", out)
    assert code == 0, err
    return store.result_dir(out, TINY)


@pytest.fixture
def copy(stored, tmp_path):
    folder = tmp_path / stored.name
    shutil.copytree(stored, folder)
    return folder


def damage(folder: Path, how: str) -> None:
    """Break one file of a result folder the way a crash, a full disk or a wrong copy would."""
    if how == "truncated params":
        data = (folder / "params.npz").read_bytes()
        (folder / "params.npz").write_bytes(data[: len(data) // 2])
    elif how == "foreign params":
        (folder / "params.npz").write_text("not a zip archive")
    elif how == "params of another size":
        np.savez(folder / "params.npz", teacher=np.zeros((2, 5)), student_init=np.zeros((2, 5)))
    elif how == "empty config":
        (folder / "config.json").write_text("")
    elif how == "garbled config":
        (folder / "config.json").write_text('{"teacher_dims": [2, 4, 1], "runs": "two"')
    elif how == "config of another program":
        (folder / "config.json").write_text('{"model": "resnet"}')


@pytest.mark.parametrize("how", ["truncated params", "foreign params", "params of another size", "empty config",
                                 "garbled config", "config of another program"])
def test_check_says_in_one_line_when_it_cannot_read_a_result(copy, how):
    damage(copy, how)
    code, out, err = run_cli("check", copy / "params.npz")
    assert code == 2 and one_error_line(err), err
    assert "params.npz" in err or "config.json" in err


@pytest.mark.parametrize("how", ["empty config", "garbled config", "config of another program"])
def test_plot_and_analyze_say_in_one_line_when_the_config_is_damaged(copy, how):
    damage(copy, how)
    for command in ("plot", "analyze"):
        code, out, err = run_cli(command, copy)
        assert code == 2 and one_error_line(err) and "config.json" in err, (command, err)


@pytest.mark.parametrize("bound", [0, 1001, 100000, 1, 1000])
def test_check_exit_codes_and_the_bounded_ratio(stored, bound):
    code, out, err = run_cli("check", stored / "params.npz", "--ratio-bound", bound)
    if 1 <= bound <= 1000:  # a verdict: 0 every network is in F, 1 one is outside
        verdict = 0 if "every network is in F" in out else 1 if "network(s) outside F" in out else None
        assert code == verdict, out + err
    else:
        assert code == 2 and one_error_line(err) and "--ratio-bound must be an integer from 1 to 1000" in err


def test_check_of_a_generic_network_is_0(tmp_path):
    code, _, err = run_cli("epoch", *TINY_ARGS, "--bias-init", "uniform", "--out", tmp_path)
    assert code == 0, err
    code, out, err = run_cli("check", store.result_dir(tmp_path, TINY.replace(bias_init="uniform")) / "params.npz")
    assert code == 0 and "every network is in F" in out, out + err


# ---- random option strings ---------------------------------------------------------------------------
VALUES = ["0", "1", "2", "3", "-1", "0.5", "1e-3", "1e-400", "1e400", "nan", "inf", "-inf", "", "abc", "2,3,1",
          "2,0,1", "3,2,2,1", "1", "2,3", "1e-3,1e-2", "1e-3,1e-3", "1e-5:1:3", "1:1e-5:3", "2**64",
          "18446744073709551616", "9007199254740993", "uniform", "normal", "drr", "adam", "float32", "margin", "off"]
OPTIONS = sorted({action.option_strings[0] for command in ("epoch", "noise")
                  for action in cli.build_parser()._subparsers._group_actions[0].choices[command]._actions
                  if action.option_strings and action.option_strings[0] not in ("-h", "--out", "--no-progress")}
                 | {"--bogus"})


@pytest.mark.slow
@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.too_slow], derandomize=True)
@given(command=st.sampled_from(["epoch", "noise"]),
       options=st.lists(st.tuples(st.sampled_from(OPTIONS), st.sampled_from(VALUES)), max_size=4))
def test_random_option_strings_exit_0_or_2_and_write_nothing_on_2(command, options):
    # a tiny problem first, so that what trains trains fast; the random options come after and override it
    argv = [command, "--teacher-dims", "2,3,1", "--dataset-size", "8", "--test-set-size", "4", "--epochs", "2",
            "--runs", "1", "--noise-levels", "1e-2,1e-1"]
    for option, value in options:
        argv += [option] if option in ("--force", "--squared") else [option, value]
    out = Path(tempfile.mkdtemp()) / "out"
    try:
        code, _, err = run_cli(*argv, "--out", out, "--no-progress")
        assert code in (0, 2), (argv, code, err)
        if code == 2:
            assert one_error_line(err), (argv, err)
            assert not out.exists(), argv
    finally:
        shutil.rmtree(out.parent, ignore_errors=True)


def test_the_kept_epochs_are_counted_without_listing_them():
    from l2rebound.results import kept_count, kept_epochs

    for epochs in range(0, 40):
        for every in (0, 1, 3, 7, 10, 50):
            config = Config(epochs=epochs, align_every=every)
            assert kept_count(config) == len(kept_epochs(config)), (epochs, every)


def test_absurdly_many_epochs_are_refused_at_once_without_filling_the_memory(tmp_path):
    code, _, err = run_cli("epoch", *TINY_ARGS, "--epochs", "3000000000", "--out", tmp_path / "out")
    assert code == 2 and one_error_line(err) and not (tmp_path / "out").exists()


def test_a_kept_chunk_that_does_not_fit_is_computed_again(tmp_path):
    out = tmp_path / "out"
    reference = l2rebound.run(TINY, progress=False)
    checkpoint = store.Checkpoint(out, TINY)
    chunk = {k: v[:1] for k, v in {"l2": reference.metrics["l2"], "teacher": reference.teacher}.items()}
    checkpoint.save(f"runs-000001-{TINY.runs}", chunk)  # one run, two names: kept by some other version
    again = l2rebound.run(TINY, out=out, progress=False)
    np.testing.assert_array_equal(again.metrics["l2"], reference.metrics["l2"])


def test_a_runs_table_of_the_wrong_length_is_a_store_error(copy):
    lines = (copy / "runs.csv").read_text().splitlines()
    (copy / "runs.csv").write_text("\n".join(lines[:-1]) + "\n")
    with pytest.raises(store.StoreError, match="runs.csv"):
        l2rebound.load(copy)


def test_an_infinite_number_in_config_json_is_one_line(copy):
    (copy / "config.json").write_text((copy / "config.json").read_text().replace('"runs": 2', '"runs": Infinity'))
    code, _, err = run_cli("plot", copy)
    assert code == 2 and one_error_line(err) and "config.json" in err


def test_figures_that_cannot_be_written_end_in_one_line(copy, monkeypatch):
    def full(path, write):
        raise OSError(28, "No space left on device", str(path))

    monkeypatch.setattr("l2rebound.plots.write_atomic", full)
    code, _, err = run_cli("plot", copy)
    assert code == 2 and one_error_line(err) and "No space left on device" in err


def test_an_overlong_path_is_one_line(tmp_path):
    code, _, err = run_cli("epoch", *TINY_ARGS, "--out", tmp_path / ("x" * 300))
    assert code == 2 and one_error_line(err)
    code, _, err = run_cli("plot", tmp_path / ("x" * 300))
    assert code == 2 and one_error_line(err)


def test_the_lock_is_taken_once_per_thread_however_the_folder_is_spelled(tmp_path, monkeypatch):
    import threading

    monkeypatch.chdir(tmp_path)
    done = []

    def nested():
        with store.lock(Path("out"), TINY), store.lock(tmp_path / "out", TINY):
            done.append(True)

    thread = threading.Thread(target=nested, daemon=True)
    thread.start()
    thread.join(timeout=20)
    assert done, "the second spelling of the same lock waited for the first"


def test_a_kept_chunk_that_comes_first_and_does_not_fit_is_computed_again(tmp_path):
    out = tmp_path / "out"
    reference = l2rebound.run(TINY, progress=False)
    chunk = {**{name: values for name, values in reference.metrics.items()}, "teacher": reference.teacher,
             "student_init": reference.student_init, "diverged_at": reference.diverged_at,
             "kept_theta": reference.kept_theta[:, :1], "extra": reference.diverged_at}
    store.Checkpoint(out, TINY).save(f"runs-000001-{TINY.runs}", chunk)  # the only chunk: nothing to compare with
    again = l2rebound.run(TINY, out=out, progress=False)
    np.testing.assert_array_equal(again.kept_theta, reference.kept_theta)


def test_plot_from_inside_a_result_folder_locks_in_the_store_root(copy, monkeypatch):
    taken = []
    real = store.lock

    def spy(out, config, on_wait=None):
        taken.append(Path(out))
        return real(out, config, on_wait)

    monkeypatch.setattr(store, "lock", spy)
    monkeypatch.chdir(copy)
    code, _, err = run_cli("plot", ".")
    assert code == 0, err
    assert taken == [copy.parent]
