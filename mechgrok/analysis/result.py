"""What one :func:`~mechgrok.analysis.analyze` call did (:class:`AnalysisResult`)."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from mechgrok.store import Run

__all__ = ["AnalysisResult"]


@dataclass
class AnalysisResult:
    """Counts of what an analysis computed and reused, what did not apply and what failed, the
    run-level summary it wrote, and how many processes computed it."""

    run: Run
    probes: list[str]
    checkpoints: int
    computed: int = 0
    reused: int = 0
    #: records that were there but stale (another checkpoint, final checkpoint or probe code),
    #: computed again (included in ``computed``)
    stale: int = 0
    seconds: float = 0.0
    not_applicable: dict[str, str] = field(default_factory=dict)
    errors: list[dict[str, Any]] = field(default_factory=list)
    summary: dict[str, Any] = field(default_factory=dict)
    #: processes that computed checkpoints (1: this one), and why not more when asked for more
    workers: int = 1
    workers_note: str | None = None
