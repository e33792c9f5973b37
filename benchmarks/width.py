#!/usr/bin/env python
"""How the cost of one run grows with the network's width: student = teacher = (2, W, W, 1) (or (2, W, 1) with
--hidden-layers 1), N = 500 training and 100 test samples, the default jitter projection every epoch.

For each width W (each in its own process, so that one width's memory and caches do not carry over):

    setup_s        drawing the teacher (projected onto the generic class), the data and the student, first call
                   (compiles) and warm
    epoch_s        one training epoch (loss, gradient, projection, metrics), warm, from a block of --epochs
    check_s        the genericity check of the projection on the student (the kernel's where it serves), warm
    align_s        one certified alignment of the trained student with its teacher at the default node budget
                   (only up to --align-up-to: a wide pair's assignment problems are large)
    command_s      the whole `l2rebound epoch --teacher-dims 2,W,W,1 (or 2,W,1) --runs 1 --epochs E --dataset-size 500
                   --test-set-size 100 --align-every 0` in a fresh process (compiles included)

The growth exponent between two widths is log(t2/t1) / log(P2/P1) with P the parameter count: 1 is linear in
the work. Prints a table and writes the rows as JSON (--json).

    python benchmarks/width.py                          # W = 25, 250, 1000, 2000
    python benchmarks/width.py --widths 25,5000 --align-up-to 0
    python benchmarks/width.py --hidden-layers 1 --widths 25,1000,5000
"""

from __future__ import annotations

import argparse
import json
import math
import subprocess
import sys
import time

EPOCHS = 5


def dims_of(width: int, hidden_layers: int) -> tuple[int, ...]:
    return (2, *[width] * hidden_layers, 1)


def measure(width: int, epochs: int, align: bool, hidden_layers: int) -> dict:
    """The in-process timings of one width (see the module docstring)."""
    import jax
    import numpy as np

    from l2rebound import kernel
    from l2rebound.certify import Budget, certified_align
    from l2rebound.cli import configure_process
    from l2rebound.config import Config
    from l2rebound.experiments import hyper_of, setup_runs, train_runs
    from l2rebound.genericity import RATIO_BOUND, _tolerance, violations
    from l2rebound.layout import num_params

    configure_process()
    config = Config(teacher_dims=dims_of(width, hidden_layers), runs=1, epochs=epochs, dataset_size=500,
                    test_set_size=100, align_every=0, initial_permut=1e-2)
    seeds = np.array([config.seed + 1])
    row = {"width": width, "dims": list(config.student_dims), "params": num_params(config.student_dims)}
    with jax.enable_x64(True):
        t0 = time.perf_counter()
        setup_runs(config, seeds, seeds)
        row["setup_first_s"] = time.perf_counter() - t0
        t0 = time.perf_counter()
        teacher, problem, student, keys = setup_runs(config, seeds, seeds)
        row["setup_s"] = time.perf_counter() - t0
        hyper = hyper_of(config, 1)
        train_runs(config, hyper, problem, student, keys)  # compiles
        t0 = time.perf_counter()
        _, _, final, _ = train_runs(config, hyper, problem, student, keys)
        row["epoch_s"] = (time.perf_counter() - t0) / epochs
        theta = jax.numpy.asarray(final[0])
        dims = config.student_dims
        if kernel.enabled(theta.dtype):
            check = jax.jit(lambda t: kernel.violations(t, dims, _tolerance(t.dtype), RATIO_BOUND))
        else:
            check = jax.jit(lambda t: violations(t, dims))
        check(theta).block_until_ready()
        t0 = time.perf_counter()
        check(theta).block_until_ready()
        row["check_s"] = time.perf_counter() - t0
        if align:
            t0 = time.perf_counter()
            found = certified_align(np.asarray(final[0]), np.asarray(problem.teacher[0]), dims,
                                    Budget(nodes=config.align_budget))
            row["align_s"] = time.perf_counter() - t0
            row["align_optimal"] = bool(found.optimal)
    return row


def command(width: int, epochs: int, out: str, hidden_layers: int) -> float:
    """Wall seconds of the CLI command of one width in a fresh process."""
    dims = ",".join(map(str, dims_of(width, hidden_layers)))
    argv = [sys.executable, "-m", "l2rebound.cli", "epoch", "--teacher-dims", dims, "--runs", "1",
            "--epochs", str(epochs), "--dataset-size", "500", "--test-set-size", "100", "--align-every", "0",
            "--out", out, "--force", "--no-progress"]
    t0 = time.perf_counter()
    subprocess.run(argv, check=True, capture_output=True)
    return time.perf_counter() - t0


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--widths", default="25,250,1000,2000", help="hidden widths W [default: 25,250,1000,2000]")
    parser.add_argument("--epochs", type=int, default=EPOCHS, help=f"epochs per run [default: {EPOCHS}]")
    parser.add_argument("--align-up-to", type=int, default=1000, metavar="W",
                        help="time the alignment only up to this width [default: 1000]")
    parser.add_argument("--hidden-layers", type=int, choices=(1, 2), default=2,
                        help="hidden layers of width W [default: 2]")
    parser.add_argument("--no-command", action="store_true", help="skip the whole command's timing")
    parser.add_argument("--json", default=None, metavar="PATH", help="also write the rows here")
    parser.add_argument("--width", type=int, default=None, help=argparse.SUPPRESS)  # worker mode: one width
    args = parser.parse_args()
    if args.width is not None:
        print(json.dumps(measure(args.width, args.epochs, args.width <= args.align_up_to, args.hidden_layers)))
        return
    import tempfile

    rows = []
    with tempfile.TemporaryDirectory() as out:
        for width in (int(w) for w in args.widths.split(",")):
            worker = subprocess.run([sys.executable, __file__, "--width", str(width), "--epochs", str(args.epochs),
                                     "--align-up-to", str(args.align_up_to), "--hidden-layers",
                                     str(args.hidden_layers)], check=True, capture_output=True,
                                    text=True)
            row = json.loads(worker.stdout.strip().splitlines()[-1])
            if not args.no_command:
                row["command_s"] = command(width, args.epochs, out, args.hidden_layers)
            rows.append(row)
            print(json.dumps(row), flush=True)
    names = [n for n in ("setup_s", "epoch_s", "check_s", "align_s", "command_s") if any(n in r for r in rows)]
    print(f"\n{'W':>6} {'P':>10} " + " ".join(f"{n:>11}" for n in names))
    for row in rows:
        print(f"{row['width']:>6} {row['params']:>10} " + " ".join(
            f"{row[n]:>11.4g}" if n in row else f"{'—':>11}" for n in names))
    print("\ngrowth exponents d log t / d log P between consecutive widths:")
    for a, b in zip(rows, rows[1:]):
        scale = math.log(b["params"] / a["params"])
        print(f"  {a['width']} -> {b['width']}: " + ", ".join(
            f"{n} {math.log(b[n] / a[n]) / scale:.2f}" for n in names if n in a and n in b and a[n] > 0))
    if args.json:
        with open(args.json, "w") as f:
            json.dump(rows, f, indent=1)


if __name__ == "__main__":
    main()
