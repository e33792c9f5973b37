"""The compression experiment's engine entry: train, prune, fine-tune with a mask, and a vanilla student from
the same start; every student aligned to its teacher by the certified search (JAX)."""

from __future__ import annotations

from typing import NamedTuple

import jax
import numpy as np

from l2rebound.config import Config
from l2rebound.experiments import (
    alignments,
    attach_provenance,
    check_memory,
    holding_back_one,
    hyper_of,
    run_chunks,
    setup_runs,
    train_plan,
    train_runs,
)
from l2rebound.kinds.compress.result import CompressionResult
from l2rebound.kinds.epoch.engine import epoch_plan
from l2rebound.nets import num_params, pad
from l2rebound.precision import float64
from l2rebound.pruning import alive_units, prune, recovery, teacher_support
from l2rebound.results import COLUMNS, METRICS, kept_epochs
from l2rebound.symmetry import apply
from l2rebound.thresholds import searched


class _Phase(NamedTuple):
    """The chunks of one phase of an experiment in its checkpoint, under keys that start with ``prefix``."""

    checkpoint: object
    prefix: str

    def load(self, key: str):
        return self.checkpoint.load(self.prefix + key)

    def save(self, key: str, arrays: dict) -> None:
        self.checkpoint.save(self.prefix + key, arrays)


def aligned_students(students, teachers, dims: tuple[int, ...], align_budget: int | None) -> dict[str, np.ndarray]:
    """Each student (R, P) relabelled onto its teacher (R, P) (``alignments``): ``theta`` (R, P) = g·θ,
    ``upper`` and ``lower`` (R,), the certified bounds on the distance; NaN for a student that is not finite."""
    out = {"theta": np.full(students.shape, np.nan), "upper": np.full(len(students), np.nan),
           "lower": np.full(len(students), np.nan)}
    for (r,), found in alignments(students, teachers, dims, align_budget):
        out["theta"][r] = apply(found.symmetry, students[r], dims)
        out["upper"][r], out["lower"][r] = found.upper, found.lower
    return out


def searched_students(config: Config, train: Config, students, seeds) -> tuple[np.ndarray, np.ndarray]:
    """The trained students (R, P) of ``train`` (the epoch config of the compression config ``config``) pruned
    by search on their own training data (``thresholds.searched`` at ``config``'s tolerance and resolution;
    each run's random batches from its seed): the pruned students (R, P) and their thresholds (R,)."""
    _, problem, _, _ = setup_runs(train, seeds, seeds)
    labels = problem.train.labels(np.asarray(train.noise_sigma, train.dtype))
    keys = jax.vmap(jax.random.key)(np.asarray(seeds))
    pruned, thresholds = searched(np.asarray(students, train.dtype), problem.train.x, labels, keys,
                                  train.student_dims, config.tamade_tolerance, config.tamade_resolution)
    return np.asarray(pruned), np.asarray(thresholds)


