"""The bundled demo dataset as files: names, splits, each dataset format's layout, and its stamp.

``render_dataset`` renders every video (``demo.render_video``, one task per video, so the
bytes do not depend on the number of worker processes) and writes the split or list files of
``demo_data.layout``. The videos are the same renders whatever the layout; only where they go
and which files list them differ:

- ``hmdb51``: ``videos/<class>/<name>.avi`` and ``splits/<class>_test_split{1,2,3}.txt``
  (tags 1 train, 2 test, 0 unused; about 60 / 30 / 10 %), as HMDB-51.
- ``ucf101``: ``UCF-101/<Class>/v_<Class>_gGG_cCC.avi`` (``Class`` in CamelCase; groups of
  ``GROUP`` consecutive videos) and ``ucfTrainTestlist/`` with ``classInd.txt``,
  ``trainlist0N.txt`` and ``testlist0N.txt`` (CRLF), each group train or test as a whole
  (unused groups train: UCF101 lists every video).
- ``folders``: ``train/<class name>/`` and ``val/<class name>/`` (class names with spaces, as
  Kinetics spells them) for split 1's train and test videos; unused ones are not written.
- ``list``: ``videos/<class>/<name>.avi`` with ``train.txt`` and ``test.txt`` (``path label``,
  labels in the demo's own class order, not sorted) and ``classes.txt``; unused ones not written.

``expected_roles`` says, per written video, the class, label and role the index must find.
A rendered folder carries a stamp (``stamp``: the params, the seed and ``VERSION``) and the
hash of every file, so that ``demo_data`` keeps a folder that ``holds`` the same demo.
"""

from __future__ import annotations

import hashlib
import json
import logging
import math
import multiprocessing
import os
import time
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path
from typing import Any

import cv2
import numpy as np
from tqdm import tqdm

from twostream.runtime.config import DemoConfig, resolve_workers
from twostream.ingest.demo import class_names, render_video, video_seeds
from twostream.ingest.videowriter import write_video

log = logging.getLogger(__name__)

# The version of the demo's bytes for given params: bump it with any change of code or library
# that changes a rendered video or a list file (tests/test_golden.py fails until it is bumped).
# A folder that holds this version's demo for the same params is kept (``stamp``), not re-rendered.
VERSION = 1
STAMP_NAME = ".demo_stamp.json"  # in the dataset root: the stamp and every file's SHA-256

_TITLES = ("Backyard_Practice", "Gym_Session", "Family_Video", "Park_Day", "Home_Clip", "Tutorial",
           "Old_Tape", "Summer_Camp", "Training", "My_Video")
_ODD_TITLES = ("#{k}_Best_Ever!!_(HD)_[NEW]_Tom&Jerry+Co;_~fun@home clip",
               "[Re]_Take_{k}_(slow)_#1!_rock&roll+more;_~me@park vid",
               "Wow!_{k}_~@#_[raw]_(part+1);_A&B home movie")


def video_name(cls: str, video_index: int, ss: np.random.SeedSequence) -> str:
    """HMDB-like file name ``<Title>_<class>_<k>.avi``.

    Every 7th title holds the characters real HMDB-51 names hold (``! ( ) # [ ] & + ; ~ @``)
    plus a space; no name has a ``/`` or starts with ``-``.
    """
    rng = np.random.default_rng(ss)
    k = int(rng.integers(1, 100))
    if video_index % 7 == 3:
        title = _ODD_TITLES[int(rng.integers(len(_ODD_TITLES)))].format(k=k)
    else:
        title = f"{_TITLES[int(rng.integers(len(_TITLES)))]}_{k:02d}"
    return f"{title}_{cls}_{video_index}.avi"


def split_tags(n: int, cfg: DemoConfig, seed: int, class_index: int) -> list[list[int]]:
    """Tags (1 train, 2 test, 0 unused) of a class's ``n`` videos in splits 1, 2 and 3.

    Each split is its own seeded shuffle; a split that repeats an earlier one is drawn
    again when the class has enough distinct assignments.

    Returns:
        Three lists of ``n`` tags, in video order.
    """
    n_train = min(n, math.floor(cfg.train_fraction * n + 0.5))
    n_test = min(n - n_train, math.floor(cfg.test_fraction * n + 0.5))
    base = np.array([1] * n_train + [2] * n_test + [0] * (n - n_train - n_test))
    distinct = math.comb(n, n_train) * math.comb(n - n_train, n_test)
    splits: list[list[int]] = []
    for split in (1, 2, 3):
        rng = np.random.default_rng(np.random.SeedSequence([seed, class_index, 0x5B117, split]))
        tags = rng.permutation(base).tolist()
        while tags in splits and distinct > len(splits):
            tags = rng.permutation(base).tolist()
        splits.append(tags)
    return splits


