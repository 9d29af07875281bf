"""Self-contained HTML reports: one run (:func:`write_report`) or several (:func:`write_comparison`).

The page itself (its style, plotly.js inlined once, escaping, each figure's ``<div>``) is
:mod:`mechgrok.report.page`; the figures are :mod:`mechgrok.report.figures`, in the order of their
registry. A figure whose data does not exist is replaced by one line saying why and what
computes it, so a run that was trained but not analysed still gets a report of its training
curves.
"""

from __future__ import annotations

import hashlib
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from mechgrok.errors import MechgrokError
from mechgrok.report import figures
from mechgrok.report.data import RunData
from mechgrok.report.model_kinds import describe_model
from mechgrok.report.page import (
    card,
    escape,
    figure_html,
    format_number,
    missing_html,
    render_page,
    write_page,
)

__all__ = ["COMPARE_COLUMNS", "comparison_rows", "default_report_path", "grokking",
           "render_comparison", "render_report", "setting_rows", "stability_setting",
           "summary_rows", "write_comparison", "write_report"]


def _n(v: Any, fmt: str = ".3f") -> str:
    """:func:`format_number`, HTML-escaped."""
    return escape(format_number(v, fmt))


def _freqs(v: Any) -> str:
    """A key-frequency list (read from a file), HTML-escaped."""
    return escape("[" + ", ".join(str(k) for k in v) + "]" if isinstance(v, list) else v)


# --- one run -------------------------------------------------------------------------------


def grokking(d: RunData) -> dict[str, Any]:
    """Grokking epoch and delay: from the analysis summary, else from the training metrics."""
    ph = d.summary.get("phases") or {}
    if ph.get("grokking_epoch") is not None or ph.get("train_99") is not None:
        return {"train_99": ph.get("train_99"), "grokking_epoch": ph.get("grokking_epoch"),
                "delay": ph.get("grokking_delay")}
    from mechgrok.probes.phases import grokking_epochs

    g = grokking_epochs(d.metrics)
    tr, te = g["train_99"], g["test_99"]
    return {"train_99": tr, "grokking_epoch": te,
            "delay": te - tr if te is not None and tr is not None else None}


def stability_setting(tr: Any) -> str:
    """The training config's departures from plain cross-entropy training ("" when none)."""
    parts = []
    if getattr(tr, "loss", "cross_entropy") != "cross_entropy":
        parts.append(f"loss {tr.loss}")
    if getattr(tr, "orthograd", False):
        parts.append("⊥Grad")
    if getattr(tr, "grokfast", None):
        parts.append(f"Grokfast {tr.grokfast}")
    return ", ".join(parts)


def setting_rows(d: RunData) -> list[tuple[str, str]]:
    """The summary card's settings: task, model, optimiser, training (or where an imported run
    came from), status; values HTML-escaped."""
    t, tr = d.config.task, d.config.train
    train_share = f"{100 * t.frac_train:.0f} % train"
    task = (f"{t.name} mod {t.p}, {train_share} (split seed {t.data_seed})" if t.p
            else f"{t.title}, {train_share}")
    setting = [
        ("task", escape(task)),
        ("model", escape(describe_model(d.config.model))),
        ("optimiser", escape(f"{tr.optimizer}, lr {tr.lr:g}, weight decay {tr.weight_decay:g}, "
                             f"betas {list(tr.betas)}, warm-up {tr.warmup_steps}")),
        ("training", escape(f"{tr.epochs} epochs, "
                            f"{'full batch' if tr.batch_size is None else f'batch {tr.batch_size}'}"
                            f", loss in {tr.loss_dtype}, model in {tr.model_dtype}, seed "
                            f"{tr.seed}")),
    ]
    imported = d.run.imported()
    if imported is not None:  # the [train] section holds defaults, not the source's settings
        files = imported.get("source_files") or [{}]
        setting[2:] = [
            ("imported from", escape(f"{imported.get('source', '?')} ("
                                     f"{imported.get('format', '?')}, {len(files)} "
                                     f"file{'s' if len(files) != 1 else ''}); its training "
                                     f"settings are not recorded")),
            ("split", escape(str(imported.get("split_from", "?")))),
        ]
    extra = None if imported is not None else stability_setting(tr)
    if extra:
        setting.append(("stability", escape(extra)))
    setting.append(("status", escape(f"{d.run.status}, {len(d.checkpoints)} checkpoints")))
    return setting


