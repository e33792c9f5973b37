"""The published figures' shipped curves (``l2rebound.published.load``): the curves show what the figures show.
``tests/test_digitise.py`` checks that they are what the digitiser re-derives from the SVGs.

The facts checked against the figures were read off renders of the SVGs (rsvg-convert) and off an overlay
of the digitised curves on them: A's ℓ₂ dips from about 0.45 to about 0.12 near epoch 30, then climbs to
about 0.91; its two losses fall from 1 to 0 on top of each other. B's ℓ₂ climbs from 0 to 1; its train
loss falls from 1 towards 0 while its test loss rises from about 0.35 to a plateau near 0.68, the two
crossing near epoch 15. C's curve climbs steadily, ten decades over five, from about 3e-19 at 10⁻⁵ to
about 2.5e-9 at 10⁰.
"""

import numpy as np
import pytest

from l2rebound import published as P

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


# ------------------------------------------------------------------------------------------- loader


def test_load_refuses_an_unknown_figure():
    with pytest.raises(ValueError, match="figure must be"):
        P.load("D")
