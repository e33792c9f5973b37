"""Regenerate the shipped curves of the published figures, ``src/l2rebound/published/{A,B,C}.csv``, from the
figures' SVG files.

Usage::

    python tools/digitise.py ../shared/reference                  # into src/l2rebound/published
    python tools/digitise.py ../shared/reference /tmp/published   # anywhere else

Each SVG's sha256 is checked against ``l2rebound.published.FIGURES`` first; the curves are written as tidy
CSV ``curve,x,y`` with %.17g values, so a run on the published files reproduces the shipped CSVs byte for
byte. This script is not part of the installed package, which only reads the CSVs
(``l2rebound.published.load``).

How the curves are derived
--------------------------
GR draws each axes frame as a white plot-area rectangle with short tick marks on its edges, writes the
tick labels as glyph outlines (no ``<text>``), and draws each series as a polyline clipped to its plot
area. :func:`digitise` parses every drawn element into document coordinates (composing ``transform``
attributes of the element and its parents), finds the frames and their ticks, reads each tick's label from
its glyphs, fits the SVG-to-data map of each axis to the labelled ticks (linear, or linear in log10 when
the labels are powers of ten) and maps the series' vertices through it. :func:`panels` returns the fitted
maps and their residuals on the ticks.

Resolution: the SVG writes coordinates to six significant digits, so values are exact to about 1e-6 of an
axis's span (epochs come out as integers to within 1e-3).
"""

from __future__ import annotations

import argparse
import hashlib
import re
import xml.etree.ElementTree as ET
from pathlib import Path
from typing import NamedTuple

import numpy as np

from l2rebound import published
from l2rebound.published import FIGURES, SERIES, Curve

_SVG = "{http://www.w3.org/2000/svg}"
_TOL = 1e-3
"""Document units within which two coordinates count as equal: GR writes them to three decimals and a tick
repeats its spine's coordinate text, so equal ones agree far closer than this."""

_GLYPHS = {
    "mqqqqqqqqmqqqqqqqqz": "0",
    "mhvlllhz": "1",
    "mqqqqqqhlhvqqqqqqqlqqz": "2",
    "mqqqqqqqqqqqqlqqqqqqhlhqqqqqqlqz": "3",
    "mhvhvhvlllhlhvhz": "4",
    "mhvqqqqqqqqlqqqqqqqqhvhz": "5",
    "mqqqqqqqqqqqqlqqqqmqqqqqqqz": "6",
    "mlllhvhz": "7",
    "mqqqqqqqqqqqqqqqqqqqmqqqqlqqqqmqqqqqlqqqqz": "8",
    "mqqqqqqqqz": ".",
    "mhvhz": "-",
}
"""Glyph outline -> character, for the characters of the figures' tick labels (font Fira Sans, as GR
embeds it). An outline is keyed by its sequence of path commands, lower-cased with implicit repeats
spelled out: that sequence is the same for a character at every position and size (only the numbers
change), and differs between these characters. Read off the figures: each key occurs in labels whose
rendering shows that character."""


class AxisMap(NamedTuple):
    """SVG coordinate -> data value along one axis, fitted to the axis's labelled ticks.

    ``scale``: "linear" (value = slope * u + offset) or "log10" (log10(value) = slope * u + offset).
    ``ticks``: (k,) document coordinates of the labelled ticks; ``values``: (k,) their labels' values.
    ``residual``: max over the ticks of |fitted - labelled|, in data units ("linear") or decades ("log10").
    """

    scale: str
    slope: float
    offset: float
    ticks: np.ndarray
    values: np.ndarray
    residual: float

    def __call__(self, u):
        """Data values at document coordinates ``u`` (any shape)."""
        t = self.slope * np.asarray(u, dtype=np.float64) + self.offset
        return 10.0 ** t if self.scale == "log10" else t


class Panel(NamedTuple):
    """One axes frame: ``name`` ("top", "bottom" or "main"), ``frame`` = (left, top, right, bottom) in
    document coordinates (y grows downwards), and the maps of its ``x`` and ``y`` axes."""

    name: str
    frame: tuple[float, float, float, float]
    x: AxisMap
    y: AxisMap