def _training_findings(d: RunData) -> list[tuple[str, str]]:
    found: list[tuple[str, str]] = []
    fin = d.metrics[-1] if d.metrics else None
    if fin:
        found.append((f"final (epoch {fin['epoch']})",
                      f"train acc {_n(fin['train_acc'])}, loss {_n(fin['train_loss'], '.3g')}"
                      f"; test acc {_n(fin['test_acc'])}, loss {_n(fin['test_loss'], '.3g')}"))
    g = grokking(d)
    if g["grokking_epoch"] is not None:
        found.append(("grokking", f"test acc ≥ 99 % from epoch {_n(g['grokking_epoch'])}; "
                                  f"memorised at {_n(g['train_99'])}: <b>delay "
                                  f"{_n(g['delay'])} epochs</b>"))
    elif g["train_99"] is not None:
        found.append(("grokking", f"memorised at epoch {_n(g['train_99'])}; not generalised yet "
                                  f"(test acc < 99 %)"))
    return found


def _summary_findings(s: dict[str, Any]) -> list[tuple[str, str]]:
    found: list[tuple[str, str]] = []
    if s.get("liu_label"):
        found.append(("Liu et al. label", escape(s["liu_label"])))
    ph = s.get("phases") or {}
    if ph:
        found.append(("phases", f"memorisation → {_n(ph.get('memorisation_end'))}, circuit "
                                f"formation → {_n(ph.get('circuit_formation_end'))}, cleanup → "
                                f"{_n(ph.get('cleanup_end'))}"))
    kf = s.get("key_frequencies") or {}
    if "not_applicable" in kf:
        found.append(("key frequencies", "n/a: " + escape(kf["not_applicable"])))
    elif "error" in kf:
        found.append(("key frequencies", "error: " + escape(kf["error"])))
    elif "components" in kf:
        comps = kf.get("components")
        found.append(("key 2-D components", f"{len(comps) if isinstance(comps, list) else '?'} "
                                             f"frequency pairs "
                                             f"carry 90 % of the logits' power at epoch "
                                             f"{_n(kf.get('epoch'))} (no circuit is claimed)"))
    elif "irreps" in kf:
        found.append(("key irreps", f"<b>{_freqs(kf.get('irreps'))}</b> (logit similarity > "
                                     f"0.005 at epoch {_n(kf.get('epoch'))})"))
    elif kf:
        found.append(("key frequencies", f"<b>{_freqs(kf.get('neurons'))}</b> (neuron clusters); "
                                          f"embedding {_freqs(kf.get('embedding'))}; logit map "
                                          f"{_freqs(kf.get('logit_map'))}"))
    cp = s.get("clock_pizza") or {}
    if cp.get("verdict") is not None:
        found.append(("clock or pizza", f"<b>{escape(cp['verdict'])}</b> (GS "
                                         f"{_n(cp.get('gradient_symmetricity'))}, DI "
                                         f"{_n(cp.get('distance_irrelevance'))}, circularity "
                                         f"{_n(cp.get('circularity'))})"))
    elif cp.get("not_applicable"):
        found.append(("clock or pizza", "n/a: " + escape(cp["not_applicable"])))
    col = s.get("collapse") or {}
    if col.get("status"):
        found.append(("softmax collapse", escape(col["status"])))
    found += [(name, escape(line)) for name, line in _headlines(s).items()]
    return found


def _probe_findings(d: RunData) -> list[tuple[str, str]]:
    found: list[tuple[str, str]] = []
    for probe, counts in sorted(d.status_counts().items()):
        parts = ", ".join(f"{n} {k}" for k, n in sorted(counts.items()))
        found.append((f"probe {probe}", escape(parts)))  # the key is escaped by card()
    for err in (d.summary.get("errors") or [])[:5]:
        text = (f"{err.get('probe')}: {err.get('error')}" if isinstance(err, dict) else err)
        found.append(("error", escape(text)))
    if d.ignored_records:
        found.append(("ignored", escape(f"{d.ignored_records} line(s) of analysis/measures.jsonl "
                                        f"that are not records mechgrok writes (a wrong shape, "
                                        f"or a probe name that is not allowed) were left out")))
    return found


