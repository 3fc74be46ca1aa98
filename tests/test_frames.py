"""The frames stage: one part per video, report, failure limit, codecs, determinism, resuming, the store."""

from __future__ import annotations

import hashlib
import importlib.util
import json
import multiprocessing
import os
import pickle
import signal
import time
from pathlib import Path

import h5py
import numpy as np
import pytest
import yaml

from conftest import damaged_xvid, texture
from twostream.ingest.clips import resample_indices
from twostream.runtime.config import FramesConfig
from twostream.ingest.framestore import FrameInfo, FrameStore
from twostream.ingest.frames import FramesError, codec_roundtrip, decode_frame, encode_frame, extract_frames
from twostream.ingest.videowriter import write_video

REPO = Path(__file__).resolve().parents[1]


def noise(t: int, h: int, w: int, seed: int) -> np.ndarray:
    """``(t, h, w, 3) uint8`` random frames."""
    return np.random.default_rng(seed).integers(0, 256, (t, h, w, 3), dtype=np.uint8)


def config(**overrides) -> FramesConfig:
    values = dict(width=16, height=12, workers=2, max_failures=1.0, codec="png", quality=95)
    values.update(overrides)
    return FramesConfig(**values)


@pytest.fixture
def dataset(tmp_path) -> tuple[Path, dict[int, np.ndarray]]:
    """An index of: 3 good lossless videos, one corrupt, one empty, one truncated, one unused.

    Returns ``(index path, id -> frames of the good videos)``; frames are at the working size.
    """
    videos = tmp_path / "videos"
    videos.mkdir()
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
    """Relative path -> SHA-256 of every file under ``folder``."""
    return {p.relative_to(folder).as_posix(): hashlib.sha256(p.read_bytes()).hexdigest()
            for p in sorted(folder.rglob("*")) if p.is_file()}


def test_good_videos_stored_and_bad_ones_reported(dataset, tmp_path):
    index_path, good = dataset
    report = extract_frames(index_path, tmp_path / "frames", tmp_path / "report.json", config(), 0)
    assert (report.pop("computed"), report.pop("reused")) == (6, 0)
    assert report == json.loads((tmp_path / "report.json").read_text())
    assert report["counts"] == {"indexed": 7, "attempted": 6, "stored": 3, "failed": 3, "skipped": 1,
                                "warned": 0, "decoded_frames": 21, "stored_frames": 21}
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
        np.testing.assert_array_equal(store.read(vid), frames)  # png: lossless end to end
    meta = json.loads((tmp_path / "frames/meta.json").read_text())
    entry = meta["videos"]["6"]
    assert entry.pop("stamp") and entry == {"shard": "parts/videos/good 6.mkv.h5", "dataset": "data",
                                            "key": "videos/good 6.mkv", "fps": 30.0, "n_frames": 9,
                                            "n_stored": 9}
    assert meta["params"] == {"width": 16, "height": 12, "max_failures": 1.0, "codec": "png",
                              "quality": 95}  # frames.workers: execution only, not recorded
    assert sorted(digest(tmp_path / "frames")) == ["meta.json", "parts/videos/good 0.mkv.h5",
                                                   "parts/videos/good 3.mkv.h5", "parts/videos/good 6.mkv.h5"]
    with h5py.File(tmp_path / "frames/parts/videos/good 3.mkv.h5", "r") as f:
        offsets = f["offsets"][()]
        assert offsets.dtype == np.int64 and len(offsets) == 6 and offsets[0] == 0
        assert f["data"].shape == (offsets[-1],) and f["data"].dtype == np.uint8
        first = decode_frame(f["data"][offsets[0]:offsets[1]])
        assert (f.attrs["fps"], f.attrs["n_frames"], f.attrs["codec"]) == (25.0, 5, "png")
        assert json.loads(f.attrs["warnings"]) == [] and f.attrs["part_key"] == meta["videos"]["3"]["stamp"]
    np.testing.assert_array_equal(first, good[3][0])


