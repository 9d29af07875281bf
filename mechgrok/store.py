"""The run directory (a **contract**: users' saved runs depend on it).

``checkpoints/<run-id>/`` holds:

* ``config.json``: the fully resolved :class:`~mechgrok.config.RunConfig` (kind, schema version);
* ``manifest.json``: status, every checkpoint (epoch, step, file, size, SHA-256), the resume file,
  the split's SHA-256, package versions;
* ``split.safetensors``: the train and test indices into the task's row-major pair list;
* ``metrics.jsonl``: one JSON object per evaluation (epoch, step, losses, accuracies, weight norm);
* ``ckpt/epoch_NNNNNNN.safetensors``: model parameters after that many epochs (tensors only);
* ``resume_epoch_NNNNNNN.safetensors``: optimiser and RNG state at the last checkpoint, for
  ``--resume`` (tensors plus JSON metadata; one file, renamed per checkpoint);
* ``run.lock``: held (``flock``) by the process training into the directory.

Every file is written atomically: a temporary file in the same folder, ``fsync``, ``rename``, then
``fsync`` of the folder, so a crash or a full disk leaves either the old file or the new one, never
a torn one. The manifest is rewritten after each checkpoint; a checkpoint not in the manifest is
ignored (it was written just before a crash). ``metrics.jsonl`` is rewritten whole (atomically) at
every checkpoint and at most every few seconds in between.

Nothing here ever unpickles: checkpoints are safetensors, metadata is JSON.
"""

from __future__ import annotations

import contextlib
import errno
import fcntl
import hashlib
import json
import os
import platform
import tempfile
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from mechgrok.config import RunConfig
from mechgrok.errors import CheckpointError, ConfigError, DiskFullError, RunDirError

MANIFEST_KIND = "mechgrok.manifest"
MANIFEST_SCHEMA_VERSION = 1
CONFIG_FILE = "config.json"
MANIFEST_FILE = "manifest.json"
METRICS_FILE = "metrics.jsonl"
SPLIT_FILE = "split.safetensors"
RESUME_PREFIX = "resume_epoch_"
LOCK_FILE = "run.lock"
CKPT_DIR = "ckpt"

_NO_SPACE = {errno.ENOSPC, errno.EDQUOT, errno.EFBIG}


