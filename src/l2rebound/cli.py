"""Command line: one command per experiment kind (``l2rebound epoch``, ``l2rebound noise``) runs it;
``reproduce`` re-creates a published figure, ``sweep`` runs a grid of epoch or compress experiments; ``plot``,
``analyze``, ``check`` and ``align`` work on stored results.

Every experiment option is generated from a ``Config`` field (its help text, choices and default), so the
config dataclass stays the single source of truth. Bad input ends in one line on stderr and exit code 2.
The CLI owns its process: before it trains it configures JAX for it (``configure_process``); ``--help``
and ``plot`` never load the engine.
"""

from __future__ import annotations

import argparse
import contextlib
import dataclasses
import os
import sys
import zipfile
from pathlib import Path

import numpy as np

from l2rebound import store
from l2rebound.config import PRESETS, Config, ConfigError, build, flag, parse_dims, parse_noise_levels
from l2rebound.grid import MAX_CELLS
from l2rebound.results import KINDS, EpochResult
from l2rebound.store import StoreError
from l2rebound.sweeps import COMPRESSION_SUMMARY, DEFAULT_COMPRESSION_STATS, DEFAULT_STATS, STATS

SWEPT = ("epoch", "compress")
"""The experiments a sweep can run per cell."""

EXIT_USAGE = 2
PUBLISHED = sorted(name.removeprefix("seed-") for name in PRESETS if name.startswith("seed-"))
"""The published figures that ``reproduce`` re-creates: X for each preset ``seed-X``."""


class _Parser(argparse.ArgumentParser):
    """argparse that reports a usage error in one line (no usage dump) with exit code 2."""

    def error(self, message: str):
        self.exit(EXIT_USAGE, f"{self.prog}: error: {message}\n")


