#!/usr/bin/env python
"""Benchmark the JAX engine against the NumPy reference on the project's standard workloads.

Cases (``--quick`` sets ``epochs=50`` in every one of them and nothing else):

    A         Config(**PRESETS["A"])                          10 runs x 500 epochs, dims 2,25,25,1, N=10000, M=1000
    noise     Config(experiment="noise")                      25 levels x 10 runs x 500 epochs
    A100      Config(**PRESETS["A"], runs=100)                100 runs x 500 epochs
    width100  Config(**PRESETS["A"], teacher_dims=(2,100,100,1))

Engines:

    jax        ``l2rebound.experiments.run_experiment(config)``: the whole experiment, set-up (teacher,
               data, student draws) included. One warm-up call, then ``--repeats`` timed calls.
    reference  ``l2rebound.reference.train(...)`` run by run (noise: per (level, run) pair, labels
               ``train.labels(sigma)``), from the start that ``experiments.setup_runs`` draws (the same
               start the JAX engine uses). Only the ``reference.train`` calls are timed; drawing the start
               (with JAX) is not. No warm-up (there is nothing to compile). When one repeat would take
               longer than ``--max-reference-seconds``, only k = 2 runs (pairs) are timed and the time is
               extrapolated linearly in the number of runs; such cells say so.

FLOP count (analytic, the arithmetic the algorithm needs, not what either engine executes):

    S = sum_l d_l * d_{l-1}                       (multiply-adds of one forward pass per sample)
    FLOPs per run-epoch = 3 * 2 * N * S  +  2 * M * S
                        (forward + backward on the N training samples, forward on the M test samples)
    FLOPs of a case     = runs * epochs * FLOPs per run-epoch          (runs = levels * runs for noise)

Biases, tanh, the regulariser, metrics and the projection are not counted. A: S = 700, 43.4 MFLOP per
run-epoch, 217 GFLOP per experiment.

Peak: float64 GEMM throughput measured at start-up in the parent process: numpy's (2000x2000 @ 2000x2000,
best of 3, its own BLAS threading) on a CPU-only machine; on an accelerator, JAX's (8192x8192) on it.

Each (case, engine) cell runs in its own subprocess (``run.py --case A --engine jax`` is the worker), so
its peak memory (ru_maxrss) is that cell's alone (it includes the Python, NumPy and JAX runtimes).
"""

from __future__ import annotations

import argparse
import datetime
import json
import os
import platform
import resource
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

CASES = ("A", "noise", "A100", "width100")
ENGINES = ("jax", "reference")
QUICK_EPOCHS = 50
PROBE_RUNS = 2
HERE = Path(__file__).resolve().parent


# ---- workloads ----------------------------------------------------------------------------------------
def make_config(case: str, quick: bool):
    from l2rebound import Config
    from l2rebound.config import PRESETS

    extra = {"epochs": QUICK_EPOCHS} if quick else {}
    if case == "A":
        return Config(**PRESETS["A"], **extra)
    if case == "noise":
        return Config(experiment="noise", **extra)
    if case == "A100":
        return Config(**PRESETS["A"], runs=100, **extra)
    if case == "width100":
        return Config(**PRESETS["A"], teacher_dims=(2, 100, 100, 1), **extra)
    raise ValueError(f"unknown case {case!r}")


def trainings(config) -> int:
    """Number of independent trainings: runs, or levels x runs for the noise sweep."""
    from l2rebound.results import kind_of

    return kind_of(config).trainings(config)


def flops(config) -> float:
    dims = config.student_dims
    s = sum(a * b for a, b in zip(dims[:-1], dims[1:]))
    per_run_epoch = 3 * 2 * config.dataset_size * s + 2 * config.test_set_size * s
    return float(trainings(config) * config.epochs * per_run_epoch)


def describe(config) -> str:
    dims = ",".join(map(str, config.student_dims))
    if config.experiment == "noise":
        return f"{len(config.noise_levels)}x{config.runs}x{config.epochs} [{dims}]"
    return f"{config.runs}x{config.epochs} [{dims}]"


# ---- worker: one case on one engine -------------------------------------------------------------------
def worker_jax(config, repeats: int) -> dict:
    from l2rebound.experiments import run_experiment

    t0 = time.perf_counter()
    run_experiment(config)
    first = time.perf_counter() - t0
    if repeats == 0:  # the cached-start probe: the first call is all it measures
        return {"first_s": first}
    times = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        run_experiment(config)
        times.append(time.perf_counter() - t0)
    wall = statistics.median(times)
    return {"first_s": first, "times_s": times, "wall_s": wall, "compile_s": first - wall,
            "extrapolated_from": None}


