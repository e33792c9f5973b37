"""The compression procedure's training phases as one compiled program over a batch of runs (JAX).

A phase trains each run with its rule and stops it on its own: every ``every`` epochs a *check* compares the
validation loss with the previous check's. A check whose loss is not lower is a *turning point*; the state at
a turning point that sets the phase's lowest turning-point loss is kept (optimiser state included). From
``min_epochs`` on, a check whose validation curve is saturated (``stopping.saturated``) ends the run's phase;
so does ``max_epochs``. The phase then returns its current state if its last loss is no worse than its best
turning point, else the kept one. A stopped run is frozen while the others go on, so runs that stop at
different epochs share one program; regulariser strengths are traced, so a grid of them is one batch.

Shapes, for R runs of P parameters, a rule training B blocks (z = (θ, the rule's state) of B·P), W = twice
ceil(window / 2) recent losses: per run as stated on ``State``; the batch adds a leading R.
"""

from __future__ import annotations

from dataclasses import dataclass
from functools import partial
from typing import NamedTuple

import jax
import jax.numpy as jnp
import optax

from l2rebound import rules
from l2rebound.stopping import saturated
from l2rebound.train import Hyper, factors, mse, step_loss_and_grad


@dataclass(frozen=True)
class Phase:
    """What a phase does (static: a jit cache key). ``rule`` is the rule whose gradient the phase adds (the
    procedure's in the regularised phase, ``vanilla`` in plain fine-tuning); ``state_rule`` the procedure's
    rule, whose state blocks z carries throughout and which moves only when ``rule`` is it."""

    dims: tuple[int, ...]
    rule: str
    state_rule: str
    optimizer: str
    layer_factors: bool
    every: int
    window: int
    min_epochs: int
    max_epochs: int

    @property
    def recent(self) -> int:
        return 2 * -(-self.window // 2)


class Data(NamedTuple):
    """One run's data: inputs (n, d0) and noisy labels (n, dL) of its training, validation and test sets, and
    the teacher's outputs on the test inputs (``test_clean``)."""

    train_x: jax.Array
    train_y: jax.Array
    val_x: jax.Array
    val_y: jax.Array
    test_x: jax.Array
    test_y: jax.Array
    test_clean: jax.Array


class State(NamedTuple):
    """One run's place in a phase. z (B·P,), ``opt`` the optimiser's state over z, ``mask`` (P,) 1 where θ may
    move; ``running`` (bool); ``stopped_at``: the epoch the phase ended (-1 while running); ``diverged``
    (bool); ``previous``: the last check's validation loss (inf before the first); ``recent`` (W,): the last
    W validation losses, oldest first; ``best_z``, ``best_opt``: the kept state; ``turns``: turning points in
    this phase; ``best_turn``: their lowest validation loss; ``authors``: the lowest test loss at a turning
    point, over every phase so far; ``last_val``, ``last_test``: at the last check."""

    z: jax.Array
    opt: optax.OptState
    mask: jax.Array
    running: jax.Array
    stopped_at: jax.Array
    diverged: jax.Array
    previous: jax.Array
    recent: jax.Array
    best_z: jax.Array
    best_opt: optax.OptState
    turns: jax.Array
    best_turn: jax.Array
    authors: jax.Array
    last_val: jax.Array
    last_test: jax.Array


def start(phase: Phase, z, mask, authors, last_test, diverged) -> State:
    """A run's state at the start of ``phase``: z (B·P,) and its mask (P,), and from the phases before: the
    authors' running minimum, the last check's test loss (NaN before any) and whether the run has diverged (a
    diverged run does not run)."""
    inf = jnp.asarray(jnp.inf, z.dtype)
    opt = rules.optimizer(phase.optimizer).transform().init(z)
    return State(z, opt, mask, ~diverged, jnp.asarray(-1), diverged, inf, jnp.full(phase.recent, jnp.nan, z.dtype),
                 z, opt, jnp.asarray(0), inf, authors, jnp.asarray(jnp.nan, z.dtype), last_test)


def settled(phase: Phase, z):
    """Whether the procedure rule's state allows a turning point and a stop (always, for a rule without one)."""
    check = rules.rule(phase.state_rule).settled
    return jnp.asarray(True) if check is None else check(z)


def step(phase: Phase, hyper: Hyper, data: Data, state: State, epoch):
    """Epoch ``epoch`` (1, 2, ...) of one run: the training step, then, where due, the validation and test
    losses and the check. A run that is not running keeps its state."""
    dims, p = phase.dims, state.mask.shape[0]
    rule = rules.rule(phase.rule)
    theta = state.z[:p]
    _, grad = step_loss_and_grad(theta, dims, data.train_x, data.train_y)
    grad = jnp.zeros_like(state.z).at[:p].set(grad * state.mask)
    carries_state = state.z.shape[0] > p
    # a rule with state is idle at α = 0: θ follows the loss alone and the state (with its moments) stays put
    idle = carries_state & (hyper.alpha == 0)
    if phase.rule != "vanilla":
        grad = grad + jnp.where(idle, 0, rule.grad(state.z, factors(dims, phase.layer_factors, state.z.dtype), hyper))
    direction, opt = rules.optimizer(phase.optimizer).transform().update(grad, state.opt)
    z = state.z - hyper.learning_rate * direction
    if carries_state:
        # fine-tuning without the rule leaves its state where the regularised phase left it
        frozen = (jnp.arange(z.shape[0]) >= p) & (idle | (phase.rule != phase.state_rule))
        z = jnp.where(frozen, state.z, z)
        opt = jax.tree.map(lambda new, old: jnp.where(frozen, old, new) if new.shape == z.shape else new,
                           opt, state.opt)
    z = z.at[:p].multiply(state.mask)
    if phase.rule == phase.state_rule:
        z = rule.after_step(z)  # a projection of the state: no change to a state that did not move

    check = (epoch % phase.every == 0) | (epoch == phase.max_epochs)
    # validation losses are needed at checks and in the window that the saturation test reads
    needed = check | (epoch > phase.min_epochs - phase.recent - phase.every)
    nan = jnp.asarray(jnp.nan, z.dtype)
    val = jax.lax.cond(needed, lambda: mse(z[:p], dims, data.val_x, data.val_y), lambda: nan)
    test = jax.lax.cond(check, lambda: mse(z[:p], dims, data.test_x, data.test_y), lambda: nan)
    recent = jnp.concatenate([state.recent[1:], val[None]])

    rising = check & (state.previous <= val)
    turn = rising & settled(phase, z)
    turns = state.turns + turn
    best_turn = jnp.where(turn, jnp.minimum(state.best_turn, val), state.best_turn)
    keep = rising & (turns > 0) & (val <= best_turn)
    late = epoch >= max(phase.min_epochs, phase.window + 3)
    converged = check & late & saturated(recent, phase.window) & settled(phase, z)
    diverged = needed & ~jnp.isfinite(val)
    stop = converged | (epoch >= phase.max_epochs) | diverged

    new = State(z, opt, state.mask, ~stop, jnp.where(stop, epoch, -1), diverged,
                jnp.where(check, val, state.previous), recent,
                jnp.where(keep, z, state.best_z),
                jax.tree.map(lambda n, o: jnp.where(keep, n, o), opt, state.best_opt),
                turns, best_turn, jnp.where(turn, jnp.minimum(state.authors, test), state.authors),
                jnp.where(check, val, state.last_val), jnp.where(check, test, state.last_test))
    return jax.tree.map(lambda n, o: jnp.where(state.running, n, o), new, state), None


@partial(jax.jit, static_argnames=("phase", "length"))
def advance(phase: Phase, hyper: Hyper, data: Data, state: State, first, length: int) -> State:
    """Epochs ``first, ..., first + length - 1`` of a batch of runs (leading axis R on ``hyper``, ``data`` and
    ``state``)."""

    def one_run(hyper, data, state):
        return jax.lax.scan(partial(step, phase, hyper, data), state, first + jnp.arange(length))[0]

    return jax.vmap(one_run)(hyper, data, state)


def result(state: State):
    """(z, optimiser state) that a run's phase returns: its current state unless its last validation loss is
    worse than its best turning point's (then the kept one)."""
    best = (state.turns > 0) & (state.last_val > state.best_turn)
    return (jnp.where(best, state.best_z, state.z),
            jax.tree.map(lambda b, c: jnp.where(best, b, c), state.best_opt, state.opt))
