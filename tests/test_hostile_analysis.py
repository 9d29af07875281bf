"""mechgrok analyze against stale stored values, replaced run directories, misbehaving probes
and malformed analysis files (issue 12): real runs, real files."""

from __future__ import annotations

import json
import shutil
import sys
from pathlib import Path

import pytest

from mechgrok.analysis import (
    AnalysisResult,
    analysis_lock,
    analyze,
    load_records,
    load_summary,
    measures_table,
    pending,
)
from mechgrok.errors import RunDirError
from mechgrok.store import Run
from mechgrok.training import resume, train
from mechgrok.training.loop import TrainingInterrupted
from tests.conftest import assert_one_line_error, run_cli, tiny_config
from tests.test_analysis import GROKS

HOSTILE = "tests.fixtures.hostile_probes"
# what the isolation tests compare: every kind of probe (all-pairs, weights, Fourier, grad)
BASE = ["loss", "weights", "fourier_embed", "key_freqs", "gini", "collapse"]


def _copy(src: Path, dst: Path, analysis: bool = False) -> Path:
    shutil.copytree(src, dst, ignore=None if analysis else shutil.ignore_patterns("analysis"))
    return dst


@pytest.fixture(scope="module")
def tiny_run(tmp_path_factory) -> Path:
    path = tmp_path_factory.mktemp("runs") / "t"
    train(tiny_config(), path, progress=False)  # 7 checkpoints: epochs 0, 10, …, 60
    return path


@pytest.fixture
def run_copy(tiny_run: Path, tmp_path: Path) -> Path:
    return _copy(tiny_run, tmp_path / "t")


@pytest.fixture(scope="module")
def interrupted(tmp_path_factory) -> Path:
    """A run that groks, stopped by a Ctrl-C at epoch 40 (checkpoints 0, 10, 20, 30 kept, before
    the neuron clusters form: the key frequencies of its last checkpoint are not the final ones)."""
    path = tmp_path_factory.mktemp("runs") / "g"

    def stop(m: dict) -> None:
        if m["epoch"] >= 40:
            raise KeyboardInterrupt

    cfg = tiny_config(**GROKS, **{"train.stop_after_grok": 5, "train.dense_until": 50,
                                  "train.dense_every": 10})
    with pytest.raises(TrainingInterrupted):
        train(cfg, path, progress=False, on_eval=stop)
    assert Run(path).checkpoints()[-1].epoch == 30
    return path


@pytest.fixture(scope="module")
def baseline(tiny_run: Path, tmp_path_factory) -> list[dict]:
    path = _copy(tiny_run, tmp_path_factory.mktemp("base") / "t")
    assert not analyze(path, BASE, progress=False).errors
    return measures_table(path)


def _values(rows: list[dict], probe: str) -> dict[int, dict]:
    return {r["epoch"]: {k: v for k, v in r.items() if k.startswith(f"{probe}.")} for r in rows}


# --------------------------------------------------------------------------------------------
# 8. Values that depend on the final checkpoint are recomputed when it changes
# --------------------------------------------------------------------------------------------
def test_resumed_run_recomputes_final_dependent_measures(interrupted: Path, tmp_path: Path) -> None:
    path = _copy(interrupted, tmp_path / "g")
    mid = analyze(path, ["restricted", "loss"], progress=False)
    assert not mid.errors
    mid_rows = measures_table(path)
    resume(path, progress=False)
    assert Run(path).checkpoints()[-1].epoch > 30
    # before analysing again, the table does not show values computed against the old final
    assert all("restricted.status" not in r for r in measures_table(path))
    assert all(r["loss.status"] == "ok" for r in measures_table(path))
    assert pending(path, ["restricted", "loss"]) > 0
    res = analyze(path, ["restricted", "loss"], progress=False)
    n_old = len(mid_rows)
    assert res.stale == n_old  # every restricted record of epochs 0 … 30, and no loss record
    assert res.reused == n_old  # loss of epochs 0 … 30 depends on its checkpoint only
    assert pending(path, ["restricted", "loss"]) == 0

    fresh = _copy(path, tmp_path / "fresh")
    analyze(fresh, ["restricted", "loss"], force=True, progress=False)
    got, want = _values(measures_table(path), "restricted"), _values(measures_table(fresh),
                                                                     "restricted")
    assert got == want
    # and it mattered: the mid-run values (keys of epoch 30) differ from the final ones
    before = _values(mid_rows, "restricted")
    assert any(before[e] != want[e] for e in before)
    assert load_summary(path)["phases"] == load_summary(fresh)["phases"]
    assert load_summary(path)["final_checkpoint"]["epoch"] == Run(path).checkpoints()[-1].epoch


