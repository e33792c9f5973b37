"""The on-disk result store: one folder per finished config, no server.

Layout of ``OUT/<experiment>-<config hash>/``::

    config.json    every Config field (``Config.to_dict``: a field added later is left out at its default; the
                   folder name is the hash of exactly this and the numerics version)
    manifest.json  provenance (``provenance.manifest``): schema and numerics versions, package version and git
                   commit, JAX versions, backend and device, fast path, dtype, host, date
    metrics.csv    the tidy table (%.17g: exact; ``metrics.parquet`` in the compact form, below). epoch: one row
                   per run and epoch (run, epoch, l2, train_loss, ..., l2_aligned, l2_aligned_lower,
                   l2_normal_form; the last three only every align_every epochs, nan elsewhere); noise: one
                   row per level and run (level, sigma, run, final l2, ..., stalled averaged over epochs,
                   l2_aligned, l2_aligned_lower, l2_normal_form, diverged_at). Folders written before
                   l2_aligned_lower existed lack it: it reads back as nan
    runs.csv       epoch only: one row per run: run, seed, diverged_at (-1 = finished)
    params.npz     teacher after projection ((R, P_teacher), or (P_teacher,) for the noise experiment's
                   single teacher) and student_init (R, P_student)
    trajectory.npz epoch only: epochs (K,) and theta (R, K, P_student), the students every align_every
                   epochs (the last alone in the compact form: ``results.stored_students``)
    theory.npz     written by ``l2rebound analyze``: the linear-response analysis (``theory.analyze``)
    *.svg, *.png   figures, named by ``Config.figure_stem()``

Which tables and arrays a kind writes is the kind's (its result type's ``table_specs`` and ``array_shapes``,
found through ``registry``); this module writes and reads them for every kind alike, in the form that the
config's ``storage`` names. full: CSV tables, which %.17g round-trips exactly and every tool reads without
another dependency, and plain ``.npz``. compact (a sweep's cells by default): each table as ``<stem>.parquet``
(zstd, doubles split by byte, integers as int64: the same values bit for bit) and the arrays compressed
(``np.savez_compressed``), so that thousands of cells fit a disk. A folder records its form in its
``config.json``; one without ``storage`` is full, as every folder written before the compact form existed.

A result is built in a hidden temp folder beside its final place and renamed into place in one step, so a
folder that exists is complete; an interrupted run leaves only a ``.tmp-*`` folder that is never read and is
swept on the next save once the process named in it has ended.

Several commands may share one store root: each result has its lock, ``OUT/.lock-<experiment>-<hash>``
(``lock``), held while it is computed and stored, so that the same config is computed once and a second
command waits for the first and reuses its result. ``check_writable`` tells before any training whether the
root can take a result; every failure to read or write the store is a ``StoreError`` naming the file and
what to do.
"""

from __future__ import annotations

import contextlib
import errno
import fcntl
import json
import os
import shutil
import tempfile
import threading
import zipfile
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

from l2rebound import registry
from l2rebound.config import Config
from l2rebound.layout import num_params
from l2rebound.provenance import SCHEMA_VERSION, schema_of

if TYPE_CHECKING:
    from l2rebound.results import Result


class StoreError(ValueError):
    """A result folder that cannot be read back (damaged, or written by another version), or a store that
    cannot take a result (``StoreWriteError``)."""


class StoreWriteError(StoreError):
    """The store cannot take a result: its root is not writable, its disk is (nearly) full, or a write failed."""


READ_ERRORS = (OSError, ValueError, KeyError, IndexError, TypeError, EOFError, zipfile.BadZipFile)
"""What reading a damaged or foreign file raises (``np.load`` of a cut-short ``.npz`` raises ``BadZipFile`` or
``EOFError``, garbled text ``ValueError``)."""


def result_dir(out: Path, config: Config) -> Path:
    """Where the result of ``config`` lives (whether or not it exists yet)."""
    return Path(out) / f"{config.experiment}-{config.config_hash()}"


