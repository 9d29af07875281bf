"""Writing a run directory: :class:`RunWriter` creates one (whole, by a rename) or reopens one to
resume, holds its lock (:mod:`mechgrok.store.lock`) while training, and writes checkpoints,
resume state, metrics and the manifest in the order that keeps the run consistent after a crash.
"""

from __future__ import annotations

import contextlib
import errno
import json
import os
import shutil
import tempfile
from collections.abc import Callable
from pathlib import Path
from typing import Any

from mechgrok.config import RunConfig
from mechgrok.errors import CheckpointError, MechgrokError, RunDirError
from mechgrok.store.files import (
    atomic_write_bytes,
    atomic_write_json,
    fsync_dir,
    is_nonneg_int,
    json_dumps,
    package_versions,
    read_verified,
    reduce_precision,
    sha256_bytes,
    tensors_to_bytes,
)
from mechgrok.store.layout import (
    CKPT_DIR,
    CONFIG_FILE,
    LOCK_FILE,
    MANIFEST_FILE,
    METRICS_FILE,
    OWN_TMP_RE,
    RESUME_FILE_RE,
    RESUME_PREFIX,
    SPLIT_FILE,
    checkpoint_file,
    resume_file,
)
from mechgrok.store.lock import release_lock, run_busy, try_lock
from mechgrok.store.manifest import (
    EXACT_PREFIX,
    MANIFEST_KIND,
    MANIFEST_SCHEMA_VERSION,
    CheckpointInfo,
    is_final,
)
from mechgrok.store.ownership import foreign_entries, is_stillborn
from mechgrok.store.run import Run

__all__ = ["RunWriter", "existing_run"]


def existing_run(path: Path) -> Run | None:
    """The run at ``path``, or None when there is nothing to continue there (no folder, an empty
    one, or one killed before its first manifest, which is cleared for a fresh start)."""
    path = Path(path)
    if not path.exists() or (path.is_dir() and not any(path.iterdir())):
        return None
    if is_stillborn(path):
        fd = try_lock(path / LOCK_FILE, run_busy(path), create=False)
        try:
            for f in path.iterdir():
                if f.is_dir():
                    f.rmdir()
                else:
                    f.unlink()  # the lock file too: a lock held by fd survives its unlinking
        finally:
            release_lock(fd)
        return None
    return Run(path)


