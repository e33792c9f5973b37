"""Pure-NumPy reference implementation: the test oracle for the JAX engine.

Deliberately plain: one full-batch training step (loss, hand-written backprop, regulariser
gradient, GD / Adam update) and the metrics. Not used by the engine; tests compare against it.
Each built-in training rule and optimiser of the engine (``rules.RULES``, ``rules.OPTIMIZERS``) has its
oracle here under the same name, written independently: ``REFERENCE_RULES``, ``REFERENCE_OPTIMIZERS``; a
member added by another package carries its own (``Rule.oracle``, ``Optimizer.oracle``): ``rule_oracle``,
``optimizer_oracle``.

Conventions
-----------
* ``dims = (d0, d1, ..., dL)``; ``L = len(dims) - 1`` layers; hidden layers tanh, last layer linear.
* Layer ``l`` holds ``W_l`` of shape ``(d_l, d_{l-1})`` and ``b_l`` of shape ``(d_l,)``.
* ``theta`` is the flat vector ``concat(W1.ravel(), b1, W2.ravel(), b2, ...)`` (row-major), shape
  ``(P,)``; ``P = 751`` for ``dims = (2, 25, 25, 1)``.
* ``x`` has shape ``(N, d0)``; outputs and labels ``y`` have shape ``(N, dL)``.
* Loss: ``mean((f(x) - y) ** 2)`` over samples and outputs.
* Arithmetic is in ``theta``'s floating dtype (float64 for non-float input).
"""

from collections.abc import Callable
from typing import NamedTuple

import numpy as np

ADAM_B1, ADAM_B2, ADAM_EPS = 0.9, 0.999, 1e-8


def _float(a):
    """``a`` as an array of its own floating dtype, or float64 when it is not floating."""
    a = np.asarray(a)
    return a if np.issubdtype(a.dtype, np.floating) else a.astype(np.float64)


def _layer_sizes(dims):
    """``[n_1, ..., n_L]`` with ``n_l = d_l * d_{l-1} + d_l`` (weights plus biases of layer l)."""
    return [dout * din + dout for din, dout in zip(dims[:-1], dims[1:])]


def unflatten(theta, dims):
    """Flat ``theta`` of shape ``(P,)`` -> ``[(W_l (d_l, d_{l-1}), b_l (d_l,)), ...]`` (views)."""
    theta, P = _float(theta), sum(_layer_sizes(dims))
    if theta.shape != (P,):
        raise ValueError(f"theta has shape {theta.shape}; dims {tuple(dims)} need ({P},)")
    layers, i = [], 0
    for din, dout in zip(dims[:-1], dims[1:]):
        layers.append((theta[i:i + dout * din].reshape(dout, din), theta[i + dout * din:i + dout * din + dout]))
        i += dout * din + dout
    return layers


def flatten(layers):
    """``[(W_l, b_l), ...]`` -> flat ``theta`` of shape ``(P,)`` (row-major W, then b, per layer)."""
    return np.concatenate([np.concatenate([np.ravel(W), np.ravel(b)]) for W, b in layers])


def _forward_trace(theta, dims, x):
    """Activations ``[x, h_1, ..., h_{L-1}, f]``; ``h_l`` has shape ``(N, d_l)``."""
    layers = unflatten(theta, dims)
    acts = [np.asarray(x, dtype=_float(theta).dtype)]
    for l, (W, b) in enumerate(layers):
        z = acts[-1] @ W.T + b
        acts.append(z if l == len(layers) - 1 else np.tanh(z))
    return acts


def forward(theta, dims, x):
    """Network output ``f(x)`` of shape ``(N, dL)`` for ``x`` of shape ``(N, d0)``."""
    return _forward_trace(theta, dims, x)[-1]


def mse(pred, y):
    """``mean((pred - y) ** 2)`` over all entries, as a Python float."""
    return float(np.mean((pred - np.asarray(y).reshape(pred.shape)) ** 2))


def loss_and_grad(theta, dims, x, y):
    """MSE loss (float) and its gradient w.r.t. ``theta``, shape ``(P,)``, by backpropagation."""
    layers = unflatten(theta, dims)
    acts = _forward_trace(theta, dims, x)
    f = acts[-1]
    r = f - np.asarray(y, dtype=f.dtype).reshape(f.shape)
    delta = 2.0 * r / r.size                      # dLoss/dz for the (linear) output layer, (N, dL)
    grads = [None] * len(layers)
    for l in range(len(layers) - 1, -1, -1):
        W, _ = layers[l]
        grads[l] = (delta.T @ acts[l], delta.sum(axis=0))           # (d_l, d_{l-1}), (d_l,)
        if l > 0:
            delta = (delta @ W) * (1.0 - acts[l] ** 2)              # through tanh of layer l-1
    return float(np.mean(r ** 2)), flatten(grads)


