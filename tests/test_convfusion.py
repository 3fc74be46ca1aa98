"""Fusion inside the network: the fused network's shapes and initialisation, frozen layers, the
paired samples, training with resume, scoring as predict scores, and what only it can learn."""

from __future__ import annotations

import json
import logging
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

from conftest import REPO, run, set_params, venv_env
from test_engine import CLASSES, MODEL, SPEC, TRAIN, write_tiny_shards
from twostream.bench.correspondence import ROLES, run_seed
from twostream.runtime.config import FuseConfig, ViewsConfig
from twostream.learn.convfusion import FUNCTIONS, LAYERS, ConvFusionNet
from twostream.evaluate.convtrain import fused_from_checkpoint, paired_preset, role_pair, score_fused, train_conv_fusion
from twostream.learn.engine import STOP_ENV, RunSpec, TrainingInterrupted, build_optimizer, load_checkpoint, train_model
from twostream.evaluate.evaluation import score_model
from twostream.learn.metrics import HEADLINE, load_scores
from twostream.learn.models import build_model
from twostream.learn.pairs import PairedDataset, PairedViews
from twostream.learn.scoring import Dist
from twostream.learn.transforms import Window

K = 5


def streams(motion_channels: int = 4) -> tuple[torch.nn.Module, torch.nn.Module]:
    torch.manual_seed(0)
    return (build_model("resnet18", K, 3, hidden=32).eval(), build_model("resnet18", K, motion_channels, hidden=32).eval())


@pytest.mark.parametrize("layer", LAYERS)
@pytest.mark.parametrize("function", FUNCTIONS)
@pytest.mark.parametrize("time, snippets", [("none", 1), ("3d", 3)])
def test_every_layer_function_and_time_gives_video_scores(layer, function, time, snippets):
    net = ConvFusionNet(*streams(), 4, layer, function, time, snippets)
    x = torch.randn(2, snippets * (3 + 4), 64, 64)
    assert net.train()(x).shape == (2, K)
    with torch.no_grad():
        scores = net.eval()(x).exp()  # eval: log of the towers' combined softmax
    assert scores.shape == (2, K) and torch.allclose(scores.sum(dim=1), torch.ones(2), atol=1e-5)


def test_conv_fusion_starts_as_the_sum_of_the_two_trunks():
    net = ConvFusionNet(*streams(), 4, "layer3", "conv").eval()
    with torch.no_grad():
        a, b, fused = net.fused_features(torch.randn(3, 7, 64, 64))
    assert a.shape == b.shape == fused.shape == (3, 256, 4, 4)
    torch.testing.assert_close(fused, a + b, rtol=1e-5, atol=1e-5)  # the 1x1 conv is [I, I], bias 0


def test_concat_starts_as_the_spatial_stream_and_3d_time_as_a_max_over_snippets():
    spatial, temporal = streams()
    x = torch.randn(2, 7, 64, 64)
    with torch.no_grad():
        alone = spatial(x[:, :3]).log_softmax(dim=1)
        for layer in LAYERS:  # the widened layers weigh the motion half by zero
            net = ConvFusionNet(spatial, temporal, 4, layer, "concat", flow_tower=0.0).eval()
            torch.testing.assert_close(net(x), alone, rtol=1e-4, atol=1e-4)
        net = ConvFusionNet(spatial, temporal, 4, "layer4", "sum", "3d", 3).eval()
        video = torch.randn(2, 3 * 7, 64, 64)
        _, _, per_snippet = net.fused_features(video)  # (6, 512, 2, 2)
        pooled = torch.nn.functional.max_pool2d(per_snippet, 3, 1, 1).reshape(2, 3, 512, 2, 2).amax(dim=1)
        torch.testing.assert_close(net.over_time(per_snippet), pooled, rtol=1e-5, atol=1e-5)  # identity 3D conv


def test_frozen_layers_are_unchanged_by_a_training_step():
    net = ConvFusionNet(*streams(), 4, "layer3", "conv", freeze=True).train()
    frozen = {k: v.clone() for k, v in net.state_dict().items() if k.startswith(("appearance.", "motion.", "tower."))}
    fusion_before = net.fusion.conv.weight.clone()
    optimizer = build_optimizer(net, TRAIN)
    loss = torch.nn.functional.cross_entropy(net(torch.randn(4, 7, 64, 64)), torch.tensor([0, 1, 2, 3]))
    loss.backward()
    optimizer.step()
    after = net.state_dict()
    assert all(torch.equal(after[k], v) for k, v in frozen.items())  # weights and BatchNorm statistics
    assert not torch.equal(net.fusion.conv.weight, fusion_before)
    trainable = {n.split(".")[0] for n, p in net.named_parameters() if p.requires_grad}
    assert trainable == {"fusion", "above"}
    unfrozen = ConvFusionNet(*streams(), 4, "layer3", "conv", freeze=False)
    assert {n.split(".")[0] for n, p in unfrozen.named_parameters() if p.requires_grad} == \
        {"appearance", "motion", "fusion", "above"}  # the flow tower is never trained


