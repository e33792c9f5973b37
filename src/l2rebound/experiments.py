"""The engine machinery that every experiment kind shares, and the one pure function from a config to its
result (``run_experiment``).

A kind's engine entry (``l2rebound.kinds.<name>.engine``) draws its runs (``setup_runs``: run r of a config
draws teacher, data and student from ``seed + r``), trains them as a ``Plan`` (``train_plan``) or as a batch
(``train_runs``), measures the distances modulo the symmetry group of kept students (``distances``,
``alignments``) and attaches the provenance (``attach_provenance``); ``check_memory`` refuses what does not
fit. Runs are processed in chunks of ``chunk_runs()`` (on CPU ``CHUNK_RUNS``, cache-sized; on an accelerator
``ACCELERATOR_CHUNK_RUNS``, enough to fill it; the last chunk is padded so that one compiled program
serves them all) and epochs in blocks of at most ``BLOCK_EPOCHS`` (progress between
blocks, no host round-trip inside one).

The entry points compute in float64-capable JAX (``jax.enable_x64`` scoped to the call, so the caller's
JAX settings are left as they were) and attach the result's provenance (``provenance.manifest``).
"""

from __future__ import annotations

import contextlib
import math
import os
import re
import threading
from collections.abc import Callable
from functools import partial
from typing import NamedTuple

import jax
import jax.numpy as jnp
import numpy as np
from jax.sharding import NamedSharding, PartitionSpec

from l2rebound import kernel, provenance
from l2rebound.config import Config, ConfigError, alpha_of
from l2rebound.data import draw_split
from l2rebound.genericity import project_jitter, project_margin
from l2rebound.nets import init_glorot, num_params, pad
from l2rebound.precision import float64
from l2rebound.results import COLUMNS, DISTANCES, METRICS, Result, compute, kind_of, with_manifest
from l2rebound.train import SAMPLE_BLOCK, Hyper, Problem, Spec, init_block, init_state, runs_mesh, train_block

CHUNK_RUNS = 10
ACCELERATOR_CHUNK_RUNS = 1000
BLOCK_EPOCHS = 50
BLOCK_WORK = 10**9
"""Multiply-adds of one run's training passes (training samples × weights × epochs) beyond which a block is
cut shorter than ``BLOCK_EPOCHS``: wide networks report progress every epoch or few, not once at the end."""



def attach_provenance(result: Result) -> Result:
    """``result``, checked against its config, carrying where and how it was computed (``provenance``)."""
    result.validate()  # chunks kept by an interrupted run are part of it
    return with_manifest(result, provenance.manifest(result.config, kernel.fast_path(result.config.dtype)))


def spec_of(config: Config) -> Spec:
    return Spec(config.student_dims, config.train, config.optimizer, config.projection, config.projection_frequency,
                config.layer_factors == "on")


def hyper_of(config: Config, runs: int, sigma=None) -> Hyper:
    """Per-run hyper-parameters (runs,) in the config's dtype, as NumPy arrays (placed on the devices by
    ``spread``, with no compiled operation); ``sigma`` overrides the noise level."""
    sigma = config.noise_sigma if sigma is None else sigma
    values = (config.learning_rate, sigma, alpha_of(config, config.alpha), config.beta, config.rho, config.margin)
    return Hyper(*(np.broadcast_to(np.asarray(v, config.dtype), (runs,)) for v in values))


def _draw_spec(config: Config) -> Config:
    """The config with every field that ``_setup`` does not read (or reads traced) reset to its default:
    the static jit key, so sweeps over seeds, noise levels or step sizes reuse one compiled setup."""
    used = ("teacher_dims", "student_dims", "bias_init", "projection", "margin", "student_init", "perturbation",
            "dataset_size", "test_set_size", "dtype")
    return Config(**{name: getattr(config, name) for name in used})


