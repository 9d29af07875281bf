"""How mechgrok writes and reads its files: atomic writes, standard JSON, SHA-256, tensors as
safetensors bytes (never pickle), reduced precision, and verified reads of tensor files.

Every file is written atomically: a temporary file in the same folder, ``fsync``, ``rename``, then
``fsync`` of the folder, so a crash or a full disk leaves either the old file or the new one, never
a torn one.
"""

from __future__ import annotations

import contextlib
import errno
import hashlib
import json
import os
import platform
import stat
import tempfile
from pathlib import Path
from typing import Any, TypeGuard

from mechgrok.errors import CheckpointError, DiskFullError, RunDirError

__all__ = [
    "atomic_write_bytes",
    "atomic_write_json",
    "check_tensors",
    "fsync_dir",
    "is_nonneg_int",
    "json_dumps",
    "json_safe",
    "package_versions",
    "read_json_object",
    "read_verified",
    "reduce_precision",
    "sha256_bytes",
    "tensors_from_bytes",
    "tensors_to_bytes",
]

_HASH_CHUNK = 1 << 20
_NO_SPACE = {errno.ENOSPC, errno.EDQUOT, errno.EFBIG}


# --------------------------------------------------------------------------------------------
# Atomic writes
# --------------------------------------------------------------------------------------------
def fsync_dir(path: Path) -> None:
    """``fsync`` a folder, so a rename into it survives a crash."""
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
    fsync_dir(path.parent)


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
    """``obj`` as indented standard JSON, written atomically."""
    atomic_write_bytes(path, (json_dumps(obj, indent=2) + "\n").encode())


def sha256_bytes(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def is_nonneg_int(v: Any) -> TypeGuard[int]:
    """An ``int`` (not a bool) ≥ 0: what every epoch, step and size in mechgrok's files is."""
    return isinstance(v, int) and not isinstance(v, bool) and v >= 0


def read_json_object(path: Path, what: str, limit: int = 64 << 20) -> dict[str, Any]:
    """A JSON object from ``path`` (at most ``limit`` bytes); anything else is a
    :class:`RunDirError` naming ``what`` and the file."""
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
