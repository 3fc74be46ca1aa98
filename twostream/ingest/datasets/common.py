"""What every dataset format shares: records, problems, the val carve, content hashes, the report.

A format module hands ``index.build_index`` a ``Listing``: per video its key, path, class and
role (``train``, ``val``, ``test``, ``unused``), the class names in label order, and the
problems it met (``Problems``, keyed like ``PROBLEM_KEYS``). Nothing is dropped silently: a
listed file that is missing, a video on disk that no list names, a line that does not parse,
a path that would leave the root, a repeated name and a label that disagrees with the class
list each become a record of the report.

Content hashes (``hash_files``) are computed by a process per usable core, and a ``HashCache``
remembers the hash of a file by its path, size and modification time, as DVC's own state
does, so that re-indexing a large unchanged dataset reads no video again.
"""

from __future__ import annotations

import hashlib
import logging
import os
import sqlite3
from dataclasses import dataclass, field
from pathlib import Path, PurePosixPath, PureWindowsPath
from typing import Any, Iterable, Sequence

from tqdm import tqdm

from twostream.ingest.datasets.records import ROLES, file_sha256
from twostream.runtime.pools import ordered_map, pool_context

log = logging.getLogger(__name__)

# files on disk that count as videos when looking for ones no list names
VIDEO_SUFFIXES = (".avi", ".mp4", ".mkv", ".mov", ".webm", ".mpg", ".mpeg", ".m4v", ".flv")
# report keys that list problems, each a list of records
PROBLEM_KEYS = (
    "unparsed_lines",  # {"file", "line", "text"}: a line that is not what its file holds
    "escaping_names",  # {"file", "line", "name"}: an absolute path or `..`: it would leave the root
    "duplicates",  # {"file", "line", "name", "first_file", "first_line"}: listed again; the first kept
    "missing_files",  # {"file", "line", "name"}: listed but not on disk
    "unlisted_videos",  # {"name"} (and "class"): a video on disk that no list names
    "classes_without_split",  # {"class"}: a class folder no split or list file names
    "empty_classes",  # {"class"}: a class left without any usable video
    "label_mismatches",  # {"file", "line", "name", "label", "expected"}: a label the class list contradicts
    "unknown_classes",  # {"file", "line", "name", "class"}: a class the class list or folders do not know
)


class FormatError(ValueError):
    """A dataset root that does not fit the format asked for (or fits none); one line that names it."""


@dataclass
class Problems:
    """Problem lists collected while indexing, keyed like ``PROBLEM_KEYS``."""

    lists: dict[str, list[dict[str, Any]]] = field(default_factory=lambda: {key: [] for key in PROBLEM_KEYS})

    def add(self, key: str, **record: Any) -> None:
        self.lists[key].append(record)


@dataclass
class Listing:
    """What a format module found in a root, before the contents are hashed.

    Attributes:
        videos: ``{"key", "path", "class", "role"}`` per usable video, any order (``build_index``
            sorts them and adds ``label`` from ``classes`` and ``sha256``).
        classes: class names in label order.
        layout: which layout of the format the root follows (for the report).
        found: what was recognised, in words (for the report and the stage's line).
        extra: format-specific report entries (groups, annotations, ...).
    """

    videos: list[dict[str, Any]]
    classes: list[str]
    layout: str
    found: str
    extra: dict[str, Any] = field(default_factory=dict)


def is_escaping(name: str) -> bool:
    """True when a name listed inside a class folder is not a plain file name there: absolute
    paths (posix or Windows), ``.``/``..`` and any ``/`` or ``\\`` could point outside the root."""
    if name in (".", "..") or "/" in name or "\\" in name:
        return True
    return PurePosixPath(name).is_absolute() or bool(PureWindowsPath(name).drive)


def is_escaping_path(relative: str) -> bool:
    """True when a path listed relative to the root would leave it: absolute (posix or Windows),
    or with a ``..`` component."""
    path = relative.replace("\\", "/")
    if path.startswith("/") or (len(path) > 1 and path[1] == ":"):  # /abs, C:\abs or C:rel
        return True
    return ".." in path.split("/")


def videos_under(root: str | os.PathLike) -> list[str]:
    """Posix paths relative to ``root`` of every file under it with a ``VIDEO_SUFFIXES`` suffix,
    sorted (``os.walk``: a dataset of 240k videos is listed in seconds)."""
    found = []
    base = os.fspath(root)
    for folder, dirs, files in os.walk(base):
        dirs[:] = [d for d in dirs if not d.startswith(".")]
        prefix = os.path.relpath(folder, base).replace(os.sep, "/")
        for name in files:
            if os.path.splitext(name)[1].lower() in VIDEO_SUFFIXES:
                found.append(name if prefix == "." else f"{prefix}/{name}")
    return sorted(found)


