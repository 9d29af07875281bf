"""The report's figures, each a public function returning a plotly ``Figure``.

Every function takes a run (a :class:`~mechgrok.report.data.RunData`, a
:class:`~mechgrok.store.Run`, or a path) and returns a ``plotly.graph_objects.Figure``; in a
notebook, ``figures.loss_curves("checkpoints/quick")`` shows it. A figure whose data does not
exist yet (the run was not analysed, the measure does not apply to the task) raises
:class:`NoData` saying why and what would produce it.

Only SVG trace types are used (``scatter``, ``bar``, ``heatmap``): no WebGL, so the report renders
in any browser, headless ones included.

plotly renders a subset of HTML in titles, legends, labels and hover text, so every text from a
file or a user (run ids, probe and value names, a verdict) goes through :func:`text` first.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import plotly.graph_objects as go
from plotly.subplots import make_subplots

from mechgrok.errors import MechgrokError
from mechgrok.report.data import MAX_FRAMES, MAX_HEATMAP_EPOCHS, RunData, _finite
from mechgrok.store import Run

TEMPLATE = "plotly_white"
HEIGHT = 380
TRAIN, TEST = "#1f77b4", "#d62728"
PHASE_COLOURS = {"memorisation": "rgba(31,119,180,0.10)",
                 "circuit formation": "rgba(255,127,14,0.12)",
                 "cleanup": "rgba(44,160,44,0.12)"}
#: Probes whose values have their own figures; every other probe's scalars get a generic one.
DRAWN_PROBES = {"loss", "weights", "fourier_embed", "key_freqs", "restricted", "gini",
                "clock_pizza", "collapse"}


class NoData(MechgrokError):
    """The figure has nothing to draw for this run (the message says why)."""


def run_data(run: RunData | Run | str | Path) -> RunData:
    return run if isinstance(run, RunData) else RunData(run)


def text(s: Any) -> str:
    """``s`` as plotly text that shows literally: ``&``, ``<`` and ``>`` as the entities plotly
    decodes (so no tag, link or style in ``s`` is rendered), a lone surrogate as '?'."""
    out = str(s).replace("&", "&amp;").replace("<", "&lt;").replace(">", "&gt;")
    return out.encode("utf-8", "replace").decode("utf-8")


def _fig(title: str, xaxis: str = "epoch", yaxis: str = "", height: int = HEIGHT) -> go.Figure:
    """An empty figure; ``title`` and the axis titles are plain text (escaped here)."""
    fig = go.Figure()
    fig.update_layout(template=TEMPLATE, title=text(title), height=height,
                      margin=dict(l=60, r=20, t=50, b=45),
                      legend=dict(orientation="h", yanchor="bottom", y=1.0, xanchor="right", x=1))
    fig.update_xaxes(title_text=text(xaxis))
    fig.update_yaxes(title_text=text(yaxis))
    return fig


def _need_analysis(d: RunData, what: str) -> None:
    if not d.analysed:
        raise NoData(f"{what}: run {d.id} has no measures yet; `mechgrok analyze {d.run.path}` "
                     f"computes them")


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


# --- training curves -----------------------------------------------------------------------


def loss_curves(run: Any) -> go.Figure:
    d = run_data(run)
    fig = _fig("Loss", yaxis="cross-entropy (log)")
    for key, name, colour in (("train_loss", "train", TRAIN), ("test_loss", "test", TEST)):
        e, v = d.metric(key)
        fig.add_scatter(x=e, y=np.maximum(v, 1e-12), name=name, line_color=colour, mode="lines")
    if not len(d.metric("train_loss")[0]):
        raise NoData(f"run {d.id} has no evaluations yet")
    fig.update_yaxes(type="log", exponentformat="power")
    return shade_phases(fig, d)


def accuracy_curves(run: Any) -> go.Figure:
    d = run_data(run)
    fig = _fig("Accuracy", yaxis="accuracy")
    for key, name, colour in (("train_acc", "train", TRAIN), ("test_acc", "test", TEST)):
        e, v = d.metric(key)
        fig.add_scatter(x=e, y=v, name=name, line_color=colour, mode="lines")
    if not len(d.metric("train_acc")[0]):
        raise NoData(f"run {d.id} has no evaluations yet")
    fig.update_yaxes(range=[-0.02, 1.02])
    return shade_phases(fig, d)


def weight_norm(run: Any) -> go.Figure:
    d = run_data(run)
    e, v = d.metric("sum_sq_weights")
    if not len(e):
        raise NoData(f"run {d.id} has no weight norms in its metrics")
    fig = _fig("Sum of squared weights", yaxis="Σ θ²")
    fig.add_scatter(x=e, y=v, name="Σ θ²", mode="lines", line_color="#444")
    return shade_phases(fig, d)


def restricted_loss(run: Any) -> go.Figure:
    d = run_data(run)
    _need_analysis(d, "restricted loss")
    r_e, r = d.series("restricted.restricted_loss")
    x_e, x = d.series("restricted.excluded_loss")
    if not len(r_e):
        raise NoData(_why(d, "restricted", "restricted and excluded loss"))
    fig = _fig("Restricted and excluded loss", yaxis="cross-entropy (log)")
    t_e, t = d.metric("test_loss")
    fig.add_scatter(x=t_e, y=np.maximum(t, 1e-12), name="test", mode="lines", line_color=TEST)
    train_e, train = d.metric("train_loss")
    fig.add_scatter(x=train_e, y=np.maximum(train, 1e-12), name="train", mode="lines",
                    line_color=TRAIN)
    fig.add_scatter(x=r_e, y=np.maximum(r, 1e-12), name="restricted (key freqs only)",
                    mode="lines", line_color="#2ca02c")
    fig.add_scatter(x=x_e, y=np.maximum(x, 1e-12), name="excluded (key freqs removed)",
                    mode="lines", line_color="#9467bd")
    fig.update_yaxes(type="log", exponentformat="power")
    return shade_phases(fig, d)


def gini_curves(run: Any) -> go.Figure:
    d = run_data(run)
    _need_analysis(d, "Gini coefficients")
    fig = _fig("Gini coefficients of Fourier norms", yaxis="Gini")
    any_ = False
    for key, name in (("gini.embedding", "embedding"), ("gini.logit_map", "neuron-logit map")):
        e, v = d.series(key)
        if len(e):
            any_ = True
            fig.add_scatter(x=e, y=v, name=name, mode="lines")
    if not any_:
        raise NoData(_why(d, "gini", "Gini coefficients"))
    return shade_phases(fig, d)


def _final(d: RunData, name: str, what: str, ndim: int = 1) -> tuple[int | None, np.ndarray]:
    """The last analysed checkpoint's array ``probe.name`` (``ndim`` dimensions, else the
    arrays file was altered: :class:`RunDirError`), or :class:`NoData` saying why."""
    _need_analysis(d, what)
    epoch, v = d.final_array(name)
    if v is None:
        raise NoData(_why(d, name.split(".", 1)[0], what))
    d.check_array(name, epoch, v, ndim)
    return epoch, v


def _why(d: RunData, probe: str, what: str) -> str:
    for r in reversed(d.table):
        if r.get(f"{probe}.status") == "n/a":
            rec = _record_reason(d, r["epoch"], probe)
            return f"{what}: n/a for run {d.id}" + (f" ({rec})" if rec else "")
    return (f"{what}: no `{probe}` measures in run {d.id}; `mechgrok analyze {d.run.path} "
            f"--probe {probe}` computes them")


def _record_reason(d: RunData, epoch: int, probe: str) -> str | None:
    rec = d.records.get((epoch, probe))
    return str(rec["reason"]) if rec and rec.get("reason") is not None else None


# --- Fourier pictures ----------------------------------------------------------------------


def _key_freqs(d: RunData) -> list[int]:
    kf = d.summary.get("key_frequencies") or {}
    v = kf.get("neurons")
    return [k for k in v if isinstance(k, int)] if isinstance(v, list) else []


def fourier_heatmap(run: Any) -> go.Figure:
    d = run_data(run)
    _need_analysis(d, "embedding Fourier norms")
    epochs, z = d.array_series("fourier_embed.freq_norms", MAX_HEATMAP_EPOCHS)
    if z is None:
        raise NoData(_why(d, "fourier_embed", "embedding Fourier norms"))
    d.check_array("fourier_embed.freq_norms", epochs[-1], z[-1], 1)
    K = z.shape[1]
    fig = _fig("Embedding Fourier norms over training", yaxis="frequency k", height=420)
    fig.add_heatmap(x=epochs, y=np.arange(1, K + 1), z=z.T, colorscale="Viridis",
                    colorbar=dict(title="norm"),
                    hovertemplate="epoch %{x}<br>k = %{y}<br>norm %{z:.3g}<extra></extra>")
    return fig


def fourier_final(run: Any) -> go.Figure:
    d = run_data(run)
    epoch, v = _final(d, "fourier_embed.freq_norms", "embedding Fourier norms")
    return _key_frequency_bars(d, v, f"Embedding Fourier norms at epoch {epoch}", "norm",
                               "norm %{y:.3g}")


def _key_frequency_bars(d: RunData, v: np.ndarray, title: str, yaxis: str, hover: str
                        ) -> go.Figure:
    """One bar per frequency k = 1 … K, the run's key frequencies in red."""
    keys = set(_key_freqs(d))
    k = np.arange(1, len(v) + 1)
    fig = _fig(title, xaxis="frequency k", yaxis=yaxis)
    fig.add_bar(x=k, y=v, marker_color=["#d62728" if int(i) in keys else "#7f7f7f" for i in k],
                hovertemplate=f"k = %{{x}}<br>{hover}<extra></extra>", name=yaxis)
    fig.update_layout(showlegend=False)
    return fig