class Mark(NamedTuple):
    """One drawn element in document coordinates.

    ``stroke``/``fill``: lower-case colour or None; ``letters``: its path commands, lower-cased, one per
    segment (the glyph key of ``_GLYPHS``); ``points``: (k, 2) vertices, control points of curved segments
    included; ``curved``: whether it has curved segments; ``clip``: (left, top, right, bottom) of its clip
    rectangle, or None.
    """

    stroke: str | None
    fill: str | None
    letters: str
    points: np.ndarray
    curved: bool
    clip: tuple[float, float, float, float] | None

    @property
    def box(self) -> tuple[float, float, float, float]:
        """(left, top, right, bottom) of ``points``."""
        return _box(self.points)


# ---------------------------------------------------------------------------------------------- geometry


def parse_transform(text: str | None) -> np.ndarray:
    """An SVG ``transform`` attribute as a (3, 3) affine matrix acting on column vectors (x, y, 1).

    Handles ``matrix``, ``translate``, ``scale``, ``rotate`` (degrees, optional centre), ``skewX`` and
    ``skewY``; a list of them composes left to right, as SVG applies the rightmost first.
    """
    out = np.eye(3)
    for name, args in re.findall(r"([A-Za-z]+)\s*\(([^)]*)\)", text or ""):
        v = [float(s) for s in re.split(r"[\s,]+", args.strip()) if s]
        m = np.eye(3)
        if name == "matrix":
            m[:2] = np.array(v).reshape(3, 2).T
        elif name == "translate":
            m[:2, 2] = v[0], v[1] if len(v) > 1 else 0.0
        elif name == "scale":
            m[0, 0], m[1, 1] = v[0], v[1] if len(v) > 1 else v[0]
        elif name == "rotate":
            a = np.radians(v[0])
            c, s = np.cos(a), np.sin(a)
            cx, cy = (v[1], v[2]) if len(v) == 3 else (0.0, 0.0)
            m[:2, :2] = [[c, -s], [s, c]]
            m[:2, 2] = cx - c * cx + s * cy, cy - s * cx - c * cy  # rotate about (cx, cy)
        elif name == "skewX":
            m[0, 1] = np.tan(np.radians(v[0]))
        elif name == "skewY":
            m[1, 0] = np.tan(np.radians(v[0]))
        else:
            raise ValueError(f"unknown transform {name!r}")
        out = out @ m
    return out


def apply(matrix: np.ndarray, points: np.ndarray) -> np.ndarray:
    """(k, 2) ``points`` through the (3, 3) affine ``matrix``."""
    return points @ matrix[:2, :2].T + matrix[:2, 2]


_NUMBER = r"[-+]?(?:\d+\.?\d*|\.\d+)(?:[eE][-+]?\d+)?"
_ARITY = {"m": 2, "l": 2, "h": 1, "v": 1, "z": 0, "c": 6, "s": 4, "q": 4, "t": 2, "a": 7}


def path_commands(d: str) -> list[tuple[str, tuple[float, ...]]]:
    """An SVG path's ``d`` as [(command letter, its numbers), ...], one entry per segment.

    Implicit repeats are spelled out (``l 1,2 3,4`` -> two ``l``), and so are the lines that follow a
    moveto's first pair (``m 0,0 1,1`` -> ``m``, ``l``; ``M`` -> ``M``, ``L``), as SVG reads them.
    """
    tokens = re.findall(rf"[A-Za-z]|{_NUMBER}", d)
    out, i, letter = [], 0, None
    while i < len(tokens):
        if tokens[i].isalpha():
            letter, i = tokens[i], i + 1
            if letter.lower() not in _ARITY:
                raise ValueError(f"unknown path command {letter!r}")
            if letter in "zZ":
                out.append((letter, ()))
                continue
        elif letter is None or letter in "zZ":
            raise ValueError(f"number without a command in path {d[:40]!r}")
        n = _ARITY[letter.lower()]
        args = tokens[i:i + n]
        if len(args) < n or any(t.isalpha() for t in args):
            raise ValueError(f"command {letter!r} short of numbers in path {d[:40]!r}")
        out.append((letter, tuple(float(t) for t in args)))
        i += n
        if letter in "mM":
            letter = "l" if letter == "m" else "L"  # pairs after a moveto's first are lines
    return out


