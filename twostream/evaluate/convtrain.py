"""Fusion inside the network for the ``fuse`` stage (``fusion: conv``): train the fused network
(``convfusion``) from the two trained streams, and score val and test through it.

The network is built from ``models/spatial.pt`` and ``models/temporal.pt`` (``build_fused``),
trained on the train videos' paired samples (``pairs``: the RGB and motion samples of the same
clips, through one window) with the streams' own loop (``engine.run_epochs``: the ``train``
params' optimiser, schedule and batch size, ``fuse.epochs`` epochs, a checkpoint every epoch that
a killed run resumes, DDP under ``torchrun``), stopped on val by keeping the val figures of every
epoch in its history, and scored on val and test through the streams' test-time views; the
``fuse`` stage then evaluates those scores into ``metrics/fusion.json``. With another ``fusion``
the stage writes placeholders in their place (``write_placeholder``).
"""

from __future__ import annotations

import json
import os
from dataclasses import asdict
from pathlib import Path
from typing import Any, Callable

import numpy as np
import torch
from torch import nn

from twostream.runtime.config import FuseConfig, TrainConfig, ViewsConfig, result_params
from twostream.learn.convfusion import ConvFusionNet
from twostream.learn.dataset import ShardDataset, shard_files
from twostream.learn.engine import (
    VERSION, Schedule, configure_runtime, fingerprint_of, model_file, resume_path, run_epochs, save_checkpoint,
)
from twostream.runtime.jsonio import write_json
from twostream.learn.metrics import Scores, save_scores
from twostream.learn.models import build_model, channels_last, count_parameters
from twostream.learn.pairs import PairedDataset, PairedPreset, PairedViews
from twostream.learn.scoring import (
    EVAL_ROLES, NO_LABEL, Dist, init_distributed, load_checkpoint, model_from_checkpoint, predict,
)
from twostream.learn.transforms import Preset

FORMAT = 1  # of the fused network's file
KIND = "convfusion"
REPORT_NAME = "report.json"
CONV_KEYS = ("layer", "function", "time", "snippets", "freeze", "epochs", "flow_tower")  # fuse keys of conv


def conv_params(cfg: FuseConfig) -> dict[str, Any]:
    """The ``fuse`` settings of conv fusion."""
    return {key: getattr(cfg, key) for key in CONV_KEYS}


def snippets_of(cfg: FuseConfig | dict[str, Any]) -> int:
    """T: the snippets a sample fuses (1 with time ``none``)."""
    values = cfg if isinstance(cfg, dict) else conv_params(cfg)
    return values["snippets"] if values["time"] == "3d" else 1


def build_fused(spatial: dict[str, Any], temporal: dict[str, Any], conv: dict[str, Any]) -> ConvFusionNet:
    """The fused network from two stream checkpoints (their weights) and the conv settings.

    Raises:
        ValueError: if the streams name other classes, or were trained on other crops.
    """
    if spatial["classes"] != temporal["classes"]:
        raise ValueError(f"the spatial and temporal streams name other classes: {spatial['classes']} vs "
                         f"{temporal['classes']}")
    if spatial["crop"] != temporal["crop"]:
        raise ValueError(f"the streams were trained on {spatial['crop']} and {temporal['crop']} px crops")
    return ConvFusionNet(model_from_checkpoint(spatial), model_from_checkpoint(temporal), temporal["in_channels"],
                         conv["layer"], conv["function"], conv["time"], snippets_of(conv), conv["flow_tower"],
                         conv["freeze"])


def paired_preset(temporal: dict[str, Any], crop: int, train: bool, augment: str = "crop") -> PairedPreset:
    """The RGB preset and the motion stream's preset (for flow: its shards' bound and fitted scale)."""
    modality = temporal["modality"]
    flow = modality == "flow"
    motion = Preset(modality, crop, train, temporal["shard_params"]["flow"]["bound"] if flow else None,
                    temporal["flow_scale"] if flow else None, augment)
    return PairedPreset(Preset("rgb", crop, train, augment=augment), motion)


def role_pair(shard_dir: Path, temporal: dict[str, Any], role: str, crop: int) -> tuple[ShardDataset, ShardDataset]:
    """The RGB and motion datasets of one role (read raw: the paired preset cuts them)."""
    return (ShardDataset(shard_dir, "rgb", role, False, crop),
            ShardDataset(shard_dir, temporal["modality"], role, False, crop, temporal["flow_scale"]))


