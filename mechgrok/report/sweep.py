"""The sweep report: phase diagrams over two swept axes, averaged over seeds, and every curve.

``write_sweep_report(sweep_dir)`` writes ``reports/sweep-<name>.html``. For the two axes shown
(the first two of the grid unless ``axes`` says otherwise), each cell of a phase diagram
aggregates the runs at that point (its seeds, and every value of any other swept axis):

* **grokking delay**: epochs from memorisation (train accuracy ≥ 99 %, held to the end) to
  generalisation (test accuracy ≥ 99 %, held), mean ± standard deviation over the runs that
  generalised; the cell says how many did (``2/3 grokked``); a cell where none did is blank.
* **final test accuracy**: mean ± standard deviation over all the cell's runs.
* **Liu et al.'s label** (confusion, memorisation, comprehension, grokking; MEASURES.md §7,
  :func:`mechgrok.probes.phases.liu_label`): the most common label, with the counts of each.

Everything comes from each run's training metrics, so a sweep trained with ``--no-analyze``
gets its phase diagrams too.

**Curves at scale.** Up to :data:`AGGREGATE_ABOVE` runs with curves, the report overlays every
run's test and train accuracy (one colour per grid point). Above it, one line per run is
unreadable (and past 10 grid points the colours repeat) and the file grows with runs × epochs,
so each grid point is drawn instead as the **median over its seeds with a shaded band from the
lowest to the highest seed** (:func:`aggregated_curves`), one panel per value of the second
drawn axis and one colour per value of the first. Each curve is thinned to about
:data:`MAX_POINTS` of the epochs its seeds were evaluated at (:func:`thin_indices`: the first
and last, each seed's memorisation and generalisation epochs, and in every bucket of epochs the
lowest and highest median and the band's extremes), so a spike or a crossing is never thinned
away. Every run stays reachable: the runs table lists each one with its numbers and a *plot*
button, and its own thinned curves travel in the page as compact JSON; clicking a run's button,
or a grid point's median curve, draws those runs in the *individual runs* figure.

A grid of one axis gets the same three measures as a line with error bars; a sweep of seeds
only gets the table and the curves.

``sweep.json`` and the runs' metrics are not trusted: :func:`mechgrok.sweep.load_sweep` and
:func:`mechgrok.store.read_metrics` check what the report uses (the sweep's name, its axes, each run's id, point, seed and state) and a damaged or
ill-shaped file is a :class:`~mechgrok.errors.RunDirError` naming it; every text from them is
escaped where it is written (HTML, and plotly's labels).
"""

from __future__ import annotations

import itertools
import json
import math
import time
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import plotly.graph_objects as go

from mechgrok.errors import MechgrokError, RunDirError
from mechgrok.report import html as H
from mechgrok.report.figures import NoData, _fig, text

LABELS = ("comprehension", "grokking", "memorisation", "confusion")
LABEL_COLOURS = ("#2ca02c", "#1f77b4", "#ff7f0e", "#d62728")
PALETTE = ("#1f77b4", "#ff7f0e", "#2ca02c", "#d62728", "#9467bd", "#8c564b", "#e377c2",
           "#7f7f7f", "#bcbd22", "#17becf")
#: above this many runs with curves the report draws each grid point's median and spread
#: instead of every run's own curve: 50 runs is 10 grid points of 5 seeds, where the palette's
#: 10 colours run out and 100 overlaid lines per figure stop being readable
AGGREGATE_ABOVE = 50
#: about the most points one aggregated (or on-demand per-run) curve keeps
MAX_POINTS = 200
DASHES = ("solid", "dash", "dot", "dashdot", "longdash", "longdashdot")


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


def _fmt(v: Any) -> str:
    if isinstance(v, float):
        return f"{v:g}"
    if isinstance(v, (list, dict)):
        return json.dumps(v)
    return str(v)


