"""``mechgrok analyze --workers N``: checkpoints computed in worker processes, with results byte
for byte those of one process, and nothing lost when interrupted."""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from mechgrok.analysis import analyze, measures_table
from mechgrok.probes import probe
from mechgrok.store import ANALYSIS_DIR, MEASURES_FILE, SUMMARY_FILE
from mechgrok.training import train
from tests.conftest import ROOT, assert_one_line_error, run_cli, tiny_config


@pytest.fixture(scope="module")
def run21(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A tiny run with 21 checkpoints (enough for two workers of 8 or more each)."""
    path = tmp_path_factory.mktemp("w") / "run"
    train(tiny_config(**{"train.epochs": 200, "train.checkpoint_every": 10}), path,
          progress=False)
    return path


def _copy(src: Path, dst: Path) -> Path:
    shutil.copytree(src, dst, ignore=shutil.ignore_patterns(ANALYSIS_DIR))
    return dst


def _files(run: Path) -> dict[str, bytes]:
    folder = run / ANALYSIS_DIR
    return {p.relative_to(folder).as_posix(): p.read_bytes() for p in sorted(folder.rglob("*"))
            if p.is_file() and not p.name.endswith(".lock")}


def test_two_workers_write_the_same_bytes_as_one(run21: Path, tmp_path: Path) -> None:
    one, two = _copy(run21, tmp_path / "one"), _copy(run21, tmp_path / "two")
    r1 = run_cli("analyze", str(one), "--workers", "1")
    r2 = run_cli("analyze", str(two), "--workers", "2")
    assert r1.returncode == 0 and r2.returncode == 0, (r1.stderr, r2.stderr)
    assert "2 worker processes" in r2.stdout and "worker processes" not in r1.stdout
    a, b = _files(one), _files(two)
    assert sorted(a) == sorted(b) and len(a) == 23  # measures, summary, 21 arrays files
    for name in a:
        if name == SUMMARY_FILE:  # names its run: the two copies differ only there
            sa, sb = json.loads(a[name]), json.loads(b[name])
            assert sa.pop("run") == "one" and sb.pop("run") == "two" and sa == sb
        else:
            assert a[name] == b[name], name
    assert len(measures_table(two)) == 21


def test_user_probes_travel_to_workers_and_lambdas_stay_home(run21: Path, tmp_path: Path
                                                            ) -> None:
    one, two = _copy(run21, tmp_path / "one"), _copy(run21, tmp_path / "two")
    specs = ["loss", "tests.fixtures.user_probes:MaxNeuron", "tests.fixtures.user_probes:logit_norm"]
    r1 = analyze(one, specs, progress=False, workers=1)
    r2 = analyze(two, specs, progress=False, workers=2)
    assert (r1.workers, r2.workers, r2.workers_note) == (1, 2, None)
    assert (one / ANALYSIS_DIR / MEASURES_FILE).read_bytes() == \
        (two / ANALYSIS_DIR / MEASURES_FILE).read_bytes()
    local = probe("local_probe")(lambda ctx: {"e": ctx.epoch})  # cannot be pickled
    three = _copy(run21, tmp_path / "three")
    r3 = analyze(three, ["loss", local], progress=False, workers=2)
    assert r3.workers == 1 and "cannot be sent to workers" in r3.workers_note
    assert [r["local_probe.e"] for r in measures_table(three)] == list(range(0, 201, 10))


def test_interrupted_parallel_analysis_keeps_what_it_wrote(run21: Path, tmp_path: Path) -> None:
    run = _copy(run21, tmp_path / "run")
    measures = run / ANALYSIS_DIR / MEASURES_FILE
    cmd = [sys.executable, "-m", "mechgrok", "analyze", str(run), "--workers", "2", "--probe",
           "tests.fixtures.user_probes:slower", "--probe", "loss"]
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    # SIGINT as a terminal delivers it, even where this test runs with SIGINT ignored (a
    # background job of a non-interactive shell inherits "ignore", and Python keeps it)
    proc = subprocess.Popen(cmd, cwd=ROOT, env=env, stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True, start_new_session=True,
                            preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL))
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline:  # wait for some checkpoints to be written
        if measures.exists() and len(measures.read_text().splitlines()) >= 2:
            break
        time.sleep(0.1)
    os.killpg(proc.pid, signal.SIGINT)  # Ctrl-C: the whole process group, as a terminal does
    out, err = proc.communicate(timeout=60)
    assert proc.returncode != 0 and "Traceback" not in err, err
    kept = [json.loads(line) for line in measures.read_text().splitlines()]
    assert 2 <= len(kept) < 42 and all(r["status"] == "ok" for r in kept)
    time.sleep(1)
    leftover = subprocess.run(["pgrep", "-f", "multiprocessing.spawn"], capture_output=True,
                              text=True).stdout.split()
    assert not [p for p in leftover if _parent(int(p)) == proc.pid]
    # the relaunch computes only what is missing, and the result is an uninterrupted run's
    res = analyze(run, ["tests.fixtures.user_probes:slower", "loss"], progress=False, workers=2)
    assert res.reused == len(kept) and res.computed == 42 - len(kept)
    ref = _copy(run21, tmp_path / "ref")
    analyze(ref, ["tests.fixtures.user_probes:slower", "loss"], progress=False, workers=1)
    assert measures.read_bytes() == (ref / ANALYSIS_DIR / MEASURES_FILE).read_bytes()


def _parent(pid: int) -> int | None:
    try:
        return int(Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[1])
    except (OSError, IndexError, ValueError):
        return None


def test_bad_worker_counts_are_one_line(run21: Path) -> None:
    assert_one_line_error(run_cli("analyze", str(run21), "--workers", "0"), "workers", "1 to")
    with pytest.raises(Exception, match="workers must be"):
        analyze(run21, workers=True)  # type: ignore[arg-type]
