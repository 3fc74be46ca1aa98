"""Tests of the HMDB-51 format (twostream.ingest.datasets.hmdb51), what it shares with the others, and
stages/index.py, on split files made in tmp_path."""

from __future__ import annotations

import hashlib
import json
import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from twostream.ingest.datasets.common import PROBLEM_KEYS, FormatError, carve_val, is_escaping
from twostream.ingest.datasets.hmdb51 import detect_layout, parse_split_line
from twostream.ingest.datasets.index import build_index
from twostream.ingest.datasets.records import read_index
from twostream.runtime.jsonio import write_json

REPO = Path(__file__).resolve().parents[1]
REAL_SPLITS = Path(__file__).resolve().parents[2] / "shared" / "data" / "hmdb51_splits"
ODD = "odd name (1) #&+;~@[x]!.avi"  # real HMDB-51 names carry these characters


def make_dataset(
    root: Path, layout: str, splits: dict[str, str], videos: dict[str, list[str]]
) -> None:
    """Write split files (exact text, ``{class}_test_split1.txt`` unless the key has a
    ``.txt``) and zero-byte videos in ``layout`` ("demo" or "official")."""
    split_dir = root / ("splits" if layout == "demo" else "testTrainMulti_7030_splits")
    video_dir = root / "videos" if layout == "demo" else root
    split_dir.mkdir(parents=True)
    for key, text in splits.items():
        name = key if key.endswith(".txt") else f"{key}_test_split1.txt"
        (split_dir / name).write_bytes(text.encode())
    for class_name, names in videos.items():
        (video_dir / class_name).mkdir(parents=True)
        for name in names:
            (video_dir / class_name / name).touch()


def messy_dataset(root: Path, outside: Path) -> None:
    """Two classes in the demo layout with one of every problem the report lists."""
    brush = "".join(
        f"{line}\r\n"
        for line in [
            "b1.avi 1 ", "b2.avi 1 ", "", "b3.avi 2 ", "b4.avi 0 ", "garbage line here",
            "b1.avi 2 ", "../escape.avi 1 ", f"{outside} 1 ", "missing.avi 1 ", f"{ODD} 1 ",
        ]
    )
    walk = "".join(f"w{i}.avi {1 if i <= 10 else 2 if i <= 13 else 0} \n" for i in range(1, 15))
    make_dataset(
        root,
        "demo",
        {"brush_hair": brush, "walk": walk, "zzz_test_split2.txt": "z1.avi 1 \n"},
        {
            "brush_hair": ["b1.avi", "b2.avi", "b3.avi", "b4.avi", ODD, "extra.avi", "notes.txt"],
            "walk": [f"w{i}.avi" for i in range(1, 15)],
            "jump": ["j1.avi"],
        },
    )


def roles_of(index: list[dict]) -> dict[str, int]:
    counts: dict[str, int] = {}
    for record in index:
        counts[record["role"]] = counts.get(record["role"], 0) + 1
    return counts


@pytest.mark.parametrize(
    "line, expected",
    [
        ("a.avi 1 \n", ("a.avi", "train")),
        ("a.avi 2\r\n", ("a.avi", "test")),
        ("a b.avi 0 ", ("a b.avi", "unused")),
        (f"{ODD} 1 \r\n", (ODD, "train")),
        ("a.avi 3 \n", None),
        ("a.avi\n", None),
        ("a.avi 1 x\n", None),
        ("  \r\n", None),
    ],
)
def test_parse_split_line(line: str, expected: tuple[str, str] | None) -> None:
    assert parse_split_line(line) == expected


@pytest.mark.parametrize(
    "name, escaping",
    [
        ("../escape.avi", True), ("/abs/x.avi", True), ("C:\\x.avi", True), ("C:x.avi", True),
        ("sub/x.avi", True), ("..", True), (".", True),
        (ODD, False), ("a b.avi", False), ("..hidden.avi", False),
    ],
)
def test_is_escaping(name: str, escaping: bool) -> None:
    assert is_escaping(name) is escaping


