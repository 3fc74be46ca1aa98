"""Shared fixtures: the repo root, a throw-away copy of the repository, and the check that no
process the test session started outlives it."""

from __future__ import annotations

import os
import shutil
import signal
import socket
import subprocess
import sys
import time
from multiprocessing import forkserver, resource_tracker
from pathlib import Path

import cv2
import numpy as np
import pytest
import yaml

REPO = Path(__file__).resolve().parents[1]
SESSION_MARK = "TWOSTREAM_TEST_SESSION"  # in the environment of every process the session starts
SURVIVOR_GRACE_S = 20.0  # how long processes (a Ray cluster shutting down) may take to end


def pytest_configure(config: pytest.Config) -> None:
    os.environ[SESSION_MARK] = f"{os.getpid()}-{time.time_ns()}"


def processes_with(name: str, value: str) -> dict[int, str]:
    """pid -> command line of every other process whose environment has ``name=value`` (Linux /proc)."""
    found = {}
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit() or int(entry.name) == os.getpid():
            continue
        try:
            env = (entry / "environ").read_bytes().split(b"\0")
            if f"{name}={value}".encode() in env:
                found[int(entry.name)] = (entry / "cmdline").read_bytes().replace(b"\0", b" ").decode()[:200]
        except OSError:  # ended meanwhile, or not ours to read
            continue
    return found


@pytest.fixture(scope="session", autouse=True)
def no_process_outlives_the_session():
    """Fail the session when a process it started (a pool worker, a fork server, a stage, ffmpeg,
    a Ray node) is still alive at its end; the survivors are killed, so none lingers."""
    yield
    if not Path("/proc/self/environ").exists():
        return
    mark, deadline = os.environ[SESSION_MARK], time.monotonic() + SURVIVOR_GRACE_S
    # this process's own fork server and resource tracker end when it does (a worker they leave
    # behind still carries the mark and is caught)
    own = {forkserver._forkserver._forkserver_pid, resource_tracker._resource_tracker._pid}
    while (left := {p: c for p, c in processes_with(SESSION_MARK, mark).items() if p not in own}) \
            and time.monotonic() < deadline:
        time.sleep(0.5)
    for pid in left:
        try:
            os.kill(pid, signal.SIGKILL)
        except OSError:
            pass
    assert not left, f"{len(left)} processes started by the tests outlived them: " + "; ".join(
        f"{pid}: {cmd}" for pid, cmd in sorted(left.items()))


def venv_env() -> dict[str, str]:
    """Environment whose PATH starts with this interpreter's bin dir, as `make` sets it."""
    env = dict(os.environ)
    env["PATH"] = str(Path(sys.executable).parent) + os.pathsep + env.get("PATH", "")
    env.pop("PYTHONPATH", None)
    env.pop("RAY_ADDRESS", None)  # executor.kind ray in a test starts its own Ray on this machine,
    env.update(RAY_AUTH_MODE="disabled", RAY_USAGE_STATS_ENABLED="0")  # with no token file and no usage report
    return env


def run(cmd: list[str], cwd: Path) -> subprocess.CompletedProcess:
    """Run a command, failing the test with its output if it fails."""
    proc = subprocess.run(cmd, cwd=cwd, env=venv_env(), capture_output=True, text=True)
    if proc.returncode != 0:
        pytest.fail(f"{' '.join(cmd)} exited {proc.returncode}\n{proc.stdout[-4000:]}\n{proc.stderr[-4000:]}")
    return proc


def free_port() -> int:
    """A TCP port on 127.0.0.1 that nothing listens on now."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def copy_repo(dest: Path) -> Path:
    """Copy the files git knows of (tracked or new, not ignored) into a fresh git repo at `dest`."""
    listed = subprocess.run(
        ["git", "ls-files", "-z", "--cached", "--others", "--exclude-standard"],
        cwd=REPO, capture_output=True, check=True,
    ).stdout.decode().split("\0")
    for rel in filter(None, listed):
        src = REPO / rel
        if not src.is_file():
            continue  # deleted in the working tree
        (dest / rel).parent.mkdir(parents=True, exist_ok=True)
        shutil.copy2(src, dest / rel)
    for rel in ("dvc.lock",):  # a stale lock would only make `dvc repro` re-run everything
        (dest / rel).unlink(missing_ok=True)
    run(["git", "init", "-q"], dest)
    run(["git", "-c", "user.name=t", "-c", "user.email=t@t", "add", "-A"], dest)
    run(["git", "-c", "user.name=t", "-c", "user.email=t@t", "commit", "-qm", "copy"], dest)
    return dest


def set_params(repo: Path, source: Path | None = None, **sections: dict | str) -> None:
    """Write ``repo/params.yaml``: ``source`` (default: that file itself) with the keys of
    ``sections`` overridden (a dict updates a section, anything else replaces a top-level value)."""
    path = repo / "params.yaml"
    params = yaml.safe_load((source or path).read_text())
    for name, values in sections.items():
        if isinstance(values, dict):
            params[name].update(values)
        else:
            params[name] = values
    path.write_text(yaml.safe_dump(params, sort_keys=False))


@pytest.fixture
def repo_copy(tmp_path: Path) -> Path:
    """A git copy of this repository with DVC initialised, in tmp_path."""
    return copy_repo(tmp_path / "repo")


def texture(h: int, w: int, seed: int, sigma: float = 2.0) -> np.ndarray:
    """``(h, w) uint8`` smooth random texture (Gaussian-blurred noise stretched to 0..255)."""
    noise = np.random.default_rng(seed).uniform(0, 255, (h, w)).astype(np.float32)
    smooth = cv2.GaussianBlur(noise, (0, 0), sigma)
    return cv2.normalize(smooth, None, 0, 255, cv2.NORM_MINMAX).astype(np.uint8)


def shifted(image: np.ndarray, dx: float, dy: float) -> np.ndarray:
    """``image`` moved by ``(dx, dy)`` pixels (bilinear, reflected border)."""
    m = np.float32([[1, 0, dx], [0, 1, dy]])
    return cv2.warpAffine(image, m, image.shape[::-1], flags=cv2.INTER_LINEAR, borderMode=cv2.BORDER_REFLECT)


def damaged_xvid(path: Path, seed: int = 0) -> Path:
    """Write a 2 s XviD file whose bytes are damaged the way old AVIs are: 20 bytes inverted in the
    middle third. ffmpeg logs "ac-tex damaged"-style errors for some macroblocks, conceals them,
    and still decodes all 60 frames. Returns ``path``."""
    y, x = np.mgrid[0:48, 0:64]
    frames = np.stack([np.stack([(2 * x + 3 * i) % 256, (2 * y + i) % 256, (x * y // 8 + 5 * i) % 256], -1)
                       for i in range(60)]).astype(np.uint8)
    from twostream.ingest.videowriter import write_video

    write_video(path, frames, 30, codec="xvid")
    data = bytearray(path.read_bytes())
    for at in np.random.default_rng(seed).integers(len(data) // 3, 2 * len(data) // 3, 20):
        data[at] ^= 0xFF
    path.write_bytes(bytes(data))
    return path