def test_only_the_frames_resample_keeps_are_stored(dataset, tmp_path):
    index_path, good = dataset
    report = extract_frames(index_path, tmp_path / "frames", tmp_path / "r.json", config(), 6.0)
    assert report["counts"]["decoded_frames"] == 21
    with FrameStore(tmp_path / "frames") as store:
        assert store.resample_fps == 6.0
        for vid, frames in good.items():
            fps, n = store.info(vid)
            kept = resample_indices(n, fps, 6.0)
            np.testing.assert_array_equal(store.stored_indices(vid), kept)
            np.testing.assert_array_equal(store.read(vid), frames[kept])
            np.testing.assert_array_equal(store.read(vid, kept[::-1]), frames[kept[::-1]])
        assert store.stored_indices(6).tolist() == [0, 5]  # 9 frames at 30 fps
        assert report["counts"]["stored_frames"] == 2 + 2 + 2  # 7 at 30, 5 at 25, 9 at 30 fps
        with pytest.raises(IndexError, match=r"frames \[3\] of video 6 are not stored: it holds the 2 native "
                                             r"frames kept at 6 fps of 9"):
            store.read(6, [0, 3])


def test_jpeg_frames_are_close_and_roundtrip_is_what_the_store_returns(tmp_path):
    tint = np.array([1.0, 0.85, 0.7])  # colour that varies as in footage: channels move together
    smooth = np.stack([(texture(48, 64, seed, 3.0)[..., None] * tint).astype(np.uint8) for seed in range(4)])
    write_video(tmp_path / "v.mkv", smooth, 30, codec="ffv1")
    (tmp_path / "index.json").write_text(json.dumps([{"path": str(tmp_path / "v.mkv"), "class": "c",
                                                      "label": 0, "role": "train"}]))
    extract_frames(tmp_path / "index.json", tmp_path / "frames", tmp_path / "r.json",
                   config(width=64, height=48, codec="jpeg", quality=95), 0)
    with FrameStore(tmp_path / "frames") as store:
        stored = store.read(0)
    error = np.abs(stored.astype(np.int16) - smooth).mean()
    assert 0 < error < 2.0  # lossy, by about a grey level at quality 95
    # one code path, run twice: predict's round trip gives exactly the store's frames
    np.testing.assert_array_equal(codec_roundtrip(smooth, "jpeg", 95), stored)
    assert len(encode_frame(smooth[0], "jpeg", 95)) < len(encode_frame(smooth[0], "png", 95))
    with pytest.raises(ValueError, match="frames.codec must be one of jpeg, png; got 'webp'"):
        encode_frame(smooth[0], "webp", 95)


def test_damaged_video_that_decodes_whole_is_stored_and_its_warning_recorded(tmp_path):
    path = damaged_xvid(tmp_path / "old divx.avi", seed=1)
    (tmp_path / "index.json").write_text(json.dumps([{"path": str(path), "class": "c0", "label": 0,
                                                      "role": "test"}]))
    for run in ("computed", "reused"):  # a reused part gives the same report
        report = extract_frames(tmp_path / "index.json", tmp_path / "frames", tmp_path / "report.json",
                                config(workers=1), 6.0)
        assert report[run] == 1
        assert report["counts"]["stored"] == 1 and report["counts"]["warned"] == 1 and report["failed"] == []
        (warned,) = report["warned"]
        assert (warned["id"], warned["path"], warned["class"]) == (0, str(path), "c0")
        assert warned["reason"] and warned["n_warnings"] >= 1
    assert FrameStore(tmp_path / "frames").info(0).n_frames == 60


def test_too_many_failures_stop_the_stage(dataset, tmp_path):
    index_path, _ = dataset
    with pytest.raises(FramesError, match=r"3 of 6 videos failed to decode \(50.0%\)"):
        extract_frames(index_path, tmp_path / "frames", tmp_path / "report.json", config(max_failures=0.49), 6.0)
    assert json.loads((tmp_path / "report.json").read_text())["counts"]["failed"] == 3  # written first
    report = extract_frames(index_path, tmp_path / "frames", tmp_path / "report.json", config(max_failures=0.5), 6.0)
    assert report["reused"] == 3  # the good parts survived the failed run; the bad videos are tried again


def test_stage_script_exits_with_message(dataset, tmp_path, monkeypatch):
    spec = importlib.util.spec_from_file_location("stage_frames", REPO / "stages" / "frames.py")
    stage = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(stage)
    index_path, _ = dataset
    params = {"frames": dict(width=16, height=12, workers=1, max_failures=0.0, codec="jpeg", quality=90),
              "resample": {"fps": 6}, "executor": dict(kind="local", address="", videos_per_task=1,
                                                       cpus_per_task=1, gpus_per_task=0, max_retries=3)}
    (tmp_path / "params.yaml").write_text(yaml.safe_dump(params))
    monkeypatch.chdir(tmp_path)
    with pytest.raises(SystemExit) as e:
        stage.main([str(index_path), "frames", "report.json"])
    assert str(e.value).startswith("frames: 3 of 6 videos failed to decode")


