"""What every trainer builds from: the split's tensors, the model with its biases frozen, the
batch geometry, the Grokfast filter, the evaluation pass and the checked resume state.

:mod:`mechgrok.training.single` (one model) and :mod:`mechgrok.training.vmap` (K seeds as one
batched model) both use these, so that a batched seed starts from exactly what a separate run of
it would.
"""

from __future__ import annotations

import math
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import torch

from mechgrok.config import RunConfig, TrainConfig
from mechgrok.errors import RunDirError
from mechgrok.models import HookedModel, build_model
from mechgrok.resources import EVAL_CHUNK
from mechgrok.stability import GrokfastEMA, GrokfastMA
from mechgrok.store import RunWriter
from mechgrok.tasks import TaskData
from mechgrok.training.losses import cross_entropy

__all__ = ["SHUFFLE_SEED_OFFSET", "batch_geometry", "dataset_tensors", "evaluate", "freeze_biases",
           "make_grokfast", "read_resume_checked", "torch_threads", "trained_model"]

SHUFFLE_SEED_OFFSET = 1_000_003  # a run's minibatch generator is seeded with train.seed + this


def dataset_tensors(data: TaskData) -> dict[str, torch.Tensor]:
    """Token tensors ``[x, y, =]`` (:attr:`~mechgrok.tasks.TaskData.tokens`) and labels, split.
    The MLP reads only the first two columns."""
    tokens = torch.from_numpy(data.tokens)
    labels = torch.from_numpy(data.labels)
    tr = torch.from_numpy(data.train_idx)
    te = torch.from_numpy(data.test_idx)
    return {"train_x": tokens[tr], "train_y": labels[tr], "test_x": tokens[te],
            "test_y": labels[te]}


@torch.no_grad()
def evaluate(model: HookedModel, x: torch.Tensor, y: torch.Tensor, loss_dtype: str,
             chunk: int = EVAL_CHUNK) -> tuple[float, float]:
    """(mean loss, accuracy) of the fast path on (x, y)."""
    total_loss = 0.0
    correct = 0
    for i in range(0, len(x), chunk):
        logits = model.forward_last(x[i : i + chunk])
        yy = y[i : i + chunk]
        total_loss += float(cross_entropy(logits, yy, loss_dtype)) * len(yy)
        correct += int((logits.argmax(-1) == yy).sum())
    return total_loss / len(x), correct / len(x)


def freeze_biases(model: HookedModel) -> None:
    """Zero every bias (``b``, ``b_*``) of ``model`` and take it out of training."""
    for name, p in model.named_parameters():
        leaf = name.rsplit(".", 1)[-1]
        if leaf.startswith("b_") or leaf == "b":
            with torch.no_grad():
                p.zero_()
            p.requires_grad_(False)


def trained_model(cfg: RunConfig) -> tuple[HookedModel, list[torch.Tensor]]:
    """The model ``cfg`` builds (biases frozen when ``train.freeze_biases``) and its trained
    parameters, in the optimiser's order."""
    model = build_model(cfg)
    if cfg.train.freeze_biases:
        freeze_biases(model)
    return model, [p for p in model.parameters() if p.requires_grad]


def batch_geometry(tc: TrainConfig, n_train: int) -> tuple[int, int, bool]:
    """(batch size, optimiser steps per epoch, full batch?) for ``n_train`` training examples."""
    batch = tc.batch_size or n_train
    return batch, math.ceil(n_train / batch), batch >= n_train


def make_grokfast(params: list[torch.Tensor], tc: TrainConfig) -> GrokfastEMA | GrokfastMA | None:
    """The Grokfast gradient filter ``tc`` asks for, on ``params`` (None when off)."""
    if tc.grokfast == "ema":
        return GrokfastEMA(params, alpha=tc.grokfast_alpha, lamb=tc.grokfast_lambda())
    if tc.grokfast == "ma":
        return GrokfastMA(params, window=tc.grokfast_window, lamb=tc.grokfast_lambda())
    return None


@contextmanager
def torch_threads(n: int | None) -> Iterator[None]:
    """torch's intra-op thread count set to ``n`` (unchanged when None or 0), put back after."""
    prev = torch.get_num_threads()
    if n:
        torch.set_num_threads(n)
    try:
        yield
    finally:
        torch.set_num_threads(prev)


def read_resume_checked(writer: RunWriter, cfg: RunConfig
                        ) -> tuple[dict[str, torch.Tensor], dict[str, torch.Tensor], dict[str, Any]]:
    """The last checkpoint's parameters and the resume state of ``writer``'s run: (state,
    resume tensors, resume metadata), every tensor's name, shape and dtype checked against what
    ``cfg`` builds before any of it reaches a kernel. Damage is one :class:`CheckpointError`
    naming the file."""
    from mechgrok.errors import CheckpointError
    from mechgrok.store import EXACT_PREFIX, check_tensors, read_verified
    from mechgrok.training.optim import check_optimizer_state

    model, params = trained_model(cfg)
    last = writer.manifest["checkpoints"][-1]
    ck_file = writer.path / last["file"]
    rstate, meta = writer.read_resume()
    rfile = writer.path / writer.manifest["resume"]["file"]
    exact = {k[len(EXACT_PREFIX):]: v for k, v in rstate.items() if k.startswith(EXACT_PREFIX)}
    if exact:  # the checkpoint is stored at reduced precision; the resume file has the weights
        state, where = exact, f"the weights in {rfile}"
    else:
        state, _ = read_verified(ck_file, last["size"], last["sha256"])
        where = f"checkpoint {ck_file}"
    check_tensors(state, model.state_dict(), where, "the model its run's config.json describes")
    if meta["epoch"] != last["epoch"]:
        raise RunDirError(f"run {writer.path}: resume state (epoch {meta['epoch']}) does not "
                          f"match the last checkpoint (epoch {last['epoch']})")
    unknown = sorted(k for k in rstate if not (k.startswith("optim.") or k == "rng.shuffle"
                                               or k.startswith(("grokfast.", EXACT_PREFIX))))
    if unknown:
        raise CheckpointError(f"{rfile} holds tensors mechgrok does not write ({unknown[:3]})")
    check_optimizer_state(rstate, params, cfg.train, str(rfile))
    rng = rstate["rng.shuffle"]
    want = torch.Generator().get_state()
    if rng.dtype != want.dtype or tuple(rng.shape) != tuple(want.shape):
        raise CheckpointError(f"{rfile}: rng.shuffle is {tuple(rng.shape)} {rng.dtype}, not a "
                              f"generator state ({tuple(want.shape)} {want.dtype})")
    _check_grokfast(rstate, params, cfg.train, str(rfile))
    return state, rstate, meta


def _check_grokfast(rstate: dict[str, torch.Tensor], params: list[torch.Tensor], tc: TrainConfig,
                    rfile: str) -> None:
    """Refuse saved Grokfast state that the run's filter cannot load."""
    from mechgrok.errors import CheckpointError, ConfigError

    saved_gf = {k[len("grokfast."):]: v for k, v in rstate.items() if k.startswith("grokfast.")}
    gfilter = make_grokfast(params, tc)
    if gfilter is None and saved_gf:
        raise CheckpointError(f"{rfile} holds Grokfast state, but the run's config has no "
                              f"Grokfast filter")
    if gfilter is not None:
        try:
            gfilter.load_tensors(saved_gf)
        except (ValueError, TypeError, ConfigError) as e:
            raise CheckpointError(f"{rfile}: {e}") from None
