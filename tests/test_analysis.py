"""mechgrok analyze: incremental measures table, n/a and failures, the probe API, known answers."""

from __future__ import annotations

import json
import math
import shutil
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

import mechgrok.probes as probes_mod
from mechgrok.analysis import (
    analyze,
    load_arrays,
    load_records,
    load_summary,
    measures_table,
    run_probe,
)
from mechgrok.models import build_model
from mechgrok.probes import NotApplicable, Probe, ProbeError, get_probe, register, registry
from mechgrok.probes.base import CheckpointContext, RunContext
from mechgrok.store import Run
from mechgrok.training import train
from tests.conftest import assert_one_line_error, run_cli, tiny_config, tiny_mlp_config

BUILTINS = ["weights", "loss", "fourier_embed", "key_freqs", "restricted", "gini", "clock_pizza",
            "collapse", "irreps", "spectrum2d"]
NOT_ON_ADD = ("irreps", "spectrum2d")  # S_n's irreps and the 2-D spectrum of a task with no group
# add mod 23 that groks in a few hundred epochs (see test_training.test_stop_after_grok)
GROKS = {"task.p": 23, "task.frac_train": 0.8, "train.lr": 1e-2, "model.d_model": 32,
         "model.d_mlp": 64, "train.epochs": 700, "train.checkpoint_every": 50,
         "train.eval_every": 10}


@pytest.fixture(scope="module")
def grokked(tmp_path_factory) -> Path:
    path = tmp_path_factory.mktemp("runs") / "g"
    # stopped once generalised (5 evaluations ≥ 99 %): after that, test accuracy can sag a little
    # by an amount that depends on the CPU's rounding (0.981 at epoch 700 on an AMD EPYC)
    train(tiny_config(**GROKS, **{"train.stop_after_grok": 5}), path, progress=False)
    return path


@pytest.fixture
def run_copy(grokked: Path, tmp_path: Path) -> Path:
    dst = tmp_path / "g"
    shutil.copytree(grokked, dst, ignore=shutil.ignore_patterns("analysis"))
    return dst


def test_builtin_probes_listed() -> None:
    assert list(registry())[: len(BUILTINS)] == BUILTINS
    r = run_cli("probes")
    assert r.returncode == 0
    for name in BUILTINS:
        assert name in r.stdout


def test_analyze_fills_table_and_is_incremental(run_copy: Path) -> None:
    res = analyze(run_copy, progress=False)
    n_ck = len(Run(run_copy).checkpoints())
    assert not res.errors and res.computed == n_ck * len(BUILTINS)  # n/a records included
    rows = measures_table(run_copy)
    assert [r["epoch"] for r in rows] == [c.epoch for c in Run(run_copy).checkpoints()]
    last = rows[-1]
    assert all(last[f"{p}.status"] == "ok" for p in BUILTINS if p not in NOT_ON_ADD)
    assert all(last[f"{p}.status"] == "n/a" for p in NOT_ON_ADD)  # read in Fourier over Z_p
    assert last["loss.test_acc"] >= 0.99 and last["restricted.n_keys"] >= 1
    # restricted loss ≈ full loss once generalised; excluded loss far above it
    assert last["restricted.restricted_loss"] < 1.0
    assert last["restricted.excluded_loss"] > 3 * last["restricted.full_loss"]
    arrays = load_arrays(run_copy, last["epoch"])
    assert arrays["fourier_embed.freq_norms"].shape == (11,)
    assert arrays["key_freqs.neuron_cluster"].shape == (64,)
    summary = load_summary(run_copy)
    assert summary["key_frequencies"]["neurons"] and summary["phases"]["grokking_epoch"] is not None
    # nothing to do the second time
    again = analyze(run_copy, progress=False)
    assert again.computed == 0 and again.reused == n_ck * len(BUILTINS)
    # a new checkpoint only: drop the last record set, analyse again
    recs = load_records(run_copy)
    keep = [r for (e, _), r in recs.items() if e != last["epoch"]]
    (run_copy / "analysis" / "measures.jsonl").write_text(
        "".join(json.dumps(r) + "\n" for r in keep))
    assert analyze(run_copy, progress=False).computed == len(BUILTINS)
    # a new probe only
    res = analyze(run_copy, ["loss", "tests.fixtures.user_probes:MaxNeuron"], progress=False)
    assert res.computed == n_ck and measures_table(run_copy)[0]["max_neuron.max"] > 0
    # --force recomputes
    assert analyze(run_copy, ["weights"], force=True, progress=False).computed == n_ck


