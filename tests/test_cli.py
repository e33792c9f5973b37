"""The command line: generated options, presets, the store (reuse, --force, plot), bad input, divergence."""

import dataclasses
import os
import shutil
import subprocess
import sys

import numpy as np
import pytest
from conftest import TINY as TINY_CONFIG
from conftest import run_cli

import l2rebound
from l2rebound import cli, store, theory
from l2rebound.config import PRESETS, Config, choices_of, flag
from l2rebound.kinds import epoch
from l2rebound.kinds.epoch import engine as epoch_engine
from l2rebound.kinds.epoch.result import EpochResult
from l2rebound.results import COLUMNS

# The options of conftest.TINY: JAX compiles once per shape.
TINY = ["--teacher-dims", "2,4,1", "--dataset-size", "64", "--test-set-size", "16", "--epochs", "5", "--runs", "2",
        "--initial-permut", "1e-2", "--no-progress"]
SUMMARY = ("min ℓ₂", "epoch of min ℓ₂", "final ℓ₂", "final/min ratio", "final train loss", "final test loss",
           "final clean test loss", "final aligned ℓ₂", "final normal-form ℓ₂")
CLI_FIELDS = [f for f in dataclasses.fields(Config)  # the options of ``epoch``: fields it uses that are options
              if f.metadata.get("cli") is not False and (not f.metadata.get("per_kind") or f.name in epoch.SPEC.fields)]


def parse(*argv) -> Config:
    return cli.config_from_args(cli.build_parser().parse_args(["epoch", *argv]), "epoch")


def forbid_training(monkeypatch):
    def trained(*args, **kwargs):
        raise AssertionError("the experiment was run")

    monkeypatch.setattr(epoch_engine, "run", trained)


def summary_values(stdout: str) -> dict[str, float]:
    """The mean column of the summary table, by row label."""
    values = {}
    for line in stdout.splitlines():
        for label in SUMMARY:
            if line.startswith(label) and line[len(label):len(label) + 1] == " ":
                values[label] = float(line[len(label):].split("±")[0])
    return values


def expected_summary(result: EpochResult) -> dict[str, float]:
    ok = result.diverged_at == -1
    l2 = result.metrics["l2"][ok]
    final = {name: result.metrics[name][ok, -1] for name in ("train_loss", "test_loss", "clean_test_loss")}
    return {
        "min ℓ₂": l2.min(axis=1).mean(), "epoch of min ℓ₂": l2.argmin(axis=1).mean(), "final ℓ₂": l2[:, -1].mean(),
        "final/min ratio": (l2[:, -1] / l2.min(axis=1)).mean(), "final train loss": final["train_loss"].mean(),
        "final test loss": final["test_loss"].mean(), "final clean test loss": final["clean_test_loss"].mean(),
        "final aligned ℓ₂": result.metrics["l2_aligned"][ok, -1].mean(),
        "final normal-form ℓ₂": result.metrics["l2_normal_form"][ok, -1].mean(),
    }


def assert_summary(stdout: str, result: EpochResult) -> None:
    shown = summary_values(stdout)
    assert set(shown) == set(SUMMARY), stdout
    for label, value in expected_summary(result).items():
        assert shown[label] == pytest.approx(value, rel=1e-3, abs=1e-12), label


def figures(folder):
    return sorted(p.name for p in folder.iterdir() if p.suffix in (".svg", ".png"))


def data_files(folder) -> dict[str, bytes]:
    return {name: (folder / name).read_bytes() for name in ("config.json", "metrics.csv", "runs.csv", "params.npz")}


@pytest.fixture(scope="module")
def stored(tmp_path_factory):
    """A finished tiny result (tests copy it before changing anything)."""
    out = tmp_path_factory.mktemp("store")
    assert cli.main(["epoch", *TINY, "--out", str(out)]) == 0
    return store.result_dir(out, TINY_CONFIG)


@pytest.fixture
def copy(stored, tmp_path):
    """A private copy of the stored result's --out folder: (out, result folder)."""
    out = tmp_path / "out"
    shutil.copytree(stored.parent, out)
    return out, out / stored.name


# ---- options ------------------------------------------------------------------------------------------


def test_help_mentions_every_option(capsys):
    code, out, _ = run_cli("epoch", "--help")
    assert code == 0
    assert len(CLI_FIELDS) > 15
    for f in CLI_FIELDS:
        assert flag(f.name) in out, f.name
    for f in set(dataclasses.fields(Config)) - set(CLI_FIELDS):  # ``experiment``, other experiments' fields
        assert flag(f.name) not in out, f.name
    for option in ("--preset", "--out", "--force", "--no-progress"):
        assert option in out


