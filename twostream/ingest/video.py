"""Reading video files through the ffmpeg binary: decoding, resizing, streaming in blocks.

ffmpeg is always called with an argument list (never a shell string): real HMDB-51
file names contain ``! ( ) # [ ] & + ; ~ @`` and spaces. Writing videos (the demo,
the tests) is ``videowriter``'s job, so that the decoding code decides only the frames
stage and the encoding code only ``demo_data``.
"""

from __future__ import annotations

import logging
import os
import re
import subprocess
import threading
from types import TracebackType
from typing import IO, Iterator, NamedTuple

import ffmpeg
import numpy as np

from twostream.ingest.videowriter import ffmpeg_exe

log = logging.getLogger(__name__)

class VideoError(Exception):
    """A video that cannot be decoded completely; ``reason`` is a short phrase for reports."""

    def __init__(self, path: str | os.PathLike, reason: str) -> None:
        super().__init__(str(path), reason)  # both in args, so it pickles across processes
        self.path = str(path)
        self.reason = reason

    def __str__(self) -> str:
        return f"{self.path}: {self.reason}"


# the decode must yield at least this share of duration x fps frames; below it the
# file is taken as truncated (the container's duration may include a slightly longer
# audio track, so the rule is not an exact equality)
MIN_FRAME_FRACTION = 0.75
# frames per VideoReader block: 8 MB at 340x256, small next to a whole video, large enough
# that the per-read overhead is nothing
BLOCK_FRAMES = 32
# ffmpeg prints non-integer rates with 2 decimals; these NTSC rates are restored exactly
_NTSC_BASES = (24, 30, 48, 60, 120)
_STREAM_RE = re.compile(r"Stream #\d+:\d+\S*: Video: (.*)")
_RATE_RE = r"(\d+(?:\.\d+)?)(k?) {}\b"
_DURATION_RE = re.compile(r"Duration: (\d+):(\d\d):(\d\d(?:\.\d+)?)")
_ERROR_RE = re.compile(r"\[(error|fatal)\] (.*)")


def _rate(stream_line: str, unit: str) -> float | None:
    """The ``<x> fps`` / ``<x> tbr`` value of ffmpeg's Stream line, or None."""
    m = re.search(_RATE_RE.format(unit), stream_line)
    if not m:
        return None
    value = float(m.group(1)) * (1000.0 if m.group(2) else 1.0)
    for base in _NTSC_BASES:
        if abs(value - base * 1000 / 1001) < 0.006:
            return base * 1000 / 1001
    return value if value > 0 else None


def parse_stream_info(stderr: str) -> tuple[float | None, float | None]:
    """Frame rate and duration of the first input video stream from ffmpeg's log.

    Args:
        stderr: ffmpeg's log at level ``info`` (with or without ``level+`` prefixes).

    Returns:
        ``(fps, duration_s)``; fps is the stream's ``fps`` value, else its ``tbr``;
        either is None when ffmpeg printed no usable value (fps None also when
        the input has no video stream).
    """
    header = stderr.split("Output #0", 1)[0]  # the output stream repeats "fps"
    fps = None
    stream = _STREAM_RE.search(header)
    if stream:
        fps = _rate(stream.group(1), "fps") or _rate(stream.group(1), "tbr")
    duration = None
    m = _DURATION_RE.search(header)
    if m:
        duration = int(m.group(1)) * 3600 + int(m.group(2)) * 60 + float(m.group(3))
    return fps, duration


def _decode_errors(stderr: str) -> list[str]:
    """Messages ffmpeg logged at level error or fatal."""
    return [m.group(2).strip() for m in _ERROR_RE.finditer(stderr)]


class Decoded(NamedTuple):
    """A decoded video: ``frames (T, H, W, 3) uint8`` RGB, native ``fps``, and the messages ffmpeg
    logged at level error for a video that still decoded whole (``warnings``, often empty)."""

    frames: np.ndarray
    fps: float
    warnings: list[str]


