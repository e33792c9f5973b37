"""The digitiser of the published figures (``tools/digitise.py``, not part of the package): the shipped CSVs
are what it re-derives from the SVGs, the axis maps fit their ticks, and its SVG parsing and CSV writing hold.

The SVGs are read from ``shared/reference`` beside the repository; the tests that need them skip without.
"""

import importlib.util
from pathlib import Path

import numpy as np
import pytest

from l2rebound import published as P

TOOL = Path(__file__).resolve().parents[1] / "tools" / "digitise.py"
"""The digitiser script, loaded from its file: ``tools/`` is no package."""

REFERENCE = Path(__file__).resolve().parents[1].parent / "shared" / "reference"
"""Where the published SVGs live: ``shared/reference`` beside the repository."""

needs_svgs = pytest.mark.skipif(
    not all((REFERENCE / name).is_file() for name, _ in P.FIGURES.values()),
    reason=f"the published SVGs are not in {REFERENCE} (the shipped CSVs are still checked without them)")

FIGURES = sorted(P.FIGURES)


@pytest.fixture(scope="module")
def D():
    """``tools/digitise.py`` as a module."""
    spec = importlib.util.spec_from_file_location("digitise", TOOL)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def svg(figure):
    return REFERENCE / P.FIGURES[figure][0]


# ------------------------------------------------------------------------------------- re-derivation


@needs_svgs
@pytest.mark.parametrize("figure", FIGURES)
def test_the_svgs_are_the_published_files(D, figure):
    assert D.sha256(svg(figure)) == P.FIGURES[figure][1]


@needs_svgs
@pytest.mark.parametrize("figure", FIGURES)
def test_shipped_csv_is_what_digitise_derives(D, figure):
    derived, shipped = D.digitise(svg(figure)), P.load(figure)
    assert list(derived) == list(shipped)
    for name in derived:
        d, s = derived[name], shipped[name]
        assert (d.panel, d.axis) == (s.panel, s.axis)
        assert d.x.shape == s.x.shape == d.y.shape == s.y.shape
        np.testing.assert_allclose(d.x, s.x, rtol=1e-12, atol=0)
        np.testing.assert_allclose(d.y, s.y, rtol=1e-12, atol=0)


EXPECTED_AXES = {
    "A": {"top": ("linear", [0, 100, 200, 300, 400, 500], "linear", [1, 0.75, 0.5, 0.25, 0]),
          "bottom": ("linear", [0, 100, 200, 300, 400, 500], "linear", [1, 0.75, 0.5, 0.25, 0])},
    "C": {"main": ("log10", [1e-4, 1e-2, 1.0], "log10", [1e-10, 1e-12, 1e-14, 1e-16, 1e-18])},
}
EXPECTED_AXES["B"] = EXPECTED_AXES["A"]
"""The tick labels as the figures show them (y labels top to bottom)."""


@needs_svgs
@pytest.mark.parametrize("figure", FIGURES)
def test_axis_maps_read_the_labels_and_fit_the_ticks(D, figure):
    found = D.panels(svg(figure))
    assert [p.name for p in found] == list(EXPECTED_AXES[figure])
    for p in found:
        xscale, xlabels, yscale, ylabels = EXPECTED_AXES[figure][p.name]
        for axis, scale, labels in ((p.x, xscale, xlabels), (p.y, yscale, ylabels)):
            assert axis.scale == scale
            np.testing.assert_array_equal(axis.values, labels)
            span = np.ptp(np.log10(axis.values) if scale == "log10" else axis.values)
            assert axis.residual <= 1e-5 * span  # the SVG's six significant digits, nothing more
            np.testing.assert_allclose(axis(axis.ticks), labels, rtol=1e-4, atol=1e-5 * span)


@needs_svgs
def test_two_panel_figures_share_their_x_axis(D):
    top, bottom = D.panels(svg("A"))
    assert top.frame[1] < top.frame[3] < bottom.frame[1] < bottom.frame[3]  # top above bottom
    assert (top.x.slope, top.x.offset) == (bottom.x.slope, bottom.x.offset)