def is_finished(folder: Path) -> bool:
    return (Path(folder) / "config.json").is_file()


def finished_mark(folder: Path) -> tuple[int, int, int] | None:
    """Which stored result sits in ``folder`` (device, inode and modification time in ns of its
    ``config.json``), None when there is none: a result stored anew has another mark."""
    try:
        info = (Path(folder) / "config.json").stat()
    except OSError:
        return None
    return info.st_dev, info.st_ino, info.st_mtime_ns


# ---- room for a result ----------------------------------------------------------------------------------

CSV_BYTES_PER_VALUE = 25
"""Bytes one table value takes as CSV text, at most: 24 characters of ``%.17g`` (sign, 17 digits, point,
exponent) and a separator."""
PACKED_BYTES_PER_VALUE = 9
"""Bytes one value takes in a Parquet table or a compressed array, at most: its 8 bytes, which compression may
fail to shrink, and room for the page and block headers around them."""
ENTRY_BYTES = 2**10
"""Bytes that a table's column or an array takes besides its values, at most: its name, schema, statistics and
headers."""
FIGURE_BYTES = 2**20
"""Bytes kept free for a result's figures (an SVG and a PNG of each view take a few hundred kB)."""


METADATA_BYTES = 2**14
"""Room for a result's ``config.json`` and ``manifest.json`` (each a few kB)."""


def stored_size(config: Config) -> int:
    """Bytes that computing and storing ``config``'s result takes on disk at its peak, estimated from above:
    the tables and arrays in the config's form (``storage``), the figures and the metadata, plus the finished
    chunks of runs, which hold what the full form stores, as float64, until the result is stored."""
    kind = registry.kind(config.experiment).result_type()
    tables, arrays = kind.stored_values(config)
    entries = (sum(len(table.columns) for table in kind.table_specs(config).values())
               + sum(len(files) for files in kind.array_shapes(config).values()))
    data = ((tables + arrays) * PACKED_BYTES_PER_VALUE if config.storage == "compact"
            else tables * CSV_BYTES_PER_VALUE + arrays * 8)
    chunks = sum(kind.stored_values(config.replace(storage="full"))) * 8
    return data + entries * ENTRY_BYTES + FIGURE_BYTES + METADATA_BYTES + chunks


def _size(count: float) -> str:
    """A byte count for people (powers of 1000): ``512 bytes``, ``1.5 MB``."""
    if count < 1000:
        return f"{count:.0f} bytes"
    for _unit in ("kB", "MB", "GB", "TB"):
        count /= 1000
        if count < 1000:
            break
    return f"{count:.3g} {_unit}"


def writable(folder: Path) -> bool:
    """Whether this process may create files in the existing ``folder``, as the OS decides for its effective
    user (false on a read-only file system, even for root)."""
    return os.access(folder, os.W_OK | os.X_OK, effective_ids=os.access in os.supports_effective_ids)


def check_writable(out: Path, *configs: Config) -> None:
    """Raise ``StoreWriteError`` unless the store root ``out`` can take the results of ``configs`` (one or
    more, stored one after the other): ``out``, or the nearest folder above it that exists (where ``out``
    would be made), is a writable folder whose disk has their ``stored_size`` bytes free. Writes nothing: it is
    asked before training, so that a store that cannot take the results costs no work."""
    out = Path(out)
    base = next(p for p in (out.absolute(), *out.absolute().parents) if p.exists())
    if not base.is_dir():
        raise StoreWriteError(f"cannot store results in {out}: {base} is a file, not a folder; choose another "
                              "output folder (--out)")
    if not writable(base):
        raise StoreWriteError(f"cannot store results in {out}: {base} is not writable; make it writable or choose "
                              "another output folder (--out)")
    need, free = sum(stored_size(config) for config in configs), shutil.disk_usage(base).free
    if need > free:
        what = "this result needs" if len(configs) == 1 else f"these {len(configs)} results need"
        raise StoreWriteError(f"cannot store results in {out}: {what} about {_size(need)} on disk and "
                              f"{base} has {_size(free)} free; free space there, choose another output folder "
                              "(--out), or ask for fewer runs or epochs (or a larger --align-every)")


