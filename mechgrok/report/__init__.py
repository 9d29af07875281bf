"""Reports: self-contained interactive HTML per run and across runs, and the figures behind them.

``write_report(run)`` writes ``reports/<run-id>.html``; ``write_comparison(runs)`` overlays
several runs; :mod:`mechgrok.report.figures` has every figure as a function returning a plotly
``Figure`` for notebooks.
"""

from mechgrok.report.data import RunData
from mechgrok.report.html import render_comparison, render_report, write_comparison, write_report

__all__ = ["RunData", "render_comparison", "render_report", "write_comparison", "write_report"]
