"""`mechgrok reproduce`: the verdict rules on hand-made numbers, each claim's measure on
hand-made runs, the entries' paper settings pinned against the papers, and the whole pipeline
(train → analyse → verdicts → report → CLI) on a tiny budget injected through the API."""

from __future__ import annotations

import dataclasses
import math
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import numpy as np
import pytest

from mechgrok.config import resolve_config
from mechgrok.errors import ConfigError
from mechgrok.reproduce import (
    CATALOGUE,
    DIFFERS,
    PAPER,
    QUICK,
    QUICK_HOLDS,
    REPRODUCED,
    Evidence,
    RunEvidence,
    evaluate,
    get_entry,
    reproduce,
    start_of_fall,
    value_near,
    verdict,
)
from mechgrok.reproduce.chughtai import CHUGHTAI
from mechgrok.reproduce.nanda import NANDA
from mechgrok.reproduce.zhong import ZHONG
from mechgrok.sweep import expand
from tests.conftest import assert_one_line_error, cli_here, run_cli

TINY = {"task.p": 11, "train.epochs": 60, "train.eval_every": 5, "train.checkpoint_every": 10,
        "train.dense_until": 0, "train.threads": 1, "model.d_model": 16, "model.n_heads": 2,
        "model.d_head": 8, "model.d_mlp": 32}


def _claim(entry: Any, cid: str) -> Any:
    return next(c for c in entry.claims if c.id == cid)


def _configs(entry: Any, budget: str, run_set: str) -> list[Any]:
    rs = next(r for r in entry.budgets[budget].runs if r.name == run_set)
    return [pt.config for pt in expand(rs.spec("pin"))]


# --- verdicts ---------------------------------------------------------------------------
def test_every_verdict_is_reachable_with_the_budgets_wording() -> None:
    assert verdict(True, PAPER, 50_000) == REPRODUCED == "reproduced"
    assert verdict(False, PAPER, 50_000) == DIFFERS == "differs"
    assert verdict(None, PAPER, 50_000) == "not reached within 50,000 epochs"
    # a quick run never reproduces nor contradicts a paper
    assert verdict(True, QUICK, 3000) == QUICK_HOLDS == "holds at the quick settings (not the paper's)"
    assert verdict(False, QUICK, 3000) == "not reached within 3,000 epochs at the quick settings"
    assert verdict(None, QUICK, 3000) == verdict(False, QUICK, 3000)
    with pytest.raises(ConfigError, match="unknown budget"):
        verdict(True, "huge", 1)


def test_start_of_fall_and_value_near_on_known_curves() -> None:
    e = [0, 10, 20, 30, 40, 50]
    # log10: 0 → 2 (peak at 10) → falls to -2; 10 % of the 4-decade fall is 10^1.6 ≈ 39.8
    v = [1.0, 100.0, 50.0, 30.0, 0.1, 0.01]
    assert start_of_fall(e, v) == 30
    assert start_of_fall(e, v, after=20) == 40  # peak at 20 (50), 10 % of 3.7 decades: 21.3
    assert start_of_fall(e, [5.0, 4.0, 3.0, 2.0, 1.5, 1.0]) is None  # < one decade: no fall
    assert start_of_fall([], []) is None
    assert value_near(e, v, 24) == 50.0 and value_near(e, v, 25) == 50.0  # tie → earlier
    assert value_near(e, v, 26) == 30.0 and value_near([], [], 3) is None