# ---- one command at a time per result ------------------------------------------------------------------

_HELD = threading.local()
"""The lock files this thread holds: ``lock`` is re-entrant within a thread (``execute`` holds a result's
lock while ``save``, which takes it too, stores it); threads of one process exclude each other like
processes."""

UNLOCKABLE = (errno.EACCES, errno.EPERM, errno.EROFS, errno.ENOLCK, errno.EOPNOTSUPP, errno.ENOSYS)
"""Why a lock file cannot be made or locked: a read-only store (no command can change it, so there is nothing
to guard) or a file system without ``flock``."""


def lock_path(out: Path, config: Config) -> Path:
    """The lock file of ``config``'s result in the store root ``out``; it exists only while held."""
    return Path(out) / f".lock-{result_dir(out, config).name}"


def waiting_line(out: Path, config: Config) -> str:
    """What a command says when it waits for the lock of ``config``'s result under ``out``."""
    return (f"waiting for another l2rebound command that is computing or storing this result "
            f"({lock_path(out, config)})")


@contextlib.contextmanager
def lock(out: Path, config: Config, on_wait: Callable[[], None] | None = None) -> Iterator[None]:
    """Hold the lock of ``config``'s result in the store root ``out`` (made if missing): one command at a
    time computes, stores or replaces it, others wait. ``on_wait()`` is called once if another process holds
    it. On a read-only store or a file system without ``flock`` nothing is locked."""
    path = lock_path(out, config)
    key = os.path.abspath(path)  # however the caller spells the folder: a thread never waits for itself
    held = _HELD.__dict__.setdefault("paths", set())
    if key in held:
        yield
        return
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        fd = _acquire(path, on_wait)
    except OSError as error:
        if error.errno not in UNLOCKABLE:
            raise
        fd = None
    held.add(key)
    try:
        yield
    finally:
        held.discard(key)
        if fd is not None:
            path.unlink(missing_ok=True)  # while still locked: a waiter on this file finds it gone and retries
            os.close(fd)


def _acquire(path: Path, on_wait: Callable[[], None] | None) -> int:
    """An open descriptor of the lock file ``path`` holding its exclusive ``flock``, after waiting for the
    holder if there is one. A holder removes the file before it lets go, so a lock won on a file that is gone
    or replaced by then is let go and taken anew on the current file."""
    while True:
        fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o644)
        try:
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                if on_wait:
                    on_wait()
                    on_wait = None
                fcntl.flock(fd, fcntl.LOCK_EX)
            if _same_file(fd, path):
                return fd
        except BaseException:
            os.close(fd)
            raise
        os.close(fd)


def _same_file(fd: int, path: Path) -> bool:
    try:
        current = os.stat(path)
    except FileNotFoundError:
        return False
    mine = os.fstat(fd)
    return (current.st_dev, current.st_ino) == (mine.st_dev, mine.st_ino)


# ---- writing ------------------------------------------------------------------------------------------

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


def _is_integer(values) -> bool:
    return np.issubdtype(np.asarray(values).dtype, np.integer)


def _write_table(path: Path, columns: dict[str, np.ndarray]) -> None:
    data = np.column_stack([np.asarray(v, dtype=float) for v in columns.values()])
    formats = ["%d" if _is_integer(v) else "%.17g" for v in columns.values()]
    np.savetxt(path, data, fmt=formats, delimiter=",", header=",".join(columns), comments="")