def test_byte_identical_runs_reuse_and_cleanup(dataset, tmp_path):
    index_path, _ = dataset
    first = extract_frames(index_path, tmp_path / "a", tmp_path / "ra.json", config(), 6.0)
    extract_frames(index_path, tmp_path / "b", tmp_path / "rb.json", config(), 6.0)
    assert digest(tmp_path / "a") == digest(tmp_path / "b")
    assert (tmp_path / "ra.json").read_bytes() == (tmp_path / "rb.json").read_bytes()
    # one worker or two: the same bytes, meta.json included (workers is an execution-only key)
    extract_frames(index_path, tmp_path / "c", tmp_path / "rc.json", config(workers=1), 6.0)
    assert digest(tmp_path / "c") == digest(tmp_path / "a")
    # a rerun into the same folder decodes nothing and writes the same bytes
    again = extract_frames(index_path, tmp_path / "a", tmp_path / "ra.json", config(), 6.0)
    assert (first["computed"], again["computed"], again["reused"]) == (6, 3, 3)  # the 3 failures are retried
    assert digest(tmp_path / "a") == digest(tmp_path / "b")
    # other params: every part is made again, and the folder holds only the new ones
    changed = extract_frames(index_path, tmp_path / "a", tmp_path / "ra.json", config(codec="jpeg"), 6.0)
    assert changed["reused"] == 0 and digest(tmp_path / "a") != digest(tmp_path / "b")
    extract_frames(index_path, tmp_path / "d", tmp_path / "rd.json", config(codec="jpeg"), 6.0)
    assert digest(tmp_path / "a") == digest(tmp_path / "d")
    # a video dropped from the index loses its part; a killed writer's temporary file goes too
    index = json.loads(index_path.read_text())
    (tmp_path / "a/parts/videos/good 3.mkv.h5.partial-999").write_bytes(b"half")
    (tmp_path / "a/frames-00000.h5").write_bytes(b"a shard of an earlier store layout")
    index_path.write_text(json.dumps([r for r in index if "good 3" not in r["path"]]))
    extract_frames(index_path, tmp_path / "a", tmp_path / "ra.json", config(codec="jpeg"), 6.0)
    assert sorted(digest(tmp_path / "a")) == ["meta.json", "parts/videos/good 0.mkv.h5", "parts/videos/good 6.mkv.h5"]


def test_a_video_whose_bytes_change_is_decoded_again(dataset, tmp_path):
    index_path, good = dataset
    extract_frames(index_path, tmp_path / "f", tmp_path / "r.json", config(workers=1), 0)
    write_video(Path(index_path).parent / "videos/good 3.mkv", good[3][::-1], 25, codec="ffv1")  # same name
    report = extract_frames(index_path, tmp_path / "f", tmp_path / "r.json", config(workers=1), 0)
    assert report["computed"] == 1 + 3 and report["reused"] == 2  # that video (and the 3 failures)
    np.testing.assert_array_equal(FrameStore(tmp_path / "f").read(3), good[3][::-1])


def settled(folder: Path) -> list[str]:
    """The files under ``folder`` once no part is being written there any more (a few seconds at most)."""
    seen = None
    for _ in range(100):
        now = sorted(digest(folder))
        if now == seen and not any(".partial-" in name for name in now):
            return now
        seen = now
        time.sleep(0.1)
    raise AssertionError(f"parts still being written in {folder}: {seen}")


def test_a_video_added_to_the_index_is_the_only_one_decoded(dataset, tmp_path):
    index_path, good = dataset
    extract_frames(index_path, tmp_path / "f", tmp_path / "r.json", config(workers=1), 6.0)
    before = digest(tmp_path / "f")
    new = Path(index_path).parent / "videos" / "new.mkv"
    write_video(new, noise(6, 12, 16, 7), 30, codec="ffv1")
    index = json.loads(index_path.read_text())
    # first in the index: every other video moves one position, and keeps its part
    index_path.write_text(json.dumps([{"path": str(new), "class": "c0", "label": 0, "role": "train"}, *index]))
    computed = []
    report = extract_frames(index_path, tmp_path / "f", tmp_path / "r.json", config(workers=1), 6.0,
                            on_stored=computed.append)
    assert [r.vid for r in computed if r.reason is None] == [0] and report["reused"] == 3
    after = digest(tmp_path / "f")
    assert {k: v for k, v in after.items() if k != "meta.json" and "new.mkv" not in k} == \
        {k: v for k, v in before.items() if k != "meta.json"}  # the old parts, byte for byte
    with FrameStore(tmp_path / "f") as store:
        np.testing.assert_array_equal(store.read(3 + 1), good[3][store.stored_indices(4)])


