#!/usr/bin/env python
"""Heuristic (``symmetry.align``) versus certified (``certify.certified_align``) distance modulo the
symmetry group, on one core.

Small architectures, per kind of pair:

    random   student and teacher independent, every parameter N(0, 1)
    near     student = g·(teacher + 0.1·N(0, 1)) for a random group element g, teacher N(0, 1)

columns: pairs; misses of the heuristic and of the certified upper bound against the reference minimum
(brute force over the whole group where it has at most ``--brute-max`` elements, else the certified
optimum, marked *); how many pairs were certified optimal; median and worst CPU time per pair of
``certified_align`` (its heuristic start included; the search runs on one core, and CPU time is not
inflated by other processes) and its median node count.

[2, w, w, 1] for w in ``--wide-widths``, Glorot-like networks (weights N(0, 2/(fan_in + fan_out)),
biases N(0, 0.1²) pushed to |b| ≥ 1e-3, or zero-ish N(0, 1e-8²)):

    near     student = g·(teacher + 1e-2·N(0, 1)): CPU time per pair, nodes, fraction certified (and
             with g recovered), under a budget of ``--near-budget`` seconds
    random   independent student and teacher: relative gap (upper − lower)/upper left by a budget of
             ``--wide-budget`` seconds

    python benchmarks/align.py                 # the whole table (a few minutes)
    python benchmarks/align.py --scale 0.2     # fewer pairs everywhere
"""

from __future__ import annotations

import argparse
import itertools
import math
import statistics
import time

import numpy as np

from l2rebound.layout import draw_glorot

SMALL = ((1, 2, 2, 1), (2, 3, 3, 1), (2, 4, 3, 1), (2, 3, 2, 2, 1), (2, 6, 6, 6, 1))
PAIRS = {(1, 2, 2, 1): 200, (2, 3, 3, 1): 100, (2, 4, 3, 1): 30, (2, 3, 2, 2, 1): 50, (2, 6, 6, 6, 1): 30}
MISS_RTOL = 1e-9


def group_size(dims) -> int:
    return math.prod(math.factorial(d) * 2**d for d in dims[1:-1])


def brute_force(student, teacher, dims) -> float:
    """min over every group element of ‖g·θ_s − θ_t‖₂."""
    from l2rebound import symmetry as S

    per_layer = [list(itertools.product(itertools.permutations(range(d)), itertools.product((-1.0, 1.0), repeat=d)))
                 for d in dims[1:-1]]
    best = math.inf
    for combo in itertools.product(*per_layer):
        g = S.Symmetry(tuple(np.array(p) for p, _ in combo), tuple(np.array(s) for _, s in combo))
        best = min(best, float(np.linalg.norm(S.apply(g, student, dims) - teacher)))
    return best


def timed(f, *args):
    """(f(*args), CPU seconds it took): unlike wall time, not inflated by other processes."""
    start = time.process_time()
    out = f(*args)
    return out, time.process_time() - start


def small_row(dims, kind, pairs, seed, brute_max):
    from l2rebound import certify as C
    from l2rebound import symmetry as S
    from l2rebound.layout import num_params

    rng = np.random.default_rng([seed, *dims, kind == "near"])
    brute = group_size(dims) <= brute_max
    heuristic_misses = certified_misses = optimal = 0
    times, nodes = [], []
    for _ in range(pairs):
        teacher = rng.normal(size=num_params(dims))
        if kind == "random":
            student = rng.normal(size=teacher.shape)
        else:
            student = S.apply(S.random_symmetry(rng, dims), teacher + 0.1 * rng.normal(size=teacher.shape), dims)
        result, seconds = timed(C.certified_align, student, teacher, dims)
        times.append(seconds)
        nodes.append(result.nodes)
        optimal += result.optimal
        reference = brute_force(student, teacher, dims) if brute else result.upper
        heuristic_misses += S.l2_aligned(student, teacher, dims) > reference * (1 + MISS_RTOL)
        certified_misses += abs(result.upper - reference) > reference * MISS_RTOL
    return {"dims": dims, "kind": kind, "pairs": pairs, "brute": brute, "heuristic_misses": heuristic_misses,
            "certified_misses": certified_misses, "optimal": optimal, "median_s": statistics.median(times),
            "worst_s": max(times), "median_nodes": statistics.median(nodes)}


def wide_near(dims, pairs, seed, bias_floor, budget_s):
    from l2rebound import certify as C
    from l2rebound import symmetry as S

    rng = np.random.default_rng([seed, *dims, 1 if bias_floor else 0])
    times, nodes, optimal, recovered = [], [], 0, 0
    for _ in range(pairs):
        teacher = draw_glorot(rng, dims, bias_floor)
        g = S.random_symmetry(rng, dims)
        student = S.apply(g, teacher + 1e-2 * rng.normal(size=teacher.shape), dims)
        result, seconds = timed(C.certified_align, student, teacher, dims, C.Budget(seconds=budget_s))
        times.append(seconds)
        nodes.append(result.nodes)
        optimal += result.optimal
        recovered += result.optimal and S.is_identity(S.compose(result.symmetry, g))
    return times, nodes, optimal, recovered