def path_points(commands: list[tuple[str, tuple[float, ...]]]) -> tuple[str, np.ndarray, bool]:
    """Absolute coordinates of parsed path ``commands``: (letters, points (k, 2), curved).

    ``letters``: one lower-case letter per segment. ``points``: every segment's end point (``z`` adds the
    subpath's start again), preceded by its control points for curves (enough for a bounding box; arcs
    contribute their end point only). ``curved``: whether any segment is a curve or an arc.
    """
    pen, start, points, letters, curved = np.zeros(2), np.zeros(2), [], [], False
    for letter, args in commands:
        low, base = letter.lower(), (pen if letter.islower() else np.zeros(2))
        if low == "z":
            new = [start.copy()]
        elif low == "h":
            new = [np.array([args[0] + base[0], pen[1]])]
        elif low == "v":
            new = [np.array([pen[0], args[0] + base[1]])]
        elif low == "a":
            new = [np.array(args[5:7]) + base]
        else:
            new = list(np.array(args).reshape(-1, 2) + base)
        curved |= low in "cqsta"
        pen = new[-1]
        if low == "m":
            start = pen.copy()
        points += new
        letters.append(low)
    return "".join(letters), np.array(points, dtype=np.float64).reshape(-1, 2), curved


def polyline_points(text: str) -> np.ndarray:
    """A ``points`` attribute (``"x,y x,y ..."``) as (k, 2) coordinates."""
    return np.array([float(t) for t in re.findall(_NUMBER, text)], dtype=np.float64).reshape(-1, 2)


# ------------------------------------------------------------------------------------------ SVG elements


def _style(element: ET.Element, inherited: dict[str, str]) -> dict[str, str]:
    """``fill`` and ``stroke`` of ``element``: its ``style`` over its attributes over its parent's."""
    out = dict(inherited)
    for key in ("fill", "stroke"):
        if key in element.attrib:
            out[key] = element.attrib[key]
    for item in element.attrib.get("style", "").split(";"):
        key, _, value = item.partition(":")
        if key.strip() in ("fill", "stroke"):
            out[key.strip()] = value.strip()
    return out


def _box(points: np.ndarray) -> tuple[float, float, float, float]:
    """(left, top, right, bottom) of (k, 2) ``points``."""
    (x0, y0), (x1, y1) = points.min(axis=0), points.max(axis=0)
    return float(x0), float(y0), float(x1), float(y1)


def _colour(value: str | None) -> str | None:
    """A paint value as a lower-case ``#rrggbb``, or None for no paint."""
    if value is None or value.strip().lower() in ("none", "transparent"):
        return None
    value = value.strip().lower()
    named = {"black": "#000000", "white": "#ffffff"}
    if value in named:
        return named[value]
    if re.fullmatch(r"#[0-9a-f]{3}", value):
        return "#" + "".join(2 * c for c in value[1:])
    return value


def _clip_rectangles(root: ET.Element) -> dict[str, tuple[np.ndarray, np.ndarray]]:
    """``clipPath`` id -> (its rectangle's corners (4, 2) in the clip path's own units, the rectangle's
    transform (3, 3)); clip paths that are not a single rectangle are left out."""
    out = {}
    for clip in root.iter(f"{_SVG}clipPath"):
        rects = list(clip.iter(f"{_SVG}rect"))
        if len(rects) != 1:
            continue
        r = rects[0].attrib
        x, y, w, h = (float(r.get(k, 0)) for k in ("x", "y", "width", "height"))
        corners = np.array([[x, y], [x + w, y], [x + w, y + h], [x, y + h]])
        out[clip.attrib["id"]] = corners, parse_transform(clip.attrib.get("transform")) @ parse_transform(
            rects[0].attrib.get("transform"))
    return out


