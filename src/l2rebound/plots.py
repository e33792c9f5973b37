"""Figures and terminal summaries: the epoch experiment's two-panel ℓ₂ / loss figure, and the noise
experiment's ℓ₂-vs-σ figure with its fitted power law.

``epoch_figures`` draws two views of an ``EpochResult``: the original figures' normalised one (each run's curve
scaled to [0, 1], then averaged over runs) and an absolute one (means with min–max bands over runs, log
axes); ``noise_figures`` the ℓ₂-vs-σ view of a ``NoiseResult``. They return matplotlib figures and write
nothing; ``write_figures`` stores a result's figures. ``summary_table`` gives the key numbers as plain
text. All use only the runs that finished (``diverged_at == -1``); diverged runs are named, and if none
finished they raise ``ValueError``.
"""

from __future__ import annotations

import pathlib
import textwrap
import warnings

import numpy as np
from matplotlib.figure import Figure

from l2rebound.fit import fit_power_law, precision_floor
from l2rebound.results import EpochResult, NoiseResult, Result, proven_optimal
from l2rebound.store import write_atomic

L2 = "ℓ₂"
STYLE = {  # metric -> (legend label, colour, line style); distances go in the upper panel, losses below
    "l2": (f"{L2}(teacher - student)", "tab:orange", "-"),
    "l2_aligned": (f"{L2} aligned: min over hidden-unit permutations and sign flips", "tab:green", "--"),
    "l2_aligned_lower": (f"certified lower bound on the min (drawn where below {L2} aligned)", "tab:green", "-"),
    "l2_normal_form": (f"{L2} between normal forms", "tab:purple", ":"),
    "train_loss": ("Train loss", "tab:red", "-"),
    "test_loss": ("Test loss", "tab:blue", "-"),
    "clean_test_loss": ("Clean test loss (vs. teacher)", "dimgray", "--"),
}
DPI = 150


def finished_metrics(result: EpochResult) -> tuple[dict[str, np.ndarray], list[str]]:
    """The metrics of the runs that finished, (R_ok, E + 1) each, and one line per diverged run
    (runs numbered 1..R as in the experiment). Raises ``ValueError`` if every run diverged."""
    diverged_at = np.asarray(result.diverged_at)
    ok = diverged_at == -1
    lines = [f"run {r + 1} diverged at epoch {diverged_at[r]}" for r in np.flatnonzero(~ok)]
    if not ok.any():
        raise ValueError(f"all {len(ok)} runs diverged, nothing to plot or summarise: " + "; ".join(lines))
    return {name: np.asarray(values, dtype=float)[ok] for name, values in result.metrics.items()}, lines


def normalise(x: np.ndarray) -> np.ndarray:
    """Scale each row of ``x`` (R, T) to [0, 1] by the min and max of its finite values; a constant row
    becomes 0, NaN entries stay NaN."""
    low = np.nanmin(x, axis=1, keepdims=True)
    span = np.nanmax(x, axis=1, keepdims=True) - low
    return np.divide(x - low, span, out=np.where(np.isnan(x), np.nan, 0.0), where=span > 0)


def subtitle(result: EpochResult | NoiseResult) -> str:
    """Non-default parameters as ``k=v`` (or "defaults"), the number of runs and how many diverged."""
    runs = result.config.runs
    total = np.size(result.diverged_at)
    diverged = int(np.sum(np.asarray(result.diverged_at) != -1))
    text = result.config.describe(skip=("runs",)) + f"; {runs} runs"
    if diverged:
        text += f" ({diverged} of {total} {'runs' if total == runs else 'trainings'} diverged, not shown)"
    return textwrap.fill(text, 110)


