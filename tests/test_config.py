"""Tests of twostream.runtime.config: every section checked once, when built, with one-line messages."""

from __future__ import annotations

import copy
import subprocess
import sys
from dataclasses import fields
from pathlib import Path

import pytest
import yaml

from twostream.runtime.config import (
    RULES, BaseConfig, ClipConfig, DataConfig, DemoConfig, ExecutorConfig, FlowConfig, FramesConfig, FuseConfig,
    ModelConfig, ParamsError, ResampleConfig, ShardsConfig, StreamConfig, TemporalConfig, TrainConfig, ViewsConfig,
    choice, load_params, section, stage_main,
)

REPO = Path(__file__).resolve().parents[1]
SECTIONS = {"base": BaseConfig, "demo_data": DemoConfig, "data": DataConfig, "executor": ExecutorConfig,
            "frames": FramesConfig,
            "resample": ResampleConfig, "clip": ClipConfig, "flow": FlowConfig, "shards": ShardsConfig,
            "model": ModelConfig, "train": TrainConfig, "spatial": StreamConfig, "temporal": TemporalConfig,
            "views": ViewsConfig, "fuse": FuseConfig}
FUSIONS = ("average", "network", "svm")


@pytest.fixture
def params() -> dict:
    """The repository's params.yaml, a fresh copy per test."""
    return copy.deepcopy(load_params(REPO / "params.yaml"))


def test_the_repository_params_validate(params):
    built = {name: section(params, name, cls) for name, cls in SECTIONS.items()}
    assert built["model"] == ModelConfig(backbone="resnet18", pretrained="none", hidden=512, dropout=0.5)
    assert built["fuse"].weights == [1.0, 1.0]
    assert choice(params, "fusion", FUSIONS) == "average"
    assert set(params) == set(SECTIONS) | {"fusion"}  # every section of the file has a dataclass here


def test_every_rule_names_a_field():
    for cls, rules in RULES.items():
        assert set(rules) <= {f.name for f in fields(cls)}, cls.__name__
    assert set(SECTIONS.values()) <= set(RULES)


@pytest.mark.parametrize("name, key, value, message", [
    ("model", "backbone", "vgg16", "model.backbone must be one of resnet18, resnet50; got 'vgg16'"),
    ("train", "lr", "abc", "train.lr must be a number > 0; got 'abc'"),
    ("train", "lr", 0, "train.lr must be a number > 0; got 0"),
    ("train", "batch_size", 2.5, "train.batch_size must be an integer >= 1; got 2.5"),
    ("train", "batch_size", True, "train.batch_size must be an integer >= 1; got True"),
    ("train", "sampling", "videos", "train.sampling must be one of clip, segments; got 'videos'"),
    ("train", "segments", 0, "train.segments must be an integer >= 1; got 0"),
    ("train", "augment", "scale", "train.augment must be one of crop, multiscale; got 'scale'"),
    ("views", "crops", 5, "views.crops must be one of 1, 3, 10; got 5"),
    ("executor", "kind", "spark", "executor.kind must be one of local, ray; got 'spark'"),
    ("executor", "gpus_per_task", -1, "executor.gpus_per_task must be a number >= 0; got -1"),
    ("views", "snippets", -1, "views.snippets must be an integer >= 0 (0 = every clip); got -1"),
    ("train", "epochs_", 1, "unknown key train.epochs_; allowed: optimizer, lr, momentum, weight_decay, "
                            "warmup_epochs, label_smoothing, batch_size, crop, sampling, segments, augment, "
                            "partial_bn, workers, threads"),
    ("temporal", "input", "rgb", "temporal.input must be one of flow, sg3i; got 'rgb'"),
    ("flow", "backend", "cuda", "flow.backend must be one of opencv, torch, auto; got 'cuda'"),
    ("data", "split", 4, "data.split must be one of 1, 2, 3; got 4"),
    ("data", "split", True, "data.split must be one of 1, 2, 3; got True"),
    ("data", "unused_as_train", "no", "data.unused_as_train must be true or false; got 'no'"),
    ("data", "format", "kinetics", "data.format must be one of auto, hmdb51, ucf101, folders, list; got 'kinetics'"),
    ("demo_data", "layout", "auto", "demo_data.layout must be one of hmdb51, ucf101, folders, list; got 'auto'"),
    ("model", "dropout", 1, "model.dropout must be a number in [0, 1); got 1"),
    ("model", "pretrained", "weights.pth",
     "model.pretrained must be none, imagenet or an existing .pth/.pt file; got 'weights.pth'"),
    ("frames", "workers", -1, "frames.workers must be an integer >= 0 (0 = all cores); got -1"),
    ("resample", "fps", float("nan"), "resample.fps must be a number >= 0 (0 = every frame); got nan"),
    ("fuse", "weights", [1.0, -1.0],
     "fuse.weights must be 2 numbers >= 0 (spatial, temporal) with a sum > 0; got [1.0, -1.0]"),
    ("fuse", "holdout", 1.0, "fuse.holdout must be a number in (0, 1); got 1.0"),
])
def test_a_bad_value_is_named_in_one_line(params, name, key, value, message):
    params[name][key] = value
    with pytest.raises(ParamsError) as e:
        section(params, name, SECTIONS[name])
    assert str(e.value) == f"params: {message}"


