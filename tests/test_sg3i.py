"""SG3I: channel order, grayscale, the stage's files and meta, determinism, the store."""

from __future__ import annotations

import hashlib
import json
import os
import pickle

import cv2
import numpy as np
import pytest

from twostream.runtime.config import ClipConfig, FramesConfig, ResampleConfig
from twostream.ingest.framestore import FrameStore
from twostream.ingest.frames import extract_frames
from twostream.ingest.resample import read_resample, resample_videos
from twostream.motion.sg3istore import SG3IStore
from twostream.motion.sg3i import build_sg3i, sg3i_images, times_to_channels, to_gray
from twostream.ingest.videowriter import write_video


def constant_frames(values: list[int], h: int = 4, w: int = 5) -> np.ndarray:
    """``(len(values), h, w, 3) uint8`` frames, frame i all ``values[i]`` (gray = value)."""
    return np.stack([np.full((h, w, 3), v, np.uint8) for v in values])


def test_channels_are_time_order():
    images = sg3i_images(constant_frames([0, 128, 255]), ClipConfig(frames=3, step=1))
    assert images.shape == (1, 4, 5, 3) and images.dtype == np.uint8
    np.testing.assert_array_equal(images[0, 2, 3], [0, 128, 255])
    assert (images[0, ..., 0] == 0).all() and (images[0, ..., 1] == 128).all() and (images[0, ..., 2] == 255).all()


def test_first_middle_last_of_every_clip():
    # 9 frames, clips of 5 every 3 frames: starts 0 and 3; frames (0, 2, 4) and (3, 5, 7)
    images = sg3i_images(constant_frames([10 * k for k in range(9)]), ClipConfig(frames=5, step=3))
    assert images.shape == (2, 4, 5, 3)
    np.testing.assert_array_equal(images[:, 0, 0], [[0, 20, 40], [30, 50, 70]])


def test_gray_is_opencv_rgb2gray():
    rgb = np.random.default_rng(0).integers(0, 256, (2, 6, 7, 3), dtype=np.uint8)
    gray = to_gray(rgb)
    assert gray.shape == (2, 6, 7) and gray.dtype == np.uint8
    np.testing.assert_array_equal(gray[1], cv2.cvtColor(rgb[1], cv2.COLOR_RGB2GRAY))
    # pure red, green, blue: 0.299, 0.587, 0.114 of 255, rounded
    np.testing.assert_array_equal(to_gray(np.eye(3, dtype=np.uint8)[None, None] * 255)[0, 0], [76, 150, 29])
    with pytest.raises(ValueError, match=r"\(N, H, W, 3\) uint8"):
        to_gray(rgb[0])


def test_times_to_channels_layout():
    gray = np.arange(2 * 3 * 2 * 2).reshape(2, 3, 2, 2)  # (C, 3, H, W)
    out = times_to_channels(gray)
    assert out.shape == (2, 2, 2, 3)
    np.testing.assert_array_equal(out[1, 0, 1], gray[1, :, 0, 1])


def test_too_short_clip_rejected():
    with pytest.raises(ValueError, match="SG3I needs clip.frames >= 3; got 2"):
        sg3i_images(constant_frames([0, 1, 2]), ClipConfig(frames=2, step=1))


@pytest.fixture
def stores(tmp_path):
    """Frames and resample.json of 3 lossless 16x12 videos (30, 42 and 12 frames at 30 fps)."""
    rng = np.random.default_rng(1)
    index = []
    for vid, n in enumerate((30, 42, 12)):
        path = tmp_path / f"v{vid}.mkv"
        write_video(path, rng.integers(0, 256, (n, 12, 16, 3), dtype=np.uint8), 30, codec="ffv1")
        index.append({"path": str(path), "class": "ab"[vid % 2], "label": vid % 2, "role": "train"})
    (tmp_path / "index.json").write_text(json.dumps(index))
    cfg = FramesConfig(width=16, height=12, workers=1, max_failures=0.0, codec="png", quality=95)
    extract_frames(tmp_path / "index.json", tmp_path / "frames", tmp_path / "frames.json", cfg, 6)
    resample_videos(tmp_path / "index.json", tmp_path / "frames", tmp_path / "resample.json",
                    tmp_path / "sheet.png", ResampleConfig(fps=6), clip_frames=3)
    return tmp_path


