"""Curves at scale: each grid point's median and min–max band over its seeds (:func:`group_curve`),
and every run's own curves for the page to draw on demand (:func:`runs_payload`), each thinned to
about :data:`MAX_POINTS` points by :func:`thin_indices`, which never thins an extreme away."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from mechgrok.report.figures.base import text
from mechgrok.report.sweep.data import SweepData, SweepRun, format_value, grid_groups, short_key

__all__ = ["MAX_POINTS", "GroupCurve", "group_curve", "runs_payload", "thin_indices"]

#: about the most points one aggregated (or on-demand per-run) curve keeps
MAX_POINTS = 200


def thin_indices(n: int, series: Sequence[np.ndarray], max_points: int = MAX_POINTS,
                 keep: Sequence[int] = ()) -> np.ndarray:
    """The indices (sorted, unique) of the ≤ ~``max_points`` samples a curve of ``n`` samples
    keeps: all of them when ``n ≤ max_points``; else the first and last, every index in
    ``keep`` (crossings that matter), and, in each of ``max_points // (2·len(series))``
    equal buckets, the index of the lowest and of the highest value of every series. So an
    extreme (a spike, a dip, the top and bottom of a jump) is never thinned away; at most
    ``max_points + 2 + len(keep)`` indices."""
    if n <= max_points:
        return np.arange(n)
    n_buckets = max(1, max_points // (2 * max(1, len(series))))
    bucket = np.arange(n) * n_buckets // n  # equal buckets, in order
    first = np.flatnonzero(np.r_[True, bucket[1:] != bucket[:-1]])
    parts = [np.array([0, n - 1]), np.asarray([k for k in keep if 0 <= k < n], dtype=int)]
    for s in series:
        s = np.asarray(s, dtype=float)
        for v in (np.where(np.isnan(s), np.inf, s), np.where(np.isnan(s), np.inf, -s)):
            # sorted by bucket, then value (stable: the earliest of equals), the first of each
            # bucket's block is its lowest value (of -s: its highest)
            parts.append(np.lexsort((v, bucket))[first])
    return np.unique(np.concatenate(parts))


def _matrix(runs: Sequence[SweepRun], metric: str) -> tuple[np.ndarray, np.ndarray]:
    """(epochs E: the union of the runs' evaluation epochs, values: runs × E). A run evaluated
    at other epochs than another is interpolated linearly onto E within its own span (NaN
    outside it); runs evaluated at the same epochs (a sweep's seeds) are taken exactly."""
    firsts = [np.asarray(r.epochs) for r in runs]
    same = all(len(e) == len(firsts[0]) and np.array_equal(e, firsts[0]) for e in firsts)
    E = firsts[0] if same else np.unique(np.concatenate(firsts))
    V = np.full((len(runs), E.size), np.nan)
    for i, (r, e) in enumerate(zip(runs, firsts)):
        v = np.asarray(getattr(r, metric), dtype=float)
        if same:
            V[i] = v
        else:
            inside = (E >= e[0]) & (E <= e[-1])
            V[i, inside] = np.interp(E[inside], e, v)
    return E, V


def _crossings(epochs: np.ndarray, runs: Sequence[SweepRun]) -> list[int]:
    """The index of each run's memorisation and generalisation epoch in ``epochs``, and the one
    before each (so thinning keeps the jump)."""
    keep: list[int] = []
    for r in runs:
        for ep in (r.memorised, r.generalised):
            if ep is not None:
                i = int(np.searchsorted(epochs, ep))
                keep += [i - 1, i]
    return keep


@dataclass
class GroupCurve:
    """One grid point's curve of one metric: the median over its runs (seeds) and the band from
    the lowest to the highest, at the thinned epochs, and how many epochs there were."""

    key: tuple[str, ...]
    runs: list[SweepRun]
    epochs: np.ndarray
    median: np.ndarray
    lo: np.ndarray
    hi: np.ndarray
    n_epochs: int


def group_curve(key: tuple[str, ...], runs: Sequence[SweepRun], metric: str,
                max_points: int = MAX_POINTS) -> GroupCurve:
    """The median and min–max band of ``metric`` over ``runs`` (seeds of one grid point), on
    their shared evaluation epochs thinned by :func:`thin_indices` (each run's memorisation and
    generalisation epochs, and the one before each, are kept)."""
    E, V = _matrix(runs, metric)
    med = np.nanmedian(V, axis=0)
    lo, hi = np.nanmin(V, axis=0), np.nanmax(V, axis=0)
    idx = thin_indices(E.size, [med, lo, hi], max_points, _crossings(E, runs))
    return GroupCurve(key, list(runs), E[idx], med[idx], lo[idx], hi[idx], int(E.size))


def _r(a: np.ndarray) -> list[float]:
    """Accuracies rounded to 4 decimals (well under a pixel) for the page's compact JSON."""
    return [round(float(x), 4) for x in a]


def runs_payload(sd: SweepData, max_points: int = MAX_POINTS) -> dict[str, Any]:
    """What the page embeds so every run can be drawn on demand: each run's test and train
    accuracy thinned by :func:`thin_indices` (its memorisation and generalisation kept), and
    each grid point's run ids (the index a median trace's ``meta`` holds)."""
    runs: dict[str, Any] = {}
    for r in sd.with_curves():
        te, tr = np.asarray(r.test_acc, float), np.asarray(r.train_acc, float)
        e = np.asarray(r.epochs)
        idx = thin_indices(e.size, [te, tr], max_points, _crossings(e, [r]))
        point = ", ".join(f"{short_key(k)}={format_value(v)}" for k, v in r.point.items())
        runs[r.run_id] = {"name": text(f"{r.run_id} ({point + ', ' if point else ''}seed "
                                       f"{r.seed})"),
                          "e": e[idx].tolist(), "te": _r(te[idx]), "tr": _r(tr[idx])}
    groups = [[r.run_id for r in g] for g in grid_groups(sd).values()]
    return {"runs": runs, "groups": groups}
