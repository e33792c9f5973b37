"""The library's entry points: run an experiment, or load a stored one, and get a ``Result``.

>>> import l2rebound
>>> result = l2rebound.run(preset="A", runs=2, epochs=20, dataset_size=200, progress=False)
>>> result
EpochResult(noise_sigma=0, initial_permut=0.01, train=drr, epochs=20, runs=2, dataset_size=200; 2 trainings x 20 epochs)
>>> table = result.frame()
>>> table.columns.tolist()[:6]
['run', 'epoch', 'l2', 'train_loss', 'test_loss', 'clean_test_loss']
>>> len(table)  # one row per run and epoch 0..20
42
>>> bool(table.l2.iloc[-1] > 0)
True

Nothing global changes: JAX's settings are scoped to each call, and the engine is imported at the first run.
"""

from __future__ import annotations

import sys
import tempfile
import threading
import time
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import TYPE_CHECKING, Self

from l2rebound import registry, store
from l2rebound.config import Config, ConfigError, build
from l2rebound.results import Result, compute, kind_of

if TYPE_CHECKING:
    from l2rebound.sweeps import SweepResult


def progress_bar(total: int, enabled: bool = True, unit: str = "run-epoch"):
    """Progress over ``total`` units on stderr, shown as suits where stderr goes: a tqdm bar on a terminal,
    a plain line every ``LogProgress.interval`` seconds into a file or pipe (a log); nothing for work done
    within ``LogProgress.delay`` seconds, nothing at all unless ``enabled``. Use it as a context manager and
    call ``update(n)`` as ``n`` more units are done. Inside the context a thread refreshes it every
    ``BEAT`` seconds, so that the elapsed time moves through a long stretch that reports no units (set-up,
    compiling, one long block of epochs)."""
    if enabled and not _is_terminal(sys.stderr):
        return LogProgress(total, unit, beat=BEAT)
    from tqdm import tqdm

    class Bar(tqdm):
        heartbeat: Heartbeat | None = None

        def __enter__(self) -> Self:
            if not self.disable:
                self.heartbeat = Heartbeat(self.tick, BEAT)
            return super().__enter__()

        def __exit__(self, *exc) -> None:
            if self.heartbeat:
                self.heartbeat.stop()
            super().__exit__(*exc)

        def tick(self) -> None:
            if self._time() >= self.start_t + self.delay:  # the bar's own delay, as ``update`` keeps it
                self.refresh()

    return Bar(total=total, unit=unit, unit_scale=True, delay=LogProgress.delay, disable=not enabled,
               dynamic_ncols=True)


BEAT = 1.0
"""Seconds between two refreshes of a progress display by its ``Heartbeat``."""


class Heartbeat:
    """Calls ``tick()`` every ``period`` seconds in a daemon thread until ``stop()``."""

    def __init__(self, tick: Callable[[], None], period: float):
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, args=(tick, period), name="l2rebound-progress",
                                        daemon=True)
        self._thread.start()

    def _run(self, tick: Callable[[], None], period: float) -> None:
        while not self._stop.wait(period):
            tick()

    def stop(self) -> None:
        self._stop.set()
        self._thread.join()


def _is_terminal(stream) -> bool:
    isatty = getattr(stream, "isatty", None)
    return bool(isatty and isatty())


