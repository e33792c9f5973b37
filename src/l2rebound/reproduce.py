"""This toolkit's curves beside the published figures of ℓ₂-Experiments, in the figures' own view.

The published figures (``published``) show, for figures A and B, the squared distance and the losses of
each run min–max scaled to [0, 1] over epochs 1..E and averaged over runs; for figure C, the mean over runs
of ℓ₂² after training against the noise level, on log–log axes. ``seed_view`` puts a result into that
view, ``compare`` sets it beside the published curve (RMS difference and the curves' shape statistics), and
``comparison_figure`` draws both. ``scan_table`` and ``scan_figure`` show how figure A's shape depends on
the scale of the initial perturbation, which the figure does not record in its visible text.

Everything here works on stored NumPy arrays (no JAX).
"""

from __future__ import annotations

import textwrap
import warnings
from typing import NamedTuple

import numpy as np
from matplotlib.figure import Figure

from l2rebound import published
from l2rebound.plots import against_noise, normalise
from l2rebound.results import Result

L2SQ = "ℓ₂²"


class Shape(NamedTuple):
    """Shape of a normalised curve over epochs 1..E: its first value, its minimum and the epoch of it, its
    last value."""

    start: float
    minimum: float
    min_epoch: int
    end: float

    def text(self) -> str:
        start, minimum, end = (round(v, 2) + 0.0 for v in (self.start, self.minimum, self.end))  # no "-0.00"
        return f"start {start:.2f}, min {minimum:.2f} at epoch {self.min_epoch}, end {end:.2f}"


class PowerShape(NamedTuple):
    """Shape of a ℓ₂²-vs-σ curve: the log–log slope (least squares over the levels given, or over every level
    when fewer than two are given: ``floor_only``) and the value at the largest level."""

    slope: float
    top_level: float
    top_value: float
    floor_only: bool = False

    def text(self) -> str:
        caveat = " (over levels at the precision floor: none above it)" if self.floor_only else ""
        return f"slope {self.slope:.2f}{caveat}, {L2SQ} = {self.top_value:.3g} at σ = {self.top_level:.3g}"


class Comparison(NamedTuple):
    """A result beside a published figure.

    x: (T,) epochs 1..T (figures A, B; T the shorter of the two curves) or the result's noise levels (C).
    ours, theirs: curve name -> (T,) values in the figure's view (``theirs`` at the published points,
    ``x_theirs``). rms: curve name -> RMS difference over the common epochs (A, B; normalised units) or of
    log10 ℓ₂² at the published levels inside the result's range (C; decades). shapes: ("ours" |
    "published") -> ``Shape`` or ``PowerShape`` of the ℓ₂ curve. floor: (S,) levels at the precision floor
    (C), else empty. explained: with a linear-response analysis (figures A, B), ``rebound_explained``
    per finished run; ``ours["theory"]`` is then the prediction in the figure's view."""

    figure: str
    x: np.ndarray
    ours: dict[str, np.ndarray]
    x_theirs: np.ndarray
    theirs: dict[str, np.ndarray]
    rms: dict[str, float]
    shapes: dict[str, Shape | PowerShape]
    floor: np.ndarray
    explained: np.ndarray | None = None

    def summary(self) -> str:
        """Plain text: the RMS differences and both shapes."""
        unit = " (decades of ℓ₂²)" if self.figure == "C" else ""
        lines = [f"against published figure {self.figure}{unit}: "
                 + ", ".join(f"RMS difference {name} {value:.3g}" for name, value in self.rms.items())]
        lines += [f"  {who:>9}: {shape.text()}" for who, shape in self.shapes.items()]
        if self.figure != "C" and len(self.x) != len(self.x_theirs):
            lines.append(f"  caution: ours is normalised over epochs 1..{len(self.x)}, the published curve over "
                         f"1..{len(self.x_theirs)}; the RMS difference is over the first "
                         f"{min(len(self.x), len(self.x_theirs))}")
        if self.explained is not None:
            share = self.explained[np.isfinite(self.explained)]
            lines.append("  linear response: " + (
                f"explains {np.median(share):.0%} of a run's rise of {L2SQ} after its minimum (median; "
                f"{share.min():.0%} to {share.max():.0%} over {share.size} runs)" if share.size else
                f"no run's {L2SQ} rises after its minimum"))
        return "\n".join(lines)


