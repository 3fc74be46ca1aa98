"""TV-L1 flow: known shifts, quantisation, colour coding, the flow stage and its store."""

from __future__ import annotations

import dataclasses
import hashlib
import json
import multiprocessing
import os
import pickle
import signal
from pathlib import Path

import h5py
import numpy as np
import pytest

from conftest import shifted, texture
from twostream.ingest.clips import needed_pairs
from twostream.runtime.config import ClipConfig, FlowConfig, FramesConfig, ResampleConfig
from twostream.motion.flow import FlowError, RUN_KEYS, compute_flow, extract_flow, quantize
from twostream.motion.flowstore import FlowStore, dequantize
from twostream.ingest.codec import decode_image
from twostream.ingest.frames import extract_frames
from twostream.ingest.resample import resample_videos
from twostream.ingest.videowriter import write_video

# OpenCV's own TV-L1 parameters, as params.yaml has them
OPENCV = FlowConfig(tau=0.25, lambda_=0.15, theta=0.3, nscales=5, warps=5, epsilon=0.01,
                    inner_iterations=30, outer_iterations=10, scale_step=0.8, gamma=0.0,
                    median_filtering=5, backend="opencv", bound=20.0, stack=2, workers=1, threads=1,
                    max_failures=0.5, codec="png", quality=95)
FAST = dataclasses.replace(OPENCV, epsilon=0.1, nscales=3)  # relaxed: a few ms per 32x32 pair
CLIP = ClipConfig(frames=3, step=6)


@pytest.mark.parametrize("dx, dy", [(1.5, -0.75), (-2.0, 1.0), (0.5, 2.25)])
def test_known_shift_is_recovered(dx, dy):
    image = texture(64, 64, seed=0)
    flow = compute_flow(image, shifted(image, dx, dy), OPENCV)
    assert flow.shape == (64, 64, 2) and flow.dtype == np.float32
    mean = flow[8:-8, 8:-8].reshape(-1, 2).mean(axis=0)
    assert abs(mean[0] - dx) < 0.1 and abs(mean[1] - dy) < 0.1, mean
    assert np.sign(mean[0]) == np.sign(dx) and np.sign(mean[1]) == np.sign(dy)


def test_params_as_mapping_and_backend_checked():
    image, fast = texture(32, 32, seed=1), dataclasses.asdict(FAST)
    moved = shifted(image, 1.0, 0.0)
    as_config = compute_flow(image, moved, FAST)
    as_mapping = compute_flow(image, moved, {**fast, "backend": "opencv"})
    np.testing.assert_array_equal(as_config, as_mapping)
    np.testing.assert_array_equal(compute_flow(image, moved, {**fast, "backend": "auto"}),
                                  as_config)
    with pytest.raises(ValueError, match="backend must be one of opencv, torch, auto; got 'cuda'"):
        compute_flow(image, moved, {**fast, "backend": "cuda"})
    by_torch = compute_flow(image, moved, {**fast, "backend": "torch"})
    assert by_torch.shape == (32, 32, 2) and by_torch.dtype == np.float32
    inner = (slice(6, -6), slice(6, -6))
    assert np.abs(by_torch[inner] - as_config[inner]).max() < 0.05  # same algorithm, other arithmetic
    with pytest.raises(KeyError, match="inner_iterations"):
        compute_flow(image, moved, {k: v for k, v in fast.items() if k != "inner_iterations"})
    with pytest.raises(ValueError, match="flow.epsilon must be > 0; got 0"):
        compute_flow(image, moved, dataclasses.replace(FAST, epsilon=0))
    with pytest.raises(ValueError, match="flow.median_filtering must be 1 .off. or an odd integer >= 3; got 4"):
        compute_flow(image, moved, dataclasses.replace(FAST, median_filtering=4))
    with pytest.raises(ValueError, match=r"prev must be an \(H, W\) uint8 .*; got \(32, 32, 3\)"):
        compute_flow(np.dstack([image] * 3), moved, FAST)
    with pytest.raises(ValueError, match=r"one shape; got \(32, 32\) and \(16, 32\)"):
        compute_flow(image, moved[:16], FAST)


