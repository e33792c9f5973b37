"""``l2rebound align``: the certified ℓ₂ distance modulo the symmetry group between two networks, or between a
stored result's kept student and its teacher (no training)."""

from __future__ import annotations

import zipfile
from pathlib import Path

import numpy as np

from l2rebound import registry, store
from l2rebound.cli.common import fail
from l2rebound.config import Config

MAX_PARAMETER = 1e150
"""Largest |parameter| ``align`` takes: squared distances of larger ones overflow a double."""


COMMAND = "align"


def add(commands) -> None:
    align = commands.add_parser(
        COMMAND, help="certified ℓ₂ distance modulo the symmetry group between two networks (no training)",
        description="Search the hidden units' relabellings and sign flips g for the least ‖g·θ_A − θ_B‖₂ (branch and "
                    "bound, l2rebound.certify) and print the best distance found (upper), a certified lower bound on "
                    "the least one (lower), their relative gap, whether the search ended (optimal: upper is the "
                    "least), the nodes it evaluated and g, per hidden layer: the old unit and the sign of each new "
                    "unit. Either two files A.npz B.npz, each holding arrays theta (P,) and dims (L+1,) ints, the "
                    "same dims for both (np.savez(path, theta=theta, dims=dims)); or a stored epoch result FOLDER, "
                    "whose kept student of run --run at epoch --epoch is aligned to its teacher (padded with zeros "
                    "to the student's widths), as the result's l2_aligned and l2_aligned_lower were computed.",
    )
    align.add_argument("inputs", nargs="+", type=Path, metavar="PATH",
                       help="two network files A.npz B.npz (A is relabelled onto B), or one result folder "
                            "OUT/epoch-<hash>")
    align.add_argument("--run", type=int, default=None, metavar="R", help="FOLDER: the run, 1 to R [default: 1]")
    align.add_argument("--epoch", type=int, default=None, metavar="E",
                       help="FOLDER: a kept epoch (0, k, 2k, ..., E for --align-every k; E alone for a result "
                            "stored compact, as a sweep's cells are) [default: the last]")
    align.add_argument("--align-budget", type=int, default=None, metavar="N",
                       help="branch-and-bound nodes to search beyond the root (>= 0) [default: as the stored distances "
                            "were computed: networks of at most 3 hidden layers of at most 6 units to the end, others: "
                            "FOLDER: its config's; "
                            f"files: {Config.align_budget}]")
    align.set_defaults(handler=run)


def _network_file(path: Path) -> tuple[np.ndarray, tuple[int, ...]]:
    """θ (P,) and dims (L+1,) of a network file (a ``.npz`` with arrays ``theta`` and ``dims``); ``ValueError``
    naming the file and what is wrong."""
    from l2rebound.layout import num_params

    try:
        data = np.load(path, allow_pickle=False)
    except (OSError, ValueError, EOFError, zipfile.BadZipFile) as error:
        reason = error.strerror if isinstance(error, OSError) and error.strerror else "not a NumPy .npz archive"
        raise ValueError(f"{path} cannot be read as a network file ({reason})") from None
    if not isinstance(data, np.lib.npyio.NpzFile):  # a .npy file holds one bare array: bad content, not a bad type
        raise ValueError(f"{path} cannot be read as a network file (one bare array, not a .npz archive)")  # noqa: TRY004
    with data:
        missing = [name for name in ("theta", "dims") if name not in data.files]
        if missing:
            raise ValueError(f"{path} has no array {' or '.join(missing)}: a network file holds theta (P,) and dims "
                             "(L+1,)")
        try:
            theta, dims = np.asarray(data["theta"]), np.asarray(data["dims"])
        except (OSError, ValueError, EOFError, zipfile.BadZipFile) as error:  # a damaged member, or objects
            raise ValueError(f"{path}: its arrays cannot be read ({error})") from None
    if dims.ndim != 1 or dims.dtype.kind not in "iu" or len(dims) < 3 or np.any(dims < 1):
        raise ValueError(f"{path}: dims must be 3 or more positive integers d0,d1,...,dL (got {dims.tolist()})")
    dims = tuple(int(d) for d in dims)
    if theta.shape != (num_params(dims),) or theta.dtype.kind != "f":
        raise ValueError(f"{path}: theta has shape {theta.shape} and dtype {theta.dtype}, where dims "
                         f"{','.join(map(str, dims))} need {num_params(dims)} floats")
    return theta, dims


