"""The training engine: LR schedule, optimisers, checkpoints, resume, determinism."""

from __future__ import annotations

import json
import logging
import math
import shutil
from pathlib import Path

import numpy as np
import pytest
import torch

from twostream.runtime.config import ModelConfig, TrainConfig
from twostream.learn.dataset import ShardDataset, fit_flow_scale
from twostream.learn import engine
from twostream.learn.engine import Dist, RESUME_ONLY, RunSpec, STOP_ENV, TIMING_KEYS, TrainingInterrupted, WarmupCosine, build_optimizer, build_scheduler, fingerprint, load_checkpoint, model_from_checkpoint, predict, resume, resume_path, save_checkpoint
from twostream.evaluate.trainscore import train_stream
from twostream.learn.metrics import load_scores
from twostream.samples.shards import ShardWriter

CLASSES = ["left", "right", "up"]
SIZE = 16
ROLE_VIDEOS = {"train": 4, "val": 2, "test": 2}  # videos per class, 2 clips each
MODEL = ModelConfig(backbone="resnet18", pretrained="none", hidden=32, dropout=0.5)
TRAIN = TrainConfig(optimizer="adamw", lr=0.002, momentum=0.9, weight_decay=0.05, warmup_epochs=0.5,
                    label_smoothing=0.1, batch_size=8, crop=12, sampling="clip", segments=3,
                    augment="crop", partial_bn=False, workers=0, threads=1)
SPEC = RunSpec("temporal", "flow", 2, 0, MODEL, TRAIN)
VARYING = ("seconds", "samples_per_s")  # wall-clock figures train_stream returns beside the metrics


def write_tiny_shards(out: Path, seed: int = 0) -> Path:
    """rgb and flow shards (``(N, 16, 16, C) uint8``) of 3 classes with the shards stage's writer.

    Class c paints a bright vertical band (rgb, column block c) and moves a square left,
    right or up (flow, stack 1: channels x0, y0; 128 = still). Video ids count up over the
    roles; every video has 2 clips.
    """
    rng = np.random.default_rng(seed)
    params = {"clip": {"frames": 3, "step": 6}, "flow": {"stack": 1, "bound": 20.0},
              "shards": {"clips_per_shard": 16}}
    first = 0
    for role, per_class in ROLE_VIDEOS.items():
        n_videos = per_class * len(CLASSES)
        labels = np.repeat(np.arange(n_videos) % len(CLASSES), 2)
        videos, clips = np.repeat(np.arange(first, first + n_videos), 2), np.tile([0, 1], n_videos)
        first += n_videos
        rgb = rng.integers(0, 60, (len(labels), SIZE, SIZE, 3), dtype=np.uint8)
        flow = rng.integers(124, 133, (len(labels), SIZE, SIZE, 2), dtype=np.uint8)
        for i, c in enumerate(labels):
            rgb[i, :, 5 * c:5 * c + 5, c] = 250
            flow[i, 4:12, 4:12] = [(88, 128), (168, 128), (128, 88)][c]
        for modality, x in (("rgb", rgb), ("flow", flow)):
            (out / modality).mkdir(parents=True, exist_ok=True)
            writer = ShardWriter(out / modality, role, modality, len(labels), 16, CLASSES, params)
            writer.add(x, labels, videos, clips)
            writer.close()
    return out


def run(root: Path, shards: Path, spec: RunSpec = SPEC) -> dict:
    return train_stream(spec, shards, root / "model.pt", root / "metrics.json", root / "scores", root / "live")


def stable(metrics: dict) -> dict:
    return {k: v for k, v in metrics.items() if k not in VARYING}


@pytest.fixture(scope="module")
def shards(tmp_path_factory) -> Path:
    return write_tiny_shards(tmp_path_factory.mktemp("data") / "shards")


@pytest.fixture(scope="module")
def first_run(tmp_path_factory, shards) -> tuple[Path, dict]:
    """An uninterrupted 2-epoch run: (its folder, its metrics)."""
    root = tmp_path_factory.mktemp("first")
    return root, run(root, shards)


