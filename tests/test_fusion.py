"""Fusion: the three methods' exact behaviour, the inner split, saving, and the fuse stage end to end."""

from __future__ import annotations

import csv
import json
import re
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import yaml

from twostream.learn.scoring import load_checkpoint
from sklearn.svm import LinearSVC

from conftest import REPO, run
from twostream.runtime.config import FuseConfig
from twostream.evaluate.fusion import (
    METHODS, SCORE_METHODS, AverageFusion, NetworkFusion, SVMFusion, build_fusion, check_aligned, check_method, fuse,
    holdout_mask, load_fusion, log_features, save_fusion, svm_features,
)
from twostream.learn.metrics import Scores, save_scores

CLASSES = ["a", "b", "c", "d"]
CFG = FuseConfig(weights=[1.0, 1.0], hidden=16, lr=0.05, weight_decay=0.0, max_epochs=300, patience=30,
                 holdout=0.25, svm_c=1.0, layer="layer4", function="conv", time="none", snippets=1, freeze=True,
                 epochs=1, flow_tower=0.5)


def complementary(videos_per_class: int, seed: int) -> tuple[Scores, Scores]:
    """Toy streams, two clips per video, each right on one pair of classes only.

    a/b videos: spatial puts 0.6 on the true class and 0.34 on its pair-mate; temporal 0.7
    on the mate and 0.24 on the true one. c/d videos: temporal 0.9 true / 0.04 mate,
    spatial 0.5 mate / 0.44 true. Every other class gets 0.03; a seeded jitter of up to
    0.02 moves mass between the two main entries. So spatial is right on a/b, temporal
    on c/d, and averaging follows the surer stream: right on c/d, wrong on a/b (0.5 each),
    while a linear map of both (swap temporal's a/b) is right everywhere.
    """
    rng = np.random.default_rng(seed)
    labels = np.repeat(np.arange(4), videos_per_class * 2)
    videos = np.repeat(np.arange(4 * videos_per_class), 2)
    clips = np.tile([0, 1], 4 * videos_per_class)
    spatial = np.full((len(labels), 4), 0.03)
    temporal = np.full((len(labels), 4), 0.03)
    for i, y in enumerate(labels):
        mate = y ^ 1
        j1, j2 = rng.uniform(-0.02, 0.02, 2)
        if y < 2:
            spatial[i, y], spatial[i, mate] = 0.6 + j1, 0.34 - j1
            temporal[i, mate], temporal[i, y] = 0.7 + j2, 0.24 - j2
        else:
            temporal[i, y], temporal[i, mate] = 0.9 + j1, 0.04 - j1 / 2
            temporal[i, 0] += j1 / 2  # keeps the row's sum at 1 and the mate positive
            spatial[i, mate], spatial[i, y] = 0.5 + j2, 0.44 - j2
    return (Scores(spatial, labels, videos, clips, CLASSES), Scores(temporal, labels, videos, clips, CLASSES))


def test_check_method_lists_the_choices():
    assert [check_method(m) for m in METHODS] == ["average", "network", "svm", "conv"]
    with pytest.raises(ValueError, match=r"fusion must be one of average, network, svm, conv; got 'max'"):
        check_method("max")
    with pytest.raises(ValueError, match="got 'max'"):
        build_fusion("max", CFG, 0)


def test_average_is_the_weighted_mean():
    p1 = np.array([[0.5, 0.5, 0.0], [1.0, 0.0, 0.0]])
    p2 = np.array([[0.0, 0.5, 0.5], [0.0, 0.0, 1.0]])
    fused = AverageFusion([1.0, 3.0]).fit([p1, p2], np.zeros(2), np.zeros(2)).predict_proba([p1, p2])
    np.testing.assert_allclose(fused, [[0.125, 0.5, 0.375], [0.25, 0.0, 0.75]], rtol=0, atol=1e-15)
    for bad in ([1.0], [1.0, -1.0], [0.0, 0.0]):
        with pytest.raises(ValueError, match=r"fuse.weights must be 2 numbers >= 0 .*got " + re.escape(str(bad))):
            AverageFusion(bad).fit([p1, p2], np.zeros(2), np.zeros(2))
    with pytest.raises(ValueError, match=r"need 2 score arrays .* got shapes \[\(2, 3\), \(2, 2\)\]"):
        AverageFusion([1, 1]).fit([], None, None).predict_proba([p1, p2[:, :2]])