def reference_jobs(config):
    """One closure per training that calls ``reference.train`` from the engine's own start."""
    import jax
    import numpy as np

    from l2rebound import reference
    from l2rebound.experiments import setup_runs

    runs = np.arange(1, config.runs + 1)
    if config.experiment == "noise":  # as kinds.noise.engine.sweep: one teacher from seed, data from seed + r
        _, problem, student, _ = setup_runs(config, np.full(config.runs, config.seed), config.seed + runs)
        pairs = [(sigma, r) for sigma in config.noise_levels for r in range(config.runs)]
    else:
        _, problem, student, _ = setup_runs(config, config.seed + runs, config.seed + runs)
        pairs = [(config.noise_sigma, r) for r in range(config.runs)]
    student, teacher, train, test = jax.tree.map(np.asarray, (student, problem.teacher, problem.train, problem.test))

    def job(sigma, r):
        def call():
            args = (student[r], teacher[r], config.student_dims, train.x[r], train.clean[r] + sigma * train.z[r],
                    test.x[r], test.clean[r] + sigma * test.z[r], test.clean[r])
            t0 = time.perf_counter()  # label arithmetic above is not timed
            reference.train(*args, epochs=config.epochs, rule=config.train, alpha=config.alpha, beta=config.beta,
                            rho=config.rho, optimizer=config.optimizer, lr=config.learning_rate)
            return time.perf_counter() - t0
        return call

    return [job(sigma, r) for sigma, r in pairs]


def worker_reference(config, repeats: int, max_seconds: float) -> dict:
    jobs = reference_jobs(config)
    n = len(jobs)
    k = min(PROBE_RUNS, n)
    # spread the probe over the list (noise: lowest and highest level), cost does not depend on sigma
    probe = [jobs[round(i * (n - 1) / max(k - 1, 1))] for i in range(k)]
    first = sum(call() for call in probe)
    estimate = first * n / k
    if estimate > max_seconds and k < n:
        times = [first] + [sum(call() for call in probe) for _ in range(repeats - 1)]
        measured = statistics.median(times)
        return {"times_s": times, "wall_s": measured * n / k, "measured_s": measured, "compile_s": None,
                "extrapolated_from": k, "first_s": None}
    times = [sum(call() for call in jobs) for _ in range(repeats)]
    return {"times_s": times, "wall_s": statistics.median(times), "compile_s": None, "extrapolated_from": None,
            "first_s": None}


def run_worker(args) -> None:
    config = make_config(args.case, args.quick)
    import jax
    import numpy as np  # noqa: F401

    if args.engine == "jax":
        from l2rebound.cli import cache_compilations, configure_process

        configure_process()  # the process the CLI runs in: what `l2rebound epoch` gets
        if args.compilation_cache:
            cache_compilations(args.compilation_cache)
        out = worker_jax(config, args.repeats)
    else:
        out = worker_reference(config, args.repeats, args.max_reference_seconds)
    out.update(case=args.case, engine=args.engine, config=config.to_dict(), flop=flops(config),
               peak_rss_mb=resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024,
               jax_devices=[str(d) for d in jax.devices()])
    print(json.dumps(out))


# ---- parent: machine, cells, table, JSON --------------------------------------------------------------
def gemm_peak(n: int = 2000, tries: int = 3) -> float:
    """Best-of-``tries`` float64 GEMM rate in GFLOP/s (2 n^3 FLOPs per product): numpy's on a CPU-only
    machine; on an accelerator, JAX's on that device with n = 8192 (the engine runs there)."""
    import jax
    import numpy as np

    if jax.default_backend() != "cpu":
        n = 8192
        with jax.enable_x64(True):
            a = jax.random.uniform(jax.random.key(0), (n, n), "float64")
            product = jax.jit(lambda a: a @ a)
            product(a).block_until_ready()  # compile and warm
            best = min(_timed(lambda: product(a).block_until_ready()) for _ in range(tries))
        return 2 * n**3 / best / 1e9
    rng = np.random.default_rng(0)
    a, b = rng.random((n, n)), rng.random((n, n))
    a @ b  # warm the BLAS threads
    best = min(_timed(lambda: a @ b) for _ in range(tries))
    return 2 * n**3 / best / 1e9


def _timed(fn) -> float:
    t0 = time.perf_counter()
    fn()
    return time.perf_counter() - t0


def machine() -> dict:
    import jax
    import numpy as np

    from l2rebound.cli import configure_process

    configure_process()  # the device count the workers see

    cpu = platform.processor() or "unknown"
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    return {"host": socket.gethostname(), "cpu_model": cpu, "cpu_count": os.cpu_count(),
            "cpus_available": len(os.sched_getaffinity(0)), "platform": platform.platform(),
            "python": platform.python_version(), "numpy": np.__version__, "jax": jax.__version__,
            "jaxlib": getattr(__import__("jaxlib"), "__version__", "?"),
            "jax_devices": [str(d) for d in jax.devices()], "XLA_FLAGS": os.environ.get("XLA_FLAGS", "")}


