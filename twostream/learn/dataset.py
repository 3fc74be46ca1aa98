"""``ShardDataset``: the clips of one modality and role, from the ``shards`` stage's files.

Reads ``<shard_dir>/<modality>/<role>-*.h5`` (see ``twostream.samples.shards``). The small
per-sample arrays (label, video, clip, and the ref of a reference shard) are read once at
construction. A reference shard's samples are read from the store it names
(``samples.SampleReader``: frames or flow parts); a self-contained shard's from its ``x``,
one chunk at a time. HDF5 handles never cross a fork: each process opens its own on its
first ``__getitem__`` (DataLoader workers included), and the dataset pickles without them.
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

import h5py
import numpy as np
import torch
from torch.utils.data import Dataset

from twostream.samples.expected import read_expected
from twostream.samples.refs import MODALITIES, ROLES, SampleReader
from twostream.learn.transforms import Preset, eval_preset, flow_rms, train_preset

FLOW_SCALE_SAMPLES = 512  # train samples, evenly spaced, that ``fit_flow_scale`` reads


def shard_files(shard_dir: str | os.PathLike, modality: str, role: str) -> list[Path]:
    """The shard files of one modality and role, in sample order.

    Raises:
        ValueError: on an unknown modality or role.
        FileNotFoundError: if there is none.
    """
    if modality not in MODALITIES:
        raise ValueError(f"modality must be one of {', '.join(MODALITIES)}; got {modality!r}")
    if role not in ROLES:
        raise ValueError(f"role must be one of {', '.join(ROLES)}; got {role!r}")
    files = sorted((Path(shard_dir) / modality).glob(f"{role}-*.h5"))
    if not files:
        raise FileNotFoundError(f"no shards {Path(shard_dir) / modality / f'{role}-*.h5'}; "
                                f"run the shards stage (a role without videos has no files)")
    return files


class ShardDataset(Dataset):
    """Samples ``(x (C, crop, crop) float32, label, video)`` of one modality and role.

    ``label`` and ``video`` are ``np.int64`` scalars (a DataLoader collates them to
    ``(B,) int64`` tensors; a 0-d tensor each would cost more than reading the sample).

    Attributes:
        labels, videos, clips: ``(N,) int64`` per sample (label, index position, clip number).
        classes: class names in label order; num_classes: their count.
        in_channels: ``C``: 3 for rgb and sg3i, ``2L`` for flow.
        params: the producing params of the shards (``clip``, ``flow``, ``shards``).
        expected: ``(ids (V,), labels (V,))`` of every video the index names for the role
            (``expected.read_expected``), None for shards without ``expected.json``;
            missing: the records of those of them without samples (id, path, reason, ...).
        transform: the ``Preset`` applied by ``__getitem__`` (None for flow without a scale:
            only ``raw`` then reads samples, as ``fit_flow_scale`` does).
    """

    def __init__(self, shard_dir: str | os.PathLike, modality: str, role: str, train: bool,
                 crop: int, flow_scale: float | None = None, augment: str = "crop") -> None:
        """Index the shard files (reads labels and attributes, no samples).

        Args:
            shard_dir: ``data/shards``.
            modality: ``rgb``, ``sg3i`` or ``flow``.
            role: ``train``, ``val`` or ``test``.
            train: True for the training preset (random crop + flip), False for eval (centre crop).
            crop: output side in pixels (at most the stored height and width).
            flow_scale: flow only: the normalisation scale in pixels (``fit_flow_scale`` of
                the train split; the checkpoint stores it).
            augment: the training preset's windows: ``crop`` | ``multiscale`` (``transforms.Preset``).

        Raises:
            ValueError: on an unknown modality or role, a crop larger than the samples, or
                shards that disagree on classes, layout or sample shape.
            FileNotFoundError: if there is no shard file.
        """
        self.files = shard_files(shard_dir, modality, role)
        self.modality, self.role, self.train, self.crop = modality, role, train, crop
        columns: dict[str, list[np.ndarray]] = {"label": [], "video": [], "clip": [], "ref": []}
        headers = []
        for path in self.files:
            with h5py.File(path, "r") as f:
                for name, values in columns.items():
                    if name in f:
                        values.append(f[name][()].astype(np.int64))
                shape = f["x"].shape[1:] if "x" in f else tuple(json.loads(f.attrs["sample_shape"]))
                store = f.attrs.get("store")  # reference shards: where their samples are
                headers.append((f.attrs["classes"], f.attrs["layout"], f.attrs["params"], shape, store))
        if len(set(headers)) != 1:
            raise ValueError(f"shards of {modality}/{role} disagree on classes, layout, params or "
                             f"sample shape: {sorted(set(headers))}")
        classes, self.layout, params, self.sample_shape, store = headers[0]
        self.refs = np.concatenate(columns["ref"]) if columns["ref"] else None  # (N, R) int64, reference shards
        # a reference shard's samples are read from its store (samples.SampleReader), else from ``x``
        self.reader = None if store is None else SampleReader(modality, self.files[0].parent / store)
        self.classes: list[str] = json.loads(classes)
        self.params: dict[str, Any] = json.loads(params)
        self.labels, self.videos, self.clips = (np.concatenate(columns[k]) for k in ("label", "video", "clip"))
        self._starts = np.cumsum([0] + [len(v) for v in columns["label"]])  # first sample of each file
        if not 1 <= crop <= min(self.sample_shape[:2]):
            raise ValueError(f"crop must be in 1..{min(self.sample_shape[:2])} for {modality} samples of "
                             f"{self.sample_shape[0]}x{self.sample_shape[1]}; got {crop}")
        found = read_expected(shard_dir, modality, role)
        self.expected = None if found is None else found[:2]
        self.missing: list[dict[str, Any]] = [] if found is None else found[2]
        self.bound: float | None = float(self.params["flow"]["bound"]) if modality == "flow" else None
        self.transform: Preset | None = None
        if modality != "flow" or flow_scale is not None:
            self.transform = (train_preset(modality, crop, self.bound, flow_scale, augment) if train
                              else eval_preset(modality, crop, self.bound, flow_scale))
        self._handles: dict[int, h5py.Dataset] = {}
        self._pid = os.getpid()

    @property
    def num_classes(self) -> int:
        """Number of classes (all of the index, also those without a sample here)."""
        return len(self.classes)

    @property
    def in_channels(self) -> int:
        """Channels ``C`` of a sample: 3 for rgb and sg3i, ``2L`` for flow."""
        return int(self.sample_shape[2])

    def __len__(self) -> int:
        return len(self.labels)

    def _x(self, file: int) -> h5py.Dataset:
        """This process's handle on the ``x`` dataset of file ``file`` (opened on first use)."""
        if os.getpid() != self._pid:  # forked: the inherited handles belong to the parent
            self._handles, self._pid = {}, os.getpid()
        if file not in self._handles:
            # no chunk cache: a random read never meets its chunk again (chunk = sample), and the
            # default cache (8 MiB in HDF5 2) would cost every worker that much per open shard
            self._handles[file] = h5py.File(self.files[file], "r", rdcc_nbytes=0)["x"]
        return self._handles[file]

    def raw(self, i: int) -> np.ndarray:
        """Sample ``i`` as stored: ``(H, W, C) uint8``.

        Raises:
            IndexError: if ``i`` is outside ``0..len-1``.
        """
        if not 0 <= i < len(self):
            raise IndexError(f"sample index must be in 0..{len(self) - 1}; got {i}")
        if self.reader is not None:
            return self.reader.read(int(self.videos[i]), self.refs[i])
        file = int(np.searchsorted(self._starts, i, side="right")) - 1
        return self._x(file)[i - self._starts[file]]

    def __getitem__(self, i: int) -> tuple[torch.Tensor, np.int64, np.int64]:
        """Sample ``i``: ``(x (C, crop, crop) float32, label np.int64, video np.int64)``."""
        if self.transform is None:
            raise ValueError(f"{self.modality}/{self.role}: a flow dataset needs flow_scale to make "
                             f"network inputs (fit_flow_scale on the train split)")
        i = int(i)
        return self.transform(self.raw(i)), self.labels[i], self.videos[i]

    def close(self) -> None:
        """Close this process's HDF5 handles (they reopen on the next read)."""
        if os.getpid() == self._pid:
            for ds in self._handles.values():
                ds.file.close()
        self._handles = {}
        if self.reader is not None:
            self.reader.close()

    def __getstate__(self) -> dict[str, Any]:
        state = dict(self.__dict__)
        state["_handles"] = {}
        return state


