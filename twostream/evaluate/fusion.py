"""Late fusion of the two streams' per-clip softmax scores: average, network or svm.

Every method maps the streams' scores of one clip, ``S`` arrays ``(N, K) float32`` (in
``STREAMS`` order), to fused scores ``(N, K) float64`` that sum to 1 per row; a video's
score is then the mean over its clips, as for a single stream (``metrics.evaluate``).
Fusing per clip keeps every DESIGN metric (``clip_top1`` included) meaningful, gives the
learned methods 6x more rows than per video on the demo (6 clips a video), and lets
``predict`` run the same function on a new video's clips.

- ``average``: ``sum_s w_s p_s / sum_s w_s`` (``fuse.weights``, 1:1 by default).
- ``network``: an MLP (one hidden ReLU layer of ``fuse.hidden`` units, or none) over the
  concatenated log-scores ``log(max(p_s, LOG_FLOOR))``; trained with full-batch AdamW on
  the ``val`` scores only, early-stopped on the cross-entropy of an inner split of val
  (``fuse.holdout`` of each class's val videos, by video, never by clip), seeded and on
  one CPU thread, so a fit is repeatable bit for bit. Log-scores, because a confident
  stream's softmax puts its information in values near 0 (1e-3 vs 1e-5) that an MLP on
  raw scores hardly sees (demo test video top-1 0.95 vs 0.94 with raw scores).
- ``svm``: Simonyan & Zisserman's fusion: a multi-class linear SVM (scikit-learn
  ``LinearSVC``, one-vs-rest) on the L2-normalised stacked softmax scores, fitted on val;
  its scores are the softmax of its decision values (a monotone map of the margins, not
  calibrated probabilities).
- ``conv``: fusion inside the network (``convfusion``, trained by the ``convfuse`` stage); this
  stage only evaluates the fused network's val and test scores (``data/scores/conv``), and its
  fusion file says that ``predict`` must run ``models/convfusion.pt``.

Besides the headline metrics, ``metrics/fusion_cost.json`` gives what a method costs: its
trainable parameters and the seconds its fit took (the fused network's training for conv).

Fitted fusions are saved with ``save_fusion`` as a checkpoint of tensors and plain
values (``torch.load(..., weights_only=True)``), so ``predict`` rebuilds one from the file.
"""

from __future__ import annotations

import csv
import json
import logging
import os
import time
from dataclasses import asdict
from pathlib import Path
from typing import Any, Sequence

import numpy as np
import torch
from sklearn.svm import LinearSVC
from torch import nn

from twostream.runtime.config import FuseConfig
from twostream.learn.metrics import (
    Scores, confusion_rows, headline, load_scores, per_class_table, video_labels, video_scores, write_metrics,
)

log = logging.getLogger(__name__)

METHODS = ("average", "network", "svm", "conv")
SCORE_METHODS = METHODS[:3]  # the late fusions of the streams' scores, fitted here
STREAMS = ("spatial", "temporal")  # order of the score arrays every method takes
LOG_FLOOR = 1e-6  # network inputs: log of scores floored here (a softmax score can be 0.0 in float32)
FORMAT = 1  # version of the saved fusion file
ABSENT = -1e3  # svm: decision value of a class without training clips


def check_method(method: str) -> str:
    """Return ``method`` if it is one of ``METHODS``.

    Raises:
        ValueError: naming the value and the choices.
    """
    if method not in METHODS:
        raise ValueError(f"fusion must be one of {', '.join(METHODS)}; got {method!r}")
    return method


def check_streams(stream_probs: Sequence[np.ndarray]) -> tuple[int, int]:
    """Check ``S = len(STREAMS)`` score arrays of one shape ``(N, K)``; returns ``(N, K)``.

    Raises:
        ValueError: naming the count or shapes found.
    """
    shapes = [np.shape(p) for p in stream_probs]
    if len(shapes) != len(STREAMS) or len(set(shapes)) != 1 or len(shapes[0]) != 2:
        raise ValueError(f"need {len(STREAMS)} score arrays ({', '.join(STREAMS)}) of one shape (N, K); "
                         f"got shapes {shapes}")
    return shapes[0]