def normalised_mean(values: np.ndarray) -> np.ndarray:
    """(R, T) -> (T,): each row min–max scaled to [0, 1] (``plots.normalise``), then averaged over rows."""
    return np.nanmean(normalise(np.asarray(values, float)), axis=0)


def seed_view(result: Result) -> dict[str, np.ndarray]:
    """The published figures' view of ``result``'s finished runs. A result with curves over epochs (the epoch
    experiment): ``l2`` (ℓ₂²), ``train_loss`` and ``test_loss``, each run min–max scaled over epochs 1..E,
    averaged: (E,) each. A result over noise levels (the noise experiment): ``l2``, the mean over runs of ℓ₂²
    after training, (S,). Raises ``ValueError`` when no run finished."""
    ok = np.asarray(result.diverged_at) < 0
    if not ok.any():
        raise ValueError("every run diverged: nothing to compare with the published figure")
    if not result.spec.curves:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", RuntimeWarning)  # a level whose runs all diverged stays NaN
            return {"l2": np.nanmean(np.where(ok, np.asarray(result.metrics["l2"], float) ** 2, np.nan), axis=1)}
    if result.config.epochs < 2:
        raise ValueError("the published view needs a result of 2 epochs or more, or a noise result")
    power = {"l2": 2, "train_loss": 1, "test_loss": 1}
    return {name: normalised_mean(np.asarray(result.metrics[name], float)[ok, 1:] ** p) for name, p in power.items()}


def rebound_explained(result: Result, analysis: dict) -> np.ndarray:
    """(R_ok,) For each finished run, the rise of the predicted ℓ₂² from its minimum to the last epoch over
    the measured rise (1: the linear-response theory accounts for the whole rebound, 0: for none of it); NaN
    for a run whose measured ℓ₂² ends at its minimum. ``analysis``: ``theory.analyze`` of ``result``."""
    ok = np.asarray(result.diverged_at) < 0
    measured = np.asarray(result.metrics["l2"], float)[ok] ** 2
    predicted = np.asarray(analysis["predicted_l2"], float)[ok] ** 2
    rise = measured[:, -1] - measured.min(axis=1)
    with np.errstate(invalid="ignore", divide="ignore"):
        return np.where(rise > 0, (predicted[:, -1] - predicted.min(axis=1)) / rise, np.nan)


def shape(curve: np.ndarray) -> Shape:
    """``Shape`` of a curve over epochs 1..T."""
    best = int(np.nanargmin(curve))
    return Shape(float(curve[0]), float(curve[best]), best + 1, float(curve[-1]))


def power_shape(levels: np.ndarray, values: np.ndarray, used: np.ndarray | None = None) -> PowerShape:
    """``PowerShape`` of ℓ₂² ``values`` (S,) at noise ``levels`` (S,), the slope fitted over the positive
    values at ``used`` (default: all; fewer than two: all, marked ``floor_only``)."""
    positive = values > 0
    used = positive if used is None else used & positive
    floor_only = used.sum() < 2
    if floor_only:
        used = positive
    slope = float(np.polyfit(np.log10(levels[used]), np.log10(values[used]), 1)[0]) if used.sum() >= 2 else np.nan
    top = int(np.argmax(levels))
    return PowerShape(slope, float(levels[top]), float(values[top]), bool(floor_only))


