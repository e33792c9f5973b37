"""The noise experiment's engine entry: levels × runs as one plan, run r training from the one teacher on the
inputs and unit noise of seed + r at every level (JAX)."""

from __future__ import annotations

import numpy as np

from l2rebound.config import Config
from l2rebound.experiments import Plan, attach_provenance, check_memory, train_plan
from l2rebound.kinds.noise.result import NoiseResult
from l2rebound.precision import float64
from l2rebound.results import COLUMNS


@float64
def sweep(config: Config, levels, on_progress=None, checkpoint=None) -> NoiseResult:
    """The noise experiment at the given levels (S,) (``run`` uses
    ``config.noise_levels``; σ = 0 is allowed here): a plan of S·R trainings, one batch, in which run r
    trains from the one teacher (seed) on the inputs and unit noise of seed + r at every level."""
    levels = np.asarray(levels, dtype=float)
    runs = config.seed + np.arange(1, config.runs + 1)
    trainings = len(levels) * config.runs
    plan = Plan((config,), np.zeros(trainings, int), np.full(trainings, config.seed), np.tile(runs, len(levels)),
                np.repeat(levels, config.runs))
    check_memory(config)
    out = train_plan(plan, np.array([config.epochs]), on_progress, [checkpoint] if checkpoint else None,
                     final_only=True)  # the distances at the last epoch only
    shape = (len(levels), config.runs)
    return attach_provenance(NoiseResult(config, levels, {k: out[k].reshape(shape) for k in COLUMNS}, out["teacher"][0],
                                   out["student_init"][: config.runs], out["diverged_at"].reshape(shape)))


def run(config: Config, on_progress=None, checkpoint=None) -> NoiseResult:
    """The noise experiment for ``config`` over ``config.noise_levels`` (pure, like the epoch experiment).
    ``on_progress(n)`` is called as run-epochs complete (S · R · E in total)."""
    return sweep(config, config.noise_levels, on_progress, checkpoint)