def _write_parquet(path: Path, columns: dict[str, np.ndarray]) -> None:
    """The table ``columns`` (name -> (rows,)) as Parquet: integers as int64, everything else as float64."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    data = {name: np.asarray(v, np.int64) if _is_integer(v) else np.asarray(v, float) for name, v in columns.items()}
    floats = [name for name, values in data.items() if values.dtype.kind == "f"]
    # a dictionary finds no repeats in doubles; split by byte, their signs, exponents and leading bits compress
    pq.write_table(pa.table(data), path, compression="zstd", use_dictionary=False, use_byte_stream_split=floats)


def table_file(config: Config, stem: str) -> str:
    """The file name of the table ``stem`` of ``config``'s result, in its form: ``.csv`` or ``.parquet``."""
    return f"{stem}.parquet" if config.storage == "compact" else f"{stem}.csv"


def _write_npz(path: Path, arrays: dict[str, np.ndarray], config: Config) -> None:
    """The arrays into the ``.npz`` file ``path``, compressed in ``config``'s compact form."""
    (np.savez_compressed if config.storage == "compact" else np.savez)(path, **arrays)


def _abandoned(temp: Path, name: str) -> bool:
    """Whether the temp folder ``temp`` (``.tmp-<name>-<pid>-...``) of a result is left over: the process
    that it names has ended, or it is this process, which holds the result's lock while it saves and so left
    it in an earlier save that was cut off. A name without a pid is an older version's leftover."""
    head = temp.name.removeprefix(f".tmp-{name}-").split("-", 1)[0]
    if not head.isdigit() or int(head) in (0, os.getpid()):
        return True
    try:
        os.kill(int(head), 0)
    except (ProcessLookupError, OverflowError):
        return True
    except PermissionError:  # alive, another user's
        return False
    return False


def _replace(final: Path, config: Config, write) -> Path:
    """Build the result folder ``final`` with ``write(tmp_folder)`` in a temp folder named after this
    process, then rename it into place (an existing folder is moved aside in one step and removed)."""
    final.parent.mkdir(parents=True, exist_ok=True)
    for stale in final.parent.glob(f".tmp-{final.name}-*"):
        if _abandoned(stale, final.name):
            shutil.rmtree(stale, ignore_errors=True)
    tmp = Path(tempfile.mkdtemp(dir=final.parent, prefix=f".tmp-{final.name}-{os.getpid()}-"))
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
    shutil.rmtree(old, ignore_errors=True)  # a ``.tmp-*`` name: if this is cut off, a later save sweeps it
    return final


def _save(out: Path, config: Config, write) -> Path:
    """Store a result folder for ``config`` built by ``write(tmp_folder)`` under the result's lock (an
    existing folder for the same config is replaced); ``StoreWriteError`` when it cannot be written (the old
    result, if any, stays). Returns the final folder."""
    final = result_dir(out, config)
    try:
        with lock(out, config):
            return _replace(final, config, write)
    except OSError as error:
        raise StoreWriteError(f"cannot write the result to {final} ({error})") from None


def save(out: Path, result: Result) -> Path:
    """Store a result atomically under ``out``, in its config's form; returns its folder."""
    config = result.config
    write_table = _write_parquet if config.storage == "compact" else _write_table

    def write(tmp: Path) -> None:
        for stem, columns in result.tables().items():
            write_table(tmp / table_file(config, stem), columns)
        for stem, arrays in result.arrays().items():
            _write_npz(tmp / f"{stem}.npz", arrays, config)
        if result.manifest is not None:
            manifest = {**result.manifest, "schema": schema_of(result.config)}  # the form it is written in
            (tmp / "manifest.json").write_text(json.dumps(manifest, indent=2) + "\n")

    return _save(out, result.config, write)


