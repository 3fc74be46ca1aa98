"""Scoring with a stream checkpoint: the one code path of the score stage, ``predict`` and the tests.

A checkpoint becomes a network with ``model_from_checkpoint`` (weights loaded, eval mode,
channels_last on its device) and its input transform with ``eval_transform``; ``predict``
runs a dataset of ``(x, label, video)`` samples, or of their test-time views, through the
network in batches. The score stage scores val and test by rebuilding the network from the
train stage's checkpoint (``evaluation.score_model``), and ``python -m twostream predict``
scores a new video's clips with ``score_samples``, which wraps them in a ``SampleDataset``
and calls the same ``predict``. So both use the same memory layout, batch size and
autocast: oneDNN (and cuDNN) pick their kernels by layout, and on some CPUs NCHW and
channels_last differ in the 7th digit. ``init_distributed`` joins torchrun's process group.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch
import torch.distributed as torch_dist
from torch import nn
from torch.utils.data import DataLoader, Dataset, Subset

from twostream.learn.models import build_model, channels_last
from twostream.learn.transforms import Preset, eval_preset

EVAL_ROLES = ("val", "test")  # the roles scored after training (their shards' bytes enter the fingerprint)

NO_LABEL = -100  # label of a sample without one: cross-entropy's default ignore_index


@dataclass(frozen=True)
class Dist:
    """This process's place in a (possibly one-process) run."""

    rank: int
    world: int
    device: torch.device

    @property
    def main(self) -> bool:  # the process that writes files
        return self.rank == 0


def init_distributed() -> Dist:
    """Join torchrun's process group when ``WORLD_SIZE`` > 1 (NCCL on GPU, else gloo)."""
    world = int(os.environ.get("WORLD_SIZE", "1"))
    rank, local = int(os.environ.get("RANK", "0")), int(os.environ.get("LOCAL_RANK", "0"))
    if torch.cuda.is_available():
        torch.cuda.set_device(local)
        device = torch.device("cuda", local)
    else:
        device = torch.device("cpu")
    if world > 1 and not torch_dist.is_initialized():
        torch_dist.init_process_group("nccl" if device.type == "cuda" else "gloo")
    return Dist(rank, world, device)


def to_device(x: torch.Tensor, device: torch.device) -> torch.Tensor:
    """A ``(B, C, H, W) float32`` batch on ``device``, stored channels_last.

    channels_last suits cuDNN's tensor cores and oneDNN alike: on the 2-core AVX2 CPU
    ResNet-18 training steps ran ~8% more samples per CPU-second than in NCHW.
    """
    return x.to(device, non_blocking=True, memory_format=torch.channels_last)


def load_checkpoint(path: str | os.PathLike) -> dict[str, Any]:
    """Read a checkpoint with ``weights_only=True`` (tensors and plain values only), onto the CPU."""
    return torch.load(path, map_location="cpu", weights_only=True)


def model_from_checkpoint(checkpoint: dict[str, Any], device: torch.device | None = None) -> nn.Module:
    """Rebuild the stream network from a checkpoint alone: weights loaded, eval mode,
    channels_last on ``device`` (default CPU), as training ran it."""
    cfg = checkpoint["model_config"]
    model = build_model(cfg["backbone"], len(checkpoint["classes"]), checkpoint["in_channels"], "none",
                        cfg["hidden"], cfg["dropout"])
    model.load_state_dict(checkpoint["model"])
    return channels_last(model, device or torch.device("cpu")).eval()


def eval_transform(checkpoint: dict[str, Any]) -> Preset:
    """The evaluation transform of a checkpoint's stream: its modality, crop, and for flow the
    quantisation bound of its shards and the scale fitted on its train split."""
    modality = checkpoint["modality"]
    if modality != "flow":
        return eval_preset(modality, checkpoint["crop"])
    return eval_preset(modality, checkpoint["crop"], checkpoint["shard_params"]["flow"]["bound"],
                       checkpoint["flow_scale"])


class SampleDataset(Dataset):
    """``(x (crops, C, crop, crop), NO_LABEL, 0)`` for in-memory samples ``(N, H, W, C) uint8``:
    the ``crops`` test-time views of each through the eval ``transform`` (``Preset.views``), as
    ``dataset.ViewDataset`` gives the score stage its shards' samples."""

    def __init__(self, samples: np.ndarray, transform: Preset, crops: int = 1) -> None:
        self.samples, self.transform, self.crops = samples, transform, crops
        self.views_per_sample = crops  # what ``predict`` batches by

    def __len__(self) -> int:
        return len(self.samples)

    def __getitem__(self, i: int) -> tuple[torch.Tensor, np.int64, np.int64]:
        return self.transform.views(self.samples[int(i)], self.crops), np.int64(NO_LABEL), np.int64(0)


