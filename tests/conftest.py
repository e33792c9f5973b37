"""Shared fixtures: tiny configs that compile fast, float64 for tests of the engine's internals, JAX's
compilation cache kept in a temporary folder (tests never write into the user's cache), and the example plugin
(``tests/example_plugin``) registered for the whole session, so that every registry-driven battery covers its
kind and rule too."""

import ast
import atexit
import contextlib
import io
import os
import shutil
import sys
import tempfile
import tomllib
from pathlib import Path

import jax
import pytest

EXAMPLE_PLUGIN = Path(__file__).resolve().parent / "example_plugin"


def register_example_plugin() -> None:
    """Make the example plugin's entry points visible as ``pip install tests/example_plugin`` would, without
    installing it: a ``.dist-info`` folder holding the entry points of its ``pyproject.toml``, in a temporary
    folder put on ``sys.path`` (and on ``PYTHONPATH``, for the subprocesses of the CLI, Dask and notebook
    tests) together with the plugin's source."""
    project = tomllib.loads((EXAMPLE_PLUGIN / "pyproject.toml").read_text())["project"]
    root = Path(tempfile.mkdtemp(prefix="l2rebound-example-plugin-"))
    atexit.register(shutil.rmtree, root, ignore_errors=True)
    info = root / f"{project['name'].replace('-', '_')}-{project['version']}.dist-info"
    info.mkdir()
    (info / "METADATA").write_text(f"Metadata-Version: 2.1\nName: {project['name']}\nVersion: {project['version']}\n")
    (info / "entry_points.txt").write_text("".join(
        f"[{group}]\n" + "".join(f"{name} = {target}\n" for name, target in points.items()) + "\n"
        for group, points in project["entry-points"].items()))
    paths = [str(root), str(EXAMPLE_PLUGIN / "src")]
    sys.path[:0] = paths
    os.environ["PYTHONPATH"] = os.pathsep.join(
        paths + ([os.environ["PYTHONPATH"]] if os.environ.get("PYTHONPATH") else []))


register_example_plugin()

from l2rebound.config import Config, example  # noqa: E402 (after the plugin's registration, which the registry reads)

TINY = Config(teacher_dims=(2, 4, 1), dataset_size=64, test_set_size=16, epochs=5, runs=2, initial_permut=1e-2)
"""The smallest epoch experiment that exercises every code path; JAX compiles once per shape, so tests that
share it share the compiles."""
TINY_NOISE = example("noise")
"""The noise experiment's counterpart of ``TINY``: its example config."""
TINY_COMPRESS = example("compress")
"""The compression experiment's counterpart of ``TINY``: its example config."""


def pytest_configure(config):
    config.addinivalue_line("markers", "slow: takes more than a few seconds (still run by the README's command)")


@pytest.fixture(scope="session", autouse=True)
def _private_caches(tmp_path_factory):
    """JAX's persistent compilation cache and the package's own cache in a temporary folder, for the whole
    session (subprocesses inherit it through the environment)."""
    root = tmp_path_factory.mktemp("caches")
    os.environ["L2REBOUND_CACHE"] = str(root / "l2rebound")
    os.environ["XDG_CACHE_HOME"] = str(root)
    jax.config.update("jax_compilation_cache_dir", str(root / "xla"))
    yield root


@pytest.fixture(scope="module")
def x64():
    """float64 for tests that call the engine's internals directly (its entry points scope it themselves);
    module-scoped so that module-scoped fixtures run inside it too."""
    with jax.enable_x64(True):
        yield


@pytest.fixture
def tiny() -> Config:
    return TINY


@pytest.fixture
def tiny_noise() -> Config:
    return TINY_NOISE


HEAVY = ("jax", "optax", "matplotlib", "scipy", "pandas")
"""What importing the package, building its CLI or naming a plugin must not load."""


def heavy_modules_after(statements: str) -> list[str]:
    """The modules of ``HEAVY`` that a fresh interpreter has loaded after running ``statements``."""
    import subprocess
    import sys

    code = f"import sys; {statements}; print(sorted(m for m in {HEAVY!r} if m in sys.modules))"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True, timeout=60)
    return ast.literal_eval(out.stdout.strip().splitlines()[-1])


