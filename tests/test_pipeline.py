"""End to end: `dvc repro` of the pipeline in a temporary copy of the repo, with tiny params."""

from __future__ import annotations

import json
import re
import shutil

import pytest
import yaml

from conftest import run, set_params
from twostream.runtime.config import DemoConfig
from twostream.ingest.demoset import expected_roles
from twostream.runtime.presets import apply, load_presets
from twostream.learn.scoring import load_checkpoint
from twostream.ingest.video import decode_video
from twostream.ingest.videowriter import write_video

TINY = dict(
    demo_data=dict(classes=8, videos_per_class=5, seconds=1.5, width=64, height=48, workers=2),
    frames=dict(width=32, height=32, workers=2),
    flow=dict(epsilon=0.1),
    train=dict(crop=28, batch_size=16, workers=0),
    spatial=dict(epochs=1),
    temporal=dict(epochs=1),
)
# outputs whose bytes must not change when the stages run again (reports with
# timings and training outputs are checked elsewhere)
HEADLINE = ("video_top1", "video_top5", "clip_top1", "mean_class_acc", "n_videos", "videos_scored",
            "val_video_top1")
DATA_OUTS = ("data/demo", "data/index.json", "data/index_report.json", "data/frames",
             "data/frames_report.json", "data/resample.json", "plots/contact_sheet.png",
             "data/flow", "data/flow_report.json", "data/sg3i", "data/shards", "plots/previews")


def lock_md5s(repo) -> dict[str, str]:
    """Output path -> md5 recorded in dvc.lock."""
    lock = yaml.safe_load((repo / "dvc.lock").read_text())
    return {o["path"]: o["md5"] for st in lock["stages"].values() for o in st.get("outs", [])
            if o["path"] in DATA_OUTS}


@pytest.mark.slow
def test_repro_tiny_pipeline(repo_copy, monkeypatch, tmp_path):
    for who in ("AUTHOR", "COMMITTER"):  # `dvc exp run` commits; CI machines may have no git identity
        monkeypatch.setenv(f"GIT_{who}_NAME", "t")
        monkeypatch.setenv(f"GIT_{who}_EMAIL", "t@t")
    set_params(repo_copy, **TINY)
    run(["dvc", "repro"], repo_copy)

    index = json.loads((repo_copy / "data/index.json").read_text())
    assert len(index) == 8 * 5
    assert {e["role"] for e in index} <= {"train", "val", "test", "unused"}
    assert sorted({e["label"] for e in index}) == list(range(8))

    frames_report = json.loads((repo_copy / "data/frames_report.json").read_text())
    resample = json.loads((repo_copy / "data/resample.json").read_text())
    decoded = [i for i, e in enumerate(index) if e["role"] != "unused"]
    assert len(resample["videos"]) + len(resample["too_short"]) == len(decoded)
    assert frames_report["failed"] == []
    # 1.5 s at 30 fps resampled to 6 fps keeps frames 0, 5, ..., 40
    first = resample["videos"][str(decoded[0])]
    assert first == list(range(0, 45, 5))
    assert (repo_copy / "plots/contact_sheet.png").stat().st_size > 0

    shards = json.loads((repo_copy / "data/shards/summary.json").read_text())
    assert set(shards["samples"]) == {"rgb", "sg3i", "flow"}
    n_test = sum(e["role"] == "test" for e in index)
    for stream in ("spatial", "temporal"):
        metrics = json.loads((repo_copy / f"metrics/{stream}.json").read_text())
        assert sorted(metrics) == sorted([*HEADLINE, "train_steps"])  # headline figures only
        for key in ("video_top1", "video_top5", "clip_top1", "mean_class_acc", "val_video_top1"):
            assert 0.0 <= metrics[key] <= 1.0
        assert metrics["n_videos"] == n_test  # every test video of the index counts
        report = json.loads((repo_copy / f"data/scores/{stream}/report.json").read_text())
        assert len(report["test"]["per_class"]) == 8
        assert metrics["videos_scored"] + len(report["missing"]["test"]) == n_test
    fusion = json.loads((repo_copy / "metrics/fusion.json").read_text())
    assert fusion["method"] == "average" and fusion["n_videos"] == n_test
    assert sorted(fusion) == sorted([*HEADLINE, "method"]) and 0.0 <= fusion["video_top1"] <= 1.0

    # nothing changed: nothing re-runs
    status = run(["dvc", "status", "--json"], repo_copy)
    assert json.loads(status.stdout) == {}
    check_sharing(repo_copy, tmp_path)
    check_code_edits(repo_copy, len(decoded))
    check_decisive_param(repo_copy, len(decoded))
    check_reencoded_video(repo_copy, repo_copy / decoded_path(index), tmp_path)
    # execution-only keys (processes, threads, the executor) are no cache key: still nothing to re-run
    set_params(repo_copy, demo_data=dict(workers=1), frames=dict(workers=1), flow=dict(workers=1, threads=2),
               train=dict(workers=1, threads=1), executor=dict(kind="ray", videos_per_task=3))
    status = run(["dvc", "status", "--json"], repo_copy)
    assert json.loads(status.stdout) == {}

    # byte-identical outputs when every stage runs again, with those other worker and thread counts,
    # and every frames and flow part computed anew, as tasks on a Ray instance the stages start here
    before = lock_md5s(repo_copy)
    for store in ("frames", "flow"):
        shutil.rmtree(repo_copy / "data" / store / "parts")
    repro = run(["dvc", "repro", "--force"], repo_copy)
    summary = {line.split(":")[0]: line for line in repro.stdout.splitlines()
               if line.startswith(("frames: ", "flow: "))}
    assert f"({len(decoded)} decoded now, 0 kept" in summary["frames"], summary
    assert "videos computed now, 0 kept" in summary["flow"] and "ray workers x 2 threads" in summary["flow"], summary
    assert sorted(before) == sorted(DATA_OUTS)
    assert lock_md5s(repo_copy) == before
    set_params(repo_copy, executor=dict(kind="local", videos_per_task=1))

    check_fusion_experiment(repo_copy)
    check_conv_fusion(repo_copy)
    check_run_cache(repo_copy)
    check_presets(repo_copy)