def _config_options(parser: argparse.ArgumentParser, experiments: tuple[str, ...] | None,
                    title: str = "experiment options (defaults: the table of the ℓ₂-Experiments README)") -> None:
    """One option per config field that one of ``experiments`` uses (None: every field)."""
    defaults = Config()
    group = parser.add_argument_group(title)
    for f in dataclasses.fields(Config):
        meta = f.metadata
        used = meta.get("experiments")
        if meta.get("cli") is False or experiments and used and not set(used) & set(experiments):
            continue  # not an option, or one that these experiments do not use
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

    for kind in KINDS.values():
        command = commands.add_parser(kind.kind, help=kind.help, description=kind.description)
        named = sorted(name for name, fields in PRESETS.items() if fields.get("experiment", "epoch") == kind.kind)
        if named:
            command.add_argument("--preset", choices=named, default=None,
                                 help="a named set-up (README, 'Presets'); explicit options override it")
        _config_options(command, (kind.kind,))
        _output_options(command)
        command.add_argument("--squared", action="store_true",
                             help="plot ℓ₂² (the quantity of the ℓ₂-Experiments figures) instead of ℓ₂; the noise "
                                  "experiment also fits it")

    reproduce = commands.add_parser(
        "reproduce", help="re-create a published figure of ℓ₂-Experiments and draw ours over it",
        description="Run the set-up of published figure A, B or C (presets seed-A, seed-B, seed-C; options override "
                    "them), store it as an ordinary result, and draw our curve over the published one in its own view "
                    "(normalised ℓ₂² and losses over epochs; ℓ₂² against σ on log–log axes), with the RMS difference "
                    "and both curves' shape statistics. Writes <stem>_published.{svg,png} into the result folder.",
    )
    reproduce.add_argument("figure", choices=PUBLISHED, help="the published figure")
    _config_options(reproduce, None, "set-up options (defaults: the figure's preset, README 'Presets')")
    _output_options(reproduce)
    reproduce.add_argument("--scan", type=_typed(parse_noise_levels), metavar="LIST|START:STOP:COUNT", default=None,
                           help="figure A or B: also run the set-up at each of these perturbation scales p, in float32 "
                                "and float64, and write how the shape depends on p (<stem>_scan.{csv,svg,png} in --out)")
    reproduce.add_argument("--theory", action="store_true",
                           help="figure A or B: also draw the linear-response prediction for the same runs (computed "
                                "as by l2rebound analyze, or reused) and say how much of each run's rebound it explains")
    reproduce.add_argument("--teachers", type=int, default=1, metavar="K",
                           help="figure C: run the set-up for K teachers (seeds seed, seed + runs + 1, ...) and draw the "
                                "spread of their mean curves [default: 1]")

    sweep = commands.add_parser(
        "sweep", help="one epoch (or compress) experiment per cell of a grid over any config fields, with phase diagrams",
        description="Train an epoch experiment (a compress experiment with --experiment compress or --preset D) for "
                    "every cell of a grid over config fields and store each as an "
                    "ordinary result (reused when stored; plot, analyze and check work on it), then "
                    "OUT/sweep-<hash>/ with sweep.json, summary.csv and summary.parquet (one row per cell and run) and "
                    "figures: each statistic against one swept field, or heatmaps over two. Cells that differ only "
                    "in traced fields (step size, σ, α, β, ρ, seed, initial perturbation, runs) train as one batch of "
                    "one compiled program.",
    )
    sweep.add_argument("--preset", choices=sorted(n for n, f in PRESETS.items() if f.get("experiment") in SWEPT),
                       default=None, help="the base set-up (README, 'Presets'); explicit options override it")
    sweep.add_argument("--experiment", choices=SWEPT, default=None, dest="cell_experiment",
                       help="the experiment of every cell [default: the preset's, else epoch]")
    sweep.add_argument("--grid", action="append", required=True, metavar="FIELD=VALUES",
                       help="a swept field in option spelling and its values: V1,V2,... or START:STOP:COUNT (log-spaced "
                            "for floats, linear for integers); values holding commas (dims) separated by '/'. Several "
                            "--grid make the product")
    sweep.add_argument("--zip", action="append", default=[], metavar="FIELD1,FIELD2",
                       help="two --grid fields whose lists (of equal length) vary together instead of as a product")
    sweep.add_argument("--stat", default=None, metavar="S1,S2,...",
                       help=f"statistics drawn, among {', '.join(STATS)} (the last {len(COMPRESSION_SUMMARY)} for "
                            f"compress sweeps only) [default: {','.join(DEFAULT_STATS)}; compress: "
                            f"{','.join(DEFAULT_COMPRESSION_STATS)}]")
    sweep.add_argument("--facet", action="append", default=[], metavar="FIELD",
                       help="draw one panel per value of this swept field (needed beyond two swept fields)")
    sweep.add_argument("--engine", choices=("local", "dask"), default="local",
                       help="local: in this process; dask: on a Dask cluster (pip install 'l2rebound[dask]') "
                            "[default: local]")
    sweep.add_argument("--workers", type=int, default=None, metavar="N",
                       help="--engine dask: worker processes of the local cluster [default: 2]")
    sweep.add_argument("--scheduler", default=None, metavar="tcp://HOST:PORT",
                       help="--engine dask: an existing cluster's scheduler instead of a local cluster (workers must "
                            "see --out at the same path)")
    sweep.add_argument("--yes", action="store_true", help=f"allow more than {MAX_CELLS} cells")
    _config_options(sweep, SWEPT)
    _output_options(sweep)

    align = commands.add_parser(
        "align", help="certified ℓ₂ distance modulo the symmetry group between two networks (no training)",
        description="Search the hidden units' relabellings and sign flips g for the least ‖g·θ_A − θ_B‖₂ (branch and "
                    "bound, l2rebound.certify) and print the best distance found (upper), a certified lower bound on "
                    "the least one (lower), their relative gap, whether the search ended (optimal: upper is the "
                    "least), the nodes it evaluated and g, per hidden layer: the old unit and the sign of each new "
                    "unit. Either two files A.npz B.npz, each holding arrays theta (P,) and dims (L+1,) ints, the "
                    "same dims for both (np.savez(path, theta=theta, dims=dims)); or a stored epoch result FOLDER, "
                    "whose kept student of run --run at epoch --epoch is aligned to its teacher (padded with zeros "
                    "to the student's widths), as the result's l2_aligned and l2_aligned_lower were computed.",
    )
    align.add_argument("inputs", nargs="+", type=Path, metavar="PATH",
                       help="two network files A.npz B.npz (A is relabelled onto B), or one result folder "
                            "OUT/epoch-<hash>")
    align.add_argument("--run", type=int, default=None, metavar="R", help="FOLDER: the run, 1 to R [default: 1]")
    align.add_argument("--epoch", type=int, default=None, metavar="E",
                       help="FOLDER: a kept epoch (0, k, 2k, ..., E for --align-every k) [default: the last]")
    align.add_argument("--align-budget", type=int, default=None, metavar="N",
                       help="branch-and-bound nodes to search beyond the root (>= 0) [default: FOLDER: its config's; files: "
                            f"{Config.align_budget}]")

    plot = commands.add_parser("plot", help="redraw the figures of a stored result (no training)",
                               description="Redraw figures and the summary from a stored result folder.")
    plot.add_argument("folders", nargs="+", type=Path, metavar="FOLDER", help="result folder(s) OUT/<experiment>-<hash>")
    plot.add_argument("--squared", action="store_true", help="plot ℓ₂² instead of ℓ₂ (noise results: and fit it)")

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
        "check", help="how far stored networks are from leaving the generic class F (exit 1 if one is outside, 2 if "
                      "the file cannot be read)",
        description="Print, per layer, the smallest |weight|, smallest |bias|, smallest gap between sorted "
                    "|biases| and the weight ratio closest to a small rational ±p/q, for every teacher and "
                    "initial student in a result's params.npz (its dims come from the config.json beside it). "
                    "Exit code 0 when every network is in F, 1 when a condition C1-C3 fails, 2 when the file or an "
                    "option is bad.",
    )
    check.add_argument("file", type=Path, metavar="FILE.npz", help="OUT/<experiment>-<hash>/params.npz")
    check.add_argument("--ratio-bound", type=int, default=100, metavar="N",
                       help=f"largest p and q of the ratios ±p/q that C3 forbids, 1 to {RATIO_BOUND_LIMIT} "
                            "[default: 100]")
    return parser


