"""The HMDB-51 protocol: find the videos and split files of a dataset root and index them.

Two layouts are accepted (see ``LAYOUTS``): the bundled demo's
``<root>/videos/<class>/<name>.avi`` with ``<root>/splits/``, and the official
archives' ``<root>/<class>/<name>.avi`` with ``<root>/testTrainMulti_7030_splits/``.
Split files are named ``<class>_test_split{1,2,3}.txt``; each line is
``name.avi <tag> `` with tag 1 = train, 2 = test, 0 = unused.

The index is a list of ``{"key", "path", "class", "label", "role", "sha256"}`` records,
role one of ``ROLES``; labels index the sorted class names. ``key`` (``<class>/<file
name>``) names a video whatever its position in the index or the root's location, and
``sha256`` is the hash of its bytes, so a cache keyed on them follows the video's content.
Video names are opaque strings: real ones contain ``! ( ) # [ ] & + ; ~ @``. Every
problem met on the way is listed in a report instead of being dropped silently.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import posixpath
import re
from dataclasses import dataclass, field
from pathlib import Path, PurePosixPath, PureWindowsPath
from typing import Any

log = logging.getLogger(__name__)

ROLES = ("train", "val", "test", "unused")
TAG_ROLES = {"1": "train", "2": "test", "0": "unused"}
SPLITS = (1, 2, 3)
# layout name -> (folder of the class folders, folder of the split files), both relative to root
LAYOUTS: dict[str, tuple[str, str]] = {
    "demo": ("videos", "splits"),
    "official": (".", "testTrainMulti_7030_splits"),
}
# files on disk that count as videos when looking for ones no split file lists
VIDEO_SUFFIXES = (".avi", ".mp4", ".mkv", ".mov", ".webm", ".mpg", ".mpeg")
HASH_BLOCK = 1 << 20  # bytes read at a time when hashing a video (1 MiB)
_SPLIT_FILE = re.compile(r"^(?P<cls>[^./\\][^/\\]*)_test_split(?P<split>[0-9]+)\.txt$")
# report keys that list problems, each a list of records
PROBLEM_KEYS = (
    "unparsed_lines",  # {"file", "line", "text"}: a split line that is not `name tag`
    "escaping_names",  # {"file", "line", "name"}: absolute, `..` or a path separator
    "duplicates",  # {"file", "line", "name", "first_line"}: listed again; first kept
    "missing_files",  # {"file", "line", "name"}: listed but not on disk
    "unlisted_videos",  # {"class", "name"}: on disk, not in its class's split file
    "classes_without_split",  # {"class"}: a class folder with no split file
    "empty_classes",  # {"class"}: a split file that left no usable video
)


@dataclass(frozen=True)
class Layout:
    """Where a dataset root keeps its class folders and split files."""

    name: str  # a key of LAYOUTS
    video_dir: Path  # folder holding one folder per class
    split_dir: Path  # folder holding <class>_test_split{1,2,3}.txt
    video_prefix: str  # posix path of video_dir relative to root ("" = root itself)


@dataclass
class _Problems:
    """Problem lists collected while indexing, keyed like ``PROBLEM_KEYS``."""

    lists: dict[str, list[dict[str, Any]]] = field(
        default_factory=lambda: {key: [] for key in PROBLEM_KEYS}
    )

    def add(self, key: str, **record: Any) -> None:
        self.lists[key].append(record)


def detect_layout(root: str | os.PathLike) -> Layout:
    """Find which of ``LAYOUTS`` a dataset root follows.

    Args:
        root: dataset root folder.

    Returns:
        The layout; its folders are ``root`` joined with the layout's relative paths.

    Raises:
        FileNotFoundError: if ``root`` has neither layout (the message names both).
        ValueError: if ``root`` has the split folders of both layouts.
    """
    root = Path(root)
    found = [name for name, (_, splits) in LAYOUTS.items() if (root / splits).is_dir()]
    if not found:
        expected = " or ".join(
            f"{(root / videos).as_posix()}/<class>/<name>.avi with {(root / splits).as_posix()}/"
            for videos, splits in LAYOUTS.values()
        )
        raise FileNotFoundError(f"{root} is not an HMDB-51 dataset root: expected {expected}")
    if len(found) > 1:
        raise ValueError(f"{root} holds the split folders of both layouts {found}; keep one")
    videos, splits = LAYOUTS[found[0]]
    prefix = "" if videos == "." else videos
    return Layout(found[0], root / prefix, root / splits, prefix)


def parse_split_line(text: str) -> tuple[str, str] | None:
    """Parse one line of a split file.

    Args:
        text: the line, with or without its trailing space, CR or newline.

    Returns:
        ``(name, role)`` with role ``train``, ``test`` or ``unused``; None when the line
        is not ``name tag`` with tag 0, 1 or 2. The name is everything before the last
        whitespace, so names with spaces survive.
    """
    parts = text.strip().rsplit(None, 1)
    if len(parts) != 2 or parts[1] not in TAG_ROLES:
        return None
    return parts[0], TAG_ROLES[parts[1]]


def is_escaping(name: str) -> bool:
    """True when a listed name is not a plain file name inside its class folder.

    Absolute paths (posix or Windows), ``..``/``.`` and any ``/`` or ``\\`` count: a name
    is joined onto the class folder, so anything else could point outside the root.
    """
    if name in (".", "..") or "/" in name or "\\" in name:
        return True
    return PurePosixPath(name).is_absolute() or bool(PureWindowsPath(name).drive)


def _check_split(split: int) -> None:
    """Raise ValueError unless ``split`` is 1, 2 or 3."""
    if isinstance(split, bool) or split not in SPLITS:
        raise ValueError(f"data.split must be one of {list(SPLITS)}; got {split!r}")


def split_files(split_dir: Path, split: int) -> dict[str, Path]:
    """Map class name -> its split file for ``split``, from the file names in ``split_dir``.

    Raises:
        ValueError: if ``split`` is not 1, 2 or 3.
    """
    _check_split(split)
    found = {}
    for path in sorted(split_dir.iterdir()):
        match = _SPLIT_FILE.match(path.name)
        if match and int(match["split"]) == split and path.is_file():
            found[match["cls"]] = path
    return found


def read_split_file(path: Path, problems: _Problems) -> dict[str, tuple[str, int]]:
    """Read one class's split file.

    Unparsable lines, escaping names and repeated names (the first one is kept) go to
    ``problems``; blank lines are skipped.

    Args:
        path: the split file.
        problems: collector the problems are added to.

    Returns:
        ``name -> (role, line number)`` in file order.
    """
    listed: dict[str, tuple[str, int]] = {}
    # surrogateescape keeps any undecodable byte so the name still matches the file on disk
    with open(path, encoding="utf-8-sig", errors="surrogateescape") as f:
        for number, text in enumerate(f, start=1):
            if not text.strip():
                continue
            parsed = parse_split_line(text)
            if parsed is None:
                text = text.rstrip("\r\n")
                problems.add("unparsed_lines", file=path.name, line=number, text=text)
                continue
            name, role = parsed
            if is_escaping(name):
                problems.add("escaping_names", file=path.name, line=number, name=name)
            elif name in listed:
                problems.add(
                    "duplicates", file=path.name, line=number, name=name, first_line=listed[name][1]
                )
            else:
                listed[name] = (role, number)
    return listed


def carve_val(names: list[str], fraction: float, seed: int, class_name: str) -> set[str]:
    """Choose the ``round(fraction * len(names))`` train videos of a class that become val.

    The choice ranks each name by a SHA-256 of ``(seed, class_name, name)``: a seeded
    random permutation that depends neither on the order of ``names`` nor on the other
    classes, and is the same on every platform and Python version.

    Args:
        names: the class's train video names.
        fraction: share to move, in [0, 1).
        seed: ``base.seed``.
        class_name: the class, so classes get independent draws.

    Returns:
        The chosen names.

    Raises:
        ValueError: if ``fraction`` is outside [0, 1).
    """
    if not 0.0 <= fraction < 1.0:
        raise ValueError(f"data.val_fraction must be in [0, 1); got {fraction!r}")

    def rank(name: str) -> str:
        key = f"{seed}\0{class_name}\0{name}".encode("utf-8", "surrogateescape")
        return hashlib.sha256(key).hexdigest()

    n_val = round(fraction * len(names))  # Python's round: halves go to the even count
    return set(sorted(set(names), key=lambda name: (rank(name), name))[:n_val])


def _scan_class_dirs(layout: Layout, classes: set[str], problems: _Problems) -> None:
    """Report the class folders that have no split file for the chosen split."""
    if not layout.video_dir.is_dir():
        return
    # in the official layout the split folder sits among the class folders
    skip = {layout.split_dir.name} if layout.video_prefix == "" else set()
    for folder in sorted(layout.video_dir.iterdir()):
        if folder.is_dir() and not folder.name.startswith(".") and folder.name not in skip:
            if folder.name not in classes:
                problems.add("classes_without_split", **{"class": folder.name})


def _index_class(
    layout: Layout, split_file: Path, class_name: str, problems: _Problems
) -> dict[str, str]:
    """Read one class's split file; keep the listed videos that exist on disk.

    Returns:
        ``name -> role`` (``train``, ``test`` or ``unused``) of the kept videos.
    """
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


def _assign_roles(
    kept: dict[str, str], class_name: str, val_fraction: float, unused_as_train: bool, seed: int
) -> dict[str, str]:
    """Final role of each kept video of a class: tag roles, the variant, then the val carve."""
    if unused_as_train:
        kept = {name: "train" if role == "unused" else role for name, role in kept.items()}
    train = [name for name, role in kept.items() if role == "train"]
    val = carve_val(train, val_fraction, seed, class_name)
    return {name: "val" if name in val else role for name, role in kept.items()}


def video_key(path: str | os.PathLike) -> str:
    """A video's stable id, ``<class folder>/<file name>`` of its path: the same wherever the
    root lives and wherever the video sits in the index (``"brush_hair/April_09_....avi"``)."""
    path = PurePosixPath(str(path).replace(os.sep, "/"))
    return f"{path.parent.name}/{path.name}"


def file_sha256(path: str | os.PathLike) -> str:
    """Hex SHA-256 of a file's bytes, read ``HASH_BLOCK`` bytes at a time."""
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(HASH_BLOCK), b""):
            digest.update(block)
    return digest.hexdigest()


