"""UCF101 as its official archives unpack.

``<root>/UCF-101/<Class>/v_<Class>_gXX_cYY.avi`` (or the class folders directly under
``<root>``) and ``<root>/ucfTrainTestlist/`` with ``classInd.txt`` (``<1-based id> <Class>``),
``trainlist0{1,2,3}.txt`` (``<Class>/v_….avi <1-based id>``) and ``testlist0{1,2,3}.txt``
(``<Class>/v_….avi``), CRLF line ends. 101 classes, 13,320 videos; split 1: 9,537 train /
3,783 test, split 2: 9,586 / 3,734, split 3: 9,624 / 3,696.

Labels index the sorted class names, as for HMDB-51 and as torchvision's ``UCF101`` numbers
them (classInd's own order differs for Hammering/HammerThrow and JumpingJack/JumpRope); a
trainlist id that disagrees with classInd is reported. A group (``gXX``, 25 per class) is one
long source video cut into clips; the official splits keep groups apart, and so does the val
carved from train here (``common.carve_val`` by group), else val accuracy would be overstated
and the learned fusions misled. A video's key is ``<Class>/<file name>``.
"""

from __future__ import annotations

import os
import posixpath
import re
from pathlib import Path
from typing import Any

from twostream.ingest.datasets.common import (
    VIDEO_SUFFIXES, FormatError, Listing, Problems, by_class, carve_val, is_escaping_path, read_lines, split_line,
)

NAME = "ucf101"
EXPECTS = ("<root>/ucfTrainTestlist/ with classInd.txt, trainlist0N.txt and testlist0N.txt, and the class "
           "folders in <root>/UCF-101/ or <root>")
LISTS = "ucfTrainTestlist"
VIDEO_FOLDERS = ("UCF-101", ".")  # where the class folders may be, relative to the root
SPLITS = (1, 2, 3)
_GROUP = re.compile(r"_g(?P<group>\d+)_c(?P<clip>\d+)\.[^.]+$")


def recognise(root: str | os.PathLike) -> str | None:
    """What of a UCF101 root ``root`` holds (its list folder and where the videos are), or None."""
    lists = Path(root) / LISTS
    if not (lists / "classInd.txt").is_file():
        return None
    where = "UCF-101/" if (Path(root) / "UCF-101").is_dir() else "the root"
    return f"{LISTS}/classInd.txt, class folders in {where}"


def group_of(name: str) -> str:
    """The source-video group of a UCF101 file name (``v_Class_g08_c01.avi`` -> ``g08``); a name
    without one is its own group."""
    match = _GROUP.search(name)
    return f"g{match['group']}" if match else name


def read_class_index(path: Path, problems: Problems) -> dict[str, int]:
    """Class name -> 1-based id of ``classInd.txt``."""
    ids: dict[str, int] = {}
    for number, text in read_lines(path):
        fields = text.split()
        if len(fields) != 2 or not fields[0].isdigit():
            problems.add("unparsed_lines", file=path.name, line=number, text=text)
        else:
            ids[fields[1]] = int(fields[0])
    return ids


def _video_dir(root: Path) -> tuple[Path, str]:
    """The folder of the class folders and its posix path relative to the root ("" = the root)."""
    for folder in VIDEO_FOLDERS:
        if folder != "." and (root / folder).is_dir():
            return root / folder, folder
    return root, ""


def _read_list(path: Path, with_id: bool, class_ids: dict[str, int], problems: Problems,
               seen: dict[str, tuple[str, int]]) -> list[tuple[str, str, int]]:
    """``(relative path, class, line)`` of a train or test list; bad lines, escaping paths, unknown
    classes, ids that disagree with classInd and repeats (``seen``: path -> first file, line) go
    to ``problems``."""
    out = []
    for number, text in read_lines(path):
        fields = split_line(text) if with_id else (text.strip(), None)
        if fields is None or (with_id and not fields[1].isdigit()) or (not with_id and " " in text.strip()):
            problems.add("unparsed_lines", file=path.name, line=number, text=text)
            continue
        relative = fields[0].replace("\\", "/")
        class_name = relative.split("/", 1)[0]
        if is_escaping_path(relative) or relative.count("/") != 1:
            problems.add("escaping_names", file=path.name, line=number, name=relative)
        elif class_name not in class_ids:
            problems.add("unknown_classes", file=path.name, line=number, name=relative, **{"class": class_name})
        elif relative in seen:
            first_file, first_line = seen[relative]
            problems.add("duplicates", file=path.name, line=number, name=relative, first_file=first_file,
                         first_line=first_line)
        else:
            if with_id and int(fields[1]) != class_ids[class_name]:
                problems.add("label_mismatches", file=path.name, line=number, name=relative, label=int(fields[1]),
                             expected=class_ids[class_name])
            seen[relative] = (path.name, number)
            out.append((relative, class_name, number))
    return out