def _output_options(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--out", type=Path, default=Path("results"), metavar="DIR",
                        help="store root; the result goes to DIR/<experiment>-<hash>/ [default: results]")
    parser.add_argument("--force", action="store_true", help="retrain even if this config's result is stored")
    parser.add_argument("--no-progress", action="store_true", help="no progress bar")


def config_from_args(args: argparse.Namespace, experiment: str, preset: str | None = None) -> Config:
    """Defaults, then the preset (``preset``, else the ``--preset`` given), then the options given explicitly."""
    given = {f.name: getattr(args, f.name) for f in dataclasses.fields(Config) if hasattr(args, f.name)}
    preset = preset or getattr(args, "preset", None)
    return build(preset=preset, **given) if preset else Config(experiment=experiment, **given)


def _fail(message: str, code: int = EXIT_USAGE):
    print(f"l2rebound: error: {message}", file=sys.stderr)
    return code


def _warn(message: str) -> None:
    print(message, file=sys.stderr)


def _report(folder: Path, result, squared: bool = False) -> int:
    """Warnings, figures written into ``folder`` and the summary of a result; exit code 1 when every run
    diverged."""
    from l2rebound.plots import write_figures

    for line in result.warnings():
        _warn(line)
    if np.all(result.diverged_at >= 0):
        return _fail(f"every run diverged; the metrics are stored in {folder}", code=1)
    for path in write_figures(result, folder, squared):
        print(f"figure: {path}")
    print(result.summary(squared))
    return 0


