#!/usr/bin/env python
"""How many runs one compiled call needs before the device is full.

Trains R runs of Experiment A (``PRESETS["A"]``, 2,25,25,1, N = 10 000) for ``--epochs`` epochs in a
single call of ``experiments.train_runs`` (no chunking) for each R of ``--runs``, after one warm-up call
per R, and prints the time per run-epoch. Where that time stops falling, the device is saturated: that
R is the chunk size worth using there (``experiments.chunk_runs()``: ``CHUNK_RUNS`` on CPU, ``ACCELERATOR_CHUNK_RUNS``
elsewhere). Results also go to ``--json``.

    python benchmarks/saturation.py                        # R = 10, 30, 100, 300, 1000
    python benchmarks/saturation.py --runs 10,100,1000,3000 --epochs 50
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path


def measure(runs: int, epochs: int, repeats: int) -> dict:
    import jax
    import numpy as np

    from l2rebound import Config
    from l2rebound.config import PRESETS
    from l2rebound.experiments import hyper_of, setup_runs, train_runs

    config = Config(**{**PRESETS["A"], "runs": runs, "epochs": epochs})
    seeds = config.seed + np.arange(1, runs + 1)
    with jax.enable_x64(True):  # train_runs is the engine's inside: its entry points scope this themselves
        _, problem, student, keys = setup_runs(config, seeds, seeds)
        hyper = hyper_of(config, runs)
        t0 = time.perf_counter()
        train_runs(config, hyper, problem, student, keys)
        first = time.perf_counter() - t0
        times = []
        for _ in range(repeats):
            t0 = time.perf_counter()
            train_runs(config, hyper, problem, student, keys)
            times.append(time.perf_counter() - t0)
    wall = sorted(times)[len(times) // 2]
    return {"runs": runs, "epochs": epochs, "wall_s": wall, "first_s": first, "times_s": times,
            "ms_per_run_epoch": 1e3 * wall / (runs * epochs), "device": str(jax.devices()[0])}


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--runs", default="10,30,100,300,1000", help="comma-separated R values [default: %(default)s]")
    parser.add_argument("--epochs", type=int, default=100, help="epochs per call [default: %(default)s]")
    parser.add_argument("--repeats", type=int, default=3, help="timed calls per R; the median is kept [default: 3]")
    parser.add_argument("--json", type=Path, default=None, help="also write the rows as JSON here")
    args = parser.parse_args(argv)
    from l2rebound.cli import configure_process

    configure_process()  # the process the CLI runs in
    rows = []
    print(f"{'runs':>6} {'wall s':>9} {'first s':>9} {'ms/run-epoch':>13}  device")
    for runs in (int(r) for r in args.runs.split(",")):
        row = measure(runs, args.epochs, args.repeats)
        rows.append(row)
        print(f"{runs:>6} {row['wall_s']:>9.3f} {row['first_s']:>9.3f} "
              f"{row['ms_per_run_epoch']:>13.4f}  {row['device']}",
              flush=True)
    if args.json:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(json.dumps(rows, indent=2) + "\n")


if __name__ == "__main__":
    main()
