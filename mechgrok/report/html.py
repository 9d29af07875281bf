"""Self-contained HTML reports: one run (:func:`write_report`) or several (:func:`write_comparison`).

One file, no network: plotly.js is inlined once in ``<head>`` and every figure is a ``<div>`` with
its own ``Plotly.newPlot`` call (SVG trace types only). A figure whose data does not exist is
replaced by one line saying why and what computes it, so a run that was trained but not analysed
still gets a report of its training curves.

Everything that comes from a file or a user (run ids, paths, probe and value names, summary
values, a sweep's axes and run ids) is escaped for where it goes: :func:`_e` for HTML text and
attributes, :func:`safe_id` for element ids (which plotly also writes into JavaScript),
:func:`script_json` for JSON inside ``<script>``, and :func:`mechgrok.report.figures.text` for
plotly's titles, legends and labels (plotly renders a subset of HTML there).
"""

from __future__ import annotations

import hashlib
import html
import json
import math
import os
import re
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from mechgrok.errors import MechgrokError
from mechgrok.report import figures as F
from mechgrok.report.data import RunData
from mechgrok.store import atomic_write_bytes

PLOTLY_CONFIG = {"displaylogo": False, "responsive": True}

CSS = """
body{font-family:-apple-system,BlinkMacSystemFont,"Segoe UI",Roboto,Helvetica,Arial,sans-serif;
  margin:0;color:#222;background:#fafafa}
header{background:#1b2a41;color:#fff;padding:18px 32px}
header h1{margin:0;font-size:22px} header p{margin:4px 0 0;color:#c9d3e0;font-size:13px}
main{max-width:1180px;margin:0 auto;padding:16px 24px 60px}
nav{font-size:13px;margin:8px 0 16px} nav a{margin-right:14px;color:#1b5fa8}
section{margin-top:26px} h2{font-size:18px;border-bottom:1px solid #ddd;padding-bottom:4px}
.card{background:#fff;border:1px solid #e2e2e2;border-radius:8px;padding:16px 20px;
  display:grid;grid-template-columns:repeat(auto-fit,minmax(320px,1fr));gap:4px 28px}
.card table{border-collapse:collapse;font-size:13.5px;width:100%}
.card td{padding:3px 6px;vertical-align:top;border-bottom:1px solid #f0f0f0}
.card td:first-child{color:#666;white-space:nowrap;width:42%}
.fig{background:#fff;border:1px solid #e2e2e2;border-radius:8px;margin:14px 0;padding:8px 10px}
.caption{font-size:13px;color:#555;margin:2px 6px 4px}
.missing{font-size:13px;color:#8a6d3b;background:#fcf8e3;border:1px solid #faebcc;
  border-radius:6px;padding:8px 12px;margin:8px 0}
.banner{font-size:14px;background:#eef5fd;border:1px solid #bcd6f2;border-radius:8px;
  padding:10px 14px;margin:12px 0}
code{background:#f2f2f2;padding:1px 4px;border-radius:3px}
table.runs{border-collapse:collapse;font-size:13px;background:#fff;width:100%}
table.runs th,table.runs td{border:1px solid #e2e2e2;padding:4px 8px;text-align:left}
table.runs th{background:#f3f5f8}
"""


def _e(x: Any) -> str:
    """HTML-escaped text (safe in element content and in quoted attributes); a lone surrogate
    (a file name that is not UTF-8, say) becomes '?'."""
    return html.escape(str(x)).encode("utf-8", "replace").decode("utf-8")


def _num(v: Any, fmt: str = ".3f") -> str:
    """A number as text ("—" for none); anything else as its text. Not escaped: wrap in _e."""
    if v is None or (isinstance(v, float) and not math.isfinite(v)):
        return "—"
    if isinstance(v, bool) or not isinstance(v, (int, float)):
        return str(v)
    return str(v) if isinstance(v, int) else format(v, fmt)


def _n(v: Any, fmt: str = ".3f") -> str:
    """:func:`_num`, HTML-escaped."""
    return _e(_num(v, fmt))


