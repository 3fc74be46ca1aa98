"""Tests of the synthetic HMDB-format demo dataset (twostream.ingest.demo, twostream.ingest.figure, stage demo_data)."""

from __future__ import annotations

import collections
import hashlib
import os
import re
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import yaml

from twostream.ingest import demo, demoset, figure
from twostream.runtime.config import DemoConfig
from twostream.ingest.video import ffmpeg_exe

REPO = Path(__file__).resolve().parents[1]
ODD_CHARS = "!()#[]&+;~@ "
LINE = re.compile(r"^(?P<name>[^/\n]+\.avi) (?P<tag>[012]) $")


def tiny(**changes) -> DemoConfig:
    """8 classes x 4 videos x 0.5 s at 64x48: 15 frames a video."""
    values = dict(classes=8, videos_per_class=4, seconds=0.5, width=64, height=48, fps=30,
                  train_fraction=0.6, test_fraction=0.3, layout="hmdb51", workers=1)
    values.update(changes)
    return DemoConfig(**values)


def hashes(root: Path) -> dict[str, str]:
    return {str(p.relative_to(root)): hashlib.sha256(p.read_bytes()).hexdigest()
            for p in sorted(root.rglob("*")) if p.is_file()}


@pytest.fixture(scope="module")
def rendered(tmp_path_factory) -> tuple[Path, dict]:
    out = tmp_path_factory.mktemp("demo") / "root"
    return out, demoset.render_dataset(out, tiny(), seed=7, progress=False)


def test_layout_and_summary(rendered):
    out, summary = rendered
    classes = list(figure.CLASSES[:8])
    assert summary["classes"] == classes
    assert (summary["videos"], summary["videos_per_class"], summary["frames_per_video"]) == (32, 4, 15)
    assert sorted(p.name for p in out.iterdir()) == ["splits", "videos"]
    assert sorted(p.name for p in (out / "videos").iterdir()) == sorted(classes)
    for cls in classes:
        assert len(list((out / "videos" / cls).glob("*.avi"))) == 4
    expected = sorted(f"{cls}_test_split{s}.txt" for cls in classes for s in (1, 2, 3))
    assert sorted(p.name for p in (out / "splits").iterdir()) == expected


def read_split(path: Path) -> dict[str, int]:
    raw = path.read_bytes()
    assert raw.endswith(b" \n") and b"\r" not in raw
    lines = raw.decode("utf-8").split("\n")
    assert lines[-1] == ""
    matches = [LINE.match(line) for line in lines[:-1]]
    assert all(matches), lines
    return {m["name"]: int(m["tag"]) for m in matches}


def test_split_files_list_every_video_with_the_official_format(rendered):
    out, _ = rendered
    for cls in figure.CLASSES[:8]:
        names = {p.name for p in (out / "videos" / cls).glob("*.avi")}
        for split in (1, 2, 3):
            tags = read_split(out / "splits" / f"{cls}_test_split{split}.txt")
            assert set(tags) == names
            # 0.6 * 4 -> 2 train, 0.3 * 4 -> 1 test, 1 unused
            assert collections.Counter(tags.values()) == {1: 2, 2: 1, 0: 1}


def test_the_three_splits_differ_in_every_class(rendered):
    out, _ = rendered
    for cls in figure.CLASSES[:8]:
        splits = [read_split(out / "splits" / f"{cls}_test_split{s}.txt") for s in (1, 2, 3)]
        assert splits[0] != splits[1] and splits[0] != splits[2] and splits[1] != splits[2]


def test_split_counts_at_the_default_size():
    tags = demoset.split_tags(100, tiny(), seed=0, class_index=3)
    for split in tags:
        assert collections.Counter(split) == {1: 60, 2: 30, 0: 10}
    assert len({tuple(split) for split in tags}) == 3


def test_names_are_hmdb_like_and_some_hold_odd_characters(rendered):
    out, _ = rendered
    names = [p.name for p in (out / "videos").rglob("*.avi")]
    assert len(set(names)) == 32
    for name in names:
        assert "/" not in name and not name.startswith("-")
        assert re.search(r"_(\w+)_(\d+)\.avi$", name)
    odd = [n for n in names if n.endswith("_3.avi")]  # video index 3 of each class: every 7th
    assert len(odd) == 8
    assert all(all(c in n for c in ODD_CHARS) for n in odd)
    assert not any(c in n for n in names if n not in odd for c in ODD_CHARS)


def test_bytes_do_not_depend_on_workers_and_follow_the_seed(rendered, tmp_path):
    out, _ = rendered
    demoset.render_dataset(tmp_path / "again", tiny(workers=2), seed=7, progress=False)
    assert hashes(tmp_path / "again") == hashes(out)
    a = demo.render_video("wave", tiny(), demo.video_seeds(7, 6, 0)[1])
    b = demo.render_video("wave", tiny(), demo.video_seeds(8, 6, 0)[1])
    assert a.shape == b.shape == (15, 48, 64, 3) and a.dtype == np.uint8
    assert not np.array_equal(a, b)


