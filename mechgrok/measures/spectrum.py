"""The 2-D Fourier spectrum over Z_p × Z_p, for the tasks with no group structure (MEASURES.md §7).

``cond``, ``quad1``–``quad3``, ``cube1`` and ``cube2`` (``Task.algebra.kind == "none"``) are not
a rule in any group, so no representation theory says which circuit computes them. They are read
in the 2-D Fourier basis of Z_p × Z_p, the products of the 1-D bases over x and over y. This
*describes* a table (where its variation lives over pairs of frequencies); it claims no circuit.

Pure functions of arrays (NumPy float64; torch CPU tensors are accepted and converted). Nothing
here knows about models, hooks or run directories. Conventions:

* **1-D basis** (:func:`fourier_basis_1d`): exactly :func:`mechgrok.probes.fourier.fourier_basis`
  (``tests/test_spectrum.py`` holds them equal), as a NumPy array: rows ``const, cos 1, sin 1, …,
  cos K, sin K``, ``cos_k[x] = cos(2πkx/p)``, cos before sin, every row of unit norm (the p × p
  matrix F is orthonormal); K = ``p // 2``; for even p, frequency p/2 has only its cos row
  ``(−1)^x``. Row r has frequency ``(r + 1) // 2`` (:func:`row_frequencies`).
* **Grids.** A table is ``(p, p)`` indexed ``[x, y]``; a quantity over all input pairs is
  ``(p², …)`` in row-major order (row ``x·p + y``), as ``Task.pairs`` lists them.
* **2-D basis.** ``B_ab[x, y] = F[a, x] · F[b, y]``: p² orthonormal functions on the grid. The
  coefficients of a table T are ``C = F T Fᵀ`` (``C[a, b] = ⟨B_ab, T⟩``).
* **Frequency pairs.** (k_x, k_y) ∈ {0 … K}² collects the basis functions whose x row has
  frequency k_x and y row frequency k_y: 1 (both 0), 2 (one 0) or 4 of them (for even p, one
  fewer for each p/2). :func:`spectrum2d`'s ``power[k_x, k_y]`` is the sum of their squared
  coefficients, so the powers add up to ``‖T‖²`` (Parseval). Frequencies are *folded* (the real
  basis has no sign): k and −k are one frequency, so ``cos(w(x + y))`` and ``cos(w(x − y))``
  both lie at (k, k), a function of x + y (or x − y) lies on the diagonal k_x = k_y, and a
  function of x + m·y on the pairs (k, fold(m·k)), ``fold(j) = min(j mod p, −j mod p)``.
* **Centring.** ``centre=True`` removes the table's mean first: the (0, 0) power is then 0.
  The pair (0, 0) is the mean, never a "component" (below).
* **Correct-logit table** (:func:`correct_logit_table`): ``T[x, y] = logits[x·p + y, a(x, y)]``,
  the logit of the right answer, from ``(p², C)`` logits and the ``(p²,)`` answers.
* **Neuron spectrum** (:func:`neuron_spectrum`): each neuron's activations over the grid,
  centred, give a spectrum normalised to sum 1 (the share of its variance per frequency pair);
  the result is the mean over neurons. A dead neuron (no variance: rms after centring ≤ 1e-12 ·
  |mean|, which covers rounding) has no spectrum and is left out of the mean; with no live neuron
  the result is all zeros.
* **Key components** (:func:`key_components`): the *fewest* frequency pairs whose power adds up
  to at least ``fraction`` (default 0.9) of the power outside (0, 0): pairs sorted by power,
  largest first (ties by (k_x, k_y) ascending), taken until the running sum reaches the fraction
  (within 1e-12, relative, so that ``fraction = 1`` is reached despite rounding); pairs with zero
  power are never taken. Sorting by power makes the prefix the smallest set that reaches the
  fraction, and a fraction rather than a threshold per pair (``> max / 4`` …) counts the same
  way on a sparse and on a spread-out spectrum, so the count is comparable over checkpoints and
  tasks. A table with no power outside (0, 0) has no component.
* **Restricted and excluded loss** (:func:`restricted_loss_2d`, :func:`excluded_loss_2d`), as
  Nanda's in :mod:`mechgrok.probes.fourier` with 2-D basis functions in place of the functions
  of x ± y: each output-class column of the ``(p², C)`` logits, a function on the grid, is
  projected on the span of the basis functions of the chosen frequency pairs. *Restricted*: kept
  = that projection plus the constant (the (0, 0) function), plus the mean over pairs of what
  was removed (the bias correction; 0 up to rounding because the constant is kept),
  cross-entropy over all p² pairs. *Excluded*: the logits minus their projection on the chosen
  pairs (the constant is not removed, no bias correction), cross-entropy on the given pairs
  (the training pairs; all when None). The pair (0, 0) may not be chosen: restricted loss always
  keeps it and excluded loss never removes it.
"""

