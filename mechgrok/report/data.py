"""Everything a report draws, read once from a run directory (:class:`RunData`).

The report only reads: the run's config, metrics and checkpoints, and what ``mechgrok analyze``
wrote under ``RUN/analysis/`` (measures table, per-checkpoint arrays, summary). A few pictures
need the model itself (attention patterns, the neuron-logit map, the embedding's PCA over
training); those load the checkpoints they need, verified against the manifest like any load.
"""

from __future__ import annotations

import functools
import math
from pathlib import Path
from typing import Any

import numpy as np

from mechgrok.analysis import load_arrays, load_summary, measures_table
from mechgrok.errors import RunDirError
from mechgrok.store import Run

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


def _finite(v: Any) -> bool:
    return isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(v)


class RunData:
    """One run, as the report sees it. Cheap to build; heavy parts load on first use."""

    def __init__(self, run: Run | str | Path):
        self.run = run if isinstance(run, Run) else Run(run)
        self.config = self.run.config
        self.metrics: list[dict[str, Any]] = self.run.metrics()
        self.summary: dict[str, Any] = load_summary(self.run)
        self.table: list[dict[str, Any]] = measures_table(self.run)
        self.checkpoints = self.run.checkpoints()
        self._arrays: dict[int, dict[str, np.ndarray]] = {}

    @property
    def id(self) -> str:
        return self.run.id

    @property
    def is_transformer(self) -> bool:
        return self.config.model.kind == "transformer"

    @property
    def analysed(self) -> bool:
        return bool(self.table)

    # --- scalars --------------------------------------------------------------------------
    def metric(self, key: str) -> tuple[np.ndarray, np.ndarray]:
        """(epochs, values) of a training metric, finite values only."""
        pts = [(m["epoch"], m[key]) for m in self.metrics if _finite(m.get(key))]
        return _arr(pts)

    def series(self, column: str) -> tuple[np.ndarray, np.ndarray]:
        """(epochs, values) of a measures-table column (``probe.name``), finite values only."""
        pts = [(r["epoch"], r[column]) for r in self.table if _finite(r.get(column))]
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
                if k.endswith(".status"):
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
        return [e for e, _ in got], np.stack([v for _, v in got])

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
        """The token embedding (n, d) at up to ``max_frames`` checkpoints (one model reused)."""
        import torch

        from mechgrok.models import build_model

        cks = thin(self.checkpoints, max_frames) if len(self.checkpoints) > 1 else self.checkpoints
        model = build_model(self.config)
        out = []
        with torch.no_grad():
            for ck in cks:
                model.load_state_dict(self.run.load_state(ck))
                out.append(model.token_embedding().double().numpy().copy())
        return [ck.epoch for ck in cks], out


def _arr(pts: list[tuple[Any, Any]]) -> tuple[np.ndarray, np.ndarray]:
    if not pts:
        return np.zeros(0, dtype=np.int64), np.zeros(0)
    e, v = zip(*pts)
    return np.asarray(e, dtype=np.int64), np.asarray(v, dtype=np.float64)