def compare(figure: str, result: Result, analysis: dict | None = None) -> Comparison:
    """``result`` beside published figure ``figure`` ("A", "B": an epoch result; "C": a noise result), and
    beside both, for an epoch result, the linear-response prediction of ``analysis`` (``theory.analyze``)."""
    from l2rebound.fit import precision_floor

    theirs = published.load(figure)
    ours = seed_view(result)
    if figure == "C":
        if result.spec.curves:
            raise ValueError("published figure C is a noise experiment: compare it with a noise result")
        levels, floor = np.asarray(result.levels, float), precision_floor(result)
        x_theirs, y_theirs = theirs["l2"].x, theirs["l2"].y
        inside = (x_theirs >= levels.min()) & (x_theirs <= levels.max())
        order = np.argsort(levels)
        log_ours = np.interp(np.log10(x_theirs[inside]), np.log10(levels[order]), np.log10(ours["l2"][order]))
        rms = {"l2": float(np.sqrt(np.mean((log_ours - np.log10(y_theirs[inside])) ** 2)))} if inside.any() else {}
        shapes = {"ours": power_shape(levels, ours["l2"], ~floor), "published": power_shape(x_theirs, y_theirs)}
        return Comparison(figure, levels, ours, x_theirs, {"l2": y_theirs}, rms, shapes, floor)
    if not result.spec.curves:
        raise ValueError(f"published figure {figure} is an epoch experiment: compare it with an epoch result")
    explained = None
    if analysis is not None:
        ok = np.asarray(result.diverged_at) < 0
        ours["theory"] = normalised_mean(np.asarray(analysis["predicted_l2"], float)[ok, 1:] ** 2)
        explained = rebound_explained(result, analysis)
    x_theirs = theirs["l2"].x
    common = min(len(x_theirs), result.config.epochs)
    rms = {name: float(np.sqrt(np.nanmean((ours[name][:common] - theirs["l2" if name == "theory" else name].y[:common])
                                          ** 2))) for name in ours}
    shapes = {"ours": shape(ours["l2"]), "published": shape(theirs["l2"].y)}
    if analysis is not None:
        shapes["theory"] = shape(ours["theory"])
    return Comparison(figure, np.arange(1, result.config.epochs + 1), ours, x_theirs,
                      {name: c.y for name, c in theirs.items()}, rms, shapes, np.zeros(0, bool), explained)


# ------------------------------------------------------------------------------------------------ figures

OURS, THEIRS, THEORY = "tab:orange", "k", "tab:green"
LOSSES = {"train_loss": ("train loss", "tab:red"), "test_loss": ("test loss", "tab:blue")}


def comparison_figure(comparison: Comparison, result: Result, others: list[Result] = ()) -> Figure:
    """Our curve over the published one in the published view. Figures A and B: normalised ℓ₂² above,
    normalised losses below. Figure C: ℓ₂² against σ, log–log, with the levels at the precision floor
    ringed and, given ``others`` (noise results of the same set-up with other teachers), the min–max band
    of the teachers' mean curves."""
    fig = Figure(figsize=(8, 6.5) if comparison.figure != "C" else (7, 5.5), layout="constrained")
    ours_label = f"this toolkit ({result.config.runs} runs, {result.config.dtype})"
    if comparison.figure == "C":
        ax = fig.subplots()
        levels, ours = comparison.x, comparison.ours["l2"]
        if others:
            curves = np.array([ours] + [seed_view(other)["l2"] for other in others])
            ax.fill_between(levels, curves.min(0), curves.max(0), color=OURS, alpha=0.2, lw=0,
                            label=f"min–max of the mean over {len(curves)} teachers")
        ax.plot(levels, ours, "o-", color=OURS, ms=3, label=ours_label)
        floor = comparison.floor
        if floor.any():
            ax.plot(levels[floor], ours[floor], "o", mfc="none", color="gray", ms=8,
                    label="steps below the precision (floor)")
        ax.plot(comparison.x_theirs, comparison.theirs["l2"], "s--", color=THEIRS, ms=3, mfc="none",
                label="published figure C")
        against_noise(ax, f"mean {L2SQ} after {result.config.epochs} epochs", _caption(comparison))
    else:
        top, bottom = fig.subplots(2, 1, sharex=True)
        top.plot(comparison.x, comparison.ours["l2"], color=OURS, label=ours_label)
        top.plot(comparison.x_theirs, comparison.theirs["l2"], "--", color=THEIRS, label=f"published figure "
                                                                                            f"{comparison.figure}")
        if "theory" in comparison.ours:
            top.plot(comparison.x, comparison.ours["theory"], ":", color=THEORY, lw=2,
                     label="linear response (theory), same runs")
        for name, (label, colour) in LOSSES.items():  # the train loss wider, under the test loss it may hide
            bottom.plot(comparison.x, comparison.ours[name], color=colour, label=f"{label}, this toolkit",
                        lw=3 if name == "train_loss" else 1.5)
            bottom.plot(comparison.x_theirs, comparison.theirs[name], "--", color=colour, alpha=0.6,
                        label=f"{label}, published")
        top.set_ylabel(f"{L2SQ}, normalised per run")
        bottom.set_ylabel("loss, normalised per run")
        bottom.set_xlabel("Epoch")
        for ax in (top, bottom):
            ax.grid(alpha=0.3)
            ax.legend(loc="best", fontsize="small")
        top.set_title(_caption(comparison), fontsize="small")
    fig.suptitle(textwrap.fill(f"Published figure {comparison.figure} and this toolkit: "
                               f"{result.config.describe(skip=('runs',))}", 90), fontsize="medium")
    return fig


