"""The noise experiment's result: the metrics after training at every noise level σ, and its text summary with
the fitted power law (NumPy and SciPy only)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import ClassVar

import numpy as np

from l2rebound.fit import exponent, fit_or_none, precision_floor
from l2rebound.layout import num_params
from l2rebound.results import COLUMNS, L2, Result, Table, as_int, columns, metric_column, proven_optimal


@dataclass(frozen=True, repr=False, eq=False)
class NoiseResult(Result):
    """The noise experiment: one teacher; each run's student starts at it and trains at every noise level σ
    on the same inputs and unit noise (common random numbers); the metrics after the last epoch are kept.

    levels: (S,) the noise levels σ.
    metrics: name -> (S, R), the ``METRICS`` and ``DISTANCES`` after the last epoch (NaN for a diverged
        run); ``stalled`` is averaged over the epochs.
    teacher: (P_teacher,) the one teacher after projection.
    student_init: (R, P) each run's initial student (the same at every level).
    diverged_at: (S, R) first epoch with a non-finite metric, -1 for runs that finished.
    """

    kind: ClassVar[str] = "noise"

    levels: np.ndarray
    metrics: dict[str, np.ndarray]
    teacher: np.ndarray
    student_init: np.ndarray
    diverged_at: np.ndarray

    @classmethod
    def trainings(cls, config):
        return config.runs * len(config.noise_levels)

    @classmethod
    def table_specs(cls, config):
        return {"metrics": Table(cls.trainings(config), (*columns(("level", "sigma", "run"), ("level", "run")),
                                                         *columns(COLUMNS),
                                                         *columns(("diverged_at",), ("diverged_at",))))}

    @classmethod
    def array_shapes(cls, config):
        return {"params": {"teacher": (num_params(config.teacher_dims),),
                           "student_init": (config.runs, num_params(config.student_dims))}}

    def shapes(self):
        c = self.config
        grid = (len(self.levels), c.runs)  # the config's levels, or those of ``noise.engine.sweep``
        return {**{f"metrics.{name}": grid for name in COLUMNS}, "levels": grid[:1],
                **self.array_shapes(c)["params"], "diverged_at": grid}

    def table_data(self):
        levels, runs = self.metrics["l2"].shape
        return {"metrics": {
            "level": np.repeat(np.arange(levels), runs), "sigma": np.repeat(self.levels, runs),
            "run": np.tile(np.arange(1, runs + 1), levels),
            **{name: self.metrics[name].reshape(-1) for name in COLUMNS},
            "diverged_at": self.diverged_at.reshape(-1),
        }}

    def arrays(self):
        return {"params": {"teacher": self.teacher, "student_init": self.student_init}}

    @classmethod
    def from_files(cls, config, tables, arrays, manifest):
        shape = (len(config.noise_levels), config.runs)
        metrics = tables["metrics"]
        return cls(config, np.asarray(config.noise_levels),
                   {name: metric_column(metrics, name, config).reshape(shape) for name in COLUMNS},
                   arrays["params"]["teacher"], arrays["params"]["student_init"],
                   as_int(metrics["diverged_at"]).reshape(shape), manifest=manifest)

    @classmethod
    def file_suffix(cls, view, squared):
        return "l2sq" if squared else "l2"

    def summary(self, squared=False):
        return noise_summary(self, squared)

    def warnings(self):
        config, lines = self.config, []
        diverged = self.diverged_at >= 0
        for level in np.flatnonzero(diverged.any(axis=1)):
            lines.append(f"sigma={self.levels[level]:.3g}: {diverged[level].sum()} of {config.runs} runs diverged "
                         f"(first at epoch {self.diverged_at[level][diverged[level]].min()}): try a smaller "
                         f"--learning-rate (now {config.learning_rate:g})")
        if config.dtype == "float32" and not diverged.all():
            low = self.levels[precision_floor(self)]
            if len(low):
                lines.append(f"warning: float32: at sigma = {', '.join(f'{v:.3g}' for v in low)} the parameter steps "
                             "rounded away can have moved the students by as much as their distance; these levels "
                             "are marked and left out of the fit (use --dtype float64)")
        return lines


def noise_summary(result: NoiseResult, squared: bool = False) -> str:
    """Plain-text table per level (mean ± std of ℓ₂, mean aligned ℓ₂ and the final losses over finished
    runs, a mark for the precision floor), the fitted exponent with its 95% interval, and in how many
    trainings the aligned ℓ₂ is the proven minimum (with the largest relative gap to its certified lower
    bound elsewhere)."""
    fit = fit_or_none(result, squared)
    floor = precision_floor(result)
    ok = np.asarray(result.diverged_at) < 0
    lines = [f"{'sigma':>10} {'l2 mean':>11} {'± std':>10} {'aligned':>11} "
             f"{'train loss':>11} {'clean test':>11}  fitted"]
    for i, sigma in enumerate(result.levels):
        l2 = result.metrics["l2"][i][ok[i]]
        aligned = result.metrics["l2_aligned"][i][ok[i]]
        train = result.metrics["train_loss"][i][ok[i]]
        clean = result.metrics["clean_test_loss"][i][ok[i]]
        mark = "yes" if fit and fit.used[i] else "no (precision floor)" if floor[i] else "no"
        if len(l2):
            lines.append(f"{sigma:>10.3g} {l2.mean():>11.4g} {l2.std():>10.3g} {aligned.mean():>11.4g} "
                         f"{train.mean():>11.4g} {clean.mean():>11.4g}  {mark}")
        else:
            lines.append(f"{sigma:>10.3g} {'diverged':>11}")
    name = f"{L2}²" if squared else L2
    if fit is None:
        lines.append("no power law fitted: too few levels above the precision floor")
    else:
        lines.append(f"power law {name} ≈ {fit.c:.4g}·σ^k: k = {exponent(fit)}, {int(fit.used.sum())} of "
                     f"{len(result.levels)} levels fitted")
    left_out = result.levels[floor]
    if len(left_out):
        lines.append("left out at the precision floor: σ = " + ", ".join(f"{v:.3g}" for v in left_out))
    lower = result.metrics.get("l2_aligned_lower")  # NaN in results stored before it was computed
    if lower is not None and np.isfinite(lower[ok]).all() and ok.any():
        upper, lower = result.metrics["l2_aligned"][ok], lower[ok]
        proven = proven_optimal(upper, lower)
        line = f"aligned {L2}: proven optimal in {proven.sum()} of {proven.size} trainings"
        if not proven.all():
            gap = np.max((upper - lower) / np.where(upper > 0, upper, 1.0))
            line += f"; elsewhere the certified lower bound is up to {gap:.1%} below it"
        lines.append(line)
    return "\n".join(lines)