def test_the_video_score_weighs_the_flow_tower():
    spatial, temporal = streams()
    x = torch.randn(2, 7, 64, 64)
    with torch.no_grad():
        fused = ConvFusionNet(spatial, temporal, 4, "layer4", "sum", flow_tower=0.0).eval()(x).exp()
        tower = temporal(x[:, 3:]).softmax(dim=1)
        mixed = ConvFusionNet(spatial, temporal, 4, "layer4", "sum", flow_tower=0.25).eval()(x).exp()
    torch.testing.assert_close(mixed, 0.75 * fused + 0.25 * tower, rtol=1e-5, atol=1e-6)


@pytest.fixture(scope="module")
def trained(tmp_path_factory) -> tuple[Path, Path]:
    """Tiny shards and both streams trained on them (the flow stream of test_engine, and an rgb one)."""
    root = tmp_path_factory.mktemp("conv")
    shards = write_tiny_shards(root / "shards")
    train_model(SPEC, shards, root / "temporal.pt", root / "live_t")
    train_model(RunSpec("spatial", "rgb", 1, 0, MODEL, TRAIN), shards, root / "spatial.pt", root / "live_s")
    return root, shards


def conv_config(**changes) -> FuseConfig:
    values = dict(weights=[1.0, 1.0], hidden=8, lr=0.01, weight_decay=0.0, max_epochs=10, patience=5, holdout=0.25,
                  svm_c=1.0, layer="layer3", function="conv", time="none", snippets=1, freeze=True, epochs=2,
                  flow_tower=0.5)
    values.update(changes)
    return FuseConfig(**values)


def test_paired_samples_are_cut_through_one_window(trained):
    root, shards = trained
    temporal = load_checkpoint(root / "temporal.pt")
    rgb, flow = role_pair(shards, temporal, "train", 12)
    preset = paired_preset(temporal, 12, False)
    x = preset.apply(rgb.raw(0), flow.raw(0), Window(2, 3, 12, 12, flip=True))
    assert x.shape == (3 + 2, 12, 12)
    torch.testing.assert_close(x[:3], preset.rgb.apply(rgb.raw(0), Window(2, 3, 12, 12, True)))
    torch.testing.assert_close(x[3:], preset.motion.apply(flow.raw(0), Window(2, 3, 12, 12, True)))
    unflipped = preset.motion.apply(flow.raw(0), Window(2, 3, 12, 12))
    torch.testing.assert_close(x[3], -unflipped[0].flip(-1))  # a flip negates the flow's x
    videos = PairedDataset(rgb, flow, paired_preset(temporal, 12, True), snippets=2)
    assert len(videos) == 12 and videos[0][0].shape == (2 * 5, 12, 12)  # a video's 2 snippets, stacked
    views = PairedViews(*role_pair(shards, temporal, "test", 12), preset, 1, 0, 10)
    assert len(views) == 12 and views[0][0].shape == (10, 5, 12, 12)  # every clip, 10 crops


def test_training_resumes_after_a_kill_and_scores_as_predict_does(trained, tmp_path, monkeypatch, caplog):
    root, shards = trained
    views, cfg = ViewsConfig(snippets=0, crops=1), conv_config()
    args = (root / "spatial.pt", root / "temporal.pt", shards)
    a, b = tmp_path / "a", tmp_path / "b"  # one file name in each: torch.save records it in the file
    whole = train_conv_fusion(*args, a / "conv.pt", a / "scores", a / "live", cfg, TRAIN, views, 0)
    monkeypatch.setenv(STOP_ENV, "1")
    with pytest.raises(TrainingInterrupted):
        train_conv_fusion(*args, b / "conv.pt", b / "scores", b / "live", cfg, TRAIN, views, 0)
    assert load_checkpoint(b / "conv.resume.pt")["epoch"] == 1 and not (b / "conv.pt").exists()
    monkeypatch.delenv(STOP_ENV)
    with caplog.at_level(logging.INFO, logger="twostream.learn.engine"):
        resumed = train_conv_fusion(*args, b / "conv.pt", b / "scores", b / "live", cfg, TRAIN, views, 0)
    assert "resuming" in caplog.text and {k: v for k, v in resumed.items() if k != "seconds"} == \
        {k: v for k, v in whole.items() if k != "seconds"}
    assert (b / "conv.pt").read_bytes() == (a / "conv.pt").read_bytes()  # the same model, byte for byte
    checkpoint = load_checkpoint(a / "conv.pt")
    assert checkpoint["trainable_params"] == whole["trainable_params"] and "optimizer" not in checkpoint
    scores = score_fused(fused_from_checkpoint(checkpoint), shards, checkpoint, views, TRAIN.batch_size, 0,
                         Dist(0, 1, torch.device("cpu")))
    np.testing.assert_array_equal(scores["test"].probs, load_scores(a / "scores" / "test.npz").probs)
    assert scores["test"].classes == CLASSES


