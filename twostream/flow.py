"""Stage ``flow``: TV-L1 optical flow for the frame pairs the clips use; read it back.

On disk (``data/flow/``):

- ``flow-NNNNN.h5``: the videos of ``data/resample.json`` in id order, as many per file
  as the frames store holds (its ``videos_per_shard``). One dataset per video, named by
  its zero-padded id (``000042``): ``(P, H, W, 2) uint8`` quantised flow of the ``P``
  pairs some clip needs (channel 0 = x right-positive, 1 = y down-positive, zero motion
  = 128), one pair per chunk, gzip level 1; attribute ``pairs``: ``(P,) int64`` first
  resampled frame ``k`` of each pair ``(k, k + 1)``, increasing.
- ``meta.json``: ``{"layout", "quantisation", "storage", "params", "clip", "width",
  "height", "videos": {"<id>": {"shard", "dataset", "pairs"}}}``.

Only the pairs of ``clips.needed_pairs`` are computed (12 of the 17 of a 3-s video at
6 fps with 3-frame clips every 3 frames, stack 2). Workers compute whole videos; the
main process writes them in id order, so the files do not depend on the worker count.
OpenCV's TV-L1 hardly uses threads (64x64: 116 ms per pair on one thread, 119 ms on
two), so the stage parallelises over videos with one process per core. The shard
writing and the lazy per-process reading are ``twostream.h5store``'s.
"""

from __future__ import annotations

import contextlib
import logging
import multiprocessing
import os
import time
from dataclasses import is_dataclass
from typing import Any, Iterator, Mapping, NamedTuple

import cv2
import numpy as np
from tqdm import tqdm
from tqdm.contrib.logging import logging_redirect_tqdm

from twostream.clips import needed_pairs
from twostream import pools
from twostream.config import ClipConfig, FlowConfig, resolve_workers, result_params, to_dict
from twostream.frames import FrameStore
from twostream.h5store import META_NAME, VideoShardWriter, VideoStore, clear_shards
from twostream.hmdb51 import read_index, write_json
from twostream.resample import read_resample

log = logging.getLogger(__name__)

SHARD_NAME = "flow-{:05d}.h5"
GZIP_LEVEL = 1  # h5py's gzip filter on every pair
LAYOUT = "(P, H, W, 2) uint8; channel 0 = x (right +), 1 = y (down +); attribute pairs (P,) int64"
QUANTISATION = "q = floor(255 * (clip(v, -bound, bound) + bound) / (2 * bound) + 0.5); zero = 128"
STORAGE = {"chunk": "1 pair", "compression": f"gzip {GZIP_LEVEL}"}
RUN_KEYS = ("seconds", "pairs_per_second", "workers", "threads")  # returned, but kept out of the report file
BACKENDS = ("opencv", "torch", "auto")  # "auto": torch when CUDA is available, else opencv
# FlowConfig key -> keyword of cv2.optflow.DualTVL1OpticalFlow_create (note "innner")
TVL1_KEYWORDS = {
    "tau": "tau", "lambda_": "lambda_", "theta": "theta", "nscales": "nscales", "warps": "warps",
    "epsilon": "epsilon", "inner_iterations": "innnerIterations",
    "outer_iterations": "outerIterations", "scale_step": "scaleStep", "gamma": "gamma",
    "median_filtering": "medianFiltering",
}
_RULES = {  # key -> (check, what is allowed)
    "tau": (lambda v: v > 0, "> 0"), "lambda_": (lambda v: v > 0, "> 0"),
    "theta": (lambda v: v > 0, "> 0"), "nscales": (lambda v: v >= 1, ">= 1"),
    "warps": (lambda v: v >= 1, ">= 1"), "epsilon": (lambda v: v > 0, "> 0"),
    "inner_iterations": (lambda v: v >= 1, ">= 1"), "outer_iterations": (lambda v: v >= 1, ">= 1"),
    "scale_step": (lambda v: 0 < v < 1, "in (0, 1)"), "gamma": (lambda v: v >= 0, ">= 0"),
    "median_filtering": (lambda v: v == 1 or (v >= 3 and v % 2 == 1), "1 (off) or odd >= 3"),
}
_tvl1_cache: dict[tuple, Any] = {}  # (pid, params) -> DualTVL1OpticalFlow of this process


