"""The genericity report (distances to violating C1–C3) and the margin projection onto ℱ with room."""

import itertools

import jax
import jax.numpy as jnp
import numpy as np
import pytest
import scipy.optimize
from hypothesis import given, settings
from hypothesis import strategies as st

from l2rebound.genericity import (
    RATIO_BOUND,
    _fractions,
    _isotonic,
    _project_bias_margin,
    format_report,
    genericity_report,
    is_generic,
    project_margin,
    report_generic,
)
from l2rebound.nets import init_glorot, layer_slices, num_params

pytestmark = pytest.mark.usefixtures("x64")  # these tests call the engine's internals

DIMS = (2, 25, 25, 1)
SEEDS = st.integers(0, 2**32 - 1)


def _generic(seed=1, dims=DIMS):
    return np.array(init_glorot(jax.random.key(seed), dims, "uniform", jnp.float64))


def _layer(theta, dims, l):
    """Views of layer l (1-based): W (d_l, d_{l-1}), b (d_l,)."""
    ws, bs = layer_slices(dims)[l - 1]
    return theta[ws].reshape(dims[l], dims[l - 1]), theta[bs]


def _flags(report):
    return [(e["C1"], e["C2"], e["C3"]) for e in report]


# ------------------------------------------------------------------------------------------------ report


def test_a_generic_network_passes():
    theta = _generic()
    report = genericity_report(theta, DIMS)
    assert len(report) == 3 and report_generic(report)
    assert all(e["generic"] for e in report)
    assert [e["shape"] for e in report] == [(25, 2), (25, 25), (1, 25)]
    assert report[2]["min_bias_gap"] is None and report[2]["closest_ratio"] is None
    w1, b1 = _layer(theta, DIMS, 1)
    assert report[0]["min_abs_weight"] == np.abs(w1).min()
    assert report[0]["min_abs_bias"] == np.abs(b1).min()
    assert report[0]["min_bias_gap"] == np.diff(np.sort(np.abs(b1))).min()
    assert report_generic(genericity_report(theta, DIMS, ratio_bound=RATIO_BOUND)) == bool(is_generic(theta, DIMS))


def test_planted_zero_weight_fails_c1_in_its_layer_only():
    theta = _generic()
    w2, _ = _layer(theta, DIMS, 2)
    w2[3, 7] = 0.0  # a view: writes into theta
    report = genericity_report(theta, DIMS)
    assert _flags(report) == [(True, True, True), (False, True, True), (True, True, True)]
    assert report[1]["min_abs_weight"] == 0.0 and report[1]["min_abs_weight_index"] == (3, 7)
    assert not report_generic(report) and not report[1]["generic"]


def test_planted_zero_bias_fails_c1():
    theta = _generic()
    _, b1 = _layer(theta, DIMS, 1)
    b1[5] = 0.0
    report = genericity_report(theta, DIMS)
    assert _flags(report) == [(False, True, True), (True, True, True), (True, True, True)]
    assert report[0]["min_abs_bias"] == 0.0 and report[0]["min_abs_bias_index"] == 5


def test_equal_absolute_biases_fail_c2():
    theta = _generic()
    _, b1 = _layer(theta, DIMS, 1)
    b1[9] = -b1[2]
    report = genericity_report(theta, DIMS)
    assert _flags(report) == [(True, False, True), (True, True, True), (True, True, True)]
    assert report[0]["min_bias_gap"] == 0.0 and set(report[0]["min_bias_gap_pair"]) == {2, 9}
    b1[9] = -b1[2] * (1 + 16 * np.finfo(float).eps)  # a few ulps more than the tolerance: passes
    assert genericity_report(theta, DIMS)[0]["C2"]


def test_a_three_quarter_ratio_fails_c3():
    theta = _generic()
    w2, _ = _layer(theta, DIMS, 2)
    w2[11, 4] = -0.75 * w2[6, 4]
    report = genericity_report(theta, DIMS)
    assert _flags(report) == [(True, True, True), (True, True, False), (True, True, True)]
    r = report[1]["closest_ratio"]
    assert r["rows"] == (6, 11) and r["column"] == 4 and r["rel_distance"] <= 1e-15
    assert (r["p"], r["q"]) == (-4, 3)  # w[6,4] / w[11,4] = -4/3
    assert r["ratio"] == pytest.approx(-4 / 3)
    assert genericity_report(theta, DIMS, ratio_bound=4)[1]["C3"] is False
    assert genericity_report(theta, DIMS, ratio_bound=3)[1]["C3"] is True  # 4/3 is not in the set
    assert not bool(is_generic(theta, DIMS))


def test_float32_uses_float32_tolerance():
    theta = _generic().astype(np.float32)
    _, b1 = _layer(theta, DIMS, 1)
    b1[9] = -b1[2] * (1 + 2 * np.finfo(np.float32).eps)
    assert not genericity_report(theta, DIMS)[0]["C2"]