def two_panels(series: dict, title: str, note: str, scale: str, log: bool, power: str = "") -> Figure:
    """ℓ₂ over epochs above, losses below, sharing the epoch axis.

    series: metric name (a key of ``STYLE``) -> (centre, low, high), arrays (E + 1,); low and high
    bound a shaded band, or are None for none. Only the epochs where the centre is finite are drawn
    (the aligned distances exist every ``align_every`` epochs); ``l2_aligned_lower`` (needs ``l2_aligned``)
    is drawn thin over the aligned curve's epochs, broken where it is NaN. The minimum of the ℓ₂ centre
    curve is marked.
    title, note: figure title and the small subtitle line; scale: appended to the y labels.
    log: log y-axes, with non-positive values masked (left out) rather than clipped; an axis with no
    positive value at all (an exact start trained 0 epochs) stays linear.
    power: "²" when the distances are squared (labels say ℓ₂²).
    """
    def shown(curve):
        return np.where(curve > 0, curve, np.nan) if log and curve is not None else curve

    fig = Figure(figsize=(8, 6.5), layout="constrained")
    top, bottom = fig.subplots(2, 1, sharex=True)
    positive = set()  # the axes that got a value > 0: only those can be log-scaled
    for name, (centre, low, high) in series.items():
        ax = top if name.startswith("l2") else bottom
        label, colour, style = STYLE[name]
        label = label.replace(L2, L2 + power, 1) if name.startswith("l2") else label
        at = np.flatnonzero(np.isfinite(centre))
        width = None
        if name == "l2_aligned_lower":  # NaN where it equals the aligned distance: the line breaks there
            at, width = np.flatnonzero(np.isfinite(series["l2_aligned"][0])), 0.8
        if np.any(centre[at] > 0):
            positive.add(ax)
        ax.plot(at, shown(centre[at]), color=colour, ls=style, lw=width, label=label)
        if low is not None:
            ax.fill_between(at, shown(low[at]), shown(high[at]), color=colour, alpha=0.2, lw=0)
    l2 = series["l2"][0]
    best = int(np.argmin(l2))
    top.plot([best], shown(l2[best : best + 1]), "o:", color="k", mfc=STYLE["l2"][1], lw=0.8,
             label=f"min {L2}{power} at epoch {best}")
    for ax in (top, bottom):
        ax.axvline(best, color="k", ls=":", lw=0.8)
        ax.set_yscale("log" if log and ax in positive else "linear")
        ax.legend(loc="best", fontsize="small")
        ax.grid(alpha=0.3)
    top.set_ylabel(L2 + power + scale)
    bottom.set_ylabel("Loss" + scale)
    bottom.set_xlabel("Epoch")
    fig.suptitle(title)
    top.set_title(note, fontsize="small")
    return fig


def write_figures(result: Result, folder: pathlib.Path, squared: bool = False) -> list[pathlib.Path]:
    """Write each of ``result``'s figures as ``{figure_stem}_{suffix}.svg`` and ``.png`` into ``folder``
    (created if missing); returns the paths."""
    stem = result.config.figure_stem()
    return [path for view, fig in result.figures(squared).items()
            for path in write_figure(fig, pathlib.Path(folder) / f"{stem}_{result.file_suffix(view, squared)}")]


def write_figure(fig: Figure, stem: pathlib.Path) -> list[pathlib.Path]:
    """Write ``fig`` as ``{stem}.svg`` and ``{stem}.png`` (atomically; the folder is created if missing)."""
    stem.parent.mkdir(parents=True, exist_ok=True)
    paths = []
    for suffix in ("svg", "png"):
        paths.append(stem.with_name(f"{stem.name}.{suffix}"))
        write_atomic(paths[-1], lambda tmp: fig.savefig(tmp, format=suffix, dpi=DPI))
    return paths