def test_warmup_cosine_values():
    f = WarmupCosine(2, 10)
    assert [f(s) for s in (0, 1, 2)] == [0.5, 1.0, 1.0]
    assert f(6) == pytest.approx(0.5) and f(4) == pytest.approx(0.5 * (1 + math.cos(math.pi / 4)))
    assert f(10) == pytest.approx(0.0, abs=1e-12) and f(12) == pytest.approx(0.0, abs=1e-12)
    assert WarmupCosine(0, 4)(0) == 1.0 and WarmupCosine(3, 3)(2) == 1.0
    with pytest.raises(ValueError, match="0 <= warmup_steps <= total_steps"):
        WarmupCosine(5, 4)


def test_scheduler_steps_per_iteration():
    model = torch.nn.Linear(2, 2)
    optimizer = build_optimizer(model, TrainConfig(**{**TRAIN.__dict__, "optimizer": "sgd", "lr": 0.1}))
    scheduler = build_scheduler(optimizer, TRAIN, steps_per_epoch=4, epochs=2)  # warm-up 0.5 epoch = 2 steps
    lrs = []
    for _ in range(8):
        lrs.append(scheduler.get_last_lr()[0])
        optimizer.step()
        scheduler.step()
    expected = [0.05, 0.1] + [0.05 * (1 + math.cos(math.pi * k / 6)) for k in range(6)]
    np.testing.assert_allclose(lrs, expected, rtol=1e-12)
    assert scheduler.get_last_lr()[0] == pytest.approx(0.0, abs=1e-12)


def test_optimizer_choice_and_decay_groups():
    model = torch.nn.Sequential(torch.nn.Conv2d(2, 4, 3), torch.nn.BatchNorm2d(4))
    sgd = build_optimizer(model, TrainConfig(**{**TRAIN.__dict__, "optimizer": "sgd"}))
    assert isinstance(sgd, torch.optim.SGD) and sgd.defaults["momentum"] == 0.9
    assert sgd.defaults["nesterov"] is False
    assert [len(g["params"]) for g in sgd.param_groups] == [1, 3]  # conv weight | conv bias, bn w, bn b
    assert [g["weight_decay"] for g in sgd.param_groups] == [0.05, 0.0]
    adamw = build_optimizer(model, TRAIN)
    assert isinstance(adamw, torch.optim.AdamW) and adamw.defaults["betas"] == (0.9, 0.999)
    with pytest.raises(ValueError, match="train.optimizer must be one of sgd, adamw; got 'adam'"):
        build_optimizer(model, TrainConfig(**{**TRAIN.__dict__, "optimizer": "adam"}))


def test_run_writes_checkpoint_scores_metrics_and_curves(first_run, shards):
    root, metrics = first_run
    written = json.loads((root / "metrics.json").read_text())
    assert written == stable(metrics)  # the headline only: no per-class figures, no timings
    assert sorted(written) == sorted(["video_top1", "video_top5", "clip_top1", "mean_class_acc", "n_videos",
                                      "videos_scored", "val_video_top1", "train_steps"])
    assert metrics["n_videos"] == metrics["videos_scored"] == 6 and metrics["video_top5"] == 1.0
    report = json.loads((root / "scores" / "report.json").read_text())
    assert report["modality"] == "flow" and report["flow_scale"] > 0
    assert report["test"]["n_clips"] == 12 and report["val"]["n_videos"] == 6
    assert sorted(report["test"]["per_class"]) == sorted(CLASSES) and report["test"]["missing"] == []
    assert report["test"]["video_top1"] == metrics["video_top1"]
    assert report["val"]["video_top1"] == metrics["val_video_top1"]
    test = load_scores(root / "scores" / "test.npz")
    assert test.probs.shape == (12, 3) and test.classes == CLASSES
    np.testing.assert_array_equal(test.videos, np.repeat(np.arange(18, 24), 2))
    np.testing.assert_allclose(test.probs.sum(axis=1), 1.0, rtol=1e-5)
    for name in ("train/loss", "val/loss", "val/clip_top1", "val/video_top1", "lr", "time/epoch_s",
                 "time/samples_per_s"):
        rows = (root / "live" / "plots" / "metrics" / f"{name}.tsv").read_text().splitlines()
        assert rows[0] == f"step\t{name.split('/')[-1]}" and [r.split("\t")[0] for r in rows[1:]] == ["1", "2"]
    assert not (root / "live" / "metrics.json").exists()
    assert (root / "model.pt").is_file() and not resume_path(root / "model.pt").exists()  # removed at the end
    assert not list(root.glob("*.tmp"))