def test_no_options_give_the_default_config():
    assert parse() == Config()


@pytest.mark.parametrize("field", CLI_FIELDS, ids=lambda f: f.name)
def test_every_config_field_is_an_option(field):
    default = getattr(Config(), field.name)
    if choices_of(field):
        value = next(c for c in choices_of(field) if c != default)
        text = value
    elif field.name.endswith("_dims"):
        value = (2, 30, 30, 1)
        text = "2,30,30,1"
    elif isinstance(default, float):
        value = default * 2 + 0.5
        text = repr(value)
    else:
        value = default + 1
        text = str(value)
    needs = ("--projection", "margin") if field.name == "margin" else ()  # only used with that projection
    assert getattr(parse(*needs, flag(field.name), text), field.name) == value


def test_margin_without_the_margin_projection_is_refused(capsys):
    code, _, err = run_cli("epoch", *TINY, "--margin", "0.01")
    assert code == 2 and err.strip().endswith("--margin is only used with --projection margin")


def test_preset_a_is_its_options():
    a = parse("--preset", "A")
    assert a == parse("--initial-permut", "1e-2", "--noise-sigma", "0", "--train", "drr", "--alpha", "1e-4")
    assert (a.initial_permut, a.noise_sigma, a.train, a.alpha) == (1e-2, 0.0, "drr", 1e-4)
    assert (a.beta, a.rho, a.optimizer, a.learning_rate) == (10.0, 0.0, "gd", 1e-2)
    assert a == Config(**PRESETS["A"])


def test_preset_b_is_exact_start_noisy_vanilla_gd():
    b = parse("--preset", "B")
    assert (b.initial_permut, b.noise_sigma, b.train, b.optimizer) == (0.0, 1e-3, "vanilla", "gd")
    assert b.student_init == "perturb"


@pytest.mark.parametrize("order", ["preset first", "preset last"])
def test_explicit_options_override_the_preset(order):
    explicit = ["--noise-sigma", "1e-3", "--train", "l1", "--learning-rate", "5e-3"]
    argv = ["--preset", "A", *explicit] if order == "preset first" else [*explicit, "--preset", "A"]
    c = parse(*argv)
    assert (c.noise_sigma, c.train, c.learning_rate) == (1e-3, "l1", 5e-3)
    assert (c.initial_permut, c.alpha, c.beta) == (1e-2, 1e-4, 10.0)  # the rest still from the preset


def test_preset_with_override_is_what_gets_stored(tmp_path, capsys):
    code, out, _ = run_cli("epoch", "--preset", "B", *TINY, "--noise-sigma", "0", "--out", tmp_path)
    assert code == 0
    expected = dataclasses.replace(TINY_CONFIG, **{**PRESETS["B"], "noise_sigma": 0.0, "initial_permut": 1e-2})
    folder = store.result_dir(tmp_path, expected)
    assert store.load_config(folder) == expected
    assert f"stored in {folder}" in out


# ---- running and storing ------------------------------------------------------------------------------


def test_epoch_stores_the_result_and_prints_the_summary_last(tmp_path, capsys):
    code, out, err = run_cli("epoch", *TINY, "--out", tmp_path)
    assert code == 0, err
    folder = store.result_dir(tmp_path, TINY_CONFIG)
    assert folder.name == f"epoch-{TINY_CONFIG.config_hash()}"
    assert [p.name for p in tmp_path.iterdir()] == [folder.name]  # no temp folders left
    assert store.load_config(folder) == TINY_CONFIG
    assert "reusing" not in out and f"stored in {folder}" in out

    stem = TINY_CONFIG.figure_stem()
    assert "teacher-dims=2,4,1" in stem and "initial-permut=0.01" in stem and "learning-rate" not in stem
    names = [f"{stem}_{view}.{suffix}" for view in ("absolute", "normalised") for suffix in ("png", "svg")]
    assert figures(folder) == names
    assert (folder / names[0]).read_bytes().startswith(b"\x89PNG")
    assert b"<svg" in (folder / names[1]).read_bytes()[:2000]
    for name in names:
        assert f"figure: {folder / name}" in out

    result = store.load(folder)
    assert result.metrics["l2"].shape == (2, 6) and np.all(result.diverged_at == -1)
    assert_summary(out, result)
    assert out.rstrip().splitlines()[-1].startswith("final clean test loss")  # the table comes at the end
    assert "Traceback" not in err


