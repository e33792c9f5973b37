"""The jitter projection onto ℱ: it fixes every violated condition and touches nothing else. The check of wide
layers, by sorted keys, decides as comparing every pair of rows, in XLA and in NumPy."""

from functools import partial

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from conftest import brute_force_violations

from l2rebound import genericity
from l2rebound.genericity import is_generic, jitter_round, project_jitter, violations
from l2rebound.nets import init_glorot, layer_slices, num_params

pytestmark = pytest.mark.usefixtures("x64")  # these tests call the engine's internals

DIMS = (2, 25, 25, 1)
KEY = jax.random.key(0)


def _generic(dtype=jnp.float64):
    return init_glorot(jax.random.key(1), DIMS, "uniform", dtype)


@pytest.mark.parametrize("dtype", [jnp.float64, jnp.float32])
def test_generic_network_is_left_bit_for_bit(dtype):
    theta = _generic(dtype)
    assert bool(is_generic(theta, DIMS))
    assert not np.any(violations(theta, DIMS))
    out = project_jitter(theta, DIMS, KEY)
    assert out.dtype == dtype
    np.testing.assert_array_equal(out, theta)


def test_zero_biases_become_small_distinct_nonzero_and_weights_stay():
    theta = init_glorot(jax.random.key(2), DIMS, "zero", jnp.float64)
    assert not bool(is_generic(theta, DIMS))
    out = np.asarray(project_jitter(theta, DIMS, KEY))
    assert bool(is_generic(out, DIMS))
    for w, b in layer_slices(DIMS):
        np.testing.assert_array_equal(out[w], np.asarray(theta)[w])  # weights untouched
        assert np.all((np.abs(out[b]) >= 1e-6) & (np.abs(out[b]) <= 2e-6))
        assert len(np.unique(np.abs(out[b]))) == b.stop - b.start
    assert np.any(out[50:75] > 0) and np.any(out[50:75] < 0)  # both signs


def _only_changed(before, after):
    return np.flatnonzero(np.asarray(before) != np.asarray(after))


def test_equal_absolute_biases_move_the_later_one_by_a_few_ulps():
    theta = _generic()
    b2 = layer_slices(DIMS)[1][1]
    i, j = b2.start + 1, b2.start + 3
    theta = theta.at[j].set(-theta[i])
    assert np.flatnonzero(violations(theta, DIMS)).tolist() == [j]
    out = jitter_round(theta, DIMS, KEY)
    assert _only_changed(theta, out).tolist() == [j]
    assert 0 < abs(float(out[j] - theta[j])) <= 32 * np.spacing(abs(float(theta[j])))
    assert bool(is_generic(out, DIMS))


@pytest.mark.parametrize("p, q, flagged", [(3, 4, True), (1, 1, True), (10, 7, True), (11, 13, False)])
def test_small_rational_weight_ratio_is_flagged_only_within_the_bound(p, q, flagged):
    theta = _generic()
    w2 = layer_slices(DIMS)[1][0]
    W = theta[w2].reshape(25, 25)
    k = 4
    W = W.at[7, k].set(-W[2, k] * p / q)
    theta = theta.at[w2].set(W.reshape(-1))
    target = w2.start + 7 * 25 + k
    assert np.flatnonzero(violations(theta, DIMS)).tolist() == ([target] if flagged else [])
    out = project_jitter(theta, DIMS, KEY)
    assert _only_changed(theta, out).tolist() == ([target] if flagged else [])
    assert bool(is_generic(out, DIMS))


def test_zero_weight_is_replaced_and_the_rest_kept():
    theta = _generic().at[10].set(0.0)
    out = jitter_round(theta, DIMS, KEY)
    assert _only_changed(theta, out).tolist() == [10]
    assert 1e-6 <= abs(float(out[10])) <= 2e-6


# --- the sorted C3 check (layers of more than PAIRS_UP_TO rows) against every pair ------------------------------


