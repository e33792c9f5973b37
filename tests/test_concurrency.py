"""Commands sharing one store root at once, as separate processes of the real command line: identical ones
compute their result once while the others wait and reuse it (``--force`` ones too), different ones do not
disturb each other; every one succeeds, the stored results load, and nothing is left over."""

import os
import subprocess
import sys
import time

import pytest
from conftest import TINY

from l2rebound import store

OPTIONS = ["--teacher-dims", "2,4,1", "--dataset-size", "64", "--test-set-size", "16", "--epochs", "5", "--runs", "2",
           "--initial-permut", "1e-2", "--no-progress"]
"""The options of ``TINY``."""
OTHER = TINY.replace(runs=3)
"""A different config for the same store root."""
WAITING = "waiting for another l2rebound command"


def stored(output: str, folder) -> bool:
    """Whether a command's output says that it computed the result and stored it in ``folder``."""
    return f"stored in {folder}" in output.splitlines()


def start(out, log, *extra: str) -> subprocess.Popen:
    """``l2rebound epoch`` of TINY (with ``extra`` options) storing under ``out``; its stdout and stderr go to
    the file ``log``, unbuffered, so that a test can watch it."""
    with open(log, "w") as sink:
        return subprocess.Popen([sys.executable, "-m", "l2rebound.cli", "epoch", *OPTIONS, *extra, "--out", str(out)],
                                stdout=sink, stderr=subprocess.STDOUT, env={**os.environ, "PYTHONUNBUFFERED": "1"})


def finish(commands: dict[str, subprocess.Popen], logs: dict, seconds: float = 480) -> dict[str, str]:
    """Each command's output once all have ended; fails naming those that did not exit 0."""
    deadline = time.monotonic() + seconds
    for proc in commands.values():
        proc.wait(timeout=max(1.0, deadline - time.monotonic()))
    output = {name: logs[name].read_text() for name in commands}
    failed = {name: output[name] for name, proc in commands.items() if proc.returncode != 0}
    assert not failed, failed
    return output


def assert_clean_store(out, configs) -> None:
    """Exactly the result folders of ``configs`` (no temp, partial or lock files), each complete with its
    four figures."""
    assert sorted(p.name for p in out.iterdir()) == sorted(store.result_dir(out, c).name for c in configs)
    for config in configs:
        folder = store.result_dir(out, config)
        assert store.load(folder).config == config
        assert len([p for p in folder.iterdir() if p.suffix in (".svg", ".png")]) == 4
        assert not [p.name for p in folder.iterdir() if p.name.startswith(".")]  # no half-written figure


@pytest.mark.slow
def test_identical_commands_waiting_together_compute_once(tmp_path):
    """Six identical commands (two with ``--force``) all find the result's lock held (by this test) and wait;
    once it is let go, one computes and the other five reuse what it stored."""
    out = tmp_path / "out"
    names = [f"plain {i}" for i in range(4)] + [f"force {i}" for i in range(2)]
    logs = {name: tmp_path / f"{name}.log" for name in names}
    with store.lock(out, TINY):
        commands = {name: start(out, logs[name], *(["--force"] if name.startswith("force") else [])) for name in names}
        deadline = time.monotonic() + 300
        while not all(WAITING in logs[name].read_text() for name in names):
            assert time.monotonic() < deadline and all(p.poll() is None for p in commands.values()), \
                {name: logs[name].read_text() for name in names}
            time.sleep(0.1)
    output = finish(commands, logs)
    folder = store.result_dir(out, TINY)
    computed = [name for name in names if stored(output[name], folder)]
    assert len(computed) == 1, output
    reused = f"reusing the result that another command stored in {folder} while this one waited"
    assert all(reused in output[name] for name in names if name not in computed), output
    assert_clean_store(out, [TINY])


@pytest.mark.slow
def test_identical_and_different_commands_started_together_all_succeed(tmp_path):
    """Four identical commands, two more with ``--force`` and one of another config, started at once on one
    store root: none fails, and at most one of the plain ones computes (the others reuse)."""
    out = tmp_path / "out"
    names = [f"plain {i}" for i in range(4)] + [f"force {i}" for i in range(2)] + ["other"]
    logs = {name: tmp_path / f"{name}.log" for name in names}
    extra = {"force 0": ["--force"], "force 1": ["--force"], "other": ["--runs", str(OTHER.runs)]}
    started = time.monotonic()
    commands = {name: start(out, logs[name], *extra.get(name, [])) for name in names}
    output = finish(commands, logs)
    print(f"7 commands on one store root: {time.monotonic() - started:.0f} s")
    folder = store.result_dir(out, TINY)
    computed = [name for name in names if stored(output[name], folder)]
    assert 1 <= len(computed) and len([name for name in computed if name.startswith("plain")]) <= 1, output
    assert all(stored(output[name], folder) or "reusing" in output[name] for name in names[:-1]), output
    assert stored(output["other"], store.result_dir(out, OTHER))
    assert_clean_store(out, [TINY, OTHER])
