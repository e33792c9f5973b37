"""Command line: ``l2rebound epoch`` and ``l2rebound noise`` run the experiments, ``l2rebound plot``
redraws stored ones.

Every experiment option is generated from a ``Config`` field (its help text, choices and default), so the
config dataclass stays the single source of truth. Bad input ends in one line on stderr and exit code 2.
"""

from __future__ import annotations

import argparse
import dataclasses
import os
import sys
from pathlib import Path

import numpy as np

from l2rebound.config import PRESETS, Config, ConfigError, flag, parse_dims, parse_noise_levels
from l2rebound.fit import STALLED_LIMIT
from l2rebound.store import StoreError

EXIT_USAGE = 2


class _Parser(argparse.ArgumentParser):
    """argparse that reports a usage error in one line (no usage dump) with exit code 2."""

    def error(self, message: str):
        self.exit(EXIT_USAGE, f"{self.prog}: error: {message}\n")


def _config_options(parser: argparse.ArgumentParser, experiment: str) -> None:
    defaults = Config()
    group = parser.add_argument_group("experiment options (defaults: the seed's table)")
    for f in dataclasses.fields(Config):
        meta = f.metadata
        if meta.get("cli") is False or experiment not in meta.get("experiments", (experiment,)):
            continue  # not an option, or one that this experiment does not use
        default = getattr(defaults, f.name)
        shown = ",".join(map(str, default)) if isinstance(default, tuple) else default
        if f.name == "student_dims":
            shown = "the teacher's"
        group.add_argument(
            flag(f.name), dest=f.name, default=argparse.SUPPRESS, choices=meta["choices"],
            type=_typed(meta["parse"]) if meta["parse"] else str, metavar=_METAVARS.get(meta["parse"]),
            help=f"{meta['help']} [default: {shown}]",
        )


_METAVARS = {parse_dims: "D0,D1,...", parse_noise_levels: "LIST|START:STOP:COUNT", float: "X", int: "N"}


def _typed(parse):
    """Turn a config parser's ConfigError into argparse's own one-line message."""

    def convert(text: str):
        try:
            return parse(text)
        except ConfigError as error:
            raise argparse.ArgumentTypeError(str(error)) from None

    convert.__name__ = parse.__name__  # argparse names the type in its "invalid ... value" message
    return convert


def _build_parser() -> argparse.ArgumentParser:
    parser = _Parser(prog="l2rebound", description="Teacher–student ℓ₂-distance experiments on tanh networks.")
    commands = parser.add_subparsers(dest="command", required=True, parser_class=_Parser)

    epoch = commands.add_parser(
        "epoch", help="ℓ₂ distance and losses vs epoch (the seed's experiments A and B)",
        description="Train R students on data from their teachers and record, for every epoch, the ℓ₂ "
                    "distance to the teacher and the train, test and clean test losses.",
    )
    epoch.add_argument("--preset", choices=sorted(PRESETS), default=None,
                       help="A: perturbed start (p=1e-2), clean data, DRR (alpha=1e-4, beta=10), plain GD; "
                            "B: exact start, sigma=1e-3, vanilla GD. Explicit options override the preset.")
    _config_options(epoch, "epoch")
    _output_options(epoch)

    noise = commands.add_parser(
        "noise", help="ℓ₂ after training vs label noise σ, with a fitted power law (the seed's experiment C)",
        description="One teacher; for each run the same inputs and unit noise z at every level σ (common random "
                    "numbers). Each student starts at the teacher and trains on f(x) + σz; the distances after the "
                    "last epoch are fitted by ℓ₂ ≈ c·σ^k.",
    )
    _config_options(noise, "noise")
    _output_options(noise)
    noise.add_argument("--squared", action="store_true", help="plot and fit ℓ₂² (the seed's quantity) instead of ℓ₂")

    plot = commands.add_parser("plot", help="redraw the figures of a stored result (no training)",
                               description="Redraw figures and the summary from a stored result folder.")
    plot.add_argument("folders", nargs="+", type=Path, metavar="FOLDER", help="result folder(s) OUT/<experiment>-<hash>")
    plot.add_argument("--squared", action="store_true", help="noise results: plot and fit ℓ₂² instead of ℓ₂")

    analyze = commands.add_parser(
        "analyze", help="linear-response theory beside a stored result: Gauss–Newton and Hessian spectra, predicted ℓ₂",
        description="For each run of a stored result, draw its teacher, data and noise again from the config, compute "
                    "the Gauss–Newton matrix (2/n)JᵀJ at the teacher and its eigenvalues, and predict ℓ₂ by "
                    "linearised plain GD: δ_t = (I − ηH)^t δ_0 + H⁺(I − (I − ηH)^t)g, g = (2/n)Jᵀ(σz). The exact "
                    "Hessian is computed for run 1. Writes theory.npz and <stem>_theory.{svg,png} into the folder "
                    "and prints the time constants 1/(ηλ) against the number of epochs. The prediction leaves out "
                    "any regulariser and the projection; it needs --optimizer gd. No training.",
    )
    analyze.add_argument("folders", nargs="+", type=Path, metavar="FOLDER", help="result folder(s) OUT/<experiment>-<hash>")
    analyze.add_argument("--force", action="store_true", help="recompute even if the folder holds an analysis")
    analyze.add_argument("--no-progress", action="store_true", help="no progress bar")

    check = commands.add_parser(
        "check", help="how far stored networks are from leaving the generic class F (exit 1 if one is outside)",
        description="Print, per layer, the smallest |weight|, smallest |bias|, smallest gap between sorted "
                    "|biases| and the weight ratio closest to a small rational ±p/q, for every teacher and "
                    "initial student in a result's params.npz (its dims come from the config.json beside it). "
                    "Exit code 1 when a condition C1-C3 fails.",
    )
    check.add_argument("file", type=Path, metavar="FILE.npz", help="OUT/<experiment>-<hash>/params.npz")
    check.add_argument("--ratio-bound", type=int, default=100, metavar="N",
                       help="largest p and q of the ratios ±p/q that C3 forbids [default: 100]")
    return parser


