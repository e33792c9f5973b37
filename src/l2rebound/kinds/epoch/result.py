"""The epoch experiment's result: per-run, per-epoch metrics, the teachers and kept students, and its text
summary (NumPy only)."""

from __future__ import annotations

import warnings
from dataclasses import dataclass
from typing import ClassVar

import numpy as np

from l2rebound.fit import STALLED_LIMIT
from l2rebound.layout import num_params
from l2rebound.results import (
    COLUMNS,
    L2,
    Result,
    Table,
    as_int,
    columns,
    finished_metrics,
    kept_count,
    metric_column,
    per_epoch,
    per_epoch_table,
    proven_optimal,
    stored_count,
    stored_students,
)


@dataclass(frozen=True, repr=False, eq=False)
class EpochResult(Result):
    """The epoch experiment: R students, each trained on its own teacher and data; every epoch recorded.

    metrics: name -> (R, E + 1), epoch 0 = before training; NaN from a run's divergence on. The ``METRICS``
        at every epoch; the ``DISTANCES`` at ``kept_epochs`` only, NaN at the others.
    teacher: (R, P_teacher) each run's teacher after projection, in the teacher's own shape.
    student_init: (R, P) each run's initial student.
    diverged_at: (R,) first epoch with a non-finite metric, -1 for runs that finished.
    kept_epochs: (K,) the epochs whose students the result holds: 0, k, 2k, ..., E for ``align_every`` = k
        (empty for 0), or E alone under ``storage`` compact. Given the students of every kept epoch (as an
        engine keeps them), it holds those its config's form stores (``results.stored_students``).
    kept_theta: (R, K, P) the students at those epochs.
    """

    kind: ClassVar[str] = "epoch"

    metrics: dict[str, np.ndarray]
    teacher: np.ndarray
    student_init: np.ndarray
    diverged_at: np.ndarray
    kept_epochs: np.ndarray
    kept_theta: np.ndarray

    def __post_init__(self):
        if len(self.kept_epochs) == kept_count(self.config):  # every kept epoch's, as an engine hands them over
            epochs, theta = stored_students(self.config, np.asarray(self.kept_epochs), np.asarray(self.kept_theta))
            object.__setattr__(self, "kept_epochs", epochs)
            object.__setattr__(self, "kept_theta", theta)

    @classmethod
    def kept_students(cls, config):
        return kept_count(config)

    @classmethod
    def table_specs(cls, config):
        runs = config.runs
        return {"metrics": per_epoch_table(runs, config.epochs + 1, COLUMNS),
                "runs": Table(runs, columns(("run", "seed", "diverged_at"), ("run", "seed", "diverged_at")))}

    @classmethod
    def array_shapes(cls, config):
        runs, kept, students = config.runs, stored_count(config), num_params(config.student_dims)
        return {"params": {"teacher": (runs, num_params(config.teacher_dims)), "student_init": (runs, students)},
                "trajectory": {"epochs": (kept,), "theta": (runs, kept, students)}}

    def shapes(self):
        c = self.config
        arrays = self.array_shapes(c)
        return {**{f"metrics.{name}": (c.runs, c.epochs + 1) for name in COLUMNS}, **arrays["params"],
                "diverged_at": (c.runs,), "kept_epochs": arrays["trajectory"]["epochs"],
                "kept_theta": arrays["trajectory"]["theta"]}

    def table_data(self):
        run = np.arange(1, len(self.metrics["l2"]) + 1)
        return {"metrics": per_epoch(self.metrics, COLUMNS),
                "runs": {"run": run, "seed": self.config.seed + run, "diverged_at": self.diverged_at}}

    def arrays(self):
        return {"params": {"teacher": self.teacher, "student_init": self.student_init},
                "trajectory": {"epochs": self.kept_epochs, "theta": self.kept_theta}}

    @classmethod
    def from_files(cls, config, tables, arrays, manifest):
        shape = (config.runs, config.epochs + 1)
        metrics = {name: metric_column(tables["metrics"], name, config).reshape(shape) for name in COLUMNS}
        return cls(config, metrics, arrays["params"]["teacher"], arrays["params"]["student_init"],
                   as_int(tables["runs"]["diverged_at"]), arrays["trajectory"]["epochs"], arrays["trajectory"]["theta"],
                   manifest=manifest)

    def summary(self, squared=False):
        return summary_table(self)

    def warnings(self):
        config, lines = self.config, []
        for run, epoch in enumerate(self.diverged_at, start=1):
            if epoch >= 0:
                lines.append(f"run {run} diverged at epoch {epoch} (non-finite loss): try a smaller --learning-rate "
                             f"(now {config.learning_rate:g})")
        if config.dtype == "float32" and config.epochs and not np.all(self.diverged_at >= 0):
            stalled = float(np.nanmean(self.metrics["stalled"][:, 1:]))
            if stalled > STALLED_LIMIT:
                lines.append(f"warning: float32: {stalled:.0%} of parameter steps fell below the parameters' "
                             "precision and were rounded away; use --dtype float64")
        return lines


