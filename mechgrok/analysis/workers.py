"""Worker processes for ``analyze(workers=N)`` (``mechgrok analyze --workers``).

Workers are spawned processes, each with its own workspace; probes travel to them by reference
(a registered probe by its name, a ``@probe`` function by its module and name), and a probe that
cannot be sent (a lambda, a class defined inside a function) keeps the analysis in this process.
Every checkpoint is computed with :data:`ANALYSIS_THREADS` torch thread(s) in whichever process
computes it, and results are yielded in the order asked for, so the stored analysis is the same
byte for byte for any number of workers.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from typing import Any

from mechgrok.analysis.compute import compute
from mechgrok.analysis.context import Workspace
from mechgrok.analysis.deps import RunDeps
from mechgrok.analysis.result import AnalysisResult
from mechgrok.errors import MechgrokError
from mechgrok.probes import Probe
from mechgrok.store import CheckpointInfo, Run

__all__ = ["ANALYSIS_THREADS", "MIN_CHECKPOINTS_PER_WORKER", "computed", "threads"]

#: torch threads every checkpoint is computed with, in whichever process computes it: a matmul's
#: rounding depends on how many threads split it, and the measures must not depend on --workers
ANALYSIS_THREADS = 1
#: fewer checkpoints to compute than this per worker, and fewer workers are started
MIN_CHECKPOINTS_PER_WORKER = 8
_WORKER: dict[str, Any] = {}


@contextlib.contextmanager
def threads(n: int) -> Iterator[None]:
    """torch computes with ``n`` threads for the block (then as many as before)."""
    import torch

    old = torch.get_num_threads()
    if old != n:
        torch.set_num_threads(n)
    try:
        yield
    finally:
        if torch.get_num_threads() != old:
            torch.set_num_threads(old)


def _worker_init(run: Run, checkpoints: list[CheckpointInfo], probes: list[Probe],
                 ids: dict[str, str]) -> None:
    """A worker process's own workspace: the run as the parent read it (its checkpoint list, not
    a newer manifest), the same probes and identities."""
    import signal

    import torch

    # Ctrl-C is the parent's to handle (it stops the workers): no traceback from each worker
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    torch.set_num_threads(ANALYSIS_THREADS)
    _WORKER.update(ws=Workspace(run, checkpoints[-1]), rd=RunDeps.of(run, checkpoints),
                   ids=ids, probes={p.name: p for p in probes},
                   cks={c.epoch: c for c in checkpoints})


def _worker_compute(epoch: int, names: list[str]) -> tuple[list[dict[str, Any]], dict[str, Any]]:
    w = _WORKER
    return compute(w["ws"], w["cks"][epoch], [w["probes"][n] for n in names], w["rd"], w["ids"])


def _sendable(probes: list[Probe]) -> str | None:
    """None when the probes can be sent to a worker process (serialised the way the process pool
    does; a probe function is sent by reference, checked to lead back to it), else why not."""
    from multiprocessing.reduction import ForkingPickler

    try:
        ForkingPickler.dumps(probes)
    except Exception as e:  # a lambda, a local class, a probe whose module moved
        return f"{type(e).__name__}: {e}"
    return None


def computed(ws: Workspace, work: list[tuple[CheckpointInfo, list[Probe]]], rd: RunDeps,
             ids: dict[str, str], checkpoints: list[CheckpointInfo], workers: int,
             res: AnalysisResult) -> Iterator[tuple[CheckpointInfo, tuple[list, dict]]]:
    """Each checkpoint's (records, arrays), in ``work``'s order: here, or from ``workers``
    processes (results that arrive early wait for their turn, so the table is written in the same
    order either way; what was written stays written if the analysis is interrupted)."""
    # a worker costs a process start and the final key frequencies: worth it from a few
    # checkpoints each
    workers = max(1, min(workers, len(work) // MIN_CHECKPOINTS_PER_WORKER))
    probes = list({p.name: p for _, todo in work for p in todo}.values())
    why = _sendable(probes) if workers > 1 else None
    if why is not None:
        res.workers_note = f"one process: the probes cannot be sent to workers ({why})"
    if workers <= 1 or why is not None:
        res.workers = 1
        for ck, todo in work:
            yield ck, compute(ws, ck, todo, rd, ids)
        return
    import multiprocessing as mp
    from concurrent.futures import ProcessPoolExecutor
    from concurrent.futures.process import BrokenProcessPool

    res.workers = workers
    pool = ProcessPoolExecutor(max_workers=workers, mp_context=mp.get_context("spawn"),
                               initializer=_worker_init,
                               initargs=(ws.run, checkpoints, probes, ids))
    try:
        futures = [(ck, pool.submit(_worker_compute, ck.epoch, [p.name for p in todo]))
                   for ck, todo in work]
        for ck, fut in futures:
            try:
                out = fut.result()
            except BrokenProcessPool:
                raise MechgrokError(
                    f"an analysis worker process died at epoch {ck.epoch} (killed, out of "
                    f"memory, or it could not start: a script calling analyze(workers=N) must do "
                    f"so under `if __name__ == \"__main__\":`); what was computed before is "
                    f"kept: run the same command again, or with fewer workers") from None
            yield ck, out
    finally:
        procs = list((getattr(pool, "_processes", None) or {}).values())
        pool.shutdown(wait=False, cancel_futures=True)
        for proc in procs:  # an interrupted analysis leaves no worker behind
            if proc.is_alive():
                proc.terminate()
            proc.join(timeout=5)