def test_rerun_reuses_the_stored_result_and_force_retrains(copy, capsys, monkeypatch):
    out, folder = copy
    before = data_files(folder)
    inode = (folder / "metrics.csv").stat().st_ino
    forbid_training(monkeypatch)

    code, text, err = run_cli("epoch", *TINY, "--out", out)
    assert code == 0, err
    assert "reusing" in text and str(folder) in text
    assert data_files(folder) == before and (folder / "metrics.csv").stat().st_ino == inode
    assert_summary(text, store.load(folder))

    monkeypatch.undo()
    real, calls = epoch_engine.run, []

    def counted(config, on_progress=None, checkpoint=None):
        calls.append(config)
        return real(config, on_progress, checkpoint)

    monkeypatch.setattr(epoch_engine, "run", counted)
    code, text, err = run_cli("epoch", *TINY, "--out", out, "--force")
    assert code == 0, err
    assert calls == [TINY_CONFIG] and "reusing" not in text and f"stored in {folder}" in text
    assert (folder / "metrics.csv").stat().st_ino != inode  # written anew ...
    assert data_files(folder) == before  # ... with the same numbers (the experiment is deterministic)
    assert len(figures(folder)) == 4 and [p.name for p in out.iterdir()] == [folder.name]


def test_plot_redraws_the_figures_from_stored_data_only(copy, capsys, monkeypatch):
    _, folder = copy
    names, before = figures(folder), data_files(folder)
    assert len(names) == 4
    for name in names:
        (folder / name).unlink()
    forbid_training(monkeypatch)

    code, out, err = run_cli("plot", folder)
    assert code == 0, err
    assert figures(folder) == names
    assert data_files(folder) == before
    assert_summary(out, store.load(folder))


def test_plot_of_a_folder_without_a_result_fails_in_one_line(tmp_path, capsys):
    code, out, err = run_cli("plot", tmp_path)
    assert code == 2 and len(err.strip().splitlines()) == 1 and str(tmp_path) in err
    assert list(tmp_path.iterdir()) == []


def test_analyze_writes_the_theory_and_reuses_it(copy, capsys, monkeypatch):
    _, folder = copy
    before = data_files(folder)
    forbid_training(monkeypatch)
    code, out, err = run_cli("analyze", folder, "--no-progress")
    assert code == 0, err
    analysis = store.load_analysis(folder)
    assert analysis["predicted_l2"].shape == (2, 6) and analysis["gn_eigenvalues"].shape == (2, 17)
    stem = TINY_CONFIG.figure_stem()
    assert {f"{stem}_theory.png", f"{stem}_theory.svg"} <= set(figures(folder))
    assert "linear response" in out and "unsettled after 5 epochs" in out and data_files(folder) == before

    def recomputed(*args, **kwargs):
        raise AssertionError("the analysis was recomputed")

    monkeypatch.setattr(theory, "analyze", recomputed)
    code, out, err = run_cli("analyze", folder, "--no-progress")
    assert code == 0 and "reusing the analysis" in out, err


def test_analyze_refuses_adam_and_damaged_folders_in_one_line(tmp_path, capsys):
    code, _, err = run_cli("epoch", *TINY, "--optimizer", "adam", "--out", tmp_path)
    assert code == 0, err
    folder = store.result_dir(tmp_path, dataclasses.replace(TINY_CONFIG, optimizer="adam"))
    code, _, err = run_cli("analyze", folder)
    assert code == 2 and err.strip().endswith("models plain gradient descent, not --optimizer adam")
    (folder / "trajectory.npz").write_bytes(b"garbage")
    for command in ("analyze", "plot"):
        code, _, err = run_cli(command, folder)
        assert code == 2 and len(err.strip().splitlines()) == 1 and "cannot be read back" in err, err


# ---- bad input ----------------------------------------------------------------------------------------

BAD = [
    ("--learning-rate", "0"), ("--learning-rate", "-1"), ("--learning-rate", "abc"), ("--learning-rate", "nan"),
    ("--noise-sigma", "-1"), ("--noise-sigma", "-0.5"), ("--noise-sigma", "inf"), ("--initial-permut", "-0.5"),
    ("--teacher-dims", "2,4"), ("--teacher-dims", "2,0,1"), ("--teacher-dims", "2,-4,1"), ("--teacher-dims", "2,x,1"),
    ("--student-dims", "2,3,1"), ("--student-dims", "2,4,4,1"), ("--student-dims", "2,4"),
    ("--dataset-size", "0"), ("--test-set-size", "0"), ("--dataset-size", "1.5"),
    ("--train", "sgd"), ("--optimizer", "sgd"), ("--runs", "0"), ("--runs", "two"), ("--epochs", "-1"),
    ("--beta", "0"), ("--preset", "C"),
]


