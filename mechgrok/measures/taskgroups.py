"""A task read as a group: the :class:`Group` of its algebra and the map between the two.

A task's algebra (``Task.algebra``, :mod:`mechgrok.algebra`) names a group kind and a rule;
:func:`task_group` builds that group for a modulus p. A task speaks of *tokens* (its elements
and answer classes, ``0 … n − 1``), a group of *element indices* (``0 … order − 1``); the maps:

* :func:`group_tokens` ``(order,)``: the task's token of each group element. Z_p and S5: the
  identity (the task's elements are the group's, in the same order). Z_p*: element index e is
  the integer e + 1, so the tokens are 1 … p − 1 and the token 0 (outside the group) has no
  element. The discrete log (:func:`~mechgrok.measures.discrete_log_table`) is not applied here:
  the irreps of Z_p* go through it themselves (:mod:`~mechgrok.measures.representations`).
* :func:`group_pairs` ``(order²,)``: for each group pair (a, b), row-major (row ``a·order + b``,
  the order :mod:`~mechgrok.measures.metrics` takes its logits in), the row of ``task.pairs(p)``
  holding the pair of tokens. For ``mul`` and ``div`` these are the (p − 1)² pairs with x, y ≠ 0;
  the pairs with a zero are left out (their answer is 0, outside the group).

With them, ``logits[group_pairs(task, p)][:, group_tokens(task, p)]`` is a table of the group in
:mod:`~mechgrok.measures.metrics`'s layout, and for every group task
``group_tokens[answer_table(group, rule)] == task.answer(tokens[a], tokens[b])`` (tested).
"""

from __future__ import annotations

import numpy as np

from mechgrok.measures.groups import Group, cyclic, multiplicative, symmetric
from mechgrok.tasks import Task, get_task

__all__ = ["group_pairs", "group_tokens", "task_group"]


def _task(task: Task | str) -> Task:
    return get_task(task) if isinstance(task, str) else task


def task_group(task: Task | str, p: int | None = None) -> Group | None:
    """The group a task is a rule in (Z_p, Z_p* or S5), or None for a task with no group
    structure (algebra ``"none"``). ``p`` is the task's modulus (ignored for S5); a modulus the
    task refuses is the task's :class:`~mechgrok.errors.ConfigError`."""
    t = _task(task)
    alg = t.algebra
    if not alg.is_group:
        return None
    if alg.kind == "symmetric" and alg.degree is not None:  # Algebra: symmetric has a degree
        return symmetric(alg.degree)
    t.validate_modulus(p)
    return (cyclic if alg.kind == "cyclic" else multiplicative)(t.n_elements(p))


def group_tokens(task: Task | str, p: int | None = None) -> np.ndarray | None:
    """``(order,)`` int64: the task's token (element, answer class) of each group element, or
    None when the task has no group."""
    g = task_group(task, p)
    if g is None:
        return None
    if g.kind == "symmetric":
        return np.arange(g.order, dtype=np.int64)
    return np.asarray(g.elements, dtype=np.int64)


def group_pairs(task: Task | str, p: int | None = None) -> np.ndarray | None:
    """``(order²,)`` int64: the row of ``task.pairs(p)`` of each group pair (a, b), row-major;
    None when the task has no group."""
    t = _task(task)
    tokens = group_tokens(t, p)
    if tokens is None:
        return None
    pairs = t.pairs(p)
    n = t.n_elements(p)
    row_of = np.full(n * n, -1, dtype=np.int64)
    row_of[pairs[:, 0] * n + pairs[:, 1]] = np.arange(len(pairs))
    rows = row_of[(tokens[:, None] * n + tokens[None, :]).ravel()]
    if (rows < 0).any():  # not for any task of mechgrok's: a group pair the task lacks
        raise ValueError(f"task {t.name!r} lacks pairs of its group's elements")
    return rows
