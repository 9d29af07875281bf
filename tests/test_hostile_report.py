"""Reports of hostile or damaged run directories (issue 12: never trust a file's contents).

A run directory can come from someone else: whatever its files say, ``mechgrok report`` and
``mechgrok compare`` must not write their text into the page as markup or script (probe names in
``analysis/measures.jsonl``, key frequencies in ``summary.json``, the run's folder name, a
sweep's axes), and a damaged file is one line naming it, not a traceback.

One small run is trained and analysed per module; each test copies it and edits the copy.
"""

from __future__ import annotations

import json
import re
import shutil
from pathlib import Path

import pytest

from mechgrok.analysis import analyze
from mechgrok.errors import RunDirError
from mechgrok.probes import ProbeError, probe, register, registry
from mechgrok.report import RunData, render_report, render_sweep_report, write_comparison
from mechgrok.sweep import SWEEP_KIND, SWEEP_SCHEMA_VERSION
from mechgrok.training import train
from tests.conftest import assert_one_line_error, run_cli, tiny_config

# what a hostile file may hold; none of it may reach the page unescaped
PROBE_ATTR = 'x"><img src=x onerror=alert(1)>'
PROBE_SCRIPT = "</script><script>alert(2)</script>"
VALUE_NAME = "<img src=x onerror=alert(3)>"
FREQ_SCRIPT = "<script>alert(4)</script>"
FREQ_IMG = "<img src=x onerror=alert(5)>"
LABEL = "<b onmouseover=alert(6)>grokking</b>"
RUN_ID = 'run"><svg onload=alert(7)>'
AXIS_VALUE = "<img src=x onerror=alert(8)>"
PAYLOADS = (PROBE_ATTR, PROBE_SCRIPT, VALUE_NAME, FREQ_SCRIPT, FREQ_IMG, LABEL, RUN_ID,
            AXIS_VALUE)
# the tags any of them would open, as they would appear in the page
RAW_MARKUP = re.compile(r"<(img|svg|b onmouseover|script>alert)", re.I)


@pytest.fixture(scope="module")
def analysed(tmp_path_factory) -> Path:
    path = tmp_path_factory.mktemp("hostile") / "base"
    train(tiny_config(), path, progress=False)
    analyze(path, ["loss", "weights", "fourier_embed", "key_freqs", "gini"], progress=False)
    return path


def _copy(analysed: Path, tmp_path: Path, name: str = "run") -> Path:
    dst = tmp_path / name
    shutil.copytree(analysed, dst)
    return dst


def _append(path: Path, *records: object) -> None:
    with path.open("a") as f:
        for r in records:
            f.write(json.dumps(r) + "\n")


def _edit_summary(run: Path, **changes: object) -> None:
    f = run / "analysis" / "summary.json"
    s = json.loads(f.read_text())
    s.update(changes)
    f.write_text(json.dumps(s))


def _record(run: Path, epoch: int, probe: str, values: dict, **kw: object) -> dict:
    """A measures record as a hand-editor would write it: what it depended on copied from the
    `loss` record of the same checkpoint, so that it is not stale."""
    f = run / "analysis" / "measures.jsonl"
    real = next(r for line in f.read_text().splitlines() if (r := json.loads(line))["probe"]
                == "loss" and r["epoch"] == epoch)
    rec = {k: v for k, v in real.items() if k in ("step", "deps", "probe_id")}
    rec.update(epoch=epoch, probe=probe, status="ok", values=values, **kw)
    return rec


def _make_hostile(run: Path) -> None:
    """Hand-edited measures (three probe names/value names) and summary (key frequencies,
    label, verdict) in a run whose folder name is itself markup."""
    _append(run / "analysis" / "measures.jsonl",
            _record(run, 0, PROBE_ATTR, {"v": 1.0}), _record(run, 10, PROBE_SCRIPT, {"v": 2.0}),
            *(_record(run, e, "evil_values", {VALUE_NAME: 0.5 + e / 100, "plain": 0.1})
              for e in (0, 10, 20)))
    s = json.loads((run / "analysis" / "summary.json").read_text())
    kf = s.get("key_frequencies") or {}
    kf.pop("not_applicable", None)
    kf.update(neurons=[FREQ_SCRIPT, 3], embedding=[FREQ_IMG], logit_map=[PROBE_SCRIPT])
    _edit_summary(run, key_frequencies=kf, liu_label=LABEL,
                  clock_pizza={"verdict": PROBE_SCRIPT, "epoch": 60})


