"""Restricted and excluded loss in a group's irreducible representations, and the share of a
network's activations each irrep explains (MEASURES.md §4, §7).

Pure functions of arrays (NumPy float64). Layout as in :mod:`~mechgrok.measures.metrics`:
``logits`` are ``(order², C)``, one row per group pair (x, y) row-major (row ``x·order + y``);
the columns are the model's answer classes (C may exceed the group's order: a task's token 0
outside Z_p*, say); ``labels`` are class indices.

**Directions.** An irrep ρ's *answer directions* are the functions of the pair that depend on
it only through the answer a(x, y) (the task's rule, :data:`~mechgrok.measures.RULES`) and lie
in the span of ρ's matrix entries: ``(x, y) ↦ f(a(x, y))`` for f in
:func:`~mechgrok.measures.basis` (ρ). For the cyclic group Z_p with rule xy these are
``cos(w_k(x + y))`` and ``sin(w_k(x + y))``, exactly Nanda et al.'s key directions; for xy⁻¹
the same with x − y; the trivial irrep is the constant. Because y ↦ a(x, y) is a bijection for
every x, each answer occurs ``order`` times, so lifting an orthonormal basis over G gives
orthonormal columns over the pairs once divided by √order, and the spans of distinct irreps stay
orthogonal. Nothing of size order² × m is built: every product goes through the per-answer sums
``S[a, c] = Σ_{(x, y): a(x, y) = a} L[(x, y), c]``.

**Restricted loss** keeps, in every class column, only the components along the trivial and the
key irreps' directions (as Nanda et al., the constant is always kept), over all pairs;
**excluded loss** removes the key irreps' directions (the constant stays) and is taken over the
training pairs. Both are cross-entropies in float64 (the mean over pairs of −log softmax at the
label). On Z_p these are the Fourier definitions of :mod:`mechgrok.probes.fourier` (tested to
1e-9 on a trained model's logits).

**Variance explained** (:func:`answer_variance_explained`) of activations over the pairs
``(order², N)`` (neurons): the fraction of their squared norm, after subtracting each column's
mean over pairs, that lies in each irrep's answer directions: how much of what the neurons
compute is a function of the answer in that irrep. The embedding's and unembedding's share per
irrep are :func:`~mechgrok.measures.variance_explained` of their rows over the elements.
"""

from __future__ import annotations

import functools
import math
from collections.abc import Sequence
from typing import Any

import numpy as np

from mechgrok.measures.groups import Group
from mechgrok.measures.groups import group as as_group
from mechgrok.measures.metrics import answer_table
from mechgrok.measures.representations import Irrep, basis, find_irrep, irreps

__all__ = ["answer_directions", "answer_variance_explained", "cross_entropy",
           "per_answer_sums", "restricted_and_excluded"]


def _irrep(g: Group, rep: Irrep | str) -> Irrep:
    return find_irrep(g, rep) if isinstance(rep, str) else rep


def _array(a: Any) -> np.ndarray:
    return np.asarray(a.detach().cpu().numpy() if hasattr(a, "detach") else a, dtype=np.float64)


@functools.lru_cache(maxsize=32)
def _answer_order(g: Group, rule: str) -> tuple[np.ndarray, np.ndarray]:
    """(flat answer of each pair ``(order²,)``, the pairs sorted by answer ``(order, order)``)."""
    a = answer_table(g, rule).reshape(-1)
    by_answer = np.argsort(a, kind="stable").reshape(g.order, g.order)
    return a, by_answer


def per_answer_sums(values: Any, group: Group | str, rule: str = "xy") -> np.ndarray:
    """``S[a, c] = Σ_{(x, y): a(x, y) = a} values[(x, y), c]``, ``(order, C)`` float64."""
    g = as_group(group)
    v = _array(values)
    if v.ndim != 2 or v.shape[0] != g.order ** 2:
        raise ValueError(f"expected values of shape (order² = {g.order ** 2}, C), rows the pairs "
                         f"(x, y) row-major, got {v.shape}")
    _, by_answer = _answer_order(g, rule)
    return v[by_answer].sum(axis=1)


def _bases(g: Group, reps: Sequence[Irrep | str]) -> list[np.ndarray]:
    return [_basis(_irrep(g, r)) for r in reps]


@functools.lru_cache(maxsize=512)
def _basis(rep: Irrep) -> np.ndarray:
    """:func:`~mechgrok.measures.basis`, once per irrep (irreps are cached with their group)."""
    b = basis(rep)
    b.setflags(write=False)
    return b


def answer_directions(group: Group | str, reps: Sequence[Irrep | str], rule: str = "xy",
                      include_trivial: bool = True) -> np.ndarray:
    """``(order², m)`` orthonormal columns: the constant (when ``include_trivial`` and the
    trivial irrep is not among ``reps``), then each irrep's answer directions in its
    :func:`~mechgrok.measures.basis` order. Materialised for tests and notebooks; the loss
    functions never build it."""
    g = as_group(group)
    a, _ = _answer_order(g, rule)
    cols = [_trivial(g)] if include_trivial and not _has_trivial(g, reps) else []
    cols += _bases(g, reps)
    q = np.concatenate(cols, axis=1) if cols else np.zeros((g.order, 0))
    return q[a] / math.sqrt(g.order)


