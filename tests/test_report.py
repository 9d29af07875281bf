"""Reports: figures against the data they draw, known-answer PCA pairing, HTML and CLI."""

from __future__ import annotations

import json
import math
import shutil
from pathlib import Path

import numpy as np
import plotly.graph_objects as go
import pytest

from mechgrok.analysis import analyze, load_arrays, measures_table
from mechgrok.report import RunData, render_report, write_comparison, write_report
from mechgrok.report import figures as F
from mechgrok.report.data import thin
from mechgrok.training import train
from tests.conftest import assert_one_line_error, run_cli, tiny_config, tiny_mlp_config

# add mod 23 that groks in a few hundred epochs (as in test_analysis)
GROKS = {"task.p": 23, "task.frac_train": 0.8, "train.lr": 1e-2, "model.d_model": 32,
         "model.d_mlp": 64, "train.epochs": 500, "train.checkpoint_every": 50,
         "train.eval_every": 10}
USER_PROBE = "tests.fixtures.user_probes:logit_norm"


@pytest.fixture(scope="module")
def runs(tmp_path_factory) -> dict[str, Path]:
    root = tmp_path_factory.mktemp("report-runs")
    out = {"analysed": root / "analysed", "bare": root / "bare", "mlp": root / "mlp"}
    train(tiny_config(**GROKS), out["analysed"], progress=False)
    shutil.copytree(out["analysed"], out["bare"])
    analyze(out["analysed"], [*F.DRAWN_PROBES - {"collapse"}, USER_PROBE], progress=False)
    train(tiny_mlp_config(**{"train.epochs": 40}), out["mlp"], progress=False)
    analyze(out["mlp"], progress=False)
    return out


def _traces(fig: go.Figure) -> list:
    return list(fig.data)


def test_every_figure_builds_with_svg_traces_only(runs) -> None:
    d = RunData(runs["analysed"])
    built = []
    for spec in F.RUN_FIGURES:
        if not spec.fits(d.config.task.name):  # figures of another algebra's tasks
            continue
        try:
            fig = spec.build(d)
        except F.NoData as e:
            assert spec.id in ("collapse", "nlm"), (spec.id, e)  # not analysed for collapse
            continue
        built.append(spec.id)
        assert isinstance(fig, go.Figure) and _traces(fig), spec.id
        for t in fig.data:
            assert not t.type.endswith("gl"), (spec.id, t.type)  # no WebGL
    assert {"loss", "restricted", "fourier_heatmap", "attention", "pca", "clock_pizza",
            "logit_sd", "logit_map"} <= set(built)


def test_curves_draw_exactly_the_metrics(runs) -> None:
    d = RunData(runs["analysed"])
    fig = F.loss_curves(d)
    test = next(t for t in fig.data if t.name == "test")
    want = [(m["epoch"], m["test_loss"]) for m in d.metrics]
    assert list(test.x) == [e for e, _ in want]
    assert np.allclose(test.y, [max(v, 1e-12) for _, v in want])
    fig = F.restricted_loss(d)
    rest = next(t for t in fig.data if t.name.startswith("restricted"))
    rows = measures_table(runs["analysed"])
    assert np.allclose(rest.y, [max(r["restricted.restricted_loss"], 1e-12) for r in rows])


def test_fourier_heatmap_stacks_every_checkpoint(runs) -> None:
    d = RunData(runs["analysed"])
    fig = F.fourier_heatmap(d)
    hm = fig.data[0]
    rows = measures_table(runs["analysed"])
    z = np.asarray(hm.z)
    assert z.shape == (11, len(rows))  # K = (23 − 1)/2 frequencies × checkpoints
    last = load_arrays(runs["analysed"], rows[-1]["epoch"])["fourier_embed.freq_norms"]
    assert np.allclose(z[:, -1], last)


def test_pc_pairs_known_answer() -> None:
    """Two pure frequencies with different radii: PCs pair by frequency, strongest first."""
    p = 31
    x = np.arange(p)
    rng = np.random.default_rng(0)
    basis = np.linalg.qr(rng.normal(size=(16, 16)))[0]
    E = np.stack([3 * np.cos(2 * np.pi * 4 * x / p), 3 * np.sin(2 * np.pi * 4 * x / p),
                  np.cos(2 * np.pi * 9 * x / p), np.sin(2 * np.pi * 9 * x / p)], 1)
    E = E @ basis[:4]  # rotate into 16 dimensions
    _, evr, pairs = F.pc_pairs(E, p)
    assert [(i, j, k) for i, j, k in pairs] == [(0, 1, 4), (2, 3, 9)]
    assert evr[0] == pytest.approx(evr[1]) and evr[0] == pytest.approx(9 / 20)
    # without a modulus: consecutive pairs, no frequency
    assert F.pc_pairs(E, None)[2][:2] == [(0, 1, None), (2, 3, None)]


def test_pca_slider_has_one_step_per_frame(runs) -> None:
    d = RunData(runs["analysed"])
    fig = F.pca_circle(d)
    steps = fig.layout.sliders[0].steps
    assert [int(s.label) for s in steps] == [c.epoch for c in d.checkpoints]  # ≤ 40: all kept
    assert len(steps[0].args[0]["x"]) == len(fig.data)
    assert steps[0].args[0]["x"] != steps[-1].args[0]["x"]  # the embedding moved
    assert thin(list(range(100)), 5) == [0, 25, 50, 74, 99]


