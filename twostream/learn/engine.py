"""Training and evaluation of one stream: schedule, optimiser, checkpoints, resume, DDP.

``train_model`` (stage ``train``) trains a ``build_model`` network on the ``train`` shards of
one modality (linear warm-up then cosine LR, per iteration), logs each epoch to dvclive,
checkpoints after each epoch to a resume file beside the model (``resume_path``, no DVC
output), writes the final model and removes the resume file. ``evaluation.score_model``
(stage ``score``) writes the softmax scores of ``val`` and ``test`` through the test-time
views and the stream's metrics (``trainscore.train_stream`` does both). Checkpoints describe themselves and hold
only tensors and plain values (``torch.load(..., weights_only=True)``); a resume file
whose fingerprint (params, shard bytes, ``VERSION``) matches is resumed. Each epoch
reseeds torch and the loader from ``(seed, epoch, rank)``, so a resumed run repeats an
uninterrupted one bit for bit on CPU. The final model holds only what was learnt and what
``score``, ``predict`` and a fine-tuning user need (``model_file``): no timings (dvclive's
curves keep them) and no optimiser state (the resume file's), so two CPU trainings with the
same inputs write the same bytes and DVC skips ``score`` and ``fuse`` after such a retrain.

A training sample is one clip (``train.sampling: clip``) or, TSN's way, one video of K
snippets whose logits are averaged before the loss (``segments``, ``dataset.SegmentDataset``).
``train.partial_bn`` freezes every BatchNorm but the first; under DDP on GPUs the BatchNorms
are synchronised across ranks.
Under ``torchrun`` (``WORLD_SIZE`` > 1) training runs DDP (gloo on CPU, NCCL on GPU) and
evaluation gives each rank a contiguous block of samples, gathered in dataset order; only
rank 0 writes files. channels_last everywhere, bf16 autocast on a GPU.

A flow stream divides its input by the RMS of its train split's flow
(``dataset.fit_flow_scale``), stored in the checkpoint.
"""

from __future__ import annotations

import hashlib
import json
import logging
import math
import os
import random
import sys
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any, Callable

import numpy as np
import torch
import torch.distributed as torch_dist
from torch import nn
from torch.utils.data import DataLoader, DistributedSampler

from twostream.runtime.config import ModelConfig, TrainConfig, result_params, usable_cores
from twostream.learn.dataset import SegmentDataset, ShardDataset, shard_files, training_dataset
from twostream.learn.metrics import evaluate
from twostream.learn.models import build_model, channels_last, freeze_partial_bn, partial_bn_mode
from twostream.learn.scoring import (  # noqa: F401 - re-exported for callers: Dist, load_checkpoint, ...
    EVAL_ROLES, Dist, eval_transform, init_distributed, load_checkpoint, model_from_checkpoint, predict, to_device,
)

log = logging.getLogger(__name__)

OPTIMIZERS = ("sgd", "adamw")
STOP_ENV = "TWOSTREAM_STOP_AFTER_EPOCH"  # tests: stop after saving this epoch's checkpoint
# The version of a training run's result for given params and shard bytes (schedule, optimiser,
# sampling, augmentation, model): bump it with a change that alters the weights a run learns, so
# that a resume file of the old code is not resumed. The model file's bytes follow the weights.
VERSION = 1
TIMING_KEYS = ("train_seconds", "seconds", "samples_per_s")  # history entries the model file leaves out
RESUME_ONLY = ("optimizer", "scheduler", "rng", "fingerprint")  # checkpoint keys only the resume file keeps


class TrainingInterrupted(RuntimeError):
    """Raised after the checkpoint of epoch ``$TWOSTREAM_STOP_AFTER_EPOCH`` is saved."""


