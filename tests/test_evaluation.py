"""evaluation.score_model: val and test through the test-time views, the files it writes."""

from __future__ import annotations

import json

import numpy as np
import torch

from test_engine import CLASSES, write_tiny_shards
from twostream.runtime.config import ViewsConfig
from twostream.learn.dataset import ShardDataset
from twostream.evaluate.evaluation import score_model, score_roles
from twostream.learn.metrics import load_scores
from twostream.learn.models import build_model
from twostream.learn.scoring import Dist, model_from_checkpoint

CPU = Dist(0, 1, torch.device("cpu"))


def checkpoint(seed: int = 0) -> dict:
    """A flow stream checkpoint of a random tiny ResNet-18, trained 2 epochs of 3 steps (the keys scoring reads)."""
    torch.manual_seed(seed)
    model = build_model("resnet18", len(CLASSES), 2, "none", 16, 0.0)
    return {"format": 2, "stream": "temporal", "modality": "flow", "classes": CLASSES, "in_channels": 2,
            "crop": 12, "flow_scale": 0.5, "params": {"train": {"batch_size": 8}}, "steps_per_epoch": 3, "epoch": 2,
            "model_config": {"backbone": "resnet18", "pretrained": "none", "hidden": 16, "dropout": 0.0},
            "shard_params": {"clip": {"frames": 3, "step": 6}, "flow": {"stack": 1, "bound": 20.0}},
            "model": model.state_dict()}


def test_a_video_scores_the_mean_softmax_of_its_views(tmp_path):
    shards = write_tiny_shards(tmp_path / "shards")
    ck = checkpoint()
    scores, missing = score_roles(ck, shards, ViewsConfig(snippets=1, crops=10), CPU)
    assert set(scores) == {"val", "test"} and missing == {"val": [], "test": []}
    test = scores["test"]
    np.testing.assert_array_equal(test.videos, np.arange(18, 24))  # one row a video: 1 snippet
    np.testing.assert_array_equal(test.clips, np.ones(6))  # the middle of 2 clips
    # by hand: each of the 10 windows scored alone, softmax, mean (another batching: a tolerance)
    data = ShardDataset(shards, "flow", "test", False, 12, 0.5)
    model = model_from_checkpoint(ck)
    i = int(np.flatnonzero((data.videos == 20) & (data.clips == 1))[0])
    with torch.no_grad():
        views = data.transform.views(data.raw(i), 10).contiguous(memory_format=torch.channels_last)
        by_hand = model(views).softmax(dim=1).mean(dim=0).numpy()
    np.testing.assert_allclose(test.probs[2], by_hand, atol=1e-5)
    every = score_roles(ck, shards, ViewsConfig(snippets=0, crops=1), CPU)[0]["test"]
    assert len(every.videos) == 12 and not np.allclose(every.probs[1::2], test.probs, atol=1e-4)


def test_score_model_writes_scores_report_and_metrics(tmp_path):
    shards = write_tiny_shards(tmp_path / "shards")
    metrics = score_model(checkpoint(), shards, ViewsConfig(snippets=0, crops=3), tmp_path / "m.json",
                          tmp_path / "scores")
    assert json.loads((tmp_path / "m.json").read_text()) == metrics
    assert metrics["train_steps"] == 6 and metrics["n_videos"] == metrics["videos_scored"] == 6
    report = json.loads((tmp_path / "scores" / "report.json").read_text())
    assert report["views"] == {"snippets": 0, "crops": 3} and report["stream"] == "temporal"
    assert report["test"]["video_top1"] == metrics["video_top1"]
    val = load_scores(tmp_path / "scores" / "val.npz")
    assert val.probs.shape == (12, 3) and val.classes == CLASSES
    again = score_model(checkpoint(), shards, ViewsConfig(snippets=0, crops=3), tmp_path / "m2.json",
                        tmp_path / "scores2")
    assert again == metrics  # one code path twice: the same figures
    np.testing.assert_array_equal(load_scores(tmp_path / "scores2" / "val.npz").probs, val.probs)
