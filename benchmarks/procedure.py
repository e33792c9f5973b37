#!/usr/bin/env python
"""The compression study's cost: preset paper-compress (15 alphas x 10 repetitions, up to 20 000 regularised
and 10 000 fine-tuning epochs per run) under each training rule, in memory (nothing stored), each in its own
process so that no compile carries over.

For each rule it prints the wall time of the whole computation and the engine's own split of it (the manifest's
``seconds``): training (both phases, compiles included), the pruning search (random-gradient pruning and TAMADE
for every run) and the certified alignment of the pruned students; and the run-epochs trained against the
most the stopping rule allows.

    python benchmarks/procedure.py                    # drr, l1, pmmp
    python benchmarks/procedure.py --rules drr --runs 2
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys


def measure(rule: str, runs: int, dtype: str) -> dict:
    import time

    import numpy as np

    from l2rebound import presets
    from l2rebound.results import compute

    config = presets["paper-compress"].replace(train=rule, runs=runs, dtype=dtype)
    start = time.perf_counter()
    result = compute(config)
    wall = time.perf_counter() - start
    m = result.metrics
    trained = int(np.sum(m["epochs_regularised"]) + np.sum(m["epochs_finetune"]))
    most = len(m["run"]) * (config.epochs + config.finetune_epochs)
    return {"rule": rule, "runs": len(m["run"]), "dtype": dtype, "wall_s": round(wall, 1),
            **{f"{k}_s": v for k, v in result.manifest["seconds"].items()},
            "run_epochs": trained, "run_epochs_most": most}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--rules", default="drr,l1,pmmp")
    parser.add_argument("--runs", type=int, default=10, help="repetitions per alpha [default: 10]")
    parser.add_argument("--dtype", default="float64", choices=("float64", "float32"))
    parser.add_argument("--one", help=argparse.SUPPRESS)  # internal: measure one rule in this process
    args = parser.parse_args()
    if args.one:
        print(json.dumps(measure(args.one, args.runs, args.dtype)))
        return
    rows = []
    for rule in args.rules.split(","):
        out = subprocess.run([sys.executable, __file__, "--one", rule, "--runs", str(args.runs), "--dtype",
                              args.dtype], capture_output=True, text=True, check=True)
        rows.append(json.loads(out.stdout.strip().splitlines()[-1]))
        row = rows[-1]
        parts = ", ".join(f"{k[:-2]} {row[k]:.0f} s ({row[k] / row['wall_s']:.0%})"
                          for k in ("training_s", "pruning_s", "alignment_s") if k in row)
        print(f"{rule:>5}: {row['wall_s']:.0f} s for {row['runs']} runs ({parts}); {row['run_epochs']} run-epochs "
              f"trained of at most {row['run_epochs_most']}", flush=True)


if __name__ == "__main__":
    main()