def test_missing_keys_and_sections_are_named(params):
    del params["model"]["hidden"]
    with pytest.raises(ParamsError) as e:
        section(params, "model", ModelConfig)
    assert str(e.value) == "params: missing key model.hidden; allowed: backbone, pretrained, hidden, dropout"
    params["model"].update(depth=18, width=2)
    with pytest.raises(ParamsError) as e:
        section(params, "model", ModelConfig)
    assert str(e.value) == ("params: unknown keys model.depth, model.width; missing key model.hidden; "
                            "allowed: backbone, pretrained, hidden, dropout")
    with pytest.raises(ParamsError, match=r"^params: missing section shards; sections: base, demo_data, "):
        section({k: v for k, v in params.items() if k != "shards"}, "shards", ShardsConfig)
    with pytest.raises(ParamsError) as e:
        section({"clip": 3}, "clip", ClipConfig)
    assert str(e.value) == "params: clip must be a mapping with keys frames, step; got 3"


def test_top_level_choice(params):
    params["fusion"] = "max"
    with pytest.raises(ParamsError) as e:
        choice(params, "fusion", FUSIONS)
    assert str(e.value) == "params: fusion must be one of average, network, svm; got 'max'"
    del params["fusion"]
    with pytest.raises(ParamsError) as e:
        choice(params, "fusion", FUSIONS)
    assert str(e.value) == "params: missing top-level key fusion (one of average, network, svm)"


def test_stage_main_turns_only_params_errors_into_one_line(tmp_path, monkeypatch):
    def bad(argv: list[str]) -> None:
        raise ParamsError(f"params: train.lr must be a number > 0; got {argv[0]!r}")

    with pytest.raises(SystemExit) as e:
        stage_main("train", bad, ["abc"])
    assert e.value.code == "train: params: train.lr must be a number > 0; got 'abc'"
    monkeypatch.chdir(tmp_path)
    with pytest.raises(SystemExit) as e:
        stage_main("fuse", lambda argv: load_params(), [])
    assert e.value.code == f"fuse: params: no params.yaml in {tmp_path} (stages run from the repository root)"
    with pytest.raises(FileNotFoundError):  # a missing input is not a params error: it keeps its traceback
        stage_main("fuse", lambda argv: open(tmp_path / "scores.npz"), [])
    def library_bug(argv: list[str]) -> None:
        raise ValueError("not a params error")

    with pytest.raises(ValueError, match="not a params error"):
        stage_main("fuse", library_bug, [])


@pytest.mark.parametrize("argv", [
    ["train.py", "spatial", "data/shards", "models/spatial.pt", "dvclive/spatial"],
    ["score.py", "spatial", "models/spatial.pt", "data/shards", "metrics/spatial.json", "data/scores/spatial"],
    ["fuse.py", "data/scores", "metrics/fusion.json", "models/fusion.pt", "plots/fusion", "metrics/fusion_cost.json",
     "models/spatial.pt", "models/temporal.pt", "data/shards", "models/convfusion.pt", "data/scores/conv",
     "dvclive/convfusion"],
])
def test_stage_stops_on_a_bad_param_with_one_line_before_reading_data(params, tmp_path, argv):
    params["model"]["backbone"] = "vgg16"  # train reads it
    params["fusion"] = "max"  # fuse reads it
    params["views"]["crops"] = 5  # score reads it
    (tmp_path / "params.yaml").write_text(yaml.safe_dump(params))
    proc = subprocess.run([sys.executable, str(REPO / "stages" / argv[0]), *argv[1:]], cwd=tmp_path,
                          capture_output=True, text=True)
    assert proc.returncode == 1 and proc.stdout == ""
    assert "Traceback" not in proc.stderr and proc.stderr.count("\n") == 1
    expected = {"train.py": "train: params: model.backbone must be one of resnet18, resnet50; got 'vgg16'",
                "fuse.py": "fuse: params: fusion must be one of average, network, svm, conv; got 'max'",
                "score.py": "score: params: views.crops must be one of 1, 3, 10; got 5"}
    assert proc.stderr == expected[argv[0]] + "\n"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["params.yaml"]  # nothing written


def test_dvc_yaml_lists_every_key_that_decides_an_output_and_no_execution_key():
    from dataclasses import fields

    from twostream.runtime.config import EXECUTION_KEYS, DemoConfig, FlowConfig, FramesConfig, TrainConfig

    stages = yaml.safe_load((REPO / "dvc.yaml").read_text())["stages"]
    listed = {"demo_data": stages["demo_data"]["params"], "frames": stages["frames"]["params"],
              "flow": stages["flow"]["params"], "train": stages["train"]["do"]["params"]}
    for name, cls in (("demo_data", DemoConfig), ("frames", FramesConfig), ("flow", FlowConfig),
                      ("train", TrainConfig)):
        keys = [p.split(".", 1)[1] for p in listed[name] if p.startswith(f"{name}.")]
        assert keys == [f.name for f in fields(cls) if f.name not in EXECUTION_KEYS[cls]], name
        assert name not in listed[name]  # never the whole section: it holds execution keys
    every = [p for stage in stages.values() for p in (stage.get("do", stage).get("params") or [])]
    assert not [p for p in every if str(p).split(".")[0] == "executor"]  # all of it execution only
