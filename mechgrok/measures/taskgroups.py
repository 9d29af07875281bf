"""A task read as a group: the :class:`Group` of its algebra and the map between the two.

A task's algebra (``Task.algebra``, :mod:`mechgrok.algebra`) names a group kind and a rule;
:func:`task_group` builds that group for the task's size: a modulus ``p``, or for the symmetric
tasks the keyword ``degree`` n of S_n (None: 5, as :class:`~mechgrok.config.TaskConfig` stores
S5; ``p`` is ignored there). Every function here takes ``(task, p, degree=...)`` alike, so a
caller passes a config's ``p`` and ``degree`` (or a :class:`~mechgrok.tasks.TaskData`'s)
whatever the task. A task speaks of *tokens* (its elements and answer classes, ``0 … n − 1``),
a group of *element indices* (``0 … order − 1``); the maps:

* :func:`group_tokens` ``(order,)``: the task's token of each group element. Z_p and S_n: the
  identity (the task's elements are the group's, in the same order). Z_p*: element index e is
  the integer e + 1, so the tokens are 1 … p − 1 and the token 0 (outside the group) has no
  element. The discrete log (:func:`~mechgrok.measures.discrete_log_table`) is not applied here:
  the irreps of Z_p* go through it themselves (:mod:`~mechgrok.measures.representations`).
* :func:`group_pairs` ``(order²,)``: for each group pair (a, b), row-major (row ``a·order + b``,
  the order :mod:`~mechgrok.measures.metrics` takes its logits in), the row of ``task.pairs(p)``
  holding the pair of tokens. For ``mul`` and ``div`` these are the (p − 1)² pairs with x, y ≠ 0;
  the pairs with a zero are left out (their answer is 0, outside the group).

For the tasks read in **Fourier** (cyclic Z_p and, through the discrete log, Z_p*),
:func:`fourier_view` gives the same maps in the cyclic group's own order: a
:class:`FourierView` of ``n`` elements (p, or p − 1), the ``op`` over Z_n (``"add"`` for the rule
xy, ``"sub"`` for xy⁻¹), the task's token at each exponent (``tokens[i]`` = i for Z_p,
g^i for Z_p*: discrete-log order) and the row of each pair (i, j) of exponents, row-major.
Every Fourier measure over Z_n applies to ``logits[view.pairs]`` and
``embedding[view.tokens]`` unchanged; for Z_p the view is the identity.

With them, ``logits[group_pairs(task, p)][:, group_tokens(task, p)]`` is a table of the group in
:mod:`~mechgrok.measures.metrics`'s layout, and for every group task
``group_tokens[answer_table(group, rule)] == task.answer(tokens[a], tokens[b])`` (tested).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from mechgrok.measures.groups import Group, cyclic, multiplicative, power_table, symmetric
from mechgrok.tasks import Task, get_task

__all__ = ["FourierView", "fourier_view", "group_pairs", "group_tokens", "task_group"]


def _task(task: Task | str) -> Task:
    return get_task(task) if isinstance(task, str) else task


def task_group(task: Task | str, p: int | None = None, *, degree: int | None = None
               ) -> Group | None:
    """The group a task is a rule in (Z_p, Z_p* or S_n), or None for a task with no group
    structure (algebra ``"none"``). ``p`` is the task's modulus (ignored for S_n), ``degree``
    the n of S_n (None: 5; refused for a modular task); a size the task refuses is the task's
    :class:`~mechgrok.errors.ConfigError`."""
    t = _task(task)
    t.degree_of(degree)  # a modular task refuses a degree, whatever its algebra
    alg = t.algebra
    if not alg.is_group:
        return None
    t.validate_modulus(p, degree)
    build = {"cyclic": cyclic, "multiplicative": multiplicative, "symmetric": symmetric}[alg.kind]
    return build(t.size(p, degree))  # the modulus, or the degree


def group_tokens(task: Task | str, p: int | None = None, *, degree: int | None = None
                 ) -> np.ndarray | None:
    """``(order,)`` int64: the task's token (element, answer class) of each group element, or
    None when the task has no group."""
    g = task_group(task, p, degree=degree)
    if g is None:
        return None
    if g.kind == "symmetric":
        return np.arange(g.order, dtype=np.int64)
    return np.asarray(g.elements, dtype=np.int64)


def group_pairs(task: Task | str, p: int | None = None, *, degree: int | None = None
                ) -> np.ndarray | None:
    """``(order²,)`` int64: the row of ``task.pairs(p, degree)`` of each group pair (a, b),
    row-major; None when the task has no group."""
    t = _task(task)
    tokens = group_tokens(t, p, degree=degree)
    if tokens is None:
        return None
    pairs = t.pairs(p, degree)
    n = t.n_elements(p, degree)
    row_of = np.full(n * n, -1, dtype=np.int64)
    row_of[pairs[:, 0] * n + pairs[:, 1]] = np.arange(len(pairs))
    rows = row_of[(tokens[:, None] * n + tokens[None, :]).ravel()]
    if (rows < 0).any():  # not for any task of mechgrok's: a group pair the task lacks
        raise ValueError(f"task {t.name!r} lacks pairs of its group's elements")
    return rows


_FOURIER_OPS = {"xy": "add", "xy^-1": "sub"}  # a rule of a cyclic group, as Fourier names it


@dataclass(frozen=True)
class FourierView:
    """A task read as a rule in the cyclic group Z_n (see the module docstring).

    ``n``: the group's order (p for Z_p, p − 1 for Z_p*); ``op``: ``"add"`` (i + j) or
    ``"sub"`` (i − j) mod n; ``tokens`` ``(n,)``: the task's token at exponent i; ``pairs``
    ``(n²,)``: the row of ``task.pairs(p)`` holding the tokens of exponents (i, j), row-major;
    ``log_order``: True for Z_p* (the tokens are g^i, g the smallest primitive root)."""

    n: int
    op: str
    tokens: np.ndarray
    pairs: np.ndarray
    log_order: bool

    @property
    def identity(self) -> bool:
        """True when the view changes nothing (Z_p: tokens and pairs in the task's order)."""
        return (not self.log_order and bool((self.tokens == np.arange(self.n)).all())
                and bool((self.pairs == np.arange(self.n * self.n)).all()))


def fourier_view(task: Task | str, p: int | None = None, *, degree: int | None = None
                 ) -> FourierView | None:
    """The :class:`FourierView` of a task whose algebra is a rule xy or xy⁻¹ in Z_p or Z_p*;
    None for every other task (S_n, the rules xyx⁻¹ and xyx, and tasks with no group).
    ``degree`` is taken as everywhere here (checked; a Fourier task refuses one)."""
    t = _task(task)
    t.degree_of(degree)
    alg = t.algebra
    if alg.kind not in ("cyclic", "multiplicative") or alg.rule not in _FOURIER_OPS:
        return None
    t.validate_modulus(p)
    n_tok = t.n_elements(p)
    if alg.kind == "cyclic":
        tokens = np.arange(n_tok, dtype=np.int64)
    else:
        tokens = np.asarray(power_table(n_tok), dtype=np.int64)
    pairs = t.pairs(p)
    row_of = np.full(n_tok * n_tok, -1, dtype=np.int64)
    row_of[pairs[:, 0] * n_tok + pairs[:, 1]] = np.arange(len(pairs))
    rows = row_of[(tokens[:, None] * n_tok + tokens[None, :]).ravel()]
    if (rows < 0).any():  # not for any task of mechgrok's
        raise ValueError(f"task {t.name!r} lacks pairs of its group's elements")
    tokens.setflags(write=False)
    rows.setflags(write=False)
    return FourierView(len(tokens), _FOURIER_OPS[alg.rule], tokens, rows,
                       alg.kind == "multiplicative")