def _run_experiment(args) -> int:
    config = config_from_args(args, args.command)
    try:
        folder, result = _stored(config, args)
    except KeyboardInterrupt:
        checkpoint = store.Checkpoint(args.out, config)
        _warn(f"interrupted: {checkpoint.count()} finished chunk(s) of runs are kept in {checkpoint.folder}; "
              "the same command resumes from there")
        return 130
    with store.lock(args.out, config):  # no --force elsewhere replaces the folder while its figures are written
        return _report(folder, result, args.squared)


def _run_sweep(args) -> int:
    from l2rebound.api import execute_sweep
    from l2rebound.grid import parse_axis

    preset = PRESETS.get(args.preset, {}).get("experiment")
    if args.cell_experiment and preset and args.cell_experiment != preset:
        return _fail(f"--preset {args.preset} is a {preset} experiment, not {args.cell_experiment}")
    base = config_from_args(args, args.cell_experiment or "epoch")
    axes = [parse_axis(spec) for spec in args.grid]
    zipped = [tuple(part for part in pair.split(",") if part.strip()) for pair in args.zip]
    if args.workers is not None and (args.engine != "dask" or args.scheduler or args.workers < 1):
        return _fail("--workers N (N >= 1) sizes the local cluster of --engine dask (without --scheduler)")
    if args.scheduler and args.engine != "dask":
        return _fail("--scheduler needs --engine dask")
    stats = None if args.stat is None else [s.strip() for s in args.stat.split(",") if s.strip()]
    if stats == []:
        return _fail(f"--stat must list statistics among {', '.join(STATS)} (got {args.stat!r})")
    configure_process()
    folder, result = execute_sweep(base, axes, zipped, out=args.out, engine=args.engine, workers=args.workers,
                                   scheduler=args.scheduler, force=args.force, progress=not args.no_progress,
                                   yes=args.yes, stats=stats, facet=args.facet, say=print)
    for path in sorted(folder.glob("sweep_*")):
        print(f"figure: {path}")
    print(result.summary())
    return 0


def _stored(config: Config, args) -> tuple[Path, object]:
    """``config``'s result from the store under ``--out``, computed there first if needed."""
    from l2rebound.api import execute

    if args.force or not store.is_finished(store.result_dir(args.out, config)):
        configure_process()  # only to train: reusing a stored result needs no JAX
    return execute(config, args.out, args.force, not args.no_progress, say=print)


