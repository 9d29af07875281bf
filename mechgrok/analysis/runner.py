"""``analyze``: run probes over a run's checkpoints into its measures table, computing only what
is missing, stale or failed (:func:`pending` counts it), and write the summary.

**The run directory changing under the analysis.** The analysis holds ``analysis/analyze.lock``
(:func:`analysis_lock` takes it from outside, e.g. before ``train --overwrite``). Before each write
it checks that the run directory and its ``analysis/`` folder are the ones it started with and that
the manifest still lists the checkpoint it is about to store with the same SHA-256
(:class:`Sentinel`); if not (the run was replaced), it stops with a
:class:`~mechgrok.errors.RunDirError` and writes nothing more.
"""

from __future__ import annotations

import contextlib
import json
import os
import sys
import time
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path
from typing import Any

from mechgrok.analysis.compute import ask_applies, resolve_probes
from mechgrok.analysis.context import Workspace
from mechgrok.analysis.deps import RunDeps, reusable, uses_final
from mechgrok.analysis.identity import record_identity
from mechgrok.analysis.result import AnalysisResult
from mechgrok.analysis.summary import summarise
from mechgrok.analysis.workers import ANALYSIS_THREADS, computed, threads
from mechgrok.errors import ConfigError, RunDirError
from mechgrok.probes import Probe
from mechgrok.store import ANALYSIS_DIR, CheckpointInfo, Run, manifest_path
from mechgrok.store.analysis import (
    analysis_dir,
    append_records,
    check_analysis_folders,
    hold_analysis_lock,
    read_records,
    rewrite_records,
    write_arrays,
    write_summary,
)

__all__ = ["Sentinel", "analysis_lock", "analyze", "pending"]

Records = dict[tuple[int, str], dict[str, Any]]
Work = list[tuple[CheckpointInfo, list[Probe]]]


@contextlib.contextmanager
def analysis_lock(run_path: str | Path) -> Iterator[bool]:
    """Hold the analysis lock of the run at ``run_path`` for the ``with`` block, without
    waiting: a :class:`RunDirError` when an analysis holds it. Creates no folder: when the run
    has no ``analysis/`` there is nothing to lock and it yields False (an analysis that starts
    meanwhile notices the run being replaced and stops); else True."""
    with hold_analysis_lock(run_path, create=False) as fd:
        yield fd is not None


class Sentinel:
    """Notices the run directory being replaced (``train --overwrite``, a copy over it) while
    it is analysed: the run folder, the ``analysis/`` folder and the manifest's checkpoint
    hashes must stay what they were."""

    def __init__(self, run: Run, folder: Path, checkpoints: Sequence[CheckpointInfo]):
        self.run = run
        self.folder = folder
        self.run_id = self._ident(run.path)
        self.folder_id = self._ident(folder)
        self.want = {c.epoch: c.sha256 for c in checkpoints}
        self.split = run.manifest.get("split_sha256")
        self._man_stat: tuple | None = None
        self._man: dict[int, str] | None = None
        self._man_split: Any = None

    @staticmethod
    def _ident(p: Path) -> tuple[int, int] | None:
        try:
            st = os.stat(p)
        except OSError:
            return None
        return (st.st_dev, st.st_ino)

    def _manifest(self) -> tuple[dict[int, str] | None, Any]:
        f = manifest_path(self.run.path)
        try:
            st = os.stat(f)
            key = (st.st_dev, st.st_ino, st.st_mtime_ns, st.st_size)
            if key != self._man_stat:
                man = json.loads(f.read_text())
                cks = {c["epoch"]: c["sha256"] for c in man["checkpoints"]}
                self._man_stat, self._man, self._man_split = key, cks, man.get("split_sha256")
        except (OSError, ValueError, KeyError, TypeError):
            return None, None
        return self._man, self._man_split

    def check(self) -> None:
        """A RunDirError if the run is no longer the one the analysis started on."""
        why = None
        if self._ident(self.run.path) != self.run_id:
            why = "the run directory was replaced"
        elif self._ident(self.folder) != self.folder_id:
            why = f"its {ANALYSIS_DIR}/ folder was removed or replaced"
        else:
            cks, split = self._manifest()
            if cks is None:
                why = "its manifest can no longer be read"
            elif split != self.split:
                why = "its manifest now names another split"
            else:
                changed = [e for e, sha in self.want.items() if cks.get(e) != sha]
                if changed:
                    why = (f"its manifest no longer lists the checkpoint of epoch {changed[0]} "
                           f"that was analysed")
        if why:
            raise RunDirError(f"run {self.run.path} changed while it was being analysed ({why}: "
                              f"`train --overwrite`?); nothing more was written: analyse it again")


