"""The analysis directory beside a run (a **contract**), written by :func:`mechgrok.analysis.analyze`.

``<run>/analysis/`` holds:

* ``measures.jsonl``: one record per (checkpoint, probe): ``{"epoch", "step", "probe",
  "status": "ok" | "n/a" | "error", "values": {name: number}, "arrays": [names],
  "reason" | "error": text, "probe_id": text, "deps": {…}}``. Appended after each checkpoint
  (one write of whole lines, fsynced: :func:`append_records`); a torn last line from a crash, or
  a line that is not a record of this shape (:func:`valid_record`), is ignored (and so computed
  again), and the file is compacted atomically on the next run (:func:`rewrite_records`).
* ``arrays/epoch_NNNNNNN.safetensors``: each checkpoint's arrays, named ``<probe>.<name>``
  (written atomically, merged with what is there; a probe's old arrays go when it is recomputed).
* ``summary.json``: run-level results (:func:`write_summary`, :func:`read_summary`).
* ``analyze.lock``: held (the one lock, :mod:`mechgrok.store.lock`) by the process analysing the
  run (:func:`hold_analysis_lock`).

A probe's name (:data:`PROBE_NAME_RE`) is part of every record, column and array name, so a
record naming anything else was not written by mechgrok and is ignored.
"""

from __future__ import annotations

import contextlib
import json
import os
import re
from collections.abc import Iterable, Iterator
from pathlib import Path
from typing import Any

from mechgrok.errors import CheckpointError, RunDirError
from mechgrok.store.files import (
    atomic_write_bytes,
    atomic_write_json,
    json_dumps,
    tensors_from_bytes,
    tensors_to_bytes,
)
from mechgrok.store.layout import (
    ANALYSIS_ARRAYS_DIR,
    ANALYSIS_DIR,
    ANALYSIS_LOCK_FILE,
    MEASURES_FILE,
    SUMMARY_FILE,
)
from mechgrok.store.lock import release_lock, try_lock

__all__ = [
    "PROBE_NAME_RE",
    "PROBE_NAME_RULE",
    "STATUSES",
    "analysis_dir",
    "append_records",
    "arrays_dir",
    "arrays_path",
    "check_analysis_folders",
    "hold_analysis_lock",
    "is_probe_name",
    "measures_path",
    "read_arrays",
    "read_records",
    "read_summary",
    "rewrite_records",
    "summary_path",
    "valid_record",
    "write_arrays",
    "write_summary",
]

#: a record's status
STATUSES = ("ok", "n/a", "error")
#: What a probe's name may be: a letter or ``_``, then up to 63 letters, digits, ``_`` or ``-``.
PROBE_NAME_RE = re.compile(r"[A-Za-z_][A-Za-z0-9_-]{0,63}")
PROBE_NAME_RULE = "a letter or '_' followed by up to 63 letters, digits, '_' or '-'"


def is_probe_name(name: Any) -> bool:
    """Whether ``name`` is an allowed probe name (:data:`PROBE_NAME_RE`)."""
    return isinstance(name, str) and PROBE_NAME_RE.fullmatch(name) is not None


# --------------------------------------------------------------------------------------------
# Where things are
# --------------------------------------------------------------------------------------------
def analysis_dir(run_path: str | Path) -> Path:
    """A run's ``analysis/`` folder."""
    return Path(run_path) / ANALYSIS_DIR


def measures_path(run_path: str | Path) -> Path:
    """A run's per-checkpoint measures file, ``analysis/measures.jsonl``."""
    return analysis_dir(run_path) / MEASURES_FILE


def arrays_dir(run_path: str | Path) -> Path:
    """A run's ``analysis/arrays/`` folder."""
    return analysis_dir(run_path) / ANALYSIS_ARRAYS_DIR


def arrays_path(run_path: str | Path, epoch: int) -> Path:
    """The file of one checkpoint's arrays, ``analysis/arrays/epoch_NNNNNNN.safetensors``."""
    return arrays_dir(run_path) / f"epoch_{epoch:07d}.safetensors"


def summary_path(run_path: str | Path) -> Path:
    """A run's ``analysis/summary.json``."""
    return analysis_dir(run_path) / SUMMARY_FILE


def check_analysis_folders(run_path: str | Path) -> None:
    """Refuse to analyse into an ``analysis/`` or ``arrays/`` that is a symlink: every write
    stays inside the run directory."""
    for d in (analysis_dir(run_path), arrays_dir(run_path)):
        if d.is_symlink():
            raise RunDirError(f"{d} is a symlink; mechgrok writes its analysis only inside the "
                              f"run directory: replace it with a folder, then analyse again")


@contextlib.contextmanager
def hold_analysis_lock(run_path: str | Path, *, create: bool = True) -> Iterator[int | None]:
    """Hold ``analysis/analyze.lock`` for the ``with`` block, without waiting (a
    :class:`RunDirError` when another process holds it). ``create`` makes the ``analysis/``
    folder and the lock file; without it, a run with no ``analysis/`` yields None (nothing to
    lock), else the lock's fd."""
    folder = analysis_dir(run_path)
    if create:
        folder.mkdir(exist_ok=True)
    busy = f"{folder.parent} is being analysed by another process; wait for it to finish"
    try:
        fd = try_lock(folder / ANALYSIS_LOCK_FILE, busy, create=create)
    except NotADirectoryError:
        raise RunDirError(f"{folder} is not a folder; move it away, then analyse again") from None
    try:
        yield fd
    finally:
        release_lock(fd)


# --------------------------------------------------------------------------------------------
# measures.jsonl
# --------------------------------------------------------------------------------------------
def _is_int(v: Any) -> bool:
    return isinstance(v, int) and not isinstance(v, bool)