def _hidden(element: ET.Element) -> bool:
    """Whether ``element`` is not drawn: a definition, or ``display`` none."""
    style = element.attrib.get("style", "").replace(" ", "")
    return (element.tag in (f"{_SVG}defs", f"{_SVG}clipPath") or element.attrib.get("display") == "none"
            or "display:none" in style)


def _intersect(a, b):
    """The overlap of two (left, top, right, bottom) boxes, either of which may be None (no clip)."""
    if a is None or b is None:
        return a if b is None else b
    return max(a[0], b[0]), max(a[1], b[1]), min(a[2], b[2]), min(a[3], b[3])


def read_marks(svg_path) -> list[Mark]:
    """Every drawn ``path``, ``polyline``, ``polygon`` and ``line`` of an SVG file, in document
    coordinates (the root's user units: ``transform`` of the element and all its parents composed).

    Fill and stroke are inherited from parents; clip rectangles too, intersected. A clip rectangle is
    mapped with the transform of the element that uses it, as SVG's default
    ``clipPathUnits="userSpaceOnUse"`` wants. Definitions (``defs``, ``clipPath``) and elements with
    ``display`` none are not drawn.
    """
    root = ET.parse(svg_path).getroot()
    clips, marks = _clip_rectangles(root), []

    def walk(element, matrix, style, clip):
        for child in element:
            if not isinstance(child.tag, str) or _hidden(child):
                continue
            tag = child.tag.removeprefix(_SVG)
            m = matrix @ parse_transform(child.attrib.get("transform"))
            s = _style(child, style)
            c = clip
            ref = re.fullmatch(r"url\(#(.+)\)", child.attrib.get("clip-path", "").strip())
            if ref and ref.group(1) in clips:
                corners, own = clips[ref.group(1)]
                c = _intersect(clip, _box(apply(m @ own, corners)))
            if tag == "path":
                letters, points, curved = path_points(path_commands(child.attrib.get("d", "")))
            elif tag in ("polyline", "polygon"):
                points = polyline_points(child.attrib.get("points", ""))
                letters, curved = "m" + "l" * (len(points) - 1), False
            elif tag == "line":
                points = np.array([[float(child.attrib.get(k, 0)) for k in p] for p in (("x1", "y1"), ("x2", "y2"))])
                letters, curved = "ml", False
            else:
                walk(child, m, s, c)
                continue
            if len(points):
                marks.append(Mark(_colour(s.get("stroke")), _colour(s.get("fill")), letters, apply(m, points),
                                  curved, c))

    walk(root, np.eye(3), {"fill": "#000000", "stroke": "none"}, None)  # SVG's initial paint: black fill
    return marks


def _rectangle(mark: Mark) -> tuple[float, float, float, float] | None:
    """(left, top, right, bottom) when ``mark`` is an axis-aligned rectangle, else None."""
    if mark.curved or len(mark.points) < 4:
        return None
    box = _box(mark.points)
    on_corner = [(min(abs(x - box[0]), abs(x - box[2])) < _TOL) and (min(abs(y - box[1]), abs(y - box[3])) < _TOL)
                 for x, y in mark.points]
    return box if all(on_corner) and box[2] - box[0] > _TOL and box[3] - box[1] > _TOL else None


# ------------------------------------------------------------------------------------------ frames, ticks


