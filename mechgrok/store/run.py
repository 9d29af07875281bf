"""The run directory (a **contract**: users' saved runs depend on it).

``checkpoints/<run-id>/`` holds:

* ``config.json``: the fully resolved :class:`~mechgrok.config.RunConfig` (kind, schema version);
* ``manifest.json``: status, every checkpoint (epoch, step, file, size, SHA-256), the resume file,
  the split's SHA-256, package versions; for a run started from another run's checkpoint
  (``train --from``) its ``parent`` (run id, path, epoch, step, the checkpoint's SHA-256 and
  precision: :func:`parent_record`; absent otherwise, and from every run written before it);
* ``split.safetensors``: the train and test indices into the task's row-major pair list;
* ``metrics.jsonl``: one JSON object per evaluation (epoch, step, losses, accuracies, weight norm);
* ``ckpt/epoch_NNNNNNN.safetensors``: model parameters after that many epochs (tensors only);
* ``resume_epoch_NNNNNNN.safetensors``: optimiser and RNG state at the last checkpoint, for
  ``--resume`` (tensors plus JSON metadata; one file, renamed per checkpoint);
* ``run.lock``: held (``flock``, :mod:`mechgrok.store.lock`) by the process training into the
  directory;
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

import dataclasses
import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from mechgrok.config import RunConfig
from mechgrok.errors import CheckpointError, ConfigError, RunDirError
from mechgrok.store.files import (
    check_tensors,
    is_nonneg_int,
    read_json_object,
    read_verified,
    tensors_from_bytes,
)
from mechgrok.store.layout import (
    CONFIG_FILE,
    IMPORT_FILE,
    MANIFEST_FILE,
    METRICS_FILE,
    SPLIT_FILE,
)
from mechgrok.store.manifest import (
    REDUCED_DTYPES,
    CheckpointInfo,
    is_final,
    validate_manifest,
)

__all__ = ["IMPORT_KIND", "METRIC_NUMBERS", "Run", "parent_record", "read_metrics",
           "read_saved_config"]

IMPORT_KIND = "mechgrok.import"
METRIC_NUMBERS = ("train_loss", "test_loss", "train_acc", "test_acc")
_REQUIRED_METRICS = ("train_acc", "test_acc")


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
        self.manifest = read_json_object(man_path, "manifest")
        validate_manifest(self.manifest, man_path, self.path)  # first: is it a mechgrok run?
        self.config = _read_config(cfg_path)

    @property
    def id(self) -> str:
        return self.path.resolve().name

    @property
    def status(self) -> str:
        return str(self.manifest.get("status", "unknown"))

    @property
    def is_final(self) -> bool:
        """Whether the run has ended (finished, grokked or diverged) and is not to be trained
        further (:func:`mechgrok.store.is_final`, the one definition)."""
        return is_final(self.status)

    @property
    def parent(self) -> dict[str, Any] | None:
        """The checkpoint this run started from (``train --from``), as :func:`parent_record`
        wrote it; None for a run trained from its own initialisation."""
        p = self.manifest.get("parent")
        return dict(p) if isinstance(p, dict) else None

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
        rec = read_json_object(f, "import record")
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
        n = self.config.task.n_pairs  # not n²: div has no pair with y = 0
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
        data = self.config.task.dataset()
        train_idx, test_idx = self.split()
        data = dataclasses.replace(data, train_idx=train_idx.numpy(), test_idx=test_idx.numpy())
        want = self.manifest["split_sha256"]  # validate_manifest made sure there is one
        if data.split_sha256() != want:
            raise CheckpointError(f"{self.path / SPLIT_FILE} does not match the manifest's split "
                                  f"hash; the run directory was altered")
        return data


def parent_record(run: Run, ck: CheckpointInfo) -> dict[str, Any]:
    """What a run started from ``run``'s checkpoint ``ck`` records as its manifest's ``parent``:
    the run's id and absolute path, the checkpoint's epoch, step, SHA-256 and precision."""
    return {"run_id": run.id, "path": str(run.path.resolve()), "epoch": ck.epoch,
            "step": ck.step, "sha256": ck.sha256, "precision": ck.precision}


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
            if (k == "epoch" or k in m) and not is_nonneg_int(m.get(k)):
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
        return RunConfig.from_saved(read_json_object(path, "config"))  # every field, or refused
    except ConfigError as e:
        raise RunDirError(f"{path}: {e}") from None
