"""The sweep report's figures: phase diagrams over two swept axes (one axis: a line with error
bars), every run's curves overlaid, each grid point's median and band, and the *individual runs*
figure the page fills on demand."""

from __future__ import annotations

import itertools
import math
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import plotly.graph_objects as go

from mechgrok.errors import MechgrokError
from mechgrok.report.figures.base import HEIGHT, TEMPLATE, NoData, new_figure, text
from mechgrok.report.sweep.data import (
    Cell,
    SweepData,
    cells,
    format_value,
    grid_groups,
    short_key,
)
from mechgrok.report.sweep.thinning import MAX_POINTS, group_curve

__all__ = ["DASHES", "LABELS", "LABEL_COLOURS", "MEASURES", "PALETTE", "aggregated_curves",
           "phase_diagram", "selected_runs_figure", "sweep_curves"]

LABELS = ("comprehension", "grokking", "memorisation", "confusion")
LABEL_COLOURS = ("#2ca02c", "#1f77b4", "#ff7f0e", "#d62728")
PALETTE = ("#1f77b4", "#ff7f0e", "#2ca02c", "#d62728", "#9467bd", "#8c564b", "#e377c2",
           "#7f7f7f", "#bcbd22", "#17becf")
DASHES = ("solid", "dash", "dot", "dashdot", "longdash", "longdashdot")
MEASURES = {"delay": "Grokking delay (epochs)", "test_acc": "Final test accuracy",
            "label": "Liu et al.'s label"}


def _spread(m: float, s: float, fmt: str) -> str:
    if not math.isfinite(m):
        return ""
    return f"{m:{fmt}} ± {s:{fmt}}" if s > 0 else f"{m:{fmt}}"


def _cell_value(c: Cell, measure: str) -> tuple[float | None, str]:
    """One heatmap cell: its value (None: blank) and its text."""
    if c.n == 0:
        return None, "no run"
    if measure == "delay":
        m, s, k = c.delay()
        return (m if math.isfinite(m) else None,
                f"{_spread(m, s, '.0f')}<br>{k}/{c.n} grokked" if k else f"0/{c.n} grokked")
    if measure == "test_acc":
        m, s = c.test_acc()
        return m if math.isfinite(m) else None, _spread(m, s, ".3f")
    counts = c.labels()
    top = counts.most_common(1)[0][0] if counts else None
    return (LABELS.index(top) if top in LABELS else None,
            "<br>".join(f"{lab} {k}/{c.n}" for lab, k in counts.most_common()))


def _heatmap_style(measure: str) -> dict[str, Any]:
    if measure == "label":
        n = len(LABELS)
        scale = []
        for i, col in enumerate(LABEL_COLOURS):
            scale += [[i / n, col], [(i + 1) / n, col]]
        return dict(colorscale=scale, zmin=-0.5, zmax=n - 0.5,
                    colorbar=dict(tickvals=list(range(n)), ticktext=list(LABELS), title="label"))
    if measure == "test_acc":
        return dict(colorscale="Viridis", zmin=0.0, zmax=1.0, colorbar=dict(title="test acc"))
    return dict(colorscale="Magma", reversescale=True, colorbar=dict(title="epochs"))


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
    xs = [format_value(v) for v in sd.values(ax[0])]
    ys = [format_value(v) for v in sd.values(ax[1])]
    grid = [[_cell_value(cs[(x, y)], measure) for x in xs] for y in ys]
    fig = new_figure(title, xaxis=ax[0], yaxis=ax[1], height=420)
    fig.add_heatmap(x=[text(x) for x in xs], y=[text(y) for y in ys],
                    z=[[v for v, _ in row] for row in grid],
                    text=[[t for _, t in row] for row in grid],
                    texttemplate="%{text}", hoverongaps=False,
                    hovertemplate=f"{text(ax[0])}=%{{x}}<br>{text(ax[1])}=%{{y}}<br>%{{text}}"
                                  f"<extra></extra>",
                    xgap=2, ygap=2, **_heatmap_style(measure))
    fig.update_xaxes(type="category")
    fig.update_yaxes(type="category")
    return fig


