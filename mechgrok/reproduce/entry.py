"""What a catalogue entry is: the paper, the runs it needs at each budget, its claims, and the
verdicts a claim can get.

A **claim** has the paper's value with its citation, a function from the analysed runs
(:class:`~mechgrok.reproduce.evidence.Evidence`) to mechgrok's measured numbers, and a rule,
written twice: as code (``rule(measured) → True | False | None``) and as the text the report
shows beside the verdict. ``None`` means the rule's precondition was not reached (the runs did
not grok, a phase was not detected): the claim could not be tested in the epochs trained.

**Verdicts** (:func:`verdict`), honest about the settings the runs used:

* at the ``paper`` budget (the paper's own settings and epochs): ``reproduced`` when the rule
  holds, ``differs`` when it fails, ``not reached within N epochs`` when its precondition was
  not reached;
* at the ``quick`` budget (other settings, fewer epochs): ``holds at the quick settings (not
  the paper's)`` when the rule holds, else ``not reached within N epochs at the quick settings``.
  A quick run never reproduces, or refutes, a paper.

N is the most epochs any run of the budget may train (its ``train.epochs``).
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from mechgrok.errors import ConfigError

if TYPE_CHECKING:
    from mechgrok.reproduce.evidence import Evidence
    from mechgrok.sweep import SweepSpec

__all__ = [
    "BUDGETS",
    "DIFFERS",
    "PAPER",
    "QUICK",
    "QUICK_HOLDS",
    "REPRODUCED",
    "Budget",
    "Claim",
    "Entry",
    "Paper",
    "RunSet",
    "Setting",
    "not_reached",
    "verdict",
]

QUICK = "quick"
PAPER = "paper"
#: the budgets every entry has, cheapest first
BUDGETS = (QUICK, PAPER)

REPRODUCED = "reproduced"
DIFFERS = "differs"
QUICK_HOLDS = "holds at the quick settings (not the paper's)"


def not_reached(epochs: int, budget: str = PAPER) -> str:
    """The verdict of a claim whose rule could not be met in ``epochs`` epochs."""
    tail = " at the quick settings" if budget == QUICK else ""
    return f"not reached within {epochs:,} epochs{tail}"


def verdict(holds: bool | None, budget: str, epochs: int) -> str:
    """The verdict of a claim whose rule gave ``holds`` (True, False, or None: its precondition
    not reached) at ``budget``, whose runs trained at most ``epochs`` epochs."""
    if budget not in BUDGETS:
        raise ConfigError(f"unknown budget {budget!r}; choose one of: {', '.join(BUDGETS)}")
    if budget == QUICK:
        return QUICK_HOLDS if holds is True else not_reached(epochs, QUICK)
    if holds is True:
        return REPRODUCED
    return DIFFERS if holds is False else not_reached(epochs, PAPER)


@dataclass(frozen=True)
class Paper:
    """A paper: who, when, what, and where to find it (arXiv id, code repository)."""

    authors: str  # surnames, comma-separated: "Nanda, Chan, Lieberum, Smith, Steinhardt"
    year: int
    title: str
    where: str  # "arXiv:2301.05217 (ICLR 2023)"
    code: str = ""  # the authors' code, when public

    @property
    def short(self) -> str:
        """``Nanda et al. 2023``."""
        first = self.authors.split(",")[0].strip()
        return f"{first} et al. {self.year}" if "," in self.authors else f"{first} {self.year}"


@dataclass(frozen=True)
class Setting:
    """One setting of a budget's runs, with where the paper (or its code) says it."""

    name: str  # "learning rate"
    value: str  # "1e-3"
    source: str  # "transformers.py l. 29 (Config.lr)"