def test_detect_layout(tmp_path: Path) -> None:
    for folder in ("d/splits", "o/testTrainMulti_7030_splits"):
        (tmp_path / folder).mkdir(parents=True)
        (tmp_path / folder / "walk_test_split1.txt").write_text("w1.avi 1 \n")
    demo, official = detect_layout(tmp_path / "d"), detect_layout(tmp_path / "o")
    assert (demo.name, demo.video_dir, demo.video_prefix) == (
        "demo", tmp_path / "d" / "videos", "videos"
    )
    assert (official.name, official.video_dir, official.video_prefix) == (
        "official", tmp_path / "o", ""
    )
    with pytest.raises(FormatError, match=r"videos/<class>/\*\.avi.*testTrainMulti_70"):
        detect_layout(tmp_path / "nothing")
    (tmp_path / "d" / "testTrainMulti_7030_splits").mkdir()
    (tmp_path / "d" / "testTrainMulti_7030_splits" / "walk_test_split1.txt").write_text("w1.avi 1 \n")
    with pytest.raises(FormatError, match="both HMDB-51 layouts"):
        detect_layout(tmp_path / "d")


def test_messy_demo_layout(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    outside = tmp_path / "outside.avi"
    outside.touch()  # exists, yet an absolute name must still be excluded
    messy_dataset(tmp_path / "ds", outside)
    monkeypatch.chdir(tmp_path)
    index, report = build_index("ds", split=1, val_fraction=0.2, unused_as_train=False, seed=0)

    brush = ["b1.avi", "b2.avi", "b3.avi", "b4.avi", ODD]
    walk = sorted(f"w{i}.avi" for i in range(1, 15))
    assert [r["path"] for r in index] == [f"ds/videos/brush_hair/{n}" for n in brush] + [
        f"ds/videos/walk/{n}" for n in walk
    ]
    assert [r["label"] for r in index] == [0] * 5 + [1] * 14
    assert {r["class"] for r in index} == {"brush_hair", "walk"}
    # brush_hair: b1 b2 ODD train -> round(0.6) = 1 val; walk: 10 train -> 2 val
    assert roles_of(index) == {"train": 10, "val": 3, "test": 4, "unused": 2}
    assert report["counts"] == {"train": 10, "val": 3, "test": 4, "unused": 2, "total": 19}
    assert report["per_class"] == {
        "brush_hair": {"label": 0, "train": 2, "val": 1, "test": 1, "unused": 1},
        "walk": {"label": 1, "train": 8, "val": 2, "test": 3, "unused": 1},
    }
    by_name = {Path(r["path"]).name: r["role"] for r in index}
    assert (by_name["b1.avi"] in ("train", "val"), by_name["b3.avi"], by_name["b4.avi"]) == (
        True, "test", "unused"
    )
    f = "brush_hair_test_split1.txt"
    assert report["unparsed_lines"] == [{"file": f, "line": 6, "text": "garbage line here"}]
    assert report["duplicates"] == [{"file": f, "line": 7, "name": "b1.avi", "first_file": f, "first_line": 1}]
    assert report["escaping_names"] == [
        {"file": f, "line": 8, "name": "../escape.avi"},
        {"file": f, "line": 9, "name": str(outside)},
    ]
    assert report["missing_files"] == [{"file": f, "line": 10, "name": "missing.avi"}]
    assert report["unlisted_videos"] == [{"class": "brush_hair", "name": "extra.avi"}]
    assert report["classes_without_split"] == [{"class": "jump"}]
    assert report["empty_classes"] == []
    assert report["n_problems"] == 7
    assert (report["format"], report["layout"], report["split"], report["n_classes"]) == ("hmdb51", "demo", 1, 2)


def official_dataset(root: Path) -> dict[str, bytes]:
    """Two classes in the official layout, each video with its own bytes (c1.avi spans
    three 1 MiB hashing blocks). Returns key -> bytes written."""
    make_dataset(
        root,
        "official",
        {"clap": "c1.avi 1 \nc2.avi 2 \n", "wave": "w1.avi 2 \n"},
        {"clap": ["c1.avi", "c2.avi"], "wave": ["w1.avi"]},
    )
    content = {
        "clap/c1.avi": bytes(range(256)) * (10 * 1024 + 3),
        "clap/c2.avi": b"c2",
        "wave/w1.avi": b"",
    }
    for key, data in content.items():
        (root / key).write_bytes(data)
    return content


def test_official_layout(tmp_path: Path) -> None:
    root = tmp_path / "hmdb51"
    content = official_dataset(root)
    index, report = build_index(str(root), 1, 0.0, False, 0)

    def record(key: str, label: int, role: str) -> dict:
        return {"key": key, "path": f"{root.as_posix()}/{key}", "class": key.split("/")[0],
                "label": label, "role": role, "sha256": hashlib.sha256(content[key]).hexdigest()}

    assert index == [
        record("clap/c1.avi", 0, "train"), record("clap/c2.avi", 0, "test"), record("wave/w1.avi", 1, "test")
    ]
    assert index[2]["sha256"] == "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855"
    # the split folder sits among the class folders and is not a class without split
    assert (report["layout"], report["n_problems"]) == ("official", 0)


def test_keys_do_not_depend_on_root_or_position(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    official_dataset(tmp_path / "hmdb51")
    index, _ = build_index(str(tmp_path / "hmdb51"), 1, 0.0, False, 0)
    moved = shutil.copytree(tmp_path / "hmdb51", tmp_path / "elsewhere" / "deeper" / "renamed")
    # a class sorting first moves every other video down the index and shifts the labels
    (moved / "testTrainMulti_7030_splits" / "aaa_test_split1.txt").write_text("a1.avi 1 \n")
    (moved / "aaa").mkdir()
    (moved / "aaa" / "a1.avi").write_bytes(b"a1")
    monkeypatch.chdir(tmp_path / "elsewhere")
    again, _ = build_index("deeper/renamed", 1, 0.0, False, 0)
    assert [r["key"] for r in again] == ["aaa/a1.avi", "clap/c1.avi", "clap/c2.avi", "wave/w1.avi"]
    assert [r["path"] for r in again][1] == "deeper/renamed/clap/c1.avi"
    assert [r["label"] for r in again] == [0, 1, 1, 2]
    same = {r["key"]: r["sha256"] for r in index}
    assert {r["key"]: r["sha256"] for r in again[1:]} == same
    # other bytes under the same name: same key, other hash
    (moved / "clap" / "c2.avi").write_bytes(b"c2 re-encoded")
    changed, _ = build_index("deeper/renamed", 1, 0.0, False, 0)
    assert changed[2]["key"] == "clap/c2.avi"
    assert changed[2]["sha256"] == hashlib.sha256(b"c2 re-encoded").hexdigest() != same["clap/c2.avi"]


def test_read_index_fills_keys_and_rejects_repeated_ones(tmp_path: Path) -> None:
    by_hand = [
        {"path": "x/walk/v1.avi", "class": "walk", "label": 0, "role": "train"},
        {"path": "x/walk/v2.avi", "class": "walk", "label": 0, "role": "test", "key": "own/id"},
    ]
    write_json(tmp_path / "index.json", by_hand)
    index = read_index(tmp_path / "index.json")
    assert [r["key"] for r in index] == ["walk/v1.avi", "own/id"]
    assert all("sha256" not in r for r in index)  # consumers hash the file themselves
    assert index[0] == {"key": "walk/v1.avi", **by_hand[0]}
    # two roots holding the same <class>/<name>: one key, two videos
    by_hand[1] = {"path": "y/walk/v1.avi", "class": "walk", "label": 0, "role": "test"}
    write_json(tmp_path / "index.json", by_hand)
    message = r"index.json: video keys must be unique; repeated: " \
              r"\{'walk/v1.avi': \['x/walk/v1.avi', 'y/walk/v1.avi'\]\}"
    with pytest.raises(ValueError, match=message):
        read_index(tmp_path / "index.json")


def test_carve_val_stratified_and_seeded(tmp_path: Path) -> None:
    names = [f"v{i:02d}.avi" for i in range(20)]
    chosen = carve_val(names, 0.2, seed=0, class_name="walk")
    assert len(chosen) == 4 and chosen <= set(names)
    assert carve_val(list(reversed(names)), 0.2, seed=0, class_name="walk") == chosen
    assert carve_val(names, 0.2, seed=1, class_name="walk") != chosen
    assert carve_val(names, 0.2, seed=0, class_name="run") != chosen
    assert [len(carve_val(names[:n], 0.3, 0, "c")) for n in (10, 7, 3, 1, 0)] == [3, 2, 1, 0, 0]
    with pytest.raises(ValueError, match=r"val_fraction must be in \[0, 1\); got 1.0"):
        carve_val(names, 1.0, 0, "c")

    # per class: 10, 7 and 3 train videos -> 3, 2 and 1 val; the other classes never matter
    sizes = {"a": 10, "b": 7, "c": 3}
    splits = {c: "".join(f"{c}{i}.avi 1 \n" for i in range(n)) for c, n in sizes.items()}
    videos = {c: [f"{c}{i}.avi" for i in range(n)] for c, n in sizes.items()}
    make_dataset(tmp_path / "abc", "demo", splits, videos)
    make_dataset(tmp_path / "a", "demo", {"a": splits["a"]}, {"a": videos["a"]})
    index, report = build_index(str(tmp_path / "abc"), 1, 0.3, False, 7)
    assert {c: report["per_class"][c]["val"] for c in "abc"} == {"a": 3, "b": 2, "c": 1}
    again, _ = build_index(str(tmp_path / "abc"), 1, 0.3, False, 7)
    alone, _ = build_index(str(tmp_path / "a"), 1, 0.3, False, 7)

    def val_names(idx: list[dict]) -> list[str]:
        return [Path(r["path"]).name for r in idx if r["role"] == "val"]

    assert val_names(again) == val_names(index)
    assert val_names(alone) == val_names(index)[:3]
    other, _ = build_index(str(tmp_path / "abc"), 1, 0.3, False, 8)
    assert val_names(other) != val_names(index) and len(val_names(other)) == 6


def test_unused_as_train(tmp_path: Path) -> None:
    messy_dataset(tmp_path / "ds", tmp_path / "outside.avi")
    index, report = build_index(str(tmp_path / "ds"), 1, 0.2, True, 0)
    # brush_hair: b1 b2 ODD b4 -> 4 train, round(0.8) = 1 val; walk: 11 train -> round(2.2) = 2
    assert report["counts"] == {"train": 12, "val": 3, "test": 4, "unused": 0, "total": 19}
    assert roles_of(index) == {"train": 12, "val": 3, "test": 4}


def test_errors(tmp_path: Path) -> None:
    make_dataset(tmp_path / "ds", "demo", {"a": "gone.avi 1 \nbad\n"}, {"a": []})
    for split in (0, 4, "1", True):
        message = rf"data.split must be one of \[1, 2, 3\]; got {split!r}"
        with pytest.raises(ValueError, match=message):
            build_index(str(tmp_path / "ds"), split, 0.2, False, 0)
    with pytest.raises(ValueError, match=r"data.split=2: no <class>_test_split2.txt"):
        build_index(str(tmp_path / "ds"), 2, 0.2, False, 0)
    message = r"no usable video in .*ds \(hmdb51\): 3 problems, \{'unparsed_lines': 1, 'missing_files': 1, " \
              r"'empty_classes': 1\}"
    with pytest.raises(FormatError, match=message):
        build_index(str(tmp_path / "ds"), 1, 0.2, False, 0)


def test_json_is_deterministic(tmp_path: Path) -> None:
    messy_dataset(tmp_path / "ds", tmp_path / "outside.avi")
    for out in ("one", "two"):
        index, report = build_index(str(tmp_path / "ds"), 1, 0.2, False, 0)
        write_json(tmp_path / out / "index.json", index)
        write_json(tmp_path / out / "report.json", report)
    for name in ("index.json", "report.json"):
        assert (tmp_path / "one" / name).read_bytes() == (tmp_path / "two" / name).read_bytes()
    text = (tmp_path / "one" / "index.json").read_text()
    assert text.startswith('[\n {\n  "class": "brush_hair",\n  "key": "brush_hair/b1.avi",\n  "label": 0,\n')
    assert text.endswith("}\n]\n")
    assert read_index(tmp_path / "one" / "index.json") == index


@pytest.mark.skipif(not REAL_SPLITS.is_dir(), reason=f"real split files not at {REAL_SPLITS}")
def test_real_hmdb51_splits(tmp_path: Path) -> None:
    root = tmp_path / "hmdb51"
    split_dir = root / "testTrainMulti_7030_splits"
    shutil.copytree(REAL_SPLITS, split_dir)
    for path in split_dir.glob("*_test_split1.txt"):
        class_dir = root / path.name[: -len("_test_split1.txt")]
        class_dir.mkdir()
        for line in path.read_text().splitlines():
            (class_dir / line.split()[0]).touch()
    expected_val = 51 * round(0.2 * 70)  # 70 train videos per class in every split
    for split in (1, 2, 3):
        index, report = build_index(str(root), split, 0.2, False, 0)
        counts = report["counts"]
        assert (counts["train"] + counts["val"], counts["test"], counts["unused"]) == (
            3570, 1530, 1666
        )
        assert (counts["val"], report["n_classes"], report["n_problems"]) == (expected_val, 51, 0)
        assert len({r["label"] for r in index}) == 51
    assert sum(1 for r in index if any(c in r["path"] for c in "!()#[]&+;~@")) == 536


def test_stage_end_to_end(tmp_path: Path) -> None:
    messy_dataset(tmp_path / "ds", tmp_path / "outside.avi")
    (tmp_path / "params.yaml").write_text(
        "base:\n  seed: 0\ndata:\n  root: ds\n  format: auto\n  split: 1\n  val_fraction: 0.2\n"
        "  unused_as_train: false\n  annotations: ''\n"
    )
    pythonpath = os.pathsep.join([str(REPO), os.environ.get("PYTHONPATH", "")])
    env = {**os.environ, "PYTHONPATH": pythonpath}
    script = str(REPO / "stages" / "index.py")
    args = [sys.executable, script, "ds", "data/index.json", "data/report.json"]
    done = subprocess.run(args, cwd=tmp_path, env=env, capture_output=True, text=True, timeout=60)
    assert done.returncode == 0, done.stderr
    assert re.fullmatch(r"index: hmdb51 \(demo\), split 1, 2 classes: 10 train, 3 val, 4 test, 2 unused; 7 problems "
                        r"\(19 videos hashed, 0 unchanged, [0-9.]+ s\) -> data/index.json, data/report.json\n",
                        done.stdout), done.stdout
    index = json.loads((tmp_path / "data" / "index.json").read_text())
    report = json.loads((tmp_path / "data" / "report.json").read_text())
    assert len(index) == 19 and index[0]["path"] == "ds/videos/brush_hair/b1.avi"
    assert index[0]["key"] == "brush_hair/b1.avi"
    assert index[0]["sha256"] == hashlib.sha256(b"").hexdigest()  # make_dataset's videos are empty
    assert set(PROBLEM_KEYS) <= set(report) and report["n_problems"] == 7
