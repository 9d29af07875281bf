"""train_seeds: K seeds as one batched model, against separate runs; format, resume, skips.

Measured closeness (tiny configs, one thread, 40 epochs; max abs difference over every tensor
of every checkpoint of every seed, vmapped vs ``loop.train`` of the same seed):

* float64 model and loss: 2.2e-16 (transformer, full batch), 4.4e-16 (MLP, minibatches of 8),
  3.3e-16 (⊥Grad), 3.2e-15 (Grokfast EMA), 0 (MLP, frozen biases, Grokfast MA, minibatches of
  16); accuracies identical, losses within 4.4e-16.
* float32 model (float64 loss): 0 (transformer, full batch: the same kernels' results bit for
  bit) and 2.4e-7 (MLP, minibatches of 8); the test asserts 1e-4.
"""

from __future__ import annotations

import dataclasses
import json
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch

from mechgrok.analysis import analyze
from mechgrok.config import RunConfig
from mechgrok.errors import ConfigError, RunDirError
from mechgrok.probes import registry
from mechgrok.store import MANIFEST_FILE, Run, read_verified
from mechgrok.training import loop, resume, train
from mechgrok.training.vmap import orthogonalize_stacked_, train_seeds
from tests.conftest import ROOT, tiny_config, tiny_mlp_config

F64 = {"train.model_dtype": "float64", "train.loss_dtype": "float64", "train.epochs": 40}
SEEDS = [0, 1, 2]


def _seed(cfg: RunConfig, s: int) -> RunConfig:
    return dataclasses.replace(cfg, train=cfg.train.replace(seed=s))


def _separate(cfg: RunConfig, seeds: list[int], root: Path) -> list[Path]:
    out = []
    for s in seeds:
        train(_seed(cfg, s), root / f"sep{s}", progress=False)
        out.append(root / f"sep{s}")
    return out


def _vmapped(cfg: RunConfig, seeds: list[int], root: Path, prefix: str = "vm") -> list[Path]:
    paths = [root / f"{prefix}{s}" for s in seeds]
    res = train_seeds(cfg, seeds, paths, progress=False)
    assert [r.path for r in res] == paths
    return paths


def _max_diff(a: Path, b: Path) -> float:
    """Max abs difference over every tensor of every checkpoint (same epochs required)."""
    ra, rb = Run(a), Run(b)
    assert [(c.epoch, c.step) for c in ra.checkpoints()] == \
        [(c.epoch, c.step) for c in rb.checkpoints()]
    worst = 0.0
    for ca, cb in zip(ra.checkpoints(), rb.checkpoints()):
        sa, sb = ra.load_state(ca), rb.load_state(cb)
        assert sa.keys() == sb.keys()
        for k in sa:
            assert sa[k].dtype == sb[k].dtype and sa[k].shape == sb[k].shape
            worst = max(worst, float((sa[k].double() - sb[k].double()).abs().max()))
    return worst


def _compare_metrics(a: Path, b: Path, loss_tol: float) -> None:
    """Same evaluations; accuracies equal, losses and weight norms within ``loss_tol`` (a
    non-finite value must be matched by the same non-finite value)."""
    ma, mb = Run(a).metrics(), Run(b).metrics()
    assert [m["epoch"] for m in ma] == [m["epoch"] for m in mb]
    for x, y in zip(ma, mb):
        assert x.keys() == y.keys()
        assert (x["step"], x["train_acc"], x["test_acc"], x["lr"]) == \
            (y["step"], y["train_acc"], y["test_acc"], y["lr"])
        for k in ("train_loss", "test_loss", "sum_sq_weights"):
            assert x[k] == pytest.approx(y[k], rel=loss_tol, abs=loss_tol, nan_ok=True), k


def _resume_file(path: Path) -> tuple[dict[str, torch.Tensor], dict]:
    r = json.loads((path / MANIFEST_FILE).read_text())["resume"]
    tensors, meta = read_verified(path / r["file"], r["size"], r["sha256"])
    return tensors, json.loads(meta["resume"])


