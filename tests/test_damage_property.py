"""Property test (issue 12): random damage to every file of a run directory never gives a
traceback or a native crash, an error is one line naming what is wrong, and nothing outside the
run directory (and the reports folder the command was told to write) is touched.

Damage kinds: truncation, byte flips, wrong JSON types, removed keys, path tricks (``..``,
absolute paths, symlinks out of the run), re-hashed tensors of the wrong shape or dtype. The
commands run in this process through :func:`mechgrok.cli.main`, so hundreds of cases fit in a
minute; a native crash would take the test process down with it, which fails the test too.
"""

from __future__ import annotations

import contextlib
import hashlib
import io
import json
import os
import random
import shutil
from pathlib import Path
from typing import Any

import pytest

from mechgrok.store import MANIFEST_FILE
from tests.conftest import tiny_config

N_CASES = int(os.environ.get("MECHGROK_DAMAGE_CASES", "150"))
COMMANDS = ("analyze", "report", "resume", "compare")


@pytest.fixture(scope="module")
def pristine(tmp_path_factory) -> Path:
    """A small trained, analysed and interrupted-looking run (so --resume has work to do)."""
    from mechgrok.analysis import analyze
    from mechgrok.training import train

    root = tmp_path_factory.mktemp("damage")
    path = root / "run"
    train(tiny_config(**{"train.epochs": 20, "train.checkpoint_every": 10}), path, progress=False)
    analyze(path, progress=False)
    man = json.loads((path / MANIFEST_FILE).read_text())
    man["status"] = "interrupted"
    (path / MANIFEST_FILE).write_text(json.dumps(man))
    return path


# ------------------------------------------------------------------------------------------
# Damage
# ------------------------------------------------------------------------------------------
_WEIRD = [None, True, -1, 0, 2**70, 1.5, float("nan"), "", "x", "../../outside",
          "/etc/passwd", [], [1, "a"], {}, {"a": 1}, "<script>alert(1)</script>"]


def _rehash(run: Path, rel: str) -> None:
    """Update the manifest's size and hash of ``rel`` to its current bytes (a forger's move)."""
    mf = run / MANIFEST_FILE
    try:
        man = json.loads(mf.read_text())
        data = (run / rel).read_bytes()
    except (OSError, ValueError):
        return
    entries = [*(man.get("checkpoints") or []), man.get("resume") or {}]
    for e in entries:
        if isinstance(e, dict) and e.get("file") == rel:
            e["size"], e["sha256"] = len(data), hashlib.sha256(data).hexdigest()
    mf.write_text(json.dumps(man))


def _mutate_json(obj: Any, rng: random.Random) -> Any:
    """Replace, delete or retype one randomly chosen node of a JSON tree."""
    if isinstance(obj, dict) and obj and rng.random() < 0.8:
        k = rng.choice(sorted(obj))
        roll = rng.random()
        if roll < 0.25:
            del obj[k]
        elif roll < 0.6:
            obj[k] = rng.choice(_WEIRD)
        else:
            obj[k] = _mutate_json(obj[k], rng)
        return obj
    if isinstance(obj, list) and obj and rng.random() < 0.8:
        i = rng.randrange(len(obj))
        obj[i] = _mutate_json(obj[i], rng) if rng.random() < 0.6 else rng.choice(_WEIRD)
        return obj
    return rng.choice(_WEIRD)


