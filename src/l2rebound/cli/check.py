"""``l2rebound check``: how far the stored teachers and initial students of a result are from leaving the generic
class F (exit 1 if one is outside)."""

from __future__ import annotations

from pathlib import Path

from l2rebound import store
from l2rebound.cli.common import fail

RATIO_BOUND_LIMIT = 1000
"""Largest ``check --ratio-bound``: its table of fractions grows with the bound's square."""


COMMAND = "check"


def add(commands) -> None:
    check = commands.add_parser(
        COMMAND, help="how far stored networks are from leaving the generic class F (exit 1 if one is outside, 2 if "
                      "the file cannot be read)",
        description="Print, per layer, the smallest |weight|, smallest |bias|, smallest gap between sorted "
                    "|biases| and the weight ratio closest to a small rational ±p/q, for every teacher and "
                    "initial student of a result folder (its params.npz; the dims come from its config.json). "
                    "Exit code 0 when every network is in F, 1 when a condition C1-C3 fails, 2 when the file or an "
                    "option is bad.",
    )
    check.add_argument("folder", type=Path, metavar="FOLDER",
                       help="a result folder OUT/<experiment>-<hash> (or its params.npz)")
    check.add_argument("--ratio-bound", type=int, default=100, metavar="N",
                       help=f"largest p and q of the ratios ±p/q that C3 forbids, 1 to {RATIO_BOUND_LIMIT} "
                            "[default: 100]")
    check.set_defaults(handler=run)


def run(args) -> int:
    from l2rebound.genericity import format_report, genericity_report, report_generic

    if not 1 <= args.ratio_bound <= RATIO_BOUND_LIMIT:
        return fail(f"--ratio-bound must be an integer from 1 to {RATIO_BOUND_LIMIT} (got {args.ratio_bound})")
    folder = args.folder.parent if args.folder.name == "params.npz" else args.folder
    if not store.is_finished(folder):
        return fail(f"{args.folder} is not a finished result folder (or the params.npz of one)")
    failed = 0
    for name, dims, theta in store.load_networks(folder):
        report = genericity_report(theta, dims, args.ratio_bound)
        print(f"== {name}")
        print(format_report(report))
        failed += not report_generic(report)
    print(f"{failed} network(s) outside F" if failed else "every network is in F")
    return 1 if failed else 0
