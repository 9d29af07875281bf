"""The files ``mechgrok import`` reads, at the level of bytes: which formats it imports, what a file
holds (from its first bytes), JSON and TOML tables, and a file's size and hash for the record.

Nothing here unpickles: reading a ``torch.save`` file is :func:`mechgrok.interop.importer.
load_torch_file`'s job alone. :class:`ForeignObject` is what such a file's pickled config object
becomes there.
"""

from __future__ import annotations

import hashlib
import json
from pathlib import Path
from typing import Any

from mechgrok.errors import SourceError

__all__ = ["FORMATS", "PICKLE_FLAG", "STATE_SUFFIXES", "ForeignObject", "file_record", "read_json_file",
           "read_table_file", "sniff"]

FORMATS = {
    "tl-demo": "TransformerLens grokking-demo / progress-measures file (torch.save)",
    "tl-state": "TransformerLens HookedTransformer state dict(s): a file or a folder",
    "state-dicts": "any loop's state dicts, a file or a folder, with --mapping FILE",
}
STATE_SUFFIXES = (".safetensors", ".pt", ".pth", ".bin", ".ckpt")
PICKLE_FLAG = "--allow-pickle"
_HASH_CHUNK = 1 << 20
_MAX_JSON_BYTES = 64 << 20


def sniff(path: Path) -> str:
    """What a file holds, from its first bytes: ``safetensors``, ``torch`` (a ``torch.save`` zip
    archive), ``pickle`` (a legacy ``torch.save`` or plain pickle), ``json``, ``toml`` or
    ``unknown``."""
    try:
        with open(path, "rb") as fh:
            head = fh.read(16)
    except OSError as e:
        raise SourceError(f"cannot read {path}: {e.strerror or e}") from None
    if head[:4] == b"PK\x03\x04":
        return "torch"
    # safetensors before pickle: a header length's first byte can be 0x80
    if len(head) >= 9 and head[8:9] == b"{" and (
            8 + int.from_bytes(head[:8], "little") <= path.stat().st_size):
        return "safetensors"
    if head[:1] == b"\x80" and len(head) > 1 and 2 <= head[1] <= 5:
        return "pickle"
    if head.lstrip()[:1] in (b"{", b"["):
        return "json"
    if path.suffix == ".toml":
        return "toml"
    return "unknown"


class ForeignObject:
    """What a pickled configuration object (a ``HookedTransformerConfig``) becomes: its fields in
    ``__dict__``, nothing else. Its own class's code is never imported or run."""

    def __setstate__(self, state: Any) -> None:
        if isinstance(state, dict):
            self.__dict__.update(state)


def read_json_file(path: Path, what: str) -> Any:
    """A JSON file's content (at most 64 MiB); a one-line :class:`SourceError` naming ``what``."""
    try:
        if path.stat().st_size > _MAX_JSON_BYTES:
            raise SourceError(f"the {what} {path} is larger than 64 MiB")
        return json.loads(path.read_text())
    except (OSError, ValueError, UnicodeDecodeError) as e:
        raise SourceError(f"cannot read the {what} {path}: {e}") from None


def read_table_file(path: Path, what: str) -> dict[str, Any]:
    """A TOML or JSON file holding a table."""
    if path.suffix == ".toml":
        import tomllib

        try:
            obj: Any = tomllib.loads(path.read_text())
        except (OSError, UnicodeDecodeError, tomllib.TOMLDecodeError) as e:
            raise SourceError(f"cannot read the {what} {path}: {e}") from None
    else:
        obj = read_json_file(path, what)
    if not isinstance(obj, dict):
        raise SourceError(f"the {what} {path} is not a table (a JSON object or TOML file)")
    return obj


def file_record(path: Path, base: Path) -> dict[str, Any]:
    """``{"file", "size", "sha256"}`` of a source file, named relative to the source ``base``."""
    h = hashlib.sha256()
    with open(path, "rb") as fh:
        while chunk := fh.read(_HASH_CHUNK):
            h.update(chunk)
    rel = path.name if path == base else path.relative_to(base).as_posix()
    return {"file": rel, "size": path.stat().st_size, "sha256": h.hexdigest()}