def test_records_of_earlier_versions_are_recomputed(run_copy: Path) -> None:
    analyze(run_copy, ["weights"], progress=False)
    f = run_copy / "analysis" / "measures.jsonl"
    old = [json.loads(ln) for ln in f.read_text().splitlines()]
    f.write_text("".join(json.dumps({k: v for k, v in r.items() if k not in ("deps", "probe_id")})
                         + "\n" for r in old))
    assert measures_table(run_copy) == []  # nothing says what they were computed from
    res = analyze(run_copy, ["weights"], progress=False)
    assert res.stale == res.computed == len(old)


def test_a_changed_checkpoint_hash_makes_its_records_stale(run_copy: Path) -> None:
    analyze(run_copy, ["weights"], progress=False)
    man = json.loads((run_copy / "manifest.json").read_text())
    # another run's checkpoint under the same epoch (what a replaced directory looks like)
    man["checkpoints"][2]["sha256"] = "0" * 64
    (run_copy / "manifest.json").write_text(json.dumps(man))
    assert 20 not in {r["epoch"] for r in measures_table(run_copy)}
    res = analyze(run_copy, ["weights"], progress=False)
    assert res.stale == 1 and len(res.errors) == 1  # the file no longer matches: an error


# --------------------------------------------------------------------------------------------
# 9. The analysis lock, and a run directory replaced under the analysis
# --------------------------------------------------------------------------------------------
def test_analysis_lock(run_copy: Path) -> None:
    with analysis_lock(run_copy) as held:
        assert held is False
    assert not (run_copy / "analysis").exists()  # nothing created
    seen = []

    def try_lock(ck) -> None:
        if not seen:
            with pytest.raises(RunDirError, match="being analysed"):
                with analysis_lock(run_copy):
                    pass
            seen.append(ck.epoch)

    analyze(run_copy, ["weights"], progress=False, on_checkpoint=try_lock)
    assert seen
    with analysis_lock(run_copy) as held:  # free again
        assert held is True
        with pytest.raises(RunDirError, match="being analysed"):
            analyze(run_copy, ["weights"], progress=False)


def test_run_replaced_while_analysed(run_copy: Path) -> None:
    """`train --overwrite` of the directory, with another learning rate, while it is analysed:
    the analysis stops, and the new run gets none of the old run's values (its epoch-0
    checkpoint is byte-identical to the old run's: same seed, same model)."""
    replaced = []

    def overwrite(ck) -> None:
        if not replaced:
            shutil.rmtree(run_copy)
            train(tiny_config(**{"train.lr": 1e-2}), run_copy, progress=False)
            replaced.append(ck.epoch)

    with pytest.raises(RunDirError, match="changed while it was being analysed"):
        analyze(run_copy, ["weights", "fourier_embed"], progress=False, on_checkpoint=overwrite)
    assert replaced
    assert load_records(run_copy) == {}
    assert not (run_copy / "analysis" / "arrays").exists()
    res = analyze(run_copy, ["weights"], progress=False)  # the new run analyses normally
    assert not res.errors and res.computed == len(Run(run_copy).checkpoints())


# --------------------------------------------------------------------------------------------
# 10. Probe identity, and probes isolated from each other
# --------------------------------------------------------------------------------------------
def test_another_probe_under_the_same_name_is_recomputed(run_copy: Path) -> None:
    n_ck = len(Run(run_copy).checkpoints())
    analyze(run_copy, [f"{HOSTILE}:same_name_first"], progress=False)
    assert {r["same_name.v"] for r in measures_table(run_copy)} == {1}
    res = analyze(run_copy, [f"{HOSTILE}:SameNameSecond"], progress=False)
    assert res.stale == res.computed == n_ck and res.reused == 0
    assert {r["same_name.v"] for r in measures_table(run_copy)} == {2}
    assert analyze(run_copy, [f"{HOSTILE}:SameNameSecond"], progress=False).computed == 0


