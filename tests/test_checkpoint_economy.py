"""Checkpoints that fit a sweep: the ``log`` schedule and reduced-precision storage
(``train.checkpoint_schedule``, ``train.checkpoint_precision``)."""

from __future__ import annotations

import dataclasses
import hashlib
import json
from pathlib import Path

import pytest
import torch

from mechgrok.analysis import analyze, measures_table
from mechgrok.config import ADDED_FIELDS, RunConfig, log_checkpoint_epochs, resolve_config
from mechgrok.store import MANIFEST_FILE, Run
from mechgrok.training import resume, train
from mechgrok.training.loop import TrainingInterrupted
from tests.conftest import tiny_config


def _stored(run: Path, epoch: int) -> dict[str, torch.Tensor]:
    from safetensors.torch import load_file

    return load_file(str(run / "ckpt" / f"epoch_{epoch:07d}.safetensors"))


@pytest.fixture(scope="module")
def pair(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    """The same tiny run trained twice: exact checkpoints, and float16 intermediate ones."""
    root = tmp_path_factory.mktemp("econ")
    exact, half = root / "exact", root / "half"
    train(tiny_config(), exact, progress=False)
    train(tiny_config(**{"train.checkpoint_precision": "float16"}), half, progress=False)
    return exact, half


def test_reduced_precision_rounds_only_the_intermediate_checkpoints(pair: tuple[Path, Path]
                                                                   ) -> None:
    exact, half = pair
    a, b = Run(exact), Run(half)
    assert [c.epoch for c in a.checkpoints()] == [c.epoch for c in b.checkpoints()]
    for ca, cb in zip(a.checkpoints(), b.checkpoints()):
        sa, sb = _stored(exact, ca.epoch), _stored(half, cb.epoch)
        if ca.epoch in (0, 60):  # first and last: the model's own precision, the same bytes
            assert cb.precision == "exact" and ca.sha256 == cb.sha256
            continue
        assert cb.precision == "float16" and cb.size < 0.6 * ca.size
        for k in sa:  # storage only: training was the same, the stored values are rounded
            assert sb[k].dtype == torch.float16
            assert torch.equal(sb[k], sa[k].to(torch.float16)), k
        model = b.load_model(cb.epoch)  # loads back into the float32 model
        assert next(model.parameters()).dtype == torch.float32
    drop = ("elapsed_s",)  # wall-clock time differs; everything measured is the same
    assert [{k: v for k, v in m.items() if k not in drop} for m in a.metrics()] == \
        [{k: v for k, v in m.items() if k not in drop} for m in b.metrics()]
    # resume holds the exact weights beside a rounded checkpoint: not needed at the end
    man = json.loads((half / MANIFEST_FILE).read_text())
    assert man["checkpoints"][3]["precision"] == "float16" and "precision" not in \
        man["checkpoints"][-1]


def test_analysis_reads_rounded_checkpoints(pair: tuple[Path, Path]) -> None:
    _, half = pair
    res = analyze(half, ["loss", "key_freqs", "gini"], progress=False)
    assert not res.errors
    assert len(measures_table(half)) == 7


def test_resume_from_a_rounded_checkpoint_is_exact(pair: tuple[Path, Path], tmp_path: Path
                                                   ) -> None:
    _, half = pair
    run = tmp_path / "run"

    def stop(m: dict) -> None:
        if m["epoch"] == 35:
            raise KeyboardInterrupt

    cfg = tiny_config(**{"train.checkpoint_precision": "bfloat16"})
    with pytest.raises(TrainingInterrupted):
        train(cfg, run, progress=False, on_eval=stop)
    man = json.loads((run / MANIFEST_FILE).read_text())
    assert man["status"] == "interrupted" and man["checkpoints"][-1]["precision"] == "bfloat16"
    resume(run, progress=False)
    ref = tmp_path / "ref"
    train(cfg, ref, progress=False)
    assert Run(run).checkpoint().sha256 == Run(ref).checkpoint().sha256  # bit-identical end


def test_a_run_stopped_early_ends_on_an_exact_checkpoint(tmp_path: Path) -> None:
    """A run that ends before its last epoch (here it diverges) rewrites its last checkpoint at
    the model's precision, from the exact weights its resume file holds."""
    over = {"train.lr": 30.0, "train.epochs": 400, "train.warmup_steps": 0,
            "train.loss_dtype": "float32"}
    exact, half = tmp_path / "exact", tmp_path / "half"
    train(tiny_config(**over), exact, progress=False)
    train(tiny_config(**over, **{"train.checkpoint_precision": "float16"}), half,
          progress=False)
    a, b = Run(exact), Run(half)
    assert a.status == b.status == "diverged" and 0 < b.checkpoint().epoch < 400
    assert b.checkpoint().precision == "exact" and b.checkpoint().sha256 == a.checkpoint().sha256


def test_log_schedule() -> None:
    cfg = tiny_config(**{"train.checkpoint_schedule": "log", "train.epochs": 1000,
                         "train.checkpoints_per_decade": 10, "train.dense_every": 5})
    got = cfg.train.checkpoint_epochs()
    want = sorted({0, 1000} | {5 * -(-round(10 ** (i / 10), 9) // 5) for i in range(31)
                               if 10 ** (i / 10) <= 1000})
    assert got == [int(e) for e in want]
    assert set(got) - {0} == log_checkpoint_epochs(1000, 10, 5) | {1000}
    # nanda: 291 checkpoints linear, far fewer on the log schedule
    nanda = resolve_config("nanda", overrides={"train.checkpoint_schedule": "log"})
    assert len(nanda.train.checkpoint_epochs()) < 100 < len(
        resolve_config("nanda").train.checkpoint_epochs())


def test_log_schedule_trains(tmp_path: Path) -> None:
    cfg = tiny_config(**{"train.checkpoint_schedule": "log", "train.checkpoints_per_decade": 5,
                         "train.dense_every": 1})
    train(cfg, tmp_path / "run", progress=False)
    assert [c.epoch for c in Run(tmp_path / "run").checkpoints()] == cfg.train.checkpoint_epochs()


def test_runs_saved_before_these_settings_still_load_with_the_same_id(pair: tuple[Path, Path]
                                                                      ) -> None:
    exact, _ = pair
    saved = json.loads((exact / "config.json").read_text())
    for k in ADDED_FIELDS["train"]:
        saved["train"].pop(k, None)  # what a run written before these settings existed holds
    cfg = RunConfig.from_saved(saved)
    assert cfg == Run(exact).config
    body = {k: v for k, v in saved.items() if k != "preset"}
    digest = hashlib.sha256(json.dumps(body, sort_keys=True).encode()).hexdigest()[:8]
    assert cfg.run_id().endswith(digest)  # the id such a run was given then
    changed = resolve_config("quick", overrides={"train.checkpoint_precision": "float16"})
    assert changed.run_id() != resolve_config("quick").run_id()


def test_sweeps_default_to_economical_checkpoints(tmp_path: Path) -> None:
    from mechgrok.config import SWEEP_CHECKPOINTS
    from mechgrok.sweep import expand, load_sweep_spec

    base = {"preset": "quick", "sweep": {"grid": {"train.weight_decay": [0.5, 1.0]}}}
    spec = load_sweep_spec(base)
    for pt in expand(spec, analyse=None):
        t = pt.config.train
        assert {k: getattr(t, k.partition(".")[2]) for k in SWEEP_CHECKPOINTS} == \
            SWEEP_CHECKPOINTS
        assert t.checkpoint_schedule == "log" and t.checkpoint_precision == "exact"
    # the file's own settings win, and "full" keeps the single-run defaults
    own = load_sweep_spec({**base, "train": {"checkpoint_precision": "bfloat16"}})
    assert {pt.config.train.checkpoint_precision for pt in expand(own, analyse=None)} == {
        "bfloat16"}
    full = load_sweep_spec({**base, "sweep": {**base["sweep"], "checkpoints": "full"}})
    assert all(pt.config.train.checkpoint_precision == "exact"
               and pt.config.run_id() == resolve_config(
                   "quick", overrides=pt.point).run_id() for pt in expand(full, analyse=None))
    with pytest.raises(Exception, match="sweep.checkpoints must be"):
        load_sweep_spec({**base, "sweep": {**base["sweep"], "checkpoints": "some"}})


def test_a_sweep_written_before_keeps_its_run_ids(tmp_path: Path) -> None:
    from mechgrok.sweep import SWEEP_FILE, expand, load_sweep_spec, settle_checkpoints

    base = {"preset": "quick", "sweep": {"name": "old", "grid": {"train.lr": [1e-3, 3e-3]}}}
    spec = load_sweep_spec(base)
    full_ids = [pt.run_id for pt in expand(dataclasses.replace(spec, checkpoints="full"),
                                           analyse=None)]
    old = tmp_path / "old"
    (old / "runs").mkdir(parents=True)
    sweep_json = {"kind": "mechgrok.sweep", "schema_version": 1, "name": "old",
                  "spec": {k: v for k, v in spec.to_dict().items() if k != "checkpoints"},
                  "axes": [{"key": "train.lr", "values": [1e-3, 3e-3]}], "seeds": None,
                  "runs": [{"run_id": r, "state": "done"} for r in full_ids]}
    (old / SWEEP_FILE).write_text(json.dumps(sweep_json))
    settled = settle_checkpoints(spec, tmp_path)
    assert settled.checkpoints == "full"
    assert [pt.run_id for pt in expand(settled, analyse=None)] == full_ids
    assert settle_checkpoints(spec, tmp_path / "elsewhere").checkpoints == "economy"
