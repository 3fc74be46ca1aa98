"""Video files through the ffmpeg binary: locating it, writing frames and reading them.

ffmpeg is always called with an argument list (never a shell string): real HMDB-51
file names contain ``! ( ) # [ ] & + ; ~ @`` and spaces.
"""

from __future__ import annotations

import functools
import logging
import os
import re
import shutil
import subprocess
from typing import NamedTuple

import ffmpeg
import numpy as np

log = logging.getLogger(__name__)

# encoder name -> extra output arguments; all single-threaded and bit-exact so the
# same frames always give the same bytes
CODECS: dict[str, list[str]] = {
    "xvid": ["-c:v", "libxvid", "-q:v", "3", "-vtag", "XVID"],
    "ffv1": ["-c:v", "ffv1", "-level", "3"],
    "h264": ["-c:v", "libx264", "-crf", "18", "-preset", "fast"],
}


@functools.lru_cache(maxsize=1)
def ffmpeg_exe() -> str:
    """Path of the ffmpeg binary: ``ffmpeg`` on PATH, else the imageio-ffmpeg wheel's.

    Raises:
        RuntimeError: if neither is available.
    """
    found = shutil.which("ffmpeg")
    if found:
        return found
    try:
        import imageio_ffmpeg
    except ImportError as e:  # pragma: no cover - requirements.txt installs it
        raise RuntimeError("no ffmpeg on PATH and imageio-ffmpeg is not installed") from e
    return imageio_ffmpeg.get_ffmpeg_exe()


def write_video(path: str | os.PathLike, frames: np.ndarray, fps: float, codec: str = "xvid") -> None:
    """Encode RGB frames to a video file, deterministically.

    Args:
        path: output file; its container follows the extension (``.avi``, ``.mkv``, ``.mp4``).
        frames: ``(T, H, W, 3) uint8`` RGB frames; H and W must be even for xvid/h264.
        fps: frame rate written into the stream.
        codec: one of ``CODECS`` (``xvid`` for HMDB-like files, ``ffv1`` lossless).

    Raises:
        ValueError: on a bad codec name or frame array.
        RuntimeError: if ffmpeg fails (its stderr is included).
    """
    if codec not in CODECS:
        raise ValueError(f"codec must be one of {', '.join(CODECS)}; got {codec!r}")
    if frames.ndim != 4 or frames.shape[-1] != 3 or frames.dtype != np.uint8:
        raise ValueError(f"frames must be (T, H, W, 3) uint8; got {frames.shape} {frames.dtype}")
    t, h, w, _ = frames.shape
    args = [
        ffmpeg_exe(), "-nostdin", "-hide_banner", "-loglevel", "error", "-y",
        "-f", "rawvideo", "-pix_fmt", "rgb24", "-s", f"{w}x{h}", "-r", f"{fps:g}", "-i", "pipe:0",
        *CODECS[codec],
        "-pix_fmt", "bgr0" if codec == "ffv1" else "yuv420p",
        "-threads", "1", "-fflags", "+bitexact", "-flags:v", "+bitexact", "-map_metadata", "-1",
        str(path),
    ]
    proc = subprocess.run(args, input=np.ascontiguousarray(frames).tobytes(), capture_output=True)
    if proc.returncode != 0:
        raise RuntimeError(f"ffmpeg could not write {path}: {proc.stderr.decode(errors='replace').strip()}")


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
    """Decode a whole video to RGB frames at a fixed working size.

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
    if width <= 0 or height <= 0:
        raise ValueError(f"width and height must be positive; got {width}x{height}")
    if not os.path.isfile(path):
        raise VideoError(path, "file not found")
    if os.path.getsize(path) == 0:
        raise VideoError(path, "empty file (0 bytes)")
    # "file:" keeps names with ':' or a leading '-' from being read as protocols/options;
    # level+info prints the input's Stream line (for fps) and tags errors "[error]"
    stream = (
        ffmpeg.input(f"file:{os.fspath(path)}", threads=1)
        .output("pipe:", format="rawvideo", pix_fmt="rgb24", map="0:v:0",
                vf=f"scale={width}:{height}:flags=area")
        .global_args("-nostdin", "-hide_banner", "-nostats", "-loglevel", "level+info",
                     "-filter_threads", "1")
    )
    try:
        out, err = stream.run(cmd=ffmpeg_exe(), capture_stdout=True, capture_stderr=True)
        failed = False
    except ffmpeg.Error as e:
        out, err, failed = e.stdout or b"", e.stderr or b"", True
    log_text = err.decode(errors="replace")
    return _check_decode(path, out, log_text, failed, width, height)


def whole_count(duration: float, fps: float) -> int:
    """Frames a video of ``duration`` seconds at ``fps`` must yield to count as decoded whole
    despite logged errors: ``round(duration * fps)`` less one (the header rounds the duration)."""
    return max(1, round(duration * fps) - 1)


def _check_decode(path: str | os.PathLike, out: bytes, log_text: str, failed: bool,
                  width: int, height: int) -> Decoded:
    """Turn ffmpeg's raw output into frames, or raise VideoError on any sign of lost frames."""
    fps, duration = parse_stream_info(log_text)
    errors = _decode_errors(log_text)
    if _STREAM_RE.search(log_text.split("Output #0", 1)[0]) is None:
        reason = "no video stream" if "Input #0" in log_text else "cannot open"
        detail = f": {errors[0]}" if errors and reason == "cannot open" else ""
        raise VideoError(path, reason + detail)
    if failed:
        raise VideoError(path, f"decode error: {errors[0] if errors else 'ffmpeg failed'}")
    frame_bytes = width * height * 3
    n = len(out) // frame_bytes
    if n == 0 or len(out) % frame_bytes:
        raise VideoError(path, f"decoded {len(out)} bytes, not a whole number of frames (>0)")
    if fps is None:
        raise VideoError(path, "no frame rate in the stream header")
    if errors and (duration is None or n < whole_count(duration, fps)):
        expected = "no duration in the header" if duration is None else f"{whole_count(duration, fps)} expected"
        raise VideoError(path, f"decode error: {errors[0]} ({n} frames decoded, {expected})")
    if duration is not None and n < MIN_FRAME_FRACTION * duration * fps:
        raise VideoError(path, f"truncated: {n} frames decoded, duration x fps = {duration * fps:.0f}")
    # copy: frombuffer over bytes is read-only, callers may want to write
    frames = np.frombuffer(out, dtype=np.uint8).reshape(n, height, width, 3).copy()
    return Decoded(frames, fps, errors)
