"""Fourier analysis over Z_p for the progress measures of Nanda et al. (MEASURES.md §4).

Pure functions of tensors: nothing here knows about models, hooks or run directories. The
probes in :mod:`mechgrok.probes.builtin` feed them weights and activations.

Conventions (the literature disagrees on some of these; these are mechgrok's):

* **Basis rows, cos before sin.** ``fourier_basis(p)`` is the p × p matrix with rows
  ``const, cos 1, sin 1, cos 2, sin 2, …, cos K, sin K`` where ``cos_k[x] = cos(2πkx/p)`` and
  ``sin_k[x] = sin(2πkx/p)``. Row r ≥ 1 has frequency ``(r + 1) // 2`` and is a cos row when r is
  odd. (The TransformerLens demo puts sin before cos; never mix the two orders.)
* **Normalisation.** Every row has unit norm, so the matrix is orthonormal: ``F @ F.T = I``.
  Fourier coefficients are ``F @ v``; squared coefficients add up to ``‖v‖²`` (Parseval).
* **Even p.** Frequencies 1 … p/2 − 1 have a cos and a sin row; frequency p/2 has only its
  cos row, ``(−1)^x`` (its sin row is identically zero and is dropped). Still p rows.
  K = ``n_frequencies(p)`` = ``p // 2`` nonzero frequencies in both cases. The basis is valid
  for any p ≥ 2; whether a non-prime p deserves a warning is the caller's decision.
* **Per-frequency norms** combine a frequency's rows: ``√(‖cos_k‖² + ‖sin_k‖²)``; tensors of
  length K are indexed ``i ↔ k = i + 1``.
* **Neuron clusters.** A neuron belongs to frequency k when the fraction of its variance in the
  block ``{const, cos k, sin k}²`` of its 2-D transform over (x, y) is ≥ 0.85. Key frequencies
  by that rule are those with *a non-trivial cluster*: at least ``max(3, ⌈0.01 · n_neurons⌉)``
  neurons, unless the caller says otherwise.
* **Restricted and excluded loss.** The directions (constant; ``cos(w_k s)``, ``sin(w_k s)``
  with ``w_k = 2πk/p``, ``s = x + y`` for add or ``x − y`` for sub) are vectors over the input
  grid of p² pairs, flattened row-major (index ``x·p + y``). They act on the grid axis of the
  ``(p², C)`` logits, separately for every output class column.
* **Precision and device.** Everything is computed in float64 on the CPU; float32 (or GPU)
  inputs are converted first, and tensors come back as CPU float64.
"""

from __future__ import annotations

import functools
import math
from typing import Any

import torch
from torch import Tensor

from mechgrok.measures.spectrum import fourier_basis_1d

__all__ = ["basis_labels", "excluded_loss", "excluded_loss_per_frequency", "fourier_basis",
           "fourier_norms", "frequency_norms", "gini", "key_frequencies_from_clusters",
           "key_frequencies_from_norms", "logit_map_frequency_norms", "n_frequencies",
           "neuron_clusters", "neuron_frequency_fractions", "restricted_and_excluded",
           "restricted_loss", "row_frequency", "sum_direction_basis"]

_F64 = torch.float64


def _f64(t: Tensor) -> Tensor:
    """A CPU float64 copy (or the tensor itself, when it already is one) detached from autograd."""
    return t.detach().to(device="cpu", dtype=_F64)


# --- the basis -----------------------------------------------------------------------------


def _check_p(p: int) -> int:
    if isinstance(p, bool) or int(p) != p or p < 2:
        raise ValueError(f"p must be an integer ≥ 2, got {p!r}")
    return int(p)


def n_frequencies(p: int) -> int:
    """K, the number of nonzero frequencies: (p − 1)/2 for odd p, p/2 for even p."""
    return _check_p(p) // 2


def row_frequency(p: int) -> Tensor:
    """The frequency of each basis row, ``(p,)`` int64: 0, 1, 1, 2, 2, …"""
    return (torch.arange(_check_p(p)) + 1) // 2


def basis_labels(p: int) -> list[str]:
    """``["const", "cos 1", "sin 1", …]``, one per basis row."""
    freq = row_frequency(p).tolist()
    return ["const"] + [f"{'cos' if r % 2 else 'sin'} {freq[r]}" for r in range(1, p)]


