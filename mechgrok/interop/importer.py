"""``mechgrok import``: checkpoints written by other tools, as an ordinary mechgrok run directory.

Formats (``--format``; detected when left out):

* ``tl-demo``: one ``torch.save`` file holding a dict in the layout of TransformerLens's
  Grokking_Demo notebook and Nanda et al.'s progress-measures code: ``model`` (the final state
  dict), ``config`` (a ``HookedTransformerConfig``), ``checkpoints`` (a list of state dicts),
  ``checkpoint_epochs``, ``train_losses``, ``test_losses`` and, when saved, ``train_indices`` and
  ``test_indices``. (``state_dicts``, ``epochs``, ``train_idx`` and ``test_idx`` are read as
  aliases.)
* ``tl-state``: TransformerLens ``HookedTransformer`` state dicts: one file (safetensors or a
  torch file) or a folder of per-epoch files, with the config from ``--tl-config FILE``, else the
  JSON beside it (``<stem>.json`` or ``config.json``), else the weights' shapes (the activation
  function then defaults to ReLU; set it with ``--set model.act=gelu``). A folder written by
  ``mechgrok export`` is this format and carries its task, epoch and split with it.
* ``state-dicts``: any loop's state dicts (one file or a folder of per-epoch files) with a mapping
  file (``--mapping FILE``, TOML or JSON) from its parameter names to mechgrok's, and the mechgrok
  model they fill (``docs/import.md`` has a worked example for a plain PyTorch MLP).

Conventions (documented because the sources differ):

* **Epochs.** A folder's files are ordered by the last number in their names (``epoch_100.pt``,
  ``ckpt-000100.safetensors``), which is taken as the epoch. The grokking demo records the 0-based
  index of the epoch just finished (its first checkpoint, "epoch 99", is the model after 100
  steps), so ``tl-demo`` epochs are the recorded number plus one (``--epoch-offset`` changes
  that). The demo's final ``model`` is added as one more checkpoint at ``len(train_losses)``
  epochs when it differs from its last checkpoint. Steps are recorded equal to epochs (the
  sources are full-batch, or do not say).
* **The split.** From the file's indices when it has them, else from ``--split FILE``, else made
  by mechgrok from ``--frac-train``/``--data-seed`` (and then said loudly: the test accuracy is
  then measured on pairs the model may have trained on). Indices count pairs in mechgrok's order:
  row-major over (x, y), the order the demo uses; they are stored sorted.
* **Metrics.** ``metrics.jsonl`` holds mechgrok's own evaluation of every imported checkpoint
  (losses and accuracies on the split, weight norm), so curves and grokking epochs are computed
  the same way as for trained runs. The source's own loss curves, as recorded, are kept in
  ``imported.json``.
* **Training settings.** The ``[train]`` section of an imported run's config holds mechgrok's
  defaults (the sources do not record their optimiser); ``imported.json`` says so.

Pickles: a ``torch.save`` file is read only when ``allow_pickle`` is set (``--allow-pickle``),
only by :func:`load_torch_file`, and only through ``torch.load(weights_only=True)``, which builds
tensors and plain data and refuses any other object before it is created. A TransformerLens config
object is read as its fields into an inert stand-in class (none of TransformerLens's code runs).
"""

from __future__ import annotations

import dataclasses
import datetime
import hashlib
import json
import math
import re
import time
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from mechgrok.config import MODEL_KINDS, RunConfig, TaskConfig, TrainConfig
from mechgrok.errors import ConfigError, SourceError
from mechgrok.interop import transformer_lens as tlx
from mechgrok.interop.transformer_lens import EXPORT_INFO_FILE, EXPORT_KIND

FORMATS = {
    "tl-demo": "TransformerLens grokking-demo / progress-measures file (torch.save)",
    "tl-state": "TransformerLens HookedTransformer state dict(s): a file or a folder",
    "state-dicts": "any loop's state dicts, a file or a folder, with --mapping FILE",
}
STATE_SUFFIXES = (".safetensors", ".pt", ".pth", ".bin", ".ckpt")
PICKLE_FLAG = "--allow-pickle"
IMPORT_SCHEMA_VERSION = 1
_LAST_INT = re.compile(r"(\d+)(?!.*\d)")
_HASH_CHUNK = 1 << 20


# --------------------------------------------------------------------------------------------
# Reading files: safetensors as they are, pickles only on request and only as data
# --------------------------------------------------------------------------------------------
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


