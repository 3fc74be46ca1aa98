"""``bench index``: the ``index`` stage's cost on a generated dataset tree, first run and re-run.

Indexing hashes every video's bytes (the index's ``sha256`` is what the frames stage's caches
follow). On a generated video-list tree (``--videos`` files of ``--bytes`` each) this times
``datasets.index.build_index`` three ways, each on a fresh ``HashCache``-less or cached run:
one hashing thread (the lower limit of the old stage), every usable core (the stage), and a
re-index of the unchanged tree through the hash cache (files of unchanged size and mtime are
not read again). ``--drop-cache`` evicts the files from the page cache before each cold run
(``posix_fadvise``), so that the disk, not the memory, is read. Prints files/s and MB/s, and
the time those rates give Kinetics-400 (about 240,000 videos, 450 GB).
"""

from __future__ import annotations

import argparse
import os
import shutil
import statistics
import tempfile
import time
from pathlib import Path
from typing import Any

from twostream.runtime.config import usable_cores
from twostream.ingest.datasets.common import HashCache
from twostream.ingest.datasets.index import build_index

KINETICS_VIDEOS, KINETICS_BYTES = 240_000, 450e9  # Kinetics-400 as docs/data.md budgets it
PER_FOLDER = 1000  # files per folder of the generated tree


def add_arguments(sub: argparse._SubParsersAction) -> None:
    """The ``index`` subcommand."""
    p = sub.add_parser("index", help="index stage on a generated tree: files/s and MB/s hashing on one thread, "
                                     "on every core, and re-indexing through the hash cache")
    p.add_argument("--videos", type=int, default=20_000, help="files in the generated tree")
    p.add_argument("--bytes", type=int, default=4096, help="bytes per file")
    p.add_argument("--classes", type=int, default=400, help="labels the list spreads the files over")
    p.add_argument("--repeats", type=int, default=3, help="timed runs of each kind; medians are reported")
    p.add_argument("--drop-cache", action="store_true", help="evict the files from the page cache before "
                                                             "each cold run (read from disk)")
    p.add_argument("--keep", metavar="DIR", help="generate into DIR (kept); default a temporary folder")
    p.set_defaults(func=run)


def generate(root: Path, videos: int, size: int, classes: int) -> None:
    """A video-list tree: ``clips/NNN/NNNNNNN.mp4`` files of ``size`` distinct bytes, 4 in 5 in train.txt."""
    block = os.urandom(size)
    lines = {"train": [], "test": []}
    for i in range(videos):
        relative = f"clips/{i // PER_FOLDER:03d}/{i:07d}.mp4"
        path = root / relative
        if i % PER_FOLDER == 0:
            path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(i.to_bytes(8, "little") + block[8:])
        lines["test" if i % 5 == 4 else "train"].append(f"{relative} {i % classes}\n")
    for role, rows in lines.items():
        (root / f"{role}.txt").write_text("".join(rows))


def evict(root: Path) -> None:
    """Drop the tree's files from the page cache (``POSIX_FADV_DONTNEED``; they are clean)."""
    for path in (root / "clips").rglob("*.mp4"):
        fd = os.open(path, os.O_RDONLY)
        try:
            os.posix_fadvise(fd, 0, 0, os.POSIX_FADV_DONTNEED)
        finally:
            os.close(fd)


def timed(root: Path, workers: int, cache_path: Path | None, drop: bool) -> tuple[float, dict[str, int]]:
    """Seconds of one ``build_index`` of the tree, and what it hashed."""
    if drop:
        evict(root)
    cache = HashCache(cache_path) if cache_path is not None else None
    hashing: dict[str, int] = {}
    start = time.perf_counter()
    build_index(str(root), fmt="list", val_fraction=0.2, cache=cache, workers=workers, hashing=hashing)
    seconds = time.perf_counter() - start
    if cache is not None:
        cache.close()
    return seconds, hashing


def run(args: argparse.Namespace) -> dict[str, Any]:
    """Generate the tree, time the three kinds of runs, and extrapolate to Kinetics-400."""
    work = Path(args.keep) if args.keep else Path(tempfile.mkdtemp(prefix="bench-index-"))
    root = work / "tree"
    try:
        start = time.perf_counter()
        if not (root / "train.txt").is_file():
            generate(root, args.videos, args.bytes, args.classes)
        generated_s = time.perf_counter() - start
        cores = usable_cores()
        one, all_, again = [], [], []
        for r in range(args.repeats):
            one.append(timed(root, 1, None, args.drop_cache)[0])
            cache = work / f"cache-{r}.sqlite"
            seconds, first = timed(root, cores, cache, args.drop_cache)
            all_.append(seconds)
            seconds, second = timed(root, cores, cache, False)
            again.append(seconds)
            assert first["hashed"] == args.videos and second["hashed"] == 0, (first, second)
        total = args.videos * args.bytes
        rates = {}
        for name, runs in (("one_thread", one), ("all_cores", all_), ("reindex_cached", again)):
            s = statistics.median(runs)
            rates[name] = {"seconds": [round(t, 3) for t in runs], "files_per_s": round(args.videos / s, 1),
                           "mb_per_s": round(total / s / 1e6, 1)}
        cold = rates["all_cores"]
        return {"bench": "index", "videos": args.videos, "bytes_per_video": args.bytes, "cores": cores,
                "drop_cache": args.drop_cache, "generated_seconds": round(generated_s, 1), **rates,
                "speedup_all_cores": round(statistics.median(one) / statistics.median(all_), 2),
                # small files give the per-file rate, large ones the byte rate: Kinetics costs about the larger
                "kinetics400_hours": {"at_this_file_rate": round(KINETICS_VIDEOS / cold["files_per_s"] / 3600, 2),
                                      "at_this_byte_rate": round(KINETICS_BYTES / (cold["mb_per_s"] * 1e6) / 3600, 2)},
                "kinetics400_reindex_seconds": round(KINETICS_VIDEOS / rates["reindex_cached"]["files_per_s"], 1)}
    finally:
        if not args.keep:
            shutil.rmtree(work, ignore_errors=True)
