"""Reading videos: exact decode, frame rates, odd names, and every kind of broken file."""

from __future__ import annotations

import pickle
import signal
import subprocess

import numpy as np
import pytest

from conftest import damaged_xvid
from twostream.ingest.video import BLOCK_FRAMES, MIN_FRAME_FRACTION, VideoError, VideoReader, _check_decode, decode_video, ffmpeg_exe, parse_stream_info, read_video, whole_count
from twostream.ingest.videowriter import write_video


def noise(t: int, h: int, w: int, seed: int = 0) -> np.ndarray:
    """``(t, h, w, 3) uint8`` random frames: any lossy step would change them."""
    return np.random.default_rng(seed).integers(0, 256, (t, h, w, 3), dtype=np.uint8)


def moving_gradient(t: int, h: int, w: int) -> np.ndarray:
    """``(t, h, w, 3) uint8`` smooth moving pattern, compressible like real video."""
    y, x = np.mgrid[0:h, 0:w]
    return np.stack([np.stack([(2 * x + 3 * i) % 256, (2 * y + i) % 256, (x + y + 5 * i) % 256], -1)
                     for i in range(t)]).astype(np.uint8)


@pytest.mark.parametrize("suffix", [".mkv", ".avi"])
def test_lossless_video_decodes_bit_exact(tmp_path, suffix):
    frames = noise(6, 16, 24)
    path = tmp_path / f"clip{suffix}"
    write_video(path, frames, 30, codec="ffv1")
    decoded, fps = read_video(path, 24, 16)  # native size: the scaler only converts bgr0 -> rgb24
    assert decoded.shape == (6, 16, 24, 3) and decoded.dtype == np.uint8
    np.testing.assert_array_equal(decoded, frames)
    assert fps == 30.0
    assert decoded.flags.writeable


@pytest.mark.parametrize("fps", [30, 25, 30000 / 1001])
def test_frame_rate_is_parsed(tmp_path, fps):
    path = tmp_path / "clip.avi"
    write_video(path, moving_gradient(12, 32, 32), fps, codec="xvid")
    frames, got = read_video(path, 32, 32)
    assert frames.shape == (12, 32, 32, 3)
    assert got == fps  # 29.97 in ffmpeg's log is restored to 30000/1001 exactly


def test_resizes_to_working_size(tmp_path):
    path = tmp_path / "big.avi"
    write_video(path, moving_gradient(5, 48, 64), 30, codec="xvid")
    frames, _ = read_video(path, 20, 10)
    assert frames.shape == (5, 10, 20, 3)


def test_name_with_shell_characters(tmp_path):
    path = tmp_path / "a b!()#[]&+;~@'$x.avi"
    frames = noise(4, 8, 8)
    write_video(path, frames, 25, codec="ffv1")
    decoded, fps = read_video(path, 8, 8)
    np.testing.assert_array_equal(decoded, frames)
    assert fps == 25.0


def test_parse_stream_info_prefers_fps_then_tbr():
    log = (
        "[info] Input #0, avi, from 'x.avi':\n"
        "[info]   Duration: 00:01:02.50, start: 0.000000, bitrate: 795 kb/s\n"
        "[info]   Stream #0:0: Video: mpeg4, yuv420p, 320x240, 775 kb/s, 23.98 fps, 24 tbr, 1k tbn\n"
        "[info] Output #0, rawvideo, to 'pipe:':\n"
        "[info]   Stream #0:0: Video: rawvideo, rgb24, 64x64, 60 fps, 60 tbn\n"
    )
    assert parse_stream_info(log) == (24000 / 1001, 62.5)
    no_fps = log.replace("23.98 fps, ", "").replace("24 tbr", "12.5 tbr")
    assert parse_stream_info(no_fps) == (12.5, 62.5)
    fast = "[info]   Stream #0:1[0x2](und): Video: h264, 2k fps, 1k tbn\n"
    assert parse_stream_info(fast) == (2000.0, None)
    assert parse_stream_info("[info]   Stream #0:0: Audio: pcm_s16le, 44100 Hz\n") == (None, None)


def test_missing_and_empty_files(tmp_path):
    with pytest.raises(VideoError) as e:
        read_video(tmp_path / "nope.avi", 8, 8)
    assert e.value.reason == "file not found"
    (tmp_path / "empty.avi").write_bytes(b"")
    with pytest.raises(VideoError) as e:
        read_video(tmp_path / "empty.avi", 8, 8)
    assert e.value.reason == "empty file (0 bytes)"
    assert str(e.value) == f"{tmp_path / 'empty.avi'}: empty file (0 bytes)"
    again = pickle.loads(pickle.dumps(e.value))  # crosses process pools intact
    assert (again.path, again.reason) == (str(tmp_path / "empty.avi"), "empty file (0 bytes)")