def check_aligned(scores: Sequence[Scores]) -> None:
    """The streams' scores must cover the same clips, in the same order, with the same labels.

    Raises:
        ValueError: naming the first disagreement (classes, rows, or the first differing clip).
    """
    first = scores[0]
    for name, other in zip(STREAMS[1:], scores[1:]):
        if other.classes != first.classes:
            raise ValueError(f"{STREAMS[0]} and {name} scores have different classes: {first.classes} vs "
                             f"{other.classes}")
        if len(other.videos) != len(first.videos):
            raise ValueError(f"{STREAMS[0]} has {len(first.videos)} clip scores, {name} {len(other.videos)}")
        if not (np.array_equal(other.expected_videos, first.expected_videos)
                and np.array_equal(other.expected_labels, first.expected_labels)):
            raise ValueError(f"{STREAMS[0]} and {name} scores expect other videos: re-run both train stages")
        differ = np.flatnonzero((other.videos != first.videos) | (other.clips != first.clips)
                                | (other.labels != first.labels))
        if differ.size:
            i = int(differ[0])
            raise ValueError(f"row {i}: {STREAMS[0]} scores video {first.videos[i]} clip {first.clips[i]} "
                             f"(label {first.labels[i]}), {name} video {other.videos[i]} clip "
                             f"{other.clips[i]} (label {other.labels[i]})")


def softmax(logits: np.ndarray) -> np.ndarray:
    """Row-wise softmax of ``(N, K)`` values, in float64."""
    z = np.asarray(logits, dtype=np.float64)
    z = np.exp(z - z.max(axis=1, keepdims=True))
    return z / z.sum(axis=1, keepdims=True)


def holdout_mask(labels: np.ndarray, videos: np.ndarray, fraction: float, seed: int) -> np.ndarray:
    """Clips of the inner early-stopping split, by video, stratified by class, seeded.

    Each class with ``n >= 2`` videos gives ``min(n - 1, max(1, round(fraction * n)))`` of
    them; if that holds out nothing (every class has one video, as in tiny test runs),
    ``max(1, round(fraction * V))`` of all ``V`` videos are drawn instead.

    Args:
        labels, videos: ``(N,)`` per clip.
        fraction: share of videos held out, in (0, 1).
        seed: seed of the draw.

    Returns:
        ``(N,) bool``, True for the clips of held-out videos.

    Raises:
        ValueError: if ``fraction`` is outside (0, 1) or there are fewer than 2 videos.
    """
    if not 0 < fraction < 1:
        raise ValueError(f"fuse.holdout must be in (0, 1); got {fraction!r}")
    ids, per_video = video_labels(labels, videos)
    if len(ids) < 2:
        raise ValueError(f"an inner split needs at least 2 videos; got {len(ids)}")
    rng = np.random.default_rng(seed)
    held = []
    for label in np.unique(per_video):
        members = rng.permutation(ids[per_video == label])
        held.extend(members[:min(len(members) - 1, max(1, round(fraction * len(members))))].tolist())
    if not held:
        held = rng.permutation(ids)[:max(1, round(fraction * len(ids)))].tolist()
    return np.isin(videos, held)


class AverageFusion:
    """Weighted mean of the streams' scores."""

    def __init__(self, weights: Sequence[float]) -> None:
        self.weights = [float(w) for w in weights]

    def fit(self, stream_probs: Sequence[np.ndarray], labels: np.ndarray, videos: np.ndarray) -> AverageFusion:
        """Check the weights (nothing is learnt); returns self.

        Raises:
            ValueError: unless there is one weight >= 0 per stream and their sum is > 0.
        """
        w = np.asarray(self.weights, dtype=np.float64)
        if w.shape != (len(STREAMS),) or (w < 0).any() or not w.sum() > 0:
            raise ValueError(f"fuse.weights must be {len(STREAMS)} numbers >= 0 ({', '.join(STREAMS)}) "
                             f"with a positive sum; got {self.weights}")
        self.weights_ = w / w.sum()
        return self

    def predict_proba(self, stream_probs: Sequence[np.ndarray]) -> np.ndarray:
        """Fused ``(N, K) float64`` scores of ``S`` arrays ``(N, K)``."""
        check_streams(stream_probs)
        return sum(w * np.asarray(p, dtype=np.float64) for w, p in zip(self.weights_, stream_probs))

    def state(self) -> dict[str, Any]:
        return {"weights_": self.weights_.tolist()}

    def load_state(self, state: dict[str, Any]) -> None:
        self.weights_ = np.asarray(state["weights_"], dtype=np.float64)


