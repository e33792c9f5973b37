"""The generic class ℱ (Fefferman–Markel conditions) and the jitter projection onto it (SPEC §5).

Per layer l of a network θ:
  C1  every weight and every bias is non-zero;
  C2  the biases of the layer have pairwise distinct absolute values;
  C3  for every input unit k, no ratio ``w_jk / w_j'k`` (j ≠ j') equals ±p/q with p, q ≤ ``RATIO_BOUND``.
Equalities are tested up to ``TOLERANCE_ULPS`` relative units of the dtype's epsilon, so a violation is a
floating-point coincidence, not a near miss. The jitter moves only the entries that violate a condition: a
zero becomes ±``ZERO_JITTER``·(1 + u), u ~ U(0, 1) (the seed's teachers have zero biases, which end near
±1e-6); any other flagged entry is moved away from zero by ``MOVE_ULPS`` relative units. All functions
are pure and jit-able.
"""

from __future__ import annotations

from functools import partial

import jax
import jax.numpy as jnp

from l2rebound.nets import layer_slices

RATIO_BOUND = 10
TOLERANCE_ULPS = 4
MOVE_ULPS = 16
ZERO_JITTER = 1e-6
MAX_ROUNDS = 8


def _equal_abs_later(values, rtol):
    """Mask (d,): entry i is flagged when |values_i| equals |values_j| for some j < i (C2)."""
    a = jnp.abs(values)
    same = jnp.abs(a[:, None] - a[None, :]) <= rtol * jnp.maximum(a[:, None], a[None, :])
    earlier = jnp.tril(jnp.ones(same.shape, bool), k=-1)
    return jnp.any(same & earlier & (a[:, None] > 0), axis=1)


def _rational_ratio_later(w, rtol):
    """Mask (d_out, d_in): ``w[j, k]`` is flagged when |w_jk / w_ik| = p/q (p, q ≤ RATIO_BOUND) for some
    row i < j (C3). Zeros are left to C1."""
    a = jnp.abs(w)
    ratio = a[None, :, :] / jnp.where(a[:, None, :] > 0, a[:, None, :], 1.0)  # [i, j, k] = |w_jk| / |w_ik|
    q = jnp.arange(1, RATIO_BOUND + 1, dtype=w.dtype)
    t = ratio[..., None] * q  # p candidates
    p = jnp.round(t)
    hit = jnp.any((p >= 1) & (p <= RATIO_BOUND) & (jnp.abs(t - p) <= rtol * t), axis=-1)
    earlier = jnp.tril(jnp.ones((a.shape[0], a.shape[0]), bool), k=-1).T  # [i, j]: i < j
    valid = (a[:, None, :] > 0) & (a[None, :, :] > 0) & earlier[:, :, None]
    return jnp.any(hit & valid, axis=0)


@partial(jax.jit, static_argnames="dims")
def violations(theta, dims: tuple[int, ...]):
    """Boolean mask (P,) of the entries of θ that violate C1, C2 or C3 (for C2/C3 the later member of a
    coinciding pair is flagged, so moving flagged entries resolves the coincidence)."""
    rtol = TOLERANCE_ULPS * jnp.finfo(theta.dtype).eps
    mask = jnp.asarray(theta) == 0
    for (ws, bs), d_in, d_out in zip(layer_slices(dims), dims[:-1], dims[1:]):
        w = theta[ws].reshape(d_out, d_in)
        mask = mask.at[bs].max(_equal_abs_later(theta[bs], rtol))
        mask = mask.at[ws].max(_rational_ratio_later(w, rtol).reshape(-1))
    return mask


@partial(jax.jit, static_argnames="dims")
def is_generic(theta, dims: tuple[int, ...]) -> jax.Array:
    """True when θ satisfies C1–C3 (scalar bool)."""
    return ~jnp.any(violations(theta, dims))


@partial(jax.jit, static_argnames="dims")
def jitter_round(theta, dims: tuple[int, ...], key):
    """One round of the jitter: move every entry of θ (P,) that ``violations`` flags, and nothing else.
    Without control flow, so it is cheap inside the training scan; a coincidence that a move creates
    (vanishingly rare) is caught by the next round."""
    key_sign, key_size = jax.random.split(key)
    sign = jnp.where(jax.random.bernoulli(key_sign, shape=theta.shape), 1.0, -1.0).astype(theta.dtype)
    fresh = sign * ZERO_JITTER * (1 + jax.random.uniform(key_size, theta.shape, theta.dtype))
    moved = jnp.where(theta == 0, fresh, theta * (1 + MOVE_ULPS * jnp.finfo(theta.dtype).eps))
    return jnp.where(violations(theta, dims), moved, theta)


@partial(jax.jit, static_argnames="dims")
def project_jitter(theta, dims: tuple[int, ...], key):
    """Jitter rounds until θ (P,) is generic (at most ``MAX_ROUNDS``). The identity, bit for bit, on a
    generic θ."""

    def body(state):
        theta, key, rounds = state
        key, key_round = jax.random.split(key)
        return jitter_round(theta, dims, key_round), key, rounds + 1

    def cond(state):
        theta, _, rounds = state
        return (rounds < MAX_ROUNDS) & jnp.any(violations(theta, dims))

    theta, _, _ = jax.lax.while_loop(cond, body, (theta, key, 0))
    return theta
