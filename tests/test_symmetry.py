"""The symmetry group, alignment modulo it, the normal form, and the jit-able alignment."""

import itertools

import jax.numpy as jnp
import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from l2rebound import reference
from l2rebound import symmetry as S
from l2rebound.nets import forward, num_params, unflatten

pytestmark = pytest.mark.usefixtures("x64")  # these tests call the engine's internals

SEEDS = st.integers(0, 2**32 - 1)


@st.composite
def architectures(draw, max_hidden=3, max_width=6, min_hidden=1):
    n_hidden = draw(st.integers(min_hidden, max_hidden))
    hidden = tuple(draw(st.integers(1, max_width)) for _ in range(n_hidden))
    return (draw(st.integers(1, 3)), *hidden, draw(st.integers(1, 3)))


def generic_teacher(rng, dims, margin=0.05):
    """Weights ±(margin + |N(0, 1)|); per layer, |b| = margin·(1, 2, ..., d) + U(0, margin/2), shuffled,
    random signs: every hidden unit is distinguishable by its bias, and any g ≠ 1 moves θ by > margin."""
    theta = rng.choice([-1.0, 1.0], size=num_params(dims)) * (margin + np.abs(rng.normal(size=num_params(dims))))
    for _, b in unflatten(np.arange(num_params(dims)), dims):
        size = margin * np.arange(1, b.size + 1) + rng.uniform(0, margin / 2, size=b.size)
        theta[b] = rng.permutation(size) * rng.choice([-1.0, 1.0], size=b.size)
    return theta


def brute_force(theta_s, theta_t, dims):
    """min over the whole group (one hidden layer)."""
    (d,) = dims[1:-1]
    best = np.inf
    for perm in itertools.permutations(range(d)):
        for signs in itertools.product((-1.0, 1.0), repeat=d):
            g = S.Symmetry((np.array(perm),), (np.array(signs),))
            best = min(best, float(np.linalg.norm(S.apply(g, theta_s, dims) - theta_t)))
    return best


# ------------------------------------------------------------------------------------------------ group


@settings(max_examples=25, deadline=None)
@given(architectures(), SEEDS)
def test_group_laws(dims, seed):
    rng = np.random.default_rng(seed)
    theta = rng.normal(size=num_params(dims))
    g, h = S.random_symmetry(rng, dims), S.random_symmetry(rng, dims)
    np.testing.assert_array_equal(S.apply(S.identity(dims), theta, dims), theta)
    np.testing.assert_array_equal(S.apply(S.compose(h, g), theta, dims), S.apply(h, S.apply(g, theta, dims), dims))
    np.testing.assert_array_equal(S.apply(S.inverse(g), S.apply(g, theta, dims), dims), theta)
    assert S.is_identity(S.compose(S.inverse(g), g))


def test_apply_convention_new_unit_i_is_old_unit_perm_i_times_sign():
    dims = (2, 3, 2)
    theta = np.arange(1.0, num_params(dims) + 1)
    g = S.Symmetry((np.array([2, 0, 1]),), (np.array([1.0, -1.0, 1.0]),))
    (w1, b1), (w2, b2) = unflatten(theta, dims)
    (v1, c1), (v2, c2) = unflatten(S.apply(g, theta, dims), dims)
    np.testing.assert_array_equal(v1[1], -w1[0])
    np.testing.assert_array_equal(c1, [b1[2], -b1[0], b1[1]])
    np.testing.assert_array_equal(v2[:, 1], -w2[:, 0])
    np.testing.assert_array_equal(c2, b2)  # the output bias is never touched


def test_wrong_length_is_refused():
    with pytest.raises(ValueError, match="shape"):
        S.apply(S.identity((2, 3, 1)), np.zeros(5), (2, 3, 1))


# ------------------------------------------------------------------------------------------------ align


@settings(max_examples=25, deadline=None)
@given(architectures(), SEEDS)
def test_symmetric_copy_is_recognised(dims, seed):
    rng = np.random.default_rng(seed)
    teacher = generic_teacher(rng, dims)
    g = S.random_symmetry(rng, dims)
    student = S.apply(g, teacher, dims)

    x = rng.uniform(-1, 1, size=(16, dims[0]))
    np.testing.assert_allclose(reference.forward(student, dims, x), reference.forward(teacher, dims, x),
                               rtol=0, atol=1e-12)
    assert S.l2_aligned(student, teacher, dims) <= 1e-12
    assert S.normal_form_distance(student, teacher, dims) <= 1e-12
    np.testing.assert_allclose(S.normal_form(student, dims), S.normal_form(teacher, dims), rtol=0, atol=1e-12)
    assert S.is_equivalent(student, teacher, dims)
    raw = float(np.linalg.norm(student - teacher))
    assert raw == 0 if S.is_identity(g) else raw > 1e-3