def _freqs(v: Any) -> str:
    """A key-frequency list (read from a file), HTML-escaped."""
    return _e("[" + ", ".join(str(k) for k in v) + "]" if isinstance(v, list) else v)


_SAFE_ID = re.compile(r"[A-Za-z][A-Za-z0-9_-]{0,99}")


def safe_id(name: str) -> str:
    """An element id for ``name``: itself when it is letters, digits, '_' and '-' (starting with
    a letter), else a slug of it plus a hash, so that no name can leave the ``id="…"``
    attribute or the JavaScript string plotly writes it into (and two names stay distinct)."""
    if _SAFE_ID.fullmatch(name):
        return name
    slug = re.sub(r"[^A-Za-z0-9_-]+", "_", name)[:60].strip("_-") or "x"
    digest = hashlib.sha256(name.encode("utf-8", "surrogatepass")).hexdigest()[:10]
    return f"{'' if slug[0].isalpha() else 'x-'}{slug}-{digest}"


_JS_UNSAFE = {"<": "\\u003c", ">": "\\u003e", "&": "\\u0026", "\u2028": "\\u2028",
              "\u2029": "\\u2029"}


def script_json(text: str) -> str:
    """JSON text made safe to embed in ``<script>``: no ``</script>``, ``<!--``, ``&`` or line
    separators survive (each becomes its \\u escape, which JSON and JavaScript read the same)."""
    return re.sub("[<>&\u2028\u2029]", lambda m: _JS_UNSAFE[m.group()], text)


def _page(title: str, subtitle: str, body: str) -> str:
    from plotly.offline import get_plotlyjs

    return ("<!DOCTYPE html>\n<html lang=\"en\"><head><meta charset=\"utf-8\">"
            f"<title>{_e(title)}</title>"
            "<meta name=\"viewport\" content=\"width=device-width, initial-scale=1\">"
            f"<style>{CSS}</style>"
            f"<script type=\"text/javascript\">{get_plotlyjs()}</script></head><body>"
            f"<header><h1>{_e(title)}</h1><p>{_e(subtitle)}</p></header><main>{body}</main>"
            "</body></html>\n")


def figure_html(fig: Any, div_id: str, caption: str) -> str:
    """One figure: its ``<div>`` (id :func:`safe_id` of ``div_id``) and the ``Plotly.newPlot``
    call that draws it, with the figure's JSON escaped for ``<script>`` (:func:`script_json`),
    whatever plotly's version does."""
    from plotly.io.json import to_json_plotly

    did = safe_id(div_id)
    d = fig.to_dict()
    layout = d.get("layout", {})
    args = ", ".join(script_json(x) for x in (
        json.dumps(did), to_json_plotly(d.get("data", [])), to_json_plotly(layout),
        json.dumps(PLOTLY_CONFIG)))
    frames = ""
    if d.get("frames"):
        frames = (f".then(function(){{Plotly.addFrames({json.dumps(did)}, "
                  f"{script_json(to_json_plotly(d['frames']))});}})")
    h = layout.get("height")
    height = f"{int(h)}px" if isinstance(h, (int, float)) and not isinstance(h, bool) else "100%"
    return (f'<div class="fig" id="wrap-{did}"><div style="height:{height}; width:100%;">'
            f'<div id="{did}" class="plotly-graph-div" style="height:100%; width:100%;"></div>'
            f'<script>window.PLOTLYENV=window.PLOTLYENV || {{}};'
            f'if (document.getElementById({json.dumps(did)})) {{Plotly.newPlot({args}){frames};}}'
            f'</script></div><p class="caption">{_e(caption)}</p></div>')


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


