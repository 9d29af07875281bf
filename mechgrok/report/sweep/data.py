"""A sweep directory as its report reads it (:class:`SweepData`): the axes, and every run's curves,
grokking epochs and Liu et al.'s label, grouped into cells (:func:`cells`) and grid points
(:func:`grid_groups`).

``sweep.json`` and the runs' metrics are not trusted: :func:`mechgrok.store.sweep.load_sweep` and
:func:`mechgrok.store.read_metrics` check what the report uses (the sweep's name, its axes, each
run's id, point, seed and state), and a damaged or ill-shaped file is a
:class:`~mechgrok.errors.RunDirError` naming it.
"""

from __future__ import annotations

import itertools
import json
import math
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from mechgrok.errors import MechgrokError, RunDirError

__all__ = ["Cell", "SweepData", "SweepRun", "cells", "format_value", "grid_groups", "short_key"]


@dataclass
class SweepRun:
    """What the sweep report needs of one run (read from its metrics)."""

    run_id: str
    point: dict[str, Any]
    seed: int
    state: str  # done | failed | pending | missing
    epochs: list[int] = field(default_factory=list)
    test_acc: list[float] = field(default_factory=list)
    train_acc: list[float] = field(default_factory=list)
    final_test_acc: float | None = None
    memorised: int | None = None
    generalised: int | None = None
    label: str | None = None
    error: str | None = None

    @property
    def delay(self) -> int | None:
        if self.generalised is None or self.memorised is None:
            return None
        return self.generalised - self.memorised


def format_value(v: Any) -> str:
    """An axis value as the report shows it (and groups by): floats short, lists as JSON."""
    if isinstance(v, float):
        return f"{v:g}"
    if isinstance(v, (list, dict)):
        return json.dumps(v)
    return str(v)


def short_key(k: str) -> str:
    """An axis key without its section (``train.lr`` → ``lr``)."""
    return str(k).split(".", 1)[-1]


def _read_run(r: dict[str, Any]) -> SweepRun:
    """One entry of ``sweep.json`` and its run's metrics."""
    from mechgrok.probes.phases import grokking_epochs, liu_label
    from mechgrok.store import METRICS_FILE, read_metrics

    error = r.get("error")
    run = SweepRun(r["run_id"], r.get("point", {}), r.get("seed", 0),
                   r.get("state", "pending"), error=None if error is None else str(error))
    path = Path(r["path"]) / METRICS_FILE
    metrics = read_metrics(path)
    if not metrics:
        if run.state == "done":
            run.state = "missing"
        return run
    run.epochs = [m["epoch"] for m in metrics]
    run.test_acc = [m["test_acc"] for m in metrics]
    run.train_acc = [m["train_acc"] for m in metrics]
    run.final_test_acc = metrics[-1]["test_acc"]
    try:
        g = grokking_epochs(metrics)
        run.label = liu_label(run.epochs, run.train_acc, run.test_acc)[0]
    except ValueError as e:  # accuracies outside [0, 1], NaN, …
        raise RunDirError(f"{path}: {e}") from None
    run.memorised, run.generalised = g["train_99"], g["test_99"]
    return run


class SweepData:
    """A sweep directory as the report sees it: its axes and every run's curves and labels."""

    def __init__(self, sweep_dir: str | Path):
        from mechgrok.store.sweep import load_sweep

        data = load_sweep(sweep_dir)  # checked field by field: one line naming what is wrong
        self.path = Path(sweep_dir)
        self.name: str = data["name"]
        self.axes: list[tuple[str, list[Any]]] = [(a["key"], a["values"])
                                                  for a in data.get("axes") or []]
        self.seeds = data.get("seeds")
        self.runs: list[SweepRun] = [_read_run(r) for r in data.get("runs") or []]

    def with_curves(self) -> list[SweepRun]:
        return [r for r in self.runs if r.epochs]

    def pick_axes(self, axes: Sequence[str] | None) -> list[str]:
        """The axes to draw: ``axes`` (one or two of the sweep's), or the grid's first two."""
        keys = [k for k, _ in self.axes]
        if axes is None:
            return keys[:2]
        for a in axes:
            if a not in keys:
                raise MechgrokError(f"sweep {self.name} has no axis {a!r}; its axes: "
                                    f"{', '.join(keys) or 'none (seeds only)'}")
        if len(set(axes)) != len(axes) or len(axes) > 2:
            raise MechgrokError(f"give one or two distinct axes to draw, got {list(axes)}")
        return list(axes)

    def values(self, key: str) -> list[Any]:
        return next(v for k, v in self.axes if k == key)


@dataclass
class Cell:
    """The runs at one point of the drawn axes (their seeds, and every other axis's values)."""

    runs: list[SweepRun]

    @property
    def n(self) -> int:
        return len(self.runs)

    def _stats(self, xs: list[float]) -> tuple[float, float]:
        if not xs:
            return math.nan, math.nan
        a = np.asarray(xs, dtype=float)
        return float(a.mean()), float(a.std(ddof=1)) if a.size > 1 else 0.0

    def delay(self) -> tuple[float, float, int]:
        ds = [r.delay for r in self.runs if r.delay is not None]
        m, s = self._stats([float(d) for d in ds])
        return m, s, len(ds)

    def test_acc(self) -> tuple[float, float]:
        return self._stats([r.final_test_acc for r in self.runs if r.final_test_acc is not None])

    def labels(self) -> Counter:
        return Counter(r.label for r in self.runs if r.label is not None)


def cells(sd: SweepData, axes: Sequence[str]) -> dict[tuple[str, ...], Cell]:
    """Runs grouped by their values on ``axes`` (keys: the formatted values, in grid order)."""
    out: dict[tuple[str, ...], Cell] = {}
    grids = [[format_value(v) for v in sd.values(a)] for a in axes]
    for key in itertools.product(*grids):
        out[key] = Cell([])
    for r in sd.with_curves():
        key = tuple(format_value(r.point.get(a)) for a in axes)
        if key in out:
            out[key].runs.append(r)
    return out


def grid_groups(sd: SweepData) -> dict[tuple[str, ...], list[SweepRun]]:
    """The runs with curves, grouped by grid point (every axis's formatted value), grid order;
    each group's runs in the sweep's order (its seeds)."""
    keys = [k for k, _ in sd.axes]
    out: dict[tuple[str, ...], list[SweepRun]] = {
        key: [] for key in itertools.product(*[[format_value(v) for v in sd.values(k)]
                                               for k in keys])}
    for r in sd.with_curves():
        out.setdefault(tuple(format_value(r.point.get(k)) for k in keys), []).append(r)
    return {k: v for k, v in out.items() if v}
