"""Benchmark ``memory``: peak RSS of decoding one long video, whole and in blocks.

A long XviD clip (default 10 minutes, 640x272, 30 fps: a panning texture with a moving
figure) is encoded block by block, never held whole. Each measurement then runs in a
fresh ``python -m twostream.bench.memory`` process, so its ``ru_maxrss`` is that run's
alone; the child reports it (and its ffmpeg's, ``RUSAGE_CHILDREN``) as JSON on stdout:

- ``decode_video``: the whole-video API (skipped, with a note, when the frames would take
  over half the machine's memory);
- ``blocks``: ``VideoReader.blocks()`` at the same size, each block discarded;
- ``store_video_part``: the frames stage's unit of work, ``twostream.ingest.frames.store_video_part``,
  on a real ``PartJob`` (``PART``: JPEG at quality 95, the frames 6 fps keeps) writing its
  part into a temp folder: decode, encode and write together.

``pass`` compares the Python process's peak with ``GOAL_MB``; ffmpeg's peak is reported
beside it (``ffmpeg_peak_rss_mb``; Linux counts it from at least the Python child's peak
when it started ffmpeg, so it is an upper bound).
"""

from __future__ import annotations

import argparse
import importlib
import json
import os
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np

from twostream.ingest.video import BLOCK_FRAMES, VideoReader, decode_video
from twostream.ingest.videowriter import encode_args

GOAL_MB = 600  # peak RSS a decoding worker may reach, whatever the video's length
CLIP = {"width": 640, "height": 272, "fps": 30}  # the generated clip: HMDB-like, larger
MEASUREMENTS = ("decode_video", "blocks", "store_video_part")
PART = {"codec": "jpeg", "quality": 95, "resample_fps": 6.0}  # the store_video_part job's settings
# Linux starts a child's ru_maxrss at its parent's peak (the old memory map is counted at exec), so
# a child started straight from this process would report at least this process's size. The
# measurement is started through this tiny forking launcher instead: its floor is ~10 MB.
_LAUNCHER = ("import os, sys\npid = os.fork()\nif pid == 0:\n    os.execv(sys.argv[1], sys.argv[1:])\n"
             "sys.exit(os.waitstatus_to_exitcode(os.waitpid(pid, 0)[1]))")


PAD = 32  # texture margin the camera pans over, pixels


def clip_texture(width: int, height: int, seed: int = 0) -> np.ndarray:
    """``(height + 2 PAD, width + 2 PAD, 3) uint8``: random gratings plus a fixed fine grain."""
    rng = np.random.default_rng(seed)
    y, x = np.mgrid[0 : height + 2 * PAD, 0 : width + 2 * PAD].astype(np.float32)
    texture = np.zeros((*y.shape, 3), np.float32)
    for _ in range(6):
        fx, fy = rng.uniform(-0.08, 0.08, 2)
        texture += rng.uniform(10, 30, 3) * np.sin(fx * x + fy * y + rng.uniform(0, 2 * np.pi))[..., None]
    texture += rng.uniform(-12, 12, texture.shape) + 128
    return np.clip(texture, 0, 255).astype(np.uint8)


