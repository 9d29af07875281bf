"""Issue 12 (store and training): mechgrok never deletes files that are not its own, never reads
outside a run, checks every tensor before it reaches a kernel, and recovers stuck runs.

Every case runs the real CLI in a real process on real files that the test damages by hand;
each asserts one error line, a non-zero exit that is not a native crash, and that the user's
files are untouched.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import resource
import shutil
import subprocess
from pathlib import Path

import pytest
import torch

from mechgrok.store import MANIFEST_FILE, Run, tensors_from_bytes, tensors_to_bytes
from mechgrok.training import train
from tests.conftest import assert_one_line_error, run_cli, tiny_config


@pytest.fixture(scope="module")
def trained(tmp_path_factory) -> Path:
    """A finished tiny run (60 epochs, checkpoints every 10)."""
    path = tmp_path_factory.mktemp("hostile") / "tiny"
    train(tiny_config(), path, progress=False)
    return path


def _copy(src: Path, dst: Path) -> Path:
    shutil.copytree(src, dst)
    return dst


@pytest.fixture(scope="module")
def interrupted(trained: Path, tmp_path_factory) -> Path:
    """A copy of ``trained`` made to look interrupted at epoch 30 (its real epoch-30 state)."""
    run = _copy(trained, tmp_path_factory.mktemp("interrupted") / "run")
    # the epoch-30 resume state, from a twin run trained to 30 epochs
    twin = run.parent / "twin"
    train(tiny_config(**{"train.epochs": 30}), twin, progress=False)
    man = json.loads((run / MANIFEST_FILE).read_text())
    twin_man = json.loads((twin / MANIFEST_FILE).read_text())
    for f in run.glob("resume_epoch_*"):
        f.unlink()
    shutil.copy(twin / twin_man["resume"]["file"], run / twin_man["resume"]["file"])
    man["checkpoints"] = [c for c in man["checkpoints"] if c["epoch"] <= 30]
    man["resume"] = twin_man["resume"]
    man["status"] = "interrupted"
    (run / MANIFEST_FILE).write_text(json.dumps(man))
    shutil.rmtree(twin)
    return run


def _tree(path: Path) -> dict[str, bytes]:
    return {p.relative_to(path).as_posix(): p.read_bytes() for p in sorted(path.rglob("*"))
            if p.is_file() and not p.is_symlink()}


def _set_manifest(run: Path, **changes) -> dict:
    man = json.loads((run / MANIFEST_FILE).read_text())
    man.update(changes)
    (run / MANIFEST_FILE).write_text(json.dumps(man))
    return man


def _rehash(run: Path, rel: str, data: bytes, entry: str = "resume") -> None:
    """Replace a file named by the manifest and update its size and hash to match (a forger)."""
    (run / rel).write_bytes(data)
    man = json.loads((run / MANIFEST_FILE).read_text())
    targets = [man["resume"]] if entry == "resume" else [c for c in man["checkpoints"]
                                                          if c["file"] == rel]
    for t in targets:
        t["size"] = len(data)
        t["sha256"] = hashlib.sha256(data).hexdigest()
    (run / MANIFEST_FILE).write_text(json.dumps(man))


def _not_native_crash(proc: subprocess.CompletedProcess) -> None:
    assert proc.returncode not in (-11, -6, 134, 139), proc


# ------------------------------------------------------------------------------------------
# 1. --overwrite and --name
# ------------------------------------------------------------------------------------------
@pytest.mark.parametrize("name", [".", "..", "../x", "/abs/olute", "a/b", ".hidden", ""])
def test_name_must_be_one_folder_inside_out_dir(trained: Path, tmp_path: Path, name: str) -> None:
    out = tmp_path / "out"
    _copy(trained, out / "keep-run")
    (tmp_path / "x").mkdir()
    (tmp_path / "x" / "thesis.tex").write_text("years of work")
    before_out, before_x = _tree(out), _tree(tmp_path / "x")
    for cmd in ("train", "run"):
        r = run_cli(cmd, "--out-dir", str(out), "--name", name, "--overwrite",
                    "--set", "train.epochs=5", "--no-progress", cwd=tmp_path)
        assert_one_line_error(r, "name")
    assert _tree(out) == before_out and _tree(tmp_path / "x") == before_x


def test_overwrite_refuses_a_folder_that_is_not_a_run(tmp_path: Path) -> None:
    out = tmp_path / "out"
    (out / "papers").mkdir(parents=True)
    (out / "papers" / "draft.md").write_text("draft")
    r = run_cli("train", "--out-dir", str(out), "--name", "papers", "--overwrite",
                "--set", "train.epochs=5", "--no-progress")
    assert_one_line_error(r, "not a mechgrok run directory")
    assert (out / "papers" / "draft.md").read_text() == "draft"


def test_overwrite_refuses_a_run_holding_user_files(trained: Path, tmp_path: Path) -> None:
    out = tmp_path / "out"
    run = _copy(trained, out / "r")
    (run / "notes.txt").write_text("my notes")
    (run / "ckpt" / "best_model_backup.safetensors").write_bytes(b"mine")
    before = _tree(run)
    r = run_cli("train", "--out-dir", str(out), "--name", "r", "--overwrite",
                "--set", "train.epochs=5", "--no-progress")
    assert_one_line_error(r, "did not write", "notes.txt")
    assert _tree(run) == before


def test_overwrite_refuses_a_symlink(trained: Path, tmp_path: Path) -> None:
    out = tmp_path / "out"
    out.mkdir()
    real = _copy(trained, tmp_path / "elsewhere")
    (out / "r").symlink_to(real)
    before = _tree(real)
    r = run_cli("train", "--out-dir", str(out), "--name", "r", "--overwrite",
                "--set", "train.epochs=5", "--no-progress")
    assert_one_line_error(r, "symlink")
    assert _tree(real) == before


def test_overwrite_replaces_a_run_and_says_so(trained: Path, tmp_path: Path) -> None:
    out = tmp_path / "out"
    _copy(trained, out / "r")
    r = run_cli("train", "--out-dir", str(out), "--name", "r", "--overwrite",
                "--set", "train.epochs=5", "--no-progress")
    assert r.returncode == 0, r.stderr
    assert "removed the run directory" in r.stdout
    assert Run(out / "r").checkpoints()[-1].epoch == 5
    assert not list(out.glob(".r.*"))  # no half-built or half-removed leftovers


def test_overwrite_waits_for_a_running_analysis(trained: Path, tmp_path: Path) -> None:
    import fcntl

    out = tmp_path / "out"
    run = _copy(trained, out / "r")
    (run / "analysis").mkdir(exist_ok=True)
    fd = os.open(run / "analysis" / "analyze.lock", os.O_RDWR | os.O_CREAT)
    fcntl.flock(fd, fcntl.LOCK_EX)  # as `mechgrok analyze` holds it
    try:
        before = _tree(run)
        r = run_cli("train", "--out-dir", str(out), "--name", "r", "--overwrite",
                    "--set", "train.epochs=5", "--no-progress")
        assert_one_line_error(r, "analysed by another process")
        assert _tree(run) == before
    finally:
        os.close(fd)


# ------------------------------------------------------------------------------------------
# 2, 3. --resume removes only its own temporary files and reads only inside the run
# ------------------------------------------------------------------------------------------
def test_resume_keeps_user_files(interrupted: Path, tmp_path: Path) -> None:
    run = _copy(interrupted, tmp_path / "r")
    (run / "ckpt" / "best_model_backup.safetensors").write_bytes(b"backup")
    (run / "notes.txt").write_text("notes")
    (run / "resume_epoch_0000040.safetensors").write_bytes(b"not named by the manifest")
    own_tmp = run / ".manifest.json.abcd1234.tmp"
    own_tmp.write_text("torn")
    r = run_cli("train", "--resume", str(run), "--no-progress")
    assert r.returncode == 0, r.stderr
    assert (run / "ckpt" / "best_model_backup.safetensors").read_bytes() == b"backup"
    assert (run / "notes.txt").read_text() == "notes"
    assert not own_tmp.exists()  # mechgrok's own temporary name: removed
    assert Run(run).status == "finished"


def test_resume_removes_a_superseded_resume_file(interrupted: Path, tmp_path: Path) -> None:
    """A kill between writing the manifest and unlinking the previous resume file leaves an
    older resume file no one can read: resuming removes it (and only it)."""
    run = _copy(interrupted, tmp_path / "r")
    named = Run(run).manifest["resume"]["epoch"]
    assert named >= 1
    older = run / f"resume_epoch_{named - 1:07d}.safetensors"
    older.write_bytes(b"superseded")
    (run / "resume_epoch_notes.safetensors").write_bytes(b"a user's file")
    r = run_cli("train", "--resume", str(run), "--no-progress")
    assert r.returncode == 0, r.stderr
    assert not older.exists()
    assert (run / "resume_epoch_notes.safetensors").read_bytes() == b"a user's file"
    left = sorted(f.name for f in run.glob("resume_epoch_0*"))
    assert left == [Run(run).manifest["resume"]["file"]]


def test_resume_does_not_follow_a_symlinked_ckpt(interrupted: Path, tmp_path: Path) -> None:
    run = _copy(interrupted, tmp_path / "r")
    other = tmp_path / "other-disk"
    shutil.move(run / "ckpt", other)
    (other / "epoch_0000900.safetensors").write_bytes(b"someone else's")
    (run / "ckpt").symlink_to(other)
    before = _tree(other)
    r = run_cli("train", "--resume", str(run), "--no-progress")
    assert_one_line_error(r, "outside the run directory")
    assert _tree(other) == before


@pytest.mark.parametrize("where", ["resume", "checkpoint-abs", "checkpoint-dotdot"])
def test_manifest_paths_are_confined(interrupted: Path, tmp_path: Path, where: str) -> None:
    other = _copy(interrupted, tmp_path / "OTHER")
    run = _copy(interrupted, tmp_path / "r")
    man = json.loads((run / MANIFEST_FILE).read_text())
    other_resume = json.loads((other / MANIFEST_FILE).read_text())["resume"]
    if where == "resume":
        man["resume"] = {**other_resume, "file": f"../OTHER/{other_resume['file']}"}
    elif where == "checkpoint-abs":
        man["checkpoints"][-1]["file"] = str(other / man["checkpoints"][-1]["file"])
    else:
        man["checkpoints"][-1]["file"] = "ckpt/../../OTHER/" + man["checkpoints"][-1]["file"]
    (run / MANIFEST_FILE).write_text(json.dumps(man))
    before = _tree(other)
    for args in (("train", "--resume", str(run), "--no-progress"),
                 ("analyze", str(run), "--no-progress"),
                 ("report", str(run), "--reports-dir", str(tmp_path / "rep"))):
        assert_one_line_error(run_cli(*args), str(run / MANIFEST_FILE))
    assert _tree(other) == before


# ------------------------------------------------------------------------------------------
# 4. every loaded tensor is checked before a kernel sees it
# ------------------------------------------------------------------------------------------
@pytest.mark.parametrize("damage", ["shape", "dtype", "extra", "missing", "index", "rng", "meta"])
def test_forged_resume_state_is_refused(interrupted: Path, tmp_path: Path, damage: str) -> None:
    run = _copy(interrupted, tmp_path / "r")
    man = json.loads((run / MANIFEST_FILE).read_text())
    rel = man["resume"]["file"]
    data = (run / rel).read_bytes()
    tensors, meta = tensors_from_bytes(data, rel)
    key = next(k for k in tensors if k.endswith(".exp_avg"))
    if damage == "shape":
        tensors[key] = torch.zeros(3, 5)
    elif damage == "dtype":
        tensors[key] = tensors[key].double()
    elif damage == "extra":
        tensors["optim.999.exp_avg"] = torch.zeros(2)
    elif damage == "missing":
        del tensors[key]
    elif damage == "index":
        tensors["optim.x.exp_avg"] = tensors.pop(key)
    elif damage == "rng":
        del tensors["rng.shuffle"]
    else:
        meta = {"resume": json.dumps({"epoch": 30})}
    _rehash(run, rel, tensors_to_bytes(tensors, meta))
    r = run_cli("train", "--resume", str(run), "--no-progress")
    _not_native_crash(r)
    assert_one_line_error(r, rel)


def test_checkpoint_with_wrong_tensors_is_named(trained: Path, tmp_path: Path) -> None:
    run = _copy(trained, tmp_path / "r")
    rel = "ckpt/epoch_0000030.safetensors"
    tensors, meta = tensors_from_bytes((run / rel).read_bytes(), rel)
    k = next(iter(tensors))
    tensors[k] = torch.zeros(7)
    _rehash(run, rel, tensors_to_bytes(tensors, meta), entry="checkpoint")
    with pytest.raises(Exception, match=r"epoch_0000030.*does not match"):
        Run(run).load_model(30)
    Run(run).load_model(20)  # the others still load


# ------------------------------------------------------------------------------------------
# 6. a huge checkpoint is refused by its size before it is read
# ------------------------------------------------------------------------------------------
def test_huge_checkpoint_is_refused_without_reading_it(trained: Path, tmp_path: Path) -> None:
    run = _copy(trained, tmp_path / "r")
    f = run / "ckpt" / "epoch_0000060.safetensors"
    with open(f, "r+b") as fh:
        fh.truncate(6 << 30)  # sparse: 6 GiB on paper, nothing on disk
    from mechgrok.errors import CheckpointError

    before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    with pytest.raises(CheckpointError, match="bytes but the manifest says"):
        Run(run).load_state(60)
    assert resource.getrusage(resource.RUSAGE_SELF).ru_maxrss - before < 200_000  # KiB


# ------------------------------------------------------------------------------------------
# 7. damaged metadata: one line naming the file
# ------------------------------------------------------------------------------------------
def _damage_manifest_sha(run: Path) -> None:
    man = json.loads((run / MANIFEST_FILE).read_text())
    del man["checkpoints"][2]["sha256"]
    (run / MANIFEST_FILE).write_text(json.dumps(man))


def _damage_metrics_list(run: Path) -> None:
    lines = (run / "metrics.jsonl").read_text().splitlines()
    lines[3] = "[1, 2, 3]"
    (run / "metrics.jsonl").write_text("\n".join(lines) + "\n")


def _damage_split_hash(run: Path) -> None:
    man = json.loads((run / MANIFEST_FILE).read_text())
    del man["split_sha256"]
    (run / MANIFEST_FILE).write_text(json.dumps(man))


@pytest.mark.parametrize("damage,file,needle", [
    (_damage_manifest_sha, MANIFEST_FILE, "sha256"),
    (_damage_metrics_list, "metrics.jsonl", "line 4"),
    (_damage_split_hash, MANIFEST_FILE, "split_sha256"),
])
def test_damaged_metadata_is_one_line(trained: Path, tmp_path: Path, damage, file: str,
                                      needle: str) -> None:
    run = _copy(trained, tmp_path / "r")
    damage(run)
    for args in (("analyze", str(run), "--no-progress"),
                 ("report", str(run), "--reports-dir", str(tmp_path / "rep")),
                 ("compare", str(run), str(run), "--reports-dir", str(tmp_path / "rep")),
                 ("train", "--resume", str(run), "--no-progress")):
        r = run_cli(*args)
        assert_one_line_error(r, str(run / file), needle)


def test_sweep_file_without_run_id_is_one_line(tmp_path: Path) -> None:
    sweep = tmp_path / "sw"
    (sweep / "runs").mkdir(parents=True)
    (sweep / "sweep.json").write_text(json.dumps({
        "kind": "mechgrok.sweep", "schema_version": 1, "name": "sw", "spec": {},
        "axes": [], "seeds": None, "runs": [{"point": {}, "seed": 0}]}))
    for args in (("report", str(sweep), "--reports-dir", str(tmp_path)),
                 ("compare", str(sweep), "--reports-dir", str(tmp_path))):
        assert_one_line_error(run_cli(*args), "sweep.json", "run_id")
    (sweep / "sweep.json").write_text(json.dumps({
        "kind": "mechgrok.sweep", "schema_version": 1, "name": "sw", "spec": {},
        "axes": [], "seeds": None, "runs": [{"run_id": "../../etc", "point": {}, "seed": 0}]}))
    assert_one_line_error(run_cli("compare", str(sweep), "--reports-dir", str(tmp_path)),
                          "sweep.json", "run id")


# ------------------------------------------------------------------------------------------
# 12. a run killed before its first manifest is recovered
# ------------------------------------------------------------------------------------------
def _stillborn(path: Path, cfg, with_config: bool = True) -> None:
    """What a process killed right after creating the run directory leaves (older mechgrok:
    the folder, ckpt/, the lock and possibly the config; nothing else)."""
    (path / "ckpt").mkdir(parents=True)
    (path / "run.lock").write_text("12345\n")
    if with_config:
        (path / "config.json").write_text(cfg.to_json())


def test_stillborn_run_is_recovered_by_train_resume_and_run(tmp_path: Path) -> None:
    cfg = tiny_config(**{"train.epochs": 10})
    cfg_file = tmp_path / "c.json"
    cfg_file.write_text(cfg.to_json())
    out = tmp_path / "out"
    _stillborn(out / "a", cfg)
    r = run_cli("train", "--config", str(cfg_file), "--out-dir", str(out), "--name", "a",
                "--no-progress")
    assert r.returncode == 0, r.stderr
    assert Run(out / "a").status == "finished"
    _stillborn(out / "b", cfg)
    r = run_cli("train", "--resume", str(out / "b"), "--no-progress")
    assert r.returncode == 0, r.stderr
    assert Run(out / "b").status == "finished"
    _stillborn(out / "c", cfg, with_config=False)
    assert_one_line_error(run_cli("train", "--resume", str(out / "c")), "no run to resume")


def test_stillborn_runs_are_recovered_by_a_sweep_relaunch(tmp_path: Path) -> None:
    from mechgrok.sweep import _write_sweep_file, expand, load_sweep_spec

    sweep_file = tmp_path / "s.toml"
    sweep_file.write_text(
        'preset = "quick"\n[task]\np = 11\nfrac_train = 0.5\n'
        '[model]\nd_model = 16\nn_heads = 2\nd_head = 8\nd_mlp = 32\n'
        '[train]\nepochs = 10\neval_every = 5\ncheckpoint_every = 5\ndense_until = 0\n'
        '[sweep]\nname = "sb"\nseeds = 2\n')
    out = tmp_path / "out"
    spec = load_sweep_spec(sweep_file)
    points = expand(spec)
    (out / "sb" / "runs").mkdir(parents=True)
    _write_sweep_file(out / "sb", spec, points, {})  # written before any run starts
    for pt in points:
        _stillborn(out / "sb" / "runs" / pt.run_id, pt.config)
    for extra in ((), ("--vmap-seeds", "2")):
        r = run_cli("sweep", str(sweep_file), "--out-dir", str(out), "--workers", "1",
                    "--no-analyze", "--no-report", *extra)
        assert r.returncode == 0, r.stderr
        for pt in points:
            assert Run(out / "sb" / "runs" / pt.run_id).status == "finished"
        for pt in points:  # again, with the vmapped trainer
            shutil.rmtree(out / "sb" / "runs" / pt.run_id)
            _stillborn(out / "sb" / "runs" / pt.run_id, pt.config)


def test_new_run_directories_appear_whole(tmp_path: Path) -> None:
    """A run directory is built under a temporary name and renamed into place: a kill at any
    moment leaves either no run directory or one with its manifest."""
    cfg_file = tmp_path / "c.json"
    cfg_file.write_text(tiny_config(**{"train.epochs": 400}).to_json())
    out = tmp_path / "out"
    proc = subprocess.Popen([os.sys.executable, "-m", "mechgrok", "train", "--config",
                             str(cfg_file), "--out-dir", str(out), "--name", "w",
                             "--no-progress"], stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    seen_without_manifest = False
    try:
        while proc.poll() is None:
            if (out / "w").exists() and not (out / "w" / MANIFEST_FILE).exists():
                seen_without_manifest = True
    finally:
        with contextlib.suppress(ProcessLookupError):
            proc.kill()
        proc.communicate()
    assert not seen_without_manifest


# ------------------------------------------------------------------------------------------
# 16. smaller ones
# ------------------------------------------------------------------------------------------
def test_diverged_run_exits_non_zero_and_is_final(tmp_path: Path) -> None:
    out = tmp_path / "out"
    r = run_cli("train", "--out-dir", str(out), "--name", "d", "--no-progress",
                "--set", "task.p=11", "--set", "train.epochs=200", "--set", "train.lr=1e6",
                "--set", "train.loss_dtype=float32", "--set", "train.warmup_steps=0",
                "--set", "train.eval_every=1")
    assert_one_line_error(r, "diverged")
    run = Run(out / "d")
    assert run.status == "diverged"
    n = len(run.metrics())
    r = run_cli("train", "--resume", str(out / "d"), "--no-progress")
    assert_one_line_error(r, "diverged")
    assert len(Run(out / "d").metrics()) == n  # nothing appended
    text = (out / "d" / "metrics.jsonl").read_text() + (out / "d" / MANIFEST_FILE).read_text()
    assert "NaN" not in text and "Infinity" not in text  # standard JSON


def test_resume_accepts_threads(interrupted: Path, tmp_path: Path) -> None:
    run = _copy(interrupted, tmp_path / "r")
    r = run_cli("train", "--resume", str(run), "--threads", "1", "--no-progress")
    assert r.returncode == 0, r.stderr
    assert Run(run).status == "finished"
    assert json.loads((run / "config.json").read_text())["train"]["threads"] == 1


def test_report_of_dot_is_named_after_the_run(trained: Path, tmp_path: Path) -> None:
    run = _copy(trained, tmp_path / "myrun")
    r = run_cli("report", ".", "--reports-dir", str(tmp_path / "rep"), cwd=run)
    assert r.returncode == 0, r.stderr
    assert (tmp_path / "rep" / "myrun.html").is_file()
    assert not (tmp_path / "rep" / ".html").exists()


def test_os_error_has_one_colon(tmp_path: Path) -> None:
    ro = tmp_path / "ro"
    ro.mkdir()
    (ro / "sub").write_text("a file where a folder should be")
    r = run_cli("train", "--out-dir", str(ro / "sub"), "--set", "train.epochs=5",
                "--no-progress")
    assert r.returncode != 0
    assert "error::" not in r.stderr and "Traceback" not in r.stderr


def test_full_disk_during_analyze_gives_the_right_advice(trained: Path, tmp_path: Path) -> None:
    from tests.test_training import _small_disk

    size = sum(p.stat().st_size for p in trained.rglob("*") if p.is_file())
    with _small_disk(tmp_path / "disk", size // 1024 + 200) as disk:
        run = _copy(trained, disk / "r")
        with contextlib.suppress(OSError):  # fill what is left
            with open(disk / "filler", "wb") as fh:
                while True:
                    fh.write(b"\0" * 4096)
                    fh.flush()
        before = _tree(run)
        r = run_cli("analyze", str(run), "--no-progress")
        assert r.returncode == 3, r
        assert_one_line_error(r, "no space left", "run the same command again")
        assert "--resume" not in r.stderr
        after = _tree(run)
        assert {k: v for k, v in after.items() if k in before} == before


def test_user_probe_from_the_current_folder_needs_no_pythonpath(trained: Path,
                                                                  tmp_path: Path) -> None:
    run = _copy(trained, tmp_path / "r")
    here = tmp_path / "work"
    here.mkdir()
    (here / "myprobes_cwd.py").write_text(
        "from mechgrok.probes import Probe\n\n"
        "class MyProbe(Probe):\n    name = 'my_probe'\n\n"
        "    def compute(self, ctx):\n        return {'epoch_twice': 2 * ctx.epoch}\n")
    env = {k: v for k, v in os.environ.items() if k != "PYTHONPATH"}
    script = Path(os.sys.executable).parent / "mechgrok"  # the console script (not python -m,
    # which would put the current folder on sys.path by itself)
    proc = subprocess.run([str(script), "analyze", str(run), "--probe",
                           "myprobes_cwd:MyProbe", "--no-progress"], cwd=here, env=env,
                          capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr
    rows = [json.loads(ln) for ln in (run / "analysis" / "measures.jsonl").read_text().splitlines()]
    assert {r["values"]["epoch_twice"] for r in rows if r["probe"] == "my_probe"} == {
        2 * e for e in range(0, 61, 10)}


@pytest.mark.parametrize("link", ["analysis", "analysis/arrays"])
def test_analyze_never_writes_through_a_symlinked_folder(trained: Path, tmp_path: Path,
                                                         link: str) -> None:
    run = _copy(trained, tmp_path / "r")
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    (elsewhere / "keep.txt").write_text("mine")
    shutil.rmtree(run / "analysis", ignore_errors=True)
    if link == "analysis/arrays":
        (run / "analysis").mkdir()
    (run / link).symlink_to(elsewhere)
    r = run_cli("analyze", str(run), "--no-progress")
    assert_one_line_error(r, "symlink", link.split("/")[-1])
    assert sorted(p.name for p in elsewhere.iterdir()) == ["keep.txt"]