def test_holdout_is_by_video_stratified_and_seeded():
    labels = np.repeat([0, 0, 0, 0, 1, 1, 1, 1, 2], 2)  # 4, 4 and 1 video(s) of 2 clips
    videos = np.repeat(np.arange(9), 2)
    held = holdout_mask(labels, videos, 0.25, seed=3)
    assert held.shape == (18,) and held.sum() == 4  # one video (2 clips) of each 4-video class
    held_videos = np.unique(videos[held])
    assert sorted(labels[held_videos * 2]) == [0, 1]  # never the lone video of class 2
    assert all(held[videos == v].all() for v in held_videos)  # whole videos
    np.testing.assert_array_equal(held, holdout_mask(labels, videos, 0.25, seed=3))
    assert holdout_mask(labels, videos, 0.5, seed=3).sum() == 8
    singles = holdout_mask(np.arange(8), np.arange(8), 0.25, seed=3)  # one video per class: 2 of all 8
    assert singles.sum() == 2
    with pytest.raises(ValueError, match="an inner split needs at least 2 videos; got 1"):
        holdout_mask(np.zeros(3), np.zeros(3), 0.25, 0)
    with pytest.raises(ValueError, match=r"fuse.holdout must be in \(0, 1\); got 1.0"):
        holdout_mask(labels, videos, 1.0, 0)


def test_network_learns_what_averaging_cannot_and_is_repeatable(tmp_path):
    val, test = complementary(12, seed=0), complementary(10, seed=1)
    truth = test[0].labels
    average = AverageFusion([1, 1]).fit([], None, None).predict_proba([s.probs for s in test])
    assert (average.argmax(1) == truth).mean() == 0.5  # right on c/d only
    settings = dict(hidden=CFG.hidden, lr=CFG.lr, weight_decay=CFG.weight_decay, max_epochs=CFG.max_epochs,
                    patience=CFG.patience, holdout=CFG.holdout, seed=0)
    net = NetworkFusion(**settings)
    net.fit([s.probs for s in val], val[0].labels, val[0].videos)
    fused = net.predict_proba([s.probs for s in test])
    assert fused.shape == (80, 4) and (fused.argmax(1) == truth).all()
    np.testing.assert_allclose(fused.sum(1), 1.0, atol=1e-12)
    assert 1 <= net.best_epoch_ <= CFG.max_epochs and net.inputs_ == 8 and net.classes_ == 4
    again = NetworkFusion(**settings)  # same settings: bit-identical fit
    again.fit([s.probs for s in val], val[0].labels, val[0].videos)
    np.testing.assert_array_equal(again.predict_proba([s.probs for s in test]), fused)
    save_fusion(tmp_path / "f.pt", "network", CFG, 0, net, CLASSES)
    method, loaded, classes = load_fusion(tmp_path / "f.pt")
    assert (method, classes) == ("network", CLASSES)
    np.testing.assert_array_equal(loaded.predict_proba([s.probs for s in test]), fused)
    linear = NetworkFusion(0, 0.05, 0.0, 300, 30, 0.25, 0).fit([s.probs for s in val], val[0].labels,
                                                                 val[0].videos)
    assert list(dict(linear.net_.named_parameters())) == ["weight", "bias"]


def test_log_features_floor():
    x = log_features([np.array([[1.0, 0.0]], np.float32), np.array([[0.5, 0.5]], np.float32)])
    np.testing.assert_allclose(x, np.log([[1.0, 1e-6, 0.5, 0.5]]).astype(np.float32), rtol=1e-6)