class SweepData:
    """A sweep directory as the report sees it: its axes and every run's curves and labels."""

    def __init__(self, sweep_dir: str | Path):
        from mechgrok.probes.phases import grokking_epochs, liu_label
        from mechgrok.store import METRICS_FILE, read_metrics
        from mechgrok.sweep import load_sweep

        data = load_sweep(sweep_dir)  # checked field by field: one line naming what is wrong
        self.path = Path(sweep_dir)
        self.name: str = data["name"]
        self.axes: list[tuple[str, list[Any]]] = [(a["key"], a["values"])
                                                  for a in data.get("axes") or []]
        self.seeds = data.get("seeds")
        self.runs: list[SweepRun] = []
        for r in data.get("runs") or []:
            error = r.get("error")
            run = SweepRun(r["run_id"], r.get("point", {}), r.get("seed", 0),
                           r.get("state", "pending"), error=None if error is None else str(error))
            path = Path(r["path"]) / METRICS_FILE
            metrics = read_metrics(path)
            if not metrics:
                if run.state == "done":
                    run.state = "missing"
                self.runs.append(run)
                continue
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
            self.runs.append(run)

    def with_curves(self) -> list[SweepRun]:
        return [r for r in self.runs if r.epochs]

    def pick_axes(self, axes: Sequence[str] | None) -> list[str]:
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
    grids = [[_fmt(v) for v in sd.values(a)] for a in axes]
    for key in itertools.product(*grids):
        out[key] = Cell([])
    for r in sd.with_curves():
        key = tuple(_fmt(r.point.get(a)) for a in axes)
        if key in out:
            out[key].runs.append(r)
    return out


def _spread(m: float, s: float, fmt: str) -> str:
    if not math.isfinite(m):
        return ""
    return f"{m:{fmt}} ± {s:{fmt}}" if s > 0 else f"{m:{fmt}}"


MEASURES = {"delay": "Grokking delay (epochs)", "test_acc": "Final test accuracy",
            "label": "Liu et al.'s label"}


def phase_diagram(sd: SweepData | str | Path, measure: str = "delay",
                  axes: Sequence[str] | None = None) -> go.Figure:
    """A heatmap of ``measure`` (delay | test_acc | label) over two swept axes (one axis: a line
    with error bars), aggregated over seeds and any other swept axis."""
    sd = sd if isinstance(sd, SweepData) else SweepData(sd)
    if measure not in MEASURES:
        raise MechgrokError(f"unknown measure {measure!r}; choose from {', '.join(MEASURES)}")
    ax = sd.pick_axes(axes)
    if not ax:
        raise NoData(f"sweep {sd.name} sweeps seeds only: there is no axis to draw a phase "
                     f"diagram over")
    if not sd.with_curves():
        raise NoData(f"no run of sweep {sd.name} has metrics yet")
    cs = cells(sd, ax)
    title = MEASURES[measure]
    if len(ax) == 1:
        return _line(sd, cs, ax[0], measure, title)
    xs = [_fmt(v) for v in sd.values(ax[0])]
    ys = [_fmt(v) for v in sd.values(ax[1])]
    z: list[list[float | None]] = []
    cell_text: list[list[str]] = []
    for y in ys:
        zr, tr = [], []
        for x in xs:
            c = cs[(x, y)]
            if c.n == 0:
                zr.append(None)
                tr.append("no run")
                continue
            if measure == "delay":
                m, s, k = c.delay()
                zr.append(m if math.isfinite(m) else None)
                tr.append(f"{_spread(m, s, '.0f')}<br>{k}/{c.n} grokked" if k
                          else f"0/{c.n} grokked")
            elif measure == "test_acc":
                m, s = c.test_acc()
                zr.append(m if math.isfinite(m) else None)
                tr.append(_spread(m, s, ".3f"))
            else:
                counts = c.labels()
                top = counts.most_common(1)[0][0] if counts else None
                zr.append(LABELS.index(top) if top in LABELS else None)
                tr.append("<br>".join(f"{lab} {k}/{c.n}" for lab, k in counts.most_common()))
        z.append(zr)
        cell_text.append(tr)
    fig = _fig(title, xaxis=ax[0], yaxis=ax[1], height=420)
    kw: dict[str, Any] = {}
    if measure == "label":
        n = len(LABELS)
        scale = []
        for i, col in enumerate(LABEL_COLOURS):
            scale += [[i / n, col], [(i + 1) / n, col]]
        kw = dict(colorscale=scale, zmin=-0.5, zmax=n - 0.5,
                  colorbar=dict(tickvals=list(range(n)), ticktext=list(LABELS), title="label"))
    elif measure == "test_acc":
        kw = dict(colorscale="Viridis", zmin=0.0, zmax=1.0, colorbar=dict(title="test acc"))
    else:
        kw = dict(colorscale="Magma", reversescale=True, colorbar=dict(title="epochs"))
    fig.add_heatmap(x=[text(x) for x in xs], y=[text(y) for y in ys], z=z, text=cell_text,
                    texttemplate="%{text}", hoverongaps=False,
                    hovertemplate=f"{text(ax[0])}=%{{x}}<br>{text(ax[1])}=%{{y}}<br>%{{text}}"
                                  f"<extra></extra>",
                    xgap=2, ygap=2, **kw)
    fig.update_xaxes(type="category")
    fig.update_yaxes(type="category")
    return fig


