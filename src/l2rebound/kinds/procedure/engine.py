"""The compression procedure's engine entry: teacher and data, the regularised phase, pruning, fine-tuning,
and every pruned student aligned to its teacher by the certified search (JAX, then NumPy on the host).

Runs are the grid ``alphas`` × ``runs`` repetitions, α slowest: run k·R + i (0-based) has α = alphas[k] and
repetition i + 1. Repetition i draws its student and its data from seed + i (common to every α); the teacher
is one network for all runs, drawn from ``seed``.
"""

from __future__ import annotations

import time
from functools import partial

import jax
import jax.numpy as jnp
import numpy as np

from l2rebound import experiments, rules
from l2rebound.config import Config, alpha_of
from l2rebound.data import draw_split
from l2rebound.experiments import PARTIAL, attach_provenance, holding_back_one
from l2rebound.kinds.compress.engine import aligned_students
from l2rebound.kinds.procedure import phases
from l2rebound.kinds.procedure.result import ProcedureResult
from l2rebound.nets import init_lux, num_params, pad
from l2rebound.precision import float64
from l2rebound.pruning import alive_units, recovery, teacher_support
from l2rebound.results import with_manifest
from l2rebound.thresholds import searched
from l2rebound.train import Hyper, mse

BLOCK = 500
"""Epochs per compiled call: progress is reported, and finished batches are noticed, between calls."""


def teacher_of(config: Config) -> jax.Array:
    """The one teacher θ_t (P_teacher,): Lux's default initialisation from ``seed``, then the first layer's
    weights W ← 2W + 1 and the second layer's W ← 2W, so that its function bends within the input square."""
    dims = config.teacher_dims
    theta = init_lux(jax.random.key(config.seed), dims, jnp.dtype(config.dtype))
    first, second = dims[1] * dims[0], dims[1] * (dims[0] + 1)
    theta = theta.at[:first].set(2 * theta[:first] + 1)
    return theta.at[second:second + dims[2] * dims[1]].multiply(2)  # the output layer of a one-hidden-layer net


@partial(jax.jit, static_argnames=("config",))
def _repetition(config: Config, teacher, seed):
    """Student (P,) and data (``phases.Data``) of one repetition, drawn from ``seed``."""
    dims, dtype = config.student_dims, jnp.dtype(config.dtype)
    key_student, key_train, key_val, key_test = jax.random.split(jax.random.key(seed), 4)
    padded = pad(teacher, config.teacher_dims, dims)

    train, val, test = (draw_split(key, padded, dims, n, dtype) for key, n in (
        (key_train, config.dataset_size), (key_val, config.validation_set_size), (key_test, config.test_set_size)))
    sigma = config.noise_sigma
    data = phases.Data(train.x, train.labels(sigma), val.x, val.labels(sigma), test.x, test.labels(sigma), test.clean)
    return init_lux(key_student, dims, dtype), data


def hyper_of(config: Config, alphas) -> Hyper:
    """Per-run strengths (runs,), as ``experiments.hyper_of`` gives them, with each run's own α (per training
    sample when ``alpha_scale`` says so: the loss is a mean)."""
    alphas = alpha_of(config, np.asarray(alphas, float)).astype(config.dtype)
    return experiments.hyper_of(config, len(alphas))._replace(alpha=alphas)


def phase_of(config: Config, rule: str, min_epochs: int, max_epochs: int) -> phases.Phase:
    return phases.Phase(config.student_dims, rule, config.train, config.optimizer, config.layer_factors == "on",
                        config.check_every, config.smoothing_window, min_epochs, max_epochs)


def _kept(checkpoint, key: str, like):
    """(the tree shaped as ``like``, the other entries) kept under ``key`` in ``checkpoint``, or None."""
    kept = checkpoint.load(key) if checkpoint is not None else None
    leaves, tree = jax.tree.flatten(like)
    names = [f"leaf{i}" for i in range(len(leaves))]
    if kept is None or not all(name in kept and kept[name].shape == np.shape(leaf)
                               for name, leaf in zip(names, leaves)):
        return None  # nothing kept, or what is kept does not fit (another version): computed again
    return jax.tree.unflatten(tree, [jnp.asarray(kept[name]) for name in names]), kept


def _keep(checkpoint, key: str, tree, **extra) -> None:
    """Keep ``tree``'s leaves (the first has a row per run, as ``experiments.kept_work`` reads it) and ``extra``."""
    checkpoint.save(key, {**{f"leaf{i}": np.asarray(leaf) for i, leaf in enumerate(jax.tree.leaves(tree))},
                          **{name: np.asarray(value) for name, value in extra.items()}})


