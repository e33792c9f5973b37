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

from collections.abc import Callable
from pathlib import Path

from l2rebound import store
from l2rebound.config import Config, build
from l2rebound.results import Result, compute, kind_of


def progress_bar(total: int, enabled: bool = True, unit: str = "run-epoch"):
    """A tqdm bar over ``total`` units that appears after a second (nothing for quick work)."""
    from tqdm import tqdm

    return tqdm(total=total, unit=unit, unit_scale=True, delay=1.0, disable=not enabled, dynamic_ncols=True)


def execute(config: Config, out: Path, force: bool = False, progress: bool = True,
            say: Callable[[str], None] | None = None) -> tuple[Path, Result]:
    """The result of ``config`` in the store under ``out``: the stored one (unless ``force``), else computed,
    resuming from the chunks of runs an interrupted call kept, and stored. Returns its folder and the
    result; ``say`` gets a line for each of these decisions."""
    say = say or (lambda line: None)
    folder = store.result_dir(out, config)
    if store.is_finished(folder) and not force:
        say(f"reusing the stored result in {folder} (same config; --force retrains)")
        return folder, store.load(folder)
    trainings = kind_of(config).trainings(config)
    say(f"{config.experiment} experiment {config.config_hash()}: {trainings} trainings x {config.epochs} epochs, "
        f"{config.describe()}")
    checkpoint = store.Checkpoint(out, config)
    if force:
        checkpoint.clear()
    elif checkpoint.count():
        say(f"resuming: {checkpoint.count()} finished chunk(s) of runs found in {checkpoint.folder}")
    with progress_bar(trainings * config.epochs, progress) as bar:
        result = compute(config, on_progress=bar.update, checkpoint=checkpoint)
    folder = store.save(out, result)
    checkpoint.clear()
    say(f"stored in {folder}")
    return folder, result


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
    with progress_bar(kind_of(config).trainings(config) * config.epochs, progress) as bar:
        return compute(config, on_progress=bar.update)


def load(path: str | Path) -> Result:
    """The result stored in the folder ``path`` (``OUT/<experiment>-<hash>``). Raises ``store.StoreError``
    when it is not a finished result folder or cannot be read back."""
    folder = Path(path)
    if not store.is_finished(folder):
        raise store.StoreError(f"{folder} is not a finished result folder (no config.json)")
    return store.load(folder)