def describe(spatial: dict[str, Any], temporal: dict[str, Any], conv: dict[str, Any], train: TrainConfig,
             seed: int, model: nn.Module, steps: int) -> dict[str, Any]:
    """What the fused network's file says of itself: enough for ``fused_from_checkpoint`` and ``predict``."""
    streams = {name: {k: c[k] for k in ("model_config", "in_channels", "modality", "crop", "flow_scale",
                                        "shard_params")} for name, c in (("spatial", spatial), ("temporal", temporal))}
    return {"format": FORMAT, "kind": KIND, "classes": list(spatial["classes"]), "conv": conv, "streams": streams,
            "crop": spatial["crop"], "steps_per_epoch": steps, "trainable_params": count_parameters(model),
            "params": {"fuse": conv, "train": result_params(train), "seed": seed}}


def fused_from_checkpoint(checkpoint: dict[str, Any], device: torch.device | None = None) -> ConvFusionNet:
    """Rebuild the fused network from its file alone: weights loaded, eval mode, channels_last."""
    streams = {}
    for name, s in checkpoint["streams"].items():
        cfg = s["model_config"]
        streams[name] = build_model(cfg["backbone"], len(checkpoint["classes"]), s["in_channels"], "none",
                                    cfg["hidden"], cfg["dropout"])
    conv = checkpoint["conv"]
    model = ConvFusionNet(streams["spatial"], streams["temporal"], checkpoint["streams"]["temporal"]["in_channels"],
                          conv["layer"], conv["function"], conv["time"], snippets_of(conv), conv["flow_tower"],
                          conv["freeze"])
    model.load_state_dict(checkpoint["model"])
    return channels_last(model, device or torch.device("cpu")).eval()


def score_fused(model: nn.Module, shard_dir: Path, checkpoint: dict[str, Any], views: ViewsConfig, batch: int,
                workers: int, dist: Dist) -> dict[str, Scores]:
    """Scores of val and test through the fused network, each row a scored clip (time none: the
    streams' ``views.snippets`` clips of each video) or a video (3d), each through ``views.crops`` crops."""
    temporal = {**checkpoint["streams"]["temporal"]}
    preset = paired_preset(temporal, checkpoint["crop"], False)
    out = {}
    for role in EVAL_ROLES:
        rgb, motion = role_pair(shard_dir, temporal, role, checkpoint["crop"])
        data = PairedViews(rgb, motion, preset, snippets_of(checkpoint["conv"]), views.snippets, views.crops)
        probs, _ = predict(model, data, batch, workers, dist)
        expected = data.expected or (None, None)
        out[role] = Scores(probs, data.labels, data.videos, data.clips, data.classes, *expected)
        data.close()
    return out


def train_conv_fusion(spatial_path: str | os.PathLike, temporal_path: str | os.PathLike,
                      shard_dir: str | os.PathLike, model_path: str | os.PathLike, scores_dir: str | os.PathLike,
                      live_dir: str | os.PathLike, cfg: FuseConfig, train: TrainConfig, views: ViewsConfig, seed: int,
                      on_epoch: Callable[[dict[str, Any]], None] | None = None) -> dict[str, Any]:
    """Train the fused network, write it, and score val and test through it.

    Args:
        spatial_path, temporal_path: the trained streams (``models/<stream>.pt``).
        shard_dir: ``data/shards`` (rgb and the temporal stream's modality).
        model_path: ``models/convfusion.pt`` (``engine.model_file``; resumed from ``resume_path``).
        scores_dir: ``data/scores/conv``: ``val.npz``, ``test.npz`` and ``report.json`` (the
            settings, trainable parameters, steps and training seconds).
        live_dir: dvclive folder of the per-epoch curves.
        cfg: the ``fuse`` params; train: the ``train`` params; views: the test-time views; seed: ``base.seed``.

    Returns:
        ``{"trainable_params", "train_steps", "seconds", "val_video_top1", "test_video_top1"}``.
    """
    dist = init_distributed()
    configure_runtime(train, dist)
    spatial, temporal = load_checkpoint(spatial_path), load_checkpoint(temporal_path)
    conv, shard_dir, crop, snippets = conv_params(cfg), Path(shard_dir), spatial["crop"], snippets_of(cfg)
    model = build_fused(spatial, temporal, conv)
    train_set = PairedDataset(*role_pair(shard_dir, temporal, "train", crop),
                              paired_preset(temporal, crop, True, train.augment), snippets)
    val_set = PairedDataset(*role_pair(shard_dir, temporal, "val", crop), paired_preset(temporal, crop, False),
                            snippets)
    files = [Path(spatial_path), Path(temporal_path)] + [
        p for modality in ("rgb", temporal["modality"]) for role in ("train", *EVAL_ROLES)
        for p in shard_files(shard_dir, modality, role)]
    print_ = fingerprint_of({"kind": KIND, "fuse": conv, "train": result_params(train), "seed": seed,
                             "version": VERSION}, files)
    checkpoint = run_epochs(model, train_set, val_set, Schedule(train, cfg.epochs, seed), print_,
                            resume_path(model_path), Path(live_dir), dist, on_epoch,
                            lambda steps: describe(spatial, temporal, conv, train, seed, model, steps))
    if dist.main:
        save_checkpoint(model_path, model_file(checkpoint))
        resume_path(model_path).unlink(missing_ok=True)
    fused = fused_from_checkpoint(model_file(checkpoint), dist.device)  # as predict rebuilds it
    scores = score_fused(fused, shard_dir, checkpoint, views, train.batch_size, train.workers, dist)
    results = {role: s.evaluate() for role, s in scores.items()}
    seconds = sum(h["seconds"] for h in checkpoint["history"])
    summary = {"trainable_params": checkpoint["trainable_params"],
               "train_steps": checkpoint["steps_per_epoch"] * checkpoint["epoch"], "seconds": round(seconds, 1),
               "val_video_top1": results["val"]["video_top1"], "test_video_top1": results["test"]["video_top1"]}
    if dist.main:
        for role, s in scores.items():
            save_scores(Path(scores_dir) / f"{role}.npz", s)
        write_json(Path(scores_dir) / REPORT_NAME, {"trained": True, "conv": conv, "views": asdict(views),
                                                     **summary, **results})
    return summary