def log_features(stream_probs: Sequence[np.ndarray]) -> np.ndarray:
    """Network input: ``S`` arrays ``(N, K)`` -> ``(N, S*K) float32`` of ``log(max(p, LOG_FLOOR))``."""
    check_streams(stream_probs)
    stacked = np.concatenate([np.asarray(p, dtype=np.float32) for p in stream_probs], axis=1)
    return np.log(np.maximum(stacked, np.float32(LOG_FLOOR)))


def mlp(inputs: int, hidden: int, classes: int) -> nn.Module:
    """``Linear(inputs, hidden) -> ReLU -> Linear(hidden, classes)``, or one ``Linear`` if hidden is 0."""
    if hidden < 0:
        raise ValueError(f"fuse.hidden must be >= 0 (0 = no hidden layer); got {hidden}")
    if hidden == 0:
        return nn.Linear(inputs, classes)
    return nn.Sequential(nn.Linear(inputs, hidden), nn.ReLU(), nn.Linear(hidden, classes))


class NetworkFusion:
    """MLP over the streams' log-scores, early-stopped on an inner split of its training videos."""

    def __init__(self, hidden: int, lr: float, weight_decay: float, max_epochs: int, patience: int,
                 holdout: float, seed: int) -> None:
        self.hidden, self.lr, self.weight_decay = hidden, lr, weight_decay
        self.max_epochs, self.patience, self.holdout, self.seed = max_epochs, patience, holdout, seed

    def fit(self, stream_probs: Sequence[np.ndarray], labels: np.ndarray, videos: np.ndarray) -> NetworkFusion:
        """Train on the clips outside ``holdout_mask``; keep the weights of the step with the
        lowest holdout cross-entropy, stopping ``patience`` steps after it (or at ``max_epochs``).

        Sets ``net_``, ``inputs_`` (S*K), ``classes_`` (K), ``best_epoch_`` (full-batch steps
        taken to reach the kept weights) and ``holdout_loss_``. Returns self.

        Raises:
            ValueError: on bad params or shapes, or fewer than 2 videos.
        """
        if self.max_epochs < 1 or self.patience < 1 or not self.lr > 0:
            raise ValueError(f"fuse.max_epochs and fuse.patience must be >= 1 and fuse.lr > 0; got "
                             f"{self.max_epochs}, {self.patience}, {self.lr}")
        n, k = check_streams(stream_probs)
        held = holdout_mask(labels, videos, self.holdout, self.seed)
        x = torch.from_numpy(log_features(stream_probs))  # (N, S*K)
        y = torch.from_numpy(np.asarray(labels, dtype=np.int64))  # (N,)
        fit_rows, held_rows = torch.from_numpy(~held), torch.from_numpy(held)
        threads = torch.get_num_threads()
        torch.set_num_threads(1)  # tiny matrices: one thread is faster, and repeatable
        try:
            torch.manual_seed(self.seed)
            net = mlp(x.shape[1], self.hidden, k)
            optimizer = torch.optim.AdamW(net.parameters(), lr=self.lr, weight_decay=self.weight_decay)
            best = (float("inf"), 0, {})
            for epoch in range(1, self.max_epochs + 1):
                loss = nn.functional.cross_entropy(net(x[fit_rows]), y[fit_rows])
                optimizer.zero_grad(set_to_none=True)
                loss.backward()
                optimizer.step()
                with torch.no_grad():
                    held_loss = float(nn.functional.cross_entropy(net(x[held_rows]), y[held_rows]))
                if held_loss < best[0]:
                    best = (held_loss, epoch, {k_: v.clone() for k_, v in net.state_dict().items()})
                elif epoch - best[1] >= self.patience:
                    break
        finally:
            torch.set_num_threads(threads)
        net.load_state_dict(best[2])
        self.net_, self.holdout_loss_, self.best_epoch_ = net.eval(), best[0], best[1]
        self.inputs_, self.classes_ = int(x.shape[1]), k
        log.info("fusion network: %d of %d clips for fitting, best holdout loss %.4f after %d steps",
                 int((~held).sum()), n, best[0], best[1])
        return self

    @torch.no_grad()
    def predict_proba(self, stream_probs: Sequence[np.ndarray]) -> np.ndarray:
        """Fused ``(N, K) float64`` scores: softmax of the network's logits."""
        logits = self.net_(torch.from_numpy(log_features(stream_probs)))
        return softmax(logits.double().numpy())

    def state(self) -> dict[str, Any]:
        return {"net_": self.net_.state_dict(), "inputs_": self.inputs_, "classes_": self.classes_,
                "best_epoch_": self.best_epoch_, "holdout_loss_": self.holdout_loss_}

    def load_state(self, state: dict[str, Any]) -> None:
        self.inputs_, self.classes_ = int(state["inputs_"]), int(state["classes_"])
        self.net_ = mlp(self.inputs_, self.hidden, self.classes_)
        self.net_.load_state_dict(state["net_"])
        self.net_.eval()
        self.best_epoch_, self.holdout_loss_ = state["best_epoch_"], state["holdout_loss_"]


