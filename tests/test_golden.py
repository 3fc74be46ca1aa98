"""Golden checks: every versioned computation, run on a tiny fixed input, against what was
recorded at its ``VERSION`` (``tests/golden/<name>.json`` and ``.npz``).

A stamp or fingerprint holds a computation's version instead of its source, so a part made by
older code is reused as long as the version is the same. These tests are what keeps that
honest: a change of code or of a locked library that alters an output fails here until the
owner's ``VERSION`` is bumped and the golden values recorded anew::

    python tests/test_golden.py record frames      # after bumping twostream.ingest.frames.VERSION

Exact comparisons are kept for what one library call decides on any x86 CPU (a JPEG encode,
an HDF5 file from given bytes, the quantisation's float32 arithmetic); what goes through
float kernels that CPUs may run differently (ffmpeg's scaler, TV-L1, training) is compared
within the tolerances stated below.
"""

from __future__ import annotations

import hashlib
import io
import json
import sys
import tempfile
from dataclasses import replace
from pathlib import Path
from typing import Any, Callable

import cv2
import numpy as np
import pytest

from twostream.ingest import demoset, frames
from twostream.learn import engine
from twostream.motion import flow
from twostream.ingest.codec import decode_image, encode_image
from twostream.runtime.config import FlowConfig
from twostream.motion.flowstore import quantize
from twostream.ingest.framestore import decode_frame
from twostream.ingest.videowriter import write_video

GOLDEN = Path(__file__).resolve().parent / "golden"
# decoded and resized frames (ffmpeg's scaler may round differently on other CPUs), stored as JPEG
FRAMES_MEAN_ABS, FRAMES_MAX_ABS = 0.5, 8
# quantised TV-L1 fields: 1 level is 0.157 px at bound 20; other CPUs' float kernels move a few values by one
FLOW_MAX_LEVELS, FLOW_SHARE_DIFFERENT = 1, 0.01
TRAINING_RTOL = 1e-3  # per-epoch losses of a tiny CPU training
FLOW_CFG = FlowConfig(tau=0.25, lambda_=0.15, theta=0.3, nscales=5, warps=5, epsilon=0.05, inner_iterations=30,
                      outer_iterations=10, scale_step=0.8, gamma=0.0, median_filtering=5, backend="opencv",
                      bound=20.0, stack=2, workers=1, threads=1, max_failures=0.0, codec="jpeg", quality=95)


