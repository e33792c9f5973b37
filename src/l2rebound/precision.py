"""Float64 for the package's own JAX work, scoped to one call.

JAX computes in float32 unless 64-bit types are switched on. The package never switches them on for its
caller's process: each public function that computes with JAX is wrapped in ``float64``, which switches
them on for that call, in that thread, and restores the caller's setting on return.
"""

from __future__ import annotations

import functools

import jax


def float64(function):
    """``function`` run with JAX's 64-bit types switched on for the call only (``jax.enable_x64``)."""

    @functools.wraps(function)
    def scoped(*args, **kwargs):
        with jax.enable_x64(True):
            return function(*args, **kwargs)

    return scoped
