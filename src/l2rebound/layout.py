"""The size of a network's flat parameter vector θ, without JAX (the store and the results need it).

A network with ``dims = (d0, d1, ..., dL)`` has weights ``W_l`` (d_l, d_{l-1}) and biases ``b_l`` (d_l,)
for l = 1..L, laid out in θ as ``W1, b1, W2, b2, ...`` (``nets``).
"""

from __future__ import annotations


def num_params(dims: tuple[int, ...]) -> int:
    """P, the length of θ."""
    return sum(d_out * (d_in + 1) for d_in, d_out in zip(dims[:-1], dims[1:]))
