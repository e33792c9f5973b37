"""Tanh networks over a flat parameter vector.

A network with ``dims = (d0, d1, ..., dL)`` has hidden layers ``h = tanh(W h + b)`` and a linear output
layer. Its parameters travel as one flat vector θ of length P = Σ_l d_l (d_{l-1} + 1), laid out
``W1, b1, W2, b2, ...`` with each ``W_l`` (shape ``(d_l, d_{l-1})``) row-major. ``unflatten``
gives the per-layer view; slicing is free under ``jit``.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np

from l2rebound.layout import num_params


def layer_slices(dims: tuple[int, ...]) -> list[tuple[slice, slice]]:
    """For each layer l, the slices of θ holding ``W_l`` (flattened) and ``b_l``."""
    out, start = [], 0
    for d_in, d_out in zip(dims[:-1], dims[1:]):
        w = slice(start, start + d_out * d_in)
        b = slice(w.stop, w.stop + d_out)
        out.append((w, b))
        start = b.stop
    return out


def unflatten(theta, dims: tuple[int, ...]) -> list[tuple]:
    """θ of shape (P,) -> ``[(W1, b1), ..., (WL, bL)]`` with ``W_l`` of shape (d_l, d_{l-1})."""
    return [
        (theta[w].reshape(d_out, d_in), theta[b])
        for (w, b), d_in, d_out in zip(layer_slices(dims), dims[:-1], dims[1:])
    ]


def flatten(layers: list[tuple]) -> jax.Array:
    """Inverse of ``unflatten``."""
    return jnp.concatenate([jnp.concatenate([w.reshape(-1), b]) for w, b in layers])


def forward(theta, dims: tuple[int, ...], x):
    """Network outputs for inputs ``x`` of shape (N, d0): shape (N, dL)."""
    layers = unflatten(theta, dims)
    h = x
    for w, b in layers[:-1]:
        h = jnp.tanh(h @ w.T + b)
    w, b = layers[-1]
    return h @ w.T + b


def init_glorot(key, dims: tuple[int, ...], bias_init: str, dtype) -> jax.Array:
    """Seed initialisation: weights Glorot-uniform U(±sqrt(6/(fan_in+fan_out))); biases 0 (``"zero"``)
    or U(-1, 1) (``"uniform"``). Returns θ of shape (P,)."""
    layers = []
    for key_l, d_in, d_out in zip(jax.random.split(key, len(dims) - 1), dims[:-1], dims[1:]):
        key_w, key_b = jax.random.split(key_l)
        limit = np.sqrt(6.0 / (d_in + d_out))
        w = jax.random.uniform(key_w, (d_out, d_in), dtype, -limit, limit)
        b = jnp.zeros(d_out, dtype) if bias_init == "zero" else jax.random.uniform(key_b, (d_out,), dtype, -1.0, 1.0)
        layers.append((w, b))
    return flatten(layers)


def init_lux(key, dims: tuple[int, ...], dtype) -> jax.Array:
    """Lux's default initialisation of a dense tanh network (its ``Dense`` layers' defaults): weights
    U(±g·sqrt(3 / fan_in)), with gain g = 5/3 for a tanh layer and 1 for the linear output layer; biases
    U(±1 / sqrt(fan_in)). Returns θ of shape (P,)."""
    layers = []
    last = len(dims) - 2
    for index, (key_l, d_in, d_out) in enumerate(zip(jax.random.split(key, len(dims) - 1), dims[:-1], dims[1:])):
        key_w, key_b = jax.random.split(key_l)
        gain = 1.0 if index == last else 5.0 / 3.0
        limit, bias_limit = gain * np.sqrt(3.0 / d_in), 1.0 / np.sqrt(d_in)
        layers.append((jax.random.uniform(key_w, (d_out, d_in), dtype, -limit, limit),
                       jax.random.uniform(key_b, (d_out,), dtype, -bias_limit, bias_limit)))
    return flatten(layers)


def pad(theta, dims: tuple[int, ...], wide_dims: tuple[int, ...]) -> jax.Array:
    """Embed a network into a wider shape: the new hidden units get exactly zero incoming and outgoing
    weights and zero bias, so the function is unchanged. θ (P,) -> (P_wide,)."""
    layers = [
        (jnp.zeros((o, i), w.dtype).at[: w.shape[0], : w.shape[1]].set(w),
         jnp.zeros(o, b.dtype).at[: b.shape[0]].set(b))
        for (w, b), i, o in zip(unflatten(theta, dims), wide_dims[:-1], wide_dims[1:])
    ]
    return flatten(layers)


def layer_factors(dims: tuple[int, ...]) -> np.ndarray:
    """DRR per-parameter factor (P / L) / n_l, n_l = |W_l| + |b_l| of the parameter's layer.
    Shape (P,), float64. For (2, 25, 25, 1) the layer values are 3.338, 0.385, 9.628."""
    P, L = num_params(dims), len(dims) - 1
    return np.concatenate(
        [np.full(d_out * (d_in + 1), (P / L) / (d_out * (d_in + 1))) for d_in, d_out in zip(dims[:-1], dims[1:])]
    )