def by_class(found: Iterable[tuple[str, str, str]]) -> dict[str, list[tuple[str, str]]]:
    """``(relative path, class, role)`` rows grouped by class: class -> ``[(path, role), ...]``."""
    groups: dict[str, list[tuple[str, str]]] = {}
    for relative, class_name, role in found:
        groups.setdefault(class_name, []).append((relative, role))
    return groups


def split_line(text: str) -> tuple[str, str] | None:
    """``(path, last field)`` of a ``path label`` line: the label is after the last whitespace, so
    paths with spaces survive; None for a line with one field."""
    parts = text.strip().rsplit(None, 1)
    return (parts[0], parts[1]) if len(parts) == 2 else None


def read_lines(path: Path) -> list[tuple[int, str]]:
    """``(line number, text)`` of the non-blank lines of a text file, CR, LF and BOM stripped.
    Undecodable bytes survive (``surrogateescape``), so a name still matches the file on disk."""
    with open(path, encoding="utf-8-sig", errors="surrogateescape") as f:
        return [(n, text.rstrip("\r\n")) for n, text in enumerate(f, start=1) if text.strip()]


def _rank(seed: int, class_name: str, name: str) -> str:
    return hashlib.sha256(f"{seed}\0{class_name}\0{name}".encode("utf-8", "surrogateescape")).hexdigest()


def carve_val(names: Sequence[str], fraction: float, seed: int, class_name: str,
              groups: dict[str, str] | None = None) -> set[str]:
    """Choose the train videos of a class that become val: ``round(fraction * len(names))`` of them.

    The choice ranks each name (or, with ``groups``, each group) by a SHA-256 of ``(seed,
    class_name, name)``: a seeded random permutation that depends neither on the order of
    ``names`` nor on the other classes, and is the same on every platform and Python version.
    With ``groups`` (name -> group, e.g. UCF101's ``gXX``, the clips of one source video) whole
    groups are taken in rank order until the count is reached, a group skipped when it would
    overshoot it by half its size or more, so no group is in train and val and a class of few large
    groups does not lose most of its train videos to val.

    Raises:
        ValueError: if ``fraction`` is outside [0, 1).
    """
    if not 0.0 <= fraction < 1.0:
        raise ValueError(f"data.val_fraction must be in [0, 1); got {fraction!r}")
    n_val = round(fraction * len(set(names)))  # Python's round: halves go to the even count
    if groups is None:
        return set(sorted(set(names), key=lambda name: (_rank(seed, class_name, name), name))[:n_val])
    members: dict[str, list[str]] = {}
    for name in sorted(set(names)):
        members.setdefault(groups.get(name, name), []).append(name)
    chosen: set[str] = set()
    for group in sorted(members, key=lambda g: (_rank(seed, class_name, g), g)):
        if len(chosen) >= n_val:
            break
        if len(chosen) + len(members[group]) < n_val + len(members[group]) / 2:  # overshoot by < half a group
            chosen.update(members[group])
    return chosen


class HashCache:
    """SHA-256 of files by ``(absolute path, size, mtime_ns)``, in an SQLite file.

    A file whose size and modification time are unchanged is taken to have its bytes
    unchanged (DVC's own state makes the same bet), so a re-index hashes only new or
    modified files. The cache never decides an output on its own: a miss computes the hash.
    """

    def __init__(self, path: str | os.PathLike) -> None:
        Path(path).parent.mkdir(parents=True, exist_ok=True)
        self.db = sqlite3.connect(str(path))
        self.db.execute("CREATE TABLE IF NOT EXISTS hashes (path TEXT PRIMARY KEY, size INTEGER, "
                        "mtime_ns INTEGER, sha256 TEXT)")

    def get(self, path: str, size: int, mtime_ns: int) -> str | None:
        row = self.db.execute("SELECT sha256 FROM hashes WHERE path = ? AND size = ? AND mtime_ns = ?",
                              (path, size, mtime_ns)).fetchone()
        return None if row is None else row[0]

    def all(self) -> dict[tuple[str, int, int], str]:
        """Every hash the cache holds, by ``(path, size, mtime_ns)`` (one query for a whole index)."""
        return {(p, size, mtime): sha for p, size, mtime, sha in self.db.execute("SELECT * FROM hashes")}

    def put(self, rows: Iterable[tuple[str, int, int, str]]) -> None:
        with self.db:
            self.db.executemany("INSERT OR REPLACE INTO hashes VALUES (?, ?, ?, ?)", rows)

    def close(self) -> None:
        self.db.close()


HASH_CHUNK_FILES = 512  # files per hashing job: amortises the job's cost over small files
HASH_CHUNK_BYTES = 1 << 28  # ... and keeps large ones spread over the workers (256 MiB a job)
POOL_MIN_MEAN_BYTES = 1 << 16  # smaller files on average are hashed here: their cost is the listing's, not
# the hashing's (240k files of 4 KiB: 15.7k files/s in one process, 13.2k with two workers on 2 cores)