def test_quantize_exact_values_and_round_trip():
    q = quantize(np.array([0.0, -20.0, 20.0, 35.0, -1e6, 20 / 255, -20 / 255], np.float32), 20.0)
    assert q.dtype == np.uint8
    np.testing.assert_array_equal(q, [128, 0, 255, 255, 0, 128, 127])  # +-b/255 = half a step
    values = np.linspace(-20, 20, 4000, dtype=np.float32).reshape(-1, 2)
    back = dequantize(quantize(values, 20.0), 20.0)
    assert back.shape == values.shape and back.dtype == np.float32
    assert np.abs(back - values).max() <= 20 / 255 + 1e-5
    field = np.full((3, 4, 2), [50.0, -7.0], np.float32)
    assert quantize(field, 5.0).shape == (3, 4, 2)
    np.testing.assert_allclose(dequantize(quantize(field, 5.0), 5.0), np.full((3, 4, 2), [5.0, -5.0]))
    with pytest.raises(ValueError, match="bound must be > 0; got 0"):
        quantize(field, 0)
    with pytest.raises(ValueError, match="1 non-finite"):
        quantize(np.array([np.nan, 0], np.float32), 20.0)


LENGTHS = {0: 18, 1: 8, 2: 13}  # frames at 6 fps: 3 clips, 1 clip, 2 clips


@pytest.fixture
def dataset(tmp_path) -> Path:
    """index.json, frames (2 videos per shard) and resample.json of 3 tiny lossless 6-fps videos
    whose texture moves 1 px right per frame."""
    index = []
    for vid, n in LENGTHS.items():
        big = texture(48, 48 + n, seed=vid, sigma=1.5)
        gray = np.stack([big[8:40, n - i:n - i + 32] for i in range(n)])  # content moves +1 px per frame
        path = tmp_path / f"v{vid}.mkv"
        write_video(path, np.repeat(gray[..., None], 3, axis=-1), 6, codec="ffv1")
        index.append({"path": str(path), "class": f"c{vid}", "label": vid, "role": "train"})
    (tmp_path / "index.json").write_text(json.dumps(index))
    frames = FramesConfig(width=32, height=32, workers=1, max_failures=0.0, codec="png", quality=95)
    extract_frames(tmp_path / "index.json", tmp_path / "frames", tmp_path / "frames.json", frames, 6)
    resample_videos(tmp_path / "index.json", tmp_path / "frames", tmp_path / "resample.json",
                    tmp_path / "sheet.png", ResampleConfig(fps=6), CLIP.frames)
    return tmp_path


def run_stage(root: Path, out: str, cfg: FlowConfig = FAST) -> dict:
    return extract_flow(root / "index.json", root / "frames", root / "resample.json", root / out,
                        root / f"{out}.json", cfg, CLIP)


def digest(folder: Path) -> dict[str, str]:
    """Relative path -> SHA-256 of every file under ``folder``."""
    return {p.relative_to(folder).as_posix(): hashlib.sha256(p.read_bytes()).hexdigest()
            for p in sorted(folder.rglob("*")) if p.is_file()}