# --------------------------------------------------------------------------------------------
# 1, 2: closeness to separate runs
# --------------------------------------------------------------------------------------------
@pytest.mark.parametrize("kind,over", [
    ("transformer", {}),
    ("mlp", {"train.batch_size": 8}),
    ("transformer", {"train.orthograd": True}),
    ("transformer", {"train.grokfast": "ema"}),
], ids=["transformer", "mlp-minibatch", "orthograd", "grokfast-ema"])
def test_float64_equals_separate_runs(kind: str, over: dict, tmp_path: Path) -> None:
    make = tiny_config if kind == "transformer" else tiny_mlp_config
    cfg = make(**F64, **over)
    vm = _vmapped(cfg, SEEDS, tmp_path)
    sep = _separate(cfg, SEEDS, tmp_path)
    for a, b in zip(vm, sep):
        assert _max_diff(a, b) <= 1e-9
        _compare_metrics(a, b, 1e-9)
        assert Run(a).status == Run(b).status == "finished"


@pytest.mark.parametrize("make,over", [(tiny_config, {}),
                                       (tiny_mlp_config, {"train.batch_size": 8})],
                         ids=["transformer", "mlp-minibatch"])
def test_float32_close_to_separate_runs(make, over: dict, tmp_path: Path) -> None:
    # measured: 0 (transformer) and 2.4e-7 (MLP with minibatches) after 40 epochs
    cfg = make(**{"train.epochs": 40}, **over)
    vm = _vmapped(cfg, SEEDS, tmp_path)
    sep = _separate(cfg, SEEDS, tmp_path)
    for a, b in zip(vm, sep):
        assert _max_diff(a, b) <= 1e-4
        _compare_metrics(a, b, 1e-4)


def test_freeze_biases_and_grokfast_ma(tmp_path: Path) -> None:
    cfg = tiny_mlp_config(**F64, **{"train.freeze_biases": True, "train.grokfast": "ma",
                                    "train.grokfast_window": 5, "train.batch_size": 16})
    vm = _vmapped(cfg, [3, 4], tmp_path)
    sep = _separate(cfg, [3, 4], tmp_path)
    for a, b in zip(vm, sep):
        assert _max_diff(a, b) <= 1e-9
        state = Run(a).load_state()
        assert (state["layers.0.b"] == 0).all() and (state["unembed.b_U"] == 0).all()


def test_orthogonalize_stacked_matches_per_slice() -> None:
    from mechgrok.stability import orthogonalize_

    gen = torch.Generator().manual_seed(0)
    w = torch.randn(4, 3, 5, generator=gen, dtype=torch.float64)
    w[2] = 0  # left unchanged where w = 0
    g = torch.randn(4, 3, 5, generator=gen, dtype=torch.float64)
    p = w.clone().requires_grad_()
    p.grad = g.clone()
    orthogonalize_stacked_([p])
    for k in range(4):
        q = w[k].clone().requires_grad_()
        q.grad = g[k].clone()
        orthogonalize_([q])
        torch.testing.assert_close(p.grad[k], q.grad, rtol=0, atol=1e-14)
    assert torch.equal(p.grad[2], g[2])


# --------------------------------------------------------------------------------------------
# 3: the run directory's format
# --------------------------------------------------------------------------------------------
@pytest.mark.parametrize("over", [
    {"train.grokfast": "ema"},
    {"train.grokfast": "ma", "train.grokfast_window": 3, "train.optimizer": "sgd",
     "train.momentum": 0.9, "train.freeze_biases": True},
], ids=["adamw-ema", "sgd-ma-frozen"])
def test_format_equals_a_normal_run(over: dict, tmp_path: Path) -> None:
    cfg = tiny_config(**{"train.epochs": 20, "train.batch_size": 16}, **over)
    (vm,) = _vmapped(cfg, [7], tmp_path)
    (sep,) = _separate(cfg, [7], tmp_path)
    assert json.loads((vm / "config.json").read_text()) == \
        json.loads((sep / "config.json").read_text())
    mv = json.loads((vm / MANIFEST_FILE).read_text())
    ms = json.loads((sep / MANIFEST_FILE).read_text())
    assert mv.keys() == ms.keys() and mv["resume"].keys() == ms["resume"].keys()
    assert (mv["status"], mv["epochs_done"], mv["split_sha256"]) == \
        (ms["status"], ms["epochs_done"], ms["split_sha256"])
    assert sorted(p.name for p in vm.iterdir()) == sorted(p.name for p in sep.iterdir())
    assert sorted(p.name for p in (vm / "ckpt").iterdir()) == \
        sorted(p.name for p in (sep / "ckpt").iterdir())
    rv, metav = _resume_file(vm)
    rs, metas = _resume_file(sep)
    assert {k: (v.dtype, v.shape) for k, v in rv.items()} == \
        {k: (v.dtype, v.shape) for k, v in rs.items()}
    assert torch.equal(rv["rng.shuffle"], rs["rng.shuffle"])  # the same batch orders
    assert metav.keys() == metas.keys()
    assert {k: v for k, v in metav.items() if k != "elapsed_s"} == \
        {k: v for k, v in metas.items() if k != "elapsed_s"}
    run = Run(vm)
    for ck in run.checkpoints():
        model = run.load_model(ck)
        assert model.n_classes == 11
    assert "loss" in registry()
    res = analyze(vm, ["loss"], progress=False)
    assert not res.errors and res.computed == len(run.checkpoints())


