"""The dataset formats beyond HMDB-51 (UCF101, class folders with Kinetics annotations, video lists),
format recognition, and the content-hash cache; on trees of placeholder files made in tmp_path,
UCF101's from its real split files."""

from __future__ import annotations

import csv
import hashlib
import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from twostream.ingest.datasets.common import FormatError, HashCache, carve_val, hash_files
from twostream.ingest.datasets.index import FORMATS, build_index, detect_format
from twostream.ingest.datasets.ucf101 import group_of

REPO = Path(__file__).resolve().parents[1]
REAL_UCF = Path(__file__).resolve().parents[2] / "shared" / "data" / "ucf101_splits"
KINETICS = ["abseiling", "massaging person's head", "passing American football (in game)"]


def touch(path: Path, data: bytes = b"") -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(data)


def counts(index: list[dict]) -> dict[str, int]:
    out: dict[str, int] = {}
    for record in index:
        out[record["role"]] = out.get(record["role"], 0) + 1
    return out


def ucf_tree(root: Path, lists: Path = REAL_UCF, folder: str = "UCF-101") -> None:
    """The official archives' layout from real lists: every listed video as an empty file."""
    shutil.copytree(lists, root / "ucfTrainTestlist")
    for name in ("trainlist01.txt", "testlist01.txt"):  # every video is in split 1's lists
        for line in (lists / name).read_text().splitlines():
            if line.strip():
                (root / folder / line.split()[0]).parent.mkdir(parents=True, exist_ok=True)
                (root / folder / line.split()[0]).touch()


@pytest.mark.skipif(not REAL_UCF.is_dir(), reason=f"real UCF101 split files not at {REAL_UCF}")
def test_real_ucf101_splits_counts_and_groups(tmp_path):
    root = tmp_path / "ucf101"
    ucf_tree(root)
    expected = {1: (9537, 3783), 2: (9586, 3734), 3: (9624, 3696)}
    for split, (train, test) in expected.items():
        index, report = build_index(str(root), split, 0.2, False, 0, "auto")
        c = report["counts"]
        assert (c["train"] + c["val"], c["test"], c["unused"], c["total"]) == (train, test, 0, 13320), split
        assert report["format"] == "ucf101" and report["n_classes"] == 101 and report["n_problems"] == 0
        assert report["groups"]["in_several_roles"] == []  # the official splits and the val carve keep groups apart
        assert 0.15 < c["val"] / (c["train"] + c["val"]) < 0.25
        roles = {}
        for r in index:
            roles.setdefault((r["class"], group_of(r["key"])), set()).add(r["role"])
        assert all(len(v) == 1 for v in roles.values())
        assert sum(1 for v in roles.values() if v == {"val"}) == report["groups"]["val"]
    # labels index the sorted class names (torchvision's UCF101 order), not classInd's
    names = sorted({r["class"] for r in index})
    assert all(r["label"] == names.index(r["class"]) for r in index)
    assert names.index("HammerThrow") == 34 and names.index("Hammering") == 35
    assert index[0]["key"] == "ApplyEyeMakeup/v_ApplyEyeMakeup_g01_c01.avi"
    assert index[0]["path"] == f"{root.as_posix()}/UCF-101/ApplyEyeMakeup/v_ApplyEyeMakeup_g01_c01.avi"
    # a file name that spells its class otherwise (HandStandPushups in HandstandPushups/) keeps its group
    assert group_of("HandstandPushups/v_HandStandPushups_g08_c01.avi") == "g08"


def small_ucf(root: Path, flat: bool = False) -> None:
    """Two classes, 3 groups each, with one problem of every kind a UCF101 root can hold."""
    lists = root / "ucfTrainTestlist"
    lists.mkdir(parents=True)
    (lists / "classInd.txt").write_bytes(b"1 Zoom\r\n2 Archery\r\n")
    train = ["Zoom/v_Zoom_g01_c01.avi 1", "Zoom/v_Zoom_g01_c02.avi 1", "Zoom/v_Zoom_g02_c01.avi 1",
             "Archery/v_Archery_g01_c01.avi 1",  # classInd says 2
             "Archery/v_Archery_g02_c01.avi 2", "Archery/v_Archery_g02_c01.avi 2", "../x.avi 1", "Nope/v.avi 1",
             "Archery/gone.avi 2", "no label here"]
    test = ["Zoom/v_Zoom_g03_c01.avi", "Archery/v_Archery_g03_c01.avi"]
    (lists / "trainlist01.txt").write_bytes("".join(f"{x}\r\n" for x in train).encode())
    (lists / "testlist01.txt").write_bytes("".join(f"{x}\r\n" for x in test).encode())
    base = root if flat else root / "UCF-101"
    for line in train[:5] + test + ["Archery/v_Archery_g09_c01.avi", "Jump/v_Jump_g01_c01.avi"]:
        touch(base / line.split()[0])