def scene_block(texture: np.ndarray, start: int, n: int) -> np.ndarray:
    """Frames ``start .. start + n - 1`` of the benchmark clip, ``(n, H, W, 3) uint8`` RGB.

    The ``clip_texture`` pans in a slow ellipse while a bright bar crosses the picture, so the
    encoder sees motion everywhere; frame ``i`` depends on ``i`` alone, so blocks can be made
    one at a time.
    """
    height, width = texture.shape[0] - 2 * PAD, texture.shape[1] - 2 * PAD
    frames = np.empty((n, height, width, 3), np.uint8)
    for j, i in enumerate(range(start, start + n)):
        dx = PAD + round(PAD * np.sin(2 * np.pi * i / 300))
        dy = PAD + round(PAD * np.cos(2 * np.pi * i / 450))
        frames[j] = texture[dy : dy + height, dx : dx + width]
        left = (7 * i) % (width + 40) - 40
        frames[j, height // 4 : 3 * height // 4, max(left, 0) : max(left + 40, 0)] = (250, 240, 200)
    return frames


def write_long_clip(path: Path, minutes: float, width: int = CLIP["width"], height: int = CLIP["height"],
                    fps: float = CLIP["fps"]) -> int:
    """Encode the benchmark clip to XviD, piping it to ffmpeg one block at a time.

    Args:
        path: output ``.avi`` file.
        minutes: clip length.
        width: frame width in pixels (even).
        height: frame height in pixels (even).
        fps: frame rate.

    Returns:
        The number of frames written, ``round(minutes * 60 * fps)``.

    Raises:
        ValueError: if the clip would have no frame.
        RuntimeError: if ffmpeg fails (its log is included).
    """
    n = round(minutes * 60 * fps)
    if n < 1:
        raise ValueError(f"minutes must give at least one frame at {fps} fps; got {minutes}")
    texture = clip_texture(width, height)
    with tempfile.TemporaryFile() as err:  # a file, not a pipe: nobody drains it while we write
        proc = subprocess.Popen(encode_args(path, width, height, fps, "xvid"), stdin=subprocess.PIPE, stderr=err)
        assert proc.stdin is not None
        try:
            for start in range(0, n, BLOCK_FRAMES):
                proc.stdin.write(scene_block(texture, start, min(BLOCK_FRAMES, n - start)).tobytes())
            proc.stdin.close()
        except BrokenPipeError:
            pass  # ffmpeg died: its status and log say why
        if proc.wait() != 0:
            err.seek(0)
            raise RuntimeError(f"ffmpeg could not write {path}: {err.read().decode(errors='replace').strip()}")
    return n


def _peak_mb(who: int) -> float:
    """Peak RSS of ``who`` (``RUSAGE_SELF`` / ``RUSAGE_CHILDREN``) in MB (1e6 bytes)."""
    scale = 1 if sys.platform == "darwin" else 1024  # ru_maxrss: bytes on macOS, KiB on Linux
    return resource.getrusage(who).ru_maxrss * scale / 1e6


def measure_child(kind: str, path: str, width: int, height: int) -> dict[str, Any]:
    """Run one measurement in this process (meant to be a fresh one) and return its numbers.

    Args:
        kind: one of ``MEASUREMENTS``.
        path: the clip.
        width: decode width in pixels.
        height: decode height in pixels.

    Returns:
        ``frames``, ``seconds``, ``baseline_rss_mb`` (before decoding), ``peak_rss_mb`` and
        ``ffmpeg_peak_rss_mb``.

    Raises:
        ValueError: on an unknown kind.
    """
    if kind not in MEASUREMENTS:
        raise ValueError(f"kind must be one of {', '.join(MEASUREMENTS)}; got {kind!r}")
    if kind == "store_video_part":  # the frames stage's imports (h5py, ...) before the baseline
        importlib.import_module("twostream.ingest.frames")
    baseline = _peak_mb(resource.RUSAGE_SELF)
    start = time.perf_counter()
    stored: dict[str, Any] = {}
    if kind == "decode_video":
        frames = len(decode_video(path, width, height).frames)
    elif kind == "blocks":
        with VideoReader(path, width, height) as reader:
            frames = sum(len(block) for block in reader.blocks())
    else:
        frames, stored = _store_video_part(path, width, height)
    return {"frames": frames, "seconds": round(time.perf_counter() - start, 3),
            "baseline_rss_mb": round(baseline, 1), "peak_rss_mb": round(_peak_mb(resource.RUSAGE_SELF), 1),
            "ffmpeg_peak_rss_mb": round(_peak_mb(resource.RUSAGE_CHILDREN), 1), **stored}


def _store_video_part(path: str, width: int, height: int) -> tuple[int, dict[str, Any]]:
    """Run ``twostream.ingest.frames.store_video_part`` on a ``PartJob`` for ``path`` (``PART``'s settings)
    writing into a temp folder.

    The clip's bytes are not hashed for the job's stamp: nothing is reused here, and hashing
    would add to the time measured.

    Returns:
        Native frames decoded, and ``{"stored_frames", "part_mb"}``.

    Raises:
        RuntimeError: if the video did not decode whole (the stage's reason is included).
    """
    from twostream.ingest import frames, parts
    from twostream.runtime.config import FramesConfig

    cfg = FramesConfig(width=width, height=height, workers=1, max_failures=0.0, codec=PART["codec"],
                       quality=PART["quality"])
    with tempfile.TemporaryDirectory() as tmp:
        part = parts.part_path(tmp, f"memory/{Path(path).name}")
        job = frames.PartJob(vid=0, path=str(path), part=str(part),
                             stamp=frames.part_stamp("not hashed", cfg, PART["resample_fps"]), width=width,
                             height=height, codec=cfg.codec, quality=cfg.quality, resample_fps=PART["resample_fps"])
        result = frames.store_video_part(job)
        if result.reason is not None:
            raise RuntimeError(f"store_video_part could not store {path}: {result.reason}")
        return result.n_frames, {"stored_frames": result.n_stored, "part_mb": round(part.stat().st_size / 1e6, 2)}


def run_measurement(kind: str, path: Path, width: int, height: int) -> dict[str, Any]:
    """``measure_child`` in a fresh Python process, plus ``pass`` against ``GOAL_MB``.

    Raises:
        RuntimeError: if the child fails (its stderr is included).
    """
    child = [sys.executable, "-m", "twostream.bench.memory", kind, str(path), str(width), str(height)]
    proc = subprocess.run([sys.executable, "-S", "-c", _LAUNCHER, *child], capture_output=True, text=True)
    if proc.returncode != 0:
        raise RuntimeError(f"memory measurement {kind!r} exited {proc.returncode}: {proc.stderr.strip()[-2000:]}")
    result = json.loads(proc.stdout.strip().splitlines()[-1])
    result["pass"] = result["peak_rss_mb"] <= GOAL_MB
    return result


def machine_memory_bytes() -> int:
    """Physical memory of this machine in bytes."""
    return os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES")


def bench_memory(args: argparse.Namespace) -> dict[str, Any]:
    """Peak RSS of each measurement on a generated clip of ``args.minutes`` at ``args.width x args.height``.

    Raises:
        ValueError: if width or height is not positive.
    """
    if args.width <= 0 or args.height <= 0:
        raise ValueError(f"width and height must be positive; got {args.width}x{args.height}")
    results: dict[str, Any] = {}
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "long.avi"
        start = time.perf_counter()
        frames = write_long_clip(path, args.minutes)
        generate_s = time.perf_counter() - start
        decoded = frames * args.width * args.height * 3
        for kind in MEASUREMENTS:
            if kind == "decode_video" and decoded > machine_memory_bytes() / 2:
                results[kind] = f"skipped: {decoded / 1e6:.1f} MB of frames is over half the machine's memory"
            else:
                results[kind] = run_measurement(kind, path, args.width, args.height)
        clip_mb = path.stat().st_size / 1e6
    return {"bench": "memory", "minutes": args.minutes, "clip": f"{CLIP['width']}x{CLIP['height']} xvid "
            f"{CLIP['fps']} fps, {clip_mb:.1f} MB", "frames": frames, "width": args.width, "height": args.height,
            "decoded_mb": decoded / 1e6, "block_frames": BLOCK_FRAMES, "peak_rss_goal_mb": GOAL_MB,
            "generate_s": round(generate_s, 1), "measurements": results}


if __name__ == "__main__":  # the child of run_measurement: KIND PATH WIDTH HEIGHT -> one JSON line
    kind_arg, path_arg, width_arg, height_arg = sys.argv[1:]
    print(json.dumps(measure_child(kind_arg, path_arg, int(width_arg), int(height_arg))), flush=True)
