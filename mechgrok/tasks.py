"""The twelve binary operations of Power et al. (2022) and ``mul``, their datasets and the split.

Every task maps a pair (x, y) of *elements* to one *answer*, both integers in ``range(n)``:
residues mod p for the ten modular tasks, permutations of five elements (n = 120) for the three
S5 tasks. Sequence models see the tokens ``[x, y, =]`` where ``=`` is token ``n``; the answer is
one of ``n`` classes. ``mul`` (x · y mod p) is not in Power et al.'s list (they have x / y) but
is the multiplication later papers study. Each task carries its group structure as data
(``Task.algebra``, a :class:`mechgrok.algebra.Algebra`: which group, which rule in it, and how
the element 0 is handled for ``mul`` and ``div``); nothing in mechgrok tests a task's name.

Conventions mechgrok chooses (see ``../shared/MEASURES.md`` §1):

* **Division** is multiplication by the modular inverse, ``x * pow(y, -1, p)``, never floor
  division, and needs a prime p. ``cond`` (x / y if y is odd, else x − y) needs a prime p too,
  and so does ``mul``, read in the multiplicative group Z_p*. ``mul`` takes all p² pairs: x · 0
  = 0 · y = 0.
* **S5** elements are the permutations of ``(0, 1, 2, 3, 4)`` in lexicographic order, so element
  0 is the identity. A permutation ``a`` is the map ``i ↦ a[i]``. The product ``x · y`` applies
  ``y`` first, then ``x``: ``(x · y)[i] = x[y[i]]``.
* **The split** shuffles all valid pairs (in row-major order of (x, y)) with a permutation that
  depends only on the seed, computed from the SplitMix64 hash in integer arithmetic, so it is the
  same on every machine and with every version of NumPy or PyTorch. The first ⌊frac·N⌋ pairs train,
  the rest test. The split is also stored with each run.
"""

from __future__ import annotations

import hashlib
import itertools
import math
from collections.abc import Callable
from dataclasses import dataclass
from functools import cache

import numpy as np

from mechgrok.algebra import Algebra
from mechgrok.errors import ConfigError

__all__ = [
    "N_CTX",
    "TASKS",
    "Task",
    "TaskData",
    "checked_split",
    "get_task",
    "is_prime",
    "make_dataset",
    "s5_elements",
    "s5_tables",
    "split_permutation",
    "token_triples",
]

S5_ORDER = 120
MAX_MODULUS = 4096


def is_prime(n: int) -> bool:
    if n < 2:
        return False
    if n % 2 == 0:
        return n == 2
    return all(n % d for d in range(3, math.isqrt(n) + 1, 2))


# --------------------------------------------------------------------------------------------
# S5
# --------------------------------------------------------------------------------------------
@cache
def s5_elements() -> np.ndarray:
    """The 120 permutations of range(5), lexicographic; row ``i`` is element ``i``. (120, 5)"""
    return np.array(list(itertools.permutations(range(5))), dtype=np.int64)


@cache
def _s5_index() -> dict[tuple[int, ...], int]:
    return {tuple(int(v) for v in row): i for i, row in enumerate(s5_elements())}


def _s5_lookup(perms: np.ndarray) -> np.ndarray:
    """Element indices of permutations given as rows of a (..., 5) array."""
    # Encode each permutation in base 5 and look it up in a dense table of 5**5 entries.
    code_of = np.full(5**5, -1, dtype=np.int64)
    weights = 5 ** np.arange(4, -1, -1)
    code_of[s5_elements() @ weights] = np.arange(S5_ORDER)
    return code_of[perms @ weights]


@cache
def s5_tables() -> tuple[np.ndarray, np.ndarray]:
    """(product table ``prod[x, y] = x · y``, inverse table ``inv[x]``), both as element indices."""
    el = s5_elements()
    # (x · y)[i] = x[y[i]]: gather x's entries at positions y[i].
    composed = np.take_along_axis(
        np.broadcast_to(el[:, None, :], (S5_ORDER, S5_ORDER, 5)),
        np.broadcast_to(el[None, :, :], (S5_ORDER, S5_ORDER, 5)),
        axis=2,
    )
    prod = _s5_lookup(composed)
    inv_perm = np.argsort(el, axis=1)  # a⁻¹[a[i]] = i
    inv = _s5_lookup(inv_perm)
    return prod, inv


