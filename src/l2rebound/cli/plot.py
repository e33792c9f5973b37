"""``l2rebound plot``: redraw the figures and the summary of stored results or sweeps (no training)."""

from __future__ import annotations

from pathlib import Path

from l2rebound.cli.common import held, report

COMMAND = "plot"


def add(commands) -> None:
    plot = commands.add_parser(COMMAND, help="redraw the figures of a stored result (no training)",
                               description="Redraw figures and the summary from a stored result folder; of a sweep's "
                                           "folder, its figures and its summary tables.")
    plot.add_argument("folders", nargs="+", type=Path, metavar="FOLDER",
                      help="result folder(s) OUT/<experiment>-<hash>, or sweep folder(s) OUT/sweep-<hash>")
    plot.add_argument("--squared", action="store_true", help="plot ℓ₂² instead of ℓ₂ (noise results: and fit it)")
    plot.set_defaults(handler=run)


def run(args) -> int:
    from l2rebound import sweeps

    for folder in args.folders:
        if sweeps.is_sweep(folder):
            result = sweeps.load(folder)
            for path in result.write_tables(folder):  # restored if they were deleted
                print(f"table: {path}")
            for path in result.write_figures(folder):
                print(f"figure: {path}")
            continue
        with held(folder) as result:
            code = report(folder, result, args.squared)
        if code:
            return code
    return 0
