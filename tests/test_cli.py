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


def test_tasks_lists_the_thirteen() -> None:
    """Power et al.'s twelve and mul: a table of rules and domains, then one of algebras (the
    group, the rule in it, the basis mechgrok reads it in), readable in 100 columns."""
    r = run_cli("tasks")
    assert r.returncode == 0
    blocks = r.stdout.split("\n\n")
    want = ["add", "sub", "div", "cond", "quad1", "quad2", "quad3", "cube1", "cube2",
            "s5", "s5conj", "s5aba", "mul"]
    for block, header in zip(blocks[:2], (["task", "rule", "domain"],
                                          ["task", "algebra", "rule", "read", "in"])):
        lines = block.splitlines()
        assert lines[0].split() == header
        assert [ln.split()[0] for ln in lines[1:]] == want
    assert "x · y⁻¹ mod p" in r.stdout and "apply y, then x" in r.stdout
    rows = {ln.split()[0]: ln for ln in blocks[1].splitlines()[1:]}
    assert rows["add"].split()[1:] == ["cyclic", "group", "Z_p", "xy", "Fourier", "over", "Z_p"]
    assert "multiplicative group Z_p*" in rows["mul"] and "discrete-log order" in rows["div"]
    assert "symmetric group S5" in rows["s5conj"] and "xyx^-1" in rows["s5conj"]
    assert "2-D Fourier over Z_p × Z_p" in rows["quad1"]
    assert "mul: x · 0 = 0 · y = 0" in r.stdout  # how 0, outside Z_p*, is handled
    assert max(len(ln) for ln in r.stdout.splitlines()) <= 100


def test_presets_listed() -> None:
    r = run_cli("presets")
    assert r.returncode == 0
    for name in ("nanda", "zhong-clock", "zhong-pizza", "prieto", "mlp-circle", "quick", "div",
                 "s5"):
        assert name in r.stdout


