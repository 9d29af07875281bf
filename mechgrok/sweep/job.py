"""One job of a sweep: train (or resume) one run, or K seeds batched as one model, then analyse
each, and report a result per run. A job is plain data and :func:`run_job` a plain function, so
both backends (local worker processes, Ray tasks) ship them as they are."""

from __future__ import annotations

import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from mechgrok.config import RunConfig
from mechgrok.errors import MechgrokError
from mechgrok.store.sweep import run_is_trained, sweep_run

__all__ = ["failed_results", "result", "run_is_done", "run_job"]


def _failed(path: Path, e: BaseException | str) -> dict[str, Any]:
    return {"run_id": path.name, "ok": False, "state": "failed", "error": str(e)}


def failed_results(job: dict[str, Any], why: str) -> list[dict[str, Any]]:
    """A failed result for every run of ``job`` (its worker died, its Ray task gave up)."""
    return [_failed(Path(r["path"]), why) for r in job["runs"]]


def result(path: Path, trained: bool, seconds: float) -> dict[str, Any]:
    """A finished run's result: its status, final metrics and grokking epochs."""
    from mechgrok.probes.phases import grokking_epochs
    from mechgrok.store import Run

    run = Run(path)
    metrics = run.metrics()
    fin = metrics[-1] if metrics else {}
    return {"run_id": path.name, "ok": True, "state": "done", "status": run.status,
            "trained": trained, "seconds": round(seconds, 2),
            "final": {k: fin.get(k) for k in ("epoch", "train_acc", "test_acc", "train_loss",
                                             "test_loss")},
            "grok": grokking_epochs(metrics)}


def run_is_done(path: Path, cfg: RunConfig, analyse: bool, probes: Sequence[str] | None) -> bool:
    """Whether a run directory already holds this run, trained to the end and analysed."""
    try:
        run = sweep_run(path, cfg)
    except MechgrokError:
        return False  # the worker reports what is wrong with it
    if run is None or not run_is_trained(run):
        return False
    if not analyse:
        return True
    # analysed: nothing missing, stale (the run trained further or replaced, a probe edited) or
    # failed, by the analysis's own bookkeeping (one definition, mechgrok.analysis.pending)
    from mechgrok.analysis import load_summary, pending

    try:
        final = run.checkpoints()[-1]
        return (load_summary(run).get("final_checkpoint")
                == {"epoch": final.epoch, "sha256": final.sha256}
                and pending(run, list(probes) if probes is not None else None) == 0)
    except MechgrokError:
        return False


def _train_one(cfg: RunConfig, path: Path) -> None:
    from mechgrok.training import resume, train

    if sweep_run(path, cfg) is None:
        train(cfg, path, progress=False)
    else:
        resume(path, progress=False)


def _analyse(path: Path, probes: Sequence[str] | None) -> None:
    from mechgrok.analysis import analyze

    res = analyze(path, list(probes) if probes is not None else None, progress=False)
    if res.errors:
        first = res.errors[0]
        raise MechgrokError(f"probe {first['probe']!r} failed on {len(res.errors)} checkpoint(s) "
                            f"(first: {first['error']})")


def _to_train(cfgs: list[RunConfig], paths: list[Path],
              out: dict[str, dict[str, Any]]) -> list[int]:
    """The runs that need training (new or unfinished); an existing run's config is checked,
    and a run that cannot be taken up gets its failed result in ``out``."""
    todo: list[int] = []
    for i, (cfg, path) in enumerate(zip(cfgs, paths)):
        try:
            trained = not run_is_trained(sweep_run(path, cfg))
        except MechgrokError as e:
            out[path.name] = _failed(path, e)
            continue
        if trained:
            todo.append(i)
        else:
            out[path.name] = {"trained": False}
    return todo


def _train(cfgs: list[RunConfig], paths: list[Path], todo: list[int], vmap: bool,
           out: dict[str, dict[str, Any]]) -> None:
    """Train the runs ``todo`` names: K seeds as one batched model with ``vmap``, else one by
    one; each run's outcome goes into ``out``."""
    if vmap and len(todo) > 1:
        from mechgrok.training.vmap import train_seeds

        try:
            train_seeds(cfgs[todo[0]], [cfgs[i].train.seed for i in todo],
                        [paths[i] for i in todo], progress=False)
            for i in todo:
                out[paths[i].name] = {"trained": True}
        except MechgrokError as e:
            for i in todo:
                out[paths[i].name] = _failed(paths[i], e)
        return
    for i in todo:
        try:
            _train_one(cfgs[i], paths[i])
            out[paths[i].name] = {"trained": True}
        except MechgrokError as e:
            out[paths[i].name] = _failed(paths[i], e)


def run_job(job: dict[str, Any]) -> list[dict[str, Any]]:
    """Train and analyse the runs of one job; a plain function of plain data (for pickling).

    ``job``: ``{"runs": [{"config": dict, "path": str}], "probes": [..] | None,
    "analyse": bool, "vmap": bool, "threads": int | None}``. Returns one result per run:
    ``{"run_id", "ok", "state", "error"?, "trained", "seconds", "final", "grok"}``. A user-level
    problem (:class:`MechgrokError`) is returned as a failed result, not raised: retrying would
    not help. Anything else (a crash) propagates, and the backend retries the job.
    """
    import torch

    if job.get("threads"):
        torch.set_num_threads(int(job["threads"]))
    cfgs = [RunConfig.from_dict(r["config"]) for r in job["runs"]]
    paths = [Path(r["path"]) for r in job["runs"]]
    probes = job.get("probes")
    analyse = job.get("analyse", True)
    t0 = time.perf_counter()
    out: dict[str, dict[str, Any]] = {}
    todo = _to_train(cfgs, paths, out)
    if todo:
        _train(cfgs, paths, todo, bool(job.get("vmap")), out)
    results = []
    for path in paths:
        r = out[path.name]
        if r.get("ok") is False:
            results.append(r)
            continue
        try:
            if analyse:
                _analyse(path, probes)
            results.append(result(path, r["trained"], time.perf_counter() - t0))
        except MechgrokError as e:
            results.append(_failed(path, e))
    return results
