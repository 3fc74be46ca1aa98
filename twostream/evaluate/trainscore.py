"""A stream trained, then scored: what the stages ``train`` and ``score`` do one after the other,
in one call, for the tests and the benchmarks. Apart from ``evaluation`` so that the score stage
imports no training code: an edit of the training loop re-runs the trainings, whose models come
out byte-identical, and no scoring."""

from __future__ import annotations

import os
import time
from typing import Any, Callable

import numpy as np

from twostream.evaluate.evaluation import score_model
from twostream.learn.engine import RunSpec, train_model
from twostream.runtime.config import ViewsConfig


def train_stream(spec: RunSpec, shard_dir: str | os.PathLike, model_path: str | os.PathLike,
                 metrics_path: str | os.PathLike, scores_dir: str | os.PathLike, live_dir: str | os.PathLike,
                 on_epoch: Callable[[dict[str, Any]], None] | None = None,
                 views: ViewsConfig = ViewsConfig(0, 1)) -> dict[str, Any]:
    """``train_model``, then ``score_model`` of its checkpoint: what the stages ``train`` and
    ``score`` do one after the other (default views: every clip, the centre crop).

    Returns:
        The metrics written, plus ``seconds`` (all runs of a resumed one) and ``samples_per_s``
        (median over epochs), which stay out of the file (on every rank).
    """
    checkpoint = train_model(spec, shard_dir, model_path, live_dir, on_epoch)
    begin = time.perf_counter()
    metrics = score_model(checkpoint, shard_dir, views, metrics_path, scores_dir, spec.train.workers)
    history = checkpoint["history"]
    seconds = sum(h["seconds"] for h in history) + time.perf_counter() - begin
    return {**metrics, "seconds": round(seconds, 1),
            "samples_per_s": round(float(np.median([h["samples_per_s"] for h in history])), 1)}
