"""Sweeps: grid expansion and its errors, the local and Ray backends for real (no mocks), a
worker killed mid-run, a sweep killed mid-run and relaunched, and the phase-diagram report."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from mechgrok.errors import ConfigError
from mechgrok.store import Run
from mechgrok.sweep import (
    RUNS_DIR,
    SWEEP_FILE,
    expand,
    load_sweep,
    load_sweep_spec,
    run_sweep,
)
from tests.conftest import ROOT, assert_one_line_error, checkpoint_file_ids, run_cli, sweep_file


def assert_run_intact(path: Path, epochs: int) -> None:
    """Finished, every checkpoint verifies (size + SHA-256) and loads, metrics reach the end."""
    run = Run(path)
    assert run.status == "finished", (path, run.status)
    cks = run.checkpoints()
    assert cks[-1].epoch == epochs
    assert [c.epoch for c in cks] == sorted({c.epoch for c in cks})
    for ck in cks:
        run.load_model(ck)
    m = run.metrics()
    assert [r["epoch"] for r in m] == sorted({r["epoch"] for r in m})
    assert m[-1]["epoch"] == epochs
    assert (path / "analysis" / "measures.jsonl").is_file()


def assert_sweep_complete(sweep_dir: Path, n: int, epochs: int) -> None:
    data = load_sweep(sweep_dir)
    assert len(data["runs"]) == n
    for r in data["runs"]:
        assert r["state"] == "done", r
        assert_run_intact(r["path"], epochs)


# --------------------------------------------------------------------------------------------
# The spec
# --------------------------------------------------------------------------------------------
def test_grid_expands_to_resolved_runs_with_config_ids(tmp_path: Path) -> None:
    spec = load_sweep_spec(sweep_file(tmp_path, sweep_extra="seeds = [3, 5]"))
    assert spec.name == "s" and spec.seeds == (3, 5) and spec.n_runs == 8
    pts = expand(spec)
    assert len(pts) == 8 and len({p.run_id for p in pts}) == 8
    for p in pts:
        assert p.run_id == p.config.run_id()
        assert p.config.train.weight_decay == p.point["train.weight_decay"]
        assert p.config.task.frac_train == p.point["task.frac_train"]
        assert p.config.train.seed == p.seed and p.seed in (3, 5)
        assert p.config.task.p == 11 and p.config.model.d_model == 16  # the shared settings
    assert [p.point for p in pts[:2]] == [pts[0].point] * 2  # seeds vary fastest


def test_nested_grid_seed_axis_and_list_values(tmp_path: Path) -> None:
    f = tmp_path / "n.toml"
    f.write_text('preset = "quick"\n[sweep]\nname = "n"\n[sweep.grid.train]\nseed = [0, 1, 2]\n'
                 '[sweep.grid.model]\nkind = ["mlp"]\nhidden = [[8], [8, 8]]\n')
    spec = load_sweep_spec(f)
    assert spec.seeds == (0, 1, 2)  # a train.seed axis is the seeds, not a drawn axis
    assert [k for k, _ in spec.axes] == ["model.kind", "model.hidden"]
    pts = expand(spec)
    assert len(pts) == 6
    assert {p.config.model.hidden for p in pts} == {(8,), (8, 8)}


@pytest.mark.parametrize(("grid", "sweep_extra", "needle"), [
    ('"train.not_a_field" = [1, 2]', "", "unknown setting train.not_a_field"),
    ('"model.d_modle" = [8]', "", "model.d_modle"),
    ('"bogus.lr" = [1]', "", "section.field"),
    ('"train.lr" = []', "", "no values"),
    ('"train.lr" = 0.1', "", "must be a list"),
    ('"train.lr" = [0.1, 0.1]', "", "twice"),
    ("", "", "empty"),
    ('"task.p" = [11, 1]', "", "task.p=1"),  # an impossible modulus, named with its grid point
    ('"task.name" = ["add", "frob"]', "", "unknown task 'frob'"),
    ('"train.lr" = [0.1]', "seeds = 0", "seeds"),
    ('"train.lr" = [0.1]', 'colour = "red"', "sweep.colour"),
])
def test_bad_grids_are_one_clear_error(tmp_path: Path, grid: str, sweep_extra: str,
                                       needle: str) -> None:
    f = sweep_file(tmp_path, grid=grid, sweep_extra=sweep_extra)
    with pytest.raises(ConfigError) as e:
        expand(load_sweep_spec(f))
    assert needle.lower() in str(e.value).lower(), str(e.value)


def test_max_runs_is_checked_before_resolving(tmp_path: Path) -> None:
    grid = '"train.lr" = [' + ", ".join(str(1e-3 * (i + 1)) for i in range(40)) + "]"
    f = sweep_file(tmp_path, grid=grid, sweep_extra="seeds = 30")
    spec = load_sweep_spec(f)
    assert spec.n_runs == 1200
    with pytest.raises(ConfigError, match="1200 runs, more than --max-runs 1000"):
        expand(spec)
    assert len(expand(spec, max_runs=1200)) == 1200


def test_cli_errors_before_any_run_starts(tmp_path: Path) -> None:
    cases = [
        (sweep_file(tmp_path, name="a", grid='"train.nope" = [1]'), [], "train.nope"),
        (sweep_file(tmp_path, name="b", grid=""), [], "empty"),
        (sweep_file(tmp_path, name="c", sweep_extra="seeds = 3"), ["--max-runs", "5"],
         "more than --max-runs 5"),
        (sweep_file(tmp_path, name="d"), ["--backend", "ray", "--address", "127.0.0.1:9"],
         "cannot reach a Ray cluster at 127.0.0.1:9"),
        (sweep_file(tmp_path, name="e"), ["--backend", "ray", "--address", "nonsense"],
         "host:port"),
        (sweep_file(tmp_path, name="f", probes='["no_such_probe"]'), [],
         "no_such_probe"),
    ]
    for f, extra, needle in cases:
        proc = run_cli("sweep", str(f), "--out-dir", str(tmp_path / "out"), *extra, timeout=120)
        assert_one_line_error(proc, needle)
        assert not (tmp_path / "out" / f.stem).exists(), f"{f.stem}: a run started"


def test_ray_backend_without_ray_says_how_to_install(tmp_path: Path) -> None:
    fake = tmp_path / "noray"
    (fake / "ray").mkdir(parents=True)  # an importable 'ray' that fails like a missing one
    (fake / "ray" / "__init__.py").write_text("raise ImportError('No module named ray')\n")
    proc = run_cli("sweep", str(sweep_file(tmp_path)), "--backend", "ray", "--out-dir",
                   str(tmp_path / "out"), env={"PYTHONPATH": f"{fake}:{ROOT}"})
    assert_one_line_error(proc, "pip install 'mechgrok[ray]'")
    assert not (tmp_path / "out" / "s").exists()


# --------------------------------------------------------------------------------------------
# The local backend, for real
# --------------------------------------------------------------------------------------------
def test_local_sweep_trains_analyses_reports_and_skips_on_relaunch(tmp_path: Path) -> None:
    f = sweep_file(tmp_path, epochs=60)
    out = tmp_path / "ck"
    proc = run_cli("sweep", str(f), "--workers", "2", "--out-dir", str(out), "--reports-dir",
                   str(tmp_path / "rep"))
    assert proc.returncode == 0, proc.stderr
    assert "4 runs: 4 trained now, 0 already done, 0 failed" in proc.stdout
    assert_sweep_complete(out / "s", 4, 60)
    report = tmp_path / "rep" / "sweep-s.html"
    assert report.is_file() and "fig-phase-delay" in report.read_text()
    data = json.loads((out / "s" / SWEEP_FILE).read_text())
    assert [a["key"] for a in data["axes"]] == ["train.weight_decay", "task.frac_train"]
    before = {p: p.stat().st_mtime_ns for p in (out / "s" / RUNS_DIR).rglob("*.safetensors")}

    again = run_cli("sweep", str(f), "--workers", "2", "--out-dir", str(out), "--no-report")
    assert again.returncode == 0, again.stderr
    assert "0 trained now, 4 already done, 0 failed" in again.stdout
    after = {p: p.stat().st_mtime_ns for p in (out / "s" / RUNS_DIR).rglob("*.safetensors")}
    assert before == after  # nothing was retrained or rewritten


def test_sweep_library_api_and_a_changed_grid_reuses_finished_runs(tmp_path: Path) -> None:
    f = sweep_file(tmp_path, grid='"train.weight_decay" = [0.3]')
    seen = []
    res = run_sweep(f, tmp_path, workers=1, on_result=lambda r, i, n: seen.append((i, n)))
    assert not res.failed and len(res.trained) == 1 and seen == [(1, 1)]
    f2 = sweep_file(tmp_path, grid='"train.weight_decay" = [0.3, 1.0]')
    res2 = run_sweep(f2, tmp_path, workers=1)
    assert len(res2.skipped) == 1 and len(res2.trained) == 1
    assert_sweep_complete(tmp_path / "s", 2, 60)


def _training(run_dir: Path) -> int | None:
    """The pid training ``run_dir`` if it is mid-run with two checkpoints written, else None."""
    try:
        man = json.loads((run_dir / "manifest.json").read_text())
        pid = int((run_dir / "run.lock").read_text().strip())
    except (OSError, ValueError):
        return None
    return pid if man.get("status") == "running" and len(man.get("checkpoints", [])) >= 2 \
        else None


def _wait_for_training_pid(runs_dir: Path, timeout: float = 120, *,
                           freeze: bool = False) -> tuple[Path, int]:
    """A run that is training and has written two checkpoints: (its dir, the training pid).

    ``freeze``: the training process is returned stopped (SIGSTOP) and seen mid-run *after* it
    stopped, so a kill sent next lands mid-run however short the run and however loaded the
    machine (a run that finished in between is let go and another one awaited)."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        for d in sorted(runs_dir.glob("*")) if runs_dir.is_dir() else []:
            if (pid := _training(d)) is None:
                continue
            if not freeze:
                return d, pid
            os.kill(pid, signal.SIGSTOP)
            if _training(d) == pid:
                return d, pid
            os.kill(pid, signal.SIGCONT)
        time.sleep(0.05)
    raise AssertionError("no run started training in time")