# --------------------------------------------------------------------------------------------
# 4: resume
# --------------------------------------------------------------------------------------------
LONG = {"train.epochs": 200, "train.batch_size": 16, "train.checkpoint_every": 20,
        "train.eval_every": 20}


def _manifest(path: Path) -> dict:
    try:
        return json.loads((path / MANIFEST_FILE).read_text())
    except (OSError, ValueError):
        return {}


def _final_states(paths: list[Path]) -> list[dict[str, torch.Tensor]]:
    return [Run(p).load_state() for p in paths]


def test_sigkill_then_train_seeds_again_resumes(tmp_path: Path) -> None:
    cfg = tiny_config(**LONG)
    (tmp_path / "cfg.json").write_text(json.dumps(cfg.to_dict()))
    paths = [tmp_path / f"k{s}" for s in SEEDS]
    code = (
        "import json, sys\n"
        "from mechgrok.config import RunConfig\n"
        "from mechgrok.training.vmap import train_seeds\n"
        "cfg = RunConfig.from_dict(json.loads(open(sys.argv[1]).read()))\n"
        "train_seeds(cfg, [0, 1, 2], sys.argv[2:], progress=False)\n"
    )
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    proc = subprocess.Popen([sys.executable, "-c", code, str(tmp_path / "cfg.json"),
                             *map(str, paths)], env=env, stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True)
    try:
        t0 = time.monotonic()
        while min(len(_manifest(p).get("checkpoints", [])) for p in paths) < 4:
            if proc.poll() is not None:
                raise AssertionError(f"training ended early: {proc.communicate()}")
            assert time.monotonic() - t0 < 120, "no checkpoints appeared"
            time.sleep(0.01)
        proc.send_signal(signal.SIGKILL)
    finally:
        proc.kill()
        proc.communicate()
    last = [_manifest(p)["checkpoints"][-1]["epoch"] for p in paths]
    assert all(_manifest(p)["status"] == "running" for p in paths) and max(last) < 200
    # one seed continued by the normal trainer, from a copy
    shutil.copytree(paths[1], tmp_path / "alone")
    # the rest: the same call again
    res = train_seeds(cfg, SEEDS, paths, progress=False)
    assert [r.status for r in res] == ["finished"] * 3 and [r.epochs for r in res] == [200] * 3
    ref = _vmapped(cfg, SEEDS, tmp_path, prefix="ref")
    for got, want, p, r in zip(_final_states(paths), _final_states(ref), paths, ref):
        if len(set(last)) == 1:
            # one group of the same K as the reference, from exactly restored parameters,
            # optimiser state and shuffling generators: the same kernels on the same numbers
            assert all(torch.equal(got[k], want[k]) for k in got)
            assert Run(p).metrics()[-1]["test_loss"] == Run(r).metrics()[-1]["test_loss"]
        else:  # the kill fell between two seeds' checkpoints: two groups of other K
            for k in got:
                torch.testing.assert_close(got[k], want[k], rtol=0, atol=1e-4)
        assert [m["epoch"] for m in Run(p).metrics()] == [m["epoch"] for m in Run(r).metrics()]
        assert [c.epoch for c in Run(p).checkpoints()] == [c.epoch for c in Run(r).checkpoints()]
    alone = resume(tmp_path / "alone", progress=False)
    assert alone.status == "finished" and alone.epochs == 200
    a, b = Run(tmp_path / "alone").load_state(), Run(ref[1]).load_state()
    for k in a:
        torch.testing.assert_close(a[k], b[k], rtol=0, atol=1e-4)