def _assert_no_raw_payload(text: str) -> None:
    for p in PAYLOADS:
        assert p not in text, p
    body = text.split("</head>", 1)[1]  # plotly.js itself is in <head>
    assert not RAW_MARKUP.search(body), RAW_MARKUP.search(body)
    # every <script> in the body is one figure's Plotly.newPlot call
    assert body.count("<script") == body.count('class="fig"') > 0
    ids = re.findall(r'\bid="([^"]*)"', body)
    assert all(re.fullmatch(r"[A-Za-z][A-Za-z0-9_-]*", i) for i in ids), ids


@pytest.fixture
def hostile(analysed, tmp_path) -> Path:
    run = _copy(analysed, tmp_path, RUN_ID)
    _make_hostile(run)
    return run


# --- markup and script from files ----------------------------------------------------------


def test_report_escapes_probe_names_summary_and_run_id(hostile, tmp_path) -> None:
    r = run_cli("report", str(hostile), "--out", "r.html", cwd=tmp_path)
    assert r.returncode == 0, r.stderr
    text = (tmp_path / "r.html").read_text()
    _assert_no_raw_payload(text)
    # records with a probe name mechgrok never writes are left out, and the report says so
    assert "alert(1)" not in text
    assert "2 line(s) of analysis/measures.jsonl" in text
    # a probe with an allowed name keeps its figure; its value name is shown as text
    assert 'id="fig-probe-evil_values"' in text
    assert "&amp;lt;img src=x onerror=alert(3)&amp;gt;" not in text  # not escaped twice in HTML
    assert "\\u0026lt;img src=x onerror=alert(3)\\u0026gt;" in text  # plotly text, in <script>
    # the summary's texts are in the card, escaped
    assert "&lt;script&gt;alert(4)&lt;/script&gt;" in text
    assert "&lt;img src=x onerror=alert(5)&gt;" in text
    assert "&lt;b onmouseover=alert(6)&gt;grokking&lt;/b&gt;" in text
    assert "run&quot;&gt;&lt;svg onload=alert(7)&gt;" in text  # the title


def test_comparison_escapes_run_ids_and_key_frequencies(hostile, analysed, tmp_path) -> None:
    r = run_cli("compare", str(hostile), str(analysed), "--out", "c.html", cwd=tmp_path)
    assert r.returncode == 0, r.stderr
    text = (tmp_path / "c.html").read_text()
    _assert_no_raw_payload(text)
    assert "<td>[&lt;script&gt;alert(4)&lt;/script&gt;, 3]</td>" in text
    # the run id is a legend entry: plotly text, so it shows as itself, not as an <svg> tag
    assert "\\u003csvg" not in text and "\\u0026lt;svg onload=alert(7)\\u0026gt;" in text


def test_sweep_report_escapes_axis_values(analysed, tmp_path) -> None:
    sweep = _sweep(analysed, tmp_path, act=AXIS_VALUE)
    text = render_sweep_report(sweep)
    _assert_no_raw_payload(text)
    assert "&lt;img src=x onerror=alert(8)&gt;" in text  # the runs table
    assert "\\u0026lt;img src=x onerror=alert(8)\\u0026gt;" in text  # a heatmap category


def test_safe_ids_and_script_json() -> None:
    from mechgrok.report.page import safe_id, script_json

    assert safe_id("fig-probe-logit_norm") == "fig-probe-logit_norm"
    odd = [safe_id(f"fig-probe-{p}") for p in (PROBE_ATTR, PROBE_SCRIPT, "a b", "a_b")]
    assert all(re.fullmatch(r"[A-Za-z][A-Za-z0-9_-]*", i) for i in odd)
    assert len(set(odd)) == 4
    s = script_json(json.dumps({"t": "</script><!-- & \u2028\u2029"}))
    assert not re.search("[<>&\u2028\u2029]", s)
    assert json.loads(s) == {"t": "</script><!-- & \u2028\u2029"}


