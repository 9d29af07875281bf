"""The sweep report's page: summary, phase diagrams, curves (every run's, or each grid point's
median above :data:`AGGREGATE_ABOVE` runs, with every run drawn on demand) and the runs table."""

from __future__ import annotations

import json
import time
from collections import Counter
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from mechgrok.report.figures.base import NoData
from mechgrok.report.page import (
    card,
    escape,
    figure_html,
    format_number,
    missing_html,
    render_page,
    safe_id,
    script_json,
    write_page,
)
from mechgrok.report.sweep.data import SweepData, format_value
from mechgrok.report.sweep.figures import (
    MEASURES,
    PALETTE,
    aggregated_curves,
    phase_diagram,
    selected_runs_figure,
    sweep_curves,
)
from mechgrok.report.sweep.thinning import MAX_POINTS, runs_payload

__all__ = ["AGGREGATE_ABOVE", "render_sweep_report", "write_sweep_report"]

#: above this many runs with curves the report draws each grid point's median and spread
#: instead of every run's own curve: 50 runs is 10 grid points of 5 seeds, where the palette's
#: 10 colours run out and 100 overlaid lines per figure stop being readable
AGGREGATE_ABOVE = 50

_PHASE_CAPTIONS = {
    "delay": "Epochs from memorisation to generalisation (99 % accuracy, held to the end), "
             "mean ± standard deviation over the runs of each cell that generalised; blank "
             "where none did.",
    "test_acc": "Test accuracy at the end of training, mean ± standard deviation over the "
                "cell's runs.",
    "label": "Liu et al.'s label of each cell's runs (comprehension: test reaches 90 % "
             "within twice the epochs train took; grokking: later; memorisation: never; "
             "confusion: train never does); the colour is the most common one.",
}

# Adds a run's two curves to #fig-runs-selected (or removes them), from the JSON in
# #sweep-runs-data; wired to the runs table's buttons and to clicks on a median curve.
_RUNS_JS = """(function(){
var el=document.getElementById("sweep-runs-data"),gd=document.getElementById("fig-runs-selected");
if(!el||!gd||!window.Plotly)return;
var D=JSON.parse(el.textContent),P=%s,next=0;
function idx(id){var o=[];(gd.data||[]).forEach(function(t,i){if(t.meta===id)o.push(i);});return o;}
function mark(id,on){document.querySelectorAll('button.plot-run').forEach(function(b){
  if(b.getAttribute("data-run")===id)b.setAttribute("aria-pressed",on?"true":"false");});}
function show(id,on){var have=idx(id);
  if(have.length){if(on!==true){Plotly.deleteTraces(gd,have);mark(id,false);}return;}
  if(on===false)return;var r=D.runs[id];if(!r)return;var c=P[next++%%P.length];
  Plotly.addTraces(gd,[["te","test","solid"],["tr","train","dot"]].map(function(k){
    return {x:r.e,y:r[k[0]],mode:"lines",name:r.name+" "+k[1],meta:id,legendgroup:id,
      line:{color:c,width:1.4,dash:k[2]},
      hovertemplate:r.name+"<br>"+k[1]+" acc, epoch %%{x}: %%{y:.3f}<extra></extra>"};}));
  mark(id,true);}
(gd.data||[]).forEach(function(t){if(typeof t.meta==="string")mark(t.meta,true);});
document.querySelectorAll('button.plot-run').forEach(function(b){b.addEventListener("click",
  function(){show(b.getAttribute("data-run"));});});
var clr=document.getElementById("runs-clear");
if(clr)clr.addEventListener("click",function(){var n=(gd.data||[]).length;
  if(n)Plotly.deleteTraces(gd,Array.from(Array(n).keys()));
  document.querySelectorAll('button.plot-run').forEach(function(b){b.setAttribute("aria-pressed","false");});});
["fig-curves-test_acc","fig-curves-train_acc"].forEach(function(f){var g=document.getElementById(f);
  if(g&&g.on)g.on("plotly_click",function(ev){var p=ev&&ev.points&&ev.points[0];
    var ids=p&&D.groups[p.data.meta];if(ids)ids.forEach(function(id){show(id,true);});});});
var q=document.getElementById("runs-filter");
if(q)q.addEventListener("input",function(){var s=q.value.toLowerCase();
  document.querySelectorAll("table.runs tr[data-run]").forEach(function(tr){
    tr.style.display=!s||tr.textContent.toLowerCase().indexOf(s)>=0?"":"none";});});
})();"""