# --------------------------------------------------------------------------------------------
# Task registry
# --------------------------------------------------------------------------------------------
@dataclass(frozen=True)
class Task:
    """One binary operation: its rule, domain, group structure (``algebra``; see
    :mod:`mechgrok.algebra`) and the function computing answers."""

    name: str
    rule: str
    domain: str
    modular: bool  # True: elements are residues mod p; False: S5 permutations
    needs_prime: bool
    algebra: Algebra
    _answer: Callable[[np.ndarray, np.ndarray, int], np.ndarray]
    _valid_y: Callable[[np.ndarray, int], np.ndarray] | None = None
    prime_why: str = "divides by y, which needs a prime modulus so that every y ≠ 0 has an inverse"

    def n_elements(self, p: int | None) -> int:
        """How many distinct inputs and answers the task has (p, or 120 for S5)."""
        return int(p) if self.modular else S5_ORDER  # type: ignore[arg-type]

    def validate_modulus(self, p: int | None) -> None:
        if not self.modular:
            return
        if p is None or isinstance(p, bool) or not isinstance(p, int):
            raise ConfigError(f"task {self.name!r} needs an integer modulus p, got {p!r}")
        if p < 2:
            raise ConfigError(f"task {self.name!r}: modulus p must be at least 2, got {p}")
        if p > MAX_MODULUS:
            raise ConfigError(
                f"task {self.name!r}: modulus p = {p} gives {p * p:,} pairs; mechgrok allows "
                f"p ≤ {MAX_MODULUS}"
            )
        if self.needs_prime and not is_prime(p):
            raise ConfigError(
                f"task {self.name!r} {self.prime_why}; p = {p} is not prime (try 97 or 113)"
            )

    def pairs(self, p: int | None) -> np.ndarray:
        """All valid (x, y) pairs in row-major order. (N, 2) int64"""
        n = self.n_elements(p)
        grid_x, grid_y = np.meshgrid(np.arange(n), np.arange(n), indexing="ij")
        x, y = grid_x.ravel(), grid_y.ravel()
        if self._valid_y is not None:
            keep = self._valid_y(y, n)
            x, y = x[keep], y[keep]
        return np.stack([x, y], axis=1).astype(np.int64)

    def answer(self, x: np.ndarray, y: np.ndarray, p: int | None) -> np.ndarray:
        """x ∘ y for arrays of elements (the label)."""
        return self._answer(np.asarray(x, np.int64), np.asarray(y, np.int64), self.n_elements(p))


def _mod_inverse(y: np.ndarray, p: int) -> np.ndarray:
    table = np.zeros(p, dtype=np.int64)
    for v in range(1, p):
        table[v] = pow(v, -1, p)
    return table[y]


def _div(x: np.ndarray, y: np.ndarray, p: int) -> np.ndarray:
    return (x * _mod_inverse(y, p)) % p


def _cond(x: np.ndarray, y: np.ndarray, p: int) -> np.ndarray:
    odd = (y % 2) == 1
    # y = 0 is even, so division only ever sees odd y with 0 < y < p.
    return np.where(odd, (x * _mod_inverse(np.where(odd, y, 1), p)) % p, (x - y) % p)


def _s5(x: np.ndarray, y: np.ndarray, _n: int) -> np.ndarray:
    prod, _ = s5_tables()
    return prod[x, y]


def _s5conj(x: np.ndarray, y: np.ndarray, _n: int) -> np.ndarray:
    prod, inv = s5_tables()
    return prod[prod[x, y], inv[x]]


def _s5aba(x: np.ndarray, y: np.ndarray, _n: int) -> np.ndarray:
    prod, _ = s5_tables()
    return prod[prod[x, y], x]


def _nonzero_y(y: np.ndarray, _n: int) -> np.ndarray:
    return y != 0


_MOD = "0 ≤ x, y < p"
_S5 = "S5 × S5 (120 × 120)"
_ADD, _SUB = Algebra("cyclic", "xy"), Algebra("cyclic", "xy^-1")
_MUL = Algebra("multiplicative", "xy", zero="x · 0 = 0 · y = 0 (2p − 1 pairs); Z_p* covers the "
               "(p − 1)² pairs with x, y ≠ 0")
