"""Worker pools: results in job order, a dead worker is an error (never a hang), usable cores."""

from __future__ import annotations

import multiprocessing
import os
import signal
import threading
import time
from multiprocessing import resource_tracker

import pytest

from conftest import processes_with
from twostream.runtime.config import resolve_workers, usable_cores
from twostream.runtime.pools import WorkerDied, ordered_map

FORK = multiprocessing.get_context("fork")  # the test module is importable in a forked child


def slow_square(job: int) -> int:
    """Later jobs finish first: order must come from the pool, not from the clock."""
    time.sleep(0.05 * (5 - job % 5))
    return job * job


def dies_on_three(job: int | tuple) -> int | tuple:
    """Job 3 (or the job of video 3) kills its worker the way the OOM killer would: no
    exception, no result."""
    if (job[0] if isinstance(job, tuple) else job) == 3:
        os.kill(os.getpid(), signal.SIGKILL)
    return job


@pytest.fixture
def alarm():
    """Fail instead of hanging forever if the pool waits on a dead worker."""
    def timeout(*_):
        raise TimeoutError("the pool hung")

    previous = signal.signal(signal.SIGALRM, timeout)
    signal.alarm(60)
    yield
    signal.alarm(0)
    signal.signal(signal.SIGALRM, previous)


def test_results_come_in_job_order(alarm):
    assert list(ordered_map(slow_square, range(12), 3, FORK)) == [j * j for j in range(12)]
    assert list(ordered_map(slow_square, [], 2, FORK)) == []


def test_a_dead_worker_is_an_error_naming_the_jobs_in_flight(alarm):
    results = ordered_map(dies_on_three, range(8), 2, FORK, name=lambda job: f"video {job}")
    got = []
    with pytest.raises(WorkerDied, match=r"worker process died .* in flight: .*video 3"):
        for result in results:
            got.append(result)
    # results arrive in order up to the break; a job running beside the dead one may be lost with it
    assert got == list(range(len(got))) and len(got) <= 3


def part_dies_on_three(job):
    return dies_on_three(job.vid)


def test_frames_stage_reports_a_dead_worker(alarm, tmp_path, monkeypatch):
    """The frames stage's own pool: a decode worker killed mid-run stops the stage with a clear error."""
    from twostream.ingest import frames

    monkeypatch.setattr(frames, "pool_context", lambda preload: FORK)
    monkeypatch.setattr(frames, "store_video_part", part_dies_on_three)
    jobs = [frames.PartJob(v, f"v{v}.avi", str(tmp_path / f"v{v}.h5"), "", 8, 8, "jpeg", 95, 6.0) for v in range(6)]
    with pytest.raises(WorkerDied, match=r"in flight: video 3 \(v3.avi\)"):
        with frames._stored(jobs, 2) as results:
            list(results)


def test_worker_counts_follow_the_cpu_affinity(monkeypatch):
    monkeypatch.setattr(os, "sched_getaffinity", lambda pid: {0}, raising=False)
    assert usable_cores() == 1 and resolve_workers(0) == 1 and resolve_workers(3) == 3
    monkeypatch.setattr(os, "sched_getaffinity", lambda pid: {0, 2, 5}, raising=False)
    assert resolve_workers(0) == 3
    with pytest.raises(ValueError, match="workers must be >= 0"):
        resolve_workers(-1)


def sleepy(job: int) -> int:
    time.sleep(30)
    return job


def _owner_killed_mid_run() -> None:
    """Start a pool on the fork server (as the stages do) and SIGKILL this process while its
    workers are busy: no clean-up code of ours or of multiprocessing runs."""
    from twostream.runtime.pools import pool_context

    results = ordered_map(sleepy, range(4), 2, pool_context())
    threading.Timer(1.0, lambda: os.kill(os.getpid(), signal.SIGKILL)).start()
    list(results)


def test_a_killed_owner_leaves_no_worker_and_no_fork_server(monkeypatch):
    """The workers of a stage killed hard end with it, and then the fork server and the resource
    tracker end too (before the fix, all four stayed for good)."""
    probe = f"{os.getpid()}-{time.time_ns()}"
    resource_tracker.ensure_running()  # this process's own, which lives as long as it does: not probed
    monkeypatch.setenv("TWOSTREAM_POOL_PROBE", probe)  # inherited by the owner and everything it starts
    owner = multiprocessing.get_context("spawn").Process(target=_owner_killed_mid_run)
    owner.start()
    owner.join(60)
    assert owner.exitcode == -signal.SIGKILL
    deadline = time.monotonic() + 15
    while (left := processes_with("TWOSTREAM_POOL_PROBE", probe)) and time.monotonic() < deadline:
        time.sleep(0.2)
    for pid in left:
        os.kill(pid, signal.SIGKILL)
    assert not left, f"still alive after their owner was killed: {left}"
