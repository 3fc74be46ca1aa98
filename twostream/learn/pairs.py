"""Paired samples for fusion inside the network: the RGB and motion samples of the same clip,
cut through one window, side by side as channels.

The shards give both by video and clip: every modality's shards hold the same clips in the same
(video, clip) order, which ``PairedDataset`` checks. A pair goes through ``PairedPreset``: one
window (crop or multiscale, and one flip) drawn once and applied to both samples, each normalised
as its stream normalises it (a flip negates the flow's x), then concatenated: ``(3 + C_m, crop,
crop) float32``. Cutting both through one window is what keeps "where the motion is" aligned with
"what is there". With ``snippets`` T > 1 (``fuse.time: 3d``) a sample is a video: T snippets,
one from each of T equal segments of its clips (at random in training, the middle ones in
evaluation, as ``dataset.SegmentDataset`` draws them), all through the same window, stacked:
``(T * (3 + C_m), crop, crop)``.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import torch
from torch.utils.data import Dataset

from twostream.learn.dataset import ShardDataset, centred_picks, random_picks, snippet_picks, video_groups
from twostream.learn.transforms import Preset, Window, view_windows


class PairedPreset:
    """Two stream presets (RGB and motion) applied through one window."""

    def __init__(self, rgb: Preset, motion: Preset) -> None:
        """Raises:
            ValueError: if the presets disagree on crop, mode or augmentation.
        """
        if (rgb.crop, rgb.train, rgb.augment) != (motion.crop, motion.train, motion.augment):
            raise ValueError(f"paired presets must share crop, mode and augmentation; got {rgb} and {motion}")
        self.rgb, self.motion, self.crop, self.train = rgb, motion, rgb.crop, rgb.train

    def draw(self, height: int, width: int) -> Window:
        """One window for both samples (the RGB preset's draw: its RNG draws, in its order)."""
        return self.rgb.draw(height, width)

    def apply(self, rgb: np.ndarray, motion: np.ndarray, window: Window) -> torch.Tensor:
        """``(H, W, 3)`` and ``(H, W, C_m)`` uint8 -> ``(3 + C_m, crop, crop) float32``.

        Raises:
            ValueError: if the two samples are not of one height and width.
        """
        if rgb.shape[:2] != motion.shape[:2]:
            raise ValueError(f"paired samples must be of one size; got {rgb.shape} and {motion.shape}")
        return torch.cat([self.rgb.apply(rgb, window), self.motion.apply(motion, window)])

    def views(self, rgb: np.ndarray, motion: np.ndarray, crops: int) -> torch.Tensor:
        """The test-time views of one pair: ``(crops, 3 + C_m, crop, crop)`` (``transforms.view_windows``)."""
        windows = view_windows(rgb.shape[0], rgb.shape[1], self.crop, crops)
        return torch.stack([self.apply(rgb, motion, w) for w in windows])


def check_aligned(rgb: ShardDataset, motion: ShardDataset) -> None:
    """Raise ValueError unless the two datasets hold the same clips, in one order, with one label each."""
    for name in ("videos", "clips", "labels"):
        if not np.array_equal(getattr(rgb, name), getattr(motion, name)):
            raise ValueError(f"{rgb.modality} and {motion.modality} shards of {rgb.role} differ in their {name}: "
                             f"the shards stage writes every modality of the same clips, re-run it")
    if rgb.classes != motion.classes:
        raise ValueError(f"{rgb.modality} and {motion.modality} shards name other classes")


class PairedDataset(Dataset):
    """Training (or per-epoch val) samples: ``(x (T * (3 + C_m), crop, crop) float32, label, video)``.

    Attributes:
        labels, videos: ``(N,) int64`` per sample (a clip when T = 1, a video when T > 1).
        classes, num_classes, expected, missing: the RGB dataset's.
    """

    def __init__(self, rgb: ShardDataset, motion: ShardDataset, preset: PairedPreset, snippets: int = 1) -> None:
        check_aligned(rgb, motion)
        if snippets < 1:
            raise ValueError(f"fusion snippets must be >= 1; got {snippets}")
        self.rgb, self.motion, self.preset, self.snippets = rgb, motion, preset, snippets
        self.classes, self.num_classes = rgb.classes, rgb.num_classes
        self.expected, self.missing = rgb.expected, rgb.missing
        self.in_channels = snippets * (3 + motion.in_channels)
        self.views_per_sample = 1  # what scoring.predict batches by
        if snippets == 1:
            self.groups = [np.asarray([i]) for i in range(len(rgb))]
            self.labels, self.videos = rgb.labels, rgb.videos
        else:
            ids, self.groups = video_groups(rgb.videos, rgb.clips)
            self.labels = np.asarray([rgb.labels[g[0]] for g in self.groups], np.int64)
            self.videos = ids

    def __len__(self) -> int:
        return len(self.groups)

    def picks(self, group: np.ndarray) -> list[int]:
        """The sample indices of one sample's snippets."""
        if self.snippets == 1:
            return [int(group[0])]
        chosen = (random_picks if self.preset.train else centred_picks)(len(group), self.snippets)
        return [int(group[p]) for p in chosen]

    def __getitem__(self, i: int) -> tuple[torch.Tensor, np.int64, np.int64]:
        picked = self.picks(self.groups[int(i)])
        pairs = [(self.rgb.raw(j), self.motion.raw(j)) for j in picked]
        window = self.preset.draw(*pairs[0][0].shape[:2])
        x = torch.cat([self.preset.apply(r, m, window) for r, m in pairs])
        return x, self.labels[int(i)], self.videos[int(i)]

    def close(self) -> None:
        self.rgb.close()
        self.motion.close()


class PairedViews(Dataset):
    """Test-time views of paired samples: per row ``(x (crops, T * (3 + C_m), crop, crop), label, video)``.

    With T = 1 a row is a scored clip (``dataset.snippet_picks`` of each video's clips, as the
    streams are scored); with T > 1 a row is a video, its T centred snippets. Each row is seen
    through the ``crops`` windows of ``transforms.view_windows``.

    Attributes:
        labels, videos, clips: ``(R,) int64`` per row (``clips``: the row's first clip).
    """

    def __init__(self, rgb: ShardDataset, motion: ShardDataset, preset: PairedPreset, snippets: int,
                 views_snippets: int, crops: int) -> None:
        check_aligned(rgb, motion)
        if preset.train:
            raise ValueError("test-time views are taken with an evaluation preset")
        self.rgb, self.motion, self.preset, self.crops = rgb, motion, preset, crops
        self.views_per_sample = crops
        self.classes, self.expected, self.missing = rgb.classes, rgb.expected, rgb.missing
        _, groups = video_groups(rgb.videos, rgb.clips)
        if snippets == 1:
            self.rows = [[int(i)] for g in groups for i in g[snippet_picks(len(g), views_snippets)]]
        else:
            self.rows = [[int(g[p]) for p in centred_picks(len(g), snippets)] for g in groups]
        first = np.asarray([r[0] for r in self.rows], np.int64)
        self.labels, self.videos, self.clips = rgb.labels[first], rgb.videos[first], rgb.clips[first]

    def __len__(self) -> int:
        return len(self.rows)

    def __getitem__(self, j: int) -> tuple[torch.Tensor, np.int64, np.int64]:
        row = self.rows[int(j)]
        per_snippet = [self.preset.views(self.rgb.raw(i), self.motion.raw(i), self.crops) for i in row]
        x = torch.cat(per_snippet, dim=1)  # (crops, T * (3 + C_m), crop, crop)
        return x, self.labels[int(j)], self.videos[int(j)]

    def close(self) -> None:
        self.rgb.close()
        self.motion.close()

    def describe(self) -> dict[str, Any]:
        return {"rows": len(self.rows), "crops": self.crops}