def sha256(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def pattern(t: int, h: int, w: int) -> np.ndarray:
    """``(t, h, w, 3) uint8``: bars, a checkerboard and gradients moving 2 px right per frame,
    from integer arithmetic only (the same bytes on every machine)."""
    y, x = np.mgrid[0:h, 0:w].astype(np.int64)
    out = []
    for i in range(t):
        u = x - 2 * i
        out.append(np.stack([(u * 7 + y * 3) % 256, ((u // 4 + y // 4) % 2) * 200 + 28, (u * u + y * 5) % 256], -1))
    return np.stack(out).astype(np.uint8)


def smooth_texture(h: int, w: int, seed: int = 0) -> np.ndarray:
    """``(h, w) uint8`` smooth random texture: an 8x coarser random grid, bilinearly upsampled in
    integer arithmetic (exact on every machine)."""
    coarse = np.random.default_rng(seed).integers(0, 256, (h // 8 + 2, w // 8 + 2)).astype(np.int64)
    y, x = np.mgrid[0:h, 0:w]
    y0, x0, fy, fx = y // 8, x // 8, y % 8, x % 8
    top = coarse[y0, x0] * (8 - fx) + coarse[y0, x0 + 1] * fx
    bottom = coarse[y0 + 1, x0] * (8 - fx) + coarse[y0 + 1, x0 + 1] * fx
    return ((top * (8 - fy) + bottom * fy + 32) // 64).astype(np.uint8)


# ---- frames (twostream.ingest.frames.VERSION) ----------------------------------------------------------

def frames_outputs() -> tuple[dict[str, Any], dict[str, np.ndarray]]:
    """A 12-frame 64x48 lossless video at 30 fps through ``store_video_part`` at 40x30, 6 fps, JPEG 95;
    and the store's encodings and part file from fixed pixels."""
    video = pattern(12, 48, 64)
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "golden.mkv"
        write_video(path, video, 30, codec="ffv1")
        job = frames.PartJob(0, str(path), str(Path(tmp) / "part.h5"), "golden", 40, 30, "jpeg", 95, 6.0)
        result = frames.store_video_part(job)
        assert result.reason is None, result.reason
        import h5py

        with h5py.File(job.part, "r") as f:
            data, offsets = f["data"][()], f["offsets"][()]
            attrs = {k: (v.item() if hasattr(v, "item") else v) for k, v in f.attrs.items() if k != "part_key"}
        stored = np.stack([decode_frame(data[a:b]) for a, b in zip(offsets[:-1], offsets[1:])])
        # a part file from fixed encoded bytes: the layout and HDF5's bytes, exactly
        encoded = [frames.encode_frame(f, "jpeg", 95) for f in video[:3, :30, :40]]
        spool = io.BytesIO(b"".join(encoded))
        fixed = frames.PartJob(0, "fixed", str(Path(tmp) / "fixed.h5"), "golden", 40, 30, "jpeg", 95, 6.0)
        frames._write_part(fixed, spool, np.cumsum([0, *map(len, encoded)], dtype=np.int64), 30.0, 12, [])
        part_sha = sha256(Path(fixed.part).read_bytes())
    exact = {"jpeg_q95": sha256(frames.encode_frame(video[0], "jpeg", 95)),
             "jpeg_q50": sha256(frames.encode_frame(video[5], "jpeg", 50)),
             "fixed_part_file": part_sha,
             "stored": {"fps": result.fps, "n_frames": result.n_frames, "n_stored": result.n_stored,
                        "attrs": attrs}}
    return exact, {"stored": stored}


def compare_images(recorded: dict[str, Any], arrays: dict[str, np.ndarray], exact: dict[str, Any],
                   now: dict[str, np.ndarray], key: str, what: str, mean_abs: float, max_abs: int) -> list[str]:
    """The exact values, then the images ``arrays[key]`` within ``mean_abs`` / ``max_abs`` grey levels."""
    problems = [f"{k}: {exact[k]!r} != recorded {recorded[k]!r}" for k in recorded if exact.get(k) != recorded[k]]
    old, new = arrays[key].astype(np.int16), now[key].astype(np.int16)
    if old.shape != new.shape:
        return [*problems, f"{what} {new.shape} != recorded {old.shape}"]
    diff = np.abs(old - new)
    if diff.mean() > mean_abs or diff.max() > max_abs:
        problems.append(f"{what} differ from the recorded ones by {diff.mean():.3f} grey levels on average, "
                        f"{diff.max()} at most (tolerance {mean_abs}, {max_abs})")
    return problems


def compare_frames(recorded: dict[str, Any], arrays: dict[str, np.ndarray],
                   exact: dict[str, Any], now: dict[str, np.ndarray]) -> list[str]:
    return compare_images(recorded, arrays, exact, now, "stored", "stored frames", FRAMES_MEAN_ABS, FRAMES_MAX_ABS)


# ---- flow (twostream.motion.flow.VERSION) ---------------------------------------------------------------

class FixedFrames:
    """The frames store's ``read`` over frames held in memory (what ``flow.video_flow`` reads)."""

    def __init__(self, rgb: np.ndarray) -> None:
        self.rgb = rgb

    def read(self, vid: int, indices: np.ndarray) -> np.ndarray:
        return self.rgb[np.asarray(indices, np.int64)]


def flow_outputs() -> tuple[dict[str, Any], dict[str, np.ndarray]]:
    """TV-L1 of two pairs of a smooth texture moving (2, -1) px per frame, in both backends, as the
    flow stage computes a video's fields; and the quantisation, encodings and part file of fixed values."""
    canvas = smooth_texture(64, 80)
    gray = np.stack([canvas[8 - i:56 - i, 8 + 2 * i:72 + 2 * i] for i in range(3)])  # (3, 48, 64)
    rgb = np.repeat(gray[..., None], 3, axis=-1)  # a gray image: cvtColor gives it back exactly
    kept, pairs = np.arange(3, dtype=np.int64), [0, 1]
    threads = cv2.getNumThreads()
    cv2.setNumThreads(1)
    try:
        fields = {backend: flow.video_flow(FixedFrames(rgb), 0, kept, pairs, replace(FLOW_CFG, backend=backend))
                  for backend in ("opencv", "torch")}
    finally:
        cv2.setNumThreads(threads)
    y, x = np.mgrid[0:24, 0:32].astype(np.float32)
    field = np.stack([np.sin(x / 5) * 25 - 3, np.cos(y / 4) * 7 + x / 10], -1)[None]  # (1, 24, 32, 2)
    field = np.round(field * 64) / 64  # values a float32 holds exactly, whatever made them
    q = quantize(field.astype(np.float32), 20.0)
    with tempfile.TemporaryDirectory() as tmp:
        job = flow.FlowJob(0, (0, 5), (0,), str(Path(tmp) / "part.h5"), "golden", "jpeg", 95)
        flow.write_part(job, q)
        part_sha = sha256(Path(job.part).read_bytes())
    exact = {"quantized": sha256(q.tobytes()), "fields_jpeg_q95": sha256(b"".join(flow.encode_fields(q, "jpeg", 95))),
             "fixed_part_file": part_sha}
    return exact, fields


def compare_flow(recorded: dict[str, Any], arrays: dict[str, np.ndarray],
                 exact: dict[str, Any], now: dict[str, np.ndarray]) -> list[str]:
    problems = [f"{key}: {exact[key]!r} != recorded {recorded[key]!r}" for key in recorded if exact.get(key) != recorded[key]]
    for backend, old in arrays.items():
        diff = np.abs(old.astype(np.int16) - now[backend].astype(np.int16))
        share = float((diff > 0).mean())
        if diff.max() > FLOW_MAX_LEVELS or share > FLOW_SHARE_DIFFERENT:
            problems.append(f"{backend} TV-L1 fields differ from the recorded ones in {share:.2%} of the values, by "
                            f"{diff.max()} levels at most (tolerance {FLOW_SHARE_DIFFERENT:.0%}, {FLOW_MAX_LEVELS})")
    return problems


# ---- training (twostream.learn.engine.VERSION) ---------------------------------------------------------

def training_outputs() -> tuple[dict[str, Any], dict[str, np.ndarray]]:
    """Two epochs of the tiny flow stream of ``test_engine`` on its tiny shards: per-epoch losses."""
    from test_engine import SPEC, write_tiny_shards

    with tempfile.TemporaryDirectory() as tmp:
        shards = write_tiny_shards(Path(tmp) / "shards")
        checkpoint = engine.train_model(SPEC, shards, Path(tmp) / "model.pt", Path(tmp) / "live")
    history = checkpoint["history"]
    losses = np.asarray([[h["train_loss"], h["val_loss"]] for h in history], np.float64)
    return {"epochs": len(history)}, {"losses": losses}


def compare_training(recorded: dict[str, Any], arrays: dict[str, np.ndarray],
                     exact: dict[str, Any], now: dict[str, np.ndarray]) -> list[str]:
    problems = [f"{key}: {exact[key]!r} != recorded {recorded[key]!r}" for key in recorded if exact.get(key) != recorded[key]]
    if arrays["losses"].shape != now["losses"].shape or not np.allclose(now["losses"], arrays["losses"],
                                                                        rtol=TRAINING_RTOL, atol=0):
        problems.append(f"losses per epoch (train, val) {now['losses'].tolist()} != recorded "
                        f"{arrays['losses'].tolist()} (relative tolerance {TRAINING_RTOL})")
    return problems


# ---- the demo dataset (twostream.ingest.demoset.VERSION) ------------------------------------------------

DEMO_MEAN_ABS, DEMO_MAX_ABS = 1.0, 24  # decoded demo frames: float drawing, then XviD, on another CPU


def demo_outputs() -> tuple[dict[str, Any], dict[str, np.ndarray]]:
    """A tiny demo (8 classes, two 0.2-s videos each, 32x32) in the HMDB-51 layout: the split files
    exactly, the first and last frame of every video decoded."""
    from twostream.runtime.config import DemoConfig
    from twostream.ingest.video import decode_video

    cfg = DemoConfig(classes=8, videos_per_class=2, seconds=0.2, width=32, height=32, fps=30, train_fraction=0.5,
                     test_fraction=0.5, layout="hmdb51", workers=1)
    with tempfile.TemporaryDirectory() as tmp:
        demoset.render_dataset(tmp, cfg, seed=0, progress=False)
        root = Path(tmp)
        lists = {p.relative_to(root).as_posix(): sha256(p.read_bytes()) for p in sorted((root / "splits").iterdir())}
        videos = sorted((root / "videos").rglob("*.avi"))
        names = [p.relative_to(root).as_posix() for p in videos]
        frames_ = np.stack([decode_video(p, 32, 32).frames[[0, -1]] for p in videos])  # (V, 2, 32, 32, 3)
    return {"split_files": lists, "videos": names}, {"frames": frames_}


def compare_demo(recorded: dict[str, Any], arrays: dict[str, np.ndarray],
                 exact: dict[str, Any], now: dict[str, np.ndarray]) -> list[str]:
    return compare_images(recorded, arrays, exact, now, "frames", "rendered frames", DEMO_MEAN_ABS, DEMO_MAX_ABS)


# ---- the checks and the recorder ---------------------------------------------------------------

CHECKS: dict[str, tuple[str, Callable[[], tuple], Callable[..., list[str]]]] = {
    "frames": ("twostream.ingest.frames", frames_outputs, compare_frames),
    "flow": ("twostream.motion.flow", flow_outputs, compare_flow),
    "training": ("twostream.learn.engine", training_outputs, compare_training),
    "demo": ("twostream.ingest.demoset", demo_outputs, compare_demo),
}


def version_of(module: str) -> int:
    return sys.modules[module].VERSION


def load(name: str) -> tuple[dict[str, Any], dict[str, np.ndarray]]:
    doc = json.loads((GOLDEN / f"{name}.json").read_text())
    with np.load(GOLDEN / f"{name}.npz") as arrays:
        return doc, {key: arrays[key] for key in arrays.files}


def problems_of(name: str) -> tuple[int, list[str]]:
    """(the version recorded, what differs from it now)."""
    module, outputs, compare = CHECKS[name]
    doc, arrays = load(name)
    exact, now = outputs()
    return doc["version"], compare(doc["exact"], arrays, exact, now)


@pytest.mark.parametrize("name", sorted(CHECKS))
def test_output_is_what_its_version_recorded(name):
    module = CHECKS[name][0]
    recorded, problems = problems_of(name)
    version = version_of(module)
    assert recorded == version, (
        f"{module}.VERSION is {version}, the golden {name} values were recorded at version {recorded}: "
        f"run `python tests/test_golden.py record {name}`")
    assert not problems, (
        f"the {name} computation's output changed at {module}.VERSION {version}:\n  " + "\n  ".join(problems) +
        f"\nIf the change is intended, bump {module}.VERSION to {version + 1} (parts or resume files of version "
        f"{version} are then recomputed) and run `python tests/test_golden.py record {name}`; if not, undo it.")


def test_a_change_without_a_version_bump_fails_naming_the_constant(monkeypatch):
    """The check itself: a computation whose output moves (here, JPEG quality 95 -> 94 inside the
    frames encoder) fails, and the message names the constant to bump."""
    real = frames.encode_frame
    monkeypatch.setattr(frames, "encode_frame", lambda rgb, codec, quality: real(rgb, codec, quality - 1))
    _, problems = problems_of("frames")
    assert any(p.startswith("jpeg_q95") for p in problems), problems
    with pytest.raises(AssertionError, match=r"bump twostream\.ingest\.frames\.VERSION to 2"):
        test_output_is_what_its_version_recorded("frames")


def test_the_exactly_compared_encodings_round_trip():
    """What is compared by bytes is what the stores hold: JPEG as encoded, PNG losslessly."""
    rgb = pattern(1, 30, 40)[0]
    assert np.array_equal(decode_image(np.frombuffer(encode_image(rgb, "png", 95), np.uint8)), rgb)
    assert decode_image(np.frombuffer(encode_image(rgb, "jpeg", 95), np.uint8)).shape == rgb.shape


def record(name: str) -> None:
    """Write ``tests/golden/<name>.{json,npz}`` from this machine's outputs at the current version;
    refuse when the output changed and the version did not."""
    module, outputs, compare = CHECKS[name]
    version = version_of(module)
    if (GOLDEN / f"{name}.json").exists():
        recorded, problems = problems_of(name)
        if recorded == version and problems:
            raise SystemExit(f"{name}: the output changed but {module}.VERSION is still {version}: bump it first\n  "
                             + "\n  ".join(problems))
    exact, arrays = outputs()
    GOLDEN.mkdir(exist_ok=True)
    (GOLDEN / f"{name}.json").write_text(json.dumps({"version": version, "exact": exact}, indent=1, sort_keys=True)
                                         + "\n")
    np.savez_compressed(GOLDEN / f"{name}.npz", **arrays)
    print(f"recorded {name} at {module}.VERSION {version} -> {GOLDEN / name}.json, .npz")


if __name__ == "__main__":
    if len(sys.argv) < 3 or sys.argv[1] != "record" or not set(sys.argv[2:]) <= set(CHECKS):
        raise SystemExit(f"usage: python tests/test_golden.py record {{{','.join(CHECKS)}}} ...")
    sys.path.insert(0, str(Path(__file__).resolve().parent))
    for what in sys.argv[2:]:
        record(what)
