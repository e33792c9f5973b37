"""Node-link diagrams of tanh networks, side by side (a teacher, a student before and after pruning, ...),
with NumPy and matplotlib only: no JAX, so a stored θ can be drawn without loading the engine.

Layers are columns, left to right; each non-zero weight is a line coloured by its sign, its width
proportional to |w|; hidden and output units are coloured by their bias, and dead hidden units (no non-zero
incoming or no non-zero outgoing weight) are grey. Widths, bias colours and the vertical spacing of units
share one scale over all panels, so that the panels can be compared by eye.

θ (P,) is laid out as in ``l2rebound.layout``: ``W1`` (d1, d0) row-major, ``b1``, ``W2``, ``b2``, ...

"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
from matplotlib import colormaps
from matplotlib.cm import ScalarMappable
from matplotlib.collections import LineCollection
from matplotlib.colors import Normalize, to_rgba
from matplotlib.figure import Figure
from matplotlib.lines import Line2D

from l2rebound.layout import layers, num_params
from l2rebound.plots import DPI
from l2rebound.pruning import alive_mask, alive_units

CMAP = colormaps["RdBu_r"]
POSITIVE, NEGATIVE = CMAP(0.9), CMAP(0.1)  # the bias colormap's ends, so that red means + for edges and nodes
EDGE_ALPHA = 0.75  # crossing edges stay visible through each other
DEAD = to_rgba("lightgrey")
INPUT = to_rgba("white")
MAX_WIDTH = 2.5  # points, for the largest |w| over all panels
MIN_WIDTH = 0.25  # points: smaller weights would vanish, yet they are non-zero
UNIT_HEIGHT = 0.16  # inches between neighbouring units: 25 units take 4 inches, 50 take 8
MIN_AXES_HEIGHT, MAX_AXES_HEIGHT = 2.0, 9.0  # inches; beyond the maximum, units move closer and nodes shrink
LAYER_WIDTH, MIN_PANEL_WIDTH = 0.85, 2.8  # inches; the minimum leaves room for the panel's title
LEGEND_ROW_WIDTH = 9.0  # inches: narrower figures get the legend on three rows instead of one
NODE_SIZE = 7.0  # points, the nodes' diameter when units are UNIT_HEIGHT apart


def weights_and_biases(theta, dims: tuple[int, ...]) -> list[tuple[np.ndarray, np.ndarray]]:
    """``layout.layers`` of θ as float arrays (the same ``ValueError``s: only a finite θ that fits its dims
    can be drawn)."""
    return layers(np.asarray(theta, dtype=float), dims)


def node_positions(dims: tuple[int, ...], tallest: int | None = None) -> list[np.ndarray]:
    """Per layer l = 0..L, the (d_l, 2) positions of its units: x = l, y one apart, unit 0 on top. Inputs and
    outputs are centred on 0; hidden layers start at the top of a ``tallest``-unit layer (default: the
    widest here), so that unit i of a narrow teacher sits level with unit i of a wide student aligned to it."""
    tallest = max(dims) if tallest is None else tallest
    return [np.column_stack([np.full(d, float(l)),
                             (d - 1 if l in (0, len(dims) - 1) else tallest - 1) / 2 - np.arange(d)])
            for l, d in enumerate(dims)]


def edges(theta, dims: tuple[int, ...], tallest: int | None = None) -> tuple[np.ndarray, np.ndarray]:
    """The non-zero weights as segments (E, 2, 2) between the units' ``node_positions``, and their values
    (E,), ordered by increasing |w| so that drawing them in order puts the large ones on top."""
    positions = node_positions(dims, tallest)
    segments, values = [], []
    for l, (w, _) in enumerate(weights_and_biases(theta, dims)):
        out, inp = np.nonzero(w)
        segments.append(np.stack([positions[l][inp], positions[l + 1][out]], axis=1))
        values.append(w[out, inp])
    segments, values = np.concatenate(segments), np.concatenate(values)
    order = np.argsort(np.abs(values), kind="stable")
    return segments[order], values[order]


def line_widths(values: np.ndarray, largest: float) -> np.ndarray:
    """Widths in points for the weights ``values``: ``MAX_WIDTH`` · |w| / ``largest``, at least ``MIN_WIDTH``."""
    return np.maximum(MAX_WIDTH * np.abs(values) / largest, MIN_WIDTH)


def dead_units(theta, dims: tuple[int, ...]) -> np.ndarray:
    """Bool (sum(dims[1:]),) over the hidden and output units in layer order: True for the hidden units
    that ``alive_mask`` rejects; outputs are never dead."""
    return ~np.concatenate([*alive_mask(theta, dims), np.ones(dims[-1], bool)])


def node_colours(theta, dims: tuple[int, ...], norm: Normalize) -> np.ndarray:
    """RGBA (sum(dims[1:]), 4) for the hidden and output units in layer order: ``DEAD`` for the dead ones,
    the others their bias through ``CMAP`` and ``norm``."""
    biases = np.concatenate([b for _, b in weights_and_biases(theta, dims)])
    return np.where(dead_units(theta, dims)[:, None], DEAD, CMAP(norm(biases)))


def panel_title(label: str, theta, dims: tuple[int, ...]) -> str:
    """``label`` over "nonzero k / P · alive a1, a2, ..." (alive units per hidden layer)."""
    alive = alive_units(theta, dims)
    counts = f"nonzero {np.count_nonzero(theta)} / {num_params(dims)}"
    return f"{label}\n{counts}" + (f" · alive {', '.join(map(str, alive))}" if alive else "")


def layer_names(dims: tuple[int, ...]) -> list[str]:
    """Tick labels under the columns: the layer's role and size."""
    roles = ["in", *(f"h{l}" for l in range(1, len(dims) - 1)), "out"]
    return [f"{role}\n{d}" for role, d in zip(roles, dims)]