def summary_rows(d: RunData) -> tuple[list[tuple[str, str]], list[tuple[str, str]]]:
    """The summary card: (setting rows, finding rows), values already HTML-escaped."""
    c = d.config
    t, m, tr = c.task, c.model, c.train
    if m.kind == "transformer":
        model = (f"transformer, {m.n_layers} layer(s), d_model {m.d_model}, {m.n_heads} heads, "
                 f"d_mlp {m.d_mlp}, {m.act}, attention rate α {m.attn_alpha}")
    else:
        model = (f"MLP, {m.embed} inputs ({m.combine}), hidden {list(m.hidden)}, "
                 f"bias {'on' if m.bias else 'off'}")
    setting = [
        ("task", _e(f"{t.name} mod {t.p}, {100 * t.frac_train:.0f} % train (split seed "
                    f"{t.data_seed})" if t.p else f"{t.name}, {100 * t.frac_train:.0f} % train")),
        ("model", _e(model)),
        ("optimiser", _e(f"{tr.optimizer}, lr {tr.lr:g}, weight decay {tr.weight_decay:g}, "
                         f"betas {list(tr.betas)}, warm-up {tr.warmup_steps}")),
        ("training", _e(f"{tr.epochs} epochs, "
                        f"{'full batch' if tr.batch_size is None else f'batch {tr.batch_size}'}, "
                        f"loss in {tr.loss_dtype}, model in {tr.model_dtype}, seed {tr.seed}")),
    ]
    imported = d.run.imported()
    if imported is not None:  # the [train] section holds defaults, not the source's settings
        files = imported.get("source_files") or [{}]
        setting[2:] = [
            ("imported from", _e(f"{imported.get('source', '?')} ({imported.get('format', '?')}"
                                 f", {len(files)} file{'s' if len(files) != 1 else ''}); its "
                                 f"training settings are not recorded")),
            ("split", _e(str(imported.get("split_from", "?")))),
        ]
    extra = None if imported is not None else _stability_setting(tr)
    if extra:
        setting.append(("stability", _e(extra)))
    setting.append(("status", _e(f"{d.run.status}, {len(d.checkpoints)} checkpoints")))

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
    s = d.summary
    if s.get("liu_label"):
        found.append(("Liu et al. label", _e(s["liu_label"])))
    ph = s.get("phases") or {}
    if ph:
        found.append(("phases", f"memorisation → {_n(ph.get('memorisation_end'))}, circuit "
                                f"formation → {_n(ph.get('circuit_formation_end'))}, cleanup → "
                                f"{_n(ph.get('cleanup_end'))}"))
    kf = s.get("key_frequencies") or {}
    if "not_applicable" in kf:
        found.append(("key frequencies", "n/a: " + _e(kf["not_applicable"])))
    elif "error" in kf:
        found.append(("key frequencies", "error: " + _e(kf["error"])))
    elif kf:
        found.append(("key frequencies", f"<b>{_freqs(kf.get('neurons'))}</b> (neuron clusters); "
                                          f"embedding {_freqs(kf.get('embedding'))}; logit map "
                                          f"{_freqs(kf.get('logit_map'))}"))
    cp = s.get("clock_pizza") or {}
    if cp.get("verdict") is not None:
        found.append(("clock or pizza", f"<b>{_e(cp['verdict'])}</b> (GS "
                                         f"{_n(cp.get('gradient_symmetricity'))}, DI "
                                         f"{_n(cp.get('distance_irrelevance'))}, circularity "
                                         f"{_n(cp.get('circularity'))})"))
    elif cp.get("not_applicable"):
        found.append(("clock or pizza", "n/a: " + _e(cp["not_applicable"])))
    col = s.get("collapse") or {}
    if col.get("status"):
        found.append(("softmax collapse", _e(col["status"])))
    for probe, counts in sorted(d.status_counts().items()):
        parts = ", ".join(f"{n} {k}" for k, n in sorted(counts.items()))
        found.append((f"probe {probe}", _e(parts)))  # the key is escaped by _card
    for err in (s.get("errors") or [])[:5]:
        text = (f"{err.get('probe')}: {err.get('error')}" if isinstance(err, dict) else err)
        found.append(("error", _e(text)))
    if d.ignored_records:
        found.append(("ignored", _e(f"{d.ignored_records} line(s) of analysis/measures.jsonl "
                                    f"that are not records mechgrok writes (a wrong shape, or "
                                    f"a probe name that is not allowed) were left out")))
    return setting, found


