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
gets its phase diagrams too. A grid of one axis gets the same three measures as a line with
error bars; a sweep of seeds only gets the table and the curves.

``sweep.json`` and the runs' metrics are not trusted: :func:`mechgrok.sweep.load_sweep` and
:func:`mechgrok.store.read_metrics` check what the report uses (the sweep's name, its axes, each run's id, point, seed and state) and a damaged or
ill-shaped file is a :class:`~mechgrok.errors.RunDirError` naming it; every text from them is
escaped where it is written (HTML, and plotly's labels).
"""

from __future__ import annotations

import itertools
import json
import math
import time
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import plotly.graph_objects as go

from mechgrok.errors import MechgrokError, RunDirError
from mechgrok.report import html as H
from mechgrok.report.figures import NoData, _fig, text

LABELS = ("comprehension", "grokking", "memorisation", "confusion")
LABEL_COLOURS = ("#2ca02c", "#1f77b4", "#ff7f0e", "#d62728")
PALETTE = ("#1f77b4", "#ff7f0e", "#2ca02c", "#d62728", "#9467bd", "#8c564b", "#e377c2",
           "#7f7f7f", "#bcbd22", "#17becf")


@dataclass
class SweepRun:
    """What the sweep report needs of one run (read from its metrics)."""

    run_id: str
    point: dict[str, Any]
    seed: int
    state: str  # done | failed | pending | missing
    epochs: list[int] = field(default_factory=list)
    test_acc: list[float] = field(default_factory=list)
    train_acc: list[float] = field(default_factory=list)
    final_test_acc: float | None = None
    memorised: int | None = None
    generalised: int | None = None
    label: str | None = None
    error: str | None = None

    @property
    def delay(self) -> int | None:
        if self.generalised is None or self.memorised is None:
            return None
        return self.generalised - self.memorised


def _fmt(v: Any) -> str:
    if isinstance(v, float):
        return f"{v:g}"
    if isinstance(v, (list, dict)):
        return json.dumps(v)
    return str(v)


class SweepData:
    """A sweep directory as the report sees it: its axes and every run's curves and labels."""

    def __init__(self, sweep_dir: str | Path):
        from mechgrok.probes.phases import grokking_epochs, liu_label
        from mechgrok.store import METRICS_FILE, read_metrics
        from mechgrok.sweep import load_sweep

        data = load_sweep(sweep_dir)  # checked field by field: one line naming what is wrong
        self.path = Path(sweep_dir)
        self.name: str = data["name"]
        self.axes: list[tuple[str, list[Any]]] = [(a["key"], a["values"])
                                                  for a in data.get("axes") or []]
        self.seeds = data.get("seeds")
        self.runs: list[SweepRun] = []
        for r in data.get("runs") or []:
            error = r.get("error")
            run = SweepRun(r["run_id"], r.get("point", {}), r.get("seed", 0),
                           r.get("state", "pending"), error=None if error is None else str(error))
            path = Path(r["path"]) / METRICS_FILE
            metrics = read_metrics(path)
            if not metrics:
                if run.state == "done":
                    run.state = "missing"
                self.runs.append(run)
                continue
            run.epochs = [m["epoch"] for m in metrics]
            run.test_acc = [m["test_acc"] for m in metrics]
            run.train_acc = [m["train_acc"] for m in metrics]
            run.final_test_acc = metrics[-1]["test_acc"]
            try:
                g = grokking_epochs(metrics)
                run.label = liu_label(run.epochs, run.train_acc, run.test_acc)[0]
            except ValueError as e:  # accuracies outside [0, 1], NaN, …
                raise RunDirError(f"{path}: {e}") from None
            run.memorised, run.generalised = g["train_99"], g["test_99"]
            self.runs.append(run)

    def with_curves(self) -> list[SweepRun]:
        return [r for r in self.runs if r.epochs]

    def pick_axes(self, axes: Sequence[str] | None) -> list[str]:
        keys = [k for k, _ in self.axes]
        if axes is None:
            return keys[:2]
        for a in axes:
            if a not in keys:
                raise MechgrokError(f"sweep {self.name} has no axis {a!r}; its axes: "
                                    f"{', '.join(keys) or 'none (seeds only)'}")
        if len(set(axes)) != len(axes) or len(axes) > 2:
            raise MechgrokError(f"give one or two distinct axes to draw, got {list(axes)}")
        return list(axes)

    def values(self, key: str) -> list[Any]:
        return next(v for k, v in self.axes if k == key)


@dataclass
class Cell:
    runs: list[SweepRun]

    @property
    def n(self) -> int:
        return len(self.runs)

    def _stats(self, xs: list[float]) -> tuple[float, float]:
        if not xs:
            return math.nan, math.nan
        a = np.asarray(xs, dtype=float)
        return float(a.mean()), float(a.std(ddof=1)) if a.size > 1 else 0.0

    def delay(self) -> tuple[float, float, int]:
        ds = [r.delay for r in self.runs if r.delay is not None]
        m, s = self._stats([float(d) for d in ds])
        return m, s, len(ds)

    def test_acc(self) -> tuple[float, float]:
        return self._stats([r.final_test_acc for r in self.runs if r.final_test_acc is not None])

    def labels(self) -> Counter:
        return Counter(r.label for r in self.runs if r.label is not None)


def cells(sd: SweepData, axes: Sequence[str]) -> dict[tuple[str, ...], Cell]:
    """Runs grouped by their values on ``axes`` (keys: the formatted values, in grid order)."""
    out: dict[tuple[str, ...], Cell] = {}
    grids = [[_fmt(v) for v in sd.values(a)] for a in axes]
    for key in itertools.product(*grids):
        out[key] = Cell([])
    for r in sd.with_curves():
        key = tuple(_fmt(r.point.get(a)) for a in axes)
        if key in out:
            out[key].runs.append(r)
    return out


def _spread(m: float, s: float, fmt: str) -> str:
    if not math.isfinite(m):
        return ""
    return f"{m:{fmt}} ± {s:{fmt}}" if s > 0 else f"{m:{fmt}}"


MEASURES = {"delay": "Grokking delay (epochs)", "test_acc": "Final test accuracy",
            "label": "Liu et al.'s label"}


def phase_diagram(sd: SweepData | str | Path, measure: str = "delay",
                  axes: Sequence[str] | None = None) -> go.Figure:
    """A heatmap of ``measure`` (delay | test_acc | label) over two swept axes (one axis: a line
    with error bars), aggregated over seeds and any other swept axis."""
    sd = sd if isinstance(sd, SweepData) else SweepData(sd)
    if measure not in MEASURES:
        raise MechgrokError(f"unknown measure {measure!r}; choose from {', '.join(MEASURES)}")
    ax = sd.pick_axes(axes)
    if not ax:
        raise NoData(f"sweep {sd.name} sweeps seeds only: there is no axis to draw a phase "
                     f"diagram over")
    if not sd.with_curves():
        raise NoData(f"no run of sweep {sd.name} has metrics yet")
    cs = cells(sd, ax)
    title = MEASURES[measure]
    if len(ax) == 1:
        return _line(sd, cs, ax[0], measure, title)
    xs = [_fmt(v) for v in sd.values(ax[0])]
    ys = [_fmt(v) for v in sd.values(ax[1])]
    z: list[list[float | None]] = []
    cell_text: list[list[str]] = []
    for y in ys:
        zr, tr = [], []
        for x in xs:
            c = cs[(x, y)]
            if c.n == 0:
                zr.append(None)
                tr.append("no run")
                continue
            if measure == "delay":
                m, s, k = c.delay()
                zr.append(m if math.isfinite(m) else None)
                tr.append(f"{_spread(m, s, '.0f')}<br>{k}/{c.n} grokked" if k
                          else f"0/{c.n} grokked")
            elif measure == "test_acc":
                m, s = c.test_acc()
                zr.append(m if math.isfinite(m) else None)
                tr.append(_spread(m, s, ".3f"))
            else:
                counts = c.labels()
                top = counts.most_common(1)[0][0] if counts else None
                zr.append(LABELS.index(top) if top in LABELS else None)
                tr.append("<br>".join(f"{lab} {k}/{c.n}" for lab, k in counts.most_common()))
        z.append(zr)
        cell_text.append(tr)
    fig = _fig(title, xaxis=ax[0], yaxis=ax[1], height=420)
    kw: dict[str, Any] = {}
    if measure == "label":
        n = len(LABELS)
        scale = []
        for i, col in enumerate(LABEL_COLOURS):
            scale += [[i / n, col], [(i + 1) / n, col]]
        kw = dict(colorscale=scale, zmin=-0.5, zmax=n - 0.5,
                  colorbar=dict(tickvals=list(range(n)), ticktext=list(LABELS), title="label"))
    elif measure == "test_acc":
        kw = dict(colorscale="Viridis", zmin=0.0, zmax=1.0, colorbar=dict(title="test acc"))
    else:
        kw = dict(colorscale="Magma", reversescale=True, colorbar=dict(title="epochs"))
    fig.add_heatmap(x=[text(x) for x in xs], y=[text(y) for y in ys], z=z, text=cell_text,
                    texttemplate="%{text}", hoverongaps=False,
                    hovertemplate=f"{text(ax[0])}=%{{x}}<br>{text(ax[1])}=%{{y}}<br>%{{text}}"
                                  f"<extra></extra>",
                    xgap=2, ygap=2, **kw)
    fig.update_xaxes(type="category")
    fig.update_yaxes(type="category")
    return fig


def _line(sd: SweepData, cs: dict[tuple[str, ...], Cell], axis: str, measure: str,
          title: str) -> go.Figure:
    xs = [_fmt(v) for v in sd.values(axis)]
    fig = _fig(title, xaxis=axis, yaxis=title)
    if measure == "label":
        for lab, col in zip(LABELS, LABEL_COLOURS):
            counts = [cs[(x,)].labels().get(lab, 0) for x in xs]
            if any(counts):
                fig.add_bar(x=[text(x) for x in xs], y=counts, name=lab, marker_color=col)
        fig.update_layout(barmode="stack")
        fig.update_yaxes(title_text="runs")
    else:
        ms, ss, notes = [], [], []
        for x in xs:
            c = cs[(x,)]
            if measure == "delay":
                m, s, k = c.delay()
                notes.append(f"{k}/{c.n} grokked")
            else:
                m, s = c.test_acc()
                notes.append(f"{c.n} runs")
            ms.append(m if math.isfinite(m) else None)
            ss.append(s if math.isfinite(s) else 0.0)
        fig.add_scatter(x=[text(x) for x in xs], y=ms,
                        error_y=dict(type="data", array=ss, visible=True),
                        mode="lines+markers", text=notes, name=title,
                        hovertemplate="%{x}: %{y:.4g}<br>%{text}<extra></extra>")
    fig.update_xaxes(type="category")
    return fig


def sweep_curves(sd: SweepData | str | Path, metric: str = "test_acc") -> go.Figure:
    """Every run's train or test accuracy, overlaid; one colour per grid point (seeds share it)."""
    sd = sd if isinstance(sd, SweepData) else SweepData(sd)
    runs = sd.with_curves()
    if not runs:
        raise NoData(f"no run of sweep {sd.name} has metrics yet")
    name = "Test accuracy" if metric == "test_acc" else "Train accuracy"
    fig = _fig(f"{name} of every run", yaxis=metric, height=440)
    colours: dict[str, str] = {}
    for r in runs:
        key = text(", ".join(f"{str(k).split('.', 1)[-1]}={_fmt(v)}"
                             for k, v in r.point.items()) or "all")
        first = key not in colours
        col = colours.setdefault(key, PALETTE[len(colours) % len(PALETTE)])
        fig.add_scatter(x=r.epochs, y=getattr(r, metric), mode="lines", name=key,
                        legendgroup=key, showlegend=first, line=dict(color=col, width=1.3),
                        hovertemplate=f"{text(r.run_id)} (seed {r.seed})<br>epoch %{{x}}: "
                                      f"%{{y:.3f}}<extra></extra>")
    fig.update_layout(legend=dict(orientation="v", x=1.02, xanchor="left", y=1, yanchor="top"),
                      margin=dict(r=200))
    return fig


def render_sweep_report(sweep_dir: str | Path, axes: Sequence[str] | None = None) -> str:
    sd = SweepData(sweep_dir)
    ax = sd.pick_axes(axes)
    keys = [k for k, _ in sd.axes]
    states = Counter(r.state for r in sd.runs)
    grid = " × ".join(f"{k} ({len(v)})" for k, v in sd.axes) or "seeds only"
    n_seeds = len(sd.seeds) if sd.seeds else 1
    rows = [("grid", f"{H._e(grid)} × {n_seeds} seed{'s' if n_seeds > 1 else ''}"),
            ("runs", H._e(", ".join(f"{k} {v}" for k, v in states.most_common()))),
            ("drawn over", H._e(" × ".join(ax) or "—")),
            ("sweep directory", f"<code>{H._e(sd.path)}</code>")]
    others = [k for k in keys if k not in ax]
    parts = [f'<section id="summary"><h2>Summary</h2><div class="card">{H._card(rows)}</div>']
    if others:
        parts.append(f'<div class="banner">Each cell aggregates the seeds and every value of '
                     f'{H._e(", ".join(others))}; <code>mechgrok report {H._e(sd.path)} --axes '
                     f'A,B</code> draws other axes.</div>')
    parts.append('</section><section id="phase"><h2>Phase diagrams</h2>')
    captions = {
        "delay": "Epochs from memorisation to generalisation (99 % accuracy, held to the end), "
                 "mean ± standard deviation over the runs of each cell that generalised; blank "
                 "where none did.",
        "test_acc": "Test accuracy at the end of training, mean ± standard deviation over the "
                    "cell's runs.",
        "label": "Liu et al.'s label of each cell's runs (comprehension: test reaches 90 % "
                 "within twice the epochs train took; grokking: later; memorisation: never; "
                 "confusion: train never does); the colour is the most common one.",
    }
    for measure in MEASURES:
        try:
            fig = phase_diagram(sd, measure, ax)
        except NoData as e:
            parts.append(f'<div class="missing">{H._e(e)}</div>')
            break
        parts.append(H.figure_html(fig, f"fig-phase-{measure}", captions[measure]))
    parts.append('</section><section id="curves"><h2>Curves</h2>')
    for metric, caption in (("test_acc", "Test accuracy of every run; one colour per grid point, "
                                         "its seeds drawn in the same colour."),
                            ("train_acc", "Train accuracy of every run: how fast each point "
                                          "memorises.")):
        try:
            parts.append(H.figure_html(sweep_curves(sd, metric), f"fig-curves-{metric}",
                                       caption))
        except NoData as e:
            parts.append(f'<div class="missing">{H._e(e)}</div>')
            break
    head = "".join(f"<th>{H._e(h)}</th>" for h in
                   ["run", *keys, "seed", "state", "final test acc", "memorised", "generalised",
                    "delay", "Liu label"])
    body = []
    for r in sd.runs:
        cells_ = [r.run_id, *[_fmt(r.point.get(k)) for k in keys], r.seed,
                  r.state if not r.error else f"{r.state}: {r.error}",
                  H._num(r.final_test_acc), r.memorised, r.generalised, r.delay, r.label]
        body.append("<tr>" + "".join(f"<td>{H._e('—' if v is None else v)}</td>"
                                     for v in cells_) + "</tr>")
    parts.append(f'</section><section id="runs"><h2>Runs</h2><table class="runs"><tr>{head}</tr>'
                 f'{"".join(body)}</table></section>')
    nav = ('<nav><a href="#summary">Summary</a> <a href="#phase">Phase diagrams</a> '
           '<a href="#curves">Curves</a> <a href="#runs">Runs</a></nav>')
    return H._page(f"mechgrok sweep: {sd.name}",
                   f"{len(sd.runs)} runs · {sd.path} · {time.strftime('%Y-%m-%d %H:%M')}",
                   nav + "".join(parts))


def write_sweep_report(sweep_dir: str | Path, out: str | Path | None = None,
                       reports_dir: str | Path = "reports",
                       axes: Sequence[str] | None = None) -> Path:
    """Write the sweep's report (``reports/sweep-<name>.html`` by default); returns its path."""
    from mechgrok.sweep import load_sweep

    html_text = render_sweep_report(sweep_dir, axes)
    path = Path(out) if out is not None else (
        Path(reports_dir) / f"sweep-{load_sweep(sweep_dir)['name']}.html")
    H._write(path, html_text)
    return path
