"""The README and the docs pages stay true: the options page names every option, CI runs the README's test
command, the Python examples run as written, the reliability table names real tests, and every page the
site's nav or the README points to exists."""

import dataclasses
import doctest
import re
from pathlib import Path

import yaml

from l2rebound.config import Config, flag

ROOT = Path(__file__).resolve().parents[1]
DOCS = ROOT / "docs"
README = (ROOT / "README.md").read_text()
# the doctest examples the README held before its reference sections moved to docs/ (all in "Use it from Python")
EXAMPLES_BEFORE_THE_MOVE = 13


def test_every_option_is_documented():
    options = (DOCS / "options.md").read_text()
    for f in dataclasses.fields(Config):
        if f.metadata.get("cli") is not False:
            assert f"`{flag(f.name)}" in options, flag(f.name)
    for option in ("--preset", "--out", "--force", "--no-progress", "--squared"):
        assert f"`{option}" in options, option


def test_ci_runs_the_readme_test_command():
    first_screen = README.split("## ")[0]
    test_command = next(line for line in first_screen.splitlines() if "pytest" in line)
    assert test_command.strip() in (ROOT / ".ci" / "run").read_text()
    assert "l2rebound epoch --preset A" in first_screen


def test_the_python_examples_run_as_written():
    pages = [ROOT / "README.md"] + sorted(p for p in DOCS.glob("*.md") if ">>>" in p.read_text())
    assert DOCS / "python.md" in pages
    tried = 0
    for page in pages:
        result = doctest.testfile(str(page), module_relative=False, verbose=False,
                                  optionflags=doctest.NORMALIZE_WHITESPACE)
        assert result.failed == 0, page.name
        tried += result.attempted
    assert tried >= EXAMPLES_BEFORE_THE_MOVE


def test_every_test_the_reliability_table_names_exists():
    table = (DOCS / "reliability.md").read_text()
    named = set(re.findall(r"`(test_\w+)`", table))
    defined = {name for path in (ROOT / "tests").glob("test_*.py")
               for name in re.findall(r"^def (test_\w+)", path.read_text(), re.MULTILINE)}
    assert named and named <= defined, named - defined


def _pages(nav):
    """The file names a mkdocs nav names, at any depth (external links left out)."""
    if isinstance(nav, str):
        return [] if "://" in nav else [nav]
    if isinstance(nav, dict):
        return [page for value in nav.values() for page in _pages(value)]
    return [page for item in nav for page in _pages(item)]


def test_every_page_in_the_site_nav_exists():
    config = yaml.safe_load((ROOT / "mkdocs.yml").read_text())
    assert config["docs_dir"] == "docs"
    pages = _pages(config["nav"])
    assert "options.md" in pages and "reliability.md" in pages and "api.md" in pages
    missing = [page for page in pages if not (DOCS / page).is_file()]
    assert not missing, missing


def test_links_into_docs_resolve():
    readme_links = re.findall(r"\]\((docs/[^)#\s]+)", README)
    assert "docs/options.md" in readme_links and "docs/reliability.md" in readme_links
    missing = [link for link in readme_links if not (ROOT / link).is_file()]
    for page in DOCS.glob("*.md"):  # the pages' own relative links (figures, each other)
        for link in re.findall(r"\]\(([^)#\s:]+)", page.read_text()):
            if not (DOCS / link).is_file():
                missing.append(f"{page.name}: {link}")
    assert not missing, missing