class Checkpoint:
    """Finished chunks of runs of an unfinished experiment, kept in ``OUT/.partial-<experiment>-<hash>/``
    so that the same command resumes after a crash, Ctrl-C or a failed write instead of starting over. A
    chunk file is written atomically; the folder is removed once the result is stored. Its users hold the
    result's ``lock``."""

    def __init__(self, out: Path, config: Config | None = None, name: str | None = None):
        """The checkpoint of ``config``'s result, or the one called ``name`` (a batch of several results)."""
        self.folder = Path(out) / f".partial-{name or result_dir(out, config).name}"

    def load(self, key: str) -> dict[str, np.ndarray] | None:
        """The chunk ``key``, or None when it is not there or cannot be read (then it is computed again and its
        file replaced)."""
        path = self.folder / f"{key}.npz"
        if not path.is_file():
            return None
        try:
            return _read_npz(path)
        except READ_ERRORS:
            return None

    def save(self, key: str, arrays: dict[str, np.ndarray]) -> None:
        """Keep the chunk ``key``; ``StoreWriteError`` saying what is kept when it cannot be written."""

        def write(tmp: Path) -> None:
            with open(tmp, "wb") as f:
                np.savez(f, **arrays)

        try:
            self.folder.mkdir(parents=True, exist_ok=True)
            write_atomic(self.folder / f"{key}.npz", write)
        except OSError as error:
            raise StoreWriteError(f"cannot keep a finished chunk of runs in {self.folder} ({error}); "
                                  f"{self.kept()}") from None

    def kept(self) -> str:
        """What a command that fails now leaves to the next, as the end of its message."""
        return (f"{self.count()} finished chunk(s) of runs are kept in {self.folder}: free space or fix permissions "
                "there and run the same command again to resume from them")

    def count(self) -> int:
        return len(list(self.folder.glob("*.npz"))) if self.folder.is_dir() else 0

    def keys(self) -> list[str]:
        """The keys of the chunks kept, sorted."""
        return sorted(path.stem for path in self.folder.glob("*.npz")) if self.folder.is_dir() else []

    def clear(self) -> None:
        shutil.rmtree(self.folder, ignore_errors=True)


def save_analysis(folder: Path, analysis: dict[str, np.ndarray]) -> Path:
    """Write ``theory.analyze``'s arrays into a finished result folder as ``theory.npz`` (atomically), in the
    result's form."""
    config = load_config(folder)

    def write(tmp: Path) -> None:
        with open(tmp, "wb") as f:
            _write_npz(f, analysis, config)

    return write_atomic(Path(folder) / "theory.npz", write)


# ---- reading ------------------------------------------------------------------------------------------

RECOMPUTE = "it is damaged or from another version of l2rebound: run the experiment again with --force"
"""What to do about a damaged file of a result."""


def _read(path: Path, read, advice: str = RECOMPUTE):
    """``read(path)``; any failure is a ``StoreError`` naming the file and ending in ``advice``."""
    try:
        return read(path)
    except READ_ERRORS as error:
        raise StoreError(f"{path} cannot be read back ({type(error).__name__}: {error}); {advice}") from None


def _read_npz(path: Path) -> dict[str, np.ndarray]:
    with np.load(path) as arrays:
        return dict(arrays)


def _read_table(path: Path) -> dict[str, np.ndarray]:
    lines = path.read_text().splitlines()
    if len(lines) < 2:
        raise ValueError("no header or no rows")
    names = lines[0].split(",")
    data = np.loadtxt(lines[1:], delimiter=",", ndmin=2)
    if data.shape[1] != len(names):
        raise ValueError(f"{data.shape[1]} columns under a header of {len(names)}")
    return {name: data[:, i] for i, name in enumerate(names)}


def _read_parquet(path: Path) -> dict[str, np.ndarray]:
    import pyarrow.parquet as pq

    table = pq.read_table(path)
    return {name: table.column(name).to_numpy().copy() for name in table.column_names}  # writable, as loadtxt's


def load_analysis(folder: Path) -> dict[str, np.ndarray] | None:
    """The stored analysis of a result folder, or None if it has none yet; ``StoreError`` naming
    ``theory.npz`` when it is damaged."""
    path = Path(folder) / "theory.npz"
    if not path.is_file():
        return None
    return _read(path, _read_npz, f"delete it, or run `l2rebound analyze {Path(folder)} --force` to compute it again")


