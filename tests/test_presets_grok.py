"""The issue-13 presets ``div`` (Power et al.'s division mod 97, a Nanda-style transformer) and
``s5`` (Chughtai et al.'s MLP on S5): their key settings pinned, and each trained end to end for a
few hundred epochs (not to grokking: that takes minutes; mechgrok/presets.py records the measured
runs)."""

from __future__ import annotations

from pathlib import Path

import pytest

from mechgrok.config import PRESETS, preset
from mechgrok.store import Run
from tests.conftest import run_cli


def test_div_preset_is_power_division_on_a_nanda_transformer() -> None:
    c = preset("div")
    assert (c.task.name, c.task.p, c.task.frac_train) == ("div", 97, 0.4)
    assert c.model.kind == "transformer" and c.model.n_layers == 1
    assert (c.train.optimizer, c.train.weight_decay, c.train.batch_size) == ("adamw", 1.0, None)
    assert c.train.stop_after_grok is not None


def test_s5_preset_is_chughtai_mlp() -> None:
    c = preset("s5")
    assert (c.task.name, c.task.p, c.task.frac_train) == ("s5", None, 0.4)
    assert c.task.n == 120
    m = c.model
    assert m.kind == "mlp" and m.combine == "concat" and m.hidden == (128,) and m.bias is False
    assert m.embed == "learned" and m.d_embed == 256
    assert (c.train.optimizer, c.train.betas, c.train.batch_size) == ("adamw", (0.9, 0.98), None)
    assert c.train.stop_after_grok is not None


@pytest.mark.parametrize(("name", "grok_stop"), [("div", 4_000), ("s5", 10_000)])
def test_checkpoints_dense_enough_for_analysis(name: str, grok_stop: int) -> None:
    """A run that stops where the measured one did (grokking, then the cleanup that
    ``stop_after_grok`` leaves room for) holds 150 to 300 checkpoints, and the epoch cap leaves
    room for a seed that groks a few times later than the measured one."""
    t = preset(name).train
    kept = [e for e in t.checkpoint_epochs() if e <= grok_stop]
    assert 150 <= len(kept) <= 300, len(kept)
    assert t.epochs >= 2 * grok_stop
    assert t.stop_after_grok is not None
    assert t.eval_every * t.stop_after_grok >= 1000  # the cleanup phase after grokking is kept


def test_the_new_presets_follow_the_existing_ones() -> None:
    names = list(PRESETS)
    assert names.index("div") > names.index("quick") and names.index("s5") > names.index("div")


@pytest.mark.slow
@pytest.mark.parametrize(("name", "epochs"), [("div", 300), ("s5", 300)])
def test_preset_trains_a_valid_run_that_memorises(tmp_path: Path, name: str,
                                                  epochs: int) -> None:
    r = run_cli("train", "--preset", name, "--epochs", str(epochs), "--threads", "1",
                "--out-dir", str(tmp_path), "--name", name, cwd=tmp_path, timeout=120)
    assert r.returncode == 0, r.stderr
    run = Run(tmp_path / name)  # reads and verifies config, manifest and checkpoints
    assert run.status == "finished" and run.config.preset == name
    assert run.config.task == preset(name).task and run.config.model == preset(name).model
    assert [c.epoch for c in run.checkpoints()] == run.config.train.checkpoint_epochs()
    m = run.metrics()
    assert m[0]["epoch"] == 0 and m[-1]["epoch"] == epochs
    # memorisation comes first: train accuracy reaches 99 % while test accuracy stays near chance
    assert m[-1]["train_acc"] >= 0.99
    assert m[-1]["test_acc"] < 0.2
