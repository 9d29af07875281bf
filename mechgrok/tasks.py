"""The twelve binary operations of Power et al. (2022) and ``mul``, their datasets and the split.

Every task maps a pair (x, y) of *elements* to one *answer*, both integers in ``range(N)``:
residues mod p (N = p) for the ten modular tasks, permutations for the three symmetric tasks
``s5``, ``s5conj`` and ``s5aba``: S_n for a ``degree`` n from 3 to 6 (N = n!; n = 5, Power et
al.'s S5, when none is given). :meth:`Task.size` is that one parameter, p or n. Sequence models
see the tokens ``[x, y, =]`` where ``=`` is token ``N``; the answer is one of ``N`` classes.
``mul`` (x · y mod p) is not in Power et al.'s list (they have x / y) but is the multiplication
later papers study. Each task carries its group structure as data (``Task.algebra``, a
:class:`mechgrok.algebra.Algebra`: which group, which rule in it, how the element 0 is handled
for ``mul`` and ``div``); nothing in mechgrok tests a task's name.

Conventions mechgrok chooses (see ``../shared/MEASURES.md`` §1):

* **Division** is multiplication by the modular inverse, ``x * pow(y, -1, p)``, never floor
  division, and needs a prime p. ``cond`` (x / y if y is odd, else x − y) needs a prime p too,
  and so does ``mul``, read in the multiplicative group Z_p*. ``mul`` takes all p² pairs: x · 0
  = 0 · y = 0.
* **S_n** elements are the permutations of ``(0, 1, …, n − 1)`` in lexicographic order, so
  element 0 is the identity. A permutation ``a`` is the map ``i ↦ a[i]``. The product ``x · y``
  applies ``y`` first, then ``x``: ``(x · y)[i] = x[y[i]]``. These are the tables of
  :func:`mechgrok.measures.symmetric` (tested), and for n = 5 those S5 always had.
* **The split** shuffles all valid pairs (in row-major order of (x, y)) with a permutation that
  depends only on the seed, computed from the SplitMix64 hash in integer arithmetic, so it is the
  same on every machine and with every version of NumPy or PyTorch. The first ⌊frac·#pairs⌋ train,
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
    "DEFAULT_DEGREE",
    "N_CTX",
    "SYMMETRIC_DEGREES",
    "TASKS",
    "Task",
    "TaskData",
    "check_degree",
    "checked_split",
    "get_task",
    "is_prime",
    "make_dataset",
    "permutation_tables",
    "s5_elements",
    "s5_tables",
    "split_permutation",
    "symmetric_elements",
    "symmetric_tables",
    "token_triples",
]

MAX_MODULUS = 4096
#: the degrees n of S_n a symmetric task takes (``TaskConfig.degree``; S7: 25 million pairs)
SYMMETRIC_DEGREES = (3, 4, 5, 6)
#: the degree of the symmetric tasks when none is given: Power et al.'s S5, whose name they keep
DEFAULT_DEGREE = 5


def is_prime(n: int) -> bool:
    if n < 2 or n % 2 == 0:
        return n == 2
    return all(n % d for d in range(3, math.isqrt(n) + 1, 2))


# --- S_n -------------------------------------------------------------------------------------
def check_degree(degree: object, what: str = "the degree n of S_n") -> int:
    """``degree`` as an int if it is one of :data:`SYMMETRIC_DEGREES`, else a one-line
    :class:`ConfigError` starting with ``what``."""
    if isinstance(degree, bool) or not isinstance(degree, (int, np.integer)) \
            or int(degree) not in SYMMETRIC_DEGREES:
        top = max(SYMMETRIC_DEGREES)
        raise ConfigError(f"{what} must be an integer from {min(SYMMETRIC_DEGREES)} to {top} "
                          f"(S_n has n! elements: S{top} {math.factorial(top)}, "
                          f"{math.factorial(top) ** 2:,} pairs), got {degree!r}")
    return int(degree)


@cache
def permutation_tables(n: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """S_n for any n ≥ 1, the one home of its tables (``measures.symmetric`` reads them too):
    (elements ``(n!, n)``, the permutations of range(n) in lexicographic order; ``prod[x, y] =
    x · y``, applying y first, ``(x · y)[i] = x[y[i]]``; ``inv[x]``), as element indices,
    read-only. :func:`symmetric_tables` checks a task's degree first."""
    el = np.array(list(itertools.permutations(range(n))), dtype=np.int64).reshape(-1, n)
    order = len(el)
    composed = el[np.arange(order)[:, None, None], el[None, :, :]]  # (x · y)[i] = x[y[i]]
    weights = n ** np.arange(n - 1, -1, -1, dtype=np.int64)  # a permutation's code in base n
    index = np.full(n**n, -1, dtype=np.int64)  # code → element index
    index[el @ weights] = np.arange(order)
    prod, inv = index[composed @ weights], index[np.argsort(el, axis=1) @ weights]  # a⁻¹[a[i]] = i
    for a in (el, prod, inv):
        a.setflags(write=False)
    return el, prod, inv


