"""Where the per-video stages (``frames``, ``flow``) run their jobs: ``local`` or ``ray``.

``local`` is this machine's process pool (``pools.ordered_map``). ``ray`` sends the jobs to
a Ray cluster, ``executor.videos_per_task`` videos per task, each task reserving
``executor.cpus_per_task`` CPUs and ``executor.gpus_per_task`` GPUs, and yields the results
in job order as ``ordered_map`` does: the stage writes its meta and report from them on
the driver, while each task writes its videos' part files itself, so the outputs are the
same bytes as a local run's (a part is a pure function of its job: ``twostream.ingest.parts``).

What a cluster must share (docs/cluster.md): every path a job names is
made absolute on the driver and must mean the same file on every node (videos, the stores),
and every node must run the same twostream code. A task checks both before its first video
and fails with ``ClusterError`` naming the path or the module, instead of recording the
videos as failed. A task whose worker dies (killed, out of memory, node lost) is re-run by
Ray up to ``executor.max_retries`` times; a half-written part never appears under its own
name (``parts.writing``), and the re-run writes the same bytes.

Ray is imported only here, and only when a stage runs with ``executor.kind: ray``.
"""

from __future__ import annotations

import contextlib
import importlib
import logging
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any, Callable, Iterator, Mapping, Sequence, TypeVar

from twostream.runtime.config import ExecutorConfig
from twostream.runtime.pools import IN_FLIGHT, WorkerDied

log = logging.getLogger(__name__)

J = TypeVar("J")
R = TypeVar("R")
KINDS = ("local", "ray")


class ClusterError(RuntimeError):
    """A node of the cluster cannot run the jobs as the driver would: a path it cannot read,
    or other twostream code."""


def check_node(reads: Sequence[str], expect: Mapping[str, int]) -> None:
    """On a worker: raise ``ClusterError`` unless every path of ``reads`` is readable here and
    every module of ``expect`` (name -> its ``VERSION`` on the driver) has that version here: a
    node computing another version would write parts of other bytes under the driver's stamps."""
    host = socket.gethostname()
    for path in reads:
        if not os.access(path, os.R_OK):
            raise ClusterError(
                f"node {host} cannot read {path}, which the driver can: every node must see the videos and the "
                f"stores at the same absolute path (a shared filesystem; docs/cluster.md)")
    for name, version in expect.items():
        here = getattr(importlib.import_module(name), "VERSION", None)
        if here != version:
            raise ClusterError(
                f"node {host} computes version {here} of {name}, the driver version {version}: install the "
                f"same twostream commit on every node")


def run_task(fn: Callable[[list[J]], list[R]], batch: list[J], reads: Sequence[str],
             expect: Mapping[str, int]) -> list[R]:
    """What one Ray task runs: ``check_node``, then ``fn(batch)``."""
    check_node(reads, expect)
    return fn(batch)


def connect(cfg: ExecutorConfig) -> bool:
    """Join the cluster of ``cfg.address``, else of ``$RAY_ADDRESS``, else the one ``ray start`` last
    started on this machine, else start a Ray instance here (``ray.init``'s own order).

    Returns:
        Whether this call connected (and so the caller disconnects), False if already connected.

    Raises:
        ClusterError: if there is no cluster at the address.
    """
    import ray

    if ray.is_initialized():
        return False
    address = cfg.address or os.environ.get("RAY_ADDRESS") or None
    try:
        ray.init(address=address, logging_level=logging.WARNING, log_to_driver=True)
    except ConnectionError as e:
        raise ClusterError(f"cannot join the Ray cluster at {address} (executor.address or $RAY_ADDRESS): "
                           f"{e}") from None
    resources = ray.cluster_resources()
    log.info("ray: %s, %d node(s), %g CPUs, %g GPUs", address or "the Ray of this machine",
             len([n for n in ray.nodes() if n.get("Alive")]), resources.get("CPU", 0), resources.get("GPU", 0))
    return True