def tvl1_params(params: FlowConfig | Mapping[str, Any]) -> dict[str, Any]:
    """The TV-L1 keys of ``params``, checked.

    Args:
        params: a ``FlowConfig`` or a mapping with its TV-L1 keys (others are ignored,
            except ``backend``, which must be one of ``BACKENDS`` when present).

    Returns:
        ``{FlowConfig key: value}`` for the keys of ``TVL1_KEYWORDS``.

    Raises:
        KeyError: if a TV-L1 key is missing.
        ValueError: on a value outside its range, or an unknown backend.
    """
    values = to_dict(params) if is_dataclass(params) else dict(params)
    resolve_backend(values.get("backend", "opencv"))
    missing = [k for k in TVL1_KEYWORDS if k not in values]
    if missing:
        raise KeyError(f"flow params lack TV-L1 keys {missing}; need {list(TVL1_KEYWORDS)}")
    for key, (ok, allowed) in _RULES.items():
        if not ok(values[key]):
            raise ValueError(f"flow.{key} must be {allowed}; got {values[key]!r}")
    return {k: values[k] for k in TVL1_KEYWORDS}


def resolve_backend(backend: str) -> str:
    """``opencv`` or ``torch`` for a ``flow.backend`` value (``auto``: torch when CUDA is available).

    Raises:
        ValueError: on a value outside ``BACKENDS``.
    """
    if backend not in BACKENDS:
        raise ValueError(f"flow.backend must be one of {', '.join(BACKENDS)}; got {backend!r}")
    if backend == "auto":
        return "torch" if _cuda() else "opencv"
    return backend


def _backend(params: FlowConfig | Mapping[str, Any]) -> str:
    return resolve_backend(params.backend if is_dataclass(params) else params.get("backend", "opencv"))


def _tvl1(params: dict[str, Any]) -> Any:
    """This process's OpenCV TV-L1 object for ``params`` (built once, reused)."""
    key = (os.getpid(), *sorted(params.items()))
    if key not in _tvl1_cache:
        kwargs = {TVL1_KEYWORDS[k]: v for k, v in params.items()}
        _tvl1_cache[key] = cv2.optflow.DualTVL1OpticalFlow_create(**kwargs)
    return _tvl1_cache[key]


def compute_flow(prev: np.ndarray, next: np.ndarray, params: FlowConfig | Mapping[str, Any]) -> np.ndarray:
    """TV-L1 optical flow from ``prev`` to ``next``.

    ``params["backend"]`` (or ``FlowConfig.backend``) picks OpenCV's ``DualTVL1OpticalFlow``
    (``opencv``, the default) or the same algorithm in PyTorch (``torch``, ``twostream.tvl1``,
    on CUDA when available); ``auto`` is torch when CUDA is available.

    Args:
        prev: ``(H, W) uint8`` grayscale frame at time t.
        next: ``(H, W) uint8`` grayscale frame at time t + 1.
        params: a ``FlowConfig`` or a mapping with its TV-L1 keys (see ``tvl1_params``).

    Returns:
        ``(H, W, 2) float32`` displacement in pixels of each pixel of ``prev``:
        channel 0 = x (right positive), 1 = y (down positive).

    Raises:
        ValueError: if the frames are not two ``(H, W) uint8`` arrays of one shape, or
            on bad params (see ``tvl1_params``).
    """
    for name, frame in (("prev", prev), ("next", next)):
        if frame.ndim != 2 or frame.dtype != np.uint8:
            raise ValueError(f"{name} must be an (H, W) uint8 grayscale frame; "
                             f"got {frame.shape} {frame.dtype}")
    if prev.shape != next.shape:
        raise ValueError(f"prev and next must have one shape; got {prev.shape} and {next.shape}")
    tvl1 = tvl1_params(params)
    if _backend(params) == "torch":
        from twostream.tvl1 import tvl1_flow

        return tvl1_flow(prev, next, tvl1)
    return _tvl1(tvl1).calc(prev, next, None)


def quantize(flow: np.ndarray, bound: float) -> np.ndarray:
    """Quantise flow like denseflow: ``floor(255 * (clip(v, -b, b) + b) / (2b) + 0.5)``.

    Zero motion maps to 128, ``-b`` to 0, ``+b`` to 255; the step is ``2b / 255``.

    Args:
        flow: ``(..., 2) float32`` displacements in pixels.
        bound: ``b > 0``, in pixels.

    Returns:
        ``uint8`` array of the same shape.

    Raises:
        ValueError: if ``bound`` is not positive or the flow has a NaN or infinity.
    """
    if not bound > 0:
        raise ValueError(f"flow.bound must be > 0; got {bound!r}")
    flow = np.asarray(flow, dtype=np.float32)
    if not np.isfinite(flow).all():
        raise ValueError(f"flow has {int((~np.isfinite(flow)).sum())} non-finite values")
    scaled = (np.clip(flow, -bound, bound) + np.float32(bound)) * np.float32(255 / (2 * bound))
    return np.floor(scaled + np.float32(0.5)).astype(np.uint8)


