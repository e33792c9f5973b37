"""The fused CPU kernel (``_kernel.cc``) as JAX functions: the training loss and its gradient, the
network's outputs, and the genericity check of the jitter projection, for float64 work on the CPU backend;
and the Threefry hash of ``jax.random`` on the CPU (registered at import, below).

On a CPU it does the same arithmetic as ``train.loss_and_grad`` and ``nets.forward`` about twice as fast
(``benchmarks/README.md``), because a block of samples stays in cache through every layer forward and
backward. It is a drop-in for the training step only: it has no derivative rules, so anything that
differentiates (``theory``) uses the pure-JAX functions. ``enabled(dtype)`` says whether it serves; it
does not on accelerators, for float32, when the extension was not built, or with ``L2REBOUND_KERNEL=0``
in the environment at import.
"""

from __future__ import annotations

import os

import jax
import jax.numpy as jnp
import numpy as np
from jax.extend.random import threefry2x32_p
from jax.interpreters import mlir

from l2rebound import nets

try:
    from l2rebound import _kernel
except ImportError:  # built without a C++17 compiler: XLA alone
    _kernel = None

SWITCHED_OFF = os.environ.get("L2REBOUND_KERNEL", "1") == "0"


def _threefry2x32(k1, k2, x1, x2):
    """jax's ``threefry2x32`` primitive computed by the kernel: the four uint32 operands broadcast to one
    shape (as jax's own GPU rule does), two uint32 arrays of that shape out."""
    shape = jnp.broadcast_shapes(k1.shape, k2.shape, x1.shape, x2.shape)
    if 0 in shape:
        return [jnp.zeros(shape, jnp.uint32)] * 2
    out = jax.ShapeDtypeStruct(shape, jnp.uint32)
    operands = (jnp.broadcast_to(a, shape) for a in (k1, k2, x1, x2))
    return jax.ffi.ffi_call("l2rebound_threefry2x32", (out, out))(*operands)


if _kernel is not None:
    for _name in ("l2rebound_loss_grad", "l2rebound_forward", "l2rebound_violations", "l2rebound_threefry2x32"):
        jax.ffi.register_ffi_target(_name, getattr(_kernel, _name), platform="cpu")
    if not SWITCHED_OFF:
        # Every CPU program of this process that draws with jax.random (the default generator) then calls the
        # kernel for the hash instead of inlining XLA's loop: the same bits (tested), and the set-up program
        # compiles in about a third of the time. One side effect: jax.export refuses to serialise such a
        # program (a custom call without compatibility guarantees); L2REBOUND_KERNEL=0 restores XLA's loop.
        mlir.register_lowering(threefry2x32_p, mlir.lower_fun(_threefry2x32, multiple_results=True), platform="cpu")


def built() -> bool:
    """True when the extension was compiled at install."""
    return _kernel is not None


def enabled(dtype) -> bool:
    """True when the kernel serves arrays of ``dtype`` here: built, float64, CPU backend, not switched off."""
    return built() and not SWITCHED_OFF and jnp.dtype(dtype) == jnp.float64 and jax.default_backend() == "cpu"


def _dims(dims) -> np.ndarray:
    return np.asarray(dims, dtype=np.int64)


def _check(dims, x, *more):
    """The kernel reads x (N, d0) and y (N, dL) by dims: refuse shapes that do not match them."""
    for array, width in ((x, dims[0]), *more):
        if array.ndim < 1 or array.shape[-1] != width:
            raise ValueError(f"kernel: an array of shape {array.shape} where dims {tuple(dims)} need (N, {width})")


def loss_and_grad(theta, dims: tuple[int, ...], x, y):
    """Mean squared error over samples and outputs and its gradient (P,) for θ (P,), inputs x (N, d0) and
    labels y (N, dL): ``train.loss_and_grad`` computed by the kernel (float64, CPU only; vmap-able)."""
    _check(dims, x, (y, dims[-1]))
    out = (jax.ShapeDtypeStruct(theta.shape[:-1], theta.dtype), jax.ShapeDtypeStruct(theta.shape, theta.dtype))
    loss, grad = jax.ffi.ffi_call("l2rebound_loss_grad", out, vmap_method="broadcast_all")(theta, x, y, dims=_dims(dims))
    return loss / y.size, grad / y.size


def forward(theta, dims: tuple[int, ...], x):
    """Network outputs (N, dL) for inputs x (N, d0): the kernel where ``enabled``, else ``nets.forward``.
    Data labels and the training step use this one, so that a student equal to its teacher reproduces the
    teacher's labels bit for bit (a zero residual) whichever code computes them."""
    if not enabled(theta.dtype):
        return nets.forward(theta, dims, x)
    _check(dims, x)
    out = jax.ShapeDtypeStruct(x.shape[:-1] + (dims[-1],), theta.dtype)
    return jax.ffi.ffi_call("l2rebound_forward", out, vmap_method="broadcast_all")(theta, x, dims=_dims(dims))


def violations(theta, dims: tuple[int, ...], rtol: float, ratio_bound: int):
    """``genericity.violations`` computed by the kernel (float64, CPU only; vmap-able): boolean mask (P,)
    of the entries of θ (P,) that violate C1-C3 with that tolerance and ratio bound. The same rule in plain
    IEEE arithmetic; XLA compiles the ratio's division in ``violations`` into a multiplication by a
    reciprocal, so the two can differ for a ratio within a few ulps of the tolerance's edge."""
    out = jax.ShapeDtypeStruct(theta.shape, jnp.bool_)
    call = jax.ffi.ffi_call("l2rebound_violations", out, vmap_method="broadcast_all")
    return call(theta, dims=_dims(dims), rtol=np.float64(rtol), ratio_bound=np.int64(ratio_bound))
