"""The README stays true: its options table names every option, and CI runs its test command."""

import dataclasses
import doctest
import re
from pathlib import Path

from l2rebound.config import Config, flag

ROOT = Path(__file__).resolve().parents[1]
README = (ROOT / "README.md").read_text()


def test_every_option_is_documented():
    for f in dataclasses.fields(Config):
        if f.metadata.get("cli") is not False:
            assert f"`{flag(f.name)}" in README, flag(f.name)
    for option in ("--preset", "--out", "--force", "--no-progress", "--squared"):
        assert f"`{option}" in README, option


def test_ci_runs_the_readme_test_command():
    first_screen = README.split("## ")[0]
    test_command = next(line for line in first_screen.splitlines() if "pytest" in line)
    assert test_command.strip() in (ROOT / ".ci" / "run").read_text()
    assert "l2rebound epoch --preset A" in first_screen


def test_the_python_examples_run_as_written():
    failures, tried = doctest.testfile(str(ROOT / "README.md"), module_relative=False, verbose=False,
                                       optionflags=doctest.NORMALIZE_WHITESPACE)
    assert tried >= 10 and failures == 0


def test_every_test_the_reliability_table_names_exists():
    table = README.split("## Reliability")[1].split("\n## ")[0]
    named = set(re.findall(r"`(test_\w+)`", table))
    defined = {name for path in (ROOT / "tests").glob("test_*.py")
               for name in re.findall(r"^def (test_\w+)", path.read_text(), re.MULTILINE)}
    assert named and named <= defined, named - defined