@pytest.mark.parametrize(
    ("args", "needles"),
    [(["--task", "pow"], ["unknown task 'pow'"]),
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


# --------------------------------------------------------------------------------------------
# Trip wires (issue 16): one definition of the settings flags, no abbreviations, store's names
# --------------------------------------------------------------------------------------------
def _settings_flags(command: str) -> set[str]:
    from mechgrok.cli import build_parser

    sub = next(a for a in build_parser()._actions if a.dest == "command")
    parser = sub.choices[command]  # type: ignore[index]
    return {s for a in parser._actions for s in a.option_strings}


def test_run_and_sweep_take_the_settings_train_takes() -> None:
    """README: `mechgrok run` takes "flags as for train"; a sweep takes them too (over its file)."""
    from mechgrok.cli.flags import config_flags

    derived = {f.flag for f in config_flags()} | {"--preset", "--set"}
    # every spelling train has always had, now derived from the config's fields
    assert {"--task", "--p", "--frac-train", "--data-seed", "--model", "--epochs", "--lr",
            "--weight-decay", "--batch-size", "--seed", "--loss-dtype", "--model-dtype",
            "--freeze-biases", "--eval-every", "--checkpoint-every", "--stop-after-grok",
            "--threads", "--loss", "--orthograd", "--grokfast", "--grokfast-alpha",
            "--grokfast-lamb", "--grokfast-window"} <= derived
    for command in ("train", "run", "sweep"):
        assert derived <= _settings_flags(command), command


def test_run_accepts_the_train_settings_it_used_to_refuse() -> None:
    from mechgrok.cli import build_parser
    from mechgrok.cli.flags import overrides

    args = build_parser().parse_args(["run", "--task", "sub", "--model", "mlp", "--batch-size",
                                      "8", "--frac-train", "0.5", "--freeze-biases", "--p", "7",
                                      "--hidden", "16", "16", "--set", "train.lr=0.01"])
    assert overrides(args) == {"task.name": "sub", "task.p": 7, "task.frac_train": 0.5,
                               "model.kind": "mlp", "model.hidden": [16, 16],
                               "train.batch_size": 8, "train.freeze_biases": True,
                               "train.lr": 0.01}


def test_p_is_the_modulus_flag_on_run_not_an_ambiguous_prefix(tmp_path: Path) -> None:
    r = run_cli("run", "--p", "1", "--out-dir", str(tmp_path), cwd=tmp_path)
    assert_one_line_error(r, "at least 2")  # task.p checked: --p is the modulus, as for train
    assert "ambiguous" not in r.stderr
    assert not any(tmp_path.iterdir())


@pytest.mark.parametrize("args", [["train", "--pre", "quick"], ["run", "--prog"],
                                  ["sweep", "s.toml", "--dry"]])
def test_abbreviated_flags_are_refused(args: list[str], tmp_path: Path) -> None:
    assert_one_line_error(run_cli(*args, cwd=tmp_path), "unrecognized arguments")


def test_none_clears_an_optional_setting_from_a_flag() -> None:
    from mechgrok.cli import build_parser
    from mechgrok.cli.flags import overrides
    from mechgrok.config import resolve_config

    args = build_parser().parse_args(["train", "--preset", "mlp-circle", "--batch-size", "none",
                                      "--grokfast", "none"])
    cfg = resolve_config(args.preset, None, overrides(args))
    assert cfg.train.batch_size is None and cfg.train.grokfast is None


def test_sweep_settings_flags_apply_to_every_run_and_may_not_name_an_axis(tmp_path: Path) -> None:
    from mechgrok.sweep import expand, load_sweep_spec

    f = tmp_path / "s.toml"
    f.write_text('preset = "quick"\n[task]\np = 11\n[model]\nd_model = 16\nn_heads = 2\n'
                 'd_head = 8\nd_mlp = 32\n[sweep]\nseeds = 2\n'
                 '[sweep.grid]\n"train.weight_decay" = [0.3, 1.0]\n')
    plain = expand(load_sweep_spec(f), analyse=None)
    spec = load_sweep_spec(f).with_settings(None, {"train.epochs": 7,
                                                   "train.checkpoints_per_decade": 5})
    points = expand(spec, analyse=None)
    assert [pt.config.train.epochs for pt in points] == [7] * 4
    # a setting given on the command line wins over the sweep's checkpoint economy
    assert {pt.config.train.checkpoints_per_decade for pt in points} == {5}
    assert {pt.run_id for pt in points}.isdisjoint(pt.run_id for pt in plain)
    assert "settings" not in load_sweep_spec(f).to_dict()  # sweep.json unchanged without them
    for flag, needle in ((["--weight-decay", "0.1"], "axis of the sweep's grid"),
                         (["--seed", "3"], "sweep's seeds")):
        r = run_cli("sweep", str(f), "--dry-run", "--out-dir", str(tmp_path / "out"), *flag)
        assert_one_line_error(r, needle)
    r = run_cli("sweep", str(f), "--dry-run", "--out-dir", str(tmp_path / "out"), "--epochs", "7")
    assert r.returncode == 0, r.stderr
    assert "= 4 runs" in r.stdout and not (tmp_path / "out").exists()


def test_analysis_output_names_the_measures_file_by_stores_rule(tmp_path: Path,
                                                                capsys: pytest.CaptureFixture[str],
                                                                ) -> None:
    from types import SimpleNamespace

    from mechgrok.cli import print_analysis
    from mechgrok.store import measures_path

    run = SimpleNamespace(path=tmp_path / "r", id="r")
    res = SimpleNamespace(summary={}, workers=1, run=run, checkpoints=3, probes=["loss"],
                          computed=3, stale=0, reused=0, seconds=0.1, workers_note=None,
                          not_applicable={}, errors=[])
    print_analysis(res)
    assert capsys.readouterr().out.splitlines()[-1] == f"measures: {measures_path(run.path)}"


def test_cli_reaches_no_private_store_names_and_aliases_no_module_to_a_letter() -> None:
    import ast

    root = Path(__file__).resolve().parent.parent / "mechgrok"
    for package in ("cli", "sweep", "config"):
        for path in sorted((root / package).glob("*.py")):
            tree = ast.parse(path.read_text())
            for node in ast.walk(tree):
                if isinstance(node, ast.Attribute):
                    assert node.attr != "_lock", f"{path}: RunWriter._lock (use store.is_locked)"
                if isinstance(node, (ast.Import, ast.ImportFrom)):
                    for a in node.names:
                        assert not (a.asname and len(a.asname) == 1 and a.asname.isupper()), (
                            f"{path}: import {a.name} as {a.asname}")