def _run_reproduce(args) -> int:
    from l2rebound import reproduce
    from l2rebound.plots import write_figure

    config = config_from_args(args, "epoch", preset=f"seed-{args.figure}")
    if args.teachers < 1 or args.teachers > 1 and args.figure != "C":
        return _fail("--teachers must be 1 or more, and more than 1 only for figure C (a noise experiment's "
                     f"single teacher; figures A and B draw a teacher per run) (got {args.teachers})")
    if args.theory and args.figure == "C":
        return _fail("--theory draws the linear response over figures A and B; for figure C, run l2rebound analyze "
                     "on the result folder")
    if args.scan is not None and args.figure == "C":
        return _fail("--scan varies the initial perturbation of figures A and B; figure C starts at its teacher")
    if args.scan is not None and (not args.scan or min(args.scan) <= 0):
        return _fail(f"--scan needs perturbation scales > 0 (got {','.join(map(str, args.scan)) or 'none'})")
    if args.figure != "C" and config.epochs < 2:
        return _fail(f"figure {args.figure} normalises each run over its epochs: --epochs must be 2 or more")
    if args.theory:
        configure_process()  # the analysis computes in JAX even where the result is reused
    others = [config.replace(seed=config.seed + k * (config.runs + 1)) for k in range(1, args.teachers)]
    scan = [config.replace(initial_permut=p, dtype=d) for d in ("float32", "float64") for p in args.scan or ()]
    for extra in others + scan:  # every set-up is valid before the first trains
        store.check_writable(args.out, extra)
    folder, result = _stored(config, args)
    extra = [_stored(other, args)[1] for other in others]
    with store.lock(args.out, config):  # no --force elsewhere replaces the folder while its figures are written
        code = _report(folder, result)
        if code:
            return code
        analysis = None
        if args.theory:
            code = _analyze_one(folder, result, False, args.no_progress)
            if code:
                return code
            analysis = store.load_analysis(folder)
        comparison = reproduce.compare(args.figure, result, analysis)
        for path in write_figure(reproduce.comparison_figure(comparison, result, extra),
                                 folder / f"{config.figure_stem()}_published"):
            print(f"figure: {path}")
    print(comparison.summary())
    if scan:
        rows = reproduce.scan_rows([_stored(one, args)[1] for one in scan], args.figure)
        if not rows:
            return _fail("every run of every scanned set-up diverged: nothing to compare", code=1)
        stem = args.out / f"{config.figure_stem()}_scan"
        table = store.write_atomic(stem.with_name(stem.name + ".csv"), lambda tmp: reproduce.write_scan(rows, tmp))
        for path in [table, *write_figure(reproduce.scan_figure(rows, args.figure), stem)]:
            print(f"scan: {path}")
        print(reproduce.scan_table(rows))
    return 0


@contextlib.contextmanager
def _held(folder: Path):
    """The result stored in ``folder``, read and used under its lock, so that no ``--force`` elsewhere
    replaces the folder while this command writes into it."""
    from l2rebound.api import load

    store.require_finished(folder)

    def waiting() -> None:
        print(store.waiting_line(root, config), flush=True)

    root, config = Path(os.path.abspath(folder)).parent, store.load_config(folder)
    with store.lock(root, config, on_wait=waiting):
        yield load(folder)


def _network_file(path: Path) -> tuple[np.ndarray, tuple[int, ...]]:
    """θ (P,) and dims (L+1,) of a network file (a ``.npz`` with arrays ``theta`` and ``dims``); ``ValueError``
    naming the file and what is wrong."""
    from l2rebound.layout import num_params

    try:
        data = np.load(path, allow_pickle=False)
    except (OSError, ValueError, EOFError, zipfile.BadZipFile) as error:
        reason = error.strerror if isinstance(error, OSError) and error.strerror else "not a NumPy .npz archive"
        raise ValueError(f"{path} cannot be read as a network file ({reason})") from None
    if not isinstance(data, np.lib.npyio.NpzFile):  # a .npy file holds one bare array: bad content, not a bad type
        raise ValueError(f"{path} cannot be read as a network file (one bare array, not a .npz archive)")  # noqa: TRY004
    with data:
        missing = [name for name in ("theta", "dims") if name not in data.files]
        if missing:
            raise ValueError(f"{path} has no array {' or '.join(missing)}: a network file holds theta (P,) and dims "
                             "(L+1,)")
        try:
            theta, dims = np.asarray(data["theta"]), np.asarray(data["dims"])
        except (OSError, ValueError, EOFError, zipfile.BadZipFile) as error:  # a damaged member, or objects
            raise ValueError(f"{path}: its arrays cannot be read ({error})") from None
    if dims.ndim != 1 or dims.dtype.kind not in "iu" or len(dims) < 3 or np.any(dims < 1):
        raise ValueError(f"{path}: dims must be 3 or more positive integers d0,d1,...,dL (got {dims.tolist()})")
    dims = tuple(int(d) for d in dims)
    if theta.shape != (num_params(dims),) or theta.dtype.kind != "f":
        raise ValueError(f"{path}: theta has shape {theta.shape} and dtype {theta.dtype}, where dims "
                         f"{','.join(map(str, dims))} need {num_params(dims)} floats")
    return theta, dims