class _ForeignObject:
    """What a pickled configuration object (a ``HookedTransformerConfig``) becomes: its fields in
    ``__dict__``, nothing else. Its own class's code is never imported or run."""

    def __setstate__(self, state: Any) -> None:
        if isinstance(state, dict):
            self.__dict__.update(state)


def _safe_globals() -> list[Any]:
    """The globals ``torch.load(weights_only=True)`` may build besides tensors: TransformerLens's
    config class (as the inert :class:`_ForeignObject`) and NumPy scalars and dtypes (plain
    numbers in a config's fields)."""
    import numpy as np

    out: list[Any] = [
        (_ForeignObject, "transformer_lens.config.hooked_transformer_config."
                         "HookedTransformerConfig"),
        (_ForeignObject, "transformer_lens.HookedTransformerConfig.HookedTransformerConfig"),
        np.dtype,
    ]
    core = getattr(np, "_core", None) or np.core
    scalar = core.multiarray.scalar
    out += [(scalar, "numpy._core.multiarray.scalar"), (scalar, "numpy.core.multiarray.scalar")]
    for name in ("Float64DType", "Float32DType", "Float16DType", "Int64DType", "Int32DType",
                 "BoolDType"):
        dt = getattr(getattr(np, "dtypes", None), name, None)
        if dt is not None:
            out.append(dt)
    return out


def load_torch_file(path: Path, allow_pickle: bool) -> Any:
    """A ``torch.save`` file's content, read with ``torch.load(weights_only=True)`` (tensors and
    plain data only; anything else is refused before it is built), and only when ``allow_pickle``
    is set. Everything else in mechgrok never reads pickles."""
    if not allow_pickle:
        raise SourceError(
            f"{path} is a PyTorch pickle file (written by torch.save); mechgrok reads such files "
            f"only with {PICKLE_FLAG}, which loads them with torch.load(weights_only=True): "
            f"tensors and plain data, refusing any object that could run code")
    import torch

    try:
        with torch.serialization.safe_globals(_safe_globals()):
            return torch.load(path, map_location="cpu", weights_only=True)
    except Exception as e:  # UnpicklingError, RuntimeError, zipfile errors …
        msg = str(e)
        m = re.search(r"(?:Unsupported global: GLOBAL|unsupported GLOBAL) ([\w.]+)", msg) \
            or re.search(r"Unsupported (?:operand|class) ([^\s,]+)", msg)
        if m:
            what = f"it asks for {m.group(1)}, which is not a tensor or plain data"
        else:  # the last informative line (the first is torch's generic advice)
            lines = [ln for ln in msg.splitlines() if ln.strip() and "weights_only" not in ln]
            what = f"{type(e).__name__}: {(lines[-1] if lines else msg)[:160]}"
        raise SourceError(f"{path} was refused by torch.load(weights_only=True) ({what}); "
                          f"nothing in it was run. Save the tensors with safetensors, or as a "
                          f"dict of tensors") from None


def read_state_file(path: Path, allow_pickle: bool) -> Any:
    """A safetensors file's tensors, or a torch file's content (see :func:`load_torch_file`)."""
    kind = sniff(path)
    if kind == "safetensors":
        from mechgrok.store import tensors_from_bytes

        return tensors_from_bytes(path.read_bytes(), str(path))[0]
    if kind in ("torch", "pickle"):
        return load_torch_file(path, allow_pickle)
    raise SourceError(f"{path} is neither a safetensors file nor a torch.save file; mechgrok "
                      f"imports {', '.join(FORMATS)} (see `mechgrok import --help`)")


def _read_json_file(path: Path, what: str) -> Any:
    try:
        if path.stat().st_size > (64 << 20):
            raise SourceError(f"the {what} {path} is larger than 64 MiB")
        return json.loads(path.read_text())
    except (OSError, ValueError, UnicodeDecodeError) as e:
        raise SourceError(f"cannot read the {what} {path}: {e}") from None


def _read_table_file(path: Path, what: str) -> dict[str, Any]:
    """A TOML or JSON file holding a table."""
    if path.suffix == ".toml":
        import tomllib

        try:
            obj: Any = tomllib.loads(path.read_text())
        except (OSError, UnicodeDecodeError, tomllib.TOMLDecodeError) as e:
            raise SourceError(f"cannot read the {what} {path}: {e}") from None
    else:
        obj = _read_json_file(path, what)
    if not isinstance(obj, dict):
        raise SourceError(f"the {what} {path} is not a table (a JSON object or TOML file)")
    return obj


