"""Measures of a model's tables in a group's irreps (Chughtai, Chan & Nanda 2023; MEASURES.md §7).

Pure functions of arrays (NumPy float64; torch CPU tensors are accepted and converted). Nothing
here knows about models, hooks or run directories.

**Logits** are ``(order², order)``: one row per input pair (x, y) in row-major order (row
``x·order + y``, x and y element indices), one column per answer class z (an element index).

**Rules.** A task's answer a(x, y) is one of :data:`RULES`; the *template* of irrep ρ for that
rule is the character of the answer's relation to class z,

    T_ρ[(x, y), z] = χ_ρ(a(x, y) · z⁻¹) = tr ρ(a(x, y)) ρ(z)⁻¹,

which is largest (= d) at the right answer z = a. Spelled out:

* ``"xy"``: a = x·y, T = tr ρ(x)ρ(y)ρ(z)⁻¹ (``add``, ``s5``, multiplication in Z_p*);
* ``"xy^-1"``: a = x·y⁻¹, T = tr ρ(x)ρ(y)⁻¹ρ(z)⁻¹ (``sub``; ``div`` in Z_p*);
* ``"xyx^-1"``: a = x·y·x⁻¹, T = tr ρ(x)ρ(y)ρ(x)⁻¹ρ(z)⁻¹ (``s5conj``);
* ``"xyx"``: a = x·y·x, T = tr ρ(x)ρ(y)ρ(x)ρ(z)⁻¹ (``s5aba``).

A task over the integers mod p that includes 0 (``div`` has x = 0) is not a table of Z_p*:
its caller drops those rows, or reads them apart, before calling these functions.

For each rule and fixed x, y ↦ a(x, y) is a bijection, so the templates of distinct irreps are
orthogonal (Σ_{x,y,z} T_ρ T_σ = |G|² · |G| ⟨χ_ρ, χ_σ⟩ = 0): a table that is one irrep's
template has similarity 1 with it and 0 with every other.

**Logit similarity** (:func:`logit_similarity`) is the cosine between the logits and the
template after *centring each input's row over the answer classes* (subtracting the mean over
z), flattened over all |G|² rows. This is what Chughtai et al.'s code does
(``logits - logits.mean(dim=-1)``, ``utils/metrics.py``): softmax ignores a constant per row.
Their template is left uncentred, but for every non-trivial irrep Σ_z χ(a z⁻¹) = 0 already, so
centring it changes nothing; for the trivial irrep the centred template is 0 and the similarity
is defined as 0. Their **key irreps** are those with similarity > :data:`KEY_IRREP_THRESHOLD`
(0.005) on the final model. That is a threshold on a cosine, not on a fraction: because the
templates are orthogonal, sim² is the fraction of the centred logits' squared norm along that
one template (Σ sim² ≤ 1, their ``percent_logits_explained``), so 0.005 admits an irrep that
carries 0.0025 % of it. It separates used from unused irreps only because an unused irrep's
similarity is ~0; treat it as "not zero", not as "important".

**Variance explained** (:func:`variance_explained`) by an irrep's span (the orthonormalised span
of its matrix entries, :func:`~mechgrok.measures.representations.basis`) of an ``(order,
width)`` matrix of per-element vectors (an embedding; an unembedding transposed): the fraction
of its squared norm, *after subtracting the mean over elements*, that lies in that span. The
mean is the trivial irrep's component, so with centring the trivial irrep explains 0 and the
others add up to 1. Chughtai et al. centre the hidden activations but not the embeddings or the
unembedding (there the trivial irrep takes the mean); ``centre=False`` gives their numbers.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np

from mechgrok.algebra import GROUP_RULES
from mechgrok.errors import ConfigError
from mechgrok.measures.groups import Group
from mechgrok.measures.groups import group as as_group
from mechgrok.measures.representations import Irrep, basis, find_irrep, irreps

__all__ = ["KEY_IRREP_THRESHOLD", "RULES", "answer_table", "key_irreps", "logit_similarities",
           "logit_similarity", "trace_template", "variance_explained"]

RULES = GROUP_RULES  # one home: the rules a task's algebra may name (mechgrok.algebra)
KEY_IRREP_THRESHOLD = 0.005  # Chughtai et al.: key irrep = logit similarity above this
_CHUNK = 1 << 22  # float64 entries of a block of logits handled at once (32 MiB)


def answer_table(group: Group | str, rule: str = "xy") -> np.ndarray:
    """``(order, order)`` int64: ``a[x, y]``, the answer of ``rule`` (one of :data:`RULES`)."""
    g = as_group(group)
    mul, inv = g.mul, g.inv
    if rule == "xy":
        return np.array(mul)
    if rule == "xy^-1":
        return mul[:, inv]
    if rule == "xyx^-1":
        return mul[mul, inv[:, None]]
    if rule == "xyx":
        return mul[mul, np.arange(g.order)[:, None]]
    raise ConfigError(f"unknown rule {rule!r}: use one of {', '.join(RULES)}")


def _character_matrix(g: Group, rep: Irrep) -> np.ndarray:
    """``C[a, z] = χ(a · z⁻¹)``, each row centred over z, ``(order, order)``."""
    if rep.order != g.order:
        raise ValueError(f"irrep {rep.name!r} has {rep.order} matrices; {g.name} has "
                         f"{g.order} elements")
    c = rep.character[g.mul[:, g.inv]]
    return c - c.mean(axis=1, keepdims=True)


def trace_template(group: Group | str, irrep: Irrep | str, rule: str = "xy") -> np.ndarray:
    """``(order², order)`` float64: T[(x, y), z] = χ(a(x, y) · z⁻¹), each row centred over z.

    Materialises |G|³ numbers (14 MB for S5, 3 GB for S6); :func:`logit_similarity` does not.
    """
    g = as_group(group)
    rep = find_irrep(g, irrep) if isinstance(irrep, str) else irrep
    return _character_matrix(g, rep)[answer_table(g, rule).reshape(-1)]


def _logits(logits: Any, g: Group) -> np.ndarray:
    """The logits as an array, not yet converted to float64 (that is done block by block)."""
    arr = np.asarray(logits.detach().cpu().numpy() if hasattr(logits, "detach") else logits)
    if arr.shape != (g.order * g.order, g.order):
        raise ValueError(f"expected logits of shape (order² = {g.order ** 2}, order = "
                         f"{g.order}) for {g.name}, rows (x, y) row-major, got {arr.shape}")
    return arr


def logit_similarities(logits: Any, group: Group | str, reps: Sequence[Irrep | str] | None = None,
                       rule: str = "xy") -> dict[str, float]:
    """Irrep name → :func:`logit_similarity`, for ``reps`` (default: every irrep), in one pass.

    The logits are read (and converted to float64) in blocks of inputs x, so nothing of size
    |G|³ is built beside them: S6's 720³ float32 logits (1.5 GB) need no second copy. Because
    y ↦ a(x, y) is a bijection for each x, the centred logits are first summed per answer,
    ``S[a, z] = Σ_{(x, y): a(x, y) = a} L[(x, y), z]``, and each irrep's dot product with its
    template is then ``Σ_{a,z} S[a, z] C[a, z]`` with ``C[a, z] = χ(a z⁻¹)`` (row-centred).
    """
    g = as_group(group)
    chosen = list(irreps(g)) if reps is None else [
        find_irrep(g, r) if isinstance(r, str) else r for r in reps]
    L = _logits(logits, g).reshape(g.order, g.order, g.order)  # (x, y, z)
    answers = answer_table(g, rule)
    y_of = np.argsort(answers, axis=1)  # y_of[x, a]: the y with a(x, y) = a
    per_answer, l_sq = np.zeros((g.order, g.order)), 0.0  # S[a, z], ‖centred logits‖²
    step = max(1, _CHUNK // (g.order * g.order))
    for x0 in range(0, g.order, step):
        block = np.asarray(L[x0:x0 + step], dtype=np.float64)
        block = block - block.mean(axis=2, keepdims=True)  # centre each input's row over z
        l_sq += float(np.einsum("xyz,xyz->", block, block))
        per_answer += block[np.arange(len(block))[:, None], y_of[x0:x0 + step]].sum(axis=0)
    out = {}
    for rep in chosen:
        c = _character_matrix(g, rep)
        t_sq = g.order * float(np.einsum("az,az->", c, c))  # every a is the answer |G| times
        empty = l_sq == 0.0 or t_sq <= 1e-20 * g.order**3
        out[rep.name] = 0.0 if empty else float(np.einsum("az,az->", per_answer, c)
                                                 / np.sqrt(l_sq * t_sq))
    return out


def logit_similarity(logits: Any, group: Group | str, irrep: Irrep | str,
                     rule: str = "xy") -> float:
    """The cosine between the row-centred logits and irrep ρ's template for ``rule``.

    ``logits`` ``(order², order)``: rows the pairs (x, y) row-major, columns the classes z.
    Both are centred per row over z and flattened; see the module docstring for the templates
    and what Chughtai et al.'s 0.005 threshold means. The trivial irrep's similarity is 0.
    """
    g = as_group(group)
    rep = find_irrep(g, irrep) if isinstance(irrep, str) else irrep
    return logit_similarities(logits, g, [rep], rule)[rep.name]


def key_irreps(similarities: dict[str, float],
               threshold: float = KEY_IRREP_THRESHOLD) -> list[str]:
    """The irreps whose logit similarity exceeds ``threshold``, most similar first."""
    return sorted((k for k, v in similarities.items() if v > threshold),
                  key=lambda k: -similarities[k])


def variance_explained(matrix: Any, bases: Sequence[np.ndarray | Irrep],
                       centre: bool = True) -> np.ndarray:
    """``(len(bases),)``: the fraction of the matrix's squared norm inside each span.

    ``matrix`` ``(order, width)``: one row per element index (an embedding; an unembedding
    transposed). ``bases``: orthonormal ``(order, r)`` columns, or irreps (their
    :func:`~mechgrok.measures.representations.basis`). With ``centre`` the mean row is
    subtracted first (the fractions of all irreps then add up to 1, the trivial one's being
    0). A matrix that is zero (after centring) gives fractions 0.
    """
    m = np.asarray(matrix.detach().cpu() if hasattr(matrix, "detach") else matrix,
                   dtype=np.float64)
    if m.ndim != 2:
        raise ValueError(f"expected an (order, width) matrix, got shape {m.shape}")
    raw = float(np.einsum("ij,ij->", m, m))
    if centre:
        m = m - m.mean(axis=0, keepdims=True)
    total = float(np.einsum("ij,ij->", m, m))
    if total <= 1e-24 * raw:  # a constant matrix, up to the rounding of its mean
        total = 0.0
    out = np.zeros(len(bases))
    for i, b in enumerate(bases):
        q = basis(b) if isinstance(b, Irrep) else np.asarray(b, dtype=np.float64)
        if q.shape[0] != m.shape[0]:
            raise ValueError(f"basis {i} has {q.shape[0]} rows; the matrix has {m.shape[0]}")
        out[i] = 0.0 if total == 0.0 else float(np.square(q.T @ m).sum()) / total
    return out