def test_an_edited_probe_is_recomputed(run_copy: Path, tmp_path: Path,
                                       monkeypatch: pytest.MonkeyPatch) -> None:
    """The same module:name with another body, or another module-level constant it reads."""
    mod = tmp_path / "edited_probe_mod.py"
    monkeypatch.syspath_prepend(str(tmp_path))
    src = ("from mechgrok.probes import probe\nSCALE = {scale}\n"
           "@probe('edited')\ndef edited(ctx):\n    return {{'v': {body}}}\n")
    n_ck = len(Run(run_copy).checkpoints())

    def run_with(scale: int, body: str) -> AnalysisResult:
        mod.write_text(src.format(scale=scale, body=body))
        sys.modules.pop("edited_probe_mod", None)
        return analyze(run_copy, ["edited_probe_mod:edited"], progress=False)

    try:
        assert run_with(1, "SCALE").computed == n_ck
        assert run_with(1, "SCALE").computed == 0  # the same code: reused
        assert run_with(2, "SCALE").stale == n_ck  # a constant it reads changed
        assert {r["edited.v"] for r in measures_table(run_copy)} == {2}
        assert run_with(2, "SCALE * 10").stale == n_ck  # its body changed
        assert {r["edited.v"] for r in measures_table(run_copy)} == {20}
    finally:
        sys.modules.pop("edited_probe_mod", None)


@pytest.mark.parametrize("hostile", ["zeroes_embedding", "doubles_model", "adds_hook",
                                     "trains_model", "mutates_all_pairs", "mutates_labels"])
def test_a_probe_that_changes_shared_state_does_not_change_the_others(
        hostile: str, run_copy: Path, baseline: list[dict]) -> None:
    res = analyze(run_copy, [f"{HOSTILE}:{hostile}", *BASE], progress=False)
    rows = measures_table(run_copy)
    for probe in BASE:
        assert _values(rows, probe) == _values(baseline, probe), probe
    assert {e["probe"] for e in res.errors} == {hostile}
    assert len(res.errors) == len(rows)  # at every checkpoint
    assert all("modified" in e["error"] for e in res.errors)
    assert all(r[f"{hostile}.status"] == "error" for r in rows)


def test_global_torch_settings_are_put_back(run_copy: Path, baseline: list[dict]) -> None:
    import torch

    dtype, grad = torch.get_default_dtype(), torch.is_grad_enabled()
    res = analyze(run_copy, [f"{HOSTILE}:sets_default_dtype", *BASE], progress=False)
    assert not res.errors
    assert (torch.get_default_dtype(), torch.is_grad_enabled()) == (dtype, grad)
    rows = measures_table(run_copy)
    assert all(_values(rows, p) == _values(baseline, p) for p in BASE)


def test_exit_and_base_exceptions_are_errors(run_copy: Path, baseline: list[dict]) -> None:
    res = analyze(run_copy, [f"{HOSTILE}:exits", f"{HOSTILE}:raises_base_exception",
                             f"{HOSTILE}:BadApplies", *BASE], progress=False)
    by_probe: dict[str, list[str]] = {}
    for e in res.errors:
        by_probe.setdefault(e["probe"], []).append(e["error"])
    assert set(by_probe) == {"exits", "raises_base_exception", "exits_in_applies"}
    assert all("sys.exit()" in e for e in by_probe["exits"])
    assert all(e == "Boom: boom" for e in by_probe["raises_base_exception"])
    assert by_probe["exits_in_applies"] == [
        "applies() raised SystemExit(3): the probe called sys.exit() (a probe returns a dict, "
        "or raises)"]
    rows = measures_table(run_copy)
    assert all(_values(rows, p) == _values(baseline, p) for p in BASE)


def test_cli_exit_in_a_probe_is_one_error_line(run_copy: Path) -> None:
    r = run_cli("analyze", str(run_copy), "--probe", f"{HOSTILE}:exits", "--probe", "weights")
    assert r.returncode == 1
    assert_one_line_error(r, "'exits'", "sys.exit()")
    assert "analysed" in r.stdout
    r = run_cli("analyze", str(run_copy), "--probe", f"{HOSTILE}:raises_base_exception")
    assert r.returncode == 1
    assert_one_line_error(r, "'raises_base_exception'", "Boom: boom")