def test_stage_layout_store_and_determinism(dataset):
    report = run_stage(dataset, "flow")
    written = json.loads((dataset / "flow.json").read_text())
    assert written == {k: v for k, v in report.items() if k not in RUN_KEYS}
    assert report["counts"] == {"videos": 3, "stored": 3, "failed": 0} and report["failed"] == []
    assert report["pairs"] == 6 + 2 + 4 and report["workers"] == 1 and report["threads"] == 1
    assert (report["computed"], report["reused"]) == (3, 0)
    parts = [f"parts/{dataset.name}/v{vid}.mkv.h5" for vid in range(3)]  # keys <parent folder>/<file name>
    assert sorted(digest(dataset / "flow")) == ["meta.json", *parts]
    meta, fast = json.loads((dataset / "flow" / "meta.json").read_text()), dataclasses.asdict(FAST)
    assert meta["params"] == {k: v for k, v in fast.items() if k not in ("workers", "threads")}
    assert (meta["width"], meta["height"]) == (32, 32)
    store = FlowStore(dataset / "flow")
    assert store.video_ids == [0, 1, 2] and store.bound == 20.0 and store.stack == 2
    for vid, n in LENGTHS.items():
        pairs = needed_pairs(n, CLIP.frames, CLIP.step, FAST.stack)
        part = f"parts/{dataset.name}/v{vid}.mkv.h5"
        entry = meta["videos"][str(vid)]
        assert entry.pop("stamp") and entry == {"shard": part, "dataset": "data", "pairs": pairs}
        with h5py.File(dataset / "flow" / part, "r") as f:
            data, offsets = f["data"][()], f["offsets"][()]
            assert len(offsets) == 2 * len(pairs) + 1 and offsets[-1] == len(data) and data.dtype == np.uint8
            assert f.attrs["pairs"].dtype == np.int64 and f.attrs["pairs"].tolist() == pairs
            assert f.attrs["codec"] == "png"
            fields = [decode_image(data[a:b], gray=True) for a, b in zip(offsets[:-1], offsets[1:])]
            stored = np.stack(fields).reshape(len(pairs), 2, 32, 32).transpose(0, 2, 3, 1)  # x, y per pair
        assert store.pairs(vid) == pairs
        rows = [*range(len(pairs))[::-1], 0]  # any order, repeats allowed
        np.testing.assert_array_equal(store.read(vid, [pairs[r] for r in rows]), stored[rows])
        mean = dequantize(stored[:, 8:-8, 8:-8], store.bound).reshape(-1, 2).mean(axis=0)
        assert abs(mean[0] - 1.0) < 0.15 and abs(mean[1]) < 0.1, (vid, mean)  # 1 px right
    assert needed_pairs(18, 3, 6, 2) == [0, 1, 6, 7, 12, 13]
    assert store.read(0, []).shape == (0, 32, 32, 2)
    with pytest.raises(KeyError, match=r"video 0 has no stored flow pair\(s\) \[2\]"):
        store.read(0, [1, 2])
    with pytest.raises(KeyError, match="video 7 has no flow"):
        store.read(7, [0])
    clone = pickle.loads(pickle.dumps(store))  # handles stay behind
    np.testing.assert_array_equal(clone.read(2, [6]), store.read(2, [6]))
    store.close()
    # byte-identical on a second run, whatever the number of processes and threads
    again = run_stage(dataset, "flow_again", dataclasses.replace(FAST, workers=2, threads=2))
    assert again["workers"] == 2 and again["threads"] == 2
    assert digest(dataset / "flow_again") == digest(dataset / "flow")
    # a rerun into the same folder computes nothing; other TV-L1 params recompute every video
    assert run_stage(dataset, "flow")["reused"] == 3 and digest(dataset / "flow") == digest(dataset / "flow_again")
    assert run_stage(dataset, "flow", dataclasses.replace(FAST, epsilon=0.2))["reused"] == 0
    assert digest(dataset / "flow") != digest(dataset / "flow_again")


def test_jpeg_fields_stay_within_a_quantisation_step_or_so(dataset):
    run_stage(dataset, "lossless")
    assert run_stage(dataset, "jpeg", dataclasses.replace(FAST, codec="jpeg", quality=95))["counts"]["stored"] == 3
    with FlowStore(dataset / "lossless") as exact, FlowStore(dataset / "jpeg") as lossy:
        for vid in exact.video_ids:
            a, b = (dequantize(s.read(vid, s.pairs(vid)), 20.0) for s in (exact, lossy))
            error = np.linalg.norm(a - b, axis=-1).mean()  # mean endpoint error, px
            assert 0 < error < 2 * 40 / 255, (vid, error)  # lossy, but about a quantisation step (0.157 px)
    # (sizes are for the benchmark at real size: on 32x32 fields a JPEG header outweighs what it saves)


