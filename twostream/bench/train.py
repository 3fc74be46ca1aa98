"""Benchmarks of the training input: ``loader`` (DataLoader vs training steps) and ``train``.

- ``loader``: samples/s that ``ShardDataset`` (train preset) delivers through a shuffling
  ``DataLoader`` with one worker per core, and samples/s of training steps of the demo
  model (ResNet-18 of ``twostream.models``, forward + backward + AdamW) on batches of it
  held in memory; ``ratio`` = loader / train (goal >= 3). Shards come from ``--shards``
  (``data/shards``) or a small synthetic set written to a temp dir.
- ``train``: training samples/s of the ``train`` stage's own loop (``engine.train_one_epoch``
  on ``engine.train_loader``: shard reads, transforms and DataLoader included, params.yaml's
  ``model``, ``train``, ``base.seed``) and of the same loop over random batches already in
  memory (the limit), interleaved, medians over repeats; ``ratio`` = real / limit (goal >= 0.85).

torch is imported inside the functions: the other benchmarks do not need it.
"""

from __future__ import annotations

import argparse
import dataclasses
import statistics
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np

from twostream.config import load_params, section


LOADER_SYNTHETIC = {"samples": 512, "size": 64, "classes": 12, "stack": 2, "bound": 20.0}


def synthetic_shards(out_dir: Path, seed: int = 0) -> None:
    """A small shard set like the demo's (``LOADER_SYNTHETIC``): noisy images, flow mostly still."""
    from twostream.shards import MODALITIES, ShardWriter

    cfg, rng = LOADER_SYNTHETIC, np.random.default_rng(seed)
    n, s = cfg["samples"], cfg["size"]
    params = {"clip": {"frames": 3, "step": 6}, "flow": {"stack": cfg["stack"], "bound": cfg["bound"]},
              "shards": {"clips_per_shard": n}}
    flow = np.full((n, s, s, 2 * cfg["stack"]), 128, np.uint8)
    flow[:, s // 4:s // 2, s // 4:s // 2] = rng.integers(100, 156, (n, s // 4, s // 4, 2 * cfg["stack"]))
    samples = {"rgb": rng.integers(0, 256, (n, s, s, 3), dtype=np.uint8), "flow": flow,
               "sg3i": rng.integers(0, 256, (n, s, s, 3), dtype=np.uint8)}
    labels = np.arange(n) % cfg["classes"]
    for modality in MODALITIES:
        (out_dir / modality).mkdir(parents=True, exist_ok=True)
        writer = ShardWriter(out_dir / modality, "train", modality, n, n,
                             [f"class{c}" for c in range(cfg["classes"])], params)
        writer.add(samples[modality], labels, np.arange(n) // 3, np.arange(n) % 3)


def loader_rate(loader: Any, seconds: float) -> tuple[float, int]:
    """Samples/s a DataLoader delivers over about ``seconds`` (first batch, worker start-up, untimed)."""
    batches = iter(loader)
    next(batches)
    n, start = 0, time.perf_counter()
    while time.perf_counter() - start < seconds:
        for x, _, _ in batches:
            n += len(x)
            if time.perf_counter() - start >= seconds:
                break
        else:
            batches = iter(loader)  # next epoch; persistent workers stay up
    return n / (time.perf_counter() - start), n


def train_rate(model: Any, batches: list, device: Any, seconds: float) -> tuple[float, int]:
    """Samples/s of forward + backward + AdamW steps on pre-loaded batches (first step untimed)."""
    import torch

    optimizer = torch.optim.AdamW(model.parameters(), lr=1e-3)
    model.train()

    def step(x: Any, y: Any) -> None:
        optimizer.zero_grad(set_to_none=True)
        torch.nn.functional.cross_entropy(model(x), y).backward()
        optimizer.step()

    step(*batches[0])
    if device.type == "cuda":
        torch.cuda.synchronize()
    n, start = 0, time.perf_counter()
    while time.perf_counter() - start < seconds:
        for x, y in batches:
            step(x, y)
            n += len(x)
        if device.type == "cuda":
            torch.cuda.synchronize()
    return n / (time.perf_counter() - start), n


def bench_loader(args: argparse.Namespace) -> dict[str, Any]:
    """Samples/s of ShardDataset through a DataLoader vs training steps of the demo model."""
    import os

    import torch  # imported here: the other benchmarks do not need it
    from torch.utils.data import DataLoader

    from twostream.dataset import training_dataset
    from twostream.models import build_model

    with tempfile.TemporaryDirectory() as tmp:
        shard_dir, source = Path(args.shards), args.shards
        if not (shard_dir / args.modality).is_dir():
            shard_dir, source = Path(tmp), f"synthetic ({LOADER_SYNTHETIC['samples']} samples, 64x64)"
            synthetic_shards(shard_dir)
        probe = training_dataset(shard_dir, args.modality, 1)
        crop = args.crop or int(min(probe.sample_shape[:2]) * 7 // 8)
        dataset = training_dataset(shard_dir, args.modality, crop)
        device = torch.device("cuda" if torch.cuda.is_available() else "cpu")
        workers = os.cpu_count() or 1
        loader = DataLoader(dataset, batch_size=args.batch, shuffle=True, num_workers=workers,
                            persistent_workers=True, pin_memory=device.type == "cuda", drop_last=True)
        torch.manual_seed(0)
        load, n_loaded = loader_rate(loader, args.seconds)
        batches = [(x.to(device), y.to(device)) for (x, y, _), _ in zip(loader, range(4))]
        del loader  # stops the workers before training takes the cores
    torch.manual_seed(0)
    model = build_model("resnet18", dataset.num_classes, dataset.in_channels).to(device)
    train, n_trained = train_rate(model, batches, device, args.seconds)
    return {"bench": "loader", "source": source, "modality": args.modality, "samples": len(dataset),
            "shape": [args.batch, dataset.in_channels, crop, crop], "workers": workers,
            "device": str(device), "torch_threads": torch.get_num_threads(),
            "model": "twostream.models.build_model('resnet18'), AdamW",
            "loader_samples_per_s": round(load, 1), "train_samples_per_s": round(train, 1),
            "ratio": round(load / train, 2), "timed_samples": {"loader": n_loaded, "train": n_trained}}


def bench_train(args: argparse.Namespace) -> dict[str, Any]:
    """Samples/s of the train stage's loop with its shard loader vs the same loop on in-memory batches."""
    import itertools

    import torch  # imported here: the other benchmarks do not need it

    from twostream.config import BaseConfig, ModelConfig, TrainConfig
    from twostream.dataset import training_dataset
    from twostream.engine import (
        Dist, RunSpec, build_optimizer, build_scheduler, configure_runtime, train_loader, train_one_epoch,
    )
    from twostream.models import build_model

    params = load_params(args.params)
    cfg = dataclasses.replace(section(params, "train", TrainConfig), **{
        k: getattr(args, k) for k in ("workers", "threads", "batch_size") if getattr(args, k) is not None})
    modality = "rgb" if args.stream == "spatial" else params["temporal"]["input"]
    spec = RunSpec(args.stream, modality, 1, section(params, "base", BaseConfig).seed,
                   section(params, "model", ModelConfig), cfg)
    dist = Dist(0, 1, torch.device("cuda" if torch.cuda.is_available() else "cpu"))
    configure_runtime(cfg, dist)
    with tempfile.TemporaryDirectory() as tmp:
        shard_dir, source = Path(args.shards), args.shards
        if not (shard_dir / modality).is_dir():
            shard_dir, source = Path(tmp), f"synthetic ({LOADER_SYNTHETIC['samples']} samples, 64x64)"
            synthetic_shards(shard_dir)
        data = training_dataset(shard_dir, modality, cfg.crop)
        steps = args.steps or len(data) // cfg.batch_size  # default: one epoch
        model = build_model(spec.model.backbone, data.num_classes, data.in_channels, "none", spec.model.hidden,
                            spec.model.dropout).to(dist.device, memory_format=torch.channels_last)
        optimizer = build_optimizer(model, cfg)
        scheduler = build_scheduler(optimizer, cfg, steps, 1000)  # long schedule: lr stays near its peak
        criterion = torch.nn.CrossEntropyLoss(label_smoothing=cfg.label_smoothing)
        shape = (cfg.batch_size, data.in_channels, cfg.crop, cfg.crop)
        batches = [(torch.randn(shape), torch.randint(data.num_classes, (cfg.batch_size,)), None)] * steps
        real_s, limit_s = [], []
        train_one_epoch(model, batches[:2], optimizer, scheduler, criterion, dist)  # warm-up
        for epoch in range(args.repeats):  # interleaved: both see the same machine load
            for seconds, loader in ((real_s, itertools.islice(train_loader(data, spec, dist, epoch), steps)),
                                    (limit_s, batches)):
                start = time.perf_counter()
                train_one_epoch(model, loader, optimizer, scheduler, criterion, dist)
                if dist.device.type == "cuda":
                    torch.cuda.synchronize()
                seconds.append(time.perf_counter() - start)
    real, limit = (steps * cfg.batch_size / statistics.median(s) for s in (real_s, limit_s))
    return {"bench": "train", "stream": args.stream, "modality": modality, "source": source,
            "samples": len(data), "shape": list(shape), "backbone": spec.model.backbone,
            "optimizer": cfg.optimizer,
            "device": str(dist.device), "workers": cfg.workers, "torch_threads": torch.get_num_threads(),
            "steps": steps, "repeats": args.repeats, "real_samples_per_s": round(real, 1),
            "limit_samples_per_s": round(limit, 1), "ratio": round(real / limit, 3),
            "seconds": {"real": [round(t, 2) for t in real_s], "limit": [round(t, 2) for t in limit_s]}}
