"""The frames stage: shards, report, failure limit, exact round trip, determinism, the store."""

from __future__ import annotations

import hashlib
import importlib.util
import json
import multiprocessing
import os
import pickle
from pathlib import Path

import h5py
import numpy as np
import pytest
import yaml

from conftest import damaged_xvid
from twostream.config import FramesConfig
from twostream.frames import FrameInfo, FramesError, FrameStore, extract_frames
from twostream.video import write_video

REPO = Path(__file__).resolve().parents[1]


def noise(t: int, h: int, w: int, seed: int) -> np.ndarray:
    """``(t, h, w, 3) uint8`` random frames."""
    return np.random.default_rng(seed).integers(0, 256, (t, h, w, 3), dtype=np.uint8)


def config(**overrides) -> FramesConfig:
    values = dict(width=16, height=12, workers=2, max_failures=1.0, videos_per_shard=2)
    values.update(overrides)
    return FramesConfig(**values)


@pytest.fixture
def dataset(tmp_path) -> tuple[Path, dict[int, np.ndarray]]:
    """An index of: 3 good lossless videos, one corrupt, one empty, one truncated, one unused.

    Returns ``(index path, id -> frames of the good videos)``; frames are at the working size.
    """
    videos = tmp_path / "videos"
    videos.mkdir()
    # noise is stored raw, 4-bit noise compressed (see encode_chunks): both must read back exact
    good = {0: noise(7, 12, 16, 0), 3: noise(5, 12, 16, 1), 6: noise(9, 12, 16, 2) % 16}
    for vid, frames in good.items():
        write_video(videos / f"good {vid}.mkv", frames, 25 if vid == 3 else 30, codec="ffv1")
    (videos / "corrupt.avi").write_bytes(noise(1, 10, 100, 9).tobytes())
    (videos / "empty.avi").write_bytes(b"")
    y, x = np.mgrid[0:48, 0:64]
    moving = np.stack([np.stack([(2 * x + 3 * i) % 256, (2 * y + i) % 256, (x + y + 5 * i) % 256], -1)
                       for i in range(60)]).astype(np.uint8)
    write_video(videos / "whole.avi", moving, 30, codec="xvid")
    data = (videos / "whole.avi").read_bytes()  # cut mid-stream: the last packet is damaged
    (videos / "truncated.avi").write_bytes(data[: len(data) // 2])
    names = {0: "good 0.mkv", 1: "corrupt.avi", 2: "empty.avi", 3: "good 3.mkv", 4: "truncated.avi",
             5: "whole.avi", 6: "good 6.mkv"}
    index = [{"path": str(videos / name), "class": f"c{vid % 2}", "label": vid % 2,
              "role": "unused" if vid == 5 else ("test" if vid == 6 else "train")}
             for vid, name in sorted(names.items())]
    (tmp_path / "index.json").write_text(json.dumps(index))
    return tmp_path / "index.json", good


def digest(folder: Path) -> dict[str, str]:
    return {p.name: hashlib.sha256(p.read_bytes()).hexdigest() for p in sorted(folder.iterdir())}


def test_good_videos_stored_and_bad_ones_reported(dataset, tmp_path):
    index_path, good = dataset
    report = extract_frames(index_path, tmp_path / "frames", tmp_path / "report.json", config())
    assert report == json.loads((tmp_path / "report.json").read_text())
    assert report["counts"] == {"indexed": 7, "attempted": 6, "stored": 3, "failed": 3, "skipped": 1,
                                "warned": 0}
    assert report["failed_fraction"] == 0.5
    reasons = {f["id"]: f["reason"] for f in report["failed"]}
    assert sorted(reasons) == [1, 2, 4]
    assert reasons[1].startswith("cannot open")
    assert reasons[2] == "empty file (0 bytes)"
    assert reasons[4].startswith("decode error")
    assert report["failed"][0]["path"].endswith("corrupt.avi") and report["failed"][0]["class"] == "c1"
    assert report["skipped"] == [{"id": 5, "path": str(Path(index_path).parent / "videos/whole.avi"),
                                  "class": "c1", "reason": "role 'unused' is not decoded"}]

    store = FrameStore(tmp_path / "frames")
    assert store.video_ids == [0, 3, 6] and len(store) == 3 and 3 in store and 1 not in store
    assert store.info(3) == FrameInfo(fps=25.0, n_frames=5)
    for vid, frames in good.items():
        np.testing.assert_array_equal(store.read(vid), frames)  # lossless end to end
    meta = json.loads((tmp_path / "frames/meta.json").read_text())
    assert meta["videos"]["6"] == {"shard": "frames-00001.h5", "dataset": "000006", "fps": 30.0,
                                   "n_frames": 9}
    assert meta["params"] == {"width": 16, "height": 12, "max_failures": 1.0,
                              "videos_per_shard": 2}  # frames.workers: execution only, not recorded
    files = sorted(p.name for p in (tmp_path / "frames").iterdir())
    assert files == ["frames-00000.h5", "frames-00001.h5", "meta.json"]
    with h5py.File(tmp_path / "frames/frames-00000.h5", "r") as f:
        assert sorted(f) == ["000000", "000003"]
        ds = f["000003"]
        assert ds.shape == (5, 12, 16, 3) and ds.dtype == np.uint8 and ds.chunks == (1, 12, 16, 3)
        assert ds.compression is None  # incompressible noise
        assert dict(ds.attrs) == {"fps": 25.0, "n_frames": 5}
    with h5py.File(tmp_path / "frames/frames-00001.h5", "r") as f:
        assert sorted(f) == ["000006"] and f["000006"].compression == "gzip"


def test_damaged_video_that_decodes_whole_is_stored_and_its_warning_recorded(tmp_path):
    path = damaged_xvid(tmp_path / "old divx.avi", seed=1)
    (tmp_path / "index.json").write_text(json.dumps([{"path": str(path), "class": "c0", "label": 0,
                                                      "role": "test"}]))
    report = extract_frames(tmp_path / "index.json", tmp_path / "frames", tmp_path / "report.json",
                            config(workers=1))
    assert report["counts"]["stored"] == 1 and report["counts"]["warned"] == 1 and report["failed"] == []
    (warned,) = report["warned"]
    assert (warned["id"], warned["path"], warned["class"]) == (0, str(path), "c0")
    assert warned["reason"] and warned["n_warnings"] >= 1
    assert FrameStore(tmp_path / "frames").info(0).n_frames == 60


def test_too_many_failures_stop_the_stage(dataset, tmp_path):
    index_path, _ = dataset
    with pytest.raises(FramesError, match=r"3 of 6 videos failed to decode \(50.0%\)"):
        extract_frames(index_path, tmp_path / "frames", tmp_path / "report.json",
                       config(max_failures=0.49))
    assert json.loads((tmp_path / "report.json").read_text())["counts"]["failed"] == 3  # written first
    extract_frames(index_path, tmp_path / "frames", tmp_path / "report.json", config(max_failures=0.5))


def test_stage_script_exits_with_message(dataset, tmp_path, monkeypatch):
    spec = importlib.util.spec_from_file_location("stage_frames", REPO / "stages" / "frames.py")
    stage = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(stage)
    index_path, _ = dataset
    params = {"frames": dict(width=16, height=12, workers=1, max_failures=0.0, videos_per_shard=500)}
    (tmp_path / "params.yaml").write_text(yaml.safe_dump(params))
    monkeypatch.chdir(tmp_path)
    with pytest.raises(SystemExit) as e:
        stage.main([str(index_path), "frames", "report.json"])
    assert str(e.value).startswith("frames: 3 of 6 videos failed to decode")


def test_byte_identical_runs(dataset, tmp_path):
    index_path, _ = dataset
    extract_frames(index_path, tmp_path / "a", tmp_path / "ra.json", config())
    extract_frames(index_path, tmp_path / "b", tmp_path / "rb.json", config())
    assert digest(tmp_path / "a") == digest(tmp_path / "b")
    assert (tmp_path / "ra.json").read_bytes() == (tmp_path / "rb.json").read_bytes()
    # one worker or two: the same bytes, meta.json included (workers is an execution-only key)
    extract_frames(index_path, tmp_path / "c", tmp_path / "rc.json", config(workers=1))
    assert digest(tmp_path / "c") == digest(tmp_path / "a")
    # a rerun into the same folder replaces every shard (one shard instead of two here)
    extract_frames(index_path, tmp_path / "a", tmp_path / "ra.json", config(videos_per_shard=10))
    assert sorted(p.name for p in (tmp_path / "a").iterdir()) == ["frames-00000.h5", "meta.json"]


def test_store_reads_indices_in_any_order(dataset, tmp_path):
    index_path, good = dataset
    extract_frames(index_path, tmp_path / "frames", tmp_path / "report.json", config())
    with FrameStore(tmp_path / "frames") as store:
        np.testing.assert_array_equal(store.read(6, [8, 2, 2, 0]), good[6][[8, 2, 2, 0]])
        np.testing.assert_array_equal(store.read(6, np.array([4])), good[6][[4]])
        assert store.read(6, []).shape == (0, 12, 16, 3)
        with pytest.raises(IndexError, match=r"0\.\.8; got \[9, -1\]"):
            store.read(6, [9, -1, 3])
        with pytest.raises(KeyError, match="video 1 is not in"):
            store.info(1)


def _read_in_child(store: FrameStore) -> bytes:
    return store.read(3).tobytes()


_FORKED: FrameStore | None = None  # a store inherited through fork, as DataLoader workers get theirs


def _read_forked() -> tuple[bytes, bool]:
    frames = _FORKED.read(3).tobytes()
    return frames, _FORKED._pid == os.getpid()  # reopened its own handles in this process


def test_store_in_forked_and_spawned_workers(dataset, tmp_path):
    global _FORKED
    index_path, good = dataset
    extract_frames(index_path, tmp_path / "frames", tmp_path / "report.json", config())
    store = FrameStore(tmp_path / "frames")
    store.read(3)  # the parent now holds an open handle on the shard
    assert pickle.loads(pickle.dumps(store))._files == {}
    _FORKED = store
    try:
        with multiprocessing.get_context("fork").Pool(2) as pool:
            forked = pool.starmap(_read_forked, [()] * 2)
    finally:
        _FORKED = None
    assert forked == [(good[3].tobytes(), True)] * 2
    with multiprocessing.get_context("spawn").Pool(1) as pool:
        assert pool.map(_read_in_child, [store]) == [good[3].tobytes()]
    np.testing.assert_array_equal(store.read(3), good[3])  # the parent's handle is untouched
    store.close()


def test_bad_params_are_rejected(dataset, tmp_path):
    index_path, _ = dataset
    with pytest.raises(ValueError, match="videos_per_shard must be >= 1; got 0"):
        extract_frames(index_path, tmp_path / "f", tmp_path / "r.json", config(videos_per_shard=0))
    with pytest.raises(ValueError, match="max_failures must be a fraction in 0..1; got 2"):
        extract_frames(index_path, tmp_path / "f", tmp_path / "r.json", config(max_failures=2))
