"""dvc.yaml names, for every stage, the stage script and every ``twostream`` module it imports,
so that a code change re-runs exactly the stages it can affect (STYLE.md, "Params mirror stages")."""

from __future__ import annotations

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


@pytest.mark.parametrize("name", sorted(STAGES))
def test_every_imported_module_is_a_dep(name):
    deps = stage_deps(name)
    script = next(d for d in deps if d.startswith("stages/"))
    out = subprocess.run([sys.executable, "-c", PROBE, str(REPO / script)], cwd=REPO, capture_output=True,
                         text=True, check=True).stdout
    imported = {f"twostream/{m.split('.', 1)[1].replace('.', '/')}.py" for m in json.loads(out)}
    missing = sorted(imported - set(deps))
    assert not missing, f"stage {name} imports {missing}, which dvc.yaml does not list as deps"
