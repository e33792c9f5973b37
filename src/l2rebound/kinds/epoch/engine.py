"""The epoch experiment's engine entry: R runs of one config, or several configs that differ only in traced
fields, trained as one plan by one compiled program (JAX)."""

from __future__ import annotations

import numpy as np

from l2rebound.config import Config, pack_key
from l2rebound.experiments import Plan, attach_provenance, check_memory, train_plan
from l2rebound.kinds.epoch.result import EpochResult
from l2rebound.precision import float64
from l2rebound.results import COLUMNS, kept_epochs


def epoch_plan(configs: list[Config]) -> Plan:
    """The plan of epoch experiments with one ``pack_key``: run r of each config draws from its seed + r."""
    if len({pack_key(c) for c in configs}) != 1:
        raise ValueError("configs that differ in more than traced fields cannot train as one batch")
    cell = np.repeat(np.arange(len(configs)), [c.runs for c in configs])
    seeds = np.concatenate([c.seed + np.arange(1, c.runs + 1) for c in configs])
    return Plan(tuple(configs), cell, seeds, seeds, np.array([configs[c].noise_sigma for c in cell]))


@float64
def run_cells(configs: list[Config], on_progress=None, checkpoints=None) -> list[EpochResult]:
    """The epoch experiments of ``configs`` (one ``pack_key``) trained by one compiled program: each result
    is, number for number, what ``run`` gives for its config alone. ``on_progress(n)`` is
    called as run-epochs complete (Σ R · E in total); ``checkpoints``: None or one per config, as in
    ``run_chunks`` (a config's checkpoint serves it alone or packed)."""
    plan, keep = epoch_plan(configs), kept_epochs(configs[0])
    check_memory(configs[0].replace(runs=len(plan.cell), seed=0))  # every cell's result is held until the end
    out = train_plan(plan, keep, on_progress, checkpoints)
    results = []
    for c, config in enumerate(configs):
        mine = {k: v[plan.cell == c] for k, v in out.items()}
        results.append(attach_provenance(EpochResult(config, {k: mine[k] for k in COLUMNS}, mine["teacher"],
                                               mine["student_init"], mine["diverged_at"], keep, mine["kept_theta"])))
    return results


def run(config: Config, on_progress=None, checkpoint=None) -> EpochResult:
    """The epoch experiment for ``config`` (pure: same config, same numbers, bit for bit on one machine).
    ``on_progress(n)`` is called as run-epochs complete (R · E in total); ``checkpoint`` as in
    ``run_chunks``."""
    return run_cells([config], on_progress, [checkpoint] if checkpoint else None)[0]