def fourier_basis(p: int) -> Tensor:
    """The orthonormal Fourier basis over Z_p, ``(p, p)`` float64, rows ``const, cos 1, sin 1, …``.

    Row r ≥ 1 is ``cos(2πkx/p)`` (r odd) or ``sin(2πkx/p)`` (r even) with ``k = (r + 1) // 2``,
    divided by its norm. For even p the last row is ``cos(πx) = (−1)^x``.
    Computed once per p and shared (read-only): do not modify the returned tensor in place.
    """
    return _fourier_basis(_check_p(p))


@functools.lru_cache(maxsize=32)
def _fourier_basis(p: int) -> Tensor:
    # one home for the basis: mechgrok.measures.spectrum (the 2-D spectrum is built from it)
    return torch.from_numpy(fourier_basis_1d(p).copy())


# --- norms of weights ----------------------------------------------------------------------


def _combine_frequencies(row_norms: Tensor) -> Tensor:
    """Per-row norms ``(p,)`` → per-frequency norms ``(K,)``: √(cos_k² + sin_k²), k = 1 … K."""
    p = row_norms.shape[0]
    sq = torch.zeros(n_frequencies(p) + 1, dtype=_F64)
    sq.index_add_(0, row_frequency(p), _f64(row_norms).square())
    return sq[1:].sqrt()


def fourier_norms(W: Tensor) -> Tensor:
    """``(p, d)`` → ``(p,)``: the norm over d of ``F @ W``, per basis row.

    With ``W = W_E`` restricted to the p residue tokens these are the embedding Fourier norms.
    """
    if W.ndim != 2:
        raise ValueError(f"expected a (p, d) matrix, got shape {tuple(W.shape)}")
    basis = fourier_basis(W.shape[0])
    return (basis @ _f64(W)).norm(dim=1)  # (p,)


def frequency_norms(W: Tensor) -> Tensor:
    """``(p, d)`` → ``(K,)``: per frequency k = i + 1, √(‖(F W)_cos k‖² + ‖(F W)_sin k‖²)."""
    return _combine_frequencies(fourier_norms(W))


def logit_map_frequency_norms(W_L: Tensor) -> Tensor:
    """``(N, p)`` → ``(K,)``: Fourier norms of the neuron-logit map over its OUTPUT axis.

    ``W_L = W_out @ W_U`` maps the N neurons to the p logits. Transform each neuron's row,
    ``W_L @ Fᵀ`` ``(N, p)``, take the norm over neurons per basis row, and combine cos and sin.
    """
    if W_L.ndim != 2:
        raise ValueError(f"expected an (n_neurons, p) matrix, got shape {tuple(W_L.shape)}")
    basis = fourier_basis(W_L.shape[1])
    coeffs = _f64(W_L) @ basis.T  # (N, p)
    return _combine_frequencies(coeffs.norm(dim=0))


def key_frequencies_from_norms(freq_norms: Tensor, ratio: float = 0.25) -> list[int]:
    """The frequencies k (1-based) whose combined norm is > ``ratio`` · the largest one.

    The embedding rule (on ``frequency_norms(W_E)``) and the neuron-logit map rule (on
    ``logit_map_frequency_norms(W_L)``). All-zero norms give no key frequency.
    """
    v = _f64(freq_norms).reshape(-1)
    if v.numel() == 0 or float(v.max()) <= 0.0:
        return []
    return [i + 1 for i in torch.nonzero(v > ratio * v.max()).flatten().tolist()]


# --- neurons -------------------------------------------------------------------------------


def _diagonal_sums(A2: Tensor, sign: int) -> Tensor:
    """Sums of A along ``x + y ≡ s`` (sign +1) or ``x − y ≡ s`` (sign −1): ``(p, N)``, row s.

    ``A2`` is ``(p, 2p, N)``: A written twice along y, so that every wrapped diagonal is a
    plain strided view (no index arithmetic per element). Element [x, j] of the view is
    ``A2[x, j − x + p]`` = ``A[x, (j − x) mod p]`` for +1 and ``A2[x, x + j]`` =
    ``A[x, (x + j) mod p]`` for −1, whose x − y is ``−j``.
    """
    p, _, N = A2.shape
    if sign > 0:
        view = A2.as_strided((p, p, N), ((2 * p - 1) * N, N, 1), A2.storage_offset() + p * N)
        return view.sum(dim=0)
    view = A2.as_strided((p, p, N), ((2 * p + 1) * N, N, 1), A2.storage_offset())
    return view.sum(dim=0)[(-torch.arange(p)) % p]  # row j holds x − y ≡ −j


