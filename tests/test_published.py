"""The published figures' curves: the shipped CSVs are what ``digitise`` re-derives from the SVGs, the
axis maps fit their ticks, and the curves show what the figures show.

The facts checked against the figures were read off renders of the SVGs (rsvg-convert) and off an overlay
of the digitised curves on them: A's ℓ₂ dips from about 0.45 to about 0.12 near epoch 30, then climbs to
about 0.91; its two losses fall from 1 to 0 on top of each other. B's ℓ₂ climbs from 0 to 1; its train
loss falls from 1 towards 0 while its test loss rises from about 0.35 to a plateau near 0.68, the two
crossing near epoch 15. C's curve climbs steadily, ten decades over five, from about 3e-19 at 10⁻⁵ to
about 2.5e-9 at 10⁰.
"""

from pathlib import Path

import numpy as np
import pytest

from l2rebound import published as P

REFERENCE = Path(__file__).resolve().parents[1].parent / "shared" / "reference"
"""Where the published SVGs live: ``shared/reference`` beside the repository."""

needs_svgs = pytest.mark.skipif(
    not all((REFERENCE / name).is_file() for name, _ in P.FIGURES.values()),
    reason=f"the published SVGs are not in {REFERENCE} (the shipped CSVs are still checked without them)")

FIGURES = sorted(P.FIGURES)


def svg(figure):
    return REFERENCE / P.FIGURES[figure][0]


# ------------------------------------------------------------------------------------- re-derivation


@needs_svgs
@pytest.mark.parametrize("figure", FIGURES)
def test_the_svgs_are_the_published_files(figure):
    assert P.sha256(svg(figure)) == P.FIGURES[figure][1]


@needs_svgs
@pytest.mark.parametrize("figure", FIGURES)
def test_shipped_csv_is_what_digitise_derives(figure):
    derived, shipped = P.digitise(svg(figure)), P.load(figure)
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
def test_axis_maps_read_the_labels_and_fit_the_ticks(figure):
    found = P.panels(svg(figure))
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
def test_two_panel_figures_share_their_x_axis():
    top, bottom = P.panels(svg("A"))
    assert top.frame[1] < top.frame[3] < bottom.frame[1] < bottom.frame[3]  # top above bottom
    assert (top.x.slope, top.x.offset) == (bottom.x.slope, bottom.x.offset)


# -------------------------------------------------------------------------- what the figures show


@pytest.mark.parametrize("figure", ["A", "B"])
def test_epoch_figures_have_one_point_per_epoch(figure):
    curves = P.load(figure)  # the hidden titles say epochs=500
    assert list(curves) == ["l2", "train_loss", "test_loss"]
    assert [c.panel for c in curves.values()] == ["top", "bottom", "bottom"]
    assert [c.axis for c in curves.values()] == ["l2", "loss", "loss"]
    for c in curves.values():
        assert c.x.shape == c.y.shape == (500,)
        np.testing.assert_allclose(c.x, np.arange(1, 501), atol=1e-3)
        assert np.all((c.y > -1e-5) & (c.y < 1 + 1e-5))  # normalised to [0, 1]


def test_figure_A_l2_dips_then_rebounds():
    l2 = P.load("A")["l2"]
    lowest = int(np.argmin(l2.y))
    assert round(l2.x[lowest]) == 32  # the minimum, well inside the 500 epochs
    assert l2.y[lowest] == pytest.approx(0.1189, abs=1e-4)
    assert l2.y[0] == pytest.approx(0.4478, abs=1e-4)
    assert l2.y[-1] == pytest.approx(0.9094, abs=1e-4)
    assert l2.y[-1] == l2.y.max()


def test_figure_A_losses_fall_together():
    c = P.load("A")
    train, test = c["train_loss"].y, c["test_loss"].y
    assert train[0] == pytest.approx(1, abs=1e-5) and test[0] == pytest.approx(1, abs=1e-5)
    assert np.all(np.diff(train) <= 0)
    assert abs(train[-1]) < 1e-4 and abs(test[-1]) < 1e-4
    assert np.max(np.abs(train - test)) < 2e-3  # without label noise the two coincide to the eye


def test_figure_B_l2_grows_from_zero_to_one():
    l2 = P.load("B")["l2"]
    assert l2.y[0] == pytest.approx(0, abs=1e-5) and l2.y[-1] == pytest.approx(1, abs=1e-5)
    assert np.all(np.diff(l2.y) > 0)


def test_figure_B_losses_cross():
    c = P.load("B")
    epochs, train, test = c["train_loss"].x, c["train_loss"].y, c["test_loss"].y
    assert train[0] == pytest.approx(1, abs=1e-5) and train[-1] < 0.01
    assert test[0] == pytest.approx(0.35, abs=1e-3)
    assert 0.66 < test[99:].min() and test.max() == pytest.approx(0.6891, abs=1e-4)  # the plateau
    crossing = epochs[np.argmax(train < test)]
    assert round(crossing) == 16