def ran_stages(out: str) -> set[str]:
    """The stages a ``dvc repro`` ran, by name (``train@spatial`` counts as ``train``)."""
    return {name.split("@")[0] for name in re.findall(r"Running stage '([^']+)'", out)}


def stage_lines(out: str) -> dict[str, str]:
    """The summary line each data stage printed, by stage."""
    return {line.split(":")[0]: line for line in out.splitlines() if line.startswith(("frames: ", "flow: "))}


def check_sharing(repo, scratch) -> None:
    """docs/sharing.md: push the outputs to a remote; a fresh clone pulls them, is up to date and
    reproduces nothing; another clone's `dvc pull flow` brings the flow store alone."""
    git = ["git", "-c", "user.name=t", "-c", "user.email=t@t"]
    run(["dvc", "remote", "add", "-d", "shared", str(scratch / "remote")], repo)
    run(git + ["add", "-A"], repo)
    run(git + ["commit", "-qm", "tiny pipeline and its remote"], repo)
    pushed = run(["dvc", "push", "--run-cache"], repo)
    assert "pushed" in pushed.stdout, pushed.stdout
    clone = scratch / "clone"
    run(["git", "clone", "-q", str(repo), str(clone)], scratch)
    run(["dvc", "pull"], clone)
    assert json.loads(run(["dvc", "status", "--json"], clone).stdout) == {}
    again = run(["dvc", "repro"], clone).stdout
    assert "Running stage" not in again and "didn't change, skipping" in again, again
    for out in ("data/index.json", "data/shards/summary.json", "models/temporal.pt", "metrics/fusion.json"):
        assert (clone / out).read_bytes() == (repo / out).read_bytes(), out
    only = scratch / "only-flow"
    run(["git", "clone", "-q", str(repo), str(only)], scratch)
    run(["dvc", "pull", "flow"], only)
    assert (only / "data/flow/meta.json").is_file() and (only / "data/flow_report.json").is_file()
    assert not (only / "data/frames").exists() and not (only / "data/shards").exists()


