"""Stage ``flow``: TV-L1 optical flow for the frame pairs the clips use.

Each video of ``data/resample.json`` becomes one part file of the flow store (``flowstore``
describes the files, reads them and holds the quantisation): the quantised TV-L1 fields of
the pairs of ``clips.needed_pairs`` only (12 of the 17 of a 3-s video at 6 fps with 3-frame
clips every 3 frames, stack 2), each field encoded on its own with ``flow.codec``. A worker
computes a whole video and writes its part (``flow_part``, a pure function of a
``FlowJob``), so the files do not depend on the worker count, and a killed run keeps every
part it finished. A part is stamped with the video's frames part, its pairs, the params that
decide the flow and ``VERSION``; a re-run reuses every part whose stamp matches, whatever
else changed in the code. OpenCV's TV-L1 hardly uses threads, so the stage parallelises over
videos with one process per core (or batches pairs on a GPU with ``flow.backend: torch``).
More than ``flow.max_failures`` of the videos failing stops the stage; fewer are reported,
and ``shards`` leaves them out.
"""

from __future__ import annotations

import contextlib
import logging
import multiprocessing
import os
import time
import uuid
from dataclasses import dataclass, replace
from functools import partial
from pathlib import Path
from typing import Any, Callable, Iterator, NamedTuple

import cv2
import numpy as np
from tqdm import tqdm
from tqdm.contrib.logging import logging_redirect_tqdm

from twostream.runtime import executors, pools
from twostream.ingest import parts
from twostream.ingest.clips import needed_pairs
from twostream.ingest.codec import PNG_LEVEL, decode_image, encode_image
from twostream.runtime.config import ClipConfig, ExecutorConfig, FlowConfig, resolve_workers, result_params, to_dict
from twostream.motion.flowstore import LAYOUT, QUANTISATION, quantize
from twostream.ingest.framestore import FrameStore
from twostream.ingest.h5store import META_NAME
from twostream.motion.opticalflow import _backend, _cuda, compute_flow, tvl1_params
from twostream.ingest.datasets.records import read_index
from twostream.runtime.jsonio import write_json
from twostream.ingest.resample import read_resample

log = logging.getLogger(__name__)

# The version of what a flow part holds for given frames and params: bump it with any change of
# code or library that changes a part's bytes (TV-L1 in either backend, grayscale conversion,
# quantisation, the field encoding, the file layout); tests/test_golden.py fails until it is
# bumped. Parts of another version are recomputed, those of this one reused whatever else changed.
VERSION = 1
RUN_KEYS = ("seconds", "pairs_per_second", "workers", "threads", "computed", "reused")  # not in the file


class FlowError(RuntimeError):
    """More videos failed than ``flow.max_failures`` allows."""


@dataclass(frozen=True)
class FlowJob:
    """One video's flow: the unit of work, a pure function of these fields and the frames store."""

    vid: int  # index position
    kept: tuple[int, ...]  # native frame numbers of its resampled frames
    pairs: tuple[int, ...]  # first resampled frames k of the pairs (k, k + 1) to compute
    part: str  # part file to write
    stamp: str  # its part key
    codec: str  # flow.codec of each field
    quality: int  # flow.quality


class FlowResult(NamedTuple):
    """A video's outcome (its flow is in its part file)."""

    vid: int
    n_pairs: int  # pairs stored (0 on failure)
    reason: str | None  # None on success


_worker: dict[str, Any] = {}  # per process: the frame store and params of the running stage


def pool_context() -> multiprocessing.context.BaseContext:
    """The flow stage's worker processes: ``pools.pool_context`` with this module preloaded."""
    return pools.pool_context([__name__])


def _init_worker(frames_dir: str, cfg: FlowConfig, run: str = "") -> None:
    if "store" in _worker:  # a Ray worker lives across runs: the frames may have changed since
        _worker.pop("store").close()
    cv2.setNumThreads(cfg.threads)
    if _backend(cfg) == "torch":  # on CPU: one torch process per core, like OpenCV's
        import torch

        torch.set_num_threads(cfg.threads)
    _worker.update(store=FrameStore(frames_dir), cfg=cfg, run=run)


