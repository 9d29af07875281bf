"""A run's ``manifest.json``: its status, every checkpoint, the resume file, the split's hash,
and, for a run started from another run's checkpoint (``train --from``), that ``parent``.

Also the one definition of a run's status (:func:`is_final`): ``finished``, ``grokked`` and
``diverged`` runs are final, and nothing (``mechgrok run``, ``train --resume``, a sweep, the
vmapped trainer) trains them further; ``running`` and ``interrupted`` runs can be resumed.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from mechgrok.errors import RunDirError
from mechgrok.store.files import is_nonneg_int
from mechgrok.store.layout import CKPT_FILE_RE, RESUME_FILE_RE, checkpoint_file

__all__ = [
    "EXACT_PREFIX",
    "FINAL_STATUSES",
    "MANIFEST_KIND",
    "MANIFEST_SCHEMA_VERSION",
    "PARENT_KEYS",
    "REDUCED_DTYPES",
    "CheckpointInfo",
    "is_final",
    "validate_manifest",
]

MANIFEST_KIND = "mechgrok.manifest"
MANIFEST_SCHEMA_VERSION = 1
#: a run whose manifest says one of these needs no more training (:func:`is_final`)
FINAL_STATUSES = ("finished", "grokked", "diverged")
#: the resume file's copy of the exact weights, when the checkpoint beside it is stored reduced
EXACT_PREFIX = "model."
REDUCED_DTYPES = ("float16", "bfloat16")
#: the manifest's optional ``parent`` entry (a run started with ``train --from``)
PARENT_KEYS = ("run_id", "path", "epoch", "step", "sha256", "precision")

_SHA_RE = re.compile(r"^[0-9a-f]{64}$")


def is_final(status: str) -> bool:
    """Whether a run with this manifest status has ended: ``finished``, ``grokked`` (it stopped
    after grokking) or ``diverged`` (its loss became NaN or infinite; training it further cannot
    help, so a diverged run is not resumed by ``mechgrok run``, ``train --resume`` or a sweep).
    The one definition every caller reads (also :attr:`mechgrok.store.Run.is_final`)."""
    return status in FINAL_STATUSES


@dataclass(frozen=True)
class CheckpointInfo:
    epoch: int
    step: int
    file: str
    size: int
    sha256: str
    #: the stored weights' precision: "exact" (the model's own dtype), "float16" or "bfloat16"
    precision: str = "exact"

    def to_dict(self) -> dict[str, Any]:
        out = {"epoch": self.epoch, "step": self.step, "file": self.file, "size": self.size,
               "sha256": self.sha256}
        if self.precision != "exact":
            out["precision"] = self.precision
        return out


def _inside(run_path: Path, rel: Any, what: str, where: Path) -> Path:
    """``run_path / rel`` after checking that ``rel`` stays inside the run (no absolute path, no
    ``..``, no symlink leading out)."""
    if not isinstance(rel, str) or not rel or rel.startswith("/") or "\\" in rel:
        raise RunDirError(f"{where}: {what} {rel!r} is not a relative path inside the run")
    parts = rel.split("/")
    if any(part in ("", ".", "..") for part in parts):
        raise RunDirError(f"{where}: {what} {rel!r} leaves the run directory")
    full = run_path / rel
    try:
        inside = full.resolve().is_relative_to(run_path.resolve())
    except OSError:
        inside = False
    if not inside:
        raise RunDirError(f"{where}: {what} {rel!r} resolves outside the run directory")
    return full


def _check_entry(e: Any, where: Path, what: str, pattern: re.Pattern[str],
                 keys: tuple[str, ...]) -> None:
    if not isinstance(e, dict):
        raise RunDirError(f"{where}: {what} is not a JSON object")
    missing = [k for k in keys if k not in e]
    if missing:
        raise RunDirError(f"{where}: {what} has no {', '.join(missing)}")
    for k in keys:
        if k in ("file", "sha256"):
            continue
        if not is_nonneg_int(e[k]):
            raise RunDirError(f"{where}: {what} has {k} {e[k]!r}, not a non-negative integer")
    if not isinstance(e["sha256"], str) or not _SHA_RE.match(e["sha256"]):
        raise RunDirError(f"{where}: {what} has sha256 {e['sha256']!r}, not 64 hex digits")
    if not isinstance(e["file"], str) or not pattern.match(e["file"]):
        raise RunDirError(f"{where}: {what} names file {e['file']!r}, which is not a name "
                          f"mechgrok writes there")


def _check_checkpoints(cks: list[Any], path: Path, run_path: Path) -> None:
    last = -1
    for i, c in enumerate(cks):
        _check_entry(c, path, f"checkpoint entry {i}", CKPT_FILE_RE,
                     ("epoch", "step", "file", "size", "sha256"))
        if c["epoch"] <= last:
            raise RunDirError(f"{path}: checkpoint entry {i} (epoch {c['epoch']}) is out of order")
        if c.get("precision", "exact") not in ("exact", *REDUCED_DTYPES) or set(c) - {
                "epoch", "step", "file", "size", "sha256", "precision"}:
            raise RunDirError(f"{path}: checkpoint entry {i} has fields or a precision mechgrok "
                              f"does not write")
        if c["file"] != checkpoint_file(c["epoch"]):
            raise RunDirError(f"{path}: checkpoint entry {i} names {c['file']!r} for epoch "
                              f"{c['epoch']}")
        last = c["epoch"]
        _inside(run_path, c["file"], f"checkpoint entry {i}", path)


def _check_parent(p: Any, path: Path) -> None:
    """The optional ``parent`` entry of a run started from another run's checkpoint (``train
    --from``): run id, path, epoch, step, the checkpoint's SHA-256 and precision."""
    if not isinstance(p, dict):
        raise RunDirError(f"{path}: parent is not a JSON object")
    missing = [k for k in PARENT_KEYS if k not in p]
    if missing:
        raise RunDirError(f"{path}: parent has no {', '.join(missing)}")
    for k in ("run_id", "path", "precision"):
        if not isinstance(p[k], str):
            raise RunDirError(f"{path}: parent {k} is {p[k]!r:.60}, not a string")
    for k in ("epoch", "step"):
        if not is_nonneg_int(p[k]):
            raise RunDirError(f"{path}: parent {k} is {p[k]!r:.60}, not a non-negative integer")
    if not isinstance(p["sha256"], str) or not _SHA_RE.match(p["sha256"]):
        raise RunDirError(f"{path}: parent sha256 is {p['sha256']!r:.60}, not 64 hex digits")