def dequantize(q: np.ndarray, bound: float) -> np.ndarray:
    """Inverse of ``quantize``: ``q * 2b / 255 - b`` (error <= ``b / 255`` inside the bound).

    Args:
        q: ``(..., 2) uint8`` quantised flow.
        bound: the ``b`` it was quantised with.

    Returns:
        ``float32`` array of the same shape, in pixels.

    Raises:
        ValueError: if ``bound`` is not positive.
    """
    if not bound > 0:
        raise ValueError(f"flow.bound must be > 0; got {bound!r}")
    return np.asarray(q, dtype=np.float32) * np.float32(2 * bound / 255) - np.float32(bound)


class _VideoFlow(NamedTuple):
    """A worker's answer for one video: its quantised flow, or the reason it failed."""

    vid: int
    pairs: list[int]  # first resampled frame of each pair
    flow: np.ndarray | None  # (P, H, W, 2) uint8; None on failure
    reason: str | None  # None on success


_worker: dict[str, Any] = {}  # per process: the frame store and params of the running stage


def pool_context() -> multiprocessing.context.BaseContext:
    """The flow stage's worker processes: ``pools.pool_context`` with this module preloaded."""
    return pools.pool_context([__name__])


def _init_worker(frames_dir: str, cfg: FlowConfig) -> None:
    cv2.setNumThreads(cfg.threads)
    if _backend(cfg) == "torch":  # on CPU: one torch process per core, like OpenCV's
        import torch

        torch.set_num_threads(cfg.threads)
    _worker.update(store=FrameStore(frames_dir), cfg=cfg)


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
        from twostream.tvl1 import tvl1_flow

        return quantize(tvl1_flow(prev, next_, params), cfg.bound)
    return np.stack([quantize(compute_flow(a, b, params), cfg.bound) for a, b in zip(prev, next_)])


def _gray_pairs(store: FrameStore, vid: int, kept: np.ndarray,
                pairs: list[int]) -> tuple[np.ndarray, np.ndarray]:
    """``(P, H, W) uint8`` grayscale first and second frames of the pairs of one video."""
    positions = sorted({p for k in pairs for p in (k, k + 1)})
    # one read per frame: h5py's list indexing took 15 ms for 9 demo frames, single ones 0.3 ms each
    gray = {p: cv2.cvtColor(store.read(vid, [int(kept[p])])[0], cv2.COLOR_RGB2GRAY) for p in positions}
    return np.stack([gray[k] for k in pairs]), np.stack([gray[k + 1] for k in pairs])


def _torch_batches(jobs: list[tuple], frames_dir: str, cfg: FlowConfig,
                   pairs_per_batch: int = 256) -> Iterator[_VideoFlow]:
    """The torch backend on a GPU: one process, the pairs of several videos in each batch.

    Yields ``_VideoFlow`` in job order; a video whose frames cannot be read fails alone.
    """
    from twostream.tvl1 import tvl1_flow

    params = tvl1_params(cfg)
    with FrameStore(frames_dir) as store:
        start = 0
        while start < len(jobs):
            group, ready, n_pairs = [], [], 0
            while start < len(jobs) and n_pairs < pairs_per_batch:
                vid, kept, pairs = jobs[start]
                start += 1
                try:
                    ready.append(_gray_pairs(store, vid, np.asarray(kept, np.int64), pairs))
                except Exception as e:  # noqa: BLE001 - reported per video, never dropped
                    group.append(_VideoFlow(vid, pairs, None, f"{type(e).__name__}: {e}"))
                    continue
                group.append(_VideoFlow(vid, pairs, None, None))
                n_pairs += len(pairs)
            flow = iter(())
            if ready:
                prev, next_ = (np.concatenate([r[i] for r in ready]) for i in (0, 1))
                flow = iter(quantize(tvl1_flow(prev, next_, params, batch_size=pairs_per_batch), cfg.bound))
            for item in group:
                yield item if item.reason else item._replace(flow=np.stack([next(flow) for _ in item.pairs]))