def video_flow(store: FrameStore, vid: int, kept: np.ndarray, pairs: list[int],
               cfg: FlowConfig) -> np.ndarray:
    """Quantised TV-L1 flow of the given pairs of one video.

    Args:
        store: the frames store.
        vid: video id.
        kept: ``(K,) int64`` native frame indices of its resampled frames.
        pairs: resampled first frames ``k`` of the pairs ``(k, k + 1)``.
        cfg: the ``flow`` params.

    Returns:
        ``(len(pairs), H, W, 2) uint8``.

    Raises:
        KeyError, IndexError: if the store lacks the video or a frame, or ``kept`` a pair's frame.
    """
    prev, next_ = _gray_pairs(store, vid, kept, pairs)
    params = tvl1_params(cfg)  # once per video: dataclass -> dict costs more than checking a dict
    if _backend(cfg) == "torch":  # the video's pairs as one batch
        from twostream.motion.tvl1 import tvl1_flow

        return quantize(tvl1_flow(prev, next_, params), cfg.bound)
    return np.stack([quantize(compute_flow(a, b, params), cfg.bound) for a, b in zip(prev, next_)])


def _gray_pairs(store: FrameStore, vid: int, kept: np.ndarray,
                pairs: list[int]) -> tuple[np.ndarray, np.ndarray]:
    """``(P, H, W) uint8`` grayscale first and second frames of the pairs of one video."""
    positions = sorted({p for k in pairs for p in (k, k + 1)})
    frames = store.read(vid, kept[positions])  # (n, H, W, 3): only the frames the pairs use
    gray = {p: cv2.cvtColor(frame, cv2.COLOR_RGB2GRAY) for p, frame in zip(positions, frames)}
    return np.stack([gray[k] for k in pairs]), np.stack([gray[k + 1] for k in pairs])


def encode_fields(flow: np.ndarray, codec: str, quality: int) -> list[bytes]:
    """Each field of ``(P, H, W, 2) uint8`` quantised flow as an encoded grayscale image: x, then y, per pair."""
    return [encode_image(np.ascontiguousarray(pair[..., c]), codec, quality) for pair in flow for c in (0, 1)]


def codec_roundtrip(flow: np.ndarray, codec: str, quality: int) -> np.ndarray:
    """``(P, H, W, 2) uint8`` flow as the store gives it back: each field encoded and decoded once
    (``predict`` passes a new video's flow through it, so the network sees what it trained on)."""
    fields = [decode_image(np.frombuffer(b, np.uint8), gray=True) for b in encode_fields(flow, codec, quality)]
    return np.stack(fields).reshape(len(flow), 2, *flow.shape[1:3]).transpose(0, 2, 3, 1).copy()


def write_part(job: FlowJob, flow: np.ndarray) -> FlowResult:
    """Write one video's ``(P, H, W, 2) uint8`` flow to its part file (``parts.writing``): each field
    (x, then y, of every pair) encoded on its own with ``job.codec``."""
    fields = encode_fields(flow, job.codec, job.quality)
    offsets = np.cumsum([0, *map(len, fields)], dtype=np.int64)
    with parts.writing(job.part, job.stamp) as f:
        f.create_dataset("data", data=np.frombuffer(b"".join(fields), np.uint8), track_times=False)
        f.create_dataset("offsets", data=offsets, track_times=False)
        f.attrs["pairs"] = np.asarray(job.pairs, dtype=np.int64)
        f.attrs["codec"] = job.codec
    return FlowResult(job.vid, len(job.pairs), None)