from __future__ import annotations

import functools
import math
from collections.abc import Iterable, Sequence
from typing import Any

import numpy as np

from mechgrok.errors import ConfigError

__all__ = ["DEFAULT_FRACTION", "component_mask", "correct_logit_table", "excluded_loss_2d",
           "fourier_basis_1d", "key_components", "logits_spectrum", "neuron_spectra",
           "neuron_spectrum", "restricted_and_excluded_2d", "restricted_loss_2d",
           "row_frequencies", "spectrum2d", "top_fraction"]

DEFAULT_FRACTION = 0.9  # key components carry this share of the power outside (0, 0)

Pair = tuple[int, int]


def _array(a: Any) -> np.ndarray:
    """``a`` as a float64 NumPy array (a torch tensor is detached and moved to the CPU)."""
    if hasattr(a, "detach"):
        a = a.detach().cpu().numpy()
    return np.asarray(a, dtype=np.float64)


def _check_p(p: int) -> int:
    if isinstance(p, bool) or int(p) != p or p < 2:
        raise ValueError(f"p must be an integer ≥ 2, got {p!r}")
    return int(p)


# --- the bases -------------------------------------------------------------------------------


def fourier_basis_1d(p: int) -> np.ndarray:
    """The orthonormal Fourier basis over Z_p, ``(p, p)`` float64, rows ``const, cos 1, sin 1, …``.

    Row r ≥ 1 is ``cos(2πkx/p)`` (r odd) or ``sin(2πkx/p)`` (r even), ``k = (r + 1) // 2``,
    divided by its norm; for even p the last row is ``(−1)^x``. Built once per p, read-only.
    """
    return _basis(_check_p(p))


@functools.lru_cache(maxsize=32)
def _basis(p: int) -> np.ndarray:
    r = np.arange(p)
    k = (r + 1) // 2  # (p,) row frequency
    angle = 2 * math.pi * ((k[:, None] * r[None, :]) % p) / p  # (p, p); kx mod p: exact
    rows = np.where((r % 2 == 1)[:, None], np.cos(angle), np.sin(angle))
    rows[0] = 1.0
    rows /= np.linalg.norm(rows, axis=1, keepdims=True)
    rows.setflags(write=False)
    return rows


def row_frequencies(p: int) -> np.ndarray:
    """The frequency of each row of :func:`fourier_basis_1d`, ``(p,)`` int64: 0, 1, 1, 2, 2, …"""
    return (np.arange(_check_p(p)) + 1) // 2


def _coefficients(grid: np.ndarray) -> np.ndarray:
    """``(p, p, …)`` values over the grid → their 2-D coefficients ``C[a, b, …]`` (``F T Fᵀ`` for
    every trailing index): one matrix product over x, then one per a over y, with no transpose
    of the (large) grid."""
    p = grid.shape[0]
    F = fourier_basis_1d(p)
    half = (F @ grid.reshape(p, -1)).reshape(p, p, -1)  # (a, y, m): over x
    return np.matmul(F, half).reshape(grid.shape)  # (a, b, m): F @ half[a], over y


def _pool_axis(q: np.ndarray, axis: int) -> np.ndarray:
    """Sum the rows of each frequency along ``axis``: row 0, then rows (2k − 1, 2k) for
    k = 1 … ⌊(p − 1)/2⌋, then, for even p, row p − 1 (frequency p/2) alone."""
    q = np.moveaxis(q, axis, 0)
    n = q.shape[0]
    m = (n - 1) // 2
    parts = [q[:1], q[1:2 * m:2] + q[2:2 * m + 1:2]] + ([q[n - 1:]] if n % 2 == 0 else [])
    return np.moveaxis(np.concatenate(parts), 0, axis)


def _pool(coeffs_sq: np.ndarray) -> np.ndarray:
    """Squared coefficients ``(p, p, …)`` → powers per frequency pair ``(K + 1, K + 1, …)``."""
    return _pool_axis(_pool_axis(coeffs_sq, 0), 1)


# --- spectra ---------------------------------------------------------------------------------


def spectrum2d(table: Any, centre: bool = False) -> np.ndarray:
    """``(p, p)`` table ``T[x, y]`` → ``(K + 1, K + 1)`` power per frequency pair (k_x, k_y).

    ``power[k_x, k_y]`` = Σ of ``C[a, b]²`` over the basis rows a of frequency k_x and b of
    frequency k_y, ``C = F T Fᵀ``; the powers add up to ``‖T‖²`` (to ``‖T − mean‖²`` with
    ``centre``, which makes ``power[0, 0]`` 0).
    """
    T = _array(table)
    if T.ndim != 2 or T.shape[0] != T.shape[1]:
        raise ValueError(f"expected a (p, p) table indexed [x, y], got shape {T.shape}")
    _check_p(T.shape[0])
    if centre:
        T = T - T.mean()
    return _pool(np.square(_coefficients(T)))