def check_code_edits(repo, decoded: int) -> None:
    """A code change costs what it changes (DESIGN.md, "What decides an output"): a comment appended
    to the twostream modules of each group (the modules that the same stages list) re-runs exactly
    those stages. The frames and flow stages among them find every part done (stamps hold versions,
    not source), every data stage writes the same bytes, a retrain on CPU writes the same model, so
    no stage after them runs: `score` is skipped after a retrain."""
    stages = yaml.safe_load((repo / "dvc.yaml").read_text())["stages"]
    listed_by: dict[str, set[str]] = {}
    for name, stage in stages.items():
        for dep in (stage["do"] if "foreach" in stage else stage)["deps"]:
            if dep.startswith("twostream/"):
                listed_by.setdefault(dep, set()).add(name)
    groups: dict[frozenset, list[str]] = {}
    for module, names in listed_by.items():
        groups.setdefault(frozenset(names), []).append(module)
    for names, modules in sorted(groups.items(), key=lambda item: sorted(item[1])):
        for module in modules:
            with open(repo / module, "a", encoding="utf-8") as f:
                f.write("\n# a comment: no output may change\n")
        out = run(["dvc", "repro"], repo).stdout
        assert ran_stages(out) == set(names), (modules, sorted(ran_stages(out)), sorted(names))
        lines = stage_lines(out)
        if "frames" in names:
            assert f"(0 decoded now, {decoded} kept" in lines["frames"], (modules, lines)
        if "flow" in names:
            assert "(0 videos computed now," in lines["flow"], (modules, lines)
    assert json.loads(run(["dvc", "status", "--json"], repo).stdout) == {}


def check_decisive_param(repo, decoded: int) -> None:
    """A param that decides a part's bytes (``frames.quality``) recomputes every part; going back
    recomputes them again, byte-identical to the first ones, and the trainings come from the run-cache."""
    before = lock_md5s(repo)
    set_params(repo, frames=dict(quality=90))
    lines = stage_lines(run(["dvc", "repro"], repo).stdout)
    assert f"({decoded} decoded now, 0 kept" in lines["frames"] and "0 kept from an earlier run" in lines["flow"]
    assert lock_md5s(repo)["data/frames"] != before["data/frames"]
    set_params(repo, frames=dict(quality=95))
    out = run(["dvc", "repro"], repo).stdout
    assert f"({decoded} decoded now, 0 kept" in stage_lines(out)["frames"]
    assert "train" not in ran_stages(out) and lock_md5s(repo) == before


def decoded_path(index: list[dict]) -> str:
    """Path (from the repo root) of the first video of the index that the frames stage decodes."""
    return next(e["path"] for e in index if e["role"] != "unused")


def check_reencoded_video(repo, video, scratch) -> None:
    """The same video name with other bytes makes `frames` (not only `index`) out of date; the
    original bytes make everything up to date again."""
    original = video.read_bytes()
    decoded = decode_video(video, TINY["demo_data"]["width"], TINY["demo_data"]["height"])
    frames = decoded.frames.copy()
    frames[0, 0, 0] = 255 - frames[0, 0, 0]
    write_video(scratch / video.name, frames, decoded.fps, codec="xvid")
    # a new file, never written into the old one: with link cache types it could be DVC's cache
    video.unlink()
    video.write_bytes((scratch / video.name).read_bytes())
    assert video.read_bytes() != original
    status = json.loads(run(["dvc", "status", "--json"], repo).stdout)
    assert {"changed deps": {"data/demo": "modified"}} in status["frames"], status
    video.unlink()
    video.write_bytes(original)
    assert json.loads(run(["dvc", "status", "--json"], repo).stdout) == {}


def check_run_cache(repo) -> None:
    """flow -> sg3i -> flow trains the temporal stream twice: the second flow run is restored from
    DVC's run-cache (no persist output), with the metrics of the first."""
    flow_metrics = (repo / "metrics/temporal.json").read_text()
    set_params(repo, temporal=dict(input="sg3i"))
    sg3i = run(["dvc", "repro"], repo)
    assert re.findall(r"Running stage '([^']+)'", sg3i.stdout).count("train@temporal") == 1, sg3i.stdout
    assert not (repo / "models/temporal.resume.pt").exists()  # removed once the model is written
    set_params(repo, temporal=dict(input="flow"))
    back = run(["dvc", "repro"], repo)
    assert "Running stage 'train@temporal'" not in back.stdout, back.stdout
    assert "Stage 'train@temporal' is cached - skipping run, checking out outputs" in back.stdout
    assert json.loads(run(["dvc", "status", "--json"], repo).stdout) == {}
    assert (repo / "metrics/temporal.json").read_text() == flow_metrics


