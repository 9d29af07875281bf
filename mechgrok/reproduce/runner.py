"""Running an entry at a budget (:func:`reproduce`): train and analyse its runs as sweeps, read
them back as evidence, give every claim its measured value and verdict, write the report.

Each run set of the budget is one sweep, ``<out-dir>/reproduce-<entry>-<budget>-<set>/``, run by
:func:`mechgrok.sweep.run_sweep`: relaunching the same command skips what is done and resumes
what was interrupted, like any sweep; ``workers``, ``backend`` and ``address`` are passed
through. Every claim is evaluated and shown, whatever its verdict.

Time is reported two ways: the wall time of this call, and the compute time the runs recorded
(training plus analysis, summed over the runs, from each sweep's ``sweep.json``, which keeps it
across relaunches).
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from mechgrok.errors import MechgrokError
from mechgrok.reproduce.catalogue import get_entry
from mechgrok.reproduce.entry import Budget, Claim, Entry, verdict
from mechgrok.reproduce.evidence import Evidence, RunEvidence

__all__ = ["ClaimResult", "Reproduction", "evaluate", "gather", "reproduce", "sweep_name"]


def sweep_name(entry: str, budget: str, run_set: str) -> str:
    """The sweep directory's name of one run set: ``reproduce-<entry>-<budget>-<set>``."""
    return f"reproduce-{entry}-{budget}-{run_set}"


@dataclass
class ClaimResult:
    """One claim, with what mechgrok measured, what its rule said, and the verdict."""

    claim: Claim
    measured: dict[str, Any]
    holds: bool | None
    verdict: str
    value: str  # the measured value as the report shows it


@dataclass
class Reproduction:
    """What :func:`reproduce` did: the evidence, each claim's result, the time taken."""

    entry: Entry
    budget: Budget
    evidence: Evidence
    claims: list[ClaimResult]
    seconds: float = 0.0  # this call's wall time
    compute_seconds: float = 0.0  # training + analysis recorded by the runs, summed
    trained: int = 0  # runs trained (or resumed) by this call
    skipped: int = 0  # runs already done
    failed: dict[str, str] = field(default_factory=dict)  # run id → why
    sweep_dirs: list[Path] = field(default_factory=list)
    report: Path | None = None


def _train(entry: Entry, budget: Budget, out_dir: Path, backend: str, workers: int | None,
           address: str | None, on_result: Callable[[dict[str, Any], int, int], None] | None,
           rep: Reproduction) -> None:
    from mechgrok.sweep import run_sweep

    for rs in budget.runs:
        spec = rs.spec(sweep_name(entry.name, budget.name, rs.name))
        res = run_sweep(spec, out_dir, backend=backend, workers=workers, address=address,
                        on_result=on_result)
        rep.sweep_dirs.append(res.sweep_dir)
        rep.trained += len(res.trained)
        rep.skipped += len(res.skipped)
        rep.failed.update(res.failed)


def gather(entry: Entry, budget: Budget, out_dir: str | Path) -> tuple[Evidence, float]:
    """The budget's runs that are done (trained and analysed), from each run set's
    ``sweep.json``, as :class:`Evidence`; and their recorded compute time (seconds)."""
    from mechgrok.store.sweep import is_sweep_dir, load_sweep

    runs: list[RunEvidence] = []
    seconds = 0.0
    for rs in budget.runs:
        sweep_dir = Path(out_dir) / sweep_name(entry.name, budget.name, rs.name)
        if not is_sweep_dir(sweep_dir):
            continue
        for r in load_sweep(sweep_dir).get("runs", []):
            if r.get("state") != "done":
                continue
            seconds += float(r.get("seconds") or 0.0)
            runs.append(RunEvidence(r["run_id"], r["path"], rs.name, dict(r.get("point") or {}),
                                    int(r.get("seed", 0))))
    return Evidence(budget.name, budget.epochs(), runs), seconds


def evaluate(entry: Entry, evidence: Evidence) -> list[ClaimResult]:
    """Every claim of ``entry`` measured on ``evidence`` and judged by its rule (all of them,
    whatever their verdict)."""
    out = []
    for c in entry.claims:
        measured = c.measure(evidence)
        holds = c.rule(measured)
        out.append(ClaimResult(c, measured, holds,
                               verdict(holds, evidence.budget, evidence.epochs), c.show(measured)))
    return out


def reproduce(entry: str | Entry, budget: str = "quick", out_dir: str | Path = "checkpoints",
              reports_dir: str | Path | None = "reports", *, backend: str = "local",
              workers: int | None = None, address: str | None = None,
              on_result: Callable[[dict[str, Any], int, int], None] | None = None
              ) -> Reproduction:
    """Train and analyse ``entry``'s runs at ``budget`` (resumable), judge every claim, and
    write ``<reports_dir>/reproduce-<name>.html`` (no report when ``reports_dir`` is None).

    ``entry`` is a catalogue name or an :class:`Entry` (a test passes one whose budget is
    shrunk with :meth:`Budget.with_settings`). A wrong name or budget is a one-line
    :class:`~mechgrok.errors.ConfigError`; runs that fail are listed in ``failed`` and the
    claims are judged on the runs that are done.
    """
    t0 = time.perf_counter()
    e = entry if isinstance(entry, Entry) else get_entry(entry)
    b = e.budget(budget)
    if backend not in ("local", "ray"):
        raise MechgrokError(f"unknown backend {backend!r}; choose local or ray")
    rep = Reproduction(e, b, Evidence(b.name, 0, []), [])
    _train(e, b, Path(out_dir), backend, workers, address, on_result, rep)
    rep.evidence, rep.compute_seconds = gather(e, b, out_dir)
    rep.claims = evaluate(e, rep.evidence)
    rep.seconds = time.perf_counter() - t0
    if reports_dir is not None:
        from mechgrok.reproduce.page import write_reproduction

        rep.report = write_reproduction(rep, reports_dir)
        rep.seconds = time.perf_counter() - t0
    return rep