def correct_logit_table(logits: Any, labels: Any, p: int) -> np.ndarray:
    """``(p², C)`` logits in row-major (x, y) order and ``(p²,)`` answers → ``(p, p)`` table
    ``T[x, y]``, the logit of the right answer of (x, y)."""
    p = _check_p(p)
    L = _array(logits)
    y = np.asarray(labels.detach().cpu().numpy() if hasattr(labels, "detach") else labels)
    if L.ndim != 2 or L.shape[0] != p * p or y.shape != (p * p,):
        raise ValueError(f"expected logits (p² = {p * p}, n_classes) and labels ({p * p},) in "
                         f"row-major (x, y) order, got {L.shape} and {y.shape}")
    return L[np.arange(p * p), y.astype(np.int64)].reshape(p, p)


def logits_spectrum(logits: Any, p: int) -> np.ndarray:
    """``(p², C)`` logits in row-major (x, y) order → ``(K + 1, K + 1)``: the power of every
    output-class column, centred over the grid, summed over the classes (what restricted and
    excluded loss act on; it adds up to the squared norm of the centred logits)."""
    p = _check_p(p)
    L = _array(logits)
    if L.ndim != 2 or L.shape[0] != p * p:
        raise ValueError(f"expected logits (p² = {p * p}, n_classes) in row-major (x, y) order, "
                         f"got {L.shape}")
    L = (L - L.mean(axis=0)).reshape(p, p, -1)
    return _pool(np.square(_coefficients(L))).sum(axis=2)


def neuron_spectra(acts: Any) -> tuple[np.ndarray, np.ndarray]:
    """``(p, p, N)`` activations on every (x, y) → (``(N, K + 1, K + 1)`` each neuron's spectrum
    of its centred grid, normalised to sum 1; ``(N,)`` bool, True for a live neuron). A dead
    neuron's spectrum is all zeros (see the module docstring)."""
    A = _array(acts)
    if A.ndim != 3 or A.shape[0] != A.shape[1]:
        raise ValueError(f"expected activations of shape (p, p, n_neurons), got {A.shape}")
    p = _check_p(A.shape[0])
    mean = A.mean(axis=(0, 1))  # (N,)
    A = A - mean
    total = np.square(A).sum(axis=(0, 1))  # (N,): variance · p²
    live = total > 1e-24 * (p * p) * np.square(mean)  # an all-zero neuron: 0 > 0 is False
    power = _pool(np.square(_coefficients(A)))  # (K + 1, K + 1, N)
    out = np.zeros_like(power)
    out[..., live] = power[..., live] / total[live]
    return np.moveaxis(out, 2, 0), live


def neuron_spectrum(acts: Any) -> np.ndarray:
    """``(p, p, N)`` activations → ``(K + 1, K + 1)``: the mean over live neurons of each one's
    normalised spectrum (sums to 1; all zeros when no neuron is live)."""
    spectra, live = neuron_spectra(acts)
    if not live.any():
        return np.zeros(spectra.shape[1:])
    return spectra[live].mean(axis=0)


# --- components ------------------------------------------------------------------------------


def _check_fraction(fraction: float) -> float:
    if isinstance(fraction, bool) or not isinstance(fraction, (int, float)) or not (
            0.0 < fraction <= 1.0):
        raise ConfigError(f"the fraction of power the key components carry must be a number in "
                          f"(0, 1], got {fraction!r}")
    return float(fraction)


def _outside_mean(spectrum: Any) -> np.ndarray:
    S = _array(spectrum)
    if S.ndim != 2 or S.shape[0] != S.shape[1] or S.shape[0] < 2:
        raise ValueError(f"expected a (K + 1, K + 1) spectrum with K ≥ 1, got shape {S.shape}")
    S = S.copy()
    S[0, 0] = 0.0  # the mean is never a component
    return S


