"""Per-video HDF5 shards: writer layout and bytes, chunk encoding, the lazy store."""

from __future__ import annotations

import hashlib
import json
import pickle
import zlib
from pathlib import Path

import h5py
import numpy as np
import pytest

from twostream.ingest.h5store import (
    META_NAME, VideoShardWriter, VideoStore, clear_shards, dataset_name, encode_chunks,
)

SHARD = "demo-{:05d}.h5"


def noise(shape: tuple[int, ...], seed: int) -> np.ndarray:
    return np.random.default_rng(seed).integers(0, 256, shape, dtype=np.uint8)


def write_store(out: Path, videos: dict[int, np.ndarray], per_shard: int = 2) -> dict[str, dict]:
    """Write ``videos`` (id -> ``(N, 4, 5, 2) uint8``) with alternating paths, plus ``meta.json``."""
    entries = {}
    with VideoShardWriter(out, SHARD, per_shard) as writer:
        for vid, data in videos.items():
            attrs = {"n": np.int64(len(data)), "first": np.float64(vid / 2)}
            if vid % 2:
                compression, chunks = encode_chunks(data)
                entries[str(vid)] = writer.add_chunks(vid, data.shape, np.uint8, chunks, compression, attrs)
            else:
                entries[str(vid)] = writer.add(vid, data, attrs, compression="gzip", compression_opts=1)
    (out / META_NAME).write_text(json.dumps({"videos": entries}))
    return entries


@pytest.fixture
def videos() -> dict[int, np.ndarray]:
    flat = np.zeros((3, 4, 5, 2), np.uint8)
    flat[:, 1] = np.arange(3)[:, None, None]  # compressible: add_chunks stores it gzip
    return {0: noise((2, 4, 5, 2), 0), 3: flat, 4: noise((4, 4, 5, 2), 1), 7: noise((1, 4, 5, 2), 2)}


def test_dataset_name_and_clear_shards(tmp_path):
    assert dataset_name(42) == "000042" and dataset_name(1234567) == "1234567"
    for name in ("demo-00000.h5", "demo-00003.h5", META_NAME, "other-00000.h5", "notes.txt"):
        (tmp_path / "s" / name).parent.mkdir(exist_ok=True)
        (tmp_path / "s" / name).write_bytes(b"x")
    assert clear_shards(tmp_path / "s", SHARD) == tmp_path / "s"
    assert sorted(p.name for p in (tmp_path / "s").iterdir()) == ["notes.txt", "other-00000.h5"]
    clear_shards(tmp_path / "new" / "dir", SHARD)  # creates the folder
    assert (tmp_path / "new" / "dir").is_dir()


def test_writer_layout_and_attributes(tmp_path, videos):
    entries = write_store(tmp_path, videos)
    assert entries == {"0": {"shard": "demo-00000.h5", "dataset": "000000"},
                       "3": {"shard": "demo-00000.h5", "dataset": "000003"},
                       "4": {"shard": "demo-00001.h5", "dataset": "000004"},
                       "7": {"shard": "demo-00001.h5", "dataset": "000007"}}
    assert sorted(p.name for p in tmp_path.glob("*.h5")) == ["demo-00000.h5", "demo-00001.h5"]
    with h5py.File(tmp_path / "demo-00000.h5", "r") as f:
        assert sorted(f) == ["000000", "000003"]
        a, b = f["000000"], f["000003"]
        assert a.chunks == (1, 4, 5, 2) and b.chunks == (1, 4, 5, 2)
        assert (a.compression, a.compression_opts) == ("gzip", 1)
        assert b.compression == "gzip"  # chunks deflated by encode_chunks
        assert dict(a.attrs) == {"n": 2, "first": 0.0}
        assert b.attrs["first"] == 1.5 and b.attrs["n"] == 3
        np.testing.assert_array_equal(a[()], videos[0])
        np.testing.assert_array_equal(b[()], videos[3])
    with h5py.File(tmp_path / "demo-00001.h5", "r") as f:
        assert f["000007"].compression is None  # noise: encode_chunks keeps it raw
        np.testing.assert_array_equal(f["000007"][()], videos[7])


