"""ShardDataset: shapes and dtypes per modality and preset, exact values, DataLoader workers."""

from __future__ import annotations

import pickle

import numpy as np
import pytest
import torch
from torch.utils.data import DataLoader

from twostream.learn.dataset import ShardDataset, fit_flow_scale, shard_files
from twostream.samples.shards import ShardWriter
from twostream.learn.transforms import IMAGENET_MEAN, IMAGENET_STD, flow_pixels, flow_rms

CLASSES = ["clap", "jump", "wave"]
PARAMS = {"clip": {"frames": 3, "step": 6}, "flow": {"stack": 2, "bound": 20.0}, "shards": {"clips_per_shard": 4}}
CHANNELS = {"rgb": 3, "sg3i": 3, "flow": 4}
N = 10  # train samples: 5 videos x 2 clips, over files of 4, 4 and 2
SCALE = 2.5  # flow scale in pixels


def samples(modality: str, n: int, seed: int) -> np.ndarray:
    """``(n, 8, 10, C) uint8`` with sample i's pixel (0, 0, 0) = i (to find it back)."""
    x = np.random.default_rng(seed).integers(0, 256, (n, 8, 10, CHANNELS[modality]), dtype=np.uint8)
    x[:, 0, 0, 0] = np.arange(n)
    return x


@pytest.fixture(scope="module")
def shard_dir(tmp_path_factory):
    """Shards of every modality: train (10 samples in 3 files) and test (3 samples)."""
    root = tmp_path_factory.mktemp("shards")
    for modality in CHANNELS:
        (root / modality).mkdir()
        for role, n, seed in (("train", N, 0), ("test", 3, 1)):
            writer = ShardWriter(root / modality, role, modality, n, 4, CLASSES, PARAMS)
            videos = np.arange(n) // 2
            writer.add(samples(modality, n, seed), videos % 3, videos, np.arange(n) % 2)
    return root


