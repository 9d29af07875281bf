"""Partitions, standard Young tableaux and Young's orthogonal form (the irreps of S_n).

The irreducible representations of S_n are indexed by the partitions λ of n; the one for λ has
a basis indexed by the standard Young tableaux of shape λ. In **Young's orthogonal form** the
adjacent transposition ``s_i = (i, i+1)`` (values 0-indexed) acts on the basis vector of a
tableau T by

    ρ(s_i) e_T = (1/r) e_T + √(1 − 1/r²) e_{T'},

where T' is T with i and i + 1 swapped and ``r = c(i+1) − c(i)`` is the *axial distance*, the
content (column − row) of the box holding i + 1 minus that of the box holding i. When i and
i + 1 share a row (r = 1) or a column (r = −1) T' is not standard and ρ(s_i) e_T = ±e_T. Every
matrix is real orthogonal and symmetric. With this sign convention the one-row partition (n)
is the trivial representation and the one-column partition (1ⁿ) the sign.

Conventions mechgrok picks:

* **Partitions** are tuples, largest part first, listed in *reverse lexicographic* order:
  ``(5,), (4, 1), (3, 2), (3, 1, 1), …, (1, 1, 1, 1, 1)``: trivial first, sign last, as in the
  usual character tables.
* **Tableaux** are written as their *Yamanouchi word*: ``rows[k]`` is the row (0-based) that
  holds the number k. The basis of an irrep is ordered by these words, lexicographically; the
  tableau filled row by row comes first.
* A name is the partition spelled ``"(4,1)"``.
"""

from __future__ import annotations

import functools
import math

import numpy as np

__all__ = ["adjacent_transposition_matrices", "hook_length_dimension", "partition_name",
           "partitions", "standard_tableaux"]


@functools.lru_cache(maxsize=16)
def partitions(n: int) -> tuple[tuple[int, ...], ...]:
    """The partitions of n (n ≥ 1), largest part first, in reverse lexicographic order."""
    def parts(m: int, largest: int) -> list[tuple[int, ...]]:
        if m == 0:
            return [()]
        return [(k, *rest) for k in range(min(m, largest), 0, -1) for rest in parts(m - k, k)]

    if n < 1:
        raise ValueError(f"partitions of n ≥ 1 only, got {n}")
    return tuple(parts(n, n))


def partition_name(shape: tuple[int, ...]) -> str:
    """``(4, 1)`` → ``"(4,1)"``."""
    return "(" + ",".join(str(k) for k in shape) + ")"


def _check_shape(shape: tuple[int, ...]) -> tuple[int, ...]:
    shape = tuple(int(k) for k in shape)
    if not shape or any(k < 1 for k in shape) or list(shape) != sorted(shape, reverse=True):
        raise ValueError(f"a partition is a non-empty non-increasing tuple of positive "
                         f"integers, got {shape}")
    return shape


@functools.lru_cache(maxsize=64)
def standard_tableaux(shape: tuple[int, ...]) -> tuple[tuple[int, ...], ...]:
    """The standard Young tableaux of ``shape`` as Yamanouchi words, sorted lexicographically.

    Word ``w`` puts the number k in row ``w[k]``; a word is standard when, read left to right,
    row r never holds more numbers than row r − 1.
    """
    shape = _check_shape(shape)
    out: list[tuple[int, ...]] = []

    def grow(word: list[int], filled: list[int]) -> None:
        if len(word) == sum(shape):
            out.append(tuple(word))
            return
        for r in range(len(shape)):
            if filled[r] < shape[r] and (r == 0 or filled[r - 1] > filled[r]):
                filled[r] += 1
                word.append(r)
                grow(word, filled)
                word.pop()
                filled[r] -= 1

    grow([], [0] * len(shape))
    return tuple(out)


def hook_length_dimension(shape: tuple[int, ...]) -> int:
    """The dimension of the irrep of ``shape`` by the hook length formula: n! / Π hooks."""
    shape = _check_shape(shape)
    conjugate = [sum(1 for k in shape if k > c) for c in range(shape[0])]
    hooks = math.prod(shape[r] - c + conjugate[c] - r - 1
                      for r in range(len(shape)) for c in range(shape[r]))
    return math.factorial(sum(shape)) // hooks


def _contents(word: tuple[int, ...]) -> list[int]:
    """The content (column − row) of the box holding each number k of the tableau."""
    filled: dict[int, int] = {}
    out = []
    for r in word:
        out.append(filled.get(r, 0) - r)
        filled[r] = filled.get(r, 0) + 1
    return out


@functools.lru_cache(maxsize=64)
def adjacent_transposition_matrices(shape: tuple[int, ...]) -> np.ndarray:
    """Young's orthogonal form of ``s_i = (i, i+1)`` for i = 0 … n − 2: ``(n − 1, d, d)`` float64.

    Basis: :func:`standard_tableaux` ``(shape)``, in that order. Read-only.
    """
    words = standard_tableaux(shape)
    index = {w: j for j, w in enumerate(words)}
    n, d = len(words[0]), len(words)
    out = np.zeros((max(n - 1, 0), d, d))
    for j, w in enumerate(words):
        c = _contents(w)
        for i in range(n - 1):
            r = c[i + 1] - c[i]
            out[i, j, j] = 1.0 / r
            if abs(r) > 1:  # i, i + 1 in different rows and columns: swapping them is standard
                swapped = list(w)
                swapped[i], swapped[i + 1] = w[i + 1], w[i]
                out[i, index[tuple(swapped)], j] = math.sqrt(1.0 - 1.0 / (r * r))
    out.setflags(write=False)
    return out