def layer_factors(dims):
    """Shape ``(P,)``: each parameter gets ``(P / L) / n_l`` of its layer ``l`` (W_l and b_l together)."""
    sizes = _layer_sizes(dims)
    P, L = sum(sizes), len(sizes)
    return np.concatenate([np.full(n, (P / L) / n) for n in sizes])


class ReferenceRule(NamedTuple):
    """A training rule's oracle: ``penalty(theta (P,), fac (P,), alpha, beta, rho) -> float`` and its
    gradient ``grad(...) -> (P,)`` with ``sign(0) = 0``; ``fac`` is :func:`layer_factors` in theta's dtype. For
    a rule with state (``Rule.blocks > 1``) ``theta`` is its whole z (blocks·P,), as is the gradient, negated
    on the blocks that climb the penalty (``Rule.ascent``)."""

    penalty: Callable
    grad: Callable


class ReferenceOptimizer(NamedTuple):
    """An optimiser's oracle: ``init(P, dtype) -> state`` and
    ``step(theta (P,), grad (P,), state, lr) -> (theta_new (P,), state_new)``, leaving its inputs unchanged."""

    init: Callable
    step: Callable


def _vanilla_penalty(theta, fac, alpha, beta, rho):
    return 0.0


def _vanilla_grad(theta, fac, alpha, beta, rho):
    return np.zeros_like(theta)


def _l1_penalty(theta, fac, alpha, beta, rho):
    return float(alpha * np.sum(np.abs(theta)))


def _l1_grad(theta, fac, alpha, beta, rho):
    return alpha * np.sign(theta)


def _drr_penalty(theta, fac, alpha, beta, rho):
    """``sum_l [alpha_l * sum_i (1 - exp(-beta |theta_i|)) + rho_l * sum_i theta_i^2]`` with
    ``alpha_l = alpha * fac_l`` and ``rho_l = rho * fac_l``."""
    return float(np.sum(alpha * fac * (1.0 - np.exp(-beta * np.abs(theta))) + rho * fac * theta ** 2))


def _drr_grad(theta, fac, alpha, beta, rho):
    return (alpha * fac) * beta * np.sign(theta) * np.exp(-beta * np.abs(theta)) + 2.0 * (rho * fac) * theta


def _pmmp_split(z, fac):
    """``(theta, w, p, u)``, each of ``fac``'s shape ``(P,)``, of ``z`` of shape ``(4P,)``."""
    return np.split(np.asarray(z), [fac.size, 2 * fac.size, 3 * fac.size])


def _pmmp_penalty(z, fac, alpha, beta, rho):
    """``z = (theta, w, p, u)``: ``alpha * sum(fac * p) + sum(u * E[(theta - w B)^2])`` with ``B`` a Bernoulli of
    mean ``p``: ``E[(theta - w B)^2] = p (theta - w)^2 + (1 - p) theta^2``, the squared mean gap plus the
    variance."""
    theta, w, p, u = _pmmp_split(z, fac)
    return float(alpha * np.sum(fac * p) + np.sum(u * (p * (theta - w) ** 2 + (1.0 - p) * theta ** 2)))


def _pmmp_grad(z, fac, alpha, beta, rho):
    """The penalty's derivatives in theta, w and p, and minus its derivative in u (u climbs it): shape (4P,)."""
    theta, w, p, u = _pmmp_split(z, fac)
    expected = p * (theta - w) ** 2 + (1.0 - p) * theta ** 2
    d_theta = 2.0 * u * (p * (theta - w) + (1.0 - p) * theta)
    d_w = -2.0 * u * p * (theta - w)
    d_p = alpha * fac + u * ((theta - w) ** 2 - theta ** 2)
    return np.concatenate([d_theta, d_w, d_p, -expected])


REFERENCE_RULES = {
    "vanilla": ReferenceRule(_vanilla_penalty, _vanilla_grad),
    "l1": ReferenceRule(_l1_penalty, _l1_grad),
    "drr": ReferenceRule(_drr_penalty, _drr_grad),
    "pmmp": ReferenceRule(_pmmp_penalty, _pmmp_grad),
}
"""Oracles of the training rules, keyed by the names of ``rules.RULES``."""


def _gd_init(P, dtype):
    return {}


def _gd_step(theta, grad, state, lr):
    return theta - lr * grad, {}


def _adam_init(P, dtype):
    return {"m": np.zeros(P, dtype), "v": np.zeros(P, dtype), "t": 0}


def _adam_step(theta, grad, state, lr):
    """optax's Adam: eps added outside the square root, bias correction with the new count."""
    m = ADAM_B1 * state["m"] + (1.0 - ADAM_B1) * grad
    v = ADAM_B2 * state["v"] + (1.0 - ADAM_B2) * grad ** 2
    t = state["t"] + 1
    m_hat, v_hat = m / (1.0 - ADAM_B1 ** t), v / (1.0 - ADAM_B2 ** t)
    new = theta - lr * m_hat / (np.sqrt(v_hat) + ADAM_EPS)
    return new.astype(theta.dtype), {"m": m, "v": v, "t": t}