def neuron_frequency_fractions(acts: Tensor) -> Tensor:
    """``(p, p, N)`` activations on every (x, y) → ``(N, K + 1)`` variance fractions.

    Definition: centre each neuron, ``A = acts − mean``; take its 2-D transform ``C = F A Fᵀ``;
    column k ≥ 1 is ``Σ C[a, b]²`` over ``a, b ∈ {const, cos k, sin k}`` divided by ``Σ C²`` (the
    neuron's variance × p²). For even p's frequency p/2 the block is 2 × 2. Column 0 is the rest,
    ``1 − Σ_k``, which is ≥ 0: the blocks overlap only in ``C[const, const]``, 0 after centring.
    A neuron with zero variance (rms after centring ≤ 1e-12 · |mean|, which covers rounding)
    gets 0 in columns 1 … K and 1 in column 0.

    Computed without the full p × p transform (p = 113, N = 512 would cost 3 GFLOP): the block
    is ``const ⊗ V_k`` + ``V_k ⊗ const`` + ``V_k ⊗ V_k`` with ``V_k = span(cos k, sin k)``, and
    by product-to-sum ``V_k ⊗ V_k = span(cos w_k(x+y), sin w_k(x+y), cos w_k(x−y), sin w_k(x−y))``,
    four orthogonal grid vectors of squared norm p²/2. So the block's coefficients are 1-D
    transforms of four sums of A (over x, over y, along x + y ≡ s, along x − y ≡ s), each
    divided by √p. For even p the x + y and x − y vectors of frequency p/2 coincide,
    ``(−1)^(x+y)``, and count once. ``tests/test_fourier.py`` checks this against ``F A Fᵀ``.
    """
    if acts.ndim != 3 or acts.shape[0] != acts.shape[1]:
        raise ValueError(f"expected activations of shape (p, p, n_neurons), got {tuple(acts.shape)}")
    p, _, N = acts.shape
    K = n_frequencies(p)
    A2 = torch.empty(p, 2 * p, N, dtype=_F64)  # A twice along y, for _diagonal_sums
    A = A2[:, :p]  # (p, p, N) view
    A.copy_(acts.detach())
    over_x = A.sum(dim=0)  # (p, N): a function of y
    mean = over_x.sum(dim=0) / (p * p)  # (N,)
    A.sub_(mean)  # each neuron centred
    over_x.sub_(p * mean)
    A2[:, p:] = A
    sums = torch.stack([
        over_x,  # -> const ⊗ V_k
        A.sum(dim=1),  # (p, N) over y, a function of x -> V_k ⊗ const
        _diagonal_sums(A2, +1),  # along x + y ≡ s -> cos, sin of w_k(x + y)
        _diagonal_sums(A2, -1),  # along x − y ≡ s -> cos, sin of w_k(x − y)
    ])  # (4, p, N)
    coeffs_sq = (fourier_basis(p) @ sums).square() / p  # (4, p, N): on unit grid vectors
    if p % 2 == 0:
        coeffs_sq[3, -1] = 0.0  # (−1)^(x−y) = (−1)^(x+y): already counted in the x + y row
    per_row = coeffs_sq.sum(dim=0)  # (p, N)
    energy = torch.zeros(K + 1, N, dtype=_F64).index_add_(0, row_frequency(p), per_row)[1:]
    # (N,) = variance · p². Squared in place (A is not needed after this); summed one axis at
    # a time because sum over (0, 1) of this strided view takes a slow path in torch
    total = A.square_().sum(dim=1).sum(dim=0)
    flat = total <= 1e-24 * (p * p) * mean.square()  # (N,); all-zero neurons: 0 <= 0
    frac = torch.where(flat, 0.0, energy / torch.where(flat, 1.0, total))  # (K, N)
    rest = (1.0 - frac.sum(dim=0)).clamp(min=0.0)  # (N,)
    return torch.cat([rest[None, :], frac]).T.contiguous()  # (N, K + 1)