# Runs that are killed mid-run: long enough (in wall time: minibatches of 8) that the test sees
# one with two checkpoints written before it ends; _wait_for_training_pid(freeze=True) makes
# the kill land mid-run however long the rest of the run would have taken.
SLOW_EPOCHS = 300
SLOW = dict(epochs=SLOW_EPOCHS, every=25, train_extra="batch_size = 8")


def test_killed_worker_is_replaced_and_its_run_resumed(tmp_path: Path) -> None:
    f = sweep_file(tmp_path, **SLOW)
    out = tmp_path / "ck"
    proc = subprocess.Popen([sys.executable, "-m", "mechgrok", "sweep", str(f), "--workers", "2",
                             "--out-dir", str(out), "--no-report"], cwd=ROOT, text=True,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    try:
        victim, pid = _wait_for_training_pid(out / "s" / RUNS_DIR, freeze=True)
        assert pid != proc.pid
        kept = checkpoint_file_ids(victim)
        os.kill(pid, signal.SIGKILL)
        stdout, stderr = proc.communicate(timeout=600)
    finally:
        if proc.poll() is None:
            proc.kill()
    assert proc.returncode == 0, stderr
    assert "4 trained now, 0 already done, 0 failed" in stdout
    assert_sweep_complete(out / "s", 4, SLOW_EPOCHS)
    assert checkpoint_file_ids(victim).items() >= kept.items()  # resumed, not trained again from scratch
    again = run_cli("sweep", str(f), "--out-dir", str(out), "--no-report")
    assert again.returncode == 0 and "4 already done" in again.stdout, again.stderr


def test_sweep_killed_mid_run_then_relaunched_completes(tmp_path: Path) -> None:
    f = sweep_file(tmp_path, **SLOW)
    out = tmp_path / "ck"
    proc = subprocess.Popen([sys.executable, "-m", "mechgrok", "sweep", str(f), "--workers", "2",
                             "--out-dir", str(out), "--no-report"], cwd=ROOT,
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                            start_new_session=True)
    try:
        _wait_for_training_pid(out / "s" / RUNS_DIR)
        os.killpg(proc.pid, signal.SIGKILL)  # the sweep and its workers, as a crash would
        proc.wait(timeout=60)
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)
    partial = [r for r in load_sweep(out / "s")["runs"] if r["state"] != "done"]
    assert partial, "the sweep finished before it was killed; make the runs longer"
    again = run_cli("sweep", str(f), "--workers", "2", "--out-dir", str(out), "--no-report",
                    timeout=600)
    assert again.returncode == 0, again.stderr
    assert_sweep_complete(out / "s", 4, SLOW_EPOCHS)