@float64
def run(config: Config, on_progress=None, checkpoint=None) -> CompressionResult:
    """The compression experiment for ``config`` (pure, like the epoch experiment). Three phases, each resumable
    from ``checkpoint``: the epoch experiment of the config (E epochs); its students at epoch E pruned and
    fine-tuned F epochs with a mask; the same runs trained E + F epochs by the vanilla rule. ``on_progress(n)``
    is called as run-epochs complete (R · 2(E + F) in total)."""
    epochs, tune_epochs = config.epochs, config.finetune_epochs
    check_memory(config.replace(epochs=epochs + tune_epochs))  # the vanilla phase is the longest
    train = config.replace(experiment="epoch", prune_threshold=Config.prune_threshold, finetune_epochs=0,
                           prune_method=Config.prune_method, tamade_tolerance=Config.tamade_tolerance,
                           tamade_resolution=Config.tamade_resolution, finetune_train=Config.finetune_train)
    tune = train.replace(epochs=tune_epochs, **({"train": "vanilla"} if config.finetune_train == "vanilla" else {}))
    plain = train.replace(train="vanilla", epochs=epochs + tune_epochs)
    phase = (lambda prefix: _Phase(checkpoint, prefix)) if checkpoint else (lambda prefix: None)
    keep = kept_epochs(train)  # ends at E
    first = train_plan(epoch_plan([train]), keep, on_progress, [phase("train-")])
    before = first["kept_theta"][:, -1]
    seeds = config.seed + np.arange(1, config.runs + 1)
    if config.prune_method == "search":
        pruned, thresholds = searched_students(config, train, before, seeds)
        mask = (pruned != 0).astype(pruned.dtype)
    else:
        (pruned, mask), thresholds = prune(before, config.prune_threshold), np.full(config.runs, config.prune_threshold)

    def finetune(index, progress, blocks):
        rows = index - 1
        _, problem, _, keys = setup_runs(train, seeds[rows], seeds[rows])
        metrics, diverged, theta, _ = train_runs(tune, hyper_of(tune, len(rows)), problem._replace(mask=mask[rows]),
                                                 pruned[rows], keys, progress, blocks=blocks)
        return {**metrics, "diverged_at": diverged, "theta": theta}

    students = num_params(config.student_dims)
    expect = {**{name: (tune_epochs + 1,) for name in METRICS}, "diverged_at": (), "theta": (students,)}
    tuned = run_chunks(config.runs, tune_epochs, finetune, expect, on_progress, phase("finetune-"))
    reported, last = holding_back_one(on_progress)  # the bar ends after the alignments below, not before them
    vanilla = train_plan(epoch_plan([plain]), np.array([epochs + tune_epochs]), reported, [phase("vanilla-")])
    after = np.where((tuned["diverged_at"] >= 0)[:, None], np.nan, tuned["theta"])  # as training's kept θ
    padded = np.stack([np.asarray(pad(t, config.teacher_dims, config.student_dims)) for t in first["teacher"]])
    dims = config.student_dims
    aligned = {name: aligned_students(theta, padded, dims, config.align_budget)
               for name, theta in (("before", before), ("after", after))}
    last()
    support = teacher_support(padded, dims, zero_biases=config.bias_init == "zero")
    recovered = recovery(aligned["after"]["theta"], padded, support)
    finite = np.isfinite(after).all(axis=1)
    alive = np.array([alive_units(theta, dims) if ok else (-1,) * (len(dims) - 2) for theta, ok in zip(after, finite)])

    def nonzero(theta):
        return np.where(np.isfinite(theta).all(axis=1), (theta != 0).sum(axis=1), -1)

    last = {name: tuned[name][:, -1] for name in METRICS}
    table = {"run": np.arange(1, config.runs + 1), "threshold": thresholds,
             "nonzero_before": nonzero(before), "nonzero_after": nonzero(after),
             **{f"alive_units_{h}": alive[:, h - 1] for h in range(1, len(dims) - 1)},
             **{f"teacher_units_{h}": np.full(config.runs, config.teacher_dims[h]) for h in range(1, len(dims) - 1)},
             "train_loss_before": first["train_loss"][:, epochs], "train_loss_after": last["train_loss"],
             "clean_test_loss_before": first["clean_test_loss"][:, epochs],
             "clean_test_loss_after": last["clean_test_loss"], "l2_before": first["l2"][:, epochs],
             "l2_after": last["l2"], "l2_aligned_before": aligned["before"]["upper"],
             "l2_aligned_after": aligned["after"]["upper"], "l2_aligned_lower_before": aligned["before"]["lower"],
             "l2_aligned_lower_after": aligned["after"]["lower"],
             "support_recovered": np.where(finite, recovered["support_recovered"], -1), "l1_after": recovered["l1"],
             "l0_after": recovered["l0"], "clean_test_loss_vanilla": vanilla["clean_test_loss"][:, -1],
             "l2_aligned_vanilla": vanilla["l2_aligned"][:, -1],
             "l2_aligned_lower_vanilla": vanilla["l2_aligned_lower"][:, -1],
             "diverged_at_finetune": tuned["diverged_at"], "diverged_at_vanilla": vanilla["diverged_at"]}
    result = CompressionResult(
        config, {k: first[k] for k in COLUMNS}, first["teacher"], first["student_init"], first["diverged_at"], keep,
        first["kept_theta"], {name: tuned[name] for name in METRICS}, {name: vanilla[name] for name in METRICS}, table,
        {"before": before, "after": after, "aligned_before": aligned["before"]["theta"],
         "aligned_after": aligned["after"]["theta"], "vanilla": vanilla["kept_theta"][:, -1]})
    return attach_provenance(result)
