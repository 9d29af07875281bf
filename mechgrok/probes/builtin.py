"""Built-in progress measures (Nanda et al.), as thin probes over the pure functions of
:mod:`mechgrok.probes.fourier`. Every one works for the transformer and the MLP: they read the
model through ``token_embedding()``, ``neurons(cache)`` and ``neuron_logit_map()``.

The Fourier probes read the task through its :class:`~mechgrok.measures.FourierView`
(``ctx.run.fourier_view()``): for add/sub the identity (Fourier over Z_p, p² pairs); for mul/div
the non-zero elements in discrete-log order (x = g^i, g the smallest primitive root) and the
(p − 1)² pairs with x, y ≠ 0, so frequencies are over Z_{p−1} (K = (p − 1)/2, the last one the
sign (−1)^i). The pairs with a zero operand (answer 0 whatever the other operand) are left out
of every Fourier measure, including the losses, which are over the view's pairs (all classes).

Conventions: key frequencies for restricted/excluded loss are those found on the **final**
checkpoint by the neuron-cluster rule (as the paper does); if that rule finds none, the
embedding rule's are used and the table says so (``restricted.keys_from_neuron_rule``). The per-checkpoint
view of the key frequencies is the ``key_freqs`` probe.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import torch

from mechgrok.measures import FourierView
from mechgrok.probes import fourier
from mechgrok.probes.base import CheckpointContext, NotApplicable, Probe, RunContext, probe

__all__ = ["BUILTIN_PROBES", "RULES", "final_key_frequency_finder", "fourier_embed", "gini",
           "key_freqs", "key_frequencies", "loss", "restricted", "view_weights", "weights"]

RULES = ("neurons", "embedding", "logit_map")


def _grid_neurons(ctx: CheckpointContext) -> torch.Tensor:
    view = ctx.run.fourier_view()
    acts = ctx.all_pairs().neurons  # (N_pairs, N)
    return _in_view(acts, view.pairs).reshape(view.n, view.n, -1)


def _in_view(t: torch.Tensor, index: np.ndarray, dim: int = 0) -> torch.Tensor:
    """``t`` indexed along ``dim`` by the view's ``index``, or ``t`` itself when the index is
    the identity (add/sub: every number stays bit-identical)."""
    if len(index) == t.shape[dim] and bool((index == np.arange(len(index))).all()):
        return t
    return t.index_select(dim, torch.tensor(index, device=t.device))


def view_weights(model: Any, view: FourierView) -> tuple[torch.Tensor, torch.Tensor]:
    """The embedding ``(n, d)`` and the neuron-logit map ``(N, n)`` with elements in the view's
    order (discrete-log order for mul/div; the class 0 column is left out there)."""
    with torch.no_grad():
        W_E = _in_view(model.token_embedding().detach(), view.tokens)
        W_L = _in_view(model.neuron_logit_map().detach(), view.tokens, dim=1)
    return W_E, W_L


def key_frequencies(model: Any, neurons_grid: torch.Tensor, view: FourierView) -> dict[str, Any]:
    """Key frequencies by the three rules, and the neuron clusters (one checkpoint)."""
    fractions = fourier.neuron_frequency_fractions(neurons_grid)
    clusters = fourier.neuron_clusters(fractions)
    n_neurons = neurons_grid.shape[-1]
    W_E, W_L = view_weights(model, view)
    emb_norms = fourier.frequency_norms(W_E)
    wl_norms = fourier.logit_map_frequency_norms(W_L)
    return {
        "neurons": fourier.key_frequencies_from_clusters(clusters, n_neurons),
        "embedding": fourier.key_frequencies_from_norms(emb_norms),
        "logit_map": fourier.key_frequencies_from_norms(wl_norms),
        "clusters": clusters,
        "fractions": fractions,
        "n_neurons": n_neurons,
        "emb_norms": emb_norms,
        "wl_norms": wl_norms,
    }


def _multi_hot(freqs: list[int], K: int) -> np.ndarray:
    out = np.zeros(K, dtype=np.int8)
    for k in freqs:
        out[k - 1] = 1
    return out


@probe("weights", description="sum of squared weights: total and per parameter tensor")
def weights(ctx: CheckpointContext) -> dict[str, Any]:
    out: dict[str, Any] = {}
    total = 0.0
    with torch.no_grad():
        for name, p in ctx.model.named_parameters():
            v = float((p.double() ** 2).sum())
            out[name.replace(".", "/")] = v
            total += v
    return {"total": total, **out}


@probe("loss", needs=("all_pairs",),
       description="loss and accuracy of the checkpoint on the train and test split (all pairs, "
                   "float64 loss)")
def loss(ctx: CheckpointContext) -> dict[str, Any]:
    ap = ctx.all_pairs()
    logits = ap.logits.double()
    out = {}
    for split, idx in (("train", ctx.run.train_idx), ("test", ctx.run.test_idx)):
        lg, y = logits[idx], ap.labels[idx]
        out[f"{split}_loss"] = float(torch.nn.functional.cross_entropy(lg, y))
        out[f"{split}_acc"] = float((lg.argmax(-1) == y).double().mean())
    return out


@probe("fourier_embed", needs=("fourier",),
       description="Fourier norms of the embedding per frequency (Z_p, or Z_{p−1} in discrete-log "
                   "order for mul/div; basis const, cos k, sin k)")
def fourier_embed(ctx: CheckpointContext) -> dict[str, Any]:
    with torch.no_grad():
        W = _in_view(ctx.model.token_embedding().detach(), ctx.run.fourier_view().tokens)
    rows = fourier.fourier_norms(W)
    freqs = fourier.frequency_norms(W)
    return {"top_freq": int(freqs.argmax()) + 1, "const_norm": float(rows[0]),
            "row_norms": rows, "freq_norms": freqs}


@probe("key_freqs", needs=("fourier", "all_pairs"),
       description="key frequencies at this checkpoint by three rules (neuron clusters ≥ 0.85, "
                   "embedding norms > max/4, neuron-logit map W_L) and the neuron clusters")
def key_freqs(ctx: CheckpointContext) -> dict[str, Any]:
    view = ctx.run.fourier_view()
    kf = key_frequencies(ctx.model, _grid_neurons(ctx), view)
    K = fourier.n_frequencies(view.n)
    sizes = np.zeros(K, dtype=np.int64)
    for k, members in kf["clusters"].items():
        sizes[k - 1] = len(members)
    frac = kf["fractions"]  # (N, K+1)
    assigned = np.full(kf["n_neurons"], 0, dtype=np.int64)  # 0: no cluster
    for k, members in kf["clusters"].items():
        assigned[members] = k
    return {
        "n_neurons_rule": len(kf["neurons"]), "n_embedding_rule": len(kf["embedding"]),
        "n_logit_map_rule": len(kf["logit_map"]),
        "frac_clustered": float((assigned > 0).mean()),
        "neurons_rule": _multi_hot(kf["neurons"], K), "embedding_rule": _multi_hot(kf["embedding"], K),
        "logit_map_rule": _multi_hot(kf["logit_map"], K),
        "cluster_sizes": sizes, "neuron_cluster": assigned,
        "neuron_best_fraction": frac[:, 1:].max(dim=1).values,
        "logit_map_freq_norms": kf["wl_norms"],
    }


def _final_keys(ctx: CheckpointContext) -> tuple[list[int], str]:
    final = ctx.run.final_key_frequencies()
    if final["neurons"]:
        return final["neurons"], "neurons"
    if final["embedding"]:
        return final["embedding"], "embedding"
    raise NotApplicable("no key frequencies were found on the final checkpoint (the run has "
                        "not formed a Fourier circuit)")


@probe("restricted", needs=("fourier", "key_freqs", "all_pairs"),
       description="restricted loss (logits projected on the final key frequencies, all pairs "
                   "of the group) and excluded loss (those directions removed, train pairs), also "
                   "per frequency")
def restricted(ctx: CheckpointContext) -> dict[str, Any]:
    keys, rule = _final_keys(ctx)
    ap = ctx.all_pairs()
    view = ctx.run.fourier_view()
    logits = _in_view(ap.logits.double(), view.pairs)
    labels = _in_view(ap.labels, view.pairs)
    full = float(torch.nn.functional.cross_entropy(logits, labels))
    r = fourier.restricted_and_excluded(logits, labels, keys, view.n, view.op,
                                        _view_train_idx(ctx.run.train_idx, view))
    K = fourier.n_frequencies(view.n)
    per_arr = np.full(K, np.nan)
    for k, v in r["excluded_loss_per_frequency"].items():
        per_arr[k - 1] = v
    return {
        "restricted_loss": r["restricted_loss"],
        "excluded_loss": r["excluded_loss"],
        "full_loss": full,
        "n_keys": len(keys),
        "keys_from_neuron_rule": rule == "neurons",
        "excluded_loss_per_freq": per_arr,
    }


def _view_train_idx(train_idx: torch.Tensor, view: FourierView) -> torch.Tensor:
    """The positions in the view's grid of the train pairs it holds (the train rows themselves
    for add/sub)."""
    if view.identity:
        return train_idx
    keep = np.isin(view.pairs, train_idx.cpu().numpy())
    return torch.as_tensor(np.flatnonzero(keep))


@probe("gini", needs=("fourier",),
       description="Gini coefficients (Hurley & Rickard) of the per-frequency Fourier norms of "
                   "W_E and of W_L")
def gini(ctx: CheckpointContext) -> dict[str, Any]:
    W_E, W_L = view_weights(ctx.model, ctx.run.fourier_view())
    e = fourier.frequency_norms(W_E)
    w = fourier.logit_map_frequency_norms(W_L)
    return {"embedding": fourier.gini(e), "logit_map": fourier.gini(w)}


def final_key_frequency_finder(run_ctx: RunContext, final_model: Any) -> dict[str, Any]:
    """The function the analysis hands to RunContext: the final checkpoint's keys in the task's
    basis: key frequencies by each rule for a task read in Fourier (Z_p, Z_p*), key irreps
    (``{"irreps": [...]}``, :func:`mechgrok.probes.irreps.final_key_irreps`) for S_n, the 2-D
    components (``{"components": [...]}``, :func:`mechgrok.probes.spectrum.final_spectrum_keys`)
    for a task with no group."""
    if run_ctx.fourier_reason() is not None:
        from mechgrok.probes.irreps import final_key_irreps, group_reason
        from mechgrok.probes.spectrum import final_spectrum_keys

        if group_reason(run_ctx) is not None:  # no group: the 2-D spectrum's components
            return final_spectrum_keys(run_ctx, final_model)
        return final_key_irreps(run_ctx, final_model)
    view = run_ctx.fourier_view()
    with torch.no_grad():
        _, cache = final_model.run_with_cache(
            run_ctx.tokens, names_filter=lambda n: n == final_model.neuron_hook)
    grid = _in_view(final_model.neurons(cache), view.pairs).reshape(view.n, view.n, -1)
    kf = key_frequencies(final_model, grid, view)
    return {r: kf[r] for r in RULES}


def _all_builtins() -> list[Probe]:
    from mechgrok.probes.clockpizza import CLOCKPIZZA_PROBES
    from mechgrok.probes.collapse import collapse_probe
    from mechgrok.probes.irreps import irreps_probe
    from mechgrok.probes.spectrum import SPECTRUM_PROBES

    return [weights, loss, fourier_embed, key_freqs, restricted, gini, *CLOCKPIZZA_PROBES,
            collapse_probe, irreps_probe, *SPECTRUM_PROBES]


BUILTIN_PROBES = _all_builtins()
