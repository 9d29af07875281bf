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
* ``run.lock``: held (``flock``) by the process training into the directory;
* ``imported.json`` (imported runs only): where ``mechgrok import`` read the run from (format,
  source file and its SHA-256, where the split came from, the source's own loss curves).

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
import re
import shutil
import stat
import tempfile
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from mechgrok.config import RunConfig
from mechgrok.errors import (
    CheckpointError,
    ConfigError,
    DiskFullError,
    MechgrokError,
    RunDirError,
)

MANIFEST_KIND = "mechgrok.manifest"
MANIFEST_SCHEMA_VERSION = 1
CONFIG_FILE = "config.json"
MANIFEST_FILE = "manifest.json"
METRICS_FILE = "metrics.jsonl"
SPLIT_FILE = "split.safetensors"
RESUME_PREFIX = "resume_epoch_"
LOCK_FILE = "run.lock"
CKPT_DIR = "ckpt"
# the analysis directory beside the run (written by mechgrok.analysis)
ANALYSIS_DIR = "analysis"
ANALYSIS_LOCK_FILE = "analyze.lock"
MEASURES_FILE = "measures.jsonl"
SUMMARY_FILE = "summary.json"
ANALYSIS_ARRAYS_DIR = "arrays"
SWEEP_DONE_FILE = "sweep_done.json"  # written by mechgrok ≤ 0.1.0 sweeps; still removable
#: where an imported run came from (written by ``mechgrok import``; absent from trained runs)
IMPORT_FILE = "imported.json"
IMPORT_KIND = "mechgrok.import"
#: a run whose manifest says one of these needs no more training (one definition: ``train
#: --resume``, ``run``, sweeps and the vmapped trainer all read it)
FINAL_STATUSES = ("finished", "grokked", "diverged")

#: a run name (and a sweep name): one path component, so it always lands inside its out-dir
NAME_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,199}$")
_CKPT_FILE_RE = re.compile(rf"^{CKPT_DIR}/epoch_\d{{7}}\.safetensors$")
_RESUME_FILE_RE = re.compile(rf"^{RESUME_PREFIX}\d{{7}}\.safetensors$")
_SHA_RE = re.compile(r"^[0-9a-f]{64}$")
# the temporary names atomic_write_bytes gives (mkstemp: ".<name>.<8 random chars>.tmp") for the
# files mechgrok writes into a run directory: the only strays it may ever delete
_OWN_TMP_RE = re.compile(
    r"^\.(config\.json|manifest\.json|metrics\.jsonl|split\.safetensors|epoch_\d{7}\.safetensors|"
    rf"{RESUME_PREFIX}\d{{7}}\.safetensors)\.[A-Za-z0-9_]{{8}}\.tmp$")
_HASH_CHUNK = 1 << 20
#: the resume file's copy of the exact weights, when the checkpoint beside it is stored reduced
EXACT_PREFIX = "model."
REDUCED_DTYPES = ("float16", "bfloat16")

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
                f"no space left to write {path} ({os.strerror(e.errno)}); what was written "
                f"before is intact: free some space, then run the same command again"
            ) from None
        raise
    _fsync_dir(path.parent)