def list_videos(root: str, split: int, val_fraction: float, seed: int, problems: Problems) -> Listing:
    """The videos of a UCF101 root for one split, with their roles (val carved by group).

    Raises:
        FormatError: no ``classInd.txt`` or list file for ``split``, or a bad ``split``.
    """
    if isinstance(split, bool) or split not in SPLITS:
        raise FormatError(f"data.split must be one of {list(SPLITS)}; got {split!r}")
    base, lists = Path(root), Path(root) / LISTS
    paths = {"classes": lists / "classInd.txt", "train": lists / f"trainlist0{split}.txt",
             "test": lists / f"testlist0{split}.txt"}
    absent = [p.name for p in paths.values() if not p.is_file()]
    if absent:
        raise FormatError(f"{lists} lacks {', '.join(absent)}: expected {EXPECTS}")
    class_ids = read_class_index(paths["classes"], problems)
    classes = sorted(class_ids)
    video_dir, prefix = _video_dir(base)
    seen: dict[str, tuple[str, int]] = {}
    listed = {role: _read_list(paths[role], role == "train", class_ids, problems, seen) for role in ("train", "test")}
    found: dict[str, tuple[str, str]] = {}  # relative path -> (class, role)
    for role, rows in listed.items():
        for relative, class_name, number in rows:
            if os.path.isfile(os.path.join(video_dir, relative)):
                found[relative] = (class_name, role)
            else:
                problems.add("missing_files", file=paths[role].name, line=number, name=relative)
    _scan_disk(video_dir, classes, set(seen), problems)
    videos = _with_val(found, classes, val_fraction, seed, root, prefix)
    for class_name in sorted(set(classes) - {v["class"] for v in videos}):
        problems.add("empty_classes", **{"class": class_name})
    return Listing(videos, classes, "UCF-101" if prefix else "flat", recognise(root) or LISTS,
                   {"groups": _group_counts(videos)})


def _scan_disk(video_dir: Path, classes: list[str], listed: set[str], problems: Problems) -> None:
    """Videos on disk that no list of the split names, and class folders classInd does not know."""
    if not video_dir.is_dir():
        return
    known = set(classes)
    for folder in sorted(p for p in video_dir.iterdir() if p.is_dir() and not p.name.startswith(".")):
        if folder.name == LISTS:
            continue
        if folder.name not in known:
            problems.add("classes_without_split", **{"class": folder.name})
            continue
        for path in sorted(folder.iterdir()):
            if path.is_file() and path.suffix.lower() in VIDEO_SUFFIXES and f"{folder.name}/{path.name}" not in listed:
                problems.add("unlisted_videos", **{"class": folder.name, "name": path.name})


def _with_val(found: dict[str, tuple[str, str]], classes: list[str], val_fraction: float, seed: int, root: str,
              prefix: str) -> list[dict[str, Any]]:
    """Index records of the found videos, each class's val carved from its train videos by group."""
    base = posixpath.join(root.replace(os.sep, "/"), prefix)
    groups = by_class((r, c, role) for r, (c, role) in sorted(found.items()))
    videos = []
    for class_name in classes:
        mine = groups.get(class_name, [])
        train = [r for r, role in mine if role == "train"]
        val = carve_val(train, val_fraction, seed, class_name, {r: group_of(r) for r in train})
        videos += [{"key": r, "path": posixpath.join(base, r), "class": class_name, "role": "val" if r in val else role}
                   for r, role in mine]
    return videos


def _group_counts(videos: list[dict[str, Any]]) -> dict[str, Any]:
    """Groups per role, and the groups found in more than one role (none in the official splits)."""
    roles_of: dict[tuple[str, str], set[str]] = {}
    for v in videos:
        roles_of.setdefault((v["class"], group_of(v["key"])), set()).add(v["role"])
    per_role = {role: sum(role in roles for roles in roles_of.values()) for role in ("train", "val", "test")}
    shared = sorted(f"{c}/{g}" for (c, g), roles in roles_of.items() if len(roles) > 1)
    return {**per_role, "in_several_roles": shared}
