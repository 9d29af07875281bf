"""What an imported source holds, and the mechgrok configs it implies.

A :class:`Source` is a source read into memory: state dicts by epoch in the source's parameter
names, its TransformerLens config, split, loss curves and notes. The functions here build one
from what the files held (the reading itself, and any unpickling, is
:mod:`mechgrok.interop.importer`'s), find a folder's per-epoch files and the files beside the
weights, and derive the run's task and model configs (see the conventions in
:mod:`mechgrok.interop.importer`).
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from mechgrok.config import MODEL_KINDS, ModelConfig, TaskConfig, TransformerConfig
from mechgrok.errors import ConfigError, SourceError
from mechgrok.interop import transformer_lens as tlx
from mechgrok.interop.formats import STATE_SUFFIXES, ForeignObject, read_json_file, sniff
from mechgrok.interop.transformer_lens import EXPORT_INFO_FILE, EXPORT_KIND

__all__ = ["Source", "add_split_beside", "add_tl_config", "checkpoint_epoch", "config_fields",
           "demo_source", "epoch_in_name", "export_info", "is_state", "model_config",
           "read_split_file", "state_files", "task_config", "unwrap_state"]

_LAST_INT = re.compile(r"(\d+)(?!.*\d)")


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


# --------------------------------------------------------------------------------------------
# State dicts and configs inside what a file holds
# --------------------------------------------------------------------------------------------
def is_state(obj: Any) -> bool:
    """Whether ``obj`` is a non-empty mapping of names to tensors."""
    return isinstance(obj, Mapping) and bool(obj) and all(
        isinstance(k, str) and hasattr(v, "shape") for k, v in obj.items())


def unwrap_state(obj: Any, path: Path, key: str | None) -> dict[str, Any]:
    """The state dict inside what a file holds: the file itself, ``obj[key]``, or the one of
    ``model``, ``model_state_dict``, ``state_dict`` it has."""
    if key is not None and not (is_state(obj) and key not in obj):  # files that hold more
        if not isinstance(obj, Mapping) or key not in obj:
            raise SourceError(f"{path} has no entry {key!r} (the mapping's state_key)")
        obj = obj[key]
    elif isinstance(obj, Mapping) and not is_state(obj):
        for k in ("model", "model_state_dict", "state_dict"):
            if is_state(obj.get(k)):
                obj = obj[k]
                break
    if not is_state(obj):
        raise SourceError(f"{path} does not hold a state dict (a mapping of parameter names to "
                          f"tensors){' under ' + repr(key) if key else ''}")
    return dict(obj)


def config_fields(cfg: Any, where: str) -> dict[str, Any]:
    """A pickled config (an inert object or a dict) as a JSON-safe dict of its fields."""
    if isinstance(cfg, ForeignObject):
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


# --------------------------------------------------------------------------------------------
# tl-demo: the grokking demo's dict
# --------------------------------------------------------------------------------------------
def _demo_epochs(obj: Mapping[str, Any], where: str, epoch_offset: int | None
                 ) -> tuple[list[Any], list[int], int]:
    """The demo's checkpoints, their epochs (recorded + offset) and the offset."""
    cks = obj.get("checkpoints", obj.get("state_dicts"))
    eps = obj.get("checkpoint_epochs", obj.get("epochs"))
    if not isinstance(cks, (list, tuple)) or not all(is_state(c) for c in cks):
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
    return list(cks), epochs, offset


def _add_demo_final(src: Source, final: Any, cks: list[Any], epochs: list[int]) -> None:
    """The demo's final ``model``: one more checkpoint when it differs from its last one."""
    if not is_state(final):
        return
    if not cks:
        src.checkpoints.append((len(src.losses.get("train_losses", [])), dict(final)))
        return
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


def demo_source(obj: Any, path: Path, epoch_offset: int | None) -> Source:
    """A ``tl-demo`` source from what its ``torch.save`` file held."""
    where = str(path)
    if not isinstance(obj, Mapping):
        raise SourceError(f"{path} holds a {type(obj).__name__}, not the grokking demo's dict")
    cks, epochs, offset = _demo_epochs(obj, where, epoch_offset)
    src = Source("tl-demo", [(e, dict(c)) for e, c in zip(epochs, cks)], files=[path])
    if offset:
        src.notes.append(f"epochs are the file's checkpoint_epochs + {offset} (the demo records "
                         f"the 0-based index of the epoch just finished)")
    if obj.get("config") is not None:
        src.tl_config = config_fields(obj["config"], where)
    for k in ("train_losses", "test_losses"):
        v = _losses(obj, k)
        if v is not None:
            src.losses[k] = v
    _add_demo_final(src, obj.get("model"), cks, epochs)
    tr = obj.get("train_indices", obj.get("train_idx"))
    te = obj.get("test_indices", obj.get("test_idx"))
    if tr is not None and te is not None:
        src.split = (tr, te)  # checked against the task by tasks.checked_split
        src.split_from = "the file's train_indices and test_indices"
    if not src.checkpoints:
        raise SourceError(f"{where} holds no checkpoints")
    return src


# --------------------------------------------------------------------------------------------
# tl-state and state-dicts: files, folders and what lies beside the weights
# --------------------------------------------------------------------------------------------
def epoch_in_name(path: Path) -> int | None:
    """The last number in a file's stem (its epoch), or None."""
    m = _LAST_INT.search(path.stem)
    return int(m.group(1)) if m else None