def test_figure_C_grows_as_a_power_near_two():
    c = P.load("C")
    assert list(c) == ["l2"] and (c["l2"].panel, c["l2"].axis) == ("main", "l2")
    sigma, l2 = c["l2"].x, c["l2"].y
    assert sigma.shape == l2.shape == (25,)
    steps = np.diff(np.log10(sigma))
    np.testing.assert_allclose(steps, 0.208173, atol=1e-5)  # a geometric grid
    assert sigma[0] == pytest.approx(1e-5, rel=1e-4) and sigma[-1] == pytest.approx(0.99115, rel=1e-4)
    assert np.all(np.diff(l2) > 0)
    assert l2[0] == pytest.approx(2.703e-19, rel=1e-3) and l2[-1] == pytest.approx(2.535e-9, rel=1e-3)
    slope = np.polyfit(np.log10(sigma), np.log10(l2), 1)[0]
    assert slope == pytest.approx(2.055, abs=1e-3)
    assert (np.log10(l2[-1] / l2[0]) / np.log10(sigma[-1] / sigma[0])) == pytest.approx(2.0, abs=0.01)


# ------------------------------------------------------------------------------------------ helpers


def test_path_commands_spell_out_repeats_and_relative_forms():
    cmds = P.path_commands("m 1,2 3,4 h 5 v-6 L 7 8 9 10 z M.5.5")
    assert cmds == [("m", (1, 2)), ("l", (3, 4)), ("h", (5,)), ("v", (-6,)), ("L", (7, 8)), ("L", (9, 10)),
                    ("z", ()), ("M", (0.5, 0.5))]
    letters, points, curved = P.path_points(cmds)
    assert letters == "mlhvllzm" and not curved
    np.testing.assert_array_equal(points, [[1, 2], [4, 6], [9, 6], [9, 0], [7, 8], [9, 10], [1, 2], [0.5, 0.5]])
    assert P.path_points(P.path_commands("M0,0 q 1,1 2,0"))[2]


def test_transforms_compose_right_to_left():
    m = P.parse_transform("translate(10,-20) scale(2) matrix(1,0,0,0.5,3,4)")
    np.testing.assert_allclose(P.apply(m, np.array([[1.0, 2.0]])), [[10 + 2 * 4, -20 + 2 * 5]])
    np.testing.assert_allclose(P.apply(P.parse_transform("rotate(90, 1, 1)"), np.array([[2.0, 1.0]])), [[1, 2]],
                               atol=1e-12)


def test_read_marks_composes_parent_transforms_and_clips(tmp_path):
    path = tmp_path / "f.svg"
    path.write_text(
        '<svg xmlns="http://www.w3.org/2000/svg" viewBox="0 0 100 100">'
        '<defs><clipPath id="c"><rect x="0" y="0" width="10" height="10"/></clipPath></defs>'
        '<g transform="translate(5,0)" style="stroke:#ABCDEF"><g transform="scale(2)">'
        '<polyline points="1,1 2,3" clip-path="url(#c)" transform="translate(0,1)" style="fill:none"/>'
        '<path d="M 0,0 L 1,1" style="display:none"/></g></g>'
        '<g clip-path="url(#c)"><line x1="0" y1="0" x2="3" y2="4" stroke="black"/></g></svg>')
    mark, line = P.read_marks(path)
    assert mark.stroke == "#abcdef" and mark.fill is None
    np.testing.assert_allclose(mark.points, [[7, 4], [9, 8]])
    assert mark.clip == (5.0, 2.0, 25.0, 22.0)
    assert (line.stroke, line.fill, line.letters, line.clip) == ("#000000", "#000000", "ml", (0.0, 0.0, 10.0, 10.0))


def test_fit_axis_refuses_labels_that_do_not_fit():
    at = np.array([0.0, 1.0, 2.0])
    assert P.fit_axis(at, np.array([0.0, 5.0, 10.0]), "linear").residual < 1e-12
    with pytest.raises(ValueError, match="do not fit"):
        P.fit_axis(at, np.array([0.0, 5.0, 11.0]), "linear")


def test_csv_round_trips_exactly(tmp_path):
    curves = P.load("C")
    P.write_csv(curves, tmp_path / "C.csv")
    again = P._read_csv((tmp_path / "C.csv").read_text(), "C")
    np.testing.assert_array_equal(again["l2"].x, curves["l2"].x)
    np.testing.assert_array_equal(again["l2"].y, curves["l2"].y)
    with pytest.raises(ValueError, match="figure must be"):
        P.load("D")
