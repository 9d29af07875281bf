"""The sweep report: phase diagrams over two swept axes, averaged over seeds, and every curve.

``write_sweep_report(sweep_dir)`` writes ``reports/sweep-<name>.html``. For the two axes shown
(the first two of the grid unless ``axes`` says otherwise), each cell of a phase diagram
aggregates the runs at that point (its seeds, and every value of any other swept axis):

* **grokking delay**: epochs from memorisation (train accuracy ≥ 99 %, held to the end) to
  generalisation (test accuracy ≥ 99 %, held), mean ± standard deviation over the runs that
  generalised; the cell says how many did (``2/3 grokked``); a cell where none did is blank.
* **final test accuracy**: mean ± standard deviation over all the cell's runs.
* **Liu et al.'s label** (confusion, memorisation, comprehension, grokking; MEASURES.md §7,
  :func:`mechgrok.probes.phases.liu_label`): the most common label, with the counts of each.

Everything comes from each run's training metrics, so a sweep trained with ``--no-analyze``
gets its phase diagrams too.

**Curves at scale.** Up to :data:`AGGREGATE_ABOVE` runs with curves, the report overlays every
run's test and train accuracy (one colour per grid point). Above it, one line per run is
unreadable (and past 10 grid points the colours repeat) and the file grows with runs × epochs,
so each grid point is drawn instead as the **median over its seeds with a shaded band from the
lowest to the highest seed** (:func:`aggregated_curves`), one panel per value of the second
drawn axis and one colour per value of the first. Each curve is thinned to about
:data:`MAX_POINTS` of the epochs its seeds were evaluated at (:func:`thin_indices`: the first
and last, each seed's memorisation and generalisation epochs, and in every bucket of epochs the
lowest and highest median and the band's extremes), so a spike or a crossing is never thinned
away. Every run stays reachable: the runs table lists each one with its numbers and a *plot*
button, and its own thinned curves travel in the page as compact JSON; clicking a run's button,
or a grid point's median curve, draws those runs in the *individual runs* figure.

A grid of one axis gets the same three measures as a line with error bars; a sweep of seeds
only gets the table and the curves.

``sweep.json`` and the runs' metrics are not trusted: :func:`mechgrok.store.sweep.load_sweep` and
:func:`mechgrok.store.read_metrics` check what the report uses (the sweep's name, its axes, each
run's id, point, seed and state) and a damaged or ill-shaped file is a
:class:`~mechgrok.errors.RunDirError` naming it; every text from them is escaped where it is
written (HTML, and plotly's labels).

Where it lives: :mod:`.data` (reading the sweep, cells and grid points), :mod:`.thinning`
(medians, bands and thinned curves), :mod:`.figures` (the figures), :mod:`.html` (the page).
"""

from mechgrok.report.sweep.data import Cell, SweepData, SweepRun, cells, grid_groups
from mechgrok.report.sweep.figures import (
    LABELS,
    MEASURES,
    PALETTE,
    aggregated_curves,
    phase_diagram,
    selected_runs_figure,
    sweep_curves,
)
from mechgrok.report.sweep.html import AGGREGATE_ABOVE, render_sweep_report, write_sweep_report
from mechgrok.report.sweep.thinning import (
    MAX_POINTS,
    GroupCurve,
    group_curve,
    runs_payload,
    thin_indices,
)

__all__ = [
    "AGGREGATE_ABOVE",
    "LABELS",
    "MAX_POINTS",
    "MEASURES",
    "PALETTE",
    "Cell",
    "GroupCurve",
    "SweepData",
    "SweepRun",
    "aggregated_curves",
    "cells",
    "grid_groups",
    "group_curve",
    "phase_diagram",
    "render_sweep_report",
    "runs_payload",
    "selected_runs_figure",
    "sweep_curves",
    "thin_indices",
    "write_sweep_report",
]