def symmetric_elements(degree: int = DEFAULT_DEGREE) -> np.ndarray:
    """The n! permutations of range(n), n = ``degree``, lexicographic; row ``i`` is element
    ``i``. Read-only (n!, n)"""
    return permutation_tables(check_degree(degree))[0]


def symmetric_tables(degree: int = DEFAULT_DEGREE) -> tuple[np.ndarray, np.ndarray]:
    """S_n's (product table ``prod[x, y] = x · y``, inverse table ``inv[x]``), both as element
    indices of :func:`symmetric_elements`, n = ``degree``; read-only."""
    _, prod, inv = permutation_tables(check_degree(degree))
    return prod, inv


def s5_elements() -> np.ndarray:
    """The 120 permutations of range(5) (:func:`symmetric_elements` of degree 5). (120, 5)"""
    return symmetric_elements(5)


def s5_tables() -> tuple[np.ndarray, np.ndarray]:
    """S5's (product, inverse) tables: :func:`symmetric_tables` of degree 5."""
    return symmetric_tables(5)


# --- Task registry ---------------------------------------------------------------------------
@dataclass(frozen=True)
class Task:
    """One binary operation: its rule, domain, group structure (``algebra``; see
    :mod:`mechgrok.algebra`) and the function computing answers."""

    name: str
    rule: str
    domain: str
    modular: bool  # True: elements are residues mod p; False: permutations, elements of S_n
    needs_prime: bool
    algebra: Algebra  # a symmetric task's has the default degree (Algebra.with_degree)
    _answer: Callable[[np.ndarray, np.ndarray, int], np.ndarray]  # (x, y, size(p, degree))
    _valid_y: Callable[[np.ndarray, int], np.ndarray] | None = None
    prime_why: str = "divides by y, which needs a prime modulus so that every y ≠ 0 has an inverse"

    def degree_of(self, degree: int | None) -> int | None:
        """The degree n of S_n of a symmetric task (``degree``, checked; None means
        :data:`DEFAULT_DEGREE`); None for a modular task, which refuses any degree."""
        if self.modular:
            if degree is not None:
                sym = ", ".join(t.name for t in TASKS.values() if not t.modular)
                raise ConfigError(f"task {self.name!r} has no degree (the degree n of S_n is for "
                                  f"the symmetric tasks {sym}); its size is the modulus p, got "
                                  f"degree {degree!r}")
            return None
        return DEFAULT_DEGREE if degree is None else check_degree(
            degree, f"task {self.name!r}: the degree n of S_n")

    def size(self, p: int | None, degree: int | None = None) -> int:
        """The one parameter the task's elements are counted by: the modulus p of a modular
        task, the degree n of S_n of a symmetric one (``degree``; None: 5; ``p`` is ignored)."""
        d = self.degree_of(degree)
        return int(p) if d is None else d  # type: ignore[arg-type]

    def n_elements(self, p: int | None, degree: int | None = None) -> int:
        """How many distinct inputs and answers the task has: p, or n! for S_n (120 for S5)."""
        size = self.size(p, degree)
        return size if self.modular else math.factorial(size)

    def validate_modulus(self, p: int | None, degree: int | None = None) -> None:
        """Check the task's size: the modulus ``p`` of a modular task (which takes no
        ``degree``), the ``degree`` of a symmetric one (which ignores ``p``)."""
        self.degree_of(degree)
        if not self.modular:
            return
        if p is None or isinstance(p, bool) or not isinstance(p, int):
            raise ConfigError(f"task {self.name!r} needs an integer modulus p, got {p!r}")
        if p < 2:
            raise ConfigError(f"task {self.name!r}: modulus p must be at least 2, got {p}")
        if p > MAX_MODULUS:
            raise ConfigError(f"task {self.name!r}: modulus p = {p} gives {p * p:,} pairs; "
                              f"mechgrok allows p ≤ {MAX_MODULUS}")
        if self.needs_prime and not is_prime(p):
            raise ConfigError(f"task {self.name!r} {self.prime_why}; p = {p} is not prime (try "
                              f"97 or 113)")

    def pairs(self, p: int | None, degree: int | None = None) -> np.ndarray:
        """All valid (x, y) pairs in row-major order. (N, 2) int64"""
        n = self.n_elements(p, degree)
        grid_x, grid_y = np.meshgrid(np.arange(n), np.arange(n), indexing="ij")
        x, y = grid_x.ravel(), grid_y.ravel()
        if self._valid_y is not None:
            keep = self._valid_y(y, n)
            x, y = x[keep], y[keep]
        return np.stack([x, y], axis=1).astype(np.int64)

    def answer(self, x: np.ndarray, y: np.ndarray, p: int | None,
               degree: int | None = None) -> np.ndarray:
        """x ∘ y for arrays of elements (the label)."""
        return self._answer(np.asarray(x, np.int64), np.asarray(y, np.int64),
                            self.size(p, degree))


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


