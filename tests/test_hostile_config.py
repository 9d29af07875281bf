"""Hostile settings (issue 12, items 13–15): sizes this machine cannot hold, out-of-range seeds
and threads, wrongly typed values, runaway sweeps, probe modules imported too early.

Every case goes through the real CLI and must give one line on stderr, a non-zero exit and
nothing on disk.
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from mechgrok.config import RunConfig, preset, resolve_config
from mechgrok.errors import ConfigError
from mechgrok.resources import check_memory, estimate_memory, parse_size
from tests.conftest import ROOT, assert_one_line_error, run_cli, tiny_sweep_toml


def hostile_sweep(sweep: str, grid: str) -> str:
    """A tiny sweep (20 epochs) with ``sweep`` as its [sweep] lines (probes included)."""
    return tiny_sweep_toml(name="h", epochs=20, every=10, sweep_extra=sweep, grid=grid,
                           probes=None)


def nothing_created(out: Path) -> bool:
    return not out.exists() or not any(out.iterdir())


def train_cli(tmp_path: Path, *args: str, env: dict[str, str] | None = None,
              command: str = "train") -> subprocess.CompletedProcess:
    out = tmp_path / "out"
    proc = run_cli(command, "--out-dir", str(out), "--no-progress", *args, cwd=tmp_path,
                   env=env, timeout=120)
    assert nothing_created(out), f"{args}: something was created in {out}"
    assert not (tmp_path / "reports").exists()
    return proc


def sweep_cli(tmp_path: Path, sweep: str, grid: str, *args: str,
              env: dict[str, str] | None = None) -> subprocess.CompletedProcess:
    f = tmp_path / "h.toml"
    f.write_text(hostile_sweep(sweep, grid))
    out = tmp_path / "out"
    proc = run_cli("sweep", str(f), "--out-dir", str(out), "--no-report", *args, cwd=tmp_path,
                   env=env, timeout=120)
    assert nothing_created(out), f"{sweep} {grid} {args}: something was created in {out}"
    return proc


# --------------------------------------------------------------------------------------------
# Item 13: memory and sizes
# --------------------------------------------------------------------------------------------
@pytest.mark.parametrize(("args", "needles"), [
    (["--p", "4096"], ["GiB", "full-batch training step", "train.batch_size=", "smaller task.p"]),
    (["--set", "model.d_model=100000000"], ["GiB", "smaller model"]),
    (["--seed", str(2**64)], ["train.seed", "2**63 - 1"]),
    (["--data-seed", str(2**63)], ["task.data_seed", "2**63 - 1"]),
    (["--threads", "100000"], ["train.threads", "1024"]),
    (["--epochs", str(2**40)], ["train.epochs"]),
])
def test_impossible_sizes_are_refused_before_anything_exists(tmp_path: Path, args: list[str],
                                                             needles: list[str]) -> None:
    assert_one_line_error(train_cli(tmp_path, *args), *needles)


def test_run_command_checks_memory_with_the_analysis(tmp_path: Path) -> None:
    proc = train_cli(tmp_path, "--set", "task.p=1009", "--set", "train.batch_size=64",
                     command="run", env={"MECHGROK_MEMORY_LIMIT": "8GiB"})
    assert_one_line_error(proc, "all-pairs analysis over 1,018,081 pairs", "GiB",
                          "MECHGROK_MEMORY_LIMIT=8GiB")


def test_memory_limit_env_refuses_the_quick_preset_with_its_estimate(tmp_path: Path) -> None:
    proc = train_cli(tmp_path, env={"MECHGROK_MEMORY_LIMIT": "64MiB"})
    assert_one_line_error(proc, "needs about", "MiB of memory", "64 MiB is available",
                          "MECHGROK_MEMORY_LIMIT=64MiB")
    proc = train_cli(tmp_path, env={"MECHGROK_MEMORY_LIMIT": "lots"})
    assert_one_line_error(proc, "MECHGROK_MEMORY_LIMIT must be")


def test_parse_size() -> None:
    assert parse_size("2GiB") == 2 << 30 and parse_size("2G") == 2 << 30
    assert parse_size("1.5GB") == 1_500_000_000 and parse_size("512 MiB") == 512 << 20
    assert parse_size("1048576") == 1 << 20 and parse_size("off") is None
    for bad in ("", "-1", "2 parsecs", "1e9"):
        with pytest.raises(ConfigError):
            parse_size(bad)


def test_library_train_checks_memory_before_creating_the_run(tmp_path: Path,
                                                             monkeypatch: pytest.MonkeyPatch
                                                             ) -> None:
    from mechgrok.training import train

    monkeypatch.setenv("MECHGROK_MEMORY_LIMIT", "1MiB")
    with pytest.raises(ConfigError, match="needs about"):
        train(preset("quick"), tmp_path / "r")
    assert not (tmp_path / "r").exists()


def test_estimate_grows_with_size_and_is_near_a_measured_run(tmp_path: Path) -> None:
    """Monotone in p and width, and above (but within 2.5× of) the memory a real training
    process adds over its start-up (max RSS, one full-batch epoch and its evaluations)."""
    small = resolve_config("quick", overrides={"task.p": 97, "task.frac_train": 0.9})
    big = resolve_config("quick", overrides={"task.p": 199, "task.frac_train": 0.9})
    wide = resolve_config("quick", overrides={"task.p": 199, "task.frac_train": 0.9,
                                              "model.d_mlp": 1024})
    es, eb, ew = (estimate_memory(c) for c in (small, big, wide))
    for k in ("params", "data", "train_step", "evaluation", "analysis", "training", "peak"):
        assert es[k] < eb[k] <= ew[k], k
    assert eb["params"] < ew["params"] and eb["train_step"] < ew["train_step"]
    assert estimate_memory(big, n_models=4)["train_step"] == 4 * eb["train_step"]
    batched = resolve_config("quick", overrides={"task.p": 199, "task.frac_train": 0.9,
                                                 "train.batch_size": 256})
    assert estimate_memory(batched)["train_step"] < eb["train_step"] / 100

    cfg = resolve_config("quick", overrides={
        "task.p": 199, "task.frac_train": 0.9, "train.epochs": 1, "train.eval_every": 1,
        "train.checkpoint_every": 1, "train.threads": 1})
    code = (
        "import json, resource, sys\n"
        "import torch\n"
        "from mechgrok.config import RunConfig\n"
        "from mechgrok.training import train\n"
        "cfg = RunConfig.from_dict(json.loads(sys.argv[1]))\n"
        "torch.set_num_threads(1)\n"
        "before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss\n"
        "train(cfg, sys.argv[2], progress=False)\n"
        "after = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss\n"
        "print(json.dumps({'before': before * 1024, 'after': after * 1024}))\n")
    out = subprocess.run([sys.executable, "-c", code, cfg.to_json(), str(tmp_path / "r")],
                         capture_output=True, text=True, check=True, cwd=ROOT, timeout=300)
    m = json.loads(out.stdout.strip().splitlines()[-1])
    est = estimate_memory(cfg)
    mib = {"measured": m["after"] / 2**20, "estimated": est["training"] / 2**20}
    assert m["after"] <= est["training"] <= 2.5 * m["after"], mib  # the whole process


def test_check_memory_passes_what_fits_and_names_what_dominates() -> None:
    cfg = preset("quick")
    check_memory(cfg, 4 << 30, analysis=True)
    big = resolve_config("quick", overrides={"task.p": 1009})
    with pytest.raises(ConfigError, match=r"full-batch training step .* set train\.batch_size="):
        check_memory(big, 8 << 30)
    fit = (4 << 30) // estimate_memory(preset("nanda"))["peak"]
    assert fit >= 1
    with pytest.raises(ConfigError, match=rf"16 at once .* run at most {fit} at once "
                                          rf"\(--workers {fit}\)"):
        check_memory(preset("nanda"), 4 << 30, analysis=True, copies=16)


# --------------------------------------------------------------------------------------------
# Item 14: wrongly typed values
# --------------------------------------------------------------------------------------------
@pytest.mark.parametrize(("args", "needles"), [
    (["--set", "task.name=[1]"], ["task.name must be a string"]),
    (["--set", "model.kind=[1]"], ["model.kind"]),
    (["--set", "train.lr='fast'"], ["train.lr must be a number"]),
    (["--set", "train.epochs=1.5"], ["train.epochs must be an integer"]),
    (["--set", "preset.x=1"], ["preset is not a section"]),
    (["--set", "preset.x=../../escape"], ["preset is not a section"]),
    (["--set", "kind.x=1"], ["not a section"]),
    (["--set", "model.hidden.x=1"], ["section.field"]),
])
def test_wrong_types_and_non_sections_in_flags(tmp_path: Path, args: list[str],
                                               needles: list[str]) -> None:
    assert_one_line_error(train_cli(tmp_path, *args), *needles)


@pytest.mark.parametrize(("name", "text", "needles"), [
    ("p.toml", "preset = [1]\n", ["preset must be a preset's name", "a list"]),
    ("p.toml", "preset = \"\"\n", ["unknown preset"]),
    ("p.toml", "preset = 3\n", ["preset must be a preset's name"]),
    ("m.toml", 'model = "transformer"\n', ["[model] must be a table"]),
    ("a.json", "[1, 2]", ["must hold a table", "a list"]),
    ("deep.json", "[" * 100_000 + "]" * 100_000, ["cannot parse config file"]),
    ("k.toml", '[model]\nkind = ["mlp"]\n', ["model.kind"]),
    ("d.toml", "[train]\nlr = 1979-05-27\n", ["train.lr must be a number"]),
])
def test_wrong_types_in_config_files(tmp_path: Path, name: str, text: str,
                                     needles: list[str]) -> None:
    f = tmp_path / name
    f.write_text(text)
    assert_one_line_error(train_cli(tmp_path, "--config", str(f)), *needles)


def test_run_ids_are_plain_names_and_presets_are_known() -> None:
    import re

    for name in ("quick", "nanda", "prieto"):
        assert re.fullmatch(r"[A-Za-z0-9._-]+", preset(name).run_id())
    with pytest.raises(ConfigError, match="unknown preset"):
        RunConfig(preset="../../x")
    with pytest.raises(ConfigError, match="preset must be"):
        RunConfig(preset={"x": 1})  # type: ignore[arg-type]


def test_flags_switching_back_to_the_presets_model_kind_keep_the_preset(tmp_path: Path) -> None:
    f = tmp_path / "mlp.toml"
    f.write_text('[model]\nkind = "mlp"\nhidden = [8]\n')
    cfg = resolve_config("quick", f, {"model.kind": "transformer"})
    assert cfg.model == preset("quick").model  # not the defaults: d_model 64, not 128
    c2 = resolve_config("nanda", {"preset": "quick"})
    assert c2.preset == "nanda"  # the preset used is the one recorded


def test_saved_config_with_missing_fields_is_refused() -> None:
    d = preset("quick").to_dict()
    del d["train"]["loss"]
    del d["model"]["attn_alpha"]
    with pytest.raises(ConfigError, match=r"lacks model\.attn_alpha, train\.loss.*older mechgrok"):
        RunConfig.from_saved(d)
    assert RunConfig.from_dict(d) == preset("quick")  # a user's file may leave fields out
    full = preset("prieto").to_dict()
    assert RunConfig.from_saved(json.loads(json.dumps(full))) == preset("prieto")
    with pytest.raises(ConfigError, match="no kind and schema_version"):
        RunConfig.from_saved({"task": {}})
    with pytest.raises(ConfigError, match="must be a JSON object"):
        RunConfig.from_saved([1])


# --------------------------------------------------------------------------------------------
# Sweeps: runaway seeds, wrong types, out-of-range options
# --------------------------------------------------------------------------------------------
@pytest.mark.parametrize(("sweep", "grid", "args", "needles"), [
    ("seeds = 60000000", '"train.lr" = [0.001]', [], ["60000000 runs", "--max-runs"]),
    ("seeds = 100000000000", '"train.lr" = [0.001]', [], ["100000000000 runs"]),
    ("seeds = 1e11", '"train.lr" = [0.001]', [], ["sweep.seeds", "whole number"]),
    ("seeds = 2", '"task.name" = [[1]]', [], ["task.name must be a string"]),
    ("seeds = 2", '"model.kind" = [[1]]', [], ["model.kind"]),
    ("seeds = 2", '"train.lr" = [0.001]', ["--max-runs", "10000000000"], ["--max-runs"]),
    ("seeds = 2", '"train.lr" = [0.001]', ["--workers", "10000000"], ["--workers"]),
    ("seeds = 2", '"train.lr" = [0.001]', ["--retries", "1000000"], ["--retries"]),
    ("seeds = 2", '"train.lr" = [0.001]', ["--vmap-seeds", "100000"], ["--vmap-seeds"]),
    ("seeds = 2", '"task.p" = [11, 4096]', [], ["task.p=4096", "GiB"]),
    ('probes = ["a b"]', '"train.lr" = [0.001]', [], ["sweep.probes"]),
])
@pytest.mark.parametrize("dry", [False, True])
def test_hostile_sweeps_are_one_line_and_fast(tmp_path: Path, sweep: str, grid: str,
                                              args: list[str], needles: list[str],
                                              dry: bool) -> None:
    proc = sweep_cli(tmp_path, sweep, grid, *args, *(["--dry-run"] if dry else []))
    assert_one_line_error(proc, *needles)


def test_sweep_seed_count_is_not_materialised(tmp_path: Path) -> None:
    from mechgrok.sweep import expand, load_sweep_spec

    f = tmp_path / "h.toml"
    f.write_text(hostile_sweep("seeds = 60000000", '"train.lr" = [0.001]'))
    spec = load_sweep_spec(f)  # no list of 60 million seeds is built: the count is a range
    assert spec.n_runs == 60_000_000 and isinstance(spec.seeds, range)
    with pytest.raises(ConfigError, match="more than --max-runs"):
        expand(spec)


# --------------------------------------------------------------------------------------------
# Item 15: probe modules are imported last, and --dry-run checks probes
# --------------------------------------------------------------------------------------------
@pytest.mark.parametrize("grid", ['"task.name" = [[1]]', '"model.d_model" = [100000000]',
                                  '"task.p" = [11, 4096]'])
@pytest.mark.parametrize("dry", [False, True])
def test_grid_errors_come_before_importing_probe_modules(tmp_path: Path, grid: str,
                                                         dry: bool) -> None:
    marker = tmp_path / "imported.txt"
    (tmp_path / "sideeffect_mod_xyz.py").write_text(
        f"open({str(marker)!r}, 'w').write('imported')\n")
    proc = sweep_cli(tmp_path, 'probes = ["loss", "sideeffect_mod_xyz:P"]', grid,
                     *(["--dry-run"] if dry else []),
                     env={"PYTHONPATH": f"{tmp_path}:{ROOT}"})
    assert_one_line_error(proc, "sweep grid point")
    assert not marker.exists(), "the probe module was imported before the grid was validated"


@pytest.mark.parametrize(("probes", "needles"), [
    ('["no_such_probe_xyz"]', ["no_such_probe_xyz"]),
    ('["nonexistent_mod_xyz:P"]', ["nonexistent_mod_xyz"]),
    ('["loss", "goodprobe_xyz:Q"]', ["goodprobe_xyz", "'Q'"]),
])
def test_dry_run_checks_probe_names(tmp_path: Path, probes: str, needles: list[str]) -> None:
    (tmp_path / "goodprobe_xyz.py").write_text(
        "from mechgrok.probes import probe\n"
        "@probe('goodprobe_xyz', description='d')\n"
        "def P(ctx):\n    return {'x': 1.0}\n")
    env = {"PYTHONPATH": f"{tmp_path}:{ROOT}"}
    proc = sweep_cli(tmp_path, f"probes = {probes}", '"train.lr" = [0.001]', "--dry-run",
                     env=env)
    assert_one_line_error(proc, *needles)
    # the same sweep with probes that exist lists its runs
    proc = sweep_cli(tmp_path, 'seeds = 2\nprobes = ["loss", "goodprobe_xyz:P"]',
                     '"train.lr" = [0.001, 0.003]', "--dry-run", env=env)
    assert proc.returncode == 0, proc.stderr
    assert "= 4 runs" in proc.stdout
