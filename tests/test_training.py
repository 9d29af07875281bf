"""Training: resume after SIGKILL (bit-identical), full disk, lock, interrupts, options."""

from __future__ import annotations

import contextlib
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch

from mechgrok.errors import RunDirError
from mechgrok.store import MANIFEST_FILE, Run
from mechgrok.training import resume, train
from tests.conftest import assert_one_line_error, run_cli, tiny_config, tiny_mlp_config

# A run long enough to be killed in the middle: minibatches (so the shuffling RNG matters),
# a checkpoint every 20 epochs.
# torch's default thread count (2 on CI): the fast path's gathers must be deterministic there.
LONG = {"train.epochs": 1000, "train.batch_size": 16, "train.checkpoint_every": 20,
        "train.eval_every": 20, "train.threads": None}


def _write_config(tmp_path: Path, **over) -> Path:
    f = tmp_path / "run.json"
    f.write_text(json.dumps(tiny_config(**over).to_dict()))
    return f


def _manifest(run_dir: Path) -> dict:
    try:
        return json.loads((run_dir / MANIFEST_FILE).read_text())
    except (OSError, ValueError):
        return {}


def _start(cfg_file: Path, out: Path, name: str) -> subprocess.Popen:
    env = {k: v for k, v in os.environ.items() if k != "OMP_NUM_THREADS"}
    return subprocess.Popen(
        [sys.executable, "-m", "mechgrok", "train", "--config", str(cfg_file), "--out-dir",
         str(out), "--name", name, "--no-progress"],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env)


def _wait_for_checkpoints(run_dir: Path, n: int, proc: subprocess.Popen, timeout: float = 120):
    t0 = time.monotonic()
    while time.monotonic() - t0 < timeout:
        if len(_manifest(run_dir).get("checkpoints", [])) >= n:
            return
        if proc.poll() is not None:
            raise AssertionError(f"training ended early: {proc.communicate()}")
        time.sleep(0.02)
    raise AssertionError("no checkpoints appeared")


def _ckpt_bytes(run_dir: Path) -> dict[str, bytes]:
    return {p.name: p.read_bytes() for p in sorted((run_dir / "ckpt").iterdir())}


def _metrics_without_time(run_dir: Path) -> list[dict]:
    return [{k: v for k, v in m.items() if k != "elapsed_s"} for m in Run(run_dir).metrics()]


def test_sigkill_then_resume_is_bit_identical(tmp_path: Path) -> None:
    cfg_file = _write_config(tmp_path, **LONG)
    out = tmp_path / "runs"
    # uninterrupted reference
    ref = _start(cfg_file, out, "ref")
    _, err = ref.communicate(timeout=600)
    assert ref.returncode == 0, err
    # killed in the middle of training
    proc = _start(cfg_file, out, "killed")
    _wait_for_checkpoints(out / "killed", 12, proc)
    proc.send_signal(signal.SIGKILL)
    proc.communicate()
    man = _manifest(out / "killed")
    assert man["status"] == "running" and man["checkpoints"][-1]["epoch"] < 1000
    for ck in Run(out / "killed").checkpoints():  # everything written so far is intact
        Run(out / "killed").load_state(ck)
    res = run_cli("train", "--resume", str(out / "killed"), "--no-progress")
    assert res.returncode == 0, res.stderr
    assert "finished after 1000 epochs" in res.stdout
    assert _ckpt_bytes(out / "killed") == _ckpt_bytes(out / "ref")
    assert _metrics_without_time(out / "killed") == _metrics_without_time(out / "ref")
    assert sorted(p.name for p in (out / "killed").iterdir()) == \
        sorted(p.name for p in (out / "ref").iterdir())


def test_second_process_is_refused(tmp_path: Path) -> None:
    cfg_file = _write_config(tmp_path, **LONG)
    out = tmp_path / "runs"
    proc = _start(cfg_file, out, "busy")
    try:
        _wait_for_checkpoints(out / "busy", 2, proc)
        r = run_cli("train", "--resume", str(out / "busy"))
        assert_one_line_error(r, "in use by another")
        r = run_cli("train", "--config", str(cfg_file), "--out-dir", str(out), "--name", "busy",
                    "--overwrite")
        assert_one_line_error(r, "in use by another")
        assert proc.poll() is None  # the first one is still training, untouched
    finally:
        proc.kill()
        proc.communicate()
    for ck in Run(out / "busy").checkpoints():
        Run(out / "busy").load_state(ck)


