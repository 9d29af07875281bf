"""Numerical stability: softmax collapse and naive loss minimisation."""

from __future__ import annotations

from typing import Any

import plotly.graph_objects as go
from plotly.subplots import make_subplots

from mechgrok.report.figures.base import (
    HEIGHT,
    TEMPLATE,
    NoData,
    need_analysis,
    new_figure,
    run_data,
    shade_phases,
    text,
    why_missing,
)
from mechgrok.report.figures.registry import figure

__all__ = ["collapse_curves", "nlm_alignment"]

_DTYPE_COLOURS = {"float32": "#d62728", "float64": "#1f77b4"}


def _dtype(name: str) -> str | None:
    """The float type a collapse value's name ends with, if any."""
    return next((dt for dt in ("float32", "float64") if name.endswith(dt)), None)


@figure("collapse", "Softmax collapse", "Samples whose softmax sums to exactly 1 get no gradient: "
        "a high float32 fraction with a low float64 one is softmax collapse, not convergence.",
        probes=("collapse",))
def collapse_curves(run: Any) -> go.Figure:
    d = run_data(run)
    need_analysis(d, "softmax collapse")
    names = d.probes_with_values().get("collapse")
    if not names:
        raise NoData(why_missing(d, "collapse", "softmax collapse"))
    fig = make_subplots(rows=1, cols=2, subplot_titles=(
        "collapsed / zero-loss fraction (train)", "logit gap and norm"))
    for n in names:
        e, v = d.series(f"collapse.{n}")
        if not len(e):
            continue
        dt = _dtype(n)
        if n.startswith(("sc_fraction", "zero_loss_fraction")):
            colour = None if dt is None else _DTYPE_COLOURS[dt]
            fig.add_scatter(x=e, y=v, name=text(n), mode="lines", row=1, col=1,
                            line=dict(color=colour, dash="solid" if n.startswith("sc") else "dot"))
        elif n.startswith(("gap_", "logit_norm")):
            fig.add_scatter(x=e, y=v, name=text(n), mode="lines", row=1, col=2)
    fig.update_layout(template=TEMPLATE, height=HEIGHT, title="Softmax collapse",
                      margin=dict(l=60, r=20, t=70, b=45))
    fig.update_xaxes(title_text="epoch")
    return fig


@figure("nlm", "Softmax collapse", "Near +1 the gradient only scales the weights up (naive loss "
        "minimisation): training has stopped learning features.", probes=("collapse",))
def nlm_alignment(run: Any) -> go.Figure:
    d = run_data(run)
    need_analysis(d, "naive loss minimisation")
    e, v = d.series("collapse.nlm_cosine")
    if not len(e):
        raise NoData(why_missing(d, "collapse", "naive-loss-minimisation alignment"))
    fig = new_figure("Naive loss minimisation: cos(−∇L, θ)", yaxis="cosine")
    fig.add_scatter(x=e, y=v, name="all parameters", mode="lines", line_color="#444")
    fig.update_yaxes(range=[-1.05, 1.05])
    return shade_phases(fig, d)