def ticks(marks: list[Mark], frame: tuple[float, float, float, float], side: str) -> np.ndarray:
    """Document coordinates (sorted, (k,)) of the tick marks on the ``side`` ("bottom" or "left") edge of
    ``frame``: black two-point strokes that start on that edge and run perpendicular to it into the frame,
    shorter than a tenth of the frame (which leaves out the spines, also perpendicular to the edge)."""
    x0, y0, x1, y1 = frame
    if side == "bottom":  # along x; inward is up, i.e. decreasing document y
        along, edge, inward, span, lo, hi = 0, y1, -1.0, y1 - y0, x0, x1
    elif side == "left":  # along y; inward is right
        along, edge, inward, span, lo, hi = 1, x0, 1.0, x1 - x0, y0, y1
    else:
        raise ValueError(f"side must be 'bottom' or 'left', not {side!r}")
    out = []
    for mark in marks:
        if mark.stroke != "#000000" or mark.curved or len(mark.points) != 2:
            continue
        u, w = mark.points[:, along], mark.points[:, 1 - along]
        if abs(u[0] - u[1]) > _TOL or not lo - _TOL <= u[0] <= hi + _TOL:
            continue
        for start, end in (w, w[::-1]):
            depth = inward * (end - start)  # positive when the free end points into the frame
            if abs(start - edge) < _TOL and depth > _TOL and depth < 0.1 * span:
                out.append(float(u[0]))
    return np.unique(out)


def find_frames(marks: list[Mark]) -> list[tuple[float, float, float, float]]:
    """The axes frames, top to bottom: white-filled rectangles (GR's plot areas) with at least two tick
    marks on their bottom edge, which tells them from the figure's background and the legend boxes."""
    frames = {box for mark in marks if mark.fill == "#ffffff" and (box := _rectangle(mark)) is not None}
    return sorted((f for f in frames if len(ticks(marks, f, "bottom")) >= 2), key=lambda f: f[1])


# ------------------------------------------------------------------------------------------- tick labels


def glyph_char(letters: str) -> str:
    """The character whose outline has path commands ``letters`` (see ``_GLYPHS``)."""
    try:
        return _GLYPHS[letters]
    except KeyError:
        raise ValueError(f"unknown glyph outline {letters!r} in a tick label") from None


def read_label(glyphs: list[Mark]) -> tuple[float, bool]:
    """The value of one tick label drawn as ``glyphs``, and whether it is written as a power of ten.

    Characters run left to right. Digits whose bottom is raised above the label's lowest digit bottom by
    more than a quarter of the tallest digit are superscripts (GR writes log ticks as 10 with a raised
    exponent; in these figures the exponent sits 0.8 of a digit higher, while the bottoms of one line's
    digits differ by under 0.05 of one); a minus sign or point belongs to the part of the label after it.
    ``"1.00"`` -> (1.0, False); ``"10"`` + raised ``"-4"`` -> (1e-4, True).
    """
    glyphs = sorted(glyphs, key=lambda g: g.box[0])
    chars = [glyph_char(g.letters) for g in glyphs]
    digits = [g.box for g, c in zip(glyphs, chars) if c.isdigit()]
    if not digits:
        raise ValueError(f"tick label {''.join(chars)!r} has no digit")
    line = max(b[3] for b in digits)  # document y grows downwards: the lowest bottom is the baseline
    tallest = max(b[3] - b[1] for b in digits)
    raised = [c.isdigit() and g.box[3] < line - 0.25 * tallest for g, c in zip(glyphs, chars)]
    for i in reversed(range(len(chars))):  # signs go with what follows them
        if not chars[i].isdigit():
            raised[i] = raised[i + 1] if i + 1 < len(chars) else (raised[i - 1] if i else False)
    base = "".join(c for c, s in zip(chars, raised) if not s)
    power = "".join(c for c, s in zip(chars, raised) if s)
    if not power:
        return float(base), False
    if base != "10":
        raise ValueError(f"tick label {base}^{power} is not a power of ten")
    return 10.0 ** int(power), True


def _nearest_run(glyphs: list[Mark], side: str, edge: float, gap: float) -> list[Mark]:
    """The glyphs of ``glyphs`` reached from the frame's ``edge`` outwards (down from a bottom edge, left
    from a left edge) without crossing an empty stretch wider than ``gap``: one tick label, without the
    axis title set further out."""
    if side == "bottom":
        spans = [(g.box[1] - edge, g.box[3] - edge) for g in glyphs]
    else:
        spans = [(edge - g.box[2], edge - g.box[0]) for g in glyphs]
    out, reach = [], None
    for g, (near, far) in sorted(zip(glyphs, spans), key=lambda t: t[1][0]):
        if reach is not None and near > reach + gap:
            break
        out.append(g)
        reach = far if reach is None else max(reach, far)
    return out