@pytest.mark.parametrize("over", [
    {"train.grokfast": "ema", "train.orthograd": True},
    {"train.grokfast": "ma", "train.grokfast_window": 4, "train.freeze_biases": True},
], ids=["ema-orthograd", "ma-frozen"])
def test_batched_resume_is_bit_identical(over: dict, tmp_path: Path,
                                         monkeypatch: pytest.MonkeyPatch) -> None:
    # minibatches, so the restored shuffling generators matter; the same K before and after
    cfg = tiny_mlp_config(**{"train.epochs": 30, "train.batch_size": 16}, **over)
    ref = _vmapped(cfg, [0, 1], tmp_path, prefix="ref")
    paths = [tmp_path / "r0", tmp_path / "r1"]
    with monkeypatch.context() as m:
        _interrupt_after(m, 4 * 17)  # 4 steps per epoch: interrupted in epoch 18
        with pytest.raises(loop.TrainingInterrupted):
            train_seeds(cfg, [0, 1], paths, progress=False)
    assert [Run(p).checkpoints()[-1].epoch for p in paths] == [10, 10]
    res = train_seeds(cfg, [0, 1], paths, progress=False)
    assert [(r.status, r.epochs) for r in res] == [("finished", 30)] * 2
    for p, r in zip(paths, ref):
        assert _max_diff(p, r) == 0.0
        strip = [{k: v for k, v in m.items() if k != "elapsed_s"} for m in Run(p).metrics()]
        assert strip == [{k: v for k, v in m.items() if k != "elapsed_s"}
                         for m in Run(r).metrics()]
        got, want = _resume_file(p)[0], _resume_file(r)[0]
        assert got.keys() == want.keys()
        assert all(torch.equal(got[k], want[k]) for k in got)


def _interrupt_after(monkeypatch: pytest.MonkeyPatch, n_steps: int) -> None:
    """Make the n-th optimiser step of train_seeds raise KeyboardInterrupt (as Ctrl-C would)."""
    import mechgrok.training.vmap as vm

    calls = {"n": 0}
    real = vm.set_lr

    def set_lr(opt, lr):
        calls["n"] += 1
        if calls["n"] > n_steps:
            raise KeyboardInterrupt
        real(opt, lr)

    monkeypatch.setattr(vm, "set_lr", set_lr)