def svm_features(stream_probs: Sequence[np.ndarray]) -> np.ndarray:
    """SVM input: ``S`` arrays ``(N, K)`` -> ``(N, S*K) float64`` stacked scores, each row of unit L2 norm."""
    check_streams(stream_probs)
    stacked = np.concatenate([np.asarray(p, dtype=np.float64) for p in stream_probs], axis=1)
    return stacked / np.maximum(np.linalg.norm(stacked, axis=1, keepdims=True), 1e-12)


class SVMFusion:
    """Linear SVM (one-vs-rest) on the L2-normalised stacked softmax scores."""

    def __init__(self, c: float, seed: int) -> None:
        self.c, self.seed = c, seed

    def fit(self, stream_probs: Sequence[np.ndarray], labels: np.ndarray, videos: np.ndarray) -> SVMFusion:
        """Fit ``LinearSVC(C=c)``; sets ``coef_ (K, S*K)`` and ``intercept_ (K,)``. Returns self.

        Raises:
            ValueError: if ``c`` is not positive, or every label is the same.
        """
        if not self.c > 0:
            raise ValueError(f"fuse.svm_c must be > 0; got {self.c!r}")
        _, k = check_streams(stream_probs)
        labels = np.asarray(labels, dtype=np.int64)
        if len(np.unique(labels)) < 2:
            raise ValueError(f"svm fusion needs at least 2 classes among the labels; got {np.unique(labels)}")
        svm = LinearSVC(C=self.c, random_state=self.seed).fit(svm_features(stream_probs), labels)
        coef, intercept = svm.coef_, svm.intercept_
        if len(svm.classes_) == 2:  # one decision function, positive for classes_[1]: make it symmetric
            coef, intercept = np.vstack([-coef, coef]), np.concatenate([-intercept, intercept])
        # a row for every class 0..K-1; one without a training clip can never win
        self.coef_ = np.zeros((k, coef.shape[1]))
        self.intercept_ = np.full(k, ABSENT)
        self.coef_[svm.classes_], self.intercept_[svm.classes_] = coef, intercept
        return self

    def decision_function(self, stream_probs: Sequence[np.ndarray]) -> np.ndarray:
        """``(N, K)`` decision values ``x @ coef_.T + intercept_`` of the normalised features."""
        return svm_features(stream_probs) @ self.coef_.T + self.intercept_

    def predict_proba(self, stream_probs: Sequence[np.ndarray]) -> np.ndarray:
        """Fused ``(N, K) float64`` scores: softmax of the decision values."""
        return softmax(self.decision_function(stream_probs))

    def state(self) -> dict[str, Any]:
        return {"coef_": torch.from_numpy(self.coef_), "intercept_": torch.from_numpy(self.intercept_)}

    def load_state(self, state: dict[str, Any]) -> None:
        self.coef_, self.intercept_ = state["coef_"].numpy(), state["intercept_"].numpy()


class InNetworkFusion:
    """``conv``: the fusion happens inside the fused network; nothing is fitted here and no stream
    scores are combined (``predict`` runs ``models/convfusion.pt``)."""

    def fit(self, stream_probs: Sequence[np.ndarray], labels: np.ndarray, videos: np.ndarray) -> InNetworkFusion:
        return self

    def predict_proba(self, stream_probs: Sequence[np.ndarray]) -> np.ndarray:
        raise ValueError("conv fusion combines no stream scores: the fused network scores the clips itself")

    def state(self) -> dict[str, Any]:
        return {}

    def load_state(self, state: dict[str, Any]) -> None:
        pass


Fusion = AverageFusion | NetworkFusion | SVMFusion | InNetworkFusion


def trainable_params(fusion: Fusion) -> int:
    """Parameters a fitted score-level fusion learnt (average: none)."""
    if isinstance(fusion, NetworkFusion):
        return sum(p.numel() for p in fusion.net_.parameters())
    if isinstance(fusion, SVMFusion):
        return int(fusion.coef_.size + fusion.intercept_.size)
    return 0