def _kept_pair(folder: Path, run: int, epoch: int | None):
    """(student θ (P,), padded teacher θ (P,), student dims, config, stored (l2_aligned, l2_aligned_lower),
    what was picked) of a stored epoch result's run ``run`` (1-based) at the kept epoch ``epoch`` (None:
    the last); ``ValueError`` saying why not."""
    store.require_finished(folder)
    config = store.load_config(folder)
    if not issubclass(KINDS[config.experiment], EpochResult):
        raise ValueError(f"{folder} is a {config.experiment} result, which keeps no students: align works on epoch "
                         "and compress results (or on two network files)")
    result = store.load(folder)
    if not len(result.kept_epochs):
        raise ValueError(f"{folder} kept no students (--align-every 0)")
    if not 1 <= run <= config.runs:
        raise ValueError(f"--run must be from 1 to {config.runs} (got {run})")
    epoch = int(result.kept_epochs[-1]) if epoch is None else epoch
    where = np.flatnonzero(result.kept_epochs == epoch)
    if not len(where):
        kept = [str(e) for e in result.kept_epochs]
        shown = ", ".join(kept if len(kept) <= 6 else [*kept[:3], "...", kept[-1]])
        raise ValueError(f"--epoch must be one of the kept epochs of {folder} ({shown}), got {epoch}")
    student = result.kept_theta[run - 1, where[0]]
    if not np.all(np.isfinite(student)):
        raise ValueError(f"run {run} diverged at epoch {result.diverged_at[run - 1]}: its student at epoch {epoch} "
                         "is not finite")
    from l2rebound.nets import pad  # the alignment below loads JAX anyway
    from l2rebound.precision import float64

    teacher = np.asarray(float64(pad)(np.asarray(result.teacher[run - 1]), config.teacher_dims, config.student_dims))
    stored = (result.metrics["l2_aligned"][run - 1, epoch], result.metrics["l2_aligned_lower"][run - 1, epoch])
    return student, teacher, config.student_dims, config, stored, f"run {run}, epoch {epoch}"


def _run_align(args) -> int:
    """``align``: the certified distance modulo the symmetry group of two networks, or of a stored result's
    kept student and its teacher. certify (and, at the first alignment, JAX) is imported here only, so that
    ``--help`` stays fast."""
    if args.align_budget is not None and args.align_budget < 0:
        return _fail(f"--align-budget must be an integer >= 0 (got {args.align_budget})")
    stored = None
    try:
        if len(args.inputs) == 1 and args.inputs[0].is_dir():
            student, teacher, dims, config, stored, picked = _kept_pair(args.inputs[0], 1 if args.run is None else args.run, args.epoch)
            budget = config.align_budget if args.align_budget is None else args.align_budget
            print(f"{args.inputs[0]}: {picked}, kept student (A) against its teacher (B)")
        elif len(args.inputs) == 2:
            if args.run is not None or args.epoch is not None:
                return _fail("--run and --epoch pick a kept student of a result FOLDER, not of network files")
            (student, dims), (teacher, other) = (_network_file(path) for path in args.inputs)
            if dims != other:
                return _fail(f"{args.inputs[0]} has dims {','.join(map(str, dims))} and {args.inputs[1]} has "
                             f"{','.join(map(str, other))}: both networks need the same widths (pad the narrower "
                             "one with zero units)")
            budget = Config.align_budget if args.align_budget is None else args.align_budget
        else:
            return _fail("align takes two network files A.npz B.npz, or one result folder (got "
                         f"{' '.join(map(str, args.inputs))})")
    except ValueError as error:  # StoreError included: one line either way
        return _fail(str(error))
    if not (np.all(np.isfinite(student)) and np.all(np.isfinite(teacher))):
        return _fail("the networks' parameters must be finite")
    if max(np.abs(student).max(initial=0), np.abs(teacher).max(initial=0)) > MAX_PARAMETER:
        return _fail(f"parameters above {MAX_PARAMETER:g} in size: their squared distance would overflow")
    from l2rebound.certify import Budget, certified_align

    aligned = certified_align(student, teacher, dims, Budget(nodes=budget))
    print(f"upper    {aligned.upper:.12g}   (‖g·θ_A − θ_B‖₂ for the g below)")
    print(f"lower    {aligned.lower:.12g}   (certified: no relabelling comes closer)")
    print(f"gap      {aligned.gap:.3g}   (upper − lower) / upper")
    print(f"optimal  {'yes' if aligned.optimal else 'no'}   "
          + ("(the search ended: upper is the least distance)" if aligned.optimal else
             f"(the budget of {budget} nodes ran out; --align-budget searches further)"))
    print(f"nodes    {aligned.nodes} (the root and at most {budget} more)")
    if stored is not None:
        shown = ["not stored" if np.isnan(v) else f"{v:.12g}" for v in stored]
        print(f"stored   l2_aligned {shown[0]}, l2_aligned_lower {shown[1]}")
    print("g: new unit i of a hidden layer is old unit perm[i] of A times sign[i]")
    for layer, (perm, signs) in enumerate(zip(*aligned.symmetry), start=1):
        print(f"hidden layer {layer} perm:  {' '.join(map(str, np.asarray(perm).tolist()))}")
        print(f"hidden layer {layer} signs: {' '.join('+' if s > 0 else '-' for s in np.asarray(signs))}")
    return 0