def test_resume_path_is_a_sibling_of_the_model():
    assert resume_path(Path("models") / "temporal.pt") == Path("models") / "temporal.resume.pt"
    assert resume_path("m/spatial.pt").parent == Path("m")


def test_checkpoint_round_trip_weights_only(first_run, shards, tmp_path):
    root, metrics = first_run
    checkpoint = load_checkpoint(root / "model.pt")  # weights_only=True inside
    assert (checkpoint["epoch"], checkpoint["modality"], checkpoint["in_channels"]) == (2, "flow", 2)
    assert checkpoint["classes"] == CLASSES and checkpoint["model_config"]["hidden"] == 32
    assert checkpoint["params"]["train"]["crop"] == 12 and checkpoint["shard_params"]["flow"]["bound"] == 20.0
    assert [h["epoch"] for h in checkpoint["history"]] == [1, 2]
    save_checkpoint(tmp_path / "copy.pt", checkpoint)
    assert [p.name for p in tmp_path.iterdir()] == ["copy.pt"]  # no temporary file left
    copy = torch.load(tmp_path / "copy.pt", weights_only=True)
    for key, value in checkpoint["model"].items():
        assert torch.equal(copy["model"][key], value)
    assert copy["flow_scale"] == fit_flow_scale(ShardDataset(shards, "flow", "train", True, 12))
    model = model_from_checkpoint(copy)
    test = ShardDataset(shards, "flow", "test", False, 12, copy["flow_scale"])
    probs, _ = predict(model, test, TRAIN.batch_size, 0, Dist(0, 1, torch.device("cpu")))
    # the stage scored test with the network rebuilt from this checkpoint (model_from_checkpoint)
    # through this same predict: one code path, so the scores are equal bit for bit
    np.testing.assert_array_equal(probs, load_scores(root / "scores" / "test.npz").probs)


def test_two_runs_are_identical(first_run, shards, tmp_path):
    root, metrics = first_run
    assert stable(run(tmp_path, shards)) == stable(metrics)
    a, b = load_checkpoint(root / "model.pt")["model"], load_checkpoint(tmp_path / "model.pt")["model"]
    assert all(torch.equal(a[k], b[k]) for k in a)
    # the model file holds what was learnt, no clock: the same bytes, so DVC skips score and fuse
    assert (tmp_path / "model.pt").read_bytes() == (root / "model.pt").read_bytes()


def test_the_model_file_keeps_what_scoring_and_fine_tuning_need_and_no_more(first_run, shards, tmp_path,
                                                                            monkeypatch):
    root, _ = first_run
    model = load_checkpoint(root / "model.pt")
    assert not set(RESUME_ONLY) & set(model)  # no optimiser, scheduler, RNG states or fingerprint
    assert all(not set(TIMING_KEYS) & set(h) for h in model["history"])
    assert set(model["history"][0]) == {"epoch", "lr", "train_loss", "val_loss", "val_clip_top1", "val_video_top1"}
    assert {"model", "model_config", "params", "classes", "flow_scale", "in_channels", "crop"} <= set(model)
    # the resume file of an interrupted run keeps all of it, timings included
    monkeypatch.setenv(STOP_ENV, "1")
    with pytest.raises(TrainingInterrupted):
        run(tmp_path, shards)
    resumable = load_checkpoint(tmp_path / "model.resume.pt")
    assert set(RESUME_ONLY) <= set(resumable) and set(TIMING_KEYS) <= set(resumable["history"][0])
    weights = sum(t.numel() * t.element_size() for t in model["model"].values())
    assert (root / "model.pt").stat().st_size < (tmp_path / "model.resume.pt").stat().st_size
    assert (root / "model.pt").stat().st_size < 1.1 * weights + 200_000  # the weights and little else


def test_the_fingerprint_follows_the_version_not_the_source(shards, monkeypatch):
    files = sorted((shards / "flow").glob("*.h5"))
    first = fingerprint(SPEC, files)
    assert fingerprint(SPEC, files) == first
    monkeypatch.setattr(engine, "VERSION", engine.VERSION + 1)
    assert fingerprint(SPEC, files) != first


