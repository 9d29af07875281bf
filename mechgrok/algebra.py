"""What a task is, algebraically: its group and the rule it computes, as plain data.

Every task of :mod:`mechgrok.tasks` carries an :class:`Algebra` (``Task.algebra``), so the rest
of mechgrok reads a task by its structure, never by its name (MEASURES.md §1, §7). This module
is plain data (no NumPy, nothing else of mechgrok) so that the lowest layer can hold it;
:func:`mechgrok.measures.task_group` builds the :class:`~mechgrok.measures.Group` from it.

The kinds (:data:`ALGEBRA_KINDS`) and how mechgrok reads each:

* ``"cyclic"``: the cyclic group Z_p, element = residue, product = x + y mod p. ``add`` is the
  rule ``"xy"`` (x + y), ``sub`` the rule ``"xy^-1"`` (x − y). Read in Fourier over Z_p.
* ``"multiplicative"``: the multiplicative group Z_p* = {1, …, p − 1} under x · y mod p, p prime.
  It is cyclic of order p − 1: with g the smallest primitive root and x = g^i (i the discrete
  log), x · y ↦ i + j and x · y⁻¹ ↦ i − j mod p − 1, so it is read in Fourier over Z_{p−1} with
  the elements in discrete-log order. ``mul`` is ``"xy"``, ``div`` is ``"xy^-1"``. **The element
  0 is outside the group**, but the tasks' tokens include it:

  - ``mul`` has all p² pairs; x · 0 = 0 · y = 0, so the 2p − 1 pairs with a zero answer 0;
  - ``div`` has no pair with y = 0 (0 has no inverse): p(p − 1) pairs; x = 0 gives 0 (p − 1
    pairs).

  In both, the group covers exactly the (p − 1)² pairs with x, y ≠ 0, whose answers are the
  p − 1 non-zero classes. Analyses in the group's basis restrict to those pairs and classes;
  the pairs with a zero operand (answer 0, whatever the other operand) are read apart: no circuit
  in Z_p* computes them.
* ``"symmetric"``: the symmetric group S_n, rules ``"xy"`` (``s5``), ``"xyx^-1"`` (``s5conj``),
  ``"xyx"`` (``s5aba``). Read in S_n's irreducible representations. The degree n is a task
  parameter (``TaskConfig.degree``, 3 … 6); a task's own ``Algebra`` holds the default, 5 (the
  S5 of Power et al., whose name the tasks keep), and :meth:`Algebra.with_degree` gives a run's.
* ``"none"``: no group structure is claimed (``cond``, ``quad1``–``quad3``, ``cube1``,
  ``cube2``). Such a task is read in the 2-D Fourier basis of Z_p × Z_p (products of the 1-D
  bases over x and y), which describes the answer table but claims no circuit.

Rules (:data:`GROUP_RULES`) are written with the group's product, whatever it is called in the
task: ``"xy"`` is x · y, ``"xy^-1"`` is x · y⁻¹, ``"xyx^-1"`` is x · y · x⁻¹, ``"xyx"`` is
x · y · x (the order of :data:`mechgrok.measures.RULES`).
"""

from __future__ import annotations

from dataclasses import dataclass, replace

__all__ = ["ALGEBRA_KINDS", "GROUP_RULES", "Algebra"]

ALGEBRA_KINDS = ("cyclic", "multiplicative", "symmetric", "none")
GROUP_RULES = ("xy", "xy^-1", "xyx^-1", "xyx")

_GROUP_NAMES = {"cyclic": "cyclic group Z_p", "multiplicative": "multiplicative group Z_p*",
                "symmetric": "symmetric group S{n}", "none": "none"}
_BASES = {"cyclic": "Fourier over Z_p",
          "multiplicative": "Fourier over Z_{p−1} in discrete-log order",
          "symmetric": "irreducible representations of S{n}",
          "none": "2-D Fourier over Z_p × Z_p"}


@dataclass(frozen=True)
class Algebra:
    """A task's group structure: ``kind`` (one of :data:`ALGEBRA_KINDS`), the ``rule`` it
    computes in that group (one of :data:`GROUP_RULES`; ``""`` for ``"none"``), the ``degree`` n
    of S_n for ``"symmetric"`` (None otherwise: the group's parameter is the task's modulus p;
    a task's own algebra holds the default degree, a run's comes from :meth:`with_degree`),
    and ``zero``: how the element 0, outside Z_p*, is handled (``"multiplicative"`` only)."""

    kind: str
    rule: str = ""
    degree: int | None = None
    zero: str = ""

    def __post_init__(self) -> None:
        if self.kind not in ALGEBRA_KINDS:
            raise ValueError(f"algebra kind {self.kind!r} is not one of {ALGEBRA_KINDS}")
        if not (self.rule in GROUP_RULES if self.is_group else self.rule == ""):
            raise ValueError(f"algebra {self.kind!r} cannot have rule {self.rule!r}: a group "
                             f"kind takes one of {GROUP_RULES}, 'none' takes ''")
        if (self.kind == "symmetric") != (self.degree is not None):
            raise ValueError("an algebra has a degree exactly when it is 'symmetric'")

    @property
    def is_group(self) -> bool:
        """True when the task is a rule in a group (every kind but ``"none"``)."""
        return self.kind != "none"

    @property
    def group_name(self) -> str:
        """In words: ``"cyclic group Z_p"``, ``"multiplicative group Z_p*"``,
        ``"symmetric group S5"`` or ``"none"``."""
        return _GROUP_NAMES[self.kind].replace("{n}", str(self.degree))

    @property
    def basis(self) -> str:
        """The basis mechgrok reads the task in, in words (``"Fourier over Z_p"`` …)."""
        return _BASES[self.kind].replace("{n}", str(self.degree))

    def with_degree(self, degree: int | None) -> Algebra:
        """This algebra in S_n for n = ``degree``: a symmetric algebra with that degree (None
        keeps its own, the default); any other kind is returned as it is (it has no degree)."""
        if self.kind != "symmetric" or degree is None or degree == self.degree:
            return self
        return replace(self, degree=degree)
