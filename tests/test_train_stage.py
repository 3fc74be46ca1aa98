"""The train and score stages end to end on tiny shards: one process, torchrun DDP, their dvc.yaml blocks."""

from __future__ import annotations

import json
import runpy
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
import yaml

from conftest import REPO, free_port, run, set_params, venv_env
from test_engine import CLASSES, write_tiny_shards
from twostream.runtime.config import ParamsError
from twostream.learn.dataset import ShardDataset
from twostream.learn.engine import STOP_ENV
from twostream.learn.metrics import HEADLINE, evaluate, load_scores
from twostream.learn.scoring import Dist, load_checkpoint, model_from_checkpoint, predict
TINY = {"model": {"hidden": 32}, "spatial": {"epochs": 1}, "temporal": {"input": "flow", "epochs": 2},
        "train": {"batch_size": 8, "crop": 12, "workers": 0, "threads": 1, "warmup_epochs": 0.5}}


@pytest.fixture(scope="module")
def workdir(tmp_path_factory) -> Path:
    """A folder with the repo's params.yaml (tiny overrides) and tiny shards in data/shards."""
    root = tmp_path_factory.mktemp("stage")
    set_params(root, REPO / "params.yaml", **TINY)
    write_tiny_shards(root / "data" / "shards")
    return root


def stage_args(stream: str) -> list[str]:
    return [str(REPO / "stages" / "train.py"), stream, "data/shards", f"models/{stream}.pt", f"dvclive/{stream}"]


def score_args(stream: str) -> list[str]:
    return [str(REPO / "stages" / "score.py"), stream, f"models/{stream}.pt", "data/shards",
            f"metrics/{stream}.json", f"data/scores/{stream}"]


def single_process_eval(root: Path, stream: str) -> tuple[np.ndarray, dict]:
    """Scores and metrics of the stream's checkpoint on test, computed here in one process."""
    checkpoint = load_checkpoint(root / "models" / f"{stream}.pt")
    data = ShardDataset(root / "data" / "shards", checkpoint["modality"], "test", False, checkpoint["crop"],
                        checkpoint["flow_scale"])
    batch = checkpoint["params"]["train"]["batch_size"]
    probs, _ = predict(model_from_checkpoint(checkpoint), data, batch, 0, Dist(0, 1, torch.device("cpu")))
    return probs, evaluate(probs, data.labels, data.videos, data.classes)