_DIV = Algebra("multiplicative", "xy^-1", zero="no pair has y = 0; 0 / y = 0 (p − 1 pairs); Z_p* "
               "covers the (p − 1)² pairs with x, y ≠ 0")
_NONE = Algebra("none")
_PERM, _CONJ, _ABA = (Algebra("symmetric", r, degree=5) for r in ("xy", "xyx^-1", "xyx"))
TASKS: dict[str, Task] = {
    t.name: t
    for t in [
        Task("add", "x + y mod p", _MOD, True, False, _ADD, lambda x, y, p: (x + y) % p),
        Task("sub", "x − y mod p", _MOD, True, False, _SUB, lambda x, y, p: (x - y) % p),
        Task("div", "x · y⁻¹ mod p", "0 ≤ x < p, 0 < y < p; p prime", True, True, _DIV, _div,
             _nonzero_y),
        Task("cond", "x / y mod p if y odd, else x − y mod p", _MOD + "; p prime", True, True,
             _NONE, _cond),
        Task("quad1", "x² + y² mod p", _MOD, True, False, _NONE,
             lambda x, y, p: (x * x + y * y) % p),
        Task("quad2", "x² + xy + y² mod p", _MOD, True, False, _NONE,
             lambda x, y, p: (x * x + x * y + y * y) % p),
        Task("quad3", "x² + xy + y² + x mod p", _MOD, True, False, _NONE,
             lambda x, y, p: (x * x + x * y + y * y + x) % p),
        Task("cube1", "x³ + xy mod p", _MOD, True, False, _NONE,
             lambda x, y, p: (x * x % p * x + x * y) % p),
        Task("cube2", "x³ + xy² + y mod p", _MOD, True, False, _NONE,
             lambda x, y, p: (x * x % p * x + x * (y * y % p) + y) % p),
        Task("s5", "x · y (permutations of 5; apply y, then x)", _S5, False, False, _PERM, _s5),
        Task("s5conj", "x · y · x⁻¹", _S5, False, False, _CONJ, _s5conj),
        Task("s5aba", "x · y · x", _S5, False, False, _ABA, _s5aba),
        Task("mul", "x · y mod p", _MOD + "; p prime", True, True, _MUL,
             lambda x, y, p: (x * y) % p,
             prime_why="multiplies in Z_p*, which is a group only for a prime modulus"),
    ]
}


def get_task(name: str) -> Task:
    try:
        return TASKS[name]
    except KeyError:
        raise ConfigError(
            f"unknown task {name!r}; choose one of: {', '.join(TASKS)} (see `mechgrok tasks`)"
        ) from None


# --------------------------------------------------------------------------------------------
# The split
# --------------------------------------------------------------------------------------------
_MASK64 = (1 << 64) - 1


def _splitmix64(values: np.ndarray) -> np.ndarray:
    """SplitMix64 finaliser on uint64 arrays (wrapping arithmetic, identical on every machine)."""
    z = values.astype(np.uint64) + np.uint64(0x9E3779B97F4A7C15)
    z = (z ^ (z >> np.uint64(30))) * np.uint64(0xBF58476D1CE4E5B9)
    z = (z ^ (z >> np.uint64(27))) * np.uint64(0x94D049BB133111EB)
    return z ^ (z >> np.uint64(31))


def split_permutation(n: int, seed: int) -> np.ndarray:
    """A permutation of range(n) that depends only on (n, seed). int64 (n,)"""
    with np.errstate(over="ignore"):
        key = _splitmix64(np.array([seed & _MASK64], dtype=np.uint64))[0]
        h = _splitmix64(np.arange(n, dtype=np.uint64) ^ key)
    # argsort of distinct-with-overwhelming-probability hashes; ties broken by index (stable).
    return np.argsort(h, kind="stable").astype(np.int64)


#: the input sequence's length: ``[x, y, =]`` (what :func:`token_triples` spells)
N_CTX = 3


def token_triples(x: np.ndarray, y: np.ndarray, eq_token: int) -> np.ndarray:
    """The one place the input sequence is spelt: ``[x, y, =]`` per pair, ``=`` being
    ``eq_token`` (the task's element count n). The MLP reads only the first two columns.
    int64 (N, 3)"""
    x = np.asarray(x, dtype=np.int64).reshape(-1)
    y = np.asarray(y, dtype=np.int64).reshape(-1)
    return np.stack([x, y, np.full_like(x, int(eq_token))], axis=1)