def test_torn_last_line_is_tolerated(run_copy: Path) -> None:
    analyze(run_copy, ["weights"], progress=False)
    f = run_copy / "analysis" / "measures.jsonl"
    f.write_text(f.read_text() + '{"epoch": 5, "probe": "wei')
    assert analyze(run_copy, ["weights"], progress=False).computed == 0
    assert f.read_text().endswith("}\n")  # compacted


def test_user_probes_from_module(run_copy: Path) -> None:
    r = run_cli("analyze", str(run_copy), "--probe", "tests.fixtures.user_probes:logit_norm",
                "--probe", "tests.fixtures.user_probes:MaxNeuron")
    assert r.returncode == 0, r.stderr
    rows = measures_table(run_copy)
    assert all(row["logit_norm.status"] == "ok" and row["logit_norm.mean"] > 0 for row in rows)
    assert load_arrays(run_copy, rows[0]["epoch"])["logit_norm.per_class"].shape == (23,)


def test_failing_and_wrong_type_probes_are_recorded(run_copy: Path) -> None:
    r = run_cli("analyze", str(run_copy), "--probe", "tests.fixtures.user_probes:explodes",
                "--probe", "tests.fixtures.user_probes:wrong_type", "--probe", "loss")
    assert r.returncode == 1
    err = [ln for ln in r.stderr.splitlines() if ln.strip()]
    assert len(err) == 2 and "Traceback" not in r.stderr
    assert any("'explodes'" in ln and "ValueError: something broke" in ln for ln in err)
    assert any("'wrong_type'" in ln and "must return a dict" in ln for ln in err)
    rows = measures_table(run_copy)
    assert [row["explodes.status"] for row in rows[:2]] == ["ok", "ok"]  # epochs 0, 50
    assert all(row["explodes.status"] == "error" for row in rows[2:])
    assert all(row["loss.status"] == "ok" for row in rows)  # the others still ran
    assert load_summary(run_copy)["errors"]


def test_corrupt_checkpoint_is_named_and_others_analysed(run_copy: Path) -> None:
    ck = Run(run_copy).checkpoint(100)
    f = run_copy / ck.file
    data = bytearray(f.read_bytes())
    data[-5] ^= 0x55
    f.write_bytes(bytes(data))
    r = run_cli("analyze", str(run_copy), "--probe", "weights", "--probe", "loss")
    assert r.returncode == 1
    assert "epoch_0000100.safetensors fails its SHA-256" in r.stderr
    rows = {row["epoch"]: row for row in measures_table(run_copy)}
    assert rows[100]["weights.status"] == "error"
    assert all(row["weights.status"] == "ok" for e, row in rows.items() if e != 100)


def test_not_applicable_is_said(tmp_path: Path) -> None:
    path = tmp_path / "q"
    train(tiny_config(**{"task.name": "quad1", "train.epochs": 10}), path, progress=False)
    r = run_cli("analyze", str(path))
    assert r.returncode == 0, r.stderr
    assert "n/a: fourier_embed, key_freqs, restricted, gini, clock_pizza: Fourier analysis " \
           "applies to rules in a cyclic group (add, sub, div, mul); quad1 is not a group " \
           "operation on Z_p" in r.stdout
    assert "n/a: irreps: quad1 is not a rule in a group" in r.stdout
    rows = measures_table(path)
    assert all(row["gini.status"] == "n/a" and "gini.embedding" not in row for row in rows)
    assert all(row["weights.status"] == "ok" for row in rows)
    with pytest.raises(NotApplicable, match="quad1"):
        run_probe("gini", path)


