"""What every figure shares: the look, plotly-safe text, an empty figure, :class:`NoData`, and the
phase bands drawn behind a run's curves.

plotly renders a subset of HTML in titles, legends, labels and hover text, so every text from a
file or a user (run ids, probe and value names, a verdict) goes through :func:`text` first.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import plotly.graph_objects as go

from mechgrok.errors import MechgrokError
from mechgrok.report.data import RunData
from mechgrok.store import Run

__all__ = [
    "array_history",
    "HEIGHT",
    "PHASE_COLOURS",
    "TEMPLATE",
    "TEST",
    "TRAIN",
    "NoData",
    "final_array",
    "need_analysis",
    "new_figure",
    "run_data",
    "shade_phases",
    "text",
    "why_missing",
]

TEMPLATE = "plotly_white"
HEIGHT = 380
TRAIN, TEST = "#1f77b4", "#d62728"
PHASE_COLOURS = {"memorisation": "rgba(31,119,180,0.10)",
                 "circuit formation": "rgba(255,127,14,0.12)",
                 "cleanup": "rgba(44,160,44,0.12)"}


class NoData(MechgrokError):
    """The figure has nothing to draw for this run (the message says why)."""


def run_data(run: RunData | Run | str | Path) -> RunData:
    """``run`` as the report reads it (a :class:`RunData` is taken as it is)."""
    return run if isinstance(run, RunData) else RunData(run)


def text(s: Any) -> str:
    """``s`` as plotly text that shows literally: ``&``, ``<`` and ``>`` as the entities plotly
    decodes (so no tag, link or style in ``s`` is rendered), a lone surrogate as '?'."""
    out = str(s).replace("&", "&amp;").replace("<", "&lt;").replace(">", "&gt;")
    return out.encode("utf-8", "replace").decode("utf-8")


def new_figure(title: str, xaxis: str = "epoch", yaxis: str = "", height: int = HEIGHT
               ) -> go.Figure:
    """An empty figure; ``title`` and the axis titles are plain text (escaped here)."""
    fig = go.Figure()
    fig.update_layout(template=TEMPLATE, title=text(title), height=height,
                      margin=dict(l=60, r=20, t=50, b=45),
                      legend=dict(orientation="h", yanchor="bottom", y=1.0, xanchor="right", x=1))
    fig.update_xaxes(title_text=text(xaxis))
    fig.update_yaxes(title_text=text(yaxis))
    return fig


def need_analysis(d: RunData, what: str) -> None:
    """:class:`NoData` unless the run has measures (``what`` names the figure's subject)."""
    if not d.analysed:
        raise NoData(f"{what}: run {d.id} has no measures yet; `mechgrok analyze {d.run.path}` "
                     f"computes them")


def why_missing(d: RunData, probe: str, what: str) -> str:
    """Why ``probe``'s values are not there: it did not apply (and the reason it gave), or it
    was not run (and the command that runs it)."""
    for r in reversed(d.table):
        if r.get(f"{probe}.status") == "n/a":
            rec = _record_reason(d, r["epoch"], probe)
            return f"{what}: n/a for run {d.id}" + (f" ({rec})" if rec else "")
    return (f"{what}: no `{probe}` measures in run {d.id}; `mechgrok analyze {d.run.path} "
            f"--probe {probe}` computes them")


def _record_reason(d: RunData, epoch: int, probe: str) -> str | None:
    rec = d.records.get((epoch, probe))
    return str(rec["reason"]) if rec and rec.get("reason") is not None else None


def array_history(d: RunData, name: str, what: str) -> tuple[list[int], np.ndarray]:
    """(epochs, values ``(epochs, n)``) of the 1-D array ``probe.name`` over the analysed
    checkpoints (at most ``MAX_HEATMAP_EPOCHS``), or :class:`NoData` saying why not."""
    from mechgrok.report.data import MAX_HEATMAP_EPOCHS

    need_analysis(d, what)
    epochs, z = d.array_series(name, MAX_HEATMAP_EPOCHS)
    if z is None:
        raise NoData(why_missing(d, name.split(".")[0], what))
    d.check_array(name, epochs[-1], z[-1], 1)
    return epochs, z


def final_array(d: RunData, name: str, what: str, ndim: int = 1) -> tuple[int, np.ndarray]:
    """The last analysed checkpoint's array ``probe.name`` (``ndim`` dimensions, else the
    arrays file was altered: :class:`RunDirError`), or :class:`NoData` saying why."""
    need_analysis(d, what)
    epoch, v = d.final_array(name)
    if epoch is None or v is None:
        raise NoData(why_missing(d, name.split(".", 1)[0], what))
    d.check_array(name, epoch, v, ndim)
    return epoch, v


def _phase_bands(d: RunData) -> list[tuple[str, float, float]]:
    ph = d.summary.get("phases") or {}
    first = d.checkpoints[0].epoch if d.checkpoints else 0
    bounds = [("memorisation", first, ph.get("memorisation_end")),
              ("circuit formation", ph.get("memorisation_end"), ph.get("circuit_formation_end")),
              ("cleanup", ph.get("circuit_formation_end"), ph.get("cleanup_end"))]
    return [(n, a, b) for n, a, b in bounds if a is not None and b is not None and b > a]


def shade_phases(fig: go.Figure, d: RunData, row: int | None = None, col: int | None = None
                 ) -> go.Figure:
    """Shade the detected phases and mark the grokking epoch (from the analysis summary, or from
    the training metrics when the run has not been analysed)."""
    kw = {} if row is None else {"row": row, "col": col}
    bands = _phase_bands(d)
    span = (d.metrics[-1]["epoch"] - d.metrics[0]["epoch"]) if d.metrics else 0
    for name, a, b in bands:
        label = {} if span <= 0 or (b - a) < 0.12 * span else dict(
            annotation_text=name, annotation_position="top left", annotation_font_size=10)
        fig.add_vrect(x0=a, x1=b, fillcolor=PHASE_COLOURS[name], line_width=0, layer="below",
                      **label, **kw)
    grok = (d.summary.get("phases") or {}).get("grokking_epoch")
    if grok is None:
        from mechgrok.probes.phases import grokking_epochs

        grok = grokking_epochs(d.metrics)["test_99"]
    if grok is not None:
        fig.add_vline(x=grok, line_dash="dash", line_color="#555",
                      annotation_text=f"grokked {grok}", annotation_position="bottom right",
                      annotation_font_size=10, **kw)
    return fig