def test_interrupt_then_mixed_resume(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    cfg = tiny_config(**{"train.epochs": 60})
    ref = _vmapped(cfg, [0, 1, 2, 3], tmp_path, prefix="ref")
    with monkeypatch.context() as m:
        _interrupt_after(m, 25)
        with pytest.raises(loop.TrainingInterrupted, match="train_seeds"):
            train_seeds(cfg, [1, 2], [tmp_path / "r1", tmp_path / "r2"], progress=False)
    with monkeypatch.context() as m:
        _interrupt_after(m, 45)
        with pytest.raises(loop.TrainingInterrupted):
            train_seeds(cfg, [3], [tmp_path / "r3"], progress=False)
    for s, ep in ((1, 20), (2, 20), (3, 40)):
        assert Run(tmp_path / f"r{s}").status == "interrupted"
        assert Run(tmp_path / f"r{s}").checkpoints()[-1].epoch == ep
    train_seeds(cfg, [0], [tmp_path / "r0"], progress=False)  # finished already
    paths = [tmp_path / f"r{s}" for s in (0, 1, 2, 3, 4)]
    res = train_seeds(cfg, [0, 1, 2, 3, 4], paths, progress=False)  # + a new one
    assert [r.status for r in res] == ["already-finished", "finished", "finished", "finished",
                                       "finished"]
    assert all(r.epochs == 60 for r in res)
    for s in (0, 1, 2, 3):
        assert _max_diff(paths[s], ref[s]) <= 1e-4
        assert [m["epoch"] for m in Run(paths[s]).metrics()] == \
            [m["epoch"] for m in Run(ref[s]).metrics()]
    assert Run(paths[4]).config.train.seed == 4


# --------------------------------------------------------------------------------------------
# 5: skips, refusals, stopping per seed
# --------------------------------------------------------------------------------------------
def test_refusals(tmp_path: Path) -> None:
    cfg = tiny_config(**{"train.epochs": 5})
    for seeds, paths, msg in [([], [], "at least one seed"),
                              ([1, 1], [tmp_path / "a", tmp_path / "b"], "distinct"),
                              ([1, 2], [tmp_path / "a"], "one path per seed"),
                              ([1, 2], [tmp_path / "a", tmp_path / "a"], "distinct path"),
                              ([1.5], [tmp_path / "a"], "integers")]:
        with pytest.raises(ConfigError, match=msg) as e:
            train_seeds(cfg, seeds, paths, progress=False)
        assert "\n" not in str(e.value)
    assert not (tmp_path / "a").exists()
    train_seeds(cfg, [1], [tmp_path / "a"], progress=False)
    other = tiny_config(**{"train.epochs": 5, "train.lr": 1e-2})
    with pytest.raises(RunDirError, match="another config") as e:
        train_seeds(other, [2, 1], [tmp_path / "b", tmp_path / "a"], progress=False)
    assert "\n" not in str(e.value) and "train.lr" in str(e.value)
    assert not (tmp_path / "b").exists()  # refused before anything was trained
    with pytest.raises(RunDirError, match="another config"):  # the seed is part of the config
        train_seeds(cfg, [2], [tmp_path / "a"], progress=False)
    (tmp_path / "junk").mkdir()
    (tmp_path / "junk" / "x.txt").write_text("x")
    with pytest.raises(RunDirError, match="not a mechgrok run"):
        train_seeds(cfg, [3], [tmp_path / "junk"], progress=False)


def test_skips_finished_runs(tmp_path: Path) -> None:
    cfg = tiny_config(**{"train.epochs": 10})
    paths = _vmapped(cfg, [0, 1], tmp_path)
    before = [(p / MANIFEST_FILE).read_bytes() for p in paths]
    res = train_seeds(cfg, [0, 1], paths, progress=False)
    assert [r.status for r in res] == ["already-finished"] * 2
    assert [r.epochs for r in res] == [10, 10] and res[0].final["epoch"] == 10
    assert [(p / MANIFEST_FILE).read_bytes() for p in paths] == before


def test_stop_after_grok_per_seed(tmp_path: Path) -> None:
    # seed 0 groks at epoch 530 (3 evaluations ≥ 99 % in a row), seeds 1 and 2 not by 600
    cfg = tiny_config(**{"train.epochs": 600, "train.stop_after_grok": 3,
                         "train.eval_every": 10, "train.checkpoint_every": 500, "task.p": 23,
                         "task.frac_train": 0.8, "train.lr": 1e-2, "model.d_model": 32,
                         "model.d_mlp": 64, "train.model_dtype": "float64"})
    seeds = [0, 1, 2]
    res = train_seeds(cfg, seeds, [tmp_path / f"g{s}" for s in seeds], progress=False)
    assert [(r.status, r.epochs) for r in res] == [("grokked", 530), ("finished", 600),
                                                   ("finished", 600)]
    run = Run(tmp_path / "g0")
    assert run.status == "grokked" and run.manifest["epochs_done"] == 530
    assert run.checkpoints()[-1].epoch == 530
    assert run.metrics()[-1]["epoch"] == 530  # nothing written after it stopped
    assert res[0].final == run.metrics()[-1]
    assert all(m["test_acc"] >= 0.99 for m in run.metrics()[-3:])
    sep = train(_seed(cfg, 0), tmp_path / "s0", progress=False)
    assert (sep.status, sep.epochs) == ("grokked", 530)
    assert _max_diff(tmp_path / "g0", tmp_path / "s0") <= 1e-9
    for s in (1, 2):
        r = Run(tmp_path / f"g{s}")
        assert r.status == "finished" and r.metrics()[-1]["epoch"] == 600
        assert r.checkpoints()[-1].epoch == 600
    assert resume(tmp_path / "g0", progress=False).status == "already-finished"


def test_divergence_per_seed(tmp_path: Path) -> None:
    # SGD at lr 2: seeds 2 and 3 diverge at epoch 15, seeds 0 and 1 at 20, as separate runs do;
    # the non-finite slices of the first two leave the others' training untouched
    cfg = tiny_config(**{"train.epochs": 30, "train.lr": 2.0, "train.optimizer": "sgd",
                         "train.weight_decay": 0.0, "train.loss_dtype": "float32"})
    seeds = [0, 1, 2, 3]
    res = train_seeds(cfg, seeds, [tmp_path / f"d{s}" for s in seeds], progress=False)
    sep = [train(_seed(cfg, s), tmp_path / f"s{s}", progress=False) for s in seeds]
    assert [(r.status, r.epochs) for r in res] == [(r.status, r.epochs) for r in sep]
    assert len({r.epochs for r in res}) == 2 and {r.status for r in res} == {"diverged"}
    for s, r in zip(seeds, res):
        run = Run(tmp_path / f"d{s}")
        assert run.status == "diverged" and run.checkpoints()[-1].epoch == r.epochs
        assert run.metrics()[-1]["epoch"] == r.epochs
        _compare_metrics(tmp_path / f"d{s}", tmp_path / f"s{s}", 1e-4)