# --------------------------------------------------------------------------------------------
# The Ray backend, for real: a local Ray instance
# --------------------------------------------------------------------------------------------
@pytest.mark.slow
def test_ray_sweep_survives_a_killed_worker(tmp_path: Path) -> None:
    pytest.importorskip("ray")
    f = sweep_file(tmp_path, **SLOW)
    out = tmp_path / "ck"
    proc = subprocess.Popen([sys.executable, "-m", "mechgrok", "sweep", str(f), "--backend",
                             "ray", "--workers", "2", "--out-dir", str(out), "--reports-dir",
                             str(tmp_path / "rep")], cwd=ROOT, text=True,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                            start_new_session=True)
    try:
        victim, pid = _wait_for_training_pid(out / "s" / RUNS_DIR, timeout=240, freeze=True)
        os.kill(pid, signal.SIGKILL)  # a Ray worker process, mid-run
        stdout, stderr = proc.communicate(timeout=600)
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)
    assert proc.returncode == 0, stderr
    assert "4 trained now, 0 already done, 0 failed" in stdout, stdout
    assert_sweep_complete(out / "s", 4, SLOW_EPOCHS)
    assert (tmp_path / "rep" / "sweep-s.html").is_file()


def test_a_failing_run_is_reported_while_the_others_finish(tmp_path: Path) -> None:
    first = sweep_file(tmp_path, grid='"train.weight_decay" = [0.3]\n"task.frac_train" = [0.5]')
    assert not run_sweep(first, tmp_path / "ck", workers=1).failed
    f = sweep_file(tmp_path)  # the same sweep, grown to 2 × 2
    pts = expand(load_sweep_spec(f))
    bad = tmp_path / "ck" / "s" / RUNS_DIR / pts[1].run_id  # something foreign in its place
    bad.mkdir(parents=True)
    (bad / "config.json").write_text("{}")
    (bad / "manifest.json").write_text("{}")
    proc = run_cli("sweep", str(f), "--workers", "2", "--out-dir", str(tmp_path / "ck"),
                   "--no-report")
    assert_one_line_error(proc, "1 of 4 runs failed", pts[1].run_id, "relaunch")
    assert "2 trained now, 1 already done, 1 failed" in proc.stdout
    runs = {r["run_id"]: r for r in load_sweep(tmp_path / "ck" / "s")["runs"]}
    assert runs[pts[1].run_id]["state"] == "failed"
    assert "not a mechgrok manifest" in runs[pts[1].run_id]["error"]
    for pt in pts[:1] + pts[2:]:
        assert_run_intact(runs[pt.run_id]["path"], 60)


