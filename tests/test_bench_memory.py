"""The ``memory`` benchmark: the generated clip, one JSON result per measurement (the frames
stage's ``store_video_part`` included), the skip rule."""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import numpy as np
import pytest

from twostream.bench import memory
from twostream.bench.memory import bench_memory, clip_texture, scene_block
from twostream.ingest.clips import resample_indices


def test_clip_is_made_block_by_block_with_the_same_frames():
    texture = clip_texture(64, 48)
    whole = scene_block(texture, 0, 10)
    assert whole.shape == (10, 48, 64, 3) and whole.dtype == np.uint8
    np.testing.assert_array_equal(np.concatenate([scene_block(texture, 0, 4), scene_block(texture, 4, 6)]), whole)
    assert not np.array_equal(whole[0], whole[1])  # it moves


def test_streaming_peak_is_below_the_whole_video_peak():
    result = bench_memory(argparse.Namespace(minutes=0.05, width=320, height=240))
    json.dumps(result)  # one JSON line
    assert (result["bench"], result["frames"], result["width"], result["height"]) == ("memory", 90, 320, 240)
    assert result["decoded_mb"] == 90 * 320 * 240 * 3 / 1e6
    assert result["peak_rss_goal_mb"] == 600 and result["generate_s"] >= 0
    whole, blocks = result["measurements"]["decode_video"], result["measurements"]["blocks"]
    for m in (whole, blocks):
        assert m["frames"] == 90 and m["seconds"] > 0 and m["ffmpeg_peak_rss_mb"] > 0
        assert 0 < m["baseline_rss_mb"] <= m["peak_rss_mb"]
        assert m["pass"] == (m["peak_rss_mb"] <= 600)
    # the whole video holds all 20.7 MB of frames at once, the blocks at most two 7.4 MB blocks
    assert whole["peak_rss_mb"] - whole["baseline_rss_mb"] >= result["decoded_mb"]
    assert whole["peak_rss_mb"] - blocks["peak_rss_mb"] > result["decoded_mb"] / 2
    # the stage's unit of work streams too: one block and its spooled JPEGs, never the whole video
    part = result["measurements"]["store_video_part"]
    assert part["frames"] == 90 and part["stored_frames"] == len(resample_indices(90, 30, 6)) == 18
    assert part["part_mb"] > 0 and part["pass"] == (part["peak_rss_mb"] <= 600)
    assert 0 < part["baseline_rss_mb"] <= part["peak_rss_mb"]
    part_growth = part["peak_rss_mb"] - part["baseline_rss_mb"]
    assert part_growth < whole["peak_rss_mb"] - whole["baseline_rss_mb"] - result["decoded_mb"] / 4


def test_whole_video_decode_is_skipped_when_it_would_not_fit(monkeypatch):
    monkeypatch.setattr(memory, "machine_memory_bytes", lambda: 2 * 18 * 32 * 32 * 3 - 2)
    result = bench_memory(argparse.Namespace(minutes=0.01, width=32, height=32))
    assert result["frames"] == 18
    assert result["measurements"]["decode_video"].startswith("skipped: 0.1 MB of frames is over half")
    assert result["measurements"]["blocks"]["frames"] == 18
    assert result["measurements"]["store_video_part"]["stored_frames"] == 4  # frames 0, 5, 10, 15


def test_bad_sizes_are_rejected():
    with pytest.raises(ValueError, match="got 0x10"):
        bench_memory(argparse.Namespace(minutes=0.01, width=0, height=10))
    with pytest.raises(ValueError, match="at least one frame"):
        memory.write_long_clip(Path("unused.avi"), 0.0)


def test_command_line_defaults():
    from twostream.bench.__main__ import build_parser

    args = build_parser().parse_args(["memory"])
    assert (args.minutes, args.width, args.height, args.func) == (10.0, 340, 256, bench_memory)
