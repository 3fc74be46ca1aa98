"""The shards stage: layouts, the writer's round trip, every video of every role, errors, determinism."""

from __future__ import annotations

import hashlib
import json
import os

import cv2
import h5py
import numpy as np
import pytest

from twostream.runtime.config import ClipConfig, FlowConfig, FramesConfig, ResampleConfig, ShardsConfig
from twostream.learn.dataset import ShardDataset
from twostream.motion.flowstore import FlowStore
from twostream.motion.flow import extract_flow
from twostream.ingest.framestore import FrameStore
from twostream.ingest.frames import extract_frames
from twostream.runtime.jsonio import write_json
from twostream.ingest.resample import read_resample, resample_videos
from twostream.motion.sg3istore import SG3IStore
from twostream.motion.sg3i import build_sg3i
from twostream.samples.shards import LAYOUTS, ShardWriter, ShardsError, build_shards, class_names, pairs_to_channels
from twostream.samples.refs import channels_to_pairs
from twostream.samples.expected import read_expected
from twostream.ingest.videowriter import write_video

CLIP = ClipConfig(frames=3, step=2)
# fast TV-L1 for 24x24 test frames (the values do not matter here, only where they go)
FLOW = FlowConfig(tau=0.25, lambda_=0.15, theta=0.3, nscales=2, warps=2, epsilon=0.1, inner_iterations=5,
                  outer_iterations=2, scale_step=0.5, gamma=0.0, median_filtering=1, backend="opencv", bound=20.0,
                  stack=2, workers=1, threads=1, max_failures=0.5, codec="png", quality=95)
# (class, role, frames at 30 fps): 6 resampled frames = 2 clips, 9 = 4 clips, 2 = too short
VIDEOS = [("clap", "train", 30), ("jump", "train", 45), ("clap", "val", 30), ("wave", "test", 45),
          ("jump", "test", 30), ("wave", "unused", 30), ("clap", "train", 8)]
CLIPS = {"train": 2 + 4, "val": 2, "test": 4 + 2}


def test_pairs_to_channels_interleaves_x_and_y():
    flow = np.arange(2 * 1 * 2 * 2).reshape(2, 1, 2, 2)  # (L=2, H=1, W=2, 2): value 4l + 2w + c
    x = pairs_to_channels(flow)
    assert x.shape == (1, 2, 4)
    np.testing.assert_array_equal(x[0, 1], [2, 3, 6, 7])  # x0, y0, x1, y1 of pixel (0, 1)
    np.testing.assert_array_equal(channels_to_pairs(x), flow)
    batch = np.stack([flow, flow + 100])  # (C, L, H, W, 2) -> (C, H, W, 2L)
    np.testing.assert_array_equal(pairs_to_channels(batch)[1, 0, 0], [100, 101, 104, 105])


def test_class_names_in_label_order():
    index = [{"class": "b", "label": 1}, {"class": "a", "label": 0}, {"class": "b", "label": 1}]
    assert class_names(index) == ["a", "b"]
    with pytest.raises(ValueError, match="label 1 names two classes: 'b' and 'c'"):
        class_names(index + [{"class": "c", "label": 1}])
    with pytest.raises(ValueError, match=r"labels must be 0..1; got \[0, 2\]"):
        class_names([{"class": "a", "label": 0}, {"class": "c", "label": 2}])


