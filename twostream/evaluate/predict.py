"""Top-K actions of one video file: the pipeline's own feature code, both streams, the fitted fusion.

A new video goes through the functions the stages run, not copies of them:
``video.read_video`` (frames stage) at ``frames.width x frames.height``,
``clips.resample_indices`` at ``resample.fps``, the kept frames through ``frames.codec``
(``frames.codec_roundtrip``: as the frames store holds them), then ``shards.video_samples``
(the shards stage's per-video sampling) over in-memory stand-ins for the three stores, which
compute what the stores would hold with ``sg3i.video_sg3i`` and ``flow.video_flow`` (the sg3i
and flow stages' per-video functions; the fields through ``flow.codec_roundtrip``). Each
stream then scores the clips with ``scoring.score_samples``, the code path the train stage
scores val and test with (the network rebuilt from the checkpoint, its evaluation transform
with the flow scale the checkpoint stores, the same batches and test-time ``views``), the fusion of
``models/fusion.pt`` (written by the ``fuse`` stage) fuses the clip scores, and the video's
scores are their mean. With ``fusion: conv`` the fused network of ``models/convfusion.pt`` scores
the clips' paired samples itself (``convtrain.score_video``), through the same views.

Params (``frames``, ``resample``, ``clip``, ``flow``) come from ``params.yaml``; the
checkpoints record the clip and flow quantisation params they were trained with, and a
mismatch is an error rather than a silent wrong answer.
"""

from __future__ import annotations

import logging
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from twostream.ingest.clips import clip_starts, needed_pairs, resample_indices
from twostream.runtime.config import (
    ClipConfig, FlowConfig, FramesConfig, FuseConfig, ResampleConfig, ViewsConfig, load_params, section, to_dict,
)
from twostream.learn.dataset import snippet_picks
from twostream.motion.flow import codec_roundtrip, video_flow
from twostream.evaluate.convtrain import score_video
from twostream.evaluate.fusion import STREAMS, AverageFusion, Fusion, check_method, load_fusion
from twostream.ingest.frames import codec_roundtrip as frames_roundtrip
from twostream.learn.scoring import load_checkpoint, score_samples
from twostream.motion.sg3i import video_sg3i
from twostream.samples.shards import ClipVideo, video_samples
from twostream.ingest.video import read_video

log = logging.getLogger(__name__)

VID = 0  # the id the one video has for the store stand-ins


class PredictError(Exception):
    """A problem a user can fix (missing model, params that do not match it, too short a video)."""


class MemoryFrames:
    """``FrameStore``'s read interface over the frames of one decoded video (id ``VID``)."""

    def __init__(self, frames: np.ndarray, codec: str, quality: int) -> None:
        self.source = frames  # (T, H, W, 3) uint8 RGB at the working size, as decoded
        self.codec, self.quality = codec, quality  # frames.codec and frames.quality
        self.height, self.width = frames.shape[1:3]

    def read(self, vid: int, indices: np.ndarray | list[int], gray: bool = False) -> np.ndarray:
        """``(len(indices), H, W, 3) uint8`` frames of video ``VID`` as the frames store would give them
        (encoded and decoded once, ``frames.codec_roundtrip``); ``(len(indices), H, W)`` with ``gray``."""
        assert vid == VID
        picked = self.source[np.asarray(indices, dtype=np.int64)]
        return frames_roundtrip(picked, self.codec, self.quality, gray) if len(picked) else picked

    def read_gray(self, vid: int, indices: np.ndarray | list[int]) -> np.ndarray:
        """``(len(indices), H, W) uint8``: ``FrameStore.read_gray`` of the frames."""
        return self.read(vid, indices, gray=True)


class MemorySG3I:
    """``SG3IStore.read`` of one video: its SG3I images ``(C, H, W, 3) uint8``, computed on demand."""

    def __init__(self, frames: MemoryFrames, kept: np.ndarray, clip: ClipConfig) -> None:
        self.frames, self.kept, self.clip = frames, kept, clip

    def read(self, vid: int) -> np.ndarray:
        return video_sg3i(self.frames, self.kept, vid, self.clip)


