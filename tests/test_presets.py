"""presets.yaml: every preset names real params with valid values; the CLI prints `dvc exp run -S` arguments."""

from __future__ import annotations

import subprocess
import sys

import pytest
import yaml

from conftest import REPO
from test_config import SECTIONS
from twostream.runtime.config import choice, section
from twostream.runtime.presets import PresetError, apply, load_presets, main, set_args, value_text

PRESETS = load_presets(REPO / "presets.yaml")


def test_the_issue_presets_are_there():
    assert {"demo-segments", "demo-one-view", "demo-ten-crops", "demo-dense-flow", "hmdb51-seed-mode1",
            "hmdb51-seed-mode2", "hmdb51-simonyan-zisserman", "hmdb51-tsn", "ucf101-seed", "ucf101-simonyan-zisserman",
            "ucf101-tsn", "hmdb51-feichtenhofer"} <= set(PRESETS)
    conv = PRESETS["hmdb51-feichtenhofer"]["set"]
    assert (conv["fusion"], conv["fuse.layer"], conv["fuse.time"], conv["fuse.snippets"]) == ("conv", "layer4", "3d", 5)
    tsn = PRESETS["hmdb51-tsn"]["set"]
    assert (tsn["train.sampling"], tsn["flow.stack"], tsn["resample.fps"], tsn["train.partial_bn"]) == (
        "segments", 5, 0, True)
    assert (tsn["views.snippets"], tsn["views.crops"], tsn["train.augment"]) == (25, 10, "multiscale")
    assert PRESETS["demo-dense-flow"]["set"]["flow.stack"] == 5 and PRESETS["demo-dense-flow"]["set"][
        "resample.fps"] == 0


@pytest.mark.parametrize("name", sorted(PRESETS))
def test_every_preset_makes_valid_params(name):
    params = apply(yaml.safe_load((REPO / "params.yaml").read_text()), PRESETS[name])
    for key, cls in SECTIONS.items():
        section(params, key, cls)  # raises ParamsError on a bad value
    choice(params, "fusion", ("average", "network", "svm", "conv"))
    assert params["clip"]["frames"] - 1 >= params["flow"]["stack"]  # a clip holds its flow stack
    for field in ("about", "expect", "needs"):
        assert PRESETS[name][field].strip()


def test_the_arguments_parse_back_to_the_values():
    args = set_args(PRESETS["hmdb51-tsn"])
    assert args[0::2] == ["-S"] * len(PRESETS["hmdb51-tsn"]["set"])
    back = {a.split("=", 1)[0]: yaml.safe_load(a.split("=", 1)[1]) for a in args[1::2]}  # as DVC reads -S
    assert back == PRESETS["hmdb51-tsn"]["set"]
    assert (value_text(True), value_text([1.0, 1.5]), value_text("sgd"), value_text(0.0005)) == (
        "true", "[1.0,1.5]", "sgd", "0.0005")


def test_cli_prints_arguments_and_the_list(tmp_path):
    out = subprocess.run([sys.executable, "-m", "twostream", "preset", "demo-one-view"], cwd=REPO,
                         capture_output=True, text=True, check=True).stdout
    assert out == "-S views.snippets=1 -S views.crops=1\n"
    listing = main(None, True, REPO / "presets.yaml")
    assert all(f"\n{name}\n" in f"\n{listing}" for name in PRESETS)
    bad = subprocess.run([sys.executable, "-m", "twostream", "preset", "tsn"], cwd=REPO, capture_output=True,
                         text=True)
    assert bad.returncode == 1 and bad.stderr.startswith("preset: error: no preset 'tsn'; presets: demo-segments")
    missing = subprocess.run([sys.executable, "-m", "twostream", "preset", "x"], cwd=tmp_path, capture_output=True,
                             text=True)
    assert missing.returncode == 1 and "no presets.yaml in" in missing.stderr


def test_a_preset_may_not_invent_params():
    params = yaml.safe_load((REPO / "params.yaml").read_text())
    with pytest.raises(PresetError, match="preset key train.segment: params.yaml has no such key"):
        apply(params, {"set": {"train.segment": 3}})
    with pytest.raises(PresetError, match="no section tsn"):
        apply(params, {"set": {"tsn.k": 3}})
    assert apply(params, {"set": {"fusion": "svm"}})["fusion"] == "svm" and params["fusion"] == "average"


def test_the_docs_name_every_preset():
    docs = "".join(p.read_text() for p in [REPO / "README.md", *sorted((REPO / "docs").glob("*.md"))])
    missing = [name for name in PRESETS if f"`{name}`" not in docs]
    assert not missing, missing