def test_stage_writes_metrics_scores_and_curves(workdir):
    proc = run([sys.executable, *stage_args("temporal")], workdir)
    lines = [line for line in proc.stdout.splitlines() if line.startswith("train@temporal epoch")]
    assert len(lines) == 2 and lines[0].startswith("train@temporal epoch 1/2: ") and "val clip" in lines[0]
    assert not (workdir / "metrics").exists()  # scoring is the score stage's
    proc = run([sys.executable, *score_args("temporal")], workdir)
    assert "score@temporal (flow, every clips x 1 crops): test video top-1" in proc.stdout
    metrics = json.loads((workdir / "metrics" / "temporal.json").read_text())
    assert sorted(metrics) == sorted([*HEADLINE, "val_video_top1", "train_steps"]) and metrics["n_videos"] == 6
    assert metrics["train_steps"] == 2 * (24 // 8)  # 2 epochs of 24 train clips in batches of 8
    report = json.loads((workdir / "data" / "scores" / "temporal" / "report.json").read_text())
    assert report["modality"] == "flow" and set(report["test"]["per_class"]) == set(CLASSES)
    assert report["val"]["video_top1"] == metrics["val_video_top1"]
    for role, first in (("val", 12), ("test", 18)):
        scores = load_scores(workdir / "data" / "scores" / "temporal" / f"{role}.npz")
        assert scores.probs.shape == (12, 3) and scores.videos[0] == first and scores.classes == CLASSES
    _, again = single_process_eval(workdir, "temporal")
    assert {k: again[k] for k in HEADLINE} == {k: metrics[k] for k in HEADLINE}
    curves = workdir / "dvclive" / "temporal" / "plots" / "metrics"
    assert sorted(str(p.relative_to(curves)) for p in curves.rglob("*.tsv")) == [
        "lr.tsv", "time/epoch_s.tsv", "time/samples_per_s.tsv", "train/loss.tsv", "val/clip_top1.tsv",
        "val/loss.tsv", "val/video_top1.tsv"]
    assert len((curves / "val" / "video_top1.tsv").read_text().splitlines()) == 1 + 2
    assert not (workdir / "dvclive" / "temporal" / "dvc.yaml").exists()
    assert sorted(p.name for p in (workdir / "models").iterdir()) == ["temporal.pt"]  # resume file removed


def test_spatial_stream_reads_rgb(workdir):
    run([sys.executable, *stage_args("spatial")], workdir)
    run([sys.executable, *score_args("spatial")], workdir)
    checkpoint = load_checkpoint(workdir / "models" / "spatial.pt")
    assert (checkpoint["modality"], checkpoint["in_channels"], checkpoint["epoch"]) == ("rgb", 3, 1)
    assert checkpoint["flow_scale"] is None
    assert json.loads((workdir / "data" / "scores" / "spatial" / "report.json").read_text())["modality"] == "rgb"


def test_torchrun_ddp_resumes_and_evaluation_equals_single_process(workdir, tmp_path):
    (tmp_path / "params.yaml").write_text((workdir / "params.yaml").read_text())
    (tmp_path / "data").symlink_to(workdir / "data")
    ddp = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "2",
           *stage_args("temporal")]
    # killed after epoch 1: rank 0 wrote the resume file, not the model
    stopped = subprocess.run(ddp, cwd=tmp_path, env={**venv_env(), STOP_ENV: "1"}, capture_output=True,
                             text=True)
    assert stopped.returncode != 0 and "stopped after epoch 1" in stopped.stdout + stopped.stderr
    assert sorted(p.name for p in (tmp_path / "models").iterdir()) == ["temporal.resume.pt"]
    assert load_checkpoint(tmp_path / "models" / "temporal.resume.pt")["epoch"] == 1
    proc = run(ddp, tmp_path)
    epochs = [line.split(":")[0] for line in proc.stdout.splitlines() if line.startswith("train@temporal epoch")]
    assert epochs == ["train@temporal epoch 2/2"]  # epoch 1 came from the resume file
    run([sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "2",
         *score_args("temporal")], tmp_path)
    assert sorted(p.name for p in (tmp_path / "models").iterdir()) == ["temporal.pt"]
    checkpoint = load_checkpoint(tmp_path / "models" / "temporal.pt")
    assert checkpoint["epoch"] == 2 and len(checkpoint["history"]) == 2
    metrics = json.loads((tmp_path / "metrics" / "temporal.json").read_text())
    probs, single = single_process_eval(tmp_path, "temporal")
    assert {k: single[k] for k in HEADLINE} == {k: metrics[k] for k in HEADLINE}
    gathered = load_scores(tmp_path / "data" / "scores" / "temporal" / "test.npz")
    # two ranks score other batches than one process: another code path, so a tolerance
    np.testing.assert_allclose(gathered.probs, probs, atol=1e-5)
    np.testing.assert_array_equal(gathered.videos, np.repeat(np.arange(18, 24), 2))


def test_bad_stream_and_input_are_named(workdir):
    run_spec = runpy.run_path(str(REPO / "stages" / "train.py"), run_name="stage")["run_spec"]
    params = yaml.safe_load((workdir / "params.yaml").read_text())
    with pytest.raises(SystemExit, match="stream must be one of spatial, temporal; got 'motion'"):
        run_spec("motion", params)
    params["temporal"]["input"] = "rgb"
    with pytest.raises(ParamsError, match="temporal.input must be one of flow, sg3i; got 'rgb'"):
        run_spec("temporal", params)
    assert run_spec("spatial", params).modality == "rgb"


def test_dvc_yaml_train_block_lists_what_the_stage_reads():
    stage = yaml.safe_load((REPO / "dvc.yaml").read_text())["stages"]["train"]
    assert stage["foreach"] == {"spatial": {"modality": "rgb"}, "temporal": {"modality": "${temporal.input}"}}
    do = stage["do"]
    assert do["cmd"] == "python stages/train.py ${key} data/shards models/${key}.pt dvclive/${key}"
    assert do["params"][:2] == ["base.seed", "model"] and do["params"][-1] == "${key}"
    assert "train.workers" not in do["params"] and "train.threads" not in do["params"]  # execution only
    assert "data/shards/${item.modality}" in do["deps"] and "data/shards" not in do["deps"]
    imported = subprocess.run(
        [sys.executable, "-c", "import runpy, sys; runpy.run_path('stages/train.py', run_name='x'); "
         "print('\\n'.join(m for m in sys.modules if m.startswith('twostream.')))"],
        cwd=REPO, capture_output=True, text=True, check=True).stdout.split()
    files = {m.replace(".", "/") + ("/__init__.py" if (REPO / m.replace(".", "/")).is_dir() else ".py")
             for m in imported}
    assert files | {"stages/train.py"} <= set(do["deps"])
    # no persist output, so DVC keeps the stage's run-cache; the resume file is no output
    assert do["outs"] == ["models/${key}.pt"]
    # the curves are cached too: DVC keeps no run-cache for a stage with an uncached directory
    assert do["plots"] == [{"dvclive/${key}/plots/metrics": {"x": "step"}}]
    for key in ("train.sampling", "train.segments", "train.augment", "train.partial_bn"):
        assert key in do["params"]
    assert "views" not in do["params"]  # test-time views are the score stage's: they re-run no training
    score = yaml.safe_load((REPO / "dvc.yaml").read_text())["stages"]["score"]
    assert score["foreach"] == stage["foreach"]
    assert score["do"]["cmd"] == ("python stages/score.py ${key} models/${key}.pt data/shards metrics/${key}.json "
                                  "data/scores/${key}")
    assert score["do"]["params"] == ["views"]
    assert {"models/${key}.pt", "data/shards/${item.modality}", "data/frames"} <= set(score["do"]["deps"])
    assert score["do"]["outs"] == ["data/scores/${key}"]
    assert score["do"]["metrics"] == [{"metrics/${key}.json": {"cache": False}}]