class MemoryFlow:
    """``FlowStore.read`` of one video: quantised TV-L1 fields ``(P, H, W, 2) uint8`` of the
    given pairs, computed on demand (each pair once) as the flow stage computes them."""

    def __init__(self, frames: MemoryFrames, kept: np.ndarray, cfg: FlowConfig, clip: ClipConfig) -> None:
        self.frames, self.kept, self.cfg, self.clip = frames, kept, cfg, clip

    def read(self, vid: int, pairs: list[int]) -> np.ndarray:
        unique = needed_pairs(len(self.kept), self.clip.frames, self.clip.step, self.cfg.stack)
        fields = video_flow(self.frames, vid, self.kept, unique, self.cfg)  # (P, H, W, 2)
        fields = codec_roundtrip(fields, self.cfg.codec, self.cfg.quality)  # as the flow store holds them
        return fields[[unique.index(k) for k in pairs]]


@dataclass(frozen=True)
class FeatureParams:
    """The params of the feature stages, from ``params.yaml``."""

    frames: FramesConfig
    resample: ResampleConfig
    clip: ClipConfig
    flow: FlowConfig

    @classmethod
    def from_params(cls, params: dict[str, Any]) -> FeatureParams:
        return cls(section(params, "frames", FramesConfig), section(params, "resample", ResampleConfig),
                   section(params, "clip", ClipConfig), section(params, "flow", FlowConfig))


def clip_samples(path: str | os.PathLike, fp: FeatureParams) -> dict[str, np.ndarray]:
    """Decode one video and build every clip's sample per modality, as the pipeline would.

    Returns:
        ``{"rgb": (C, H, W, 3), "sg3i": (C, H, W, 3), "flow": (C, H, W, 2L)}`` uint8.

    Raises:
        VideoError: if the file cannot be decoded.
        PredictError: if the video is too short for one clip.
    """
    frames, fps = read_video(path, fp.frames.width, fp.frames.height)  # (T, H, W, 3) uint8
    kept = resample_indices(len(frames), fps, fp.resample.fps)
    starts = clip_starts(len(kept), fp.clip.frames, fp.clip.step)
    if not starts:
        raise PredictError(f"{path}: too short: {len(frames)} frames at {fps:g} fps keep {len(kept)} at "
                           f"resample.fps {fp.resample.fps:g}; a clip needs clip.frames = {fp.clip.frames}")
    store = MemoryFrames(frames, fp.frames.codec, fp.frames.quality)  # reads as the frames store does
    video = ClipVideo(VID, -1, kept, starts)
    return video_samples(video, store, MemorySG3I(store, kept, fp.clip), MemoryFlow(store, kept, fp.flow, fp.clip),
                         fp.clip, fp.flow.stack)


def check_checkpoint(name: str, checkpoint: dict[str, Any], fp: FeatureParams) -> None:
    """The checkpoint's clip and flow quantisation params must be those of ``fp``.

    Raises:
        PredictError: naming both values.
    """
    if checkpoint.get("format", 1) < 2:
        raise PredictError(f"the {name} model is a format-{checkpoint.get('format', 1)} checkpoint without "
                           f"its flow scale: retrain it (dvc repro)")
    trained = checkpoint["shard_params"]
    now = {"clip": to_dict(fp.clip), "flow": {"stack": fp.flow.stack, "bound": fp.flow.bound}}
    for key in now:
        if trained[key] != now[key]:
            raise PredictError(f"the {name} model was trained with {key} {trained[key]}, params.yaml says "
                               f"{now[key]}: use the params it was trained with")


def load_conv(models_dir: Path) -> dict[str, Any]:
    """The fused network's file ``<models_dir>/convfusion.pt`` of ``fusion: conv``.

    Raises:
        PredictError: if it is missing or holds no trained network.
    """
    path = models_dir / "convfusion.pt"
    checkpoint = load_checkpoint(path) if path.is_file() else {}
    if not checkpoint.get("model"):
        raise PredictError(f"no trained fused network in {path}: run `dvc repro fuse` with fusion conv first")
    return checkpoint


