"""Network diagrams: which hidden units are alive, one line per non-zero weight with its sign's colour and a
width that follows |w| on a scale shared by the panels, dead units grey, bad input refused, and no JAX."""

import io
import subprocess
import sys

import numpy as np
import pytest

from l2rebound import diagrams as D
from l2rebound.layout import draw_glorot, num_params


def glorot(seed, dims):
    return draw_glorot(np.random.default_rng(seed), dims, bias_floor=1e-3)


def flat(layers):
    """``[(W1, b1), ...]`` -> θ, the inverse of ``weights_and_biases``."""
    return np.concatenate([np.concatenate([w.ravel(), b]) for w, b in layers])


def pad(theta, dims, wide_dims):
    """``theta`` embedded in ``wide_dims`` with all-zero extra units (weights and biases)."""
    layers = []
    for (w, b), d_in, d_out in zip(D.weights_and_biases(theta, dims), wide_dims[:-1], wide_dims[1:]):
        wide_w, wide_b = np.zeros((d_out, d_in)), np.zeros(d_out)
        wide_w[: w.shape[0], : w.shape[1]], wide_b[: b.size] = w, b
        layers.append((wide_w, wide_b))
    return flat(layers)


def sparse(seed, dims, zeros=0.4):
    """A Glorot θ with a fraction ``zeros`` of its entries set to exactly 0."""
    theta = glorot(seed, dims)
    theta[np.random.default_rng(seed + 1).random(theta.size) < zeros] = 0.0
    return theta


def collection(ax, label):
    (found,) = [c for c in ax.collections if c.get_label() == label]
    return found


def test_a_hidden_unit_needs_an_incoming_and_an_outgoing_weight_to_be_alive():
    dims = (2, 4, 1)
    w1, b1, w2, b2 = np.zeros((4, 2)), np.full(4, 0.7), np.zeros((1, 4)), np.zeros(1)  # unit 3: a bias only
    w1[0, 1] = 0.5  # unit 0: incoming only
    w2[0, 1] = -0.3  # unit 1: outgoing only
    w1[2, 0], w2[0, 2] = 1.0, 2.0  # unit 2: both
    theta = flat([(w1, b1), (w2, b2)])
    assert [m.tolist() for m in D.alive_mask(theta, dims)] == [[False, False, True, False]]
    assert D.alive_units(theta, dims) == (1,)
    assert D.alive_units(glorot(0, (3, 2)), (3, 2)) == ()  # no hidden layer


def test_zero_padding_adds_only_dead_units():
    teacher = glorot(1, (2, 3, 2, 1))
    padded = pad(teacher, (2, 3, 2, 1), (2, 5, 4, 1))
    assert D.alive_units(padded, (2, 5, 4, 1)) == (3, 2)
    assert [m.tolist() for m in D.alive_mask(padded, (2, 5, 4, 1))] == [[True] * 3 + [False] * 2,
                                                                         [True] * 2 + [False] * 2]


def test_one_line_per_nonzero_weight_between_neighbouring_columns():
    dims = (3, 7, 6, 2)
    theta = sparse(2, dims)
    fig = D.network_figure([("sparse", theta, dims), ("dense", glorot(3, dims), dims)])
    weights = [w for w, _ in D.weights_and_biases(theta, dims)]
    segments = np.asarray(collection(fig.axes[0], "weights").get_segments())
    assert len(segments) == sum(np.count_nonzero(w) for w in weights) < sum(w.size for w in weights)
    starts = segments[:, 0, 0]
    assert np.all(segments[:, 1, 0] == starts + 1)
    assert [np.sum(starts == l) for l in range(3)] == [np.count_nonzero(w) for w in weights]
    assert len(collection(fig.axes[1], "weights").get_segments()) == sum(w.size for w in weights)


def test_line_colour_follows_the_sign_and_width_follows_abs_weight_on_a_shared_scale():
    dims = (2, 5, 1)
    theta = sparse(4, dims)
    fig = D.network_figure([("half", theta / 2, dims), ("full", theta, dims)])
    values = np.concatenate([w[w != 0] for w, _ in D.weights_and_biases(theta, dims)])
    order = np.argsort(np.abs(values), kind="stable")
    largest = np.abs(values).max()
    for ax, scale in zip(fig.axes, (0.5, 1.0)):
        lines = collection(ax, "weights")
        widths, colours = np.asarray(lines.get_linewidths()), lines.get_colors()
        assert np.all(np.diff(widths) >= 0)  # small weights first, so the large ones are drawn on top
        np.testing.assert_allclose(widths, np.maximum(D.MAX_WIDTH * scale * np.abs(values[order]) / largest,
                                                      D.MIN_WIDTH))
        expected = np.where(values[order, None] > 0, D.POSITIVE, D.NEGATIVE)
        np.testing.assert_allclose(colours[:, :3], expected[:, :3])
    assert max(collection(fig.axes[0], "weights").get_linewidths()) == pytest.approx(D.MAX_WIDTH / 2)


