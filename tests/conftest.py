"""Shared fixtures: tiny configs that compile fast, float64 for tests of the engine's internals, and JAX's
compilation cache kept in a temporary folder (tests never write into the user's cache)."""

import contextlib
import io
import os

import jax
import pytest

from l2rebound.config import Config

TINY = Config(teacher_dims=(2, 4, 1), dataset_size=64, test_set_size=16, epochs=5, runs=2, initial_permut=1e-2)
"""The smallest epoch experiment that exercises every code path; JAX compiles once per shape, so tests that
share it share the compiles."""
TINY_NOISE = Config(experiment="noise", teacher_dims=(2, 4, 1), dataset_size=64, test_set_size=16, epochs=5,
                    runs=2, noise_levels=(1e-3, 1e-2, 1e-1))
"""The noise experiment's counterpart of ``TINY``."""
TINY_COMPRESS = Config(experiment="compress", teacher_dims=(2, 3, 1), student_dims=(2, 4, 1), dataset_size=64,
                       test_set_size=16, epochs=5, runs=2, initial_permut=1e-2, finetune_epochs=2)
"""The compression experiment's counterpart of ``TINY``."""


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
