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

import re
import time
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from mechgrok.config import RunConfig, TrainConfig
from mechgrok.errors import SourceError
from mechgrok.interop import transformer_lens as tlx
from mechgrok.interop.convert import (
    IMPORT_SCHEMA_VERSION,
    converted_states,
    evaluate_checkpoints,
    import_record,
    source_split,
    write_run,
)
from mechgrok.interop.formats import FORMATS, PICKLE_FLAG, ForeignObject, file_record, sniff
from mechgrok.interop.mapping import read_mapping
from mechgrok.interop.sources import (
    Source,
    add_split_beside,
    add_tl_config,
    checkpoint_epoch,
    demo_source,
    epoch_in_name,
    export_info,
    is_state,
    model_config,
    state_files,
    task_config,
    unwrap_state,
)

__all__ = ["FORMATS", "IMPORT_SCHEMA_VERSION", "ImportResult", "Source", "detect_format",
           "import_run", "load_torch_file", "read_mapping", "read_state_file", "sniff"]


# --------------------------------------------------------------------------------------------
# Reading files: safetensors as they are, pickles only on request and only as data
# --------------------------------------------------------------------------------------------
def _safe_globals() -> list[Any]:
    """The globals ``torch.load(weights_only=True)`` may build besides tensors: TransformerLens's
    config class (as the inert :class:`~mechgrok.interop.formats.ForeignObject`) and NumPy
    scalars and dtypes (plain numbers in a config's fields)."""
    import numpy as np

    out: list[Any] = [
        (ForeignObject, "transformer_lens.config.hooked_transformer_config."
                        "HookedTransformerConfig"),
        (ForeignObject, "transformer_lens.HookedTransformerConfig.HookedTransformerConfig"),
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


def _read_states(path: Path, fmt: str, allow_pickle: bool, mapping: dict[str, Any] | None,
                 tl_config_file: Path | None, epoch: int | None) -> Source:
    """``tl-state`` and ``state-dicts``: one file or a folder of per-epoch files."""
    folder = path if path.is_dir() else path.parent
    listed = state_files(path) if path.is_dir() else [(epoch_in_name(path), path)]
    info = export_info(folder)
    key = mapping.get("state_key") if mapping else None
    checkpoints = [(checkpoint_epoch(e, len(listed), epoch, info),
                    unwrap_state(read_state_file(f, allow_pickle), f, key)) for e, f in listed]
    src = Source(fmt, checkpoints, mapping=mapping, info=info, files=[f for _, f in listed])
    if fmt == "tl-state":
        add_tl_config(src, path, tl_config_file)
    add_split_beside(src, folder)
    return src


def detect_format(path: Path, allow_pickle: bool, mapping: Path | None) -> str:
    """The format of ``path`` (see :data:`FORMATS`); a one-line :class:`SourceError` when it
    cannot be told."""
    if mapping is not None:
        return "state-dicts"
    if path.is_dir():
        first = state_files(path)[0][1]
        kind = sniff(first)
        if kind in ("torch", "pickle") and not allow_pickle:
            load_torch_file(first, False)  # says which flag reads it
        state = unwrap_state(read_state_file(first, allow_pickle), first, None)
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
                obj if is_state(obj) else obj.get("model") or {}):
            return "tl-state"
        raise SourceError(f"{path}: a torch file that is neither the grokking demo's dict nor a "
                          f"TransformerLens state dict; give --mapping FILE for other names")
    raise SourceError(f"{path}: mechgrok cannot tell what this file holds (not safetensors, not a "
                      f"torch.save file); it imports {', '.join(FORMATS)}")


# --------------------------------------------------------------------------------------------
# Import
# --------------------------------------------------------------------------------------------
@dataclass
class ImportResult:
    """What :func:`import_run` made: the run's path, the source's format, the imported epochs,
    where the split came from, notes, timings, sizes and the last checkpoint's metrics."""

    path: Path
    format: str
    epochs: list[int]
    split_from: str
    notes: list[str]
    seconds: float
    source_bytes: int
    run_bytes: int
    final: dict[str, Any]