def test_stage_torch_backend_matches_opencv(dataset, monkeypatch):
    """backend torch: same files and layout, flow within a quantisation step or so of OpenCV's."""
    run_stage(dataset, "flow")
    torch_cfg = dataclasses.replace(FAST, backend="torch")
    report = run_stage(dataset, "flow_torch", torch_cfg)
    assert report["counts"] == {"videos": 3, "stored": 3, "failed": 0} and report["pairs"] == 12
    meta = json.loads((dataset / "flow_torch" / "meta.json").read_text())
    assert meta["params"]["backend"] == "torch"
    with FlowStore(dataset / "flow") as cv, FlowStore(dataset / "flow_torch") as pt:
        for vid, n in LENGTHS.items():
            pairs = needed_pairs(n, CLIP.frames, CLIP.step, FAST.stack)
            a = dequantize(cv.read(vid, pairs), 20.0)[:, 4:-4, 4:-4]
            b = dequantize(pt.read(vid, pairs), 20.0)[:, 4:-4, 4:-4]
            assert np.abs(a - b).mean() < 0.05, vid  # one step is 40/255 = 0.157 px
    # a GPU run batches pairs of several videos in one process: same results on CPU tensors
    monkeypatch.setattr("twostream.motion.flow._cuda", lambda: True)
    batched = run_stage(dataset, "flow_batched", torch_cfg)
    assert batched["workers"] == 1
    with FlowStore(dataset / "flow_torch") as one, FlowStore(dataset / "flow_batched") as many:
        for vid, n in LENGTHS.items():
            pairs = needed_pairs(n, CLIP.frames, CLIP.step, FAST.stack)
            np.testing.assert_array_equal(one.read(vid, pairs), many.read(vid, pairs))


def test_failed_videos_are_reported(dataset):
    doc = json.loads((dataset / "resample.json").read_text())
    doc["videos"]["1"] = doc["videos"]["1"][:2]  # too short for a clip
    doc["videos"]["2"][7] = 99  # a native frame the store does not have
    (dataset / "resample.json").write_text(json.dumps(doc))
    with pytest.raises(FlowError, match=r"flow failed for 2 of 3 videos \(66.7%\), more than flow.max_failures = "
                                        r"50.0%; reasons in .*flow.json"):
        run_stage(dataset, "flow")
    assert json.loads((dataset / "flow.json").read_text())["counts"]["failed"] == 2  # written first
    report = run_stage(dataset, "flow", dataclasses.replace(FAST, max_failures=0.7))
    assert report["counts"] == {"videos": 3, "stored": 1, "failed": 2} and report["pairs"] == 6
    assert [(f["id"], f["class"], f["path"]) for f in report["failed"]] == [
        (1, "c1", str(dataset / "v1.mkv")), (2, "c2", str(dataset / "v2.mkv"))]
    assert report["failed"][0]["reason"] == "2 resampled frames hold no clip of 3 frames"
    reason = report["failed"][1]["reason"]
    assert reason.startswith("IndexError: frames [99] of video 2 are not stored")
    assert FlowStore(dataset / "flow").video_ids == [0]


def test_bad_params():
    with pytest.raises(ValueError, match="flow.stack must be in 1..clip.frames-1 = 1..2; got 3"):
        extract_flow("i", "f", "r", "o", "p", dataclasses.replace(FAST, stack=3), CLIP)


def _killed_flow(root: Path, after: int) -> None:
    """Run the stage and SIGKILL this process once ``after`` videos were stored (a hard stop)."""
    done = []

    def stop(result) -> None:
        done.append(result)
        if len(done) == after:
            os.kill(os.getpid(), signal.SIGKILL)

    extract_flow(root / "index.json", root / "frames", root / "resample.json", root / "killed",
                 root / "killed.json", FAST, CLIP, on_stored=stop)


def test_a_killed_run_resumes_and_ends_byte_identical(dataset):
    run_stage(dataset, "flow")
    child = multiprocessing.get_context("spawn").Process(target=_killed_flow, args=(dataset, 2))
    child.start()
    child.join()
    assert child.exitcode == -signal.SIGKILL
    kept = sorted(digest(dataset / "killed"))
    assert len(kept) == 2 and "meta.json" not in kept  # the parts finished before the kill
    computed = []
    report = extract_flow(dataset / "index.json", dataset / "frames", dataset / "resample.json", dataset / "killed",
                          dataset / "killed.json", FAST, CLIP, on_stored=computed.append)
    assert (report["reused"], [r.vid for r in computed]) == (2, [2])  # only what was missing
    assert digest(dataset / "killed") == digest(dataset / "flow")
    assert (dataset / "killed.json").read_bytes() == (dataset / "flow.json").read_bytes()
