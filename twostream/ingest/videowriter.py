"""Writing video files through the ffmpeg binary, deterministically; and finding that binary.

``write_video`` encodes RGB frames single-threaded and bit-exact, so the same frames always
give the same bytes (the demo dataset and the tests' videos). ``ffmpeg_exe`` finds the binary
for reading and writing alike: ``ffmpeg`` on PATH, else the imageio-ffmpeg wheel's.
"""

from __future__ import annotations

import functools
import os
import shutil
import subprocess

import numpy as np

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


def encode_args(path: str | os.PathLike, width: int, height: int, fps: float, codec: str = "xvid") -> list[str]:
    """The ffmpeg argument list of ``write_video``: raw ``(T, height, width, 3) uint8`` RGB frames on
    stdin, encoded single-threaded and bit-exact to ``path`` (same frames, same bytes).

    Raises:
        ValueError: on a bad codec name (one of ``CODECS`` is allowed).
    """
    if codec not in CODECS:
        raise ValueError(f"codec must be one of {', '.join(CODECS)}; got {codec!r}")
    return [
        ffmpeg_exe(), "-nostdin", "-hide_banner", "-loglevel", "error", "-y",
        "-f", "rawvideo", "-pix_fmt", "rgb24", "-s", f"{width}x{height}", "-r", f"{fps:g}", "-i", "pipe:0",
        *CODECS[codec],
        "-pix_fmt", "bgr0" if codec == "ffv1" else "yuv420p",
        "-threads", "1", "-fflags", "+bitexact", "-flags:v", "+bitexact", "-map_metadata", "-1",
        str(path),
    ]


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
    if frames.ndim != 4 or frames.shape[-1] != 3 or frames.dtype != np.uint8:
        raise ValueError(f"frames must be (T, H, W, 3) uint8; got {frames.shape} {frames.dtype}")
    args = encode_args(path, frames.shape[2], frames.shape[1], fps, codec)
    proc = subprocess.run(args, input=np.ascontiguousarray(frames).tobytes(), capture_output=True)
    if proc.returncode != 0:
        raise RuntimeError(f"ffmpeg could not write {path}: {proc.stderr.decode(errors='replace').strip()}")