def check_unique_keys(index: list[dict[str, Any]], source: str) -> None:
    """Raise ValueError naming each ``key`` that several records of ``index`` (read from
    ``source``, a root or a file) share, with their paths."""
    paths: dict[str, list[str]] = {}
    for record in index:
        paths.setdefault(record["key"], []).append(record["path"])
    repeated = {key: found for key, found in paths.items() if len(found) > 1}
    if repeated:
        raise ValueError(f"{source}: video keys (<class>/<file name>) must be unique; repeated: {repeated}")


def build_index(
    root: str,
    split: int,
    val_fraction: float,
    unused_as_train: bool,
    seed: int,
) -> tuple[list[dict[str, Any]], dict[str, Any]]:
    """Index a dataset root for one HMDB-51 split.

    Args:
        root: dataset root exactly as written in ``data.root``; every ``path`` starts with it.
        split: 1, 2 or 3.
        val_fraction: share of each class's train videos moved to ``val`` (by video), in [0, 1).
        unused_as_train: count tag 0 as train before the val carve (the seed's variant).
        seed: ``base.seed``, for the val carve.

    Returns:
        ``(index, report)``: ``{"key", "path", "class", "label", "role", "sha256"}`` records
        sorted by class then file name (``key``: ``video_key``; ``sha256``: ``file_sha256``
        of the video), and the report (see ``make_report``).

    Raises:
        ValueError: bad ``split`` or ``val_fraction``, no split file for ``split``, no
            usable video left, or two videos with one key.
        FileNotFoundError: ``root`` follows neither layout.
    """
    _check_split(split)
    if not 0.0 <= val_fraction < 1.0:
        raise ValueError(f"data.val_fraction must be in [0, 1); got {val_fraction!r}")
    layout = detect_layout(root)
    files = split_files(layout.split_dir, split)
    if not files:
        raise ValueError(
            f"data.split={split}: no <class>_test_split{split}.txt in {layout.split_dir}"
        )
    classes = sorted(files)
    problems = _Problems()
    _scan_class_dirs(layout, set(classes), problems)
    prefix = posixpath.join(root.replace(os.sep, "/"), layout.video_prefix)
    index = []
    for label, class_name in enumerate(classes):
        kept = _index_class(layout, files[class_name], class_name, problems)
        roles = _assign_roles(kept, class_name, val_fraction, unused_as_train, seed)
        for name in sorted(roles):
            path = posixpath.join(prefix, class_name, name)
            # keys in reading order: id, file, labels, content
            index.append({"key": video_key(path), "path": path, "class": class_name, "label": label,
                          "role": roles[name], "sha256": file_sha256(path)})
    check_unique_keys(index, root)
    report = make_report(layout, split, classes, index, problems)
    if not index:
        raise ValueError(f"no usable video left in {root} for split {split}: {summarize(report)}")
    log.debug("indexed %s", summarize(report))
    return index, report


