"""The training engine: full-batch steps over a batch of runs, epochs as a ``lax.scan``.

One run is a student θ (P,) trained on its own teacher and data. ``train_block`` advances a batch of runs
(leading axis R) by a fixed number of epochs in one compiled call and returns the metrics of every epoch
it passed, computed inside the scan. Shapes, the training rule, the optimiser and the projection schedule
are static (``Spec``); step sizes, noise levels and regulariser strengths are traced arrays (``Hyper``),
so one compiled program serves a whole sweep over them.
"""

from __future__ import annotations

from dataclasses import dataclass
from functools import partial
from typing import NamedTuple

import jax
import jax.numpy as jnp
import numpy as np
import optax
from jax.sharding import Mesh, PartitionSpec

from l2rebound import kernel, rules
from l2rebound.data import Split
from l2rebound.genericity import jitter_round, project_margin
from l2rebound.nets import forward, layer_factors


@dataclass(frozen=True)
class Spec:
    """Static description of the training program (hashable: a jit cache key)."""

    dims: tuple[int, ...]
    rule: str  # a name of rules.rule_names()
    optimizer: str  # a name of rules.optimizer_names()
    projection: str  # "jitter" | "margin" | "off"
    projection_frequency: int  # 0: never; n: after epochs n, 2n, ...
    layer_factors: bool = True  # drr's per-layer weights (P / L) / n_l; False: 1 for every parameter


class Hyper(NamedTuple):
    """Per-run scalars (traced): step size η, label noise σ, regulariser α, β, ρ, margin ε of the
    ``"margin"`` projection."""

    learning_rate: jax.Array
    sigma: jax.Array
    alpha: jax.Array
    beta: jax.Array
    rho: jax.Array
    margin: jax.Array


class Problem(NamedTuple):
    """What a run trains against: the teacher θ_t padded to the student's shape (P,), and its data; and,
    for fine-tuning a pruned student, ``mask`` (P,): 1 where θ may move, 0 where it is held at zero
    (``None``: everywhere free)."""

    teacher: jax.Array
    train: Split
    test: Split
    mask: jax.Array | None = None


class State(NamedTuple):
    """Per-run training state: student θ (P,), optimiser state, projection key (its ``key_data``, uint32),
    and the first epoch whose metrics were not finite (-1 while the run is healthy)."""

    theta: jax.Array
    opt_state: optax.OptState
    key: jax.Array
    diverged_at: jax.Array


def _transform(optimizer: str) -> optax.GradientTransformation:
    """Direction of a step before scaling by -η: the registered optimiser ``rules.optimizer(optimizer)``."""
    return rules.optimizer(optimizer).transform()


def init_state(spec: Spec, theta, key) -> State:
    """Fresh state for a student θ (P,); ``key`` (key data) drives the projection's jitter."""
    # int64, not a weakly typed -1: the type train_block returns, so that later blocks reuse its compile
    return State(theta, _transform(spec.optimizer).init(theta), key, jnp.asarray(-1, dtype=jnp.int64))


SAMPLE_BLOCK = 1000
"""Samples per block of the XLA gradient on CPU, where a block's activations stay in cache (faster than one
pass over all samples: benchmarks/README.md). Accelerators take one pass."""