# --- claims' rules on hand-made numbers --------------------------------------------------
def test_nanda_rules() -> None:
    keys = _claim(NANDA, "key-frequencies").rule
    assert keys({"grokked": True, "n": 5, "n_freqs": 56}) is True
    assert keys({"grokked": True, "n": 12, "n_freqs": 56}) is False  # more than 8: not "few"
    assert keys({"grokked": True, "n": 0, "n_freqs": 56}) is False
    assert keys({"grokked": False, "n": 5, "n_freqs": 56}) is None
    fall = _claim(NANDA, "restricted-before-test").rule
    assert fall({"grokked": True, "restricted_falls": 410, "test_falls": 850}) is True
    assert fall({"grokked": True, "restricted_falls": 900, "test_falls": 850}) is False
    assert fall({"grokked": True, "restricted_falls": None, "test_falls": 850}) is False
    assert fall({"grokked": False, "restricted_falls": 410, "test_falls": None}) is None
    ex = _claim(NANDA, "excluded-rises").rule
    assert ex({"at_mem": 0.61, "at_circ": 5.47}) is True
    assert ex({"at_mem": 0.61, "at_circ": 1.0}) is False  # rose, but less than doubled
    assert ex({"at_mem": 0.61, "at_circ": None}) is None
    gini = _claim(NANDA, "gini-cleanup").rule
    assert gini({"embedding": (0.28, 0.54), "logit_map": (0.41, 0.69)}) is True
    assert gini({"embedding": (0.28, 0.54), "logit_map": (0.41, 0.45)}) is False
    assert gini({"embedding": None, "logit_map": None}) is None
    ph = _claim(NANDA, "phases").rule
    good = {"memorisation_end": 220, "circuit_formation_end": 880, "grokking_epoch": 1210,
            "cleanup_end": 2140}
    assert ph(good) is True
    assert ph({**good, "memorisation_end": 500}) is False  # memorisation not the shorter
    assert ph({**good, "cleanup_end": None}) is None


def _per(hits: int, grokked: int, runs: int) -> dict[str, int]:
    return {"hits": hits, "grokked": grokked, "runs": runs}


def test_zhong_rules() -> None:
    rule = _claim(ZHONG, "clock-for-alpha-1").rule
    assert rule({"per_modulus": {"59": _per(3, 3, 3), "61": _per(2, 3, 3)}}) is True
    assert rule({"per_modulus": {"59": _per(3, 3, 3), "61": _per(1, 3, 3)}}) is False
    assert rule({"per_modulus": {"59": _per(1, 2, 2), "61": _per(2, 2, 2)}}) is False  # 1 of 2
    assert rule({"per_modulus": {"59": _per(1, 1, 3), "61": _per(3, 3, 3)}}) is None  # 1 of 3 grokked
    assert rule({"per_modulus": {"59": _per(3, 3, 3)}}) is None  # one modulus only
    sep = _claim(ZHONG, "measures-separate").rule
    assert sep({"clock": {"gs": 0.4, "di": 0.8}, "pizza": {"gs": 0.99, "di": 0.3}}) is True
    assert sep({"clock": {"gs": 0.95, "di": 0.8}, "pizza": {"gs": 0.99, "di": 0.3}}) is False
    assert sep({"clock": {"gs": 0.4, "di": 0.2}, "pizza": {"gs": 0.99, "di": 0.3}}) is False
    assert sep({"clock": {"gs": None, "di": None}, "pizza": {"gs": 0.99, "di": 0.3}}) is None


def _s5(seed: int, key: list[str] | None, grokked: bool = True, r: float = 1e-5,
        e: float = 7.0) -> dict[str, Any]:
    return {"seed": seed, "grokked": grokked, "test_acc": 1.0 if grokked else 0.2, "key": key,
            "aliases": {}, "restricted_loss": r, "excluded_loss": e, "n": 120}