@pytest.mark.parametrize("option, value", BAD, ids=[f"{o}={v}" for o, v in BAD])
def test_bad_value_fails_in_one_line_and_writes_nothing(option, value, tmp_path, capsys):
    out = tmp_path / "out"
    code, stdout, err = run_cli("epoch", *TINY, option, value, "--out", out)
    assert code == 2
    assert len(err.strip().splitlines()) == 1, err
    assert option in err and "Traceback" not in err
    assert not out.exists()


@pytest.mark.parametrize("below", ["", "sub"], ids=["is a file", "inside a file"])
def test_out_that_is_a_file_fails_in_one_line(below, tmp_path, capsys, monkeypatch):
    forbid_training(monkeypatch)
    file = tmp_path / "results.txt"
    file.write_text("keep me")
    code, _, err = run_cli("epoch", *TINY, "--out", file / below if below else file)
    assert code == 2
    assert len(err.strip().splitlines()) == 1 and "--out" in err and "Traceback" not in err
    assert file.read_text() == "keep me" and list(tmp_path.iterdir()) == [file]


# ---- divergence ---------------------------------------------------------------------------------------


def test_every_run_diverging_exits_1_with_advice_and_stores_the_result(tmp_path, capsys):
    # lr 1e200 overflows to inf within a few epochs (1e3 only grows the loss to ~1e29 in five)
    code, out, err = run_cli("epoch", *TINY, "--learning-rate", "1e200", "--out", tmp_path)
    assert code == 1
    assert "Traceback" not in err
    folder = store.result_dir(tmp_path, dataclasses.replace(TINY_CONFIG, learning_rate=1e200))
    assert store.is_finished(folder)
    result = store.load(folder)
    assert np.all(result.diverged_at >= 1)
    for run, at_epoch in enumerate(result.diverged_at, start=1):
        line = next(line for line in err.splitlines() if line.startswith(f"run {run} "))
        assert f"diverged at epoch {at_epoch}" in line and "smaller --learning-rate" in line
        assert np.isnan(result.metrics["l2"][run - 1, at_epoch:]).all()
    assert "every run diverged" in err and str(folder) in err
    assert "final ℓ₂" not in out  # no summary of nothing


def test_some_runs_diverging_are_named_and_the_rest_summarised(tmp_path, capsys):
    rng = np.random.default_rng(3)
    metrics = {name: rng.uniform(0.5, 2.0, (2, 6)) for name in COLUMNS}
    for values in metrics.values():
        values[1, 3:] = np.nan
    teacher = rng.standard_normal((2, 17))
    config = TINY_CONFIG.replace(align_every=0)  # no students kept
    result = EpochResult(config, metrics, teacher, teacher.copy(), np.array([-1, 3]), np.zeros(0, int),
                         np.zeros((2, 0, 17)))
    folder = store.save(tmp_path, result)

    code, out, err = run_cli("plot", folder)
    assert code == 0, err
    assert "run 2 diverged at epoch 3" in err and "--learning-rate" in err and "run 1 " not in err
    assert "over 1 runs" in out
    assert_summary(out, result)
    assert len(figures(folder)) == 4


# ---- the installed command ----------------------------------------------------------------------------


