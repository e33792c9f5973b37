"""Command line: ``l2rebound epoch`` runs the epoch experiment, ``l2rebound plot`` redraws a stored one.

Every option of ``epoch`` is generated from a ``Config`` field (its help text, choices and default), so the
config dataclass stays the single source of truth. Bad input ends in one line on stderr and exit code 2.
"""

from __future__ import annotations

import argparse
import dataclasses
import sys
from pathlib import Path

import numpy as np

from l2rebound.config import PRESETS, Config, ConfigError, flag, parse_dims

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


_METAVARS = {parse_dims: "D0,D1,...", float: "X", int: "N"}


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
    epoch.add_argument("--force", action="store_true", help="retrain even if this config's result is stored")

    plot = commands.add_parser("plot", help="redraw the figures of a stored result (no training)",
                               description="Redraw figures and the summary from a stored result folder.")
    plot.add_argument("folders", nargs="+", type=Path, metavar="FOLDER", help="result folder(s) OUT/<experiment>-<hash>")
    return parser


def _output_options(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--out", type=Path, default=Path("results"), metavar="DIR",
                        help="store root; the result goes to DIR/<experiment>-<hash>/ [default: results]")
    parser.add_argument("--no-progress", action="store_true", help="no progress bar")


def config_from_args(args: argparse.Namespace, experiment: str) -> Config:
    """Defaults, then the preset, then the options given explicitly."""
    given = {f.name: getattr(args, f.name) for f in dataclasses.fields(Config) if hasattr(args, f.name)}
    return Config(experiment=experiment, **{**PRESETS.get(args.preset or "", {}), **given})


def _fail(message: str, code: int = EXIT_USAGE):
    print(f"l2rebound: error: {message}", file=sys.stderr)
    return code


def _report_epoch(folder: Path, result) -> int:
    from l2rebound.plots import plot_epoch, summary_table

    for run, epoch in enumerate(result.diverged_at, start=1):
        if epoch >= 0:
            print(f"run {run} diverged at epoch {epoch} (non-finite loss): try a smaller --learning-rate "
                  f"(now {result.config.learning_rate:g})", file=sys.stderr)
    if np.all(result.diverged_at >= 0):
        return _fail(f"every run diverged; the metrics are stored in {folder}", code=1)
    if result.config.dtype == "float32":
        stalled = float(np.nanmean(result.metrics["stalled"][:, 1:])) if result.config.epochs else 0.0
        if stalled > 0.01:
            print(f"warning: float32: {stalled:.0%} of parameter steps fell below the parameters' precision and "
                  "were rounded away; use --dtype float64", file=sys.stderr)
    for path in plot_epoch(result, folder):
        print(f"figure: {path}")
    print(summary_table(result))
    return 0


def _run_epoch(args) -> int:
    from l2rebound import store
    from l2rebound.experiments import run_epoch_experiment

    config = config_from_args(args, "epoch")
    existing = next((p for p in (args.out, *args.out.parents) if p.exists()), None)
    if existing is not None and not existing.is_dir():  # --out, or a folder it would go in, is a file
        return _fail(f"--out must be a directory, but {existing} is a file")
    folder = store.result_dir(args.out, config)
    if store.is_finished(folder) and not args.force:
        print(f"reusing the stored result in {folder} (same config; --force retrains)")
        return _report_epoch(folder, store.load_epoch(folder))
    print(f"epoch experiment {config.config_hash()}: {config.runs} runs x {config.epochs} epochs, "
          f"{', '.join(f'{k}={v}' for k, v in config.changed_fields().items()) or 'defaults'}")
    with _progress(config.runs * config.epochs, args.no_progress) as bar:
        result = run_epoch_experiment(config, on_progress=bar.update)
    folder = store.save_epoch(args.out, result)
    print(f"stored in {folder}")
    return _report_epoch(folder, result)


def _run_plot(args) -> int:
    from l2rebound import store

    for folder in args.folders:
        if not store.is_finished(folder):
            return _fail(f"{folder} is not a finished result folder (no config.json)")
        config = store.load_config(folder)
        if config.experiment != "epoch":
            return _fail(f"{folder}: unknown experiment {config.experiment!r}")
        code = _report_epoch(folder, store.load_epoch(folder))
        if code:
            return code
    return 0


def _progress(total: int, disable: bool):
    from tqdm import tqdm

    return tqdm(total=total, unit="run-epoch", unit_scale=True, delay=1.0, disable=disable, dynamic_ncols=True)


def main(argv: list[str] | None = None) -> int:
    parser = _build_parser()
    args = parser.parse_args(argv)
    try:
        if args.command == "epoch":
            return _run_epoch(args)
        return _run_plot(args)
    except ConfigError as error:
        return _fail(str(error))


if __name__ == "__main__":
    sys.exit(main())