def test_writer_round_trip_is_exact(tmp_path):
    rng = np.random.default_rng(0)
    x = rng.integers(0, 256, (7, 3, 5, 4), dtype=np.uint8)
    label, video, clip = rng.integers(0, 3, 7), np.array([4, 4, 4, 9, 9, 12, 12]), np.array([0, 1, 2, 0, 1, 0, 1])
    params = {"flow": {"stack": 2, "bound": 20.0}}
    writer = ShardWriter(tmp_path, "val", "flow", 7, 3, ["a", "b", "c"], params)
    writer.add(x[:2], label[:2], video[:2], clip[:2])  # video-sized pieces that straddle files
    writer.add(x[2:7], label[2:7], video[2:7], clip[2:7])
    assert [p.name for p in writer.files] == ["val-00000.h5", "val-00001.h5", "val-00002.h5"]
    parts = {k: [] for k in ("x", "label", "video", "clip")}
    for path in writer.files:
        with h5py.File(path) as f:
            for k in parts:
                parts[k].append(f[k][()])
            assert f["x"].chunks == (1, 3, 5, 4) and f["label"].dtype == np.int64
            assert json.loads(f.attrs["classes"]) == ["a", "b", "c"] and f.attrs["modality"] == "flow"
            assert f.attrs["layout"] == LAYOUTS["flow"] and json.loads(f.attrs["params"]) == params
    assert [len(p) for p in parts["x"]] == [3, 3, 1]
    for k, expected in (("x", x), ("label", label), ("video", video), ("clip", clip)):
        np.testing.assert_array_equal(np.concatenate(parts[k]), expected)
    with pytest.raises(ValueError, match="flow/val: 8 samples, planned 7"):
        writer.add(x[:1], label[:1], video[:1], clip[:1])


@pytest.fixture(scope="module")
def stores(tmp_path_factory):
    """Index, frames, resample.json, SG3I and flow stores of ``VIDEOS`` (24x24, lossless)."""
    root = tmp_path_factory.mktemp("stores")
    y, x = np.mgrid[0:24, 0:24]
    index, labels = [], {"clap": 0, "jump": 1, "wave": 2}
    for vid, (cls, role, n) in enumerate(VIDEOS):
        frames = np.stack([np.stack([(7 * x + 3 * t + 40 * vid) % 256, (5 * y + t) % 256, (x * y + 2 * t) % 256],
                                    -1) for t in range(n)]).astype(np.uint8)
        write_video(root / f"v{vid}.mkv", frames, 30, codec="ffv1")
        index.append({"path": str(root / f"v{vid}.mkv"), "class": cls, "label": labels[cls], "role": role})
    write_json(root / "index.json", index)
    extract_frames(root / "index.json", root / "frames", root / "frames.json",
                   FramesConfig(width=24, height=24, workers=1, max_failures=0.0, codec="png", quality=95), 6)
    resample_videos(root / "index.json", root / "frames", root / "resample.json", root / "sheet.png",
                    ResampleConfig(fps=6), CLIP.frames)
    build_sg3i(root / "index.json", root / "frames", root / "resample.json", root / "sg3i", CLIP)
    extract_flow(root / "index.json", root / "frames", root / "resample.json", root / "flow",
                 root / "flow.json", FLOW, CLIP)
    return root


def run_stage(root, out, previews, flow_dir=None, per_shard=4, stack=2, bound=20.0, clip=CLIP) -> dict:
    return build_shards(root / "index.json", root / "frames", root / "resample.json", root / "sg3i",
                        flow_dir or root / "flow", out, previews, clip, stack, bound, ShardsConfig(per_shard))


def read_role(out, modality: str, role: str) -> dict[str, np.ndarray]:
    """The columns of one modality and role, and ``x``: every sample, read through its reference."""
    parts = {k: [] for k in ("ref", "label", "video", "clip")}
    for path in sorted((out / modality).glob(f"{role}-*.h5")):
        with h5py.File(path) as f:
            for k in parts:
                parts[k].append(f[k][()])
    dataset = ShardDataset(out, modality, role, False, 1, 1.0)
    x = np.stack([dataset.raw(i) for i in range(len(dataset))])
    dataset.close()
    return {"x": x, **{k: np.concatenate(v) for k, v in parts.items()}}


