"""Video-level evaluation of per-clip softmax scores, and the per-clip scores files.

A video's score is the mean of the softmax scores of its clips; its prediction is the
arg-max of that mean (lowest label on ties, as ``np.argmax``). ``evaluate`` returns the
metric keys of DESIGN.md (fractions 0..1 rounded to ``DECIMALS``) plus counts, per-class
video accuracy and the video-level confusion matrix.

Scores files (``data/scores/<stream>/<role>.npz``, written by ``train``, read by ``fuse``)
hold ``probs (N, K) float32``, ``labels``, ``videos``, ``clips`` (each ``(N,) int64``),
``classes`` (``(K,)`` fixed-width unicode, so they load with ``allow_pickle=False``), in
(video, clip) order, and ``expected_videos``, ``expected_labels`` (``(E,) int64``): every
video of the role the index names, so that a video that never reached the shards still
counts (as wrong).
"""

from __future__ import annotations

import logging
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
from sklearn.metrics import accuracy_score, confusion_matrix, top_k_accuracy_score

from twostream.runtime.jsonio import write_json

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


def _expected(truth_ids: np.ndarray, truth: np.ndarray, num_classes: int,
              expected: tuple[np.ndarray, np.ndarray] | None) -> tuple[np.ndarray, np.ndarray]:
    """The videos to count, ``(ids (E,), labels (E,))``: ``expected``, checked against the scored
    videos (``truth_ids``, ``truth``), or the scored videos themselves.

    Raises:
        ValueError: if a scored video is not expected, or has another label there.
    """
    if expected is None:
        return truth_ids, truth
    ids = np.asarray(expected[0]).astype(np.int64, copy=False)
    labels = np.asarray(expected[1]).astype(np.int64, copy=False)
    if ids.shape != labels.shape or ids.ndim != 1 or len(np.unique(ids)) != len(ids):
        raise ValueError(f"expected videos must be two (E,) arrays of distinct ids and labels; got "
                         f"{ids.shape} and {labels.shape}")
    if labels.size and (labels.min() < 0 or labels.max() >= num_classes):
        raise ValueError(f"expected labels must be in [0, {num_classes}); got min {labels.min()}, max {labels.max()}")
    if len(ids) == 0:
        raise ValueError(f"{len(truth_ids)} videos were scored but none is expected")
    order = np.argsort(ids)
    ids, labels = ids[order], labels[order]
    at = np.searchsorted(ids, truth_ids).clip(max=len(ids) - 1)
    bad = np.flatnonzero((ids[at] != truth_ids) | (labels[at] != truth))
    if bad.size:
        raise ValueError(f"scored video {truth_ids[bad[0]]} (label {truth[bad[0]]}) is not among the expected "
                         f"videos with that label")
    return ids, labels


