"""Reproducing the papers: ``mechgrok reproduce NAME`` trains what a paper's experiment needs,
analyses it, and sets each of the paper's claims beside mechgrok's number with a verdict.

An :class:`Entry` of the :data:`CATALOGUE` names the paper, its runs at each budget (``quick``:
a few minutes on a 2-core CPU, at settings that are not the paper's; ``paper``: the paper's own
settings and epochs, each setting cited) and its :class:`Claim`\\ s: the paper's value with its
citation, a function from the analysed runs to mechgrok's value, and a rule written as code and
as text. :func:`reproduce` trains the runs as sweeps (resumable; local workers or Ray), reads
them back (:class:`Evidence`), judges every claim (:func:`verdict`: reproduced, differs, not
reached within N epochs; at the quick budget only "holds at the quick settings (not the
paper's)" or "not reached … at the quick settings") and writes
``reports/reproduce-<name>.html``.

Where things live: :mod:`.entry` (what an entry, a claim and a verdict are), :mod:`.evidence`
(the runs as claims read them), one module per paper (:mod:`.nanda`, :mod:`.zhong`,
:mod:`.chughtai`), :mod:`.catalogue`, :mod:`.runner` (:func:`reproduce`), :mod:`.page` (the
report). docs/reproductions.md has the measured verdict tables.
"""

from mechgrok.reproduce.catalogue import CATALOGUE, get_entry
from mechgrok.reproduce.entry import (
    BUDGETS,
    DIFFERS,
    PAPER,
    QUICK,
    QUICK_HOLDS,
    REPRODUCED,
    Budget,
    Claim,
    Entry,
    Paper,
    RunSet,
    Setting,
    not_reached,
    verdict,
)
from mechgrok.reproduce.evidence import Evidence, RunEvidence, start_of_fall, value_near
from mechgrok.reproduce.page import render_reproduction, write_reproduction
from mechgrok.reproduce.runner import (
    ClaimResult,
    Reproduction,
    evaluate,
    gather,
    reproduce,
    sweep_name,
)

__all__ = [
    "BUDGETS",
    "CATALOGUE",
    "DIFFERS",
    "PAPER",
    "QUICK",
    "QUICK_HOLDS",
    "REPRODUCED",
    "Budget",
    "Claim",
    "ClaimResult",
    "Entry",
    "Evidence",
    "Paper",
    "Reproduction",
    "RunEvidence",
    "RunSet",
    "Setting",
    "evaluate",
    "gather",
    "get_entry",
    "not_reached",
    "render_reproduction",
    "reproduce",
    "start_of_fall",
    "sweep_name",
    "value_near",
    "verdict",
    "write_reproduction",
]
