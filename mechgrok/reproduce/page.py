"""The report of a reproduction, ``reports/reproduce-<name>.html``: per claim the paper's value
with its citation, mechgrok's value, the rule and the verdict; the settings with their sources;
every run; the time taken; the runs' curves overlaid. Built on the run reports' page shell
(:mod:`mechgrok.report.page`), so it is one self-contained file like any mechgrok report."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING

from mechgrok.report.page import card, escape, figure_html, missing_html, render_page, write_page
from mechgrok.reproduce.entry import QUICK

if TYPE_CHECKING:
    from mechgrok.reproduce.runner import Reproduction

__all__ = ["MAX_CURVES", "default_path", "duration", "render_reproduction", "write_reproduction"]

#: the most runs one overlaid figure draws (the first ones, in the grid's order)
MAX_CURVES = 24

_VERDICT_COLOUR = {"reproduced": "#1e7b34", "differs": "#a12626"}


def duration(seconds: float) -> str:
    """``95 s``, ``12.5 min``, ``2.3 h``."""
    if seconds < 120:
        return f"{seconds:.0f} s"
    if seconds < 7200:
        return f"{seconds / 60:.1f} min"
    return f"{seconds / 3600:.1f} h"


def default_path(name: str, reports_dir: str | Path = "reports") -> Path:
    """Where an entry's report goes: ``reports/reproduce-<name>.html``."""
    return Path(reports_dir) / f"reproduce-{name}.html"


def _table(head: list[str], rows: list[list[str]]) -> str:
    """A table; ``head`` is plain text (escaped here), ``rows`` hold HTML already escaped."""
    th = "".join(f"<th>{escape(h)}</th>" for h in head)
    body = "".join("<tr>" + "".join(f"<td>{c}</td>" for c in row) + "</tr>" for row in rows)
    return f'<table class="runs"><tr>{th}</tr>{body}</table>'


def _verdict_html(v: str) -> str:
    colour = _VERDICT_COLOUR.get(v, "#8a6d3b")
    return f'<b style="color:{colour}">{escape(v)}</b>'


def _claims(rep: Reproduction) -> str:
    rows = [[f"<b>{escape(r.claim.id)}</b><br>{escape(r.claim.statement)}",
             f"{escape(r.claim.paper_value)}<br><i>{escape(r.claim.citation)}</i>",
             escape(r.value), escape(r.claim.rule_text), _verdict_html(r.verdict)]
            for r in rep.claims]
    return _table(["claim", "paper (citation)", "mechgrok", "rule", "verdict"], rows)


def _card(rep: Reproduction) -> str:
    e, b = rep.entry, rep.budget
    paper = f"{e.paper.authors} ({e.paper.year}), “{e.paper.title}”, {e.paper.where}"
    expected = f"{duration(b.seconds)}: {b.time_note}"
    rows = [("paper", escape(paper)), ("authors' code", escape(e.paper.code or "—")),
            ("budget", escape(f"{b.name}: at most {rep.evidence.epochs:,} epochs a run")),
            ("runs", escape(f"{len(rep.evidence.runs)} done: {rep.trained} trained now, "
                            f"{rep.skipped} already done, {len(rep.failed)} failed")),
            ("wall time of this command", escape(duration(rep.seconds))),
            ("compute time recorded by the runs", escape(
                f"{duration(rep.compute_seconds)} (training + analysis, summed over runs)")),
            ("expected here", escape(expected))]
    return f'<div class="card">{card(rows)}</div>'


def _settings(rep: Reproduction) -> str:
    b = rep.budget
    parts = []
    if b.note:
        parts.append(f'<div class="banner">{escape(b.note)}</div>')
    for rs in b.runs:
        grid = "; ".join(f"{k} ∈ {list(v)}" for k, v in rs.grid.items()) or "no grid"
        seeds = f"seeds {list(rs.seeds)}" if rs.seeds is not None else f"seed {rs.seed}"
        parts.append(f"<p><b>{escape(rs.name)}</b>: {escape(rs.label)}. Base settings "
                     f"<code>{escape(dict(rs.base))}</code>; {escape(grid)}; "
                     f"{escape(seeds)}.</p>")
    if b.settings:
        parts.append(_table(["setting", "value", "source"],
                            [[escape(s.name), escape(s.value), escape(s.source)]
                             for s in b.settings]))
    return "".join(parts)


def _runs(rep: Reproduction) -> str:
    rows = []
    for r in rep.evidence.runs:
        acc = r.final_test_acc
        rows.append([escape(r.set_name), f"<code>{escape(r.run_id)}</code>", escape(r.label),
                     escape(r.data.run.status), escape("—" if acc is None else f"{acc:.3f}"),
                     escape(r.grokking_epoch if r.grokked else "—")])
    rows += [[escape("?"), f"<code>{escape(k)}</code>", escape("failed"), escape(v), "", ""]
             for k, v in rep.failed.items()]
    if not rows:
        return missing_html("no run is done yet")
    return _table(["run set", "run", "grid point", "status", "final test accuracy",
                   "grokking epoch"], rows)


def _figures(rep: Reproduction) -> str:
    from mechgrok.report.figures import compare_curves

    runs = [r.data for r in rep.evidence.runs[:MAX_CURVES]]
    if not runs:
        return ""
    out = []
    for metric, caption in (("test_acc", "Test accuracy of every run."),
                            ("test_loss", "Test loss of every run (log scale).")):
        out.append(figure_html(compare_curves(runs, metric), f"curves-{metric}", caption))
    return "".join(out)


def render_reproduction(rep: Reproduction) -> str:
    """The whole report page of ``rep`` as HTML."""
    e, b = rep.entry, rep.budget
    honesty = ("Quick budget: these are not the paper's settings, so a claim that holds says "
               "“holds at the quick settings (not the paper's)” and one that does not says "
               "“not reached … at the quick settings”; only the paper budget can reproduce or "
               "contradict the paper." if b.name == QUICK else
               "Paper budget: the paper's settings and epochs. A claim is “reproduced” or "
               "“differs” by its rule; “not reached within N epochs” when the rule's "
               "precondition (grokking, a phase) was not reached.")
    body = (f'<div class="banner">{escape(honesty)}</div>{_card(rep)}'
            f"<section><h2>Claims</h2>{_claims(rep)}</section>"
            f"<section><h2>Settings</h2>{_settings(rep)}</section>"
            f"<section><h2>Runs</h2>{_runs(rep)}{_figures(rep)}</section>")
    return render_page(f"reproduce {e.name}: {e.paper.short}",
                       f"{e.paper.title} — {b.name} budget", body)


def write_reproduction(rep: Reproduction, reports_dir: str | Path = "reports",
                       out: str | Path | None = None) -> Path:
    """Write the report (``reports/reproduce-<name>.html`` unless ``out``); returns its path."""
    path = Path(out) if out is not None else default_path(rep.entry.name, reports_dir)
    write_page(path, render_reproduction(rep))
    return path

