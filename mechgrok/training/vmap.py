"""Train K seeds of one config in one process as one batched model (``torch.func.vmap``).

:func:`train_seeds` trains the runs ``cfg`` with ``train.seed = seeds[k]`` into ``paths[k]``.
Every run directory it writes has the format of a normal run (the same ``config.json`` as
``mechgrok train`` writes for that seed, the same manifest keys, checkpoint tensor names, metrics
keys and resume file keys), so :class:`~mechgrok.store.Run` reads it, the probes analyse it and
the normal :func:`mechgrok.training.resume` continues it.

Design
------
* **Model.** Each seed's model is built with ``build_model(cfg_k)`` (the same initialisation as a
  separate run), then the K models' parameters are stacked
  (:class:`~mechgrok.training.stacked.StackedModels`): one leaf tensor ``(K, *shape)`` per
  parameter. The logits of all seeds come from ``torch.func.vmap`` over ``functional_call`` of
  one base model's fast path (``forward_last(tokens, same_query=True)``). The loss is the sum
  over seeds of each seed's mean loss (``loss_function(train)``: loss dtype and StableMax
  respected), so ``backward()`` gives each seed's slice exactly its own gradient.
* **Optimiser.** One optimiser (``make_optimizer``) on the stacked tensors. AdamW, Adam and SGD
  are element-wise, so this is K independent optimisers (per-element state; the step count is
  shared, and every seed steps together). The learning rate follows ``lr_at(step)`` as in the
  loop. ``freeze_biases`` zeroes the biases and leaves them out of the optimiser, so the
  optimiser's parameter indices are those of a normal run. ⊥Grad is applied per seed
  (:func:`~mechgrok.training.stacked.orthogonalize_stacked_`); Grokfast EMA and MA are
  element-wise, so the library filters on the stacked tensors are per seed. A fixed weight norm
  (:mod:`~mechgrok.training.norm`) rescales each seed's slice to its own target after the step.
* **Minibatches.** Seed k shuffles with its own generator, drawing one ``randperm`` per epoch as
  a separate run does, so its batch order is a separate run's; the vmap then runs over
  (parameters, tokens, labels).
* **Evaluations, checkpoints, stopping** are the training loop's
  (:func:`mechgrok.training.loop.run_loop`, with K writers), per seed. ``elapsed_s`` is the
  wall-clock time of the batched training (all K seeds together), added to what a resumed run
  had already spent. A seed that diverges or groks gets its final checkpoint and status and its
  writer is closed; its slice keeps being computed (nothing more is written for it) until every
  seed has stopped or ``train.epochs`` is reached. A checkpoint's resume file holds that seed's
  slice of the optimiser state (``optim.{idx}.{key}``, the scalar ``step`` copied), its shuffling
  generator and its slice of the Grokfast state, exactly as a single-seed run stores them.
* **Existing directories** (:func:`~mechgrok.training.seeds.plan_seeds`). A finished (or
  grokked) run is skipped (``already-finished``), as :func:`~mechgrok.training.resume` does.
  Unfinished runs are grouped by the epoch of their last checkpoint and each group is resumed as
  one batched model (parameters, optimiser state, shuffling generators, Grokfast state, epoch,
  step, grok streak and elapsed time restored; metrics past the checkpoint dropped). When all
  unfinished runs stopped at the same checkpoint, which is the usual case, that is one batched
  resume; when a kill landed between two seeds' checkpoints they form two groups, trained one
  after the other (a group of one is a batched model of one seed). New runs form one group
  starting at epoch 0. A directory holding a run of another config is refused before anything is
  trained.

How close a batched seed is to its separate run (equal up to floating-point rounding; resumes
bit-identical at the same K) is measured and explained in :mod:`mechgrok.training.stacked`.

When it pays
------------
The per-step work of the small models of grokking research is a few dozen small kernels plus
Python and dispatch overhead. A batched model pays the overhead once for K seeds; it saves none
of the arithmetic, and vmap adds layout copies and larger working sets. So it pays where the
overhead dominates (tiny models on a CPU; any small model on a GPU, where a step is mostly kernel
launches) and not where the arithmetic does. Measured on a 2-core CPU, one thread
(``benchmarks/seeds_throughput.py``), per-seed epochs per second, batched vs K separate runs:
a small transformer (add mod 23, d_model 32, 400 epochs) K = 1 446 vs 687 (0.65×), K = 4 944 vs
682 (1.38×), K = 16 1120 vs 653 (1.72×); the ``quick`` preset (add mod 53, d_model 64, 200
epochs) K = 1 0.92×, K = 4 0.90×, K = 16 0.72×: arithmetic-bound, so separate processes on
separate cores (the sweep's default) are the faster way there. On a GPU it should pay for every
preset (not measured: no GPU was available; the benchmark times the step loop where there is
one). Memory grows K-fold (parameters, optimiser state and activations of K models).
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

import torch
from torch import Tensor
from torch.func import functional_call, vmap

from mechgrok.config import RunConfig
from mechgrok.errors import RunDirError
from mechgrok.resources import EVAL_CHUNK, check_memory
from mechgrok.store import RunWriter
from mechgrok.tasks import TaskData
from mechgrok.training.loop import TrainResult, run_loop
from mechgrok.training.losses import cross_entropy, loss_function
from mechgrok.training.norm import rescale_to_norm_, start_norm, total_norm, weight_norm_target
from mechgrok.training.optim import lr_at, make_optimizer, optimizer_state_tensors, set_lr
from mechgrok.training.parts import (
    SHUFFLE_SEED_OFFSET,
    batch_geometry,
    dataset_tensors,
    make_grokfast,
    torch_threads,
)
from mechgrok.training.seeds import SeedPlan, check_seeds, plan_seeds
from mechgrok.training.stacked import (
    FastPath,
    StackedModels,
    grokfast_slice,
    orthogonalize_stacked_,
    restore_stacked,
    slice_state,
)
from mechgrok.training.stepper import Scores, Start

__all__ = ["orthogonalize_stacked_", "train_seeds"]


def train_seeds(cfg: RunConfig, seeds: Sequence[int], paths: Sequence[str | Path], *,
                progress: bool | None = None) -> list[TrainResult]:
    """Train ``cfg`` with ``train.seed = seeds[k]`` into ``paths[k]``, all seeds as one batched
    model; return one :class:`~mechgrok.training.loop.TrainResult` per path, in order.

    New (missing or empty) paths are trained from scratch, unfinished runs of the same config are
    resumed, finished ones are skipped (``already-finished``); see the module docstring.
    """
    seeds = check_seeds(seeds)
    check_memory(cfg, n_models=len(seeds))  # K models at once; before anything is created
    plan = plan_seeds(cfg, seeds, paths)
    with torch_threads(cfg.train.threads):
        if plan.new:
            _train_new(plan, progress)
        for group in plan.groups:
            _train_resumed(plan, group, progress)
    results = [r for r in plan.results if r is not None]
    assert len(results) == len(seeds)  # every seed was skipped, trained or resumed
    return results


def _train_new(plan: SeedPlan, progress: bool | None) -> None:
    cfg = plan.cfgs[0]
    data = cfg.task.dataset()
    split = {"train_idx": torch.from_numpy(data.train_idx),
             "test_idx": torch.from_numpy(data.test_idx)}
    writers: list[RunWriter] = []
    try:
        for k in plan.new:
            writers.append(RunWriter.create(plan.paths[k], plan.cfgs[k], split,
                                            data.split_sha256()))
        res = _train_group([plan.cfgs[k] for k in plan.new], writers, data, False, progress)
    finally:
        for w in writers:
            w.close()
    for k, r in zip(plan.new, res):
        plan.results[k] = r


def _train_resumed(plan: SeedPlan, group: list[int], progress: bool | None) -> None:
    writers: list[RunWriter] = []
    try:
        datas = []
        for k in group:
            writers.append(RunWriter.reopen(plan.paths[k]))
            datas.append(plan.runs[k].dataset())
        if len({d.split_sha256() for d in datas}) != 1:
            raise RunDirError(f"runs {', '.join(str(plan.paths[k]) for k in group)} have "
                              f"different train/test splits and cannot train together; "
                              f"resume them one by one with `mechgrok train --resume`")
        res = _train_group([plan.cfgs[k] for k in group], writers, datas[0], True, progress)
    finally:
        for w in writers:
            w.close()
    for k, r in zip(group, res):
        plan.results[k] = r


def _train_group(cfgs: list[RunConfig], writers: list[RunWriter], data: TaskData, resumed: bool,
                 progress: bool | None) -> list[TrainResult]:
    """Train the K runs ``cfgs`` (same config but the seed) as one batched model."""
    k = len(cfgs)

    def postfix(live: list[dict[str, Any]]) -> str:
        return (f"train loss {min(m['train_loss'] for m in live):.2e}…"
                f"{max(m['train_loss'] for m in live):.2e} test acc "
                f"{min(m['test_acc'] for m in live):.3f}…{max(m['test_acc'] for m in live):.3f}")

    def interrupted(epoch: int) -> str:
        return (f"interrupted at epoch {epoch}; the checkpoints of the {k} runs are intact: "
                f"continue with train_seeds and the same seeds and paths, or with "
                f"`mechgrok train --resume DIR` for each run")

    stepper = _BatchedStepper(cfgs, writers, data, resumed)
    return run_loop(stepper, writers, cfgs[0].train, resumed=resumed, progress=progress,
                    desc=f"{k} seed{'s' if k > 1 else ''}", postfix=postfix,
                    interrupted=interrupted)


class _BatchedStepper:
    """The K seeds ``cfgs`` as one batched model: stacked parameters, one optimiser on them, a
    shuffling generator per seed (restored from ``writers`` when ``resumed``)."""

    def __init__(self, cfgs: list[RunConfig], writers: list[RunWriter], data: TaskData,
                 resumed: bool):
        self.k = len(cfgs)
        self.tc = tc = cfgs[0].train
        t = dataset_tensors(data)
        self.train_x, self.train_y = t["train_x"], t["train_y"]
        self.test_x, self.test_y = t["test_x"], t["test_y"]
        self.batch, self.steps_per_epoch, self.full_batch = batch_geometry(tc, len(self.train_x))
        self.models = m = StackedModels(cfgs)
        self.opt = make_optimizer(m.params, tc)
        self.gfilter = make_grokfast(m.params, tc)
        loss_fn = loss_function(tc)
        self.shuffles = [torch.Generator().manual_seed(c.train.seed + SHUFFLE_SEED_OFFSET)
                         for c in cfgs]
        self.start = Start.new(self.k)
        self.norm_targets = _norm_targets(cfgs, writers, m, resumed)
        if resumed:
            self.start = restore_stacked(writers, cfgs, m, self.opt, self.gfilter, self.shuffles)
        fast = FastPath(m.base)
        self.call_params = {f"m.{n}": v for n, v in m.source.items()}

        def seed_loss(p: dict[str, Tensor], x: Tensor, y: Tensor) -> Tensor:
            return loss_fn(functional_call(fast, p, (x,)), y)

        def seed_logits(p: dict[str, Tensor], x: Tensor) -> Tensor:
            return functional_call(fast, p, (x,))

        self.loss_shared = vmap(seed_loss, in_dims=(0, None, None))  # full batch: same tokens
        self.loss_batched = vmap(seed_loss, in_dims=(0, 0, 0))  # minibatches: each seed its own
        self.logits_shared = vmap(seed_logits, in_dims=(0, None))
        m.base.train()

    def train_epoch(self, step: int) -> int:
        tc, n_train, batch = self.tc, len(self.train_x), self.batch
        orders = None if self.full_batch else torch.stack(
            [torch.randperm(n_train, generator=g) for g in self.shuffles])
        for i in range(self.steps_per_epoch):
            set_lr(self.opt, lr_at(step, tc))
            self.opt.zero_grad(set_to_none=True)
            if orders is None:
                losses = self.loss_shared(self.call_params, self.train_x, self.train_y)
            else:
                idx = orders[:, i * batch : (i + 1) * batch]  # (K, batch)
                losses = self.loss_batched(self.call_params, self.train_x[idx], self.train_y[idx])
            losses.sum().backward()
            if self.gfilter is not None:
                self.gfilter.apply()
            if tc.orthograd:  # as OrthoGrad.step: project, then the base optimiser's step
                orthogonalize_stacked_(self.models.params)
            self.opt.step()
            if self.norm_targets is not None:
                rescale_to_norm_(self.models.params, self.norm_targets)
            step += 1
        return step

    @torch.no_grad()
    def _scores(self, x: Tensor, y: Tensor) -> list[tuple[float, float]]:
        """(mean loss, accuracy) per seed on (x, y), ``EVAL_CHUNK`` rows per seed at a time."""
        loss = [0.0] * self.k
        correct = [0] * self.k
        for i in range(0, len(x), EVAL_CHUNK):
            logits = self.logits_shared(self.call_params, x[i : i + EVAL_CHUNK])  # (K, rows, classes)
            yy = y[i : i + EVAL_CHUNK]
            hits = (logits.argmax(-1) == yy).sum(1).tolist()
            for k in range(self.k):
                loss[k] += float(cross_entropy(logits[k], yy, self.tc.loss_dtype)) * len(yy)
                correct[k] += int(hits[k])
        return [(loss[k] / len(x), correct[k] / len(x)) for k in range(self.k)]

    def evaluate(self) -> list[Scores]:
        base = self.models.base
        base.eval()
        tr = self._scores(self.train_x, self.train_y)
        te = self._scores(self.test_x, self.test_y)
        base.train()
        return [Scores(*tr[k], *te[k], self.models.sum_sq_weights(k)) for k in range(self.k)]

    def saved(self, which: Sequence[int]) -> Iterator[tuple[dict[str, Tensor], dict[str, Tensor]]]:
        opt_state = optimizer_state_tensors(self.opt)
        gf_state = self.gfilter.tensors() if self.gfilter is not None else {}
        for k in which:
            rstate = slice_state(opt_state, self.models.params, k, "optim.")
            rstate["rng.shuffle"] = self.shuffles[k].get_state()
            rstate.update(grokfast_slice(gf_state, k))
            yield self.models.state(k), rstate


def _norm_targets(cfgs: list[RunConfig], writers: list[RunWriter], models: StackedModels,
                  resumed: bool) -> Tensor | None:
    """Each seed's fixed total weight norm, float64 ``(K,)`` (None when the norm is free): what
    a separate run of it holds, taken from its slice at epoch 0 (its epoch-0 checkpoint when
    resumed) unless ``train.weight_norm_target`` names it."""
    targets = []
    for k, (cfg, w) in enumerate(zip(cfgs, writers)):
        def at_start(k: int = k, cfg: RunConfig = cfg, w: RunWriter = w) -> float:
            if resumed:
                return start_norm(w, cfg)
            return total_norm(p[k] for p in models.params)
        targets.append(weight_norm_target(cfg.train, at_start))
    if targets[0] is None:
        return None
    return torch.tensor(targets, dtype=torch.float64)