def test_user_probe_scalars_drawn_automatically(runs) -> None:
    d = RunData(runs["analysed"])
    assert F.other_probes(d) == ["logit_norm"]
    fig = F.probe_scalars(d, "logit_norm")
    rows = measures_table(runs["analysed"])
    assert np.allclose(fig.data[0].y, [r["logit_norm.mean"] for r in rows])
    assert 'id="fig-probe-logit_norm"' in render_report(d)


def test_report_html_is_self_contained(runs, tmp_path) -> None:
    path = write_report(runs["analysed"], tmp_path / "r.html")
    text = path.read_text()
    assert text.count("<script type=\"text/javascript\">/**") == 1  # plotly.js inlined once
    for spec in F.RUN_FIGURES:
        if spec.id not in ("collapse", "nlm") and spec.fits("add"):
            assert f'id="fig-{spec.id}"' in text, spec.id
        if not spec.fits("add"):  # another algebra's figure is left out, without a note
            assert f"fig-{spec.id}" not in text and f"missing-{spec.id}" not in text, spec.id
    assert "<script src=" not in text and "<link" not in text
    assert "WebGL" not in text.split("</head>")[1]
    assert "delay" in text and "key frequencies" in text and "clock or pizza" in text
    assert path.stat().st_mode & 0o044 == 0o044  # readable by others, like any report


def test_unanalysed_run_reports_what_exists(runs, tmp_path) -> None:
    text = write_report(runs["bare"], tmp_path / "b.html").read_text()
    assert 'id="fig-loss"' in text and 'id="fig-accuracy"' in text and 'id="fig-pca"' in text
    assert 'id="fig-restricted"' not in text
    assert "has no measures yet" in text and "mechgrok analyze" in text


def test_mlp_report_says_attention_needs_a_transformer(runs, tmp_path) -> None:
    text = write_report(runs["mlp"], tmp_path / "m.html").read_text()
    assert 'id="missing-attention"' in text and "need a transformer" in text
    assert 'id="fig-pca"' in text and 'id="fig-fourier_heatmap"' in text


def test_comparison(runs, tmp_path) -> None:
    path = write_comparison([runs["analysed"], runs["mlp"]], tmp_path / "c.html")
    text = path.read_text()
    assert "analysed" in text and "mlp" in text
    for metric in F.COMPARE_METRICS:
        assert f'id="fig-cmp-{metric}"' in text
    fig = F.compare_curves([runs["analysed"], runs["mlp"]], "test_acc")
    assert [t.name for t in fig.data] == ["analysed", "mlp"]


def test_cli_report_and_compare(runs, tmp_path) -> None:
    r = run_cli("report", str(runs["analysed"]), cwd=tmp_path)
    assert r.returncode == 0, r.stderr
    assert (tmp_path / "reports" / "analysed.html").is_file()
    assert "reports/analysed.html" in r.stdout
    r = run_cli("compare", str(runs["analysed"]), str(runs["bare"]), "--out", "c.html",
                cwd=tmp_path)
    assert r.returncode == 0, r.stderr and (tmp_path / "c.html").is_file()


def test_cli_report_bad_input(tmp_path) -> None:
    assert_one_line_error(run_cli("report", str(tmp_path / "nope"), cwd=tmp_path), "not found")
    (tmp_path / "foreign").mkdir()
    (tmp_path / "foreign" / "x.txt").write_text("hi")
    assert_one_line_error(run_cli("report", str(tmp_path / "foreign"), cwd=tmp_path),
                          "not a mechgrok run")
    assert_one_line_error(run_cli("compare", str(tmp_path / "nope"), cwd=tmp_path), "not found")


TINY_RUN = ["--set", "task.p=11", "--set", "task.frac_train=0.5", "--set", "model.d_model=16",
            "--set", "model.n_heads=2", "--set", "model.d_head=8", "--set", "model.d_mlp=32",
            "--epochs", "60", "--set", "train.eval_every=5", "--set", "train.checkpoint_every=10",
            "--set", "train.dense_until=0", "--threads", "1"]


def test_mechgrok_run_trains_analyses_reports_and_picks_up(tmp_path) -> None:
    r = run_cli("run", *TINY_RUN, "--name", "t", cwd=tmp_path)
    assert r.returncode == 0, r.stderr
    assert "report: reports/t.html" in r.stdout
    assert (tmp_path / "checkpoints" / "t" / "analysis" / "summary.json").is_file()
    text = (tmp_path / "reports" / "t.html").read_text()
    assert 'id="fig-restricted"' in text
    # again: nothing retrained, report rewritten
    r = run_cli("run", *TINY_RUN, "--name", "t", cwd=tmp_path)
    assert r.returncode == 0, r.stderr
    assert "already trained" in r.stdout and "0 computed" in r.stdout
    # same name, other config: refused before anything is touched
    assert_one_line_error(run_cli("run", *TINY_RUN, "--seed", "5", "--name", "t", cwd=tmp_path),
                          "different config")
    summary = json.loads((tmp_path / "checkpoints" / "t" / "analysis" / "summary.json").read_text())
    assert summary["checkpoints"] == 7
    assert not math.isnan(summary["phases"].get("train_99") or 0)
