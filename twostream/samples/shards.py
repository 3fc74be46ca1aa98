"""Stage ``shards``: every clip of every video as one training sample per modality, by reference.

On disk (``data/shards/``):

- ``{rgb,sg3i,flow}/{train,val,test}-NNNNN.h5``: ``shards.clips_per_shard`` samples per
  file, in (video, clip) order. Datasets ``ref`` (``REF_LAYOUTS``: where the sample is in
  its store, ``samples.clip_refs``), ``label``, ``video`` (index position) and ``clip``
  (clip number in its video), ``(N,) int64`` each. Attributes: ``classes`` (JSON list,
  label order), ``modality``, ``layout`` (of the sample, ``LAYOUTS``), ``ref_layout``,
  ``params`` (JSON of the producing params), ``store`` (the store the refs point into,
  relative to the file's folder: the frames store for rgb and sg3i, the flow store for
  flow), ``sample_shape`` (JSON ``[H, W, C]``) and ``stamps`` (JSON: per video the part
  stamp of the store, so that the shards' bytes, and DVC's hash of them, change when a
  referenced part does, and only then). ``samples.SampleReader`` turns a ref into the
  sample. ``ShardWriter`` still writes self-contained shards (dataset ``x`` of samples),
  which ``dataset.ShardDataset`` reads as well (tests and benchmarks make their own).
- ``{rgb,sg3i,flow}/expected.json``: per role, every video the index names (``[id,
  label]``) and the ones without samples, each with the reason an earlier stage gave
  (``expected_videos``), so that evaluation counts a missing video as wrong.
- ``summary.json``: samples and videos per modality and role, missing videos, bytes on disk.

A video is sharded in every modality or in none: one that a store lacks is dropped from
all and listed as missing, never an error (params that disagree with a store still are).

Every file is byte-deterministic (fixed HDF5 ``libver``, no timestamps, fixed order).
The stage also draws ``plots/previews/<class>.png``: RGB frame, SG3I image and first
flow field of one clip per class, side by side.
"""

from __future__ import annotations

import json
import logging
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import h5py
import numpy as np

from twostream.ingest.clips import clip_starts, flow_pairs, middle_frame
from twostream.runtime.config import ClipConfig, ShardsConfig, to_dict
from twostream.motion.flowstore import FlowStore
from twostream.samples.expected import EXPECTED_NAME, expected_videos, stage_reasons
from twostream.samples.previews import write_previews
from twostream.ingest.framestore import FrameStore
from twostream.ingest.h5store import LIBVER
from twostream.ingest.datasets.records import read_index
from twostream.runtime.jsonio import write_json
from twostream.ingest.resample import read_resample
from twostream.samples.refs import MODALITIES, ROLES, STORE_OF, SampleReader, clip_refs, pairs_to_channels
from twostream.motion.sg3istore import SG3IStore

log = logging.getLogger(__name__)

SHARD_NAME = "{role}-{number:05d}.h5"
SUMMARY_NAME = "summary.json"
LAYOUTS = {
    "rgb": "(N, H, W, 3) uint8 RGB: the clip's middle frame",
    "sg3i": "(N, H, W, 3) uint8: grayscale first, middle, last frame of the clip as channels 0, 1, 2",
    "flow": "(N, H, W, 2L) uint8 quantised flow: x0, y0, x1, y1, ... in time order; 128 = no motion",
}
# HDF5 filter per modality of self-contained shards (``ShardWriter``), measured on the demo's
# 3,240 clips (64x64; chunk = 1 sample; 3,000 random single-sample reads, one process): flow
# is mostly near 128 and gzip stores it in 10% of its size at 17k reads/s instead of 52k raw;
# on the noisy RGB and SG3I images gzip-1 keeps 79% and 69% of the bytes but makes reads 5x
# slower, so they stay raw.
COMPRESSION: dict[str, dict[str, Any]] = {
    "rgb": {}, "sg3i": {}, "flow": {"compression": "gzip", "compression_opts": 4},
}
PREVIEW_CLASSES = 6  # previews: the first classes in label order, one clip each


class ShardsError(RuntimeError):
    """A video to shard is missing from, or inconsistent with, a feature store."""


