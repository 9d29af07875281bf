"""The real irreducible representations of Z_n, Z_p* and S_n, their characters and spans.

An :class:`Irrep` is a real orthogonal representation ρ given by its matrices, one per element
index of its :class:`~mechgrok.measures.groups.Group`: ``matrices[g]`` = ρ(g), ``(order, d, d)``
float64, with ρ(x · y) = ρ(x) ρ(y). :func:`irreps` lists all of a group's irreps over the reals.

**Cyclic Z_n** (Fourier over Z_n), in the order of the rows of
:func:`mechgrok.probes.fourier.fourier_basis`: ``"k=0"`` (alias ``"trivial"``), then for k = 1 …
⌊(n − 1)/2⌋ the rotation ``"k=<k>"`` (alias ``"freq_<k>"``, Chughtai et al.'s name)

    ρ_k(a) = [[cos θ, −sin θ], [sin θ, cos θ]],  θ = 2πk·a/n,

and for even n the 1-d ``"k=<n/2>"`` (alias ``"sign"``), ρ(a) = (−1)^a. The entries of ρ_k span
exactly the rows ``cos k``, ``sin k`` of the Fourier basis. **Z_p*** has the irreps of the
cyclic group Z_{p−1} pulled back through the discrete log: element x (the integer; element
index x − 1) gets ρ_k(dlog x), with the same names, k a frequency over the discrete log. The
labels k depend on the primitive root (the smallest, ``primitive_root(p)``): frequency k under
another root g' = g^u is frequency ±k·u⁻¹ mod (p − 1) under g, so compare frequencies of Z_p*
only under the same root; the set of irreps does not change.

**S_n** (n ≤ 6): one irrep per partition λ of n, in Young's orthogonal form (see
:mod:`mechgrok.measures.young`), named ``"(4,1)"`` and listed in the order of
:func:`~mechgrok.measures.young.partitions` (trivial first, sign last). Aliases are the names of
Chughtai, Chan & Nanda's code (``utils/groups.py``), so their saved ``key_reps.txt`` can be read:
``"trivial"`` (n), ``"sign"`` (1ⁿ), ``"standard"`` (n−1, 1): the permutation representation
minus the trivial one, ``"standard_sign"`` (2, 1ⁿ⁻²) = standard ⊗ sign, and for S4 ``"s4_2d"``
(2,2); for S5 ``"s5_5d_a"`` (2,2,1), ``"s5_5d_b"`` (3,2), ``"s5_6d"`` (3,1,1); for S6
``"s6_5d_a"`` (3,3), ``"s6_5d_b"`` (2,2,2). Other irreps have no alias (their S6 list stops at
those six of the eleven). For S3, (2, 1) is both standard and standard ⊗ sign: ``"standard"``.
Young's orthogonal form is chosen because its matrices are real orthogonal, so ρ(g)⁻¹ = ρ(g)ᵀ
and the entries are orthogonal functions (Schur); Chughtai et al.'s matrices (integer, from
generators) are equivalent but not orthogonal. Equivalent representations have the same
characters and the same span of entries, so every measure here is the same for both.

**Counting over the reals.** Every irrep of S_n is absolutely irreducible: ⟨χ, χ⟩ = 1 and
Σ d² = |G|. The 2-d rotations of Z_n are irreducible over ℝ but split over ℂ into the pair of
characters e^{±2πika/n}: ⟨χ, χ⟩ = 2 and their matrix entries span only a 2-d space (cos, sin),
not 4-d. What holds for every real irrep is Σ d² / ⟨χ, χ⟩ = |G|: the spans of the entries of
the irreps (:func:`basis`, of dimension d² / ⟨χ, χ⟩ each) are mutually orthogonal and together
fill ℝ^|G|. ``⟨χ, ψ⟩ = (1/|G|) Σ_g χ(g) ψ(g)`` throughout (real characters, no conjugate).
"""

from __future__ import annotations

import functools
import math
from collections.abc import Iterable
from dataclasses import dataclass

import numpy as np

from mechgrok.errors import ConfigError
from mechgrok.measures.groups import Group, discrete_log_table
from mechgrok.measures.groups import group as as_group
from mechgrok.measures.young import adjacent_transposition_matrices, partition_name, partitions

__all__ = ["Irrep", "basis", "character_table", "find_irrep", "inner_product", "irreps",
           "projector", "span_dimension"]


