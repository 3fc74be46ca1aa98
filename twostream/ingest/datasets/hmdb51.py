"""HMDB-51: class folders of videos and one split file per class and split.

Two layouts are accepted (``LAYOUTS``): the bundled demo's ``<root>/videos/<class>/<name>.avi``
with ``<root>/splits/``, and the official archives' ``<root>/<class>/<name>.avi`` with
``<root>/testTrainMulti_7030_splits/``. Split files are named ``<class>_test_split{1,2,3}.txt``;
each line is ``name.avi <tag> `` with tag 1 = train, 2 = test, 0 = unused (split 1: 3,570
train, 1,530 test, 1,666 unused). Labels index the sorted class names; a video's key is
``<class>/<file name>``. Video names are opaque strings: real ones contain ``! ( ) # [ ] & + ;
~ @``. ``data.unused_as_train`` counts tag 0 as train (the seed project's variant).
"""

from __future__ import annotations

import os
import posixpath
import re
from dataclasses import dataclass
from pathlib import Path

from twostream.ingest.datasets.common import (
    VIDEO_SUFFIXES, FormatError, Listing, Problems, carve_val, is_escaping, read_lines,
)
from twostream.ingest.datasets.records import video_key

NAME = "hmdb51"
EXPECTS = ("<root>/videos/<class>/*.avi with <root>/splits/<class>_test_split{1,2,3}.txt, or the official "
           "<root>/<class>/*.avi with <root>/testTrainMulti_7030_splits/")
TAG_ROLES = {"1": "train", "2": "test", "0": "unused"}
SPLITS = (1, 2, 3)
# layout name -> (folder of the class folders, folder of the split files), both relative to root
LAYOUTS: dict[str, tuple[str, str]] = {"demo": ("videos", "splits"), "official": (".", "testTrainMulti_7030_splits")}
_SPLIT_FILE = re.compile(r"^(?P<cls>[^./\\][^/\\]*)_test_split(?P<split>[0-9]+)\.txt$")


@dataclass(frozen=True)
class Layout:
    """Where a dataset root keeps its class folders and split files."""

    name: str  # a key of LAYOUTS
    video_dir: Path  # folder holding one folder per class
    split_dir: Path  # folder holding <class>_test_split{1,2,3}.txt
    video_prefix: str  # posix path of video_dir relative to root ("" = root itself)


def _layouts_found(root: Path) -> list[str]:
    found = []
    for name, (_, splits) in LAYOUTS.items():
        folder = root / splits
        if folder.is_dir() and any(_SPLIT_FILE.match(p.name) for p in folder.iterdir()):
            found.append(name)
    return found


def recognise(root: str | os.PathLike) -> str | None:
    """What of an HMDB-51 root ``root`` holds (its split folder), or None."""
    found = _layouts_found(Path(root))
    return f"{LAYOUTS[found[0]][1]}/ with <class>_test_splitN.txt files" if len(found) == 1 else None


def detect_layout(root: str | os.PathLike) -> Layout:
    """Which of ``LAYOUTS`` a dataset root follows.

    Raises:
        FormatError: if ``root`` has neither layout, or the split folders of both.
    """
    root = Path(root)
    found = _layouts_found(root)
    if not found:
        raise FormatError(f"{root} is not an HMDB-51 root: expected {EXPECTS}")
    if len(found) > 1:
        raise FormatError(f"{root} holds the split folders of both HMDB-51 layouts {found}; keep one")
    videos, splits = LAYOUTS[found[0]]
    prefix = "" if videos == "." else videos
    return Layout(found[0], root / prefix, root / splits, prefix)


def parse_split_line(text: str) -> tuple[str, str] | None:
    """``(name, role)`` of a split line (``name tag``, tag 0, 1 or 2; the name is everything before
    the last whitespace, so names with spaces survive), or None when it is not one."""
    parts = text.strip().rsplit(None, 1)
    if len(parts) != 2 or parts[1] not in TAG_ROLES:
        return None
    return parts[0], TAG_ROLES[parts[1]]


def check_split(split: int) -> None:
    """Raise FormatError unless ``split`` is 1, 2 or 3."""
    if isinstance(split, bool) or split not in SPLITS:
        raise FormatError(f"data.split must be one of {list(SPLITS)}; got {split!r}")


