"""Training learns the cue each stream is meant to carry, and only that cue.

Tiny noisy shards (3 classes, written with the shards stage's ``ShardWriter``) are
separable by one cue per modality: the colour of a patch (rgb), the time order of a
patch's brightness (sg3i), or the shape of a motion field (flow: horizontal expansion,
horizontal contraction, vertical motion). ``train_stream`` must reach >= 0.9 test
accuracy (chance 1/3) on each. Two controls show that the pass is earned: with the
training labels shuffled the same run stays near chance, and with a horizontal flip that
mirrors flow without negating its x channels the flow stream cannot tell expansion from
contraction (a mirrored expansion is a contraction), so it stays well below the run with
the correct flip.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import pytest

import twostream.learn.transforms
from twostream.runtime.config import ModelConfig, TrainConfig
from twostream.learn.dataset import ShardDataset
from twostream.learn.engine import RunSpec
from twostream.evaluate.trainscore import train_stream
from twostream.motion.flow import quantize
from twostream.learn.metrics import load_scores
from twostream.samples.shards import ShardWriter

# rgb: red, green, blue patch | sg3i: brightening, darkening, steady patch | flow: expand, contract, vertical
CLASSES = ["a", "b", "c"]
SIZE, CROP = 28, 24  # stored side, crop side (pixels): the random crop moves the window by up to 4 px
MARGIN = SIZE - CROP  # every cue lies at least this far inside the sample, so any crop sees it whole
ROLE_VIDEOS = {"train": (9, 4), "val": (1, 2), "test": (6, 6)}  # role -> (videos per class, clips per video)
BOUND = 20.0  # flow quantisation bound in pixels
STACK = 2  # flow fields per sample (L): 2L = 4 channels
SEED = 0  # data generator seed
PARAMS = {"clip": {"frames": 3, "step": 6}, "flow": {"stack": STACK, "bound": BOUND},
          "shards": {"clips_per_shard": 64}}
MODEL = ModelConfig(backbone="resnet18", pretrained="none", hidden=64, dropout=0.1)
TRAIN = TrainConfig(optimizer="adamw", lr=0.002, momentum=0.9, weight_decay=0.01, warmup_epochs=0.5,
                    label_smoothing=0.0, batch_size=16, crop=CROP, sampling="clip", segments=3,
                    augment="crop", partial_bn=False, workers=0, threads=1)
EPOCHS = 10


def patch_box(rng: np.random.Generator) -> tuple[int, int, int, int]:
    """``(top, left, height, width)`` of a random patch that every crop contains."""
    h, w = (int(s) for s in rng.integers(8, 13, 2))
    top = int(rng.integers(MARGIN, SIZE - MARGIN - h + 1))
    left = int(rng.integers(MARGIN, SIZE - MARGIN - w + 1))
    return top, left, h, w


def rgb_sample(label: int, rng: np.random.Generator) -> np.ndarray:
    """``(SIZE, SIZE, 3) uint8``: grey noise with a patch whose channel ``label`` (R, G, B) dominates."""
    grey = rng.uniform(40, 170) + rng.normal(0, 25, (SIZE, SIZE, 1))
    x = grey + rng.normal(0, 10, (SIZE, SIZE, 3))
    top, left, h, w = patch_box(rng)
    colour = rng.uniform(20, 90, 3)
    colour[label] = rng.uniform(190, 250)
    x[top:top + h, left:left + w] = colour + rng.normal(0, 10, (h, w, 3))
    return np.clip(np.round(x), 0, 255).astype(np.uint8)


def sg3i_sample(label: int, rng: np.random.Generator) -> np.ndarray:
    """``(SIZE, SIZE, 3) uint8``: three grey frames in time order; a patch brightens, darkens or stays."""
    grey = rng.uniform(40, 170) + rng.normal(0, 25, (SIZE, SIZE, 1))
    x = grey + rng.normal(0, 8, (SIZE, SIZE, 3))  # frame noise
    top, left, h, w = patch_box(rng)
    base, step = rng.uniform(100, 150), rng.uniform(35, 55)
    ramp = {0: [-step, 0, step], 1: [step, 0, -step], 2: [0, 0, 0]}[label]
    x[top:top + h, left:left + w] = base + np.asarray(ramp) + rng.normal(0, 8, (h, w, 3))
    return np.clip(np.round(x), 0, 255).astype(np.uint8)


def flow_sample(label: int, rng: np.random.Generator) -> np.ndarray:
    """``(SIZE, SIZE, 2L) uint8`` quantised flow (x0, y0, x1, y1): a patch expands horizontally
    (x > 0 right of its centre, x < 0 left of it), contracts horizontally, or moves up or down;
    over everything a random horizontal pan and pixel noise.

    Only expand/contract needs x's sign relative to position, which a mirror alone reverses.
    """
    top, left, h, w = patch_box(rng)
    columns = np.arange(w) - (w - 1) / 2  # (w,) signed distance from the patch centre
    pan, size, sign = rng.uniform(-1.0, 1.0), rng.uniform(1.5, 3.0), rng.choice([-1.0, 1.0])
    fields = []
    for _ in range(STACK):
        v = rng.normal(0, 0.2, (SIZE, SIZE, 2))  # (H, W, 2) pixels: x, y
        v[..., 0] += pan
        a = size * rng.uniform(0.8, 1.2)
        patch = v[top:top + h, left:left + w]
        if label == 2:
            patch[..., 1] += sign * a
        else:
            patch[..., 0] += (1.0 if label == 0 else -1.0) * a * columns / (w / 2)
        fields.append(v)
    return quantize(np.concatenate(fields, axis=2), BOUND)  # (H, W, 2L), as the flow stage stores it


SAMPLERS = {"rgb": rgb_sample, "sg3i": sg3i_sample, "flow": flow_sample}


def balanced_shuffle(labels: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """A permutation of ``(N,)`` labels that says nothing about the true ones: each class's
    samples, in random order, get every label equally often.

    A plain permutation leaves a chance correlation with the true labels that an easy task
    turns into test accuracy far above chance (0.71 once in five seeds).
    """
    written = np.empty_like(labels)
    for c in range(len(CLASSES)):
        where = rng.permutation(np.flatnonzero(labels == c))
        assert len(where) % len(CLASSES) == 0, "each class needs a multiple of len(CLASSES) train samples"
        written[where] = np.arange(len(where)) % len(CLASSES)
    return written


def write_learnable_shards(out: Path, seed: int = SEED, shuffle_train: bool = False) -> Path:
    """rgb, sg3i and flow shards of ``CLASSES`` for every role of ``ROLE_VIDEOS``.

    Args:
        out: the shards folder to create (``<out>/<modality>/<role>-NNNNN.h5``).
        seed: seed of the numpy generator every sample is drawn from.
        shuffle_train: write the train labels through ``balanced_shuffle`` (val/test untouched).

    Returns:
        ``out``.
    """
    rng = np.random.default_rng(seed)
    first = 0
    for role, (per_class, clips) in ROLE_VIDEOS.items():
        n_videos = per_class * len(CLASSES)
        labels = np.repeat(np.arange(n_videos) % len(CLASSES), clips)  # (N,)
        videos = np.repeat(np.arange(first, first + n_videos), clips)
        numbers = np.tile(np.arange(clips), n_videos)
        first += n_videos
        written = balanced_shuffle(labels, rng) if shuffle_train and role == "train" else labels
        for modality, sample in SAMPLERS.items():
            x = np.stack([sample(int(c), rng) for c in labels])  # (N, SIZE, SIZE, C) uint8
            (out / modality).mkdir(parents=True, exist_ok=True)
            writer = ShardWriter(out / modality, role, modality, len(labels),
                                 PARAMS["shards"]["clips_per_shard"], CLASSES, PARAMS)
            try:
                writer.add(x, written, videos, numbers)
            finally:
                writer.close()
    return out


def train(root: Path, shards: Path, modality: str, seed: int = 0) -> dict[str, Any]:
    """Train one stream on ``shards`` in ``root``; returns its test metrics (``train_stream``'s)."""
    stream = "spatial" if modality == "rgb" else "temporal"
    spec = RunSpec(stream, modality, EPOCHS, seed, MODEL, TRAIN)
    return train_stream(spec, shards, root / "model.pt", root / "metrics.json", root / "scores",
                        root / "live")


@pytest.fixture(scope="module")
def shards(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return write_learnable_shards(tmp_path_factory.mktemp("learnable") / "shards")


@pytest.fixture(scope="module")
def flow_metrics(tmp_path_factory: pytest.TempPathFactory, shards: Path) -> dict[str, Any]:
    """The flow stream trained with the correct flip (shared by two tests)."""
    return train(tmp_path_factory.mktemp("flow"), shards, "flow")


def test_learnable_shards_are_balanced(shards: Path) -> None:
    """Guards the generator: balanced roles, 2L flow channels, the quantisation grid, 128 = still."""
    assert quantize(np.array([0.0, -BOUND, BOUND]), BOUND).tolist() == [128, 0, 255]
    for role, (per_class, clips) in ROLE_VIDEOS.items():
        data = ShardDataset(shards, "flow", role, False, CROP)
        assert data.in_channels == 2 * STACK and len(data) == per_class * clips * len(CLASSES)
        assert np.bincount(data.labels).tolist() == [per_class * clips] * len(CLASSES)
        still = [data.raw(i)[..., 1::2] for i in np.flatnonzero(data.labels != 2)]  # y of expand/contract
        assert abs(np.mean(still) - 127.5) < 0.05  # zero-mean noise around the grid's zero


@pytest.mark.parametrize("modality", ["rgb", "sg3i"])
def test_image_streams_learn(modality: str, shards: Path, tmp_path: Path) -> None:
    metrics = train(tmp_path, shards, modality)
    assert metrics["clip_top1"] >= 0.9 and metrics["video_top1"] >= 0.9, metrics


def test_flow_stream_learns(flow_metrics: dict[str, Any]) -> None:
    assert flow_metrics["clip_top1"] >= 0.9 and flow_metrics["video_top1"] >= 0.9, flow_metrics


def test_shuffled_labels_do_not_learn(tmp_path: Path) -> None:
    """The rgb run of ``test_image_streams_learn`` with its train labels shuffled stays near chance.

    Even at chance each class's clips tend to go to one label, so clip accuracy swings
    (0.21-0.45 over 8 data seeds); the mean probability of the true class, 1/3 at chance
    (0.31-0.36 over the same seeds), carries the tight bound.
    """
    shuffled = write_learnable_shards(tmp_path / "shards", shuffle_train=True)
    metrics = train(tmp_path / "run", shuffled, "rgb")
    test = load_scores(tmp_path / "run" / "scores" / "test.npz")
    true_p = float(test.probs[np.arange(len(test.labels)), test.labels].mean())
    assert metrics["clip_top1"] <= 0.6 and true_p <= 0.45, (metrics, true_p)


def test_flip_that_keeps_flow_x_fails(flow_metrics: dict[str, Any], shards: Path, tmp_path: Path,
                                      monkeypatch: pytest.MonkeyPatch) -> None:
    calls = []
    fused = twostream.learn.transforms._fused_affine

    def broken(modality: str, bound: float | None, scale: float | None, channels: int, flip: bool,
               zoom: tuple[float, float] = (1.0, 1.0)):
        calls.append((modality, flip))
        return fused(modality, bound, scale, channels, False, zoom)  # mirrored window, x never negated

    # what Preset.__call__ looks up: it mirrors the uint8 window and takes the x negation from here
    monkeypatch.setattr(twostream.learn.transforms, "_fused_affine", broken)
    metrics = train(tmp_path, shards, "flow")
    assert {m for m, _ in calls} == {"flow"} and {f for _, f in calls} == {False, True}  # it did flip
    assert metrics["clip_top1"] <= 0.8, metrics
    assert flow_metrics["clip_top1"] - metrics["clip_top1"] >= 0.2, (flow_metrics, metrics)
