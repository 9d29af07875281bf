"""The local backend: a sweep's jobs on ``workers`` spawned processes of this machine, one torch
thread each. A worker that dies (killed, out of memory) is replaced and its job resumed, up to
``retries`` times."""

from __future__ import annotations

import contextlib
import os
from collections.abc import Callable
from typing import Any

from mechgrok.sweep.job import failed_results, run_job

__all__ = ["OnJobResult", "run_local"]

#: called in the sweep's process with a job and its results, as each job ends
OnJobResult = Callable[[dict[str, Any], list[dict[str, Any]]], None]


def _worker_init() -> None:
    """Local workers: one torch thread each, and die with the sweep process (Linux)."""
    os.environ["OMP_NUM_THREADS"] = "1"
    os.environ["MKL_NUM_THREADS"] = "1"
    with contextlib.suppress(Exception):
        import ctypes
        import signal

        libc = ctypes.CDLL("libc.so.6", use_errno=True)
        libc.prctl(1, int(signal.SIGTERM))  # PR_SET_PDEATHSIG
        if os.getppid() == 1:  # the parent died before prctl took effect
            os._exit(1)
    import torch

    torch.set_num_threads(1)


def run_local(jobs: list[dict[str, Any]], workers: int, retries: int,
              on_result: OnJobResult) -> None:
    """Run every job on a pool of ``workers`` processes; ``on_result`` as each one ends."""
    import multiprocessing as mp
    from concurrent.futures import FIRST_COMPLETED, ProcessPoolExecutor, wait
    from concurrent.futures.process import BrokenProcessPool

    ctx = mp.get_context("spawn")
    queue = list(range(len(jobs)))
    attempts = [0] * len(jobs)
    pool: ProcessPoolExecutor | None = None
    inflight: dict[Any, int] = {}

    def retry_or_fail(i: int, why: str) -> None:
        if attempts[i] <= retries:
            queue.append(i)
        else:
            on_result(jobs[i], failed_results(jobs[i], why))

    try:
        while queue or inflight:
            if pool is None:
                pool = ProcessPoolExecutor(max_workers=workers, mp_context=ctx,
                                           initializer=_worker_init)
            broken = False
            while queue and len(inflight) < workers:
                i = queue[0]
                try:
                    fut = pool.submit(run_job, jobs[i])
                except BrokenProcessPool:  # a worker died since the last wait
                    broken = True
                    break
                queue.pop(0)
                attempts[i] += 1
                inflight[fut] = i
            done = wait(list(inflight), return_when=FIRST_COMPLETED)[0] if inflight else set()
            for fut in done:
                i = inflight.pop(fut)
                try:
                    results = fut.result()
                except BrokenProcessPool:
                    broken = True
                    retry_or_fail(i, f"its worker process died {attempts[i]} times")
                except Exception as e:  # a crash inside the job: retry, then report
                    retry_or_fail(i, f"{type(e).__name__}: {e}")
                else:
                    on_result(jobs[i], results)
            if broken:
                # every job still in flight went down with the pool: resume them on a new one
                for fut, i in list(inflight.items()):
                    inflight.pop(fut)
                    retry_or_fail(i, f"its worker process died {attempts[i]} times")
                pool.shutdown(wait=True, cancel_futures=True)
                pool = None
    finally:
        if pool is not None:
            pool.shutdown(wait=True, cancel_futures=True)