def make_report(
    layout: Layout, split: int, classes: list[str], index: list[dict[str, Any]], problems: _Problems
) -> dict[str, Any]:
    """The index report: a dict of counts and problem lists, deterministically ordered.

    Returns:
        ``layout``, ``split``, ``n_classes``, ``counts`` (role -> videos, plus ``total``),
        ``per_class`` (class -> ``label`` and role counts), one list per ``PROBLEM_KEYS``
        (sorted), ``problem_counts`` (key -> length) and ``n_problems``.
    """
    counts = dict.fromkeys(ROLES, 0)
    per_class = {
        name: {"label": label, **dict.fromkeys(ROLES, 0)} for label, name in enumerate(classes)
    }
    for record in index:
        counts[record["role"]] += 1
        per_class[record["class"]][record["role"]] += 1
    counts["total"] = len(index)
    report: dict[str, Any] = {
        "layout": layout.name, "split": split, "n_classes": len(classes),
        "counts": counts, "per_class": per_class,
    }
    for key in PROBLEM_KEYS:
        report[key] = sorted(problems.lists[key], key=_record_order)
        if report[key]:
            log.warning("%d %s, first: %s", len(report[key]), key, report[key][0])
    report["problem_counts"] = {key: len(report[key]) for key in PROBLEM_KEYS}
    report["n_problems"] = sum(report["problem_counts"].values())
    return report