def test_fractions_are_the_reduced_ones():
    values, p, q = _fractions(10)
    assert np.all(np.diff(values) > 0) and values[0] == 1 and values[-1] == 10
    np.testing.assert_array_equal(values, p / q)
    assert np.all(np.gcd(p, q) == 1) and np.all(q <= p)
    assert len(values) == sum(1 for a in range(1, 11) for b in range(1, a + 1) if np.gcd(a, b) == 1)


@settings(max_examples=25, deadline=None)
@given(st.integers(1, 6), st.integers(1, 3), st.integers(1, 12), SEEDS)
def test_closest_ratio_matches_a_brute_force_search(d_out, d_in, bound, seed):
    rng = np.random.default_rng(seed)
    dims = (d_in, d_out, 1)
    theta = rng.normal(size=num_params(dims))
    w, _ = _layer(theta, dims, 1)
    if d_out > 1 and rng.random() < 0.3:
        w[1, 0] = w[0, 0] * rng.integers(1, bound + 1) / rng.integers(1, bound + 1)
    best = np.inf
    for j, jj in itertools.combinations(range(d_out), 2):
        for k in range(d_in):
            r = max(abs(w[j, k]), abs(w[jj, k])) / min(abs(w[j, k]), abs(w[jj, k]))
            for p in range(1, bound + 1):
                for q in range(1, p + 1):
                    best = min(best, abs(r - p / q) / (p / q))
    got = genericity_report(theta, dims, ratio_bound=bound)[0]["closest_ratio"]
    if d_out == 1:
        assert got is None
    else:
        assert got["rel_distance"] == pytest.approx(best, rel=1e-12, abs=1e-15)
        (j, jj), k = got["rows"], got["column"]
        ratio, frac = w[j, k] / w[jj, k], got["p"] / got["q"]
        assert got["ratio"] == ratio and np.sign(frac) == np.sign(ratio)
        r_hi, f_hi = max(abs(ratio), 1 / abs(ratio)), max(abs(frac), 1 / abs(frac))
        assert abs(r_hi - f_hi) / f_hi == pytest.approx(got["rel_distance"], rel=1e-9, abs=1e-15)
        assert abs(got["p"]) <= bound and got["q"] <= bound


def test_format_report_prints_one_block_per_layer():
    theta = _generic()
    w2, _b2 = _layer(theta, DIMS, 2)
    w2[0, 0] = 0.0
    text = format_report(genericity_report(theta, DIMS))
    assert text.count("layer ") == 3
    assert "C1 VIOLATED" in text and text.strip().endswith("generic: NO")
    assert "(single bias)" in text and "(single row)" in text
    assert format_report(genericity_report(_generic(), DIMS)).strip().endswith("generic: yes")


# ------------------------------------------------------------------------------------------------ margin

SMALL_DIMS = (2, 5, 4, 1)  # one compiled shape for all margin tests


def _theta_with_coincidences(rng, dims):
    """Random θ with zeros, equal |b| and tiny entries planted."""
    theta = rng.normal(size=num_params(dims)) * rng.choice([1e-3, 0.1, 1.0], size=num_params(dims))
    pool = np.array([0.0, 0.02, -0.02, 0.3, -0.3, 0.31])
    mask = rng.random(theta.size) < 0.3
    theta[mask] = rng.choice(pool, size=mask.sum())
    return theta


def _check_constraints(out, dims, eps):
    report = genericity_report(out, dims)
    for e in report:
        assert e["C1"] and e["C2"]
        assert e["min_abs_weight"] >= eps
        assert e["min_abs_bias"] >= eps
        assert e["min_bias_gap"] is None or e["min_bias_gap"] >= eps * (1 - 1e-9)


@settings(max_examples=25, deadline=None)
@given(SEEDS, st.sampled_from([1e-6, 1e-3, 0.05, 0.2]))
def test_margin_projection_is_idempotent_and_feasible(seed, eps):
    rng = np.random.default_rng(seed)
    theta = _theta_with_coincidences(rng, SMALL_DIMS)
    out = np.asarray(project_margin(theta, SMALL_DIMS, eps))
    _check_constraints(out, SMALL_DIMS, eps)
    np.testing.assert_array_equal(np.asarray(project_margin(out, SMALL_DIMS, eps)), out)
    # signs kept (a zero goes to +), the order of |b| kept, weights clipped in magnitude only
    assert np.all(np.where(theta != 0, np.sign(out) == np.sign(theta), out > 0))
    for ws, bs in layer_slices(SMALL_DIMS):
        np.testing.assert_array_equal(np.abs(out[ws]), np.maximum(np.abs(theta[ws]), eps))
        a, c = np.abs(theta[bs]), np.abs(out[bs])
        assert np.all((a[:, None] < a[None, :]) <= (c[:, None] < c[None, :]))


