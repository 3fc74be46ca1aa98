"""Class folders per split, as torchvision's ``Kinetics`` and ImageFolder-style datasets lay them out.

``<root>/<split>/<class>/<video>`` with ``split`` one of ``train``, ``val``, ``test``. ``train``
is the train role, and val is carved from it; ``val`` is the test role (Kinetics' test labels
are not public), unless a ``test`` folder with class folders is there too: then ``test`` is the
test role and ``val`` the val role. Class names are the folder names as they are spelled
(Kinetics' hold spaces, apostrophes and parentheses); labels index their sorted union. A
video's key is its path relative to the root.

Optionally (``data.annotations``) a Kinetics annotation CSV, or a folder of them, with the
columns ``label, youtube_id, time_start, time_end, split``: a clip named
``<youtube_id>_<start:06d>_<end:06d>.<ext>`` is matched to its row, a row whose label is not
the clip's folder is reported, and the rows whose clip is not on disk (a share of Kinetics'
YouTube videos is always gone) are counted and listed, never fatal.
"""

from __future__ import annotations

import csv
import os
import posixpath
from pathlib import Path
from typing import Any

from twostream.ingest.datasets.common import VIDEO_SUFFIXES, FormatError, Listing, Problems, by_class, carve_val

NAME = "folders"
EXPECTS = "<root>/train/<class>/<video> with <root>/val/<class>/ or <root>/test/<class>/"
SPLIT_DIRS = ("train", "val", "test")


def _class_dirs(folder: Path) -> list[Path]:
    return sorted(p for p in folder.iterdir() if p.is_dir() and not p.name.startswith(".")) if folder.is_dir() else []


def recognise(root: str | os.PathLike) -> str | None:
    """Which split folders of class folders ``root`` holds, or None without ``train`` and another."""
    present = [s for s in SPLIT_DIRS if _class_dirs(Path(root) / s)]
    if "train" not in present or len(present) < 2:
        return None
    return ", ".join(f"{s}/<class>/" for s in present)


def roles_of(root: Path) -> dict[str, str]:
    """Split folder -> role: train -> train; val -> test, or val when a test folder is there."""
    has_test = bool(_class_dirs(root / "test"))
    roles = {"train": "train", "val": "val" if has_test else "test"}
    if has_test:
        roles["test"] = "test"
    return {folder: role for folder, role in roles.items() if _class_dirs(root / folder)}


def read_annotations(path: Path, problems: Problems) -> dict[str, dict[str, str]]:
    """Clip name stem (``<youtube_id>_<start:06d>_<end:06d>``) -> its row, from one CSV or every
    ``*.csv`` of a folder. Rows that do not parse go to ``problems``."""
    files = sorted(path.glob("*.csv")) if path.is_dir() else [path]
    if not files or not all(f.is_file() for f in files):
        raise FormatError(f"data.annotations: no annotation CSV at {path}")
    rows: dict[str, dict[str, str]] = {}
    for file in files:
        with open(file, encoding="utf-8-sig", newline="") as f:
            for number, row in enumerate(csv.DictReader(f), start=2):
                try:
                    stem = f"{row['youtube_id']}_{int(float(row['time_start'])):06d}_{int(float(row['time_end'])):06d}"
                    rows[stem] = {"label": row.get("label") or "", "split": row["split"], "file": file.name,
                                  "line": number}
                except (KeyError, TypeError, ValueError):
                    problems.add("unparsed_lines", file=file.name, line=number, text=",".join(map(str, row.values())))
    return rows


def list_videos(root: str, val_fraction: float, seed: int, problems: Problems, annotations: str = "") -> Listing:
    """The videos of a class-folder root, with their roles.

    Raises:
        FormatError: no ``train`` folder of class folders, or no other split folder.
    """
    base = Path(root)
    roles = roles_of(base)
    if "train" not in roles or len(roles) < 2:
        raise FormatError(f"{root} is not a class-folder root: expected {EXPECTS}")
    rows = read_annotations(Path(annotations), problems) if annotations else None
    found: list[tuple[str, str, str]] = []  # (relative path, class, role)
    for folder, role in roles.items():
        for class_dir in _class_dirs(base / folder):
            for path in sorted(p for p in class_dir.iterdir() if p.is_file()):
                if path.suffix.lower() not in VIDEO_SUFFIXES:
                    continue
                relative = f"{folder}/{class_dir.name}/{path.name}"
                if rows is not None and not _matches(rows, path, class_dir.name, relative, problems):
                    continue
                found.append((relative, class_dir.name, role))
    classes = sorted({c for _, c, _ in found} | {d.name for f in roles for d in _class_dirs(base / f)})
    prefix = root.replace(os.sep, "/")
    groups = by_class(found)
    videos = []
    for class_name in classes:
        mine = groups.get(class_name, [])
        train = [r for r, role in mine if role == "train"]
        val = carve_val(train, val_fraction, seed, class_name) if "val" not in roles.values() else set()
        if not mine:
            problems.add("empty_classes", **{"class": class_name})
        videos += [{"key": r, "path": posixpath.join(prefix, r), "class": class_name,
                    "role": "val" if r in val else role} for r, role in mine]
    extra: dict[str, Any] = {"split_folders": roles}
    if rows is not None:
        extra["annotations"] = _missing(rows, {Path(r).stem for r, _, _ in found}, set(roles))
    return Listing(videos, classes, "+".join(roles), recognise(root) or ", ".join(roles), extra)


def _matches(rows: dict[str, dict[str, str]], path: Path, class_name: str, relative: str,
             problems: Problems) -> bool:
    """Whether a clip on disk is one of the annotations' (a clip they do not name is reported, and
    one whose label is another class is used with its folder's class and reported)."""
    row = rows.get(path.stem)
    if row is None:
        problems.add("unlisted_videos", **{"class": class_name, "name": relative})
        return False
    if row["label"] and row["label"] != class_name:
        problems.add("label_mismatches", file=row["file"], line=row["line"], name=relative, label=row["label"],
                     expected=class_name)
    return True


def _missing(rows: dict[str, dict[str, str]], on_disk: set[str], folders: set[str]) -> dict[str, Any]:
    """The annotated clips of the split folders present that are not on disk: counted and listed."""
    wanted = {stem: row for stem, row in rows.items() if row["split"] in folders}
    gone = sorted(stem for stem in wanted if stem not in on_disk)
    return {"rows": len(rows), "rows_of_present_splits": len(wanted), "matched": len(wanted) - len(gone),
            "missing_on_disk": len(gone),
            "missing": [{"clip": stem, "split": wanted[stem]["split"], "label": wanted[stem]["label"]}
                        for stem in gone]}