def key_components(spectrum: Any, fraction: float = DEFAULT_FRACTION) -> list[Pair]:
    """The fewest frequency pairs (k_x, k_y) carrying ``fraction`` of the power outside (0, 0),
    largest power first (the rule in the module docstring)."""
    f = _check_fraction(fraction)
    S = _outside_mean(spectrum)
    flat = S.reshape(-1)
    total = float(flat.sum())
    if not total > 0.0:
        return []
    order = np.argsort(-flat, kind="stable")  # ties: row-major (k_x, k_y) ascending
    running = np.cumsum(flat[order])
    n = int(np.searchsorted(running, f * total * (1.0 - 1e-12))) + 1
    n = min(n, int((flat > 0).sum()))
    width = S.shape[1]
    return [(int(i // width), int(i % width)) for i in order[:n]]


def top_fraction(spectrum: Any) -> float:
    """The share of the power outside (0, 0) in its largest pair; NaN when there is none."""
    S = _outside_mean(spectrum)
    total = float(S.sum())
    return float(S.max() / total) if total > 0.0 else math.nan


def component_mask(p: int, pairs: Iterable[Sequence[int]], include_constant: bool = False
                   ) -> np.ndarray:
    """``(p, p)`` bool over the 2-D basis functions ``B_ab``: True when (freq a, freq b) is one of
    ``pairs`` (or is (0, 0) and ``include_constant``). Pairs must be distinct, in {0 … K}², and
    not (0, 0)."""
    p = _check_p(p)
    K = p // 2
    chosen = [(int(a), int(b)) for a, b in pairs]
    bad = [c for c in chosen if not (0 <= c[0] <= K and 0 <= c[1] <= K) or c == (0, 0)]
    if bad or len(set(chosen)) != len(chosen):
        raise ConfigError(f"frequency pairs must be distinct, in 0..{K} for p = {p} and not "
                          f"(0, 0) (the mean: restricted loss keeps it, excluded loss never "
                          f"removes it); got {chosen}")
    wanted = np.zeros((K + 1, K + 1), dtype=bool)
    for a, b in chosen:
        wanted[a, b] = True
    wanted[0, 0] = include_constant
    freq = row_frequencies(p)
    return wanted[freq[:, None], freq[None, :]]


# --- restricted and excluded loss ------------------------------------------------------------


def _cross_entropy(logits: np.ndarray, labels: np.ndarray) -> float:
    if logits.shape[0] == 0:
        raise ValueError("cross-entropy over no pairs (empty train_idx)")
    top = logits.max(axis=1, keepdims=True)
    lse = top[:, 0] + np.log(np.exp(logits - top).sum(axis=1))
    return float(np.mean(lse - logits[np.arange(len(labels)), labels]))


def _grid_logits(logits: Any, labels: Any, p: int) -> tuple[np.ndarray, np.ndarray]:
    L = _array(logits)
    y = np.asarray(labels.detach().cpu().numpy() if hasattr(labels, "detach") else labels)
    if L.ndim != 2 or L.shape[0] != p * p or y.shape != (p * p,):
        raise ValueError(f"expected logits (p² = {p * p}, n_classes) and labels ({p * p},) in "
                         f"row-major (x, y) order, got {L.shape} and {y.shape}")
    return L, y.astype(np.int64)


def _project(L: np.ndarray, mask: np.ndarray) -> np.ndarray:
    """Every column of ``(p², C)`` projected on the span of the masked 2-D basis functions."""
    p = mask.shape[0]
    C = _coefficients(L.reshape(p, p, -1)) * mask[:, :, None]  # (a, b, C)
    F = fourier_basis_1d(p)
    half = (F.T @ C.reshape(p, -1)).reshape(p, p, -1)  # (x, b, C): Fᵀ over a
    return np.matmul(F.T, half).reshape(p * p, -1)  # (x, y, C): Fᵀ @ half[x], over b


def restricted_and_excluded_2d(logits: Any, labels: Any, pairs: Iterable[Sequence[int]], p: int,
                               train_idx: Any = None) -> dict[str, float]:
    """``{"restricted_loss", "excluded_loss"}`` over the frequency ``pairs`` in one pass (the
    definitions of :func:`restricted_loss_2d` and :func:`excluded_loss_2d`)."""
    p = _check_p(p)
    L, y = _grid_logits(logits, labels, p)
    mask = component_mask(p, pairs)
    chosen = _project(L, mask)  # (p², C): on the chosen pairs, no constant
    kept = chosen + L.mean(axis=0, keepdims=True)  # + the constant's projection
    restricted = _cross_entropy(kept + (L - kept).mean(axis=0, keepdims=True), y)
    idx = np.arange(p * p) if train_idx is None else np.asarray(
        train_idx.detach().cpu().numpy() if hasattr(train_idx, "detach") else train_idx,
        dtype=np.int64)
    excluded = _cross_entropy((L - chosen)[idx], y[idx])
    return {"restricted_loss": restricted, "excluded_loss": excluded}


def restricted_loss_2d(logits: Any, labels: Any, pairs: Iterable[Sequence[int]], p: int
                       ) -> float:
    """Cross-entropy over all p² pairs of the logits kept on the constant and ``pairs``."""
    return restricted_and_excluded_2d(logits, labels, pairs, p)["restricted_loss"]


def excluded_loss_2d(logits: Any, labels: Any, pairs: Iterable[Sequence[int]], p: int,
                     train_idx: Any = None) -> float:
    """Cross-entropy on ``train_idx`` (all pairs if None) of the logits minus ``pairs``."""
    return restricted_and_excluded_2d(logits, labels, pairs, p, train_idx)["excluded_loss"]