@pytest.mark.parametrize("flat", [False, True])
def test_ucf101_reports_every_problem(tmp_path, flat):
    small_ucf(tmp_path / "u", flat)
    index, report = build_index(str(tmp_path / "u"), 1, 0.5, False, 0, "ucf101")
    assert [r["class"] for r in index] == ["Archery"] * 3 + ["Zoom"] * 4  # labels: sorted names
    assert [r["label"] for r in index] == [0] * 3 + [1] * 4
    assert report["layout"] == ("flat" if flat else "UCF-101")
    f = "trainlist01.txt"
    assert report["label_mismatches"] == [{"file": f, "line": 4, "name": "Archery/v_Archery_g01_c01.avi", "label": 1,
                                           "expected": 2}]
    assert report["duplicates"] == [{"file": f, "line": 6, "name": "Archery/v_Archery_g02_c01.avi",
                                     "first_file": f, "first_line": 5}]
    assert report["escaping_names"] == [{"file": f, "line": 7, "name": "../x.avi"}]
    assert report["unknown_classes"] == [{"file": f, "line": 8, "name": "Nope/v.avi", "class": "Nope"}]
    assert report["missing_files"] == [{"file": f, "line": 9, "name": "Archery/gone.avi"}]
    assert report["unparsed_lines"] == [{"file": f, "line": 10, "text": "no label here"}]
    assert report["unlisted_videos"] == [{"class": "Archery", "name": "v_Archery_g09_c01.avi"}]
    assert report["classes_without_split"] == [{"class": "Jump"}]
    # val by group: Zoom's g01 (2 clips) or g02 (1 clip) goes whole, never half a group
    zoom = {r["key"]: r["role"] for r in index if r["class"] == "Zoom"}
    assert zoom["Zoom/v_Zoom_g01_c01.avi"] == zoom["Zoom/v_Zoom_g01_c02.avi"]
    assert report["groups"]["in_several_roles"] == []


def test_carve_val_by_group_takes_whole_groups():
    names = [f"v_A_g{g:02d}_c{c:02d}.avi" for g in range(1, 11) for c in range(1, 5)]  # 10 groups of 4
    val = carve_val(names, 0.2, 0, "A", {n: group_of(n) for n in names})
    assert len(val) == 8 and len({group_of(n) for n in val}) == 2
    assert val == carve_val(list(reversed(names)), 0.2, 0, "A", {n: group_of(n) for n in names})
    assert val != carve_val(names, 0.2, 1, "A", {n: group_of(n) for n in names})


def kinetics_tree(root: Path, with_test: bool = False) -> dict[str, str]:
    """Kinetics-style class folders; returns clip stem -> split of every annotated clip."""
    clips = {"train": [("aaa", 0, 10), ("bbb", 5, 15), ("ccc", 1, 11), ("ddd", 2, 12), ("eee", 3, 13)],
             "val": [("fff", 0, 10), ("ggg", 7, 17)]}
    rows, annotated = [], {}
    for split, items in clips.items():
        for i, (yt, start, end) in enumerate(items):
            label = KINETICS[i % len(KINETICS)]
            stem = f"{yt}_{start:06d}_{end:06d}"
            annotated[stem] = split
            rows.append({"label": label, "youtube_id": yt, "time_start": start, "time_end": end, "split": split})
            if yt != "ddd":  # a YouTube video gone: annotated, not on disk
                touch(root / split / label / f"{stem}.mp4", stem.encode())
    rows.append({"label": KINETICS[0], "youtube_id": "hhh", "time_start": 0, "time_end": 10, "split": "train"})
    touch(root / "train" / KINETICS[1] / "hhh_000000_000010.mp4")  # on disk under another label
    touch(root / "train" / KINETICS[0] / "zzz_000000_000010.mp4")  # on disk, in no annotation
    if with_test:
        touch(root / "test" / KINETICS[0] / "ttt_000000_000010.mp4")
    with open(root.parent / "kinetics.csv", "w", newline="") as f:
        writer = csv.DictWriter(f, ["label", "youtube_id", "time_start", "time_end", "split"])
        writer.writeheader()
        writer.writerows(rows)
    return annotated