def _file_record(path: Path, base: Path) -> dict[str, Any]:
    h = hashlib.sha256()
    with open(path, "rb") as fh:
        while chunk := fh.read(_HASH_CHUNK):
            h.update(chunk)
    rel = path.name if path == base else path.relative_to(base).as_posix()
    return {"file": rel, "size": path.stat().st_size, "sha256": h.hexdigest()}


# --------------------------------------------------------------------------------------------
# What a source holds
# --------------------------------------------------------------------------------------------
@dataclass
class Source:
    """A source read into memory: state dicts by epoch, in the source's parameter names."""

    format: str
    checkpoints: list[tuple[int, dict[str, Any]]]
    tl_config: dict[str, Any] | None = None
    split: tuple[Any, Any] | None = None
    split_from: str = ""
    losses: dict[str, list[float]] = field(default_factory=dict)
    notes: list[str] = field(default_factory=list)
    mapping: dict[str, Any] | None = None
    info: dict[str, Any] | None = None  # mechgrok export's sidecar
    files: list[Path] = field(default_factory=list)


def _is_state(obj: Any) -> bool:
    return isinstance(obj, Mapping) and bool(obj) and all(
        isinstance(k, str) and hasattr(v, "shape") for k, v in obj.items())


def _unwrap_state(obj: Any, path: Path, key: str | None) -> dict[str, Any]:
    """The state dict inside what a file holds: the file itself, ``obj[key]``, or the one of
    ``model``, ``model_state_dict``, ``state_dict`` it has."""
    if key is not None and not (_is_state(obj) and key not in obj):  # files that hold more
        if not isinstance(obj, Mapping) or key not in obj:
            raise SourceError(f"{path} has no entry {key!r} (the mapping's state_key)")
        obj = obj[key]
    elif isinstance(obj, Mapping) and not _is_state(obj):
        for k in ("model", "model_state_dict", "state_dict"):
            if _is_state(obj.get(k)):
                obj = obj[k]
                break
    if not _is_state(obj):
        raise SourceError(f"{path} does not hold a state dict (a mapping of parameter names to "
                          f"tensors){' under ' + repr(key) if key else ''}")
    return dict(obj)


def _config_fields(cfg: Any, where: str) -> dict[str, Any]:
    """A pickled config (an inert object or a dict) as a JSON-safe dict of its fields."""
    if isinstance(cfg, _ForeignObject):
        cfg = vars(cfg)
    if not isinstance(cfg, Mapping):
        raise SourceError(f"{where}: its config is a {type(cfg).__name__}, not a "
                          f"HookedTransformerConfig or a dict")
    out: dict[str, Any] = {}
    for k, v in cfg.items():
        if hasattr(v, "is_floating_point") and not hasattr(v, "shape"):  # a torch.dtype
            v = str(v).removeprefix("torch.")
        elif hasattr(v, "item") and getattr(v, "ndim", 1) == 0:  # a NumPy or 0-d scalar
            v = v.item()
        if v is None or isinstance(v, (bool, int, float, str)):
            out[str(k)] = v
        elif isinstance(v, (list, tuple)) and all(isinstance(x, (bool, int, float, str))
                                                  for x in v):
            out[str(k)] = list(v)
    return out


def _losses(obj: Mapping[str, Any], key: str) -> list[float] | None:
    v = obj.get(key)
    if v is None:
        return None
    try:
        return [float(x) for x in (v.tolist() if hasattr(v, "tolist") else v)]
    except (TypeError, ValueError):
        return None