def split_files(split_dir: Path, split: int) -> dict[str, Path]:
    """Class name -> its split file for ``split``, from the file names in ``split_dir``."""
    check_split(split)
    found = {}
    for path in sorted(split_dir.iterdir()):
        match = _SPLIT_FILE.match(path.name)
        if match and int(match["split"]) == split and path.is_file():
            found[match["cls"]] = path
    return found


def read_split_file(path: Path, problems: Problems) -> dict[str, tuple[str, int]]:
    """``name -> (role, line number)`` of one class's split file, in file order; unparsable lines,
    escaping names and repeated names (the first one is kept) go to ``problems``."""
    listed: dict[str, tuple[str, int]] = {}
    for number, text in read_lines(path):
        parsed = parse_split_line(text)
        if parsed is None:
            problems.add("unparsed_lines", file=path.name, line=number, text=text)
            continue
        name, role = parsed
        if is_escaping(name):
            problems.add("escaping_names", file=path.name, line=number, name=name)
        elif name in listed:
            problems.add("duplicates", file=path.name, line=number, name=name, first_file=path.name,
                         first_line=listed[name][1])
        else:
            listed[name] = (role, number)
    return listed


def _scan_class_dirs(layout: Layout, classes: set[str], problems: Problems) -> None:
    """Report the class folders that have no split file for the chosen split."""
    if not layout.video_dir.is_dir():
        return
    skip = {layout.split_dir.name} if layout.video_prefix == "" else set()  # official: splits among classes
    for folder in sorted(layout.video_dir.iterdir()):
        if folder.is_dir() and not folder.name.startswith(".") and folder.name not in skip | classes:
            problems.add("classes_without_split", **{"class": folder.name})


def _index_class(layout: Layout, split_file: Path, class_name: str, problems: Problems) -> dict[str, str]:
    """``name -> role`` of the videos one class's split file lists and the disk holds."""
    listed = read_split_file(split_file, problems)
    folder = layout.video_dir / class_name
    kept = {}
    for name, (role, number) in listed.items():
        if (folder / name).is_file():
            kept[name] = role
        else:
            problems.add("missing_files", file=split_file.name, line=number, name=name)
    on_disk = sorted(p.name for p in folder.iterdir() if p.is_file()) if folder.is_dir() else []
    for name in on_disk:
        if name not in listed and Path(name).suffix.lower() in VIDEO_SUFFIXES:
            problems.add("unlisted_videos", **{"class": class_name, "name": name})
    if not kept:
        problems.add("empty_classes", **{"class": class_name})
    return kept


def _assign_roles(kept: dict[str, str], class_name: str, val_fraction: float, unused_as_train: bool,
                  seed: int) -> dict[str, str]:
    """Final role of each kept video of a class: tag roles, the variant, then the val carve."""
    if unused_as_train:
        kept = {name: "train" if role == "unused" else role for name, role in kept.items()}
    val = carve_val([name for name, role in kept.items() if role == "train"], val_fraction, seed, class_name)
    return {name: "val" if name in val else role for name, role in kept.items()}


def list_videos(root: str, split: int, val_fraction: float, seed: int, problems: Problems,
                unused_as_train: bool = False) -> Listing:
    """The videos of an HMDB-51 root for one split, with their roles.

    Args:
        root: the root as written in ``data.root``; every ``path`` starts with it.
        split: 1, 2 or 3.
        val_fraction: share of each class's train videos moved to ``val`` (by video), in [0, 1).
        seed: ``base.seed``, for the val carve.
        problems: collects what the split files and the disk disagree on.
        unused_as_train: count tag 0 as train before the val carve (the seed's variant).

    Raises:
        FormatError: the root follows neither layout, or has no split file for ``split``.
    """
    check_split(split)
    layout = detect_layout(root)
    files = split_files(layout.split_dir, split)
    if not files:
        raise FormatError(f"data.split={split}: no <class>_test_split{split}.txt in {layout.split_dir}")
    classes = sorted(files)
    _scan_class_dirs(layout, set(classes), problems)
    prefix = posixpath.join(root.replace(os.sep, "/"), layout.video_prefix)
    videos = []
    for class_name in classes:
        kept = _index_class(layout, files[class_name], class_name, problems)
        for name, role in _assign_roles(kept, class_name, val_fraction, unused_as_train, seed).items():
            path = posixpath.join(prefix, class_name, name)
            videos.append({"key": video_key(path), "path": path, "class": class_name, "role": role})
    return Listing(videos, classes, layout.name, f"{layout.split_dir.name}/ with <class>_test_split{split}.txt")