def test_chughtai_rules() -> None:
    a, b = ["(1,1,1,1,1)", "(4,1)"], ["(1,1,1,1,1)", "(4,1)", "(3,2)"]
    groks = _claim(CHUGHTAI, "groks").rule
    assert groks({"runs": [_s5(0, a), _s5(1, b)]}) is True
    assert groks({"runs": [_s5(0, a), _s5(1, None, grokked=False)]}) is None  # never "differs"
    std = _claim(CHUGHTAI, "standard-is-key").rule
    assert std({"runs": [_s5(0, a), _s5(1, b)]}) is True
    assert std({"runs": [_s5(0, a), _s5(1, ["(1,1,1,1,1)"])]}) is False
    assert std({"runs": [_s5(0, None, grokked=False)]}) is None
    vary = _claim(CHUGHTAI, "irreps-vary").rule
    assert vary({"runs": [_s5(0, a), _s5(1, b)]}) is True
    assert vary({"runs": [_s5(0, a), _s5(1, list(reversed(a)))]}) is False  # same set
    assert vary({"runs": [_s5(0, a), _s5(1, None, grokked=False)]}) is None
    suff = _claim(CHUGHTAI, "key-irreps-suffice").rule
    assert suff({"runs": [_s5(0, a)]}) is True
    assert suff({"runs": [_s5(0, a, r=0.5)]}) is False
    assert suff({"runs": [_s5(0, a, e=math.log(120) - 0.1)]}) is False  # not worse than chance


# --- claims' measures on hand-made runs --------------------------------------------------
def _fake_run(set_name: str, summary: dict[str, Any], *, p: int | None = 53,
              series: dict[str, tuple[list[int], list[float]]] | None = None,
              overrides: dict[str, Any] | None = None, seed: int = 0,
              test_acc: float = 1.0, task: str = "add") -> RunEvidence:
    cfg = resolve_config("quick", overrides={"task.name": task, "task.p": p,
                                             **(overrides or {})})
    r = RunEvidence(f"run-{set_name}-{p}-{seed}", Path("/nonexistent"), set_name,
                    {"task.p": p}, seed)
    cols = series or {}
    r.__dict__["data"] = SimpleNamespace(
        summary=summary, config=cfg, metrics=[{"epoch": 3000, "test_acc": test_acc}],
        series=lambda c: tuple(np.asarray(x) for x in cols.get(c, ([], []))))
    return r


def test_nanda_measures_read_the_summary_and_curves() -> None:
    e = [0, 100, 200, 400, 800, 1200, 2000, 3000]
    summary = {"key_frequencies": {"neurons": [1, 5, 13, 17, 20]},
               "phases": {"train_99": 100, "grokking_epoch": 1200, "memorisation_end": 200,
                          "circuit_formation_end": 800, "cleanup_end": 2000}}
    series = {"restricted.restricted_loss": (e, [4.0, 3.0, 0.3, 0.01, 1e-4, 1e-6, 1e-8, 1e-8]),
              "loss.test_loss": (e, [4.0, 12.0, 11.0, 10.0, 2.0, 0.02, 1e-4, 1e-5]),
              "restricted.excluded_loss": (e, [4.0, 1.0, 0.6, 2.0, 5.5, 6.3, 6.9, 6.7]),
              "gini.embedding": (e, [0.03, 0.1, 0.12, 0.18, 0.28, 0.37, 0.54, 0.58]),
              "gini.logit_map": (e, [0.04, 0.14, 0.17, 0.24, 0.41, 0.57, 0.69, 0.72])}
    ev = Evidence(QUICK, 3000, [_fake_run("main", summary, series=series)])
    got = {r.claim.id: r for r in evaluate(NANDA, ev)}
    assert got["key-frequencies"].measured["n"] == 5 and got["key-frequencies"].holds is True
    assert got["restricted-before-test"].measured["restricted_falls"] == 200
    assert got["restricted-before-test"].measured["test_falls"] == 800
    assert got["excluded-rises"].measured["at_mem"] == 0.6
    assert got["excluded-rises"].measured["at_circ"] == 5.5
    assert got["gini-cleanup"].measured["logit_map"] == (0.41, 0.69)
    assert all(r.holds is True and r.verdict == QUICK_HOLDS for r in got.values())
    paper = evaluate(NANDA, dataclasses.replace(ev, budget=PAPER, epochs=50_000))
    assert [r.verdict for r in paper] == [REPRODUCED] * len(NANDA.claims)


