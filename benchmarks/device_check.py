#!/usr/bin/env python
"""Agreement of this device with a CPU run of the same config (run on each machine, compare the files).

    python benchmarks/device_check.py --write benchmarks/results/cpu_check.npz   # on the CPU machine
    python benchmarks/device_check.py --compare benchmarks/results/cpu_check.npz # on the device

Config: Experiment A (``PRESETS["A"]``) with 4 runs and 100 epochs, float64. Prints the largest relative
difference of every metric over runs and epochs.
"""

from __future__ import annotations

import argparse

import numpy as np


def metrics() -> dict[str, np.ndarray]:
    from l2rebound import Config
    from l2rebound.config import PRESETS
    from l2rebound.experiments import run_experiment

    result = run_experiment(Config(**{**PRESETS["A"], "runs": 4, "epochs": 100}))
    return {name: values for name, values in result.metrics.items()}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    action = parser.add_mutually_exclusive_group(required=True)
    action.add_argument("--write", metavar="FILE", help="store this machine's metrics")
    action.add_argument("--compare", metavar="FILE", help="compare this machine's metrics with a stored file")
    args = parser.parse_args()
    import jax

    ours = metrics()
    if args.write:
        np.savez(args.write, **ours)
        return
    with np.load(args.compare) as theirs:
        for name, values in ours.items():
            other = theirs[name]
            finite = np.isfinite(other) & (other != 0)
            rel = np.abs(values[finite] / other[finite] - 1).max() if finite.any() else 0.0
            same_nan = np.array_equal(np.isnan(values), np.isnan(other))
            print(f"{name:>16}: max relative difference {rel:.3g} ({jax.devices()[0]} vs CPU), NaN pattern "
                  f"{'equal' if same_nan else 'DIFFERENT'}")


if __name__ == "__main__":
    main()