@pytest.mark.slow
def test_module_entry_point_runs(tmp_path):
    proc = subprocess.run([sys.executable, "-m", "l2rebound.cli", "epoch", *TINY, "--out", str(tmp_path)],
                          capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr
    folder = store.result_dir(tmp_path, TINY_CONFIG)
    assert store.is_finished(folder) and f"stored in {folder}" in proc.stdout


def test_console_script_is_installed():
    script = shutil.which("l2rebound", path=os.path.dirname(sys.executable)) or shutil.which("l2rebound")
    if script is None:
        pytest.skip("the l2rebound console script is not installed")
    proc = subprocess.run([script, "epoch", "--help"], capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr
    assert "--teacher-dims" in proc.stdout and "--preset" in proc.stdout


@pytest.mark.slow
def test_check_reports_stored_networks_and_fails_on_a_zero_bias_teacher(tmp_path, capsys):
    out = str(tmp_path)
    for projection, expected in (("jitter", 0), ("off", 1)):
        code, text, err = run_cli("epoch", *TINY, "--projection", projection, "--out", out)
        assert code == 0, err
        folder = next(p for p in tmp_path.iterdir() if p.name.startswith("epoch-")
                      and store.load_config(p).projection == projection)
        code, text, err = run_cli("check", str(folder / "params.npz"))
        assert code == expected, text + err
        assert text.count("== teacher") == 2 and text.count("== student_init") == 2
        assert run_cli("check", str(folder)) == (code, text, err)  # the folder itself, as plot and align take it
        if expected:  # zero biases (the seed's init) without the projection: C1 fails
            assert "VIOLATED" in text and "outside F" in text
    code, _, err = run_cli("check", str(tmp_path / "missing.npz"))
    assert code == 2 and len(err.strip().splitlines()) == 1


def test_a_bare_command_lists_the_commands_and_version_says_which():
    code, out, err = run_cli()
    assert code == 0 and not err
    for command in ("epoch", "noise", "compress", "reproduce", "sweep", "align", "plot", "analyze", "check"):
        assert command in out
    code, out, _ = run_cli("--version")
    assert code == 0 and out.strip() == f"l2rebound {l2rebound.__version__}"


def test_a_negative_option_value_gets_the_option_own_refusal(tmp_path):
    code, _, err = run_cli("noise", "--noise-levels", "-1,1", "--out", tmp_path)
    assert code == 2 and "--noise-levels must be one or more finite numbers > 0" in err
    code, _, err = run_cli("epoch", "--learning-rate", "-0.5", "--out", tmp_path)
    assert code == 2 and "--learning-rate must be a finite number > 0" in err and "expected one argument" not in err
    assert not any(tmp_path.iterdir())


def help_of(command: str) -> str:
    code, out, _ = run_cli(command, "--help")
    assert code == 0
    return " ".join(out.split())


def test_help_lists_only_what_the_command_takes():
    reproduce = help_of("reproduce")
    assert "--prune-threshold" not in reproduce  # the compress experiment's only
    assert "--noise-levels" in reproduce and "--noise-sigma" in reproduce and "--alphas" in reproduce
    assert "--initial-permut" in reproduce and "--initial-permut" not in help_of("procedure")  # ignored there
    assert "(the compress experiment needs >= 1)" in help_of("compress")
    noise = help_of("noise")
    assert noise.count("[default: the original 25 levels") == 1 and "1.6150000000000003e-05" not in noise


class _Interrupting:
    """A progress bar whose ``stop_at``-th update is a Ctrl-C."""

    def __init__(self, stop_at: int):
        self.stop_at, self.updates = stop_at, 0

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        return None

    def update(self, n):
        self.updates += 1
        if self.updates == self.stop_at:
            raise KeyboardInterrupt


def test_ctrl_c_says_exactly_what_it_kept_and_the_same_command_resumes_from_it(tmp_path, monkeypatch):
    from l2rebound import api, experiments

    argv = ["epoch", *TINY, "--runs", "10", "--epochs", "250", "--out", tmp_path]  # one chunk of 6 blocks
    config = TINY_CONFIG.replace(runs=10, epochs=250)
    partial = store.Checkpoint(tmp_path, config)
    monkeypatch.setattr(api, "progress_bar", lambda total, enabled=True: _Interrupting(2))
    code, _, err = run_cli(*argv)
    kept = int(partial.load("runs-000001-10")["epochs_done"])
    assert code == 130 and 2 * 42 <= kept < 250
    assert err == (f"interrupted: kept in {partial.folder}: trainings 1–10 trained to epoch {kept} of 250; the same "
                   "command resumes from there\n")
    monkeypatch.undo()
    code, out, _ = run_cli(*argv)
    assert code == 0 and f"resuming from {partial.folder}: trainings 1–10 trained to epoch {kept} of 250" in out
    assert not partial.folder.exists()

    def interrupted_set_up(*args):
        raise KeyboardInterrupt

    monkeypatch.setattr(experiments, "_setup_rows", interrupted_set_up)
    code, _, err = run_cli(*argv, "--force")
    assert code == 130 and not partial.folder.exists()
    assert err == "interrupted before any block of epochs finished: nothing was kept; the same command starts over\n"

    def interrupted_load(*args):
        raise KeyboardInterrupt

    monkeypatch.setattr(store, "load", interrupted_load)  # Ctrl-C while a stored result is read back
    code, _, err = run_cli(*argv)
    assert code == 130 and "the result is stored in" in err and "nothing was kept" not in err
