#!/usr/bin/env python
"""Benchmark a packed sweep against separate commands and against Dask.

The grid: preset A over learning rate x alpha (4 x 4 = 16 cells, 10 runs each unless --runs). Measured, each in
a fresh store and a fresh process where a command is timed (whole commands, wall clock, the compilation cache
left as the user's):

    steady     one preset-A config trained by ``experiments.run_experiment`` in this process, after a warm-up
               call: the steady-state training time T of one cell
    packed     ``l2rebound sweep --preset A --grid learning-rate=... --grid alpha=...`` (--engine local)
    separate   16 ``l2rebound epoch --preset A --learning-rate X --alpha Y`` commands, one after the other
    dask       the same sweep with ``--engine dask --workers 2``

and the ratios the sweep should meet: packed <= 1.2 x 16 T, separate / packed >= 3. ``--figure PATH`` copies
the packed sweep's rebound heatmap there.
"""

from __future__ import annotations

import argparse
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

LEARNING_RATES = ("3e-3", "1e-2", "3e-2", "1e-1")
ALPHAS = ("3e-5", "1e-4", "3e-4", "1e-3")
COMMAND = [sys.executable, "-m", "l2rebound.cli"]


def timed(argv: list[str]) -> float:
    start = time.perf_counter()
    subprocess.run(argv, check=True, stdout=subprocess.DEVNULL)
    return time.perf_counter() - start


def steady(runs: int) -> float:
    from l2rebound.config import presets
    from l2rebound.experiments import run_experiment

    config = presets["A"].replace(runs=runs)
    run_experiment(config)  # compile
    start = time.perf_counter()
    run_experiment(config)
    return time.perf_counter() - start


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--runs", type=int, default=10, help="runs per cell [default: 10]")
    parser.add_argument("--skip", action="append", default=[], choices=("separate", "dask"), help="leave a case out")
    parser.add_argument("--figure", type=Path, default=None, help="copy the packed sweep's rebound heatmap (PNG) here")
    args = parser.parse_args()
    grid = ["--grid", "learning-rate=" + ",".join(LEARNING_RATES), "--grid", "alpha=" + ",".join(ALPHAS)]
    common = ["--preset", "A", "--runs", str(args.runs), "--no-progress"]
    rows = {}
    rows["steady"] = steady(args.runs)
    print(f"steady: one preset-A config, {args.runs} runs: {rows['steady']:.2f} s", flush=True)
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        rows["packed"] = timed([*COMMAND, "sweep", *common, *grid, "--out", str(tmp / "packed")])
        print(f"packed: {rows['packed']:.2f} s", flush=True)
        if args.figure:
            shutil.copy(next((tmp / "packed").glob("sweep-*/sweep_rebound.png")), args.figure)
        if "separate" not in args.skip:
            rows["separate"] = sum(timed([*COMMAND, "epoch", *common, "--learning-rate", lr, "--alpha", alpha, "--out",
                                          str(tmp / "separate")]) for lr in LEARNING_RATES for alpha in ALPHAS)
            print(f"separate: {rows['separate']:.2f} s", flush=True)
        if "dask" not in args.skip:
            rows["dask"] = timed([*COMMAND, "sweep", *common, *grid, "--engine", "dask", "--workers", "2", "--out",
                                  str(tmp / "dask")])
            print(f"dask: {rows['dask']:.2f} s", flush=True)
    cells = len(LEARNING_RATES) * len(ALPHAS)
    print("\n| case | wall s | ratio |\n|---|---|---|")
    print(f"| 16 x steady-state training of one cell | {cells * rows['steady']:.1f} | 1 |")
    for name in ("packed", "separate", "dask"):
        if name in rows:
            print(f"| {name} | {rows[name]:.1f} | {rows[name] / (cells * rows['steady']):.2f} |")
    if "separate" in rows:
        print(f"\nseparate / packed = {rows['separate'] / rows['packed']:.2f}")


if __name__ == "__main__":
    main()