def _record_order(record: dict[str, Any]) -> tuple:
    """Sort key of a problem record: file/class first, then line, then name."""
    return (
        record.get("file", record.get("class", "")), record.get("line") or 0, record.get("name", "")
    )


def summarize(report: dict[str, Any]) -> str:
    """One line for the stage's stdout: counts per role and number of problems."""
    counts = report["counts"]
    roles = ", ".join(f"{counts[role]} {role}" for role in ROLES)
    return (
        f"{report['layout']} layout, split {report['split']}, {report['n_classes']} classes: "
        f"{roles}; {report['n_problems']} problems"
    )


def read_index(path: str | os.PathLike) -> list[dict[str, Any]]:
    """Read ``data/index.json`` as written by the ``index`` stage.

    Records written by hand (tests) may lack ``key`` and ``sha256``: a missing ``key`` is
    filled in as ``video_key(path)`` (``<parent folder>/<file name>``); a missing ``sha256``
    stays missing, and a consumer that needs the content hash computes ``file_sha256``
    of the file itself.

    Returns:
        The records, each ``{"key": str, "path": str, "class": str, "label": int,
        "role": str}`` plus ``"sha256": str`` when the file has it.

    Raises:
        ValueError: if a record lacks one of path, class, label, role, has a role
            outside ``ROLES``, or two records share a key.
    """
    with open(path, encoding="utf-8") as f:
        index = json.load(f)
    for number, record in enumerate(list(index)):
        if not {"path", "class", "label", "role"} <= set(record) or record["role"] not in ROLES:
            raise ValueError(
                f"{path} record {number}: need keys path, class, label, role with role in "
                f"{list(ROLES)}; got {record!r}"
            )
        index[number] = {"key": video_key(record["path"]), **record}
    check_unique_keys(index, str(path))
    return index