def _subnormals_read_as_zero(dtype) -> bool:
    """True when XLA here reads a subnormal operand as zero (CPUs flush them), as the checks then do."""
    return not bool(jax.jit(lambda x: x > 0)(jnp.asarray(np.finfo(dtype).smallest_subnormal, dtype)))


def _ratio_later_numpy(w):
    """C3's mask (d_out, d_in) by every pair of rows in NumPy, in the arithmetic XLA gives ``violations``: w's own
    dtype, the reciprocal 1/|w_i| times |w_j| (XLA's form of the division), subnormals read as XLA reads them."""
    dtype = w.dtype.type
    a = np.abs(w)
    if _subnormals_read_as_zero(dtype):
        a = np.where(a >= np.finfo(dtype).tiny, a, dtype(0))  # NaN too: never compared either way
    rtol = dtype(genericity._tolerance(dtype))
    with np.errstate(all="ignore"):
        inverse = dtype(1) / np.where(a > 0, a, dtype(1))
        t = (a[None, :, :] * inverse[:, None, :])[..., None] * np.arange(1, genericity.RATIO_BOUND + 1, dtype=dtype)
        p = np.round(t)
        hit = np.any((p >= 1) & (p <= genericity.RATIO_BOUND) & (np.abs(t - p) <= rtol * t), axis=-1)  # [i, j, k]
    valid = (a[:, None, :] > 0) & (a[None, :, :] > 0) & np.tri(len(a), k=-1, dtype=bool).T[:, :, None]
    return np.any(hit & valid, axis=0)


def _off_by_ulps(rng, x, most):
    """x with each entry moved by up to ``most`` floats of its dtype, either way."""
    steps = rng.integers(-most, most + 1, x.shape)
    for s in range(most):
        x = np.where(np.abs(steps) > s, np.nextafter(x, np.where(steps > 0, np.inf, -np.inf)).astype(x.dtype), x)
    return x


def _planted(rng, d_out, d_in, dtype, edge):
    """w (d_out, d_in) of dtype full of C3's coincidences: ratios ±p/q planted between rows, a column of equal |w|
    (more keys in one window than the sorted check compares), columns of 33 and 34 equal |w| (either side of that
    cap), zeros, infinities and a NaN. With edge, also ratios a few ulps off p/q and a few ulps off the
    tolerance's edge, subnormal |w| and huge ones (above the sorted keys' range)."""
    dtype = np.dtype(dtype).type
    w = (rng.normal(size=(d_out, d_in)) / np.sqrt(d_in)).astype(dtype)
    ratio = rng.choice([-1, 1], w.shape) * rng.integers(1, 11, w.shape) / rng.integers(1, 11, w.shape)
    plant = rng.random(w.shape) < 0.3
    w = np.where(plant, w[rng.integers(0, d_out, w.shape), np.arange(d_in)] * ratio.astype(dtype), w)
    for k, count in zip(rng.permutation(d_in), (d_out, min(d_out, 33), min(d_out, 34))):
        w[rng.choice(d_out, count, replace=False), k] = rng.choice([-1, 1], count).astype(dtype) * dtype(rng.normal())
    if edge:
        eps, rtol = np.finfo(dtype).eps, dtype(genericity._tolerance(dtype))
        near = plant & (rng.random(w.shape) < 0.2)
        w[near] *= 1 + rng.integers(-6, 7, near.sum()).astype(dtype) * eps
        at_edge = plant & ~near & (rng.random(w.shape) < 0.2)
        w[at_edge] = _off_by_ulps(rng, w[at_edge] * (1 + rng.choice([-1, 1], at_edge.sum()).astype(dtype) * rtol), 2)
        k = rng.integers(d_in, size=2)
        tiny, huge = np.finfo(dtype).tiny, dtype(0.5 / np.finfo(dtype).tiny)  # 1/huge is normal
        w[:4, k[0]] = np.asarray([0.25, 0.5, 0.75, -0.5], dtype) * tiny
        w[-3:, k[1]] = np.asarray([1, -0.75, 1 + 64 * eps], dtype) * huge
    w[rng.random(w.shape) < 0.05] = 0
    w.reshape(-1)[rng.choice(w.size, 3, replace=False)] = np.asarray([np.inf, -np.inf, np.nan], dtype)
    return w