def run_cell(case: str, engine: str, args) -> dict:
    def command(repeats: int, *extra: str) -> list[str]:
        return [sys.executable, str(Path(__file__).resolve()), "--case", case, "--engine", engine,
                "--repeats", str(repeats), "--max-reference-seconds", str(args.max_reference_seconds),
                *(["--quick"] if args.quick else []), *extra]

    if engine != "jax":
        return _worker(command(args.repeats), case, engine)
    # JAX: the timed worker fills an empty on-disk compilation cache (the kind the CLI keeps); a second
    # process then times only its first call, which finds every program there, as a new command does
    with tempfile.TemporaryDirectory() as cache:
        out = _worker(command(args.repeats, "--compilation-cache", cache), case, engine)
        if "error" not in out:
            out["cached_first_s"] = _worker(command(0, "--compilation-cache", cache), case, engine).get("first_s")
    return out


def _worker(cmd: list[str], case: str, engine: str) -> dict:
    t0 = time.perf_counter()
    proc = subprocess.run(cmd, capture_output=True, text=True)
    elapsed = time.perf_counter() - t0
    try:
        return json.loads(proc.stdout.strip().splitlines()[-1])
    except (IndexError, json.JSONDecodeError):
        tail = (proc.stderr or proc.stdout).strip().splitlines()[-5:]
        print(f"  {case}/{engine} FAILED (exit {proc.returncode}, {elapsed:.0f} s):\n    " + "\n    ".join(tail),
              file=sys.stderr)
        return {"case": case, "engine": engine, "error": "\n".join(tail), "returncode": proc.returncode}


def table(results: list[dict], peak: float, args) -> str:
    by = {(r["case"], r["engine"]): r for r in results}
    head = ["case", "engine", "workload", "wall s", "compile s", "cached 1st s", "GFLOP/s", "% peak", "peak MB",
            "JAX/ref"]
    rows, footnote = [], False
    for r in results:
        case, engine = r["case"], r["engine"]
        if "error" in r:
            rows.append([case, engine, "", "FAILED", "", "", "", "", "", ""])
            continue
        from l2rebound import Config

        config = Config.from_dict(r["config"])
        mark = ""
        wall = f"{r['wall_s']:.2f}"
        if r["extrapolated_from"]:
            unit = "(level, run) pairs" if config.experiment == "noise" else "runs"
            wall += f" (extrapolated from {r['extrapolated_from']} {unit})"
            mark, footnote = "*", True
        rate = r["flop"] / r["wall_s"] / 1e9
        ratio = ""
        ref = by.get((case, "reference"))
        if engine == "jax" and ref and "error" not in ref:
            ratio = f"{r['wall_s'] / ref['wall_s']:.3f}" + ("*" if ref["extrapolated_from"] else "")
            footnote = footnote or bool(ref["extrapolated_from"])
        rows.append([case, engine, describe(config), wall,
                     "" if r["compile_s"] is None else f"{r['compile_s']:.2f}",
                     "" if r.get("cached_first_s") is None else f"{r['cached_first_s']:.2f}",
                     f"{rate:.2f}{mark}", f"{100 * rate / peak:.1f}{mark}", f"{r['peak_rss_mb']:.0f}", ratio])
    widths = [max(len(str(x)) for x in col) for col in zip(head, *rows)]
    fmt = lambda row: "  ".join(str(x).ljust(w) for x, w in zip(row, widths))  # noqa: E731
    lines = [fmt(head), fmt(["-" * w for w in widths])] + [fmt(row) for row in rows]
    notes = [f"wall = median of {args.repeats} repeat(s) (JAX: after one warm-up call); "
             "compile = JAX first call - median (empty compilation cache); cached 1st s = a new process's "
             "first call with the programs in the on-disk cache the CLI keeps; "
             f"peak = float64 GEMM {peak:.1f} GFLOP/s (numpy; JAX on an "
             "accelerator); "
             "JAX/ref = wall-time ratio (< 1: JAX faster); peak MB = ru_maxrss of the cell's own process."]
    if args.quick:
        notes.insert(0, f"QUICK RUN: every case shrunk to {QUICK_EPOCHS} epochs; not the default workloads.")
    if footnote:
        notes.append("* derived from an extrapolated reference time, not a measurement.")
    return "\n".join(lines + [""] + notes)