def read_video(path: str | os.PathLike, width: int, height: int) -> tuple[np.ndarray, float]:
    """``decode_video`` without the warnings (they are logged): ``(frames, fps)``."""
    decoded = decode_video(path, width, height)
    if decoded.warnings:
        log.warning("%s: decoded whole despite %d ffmpeg errors, first: %s", path, len(decoded.warnings),
                    decoded.warnings[0])
    return decoded.frames, decoded.fps


def decode_video(path: str | os.PathLike, width: int, height: int) -> Decoded:
    """Decode a whole video to RGB frames at a fixed working size (``VideoReader``'s blocks, joined).

    The resize (``area`` filter) happens inside ffmpeg, so the result never depends on
    the source resolution. One decoding thread: callers parallelise over videos.
    Frame ``i`` is taken to be shown at ``i / fps`` (constant frame rate).

    Args:
        path: video file (any name; it is passed as one argument, never to a shell).
        width: output frame width in pixels.
        height: output frame height in pixels.

    Old XviD/DivX files (HMDB-51's among them) often make ffmpeg log an error such as
    "ac-tex damaged" for one macroblock while every frame still decodes (ffmpeg conceals
    the block): such a video is kept, with the messages in ``warnings``, when it yields the
    frame count its header promises (``whole_count``).

    Returns:
        ``Decoded(frames, fps, warnings)``: ``(T, height, width, 3) uint8`` RGB frames, the
        stream's native frame rate, and ffmpeg's error messages for a video kept despite them.

    Raises:
        ValueError: if width or height is not positive.
        VideoError: if the file is missing or empty, cannot be opened, has no video
            stream, decodes to 0 frames, or is truncated (ffmpeg fails; fewer than
            ``MIN_FRAME_FRACTION`` x duration x fps frames come out; or ffmpeg logs an error
            and fewer than ``whole_count`` frames come out).
    """
    with VideoReader(path, width, height) as reader:
        promised = round(reader.duration * reader.fps) if reader.duration else 0
        frames = _gather(reader.blocks(), promised, height, width)
    return Decoded(frames, reader.fps, reader.warnings)


