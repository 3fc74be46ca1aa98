"""Benchmark ``scale``: what disk and time the data half of the pipeline costs, extrapolated
to HMDB-51 split 1 and Kinetics-400.

1. A sample dataset in the HMDB-51 layout (``<root>/videos/<class>/<name>.avi`` and
   ``<root>/splits/``, written with the demo's name and split helpers) is generated in a
   temp folder: 320x240 XviD at 30 fps, lengths log-normal around a median of 3 s and
   clipped to 1..10 s like HMDB's. The content is made to compress like real footage, not
   like flat shapes: a smooth-noise texture (octaves of upsampled random noise) seen
   through a panning, zooming camera, a few textured objects moving over it, and sensor
   noise. ``source_bytes_per_frame`` checks it against real HMDB-51 XviD (~3 KiB a frame).
2. The repository's pipeline is copied as the tests' ``repo_copy`` fixture copies it (the
   files git knows of, into a fresh git repository), ``data.root`` is pointed at the sample,
   and the data stages run one by one with ``dvc repro -s <stage>``, each inside a small
   wrapper process that reports its wall time and the peak RSS of the largest process under
   it (``RUSAGE_CHILDREN``, with the wrapper as child subreaper so that pool workers whose
   parent exited first are reaped, and counted, there).
3. Per stage: the bytes of its ``dvc.yaml`` outs in the workspace (a hardlinked inode
   counted once) and the bytes DVC's cache gained (inodes already counted in the workspace
   are not counted again, so hardlink and symlink caches are not counted twice). Reflinks
   share blocks, not inodes: they cannot be seen from here, and a reflinked cache is
   counted as if it were a copy.

Bytes and seconds are scaled to the larger datasets by decoded source frames, except each
stage's ``fixed_seconds`` (the time of a second ``dvc repro -s`` with nothing changed: DVC's
start and checks), which is counted once. A pool's start and a stage's imports still scale,
so a small sample overstates the hours. The stages run the copy's own ``twostream`` (it is
put first on ``PYTHONPATH``), not an editable install of the tree the benchmark came from.
"""

from __future__ import annotations

import argparse
import json
import logging
import math
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any, Iterable

import cv2
import numpy as np
import yaml

from twostream.runtime.config import DemoConfig, usable_cores
from twostream.ingest.demo import video_seeds
from twostream.ingest.demoset import split_tags, video_name
from twostream.ingest.demoset import write_hmdb_splits
from twostream.runtime.pools import ordered_map, pool_context
from twostream.ingest.videowriter import write_video

log = logging.getLogger(__name__)

REPO = Path(__file__).resolve().parents[2]  # the repository whose pipeline is copied
DATA_STAGES = ("index", "frames", "resample", "flow", "sg3i", "shards")
SOURCE = {"width": 320, "height": 240, "fps": 30}  # HMDB-51's usual format
WORKING_SIZE = {"frames.width": 340, "frames.height": 256}  # HMDB's working size (TSN's)
SPLIT_FRACTIONS = (0.7, 0.3)  # train, test per class, as HMDB-51's 70 / 30 (no unused videos)
BYTES_PER_FRAME_GOAL = 12288  # the whole data half, per decoded source frame
# name -> (videos, decoded source frames, where the frame count comes from)
TARGETS = {
    "hmdb51_split1": (5_100, 485_000, "measured on real footage (5,100 videos x ~95 frames)"),
    "kinetics400": (240_000, 240_000 * 10 * 25, "assumed: 240,000 videos x 10 s x 25 fps"),
}
TEXTURE = 512  # side of the periodic background texture the camera looks at
OBJECT = 128  # side of an object's texture and mask
NOISE_SIGMA = 2.0  # sensor noise, grey levels