def epoch_figures(result: EpochResult, squared: bool = False) -> dict[str, Figure]:
    """The absolute and the normalised view of ``result``. The upper panel holds ℓ₂ (ℓ₂² with
    ``squared``, the original figures' quantity) and, where recorded, the aligned ℓ₂; the absolute view also the
    normal-form ℓ₂ unless it is never below the raw ℓ₂ (then the normal form is uninformative; it stays in
    the table), and the mean certified lower bound on the aligned ℓ₂ at the epochs where some run's search
    did not prove its aligned ℓ₂ optimal (elsewhere the two coincide)."""
    metrics, _ = finished_metrics(result)
    unproven = np.zeros(metrics["l2"].shape[1], bool)  # epochs where some run's lower bound is below
    if "l2_aligned_lower" in metrics:  # results built by hand may lack it
        upper, lower = metrics["l2_aligned"], metrics["l2_aligned_lower"]
        unproven = np.any(np.isfinite(upper) & np.isfinite(lower) & ~proven_optimal(upper, lower), axis=0)
    if squared:
        metrics = {k: v**2 if k.startswith("l2") else v for k, v in metrics.items()}
    runs = len(metrics["l2"])
    note = subtitle(result)
    recorded = [k for k in STYLE if k in metrics and np.any(np.isfinite(metrics[k]))]  # may not be recorded
    if "l2_aligned_lower" in recorded and not unproven.any():
        recorded.remove("l2_aligned_lower")  # every aligned ℓ₂ is the proven minimum: one curve says it
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)  # all-NaN epochs
        if "l2_normal_form" in recorded and not np.any(np.nanmean(metrics["l2_normal_form"], 0) < metrics["l2"].mean(0)):
            # never better than no alignment at all: the units' order by |bias| is arbitrary (near-equal
            # biases, e.g. zero-bias teachers); drawn, it would only squash the other curves
            recorded.remove("l2_normal_form")
    normalised = {k: (normalise(metrics[k]).mean(axis=0), None, None)
                  for k in ("l2", "l2_aligned", "train_loss", "test_loss") if k in recorded}
    absolute = {k: (metrics[k].mean(axis=0), metrics[k].min(axis=0), metrics[k].max(axis=0)) for k in recorded}
    if "l2_aligned_lower" in absolute:  # a thin line, no band: the aligned curve's band already spans the runs
        absolute["l2_aligned_lower"] = (np.where(unproven, absolute["l2_aligned_lower"][0], np.nan), None, None)
    power = "²" if squared else ""
    return {
        "absolute": two_panels(absolute, f"Mean over {runs} runs, band: min–max over runs", note, "", log=True,
                               power=power),
        "normalised": two_panels(
            normalised, f"Each run's curve normalised to [0, 1] (its min to its max), then averaged over {runs} runs",
            note, " (normalised)", log=False, power=power),
    }


def _fit_or_none(result: NoiseResult, squared: bool):
    """The power-law fit, or None where too few levels lie above the precision floor."""
    try:
        return fit_power_law(result, squared)
    except ValueError:
        return None


def exponent(fit) -> str:
    """``k ± half-width (95% CI [low, high])`` with as many digits as the interval needs."""
    half = (fit.k_high - fit.k_low) / 2
    digits = max(2, min(8, 1 - int(np.floor(np.log10(half))) if half > 0 else 8))
    return f"{fit.k:.{digits}f} ± {half:.1g} (95% CI [{fit.k_low:.{digits}f}, {fit.k_high:.{digits}f}])"


def noise_figures(result: NoiseResult, squared: bool = False) -> dict[str, Figure]:
    """``{"l2": figure}``: ℓ₂ (or ℓ₂²) after training against σ on log–log axes: mean over runs with the
    min–max band, the fitted power law with k and its 95% interval, and the levels left out of the fit
    (precision floor) in grey."""
    power = 2 if squared else 1
    name = f"{L2}²" if squared else L2
    finished = np.where(np.asarray(result.diverged_at) < 0, result.metrics["l2"] ** power, np.nan)
    if np.all(np.isnan(finished)):
        raise ValueError("every training diverged: nothing to plot")
    fit = _fit_or_none(result, squared)
    floor = precision_floor(result)
    sigma = result.levels
    with np.errstate(invalid="ignore"), warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)  # all-NaN levels stay NaN
        mean, low, high = np.nanmean(finished, 1), np.nanmin(finished, 1), np.nanmax(finished, 1)
    shown = sigma > 0
    fig = Figure(figsize=(6.5, 5.5), layout="constrained")
    ax = fig.subplots()
    colour = STYLE["l2"][1]
    ax.fill_between(sigma[shown], low[shown], high[shown], color=colour, alpha=0.2, lw=0, label="min–max over runs")
    ax.plot(sigma[shown], mean[shown], "-", color=colour, label=f"{name} after training (mean)")
    ax.plot(sigma[shown & ~floor], mean[shown & ~floor], "o", color=colour, ms=4)
    if np.any(floor & shown):
        ax.plot(sigma[floor & shown], mean[floor & shown], "o", mfc="none", color="gray", ms=6,
                label="at the precision floor (not fitted)")
    if fit is not None:
        line = sigma[fit.used]
        ax.plot(line, fit.c * line**fit.k, "k--", lw=1, label=f"fit {name} ≈ {fit.c:.3g}·σ^k, k = {exponent(fit)}")
    against_noise(ax, f"{name} after {result.config.epochs} epochs", subtitle(result))
    fig.suptitle(f"Distance to the teacher vs label noise, {result.config.runs} runs per level"
                 + ("" if fit else " (too few levels above the precision floor to fit)"))
    return {"l2": fig}


