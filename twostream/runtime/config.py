"""Typed configuration: one dataclass per section of ``params.yaml``, checked when built.

``section(params, "frames", FramesConfig)`` builds a section and checks it: an unknown
or missing key, a value of the wrong type (from the field's annotation) or outside its
range (``RULES``) raises ``ParamsError`` with a one-line message naming the key, the
value and what is allowed. Stage scripts run their ``main`` through ``stage_main``,
which ends the stage with that line instead of a traceback, before any data is read.
Defaults live in ``params.yaml`` only; the dataclasses carry meaning and units.
"""

from __future__ import annotations

import math
import os
import sys
from dataclasses import asdict, dataclass, fields
from pathlib import Path
from typing import Any, Callable, Mapping, Sequence, TypeVar, get_type_hints

import yaml

T = TypeVar("T")
PARAMS_FILE = "params.yaml"  # what stages read, from the current directory


class ParamsError(ValueError):
    """A param a user can fix in ``params.yaml``; the message is one line naming it."""


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
    layout: str  # how the files are laid out: hmdb51 | ucf101 | folders | list (the data.format it tries)
    workers: int  # render processes; 0 = all cores


@dataclass(frozen=True)
class DataConfig:
    root: str  # dataset root, in one of the formats of `format`
    format: str  # auto (recognised from the root) | hmdb51 | ucf101 | folders (<split>/<class>/) | list
    split: int  # HMDB-51 and UCF101 split number: 1, 2 or 3 (the other formats have one split)
    val_fraction: float  # share of each class's train videos moved to the `val` role (UCF101: by group)
    unused_as_train: bool  # HMDB-51, the seed project's variant: count tag 0 (unused) as train
    annotations: str  # folders: a Kinetics annotation CSV, or a folder of them ("" = none)


@dataclass(frozen=True)
class FramesConfig:
    width: int  # working frame width in pixels every video is resized to
    height: int  # working frame height in pixels
    workers: int  # decode processes; 0 = all cores
    max_failures: float  # the stage fails when more than this fraction of videos fails
    codec: str  # how each stored frame is encoded: jpeg (at quality) | png (lossless)
    quality: int  # JPEG quality 1..100 (ignored by png)


@dataclass(frozen=True)
class ExecutorConfig:
    # where the per-video stages (frames, flow) run their videos; every key is execution-only
    kind: str  # local (this machine's process pool, `workers` processes) | ray (one Ray task per video group)
    address: str  # ray: the cluster ("" = $RAY_ADDRESS, else `ray start`'s here, else a new one here)
    videos_per_task: int  # ray: videos per task (more = less scheduling overhead, coarser retries)
    cpus_per_task: float  # ray: CPUs a task reserves (num_cpus)
    gpus_per_task: float  # ray: GPUs a task reserves (num_gpus; > 0 runs flow.backend torch on them)
    max_retries: int  # ray: re-runs of a task whose worker died (killed, out of memory, node lost)


@dataclass(frozen=True)
class ResampleConfig:
    fps: float  # target rate in frames per second; 0 keeps every frame (seed's "mode 1")


@dataclass(frozen=True)
class ClipConfig:
    frames: int  # resampled frames per clip
    step: int  # resampled frames between clip starts (6 at 6 fps = one clip per second)


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
    max_failures: float  # the stage fails when more than this fraction of its videos fails
    codec: str  # how each stored x and y field is encoded: jpeg (at quality) | png (lossless)
    quality: int  # JPEG quality 1..100 (ignored by png)


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
    sampling: str  # clip (a sample is one clip) | segments (a sample is a video: one snippet per segment)
    segments: int  # K: segments per video when sampling is segments (TSN's consensus of K snippets)
    augment: str  # training windows: crop (crop x crop anywhere) | multiscale (TSN's scales and corners)
    partial_bn: bool  # freeze every BatchNorm but the first (statistics and affine): for pretrained trunks
    workers: int  # DataLoader worker processes per rank; 0 = load in the training process
    threads: int  # torch intra-op threads per rank; 0 = all cores


@dataclass(frozen=True)
class ViewsConfig:
    snippets: int  # evenly spaced clips scored per video; 0 = every clip
    crops: int  # crops per clip: 1 (centre) | 3 (along the long side) | 10 (corners, centre and their flips)


@dataclass(frozen=True)
class StreamConfig:
    epochs: int  # training epochs of this stream (cosine decay to 0 over them)


@dataclass(frozen=True)
class TemporalConfig:
    input: str  # motion input of the temporal stream: flow | sg3i
    epochs: int  # training epochs of the temporal stream


