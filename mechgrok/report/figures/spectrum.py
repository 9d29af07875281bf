"""The 2-D Fourier spectrum over Z_p × Z_p of the tasks with no group structure (the
``spectrum2d`` probe, :mod:`mechgrok.probes.spectrum`): where the final checkpoint's correct logit
and logits vary over frequency pairs (k_x, k_y), and restricted and excluded loss over the final
checkpoint's components. They describe the tables; no circuit is claimed."""

from __future__ import annotations

from typing import Any

import numpy as np
import plotly.graph_objects as go
from plotly.subplots import make_subplots

from mechgrok.report.data import RunData
from mechgrok.report.figures.base import (
    HEIGHT,
    TEMPLATE,
    NoData,
    final_array,
    run_data,
    why_missing,
)
from mechgrok.report.figures.curves import restricted_excluded
from mechgrok.report.figures.registry import figure

__all__ = ["spectrum2d_final", "spectrum2d_losses"]

NO_CIRCUIT = ("These tasks have no group structure: the spectrum describes the tables, and no "
              "circuit is claimed.")


def _shares(power: np.ndarray) -> np.ndarray:
    """Powers → shares of the power outside (0, 0); (0, 0), the mean, is left blank (NaN)."""
    out = np.array(power, dtype=np.float64)
    out[0, 0] = 0.0
    total = out.sum()
    out = out / total if total > 0 else out
    out[0, 0] = np.nan
    return out


def _final_spectra(d: RunData) -> tuple[int, np.ndarray, np.ndarray, np.ndarray | None]:
    """(epoch, correct-logit spectrum, logits spectrum, final-components mask or None) at the
    last analysed checkpoint."""
    what = "2-D Fourier spectrum"
    epoch, correct = final_array(d, "spectrum2d.correct_logit_spectrum", what, ndim=2)
    arrays = d.arrays(epoch)
    logits = arrays.get("spectrum2d.logits_spectrum")
    if logits is None:
        raise NoData(why_missing(d, "spectrum2d", what))
    d.check_array("spectrum2d.logits_spectrum", epoch, logits, 2)
    mask = arrays.get("spectrum2d.final_components")
    if mask is not None:
        d.check_array("spectrum2d.final_components", epoch, mask, 2)
    return epoch, correct, logits, mask


@figure("spectrum2d", "Fourier", "The final checkpoint's 2-D Fourier spectrum over Z_p × Z_p: the "
        "share of the centred correct-class logit table's power (left) and of the logits' power, "
        "all classes (right), per frequency pair (k_x, k_y); circles mark the components that "
        "carry 90 % of the logits' power (restricted and excluded loss use them). " + NO_CIRCUIT,
        probes=("spectrum2d",), algebras=("none",))
def spectrum2d_final(run: Any) -> go.Figure:
    d = run_data(run)
    epoch, correct, logits, mask = _final_spectra(d)
    fig = make_subplots(rows=1, cols=2, horizontal_spacing=0.1, subplot_titles=[
        "correct-class logit", "logits (all classes)"])
    for col, power in ((1, correct), (2, logits)):
        k = np.arange(power.shape[0])
        fig.add_heatmap(z=_shares(power), x=k, y=k, row=1, col=col, coloraxis="coloraxis",
                        hovertemplate="k_x %{y}, k_y %{x}<br>share %{z:.3g}<extra></extra>")
        fig.update_xaxes(title_text="k_y", row=1, col=col)
        fig.update_yaxes(title_text="k_x", row=1, col=col)
    if mask is not None and mask.shape == logits.shape:
        kx, ky = np.nonzero(mask)
        fig.add_scatter(x=ky, y=kx, mode="markers", row=1, col=2, name="final components",
                        marker=dict(symbol="circle-open", color="#d62728", size=7),
                        hovertemplate="component (%{y}, %{x})<extra></extra>")
    fig.update_layout(template=TEMPLATE, height=HEIGHT + 80, showlegend=False,
                      title=f"2-D Fourier spectrum at epoch {epoch} (no circuit claimed)",
                      coloraxis=dict(colorscale="Viridis", colorbar=dict(title="share")),
                      margin=dict(l=60, r=20, t=70, b=45))
    return fig


@figure("spectrum2d_losses", "Fourier", "Restricted loss keeps only the final checkpoint's 2-D "
        "components (the fewest frequency pairs that carry 90 % of its logits' power; all "
        "pairs), excluded loss removes them (train pairs). Low restricted and high excluded loss "
        "say the logits live on those components. " + NO_CIRCUIT, probes=("spectrum2d",),
        algebras=("none",))
def spectrum2d_losses(run: Any) -> go.Figure:
    return restricted_excluded(run_data(run), "spectrum2d", "Restricted and excluded loss over "
                               "the final 2-D components (no circuit claimed)", "components only",
                               "components removed")