def test_svm_is_linear_svc_on_l2_normalised_stacked_scores(tmp_path):
    val, test = complementary(12, seed=0), complementary(10, seed=1)
    feats = svm_features([s.probs for s in val])
    np.testing.assert_allclose(np.linalg.norm(feats, axis=1), 1.0, atol=1e-12)
    np.testing.assert_allclose(feats[0] * np.linalg.norm(np.r_[val[0].probs[0], val[1].probs[0]]),
                               np.r_[val[0].probs[0], val[1].probs[0]], atol=1e-12)
    svm = SVMFusion(CFG.svm_c, 0).fit([s.probs for s in val], val[0].labels, val[0].videos)
    reference = LinearSVC(C=CFG.svm_c, random_state=0).fit(feats, val[0].labels)
    test_feats = svm_features([s.probs for s in test])
    np.testing.assert_allclose(svm.decision_function([s.probs for s in test]),
                               reference.decision_function(test_feats), atol=1e-12)
    fused = svm.predict_proba([s.probs for s in test])
    assert (fused.argmax(1) == test[0].labels).all()
    np.testing.assert_allclose(fused.sum(1), 1.0, atol=1e-12)
    save_fusion(tmp_path / "s.pt", "svm", CFG, 0, svm, CLASSES)
    np.testing.assert_array_equal(load_fusion(tmp_path / "s.pt")[1].predict_proba([s.probs for s in test]), fused)
    # a class without training clips gets no score; two classes make a symmetric pair of functions
    keep = val[0].labels != 3
    partial = SVMFusion(1.0, 0).fit([s.probs[keep] for s in val], val[0].labels[keep], val[0].videos[keep])
    assert partial.predict_proba([s.probs for s in test])[:, 3].max() < 1e-300
    two = val[0].labels < 2
    binary = SVMFusion(1.0, 0).fit([s.probs[two] for s in val], val[0].labels[two], val[0].videos[two])
    d = binary.decision_function([s.probs for s in test])
    np.testing.assert_array_equal(d[:, 0], -d[:, 1])
    with pytest.raises(ValueError, match="fuse.svm_c must be > 0; got 0.0"):
        SVMFusion(0.0, 0).fit([s.probs for s in val], val[0].labels, val[0].videos)


def test_scores_must_align():
    spatial, temporal = complementary(2, seed=0)
    check_aligned([spatial, temporal])
    moved = Scores(temporal.probs, temporal.labels, temporal.videos, temporal.clips[::-1], CLASSES)
    with pytest.raises(ValueError, match=r"row 0: spatial scores video 0 clip 0 \(label 0\), temporal video 0 "
                                         r"clip 1 \(label 0\)"):
        check_aligned([spatial, moved])
    renamed = Scores(temporal.probs, temporal.labels, temporal.videos, temporal.clips, ["a", "b", "c", "e"])
    with pytest.raises(ValueError, match="different classes"):
        check_aligned([spatial, renamed])


def write_scores(root: Path) -> None:
    """``<root>/{spatial,temporal}/{val,test}.npz`` of the complementary toy streams."""
    for role, (n, seed) in {"val": (12, 0), "test": (10, 1)}.items():
        for name, scores in zip(("spatial", "temporal"), complementary(n, seed)):
            save_scores(root / name / f"{role}.npz", scores)