@dataclass(frozen=True, eq=False)
class Irrep:
    """A real irreducible representation: ``matrices[g]`` = ρ(g), ``(order, dim, dim)`` float64.

    ``name`` is the canonical name (``"k=3"``, ``"(4,1)"``), ``alias`` the familiar one
    (``"freq_3"``, ``"standard"``; ``""`` when there is none), ``group`` the group's name.
    """

    name: str
    dim: int
    matrices: np.ndarray
    alias: str = ""
    group: str = ""

    @property
    def order(self) -> int:
        return int(self.matrices.shape[0])

    @property
    def character(self) -> np.ndarray:
        """χ(g) = tr ρ(g) for every element index g, ``(order,)`` float64."""
        return np.trace(self.matrices, axis1=1, axis2=2)

    def __repr__(self) -> str:
        alias = f", alias={self.alias!r}" if self.alias else ""
        return f"Irrep({self.name!r}{alias}, dim={self.dim}, group={self.group!r})"


def _frozen(a: np.ndarray) -> np.ndarray:
    a = np.ascontiguousarray(a, dtype=np.float64)
    a.setflags(write=False)
    return a


# --- cyclic and multiplicative -------------------------------------------------------------


def _cyclic_irreps(name: str, exponent: np.ndarray, m: int) -> tuple[Irrep, ...]:
    """The irreps of Z_m evaluated at ``exponent[g]`` ∈ Z_m for every element index g."""
    out = [Irrep("k=0", 1, _frozen(np.ones((len(exponent), 1, 1))), "trivial", name)]
    for k in range(1, m // 2 + 1):
        theta = 2 * math.pi * ((k * exponent) % m) / m  # k·a mod m first: exact, small angles
        if 2 * k == m:
            mats = np.where(((k * exponent) % m) == 0, 1.0, -1.0)[:, None, None]  # (−1)^a
            out.append(Irrep(f"k={k}", 1, _frozen(mats), "sign", name))
            continue
        c, s = np.cos(theta), np.sin(theta)
        mats = np.stack([np.stack([c, -s], -1), np.stack([s, c], -1)], -2)  # (order, 2, 2)
        out.append(Irrep(f"k={k}", 2, _frozen(mats), f"freq_{k}", name))
    return tuple(out)


# --- symmetric -----------------------------------------------------------------------------

_CHUGHTAI_ALIASES: dict[int, dict[tuple[int, ...], str]] = {
    4: {(2, 2): "s4_2d"},
    5: {(2, 2, 1): "s5_5d_a", (3, 2): "s5_5d_b", (3, 1, 1): "s5_6d"},
    6: {(3, 3): "s6_5d_a", (2, 2, 2): "s6_5d_b"},
}


def _symmetric_alias(shape: tuple[int, ...], n: int) -> str:
    if shape == (n,):
        return "trivial"
    if shape == (1,) * n:
        return "sign"
    if shape == (n - 1, 1):
        return "standard"
    if shape == (2,) + (1,) * (n - 2):
        return "standard_sign"
    return _CHUGHTAI_ALIASES.get(n, {}).get(shape, "")


def _adjacent_transpositions(g: Group) -> list[int]:
    """Element indices of s_i = (i, i+1), i = 0 … n − 2."""
    out = []
    for i in range(g.n - 1):
        perm = np.arange(g.n)
        perm[[i, i + 1]] = perm[[i + 1, i]]
        out.append(int(np.flatnonzero((g.elements == perm).all(axis=1))[0]))
    return out


def _symmetric_irrep(g: Group, shape: tuple[int, ...], gens: list[int]) -> Irrep:
    """ρ on every element by breadth-first search from the identity: ρ(s_i · h) = ρ(s_i) ρ(h).

    Well defined because the matrices of Young's orthogonal form satisfy the Coxeter relations
    of the s_i, which present S_n in any composition convention.
    """
    s = adjacent_transposition_matrices(shape)  # (n − 1, d, d)
    d = s.shape[1]
    mats = np.full((g.order, d, d), np.nan)
    mats[g.identity] = np.eye(d)
    frontier = [g.identity]
    while frontier:
        nxt = []
        for h in frontier:
            for i, gen in enumerate(gens):
                k = int(g.mul[gen, h])
                if np.isnan(mats[k, 0, 0]):
                    mats[k] = s[i] @ mats[h]
                    nxt.append(k)
        frontier = nxt
    return Irrep(partition_name(shape), d, _frozen(mats), _symmetric_alias(shape, g.n), g.name)


# --- the public API ------------------------------------------------------------------------


def irreps(group_or_name: Group | str) -> tuple[Irrep, ...]:
    """All real irreducible representations of the group, in the order the module describes.

    Built once per group and shared (the arrays are read-only).
    """
    return _irreps(as_group(group_or_name))


@functools.lru_cache(maxsize=16)
def _irreps(g: Group) -> tuple[Irrep, ...]:
    if g.kind == "cyclic":
        return _cyclic_irreps(g.name, np.arange(g.order, dtype=np.int64), g.order)
    if g.kind == "multiplicative":
        return _cyclic_irreps(g.name, discrete_log_table(g.n)[g.elements], g.order)
    if g.kind == "symmetric":
        gens = _adjacent_transpositions(g)
        return tuple(_symmetric_irrep(g, shape, gens) for shape in partitions(g.n))
    raise ValueError(f"no irreps known for groups of kind {g.kind!r}")


def find_irrep(group_or_name: Group | str, name: str) -> Irrep:
    """The irrep called ``name`` (its name or its alias, e.g. ``"(4,1)"`` or ``"standard"``)."""
    reps = irreps(group_or_name)
    for rep in reps:
        if name in (rep.name, rep.alias):
            return rep
    known = ", ".join(rep.name + (f" ({rep.alias})" if rep.alias else "") for rep in reps)
    raise ConfigError(f"{reps[0].group} has no irrep {name!r}; it has {known}")


def character_table(group_or_name: Group | str) -> np.ndarray:
    """``(n_irreps, order)`` float64: row i is the character of ``irreps(group)[i]`` on every
    element index (per element, not per conjugacy class)."""
    return np.stack([rep.character for rep in irreps(group_or_name)])


def inner_product(chi: np.ndarray, psi: np.ndarray) -> float:
    """⟨χ, ψ⟩ = (1/|G|) Σ_g χ(g) ψ(g) of two real class functions given per element."""
    chi, psi = np.asarray(chi, np.float64), np.asarray(psi, np.float64)
    return float(chi @ psi) / len(chi)


def span_dimension(irrep: Irrep) -> int:
    """d² / ⟨χ, χ⟩: the dimension of the span of ρ's matrix entries (d² for S_n's irreps, 2 for
    the 2-d rotations of a cyclic group)."""
    return round(irrep.dim**2 / inner_product(irrep.character, irrep.character))


def basis(irrep: Irrep) -> np.ndarray:
    """Orthonormal columns spanning the functions g ↦ ρ(g)_ij, ``(order, d² / ⟨χ, χ⟩)`` float64.

    Chughtai et al.'s "irrep span". When the entries are already orthogonal (Schur: every
    column has squared norm |G|/d, as for all irreps of S_n) the columns are the entries
    ``ρ(g)_ij`` themselves in row-major order (i, j), scaled by √(d/|G|); otherwise (the 2-d
    rotations of a cyclic group, whose four entries cos, −sin, sin, cos span 2 dimensions) they
    are the left singular vectors of the flattened matrices that carry their span.
    """
    flat = np.asarray(irrep.matrices, np.float64).reshape(irrep.order, -1)
    scale = irrep.order / irrep.dim
    if np.allclose(flat.T @ flat, scale * np.eye(flat.shape[1]), rtol=0, atol=1e-9 * scale):
        return flat / math.sqrt(scale)
    u, s, _ = np.linalg.svd(flat, full_matrices=False)
    return u[:, : span_dimension(irrep)] if s[0] > 0 else u[:, :0]


def projector(reps: Iterable[Irrep]) -> np.ndarray:
    """``(order, order)``: the orthogonal projector onto the sum of the irreps' spans.

    The irreps must be distinct irreps of one group (their spans are then orthogonal, so the
    projector is the sum of the ``basis(ρ) basis(ρ)ᵀ``). No irreps: the zero matrix is not
    defined without an order, so at least one is needed.
    """
    reps = list(reps)
    if not reps:
        raise ValueError("projector of no irreps: pass at least one")
    if len({rep.order for rep in reps}) != 1 or len({rep.group for rep in reps}) != 1:
        raise ValueError("projector: the irreps belong to different groups")
    if len({rep.name for rep in reps}) != len(reps):
        raise ValueError(f"projector: an irrep is repeated in {[rep.name for rep in reps]}")
    q = np.concatenate([basis(rep) for rep in reps], axis=1)
    return q @ q.T