def test_a_run_that_did_not_grok_is_not_reached_and_never_hidden() -> None:
    summary = {"key_frequencies": {"neurons": []}, "phases": {"train_99": 100}}
    ev = Evidence(PAPER, 50_000, [_fake_run("main", summary, test_acc=0.02)])
    res = evaluate(NANDA, ev)
    assert [r.claim.id for r in res] == [c.id for c in NANDA.claims]  # every claim, in order
    assert {r.verdict for r in res} == {"not reached within 50,000 epochs"}
    assert "not grokked (test accuracy 0.020 at epoch 3000)" in res[0].value


def _cp(verdict_: str, gs: float, di: float) -> dict[str, Any]:
    return {"clock_pizza": {"verdict": verdict_, "gradient_symmetricity": gs,
                            "distance_irrelevance": di},
            "phases": {"grokking_epoch": 700}}


def test_zhong_measures_count_verdicts_per_modulus() -> None:
    runs = [_fake_run("clock", _cp("clock", 0.3, 0.8), p=59, seed=s) for s in (0, 1)]
    runs += [_fake_run("clock", _cp("mixed", 0.95, 0.7), p=61),
             _fake_run("clock", _cp("clock", 0.2, 0.9), p=61, seed=1)]
    runs += [_fake_run("pizza", _cp("pizza", 1.0, 0.2), p=p, seed=s)
             for p in (59, 61) for s in (0, 1)]
    got = {r.claim.id: r for r in evaluate(ZHONG, Evidence(PAPER, 20_000, runs))}
    clock = got["clock-for-alpha-1"]
    assert clock.measured["per_modulus"]["61"] == {"runs": 2, "grokked": 2, "hits": 1,
                                                   "verdicts": ["mixed", "clock"]}
    assert clock.verdict == DIFFERS  # 1 of 2 at p = 61 is not a majority
    assert got["pizza-for-alpha-0"].verdict == REPRODUCED
    assert got["measures-separate"].measured["clock"]["gs"] == pytest.approx(0.3)
    assert got["measures-separate"].verdict == REPRODUCED
    assert "p = 61: 1 of 2 grokked runs are clocks (verdicts: mixed, clock)" in clock.value


def test_chughtai_measures_read_the_irreps_summary() -> None:
    def s5(seed: int, keys: list[str]) -> RunEvidence:
        irr = {"final_key": keys, "restricted_loss": 1e-5, "excluded_loss": 7.5,
               "irreps": {"(4,1)": {"alias": "standard"}, "(1,1,1,1,1)": {"alias": "sign"}}}
        return _fake_run("seeds", {"probes": {"irreps": irr}, "phases": {"grokking_epoch": 7000}},
                         seed=seed, task="s5", p=None, overrides={"task.p": None})
    runs = [s5(0, ["(1,1,1,1,1)", "(4,1)"]), s5(1, ["(1,1,1,1,1)", "(4,1)"])]
    got = {r.claim.id: r for r in evaluate(CHUGHTAI, Evidence(QUICK, 16_000, runs))}
    assert got["standard-is-key"].verdict == QUICK_HOLDS
    assert got["irreps-vary"].verdict == "not reached within 16,000 epochs at the quick settings"
    assert "{(1,1,1,1,1) sign, (4,1) standard}" in got["standard-is-key"].value
    assert got["key-irreps-suffice"].measured["runs"][0]["n"] == 120


# --- the entries' settings, pinned against the papers -------------------------------------
def test_nanda_paper_settings() -> None:
    (c,) = _configs(NANDA, PAPER, "main")
    # progress-measures-paper transformers.py @5bf4dad, Config: p 113 (l. 31), add (l. 33),
    # frac_train 0.3 (l. 34), num_epochs 50000 (l. 35)
    assert (c.task.name, c.task.p, c.task.frac_train, c.train.epochs) == ("add", 113, 0.3, 50_000)
    # d_model 128 (l. 32), 1 layer (l. 46), d_mlp 4·d_model (l. 50), 4 heads (l. 51), d_head =
    # d_model // heads, ReLU (l. 53), no LayerNorm (l. 60)
    m = c.model
    assert (m.kind, m.n_layers, m.d_model, m.n_heads, m.d_head, m.d_mlp, m.act, m.layernorm) == \
        ("transformer", 1, 128, 4, 32, 512, "relu", False)
    # AdamW lr 1e-3, wd 1 (l. 29-30), betas (0.9, 0.98) (l. 470), warm-up min(step/10, 1)
    # (l. 471), full batch (l. 47), float64 cross-entropy (l. 452)
    t = c.train
    assert (t.optimizer, t.lr, t.weight_decay, t.betas, t.warmup_steps, t.batch_size,
            t.loss_dtype) == ("adamw", 1e-3, 1.0, (0.9, 0.98), 10, None, "float64")