def _kept_pair(folder: Path, run: int, epoch: int | None):
    """(student θ (P,), padded teacher θ (P,), student dims, config, stored (l2_aligned, l2_aligned_lower),
    what was picked) of a stored epoch result's run ``run`` (1-based) at the kept epoch ``epoch`` (None:
    the last); ``ValueError`` saying why not."""
    store.require_finished(folder)
    config = store.load_config(folder)
    if not registry.kind(config.experiment).curves:
        kept = ", ".join(registry.kinds_with("curves"))
        raise ValueError(f"{folder} is a {config.experiment} result, which keeps no students: align works on results "
                         f"of {kept} experiments (or on two network files)")
    result = store.load(folder)
    if not len(result.kept_epochs):
        raise ValueError(f"{folder} kept no students (--align-every 0)")
    if not 1 <= run <= config.runs:
        raise ValueError(f"--run must be from 1 to {config.runs} (got {run})")
    epoch = int(result.kept_epochs[-1]) if epoch is None else epoch
    where = np.flatnonzero(result.kept_epochs == epoch)
    if not len(where):
        kept = [str(e) for e in result.kept_epochs]
        shown = ", ".join(kept if len(kept) <= 6 else [*kept[:3], "...", kept[-1]])
        compact = ("; the result is stored compact, with the last epoch's students alone: run its config again with "
                   "--storage full to keep every --align-every epoch's") if config.storage == "compact" else ""
        raise ValueError(f"--epoch must be one of the kept epochs of {folder} ({shown}), got {epoch}{compact}")
    student = result.kept_theta[run - 1, where[0]]
    if not np.all(np.isfinite(student)):
        raise ValueError(f"run {run} diverged at epoch {result.diverged_at[run - 1]}: its student at epoch {epoch} "
                         "is not finite")
    from l2rebound.nets import pad  # the alignment below loads JAX anyway
    from l2rebound.precision import float64

    teacher = np.asarray(float64(pad)(np.asarray(result.teacher[run - 1]), config.teacher_dims, config.student_dims))
    stored = (result.metrics["l2_aligned"][run - 1, epoch], result.metrics["l2_aligned_lower"][run - 1, epoch])
    return student, teacher, config.student_dims, config, stored, f"run {run}, epoch {epoch}"


def run(args) -> int:
    """``align``: the certified distance modulo the symmetry group of two networks, or of a stored result's
    kept student and its teacher. certify (and, at the first alignment, JAX) is imported here only, so that
    ``--help`` stays fast."""
    if args.align_budget is not None and args.align_budget < 0:
        return fail(f"--align-budget must be an integer >= 0 (got {args.align_budget})")
    stored = None
    try:
        if len(args.inputs) == 1 and args.inputs[0].is_dir():
            student, teacher, dims, config, stored, picked = _kept_pair(
                args.inputs[0], 1 if args.run is None else args.run, args.epoch)
            default = config.align_budget
            print(f"{args.inputs[0]}: {picked}, kept student (A) against its teacher (B)")
        elif len(args.inputs) == 2:
            if args.run is not None or args.epoch is not None:
                return fail("--run and --epoch pick a kept student of a result FOLDER, not of network files")
            (student, dims), (teacher, other) = (_network_file(path) for path in args.inputs)
            if dims != other:
                return fail(f"{args.inputs[0]} has dims {','.join(map(str, dims))} and {args.inputs[1]} has "
                             f"{','.join(map(str, other))}: both networks need the same widths (pad the narrower "
                             "one with zero units)")
            default = Config.align_budget
        else:
            return fail("align takes two network files A.npz B.npz, or one result folder (got "
                         f"{' '.join(map(str, args.inputs))})")
    except ValueError as error:  # StoreError included: one line either way
        return fail(str(error))
    if not (np.all(np.isfinite(student)) and np.all(np.isfinite(teacher))):
        return fail("the networks' parameters must be finite")
    if max(np.abs(student).max(initial=0), np.abs(teacher).max(initial=0)) > MAX_PARAMETER:
        return fail(f"parameters above {MAX_PARAMETER:g} in size: their squared distance would overflow")
    from l2rebound.certify import FUTILE_SHARE, Budget, certified_align, node_budget

    # as the stored distances were computed (a small network to the end), unless a budget is given
    budget = node_budget(dims, default) if args.align_budget is None else args.align_budget
    print("searching " + ("to the end" if budget is None else f"at most {budget} nodes beyond the root")
          + f" over the relabellings of hidden widths {','.join(map(str, dims[1:-1]))}", flush=True)
    aligned = certified_align(student, teacher, dims, Budget(nodes=budget))
    print(f"upper    {aligned.upper:.12g}   (‖g·θ_A − θ_B‖₂ for the g below)")
    print(f"lower    {aligned.lower:.12g}   (certified: no relabelling comes closer)")
    print(f"gap      {aligned.gap:.3g}   (upper − lower) / upper")
    print(f"optimal  {'yes' if aligned.optimal else 'no'}   "
          + ("(the search ended: upper is the least distance)" if aligned.optimal else
             f"(the budget of {budget} nodes ran out; --align-budget searches further)" if aligned.nodes > budget else
             f"(stopped: the budget's nodes could not raise the lower bound by {FUTILE_SHARE:.0%} of the gap)"))
    print(f"nodes    {aligned.nodes} (the root and " + ("as many more as the search needed: a small network)"
                                                     if budget is None else f"at most {budget} more)"))
    if stored is not None:
        shown = ["not stored" if np.isnan(v) else f"{v:.12g}" for v in stored]
        print(f"stored   l2_aligned {shown[0]}, l2_aligned_lower {shown[1]}")
    print("g: new unit i of a hidden layer is old unit perm[i] of A times sign[i]")
    for layer, (perm, signs) in enumerate(zip(*aligned.symmetry), start=1):
        print(f"hidden layer {layer} perm:  {' '.join(map(str, np.asarray(perm).tolist()))}")
        print(f"hidden layer {layer} signs: {' '.join('+' if s > 0 else '-' for s in np.asarray(signs))}")
    return 0
