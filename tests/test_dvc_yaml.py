"""dvc.yaml names, for every stage, the stage script and exactly the ``twostream`` modules it
imports, so that a code change re-runs the stages it can affect and no other (STYLE.md, "Params
mirror stages"): a module the stage does not import would re-run it for nothing."""

from __future__ import annotations

import ast
import json
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

REPO = Path(__file__).resolve().parents[1]
STAGES = yaml.safe_load((REPO / "dvc.yaml").read_text())["stages"]
# prints the twostream modules a stage script imports (its main() is not run: __name__ differs)
PROBE = """
import importlib.util, json, sys
spec = importlib.util.spec_from_file_location("stage", sys.argv[1])
spec.loader.exec_module(importlib.util.module_from_spec(spec))
print(json.dumps(sorted(m for m in sys.modules if m.startswith("twostream."))))
"""


def stage_deps(name: str) -> list[str]:
    stage = STAGES[name]
    return stage["do"]["deps"] if "foreach" in stage else stage["deps"]


def module_file(module: str) -> str:
    """``twostream.a.b`` -> ``twostream/a/b.py`` (or its package's ``__init__.py``)."""
    path = module.replace(".", "/")
    return f"{path}.py" if (REPO / f"{path}.py").is_file() else f"{path}/__init__.py"


def imported_files(source: str) -> set[str]:
    """Files of the twostream modules a file imports anywhere in it, a function's body included
    (an import run only when a function is called, as ``flow.backend: torch`` imports ``tvl1``)."""
    found = set()
    for node in ast.walk(ast.parse((REPO / source).read_text())):
        names = []
        if isinstance(node, ast.ImportFrom) and node.module and node.module.startswith("twostream"):
            names = [node.module] + [f"{node.module}.{a.name}" for a in node.names]
        elif isinstance(node, ast.Import):
            names = [a.name for a in node.names if a.name.startswith("twostream")]
        for name in names:
            parts = name.split(".")
            for depth in range(2, len(parts) + 1):  # a package's __init__ runs before its modules
                candidate = module_file(".".join(parts[:depth]))
                if (REPO / candidate).is_file():
                    found.add(candidate)
    return found - {"twostream/__init__.py"}


def closure(script: str) -> set[str]:
    """Every twostream file ``script`` can import, directly or through another twostream file."""
    seen, todo = set(), [script]
    while todo:
        for path in imported_files(todo.pop()) - seen:
            seen.add(path)
            todo.append(path)
    return seen


@pytest.mark.parametrize("name", sorted(STAGES))
def test_the_deps_are_exactly_the_imported_modules(name):
    deps = stage_deps(name)
    script = next(d for d in deps if d.startswith("stages/"))
    listed = {d for d in deps if d.startswith("twostream/")}
    wanted = closure(script)
    assert not sorted(wanted - listed), f"stage {name} imports {sorted(wanted - listed)}, which dvc.yaml does not list"
    assert not sorted(listed - wanted), f"stage {name} lists {sorted(listed - wanted)}, which it never imports"


@pytest.mark.parametrize("name", sorted(STAGES))
def test_what_a_stage_imports_when_it_loads_is_listed(name):
    """The static reading above against the interpreter's own: what loading the script imports."""
    deps = stage_deps(name)
    script = next(d for d in deps if d.startswith("stages/"))
    out = subprocess.run([sys.executable, "-c", PROBE, str(REPO / script)], cwd=REPO, capture_output=True,
                         text=True, check=True).stdout
    loaded = {module_file(m) for m in json.loads(out)}
    assert loaded <= set(deps), f"stage {name} loads {sorted(loaded - set(deps))}, which dvc.yaml does not list"


def test_training_and_scoring_import_no_code_that_makes_data():
    """Reading the stores is apart from making them: an edit of the decoding, TV-L1, pool or
    executor code re-runs data stages that find every part done, and never a training."""
    making = {f"twostream/{m}.py" for m in ("video", "frames", "flow", "opticalflow", "tvl1", "pools", "executors",
                                            "parts", "hmdb51", "resample", "sg3i", "shards", "demo")}
    for name in ("train", "score"):
        assert not set(stage_deps(name)) & making, (name, sorted(set(stage_deps(name)) & making))