def neuron_clusters(run: Any) -> go.Figure:
    d = run_data(run)
    epoch, sizes = _final(d, "key_freqs.cluster_sizes", "neuron-frequency clusters")
    frac = next((r["key_freqs.frac_clustered"] for r in reversed(d.table)
                 if _finite(r.get("key_freqs.frac_clustered"))), None)
    title = f"Neurons per frequency cluster at epoch {epoch}"
    if frac is not None:
        title += f" ({100 * frac:.0f} % of neurons clustered)"
    return _key_frequency_bars(d, sizes, title, "neurons", "%{y} neurons")


def neuron_logit_map(run: Any) -> go.Figure:
    """Each neuron's write to the logits in the Fourier basis: its share of ‖W_L row‖² per
    frequency, neurons sorted by cluster."""
    import torch

    from mechgrok.probes import fourier

    d = run_data(run)
    if d.config.task.name not in ("add", "sub"):
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
    fig = _fig(f"Neuron-logit map in the Fourier basis at epoch {epoch}",
               xaxis="neuron (sorted by frequency)", yaxis="frequency k", height=420)
    fig.add_heatmap(z=share[order].T, y=np.arange(1, K + 1), colorscale="Blues", zmin=0, zmax=1,
                    colorbar=dict(title="share"),
                    hovertemplate="neuron #%{x}<br>k = %{y}<br>share %{z:.2f}<extra></extra>")
    return fig