def _stability_setting(tr: Any) -> str:
    parts = []
    if getattr(tr, "loss", "cross_entropy") != "cross_entropy":
        parts.append(f"loss {tr.loss}")
    if getattr(tr, "orthograd", False):
        parts.append("⊥Grad")
    if getattr(tr, "grokfast", None):
        parts.append(f"Grokfast {tr.grokfast}")
    return ", ".join(parts)


def _card(rows: list[tuple[str, str]]) -> str:
    return "<table>" + "".join(f"<tr><td>{_e(k)}</td><td>{v}</td></tr>" for k, v in rows) + \
        "</table>"


def render_report(run: Any) -> str:
    """The report of one run, as an HTML string."""
    d = F.run_data(run)
    setting, found = summary_rows(d)
    parts = [f'<section id="summary"><h2>Summary</h2><div class="card">{_card(setting)}'
             f'{_card(found)}</div></section>']
    if not d.analysed:
        parts.append(f'<div class="banner">This run has no measures yet, so only its training '
                     f'curves and embedding are shown. <code>mechgrok analyze '
                     f'{_e(d.run.path)}</code> computes the progress measures, Fourier pictures '
                     f'and clock/pizza verdict; then run <code>mechgrok report</code> '
                     f'again.</div>')
    sections: dict[str, list[str]] = {}
    for spec in F.RUN_FIGURES:
        try:
            fig = spec.build(d)
        except F.NoData as e:
            if d.analysed or spec.id in ("loss", "accuracy", "weights", "pca", "attention"):
                sections.setdefault(spec.section, []).append(
                    f'<div class="missing" id="missing-{spec.id}">{_e(e)}</div>')
            continue
        sections.setdefault(spec.section, []).append(
            figure_html(fig, f"fig-{spec.id}", spec.caption))
    for probe in F.other_probes(d):  # allowed probe names only (RunData leaves others out)
        fig = F.probe_scalars(d, probe)
        sections.setdefault("Other probes", []).append(figure_html(
            fig, f"fig-probe-{probe}", f"The scalar values of probe {probe!r} at every "
                                       f"checkpoint; shaded bands are the detected phases."))
    nav = " ".join(f'<a href="#sec-{i}">{_e(name)}</a>' for i, name in enumerate(sections))
    parts.insert(0, f"<nav><a href=\"#summary\">Summary</a> {nav}</nav>")
    for i, (name, items) in enumerate(sections.items()):
        parts.append(f'<section id="sec-{i}"><h2>{_e(name)}</h2>{"".join(items)}</section>')
    c = d.config
    sub = (f"{c.task.name}{' mod ' + str(c.task.p) if c.task.p else ''} · {c.model.kind} · "
           f"{len(d.checkpoints)} checkpoints · {d.run.path} · mechgrok report, "
           f"{time.strftime('%Y-%m-%d %H:%M')}")
    return _page(f"mechgrok report: {d.id}", sub, "".join(parts))


def default_report_path(run_id: str, reports_dir: str | Path = "reports") -> Path:
    return Path(reports_dir) / f"{run_id}.html"


def write_report(run: Any, out: str | Path | None = None, reports_dir: str | Path = "reports"
                 ) -> Path:
    """Write the run's report (``reports/<run-id>.html`` by default); returns its path."""
    d = F.run_data(run)
    path = Path(out) if out is not None else default_report_path(d.id, reports_dir)
    _write(path, render_report(d))
    return path


def _write(path: Path, text: str) -> None:
    if path.exists() and path.is_dir():
        raise MechgrokError(f"{path} is a directory; give a file name ending in .html")
    path.parent.mkdir(parents=True, exist_ok=True)
    atomic_write_bytes(path, text.encode("utf-8", "replace"))
    umask = os.umask(0)
    os.umask(umask)
    os.chmod(path, 0o666 & ~umask)  # a report is a document to share, not a private temp file


