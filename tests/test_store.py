"""The run directory: round trips, integrity checks, no pickle, atomic files, the lock."""

from __future__ import annotations

import json
import pickle
from pathlib import Path

import pytest
import torch

from mechgrok.errors import CheckpointError, RunDirError
from mechgrok.store import MANIFEST_FILE, Run, RunWriter, atomic_write_bytes
from mechgrok.training import train
from tests.conftest import tiny_config


@pytest.fixture(scope="module")
def trained(tmp_path_factory) -> Path:
    path = tmp_path_factory.mktemp("runs") / "tiny"
    train(tiny_config(), path, progress=False)
    return path


def test_run_directory_contract(trained: Path) -> None:
    run = Run(trained)
    files = {p.relative_to(trained).as_posix() for p in trained.rglob("*") if p.is_file()}
    assert {"config.json", "manifest.json", "metrics.jsonl", "split.safetensors"} <= files
    assert not any(f.endswith(".tmp") for f in files)
    man = json.loads((trained / MANIFEST_FILE).read_text())
    assert man["kind"] == "mechgrok.manifest" and man["status"] == "finished"
    assert {"torch", "mechgrok", "python"} <= set(man["versions"])
    assert [c["epoch"] for c in man["checkpoints"]] == [0, 10, 20, 30, 40, 50, 60]
    for c in man["checkpoints"]:
        assert (trained / c["file"]).stat().st_size == c["size"] and len(c["sha256"]) == 64
    cfg = json.loads((trained / "config.json").read_text())
    assert cfg["kind"] == "mechgrok.run_config" and cfg["schema_version"] == 1
    assert run.config == tiny_config()
    metrics = run.metrics()
    assert [m["epoch"] for m in metrics] == list(range(0, 61, 5))
    assert {"train_loss", "test_loss", "train_acc", "test_acc", "sum_sq_weights"} <= set(metrics[0])


def test_checkpoint_round_trip(trained: Path) -> None:
    run = Run(trained)
    model = run.load_model()
    state = run.load_state(60)
    for k, v in model.state_dict().items():
        assert torch.equal(v, state[k])
    data = run.dataset()
    assert len(data.train_idx) + len(data.test_idx) == 121
    # the saved model reproduces the final metrics
    from mechgrok.training.loop import dataset_tensors, evaluate

    t = dataset_tensors(data)
    loss, acc = evaluate(model, t["test_x"], t["test_y"], "float64")
    assert loss == pytest.approx(run.metrics()[-1]["test_loss"], rel=1e-6)
    assert acc == run.metrics()[-1]["test_acc"]


def _copy(src: Path, dst: Path) -> Path:
    import shutil

    shutil.copytree(src, dst)
    return dst


def test_truncated_checkpoint_is_named(trained: Path, tmp_path: Path) -> None:
    run_dir = _copy(trained, tmp_path / "r")
    ck = Run(run_dir).checkpoint(30)
    f = run_dir / ck.file
    f.write_bytes(f.read_bytes()[: ck.size // 2])
    with pytest.raises(CheckpointError, match=r"epoch_0000030.*truncated"):
        Run(run_dir).load_state(30)
    Run(run_dir).load_state(20)  # the others still load


def test_altered_checkpoint_fails_sha(trained: Path, tmp_path: Path) -> None:
    run_dir = _copy(trained, tmp_path / "r")
    ck = Run(run_dir).checkpoint(40)
    f = run_dir / ck.file
    data = bytearray(f.read_bytes())
    data[-3] ^= 0xFF  # same size, one byte flipped inside a tensor
    f.write_bytes(bytes(data))
    with pytest.raises(CheckpointError, match=r"epoch_0000040.*SHA-256"):
        Run(run_dir).load_model(40)


def test_pickle_is_never_loaded(trained: Path, tmp_path: Path) -> None:
    """A pickle put in place of a checkpoint (hash updated to match) is refused, not executed."""
    run_dir = _copy(trained, tmp_path / "r")
    marker = tmp_path / "pwned"

    class Evil:
        def __reduce__(self):
            return (Path.touch, (marker,))

    man = json.loads((run_dir / MANIFEST_FILE).read_text())
    ck = man["checkpoints"][-1]
    payload = pickle.dumps({"embed.W_E": Evil()})
    (run_dir / ck["file"]).write_bytes(payload)
    import hashlib

    ck["size"], ck["sha256"] = len(payload), hashlib.sha256(payload).hexdigest()
    (run_dir / MANIFEST_FILE).write_text(json.dumps(man))
    with pytest.raises(CheckpointError, match="not a readable safetensors"):
        Run(run_dir).load_model()
    assert not marker.exists()


def test_not_a_run_directory(tmp_path: Path) -> None:
    with pytest.raises(RunDirError, match="not a mechgrok run"):
        Run(tmp_path)
    with pytest.raises(RunDirError, match="not a directory"):
        Run(tmp_path / "missing")


def test_lock_refuses_second_writer(trained: Path, tmp_path: Path) -> None:
    run_dir = _copy(trained, tmp_path / "r")
    w = RunWriter.reopen(run_dir)
    try:
        with pytest.raises(RunDirError, match="in use by another"):
            RunWriter.reopen(run_dir)
    finally:
        w.close()
    RunWriter.reopen(run_dir).close()  # free again once released


def test_atomic_write_keeps_old_file_on_failure(tmp_path: Path) -> None:
    f = tmp_path / "x.json"
    atomic_write_bytes(f, b"old")

    with pytest.raises(TypeError):
        atomic_write_bytes(f, None)  # type: ignore[arg-type]
    assert f.read_bytes() == b"old"
    assert [p.name for p in tmp_path.iterdir()] == ["x.json"]  # no temporary left behind