_RUNS_CSS = ("button.plot-run{font-size:12px;padding:1px 6px;cursor:pointer}"
             "button.plot-run[aria-pressed=true]{background:#1b5fa8;color:#fff}"
             "#runs-filter{font-size:13px;padding:3px 6px;margin:4px 8px 8px 0;width:260px}")


def _summary(sd: SweepData, ax: list[str], others: list[str]) -> str:
    states = Counter(r.state for r in sd.runs)
    grid = " × ".join(f"{k} ({len(v)})" for k, v in sd.axes) or "seeds only"
    n_seeds = len(sd.seeds) if sd.seeds else 1
    rows = [("grid", f"{escape(grid)} × {n_seeds} seed{'s' if n_seeds > 1 else ''}"),
            ("runs", escape(", ".join(f"{k} {v}" for k, v in states.most_common()))),
            ("drawn over", escape(" × ".join(ax) or "—")),
            ("sweep directory", f"<code>{escape(sd.path)}</code>")]
    out = f'<section id="summary"><h2>Summary</h2><div class="card">{card(rows)}</div>'
    if others:
        out += (f'<div class="banner">Each cell aggregates the seeds and every value of '
                f'{escape(", ".join(others))}; <code>mechgrok report {escape(sd.path)} --axes '
                f'A,B</code> draws other axes.</div>')
    return out


def _phase_diagrams(sd: SweepData, ax: list[str]) -> str:
    parts = ['</section><section id="phase"><h2>Phase diagrams</h2>']
    for measure in MEASURES:
        try:
            fig = phase_diagram(sd, measure, ax)
        except NoData as e:
            parts.append(missing_html(e))
            break
        parts.append(figure_html(fig, f"fig-phase-{measure}", _PHASE_CAPTIONS[measure]))
    return "".join(parts)


def _every_run_curves(sd: SweepData) -> str:
    parts = []
    for metric, caption in (("test_acc", "Test accuracy of every run; one colour per grid "
                                         "point, its seeds drawn in the same colour."),
                            ("train_acc", "Train accuracy of every run: how fast each point "
                                          "memorises.")):
        try:
            parts.append(figure_html(sweep_curves(sd, metric), f"fig-curves-{metric}", caption))
        except NoData as e:
            parts.append(missing_html(e))
            break
    return "".join(parts)


def _aggregated_section(sd: SweepData, ax: list[str], others: list[str],
                        payload: dict[str, Any], aggregate_above: int, max_points: int) -> str:
    groups = len(payload["groups"])
    where = (f"one panel per value of {ax[1]}, one colour per value of {ax[0]}" if len(ax) > 1
             else f"one colour per value of {ax[0]}" if ax else "one curve")
    if others:
        where += f", one line style per value of {', '.join(others)}"
    parts = [f'<div class="banner">{len(sd.with_curves())} runs in {groups} grid point'
             f'{"s" if groups != 1 else ""}: more than {aggregate_above}, so each grid '
             f'point is drawn as the median of its runs with a band from the lowest to the '
             f'highest ({escape(where)}), each curve thinned to about {max_points} of its '
             f'evaluations with every extreme and each seed\'s memorisation and generalisation '
             f'epoch kept. Every run is in the <a href="#runs">runs table</a>: its '
             f'<b>plot</b> button, or a click on a median curve, draws those runs in the '
             f'<a href="#wrap-fig-runs-selected">individual runs</a> figure.</div>']
    for metric, caption in (("test_acc", "Test accuracy: the median over each grid point's "
                                         "seeds, shaded from the lowest seed to the highest. "
                                         "Click a curve to draw its runs below."),
                            ("train_acc", "Train accuracy, the same way: how fast each point "
                                          "memorises.")):
        try:
            parts.append(figure_html(aggregated_curves(sd, metric, ax, max_points),
                                     f"fig-curves-{metric}", caption))
        except NoData as e:
            parts.append(missing_html(e))
            return "".join(parts)
    parts.append(figure_html(selected_runs_figure(payload), "fig-runs-selected",
                             "Individual runs, thinned the same way: at first the runs of "
                             "the first grid point; add or remove runs with the plot buttons "
                             "of the runs table or by clicking a median curve above."))
    return "".join(parts)