def test_conv_fusion_over_time_trains_and_scores(trained, tmp_path):
    """`fuse.time: 3d` through the fuse stage's training and scoring: its 3D convolution's 5-D weights
    go to the device beside the channels_last 4-D ones, and every test video gets a score."""
    root, shards = trained
    cfg = conv_config(layer="layer4", time="3d", snippets=2, epochs=1)
    result = train_conv_fusion(root / "spatial.pt", root / "temporal.pt", shards, tmp_path / "conv.pt",
                               tmp_path / "scores", tmp_path / "live", cfg, TRAIN, ViewsConfig(snippets=0, crops=1), 0)
    checkpoint = load_checkpoint(tmp_path / "conv.pt")
    assert checkpoint["conv"]["time"] == "3d" and result["trainable_params"] == checkpoint["trainable_params"] > 0
    test = load_scores(tmp_path / "scores" / "test.npz")
    assert test.classes == CLASSES and np.isfinite(test.probs).all()
    np.testing.assert_allclose(test.probs.sum(axis=1), 1.0, atol=1e-5)


@pytest.mark.slow
def test_only_conv_fusion_learns_which_colour_moves(tmp_path):
    """Two squares of one luminance, one moves, the class is which colour: each stream and every
    late fusion stays near chance (0.5 on 200 test videos: above 0.65 is 4 standard deviations);
    conv fusion at layer3 does not (0.915, 0.970, 0.965 for seeds 0, 1, 2 when measured; docs/fusion.md)."""
    top1 = run_seed(tmp_path, seed=0, layers=("layer3",))
    assert ROLES["test"] == 200
    for method in ("spatial", "temporal", "average", "network", "svm"):
        assert top1[method] < 0.65, (method, top1)
    assert top1["conv_layer3"] > 0.8, top1


def test_the_fuse_stage_trains_conv_under_torchrun_and_resumes_after_a_kill(trained, tmp_path):
    """`fusion: conv` in the fuse stage, as dvc.yaml runs it, on two ranks: stopped after epoch 1,
    run again, it trains epoch 2 only; the metrics keep their keys and say conv."""
    root, shards = trained
    set_params(tmp_path, REPO / "params.yaml", fusion="conv", model={"hidden": 32},
               train={"batch_size": 8, "crop": 12, "workers": 0, "threads": 1},
               fuse={"layer": "layer3", "epochs": 2})
    (tmp_path / "data").mkdir()
    (tmp_path / "data" / "shards").symlink_to(shards)
    (tmp_path / "models").mkdir()
    for stream in ("spatial", "temporal"):
        shutil.copy(root / f"{stream}.pt", tmp_path / "models" / f"{stream}.pt")
        score_model(load_checkpoint(root / f"{stream}.pt"), shards, ViewsConfig(0, 1), tmp_path / "m.json",
                    tmp_path / "data" / "scores" / stream)
    args = ["data/scores", "metrics/fusion.json", "models/fusion.pt", "plots/fusion", "metrics/fusion_cost.json",
            "models/spatial.pt", "models/temporal.pt", "data/shards", "models/convfusion.pt", "data/scores/conv",
            "dvclive/convfusion"]
    ddp = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "2",
           str(REPO / "stages" / "fuse.py"), *args]
    stopped = subprocess.run(ddp, cwd=tmp_path, env={**venv_env(), STOP_ENV: "1"}, capture_output=True, text=True)
    assert stopped.returncode != 0 and "stopped after epoch 1" in stopped.stdout + stopped.stderr
    assert load_checkpoint(tmp_path / "models" / "convfusion.resume.pt")["epoch"] == 1
    proc = run(ddp, tmp_path)
    epochs = [line.split(":")[0] for line in proc.stdout.splitlines() if line.startswith("fuse (conv) epoch")]
    assert epochs == ["fuse (conv) epoch 2/2"]  # epoch 1 came from the resume file
    assert not (tmp_path / "models" / "convfusion.resume.pt").exists()
    metrics = json.loads((tmp_path / "metrics" / "fusion.json").read_text())
    assert metrics["method"] == "conv" and sorted(metrics) == sorted([*HEADLINE, "val_video_top1", "method"])
    assert metrics["n_videos"] == 6
    cost = json.loads((tmp_path / "metrics" / "fusion_cost.json").read_text())
    assert cost["method"] == "conv" and cost["trainable_params"] == \
        load_checkpoint(tmp_path / "models" / "convfusion.pt")["trainable_params"] > 0