@dataclass(frozen=True)
class FuseConfig:
    # the method is the top-level param `fusion` (average | network | svm | conv); these are its settings
    weights: list[float]  # average: weights of the spatial and temporal scores (normalised to sum 1)
    hidden: int  # network: units of the hidden ReLU layer; 0 = none (multinomial logistic regression)
    lr: float  # network: AdamW learning rate, one full-batch step per epoch
    weight_decay: float  # network: AdamW decoupled weight decay
    max_epochs: int  # network: most full-batch steps
    patience: int  # network: stop this many steps after the best holdout loss
    holdout: float  # network: share of each class's val videos held out for early stopping, in (0, 1)
    svm_c: float  # svm: LinearSVC's C (larger = less regularisation)
    layer: str  # conv: where the trunks meet: layer3 | layer4 (the last conv layer)
    function: str  # conv: conv (concatenation + 1x1 conv, starts as the sum) | sum | max | concat
    time: str  # conv: none (one snippet) | 3d (3D conv + 3D max-pooling over `snippets` snippets)
    snippets: int  # conv: T, snippets a video is fused over with time 3d (1 with none)
    freeze: bool  # conv: keep the layers below the fusion point as the streams trained them
    epochs: int  # conv: training epochs of the fused network (train section's optimiser and schedule)
    flow_tower: float  # conv: weight of the flow tower's softmax in the video score, in [0, 1]


@dataclass(frozen=True)
class Rule:
    """What a field allows beyond its annotated type."""

    ok: Callable[[Any], bool]  # the check, only ever called on a value of the annotated type
    text: str  # what is allowed, as read after "must be"
    typed: bool = True  # the message puts the type first ("an integer >= 1"); False: ``text`` says all


def _is_number(v: Any) -> bool:
    return isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(v)


TYPES: dict[Any, tuple[Callable[[Any], bool], str]] = {  # annotation -> (check, what it reads as)
    int: (lambda v: isinstance(v, int) and not isinstance(v, bool), "an integer"),
    float: (_is_number, "a number"),
    str: (lambda v: isinstance(v, str), "a string"),
    bool: (lambda v: isinstance(v, bool), "true or false"),
    list[float]: (lambda v: isinstance(v, list) and all(map(_is_number, v)), "a list of numbers"),
}


def at_least(low: float, note: str = "") -> Rule:
    """``value >= low``; ``note`` (e.g. ``"0 = all cores"``) is shown in parentheses."""
    return Rule(lambda v: v >= low, f">= {low}" + (f" ({note})" if note else ""))


def above(low: float) -> Rule:
    """``value > low``."""
    return Rule(lambda v: v > low, f"> {low}")


def between(low: float, high: float, closed: str = "[)") -> Rule:
    """``value`` in the interval from ``low`` to ``high``, ``closed`` giving its brackets."""
    lo_ok = (lambda v: v >= low) if closed[0] == "[" else (lambda v: v > low)
    hi_ok = (lambda v: v <= high) if closed[1] == "]" else (lambda v: v < high)
    return Rule(lambda v: lo_ok(v) and hi_ok(v), f"in {closed[0]}{low}, {high}{closed[1]}")


def one_of(*choices: Any) -> Rule:
    """``value`` equal to one of ``choices``, of the same type (``True`` is not ``1``)."""
    return Rule(lambda v: _among(v, choices), f"one of {', '.join(map(str, choices))}", typed=False)


def _among(value: Any, choices: Sequence[Any]) -> bool:
    return any(type(value) is type(c) and value == c for c in choices)


def _pretrained(v: str) -> bool:
    return v in ("none", "imagenet") or (v.endswith((".pth", ".pt")) and Path(v).is_file())


def _fuse_weights(v: list[float]) -> bool:
    return len(v) == 2 and min(v) >= 0 and sum(v) > 0


_EVEN_32 = Rule(lambda v: v >= 32 and v % 2 == 0, "an even integer >= 32", typed=False)
_CORES = at_least(0, "0 = all cores")
_FRACTION = between(0, 1, "[]")