def _killed_run(index_path: Path, out: Path, after: int, workers: int) -> None:
    """Run the stage and SIGKILL this process once ``after`` videos were stored (a hard stop)."""
    done = []

    def stop(result) -> None:
        done.append(result)
        if len(done) == after:
            os.kill(os.getpid(), signal.SIGKILL)

    extract_frames(index_path, out, out.parent / "killed.json", config(workers=workers), 6.0, on_stored=stop)


@pytest.mark.parametrize("workers", [1, 2])
def test_a_killed_run_resumes_and_ends_byte_identical(dataset, tmp_path, workers):
    index_path, _ = dataset
    index = json.loads(index_path.read_text())
    index = [r for r in index if "good" in r["path"]]  # the 3 good videos ...
    videos = Path(index_path).parent / "videos"
    for n in range(3):  # ... and 3 more, so that the kill comes mid-way
        write_video(videos / f"more {n}.mkv", noise(6, 12, 16, 10 + n), 30, codec="ffv1")
        index.append({"path": str(videos / f"more {n}.mkv"), "class": "c0", "label": 0, "role": "train"})
    index_path.write_text(json.dumps(index))
    extract_frames(index_path, tmp_path / "whole", tmp_path / "rw.json", config(workers=workers), 6.0)

    child = multiprocessing.get_context("spawn").Process(target=_killed_run,
                                                         args=(index_path, tmp_path / "resumed", 2, workers))
    child.start()
    child.join()
    assert child.exitcode == -signal.SIGKILL
    kept = settled(tmp_path / "resumed")  # pool workers of the killed run may finish the job they hold
    assert "meta.json" not in kept and (len(kept) == 2 if workers == 1 else len(kept) >= 2)
    computed = []
    report = extract_frames(index_path, tmp_path / "resumed", tmp_path / "rr.json", config(workers=workers), 6.0,
                            on_stored=computed.append)
    assert report["reused"] == len(kept) and len(computed) == 6 - len(kept)  # only what was missing
    assert digest(tmp_path / "resumed") == digest(tmp_path / "whole")
    assert (tmp_path / "rr.json").read_bytes() == (tmp_path / "rw.json").read_bytes()


def _read_in_child(store: FrameStore) -> bytes:
    return store.read(3).tobytes()


_FORKED: FrameStore | None = None  # a store inherited through fork, as DataLoader workers get theirs


def _read_forked() -> tuple[bytes, bool]:
    frames = _FORKED.read(3).tobytes()
    return frames, _FORKED._items._pid == os.getpid()  # opened its own files in this process


def test_store_in_forked_and_spawned_workers(dataset, tmp_path):
    global _FORKED
    index_path, good = dataset
    extract_frames(index_path, tmp_path / "frames", tmp_path / "report.json", config(), 0)
    store = FrameStore(tmp_path / "frames")
    store.read(3)  # the parent now holds an open file of the part
    assert pickle.loads(pickle.dumps(store))._items._fds == {} and store._items._fds
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


def test_store_keeps_a_bounded_number_of_files_open(dataset, tmp_path, monkeypatch):
    index_path, good = dataset
    extract_frames(index_path, tmp_path / "frames", tmp_path / "report.json", config(), 0)
    monkeypatch.setattr("twostream.ingest.h5store.MAX_OPEN_FILES", 2)
    with FrameStore(tmp_path / "frames") as store:
        for vid in (0, 3, 6, 0, 3):
            np.testing.assert_array_equal(store.read(vid, [1]), good[vid][[1]])
            assert len(store._items._fds) <= 2
        assert list(store._items._fds) == ["parts/videos/good 0.mkv.h5", "parts/videos/good 3.mkv.h5"]
    assert store._items._fds == {}  # closed with the store