def _trivial(g: Group) -> np.ndarray:
    return np.full((g.order, 1), 1.0 / math.sqrt(g.order))


def _has_trivial(g: Group, reps: Sequence[Irrep | str]) -> bool:
    trivial = irreps(g)[0].name
    return any(_irrep(g, r).name == trivial for r in reps)


def cross_entropy(logits: np.ndarray, labels: np.ndarray) -> float:
    """Mean over rows of −log softmax(logits)[label], float64, computed stably."""
    if logits.shape[0] == 0:
        raise ValueError("cross-entropy over no pairs (empty train_idx)")
    m = logits.max(axis=1, keepdims=True)
    lse = np.log(np.exp(logits - m).sum(axis=1)) + m[:, 0]
    return float(np.mean(lse - logits[np.arange(len(labels)), labels]))


def _check(g: Group, L: np.ndarray, labels: np.ndarray) -> None:
    if L.ndim != 2 or L.shape[0] != g.order ** 2:
        raise ValueError(f"expected logits of shape (order² = {g.order ** 2}, C) for {g.name}, "
                         f"rows (x, y) row-major, got {L.shape}")
    if labels.shape != (g.order ** 2,):
        raise ValueError(f"expected labels of shape ({g.order ** 2},), got {labels.shape}")


def restricted_and_excluded(logits: Any, labels: Any, group: Group | str,
                            key_reps: Sequence[Irrep | str], rule: str = "xy",
                            train_idx: Any = None) -> dict[str, Any]:
    """Restricted loss (all pairs), excluded loss (``train_idx``, all pairs if None) and the
    excluded loss with each key irrep alone removed (``excluded_loss_per_irrep``: name → loss).

    ``kept = Q Qᵀ L`` with Q the constant and the key irreps' answer directions;
    ``L' = kept + mean over pairs of (L − kept)`` for the restricted loss (the mean is zero up to
    rounding: the constant is in Q; kept so it reads as Nanda's definition); ``L − Q₊ Q₊ᵀ L``
    (Q₊ without the constant) for the excluded loss. See the module docstring.
    """
    g = as_group(group)
    L, y = _array(logits), np.asarray(labels, dtype=np.int64).reshape(-1)
    _check(g, L, y)
    reps = [_irrep(g, r) for r in key_reps]
    if len({r.name for r in reps}) != len(reps):
        raise ValueError(f"key irreps repeat: {[r.name for r in reps]}")
    reps = [r for r in reps if r.name != irreps(g)[0].name]  # the constant is always kept
    a, _ = _answer_order(g, rule)
    S = per_answer_sums(L, g, rule)  # (order, C)
    scale = 1.0 / g.order  # (1/√order)² from the lifted columns
    const = _trivial(g)
    bases = _bases(g, reps)
    coefs = [b.T @ S for b in bases]  # each (r, C): Qᵀ L of that irrep, times √order
    kept_g = const @ (const.T @ S) + sum((b @ c for b, c in zip(bases, coefs)),
                                         np.zeros_like(S))
    kept = kept_g[a] * scale  # (order², C)
    restricted = cross_entropy(kept + (L - kept).mean(axis=0, keepdims=True), y)
    idx = np.arange(len(y)) if train_idx is None else np.asarray(train_idx, dtype=np.int64)
    L_tr, a_tr, y_tr = L[idx], a[idx], y[idx]
    removed = [(b @ c)[a_tr] * scale for b, c in zip(bases, coefs)]
    excluded = cross_entropy(L_tr - sum(removed, np.zeros_like(L_tr)), y_tr)
    per = {r.name: cross_entropy(L_tr - rm, y_tr) for r, rm in zip(reps, removed)}
    return {"restricted_loss": restricted, "excluded_loss": excluded,
            "excluded_loss_per_irrep": per}


def answer_variance_explained(acts: Any, group: Group | str, reps: Sequence[Irrep | str],
                              rule: str = "xy") -> np.ndarray:
    """``(len(reps),)``: the fraction of the centred activations' squared norm (``acts``
    ``(order², N)``, each column's mean over pairs subtracted) in each irrep's answer
    directions; 0 for activations that are constant."""
    g = as_group(group)
    A = _array(acts)
    if A.ndim != 2 or A.shape[0] != g.order ** 2:
        raise ValueError(f"expected activations of shape (order² = {g.order ** 2}, N), got "
                         f"{A.shape}")
    raw = float(np.einsum("ij,ij->", A, A))
    A = A - A.mean(axis=0, keepdims=True)
    total = float(np.einsum("ij,ij->", A, A))
    if total <= 1e-24 * raw or total == 0.0:
        return np.zeros(len(reps))
    S = per_answer_sums(A, g, rule)
    return np.array([float(np.square(b.T @ S).sum()) / g.order / total
                     for b in _bases(g, reps)])
