"""Helpers the benchmarks share: the videos they decode and the ``frames`` / ``resample`` params they use."""

from __future__ import annotations

import dataclasses
from pathlib import Path

import cv2
import numpy as np

from twostream.runtime.config import FramesConfig, ResampleConfig, load_params, section
from twostream.ingest.frames import DECODE_ROLES
from twostream.ingest.datasets.common import VIDEO_SUFFIXES
from twostream.ingest.datasets.records import read_index
from twostream.runtime.jsonio import write_json
from twostream.ingest.videowriter import write_video

# fallback videos, like the demo's defaults: 128x96 XviD at 30 fps, 3 s
RENDER = {"videos": 24, "frames": 90, "width": 128, "height": 96, "fps": 30}


def render_videos(out_dir: Path, seed: int = 0) -> list[Path]:
    """Write ``RENDER["videos"]`` demo-like XviD files: textured background, a moving figure, noise."""
    rng = np.random.default_rng(seed)
    h, w, t = RENDER["height"], RENDER["width"], RENDER["frames"]
    paths = []
    for v in range(RENDER["videos"]):
        texture = rng.uniform(0, 255, (h, w, 3)).astype(np.float32)
        background = cv2.GaussianBlur(texture, (0, 0), 2 + v % 3)
        frames = np.empty((t, h, w, 3), np.uint8)
        for i in range(t):
            image = background.copy()
            x = int(20 + i * (w - 40) / t)
            cv2.line(image, (x, h // 3), (x, 3 * h // 4), (255, 255, 255), 3)
            cv2.circle(image, (x, h // 4), 6, (255, 200, 0), -1)
            arm = (x + int(15 * np.sin(i / 4 + v)), 2 * h // 3)
            cv2.line(image, (x, h // 2), arm, (255, 255, 255), 3)
            frames[i] = np.clip(image + rng.normal(0, 6, image.shape), 0, 255).astype(np.uint8)
        paths.append(out_dir / f"render_{v:03d}.avi")
        write_video(paths[-1], frames, RENDER["fps"], codec="xvid")
    return paths


def bench_index(root: str, tmp: Path) -> tuple[Path, list[str], str]:
    """An index to run the stage on, the paths it decodes, and where they came from."""
    if root.endswith(".json") and Path(root).is_file():
        index_path, source = Path(root), root
    else:
        if Path(root).is_dir():
            paths = sorted(str(p) for p in Path(root).rglob("*") if p.suffix.lower() in VIDEO_SUFFIXES)
            source = root
        else:
            (tmp / "videos").mkdir()
            paths = [str(p) for p in render_videos(tmp / "videos")]
            source = f"rendered ({len(paths)} videos)"
        index = [{"path": p, "class": Path(p).parent.name, "label": 0, "role": "train"} for p in paths]
        index_path = tmp / "index.json"
        write_json(index_path, index)
    decoded = [r["path"] for r in read_index(index_path) if r["role"] in DECODE_ROLES]
    if not decoded:
        raise SystemExit(f"no videos to decode under {root!r}")
    return index_path, decoded, source


def frames_config(params_path: str) -> FramesConfig:
    """The ``frames`` params (all cores, no failure limit); 64x64 without a params file."""
    if Path(params_path).is_file():
        cfg = section(load_params(params_path), "frames", FramesConfig)
    else:
        cfg = FramesConfig(width=64, height=64, workers=0, max_failures=1.0, codec="jpeg", quality=95)
    return dataclasses.replace(cfg, workers=0, max_failures=1.0)


def resample_fps(params_path: str) -> float:
    """``resample.fps`` of the params file (which native frames the frames stage stores); 6 without one."""
    if Path(params_path).is_file():
        return section(load_params(params_path), "resample", ResampleConfig).fps
    return 6.0
