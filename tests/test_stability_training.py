"""The stability options inside mechgrok: trainer, CLI, resume, and the collapse probe."""

from __future__ import annotations

import math
from pathlib import Path

import pytest
import torch
import torch.nn.functional as F

from mechgrok.analysis import analyze, load_arrays, load_summary, measures_table
from mechgrok.probes import collapse as C
from mechgrok.store import Run
from mechgrok.training import resume, train
from mechgrok.training.loop import TrainingInterrupted
from tests.conftest import assert_one_line_error, run_cli, tiny_config, tiny_mlp_config

OPTIONS = {
    "stablemax": {"train.loss": "stablemax"},
    "orthograd": {"train.orthograd": True, "train.weight_decay": 0.0},
    "grokfast-ema": {"train.grokfast": "ema", "train.grokfast_alpha": 0.9},
    "grokfast-ma": {"train.grokfast": "ma", "train.grokfast_window": 5},
    "all": {"train.loss": "stablemax", "train.orthograd": True, "train.grokfast": "ma",
            "train.grokfast_window": 4, "train.model_dtype": "float64"},
}


def _ckpts(path: Path) -> dict[str, bytes]:
    return {p.name: p.read_bytes() for p in sorted((path / "ckpt").iterdir())}


@pytest.mark.parametrize("name", list(OPTIONS))
def test_option_trains_and_resumes_bit_identically(name: str, tmp_path: Path) -> None:
    cfg = tiny_config(**{"train.epochs": 40, "train.batch_size": 16, **OPTIONS[name]})
    ref = train(cfg, tmp_path / "ref", progress=False)
    m = Run(tmp_path / "ref").metrics()
    assert ref.status == "finished" and all(math.isfinite(r["train_loss"]) for r in m)
    assert m[-1]["train_loss"] < m[0]["train_loss"]  # it learns

    def stop_at_20(metrics: dict) -> None:
        if metrics["epoch"] == 20:
            raise KeyboardInterrupt

    with pytest.raises(TrainingInterrupted):
        train(cfg, tmp_path / "cut", progress=False, on_eval=stop_at_20)
    resume(tmp_path / "cut", progress=False)
    # filter and optimiser state were saved with the checkpoint: same bytes at the end
    assert _ckpts(tmp_path / "cut") == _ckpts(tmp_path / "ref")


def test_options_change_the_trajectory(tmp_path: Path) -> None:
    base = tiny_config(**{"train.epochs": 10})
    train(base, tmp_path / "base", progress=False)
    finals = {}
    for name, over in OPTIONS.items():
        cfg = tiny_config(**{"train.epochs": 10, **over})
        train(cfg, tmp_path / name, progress=False)
        finals[name] = Run(tmp_path / name).load_state()
    ref = Run(tmp_path / "base").load_state()
    for name, st in finals.items():
        assert any(not torch.equal(st[k].double(), ref[k].double()) for k in ref), name


@pytest.mark.parametrize("args, needle", [
    (["--grokfast", "ma", "--grokfast-window", "0"], "grokfast_window"),
    (["--grokfast", "ema", "--grokfast-alpha", "1"], "(0, 1)"),
    (["--grokfast", "ema", "--grokfast-alpha", "0"], "(0, 1)"),
    (["--loss", "hinge"], "invalid choice"),
    (["--set", "train.loss=\"focal\""], "train.loss"),
    (["--set", "train.grokfast=\"sma\""], "train.grokfast"),
])
def test_bad_stability_settings_are_one_line(args, needle, tmp_path: Path) -> None:
    r = run_cli("train", *args, "--out-dir", str(tmp_path))
    assert_one_line_error(r, needle)
    assert not any(tmp_path.iterdir())  # refused before any run started


@pytest.fixture(scope="module")
def collapsed_run(tmp_path_factory) -> Path:
    """A bias-free one-hot MLP that overfits fast in float32 without weight decay."""
    path = tmp_path_factory.mktemp("collapse") / "r"
    cfg = tiny_mlp_config(**{"model.embed": "onehot", "model.hidden": [64, 64],
                             "model.bias": False, "task.p": 23, "task.frac_train": 0.4,
                             "train.lr": 0.01, "train.weight_decay": 0.0,
                             "train.loss_dtype": "float32", "train.epochs": 300,
                             "train.warmup_steps": 0, "train.checkpoint_every": 100})
    train(cfg, path, progress=False)
    analyze(path, ["loss", "collapse"], progress=False)
    return path


def test_collapse_probe_matches_its_definition(collapsed_run: Path) -> None:
    run = Run(collapsed_run)
    rows = measures_table(run)
    last = rows[-1]
    model = run.load_model()
    data = run.dataset()
    toks = torch.cat([torch.from_numpy(data.pairs),
                      torch.full((len(data.pairs), 1), data.eq_token)], 1)
    tr = torch.as_tensor(data.train_idx)
    with torch.no_grad():
        logits = model.last_logits(toks)[tr]
    labels = torch.from_numpy(data.labels)[tr]
    for dt in ("float32", "float64"):
        assert last[f"collapse.sc_fraction_{dt}"] == C.sc_fraction(logits, dt)
        assert last[f"collapse.zero_loss_fraction_{dt}"] == C.zero_loss_fraction(logits, labels, dt)
    assert last["collapse.sc_fraction_float32"] >= last["collapse.sc_fraction_float64"]
    gaps = load_arrays(run, last["epoch"])["collapse.gaps"]
    assert gaps.shape == (len(tr),)
    assert last["collapse.gap_median"] == pytest.approx(float(torch.tensor(gaps).double()
                                                              .median()), rel=1e-5, abs=1e-4)
    # NLM: cosine between −∇L (the run's loss, in its loss dtype) and θ, by hand
    model.zero_grad()
    F.cross_entropy(model.forward_last(toks[tr]).float(), labels).backward()
    ps = [p for p in model.parameters()]
    g = torch.cat([p.grad.reshape(-1).double() for p in ps])
    w = torch.cat([p.detach().reshape(-1).double() for p in ps])
    assert last["collapse.nlm_cosine"] == pytest.approx(float(-g @ w / (g.norm() * w.norm())),
                                                        abs=1e-6)
    names = [k for k in last if k.startswith("collapse.nlm_cosine/")]
    assert len(names) == len(ps)


def test_collapse_summary_and_report(collapsed_run: Path, tmp_path: Path) -> None:
    s = load_summary(collapsed_run)["collapse"]
    assert s["epoch"] == 300 and s["status"]
    assert 0 <= s["sc_fraction_float64"] <= s["sc_fraction_float32"] <= 1
    from mechgrok.report import write_report

    text = write_report(collapsed_run, tmp_path / "r.html").read_text()
    assert 'id="fig-collapse"' in text and 'id="fig-nlm"' in text and "softmax collapse" in text