def test_probe_names_are_restricted_at_registration() -> None:
    before = set(registry())

    def fn(ctx):
        return {}

    for bad in ("a<b", PROBE_ATTR, PROBE_SCRIPT, "1st", "a.b", "a b", "x" * 65, "<lambda>"):
        with pytest.raises(ProbeError, match="a probe name is a letter"):
            register(probe(bad)(fn))
    with pytest.raises(ProbeError, match="give the function a name"):
        register(lambda ctx: {})
    assert set(registry()) == before
    # every built-in probe and the test fixtures' probes have allowed names
    from mechgrok.probes import load_probe

    for spec in ("logit_norm", "MaxNeuron", "explodes", "wrong_type", "slow"):
        load_probe(f"tests.fixtures.user_probes:{spec}")


def _sweep(analysed: Path, tmp_path: Path, act: str = "relu", **run: object) -> Path:
    """A sweep directory of one run (a copy of the fixture) as `mechgrok sweep` lays it out."""
    sweep = tmp_path / "sweep"
    shutil.copytree(analysed, sweep / "runs" / "r0")
    entry = {"run_id": "r0", "point": {"train.weight_decay": 1.0, "model.act": act},
             "seed": 0, "state": "done"}
    entry.update(run)
    entry = {k: v for k, v in entry.items() if v is not None}
    (sweep / "sweep.json").write_text(json.dumps({
        "kind": SWEEP_KIND, "schema_version": SWEEP_SCHEMA_VERSION, "name": "s", "spec": {},
        "axes": [{"key": "train.weight_decay", "values": [1.0]},
                 {"key": "model.act", "values": [act]}],
        "seeds": None, "runs": [entry]}))
    return sweep


# --- damaged files: one line naming the file -------------------------------------------------


def _damage(run: Path, how: str) -> str:
    """Damage ``run`` one way; return the file name the error must mention."""
    if how == "metrics line is a list":
        _append(run / "metrics.jsonl", [1, 2, 3])
        return "metrics.jsonl"
    if how == "measures record without status":
        rec = _record(run, 0, "loss", {})
        del rec["status"]
        _append(run / "analysis" / "measures.jsonl", rec)
        return "measures.jsonl"
    if how == "torn summary":
        f = run / "analysis" / "summary.json"
        f.write_text(f.read_text()[: 40])
        return "summary.json"
    raise AssertionError(how)


def _one_line_error_or_ignored(proc, name: str, out: Path) -> None:
    """A damaged record of measures.jsonl is either refused in one line naming the file or, as
    mechgrok.analysis reads the file, skipped like a torn line (it is computed again by the next
    `analyze`); never a traceback."""
    if proc.returncode == 0 and name == "measures.jsonl":
        assert "Traceback" not in proc.stderr and out.is_file()
    else:
        assert_one_line_error(proc, name)


@pytest.mark.parametrize("how", ["metrics line is a list", "measures record without status",
                                 "torn summary"])
def test_damaged_run_files_are_one_line_errors(analysed, tmp_path, how) -> None:
    run = _copy(analysed, tmp_path)
    name = _damage(run, how)
    _one_line_error_or_ignored(run_cli("report", str(run), "--out", "r.html", cwd=tmp_path),
                               name, tmp_path / "r.html")
    _one_line_error_or_ignored(run_cli("compare", str(run), str(run), "--out", "c.html",
                                       cwd=tmp_path), name, tmp_path / "c.html")


def test_sweep_run_without_run_id_is_a_one_line_error(analysed, tmp_path) -> None:
    sweep = _sweep(analysed, tmp_path)
    assert run_cli("report", str(sweep), "--out", "ok.html", cwd=tmp_path).returncode == 0
    data = json.loads((sweep / "sweep.json").read_text())
    del data["runs"][0]["run_id"]
    (sweep / "sweep.json").write_text(json.dumps(data))
    assert_one_line_error(run_cli("report", str(sweep), cwd=tmp_path), "sweep.json", "run_id")


@pytest.mark.parametrize("change, needle", [
    ({"phases": {"grokking_epoch": [1], "train_99": 0}}, "phases.grokking_epoch"),
    ({"phases": {"memorisation_end": "<img src=x onerror=alert(9)>"}}, "phases.memorisation_end"),
    ({"phases": [1, 2]}, "phases is a list"),
    ({"clock_pizza": {"verdict": "clock", "rules": {"pizza_gs": "high"}}}, "rules.pizza_gs"),
    ({"errors": "boom"}, "errors is a string"),
])
def test_summary_of_the_wrong_shape_is_refused(analysed, tmp_path, change, needle) -> None:
    run = _copy(analysed, tmp_path)
    _edit_summary(run, **change)
    with pytest.raises(RunDirError, match=re.escape(needle)) as e:
        RunData(run)
    assert "summary.json" in str(e.value) and "\n" not in str(e.value)