def _output_options(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--out", type=Path, default=Path("results"), metavar="DIR",
                        help="store root; the result goes to DIR/<experiment>-<hash>/ [default: results]")
    parser.add_argument("--force", action="store_true", help="retrain even if this config's result is stored")
    parser.add_argument("--no-progress", action="store_true", help="no progress bar")


def config_from_args(args: argparse.Namespace, experiment: str) -> Config:
    """Defaults, then the preset, then the options given explicitly."""
    given = {f.name: getattr(args, f.name) for f in dataclasses.fields(Config) if hasattr(args, f.name)}
    return Config(experiment=experiment, **{**PRESETS.get(getattr(args, "preset", None) or "", {}), **given})


def _fail(message: str, code: int = EXIT_USAGE):
    print(f"l2rebound: error: {message}", file=sys.stderr)
    return code


def _warn(message: str) -> None:
    print(message, file=sys.stderr)


def _report_epoch(folder: Path, result, squared: bool) -> int:
    from l2rebound.plots import plot_epoch, summary_table

    config = result.config
    for run, epoch in enumerate(result.diverged_at, start=1):
        if epoch >= 0:
            _warn(f"run {run} diverged at epoch {epoch} (non-finite loss): try a smaller --learning-rate "
                  f"(now {config.learning_rate:g})")
    if np.all(result.diverged_at >= 0):
        return _fail(f"every run diverged; the metrics are stored in {folder}", code=1)
    if config.dtype == "float32" and config.epochs:
        stalled = float(np.nanmean(result.metrics["stalled"][:, 1:]))
        if stalled > STALLED_LIMIT:
            _warn(f"warning: float32: {stalled:.0%} of parameter steps fell below the parameters' precision and "
                  "were rounded away; use --dtype float64")
    for path in plot_epoch(result, folder):
        print(f"figure: {path}")
    print(summary_table(result))
    return 0


def _report_noise(folder: Path, result, squared: bool) -> int:
    from l2rebound.plots import noise_summary, plot_noise

    config = result.config
    diverged = result.diverged_at >= 0
    for level in np.flatnonzero(diverged.any(axis=1)):
        _warn(f"sigma={result.levels[level]:.3g}: {diverged[level].sum()} of {config.runs} runs diverged (first at "
              f"epoch {result.diverged_at[level][diverged[level]].min()}): try a smaller --learning-rate "
              f"(now {config.learning_rate:g})")
    if diverged.all():
        return _fail(f"every run diverged; the metrics are stored in {folder}", code=1)
    if config.dtype == "float32":
        stalled = np.nanmean(result.metrics["stalled"], axis=1)
        low = result.levels[stalled > STALLED_LIMIT]
        if len(low):
            _warn(f"warning: float32: at sigma = {', '.join(f'{v:.3g}' for v in low)} more than "
                  f"{STALLED_LIMIT:.0%} of parameter steps fell below the parameters' precision and were rounded "
                  "away; these levels are marked and left out of the fit (use --dtype float64)")
    for path in plot_noise(result, folder, squared):
        print(f"figure: {path}")
    print(noise_summary(result, squared))
    return 0


def _report(folder: Path, result, squared: bool = False) -> int:
    report = _report_noise if result.config.experiment == "noise" else _report_epoch
    return report(folder, result, squared)


