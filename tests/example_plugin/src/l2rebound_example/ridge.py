"""The ``ridge`` training rule: plain weight decay α·Σθ², without the per-layer factors of ``drr``'s ρ term.

A rule is a ``rules.Rule``: its penalty R(θ) and gradient in JAX (imported when called, so that naming the rule
costs nothing), the config strengths it reads, and its independent NumPy oracle, against which the shared
test battery checks it. Registered by the entry point ``ridge`` of the group ``l2rebound.rules``.
"""

import numpy as np

from l2rebound.reference import ReferenceRule
from l2rebound.rules import Rule


def _penalty(theta, factor, hyper):
    import jax.numpy as jnp  # imported when called: naming the rule in a config loads no JAX

    return hyper.alpha * jnp.sum(theta**2)


def _grad(theta, factor, hyper):
    return 2 * hyper.alpha * theta


def _oracle_penalty(theta, fac, alpha, beta, rho):
    return float(alpha * np.sum(np.asarray(theta) ** 2))


def _oracle_grad(theta, fac, alpha, beta, rho):
    return 2.0 * alpha * np.asarray(theta)


RULE = Rule("ridge", "alpha * sum theta^2 (weight decay, the same on every layer)", _penalty, _grad, ("alpha",),
            oracle=ReferenceRule(_oracle_penalty, _oracle_grad))
