"""The circuit's geometry: attention patterns, the embedding's circles (PCA over training), and
the clock-or-pizza measures with the correct-logit table behind them."""

from __future__ import annotations

import math
from typing import Any

import numpy as np
import plotly.graph_objects as go
from plotly.subplots import make_subplots

from mechgrok.measures import fourier_view
from mechgrok.report.data import MAX_FRAMES, finite
from mechgrok.report.figures.base import (
    TEMPLATE,
    NoData,
    final_array,
    need_analysis,
    new_figure,
    run_data,
    shade_phases,
    why_missing,
)
from mechgrok.report.figures.registry import figure
from mechgrok.report.model_kinds import attention_layer, kind_view
from mechgrok.tasks import get_task

__all__ = ["attention_patterns", "clock_pizza_measures", "logit_sd_table", "pc_pairs",
           "pca_circle"]


@figure("attention", "Attention", "How much the '=' position attends to x rather than y for every "
        "input: stripes along x or y show which operand a head reads (constant attention shows a "
        "flat 1/3).", note_unanalysed=True)
def attention_patterns(run: Any) -> go.Figure:
    """Attention from the ``=`` position to the first operand x, per head, over all (x, y)."""
    import torch

    d = run_data(run)
    layer = attention_layer(d.config.model)
    if layer is None:
        raise NoData(f"attention patterns need a transformer; run {d.id} is "
                     f"{kind_view(d.config.model.kind).a_name}")
    from mechgrok.probes.base import RunContext

    ctx = RunContext(d.run, d.run.dataset())
    toks, n = ctx.tokens, ctx.data.n
    if len(toks) != n * n:
        raise NoData(f"attention grid needs every (x, y) pair; {d.config.task.name} has "
                     f"{len(toks)} of {n * n}")
    hook = f"blocks.{layer}.attn.hook_pattern"
    with torch.no_grad():
        _, cache = d.final_model.run_with_cache(toks, names_filter=lambda name: name == hook)
    pat = cache[hook][:, :, -1, 0].double().numpy()  # (N, heads): '=' attends to x
    H = pat.shape[1]
    cols = min(H, 4)
    rows = math.ceil(H / cols)
    fig = make_subplots(rows=rows, cols=cols, subplot_titles=[f"head {h}" for h in range(H)],
                        horizontal_spacing=0.04, vertical_spacing=0.1)
    for h in range(H):
        fig.add_heatmap(z=pat[:, h].reshape(n, n), row=h // cols + 1, col=h % cols + 1,
                        coloraxis="coloraxis",
                        hovertemplate="x %{y}, y %{x}<br>attn to x %{z:.2f}<extra></extra>")
    fig.update_layout(template=TEMPLATE, height=300 * rows + 80,
                      title=f"Attention from '=' to x (layer {layer}, epoch "
                            f"{d.checkpoints[-1].epoch})",
                      coloraxis=dict(colorscale="Viridis", cmin=0, cmax=1,
                                     colorbar=dict(title="attn")),
                      margin=dict(l=40, r=20, t=70, b=30))
    fig.update_yaxes(autorange="reversed")
    return fig


# --- embedding circle ----------------------------------------------------------------------