class LogProgress:
    """Progress as plain lines for a log, e.g. ``l2rebound: 1234/5000 run-epochs (25%), 12 s elapsed, ~36 s
    left``: the first once ``delay`` seconds have passed, then at most one every ``interval`` seconds, and a
    last one with the total time when done (if any was written). ``clock`` gives seconds (monotonic).
    ``tick()`` writes a line when one is due though no unit is done (elapsed time only, until the first
    unit gives an estimate); with ``beat`` a ``Heartbeat`` calls it every ``beat`` seconds inside the
    context."""

    delay = 1.0
    interval = 10.0

    def __init__(self, total: int, unit: str = "run-epoch", stream=None, clock: Callable[[], float] = time.monotonic,
                 beat: float | None = None):
        self.total, self.unit, self.stream, self.clock, self.beat = total, unit, stream, clock, beat
        self.done, self.start = 0, clock()
        self.shown_at: float | None = None  # when the last line was written, None before the first
        self.shown = 0  # the count it showed
        self.lock = threading.Lock()  # the heartbeat's thread and the caller's
        self.heartbeat: Heartbeat | None = None

    def __enter__(self) -> Self:
        if self.beat:
            self.heartbeat = Heartbeat(self.tick, self.beat)
        return self

    def __exit__(self, *exc) -> None:
        if self.heartbeat:
            self.heartbeat.stop()
        self.close()

    def update(self, n: int = 1) -> None:
        with self.lock:
            self.done += n
            now = self.clock()
            due = self.start + self.delay if self.shown_at is None else self.shown_at + self.interval
            if now >= due:
                left = (now - self.start) * (self.total - self.done) / self.done if self.done else None
                self._write(now, f", ~{_duration(left)} left" if left is not None else "")

    def tick(self) -> None:
        self.update(0)

    def close(self) -> None:
        """The closing line, if the progress was shown at all and has moved since."""
        with self.lock:
            if self.shown_at is not None and self.shown != self.done:
                self._write(self.clock(), "")

    def _write(self, now: float, tail: str) -> None:
        share = f" ({self.done / self.total:.0%})" if self.total else ""
        print(f"l2rebound: {self.done}/{self.total} {self.unit}s{share}, {_duration(now - self.start)} elapsed{tail}",
              file=self.stream or sys.stderr, flush=True)
        self.shown_at, self.shown = now, self.done


def _duration(seconds: float) -> str:
    """Seconds for people: ``12 s``, ``5 min``, ``2 h 05 min``."""
    seconds = round(seconds)
    if seconds < 120:
        return f"{seconds} s"
    if seconds < 7200:
        return f"{round(seconds / 60)} min"
    return f"{seconds // 3600} h {seconds % 3600 // 60:02d} min"


def execute(config: Config, out: Path, force: bool = False, progress: bool = True,
            say: Callable[[str], None] | None = None) -> tuple[Path, Result]:
    """The result of ``config`` in the store under ``out``: the stored one (unless ``force``), else computed,
    resuming from the chunks of runs an interrupted call kept, and stored. Returns its folder and the
    result; ``say`` gets a line for each of these decisions.

    Before any training it checks that ``out`` can take the result (``store.check_writable``). It holds the
    result's lock from the reuse check to the final save, so that commands sharing ``out`` compute a config
    once: a second one waits and then reuses what the first stored, ``force`` included (the result is new).
    A failed write ends in a ``StoreWriteError`` saying where the finished chunks of runs are kept."""
    say = say or (lambda line: None)
    out = Path(out)
    folder = store.result_dir(out, config)
    present = store.finished_mark(folder)  # the result stored before this call, if any
    if force or present is None:  # before anything is made or trained
        from l2rebound.experiments import check_memory  # the engine's estimate (loads JAX)

        check_memory(config)
        store.check_writable(out, config)
    waited = []

    def waiting() -> None:
        waited.append(True)
        say(store.waiting_line(out, config))

    with store.lock(out, config, on_wait=waiting):
        stored = store.finished_mark(folder)
        if stored is not None and (not force or stored != present):
            say(f"reusing the result that another command stored in {folder} while this one waited"
                if stored != present else f"reusing the stored result in {folder} (same config; --force retrains)")
            return folder, store.load(folder)
        if waited:
            store.check_writable(out, config)  # the other command may have used the room
        return folder, _compute_and_store(config, out, force, progress, say)


SLOW_ALIGNMENT_WIDTH = 200
"""Above this hidden width a command says, before training, how many certified alignments its kept students
will cost (each is a search over the units' relabellings, whose bounds grow about as the cube of the width)."""