def _line(sd: SweepData, cs: dict[tuple[str, ...], Cell], axis: str, measure: str,
          title: str) -> go.Figure:
    xs = [_fmt(v) for v in sd.values(axis)]
    fig = _fig(title, xaxis=axis, yaxis=title)
    if measure == "label":
        for lab, col in zip(LABELS, LABEL_COLOURS):
            counts = [cs[(x,)].labels().get(lab, 0) for x in xs]
            if any(counts):
                fig.add_bar(x=[text(x) for x in xs], y=counts, name=lab, marker_color=col)
        fig.update_layout(barmode="stack")
        fig.update_yaxes(title_text="runs")
    else:
        ms, ss, notes = [], [], []
        for x in xs:
            c = cs[(x,)]
            if measure == "delay":
                m, s, k = c.delay()
                notes.append(f"{k}/{c.n} grokked")
            else:
                m, s = c.test_acc()
                notes.append(f"{c.n} runs")
            ms.append(m if math.isfinite(m) else None)
            ss.append(s if math.isfinite(s) else 0.0)
        fig.add_scatter(x=[text(x) for x in xs], y=ms,
                        error_y=dict(type="data", array=ss, visible=True),
                        mode="lines+markers", text=notes, name=title,
                        hovertemplate="%{x}: %{y:.4g}<br>%{text}<extra></extra>")
    fig.update_xaxes(type="category")
    return fig


def sweep_curves(sd: SweepData | str | Path, metric: str = "test_acc") -> go.Figure:
    """Every run's train or test accuracy, overlaid; one colour per grid point (seeds share it)."""
    sd = sd if isinstance(sd, SweepData) else SweepData(sd)
    runs = sd.with_curves()
    if not runs:
        raise NoData(f"no run of sweep {sd.name} has metrics yet")
    name = "Test accuracy" if metric == "test_acc" else "Train accuracy"
    fig = _fig(f"{name} of every run", yaxis=metric, height=440)
    colours: dict[str, str] = {}
    for r in runs:
        key = text(", ".join(f"{str(k).split('.', 1)[-1]}={_fmt(v)}"
                             for k, v in r.point.items()) or "all")
        first = key not in colours
        col = colours.setdefault(key, PALETTE[len(colours) % len(PALETTE)])
        fig.add_scatter(x=r.epochs, y=getattr(r, metric), mode="lines", name=key,
                        legendgroup=key, showlegend=first, line=dict(color=col, width=1.3),
                        hovertemplate=f"{text(r.run_id)} (seed {r.seed})<br>epoch %{{x}}: "
                                      f"%{{y:.3f}}<extra></extra>")
    fig.update_layout(legend=dict(orientation="v", x=1.02, xanchor="left", y=1, yanchor="top"),
                      margin=dict(r=200))
    return fig


# --- curves at scale ---------------------------------------------------------------------------


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
    keep: list[int] = []
    for r in runs:
        for ep in (r.memorised, r.generalised):
            if ep is not None:
                i = int(np.searchsorted(E, ep))
                keep += [i - 1, i]
    idx = thin_indices(E.size, [med, lo, hi], max_points, keep)
    return GroupCurve(key, list(runs), E[idx], med[idx], lo[idx], hi[idx], int(E.size))