REFERENCE_OPTIMIZERS = {
    "gd": ReferenceOptimizer(_gd_init, _gd_step),
    "adam": ReferenceOptimizer(_adam_init, _adam_step),
}
"""Oracles of the optimisers, keyed by the names of ``rules.OPTIMIZERS``."""


def _lookup(registry, name, kind):
    """The oracle of the member ``name``: ``registry[name]``, else the one the registered member carries; a
    ``ValueError`` when there is none."""
    if name in registry:
        return registry[name]
    from l2rebound import rules

    try:
        member = rules.rule(name) if kind == "rule" else rules.optimizer(name)
    except ValueError:  # RegistryError: no such member, or its plugin cannot be loaded
        member = None
    oracle = getattr(member, "oracle", None)
    if oracle is None:
        raise ValueError(f"unknown {kind} {name!r}, or one without a NumPy oracle: the reference knows "
                         f"{', '.join(registry)} and the oracles that registered members carry")
    return oracle


def rule_oracle(name):
    """The ``ReferenceRule`` of the training rule ``name`` (``ValueError`` when it has none)."""
    return _lookup(REFERENCE_RULES, name, "rule")


def optimizer_oracle(name):
    """The ``ReferenceOptimizer`` of the optimiser ``name`` (``ValueError`` when it has none)."""
    return _lookup(REFERENCE_OPTIMIZERS, name, "optimizer")


def penalty(theta, dims, rule, alpha, beta, rho):
    """Regulariser value R(theta) of the training rule named ``rule`` (a float); see ``REFERENCE_RULES``."""
    theta = _float(theta)
    fac = layer_factors(dims).astype(theta.dtype)
    return rule_oracle(rule).penalty(theta, fac, alpha, beta, rho)


def regulariser_grad(theta, dims, rule, alpha, beta, rho):
    """Gradient of :func:`penalty`, shape ``(P,)``; ``sign(0) = 0`` (subgradient 0 at the kink)."""
    theta = _float(theta)
    fac = layer_factors(dims).astype(theta.dtype)
    return rule_oracle(rule).grad(theta, fac, alpha, beta, rho)


def init_opt_state(optimizer, P, dtype=np.float64):
    """Optimiser state: ``{}`` for 'gd'; ``{'m': (P,), 'v': (P,), 't': 0}`` (zeros) for 'adam'."""
    return optimizer_oracle(optimizer).init(P, dtype)


def apply_update(theta, grad, state, optimizer, lr):
    """One optimiser step; returns ``(theta_new (P,), state_new)`` without mutating the inputs."""
    theta, grad = _float(theta), np.asarray(grad, dtype=_float(theta).dtype)
    return optimizer_oracle(optimizer).step(theta, grad, state, lr)


def train_step(theta, state, dims, x, y, *, rule, alpha, beta, rho, optimizer, lr):
    """Full-batch step on loss + regulariser. Returns ``(theta_new (P,), state_new, loss_before)``,
    where ``loss_before`` is the MSE (no penalty) at the incoming ``theta``."""
    loss, g = loss_and_grad(theta, dims, x, y)
    g = g + regulariser_grad(theta, dims, rule, alpha, beta, rho)
    theta_new, state_new = apply_update(theta, g, state, optimizer, lr)
    return theta_new, state_new, loss


def metrics(theta, teacher_theta, dims, x_train, y_train, x_test, y_test, y_test_clean):
    """Dict of floats: 'l2' = ||theta - teacher||_2, 'train_loss', 'test_loss', 'clean_test_loss'."""
    f_test = forward(theta, dims, x_test)
    return {
        "l2": float(np.linalg.norm(_float(theta) - _float(teacher_theta))),
        "train_loss": mse(forward(theta, dims, x_train), y_train),
        "test_loss": mse(f_test, y_test),
        "clean_test_loss": mse(f_test, y_test_clean),
    }


def train(theta0, teacher_theta, dims, x_train, y_train, x_test, y_test, y_test_clean, *,
          epochs, rule, alpha, beta, rho, optimizer, lr, mask=None):
    """Run ``epochs`` full-batch steps; with ``mask`` (P,) of 0 and 1, θ is multiplied by it after every
    step (the entries at 0 stay zero). Returns the :func:`metrics` keys, each an array of shape
    ``(epochs + 1,)``: index 0 before training, index ``e`` after step ``e``."""
    theta = _float(theta0).copy()
    state = init_opt_state(optimizer, theta.size, theta.dtype)
    data = (teacher_theta, dims, x_train, y_train, x_test, y_test, y_test_clean)
    history = [metrics(theta, *data)]
    for _ in range(epochs):
        theta, state, _ = train_step(theta, state, dims, x_train, y_train, rule=rule, alpha=alpha,
                                     beta=beta, rho=rho, optimizer=optimizer, lr=lr)
        if mask is not None:
            theta = theta * mask
        history.append(metrics(theta, *data))
    return {k: np.array([h[k] for h in history]) for k in history[0]}
