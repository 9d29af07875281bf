"""Several runs in one figure: a training metric, or a measures-table column, overlaid."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np
import plotly.graph_objects as go

from mechgrok.errors import MechgrokError
from mechgrok.report.figures.base import NoData, new_figure, run_data, text

__all__ = ["COMPARE_METRICS", "compare_curves", "compare_series"]

#: The training metrics a comparison overlays: metric → (title, drawn on a log scale).
COMPARE_METRICS = {"test_acc": ("Test accuracy", False), "train_acc": ("Train accuracy", False),
                   "test_loss": ("Test loss", True), "train_loss": ("Train loss", True),
                   "sum_sq_weights": ("Sum of squared weights", False)}


def compare_curves(runs: Sequence[Any], metric: str = "test_acc") -> go.Figure:
    """One training metric of several runs, overlaid."""
    if metric not in COMPARE_METRICS:
        raise MechgrokError(f"unknown metric {metric!r}; choose from {sorted(COMPARE_METRICS)}")
    title, log = COMPARE_METRICS[metric]
    fig = new_figure(title, yaxis=metric + (" (log)" if log else ""))
    for r in runs:
        d = run_data(r)
        e, v = d.metric(metric)
        fig.add_scatter(x=e, y=np.maximum(v, 1e-12) if log else v, name=text(d.id),
                        mode="lines")
    if log:
        fig.update_yaxes(type="log", exponentformat="power")
    return fig


def compare_series(runs: Sequence[Any], column: str, title: str, log: bool = False) -> go.Figure:
    """One measures-table column (``probe.name``) of several runs, overlaid."""
    fig = new_figure(title, yaxis=column)
    got = False
    for r in runs:
        d = run_data(r)
        e, v = d.series(column)
        if len(e):
            got = True
            fig.add_scatter(x=e, y=np.maximum(v, 1e-12) if log else v, name=text(d.id),
                            mode="lines")
    if not got:
        raise NoData(f"none of the runs has `{column}` measures")
    if log:
        fig.update_yaxes(type="log", exponentformat="power")
    return fig
