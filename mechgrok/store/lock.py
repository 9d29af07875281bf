"""The one lock of mechgrok's directories: an exclusive, non-blocking ``flock`` on a lock file.

Training holds ``<run>/run.lock``; an analysis holds ``<run>/analysis/analyze.lock``; removing or
replacing a run takes both. Nobody waits for a lock: a lock held by another process is a
:class:`~mechgrok.errors.RunDirError` saying who holds it and what to do. A lock dies with its
process, so a killed process never leaves a directory locked.
"""

from __future__ import annotations

import contextlib
import fcntl
import os
from collections.abc import Iterator
from pathlib import Path

from mechgrok.errors import RunDirError
from mechgrok.store.layout import ANALYSIS_DIR, ANALYSIS_LOCK_FILE, LOCK_FILE

__all__ = ["held_lock", "is_locked", "release_lock", "run_busy", "try_lock"]


def try_lock(lock_path: Path, busy: str, *, create: bool = True) -> int | None:
    """Take the ``flock`` on ``lock_path`` without waiting; returns its fd (None when ``create``
    is False and there is no lock file). A lock held by another process is a
    :class:`RunDirError` saying ``busy``. The one lock of the run directory and of its analysis."""
    flags = os.O_RDWR | os.O_NOFOLLOW | (os.O_CREAT if create else 0)
    try:
        fd = os.open(lock_path, flags, 0o644)
    except FileNotFoundError:
        if create:
            raise
        return None
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        os.close(fd)
        raise RunDirError(busy) from None
    except BaseException:  # any other failure: the fd is not leaked
        os.close(fd)
        raise
    return fd


def release_lock(fd: int | None) -> None:
    """Release and close a lock taken by :func:`try_lock` (None or -1: nothing to do)."""
    if fd is not None and fd >= 0:
        with contextlib.suppress(OSError):
            fcntl.flock(fd, fcntl.LOCK_UN)
        with contextlib.suppress(OSError):
            os.close(fd)


@contextlib.contextmanager
def held_lock(lock_path: Path, busy: str, *, create: bool = True) -> Iterator[int | None]:
    """:func:`try_lock` for the ``with`` block, released after it; yields the fd (None when
    ``create`` is False and there is no lock file)."""
    fd = try_lock(lock_path, busy, create=create)
    try:
        yield fd
    finally:
        release_lock(fd)


def run_busy(path: Path) -> str:
    """What a training lock held by another process means (the :class:`RunDirError`'s text)."""
    return (f"run directory {path} is in use by another mechgrok process; wait for it to "
            f"finish or stop it before training into this directory")


def is_locked(path: Path) -> bool:
    """Whether another process holds the run's training lock or its analysis lock. Creates no
    file, holds nothing after it returns and leaves no file descriptor open."""
    for lock in (path / LOCK_FILE, path / ANALYSIS_DIR / ANALYSIS_LOCK_FILE):
        try:
            fd = try_lock(lock, "", create=False)
        except RunDirError:
            return True
        except OSError:
            continue
        release_lock(fd)
    return False
