"""Typed configuration: one dataclass per section of ``params.yaml``.

Each section is built as ``FramesConfig(**params["frames"])`` so that an unknown or
missing key fails loudly instead of being silently ignored. Defaults live in
``params.yaml`` only; the dataclasses carry meaning and units.
"""

from __future__ import annotations

import os
from dataclasses import asdict, dataclass, fields
from typing import Any, TypeVar

import yaml

T = TypeVar("T")


@dataclass(frozen=True)
class BaseConfig:
    seed: int  # global seed every stage derives its randomness from


@dataclass(frozen=True)
class DemoConfig:
    classes: int  # number of synthetic action classes (8..len(demo.CLASSES))
    videos_per_class: int  # videos rendered per class
    seconds: float  # length of each video in seconds
    width: int  # rendered frame width in pixels
    height: int  # rendered frame height in pixels
    fps: int  # frame rate of the written XviD files
    train_fraction: float  # share of a class's videos tagged 1 (train) in each split
    test_fraction: float  # share tagged 2 (test); the rest is tagged 0 (unused)
    workers: int  # render processes; 0 = all cores


@dataclass(frozen=True)
class DataConfig:
    root: str  # dataset root: <root>/videos/<class>/*.avi or the official archive layout
    split: int  # HMDB-51 split number: 1, 2 or 3
    val_fraction: float  # share of each class's train videos moved to the `val` role
    unused_as_train: bool  # seed project's variant: count tag 0 (unused) as train


@dataclass(frozen=True)
class FramesConfig:
    width: int  # working frame width in pixels every video is resized to
    height: int  # working frame height in pixels
    workers: int  # decode processes; 0 = all cores
    max_failures: float  # the stage fails when more than this fraction of videos fails
    videos_per_shard: int  # videos stored per HDF5 shard file


@dataclass(frozen=True)
class ResampleConfig:
    fps: float  # target rate in frames per second; 0 keeps every frame (seed's "mode 1")


@dataclass(frozen=True)
class ClipConfig:
    frames: int  # resampled frames per clip
    step: int  # resampled frames between clip starts (6 at 6 fps = one clip per second)


def load_params(path: str | os.PathLike = "params.yaml") -> dict[str, Any]:
    """Read ``params.yaml``.

    Args:
        path: file to read.

    Returns:
        The parsed mapping.

    Raises:
        FileNotFoundError: if the file does not exist.
    """
    with open(path, encoding="utf-8") as f:
        return yaml.safe_load(f)


def section(params: dict[str, Any], name: str, cls: type[T]) -> T:
    """Build the dataclass ``cls`` from ``params[name]``.

    Raises:
        KeyError: if the section is absent.
        TypeError: if the section has unknown or missing keys (names them).
    """
    if name not in params:
        raise KeyError(f"params.yaml has no section {name!r}; sections: {sorted(params)}")
    values = params[name]
    allowed = {f.name for f in fields(cls)}
    unknown = sorted(set(values) - allowed)
    missing = sorted(allowed - set(values))
    if unknown or missing:
        raise TypeError(
            f"params section {name!r}: unknown keys {unknown}, missing keys {missing}; "
            f"allowed: {sorted(allowed)}"
        )
    return cls(**values)


def to_dict(cfg: Any) -> dict[str, Any]:
    """Plain-dict view of a config dataclass, for artifacts that describe themselves."""
    return asdict(cfg)


def resolve_workers(workers: int) -> int:
    """Number of worker processes: ``workers`` if positive, else all cores."""
    if workers < 0:
        raise ValueError(f"workers must be >= 0 (0 = all cores); got {workers}")
    return workers or (os.cpu_count() or 1)



@dataclass(frozen=True)
class FlowConfig:
    # TV-L1 (OpenCV DualTVL1OpticalFlow); defaults in params.yaml are OpenCV's own
    tau: float  # time step of the numerical scheme
    lambda_: float  # weight of the data term (smaller = smoother flow)
    theta: float  # coupling between the data and smoothness terms
    nscales: int  # pyramid levels
    warps: int  # warpings per pyramid level
    epsilon: float  # stopping threshold on the update (the main cost knob)
    inner_iterations: int  # iterations of the inner loop (OpenCV's innnerIterations)
    outer_iterations: int  # iterations of the outer loop
    scale_step: float  # pyramid downscale factor between levels
    gamma: float  # weight of the illumination-change term (0 = off)
    median_filtering: int  # median filter size applied to the flow between warps
    backend: str  # opencv | torch (same algorithm in PyTorch, batched) | auto (torch when CUDA is there)
    bound: float  # quantisation bound in pixels: flow is clipped to [-bound, bound]
    stack: int  # L: flow fields per clip (2L channels), between consecutive resampled frames
    workers: int  # flow processes; 0 = all cores
    threads: int  # OpenCV threads inside each worker process


@dataclass(frozen=True)
class ShardsConfig:
    clips_per_shard: int  # samples per HDF5 shard file


@dataclass(frozen=True)
class ModelConfig:
    backbone: str  # torchvision ResNet: resnet18 | resnet50
    pretrained: str  # none | imagenet (torchvision weights API, downloads once) | path to a local .pth
    hidden: int  # width of the head's hidden FC layer
    dropout: float  # dropout between the head's two FC layers


@dataclass(frozen=True)
class TrainConfig:
    optimizer: str  # sgd (with momentum) | adamw
    lr: float  # peak learning rate, reached after the warm-up
    momentum: float  # SGD momentum (AdamW: beta1)
    weight_decay: float  # decoupled weight decay
    warmup_epochs: float  # linear warm-up from 0 to lr, in epochs (fractions allowed)
    label_smoothing: float  # cross-entropy label smoothing
    batch_size: int  # samples per optimiser step (global: split over DDP ranks)
    crop: int  # square input size in pixels (random crop for training, centre crop for eval)
    workers: int  # DataLoader worker processes per rank; 0 = load in the training process
    threads: int  # torch intra-op threads per rank; 0 = all cores


@dataclass(frozen=True)
class StreamConfig:
    epochs: int  # training epochs of this stream (cosine decay to 0 over them)


@dataclass(frozen=True)
class TemporalConfig:
    input: str  # motion input of the temporal stream: flow | sg3i
    epochs: int  # training epochs of the temporal stream


@dataclass(frozen=True)
class FuseConfig:
    # the method is the top-level param `fusion` (average | network | svm); these are its settings
    weights: list[float]  # average: weights of the spatial and temporal scores (normalised to sum 1)
    hidden: int  # network: units of the hidden ReLU layer; 0 = none (multinomial logistic regression)
    lr: float  # network: AdamW learning rate, one full-batch step per epoch
    weight_decay: float  # network: AdamW decoupled weight decay
    max_epochs: int  # network: most full-batch steps
    patience: int  # network: stop this many steps after the best holdout loss
    holdout: float  # network: share of each class's val videos held out for early stopping, in (0, 1)
    svm_c: float  # svm: LinearSVC's C (larger = less regularisation)