@partial(jax.jit, static_argnames=("draw",))
def _setup(draw: Config, teacher_seed, run_seed, initial_permut):
    """Teacher, data and initial student of one run (seeds are traced: one compile serves every run)."""
    dtype = jnp.dtype(draw.dtype)
    key_teacher, key_project = jax.random.split(jax.random.key(teacher_seed))
    _, key_train, key_test, key_student, key_train_proj = jax.random.split(jax.random.key(run_seed), 5)
    teacher = init_glorot(key_teacher, draw.teacher_dims, draw.bias_init, dtype)
    if draw.projection == "margin":
        teacher = project_margin(teacher, draw.teacher_dims, draw.margin)
    if draw.projection != "off":
        teacher = project_jitter(teacher, draw.teacher_dims, key_project)
    padded = pad(teacher, draw.teacher_dims, draw.student_dims)
    problem = Problem(
        padded,
        draw_split(key_train, padded, draw.student_dims, draw.dataset_size, dtype),
        draw_split(key_test, padded, draw.student_dims, draw.test_set_size, dtype),
    )
    if draw.student_init == "random":
        student = init_glorot(key_student, draw.student_dims, draw.bias_init, dtype)
    elif draw.perturbation == "uniform":
        student = padded + initial_permut * jax.random.uniform(key_student, padded.shape, dtype, -1.0, 1.0)
    else:
        student = padded + initial_permut * jax.random.normal(key_student, padded.shape, dtype)
    return teacher, problem, student, jax.random.key_data(key_train_proj)


@float64
def setup_runs(config: Config, teacher_seeds: np.ndarray, run_seeds: np.ndarray):
    """Teacher (R, P_t), problem, initial student (R, P_s) and projection key data (R, 2) of each run,
    stacked as NumPy arrays. One run at a time: the unbatched program compiles in half the time of its
    vmapped form; stacking on the host compiles nothing (each small array operation run outside jit costs a
    compile of 30-50 ms)."""
    draw, permut = _draw_spec(config), np.asarray(config.initial_permut, config.dtype)
    runs = jax.device_get([_setup(draw, int(t), int(r), permut) for t, r in zip(teacher_seeds, run_seeds)])
    return jax.tree.map(lambda *leaves: np.stack(leaves), *runs)


def spread(tree):
    """Place a batch of runs (leading axis of every leaf) on the devices of ``runs_mesh``, an equal share
    on each, as ``train_block`` expects them."""
    batch = len(jax.tree.leaves(tree)[0])
    return jax.device_put(tree, NamedSharding(runs_mesh(batch), PartitionSpec("runs")))


def alignments(students, teachers, dims: tuple[int, ...], align_budget: int | None):
    """For each finite student of θ (..., P), relabelled onto its teacher (..., P) (broadcast): (its index,
    ``certified_align``'s ``Alignment``), searching at most ``align_budget`` nodes beyond the root (``None``:
    to the end), or to the end for a small network (``certify.node_budget``). A node budget, never a time: the
    same students give the same numbers."""
    from l2rebound.certify import Budget, certified_align, node_budget  # SciPy's optimize: only where aligning

    students, teachers = np.broadcast_arrays(np.asarray(students), np.asarray(teachers))
    budget = Budget(nodes=node_budget(dims, align_budget))
    for index in np.ndindex(*students.shape[:-1]):
        if np.all(np.isfinite(students[index])):
            yield index, certified_align(students[index], teachers[index], dims, budget)


def distances(theta, teacher, dims: tuple[int, ...], align_budget: int | None = None) -> dict[str, np.ndarray]:
    """The ``DISTANCES`` of students θ (..., P) from their teachers (..., P) (broadcast), NaN where θ is
    not finite: ``l2_aligned`` and ``l2_aligned_lower`` are the bounds of ``alignments``. The alignment
    dominates the cost (README, 'Three distances')."""
    from l2rebound.symmetry import normal_form

    theta, teacher = np.broadcast_arrays(np.asarray(theta), np.asarray(teacher))
    out = {name: np.full(theta.shape[:-1], np.nan) for name in DISTANCES}
    teacher_forms = {}  # a run's teacher serves all its kept students: its normal form is computed once
    for index, aligned in alignments(theta, teacher, dims, align_budget):
        out["l2_aligned"][index], out["l2_aligned_lower"][index] = aligned.upper, aligned.lower
        key = teacher[index].tobytes()
        if key not in teacher_forms:
            teacher_forms[key] = normal_form(teacher[index], dims)
        out["l2_normal_form"][index] = np.linalg.norm(normal_form(theta[index], dims) - teacher_forms[key])
    return out


def holding_back_one(on_progress):
    """(``on_progress`` less its last unit, the call that reports that unit), so that the progress of a phase
    ends only after the host work that follows it; without ``on_progress``, two functions that do nothing."""
    if on_progress is None:
        return None, lambda: None
    told = [0, 0]  # units received, units passed on

    def reported(n: int) -> None:
        told[0] += n
        if told[0] - 1 > told[1]:
            on_progress(told[0] - 1 - told[1])
            told[1] = told[0] - 1

    def last() -> None:
        if told[0] > told[1]:
            on_progress(told[0] - told[1])
            told[1] = told[0]

    return reported, last


