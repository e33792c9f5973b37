#!/usr/bin/env python
"""float32 against float64 through the fused CPU kernel: the whole command

    l2rebound epoch --preset seed-A --align-every 0             (20 runs x 500 epochs, float32)
    l2rebound epoch --preset seed-A --align-every 0 --dtype float64

each in a fresh process, interleaved (float32, float64, float32, ...) so that a change in the machine's load
hits both alike, every one retraining into its own temporary store (``--force``): wall-clock seconds of each
(and the CPU seconds of its process, which other processes on the machine inflate less), and the ratio
float64 / float32 per pair and of the medians. Each run's manifest names the path that computed it
(``fast_path``), printed beside its time.

A process spends seconds on what does not depend on the dtype (importing, compiling, storing, drawing the
figures), which bounds the whole command's ratio; each pair therefore also runs both commands with
``--epochs 1``, and the difference (the 499 further epochs, the training proper) is given with its ratio too.

Then the same float32 command once more with ``L2REBOUND_KERNEL=0`` (XLA alone, as before the kernel served
float32; its time is printed too), and the largest relative difference, over the runs, between the final-epoch
metrics of the kernel's float32 result and XLA's: how far the kernel's float32 rounding moves what is stored.

    python benchmarks/float32.py               # 3 pairs and the XLA comparison (a few minutes)
    python benchmarks/float32.py --pairs 1
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

COMMAND = ["epoch", "--preset", "seed-A", "--align-every", "0", "--force", "--no-progress"]
METRICS = ("l2", "train_loss", "test_loss", "clean_test_loss", "stalled")


def run(dtype: str, out: Path, kernel: bool = True, epochs: int | None = None) -> tuple[float, float, Path]:
    """Wall-clock and CPU seconds of the command in a fresh process, and the folder of the result it stored."""
    argv = [sys.executable, "-m", "l2rebound.cli", *COMMAND, "--dtype", dtype, "--out", str(out)]
    if epochs is not None:
        argv += ["--epochs", str(epochs)]
    env = {**os.environ, "L2REBOUND_KERNEL": "1" if kernel else "0"}
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    start = time.perf_counter()
    subprocess.run(argv, check=True, capture_output=True, env=env)
    seconds = time.perf_counter() - start
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    cpu = after.ru_utime + after.ru_stime - before.ru_utime - before.ru_stime
    (folder,) = out.glob("epoch-*")
    return seconds, cpu, folder


def fast_path(folder: Path) -> str:
    return json.loads((folder / "manifest.json").read_text())["fast_path"]


def final_metrics(folder: Path) -> dict:
    """Every metric of ``METRICS`` at the last epoch, one value per run (float64 arrays)."""
    import numpy as np

    from l2rebound import store

    result = store.load(folder)
    return {name: np.asarray(result.metrics[name][:, -1], np.float64) for name in METRICS}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--pairs", type=int, default=3, help="float32/float64 pairs, interleaved (default 3)")
    args = parser.parse_args()
    import numpy as np

    wall = {(dtype, epochs): [] for dtype in ("float32", "float64") for epochs in (500, 1)}
    cpu = {key: [] for key in wall}
    with tempfile.TemporaryDirectory(prefix="l2rebound-float32-") as root:
        kernel_folder = None
        for pair in range(args.pairs):
            for epochs in (500, 1):
                for dtype in ("float32", "float64"):
                    folder_name = f"{dtype}-{epochs}-{pair}"
                    seconds, cpu_s, folder = run(dtype, Path(root) / folder_name, epochs=None if epochs == 500 else 1)
                    wall[dtype, epochs].append(seconds)
                    cpu[dtype, epochs].append(cpu_s)
                    print(f"pair {pair + 1}  {dtype}  epochs {epochs:3d}  {seconds:6.2f} s  (CPU {cpu_s:6.2f} s)  "
                          f"{fast_path(folder)}", flush=True)
                    if dtype == "float32" and epochs == 500:
                        kernel_folder = folder
            ratio = wall["float64", 500][-1] / wall["float32", 500][-1]
            print(f"pair {pair + 1}  whole command float64 / float32 = {ratio:.2f}", flush=True)

        def median(table, dtype, epochs):
            return statistics.median(table[dtype, epochs])

        for name, table in (("wall", wall), ("CPU", cpu)):
            f32, f64 = median(table, "float32", 500), median(table, "float64", 500)
            t32 = f32 - median(table, "float32", 1)
            t64 = f64 - median(table, "float64", 1)
            print(f"median {name:4s}  whole command: float32 {f32:.2f} s, float64 {f64:.2f} s, float64 / float32 = "
                  f"{f64 / f32:.2f};  499 epochs (minus --epochs 1): float32 {t32:.2f} s, float64 {t64:.2f} s, "
                  f"float64 / float32 = {t64 / t32:.2f}")

        seconds, cpu_s, xla_folder = run("float32", Path(root) / "float32-xla", kernel=False)
        print(f"float32 with L2REBOUND_KERNEL=0  {seconds:6.2f} s  (CPU {cpu_s:6.2f} s)  {fast_path(xla_folder)}")
        mine, xla = final_metrics(kernel_folder), final_metrics(xla_folder)
        print("final-epoch metrics, float32, kernel against XLA: largest relative difference over the runs")
        for name in METRICS:
            a, b = mine[name], xla[name]
            scale = np.maximum(np.abs(b), np.finfo(np.float64).tiny)
            print(f"  {name:16s} {np.max(np.abs(a - b) / scale):.3e}   (XLA's values {b.min():.4g} .. {b.max():.4g})")


if __name__ == "__main__":
    main()
