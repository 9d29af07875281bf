"""Starting a new run from another run's checkpoint (``mechgrok train --from RUN[@EPOCH]``;
Varma et al. 2023's "ungrokking": a grokked network trained further on a much smaller train set).

The new run is an ordinary run directory with its own config (typically the parent's with another
``task.frac_train`` or ``task.data_seed``, or other training settings): its epoch-0 checkpoint is
the parent's checkpoint (cast to the new run's ``model_dtype``; with ``train.freeze_biases`` the
biases are zeroed, as the setting says), and everything else starts fresh: the optimiser state
(Adam's moments and step count), the learning-rate warm-up, the minibatch order (seeded by the
new run's ``train.seed``), Grokfast's filter and the epoch count. Its manifest records the parent
(:func:`~mechgrok.store.parent_record`: run id, path, epoch, step, the checkpoint's SHA-256 and
precision).

The parent's checkpoint must fit the model the new config builds, tensor for tensor (names and
shapes): the task's number of classes (``task.p``, or the degree of S_n) and the model's widths,
layers and optional tensors must be the parent's. The activation, attention rate and the like may
change (the weights still fit); ``model.init`` and ``model.init_scale`` do nothing here. A
mismatch is refused in one line naming the settings that differ.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

from torch import Tensor

from mechgrok.config import RunConfig
from mechgrok.errors import ConfigError
from mechgrok.models import build_model
from mechgrok.store import CheckpointInfo, Run, parent_record

__all__ = ["ParentStart", "config_differences", "parent_start"]


@dataclass(frozen=True)
class ParentStart:
    """The weights a new run starts from (``state``, in the new run's dtype) and the record of
    where they came from, for its manifest (``record``)."""

    state: dict[str, Tensor]
    record: dict[str, Any]


def config_differences(parent: RunConfig, child: RunConfig) -> list[str]:
    """The task size and model settings that differ, ``section.field parent → child``."""
    out = []
    if parent.task.n != child.task.n:
        for k in ("p", "degree"):
            a, b = getattr(parent.task, k), getattr(child.task, k)
            if a != b:
                out.append(f"task.{k} {a} → {b}")
    pm, cm = parent.model.to_dict(), child.model.to_dict()
    if pm["kind"] != cm["kind"]:
        return [*out, f"model.kind {pm['kind']} → {cm['kind']}"]
    out += [f"model.{k} {pm.get(k, '(none)')} → {cm.get(k, '(none)')}"
            for k in (*pm, *(k for k in cm if k not in pm)) if pm.get(k) != cm.get(k)]
    return out


def parent_start(run: str | Path | Run, epoch: int | None, cfg: RunConfig) -> ParentStart:
    """The checkpoint of ``run`` at ``epoch`` (its last when None), verified (size, SHA-256) and
    checked against the model ``cfg`` builds, as the start of a new run of ``cfg``.

    Refused in one line: a path that holds no run, an epoch with no checkpoint, a checkpoint
    whose tensors do not fit ``cfg``'s model (naming the settings that differ)."""
    parent = run if isinstance(run, Run) else Run(run)
    ck: CheckpointInfo = parent.checkpoint(epoch)
    want = build_model(cfg).state_dict()
    got = parent.load_into(build_model(parent.config), ck).state_dict()
    fits = set(got) == set(want) and all(got[k].shape == want[k].shape for k in want)
    if not fits:
        diffs = config_differences(parent.config, cfg) or ["the tensors' names or shapes"]
        raise ConfigError(f"run {parent.id}'s checkpoint does not fit the model this config "
                          f"builds: {', '.join(diffs[:6])}; --from keeps the parent's model and "
                          f"task size (change the split and the training settings)")
    state = {k: v.detach().to(want[k].dtype).clone() for k, v in got.items()}
    return ParentStart(state, parent_record(parent, ck))