def test_keyboard_interrupt_still_interrupts(run_copy: Path) -> None:
    with pytest.raises(KeyboardInterrupt):
        analyze(run_copy, [f"{HOSTILE}:interrupts"], progress=False)
    # the final checkpoint (60) is computed first and interrupts; nothing half-written, and the
    # lock is released
    with analysis_lock(run_copy) as held:
        assert held
    assert load_records(run_copy) == {}
    assert analyze(run_copy, ["weights"], progress=False).computed == 7


# --------------------------------------------------------------------------------------------
# 11. A missing final checkpoint is an error, not "n/a"
# --------------------------------------------------------------------------------------------
@pytest.mark.parametrize("analysed_before", [True, False])
def test_missing_final_checkpoint_is_an_error(run_copy: Path, analysed_before: bool) -> None:
    if analysed_before:
        assert not analyze(run_copy, ["weights", "restricted"], progress=False).errors
    final = Run(run_copy).checkpoints()[-1]
    (run_copy / final.file).unlink()
    r = run_cli("analyze", str(run_copy), "--probe", "weights", "--probe", "restricted")
    assert r.returncode == 1, r.stdout + r.stderr
    assert "Traceback" not in r.stderr
    assert f"{final.file} is missing" in r.stderr
    assert "key_frequencies" in r.stderr
    kf = load_summary(run_copy)["key_frequencies"]
    assert "not_applicable" not in kf and f"{final.file} is missing" in kf["error"]
    assert "key frequencies: error" in r.stdout


# --------------------------------------------------------------------------------------------
# 7. Malformed records and summaries
# --------------------------------------------------------------------------------------------
def test_malformed_records_are_ignored_and_recomputed(run_copy: Path) -> None:
    analyze(run_copy, ["weights", "restricted"], progress=False)
    recs = load_records(run_copy)
    good = recs[(60, "restricted")]
    no_excluded = {**good, "values": {k: v for k, v in good["values"].items()
                                      if k != "excluded_loss"}}
    bad = [
        {"epoch": 0, "probe": "weights", "values": {"total": 1.0}},  # no status
        {**recs[(10, "weights")], "values": [1, 2, 3]},  # values a list
        {**recs[(20, "weights")], "values": {"total": [1.0]}},  # not a number
        {**recs[(30, "weights")], "status": "fine"},
        {**recs[(40, "weights")], "epoch": "40"},
        {**recs[(50, "weights")], "epoch": True},
        {**recs[(60, "weights")], "status": "error"},  # an error without its text
        [1, 2], "text", None, 7,
        no_excluded,  # well formed, fresh, and without the value the summary reads
    ]
    f = run_copy / "analysis" / "measures.jsonl"
    with f.open("a") as fh:
        for b in bad:
            fh.write(json.dumps(b) + "\n")
    rows = measures_table(run_copy)
    assert len(rows) == 7 and all(r["weights.status"] == "ok" for r in rows)
    r = run_cli("analyze", str(run_copy), "--probe", "weights")
    assert r.returncode == 0, r.stderr
    assert "Traceback" not in r.stderr
    assert all(r["weights.status"] == "ok" for r in measures_table(run_copy))
    assert load_summary(run_copy)["probe_status"]["weights"] == {"ok": 7, "n/a": 0, "error": 0}


@pytest.mark.parametrize("content", ['{"kind": "mechgrok.analysis_summary", "run', "[1, 2]",
                                     "\x00\x01", ""])
def test_torn_summary_is_one_line(run_copy: Path, content: str) -> None:
    analyze(run_copy, ["weights"], progress=False)
    f = run_copy / "analysis" / "summary.json"
    f.write_text(content)
    with pytest.raises(RunDirError, match="summary.json") as e:
        load_summary(run_copy)
    assert "\n" not in str(e.value)


def test_cli_report_on_a_torn_summary_is_one_line(run_copy: Path) -> None:
    analyze(run_copy, ["weights"], progress=False)
    (run_copy / "analysis" / "summary.json").write_text('{"phases": {"grokking_ep')
    assert_one_line_error(run_cli("report", str(run_copy), "--out", str(run_copy / "r.html")),
                          "summary.json")