def load_fusion_for(models_dir: Path, params: dict[str, Any]) -> tuple[str, Fusion, list[str] | None]:
    """The fitted fusion ``<models_dir>/fusion.pt``; without one, average fusion with the
    params' weights when ``fusion`` is ``average``.

    Raises:
        PredictError: if there is no fitted fusion and the params ask for a learned one.
    """
    path = models_dir / "fusion.pt"
    if path.is_file():
        return load_fusion(path)
    method = check_method(params.get("fusion", "average"))
    if method != "average":
        raise PredictError(f"no fitted fusion {path} for fusion {method!r}: run `dvc repro fuse` first")
    fusion = AverageFusion(section(params, "fuse", FuseConfig).weights)
    return method, fusion.fit([], np.empty(0), np.empty(0)), None  # average learns nothing


@dataclass
class Prediction:
    """What ``predict_video`` found for one video.

    Attributes:
        classes: class names in label order; method: the fusion method; clips: C, the clips
            scored (``views.snippets`` of them, or all), each through ``views.crops`` crops.
        probs: ``(K,) float64`` fused video scores (mean over clips); streams: per stream
            its ``(K,)`` video scores.
    """

    video: str
    classes: list[str]
    method: str
    clips: int
    probs: np.ndarray
    streams: dict[str, np.ndarray]

    def top(self, k: int, scores: np.ndarray | None = None) -> list[tuple[str, float]]:
        """The ``k`` highest ``(class, score)`` of ``scores`` (default: the fused ones), best first."""
        scores = self.probs if scores is None else scores
        order = np.argsort(-scores, kind="stable")[:k]
        return [(self.classes[i], float(scores[i])) for i in order]

    def to_json(self, k: int) -> dict[str, Any]:
        """A JSON-able summary: video, method, clips, top-k fused and per stream."""
        def listed(scores: np.ndarray | None = None) -> list[dict[str, Any]]:
            return [{"class": c, "probability": round(p, 6)} for c, p in self.top(k, scores)]
        return {"video": self.video, "method": self.method, "clips": self.clips, "top": listed(),
                "streams": {name: listed(s) for name, s in self.streams.items()}}


def predict_video(path: str | os.PathLike, models_dir: str | os.PathLike = "models",
                  params_path: str | os.PathLike = "params.yaml") -> Prediction:
    """Score one video with both streams and the fusion.

    Args:
        path: any file ffmpeg decodes (avi, mp4, ...).
        models_dir: holds ``spatial.pt``, ``temporal.pt`` and (from ``fuse``) ``fusion.pt``.
        params_path: the ``params.yaml`` of the pipeline that made the models.

    Returns:
        The ``Prediction``.

    Raises:
        VideoError: if the file cannot be decoded.
        PredictError: on a missing model, params that do not match it, or too short a video.
    """
    models_dir, params = Path(models_dir), load_params(params_path)
    fp = FeatureParams.from_params(params)
    checkpoints = {}
    for name in STREAMS:
        if not (models_dir / f"{name}.pt").is_file():
            raise PredictError(f"no {name} stream model {models_dir / f'{name}.pt'}: train it first (dvc repro)")
        checkpoints[name] = load_checkpoint(models_dir / f"{name}.pt")
        check_checkpoint(name, checkpoints[name], fp)
    method, fusion, fusion_classes = load_fusion_for(models_dir, params)
    classes = checkpoints[STREAMS[0]]["classes"]
    for name, other in [*((n, c["classes"]) for n, c in checkpoints.items()), ("fusion", fusion_classes)]:
        if other is not None and other != classes:
            raise PredictError(f"the {name} model has classes {other}, the {STREAMS[0]} model {classes}")
    samples = clip_samples(path, fp)
    views = section(params, "views", ViewsConfig)  # as the score stage scores val and test
    picks = snippet_picks(len(samples["rgb"]), views.snippets)
    clips = {name: score_samples(c, samples[c["modality"]][picks], crops=views.crops)
             for name, c in checkpoints.items()}  # each (C', K)
    if method == "conv":  # the fused network scores the clips itself, as the fuse stage scored val and test
        fused = score_video(load_conv(models_dir), samples["rgb"], samples[checkpoints["temporal"]["modality"]], views)
    else:
        fused = fusion.predict_proba([clips[name] for name in STREAMS])  # (C, K)
    return Prediction(str(path), classes, method, len(fused), fused.mean(axis=0),
                      {name: s.mean(axis=0).astype(np.float64) for name, s in clips.items()})
