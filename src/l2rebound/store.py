"""The on-disk result store: one folder per finished config, no server.

Layout of ``OUT/<experiment>-<config hash>/``::

    config.json    every Config field (the folder name is the hash of exactly this)
    metrics.csv    tidy table, one row per run and epoch: run, epoch, l2, train_loss, ... (%.17g: exact)
    runs.csv       one row per run: run, seed, diverged_at (-1 = finished)
    params.npz     teacher (R, P_teacher) after projection, student_init (R, P_student)
    *.svg, *.png   figures, named by ``Config.figure_stem()``

CSV rather than Parquet: the tables are small (R·(E+1) rows), %.17g round-trips float64 exactly, and
every tool reads it without another dependency. A result is built in a hidden temp folder beside its
final place and renamed into place in one step, so a folder that exists is complete; an interrupted run
leaves only a ``.tmp-*`` folder that is never read and is swept on the next save.
"""

from __future__ import annotations

import json
import os
import shutil
import tempfile
from pathlib import Path

import numpy as np

from l2rebound.config import Config
from l2rebound.experiments import EpochResult
from l2rebound.train import METRICS


def result_dir(out: Path, config: Config) -> Path:
    """Where the result of ``config`` lives (whether or not it exists yet)."""
    return Path(out) / f"{config.experiment}-{config.config_hash()}"


def is_finished(folder: Path) -> bool:
    return (Path(folder) / "config.json").is_file()


def write_atomic(path: Path, write) -> Path:
    """Call ``write(tmp_path)`` for a temp file beside ``path``, then rename it onto ``path``."""
    path = Path(path)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    os.close(fd)
    try:
        write(Path(tmp))
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    return path


def _write_table(path: Path, columns: dict[str, np.ndarray]) -> None:
    data = np.column_stack([np.asarray(v, dtype=float) for v in columns.values()])
    formats = ["%d" if np.issubdtype(np.asarray(v).dtype, np.integer) else "%.17g" for v in columns.values()]
    np.savetxt(path, data, fmt=formats, delimiter=",", header=",".join(columns), comments="")


def _read_table(path: Path) -> dict[str, np.ndarray]:
    with open(path) as f:
        names = f.readline().strip().split(",")
    data = np.loadtxt(path, delimiter=",", skiprows=1, ndmin=2)
    return {name: data[:, i] for i, name in enumerate(names)}


def save_epoch(out: Path, result: EpochResult) -> Path:
    """Store an epoch-experiment result atomically; replaces an existing folder for the same config."""
    config = result.config
    final = result_dir(out, config)
    final.parent.mkdir(parents=True, exist_ok=True)
    for stale in final.parent.glob(f".tmp-{final.name}-*"):
        shutil.rmtree(stale, ignore_errors=True)
    tmp = Path(tempfile.mkdtemp(dir=final.parent, prefix=f".tmp-{final.name}-"))
    old = tmp.with_name(tmp.name + "-old")
    try:
        tmp.chmod(0o755)  # mkdtemp makes it owner-only; the result folder should read like the files in it
        runs, epochs = result.metrics["l2"].shape
        run_index = np.arange(1, runs + 1)
        _write_table(tmp / "metrics.csv", {
            "run": np.repeat(run_index, epochs), "epoch": np.tile(np.arange(epochs), runs),
            **{name: result.metrics[name].reshape(-1) for name in METRICS},
        })
        _write_table(tmp / "runs.csv", {"run": run_index, "seed": config.seed + run_index,
                                        "diverged_at": result.diverged_at.astype(int)})
        np.savez(tmp / "params.npz", teacher=result.teacher, student_init=result.student_init)
        (tmp / "config.json").write_text(json.dumps(config.to_dict(), indent=2) + "\n")
        if final.exists():  # move the old result aside in one step (rmtree in place could be cut off half-way)
            os.rename(final, old)
        os.rename(tmp, final)
    except BaseException:
        if old.exists() and not final.exists():
            os.rename(old, final)
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    shutil.rmtree(old, ignore_errors=True)  # a ``.tmp-*`` name: if this is cut off, the next save sweeps it
    return final


def load_config(folder: Path) -> Config:
    return Config.from_dict(json.loads((Path(folder) / "config.json").read_text()))


def load_epoch(folder: Path) -> EpochResult:
    """Read back what ``save_epoch`` wrote."""
    folder = Path(folder)
    config = load_config(folder)
    table = _read_table(folder / "metrics.csv")
    runs = _read_table(folder / "runs.csv")
    shape = (len(runs["run"]), config.epochs + 1)
    with np.load(folder / "params.npz") as params:
        teacher, student = params["teacher"], params["student_init"]
    return EpochResult(config, {name: table[name].reshape(shape) for name in METRICS}, teacher, student,
                       runs["diverged_at"].astype(int))
