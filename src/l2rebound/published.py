"""The three published figures of ℓ₂-Experiments as reference data: their curves, digitised exactly from the
figures' SVG files and shipped as ``published/{A,B,C}.csv`` (read with :func:`load`).

Where the data come from
------------------------
The Julia project "ℓ₂-Experiments" (arXiv:2509.15060) published three figures, exported by Plots.jl's GR
backend and touched up in Inkscape. The script ``tools/digitise.py`` of the source repository (not part of
the installed package) re-derives the plotted series from those files and writes the CSVs.

======  ========  ================================================================
figure  file      sha256
======  ========  ================================================================
A       expA.svg  5e8d73e894877875e72b42bdbf6068d38d3da862c8155506dfd5ffa3ac4784f1
B       expB.svg  9e578f9d4f9b3e8916992a65b7b3ec8ab59b1c8badb6fccd9869a2df5b434ba1
C       expC.svg  62c0f79fef855d5440b6b51081882a9d626dfb2366fa41b7823e1c05e21b80f9
======  ========  ================================================================

Each file still holds GR's title with the run's parameters, moved off the page in Inkscape (outside the
viewBox, so it does not render): A "lr=0.01; σ=0.0; initial_permut=1.0e-6; epochs=500; N=20",
B "lr=0.01; σ=0.001; initial_permut=0.0; epochs=500; N=20", C "lr=1.0e-5; initial_permut=0.0; epochs=100;
N=20".

What the curves are (all values dimensionless)
----------------------------------------------
Figures A (a perturbed student trained by plain GD) and B (a student started on its teacher, trained on
noisy labels) have two panels sharing the x axis "Epoch", ticks 0–500, one point per epoch 1..500:

* ``"l2"`` -- top panel, vertical axis titled "ℓ₂" (legend "ℓ₂(teacher - student)"), ticks 0.00–1.00:
  the teacher–student distance, normalised as the project describes it (the figure does not say) -- each
  run's squared ℓ₂ distance min–max scaled to [0, 1] over the epochs, then averaged over the N = 20 runs.
  The axis says neither "squared" nor "normalised"; B's curve runs from exactly 0 to exactly 1, as a
  per-run min–max scaling of runs that all grow gives.
* ``"train_loss"``, ``"test_loss"`` -- bottom panel, vertical axis "Loss", ticks 0.00–1.00: the losses on
  the same normalised scale (the train loss starts at exactly 1). In A, without label noise, the two
  coincide to the eye (the train loss is drawn twice as wide, under the test loss).

Figure C has one panel, log10 on both axes:

* ``"l2"`` -- vertical axis "ℓ₂ after training", ticks 10⁻¹⁸–10⁻¹⁰: the (squared) teacher–student distance
  after training, mean over runs; horizontal axis "σ²", ticks 10⁻⁴–10⁰, 25 noise levels on a geometric
  grid from 1.0e-5 to 0.9911. The axis is labelled σ²; by the project's description (not the figure's) the
  grid is of the noise level σ itself. The values here are what is plotted, whatever the label.

Resolution: the SVG writes coordinates to six significant digits, so values are exact to about 1e-6 of an
axis's span (epochs come out as integers to within 1e-3).
"""

from __future__ import annotations

import csv
from importlib import resources
from typing import NamedTuple

import numpy as np

FIGURES = {
    "A": ("expA.svg", "5e8d73e894877875e72b42bdbf6068d38d3da862c8155506dfd5ffa3ac4784f1"),
    "B": ("expB.svg", "9e578f9d4f9b3e8916992a65b7b3ec8ab59b1c8badb6fccd9869a2df5b434ba1"),
    "C": ("expC.svg", "62c0f79fef855d5440b6b51081882a9d626dfb2366fa41b7823e1c05e21b80f9"),
}
"""Figure -> (published SVG file name, its sha256)."""

SERIES = {
    "#ffbe6f": ("l2", "l2"),
    "#ff5a7e": ("train_loss", "loss"),
    "#125b9a": ("test_loss", "loss"),
}
"""Stroke colour -> (curve name, quantity on its panel's vertical axis), as the figures' legends and axis
titles show them: orange "ℓ₂(teacher - student)" under "ℓ₂", pink "Train loss" and blue "Test loss" under
"Loss"."""

PANELS = {
    "A": {"l2": "top", "train_loss": "bottom", "test_loss": "bottom"},
    "B": {"l2": "top", "train_loss": "bottom", "test_loss": "bottom"},
    "C": {"l2": "main"},
}
"""Figure -> curve name -> panel it is drawn in (what the digitiser finds; :func:`load` restores it)."""


class Curve(NamedTuple):
    """One plotted series in data units.

    ``x``: (n,) float64, horizontal values (epochs in figures A, B; noise level in C).
    ``y``: (n,) float64, vertical values (dimensionless; see the module docstring for each curve).
    ``panel``: "top" or "bottom" (figures A, B), "main" (figure C).
    ``axis``: the quantity on the panel's vertical axis, "l2" or "loss".
    """

    x: np.ndarray
    y: np.ndarray
    panel: str
    axis: str


def _read_csv(text: str, figure: str) -> dict[str, Curve]:
    """The curves of figure ``figure`` from the text of its CSV (header ``curve,x,y``, rows in drawing order):
    curve name -> ``Curve`` with (n,) float64 ``x``, ``y`` and the panel and axis that ``PANELS`` and
    ``SERIES`` give it."""
    rows: dict[str, list[tuple[float, float]]] = {}
    for row in csv.DictReader(text.splitlines()):
        rows.setdefault(row["curve"], []).append((float(row["x"]), float(row["y"])))
    return {name: Curve(np.array([x for x, _ in xy]), np.array([y for _, y in xy]), PANELS[figure][name],
                        next(a for n, a in SERIES.values() if n == name)) for name, xy in rows.items()}


def load(figure: str) -> dict[str, Curve]:
    """The shipped digitised curves of published figure ``figure`` ("A", "B" or "C"), as ``tools/digitise.py``
    derives them from that figure's SVG (see the module docstring for what they are).

    >>> sorted(load("A")), len(load("A")["l2"].x), len(load("C")["l2"].x)
    (['l2', 'test_loss', 'train_loss'], 500, 25)
    """
    if figure not in FIGURES:
        raise ValueError(f"figure must be one of {sorted(FIGURES)}, not {figure!r}")
    text = resources.files("l2rebound").joinpath("published", f"{figure}.csv").read_text()
    return _read_csv(text, figure)
