"""Network layout, initialisation, padding and the DRR layer factors."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from l2rebound import reference
from l2rebound.nets import flatten, forward, init_glorot, layer_factors, num_params, pad, unflatten

pytestmark = pytest.mark.usefixtures("x64")  # these tests call the engine's internals


def test_default_size_and_layout():
    dims = (2, 25, 25, 1)
    assert num_params(dims) == 751
    theta = jnp.arange(751.0)
    layers = unflatten(theta, dims)
    assert [w.shape for w, _ in layers] == [(25, 2), (25, 25), (1, 25)]
    assert float(layers[0][0][0, 1]) == 1.0  # W1 row-major first
    assert float(layers[0][1][0]) == 50.0  # then b1
    np.testing.assert_array_equal(flatten(layers), theta)


@pytest.mark.parametrize("dims", [(2, 25, 25, 1), (3, 4, 2), (1, 5, 6, 7, 2)])
def test_forward_matches_reference(dims):
    theta = init_glorot(jax.random.key(0), dims, "uniform", jnp.float64)
    x = jax.random.uniform(jax.random.key(1), (17, dims[0]), jnp.float64, -1, 1)
    np.testing.assert_allclose(forward(theta, dims, x), reference.forward(np.asarray(theta), dims, np.asarray(x)),
                               rtol=1e-13, atol=1e-15)


def test_glorot_bounds_and_bias_options():
    dims = (2, 25, 25, 1)
    zero = init_glorot(jax.random.key(3), dims, "zero", jnp.float64)
    uniform = init_glorot(jax.random.key(3), dims, "uniform", jnp.float32)
    assert uniform.dtype == jnp.float32 and zero.dtype == jnp.float64
    for (w, b), (_, bu), d_in, d_out in zip(unflatten(zero, dims), unflatten(uniform, dims), dims[:-1], dims[1:]):
        limit = np.sqrt(6 / (d_in + d_out))
        assert float(jnp.max(jnp.abs(w))) <= limit and float(jnp.max(jnp.abs(w))) > 0.8 * limit
        assert not np.any(b)
        assert float(jnp.max(jnp.abs(bu))) <= 1 and (d_out == 1 or float(jnp.std(bu)) > 0.3)


def test_padding_keeps_the_function_and_adds_exact_zeros():
    small, wide = (2, 3, 4, 1), (2, 5, 6, 1)
    theta = init_glorot(jax.random.key(4), small, "uniform", jnp.float64)
    padded = pad(theta, small, wide)
    assert padded.shape == (num_params(wide),)
    x = jax.random.uniform(jax.random.key(5), (50, 2), jnp.float64, -1, 1)
    np.testing.assert_array_equal(forward(padded, wide, x), forward(theta, small, x))
    assert int(jnp.sum(padded != 0)) == int(jnp.sum(theta != 0))
    (w1, b1), (w2, _), _ = unflatten(padded, wide)
    assert not np.any(w1[3:]) and not np.any(b1[3:]) and not np.any(w2[:, 3:]) and not np.any(w2[4:])


def test_drr_layer_factors_of_the_default_network():
    factors = layer_factors((2, 25, 25, 1))
    assert factors.shape == (751,)
    np.testing.assert_allclose(np.unique(np.round(factors, 3)), [0.385, 3.338, 9.628])
    assert np.round(factors[0], 3) == 3.338 and np.round(factors[100], 3) == 0.385 and np.round(factors[-1], 3) == 9.628
    np.testing.assert_array_equal(factors, reference.layer_factors((2, 25, 25, 1)))
