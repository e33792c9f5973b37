"""The size of a network's flat parameter vector θ, its layers, and a NumPy draw of one, without JAX (the store, the
results and the alignment's checks need them).

A network with ``dims = (d0, d1, ..., dL)`` has weights ``W_l`` (d_l, d_{l-1}) and biases ``b_l`` (d_l,)
for l = 1..L, laid out in θ as ``W1, b1, W2, b2, ...`` (``nets``).
"""

from __future__ import annotations

import itertools

import numpy as np


def num_params(dims: tuple[int, ...]) -> int:
    """P, the length of θ."""
    return sum(d_out * (d_in + 1) for d_in, d_out in zip(dims[:-1], dims[1:]))


def layers(theta, dims: tuple[int, ...]) -> list[tuple[np.ndarray, np.ndarray]]:
    """θ (P,) -> ``[(W1, b1), ..., (WL, bL)]``, views of θ: ``W_l`` (d_l, d_{l-1}), ``b_l`` (d_l,). Raises
    ``ValueError`` unless dims has two or more positive sizes and θ is finite with shape (num_params(dims),)."""
    if len(dims) < 2 or any(int(d) != d or d < 1 for d in dims):
        raise ValueError(f"dims must be two or more positive layer sizes, got {dims}.")
    theta = np.asarray(theta)
    if theta.shape != (num_params(dims),):
        raise ValueError(f"theta has shape {theta.shape} but dims {tuple(dims)} need ({num_params(dims)},).")
    if not np.all(np.isfinite(theta)):
        raise ValueError(f"theta has {np.sum(~np.isfinite(theta))} non-finite entries.")
    out, start = [], 0
    for d_in, d_out in itertools.pairwise(dims):
        end = start + d_out * d_in
        out.append((theta[start:end].reshape(d_out, d_in), theta[end:end + d_out]))
        start = end + d_out
    return out


def draw_glorot(rng: np.random.Generator, dims: tuple[int, ...], bias_floor: float | None) -> np.ndarray:
    """θ (P,) with weights N(0, 2/(fan_in + fan_out)) and biases N(0, 0.1²) pushed away from 0 to
    |b| ≥ ``bias_floor``, or N(0, 1e-8²) (zero-ish, like a projected zero-bias teacher) when it is None."""
    parts = []
    for d_in, d_out in itertools.pairwise(dims):
        parts.append(rng.normal(0.0, np.sqrt(2.0 / (d_in + d_out)), size=d_out * d_in))
        if bias_floor is None:
            parts.append(1e-8 * rng.normal(size=d_out))
        else:
            b = 0.1 * rng.normal(size=d_out)
            parts.append(np.where(b >= 0, 1.0, -1.0) * np.maximum(np.abs(b), bias_floor))
    return np.concatenate(parts)