@torch.no_grad()
def predict(model: nn.Module, dataset: Dataset, batch_size: int, workers: int,
            dist: Dist) -> tuple[np.ndarray, float]:
    """Softmax scores of every sample, the ranks sharing the work in contiguous blocks.

    A sample of several views, ``x (V, C, H, W)`` (``dataset.ViewDataset``,
    ``dataset.SegmentDataset``), scores the mean of its views' softmax, and its loss is the
    negative log of that mean; the loader then takes ``batch_size // V`` samples at a time
    (at least 1), so the network still sees about ``batch_size`` inputs per call.

    Args:
        model: a network in eval mode on ``dist.device`` (``model_from_checkpoint``).
        dataset: ``(x (C, H, W) or (V, C, H, W) float32, label, video)`` samples.
        batch_size, workers: DataLoader batch size and worker processes.
        dist: this process's rank, world size and device.

    Returns:
        ``probs (N, K) float32`` in dataset order (on every rank) and the mean plain
        cross-entropy over the labelled samples (no label smoothing; 0 without labels).
    """
    n = len(dataset)
    start, stop = n * dist.rank // dist.world, n * (dist.rank + 1) // dist.world
    views = getattr(dataset, "views_per_sample", 1)  # ViewDataset, SegmentDataset, SampleDataset: V
    loader = DataLoader(Subset(dataset, range(start, stop)), batch_size=max(1, batch_size // views),
                        num_workers=workers, pin_memory=dist.device.type == "cuda")
    model.eval()
    probs, loss, labelled = [], 0.0, 0
    for x, y, _ in loader:
        y = y.to(dist.device)
        with torch.autocast(dist.device.type, torch.bfloat16, enabled=dist.device.type == "cuda"):
            logits = model(to_device(x.flatten(0, 1) if x.dim() == 5 else x, dist.device)).float()
        if x.dim() == 5:  # (B, V, C, H, W): the mean softmax of each sample's views
            p = logits.softmax(dim=1).view(*x.shape[:2], -1).mean(dim=1)
            loss += float(nn.functional.nll_loss(p.clamp_min(1e-12).log(), y, reduction="sum",
                                                 ignore_index=NO_LABEL))
        else:
            loss += float(nn.functional.cross_entropy(logits, y, reduction="sum", ignore_index=NO_LABEL))
            p = logits.softmax(dim=1)
        labelled += int((y != NO_LABEL).sum())
        probs.append(p.cpu().numpy())
    block = np.concatenate(probs) if probs else np.zeros((0, _classes(model)), np.float32)
    parts = [(start, block, loss, labelled)]
    if dist.world > 1:
        parts = [None] * dist.world
        torch_dist.all_gather_object(parts, (start, block, loss, labelled))
    parts.sort(key=lambda p: p[0])
    total_loss, total_labelled = sum(p[2] for p in parts), sum(p[3] for p in parts)
    return np.concatenate([p[1] for p in parts]).astype(np.float32), total_loss / max(total_labelled, 1)


def _classes(model: nn.Module) -> int:
    """Outputs of the network's last linear layer (shape of an empty score block)."""
    return [m for m in model.modules() if isinstance(m, nn.Linear)][-1].out_features


def score_samples(checkpoint: dict[str, Any], samples: np.ndarray, device: torch.device | None = None,
                  model: nn.Module | None = None, crops: int = 1) -> np.ndarray:
    """Softmax scores ``(N, K) float32`` of a stream for samples ``(N, H, W, C) uint8``, each the
    mean over its ``crops`` test-time crops, in batches of the checkpoint's ``train.batch_size``
    views, exactly as the score stage scores its shards.

    Args:
        checkpoint: a stream checkpoint (``load_checkpoint``).
        samples: the samples as the shards store them.
        device: where to run (default CPU).
        model: the checkpoint's network, if already built (``model_from_checkpoint``).
        crops: 1, 3 or 10 (``transforms.view_windows``).
    """
    device = device or torch.device("cpu")
    model = model if model is not None else model_from_checkpoint(checkpoint, device)
    data = SampleDataset(samples, eval_transform(checkpoint), crops)
    probs, _ = predict(model, data, checkpoint["params"]["train"]["batch_size"], 0, Dist(0, 1, device))
    return probs
