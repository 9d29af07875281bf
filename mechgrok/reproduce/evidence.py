"""What a claim is measured on: the analysed runs of one budget (:class:`Evidence`), each read
once as the report reads it (:class:`RunEvidence` wraps a :class:`~mechgrok.report.RunData`),
and the curve readings the claims share.

Conventions (the claims' rules are written in these terms):

* a run **grokked** when its summary has a grokking epoch (test accuracy ≥ 99 % from some
  evaluation to the end: :func:`mechgrok.probes.phases.detect_phases`);
* the **start of a fall** of a loss curve (:func:`start_of_fall`): on log10 of the loss, from
  its peak (the largest value at or after ``after``) to its lowest value after that peak, the
  first checkpoint at which the curve has come down ``frac`` (10 %) of the way. A curve that
  falls by less than one decade has no fall (None). This is the reading mechgrok's phase rule
  uses for the end of circuit formation (the start of test loss's fall).
"""

from __future__ import annotations

import functools
import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

__all__ = ["Evidence", "RunEvidence", "start_of_fall", "value_near"]


def start_of_fall(epochs: Sequence[int], values: Sequence[float], after: int | None = None,
                  frac: float = 0.1, min_decades: float = 1.0) -> int | None:
    """The first epoch at which log10 of ``values`` has fallen ``frac`` of the way from its peak
    (at or after ``after``) to its minimum after that peak; None when it falls less than
    ``min_decades`` decades (or there is no data)."""
    pts = [(int(e), math.log10(v)) for e, v in zip(epochs, values)
           if v is not None and math.isfinite(v) and v > 0 and (after is None or e >= after)]
    if len(pts) < 2:
        return None
    peak_i = max(range(len(pts)), key=lambda i: pts[i][1])
    tail = pts[peak_i:]
    low = min(y for _, y in tail)
    top = pts[peak_i][1]
    if top - low < min_decades:
        return None
    level = top - frac * (top - low)
    return next(e for e, y in tail if y <= level)


def value_near(epochs: Sequence[int], values: Sequence[float], epoch: int) -> float | None:
    """The value at the checkpoint nearest ``epoch`` (the earlier one on a tie); None when there
    is none."""
    if len(epochs) == 0:
        return None
    i = min(range(len(epochs)), key=lambda j: (abs(int(epochs[j]) - epoch), epochs[j] > epoch))
    return float(values[i])


@dataclass
class RunEvidence:
    """One run of a budget, as the claims read it: its grid point, seed, summary and measures
    (:class:`~mechgrok.report.RunData`, read on first use)."""

    run_id: str
    path: Path
    set_name: str  # the run set it belongs to
    point: Mapping[str, Any] = field(default_factory=dict)  # its grid point (axis → value)
    seed: int = 0

    @functools.cached_property
    def data(self) -> Any:
        """The run as the report reads it (:class:`~mechgrok.report.RunData`)."""
        from mechgrok.report import RunData

        return RunData(self.path)

    @property
    def summary(self) -> dict[str, Any]:
        return self.data.summary

    @property
    def config(self) -> Any:
        return self.data.config

    @property
    def phases(self) -> dict[str, Any]:
        return self.summary.get("phases") or {}

    @property
    def grokking_epoch(self) -> int | None:
        return self.phases.get("grokking_epoch")

    @property
    def grokked(self) -> bool:
        return self.grokking_epoch is not None

    @property
    def final_test_acc(self) -> float | None:
        return self.data.metrics[-1]["test_acc"] if self.data.metrics else None

    @property
    def final_epoch(self) -> int | None:
        return self.data.metrics[-1]["epoch"] if self.data.metrics else None

    def probe_summary(self, name: str) -> dict[str, Any]:
        """The probe's run-level summary (``summary["probes"][name]``; {} when absent)."""
        return (self.summary.get("probes") or {}).get(name) or {}

    def column(self, column: str) -> tuple[list[int], list[float]]:
        """(epochs, values) of a measures-table column (``probe.name``), finite values only."""
        e, v = self.data.series(column)
        return [int(x) for x in e], [float(x) for x in v]

    @property
    def label(self) -> str:
        """``p=59, α=1, seed 0``: how the report names the run (its grid point and seed)."""
        names = {"task.p": "p", "model.attn_alpha": "α", "task.name": "task",
                 "task.frac_train": "train fraction"}
        parts = [f"{names.get(k, k)}={v:g}" if isinstance(v, float) else f"{names.get(k, k)}={v}"
                 for k, v in self.point.items()]
        return ", ".join([*parts, f"seed {self.seed}"])


@dataclass
class Evidence:
    """The analysed runs of one budget of an entry, by run set."""

    budget: str
    epochs: int  # the most epochs a run of the budget may train
    runs: list[RunEvidence]

    def of(self, set_name: str) -> list[RunEvidence]:
        """The runs of one run set, in the grid's order."""
        return [r for r in self.runs if r.set_name == set_name]