def test_phase_diagram_cells_aggregate_seeds_to_known_values(tmp_path: Path) -> None:
    """Hand-written curves with known memorisation/generalisation epochs → known cells."""
    from mechgrok.report.sweep import SweepData, cells, phase_diagram
    from mechgrok.store import atomic_write_json

    def curve(mem: int | None, gen: int | None, end: int = 1000) -> list[dict]:
        out = []
        for e in range(0, end + 1, 10):
            tr = 1.0 if mem is not None and e >= mem else 0.5
            te = 1.0 if gen is not None and e >= gen else 0.1
            out.append({"epoch": e, "train_acc": tr, "test_acc": te})
        return out

    # (wd, frac) → per seed (memorised, generalised)
    table = {(0.1, 0.3): [(100, None), (100, None)],            # memorisation, no delay
             (0.1, 0.5): [(100, 400), (100, 600)],              # grokking: delays 300, 500
             (1.0, 0.3): [(100, 150), (100, 900)],              # comprehension + grokking
             (1.0, 0.5): [(None, None), (100, 180)]}            # confusion + comprehension
    runs = []
    for (wd, frac), seeds in table.items():
        for seed, (mem, gen) in enumerate(seeds):
            rid = f"r-{wd}-{frac}-{seed}"
            d = tmp_path / "sw" / RUNS_DIR / rid
            d.mkdir(parents=True)
            (d / "metrics.jsonl").write_text("".join(json.dumps(m) + "\n"
                                                     for m in curve(mem, gen)))
            runs.append({"run_id": rid, "point": {"train.weight_decay": wd,
                                                   "task.frac_train": frac},
                         "seed": seed, "state": "done"})
    atomic_write_json(tmp_path / "sw" / SWEEP_FILE, {
        "kind": "mechgrok.sweep", "schema_version": 1, "name": "known", "seeds": [0, 1],
        "axes": [{"key": "train.weight_decay", "values": [0.1, 1.0]},
                 {"key": "task.frac_train", "values": [0.3, 0.5]}], "runs": runs})
    sd = SweepData(tmp_path / "sw")
    cs = cells(sd, ["train.weight_decay", "task.frac_train"])
    m, s, k = cs[("0.1", "0.5")].delay()
    assert (m, k) == (400.0, 2) and s == pytest.approx(141.4213562)  # sample std of 300, 500
    assert cs[("0.1", "0.3")].delay()[2] == 0
    assert cs[("0.1", "0.3")].test_acc() == (pytest.approx(0.1), 0.0)
    assert dict(cs[("1", "0.3")].labels()) == {"comprehension": 1, "grokking": 1}
    assert dict(cs[("1", "0.5")].labels()) == {"confusion": 1, "comprehension": 1}
    fig = phase_diagram(sd, "delay")
    z = fig.data[0].z  # rows: frac_train 0.3, 0.5; columns: weight decay 0.1, 1.0
    assert z[0][0] is None and z[1][0] == 400.0 and z[0][1] == 425.0 and z[1][1] == 80.0
    labels = phase_diagram(sd, "label").data[0]
    assert labels.z[0][0] == 2  # memorisation
    assert "memorisation 2/2" in labels.text[0][0]
    assert phase_diagram(sd, "test_acc", ["task.frac_train"]).data[0].y == (0.55, 0.775)