@dataclass(frozen=True)
class RunSpec:
    """Everything that determines a stream's training run."""

    stream: str  # spatial | temporal
    modality: str  # shard modality the stream reads: rgb | flow | sg3i
    epochs: int  # training epochs
    seed: int  # base.seed
    model: ModelConfig
    train: TrainConfig

    def params(self) -> dict[str, Any]:
        """The resolved params that decide the result, as plain values (checkpoints,
        fingerprints): ``train.workers`` and ``train.threads`` are left out, so a resumed run
        may use other ones (``config.EXECUTION_KEYS``)."""
        return {"stream": self.stream, "modality": self.modality, "epochs": self.epochs,
                "seed": self.seed, "model": asdict(self.model), "train": result_params(self.train)}


@dataclass(frozen=True)
class Schedule:
    """How a network is trained by ``run_epochs``: the train params, its epochs and the seed (a
    stream's ``RunSpec`` has the same three; the fusion network gives its own)."""

    train: TrainConfig
    epochs: int
    seed: int


class WarmupCosine:
    """LR factor of iteration ``s`` for ``W`` warm-up and ``T`` total iterations: ``(s + 1) / W``
    for ``s < W``, then ``0.5 * (1 + cos(pi * (s - W) / (T - W)))`` (1 at ``s = W``, 0 at ``s = T``).
    """

    def __init__(self, warmup_steps: int, total_steps: int) -> None:
        if not 0 <= warmup_steps <= total_steps or total_steps < 1:
            raise ValueError(f"need 0 <= warmup_steps <= total_steps and total_steps >= 1; got "
                             f"{warmup_steps}, {total_steps}")
        self.warmup_steps, self.total_steps = warmup_steps, total_steps

    def __call__(self, step: int) -> float:
        if step < self.warmup_steps:
            return (step + 1) / self.warmup_steps
        if self.total_steps == self.warmup_steps:
            return 1.0
        progress = min(1.0, (step - self.warmup_steps) / (self.total_steps - self.warmup_steps))
        return 0.5 * (1.0 + math.cos(math.pi * progress))


def build_optimizer(model: nn.Module, cfg: TrainConfig) -> torch.optim.Optimizer:
    """SGD (momentum, no Nesterov) or AdamW (betas ``(momentum, 0.999)``) at ``cfg.lr``.

    Weight decay applies to weights of rank >= 2 (convs, linears), not to biases and
    BatchNorm parameters.

    Raises:
        ValueError: if ``cfg.optimizer`` is not one of ``OPTIMIZERS``.
    """
    if cfg.optimizer not in OPTIMIZERS:
        raise ValueError(f"train.optimizer must be one of {', '.join(OPTIMIZERS)}; got {cfg.optimizer!r}")
    params = [p for p in model.parameters() if p.requires_grad]
    groups = [{"params": [p for p in params if p.ndim >= 2], "weight_decay": cfg.weight_decay},
              {"params": [p for p in params if p.ndim < 2], "weight_decay": 0.0}]
    if cfg.optimizer == "sgd":
        return torch.optim.SGD(groups, lr=cfg.lr, momentum=cfg.momentum, nesterov=False)
    return torch.optim.AdamW(groups, lr=cfg.lr, betas=(cfg.momentum, 0.999))


def build_scheduler(optimizer: torch.optim.Optimizer, cfg: TrainConfig, steps_per_epoch: int,
                    epochs: int) -> torch.optim.lr_scheduler.LambdaLR:
    """``WarmupCosine`` over ``epochs * steps_per_epoch`` iterations (warm-up rounded to iterations)."""
    total = epochs * steps_per_epoch
    warmup = min(total, round(cfg.warmup_epochs * steps_per_epoch))
    return torch.optim.lr_scheduler.LambdaLR(optimizer, WarmupCosine(warmup, total))


