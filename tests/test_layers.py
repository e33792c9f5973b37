"""The package's layering, read from its source: every import (at the top of a module or inside a function;
not those under ``if TYPE_CHECKING:``) goes to the same tier or a lower one, and no modules import each other
in a circle. The tiers are the README's code map; a module that is in none fails here until it is placed."""

import ast
import re
from pathlib import Path

import pytest
from conftest import heavy_modules_after

SRC = Path(__file__).resolve().parents[1] / "src"
PACKAGE = "l2rebound"

TIERS = [
    ("data: the registry of kinds, rules and optimisers; the kinds' specs; the parameter layout",
     [r"registry", r"layout", r"kinds", r"kinds\.\w+"]),
    ("the configuration and the training rules", [r"config", r"rules", r"grid"]),
    ("the store (files, locks, checkpoints) and provenance", [r"store", r"provenance"]),
    ("results and their analysis, NumPy only", [r"results", r"fit", r"pruning", r"reference", r"published",
                                                r"kinds\.\w+\.result"]),
    ("the JAX engine", [r"precision", r"kernel", r"nets", r"data", r"genericity", r"train", r"symmetry", r"certify",
                        r"stopping", r"thresholds", r"experiments", r"kinds\.\w+\.(engine|phases)"]),
    ("figures, matplotlib", [r"plots", r"diagrams", r"kinds\.\w+\.figures"]),
    ("sweeps, theory, published figures", [r"sweeps", r"engines", r"theory", r"reproduce"]),
    ("the entry points: the package, its API and its command line", [r"", r"api", r"cli(\.\w+)?"]),
]
"""(what the tier holds, patterns of module names below the package), lowest first."""


def modules() -> dict[str, Path]:
    """Every module of the package by dotted name (a package by its own name)."""
    out = {}
    for path in (SRC / PACKAGE).rglob("*.py"):
        parts = path.relative_to(SRC).with_suffix("").parts
        out[".".join(parts[:-1] if parts[-1] == "__init__" else parts)] = path
    return out


def tier(module: str) -> int:
    name = module.removeprefix(PACKAGE).removeprefix(".")
    found = [i for i, (_, patterns) in enumerate(TIERS) for p in patterns if re.fullmatch(p, name)]
    if len(found) != 1:
        pytest.fail(f"{module} is in {len(found)} tiers of tests/test_layers.py (and of the README's code map): "
                    "place it in exactly one")
    return found[0]


def imports(module: str, path: Path, known: dict[str, Path]) -> set[str]:
    """The package's modules that ``module`` imports anywhere in its source, outside ``if TYPE_CHECKING:``."""
    tree = ast.parse(path.read_text())
    skipped = {id(node) for block in ast.walk(tree) if isinstance(block, ast.If)
               and getattr(block.test, "id", getattr(block.test, "attr", None)) == "TYPE_CHECKING"
               for statement in block.body for node in ast.walk(statement)}
    found = set()
    for node in ast.walk(tree):
        if id(node) in skipped:
            continue
        if isinstance(node, ast.Import):
            names = [alias.name for alias in node.names]
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                parent = module.split(".")[: len(module.split(".")) - node.level + (path.name == "__init__.py")]
                base = ".".join(parent + ([node.module] if node.module else []))
            names = [f"{base}.{alias.name}" if f"{base}.{alias.name}" in known else base for alias in node.names]
        else:
            continue
        for name in names:
            while name and name not in known:
                name = name.rpartition(".")[0]
            if name and name != module and name.split(".")[0] == PACKAGE:
                found.add(name)
    return found


def graph() -> dict[str, set[str]]:
    known = modules()
    return {module: imports(module, path, known) for module, path in known.items()}


def test_every_module_is_in_one_tier():
    for module in modules():
        tier(module)


def test_no_module_imports_a_higher_tier():
    upward = [f"{m} (tier {tier(m)}) imports {t} (tier {tier(t)})" for m, targets in graph().items()
              for t in sorted(targets) if tier(t) > tier(m)]
    assert not upward, "\n".join(upward)


def test_no_modules_import_each_other_in_a_circle():
    edges = graph()
    state: dict[str, int] = {}  # 1: on the current path, 2: done
    cycles = []

    def visit(module, path):
        state[module] = 1
        for target in sorted(edges[module]):
            if state.get(target) == 1:
                cycles.append(" -> ".join(path[path.index(target):] + [target]))
            elif target not in state:
                visit(target, path + [target])
        state[module] = 2

    for module in sorted(edges):
        if module not in state:
            visit(module, [module])
    assert not cycles, "\n".join(cycles)


def test_the_checker_sees_inner_imports_and_skips_type_checking(tmp_path):
    package = tmp_path / "pkg"
    package.mkdir()
    (package / "__init__.py").write_text("")
    (package / "a.py").write_text("from typing import TYPE_CHECKING\nif TYPE_CHECKING:\n    from pkg import c\n"
                                  "def f():\n    from pkg import b\n    from . import c as d\n")
    (package / "b.py").write_text("")
    (package / "c.py").write_text("")
    known = {"pkg": package / "__init__.py", "pkg.a": package / "a.py", "pkg.b": package / "b.py",
             "pkg.c": package / "c.py"}
    global PACKAGE
    saved, PACKAGE = PACKAGE, "pkg"
    try:
        assert imports("pkg.a", package / "a.py", known) == {"pkg.b", "pkg.c"}
    finally:
        PACKAGE = saved


def test_importing_the_package_loads_no_engine_figures_or_tables():
    assert heavy_modules_after("import l2rebound; l2rebound.kinds()") == []