LAYOUTS = ("hmdb51", "ucf101", "folders", "list")
GROUP = 2  # ucf101: videos of one group (one "source video"); small, so that a tiny demo has several
TAG_ROLES = {1: "train", 2: "test", 0: "unused"}


def ucf_class(cls: str) -> str:
    """``sit_down`` -> ``SitDown``, as UCF101 spells its classes."""
    return "".join(word.capitalize() for word in cls.split("_"))


def folder_class(cls: str) -> str:
    """``sit_down`` -> ``sit down``, as Kinetics spells its classes."""
    return cls.replace("_", " ")


def group_count(n: int) -> int:
    """Groups of the ucf101 layout for ``n`` videos of a class."""
    return math.ceil(n / GROUP)


def relative_path(layout: str, cls: str, vi: int, name: str, tag: int) -> str | None:
    """Where video ``vi`` (HMDB-like ``name``, split-1 ``tag``) of class ``cls`` goes, or None
    when the layout leaves it out (unused videos of ``folders`` and ``list``)."""
    if layout == "hmdb51":
        return f"videos/{cls}/{name}"
    if layout == "ucf101":
        c = ucf_class(cls)
        return f"UCF-101/{c}/v_{c}_g{vi // GROUP + 1:02d}_c{vi % GROUP + 1:02d}.avi"
    if layout == "folders":
        return None if tag == 0 else f"{'train' if tag == 1 else 'val'}/{folder_class(cls)}/{name}"
    if layout == "list":
        return None if tag == 0 else f"videos/{cls}/{name}"
    raise ValueError(f"demo_data.layout must be one of {', '.join(LAYOUTS)}; got {layout!r}")


def _write(path: Path, lines: list[str], newline: str = "\n") -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "w", encoding="utf-8", newline="") as f:
        f.writelines(line + newline for line in lines)


def write_hmdb_splits(out: str | os.PathLike, cls: str, names: list[str], tags: list[list[int]]) -> None:
    """Write ``<out>/splits/<cls>_test_split{1,2,3}.txt`` (lines ``name.avi <tag> ``, sorted by name)."""
    for split, split_tags in enumerate(tags, start=1):
        _write(Path(out) / "splits" / f"{cls}_test_split{split}.txt",
               sorted(f"{name} {tag} " for name, tag in zip(names, split_tags)))


