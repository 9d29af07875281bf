"""The embedding's circles, one plane per key frequency: the picture of the clock and pizza
papers, drawn where the model computes, not where PCA happens to look.

**Conventions.** The task is read as a rule in the cyclic group Z_n through its Fourier view
(:func:`mechgrok.measures.fourier_view`): Z_p for add and sub (elements in their own order),
Z_{p−1} for mul and div with element i the token g^i (g the smallest primitive root: the
*discrete-log order*), so frequencies are over Z_n. ``E`` is the ``(n, d)`` token embedding,
row i the element at exponent i. With c_k, s_k the unit cos/sin rows of frequency k
(:func:`mechgrok.probes.fourier.fourier_basis`), the **plane of frequency k** is spanned by
u = Eᵀc_k and v = Eᵀs_k, orthonormalised with u first (:func:`frequency_plane`): a model that
computes through frequency k writes ``a cos(2πki/n) + b sin(2πki/n)`` into its embedding, so
u ∝ a, v ∝ b, and the centred rows of ``E`` projected on the plane
(:func:`plane_coordinates`) put element i on an ellipse at the angle 2πki/n (a circle when a
and b are orthogonal and of one length; anticlockwise, element 0 on the positive x axis). For
even n the top frequency n/2 has no sine row: its "plane" is a line (second coordinate 0).

The planes are the **final** checkpoint's; every checkpoint's embedding is projected on them,
so a slider shows the final circles forming. PCA (:func:`~.geometry.pca_circle`) finds
directions of largest variance instead; with several key frequencies of nearly equal weight its
top components mix frequencies and the circles blur, which the per-frequency planes cannot do.

**Share** of frequency k (:func:`frequency_share`): ``(‖c_kᵀE‖² + ‖s_kᵀE‖²) / ‖E − mean‖²``,
the fraction of the centred embedding's squared norm (its variance) in frequency k; the shares
of all frequencies sum to 1. **Circle fit** (:func:`circle_fit`): how well the points match the
ideal circle ``(cos 2πki/n, sin 2πki/n)`` under the best rotation or reflection and scale
(orthogonal Procrustes): ``1 − residual / ‖xy − mean‖²``; 1 for a perfect circle in order, lower
for an ellipse, noise, or the wrong order.

**Which frequencies.** The analysis summary's key frequencies of the final checkpoint
(``summary["key_frequencies"]``) by the first of its rules (:data:`RULES`) that found any: the
neuron clusters (the frequencies the MLP computes through, the papers' key frequencies), else
the neuron-logit map, else the embedding's norms (which also counts harmonics the model does
not compute with), kept where they are frequencies of Z_n. A run with none (not analysed, or a
task the Fourier probes do not read yet) takes the embedding rule on the final embedding
(:func:`~mechgrok.probes.fourier.key_frequencies_from_norms` on
:func:`~mechgrok.probes.fourier.frequency_norms`). The title says which. The
:data:`MAX_PANELS` with the largest share are drawn, strongest first.
"""

from __future__ import annotations

import math
from typing import Any

import numpy as np
import plotly.graph_objects as go
from plotly.subplots import make_subplots

from mechgrok.measures import FourierView, fourier_view
from mechgrok.report.data import MAX_FRAMES, RunData
from mechgrok.report.figures.base import TEMPLATE, NoData, run_data, text
from mechgrok.report.figures.registry import FOURIER_ALGEBRAS, figure
from mechgrok.tasks import get_task

__all__ = ["MAX_PANELS", "RULES", "circle_fit", "circle_order", "embedding_circles",
           "frequency_plane", "frequency_share", "key_frequency_choice", "plane_coordinates"]

#: The most frequency planes one figure draws (the strongest in the embedding).
MAX_PANELS = 6
_COLS = 3  # panels per row
_RATIO = 0.25  # the embedding rule's threshold (as the analysis's key_frequencies_from_norms)


def _basis_rows(n: int, k: int) -> tuple[np.ndarray, np.ndarray | None]:
    """The unit cos and sin rows of frequency k over Z_n (sin None when k = n/2, n even)."""
    from mechgrok.probes.fourier import fourier_basis

    if not 1 <= k <= n // 2:
        raise ValueError(f"frequency {k} is not one of 1 … {n // 2} over Z_{n}")
    F = fourier_basis(n).numpy()
    return F[2 * k - 1], (F[2 * k] if 2 * k < n else None)


