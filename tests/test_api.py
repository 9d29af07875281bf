"""`import mechgrok` is the notebook user's API: every public name resolves, lazily, to its one home."""

from __future__ import annotations

import importlib
import subprocess
import sys

import pytest

import mechgrok


def test_import_mechgrok_loads_no_heavy_library() -> None:
    code = ("import sys, mechgrok; mechgrok.__version__; mechgrok.api_module('train'); "
            "print(sorted(m for m in ('torch', 'plotly', 'ray', 'transformer_lens', 'pandas') "
            "if m in sys.modules))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "[]", out.stdout


@pytest.mark.parametrize("name", [n for n in mechgrok.__all__ if n not in ("__version__",
                                                                           "api_module")])
def test_public_name_is_its_homes_own(name: str) -> None:
    """The top-level name is the very object its home module lists in ``__all__``: the API adds
    no second copy of anything."""
    home = importlib.import_module(mechgrok.api_module(name))
    value = getattr(mechgrok, name)
    if name in mechgrok._MODULES:  # a whole module offered as an attribute
        assert value is home
        return
    assert name in home.__all__, f"{home.__name__}.__all__ lacks {name}"
    assert value is getattr(home, name)


def test_unknown_name_is_an_attribute_error() -> None:
    with pytest.raises(AttributeError, match="no attribute 'trian'"):
        mechgrok.trian  # noqa: B018
    with pytest.raises(AttributeError, match="no public name"):
        mechgrok.api_module("trian")


def test_dir_lists_the_api() -> None:
    assert {"train", "analyze", "Run", "write_report", "figures"} <= set(dir(mechgrok))


def test_notebook_flow_through_the_top_level(tmp_path) -> None:
    """Train → analyse → measures → a figure → a report, using only ``mechgrok.<name>``."""
    import mechgrok as mg

    cfg = mg.resolve_config("quick", overrides={
        "task.p": 11, "task.frac_train": 0.5, "model.d_model": 16, "model.n_heads": 2,
        "model.d_head": 8, "model.d_mlp": 32, "train.epochs": 20, "train.eval_every": 5,
        "train.checkpoint_every": 10, "train.dense_until": 0, "train.threads": 1})
    res = mg.train(cfg, tmp_path / "run", progress=False)
    run = mg.Run(res.path)
    assert run.status == res.status == "finished"
    out = mg.analyze(run, ["loss", "fourier_embed"])
    assert not out.errors
    df = mg.measures_dataframe(run)
    assert list(df["epoch"]) == [c.epoch for c in run.checkpoints()]
    assert {c.split(".")[0] for c in df.columns if "." in c} == {"loss", "fourier_embed"}
    assert mg.figures.loss_curves(run).data
    path = mg.write_report(run, tmp_path / "r.html")
    assert path.read_text().startswith("<!DOCTYPE html>")