def test_sigint_leaves_a_resumable_run(tmp_path: Path) -> None:
    cfg_file = _write_config(tmp_path, **LONG)
    out = tmp_path / "runs"
    proc = _start(cfg_file, out, "int")
    _wait_for_checkpoints(out / "int", 3, proc)
    proc.send_signal(signal.SIGINT)
    _, err = proc.communicate(timeout=60)
    assert proc.returncode == 130
    assert "Traceback" not in err and "--resume" in err and len(err.strip().splitlines()) == 1
    assert _manifest(out / "int")["status"] == "interrupted"
    res = resume(out / "int", progress=False)
    assert res.status == "finished" and res.epochs == 1000


@contextlib.contextmanager
def _small_disk(path: Path, size_kb: int):
    """A real tmpfs of ``size_kb`` KiB mounted at ``path`` (needs root, as on CI)."""
    path.mkdir()
    r = subprocess.run(["mount", "-t", "tmpfs", "-o", f"size={size_kb}k", "tmpfs", str(path)],
                       capture_output=True, text=True)
    if r.returncode != 0:
        pytest.skip(f"cannot mount a tmpfs here: {r.stderr.strip()}")
    try:
        yield path
    finally:
        subprocess.run(["umount", "-l", str(path)], check=False)


def test_full_disk_stops_cleanly_and_keeps_checkpoints(tmp_path: Path) -> None:
    cfg_file = _write_config(tmp_path, **LONG)
    with _small_disk(tmp_path / "disk", 400) as disk:
        r = run_cli("train", "--config", str(cfg_file), "--out-dir", str(disk), "--name", "r",
                    "--no-progress")
        assert r.returncode == 3, r
        assert_one_line_error(r, "no space left", "--resume")
        run = Run(disk / "r")
        assert run.status == "interrupted"  # not left "running"
        cks = run.checkpoints()
        assert len(cks) >= 2 and cks[-1].epoch < 1000
        for ck in cks:
            run.load_state(ck)  # every checkpoint the manifest names is intact
        assert not list((disk / "r").rglob(".*.tmp"))
        import shutil

        shutil.copytree(disk / "r", tmp_path / "moved")
    res = resume(tmp_path / "moved", progress=False)  # nothing lost: it finishes elsewhere
    assert res.status == "finished" and res.epochs == 1000


def test_stop_after_grok(tmp_path: Path) -> None:
    cfg = tiny_config(**{"train.epochs": 3000, "train.stop_after_grok": 3, "train.eval_every": 10,
                         "train.checkpoint_every": 500, "task.p": 23, "task.frac_train": 0.8,
                         "train.lr": 1e-2, "model.d_model": 32, "model.d_mlp": 64})
    res = train(cfg, tmp_path / "g", progress=False)
    assert res.status == "grokked" and res.epochs < 3000
    m = Run(tmp_path / "g").metrics()
    assert all(x["test_acc"] >= 0.99 for x in m[-3:])
    assert Run(tmp_path / "g").checkpoints()[-1].epoch == res.epochs
    assert resume(tmp_path / "g", progress=False).status == "already-finished"


def test_freeze_biases_and_float64(tmp_path: Path) -> None:
    cfg = tiny_mlp_config(**{"train.freeze_biases": True, "train.model_dtype": "float64",
                             "train.epochs": 20})
    train(cfg, tmp_path / "f", progress=False)
    state = Run(tmp_path / "f").load_state()
    assert state["layers.0.W"].dtype == torch.float64
    assert (state["layers.0.b"] == 0).all() and (state["unembed.b_U"] == 0).all()
    first = Run(tmp_path / "f").load_state(0)
    assert not torch.equal(first["layers.0.W"], state["layers.0.W"])


def test_train_into_existing_run_is_refused(tmp_path: Path) -> None:
    train(tiny_config(**{"train.epochs": 5}), tmp_path / "x", progress=False)
    with pytest.raises(RunDirError, match="already exists"):
        train(tiny_config(**{"train.epochs": 5}), tmp_path / "x", progress=False)


@pytest.mark.parametrize("task", ["sub", "div", "cond", "quad1", "cube2", "s5conj"])
def test_every_kind_of_task_trains(task: str, tmp_path: Path) -> None:
    over = {"task.name": task, "train.epochs": 3, "train.checkpoint_every": 3}
    if task == "s5conj":
        over["task.frac_train"] = 0.1
    res = train(tiny_config(**over), tmp_path / task, progress=False)
    assert res.status == "finished"
    assert Run(tmp_path / task).load_model().n_classes == (120 if task == "s5conj" else 11)