# Runs argv[2:] with its output appended to argv[1]; prints {"rc", "seconds", "maxrss_kib",
# "subreaper"}. As child subreaper it inherits orphans (a fork server outliving the stage) and
# reaps them, so that RUSAGE_CHILDREN covers every process of the stage.
WRAPPER = r"""
import ctypes, json, os, resource, subprocess, sys, time
try:
    subreaper = ctypes.CDLL(None, use_errno=True).prctl(36, 1, 0, 0, 0) == 0  # PR_SET_CHILD_SUBREAPER
except (AttributeError, OSError):  # not Linux: orphans go to init and are not counted
    subreaper = False
start = time.perf_counter()
with open(sys.argv[1], "ab") as out:
    rc = subprocess.run(sys.argv[2:], stdout=out, stderr=subprocess.STDOUT).returncode
seconds = time.perf_counter() - start
deadline = time.monotonic() + 30
while time.monotonic() < deadline:
    try:
        if os.waitpid(-1, os.WNOHANG)[0] == 0:
            time.sleep(0.05)
    except ChildProcessError:
        break
rss = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss
print(json.dumps({"rc": rc, "seconds": seconds, "maxrss_kib": rss, "subreaper": subreaper}))
"""


def smooth_noise(rng: np.random.Generator, side: int, cells: Iterable[int], beta: float) -> np.ndarray:
    """``(side, side) float32`` random texture, zero mean, unit std, periodic in both axes.

    Args:
        rng: random source.
        side: size in pixels; every cell size must divide it.
        cells: grid spacings in pixels of the octaves: random values on each grid, upsampled
            bicubically and summed with weight ``spacing ** beta``.
        beta: 1 gives natural images' 1/f amplitude spectrum; lower is busier.
    """
    out = np.zeros((side, side), np.float32)
    for cell in cells:
        assert side % cell == 0, (side, cell)
        grid = np.pad(rng.standard_normal((side // cell,) * 2).astype(np.float32), 2, mode="wrap")
        up = cv2.resize(grid, (grid.shape[1] * cell, grid.shape[0] * cell), interpolation=cv2.INTER_CUBIC)
        out += cell ** beta * up[2 * cell:2 * cell + side, 2 * cell:2 * cell + side]
    return (out - out.mean()) / out.std()


def _background(rng: np.random.Generator, level: float) -> np.ndarray:
    """``(TEXTURE, TEXTURE, 3) float32`` RGB: a busy luma texture, hard-edged regions, soft colour."""
    luma = smooth_noise(rng, TEXTURE, (2, 4, 8, 16, 32, 64, 128), beta=rng.uniform(0.25, 0.45))
    luma += 0.5 * np.sign(smooth_noise(rng, TEXTURE, (32, 64, 128), beta=1.0))  # walls, furniture
    u, v = (0.3 * smooth_noise(rng, TEXTURE, (32, 64, 128), beta=1.0) for _ in range(2))
    return level + 35 * np.stack([luma + u, luma - 0.5 * (u + v), luma + v], axis=-1)


def _camera(rng: np.random.Generator, n: int) -> np.ndarray:
    """``(n, 2, 3) float32`` maps from frame to texture pixels: a drifting pan and a slow zoom."""
    t = np.arange(n)
    drift = rng.uniform(0.3, 2.5, 2) * rng.choice([-1, 1], 2) * (1.0, 0.4)
    wobble = [amp * np.sin(t / rng.uniform(10, 40) + rng.uniform(0, 2 * np.pi)) for amp in (1.0, 0.6)]
    x, y = np.cumsum(drift[0] + wobble[0]), np.cumsum(drift[1] + wobble[1])
    zoom = 1 + 0.08 * np.sin(t / rng.uniform(30, 90) + rng.uniform(0, 2 * np.pi))
    w, h = SOURCE["width"], SOURCE["height"]
    maps = np.zeros((n, 2, 3), np.float32)
    maps[:, 0, 0] = maps[:, 1, 1] = zoom
    maps[:, 0, 2], maps[:, 1, 2] = x + (1 - zoom) * w / 2, y + (1 - zoom) * h / 2
    return maps


def _objects(rng: np.random.Generator, level: float, n: int) -> list[tuple[np.ndarray, np.ndarray, np.ndarray]]:
    """2-4 moving objects, each ``(texture (OBJECT, OBJECT, 3) float32, mask (OBJECT, OBJECT)
    float32 in 0..1, (n, 2, 3) maps from object to frame pixels)``: smooth paths, slow spin."""
    t, half = np.arange(n), OBJECT / 2
    objects = []
    for _ in range(int(rng.integers(2, 5))):
        grey = level + rng.uniform(-60, 60) + 30 * smooth_noise(rng, OBJECT, (2, 4, 8, 16), beta=0.5)
        texture = np.stack([grey * rng.uniform(0.7, 1.3) for _ in range(3)], axis=-1)
        mask = np.zeros((OBJECT, OBJECT), np.float32)
        axes = tuple(int(a) for a in rng.uniform(15, 45, 2))
        cv2.ellipse(mask, (OBJECT // 2, OBJECT // 2), axes, 0, 0, 360, 1.0, -1)
        mask = cv2.GaussianBlur(mask, (0, 0), 1.0)
        start = rng.uniform((0, 0), (SOURCE["width"], SOURCE["height"]))
        path = start + rng.uniform(20, 100, 2) * np.sin(t[:, None] / rng.uniform(20, 80, 2) + rng.uniform(0, 6, 2))
        spin = rng.uniform(-2, 2)
        maps = np.stack([cv2.getRotationMatrix2D((half, half), spin * i, 1.0) for i in t]).astype(np.float32)
        maps[:, :, 2] += path - half
        objects.append((texture, mask, maps))
    return objects


def render_sample_video(ss: np.random.SeedSequence, n_frames: int) -> np.ndarray:
    """One sample video: ``(n_frames, 240, 320, 3) uint8`` RGB, the same for the same seed."""
    rng = np.random.default_rng(ss)
    level = rng.uniform(90, 130)
    background, camera = _background(rng, level), _camera(rng, n_frames)
    objects = _objects(rng, level, n_frames)
    size = (SOURCE["width"], SOURCE["height"])
    frames = np.empty((n_frames, size[1], size[0], 3), np.uint8)
    for i in range(n_frames):
        image = cv2.warpAffine(background, camera[i], size, flags=cv2.INTER_LINEAR | cv2.WARP_INVERSE_MAP,
                               borderMode=cv2.BORDER_WRAP)
        for texture, mask, maps in objects:
            alpha = cv2.warpAffine(mask, maps[i], size, flags=cv2.INTER_LINEAR)[..., None]
            image += alpha * (cv2.warpAffine(texture, maps[i], size, flags=cv2.INTER_LINEAR) - image)
        image += NOISE_SIGMA * rng.standard_normal(image.shape, dtype=np.float32)
        frames[i] = np.clip(image, 0, 255)
    return frames


def _init_worker() -> None:
    cv2.setNumThreads(1)  # one process per core already


def _render_task(task: tuple[str, np.random.SeedSequence, int]) -> int:
    """Render and write one sample video; returns its file size in bytes."""
    path, ss, n_frames = task
    write_video(path, render_sample_video(ss, n_frames), SOURCE["fps"], codec="xvid")
    return os.path.getsize(path)


def sample_lengths(videos: int, seconds: tuple[float, float, float], seed: int) -> list[int]:
    """Frame counts of ``videos`` videos: log-normal seconds (sigma 0.5) around ``seconds[0]``
    (the median), clipped to ``seconds[1]..seconds[2]``, at ``SOURCE["fps"]``; at least 1."""
    median, low, high = seconds
    rng = np.random.default_rng(np.random.SeedSequence([seed, 0x5CA1E]))
    lengths = np.clip(rng.lognormal(math.log(median), 0.5, videos), low, high)
    return [max(1, round(s * SOURCE["fps"])) for s in lengths]


def write_sample(root: Path, videos: int, classes: int, seconds: tuple[float, float, float],
                 seed: int) -> dict[str, Any]:
    """Generate the sample dataset in the HMDB-51 demo layout under ``root``.

    Videos go round-robin over ``classes`` folders ``class_00``...; split files tag 70% of a
    class's videos train and 30% test (three seeded splits).

    Returns:
        ``videos``, ``classes``, ``seconds`` (of video), ``frames`` (written), ``bytes``
        (of the files), ``source_bytes_per_frame`` and ``generate_seconds``.
    """
    if videos < classes or classes < 1:
        raise ValueError(f"--videos must be >= --classes >= 1; got {videos} videos, {classes} classes")
    names = [f"class_{c:02d}" for c in range(classes)]
    lengths, tasks, files = sample_lengths(videos, seconds, seed), [], {c: [] for c in names}
    for v, n_frames in enumerate(lengths):
        ci, vi = v % classes, v // classes
        name_ss, render_ss = video_seeds(seed, ci, vi)
        files[names[ci]].append(video_name(names[ci], vi, name_ss))
        (root / "videos" / names[ci]).mkdir(parents=True, exist_ok=True)
        tasks.append((str(root / "videos" / names[ci] / files[names[ci]][-1]), render_ss, n_frames))
    start = time.perf_counter()
    sizes = list(ordered_map(_render_task, tasks, min(usable_cores(), len(tasks)), context=pool_context(),
                             initializer=_init_worker, name=lambda task: task[0]))
    for ci, cls in enumerate(names):
        cfg = DemoConfig(classes=classes, videos_per_class=len(files[cls]), seconds=seconds[0],
                         width=SOURCE["width"], height=SOURCE["height"], fps=SOURCE["fps"],
                         train_fraction=SPLIT_FRACTIONS[0], test_fraction=SPLIT_FRACTIONS[1], layout="hmdb51",
                         workers=0)
        write_hmdb_splits(root, cls, files[cls], split_tags(len(files[cls]), cfg, seed, ci))
    frames = sum(lengths)
    return {"videos": videos, "classes": classes, "seconds": round(frames / SOURCE["fps"], 1),
            "frames": frames, "frames_per_video": lengths, "bytes": sum(sizes),
            "source_bytes_per_frame": round(sum(sizes) / frames, 1),
            "generate_seconds": round(time.perf_counter() - start, 1)}


def _env(code: Path) -> dict[str, str]:
    """Environment whose PATH starts with this interpreter's bin dir (stages call ``python``) and
    whose ``twostream`` is the one in ``code``, not an editable install of another tree."""
    env = dict(os.environ, DVC_NO_ANALYTICS="1", PYTHONPATH=str(code))
    env["PATH"] = str(Path(sys.executable).parent) + os.pathsep + env.get("PATH", "")
    return env


def _run(cmd: list[str], cwd: Path) -> str:
    """Run a command in ``cwd`` (its ``twostream`` first on the path); returns its stdout.

    Raises:
        RuntimeError: if it fails, with the end of its output.
    """
    proc = subprocess.run(cmd, cwd=cwd, env=_env(cwd), capture_output=True, text=True)
    if proc.returncode != 0:
        raise RuntimeError(f"{' '.join(cmd)} exited {proc.returncode}:\n{proc.stdout[-3000:]}{proc.stderr[-3000:]}")
    return proc.stdout


def _cache_type(repo: Path) -> str:
    """DVC's ``cache.type`` in ``repo`` (its .dvc/config), or ``copy``, DVC's default."""
    proc = subprocess.run([sys.executable, "-m", "dvc", "config", "cache.type"], cwd=repo, capture_output=True,
                          text=True)
    return proc.stdout.strip() or "copy"


def copy_pipeline(dest: Path, cache_type: str | None = None) -> Path:
    """Copy the files git knows of in ``REPO`` (tracked or new, not ignored) into a fresh git
    repository at ``dest``, without ``dvc.lock``, as the tests' ``repo_copy`` fixture does, and
    set DVC's ``cache.type`` there to ``cache_type`` (None keeps the repository's own, .dvc/config)."""
    if not (REPO / "dvc.yaml").is_file():
        raise FileNotFoundError(f"{REPO} holds no dvc.yaml: scale needs the repository, not an installed package")
    listed = _run(["git", "ls-files", "-z", "--cached", "--others", "--exclude-standard"], REPO).split("\0")
    for rel in filter(None, listed):
        if rel != "dvc.lock" and (REPO / rel).is_file():  # a file deleted in the working tree is skipped
            (dest / rel).parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(REPO / rel, dest / rel)
    _run(["git", "init", "-q"], dest)
    if cache_type:
        _run([sys.executable, "-m", "dvc", "config", "cache.type", cache_type], dest)
    return dest


def parse_set(text: str, params: dict[str, Any]) -> tuple[list[str], Any]:
    """``section.key=value`` (or ``name=value`` for a top-level value) -> (key path, YAML value).

    Raises:
        ValueError: if the text has no ``=``, names a key params.yaml lacks, or sets data.root.
    """
    key, sep, value = text.partition("=")
    parts = key.strip().split(".")
    node = params
    for part in parts[:-1]:
        node = node.get(part) if isinstance(node, dict) else None
    if not sep or not isinstance(node, dict) or parts[-1] not in node:
        raise ValueError(f"--set takes section.key=value with a key of params.yaml; got {text!r}")
    if parts == ["data", "root"]:
        raise ValueError("--set data.root is not allowed: data.root is the generated sample")
    return parts, yaml.safe_load(value)


def write_params(repo: Path, root: Path, sets: list[str]) -> dict[str, Any]:
    """Point the copy's params at the sample: ``data.root``, the working size, then ``sets``.

    Returns:
        The params written.
    """
    params = yaml.safe_load((repo / "params.yaml").read_text())
    changes = [(["data", "root"], str(root))]
    changes += [(key.split("."), value) for key, value in WORKING_SIZE.items()]
    changes += [parse_set(text, params) for text in sets]
    for parts, value in changes:
        node = params
        for part in parts[:-1]:
            node = node[part]
        node[parts[-1]] = value
    (repo / "params.yaml").write_text(yaml.safe_dump(params, sort_keys=False))
    return params


def stage_outs(repo: Path, stage: str) -> list[Path]:
    """The ``outs`` of ``stage`` in the copy's ``dvc.yaml`` (plain or with options)."""
    outs = yaml.safe_load((repo / "dvc.yaml").read_text())["stages"][stage].get("outs", [])
    return [repo / (out if isinstance(out, str) else next(iter(out))) for out in outs]


def file_inodes(paths: Iterable[Path], follow: bool) -> dict[tuple[int, int], int]:
    """``(device, inode) -> size`` of every file at or under ``paths`` (a linked inode once).

    Args:
        paths: files or folders; missing ones count nothing.
        follow: stat through symlinks (workspace files may link into the cache).
    """
    found = {}
    for top in paths:
        files = [top] if top.is_file() else (Path(d) / f for d, _, fs in os.walk(top) for f in fs)
        for path in files:
            st = path.stat() if follow else path.lstat()
            found[(st.st_dev, st.st_ino)] = st.st_size
    return found


def run_stage(repo: Path, stage: str, log_path: Path) -> dict[str, Any]:
    """``dvc repro -s stage`` inside the wrapper.

    Returns:
        ``seconds``, ``peak_rss_mb``, ``subreaper`` (orphans were counted) and ``ran`` (DVC ran
        the stage's command rather than finding it up to date).

    Raises:
        RuntimeError: if DVC failed (with the end of its output).
    """
    offset = log_path.stat().st_size if log_path.exists() else 0
    cmd = [sys.executable, "-c", WRAPPER, str(log_path), sys.executable, "-m", "dvc", "repro", "-s", stage]
    result = json.loads(_run(cmd, repo).strip().splitlines()[-1])
    with open(log_path, "rb") as f:
        f.seek(offset)
        output = f.read().decode(errors="replace")
    if result["rc"] != 0:
        raise RuntimeError(f"dvc repro -s {stage} exited {result['rc']}; its output ends:\n{output[-4000:]}")
    return {"seconds": round(result["seconds"], 2), "peak_rss_mb": round(result["maxrss_kib"] / 1024, 1),
            "subreaper": result["subreaper"], "ran": f"Running stage '{stage}'" in output}


def measure_stages(repo: Path, log_path: Path) -> tuple[dict[str, dict[str, Any]], bool]:
    """Run the data stages in order.

    Returns:
        Per stage ``seconds``, ``peak_rss_mb``, ``workspace_bytes``, ``cache_bytes`` and
        ``fixed_seconds`` (a second ``dvc repro -s`` with nothing changed: DVC's start and
        checks); and whether every peak RSS covers orphaned descendants too (see ``WRAPPER``).

    Raises:
        RuntimeError: if a stage fails, or runs again with nothing changed.
    """
    cache, counted, stages, subreaper = repo / ".dvc" / "cache", set(), {}, True
    for stage in DATA_STAGES:
        before = set(file_inodes([cache], follow=False))
        result = run_stage(repo, stage, log_path)
        subreaper &= result["subreaper"]
        workspace = file_inodes(stage_outs(repo, stage), follow=True)
        counted |= set(workspace)
        gained = {k: size for k, size in file_inodes([cache], follow=False).items()
                  if k not in before and k not in counted}
        stages[stage] = {"seconds": result["seconds"], "peak_rss_mb": result["peak_rss_mb"],
                         "workspace_bytes": sum(workspace.values()), "cache_bytes": sum(gained.values())}
        log.info("%s: %s", stage, stages[stage])
    for stage, result in stages.items():
        again = run_stage(repo, stage, log_path)
        if again["ran"]:
            raise RuntimeError(f"dvc repro -s {stage} ran the stage again although nothing changed")
        result["fixed_seconds"] = min(result["seconds"], again["seconds"])
    return stages, subreaper


def _read(path: Path) -> dict[str, Any]:
    return json.loads(path.read_text()) if path.is_file() else {}


def _int_at(record: dict[str, Any], *keys: str) -> int | None:
    """The first of ``keys`` (``a.b`` descends) that holds an int in ``record``, else None."""
    for key in keys:
        node: Any = record
        for part in key.split("."):
            node = node.get(part) if isinstance(node, dict) else None
        if isinstance(node, int) and not isinstance(node, bool):
            return node
    return None


def stage_counts(repo: Path) -> dict[str, int]:
    """Videos stored, decoded source frames, resampled frames and flow pairs, from the stages'
    reports, or (for keys a report lacks) from the stores' ``meta.json`` files.

    Raises:
        ValueError: if neither the frames report nor the frames store's meta counts any frame.
    """
    data = repo / "data"
    frames_report = _read(data / "frames_report.json")
    stored = _read(data / "frames" / "meta.json").get("videos", {}).values()
    native = [_int_at(v, "n_frames", "native_frames") or 0 for v in stored]
    videos = _int_at(frames_report, "counts.stored", "stored")
    decoded = _int_at(frames_report, "counts.frames", "counts.decoded_frames", "frames", "decoded_frames")
    decoded = sum(native) if decoded is None else decoded
    if not decoded:
        raise ValueError(f"no decoded frames counted in {data}/frames_report.json or {data}/frames/meta.json")
    pairs = _int_at(_read(data / "flow_report.json"), "pairs", "counts.pairs")
    if pairs is None:
        flow = _read(data / "flow" / "meta.json").get("videos", {}).values()
        pairs = sum(v["pairs"] if isinstance(v["pairs"], int) else len(v["pairs"]) for v in flow)
    resampled = sum(len(v) for v in _read(data / "resample.json").get("videos", {}).values())
    return {"videos": len(native) if videos is None else videos, "decoded_frames": decoded,
            "resampled_frames": resampled, "flow_pairs": pairs}


def _rate(count: int, seconds: float) -> float:
    return round(count / seconds, 2) if seconds > 0 else 0.0


def summarize_stages(stages: dict[str, dict[str, Any]], counts: dict[str, int]) -> dict[str, Any]:
    """Add throughput and bytes per decoded frame to every stage (in place); returns the totals."""
    frames = counts["decoded_frames"]
    for name, stage in stages.items():
        stage["videos_per_s"] = _rate(counts["videos"], stage["seconds"])
        stage["bytes_per_frame"] = round((stage["workspace_bytes"] + stage["cache_bytes"]) / frames, 1)
    stages["frames"]["frames_per_s"] = _rate(frames, stages["frames"]["seconds"])
    stages["flow"]["pairs_per_s"] = _rate(counts["flow_pairs"], stages["flow"]["seconds"])
    workspace = sum(s["workspace_bytes"] for s in stages.values())
    cache = sum(s["cache_bytes"] for s in stages.values())
    per_frame = round((workspace + cache) / frames, 1)
    return {"seconds": round(sum(s["seconds"] for s in stages.values()), 2), "workspace_bytes": workspace,
            "cache_bytes": cache, "bytes": workspace + cache, "bytes_per_frame": per_frame,
            "bytes_per_frame_by_stage": {name: s["bytes_per_frame"] for name, s in stages.items()},
            "bytes_per_frame_goal": BYTES_PER_FRAME_GOAL, "pass": per_frame <= BYTES_PER_FRAME_GOAL}


def extrapolate(stages: dict[str, dict[str, Any]], frames: int) -> dict[str, Any]:
    """GB on disk and hours on this machine's cores of each ``TARGETS`` dataset, per stage and
    in total: the sample's bytes, and its seconds beyond ``fixed_seconds``, scaled by decoded
    source frames; the fixed seconds are added once."""
    out: dict[str, Any] = {"cores": usable_cores(), "basis": "bytes and (seconds - fixed_seconds) x decoded "
                                                              "frames ratio, + fixed_seconds"}
    for name, (videos, target_frames, source) in TARGETS.items():
        scale = target_frames / frames
        per_stage = {}
        for stage, s in stages.items():
            seconds = (s["seconds"] - s["fixed_seconds"]) * scale + s["fixed_seconds"]
            per_stage[stage] = {"gb": round((s["workspace_bytes"] + s["cache_bytes"]) * scale / 1e9, 2),
                                "hours": round(seconds / 3600, 2)}
        out[name] = {"videos": videos, "decoded_frames": target_frames, "frames_from": source,
                     "scale": round(scale, 1), "gb": round(sum(s["gb"] for s in per_stage.values()), 2),
                     "hours": round(sum(s["hours"] for s in per_stage.values()), 2), "stages": per_stage}
    return out


def _used_params(params: dict[str, Any], sets: list[str]) -> dict[str, Any]:
    """The sections the data stages read (``data.root`` left out: it is a temp folder)."""
    used = {name: params[name] for name in ("base", "frames", "resample", "clip", "flow", "shards")}
    used["data"] = {k: v for k, v in params["data"].items() if k != "root"}
    return {**used, "set": sets}


def bench_scale(args: argparse.Namespace) -> dict[str, Any]:
    """Generate the sample, run the data stages through DVC in a copy of the pipeline, measure.

    ``args``: ``videos``, ``classes``, ``seconds`` ((median, min, max)), ``seed``, ``set``
    (``key=value`` strings), ``cache_type`` and ``keep`` (a folder to work in and keep; None =
    a temp folder, removed).
    """
    if args.keep:
        base = Path(args.keep).resolve()
        base.mkdir(parents=True, exist_ok=True)
        if any(base.iterdir()):
            raise FileExistsError(f"--keep {args.keep!r} must be a new or empty folder")
    else:
        base = Path(tempfile.mkdtemp(prefix="twostream-scale-"))
    try:
        sample = write_sample(base / "sample", args.videos, args.classes, tuple(args.seconds), args.seed)
        repo = copy_pipeline(base / "repo", args.cache_type)
        cache_type = _cache_type(repo)
        params = write_params(repo, base / "sample", args.set)
        stages, covers_orphans = measure_stages(repo, base / "dvc.log")
        counts = stage_counts(repo)
    finally:
        if not args.keep:
            shutil.rmtree(base, ignore_errors=True)
    frames_per_video = sample.pop("frames_per_video")
    totals = summarize_stages(stages, counts)
    return {"bench": "scale", "cores": usable_cores(),
            "sample": {**sample, "decoded_frames": counts["decoded_frames"], "videos_stored": counts["videos"],
                       "resampled_frames": counts["resampled_frames"], "flow_pairs": counts["flow_pairs"],
                       "size": f"{SOURCE['width']}x{SOURCE['height']}", "fps": SOURCE["fps"],
                       "frames_per_video": frames_per_video},
            "params": _used_params(params, args.set), "cache_type": cache_type,
            "rss_covers_orphans": covers_orphans,
            "stages": stages, "totals": totals, "extrapolation": extrapolate(stages, counts["decoded_frames"]),
            "kept": str(base) if args.keep else None}