def fit_flow_scale(dataset: ShardDataset, max_samples: int = FLOW_SCALE_SAMPLES) -> float:
    """The flow normalisation scale: ``transforms.flow_rms`` of up to ``max_samples`` of the
    dataset's samples, evenly spaced over it (the same ones on every run and rank).

    Raises:
        ValueError: if the dataset is not flow, or its samples are all zero motion.
    """
    if dataset.modality != "flow":
        raise ValueError(f"the flow scale is fitted on flow samples; got {dataset.modality!r}")
    picks = np.unique(np.linspace(0, len(dataset) - 1, min(max_samples, len(dataset))).round().astype(np.int64))
    return flow_rms([dataset.raw(int(i)) for i in picks], dataset.bound)


def training_dataset(shard_dir: str | os.PathLike, modality: str, crop: int,
                     augment: str = "crop") -> ShardDataset:
    """The ``train`` role with the training preset (``augment``: crop | multiscale), as the train
    stage trains on it: for flow, with the scale ``fit_flow_scale`` fits on these samples
    (``.transform.scale``)."""
    scale = fit_flow_scale(ShardDataset(shard_dir, "flow", "train", True, crop)) if modality == "flow" else None
    return ShardDataset(shard_dir, modality, "train", True, crop, scale, augment)


def video_groups(videos: np.ndarray, clips: np.ndarray) -> tuple[np.ndarray, list[np.ndarray]]:
    """The samples of each video: ``ids (V,)`` ascending, and per id its sample indices in clip order."""
    order = np.lexsort((clips, videos))
    ids, starts = np.unique(videos[order], return_index=True)
    return ids.astype(np.int64), np.split(order.astype(np.int64), starts[1:])