@pytest.mark.parametrize("method", SCORE_METHODS)
def test_fuse_writes_metrics_model_and_plots(tmp_path, method):
    write_scores(tmp_path / "scores")
    out = tmp_path / "out"
    metrics = fuse(tmp_path / "scores", out / "fusion.json", out / "fusion.pt", out / "plots", method, CFG, 0,
                   out / "cost.json")
    cost = json.loads((out / "cost.json").read_text())
    assert cost["method"] == method and cost["fit_seconds"] >= 0
    k = len(CLASSES)  # two streams: 2k inputs
    assert cost["trainable_params"] == {"average": 0, "network": 2 * k * 16 + 16 + 16 * k + k, "svm": k * 2 * k + k}[method]
    written = json.loads((out / "fusion.json").read_text())
    assert written == {k: v for k, v in metrics.items() if k != "streams"} and written["method"] == method
    assert sorted(written) == sorted(["video_top1", "video_top5", "clip_top1", "mean_class_acc", "n_videos",
                                      "videos_scored", "val_video_top1", "method"])  # the headline only
    assert metrics["n_videos"] == metrics["videos_scored"] == 40
    assert metrics["streams"] == {"spatial": 0.5, "temporal": 0.5}  # each right on one pair
    assert metrics["video_top1"] == (0.5 if method == "average" else 1.0)
    with open(out / "plots" / "confusion.csv", newline="") as f:
        rows = list(csv.DictReader(f))
    assert len(rows) == 40 and set(rows[0]) == {"actual", "predicted"}
    correct = sum(r["actual"] == r["predicted"] for r in rows)
    assert correct == round(40 * metrics["video_top1"])
    with open(out / "plots" / "per_class.csv", newline="") as f:
        per_class = list(csv.DictReader(f))
    assert len(per_class) == 3 * 4 and per_class[0] == {"class": "a", "method": "spatial", "label": "a spatial",
                                                        "accuracy": "1.0"}
    assert (out / "plots" / "per_class.png").read_bytes()[:4] == b"\x89PNG"
    loaded_method, fusion, classes = load_fusion(out / "fusion.pt")
    assert (loaded_method, classes) == (method, CLASSES)


STAGE_ARGS = ["data/scores", "m.json", "f.pt", "plots", "cost.json", "models/spatial.pt", "models/temporal.pt",
              "data/shards", "models/convfusion.pt", "data/scores/conv", "live"]


def test_stage_rejects_an_unknown_method(tmp_path):
    params = yaml.safe_load((REPO / "params.yaml").read_text())
    params["fusion"] = "vote"
    (tmp_path / "params.yaml").write_text(yaml.safe_dump(params))
    write_scores(tmp_path / "data" / "scores")
    proc = subprocess.run([sys.executable, str(REPO / "stages" / "fuse.py"), *STAGE_ARGS], cwd=tmp_path,
                          capture_output=True, text=True)
    assert proc.returncode != 0
    assert "fusion must be one of average, network, svm, conv; got 'vote'" in proc.stderr
    params["fusion"] = "svm"
    (tmp_path / "params.yaml").write_text(yaml.safe_dump(params))
    proc = run([sys.executable, str(REPO / "stages" / "fuse.py"), *STAGE_ARGS], tmp_path)
    assert proc.stdout.startswith("fuse (svm): test video top-1 1.000 (spatial 0.500, temporal 0.500)")
    # a late fusion trains no network: the conv outputs say so
    assert load_checkpoint(tmp_path / "models/convfusion.pt") == {"format": 1, "kind": "convfusion", "trained": False,
                                                                  "fusion": "svm"}
    assert json.loads((tmp_path / "data/scores/conv/report.json").read_text()) == {"fusion": "svm", "trained": False}


def test_dvc_yaml_fuse_stage_reads_the_scores_and_for_conv_the_streams():
    stage = yaml.safe_load((REPO / "dvc.yaml").read_text())["stages"]["fuse"]
    assert stage["params"][:4] == ["base.seed", "fusion", "fuse", "views"]
    assert all(p.startswith("train.") and p not in ("train.workers", "train.threads") for p in stage["params"][4:])
    data_deps = [d for d in stage["deps"] if d.startswith(("data/", "models/"))]
    assert data_deps == ["data/scores/spatial", "data/scores/temporal", "models/spatial.pt", "models/temporal.pt",
                         "data/shards/rgb", "data/shards/${temporal.input}", "data/frames"]
    plots = {k: v for p in stage["plots"] for k, v in p.items()}
    assert plots["plots/fusion/confusion.csv"]["template"] == "confusion"
    assert list(stage["metrics"][0]) == ["metrics/fusion.json"]