@dataclass(frozen=True)
class RunSet:
    """One group of runs a budget trains: a sweep (shared settings, grid axes, seeds), trained
    and analysed by :func:`mechgrok.sweep.run_sweep` into its own sweep directory."""

    name: str  # "main", "clock" …: the sweep is called reproduce-<entry>-<budget>-<name>
    label: str  # what these runs are, for the report
    base: Mapping[str, Any]  # a run file's content: preset, task, model, train
    grid: Mapping[str, Sequence[Any]] = field(default_factory=dict)
    seeds: Sequence[int] | None = None
    probes: Sequence[str] | None = None  # None: every applicable probe
    checkpoints: str = "economy"  # the sweep's checkpoint setting ("full": as single runs)

    def sweep_table(self, sweep_name: str) -> dict[str, Any]:
        """This run set as a sweep file's content, the sweep called ``sweep_name``."""
        sweep: dict[str, Any] = {"name": sweep_name, "checkpoints": self.checkpoints}
        if self.grid:
            sweep["grid"] = {k: list(v) for k, v in self.grid.items()}
        if self.seeds is not None:
            sweep["seeds"] = list(self.seeds)
        elif not self.grid:  # one run: a sweep of its one seed
            sweep["seeds"] = [self.seed]
        if self.probes is not None:
            sweep["probes"] = list(self.probes)
        return {**{k: dict(v) if isinstance(v, Mapping) else v for k, v in self.base.items()},
                "sweep": sweep}

    def spec(self, sweep_name: str) -> SweepSpec:
        """The :class:`~mechgrok.sweep.SweepSpec` of these runs (shape checked)."""
        from mechgrok.sweep import load_sweep_spec

        return load_sweep_spec(self.sweep_table(sweep_name))

    @property
    def seed(self) -> int:
        """The seed of a run set without a seeds list (the base's ``train.seed``, else 0)."""
        return int(dict(self.base.get("train") or {}).get("seed", 0))

    def with_settings(self, settings: Mapping[str, Any]) -> RunSet:
        """These runs with ``settings`` (``{"section.field": value}``) over the base; a key
        that is a grid axis replaces the axis's values (give a list)."""
        base = {k: dict(v) if isinstance(v, Mapping) else v for k, v in self.base.items()}
        grid = {k: list(v) for k, v in self.grid.items()}
        for key, value in settings.items():
            if key in grid:
                if not isinstance(value, list) or not value:
                    raise ConfigError(f"{key} is a grid axis of run set {self.name!r}: give "
                                      f"its values as a non-empty list")
                grid[key] = value
                continue
            section, _, name = key.partition(".")
            if not name:
                raise ConfigError(f"setting {key!r} must be section.field")
            base.setdefault(section, {})[name] = value
        return dataclasses.replace(self, base=base, grid=grid)


@dataclass(frozen=True)
class Budget:
    """The runs an entry trains at one budget, and how long that takes here."""

    name: str  # quick | paper
    runs: tuple[RunSet, ...]
    #: the wall time on this machine's 2-core CPU, seconds (measured, or estimated when
    #: ``measured`` is False), and what the number is
    seconds: float
    measured: bool
    time_note: str
    settings: tuple[Setting, ...] = ()  # each setting with its citation
    note: str = ""  # how these settings differ from the paper's

    def with_settings(self, settings: Mapping[str, Any]) -> Budget:
        """Every run set with ``settings`` over its own (see :meth:`RunSet.with_settings`):
        how tests run an entry's pipeline at a tiny budget."""
        return dataclasses.replace(self, runs=tuple(r.with_settings(settings) for r in self.runs))

    def epochs(self) -> int:
        """The most epochs a run of this budget may train: the N of "not reached within N
        epochs"."""
        from mechgrok.sweep import expand

        return max(pt.config.train.epochs for rs in self.runs
                   for pt in expand(rs.spec("budget-epochs")))


@dataclass(frozen=True)
class Claim:
    """One claim of a paper, the number mechgrok measures for it, and the rule that compares
    them (as code and as text)."""

    id: str
    statement: str
    paper_value: str
    citation: str  # figure, table, section or script line
    measure: Callable[[Evidence], dict[str, Any]]  # the analysed runs → measured numbers
    rule: Callable[[Mapping[str, Any]], bool | None]  # None: precondition not reached
    rule_text: str
    show: Callable[[Mapping[str, Any]], str]  # the measured numbers as one line of text


@dataclass(frozen=True)
class Entry:
    """A paper in the catalogue: its claims, and its runs at each budget."""

    name: str
    paper: Paper
    summary: str  # one line: what the entry checks
    claims: tuple[Claim, ...]
    budgets: Mapping[str, Budget]

    def budget(self, name: str) -> Budget:
        if name not in self.budgets:
            raise ConfigError(f"unknown budget {name!r} for {self.name}; choose one of: "
                              f"{', '.join(b for b in BUDGETS if b in self.budgets)}")
        return self.budgets[name]

    def with_budget(self, budget: Budget) -> Entry:
        """This entry with ``budget`` in place of its budget of the same name."""
        return dataclasses.replace(self, budgets={**self.budgets, budget.name: budget})
