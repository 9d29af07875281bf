"""Everything a report draws, read once from a run directory (:class:`RunData`).

The report only reads: the run's config, metrics and checkpoints, and what ``mechgrok analyze``
wrote under ``RUN/analysis/`` (measures table, per-checkpoint arrays, summary). A few pictures
need the model itself (attention patterns, the neuron-logit map, the embedding's PCA over
training); those load the checkpoints they need, verified against the manifest like any load.

Nothing read is trusted (a run directory may come from someone else): what the report computes
with is checked here, and a file that is damaged or of the wrong shape is a :class:`RunDirError`
naming it and what is wrong (the CLI prints one line). A record of ``analysis/measures.jsonl``
that is not of the shape mechgrok writes, or whose probe name is not an allowed probe name
(:data:`mechgrok.probes.base.PROBE_NAME_RE`), was not written by mechgrok: it is left out, and
the report says how many were (:attr:`RunData.ignored_records`). Text that is only shown (key frequencies, verdicts, labels,
errors) is kept as it is and escaped where the report writes it.
"""

from __future__ import annotations

import functools
import math
from pathlib import Path
from typing import Any

import numpy as np

from mechgrok.analysis import (
    load_arrays,
    load_records,
    load_summary,
    measures_table,
)
from mechgrok.errors import RunDirError
from mechgrok.store import Run, arrays_path, summary_path

__all__ = [
    "MAX_FRAMES",
    "MAX_HEATMAP_EPOCHS",
    "METRIC_KEYS",
    "RULE_KEYS",
    "STATUSES",
    "SUMMARY_NUMBERS",
    "SUMMARY_TABLES",
    "RunData",
    "finite",
    "kind_of",
    "read_measures",
    "read_summary",
    "show_value",
    "thin",
]

#: The most checkpoints one figure with a slider holds; more are thinned evenly (first and last
#: always kept). A circle changes slowly between dense checkpoints, so the eye loses nothing.
MAX_FRAMES = 40
#: The most epochs a (frequency × epoch) heatmap holds before it is thinned evenly.
MAX_HEATMAP_EPOCHS = 300


def thin(items: list, n: int) -> list:
    """At most ``n`` items, evenly spaced, always keeping the first and the last."""
    if n < 2:
        raise ValueError(f"thin needs n ≥ 2, got {n}")
    if len(items) <= n:
        return list(items)
    idx = np.unique(np.round(np.linspace(0, len(items) - 1, n)).astype(int))
    return [items[i] for i in idx]


def finite(v: Any) -> bool:
    """Whether ``v`` (read from a file) is a finite number (a bool is not one)."""
    return isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(v)


def show_value(v: Any, n: int = 60) -> str:
    """A value read from a file, for an error message: its repr (no newlines, no control
    characters), cut short."""
    r = repr(v)
    return r if len(r) <= n else r[: n - 1] + "…"


def kind_of(v: Any) -> str:
    """What a JSON value is, for an error message ("a list", "null" …)."""
    return {dict: "a JSON object", list: "a list", str: "a string", bool: "a boolean",
            type(None): "null"}.get(type(v), "a number")


#: The training metrics the report computes with: present in every record, numbers (NaN for a
#: diverged loss; null is read as NaN).
METRIC_KEYS = ("train_loss", "test_loss", "train_acc", "test_acc")
STATUSES = ("ok", "n/a", "error")
#: summary.json's numbers that the report draws or computes with: finite numbers or null.
SUMMARY_NUMBERS = {
    "phases": ("train_99", "grokking_epoch", "grokking_delay", "memorisation_end",
               "circuit_formation_end", "cleanup_end"),
    "clock_pizza": ("epoch", "gradient_symmetricity", "distance_irrelevance", "circularity"),
}
SUMMARY_TABLES = ("phases", "key_frequencies", "clock_pizza", "collapse", "probes")
RULE_KEYS = ("pizza_gs", "pizza_di", "clock_gs", "clock_di", "circ_min")


