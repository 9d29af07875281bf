"""The command line: one-line errors without tracebacks, lazy imports, the listings."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from mechgrok.store import Run
from tests.conftest import assert_one_line_error, run_cli, tiny_config


def test_help_does_not_import_heavy_libraries() -> None:
    code = ("import sys\nfrom mechgrok.cli import main\n"
            "try:\n    main(['--help'])\nexcept SystemExit:\n    pass\n"
            "main(['tasks'])\n"
            "print([m for m in ('torch', 'plotly', 'transformer_lens') if m in sys.modules])")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip().splitlines()[-1] == "[]"


def test_tasks_lists_the_twelve() -> None:
    r = run_cli("tasks")
    assert r.returncode == 0
    names = [ln.split()[0] for ln in r.stdout.splitlines()[1:]]
    assert names == ["add", "sub", "div", "cond", "quad1", "quad2", "quad3", "cube1", "cube2",
                     "s5", "s5conj", "s5aba"]
    assert "x · y⁻¹ mod p" in r.stdout and "apply y, then x" in r.stdout


def test_presets_listed() -> None:
    r = run_cli("presets")
    assert r.returncode == 0
    for name in ("nanda", "zhong-clock", "zhong-pizza", "prieto", "mlp-circle", "quick"):
        assert name in r.stdout


@pytest.mark.parametrize(
    ("args", "needles"),
    [(["--task", "mul"], ["unknown task 'mul'"]),
     (["--task", "div", "--p", "12"], ["not prime"]),
     (["--p", "1"], ["at least 2"]),
     (["--frac-train", "1.5"], ["between 0 and 1"]),
     (["--frac-train", "0"], ["between 0 and 1"]),
     (["--set", "train.nope=1"], ["unknown setting train.nope"]),
     (["--set", "nope"], ["section.field=value"]),
     (["--preset", "nope"], ["unknown preset"]),
     (["--config", "missing.toml"], ["does not exist"]),
     (["--bogus"], ["unrecognized arguments"]),
     (["--resume", "no/such/run"], ["not found"])],
)
def test_bad_input_is_one_line(args: list[str], needles: list[str], tmp_path: Path) -> None:
    r = run_cli("train", "--out-dir", str(tmp_path), *args, cwd=tmp_path)
    assert_one_line_error(r, *needles)
    assert not any(tmp_path.iterdir())  # nothing was created


def test_train_and_resume_from_cli(tmp_path: Path) -> None:
    cfg = tmp_path / "run.json"
    cfg.write_text(json.dumps(tiny_config(**{"train.epochs": 20}).to_dict()))
    r = run_cli("train", "--config", str(cfg), "--out-dir", str(tmp_path), "--name", "a",
                "--set", "train.seed=3", "--no-progress")
    assert r.returncode == 0, r.stderr
    assert "finished after 20 epochs" in r.stdout and r.stderr == ""  # no progress bar off a tty
    assert Run(tmp_path / "a").config.train.seed == 3
    r = run_cli("train", "--resume", "a", "--out-dir", str(tmp_path))
    assert r.returncode == 0 and "already finished" in r.stdout
    r = run_cli("train", "--config", str(cfg), "--out-dir", str(tmp_path), "--name", "a")
    assert_one_line_error(r, "already exists", "--resume")
    r = run_cli("train", "--resume", "a", "--out-dir", str(tmp_path), "--lr", "0.1")
    assert_one_line_error(r, "own saved config")


def test_corrupt_checkpoint_on_resume_is_named(tmp_path: Path) -> None:
    cfg = tmp_path / "run.json"
    cfg.write_text(json.dumps(tiny_config(**{"train.epochs": 20}).to_dict()))
    assert run_cli("train", "--config", str(cfg), "--out-dir", str(tmp_path), "--name", "a").returncode == 0
    man = json.loads((tmp_path / "a" / "manifest.json").read_text())
    man["status"] = "interrupted"
    (tmp_path / "a" / "manifest.json").write_text(json.dumps(man))
    last = tmp_path / "a" / man["checkpoints"][-1]["file"]
    last.write_bytes(last.read_bytes()[:100])
    r = run_cli("train", "--resume", str(tmp_path / "a"))
    assert_one_line_error(r, "epoch_0000020.safetensors", "truncated")