def against_noise(ax, ylabel: str, title: str) -> None:
    """Finish axes that show a distance against the noise level σ: log–log, a grid, the legend top left."""
    ax.set_xscale("log")
    ax.set_yscale("log")
    ax.set_xlabel("σ (label noise)")
    ax.set_ylabel(ylabel)
    ax.grid(alpha=0.3, which="both")
    ax.legend(loc="upper left", fontsize="small")
    ax.set_title(title, fontsize="small")


def noise_summary(result: NoiseResult, squared: bool = False) -> str:
    """Plain-text table per level (mean ± std of ℓ₂, mean aligned ℓ₂ and the final losses over finished
    runs, a mark for the precision floor), the fitted exponent with its 95% interval, and in how many
    trainings the aligned ℓ₂ is the proven minimum (with the largest relative gap to its certified lower
    bound elsewhere)."""
    fit = _fit_or_none(result, squared)
    floor = precision_floor(result)
    ok = np.asarray(result.diverged_at) < 0
    lines = [f"{'sigma':>10} {'l2 mean':>11} {'± std':>10} {'aligned':>11} {'train loss':>11} {'clean test':>11}  fitted"]
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


def summary_table(result: EpochResult) -> str:
    """Plain-text table of ``result`` over the runs that finished: one row per quantity (ℓ₂ minimum
    and its epoch, final ℓ₂, final/min ratio, final aligned and normal-form ℓ₂ unless not recorded,
    final losses) as mean ± std over runs, then one line per
    diverged run. The final/min ratio is left out when a minimum is 0 (exact start). The normal-form row
    carries a note when the normal form is uninformative: by the test ``epoch_figures`` uses to leave it
    out of the figure, its mean over runs is below the raw ℓ₂ at no recorded epoch. The aligned row says
    in how many runs the search proved it the minimum over the group (``results.proven_optimal``) and,
    when not in all, the certified lower bound's mean ± std."""
    m, diverged = finished_metrics(result)
    l2 = m["l2"]
    aligned = {  # recorded, unless align_every = 0 (the last epoch always is)
        f"final aligned {L2}": m["l2_aligned"][:, -1], f"final normal-form {L2}": m["l2_normal_form"][:, -1],
    } if np.isfinite(m["l2_aligned"][:, -1]).all() else {}
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)  # epochs at which nothing was recorded
        undefined = bool(aligned) and not np.any(np.nanmean(m["l2_normal_form"], 0) < l2.mean(0))
    notes = {f"final normal-form {L2}": f"   (normal form undefined: near-equal |biases|; see the aligned {L2})"
             } if undefined else {}
    lower = m.get("l2_aligned_lower")  # NaN in results stored before it was computed
    if aligned and lower is not None and np.isfinite(lower[:, -1]).all():
        proven = proven_optimal(m["l2_aligned"][:, -1], lower[:, -1])
        bound = "" if proven.all() else f"lower bound {np.mean(lower[:, -1]):.4g} ± {np.std(lower[:, -1]):.4g}; "
        notes[f"final aligned {L2}"] = f"   ({bound}proven optimal in {proven.sum()} of {len(proven)} runs)"
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


