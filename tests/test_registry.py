"""The registry of kinds, rules and optimisers: specs are validated data, a plugin that cannot be loaded or
takes a registered name is left out with a warning (and its name refused in one line), and the package and
its command line keep working beside it. Plugins are declared here as an installed package declares them:
a ``.dist-info`` folder with ``entry_points.txt``, on the ``PYTHONPATH`` of a fresh interpreter."""

import os
import subprocess
import sys

import pytest

from l2rebound import registry
from l2rebound.registry import KindSpec

SPEC = {"name": "tiny", "help": "h", "description": "d", "result": "m:R", "engine": "m:e", "figures": "m:f",
        "views": ("v",)}


def test_a_spec_is_validated_frozen_data():
    spec = KindSpec(**SPEC, example={"runs": 2})
    with pytest.raises(TypeError):
        spec.example["runs"] = 0  # read-only
    assert hash(spec) == hash(KindSpec(**SPEC, example={"runs": 3}))
    with pytest.raises(ValueError, match="sweepable needs curves"):
        KindSpec(**SPEC, sweepable=True)
    with pytest.raises(ValueError, match="packable needs sweepable"):
        KindSpec(**SPEC, packable="m:p", curves=True)
    with pytest.raises(ValueError, match="lower-case word"):
        KindSpec(**{**SPEC, "name": "Two Words"})


def test_a_taken_or_unknown_kind_name_is_refused():
    with pytest.raises(ValueError, match="registered already"):
        registry.register_kind(KindSpec(**{**SPEC, "name": "epoch"}))
    with pytest.raises(registry.RegistryError, match="no experiment kind is named 'nothing'"):
        registry.kind("nothing")


def with_plugins(tmp_path, entry_points: str, *argv: str, code: str | None = None) -> subprocess.CompletedProcess:
    """``l2rebound *argv`` (or the Python ``code``) in a fresh interpreter that sees an installed package
    declaring ``entry_points`` (the text of its ``entry_points.txt``)."""
    info = tmp_path / "broken_plugin-1.0.dist-info"
    info.mkdir(exist_ok=True)
    (info / "METADATA").write_text("Metadata-Version: 2.1\nName: broken-plugin\nVersion: 1.0\n")
    (info / "entry_points.txt").write_text(entry_points)
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(tmp_path), os.environ.get("PYTHONPATH", "")])}
    command = [sys.executable, "-c", code] if code else [sys.executable, "-m", "l2rebound.cli", *argv]
    return subprocess.run(command, capture_output=True, text=True, env=env, timeout=120)


def test_a_broken_rule_plugin_is_left_out_and_its_name_refused_in_one_line(tmp_path):
    points = "[l2rebound.rules]\nbroken = no_such_module:RULE\nl1 = no_such_module:RULE\n"
    out = with_plugins(tmp_path, points, code="import l2rebound; print(l2rebound.Config(train='l1').train)")
    assert out.returncode == 0 and out.stdout.strip() == "l1", out.stderr  # the built-in l1, nothing loaded
    out = with_plugins(tmp_path, points, "epoch", "--train", "broken", "--out", str(tmp_path / "out"))
    assert out.returncode == 2 and "Traceback" not in out.stderr
    assert "entry point 'broken'" in out.stderr and "cannot be loaded" in out.stderr
    assert not (tmp_path / "out").exists()
    out = with_plugins(tmp_path, points, code="from l2rebound.rules import all_rules; print(sorted(all_rules()))")
    assert out.returncode == 0 and out.stdout.strip() == "['drr', 'l1', 'vanilla']" or "ridge" in out.stdout
    assert "cannot be loaded" in out.stderr and "takes a name registered already" in out.stderr


def test_a_broken_kind_plugin_leaves_the_other_commands_working(tmp_path):
    points = "[l2rebound.kinds]\nbroken = no_such_module:SPEC\nplot = no_such_module:SPEC\n"
    out = with_plugins(tmp_path, points, "--version")
    assert out.returncode == 0 and out.stdout.startswith("l2rebound ")
    out = with_plugins(tmp_path, points, "epoch", "--help")
    assert out.returncode == 0 and "--learning-rate" in out.stdout and "Traceback" not in out.stderr
    assert "entry point 'broken'" in out.stderr  # said once, as a warning
    out = with_plugins(tmp_path, points, "broken", "--out", str(tmp_path / "out"))
    assert out.returncode == 2 and "Traceback" not in out.stderr and len(out.stderr.strip().splitlines()) <= 3