@dataclass(frozen=True)
class ClipVideo:
    """One video to shard: its index entry and clip starts (resampled frame positions)."""

    vid: int
    label: int
    kept: np.ndarray  # (K,) int64 native indices of its resampled frames
    starts: list[int]


def class_names(index: list[dict[str, Any]]) -> list[str]:
    """Class names in label order, from the index records.

    Raises:
        ValueError: if labels are not ``0..n-1`` with one name each.
    """
    names: dict[int, str] = {}
    for record in index:
        if names.setdefault(int(record["label"]), record["class"]) != record["class"]:
            raise ValueError(f"label {record['label']} names two classes: {names[int(record['label'])]!r} "
                             f"and {record['class']!r}")
    if sorted(names) != list(range(len(names))):
        raise ValueError(f"labels must be 0..{len(names) - 1}; got {sorted(names)}")
    return [names[label] for label in range(len(names))]


def plan_roles(index: list[dict[str, Any]], kept: dict[int, np.ndarray],
               clip: ClipConfig) -> dict[str, list[ClipVideo]]:
    """The videos of ``resample.json`` per role (``ROLES``), in id order, with their clips."""
    plan: dict[str, list[ClipVideo]] = {role: [] for role in ROLES}
    for vid in sorted(kept):
        record = index[vid]
        if record["role"] in plan:
            starts = clip_starts(len(kept[vid]), clip.frames, clip.step)
            plan[record["role"]].append(ClipVideo(vid, int(record["label"]), kept[vid], starts))
    return plan


def check_store_params(sg3i: SG3IStore, flow: FlowStore, clip: ClipConfig, stack: int, bound: float) -> None:
    """The stores must have been made with the params the shards are made with.

    Raises:
        ShardsError: naming the store, what it holds and what the params say.
    """
    if (flow.stack, flow.bound) != (stack, bound):
        raise ShardsError(f"the flow store {flow.root} has stack {flow.stack}, bound {flow.bound}; "
                          f"params say flow.stack {stack}, flow.bound {bound}: re-run the flow stage")
    if sg3i.params.get("clip") != to_dict(clip):
        raise ShardsError(f"the SG3I store {sg3i.root} was made with clip {sg3i.params.get('clip')}; "
                          f"params say clip {to_dict(clip)}: re-run the sg3i stage")


def unusable(plan: dict[str, list[ClipVideo]], sg3i: SG3IStore, flow: FlowStore) -> dict[int, str]:
    """Planned videos that some store lacks (or holds with other clips): id -> reason.

    A video is sharded in every modality or in none, so the streams see the same videos.
    """
    reasons = {}
    for video in (v for videos in plan.values() for v in videos):
        if video.vid not in flow:
            reasons[video.vid] = f"not in the flow store {flow.root}"
        elif video.vid not in sg3i:
            reasons[video.vid] = f"not in the SG3I store {sg3i.root}"
        elif sg3i.n_clips(video.vid) != len(video.starts):
            reasons[video.vid] = (f"the SG3I store holds {sg3i.n_clips(video.vid)} clips, the clip params "
                                  f"give {len(video.starts)}")
    return reasons


def video_samples(video: ClipVideo, frames: FrameStore, sg3i: SG3IStore, flow: FlowStore,
                  clip: ClipConfig, stack: int) -> dict[str, np.ndarray]:
    """The samples of every clip of one video, per modality.

    Returns:
        ``{"rgb": (C, H, W, 3), "sg3i": (C, H, W, 3), "flow": (C, H, W, 2L)}``, all uint8.
    """
    mids = [middle_frame(s, clip.frames) for s in video.starts]
    pairs = [k for s in video.starts for k in flow_pairs(s, clip.frames, stack)]  # (C * L,)
    fields = flow.read(video.vid, pairs)  # (C * L, H, W, 2)
    stacked = fields.reshape(len(video.starts), stack, *fields.shape[1:])  # (C, L, H, W, 2)
    return {"rgb": frames.read(video.vid, video.kept[mids]), "sg3i": sg3i.read(video.vid),
            "flow": pairs_to_channels(stacked)}