def test_resume_after_interruption_matches_uninterrupted(first_run, shards, tmp_path, monkeypatch, caplog):
    root, metrics = first_run
    monkeypatch.setenv(STOP_ENV, "1")
    with pytest.raises(TrainingInterrupted, match="stopped after epoch 1"):
        run(tmp_path, shards)
    # the per-epoch checkpoint is the resume file; the model (the stage's output) comes last
    assert load_checkpoint(tmp_path / "model.resume.pt")["epoch"] == 1
    assert not (tmp_path / "model.pt").exists() and not (tmp_path / "metrics.json").exists()
    monkeypatch.delenv(STOP_ENV)
    with caplog.at_level(logging.INFO, logger="twostream.learn.engine"):
        resumed = run(tmp_path, shards)
    assert "resuming" in caplog.text and "after epoch 1" in caplog.text
    assert not (tmp_path / "model.resume.pt").exists()
    assert stable(resumed) == stable(metrics)
    a, b = load_checkpoint(root / "model.pt")["model"], load_checkpoint(tmp_path / "model.pt")["model"]
    assert all(torch.equal(a[k], b[k]) for k in a)
    assert (tmp_path / "model.pt").read_bytes() == (root / "model.pt").read_bytes()  # resumed or not, one file
    rows = (tmp_path / "live" / "plots" / "metrics" / "train" / "loss.tsv").read_text().splitlines()
    assert [r.split("\t")[0] for r in rows[1:]] == ["1", "2"]  # the resumed run replays epoch 1


def test_killed_after_training_scores_without_training_again(first_run, shards, tmp_path, monkeypatch):
    """Killed after the last epoch, before the model: the rerun only scores. The model is written
    by rename, never into the old file, which may be DVC's cache itself (a hardlink)."""
    root, metrics = first_run
    cache = tmp_path / "cache"
    cache.write_bytes(b"a cached model")
    (tmp_path / "model.pt").hardlink_to(cache)
    monkeypatch.setenv(STOP_ENV, "2")
    with pytest.raises(TrainingInterrupted, match="stopped after epoch 2"):
        run(tmp_path, shards)
    monkeypatch.delenv(STOP_ENV)
    epochs = []
    resumed = train_stream(SPEC, shards, tmp_path / "model.pt", tmp_path / "metrics.json", tmp_path / "scores",
                           tmp_path / "live", epochs.append)
    assert epochs == [] and stable(resumed) == stable(metrics)
    assert cache.read_bytes() == b"a cached model" and not (tmp_path / "model.pt").samefile(cache)
    assert load_checkpoint(tmp_path / "model.pt")["epoch"] == 2 and not (tmp_path / "model.resume.pt").exists()


def test_other_fingerprint_starts_fresh(first_run, caplog):
    root, _ = first_run
    model = torch.nn.Linear(2, 3)
    optimizer = build_optimizer(model, TRAIN)
    scheduler = build_scheduler(optimizer, TRAIN, 3, 2)
    with caplog.at_level(logging.INFO, logger="twostream.learn.engine"):
        assert resume(root / "model.pt", "other", model, optimizer, scheduler) == (0, [])
    assert "other params, shard data or training version: starting fresh" in caplog.text
    assert resume(root / "absent.pt", "other", model, optimizer, scheduler) == (0, [])


def test_too_few_samples_for_a_batch(shards, tmp_path):
    spec = RunSpec("temporal", "flow", 1, 0, MODEL, TrainConfig(**{**TRAIN.__dict__, "batch_size": 64}))
    with pytest.raises(ValueError, match="24 training samples make no batch of train.batch_size 64"):
        run(tmp_path, shards, spec)