def tick_labels(marks: list[Mark], frame, side: str, at: np.ndarray) -> tuple[np.ndarray, np.ndarray, bool]:
    """The labels of the ticks ``at`` (k,) on the ``side`` of ``frame``: (labelled ticks, their values,
    whether the labels are powers of ten).

    A tick's candidate glyphs are the black, unstroked fills beyond that edge of the frame whose centre
    is nearer to this tick than to any other along the axis, and within half a tick spacing of it. Its
    label is the run of them nearest the frame (see ``_nearest_run``), with gaps under 0.4 of the height
    of a digit: the characters of a label are set at most 0.25 of it apart in these figures, the axis
    title at least 0.55 further out. Ticks with no glyphs are unlabelled.
    """
    x0, y0, x1, y1 = frame
    along, edge = (0, y1) if side == "bottom" else (1, x0)
    half = 0.5 * (np.min(np.diff(at)) if len(at) > 1 else (x1 - x0, y1 - y0)[along])
    beyond = [m for m in marks if m.fill == "#000000" and m.stroke is None
              and (m.box[1] > y1 if side == "bottom" else m.box[2] < x0)]
    centre = np.array([(g.box[along] + g.box[along + 2]) / 2 for g in beyond]).reshape(-1)
    owner = [int(np.argmin(np.abs(at - c))) for c in centre]
    mine = [[g for g, c, o in zip(beyond, centre, owner) if o == k and abs(c - at[k]) <= half]
            for k in range(len(at))]
    digits = [g.box[3] - g.box[1] for group in mine for g in group if _GLYPHS.get(g.letters, "").isdigit()]
    gap = 0.4 * max(digits, default=0.0)
    labelled, values, powers = [], [], []
    for tick, group in zip(at, mine):
        if group:
            value, power = read_label(_nearest_run(group, side, edge, gap))
            labelled.append(tick), values.append(value), powers.append(power)
    if len(set(powers)) > 1:
        raise ValueError(f"the {side} axis of frame {frame} mixes powers of ten with plain labels")
    return np.array(labelled), np.array(values), bool(powers and powers[0])


def fit_axis(at: np.ndarray, values: np.ndarray, scale: str) -> AxisMap:
    """The least-squares map from tick coordinates ``at`` (k,) to labelled ``values`` (k,), linear or
    linear in log10 (``scale`` "linear" or "log10"), with its largest residual on the ticks.

    Raises when that residual exceeds 1e-5 of the labels' span: the labels were misread, or the axis is
    not of that scale.
    """
    if len(at) < 2:
        raise ValueError("an axis needs at least two labelled ticks")
    target = np.log10(values) if scale == "log10" else values
    slope, offset = np.polyfit(at, target, 1)
    residual = float(np.max(np.abs(slope * at + offset - target)))
    if residual > 1e-5 * np.ptp(target):
        raise ValueError(f"tick labels {values} do not fit a {scale} map (residual {residual:.3g})")
    return AxisMap(scale, float(slope), float(offset), at, values, residual)


def _axis(marks: list[Mark], frame, side: str) -> AxisMap:
    """The fitted map of the axis on the ``side`` of ``frame``, linear in log10 when its labels are
    powers of ten."""
    at = ticks(marks, frame, side)
    if len(at) < 2:
        raise ValueError(f"frame {frame} has fewer than two ticks on its {side} edge")
    labelled, values, power = tick_labels(marks, frame, side, at)
    return fit_axis(labelled, values, "log10" if power else "linear")