@pytest.mark.parametrize("change", [{"status": ["ok"]}, {"status": "fine"}, {"values": [1]},
                                    {"values": {"a": [1, 2]}}, {"probe": {"a": 1}},
                                    {"epoch": "0"}, {"epoch": -1}])
def test_measures_of_the_wrong_shape_never_reach_the_report(analysed, tmp_path, change) -> None:
    """Refused in one line naming the file, or left out: never drawn, never a traceback."""
    run = _copy(analysed, tmp_path)
    good = RunData(run)
    rec = _record(run, 0, "loss", {"train_loss": 123.0})
    rec.update(change)
    _append(run / "analysis" / "measures.jsonl", rec)
    try:
        d = RunData(run)
    except RunDirError as e:
        assert "measures.jsonl" in str(e) and "\n" not in str(e)
        return
    assert d.table == good.table and d.status_counts() == good.status_counts()
    assert render_report(d)


@pytest.mark.parametrize("change, needle", [
    ({"run_id": "../../elsewhere"}, "../../elsewhere"),
    ({"point": [1]}, "point"),
    ({"seed": "0"}, "seed"),
    ({"state": {"x": 1}}, "state"),
])
def test_sweep_file_of_the_wrong_shape_is_refused(analysed, tmp_path, change, needle) -> None:
    sweep = _sweep(analysed, tmp_path, **change)
    with pytest.raises(RunDirError, match=re.escape(needle)) as e:
        render_sweep_report(sweep)
    assert "sweep.json" in str(e.value)


def test_ignored_records_do_not_hide_the_rest(hostile) -> None:
    d = RunData(hostile)
    assert d.ignored_records == 2
    assert PROBE_ATTR not in d.probes_with_values() and "evil_values" in d.probes_with_values()
    assert render_report(d)  # and the in-process API writes the same page
    assert write_comparison([d], hostile.parent / "c.html").is_file()


# --- in a real browser ---------------------------------------------------------------------


@pytest.mark.parametrize("which", ["report", "compare", "sweep"])
def test_hostile_reports_run_no_script_in_chromium(browser, hostile, analysed, tmp_path,
                                                   which) -> None:
    from mechgrok.report import write_report, write_sweep_report

    if which == "report":
        path, want = write_report(hostile, tmp_path / "r.html"), VALUE_NAME
    elif which == "compare":
        path, want = write_comparison([hostile, analysed], tmp_path / "c.html"), RUN_ID
    else:
        path = write_sweep_report(_sweep(analysed, tmp_path, act=AXIS_VALUE), tmp_path / "s.html")
        want = AXIS_VALUE
    page = browser.new_page(viewport={"width": 1280, "height": 900})
    dialogs: list[str] = []
    errors: list[str] = []
    page.on("dialog", lambda d: (dialogs.append(d.message), d.dismiss()))
    page.on("console", lambda m: errors.append(m.text) if m.type == "error" else None)
    page.on("pageerror", lambda e: errors.append(str(e)))
    try:
        page.goto(path.resolve().as_uri())
        page.wait_for_load_state("load")
        page.wait_for_timeout(300)  # an onerror/onload handler would have run by now
        assert dialogs == [] and errors == []
        n_fig = page.evaluate("document.querySelectorAll('div.fig').length")
        plots = page.evaluate("[...document.querySelectorAll('.js-plotly-plot')]"
                              ".map(d => !!d.querySelector('svg.main-svg'))")
        assert n_fig and plots == [True] * n_fig  # every figure drew
        assert page.evaluate("document.querySelectorAll('img, script:not([src])').length") \
            == n_fig + 1  # no <img>; the scripts are plotly.js and one per figure
        labels = page.evaluate("[...document.querySelectorAll('.legendtext, .xtick text, "
                               ".ytick text')].map(t => t.textContent)")
        assert want in labels, labels  # shown as itself, not as markup
    finally:
        page.close()