# --------------------------------------------------------------------------------------------


def analyze(run: Run | str | Path, probes: Sequence[str | Probe] | None = None, *,
            force: bool = False, progress: bool | None = None,
            on_checkpoint: Callable[[CheckpointInfo], None] | None = None,
            verdict_rules: Any = None, workers: int = 1) -> AnalysisResult:
    """Run probes over every checkpoint of a run; store what was missing or stale; update the
    summary.

    ``verdict_rules`` (a :class:`~mechgrok.probes.clockpizza.VerdictRules`) sets the clock/pizza
    thresholds the summary applies to the stored raw numbers (default: its documented defaults).

    ``workers`` > 1 computes checkpoints in that many worker processes (``mechgrok analyze
    --workers``; the CLI's default is the cores available). The measures table, the arrays and
    the summary are byte-for-byte the same for any number of workers: every checkpoint is
    computed with :data:`ANALYSIS_THREADS` torch thread(s) whichever process computes it, and the
    records are written in the same order. Probes that cannot be sent to another process (a
    lambda, a class defined inside a function) run in this process instead, which
    :attr:`AnalysisResult.workers` says. Workers are spawned processes: a script that calls
    ``analyze(..., workers=N)`` must do so under ``if __name__ == "__main__":``.
    """
    t0 = time.perf_counter()
    if isinstance(workers, bool) or not isinstance(workers, int) or not 1 <= workers <= 1024:
        raise ConfigError(f"workers must be a number of processes from 1 to 1024, got "
                          f"{workers!r}")
    run = run if isinstance(run, Run) else Run(run)
    selected = resolve_probes(probes)
    checkpoints = run.checkpoints()
    if not checkpoints:
        raise RunDirError(f"run {run.path} has no checkpoints to analyse (train it first, or "
                          f"wait for its first checkpoint)")
    check_analysis_folders(run.path)  # every write stays inside the run directory
    with hold_analysis_lock(run.path):
        sentinel = Sentinel(run, analysis_dir(run.path), checkpoints)
        with threads(ANALYSIS_THREADS):
            res = _analyze(run, checkpoints, selected, force, progress, on_checkpoint,
                           verdict_rules, sentinel, workers)
            res.seconds = time.perf_counter() - t0
    return res


def _plan(checkpoints: list[CheckpointInfo], selected: list[Probe], records: Records,
          force: bool, rd: RunDeps, ids: dict[str, str]) -> tuple[Work, int, int]:
    """(checkpoint, probes to compute) in the order to compute them (the final checkpoint first:
    the key frequencies every other checkpoint reuses come from it), reused and stale counts."""
    order = [checkpoints[-1], *checkpoints[:-1]]
    plan = []
    reused = stale = 0
    for ck in order:
        todo = []
        for p in selected:
            ok = None if force else reusable(records.get((ck.epoch, p.name)), rd, ids[p.name],
                                             uses_final(p))
            if ok:
                reused += 1
                continue
            stale += ok is False
            todo.append(p)
        plan.append((ck, todo))
    return plan, reused, stale


def pending(run: Run | str | Path, probes: Sequence[str | Probe] | None = None) -> int:
    """How many (checkpoint, probe) records :func:`analyze` would compute now: missing, stale or
    failed ones. Reads the run and its records only (0: the analysis is up to date)."""
    run = run if isinstance(run, Run) else Run(run)
    selected = resolve_probes(probes)
    checkpoints = run.checkpoints()
    if not checkpoints:
        return 0
    plan, _, _ = _plan(checkpoints, selected, read_records(run.path), False,
                       RunDeps.of(run, checkpoints), {p.name: record_identity(p) for p in selected})
    return sum(len(todo) for _, todo in plan)


def _applies(p: Probe, ws: Workspace) -> tuple[str | None, str | None]:
    """(why ``p`` does not apply to the run, or None; what went wrong asking it, or None),
    including a probe whose ``applies()`` changed what the probes share."""
    reason, error = ask_applies(p, ws.run_ctx)
    problems = ws.check()
    if problems:
        error = "applies(): " + "; ".join(problems)
    return reason, error


def _applicable(selected: list[Probe], ws: Workspace, res: AnalysisResult) -> list[Probe]:
    """The probes that apply to the run; the others go to ``res`` (not applicable, or errors)."""
    applicable: list[Probe] = []
    for p in selected:
        reason, error = _applies(p, ws)
        if error is not None:
            res.errors.append({"probe": p.name, "epoch": None, "error": error})
        elif reason is None:
            applicable.append(p)
        else:
            res.not_applicable[p.name] = reason
    return applicable