def test_segments_multiscale_partial_bn_and_ten_crop_views(workdir, tmp_path):
    """TSN's recipe through both stages: a sample is a video of K snippets (the batch counts
    videos), multiscale windows, partial BatchNorm; then one snippet x 10 crops per video."""
    set_params(tmp_path, workdir / "params.yaml", train={"sampling": "segments", "segments": 2, "batch_size": 4,
                                                       "augment": "multiscale", "partial_bn": True},
               views={"snippets": 1, "crops": 10})
    (tmp_path / "data").symlink_to(workdir / "data")
    run([sys.executable, *stage_args("temporal")], tmp_path)
    checkpoint = load_checkpoint(tmp_path / "models" / "temporal.pt")
    assert checkpoint["steps_per_epoch"] == 12 // 4  # 12 train videos (2 clips each) in batches of 4 videos
    run([sys.executable, *score_args("temporal")], tmp_path)
    metrics = json.loads((tmp_path / "metrics" / "temporal.json").read_text())
    assert metrics["train_steps"] == 2 * 3 and metrics["n_videos"] == 6
    scores = load_scores(tmp_path / "data" / "scores" / "temporal" / "test.npz")
    # one snippet per video: its middle clip of 2 (clip 1), the mean softmax of its 10 crops
    np.testing.assert_array_equal(scores.videos, np.arange(18, 24))
    np.testing.assert_array_equal(scores.clips, np.ones(6))
    np.testing.assert_allclose(scores.probs.sum(axis=1), 1.0, atol=1e-5)
    report = json.loads((tmp_path / "data" / "scores" / "temporal" / "report.json").read_text())
    assert report["views"] == {"snippets": 1, "crops": 10}


def test_two_nodes_with_their_own_disks_resume_as_rank_0_decides(workdir, tmp_path):
    """docs/cluster.md's multi-node command, two "nodes" on this machine, each with its own working folder:
    only node 0's disk holds the resume file, and both ranks resume from it without node 1 reading it."""
    nodes = [tmp_path / "node0", tmp_path / "node1"]
    for node in nodes:
        node.mkdir()
        (node / "params.yaml").write_text((workdir / "params.yaml").read_text())
        (node / "data").symlink_to(workdir / "data")  # the shards: the same files on every node
    port = free_port()

    def both(env: dict) -> list[tuple[int, str]]:
        procs = []
        for rank, node in enumerate(nodes):
            cmd = [sys.executable, "-m", "torch.distributed.run", "--nnodes", "2", "--nproc-per-node", "1",
                   "--rdzv-backend", "static", "--rdzv-endpoint", f"127.0.0.1:{port}", "--node-rank", str(rank),
                   *stage_args("temporal")]
            with open(tmp_path / f"log{rank}", "w") as log:
                procs.append(subprocess.Popen(cmd, cwd=node, env=env, stdout=log, stderr=subprocess.STDOUT))
        return [(p.wait(300), (tmp_path / f"log{rank}").read_text()) for rank, p in enumerate(procs)]

    stopped = both({**venv_env(), STOP_ENV: "1"})  # killed after epoch 1
    assert all(code != 0 for code, _ in stopped) and "stopped after epoch 1" in stopped[0][1]
    assert sorted(p.name for p in (nodes[0] / "models").iterdir()) == ["temporal.resume.pt"]
    assert not (nodes[1] / "models").exists() or not any((nodes[1] / "models").iterdir())
    (code0, out0), (code1, out1) = both(venv_env())
    assert (code0, code1) == (0, 0), out0[-2000:] + out1[-2000:]
    epochs = [line.split(":")[0] for line in out0.splitlines() if line.startswith("train@temporal epoch")]
    assert epochs == ["train@temporal epoch 2/2"]  # epoch 1 came from node 0's resume file
    assert sorted(p.name for p in (nodes[0] / "models").iterdir()) == ["temporal.pt"]
    assert load_checkpoint(nodes[0] / "models" / "temporal.pt")["epoch"] == 2