def neuron_clusters(fractions: Tensor, threshold: float = 0.85) -> dict[int, list[int]]:
    """Frequency k ≥ 1 → sorted indices of the neurons whose fraction for k is ≥ ``threshold``.

    Only non-empty clusters are returned.
    """
    out: dict[int, list[int]] = {}
    member = fractions[:, 1:] >= threshold  # (N, K)
    for i in torch.nonzero(member.any(dim=0)).flatten().tolist():
        out[i + 1] = torch.nonzero(member[:, i]).flatten().tolist()
    return out


def key_frequencies_from_clusters(clusters: dict[int, list[int]], n_neurons: int,
                                  min_size: int | None = None) -> list[int]:
    """The frequencies with a non-trivial cluster, sorted ascending.

    A non-trivial cluster has at least ``min_size`` neurons; by default
    ``max(3, ⌈0.01 · n_neurons⌉)`` (3 neurons for up to 300 neurons, 6 for Nanda's 512).
    """
    if min_size is None:
        min_size = max(3, math.ceil(0.01 * n_neurons))
    return sorted(k for k, members in clusters.items() if len(members) >= min_size)


# --- restricted and excluded loss ----------------------------------------------------------


def sum_direction_basis(p: int, key_freqs: list[int], op: str = "add",
                        include_constant: bool = True) -> Tensor:
    """Orthonormal columns over the (x, y) grid, ``(p², m)``, row-major (index ``x·p + y``).

    The constant vector (if ``include_constant``), then for each key k the unit vectors
    ``cos(w_k s)`` and ``sin(w_k s)``, ``w_k = 2πk/p``, ``s = x + y`` (op ``"add"``) or
    ``x − y`` (``"sub"``). A column that is identically zero (sin at k = p/2) is dropped.
    Key frequencies must be distinct and in 1 … K.
    """
    p = _check_p(p)
    if op not in ("add", "sub"):
        raise ValueError(f"op must be 'add' or 'sub', got {op!r}")
    K = n_frequencies(p)
    keys = [int(k) for k in key_freqs]
    bad = [k for k in keys if not 1 <= k <= K]
    if bad or len(set(keys)) != len(keys):
        raise ValueError(f"key frequencies must be distinct and in 1..{K} for p = {p}, "
                         f"got {list(key_freqs)}")
    x = torch.arange(p)
    s = (x[:, None] + x[None, :]) if op == "add" else (x[:, None] - x[None, :])
    s = (s % p).reshape(-1)  # (p²,)
    cols = [torch.ones(p * p, dtype=_F64)] if include_constant else []
    for k in keys:
        angle = 2 * math.pi * ((k * s) % p).to(_F64) / p
        cols.append(torch.cos(angle))
        if 2 * k != p:  # sin(π s) is 0 everywhere
            cols.append(torch.sin(angle))
    if not cols:
        return torch.zeros(p * p, 0, dtype=_F64)
    Q = torch.stack(cols, dim=1)  # (p², m)
    return Q / Q.norm(dim=0, keepdim=True)


def _check_grid(logits: Tensor, labels: Tensor, p: int) -> None:
    if logits.ndim != 2 or logits.shape[0] != p * p:
        raise ValueError(f"expected logits of shape (p² = {p * p}, n_classes) in row-major "
                         f"(x, y) order, got {tuple(logits.shape)}")
    if tuple(labels.shape) != (p * p,):
        raise ValueError(f"expected labels of shape ({p * p},), got {tuple(labels.shape)}")


def _cross_entropy(logits: Tensor, labels: Tensor) -> float:
    if logits.shape[0] == 0:
        raise ValueError("cross-entropy over no pairs (empty train_idx)")
    return float(torch.nn.functional.cross_entropy(logits, labels.to("cpu", torch.long)))


def restricted_loss(logits: Tensor, labels: Tensor, key_freqs: list[int], p: int,
                    op: str = "add") -> float:
    """Cross-entropy over all p² pairs of the logits kept only on constant + key directions.

    ``L`` is ``(p², C)``. With Q = ``sum_direction_basis(p, key_freqs, op)``:
    ``kept = Q Qᵀ L``, ``removed = L − kept``, ``L' = kept + mean_over_pairs(removed)`` (the bias
    correction, per class; it is zero up to rounding because the constant is in Q, and is kept
    so the code reads like the definition).
    """
    _check_grid(logits, labels, p)
    L = _f64(logits)  # (p², C)
    Q = sum_direction_basis(p, key_freqs, op)  # (p², m)
    kept = Q @ (Q.T @ L)
    removed = L - kept
    return _cross_entropy(kept + removed.mean(dim=0, keepdim=True), labels)


