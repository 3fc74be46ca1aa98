"""Video-level evaluation of per-clip softmax scores, and the per-clip scores files.

A video's score is the mean of the softmax scores of its clips; its prediction is the
arg-max of that mean (lowest label on ties, as ``np.argmax``). ``evaluate`` returns the
metric keys of DESIGN.md (fractions 0..1 rounded to ``DECIMALS``) plus counts, per-class
video accuracy and the video-level confusion matrix.

Scores files (``data/scores/<stream>/<role>.npz``, written by ``train``, read by ``fuse``)
hold ``probs (N, K) float32``, ``labels``, ``videos``, ``clips`` (each ``(N,) int64``) and
``classes`` (``(K,)`` fixed-width unicode, so they load with ``allow_pickle=False``), in
(video, clip) order.
"""

from __future__ import annotations

import logging
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
from sklearn.metrics import accuracy_score, confusion_matrix, top_k_accuracy_score

from twostream.hmdb51 import write_json

log = logging.getLogger(__name__)

DECIMALS = 6  # fractions in metrics files are rounded to this many decimals
TOP_K = 5  # the "top-5" metrics use top-min(TOP_K, K)
SCORE_KEYS = ("probs", "labels", "videos", "clips", "classes")


def _fraction(value: float) -> float:
    """``value`` as a plain Python float rounded to ``DECIMALS``."""
    return round(float(value), DECIMALS)


def _check_clips(probs: np.ndarray, *columns: tuple[str, np.ndarray]) -> None:
    """Check ``probs (N, K)`` with N >= 1 and that each named column is ``(N,)``.

    Raises:
        ValueError: naming the bad shape.
    """
    if probs.ndim != 2 or probs.shape[0] == 0 or probs.shape[1] == 0:
        raise ValueError(f"probs must be (N, K) with N, K >= 1; got shape {probs.shape}")
    for name, column in columns:
        if column.shape != (probs.shape[0],):
            raise ValueError(f"{name} must be ({probs.shape[0]},) like probs' rows; got shape {column.shape}")