def test_zhong_paper_settings() -> None:
    for run_set, alpha in (("clock", 1.0), ("pizza", 0.0)):
        cs = _configs(ZHONG, PAPER, run_set)
        # pizza code/train-main.py @b78c0e6: C = 59 (l. 531); p = 61 is mechgrok's second modulus
        assert sorted({c.task.p for c in cs}) == [59, 61]
        assert sorted({c.train.seed for c in cs}) == [0, 1, 2] and len(cs) == 6
        for c in cs:
            # attn_coeff (l. 559): Model B α = 1, Model A α = 0; frac 0.8 (l. 558)
            assert (c.model.attn_alpha, c.task.name, c.task.frac_train) == (alpha, "add", 0.8)
            # 1 layer (l. 532), d_model 128 (l. 541), 4 heads (l. 549), d_mlp 4·d_model (l. 173)
            m = c.model
            assert (m.n_layers, m.d_model, m.n_heads, m.d_mlp, m.act, m.layernorm) == \
                (1, 128, 4, 512, "relu", False)
            # AdamW betas (0.9, 0.98) (l. 395), 10-step warm-up (l. 396), lr 1e-3 and wd 2
            # (l. 556-557), full batch C·C (l. 555), 20,000 epochs (l. 554)
            t = c.train
            assert (t.optimizer, t.lr, t.weight_decay, t.betas, t.warmup_steps, t.batch_size,
                    t.epochs) == ("adamw", 1e-3, 2.0, (0.9, 0.98), 10, None, 20_000)


def test_chughtai_paper_settings() -> None:
    cs = _configs(CHUGHTAI, PAPER, "seeds")
    # universality_results/mlp_all.csv: S5 seeds 1-4
    assert [c.train.seed for c in cs] == [1, 2, 3, 4]
    for c in cs:
        # paper/mainline-S5/cfg.json: SymmetricGroup 5, frac_train 0.4, embed 256, hidden 128
        assert (c.task.name, c.task.n, c.task.frac_train) == ("s5", 120, 0.4)
        m = c.model  # utils/models.py l. 54-92, OneLayerMLP: concatenated embeddings, no bias
        assert (m.kind, m.embed, m.d_embed, m.combine, m.hidden, m.bias, m.act) == \
            ("mlp", "learned", 256, "concat", (128,), False, "relu")
        # cfg.json: lr 1e-3, weight_decay 1, betas (0.9, 0.98), 250,000 epochs;
        # train_with_checkpoints.py l. 69 (AdamW, no scheduler), l. 84-88 (full batch)
        t = c.train
        assert (t.optimizer, t.lr, t.weight_decay, t.betas, t.warmup_steps, t.batch_size,
                t.epochs, t.stop_after_grok) == ("adamw", 1e-3, 1.0, (0.9, 0.98), 0, None,
                                                 250_000, None)


