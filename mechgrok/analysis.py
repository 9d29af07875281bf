"""Run probes over a run's checkpoints into the measures table (``mechgrok analyze``).

The measures table (a **contract**) lives beside the run, in ``<run>/analysis/``:

* ``measures.jsonl``: one record per (checkpoint, probe): ``{"epoch", "step", "probe",
  "status": "ok" | "n/a" | "error", "values": {name: number}, "arrays": [names],
  "reason" | "error": text}``. Appended after each checkpoint (one write of whole lines, fsynced);
  a torn last line from a crash is ignored and the file is compacted atomically on the next run.
  :func:`measures_table` pivots it to one row per (run, step) with one column per scalar,
  ``<probe>.<name>``, plus ``<probe>.status``.
* ``arrays/epoch_NNNNNNN.safetensors``: each checkpoint's arrays, named ``<probe>.<name>``
  (written atomically, merged with what is there).
* ``summary.json``: run-level results: key frequencies on the final checkpoint by each rule,
  phases, grokking epoch and delay, Liu et al.'s label, what did not apply and what failed.

Re-running computes only what is missing: (checkpoint, probe) pairs without an ``ok`` or
``n/a`` record (errors are retried). ``force=True`` recomputes everything selected.

Each checkpoint's all-pairs forward pass runs once and is shared by every probe that needs it
(:class:`~mechgrok.probes.base.CheckpointContext`); one model object is reused for every checkpoint.
"""

from __future__ import annotations

import contextlib
import fcntl
import json
import math
import os
import sys
import time
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from mechgrok.errors import CheckpointError, MechgrokError, RunDirError
from mechgrok.probes import NotApplicable, Probe, get_probe, load_probe, registry
from mechgrok.probes.base import CheckpointContext, RunContext, check_output
from mechgrok.store import (
    CheckpointInfo,
    Run,
    atomic_write_bytes,
    atomic_write_json,
    tensors_from_bytes,
    tensors_to_bytes,
)

ANALYSIS_DIR = "analysis"
MEASURES_FILE = "measures.jsonl"
SUMMARY_FILE = "summary.json"
ARRAYS_DIR = "arrays"
LOCK_FILE = "analyze.lock"


# --------------------------------------------------------------------------------------------
# Reading
# --------------------------------------------------------------------------------------------
def _records(path: Path) -> dict[tuple[int, str], dict[str, Any]]:
    """Latest record per (epoch, probe); a torn line is skipped."""
    out: dict[tuple[int, str], dict[str, Any]] = {}
    if not path.is_file():
        return out
    for line in path.read_text().splitlines():
        try:
            r = json.loads(line)
            out[(int(r["epoch"]), str(r["probe"]))] = r
        except (ValueError, KeyError, TypeError):
            continue
    return out


def load_records(run: Run | str | Path) -> dict[tuple[int, str], dict[str, Any]]:
    run = run if isinstance(run, Run) else Run(run)
    return _records(run.path / ANALYSIS_DIR / MEASURES_FILE)


def measures_table(run: Run | str | Path) -> list[dict[str, Any]]:
    """One row per (run, step): ``run``, ``epoch``, ``step``, ``<probe>.<name>`` scalars and
    ``<probe>.status``, sorted by epoch."""
    run = run if isinstance(run, Run) else Run(run)
    rows: dict[int, dict[str, Any]] = {}
    for (epoch, name), r in sorted(load_records(run).items()):
        row = rows.setdefault(epoch, {"run": run.id, "epoch": epoch, "step": r.get("step")})
        row[f"{name}.status"] = r["status"]
        for k, v in (r.get("values") or {}).items():
            row[f"{name}.{k}"] = v
    return [rows[e] for e in sorted(rows)]


def measures_dataframe(run: Run | str | Path):
    """The measures table as a pandas DataFrame (pandas must be installed)."""
    try:
        import pandas as pd
    except ImportError:  # pragma: no cover
        raise MechgrokError("pandas is not installed: pip install pandas") from None
    return pd.DataFrame(measures_table(run))


def load_arrays(run: Run | str | Path, epoch: int) -> dict[str, Any]:
    """The arrays stored for one checkpoint, as numpy arrays named ``<probe>.<name>``."""
    run = run if isinstance(run, Run) else Run(run)
    f = _arrays_path(run.path, epoch)
    if not f.is_file():
        return {}
    tensors, _ = tensors_from_bytes(f.read_bytes(), str(f))
    return {k: v.numpy() for k, v in tensors.items()}


def load_summary(run: Run | str | Path) -> dict[str, Any]:
    run = run if isinstance(run, Run) else Run(run)
    f = run.path / ANALYSIS_DIR / SUMMARY_FILE
    return json.loads(f.read_text()) if f.is_file() else {}