def _compute_and_store(config: Config, out: Path, force: bool, progress: bool, say: Callable[[str], None]) -> Result:
    """Compute ``config`` (resuming from its kept chunks of runs unless ``force``) and store it under ``out``;
    the caller holds the result's lock."""
    kind = kind_of(config)
    trainings, total = kind.trainings(config), kind.run_epochs(config)
    phases = "" if total == trainings * config.epochs else f" ({total} run-epochs with its other phases)"
    say(f"{config.experiment} experiment {config.config_hash()}: {trainings} trainings x {config.epochs} epochs"
        f"{phases}, {config.describe()}")
    aligned = trainings * kind.kept_students(config)
    if aligned and max(config.student_dims[1:-1]) > SLOW_ALIGNMENT_WIDTH:
        say(f"note: {aligned} certified alignments of hidden widths {','.join(map(str, config.student_dims[1:-1]))}; "
            "their cost grows about as the cube of the width (minutes each from about 1000 units): --align-every 0 "
            "skips them")
    checkpoint = store.Checkpoint(out, config)
    if force:
        checkpoint.clear()
    elif checkpoint.count():
        from l2rebound.experiments import kept_work  # the engine, which trains next

        say(f"resuming from {checkpoint.folder}: {kept_work(checkpoint)}")
    with progress_bar(total, progress) as bar:
        result = compute(config, on_progress=bar.update, checkpoint=checkpoint)
    try:
        folder = store.save(out, result)
    except store.StoreWriteError as error:  # every chunk is in the checkpoint: the same command resumes
        raise store.StoreWriteError(f"{error}; {checkpoint.kept()}") from None
    checkpoint.clear()
    say(f"stored in {folder}")
    return result


def run(config: Config | None = None, *, preset: str | None = None, out: str | Path | None = None,
        force: bool = False, progress: bool = True, **fields) -> Result:
    """Run the experiment of ``config`` (or of the preset named ``preset``, or the defaults) with ``fields``
    changed, e.g. ``run(preset="A", runs=3)``.

    out: a store root. Given, a result stored there for the same config is returned without training
        (unless ``force``), an interrupted run resumes, and a new result is stored there. None: computed in
        memory (``Result.save`` stores it later).
    progress: a progress bar on stderr.
    Raises ``ConfigError`` for a bad field value (naming the CLI option).
    """
    config = build(config, preset, **fields)
    if out is not None:
        return execute(config, Path(out), force, progress)[1]
    with progress_bar(kind_of(config).run_epochs(config), progress) as bar:
        return compute(config, on_progress=bar.update)


def execute_sweep(base: Config, axes: list, zipped=(), *, out: str | Path = "results", engine: str = "local",
                  workers: int | None = None, scheduler: str | None = None, force: bool = False, progress: bool = True,
                  yes: bool = False, stats=None, facet=(),
                  say: Callable[[str], None] | None = None) -> tuple[Path, SweepResult]:
    """Run the sweep of ``base`` over ``axes`` (``grid.Axis``; ``zipped`` pairs of their fields vary together)
    and store it: every cell as an ordinary result under ``out`` (a stored cell is reused unless ``force``),
    epoch cells that differ only in traced fields trained by one compiled program, on ``engine``
    (``engines.run_pieces``); then the sweep's folder with the figures of ``stats`` split by the ``facet``
    fields. Returns the folder and the ``SweepResult``. Bad input raises ``ConfigError`` before anything is
    written."""
    from l2rebound import engines
    from l2rebound.grid import cell_configs, zip_fields
    from l2rebound.sweeps import SweepResult, plotted_axes, stats_of

    say = say or (lambda line: None)
    out = Path(out)
    if not registry.kind(base.experiment).sweepable:
        swept = ", ".join(registry.kinds_with("sweepable"))
        raise ConfigError(f"a sweep runs experiments with curves over epochs ({swept}), not the {base.experiment} "
                          "experiment")
    if engine not in engines.ENGINES:
        raise ConfigError(f"--engine must be one of {', '.join(engines.ENGINES)} (got {engine!r})")
    allowed, default = stats_of(base)
    stats = tuple(stats or default)
    if not set(stats) <= set(allowed):
        raise ConfigError(f"--stat must list statistics among {', '.join(allowed)} (got {','.join(stats)})")
    axes, zipped = list(axes), zip_fields(zipped)
    cells = cell_configs(base, axes, zipped, yes)
    configs = [config for _, config in cells]
    plotted_axes(SweepResult(base, tuple(axes), tuple(zipped), (), (), {}), facet)  # refused before training
    for config in dict.fromkeys(configs):
        store.check_writable(out, config)
    todo = [c for c in dict.fromkeys(configs) if force or not store.is_finished(store.result_dir(out, c))]
    parts = 1 if engine == "local" else workers or 2 if not scheduler else 8
    if todo:
        from l2rebound.experiments import max_runs

        batches = engines.pieces(todo, parts, max_runs)
    else:
        batches = []
    say(f"sweep of {len(configs)} cells: {len(configs) - len(todo)} stored, {len(todo)} to train in {len(batches)} "
        f"batch(es) (one compiled program per group of cells that differ only in traced fields)")
    if todo:
        with progress_bar(sum(map(engines.run_epochs, todo)), progress) as bar:
            engines.run_pieces(batches, out, force, engine, workers, scheduler, bar.update, say)
    results = [store.load(store.result_dir(out, c)) for c in configs]
    result = SweepResult.from_results(base, axes, zipped, [cell for cell, _ in cells], results, stats, facet)
    folder = result.save(out)
    say(f"stored in {folder}")
    return folder, result