def frequency_plane(E: np.ndarray, k: int) -> np.ndarray:
    """``(d, 2)``: an orthonormal basis of the plane of frequency k of ``E`` (n, d), rows in the
    group's order: the first column along u = Eᵀc_k, the second the part of v = Eᵀs_k
    orthogonal to u, signed so that v has a non-negative component on it. A column is zero when
    there is no such direction (no frequency-k content, k = n/2 for even n, or v ∥ u)."""
    E = np.asarray(E, dtype=np.float64)
    E = E - E.mean(0)  # the same u and v (c_k, s_k ⟂ constants), without rounding's residue
    c, s = _basis_rows(E.shape[0], k)
    out = np.zeros((E.shape[1], 2))
    u = E.T @ c
    v = E.T @ s if s is not None else np.zeros(E.shape[1])
    tol = 1e-9 * float(np.linalg.norm(E))  # a direction smaller than this is rounding
    if np.linalg.norm(u) > tol:
        out[:, 0] = u / np.linalg.norm(u)
    w = v - (v @ out[:, 0]) * out[:, 0]
    if np.linalg.norm(w) > tol:
        out[:, 1] = w / np.linalg.norm(w)
    if not out[:, 0].any() and out[:, 1].any():  # no cos part: v's direction comes first
        out = out[:, ::-1].copy()
    return out


def plane_coordinates(E: np.ndarray, plane: np.ndarray) -> np.ndarray:
    """``(n, 2)``: the centred rows of ``E`` (n, d) projected on ``plane`` (d, 2)."""
    E = np.asarray(E, dtype=np.float64)
    return (E - E.mean(0)) @ plane


def frequency_share(E: np.ndarray, k: int) -> float:
    """The fraction of the centred embedding's squared norm in frequency k (module docstring);
    NaN for a constant embedding."""
    E = np.asarray(E, dtype=np.float64)
    c, s = _basis_rows(E.shape[0], k)
    part = float(np.square(c @ E).sum() + (np.square(s @ E).sum() if s is not None else 0.0))
    total = float(np.square(E - E.mean(0)).sum())
    return part / total if total > 0 else math.nan


def circle_order(n: int, k: int) -> np.ndarray:
    """``(n,)``: the elements 0 … n − 1 in the order of their angle on a frequency-k circle,
    k·i mod n (ties, when gcd(k, n) > 1, by i)."""
    i = np.arange(n)
    return np.lexsort((i, (k * i) % n))


def circle_fit(xy: np.ndarray, k: int) -> float:
    """How well points ``xy`` (n, 2), row i element i, lie on the ideal frequency-k circle
    ``(cos 2πki/n, sin 2πki/n)`` up to rotation, reflection and scale: 1 − the least residual
    over the centred points' squared norm (orthogonal Procrustes). NaN when all points
    coincide."""
    Z = np.asarray(xy, dtype=np.float64)
    Z = Z - Z.mean(0)
    n = Z.shape[0]
    theta = 2 * np.pi * ((k * np.arange(n)) % n) / n
    C = np.stack([np.cos(theta), np.sin(theta)], 1)
    C = C - C.mean(0)
    zz, cc = float(np.square(Z).sum()), float(np.square(C).sum())
    if zz <= 0 or cc <= 0:
        return math.nan
    nuclear = float(np.linalg.svd(C.T @ Z, compute_uv=False).sum())
    return nuclear ** 2 / (cc * zz)


#: The summary's rules, in the order they are preferred, and how a title names them.
RULES = (("neurons", "the neuron clusters"), ("logit_map", "the neuron-logit map"),
         ("embedding", "the embedding's Fourier norms"))