def test_stage_writes_every_video_of_every_role(stores, tmp_path):
    out, previews = tmp_path / "shards", tmp_path / "previews"
    summary = run_stage(stores, out, previews)
    assert summary["samples"] == {m: CLIPS for m in ("rgb", "sg3i", "flow")}
    assert summary["videos"] == {"train": 2, "val": 1, "test": 2}  # video 6 too short, video 5 unused
    assert json.loads((out / "summary.json").read_text()) == summary
    assert summary["stores"] == {"rgb": "frames", "sg3i": "frames", "flow": "flow"}
    assert sorted(p.name for p in (out / "flow").iterdir()) == [
        "expected.json", "test-00000.h5", "test-00001.h5", "train-00000.h5", "train-00001.h5", "val-00000.h5"]
    # every video the index names per role is expected; the too-short one is missing, with resample's reason
    assert (out / "sg3i" / "expected.json").read_bytes() == (out / "rgb" / "expected.json").read_bytes()
    ids, labels, missing = read_expected(out, "flow", "train")
    assert ids.tolist() == [0, 1, 6] and labels.tolist() == [0, 1, 0]
    assert missing == [{"id": 6, "path": str(stores / "v6.mkv"), "class": "clap", "label": 0,
                        "reason": "resample.json: too short: 2 resampled frames"}]
    assert read_expected(out, "rgb", "test")[0].tolist() == [3, 4] and read_expected(out, "rgb", "test")[2] == []
    assert summary["videos_expected"] == {"train": 3, "val": 1, "test": 2}
    assert summary["missing"] == {"train": missing, "val": [], "test": []}
    assert summary["bytes"]["rgb"] == sum(p.stat().st_size for p in (out / "rgb").glob("*.h5"))
    assert summary["bytes_per_sample"]["rgb"] == round(summary["bytes"]["rgb"] / 14, 1)
    kept = read_resample(stores / "resample.json")
    for role, vids in (("train", [0, 1]), ("val", [2]), ("test", [3, 4])):
        rgb, flow, sg3i = (read_role(out, m, role) for m in ("rgb", "flow", "sg3i"))
        n_clips = [(len(kept[v]) - 3) // 2 + 1 for v in vids]  # 3-frame clips every 2 of 6 or 9 frames
        np.testing.assert_array_equal(rgb["video"], np.repeat(vids, n_clips))
        np.testing.assert_array_equal(rgb["clip"], np.concatenate([np.arange(n) for n in n_clips]))
        np.testing.assert_array_equal(rgb["label"], [0 if VIDEOS[v][0] == "clap" else 1 if VIDEOS[v][0] == "jump"
                                                     else 2 for v in rgb["video"]])
        for k in ("label", "video", "clip"):
            np.testing.assert_array_equal(flow[k], rgb[k])
            np.testing.assert_array_equal(sg3i[k], rgb[k])
    test_flow, test_rgb = read_role(out, "flow", "test"), read_role(out, "rgb", "test")
    with FlowStore(stores / "flow") as fs, FrameStore(stores / "frames") as frames, SG3IStore(stores / "sg3i") as ss:
        # sample 1 of test = video 3, clip 1: resampled frames 2..4, middle 3, flow pairs 2 and 3
        pairs = fs.read(3, [2, 3])
        assert len(np.unique(pairs[..., 0])) > 5 and not np.array_equal(pairs[..., 0], pairs[..., 1])
        np.testing.assert_array_equal(test_flow["x"][1], np.concatenate([pairs[0], pairs[1]], axis=-1))
        np.testing.assert_array_equal(test_rgb["x"][1], frames.read(3, [kept[3][3]])[0])
        np.testing.assert_array_equal(read_role(out, "sg3i", "test")["x"][1], ss.read(3, [1])[0])
        # what the refs say: the middle frame, the SG3I frames, the pairs
        assert test_rgb["ref"][1].tolist() == [kept[3][3]] and test_flow["ref"][1].tolist() == [2, 3]
        assert read_role(out, "sg3i", "test")["ref"][1].tolist() == ss.triples(3)[1] == kept[3][[2, 3, 4]].tolist()
    with h5py.File(out / "flow" / "test-00000.h5") as f:
        assert f.attrs["store"] == os.path.relpath(stores / "flow", out / "flow")
        assert json.loads(f.attrs["sample_shape"]) == [24, 24, 4]
        flow_meta = json.loads((stores / "flow" / "meta.json").read_text())
        assert json.loads(f.attrs["stamps"]) == {v: flow_meta["videos"][v]["stamp"] for v in ("3", "4")}
        assert f["ref"].dtype == np.int64 and f["ref"].shape == (4, 2)
    assert sorted(p.name for p in previews.iterdir()) == ["clap.png", "jump.png", "wave.png"]
    image = cv2.imread(str(previews / "jump.png"))  # title, 3 panels of 24 px x3 with labels, 4 px gaps
    assert image.shape == (16 + 72 + 16, 3 * 72 + 2 * 4, 3)
    rgb = read_role(out, "rgb", "train")["x"][2 + 2]  # jump = video 1 (after 2 clips of video 0), clip 4 // 2
    np.testing.assert_array_equal(image[16:16 + 72:3, 0:72:3, ::-1], rgb)


def test_stage_is_byte_deterministic(stores, tmp_path):
    def digests() -> dict[str, str]:
        files = [p for p in sorted(tmp_path.rglob("*")) if p.is_file()]
        return {str(p.relative_to(tmp_path)): hashlib.sha256(p.read_bytes()).hexdigest() for p in files}

    run_stage(stores, tmp_path / "shards", tmp_path / "previews")
    first = digests()
    (tmp_path / "shards" / "rgb" / "stale-00009.h5").write_bytes(b"old")
    run_stage(stores, tmp_path / "shards", tmp_path / "previews")
    assert digests() == first and len(first) == 3 * 6 + 1 + 3


def test_shards_change_when_a_referenced_part_does(stores, tmp_path):
    def digests(modality: str) -> dict[str, str]:
        files = sorted((tmp_path / "s" / modality).iterdir())
        return {p.name: hashlib.sha256(p.read_bytes()).hexdigest() for p in files}

    run_stage(stores, tmp_path / "s", tmp_path / "previews")
    before = {m: digests(m) for m in ("rgb", "flow")}
    meta = json.loads((stores / "flow" / "meta.json").read_text())
    meta["videos"]["3"]["stamp"] = "0" * 64  # as if video 3's flow had been made anew with other params
    write_json(stores / "flow" / "meta.json", meta)
    run_stage(stores, tmp_path / "s", tmp_path / "previews")
    after = {m: digests(m) for m in ("rgb", "flow")}
    assert after["rgb"] == before["rgb"]  # the spatial stream's samples did not change
    changed = sorted(name for name in after["flow"] if after["flow"][name] != before["flow"][name])
    assert changed == ["test-00000.h5", "test-00001.h5"]  # the test role holds video 3


def test_video_missing_from_a_store_is_left_out_and_reported(stores, tmp_path):
    flow_dir = tmp_path / "flow"
    flow_dir.mkdir()
    (flow_dir / "parts").symlink_to(stores / "flow" / "parts")
    meta = json.loads((stores / "flow" / "meta.json").read_text())
    del meta["videos"]["3"]
    write_json(flow_dir / "meta.json", meta)
    report = tmp_path / "flow_report.json"
    write_json(report, {"failed": [{"id": 3, "path": "v3.mkv", "class": "wave", "reason": "cv2 error"}]})
    out = tmp_path / "shards"
    summary = build_shards(stores / "index.json", stores / "frames", stores / "resample.json", stores / "sg3i",
                           flow_dir, out, tmp_path / "previews", CLIP, 2, 20.0, ShardsConfig(4),
                           [stores / "frames.json", report])
    assert summary["videos"] == {"train": 2, "val": 1, "test": 1}  # video 3 is in no modality
    assert summary["samples"]["sg3i"]["test"] == summary["samples"]["flow"]["test"] == 2  # video 4's clips
    assert set(read_role(out, "rgb", "test")["video"].tolist()) == {4}
    ids, _, missing = read_expected(out, "rgb", "test")
    assert ids.tolist() == [3, 4]
    assert [(m["id"], m["reason"]) for m in missing] == [(3, "flow_report.json: cv2 error")]
    no_report = run_stage(stores, tmp_path / "again", tmp_path / "previews", flow_dir=flow_dir)
    assert no_report["missing"]["test"][0]["reason"] == f"not in the flow store {flow_dir}"


def test_stores_made_with_other_params_are_errors(stores, tmp_path):
    with pytest.raises(ShardsError, match="flow store .* has stack 2, bound 20.0; params say flow.stack 2, "
                                          "flow.bound 10.0"):
        run_stage(stores, tmp_path / "shards", tmp_path / "previews", bound=10.0)
    with pytest.raises(ShardsError, match=r"SG3I store .* was made with clip \{'frames': 3, 'step': 2\}"):
        run_stage(stores, tmp_path / "shards", tmp_path / "previews", clip=ClipConfig(frames=3, step=3))