def run_phase(phase: phases.Phase, hyper: Hyper, data: phases.Data, state: phases.State, on_progress=None,
              checkpoint=None, name: str = "phase"):
    """A phase of every run to its end (``phases.advance`` in blocks of ``BLOCK`` epochs until no run is left).
    When half of a batch has stopped, the runs still going move to a batch of their own (a new compile, at most
    log2(R) of them), so that the cost follows the epochs trained rather than the longest run.

    ``on_progress(n)`` is told of run-epochs done, a stopped run's unused epochs counted when it stops. With a
    ``checkpoint``, the finished phase is kept under ``name``, and an interrupt (``KeyboardInterrupt``) keeps
    where it stood: the same call then goes on from there, its kept work counted as done."""
    runs, total = len(state.running), len(state.running) * phase.max_epochs
    key = f"{name}-runs-1-{runs}"  # a chunk of every run, in the store's naming (``experiments.CHUNK_KEY``)
    done, credited, rows = 0, 0, np.arange(runs)  # rows: the runs of the batch in training, as rows of ``state``
    kept = _kept(checkpoint, key, state)
    if kept is not None:
        state, extra = kept
        if PARTIAL not in extra:  # the phase finished
            if on_progress is not None:
                on_progress(total)
            return state
        done, credited, rows = int(extra["epochs_done"]), int(extra["credited"]), extra["rows"]
        if on_progress is not None:
            on_progress(credited)
    def taken(rows):
        return jax.tree.map(lambda a: a[rows], (hyper, data, state))

    batch = taken(rows)

    def merged():
        return jax.tree.map(lambda whole, part: jnp.asarray(whole).at[rows].set(part), state, batch[2])

    try:
        while done < phase.max_epochs and len(rows):
            length = min(BLOCK, phase.max_epochs - done)
            batch = (*batch[:2], phases.advance(phase, *batch, done + 1, length))
            done += length
            stopped = ~np.asarray(batch[2].running)
            left = int(np.where(stopped, phase.max_epochs, done).sum()) + (runs - len(rows)) * phase.max_epochs
            step, credited = left - credited, left
            if stopped.all() or 2 * stopped.sum() >= len(rows):
                state = merged()
                rows = rows[~stopped]
                batch = taken(rows)
            if on_progress is not None:
                on_progress(step)
    except KeyboardInterrupt:
        if checkpoint is not None:
            _keep(checkpoint, key, merged(), credited=credited, rows=rows, **{PARTIAL: done // BLOCK},
                  trainings=runs, epochs_done=done, epochs=phase.max_epochs)
        raise
    state = merged()
    if checkpoint is not None:
        _keep(checkpoint, key, state)
    if on_progress is not None:
        on_progress(total - credited)
    return state


def prepare(config: Config):
    """What the runs start from: the teacher (P_teacher,), each run's α (R,), strengths (``Hyper`` of (R,)),
    data (``phases.Data`` of R runs) and z (R, B·P), the rule's start at each run's fresh student."""
    teacher = teacher_of(config)
    seeds = config.seed + 1 + np.arange(config.runs)
    students, data = zip(*(_repetition(config, teacher, int(seed)) for seed in seeds))
    repeat = lambda a: jnp.tile(a, (len(config.alphas),) + (1,) * (a.ndim - 1))  # noqa: E731
    data = jax.tree.map(lambda *leaves: repeat(jnp.stack(leaves)), *data)
    alphas = np.repeat(config.alphas, config.runs)
    hyper = hyper_of(config, alphas)
    return teacher, alphas, hyper, data, jax.vmap(rules.rule(config.train).start)(repeat(jnp.stack(students)), hyper)


def _ended(state: phases.State, max_epochs: int) -> np.ndarray:
    """(R,) the epoch each run's phase ended at: 0 for a phase of no epochs, -1 for a run that did not run it."""
    stopped = np.asarray(state.stopped_at)
    return np.where(stopped >= 0, stopped, 0 if max_epochs == 0 else -1)


@float64
def run(config: Config, on_progress=None, checkpoint=None) -> ProcedureResult:
    """The compression procedure for ``config`` (pure: the same config gives the same numbers). ``on_progress(n)``
    is called as run-epochs complete (R·(E + F) at most: stopped runs are counted when they stop)."""
    dims, runs = config.student_dims, len(config.alphas) * config.runs
    params = num_params(dims)
    teacher, alphas, hyper, data, z = prepare(config)
    rule = rules.rule(config.train)
    mask = jnp.ones((runs, params), z.dtype)

    clock = time.perf_counter()
    seconds = {}

    def lap(name):  # this process's seconds per part, recorded in the manifest
        nonlocal clock
        now = time.perf_counter()
        seconds[name] = seconds.get(name, 0.0) + now - clock
        clock = now

    regular = phase_of(config, config.train, config.min_epochs, config.epochs)
    state = jax.vmap(partial(phases.start, regular))(z, mask, jnp.full(runs, jnp.inf, z.dtype),
                                                     jnp.full(runs, jnp.nan, z.dtype), jnp.zeros(runs, bool))
    state = run_phase(regular, hyper, data, state, on_progress, checkpoint, "regularised")
    first_epochs, first_turns = _ended(state, config.epochs), np.asarray(state.turns)
    z, opt = jax.vmap(phases.result)(state)
    before = np.asarray(z[:, :params])
    lap("training")

    keys = jax.random.split(jax.random.key(config.seed), runs)
    theta, thresholds = searched(z[:, :params], data.train_x, data.train_y, keys, dims, config.tamade_tolerance,
                                 config.tamade_resolution)
    mask = (theta != 0).astype(theta.dtype)
    mask.block_until_ready()
    lap("pruning")
    z = jnp.concatenate([theta, z[:, params:]], axis=1)
    z = rule.prune(z, mask) if rule.prune is not None else z
    tune_rule = config.train if config.finetune_train == "same" else "vanilla"
    tune = phase_of(config, tune_rule, config.finetune_min_epochs, config.finetune_epochs)
    state = jax.vmap(partial(phases.start, tune))(z, mask, state.authors, state.last_test, state.diverged)
    state = state._replace(opt=opt, best_opt=opt)  # the optimiser's moments carry over from the regularised phase
    reported, last = holding_back_one(on_progress)  # the bar ends after the alignment below, not before it
    state = run_phase(tune, hyper, data, state, reported, checkpoint, "finetune")
    z, _ = jax.vmap(phases.result)(state)
    after = np.array(z[:, :params])
    lap("training")
    diverged = np.asarray(state.diverged)
    after[diverged] = np.nan

    # the authors' number: the lowest test loss at a turning point; with none at all, the last check's
    authors = np.where(np.isfinite(np.asarray(state.authors)), np.asarray(state.authors), np.asarray(state.last_test))
    final = jnp.asarray(np.nan_to_num(after))
    test = np.asarray(jax.vmap(partial(mse, dims=dims))(final, x=data.test_x, y=data.test_y))
    clean = np.asarray(jax.vmap(partial(mse, dims=dims))(final, x=data.test_x, y=data.test_clean))
    val = np.asarray(jax.vmap(partial(mse, dims=dims))(final, x=data.val_x, y=data.val_y))
    padded = np.asarray(pad(teacher, config.teacher_dims, dims))
    aligned = aligned_students(after, padded, dims, config.align_budget)
    lap("alignment")
    last()
    support = teacher_support(padded, dims, zero_biases=False)
    recovered = recovery(aligned["theta"], padded, support)
    finite = ~diverged
    alive = np.array([alive_units(t, dims) if ok else (-1,) * (len(dims) - 2) for t, ok in zip(after, finite)])
    table = {
        "run": np.arange(1, runs + 1), "alpha": alphas, "repetition": np.tile(np.arange(1, config.runs + 1),
                                                                             len(config.alphas)),
        "authors_test_loss": np.where(finite, authors, np.nan), "test_loss": np.where(finite, test, np.nan),
        "clean_test_loss": np.where(finite, clean, np.nan), "validation_loss": np.where(finite, val, np.nan),
        "nonzero": np.where(finite, (after != 0).sum(axis=1), -1),
        "nonzero_trained": np.where(finite, (before != 0).sum(axis=1), -1),
        **{f"alive_units_{h}": alive[:, h - 1] for h in range(1, len(dims) - 1)},
        "support_recovered": np.where(finite, recovered["support_recovered"], -1),
        "l2_aligned": aligned["upper"], "l2_aligned_lower": aligned["lower"],
        "threshold": np.asarray(thresholds), "epochs_regularised": first_epochs,
        "epochs_finetune": _ended(state, config.finetune_epochs),
        "turning_points": first_turns + np.asarray(state.turns),
        "diverged": diverged.astype(int)}
    result = ProcedureResult(config, table, {"teacher": padded, "trained": before, "pruned": after,
                                             "aligned": aligned["theta"]})
    result = attach_provenance(result)
    return with_manifest(result, {**result.manifest, "seconds": {k: round(v, 3) for k, v in seconds.items()}})