def wide_random(dims, pairs, seed, budget_s):
    from l2rebound import certify as C
    from l2rebound import symmetry as S

    rng = np.random.default_rng([seed, *dims, 2])
    gaps, nodes, improved = [], [], 0
    for _ in range(pairs):
        student, teacher = draw_glorot(rng, dims, 1e-3), draw_glorot(rng, dims, 1e-3)
        result = C.certified_align(student, teacher, dims, C.Budget(seconds=budget_s))
        gaps.append(result.gap)
        nodes.append(result.nodes)
        improved += result.upper < S.l2_aligned(student, teacher, dims) * (1 - MISS_RTOL)
    return gaps, nodes, improved


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                     formatter_class=argparse.RawDescriptionHelpFormatter, epilog=__doc__)
    parser.add_argument("--scale", type=float, default=1.0, help="multiply every pair count [default: 1]")
    parser.add_argument("--seed", type=int, default=0, help="base seed [default: 0]")
    parser.add_argument("--brute-max", type=int, default=20_000,
                        help="brute force only groups up to this size [default: %(default)s]")
    parser.add_argument("--near-budget", type=float, default=30.0,
                        help="budget in seconds per near-teacher [2,w,w,1] pair [default: %(default)s]")
    parser.add_argument("--wide-budget", type=float, default=1.0,
                        help="budget in seconds per random-start [2,w,w,1] pair [default: %(default)s]")
    parser.add_argument("--wide-widths", default="25,50,100",
                        help="hidden widths w of the [2,w,w,1] rows [default: %(default)s]")
    parser.add_argument("--wide-pairs", type=int, default=20,
                        help="near-teacher pairs per [2,25,25,1] row, 25/w as many for width w (at least 3) "
                             "[default: %(default)s]")
    parser.add_argument("--random-pairs", type=int, default=10,
                        help="random-start pairs per [2,w,w,1] [default: %(default)s]")
    args = parser.parse_args(argv)
    import l2rebound.symmetry  # noqa: F401  (JAX's import, outside the timings)

    def count(n):
        return max(1, round(n * args.scale))

    print(f"{'dims':<16} {'kind':<7} {'pairs':>5} {'heur. miss':>10} {'cert. miss':>10} {'optimal':>8} "
          f"{'median s':>9} {'worst s':>8} {'med nodes':>9}")
    for dims in SMALL:
        for kind in ("random", "near"):
            r = small_row(dims, kind, count(PAIRS[dims]), args.seed, args.brute_max)
            star = "" if r["brute"] else "*"
            print(f"{','.join(map(str, dims)):<16} {kind:<7} {r['pairs']:>5} {r['heuristic_misses']:>9}{star or ' '} "
                  f"{r['certified_misses'] if r['brute'] else '-':>10} {r['optimal']:>8} {r['median_s']:>9.4f} "
                  f"{r['worst_s']:>8.4f} {r['median_nodes']:>9.0f}", flush=True)
    print("* no brute force (group too large): misses against the certified optimum; times: CPU s per pair")
    print()
    for width in (int(w) for w in args.wide_widths.split(",")):
        dims = (2, width, width, 1)
        name = ",".join(map(str, dims))
        n_near = count(max(3, round(args.wide_pairs * 25 / width)))  # wider layers cost more per pair
        for label, floor in (("|b| >= 1e-3", 1e-3), ("b ~ 1e-8", None)):
            times, nodes, optimal, recovered = wide_near(dims, n_near, args.seed, floor, args.near_budget)
            print(f"{name} near teacher ({label}): {n_near} pairs, certified {optimal}/{n_near} "
                  f"(relabelling recovered {recovered}), CPU per pair median {statistics.median(times) * 1e3:.0f} ms, "
                  f"worst {max(times) * 1e3:.0f} ms, nodes median {statistics.median(nodes):.0f}, worst {max(nodes)}",
                  flush=True)
        n_random = count(args.random_pairs)
        gaps, nodes, improved = wide_random(dims, n_random, args.seed, args.wide_budget)
        print(f"{name} random start, {args.wide_budget:g} s budget: {n_random} pairs, relative gap "
              f"(upper - lower)/upper median {statistics.median(gaps):.3f}, worst {max(gaps):.3f}; nodes median "
              f"{statistics.median(nodes):.0f}; upper below the heuristic's in {improved}/{n_random}", flush=True)


if __name__ == "__main__":
    main()