def _read_demo(path: Path, allow_pickle: bool, epoch_offset: int | None) -> Source:
    obj = load_torch_file(path, allow_pickle)
    where = str(path)
    if not isinstance(obj, Mapping):
        raise SourceError(f"{path} holds a {type(obj).__name__}, not the grokking demo's dict")
    cks = obj.get("checkpoints", obj.get("state_dicts"))
    eps = obj.get("checkpoint_epochs", obj.get("epochs"))
    if not isinstance(cks, (list, tuple)) or not all(_is_state(c) for c in cks):
        raise SourceError(f"{where}: 'checkpoints' is missing or is not a list of state dicts")
    eps_list = eps.tolist() if hasattr(eps, "tolist") else eps
    if not isinstance(eps_list, (list, tuple)) or len(eps_list) != len(cks) or not all(
            isinstance(e, int) and not isinstance(e, bool) and e >= 0 for e in eps_list):
        raise SourceError(f"{where}: 'checkpoint_epochs' must list one non-negative integer "
                          f"per checkpoint ({len(cks)})")
    offset = 1 if epoch_offset is None else epoch_offset
    epochs = [int(e) + offset for e in eps_list]
    if any(b <= a for a, b in zip(epochs, epochs[1:])) or (epochs and epochs[0] < 0):
        raise SourceError(f"{where}: 'checkpoint_epochs' is not increasing")
    src = Source("tl-demo", [(e, dict(c)) for e, c in zip(epochs, cks)], files=[path])
    if offset:
        src.notes.append(f"epochs are the file's checkpoint_epochs + {offset} (the demo records "
                         f"the 0-based index of the epoch just finished)")
    if obj.get("config") is not None:
        src.tl_config = _config_fields(obj["config"], where)
    for k in ("train_losses", "test_losses"):
        v = _losses(obj, k)
        if v is not None:
            src.losses[k] = v
    final = obj.get("model")
    if _is_state(final) and cks:
        import torch

        last = cks[-1]
        same = set(final) == set(last) and all(
            torch.equal(final[k], last[k]) for k in final if hasattr(final[k], "shape"))
        n_epochs = len(src.losses.get("train_losses", []))
        if not same and n_epochs > epochs[-1]:
            src.checkpoints.append((n_epochs, dict(final)))
            src.notes.append(f"the file's final model is the checkpoint at epoch {n_epochs} "
                             f"(the length of its train_losses)")
        elif not same:
            src.notes.append("the file's final model differs from its last checkpoint and its "
                             "epoch is unknown: left out")
    elif _is_state(final):
        src.checkpoints.append((len(src.losses.get("train_losses", [])), dict(final)))
    tr = obj.get("train_indices", obj.get("train_idx"))
    te = obj.get("test_indices", obj.get("test_idx"))
    if tr is not None and te is not None:
        src.split = (tr, te)  # checked against the task by tasks.checked_split
        src.split_from = "the file's train_indices and test_indices"
    if not src.checkpoints:
        raise SourceError(f"{where} holds no checkpoints")
    return src


def _state_files(path: Path) -> list[tuple[int | None, Path]]:
    """A folder's state-dict files with the epoch in each name (None when it has no number)."""
    from mechgrok.store import SPLIT_FILE

    files = sorted(f for f in path.iterdir()
                   if f.is_file() and f.suffix in STATE_SUFFIXES and f.name != SPLIT_FILE
                   and not f.name.startswith("."))
    if not files:
        raise SourceError(f"{path} holds no state-dict files ({', '.join(STATE_SUFFIXES)})")
    out = []
    for f in files:
        m = _LAST_INT.search(f.stem)
        out.append((int(m.group(1)) if m else None, f))
    if len(out) > 1:
        unnumbered = [f.name for e, f in out if e is None]
        if unnumbered:
            raise SourceError(f"{path}: {unnumbered[0]} has no epoch number in its name; a "
                              f"folder's files are ordered by the last number in their names")
        seen: dict[int, str] = {}
        for e, f in out:
            if e in seen:
                raise SourceError(f"{path}: {seen[e]} and {f.name} both say epoch {e}")
            seen[e] = f.name  # type: ignore[index]
        out.sort(key=lambda ef: ef[0])  # type: ignore[arg-type, return-value]
    return out


def _read_states(path: Path, fmt: str, allow_pickle: bool, mapping: dict[str, Any] | None,
                 tl_config_file: Path | None, epoch: int | None) -> Source:
    """``tl-state`` and ``state-dicts``: one file or a folder of per-epoch files."""
    folder = path if path.is_dir() else path.parent
    listed = _state_files(path) if path.is_dir() else [
        (int(m.group(1)) if (m := _LAST_INT.search(path.stem)) else None, path)]
    info = None
    if (folder / EXPORT_INFO_FILE).is_file():
        info = _read_json_file(folder / EXPORT_INFO_FILE, "export record")
        if not isinstance(info, dict) or info.get("kind") != EXPORT_KIND:
            info = None
    key = mapping.get("state_key") if mapping else None
    checkpoints = []
    for e, f in listed:
        if e is None or len(listed) == 1:
            e = epoch if epoch is not None else (
                int(info["epoch"]) if info and isinstance(info.get("epoch"), int) else e or 0)
        checkpoints.append((e, _unwrap_state(read_state_file(f, allow_pickle), f, key)))
    src = Source(fmt, checkpoints, mapping=mapping, info=info, files=[f for _, f in listed])
    if fmt == "tl-state":
        cfg_file = tl_config_file
        if cfg_file is None:
            for cand in ((folder / f"{path.stem}.json") if path.is_file() else None,
                         folder / "config.json"):
                if cand is not None and cand.is_file():
                    cfg_file = cand
                    break
        if cfg_file is not None:
            obj = _read_json_file(cfg_file, "TransformerLens config")
            if not isinstance(obj, dict):
                raise SourceError(f"the TransformerLens config {cfg_file} is not a JSON object")
            src.tl_config = _config_fields(obj, str(cfg_file))
            src.notes.append(f"TransformerLens config read from {cfg_file.name}")
        else:
            src.notes.append("no TransformerLens config given (--tl-config): the model's sizes "
                             "come from the weights' shapes")
    from mechgrok.store import SPLIT_FILE

    if (folder / SPLIT_FILE).is_file():
        src.split = _read_split_file(folder / SPLIT_FILE)
        src.split_from = f"{SPLIT_FILE} beside the weights"
    return src