def digests(folder) -> dict[str, str]:
    return {p.name: hashlib.sha256(p.read_bytes()).hexdigest() for p in sorted(folder.iterdir())}


def test_stage_writes_every_clip_exactly(stores):
    clip = ClipConfig(frames=3, step=2)
    meta = build_sg3i(stores / "index.json", stores / "frames", stores / "resample.json", stores / "sg3i", clip)
    # 6 and 9 resampled frames: clips at 0, 2 and 0, 2, 4, 6; video 2 (3 frames): one clip
    assert {k: v["clips"] for k, v in meta["videos"].items()} == {"0": 2, "1": 4, "2": 1}
    assert meta["counts"] == {"videos": 3, "clips": 7}
    assert meta["params"] == {"clip": {"frames": 3, "step": 2}}
    assert json.loads((stores / "sg3i" / "meta.json").read_text()) == meta
    kept = read_resample(stores / "resample.json")
    with SG3IStore(stores / "sg3i") as store, FrameStore(stores / "frames") as frames:
        assert store.video_ids == [0, 1, 2] and store.n_clips(1) == 4
        images = store.read(1)
        assert images.shape == (4, 12, 16, 3) and images.dtype == np.uint8
        native = kept[1][[6, 7, 8]]  # clip 3 starts at resampled frame 6
        np.testing.assert_array_equal(images[3], np.stack(list(frames.read_gray(1, native)), -1))
        # the decoder's grayscale (png here: lossless RGB) is the RGB frame's grayscale within a grey level
        rgb_gray = np.stack([cv2.cvtColor(f, cv2.COLOR_RGB2GRAY) for f in frames.read(1, native)], -1)
        assert np.abs(images[3].astype(int) - rgb_gray).max() <= 1
        np.testing.assert_array_equal(store.read(1, [1, 3]), images[[1, 3]])
        np.testing.assert_array_equal(store.read(1, [3, 0, 0]), images[[3, 0, 0]])  # any order, repeats
        with pytest.raises(IndexError, match=r"clip indices of video 1 must be in 0\.\.3; got \[4\]"):
            store.read(1, [4])
        with pytest.raises(KeyError, match="video 7 is not in the SG3I store"):
            store.read(7)
        assert store.triples(1)[3] == native.tolist()  # what the stage stores: frame numbers only
    assert meta["frames"] == "../frames"  # the frames store, relative to the SG3I folder
    assert sorted(p.name for p in (stores / "sg3i").iterdir()) == ["meta.json"]


def test_stage_is_byte_deterministic(stores):
    clip = ClipConfig(frames=3, step=2)
    build_sg3i(stores / "index.json", stores / "frames", stores / "resample.json", stores / "sg3i", clip)
    first = digests(stores / "sg3i")
    build_sg3i(stores / "index.json", stores / "frames", stores / "resample.json", stores / "sg3i", clip)
    assert digests(stores / "sg3i") == first


def test_store_reopens_after_fork_and_pickle(stores):
    build_sg3i(stores / "index.json", stores / "frames", stores / "resample.json", stores / "sg3i",
               ClipConfig(frames=3, step=2))
    store = SG3IStore(stores / "sg3i")
    expected = store.read(0)
    clone = pickle.loads(pickle.dumps(store))
    np.testing.assert_array_equal(clone.read(0), expected)
    pid = os.fork()
    if pid == 0:  # child: must open its own handle and read the same bytes
        os._exit(0 if np.array_equal(store.read(0), expected) else 1)
    assert os.waitpid(pid, 0)[1] == 0
    store.close()
