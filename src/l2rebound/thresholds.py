"""Pruning a trained network by search: the largest magnitude threshold that a loss tolerates (TAMADE), and
the entries that no input can move (random-gradient pruning).

Array code over one run's θ (P,), traced by JAX (vmap it for a batch of runs). The loss is a function of θ
alone, e.g. the training set's mean squared error.
"""

from __future__ import annotations

from functools import partial

import jax
import jax.numpy as jnp

from l2rebound.train import mse, step_loss_and_grad


def magnitude_pruned(theta, threshold):
    """θ with every entry of |θ| < ``threshold`` set to 0 (the threshold itself survives)."""
    return jnp.where(jnp.abs(theta) < threshold, jnp.zeros_like(theta), theta)


def tamade(loss, theta, tolerance, resolution):
    """The largest threshold t, found by bisection, for which ``loss(magnitude_pruned(θ, t))`` stays at most
    (1 + ``tolerance``)·``loss(θ)``: the interval [0, 2·max|θ|] is halved, keeping the upper half whenever its
    midpoint passes, until it is at most ``resolution`` wide or its ends are adjacent numbers of θ's precision.
    The loss need not be monotone in t; the answer is the last midpoint that passed (0 if none).

    Returns (threshold, bisection steps), both scalars.
    """
    target = (1 + tolerance) * loss(theta)
    zero = jnp.zeros((), theta.dtype)

    def unfinished(search):
        low, high, _, _ = search
        middle = (low + high) / 2
        # adjacent floats: the midpoint rounds onto an end, and halving would no longer move either
        return (jnp.abs(high - low) > resolution) & (middle != low) & (middle != high)

    def halve(search):
        low, high, found, steps = search
        middle = (low + high) / 2
        passes = loss(magnitude_pruned(theta, middle)) <= target
        return (jnp.where(passes, middle, low), jnp.where(passes, high, middle), jnp.where(passes, middle, found),
                steps + 1)

    start = (zero, 2 * jnp.max(jnp.abs(theta)), zero, jnp.zeros((), jnp.int32))
    _, _, found, steps = jax.lax.while_loop(unfinished, halve, start)
    return found, steps


def random_gradient_pruned(loss_grad, theta, key, samples: int, dims: tuple[int, ...]):
    """θ with every entry whose loss gradient is exactly 0 on a random batch set to 0: standard-normal inputs
    (``samples``, d0) and labels (``samples``, dL). An exact zero on random data means that no input moves the
    entry: a weight into or out of a unit that is cut off, a bias of a unit without outgoing weights.
    ``loss_grad(θ, x, y)`` returns (loss, gradient (P,))."""
    key_x, key_y = jax.random.split(key)
    x = jax.random.normal(key_x, (samples, dims[0]), theta.dtype)
    y = jax.random.normal(key_y, (samples, dims[-1]), theta.dtype)
    _, grad = loss_grad(theta, x, y)
    return jnp.where(grad == 0, jnp.zeros_like(theta), theta)


@partial(jax.jit, static_argnames=("dims",))
def searched(theta, x, y, keys, dims: tuple[int, ...], tolerance, resolution):
    """A batch of trained networks θ (R, P) pruned by search, each on its own training data x (R, N, d0), y (R,
    N, dL): random-gradient pruning, the TAMADE threshold of the training set's mean squared error at
    ``tolerance``, random-gradient pruning again (each random batch as large as the training set, drawn from the
    run's key (R,)). Returns the pruned θ (R, P) and the thresholds (R,)."""

    def loss_grad(theta, x, y):
        return step_loss_and_grad(theta, dims, x, y)

    def one(theta, x, y, key):
        first, second = jax.random.split(key)
        theta = random_gradient_pruned(loss_grad, theta, first, x.shape[0], dims)
        threshold, _ = tamade(lambda t: mse(t, dims, x, y), theta, tolerance, resolution)
        theta = magnitude_pruned(theta, threshold)
        return random_gradient_pruned(loss_grad, theta, second, x.shape[0], dims), threshold

    return jax.vmap(one)(theta, x, y, keys)