def _read_split_file(path: Path) -> tuple[Any, Any]:
    """A split: safetensors with ``train_idx`` and ``test_idx``, or JSON ``{"train": [...],
    "test": [...]}`` (``train_idx``/``test_idx`` also accepted)."""
    if sniff(path) == "safetensors":
        from mechgrok.store import tensors_from_bytes

        t = tensors_from_bytes(path.read_bytes(), str(path))[0]
    else:
        t = _read_json_file(path, "split file")
        if not isinstance(t, dict):
            raise SourceError(f"the split file {path} is not a JSON object")
        t = {"train_idx": t.get("train_idx", t.get("train")),
             "test_idx": t.get("test_idx", t.get("test"))}
    if t.get("train_idx") is None or t.get("test_idx") is None:
        raise SourceError(f"the split file {path} needs train_idx and test_idx (or train and "
                          f"test)")
    return t["train_idx"], t["test_idx"]  # checked against the task by tasks.checked_split


def detect_format(path: Path, allow_pickle: bool, mapping: Path | None) -> str:
    """The format of ``path`` (see :data:`FORMATS`); a one-line :class:`SourceError` when it
    cannot be told."""
    if mapping is not None:
        return "state-dicts"
    if path.is_dir():
        first = _state_files(path)[0][1]
        kind = sniff(first)
        if kind in ("torch", "pickle") and not allow_pickle:
            load_torch_file(first, False)  # says which flag reads it
        state = _unwrap_state(read_state_file(first, allow_pickle), first, None)
        if tlx.looks_like_tl_state(state):
            return "tl-state"
        raise SourceError(f"{path}: {first.name}'s parameter names are not TransformerLens's; "
                          f"give a mapping from them to mechgrok's with --mapping FILE (see "
                          f"docs/import.md)")
    kind = sniff(path)
    if kind == "safetensors":
        state = read_state_file(path, False)
        if tlx.looks_like_tl_state(state):
            return "tl-state"
        raise SourceError(f"{path}: its parameter names are not TransformerLens's; give a "
                          f"mapping from them to mechgrok's with --mapping FILE")
    if kind in ("torch", "pickle"):
        obj = load_torch_file(path, allow_pickle)
        if isinstance(obj, Mapping) and ("checkpoints" in obj or "state_dicts" in obj):
            return "tl-demo"
        if isinstance(obj, Mapping) and tlx.looks_like_tl_state(
                obj if _is_state(obj) else obj.get("model") or {}):
            return "tl-state"
        raise SourceError(f"{path}: a torch file that is neither the grokking demo's dict nor a "
                          f"TransformerLens state dict; give --mapping FILE for other names")
    raise SourceError(f"{path}: mechgrok cannot tell what this file holds (not safetensors, not a "
                      f"torch.save file); it imports {', '.join(FORMATS)}")