def test_folders_with_kinetics_names_and_annotations(tmp_path):
    root = tmp_path / "kinetics"
    kinetics_tree(root)
    index, report = build_index(str(root), 1, 0.0, False, 0, "auto", str(tmp_path / "kinetics.csv"))
    assert report["format"] == "folders" and report["split_folders"] == {"train": "train", "val": "test"}
    assert report["split"] is None and [r["class"] for r in index][:1] == ["abseiling"]
    assert sorted({r["class"] for r in index}) == sorted(KINETICS)  # spelled as the folders spell them
    assert counts(index) == {"train": 5, "test": 2}
    assert index[0]["key"] == "train/abseiling/aaa_000000_000010.mp4"
    annotations = report["annotations"]
    assert (annotations["rows"], annotations["matched"], annotations["missing_on_disk"]) == (8, 7, 1)
    assert annotations["missing"] == [{"clip": "ddd_000002_000012", "split": "train", "label": KINETICS[0]}]
    assert report["label_mismatches"][0]["name"] == f"train/{KINETICS[1]}/hhh_000000_000010.mp4"
    assert report["unlisted_videos"] == [{"class": KINETICS[0], "name": "train/abseiling/zzz_000000_000010.mp4"}]
    # without annotations every clip on disk counts, and val is carved from train
    plain, report = build_index(str(root), 1, 0.3, False, 0, "folders")
    assert counts(plain) == {"train": 4, "val": 2, "test": 2} and "annotations" not in report  # 6 train clips


def test_folders_with_a_test_folder_keep_val_as_val(tmp_path):
    root = tmp_path / "kinetics"
    kinetics_tree(root, with_test=True)
    index, report = build_index(str(root), 1, 0.3, False, 0, "folders")
    assert report["split_folders"] == {"train": "train", "val": "val", "test": "test"}
    assert counts(index) == {"train": 6, "val": 2, "test": 1}  # no carve: the root has its own val


def list_tree(root: Path, val: bool = True) -> None:
    touch(root / "classes.txt", b"walk\nrun\njump\n")
    names = {"train": ["clips/a 1.mp4 0", "clips/b.mp4 1", "clips/c.mp4 1", "clips/d.mp4 2", "clips/b.mp4 1",
                       "/etc/passwd 0", "clips/../../x.mp4 0", "clips/e.mp4 7", "clips/gone.mp4 0", "no_label"],
             "test": ["clips/t1.mp4 0", "clips/t2.mp4 2"]}
    if val:
        names["val"] = ["clips/v1.mp4 1"]
    for role, lines in names.items():
        touch(root / f"{role}.txt", "".join(f"{line}\n" for line in lines).encode())
        for line in lines:
            fields = line.rsplit(" ", 1)
            if len(fields) == 2 and not fields[0].startswith(("/", "clips/..")) and "gone" not in fields[0]:
                touch(root / fields[0])
    touch(root / "clips" / "stray.mp4")


def test_video_lists_keep_their_labels_and_report_every_problem(tmp_path):
    list_tree(tmp_path / "l")
    index, report = build_index(str(tmp_path / "l"), 1, 0.2, False, 0, "auto")
    assert report["format"] == "list" and report["class_names"] == "classes.txt"
    assert [(r["key"], r["class"], r["label"], r["role"]) for r in index] == [
        ("clips/a 1.mp4", "walk", 0, "train"), ("clips/t1.mp4", "walk", 0, "test"),
        ("clips/b.mp4", "run", 1, "train"), ("clips/c.mp4", "run", 1, "train"), ("clips/v1.mp4", "run", 1, "val"),
        ("clips/d.mp4", "jump", 2, "train"), ("clips/t2.mp4", "jump", 2, "test")]
    f = "train.txt"
    assert report["duplicates"] == [{"file": f, "line": 5, "name": "clips/b.mp4", "first_file": f, "first_line": 2}]
    assert report["escaping_names"] == [{"file": f, "line": 6, "name": "/etc/passwd"},
                                        {"file": f, "line": 7, "name": "clips/../../x.mp4"}]
    assert report["label_mismatches"] == [{"file": f, "line": 8, "name": "clips/e.mp4", "label": 7,
                                           "expected": "0..2"}]
    assert report["missing_files"] == [{"file": f, "line": 9, "name": "clips/gone.mp4"}]
    assert report["unparsed_lines"] == [{"file": f, "line": 10, "text": "no_label"}]
    assert report["unlisted_videos"] == [{"name": "clips/e.mp4"}, {"name": "clips/stray.mp4"}]