def flow_part(job: FlowJob) -> FlowResult:
    """Worker: compute and store the flow of one video, or say why it failed (nothing written)."""
    try:
        flow = video_flow(_worker["store"], job.vid, np.asarray(job.kept, np.int64), list(job.pairs),
                          _worker["cfg"])
    except Exception as e:  # noqa: BLE001 - any failure is reported per video, never dropped
        return FlowResult(job.vid, 0, f"{type(e).__name__}: {e}")
    return write_part(job, flow)


def flow_parts(frames_dir: str, cfg: FlowConfig, run: str, jobs: list[FlowJob]) -> list[FlowResult]:
    """``flow_part`` of each job: what one Ray task runs (the process's frame store opened once per ``run``)."""
    if _worker.get("run") != run:
        _init_worker(frames_dir, cfg, run)
    return [flow_part(job) for job in jobs]


def torch_flow_parts(frames_dir: str, cfg: FlowConfig, jobs: list[FlowJob]) -> list[FlowResult]:
    """``_torch_batches`` of the jobs on the GPU Ray gave the task."""
    return list(_torch_batches(jobs, frames_dir, cfg))


def _torch_batches(jobs: list[FlowJob], frames_dir: str, cfg: FlowConfig,
                   pairs_per_batch: int = 256) -> Iterator[FlowResult]:
    """The torch backend on a GPU: one process, the pairs of several videos in each batch.

    Yields results in job order; a video whose frames cannot be read fails alone.
    """
    from twostream.motion.tvl1 import tvl1_flow

    params = tvl1_params(cfg)
    with FrameStore(frames_dir) as store:
        start = 0
        while start < len(jobs):
            group, ready, n_pairs = [], [], 0
            while start < len(jobs) and n_pairs < pairs_per_batch:
                job = jobs[start]
                start += 1
                try:
                    ready.append(_gray_pairs(store, job.vid, np.asarray(job.kept, np.int64), list(job.pairs)))
                except Exception as e:  # noqa: BLE001 - reported per video, never dropped
                    group.append((job, f"{type(e).__name__}: {e}"))
                    continue
                group.append((job, None))
                n_pairs += len(job.pairs)
            flow = iter(())
            if ready:
                prev, next_ = (np.concatenate([r[i] for r in ready]) for i in (0, 1))
                flow = iter(quantize(tvl1_flow(prev, next_, params, batch_size=pairs_per_batch), cfg.bound))
            for job, reason in group:
                yield FlowResult(job.vid, 0, reason) if reason else \
                    write_part(job, np.stack([next(flow) for _ in job.pairs]))


def _on_ray(jobs: list[FlowJob], frames_dir: str, cfg: FlowConfig, executor: ExecutorConfig,
            shards: dict[int, str]) -> Iterator[FlowResult]:
    """The jobs as Ray tasks (``executors.ray_map``): on GPUs when the backend is torch and tasks
    reserve some, else one video after another on CPUs. Paths are made absolute here."""
    frames_dir = os.path.abspath(frames_dir)
    jobs = [replace(job, part=os.path.abspath(job.part)) for job in jobs]
    fn = (partial(torch_flow_parts, frames_dir, cfg) if _backend(cfg) == "torch" and executor.gpus_per_task > 0
          else partial(flow_parts, frames_dir, cfg, uuid.uuid4().hex))
    meta = os.path.join(frames_dir, META_NAME)
    return executors.ray_map(fn, jobs, executor, expect={__name__: VERSION}, name=lambda job: f"video {job.vid}",
                             reads=lambda job: (meta, *([os.path.join(frames_dir, shards[job.vid])]
                                                        if job.vid in shards else [])), label="flow")