def centred_picks(n: int, k: int) -> list[int]:
    """The middle position of each of ``k`` equal segments of ``0..n-1``: ``(n (2s + 1)) // 2k``
    (TSN's test-time snippets; repeats when ``n < k``)."""
    return [n * (2 * s + 1) // (2 * k) for s in range(k)]


def random_picks(n: int, k: int) -> list[int]:
    """One position drawn uniformly (torch's RNG) in each of ``k`` equal segments of ``0..n-1``:
    segment ``s`` is ``n s // k .. n (s + 1) // k - 1``; an empty one (``n < k``) gives its start."""
    picks = []
    for s in range(k):
        lo, hi = n * s // k, n * (s + 1) // k
        picks.append(min(lo, n - 1) if hi <= lo else lo + int(torch.randint(hi - lo, ())))
    return picks


def snippet_picks(n: int, snippets: int) -> list[int]:
    """The clips scored of a video with ``n``: ``snippets`` evenly spaced (``centred_picks``), or
    every clip when ``snippets`` is 0 or at least ``n``."""
    return list(range(n)) if snippets == 0 or snippets >= n else centred_picks(n, snippets)


class _Grouped(Dataset):
    """What the video-level datasets share with the ``ShardDataset`` they draw from."""

    def __init__(self, base: ShardDataset) -> None:
        self.base = base
        self.ids, self.groups = video_groups(base.videos, base.clips)
        self.classes, self.expected, self.missing = base.classes, base.expected, base.missing
        self.modality, self.in_channels, self.num_classes = base.modality, base.in_channels, base.num_classes
        self.transform = base.transform

    def close(self) -> None:
        self.base.close()


class SegmentDataset(_Grouped):
    """TSN's samples: one per video, ``(x (K, C, crop, crop) float32, label, video)``.

    The video's clips are cut into K equal segments and one clip (snippet) is taken from each:
    at random in training (``random_picks``), the middle one in evaluation (``centred_picks``).
    In training all K snippets share one window and flip (``Preset.draw`` once per video).

    Attributes:
        labels, videos: ``(V,) int64`` per video; plus the base's ``classes``, ``expected``, ...
    """

    def __init__(self, base: ShardDataset, segments: int) -> None:
        """Group ``base``'s samples by video.

        Raises:
            ValueError: if ``segments`` is below 1.
        """
        if segments < 1:
            raise ValueError(f"train.segments must be >= 1; got {segments}")
        super().__init__(base)
        self.segments, self.train = segments, base.train
        self.views_per_sample = segments  # what scoring.predict batches by
        self.labels = np.asarray([base.labels[g[0]] for g in self.groups], np.int64)
        self.videos = self.ids

    def __len__(self) -> int:
        return len(self.groups)

    def __getitem__(self, v: int) -> tuple[torch.Tensor, np.int64, np.int64]:
        group = self.groups[int(v)]
        picks = (random_picks if self.train else centred_picks)(len(group), self.segments)
        raws = [self.base.raw(int(group[p])) for p in picks]
        window = self.transform.draw(*raws[0].shape[:2])
        return torch.stack([self.transform.apply(r, window) for r in raws]), self.labels[int(v)], self.ids[int(v)]


class ViewDataset(_Grouped):
    """Test-time views: per scored clip ``(x (crops, C, crop, crop) float32, label, video)``.

    A video's scored clips are ``snippet_picks`` of its clips; each is seen through the 1, 3
    or 10 windows of ``transforms.view_windows`` (the base's eval preset).

    Attributes:
        labels, videos, clips: ``(N',) int64`` per scored clip, in (video, clip) order.
        index: ``(N',)`` their sample indices in the base dataset.
    """

    def __init__(self, base: ShardDataset, snippets: int, crops: int) -> None:
        """Select the scored clips of ``base`` (an eval dataset)."""
        if base.train:
            raise ValueError("test-time views are taken from an evaluation dataset (train=False)")
        super().__init__(base)
        self.crops = self.views_per_sample = crops  # what scoring.predict batches by
        picked = [g[snippet_picks(len(g), snippets)] for g in self.groups]
        self.index = np.concatenate(picked) if picked else np.zeros(0, np.int64)
        self.labels, self.videos, self.clips = (a[self.index] for a in (base.labels, base.videos, base.clips))

    def __len__(self) -> int:
        return len(self.index)

    def __getitem__(self, j: int) -> tuple[torch.Tensor, np.int64, np.int64]:
        i = int(self.index[int(j)])
        return self.transform.views(self.base.raw(i), self.crops), self.base.labels[i], self.base.videos[i]