@dataclass(frozen=True)
class TaskData:
    """A task's full dataset and its split, as integer arrays (no torch)."""

    task: Task
    p: int | None
    n: int  # number of elements = number of answer classes; the `=` token is n
    pairs: np.ndarray  # (N, 2) all valid pairs, row-major
    labels: np.ndarray  # (N,)
    train_idx: np.ndarray  # indices into pairs
    test_idx: np.ndarray

    @property
    def eq_token(self) -> int:
        return self.n

    @property
    def vocab_size(self) -> int:
        return self.n + 1

    @property
    def tokens(self) -> np.ndarray:
        """Every pair as the model's input ``[x, y, =]``. int64 (N, 3)"""
        return token_triples(self.pairs[:, 0], self.pairs[:, 1], self.eq_token)

    def split_sha256(self) -> str:
        h = hashlib.sha256()
        h.update(np.ascontiguousarray(self.train_idx, dtype="<i8").tobytes())
        h.update(b"|")
        h.update(np.ascontiguousarray(self.test_idx, dtype="<i8").tobytes())
        return h.hexdigest()


def make_dataset(name: str, p: int | None, frac_train: float, seed: int) -> TaskData:
    """All pairs of a task with labels, split by ``seed`` into train and test."""
    task = get_task(name)
    task.validate_modulus(p)
    if isinstance(frac_train, bool) or not isinstance(frac_train, (int, float)) or not (
        0.0 < float(frac_train) < 1.0
    ):
        raise ConfigError(f"train fraction must be strictly between 0 and 1, got {frac_train!r}")
    pairs = task.pairs(p)
    labels = task.answer(pairs[:, 0], pairs[:, 1], p)
    n_pairs = len(pairs)
    n_train = math.floor(float(frac_train) * n_pairs)
    if n_train < 1 or n_train >= n_pairs:
        raise ConfigError(
            f"train fraction {frac_train} of {n_pairs} pairs leaves "
            f"{n_train} train and {n_pairs - n_train} test pairs; both must be at least 1"
        )
    perm = split_permutation(n_pairs, seed)
    return TaskData(
        task=task,
        p=p if task.modular else None,
        n=task.n_elements(p),
        pairs=pairs,
        labels=labels,
        train_idx=np.sort(perm[:n_train]),
        test_idx=np.sort(perm[n_train:]),
    )


def checked_split(train_idx: object, test_idx: object, n_pairs: int, *, what: str = "split",
                  complete: bool = True) -> tuple[np.ndarray, np.ndarray]:
    """A train/test split given from outside (a file's indices, a user's arrays) as sorted int64
    arrays, after checking it: each a non-empty 1-D list of distinct integer pair indices in
    0 … n_pairs − 1 (row-major over (x, y)), the two disjoint and, when ``complete``, together
    every pair. Anything else is a one-line :class:`ConfigError` starting with ``what``."""
    out = []
    for name, v in (("train", train_idx), ("test", test_idx)):
        a = np.asarray(v.detach().cpu().numpy() if hasattr(v, "detach") else v)
        if a.ndim != 1 or a.size == 0 or a.dtype.kind not in "iu":
            raise ConfigError(f"{what}: the {name} indices must be a non-empty 1-D list of "
                              f"integers, got shape {a.shape} of {a.dtype}")
        out.append(a.astype(np.int64))
    tr, te = out
    both = np.concatenate([tr, te])
    distinct = len(np.unique(both)) == len(both)
    in_range = int(both.min()) >= 0 and int(both.max()) < n_pairs
    if not (distinct and in_range and (len(both) == n_pairs or not complete)):
        need = (f"name each of the task's {n_pairs} pairs exactly once" if complete else
                f"be distinct pair indices of the task's {n_pairs} pairs")
        raise ConfigError(f"{what}: {len(tr)} train + {len(te)} test indices"
                          f"{'' if in_range else ' (some outside 0 … ' + str(n_pairs - 1) + ')'}"
                          f"{'' if distinct else ' (some repeated or in both)'}; they must {need} "
                          f"(indices 0 … {n_pairs - 1}, row-major over (x, y))")
    return np.sort(tr), np.sort(te)