def sweep(config: Config | None = None, grid: dict | None = None, *, preset: str | None = None, zip=(),
          engine: str = "local", workers: int | None = None, scheduler: str | None = None,
          out: str | Path | None = None, force: bool = False, progress: bool = True, yes: bool = False, stats=None,
          facet=(), storage: str | None = None, **fields) -> SweepResult:
    """Sweep the config (``config``, or the preset ``preset``, with ``fields`` changed) over ``grid``, a dict
    from field names (``"learning_rate"`` or ``"learning-rate"``) to lists of values, e.g.
    ``sweep(preset="A", grid={"learning_rate": [1e-3, 1e-2], "alpha": [1e-5, 1e-4]})``. ``zip``: pairs of
    fields whose lists vary together. ``engine`` ``"dask"`` trains the cells on a local cluster of ``workers``
    processes or on the cluster at ``scheduler``. ``stats`` and ``facet`` choose the figures
    (``sweeps.stat_figure``). ``storage``: how every cell is stored (``Config.storage``; None: the sweep's
    ``sweeps.CELL_STORAGE``, whatever the config's; "full" keeps every kept student). Returns the
    ``SweepResult`` (``.frame()``: one row per cell and run).

    out: a store root, as for ``run``. Given, every cell is stored there as an ordinary result (a stored cell is
        reused, so an interrupted sweep resumes) and the sweep's folder ``out/sweep-<hash>`` beside them. None:
        computed in memory, as ``run`` computes, through a temporary store that is removed before it returns
        (``SweepResult.save`` stores the sweep's folder later, without its cells); a cluster at ``scheduler``
        needs ``out``, a store its workers see."""
    from l2rebound.grid import make_axis
    from l2rebound.sweeps import CELL_STORAGE

    if not grid:
        raise ConfigError("sweep needs a grid: {field: [values, ...], ...}")
    if not isinstance(grid, Mapping):
        raise ConfigError(f"sweep's grid is a dict {{field: [values, ...], ...}}, not {type(grid).__name__}")
    axes = [make_axis(field, values) for field, values in grid.items()]
    base = build(config, preset, storage=CELL_STORAGE if storage is None else storage, **fields)
    options = dict(engine=engine, workers=workers, scheduler=scheduler, force=force, progress=progress, yes=yes,
                   stats=stats, facet=facet)
    if out is not None:
        return execute_sweep(base, axes, list(zip), out=out, **options)[1]
    if scheduler:
        raise ConfigError("a sweep on the cluster at scheduler= needs out=: a store that its workers see at the same "
                          "path")
    with tempfile.TemporaryDirectory(prefix="l2rebound-sweep-") as store_root:
        return execute_sweep(base, axes, list(zip), out=store_root, **options)[1]


def load(path: str | Path) -> Result:
    """The result stored in the folder ``path`` (``OUT/<experiment>-<hash>``). Raises ``store.StoreError``
    when it is not a finished result folder or cannot be read back."""
    folder = Path(path)
    store.require_finished(folder)
    return store.load(folder)