def loss_and_grad(theta, dims, x, y):
    """Mean squared error over samples and outputs, and its gradient (P,), for inputs x (N, d0) and
    labels y (N, dL), summed block by block over at most ``SAMPLE_BLOCK`` samples on CPU (the last block
    padded with zero-weight samples). Pure JAX, so it can be differentiated again (``theory``); the training
    step uses ``step_loss_and_grad``."""
    n = x.shape[0]
    blocks = -(-n // SAMPLE_BLOCK) if jax.default_backend() == "cpu" else 1
    size = -(-n // blocks)
    pad = blocks * size - n
    weight = jnp.ones((n, 1), x.dtype)  # the padding gets weight 0

    def split(a):
        return jnp.pad(a, ((0, pad), (0, 0))).reshape(blocks, size, -1)

    def squared_error(theta, x, y, w):
        return jnp.sum(w * (forward(theta, dims, x) - y) ** 2)

    def add_block(total, block):
        loss, grad = jax.value_and_grad(squared_error)(theta, *block)
        return (total[0] + loss, total[1] + grad), None

    zero = (jnp.zeros((), theta.dtype), jnp.zeros_like(theta))
    (loss, grad), _ = jax.lax.scan(add_block, zero, (split(x), split(y), split(weight)))
    return loss / y.size, grad / y.size


def step_loss_and_grad(theta, dims, x, y):
    """What the training step uses: ``loss_and_grad`` computed by the fused kernel where it serves these arrays
    (float64 or float32 throughout, on a CPU: ``kernel.serves``), else by XLA."""
    return (kernel.loss_and_grad if kernel.serves(theta, x, y) else loss_and_grad)(theta, dims, x, y)


def mse(theta, dims, x, y):
    """Mean squared error over samples and outputs of the network θ (P,) on inputs x (n, d0) against y (n, dL),
    its outputs from ``kernel.forward`` (as the training step's labels are)."""
    return jnp.mean((kernel.forward(theta, dims, x) - y) ** 2)


def regulariser_grad(spec: Spec, hyper: Hyper, theta):
    """Gradient (P,) of the penalty of the registered rule ``rules.rule(spec.rule)`` at θ (P,), added to the
    loss gradient."""
    return rules.rule(spec.rule).grad(theta, factors(spec.dims, spec.layer_factors, theta.dtype), hyper)


def factors(dims: tuple[int, ...], per_layer: bool, dtype):
    """The rules' per-parameter factor (P,): ``layer_factors(dims)``, or ones when ``per_layer`` is off."""
    return jnp.asarray(layer_factors(dims) if per_layer else np.ones(len(layer_factors(dims))), dtype)


def evaluate(spec: Spec, hyper: Hyper, problem: Problem, theta, train_loss):
    """Metrics of one run at θ, given its train loss there: a dict of scalars keyed like ``results.METRICS``."""
    out = kernel.forward(theta, spec.dims, problem.test.x)
    return {
        "l2": jnp.linalg.norm(theta - problem.teacher),
        "train_loss": train_loss,
        "test_loss": jnp.mean((out - problem.test.labels(hyper.sigma)) ** 2),
        "clean_test_loss": jnp.mean((out - problem.test.clean) ** 2),
    }


def _record(state: State, metrics: dict, epoch):
    """Mark divergence at the first non-finite metric; metrics of a diverged run become NaN."""
    finite = jnp.all(jnp.stack([jnp.isfinite(v) for v in metrics.values()]))
    diverged_at = jnp.where((state.diverged_at < 0) & ~finite, epoch, state.diverged_at)
    metrics = {k: jnp.where(diverged_at >= 0, jnp.nan, v) for k, v in metrics.items()}
    return state._replace(diverged_at=diverged_at), metrics


def _step(spec: Spec, hyper: Hyper, problem: Problem, epochs, keep_theta: bool, state: State, epoch):
    """Record the metrics at θ_epoch (and θ_epoch itself with ``keep_theta``), then take the step to
    θ_{epoch+1} (a no-op once epoch >= epochs, so that the step at epoch E only records θ_E)."""
    y = problem.train.labels(hyper.sigma)
    loss, grad = step_loss_and_grad(state.theta, spec.dims, problem.train.x, y)
    state, metrics = _record(state, evaluate(spec, hyper, problem, state.theta, loss), epoch)

    direction, opt_state = _transform(spec.optimizer).update(grad + regulariser_grad(spec, hyper, state.theta),
                                                             state.opt_state)
    update = -hyper.learning_rate * direction
    theta = state.theta + update
    stalled = jnp.mean(((update != 0) & (theta == state.theta)).astype(theta.dtype))
    if spec.projection != "off" and spec.projection_frequency > 0:
        # a select rather than lax.cond: a conditional inside the scan costs more than the check itself
        due = (epoch + 1) % spec.projection_frequency == 0
        # the margin can make two weights of a column equal in size (a ratio ±1): the jitter round fixes that
        projected = project_margin(theta, spec.dims, hyper.margin) if spec.projection == "margin" else theta
        key = jax.random.fold_in(jax.random.wrap_key_data(state.key), epoch + 1)
        theta = jnp.where(due, jitter_round(projected, spec.dims, key), theta)
    if problem.mask is not None:  # pruned entries stay exactly zero
        theta = theta * problem.mask
    active = epoch < epochs
    keep = lambda new, old: jax.tree.map(lambda n, o: jnp.where(active, n, o), new, old)  # noqa: E731
    new_state = state._replace(theta=keep(theta, state.theta), opt_state=keep(opt_state, state.opt_state))
    return new_state, (metrics, stalled, state.theta if keep_theta else None)


def runs_mesh(batch: int) -> Mesh:
    """The devices a batch of ``batch`` runs is spread over (mesh axis ``"runs"``), an equal share each: every
    device when the batch divides evenly among them, else the first alone."""
    devices = jax.devices()
    return Mesh(np.array(devices if batch % len(devices) == 0 else devices[:1]), ("runs",))


def _per_device(function, batch: int):
    """``function`` of a batch of runs (leading axis of every argument and result), each device of
    ``runs_mesh(batch)`` applying it to its own share. Left to the partitioner, the fused kernel's call,
    which it cannot split, would run every run on every device."""
    runs = PartitionSpec("runs")
    return jax.shard_map(function, mesh=runs_mesh(batch), in_specs=runs, out_specs=runs, check_vma=False)


@partial(jax.jit, static_argnames="spec")
def init_block(spec: Spec, theta, key) -> State:
    """``init_state`` of a batch of runs (leading axis R), placed on the devices as ``train_block`` places
    the state it returns (so that every block reuses the first one's compile)."""
    return _per_device(jax.vmap(partial(init_state, spec)), len(theta))(theta, key)


@partial(jax.jit, static_argnames=("spec", "length", "keep_theta"))
def train_block(spec: Spec, hyper: Hyper, problem: Problem, state: State, start, epochs, length: int,
                keep_theta: bool = False):
    """Advance a batch of runs (leading axis R on every argument but ``start``/``epochs``) through epochs
    ``start, ..., start + length - 1``; steps at or past ``epochs`` leave the state unchanged.

    Returns the new state and, for each epoch of the block, the metrics at its start: a dict of arrays
    of shape (R, length), plus ``stalled`` of the step out of that epoch and, with ``keep_theta``,
    ``theta`` (R, length, P), the student at the start of each epoch.

    Each device of ``runs_mesh(R)`` trains its share of the runs on its own (``_per_device``).
    """

    def one_run(hyper, problem, state):
        steps = partial(_step, spec, hyper, problem, epochs, keep_theta)
        return jax.lax.scan(steps, state, start + jnp.arange(length))

    state, (metrics, stalled, theta) = _per_device(jax.vmap(one_run), len(state.theta))(hyper, problem, state)
    return state, {**metrics, "stalled": stalled, **({"theta": theta} if keep_theta else {})}
