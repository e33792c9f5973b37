"""Teacher data: inputs x ~ U[-1, 1]^{d0}, labels y = f_teacher(x) + σ·z with z ~ N(0, 1).

Inputs and standard-normal draws are kept apart from σ so that one draw serves every noise level
(common random numbers in the noise experiment).
"""

from __future__ import annotations

from typing import NamedTuple

import jax

from l2rebound import kernel


class Split(NamedTuple):
    """One data set: inputs ``x`` (n, d0), teacher outputs ``clean`` (n, dL), unit noise ``z`` (n, dL)."""

    x: jax.Array
    clean: jax.Array
    z: jax.Array

    def labels(self, sigma):
        """Noisy labels ``clean + sigma * z``, shape (n, dL)."""
        return self.clean + sigma * self.z


def draw_split(key, teacher, dims: tuple[int, ...], n: int, dtype) -> Split:
    """Draw n samples for the teacher θ (P,) with architecture ``dims``."""
    key_x, key_z = jax.random.split(key)
    x = jax.random.uniform(key_x, (n, dims[0]), dtype, -1.0, 1.0)
    z = jax.random.normal(key_z, (n, dims[-1]), dtype)
    return Split(x, kernel.forward(teacher, dims, x), z)