def _gather(blocks: Iterator[np.ndarray], capacity: int, height: int, width: int) -> np.ndarray:
    """Join ``(b, height, width, 3) uint8`` blocks into one ``(T, height, width, 3) uint8`` array.

    The array is filled in place from ``capacity`` frames (the header's count) and grows by half
    when the video is longer, so the peak is one copy of the frames when the header is right
    (pages past the last frame are never touched, so they cost no memory).
    """
    frames = _empty(capacity, height, width)
    n = 0
    for block in blocks:
        if n + len(block) > len(frames):
            grown = _empty(max(n + len(block), len(frames) * 3 // 2), height, width)
            grown[:n] = frames[:n]
            frames = grown
        frames[n : n + len(block)] = block
        n += len(block)
    return frames[:n]


def _empty(n: int, height: int, width: int) -> np.ndarray:
    """``(n, height, width, 3) uint8`` uninitialised; ``BLOCK_FRAMES`` frames when n does not fit."""
    try:
        return np.empty((max(n, BLOCK_FRAMES), height, width, 3), np.uint8)
    except MemoryError:  # a header promising more than memory holds: grow as frames arrive instead
        return np.empty((BLOCK_FRAMES, height, width, 3), np.uint8)


def whole_count(duration: float, fps: float) -> int:
    """Frames a video of ``duration`` seconds at ``fps`` must yield to count as decoded whole
    despite logged errors: ``round(duration * fps)`` less one (the header rounds the duration)."""
    return max(1, round(duration * fps) - 1)


def _check_header(path: str | os.PathLike, log_text: str) -> None:
    """Raise VideoError unless ffmpeg's log shows an opened input with a video stream."""
    if _STREAM_RE.search(log_text.split("Output #0", 1)[0]) is None:
        errors = _decode_errors(log_text)
        reason = "no video stream" if "Input #0" in log_text else "cannot open"
        detail = f": {errors[0]}" if errors and reason == "cannot open" else ""
        raise VideoError(path, reason + detail)


def _check_complete(path: str | os.PathLike, n_bytes: int, log_text: str, failed: bool,
                    width: int, height: int) -> tuple[int, float, list[str]]:
    """``(frames, fps, warnings)`` of a finished decode of ``n_bytes``, or VideoError on any sign of
    lost frames."""
    fps, duration = parse_stream_info(log_text)
    errors = _decode_errors(log_text)
    _check_header(path, log_text)
    if failed:
        raise VideoError(path, f"decode error: {errors[0] if errors else 'ffmpeg failed'}")
    frame_bytes = width * height * 3
    n = n_bytes // frame_bytes
    if n == 0 or n_bytes % frame_bytes:
        raise VideoError(path, f"decoded {n_bytes} bytes, not a whole number of frames (>0)")
    if fps is None:
        raise VideoError(path, "no frame rate in the stream header")
    if errors and (duration is None or n < whole_count(duration, fps)):
        expected = "no duration in the header" if duration is None else f"{whole_count(duration, fps)} expected"
        raise VideoError(path, f"decode error: {errors[0]} ({n} frames decoded, {expected})")
    if duration is not None and n < MIN_FRAME_FRACTION * duration * fps:
        raise VideoError(path, f"truncated: {n} frames decoded, duration x fps = {duration * fps:.0f}")
    return n, fps, errors


def _check_decode(path: str | os.PathLike, out: bytes, log_text: str, failed: bool,
                  width: int, height: int) -> Decoded:
    """Turn ffmpeg's raw output into frames, or raise VideoError on any sign of lost frames."""
    n, fps, errors = _check_complete(path, len(out), log_text, failed, width, height)
    # copy: frombuffer over bytes is read-only, callers may want to write
    frames = np.frombuffer(out, dtype=np.uint8).reshape(n, height, width, 3).copy()
    return Decoded(frames, fps, errors)


def decode_command(path: str | os.PathLike, width: int, height: int) -> list[str]:
    """The ffmpeg argument list that writes ``path``'s first video stream to stdout as raw
    ``(T, height, width, 3) uint8`` RGB frames (area-scaled, one thread), its log to stderr."""
    # "file:" keeps names with ':' or a leading '-' from being read as protocols/options;
    # level+info prints the input's Stream line (for fps) and tags errors "[error]"
    stream = (
        ffmpeg.input(f"file:{os.fspath(path)}", threads=1)
        .output("pipe:", format="rawvideo", pix_fmt="rgb24", map="0:v:0",
                vf=f"scale={width}:{height}:flags=area")
        .global_args("-nostdin", "-hide_banner", "-nostats", "-loglevel", "level+info",
                     "-filter_threads", "1")
    )
    return stream.compile(cmd=ffmpeg_exe())


def _read_full(stream: IO[bytes], view: memoryview) -> int:
    """Read into ``view`` until it is full or ``stream`` ends; returns the bytes read."""
    got = 0
    while got < len(view):
        n = stream.readinto(view[got:])
        if not n:
            break
        got += n
    return got


class VideoReader:
    """Context manager: ffmpeg decoding one video at ``(width, height)``, read in blocks.

    ``__enter__`` starts ffmpeg and waits for its header (``fps``, ``duration``); ``blocks()``
    yields the frames, at most ``block_frames`` at a time, so memory stays at one block whatever
    the video's length. Only after the last block is the video known to be whole (the checks of
    ``decode_video``): a caller that stores blocks as they come must discard what it stored for
    this video when ``blocks()`` raises. Leaving the ``with`` early kills ffmpeg.

    Args:
        path: video file (passed to ffmpeg as one argument, never to a shell).
        width: output frame width in pixels.
        height: output frame height in pixels.
        block_frames: most frames per block (``BLOCK_FRAMES``: 8 MB at 340x256).

    Raises:
        ValueError: if width, height or block_frames is not positive.
    """

    def __init__(self, path: str | os.PathLike, width: int, height: int, block_frames: int = BLOCK_FRAMES) -> None:
        if width <= 0 or height <= 0:
            raise ValueError(f"width and height must be positive; got {width}x{height}")
        if block_frames <= 0:
            raise ValueError(f"block_frames must be positive; got {block_frames}")
        self.path, self.width, self.height, self.block_frames = path, width, height, block_frames
        self.fps = 0.0  # native frame rate, set by __enter__
        self.duration: float | None = None  # seconds, from the container header (None if absent)
        self.n_frames: int | None = None  # set once blocks() is exhausted
        self.warnings: list[str] = []  # ffmpeg's errors for a video that still decoded whole
        self.process: subprocess.Popen | None = None  # kept after exit, for its returncode
        self._thread: threading.Thread | None = None
        self._log: list[str] = []
        self._cond = threading.Condition()
        self._header_done = self._eof = self._read = False

    def __enter__(self) -> VideoReader:
        """Start ffmpeg and read the header.

        Raises:
            VideoError: if the file is missing or empty, cannot be opened, has no video stream or
                no frame rate (or ffmpeg ends before writing a frame: the ``decode_video`` reasons).
        """
        if not os.path.isfile(self.path):
            raise VideoError(self.path, "file not found")
        if os.path.getsize(self.path) == 0:
            raise VideoError(self.path, "empty file (0 bytes)")
        self.process = subprocess.Popen(decode_command(self.path, self.width, self.height),
                                        stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
        # a thread drains stderr: ffmpeg would stall on a full pipe while we wait on stdout
        self._thread = threading.Thread(target=self._drain_stderr, name="ffmpeg-stderr", daemon=True)
        self._thread.start()
        try:
            self._read_header()
        except BaseException:
            self._close()
            raise
        return self

    def _drain_stderr(self) -> None:
        """Collect ffmpeg's log; flag "Output #0" (printed before any frame) and the end of stderr."""
        assert self.process is not None and self.process.stderr is not None
        try:
            for raw in self.process.stderr:
                line = raw.decode(errors="replace")
                with self._cond:
                    self._log.append(line)
                    if "Output #0" in line:
                        self._header_done = True
                        self._cond.notify_all()
        finally:
            with self._cond:
                self._eof = True
                self._cond.notify_all()

    def _read_header(self) -> None:
        """Wait for the output header or the end of ffmpeg's log; set fps and duration."""
        assert self.process is not None
        with self._cond:
            self._cond.wait_for(lambda: self._header_done or self._eof)
            text, header_done = "".join(self._log), self._header_done
        fps, self.duration = parse_stream_info(text)
        if not header_done:  # ffmpeg ended before writing a frame: the log is whole; 0 bytes always raises
            _check_complete(self.path, 0, text, self.process.wait() != 0, self.width, self.height)
        if fps is None:
            raise VideoError(self.path, "no frame rate in the stream header")
        self.fps = fps

    def blocks(self) -> Iterator[np.ndarray]:
        """The decoded frames in order, as ``(b, height, width, 3) uint8`` RGB blocks, 1 <= b <= block_frames.

        Raises:
            VideoError: after the last block, if the video did not decode whole (ffmpeg failed, a
                partial frame, 0 frames, truncated, or errors with fewer than ``whole_count`` frames).
            RuntimeError: if called outside the ``with`` block or a second time.
        """
        if self.process is None or self.process.stdout is None or self._read:
            raise RuntimeError("VideoReader.blocks() is read once, inside its with block")
        self._read = True
        frame_bytes, total = self.width * self.height * 3, 0
        while True:
            block = np.empty((self.block_frames, self.height, self.width, 3), np.uint8)
            got = _read_full(self.process.stdout, memoryview(block.reshape(-1)))
            total += got
            if got >= frame_bytes:
                yield block[: got // frame_bytes]
            if got < block.nbytes:
                break
        failed = self.process.wait() != 0
        assert self._thread is not None
        self._thread.join()
        self.n_frames, _, self.warnings = _check_complete(self.path, total, "".join(self._log), failed,
                                                          self.width, self.height)

    def __exit__(self, exc_type: type[BaseException] | None, exc: BaseException | None,
                 tb: TracebackType | None) -> None:
        self._close()

    def _close(self) -> None:
        """Kill ffmpeg if still running, reap it, join the stderr thread and close the pipes."""
        if self.process is None:
            return
        if self.process.poll() is None:
            self.process.kill()
        self.process.wait()
        if self._thread is not None:
            self._thread.join()
        for pipe in (self.process.stdout, self.process.stderr):
            if pipe is not None:
                pipe.close()