def build_fusion(method: str, cfg: FuseConfig, seed: int) -> Fusion:
    """The unfitted fusion ``method`` with its settings from ``cfg``.

    Raises:
        ValueError: if ``method`` is not one of ``METHODS``.
    """
    check_method(method)
    if method == "conv":
        return InNetworkFusion()
    if method == "average":
        return AverageFusion(cfg.weights)
    if method == "network":
        return NetworkFusion(cfg.hidden, cfg.lr, cfg.weight_decay, cfg.max_epochs, cfg.patience, cfg.holdout, seed)
    return SVMFusion(cfg.svm_c, seed)


def save_fusion(path: str | os.PathLike, method: str, cfg: FuseConfig, seed: int, fusion: Fusion,
                classes: list[str]) -> None:
    """Write a fitted fusion as ``{"format", "method", "classes", "config", "seed", "state"}``."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    torch.save({"format": FORMAT, "method": method, "classes": list(classes), "config": asdict(cfg),
                "seed": seed, "state": fusion.state()}, path)


def load_fusion(path: str | os.PathLike) -> tuple[str, Fusion, list[str]]:
    """Read what ``save_fusion`` wrote (``weights_only``: no pickled code).

    Returns:
        ``(method, fitted fusion, classes)``.

    Raises:
        ValueError: on an unknown format or method.
    """
    saved = torch.load(path, map_location="cpu", weights_only=True)
    if saved.get("format") != FORMAT:
        raise ValueError(f"{path}: fusion file format {saved.get('format')!r}, expected {FORMAT}")
    fusion = build_fusion(saved["method"], FuseConfig(**saved["config"]), saved["seed"])
    fusion.load_state(saved["state"])
    return saved["method"], fusion, saved["classes"]


def load_role(scores_dir: str | os.PathLike, role: str) -> list[Scores]:
    """The streams' scores of one role, ``<scores_dir>/<stream>/<role>.npz``, checked to align.

    Raises:
        FileNotFoundError: if a file is missing; ValueError: if they do not align.
    """
    scores = [load_scores(Path(scores_dir) / stream / f"{role}.npz") for stream in STREAMS]
    check_aligned(scores)
    return scores


def per_class_rows(results: dict[str, dict[str, Any]]) -> list[dict[str, Any]]:
    """Long-format per-class video accuracy for a bar chart: ``{"class", "method", "label",
    "accuracy"}`` per class and method (``label`` = ``"<class> <method>"``), classes without
    test videos left out."""
    return [{"class": row["class"], "method": method, "label": f"{row['class']} {method}",
             "accuracy": row[method]}
            for row in per_class_table(results) for method in results if row[method] is not None]


def write_csv(path: str | os.PathLike, rows: list[dict[str, Any]]) -> None:
    """Write ``rows`` (dicts with the keys of the first) as CSV with a header line."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "w", newline="", encoding="utf-8") as f:
        writer = csv.DictWriter(f, fieldnames=list(rows[0]) if rows else [], lineterminator="\n")
        writer.writeheader()
        writer.writerows(rows)


def plot_per_class(path: str | os.PathLike, results: dict[str, dict[str, Any]], title: str) -> None:
    """PNG: per class, a bar per method (``evaluate`` results: video accuracy), side by side."""
    import matplotlib
    matplotlib.use("Agg")
    from matplotlib import pyplot as plt

    table = per_class_table(results)
    fig, ax = plt.subplots(figsize=(max(6.0, 0.6 * len(table) + 2), 3.6), dpi=100)
    width = 0.8 / len(results)
    for m, method in enumerate(results):
        values = [np.nan if row[method] is None else row[method] for row in table]
        ax.bar(np.arange(len(table)) + (m - (len(results) - 1) / 2) * width, values, width,
               label=f"{method} ({results[method]['video_top1']:.3f})")
    ax.set_xticks(np.arange(len(table)), [row["class"] for row in table], rotation=45, ha="right")
    ax.set(ylim=(0, 1.2), yticks=np.linspace(0, 1, 6), ylabel="video accuracy (test)", title=title)
    ax.legend(fontsize=8, loc="upper center", ncol=len(results), frameon=False)
    fig.tight_layout()
    Path(path).parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, metadata={"Software": None})
    plt.close(fig)