def ray_map(fn: Callable[[list[J]], list[R]], jobs: Sequence[J], cfg: ExecutorConfig,
            reads: Callable[[J], Sequence[str]] = lambda job: (), expect: Mapping[str, int] | None = None,
            name: Callable[[J], str] = repr, label: str = "twostream") -> Iterator[R]:
    """``fn(batch)`` over ``jobs`` in batches of ``cfg.videos_per_task``, as Ray tasks; results in job order.

    Args:
        fn: a picklable top-level callable taking a list of jobs and returning one result per job,
            in order (a ``functools.partial`` of one is fine).
        jobs: picklable jobs whose paths are absolute.
        cfg: the ``executor`` params (``kind`` is not looked at).
        reads: the paths a job reads; those the driver can read are checked on the worker.
        expect: module name -> ``VERSION`` the workers must compute (``check_node``).
        name: how a job is named in errors.
        label: the tasks' name prefix (the stage), as Ray's tools show it.

    Raises:
        ClusterError: from a worker that cannot read a path or runs other code.
        WorkerDied: a task's worker died more than ``cfg.max_retries`` times.
        Any exception ``fn`` raised on a worker, as the local run would raise it.
    """
    import ray
    from ray.exceptions import RayError, RayTaskError

    batches = [list(jobs[i:i + cfg.videos_per_task]) for i in range(0, len(jobs), cfg.videos_per_task)]
    if not batches:
        return
    expect = dict(expect or {})
    opened = connect(cfg)
    task = ray.remote(run_task)
    resources = dict(num_cpus=cfg.cpus_per_task, num_gpus=cfg.gpus_per_task, max_retries=cfg.max_retries,
                     retry_exceptions=False)
    slots = max(1, int(ray.cluster_resources().get("CPU", 1) // cfg.cpus_per_task))
    pending: list[tuple[list[J], Any]] = []
    todo = iter(batches)

    def submit(batch: list[J]) -> None:
        checked = sorted({p for job in batch for p in reads(job) if os.access(p, os.R_OK)})
        ref = task.options(name=f"{label} {name(batch[0])}", **resources).remote(fn, batch, checked, expect)
        pending.append((batch, ref))

    try:
        for batch in todo:
            submit(batch)
            if len(pending) >= IN_FLIGHT * slots:
                break
        while pending:
            batch, ref = pending[0]
            try:
                results = ray.get(ref)
            except RayTaskError as e:  # fn (or check_node) raised: the same exception as a local run
                raise (e.cause if e.cause is not None else e) from None
            except RayError as e:  # the worker, its node or the object is lost, after the retries
                runs = cfg.max_retries + 1
                raise WorkerDied(f"a Ray task's worker died {runs} time{'s' * (runs > 1)} (executor.max_retries = "
                                 f"{cfg.max_retries}) running {', '.join(map(name, batch))}: "
                                 f"{type(e).__name__}: {e}") from None
            pending.pop(0)
            for nxt in todo:
                submit(nxt)
                break
            yield from results
    finally:
        # no ray.cancel of the tasks still pending: a forced cancel racing a task's end aborts the
        # driver in Ray 2.60 ("Tried to complete task that was not pending"); a job that ends takes its
        # tasks with it, and a task that still finishes writes a whole part, which the next run reuses
        if opened:
            ray.shutdown()


@contextlib.contextmanager
def local_cluster(num_cpus: int, cwd: str | os.PathLike | None = None) -> Iterator[str]:
    """A Ray head node on 127.0.0.1 with ``num_cpus`` CPUs and no GPU (``ray start --head``), for
    tests and benchmarks: yields its address once it takes drivers, and stops it (its whole
    process group) on exit. Its workers run in ``cwd`` (default a new empty folder). Ray's token
    authentication and usage report are off for it and for this process while it runs."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    home = Path(tempfile.mkdtemp(prefix="ray-"))
    quiet = {"RAY_AUTH_MODE": "disabled", "RAY_USAGE_STATS_ENABLED": "0"}
    saved = {key: os.environ.get(key) for key in quiet}
    os.environ.update(quiet)
    head = subprocess.Popen(
        [str(Path(sys.executable).with_name("ray")), "start", "--head", "--block", "--node-ip-address", "127.0.0.1",
         "--port", str(port), "--num-cpus", str(num_cpus), "--num-gpus", "0", "--include-dashboard", "false",
         "--disable-usage-stats", "--temp-dir", str(home / "ray")], cwd=cwd or home, start_new_session=True,
        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    address = f"127.0.0.1:{port}"
    try:
        import ray

        for attempt in range(120):  # the head takes a few seconds to start
            try:
                ray.init(address=address, logging_level=logging.ERROR)
                break
            except ConnectionError:
                if attempt == 119 or head.poll() is not None:
                    raise
                time.sleep(0.5)
        ray.shutdown()
        yield address
    finally:
        os.killpg(head.pid, signal.SIGTERM)
        try:
            head.wait(20)
        except subprocess.TimeoutExpired:
            os.killpg(head.pid, signal.SIGKILL)
            head.wait()
        shutil.rmtree(home, ignore_errors=True)
        for key, value in saved.items():
            if value is None:
                os.environ.pop(key, None)
            else:
                os.environ[key] = value