def _check_target(source: Path, path: Path, fmt: str | None, overwrite: bool) -> None:
    """Refuse a missing source, an unknown format or an existing run (``--overwrite`` removes
    it)."""
    from mechgrok.store import remove_run_dir

    if not source.exists():
        raise SourceError(f"{source} does not exist")
    if fmt is not None and fmt not in FORMATS:
        raise SourceError(f"unknown format {fmt!r}; mechgrok imports {', '.join(FORMATS)}")
    if overwrite:
        remove_run_dir(path)
    elif path.is_symlink() or (path.exists() and not (path.is_dir() and not any(path.iterdir()))):
        raise SourceError(f"{path} already exists; choose another name with --as, or replace it "
                          f"with --overwrite")


def _read_source(source: Path, fmt: str | None, allow_pickle: bool, mapping: Path | None,
                 mapping_d: dict[str, Any] | None, tl_config: Path | None, epoch: int | None,
                 epoch_offset: int | None) -> Source:
    """The source in memory, in whichever format it is (given, else detected)."""
    fmt = fmt or detect_format(source, allow_pickle, mapping)
    if fmt == "state-dicts" and mapping_d is None:
        raise SourceError("--format state-dicts needs --mapping FILE (your parameter names → "
                          "mechgrok's; see docs/import.md)")
    if fmt == "tl-demo":
        if source.is_dir():
            raise SourceError(f"{source} is a folder; the tl-demo format is one torch.save file")
        src = demo_source(load_torch_file(source, allow_pickle), source, epoch_offset)
    else:
        src = _read_states(source, fmt, allow_pickle, mapping_d, tl_config, epoch)
        if epoch_offset:
            src.checkpoints = [(e + epoch_offset, s) for e, s in src.checkpoints]
    if any(e < 0 for e, _ in src.checkpoints):
        raise SourceError(f"{source}: epochs must be non-negative")
    return src


def import_run(source: str | Path, out_dir: str | Path, name: str, *, fmt: str | None = None,
               allow_pickle: bool = False, mapping: str | Path | None = None,
               tl_config: str | Path | None = None, split: str | Path | None = None,
               task: Mapping[str, Any] | None = None, model: Mapping[str, Any] | None = None,
               epoch: int | None = None, epoch_offset: int | None = None,
               overwrite: bool = False) -> ImportResult:
    """Import ``source`` as the run ``out_dir/name`` (see the module docstring). ``task`` holds
    task fields (``name``, ``p``, ``frac_train``, ``data_seed``) and ``model`` model fields that
    override what the source says. Nothing is written unless the whole import succeeds."""
    import torch

    from mechgrok.models import build_model
    from mechgrok.store import run_dir

    t0 = time.perf_counter()
    source = Path(source)
    path = run_dir(out_dir, name)
    _check_target(source, path, fmt, overwrite)
    mapping_d = read_mapping(Path(mapping)) if mapping is not None else None
    src = _read_source(source, fmt, allow_pickle, Path(mapping) if mapping else None, mapping_d,
                       Path(tl_config) if tl_config is not None else None, epoch, epoch_offset)
    model_cfg, n = model_config(src, dict(model or {}))
    task_cfg, task_notes = task_config(src, n, dict(task or {}))
    notes = [*src.notes, *task_notes]
    dtype = next(iter(src.checkpoints[0][1].values())).dtype
    last_epoch = max(e for e, _ in src.checkpoints)
    data, task_cfg, split_from = source_split(src, task_cfg, split)
    cfg = RunConfig(task=task_cfg, model=model_cfg, train=TrainConfig(
        epochs=max(last_epoch, 1), model_dtype="float64" if dtype == torch.float64 else "float32"))
    proto = build_model(cfg)
    states = converted_states(src, source, model_cfg, proto.state_dict())
    metrics = evaluate_checkpoints(proto, states, data)
    files = [file_record(f, source) for f in src.files]
    write_run(path, cfg, data, states, metrics,
              import_record(src, source, files, split_from, notes, mapping_d))
    run_bytes = sum(f.stat().st_size for f in path.rglob("*") if f.is_file())
    return ImportResult(path, src.format, [e for e, _ in states], split_from, notes,
                        time.perf_counter() - t0, sum(r["size"] for r in files), run_bytes,
                        metrics[-1])
