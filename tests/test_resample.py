"""Resampling by timestamp, the resample stage's JSON, too-short videos and the contact sheet."""

from __future__ import annotations

import json

import cv2
import numpy as np
import pytest

from twostream.runtime.config import FramesConfig, ResampleConfig
from twostream.ingest.framestore import FrameStore
from twostream.ingest.frames import extract_frames
from twostream.ingest.resample import LABEL_PX, PAD_PX, read_resample, resample_indices, resample_videos
from twostream.ingest.videowriter import write_video


def test_30_to_6_keeps_every_5th():
    np.testing.assert_array_equal(resample_indices(90, 30, 6), np.arange(0, 90, 5))
    np.testing.assert_array_equal(resample_indices(91, 30, 6), np.arange(0, 91, 5))
    assert resample_indices(90, 30, 6).dtype == np.int64


def test_25_to_6_keeps_frames_nearest_k_over_6_seconds():
    kept = resample_indices(50, 25, 6)
    np.testing.assert_array_equal(kept, [0, 4, 8, 13, 17, 21, 25, 29, 33, 38, 42, 46])
    # each is the native frame nearest k/6 s (k=3: 0.5 s lies between frames 12 and 13; half rounds up)
    for k, i in enumerate(kept):
        assert abs(i / 25 - k / 6) <= 0.5 / 25 + 1e-12


def test_every_frame_when_fps_is_0_or_not_lower():
    for fps in (0, 30, 60):
        np.testing.assert_array_equal(resample_indices(7, 30, fps), np.arange(7))
    assert resample_indices(0, 30, 6).shape == (0,)


def test_ntsc_rate():
    kept = resample_indices(1000, 30000 / 1001, 6)  # 4.995 native frames per step
    np.testing.assert_array_equal(kept[:101], np.arange(0, 505, 5))
    assert kept[101] == 504  # 101 * 4.995 = 504.495: the drift reaches half a frame
    assert len(kept) == 201 and kept[-1] == 999


def test_bad_arguments():
    with pytest.raises(ValueError, match="fps must be >= 0"):
        resample_indices(10, 30, -1)
    with pytest.raises(ValueError, match="src_fps must be > 0; got 0"):
        resample_indices(10, 0, 6)
    with pytest.raises(ValueError, match="n_frames must be >= 0; got -1"):
        resample_indices(-1, 30, 6)


@pytest.fixture
def frames_dir(tmp_path):
    """A frame store of 3 lossless videos: class a (30 frames at 30 fps, 25 frames at 25 fps),
    class b (8 frames at 30 fps: 2 frames at 6 fps, too short for 3-frame clips)."""
    rng = np.random.default_rng(0)
    specs = [("a", 30, 30), ("a", 25, 25), ("b", 8, 30)]
    index = []
    for vid, (cls, n, fps) in enumerate(specs):
        path = tmp_path / f"v{vid}.mkv"
        write_video(path, rng.integers(0, 256, (n, 16, 16, 3), dtype=np.uint8), fps, codec="ffv1")
        index.append({"path": str(path), "class": cls, "label": "ab".index(cls), "role": "train"})
    (tmp_path / "index.json").write_text(json.dumps(index))
    cfg = FramesConfig(width=16, height=16, workers=1, max_failures=0.0, codec="png", quality=95)
    extract_frames(tmp_path / "index.json", tmp_path / "frames", tmp_path / "report.json", cfg, 6)
    extract_frames(tmp_path / "index.json", tmp_path / "every", tmp_path / "report0.json", cfg, 0)
    return tmp_path / "frames"


def test_stage_output_and_too_short(frames_dir, tmp_path):
    out, sheet = tmp_path / "resample.json", tmp_path / "plots" / "sheet.png"
    doc = resample_videos(tmp_path / "index.json", frames_dir, out, sheet, ResampleConfig(fps=6), 3)
    assert json.loads(out.read_text()) == doc
    assert doc["videos"] == {"0": [0, 5, 10, 15, 20, 25], "1": [0, 4, 8, 13, 17, 21]}
    assert doc["too_short"] == [{"id": 2, "path": str(tmp_path / "v2.mkv"), "class": "b", "n_kept": 2}]
    assert doc["counts"] == {"stored": 3, "kept": 2, "too_short": 1}
    assert doc["fps"] == 6 and doc["clip_frames"] == 3
    assert {k: v.tolist() for k, v in read_resample(out).items()} == {0: [0, 5, 10, 15, 20, 25],
                                                                       1: [0, 4, 8, 13, 17, 21]}
    every = resample_videos(tmp_path / "index.json", tmp_path / "every", out, sheet, ResampleConfig(fps=0), 3)
    assert every["videos"]["2"] == list(range(8)) and every["too_short"] == []
    with pytest.raises(ValueError, match="holds the frames kept at 6 fps; resample.fps is 0: re-run the frames"):
        resample_videos(tmp_path / "index.json", frames_dir, out, sheet, ResampleConfig(fps=0), 3)


def test_contact_sheet(frames_dir, tmp_path):
    sheet_path = tmp_path / "sheet.png"
    resample_videos(tmp_path / "index.json", frames_dir, tmp_path / "r.json", sheet_path,
                    ResampleConfig(fps=6), 3)
    first = sheet_path.read_bytes()
    sheet = cv2.imread(str(sheet_path))[..., ::-1]  # BGR file -> RGB
    tile = 16 * 8  # 16 px frames scaled 8x (nearest) to reach 128 px
    assert sheet.shape == (PAD_PX + tile + LABEL_PX + PAD_PX, PAD_PX + 2 * (tile + PAD_PX), 3)
    store = FrameStore(frames_dir)
    # per class its first video's middle kept frame: video 0 keeps 0..25 step 5, video 2 keeps 0, 5
    for column, (vid, middle) in enumerate([(0, 15), (2, 5)]):
        expected = np.repeat(np.repeat(store.read(vid, [middle])[0], 8, axis=0), 8, axis=1)
        x = PAD_PX + column * (tile + PAD_PX)
        np.testing.assert_array_equal(sheet[PAD_PX:PAD_PX + tile, x:x + tile], expected)
        label = sheet[PAD_PX + tile:PAD_PX + tile + LABEL_PX, x:x + tile]
        assert (label < 128).any() and (label == 255).mean() > 0.5  # dark text on white
    resample_videos(tmp_path / "index.json", frames_dir, tmp_path / "r.json", sheet_path,
                    ResampleConfig(fps=6), 3)
    assert sheet_path.read_bytes() == first