def _caption(comparison: Comparison) -> str:
    rms = ", ".join(f"{name} {value:.3g}" for name, value in comparison.rms.items())
    unit = " decades" if comparison.figure == "C" else ""
    return "\n".join([f"RMS difference{unit}: {rms}"] +
                     [f"{who}: {shape.text()}" for who, shape in comparison.shapes.items()])


class ScanRow(NamedTuple):
    """One set-up of a scan over the perturbation scale: its dtype and scale, RMS difference of normalised
    ℓ₂² from the published figure, and the shape of our curve."""

    dtype: str
    scale: float
    rms: float
    shape: Shape


def scan_rows(results: list[Result], figure: str = "A") -> list[ScanRow]:
    """``ScanRow`` of each epoch result (set-ups that differ in ``initial_permut`` and ``dtype``) that has a
    finished run; a set-up whose runs all diverged is left out."""
    rows = []
    for result in results:
        if np.all(np.asarray(result.diverged_at) >= 0):
            continue
        comparison = compare(figure, result)
        rows.append(ScanRow(result.config.dtype, result.config.initial_permut, comparison.rms["l2"],
                            comparison.shapes["ours"]))
    return rows


def write_scan(rows: list[ScanRow], path) -> None:
    """The scan as CSV: ``dtype,scale,rms,start,minimum,min_epoch,end``."""
    with open(path, "w", newline="") as f:
        f.write("dtype,scale,rms,start,minimum,min_epoch,end\n")
        f.writelines(f"{r.dtype},{r.scale:.17g},{r.rms:.17g},{r.shape.start:.17g},{r.shape.minimum:.17g},"
                     f"{r.shape.min_epoch},{r.shape.end:.17g}\n" for r in rows)


def scan_table(rows: list[ScanRow]) -> str:
    """The scan as plain text, one line per set-up, the best (smallest RMS) marked."""
    best = min(range(len(rows)), key=lambda i: rows[i].rms)
    lines = [f"{'dtype':>8} {'scale':>9} {'RMS':>7}  shape of normalised {L2SQ}"]
    lines += [f"{r.dtype:>8} {r.scale:>9.3g} {r.rms:>7.3f}  {r.shape.text()}{'  <- best' if i == best else ''}"
              for i, r in enumerate(rows)]
    return "\n".join(lines)


def scan_figure(rows: list[ScanRow], figure: str = "A") -> Figure:
    """RMS difference, epoch of the minimum and end value of normalised ℓ₂² against the perturbation scale,
    one line per dtype, with the published figure's values as horizontal lines."""
    target = shape(published.load(figure)["l2"].y)
    fig = Figure(figsize=(11, 3.8), layout="constrained")
    axes = fig.subplots(1, 3, sharex=True)
    panels = (("RMS difference from the published curve", lambda r: r.rms, None),
              ("epoch of the minimum", lambda r: r.shape.min_epoch, target.min_epoch),
              ("end value (epoch E)", lambda r: r.shape.end, target.end))
    for ax, (title, value, published_value) in zip(axes, panels):
        for dtype in sorted({r.dtype for r in rows}):
            mine = sorted((r for r in rows if r.dtype == dtype), key=lambda r: r.scale)
            ax.plot([r.scale for r in mine], [value(r) for r in mine], "o-", ms=4, label=dtype)
        if published_value is not None:
            ax.axhline(published_value, color=THEIRS, ls="--", lw=1, label=f"published figure {figure}")
        ax.set_xscale("log")
        ax.set_title(title, fontsize="medium")
        ax.set_xlabel("perturbation scale p (student = teacher + p·ξ)")
        ax.grid(alpha=0.3, which="both")
        ax.legend(fontsize="small")
    fig.suptitle(f"How figure {figure}'s shape depends on the initial perturbation", fontsize="medium")
    return fig