@settings(max_examples=25, deadline=None)
@given(SEEDS, st.sampled_from([1e-3, 0.05]))
def test_margin_projection_leaves_feasible_networks_bit_for_bit(seed, eps):
    rng = np.random.default_rng(seed)
    feasible = np.asarray(project_margin(_theta_with_coincidences(rng, SMALL_DIMS), SMALL_DIMS, 2 * eps))
    np.testing.assert_array_equal(np.asarray(project_margin(feasible, SMALL_DIMS, eps)), feasible)
    # built feasible: |w| ≥ eps, |b| = eps·(1.5, 3, 4.5, ...) shuffled, random signs
    P = num_params(SMALL_DIMS)
    theta = rng.choice([-1.0, 1.0], size=P) * (eps + np.abs(rng.normal(size=P)))
    for _, bs in layer_slices(SMALL_DIMS):
        n = bs.stop - bs.start
        theta[bs] = rng.permutation(1.5 * eps * np.arange(1, n + 1)) * rng.choice([-1.0, 1.0], size=n)
    np.testing.assert_array_equal(np.asarray(project_margin(theta, SMALL_DIMS, eps)), theta)


def test_isotonic_matches_pool_adjacent_violators():
    rng = np.random.default_rng(0)
    for n in [1, 2, 3, 7, 25]:
        for _ in range(5):
            y = rng.normal(size=n) + rng.choice([0, 1], size=n) * np.arange(n) * 0.1
            np.testing.assert_allclose(np.asarray(jax.jit(_isotonic)(y)), _pav(y), rtol=0, atol=1e-13)


def _pav(y):
    """Reference pool-adjacent-violators (blocks as [sum, count])."""
    blocks = []
    for v in y:
        blocks.append([v, 1])
        while len(blocks) > 1 and blocks[-2][0] / blocks[-2][1] > blocks[-1][0] / blocks[-1][1]:
            s, c = blocks.pop()
            blocks[-1][0] += s
            blocks[-1][1] += c
    return np.concatenate([np.full(c, s / c) for s, c in blocks])


def _brute_force_bias_projection(b, eps):
    """min ‖x − b‖ over the whole non-convex set {|x_i| ≥ eps, sorted |x| eps apart}: one convex QP per
    sign pattern and order (x_π(0) s_π(0) ≥ eps, s_π(k+1) x_π(k+1) − s_π(k) x_π(k) ≥ eps), by SLSQP."""
    n = len(b)
    best = np.inf
    for signs in itertools.product((-1.0, 1.0), repeat=n):
        s = np.array(signs)
        for order in itertools.permutations(range(n)):
            rows = [np.eye(n)[order[0]] * s]
            rows += [np.eye(n)[order[k + 1]] * s - np.eye(n)[order[k]] * s for k in range(n - 1)]
            A = np.array(rows)
            x0 = np.zeros(n)
            x0[list(order)] = eps * np.arange(1, n + 1) * 1.5
            x0 *= s
            res = scipy.optimize.minimize(
                lambda x: np.sum((x - b) ** 2), x0, jac=lambda x: 2 * (x - b), method="SLSQP",
                constraints=[{"type": "ineq", "fun": lambda x, A=A: A @ x - eps, "jac": lambda x, A=A: A}],
                options={"ftol": 1e-14, "maxiter": 200},
            )
            if np.all(A @ res.x - eps >= -1e-9):
                best = min(best, float(np.linalg.norm(res.x - b)))
    return best


_bias_projection = jax.jit(_project_bias_margin)


@settings(max_examples=25, deadline=None)
@given(st.lists(st.sampled_from([0.0, 0.01, -0.01, 0.05, -0.2]) | st.floats(-0.5, 0.5), min_size=1, max_size=3),
       st.sampled_from([0.05, 0.2]))
def test_bias_margin_is_the_euclidean_projection(b, eps):
    b = np.array(b)
    out = np.asarray(_bias_projection(b, eps))
    got = float(np.linalg.norm(out - b))
    a = np.sort(np.abs(out))
    assert a[0] >= eps and np.all(np.diff(a) >= eps * (1 - 1e-12))  # feasible, so got ≥ the true minimum
    assert got <= _brute_force_bias_projection(b, eps) + 1e-7
    rng = np.random.default_rng(0)  # no feasible point found at random is closer
    for _ in range(200):
        x = out + rng.normal(size=b.shape) * rng.choice([1e-3, 0.05, 0.3])
        a = np.sort(np.abs(x))
        if a[0] >= eps and np.all(np.diff(a) >= eps):
            assert np.linalg.norm(x - b) >= got - 1e-12


def test_project_margin_is_jittable_with_a_traced_eps():
    theta = _theta_with_coincidences(np.random.default_rng(5), SMALL_DIMS)
    f = jax.jit(lambda t, e: project_margin(t, SMALL_DIMS, e))
    for eps in (0.01, 0.1):
        np.testing.assert_array_equal(f(theta, eps), project_margin(theta, SMALL_DIMS, eps))
    out = np.asarray(project_margin(jnp.asarray(theta, jnp.float32), SMALL_DIMS, 0.05))
    assert out.dtype == np.float32
    _check_constraints(out, SMALL_DIMS, np.float32(0.05) * (1 - 1e-6))