def _hash_chunk(paths: list[str]) -> list[str]:
    """``file_sha256`` of each path: one hashing job."""
    return [file_sha256(path) for path in paths]


def _chunks(paths: list[str], sizes: list[int]) -> list[list[str]]:
    chunks: list[list[str]] = [[]]
    size = 0
    for path, n in zip(paths, sizes):
        if chunks[-1] and (len(chunks[-1]) >= HASH_CHUNK_FILES or size + n > HASH_CHUNK_BYTES):
            chunks.append([])
            size = 0
        chunks[-1].append(path)
        size += n
    return [c for c in chunks if c]


def hash_files(paths: Sequence[str], cache: HashCache | None = None, workers: int = 1,
               progress: bool = False) -> tuple[list[str], dict[str, int]]:
    """``file_sha256`` of every path, in order, from ``workers`` processes (a Python thread per file
    would spend its time on the GIL for small files) when the files are large enough for it to pay,
    reusing the hashes ``cache`` holds for unchanged files.

    Returns:
        The hashes, and ``{"hashed", "cached", "bytes_hashed"}``.
    """
    keys = []
    for path in paths:
        st = os.stat(path)
        keys.append((os.path.abspath(path), st.st_size, st.st_mtime_ns))
    known = cache.all() if cache is not None else {}
    hashes: list[str | None] = [known.get(key) for key in keys]
    todo = [i for i, h in enumerate(hashes) if h is None]
    chunks = _chunks([paths[i] for i in todo], [keys[i][1] for i in todo])
    total = sum(keys[i][1] for i in todo)
    if workers > 1 and len(chunks) > 1 and total >= POOL_MIN_MEAN_BYTES * len(todo):
        results = ordered_map(_hash_chunk, chunks, min(workers, len(chunks)), pool_context([__name__]),
                              name=lambda chunk: f"hashing {chunk[0]} and {len(chunk) - 1} more")
    else:
        results = map(_hash_chunk, chunks)
    with tqdm(total=len(todo), desc="index: hashing", unit="video", disable=not progress or not todo) as bar:
        done = iter(todo)
        for digests in results:
            for digest in digests:
                hashes[next(done)] = digest
            bar.update(len(digests))
    if cache is not None and todo:
        cache.put((*keys[i], hashes[i]) for i in todo)
    return [str(h) for h in hashes], {"hashed": len(todo), "cached": len(paths) - len(todo),
                                      "bytes_hashed": sum(keys[i][1] for i in todo)}


def _record_order(record: dict[str, Any]) -> tuple:
    """Sort key of a problem record: file/class first, then line, then name."""
    return (str(record.get("file", record.get("class", ""))), record.get("line") or 0, str(record.get("name", "")))


def make_report(fmt: str, listing: Listing, split: int | None, index: list[dict[str, Any]],
                problems: Problems) -> dict[str, Any]:
    """The index report: a dict of counts and problem lists, deterministically ordered.

    Returns:
        ``format``, ``layout``, ``found``, ``split`` (None where the format has no numbered
        splits), ``n_classes``, ``counts`` (role -> videos, plus ``total``), ``per_class`` (class
        -> ``label`` and role counts), one list per ``PROBLEM_KEYS`` (sorted), ``problem_counts``
        (key -> length), ``n_problems``, and the format's own entries (``Listing.extra``).
    """
    counts = dict.fromkeys(ROLES, 0)
    per_class = {name: {"label": label, **dict.fromkeys(ROLES, 0)} for label, name in enumerate(listing.classes)}
    for record in index:
        counts[record["role"]] += 1
        per_class[record["class"]][record["role"]] += 1
    counts["total"] = len(index)
    report: dict[str, Any] = {"format": fmt, "layout": listing.layout, "found": listing.found, "split": split,
                              "n_classes": len(listing.classes), "counts": counts, "per_class": per_class}
    for key in PROBLEM_KEYS:
        report[key] = sorted(problems.lists[key], key=_record_order)
        if report[key]:
            log.warning("%d %s, first: %s", len(report[key]), key, report[key][0])
    report["problem_counts"] = {key: len(report[key]) for key in PROBLEM_KEYS}
    report["n_problems"] = sum(report["problem_counts"].values())
    report.update(listing.extra)
    return report


def summarize(report: dict[str, Any]) -> str:
    """One line for the stage's stdout: format, counts per role and number of problems."""
    counts = report["counts"]
    roles = ", ".join(f"{counts[role]} {role}" for role in ROLES)
    split = f", split {report['split']}" if report.get("split") is not None else ""
    return (f"{report['format']} ({report['layout']}){split}, {report['n_classes']} classes: {roles}; "
            f"{report['n_problems']} problems")