def test_videos_without_samples_count_as_wrong(first_run, shards, tmp_path):
    """Two test videos the index names never reached the shards: the metrics count them as wrong."""
    root, metrics = first_run
    copy = Path(shutil.copytree(shards, tmp_path / "shards"))
    expected = {role: [] for role in ROLE_VIDEOS}
    first = 0
    for role, per_class in ROLE_VIDEOS.items():
        expected[role] = [[v, v % len(CLASSES)] for v in range(first, first + per_class * len(CLASSES))]
        first += per_class * len(CLASSES)
    expected["test"] += [[100, 0], [101, 2]]
    missing = [{"id": v, "path": f"v{v}.avi", "class": CLASSES[c], "label": c, "reason": "frames_report.json: "
                "decode error"} for v, c in ((100, 0), (101, 2))]
    (copy / "flow" / "expected.json").write_text(json.dumps({"expected": expected, "missing": {
        "train": [], "val": [], "test": missing}}))
    again = run(tmp_path, copy)
    assert (again["n_videos"], again["videos_scored"]) == (8, 6)
    assert again["video_top1"] == pytest.approx(metrics["video_top1"] * 6 / 8, abs=1e-6)
    assert again["clip_top1"] == metrics["clip_top1"]  # clips of the scored videos only
    report = json.loads((tmp_path / "scores" / "report.json").read_text())
    assert report["test"]["missing"] == [100, 101] and report["missing"]["test"] == missing
    test = load_scores(tmp_path / "scores" / "test.npz")
    np.testing.assert_array_equal(test.expected_videos, [18, 19, 20, 21, 22, 23, 100, 101])


def _resume_rank(rank: int, port: int, paths: list[str], out: str) -> None:
    """One of two gloo ranks: resume from ``paths[rank]`` (the other rank's node-local copy), save what it got."""
    import torch.distributed as torch_dist

    torch_dist.init_process_group("gloo", init_method=f"tcp://127.0.0.1:{port}", rank=rank, world_size=2)
    try:
        torch.manual_seed(100 + rank)  # other starting weights on each rank
        model = torch.nn.Linear(4, 3)
        optimizer = build_optimizer(model, TRAIN)
        scheduler = build_scheduler(optimizer, TRAIN, 3, 2)
        epoch, history = resume(Path(paths[rank]), "print", model, optimizer, scheduler,
                                Dist(rank, 2, torch.device("cpu")))
        torch.save({"epoch": epoch, "history": history, "weight": model.weight.detach().clone(),
                    "step": scheduler.last_epoch}, f"{out}.{rank}")
    finally:
        torch_dist.destroy_process_group()


def test_rank_0_alone_decides_whether_to_resume_and_sends_the_checkpoint(tmp_path):
    """Under DDP only rank 0 reads the resume file: a rank whose disk lacks it (node-local disks
    on several nodes) still resumes from epoch 1 with rank 0's weights, instead of starting fresh."""
    import socket

    import torch.multiprocessing as mp

    from twostream.learn.engine import rng_states

    torch.manual_seed(0)
    model = torch.nn.Linear(4, 3)
    optimizer = build_optimizer(model, TRAIN)
    scheduler = build_scheduler(optimizer, TRAIN, 3, 2)
    optimizer.step()
    scheduler.step()
    history = [{"epoch": 1, "train_loss": 1.0}]
    save_checkpoint(tmp_path / "resume.pt", {"fingerprint": "print", "model": model.state_dict(), "epoch": 1,
                                             "optimizer": optimizer.state_dict(), "history": history,
                                             "scheduler": scheduler.state_dict(), "rng": rng_states()})
    def free_port() -> int:
        with socket.socket() as s:
            s.bind(("127.0.0.1", 0))
            return s.getsockname()[1]

    paths = [str(tmp_path / "resume.pt"), str(tmp_path / "node1" / "resume.pt")]  # rank 1's disk has none
    mp.spawn(_resume_rank, args=(free_port(), paths, str(tmp_path / "got")), nprocs=2, join=True)
    got = [torch.load(tmp_path / f"got.{rank}", weights_only=True) for rank in (0, 1)]
    for g in got:
        assert (g["epoch"], g["history"], g["step"]) == (1, history, 1)
        assert torch.equal(g["weight"], model.weight.detach())  # rank 0's checkpoint, bit for bit
    # rank 0 decides "fresh" for both when its file has another fingerprint, whatever rank 1's disk holds
    save_checkpoint(tmp_path / "node1" / "resume.pt", torch.load(tmp_path / "resume.pt", weights_only=True))
    save_checkpoint(tmp_path / "resume.pt", {"fingerprint": "other"})
    mp.spawn(_resume_rank, args=(free_port(), paths, str(tmp_path / "fresh")), nprocs=2, join=True)
    for rank in (0, 1):
        fresh = torch.load(tmp_path / f"fresh.{rank}", weights_only=True)
        assert (fresh["epoch"], fresh["history"], fresh["step"]) == (0, [], 0)