def _runs_table(sd: SweepData, aggregate: bool) -> str:
    """The runs table; aggregated, each row also has an anchor and a *plot* button."""
    keys = [k for k, _ in sd.axes]
    head = "".join(f"<th>{escape(h)}</th>" for h in
                   [*([""] if aggregate else []), "run", *keys, "seed", "state",
                    "final test acc", "memorised", "generalised", "delay", "Liu label"])
    body = []
    for r in sd.runs:
        cells_ = [r.run_id, *[format_value(r.point.get(k)) for k in keys], r.seed,
                  r.state if not r.error else f"{r.state}: {r.error}",
                  format_number(r.final_test_acc), r.memorised, r.generalised, r.delay, r.label]
        row = "".join(f"<td>{escape('—' if v is None else v)}</td>" for v in cells_)
        if aggregate:  # an anchor per run, and its curves on demand
            rid = escape(r.run_id)
            button = (f'<button type="button" class="plot-run" data-run="{rid}" '
                      f'aria-pressed="false" title="draw this run in the individual runs '
                      f'figure">plot</button>' if r.epochs else "")
            body.append(f'<tr id="{safe_id("run-" + r.run_id)}" data-run="{rid}"><td>'
                        f'{button}</td>{row}</tr>')
        else:
            body.append(f"<tr>{row}</tr>")
    tools = ""
    if aggregate:
        tools = ('<input id="runs-filter" type="search" placeholder="filter runs (id, value, '
                 'label…)" aria-label="filter runs"> <button type="button" id="runs-clear">'
                 'clear the individual runs figure</button>')
    return (f'</section><section id="runs"><h2>Runs</h2>{tools}<table class="runs"><tr>'
            f'{head}</tr>{"".join(body)}</table></section>')


def render_sweep_report(sweep_dir: SweepData | str | Path, axes: Sequence[str] | None = None, *,
                        aggregate_above: int | None = AGGREGATE_ABOVE,
                        max_points: int = MAX_POINTS) -> str:
    """The sweep's report as an HTML string. With more than ``aggregate_above`` runs with curves
    (``None``: never) each grid point's curves are aggregated, thinned to about ``max_points``
    points, and every run is drawn on demand (see :mod:`mechgrok.report.sweep`)."""
    sd = sweep_dir if isinstance(sweep_dir, SweepData) else SweepData(sweep_dir)
    ax = sd.pick_axes(axes)
    others = [k for k, _ in sd.axes if k not in ax]
    parts = [_summary(sd, ax, others), _phase_diagrams(sd, ax),
             '</section><section id="curves"><h2>Curves</h2>']
    if aggregate_above is not None and len(sd.with_curves()) > aggregate_above:
        payload = runs_payload(sd, max_points)
        parts += [_aggregated_section(sd, ax, others, payload, aggregate_above, max_points),
                  _runs_table(sd, aggregate=True),
                  f'<style>{_RUNS_CSS}</style><script type="application/json" '
                  f'id="sweep-runs-data">{script_json(json.dumps(payload))}</script>'
                  f'<script>{_RUNS_JS % json.dumps(list(PALETTE))}</script>']
    else:
        parts += [_every_run_curves(sd), _runs_table(sd, aggregate=False)]
    nav = ('<nav><a href="#summary">Summary</a> <a href="#phase">Phase diagrams</a> '
           '<a href="#curves">Curves</a> <a href="#runs">Runs</a></nav>')
    return render_page(f"mechgrok sweep: {sd.name}",
                       f"{len(sd.runs)} runs · {sd.path} · {time.strftime('%Y-%m-%d %H:%M')}",
                       nav + "".join(parts))


def write_sweep_report(sweep_dir: str | Path, out: str | Path | None = None,
                       reports_dir: str | Path = "reports",
                       axes: Sequence[str] | None = None, *,
                       aggregate_above: int | None = AGGREGATE_ABOVE,
                       max_points: int = MAX_POINTS) -> Path:
    """Write the sweep's report (``reports/sweep-<name>.html`` by default); returns its path.
    ``aggregate_above`` and ``max_points``: see :func:`render_sweep_report`."""
    sd = SweepData(sweep_dir)
    html_text = render_sweep_report(sd, axes, aggregate_above=aggregate_above,
                                    max_points=max_points)
    path = Path(out) if out is not None else Path(reports_dir) / f"sweep-{sd.name}.html"
    write_page(path, html_text)
    return path
