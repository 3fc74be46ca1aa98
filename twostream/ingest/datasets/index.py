"""The ``index`` stage's work: a dataset root, in any format of ``FORMATS``, to index records and a report.

``build_index`` picks the format (``data.format``, or ``auto``: the one format whose files the
root holds), asks its module for the videos, their classes and roles, sorts them, numbers the
classes and hashes every video's bytes (``common.hash_files``, on every usable core, reusing a
``HashCache``). Each record is ``{"key", "path", "class", "label", "role", "sha256"}``: ``key``
names the video whatever its position in the index or the root's location, ``sha256`` follows
its content, so the caches keyed on them follow the videos.
"""

from __future__ import annotations

import logging
import os
from pathlib import Path
from types import ModuleType
from typing import Any

from twostream.ingest.datasets import folders, hmdb51, ucf101, videolist
from twostream.ingest.datasets.common import FormatError, HashCache, Listing, Problems, hash_files, make_report
from twostream.ingest.datasets.records import check_unique_keys

log = logging.getLogger(__name__)

FORMATS: dict[str, ModuleType] = {m.NAME: m for m in (hmdb51, ucf101, folders, videolist)}
CHOICES = ("auto", *FORMATS)  # data.format


def expectations() -> str:
    """What each format expects of a root, in one line."""
    return "; ".join(f"{name}: {module.EXPECTS}" for name, module in FORMATS.items())


def detect_format(root: str | os.PathLike) -> tuple[str, str]:
    """``(format, what was found)`` of the one format whose files ``root`` holds.

    Raises:
        FormatError: if ``root`` is not a folder, fits no format (the message names what each
            expects) or fits several (set ``data.format``).
    """
    if not Path(root).is_dir():
        raise FormatError(f"data.root {str(root)!r} is not a folder")
    found = {name: what for name, module in FORMATS.items() if (what := module.recognise(root)) is not None}
    if not found:
        raise FormatError(f"{root} fits no dataset format: {expectations()}")
    if len(found) > 1:
        raise FormatError(f"{root} fits several formats ({', '.join(f'{n}: {w}' for n, w in found.items())}); "
                          f"set data.format to one of them")
    return next(iter(found.items()))


def list_videos(root: str, fmt: str, split: int, val_fraction: float, seed: int, unused_as_train: bool,
                annotations: str, problems: Problems) -> tuple[str, Listing]:
    """``(format, its Listing)`` of ``root`` in format ``fmt`` (``auto``: ``detect_format``)."""
    if fmt not in CHOICES:
        raise FormatError(f"data.format must be one of {', '.join(CHOICES)}; got {fmt!r}")
    if fmt == "auto":
        fmt, what = detect_format(root)
        log.info("data.format auto: %s (%s)", fmt, what)
    elif not Path(root).is_dir():
        raise FormatError(f"data.root {root!r} is not a folder")
    if annotations and fmt != "folders":
        raise FormatError(f"data.annotations (a Kinetics CSV) is read with the folders format; {root} is {fmt}")
    if fmt == "hmdb51":
        return fmt, hmdb51.list_videos(root, split, val_fraction, seed, problems, unused_as_train)
    if fmt == "ucf101":
        return fmt, ucf101.list_videos(root, split, val_fraction, seed, problems)
    if fmt == "folders":
        return fmt, folders.list_videos(root, val_fraction, seed, problems, annotations)
    return fmt, videolist.list_videos(root, val_fraction, seed, problems)


def build_index(root: str, split: int = 1, val_fraction: float = 0.2, unused_as_train: bool = False,
                seed: int = 0, fmt: str = "auto", annotations: str = "", cache: HashCache | None = None,
                workers: int = 1, progress: bool = False,
                hashing: dict[str, int] | None = None) -> tuple[list[dict[str, Any]], dict[str, Any]]:
    """Index a dataset root.

    Args:
        root: dataset root exactly as written in ``data.root``; every ``path`` starts with it.
        split: 1, 2 or 3 (HMDB-51 and UCF101; the other formats have one split).
        val_fraction: share of each class's train videos moved to ``val``, in [0, 1) (UCF101: by group;
            none when the root has its own val list or folder).
        unused_as_train: HMDB-51: count tag 0 as train before the val carve (the seed's variant).
        seed: ``base.seed``, for the val carve.
        fmt: ``data.format``: ``auto`` or a key of ``FORMATS``.
        annotations: ``data.annotations``: a Kinetics CSV (or folder of them) for the folders format.
        cache: hashes of files seen before (by path, size and mtime); workers: hashing threads.
        progress: show a progress bar while hashing.
        hashing: filled with ``{"hashed", "cached", "bytes_hashed"}`` of this run (kept out of the
            report, whose bytes must not depend on what an earlier run left in the cache).

    Returns:
        ``(index, report)``: records sorted by class then key, and the report (``common.make_report``).

    Raises:
        FormatError: the root fits no format, or not the one asked for, or leaves no usable video.
        ValueError: bad ``val_fraction``, or two videos with one key.
    """
    if not 0.0 <= val_fraction < 1.0:
        raise FormatError(f"data.val_fraction must be in [0, 1); got {val_fraction!r}")
    problems = Problems()
    fmt, listing = list_videos(root, fmt, split, val_fraction, seed, unused_as_train, annotations, problems)
    labels = {name: label for label, name in enumerate(listing.classes)}
    videos = sorted(listing.videos, key=lambda v: (labels[v["class"]], v["key"]))
    hashes, stats = hash_files([v["path"] for v in videos], cache, workers, progress)
    if hashing is not None:
        hashing.update(stats)
    # keys in reading order: id, file, labels, content
    index = [{"key": v["key"], "path": v["path"], "class": v["class"], "label": labels[v["class"]], "role": v["role"],
              "sha256": sha} for v, sha in zip(videos, hashes)]
    check_unique_keys(index, root)
    report = make_report(fmt, listing, split if fmt in ("hmdb51", "ucf101") else None, index, problems)
    if not index:
        raise FormatError(f"no usable video in {root} ({fmt}): {report['n_problems']} problems, "
                          f"{ {k: v for k, v in report['problem_counts'].items() if v} }")
    return index, report
