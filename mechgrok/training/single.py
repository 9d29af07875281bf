"""One model's side of the training loop: its optimiser steps, evaluations and saved state.

:class:`SingleStepper` is what :func:`mechgrok.training.train` and
:func:`mechgrok.training.resume` hand to :func:`mechgrok.training.loop.run_loop` (a loop of
K = 1 models). The model trains on its fast path (``forward_last``); ⊥Grad wraps the optimiser,
the Grokfast filter runs between ``backward()`` and the optimiser step, the fixed weight norm
(:mod:`~mechgrok.training.norm`) after it; minibatches are drawn from the run's own shuffling
generator, one ``randperm`` per epoch. A new run starts from its config's initialisation, or
from given weights (``start``: the checkpoint ``train --from`` names) with a fresh optimiser.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence

import torch
from torch import Tensor

from mechgrok.config import RunConfig
from mechgrok.stability import OrthoGrad
from mechgrok.store import RunWriter
from mechgrok.tasks import TaskData
from mechgrok.training.losses import loss_function
from mechgrok.training.norm import rescale_to_norm_, start_norm, total_norm, weight_norm_target
from mechgrok.training.optim import (
    load_optimizer_state,
    lr_at,
    make_optimizer,
    optimizer_state_tensors,
    set_lr,
)
from mechgrok.training.parts import (
    SHUFFLE_SEED_OFFSET,
    batch_geometry,
    dataset_tensors,
    evaluate,
    freeze_biases,
    make_grokfast,
    read_resume_checked,
    trained_model,
)
from mechgrok.training.stepper import Scores, Start

__all__ = ["SingleStepper"]


class SingleStepper:
    """One run's model, optimiser, Grokfast filter and shuffling generator, built from ``cfg``
    (and, for a resumed run, restored from ``writer``'s last checkpoint: :attr:`start`). A new
    run's weights are ``start_state`` when given (checked by the caller against what ``cfg``
    builds; frozen biases are zeroed again), else ``cfg``'s initialisation."""

    def __init__(self, cfg: RunConfig, data: TaskData, writer: RunWriter, resumed: bool,
                 start_state: dict[str, Tensor] | None = None):
        self.tc = tc = cfg.train
        t = dataset_tensors(data)
        self.train_x, self.train_y = t["train_x"], t["train_y"]
        self.test_x, self.test_y = t["test_x"], t["test_y"]
        self.batch, self.steps_per_epoch, self.full_batch = batch_geometry(tc, len(self.train_x))
        self.model, params = trained_model(cfg)
        if start_state is not None and not resumed:
            self.model.load_state_dict(start_state)
            if tc.freeze_biases:
                freeze_biases(self.model)
        self.params = params
        self.norm_target = weight_norm_target(
            tc, (lambda: start_norm(writer, cfg)) if resumed else (lambda: total_norm(params)))
        opt = make_optimizer(params, tc)
        if tc.orthograd:  # ⊥Grad around the optimiser, which keeps its own betas and eps
            opt = OrthoGrad(opt)
        self.opt = opt
        self.gfilter = make_grokfast(params, tc)
        self.loss_fn = loss_function(tc)
        self.shuffle = torch.Generator().manual_seed(tc.seed + SHUFFLE_SEED_OFFSET)
        self.start = Start.new(1)
        if resumed:
            self.start = self._restore(writer, cfg)
        self.model.train()

    def _restore(self, writer: RunWriter, cfg: RunConfig) -> Start:
        state, rstate, meta = read_resume_checked(writer, cfg)
        self.model.load_state_dict(state)
        load_optimizer_state(self.opt, rstate)
        if self.gfilter is not None:
            self.gfilter.load_tensors({k[len("grokfast."):]: v for k, v in rstate.items()
                                       if k.startswith("grokfast.")})
        self.shuffle.set_state(rstate["rng.shuffle"])
        return Start(int(meta["epoch"]), int(meta["step"]), [int(meta["grok_streak"])],
                     [float(meta["elapsed_s"])])

    def train_epoch(self, step: int) -> int:
        n_train = len(self.train_x)
        order = None if self.full_batch else torch.randperm(n_train, generator=self.shuffle)
        for i in range(self.steps_per_epoch):
            if order is None:
                xb, yb = self.train_x, self.train_y
            else:
                idx = order[i * self.batch : (i + 1) * self.batch]
                xb, yb = self.train_x[idx], self.train_y[idx]
            set_lr(self.opt, lr_at(step, self.tc))
            self.opt.zero_grad(set_to_none=True)
            loss = self.loss_fn(self.model.forward_last(xb), yb)
            loss.backward()
            if self.gfilter is not None:
                self.gfilter.apply()
            self.opt.step()
            if self.norm_target is not None:
                rescale_to_norm_(self.params, self.norm_target)
            step += 1
        return step

    def evaluate(self) -> list[Scores]:
        self.model.eval()
        tr_loss, tr_acc = evaluate(self.model, self.train_x, self.train_y, self.tc.loss_dtype)
        te_loss, te_acc = evaluate(self.model, self.test_x, self.test_y, self.tc.loss_dtype)
        self.model.train()
        return [Scores(tr_loss, tr_acc, te_loss, te_acc, self.model.sum_sq_weights())]

    def saved(self, which: Sequence[int]) -> Iterator[tuple[dict[str, Tensor], dict[str, Tensor]]]:
        for _ in which:
            rstate = optimizer_state_tensors(self.opt)
            rstate["rng.shuffle"] = self.shuffle.get_state()
            if self.gfilter is not None:
                rstate.update({f"grokfast.{k}": v for k, v in self.gfilter.tensors().items()})
            yield self.model.state_dict(), rstate
