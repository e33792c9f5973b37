"""The on-disk result store: one folder per finished config, no server.

Layout of ``OUT/<experiment>-<config hash>/``::

    config.json    every Config field (the folder name is the hash of exactly this and the numerics version)
    manifest.json  provenance (``provenance.manifest``): schema and numerics versions, package version and git
                   commit, JAX versions, backend and device, fast path, dtype, host, date
    metrics.csv    the tidy table (%.17g: exact). epoch: one row per run and epoch (run, epoch, l2,
                   train_loss, ..., l2_aligned, l2_normal_form; the last two only every align_every
                   epochs, nan elsewhere); noise: one row per level and run (level, sigma, run, final l2,
                   ..., stalled averaged over epochs, l2_aligned, l2_normal_form, diverged_at)
    runs.csv       epoch only: one row per run: run, seed, diverged_at (-1 = finished)
    params.npz     teacher after projection ((R, P_teacher), or (P_teacher,) for the noise experiment's
                   single teacher) and student_init (R, P_student)
    trajectory.npz epoch only: epochs (K,) and theta (R, K, P_student), the students every align_every
                   epochs
    theory.npz     written by ``l2rebound analyze``: the linear-response analysis (``theory.analyze``)
    *.svg, *.png   figures, named by ``Config.figure_stem()``

Which tables and arrays a kind writes is the kind's (``results``); this module writes and reads them for
every kind alike. CSV rather than Parquet: the tables are small (R·(E+1) rows), %.17g round-trips float64
exactly, and every tool reads it without another dependency. A result is built in a hidden temp folder
beside its final place and renamed into place in one step, so a folder that exists is complete; an
interrupted run leaves only a ``.tmp-*`` folder that is never read and is swept on the next save.
"""

from __future__ import annotations

import json
import os
import shutil
import tempfile
from pathlib import Path

import numpy as np

from l2rebound.config import Config
from l2rebound.provenance import SCHEMA_VERSION
from l2rebound.results import Result, kind_of


def result_dir(out: Path, config: Config) -> Path:
    """Where the result of ``config`` lives (whether or not it exists yet)."""
    return Path(out) / f"{config.experiment}-{config.config_hash()}"


def is_finished(folder: Path) -> bool:
    return (Path(folder) / "config.json").is_file()


def write_atomic(path: Path, write) -> Path:
    """Call ``write(tmp_path)`` for a temp file beside ``path``, then rename it onto ``path``, so a
    reader never sees a half-written file."""
    path = Path(path)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    os.close(fd)
    try:
        write(Path(tmp))
        os.chmod(tmp, 0o644)  # mkstemp makes it owner-only
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


def _save(out: Path, config: Config, write) -> Path:
    """Build a result folder for ``config`` with ``write(tmp_folder)``, then rename it into place (an
    existing folder for the same config is replaced). Returns the final folder."""
    final = result_dir(out, config)
    final.parent.mkdir(parents=True, exist_ok=True)
    for stale in final.parent.glob(f".tmp-{final.name}-*"):
        shutil.rmtree(stale, ignore_errors=True)
    tmp = Path(tempfile.mkdtemp(dir=final.parent, prefix=f".tmp-{final.name}-"))
    old = tmp.with_name(tmp.name + "-old")
    try:
        tmp.chmod(0o755)  # mkdtemp makes it owner-only; the result folder should read like the files in it
        write(tmp)
        (tmp / "config.json").write_text(json.dumps(config.to_dict(), indent=2) + "\n")  # last: marks completion
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


def save(out: Path, result: Result) -> Path:
    """Store a result atomically under ``out``; returns its folder."""

    def write(tmp: Path) -> None:
        for stem, columns in result.tables().items():
            _write_table(tmp / f"{stem}.csv", columns)
        for stem, arrays in result.arrays().items():
            np.savez(tmp / f"{stem}.npz", **arrays)
        if result.manifest is not None:
            (tmp / "manifest.json").write_text(json.dumps(result.manifest, indent=2) + "\n")

    return _save(out, result.config, write)


class Checkpoint:
    """Finished chunks of runs of an unfinished experiment, kept in ``OUT/.partial-<experiment>-<hash>/``
    so that the same command resumes after a crash or Ctrl-C instead of starting over. A chunk file is
    written atomically; the folder is removed once the result is stored."""

    def __init__(self, out: Path, config: Config):
        self.folder = Path(out) / f".partial-{result_dir(out, config).name}"

    def load(self, key: str) -> dict[str, np.ndarray] | None:
        path = self.folder / f"{key}.npz"
        if not path.is_file():
            return None
        with np.load(path) as arrays:
            return dict(arrays)

    def save(self, key: str, arrays: dict[str, np.ndarray]) -> None:
        self.folder.mkdir(parents=True, exist_ok=True)

        def write(tmp: Path) -> None:
            with open(tmp, "wb") as f:
                np.savez(f, **arrays)

        write_atomic(self.folder / f"{key}.npz", write)

    def count(self) -> int:
        return len(list(self.folder.glob("*.npz"))) if self.folder.is_dir() else 0

    def clear(self) -> None:
        shutil.rmtree(self.folder, ignore_errors=True)


def save_analysis(folder: Path, analysis: dict[str, np.ndarray]) -> Path:
    """Write ``theory.analyze``'s arrays into a finished result folder as ``theory.npz`` (atomically)."""

    def write(tmp: Path) -> None:
        with open(tmp, "wb") as f:
            np.savez(f, **analysis)

    return write_atomic(Path(folder) / "theory.npz", write)


def load_analysis(folder: Path) -> dict[str, np.ndarray] | None:
    """The stored analysis of a result folder, or None if it has none yet."""
    path = Path(folder) / "theory.npz"
    if not path.is_file():
        return None
    with np.load(path) as arrays:
        return dict(arrays)


def load_config(folder: Path) -> Config:
    return Config.from_dict(json.loads((Path(folder) / "config.json").read_text()))


class StoreError(ValueError):
    """A result folder that cannot be read back (damaged, or written by another version)."""


def load_manifest(folder: Path) -> dict | None:
    """The result's provenance, or None for a folder written before results carried one (schema 1)."""
    path = Path(folder) / "manifest.json"
    return json.loads(path.read_text()) if path.is_file() else None


def load(folder: Path) -> Result:
    """Read back what ``save`` wrote; raises ``StoreError`` naming the folder if a file is missing or
    damaged, or if a newer version of l2rebound wrote it."""
    folder = Path(folder)
    try:
        manifest = load_manifest(folder)
        schema = 1 if manifest is None else manifest.get("schema")
        if not isinstance(schema, int) or schema > SCHEMA_VERSION:
            raise StoreError(f"{folder} was written with result schema {schema!r}; this version of l2rebound reads "
                             f"schemas 1 to {SCHEMA_VERSION}: upgrade l2rebound to read it")
        config = load_config(folder)
        kind = kind_of(config)
        tables = {stem: _read_table(folder / f"{stem}.csv") for stem in kind.stored_tables}
        arrays = {}
        for stem in kind.stored_arrays:
            with np.load(folder / f"{stem}.npz") as stored:
                arrays[stem] = dict(stored)
        return kind.from_files(config, tables, arrays, manifest)
    except StoreError:
        raise
    except (OSError, KeyError, ValueError, IndexError) as error:
        raise StoreError(f"{folder} cannot be read back ({type(error).__name__}: {error}); it is damaged or from "
                         "another version of l2rebound: run the experiment again with --force") from None
