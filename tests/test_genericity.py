"""The jitter projection onto ℱ: it fixes every violated condition and touches nothing else."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from l2rebound.genericity import is_generic, jitter_round, project_jitter, violations
from l2rebound.nets import init_glorot, layer_slices

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