class ShardWriter:
    """Writes the samples of one modality and role to ``<role>-NNNNN.h5`` files, in order.

    Files hold ``per_shard`` samples (the last one the rest of ``total``); ``x`` is
    filled as samples arrive, ``label``/``video``/``clip`` are written when a file closes.
    ``files`` lists the paths written so far; ``n`` counts the samples added.
    """

    def __init__(self, out_dir: str | os.PathLike, role: str, modality: str, total: int,
                 per_shard: int, classes: list[str], params: dict[str, Any]) -> None:
        """Plan the files (nothing is written before ``add``).

        Args:
            out_dir: the modality's folder (must exist).
            role: file name prefix (``train``, ``val``, ``test``).
            modality: one of ``MODALITIES`` (sets ``layout`` and the compression).
            total: samples this role will have; files are sized from it.
            per_shard: samples per file (``shards.clips_per_shard``).
            classes: class names in label order; params: the producing params (attributes).

        Raises:
            ValueError: on an unknown modality or ``per_shard`` < 1.
        """
        if modality not in MODALITIES:
            raise ValueError(f"modality must be one of {', '.join(MODALITIES)}; got {modality!r}")
        if per_shard < 1:
            raise ValueError(f"shards.clips_per_shard must be >= 1; got {per_shard}")
        self.out_dir, self.role, self.modality = Path(out_dir), role, modality
        self.total, self.per_shard, self.n = total, per_shard, 0
        self.attrs = {"classes": json.dumps(classes), "modality": modality, "layout": LAYOUTS[modality],
                      "params": json.dumps(params, sort_keys=True)}
        self.files: list[Path] = []
        self._file: h5py.File | None = None
        self._ids: list[np.ndarray] = []

    def add(self, x: np.ndarray, label: np.ndarray, video: np.ndarray, clip: np.ndarray) -> None:
        """Append samples ``x (n, H, W, C) uint8`` with their ``(n,)`` label, video and clip.

        Raises:
            ValueError: past ``total`` samples, or on a sample shape other than the file's.
        """
        if self.n + len(x) > self.total:
            raise ValueError(f"{self.modality}/{self.role}: {self.n + len(x)} samples, planned {self.total}")
        ids = np.stack([label, video, clip], axis=1).astype(np.int64)  # (n, 3)
        done = 0
        while done < len(x):
            if self.n % self.per_shard == 0:
                self._open(x.shape[1:])
            ds = self._file["x"]
            if ds.shape[1:] != x.shape[1:]:
                raise ValueError(f"{self.modality} sample of video {int(video[done])} is {x.shape[1:]}; "
                                 f"this shard holds {ds.shape[1:]}")
            at = self.n % self.per_shard
            take = min(len(x) - done, self.per_shard - at)
            ds[at:at + take] = x[done:done + take]
            self._ids.append(ids[done:done + take])
            done, self.n = done + take, self.n + take
            if self.n % self.per_shard == 0 or self.n == self.total:
                self._close_file()

    def _open(self, sample_shape: tuple[int, ...]) -> None:
        size = min(self.per_shard, self.total - self.n)
        path = self.out_dir / SHARD_NAME.format(role=self.role, number=self.n // self.per_shard)
        self._file = h5py.File(path, "w", libver=LIBVER)
        self._file.create_dataset("x", (size, *sample_shape), np.uint8, chunks=(1, *sample_shape),
                                  track_times=False, **COMPRESSION[self.modality])
        for key, value in self.attrs.items():
            self._file.attrs[key] = value
        self.files.append(path)

    def _close_file(self) -> None:
        ids = np.concatenate(self._ids)
        for column, name in enumerate(("label", "video", "clip")):
            self._file.create_dataset(name, data=ids[:, column], track_times=False)
        self._file.close()
        self._file, self._ids = None, []

    def close(self) -> None:
        """Close an unfinished file (after an error); a complete writer has none open."""
        if self._file is not None:
            self._file.close()
            self._file = None


REF_LAYOUTS = {"rgb": "(N, 1) int64: native frame", "sg3i": "(N, 3) int64: native frames",
               "flow": "(N, L) int64: first resampled frame k of each pair (k, k + 1)"}


def write_refs(out_dir: Path, role: str, modality: str, rows: dict[str, np.ndarray], per_shard: int,
               attrs: dict[str, Any]) -> list[Path]:
    """Write one modality and role's samples as references: ``<role>-NNNNN.h5`` of ``per_shard`` each.

    Args:
        out_dir: the modality's folder.
        rows: ``label``, ``video``, ``clip`` ``(N,) int64`` and ``ref`` ``(N, R) int64``.
        attrs: file attributes (classes, modality, layout, params, store, stamps, sample_shape).

    Returns:
        The files written (none for a role without samples).
    """
    files = []
    for number, start in enumerate(range(0, len(rows["label"]), per_shard)):
        files.append(out_dir / SHARD_NAME.format(role=role, number=number))
        with h5py.File(files[-1], "w", libver=LIBVER) as f:
            for name in ("ref", "label", "video", "clip"):
                f.create_dataset(name, data=rows[name][start:start + per_shard], track_times=False)
            for key, value in attrs.items():
                f.attrs[key] = value
    return files


def _role_rows(videos: list[ClipVideo], sg3i: SG3IStore, clip: ClipConfig, stack: int) -> dict[str, dict]:
    """Per modality the rows of one role: label, video, clip number and reference of every clip."""
    rows: dict[str, dict[str, list]] = {m: {"label": [], "video": [], "clip": [], "ref": []} for m in MODALITIES}
    for video in videos:
        refs = clip_refs(video.kept, video.starts, sg3i.triples(video.vid), clip.frames, stack)
        n = len(video.starts)
        for modality in MODALITIES:
            rows[modality]["label"].append(np.full(n, video.label, np.int64))
            rows[modality]["video"].append(np.full(n, video.vid, np.int64))
            rows[modality]["clip"].append(np.arange(n, dtype=np.int64))
            rows[modality]["ref"].append(refs[modality])
    width = {"rgb": 1, "sg3i": 3, "flow": stack}
    return {m: {k: (np.concatenate(v) if v else np.empty((0, width[m]) if k == "ref" else 0, np.int64))
                for k, v in cols.items()} for m, cols in rows.items()}


def _write_role(out_dir: Path, role: str, videos: list[ClipVideo], readers: dict[str, SampleReader],
                sg3i: SG3IStore, classes: list[str], params: dict[str, Any], clip: ClipConfig, stack: int,
                per_shard: int) -> dict[str, int]:
    """Write every modality of one role; returns samples per modality."""
    written = {}
    for modality, rows in _role_rows(videos, sg3i, clip, stack).items():
        reader = readers[modality]
        shape = [reader.store.height, reader.store.width, 3 if modality != "flow" else 2 * stack]
        attrs = {"classes": json.dumps(classes), "modality": modality, "layout": LAYOUTS[modality],
                 "ref_layout": REF_LAYOUTS[modality], "params": json.dumps(params, sort_keys=True),
                 "store": Path(os.path.relpath(reader.root, out_dir / modality)).as_posix(),
                 "sample_shape": json.dumps(shape),
                 "stamps": json.dumps(reader.stamps([v.vid for v in videos]), sort_keys=True)}
        write_refs(out_dir / modality, role, modality, rows, per_shard, attrs)
        written[modality] = len(rows["label"])
    return written


def _clear(out_dir: Path) -> None:
    """Remove what an earlier run wrote, so no stale shard survives a smaller run."""
    for modality in MODALITIES:
        (out_dir / modality).mkdir(parents=True, exist_ok=True)
        for old in (out_dir / modality).glob("*.h5"):
            old.unlink()
        (out_dir / modality / EXPECTED_NAME).unlink(missing_ok=True)
    (out_dir / SUMMARY_NAME).unlink(missing_ok=True)


def summarize(out_dir: Path, samples: dict[str, dict[str, int]], videos: dict[str, int],
              expected: dict[str, Any]) -> dict[str, Any]:
    """``summary.json``: samples per modality and role, videos (expected, sharded, missing) per
    role, the missing videos, bytes per sample, bytes on disk."""
    on_disk = {m: sum(p.stat().st_size for p in sorted((out_dir / m).glob("*.h5"))) for m in MODALITIES}
    n = {m: sum(samples[m].values()) for m in MODALITIES}
    return {
        "samples": samples, "videos": videos,
        "videos_expected": {role: len(expected["expected"][role]) for role in ROLES},
        "missing": expected["missing"],
        "bytes": on_disk, "total_bytes": sum(on_disk.values()),
        "bytes_per_sample": {m: round(on_disk[m] / n[m], 1) if n[m] else None for m in MODALITIES},
        "stores": {m: STORE_OF[m] for m in MODALITIES},  # samples are references into these
    }


def build_shards(index_path: str | os.PathLike, frames_dir: str | os.PathLike,
                 resample_path: str | os.PathLike, sg3i_dir: str | os.PathLike,
                 flow_dir: str | os.PathLike, out_dir: str | os.PathLike,
                 previews_dir: str | os.PathLike, clip: ClipConfig, stack: int, bound: float,
                 cfg: ShardsConfig, reports: list[str | os.PathLike] = ()) -> dict[str, Any]:
    """Write the rgb, sg3i and flow shards of every train/val/test clip, and the previews.

    Args:
        index_path: ``data/index.json`` (roles, labels, class names).
        frames_dir: the frames store (RGB middle frames).
        resample_path: ``data/resample.json``: the videos to shard and their kept frames.
        sg3i_dir: the SG3I store; flow_dir: the flow store.
        out_dir: ``data/shards`` (earlier shards are removed).
        previews_dir: folder for ``<class>.png`` previews (earlier ones are removed).
        clip: clip geometry; stack: ``flow.stack`` (L); bound: ``flow.bound``.
        cfg: the ``shards`` params.
        reports: the frames and flow stages' reports, for the reasons of missing videos
            (resample.json's ``too_short`` list is read too).

    Returns:
        The summary written to ``<out_dir>/summary.json``.

    Raises:
        ShardsError: if the stores disagree with the params.
        ValueError: on bad params or index labels.
    """
    index, kept = read_index(index_path), read_resample(resample_path)
    classes, plan = class_names(index), plan_roles(index, kept, clip)
    out_dir = Path(out_dir)
    params = {"clip": to_dict(clip), "flow": {"stack": stack, "bound": bound}, "shards": to_dict(cfg)}
    with FrameStore(frames_dir) as frames, SG3IStore(sg3i_dir) as sg3i, FlowStore(flow_dir) as flow:
        check_store_params(sg3i, flow, clip, stack, bound)
        dropped = unusable(plan, sg3i, flow)
        plan = {role: [v for v in videos if v.vid not in dropped] for role, videos in plan.items()}
        for vid, reason in dropped.items():
            log.warning("video %d (%s): %s: left out of every modality", vid, index[vid]["path"], reason)
        expected = expected_videos(index, plan, {**dropped, **stage_reasons([*reports, resample_path])})
        _clear(out_dir)
        for modality in MODALITIES:
            write_json(out_dir / modality / EXPECTED_NAME, expected)
        readers = {"rgb": SampleReader("rgb", frames_dir), "sg3i": SampleReader("sg3i", frames_dir),
                   "flow": SampleReader("flow", flow_dir)}
        written = {role: _write_role(out_dir, role, plan[role], readers, sg3i, classes, params, clip, stack,
                                     cfg.clips_per_shard) for role in ROLES}
        previews = {}
        for video, number in pick_previews(plan, PREVIEW_CLASSES):
            clips = video_samples(video, frames, sg3i, flow, clip, stack)
            name = classes[video.label]
            previews[name] = {"title": f"{name}: video {video.vid}, clip {number}",
                              **{m: x[number] for m, x in clips.items()}}
    write_previews(previews_dir, previews, bound)
    samples = {m: {role: written[role][m] for role in ROLES} for m in MODALITIES}
    summary = summarize(out_dir, samples, {role: len(plan[role]) for role in ROLES}, expected)
    write_json(out_dir / SUMMARY_NAME, summary)
    return summary


def pick_previews(plan: dict[str, list[ClipVideo]], n: int) -> list[tuple[ClipVideo, int]]:
    """``(video, clip)`` of the first ``n`` labels: each label's lowest-id video, its middle clip."""
    first: dict[int, ClipVideo] = {}
    for video in sorted((v for videos in plan.values() for v in videos), key=lambda v: v.vid):
        first.setdefault(video.label, video)
    return [(first[label], len(first[label].starts) // 2) for label in sorted(first)[:n]]