def _panels(marks: list[Mark]) -> list[Panel]:
    frames = find_frames(marks)
    names = (["main"] if len(frames) == 1 else ["top", "bottom"] if len(frames) == 2
             else [f"panel{i}" for i in range(len(frames))])
    return [Panel(n, f, _axis(marks, f, "bottom"), _axis(marks, f, "left")) for n, f in zip(names, frames)]


def panels(svg_path) -> list[Panel]:
    """The axes of a GR figure, top to bottom, with the fitted maps of their x (bottom) and y (left)
    axes; named "main" when there is one, else "top", "bottom" (or "panel0", "panel1", ... for more)."""
    return _panels(read_marks(svg_path))


# ---------------------------------------------------------------------------------------------- curves


def digitise(svg_path) -> dict[str, Curve]:
    """The series plotted in a published figure (``SERIES`` names them by colour), in data units.

    A series is a coloured stroke clipped to a plot area (GR clips series to their frame, rounding the
    clip rectangle outward to whole units; the legend's sample lines use the figure's clip and are left
    out). Its vertices, in drawing order, go through its panel's axis maps. Curved path segments in a
    series raise, as GR draws series as polylines.
    """
    marks, found = read_marks(svg_path), {}
    axes = _panels(marks)
    for mark in marks:
        if mark.stroke in (None, "#000000") or mark.clip is None:
            continue
        panel = [p for p in axes if all(abs(c - f) <= 2.0 for c, f in zip(mark.clip, p.frame))]
        if not panel:
            continue
        if mark.stroke not in SERIES:
            raise ValueError(f"series of unknown colour {mark.stroke} in {svg_path}")
        if mark.curved:
            raise ValueError(f"series {mark.stroke} in {svg_path} has curved segments")
        name, axis = SERIES[mark.stroke]
        if name in found:
            raise ValueError(f"two series of colour {mark.stroke} in {svg_path}")
        p = panel[0]
        found[name] = Curve(p.x(mark.points[:, 0]), p.y(mark.points[:, 1]), p.name, axis)
    return found


# -------------------------------------------------------------------------------------- shipped data


def sha256(path) -> str:
    """Hex sha256 of a file's bytes."""
    return hashlib.sha256(Path(path).read_bytes()).hexdigest()


def write_csv(curves: dict[str, Curve], path) -> None:
    """``curves`` as a tidy CSV ``curve,x,y``, values as %.17g (so they read back exactly)."""
    with open(path, "w", newline="") as f:
        f.write("curve,x,y\n")
        for name, c in curves.items():
            f.writelines(f"{name},{x:.17g},{y:.17g}\n" for x, y in zip(c.x, c.y))


def regenerate(reference_dir, out_dir=None) -> list[Path]:
    """Rewrite the shipped CSVs from the SVGs in ``reference_dir`` (into ``out_dir``, by default the
    package's ``published`` folder), after checking each file's sha256 against ``FIGURES``; returns the
    paths written, one per figure."""
    out = Path(out_dir) if out_dir is not None else Path(published.__file__).with_name("published")
    written = []
    for figure, (name, digest) in FIGURES.items():
        svg = Path(reference_dir) / name
        if sha256(svg) != digest:
            raise ValueError(f"{svg} is not the published file (sha256 {sha256(svg)} != {digest})")
        write_csv(digitise(svg), out / f"{figure}.csv")
        written.append(out / f"{figure}.csv")
    return written


def main(argv=None) -> int:
    """Command line: ``digitise.py REFERENCE_DIR [OUT_DIR]``; prints each CSV written."""
    parser = argparse.ArgumentParser(
        description="Digitise the published figures' SVGs (expA.svg, expB.svg, expC.svg, sha256-checked) into "
                    "the CSVs that l2rebound.published.load reads.")
    parser.add_argument("reference_dir", type=Path, help="folder holding the published SVGs, e.g. ../shared/reference")
    parser.add_argument("out_dir", type=Path, nargs="?", default=None,
                        help="where to write A.csv, B.csv, C.csv (default: the package's published folder)")
    args = parser.parse_args(argv)
    for path in regenerate(args.reference_dir, args.out_dir):
        print(path)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
