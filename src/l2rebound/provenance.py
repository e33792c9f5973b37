"""Where and how a result was computed: the manifest stored beside every result.

The manifest is a plain dict (JSON in ``manifest.json``). ``SCHEMA_VERSION`` numbers the layout of a result
folder; the store reads every schema up to it and refuses newer ones by name. The numerics version
(``config.NUMERICS_VERSION``) is part of the folder's hash as well, so that results of older numerics are
never reused for a config.
"""

from __future__ import annotations

import datetime
import platform
import socket
import subprocess
from importlib import metadata
from pathlib import Path

from l2rebound.config import NUMERICS_VERSION, Config

SCHEMA_VERSION = 3
"""The newest layout: 1: result folders without ``manifest.json``; 2: with it; 3: the compact form
(``Config.storage``: Parquet tables, compressed arrays), which versions before it cannot read. A result is
marked with the oldest schema that reads it (``schema_of``), so a full result stays readable by them."""


def schema_of(config: Config) -> int:
    """The result schema that a result of ``config`` is written in: 3 when compact, else 2."""
    return 3 if config.storage == "compact" else 2

PACKAGE_DIR = Path(__file__).resolve().parent


def _version(distribution: str) -> str | None:
    try:
        return metadata.version(distribution)
    except metadata.PackageNotFoundError:
        return None


def git_commit() -> str | None:
    """The commit of the checkout this package runs from (an editable install), with ``+dirty`` when the
    checkout has uncommitted changes; None when it runs from anywhere else."""

    def git(*args):
        return subprocess.run(["git", "-C", str(PACKAGE_DIR), *args], capture_output=True, text=True, timeout=10,
                              check=True).stdout.strip()

    try:
        top = Path(git("rev-parse", "--show-toplevel"))
        if (top / "src" / "l2rebound").resolve() != PACKAGE_DIR:  # a checkout that merely contains the install
            return None
        commit = git("rev-parse", "HEAD")
        return commit + ("+dirty" if git("status", "--porcelain", "--untracked-files=no") else "")
    except (OSError, subprocess.SubprocessError):
        return None


def manifest(config: Config, fast_path: str) -> dict:
    """The manifest of a result of ``config`` computed now in this process, whose training step ran on
    ``fast_path`` (``kernel.fast_path``). Imports JAX: the engine calls it."""
    import jax

    device = jax.devices()[0]
    return {
        "schema": schema_of(config),
        "numerics": NUMERICS_VERSION,
        "package": "l2rebound",
        "version": _version("l2rebound"),
        "git_commit": git_commit(),
        "python": platform.python_version(),
        "jax": jax.__version__,
        "jaxlib": _version("jaxlib"),
        "backend": jax.default_backend(),
        "device_kind": device.device_kind,
        "device_count": jax.device_count(),
        "fast_path": fast_path,
        "dtype": config.dtype,
        "host": socket.gethostname(),
        "platform": platform.platform(),
        "date": datetime.datetime.now(datetime.UTC).isoformat(timespec="seconds"),
    }
