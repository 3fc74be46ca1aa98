"""Evaluation of a trained stream: val and test scored through the test-time views.

``score_model`` (stage ``score``) rebuilds the network from the stream's final checkpoint
(``scoring.model_from_checkpoint``), the code path ``predict`` takes for a new video, so the
stage's scores are the CLI's on any CPU. Each video is scored by ``views.snippets`` evenly
spaced clips (0 = every clip) through ``views.crops`` crops (``dataset.ViewDataset``), val
exactly as test, and the stage writes the scores files, the full report and the stream's
headline metrics. Under ``torchrun`` the ranks share the samples (``scoring.predict``) and
rank 0 writes the files.
"""

from __future__ import annotations

import os
from dataclasses import asdict
from pathlib import Path
from typing import Any


from twostream.runtime.config import ViewsConfig
from twostream.learn.dataset import ShardDataset, ViewDataset
from twostream.runtime.jsonio import write_json
from twostream.learn.metrics import Scores, headline, save_scores, write_metrics
from twostream.learn.scoring import EVAL_ROLES, Dist, eval_transform, init_distributed, model_from_checkpoint, predict

REPORT_NAME = "report.json"  # in the scores folder: the full evaluation of val and test


def score_roles(checkpoint: dict[str, Any], shard_dir: Path, views: ViewsConfig, dist: Dist,
                workers: int = 0) -> tuple[dict[str, Scores], dict[str, list[dict[str, Any]]]]:
    """Softmax scores of the ``val`` and ``test`` roles by the network of ``checkpoint``, rebuilt as
    ``predict`` rebuilds it (``scoring.model_from_checkpoint``), through the test-time ``views``:
    per video ``views.snippets`` evenly spaced clips (0 = every clip), each the mean softmax of
    its ``views.crops`` crops (``dataset.ViewDataset``). Val is scored as test is, so a fusion
    fitted on val sees what it is tested on.

    Returns:
        Per role its ``Scores`` (one row per scored clip), and per role the records of its
        videos without samples (``ShardDataset.missing``).
    """
    model, out, missing = model_from_checkpoint(checkpoint, dist.device), {}, {}
    batch = checkpoint["params"]["train"]["batch_size"]
    for role in EVAL_ROLES:
        base = ShardDataset(shard_dir, checkpoint["modality"], role, False, checkpoint["crop"],
                            checkpoint["flow_scale"])
        assert base.transform == eval_transform(checkpoint)  # the transform predict applies
        data = ViewDataset(base, views.snippets, views.crops)
        probs, _ = predict(model, data, batch, workers, dist)
        expected = data.expected or (None, None)
        out[role] = Scores(probs, data.labels, data.videos, data.clips, data.classes, *expected)
        missing[role] = data.missing
        data.close()
    return out, missing


def score_model(checkpoint: dict[str, Any], shard_dir: str | os.PathLike, views: ViewsConfig,
                metrics_path: str | os.PathLike, scores_dir: str | os.PathLike,
                workers: int = 0) -> dict[str, Any]:
    """Score val and test by a trained stream (``score_roles``) and evaluate them.

    Args:
        checkpoint: the stream's final checkpoint (``load_checkpoint`` of ``models/<stream>.pt``).
        shard_dir: ``data/shards``; views: the test-time views; workers: DataLoader workers.
        metrics_path: ``metrics/<stream>.json``: ``metrics.headline`` of test and val, and
            ``train_steps``, the optimiser steps the stream was trained for.
        scores_dir: ``data/scores/<stream>``: ``val.npz`` and ``test.npz`` (``save_scores``) and
            ``report.json`` (the full ``evaluate`` of both roles: per class, confusion, missing
            videos with the reasons the data stages gave).

    Returns:
        The metrics written (on every rank; rank 0 writes the files).
    """
    dist = init_distributed()
    scores, missing = score_roles(checkpoint, Path(shard_dir), views, dist, workers)
    results = {role: s.evaluate() for role, s in scores.items()}
    steps = checkpoint.get("steps_per_epoch", 0) * checkpoint["epoch"]
    metrics = {**headline(results["test"], results["val"]), "train_steps": steps}
    if dist.main:
        for role, s in scores.items():
            save_scores(Path(scores_dir) / f"{role}.npz", s)
        write_json(Path(scores_dir) / REPORT_NAME, {"stream": checkpoint["stream"], "modality": checkpoint["modality"],
                                                     "flow_scale": checkpoint["flow_scale"], "views": asdict(views),
                                                     **results, "missing": missing})
        write_metrics(metrics_path, metrics)
    return metrics