def _run_plot(args) -> int:
    from l2rebound import sweeps

    for folder in args.folders:
        if sweeps.is_sweep(folder):
            for path in sweeps.load(folder).write_figures(folder):
                print(f"figure: {path}")
            continue
        with _held(folder) as result:
            code = _report(folder, result, args.squared)
        if code:
            return code
    return 0


def _run_analyze(args) -> int:
    configure_process()
    for folder in args.folders:
        with _held(folder) as result:
            code = _analyze_one(folder, result, args.force, args.no_progress)
        if code:
            return code
    return 0


def _analyze_one(folder: Path, result, force: bool, no_progress: bool) -> int:
    """``analyze`` for one stored result: the theory computed (or reused), stored, drawn and summarised."""
    from l2rebound.api import progress_bar
    from l2rebound.plots import theory_summary, write_theory
    from l2rebound.theory import analyze

    if result.config.optimizer != "gd":
        return _fail(f"{folder}: the linear-response theory models plain gradient descent, not "
                     f"--optimizer {result.config.optimizer}")
    if np.all(result.diverged_at >= 0):
        return _fail(f"{folder}: every run diverged, nothing to compare with the theory", code=1)
    analysis = None if force else store.load_analysis(folder)
    if analysis is None:
        print(f"analysing {folder}: Gauss–Newton spectrum of each of {result.config.runs} runs, Hessian of run 1")
        try:
            with progress_bar(result.config.runs, not no_progress, unit="run") as bar:
                analysis = analyze(result, bar.update)
        except ValueError as error:
            return _fail(f"{folder}: {error}", code=1)
        store.save_analysis(folder, analysis)
    else:
        print(f"reusing the analysis stored in {folder / 'theory.npz'} (--force recomputes)")
    for path in write_theory(result, analysis, folder):
        print(f"figure: {path}")
    print(theory_summary(result, analysis))
    return 0


MAX_PARAMETER = 1e150
"""Largest |parameter| ``align`` takes: squared distances of larger ones overflow a double."""
RATIO_BOUND_LIMIT = 1000
"""Largest ``check --ratio-bound``: its table of fractions grows with the bound's square."""


