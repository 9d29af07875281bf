"""Run probes over a run's checkpoints into the measures table (``mechgrok analyze``).

The measures table (a **contract**) lives beside the run, in ``<run>/analysis/``; its format
(``measures.jsonl`` records, ``arrays/``, ``summary.json``, the lock) is
:mod:`mechgrok.store.analysis`. :func:`measures_table` pivots it to one row per (run, step) with
one column per scalar, ``<probe>.<name>``, plus ``<probe>.status``.

**What a stored value depended on.** Each record says what it was computed from (the
checkpoint's, split's, config's and, where used, the final checkpoint's hashes:
:mod:`~mechgrok.analysis.deps`) and which code computed it (:func:`probe_identity`), and is used
only while all of it still holds; otherwise it is *stale*: :func:`analyze` computes it again and
counts it in ``AnalysisResult.stale``; :func:`measures_table` and the summary leave it out.
Records written before mechgrok stored these (no ``deps`` or no ``probe_id``) are stale for every
probe. ``error`` records are always computed again. ``force=True`` recomputes everything selected.

**The run directory changing under the analysis.** The analysis holds ``analysis/analyze.lock``
(:func:`analysis_lock` takes it from outside, e.g. before ``train --overwrite``) and stops with a
:class:`~mechgrok.errors.RunDirError`, writing nothing more, when the run is replaced under it
(:mod:`~mechgrok.analysis.runner`).

**Probes are isolated from each other.** Each checkpoint's all-pairs forward pass runs once and is
shared by every probe that needs it; one model object is reused for every checkpoint. A probe that
changes what the others share (the model, ``ctx.run``, the all-pairs results) gets an ``error``
record saying so, and what it changed is rebuilt for the probes after it
(:mod:`~mechgrok.analysis.context`). A probe that raises anything, ``SystemExit`` included, gets an
``error`` record; only ``KeyboardInterrupt`` stops the analysis (:mod:`~mechgrok.analysis.compute`).

Where the rest lives: :mod:`~mechgrok.analysis.records` (reading what was stored),
:mod:`~mechgrok.analysis.workers` (``analyze(workers=N)``), :mod:`~mechgrok.analysis.summary`
(``summary.json``), :mod:`~mechgrok.analysis.model` (:func:`analyze_model`, any model object).
"""

from __future__ import annotations

from mechgrok.analysis.compute import compute_checkpoint, resolve_probes, run_probe
from mechgrok.analysis.identity import probe_identity
from mechgrok.analysis.model import analyze_model
from mechgrok.analysis.records import (
    load_arrays,
    load_records,
    load_summary,
    measures_dataframe,
    measures_table,
)
from mechgrok.analysis.result import AnalysisResult
from mechgrok.analysis.runner import analysis_lock, analyze, pending
from mechgrok.analysis.workers import ANALYSIS_THREADS, MIN_CHECKPOINTS_PER_WORKER
from mechgrok.store.analysis import STATUSES

__all__ = [
    "ANALYSIS_THREADS",
    "MIN_CHECKPOINTS_PER_WORKER",
    "STATUSES",
    "AnalysisResult",
    "analysis_lock",
    "analyze",
    "analyze_model",
    "compute_checkpoint",
    "load_arrays",
    "load_records",
    "load_summary",
    "measures_dataframe",
    "measures_table",
    "pending",
    "probe_identity",
    "resolve_probes",
    "run_probe",
]