@contextlib.contextmanager
def _computed(jobs: list[FlowJob], frames_dir: str, cfg: FlowConfig, processes: int, gpu: bool,
              executor: ExecutorConfig | None = None,
              shards: dict[int, str] | None = None) -> Iterator[Iterator[FlowResult]]:
    """``flow_part`` over ``jobs`` in job order, from ``processes`` workers (1 = this process),
    or, with ``gpu``, batches of several videos' pairs in this process (``_torch_batches``),
    or with ``executor.kind`` ray as Ray tasks (``_on_ray``; ``shards``: each video's frames part)."""
    if executor is not None and executor.kind == "ray":
        yield _on_ray(jobs, frames_dir, cfg, executor, shards or {})
        return
    if gpu:
        yield _torch_batches(jobs, frames_dir, cfg)
        return
    if processes == 1:
        threads = cv2.getNumThreads()
        _init_worker(frames_dir, cfg)
        try:
            yield map(flow_part, jobs)
        finally:
            _worker.pop("store").close()
            cv2.setNumThreads(threads)
        return
    yield pools.ordered_map(flow_part, jobs, processes, pool_context(), _init_worker, (frames_dir, cfg),
                            name=lambda job: f"video {job.vid}")


def part_stamp(frames_stamp: str, kept: list[int], pairs: list[int], cfg: FlowConfig) -> str:
    """Part key of a video's flow: its frames part, the pairs, the params that decide the flow, at
    ``VERSION``."""
    decisive = {**tvl1_params(cfg), "backend": _backend(cfg), "bound": cfg.bound, "codec": cfg.codec,
                **({"quality": cfg.quality} if cfg.codec == "jpeg" else {}), "kept": kept, "pairs": pairs}
    return parts.part_key(frames_stamp, decisive, "flow", VERSION)


def plan_flow(index: list[dict[str, Any]], kept: dict[int, np.ndarray], store: FrameStore, out_dir: Path,
              cfg: FlowConfig, clip: ClipConfig) -> tuple[list[FlowJob], list[FlowResult]]:
    """Jobs in id order, and failures for videos no clip fits in."""
    jobs, no_pairs = [], []
    for vid in sorted(kept):
        pairs = needed_pairs(len(kept[vid]), clip.frames, clip.step, cfg.stack)
        if not pairs:
            no_pairs.append(FlowResult(vid, 0, f"{len(kept[vid])} resampled frames hold no clip of "
                                               f"{clip.frames} frames"))
            continue
        entry = store.meta["videos"].get(str(vid), {})
        key = index[vid].get("key") if 0 <= vid < len(index) else None
        part = parts.part_path(out_dir, key or f"id-{vid}")
        stamp = part_stamp(entry.get("stamp", ""), kept[vid].tolist(), pairs, cfg)
        jobs.append(FlowJob(vid, tuple(kept[vid].tolist()), tuple(pairs), str(part), stamp, cfg.codec, cfg.quality))
    return jobs, no_pairs


def _failure(index: list[dict[str, Any]], result: FlowResult) -> dict[str, Any]:
    """Report entry of a failed video (logged as a warning)."""
    record = index[result.vid] if 0 <= result.vid < len(index) else {"path": None, "class": None}
    log.warning("video %d (%s): %s", result.vid, record["path"], result.reason)
    return {"id": result.vid, "path": record["path"], "class": record["class"], "reason": result.reason}