def state_files(path: Path) -> list[tuple[int | None, Path]]:
    """A folder's state-dict files with the epoch in each name (None when it has no number)."""
    from mechgrok.store import SPLIT_FILE

    files = sorted(f for f in path.iterdir()
                   if f.is_file() and f.suffix in STATE_SUFFIXES and f.name != SPLIT_FILE
                   and not f.name.startswith("."))
    if not files:
        raise SourceError(f"{path} holds no state-dict files ({', '.join(STATE_SUFFIXES)})")
    out = [(epoch_in_name(f), f) for f in files]
    if len(out) == 1:
        return out
    numbered = [(e, f) for e, f in out if e is not None]
    if len(numbered) < len(out):
        unnumbered = next(f.name for e, f in out if e is None)
        raise SourceError(f"{path}: {unnumbered} has no epoch number in its name; a folder's "
                          f"files are ordered by the last number in their names")
    seen: dict[int, str] = {}
    for e, f in numbered:
        if e in seen:
            raise SourceError(f"{path}: {seen[e]} and {f.name} both say epoch {e}")
        seen[e] = f.name
    return [(e, f) for e, f in sorted(numbered, key=lambda ef: ef[0])]


def export_info(folder: Path) -> dict[str, Any] | None:
    """``mechgrok export``'s record beside the weights, when there is one."""
    if not (folder / EXPORT_INFO_FILE).is_file():
        return None
    info = read_json_file(folder / EXPORT_INFO_FILE, "export record")
    if not isinstance(info, dict) or info.get("kind") != EXPORT_KIND:
        return None
    return info


def checkpoint_epoch(named: int | None, n_files: int, epoch: int | None,
                     info: dict[str, Any] | None) -> int:
    """A file's epoch: its name's number in a folder of several; for one file (or a name with
    no number) ``--epoch``, else the export record's, else the name's, else 0."""
    if named is not None and n_files > 1:
        return named
    if epoch is not None:
        return epoch
    if info and isinstance(info.get("epoch"), int):
        return int(info["epoch"])
    return named or 0


def add_tl_config(src: Source, path: Path, tl_config_file: Path | None) -> None:
    """The TransformerLens config of a ``tl-state`` source: ``--tl-config``, else the JSON beside
    the weights (``<stem>.json``, ``config.json``), else none (sizes from the weights' shapes)."""
    folder = path if path.is_dir() else path.parent
    cfg_file = tl_config_file
    if cfg_file is None:
        for cand in ((folder / f"{path.stem}.json") if path.is_file() else None,
                     folder / "config.json"):
            if cand is not None and cand.is_file():
                cfg_file = cand
                break
    if cfg_file is None:
        src.notes.append("no TransformerLens config given (--tl-config): the model's sizes "
                         "come from the weights' shapes")
        return
    obj = read_json_file(cfg_file, "TransformerLens config")
    if not isinstance(obj, dict):
        raise SourceError(f"the TransformerLens config {cfg_file} is not a JSON object")
    src.tl_config = config_fields(obj, str(cfg_file))
    src.notes.append(f"TransformerLens config read from {cfg_file.name}")


def add_split_beside(src: Source, folder: Path) -> None:
    """The split file beside the weights (as ``mechgrok export`` writes it), when there is one."""
    from mechgrok.store import SPLIT_FILE

    if (folder / SPLIT_FILE).is_file():
        src.split = read_split_file(folder / SPLIT_FILE)
        src.split_from = f"{SPLIT_FILE} beside the weights"


def read_split_file(path: Path) -> tuple[Any, Any]:
    """A split: safetensors with ``train_idx`` and ``test_idx``, or JSON ``{"train": [...],
    "test": [...]}`` (``train_idx``/``test_idx`` also accepted)."""
    if sniff(path) == "safetensors":
        from mechgrok.store import tensors_from_bytes

        t = tensors_from_bytes(path.read_bytes(), str(path))[0]
    else:
        t = read_json_file(path, "split file")
        if not isinstance(t, dict):
            raise SourceError(f"the split file {path} is not a JSON object")
        t = {"train_idx": t.get("train_idx", t.get("train")),
             "test_idx": t.get("test_idx", t.get("test"))}
    if t.get("train_idx") is None or t.get("test_idx") is None:
        raise SourceError(f"the split file {path} needs train_idx and test_idx (or train and "
                          f"test)")
    return t["train_idx"], t["test_idx"]  # checked against the task by tasks.checked_split


# --------------------------------------------------------------------------------------------
# The configs a source implies
# --------------------------------------------------------------------------------------------
def task_config(src: Source, n: int | None, flags: Mapping[str, Any]
                ) -> tuple[TaskConfig, list[str]]:
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
        raise SourceError(f"the model answers {n} classes but task {task.title} has {task.n}: "
                          f"give the task and modulus (or degree) it was trained on")
    return task, notes


def _tl_model_config(src: Source, overrides: Mapping[str, Any]
                     ) -> tuple[TransformerConfig, int]:
    first = src.checkpoints[0][1]
    if not tlx.looks_like_tl_state(first):
        raise SourceError(f"{src.files[0]}: not a TransformerLens HookedTransformer state dict "
                          f"(no embed.W_E / blocks.0.attn.W_Q / unembed.W_U)")
    fields = dict(src.tl_config or tlx.tl_config_from_state(first))
    if "act_fn" not in fields or fields["act_fn"] is None:
        fields["act_fn"] = overrides.get("act", "relu")
    model, n = tlx.model_config_from_tl(
        fields, unembed_bias=any(tlx.has_unembed_bias(s) for _, s in src.checkpoints),
        where=str(src.files[0]))
    if overrides:
        try:
            model = model.replace(**overrides)
        except ConfigError as e:
            raise ConfigError(f"import: {e}") from None
    return model, n


def model_config(src: Source, overrides: Mapping[str, Any]
                 ) -> tuple[ModelConfig, int | None]:
    """mechgrok's model config for the source, and its number of classes when it says."""
    if src.format in ("tl-demo", "tl-state"):
        return _tl_model_config(src, overrides)
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
