"""The package is laid out by pipeline phase, and its imports run one way: a phase imports only
itself and the phases before it (runtime, ingest, motion, samples, learn, evaluate), with no
circle between modules, and every sub-package says what it owns."""

from __future__ import annotations

import ast
import importlib
from pathlib import Path

import pytest

from test_dvc_yaml import imported_files

REPO = Path(__file__).resolve().parents[1]
PHASES = ("runtime", "ingest", "motion", "samples", "learn", "evaluate")
MODULES = sorted(p.relative_to(REPO).as_posix() for p in (REPO / "twostream").rglob("*.py"))


def phase_of(path: str) -> str | None:
    parts = path.split("/")
    return parts[1] if len(parts) > 2 and parts[1] in PHASES else None


@pytest.mark.parametrize("path", [m for m in MODULES if phase_of(m)])
def test_a_phase_imports_only_itself_and_the_phases_before_it(path):
    mine = PHASES.index(phase_of(path))
    later = sorted(f for f in imported_files(path) if phase_of(f) and PHASES.index(phase_of(f)) > mine)
    assert not later, f"{path} ({PHASES[mine]}) imports later phases: {later}"


def test_no_module_imports_itself_through_others():
    graph = {m: {f for f in imported_files(m) if not f.endswith("__init__.py")} for m in MODULES}

    def reaches(start: str, goal: str, seen: set[str]) -> bool:
        for nxt in graph.get(start, ()):
            if nxt == goal or (nxt not in seen and (seen.add(nxt) or reaches(nxt, goal, seen))):
                return True
        return False

    circles = [m for m in MODULES if reaches(m, m, set())]
    assert not circles, f"import circles through {circles}"


def test_only_the_phases_the_runtime_and_the_tools_sit_in_the_package():
    top = sorted(p.name for p in (REPO / "twostream").iterdir() if not p.name.startswith("__pycache__"))
    assert top == sorted(["__init__.py", "__main__.py", "bench", *PHASES])


@pytest.mark.parametrize("package", ["twostream", *(f"twostream.{p}" for p in PHASES),
                                     "twostream.ingest.datasets", "twostream.bench"])
def test_every_package_says_what_it_owns(package):
    doc = importlib.import_module(package).__doc__
    assert doc and len(doc.split()) > 20, package


def test_the_stage_scripts_stay_thin():
    for script in sorted((REPO / "stages").glob("*.py")):
        tree = ast.parse(script.read_text())
        assert len(script.read_text().splitlines()) <= 75, script.name
        longest = max(n.end_lineno - n.lineno for n in tree.body if isinstance(n, ast.FunctionDef))
        assert longest <= 50, (script.name, longest)
