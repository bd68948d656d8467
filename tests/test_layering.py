"""The package's stages form floors: a module imports only from its own stage or the stages below it."""

from __future__ import annotations

import ast
from pathlib import Path

PACKAGE = Path(__file__).resolve().parent.parent / "helpers"
STAGES: tuple[str, ...] = (
    "core",
    "data",
    "models",
    "training",
    "evaluation",
    "explain",
    "plots",
    "runs",
    "apps",
)
"""The subpackages of helpers, lowest first (as helpers/__init__.py lists them)."""


def _stage_of(module: str) -> str | None:
    """The stage a dotted ``helpers.<stage>...`` module belongs to, None outside helpers."""
    parts = module.split(".")
    return parts[1] if parts[0] == "helpers" and len(parts) > 1 else None


def imported_modules(path: Path) -> list[tuple[int, str]]:
    """(line, module) of every import in a file, top-level or inside functions, ``from X import y`` as X.y
    when y may be a submodule."""
    found = []
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        if isinstance(node, ast.Import):
            found += [(node.lineno, alias.name) for alias in node.names]
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            found.append((node.lineno, node.module))
            found += [(node.lineno, f"{node.module}.{alias.name}") for alias in node.names]
    return found


def layering_violations(path: Path, package: Path = PACKAGE) -> list[str]:
    """Imports in ``path`` (a module of the ``package`` folder) that reach a higher stage than its own."""
    own = path.relative_to(package).parts[0]
    if own not in STAGES:
        return []
    rank = STAGES.index(own)
    problems = []
    for line, module in imported_modules(path):
        stage = _stage_of(module)
        if stage in STAGES and STAGES.index(stage) > rank:
            problems.append(f"{path.relative_to(package.parent)}:{line} ({own}) imports {module} ({stage})")
    return problems


def test_every_subpackage_is_a_known_stage() -> None:
    folders = {path.name for path in PACKAGE.iterdir() if (path / "__init__.py").is_file()}
    assert folders == set(STAGES)
    loose = [path.name for path in PACKAGE.glob("*.py") if path.name != "__init__.py"]
    assert loose == [], "every module belongs to a stage folder"


def test_no_stage_imports_a_higher_stage() -> None:
    problems = [problem for path in sorted(PACKAGE.rglob("*.py")) for problem in layering_violations(path)]
    assert problems == []


def test_the_check_catches_an_upward_import(tmp_path: Path) -> None:
    package = tmp_path / "helpers"
    (package / "data").mkdir(parents=True)
    module = package / "data" / "bad.py"
    module.write_text("def f():\n    from helpers.training.run import train\n    return train\n")
    assert layering_violations(module, package) == [
        "helpers/data/bad.py:2 (data) imports helpers.training.run (training)",
        "helpers/data/bad.py:2 (data) imports helpers.training.run.train (training)",
    ]