def _summary_frequencies(summary: dict[str, Any], n: int) -> tuple[list[int], str]:
    """The first rule of :data:`RULES` whose key frequencies in the summary are frequencies of
    Z_n (others left out), and its name; ([], "") when none has any."""
    kf = summary.get("key_frequencies")
    kf = kf if isinstance(kf, dict) else {}
    for rule, name in RULES:
        ks = kf.get(rule)
        found = sorted({k for k in ks if isinstance(k, int) and not isinstance(k, bool)
                        and 1 <= k <= n // 2}) if isinstance(ks, list) else []
        if found:
            return found, name
    return [], ""


def key_frequency_choice(summary: dict[str, Any], E: np.ndarray,
                         max_panels: int = MAX_PANELS) -> tuple[list[int], str]:
    """(frequencies to draw, strongest share in ``E`` first; where they came from, in words),
    see the module docstring. ``E`` is the final embedding (n, d) in the group's order."""
    import torch

    from mechgrok.probes.fourier import frequency_norms, key_frequencies_from_norms

    n = E.shape[0]
    ks, source = _summary_frequencies(summary, n)
    if not ks:
        ks = key_frequencies_from_norms(frequency_norms(torch.from_numpy(E)), _RATIO)
        why = "none in the analysis summary" if "key_frequencies" in summary else "not analysed"
        source = f"the final embedding's Fourier norms ({why})"
    share = {k: frequency_share(E, k) for k in ks}
    ks = sorted(ks, key=lambda k: (-np.nan_to_num(share[k], nan=-1.0), k))
    return ks[:max_panels], source


def _view(d: RunData) -> FourierView:
    """The run's task as a rule in Z_n, or :class:`NoData` saying why it has no circles."""
    task = get_task(d.config.task.name)
    view = fourier_view(task, d.config.task.p)
    if view is not None:
        return view
    alg = task.algebra
    if alg.kind == "symmetric":
        why = (f"{task.name} is a rule in S{alg.degree}, which has no frequencies: its "
               f"embedding is read in S{alg.degree}'s irreducible representations")
    elif alg.is_group:
        why = (f"{task.name} is the rule {alg.rule} in its group, which is not a product in a "
               f"cyclic group")
    else:
        why = f"{task.name} is not a group operation, so its embedding has no frequency planes"
    raise NoData(f"embedding circles: {why} (they are drawn for add, sub, mul and div)")


def _label_positions(xy: np.ndarray) -> list[str]:
    """A text position per point pointing away from the centre, so labels sit outside."""
    names = ["middle right", "top right", "top center", "top left", "middle left",
             "bottom left", "bottom center", "bottom right"]
    ang = np.arctan2(xy[:, 1], xy[:, 0])
    return [names[int(np.round(a / (np.pi / 4))) % 8] for a in ang]


def _frames(embs: list[np.ndarray], planes: list[np.ndarray], order: list[np.ndarray]
            ) -> list[list[np.ndarray]]:
    """Per checkpoint, per panel: the closed path of points (n + 1, 2) in circle order, each
    panel scaled so its farthest point is at radius 1."""
    out = []
    for E in embs:
        panels = []
        for plane, o in zip(planes, order):
            xy = plane_coordinates(E, plane)[o]
            r = float(np.sqrt(np.square(xy).sum(1)).max())
            panels.append(np.round(np.vstack([xy, xy[:1]]) / (r or 1.0), 4))
        out.append(panels)
    return out


def _panel_titles(E: np.ndarray, planes: list[np.ndarray], ks: list[int]) -> list[str]:
    """Each panel's title for embedding ``E`` (n, d): its frequency, the share of ``E`` in it
    and how well ``E`` on the (final) plane fits the circle."""
    n, out = E.shape[0], []
    for k, plane in zip(ks, planes):
        fit = circle_fit(plane_coordinates(E, plane), k)
        line = " = n/2: (−1)^i, a line" if 2 * k == n else ""
        out.append(f"frequency {k}{line}<br><sub>{100 * frequency_share(E, k):.0f}% of the "
                   f"embedding's variance, circle fit {fit:.2f}</sub>")
    return out


def _add_panel(fig: go.Figure, c: int, k: int, order: np.ndarray, view: FourierView,
               xy: np.ndarray) -> None:
    """Panel ``c``: the closed path ``xy`` (n + 1, 2) of the elements in ``order``, labelled by
    their tokens and coloured by their slot k·i mod n on the ideal circle."""
    n = view.n
    tokens = view.tokens[order].tolist()
    # labels on a circle; a line (k = n/2) has two piles of them: hover only
    labels = [str(t) if 2 * k < n else "" for t in tokens] + [""]
    slot = ((k * order) % n).tolist()
    hover = [f"element {t}" + (f" = g^{int(i)}" if view.log_order else "") +
             f"<br>k·i mod n = {j}" for t, i, j in zip(tokens, order, slot)]
    fig.add_scatter(
        x=xy[:, 0], y=xy[:, 1], mode="lines+markers+text", text=labels,
        textposition=_label_positions(xy[:-1]) + ["middle right"],
        textfont=dict(size=8 if n <= 60 else 6, color="#333"),
        line=dict(color="rgba(120,120,120,0.45)", width=1),
        marker=dict(color=slot + slot[:1], colorscale="HSV", cmin=0, cmax=n, size=7,
                    line=dict(width=0.5, color="#333")),
        hovertext=hover + hover[:1], hovertemplate="%{hovertext}<extra></extra>",
        name=f"frequency {k}", row=c // _COLS + 1, col=c % _COLS + 1)


@figure("circles", "Embedding", "Each key frequency k's own plane: the embedding projected on "
        "the directions its cos k and sin k Fourier components take. A model computing through "
        "frequency k puts element i at angle 2πki/n, so the points, joined and coloured in the "
        "order k·i mod n, go once round a circle (mul and div: frequencies over Z_{p−1}, "
        "elements in discrete-log order). Planes are the final checkpoint's; drag the slider to "
        "see earlier checkpoints projected on them (each panel scaled to fit). Under each "
        "frequency, at the epoch shown: its share of the embedding's variance, and the circle fit "
        "(1 for a perfect circle in that order, lower for an ellipse or a tangle).",
        note_unanalysed=True, algebras=FOURIER_ALGEBRAS)
def embedding_circles(run: Any, max_frames: int = MAX_FRAMES, max_panels: int = MAX_PANELS
                      ) -> go.Figure:
    """The token embedding in the plane of each key frequency (module docstring), with a
    slider over checkpoints projected on the final planes."""
    d = run_data(run)
    view = _view(d)
    if not d.checkpoints:
        raise NoData(f"run {d.id} has no checkpoints yet")
    epochs, all_embs = d.embeddings(max_frames)
    embs = [E[view.tokens] for E in all_embs]
    n = view.n
    ks, source = key_frequency_choice(d.summary, embs[-1], max_panels)
    if not ks:
        raise NoData(f"embedding circles: the final embedding of run {d.id} has no Fourier "
                     f"content (it is constant over the elements)")
    planes = [frequency_plane(embs[-1], k) for k in ks]
    orders = [circle_order(n, k) for k in ks]
    frames = _frames(embs, planes, orders)
    g = int(view.tokens[1]) if n > 1 else 1  # tokens[i] = g^i in discrete-log order
    group = f"Z_{n} (discrete-log order, g = {g})" if view.log_order else f"Z_{n}"
    titles = [_panel_titles(E, planes, ks) for E in embs]  # per checkpoint, per panel
    rows, cols = math.ceil(len(ks) / _COLS), min(len(ks), _COLS)
    fig = make_subplots(rows=rows, cols=cols, subplot_titles=titles[-1], horizontal_spacing=0.05,
                        vertical_spacing=0.12 / rows)
    for c, (k, o) in enumerate(zip(ks, orders)):
        _add_panel(fig, c, k, o, view, frames[-1][c])
    sub = f"<br><sub>key frequencies found by {source}</sub>"

    def title(e: int) -> str:
        return text(f"Embedding at epoch {e} in each key frequency's plane, over {group}") + sub

    steps = [dict(method="update", label=str(e),
                  args=[{"x": [p[:, 0].tolist() for p in f], "y": [p[:, 1].tolist() for p in f]},
                        {"title.text": title(e),
                         **{f"annotations[{c}].text": t for c, t in enumerate(ts)}},
                        list(range(len(ks)))])
             for e, f, ts in zip(epochs, frames, titles)]
    fig.update_layout(template=TEMPLATE, height=400 * rows + 150, showlegend=False,
                      title=dict(text=title(epochs[-1]), font_size=14),
                      sliders=[dict(active=len(steps) - 1, steps=steps,
                                    currentvalue=dict(prefix="epoch "), pad=dict(t=20))],
                      margin=dict(l=30, r=30, t=135, b=30))
    fig.update_annotations(font_size=12)
    for c in range(len(ks)):
        axis = dict(range=[-1.25, 1.25], zeroline=False, showticklabels=False, showgrid=False,
                    row=c // _COLS + 1, col=c % _COLS + 1)
        fig.update_xaxes(**axis)
        fig.update_yaxes(scaleanchor=f"x{'' if c == 0 else c + 1}", scaleratio=1, **axis)
    return fig