def round_down(values: np.ndarray, dtype) -> np.ndarray:
    """``values`` in ``dtype``, rounded toward −∞ (NaN stays NaN): a certified lower bound stays one when it
    is stored in float32."""
    dtype = np.dtype(dtype)
    cast = np.asarray(values).astype(dtype)
    return np.where(cast > values, np.nextafter(cast, dtype.type(-np.inf)), cast)


def block_length(config: Config) -> int:
    """Epochs per ``train_block`` call: the E + 1 steps (epoch E's only records) in equal blocks of at most
    ``BLOCK_EPOCHS``, and of at most ``BLOCK_WORK`` multiply-adds per run (at least one epoch). A function of
    the config alone, so that an interrupted run resumes with the same blocks."""
    dims = config.student_dims
    per_epoch = config.dataset_size * sum(a * b for a, b in zip(dims[:-1], dims[1:]))
    most = max(1, min(BLOCK_EPOCHS, BLOCK_WORK // max(per_epoch, 1)))
    steps = config.epochs + 1
    return math.ceil(steps / math.ceil(steps / most))


def compile_ahead(config: Config, runs: int, keep_theta: bool) -> threading.Thread:
    """Start compiling, in a background thread, the ``train_block`` that ``train_runs`` will call for a
    chunk of ``runs`` runs of ``config``; returns the thread (join it before training). XLA compiles
    without holding the GIL, so this overlaps the compile of ``_setup``, which comes first. The thread
    takes the caller's 64-bit setting (a thread-local one)."""
    x64 = jax.config.jax_enable_x64
    spec = spec_of(config)
    placed = NamedSharding(runs_mesh(runs), PartitionSpec("runs"))

    def batch(leaf):
        return jax.ShapeDtypeStruct((runs, *leaf.shape), leaf.dtype, sharding=placed)

    _, problem, student, key = jax.eval_shape(partial(_setup, _draw_spec(config)), 0, 0, np.asarray(0, config.dtype))
    state = jax.eval_shape(partial(init_state, spec), student, key)
    hyper = jax.tree.map(lambda a: a[0], hyper_of(config, 1))
    args = jax.tree.map(batch, (hyper, problem, state))

    def compile_block():
        with contextlib.suppress(Exception), jax.enable_x64(x64):  # the real call reports any error itself
            _call_block(train_block.lower, spec, *args, 0, config.epochs, block_length(config), keep_theta).compile()

    thread = threading.Thread(target=compile_block, name="l2rebound-compile", daemon=True)
    thread.start()
    return thread


def _call_block(call, spec: Spec, hyper, problem, state, start, epochs: int, length: int, keep_theta: bool):
    """``call`` (``train_block`` or its ``lower``) on the block of ``length`` epochs from epoch ``start``,
    spelled in one place: jit's cache tells a static argument passed by keyword from one passed by position,
    so the compile ahead must spell the call exactly as the training does."""
    return call(spec, hyper, problem, state, start, epochs, length, keep_theta=keep_theta)


@jax.jit
def _take_epochs(theta, index):
    """A block's students θ (R, length, P) at its epochs ``index`` (K,), gathered on the device."""
    return theta[:, index]


class Blocks(NamedTuple):
    """Where one chunk of runs keeps its finished blocks of epochs when it is interrupted (``run_chunks`` makes
    it, ``train_runs`` uses it): ``kept``, what an interrupted call kept (``kept_blocks``; None: nothing), and
    ``keep(arrays)``, which stores such arrays in the chunk's place in the checkpoint."""

    kept: dict | None
    keep: Callable[[dict], None]


PARTIAL = "blocks_done"
"""The array that marks a kept chunk as unfinished: how many blocks of epochs its runs had finished."""


def kept_blocks(done: int, epochs: int, length: int, state, pieces: list, kept: list) -> dict[str, np.ndarray]:
    """What an interrupted ``train_runs`` keeps after its first ``done`` blocks of ``length`` epochs: the
    runs' ``State`` after them (its leaves, R leading), their metrics (``pieces``: dicts of (R, n) arrays,
    together (R, done · length)) and their kept students (``kept``: (R, k, P) arrays); ``epochs_done`` is the
    epoch the state stands at (of ``epochs``)."""
    leaves = jax.device_get(jax.tree.leaves(state))  # the one copy to the host, made only when asked to stop
    return {PARTIAL: np.asarray(done), "epochs_done": np.asarray(min(done * length, epochs)),
            "epochs": np.asarray(epochs), **{f"state_{i}": leaf for i, leaf in enumerate(leaves)},
            **{f"block_{name}": np.concatenate([p[name] for p in pieces], axis=1) for name in METRICS},
            "block_kept": np.concatenate(kept, axis=1)}


def _restored(kept: dict | None, state, length: int, kept_per_block: list[int], params: int):
    """(blocks done, their metrics, their kept students, the state after them) from what ``kept_blocks`` kept,
    the state placed as ``state`` is, for blocks of ``length`` epochs that keep ``kept_per_block`` students
    each, of ``params`` parameters. None where nothing was kept, or what was kept does not fit (another
    version's, or a damaged file): the chunk then trains from its start."""
    if kept is None:
        return None
    leaves, tree = jax.tree.flatten(state)
    try:
        done = int(kept[PARTIAL])
        saved = [np.asarray(kept[f"state_{i}"]) for i in range(len(leaves))]
        students = np.asarray(kept["block_kept"])
        pieces = {name: np.asarray(kept[f"block_{name}"]) for name in METRICS}
    except (KeyError, TypeError, ValueError):
        return None
    runs = len(leaves[0])
    if not (1 <= done <= len(kept_per_block) and students.shape == (runs, sum(kept_per_block[:done]), params)
            and all(a.shape == leaf.shape and a.dtype == leaf.dtype for a, leaf in zip(saved, leaves))
            and all(a.shape == (runs, done * length) for a in pieces.values())):
        return None
    return done, pieces, students, spread(jax.tree.unflatten(tree, saved))


def train_runs(config: Config, hyper: Hyper, problem: Problem, student, keys, on_progress=None, keep=(),
               on_kept=None, blocks: Blocks | None = None):
    """Train a batch of runs for ``config.epochs`` epochs, block by block.

    Returns (metrics: name -> (R, E + 1) numpy arrays, diverged_at (R,), final θ (R, P), the students
    at the epochs ``keep`` (K,) as (R, K, P), NaN from a run's divergence on). ``on_progress(n)`` is called
    after each block with the number of epochs it advanced. ``on_kept(epochs (k,), theta (R, k, P))`` is
    called with each block's kept students while the next block trains, so that host work on them overlaps
    the training.

    blocks: where an interrupt (``KeyboardInterrupt``) keeps the blocks finished by then (their state, metrics
        and kept students; ``Blocks``), and what an earlier interrupt kept: training goes on from there, as if
        never stopped, and the blocks it kept count as done for ``on_progress`` and reach ``on_kept`` again.
    """
    spec = spec_of(config)
    epochs = config.epochs
    dtype = jnp.dtype(config.dtype)
    if jax.dtypes.canonicalize_dtype(dtype) != dtype:  # an internal call outside the entry points' scope
        raise RuntimeError(f"train_runs: {dtype} needs JAX's 64-bit types; call it inside jax.enable_x64(True)")
    for name, leaf in (("student", student), ("teacher", problem.teacher), ("inputs", problem.train.x),
                       ("step size", hyper.learning_rate)):
        if leaf.dtype != dtype:
            raise TypeError(f"{name} is {leaf.dtype}, the config asks for {dtype}")
    hyper, problem, student, keys = spread((hyper, problem, student, keys))
    state = init_block(spec, student, keys)
    steps = epochs + 1  # the step at epoch E only records the metrics at θ_E (its update is masked)
    length = block_length(config)
    keep = np.asarray(keep, int)

    starts = range(0, steps, length)
    wanted_in = [keep[(keep >= start) & (keep < start + length)] for start in starts]
    slots = max(map(len, wanted_in))  # one gather shape for every block: one compile
    advanced = [max(0, min(length, epochs - start)) for start in starts]  # epochs each block trains
    # the results of the blocks on the host, in order: (metrics, kept students (R, k, P), the state after them,
    # how many blocks are done with them)
    done = []
    resumed = _restored(blocks.kept if blocks else None, state, length, list(map(len, wanted_in)), student.shape[1])
    first = 0
    if resumed:
        first, piece, students, state = resumed
        done.append((piece, students, state, first))
        if on_progress:
            on_progress(sum(advanced[:first]))
        if on_kept and students.shape[1]:
            on_kept(np.concatenate(wanted_in[:first]), students)

    def fetch(block, metrics, after):  # waits for the block; a diverged run's θ is NaN from its divergence on
        wanted = wanted_in[block]
        piece = jax.device_get({k: v for k, v in metrics.items() if k != "theta"})
        if len(wanted):
            theta = np.asarray(metrics["theta"])[:, : len(wanted)]
            students = np.where(np.isnan(piece["l2"][:, wanted - starts[block], None]), np.nan, theta)
        else:
            students = np.zeros((len(student), 0, student.shape[1]))
        return piece, students, after, block + 1

    def collect(block, metrics, after):
        done.append(fetch(block, metrics, after))  # one step: an interrupt finds a block's results whole or absent
        if len(done) > 1:  # an interrupt keeps the state after the latest block only: free the one before
            piece, students, _, count = done[-2]
            done[-2] = (piece, students, None, count)
        if on_kept and len(wanted_in[block]):
            on_kept(wanted_in[block], done[-1][1])
        if on_progress:  # after the host work on the block: the last block's alignment is inside the bar
            on_progress(advanced[block])

    queue = []  # the blocks dispatched and not yet handled, oldest first: (index, metrics, state after it)
    try:
        for block in range(first, len(starts)):
            # keep_theta is static: the same value for every block, so that one compile serves them all
            state, metrics = _call_block(train_block, spec, hyper, problem, state, starts[block], epochs, length,
                                         len(keep) > 0)
            wanted = wanted_in[block]
            if len(wanted):  # only the kept epochs leave the device; queued right behind its block, before the next
                metrics["theta"] = _take_epochs(metrics["theta"],
                                                np.pad(wanted - starts[block], (0, slots - len(wanted)), "edge"))
            queue.append((block, metrics, state))
            if len(queue) > 1:  # dispatch is asynchronous: a block's results are handled while the next one runs
                collect(*queue[0])
                del queue[0]  # after: an interrupt while it is fetched finds it still queued
        if queue:
            collect(*queue[0])
    except KeyboardInterrupt:
        if blocks:
            _keep_blocks(blocks, done, queue, first, epochs, length, fetch)
        raise
    out = {k: np.concatenate([entry[0][k] for entry in done], axis=1)[:, :steps] for k in METRICS}
    # ``stalled`` is recorded per step out of an epoch: shift so that epoch e holds the step into e.
    out["stalled"] = np.concatenate([np.zeros_like(out["stalled"][:, :1]), out["stalled"][:, :epochs]], axis=1)
    students = np.concatenate([entry[1] for entry in done], axis=1)
    return out, np.asarray(state.diverged_at), np.asarray(state.theta), students


def _keep_blocks(blocks: Blocks, done: list, queue: list, resumed: int, epochs: int, length: int, fetch) -> None:
    """On an interrupt of ``train_runs``: keep (``blocks.keep``) the blocks whose results are on the host
    (``done``), and the next dispatched one (``queue``) if the device has finished it; nothing when no block
    has finished beyond the ``resumed`` ones. A failed write keeps nothing: the interrupted command says what
    the checkpoint holds."""
    count = done[-1][3] if done else 0
    ready = [entry for entry in queue if entry[0] == count and all(a.is_ready() for a in jax.tree.leaves(entry[1:]))]
    finished = done + [fetch(*entry) for entry in ready]
    if finished and finished[-1][3] > resumed:
        with contextlib.suppress(OSError, ValueError):
            blocks.keep(kept_blocks(finished[-1][3], epochs, length, finished[-1][2],
                                    [entry[0] for entry in finished], [entry[1] for entry in finished]))


def chunk_runs() -> int:
    """Runs per compiled call: ``CHUNK_RUNS`` on CPU, where a chunk's activations should stay in cache,
    ``ACCELERATOR_CHUNK_RUNS`` on a GPU, which needs many runs at once to be busy
    (``benchmarks/saturation.py`` measures where it is full)."""
    return CHUNK_RUNS if jax.default_backend() == "cpu" else ACCELERATOR_CHUNK_RUNS


def chunk_size(runs: int) -> int:
    """Runs per chunk of an experiment with ``runs`` runs: ``chunk_runs()`` (at most ``runs``), rounded up to
    a whole number per device."""
    devices = jax.device_count()
    return -(-min(chunk_runs(), runs) // devices) * devices


PROCESS_BYTES = 400 * 2**20
"""What a process running the engine holds before any experiment: Python, NumPy, JAX and XLA's runtime."""
DATA_COPIES = 2.5
"""Copies of each chunk's data alive at the peak: drawn on the device, gathered to the host, placed again."""
MEMORY_SHARE = 0.8
"""Share of the machine's memory an experiment may plan to use."""


def memory_need(config: Config) -> int:
    """Bytes that the experiment of ``config`` holds at its peak, roughly and from above: the process, one
    chunk's data (``DATA_COPIES``), training state, activations and one block of kept students on the device,
    plus the whole result's metrics and kept students on the host."""
    kind = kind_of(config)
    trainings, kept = kind.trainings(config), kind.kept_students(config)
    chunk, item = chunk_size(trainings), np.dtype(config.dtype).itemsize
    dims, params = config.student_dims, num_params(config.student_dims)
    data = (config.dataset_size + config.test_set_size) * (dims[0] + 2 * dims[-1])
    # the kernel keeps blocks of 512 bytes per unit in cache (64 samples of float64, 128 of float32); XLA holds
    # a block of SAMPLE_BLOCK samples' activations forward and backward
    block = 512 // item if kernel.enabled(config.dtype) else min(config.dataset_size, SAMPLE_BLOCK)
    activations = 4 * block * sum(dims)
    device = chunk * (DATA_COPIES * data + 6 * params + activations
                      + (block_length(config) * params if kept else 0))
    host = trainings * ((config.epochs + 1) * len(COLUMNS) + kept * params + 2 * params)
    return int(PROCESS_BYTES + (device + host) * item)


def machine_memory() -> int:
    """Bytes of this machine's physical memory."""
    return os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES")


def max_runs(config: Config) -> int:
    """The most runs of ``config`` (at least 1) whose ``memory_need`` fits ``MEMORY_SHARE`` of this machine's
    memory: how many runs of such configs one batch may hold."""
    have = MEMORY_SHARE * machine_memory()
    low, high = 1, 1
    while memory_need(config.replace(runs=high * 2, seed=0)) <= have and high < 2**40:
        high *= 2
    high *= 2
    while high - low > 1:  # memory_need grows with the runs
        middle = (low + high) // 2
        low, high = (middle, high) if memory_need(config.replace(runs=middle, seed=0)) <= have else (low, middle)
    return low


def check_memory(config: Config) -> None:
    """Refuse (``ConfigError``) an experiment whose ``memory_need`` exceeds ``MEMORY_SHARE`` of this
    machine's memory."""
    have = machine_memory()
    need = memory_need(config)
    if need > MEMORY_SHARE * have:
        smaller = "fewer or narrower layers, fewer samples, runs or epochs"
        if kind_of(config).kept_students(config):
            smaller += ", or a larger --align-every (0: keep none)"
        raise ConfigError(f"this config needs about {need / 2**30:.1f} GiB of memory and the machine has "
                          f"{have / 2**30:.1f} GiB: use {smaller}")


def _fits(chunk: dict, runs: int, expect: dict[str, tuple[int, ...]]) -> bool:
    """Whether a kept chunk holds exactly the arrays ``expect`` names, each of shape (runs, *expect[name])."""
    return set(chunk) == set(expect) and all(np.shape(chunk[k]) == (runs, *expect[k]) for k in expect)


CHUNK_KEY = re.compile(r"(?P<phase>.*?)runs-(?P<first>\d+)-(?P<size>\d+)")
"""The checkpoint key of a chunk of runs (``run_chunks``): an optional phase prefix, its first run, its size."""


def run_chunks(runs: int, epochs: int, work: Callable[[np.ndarray, Callable | None, Blocks | None], dict],
               expect: dict, on_progress=None, checkpoint=None) -> dict:
    """Apply ``work(index, progress, blocks)`` to run indices 1..R in chunks of ``chunk_runs()`` rounded up to
    a whole number per device (the last chunk padded by repeating its final index; only the genuine runs'
    results are kept) and concatenate the arrays it returns along axis 0.

    on_progress(n): called as run-epochs complete (R · ``epochs`` in total); ``work`` gets ``progress``,
        which takes the epochs its chunk advanced, or None.
    expect: name -> trailing shape (after the runs) of each array ``work`` returns.
    checkpoint: optional object with ``load(key) -> dict | None`` and ``save(key, dict)``; a chunk it
        already holds is not recomputed, so an interrupted experiment resumes where it stopped (one that
        does not fit ``expect``, kept by another version or damaged, is computed again). ``work`` gets the
        chunk's ``Blocks`` (None without a checkpoint) to hand to ``train_runs``: an interrupt keeps the
        blocks of epochs that the chunk finished in the chunk's place, marked ``PARTIAL``, and the chunk
        goes on from them.
    """
    chunk = chunk_size(runs)
    parts = []
    for first in range(1, runs + 1, chunk):
        index = np.arange(first, first + chunk)
        real = int(np.sum(index <= runs))
        key = f"runs-{first:06d}-{chunk}"
        done = checkpoint.load(key) if checkpoint else None
        partial = done if done is not None and PARTIAL in done else None
        if done is not None and not _fits(done, real, expect):
            done = None  # unfinished, or a kept chunk from another version or a damaged one: computed
        if done is None:
            progress = (lambda n, real=real: on_progress(n * real)) if on_progress else None
            blocks = Blocks(partial, lambda arrays, key=key, real=real: checkpoint.save(
                key, {**arrays, "trainings": np.asarray(real)})) if checkpoint else None
            done = {k: np.asarray(v)[:real] for k, v in work(np.minimum(index, runs), progress, blocks).items()}
            if checkpoint:
                checkpoint.save(key, done)  # in the place of the blocks kept so far
        elif on_progress:
            on_progress(real * epochs)
        parts.append(done)
    return {k: np.concatenate([p[k] for p in parts]) for k in parts[0]}


def kept_work(checkpoint) -> str:
    """What ``checkpoint`` (a ``store.Checkpoint``) holds of its experiment, for people: per phase, the
    trainings whose chunks finished and those an interrupt left part-way, with the epoch they stand at, e.g.
    ``trainings 1–20 finished; trainings 21–30 trained to epoch 138 of 500``; "" when it holds nothing."""
    phases: dict[str, list] = {}
    for key in checkpoint.keys():
        match, arrays = CHUNK_KEY.fullmatch(key), checkpoint.load(key)
        if match is None or not arrays:
            continue
        first = int(match["first"])
        if PARTIAL in arrays:
            last, stand = first + int(arrays["trainings"]) - 1, (int(arrays["epochs_done"]), int(arrays["epochs"]))
        else:
            last, stand = first + len(next(iter(arrays.values()))) - 1, None
        phases.setdefault(match["phase"].rstrip("-"), []).append((first, last, stand))
    parts = []
    for phase, chunks in phases.items():
        merged: list[list] = []
        for first, last, stand in sorted(chunks):
            if merged and stand is None and merged[-1][2] is None and merged[-1][1] + 1 == first:
                merged[-1][1] = last  # consecutive finished chunks read as one range
            else:
                merged.append([first, last, stand])
        text = "; ".join(f"{_runs(first, last)} " + ("finished" if stand is None else
                                                     f"trained to epoch {stand[0]} of {stand[1]}")
                         for first, last, stand in merged)
        parts.append(f"{phase} phase: {text}" if phase else text)
    return "; ".join(parts)


def _runs(first: int, last: int) -> str:
    return f"training {first}" if first == last else f"trainings {first}–{last}"


class Plan(NamedTuple):
    """Trainings that run as one batch through one compiled program, T rows: training i is set up from
    ``configs[cell[i]]`` (its draws and traced fields) with teacher seed ``teacher_seed[i]`` and run seed
    ``run_seed[i]``, and trains on labels with noise ``sigma[i]``. Every config has the same ``pack_key``."""

    configs: tuple[Config, ...]
    cell: np.ndarray
    teacher_seed: np.ndarray
    run_seed: np.ndarray
    sigma: np.ndarray


def _setup_rows(plan: Plan, pick: np.ndarray, cache: dict | None):
    """Teacher, problem, student and projection key data of the trainings ``pick`` (k,), stacked; with a
    ``cache``, a (teacher seed, run seed, perturbation) drawn once serves every training that shares it."""
    rows = [(int(plan.teacher_seed[i]), int(plan.run_seed[i]), plan.configs[plan.cell[i]].initial_permut) for i in pick]
    drawn = cache if cache is not None else {}
    new = [row for row in dict.fromkeys(rows) if row not in drawn]
    for permut in dict.fromkeys(row[2] for row in new):  # one set-up call per initial perturbation
        these = [row for row in new if row[2] == permut]
        config = plan.configs[0].replace(initial_permut=permut)
        got = setup_runs(config, np.array([row[0] for row in these]), np.array([row[1] for row in these]))
        drawn.update((row, jax.tree.map(lambda a, j=j: a[j], got)) for j, row in enumerate(these))
    return jax.tree.map(lambda *leaves: np.stack(leaves), *[drawn[row] for row in rows])


def train_plan(plan: Plan, keep: np.ndarray, on_progress=None, checkpoints=None,
               final_only: bool = False) -> dict[str, np.ndarray]:
    """Train every row of ``plan`` and return, per training (T, ...): the ``METRICS`` (T, E + 1), the
    ``DISTANCES`` at the epochs ``keep`` (K,) (T, E + 1; NaN elsewhere), ``teacher`` (T, P_teacher),
    ``student_init`` (T, P), ``diverged_at`` (T,) and the students at the epochs ``keep``, ``kept_theta``
    (T, K, P). With ``final_only`` the metrics and distances are those of epoch E (T,), ``stalled`` its mean
    over epochs 1..E, and no students are returned.

    Each config's rows are cut into chunks as that config alone would be (``run_chunks``), so that its
    numbers do not depend on the configs it trains beside: XLA's results can depend on a chunk's size in the
    last bits. ``checkpoints``: None, or one checkpoint per config (``run_chunks``)."""
    config = plan.configs[0]
    trainings = len(plan.cell)
    dtype = np.dtype(config.dtype)
    hyper = Hyper(*(np.empty(trainings, dtype) for _ in Hyper._fields))
    for c, cell in enumerate(plan.configs):
        rows = plan.cell == c
        for column, values in zip(hyper, hyper_of(cell, int(rows.sum()), plan.sigma[rows])):
            column[rows] = values
    draws = {(t, r, plan.configs[c].initial_permut) for t, r, c in zip(plan.teacher_seed, plan.run_seed, plan.cell)}
    cache = {} if len(draws) < trainings else None  # trainings that share their draws: draw each once
    compiling = []  # started by the first chunk that trains (none when a checkpoint holds every chunk)

    def work(pick, progress, blocks):
        if not compiling:
            compiling.append(compile_ahead(config, len(pick), keep_theta=len(keep) > 0))
        teacher, problem, student, keys = _setup_rows(plan, pick, cache)
        compiling[0].join()
        found = {name: np.full((len(pick), config.epochs + 1), np.nan, config.dtype) for name in DISTANCES}

        def measure(epochs, theta):  # runs while the next block trains; θ is NaN from a divergence on
            for name, values in distances(theta, problem.teacher[:, None], config.student_dims,
                                          config.align_budget).items():
                found[name][:, epochs] = round_down(values, found[name].dtype) if name == "l2_aligned_lower" else values

        metrics, diverged, _, kept = train_runs(config, jax.tree.map(lambda a: a[pick], hyper), problem, student,
                                                keys, progress, keep, measure, blocks)
        out = {**metrics, **found, "teacher": teacher, "student_init": student, "diverged_at": diverged}
        if final_only:
            stalled = metrics["stalled"][:, 1:].mean(axis=1) if config.epochs else metrics["stalled"][:, 0]
            return {**{name: out[name][:, -1] for name in COLUMNS}, "stalled": stalled,
                    **{name: out[name] for name in ("teacher", "student_init", "diverged_at")}}
        return {**out, "kept_theta": kept}

    students = num_params(config.student_dims)
    series = () if final_only else (config.epochs + 1,)
    expect = {**{name: series for name in COLUMNS}, "teacher": (num_params(config.teacher_dims),),
              "student_init": (students,), "diverged_at": ()}
    if not final_only:
        expect["kept_theta"] = (len(keep), students)
    out = {}
    for c in range(len(plan.configs)):
        rows = np.flatnonzero(plan.cell == c)
        part = run_chunks(len(rows), config.epochs,
                          lambda index, progress, blocks, rows=rows: work(rows[index - 1], progress, blocks),
                          expect, on_progress, checkpoints[c] if checkpoints else None)
        for name, values in part.items():
            out.setdefault(name, np.empty((trainings, *values.shape[1:]), values.dtype))[rows] = values
    return out


def run_experiment(config: Config, on_progress=None, checkpoint=None) -> Result:
    """The experiment of ``config``'s kind: the one pure entry point from a config to its result.
    ``on_progress(n)`` is called as run-epochs complete; ``checkpoint`` as in ``run_chunks``."""
    return compute(config, on_progress, checkpoint)