def test_catalogue_and_quick_budgets() -> None:
    assert list(CATALOGUE) == ["nanda", "zhong", "chughtai"]
    for e in CATALOGUE.values():
        assert set(e.budgets) == {QUICK, PAPER}
        assert e.budgets[QUICK].seconds <= 15 * 60  # the quick budget
        assert not e.budgets[PAPER].measured and "not run yet" in e.budgets[PAPER].time_note
        assert e.budgets[PAPER].settings and e.budgets[QUICK].note
        for c in e.claims:
            assert c.citation and c.rule_text and c.paper_value
    # the quick chughtai runs are the brief's measured recipe
    c = _configs(CHUGHTAI, QUICK, "seeds")[0]
    assert (c.train.lr, c.train.weight_decay, c.model.hidden, c.task.frac_train) == \
        (3e-3, 3.0, (128,), 0.4)
    with pytest.raises(ConfigError, match="no reproduction called 'nope'; the catalogue has"):
        get_entry("nope")
    with pytest.raises(ConfigError, match="unknown budget 'huge'"):
        NANDA.budget("huge")


# --- the whole pipeline on a tiny budget -------------------------------------------------
def _tiny_nanda() -> Any:
    return NANDA.with_budget(NANDA.budgets[QUICK].with_settings(TINY))


def test_pipeline_on_a_tiny_budget(tmp_path: Path, capsys: pytest.CaptureFixture[str],
                                   monkeypatch: pytest.MonkeyPatch) -> None:
    entry = _tiny_nanda()
    rep = reproduce(entry, QUICK, tmp_path / "ck", tmp_path / "reports", workers=1)
    assert rep.trained == 1 and not rep.failed and len(rep.evidence.runs) == 1
    assert rep.evidence.epochs == 60 and rep.compute_seconds > 0
    assert [r.claim.id for r in rep.claims] == [c.id for c in NANDA.claims]
    for r in rep.claims:  # whatever the tiny run did, the quick wording, never the paper's
        assert r.verdict in (QUICK_HOLDS, "not reached within 60 epochs at the quick settings")
    assert rep.report == tmp_path / "reports" / "reproduce-nanda.html"
    html = rep.report.read_text()
    for r in rep.claims:
        for text in (r.claim.id, r.claim.citation, r.verdict):
            assert text.replace("'", "&#x27;") in html
    assert "reproduce-nanda-quick-main" in str(rep.sweep_dirs[0])
    # the CLI, on the same out-dir: everything is done, nothing is trained again
    monkeypatch.setitem(CATALOGUE, "nanda", entry)
    out = cli_here(capsys, "reproduce", "nanda", "--workers", "1", "--out-dir",
                   str(tmp_path / "ck"), "--reports-dir", str(tmp_path / "r2"))
    assert out.returncode == 0, out.stderr
    assert "1 runs done (0 trained now)" in out.stdout
    assert all(c.id in out.stdout for c in NANDA.claims)
    assert (tmp_path / "r2" / "reproduce-nanda.html").is_file()


def test_cli_lists_the_catalogue_and_refuses_bad_names(capsys: pytest.CaptureFixture[str]
                                                       ) -> None:
    out = cli_here(capsys, "reproduce")
    assert out.returncode == 0
    for e in CATALOGUE.values():
        assert f"{e.name}: {e.paper.short}" in out.stdout
        assert all(c.id in out.stdout for c in e.claims)
    assert "quick" in out.stdout and "not run yet" in out.stdout
    assert_one_line_error(cli_here(capsys, "reproduce", "nope"), "no reproduction called",
                          "nanda")
    assert_one_line_error(cli_here(capsys, "reproduce", "nanda", "--budget", "huge"),
                          "invalid choice", "huge")
    assert_one_line_error(run_cli("reproduce", "nope"), "no reproduction called")


@pytest.mark.slow
def test_nanda_quick_budget_end_to_end(tmp_path: Path) -> None:
    """The real quick budget of the cheapest entry (about 2 minutes here)."""
    rep = reproduce("nanda", QUICK, tmp_path / "ck", tmp_path / "reports", workers=1)
    assert not rep.failed and rep.evidence.epochs == 3000
    got = {r.claim.id: r for r in rep.claims}
    assert got["key-frequencies"].verdict == QUICK_HOLDS, got["key-frequencies"].value
    assert {r.verdict for r in rep.claims} <= {
        QUICK_HOLDS, "not reached within 3,000 epochs at the quick settings"}
    assert rep.report is not None and rep.report.is_file()