def draw_panel(ax, label: str, theta, dims: tuple[int, ...], largest: float, norm: Normalize, tallest: int,
               node_size: float) -> None:
    """One network on ``ax``: a ``LineCollection`` of its non-zero weights labelled "weights" (``largest`` |w|
    gets ``MAX_WIDTH``), then on top its inputs as squares ("inputs") and its other units as circles
    coloured by ``node_colours`` ("units"), ``node_size`` points wide, with the y range of a
    ``tallest``-unit layer."""
    segments, values = edges(theta, dims, tallest)
    colours = np.where(values[:, None] > 0, POSITIVE, NEGATIVE)
    colours[:, 3] = EDGE_ALPHA
    ax.add_collection(LineCollection(segments, colors=colours, linewidths=line_widths(values, largest),
                                     capstyle="round", zorder=1, label="weights"))
    positions = node_positions(dims, tallest)
    ax.scatter(*positions[0].T, s=node_size**2, marker="s", c=[INPUT], edgecolors="black", linewidths=0.6,
               zorder=2, label="inputs")
    units = np.concatenate(positions[1:])
    rims = np.where(dead_units(theta, dims)[:, None], to_rgba("darkgrey"), to_rgba("black"))
    ax.scatter(*units.T, s=node_size**2, c=node_colours(theta, dims, norm), edgecolors=rims, linewidths=0.6,
               zorder=2, label="units")
    ax.set_xlim(-0.4, len(dims) - 0.6)
    ax.set_ylim(-tallest / 2, tallest / 2)
    ax.set_xticks(range(len(dims)), layer_names(dims), fontsize="small")
    ax.set_yticks([])
    ax.tick_params(length=0)
    for spine in ax.spines.values():
        spine.set_visible(False)
    ax.set_title(panel_title(label, theta, dims), fontsize="medium")


def legend_handles() -> list[Line2D]:
    """What the colours, widths and markers mean, for ``Figure.legend``."""
    return [Line2D([], [], color=POSITIVE, lw=2, label="weight > 0"),
            Line2D([], [], color=NEGATIVE, lw=2, label="weight < 0"),
            Line2D([], [], color="grey", lw=MAX_WIDTH, label="width ∝ |w| (zero weights not drawn)"),
            Line2D([], [], ls="", marker="o", ms=7, mfc=DEAD, mec="darkgrey", label="dead hidden unit"),
            Line2D([], [], ls="", marker="s", ms=7, mfc=INPUT, mec="black", label="input (no bias)")]


def network_figure(panels: Sequence[tuple[str, np.ndarray, tuple[int, ...]]], *, title: str | None = None) -> Figure:
    """The networks ``panels``, each ``(label, θ (P,), dims)``, drawn side by side, one axes each, with one
    colour bar for the biases (symmetric about 0) and a legend.

    Edge widths (points) are proportional to |w| over the largest |w| of all panels, and bias colours use
    the largest |b| of all panels, so equal weights and biases look the same in every panel; units are the
    same distance apart in every panel. Raises ``ValueError`` for no panels or a θ that does not fit its dims
    (see ``weights_and_biases``)."""
    if not panels:
        raise ValueError("network_figure needs at least one (label, theta, dims) panel.")
    networks = [(label, np.asarray(theta, dtype=float), tuple(dims)) for label, theta, dims in panels]
    layers = [weights_and_biases(theta, dims) for _, theta, dims in networks]
    largest = max(max(np.abs(w).max() for w, _ in net) for net in layers) or 1.0  # all zero: no edges to scale
    bound = max(max(np.abs(b).max() for _, b in net) for net in layers) or 1.0
    norm = Normalize(-bound, bound)
    tallest = max(max(dims) for _, _, dims in networks)
    axes_height = np.clip(UNIT_HEIGHT * tallest, MIN_AXES_HEIGHT, MAX_AXES_HEIGHT)
    node_size = min(NODE_SIZE, NODE_SIZE * axes_height / (UNIT_HEIGHT * tallest))
    widths = [max(LAYER_WIDTH * len(dims), MIN_PANEL_WIDTH) for _, _, dims in networks]
    width = sum(widths) + 1.2  # the colour bar
    one_row = width >= LEGEND_ROW_WIDTH
    fig = Figure(figsize=(width, axes_height + (2.0 if one_row else 2.4)), dpi=DPI, layout="constrained")
    axes = fig.subplots(1, len(networks), width_ratios=widths, squeeze=False)[0]
    for ax, (label, theta, dims) in zip(axes, networks):
        draw_panel(ax, label, theta, dims, largest, norm, tallest, node_size)
    fig.colorbar(ScalarMappable(norm, CMAP), ax=list(axes), label="bias", shrink=0.7, aspect=30)
    fig.legend(handles=legend_handles(), loc="outside lower center", ncols=5 if one_row else 2, fontsize="small",
               frameon=False)
    if title:
        fig.suptitle(title)
    return fig
