"""``l2rebound analyze``: the linear-response theory beside a stored result (no training)."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from l2rebound import store
from l2rebound.cli.common import configure_process, fail, held

COMMAND = "analyze"


def add(commands) -> None:
    analyze = commands.add_parser(
        COMMAND, help="linear-response theory beside a stored result: Gauss–Newton and Hessian spectra, predicted ℓ₂",
        description="For each run of a stored result, draw its teacher, data and noise again from the config, compute "
                    "the Gauss–Newton matrix (2/n)JᵀJ at the teacher and its eigenvalues, and predict ℓ₂ by "
                    "linearised plain GD: δ_t = (I − ηH)^t δ_0 + H⁺(I − (I − ηH)^t)g, g = (2/n)Jᵀ(σz). The exact "
                    "Hessian is computed for run 1. Writes theory.npz and <stem>_theory.{svg,png} into the folder "
                    "and prints the time constants 1/(ηλ) against the number of epochs. The prediction leaves out "
                    "any regulariser and the projection; it needs --optimizer gd. No training.",
    )
    analyze.add_argument("folders", nargs="+", type=Path, metavar="FOLDER",
                         help="result folder(s) OUT/<experiment>-<hash>")
    analyze.add_argument("--force", action="store_true", help="recompute even if the folder holds an analysis")
    analyze.add_argument("--no-progress", action="store_true", help="no progress bar")
    analyze.set_defaults(handler=run)


def run(args) -> int:
    configure_process()
    for folder in args.folders:
        with held(folder) as result:
            code = analyze_one(folder, result, args.force, args.no_progress)
        if code:
            return code
    return 0


def analyze_one(folder: Path, result, force: bool, no_progress: bool) -> int:
    """``analyze`` for one stored result: the theory computed (or reused), stored, drawn and summarised."""
    from l2rebound.api import progress_bar
    from l2rebound.plots import theory_summary, write_theory
    from l2rebound.theory import analyze

    if not result.spec.theory:
        return fail(f"{folder}: the linear-response theory does not model the {result.kind} experiment")
    if result.config.optimizer != "gd":
        return fail(f"{folder}: the linear-response theory models plain gradient descent, not "
                     f"--optimizer {result.config.optimizer}")
    if np.all(result.diverged_at >= 0):
        return fail(f"{folder}: every run diverged, nothing to compare with the theory", code=1)
    analysis = None if force else store.load_analysis(folder)
    if analysis is None:
        print(f"analysing {folder}: Gauss–Newton spectrum of each of {result.config.runs} runs, Hessian of run 1")
        try:
            with progress_bar(result.config.runs, not no_progress, unit="run") as bar:
                analysis = analyze(result, bar.update)
        except ValueError as error:
            return fail(f"{folder}: {error}", code=1)
        store.save_analysis(folder, analysis)
    else:
        print(f"reusing the analysis stored in {folder / 'theory.npz'} (--force recomputes)")
    for path in write_theory(result, analysis, folder):
        print(f"figure: {path}")
    print(theory_summary(result, analysis))
    return 0