def _flow_job(job: tuple[int, list[int], list[int]]) -> _VideoFlow:
    """Worker: the flow of one video ``(vid, kept native indices, pairs)``, or why it failed."""
    vid, kept, pairs = job
    try:
        flow = video_flow(_worker["store"], vid, np.asarray(kept, np.int64), pairs, _worker["cfg"])
    except Exception as e:  # noqa: BLE001 - any failure is reported per video, never dropped
        return _VideoFlow(vid, pairs, None, f"{type(e).__name__}: {e}")
    return _VideoFlow(vid, pairs, flow, None)


def _cuda() -> bool:
    import torch  # here only: the OpenCV path does not pay for importing torch

    return torch.cuda.is_available()


def _pool_size(workers: int, n_jobs: int) -> int:
    """Processes that run ``n_jobs`` videos; 1 = in this process."""
    return max(1, min(workers, n_jobs))


@contextlib.contextmanager
def _computed(jobs: list[tuple], frames_dir: str, cfg: FlowConfig, processes: int,
              gpu: bool) -> Iterator[Iterator[_VideoFlow]]:
    """``_flow_job`` over ``jobs`` in job order, from ``processes`` workers (1 = this process),
    or, with ``gpu``, batches of several videos' pairs in this process (``_torch_batches``)."""
    if gpu:
        yield _torch_batches(jobs, frames_dir, cfg)
        return
    if processes == 1:
        threads = cv2.getNumThreads()
        _init_worker(frames_dir, cfg)
        try:
            yield map(_flow_job, jobs)
        finally:
            _worker.pop("store").close()
            cv2.setNumThreads(threads)
        return
    yield pools.ordered_map(_flow_job, jobs, processes, pool_context(), _init_worker, (frames_dir, cfg),
                            name=lambda job: f"video {job[0]}")


def _write(writer: VideoShardWriter, result: _VideoFlow) -> dict[str, Any]:
    """Write one video's flow; returns its ``meta.json`` entry."""
    entry = writer.add(result.vid, result.flow, {"pairs": np.asarray(result.pairs, dtype=np.int64)},
                       compression="gzip", compression_opts=GZIP_LEVEL)
    return {**entry, "pairs": list(result.pairs)}


def _check_config(cfg: FlowConfig, clip: ClipConfig) -> None:
    tvl1_params(cfg)
    if not cfg.bound > 0:
        raise ValueError(f"flow.bound must be > 0 (pixels); got {cfg.bound!r}")
    if cfg.threads < 1:
        raise ValueError(f"flow.threads must be >= 1 (OpenCV threads per worker); got {cfg.threads}")
    needed_pairs(clip.frames, clip.frames, clip.step, cfg.stack)  # raises on a bad stack or clip


def _plan(kept: dict[int, np.ndarray], cfg: FlowConfig,
          clip: ClipConfig) -> tuple[list[tuple], list[_VideoFlow]]:
    """Jobs ``(vid, kept, pairs)`` in id order, and failures for videos no clip fits in."""
    jobs, no_pairs = [], []
    for vid in sorted(kept):
        pairs = needed_pairs(len(kept[vid]), clip.frames, clip.step, cfg.stack)
        if pairs:
            jobs.append((vid, kept[vid].tolist(), pairs))
        else:
            reason = f"{len(kept[vid])} resampled frames hold no clip of {clip.frames} frames"
            no_pairs.append(_VideoFlow(vid, [], None, reason))
    return jobs, no_pairs


def _failure(index: list[dict[str, Any]], result: _VideoFlow) -> dict[str, Any]:
    """Report entry of a failed video (logged as a warning)."""
    record = index[result.vid] if 0 <= result.vid < len(index) else {"path": None, "class": None}
    log.warning("video %d (%s): %s", result.vid, record["path"], result.reason)
    return {"id": result.vid, "path": record["path"], "class": record["class"], "reason": result.reason}