def _spectrum_panel(ax, analysis: dict, config) -> None:
    """Run 1's Gauss–Newton and exact-Hessian eigenvalues, largest first, |λ| on a log axis, with the
    level 1/(ηE) below which a direction has not settled within the run."""
    gn = analysis["gn_eigenvalues"][0][::-1]
    hess = analysis["hessian_eigenvalues"][::-1]
    index = np.arange(1, len(gn) + 1)
    ax.plot(index, np.abs(gn), ".", ms=3, color="tab:blue", label="Gauss–Newton (2/n)JᵀJ, |λ|")
    ax.plot(index, np.abs(hess), ".", ms=2, color="tab:red", alpha=0.5, label="exact Hessian, |λ|")
    if np.any(hess < 0):
        ax.plot(index[hess < 0], np.abs(hess[hess < 0]), "x", ms=3, color="tab:red", label="exact Hessian, λ < 0")
    settle = 1 / (config.learning_rate * max(config.epochs, 1))
    ax.axhline(settle, color="k", ls="--", lw=0.8, label=f"1/(ηE) = {settle:.3g}: slower directions have not settled")
    ax.set_yscale("log")
    ax.set_xscale("log")
    ax.set_xlabel("eigenvalue index (largest first)")
    ax.set_ylabel("|λ| (run 1, at the teacher)")
    ax.grid(alpha=0.3, which="both")
    ax.legend(loc="lower left", fontsize="x-small")
    unsettled = analysis["unsettled"]
    ax.set_title(f"unsettled: {np.mean(unsettled):.0f} of {len(gn)} directions (mean over runs)", fontsize="small")


def write_theory(result: Result, analysis: dict, folder: pathlib.Path) -> list[pathlib.Path]:
    """``theory_figure`` written as ``{figure_stem}_theory.{svg,png}`` into ``folder``; returns the paths."""
    return write_figure(theory_figure(result, analysis), pathlib.Path(folder) / f"{result.config.figure_stem()}_theory")


def theory_figure(result: EpochResult | NoiseResult, analysis: dict) -> Figure:
    """The measured distances beside the linear-response prediction of ``theory.analyze``.

    Epoch experiment: (left) measured ℓ₂ against the prediction over epochs, mean and min–max over runs;
    (middle) the spectrum; (right) the share of ‖θ_s − θ_t‖² in the flattest directions at the kept
    epochs. Noise experiment: ℓ₂ after training against σ, measured and predicted, and the spectrum."""
    config = result.config
    ok = np.asarray(result.diverged_at) < 0
    if not ok.any():
        raise ValueError("every training diverged: nothing to compare with the theory")
    predicted, measured = analysis["predicted_l2"], result.metrics["l2"]
    noise = isinstance(result, NoiseResult)
    fig = Figure(figsize=(14 if not noise else 11, 4.8), layout="constrained")
    axes = fig.subplots(1, 2 if noise else 3)
    ax = axes[0]
    x = result.levels if noise else np.arange(config.epochs + 1)
    axis = 1 if noise else 0  # the runs: (S, R) for the noise experiment, (R, E + 1) for the epoch one
    positive = False  # log scale only with something to show (an exact start trained 0 epochs is all 0)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)  # all-NaN levels stay NaN
        for values, label, colour, style in ((measured, "measured", STYLE["l2"][1], "-"),
                                             (predicted, "linear response", "k", "--")):
            values = np.where(ok, values, np.nan) if noise else values[ok]
            centre = np.nanmean(values, axis=axis)
            shown = (centre > 0) & (x > 0)  # log axes: σ = 0 and ℓ₂ = 0 are left out
            positive = positive or bool(shown.any())
            ax.plot(x[shown], centre[shown], style, color=colour, label=f"{L2} {label} (mean)")
            ax.fill_between(x[shown], np.nanmin(values, axis=axis)[shown], np.nanmax(values, axis=axis)[shown],
                            color=colour, alpha=0.15, lw=0)
    ax.set_yscale("log" if positive else "linear")
    if noise:
        ax.set_xscale("log")
    ax.set_xlabel("σ (label noise)" if noise else "Epoch")
    ax.set_ylabel(f"{L2} after {config.epochs} epochs" if noise else L2)
    ax.grid(alpha=0.3, which="both")
    ax.legend(loc="best", fontsize="small")
    ax.set_title("prediction: plain GD on the loss alone, linearised at the teacher", fontsize="small")
    _spectrum_panel(axes[1], analysis, config)
    if not noise:
        ax = axes[2]
        if not len(result.kept_epochs):
            ax.text(0.5, 0.5, "no students kept (--align-every 0)", ha="center", va="center", transform=ax.transAxes)
        fractions = analysis["flat_fraction"][ok]  # (R_ok, K, 3)
        labels = ("numerically null directions", "unsettled directions (1/(ηλ) > E)", "all but the stiffest direction")
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", RuntimeWarning)  # δ = 0 at an exact start: NaN
            for i, (label, colour) in enumerate(zip(labels, ("tab:gray", "tab:green", "tab:purple"))):
                ax.plot(result.kept_epochs, np.nanmean(fractions[:, :, i], axis=0), ".-", color=colour, label=label)
        ax.set_ylim(-0.02, 1.02)
        ax.set_xlabel("Epoch")
        ax.set_ylabel("share of ‖θ_s − θ_t‖² (mean over runs)")
        ax.grid(alpha=0.3)
        ax.legend(loc="best", fontsize="x-small")
        ax.set_title("where the measured displacement lies (Gauss–Newton eigenbasis)", fontsize="small")
    fig.suptitle("Measured distance vs the linear-response theory near the teacher\n" + subtitle(result),
                 fontsize="medium")
    return fig


