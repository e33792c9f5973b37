"""``l2rebound analyze``: the linear-response theory beside a stored result or a sweep (no training)."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from l2rebound import store
from l2rebound.cli.common import configure_process, fail, held

COMMAND = "analyze"


def add(commands) -> None:
    analyze = commands.add_parser(
        COMMAND, help="linear-response theory beside a stored result or sweep: spectra, predicted ℓ₂ with the "
                      "regulariser",
        description="For each run of a stored result, draw its teacher, data and noise again from the config, compute "
                    "the Gauss–Newton matrix H = (2/n)JᵀJ at the teacher and its eigenvalues, and predict ℓ₂ by "
                    "plain GD linearised at the teacher with the training rule's regulariser R kept exact: "
                    "δ_{t+1} = δ_t − η(Hδ_t − g + ∇R(θ_t + δ_t)), g = (2/n)Jᵀ(σz); and from the loss alone (R = 0, "
                    "in closed form). The exact Hessian is computed for run 1. Writes theory.npz and "
                    "<stem>_theory.{svg,png} into the folder and prints both predictions' gaps, where the final "
                    "displacement lies and the time constants 1/(ηλ). The projection is left out; it needs "
                    "--optimizer gd. A sweep folder gets every cell analysed (teachers and data shared between "
                    "cells computed once) and, in the sweep's folder, theory.csv and sweep_theory_<stat>.{svg,png}: "
                    "the rebound and the epoch of the minimum, measured beside predicted. No training.",
    )
    analyze.add_argument("folders", nargs="+", type=Path, metavar="FOLDER",
                         help="result folder(s) OUT/<experiment>-<hash>, or sweep folder(s) OUT/sweep-<hash>")
    analyze.add_argument("--force", action="store_true", help="recompute even if the folder holds an analysis")
    analyze.add_argument("--no-progress", action="store_true", help="no progress bar")
    analyze.set_defaults(handler=run)


def run(args) -> int:
    from l2rebound import sweeps

    configure_process()
    for folder in args.folders:
        if sweeps.is_sweep(folder):
            code = analyze_sweep(folder, args.force, args.no_progress)
        else:
            with held(folder) as result:
                code = analyze_one(folder, result, args.force, args.no_progress)
        if code:
            return code
    return 0


def refused(folder: Path, config, kind: str) -> str | None:
    """Why the theory does not apply to a result of ``config`` (of kind ``kind``) in ``folder``; None if it does."""
    from l2rebound import registry

    if not registry.kind(kind).theory:
        return f"{folder}: the linear-response theory does not model the {kind} experiment"
    if config.optimizer != "gd":
        return f"{folder}: the linear-response theory models plain gradient descent, not --optimizer {config.optimizer}"
    if config.projection == "margin" and config.projection_frequency:
        return (f"{folder}: the linear-response theory leaves the projection out, and --projection margin moves the "
                "student by up to --margin every few epochs: analyse a run with --projection-frequency 0 or the jitter")
    return None


def analysis_of(folder: Path, result, force: bool, on_progress=None, cache: dict | None = None, say=print):
    """The analysis of the result stored in ``folder``: the stored one when current (``theory.is_current``)
    and not ``force``, else computed (sharing ``cache``) and stored; ``ValueError`` when the runs cannot be
    drawn again."""
    from l2rebound.theory import analyze, is_current

    stored = None if force else store.load_analysis(folder)
    if is_current(stored):
        say(f"reusing the analysis stored in {folder / 'theory.npz'} (--force recomputes)")
        if on_progress:
            on_progress(result.config.runs)
        return stored
    say(f"analysing {folder}: Gauss–Newton spectrum of each of {result.config.runs} runs, Hessian of run 1")
    analysis = analyze(result, on_progress, cache)
    store.save_analysis(folder, analysis)
    return analysis


def analyze_one(folder: Path, result, force: bool, no_progress: bool) -> int:
    """``analyze`` for one stored result: the theory computed (or reused), stored, drawn and summarised."""
    from l2rebound.api import progress_bar
    from l2rebound.plots import theory_summary, write_theory

    reason = refused(folder, result.config, result.kind)
    if reason:
        return fail(reason)
    if np.all(result.diverged_at >= 0):
        return fail(f"{folder}: every run diverged, nothing to compare with the theory", code=1)
    try:
        with progress_bar(result.config.runs, not no_progress, unit="run") as bar:
            analysis = analysis_of(folder, result, force, bar.update)
    except ValueError as error:
        return fail(f"{folder}: {error}", code=1)
    for path in write_theory(result, analysis, folder):
        print(f"figure: {path}")
    print(theory_summary(result, analysis))
    return 0


def analyze_sweep(folder: Path, force: bool, no_progress: bool) -> int:
    """``analyze`` for a sweep: every cell analysed (or its analysis reused), a run's spectrum computed once for
    all the cells that draw its teacher and data; then the predicted rebound statistics beside the measured
    ones in the sweep's folder."""
    from l2rebound import sweeps
    from l2rebound.api import progress_bar

    sweep = sweeps.load(folder)
    base = sweep.base
    cells = [Path(folder).parent / f"{base.experiment}-{cell}" for cell in sweep.hashes]
    configs = [store.load_config(cell) for cell in cells]
    for cell, config in zip(cells, configs):  # any field may be swept, the optimiser and the projection too
        reason = refused(cell, config, base.experiment)
        if reason:
            return fail(f"{reason} (a cell of {folder})")
    print(f"analysing the {len(cells)} cells of {folder}")
    cache, predicted = {}, []
    try:
        with progress_bar(sum(config.runs for config in configs), not no_progress, unit="run") as bar:
            for cell in cells:
                with held(cell) as result:
                    predicted.append(analysis_of(cell, result, force, bar.update, cache, say=lambda line: None)
                                     ["predicted_l2"])
    except ValueError as error:
        return fail(f"{folder}: {error}", code=1)
    theory = sweeps.with_theory(sweep, predicted)
    for path in sweeps.write_theory(theory, folder):
        print(f"wrote: {path}")
    print(sweeps.theory_table(theory))
    return 0