def exp_methods(rows: list[dict]) -> list[str]:
    """The fusion ``method`` of every row of ``dvc exp show --json``, experiments included."""
    found = []
    for row in rows:
        metrics = (row.get("data") or {}).get("metrics", {})
        found.append(metrics.get("metrics/fusion.json", {}).get("data", {}).get("method"))
        for exp in row.get("experiments") or []:
            found += exp_methods(exp["revs"])
    return found


def check_fusion_experiment(repo) -> None:
    """Commit the repro, run the experiment `fusion=network`: only `fuse` runs, and `dvc metrics diff`
    and `dvc exp show` list the fusion metrics of both methods."""
    git = ["git", "-c", "user.name=t", "-c", "user.email=t@t"]
    run(git + ["add", "-A"], repo)
    run(git + ["commit", "-qm", "repro"], repo)
    exp = run(["dvc", "exp", "run", "-S", "fusion=network"], repo)
    ran = re.findall(r"Running stage '([^']+)'", exp.stdout)
    assert ran == ["fuse"], exp.stdout
    diff = json.loads(run(["dvc", "metrics", "diff", "--all", "--json"], repo).stdout)["metrics/fusion.json"]
    assert diff["method"]["old"] == "average" and diff["method"]["new"] == "network"
    assert {"video_top1", "video_top5", "clip_top1", "mean_class_acc"} <= set(diff)
    shown = json.loads(run(["dvc", "exp", "show", "--json"], repo).stdout)
    assert exp_methods(shown) == ["network", "average", "network"]  # workspace, HEAD, the experiment
    table = run(["dvc", "exp", "show", "--md", "--only-changed"], repo).stdout.splitlines()
    header = [cell.strip() for cell in table[0].strip().strip("|").split("|")]
    # headline-only metrics files keep the table readable: the param and the fusion figures that changed
    # (which fusion figures differ between two methods depends on the tiny run, so any of them)
    assert len(header) <= 15 and "fusion" in header and any(h.startswith("metrics/fusion.json:") for h in header), \
        table[0]
    plots = json.loads(run(["dvc", "plots", "show", "--json"], repo).stdout)["data"]
    assert {"plots/fusion/confusion.csv", "plots/fusion/per_class.csv"} <= set(plots)
    # predict with the experiment's models, on a video of the demo set
    video = sorted((repo / "data" / "demo" / "videos").glob("*/*.avi"))[0]
    doc = json.loads(run(["python", "-m", "twostream", "predict", str(video), "--json", "--top", "3"], repo).stdout)
    assert doc["method"] == "network" and len(doc["top"]) == 3


def check_conv_fusion(repo) -> None:
    """`dvc exp run -S fusion=conv` trains the fused network in `fuse`, never a stream again; the
    metrics keep their keys; predict runs the fused network; going back to the earlier method
    restores `fuse` from DVC's run-cache."""
    exp = run(["dvc", "exp", "run", "-S", "fusion=conv", "-S", "fuse.layer=layer3", "-S", "fuse.epochs=1"], repo)
    assert re.findall(r"Running stage '([^']+)'", exp.stdout) == ["fuse"], exp.stdout
    assert "fuse (conv: conv at layer3, time none)" in exp.stdout
    fusion = json.loads((repo / "metrics/fusion.json").read_text())
    assert fusion["method"] == "conv" and sorted(fusion) == sorted([*HEADLINE, "method"])
    cost = json.loads((repo / "metrics/fusion_cost.json").read_text())
    assert cost["method"] == "conv" and cost["trainable_params"] > 0
    video = sorted((repo / "data" / "demo" / "videos").glob("*/*.avi"))[0]
    doc = json.loads(run(["python", "-m", "twostream", "predict", str(video), "--json", "--top", "3"], repo).stdout)
    assert doc["method"] == "conv" and len(doc["top"]) == 3
    back = run(["dvc", "exp", "run", "-S", "fusion=network", "-S", "fuse.layer=layer4", "-S", "fuse.epochs=3"], repo)
    assert "Running stage" not in back.stdout and "Stage 'fuse' is cached - skipping run" in back.stdout, back.stdout
    assert json.loads((repo / "metrics/fusion.json").read_text())["method"] == "network"