def _is_scalar(v: Any) -> bool:
    return v is None or isinstance(v, (bool, int, float))


def _valid_values(values: Any) -> bool:
    return isinstance(values, dict) and all(
        isinstance(k, str) and k and "." not in k and _is_scalar(v) for k, v in values.items())


def valid_record(r: Any) -> bool:
    """Whether ``r`` has the shape of a measures record (anything else is ignored)."""
    if not isinstance(r, dict):
        return False
    if not _is_int(r.get("epoch")) or r["epoch"] < 0:
        return False
    if not is_probe_name(r.get("probe")):
        return False
    status = r.get("status")
    if status not in STATUSES:
        return False
    if "step" in r and r["step"] is not None and not _is_int(r["step"]):
        return False
    values = r.get("values")
    if status == "ok" and values is None:
        return False
    if values is not None and not _valid_values(values):
        return False
    arrays = r.get("arrays")
    if arrays is not None and not (isinstance(arrays, list)
                                   and all(isinstance(a, str) for a in arrays)):
        return False
    if status == "error" and not isinstance(r.get("error"), str):
        return False
    if "reason" in r and not isinstance(r["reason"], str):
        return False
    if "deps" in r and not isinstance(r["deps"], dict):
        return False
    return "probe_id" not in r or isinstance(r["probe_id"], str)


def read_records(run_path: str | Path, skipped: list[int] | None = None
                 ) -> dict[tuple[int, str], dict[str, Any]]:
    """Latest valid record per (epoch, probe); torn lines and malformed records (a wrong shape,
    a probe name mechgrok never writes) are skipped, their line numbers added to ``skipped``."""
    path = measures_path(run_path)
    out: dict[tuple[int, str], dict[str, Any]] = {}
    if not path.is_file():
        return out
    for i, line in enumerate(path.read_text(errors="replace").splitlines(), 1):
        if not line.strip():
            continue
        try:
            r = json.loads(line)
        except ValueError:
            r = None
        if valid_record(r):
            out[(r["epoch"], r["probe"])] = r
        elif skipped is not None:
            skipped.append(i)
    return out


def rewrite_records(run_path: str | Path, records: Iterable[dict[str, Any]]) -> None:
    """Replace ``measures.jsonl`` with ``records`` (atomically): the compaction of the file."""
    atomic_write_bytes(measures_path(run_path),
                       "".join(json_dumps(r) + "\n" for r in records).encode())


def append_records(run_path: str | Path, records: Iterable[dict[str, Any]]) -> None:
    """Append whole lines to ``measures.jsonl`` in one write, fsynced."""
    data = "".join(json_dumps(r) + "\n" for r in records).encode()
    if not data:
        return
    fd = os.open(measures_path(run_path), os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
    try:
        view = memoryview(data)
        while view:
            view = view[os.write(fd, view):]
        os.fsync(fd)
    finally:
        os.close(fd)


# --------------------------------------------------------------------------------------------
# arrays/ and summary.json
# --------------------------------------------------------------------------------------------
def read_arrays(run_path: str | Path, epoch: int) -> dict[str, Any]:
    """The arrays stored for one checkpoint, as numpy arrays named ``<probe>.<name>`` ({} when
    there are none); a damaged file is a :class:`CheckpointError` naming it."""
    f = arrays_path(run_path, epoch)
    if not f.is_file():
        return {}
    tensors, _ = tensors_from_bytes(f.read_bytes(), str(f))
    return {k: v.numpy() for k, v in tensors.items()}


def write_arrays(run_path: str | Path, epoch: int, arrays: dict[str, Any],
                 replaced: Iterable[str] = ()) -> None:
    """Store a checkpoint's new arrays, dropping what the probes in ``replaced`` stored before
    (a probe computed again must not leave its old arrays beside its new record)."""
    import torch

    f = arrays_path(run_path, epoch)
    prefixes = tuple(f"{name}." for name in replaced)
    if not arrays and not (prefixes and f.is_file()):
        return
    f.parent.mkdir(exist_ok=True)  # analysis/ itself must already be there
    merged: dict[str, Any] = {}
    if f.is_file():
        with contextlib.suppress(CheckpointError):  # a corrupt arrays file is rewritten
            merged, _ = tensors_from_bytes(f.read_bytes(), str(f))
    old = len(merged)
    merged = {k: v for k, v in merged.items() if not k.startswith(prefixes)}
    if not arrays and len(merged) == old:
        return
    for k, v in arrays.items():
        merged[k] = torch.from_numpy(v.copy())
    if merged:
        atomic_write_bytes(f, tensors_to_bytes(merged))
    else:
        with contextlib.suppress(FileNotFoundError):
            f.unlink()


def read_summary(run_path: str | Path) -> dict[str, Any]:
    """The run's ``analysis/summary.json`` ({} when it has not been analysed); a file that is not
    a JSON object is a :class:`RunDirError` naming it."""
    run_path = Path(run_path)
    f = summary_path(run_path)
    if not f.is_file():
        return {}
    try:
        obj = json.loads(f.read_text())
    except (OSError, ValueError) as e:
        why = str(e).splitlines()[0] if str(e) else type(e).__name__
        raise RunDirError(f"cannot read the analysis summary {f} ({why}); `mechgrok analyze "
                          f"{run_path}` writes it again") from None
    if not isinstance(obj, dict):
        raise RunDirError(f"the analysis summary {f} is not a JSON object; `mechgrok analyze "
                          f"{run_path}` writes it again")
    return obj


def write_summary(run_path: str | Path, summary: dict[str, Any]) -> None:
    """Write ``analysis/summary.json`` (atomically)."""
    atomic_write_json(summary_path(run_path), summary)
