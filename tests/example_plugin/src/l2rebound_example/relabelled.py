"""The ``relabelled`` experiment kind: the epoch experiment, but each student starts at a random relabelling
(hidden units permuted and sign-flipped) of its perturbed teacher.

The start computes the same function as the perturbed teacher, yet its raw ℓ₂ to the teacher is large. Plain
gradient descent commutes with relabelling, so the aligned ℓ₂ should follow the epoch experiment's curve while
the raw ℓ₂ stays far away: a check that the aligned distance sees through the symmetry during training.

A kind is a ``registry.KindSpec`` (plain data, registered by the entry point ``relabelled`` of the group
``l2rebound.kinds``), a result type (here the epoch experiment's, renamed), an engine entry built from the
shared machinery of ``l2rebound.experiments`` and figures (here the epoch experiment's).
"""

from dataclasses import dataclass
from typing import ClassVar

import numpy as np

from l2rebound.kinds.epoch.result import EpochResult
from l2rebound.registry import KindSpec

SPEC = KindSpec(
    name="relabelled",
    help="the epoch experiment from a randomly relabelled start (example plugin)",
    description="Train R students that start at a random permutation and sign flip of the hidden units of their "
                "perturbed teacher, and record ℓ₂, the aligned ℓ₂ and the losses every epoch.",
    result="l2rebound_example.relabelled:RelabelledResult",
    engine="l2rebound_example.relabelled:run",
    figures="l2rebound.kinds.epoch.figures:figures",
    views=("absolute", "normalised"),
    fields=("noise_sigma", "align_every"),
    required=("align_every",),
    example={"teacher_dims": (2, 4, 1), "dataset_size": 64, "test_set_size": 16, "epochs": 5, "runs": 2,
             "initial_permut": 1e-2},
    sweepable=True,
    curves=True,
)


@dataclass(frozen=True, repr=False, eq=False)
class RelabelledResult(EpochResult):
    """As ``EpochResult``; ``student_init`` holds the relabelled starts."""

    kind: ClassVar[str] = "relabelled"


def relabel(students: np.ndarray, dims: tuple[int, ...], seeds: np.ndarray) -> np.ndarray:
    """Each student θ (R, P) under a random group element drawn from its run's seed (R,)."""
    from l2rebound.symmetry import apply, random_symmetry

    return np.stack([apply(random_symmetry(np.random.default_rng(int(seed)), dims), theta, dims)
                     for theta, seed in zip(students, seeds)])


def run(config, on_progress=None, checkpoint=None) -> RelabelledResult:
    """The experiment of ``config``: run r draws teacher, data and perturbed start from seed + r (as the epoch
    experiment does), relabels the start, trains it and measures the distances at the kept epochs."""
    from l2rebound.precision import float64  # the engine (JAX), imported when the kind runs

    return float64(_run)(config, on_progress, checkpoint)


def _run(config, on_progress, checkpoint) -> RelabelledResult:
    from l2rebound import experiments as X
    from l2rebound.layout import num_params
    from l2rebound.results import COLUMNS, DISTANCES, kept_epochs

    keep, dims, dtype = kept_epochs(config), config.student_dims, np.dtype(config.dtype)
    seeds = config.seed + np.arange(1, config.runs + 1)
    X.check_memory(config)

    def work(index, progress, blocks):
        rows = seeds[index - 1]
        teacher, problem, student, keys = X.setup_runs(config, rows, rows)
        start = relabel(np.asarray(student), dims, rows).astype(dtype)
        metrics, diverged, _, kept = X.train_runs(config, X.hyper_of(config, len(rows)), problem, start, keys,
                                                  progress, keep, blocks=blocks)
        found = X.distances(kept, np.asarray(problem.teacher)[:, None], dims, config.align_budget)
        for name in DISTANCES:
            metrics[name] = np.full(metrics["l2"].shape, np.nan, dtype)
            metrics[name][:, keep] = X.round_down(found[name], dtype) if name == "l2_aligned_lower" else found[name]
        return {**metrics, "teacher": teacher, "student_init": start, "diverged_at": diverged, "kept_theta": kept}

    students = num_params(dims)
    expect = {**{name: (config.epochs + 1,) for name in COLUMNS}, "teacher": (num_params(config.teacher_dims),),
              "student_init": (students,), "diverged_at": (), "kept_theta": (len(keep), students)}
    out = X.run_chunks(config.runs, config.epochs, work, expect, on_progress, checkpoint)
    result = RelabelledResult(config, {name: out[name] for name in COLUMNS}, out["teacher"], out["student_init"],
                              out["diverged_at"], keep, out["kept_theta"])
    return X.attach_provenance(result)
