"""Finite groups as multiplication tables: Z_n, Z_p* and S_n (MEASURES.md §7).

A :class:`Group` is its table and nothing else: elements are the integers ``0 … order − 1``
(*element indices*), ``mul[a, b]`` is the index of ``a · b`` and ``inv[a]`` that of ``a⁻¹``.
What each index stands for is in ``elements``. The conventions, and why:

* **Cyclic Z_n** (``cyclic(n)``, name ``"C<n>"``): element a is the residue a, ``a · b = a + b
  mod n``. This is the order of the tokens of mechgrok's ``add``/``sub`` tasks and of the columns
  of :func:`mechgrok.probes.fourier.fourier_basis`.
* **Multiplicative Z_p*** (``multiplicative(p)``, name ``"Z<p>*"``): element i is the integer
  ``i + 1`` (so ``elements = 1 … p − 1``), ``a · b = (a + 1)(b + 1) mod p − 1``. The elements
  are kept in their *natural* order, not in discrete-log order, because a model's tokens and
  classes are the integers themselves; the discrete log is a separate table
  (:func:`discrete_log_table`, :func:`power_table`) that the representations of Z_p* go through.
  The primitive root is the smallest one (:func:`primitive_root`), as in most tables.
  Zero is not in the group (x · 0 = 0): a task that feeds it to a model handles it apart.
* **Symmetric S_n** (``symmetric(n)``, name ``"S<n>"``, n ≤ 6): element i is the i-th
  permutation of ``range(n)`` in lexicographic order (element 0 is the identity), a permutation
  ``a`` being the map ``j ↦ a[j]``. The product applies the right factor first:
  ``(x · y)[j] = x[y[j]]``. For n = 5 this is exactly :func:`mechgrok.tasks.s5_elements` and
  :func:`mechgrok.tasks.s5_tables` (the ``s5`` tasks). Chughtai et al. order elements as SymPy
  does and compose with SymPy's ``*`` (left factor first); the two differ by a relabelling of
  the elements and an anti-automorphism, which changes no character, no irrep's span and so no
  measure of theirs that mechgrok reproduces.

:func:`group` parses a name: ``"C13"`` or ``"Z13"`` (cyclic), ``"Z13*"``, ``"Zmul13"`` or
``"U13"`` (multiplicative mod a prime), ``"S5"`` (symmetric); case and spaces are ignored.
Tables are built once per group and shared: their arrays are read-only.
"""

from __future__ import annotations

import functools
import re
from dataclasses import dataclass

import numpy as np

from mechgrok.errors import ConfigError
from mechgrok.tasks import is_prime, permutation_tables

__all__ = ["GROUP_KINDS", "MAX_CYCLIC_ORDER", "MAX_SYMMETRIC_DEGREE", "Group", "cyclic",
           "discrete_log_table", "group", "multiplicative", "power_table", "primitive_root",
           "symmetric"]

MAX_CYCLIC_ORDER = 4096  # the largest n of Z_n and p − 1 of Z_p* (mechgrok's largest modulus)
MAX_SYMMETRIC_DEGREE = 6  # S_6 has 720 elements; S_7 (5040) would need a 200 MB table
GROUP_KINDS = ("cyclic", "multiplicative", "symmetric")


@dataclass(frozen=True, eq=False)
class Group:
    """A finite group as tables over element indices ``0 … order − 1``.

    ``kind`` is one of :data:`GROUP_KINDS` and ``n`` its parameter (n of Z_n, p of Z_p*, n of
    S_n). ``mul`` ``(order, order)`` int64: ``mul[a, b]`` = a · b. ``inv`` ``(order,)``.
    ``elements``: what each index stands for: ``(order,)`` integers for Z_n and Z_p*, ``(order,
    n)`` permutations for S_n.
    """

    name: str
    kind: str
    n: int
    order: int
    mul: np.ndarray
    inv: np.ndarray
    identity: int
    elements: np.ndarray

    def __repr__(self) -> str:
        return f"Group({self.name!r}, order={self.order})"


def _frozen(a: np.ndarray) -> np.ndarray:
    a = np.ascontiguousarray(a)
    a.setflags(write=False)
    return a


def _check_int(value: object, what: str, low: int, high: int) -> int:
    if isinstance(value, bool) or not isinstance(value, (int, np.integer)):
        raise ConfigError(f"{what} must be an integer, got {value!r}")
    if not low <= int(value) <= high:
        raise ConfigError(f"{what} must be between {low} and {high}, got {value}")
    return int(value)


# --- Z_n -----------------------------------------------------------------------------------


def cyclic(n: int) -> Group:
    """Z_n (name ``"C<n>"``): elements ``0 … n − 1``, ``a · b = a + b mod n``."""
    return _cyclic(_check_int(n, "the order n of Z_n", 1, MAX_CYCLIC_ORDER))


@functools.lru_cache(maxsize=16)
def _cyclic(n: int) -> Group:
    a = np.arange(n, dtype=np.int64)
    mul = (a[:, None] + a[None, :]) % n
    return Group(f"C{n}", "cyclic", n, n, _frozen(mul), _frozen((-a) % n), 0, _frozen(a))


# --- Z_p* ----------------------------------------------------------------------------------