def _in_sn(rule: str) -> Callable[[np.ndarray, np.ndarray, int], np.ndarray]:
    """The answers of ``rule`` (x · y, x · y · x⁻¹ or x · y · x) in S_n, n the third argument."""
    def answer(x: np.ndarray, y: np.ndarray, degree: int) -> np.ndarray:
        prod, inv = symmetric_tables(degree)
        return prod[x, y] if rule == "xy" else prod[prod[x, y], inv[x] if rule == "xyx^-1" else x]
    return answer


def _nonzero_y(y: np.ndarray, _n: int) -> np.ndarray:
    return y != 0


_MOD = "0 ≤ x, y < p"
_SN = "S_n × S_n (n! × n!; n = degree, default 5)"
_ADD, _SUB = Algebra("cyclic", "xy"), Algebra("cyclic", "xy^-1")
_MUL = Algebra("multiplicative", "xy", zero="x · 0 = 0 · y = 0 (2p − 1 pairs); Z_p* covers the "
               "(p − 1)² pairs with x, y ≠ 0")
_DIV = Algebra("multiplicative", "xy^-1", zero="no pair has y = 0; 0 / y = 0 (p − 1 pairs); Z_p* "
               "covers the (p − 1)² pairs with x, y ≠ 0")
_NONE = Algebra("none")
_PERM, _CONJ, _ABA = (Algebra("symmetric", r, degree=DEFAULT_DEGREE)
                      for r in ("xy", "xyx^-1", "xyx"))
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
        *(Task(name, rule, _SN, False, False, alg, _in_sn(alg.rule)) for name, rule, alg in [
            ("s5", "x · y (permutations of n; apply y, then x)", _PERM),
            ("s5conj", "x · y · x⁻¹", _CONJ), ("s5aba", "x · y · x", _ABA)]),
        Task("mul", "x · y mod p", _MOD + "; p prime", True, True, _MUL,
             lambda x, y, p: (x * y) % p,
             prime_why="multiplies in Z_p*, which is a group only for a prime modulus"),
    ]
}


def get_task(name: str) -> Task:
    try:
        return TASKS[name]
    except KeyError:
        raise ConfigError(f"unknown task {name!r}; choose one of: {', '.join(TASKS)} (see "
                          f"`mechgrok tasks`)") from None


# --- The split -------------------------------------------------------------------------------
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
    p: int | None  # the modulus; None for a symmetric task
    n: int  # number of elements = number of answer classes; the `=` token is n
    pairs: np.ndarray  # (N, 2) all valid pairs, row-major
    labels: np.ndarray  # (N,)
    train_idx: np.ndarray  # indices into pairs
    test_idx: np.ndarray
    degree: int | None = None  # n of S_n for a symmetric task (5 included); None for a modular

    @property
    def algebra(self) -> Algebra:
        """The task's algebra at this data's degree (S4's for ``s5`` with degree 4)."""
        return self.task.algebra.with_degree(self.degree)

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


def make_dataset(name: str, p: int | None, frac_train: float, seed: int, *,
                 degree: int | None = None) -> TaskData:
    """All pairs of a task with labels, split by ``seed`` into train and test. ``p``: the
    modulus of a modular task; ``degree``: the n of S_n of a symmetric one (None: 5)."""
    task = get_task(name)
    task.validate_modulus(p, degree)
    if isinstance(frac_train, bool) or not isinstance(frac_train, (int, float)) \
            or not 0.0 < float(frac_train) < 1.0:
        raise ConfigError(f"train fraction must be strictly between 0 and 1, got {frac_train!r}")
    pairs = task.pairs(p, degree)
    labels = task.answer(pairs[:, 0], pairs[:, 1], p, degree)
    n_pairs = len(pairs)
    n_train = math.floor(float(frac_train) * n_pairs)
    if n_train < 1 or n_train >= n_pairs:
        raise ConfigError(f"train fraction {frac_train} of {n_pairs} pairs leaves {n_train} "
                          f"train and {n_pairs - n_train} test pairs; both must be at least 1")
    perm = split_permutation(n_pairs, seed)
    return TaskData(task=task, p=p if task.modular else None, n=task.n_elements(p, degree),
                    pairs=pairs, labels=labels, train_idx=np.sort(perm[:n_train]),
                    test_idx=np.sort(perm[n_train:]), degree=task.degree_of(degree))


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