@needs_svgs
def test_main_rewrites_the_shipped_csvs_byte_for_byte(D, tmp_path, capsys):
    assert D.main([str(REFERENCE), str(tmp_path)]) == 0
    assert capsys.readouterr().out.split() == [str(tmp_path / f"{figure}.csv") for figure in FIGURES]
    shipped = Path(P.__file__).with_name("published")
    for figure in FIGURES:
        assert (tmp_path / f"{figure}.csv").read_bytes() == (shipped / f"{figure}.csv").read_bytes()


def test_main_refuses_a_file_that_is_not_the_published_one(D, tmp_path):
    for name, _ in P.FIGURES.values():
        (tmp_path / name).write_text("<svg/>")
    with pytest.raises(ValueError, match="is not the published file"):
        D.main([str(tmp_path), str(tmp_path)])


# ------------------------------------------------------------------------------------------ helpers


def test_path_commands_spell_out_repeats_and_relative_forms(D):
    cmds = D.path_commands("m 1,2 3,4 h 5 v-6 L 7 8 9 10 z M.5.5")
    assert cmds == [("m", (1, 2)), ("l", (3, 4)), ("h", (5,)), ("v", (-6,)), ("L", (7, 8)), ("L", (9, 10)),
                    ("z", ()), ("M", (0.5, 0.5))]
    letters, points, curved = D.path_points(cmds)
    assert letters == "mlhvllzm" and not curved
    np.testing.assert_array_equal(points, [[1, 2], [4, 6], [9, 6], [9, 0], [7, 8], [9, 10], [1, 2], [0.5, 0.5]])
    assert D.path_points(D.path_commands("M0,0 q 1,1 2,0"))[2]


def test_transforms_compose_right_to_left(D):
    m = D.parse_transform("translate(10,-20) scale(2) matrix(1,0,0,0.5,3,4)")
    np.testing.assert_allclose(D.apply(m, np.array([[1.0, 2.0]])), [[10 + 2 * 4, -20 + 2 * 5]])
    np.testing.assert_allclose(D.apply(D.parse_transform("rotate(90, 1, 1)"), np.array([[2.0, 1.0]])), [[1, 2]],
                               atol=1e-12)


def test_read_marks_composes_parent_transforms_and_clips(D, tmp_path):
    path = tmp_path / "f.svg"
    path.write_text(
        '<svg xmlns="http://www.w3.org/2000/svg" viewBox="0 0 100 100">'
        '<defs><clipPath id="c"><rect x="0" y="0" width="10" height="10"/></clipPath></defs>'
        '<g transform="translate(5,0)" style="stroke:#ABCDEF"><g transform="scale(2)">'
        '<polyline points="1,1 2,3" clip-path="url(#c)" transform="translate(0,1)" style="fill:none"/>'
        '<path d="M 0,0 L 1,1" style="display:none"/></g></g>'
        '<g clip-path="url(#c)"><line x1="0" y1="0" x2="3" y2="4" stroke="black"/></g></svg>')
    mark, line = D.read_marks(path)
    assert mark.stroke == "#abcdef" and mark.fill is None
    np.testing.assert_allclose(mark.points, [[7, 4], [9, 8]])
    assert mark.clip == (5.0, 2.0, 25.0, 22.0)
    assert (line.stroke, line.fill, line.letters, line.clip) == ("#000000", "#000000", "ml", (0.0, 0.0, 10.0, 10.0))


def test_fit_axis_refuses_labels_that_do_not_fit(D):
    at = np.array([0.0, 1.0, 2.0])
    assert D.fit_axis(at, np.array([0.0, 5.0, 10.0]), "linear").residual < 1e-12
    with pytest.raises(ValueError, match="do not fit"):
        D.fit_axis(at, np.array([0.0, 5.0, 11.0]), "linear")


def test_csv_round_trips_exactly(D, tmp_path):
    curves = P.load("C")
    D.write_csv(curves, tmp_path / "C.csv")
    again = P._read_csv((tmp_path / "C.csv").read_text(), "C")
    np.testing.assert_array_equal(again["l2"].x, curves["l2"].x)
    np.testing.assert_array_equal(again["l2"].y, curves["l2"].y)
