"""The run report's figures, one registry: each figure function registers itself with
:func:`figure` (its id, section, caption and the probes whose values it draws).

:data:`RUN_FIGURES` is the registry, kept in the report's order: by section (:data:`SECTIONS`),
then in the order the figures registered. The probes the figures draw (:func:`drawn_probes`) get
no generic figure of their scalars; every other probe does. An id registered twice is an error.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any, TypeVar

import plotly.graph_objects as go

from mechgrok.algebra import ALGEBRA_KINDS
from mechgrok.report.data import RunData

__all__ = ["FOURIER_ALGEBRAS", "IRREP_ALGEBRAS", "RUN_FIGURES", "SECTIONS", "FigureSpec",
           "drawn_probes", "figure"]

#: The algebras read in Fourier over a cyclic group (Z_p, and Z_p* by discrete log), and those
#: read in S_n's irreps: what a figure's ``algebras`` usually names.
FOURIER_ALGEBRAS = ("cyclic", "multiplicative")
IRREP_ALGEBRAS = ("symmetric",)

#: The run report's sections, in the order they appear.
SECTIONS = ("Training", "Progress measures", "Fourier", "Representations", "Attention", "Embedding",
            "Clock or pizza", "Softmax collapse")


@dataclass(frozen=True)
class FigureSpec:
    """One figure of the run report: element id ``fig-<id>``, its section and caption, the
    function that draws it, the probes whose values it draws, whether a report of a run that
    has not been analysed still says why the figure is missing (figures drawn from training
    alone; the others are covered by the report's "no measures yet" banner), and the task
    algebras it is drawn for (``algebras``, kinds of :data:`mechgrok.algebra.ALGEBRA_KINDS`;
    empty: every task). A report leaves out, without a note, a figure made for another
    algebra (the 2-D spectrum on add, the circles on S5): its figures fit the task."""

    id: str
    section: str
    caption: str
    build: Callable[[RunData], go.Figure]
    probes: tuple[str, ...] = ()
    note_unanalysed: bool = False
    algebras: tuple[str, ...] = ()

    def fits(self, task: str) -> bool:
        """Whether the figure is drawn for runs of ``task`` (by the task's algebra)."""
        from mechgrok.tasks import get_task

        return not self.algebras or get_task(task).algebra.kind in self.algebras


#: The registry, in the report's order (see the module docstring).
RUN_FIGURES: list[FigureSpec] = []

_F = TypeVar("_F", bound=Callable[..., Any])


def figure(id: str, section: str, caption: str, probes: Sequence[str] = (),
           note_unanalysed: bool = False, algebras: Sequence[str] = ()) -> Callable[[_F], _F]:
    """Register the decorated function (run → plotly ``Figure``) as a figure of the run report;
    the function itself is returned unchanged."""
    if section not in SECTIONS:
        raise ValueError(f"figure {id!r}: unknown section {section!r}; sections: "
                         f"{', '.join(SECTIONS)}")
    if any(s.id == id for s in RUN_FIGURES):
        raise ValueError(f"a report figure with id {id!r} is already registered")
    unknown = set(algebras) - set(ALGEBRA_KINDS)
    if unknown:
        raise ValueError(f"figure {id!r}: unknown algebras {sorted(unknown)}; kinds: "
                         f"{', '.join(ALGEBRA_KINDS)}")

    def register(fn: _F) -> _F:
        spec = FigureSpec(id, section, caption, fn, tuple(probes), note_unanalysed,
                          tuple(algebras))
        rank = SECTIONS.index(section)
        at = sum(1 for s in RUN_FIGURES if SECTIONS.index(s.section) <= rank)
        RUN_FIGURES.insert(at, spec)
        return fn

    return register


def drawn_probes() -> frozenset[str]:
    """The probes whose values have figures of their own."""
    return frozenset(p for spec in RUN_FIGURES for p in spec.probes)