def json_safe(obj: Any) -> Any:
    """``obj`` with every non-finite float replaced by None: mechgrok's JSON files are standard
    JSON (no ``NaN``/``Infinity`` tokens, which ``JSON.parse``, jq and most tools refuse)."""
    if isinstance(obj, float):
        return obj if obj == obj and obj not in (float("inf"), float("-inf")) else None
    if isinstance(obj, dict):
        return {k: json_safe(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [json_safe(v) for v in obj]
    return obj


def json_dumps(obj: Any, **kw: Any) -> str:
    """Standard JSON (non-finite floats written as null)."""
    return json.dumps(json_safe(obj), allow_nan=False, **kw)


def atomic_write_json(path: Path, obj: Any) -> None:
    atomic_write_bytes(path, (json_dumps(obj, indent=2) + "\n").encode())


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


def reduce_precision(t: Any, precision: str) -> Any:
    """A floating tensor rounded to ``precision`` (float16 or bfloat16); others as they are."""
    import torch

    if not t.is_floating_point():
        return t
    return t.detach().to(getattr(torch, precision))


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
    #: the stored weights' precision: "exact" (the model's own dtype), "float16" or "bfloat16"
    precision: str = "exact"

    def to_dict(self) -> dict[str, Any]:
        out = {"epoch": self.epoch, "step": self.step, "file": self.file, "size": self.size,
               "sha256": self.sha256}
        if self.precision != "exact":
            out["precision"] = self.precision
        return out


def manifest_path(run_path: str | Path) -> Path:
    """A run directory's manifest file (its presence marks a run that got past creation)."""
    return Path(run_path) / MANIFEST_FILE


def analysis_dir(run_path: str | Path) -> Path:
    """A run's ``analysis/`` folder."""
    return Path(run_path) / ANALYSIS_DIR


def measures_path(run_path: str | Path) -> Path:
    """A run's per-checkpoint measures file, ``analysis/measures.jsonl``."""
    return analysis_dir(run_path) / MEASURES_FILE


def resolve_run_path(run: str | Path, root: str | Path = "checkpoints") -> Path:
    """A run given as a path, or as an id under ``root``."""
    p = Path(run)
    if p.exists():
        return p
    q = Path(root) / str(run)
    if q.exists():
        return q
    raise RunDirError(f"run directory {str(run)!r} not found (looked in . and {root}/)")


def check_name(name: str, what: str = "run name") -> str:
    """A run (or sweep) name must be one path component: letters, digits, ``.``, ``_``, ``-``,
    not starting with ``.`` (so ``.``, ``..``, ``a/b`` and absolute paths are refused)."""
    if not isinstance(name, str) or not NAME_RE.match(name):
        raise RunDirError(f"{what} {name!r} must be a single folder name of letters, digits, '.', "
                          f"'_' or '-' that does not start with '.' (it names a folder inside "
                          f"the output folder)")
    return name


def run_dir(out_dir: str | Path, name: str) -> Path:
    """Where the run called ``name`` lives under ``out_dir`` (always inside it)."""
    return Path(out_dir) / check_name(name)


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


def _is_nonneg_int(v: Any) -> bool:
    return isinstance(v, int) and not isinstance(v, bool) and v >= 0


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
        if not _is_nonneg_int(e[k]):
            raise RunDirError(f"{where}: {what} has {k} {e[k]!r}, not a non-negative integer")
    if not isinstance(e["sha256"], str) or not _SHA_RE.match(e["sha256"]):
        raise RunDirError(f"{where}: {what} has sha256 {e['sha256']!r}, not 64 hex digits")
    if not isinstance(e["file"], str) or not pattern.match(e["file"]):
        raise RunDirError(f"{where}: {what} names file {e['file']!r}, which is not a name "
                          f"mechgrok writes there")


def validate_manifest(manifest: dict[str, Any], path: Path, run_path: Path) -> None:
    """Refuse a manifest whose entries are missing, mistyped or point outside the run (one line,
    naming the file). Every path the manifest names is confined to the run directory."""
    if manifest.get("kind") != MANIFEST_KIND:
        raise RunDirError(f"{path} is not a mechgrok manifest")
    v = manifest.get("schema_version")
    if not _is_nonneg_int(v) or v > MANIFEST_SCHEMA_VERSION:
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
    last = -1
    for i, c in enumerate(cks):
        _check_entry(c, path, f"checkpoint entry {i}", _CKPT_FILE_RE,
                     ("epoch", "step", "file", "size", "sha256"))
        if c["epoch"] <= last:
            raise RunDirError(f"{path}: checkpoint entry {i} (epoch {c['epoch']}) is out of order")
        if c.get("precision", "exact") not in ("exact", *REDUCED_DTYPES) or set(c) - {
                "epoch", "step", "file", "size", "sha256", "precision"}:
            raise RunDirError(f"{path}: checkpoint entry {i} has fields or a precision mechgrok "
                              f"does not write")
        if c["file"] != f"{CKPT_DIR}/epoch_{c['epoch']:07d}.safetensors":
            raise RunDirError(f"{path}: checkpoint entry {i} names {c['file']!r} for epoch "
                              f"{c['epoch']}")
        last = c["epoch"]
        _inside(run_path, c["file"], f"checkpoint entry {i}", path)
    r = manifest.get("resume")
    if r is not None:
        _check_entry(r, path, "the resume entry", _RESUME_FILE_RE,
                     ("epoch", "file", "size", "sha256"))
        _inside(run_path, r["file"], "the resume entry", path)


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
        self.manifest = _read_json(man_path, "manifest")
        validate_manifest(self.manifest, man_path, self.path)  # first: is it a mechgrok run?
        self.config = _read_config(cfg_path)

    @property
    def id(self) -> str:
        return self.path.resolve().name

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

    def load_into(self, model: Any, ck: CheckpointInfo | int | None = None) -> Any:
        """Load a checkpoint into ``model`` after checking every tensor's name, shape and dtype
        against the model this run's config builds; a mismatch is a :class:`CheckpointError`
        naming the file (nothing reaches ``load_state_dict`` unchecked)."""
        if not isinstance(ck, CheckpointInfo):
            ck = self.checkpoint(ck)
        state = self.load_state(ck)
        want = model.state_dict()
        reduced = self.config.train.checkpoint_precision
        if reduced in REDUCED_DTYPES:  # stored rounded (train.checkpoint_precision): cast back
            import torch

            low = getattr(torch, reduced)
            state = {k: (v.to(want[k].dtype) if v.dtype == low and k in want
                         and want[k].dtype != low else v) for k, v in state.items()}
        check_tensors(state, want, f"checkpoint {self.path / ck.file}",
                      "the model its run's config.json describes")
        model.load_state_dict(state)
        return model

    def load_model(self, ck: CheckpointInfo | int | None = None):
        """The hooked model at a checkpoint (the last one when None)."""
        from mechgrok.models import build_model

        return self.load_into(build_model(self.config), ck).eval()

    def iter_models(self) -> Iterator[tuple[CheckpointInfo, Any]]:
        for ck in self.checkpoints():
            yield ck, self.load_model(ck)

    def metrics(self) -> list[dict[str, Any]]:
        return read_metrics(self.path / METRICS_FILE)

    def imported(self) -> dict[str, Any] | None:
        """Where ``mechgrok import`` read this run from (``imported.json``), or None for a run
        mechgrok trained. Only its text fields are relied on (format, source, split_from)."""
        f = self.path / IMPORT_FILE
        if not f.is_file() or f.is_symlink():
            return None
        rec = _read_json(f, "import record")
        if rec.get("kind") != IMPORT_KIND:
            raise RunDirError(f"{f} is not a mechgrok import record")
        return rec

    def split(self) -> tuple[Any, Any]:
        """(train_idx, test_idx) as int64 tensors: each a 1-D list of distinct pair indices, the
        two disjoint and together every pair (verified against the manifest's hash by
        :meth:`dataset`)."""
        import torch

        f = self.path / SPLIT_FILE
        if not f.is_file():
            raise RunDirError(f"run {self.id} has no {SPLIT_FILE}")
        n = self.config.task.n ** 2
        limit = 16 * n + (1 << 16)  # two int64 lists of at most n entries, plus the header
        size = f.stat().st_size
        if size > limit:
            raise CheckpointError(f"{f} is {size} bytes, far more than a split of {n} pairs "
                                  f"takes; it was replaced")
        tensors, _ = tensors_from_bytes(f.read_bytes(), str(f))
        out = []
        for key in ("train_idx", "test_idx"):
            t = tensors.get(key)
            if t is None or t.dtype != torch.int64 or t.ndim != 1:
                raise CheckpointError(f"{f} has no 1-D int64 tensor {key!r}")
            out.append(t)
        both = torch.cat(out)
        if len(both) != n or not torch.equal(torch.sort(both).values, torch.arange(n)):
            raise CheckpointError(f"{f}: train_idx and test_idx must split the {n} pairs of "
                                  f"{self.config.task.name} between them, each pair once")
        return out[0], out[1]

    def dataset(self):
        """The task's dataset with this run's stored split (a :class:`~mechgrok.tasks.TaskData`)."""
        import dataclasses

        from mechgrok.tasks import make_dataset

        t = self.config.task
        data = make_dataset(t.name, t.p, t.frac_train, t.data_seed)
        train_idx, test_idx = self.split()
        data = dataclasses.replace(data, train_idx=train_idx.numpy(), test_idx=test_idx.numpy())
        want = self.manifest["split_sha256"]  # validate_manifest made sure there is one
        if data.split_sha256() != want:
            raise CheckpointError(f"{self.path / SPLIT_FILE} does not match the manifest's split "
                                  f"hash; the run directory was altered")
        return data


def read_verified(path: Path, size: int | None, sha256: str | None) -> tuple[dict, dict]:
    """A safetensors file's (tensors, metadata) after checking its size (before reading a byte)
    and its SHA-256 (streamed), so a huge or damaged file is refused before it fills memory."""
    try:
        st = path.stat()
    except FileNotFoundError:
        raise CheckpointError(f"checkpoint {path} is missing") from None
    if not stat.S_ISREG(st.st_mode):
        raise CheckpointError(f"checkpoint {path} is missing or not a regular file")
    if size is not None and st.st_size != size:
        raise CheckpointError(
            f"checkpoint {path} is {st.st_size} bytes but the manifest says {size}: it is "
            f"truncated or was replaced"
        )
    h = hashlib.sha256()
    buf = bytearray()
    with open(path, "rb") as fh:
        while chunk := fh.read(_HASH_CHUNK):
            h.update(chunk)
            buf += chunk
            if size is not None and len(buf) > size:
                raise CheckpointError(f"checkpoint {path} grew while it was read; run the "
                                      f"command again once nothing writes to it")
    if size is not None and len(buf) != size:
        raise CheckpointError(f"checkpoint {path} is {len(buf)} bytes but the manifest says "
                              f"{size}: it is truncated or was replaced")
    if sha256 is not None and h.hexdigest() != sha256:
        raise CheckpointError(f"checkpoint {path} fails its SHA-256 check: it was altered or "
                              f"corrupted after it was written")
    return tensors_from_bytes(bytes(buf), f"checkpoint {path}")


def check_tensors(got: dict[str, Any], want: dict[str, Any], what: str, against: str) -> None:
    """Refuse tensors whose names, shapes or dtypes differ from ``want`` (name → tensor, or name
    → (shape, dtype)): one line naming ``what`` and the first difference."""
    missing = sorted(set(want) - set(got))
    extra = sorted(set(got) - set(want))
    if missing or extra:
        bits = []
        if missing:
            bits.append(f"missing {', '.join(missing[:3])}{' …' if len(missing) > 3 else ''}")
        if extra:
            bits.append(f"unexpected {', '.join(extra[:3])}{' …' if len(extra) > 3 else ''}")
        raise CheckpointError(f"{what} does not match {against} ({'; '.join(bits)})")
    for name, w in want.items():
        shape, dtype = (tuple(w.shape), w.dtype) if hasattr(w, "shape") else (tuple(w[0]), w[1])
        t = got[name]
        if tuple(t.shape) != shape or t.dtype != dtype:
            raise CheckpointError(
                f"{what} does not match {against}: {name} is {tuple(t.shape)} {t.dtype}, "
                f"expected {shape} {dtype}")


METRIC_NUMBERS = ("train_loss", "test_loss", "train_acc", "test_acc")
_REQUIRED_METRICS = ("train_acc", "test_acc")


def read_metrics(path: Path) -> list[dict[str, Any]]:
    """``metrics.jsonl``: one object per evaluation, with integer ``epoch`` (increasing) and
    ``step`` and numeric accuracies and losses (null, or a loss that is absent, is read as NaN:
    a diverged run's losses).
    A damaged line is a :class:`RunDirError` naming the file and the line."""
    if not path.is_file():
        return []
    out: list[dict[str, Any]] = []
    try:
        text = path.read_text()
    except (OSError, UnicodeDecodeError) as e:
        raise RunDirError(f"cannot read {path}: {e}") from None
    for i, line in enumerate(text.splitlines(), 1):
        line = line.strip()
        if not line:
            continue
        try:
            m = json.loads(line)
        except ValueError:
            raise RunDirError(f"{path} line {i} is not JSON; the file was damaged or edited "
                              f"(mechgrok writes it whole, atomically)") from None
        if not isinstance(m, dict):
            raise RunDirError(f"{path} line {i} is a {type(m).__name__}, not a JSON object")
        for k in ("epoch", "step"):
            if (k == "epoch" or k in m) and not _is_nonneg_int(m.get(k)):
                raise RunDirError(f"{path} line {i}: {k} is {m.get(k)!r}, not a non-negative "
                                  f"integer")
        if out and m["epoch"] <= out[-1]["epoch"]:
            raise RunDirError(f"{path} line {i}: epoch {m['epoch']} does not follow epoch "
                              f"{out[-1]['epoch']}")
        for k in (*METRIC_NUMBERS, "sum_sq_weights"):
            v = m.get(k)
            if v is None and (k in m or k not in _REQUIRED_METRICS):
                m[k] = float("nan")  # null (a diverged loss), or a loss a hand-made file lacks
            elif v is None:
                raise RunDirError(f"{path} line {i} has no {k}")
            elif isinstance(v, bool) or not isinstance(v, (int, float)):
                raise RunDirError(f"{path} line {i}: {k} is {v!r:.60}, not a number")
        out.append(m)
    return out


def _read_json(path: Path, what: str, limit: int = 64 << 20) -> dict[str, Any]:
    try:
        if path.stat().st_size > limit:
            raise RunDirError(f"the {what} {path} is larger than {limit >> 20} MiB; it is not a "
                              f"file mechgrok wrote")
        obj = json.loads(path.read_text())
    except (OSError, ValueError) as e:
        raise RunDirError(f"cannot read the {what} {path}: {e}") from None
    if not isinstance(obj, dict):
        raise RunDirError(f"the {what} {path} is not a JSON object")
    return obj


def read_saved_config(run_path: Path) -> RunConfig | None:
    """The config saved in ``run_path`` (None when it has no ``config.json``)."""
    f = Path(run_path) / CONFIG_FILE
    if not f.exists() and not f.is_symlink():
        return None
    if f.is_symlink() or not f.is_file():
        raise RunDirError(f"{f} is not a regular file")
    return _read_config(f)


def _read_config(path: Path) -> RunConfig:
    try:
        return RunConfig.from_saved(_read_json(path, "config"))  # every field, or refused
    except ConfigError as e:
        raise RunDirError(f"{path}: {e}") from None


# --------------------------------------------------------------------------------------------
# Writing a run
# --------------------------------------------------------------------------------------------
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
    return fd


def release_lock(fd: int | None) -> None:
    if fd is not None and fd >= 0:
        with contextlib.suppress(OSError):
            fcntl.flock(fd, fcntl.LOCK_UN)
        with contextlib.suppress(OSError):
            os.close(fd)


def _busy(path: Path) -> str:
    return (f"run directory {path} is in use by another mechgrok process; wait for it to "
            f"finish or stop it before training into this directory")


def is_locked(path: Path) -> bool:
    """Whether another process holds the run's training lock or its analysis lock."""
    for lock in (path / LOCK_FILE, path / ANALYSIS_DIR / ANALYSIS_LOCK_FILE):
        try:
            fd = try_lock(lock, "", create=False)
        except RunDirError:
            return True
        except OSError:
            continue
        release_lock(fd)
    return False


# what mechgrok itself writes into a run directory, and so what it may remove with it
_OWN_TOP = {CONFIG_FILE, MANIFEST_FILE, METRICS_FILE, SPLIT_FILE, LOCK_FILE, CKPT_DIR,
            ANALYSIS_DIR, IMPORT_FILE}
_OWN_ANALYSIS = {MEASURES_FILE, SUMMARY_FILE, ANALYSIS_ARRAYS_DIR, ANALYSIS_LOCK_FILE,
                 SWEEP_DONE_FILE}
_OWN_CKPT_RE = re.compile(r"^epoch_\d{7}\.safetensors$")
_OWN_ARRAYS_RE = re.compile(r"^epoch_\d{7}\.safetensors$")
_ANY_TMP_RE = re.compile(r"^\..+\.[A-Za-z0-9_]{8}\.tmp$")


def _foreign_entries(path: Path) -> list[str]:
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
         or (f.is_file() and _RESUME_FILE_RE.match(f.name)))
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
    if not is_run_dir(path) and not _is_stillborn(path):
        raise RunDirError(f"{path} is not a mechgrok run directory; --overwrite removes only "
                          f"mechgrok run directories: move it away or choose another --name")
    foreign = _foreign_entries(path)
    if foreign:
        more = f" and {len(foreign) - 3} more" if len(foreign) > 3 else ""
        raise RunDirError(f"{path} holds files mechgrok did not write ({', '.join(foreign[:3])}"
                          f"{more}); move them out of the run directory first, nothing was "
                          f"removed")
    fds: list[int | None] = []
    try:
        fds.append(try_lock(path / LOCK_FILE, _busy(path), create=False))
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


def _is_stillborn(path: Path) -> bool:
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
        if f.is_symlink() or not (f.name in allowed or _OWN_TMP_RE.match(f.name)):
            return False
    ck = path / CKPT_DIR
    return not ck.exists() or (ck.is_dir() and not ck.is_symlink() and not any(ck.iterdir()))


def existing_run(path: Path) -> Run | None:
    """The run at ``path``, or None when there is nothing to continue there (no folder, an empty
    one, or one killed before its first manifest, which is cleared for a fresh start)."""
    path = Path(path)
    if not path.exists() or (path.is_dir() and not any(path.iterdir())):
        return None
    if _is_stillborn(path):
        fd = try_lock(path / LOCK_FILE, _busy(path), create=False)
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
        fd = try_lock(path / LOCK_FILE, _busy(path))
        assert fd is not None
        os.ftruncate(fd, 0)
        os.write(fd, f"{os.getpid()}\n".encode())
        return fd

    @classmethod
    def create(cls, path: Path, config: RunConfig, split_tensors: dict[str, Any],
               split_sha256: str, fill: Callable[[RunWriter], None] | None = None) -> RunWriter:
        """A new run directory at ``path`` (absent, empty, or killed before its first manifest).

        The directory is built under a temporary name beside ``path`` (config, split, manifest)
        and renamed into place, so ``path`` never holds a run without its manifest. ``fill``, when
        given, writes the rest of the run (``mechgrok import``: every checkpoint, the metrics, the
        final manifest) into the temporary directory before the rename, so the run appears whole
        or not at all."""
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
            w = cls(build, manifest, fd, config)
            w.write_manifest()
            w.write_metrics()
            if fill is not None:
                fill(w)
            if path.exists():
                path.rmdir()  # empty (existing_run cleared a stillborn one); refuses otherwise
            os.rename(build, path)
            _fsync_dir(path.parent)
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
        rel = f"{CKPT_DIR}/epoch_{epoch:07d}.safetensors"
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
        rrel = f"{RESUME_PREFIX}{epoch:07d}.safetensors"
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
        rel = f"{CKPT_DIR}/epoch_{epoch:07d}.safetensors"
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
        left by a process killed mid-write) in the run directory and its ``ckpt/``.

        Nothing else is removed: a checkpoint or resume file the manifest does not name (written
        just before a crash) is left where it is and overwritten when training reaches that epoch
        again; a user's own files are never touched; a symlinked folder is not entered."""
        for folder in (self.path, self.path / CKPT_DIR):
            if not folder.is_dir() or folder.is_symlink():
                continue
            for f in folder.iterdir():
                if _OWN_TMP_RE.match(f.name) and f.is_file() and not f.is_symlink():
                    with contextlib.suppress(OSError):
                        f.unlink()

    def set_status(self, status: str, **extra: Any) -> None:
        if status in FINAL_STATUSES:
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
            if not _is_nonneg_int(out.get(k)):
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
        if not d.is_dir() or d.is_symlink() or _foreign_entries(d):
            continue
        try:
            fd = try_lock(d / LOCK_FILE, "", create=False)
        except (RunDirError, OSError):
            continue
        try:
            shutil.rmtree(d)
        finally:
            release_lock(fd)
