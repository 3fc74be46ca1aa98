"""Process pools for the per-video stages (frames, flow): one policy for both.

``ordered_map`` runs a job function over jobs in worker processes and yields the results
in job order, so a stage writes the same bytes whatever order the workers finish in. At
most ``IN_FLIGHT`` jobs per process are submitted ahead of the one being written, so
finished results wait in memory only for a short window. A worker that dies (killed by
the kernel's OOM killer, a crash inside a native library) makes ``multiprocessing.Pool``
wait forever; here it raises ``WorkerDied`` naming the jobs that were running.

Workers come from ``pool_context``: a fork server where the platform has one, never a
plain fork (a child forked after OpenCV ran a threaded call can hang in its first OpenCV
call). Every worker watches the process that started the pool (``_watch_owner``) and exits
when it is gone: a stage killed with SIGKILL can run no clean-up, and its workers, waiting on
a queue whose write end they hold themselves, would otherwise wait forever, and with them
the fork server, which lives as long as any child it forked.
"""

from __future__ import annotations

import collections
import multiprocessing
import os
import select
import threading
import time
from concurrent.futures import ProcessPoolExecutor
from concurrent.futures.process import BrokenProcessPool
from typing import Any, Callable, Iterable, Iterator, Sequence, TypeVar

J = TypeVar("J")
R = TypeVar("R")
IN_FLIGHT = 2  # jobs per worker submitted ahead of the result being consumed
OWNER_POLL_S = 1.0  # where pidfd_open is missing: how often a worker checks that its owner lives


class WorkerDied(RuntimeError):
    """A worker process ended without returning its job's result."""


def pool_context(preload: Sequence[str] = ()) -> multiprocessing.context.BaseContext:
    """Where workers come from: the fork server (with ``preload`` modules imported once in it,
    so a pool starts in 0.05 s instead of 0.6 s), else spawn. Not "fork": a child forked
    after OpenCV ran a threaded call can hang for good (OpenCV 5 on Linux: 1 pool in 7
    after a parallel GaussianBlur)."""
    if "forkserver" not in multiprocessing.get_all_start_methods():
        return multiprocessing.get_context("spawn")
    ctx = multiprocessing.get_context("forkserver")
    ctx.set_forkserver_preload(["__main__", *preload])
    return ctx


def _owner_gone(owner: int) -> bool:
    try:
        os.kill(owner, 0)
    except ProcessLookupError:
        return True
    except PermissionError:  # alive, owned by someone else (cannot happen for our own parent)
        return False
    return False


def _watch_owner(owner: int) -> None:
    """Block until process ``owner`` has ended, then end this process at once (``os._exit``)."""
    try:
        fd = os.pidfd_open(owner)  # Linux >= 5.3: readable when the process ends
    except (AttributeError, OSError):
        fd = None
    if fd is not None:
        select.select([fd], [], [])
    else:
        while not _owner_gone(owner):
            time.sleep(OWNER_POLL_S)
    os._exit(1)


def _start_worker(owner: int, initializer: Callable[..., Any] | None, initargs: tuple) -> None:
    """Every worker's initializer: the watch on the pool's owner, then the stage's own."""
    threading.Thread(target=_watch_owner, args=(owner,), name="owner-watch", daemon=True).start()
    if initializer is not None:
        initializer(*initargs)


def ordered_map(fn: Callable[[J], R], jobs: Iterable[J], processes: int,
                context: multiprocessing.context.BaseContext | None = None,
                initializer: Callable[..., Any] | None = None, initargs: tuple = (),
                name: Callable[[J], str] = repr) -> Iterator[R]:
    """``fn(job)`` for every job, computed by ``processes`` workers, yielded in job order.

    Args:
        fn, jobs: a picklable top-level function and its (picklable) jobs.
        processes: worker processes (>= 1).
        context: multiprocessing context (default ``pool_context()``).
        initializer, initargs: run once in every worker before its first job (after the watch that
            ends the worker when this process ends).
        name: how a job is named in the error (default ``repr``).

    Raises:
        WorkerDied: if a worker process died; the message names the jobs in flight then.
    """
    if processes < 1:
        raise ValueError(f"processes must be >= 1; got {processes}")
    pool = ProcessPoolExecutor(processes, mp_context=context or pool_context(), initializer=_start_worker,
                               initargs=(os.getpid(), initializer, initargs))
    todo, pending = iter(jobs), collections.deque()
    try:
        for job in todo:
            pending.append((job, pool.submit(fn, job)))
            if len(pending) >= IN_FLIGHT * processes:
                break
        while pending:
            result = pending[0][1].result()
            pending.popleft()
            for nxt in todo:  # one more job for the one just done
                pending.append((nxt, pool.submit(fn, nxt)))
                break
            yield result
    except BrokenProcessPool:  # from a result or a submit: the pool lost a worker
        running = ", ".join(name(job) for job, _ in pending)
        raise WorkerDied(f"a worker process died (killed by the system, e.g. out of memory, or crashed in a "
                         f"native library) while these jobs were in flight: {running}") from None
    finally:
        pool.shutdown(wait=True, cancel_futures=True)
