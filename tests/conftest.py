"""Shared fixtures: tiny configs (p = 11, narrow models) so unit tests run in seconds."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import warnings
from pathlib import Path
from typing import Any

import pytest

from mechgrok.config import RunConfig, resolve_config

ROOT = Path(__file__).resolve().parent.parent


def tiny_config(**overrides: Any) -> RunConfig:
    """A transformer on add mod 11 small enough to train hundreds of epochs in a second."""
    base = {
        "task.name": "add", "task.p": 11, "task.frac_train": 0.5,
        "model.d_model": 16, "model.n_heads": 2, "model.d_head": 8, "model.d_mlp": 32,
        "train.epochs": 60, "train.lr": 3e-3, "train.eval_every": 5,
        "train.checkpoint_every": 10, "train.dense_until": 0, "train.threads": 1,
    }
    if overrides.get("model.kind", "transformer") != "transformer":
        base = {k: v for k, v in base.items() if not k.startswith("model.")}
    base.update(overrides)
    return resolve_config("quick", overrides=base)


def tiny_mlp_config(**overrides: Any) -> RunConfig:
    base = {"model.kind": "mlp", "model.d_embed": 8, "model.hidden": [24]}
    base.update(overrides)
    return tiny_config(**base)


SWEEP_GRID_2X2 = '"train.weight_decay" = [0.3, 1.0]\n"task.frac_train" = [0.5, 0.8]'

_TINY_SWEEP = """preset = "quick"
[task]
p = 11
frac_train = 0.5
[model]
d_model = 16
n_heads = 2
d_head = 8
d_mlp = 32
[train]
epochs = {epochs}
lr = 3e-3
eval_every = {every}
checkpoint_every = {every}
dense_until = 0
{train_extra}
[sweep]
name = "{name}"
{sweep_extra}
[sweep.grid]
{grid}
"""


def tiny_sweep_toml(*, name: str = "s", epochs: int = 60, every: int = 20,
                    train_extra: str = "", sweep_extra: str = "", grid: str = SWEEP_GRID_2X2,
                    probes: str | None = '["loss"]') -> str:
    """A sweep file's text: :func:`tiny_config`'s transformer (add mod 11, d_model 16) over
    ``grid``, an evaluation and a checkpoint every ``every`` epochs. ``train_extra`` and
    ``sweep_extra`` are lines added to ``[train]`` and ``[sweep]``; ``probes=None`` leaves the
    probes out (for a ``sweep_extra`` that sets them)."""
    if probes is not None:
        sweep_extra = f"probes = {probes}\n{sweep_extra}"
    return _TINY_SWEEP.format(name=name, epochs=epochs, every=every, train_extra=train_extra,
                              sweep_extra=sweep_extra, grid=grid)


def sweep_file(folder: Path, *, name: str = "s", **kw: Any) -> Path:
    """:func:`tiny_sweep_toml` written to ``folder/NAME.toml``."""
    f = folder / f"{name}.toml"
    f.write_text(tiny_sweep_toml(name=name, **kw))
    return f


def checkpoint_file_ids(run_dir: Path) -> dict[str, tuple[int, int]]:
    """Each checkpoint file the manifest lists → (inode, mtime): a checkpoint rewritten changes
    both, so a run that resumed keeps these for its earlier checkpoints."""
    out = {}
    for ck in json.loads((run_dir / "manifest.json").read_text()).get("checkpoints", []):
        st = (run_dir / ck["file"]).stat()
        out[ck["file"]] = (st.st_ino, st.st_mtime_ns)
    return out


def run_cli(*args: str, cwd: Path | None = None, timeout: float = 300,
            env: dict[str, str] | None = None, **kw: Any) -> subprocess.CompletedProcess:
    """Run ``python -m mechgrok ARGS`` in a real subprocess."""
    e = dict(os.environ)
    e.setdefault("OMP_NUM_THREADS", "1")
    if env:
        e.update(env)
    return subprocess.run([sys.executable, "-m", "mechgrok", *args], cwd=cwd, env=e,
                          capture_output=True, text=True, timeout=timeout, **kw)


def cli_here(capsys: pytest.CaptureFixture[str], *args: str) -> subprocess.CompletedProcess:
    """``mechgrok ARGS`` run in this process by :func:`mechgrok.cli.main`, the function
    ``python -m mechgrok`` calls, without a new interpreter and its torch import (seconds each):
    for the many inputs a test feeds one command; keep a :func:`run_cli` or two in such a test
    for the real process. Returned as a CompletedProcess, for :func:`assert_one_line_error`.
    Warnings go to stderr under Python's default filters, as in the real process, so one still
    breaks "one line on stderr"."""
    from mechgrok.cli import main

    def show(message: Warning | str, category: type[Warning], filename: str, lineno: int,
             file: Any = None, line: str | None = None) -> None:
        sys.stderr.write(warnings.formatwarning(message, category, filename, lineno, line))

    capsys.readouterr()
    with warnings.catch_warnings():
        warnings.resetwarnings()  # Python's defaults, not this test run's "error"
        for category in (DeprecationWarning, PendingDeprecationWarning, ImportWarning,
                         ResourceWarning):
            warnings.simplefilter("ignore", category)
        warnings.showwarning = show
        try:
            code = main(list(args))
        except SystemExit as e:  # argparse's usage errors
            code = e.code if isinstance(e.code, int) else 1
    out, err = capsys.readouterr()
    return subprocess.CompletedProcess(["mechgrok", *args], code, out, err)


def assert_one_line_error(proc: subprocess.CompletedProcess, *needles: str) -> None:
    """Non-zero exit, exactly one line on stderr mentioning every needle, no traceback."""
    assert proc.returncode != 0, proc
    lines = [ln for ln in proc.stderr.splitlines() if ln.strip()]
    assert len(lines) == 1, proc.stderr
    assert "Traceback" not in proc.stderr
    for n in needles:
        assert n.lower() in lines[0].lower(), (n, lines[0])


@pytest.fixture
def tiny() -> RunConfig:
    return tiny_config()


def chromium_path() -> str | None:
    for cand in (os.environ.get("MECHGROK_CHROMIUM"), "chromium", "chromium-browser"):
        if cand and (found := shutil.which(cand)):
            return found
    return None


@pytest.fixture(scope="module")
def browser():
    """A headless Debian chromium driven by playwright (no browser download)."""
    exe = chromium_path()
    if exe is None:
        msg = "Debian's chromium is not installed (apt-get install chromium); .ci/run installs it"
        if os.environ.get("CI"):
            pytest.fail(msg)
        pytest.skip(msg)
    sync_api = pytest.importorskip("playwright.sync_api")
    with sync_api.sync_playwright() as pw:
        b = pw.chromium.launch(executable_path=exe, args=["--no-sandbox"])
        yield b
        b.close()