def configure_runtime(cfg: TrainConfig, dist: Dist) -> None:
    """Torch threads (``cfg.threads``, 0 = the cores shared among local ranks) and determinism."""
    local_world = int(os.environ.get("LOCAL_WORLD_SIZE", str(dist.world)))
    torch.set_num_threads(cfg.threads or max(1, usable_cores() // local_world))
    os.environ.setdefault("CUBLAS_WORKSPACE_CONFIG", ":4096:8")  # deterministic cuBLAS
    torch.use_deterministic_algorithms(True, warn_only=True)
    torch.backends.cudnn.benchmark = False


def epoch_seed(seed: int, epoch: int, rank: int) -> int:
    """A 63-bit seed for one epoch on one rank."""
    return int(np.random.SeedSequence([seed, epoch, rank]).generate_state(2, np.uint64)[0] >> np.uint64(1))


def _seed_worker(worker_id: int) -> None:
    """DataLoader ``worker_init_fn``: numpy and python RNGs from the worker's torch seed."""
    seed = torch.initial_seed() % 2**32
    np.random.seed(seed)
    random.seed(seed)


def _loader(dataset: Any, cfg: TrainConfig, batch: int, device: torch.device, **kwargs: Any) -> DataLoader:
    return DataLoader(dataset, batch_size=batch, num_workers=cfg.workers, worker_init_fn=_seed_worker,
                      pin_memory=device.type == "cuda", **kwargs)


def train_loader(dataset: Any, spec: RunSpec | Schedule, dist: Dist, epoch: int) -> DataLoader:
    """This rank's shuffled training batches of ``epoch`` (``batch_size // world`` each, last dropped)."""
    sampler = DistributedSampler(dataset, num_replicas=dist.world, rank=dist.rank, shuffle=True,
                                 seed=spec.seed, drop_last=True)
    sampler.set_epoch(epoch)
    generator = torch.Generator().manual_seed(epoch_seed(spec.seed, epoch, dist.rank))
    return _loader(dataset, spec.train, spec.train.batch_size // dist.world, dist.device,
                   sampler=sampler, generator=generator, drop_last=True)


def forward(model: nn.Module, x: torch.Tensor, device: torch.device) -> torch.Tensor:
    """Logits ``(B, K)`` of a batch: ``x (B, C, H, W)``, or ``(B, S, C, H, W)`` of S snippets per
    sample, whose logits are averaged (TSN's consensus, before the loss)."""
    if x.dim() == 5:
        b, n = x.shape[:2]
        return model(to_device(x.flatten(0, 1), device)).view(b, n, -1).mean(dim=1)
    return model(to_device(x, device))


def train_one_epoch(model: nn.Module, loader: DataLoader, optimizer: torch.optim.Optimizer,
                    scheduler: torch.optim.lr_scheduler.LambdaLR, criterion: nn.Module,
                    dist: Dist, partial_bn: bool = False) -> float:
    """One pass over ``loader``, stepping the scheduler per iteration (``partial_bn``: every
    BatchNorm but the first stays in eval mode).

    Returns:
        The mean training loss over all ranks' samples.
    """
    model.train()
    if partial_bn:
        partial_bn_mode(model)
    total = torch.zeros(2, dtype=torch.float64, device=dist.device)  # (loss sum, samples)
    for x, y, _ in loader:
        y = y.to(dist.device, non_blocking=True)
        with torch.autocast(dist.device.type, torch.bfloat16, enabled=dist.device.type == "cuda"):
            loss = criterion(forward(model, x, dist.device), y)
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
        scheduler.step()
        total += torch.stack([loss.detach().double() * len(y), torch.tensor(len(y), device=dist.device)])
    if dist.world > 1:
        torch_dist.all_reduce(total)
    return float(total[0] / total[1].clamp(min=1))


def fingerprint(spec: RunSpec, files: list[Path]) -> str:
    """SHA-256 of the resolved params, the bytes of ``files`` and the training ``VERSION``."""
    return fingerprint_of({"params": spec.params(), "version": VERSION}, files)


def fingerprint_of(values: dict[str, Any], files: list[Path]) -> str:
    """SHA-256 of ``values`` (canonical JSON) and of the names and bytes of ``files``: what a resume
    file must match to be resumed."""
    digest = hashlib.sha256(json.dumps(values, sort_keys=True).encode())
    for path in files:
        digest.update(Path(path).name.encode())
        with open(path, "rb") as f:
            for block in iter(lambda: f.read(1 << 20), b""):
                digest.update(block)
    return digest.hexdigest()


def rng_states() -> dict[str, Any]:
    """Torch (CPU, CUDA), numpy and python RNG states as tensors and plain values."""
    _, keys, pos, has_gauss, cached = np.random.get_state()
    version, state, gauss = random.getstate()
    return {"torch": torch.get_rng_state(),
            "cuda": torch.cuda.get_rng_state_all() if torch.cuda.is_available() else [],
            "numpy": {"keys": torch.from_numpy(keys.astype(np.int64)), "pos": pos,
                      "has_gauss": has_gauss, "cached": cached},
            "python": {"version": version, "state": list(state), "gauss": gauss}}


def set_rng_states(states: dict[str, Any]) -> None:
    """Restore what ``rng_states`` saved."""
    torch.set_rng_state(states["torch"])
    if states["cuda"] and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(states["cuda"])
    n = states["numpy"]
    np.random.set_state(("MT19937", n["keys"].numpy().astype(np.uint32), n["pos"], n["has_gauss"], n["cached"]))
    p = states["python"]
    random.setstate((p["version"], tuple(p["state"]), p["gauss"]))


def resume_path(model_path: str | os.PathLike) -> Path:
    """The per-epoch checkpoint of the run writing ``model_path``: ``models/temporal.pt`` ->
    ``models/temporal.resume.pt``. No DVC output (with no persist output DVC keeps the stage's
    run-cache), so DVC neither tracks nor deletes it and a killed run finds it again."""
    model_path = Path(model_path)
    return model_path.with_name(f"{model_path.stem}.resume{model_path.suffix}")


def save_checkpoint(path: str | os.PathLike, checkpoint: dict[str, Any]) -> None:
    """Write ``checkpoint`` atomically: to ``<path>.tmp``, then rename over ``path`` (never into
    ``path`` itself: with DVC's hardlink or symlink cache types it may be the cache's own file)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.name + ".tmp")
    torch.save(checkpoint, tmp)
    os.replace(tmp, path)


def _unwrap(model: nn.Module) -> nn.Module:
    return model.module if isinstance(model, nn.parallel.DistributedDataParallel) else model


def read_resumable(path: Path, print_: str) -> dict[str, Any] | None:
    """The checkpoint at ``path`` if it can be read and its fingerprint is ``print_``, else None
    (the reason logged)."""
    if not path.is_file():
        return None
    try:
        checkpoint = load_checkpoint(path)
    except (RuntimeError, OSError, EOFError, ValueError) as e:
        log.warning("cannot read checkpoint %s (%s): starting fresh", path, e)
        return None
    if checkpoint.get("fingerprint") != print_:
        log.info("checkpoint %s was made with other params, shard data or training version: starting fresh", path)
        return None
    return checkpoint


def resume(path: Path, print_: str, model: nn.Module, optimizer: torch.optim.Optimizer,
           scheduler: torch.optim.lr_scheduler.LambdaLR, dist: Dist | None = None) -> tuple[int, list[dict[str, Any]]]:
    """Load the checkpoint at ``path`` into the objects if its fingerprint is ``print_``.

    Rank 0 alone reads ``path`` and decides (``read_resumable``); under DDP it sends the
    checkpoint, or the decision to start fresh, to every other rank, which never opens the
    file: on several nodes their disks may lack it or hold another one (rank 0 is the rank
    that writes it).

    Returns:
        ``(completed epochs, per-epoch history)``; ``(0, [])`` when starting fresh (on every rank).
    """
    main = dist is None or dist.main
    checkpoint = read_resumable(path, print_) if main else None
    if dist is not None and dist.world > 1:
        box = [checkpoint]
        torch_dist.broadcast_object_list(box, src=0)
        checkpoint = box[0]
    if checkpoint is None:
        return 0, []
    _unwrap(model).load_state_dict(checkpoint["model"])
    optimizer.load_state_dict(checkpoint["optimizer"])
    scheduler.load_state_dict(checkpoint["scheduler"])
    set_rng_states(checkpoint["rng"])
    log.info("resuming %s after epoch %d%s", path, checkpoint["epoch"], "" if main else " (rank 0's checkpoint)")
    return checkpoint["epoch"], checkpoint["history"]


class EpochLog:
    """dvclive curves, x = epoch (rank 0 only); a resumed run's history is replayed first.

    No dvc.yaml, no DVC experiment (``dvc.yaml`` declares the plots), no summary file.
    """

    KEYS = {"train/loss": "train_loss", "val/loss": "val_loss", "val/clip_top1": "val_clip_top1",
            "val/video_top1": "val_video_top1", "lr": "lr", "time/epoch_s": "seconds",
            "time/samples_per_s": "samples_per_s"}

    def __init__(self, live_dir: str | os.PathLike, history: list[dict[str, Any]]) -> None:
        from dvclive import Live  # imported here: only rank 0 logs

        class FilesOnlyLive(Live):
            # dvclive's DVC/git probing is not needed (dvc.yaml declares the plots; no
            # experiment is saved) and raises in a git repository without commits.
            def _init_dvc(self) -> None:
                pass

        self.live = FilesOnlyLive(str(live_dir), resume=False, save_dvc_exp=False, dvcyaml=None)
        for record in history:
            self.log(record)

    def log(self, record: dict[str, Any]) -> None:
        """Append one epoch's ``record`` (a history entry)."""
        self.live.step = record["epoch"]
        for name, key in self.KEYS.items():
            self.live.log_metric(name, record[key], plot=True)

    def end(self) -> None:
        """Flush and drop the summary file (only the curves are this folder's output)."""
        self.live.end()
        Path(self.live.metrics_file).unlink(missing_ok=True)


def stream_description(spec: RunSpec, data: ShardDataset, steps: int) -> dict[str, Any]:
    """What a stream checkpoint says of itself beside its weights and history: what
    ``model_from_checkpoint``, ``eval_transform`` and ``resume`` need (``flow_scale``: the flow
    stream's input scale in pixels, else None; ``steps_per_epoch``: optimiser steps per epoch)."""
    return {"format": 2, "stream": spec.stream, "modality": spec.modality, "classes": list(data.classes),
            "in_channels": data.in_channels, "crop": spec.train.crop, "model_config": asdict(spec.model),
            "flow_scale": data.transform.scale, "steps_per_epoch": steps, "params": spec.params(),
            "shard_params": data.params}


def _checkpoint(description: dict[str, Any], model: nn.Module, optimizer: torch.optim.Optimizer, scheduler: Any,
                history: list[dict[str, Any]], print_: str) -> dict[str, Any]:
    """A checkpoint that describes itself (``description``) and can be resumed."""
    return {**description, "epoch": len(history), "history": history, "fingerprint": print_,
            "model": _unwrap(model).state_dict(), "optimizer": optimizer.state_dict(),
            "scheduler": scheduler.state_dict(), "rng": rng_states()}


def model_file(checkpoint: dict[str, Any]) -> dict[str, Any]:
    """What ``models/<stream>.pt`` keeps of a checkpoint: the weights, the model config, params,
    classes, flow scale and per-epoch losses and accuracies, without timings (``TIMING_KEYS``)
    or the optimiser, scheduler and RNG states (``RESUME_ONLY``)."""
    kept = {key: value for key, value in checkpoint.items() if key not in RESUME_ONLY}
    # interned keys: the records of a resumed run's first epochs come from its resume file, and pickle
    # writes a string it has met before as a reference only when it is the same object
    kept["history"] = [{sys.intern(k): v for k, v in record.items() if k not in TIMING_KEYS}
                       for record in checkpoint["history"]]
    return kept


def _sync_buffers(model: nn.Module, dist: Dist) -> None:
    """Give every rank rank 0's BatchNorm statistics (each rank updated its own)."""
    if dist.world > 1:
        for buffer in _unwrap(model).buffers():
            torch_dist.broadcast(buffer, 0)


def prepare_batchnorm(model: nn.Module, cfg: TrainConfig, dist: Dist) -> nn.Module:
    """``train.partial_bn``: freeze every BatchNorm but the first (``models.freeze_partial_bn``);
    under DDP on more than one GPU, the others become SyncBatchNorm, whose statistics are
    those of the whole batch across ranks. (PyTorch's SyncBatchNorm runs on GPUs only: on CPU
    ranks each BatchNorm keeps its own batch statistics and ``_sync_buffers`` gives every rank
    rank 0's running ones.)"""
    if cfg.partial_bn:
        frozen = freeze_partial_bn(model)
        log.info("partial BatchNorm: %d of %d BatchNorm layers frozen", frozen, frozen + 1)
    if dist.world > 1 and dist.device.type == "cuda":
        model = nn.SyncBatchNorm.convert_sync_batchnorm(model)
    return model


def fit(spec: RunSpec, data: ShardDataset, val: ShardDataset, checkpoint_path: Path, live_dir: Path,
        dist: Dist, on_epoch: Callable[[dict[str, Any]], None] | None) -> dict[str, Any]:
    """Train a stream network (or resume it from ``checkpoint_path``) for ``spec.epochs``
    (``run_epochs``).

    With ``train.sampling: segments`` a sample is a video (``dataset.SegmentDataset``: K random
    snippets in training; K centred ones for the per-epoch val figures), so the batch size
    counts videos and an epoch is one pass over them.

    Returns:
        The final checkpoint (on every rank).

    Raises:
        TrainingInterrupted: after the epoch named by ``$TWOSTREAM_STOP_AFTER_EPOCH``.
    """
    cfg = spec.train
    segments = cfg.sampling == "segments"
    train_set = SegmentDataset(data, cfg.segments) if segments else data
    val_set = SegmentDataset(val, cfg.segments) if segments else val
    print_ = fingerprint(spec, [p for role in ("train", *EVAL_ROLES) for p in shard_files(
        data.files[0].parents[1], spec.modality, role)])
    torch.manual_seed(spec.seed)
    model = build_model(spec.model.backbone, data.num_classes, data.in_channels, spec.model.pretrained,
                        spec.model.hidden, spec.model.dropout)
    return run_epochs(model, train_set, val_set, Schedule(cfg, spec.epochs, spec.seed), print_, checkpoint_path,
                      live_dir, dist, on_epoch, lambda steps: stream_description(spec, data, steps),
                      "videos" if segments else "samples")


def run_epochs(model: nn.Module, train_set: Any, val_set: Any, schedule: Schedule, print_: str,
               checkpoint_path: Path, live_dir: Path, dist: Dist, on_epoch: Callable[[dict[str, Any]], None] | None,
               describe: Callable[[int], dict[str, Any]], unit: str = "samples") -> dict[str, Any]:
    """Train ``model`` on ``train_set`` for ``schedule.epochs``, scoring ``val_set`` after each epoch,
    checkpointing every epoch to ``checkpoint_path`` (rank 0), resuming a checkpoint there whose
    fingerprint is ``print_``: the loop the streams and the fusion network share.

    Args:
        model: the network (its parameters that require no gradient stay as they are).
        train_set, val_set: ``(x, label, video)`` datasets (``val_set`` with ``labels``, ``videos``,
            ``classes``, ``expected``).
        describe: ``steps per epoch -> `` what the checkpoint says of itself beside weights and history.
        unit: what a training sample is, for the error message.

    Returns:
        The final checkpoint (on every rank).

    Raises:
        ValueError: if the training set makes no batch.
        TrainingInterrupted: after the epoch named by ``$TWOSTREAM_STOP_AFTER_EPOCH``.
    """
    cfg = schedule.train
    steps = len(train_set) // dist.world // (cfg.batch_size // dist.world)
    if steps < 1:
        raise ValueError(f"{len(train_set)} training {unit} make no batch of train.batch_size {cfg.batch_size}")
    model = channels_last(prepare_batchnorm(model, cfg, dist), dist.device)
    optimizer = build_optimizer(model, cfg)
    scheduler = build_scheduler(optimizer, cfg, steps, schedule.epochs)
    start, history = resume(checkpoint_path, print_, model, optimizer, scheduler, dist)
    net = nn.parallel.DistributedDataParallel(model, device_ids=[dist.device.index] if dist.device.type
                                              == "cuda" else None) if dist.world > 1 else model
    criterion = nn.CrossEntropyLoss(label_smoothing=cfg.label_smoothing)
    live = EpochLog(live_dir, history) if dist.main else None
    description = describe(steps)
    for epoch in range(start, schedule.epochs):
        torch.manual_seed(epoch_seed(schedule.seed, epoch, dist.rank))
        begin, lr = time.perf_counter(), scheduler.get_last_lr()[0]
        loss = train_one_epoch(net, train_loader(train_set, schedule, dist, epoch), optimizer, scheduler, criterion,
                               dist, cfg.partial_bn)
        train_s = time.perf_counter() - begin
        _sync_buffers(model, dist)
        probs, val_loss = predict(model, val_set, cfg.batch_size, cfg.workers, dist)
        scores = evaluate(probs, val_set.labels, val_set.videos, val_set.classes, val_set.expected)
        history.append({"epoch": epoch + 1, "lr": lr, "train_loss": loss, "val_loss": val_loss,
                        "val_clip_top1": scores["clip_top1"], "val_video_top1": scores["video_top1"],
                        "train_seconds": train_s, "seconds": time.perf_counter() - begin,
                        "samples_per_s": steps * cfg.batch_size / train_s})
        if dist.main:
            save_checkpoint(checkpoint_path, _checkpoint(description, model, optimizer, scheduler, history, print_))
            live.log(history[-1])
            if on_epoch:
                on_epoch(history[-1])
        if os.environ.get(STOP_ENV, "") == str(epoch + 1):
            raise TrainingInterrupted(f"stopped after epoch {epoch + 1} (${STOP_ENV})")
    if live:
        live.end()
    return _checkpoint(description, model, optimizer, scheduler, history, print_)


def train_model(spec: RunSpec, shard_dir: str | os.PathLike, model_path: str | os.PathLike,
                live_dir: str | os.PathLike, on_epoch: Callable[[dict[str, Any]], None] | None = None
                ) -> dict[str, Any]:
    """Train one stream and write its final checkpoint; resumes a matching checkpoint.

    Args:
        spec: the run (stream, modality, epochs, seed, model and train params).
        shard_dir: ``data/shards`` (reads ``<modality>/{train,val}-*.h5``; test's bytes enter
            the fingerprint).
        model_path: the final model (``models/<stream>.pt``, ``model_file`` of the checkpoint),
            written last; the per-epoch checkpoint goes to ``resume_path(model_path)``, resumed
            from when its fingerprint matches and removed once the final model is written.
        live_dir: dvclive folder (``dvclive/<stream>``): losses, accuracies, lr and timings per epoch.
        on_epoch: called on rank 0 with each new epoch's history record.

    Returns:
        The final checkpoint, timings and optimiser state included (on every rank).

    Raises:
        ValueError: on bad params (optimizer, batch size), too little data, or all-still flow.
        FileNotFoundError: if a role has no shards.
        TrainingInterrupted: see ``fit``.
    """
    dist = init_distributed()
    configure_runtime(spec.train, dist)
    if spec.train.batch_size % dist.world:
        raise ValueError(f"train.batch_size {spec.train.batch_size} must split evenly over {dist.world} ranks")
    shard_dir, crop = Path(shard_dir), spec.train.crop
    data = training_dataset(shard_dir, spec.modality, crop, spec.train.augment)
    val = ShardDataset(shard_dir, spec.modality, "val", False, crop, data.transform.scale)
    checkpoint = fit(spec, data, val, resume_path(model_path), Path(live_dir), dist, on_epoch)
    if dist.main:
        save_checkpoint(model_path, model_file(checkpoint))
        resume_path(model_path).unlink(missing_ok=True)
    return checkpoint