def grid_groups(sd: SweepData) -> dict[tuple[str, ...], list[SweepRun]]:
    """The runs with curves, grouped by grid point (every axis's formatted value), grid order;
    each group's runs in the sweep's order (its seeds)."""
    keys = [k for k, _ in sd.axes]
    out: dict[tuple[str, ...], list[SweepRun]] = {
        key: [] for key in itertools.product(*[[_fmt(v) for v in sd.values(k)] for k in keys])}
    for r in sd.with_curves():
        out.setdefault(tuple(_fmt(r.point.get(k)) for k in keys), []).append(r)
    return {k: v for k, v in out.items() if v}


def _short_key(k: str) -> str:
    return str(k).split(".", 1)[-1]


def _colours(n: int) -> list[str]:
    from plotly.colors import sample_colorscale

    if n <= 1:
        return [PALETTE[0]]
    return sample_colorscale("Viridis", [0.82 * i / (n - 1) for i in range(n)])  # no pale end


def _rgba(colour: str, alpha: float) -> str:
    if colour.startswith("#"):
        r, g, b = (int(colour[i:i + 2], 16) for i in (1, 3, 5))
    else:
        r, g, b = (int(float(x)) for x in colour[colour.index("(") + 1:-1].split(",")[:3])
    return f"rgba({r},{g},{b},{alpha})"


def _r(a: np.ndarray) -> list[float]:
    """Accuracies rounded to 4 decimals (well under a pixel) for the page's compact JSON."""
    return [round(float(x), 4) for x in a]