def summary_rows(d: RunData) -> tuple[list[tuple[str, str]], list[tuple[str, str]]]:
    """The summary card: (setting rows, finding rows), values already HTML-escaped."""
    found = _training_findings(d) + _summary_findings(d.summary) + _probe_findings(d)
    return setting_rows(d), found


def _figure_sections(d: RunData) -> dict[str, list[str]]:
    """Section name → its figures' HTML, in the registry's order, then any other probe's."""
    sections: dict[str, list[str]] = {}
    for spec in figures.RUN_FIGURES:
        if not spec.fits(d.config.task.name):
            continue
        try:
            fig = spec.build(d)
        except figures.NoData as e:
            if d.analysed or spec.note_unanalysed:
                sections.setdefault(spec.section, []).append(
                    missing_html(e, f"missing-{spec.id}"))
            continue
        sections.setdefault(spec.section, []).append(
            figure_html(fig, f"fig-{spec.id}", spec.caption))
    for probe in figures.other_probes(d):  # allowed probe names only (RunData leaves others out)
        fig = figures.probe_scalars(d, probe)
        sections.setdefault("Other probes", []).append(figure_html(
            fig, f"fig-probe-{probe}", f"The scalar values of probe {probe!r} at every "
                                       f"checkpoint; shaded bands are the detected phases."))
    return sections


def render_report(run: Any) -> str:
    """The report of one run, as an HTML string."""
    d = figures.run_data(run)
    setting, found = summary_rows(d)
    parts = [f'<section id="summary"><h2>Summary</h2><div class="card">{card(setting)}'
             f'{card(found)}</div></section>']
    if not d.analysed:
        parts.append(f'<div class="banner">This run has no measures yet, so only its training '
                     f'curves and embedding are shown. <code>mechgrok analyze '
                     f'{escape(d.run.path)}</code> computes the progress measures, Fourier '
                     f'pictures and clock/pizza verdict; then run <code>mechgrok report</code> '
                     f'again.</div>')
    sections = _figure_sections(d)
    nav = " ".join(f'<a href="#sec-{i}">{escape(name)}</a>' for i, name in enumerate(sections))
    parts.insert(0, f"<nav><a href=\"#summary\">Summary</a> {nav}</nav>")
    for i, (name, items) in enumerate(sections.items()):
        parts.append(f'<section id="sec-{i}"><h2>{escape(name)}</h2>{"".join(items)}</section>')
    c = d.config
    sub = (f"{c.task.title} · {c.model.kind} · "
           f"{len(d.checkpoints)} checkpoints · {d.run.path} · mechgrok report, "
           f"{time.strftime('%Y-%m-%d %H:%M')}")
    return render_page(f"mechgrok report: {d.id}", sub, "".join(parts))


def default_report_path(run_id: str, reports_dir: str | Path = "reports") -> Path:
    """Where a run's report goes by default: ``reports/<run-id>.html``."""
    return Path(reports_dir) / f"{run_id}.html"


def write_report(run: Any, out: str | Path | None = None, reports_dir: str | Path = "reports"
                 ) -> Path:
    """Write the run's report (``reports/<run-id>.html`` by default); returns its path."""
    d = figures.run_data(run)
    path = Path(out) if out is not None else default_report_path(d.id, reports_dir)
    write_page(path, render_report(d))
    return path


# --- several runs --------------------------------------------------------------------------


#: The measures a comparison overlays: (column, title, log scale).
COMPARE_COLUMNS = [("restricted.restricted_loss", "Restricted loss", True),
                   ("restricted.excluded_loss", "Excluded loss", True),
                   ("gini.embedding", "Gini of the embedding's Fourier norms", False),
                   ("clock_pizza.distance_irrelevance", "Distance irrelevance", False),
                   ("clock_pizza.gradient_symmetricity", "Gradient symmetricity", False),
                   ("collapse.sc_fraction_float32", "Softmax-collapse fraction (float32)",
                    False)]
_COMPARE_CAPTIONS = {
    "test_acc": "Which runs generalise, and when: the step in test accuracy is the grokking "
                "epoch.",
    "train_acc": "Memorisation speed: train accuracy of each run.",
    "test_loss": "Test loss of each run (log scale).",
    "train_loss": "Train loss of each run (log scale).",
    "sum_sq_weights": "Sum of squared weights: weight decay's effect.",
}