def video_scores(probs: np.ndarray, videos: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Mean clip score per video.

    Args:
        probs: ``(N, K)`` softmax scores, one row per clip.
        videos: ``(N,)`` video id of each clip (any order).

    Returns:
        ``video_ids (V,) int64`` sorted ascending and ``scores (V, K) float64``, row v the
        mean of the rows of ``probs`` whose video is ``video_ids[v]``.

    Raises:
        ValueError: on bad shapes or no clips.
    """
    probs = np.asarray(probs, dtype=np.float64)
    videos = np.asarray(videos).astype(np.int64, copy=False)
    _check_clips(probs, ("videos", videos))
    video_ids, inverse = np.unique(videos, return_inverse=True)
    sums = np.zeros((len(video_ids), probs.shape[1]), dtype=np.float64)
    np.add.at(sums, inverse, probs)
    counts = np.bincount(inverse, minlength=len(video_ids)).astype(np.float64)
    return video_ids.astype(np.int64), sums / counts[:, None]


def video_labels(labels: np.ndarray, videos: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """The label of each video, checked to be the same for all its clips.

    Args:
        labels, videos: ``(N,)`` per clip.

    Returns:
        ``video_ids (V,) int64`` sorted ascending and their ``labels (V,) int64``.

    Raises:
        ValueError: naming the first video whose clips carry different labels.
    """
    labels = np.asarray(labels).astype(np.int64, copy=False)
    videos = np.asarray(videos).astype(np.int64, copy=False)
    if labels.shape != videos.shape or labels.ndim != 1:
        raise ValueError(f"labels and videos must both be (N,); got {labels.shape} and {videos.shape}")
    video_ids, first, inverse = np.unique(videos, return_index=True, return_inverse=True)
    per_video = labels[first]
    bad = np.flatnonzero(labels != per_video[inverse])
    if bad.size:
        vid = int(videos[bad[0]])
        found = sorted(int(x) for x in np.unique(labels[videos == vid]))
        raise ValueError(f"video {vid} has clips with different labels {found}; a video has one label")
    return video_ids.astype(np.int64), per_video


def _top_k(y_true: np.ndarray, scores: np.ndarray, k: int) -> float:
    """Fraction of rows whose true label is among the k highest scores (1.0 when k >= K)."""
    num_classes = scores.shape[1]
    if k >= num_classes:
        return 1.0
    if k == 1:
        return float(accuracy_score(y_true, scores.argmax(axis=1)))
    return float(top_k_accuracy_score(y_true, scores, k=k, labels=np.arange(num_classes)))


def evaluate(probs: np.ndarray, labels: np.ndarray, videos: np.ndarray,
             classes: list[str]) -> dict[str, Any]:
    """Clip- and video-level metrics of one method on one role.

    Args:
        probs: ``(N, K)`` softmax scores per clip, ``K == len(classes)``.
        labels: ``(N,)`` true label per clip, in ``[0, K)``, the same for all clips of a video.
        videos: ``(N,)`` video id per clip.
        classes: class names in label order.

    Returns:
        ``video_top1``, ``video_top5``, ``clip_top1``, ``clip_top5`` (top-min(5, K)),
        ``mean_class_acc`` (mean video recall over classes that have a video): floats
        rounded to ``DECIMALS``; ``n_videos``, ``n_clips``: ints; ``per_class``: class name
        -> video accuracy, ``None`` for a class without videos; ``confusion``: ``K x K``
        list of video counts, rows = true label, columns = predicted.

    Raises:
        ValueError: on bad shapes, K != len(classes), labels out of range, or a video
            whose clips carry different labels.
    """
    probs = np.asarray(probs, dtype=np.float64)
    labels = np.asarray(labels).astype(np.int64, copy=False)
    videos = np.asarray(videos).astype(np.int64, copy=False)
    _check_clips(probs, ("labels", labels), ("videos", videos))
    num_classes = probs.shape[1]
    if len(classes) != num_classes:
        raise ValueError(f"probs has {num_classes} columns but {len(classes)} classes were given")
    if labels.min() < 0 or labels.max() >= num_classes:
        raise ValueError(f"labels must be in [0, {num_classes}); got min {labels.min()}, max {labels.max()}")
    _, truth = video_labels(labels, videos)
    _, scores = video_scores(probs, videos)
    predicted = scores.argmax(axis=1)
    confusion = confusion_matrix(truth, predicted, labels=np.arange(num_classes))
    support = confusion.sum(axis=1)
    recall = np.diag(confusion) / np.maximum(support, 1)
    present = support > 0
    k = min(TOP_K, num_classes)
    return {
        "video_top1": _fraction(_top_k(truth, scores, 1)),
        "video_top5": _fraction(_top_k(truth, scores, k)),
        "clip_top1": _fraction(_top_k(labels, probs, 1)),
        "clip_top5": _fraction(_top_k(labels, probs, k)),
        "mean_class_acc": _fraction(recall[present].mean()),
        "n_videos": int(len(truth)),
        "n_clips": int(len(labels)),
        "per_class": {name: (_fraction(recall[c]) if present[c] else None)
                      for c, name in enumerate(classes)},
        "confusion": confusion.astype(int).tolist(),
    }


def confusion_rows(video_true: np.ndarray, video_pred: np.ndarray,
                   classes: list[str]) -> list[dict[str, str]]:
    """One ``{"actual": name, "predicted": name}`` row per video, for DVC's confusion plot.

    Args:
        video_true, video_pred: ``(V,)`` int labels per video.
        classes: class names in label order.

    Returns:
        The rows in video order.

    Raises:
        ValueError: on different lengths or a label outside ``[0, len(classes))``.
    """
    video_true = np.asarray(video_true).astype(np.int64, copy=False)
    video_pred = np.asarray(video_pred).astype(np.int64, copy=False)
    if video_true.shape != video_pred.shape or video_true.ndim != 1:
        raise ValueError(f"video_true and video_pred must both be (V,); got {video_true.shape} "
                         f"and {video_pred.shape}")
    for name, values in (("video_true", video_true), ("video_pred", video_pred)):
        if values.size and (values.min() < 0 or values.max() >= len(classes)):
            raise ValueError(f"{name} must be in [0, {len(classes)}); got min {values.min()}, "
                             f"max {values.max()}")
    return [{"actual": classes[t], "predicted": classes[p]}
            for t, p in zip(video_true.tolist(), video_pred.tolist())]


def per_class_table(results: dict[str, dict[str, Any]]) -> list[dict[str, Any]]:
    """Per class, each method's video accuracy side by side.

    Args:
        results: method name (e.g. ``spatial``, ``temporal``, ``fusion``) -> its
            ``evaluate`` dict (only ``per_class`` is read).

    Returns:
        ``[{"class": name, <method>: accuracy or None, ...}]``, classes in order of first
        appearance over the methods; ``None`` where a method has no value for a class.

    Raises:
        ValueError: if a method is named ``class`` or lacks ``per_class``.
    """
    if "class" in results:
        raise ValueError("a method may not be named 'class' (it is the table's class column)")
    names: dict[str, None] = {}
    for method, result in results.items():
        if "per_class" not in result:
            raise ValueError(f"results[{method!r}] has no 'per_class'; got keys {sorted(result)}")
        names.update(dict.fromkeys(result["per_class"]))
    return [{"class": name, **{method: result["per_class"].get(name) for method, result in results.items()}}
            for name in names]


def write_metrics(path: str | os.PathLike, metrics: dict[str, Any]) -> None:
    """Write ``metrics`` as JSON (sorted keys, indent 1, final newline), creating parent dirs."""
    write_json(path, metrics)


@dataclass
class Scores:
    """Per-clip scores of one stream on one role.

    Attributes:
        probs: ``(N, K) float32`` softmax per clip.
        labels, videos, clips: ``(N,) int64`` true label, video id, clip number.
        classes: the ``K`` class names in label order.
    """

    probs: np.ndarray
    labels: np.ndarray
    videos: np.ndarray
    clips: np.ndarray
    classes: list[str]

    def __post_init__(self) -> None:
        """Cast to the stated dtypes and check the shapes.

        Raises:
            ValueError: on bad shapes or ``K != len(classes)``.
        """
        self.probs = np.asarray(self.probs, dtype=np.float32)
        self.labels = np.asarray(self.labels).astype(np.int64, copy=False)
        self.videos = np.asarray(self.videos).astype(np.int64, copy=False)
        self.clips = np.asarray(self.clips).astype(np.int64, copy=False)
        self.classes = [str(c) for c in self.classes]
        _check_clips(self.probs, ("labels", self.labels), ("videos", self.videos), ("clips", self.clips))
        if len(self.classes) != self.probs.shape[1]:
            raise ValueError(f"probs has {self.probs.shape[1]} columns but {len(self.classes)} classes")


def save_scores(path: str | os.PathLike, scores: Scores) -> None:
    """Write ``scores`` to an ``.npz`` file, rows sorted by (video, clip).

    The bytes depend only on the content (numpy writes fixed zip timestamps).

    Args:
        path: the file; parent directories are created.
        scores: what to write.

    Raises:
        ValueError: if a (video, clip) pair occurs twice.
    """
    order = np.lexsort((scores.clips, scores.videos))
    videos, clips = scores.videos[order], scores.clips[order]
    same = (videos[1:] == videos[:-1]) & (clips[1:] == clips[:-1])
    if same.any():
        i = int(np.flatnonzero(same)[0])
        raise ValueError(f"(video, clip) = ({videos[i]}, {clips[i]}) occurs more than once")
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "wb") as f:
        np.savez(f, probs=scores.probs[order], labels=scores.labels[order], videos=videos,
                 clips=clips, classes=np.array(scores.classes, dtype=np.str_))
    log.info("wrote %d clip scores of %d videos to %s", len(order), len(np.unique(videos)), path)


def load_scores(path: str | os.PathLike) -> Scores:
    """Read a file written by ``save_scores`` (no pickles).

    Raises:
        ValueError: if a key of ``SCORE_KEYS`` is missing.
    """
    with np.load(path, allow_pickle=False) as data:
        missing = [key for key in SCORE_KEYS if key not in data.files]
        if missing:
            raise ValueError(f"{path} lacks {missing}; a scores file has {list(SCORE_KEYS)}")
        return Scores(probs=data["probs"], labels=data["labels"], videos=data["videos"],
                      clips=data["clips"], classes=data["classes"].tolist())