def normal_form_uninformative(metrics: dict[str, np.ndarray]) -> bool:
    """Whether the normal-form ℓ₂ of the finished runs' ``metrics`` (R_ok, E + 1) is never, in its mean over
    runs, below the raw ℓ₂ at a recorded epoch: the units' order by |bias| is then arbitrary (near-equal
    biases, e.g. zero-bias teachers), and the normal form says nothing the raw ℓ₂ does not."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)  # epochs at which nothing was recorded
        return not np.any(np.nanmean(metrics["l2_normal_form"], 0) < metrics["l2"].mean(0))


def summary_table(result: EpochResult) -> str:
    """Plain-text table of ``result`` over the runs that finished: one row per quantity (ℓ₂ minimum and the
    epoch of each run's minimum, with the mean curve's beside it, final ℓ₂, final/min ratio, final aligned and
    normal-form ℓ₂ unless not recorded, final losses) as mean ± std over runs, then one line per diverged run.
    The final/min ratio is left out when a minimum is 0 (exact start). The normal-form row carries a note
    when the normal form is uninformative (``normal_form_uninformative``, the test the figures use to leave it
    out). The aligned row says in how many runs the search proved it the minimum over the group
    (``results.proven_optimal``) and, when not in all, the certified lower bound's mean ± std."""
    m, diverged = finished_metrics(result)
    l2 = m["l2"]
    aligned = {  # recorded, unless align_every = 0 (the last epoch always is)
        f"final aligned {L2}": m["l2_aligned"][:, -1], f"final normal-form {L2}": m["l2_normal_form"][:, -1],
    } if np.isfinite(m["l2_aligned"][:, -1]).all() else {}
    undefined = bool(aligned) and normal_form_uninformative(m)
    notes = {f"final normal-form {L2}": f"   (normal form undefined: near-equal |biases|; see the aligned {L2})"
             } if undefined else {}
    lower = m.get("l2_aligned_lower")  # NaN in results stored before it was computed
    if aligned and lower is not None and np.isfinite(lower[:, -1]).all():
        proven = proven_optimal(m["l2_aligned"][:, -1], lower[:, -1])
        bound = "" if proven.all() else f"lower bound {np.mean(lower[:, -1]):.4g} ± {np.std(lower[:, -1]):.4g}; "
        notes[f"final aligned {L2}"] = f"   ({bound}proven optimal in {proven.sum()} of {len(proven)} runs)"
    # the figures mark the minimum of the mean curve, which is not the mean of the runs' minima
    notes[f"epoch of min {L2}"] = f"   (each run's own minimum; the mean curve's: epoch {l2.mean(axis=0).argmin()})"
    rows = {
        f"min {L2}": l2.min(axis=1),
        f"epoch of min {L2}": l2.argmin(axis=1).astype(float),
        f"final {L2}": l2[:, -1],
        "final/min ratio": l2[:, -1] / l2.min(axis=1) if np.all(l2.min(axis=1) > 0) else None,
        **aligned,
        "final train loss": m["train_loss"][:, -1],
        "final test loss": m["test_loss"][:, -1],
        "final clean test loss": m["clean_test_loss"][:, -1],
    }
    lines = [f"{'':<22}{'mean':>11} ± std   over {len(l2)} runs"]
    for name, v in rows.items():
        text = f"{np.mean(v):>11.4g} ± {np.std(v):.4g}" if v is not None else f"{'—':>11}   (min {L2} = 0: exact start)"
        lines.append(f"{name:<22}{text}{notes.get(name, '')}")
    return "\n".join(lines + diverged)