def excluded_loss(logits: Tensor, labels: Tensor, key_freqs: list[int], p: int,
                  op: str = "add", train_idx: Tensor | None = None) -> float:
    """Cross-entropy on the pairs ``train_idx`` (all if None) after removing the key directions.

    ``L' = L − Q Qᵀ L`` with Q = ``sum_direction_basis(p, key_freqs, op, include_constant=False)``;
    no bias correction.
    """
    _check_grid(logits, labels, p)
    L = _f64(logits)  # (p², C)
    Q = sum_direction_basis(p, key_freqs, op, include_constant=False)
    L, labels = L - Q @ (Q.T @ L), labels.to("cpu")
    if train_idx is not None:
        idx = torch.as_tensor(train_idx).to("cpu")
        L, labels = L[idx], labels[idx]
    return _cross_entropy(L, labels)


def excluded_loss_per_frequency(logits: Tensor, labels: Tensor, key_freqs: list[int], p: int,
                                op: str = "add",
                                train_idx: Tensor | None = None) -> dict[int, float]:
    """k → ``excluded_loss`` with only frequency k removed, for each k in ``key_freqs``."""
    return {int(k): excluded_loss(logits, labels, [k], p, op, train_idx) for k in key_freqs}


def restricted_and_excluded(logits: Tensor, labels: Tensor, key_freqs: list[int], p: int,
                            op: str = "add", train_idx: Tensor | None = None) -> dict[str, Any]:
    """``restricted_loss``, ``excluded_loss`` and ``excluded_loss_per_frequency`` in one pass.

    The same definitions, computed the fast way for the analysis of many checkpoints: the
    coefficients ``Qᵀ L`` over the key directions are computed once, and for the excluded losses
    only the train rows are reconstructed (``L[train] − Q[train] Qᵀ L``), per frequency from that
    frequency's two columns. ``tests/test_fourier.py`` holds it equal to the three functions.
    """
    _check_grid(logits, labels, p)
    L = _f64(logits)  # (p², C)
    labels = labels.to("cpu")
    Q = _cached_directions(p, tuple(int(k) for k in key_freqs), op)  # (p², 1 + m): const first
    coef = Q.T @ L  # (1 + m, C)
    kept = Q @ coef
    restricted = _cross_entropy(kept + (L - kept).mean(dim=0, keepdim=True), labels)
    idx = torch.arange(p * p) if train_idx is None else torch.as_tensor(train_idx).to("cpu")
    L_tr, Q_tr, y_tr = L[idx], Q[idx], labels[idx]
    excluded = _cross_entropy(L_tr - Q_tr[:, 1:] @ coef[1:], y_tr)
    per: dict[int, float] = {}
    col = 1
    for k in key_freqs:
        width = 1 if 2 * int(k) == p else 2  # sin(π s) is dropped at k = p/2
        sl = slice(col, col + width)
        per[int(k)] = _cross_entropy(L_tr - Q_tr[:, sl] @ coef[sl], y_tr)
        col += width
    return {"restricted_loss": restricted, "excluded_loss": excluded,
            "excluded_loss_per_frequency": per}


@functools.lru_cache(maxsize=16)
def _cached_directions(p: int, key_freqs: tuple[int, ...], op: str) -> Tensor:
    return sum_direction_basis(p, list(key_freqs), op, include_constant=True)


# --- sparsity ------------------------------------------------------------------------------


def gini(c: Tensor) -> float:
    """Gini coefficient (Hurley & Rickard) of ``|c|``, ``(N,)`` → float in [0, 1 − 1/N].

    With ``c₁ ≤ … ≤ c_N`` sorted ascending: ``G = 1 − 2 Σ_i (c_i / ‖c‖₁)(N − i + ½)/N``,
    i = 1 … N. One-hot → 1 − 1/N; flat → 0; all zeros → 0.
    """
    v = _f64(c).reshape(-1).abs()
    N = v.numel()
    if N == 0:
        raise ValueError("gini of an empty vector")
    total = v.sum()
    if float(total) == 0.0:
        return 0.0
    v, _ = torch.sort(v)
    i = torch.arange(1, N + 1, dtype=_F64)
    return float(1.0 - 2.0 * torch.sum((v / total) * (N - i + 0.5) / N))
