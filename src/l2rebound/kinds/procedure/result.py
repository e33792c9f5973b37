"""The compression procedure's result: one row per run of the α grid, the pruned students, and the text
summary per α (NumPy only).

Two test metrics are stored. ``authors_test_loss`` is the number the published study plots: the lowest
test loss at any turning point of the validation loss, over both phases. It picks its epoch by looking at the
test set, so it is optimistic. ``test_loss`` is the test loss of the state that validation alone chose (the
procedure's returned student). ``clean_test_loss`` is the latter against the teacher's noiseless outputs: the
distance in function space, without the noise floor σ².
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import ClassVar

import numpy as np

from l2rebound.layout import num_params
from l2rebound.results import L2, Column, Result, Table, as_int, proven_optimal

STUDENTS = ("trained", "pruned", "aligned")
"""Per run (``params.npz``): the regularised phase's returned student, the pruned and fine-tuned one, and the
latter relabelled onto the padded teacher by its certified alignment."""


def procedure_table(config) -> Table:
    """The columns of ``metrics.csv``, one row per run (α slowest, then the repetition). Counts are -1 and
    values NaN for a diverged run. ``nonzero_trained``: non-zero parameters before pruning; ``nonzero``: after;
    ``alive_units_h``: units of hidden layer h with a non-zero incoming and outgoing weight; ``support_recovered``
    (0/1): the aligned student is non-zero exactly where the teacher is; ``threshold``: TAMADE's magnitude
    threshold; ``epochs_regularised``, ``epochs_finetune``: where each phase stopped; ``turning_points``: of
    both phases."""
    layers = range(1, len(config.student_dims) - 1)
    count = lambda name: Column(name, integer=True)  # noqa: E731
    return Table(len(config.alphas) * config.runs, (
        count("run"), Column("alpha"), count("repetition"),
        Column("authors_test_loss", summary=1, label="authors' test loss (selected on the test set)"),
        Column("test_loss", summary=2, label="test loss (selected on validation)"),
        Column("clean_test_loss", summary=3, label="clean test loss"), Column("validation_loss"),
        count("nonzero_trained"), Column("nonzero", True, 4, "non-zero parameters"),
        *(count(f"alive_units_{h}") for h in layers),
        Column("support_recovered", True, 5, "fraction of runs recovering the support"),
        Column("l2_aligned", summary=6, label=f"aligned {L2} to the teacher"), Column("l2_aligned_lower"),
        Column("threshold"), count("epochs_regularised"), count("epochs_finetune"), count("turning_points"),
        count("diverged")))


@dataclass(frozen=True, repr=False, eq=False)
class ProcedureResult(Result):
    """The compression procedure over a grid of regulariser strengths: for each α of ``alphas`` and each of R
    repetitions, a student trained with the rule and validation-based stopping, pruned (random-gradient
    pruning, TAMADE, random-gradient pruning) and fine-tuned with the pruned entries held at 0.

    metrics: column -> (A·R,), ``procedure_table``.
    params: ``teacher`` (P,), padded to the student's widths with zero units, and ``STUDENTS`` each (A·R, P).
    """

    kind: ClassVar[str] = "procedure"
    sweep_stats: ClassVar[tuple[str, ...]] = ("test_loss", "nonzero")
    mixed_groups: ClassVar[tuple[str, ...]] = ("metrics",)

    metrics: dict[str, np.ndarray]
    params: dict[str, np.ndarray]

    @classmethod
    def trainings(cls, config):
        return len(config.alphas) * config.runs

    @property
    def diverged_at(self) -> np.ndarray:
        """(A·R,) -1 for a finished run, else the epoch of the phase where it diverged (as the figures expect)."""
        m = self.metrics
        at = np.where(m["epochs_finetune"] >= 0, m["epochs_finetune"], m["epochs_regularised"])
        return np.where(m["diverged"] == 1, at, -1)

    @classmethod
    def run_epochs(cls, config):
        return cls.trainings(config) * (config.epochs + config.finetune_epochs)

    @classmethod
    def table_specs(cls, config):
        return {"metrics": procedure_table(config)}

    @classmethod
    def array_shapes(cls, config):
        students = (cls.trainings(config), num_params(config.student_dims))
        return {"params": {"teacher": students[1:], **dict.fromkeys(STUDENTS, students)}}

    def shapes(self):
        c = self.config
        return {**{f"metrics.{name}": (self.trainings(c),) for name in procedure_table(c).names},
                **{f"params.{name}": shape for name, shape in self.array_shapes(c)["params"].items()}}

    def table_data(self):
        return {"metrics": self.metrics}

    def arrays(self):
        return {"params": dict(self.params)}

    @classmethod
    def from_files(cls, config, tables, arrays, manifest):
        integer = {c.name for c in procedure_table(config).columns if c.integer}
        metrics = {name: as_int(v) if name in integer else np.asarray(v, float)
                   for name, v in tables["metrics"].items()}
        return cls(config, metrics, dict(arrays["params"]), manifest=manifest)

    @classmethod
    def file_suffix(cls, view, squared):
        return view

    def per_alpha(self) -> dict[str, np.ndarray]:
        """Per α (A,): median and quartiles of the test metrics and the clean loss, the median non-zeros, alive
        units and aligned distance, and the fraction of runs recovering the support; over finished runs."""
        m, alphas = self.metrics, np.asarray(self.config.alphas)
        ok = m["diverged"] == 0
        out = {"alpha": alphas}
        for name in ("authors_test_loss", "test_loss", "clean_test_loss", "nonzero", "l2_aligned",
                     *(k for k in m if k.startswith("alive_units_"))):
            values = [np.asarray(m[name][(m["alpha"] == a) & ok], float) for a in alphas]
            q = np.array([np.percentile(v, [25, 50, 75]) if len(v) else [np.nan] * 3 for v in values])
            out[f"{name}_q1"], out[name], out[f"{name}_q3"] = q.T
        out["support_recovered"] = np.array([np.mean(m["support_recovered"][(m["alpha"] == a) & ok] == 1)
                                             if np.any((m["alpha"] == a) & ok) else np.nan for a in alphas])
        out["proven"] = np.array([np.mean(proven_optimal(m["l2_aligned"][(m["alpha"] == a) & ok],
                                                         m["l2_aligned_lower"][(m["alpha"] == a) & ok]))
                                  if np.any((m["alpha"] == a) & ok) else np.nan for a in alphas])
        return out

    def summary(self, squared=False):
        t = self.per_alpha()
        layers = [k for k in t if k.startswith("alive_units_") and not k.endswith(("_q1", "_q3"))]
        lines = [f"{'alpha':>7} {'authors test':>13} {'test (val.)':>12} {'clean test':>11} {'non-zero':>9} "
                 + " ".join(f"{'alive ' + k[-1]:>8}" for k in layers) + f" {'aligned ' + L2:>10} {'support':>8}"]
        for i, alpha in enumerate(t["alpha"]):
            lines.append(f"{alpha:>7.3g} {t['authors_test_loss'][i]:>13.5g} {t['test_loss'][i]:>12.5g} "
                         f"{t['clean_test_loss'][i]:>11.4g} {t['nonzero'][i]:>9.0f} "
                         + " ".join(f"{t[k][i]:>8.0f}" for k in layers)
                         + f" {t['l2_aligned'][i]:>10.4g} {t['support_recovered'][i]:>8.0%}")
        teacher = int(np.count_nonzero(self.params["teacher"]))
        lines.append(f"medians over {self.config.runs} repetitions per alpha; the teacher has {teacher} non-zero "
                     f"parameters and hidden widths {','.join(map(str, self.config.teacher_dims[1:-1]))}")
        lines.append("authors test: the lowest test loss at a validation turning point (chosen by looking at the "
                     "test set); test (val.): the student that validation alone chose")
        return "\n".join(lines)

    def warnings(self):
        diverged = int(np.sum(self.metrics["diverged"] == 1))
        return [f"{diverged} of {len(self.metrics['diverged'])} runs diverged and are left out: try a smaller "
                f"--learning-rate (now {self.config.learning_rate:g})"] if diverged else []


def claims(results: list[ProcedureResult]) -> list[str]:
    """The two claims in numbers, one line each per procedure (``results``, one per rule, on the same grid):
    whether some α > 0 lowers the median test loss below the α = 0 run of the same procedure (by each test
    metric, with whether the interquartile ranges separate), and how many pruned students recover the
    teacher's support, with the smallest certified lower bound on the aligned distance."""
    lines = []
    for result in results:
        t, rule = result.per_alpha(), result.config.train
        if not np.any(t["alpha"] == 0):
            lines.append(f"{rule}: no alpha = 0 run in the grid: no baseline to compare with")
            continue
        base = int(np.flatnonzero(t["alpha"] == 0)[0])
        if not np.any(t["alpha"] > 0):
            lines.append(f"{rule}: only alpha = 0 in the grid: nothing to compare with it")
            continue
        for metric, name in (("authors_test_loss", "authors' test loss"), ("test_loss", "validation-chosen test loss"),
                             ("clean_test_loss", "clean-label test loss")):
            values = np.where((t["alpha"] > 0) & np.isfinite(t[metric]), t[metric], np.inf)
            if not np.isfinite(values).any():
                lines.append(f"{rule}, {name}: every run with alpha > 0 diverged")
                continue
            best = int(np.argmin(values))
            change = t[metric][best] / t[metric][base] - 1
            separate = t[f"{metric}_q3"][best] < t[f"{metric}_q1"][base]
            lines.append(f"{rule}, {name}: best alpha {t['alpha'][best]:g}, median {t[metric][best]:.5g} against "
                         f"{t[metric][base]:.5g} at alpha 0 ({change:+.1%}); interquartile ranges "
                         f"{'separate' if separate else 'overlap'}")
        m = result.metrics
        ok = (m["diverged"] == 0) & (m["alpha"] > 0)
        lower = m["l2_aligned_lower"][ok]
        lines.append(f"{rule}, recovery: {int(np.sum(m['support_recovered'][ok] == 1))} of {int(ok.sum())} pruned "
                     f"students (alpha > 0) have the teacher's support; the certified lower bound on the aligned "
                     f"distance is at least {np.min(lower) if len(lower) else np.nan:.4g}")
    return lines
