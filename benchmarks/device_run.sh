#!/usr/bin/env bash
# One prepared run on a GPU machine (no installs): agreement with a CPU run, the saturation scan and the
# benchmark table for the JAX engine. Writes everything under $OUT (default benchmarks/results/device).
# Needs benchmarks/results/cpu_check.npz from `python benchmarks/device_check.py --write ...` on the CPU.
set -u
cd "$(dirname "$0")/.."
export PYTHONPATH=src
export XLA_PYTHON_CLIENT_PREALLOCATE=false  # one process at a time must not hold the whole GPU
OUT=${OUT:-benchmarks/results/device}
mkdir -p "$OUT"
{
  nvidia-smi -L
  python -c "import jax; print('jax', jax.__version__, jax.devices())"
  python benchmarks/device_check.py --compare benchmarks/results/cpu_check.npz
  python benchmarks/saturation.py --runs 10,30,100,300,1000,2000 --epochs 100 --json "$OUT/saturation.json"
  python benchmarks/run.py --engines jax --repeats 3 --json "$OUT/benchmark.json"
} 2>&1 | tee "$OUT/log.txt"