def validate_manifest(manifest: dict[str, Any], path: Path, run_path: Path) -> None:
    """Refuse a manifest whose entries are missing, mistyped or point outside the run (one line,
    naming the file). Every path the manifest names is confined to the run directory."""
    if manifest.get("kind") != MANIFEST_KIND:
        raise RunDirError(f"{path} is not a mechgrok manifest")
    v = manifest.get("schema_version")
    if not is_nonneg_int(v) or v > MANIFEST_SCHEMA_VERSION:
        raise RunDirError(f"{path} has schema version {v!r}, which this mechgrok does not read "
                          f"({MANIFEST_SCHEMA_VERSION}); upgrade mechgrok")
    if not isinstance(manifest.get("status"), str):
        raise RunDirError(f"{path}: status is missing or not a string")
    split = manifest.get("split_sha256")
    if not isinstance(split, str) or not _SHA_RE.match(split):
        raise RunDirError(f"{path}: split_sha256 is missing or not 64 hex digits, so the run's "
                          f"train/test split cannot be verified")
    cks = manifest.get("checkpoints")
    if not isinstance(cks, list):
        raise RunDirError(f"{path}: checkpoints is missing or not a list")
    _check_checkpoints(cks, path, run_path)
    if "parent" in manifest:
        _check_parent(manifest["parent"], path)
    r = manifest.get("resume")
    if r is not None:
        _check_entry(r, path, "the resume entry", RESUME_FILE_RE,
                     ("epoch", "file", "size", "sha256"))
        _inside(run_path, r["file"], "the resume entry", path)