@settings(max_examples=25, deadline=None)
@given(architectures(), SEEDS, st.sampled_from([0.01, 0.3, 3.0]))
def test_aligned_never_exceeds_raw_and_g_achieves_it(dims, seed, scale):
    rng = np.random.default_rng(seed)
    teacher = rng.normal(size=num_params(dims))
    student = S.apply(S.random_symmetry(rng, dims), teacher + scale * rng.normal(size=teacher.shape), dims)
    g, dist = S.align(student, teacher, dims)
    assert dist <= float(np.linalg.norm(student - teacher))
    assert dist == float(np.linalg.norm(S.apply(g, student, dims) - teacher))
    assert S.l2_aligned(student, teacher, dims) == dist
    if len(dims) == 3:  # exact: at most the normal forms' distance, which is some g's distance
        assert dist <= S.normal_form_distance(student, teacher, dims) + 1e-12


@settings(max_examples=25, deadline=None)
@given(architectures(max_hidden=1, max_width=4), SEEDS, st.booleans())
def test_one_hidden_layer_is_exact(dims, seed, near):
    rng = np.random.default_rng(seed)
    teacher = rng.normal(size=num_params(dims))
    student = rng.normal(size=teacher.shape)
    if near:
        student = S.apply(S.random_symmetry(rng, dims), teacher + 0.2 * student, dims)
    assert S.l2_aligned(student, teacher, dims) == pytest.approx(brute_force(student, teacher, dims), abs=1e-12)


@settings(max_examples=10, deadline=None)
@given(architectures(min_hidden=2, max_hidden=3, max_width=5), SEEDS)
def test_deep_alignment_is_a_fixed_point_of_every_layer_assignment(dims, seed):
    """Block coordinate descent has stopped: no single layer's exact re-assignment lowers the distance."""
    rng = np.random.default_rng(seed)
    teacher, student = rng.normal(size=(2, num_params(dims)))
    g, dist = S.align(student, teacher, dims)
    t_layers = S._layers(teacher, dims)
    for h in range(len(dims) - 2):
        cur = S._layers(S.apply(g, student, dims), dims)
        perm, signs = S._assign(S._features(cur, h), S._features(t_layers, h))
        g_h = S._with_layer(g, h, perm, signs)
        assert float(np.linalg.norm(S.apply(g_h, student, dims) - teacher)) >= dist - 1e-12


# ------------------------------------------------------------------------------------------------ normal form


@settings(max_examples=25, deadline=None)
@given(architectures(), SEEDS)
def test_normal_form_shape_and_function(dims, seed):
    rng = np.random.default_rng(seed)
    theta = rng.normal(size=num_params(dims))
    nf = S.normal_form(theta, dims)
    for _w, b in unflatten(nf, dims)[:-1]:
        assert np.all(b >= 0)
        assert np.all(np.diff(b) <= 0)  # |b| descending
    np.testing.assert_array_equal(S.normal_form(nf, dims), nf)
    x = rng.uniform(-1, 1, size=(8, dims[0]))
    np.testing.assert_allclose(reference.forward(nf, dims, x), reference.forward(theta, dims, x),
                               rtol=0, atol=1e-12)


@settings(max_examples=25, deadline=None)
@given(architectures(), SEEDS)
def test_normal_form_tie_rule_is_canonical_for_zero_biases(dims, seed):
    """The seed's teachers have zero biases: the tie rule (first non-zero outgoing weight positive, sort
    by the outgoing column) still makes the normal form canonical when outgoing columns are generic."""
    rng = np.random.default_rng(seed)
    theta = rng.normal(size=num_params(dims))
    for _, b in unflatten(np.arange(theta.size), dims):
        theta[b] = 0.0
    copy = S.apply(S.random_symmetry(rng, dims), theta, dims)
    np.testing.assert_array_equal(S.normal_form(copy, dims), S.normal_form(theta, dims))


def test_the_engine_forward_agrees_on_a_symmetric_copy():
    rng = np.random.default_rng(3)
    dims = (2, 25, 25, 1)
    teacher = generic_teacher(rng, dims, margin=0.01)
    student = S.apply(S.random_symmetry(rng, dims), teacher, dims)
    x = jnp.asarray(rng.uniform(-1, 1, size=(64, 2)))
    np.testing.assert_allclose(forward(jnp.asarray(student), dims, x), forward(jnp.asarray(teacher), dims, x),
                               rtol=0, atol=1e-12)
    assert S.l2_aligned(student, teacher, dims) <= 1e-12
    assert S.normal_form_distance(student, teacher, dims) <= 1e-12


def test_is_equivalent_rejects_a_different_network():
    rng = np.random.default_rng(0)
    dims = (2, 5, 4, 1)
    a = generic_teacher(rng, dims)
    assert not S.is_equivalent(a + 1e-6, a, dims)
    assert S.is_equivalent(S.apply(S.random_symmetry(rng, dims), a, dims), a, dims)