def test_bad_runs_are_one_line(tmp_path: Path) -> None:
    assert_one_line_error(run_cli("analyze", str(tmp_path)), "not a mechgrok run")
    assert_one_line_error(run_cli("analyze", str(tmp_path / "nope")), "not found")
    assert_one_line_error(run_cli("analyze", str(tmp_path), "--probe", "nosuch"),
                          "not a mechgrok run")
    path = tmp_path / "r"
    train(tiny_config(**{"train.epochs": 5}), path, progress=False)
    man = json.loads((path / "manifest.json").read_text())
    man["checkpoints"] = []
    (path / "manifest.json").write_text(json.dumps(man))
    assert_one_line_error(run_cli("analyze", str(path)), "no checkpoints")
    assert_one_line_error(run_cli("analyze", str(path), "--probe", "nosuch"), "unknown probe")
    assert_one_line_error(run_cli("analyze", str(path), "--probe", "tests.fixtures.user_probes:weights"),
                          "like a built-in")
    assert_one_line_error(run_cli("analyze", str(path), "--probe", "no_such_module:X"),
                          "cannot import")


def test_registry_refuses_duplicates() -> None:
    with pytest.raises(ProbeError, match="already registered"):
        register(get_probe("loss"))

    class Nameless(Probe):
        pass

    with pytest.raises(ProbeError, match="needs a name"):
        register(Nameless)