def _arrays_path(run_path: Path, epoch: int) -> Path:
    return run_path / ANALYSIS_DIR / ARRAYS_DIR / f"epoch_{epoch:07d}.safetensors"


# --------------------------------------------------------------------------------------------
# Running probes
# --------------------------------------------------------------------------------------------
@dataclass
class AnalysisResult:
    run: Run
    probes: list[str]
    checkpoints: int
    computed: int = 0
    reused: int = 0
    seconds: float = 0.0
    not_applicable: dict[str, str] = field(default_factory=dict)
    errors: list[dict[str, Any]] = field(default_factory=list)
    summary: dict[str, Any] = field(default_factory=dict)


def resolve_probes(specs: Sequence[str | Probe] | None) -> list[Probe]:
    """Probe objects for names, ``module:Name`` specs or Probe instances (all registered when
    ``specs`` is empty). Duplicate names are refused."""
    if not specs:
        return list(registry().values())
    out: list[Probe] = []
    for s in specs:
        p = s if isinstance(s, Probe) else load_probe(s) if ":" in s else get_probe(s)
        if any(q.name == p.name for q in out):
            raise MechgrokError(f"probe {p.name!r} was asked for twice")
        out.append(p)
    return out


def run_probe(probe: Probe | str, run: Run | str | Path, epoch: int | None = None) -> dict[str, Any]:
    """Run one probe on one checkpoint (the last when ``epoch`` is None), without storing it:
    the same code path as ``mechgrok analyze``. Returns the probe's dict (scalars and arrays)."""
    run = run if isinstance(run, Run) else Run(run)
    p = probe if isinstance(probe, Probe) else load_probe(probe) if ":" in probe else get_probe(probe)
    run_ctx = _run_context(run)
    reason = p.applies(run_ctx)
    if reason is not None:
        raise NotApplicable(reason)
    ck = run.checkpoint(epoch)
    ctx = CheckpointContext(run_ctx, ck, run.load_model(ck))
    out = check_output(p, p.compute(ctx))
    return {**out.scalars, **out.arrays}


def _run_context(run: Run) -> RunContext:
    from mechgrok.probes.builtin import final_key_frequency_finder

    def finder() -> dict[str, list[int]]:
        return final_key_frequency_finder(ctx, run.load_model(run.checkpoints()[-1]))

    ctx = RunContext(run, run.dataset(), finder)
    return ctx


