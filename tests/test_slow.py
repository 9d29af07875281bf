"""End-to-end: the built-in default really groks. Marked slow; .ci/run still runs it."""

from __future__ import annotations

from pathlib import Path

import pytest

from mechgrok.cli import grokking_epochs
from mechgrok.store import Run
from tests.conftest import run_cli


@pytest.mark.slow
def test_quick_preset_groks_with_a_visible_delay(tmp_path: Path) -> None:
    r = run_cli("train", "--preset", "quick", "--out-dir", str(tmp_path), "--name", "q",
                env={"OMP_NUM_THREADS": "2"})
    assert r.returncode == 0, r.stderr
    run = Run(tmp_path / "q")
    metrics = run.metrics()
    g = grokking_epochs(metrics)
    assert g["train_99"] is not None and g["test_99"] is not None, g
    assert g["test_99"] - g["train_99"] >= 500  # memorises long before it generalises
    at_memorisation = next(m for m in metrics if m["epoch"] == g["train_99"])
    assert at_memorisation["test_acc"] < 0.5
    assert metrics[-1]["test_acc"] >= 0.99
    assert "grokking delay" in r.stdout
    assert len(run.checkpoints()) >= 50
