"""Curves over training: loss and accuracy, the progress measures (restricted and excluded loss,
weight norm, Gini coefficients), and the scalars of any probe without a figure of its own."""

from __future__ import annotations

from typing import Any

import numpy as np
import plotly.graph_objects as go

from mechgrok.report.figures.base import (
    TEST,
    TRAIN,
    NoData,
    need_analysis,
    new_figure,
    run_data,
    shade_phases,
    text,
    why_missing,
)
from mechgrok.report.figures.registry import FOURIER_ALGEBRAS, drawn_probes, figure

__all__ = ["accuracy_curves", "gini_curves", "loss_curves", "other_probes", "probe_scalars",
           "restricted_excluded", "restricted_loss", "weight_norm"]


@figure("loss", "Training", "Grokking is the gap between the two curves: train loss falls "
        "early, test loss stays high for a long time, then drops. Shaded bands are the detected "
        "phases: memorisation (blue), circuit formation (orange), cleanup (green).",
        probes=("loss",), note_unanalysed=True)
def loss_curves(run: Any) -> go.Figure:
    d = run_data(run)
    fig = new_figure("Loss", yaxis="cross-entropy (log)")
    for key, name, colour in (("train_loss", "train", TRAIN), ("test_loss", "test", TEST)):
        e, v = d.metric(key)
        fig.add_scatter(x=e, y=np.maximum(v, 1e-12), name=name, line_color=colour, mode="lines")
    if not len(d.metric("train_loss")[0]):
        raise NoData(f"run {d.id} has no evaluations yet")
    fig.update_yaxes(type="log", exponentformat="power")
    return shade_phases(fig, d)


@figure("accuracy", "Training", "Train accuracy reaches 100 % first (memorisation); the dashed "
        "line marks where test accuracy reaches 99 % and stays there.", note_unanalysed=True)
def accuracy_curves(run: Any) -> go.Figure:
    d = run_data(run)
    fig = new_figure("Accuracy", yaxis="accuracy")
    for key, name, colour in (("train_acc", "train", TRAIN), ("test_acc", "test", TEST)):
        e, v = d.metric(key)
        fig.add_scatter(x=e, y=v, name=name, line_color=colour, mode="lines")
    if not len(d.metric("train_acc")[0]):
        raise NoData(f"run {d.id} has no evaluations yet")
    fig.update_yaxes(range=[-0.02, 1.02])
    return shade_phases(fig, d)


@figure("restricted", "Progress measures", "Restricted loss keeps only the key frequencies and "
        "falls before test loss does; excluded loss removes them and rises as the Fourier circuit "
        "forms, while train loss stays low.", probes=("restricted",), algebras=FOURIER_ALGEBRAS)
def restricted_loss(run: Any) -> go.Figure:
    return restricted_excluded(run_data(run), "restricted", "Restricted and excluded loss",
                               "key freqs only", "key freqs removed")


def restricted_excluded(d: Any, probe: str, title: str, kept: str, removed: str) -> go.Figure:
    """``probe``'s restricted and excluded loss (its ``restricted_loss``/``excluded_loss``
    columns) over training, beside the train and test loss, log scale: the one figure of the
    Fourier, irreps and 2-D readings (``kept``/``removed`` say what the two keep and remove)."""
    what = f"restricted and excluded loss ({probe})"
    need_analysis(d, what)
    r_e, r = d.series(f"{probe}.restricted_loss")
    x_e, x = d.series(f"{probe}.excluded_loss")
    if not len(r_e):
        raise NoData(why_missing(d, probe, what))
    fig = new_figure(title, yaxis="cross-entropy (log)")
    for key, name, colour in (("test_loss", "test", TEST), ("train_loss", "train", TRAIN)):
        e, v = d.metric(key)
        fig.add_scatter(x=e, y=np.maximum(v, 1e-12), name=name, mode="lines", line_color=colour)
    fig.add_scatter(x=r_e, y=np.maximum(r, 1e-12), name=f"restricted ({kept})",
                    mode="lines", line_color="#2ca02c")
    fig.add_scatter(x=x_e, y=np.maximum(x, 1e-12), name=f"excluded ({removed})",
                    mode="lines", line_color="#9467bd")
    fig.update_yaxes(type="log", exponentformat="power")
    return shade_phases(fig, d)


@figure("weights", "Progress measures", "Weight decay shrinks the weights once the generalising "
        "circuit can replace memorisation; the fall is steepest during cleanup.",
        probes=("weights",), note_unanalysed=True)
def weight_norm(run: Any) -> go.Figure:
    d = run_data(run)
    e, v = d.metric("sum_sq_weights")
    if not len(e):
        raise NoData(f"run {d.id} has no weight norms in its metrics")
    fig = new_figure("Sum of squared weights", yaxis="Σ θ²")
    fig.add_scatter(x=e, y=v, name="Σ θ²", mode="lines", line_color="#444")
    return shade_phases(fig, d)


@figure("gini", "Progress measures", "Gini coefficients rise as the embedding and the "
        "neuron-logit map concentrate on a few frequencies (1 would be a single one).",
        probes=("gini",), algebras=FOURIER_ALGEBRAS)
def gini_curves(run: Any) -> go.Figure:
    d = run_data(run)
    need_analysis(d, "Gini coefficients")
    fig = new_figure("Gini coefficients of Fourier norms", yaxis="Gini")
    any_ = False
    for key, name in (("gini.embedding", "embedding"), ("gini.logit_map", "neuron-logit map")):
        e, v = d.series(key)
        if len(e):
            any_ = True
            fig.add_scatter(x=e, y=v, name=name, mode="lines")
    if not any_:
        raise NoData(why_missing(d, "gini", "Gini coefficients"))
    return shade_phases(fig, d)


# --- any other probe -----------------------------------------------------------------------


def probe_scalars(run: Any, probe: str) -> go.Figure:
    """Every scalar value of one probe against epoch (user probes get this automatically)."""
    d = run_data(run)
    names = d.probes_with_values().get(probe)
    if not names:
        raise NoData(why_missing(d, probe, f"probe {probe!r}"))
    fig = new_figure(f"Probe {probe}", yaxis="value")
    for n in names:
        e, v = d.series(f"{probe}.{n}")
        if len(e):
            fig.add_scatter(x=e, y=v, name=text(n),
                            mode="lines+markers" if len(e) < 30 else "lines")
    return shade_phases(fig, d)


def other_probes(run: Any) -> list[str]:
    """Probes with scalar values that have no figure of their own (:func:`drawn_probes`)."""
    drawn = drawn_probes()
    return [p for p in run_data(run).probes_with_values() if p not in drawn]