# --------------------------------------------------------------------------------------------
# Mapping files (state-dicts)
# --------------------------------------------------------------------------------------------
def read_mapping(path: Path) -> dict[str, Any]:
    """A mapping file: ``[params]`` (source name = mechgrok name, or ``{to = NAME, transpose =
    true}``), optional ``ignore`` (source names to leave out), ``state_key`` (the entry of each
    file holding the state dict), ``[task]`` and ``[model]`` (mechgrok config sections)."""
    m = _read_table_file(path, "mapping file")
    allowed = {"params", "ignore", "state_key", "task", "model"}
    unknown = sorted(set(m) - allowed)
    if unknown:
        raise SourceError(f"mapping file {path}: unknown entr{'ies' if len(unknown) > 1 else 'y'} "
                          f"{', '.join(unknown)}; allowed: {', '.join(sorted(allowed))}")
    params = m.get("params")
    if not isinstance(params, dict) or not params:
        raise SourceError(f"mapping file {path} needs a [params] table: your parameter name = "
                          f"mechgrok's (or {{to = NAME, transpose = true}})")
    norm: dict[str, tuple[str, bool]] = {}
    for src, dst in params.items():
        if isinstance(dst, str):
            norm[src] = (dst, False)
        elif isinstance(dst, dict) and isinstance(dst.get("to"), str) and set(dst) <= {
                "to", "transpose"} and isinstance(dst.get("transpose", False), bool):
            norm[src] = (dst["to"], bool(dst.get("transpose", False)))
        else:
            raise SourceError(f"mapping file {path}: params.{src} must be a mechgrok parameter "
                              f"name or {{to = NAME, transpose = true}}")
    targets = [t for t, _ in norm.values()]
    dup = sorted({t for t in targets if targets.count(t) > 1})
    if dup:
        raise SourceError(f"mapping file {path}: {dup[0]} is the target of more than one "
                          f"parameter")
    ignore = m.get("ignore", [])
    if not isinstance(ignore, list) or not all(isinstance(x, str) for x in ignore):
        raise SourceError(f"mapping file {path}: ignore must be a list of parameter names")
    key = m.get("state_key")
    if key is not None and not isinstance(key, str):
        raise SourceError(f"mapping file {path}: state_key must be a string")
    for section in ("task", "model"):
        if section in m and not isinstance(m[section], dict):
            raise SourceError(f"mapping file {path}: [{section}] must be a table")
    return {"params": norm, "ignore": set(ignore), "state_key": key, "task": m.get("task"),
            "model": m.get("model"), "path": str(path)}


def _apply_mapping(state: dict[str, Any], mapping: dict[str, Any], where: str) -> dict[str, Any]:
    params: dict[str, tuple[str, bool]] = mapping["params"]
    missing = sorted(set(params) - set(state))
    if missing:
        have = ", ".join(sorted(state)[:6])
        raise SourceError(f"{where}: the mapping names {missing[0]}, which is not in it (it has "
                          f"{have}{' …' if len(state) > 6 else ''})")
    unmapped = sorted(set(state) - set(params) - mapping["ignore"])
    if unmapped:
        raise SourceError(f"{where} has {unmapped[0]}, which the mapping neither maps nor "
                          f"ignores; add it to [params] or to ignore")
    out = {}
    for src, (dst, transpose) in params.items():
        t = state[src]
        if transpose:
            if t.ndim != 2:
                raise SourceError(f"{where}: {src} is {t.ndim}-D; only a 2-D tensor can be "
                                  f"transposed")
            t = t.T.contiguous()
        out[dst] = t
    return out


# --------------------------------------------------------------------------------------------
# Import
# --------------------------------------------------------------------------------------------
@dataclass
class ImportResult:
    path: Path
    format: str
    epochs: list[int]
    split_from: str
    notes: list[str]
    seconds: float
    source_bytes: int
    run_bytes: int
    final: dict[str, Any]


def _task_config(src: Source, n: int | None, flags: Mapping[str, Any]) -> tuple[TaskConfig, list[str]]:
    """The task: flags, then the export record or mapping file, then (a TransformerLens model on
    p + 1 tokens) modular addition mod p, said in a note."""
    notes: list[str] = []
    base: dict[str, Any] = {}
    if src.info and isinstance(src.info.get("task"), dict):
        base.update(src.info["task"])
    if src.mapping and src.mapping.get("task"):
        base.update(src.mapping["task"])
    base.update({k: v for k, v in flags.items() if v is not None})
    if "name" not in base:
        if n is None:
            raise SourceError("the source does not say its task: give --task (and --p)")
        base["name"] = "add"
        notes.append("the source does not record its task: assumed add (modular addition, as in "
                     "the grokking demo); give --task otherwise")
    if "p" not in base and n is not None:
        base["p"] = n
    try:
        task = TaskConfig.from_dict(base)
    except ConfigError as e:
        raise ConfigError(f"import: {e}") from None
    if n is not None and task.n != n:
        raise SourceError(f"the model answers {n} classes but task {task.name} with p = "
                          f"{task.p} has {task.n}: give the task and modulus it was trained on")
    return task, notes