def extract_flow(index_path: str | os.PathLike, frames_dir: str | os.PathLike,
                 resample_path: str | os.PathLike, out_dir: str | os.PathLike,
                 report_path: str | os.PathLike, cfg: FlowConfig, clip: ClipConfig,
                 on_stored: Callable[[FlowResult], None] | None = None,
                 executor: ExecutorConfig | None = None) -> dict[str, Any]:
    """Compute, quantise and store the TV-L1 flow of every pair some clip needs, one part per video.

    Parts an earlier (or killed) run finished under the same stamp are reused; the others
    are computed; parts no video needs any more are removed.

    Args:
        index_path: ``data/index.json`` (keys, paths and classes).
        frames_dir: the ``frames`` stage's folder.
        resample_path: ``data/resample.json``; its videos are the ones processed.
        out_dir: the store's folder (``parts/`` and ``meta.json``).
        report_path: JSON report: counts, pairs and every failed video with a reason (the returned
            dict also has the run keys ``RUN_KEYS``).
        cfg: the ``flow`` params (``threads`` OpenCV threads in each of ``workers`` processes).
        clip: the ``clip`` params (which pairs are needed).
        on_stored: called in this process with each video computed in this run, in id order.
        executor: the ``executor`` params; None or kind ``local``: ``cfg.workers`` processes here
            (one process feeding the GPU with the torch backend on CUDA).

    Returns:
        The report: what ``report_path`` holds, plus the run keys ``RUN_KEYS``.

    Raises:
        FlowError: if failed / processed videos exceeds ``cfg.max_failures`` (parts, meta and
            report are written first).
        executors.ClusterError: with ``executor.kind`` ray, a node that cannot read the frames.
    """
    needed_pairs(clip.frames, clip.frames, clip.step, cfg.stack)  # raises on a bad stack or clip
    start = time.perf_counter()
    index, kept, out_dir = read_index(index_path), read_resample(resample_path), Path(out_dir)
    with FrameStore(frames_dir) as store:
        jobs, no_pairs = plan_flow(index, kept, store, out_dir, cfg, clip)
        width, height = store.width, store.height
        shards = {int(vid): entry["shard"] for vid, entry in store.meta["videos"].items()}
    done = {r.vid: r for r in no_pairs}
    done.update({job.vid: FlowResult(job.vid, len(job.pairs), None) for job in jobs
                 if parts.stamp_of(job.part) == job.stamp})
    todo = [job for job in jobs if job.vid not in done]
    on_ray = executor is not None and executor.kind == "ray"
    gpu = not on_ray and _backend(cfg) == "torch" and _cuda()  # one process feeding the GPU
    processes = 1 if gpu else max(1, min(resolve_workers(cfg.workers), len(todo)))
    with _computed(todo, str(frames_dir), cfg, processes, gpu, executor, shards) as results, \
            logging_redirect_tqdm():
        for result in tqdm(results, total=len(todo), desc="flow", unit="video"):
            done[result.vid] = result
            if on_stored is not None:
                on_stored(result)
    stored = [job for job in jobs if done[job.vid].reason is None]
    parts.remove_stale(out_dir, {Path(job.part) for job in stored})
    (out_dir / META_NAME).unlink(missing_ok=True)  # a new file: never rewrite a cache-linked one in place
    write_json(out_dir / META_NAME, {
        "layout": LAYOUT, "quantisation": QUANTISATION, "params": result_params(cfg),
        "storage": {"codec": cfg.codec,
                    **({"quality": cfg.quality} if cfg.codec == "jpeg" else {"png_level": PNG_LEVEL})},
        "clip": to_dict(clip), "width": width, "height": height,
        "videos": {str(job.vid): {"shard": Path(job.part).relative_to(out_dir).as_posix(), "dataset": "data",
                                  "stamp": job.stamp, "pairs": list(job.pairs)} for job in stored}})
    failed = [_failure(index, r) for r in sorted(done.values()) if r.reason is not None]
    seconds = time.perf_counter() - start
    computed_pairs = sum(len(job.pairs) for job in todo if done[job.vid].reason is None)
    report = {
        "counts": {"videos": len(kept), "stored": len(stored), "failed": len(failed)},
        "pairs": sum(len(job.pairs) for job in stored), "failed_fraction": len(failed) / len(kept) if kept else 0.0,
        "max_failures": cfg.max_failures, "failed": failed,
    }
    # the file holds what the inputs decide, so a re-run on any machine writes the same bytes
    write_json(report_path, report)
    if report["failed_fraction"] > cfg.max_failures:
        raise FlowError(f"flow failed for {len(failed)} of {len(kept)} videos ({report['failed_fraction']:.1%}), "
                        f"more than flow.max_failures = {cfg.max_failures:.1%}; reasons in {report_path}")
    return {**report, "seconds": round(seconds, 3), "pairs_per_second": round(computed_pairs / seconds, 2),
            "workers": "ray" if on_ray else processes, "threads": cfg.threads, "computed": len(todo),
            "reused": len(jobs) - len(todo)}