def test_dead_units_are_grey_whatever_their_bias_and_the_others_show_it_on_a_shared_scale():
    dims, wide = (2, 3, 2, 1), (2, 5, 4, 1)
    teacher = glorot(5, dims)
    layers = D.weights_and_biases(pad(teacher, dims, wide), wide)
    layers[1][1][3] = 3.0  # the largest bias, on a padded unit of hidden layer 2: it stays dead
    student = flat(layers)
    fig = D.network_figure([("teacher", teacher, dims), ("student", student, wide)])
    faces = collection(fig.axes[1], "units").get_facecolors()
    dead = ~np.concatenate([*D.alive_mask(student, wide), [True]])
    assert dead.tolist() == [False] * 3 + [True] * 2 + [False] * 2 + [True] * 2 + [False]
    np.testing.assert_allclose(faces[dead], np.tile(D.DEAD, (dead.sum(), 1)))
    assert not np.any(np.all(faces[~dead] == D.DEAD, axis=1))
    inputs = collection(fig.axes[1], "inputs")
    assert len(inputs.get_offsets()) == 2 and np.all(inputs.get_facecolors() == D.INPUT)
    biases = np.concatenate([b for _, b in D.weights_and_biases(teacher, dims)])
    teacher_faces = collection(fig.axes[0], "units").get_facecolors()
    np.testing.assert_allclose(teacher_faces, D.CMAP(0.5 + biases / 6.0), atol=0.02)  # ±3 from the student
    np.testing.assert_allclose(faces[~dead], teacher_faces)  # the same biases, the same colours


def test_one_axes_per_panel_plus_a_bias_colour_bar_with_counts_in_the_titles():
    dims, wide = (2, 10, 5, 1), (2, 25, 25, 1)
    teacher = glorot(6, dims)
    student = pad(teacher, dims, wide) + 1e-3 * np.random.default_rng(7).normal(size=num_params(wide))
    pruned = np.where(np.abs(student) < 0.05, 0.0, student)
    fig = D.network_figure([("teacher", teacher, dims), ("student", student, wide), ("pruned", pruned, wide)],
                           title="three")
    assert len(fig.axes) == 4 and fig.axes[-1].get_ylabel() == "bias"
    assert fig.axes[0].get_title() == "teacher\nnonzero 91 / 91 · alive 10, 5"
    assert fig.axes[1].get_title() == "student\nnonzero 751 / 751 · alive 25, 25"
    assert fig.axes[2].get_title() == f"pruned\nnonzero {np.count_nonzero(pruned)} / 751 · alive 10, 5"
    assert fig.axes[0].get_ylim() == fig.axes[1].get_ylim() == fig.axes[2].get_ylim()  # one unit spacing
    assert len(fig.legends) == 1 and fig.get_suptitle() == "three"
    fig.savefig(io.BytesIO(), format="png", dpi=50)


def test_an_all_zero_network_draws_no_lines_and_every_hidden_unit_grey():
    dims = (2, 3, 1)
    fig = D.network_figure([("zero", np.zeros(num_params(dims)), dims)])
    assert len(collection(fig.axes[0], "weights").get_segments()) == 0
    assert fig.axes[0].get_title() == "zero\nnonzero 0 / 13 · alive 0"
    np.testing.assert_allclose(collection(fig.axes[0], "units").get_facecolors()[:3], np.tile(D.DEAD, (3, 1)))
    fig.savefig(io.BytesIO(), format="png", dpi=50)


@pytest.mark.parametrize("theta, dims, message", [
    (np.zeros(12), (2, 3, 1), r"shape \(12,\).*\(13,\)"),
    (np.zeros((1, 13)), (2, 3, 1), r"shape \(1, 13\)"),
    (np.full(13, np.nan), (2, 3, 1), "non-finite"),
    (np.zeros(4), (3,), "two or more"),
])
def test_a_theta_that_does_not_fit_its_dims_is_refused(theta, dims, message):
    with pytest.raises(ValueError, match=message):
        D.network_figure([("bad", theta, dims)])
    with pytest.raises(ValueError, match=message):
        D.alive_units(theta, dims)


def test_no_panels_is_refused():
    with pytest.raises(ValueError, match="at least one"):
        D.network_figure([])


def test_importing_the_module_loads_no_jax():
    code = "import sys, l2rebound.diagrams; assert 'jax' not in sys.modules, 'jax was imported'"
    subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True, timeout=60)