# what makes a preset tiny: the demo's size, ResNet-18 from scratch (no download), one epoch
TINY_PRESET = {"frames.width": 32, "frames.height": 32, "train.crop": 28, "train.batch_size": 8,
               "model.backbone": "resnet18", "model.pretrained": "none", "spatial.epochs": 1,
               "temporal.epochs": 1, "flow.epsilon": 0.1, "train.workers": 0, "fuse.epochs": 1}


def check_presets(repo) -> None:
    """Every preset of presets.yaml runs end to end at tiny size (`dvc repro` of its params with
    TINY_PRESET on top), and its recipe shows in what the stages wrote."""
    base = yaml.safe_load((repo / "params.yaml").read_text())
    index = json.loads((repo / "data/index.json").read_text())
    n_test = sum(e["role"] == "test" for e in index)
    for name, preset in load_presets(repo / "presets.yaml").items():
        params = apply(apply(base, preset), {"set": TINY_PRESET})
        (repo / "params.yaml").write_text(yaml.safe_dump(params, sort_keys=False))
        run(["dvc", "repro"], repo)
        train, views = params["train"], params["views"]
        for stream in ("spatial", "temporal"):
            metrics = json.loads((repo / f"metrics/{stream}.json").read_text())
            assert metrics["n_videos"] == n_test, (name, stream, metrics)
            checkpoint = load_checkpoint(repo / f"models/{stream}.pt")
            assert checkpoint["params"]["train"]["sampling"] == train["sampling"], name
            assert metrics["train_steps"] == checkpoint["steps_per_epoch"] > 0, (name, metrics)
            report = json.loads((repo / f"data/scores/{stream}/report.json").read_text())
            assert report["views"] == views, name
        temporal = load_checkpoint(repo / "models/temporal.pt")
        if temporal["modality"] == "flow":  # a stack of L fields is 2L channels
            assert temporal["in_channels"] == 2 * params["flow"]["stack"], name
        resample = json.loads((repo / "data/resample.json").read_text())
        first = next(iter(resample["videos"].values()))
        step = 1 if params["resample"]["fps"] == 0 else 5  # the demo is 30 fps
        assert first[:3] == [0, step, 2 * step], name
        fusion = json.loads((repo / "metrics/fusion.json").read_text())
        assert fusion["method"] == params["fusion"] and fusion["n_videos"] == n_test, name
    (repo / "params.yaml").write_text(yaml.safe_dump(base, sort_keys=False))


@pytest.mark.slow
@pytest.mark.parametrize("layout", ["ucf101", "folders", "list"])
def test_each_dataset_format_runs_the_tiny_pipeline(repo_copy, layout):
    """The demo written as UCF101, as class folders and as video lists goes through every stage
    (``data.format: auto``); the index gives each video the class, label and role demo_data wrote,
    and every test video is counted in the metrics."""
    set_params(repo_copy, **{**TINY, "demo_data": {**TINY["demo_data"], "layout": layout}})
    out = run(["dvc", "repro"], repo_copy).stdout
    assert f"index: {layout} (" in out, out
    params = yaml.safe_load((repo_copy / "params.yaml").read_text())
    expected = expected_roles(DemoConfig(**params["demo_data"]), params["base"]["seed"])
    index = json.loads((repo_copy / "data/index.json").read_text())
    got = {r["path"].removeprefix("data/demo/"): r for r in index}
    assert sorted(got) == sorted(expected)
    for path, want in expected.items():
        role = "train" if got[path]["role"] == "val" else got[path]["role"]
        assert (got[path]["class"], got[path]["label"], role) == (want["class"], want["label"], want["role"]), path
    assert {r["role"] for r in index} >= {"train", "val", "test"}
    n_test = sum(r["role"] == "test" for r in index)
    for name in ("spatial", "temporal", "fusion"):
        metrics = json.loads((repo_copy / f"metrics/{name}.json").read_text())
        assert metrics["n_videos"] == metrics["videos_scored"] == n_test, (name, metrics)