def _line(sd: SweepData, cs: dict[tuple[str, ...], Cell], axis: str, measure: str,
          title: str) -> go.Figure:
    xs = [format_value(v) for v in sd.values(axis)]
    fig = new_figure(title, xaxis=axis, yaxis=title)
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
    fig = new_figure(f"{name} of every run", yaxis=metric, height=440)
    colours: dict[str, str] = {}
    for r in runs:
        key = text(", ".join(f"{short_key(k)}={format_value(v)}"
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


def aggregated_curves(sd: SweepData | str | Path, metric: str = "test_acc",
                      axes: Sequence[str] | None = None, max_points: int = MAX_POINTS
                      ) -> go.Figure:
    """Each grid point's median ``metric`` over its seeds, with a band from the lowest to the
    highest seed (:func:`~mechgrok.report.sweep.thinning.group_curve`): one panel per value of
    the second drawn axis, one colour per value of the first, one line style per value of any
    other swept axis. Each median trace's ``meta`` is its grid point's index in
    :func:`~mechgrok.report.sweep.data.grid_groups` (the report's click handler uses it)."""
    from plotly.subplots import make_subplots

    sd = sd if isinstance(sd, SweepData) else SweepData(sd)
    groups = grid_groups(sd)
    if not groups:
        raise NoData(f"no run of sweep {sd.name} has metrics yet")
    keys = [k for k, _ in sd.axes]
    ax = sd.pick_axes(axes)
    name = "Test accuracy" if metric == "test_acc" else "Train accuracy"
    colour_vals = [format_value(v) for v in sd.values(ax[0])] if ax else [""]
    panel_vals = [format_value(v) for v in sd.values(ax[1])] if len(ax) > 1 else [""]
    others = [k for k in keys if k not in ax]
    other_combos = {c: i for i, c in enumerate(itertools.product(
        *[[format_value(v) for v in sd.values(k)] for k in others]))}
    colours = _colours(len(colour_vals))
    cols = min(len(panel_vals), 4)
    rows = math.ceil(len(panel_vals) / cols)
    titles = [text(f"{short_key(ax[1])} = {v}") for v in panel_vals] if len(ax) > 1 else None
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
        label = text(", ".join(f"{short_key(k)}={v}" for k, v in val.items()) or "all runs")
        legend = text(f"{short_key(ax[0])}={cv}") if ax else "median"
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


def _run_traces(payload: dict[str, Any], run_id: str, colour: str) -> list[go.Scatter]:
    """One run's test (solid) and train (dotted) accuracy from the page's payload
    (:func:`~mechgrok.report.sweep.thinning.runs_payload`)."""
    r = payload["runs"][run_id]
    return [go.Scatter(x=r["e"], y=r[k], mode="lines", name=f"{r['name']} {what}", meta=run_id,
                       legendgroup=run_id, line=dict(color=colour, width=1.4, dash=dash),
                       hovertemplate=f"{r['name']}<br>{what} acc, epoch %{{x}}: %{{y:.3f}}"
                                     f"<extra></extra>")
            for k, what, dash in (("te", "test", "solid"), ("tr", "train", "dot"))]


def selected_runs_figure(payload: dict[str, Any]) -> go.Figure:
    """The *individual runs* figure: at first the runs of the first grid point; the page's
    script adds and removes runs (:mod:`mechgrok.report.sweep.html`)."""
    fig = new_figure("Individual runs (test solid, train dotted)", yaxis="accuracy", height=440)
    first = payload["groups"][0] if payload["groups"] else []
    for i, rid in enumerate(first):
        fig.add_traces(_run_traces(payload, rid, PALETTE[i % len(PALETTE)]))
    fig.update_yaxes(range=[-0.02, 1.02])
    fig.update_layout(legend=dict(orientation="v", x=1.02, xanchor="left", y=1, yanchor="top"),
                      margin=dict(r=320))
    return fig