def progress_around(monkeypatch, module, name: str, run) -> tuple[list[str], list[int]]:
    """``run(on_progress)`` with ``module.name`` (host work after training, e.g. the alignment) recorded:
    (events, units), ``events`` "align" for each call of it and "progress" for each report, in order, and
    ``units`` the reported counts."""
    events, units = [], []
    real = getattr(module, name)

    def recorded(*args, **kwargs):
        events.append("align")
        return real(*args, **kwargs)

    def progress(n):
        events.append("progress")
        units.append(n)

    monkeypatch.setattr(module, name, recorded)
    run(progress)
    return events, units


class InterruptAt:
    """A progress callback that keeps each report (``reports``) and is a Ctrl-C (``KeyboardInterrupt``) at the
    ``stop_at``-th."""

    def __init__(self, stop_at: int):
        self.stop_at, self.reports = stop_at, []

    def __call__(self, n: int) -> None:
        self.reports.append(n)
        if len(self.reports) == self.stop_at:
            raise KeyboardInterrupt


def assert_same_result(got, expected) -> None:
    """Every table column and every array of two results equal, bit for bit (NaN where NaN)."""
    import numpy as np

    for stem, columns in expected.tables().items():
        for column, values in columns.items():
            np.testing.assert_array_equal(got.tables()[stem][column], values, err_msg=f"{stem}.{column}")
    for stem, arrays in expected.arrays().items():
        for key, array in arrays.items():
            assert np.array_equal(got.arrays()[stem][key], array, equal_nan=True), (stem, key)


def run_cli(*argv) -> tuple[int, str, str]:
    """``l2rebound *argv`` in this process: (exit code, stdout, stderr); an exception escapes (a traceback)."""
    from l2rebound import cli

    out, err = io.StringIO(), io.StringIO()
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
        try:
            code = cli.main([str(a) for a in argv])
        except SystemExit as exit:
            code = exit.code
    return code, out.getvalue(), err.getvalue()


def brute_force_violations(theta, dims):
    """The genericity decisions for θ (P,) by comparing every pair of rows, in NumPy's IEEE arithmetic in θ's
    own dtype (a division, then a multiplication by q, rounded half to even), at the check's tolerance for
    that dtype: the reference any faster check must reproduce. Mask (P,)."""
    import numpy as np

    from l2rebound import genericity
    from l2rebound.nets import layer_slices

    theta = np.asarray(theta)
    real = theta.dtype.type
    rtol = real(genericity.TOLERANCE_ULPS * np.finfo(theta.dtype).eps)
    mask = theta == 0
    with np.errstate(all="ignore"):
        for (ws, bs), d_in, d_out in zip(layer_slices(dims), dims[:-1], dims[1:]):
            w, b = theta[ws].reshape(d_out, d_in), np.abs(theta[bs])
            close = np.abs(b[:, None] - b[None, :]) <= rtol * np.maximum(b[:, None], b[None, :])  # [i, j]
            mask[bs] |= np.any(close & np.tri(d_out, k=-1, dtype=bool), axis=1) & (b > 0)  # j < i
            a = np.abs(w)
            ratio = a[None, :, :] / np.where(a[:, None, :] > 0, a[:, None, :], real(1))  # [i, j, k] = |w_jk| / |w_ik|
            t = ratio[..., None] * np.arange(1, genericity.RATIO_BOUND + 1, dtype=theta.dtype)
            p = np.round(t)
            hit = np.any((p >= 1) & (p <= genericity.RATIO_BOUND) & (np.abs(t - p) <= rtol * t), axis=-1)
            valid = (a[:, None, :] > 0) & (a[None, :, :] > 0) & np.tri(d_out, k=-1, dtype=bool).T[:, :, None]
            mask[ws] |= np.any(hit & valid, axis=0).reshape(-1)
    return mask