class ArraySamples:
    """One video's samples of one modality in memory, with what ``PairedViews`` reads of a dataset."""

    def __init__(self, samples: np.ndarray, classes: list[str]) -> None:
        self.samples, self.classes, self.modality = samples, classes, "memory"  # (C, H, W, channels) uint8
        self.videos = np.zeros(len(samples), np.int64)
        self.clips = np.arange(len(samples), dtype=np.int64)
        self.labels = np.full(len(samples), NO_LABEL, np.int64)
        self.expected, self.missing, self.role = None, [], "predict"

    def raw(self, i: int) -> np.ndarray:
        return self.samples[int(i)]

    def close(self) -> None:
        pass


def score_video(checkpoint: dict[str, Any], rgb: np.ndarray, motion: np.ndarray, views: ViewsConfig,
                model: nn.Module | None = None) -> np.ndarray:
    """The fused network's scores ``(R, K)`` of one video's clips (``predict``): its RGB and motion
    samples ``(C, H, W, 3)`` and ``(C, H, W, C_m)`` uint8 through the test-time views, rows as the
    stage scores them (scored clips, or one row of T snippets with time 3d)."""
    model = model if model is not None else fused_from_checkpoint(checkpoint)
    preset = paired_preset(checkpoint["streams"]["temporal"], checkpoint["crop"], False)
    data = PairedViews(ArraySamples(rgb, checkpoint["classes"]), ArraySamples(motion, checkpoint["classes"]), preset,
                       snippets_of(checkpoint["conv"]), views.snippets, views.crops)
    batch = checkpoint["params"]["train"]["batch_size"]
    probs, _ = predict(model, data, batch, 0, Dist(0, 1, torch.device("cpu")))
    return probs


def write_placeholder(model_path: str | os.PathLike, scores_dir: str | os.PathLike, live_dir: str | os.PathLike,
                      method: str) -> None:
    """The conv outputs of the ``fuse`` stage when ``fusion`` is not conv: files that say so."""
    Path(model_path).parent.mkdir(parents=True, exist_ok=True)
    save_checkpoint(model_path, {"format": FORMAT, "kind": KIND, "trained": False, "fusion": method})
    write_json(Path(scores_dir) / REPORT_NAME, {"trained": False, "fusion": method})
    Path(live_dir).mkdir(parents=True, exist_ok=True)
    (Path(live_dir) / "README.txt").write_text(f"No fused network was trained: fusion is {method}, not conv.\n",
                                               encoding="utf-8")


def read_report(scores_dir: str | os.PathLike) -> dict[str, Any]:
    """The stage's report (``trained`` false when another fusion was chosen)."""
    return json.loads((Path(scores_dir) / REPORT_NAME).read_text(encoding="utf-8"))