RULES: dict[type, dict[str, Rule]] = {  # section class -> field -> rule; a field not named: type only
    BaseConfig: {"seed": at_least(0)},
    DemoConfig: {"classes": at_least(8), "videos_per_class": at_least(1), "seconds": above(0),
                 "width": _EVEN_32, "height": _EVEN_32, "fps": at_least(1), "train_fraction": _FRACTION,
                 "test_fraction": _FRACTION, "layout": one_of("hmdb51", "ucf101", "folders", "list"),
                 "workers": _CORES},
    DataConfig: {"root": Rule(lambda v: v.strip() != "", "a non-empty path", typed=False),
                 "format": one_of("auto", "hmdb51", "ucf101", "folders", "list"),
                 "split": one_of(1, 2, 3), "val_fraction": between(0, 1)},
    FramesConfig: {"width": at_least(1), "height": at_least(1), "workers": _CORES,
                   "max_failures": _FRACTION, "codec": one_of("jpeg", "png"), "quality": between(1, 100)},
    ExecutorConfig: {"kind": one_of("local", "ray"), "videos_per_task": at_least(1), "cpus_per_task": above(0),
                     "gpus_per_task": at_least(0), "max_retries": at_least(0)},
    ResampleConfig: {"fps": at_least(0, "0 = every frame")},
    ClipConfig: {"frames": at_least(1), "step": at_least(1)},
    FlowConfig: {"tau": above(0), "lambda_": above(0), "theta": above(0), "nscales": at_least(1),
                 "warps": at_least(1), "epsilon": above(0), "inner_iterations": at_least(1),
                 "outer_iterations": at_least(1), "scale_step": between(0, 1, "()"), "gamma": at_least(0),
                 "median_filtering": Rule(lambda v: v == 1 or (v >= 3 and v % 2 == 1),
                                          "1 (off) or an odd integer >= 3", typed=False),
                 "backend": one_of("opencv", "torch", "auto"), "bound": above(0), "stack": at_least(1),
                 "workers": _CORES, "threads": at_least(1), "max_failures": _FRACTION,
                 "codec": one_of("jpeg", "png"), "quality": between(1, 100)},
    ShardsConfig: {"clips_per_shard": at_least(1)},
    ModelConfig: {"backbone": one_of("resnet18", "resnet50"),
                  "pretrained": Rule(_pretrained, "none, imagenet or an existing .pth/.pt file", typed=False),
                  "hidden": at_least(1), "dropout": between(0, 1)},
    TrainConfig: {"optimizer": one_of("sgd", "adamw"), "lr": above(0), "momentum": between(0, 1),
                  "weight_decay": at_least(0), "warmup_epochs": at_least(0), "label_smoothing": between(0, 1),
                  "batch_size": at_least(1), "crop": at_least(1), "workers": at_least(0, "0 = in the training process"),
                  "threads": _CORES, "sampling": one_of("clip", "segments"), "segments": at_least(1),
                  "augment": one_of("crop", "multiscale")},
    ViewsConfig: {"snippets": at_least(0, "0 = every clip"), "crops": one_of(1, 3, 10)},
    StreamConfig: {"epochs": at_least(1)},
    TemporalConfig: {"input": one_of("flow", "sg3i"), "epochs": at_least(1)},
    FuseConfig: {"weights": Rule(_fuse_weights, "2 numbers >= 0 (spatial, temporal) with a sum > 0", typed=False),
                 "hidden": at_least(0, "0 = no hidden layer"), "lr": above(0), "weight_decay": at_least(0),
                 "max_epochs": at_least(1), "patience": at_least(1), "holdout": between(0, 1, "()"),
                 "svm_c": above(0), "layer": one_of("layer3", "layer4"),
                 "function": one_of("conv", "sum", "max", "concat"), "time": one_of("none", "3d"),
                 "snippets": at_least(1), "epochs": at_least(1), "flow_tower": _FRACTION},
}


def load_params(path: str | os.PathLike = PARAMS_FILE) -> dict[str, Any]:
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


def section(params: Mapping[str, Any], name: str, cls: type[T]) -> T:
    """Build the dataclass ``cls`` from ``params[name]``, checking every value.

    Args:
        params: the parsed ``params.yaml``.
        name: the section's key, e.g. ``"model"``.
        cls: its dataclass, e.g. ``ModelConfig``.

    Returns:
        The section, every value of its annotated type and within ``RULES[cls]``.

    Raises:
        ParamsError: if the section is absent or not a mapping, has unknown or missing
            keys (names them), or a value of the wrong type or range (names key, value
            and what is allowed).
    """
    values = _mapping(params, name, cls)
    allowed = [f.name for f in fields(cls)]
    unknown = sorted((k for k in values if k not in allowed), key=str)
    missing = [k for k in allowed if k not in values]
    if unknown or missing:
        problems = [_keys("unknown", name, unknown), _keys("missing", name, missing)]
        raise ParamsError(f"params: {'; '.join(filter(None, problems))}; allowed: {', '.join(allowed)}")
    hints, rules = get_type_hints(cls), RULES.get(cls, {})
    for key in allowed:
        _check(f"{name}.{key}", values[key], hints[key], rules.get(key))
    return cls(**values)


