"""Configs: validation messages, round trips, presets, TOML files."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from mechgrok.config import PRESETS, RunConfig, TrainConfig, preset, resolve_config
from mechgrok.errors import ConfigError


@pytest.mark.parametrize("name", list(PRESETS))
def test_presets_round_trip(name: str) -> None:
    cfg = preset(name)
    again = RunConfig.from_dict(json.loads(cfg.to_json()))
    assert again == cfg and again.run_id() == cfg.run_id()


def test_literature_presets() -> None:
    n = preset("nanda")
    assert (n.task.name, n.task.p, n.task.frac_train) == ("add", 113, 0.3)
    assert (n.train.lr, n.train.weight_decay, n.train.betas) == (1e-3, 1.0, (0.9, 0.98))
    assert n.train.batch_size is None and n.model.kind == "transformer"
    assert len(n.train.checkpoint_epochs()) >= 200
    assert preset("zhong-clock").model.attn_alpha == 1.0
    assert preset("zhong-pizza").model.attn_alpha == 0.0
    for z in ("zhong-clock", "zhong-pizza"):
        c = preset(z)
        assert (c.task.p, c.task.frac_train, c.train.weight_decay) == (59, 0.8, 2.0)
    pr = preset("prieto")
    assert pr.model.kind == "mlp" and pr.model.embed == "onehot" and pr.model.bias is False
    assert pr.model.hidden == (200, 200) and pr.train.weight_decay == 0.0 and pr.train.lr == 0.01
    assert (pr.task.p, pr.task.frac_train) == (113, 0.4)
    assert preset("mlp-circle").model.kind == "mlp"


def test_layering_preset_file_overrides(tmp_path: Path) -> None:
    f = tmp_path / "run.toml"
    f.write_text('preset = "nanda"\n[task]\np = 97\n[train]\nlr = 3e-4\nbetas = [0.9, 0.99]\n')
    cfg = resolve_config(file=f, overrides={"train.lr": 1e-2})
    assert cfg.preset == "nanda" and cfg.task.p == 97 and cfg.train.lr == 1e-2
    assert cfg.train.betas == (0.9, 0.99) and cfg.train.weight_decay == 1.0


def test_switching_model_kind_drops_the_other_kinds_settings() -> None:
    cfg = resolve_config("nanda", overrides={"model.kind": "mlp", "model.hidden": [64, 64]})
    assert cfg.model.kind == "mlp" and cfg.model.hidden == (64, 64)


@pytest.mark.parametrize(
    ("over", "msg"),
    [({"train.bogus": 1}, "unknown setting train.bogus"),
     ({"model.d_model": 0}, "model.d_model must be a positive integer"),
     ({"model.attn_alpha": 1.5}, r"attn_alpha must be in \[0, 1\]"),
     ({"train.betas": [0.9]}, "betas must be two numbers"),
     ({"train.loss_dtype": "float16"}, "float32 or float64"),
     ({"train.batch_size": 0}, "batch_size must be a positive integer or none"),
     ({"task.frac_train": 1.0}, "strictly between 0 and 1"),
     ({"task.name": "div", "task.p": 15}, "not prime"),
     ({"model.kind": "rnn"}, "model.kind must be"),
     ({"lr": 1}, "section.field")],
)
def test_invalid_settings_say_what_is_wrong(over: dict, msg: str) -> None:
    with pytest.raises(ConfigError, match=msg):
        resolve_config("quick", overrides=over)


def test_unknown_preset_and_section(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="unknown preset 'foo'"):
        preset("foo")
    f = tmp_path / "bad.toml"
    f.write_text("[optim]\nlr = 1\n")
    with pytest.raises(ConfigError, match="unknown config section optim"):
        resolve_config(file=f)
    f.write_text("[train\nlr = 1\n")
    with pytest.raises(ConfigError, match="cannot parse config file"):
        resolve_config(file=f)


def test_newer_schema_is_refused() -> None:
    d = preset("quick").to_dict()
    d["schema_version"] = 99
    with pytest.raises(ConfigError, match="newer than this mechgrok"):
        RunConfig.from_dict(d)


def test_s5_ignores_modulus() -> None:
    cfg = resolve_config("quick", overrides={"task.name": "s5"})
    assert cfg.task.p is None and cfg.task.n == 120


def test_checkpoint_schedule() -> None:
    t = TrainConfig(epochs=1000, checkpoint_every=100, dense_until=50, dense_every=10)
    assert t.checkpoint_epochs() == [0, 10, 20, 30, 40, *range(100, 1001, 100)]
    assert TrainConfig(epochs=7, checkpoint_every=5, dense_until=0).checkpoint_epochs() == [0, 5, 7]
