"""From a :class:`~mechgrok.interop.sources.Source` to a mechgrok run directory: the split, the
state dicts in mechgrok's parameter names, mechgrok's own evaluation of every checkpoint, the
import record (``imported.json``) and the write (conventions in :mod:`mechgrok.interop.importer`).
"""

from __future__ import annotations

import dataclasses
import datetime
import math
from pathlib import Path
from typing import TYPE_CHECKING, Any

from mechgrok.config import ModelConfig, RunConfig, TaskConfig, TransformerConfig
from mechgrok.errors import SourceError
from mechgrok.interop import transformer_lens as tlx
from mechgrok.interop.formats import FORMATS
from mechgrok.interop.mapping import apply_mapping
from mechgrok.interop.sources import Source, read_split_file

if TYPE_CHECKING:  # pragma: no cover
    from mechgrok.models import HookedModel
    from mechgrok.tasks import TaskData

__all__ = ["IMPORT_SCHEMA_VERSION", "converted_states", "evaluate_checkpoints", "import_record",
           "in_mechgrok_names", "source_split", "write_run"]

IMPORT_SCHEMA_VERSION = 1


def source_split(src: Source, task_cfg: TaskConfig, split: str | Path | None
                 ) -> tuple[TaskData, TaskConfig, str]:
    """The task's data with the source's split (or ``--split FILE``'s, or mechgrok's own, said
    loudly), the task config saying what the split holds, and where the split came from."""
    from mechgrok.tasks import checked_split

    data = task_cfg.dataset()
    n_pairs = len(data.pairs)
    if split is not None:
        src.split, src.split_from = read_split_file(Path(split)), f"--split {split}"
    if src.split is None:
        return data, task_cfg, (
            f"made by mechgrok (frac_train {task_cfg.frac_train:g}, data_seed "
            f"{task_cfg.data_seed}): the source has no indices, so the model may have trained on "
            f"the 'test' pairs; give the real split with --split FILE")
    where = f"{src.split_from} vs task {task_cfg.name}" + (
        f" mod {task_cfg.p}" if task_cfg.p else "")
    tr, te = checked_split(*src.split, n_pairs, what=where)
    data = dataclasses.replace(data, train_idx=tr, test_idx=te)
    if math.floor(task_cfg.frac_train * n_pairs) != len(tr):  # say what the split holds
        task_cfg = task_cfg.replace(frac_train=len(tr) / n_pairs)
    return data, task_cfg, src.split_from


def in_mechgrok_names(state: dict[str, Any], src: Source,
                      model_cfg: ModelConfig, where: str) -> dict[str, Any]:
    """A source state dict in mechgrok's parameter names: by the mapping file (state-dicts), or
    from TransformerLens's (the other formats, whose model is always a transformer)."""
    if src.format == "state-dicts":
        if src.mapping is None:  # pragma: no cover - import_run refuses this
            raise SourceError("--format state-dicts needs --mapping FILE")
        return apply_mapping(state, src.mapping, where)
    if not isinstance(model_cfg, TransformerConfig):  # pragma: no cover - model_config's
        raise SourceError(f"{where}: a TransformerLens state dict fills a transformer only")
    return tlx.state_from_tl(state, model_cfg, where)


def converted_states(src: Source, source: Path, model_cfg: ModelConfig,
                     want: dict[str, Any]) -> list[tuple[int, dict[str, Any]]]:
    """Every checkpoint in mechgrok's names, checked against the model, before anything is
    written; sorted by epoch."""
    from mechgrok.store import check_tensors

    states: list[tuple[int, dict[str, Any]]] = []
    for e, s in sorted(src.checkpoints, key=lambda es: es[0]):
        where = f"{source} (epoch {e})"
        s = in_mechgrok_names(s, src, model_cfg, where)
        check_tensors(s, want, where, f"the mechgrok model of its config ({model_cfg.kind})")
        states.append((e, {k: v.detach().contiguous() for k, v in s.items()}))
    if len({e for e, _ in states}) != len(states):
        raise SourceError(f"{source}: two checkpoints have the same epoch")
    return states


def evaluate_checkpoints(model: HookedModel, states: list[tuple[int, dict[str, Any]]],
                         data: TaskData) -> list[dict[str, Any]]:
    """mechgrok's own evaluation of every checkpoint: the rows of ``metrics.jsonl``."""
    from mechgrok.training.loop import dataset_tensors, evaluate

    tensors = dataset_tensors(data)
    metrics = []
    for e, s in states:
        model.load_state_dict(s)
        model.eval()
        tr_loss, tr_acc = evaluate(model, tensors["train_x"], tensors["train_y"], "float64")
        te_loss, te_acc = evaluate(model, tensors["test_x"], tensors["test_y"], "float64")
        metrics.append({"epoch": e, "step": e, "train_loss": tr_loss, "train_acc": tr_acc,
                        "test_loss": te_loss, "test_acc": te_acc,
                        "sum_sq_weights": model.sum_sq_weights()})
    return metrics


def import_record(src: Source, source: Path, files: list[dict[str, Any]], split_from: str,
                  notes: list[str], mapping_d: dict[str, Any] | None) -> dict[str, Any]:
    """``imported.json``: where the run came from and what mechgrok made of it."""
    from mechgrok.store import IMPORT_KIND

    return {
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


def write_run(path: Path, cfg: RunConfig, data: TaskData,
              states: list[tuple[int, dict[str, Any]]], metrics: list[dict[str, Any]],
              record: dict[str, Any]) -> None:
    """The run directory, whole: checkpoints, metrics, ``imported.json``, manifest."""
    import numpy as np
    import torch

    from mechgrok.store import IMPORT_FILE, RunWriter, atomic_write_json, existing_run

    split_tensors = {"train_idx": torch.from_numpy(np.ascontiguousarray(data.train_idx)),
                     "test_idx": torch.from_numpy(np.ascontiguousarray(data.test_idx))}
    last_epoch = max(e for e, _ in states)

    def fill(w: RunWriter) -> None:
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