def _read_networks(path: Path) -> list[tuple[str, tuple[int, ...], np.ndarray]]:
    """(name, dims, θ (P,)) of every teacher and initial student in a result's params.npz; ``StoreError``
    naming the file when it cannot be read or does not fit the config beside it."""
    from l2rebound.layout import num_params

    config = store.load_config(path.parent)
    networks = []
    try:
        with np.load(path) as params:
            for name, dims in (("teacher", config.teacher_dims), ("student_init", config.student_dims)):
                thetas = np.atleast_2d(params[name])  # in its stored dtype: the tolerances depend on it
                if thetas.ndim != 2 or thetas.shape[1] != num_params(dims) or thetas.dtype.kind != "f":
                    raise ValueError(f"{name} has shape {params[name].shape} and dtype {thetas.dtype}, where dims "
                                     f"{dims} need float rows of {num_params(dims)} parameters")
                networks += [(f"{name}, run {run}", dims, theta) for run, theta in enumerate(thetas, start=1)]
    except (OSError, KeyError, ValueError, EOFError, zipfile.BadZipFile) as error:
        raise StoreError(f"{path} cannot be read as the parameters of {path.parent} ({error}): run the experiment "
                         "again with --force") from None
    return networks


def _run_check(args) -> int:
    from l2rebound.genericity import format_report, genericity_report, report_generic

    if not 1 <= args.ratio_bound <= RATIO_BOUND_LIMIT:
        return _fail(f"--ratio-bound must be an integer from 1 to {RATIO_BOUND_LIMIT} (got {args.ratio_bound})")
    if not args.file.is_file() or not store.is_finished(args.file.parent):
        return _fail(f"{args.file} is not the params.npz of a finished result folder")
    failed = 0
    for name, dims, theta in _read_networks(args.file):
        report = genericity_report(theta, dims, args.ratio_bound)
        print(f"== {name}")
        print(format_report(report))
        failed += not report_generic(report)
    print(f"{failed} network(s) outside F" if failed else "every network is in F")
    return 1 if failed else 0


def cache_compilations(directory: Path | None = None) -> None:
    """Keep XLA's compiled programs on disk (by default in ``xla`` under the package's cache folder,
    ``kernel.cache_root``), so a second command with the same shapes skips compiling them."""
    import jax

    from l2rebound import kernel

    jax.config.update("jax_compilation_cache_dir", str(directory or kernel.cache_root() / "xla"))
    jax.config.update("jax_persistent_cache_min_compile_time_secs", 0)


def configure_process() -> None:
    """What the CLI sets in its own process before it trains (a library never does): compiled programs cached
    on disk, one CPU device per core (each trains its share of the runs), and the fused kernel's Threefry
    as the CPU lowering of ``jax.random``'s hash (compiles the set-up program in a fraction of the time)."""
    import jax

    from l2rebound import kernel

    cache_compilations()
    if "xla_force_host_platform_device_count" not in os.environ.get("XLA_FLAGS", ""):
        try:
            jax.config.update("jax_num_cpu_devices", len(os.sched_getaffinity(0)))
        except RuntimeError:  # the CPU backend is already up (an in-process caller): keep its device count
            pass
    kernel.use_threefry_lowering()


def main(argv: list[str] | None = None) -> int:
    parser = _build_parser()
    args = parser.parse_args(argv)
    try:
        commands = {"check": _run_check, "plot": _run_plot, "analyze": _run_analyze, "reproduce": _run_reproduce,
                    "sweep": _run_sweep, "align": _run_align}
        return commands.get(args.command, _run_experiment)(args)
    except (ConfigError, StoreError) as error:
        return _fail(str(error))
    except BrokenPipeError:  # the reader went away (`| head`): nothing more to say to it
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return 141
    except OSError as error:  # a path or a disk that failed where no finer message applies
        return _fail(f"{error.filename or 'a file'}: {error.strerror or error}; the stored result, if any, is "
                     "untouched: fix that and run the command again")
    except KeyboardInterrupt:
        return _fail("interrupted; what was finished is kept: the same command goes on from there", code=130)


if __name__ == "__main__":
    sys.exit(main())