def test_writer_is_byte_deterministic(tmp_path, videos):
    for run in ("a", "b"):
        (tmp_path / run).mkdir()
        write_store(tmp_path / run, videos)
    digest = {run: [hashlib.sha256(p.read_bytes()).hexdigest() for p in sorted((tmp_path / run).iterdir())]
              for run in ("a", "b")}
    assert len(digest["a"]) == 3 and digest["a"] == digest["b"]


def test_writer_rejects_bad_per_shard(tmp_path):
    with pytest.raises(ValueError, match="videos per shard must be >= 1; got 0"):
        VideoShardWriter(tmp_path, SHARD, 0)


def test_encode_chunks_compress_only_when_it_pays():
    flat = np.full((3, 16, 16, 3), 7, np.uint8)
    low_contrast = noise((3, 16, 16, 3), 4) % 16  # 4 bits of entropy per byte: Huffman halves it
    textured = noise((3, 16, 16, 3), 5)  # incompressible
    for frames in (flat, low_contrast, textured):
        compression, chunks = encode_chunks(frames)
        raw = [f.tobytes() for f in frames]
        assert ([zlib.decompress(c) for c in chunks] if compression else chunks) == raw

    def packed(frame: np.ndarray, strategy: int) -> bytes:
        packer = zlib.compressobj(1, zlib.DEFLATED, 15, 8, strategy)
        return packer.compress(frame.tobytes()) + packer.flush()

    assert encode_chunks(flat) == ("gzip", [packed(f, zlib.Z_DEFAULT_STRATEGY) for f in flat])
    assert encode_chunks(low_contrast) == ("gzip", [packed(f, zlib.Z_HUFFMAN_ONLY) for f in low_contrast])
    assert encode_chunks(textured)[0] is None


class _NamedStore(VideoStore):
    missing_message = "video {vid!r} is not among the {n} of {root}"


def test_store_reads_rows_in_any_order(tmp_path, videos):
    write_store(tmp_path, videos)
    with _NamedStore(tmp_path) as store:
        assert store.video_ids == [0, 3, 4, 7] and len(store) == 4 and 4 in store and 1 not in store
        assert store.meta["videos"]["4"]["shard"] == "demo-00001.h5"
        np.testing.assert_array_equal(store._read_rows(4, None, "item"), videos[4])
        np.testing.assert_array_equal(store._read_rows(4, [3, 0, 0, 2], "item"), videos[4][[3, 0, 0, 2]])
        np.testing.assert_array_equal(store._read_rows(3, np.array([1]), "item"), videos[3][[1]])
        empty = store._read_rows(0, [], "item")
        assert empty.shape == (0, 4, 5, 2) and empty.dtype == np.uint8
        with pytest.raises(IndexError, match=r"item indices of video 4 must be in 0\.\.3; got \[4, -1\]"):
            store._read_rows(4, [4, 1, -1], "item")
        with pytest.raises(KeyError, match=r"video 5 is not among the 4 of "):
            store._read_rows(5, None, "item")
        assert sorted(store._files) == ["demo-00000.h5", "demo-00001.h5"]  # opened lazily, kept
        clone = pickle.loads(pickle.dumps(store))
        assert clone._files == {} and clone.video_ids == store.video_ids
        np.testing.assert_array_equal(clone._read_rows(7, [0], "item"), videos[7])
        clone.close()
    assert store._files == {}  # closed on exit; a later read reopens
    np.testing.assert_array_equal(store._read_rows(0, [1], "item"), videos[0][[1]])
    store.close()


def test_store_default_message_and_missing_meta(tmp_path, videos):
    write_store(tmp_path, videos)
    with pytest.raises(KeyError, match=r"video 9 is not in .* \(4 videos stored\)"):
        VideoStore(tmp_path)._entry(9)
    with pytest.raises(FileNotFoundError):
        VideoStore(tmp_path / "nowhere")