def _headlines(s: dict[str, Any]) -> dict[str, str]:
    """Self-describing probes' headlines in a summary: probe name → line."""
    return {str(name): ps["headline"] for name, ps in (s.get("probes") or {}).items()
            if isinstance(ps, dict) and isinstance(ps.get("headline"), str)}


def comparison_rows(runs: Sequence[RunData]) -> list[dict[str, Any]]:
    """One row per run: the settings that differ most often and the headline findings."""
    rows = []
    for d in runs:
        c, s = d.config, d.summary
        fin = d.metrics[-1] if d.metrics else {}
        g = grokking(d)
        kf = s.get("key_frequencies") or {}
        cp = s.get("clock_pizza") or {}
        rows.append({
            "run": d.id,
            "task": c.task.title if c.task.degree else f"{c.task.name} {c.task.p or ''}".strip(),
            "model": c.model.kind, "frac train": c.task.frac_train, "lr": c.train.lr,
            "weight decay": c.train.weight_decay, "seed": c.train.seed,
            "stability": stability_setting(c.train) or "—",
            "epochs": fin.get("epoch"), "final test acc": fin.get("test_acc"),
            "memorised": g["train_99"], "grokked": g["grokking_epoch"], "delay": g["delay"],
            "key freqs": kf.get("neurons", kf.get("irreps")), "clock/pizza": cp.get("verdict"),
            "Liu label": s.get("liu_label"),
            **_headlines(s),
        })
    cols = list(dict.fromkeys(k for r in rows for k in r))  # every probe's column, one order
    return [{k: r.get(k) for k in cols} for r in rows]


def _cell(v: Any) -> str:
    if isinstance(v, list):
        return _freqs(v)
    return escape(format_number(v, ".3g") if isinstance(v, float) else ("—" if v is None else v))


def render_comparison(runs: Sequence[Any], title: str = "mechgrok comparison") -> str:
    """The comparison of several runs, as an HTML string."""
    ds = [figures.run_data(r) for r in runs]
    if not ds:
        raise MechgrokError("compare needs at least one run")
    rows = comparison_rows(ds)
    head = "".join(f"<th>{escape(k)}</th>" for k in rows[0])
    body = "".join("<tr>" + "".join(f"<td>{_cell(v)}</td>" for v in r.values()) + "</tr>"
                   for r in rows)
    parts = [f'<section id="summary"><h2>Runs</h2><table class="runs"><tr>{head}</tr>{body}'
             f'</table></section><section><h2>Training</h2>']
    for metric, (name, _) in figures.COMPARE_METRICS.items():
        parts.append(figure_html(figures.compare_curves(ds, metric), f"fig-cmp-{metric}",
                                 _COMPARE_CAPTIONS.get(metric, f"{name} of each run.")))
    parts.append("</section><section><h2>Measures</h2>")
    missing = []
    for col, name, log in COMPARE_COLUMNS:
        try:
            fig = figures.compare_series(ds, col, name, log)
        except figures.NoData:
            missing.append(name)
            continue
        parts.append(figure_html(fig, f"fig-cmp-{col.replace('.', '-')}",
                                 f"{name} of each run that has it."))
    if missing:
        parts.append(f'<div class="missing">Not measured in any of these runs: '
                     f'{escape(", ".join(missing))} (`mechgrok analyze RUN` computes them).</div>')
    parts.append("</section>")
    return render_page(title, f"{len(ds)} runs · {', '.join(d.id for d in ds)} · "
                              f"{time.strftime('%Y-%m-%d %H:%M')}", "".join(parts))


def write_comparison(runs: Sequence[Any], out: str | Path | None = None,
                     reports_dir: str | Path = "reports") -> Path:
    """Write the comparison of ``runs`` (``reports/compare-<ids>.html`` by default); returns its
    path."""
    ds = [figures.run_data(r) for r in runs]
    if out is None:
        ids = "-vs-".join(d.id for d in ds)
        if len(ids) > 80:
            ids = f"{len(ds)}-runs-" + hashlib.sha256(ids.encode()).hexdigest()[:10]
        out = Path(reports_dir) / f"compare-{ids}.html"
    path = Path(out)
    write_page(path, render_comparison(ds))
    return path