def test_videos_decode_with_the_expected_size_and_count(rendered):
    out, _ = rendered
    path = sorted((out / "videos" / "clap").glob("*_3.avi"))[0]  # an odd name, passed as one argument
    raw = subprocess.run([ffmpeg_exe(), "-v", "error", "-i", str(path), "-f", "rawvideo", "-pix_fmt", "rgb24", "-"],
                         capture_output=True, check=True).stdout
    assert len(raw) == 15 * 48 * 64 * 3
    frames = np.frombuffer(raw, np.uint8).reshape(15, 48, 64, 3)
    assert frames.std() > 10  # a scene, not a blank


def test_class_count_outside_8_to_all_is_refused(tmp_path):
    for n in (7, len(figure.CLASSES) + 1):
        with pytest.raises(ValueError, match=rf"8\.\.{len(figure.CLASSES)}; got {n}"):
            demoset.render_dataset(tmp_path, tiny(classes=n), seed=0, progress=False)
    assert demo.class_names(len(figure.CLASSES)) == list(figure.CLASSES)
    with pytest.raises(ValueError, match="even"):
        demoset.render_dataset(tmp_path, tiny(width=63), seed=0, progress=False)


def test_first_eight_classes_hold_both_reversed_pairs_and_the_same_motion_pair():
    first = figure.CLASSES[:8]
    for a, b in (("sit_down", "stand_up"), ("pick_up", "put_down"), ("throw", "shoot_ball")):
        assert a in first and b in first
    assert len(set(figure.CLASSES)) == len(figure.CLASSES) >= 12
    assert all(re.fullmatch(r"[a-z]+(_[a-z]+)*", c) for c in figure.CLASSES)


@pytest.mark.parametrize("forward, backward", [("sit_down", "stand_up"), ("pick_up", "put_down")])
def test_reversed_pairs_are_the_same_motion_played_backwards(forward, backward):
    for seed in range(5):
        m = figure.sample_motion(forward, np.random.default_rng(seed), 3.0)
        assert figure.sample_motion(backward, np.random.default_rng(seed), 3.0) == m
        assert 0.0 <= m.start and m.start + m.span <= 1.0 and m.span == min(m.speed * 3.0, 0.9)
        for t in np.linspace(0.0, 1.0, 13):
            assert np.array_equal(figure.pose(backward, t, m), figure.pose(forward, 1 - t, m))
        # a window inside the action: the figure moves between every two frames 1/6 s apart
        poses = [figure.pose(forward, t, m) for t in np.linspace(0.0, 1.0, 19)]
        assert min(np.abs(a - b).max() for a, b in zip(poses, poses[1:])) > 0.005


def test_throw_and_shoot_ball_move_identically():
    for seed in range(5):
        m = figure.sample_motion("throw", np.random.default_rng(seed), 3.0)
        assert figure.sample_motion("shoot_ball", np.random.default_rng(seed), 3.0) == m
        for t in np.linspace(0.0, 1.0, 13):
            assert np.array_equal(figure.pose("shoot_ball", t, m), figure.pose("throw", t, m))


def test_other_classes_move_differently():
    m = figure.sample_motion("wave", np.random.default_rng(0), 3.0)
    distinct = [c for c in figure.CLASSES if c not in ("stand_up", "put_down", "shoot_ball")]
    tracks = {c: np.stack([figure.pose(c, t, m) for t in np.linspace(0, 1, 7)]) for c in distinct}
    for i, a in enumerate(distinct):
        for b in distinct[i + 1:]:
            assert np.abs(tracks[a] - tracks[b]).max() > 0.1, (a, b)


@pytest.mark.parametrize("cls", figure.CLASSES)
def test_poses_keep_bone_lengths_and_stay_above_ground(cls):
    bones = {(3, 4): figure.UPPER_ARM, (4, 5): figure.FOREARM, (6, 7): figure.UPPER_ARM, (7, 8): figure.FOREARM,
             (9, 10): figure.THIGH, (10, 11): figure.SHIN, (12, 13): figure.THIGH, (13, 14): figure.SHIN,
             (2, 1): figure.TORSO, (1, 0): figure.NECK}
    m = figure.sample_motion(cls, np.random.default_rng(1), 3.0)
    for t in np.linspace(0.0, 1.0, 9):
        p = figure.pose(cls, t, m)
        assert p.shape == (len(figure.JOINTS), 2) and p.dtype == np.float64
        for (i, j), length in bones.items():
            assert np.linalg.norm(p[i] - p[j]) == pytest.approx(length, abs=1e-9)
        assert p[:, 1].min() >= -1e-9