def test_random_bytes_cannot_be_opened(tmp_path):
    path = tmp_path / "corrupt.avi"
    path.write_bytes(np.random.default_rng(1).integers(0, 256, 4000, dtype=np.uint8).tobytes())
    with pytest.raises(VideoError) as e:
        read_video(path, 8, 8)
    assert e.value.reason.startswith("cannot open: ")


def test_xvid_cut_in_half_is_truncated(tmp_path):
    whole = tmp_path / "whole.avi"
    write_video(whole, moving_gradient(60, 48, 64), 30, codec="xvid")
    data = whole.read_bytes()
    (tmp_path / "half.avi").write_bytes(data[: len(data) // 2])
    with pytest.raises(VideoError) as e:
        read_video(tmp_path / "half.avi", 32, 32)
    assert e.value.reason.startswith("decode error: ")  # the damaged last packet
    assert read_video(whole, 32, 32)[0].shape == (60, 32, 32, 3)


def test_audio_only_file_has_no_video_stream(tmp_path):
    path = tmp_path / "sound.wav"
    subprocess.run([ffmpeg_exe(), "-nostdin", "-loglevel", "error", "-f", "lavfi", "-i",
                    "anullsrc=r=8000:cl=mono", "-t", "0.2", str(path)], check=True)
    with pytest.raises(VideoError) as e:
        read_video(path, 8, 8)
    assert e.value.reason == "no video stream"


def test_truncation_rule_on_frame_count():
    log = ("[info] Input #0, avi, from 'x.avi':\n[info]   Duration: 00:00:02.00, start: 0.0\n"
           "[info]   Stream #0:0: Video: mpeg4, yuv420p, 8x8, 10 fps, 10 tbr, 10 tbn\n")
    frame = bytes(2 * 2 * 3)
    needed = int(np.ceil(MIN_FRAME_FRACTION * 20))  # 15 of duration x fps = 20 frames
    frames, fps, _ = _check_decode("x.avi", frame * needed, log, False, 2, 2)
    assert frames.shape == (needed, 2, 2, 3) and fps == 10.0
    with pytest.raises(VideoError) as e:
        _check_decode("x.avi", frame * (needed - 1), log, False, 2, 2)
    assert e.value.reason == "truncated: 14 frames decoded, duration x fps = 20"
    with pytest.raises(VideoError) as e:
        _check_decode("x.avi", b"", log, False, 2, 2)
    assert e.value.reason.startswith("decoded 0 bytes")
    # ffmpeg logged an error: kept when the header's frame count came out (one short allowed)
    damaged = log + "[mpeg4 @ 0x1] [error] ac-tex damaged at 3 1\n"
    assert whole_count(2.0, 10.0) == 19
    kept = _check_decode("x.avi", frame * 19, damaged, False, 2, 2)
    assert kept.frames.shape == (19, 2, 2, 3) and kept.warnings == ["ac-tex damaged at 3 1"]
    with pytest.raises(VideoError) as e:
        _check_decode("x.avi", frame * 18, damaged, False, 2, 2)
    assert e.value.reason == "decode error: ac-tex damaged at 3 1 (18 frames decoded, 19 expected)"
    with pytest.raises(VideoError) as e:
        _check_decode("x.avi", frame * 20, damaged, True, 2, 2)  # ffmpeg failed: never kept
    assert e.value.reason == "decode error: ac-tex damaged at 3 1"
    assert _check_decode("x.avi", frame * 20, log, False, 2, 2).warnings == []


def test_damaged_xvid_that_decodes_whole_is_kept_with_its_warnings(tmp_path):
    whole = decode_video(damaged_xvid(tmp_path / "whole.avi", seed=1), 32, 32)
    assert whole.frames.shape == (60, 32, 32, 3) and whole.fps == 30.0
    assert whole.warnings and all(isinstance(w, str) and w for w in whole.warnings)
    frames, fps = read_video(tmp_path / "whole.avi", 32, 32)  # the same frames, warnings logged
    np.testing.assert_array_equal(frames, whole.frames)
    with pytest.raises(VideoError, match=r"decode error: .* \(58 frames decoded, 59 expected\)"):
        decode_video(damaged_xvid(tmp_path / "short.avi", seed=2), 32, 32)  # damage that lost 2 frames


def test_bad_size_is_rejected(tmp_path):
    with pytest.raises(ValueError, match="positive"):
        read_video(tmp_path / "x.avi", 0, 8)


def read_blocks(path, width: int, height: int, block_frames: int = BLOCK_FRAMES) -> tuple[VideoReader, list]:
    """All blocks of ``path`` through a VideoReader, and the reader (closed) for its attributes."""
    with VideoReader(path, width, height, block_frames) as reader:
        blocks = list(reader.blocks())
    return reader, blocks


@pytest.mark.parametrize("block_frames", [1, 7, 30, 1000])
def test_blocks_join_to_the_frames_of_decode_video(tmp_path, block_frames):
    path = tmp_path / "clip.avi"
    write_video(path, moving_gradient(61, 48, 64), 25, codec="xvid")
    whole = decode_video(path, 40, 24)
    reader, blocks = read_blocks(path, 40, 24, block_frames)
    sizes = [len(b) for b in blocks]
    assert sizes == [block_frames] * (61 // block_frames) + ([61 % block_frames] if 61 % block_frames else [])
    assert all(b.shape[1:] == (24, 40, 3) and b.dtype == np.uint8 for b in blocks)
    np.testing.assert_array_equal(np.concatenate(blocks), whole.frames)
    assert (reader.n_frames, reader.fps, reader.warnings) == (61, 25.0, [])
    assert whole.frames.shape == (61, 24, 40, 3) and whole.frames.flags.writeable


def test_header_is_read_on_enter_before_any_frame(tmp_path):
    path = tmp_path / "clip.avi"
    write_video(path, moving_gradient(60, 32, 32), 30000 / 1001, codec="xvid")
    with VideoReader(path, 16, 16) as reader:
        assert reader.fps == 30000 / 1001
        assert reader.duration == pytest.approx(60 * 1001 / 30000, abs=0.01)
        assert reader.n_frames is None and reader.process.poll() is None  # nothing read yet
        assert sum(len(b) for b in reader.blocks()) == 60
    assert reader.n_frames == 60 and reader.process.returncode == 0


def test_damaged_and_truncated_files_fail_in_blocks_with_decode_video_reasons(tmp_path):
    write_video(tmp_path / "whole.avi", moving_gradient(60, 48, 64), 30, codec="xvid")
    data = (tmp_path / "whole.avi").read_bytes()
    (tmp_path / "half.avi").write_bytes(data[: len(data) // 2])
    damaged_xvid(tmp_path / "short.avi", seed=2)
    for name in ("half.avi", "short.avi"):
        with pytest.raises(VideoError) as old:
            decode_video(tmp_path / name, 32, 32)
        with VideoReader(tmp_path / name, 32, 32, block_frames=8) as reader:
            assert reader.fps == 30.0  # the header is fine: the loss shows only at the end
            with pytest.raises(VideoError) as new:
                for _ in reader.blocks():
                    pass
        assert new.value.reason == old.value.reason and new.value.reason.startswith("decode error: ")
    kept, _ = read_blocks(damaged_xvid(tmp_path / "kept.avi", seed=1), 32, 32, block_frames=5)
    assert kept.warnings and kept.warnings == decode_video(tmp_path / "kept.avi", 32, 32).warnings


def test_unreadable_files_fail_on_enter(tmp_path):
    (tmp_path / "corrupt.avi").write_bytes(np.random.default_rng(1).integers(0, 256, 4000, dtype=np.uint8).tobytes())
    subprocess.run([ffmpeg_exe(), "-nostdin", "-loglevel", "error", "-f", "lavfi", "-i",
                    "anullsrc=r=8000:cl=mono", "-t", "0.2", str(tmp_path / "sound.wav")], check=True)
    missing = VideoReader(tmp_path / "nope.avi", 8, 8)
    with pytest.raises(VideoError, match="file not found"):
        missing.__enter__()
    assert missing.process is None  # ffmpeg never started
    for name, reason in (("corrupt.avi", "cannot open: "), ("sound.wav", "no video stream")):
        reader = VideoReader(tmp_path / name, 8, 8)
        with pytest.raises(VideoError) as e:
            reader.__enter__()
        assert e.value.reason.startswith(reason)
        assert reader.process.returncode is not None and reader.process.stdout.closed


def test_leaving_early_kills_ffmpeg(tmp_path):
    path = tmp_path / "long.mkv"
    write_video(path, noise(120, 48, 64), 30, codec="ffv1")  # 1.1 MB of frames: more than a pipe holds
    with VideoReader(path, 64, 48, block_frames=1) as reader:
        for block in reader.blocks():
            break
    assert block.shape == (1, 48, 64, 3)
    assert reader.process.returncode == -signal.SIGKILL  # it was still running, blocked on the pipe
    assert reader.process.stdout.closed and reader.process.stderr.closed and not reader._thread.is_alive()
    assert reader.n_frames is None


def test_reader_arguments_and_misuse(tmp_path):
    with pytest.raises(ValueError, match="block_frames must be positive; got 0"):
        VideoReader(tmp_path / "x.avi", 8, 8, block_frames=0)
    with pytest.raises(ValueError, match="got 8x-1"):
        VideoReader(tmp_path / "x.avi", 8, -1)
    with pytest.raises(RuntimeError, match="inside its with block"):
        next(VideoReader(tmp_path / "x.avi", 8, 8).blocks())