def aggregated_curves(sd: SweepData | str | Path, metric: str = "test_acc",
                      axes: Sequence[str] | None = None, max_points: int = MAX_POINTS
                      ) -> go.Figure:
    """Each grid point's median ``metric`` over its seeds, with a band from the lowest to the
    highest seed (:func:`group_curve`): one panel per value of the second drawn axis, one colour
    per value of the first, one line style per value of any other swept axis. Each median trace's
    ``meta`` is its grid point's index in :func:`grid_groups` (the report's click handler uses
    it)."""
    from plotly.subplots import make_subplots

    from mechgrok.report.figures import HEIGHT, TEMPLATE

    sd = sd if isinstance(sd, SweepData) else SweepData(sd)
    groups = grid_groups(sd)
    if not groups:
        raise NoData(f"no run of sweep {sd.name} has metrics yet")
    keys = [k for k, _ in sd.axes]
    ax = sd.pick_axes(axes)
    name = "Test accuracy" if metric == "test_acc" else "Train accuracy"
    colour_vals = [_fmt(v) for v in sd.values(ax[0])] if ax else [""]
    panel_vals = [_fmt(v) for v in sd.values(ax[1])] if len(ax) > 1 else [""]
    others = [k for k in keys if k not in ax]
    other_combos = {c: i for i, c in enumerate(itertools.product(
        *[[_fmt(v) for v in sd.values(k)] for k in others]))}
    colours = _colours(len(colour_vals))
    cols = min(len(panel_vals), 4)
    rows = math.ceil(len(panel_vals) / cols)
    titles = [text(f"{_short_key(ax[1])} = {v}") for v in panel_vals] if len(ax) > 1 else None
    fig = make_subplots(rows=rows, cols=cols, shared_xaxes="all", shared_yaxes="all",
                        subplot_titles=titles, horizontal_spacing=0.035,
                        vertical_spacing=min(0.3 / rows, 0.12) if rows > 1 else 0.0)
    traces: list[go.Scatter] = []
    where: list[tuple[int, int]] = []
    shown: set[str] = set()
    for gi, (key, runs) in enumerate(groups.items()):
        g = group_curve(key, runs, metric, max_points)
        val = dict(zip(keys, key))
        cv = val[ax[0]] if ax else ""
        pv = val[ax[1]] if len(ax) > 1 else ""
        ci = colour_vals.index(cv) if cv in colour_vals else 0
        pi = panel_vals.index(pv) if pv in panel_vals else 0
        dash = DASHES[other_combos.get(tuple(val[k] for k in others), 0) % len(DASHES)]
        col = colours[ci % len(colours)]
        label = text(", ".join(f"{_short_key(k)}={v}" for k, v in val.items()) or "all runs")
        legend = text(f"{_short_key(ax[0])}={cv}") if ax else "median"
        # numpy arrays: plotly writes them as compact binary (float32: 4 bytes a value)
        x, f4 = g.epochs, np.float32
        traces.append(go.Scatter(
            x=np.concatenate([x, x[::-1]]), y=np.concatenate([g.hi, g.lo[::-1]]).astype(f4),
            fill="toself", mode="lines", line=dict(width=0), fillcolor=_rgba(col, 0.16),
            hoverinfo="skip", legendgroup=legend, showlegend=False, name=legend))
        traces.append(go.Scatter(
            x=x, y=g.median.astype(f4), mode="lines", name=legend, legendgroup=legend,
            showlegend=legend not in shown, line=dict(color=col, width=1.6, dash=dash),
            customdata=np.stack([g.lo, g.hi], axis=1).astype(f4), meta=gi,
            hovertemplate=f"{label} · {len(runs)} run{'s' if len(runs) != 1 else ''}<br>"
                          f"epoch %{{x}}: median %{{y:.3f}} (%{{customdata[0]:.3f}}–"
                          f"%{{customdata[1]:.3f}})<extra></extra>"))
        shown.add(legend)
        where += [(pi // cols + 1, pi % cols + 1)] * 2
    fig.add_traces(traces, rows=[w[0] for w in where], cols=[w[1] for w in where])
    fig.update_layout(template=TEMPLATE, height=max(HEIGHT, 60 + 230 * rows),
                      title=text(f"{name}: median of each grid point's seeds, band from the "
                                 f"lowest to the highest"),
                      margin=dict(l=60, r=20, t=80, b=45), hovermode="closest",
                      legend=dict(orientation="v", x=1.01, xanchor="left", y=1, yanchor="top"))
    fig.update_yaxes(range=[-0.02, 1.02])
    fig.update_yaxes(title_text=text(metric), col=1)
    fig.update_xaxes(title_text="epoch", row=rows)
    return fig


def runs_payload(sd: SweepData, max_points: int = MAX_POINTS) -> dict[str, Any]:
    """What the page embeds so every run can be drawn on demand: each run's test and train
    accuracy thinned by :func:`thin_indices` (its memorisation and generalisation kept), and
    each grid point's run ids (the index a median trace's ``meta`` holds)."""
    runs: dict[str, Any] = {}
    for r in sd.with_curves():
        te, tr = np.asarray(r.test_acc, float), np.asarray(r.train_acc, float)
        e = np.asarray(r.epochs)
        keep: list[int] = []
        for ep in (r.memorised, r.generalised):
            if ep is not None:
                i = int(np.searchsorted(e, ep))
                keep += [i - 1, i]
        idx = thin_indices(e.size, [te, tr], max_points, keep)
        point = ", ".join(f"{_short_key(k)}={_fmt(v)}" for k, v in r.point.items())
        runs[r.run_id] = {"name": text(f"{r.run_id} ({point + ', ' if point else ''}seed "
                                       f"{r.seed})"),
                          "e": e[idx].tolist(), "te": _r(te[idx]), "tr": _r(tr[idx])}
    groups = [[r.run_id for r in g] for g in grid_groups(sd).values()]
    return {"runs": runs, "groups": groups}


def _run_traces(payload: dict[str, Any], run_id: str, colour: str) -> list[go.Scatter]:
    r = payload["runs"][run_id]
    return [go.Scatter(x=r["e"], y=r[k], mode="lines", name=f"{r['name']} {what}", meta=run_id,
                       legendgroup=run_id, line=dict(color=colour, width=1.4, dash=dash),
                       hovertemplate=f"{r['name']}<br>{what} acc, epoch %{{x}}: %{{y:.3f}}"
                                     f"<extra></extra>")
            for k, what, dash in (("te", "test", "solid"), ("tr", "train", "dot"))]


def selected_runs_figure(payload: dict[str, Any]) -> go.Figure:
    """The *individual runs* figure: at first the runs of the first grid point; the page's
    script adds and removes runs (:data:`_RUNS_JS`)."""
    fig = _fig("Individual runs (test solid, train dotted)", yaxis="accuracy", height=440)
    first = payload["groups"][0] if payload["groups"] else []
    for i, rid in enumerate(first):
        fig.add_traces(_run_traces(payload, rid, PALETTE[i % len(PALETTE)]))
    fig.update_yaxes(range=[-0.02, 1.02])
    fig.update_layout(legend=dict(orientation="v", x=1.02, xanchor="left", y=1, yanchor="top"),
                      margin=dict(r=320))
    return fig


# Adds a run's two curves to #fig-runs-selected (or removes them), from the JSON in
# #sweep-runs-data; wired to the runs table's buttons and to clicks on a median curve.
_RUNS_JS = """(function(){
var el=document.getElementById("sweep-runs-data"),gd=document.getElementById("fig-runs-selected");
if(!el||!gd||!window.Plotly)return;
var D=JSON.parse(el.textContent),P=%s,next=0;
function idx(id){var o=[];(gd.data||[]).forEach(function(t,i){if(t.meta===id)o.push(i);});return o;}
function mark(id,on){document.querySelectorAll('button.plot-run').forEach(function(b){
  if(b.getAttribute("data-run")===id)b.setAttribute("aria-pressed",on?"true":"false");});}
function show(id,on){var have=idx(id);
  if(have.length){if(on!==true){Plotly.deleteTraces(gd,have);mark(id,false);}return;}
  if(on===false)return;var r=D.runs[id];if(!r)return;var c=P[next++%%P.length];
  Plotly.addTraces(gd,[["te","test","solid"],["tr","train","dot"]].map(function(k){
    return {x:r.e,y:r[k[0]],mode:"lines",name:r.name+" "+k[1],meta:id,legendgroup:id,
      line:{color:c,width:1.4,dash:k[2]},
      hovertemplate:r.name+"<br>"+k[1]+" acc, epoch %%{x}: %%{y:.3f}<extra></extra>"};}));
  mark(id,true);}
(gd.data||[]).forEach(function(t){if(typeof t.meta==="string")mark(t.meta,true);});
document.querySelectorAll('button.plot-run').forEach(function(b){b.addEventListener("click",
  function(){show(b.getAttribute("data-run"));});});
var clr=document.getElementById("runs-clear");
if(clr)clr.addEventListener("click",function(){var n=(gd.data||[]).length;
  if(n)Plotly.deleteTraces(gd,Array.from(Array(n).keys()));
  document.querySelectorAll('button.plot-run').forEach(function(b){b.setAttribute("aria-pressed","false");});});
["fig-curves-test_acc","fig-curves-train_acc"].forEach(function(f){var g=document.getElementById(f);
  if(g&&g.on)g.on("plotly_click",function(ev){var p=ev&&ev.points&&ev.points[0];
    var ids=p&&D.groups[p.data.meta];if(ids)ids.forEach(function(id){show(id,true);});});});
var q=document.getElementById("runs-filter");
if(q)q.addEventListener("input",function(){var s=q.value.toLowerCase();
  document.querySelectorAll("table.runs tr[data-run]").forEach(function(tr){
    tr.style.display=!s||tr.textContent.toLowerCase().indexOf(s)>=0?"":"none";});});
})();"""

_RUNS_CSS = ("button.plot-run{font-size:12px;padding:1px 6px;cursor:pointer}"
             "button.plot-run[aria-pressed=true]{background:#1b5fa8;color:#fff}"
             "#runs-filter{font-size:13px;padding:3px 6px;margin:4px 8px 8px 0;width:260px}")


def render_sweep_report(sweep_dir: str | Path, axes: Sequence[str] | None = None, *,
                        aggregate_above: int | None = AGGREGATE_ABOVE,
                        max_points: int = MAX_POINTS) -> str:
    """The sweep's report as an HTML string. With more than ``aggregate_above`` runs with curves
    (``None``: never) each grid point's curves are aggregated, thinned to about ``max_points``
    points, and every run is drawn on demand (see the module docstring)."""
    sd = SweepData(sweep_dir)
    aggregate = aggregate_above is not None and len(sd.with_curves()) > aggregate_above
    ax = sd.pick_axes(axes)
    keys = [k for k, _ in sd.axes]
    states = Counter(r.state for r in sd.runs)
    grid = " × ".join(f"{k} ({len(v)})" for k, v in sd.axes) or "seeds only"
    n_seeds = len(sd.seeds) if sd.seeds else 1
    rows = [("grid", f"{H._e(grid)} × {n_seeds} seed{'s' if n_seeds > 1 else ''}"),
            ("runs", H._e(", ".join(f"{k} {v}" for k, v in states.most_common()))),
            ("drawn over", H._e(" × ".join(ax) or "—")),
            ("sweep directory", f"<code>{H._e(sd.path)}</code>")]
    others = [k for k in keys if k not in ax]
    parts = [f'<section id="summary"><h2>Summary</h2><div class="card">{H._card(rows)}</div>']
    if others:
        parts.append(f'<div class="banner">Each cell aggregates the seeds and every value of '
                     f'{H._e(", ".join(others))}; <code>mechgrok report {H._e(sd.path)} --axes '
                     f'A,B</code> draws other axes.</div>')
    parts.append('</section><section id="phase"><h2>Phase diagrams</h2>')
    captions = {
        "delay": "Epochs from memorisation to generalisation (99 % accuracy, held to the end), "
                 "mean ± standard deviation over the runs of each cell that generalised; blank "
                 "where none did.",
        "test_acc": "Test accuracy at the end of training, mean ± standard deviation over the "
                    "cell's runs.",
        "label": "Liu et al.'s label of each cell's runs (comprehension: test reaches 90 % "
                 "within twice the epochs train took; grokking: later; memorisation: never; "
                 "confusion: train never does); the colour is the most common one.",
    }
    for measure in MEASURES:
        try:
            fig = phase_diagram(sd, measure, ax)
        except NoData as e:
            parts.append(f'<div class="missing">{H._e(e)}</div>')
            break
        parts.append(H.figure_html(fig, f"fig-phase-{measure}", captions[measure]))
    parts.append('</section><section id="curves"><h2>Curves</h2>')
    payload = runs_payload(sd, max_points) if aggregate else None
    if aggregate:
        n_runs = len(sd.with_curves())
        parts.append(_aggregated_section(sd, ax, others, payload, n_runs, aggregate_above,
                                         max_points))
    else:
        for metric, caption in (("test_acc", "Test accuracy of every run; one colour per grid "
                                             "point, its seeds drawn in the same colour."),
                                ("train_acc", "Train accuracy of every run: how fast each point "
                                              "memorises.")):
            try:
                parts.append(H.figure_html(sweep_curves(sd, metric), f"fig-curves-{metric}",
                                           caption))
            except NoData as e:
                parts.append(f'<div class="missing">{H._e(e)}</div>')
                break
    head = "".join(f"<th>{H._e(h)}</th>" for h in
                   [*([""] if aggregate else []), "run", *keys, "seed", "state",
                    "final test acc", "memorised", "generalised", "delay", "Liu label"])
    body = []
    for r in sd.runs:
        cells_ = [r.run_id, *[_fmt(r.point.get(k)) for k in keys], r.seed,
                  r.state if not r.error else f"{r.state}: {r.error}",
                  H._num(r.final_test_acc), r.memorised, r.generalised, r.delay, r.label]
        row = "".join(f"<td>{H._e('—' if v is None else v)}</td>" for v in cells_)
        if aggregate:  # an anchor per run, and its curves on demand
            rid = H._e(r.run_id)
            button = (f'<button type="button" class="plot-run" data-run="{rid}" '
                      f'aria-pressed="false" title="draw this run in the individual runs '
                      f'figure">plot</button>' if r.epochs else "")
            body.append(f'<tr id="{H.safe_id("run-" + r.run_id)}" data-run="{rid}"><td>'
                        f'{button}</td>{row}</tr>')
        else:
            body.append(f"<tr>{row}</tr>")
    tools = ""
    if aggregate:
        tools = ('<input id="runs-filter" type="search" placeholder="filter runs (id, value, '
                 'label…)" aria-label="filter runs"> <button type="button" id="runs-clear">'
                 'clear the individual runs figure</button>')
    parts.append(f'</section><section id="runs"><h2>Runs</h2>{tools}<table class="runs"><tr>'
                 f'{head}</tr>{"".join(body)}</table></section>')
    if aggregate:
        parts.append(f'<style>{_RUNS_CSS}</style><script type="application/json" '
                     f'id="sweep-runs-data">{H.script_json(json.dumps(payload))}</script>'
                     f'<script>{_RUNS_JS % json.dumps(list(PALETTE))}</script>')
    nav = ('<nav><a href="#summary">Summary</a> <a href="#phase">Phase diagrams</a> '
           '<a href="#curves">Curves</a> <a href="#runs">Runs</a></nav>')
    return H._page(f"mechgrok sweep: {sd.name}",
                   f"{len(sd.runs)} runs · {sd.path} · {time.strftime('%Y-%m-%d %H:%M')}",
                   nav + "".join(parts))


def _aggregated_section(sd: SweepData, ax: list[str], others: list[str],
                        payload: dict[str, Any], n_runs: int, aggregate_above: int,
                        max_points: int) -> str:
    groups = len(payload["groups"])
    where = (f"one panel per value of {ax[1]}, one colour per value of {ax[0]}" if len(ax) > 1
             else f"one colour per value of {ax[0]}" if ax else "one curve")
    if others:
        where += f", one line style per value of {', '.join(others)}"
    parts = [f'<div class="banner">{n_runs} runs in {groups} grid point'
             f'{"s" if groups != 1 else ""}: more than {aggregate_above}, so each grid '
             f'point is drawn as the median of its runs with a band from the lowest to the '
             f'highest ({H._e(where)}), each curve thinned to about {max_points} of its '
             f'evaluations with every extreme and each seed\'s memorisation and generalisation '
             f'epoch kept. Every run is in the <a href="#runs">runs table</a>: its '
             f'<b>plot</b> button, or a click on a median curve, draws those runs in the '
             f'<a href="#wrap-fig-runs-selected">individual runs</a> figure.</div>']
    for metric, caption in (("test_acc", "Test accuracy: the median over each grid point's "
                                         "seeds, shaded from the lowest seed to the highest. "
                                         "Click a curve to draw its runs below."),
                            ("train_acc", "Train accuracy, the same way: how fast each point "
                                          "memorises.")):
        try:
            parts.append(H.figure_html(aggregated_curves(sd, metric, ax, max_points),
                                       f"fig-curves-{metric}", caption))
        except NoData as e:
            parts.append(f'<div class="missing">{H._e(e)}</div>')
            return "".join(parts)
    parts.append(H.figure_html(selected_runs_figure(payload), "fig-runs-selected",
                               "Individual runs, thinned the same way: at first the runs of "
                               "the first grid point; add or remove runs with the plot buttons "
                               "of the runs table or by clicking a median curve above."))
    return "".join(parts)


def write_sweep_report(sweep_dir: str | Path, out: str | Path | None = None,
                       reports_dir: str | Path = "reports",
                       axes: Sequence[str] | None = None, *,
                       aggregate_above: int | None = AGGREGATE_ABOVE,
                       max_points: int = MAX_POINTS) -> Path:
    """Write the sweep's report (``reports/sweep-<name>.html`` by default); returns its path.
    ``aggregate_above`` and ``max_points``: see :func:`render_sweep_report`."""
    from mechgrok.sweep import load_sweep

    html_text = render_sweep_report(sweep_dir, axes, aggregate_above=aggregate_above,
                                    max_points=max_points)
    path = Path(out) if out is not None else (
        Path(reports_dir) / f"sweep-{load_sweep(sweep_dir)['name']}.html")
    H._write(path, html_text)
    return path