def main(argv=None) -> None:
    # on a GPU, JAX would otherwise reserve most of the memory in the parent (GEMM peak) and in each cell
    os.environ.setdefault("XLA_PYTHON_CLIENT_PREALLOCATE", "false")
    parser = argparse.ArgumentParser(
        description="Time the JAX engine and the NumPy reference on Experiment A, the noise sweep, a 100-run A "
                    "and a width-100 A; print one table and write the results as JSON. Each (case, engine) "
                    "runs in its own subprocess.",
        formatter_class=argparse.RawDescriptionHelpFormatter,
        epilog="FLOPs are counted analytically: runs x epochs x (6 N S + 2 M S), S = sum_l d_l d_{l-1}. "
               "See benchmarks/README.md.")
    parser.add_argument("--cases", default=",".join(CASES),
                        help=f"comma-separated cases out of {','.join(CASES)} [default: all]. A: PRESETS['A'] "
                             "(10 runs x 500 epochs, 2,25,25,1); noise: Config(experiment='noise') (25 levels x "
                             "10 runs x 500 epochs); A100: A with 100 runs; width100: A with dims 2,100,100,1")
    parser.add_argument("--engines", default=",".join(ENGINES),
                        help="comma-separated engines out of jax,reference [default: both]. jax: "
                             "experiments.run_experiment; reference: reference.train run by run from the same start")
    parser.add_argument("--repeats", type=int, default=3,
                        help="timed repeats per cell; the wall time is their median. JAX first makes one extra "
                             "warm-up call, not part of the median (its excess over the median is the compile time) "
                             "[default: 3]")
    parser.add_argument("--quick", action="store_true",
                        help=f"shrink every case to {QUICK_EPOCHS} epochs (runs, levels, sizes unchanged) so the "
                             "whole benchmark takes a few minutes; the table says so")
    parser.add_argument("--json", type=Path, default=None,
                        help="where to write the results and the machine description "
                             "[default: benchmarks/results/<date>-<host>.json]")
    parser.add_argument("--max-reference-seconds", type=float, default=120.0,
                        help=f"if one repeat of a reference cell is estimated (from timing {PROBE_RUNS} runs) to "
                             f"take longer than this, time only {PROBE_RUNS} runs (noise: (level, run) pairs) per "
                             "repeat and extrapolate linearly in the number of runs; the cell is marked "
                             "'(extrapolated from k runs)' [default: 120]")
    parser.add_argument("--case", choices=CASES, help="worker mode (internal): run one case and print its JSON")
    parser.add_argument("--engine", choices=ENGINES, help="worker mode (internal): the engine for --case")
    parser.add_argument("--compilation-cache", metavar="DIR",
                        help="worker mode (internal): keep XLA's compiled programs in DIR (the CLI's on-disk cache)")
    args = parser.parse_args(argv)
    if args.repeats < (0 if args.compilation_cache else 1):  # 0: the worker's cached-start probe
        parser.error("--repeats must be >= 1")

    if args.case or args.engine:
        if not (args.case and args.engine):
            parser.error("worker mode needs both --case and --engine")
        run_worker(args)
        return

    cases = [c.strip() for c in args.cases.split(",") if c.strip()]
    engines = [e.strip() for e in args.engines.split(",") if e.strip()]
    for name, chosen, allowed in (("--cases", cases, CASES), ("--engines", engines, ENGINES)):
        bad = [c for c in chosen if c not in allowed]
        if bad or not chosen:
            parser.error(f"{name}: unknown or empty {bad or chosen}; choose from {','.join(allowed)}")

    print("measuring the float64 GEMM peak ...", file=sys.stderr)
    peak = gemm_peak()
    info = machine()
    print(f"  {peak:.1f} GFLOP/s on {info['cpu_model']} ({info['cpus_available']} cpus)", file=sys.stderr)
    results = []
    for case in cases:
        for engine in engines:
            print(f"running {case} / {engine} ...", file=sys.stderr, flush=True)
            t0 = time.perf_counter()
            results.append(run_cell(case, engine, args))
            print(f"  done in {time.perf_counter() - t0:.1f} s", file=sys.stderr, flush=True)

    print(table(results, peak, args))
    path = args.json or HERE / "results" / f"{datetime.date.today().isoformat()}-{info['host']}.json"
    path.parent.mkdir(parents=True, exist_ok=True)
    payload = {"date": datetime.datetime.now().isoformat(timespec="seconds"), "command": sys.argv,
               "options": {"cases": cases, "engines": engines, "repeats": args.repeats, "quick": args.quick,
                           "max_reference_seconds": args.max_reference_seconds},
               "machine": {**info, "gemm_peak_gflops": peak},
               "flop_formula": "runs*epochs*(6*N*S + 2*M*S), S = sum_l d_l*d_{l-1}",
               "results": results}
    path.write_text(json.dumps(payload, indent=2))
    print(f"\nresults written to {path}")


if __name__ == "__main__":
    main()