def _model_config(src: Source, overrides: Mapping[str, Any]) -> tuple[Any, int | None]:
    """mechgrok's model config for the source, and its number of classes when it says."""
    if src.format in ("tl-demo", "tl-state"):
        first = src.checkpoints[0][1]
        if not tlx.looks_like_tl_state(first):
            raise SourceError(f"{src.files[0]}: not a TransformerLens HookedTransformer state dict "
                              f"(no embed.W_E / blocks.0.attn.W_Q / unembed.W_U)")
        fields = dict(src.tl_config or tlx.tl_config_from_state(first))
        if "act_fn" not in fields or fields["act_fn"] is None:
            fields["act_fn"] = overrides.get("act", "relu")
        where = str(src.files[0])
        model, n = tlx.model_config_from_tl(
            fields, unembed_bias=any(tlx.has_unembed_bias(s) for _, s in src.checkpoints),
            where=where)
        if overrides:
            try:
                model = model.replace(**overrides)
            except ConfigError as e:
                raise ConfigError(f"import: {e}") from None
        return model, n
    table = dict((src.mapping or {}).get("model") or {})
    table.update(overrides)
    if not table.get("kind"):
        raise SourceError("the mapping file needs a [model] table saying which mechgrok model the "
                          "weights fill (kind = \"mlp\" or \"transformer\", and its sizes)")
    cls = MODEL_KINDS.get(table["kind"])
    if cls is None:
        raise ConfigError(f"model.kind must be one of {', '.join(MODEL_KINDS)}, got "
                          f"{table['kind']!r}")
    try:
        return cls.from_dict(table), None
    except ConfigError as e:
        raise ConfigError(f"import: {e}") from None


