"""A group task in its irreducible representations (the ``irreps`` probe): logit similarity per
irrep over training, restricted and excluded loss over the final key irreps, and where each part
of the network lives by irrep at the end."""

from __future__ import annotations

from typing import Any

import numpy as np
import plotly.graph_objects as go

from mechgrok.report.data import RunData
from mechgrok.report.figures.base import (
    NoData,
    array_history,
    final_array,
    new_figure,
    run_data,
    shade_phases,
    text,
)
from mechgrok.report.figures.curves import restricted_excluded
from mechgrok.report.figures.registry import IRREP_ALGEBRAS, figure

__all__ = ["irrep_losses", "irrep_similarity", "irrep_variance"]

_MAX_LINES = 12  # more irreps than this (a cyclic group's frequencies) are drawn as a heatmap


def _irrep_labels(d: RunData, n: int) -> tuple[list[str], set[str]]:
    """The irreps' names with their aliases (from the analysis summary) and the final keys."""
    s = (d.summary.get("probes") or {}).get("irreps") or {}
    found = s.get("irreps")
    per: dict[str, Any] = found if isinstance(found, dict) else {}
    names = list(per)[:n] if len(per) == n else [f"irrep {i}" for i in range(n)]
    labels = [f"{k} ({per[k]['alias']}, d={per[k].get('dim')})"
              if isinstance(per.get(k), dict) and per[k].get("alias") else k for k in names]
    final = s.get("final_key")
    keys = {str(k) for k in final} if isinstance(final, list) else set()
    return labels, {lab for lab, k in zip(labels, names) if k in keys}


@figure("irrep_similarity", "Representations", "How much of the logits each irreducible "
        "representation carries (Chughtai et al.'s logit similarity, a cosine): a network that "
        "generalises concentrates on a few key irreps (thick lines).", probes=("irreps",), algebras=IRREP_ALGEBRAS)
def irrep_similarity(run: Any) -> go.Figure:
    d = run_data(run)
    epochs, z = array_history(d, "irreps.similarity", "irreps' logit similarity")
    labels, keys = _irrep_labels(d, z.shape[1])
    if z.shape[1] > _MAX_LINES:
        fig = new_figure("Logit similarity per irrep over training", yaxis="irrep", height=460)
        fig.add_heatmap(x=epochs, y=[text(v) for v in labels], z=z.T, colorscale="Viridis",
                        colorbar=dict(title="similarity"),
                        hovertemplate="epoch %{x}<br>%{y}<br>%{z:.3f}<extra></extra>")
        return fig
    fig = new_figure("Logit similarity per irrep over training", yaxis="logit similarity")
    for i, lab in enumerate(labels):
        fig.add_scatter(x=epochs, y=z[:, i], name=text(lab), mode="lines",
                        line=dict(width=3 if lab in keys else 1.2))
    fig.update_layout(legend=dict(orientation="v", x=1.02, y=1, xanchor="left"))
    return shade_phases(fig, d)


@figure("irrep_losses", "Representations", "Restricted loss keeps only the final key irreps' "
        "directions (all pairs); excluded loss removes them (train pairs). A circuit in those "
        "irreps: restricted loss falls with the test loss, excluded loss rises.",
        probes=("irreps",), algebras=IRREP_ALGEBRAS)
def irrep_losses(run: Any) -> go.Figure:
    d = run_data(run)
    s = (d.summary.get("probes") or {}).get("irreps") or {}
    if s and not s.get("final_key"):
        raise NoData(f"the final checkpoint of run {d.id} has no key irreps (it formed no "
                     f"circuit in {s.get('group')}'s irreps): restricted and excluded loss over "
                     f"them are not defined")
    return restricted_excluded(d, "irreps", "Restricted and excluded loss over the final key "
                               "irreps", "key irreps only", "key irreps removed")


@figure("irrep_variance", "Representations", "Where each part of the network lives at the "
        "end: the share of the embedding, the neurons (as functions of the answer) and the "
        "unembedding in each irrep's span.", probes=("irreps",), algebras=IRREP_ALGEBRAS)
def irrep_variance(run: Any) -> go.Figure:
    d = run_data(run)
    parts = (("embed_var", "embedding"), ("neuron_var", "neurons"),
             ("unembed_var", "unembedding"))
    epoch, first = final_array(d, "irreps.embed_var", "variance explained per irrep")
    labels, keys = _irrep_labels(d, len(first))
    shown = [text(f"★ {lab}" if lab in keys else lab) for lab in labels]  # ★: a final key irrep
    fig = new_figure(f"Variance explained per irrep at epoch {epoch} (★: final key irreps)",
                     xaxis="irrep", yaxis="share of squared norm")
    for key, name in parts:
        _, v = final_array(d, f"irreps.{key}", f"{name} variance per irrep")
        fig.add_bar(x=shown, y=np.asarray(v), name=name,
                    hovertemplate="%{x}<br>%{y:.3f}<extra>" + name + "</extra>")
    fig.update_layout(barmode="group",
                      legend=dict(orientation="v", x=1.02, y=1, xanchor="left"))
    return fig