class _Lock:
    def __init__(self, folder: Path):
        folder.mkdir(parents=True, exist_ok=True)
        self.fd = os.open(folder / LOCK_FILE, os.O_RDWR | os.O_CREAT, 0o644)
        try:
            fcntl.flock(self.fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            os.close(self.fd)
            raise RunDirError(f"{folder.parent} is being analysed by another process; wait for "
                              f"it to finish") from None

    def close(self) -> None:
        with contextlib.suppress(OSError):
            os.close(self.fd)


def _append(path: Path, records: Iterable[dict[str, Any]]) -> None:
    data = "".join(json.dumps(r, allow_nan=True) + "\n" for r in records).encode()
    if not data:
        return
    fd = os.open(path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
    try:
        view = memoryview(data)
        while view:
            view = view[os.write(fd, view):]
        os.fsync(fd)
    finally:
        os.close(fd)


def _write_arrays(run_path: Path, epoch: int, arrays: dict[str, Any]) -> None:
    if not arrays:
        return
    import torch

    f = _arrays_path(run_path, epoch)
    f.parent.mkdir(parents=True, exist_ok=True)
    merged: dict[str, Any] = {}
    if f.is_file():
        with contextlib.suppress(CheckpointError):  # a corrupt arrays file is rewritten
            merged, _ = tensors_from_bytes(f.read_bytes(), str(f))
    for k, v in arrays.items():
        merged[k] = torch.from_numpy(v.copy())
    atomic_write_bytes(f, tensors_to_bytes(merged))


def analyze(run: Run | str | Path, probes: Sequence[str | Probe] | None = None, *,
            force: bool = False, progress: bool | None = None,
            on_checkpoint: Callable[[CheckpointInfo], None] | None = None,
            verdict_rules: Any = None) -> AnalysisResult:
    """Run probes over every checkpoint of a run; store what was missing; update the summary.

    ``verdict_rules`` (a :class:`~mechgrok.probes.clockpizza.VerdictRules`) sets the clock/pizza
    thresholds the summary applies to the stored raw numbers (default: its documented defaults).
    """
    t0 = time.perf_counter()
    run = run if isinstance(run, Run) else Run(run)
    selected = resolve_probes(probes)
    checkpoints = run.checkpoints()
    if not checkpoints:
        raise RunDirError(f"run {run.path} has no checkpoints to analyse (train it first, or "
                          f"wait for its first checkpoint)")
    folder = run.path / ANALYSIS_DIR
    lock = _Lock(folder)
    try:
        return _analyze(run, checkpoints, selected, folder, force, progress, on_checkpoint, t0,
                        verdict_rules)
    finally:
        lock.close()


def compute_checkpoint(run: Run, run_ctx: RunContext, model: Any, ck: CheckpointInfo,
                       probes: list[Probe]) -> tuple[list[dict[str, Any]], dict[str, Any]]:
    """Every probe in ``probes`` on one checkpoint: (records, arrays). Never raises for a probe's
    failure or a bad checkpoint: those become ``error`` records naming them."""
    import torch

    base = {"epoch": ck.epoch, "step": ck.step}
    try:
        model.load_state_dict(run.load_state(ck))
    except CheckpointError as e:
        return [{**base, "probe": p.name, "status": "error", "error": str(e)} for p in probes], {}
    ctx = CheckpointContext(run_ctx, ck, model)
    records: list[dict[str, Any]] = []
    arrays: dict[str, Any] = {}
    for p in probes:
        rec: dict[str, Any] = {**base, "probe": p.name}
        try:
            with torch.no_grad() if "grad" not in p.needs else contextlib.nullcontext():
                out = check_output(p, p.compute(ctx))
            rec.update(status="ok", values=out.scalars, arrays=sorted(out.arrays))
            arrays.update({f"{p.name}.{k}": v for k, v in out.arrays.items()})
        except NotApplicable as e:
            rec.update(status="n/a", reason=str(e))
        except MechgrokError as e:
            rec.update(status="error", error=str(e))
        except Exception as e:  # a probe's bug must not stop the others
            rec.update(status="error", error=f"{type(e).__name__}: {e}")
        records.append(rec)
    return records, arrays


def _analyze(run: Run, checkpoints: list[CheckpointInfo], selected: list[Probe], folder: Path,
             force: bool, progress: bool | None,
             on_checkpoint: Callable[[CheckpointInfo], None] | None, t0: float,
             verdict_rules: Any) -> AnalysisResult:
    from mechgrok.models import build_model

    mpath = folder / MEASURES_FILE
    records = _records(mpath)
    atomic_write_bytes(mpath, "".join(json.dumps(r) + "\n" for r in records.values()).encode())
    run_ctx = _run_context(run)
    res = AnalysisResult(run, [p.name for p in selected], len(checkpoints))
    applicable: list[Probe] = []
    for p in selected:
        try:
            reason = p.applies(run_ctx)
        except Exception as e:  # a user's applies() that raises is that probe's failure
            res.errors.append({"probe": p.name, "epoch": None,
                               "error": f"applies() raised {type(e).__name__}: {e}"})
            continue
        if reason is None:
            applicable.append(p)
        else:
            res.not_applicable[p.name] = reason

    def done(epoch: int, name: str) -> bool:
        r = records.get((epoch, name))
        return (not force) and r is not None and r["status"] in ("ok", "n/a")

    # the final checkpoint first: the key frequencies every other checkpoint reuses come from it
    order = [checkpoints[-1], *checkpoints[:-1]]
    by_epoch = {ck.epoch: ck for ck in order}
    na_records: dict[int, list[dict[str, Any]]] = {}
    work: list[tuple[int, list[str]]] = []
    for ck in order:
        todo = [p for p in selected if not done(ck.epoch, p.name)]
        res.reused += len(selected) - len(todo)
        na_records[ck.epoch] = [
            {"epoch": ck.epoch, "step": ck.step, "probe": p.name, "status": "n/a",
             "reason": res.not_applicable[p.name]} for p in todo if p.name in res.not_applicable]
        names = [p.name for p in todo if p in applicable]
        if names:
            work.append((ck.epoch, names))

    by_name = {p.name: p for p in applicable}
    model = build_model(run.config).eval()  # one model object, reloaded per checkpoint

    show = sys.stderr.isatty() if progress is None else progress
    bar = None
    if show:
        from tqdm import tqdm

        bar = tqdm(total=len(order), unit="ckpt", desc=f"analyse {run.id}"[:40], file=sys.stderr)
    written: set[int] = set()

    def store(epoch: int, recs: list[dict[str, Any]], arrays: dict[str, Any]) -> None:
        new = na_records.get(epoch, []) + recs
        _write_arrays(run.path, epoch, arrays)
        _append(mpath, new)
        for r in new:
            records[(r["epoch"], r["probe"])] = r
            if r["status"] == "error":
                res.errors.append({"probe": r["probe"], "epoch": epoch, "error": r["error"]})
        res.computed += len(new)
        written.add(epoch)
        if on_checkpoint is not None:
            on_checkpoint(by_epoch[epoch])
        if bar is not None:
            bar.update(1)

    try:
        for epoch, names in work:
            recs, arrays = compute_checkpoint(run, run_ctx, model, by_epoch[epoch],
                                              [by_name[n] for n in names])
            store(epoch, recs, arrays)
        for ck in order:  # checkpoints with nothing to compute but n/a records, or nothing at all
            if ck.epoch not in written:
                store(ck.epoch, [], {})
    finally:
        if bar is not None:
            bar.close()
    res.summary = _summarise(run, run_ctx, records, res, verdict_rules)
    atomic_write_json(folder / SUMMARY_FILE, res.summary)
    res.seconds = time.perf_counter() - t0
    return res


def _summarise(run: Run, run_ctx: RunContext, records: dict, res: AnalysisResult,
               verdict_rules: Any = None) -> dict[str, Any]:
    from mechgrok.probes.clockpizza import VerdictRules
    from mechgrok.probes.phases import detect_phases, liu_label

    summary: dict[str, Any] = {"kind": "mechgrok.analysis_summary", "schema_version": 1,
                               "run": run.id, "checkpoints": len(run.checkpoints())}
    try:
        summary["key_frequencies"] = {"epoch": run.checkpoints()[-1].epoch,
                                      **run_ctx.final_key_frequencies()}
    except (NotApplicable, MechgrokError) as e:
        summary["key_frequencies"] = {"not_applicable": str(e)}
    metrics = run.metrics()
    if metrics:
        ex = sorted((e, r["values"]["excluded_loss"]) for (e, name), r in records.items()
                    if name == "restricted" and r["status"] == "ok")
        phases = detect_phases(
            [m["epoch"] for m in metrics], [m["train_acc"] for m in metrics],
            [m["test_acc"] for m in metrics], [m["test_loss"] for m in metrics],
            [m["sum_sq_weights"] for m in metrics],
            excluded_loss_epochs=[e for e, _ in ex] or None,
            excluded_loss=[v for _, v in ex] or None)
        label, figures = liu_label([m["epoch"] for m in metrics], [m["train_acc"] for m in metrics],
                                   [m["test_acc"] for m in metrics])
        summary["phases"] = phases
        summary["liu_label"] = label
        summary["liu_figures"] = figures
    cp = sorted((e, r["values"]) for (e, name), r in records.items()
                if name == "clock_pizza" and r["status"] == "ok")
    if cp:
        rules = verdict_rules or VerdictRules()
        series = {}
        for e, v in cp:
            raw = (v.get("gradient_symmetricity"), v.get("distance_irrelevance"), v.get("circularity"))
            ok = all(x is not None and math.isfinite(x) for x in raw)
            series[str(e)] = rules.classify(*raw) if ok else None
        e, v = cp[-1]
        summary["clock_pizza"] = {
            "epoch": e, "verdict": series[str(e)],
            "gradient_symmetricity": v.get("gradient_symmetricity"),
            "distance_irrelevance": v.get("distance_irrelevance"),
            "circularity": v.get("circularity"),
            "rules": {k: getattr(rules, k) for k in ("pizza_gs", "pizza_di", "clock_gs", "clock_di",
                                                      "circ_min")},
            "verdicts": series,
        }
    col = sorted((e, r["values"]) for (e, name), r in records.items()
                 if name == "collapse" and r["status"] == "ok")
    if col:
        from mechgrok.probes.collapse import collapse_status

        e, v = col[-1]
        acc = next((m["test_acc"] for m in reversed(metrics) if m["epoch"] <= e), None)
        sc32, sc64 = v.get("sc_fraction_float32"), v.get("sc_fraction_float64")
        summary["collapse"] = {
            "epoch": e, "sc_fraction_float32": sc32, "sc_fraction_float64": sc64,
            "zero_loss_fraction_float32": v.get("zero_loss_fraction_float32"),
            "zero_loss_fraction_float64": v.get("zero_loss_fraction_float64"),
            "gap_median": v.get("gap_median"), "nlm_cosine": v.get("nlm_cosine"),
            "status": collapse_status(sc32, sc64, acc) if sc32 is not None else None,
        }
    summary["not_applicable"] = res.not_applicable
    status: dict[str, dict[str, int]] = {}
    for (_, name), r in records.items():
        s = status.setdefault(name, {"ok": 0, "n/a": 0, "error": 0})
        s[r["status"]] += 1
    summary["probe_status"] = status
    summary["errors"] = [{"epoch": e, "probe": name, "error": r["error"]}
                         for (e, name), r in sorted(records.items()) if r["status"] == "error"]
    return summary