def test_video_lists_without_val_or_class_names(tmp_path):
    list_tree(tmp_path / "l", val=False)
    (tmp_path / "l" / "classes.txt").unlink()
    index, report = build_index(str(tmp_path / "l"), 1, 0.5, False, 0, "list")
    assert report["class_names"] == "label numbers" and sorted({r["class"] for r in index}) == ["0", "1", "2", "7"]
    assert counts(index)["val"] == 1  # carved per label: 1's two train videos give one; round(0.5) = 0 for the others
    assert report["label_mismatches"] == [] and report["n_classes"] == 8


def test_a_root_that_fits_no_format_names_what_each_expects(tmp_path):
    (tmp_path / "some" / "folder").mkdir(parents=True)
    with pytest.raises(FormatError) as caught:
        detect_format(tmp_path / "some")
    message = str(caught.value)
    assert "\n" not in message and all(f"{name}: " in message for name in FORMATS)
    with pytest.raises(FormatError, match="is not a folder"):
        detect_format(tmp_path / "absent")


def test_a_root_that_fits_two_formats_asks_for_data_format(tmp_path):
    list_tree(tmp_path / "r")
    small_ucf(tmp_path / "r")
    with pytest.raises(FormatError, match=r"fits several formats \(ucf101: .*list: .*\); set data.format"):
        detect_format(tmp_path / "r")
    assert build_index(str(tmp_path / "r"), 1, 0.0, False, 0, "list")[1]["format"] == "list"


def test_the_stage_on_a_root_that_fits_no_format_ends_with_one_line(tmp_path):
    (tmp_path / "mine").mkdir()
    (tmp_path / "params.yaml").write_text("base:\n  seed: 0\ndata:\n  root: mine\n  format: auto\n  split: 1\n"
                                          "  val_fraction: 0.2\n  unused_as_train: false\n  annotations: ''\n")
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(REPO), os.environ.get("PYTHONPATH", "")])}
    done = subprocess.run([sys.executable, str(REPO / "stages" / "index.py"), "mine", "i.json", "r.json"],
                          cwd=tmp_path, env=env, capture_output=True, text=True, timeout=60)
    assert done.returncode == 1 and "Traceback" not in done.stderr
    assert re.fullmatch(r"index: mine fits no dataset format: hmdb51: .*; ucf101: .*; folders: .*; list: .*\n",
                        done.stderr), done.stderr


def test_the_hash_cache_skips_unchanged_files_and_sees_changed_ones(tmp_path):
    paths = [tmp_path / f"v{i}.mp4" for i in range(5)]
    for i, path in enumerate(paths):
        path.write_bytes(bytes([i]) * (3 << 20))
    cache = HashCache(tmp_path / "cache" / "hashes.sqlite")
    first, stats = hash_files([str(p) for p in paths], cache, workers=2)
    assert stats["hashed"] == 5 and first == [hashlib.sha256(p.read_bytes()).hexdigest() for p in paths]
    again, stats = hash_files([str(p) for p in paths], cache, workers=2)
    assert again == first and (stats["hashed"], stats["cached"]) == (0, 5)
    paths[2].unlink()
    paths[2].write_bytes(b"re-encoded")  # a new file: new size, new mtime
    changed, stats = hash_files([str(p) for p in paths], cache, workers=2)
    assert (stats["hashed"], stats["bytes_hashed"]) == (1, 10) and changed[2] == hashlib.sha256(b"re-encoded").hexdigest()
    cache.close()


def test_hashing_in_worker_processes_gives_the_hashes_of_one_process(tmp_path, monkeypatch):
    from twostream.ingest.datasets import common

    paths = []
    for i in range(7):
        paths.append(str(tmp_path / f"v{i}.mp4"))
        Path(paths[-1]).write_bytes(bytes([i]) * (100_000 + i))
    alone, _ = hash_files(paths, workers=1)
    monkeypatch.setattr(common, "HASH_CHUNK_FILES", 2)  # 4 jobs for the 2 workers
    pooled, stats = hash_files(paths, workers=2)
    assert pooled == alone == [hashlib.sha256(Path(p).read_bytes()).hexdigest() for p in paths]
    assert stats["hashed"] == 7