_ratio_later = jax.jit(genericity._ratio_later, static_argnames="rtol")
_rational_ratio_later = jax.jit(genericity._rational_ratio_later, static_argnames="rtol")


@pytest.mark.parametrize("dtype, x64", [(np.float64, True), (np.float32, True), (np.float32, False)],
                         ids=["float64", "float32", "float32-no-x64"])
def test_the_sorted_ratio_check_decides_as_every_pair(dtype, x64):
    # planted coincidences, at and a few ulps off the tolerance's edge, overflowing windows and values outside the
    # sorted keys' range: the same marks as the pairwise XLA check and as NumPy in the same arithmetic
    rng = np.random.default_rng(np.dtype(dtype).itemsize + x64)
    rtol = genericity._tolerance(dtype)
    flagged = 0
    with jax.enable_x64(x64):
        for trial in range(8):
            d_out, d_in = ((130, 30), (300, 3))[trial % 2]
            w = _planted(rng, d_out, d_in, dtype, edge=trial % 4 >= 2)
            got = np.asarray(_ratio_later(jnp.asarray(w), rtol))
            np.testing.assert_array_equal(got, _rational_ratio_later(jnp.asarray(w), rtol), err_msg=f"trial {trial}")
            np.testing.assert_array_equal(got, _ratio_later_numpy(w), err_msg=f"trial {trial}")
            flagged += got.sum()
    assert flagged >= 1000


def test_the_sorted_ratio_check_leaves_full_windows_and_huge_values_to_every_pair():
    # 33 equal |w|: 32 keys on from the first, all compared; 34, or a |w| above the keys' range: every pair
    rng = np.random.default_rng(3)
    cols = np.abs(rng.normal(size=(4, 130)))
    cols[0, :33] = cols[1, :34] = 0.5
    cols[2, 7] = 0.5 / np.finfo(np.float64).tiny
    sorted_check = jax.jit(genericity._ratio_later_sorted, static_argnames="rtol")
    hits, redo = sorted_check(jnp.asarray(cols), genericity._tolerance(np.float64))
    assert np.asarray(redo).tolist() == [False, True, True, False]
    assert np.flatnonzero(hits[0]).tolist() == list(range(1, 33))


@pytest.mark.parametrize("dims, dtype", [pytest.param((2, 130, 90, 1), np.float64, marks=pytest.mark.slow),
                                         ((3, 300, 2), np.float32)], ids=["2,130,90,1-float64", "3,300,2-float32"])
def test_the_check_of_wide_layers_decides_as_every_pair_in_numpy(dims, dtype):
    # the whole check against the NumPy brute force (a division, not XLA's reciprocal: exact coincidences only),
    # one network at a time and batched as training batches its runs
    rng = np.random.default_rng(sum(dims))
    thetas = rng.normal(size=(4, num_params(dims))).astype(dtype)
    for theta in thetas[1::2]:
        for (ws, bs), d_in, d_out in zip(layer_slices(dims), dims[:-1], dims[1:]):
            theta[ws] = _planted(rng, d_out, d_in, dtype, edge=False).reshape(-1)
            theta[bs][rng.random(d_out) < 0.2] = theta[bs][0] * rng.choice([-1, 1])
    expected = np.stack([brute_force_violations(theta, dims) for theta in thetas])
    for trial, theta in enumerate(thetas):
        np.testing.assert_array_equal(violations(jnp.asarray(theta), dims), expected[trial], err_msg=f"trial {trial}")
    np.testing.assert_array_equal(jax.vmap(partial(violations, dims=dims))(jnp.asarray(thetas)), expected)
    assert expected[1::2].sum() >= 100
