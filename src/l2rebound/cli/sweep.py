"""``l2rebound sweep``: one experiment per cell of a grid over config fields, stored as ordinary results, and
the sweep's summary and phase diagrams."""

from __future__ import annotations

from l2rebound import registry
from l2rebound.cli.common import config_from_args, config_options, configure_process, fail, output_options
from l2rebound.config import PRESETS, Config, example
from l2rebound.grid import MAX_CELLS
from l2rebound.sweeps import BASE_STATS, CELL_STORAGE, kind_columns, stats_of


def swept() -> tuple[str, ...]:
    """The kinds a sweep can run per cell."""
    return registry.kinds_with("sweepable")


COMMAND = "sweep"


def add(commands) -> None:
    kinds = swept()
    own = {name: [c.name for c in kind_columns(example(name))] for name in kinds}
    defaults = {name: stats_of(example(name))[1] for name in kinds}
    sweep = commands.add_parser(
        COMMAND, help=f"one experiment ({' or '.join(kinds)}) per cell of a grid over any config fields, with phase "
                      "diagrams",
        description=f"Train an experiment ({', '.join(kinds)}: --experiment, or the preset's) for "
                    "every cell of a grid over config fields and store each as an "
                    f"ordinary result ({CELL_STORAGE} unless --storage full; reused when stored; plot, analyze, align "
                    "and check work on it), then "
                    "OUT/sweep-<hash>/ with sweep.json, summary.csv and summary.parquet (one row per cell and run) and "
                    "figures: each statistic against one swept field, or heatmaps over two. Cells that differ only "
                    "in traced fields (step size, σ, α, β, ρ, seed, initial perturbation, runs) train as one batch of "
                    "one compiled program.",
    )
    sweep.add_argument("--preset", choices=sorted(n for n, f in PRESETS.items() if f.get("experiment") in kinds),
                       default=None, help="the base set-up (README, 'Presets'); explicit options override it")
    sweep.add_argument("--experiment", choices=kinds, default=None, dest="cell_experiment",
                       help=f"the experiment of every cell [default: the preset's, else {Config.experiment}]")
    sweep.add_argument("--grid", action="append", required=True, metavar="FIELD=VALUES",
                       help="a swept field in option spelling and its values: V1,V2,... or START:STOP:COUNT "
                            "(log-spaced for floats, linear for integers); values holding commas (dims) separated by "
                            "'/'. Several --grid make the product")
    sweep.add_argument("--zip", action="append", default=[], metavar="FIELD1,FIELD2",
                       help="two --grid fields whose lists (of equal length) vary together instead of as a product")
    sweep.add_argument("--stat", default=None, metavar="S1,S2,...",
                       help=f"statistics drawn, among {', '.join(BASE_STATS)}; "
                            + "; ".join(f"{name} sweeps also {', '.join(names)}"
                                        for name, names in own.items() if names)
                            + " [default: "
                            + "; ".join(f"{name}: {','.join(stats)}" for name, stats in defaults.items())
                            + "]")
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
    config_options(sweep, kinds)
    output_options(sweep)

    sweep.set_defaults(handler=run)


def run(args) -> int:
    from l2rebound.api import execute_sweep
    from l2rebound.grid import parse_axis

    preset = PRESETS.get(args.preset, {}).get("experiment")
    if args.cell_experiment and preset and args.cell_experiment != preset:
        return fail(f"--preset {args.preset} is a {preset} experiment, not {args.cell_experiment}")
    base = config_from_args(args, args.cell_experiment or Config.experiment)
    if not hasattr(args, "storage"):
        base = base.replace(storage=CELL_STORAGE)
    axes = [parse_axis(spec) for spec in args.grid]
    zipped = [tuple(part for part in pair.split(",") if part.strip()) for pair in args.zip]
    if args.workers is not None and (args.engine != "dask" or args.scheduler or args.workers < 1):
        return fail("--workers N (N >= 1) sizes the local cluster of --engine dask (without --scheduler)")
    if args.scheduler and args.engine != "dask":
        return fail("--scheduler needs --engine dask")
    stats = None if args.stat is None else [s.strip() for s in args.stat.split(",") if s.strip()]
    if stats == []:
        return fail(f"--stat must list statistics among {', '.join(stats_of(base)[0])} (got {args.stat!r})")
    configure_process()
    folder, result = execute_sweep(base, axes, zipped, out=args.out, engine=args.engine, workers=args.workers,
                                   scheduler=args.scheduler, force=args.force, progress=not args.no_progress,
                                   yes=args.yes, stats=stats, facet=args.facet, say=print)
    for path in sorted(folder.glob("sweep_*")):
        print(f"figure: {path}")
    print(result.summary())
    return 0