def pc_pairs(E: np.ndarray, p: int | None, pairs: int = 3, max_pcs: int = 8
             ) -> tuple[np.ndarray, np.ndarray, list[tuple[int, int, int | None]]]:
    """PCA of an embedding ``E`` (n, d) and the PC pairs to draw.

    Returns (components (m, d), explained-variance ratios (m,), pairs ``(i, j, k)``): PCs i and
    j (0-based) plotted against each other, sharing best frequency k. With ``p`` given (add/sub
    tasks), each PC's best frequency is the argmax of its score vector's Fourier power over the
    elements, and PCs are paired by it, strongest pair first: a frequency-k circle lies in the
    plane of the two PCs that carry k. Without ``p``, pairs are (1, 2), (3, 4), … and k is None.
    """
    from sklearn.decomposition import PCA

    m = min(max_pcs, *E.shape)
    pca = PCA(n_components=m, svd_solver="full").fit(E)
    scores = pca.transform(E)
    evr = pca.explained_variance_ratio_
    m = int((evr > 1e-10 * evr[0]).sum()) if evr.size and evr[0] > 0 else 0  # drop empty PCs
    scores = scores[:, :m]
    found: list[tuple[int, int, int | None]] = []
    if p is not None and p == E.shape[0] and p > 2:
        found = _pairs_by_frequency(scores, p)
    if not found:
        found = [(2 * a, 2 * a + 1, None) for a in range(m // 2)]
    return pca.components_, evr, found[:pairs]


def _pairs_by_frequency(scores: np.ndarray, p: int) -> list[tuple[int, int, int | None]]:
    """PCs (columns of ``scores``, strongest first) paired by the frequency of largest Fourier
    power over the p elements."""
    import torch

    from mechgrok.probes import fourier

    m = scores.shape[1]
    power = (fourier.fourier_basis(p) @ torch.from_numpy(scores)).square()  # (p, m)
    K = fourier.n_frequencies(p)
    per_k = torch.zeros(K + 1, m, dtype=torch.float64)
    per_k.index_add_(0, fourier.row_frequency(p), power)
    best = per_k[1:].argmax(0).add(1).tolist()
    used: set[int] = set()
    found: list[tuple[int, int, int | None]] = []
    for i in range(m):
        if i in used:
            continue
        mate = next((j for j in range(i + 1, m) if j not in used and best[j] == best[i]), None)
        if mate is not None:
            used |= {i, mate}
            found.append((i, mate, best[i]))
    return found


@figure("pca", "Embedding", "The embedding in the planes of its final principal components, "
        "paired by frequency for add and sub (the scienceetonnante notebook's picture), "
        "elements in their own order (mul and div: the non-zero ones in discrete-log order, "
        "paired by frequency over Z_{p−1}), colour the element's position; drag the slider over "
        "checkpoints. PCA finds the directions of largest variance: when several key frequencies "
        "carry similar weight its components mix them and a circle can blur here that each "
        "frequency's own plane (above) shows.", note_unanalysed=True)
def pca_circle(run: Any, max_frames: int = MAX_FRAMES, pairs: int = 3) -> go.Figure:
    """The embedding of the n elements in the planes of the **final** checkpoint's principal
    components, paired by frequency (:func:`pc_pairs`), with a slider over checkpoints: every
    checkpoint's (centred) embedding is projected on the same directions, so the slider shows
    the final circles forming. Each frame is scaled to fit, so the axes are relative."""
    d = run_data(run)
    if not d.checkpoints:
        raise NoData(f"run {d.id} has no checkpoints yet")
    epochs, embs = d.embeddings(max_frames)
    # where the task is read in Fourier over a cyclic group (Z_p; Z_p* in discrete-log order),
    # its elements in that group's order and PCs paired by frequency over it
    view = fourier_view(get_task(d.config.task.name), d.config.task.p)
    order = view.tokens if view is not None else np.arange(embs[-1].shape[0])
    embs = [E[order] for E in embs]
    n = len(order)
    comps, evr, chosen = pc_pairs(embs[-1], view.n if view is not None else None, pairs)
    if not chosen:
        raise NoData(f"the embedding of run {d.id} has fewer than two dimensions")
    frames = []
    for E in embs:
        proj = (E - E.mean(0)) @ comps.T  # (n, m)
        cols = np.stack([proj[:, [i, j]] for i, j, _ in chosen])  # (panels, n, 2)
        frames.append(cols / (float(np.abs(cols).max()) or 1.0))
    titles = [f"PC{i + 1} vs PC{j + 1}" + (f" (frequency {k})" if k else "")
              for i, j, k in chosen]
    fig = make_subplots(rows=1, cols=len(chosen), horizontal_spacing=0.06,
                        subplot_titles=titles)
    labels = [str(v) for v in order]
    last = len(frames) - 1
    for c in range(len(chosen)):
        fig.add_scatter(x=frames[last][c, :, 0], y=frames[last][c, :, 1], mode="markers+text",
                        text=labels, textposition="top center", textfont_size=7, row=1,
                        col=c + 1, marker=dict(color=np.arange(n), colorscale="HSV", size=7,
                                               line=dict(width=0.5, color="#333")),
                        hovertemplate="element %{text}<extra></extra>", name=titles[c])
    shares = ", ".join(f"{100 * v:.0f}" for v in evr)
    steps = [dict(method="update", label=str(e),
                  args=[{"x": [f[c, :, 0].tolist() for c in range(len(chosen))],
                         "y": [f[c, :, 1].tolist() for c in range(len(chosen))]},
                        {"title.text": f"Embedding at epoch {e} in the final PCs' planes"},
                        list(range(len(chosen)))])
             for e, f in zip(epochs, frames)]
    fig.update_layout(
        template=TEMPLATE, height=480, showlegend=False,
        title=f"Embedding at epoch {epochs[last]} in the final PCs' planes",
        sliders=[dict(active=last, steps=steps, currentvalue=dict(prefix="epoch "),
                      pad=dict(t=30))],
        annotations=list(fig.layout.annotations) + [dict(
            text=f"final variance per PC, %: {shares}", showarrow=False, xref="paper",
            yref="paper", x=1, y=1.13, xanchor="right", font_size=10)],
        margin=dict(l=40, r=20, t=90, b=30))
    for c in range(len(chosen)):
        fig.update_xaxes(range=[-1.2, 1.2], zeroline=False, showticklabels=False, row=1,
                         col=c + 1)
        fig.update_yaxes(range=[-1.2, 1.2], zeroline=False, showticklabels=False, row=1,
                         col=c + 1, scaleanchor=f"x{'' if c == 0 else c + 1}", scaleratio=1)
    return fig


# --- clock or pizza ------------------------------------------------------------------------


@figure("clock_pizza", "Clock or pizza", "Pizza: gradient symmetricity near 1 and low distance "
        "irrelevance; clock: lower symmetricity and high distance irrelevance; circularity says "
        "whether there is a clean circle at all. Dotted lines are the verdict's thresholds.",
        probes=("clock_pizza",), algebras=("cyclic",))
def clock_pizza_measures(run: Any) -> go.Figure:
    d = run_data(run)
    need_analysis(d, "clock/pizza measures")
    cols = (("clock_pizza.gradient_symmetricity", "gradient symmetricity"),
            ("clock_pizza.distance_irrelevance", "distance irrelevance"),
            ("clock_pizza.circularity", "circularity"))
    if not any(len(d.series(c)[0]) for c, _ in cols):
        raise NoData(why_missing(d, "clock_pizza", "clock/pizza measures"))
    cp = d.summary.get("clock_pizza") or {}
    title = "Clock or pizza"
    if cp.get("verdict"):
        title += f": {cp['verdict']} at epoch {cp.get('epoch')}"
    fig = new_figure(title, yaxis="value")  # escapes the verdict
    for c, name in cols:
        e, v = d.series(c)
        fig.add_scatter(x=e, y=v, name=name, mode="lines")
    rules = cp.get("rules") or {}
    for key, label in (("pizza_gs", "pizza: GS above"), ("pizza_di", "pizza: DI below"),
                       ("clock_gs", "clock: GS below"), ("clock_di", "clock: DI above")):
        if finite(rules.get(key)):
            fig.add_hline(y=rules[key], line_dash="dot", line_color="#999",
                          annotation_text=f"{label} {rules[key]}", annotation_font_size=9,
                          annotation_position="bottom left")
    fig.update_yaxes(range=[-0.05, 1.05])
    return shade_phases(fig, d)


@figure("logit_sd", "Clock or pizza", "A clock's correct logit depends only on the answer s "
        "(horizontal bands); a pizza's also varies with the distance d.", probes=("clock_pizza",), algebras=("cyclic",))
def logit_sd_table(run: Any) -> go.Figure:
    d = run_data(run)
    epoch, L = final_array(d, "clock_pizza.logit_sd", "the correct-logit table", ndim=2)
    s_name, d_name = ("x − y", "x + y") if d.config.task.name == "sub" else ("x + y", "x − y")
    fig = new_figure(f"Correct-class logit over ({s_name}, {d_name}) at epoch {epoch}",
                     xaxis=f"d = {d_name} (mod p)", yaxis=f"s = {s_name} (mod p)", height=460)
    fig.add_heatmap(z=L, colorscale="RdBu", zmid=float(np.mean(L)), colorbar=dict(title="logit"),
                    hovertemplate="s %{y}, d %{x}<br>logit %{z:.3g}<extra></extra>")
    return fig