@pytest.mark.parametrize("modality", ["rgb", "sg3i", "flow"])
@pytest.mark.parametrize("train", [True, False])
def test_shapes_and_dtypes(shard_dir, modality, train):
    ds = ShardDataset(shard_dir, modality, "train", train=train, crop=6, flow_scale=SCALE)
    assert len(ds) == N and ds.in_channels == CHANNELS[modality]
    assert ds.classes == CLASSES and ds.num_classes == 3 and ds.params == PARAMS
    np.testing.assert_array_equal(ds.labels, (np.arange(N) // 2) % 3)
    np.testing.assert_array_equal(ds.videos, np.arange(N) // 2)
    np.testing.assert_array_equal(ds.clips, np.arange(N) % 2)
    assert ds.labels.dtype == ds.videos.dtype == np.int64
    for i in (0, 5, 9):  # one sample of each file
        x, label, video = ds[i]
        assert x.shape == (CHANNELS[modality], 6, 6) and x.dtype == torch.float32
        assert type(label) is np.int64 and type(video) is np.int64
        assert int(label) == (i // 2) % 3 and int(video) == i // 2
        assert ds.raw(i)[0, 0, 0] == i


def test_eval_values_exact_and_deterministic(shard_dir):
    raw = samples("rgb", N, 0)[7]
    ds = ShardDataset(shard_dir, "rgb", "train", train=False, crop=6)
    x, _, _ = ds[7]
    window = raw[1:7, 2:8].astype(np.float32) / 255  # centre 6x6 of 8x10
    expected = (window - np.array(IMAGENET_MEAN, np.float32)) / np.array(IMAGENET_STD, np.float32)
    np.testing.assert_allclose(x.numpy(), expected.transpose(2, 0, 1), rtol=1e-6, atol=1e-6)
    torch.testing.assert_close(ds[7][0], x, rtol=0, atol=0)

    flow = ShardDataset(shard_dir, "flow", "test", train=False, crop=8, flow_scale=SCALE)
    q = samples("flow", 3, 1)[2][:, 1:9]
    np.testing.assert_allclose(flow[2][0].numpy(), (flow_pixels(q, 20.0) / SCALE).transpose(2, 0, 1),
                               rtol=1e-6, atol=1e-6)


def test_flow_scale_is_fitted_on_evenly_spaced_raw_samples(shard_dir):
    ds = ShardDataset(shard_dir, "flow", "train", train=True, crop=6)  # no scale yet: raw reads only
    assert ds.transform is None and ds.expected is None and ds.missing == []
    with pytest.raises(ValueError, match="a flow dataset needs flow_scale"):
        ds[0]
    every = flow_rms(samples("flow", N, 0), 20.0)
    assert fit_flow_scale(ds) == pytest.approx(every, rel=1e-12)
    assert fit_flow_scale(ds, max_samples=2) == pytest.approx(flow_rms(samples("flow", N, 0)[[0, N - 1]], 20.0),
                                                              rel=1e-12)
    with pytest.raises(ValueError, match="fitted on flow samples; got 'rgb'"):
        fit_flow_scale(ShardDataset(shard_dir, "rgb", "train", train=True, crop=6))


def test_train_preset_follows_torch_seed(shard_dir):
    ds = ShardDataset(shard_dir, "flow", "train", train=True, crop=5, flow_scale=SCALE)
    torch.manual_seed(1)
    first = [ds[i][0] for i in range(N)]
    torch.manual_seed(1)
    assert all(torch.equal(a, ds[i][0]) for i, a in enumerate(first))


def test_dataloader_with_forked_workers(shard_dir):
    ds = ShardDataset(shard_dir, "sg3i", "train", train=True, crop=6)
    ds[0]  # the parent opens a handle before the fork: workers must not use it
    loader = DataLoader(ds, batch_size=3, shuffle=True, num_workers=2,
                        multiprocessing_context="fork", generator=torch.Generator().manual_seed(0))
    labels, videos, n = [], [], 0
    for x, label, video in loader:
        assert x.shape[1:] == (3, 6, 6) and x.dtype == torch.float32 and label.dtype == torch.int64
        labels += label.tolist()
        videos += video.tolist()
        n += len(x)
    assert n == N
    assert sorted(labels) == sorted(ds.labels.tolist()) and sorted(videos) == sorted(ds.videos.tolist())
    clone = pickle.loads(pickle.dumps(ds))  # no handles in the pickle
    torch.testing.assert_close(clone.raw(3), ds.raw(3))
    ds.close()


def test_bad_arguments(shard_dir, tmp_path):
    with pytest.raises(ValueError, match="crop must be in 1..8 for rgb samples of 8x10; got 9"):
        ShardDataset(shard_dir, "rgb", "train", train=True, crop=9)
    with pytest.raises(ValueError, match="modality must be one of rgb, sg3i, flow; got 'depth'"):
        shard_files(shard_dir, "depth", "train")
    with pytest.raises(ValueError, match="role must be one of train, val, test; got 'unused'"):
        shard_files(shard_dir, "rgb", "unused")
    with pytest.raises(FileNotFoundError, match="val-"):
        ShardDataset(shard_dir, "rgb", "val", train=False, crop=4)
    with pytest.raises(IndexError, match="sample index must be in 0..2; got 3"):
        ShardDataset(shard_dir, "rgb", "test", train=False, crop=4).raw(3)


def test_train_samples_are_the_seeded_window_normalised_then_mirrored(shard_dir):
    ds = ShardDataset(shard_dir, "flow", "train", train=True, crop=5, flow_scale=SCALE)
    stored, flips = samples("flow", N, 0), set()
    for i in range(N):
        torch.manual_seed(i)
        x, _, _ = ds[i]
        torch.manual_seed(i)  # the preset's draws: top, left, then the flip
        top, left = int(torch.randint(8 - 5 + 1, ())), int(torch.randint(10 - 5 + 1, ()))
        flip = float(torch.rand(())) < 0.5
        expected = (flow_pixels(stored[i][top:top + 5, left:left + 5], 20.0) / SCALE).transpose(2, 0, 1)
        if flip:  # mirrored, x channels (0 and 2 of x0, y0, x1, y1) negated
            expected = expected[:, :, ::-1] * np.array([-1, 1, -1, 1], np.float32).reshape(4, 1, 1)
        # 1e-6, not 0: this multiplies by the step, then divides by the scale (two roundings),
        # the preset multiplies once by step / scale
        np.testing.assert_allclose(x.numpy(), expected, rtol=1e-6, atol=1e-6)
        flips.add(flip)
    assert flips == {True, False}


def test_reads_bypass_the_hdf5_chunk_cache(shard_dir):
    ds = ShardDataset(shard_dir, "rgb", "train", train=False, crop=6)
    ds.raw(0), ds.raw(9)  # first and last file
    assert len(ds._handles) == 2
    assert all(x.id.get_access_plist().get_chunk_cache()[1] == 0 for x in ds._handles.values())
    ds.close()


def test_segment_and_snippet_picks():
    from twostream.learn.dataset import centred_picks, random_picks, snippet_picks

    assert centred_picks(6, 3) == [1, 3, 5] and centred_picks(7, 3) == [1, 3, 5] and centred_picks(2, 3) == [0, 1, 1]
    assert snippet_picks(6, 0) == snippet_picks(6, 9) == list(range(6))
    assert snippet_picks(25, 5) == [2, 7, 12, 17, 22] and snippet_picks(6, 1) == [3]
    torch.manual_seed(0)
    drawn = np.array([random_picks(7, 3) for _ in range(300)])  # segments 0-1, 2-3, 4-6
    assert [sorted(set(drawn[:, s])) for s in range(3)] == [[0, 1], [2, 3], [4, 5, 6]]
    assert random_picks(2, 3) == [0, 0, 1]  # an empty segment gives its start


def test_segment_dataset_is_a_video_of_k_snippets_sharing_one_window(shard_dir):
    from twostream.learn.dataset import SegmentDataset

    base = ShardDataset(shard_dir, "flow", "train", True, 6, SCALE)
    data = SegmentDataset(base, 2)
    assert len(data) == 5 and data.labels.tolist() == [0, 1, 2, 0, 1] and data.videos.tolist() == [0, 1, 2, 3, 4]
    torch.manual_seed(1)
    x, label, video = data[3]
    assert x.shape == (2, 4, 6, 6) and (label, video) == (0, 3)
    # segment s of a 2-clip video is clip s: snippets 6 and 7, through one window drawn after the picks
    torch.manual_seed(1)
    for _ in range(2):
        torch.randint(1, ())  # the picks (one choice each)
    window = base.transform.draw(8, 10)
    for s, i in enumerate((6, 7)):
        assert x[s].equal(base.transform.apply(base.raw(i), window))
    val = SegmentDataset(ShardDataset(shard_dir, "rgb", "test", False, 6), 3)
    x, _, _ = val[0]  # centred picks of a 2-clip video, 3 segments: clips 0, 1, 1
    raw = ShardDataset(shard_dir, "rgb", "test", False, 6)
    for s, i in enumerate((0, 1, 1)):
        assert x[s].equal(raw[i][0])
    batch = next(iter(DataLoader(data, batch_size=4)))
    assert batch[0].shape == (4, 2, 4, 6, 6)


def test_view_dataset_selects_snippets_and_stacks_crops(shard_dir):
    from twostream.learn.dataset import ViewDataset

    base = ShardDataset(shard_dir, "rgb", "train", False, 6)
    every = ViewDataset(base, 0, 1)
    assert len(every) == N and every.clips.tolist() == [0, 1] * 5 and every[2][0].shape == (1, 3, 6, 6)
    assert every[2][0][0].equal(base[2][0])
    one = ViewDataset(base, 1, 10)
    assert one.videos.tolist() == [0, 1, 2, 3, 4] and one.clips.tolist() == [1] * 5 and one.index.tolist() == [
        1, 3, 5, 7, 9]
    x, label, video = one[1]
    assert x.shape == (10, 3, 6, 6) and (label, video) == (1, 1)
    assert x[4].equal(base[3][0])  # the fifth crop is the centre one
    with pytest.raises(ValueError, match="evaluation dataset"):
        ViewDataset(ShardDataset(shard_dir, "rgb", "train", True, 6), 1, 1)