def write_lists(out: str | os.PathLike, layout: str, classes: list[str], paths: dict[str, list[str | None]],
                names: dict[str, list[str]], tags: dict[str, list[list[int]]],
                group_tags: dict[str, list[list[int]]]) -> None:
    """Write the split or list files of ``layout`` for the written videos.

    Args:
        out: the dataset root.
        classes: demo class names in demo order.
        paths: per class, each video's ``relative_path`` (None: not written).
        names: per class, each video's HMDB-like file name.
        tags: per class, each video's tag in splits 1, 2, 3 (``demo.split_tags``).
        group_tags: per class, each ucf101 group's tag in splits 1, 2, 3.
    """
    out = Path(out)
    if layout == "hmdb51":
        for cls in classes:
            write_hmdb_splits(out, cls, names[cls], tags[cls])
    elif layout == "ucf101":
        ids = {ucf_class(cls): i for i, cls in enumerate(classes, start=1)}
        _write(out / "ucfTrainTestlist" / "classInd.txt", [f"{i} {c}" for c, i in ids.items()], "\r\n")
        for split in (1, 2, 3):
            train, test = [], []
            for cls in classes:
                for vi, path in enumerate(paths[cls]):
                    listed = path.split("/", 1)[1]
                    if group_tags[cls][split - 1][vi // GROUP] == 2:
                        test.append(listed)
                    else:
                        train.append(f"{listed} {ids[ucf_class(cls)]}")
            _write(out / "ucfTrainTestlist" / f"trainlist0{split}.txt", train, "\r\n")
            _write(out / "ucfTrainTestlist" / f"testlist0{split}.txt", test, "\r\n")
    elif layout == "list":
        rows = {"train": [], "test": []}
        for label, cls in enumerate(classes):
            for path, tag in zip(paths[cls], tags[cls][0]):
                if path is not None:
                    rows[TAG_ROLES[tag]].append(f"{path} {label}")
        for role, lines in rows.items():
            _write(out / f"{role}.txt", lines)
        _write(out / "classes.txt", list(classes))


def _expected(layout: str, classes: list[str], paths: dict[str, list[str | None]],
                   tags: dict[str, list[list[int]]], group_tags: dict[str, list[list[int]]]) -> dict[str, dict]:
    """Per written video (its path relative to the root): the ``class``, ``label`` and split-1 ``role``
    the index must give it, ``train`` standing for train or val (val is carved from train)."""
    spelled = {cls: {"ucf101": ucf_class, "folders": folder_class}.get(layout, str)(cls) for cls in classes}
    order = sorted(spelled.values()) if layout != "list" else [spelled[c] for c in classes]
    expected = {}
    for cls in classes:
        for vi, path in enumerate(paths[cls]):
            if path is None:
                continue
            tag = group_tags[cls][0][vi // GROUP] if layout == "ucf101" else tags[cls][0][vi]
            role = "test" if tag == 2 else "unused" if (tag == 0 and layout == "hmdb51") else "train"
            expected[path] = {"class": spelled[cls], "label": order.index(spelled[cls]), "role": role}
    return expected


def _check(cfg: DemoConfig, seed: int) -> None:
    """Reject params that cannot give a valid dataset, naming the value and what is allowed."""
    class_names(cfg.classes)
    if cfg.videos_per_class < 1:
        raise ValueError(f"demo_data.videos_per_class must be >= 1; got {cfg.videos_per_class}")
    if cfg.fps <= 0 or cfg.seconds <= 0 or round(cfg.seconds * cfg.fps) < 2:
        raise ValueError(f"demo_data needs seconds * fps >= 2 frames; got {cfg.seconds} s at {cfg.fps} fps")
    if cfg.width % 2 or cfg.height % 2 or min(cfg.width, cfg.height) < 32:
        raise ValueError(f"demo_data width and height must be even and >= 32; got {cfg.width}x{cfg.height}")
    fractions = (cfg.train_fraction, cfg.test_fraction)
    if min(fractions) < 0 or sum(fractions) > 1:
        raise ValueError(f"demo_data train_fraction and test_fraction must be >= 0 with a sum <= 1; got {fractions}")
    if seed < 0:
        raise ValueError(f"base.seed must be >= 0; got {seed}")


def _init_worker() -> None:
    cv2.setNumThreads(1)  # one process per core already


def _render_task(task: tuple) -> float:
    """Render and write one video; returns the seconds it took."""
    path, cls, class_index, video_index, cfg, seed = task
    start = time.perf_counter()
    frames = render_video(cls, cfg, video_seeds(seed, class_index, video_index)[1])
    write_video(path, frames, cfg.fps, codec="xvid")
    return time.perf_counter() - start


def render_dataset(out_dir: str | os.PathLike, cfg: DemoConfig, seed: int, progress: bool = True) -> dict:
    """Render the demo dataset in the layout ``cfg.layout`` , byte-identical for the
    same params.

    Args:
        out_dir: dataset root; the layout's folders and list files are created in it.
        cfg: the ``demo_data`` params.
        seed: ``base.seed``.
        progress: show a tqdm bar.

    Returns:
        Summary: ``classes`` (names), ``videos_per_class``, ``videos`` (written), ``frames_per_video``,
        ``layout``, ``expected`` (per written video, the class, label and role the index must find:
        ``expected_roles``), ``workers`` and ``seconds`` (wall time).

    Raises:
        ValueError: on params outside their allowed range (see ``_check``).
    """
    out, plan = Path(out_dir), layout_plan(cfg, seed)
    names, files, tags, group_tags, paths = plan["classes"], plan["files"], plan["tags"], plan["group_tags"], plan["paths"]
    n = cfg.videos_per_class
    tasks = [(str(out / path), cls, ci, vi, cfg, seed) for ci, cls in enumerate(names)
             for vi, path in enumerate(paths[cls]) if path is not None]
    for task in tasks:
        Path(task[0]).parent.mkdir(parents=True, exist_ok=True)
    workers = max(1, min(resolve_workers(cfg.workers), len(tasks)))
    start = time.perf_counter()
    with tqdm(total=len(tasks), desc="demo_data", unit="video", disable=not progress) as bar:
        if workers == 1:
            for task in tasks:
                _render_task(task)
                bar.update()
        else:
            # spawn, not fork: a fork of a process whose OpenCV thread pool has run can hang;
            # an executor (unlike Pool) raises instead of hanging when a worker dies
            context = multiprocessing.get_context("spawn")
            with ProcessPoolExecutor(workers, mp_context=context, initializer=_init_worker) as pool:
                for _ in pool.map(_render_task, tasks, chunksize=4):
                    bar.update()
    write_lists(out, cfg.layout, names, paths, files, tags, group_tags)
    seconds = time.perf_counter() - start
    log.info("rendered %d videos of %d classes in %.1f s with %d workers", len(tasks), len(names), seconds, workers)
    return {"classes": names, "videos_per_class": n, "videos": len(tasks), "frames_per_video": round(cfg.seconds * cfg.fps),
            "layout": cfg.layout, "expected": expected_roles(cfg, seed), "workers": workers, "seconds": seconds}


def layout_plan(cfg: DemoConfig, seed: int) -> dict[str, Any]:
    """What ``render_dataset`` writes, without rendering: ``classes`` (demo order), per class the
    videos' HMDB-like ``files`` names, their ``tags`` in splits 1-3, the ``group_tags`` of the
    ucf101 layout and each video's ``paths`` in the layout (None: not written).

    Raises:
        ValueError: on params outside their allowed range (see ``_check``).
    """
    _check(cfg, seed)
    names, n = class_names(cfg.classes), cfg.videos_per_class
    files = {cls: [video_name(cls, vi, video_seeds(seed, ci, vi)[0]) for vi in range(n)] for ci, cls in enumerate(names)}
    tags = {cls: split_tags(n, cfg, seed, ci) for ci, cls in enumerate(names)}
    group_tags = {cls: split_tags(group_count(n), cfg, seed, ci) for ci, cls in enumerate(names)}
    paths = {cls: [relative_path(cfg.layout, cls, vi, files[cls][vi], tags[cls][0][vi]) for vi in range(n)]
             for cls in names}
    return {"classes": names, "files": files, "tags": tags, "group_tags": group_tags, "paths": paths}


def expected_roles(cfg: DemoConfig, seed: int) -> dict[str, dict[str, Any]]:
    """Per video the demo writes (its path relative to the root): the ``class``, ``label`` and split-1
    ``role`` the index must give it ."""
    plan = layout_plan(cfg, seed)
    return _expected(cfg.layout, plan["classes"], plan["paths"], plan["tags"], plan["group_tags"])


def stamp(cfg: DemoConfig, seed: int) -> str:
    """What decides the demo's bytes: its params (``workers`` aside), the seed and ``VERSION``."""
    decisive = {k: v for k, v in vars(cfg).items() if k != "workers"}
    text = json.dumps({"params": decisive, "seed": seed, "version": VERSION}, sort_keys=True)
    return hashlib.sha256(text.encode()).hexdigest()


def _file_hashes(root: Path) -> dict[str, str]:
    return {p.relative_to(root).as_posix(): hashlib.sha256(p.read_bytes()).hexdigest()
            for p in sorted(root.rglob("*")) if p.is_file() and p.name != STAMP_NAME}


def write_stamp(root: str | os.PathLike, key: str) -> None:
    """Record in ``root`` the stamp ``key`` and the SHA-256 of every file the demo holds."""
    root = Path(root)
    (root / STAMP_NAME).write_text(json.dumps({"stamp": key, "files": _file_hashes(root)}, indent=1,
                                              sort_keys=True) + "\n", encoding="utf-8")


def holds(root: str | os.PathLike, key: str) -> bool:
    """Whether ``root`` holds the demo of stamp ``key`` untouched: the same stamp, and exactly the
    files it recorded with their bytes (an edited, added or removed file means no)."""
    path = Path(root) / STAMP_NAME
    if not path.is_file():
        return False
    try:
        doc = json.loads(path.read_text(encoding="utf-8"))
    except ValueError:
        return False
    return doc.get("stamp") == key and doc.get("files") == _file_hashes(Path(root))