def _work(plan: Work, applicable: list[Probe], res: AnalysisResult, rd: RunDeps,
          ids: dict[str, str]) -> tuple[dict[int, list[dict[str, Any]]], Work]:
    """The plan split into the ``n/a`` records to store per epoch and the probes to compute."""
    na_records: dict[int, list[dict[str, Any]]] = {}
    work: Work = []
    for ck, todo in plan:
        na_records[ck.epoch] = [
            {"epoch": ck.epoch, "step": ck.step, "probe": p.name, "probe_id": ids[p.name],
             "deps": rd.for_record(ck.epoch, uses_final(p)), "status": "n/a",
             "reason": res.not_applicable[p.name]} for p in todo if p.name in res.not_applicable]
        todo = [p for p in todo if p in applicable]
        if todo:
            work.append((ck, todo))
    return na_records, work


class _Store:
    """Stores each checkpoint's records and arrays as they come, once the sentinel says the run
    is still the one analysed; counts them, reports errors and progress."""

    def __init__(self, run: Run, sentinel: Sentinel, records: Records, res: AnalysisResult,
                 na_records: dict[int, list[dict[str, Any]]], checkpoints: list[CheckpointInfo],
                 on_checkpoint: Callable[[CheckpointInfo], None] | None, bar: Any):
        self.run, self.sentinel, self.records, self.res = run, sentinel, records, res
        self.na_records = na_records
        self.by_epoch = {ck.epoch: ck for ck in checkpoints}
        self.on_checkpoint = on_checkpoint
        self.bar = bar
        self.written: set[int] = set()

    def __call__(self, epoch: int, recs: list[dict[str, Any]], arrays: dict[str, Any]) -> None:
        new = self.na_records.get(epoch, []) + recs
        self.sentinel.check()
        write_arrays(self.run.path, epoch, arrays, {r["probe"] for r in new})
        append_records(self.run.path, new)
        for r in new:
            self.records[(r["epoch"], r["probe"])] = r
            if r["status"] == "error":
                self.res.errors.append({"probe": r["probe"], "epoch": epoch, "error": r["error"]})
        self.res.computed += len(new)
        self.written.add(epoch)
        if self.on_checkpoint is not None:
            self.on_checkpoint(self.by_epoch[epoch])
        if self.bar is not None:
            self.bar.update(1)


def _progress_bar(run: Run, total: int, progress: bool | None) -> Any:
    if not (sys.stderr.isatty() if progress is None else progress):
        return None
    from tqdm import tqdm

    return tqdm(total=total, unit="ckpt", desc=f"analyse {run.id}"[:40], file=sys.stderr)


def _analyze(run: Run, checkpoints: list[CheckpointInfo], selected: list[Probe], force: bool,
             progress: bool | None, on_checkpoint: Callable[[CheckpointInfo], None] | None,
             verdict_rules: Any, sentinel: Sentinel, workers: int) -> AnalysisResult:
    sentinel.check()
    records = read_records(run.path)
    rewrite_records(run.path, records.values())  # compacted: torn and malformed lines go
    rd = RunDeps.of(run, checkpoints)
    ids = {p.name: record_identity(p) for p in selected}
    ws = Workspace(run, checkpoints[-1])
    res = AnalysisResult(run, [p.name for p in selected], len(checkpoints))
    applicable = _applicable(selected, ws, res)
    plan, res.reused, res.stale = _plan(checkpoints, selected, records, force, rd, ids)
    na_records, work = _work(plan, applicable, res, rd, ids)
    bar = _progress_bar(run, len(plan), progress)
    store = _Store(run, sentinel, records, res, na_records, checkpoints, on_checkpoint, bar)
    try:
        for ck, (recs, arrays) in computed(ws, work, rd, ids, checkpoints, workers, res):
            store(ck.epoch, recs, arrays)
        for ck, _ in plan:  # checkpoints with nothing to compute but n/a records, or nothing at all
            if ck.epoch not in store.written:
                store(ck.epoch, [], {})
    finally:
        if bar is not None:
            bar.close()
    current = {k: r for k, r in records.items()
               if rd.holds(r) and (k[1] not in ids or r.get("probe_id") == ids[k[1]])}
    res.summary = summarise(run, ws.run_ctx, current, res, verdict_rules, checkpoints[-1], rd,
                            selected)
    sentinel.check()
    write_summary(run.path, res.summary)
    return res