def _run_experiment(args) -> int:
    from l2rebound import store
    from l2rebound.experiments import run_experiment

    config = config_from_args(args, args.command)
    existing = next((p for p in (args.out, *args.out.parents) if p.exists()), None)
    if existing is not None and not existing.is_dir():  # --out, or a folder it would go in, is a file
        return _fail(f"--out must be a directory, but {existing} is a file")
    folder = store.result_dir(args.out, config)
    squared = getattr(args, "squared", False)
    if store.is_finished(folder) and not args.force:
        print(f"reusing the stored result in {folder} (same config; --force retrains)")
        return _report(folder, store.load(folder), squared)
    trainings = config.runs * (len(config.noise_levels) if config.experiment == "noise" else 1)
    print(f"{config.experiment} experiment {config.config_hash()}: {trainings} trainings x {config.epochs} epochs, "
          f"{config.describe()}")
    checkpoint = store.Checkpoint(args.out, config)
    if args.force:
        checkpoint.clear()
    elif checkpoint.count():
        print(f"resuming: {checkpoint.count()} finished chunk(s) of runs found in {checkpoint.folder}")
    try:
        with _progress(trainings * config.epochs, args.no_progress) as bar:
            result = run_experiment(config, on_progress=bar.update, checkpoint=checkpoint)
    except KeyboardInterrupt:
        _warn(f"interrupted: {checkpoint.count()} finished chunk(s) of runs are kept in {checkpoint.folder}; "
              "the same command resumes from there")
        return 130
    folder = store.save(args.out, result)
    checkpoint.clear()
    print(f"stored in {folder}")
    return _report(folder, result, squared)


def _run_plot(args) -> int:
    from l2rebound import store

    for folder in args.folders:
        if not store.is_finished(folder):
            return _fail(f"{folder} is not a finished result folder (no config.json)")
        code = _report(folder, store.load(folder), args.squared)
        if code:
            return code
    return 0


def _run_analyze(args) -> int:
    from l2rebound import store
    from l2rebound.plots import plot_theory, theory_summary
    from l2rebound.theory import analyze

    for folder in args.folders:
        if not store.is_finished(folder):
            return _fail(f"{folder} is not a finished result folder (no config.json)")
        result = store.load(folder)
        if result.config.optimizer != "gd":
            return _fail(f"{folder}: the linear-response theory models plain gradient descent, not "
                         f"--optimizer {result.config.optimizer}")
        if np.all(result.diverged_at >= 0):
            return _fail(f"{folder}: every run diverged, nothing to compare with the theory", code=1)
        analysis = None if args.force else store.load_analysis(folder)
        if analysis is None:
            print(f"analysing {folder}: Gauss–Newton spectrum of each of {result.config.runs} runs, Hessian of run 1")
            try:
                with _progress(result.config.runs, args.no_progress, unit="run") as bar:
                    analysis = analyze(result, bar.update)
            except ValueError as error:
                return _fail(f"{folder}: {error}", code=1)
            store.save_analysis(folder, analysis)
        else:
            print(f"reusing the analysis stored in {folder / 'theory.npz'} (--force recomputes)")
        for path in plot_theory(result, analysis, folder):
            print(f"figure: {path}")
        print(theory_summary(result, analysis))
    return 0


def _run_check(args) -> int:
    from l2rebound import store
    from l2rebound.genericity import format_report, genericity_report, report_generic

    if args.ratio_bound < 1:
        return _fail(f"--ratio-bound must be an integer >= 1 (got {args.ratio_bound})")
    if not args.file.is_file() or not store.is_finished(args.file.parent):
        return _fail(f"{args.file} is not the params.npz of a finished result folder")
    config = store.load_config(args.file.parent)
    failed = 0
    with np.load(args.file) as params:
        for name, dims in (("teacher", config.teacher_dims), ("student_init", config.student_dims)):
            for run, theta in enumerate(np.atleast_2d(params[name]), start=1):
                report = genericity_report(theta, dims, args.ratio_bound)
                print(f"== {name}, run {run}")
                print(format_report(report))
                failed += not report_generic(report)
    print(f"{failed} network(s) outside F" if failed else "every network is in F")
    return 1 if failed else 0


def _progress(total: int, disable: bool, unit: str = "run-epoch"):
    from tqdm import tqdm

    return tqdm(total=total, unit=unit, unit_scale=True, delay=1.0, disable=disable, dynamic_ncols=True)


def cache_compilations(directory: Path | None = None) -> None:
    """Keep XLA's compiled programs on disk (by default under ``$XDG_CACHE_HOME/l2rebound/xla``), so a
    second command with the same shapes skips compiling them."""
    import jax

    base = Path(os.environ.get("XDG_CACHE_HOME", Path.home() / ".cache"))
    jax.config.update("jax_compilation_cache_dir", str(directory or base / "l2rebound" / "xla"))
    jax.config.update("jax_persistent_cache_min_compile_time_secs", 0)


def main(argv: list[str] | None = None) -> int:
    parser = _build_parser()
    args = parser.parse_args(argv)
    cache_compilations()
    try:
        commands = {"check": _run_check, "plot": _run_plot, "analyze": _run_analyze}
        return commands.get(args.command, _run_experiment)(args)
    except (ConfigError, StoreError) as error:
        return _fail(str(error))


if __name__ == "__main__":
    sys.exit(main())