def test_unknown_class_is_named():
    with pytest.raises(ValueError, match="got 'dance'"):
        figure.pose("dance", 0.5, figure.sample_motion("wave", np.random.default_rng(0), 1.0))


def run_stage(tmp_path: Path, root: str, fresh: bool = True) -> subprocess.CompletedProcess:
    params = {"base": {"seed": 3}, "demo_data": vars(tiny()) | {"classes": 8, "videos_per_class": 1},
              "data": {"root": root, "format": "auto", "split": 1, "val_fraction": 0.2, "unused_as_train": False,
                       "annotations": ""}}
    (tmp_path / "params.yaml").write_text(yaml.safe_dump(params), encoding="utf-8")
    if fresh:
        (tmp_path / "data" / "demo").mkdir(parents=True)
        (tmp_path / "data" / "demo" / "stale.txt").write_text("from an earlier run")
    env = dict(os.environ, PYTHONPATH=str(REPO) + os.pathsep + os.environ.get("PYTHONPATH", ""))
    return subprocess.run([sys.executable, str(REPO / "stages" / "demo_data.py"), "data/demo"], cwd=tmp_path,
                          env=env, capture_output=True, text=True, check=True)


def test_stage_renders_when_data_root_is_its_output(tmp_path):
    proc = run_stage(tmp_path, "./data/demo/")
    out = tmp_path / "data" / "demo"
    assert sorted(p.name for p in out.iterdir()) == [demoset.STAMP_NAME, "splits", "videos"]
    assert len(list(out.rglob("*.avi"))) == 8 and len(list(out.rglob("*.txt"))) == 24
    assert "8 videos" in proc.stdout


def test_stage_keeps_a_folder_that_holds_the_same_demo_and_renders_an_edited_one_again(tmp_path):
    """The demo's bytes follow its params, seed and demoset.VERSION: a re-run with the same ones keeps
    the folder (an edit of the code that keeps the version costs no rendering); a touched file, or
    another version, renders it again, the same bytes."""
    run_stage(tmp_path, "data/demo")
    out = tmp_path / "data" / "demo"
    first = {p.relative_to(out): p.read_bytes() for p in sorted(out.rglob("*")) if p.is_file()}
    kept = run_stage(tmp_path, "data/demo", fresh=False)
    assert "nothing rendered" in kept.stdout
    video = next(out.rglob("*.avi"))
    video.write_bytes(b"edited")
    again = run_stage(tmp_path, "data/demo", fresh=False)
    assert "8 videos" in again.stdout
    assert {p.relative_to(out): p.read_bytes() for p in sorted(out.rglob("*")) if p.is_file()} == first
    cfg = tiny(classes=8, videos_per_class=1)
    assert demoset.holds(out, demoset.stamp(cfg, 3))
    assert not demoset.holds(out, demoset.stamp(cfg, 4))  # another seed (or params, or version)


def test_stage_writes_only_a_placeholder_for_another_root(tmp_path):
    run_stage(tmp_path, "elsewhere/hmdb51")
    out = tmp_path / "data" / "demo"
    assert [p.name for p in out.iterdir()] == ["README.txt"]
    assert "elsewhere/hmdb51" in (out / "README.txt").read_text(encoding="utf-8")


@pytest.mark.parametrize("layout", ["hmdb51", "ucf101", "folders", "list"])
def test_every_layout_is_indexed_with_the_roles_and_labels_it_was_written_with(tmp_path, layout):
    """The demo in each dataset format: ``data.format: auto`` recognises it, and every video it
    wrote is in the index with its class, label and role (train standing for train or val)."""
    from twostream.ingest.datasets.index import build_index

    cfg = tiny(layout=layout, videos_per_class=5)
    summary = demoset.render_dataset(tmp_path / "demo", cfg, seed=3, progress=False)
    index, report = build_index(str(tmp_path / "demo"), 1, 0.2, False, 3, "auto")
    assert report["format"] == layout and report["n_problems"] == 0, report
    got = {r["path"].split("/demo/", 1)[1]: r for r in index}
    expected = summary["expected"]
    assert sorted(got) == sorted(expected) and len(got) == summary["videos"]
    for path, want in expected.items():
        record = got[path]
        role = "train" if record["role"] == "val" else record["role"]
        assert (record["class"], record["label"], role) == (want["class"], want["label"], want["role"]), path
    if layout == "ucf101":
        assert report["groups"]["in_several_roles"] == []
    if layout == "list":  # the list's own labels (demo order), not the sorted names
        assert [r["class"] for r in index if r["label"] == 0][0] == demo.class_names(8)[0]