# --------------------------------------------------------------------------------------------
# Atomic writes
# --------------------------------------------------------------------------------------------
def _fsync_dir(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def atomic_write_bytes(path: Path, data: bytes) -> None:
    """Write ``data`` to ``path`` atomically; on failure the old file (if any) is untouched.

    A full disk raises :class:`DiskFullError` naming the file; the temporary file is removed.
    """
    path = Path(path)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        try:
            view = memoryview(data)
            while view:
                n = os.write(fd, view)
                view = view[n:]
            os.fsync(fd)
        finally:
            os.close(fd)
        os.replace(tmp, path)
    except BaseException as e:
        with contextlib.suppress(OSError):
            os.unlink(tmp)
        if isinstance(e, OSError) and e.errno in _NO_SPACE:
            raise DiskFullError(
                f"no space left to write {path} ({os.strerror(e.errno)}); the run directory's "
                f"earlier checkpoints are intact: free some space, then continue with "
                f"`mechgrok train --resume {path.parent if path.parent.name != CKPT_DIR else path.parent.parent}`"
            ) from None
        raise
    _fsync_dir(path.parent)


def atomic_write_json(path: Path, obj: Any) -> None:
    atomic_write_bytes(path, (json.dumps(obj, indent=2) + "\n").encode())


def sha256_bytes(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


# --------------------------------------------------------------------------------------------
# Tensors in safetensors (never pickle)
# --------------------------------------------------------------------------------------------
def tensors_to_bytes(tensors: dict[str, Any], metadata: dict[str, str] | None = None) -> bytes:
    from safetensors.torch import save

    flat = {k: v.detach().contiguous().cpu() for k, v in tensors.items()}
    return save(flat, metadata=metadata)


def tensors_from_bytes(data: bytes, what: str) -> tuple[dict[str, Any], dict[str, str]]:
    """Parse safetensors bytes; any malformation is a :class:`CheckpointError` naming ``what``."""
    from safetensors.torch import load

    try:
        tensors = load(data)
        header_len = int.from_bytes(data[:8], "little")
        header = json.loads(data[8 : 8 + header_len])
    except Exception as e:  # safetensors raises several types for malformed input
        raise CheckpointError(
            f"{what} is not a readable safetensors file ({type(e).__name__}: {e}); "
            f"it may be truncated or corrupt"
        ) from None
    return tensors, dict(header.get("__metadata__", {}) or {})


def package_versions() -> dict[str, str]:
    import numpy
    import torch

    import mechgrok

    out = {"mechgrok": mechgrok.__version__, "python": platform.python_version(),
           "torch": torch.__version__, "numpy": numpy.__version__}
    with contextlib.suppress(Exception):
        import safetensors

        out["safetensors"] = safetensors.__version__
    return out


# --------------------------------------------------------------------------------------------
# Reading a run
# --------------------------------------------------------------------------------------------
@dataclass(frozen=True)
class CheckpointInfo:
    epoch: int
    step: int
    file: str
    size: int
    sha256: str

    def to_dict(self) -> dict[str, Any]:
        return {"epoch": self.epoch, "step": self.step, "file": self.file, "size": self.size,
                "sha256": self.sha256}


def resolve_run_path(run: str | Path, root: str | Path = "checkpoints") -> Path:
    """A run given as a path, or as an id under ``root``."""
    p = Path(run)
    if p.exists():
        return p
    q = Path(root) / str(run)
    if q.exists():
        return q
    raise RunDirError(f"run directory {str(run)!r} not found (looked in . and {root}/)")


class Run:
    """A run directory, read-only: config, manifest, checkpoints (verified), metrics, split."""

    def __init__(self, path: str | Path):
        self.path = Path(path)
        if not self.path.is_dir():
            raise RunDirError(f"{self.path} is not a directory, so it is not a mechgrok run")
        cfg_path = self.path / CONFIG_FILE
        man_path = self.path / MANIFEST_FILE
        if not cfg_path.is_file() or not man_path.is_file():
            raise RunDirError(
                f"{self.path} is not a mechgrok run directory (no {CONFIG_FILE} / {MANIFEST_FILE}); "
                f"`mechgrok train` creates one"
            )
        self.config = _read_config(cfg_path)
        self.manifest = _read_json(man_path, "manifest")
        if self.manifest.get("kind") != MANIFEST_KIND:
            raise RunDirError(f"{man_path} is not a mechgrok manifest")

    @property
    def id(self) -> str:
        return self.path.name

    @property
    def status(self) -> str:
        return str(self.manifest.get("status", "unknown"))

    def checkpoints(self) -> list[CheckpointInfo]:
        return [CheckpointInfo(**c) for c in self.manifest.get("checkpoints", [])]

    def checkpoint(self, epoch: int | None = None) -> CheckpointInfo:
        """The checkpoint at ``epoch`` (the last one when None)."""
        cks = self.checkpoints()
        if not cks:
            raise RunDirError(f"run {self.id} has no checkpoints yet")
        if epoch is None:
            return cks[-1]
        for c in cks:
            if c.epoch == epoch:
                return c
        raise RunDirError(f"run {self.id} has no checkpoint at epoch {epoch}; it has "
                          f"{len(cks)} from epoch {cks[0].epoch} to {cks[-1].epoch}")

    def load_state(self, ck: CheckpointInfo | int | None = None) -> dict[str, Any]:
        """A checkpoint's tensors, after checking its size and SHA-256 against the manifest."""
        if not isinstance(ck, CheckpointInfo):
            ck = self.checkpoint(ck)
        return read_verified(self.path / ck.file, ck.size, ck.sha256)[0]

    def load_model(self, ck: CheckpointInfo | int | None = None):
        """The hooked model at a checkpoint (the last one when None)."""
        from mechgrok.models import build_model

        model = build_model(self.config)
        state = self.load_state(ck)
        missing = set(model.state_dict()) ^ set(state)
        if missing:
            name = ck.file if isinstance(ck, CheckpointInfo) else f"epoch {ck}"
            raise CheckpointError(f"checkpoint {name} of run {self.id} does not match its config "
                                  f"(parameters differ: {sorted(missing)[:4]})")
        model.load_state_dict(state)
        return model.eval()

    def iter_models(self) -> Iterator[tuple[CheckpointInfo, Any]]:
        for ck in self.checkpoints():
            yield ck, self.load_model(ck)

    def metrics(self) -> list[dict[str, Any]]:
        return read_metrics(self.path / METRICS_FILE)

    def split(self) -> tuple[Any, Any]:
        """(train_idx, test_idx) as int64 tensors, verified against the manifest's hash."""
        data = (self.path / SPLIT_FILE).read_bytes() if (self.path / SPLIT_FILE).is_file() else None
        if data is None:
            raise RunDirError(f"run {self.id} has no {SPLIT_FILE}")
        tensors, _ = tensors_from_bytes(data, f"{self.path / SPLIT_FILE}")
        return tensors["train_idx"], tensors["test_idx"]

    def dataset(self):
        """The task's dataset with this run's stored split (a :class:`~mechgrok.tasks.TaskData`)."""
        import dataclasses

        from mechgrok.tasks import make_dataset

        t = self.config.task
        data = make_dataset(t.name, t.p, t.frac_train, t.data_seed)
        train_idx, test_idx = self.split()
        data = dataclasses.replace(data, train_idx=train_idx.numpy(), test_idx=test_idx.numpy())
        want = self.manifest.get("split_sha256")
        if want and data.split_sha256() != want:
            raise CheckpointError(f"{self.path / SPLIT_FILE} does not match the manifest's split "
                                  f"hash; the run directory was altered")
        return data


def read_verified(path: Path, size: int | None, sha256: str | None) -> tuple[dict, dict]:
    if not path.is_file():
        raise CheckpointError(f"checkpoint {path} is missing")
    data = path.read_bytes()
    if size is not None and len(data) != size:
        raise CheckpointError(
            f"checkpoint {path} is {len(data)} bytes but the manifest says {size}: it is "
            f"truncated or was replaced"
        )
    if sha256 is not None and sha256_bytes(data) != sha256:
        raise CheckpointError(f"checkpoint {path} fails its SHA-256 check: it was altered or "
                              f"corrupted after it was written")
    return tensors_from_bytes(data, f"checkpoint {path}")


def read_metrics(path: Path) -> list[dict[str, Any]]:
    if not path.is_file():
        return []
    out = []
    for line in path.read_text().splitlines():
        line = line.strip()
        if not line:
            continue
        try:
            out.append(json.loads(line))
        except json.JSONDecodeError:
            break  # a torn last line (never written by mechgrok, but tolerate edited files)
    return out


def _read_json(path: Path, what: str) -> dict[str, Any]:
    try:
        obj = json.loads(path.read_text())
    except (OSError, ValueError) as e:
        raise RunDirError(f"cannot read the {what} {path}: {e}") from None
    if not isinstance(obj, dict):
        raise RunDirError(f"the {what} {path} is not a JSON object")
    return obj


def _read_config(path: Path) -> RunConfig:
    try:
        return RunConfig.from_dict(_read_json(path, "config"))
    except ConfigError as e:
        raise RunDirError(f"{path}: {e}") from None


# --------------------------------------------------------------------------------------------
# Writing a run
# --------------------------------------------------------------------------------------------
class RunWriter:
    """Creates or reopens a run directory for training; holds its lock until :meth:`close`."""

    def __init__(self, path: Path, manifest: dict[str, Any], lock_fd: int):
        self.path = path
        self.manifest = manifest
        self._lock_fd = lock_fd
        self.metrics: list[dict[str, Any]] = []

    # -- opening -------------------------------------------------------------------------------
    @staticmethod
    def _lock(path: Path) -> int:
        fd = os.open(path / LOCK_FILE, os.O_RDWR | os.O_CREAT, 0o644)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            os.close(fd)
            raise RunDirError(
                f"run directory {path} is in use by another mechgrok process; wait for it to "
                f"finish or stop it before training into this directory"
            ) from None
        os.ftruncate(fd, 0)
        os.write(fd, f"{os.getpid()}\n".encode())
        return fd

    @classmethod
    def create(cls, path: Path, config: RunConfig, split_tensors: dict[str, Any],
               split_sha256: str) -> RunWriter:
        path = Path(path)
        if path.exists() and any(path.iterdir()):
            raise RunDirError(
                f"{path} already exists; continue it with `mechgrok train --resume {path}`, or "
                f"choose another --name (or --overwrite to replace it)"
            )
        path.mkdir(parents=True, exist_ok=True)
        (path / CKPT_DIR).mkdir(exist_ok=True)
        fd = cls._lock(path)
        try:
            atomic_write_json(path / CONFIG_FILE, config.to_dict())
            atomic_write_bytes(path / SPLIT_FILE, tensors_to_bytes(split_tensors))
            manifest = {
                "kind": MANIFEST_KIND,
                "schema_version": MANIFEST_SCHEMA_VERSION,
                "run_id": path.name,
                "status": "running",
                "split_sha256": split_sha256,
                "versions": package_versions(),
                "checkpoints": [],
                "resume": None,
            }
            w = cls(path, manifest, fd)
            w.write_manifest()
            w.write_metrics()
        except BaseException:
            os.close(fd)
            raise
        return w

    @classmethod
    def reopen(cls, path: Path) -> RunWriter:
        run = Run(path)  # validates config and manifest
        fd = cls._lock(run.path)
        w = cls(run.path, run.manifest, fd)
        w.metrics = run.metrics()
        return w

    def close(self) -> None:
        if self._lock_fd >= 0:
            with contextlib.suppress(OSError):
                fcntl.flock(self._lock_fd, fcntl.LOCK_UN)
                os.close(self._lock_fd)
            self._lock_fd = -1

    def __enter__(self) -> RunWriter:
        return self

    def __exit__(self, *exc: Any) -> None:
        self.close()

    # -- writing -------------------------------------------------------------------------------
    def write_manifest(self) -> None:
        atomic_write_json(self.path / MANIFEST_FILE, self.manifest)

    def write_metrics(self) -> None:
        body = "".join(json.dumps(m) + "\n" for m in self.metrics)
        atomic_write_bytes(self.path / METRICS_FILE, body.encode())

    def write_checkpoint(self, epoch: int, step: int, state: dict[str, Any],
                         resume_state: dict[str, Any], resume_meta: dict[str, Any]) -> None:
        """Checkpoint file, then resume state, then metrics, then the manifest that names them.

        A crash between any two leaves the previous manifest, which still describes a consistent
        run (files it does not name are ignored and overwritten on resume).
        """
        rel = f"{CKPT_DIR}/epoch_{epoch:07d}.safetensors"
        # One metadata key: safetensors writes a metadata dict in no fixed order, and the same
        # weights must give the same bytes (and SHA-256) every time.
        meta = json.dumps({"format": "mechgrok.checkpoint/1", "epoch": epoch, "step": step})
        data = tensors_to_bytes(state, {"mechgrok": meta})
        atomic_write_bytes(self.path / rel, data)
        info = CheckpointInfo(epoch, step, rel, len(data), sha256_bytes(data))
        # The resume file gets a new name each time, so the manifest on disk always names a
        # resume file that matches its recorded hash; the previous one goes once it is unnamed.
        rrel = f"{RESUME_PREFIX}{epoch:07d}.safetensors"
        rdata = tensors_to_bytes(resume_state, {"resume": json.dumps(resume_meta)})
        atomic_write_bytes(self.path / rrel, rdata)
        self.write_metrics()
        old_resume = (self.manifest.get("resume") or {}).get("file")
        cks = [c for c in self.manifest["checkpoints"] if c["epoch"] < epoch]
        self.manifest["checkpoints"] = [*cks, info.to_dict()]
        self.manifest["resume"] = {"file": rrel, "epoch": epoch, "size": len(rdata),
                                   "sha256": sha256_bytes(rdata)}
        self.write_manifest()
        if old_resume and old_resume != rrel:
            with contextlib.suppress(OSError):
                os.unlink(self.path / old_resume)

    def remove_strays(self) -> None:
        """Delete temporary files and checkpoint/resume files the manifest does not name (left
        by a process killed between writing a file and the manifest that names it)."""
        named = {c["file"] for c in self.manifest.get("checkpoints", [])}
        if self.manifest.get("resume"):
            named.add(self.manifest["resume"]["file"])
        for folder in (self.path, self.path / CKPT_DIR):
            if not folder.is_dir():
                continue
            for f in folder.iterdir():
                rel = f.relative_to(self.path).as_posix()
                stray_tmp = f.name.startswith(".") and f.name.endswith(".tmp")
                stray_ck = rel.startswith(f"{CKPT_DIR}/") and f.suffix == ".safetensors"
                stray_resume = f.name.startswith(RESUME_PREFIX)
                if (stray_tmp or stray_ck or stray_resume) and rel not in named:
                    with contextlib.suppress(OSError):
                        f.unlink()

    def set_status(self, status: str, **extra: Any) -> None:
        self.manifest["status"] = status
        self.manifest.update(extra)
        self.write_metrics()
        self.write_manifest()

    def read_resume(self) -> tuple[dict[str, Any], dict[str, Any]]:
        r = self.manifest.get("resume")
        if not r:
            raise CheckpointError(f"run {self.path} has no resume state yet; start it again")
        tensors, meta = read_verified(self.path / r["file"], r["size"], r["sha256"])
        try:
            return tensors, json.loads(meta["resume"])
        except (KeyError, ValueError):
            raise CheckpointError(f"{self.path / r['file']} has no resume metadata") from None