def _mapping(params: Mapping[str, Any], name: str, cls: type) -> Mapping[str, Any]:
    """``params[name]``, checked to be there and to be a mapping."""
    if not isinstance(params, Mapping):
        raise ParamsError(f"params: {PARAMS_FILE} must be a mapping of sections; got {params!r}")
    if name not in params:
        raise ParamsError(f"params: missing section {name}; sections: {', '.join(map(str, params))}")
    values = params[name]
    if not isinstance(values, Mapping):
        keys = ", ".join(f.name for f in fields(cls))
        raise ParamsError(f"params: {name} must be a mapping with keys {keys}; got {values!r}")
    return values


def _keys(kind: str, name: str, keys: list[Any]) -> str:
    """``"unknown key model.depth"``, ``"missing keys a.x, a.y"`` or ``""`` when ``keys`` is empty."""
    if not keys:
        return ""
    return f"{kind} key{'s' if len(keys) > 1 else ''} " + ", ".join(f"{name}.{k!s}" for k in keys)


def _check(key: str, value: Any, hint: Any, rule: Rule | None) -> None:
    """Raise ``ParamsError`` unless ``value`` is of type ``hint`` and passes ``rule``."""
    type_ok, noun = TYPES[hint]
    allowed = noun if rule is None else f"{noun} {rule.text}" if rule.typed else rule.text
    if not (type_ok(value) and (rule is None or rule.ok(value))):
        raise ParamsError(f"params: {key} must be {allowed}; got {value!r}")


def choice(params: Mapping[str, Any], key: str, choices: Sequence[T]) -> T:
    """The top-level scalar param ``params[key]`` (e.g. ``fusion``), checked to be one of ``choices``.

    Raises:
        ParamsError: if ``key`` is absent or its value is not one of ``choices``.
    """
    allowed = ", ".join(map(str, choices))
    if not isinstance(params, Mapping) or key not in params:
        raise ParamsError(f"params: missing top-level key {key} (one of {allowed})")
    value = params[key]
    if not _among(value, choices):
        raise ParamsError(f"params: {key} must be one of {allowed}; got {value!r}")
    return value


def stage_main(name: str, main: Callable[[list[str]], None], argv: Sequence[str] | None = None) -> None:
    """Run a stage script's ``main(argv)``, turning a params error into one line on stderr.

    Only what a user fixes in ``params.yaml`` is turned: a ``ParamsError``, or a missing
    ``params.yaml``. Any other error keeps its traceback.

    Args:
        name: the stage, first word of the line (``"train"``).
        main: the stage's ``main``, called with ``argv``.
        argv: the stage's arguments; ``sys.argv[1:]`` when ``None``.

    Raises:
        SystemExit: ``f"{name}: {message}"`` (exit status 1, no traceback) on those errors.
    """
    try:
        main(list(sys.argv[1:] if argv is None else argv))
    except ParamsError as e:
        raise SystemExit(f"{name}: {e}") from None
    except FileNotFoundError as e:
        if Path(str(e.filename)).name != PARAMS_FILE:
            raise
        raise SystemExit(f"{name}: params: no {e.filename} in {os.getcwd()} (stages run from the repository "
                         "root)") from None


def to_dict(cfg: Any) -> dict[str, Any]:
    """Plain-dict view of a config dataclass, for artifacts that describe themselves."""
    return asdict(cfg)


# Execution-only keys: how a stage runs (processes, threads), never what it computes. They stay
# out of dvc.yaml's params, of the outputs and of the training fingerprint, so changing one
# re-runs nothing (each stage's output is the same for any value: tested by hashing).
EXECUTION_KEYS: dict[type, tuple[str, ...]] = {
    DemoConfig: ("workers",), FramesConfig: ("workers",), FlowConfig: ("workers", "threads"),
    TrainConfig: ("workers", "threads"),
    ExecutorConfig: tuple(f.name for f in fields(ExecutorConfig)),  # a whole section of them
}


def result_params(cfg: Any) -> dict[str, Any]:
    """``to_dict(cfg)`` without its ``EXECUTION_KEYS``: the params that decide a stage's output."""
    skip = EXECUTION_KEYS.get(type(cfg), ())
    return {key: value for key, value in asdict(cfg).items() if key not in skip}


def usable_cores() -> int:
    """Cores this process may run on: its CPU affinity (what a cgroup, ``taskset`` or a Slurm
    slot allows), not ``os.cpu_count()``, which counts every core of the machine."""
    if hasattr(os, "sched_getaffinity"):
        return max(1, len(os.sched_getaffinity(0)))
    return os.cpu_count() or 1


def resolve_workers(workers: int) -> int:
    """Number of worker processes: ``workers`` if positive, else every usable core."""
    if workers < 0:
        raise ValueError(f"workers must be >= 0 (0 = all cores); got {workers}")
    return workers or usable_cores()