def fuse(scores_dir: str | os.PathLike, metrics_path: str | os.PathLike, model_path: str | os.PathLike,
         plots_dir: str | os.PathLike, method: str, cfg: FuseConfig, seed: int,
         cost_path: str | os.PathLike | None = None) -> dict[str, Any]:
    """Fit the fusion on the val scores, apply it to the test scores, write metrics, model and plots.

    Args:
        scores_dir: ``data/scores`` (``<stream>/{val,test}.npz`` of every stream in ``STREAMS``;
            for conv also ``conv/{val,test}.npz`` and ``conv/report.json``, the fused network's).
        metrics_path: ``metrics/fusion.json``: ``metrics.headline`` of the fused test and val
            scores (val: for network and svm the data they were fitted on) and ``method``.
        model_path: the fitted fusion (``save_fusion``), for ``predict``.
        plots_dir: ``confusion.csv`` (``actual``, ``predicted`` per test video), ``per_class.csv``
            (``per_class_rows``) and ``per_class.png``.
        method: one of ``METHODS``; cfg: the ``fuse`` params; seed: ``base.seed``.
        cost_path: ``metrics/fusion_cost.json``: ``method``, ``trainable_params`` and ``fit_seconds``.

    Returns:
        The metrics written, plus ``streams``: each stream's test video top-1 (not written).

    Raises:
        ValueError: on an unknown method, bad settings, or scores that do not align.
        FileNotFoundError: if a scores file is missing, or conv's were made for another method.
    """
    fusion = build_fusion(method, cfg, seed)
    val, test = load_role(scores_dir, "val"), load_role(scores_dir, "test")
    classes = test[0].classes
    if val[0].classes != classes:
        raise ValueError(f"val and test scores have different classes: {val[0].classes} vs {classes}")
    begin = time.perf_counter()
    if method == "conv":  # (rows, their fused probs): the fused network's own rows and scores
        conv, cost = conv_scores(scores_dir, classes)
        fused = {role: (s, s.probs) for role, s in conv.items()}
    else:  # the streams' rows, their scores fused
        fusion.fit([s.probs for s in val], val[0].labels, val[0].videos)
        fused = {role: (scores[0], fusion.predict_proba([s.probs for s in scores]))
                 for role, scores in (("val", val), ("test", test))}
        cost = {"trainable_params": trainable_params(fusion), "fit_seconds": round(time.perf_counter() - begin, 3)}
    results = {name: s.evaluate() for name, s in zip(STREAMS, test)}
    results["fusion"] = fused["test"][0].evaluate(fused["test"][1])
    metrics = {**headline(results["fusion"], fused["val"][0].evaluate(fused["val"][1])), "method": method}
    write_metrics(metrics_path, metrics)
    if cost_path is not None:
        write_metrics(cost_path, {"method": method, **cost})
    save_fusion(model_path, method, cfg, seed, fusion, classes)
    plots_dir = Path(plots_dir)
    rows, probs = fused["test"]
    _, truth = video_labels(rows.labels, rows.videos)
    _, video_probs = video_scores(probs, rows.videos)  # (V, K), videos in id order
    write_csv(plots_dir / "confusion.csv", confusion_rows(truth, video_probs.argmax(axis=1), classes))
    write_csv(plots_dir / "per_class.csv", per_class_rows(results))
    plot_per_class(plots_dir / "per_class.png", results, f"Per-class test accuracy: streams and {method} fusion")
    return {**metrics, "streams": {name: results[name]["video_top1"] for name in STREAMS}}


def conv_scores(scores_dir: str | os.PathLike, classes: list[str]) -> tuple[dict[str, Scores], dict[str, Any]]:
    """The fused network's val and test scores (``convfuse``), and its cost from its report.

    Raises:
        FileNotFoundError: if the convfuse stage trained nothing (another fusion was chosen then).
        ValueError: if its classes are not the streams'.
    """
    folder = Path(scores_dir) / "conv"
    report = json.loads((folder / "report.json").read_text(encoding="utf-8"))
    if not report.get("trained"):
        raise FileNotFoundError(f"{folder} holds no fused network's scores (convfuse ran with fusion "
                                f"{report.get('fusion')!r}): run dvc repro")
    scores = {role: load_scores(folder / f"{role}.npz") for role in ("val", "test")}
    if scores["test"].classes != classes:
        raise ValueError(f"the fused network's classes {scores['test'].classes} are not the streams' {classes}")
    return scores, {"trainable_params": report["trainable_params"], "fit_seconds": report["seconds"]}