def read_summary(run: Run) -> dict[str, Any]:
    """``analysis/summary.json``, checked for what the report computes with ({} when absent)."""
    f = summary_path(run.path)
    fix = f"`mechgrok analyze {run.path}` rewrites it"
    try:
        s = load_summary(run)
    except (ValueError, UnicodeDecodeError, RecursionError) as e:
        raise RunDirError(f"cannot read {f}: not valid JSON ({show_value(str(e), 80)}); {fix}"
                          ) from None
    if not isinstance(s, dict):
        raise RunDirError(f"{f} is {kind_of(s)}, not a JSON object; {fix}")
    for t in SUMMARY_TABLES:
        if s.get(t) is not None and not isinstance(s[t], dict):
            raise RunDirError(f"{f}: {t} is {kind_of(s[t])}, not a JSON object; {fix}")
    for t, keys in SUMMARY_NUMBERS.items():
        for k in keys:
            v = (s.get(t) or {}).get(k)
            if v is not None and not finite(v):
                raise RunDirError(f"{f}: {t}.{k} is {show_value(v)}, not a number; {fix}")
    rules = (s.get("clock_pizza") or {}).get("rules")
    if rules is not None:
        if not isinstance(rules, dict):
            raise RunDirError(f"{f}: clock_pizza.rules is {kind_of(rules)}, not a JSON object; "
                              f"{fix}")
        for k in RULE_KEYS:
            if k in rules and not finite(rules[k]):
                raise RunDirError(f"{f}: clock_pizza.rules.{k} is {show_value(rules[k])}, not a "
                                  f"number; {fix}")
    probes = s.get("probes")
    if probes is not None:
        bad = [k for k, v in probes.items() if not isinstance(v, dict)]
        if bad:
            raise RunDirError(f"{f}: probes.{show_value(bad[0], 40)} is {kind_of(probes[bad[0]])}, "
                              f"not a JSON object; {fix}")
    if s.get("errors") is not None and not isinstance(s["errors"], list):
        raise RunDirError(f"{f}: errors is {kind_of(s['errors'])}, not a list; {fix}")
    return s


def read_measures(run: Run) -> tuple[dict[tuple[int, str], dict[str, Any]],
                                     list[dict[str, Any]], int]:
    """``analysis/measures.jsonl`` as the report uses it: the latest well-formed record per
    (epoch, probe) (:func:`mechgrok.analysis.load_records`, which checks each record's shape and
    probe name), the measures table (stale records left out), and how many lines were left out
    because they are not records mechgrok writes."""
    skipped: list[int] = []
    records = load_records(run, skipped)
    return dict(sorted(records.items())), measures_table(run), len(skipped)