def theory_summary(result: EpochResult | NoiseResult, analysis: dict) -> str:
    """Plain text: measured against predicted final ℓ₂, their largest relative gap (over every epoch from
    1, or every level), the spectrum's extent and how many directions have not settled within the run."""
    ok = np.asarray(result.diverged_at) < 0
    config = result.config
    predicted, measured = analysis["predicted_l2"], result.metrics["l2"]
    if isinstance(result, NoiseResult):
        final_p, final_m = predicted[ok], measured[ok]
        every_p, every_m = final_p, final_m
        what = f"final {L2} over levels and finished runs"
    else:
        final_p, final_m = predicted[ok, -1], measured[ok, -1]
        every_p, every_m = predicted[ok, 1:], measured[ok, 1:]
        what = f"final {L2} (mean ± std over runs)"
    with np.errstate(divide="ignore", invalid="ignore"):
        gap = np.abs(every_p / every_m - 1)
    gap = gap[np.isfinite(gap)]  # 0/0 at an exact start; nothing at all after 0 epochs
    gn = analysis["gn_eigenvalues"]
    lines = [
        f"{what}: measured {np.nanmean(final_m):.4g} ± {np.nanstd(final_m):.3g}, "
        f"linear response {np.nanmean(final_p):.4g} ± {np.nanstd(final_p):.3g}; largest relative gap "
        + (f"{gap.max():.3g}" if gap.size else "— (nothing to compare)"),
        ("Gauss–Newton spectrum at the teacher, largest first: "
         + ", ".join(f"{gn[:, -i].mean():.4g}" for i in range(1, min(3, gn.shape[1]) + 1))
         + f"; η·λ_max = {config.learning_rate * gn[:, -1].mean():.3g}"),
        ("time constants 1/(ηλ) of the stiffest directions: "
         + ", ".join(f"{1 / (config.learning_rate * gn[:, -i].mean()):.3g}" for i in range(1, min(5, gn.shape[1]) + 1))
         + " epochs"),
        f"unsettled after {config.epochs} epochs (1/(ηλ) > E): {analysis['unsettled'].mean():.1f} of {gn.shape[1]} "
        f"directions ({analysis['null'].mean():.1f} numerically null)",
        f"run 1 at its teacher: exact Hessian λ_min {analysis['hessian_eigenvalues'][0]:.3g}, "
        f"λ_max {analysis['hessian_eigenvalues'][-1]:.4g}; Gauss–Newton λ_max {gn[0, -1]:.4g}",
    ]
    if not isinstance(result, NoiseResult) and len(result.kept_epochs):  # nothing kept with align_every 0
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", RuntimeWarning)  # δ = 0 (an exact start at epoch 0): NaN
            last = np.nanmean(analysis["flat_fraction"][ok, -1], axis=0)
        lines.append(f"share of the final ‖θ_s − θ_t‖² in unsettled directions: {last[1]:.3g}; in null ones: {last[0]:.3g}")
    return "\n".join(lines)
