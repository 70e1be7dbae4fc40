"""Imports between the top-level packages only run downward (docs/architecture.md):

    vaner  ->  clients  ->  kb_ingest  ->  tagger  ->  retrieval  ->  services

Every ``import`` in every module is read with ``ast`` (function-level and ``TYPE_CHECKING`` imports
included, and ``importlib.import_module("...")`` with a literal name), so a lazy import cannot
sneak a dependency upward. The one exception is the composition root of the command line.
"""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parent.parent

# What each package may import besides itself. kb_ingest and tagger do not need each other;
# clients need nothing but the core, so any layer may call a service.
ALLOWED: dict[str, set[str]] = {
    "vaner": set(),
    "clients": {"vaner"},
    "kb_ingest": {"vaner"},
    "tagger": {"vaner", "clients"},
    "retrieval": {"vaner", "clients", "kb_ingest", "tagger"},
    "services": {"vaner", "clients", "kb_ingest", "tagger", "retrieval"},
}
# Modules that wire packages together and may import any of them.
COMPOSITION = {"vaner/cli.py"}
GENERATED = ("vaner/v1/",)


def imported_packages(path: Path) -> list[tuple[int, str]]:
    """(line, top-level package) of every absolute import in a module."""
    tree = ast.parse(path.read_text(encoding="utf-8"), filename=str(path))
    found: list[tuple[int, str]] = []
    for node in ast.walk(tree):
        names: list[str] = []
        if isinstance(node, ast.Import):
            names = [alias.name for alias in node.names]
        elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
            names = [node.module]
        elif isinstance(node, ast.Call) and getattr(node.func, "attr", getattr(node.func, "id", "")) == "import_module" \
                and node.args and isinstance(node.args[0], ast.Constant) and isinstance(node.args[0].value, str):
            names = [node.args[0].value]
        found.extend((node.lineno, name.split(".")[0]) for name in names)
    return found


def modules() -> list[Path]:
    out = []
    for package in ALLOWED:
        for path in sorted((REPO / package).rglob("*.py")):
            rel = path.relative_to(REPO).as_posix()
            if not rel.startswith(GENERATED) and rel not in COMPOSITION:
                out.append(path)
    return out


@pytest.mark.parametrize("path", modules(), ids=lambda p: p.relative_to(REPO).as_posix())
def test_imports_only_run_downward(path: Path):
    package = path.relative_to(REPO).parts[0]
    upward = [f"{path.relative_to(REPO)}:{line} imports {target}"
              for line, target in imported_packages(path)
              if target in ALLOWED and target != package and target not in ALLOWED[package]]
    assert not upward, f"{package} may import only {sorted(ALLOWED[package]) or 'nothing else'}: {upward}"


def test_the_rules_form_a_strict_order():
    """No two packages may depend on each other, even indirectly."""
    def reaches(a: str, b: str, seen: frozenset = frozenset()) -> bool:
        return any(d == b or (d not in seen and reaches(d, b, seen | {d})) for d in ALLOWED[a])

    assert not [p for p in ALLOWED if reaches(p, p)]


def test_the_checker_sees_lazy_and_dynamic_imports(tmp_path: Path):
    src = tmp_path / "m.py"
    src.write_text("import os\n"
                   "def f():\n    from retrieval.dbr import DbrSet\n"
                   "import importlib\nimportlib.import_module('services.cli')\n")
    assert {t for _, t in imported_packages(src)} == {"os", "retrieval", "importlib", "services"}