def evaluate(probs: np.ndarray, labels: np.ndarray, videos: np.ndarray, classes: list[str],
             expected: tuple[np.ndarray, np.ndarray] | None = None) -> dict[str, Any]:
    """Clip- and video-level metrics of one method on one role.

    Video-level figures count every expected video: one without scores (it never reached
    the shards) counts as wrong, so the figures stay comparable with published results
    whatever the data stages dropped. Clip-level figures are over the scored clips.

    Args:
        probs: ``(N, K)`` softmax scores per clip, ``K == len(classes)``.
        labels: ``(N,)`` true label per clip, in ``[0, K)``, the same for all clips of a video.
        videos: ``(N,)`` video id per clip.
        classes: class names in label order.
        expected: ``(ids (E,), labels (E,))`` of every video the index names for the role;
            None = the scored videos.

    Returns:
        ``video_top1``, ``video_top5``, ``clip_top1``, ``clip_top5`` (top-min(5, K)),
        ``mean_class_acc`` (mean video recall over classes with an expected video): floats
        rounded to ``DECIMALS``; ``n_videos`` (expected), ``videos_scored``, ``n_clips``: ints;
        ``missing``: ids of the expected videos without scores; ``per_class``: class name ->
        video accuracy, ``None`` for a class without videos; ``confusion``: ``K x K`` list of
        scored-video counts, rows = true label, columns = predicted.

    Raises:
        ValueError: on bad shapes, K != len(classes), labels out of range, a video whose
            clips carry different labels, or a scored video that is not expected.
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
    truth_ids, truth = video_labels(labels, videos)
    _, scores = video_scores(probs, videos)
    all_ids, all_labels = _expected(truth_ids, truth, num_classes, expected)
    predicted = scores.argmax(axis=1)
    confusion = confusion_matrix(truth, predicted, labels=np.arange(num_classes))
    support = np.bincount(all_labels, minlength=num_classes)
    recall = np.diag(confusion) / np.maximum(support, 1)
    present = support > 0
    k = min(TOP_K, num_classes)
    share = len(truth) / max(len(all_ids), 1)  # a missing video counts as wrong
    return {
        "video_top1": _fraction(_top_k(truth, scores, 1) * share),
        "video_top5": _fraction(_top_k(truth, scores, k) * share),
        "clip_top1": _fraction(_top_k(labels, probs, 1)),
        "clip_top5": _fraction(_top_k(labels, probs, k)),
        "mean_class_acc": _fraction(recall[present].mean()),
        "n_videos": int(len(all_ids)),
        "videos_scored": int(len(truth)),
        "n_clips": int(len(labels)),
        "missing": np.setdiff1d(all_ids, truth_ids).tolist(),
        "per_class": {name: (_fraction(recall[c]) if present[c] else None)
                      for c, name in enumerate(classes)},
        "confusion": confusion.astype(int).tolist(),
    }


HEADLINE = ("video_top1", "video_top5", "clip_top1", "mean_class_acc", "n_videos", "videos_scored")


def headline(test: dict[str, Any], val: dict[str, Any]) -> dict[str, Any]:
    """The metrics file of a method: ``HEADLINE`` keys of its ``evaluate`` result on test, and
    ``val_video_top1``; per-class figures and the confusion matrix go to reports and plots."""
    return {**{key: test[key] for key in HEADLINE}, "val_video_top1": val["video_top1"]}


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
        expected_videos, expected_labels: ``(E,) int64``: every video the index names for
            the role (``evaluate``'s ``expected``); None = the scored videos.
    """

    probs: np.ndarray
    labels: np.ndarray
    videos: np.ndarray
    clips: np.ndarray
    classes: list[str]
    expected_videos: np.ndarray | None = None
    expected_labels: np.ndarray | None = None

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
        if self.expected_videos is None:
            self.expected_videos, self.expected_labels = video_labels(self.labels, self.videos)
        self.expected_videos = np.asarray(self.expected_videos).astype(np.int64, copy=False)
        self.expected_labels = np.asarray(self.expected_labels).astype(np.int64, copy=False)

    @property
    def expected(self) -> tuple[np.ndarray, np.ndarray]:
        """``(ids, labels)`` of the videos ``evaluate`` counts."""
        return self.expected_videos, self.expected_labels

    def evaluate(self, probs: np.ndarray | None = None) -> dict[str, Any]:
        """``evaluate`` of these clips (or of other ``probs`` for them) against the expected videos."""
        return evaluate(self.probs if probs is None else probs, self.labels, self.videos, self.classes,
                        self.expected)


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
                 clips=clips, classes=np.array(scores.classes, dtype=np.str_),
                 expected_videos=scores.expected_videos, expected_labels=scores.expected_labels)
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
        expected = [data[key] if key in data.files else None for key in ("expected_videos", "expected_labels")]
        return Scores(probs=data["probs"], labels=data["labels"], videos=data["videos"],
                      clips=data["clips"], classes=data["classes"].tolist(), expected_videos=expected[0],
                      expected_labels=expected[1])