class RunData:
    """One run, as the report sees it. Cheap to build; heavy parts load on first use."""

    def __init__(self, run: Run | str | Path):
        self.run = run if isinstance(run, Run) else Run(run)
        self.config = self.run.config
        # checked by the store's reader (one line naming the file and the line)
        self.metrics: list[dict[str, Any]] = self.run.metrics()
        self.summary: dict[str, Any] = read_summary(self.run)
        #: checked records of analysis/measures.jsonl by (epoch, probe); the measures table
        self.records: dict[tuple[int, str], dict[str, Any]]
        self.table: list[dict[str, Any]]
        self.records, self.table, self.ignored_records = read_measures(self.run)
        self.checkpoints = self.run.checkpoints()
        self._arrays: dict[int, dict[str, np.ndarray]] = {}

    @property
    def id(self) -> str:
        return self.run.id

    @property
    def analysed(self) -> bool:
        return bool(self.table)

    # --- scalars --------------------------------------------------------------------------
    def metric(self, key: str) -> tuple[np.ndarray, np.ndarray]:
        """(epochs, values) of a training metric, finite values only."""
        pts = [(m["epoch"], m[key]) for m in self.metrics if finite(m.get(key))]
        return _arr(pts)

    def series(self, column: str) -> tuple[np.ndarray, np.ndarray]:
        """(epochs, values) of a measures-table column (``probe.name``), finite values only."""
        pts = [(r["epoch"], r[column]) for r in self.table if finite(r.get(column))]
        return _arr(pts)

    def columns(self) -> list[str]:
        seen: dict[str, None] = {}
        for r in self.table:
            for k in r:
                if "." in k and not k.endswith(".status"):
                    seen[k] = None
        return list(seen)

    def probes_with_values(self) -> dict[str, list[str]]:
        """probe → its scalar value names, in first-seen order."""
        out: dict[str, list[str]] = {}
        for col in self.columns():
            probe, name = col.split(".", 1)
            out.setdefault(probe, []).append(name)
        return out

    def status_counts(self) -> dict[str, dict[str, int]]:
        """probe → {status: count} over checkpoints."""
        out: dict[str, dict[str, int]] = {}
        for r in self.table:
            for k, v in r.items():
                if k.endswith(".status") and isinstance(v, str):
                    c = out.setdefault(k[: -len(".status")], {})
                    c[v] = c.get(v, 0) + 1
        return out

    # --- arrays ---------------------------------------------------------------------------
    def arrays(self, epoch: int) -> dict[str, np.ndarray]:
        if epoch not in self._arrays:
            self._arrays[epoch] = load_arrays(self.run, epoch)
        return self._arrays[epoch]

    def analysed_epochs(self) -> list[int]:
        return [r["epoch"] for r in self.table]

    def array_series(self, name: str, max_epochs: int | None = None
                     ) -> tuple[list[int], np.ndarray | None]:
        """(epochs, stacked array) of one named array over the checkpoints that have it."""
        epochs = self.analysed_epochs()
        if max_epochs is not None:
            epochs = thin(epochs, max_epochs)
        got = [(e, a[name]) for e in epochs if name in (a := self.arrays(e))]
        if not got:
            return [], None
        for e, v in got[1:]:
            if v.shape != got[0][1].shape:
                raise RunDirError(f"{self.arrays_file(e)}: {name} has shape {v.shape}, but "
                                  f"{got[0][1].shape} at epoch {got[0][0]}; the file was "
                                  f"altered. {self._reanalyse}")
        return [e for e, _ in got], np.stack([v for _, v in got])

    @property
    def _reanalyse(self) -> str:
        return f"`mechgrok analyze {self.run.path} --force` recomputes it"

    def arrays_file(self, epoch: int) -> Path:
        return arrays_path(self.run.path, epoch)

    def check_array(self, name: str, epoch: int, v: np.ndarray, ndim: int) -> None:
        """A :class:`RunDirError` naming the file unless ``v`` has ``ndim`` dimensions, none of
        them empty (what a figure of it needs)."""
        if v.ndim != ndim or 0 in v.shape:
            raise RunDirError(f"{self.arrays_file(epoch)}: {name} has shape {v.shape}, not "
                              f"{ndim}-dimensional; the file was altered. {self._reanalyse}")

    def final_array(self, name: str) -> tuple[int | None, np.ndarray | None]:
        """The named array at the last analysed checkpoint that has it."""
        for e in reversed(self.analysed_epochs()):
            a = self.arrays(e)
            if name in a:
                return e, a[name]
        return None, None

    # --- models ---------------------------------------------------------------------------
    @functools.cached_property
    def final_model(self):
        if not self.checkpoints:
            raise RunDirError(f"run {self.id} has no checkpoints yet")
        return self.run.load_model(self.checkpoints[-1])

    def embeddings(self, max_frames: int = MAX_FRAMES) -> tuple[list[int], list[np.ndarray]]:
        """The token embedding (n, d) at up to ``max_frames`` checkpoints (one model reused;
        read once per ``max_frames``: the circles and the PCA view share them)."""
        cache = self.__dict__.setdefault("_embeddings", {})
        if max_frames not in cache:
            cache[max_frames] = self._read_embeddings(max_frames)
        epochs, embs = cache[max_frames]
        return list(epochs), [e.copy() for e in embs]

    def _read_embeddings(self, max_frames: int) -> tuple[list[int], list[np.ndarray]]:
        import torch

        from mechgrok.models import build_model

        cks = thin(self.checkpoints, max_frames) if len(self.checkpoints) > 1 else self.checkpoints
        model = build_model(self.config)
        out = []
        with torch.no_grad():
            for ck in cks:
                self.run.load_into(model, ck)
                out.append(model.token_embedding().double().numpy().copy())
        return [ck.epoch for ck in cks], out


def _arr(pts: list[tuple[Any, Any]]) -> tuple[np.ndarray, np.ndarray]:
    if not pts:
        return np.zeros(0, dtype=np.int64), np.zeros(0)
    e, v = zip(*pts)
    return np.asarray(e, dtype=np.int64), np.asarray(v, dtype=np.float64)