def test_vmap_seeds_sweep_matches_separate_runs(tmp_path: Path) -> None:
    """--vmap-seeds 3: one job per grid point, three ordinary run directories, the same runs."""
    import torch

    from mechgrok.sweep import plan_jobs as _jobs

    f = sweep_file(tmp_path, grid='"train.weight_decay" = [0.3, 1.0]', sweep_extra="seeds = 3",
                   train_extra='model_dtype = "float64"')
    pts = expand(load_sweep_spec(f))
    jobs = _jobs(pts, tmp_path, None, False, 3)
    assert len(jobs) == 2 and all(j["vmap"] and len(j["runs"]) == 3 for j in jobs)
    vm = run_sweep(f, tmp_path / "vm", workers=2, vmap_seeds=3)
    sep = run_sweep(f, tmp_path / "sep", workers=2)
    assert not vm.failed and not sep.failed and len(vm.trained) == 6
    for pt in pts:
        a, b = Run(vm.sweep_dir / RUNS_DIR / pt.run_id), Run(sep.sweep_dir / RUNS_DIR / pt.run_id)
        assert a.config == b.config and a.status == b.status == "finished"
        assert [c.epoch for c in a.checkpoints()] == [c.epoch for c in b.checkpoints()]
        sa, sb = a.load_state(), b.load_state()
        assert sa.keys() == sb.keys()
        for k in sa:
            torch.testing.assert_close(sa[k], sb[k], atol=1e-9, rtol=0)
    assert_sweep_complete(vm.sweep_dir, 6, 60)