def require_finished(folder: Path) -> None:
    """``StoreError`` unless ``folder`` holds a finished result (its ``config.json`` is written last)."""
    if not is_finished(folder):
        raise StoreError(f"{folder} is not a finished result folder (no config.json)")


def load_config(folder: Path) -> Config:
    """The config stored in a result folder; ``StoreError`` naming the file when it is damaged or foreign."""
    path = Path(folder) / "config.json"
    try:
        data = json.loads(path.read_text())
        if not isinstance(data, dict):
            raise TypeError("not a JSON object")
        return Config.from_dict(data)
    except (OSError, ValueError, TypeError) as error:  # ConfigError is a ValueError
        raise StoreError(f"{path} cannot be read as a config ({error}); delete {Path(folder)} or run the experiment "
                         "again with --force") from None


def load_networks(folder: Path) -> list[tuple[str, tuple[int, ...], np.ndarray]]:
    """(name, dims, θ (P,)) of every teacher and initial student stored in a result folder's ``params.npz``,
    each in its stored dtype; ``StoreError`` naming the file when it cannot be read or does not fit the config
    beside it."""
    path = Path(folder) / "params.npz"
    config = load_config(folder)
    networks = []
    try:
        with np.load(path) as params:
            for name, dims in (("teacher", config.teacher_dims), ("student_init", config.student_dims)):
                thetas = np.atleast_2d(params[name])
                if thetas.ndim != 2 or thetas.shape[1] != num_params(dims) or thetas.dtype.kind != "f":
                    raise ValueError(f"{name} has shape {params[name].shape} and dtype {thetas.dtype}, where dims "
                                     f"{dims} need float rows of {num_params(dims)} parameters")
                networks += [(f"{name}, run {run}", dims, theta) for run, theta in enumerate(thetas, start=1)]
    except READ_ERRORS as error:
        raise StoreError(f"{path} cannot be read as the parameters of {Path(folder)} ({error}): run the experiment "
                         "again with --force") from None
    return networks


def load_manifest(folder: Path) -> dict | None:
    """The result's provenance, or None for a folder written before results carried one (schema 1);
    ``StoreError`` naming the file when it is damaged."""
    path = Path(folder) / "manifest.json"
    if not path.is_file():
        return None
    manifest = _read(path, lambda p: json.loads(p.read_text()))
    if not isinstance(manifest, dict):
        raise StoreError(f"{path} cannot be read back (not a JSON object); {RECOMPUTE}")
    return manifest


def load(folder: Path) -> Result:
    """Read back what ``save`` wrote. ``StoreError`` names the file that is missing or damaged (the folder
    when its files do not fit together), or says that a newer version of l2rebound wrote it."""
    folder = Path(folder)
    manifest = load_manifest(folder)
    schema = 1 if manifest is None else manifest.get("schema")
    if not isinstance(schema, int) or schema > SCHEMA_VERSION:
        raise StoreError(f"{folder} was written with result schema {schema!r}; this version of l2rebound reads "
                         f"schemas 1 to {SCHEMA_VERSION}: upgrade l2rebound to read it")
    config = load_config(folder)
    kind = registry.kind(config.experiment).result_type()
    read_table = _read_parquet if config.storage == "compact" else _read_table
    tables = {stem: _read(folder / table_file(config, stem), read_table) for stem in kind.table_specs(config)}
    arrays = {stem: _read(folder / f"{stem}.npz", _read_npz) for stem in kind.array_shapes(config)}
    try:
        result = kind.from_files(config, tables, arrays, manifest)
        result.validate()
        return result
    except (KeyError, ValueError, IndexError, TypeError) as error:
        files = ", ".join([*(table_file(config, stem) for stem in tables), *(f"{stem}.npz" for stem in arrays)])
        raise StoreError(f"{folder} cannot be read back: {files} do not fit its config.json ({type(error).__name__}: "
                         f"{error}); one was cut short or replaced: run the experiment again with --force") from None