# --- several runs --------------------------------------------------------------------------


COMPARE_COLUMNS = [("restricted.restricted_loss", "Restricted loss", True),
                   ("restricted.excluded_loss", "Excluded loss", True),
                   ("gini.embedding", "Gini of the embedding's Fourier norms", False),
                   ("clock_pizza.distance_irrelevance", "Distance irrelevance", False),
                   ("clock_pizza.gradient_symmetricity", "Gradient symmetricity", False),
                   ("collapse.sc_fraction_float32", "Softmax-collapse fraction (float32)",
                    False)]


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
            "run": d.id, "task": f"{c.task.name} {c.task.p or ''}".strip(),
            "model": c.model.kind, "frac train": c.task.frac_train, "lr": c.train.lr,
            "weight decay": c.train.weight_decay, "seed": c.train.seed,
            "stability": _stability_setting(c.train) or "—",
            "epochs": fin.get("epoch"), "final test acc": fin.get("test_acc"),
            "memorised": g["train_99"], "grokked": g["grokking_epoch"], "delay": g["delay"],
            "key freqs": kf.get("neurons"), "clock/pizza": cp.get("verdict"),
            "Liu label": s.get("liu_label"),
        })
    return rows


def render_comparison(runs: Sequence[Any], title: str = "mechgrok comparison") -> str:
    ds = [F.run_data(r) for r in runs]
    if not ds:
        raise MechgrokError("compare needs at least one run")
    rows = comparison_rows(ds)
    head = "".join(f"<th>{_e(k)}</th>" for k in rows[0])
    body = "".join("<tr>" + "".join(
        f"<td>{_freqs(v) if isinstance(v, list) else _e(_num(v, '.3g') if isinstance(v, float) else ('—' if v is None else v))}</td>"  # noqa: E501
        for v in r.values()) + "</tr>" for r in rows)
    parts = [f'<section id="summary"><h2>Runs</h2><table class="runs"><tr>{head}</tr>{body}'
             f'</table></section><section><h2>Training</h2>']
    for metric, caption in (("test_acc", "Which runs generalise, and when: the step in test "
                                         "accuracy is the grokking epoch."),
                            ("train_acc", "Memorisation speed: train accuracy of each run."),
                            ("test_loss", "Test loss of each run (log scale)."),
                            ("train_loss", "Train loss of each run (log scale)."),
                            ("sum_sq_weights", "Sum of squared weights: weight decay's effect.")):
        parts.append(figure_html(F.compare_curves(ds, metric), f"fig-cmp-{metric}", caption))
    parts.append("</section><section><h2>Measures</h2>")
    missing = []
    for col, name, log in COMPARE_COLUMNS:
        try:
            fig = F.compare_series(ds, col, name, log)
        except F.NoData:
            missing.append(name)
            continue
        parts.append(figure_html(fig, f"fig-cmp-{col.replace('.', '-')}",
                                 f"{name} of each run that has it."))
    if missing:
        parts.append(f'<div class="missing">Not measured in any of these runs: '
                     f'{_e(", ".join(missing))} (`mechgrok analyze RUN` computes them).</div>')
    parts.append("</section>")
    return _page(title, f"{len(ds)} runs · {', '.join(d.id for d in ds)} · "
                        f"{time.strftime('%Y-%m-%d %H:%M')}", "".join(parts))


def write_comparison(runs: Sequence[Any], out: str | Path | None = None,
                     reports_dir: str | Path = "reports") -> Path:
    ds = [F.run_data(r) for r in runs]
    if out is None:
        ids = "-vs-".join(d.id for d in ds)
        if len(ids) > 80:
            import hashlib

            ids = f"{len(ds)}-runs-" + hashlib.sha256(ids.encode()).hexdigest()[:10]
        out = Path(reports_dir) / f"compare-{ids}.html"
    path = Path(out)
    _write(path, render_comparison(ds))
    return path
