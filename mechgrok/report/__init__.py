"""Reports: self-contained interactive HTML per run and across runs, and the figures behind them.

``write_report(run)`` writes ``reports/<run-id>.html``; ``write_comparison(runs)`` overlays
several runs; ``write_sweep_report(sweep_dir)`` draws a sweep's phase diagrams; :mod:`mechgrok.report.figures` has every figure as a function returning a plotly
``Figure`` for notebooks.
"""

from mechgrok.report.data import RunData
from mechgrok.report.html import render_comparison, render_report, write_comparison, write_report
from mechgrok.report.sweep import render_sweep_report, write_sweep_report

__all__ = ["RunData", "render_comparison", "render_report", "render_sweep_report",
           "write_comparison", "write_report", "write_sweep_report"]