def extract_flow(index_path: str | os.PathLike, frames_dir: str | os.PathLike,
                 resample_path: str | os.PathLike, out_dir: str | os.PathLike,
                 report_path: str | os.PathLike, cfg: FlowConfig, clip: ClipConfig) -> dict[str, Any]:
    """Compute, quantise and store the TV-L1 flow of every pair some clip needs.

    Args:
        index_path: ``data/index.json`` (paths and classes for the report).
        frames_dir: the ``frames`` stage's folder.
        resample_path: ``data/resample.json``; its videos are the ones processed.
        out_dir: folder for the shards and ``meta.json`` (earlier ones are removed).
        report_path: JSON report: counts, pairs and every failed video with a reason (the returned
            dict also has the run's seconds, pairs per second, workers and threads).
        cfg: the ``flow`` params (``threads`` OpenCV threads in each of ``workers`` processes).
        clip: the ``clip`` params (which pairs are needed).

    Returns:
        The report: what ``report_path`` holds, plus the run keys ``RUN_KEYS``.

    Raises:
        ValueError: on bad params.
    """
    _check_config(cfg, clip)
    start = time.perf_counter()
    index, kept = read_index(index_path), read_resample(resample_path)
    with FrameStore(frames_dir) as store:
        width, height, per_shard = store.width, store.height, store.params["videos_per_shard"]
    jobs, no_pairs = _plan(kept, cfg, clip)
    failed = [_failure(index, result) for result in no_pairs]
    out_dir, videos = clear_shards(out_dir, SHARD_NAME), {}
    gpu = _backend(cfg) == "torch" and _cuda()  # one process feeding the GPU
    processes = 1 if gpu else _pool_size(resolve_workers(cfg.workers), len(jobs))
    with VideoShardWriter(out_dir, SHARD_NAME, per_shard) as writer, \
            _computed(jobs, str(frames_dir), cfg, processes, gpu) as results, logging_redirect_tqdm():
        for result in tqdm(results, total=len(jobs), desc="flow", unit="video"):
            if result.reason is None:
                videos[str(result.vid)] = _write(writer, result)
            else:
                failed.append(_failure(index, result))
    write_json(out_dir / META_NAME, {
        "layout": LAYOUT, "quantisation": QUANTISATION, "storage": STORAGE,
        "params": result_params(cfg),
        "clip": to_dict(clip), "width": width, "height": height, "videos": videos})
    seconds = time.perf_counter() - start
    n_pairs = sum(len(v["pairs"]) for v in videos.values())
    report = {
        "counts": {"videos": len(kept), "stored": len(videos), "failed": len(failed)},
        "pairs": n_pairs, "seconds": round(seconds, 3), "pairs_per_second": round(n_pairs / seconds, 2),
        "workers": processes, "threads": cfg.threads, "failed": sorted(failed, key=lambda f: f["id"]),
    }
    # the file holds what the inputs decide, so a re-run on any machine writes the same bytes
    write_json(report_path, {k: v for k, v in report.items() if k not in RUN_KEYS})
    return report


class FlowStore(VideoStore):
    """Read access to the ``flow`` stage's output folder.

    HDF5 files open lazily, one handle per shard per process, as ``FrameStore`` does
    (see ``h5store.VideoStore``): safe to build before a fork, and it pickles without handles.
    """

    missing_message = ("video {vid!r} has no flow in {root} ({n} videos stored; "
                       "failed ones are listed in the flow report)")

    def __init__(self, flow_dir: str | os.PathLike) -> None:
        """Read ``meta.json`` of ``flow_dir``.

        Raises:
            FileNotFoundError: if ``flow_dir`` has no ``meta.json``.
        """
        super().__init__(flow_dir)
        self.params: dict[str, Any] = self.meta["params"]
        self.bound: float = float(self.params["bound"])
        self.stack: int = int(self.params["stack"])
        self.width: int = self.meta["width"]
        self.height: int = self.meta["height"]
        self._rows = {vid: {k: row for row, k in enumerate(v["pairs"])} for vid, v in self._videos.items()}

    def pairs(self, vid: int) -> list[int]:
        """First resampled frames ``k`` of the stored pairs ``(k, k + 1)`` of ``vid``, increasing.

        Raises:
            KeyError: if the video has no stored flow.
        """
        return list(self._entry(vid)["pairs"])

    def read(self, vid: int, pairs: list[int] | np.ndarray) -> np.ndarray:
        """Quantised flow of some pairs of a video (``dequantize(q, store.bound)`` for pixels).

        Args:
            vid: video id.
            pairs: first resampled frames ``k`` of the pairs ``(k, k + 1)``; any order, repeats allowed.

        Returns:
            ``(len(pairs), H, W, 2) uint8``; channel 0 = x, 1 = y; 128 = no motion.

        Raises:
            KeyError: if the video, or one of the pairs, is not stored (names it).
        """
        stored = self.pairs(vid)
        rows_of = self._rows[vid]
        missing = [int(k) for k in pairs if int(k) not in rows_of]
        if missing:
            raise KeyError(f"video {vid} has no stored flow pair(s) {missing}; stored pairs: {stored}")
        return self._read_rows(vid, [rows_of[int(k)] for k in pairs], "pair row")