def import_run(source: str | Path, out_dir: str | Path, name: str, *, fmt: str | None = None,
               allow_pickle: bool = False, mapping: str | Path | None = None,
               tl_config: str | Path | None = None, split: str | Path | None = None,
               task: Mapping[str, Any] | None = None, model: Mapping[str, Any] | None = None,
               epoch: int | None = None, epoch_offset: int | None = None,
               overwrite: bool = False) -> ImportResult:
    """Import ``source`` as the run ``out_dir/name`` (see the module docstring). ``task`` holds
    task fields (``name``, ``p``, ``frac_train``, ``data_seed``) and ``model`` model fields that
    override what the source says. Nothing is written unless the whole import succeeds."""
    import numpy as np
    import torch

    from mechgrok.models import build_model
    from mechgrok.store import (
        IMPORT_FILE,
        IMPORT_KIND,
        RunWriter,
        check_tensors,
        existing_run,
        remove_run_dir,
        run_dir,
    )
    from mechgrok.tasks import checked_split, make_dataset
    from mechgrok.training.loop import dataset_tensors, evaluate

    t0 = time.perf_counter()
    source = Path(source)
    path = run_dir(out_dir, name)
    if not source.exists():
        raise SourceError(f"{source} does not exist")
    if fmt is not None and fmt not in FORMATS:
        raise SourceError(f"unknown format {fmt!r}; mechgrok imports {', '.join(FORMATS)}")
    if overwrite:
        remove_run_dir(path)
    elif path.is_symlink() or (path.exists() and not (path.is_dir() and not any(path.iterdir()))):
        raise SourceError(f"{path} already exists; choose another name with --as, or replace it "
                          f"with --overwrite")
    mapping_d = read_mapping(Path(mapping)) if mapping is not None else None
    fmt = fmt or detect_format(source, allow_pickle, Path(mapping) if mapping else None)
    if fmt == "state-dicts" and mapping_d is None:
        raise SourceError("--format state-dicts needs --mapping FILE (your parameter names → "
                          "mechgrok's; see docs/import.md)")
    if fmt == "tl-demo":
        if source.is_dir():
            raise SourceError(f"{source} is a folder; the tl-demo format is one torch.save file")
        src = _read_demo(source, allow_pickle, epoch_offset)
    else:
        src = _read_states(source, fmt, allow_pickle, mapping_d,
                           Path(tl_config) if tl_config is not None else None, epoch)
        if epoch_offset:
            src.checkpoints = [(e + epoch_offset, s) for e, s in src.checkpoints]
    notes = list(src.notes)
    if any(e < 0 for e, _ in src.checkpoints):
        raise SourceError(f"{source}: epochs must be non-negative")

    model_cfg, n = _model_config(src, dict(model or {}))
    task_cfg, task_notes = _task_config(src, n, dict(task or {}))
    notes += task_notes
    dtype = next(iter(src.checkpoints[0][1].values())).dtype
    model_dtype = "float64" if dtype == torch.float64 else "float32"
    last_epoch = max(e for e, _ in src.checkpoints)

    # the split
    data = make_dataset(task_cfg.name, task_cfg.p, task_cfg.frac_train, task_cfg.data_seed)
    n_pairs = len(data.pairs)
    if split is not None:
        src.split, src.split_from = _read_split_file(Path(split)), f"--split {split}"
    if src.split is not None:
        where = f"{src.split_from} vs task {task_cfg.name}" + (
            f" mod {task_cfg.p}" if task_cfg.p else "")
        tr, te = checked_split(*src.split, n_pairs, what=where)
        data = dataclasses.replace(data, train_idx=tr, test_idx=te)
        if math.floor(task_cfg.frac_train * n_pairs) != len(tr):  # say what the split holds
            task_cfg = task_cfg.replace(frac_train=len(tr) / n_pairs)
        split_from = src.split_from
    else:
        split_from = (f"made by mechgrok (frac_train {task_cfg.frac_train:g}, data_seed "
                      f"{task_cfg.data_seed}): the source has no indices, so the model may have "
                      f"trained on the 'test' pairs; give the real split with --split FILE")
    cfg = RunConfig(task=task_cfg, model=model_cfg,
                    train=TrainConfig(epochs=max(last_epoch, 1), model_dtype=model_dtype))

    # every checkpoint converted and checked before anything is written
    proto = build_model(cfg)
    want = proto.state_dict()
    states: list[tuple[int, dict[str, Any]]] = []
    for e, s in sorted(src.checkpoints, key=lambda es: es[0]):
        where = f"{source} (epoch {e})"
        if src.format == "state-dicts":
            s = _apply_mapping(s, mapping_d, where)  # type: ignore[arg-type]
        else:
            s = tlx.state_from_tl(s, model_cfg, where)
        check_tensors(s, want, where, f"the mechgrok model of its config ({model_cfg.kind})")
        states.append((e, {k: v.detach().contiguous() for k, v in s.items()}))
    if len({e for e, _ in states}) != len(states):
        raise SourceError(f"{source}: two checkpoints have the same epoch")

    # mechgrok's own evaluation of every checkpoint
    tensors = dataset_tensors(data)
    metrics = []
    for e, s in states:
        proto.load_state_dict(s)
        proto.eval()
        tr_loss, tr_acc = evaluate(proto, tensors["train_x"], tensors["train_y"], "float64")
        te_loss, te_acc = evaluate(proto, tensors["test_x"], tensors["test_y"], "float64")
        metrics.append({"epoch": e, "step": e, "train_loss": tr_loss, "train_acc": tr_acc,
                        "test_loss": te_loss, "test_acc": te_acc,
                        "sum_sq_weights": proto.sum_sq_weights()})

    files = [_file_record(f, source) for f in src.files]
    record = {
        "kind": IMPORT_KIND, "schema_version": IMPORT_SCHEMA_VERSION, "format": src.format,
        "format_description": FORMATS[src.format], "source": str(source.resolve()),
        "source_files": files, "split_from": split_from, "notes": notes,
        "source_config": src.tl_config, "source_losses": src.losses,
        "mapping": (None if mapping_d is None else {
            "file": mapping_d["path"],
            "params": {k: {"to": t, "transpose": tr} for k, (t, tr) in mapping_d["params"].items()},
            "ignore": sorted(mapping_d["ignore"])}),
        "train_settings": "mechgrok's defaults: the source does not record its optimiser",
        "imported_at": datetime.datetime.now(datetime.UTC).isoformat(timespec="seconds"),
    }
    split_tensors = {"train_idx": torch.from_numpy(np.ascontiguousarray(data.train_idx)),
                     "test_idx": torch.from_numpy(np.ascontiguousarray(data.test_idx))}

    def fill(w: RunWriter) -> None:
        from mechgrok.store import atomic_write_json

        infos = [w.write_checkpoint_file(e, e, s).to_dict() for e, s in states]
        w.metrics = metrics
        atomic_write_json(w.path / IMPORT_FILE, record)
        w.manifest["checkpoints"] = infos
        w.manifest.update(status="finished", epochs_done=last_epoch, imported=True)
        w.write_metrics()
        w.write_manifest()

    if existing_run(path) is not None:  # appeared meanwhile
        raise SourceError(f"{path} already exists; choose another name with --as")
    writer = RunWriter.create(path, cfg, split_tensors, data.split_sha256(), fill=fill)
    writer.close()
    run_bytes = sum(f.stat().st_size for f in path.rglob("*") if f.is_file())
    return ImportResult(path, src.format, [e for e, _ in states], split_from, notes,
                        time.perf_counter() - t0, sum(r["size"] for r in files), run_bytes,
                        metrics[-1])


__all__ = ["FORMATS", "ImportResult", "Source", "detect_format", "import_run", "load_torch_file",
           "read_mapping", "read_state_file", "sniff"]