def _damage(run: Path, rng: random.Random, outside: Path) -> str:
    files = sorted(p for p in run.rglob("*") if p.is_file() and p.name not in ("run.lock",
                                                                                "analyze.lock"))
    f = rng.choice(files)
    rel = f.relative_to(run).as_posix()
    data = f.read_bytes()
    kind = rng.choice(["truncate", "flip", "json", "json", "path", "symlink", "tensor",
                       "delete", "empty"])
    if kind == "truncate":
        f.write_bytes(data[: rng.randrange(len(data) + 1)])
    elif kind == "flip":
        b = bytearray(data)
        for _ in range(rng.randint(1, 8)):
            if b:
                b[rng.randrange(len(b))] ^= 1 << rng.randrange(8)
        f.write_bytes(bytes(b))
        if rng.random() < 0.5:
            _rehash(run, rel)
    elif kind == "json" and f.suffix in (".json", ".jsonl"):
        if f.suffix == ".jsonl":
            lines = data.decode().splitlines() or ["{}"]
            i = rng.randrange(len(lines))
            try:
                lines[i] = json.dumps(_mutate_json(json.loads(lines[i]), rng))
            except ValueError:
                lines[i] = "[1, 2"
            f.write_text("\n".join(lines) + "\n")
        else:
            f.write_text(json.dumps(_mutate_json(json.loads(data), rng)))
    elif kind == "path":
        man = json.loads((run / MANIFEST_FILE).read_text())
        trick = rng.choice(["../outside/x.safetensors", str(outside / "x.safetensors"),
                            "ckpt/../../outside/x", "ckpt/epoch_0000010.safetensors/..", "."])
        target = rng.choice(["resume", "checkpoint"])
        if target == "resume" and man.get("resume"):
            man["resume"]["file"] = trick
        elif man.get("checkpoints"):
            rng.choice(man["checkpoints"])["file"] = trick
        (run / MANIFEST_FILE).write_text(json.dumps(man))
        rel = MANIFEST_FILE
    elif kind == "symlink":
        victim = outside / f"victim-{rng.randrange(1 << 30)}"
        victim.write_bytes(data)
        f.unlink()
        f.symlink_to(victim)
    elif kind == "tensor" and f.suffix == ".safetensors":
        import torch

        from mechgrok.store import tensors_from_bytes, tensors_to_bytes

        try:
            tensors, meta = tensors_from_bytes(data, rel)
        except Exception:
            return f"{kind} (unreadable) {rel}"
        if tensors:
            k = rng.choice(sorted(tensors))
            roll = rng.random()
            if roll < 0.4:
                tensors[k] = torch.zeros(rng.randint(1, 9), rng.randint(1, 9))
            elif roll < 0.6:
                tensors[k] = tensors[k].to(torch.float64 if tensors[k].dtype != torch.float64
                                           else torch.int64)
            elif roll < 0.8:
                del tensors[k]
            else:
                tensors[f"{k}.extra"] = torch.zeros(3)
        f.write_bytes(tensors_to_bytes(tensors, meta))
        _rehash(run, rel)
    elif kind == "delete":
        f.unlink()
    else:
        f.write_bytes(b"")
    return f"{kind} {rel}"


# ------------------------------------------------------------------------------------------
# The property
# ------------------------------------------------------------------------------------------
def _run_cli(args: list[str]) -> tuple[int, str]:
    from mechgrok.cli import main

    err = io.StringIO()
    with contextlib.redirect_stderr(err), contextlib.redirect_stdout(io.StringIO()):
        try:
            code = main(args)
        except SystemExit as e:  # argparse
            code = int(e.code or 0)
    return code, err.getvalue()


def _snapshot(folder: Path) -> dict[str, tuple[int, float]]:
    out = {}
    for p in folder.rglob("*"):
        st = p.lstat()
        out[p.relative_to(folder).as_posix()] = (st.st_size, st.st_mtime_ns)
    return out


def test_random_damage_never_crashes_or_escapes(pristine: Path, tmp_path: Path) -> None:
    rng = random.Random(20261129)
    outside = tmp_path / "outside"
    outside.mkdir()
    (outside / "thesis.tex").write_text("years of work")
    tried: dict[str, int] = {}
    failures: list[str] = []
    for case in range(N_CASES):
        work = tmp_path / f"c{case}"
        run = work / "run"
        shutil.copytree(pristine, run, symlinks=True)
        what = _damage(run, rng, outside)
        tried[what.split()[0]] = tried.get(what.split()[0], 0) + 1
        before = _snapshot(outside)
        cmd = COMMANDS[case % len(COMMANDS)]
        args = {"analyze": ["analyze", str(run), "--no-progress"],
                "report": ["report", str(run), "--reports-dir", str(work / "rep")],
                "resume": ["train", "--resume", str(run), "--no-progress"],
                "compare": ["compare", str(run), str(run), "--reports-dir", str(work / "rep")],
                }[cmd]
        try:
            code, err = _run_cli(args)
        except BaseException as e:  # a traceback: the defect this test is for
            failures.append(f"{what} / {cmd}: {type(e).__name__}: {e}")
            continue
        lines = [ln for ln in err.splitlines() if ln.strip()]
        if code != 0:
            errors = [ln for ln in lines if ln.startswith("mechgrok: error:")]
            if not errors or "Traceback" in err:
                failures.append(f"{what} / {cmd}: exit {code} without a one-line error: {err!r}")
            elif os.environ.get("MECHGROK_DAMAGE_SHOW"):
                print(f"{what} / {cmd}: {errors[0][:200]}")
        if _snapshot(outside) != before:
            failures.append(f"{what} / {cmd}: touched files outside the run directory")
        shutil.rmtree(work, ignore_errors=True)
    print(f"damage cases tried: {N_CASES} ({tried})")
    assert not failures, "\n".join(failures[:20])
