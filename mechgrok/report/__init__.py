"""Reports: self-contained interactive HTML per run and across runs, and the figures behind them.

``write_report(run)`` writes ``reports/<run-id>.html``; ``write_comparison(runs)`` overlays
several runs; ``write_sweep_report(sweep_dir)`` draws a sweep's phase diagrams;
:mod:`mechgrok.report.figures` has every figure as a function returning a plotly ``Figure`` for
notebooks.

Where things live: :mod:`.data` (a run as the report reads it), :mod:`.figures` (the run and
comparison figures, and their registry), :mod:`.model_kinds` (how each model kind is described),
:mod:`.page` (the HTML page shell, escaping, writing), :mod:`.html` (the run and comparison
reports), :mod:`.sweep` (the sweep report).
"""

from mechgrok.report.data import RunData
from mechgrok.report.html import render_comparison, render_report, write_comparison, write_report
from mechgrok.report.sweep import render_sweep_report, write_sweep_report

__all__ = ["RunData", "render_comparison", "render_report", "render_sweep_report",
           "write_comparison", "write_report", "write_sweep_report"]
