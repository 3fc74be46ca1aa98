"""Video lists, as mmaction2 reads them: one ``relative/path label`` per line.

``<root>/train.txt``, ``<root>/val.txt`` (optional: without it val is carved from train) and
``<root>/test.txt``; paths are relative to the root, labels are integers from 0, and an optional
``<root>/classes.txt`` names them (line ``i`` = label ``i``; without it a class is named by its
number). Any dataset a lab has fits this. Labels are the lists' own (not re-numbered); a label
``classes.txt`` does not name is reported and its lines left out. A video's key is its path.
"""

from __future__ import annotations

import os
import posixpath
from pathlib import Path
from typing import Any

from twostream.ingest.datasets.common import (
    FormatError, Listing, Problems, by_class, carve_val, is_escaping_path, read_lines, split_line, videos_under,
)

NAME = "list"
EXPECTS = "<root>/train.txt and <root>/test.txt (and optionally val.txt, classes.txt), lines `relative/path label`"
LIST_ROLES = {"train.txt": "train", "val.txt": "val", "test.txt": "test"}
CLASSES_FILE = "classes.txt"


def recognise(root: str | os.PathLike) -> str | None:
    """Which list files ``root`` holds, or None without both ``train.txt`` and ``test.txt``."""
    present = [name for name in (*LIST_ROLES, CLASSES_FILE) if (Path(root) / name).is_file()]
    return ", ".join(present) if {"train.txt", "test.txt"} <= set(present) else None


def _read(path: Path, n_classes: int | None, problems: Problems,
          seen: dict[str, tuple[str, int]]) -> list[tuple[str, int, int]]:
    """``(relative path, label, line)`` of one list; bad lines, escaping paths, labels outside the
    class list and repeats (``seen``: path -> first file, line) go to ``problems``."""
    out = []
    for number, text in read_lines(path):
        fields = split_line(text)
        if fields is None or not fields[1].lstrip("-").isdigit():
            problems.add("unparsed_lines", file=path.name, line=number, text=text)
            continue
        relative, label = fields[0].replace("\\", "/"), int(fields[1])
        if is_escaping_path(relative):
            problems.add("escaping_names", file=path.name, line=number, name=relative)
        elif label < 0 or (n_classes is not None and label >= n_classes):
            problems.add("label_mismatches", file=path.name, line=number, name=relative, label=label,
                         expected=f"0..{(n_classes or 1) - 1}" if n_classes else ">= 0")
        elif relative in seen:
            problems.add("duplicates", file=path.name, line=number, name=relative, first_file=seen[relative][0],
                         first_line=seen[relative][1])
        else:
            seen[relative] = (path.name, number)
            out.append((relative, label, number))
    return out


def list_videos(root: str, val_fraction: float, seed: int, problems: Problems) -> Listing:
    """The videos of a root with video lists, with their roles.

    Raises:
        FormatError: no ``train.txt`` or ``test.txt``, or lists that leave no label.
    """
    base = Path(root)
    if recognise(root) is None:
        raise FormatError(f"{root} has no video lists: expected {EXPECTS}")
    names = [text.strip() for _, text in read_lines(base / CLASSES_FILE)] if (base / CLASSES_FILE).is_file() else None
    seen: dict[str, tuple[str, int]] = {}
    rows: dict[str, list[tuple[str, int, int]]] = {}
    for file, role in LIST_ROLES.items():
        if (base / file).is_file():
            rows[role] = [r for r in _read(base / file, len(names) if names else None, problems, seen)]
    found: list[tuple[str, int, str]] = []
    for role, listed in rows.items():
        for relative, label, number in listed:
            if os.path.isfile(os.path.join(root, relative)):
                found.append((relative, label, role))
            else:
                problems.add("missing_files", file=f"{role}.txt", line=number, name=relative)
    n_classes = len(names) if names else (max((label for _, label, _ in found), default=-1) + 1)
    if n_classes == 0:
        raise FormatError(f"the video lists of {root} name no usable video")
    classes = names or [str(label) for label in range(n_classes)]
    for relative in videos_under(base):
        if relative not in seen:
            problems.add("unlisted_videos", name=relative)
    prefix = root.replace(os.sep, "/")
    groups = by_class((r, classes[label], role) for r, label, role in found)
    videos: list[dict[str, Any]] = []
    for class_name in classes:
        mine = groups.get(class_name, [])
        train = [r for r, role in mine if role == "train"]
        val = carve_val(train, val_fraction, seed, class_name) if "val" not in rows else set()
        if not mine:
            problems.add("empty_classes", **{"class": class_name})
        videos += [{"key": r, "path": posixpath.join(prefix, r), "class": class_name,
                    "role": "val" if r in val else role} for r, role in mine]
    return Listing(videos, classes, "with val.txt" if "val" in rows else "train.txt + test.txt",
                   recognise(root) or "", {"class_names": "classes.txt" if names else "label numbers"})