def _check_prime(p: object) -> int:
    p = _check_int(p, "the modulus p of Z_p*", 2, MAX_CYCLIC_ORDER + 1)
    if not is_prime(p):
        raise ConfigError(f"Z_p* is a cyclic group only for a prime p; {p} is not prime")
    return p


def primitive_root(p: int) -> int:
    """The smallest generator g of Z_p* (p prime): ``g^i mod p`` runs over all of 1 … p − 1.

    g is a generator when ``g^((p − 1)/q) ≠ 1`` for every prime q dividing p − 1. For p = 2 the
    group is {1} and the answer is 1.
    """
    p = _check_prime(p)
    if p == 2:
        return 1
    m, factors, q = p - 1, [], 2
    while q * q <= m:
        if m % q == 0:
            factors.append(q)
            while m % q == 0:
                m //= q
        q += 1
    if m > 1:
        factors.append(m)
    return next(g for g in range(2, p) if all(pow(g, (p - 1) // f, p) != 1 for f in factors))


def power_table(p: int) -> np.ndarray:
    """``(p − 1,)`` int64: entry i is ``g^i mod p`` for i = 0 … p − 2, g = ``primitive_root(p)``.

    The inverse of :func:`discrete_log_table`: ``power_table(p)[discrete_log_table(p)[x]] == x``.
    """
    return _power_table(_check_prime(p))


@functools.lru_cache(maxsize=16)
def _power_table(p: int) -> np.ndarray:
    g = primitive_root(p)
    out = np.empty(p - 1, dtype=np.int64)
    v = 1
    for i in range(p - 1):
        out[i] = v
        v = v * g % p
    return _frozen(out)


def discrete_log_table(p: int) -> np.ndarray:
    """``(p,)`` int64, indexed by the integer x itself: ``dlog[x] = i`` with ``g^i ≡ x (mod p)``.

    Defined for x = 1 … p − 1 (values 0 … p − 2, with ``dlog[1] = 0`` and ``dlog[g] = 1``);
    ``dlog[0] = -1`` because 0 has no logarithm. For an element *index* e of
    ``multiplicative(p)`` (the integer e + 1) the log is ``dlog[e + 1]``.
    """
    return _discrete_log_table(_check_prime(p))


@functools.lru_cache(maxsize=16)
def _discrete_log_table(p: int) -> np.ndarray:
    out = np.full(p, -1, dtype=np.int64)
    out[_power_table(p)] = np.arange(p - 1)
    return _frozen(out)


def multiplicative(p: int) -> Group:
    """Z_p* (name ``"Z<p>*"``) for a prime p: element i is the integer i + 1, product mod p."""
    return _multiplicative(_check_prime(p))


@functools.lru_cache(maxsize=16)
def _multiplicative(p: int) -> Group:
    x = np.arange(1, p, dtype=np.int64)
    mul = (x[:, None] * x[None, :]) % p - 1
    inv_int = np.array([pow(int(v), -1, p) for v in x], dtype=np.int64)
    return Group(f"Z{p}*", "multiplicative", p, p - 1, _frozen(mul), _frozen(inv_int - 1), 0,
                 _frozen(x))


# --- S_n -----------------------------------------------------------------------------------


def symmetric(n: int) -> Group:
    """S_n (name ``"S<n>"``): lexicographic permutations of ``range(n)``; x · y applies y first."""
    return _symmetric(_check_int(n, "the degree n of S_n", 1, MAX_SYMMETRIC_DEGREE))


@functools.lru_cache(maxsize=8)
def _symmetric(n: int) -> Group:
    el, mul, inv = permutation_tables(n)  # one home: mechgrok.tasks (the tasks' own tables)
    return Group(f"S{n}", "symmetric", n, len(el), mul, inv, 0, el)


# --- names ---------------------------------------------------------------------------------

_NAME = re.compile(r"^(?:(?P<c>[cz])(?P<cn>\d+)|(?:z(?P<m1>\d+)\*|(?:zmul|u)(?P<m2>\d+))"
                   r"|s(?P<sn>\d+))$")


def group(name: str | Group) -> Group:
    """The group called ``name`` (a :class:`Group` is returned as it is).

    ``"C<n>"`` or ``"Z<n>"``: Z_n (n ≤ 4096). ``"Z<p>*"``, ``"Zmul<p>"`` or ``"U<p>"``: Z_p* for
    a prime p. ``"S<n>"``: S_n (n ≤ 6). Case and spaces are ignored; anything else is a
    :class:`~mechgrok.errors.ConfigError`.
    """
    if isinstance(name, Group):
        return name
    m = _NAME.match("".join(str(name).split()).lower()) if isinstance(name, str) else None
    if m is None:
        raise ConfigError(f"unknown group {name!r}: use C<n> or Z<n> (cyclic), Z<p>* or "
                          f"Zmul<p> (multiplication mod a prime p) or S<n> (symmetric, n ≤ "
                          f"{MAX_SYMMETRIC_DEGREE}), e.g. C113, Z97*, S5")
    if m["cn"] is not None:
        return cyclic(int(m["cn"]))
    if m["sn"] is not None:
        return symmetric(int(m["sn"]))
    return multiplicative(int(m["m1"] or m["m2"]))
