"""Benchmarks of the training input: ``loader`` (per core; DataLoader vs training steps) and ``train``.

- ``loader``: per core, samples/s of ``ShardDataset[i]`` (train preset, random indices) in
  one process on one torch thread, as one DataLoader worker runs it, per modality (flow
  keyed ``flow_L<L>``), against ``PER_CORE_GOAL``: per CPU second of the process (user +
  sys, so other load on a shared machine does not count; wall-clock figures alongside),
  with the time split read (from the shard, or for reference shards from the store: JPEG
  decodes) vs transform (and, for gzip flow shards, the inflate share of the read and what
  raw, lzf or gzip-1 storage would cost) measured in the same run.
  ``--size WxH`` writes synthetic self-contained shards at that size (flow once per
  ``--stack``; crops of 224 by default); without it, shards come from ``--shards``
  (``data/shards``: the stage's reference shards, read from the JPEG frames and flow
  stores, e.g. those ``bench scale --keep DIR`` leaves in ``DIR/data/shards``) or a small
  demo-sized synthetic set, and the run also compares (as ``--compare-train`` does at any
  size) samples/s through a shuffling ``DataLoader`` with one worker per core with
  samples/s of training steps of the demo model (ResNet-18 of ``twostream.learn.models``,
  forward + backward + AdamW) on batches of it held in memory; ``ratio`` there = loader /
  train (goal >= 3). The top-level ``ratio`` is the slowest modality per core / the goal.
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

from twostream.runtime.config import load_params, section


LOADER_SYNTHETIC = {"samples": 512, "size": 64, "classes": 12, "stack": 2, "bound": 20.0}
LOADER_SIZED_SAMPLES = 128  # synthetic samples per modality at ``--size`` (340x256 flow L=5: 111 MB raw)
SIZED_CROP = 224  # default crop side at ``--size``: ImageNet trunks' input
PER_CORE_GOAL = 400  # samples/s of one process: 16 cores then feed a ResNet-50 H100 (~2,500/s) 2.5x over


def parse_size(text: str) -> tuple[int, int]:
    """``"WxH"`` -> ``(width, height)``.

    Raises:
        SystemExit: on text that is not two positive integers joined by ``x``.
    """
    try:
        width, height = (int(v) for v in text.lower().split("x"))
    except ValueError:
        raise SystemExit(f"--size must be WxH, e.g. 340x256; got {text!r}") from None
    if width < 1 or height < 1:
        raise SystemExit(f"--size must be positive; got {text!r}")
    return width, height


def _smooth(rng: np.random.Generator, h: int, w: int, c: int, cells: int) -> np.ndarray:
    """``(h, w, c) float32`` of unit-variance noise on a ``cells``-per-height grid, cubically upsampled."""
    import cv2

    grid = rng.normal(0, 1, (cells + 1, cells * w // h + 2, c)).astype(np.float32)
    return cv2.resize(grid, (w, h), interpolation=cv2.INTER_CUBIC).reshape(h, w, c)


def synthetic_images(rng: np.random.Generator, n: int, h: int, w: int) -> np.ndarray:
    """``(n, h, w, 3) uint8`` textured frames: smooth colour regions, fine texture, sensor noise."""
    out = np.empty((n, h, w, 3), np.uint8)
    for i in range(n):
        image = 128 + 50 * _smooth(rng, h, w, 3, 3) + 25 * _smooth(rng, h, w, 1, 24)
        out[i] = np.clip(image + rng.normal(0, 4, (h, w, 3)), 0, 255)
    return out


def synthetic_sg3i(rng: np.random.Generator, n: int, h: int, w: int) -> np.ndarray:
    """``(n, h, w, 3) uint8``: grayscale of three textured frames, each a few pixels further right."""
    gray = synthetic_images(rng, n, h, w + 8).mean(axis=3)  # (n, h, w + 8)
    return np.stack([gray[:, :, 4 * t:4 * t + w] for t in range(3)], axis=3).astype(np.uint8)


def synthetic_flow(rng: np.random.Generator, n: int, h: int, w: int, stack: int) -> np.ndarray:
    """``(n, h, w, 2L) uint8`` quantised flow like TV-L1's: a smooth near-still background (camera
    motion of ~1.5 codes), one smoothly moving actor (~25 codes), rounding noise; ~25% exactly
    ``FLOW_ZERO``, gzip-4 keeps ~36% at 340x256 (the 64 px demo's real flow: 31%, 19%)."""
    from twostream.learn.transforms import FLOW_ZERO

    yy, xx = np.mgrid[:h, :w].astype(np.float32)
    out = np.empty((n, h, w, 2 * stack), np.uint8)
    for i in range(n):
        camera, actor = 1.5 * _smooth(rng, h, w, 2, 2), 25 * _smooth(rng, h, w, 2, 5)
        cy, cx = rng.uniform(0.3, 0.7, 2) * (h, w)
        mask = np.exp(-((yy - cy) / (0.25 * h)) ** 2 - ((xx - cx) / (0.15 * w)) ** 2)[..., None]
        fields = [camera + actor * mask * (1 + 0.1 * t) + rng.normal(0, 0.6, (h, w, 2)) for t in range(stack)]
        out[i] = np.clip(np.rint(FLOW_ZERO + np.concatenate(fields, axis=2)), 0, 255)
    return out


def synthetic_shards(out_dir: Path, seed: int = 0, size: tuple[int, int] | None = None,
                     stack: int | None = None, modalities: tuple[str, ...] | None = None) -> None:
    """A train-role shard set of synthetic samples (``synthetic_images``, ``synthetic_sg3i``,
    ``synthetic_flow``), written by ``ShardWriter`` with the stage's compression.

    Args:
        out_dir: gets ``<modality>/train-00000.h5``.
        seed: of the sample contents.
        size: ``(width, height)``; None: the demo's (``LOADER_SYNTHETIC``, 512 samples), else
            ``LOADER_SIZED_SAMPLES`` samples.
        stack: flow's L; None: ``LOADER_SYNTHETIC["stack"]``.
        modalities: those to write; None: all.
    """
    from twostream.samples.shards import MODALITIES, ShardWriter

    cfg, rng = LOADER_SYNTHETIC, np.random.default_rng(seed)
    n = cfg["samples"] if size is None else LOADER_SIZED_SAMPLES
    w, h = (cfg["size"], cfg["size"]) if size is None else size
    stack = cfg["stack"] if stack is None else stack
    params = {"clip": {"frames": 3, "step": 6}, "flow": {"stack": stack, "bound": cfg["bound"]},
              "shards": {"clips_per_shard": n}}
    make = {"rgb": lambda: synthetic_images(rng, n, h, w), "sg3i": lambda: synthetic_sg3i(rng, n, h, w),
            "flow": lambda: synthetic_flow(rng, n, h, w, stack)}
    labels = np.arange(n) % cfg["classes"]
    for modality in modalities or MODALITIES:
        (out_dir / modality).mkdir(parents=True, exist_ok=True)
        writer = ShardWriter(out_dir / modality, "train", modality, n, n,
                             [f"class{c}" for c in range(cfg["classes"])], params)
        writer.add(make[modality](), labels, np.arange(n) // 3, np.arange(n) % 3)


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


STORAGE_CANDIDATES = {  # other HDF5 filters a gzip modality is rewritten with (name -> create_dataset keywords)
    "none": {}, "lzf": {"compression": "lzf"}, "gzip 1": {"compression": "gzip", "compression_opts": 1}}
STORAGE_SAMPLES = 32  # samples of a gzip modality rewritten per ``STORAGE_CANDIDATES`` filter


def _storage(x: Any) -> dict[str, Any]:
    """Filter and bytes per sample (stored, raw) of an HDF5 ``x`` of one sample per chunk."""
    return {"compression": " ".join(str(v) for v in (x.compression, x.compression_opts) if v) or "none",
            "stored_bytes_per_sample": round(x.id.get_storage_size() / len(x)),
            "raw_bytes_per_sample": int(np.prod(x.shape[1:]))}


def _cpu_ms(fn: Any, args: list) -> float:
    """Mean CPU milliseconds (this process, user + sys) of ``fn(a)`` over ``a`` in ``args``."""
    start = time.process_time()
    for a in args:
        fn(a)
    return 1e3 * (time.process_time() - start) / len(args)


def storage_figures(dataset: Any, picks: list[int], tmp: Path) -> dict[str, Any]:
    """For a compressed modality: CPU ms of ``zlib.decompress`` alone on its stored chunks
    (the codec's share of a read), and read ms and size of the same samples rewritten with
    each of ``STORAGE_CANDIDATES`` (what another shard format would cost)."""
    import zlib

    import h5py

    with h5py.File(dataset.files[0], "r") as f:
        x = f["x"]
        chunks = [x.id.read_direct_chunk((i % len(x),) + (0,) * (x.ndim - 1))[1] for i in picks]
        samples = x[:STORAGE_SAMPLES]
    figures: dict[str, Any] = {"inflate_ms": round(_cpu_ms(zlib.decompress, chunks), 4), "alternatives": {}}
    for name, filters in STORAGE_CANDIDATES.items():
        path = tmp / f"storage-{name.replace(' ', '')}.h5"
        with h5py.File(path, "w") as f:
            f.create_dataset("x", data=samples, chunks=(1, *samples.shape[1:]), **filters)
        with h5py.File(path, "r", rdcc_nbytes=0) as f:  # as ShardDataset reads: no chunk cache
            x = f["x"]
            indices = [i % len(x) for i in picks]
            _cpu_ms(x.__getitem__, indices[:8])  # warm
            figures["alternatives"][name] = {"read_ms": round(_cpu_ms(x.__getitem__, indices), 4),
                                             **_storage(x)}
    return figures


def per_core_rate(dataset: Any, reads: int, repeats: int, seed: int) -> dict[str, Any]:
    """Samples/s of ``dataset[i]`` in this process on one torch thread (a DataLoader worker's
    setting), over ``reads`` random indices per timed run, median of ``repeats`` runs: per CPU
    second of the process (user + sys: what one core delivers, whatever else shares the
    machine) and per wall second. Each run then times the same indices' ``raw`` read and
    ``transform`` apart (CPU), so the split comes from the same run."""
    import h5py
    import torch

    threads, rng = torch.get_num_threads(), np.random.default_rng(seed)
    torch.set_num_threads(1)
    try:
        for i in range(len(dataset)):  # untimed: handles open, every chunk in the page cache
            dataset.raw(i)
        cpu_rates, wall_rates, read_ms, transform_ms = [], [], [], []
        for _ in range(repeats):
            picks = rng.integers(len(dataset), size=reads).tolist()
            wall, cpu = time.perf_counter(), time.process_time()
            for i in picks:
                dataset[i]
            cpu_rates.append(reads / max(time.process_time() - cpu, 1e-9))
            wall_rates.append(reads / (time.perf_counter() - wall))
            read = transform = 0.0
            for i in picks:
                t0 = time.process_time()
                x = dataset.raw(i)
                t1 = time.process_time()
                dataset.transform(x)
                read, transform = read + t1 - t0, transform + time.process_time() - t1
            read_ms.append(1e3 * read / reads)
            transform_ms.append(1e3 * transform / reads)
    finally:
        torch.set_num_threads(threads)
    read, transform = statistics.median(read_ms), statistics.median(transform_ms)
    with h5py.File(dataset.files[0], "r") as f:  # a reference shard reads its samples from a store
        storage = _storage(f["x"]) if "x" in f else {"compression": "reference", "store": str(dataset.reader.root)}
    return {"shape": [dataset.in_channels, dataset.crop, dataset.crop],
            "samples_per_s": round(statistics.median(cpu_rates), 1),
            "wall_samples_per_s": round(statistics.median(wall_rates), 1),
            "runs": [round(r, 1) for r in cpu_rates], "read_ms": round(read, 4),
            "transform_ms": round(transform, 4), "read_share": round(read / (read + transform), 3),
            "limit": "read" if read > transform else "transform", **storage}


def compare_train(dataset: Any, batch: int, seconds: float) -> dict[str, Any]:
    """Samples/s of ``dataset`` through a shuffling DataLoader with a worker per core vs training
    steps of the demo model on batches of it held in memory; ``ratio`` = loader / train."""
    import os

    import torch
    from torch.utils.data import DataLoader

    from twostream.learn.models import build_model

    device = torch.device("cuda" if torch.cuda.is_available() else "cpu")
    workers = os.cpu_count() or 1
    loader = DataLoader(dataset, batch_size=batch, shuffle=True, num_workers=workers,
                        persistent_workers=True, pin_memory=device.type == "cuda", drop_last=True)
    torch.manual_seed(0)
    load, n_loaded = loader_rate(loader, seconds)
    batches = [(x.to(device), y.to(device)) for (x, y, _), _ in zip(loader, range(4))]
    del loader  # stops the workers before training takes the cores
    torch.manual_seed(0)
    model = build_model("resnet18", dataset.num_classes, dataset.in_channels).to(device)
    train, n_trained = train_rate(model, batches, device, seconds)
    return {"shape": [batch, dataset.in_channels, dataset.crop, dataset.crop], "workers": workers,
            "device": str(device), "torch_threads": torch.get_num_threads(),
            "model": "twostream.learn.models.build_model('resnet18'), AdamW",
            "loader_samples_per_s": round(load, 1), "train_samples_per_s": round(train, 1),
            "ratio": round(load / train, 2), "timed_samples": {"loader": n_loaded, "train": n_trained}}


def _loader_sources(args: argparse.Namespace, tmp: Path) -> tuple[list[tuple[str, Path, str]], str]:
    """``[(key, shard_dir, modality)]`` to measure, and where the shards come from: synthetic
    at ``--size`` (flow once per ``--stack``), else ``--shards``, else the demo-sized synthetic set."""
    modalities = ("rgb", "sg3i", "flow") if args.modality == "all" else (args.modality,)
    if args.size is not None:
        size = parse_size(args.size)
        synthetic_shards(tmp / "images", size=size, modalities=tuple(m for m in modalities if m != "flow"))
        plan = [(m, tmp / "images", m) for m in modalities if m != "flow"]
        for stack in args.stack if "flow" in modalities else ():
            synthetic_shards(tmp / f"L{stack}", size=size, stack=stack, modalities=("flow",))
            plan.append((f"flow_L{stack}", tmp / f"L{stack}", "flow"))
        return plan, f"synthetic ({LOADER_SIZED_SAMPLES} samples, {size[0]}x{size[1]})"
    shard_dir, source = Path(args.shards), args.shards
    if not all((shard_dir / m).is_dir() for m in modalities):
        shard_dir, source = tmp, f"synthetic ({LOADER_SYNTHETIC['samples']} samples, 64x64)"
        synthetic_shards(shard_dir)
    return [(f"flow_L{_probe(shard_dir, m).in_channels // 2}" if m == "flow" else m, shard_dir, m)
            for m in modalities], source


def _probe(shard_dir: Path, modality: str) -> Any:
    """The train-role ``ShardDataset`` without a transform (reads labels and attributes only)."""
    from twostream.learn.dataset import ShardDataset

    return ShardDataset(shard_dir, modality, "train", True, 1)


def modality_figures(dataset: Any, args: argparse.Namespace, tmp: Path) -> dict[str, Any]:
    """``per_core_rate`` of one dataset, its pass against ``PER_CORE_GOAL`` and, when its
    shards are compressed, ``storage_figures`` with the inflate share of the read."""
    figures = per_core_rate(dataset, args.reads, args.repeats, seed=0)
    figures["pass"] = figures["samples_per_s"] >= PER_CORE_GOAL
    if figures["compression"] not in ("none", "reference"):
        picks = np.random.default_rng(1).integers(len(dataset), size=args.reads).tolist()
        figures.update(storage_figures(dataset, picks, tmp))
        figures["inflate_share_of_read"] = round(figures["inflate_ms"] / figures["read_ms"], 3)
    return figures


def bench_loader(args: argparse.Namespace) -> dict[str, Any]:
    """Per-core samples/s of ShardDataset (train preset) per modality against ``PER_CORE_GOAL``,
    with the split read vs transform; and, without ``--size`` or with ``--compare-train``, the
    DataLoader (a worker per core) vs training steps of the demo model (``compare_train``)."""
    from twostream.learn.dataset import training_dataset

    with tempfile.TemporaryDirectory() as tmp:
        plan, source = _loader_sources(args, Path(tmp))
        per_core, compared = {}, {}
        for key, shard_dir, modality in plan:
            crop = args.crop or (SIZED_CROP if args.size is not None
                                 else int(min(_probe(shard_dir, modality).sample_shape[:2]) * 7 // 8))
            dataset = training_dataset(shard_dir, modality, crop)
            per_core[key] = modality_figures(dataset, args, Path(tmp))
            if args.compare_train or args.size is None:
                compared[key] = compare_train(dataset, args.batch, args.seconds)
            dataset.close()
    rates = {k: v["samples_per_s"] for k, v in per_core.items()}
    result = {"bench": "loader", "source": source, "samples": len(dataset), "modality": args.modality,
              "size": "x".join(str(v) for v in dataset.sample_shape[1::-1]), "crop": crop,
              "reads": args.reads, "repeats": args.repeats, "timed_samples": args.reads * args.repeats,
              "torch_threads": 1, "per_core_samples_per_s": rates,
              "per_core_wall_samples_per_s": {k: v["wall_samples_per_s"] for k, v in per_core.items()},
              "per_core_goal": PER_CORE_GOAL, "per_core_pass": all(v["pass"] for v in per_core.values()),
              "ratio": round(min(rates.values()) / PER_CORE_GOAL, 2), "per_core": per_core}
    if compared:
        result["compare_train"] = compared
    return result


def bench_train(args: argparse.Namespace) -> dict[str, Any]:
    """Samples/s of the train stage's loop with its shard loader vs the same loop on in-memory batches."""
    import itertools

    import torch  # imported here: the other benchmarks do not need it

    from twostream.runtime.config import BaseConfig, ModelConfig, TrainConfig
    from twostream.learn.dataset import training_dataset
    from twostream.learn.engine import (
        Dist, RunSpec, build_optimizer, build_scheduler, configure_runtime, train_loader, train_one_epoch,
    )
    from twostream.learn.models import build_model, channels_last

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
        model = channels_last(build_model(spec.model.backbone, data.num_classes, data.in_channels, "none",
                                          spec.model.hidden, spec.model.dropout), dist.device)
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
