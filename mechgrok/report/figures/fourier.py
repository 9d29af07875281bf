"""Fourier pictures and neurons: the embedding's Fourier norms over training and at the end, the
neuron-frequency clusters, and the neuron-logit map in the Fourier basis."""

from __future__ import annotations

from typing import Any

import numpy as np
import plotly.graph_objects as go

from mechgrok.probes.base import fourier_op
from mechgrok.report.data import RunData, finite
from mechgrok.report.figures.base import (
    NoData,
    array_history,
    final_array,
    new_figure,
    run_data,
)
from mechgrok.report.figures.registry import FOURIER_ALGEBRAS, figure
from mechgrok.tasks import get_task

__all__ = ["fourier_final", "fourier_heatmap", "neuron_clusters", "neuron_logit_map"]


def _key_freqs(d: RunData) -> list[int]:
    kf = d.summary.get("key_frequencies") or {}
    v = kf.get("neurons")
    return [k for k in v if isinstance(k, int)] if isinstance(v, list) else []


def _key_frequency_bars(d: RunData, v: np.ndarray, title: str, yaxis: str, hover: str
                        ) -> go.Figure:
    """One bar per frequency k = 1 … K, the run's key frequencies in red."""
    keys = set(_key_freqs(d))
    k = np.arange(1, len(v) + 1)
    fig = new_figure(title, xaxis="frequency k", yaxis=yaxis)
    fig.add_bar(x=k, y=v, marker_color=["#d62728" if int(i) in keys else "#7f7f7f" for i in k],
                hovertemplate=f"k = %{{x}}<br>{hover}<extra></extra>", name=yaxis)
    fig.update_layout(showlegend=False)
    return fig


@figure("fourier_heatmap", "Fourier", "Each row is one frequency: look for a few rows that "
        "brighten as the model generalises while the rest fade.", probes=("fourier_embed",), algebras=FOURIER_ALGEBRAS)
def fourier_heatmap(run: Any) -> go.Figure:
    d = run_data(run)
    epochs, z = array_history(d, "fourier_embed.freq_norms", "embedding Fourier norms")
    K = z.shape[1]
    fig = new_figure("Embedding Fourier norms over training", yaxis="frequency k", height=420)
    fig.add_heatmap(x=epochs, y=np.arange(1, K + 1), z=z.T, colorscale="Viridis",
                    colorbar=dict(title="norm"),
                    hovertemplate="epoch %{x}<br>k = %{y}<br>norm %{z:.3g}<extra></extra>")
    return fig


@figure("fourier_final", "Fourier", "A sparse spectrum at the end of training; key frequencies "
        "(neuron-cluster rule) in red.", probes=("fourier_embed",), algebras=FOURIER_ALGEBRAS)
def fourier_final(run: Any) -> go.Figure:
    d = run_data(run)
    epoch, v = final_array(d, "fourier_embed.freq_norms", "embedding Fourier norms")
    return _key_frequency_bars(d, v, f"Embedding Fourier norms at epoch {epoch}", "norm",
                               "norm %{y:.3g}")


@figure("clusters", "Fourier", "Neurons that are explained by one frequency, grouped by it; a "
        "handful of large clusters is the Fourier multiplication algorithm.",
        probes=("key_freqs",), algebras=FOURIER_ALGEBRAS)
def neuron_clusters(run: Any) -> go.Figure:
    d = run_data(run)
    epoch, sizes = final_array(d, "key_freqs.cluster_sizes", "neuron-frequency clusters")
    frac = next((r["key_freqs.frac_clustered"] for r in reversed(d.table)
                 if finite(r.get("key_freqs.frac_clustered"))), None)
    title = f"Neurons per frequency cluster at epoch {epoch}"
    if frac is not None:
        title += f" ({100 * frac:.0f} % of neurons clustered)"
    return _key_frequency_bars(d, sizes, title, "neurons", "%{y} neurons")


@figure("logit_map", "Fourier", "Each column is a neuron's write to the logits, as the share of "
        "its norm per frequency: clean blocks mean each neuron serves one frequency.", algebras=FOURIER_ALGEBRAS)
def neuron_logit_map(run: Any) -> go.Figure:
    """Each neuron's write to the logits in the Fourier basis: its share of ‖W_L row‖² per
    frequency, neurons sorted by cluster."""
    import torch

    from mechgrok.probes import fourier

    d = run_data(run)
    if fourier_op(get_task(d.config.task.name)) is None:
        raise NoData(f"the neuron-logit map in the Fourier basis applies to add and sub; "
                     f"run {d.id} is {d.config.task.name}")
    with torch.no_grad():
        W_L = d.final_model.neuron_logit_map().double()
    p = W_L.shape[1]
    coeffs = (W_L @ fourier.fourier_basis(p).T).square()  # (N, p)
    K = fourier.n_frequencies(p)
    per_k = torch.zeros(W_L.shape[0], K + 1, dtype=torch.float64)
    per_k.index_add_(1, fourier.row_frequency(p), coeffs)
    share = (per_k[:, 1:] / per_k.sum(1, keepdim=True).clamp_min(1e-30)).numpy()
    best = share.argmax(1)
    order = np.lexsort((-share.max(1), best))
    epoch = d.checkpoints[-1].epoch
    fig = new_figure(f"Neuron-logit map in the Fourier basis at epoch {epoch}",
                     xaxis="neuron (sorted by frequency)", yaxis="frequency k", height=420)
    fig.add_heatmap(z=share[order].T, y=np.arange(1, K + 1), colorscale="Blues", zmin=0, zmax=1,
                    colorbar=dict(title="share"),
                    hovertemplate="neuron #%{x}<br>k = %{y}<br>share %{z:.2f}<extra></extra>")
    return fig
