"""Benchmark ``scale``: a tiny generated sample through the data stages, and its figures' relations."""

from __future__ import annotations

import json
import os

import numpy as np
import pytest

from twostream.bench.__main__ import main
from twostream.bench.scale import (DATA_STAGES, file_inodes, parse_set, render_sample_video, sample_lengths,
                                   stage_counts)
from twostream.ingest.video import read_video

TINY = ["scale", "--videos", "6", "--classes", "2", "--seconds", "1.5", "1", "2",
        "--set", "frames.width=64", "--set", "frames.height=48", "--set", "flow.epsilon=0.1"]


@pytest.mark.slow  # 12 DVC runs: about a minute on 2 cores
def test_scale_runs_every_data_stage_and_its_figures_add_up(capsys, tmp_path):
    kept = tmp_path / "kept"
    main([*TINY, "--keep", str(kept)])
    lines = capsys.readouterr().out.strip().splitlines()
    assert len(lines) == 1
    result = json.loads(lines[0])
    sample, stages, totals = result["sample"], result["stages"], result["totals"]
    assert (result["bench"], sample["videos"], sample["classes"]) == ("scale", 6, 2)
    assert result["cores"] == len(os.sched_getaffinity(0)) == result["extrapolation"]["cores"]
    assert result["params"]["frames"]["width"] == 64 and result["params"]["flow"]["epsilon"] == 0.1

    # the sample on disk: 6 videos of 1-2 s whose decoded frames are the stage's decoded frames
    videos = sorted((kept / "sample" / "videos").rglob("*.avi"))
    assert len(videos) == 6 and {p.parent.name for p in videos} == {"class_00", "class_01"}
    assert all(30 <= n <= 60 for n in sample["frames_per_video"])
    decoded = sum(len(read_video(p, 32, 24)[0]) for p in videos)
    assert decoded == sample["decoded_frames"] == sum(sample["frames_per_video"]) == sample["frames"]
    assert sample["bytes"] == sum(p.stat().st_size for p in videos)
    assert sample["source_bytes_per_frame"] == round(sample["bytes"] / decoded, 1)
    roles = [e["role"] for e in json.loads((kept / "repo" / "data" / "index.json").read_text())]
    assert (roles.count("train") + roles.count("val"), roles.count("test")) == (4, 2)  # 70 / 30 per class

    assert list(stages) == list(DATA_STAGES)
    for stage in stages.values():
        assert stage["workspace_bytes"] > 0 and stage["peak_rss_mb"] > 0
        assert 0 < stage["fixed_seconds"] <= stage["seconds"]
        assert stage["videos_per_s"] == round(6 / stage["seconds"], 2)
    # the repository's cache.type (hardlink, then copy): the cache holds the frames parts as the same
    # inodes as the workspace, counted once; only DVC's own small files (.dir manifests) are new
    assert result["cache_type"] == "hardlink,copy"
    assert 0 < stages["frames"]["cache_bytes"] < stages["frames"]["workspace_bytes"] / 10
    assert stages["frames"]["frames_per_s"] == round(decoded / stages["frames"]["seconds"], 2)
    assert stages["flow"]["pairs_per_s"] == round(sample["flow_pairs"] / stages["flow"]["seconds"], 2)
    assert sample["flow_pairs"] > 0 and 0 < sample["resampled_frames"] < decoded

    total = sum(s["workspace_bytes"] + s["cache_bytes"] for s in stages.values())
    assert totals["bytes"] == total == totals["workspace_bytes"] + totals["cache_bytes"]
    assert totals["bytes_per_frame"] == round(total / decoded, 1)
    assert totals["bytes_per_frame_by_stage"] == {
        name: round((s["workspace_bytes"] + s["cache_bytes"]) / decoded, 1) for name, s in stages.items()}
    assert totals["bytes_per_frame_goal"] == 12288
    assert totals["pass"] == (totals["bytes_per_frame"] <= 12288)

    hmdb, kinetics = result["extrapolation"]["hmdb51_split1"], result["extrapolation"]["kinetics400"]
    assert (hmdb["decoded_frames"], kinetics["decoded_frames"]) == (485_000, 60_000_000)
    assert hmdb["gb"] == pytest.approx(total * 485_000 / decoded / 1e9, abs=0.04)
    flow_hours = ((stages["flow"]["seconds"] - stages["flow"]["fixed_seconds"]) * 485_000 / decoded
                  + stages["flow"]["fixed_seconds"]) / 3600
    assert hmdb["stages"]["flow"]["hours"] == pytest.approx(flow_hours, abs=0.006)
    assert kinetics["gb"] > hmdb["gb"] and kinetics["hours"] > hmdb["hours"]


def test_sample_videos_are_seeded_textured_and_spread_like_hmdb():
    first, again = (render_sample_video(np.random.SeedSequence([0, 1, 2]), 4) for _ in range(2))
    assert first.shape == (4, 240, 320, 3) and first.dtype == np.uint8
    assert np.array_equal(first, again)
    assert first[0].std() > 20  # textured, not flat
    assert not np.array_equal(first[0], first[3])  # moving
    lengths = np.array(sample_lengths(2000, (3.0, 1.0, 10.0), seed=0))
    assert lengths.min() >= 30 and lengths.max() <= 300
    assert np.median(lengths) == pytest.approx(90, rel=0.05)


def test_parse_set_reads_yaml_values_and_names_a_bad_key():
    params = {"resample": {"fps": 6}, "fusion": "average", "data": {"root": "data/demo"}}
    assert parse_set("resample.fps=0", params) == (["resample", "fps"], 0)
    assert parse_set("fusion=svm", params) == (["fusion"], "svm")
    for bad in ("resample.fsp=0", "nothing=1", "resample.fps", "data.root=x"):
        with pytest.raises(ValueError, match="--set"):
            parse_set(bad, params)


def test_file_inodes_counts_a_hardlinked_file_once(tmp_path):
    (tmp_path / "a").write_bytes(b"x" * 100)
    os.link(tmp_path / "a", tmp_path / "b")
    (tmp_path / "c").symlink_to(tmp_path / "a")
    assert sum(file_inodes([tmp_path], follow=True).values()) == 100
    assert sum(file_inodes([tmp_path / "a", tmp_path / "missing"], follow=True).values()) == 100


def test_stage_counts_fall_back_to_the_stores_meta_files(tmp_path):
    data = tmp_path / "data"
    (data / "frames").mkdir(parents=True)
    (data / "flow").mkdir()
    (data / "frames_report.json").write_text(json.dumps({"counts": {"attempted": 2}}))
    meta = {"videos": {"0": {"n_frames": 90}, "3": {"n_frames": 45}}}
    (data / "frames" / "meta.json").write_text(json.dumps(meta))
    (data / "flow_report.json").write_text(json.dumps({"counts": {"videos": 2}}))
    (data / "flow" / "meta.json").write_text(json.dumps({"videos": {"0": {"pairs": 12}, "3": {"pairs": [0, 3]}}}))
    (data / "resample.json").write_text(json.dumps({"videos": {"0": list(range(0, 90, 5)), "3": [0, 5, 10]}}))
    assert stage_counts(tmp_path) == {"videos": 2, "decoded_frames": 135, "resampled_frames": 21, "flow_pairs": 14}