# --- transformer attention -----------------------------------------------------------------


def attention_patterns(run: Any) -> go.Figure:
    """Attention from the ``=`` position to the first operand x, per head, over all (x, y)."""
    import torch

    d = run_data(run)
    if not d.is_transformer:
        raise NoData(f"attention patterns need a transformer; run {d.id} is an MLP")
    from mechgrok.probes.base import RunContext

    ctx = RunContext(d.run, d.run.dataset())
    toks, n = ctx.tokens, ctx.data.n
    if len(toks) != n * n:
        raise NoData(f"attention grid needs every (x, y) pair; {d.config.task.name} has "
                     f"{len(toks)} of {n * n}")
    model = d.final_model
    L = d.config.model.n_layers
    hook = f"blocks.{L - 1}.attn.hook_pattern"
    with torch.no_grad():
        _, cache = model.run_with_cache(toks, names_filter=lambda name: name == hook)
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
                      title=f"Attention from '=' to x (layer {L - 1}, epoch "
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
        import torch

        from mechgrok.probes import fourier

        power = (fourier.fourier_basis(p) @ torch.from_numpy(scores)).square()  # (p, m)
        K = fourier.n_frequencies(p)
        per_k = torch.zeros(K + 1, m, dtype=torch.float64)
        per_k.index_add_(0, fourier.row_frequency(p), power)
        best = per_k[1:].argmax(0).add(1).tolist()
        used: set[int] = set()
        for i in range(m):
            if i in used:
                continue
            mate = next((j for j in range(i + 1, m) if j not in used and best[j] == best[i]),
                        None)
            if mate is not None:
                used |= {i, mate}
                found.append((i, mate, best[i]))
    if not found:
        found = [(2 * a, 2 * a + 1, None) for a in range(m // 2)]
    return pca.components_, evr, found[:pairs]


def pca_circle(run: Any, max_frames: int = MAX_FRAMES, pairs: int = 3) -> go.Figure:
    """The embedding of the n elements in the planes of the **final** checkpoint's principal
    components, paired by frequency (:func:`pc_pairs`), with a slider over checkpoints: every
    checkpoint's (centred) embedding is projected on the same directions, so the slider shows
    the final circles forming. Each frame is scaled to fit, so the axes are relative."""
    d = run_data(run)
    if not d.checkpoints:
        raise NoData(f"run {d.id} has no checkpoints yet")
    epochs, embs = d.embeddings(max_frames)
    n = embs[-1].shape[0]
    fourier_p = d.config.task.p if d.config.task.name in ("add", "sub") else None
    comps, evr, chosen = pc_pairs(embs[-1], fourier_p, pairs)
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
    labels = [str(v) for v in range(n)]
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


def clock_pizza_measures(run: Any) -> go.Figure:
    d = run_data(run)
    _need_analysis(d, "clock/pizza measures")
    cols = (("clock_pizza.gradient_symmetricity", "gradient symmetricity"),
            ("clock_pizza.distance_irrelevance", "distance irrelevance"),
            ("clock_pizza.circularity", "circularity"))
    if not any(len(d.series(c)[0]) for c, _ in cols):
        raise NoData(_why(d, "clock_pizza", "clock/pizza measures"))
    cp = d.summary.get("clock_pizza") or {}
    title = "Clock or pizza"
    if cp.get("verdict"):
        title += f": {cp['verdict']} at epoch {cp.get('epoch')}"
    fig = _fig(title, yaxis="value")  # escapes the verdict
    for c, name in cols:
        e, v = d.series(c)
        fig.add_scatter(x=e, y=v, name=name, mode="lines")
    rules = cp.get("rules") or {}
    for key, label in (("pizza_gs", "pizza: GS above"), ("pizza_di", "pizza: DI below"),
                       ("clock_gs", "clock: GS below"), ("clock_di", "clock: DI above")):
        if _finite(rules.get(key)):
            fig.add_hline(y=rules[key], line_dash="dot", line_color="#999",
                          annotation_text=f"{label} {rules[key]}", annotation_font_size=9,
                          annotation_position="bottom left")
    fig.update_yaxes(range=[-0.05, 1.05])
    return shade_phases(fig, d)


def logit_sd_table(run: Any) -> go.Figure:
    d = run_data(run)
    epoch, L = _final(d, "clock_pizza.logit_sd", "the correct-logit table", ndim=2)
    s_name, d_name = ("x − y", "x + y") if d.config.task.name == "sub" else ("x + y", "x − y")
    fig = _fig(f"Correct-class logit over ({s_name}, {d_name}) at epoch {epoch}",
               xaxis=f"d = {d_name} (mod p)", yaxis=f"s = {s_name} (mod p)", height=460)
    fig.add_heatmap(z=L, colorscale="RdBu", zmid=float(np.mean(L)), colorbar=dict(title="logit"),
                    hovertemplate="s %{y}, d %{x}<br>logit %{z:.3g}<extra></extra>")
    return fig


# --- softmax collapse ----------------------------------------------------------------------


def collapse_curves(run: Any) -> go.Figure:
    d = run_data(run)
    _need_analysis(d, "softmax collapse")
    names = d.probes_with_values().get("collapse")
    if not names:
        raise NoData(_why(d, "collapse", "softmax collapse"))
    fig = make_subplots(rows=1, cols=2, subplot_titles=(
        "collapsed / zero-loss fraction (train)", "logit gap and norm"))
    palette = {"float32": "#d62728", "float64": "#1f77b4"}
    for n in names:
        e, v = d.series(f"collapse.{n}")
        if not len(e):
            continue
        dt = "float32" if n.endswith("float32") else "float64" if n.endswith("float64") else None
        if n.startswith(("sc_fraction", "zero_loss_fraction")):
            fig.add_scatter(x=e, y=v, name=text(n), mode="lines", row=1, col=1,
                            line=dict(color=palette.get(dt), dash="solid" if
                                      n.startswith("sc") else "dot"))
        elif n.startswith(("gap_", "logit_norm")):
            fig.add_scatter(x=e, y=v, name=text(n), mode="lines", row=1, col=2)
    fig.update_layout(template=TEMPLATE, height=HEIGHT, title="Softmax collapse",
                      margin=dict(l=60, r=20, t=70, b=45))
    fig.update_xaxes(title_text="epoch")
    return fig


def nlm_alignment(run: Any) -> go.Figure:
    d = run_data(run)
    _need_analysis(d, "naive loss minimisation")
    e, v = d.series("collapse.nlm_cosine")
    if not len(e):
        raise NoData(_why(d, "collapse", "naive-loss-minimisation alignment"))
    fig = _fig("Naive loss minimisation: cos(−∇L, θ)", yaxis="cosine")
    fig.add_scatter(x=e, y=v, name="all parameters", mode="lines", line_color="#444")
    fig.update_yaxes(range=[-1.05, 1.05])
    return shade_phases(fig, d)


# --- any other probe -----------------------------------------------------------------------


def probe_scalars(run: Any, probe: str) -> go.Figure:
    """Every scalar value of one probe against epoch (user probes get this automatically)."""
    d = run_data(run)
    names = d.probes_with_values().get(probe)
    if not names:
        raise NoData(_why(d, probe, f"probe {probe!r}"))
    fig = _fig(f"Probe {probe}", yaxis="value")
    for n in names:
        e, v = d.series(f"{probe}.{n}")
        if len(e):
            fig.add_scatter(x=e, y=v, name=text(n),
                            mode="lines+markers" if len(e) < 30 else "lines")
    return shade_phases(fig, d)


def other_probes(run: Any) -> list[str]:
    """Probes with scalar values that have no figure of their own."""
    return [p for p in run_data(run).probes_with_values() if p not in DRAWN_PROBES]


# --- several runs --------------------------------------------------------------------------


COMPARE_METRICS = {"test_acc": ("Test accuracy", False), "train_acc": ("Train accuracy", False),
                   "test_loss": ("Test loss", True), "train_loss": ("Train loss", True),
                   "sum_sq_weights": ("Sum of squared weights", False)}


def compare_curves(runs: Sequence[Any], metric: str = "test_acc") -> go.Figure:
    """One training metric of several runs, overlaid."""
    if metric not in COMPARE_METRICS:
        raise MechgrokError(f"unknown metric {metric!r}; choose from {sorted(COMPARE_METRICS)}")
    title, log = COMPARE_METRICS[metric]
    fig = _fig(title, yaxis=metric + (" (log)" if log else ""))
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
    fig = _fig(title, yaxis=column)
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


# --- the report's list ---------------------------------------------------------------------


@dataclass(frozen=True)
class FigureSpec:
    id: str
    section: str
    caption: str
    build: Callable[[RunData], go.Figure]


RUN_FIGURES: list[FigureSpec] = [
    FigureSpec("loss", "Training", "Grokking is the gap between the two curves: train loss falls "
               "early, test loss stays high for a long time, then drops. Shaded bands are the "
               "detected phases: memorisation (blue), circuit formation (orange), cleanup "
               "(green).", loss_curves),
    FigureSpec("accuracy", "Training", "Train accuracy reaches 100 % first (memorisation); the "
               "dashed line marks where test accuracy reaches 99 % and stays there.",
               accuracy_curves),
    FigureSpec("restricted", "Progress measures", "Restricted loss keeps only the key "
               "frequencies and falls before test loss does; excluded loss removes them and rises "
               "as the Fourier circuit forms, while train loss stays low.", restricted_loss),
    FigureSpec("weights", "Progress measures", "Weight decay shrinks the weights once the "
               "generalising circuit can replace memorisation; the fall is steepest during "
               "cleanup.", weight_norm),
    FigureSpec("gini", "Progress measures", "Gini coefficients rise as the embedding and the "
               "neuron-logit map concentrate on a few frequencies (1 would be a single one).",
               gini_curves),
    FigureSpec("fourier_heatmap", "Fourier", "Each row is one frequency: look for a few rows that "
               "brighten as the model generalises while the rest fade.", fourier_heatmap),
    FigureSpec("fourier_final", "Fourier", "A sparse spectrum at the end of training; key "
               "frequencies (neuron-cluster rule) in red.", fourier_final),
    FigureSpec("clusters", "Fourier", "Neurons that are explained by one frequency, grouped by "
               "it; a handful of large clusters is the Fourier multiplication algorithm.",
               neuron_clusters),
    FigureSpec("logit_map", "Fourier", "Each column is a neuron's write to the logits, as the "
               "share of its norm per frequency: clean blocks mean each neuron serves one "
               "frequency.", neuron_logit_map),
    FigureSpec("attention", "Attention", "How much the '=' position attends to x rather than y "
               "for every input: stripes along x or y show which operand a head reads (constant "
               "attention shows a flat 1/3).", attention_patterns),
    FigureSpec("pca", "Embedding", "Drag the slider: a generalising add/sub model arranges the "
               "elements on a circle in order (colour is the element's value).", pca_circle),
    FigureSpec("clock_pizza", "Clock or pizza", "Pizza: gradient symmetricity near 1 and low "
               "distance irrelevance; clock: lower symmetricity and high distance irrelevance; "
               "circularity says "
               "whether there is a clean circle at all. Dotted lines are the verdict's "
               "thresholds.", clock_pizza_measures),
    FigureSpec("logit_sd", "Clock or pizza", "A clock's correct logit depends only on the answer "
               "s (horizontal bands); a pizza's also varies with the distance d.", logit_sd_table),
    FigureSpec("collapse", "Softmax collapse", "Samples whose softmax sums to exactly 1 get no "
               "gradient: a high float32 fraction with a low float64 one is softmax collapse, "
               "not convergence.", collapse_curves),
    FigureSpec("nlm", "Softmax collapse", "Near +1 the gradient only scales the weights up "
               "(naive loss minimisation): training has stopped learning features.",
               nlm_alignment),
]