def test_entry_point_probes_are_discovered(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """A real installed distribution (a .dist-info on sys.path) with two entry points: one new
    probe, one clashing with a built-in, which is reported and not registered."""
    (tmp_path / "ep_probe_pkg.py").write_text(
        "from mechgrok.probes import probe\n"
        "@probe('ep_probe', description='from an entry point')\n"
        "def ep(ctx):\n    return {'one': 1}\n"
        "@probe('loss')\n"
        "def clash(ctx):\n    return {}\n")
    dist = tmp_path / "ep_probe_pkg-0.1.dist-info"
    dist.mkdir()
    (dist / "METADATA").write_text("Metadata-Version: 2.1\nName: ep-probe-pkg\nVersion: 0.1\n")
    (dist / "entry_points.txt").write_text(
        "[mechgrok.probes]\nep_probe = ep_probe_pkg:ep\nclash = ep_probe_pkg:clash\n")
    monkeypatch.syspath_prepend(str(tmp_path))
    monkeypatch.setattr(probes_mod, "_REGISTRY", {})
    monkeypatch.setattr(probes_mod, "_PROBLEMS", [])
    monkeypatch.setattr(probes_mod, "_LOADED", False)
    reg = registry()
    assert "ep_probe" in reg and not reg["ep_probe"].builtin
    assert reg["loss"].builtin
    assert any("taken by" in p for p in probes_mod.registry_problems())
    sys.modules.pop("ep_probe_pkg", None)


def test_run_probe_matches_the_table(run_copy: Path) -> None:
    analyze(run_copy, ["gini"], progress=False)
    last = measures_table(run_copy)[-1]
    out = run_probe("gini", run_copy)
    assert out["embedding"] == pytest.approx(last["gini.embedding"])
    run = Run(run_copy)
    models = list(run.iter_models())
    assert [ck.epoch for ck, _ in models] == [c.epoch for c in run.checkpoints()]


# --------------------------------------------------------------------------------------------
# Known answers on models built by hand
# --------------------------------------------------------------------------------------------
def _ctx_for(model, cfg) -> CheckpointContext:
    from mechgrok.store import CheckpointInfo
    from mechgrok.tasks import make_dataset

    class _FakeRun:  # just what RunContext reads: a config (not a mock of behaviour under test)
        def __init__(self, config):
            self.config = config

    t = cfg.task
    run_ctx = RunContext(_FakeRun(cfg), make_dataset(t.name, t.p, t.frac_train, t.data_seed))
    return CheckpointContext(run_ctx, CheckpointInfo(0, 0, "", 0, ""), model)


def test_hand_built_frequency_model() -> None:
    """A one-hot MLP whose first layer is pure frequencies {3, 7} with a bias large enough that
    ReLU never clips: every neuron lives in one frequency block, the embedding has exactly those
    frequencies, and the logit map too."""
    p, keys = 23, (3, 7)
    cfg = tiny_mlp_config(**{"task.p": p, "model.embed": "onehot", "model.combine": "sum",
                             "model.hidden": [40]})
    model = build_model(cfg).double()
    x = torch.arange(p, dtype=torch.float64)
    rng = np.random.default_rng(0)
    with torch.no_grad():
        W = model.layers[0].W
        for j in range(40):
            k = keys[j % 2]
            W[:, j] = torch.cos(2 * math.pi * k * x / p + rng.uniform(0, 2 * math.pi))
        model.layers[0].b.fill_(3.0)  # pre-activation ≥ 3 − 2 > 0: ReLU is the identity
        for c in range(p):  # W_U: neuron j writes cos(w_k c + ψ_j) to class c
            model.unembed.W_U[:, c] = torch.tensor(
                [math.cos(2 * math.pi * keys[j % 2] * c / p + j) for j in range(40)])
    ctx = _ctx_for(model, cfg)
    kf = get_probe("key_freqs").compute(ctx)
    assert kf["n_neurons_rule"] == 2 and kf["frac_clustered"] == 1.0
    assert np.flatnonzero(kf["neurons_rule"]).tolist() == [2, 6]  # k − 1
    assert np.flatnonzero(kf["embedding_rule"]).tolist() == [2, 6]
    assert np.flatnonzero(kf["logit_map_rule"]).tolist() == [2, 6]
    assert sorted(set(kf["neuron_cluster"].tolist())) == [3, 7]
    emb = get_probe("fourier_embed").compute(ctx)
    nz = np.flatnonzero(emb["freq_norms"].numpy() > 1e-9).tolist()
    assert nz == [2, 6] and emb["const_norm"] < 1e-9
    g = get_probe("gini").compute(ctx)
    # two equal nonzero entries among K = 11: G = 1 − 2·Σ (c_i/‖c‖₁)(N − i + ½)/N over i = 10, 11
    want = 1 - 2 * (0.5 * (11 - 10 + 0.5) + 0.5 * (11 - 11 + 0.5)) / 11
    assert g["embedding"] == pytest.approx(want, rel=1e-2)


def test_mlp_runs_are_analysed(tmp_path: Path) -> None:
    path = tmp_path / "m"
    train(tiny_mlp_config(**{"train.epochs": 20}), path, progress=False)
    res = analyze(path, progress=False)
    assert not res.errors
    rows = measures_table(path)
    assert rows[-1]["key_freqs.status"] == "ok" and rows[-1]["weights.total"] > 0


def test_killed_analysis_keeps_what_it_computed(run_copy: Path) -> None:
    import os
    import signal
    import subprocess
    import time

    proc = subprocess.Popen(
        [sys.executable, "-m", "mechgrok", "analyze", str(run_copy), "--probe", "weights",
         "--probe", "tests.fixtures.user_probes:slow"],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, env={**os.environ})
    f = run_copy / "analysis" / "measures.jsonl"
    t0 = time.monotonic()
    while time.monotonic() - t0 < 120:
        if f.is_file() and f.read_text().count("\n") >= 6:
            break
        time.sleep(0.05)
    proc.send_signal(signal.SIGKILL)
    proc.communicate()
    done = {k for k, r in load_records(run_copy).items() if r["status"] == "ok"}
    assert 6 <= len(done) < 2 * len(Run(run_copy).checkpoints())
    res = analyze(run_copy, ["weights", "tests.fixtures.user_probes:slow"], progress=False)
    assert res.reused == len(done)  # nothing already computed is computed again
    assert res.computed == 2 * len(Run(run_copy).checkpoints()) - len(done)