class RunWriter:
    """Creates or reopens a run directory for training; holds its lock until :meth:`close`."""

    def __init__(self, path: Path, manifest: dict[str, Any], lock_fd: int,
                 config: RunConfig | None = None):
        self.path = path
        self.manifest = manifest
        self._lock_fd = lock_fd
        self.config = config
        self.metrics: list[dict[str, Any]] = []
        self._unnamed: list[Path] = []

    # -- opening -------------------------------------------------------------------------------
    @staticmethod
    def _lock(path: Path) -> int:
        fd = try_lock(path / LOCK_FILE, run_busy(path))
        assert fd is not None
        os.ftruncate(fd, 0)
        os.write(fd, f"{os.getpid()}\n".encode())
        return fd

    @classmethod
    def create(cls, path: Path, config: RunConfig, split_tensors: dict[str, Any],
               split_sha256: str, fill: Callable[[RunWriter], None] | None = None,
               parent: dict[str, Any] | None = None) -> RunWriter:
        """A new run directory at ``path`` (absent, empty, or killed before its first manifest).

        The directory is built under a temporary name beside ``path`` (config, split, manifest)
        and renamed into place, so ``path`` never holds a run without its manifest. ``fill``, when
        given, writes the rest of the run (``mechgrok import``: every checkpoint, the metrics, the
        final manifest) into the temporary directory before the rename, so the run appears whole
        or not at all. ``parent``: the manifest's ``parent`` entry of a run started from another
        run's checkpoint (:func:`~mechgrok.store.parent_record`)."""
        path = Path(path)
        if existing_run(path) is not None:
            raise RunDirError(
                f"{path} already exists; continue it with `mechgrok train --resume {path}`, or "
                f"choose another --name (or --overwrite to replace it)"
            )
        path.parent.mkdir(parents=True, exist_ok=True)
        _clear_stale_builds(path)
        build = Path(tempfile.mkdtemp(prefix=f".{path.name}.new-", dir=path.parent))
        fd = -1
        try:
            (build / CKPT_DIR).mkdir()
            fd = cls._lock(build)
            atomic_write_json(build / CONFIG_FILE, config.to_dict())
            atomic_write_bytes(build / SPLIT_FILE, tensors_to_bytes(split_tensors))
            manifest: dict[str, Any] = {
                "kind": MANIFEST_KIND,
                "schema_version": MANIFEST_SCHEMA_VERSION,
                "run_id": path.name,
                "status": "running",
                "split_sha256": split_sha256,
                "versions": package_versions(),
                **({"parent": dict(parent)} if parent is not None else {}),
                "checkpoints": [],
                "resume": None,
            }
            w = cls(build, manifest, fd, config)
            w.write_manifest()
            w.write_metrics()
            if fill is not None:
                fill(w)
            if path.exists():
                path.rmdir()  # empty (existing_run cleared a stillborn one); refuses otherwise
            os.rename(build, path)
            fsync_dir(path.parent)
            w.path = path
        except OSError as e:
            release_lock(fd)
            with contextlib.suppress(OSError):
                shutil.rmtree(build)
            if e.errno in (errno.ENOTEMPTY, errno.EEXIST):
                raise RunDirError(f"{path} was created by another process meanwhile; continue it "
                                  f"with `mechgrok train --resume {path}`") from None
            raise
        except BaseException:
            release_lock(fd)
            with contextlib.suppress(OSError):
                shutil.rmtree(build)
            raise
        return w

    @classmethod
    def reopen(cls, path: Path) -> RunWriter:
        run = Run(path)  # validates config and manifest
        fd = cls._lock(run.path)
        try:
            w = cls(run.path, Run(path).manifest, fd, run.config)  # re-read under the lock
            w.metrics = run.metrics()
        except BaseException:
            release_lock(fd)
            raise
        return w

    def close(self) -> None:
        release_lock(self._lock_fd)
        self._lock_fd = -1

    def __enter__(self) -> RunWriter:
        return self

    def __exit__(self, *exc: Any) -> None:
        self.close()

    # -- writing -------------------------------------------------------------------------------
    def write_manifest(self) -> None:
        atomic_write_json(self.path / MANIFEST_FILE, self.manifest)

    def write_metrics(self) -> None:
        body = "".join(json_dumps(m) + "\n" for m in self.metrics)
        atomic_write_bytes(self.path / METRICS_FILE, body.encode())

    def write_checkpoint(self, epoch: int, step: int, state: dict[str, Any],
                         resume_state: dict[str, Any], resume_meta: dict[str, Any]) -> None:
        """Checkpoint file, then resume state, then metrics, then the manifest that names them.

        A crash between any two leaves the previous manifest, which still describes a consistent
        run (files it does not name are ignored and overwritten on resume).
        """
        rel = checkpoint_file(epoch)
        named = {c["file"] for c in self.manifest["checkpoints"]}
        # written by this process, not yet in the manifest (see stop_after_disk_full)
        self._unnamed = [] if rel in named else [self.path / rel]
        tc = self.config.train if self.config is not None else None
        precision = "exact" if tc is None or tc.stores_exact(epoch) else tc.checkpoint_precision
        info = self.write_checkpoint_file(epoch, step, state, precision)
        if precision != "exact":  # the exact weights travel in the resume file: resume is exact
            resume_state = {**resume_state, **{f"{EXACT_PREFIX}{k}": v for k, v in state.items()}}
        # The resume file gets a new name each time, so the manifest on disk always names a
        # resume file that matches its recorded hash; the previous one goes once it is unnamed.
        rrel = resume_file(epoch)
        rdata = tensors_to_bytes(resume_state, {"resume": json.dumps(resume_meta)})
        if rrel != (self.manifest.get("resume") or {}).get("file"):
            self._unnamed.append(self.path / rrel)
        atomic_write_bytes(self.path / rrel, rdata)
        self.write_metrics()
        old_resume = (self.manifest.get("resume") or {}).get("file")
        cks = [c for c in self.manifest["checkpoints"] if c["epoch"] < epoch]
        self.manifest["checkpoints"] = [*cks, info.to_dict()]
        self.manifest["resume"] = {"file": rrel, "epoch": epoch, "size": len(rdata),
                                   "sha256": sha256_bytes(rdata)}
        self.write_manifest()
        self._unnamed = []
        if old_resume and old_resume != rrel:
            with contextlib.suppress(OSError):
                os.unlink(self.path / old_resume)

    def write_checkpoint_file(self, epoch: int, step: int, state: dict[str, Any],
                              precision: str = "exact") -> CheckpointInfo:
        """Write the checkpoint file of ``epoch`` (not yet named by the manifest) and return its
        manifest entry. ``precision`` ``float16``/``bfloat16`` stores floating tensors rounded to
        it (``train.checkpoint_precision``; loading casts them back)."""
        rel = checkpoint_file(epoch)
        # One metadata key: safetensors writes a metadata dict in no fixed order, and the same
        # weights must give the same bytes (and SHA-256) every time.
        head: dict[str, Any] = {"format": "mechgrok.checkpoint/1", "epoch": epoch, "step": step}
        if precision != "exact":
            head["precision"] = precision
            state = {k: reduce_precision(v, precision) for k, v in state.items()}
        data = tensors_to_bytes(state, {"mechgrok": json.dumps(head)})
        atomic_write_bytes(self.path / rel, data)
        return CheckpointInfo(epoch, step, rel, len(data), sha256_bytes(data), precision)

    def stop_after_disk_full(self) -> None:
        """After a full disk: remove the checkpoint and resume files this process wrote for a
        checkpoint the manifest does not name yet (so the manifest fits), then record the
        status ``interrupted``. Best effort: the disk may not even hold the manifest."""
        for f in self._unnamed:
            with contextlib.suppress(OSError):
                f.unlink()
        self._unnamed = []
        self.manifest["status"] = "interrupted"
        with contextlib.suppress(MechgrokError, OSError):
            self.write_manifest()  # the metrics on disk already match its last checkpoint

    def remove_strays(self) -> None:
        """Delete the temporary files of mechgrok's own atomic writes (``.<file>.<random>.tmp``,
        left by a process killed mid-write) in the run directory and its ``ckpt/``, and resume
        files of an epoch before the one the manifest names (superseded: a process killed between
        writing the manifest and unlinking the previous resume file leaves one; nothing can ever
        read it).

        Nothing else is removed: a checkpoint or later resume file the manifest does not name
        (written just before a crash) is left where it is and overwritten when training reaches
        that epoch again; a user's own files are never touched; a symlinked folder is not
        entered."""
        named = (self.manifest.get("resume") or {}).get("epoch")
        for folder in (self.path, self.path / CKPT_DIR):
            if not folder.is_dir() or folder.is_symlink():
                continue
            for f in folder.iterdir():
                superseded = (folder == self.path and is_nonneg_int(named)
                              and RESUME_FILE_RE.match(f.name) is not None
                              and int(f.name[len(RESUME_PREFIX):][:7]) < named)
                if (OWN_TMP_RE.match(f.name) or superseded) and f.is_file() and not f.is_symlink():
                    with contextlib.suppress(OSError):
                        f.unlink()

    def set_status(self, status: str, **extra: Any) -> None:
        if is_final(status):
            self._exact_last_checkpoint()
        self.manifest["status"] = status
        self.manifest.update(extra)
        self.write_metrics()
        self.write_manifest()

    def _exact_last_checkpoint(self) -> None:
        """A run that ends on a checkpoint stored at reduced precision (it stopped before its
        last epoch) gets that checkpoint rewritten exactly, from the exact weights the resume
        file holds: the final checkpoint, which analysis takes key frequencies from, is exact."""
        cks = self.manifest["checkpoints"]
        if not cks or cks[-1].get("precision", "exact") == "exact" or not self.manifest.get(
                "resume"):
            return
        tensors, meta = self.read_resume()
        last = cks[-1]
        if meta["epoch"] != last["epoch"]:
            return
        state = {k[len(EXACT_PREFIX):]: v for k, v in tensors.items() if k.startswith(EXACT_PREFIX)}
        if not state:
            return
        info = self.write_checkpoint_file(last["epoch"], last["step"], state)
        cks[-1] = info.to_dict()

    def read_resume(self) -> tuple[dict[str, Any], dict[str, Any]]:
        """The resume file's (tensors, metadata), verified: size, SHA-256, and metadata with an
        integer ``epoch``, ``step``, ``grok_streak``, a number ``elapsed_s`` and the shuffling
        generator's state. The tensors' shapes are checked by the trainer, which knows them."""
        r = self.manifest.get("resume")
        if not r:
            raise CheckpointError(f"run {self.path} has no resume state yet; start it again")
        f = self.path / r["file"]
        tensors, meta = read_verified(f, r["size"], r["sha256"])
        try:
            out = json.loads(meta["resume"])
        except (KeyError, ValueError):
            raise CheckpointError(f"{f} has no resume metadata") from None
        if not isinstance(out, dict):
            raise CheckpointError(f"{f}: its resume metadata is not a JSON object")
        for k in ("epoch", "step", "grok_streak"):
            if not is_nonneg_int(out.get(k)):
                raise CheckpointError(f"{f}: resume metadata {k} is {out.get(k)!r}, not a "
                                      f"non-negative integer")
        v = out.get("elapsed_s")
        if isinstance(v, bool) or not isinstance(v, (int, float)):
            raise CheckpointError(f"{f}: resume metadata elapsed_s is {v!r}, not a number")
        if "rng.shuffle" not in tensors:
            raise CheckpointError(f"{f} has no shuffling generator state (rng.shuffle)")
        if out["epoch"] != r["epoch"]:
            raise CheckpointError(f"{f} holds the state of epoch {out['epoch']}, but the manifest "
                                  f"says {r['epoch']}")
        return tensors, out


def _clear_stale_builds(path: Path) -> None:
    """Remove half-built directories of ``path`` (``.<name>.new-*``) left by killed processes
    (only when no process holds their lock)."""
    for d in path.parent.glob(f".{path.name}.new-*"):
        if not d.is_dir() or d.is_symlink() or foreign_entries(d):
            continue
        try:
            fd = try_lock(d / LOCK_FILE, "", create=False)
        except (RunDirError, OSError):
            continue
        try:
            shutil.rmtree(d)
        finally:
            release_lock(fd)
