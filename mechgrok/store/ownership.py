"""What in a run directory is mechgrok's own, and so what it may remove: a run killed before
its first checkpoint (cleared for a fresh start), and ``--overwrite`` (:func:`remove_run_dir`),
which never deletes a file mechgrok did not write.
"""

from __future__ import annotations

import json
import os
import re
import shutil
from pathlib import Path
from typing import Any

from mechgrok.errors import RunDirError
from mechgrok.store.layout import (
    ANALYSIS_ARRAYS_DIR,
    ANALYSIS_DIR,
    ANALYSIS_LOCK_FILE,
    CKPT_DIR,
    CONFIG_FILE,
    IMPORT_FILE,
    LOCK_FILE,
    MANIFEST_FILE,
    MEASURES_FILE,
    METRICS_FILE,
    OWN_TMP_RE,
    RESUME_FILE_RE,
    SPLIT_FILE,
    SUMMARY_FILE,
    SWEEP_DONE_FILE,
)
from mechgrok.store.lock import release_lock, run_busy, try_lock
from mechgrok.store.manifest import MANIFEST_KIND

__all__ = ["foreign_entries", "is_run_dir", "is_stillborn", "remove_run_dir"]

# what mechgrok itself writes into a run directory, and so what it may remove with it
_OWN_TOP = {CONFIG_FILE, MANIFEST_FILE, METRICS_FILE, SPLIT_FILE, LOCK_FILE, CKPT_DIR,
            ANALYSIS_DIR, IMPORT_FILE}
_OWN_ANALYSIS = {MEASURES_FILE, SUMMARY_FILE, ANALYSIS_ARRAYS_DIR, ANALYSIS_LOCK_FILE,
                 SWEEP_DONE_FILE}
_OWN_CKPT_RE = re.compile(r"^epoch_\d{7}\.safetensors$")
_OWN_ARRAYS_RE = re.compile(r"^epoch_\d{7}\.safetensors$")
_ANY_TMP_RE = re.compile(r"^\..+\.[A-Za-z0-9_]{8}\.tmp$")


def foreign_entries(path: Path) -> list[str]:
    """Entries of a run directory that mechgrok did not write (or that are symlinks)."""
    out: list[str] = []

    def scan(folder: Path, allowed: Any) -> None:
        for f in sorted(folder.iterdir()):
            rel = f.relative_to(path).as_posix()
            if f.is_symlink():
                out.append(rel)
            elif not allowed(f):
                out.append(rel)

    scan(path, lambda f: f.name in _OWN_TOP or _ANY_TMP_RE.match(f.name)
         or (f.is_file() and RESUME_FILE_RE.match(f.name)))
    for name, rule in ((CKPT_DIR, _OWN_CKPT_RE), (ANALYSIS_DIR, None)):
        folder = path / name
        if folder.is_dir() and not folder.is_symlink():
            if rule is not None:
                scan(folder, lambda f, r=rule: f.is_file() and (r.match(f.name)
                                                                 or _ANY_TMP_RE.match(f.name)))
            else:
                scan(folder, lambda f: f.name in _OWN_ANALYSIS or _ANY_TMP_RE.match(f.name))
                arrays = folder / ANALYSIS_ARRAYS_DIR
                if arrays.is_dir() and not arrays.is_symlink():
                    scan(arrays, lambda f: f.is_file() and (_OWN_ARRAYS_RE.match(f.name)
                                                            or _ANY_TMP_RE.match(f.name)))
    return out


def _own_kind(f: Path, kind: str) -> bool:
    try:
        return f.is_file() and not f.is_symlink() and f.stat().st_size < (64 << 20) \
            and json.loads(f.read_text()).get("kind") == kind
    except (OSError, ValueError, AttributeError):
        return False


def is_run_dir(path: Path) -> bool:
    """A directory mechgrok created: a real folder (not a symlink) holding a mechgrok
    ``config.json`` or ``manifest.json``."""
    from mechgrok.config import CONFIG_KIND

    return path.is_dir() and not path.is_symlink() and (
        _own_kind(path / MANIFEST_FILE, MANIFEST_KIND) or _own_kind(path / CONFIG_FILE, CONFIG_KIND))


def remove_run_dir(path: Path) -> list[str] | None:
    """``--overwrite``: remove the run directory at ``path`` and return what was removed (None
    when there was nothing there).

    Only ever removes a mechgrok run directory holding nothing but what mechgrok writes: a
    symlink, a folder that is not a run, a run with files of someone else's (notes, a backup
    checkpoint), or a run that another process is training or analysing is refused, with
    nothing deleted."""
    path = Path(path)
    if not path.exists() and not path.is_symlink():
        return None
    if path.is_symlink() or not path.is_dir():
        raise RunDirError(f"{path} is not a folder mechgrok created (it is a symlink or a "
                          f"file); --overwrite removes only mechgrok run directories")
    if not any(path.iterdir()):
        path.rmdir()
        return [str(path)]
    if not is_run_dir(path) and not is_stillborn(path):
        raise RunDirError(f"{path} is not a mechgrok run directory; --overwrite removes only "
                          f"mechgrok run directories: move it away or choose another --name")
    foreign = foreign_entries(path)
    if foreign:
        more = f" and {len(foreign) - 3} more" if len(foreign) > 3 else ""
        raise RunDirError(f"{path} holds files mechgrok did not write ({', '.join(foreign[:3])}"
                          f"{more}); move them out of the run directory first, nothing was "
                          f"removed")
    fds: list[int | None] = []
    try:
        fds.append(try_lock(path / LOCK_FILE, run_busy(path), create=False))
        fds.append(try_lock(path / ANALYSIS_DIR / ANALYSIS_LOCK_FILE,
                            f"{path} is being analysed by another process; wait for it to "
                            f"finish before replacing it", create=False))
        removed = sorted(p.relative_to(path).as_posix() for p in path.rglob("*") if p.is_file())
        # rename first, so a kill halfway leaves no half-deleted run under the run's name
        trash = path.parent / f".{path.name}.removing.{os.getpid()}"
        os.rename(path, trash)
        shutil.rmtree(trash)
    finally:
        for fd in fds:
            release_lock(fd)
    return [f"{path}/{r}" for r in removed]


def is_stillborn(path: Path) -> bool:
    """A run directory killed before its first checkpoint: nothing in it but an empty
    ``ckpt/``, the lock, the config, the split, mechgrok's temporary files and possibly a
    manifest naming no checkpoint and a ``metrics.jsonl``. (Runs created by this version appear
    whole, by a rename; older ones, or a kill between the manifest and the epoch-0 checkpoint,
    can leave this.)"""
    if not path.is_dir() or path.is_symlink():
        return False
    man = path / MANIFEST_FILE
    if man.exists():
        try:
            m = json.loads(man.read_text()) if man.stat().st_size < (1 << 20) else None
        except (OSError, ValueError):
            return False
        if not (isinstance(m, dict) and m.get("kind") == MANIFEST_KIND
                and m.get("checkpoints") == [] and not m.get("resume")):
            return False
    allowed = {CKPT_DIR, LOCK_FILE, CONFIG_FILE, SPLIT_FILE, MANIFEST_FILE, METRICS_FILE}
    for f in path.iterdir():
        if f.is_symlink() or not (f.name in allowed or OWN_TMP_RE.match(f.name)):
            return False
    ck = path / CKPT_DIR
    return not ck.exists() or (ck.is_dir() and not ck.is_symlink() and not any(ck.iterdir()))

