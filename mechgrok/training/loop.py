"""The training loop (one, for every trainer): dense checkpoints, metrics, resume, a progress bar.

:func:`run_loop` trains K ≥ 1 models that step together, model k writing run directory k; what
happens *between* the optimiser steps is written here once: evaluations, metrics records,
checkpoints, the grokked stop, divergence, the progress bar, Ctrl-C and the final status. The
steps themselves come from a :class:`~mechgrok.training.stepper.Stepper`:
:class:`~mechgrok.training.single.SingleStepper` for :func:`train` and :func:`resume` (K = 1), the
batched one of :mod:`mechgrok.training.vmap` for K seeds.

Metrics are computed on the models *after* ``epoch`` epochs, with a no-grad pass over the train
and test sets, every ``eval_every`` epochs and at every checkpoint (``train.is_checkpoint_epoch``;
the writer stores it exactly or at reduced precision, ``train.stores_exact``). Each model has its
own status: one that diverges (non-finite train loss) or groks (``stop_after_grok`` evaluations
in a row at test accuracy ≥ :data:`GROK_ACC`) gets its final checkpoint and status, its writer is
closed and nothing more is written for it, while the others go on.

Resuming restores the last checkpoint's parameters, the optimiser state and the minibatch
shuffling generator, so on the same machine (same thread count) a resumed run ends bit-identical
to one that was never interrupted.
"""

from __future__ import annotations

import math
import sys
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from mechgrok.config import RunConfig, TrainConfig
from mechgrok.errors import ConfigError, MechgrokError, RunDirError
from mechgrok.resources import check_memory
from mechgrok.store import CONFIG_FILE, Run, RunWriter
from mechgrok.tasks import TaskData
from mechgrok.training.optim import lr_at
from mechgrok.training.parent import parent_start
from mechgrok.training.parts import dataset_tensors, evaluate, torch_threads
from mechgrok.training.stepper import Stepper

__all__ = ["GROK_ACC", "TrainResult", "TrainingInterrupted", "dataset_tensors", "evaluate",
           "resume", "run_loop", "train"]

GROK_ACC = 0.99


class TrainingInterrupted(MechgrokError):
    """Ctrl-C during training: the runs were marked ``interrupted``; their checkpoints are
    intact and resumable (the message says how)."""

    exit_code = 130


@dataclass
class TrainResult:
    """What training one run gave: its directory, status, epochs trained, last metrics record
    and seconds spent training it."""

    path: Path
    status: str  # finished | grokked (stopped early) | diverged | already-finished
    epochs: int
    final: dict[str, Any]
    seconds: float

    @classmethod
    def already_finished(cls, run: Run) -> TrainResult:
        """A run that had ended before (not trained further): its last epoch and metrics."""
        cks = run.checkpoints()
        metrics = run.metrics()
        return cls(run.path, "already-finished", cks[-1].epoch if cks else 0,
                   metrics[-1] if metrics else {}, 0.0)


def train(cfg: RunConfig, path: str | Path, *, progress: bool | None = None,
          on_eval: Callable[[dict[str, Any]], None] | None = None,
          threads: int | None = None, from_run: str | Path | Run | None = None,
          from_epoch: int | None = None) -> TrainResult:
    """Train a new run into ``path`` (which must not exist, be empty, or hold a run killed before
    its first manifest, which is started again).

    ``from_run``: start from that run's checkpoint at ``from_epoch`` (its last when None) instead
    of ``cfg``'s initialisation, with a fresh optimiser; the new run's manifest names it
    (:mod:`mechgrok.training.parent`, ``mechgrok train --from RUN[@EPOCH]``)."""
    check_memory(cfg)  # refuse what this machine cannot hold before anything is created
    start = None
    if from_run is not None:
        start = parent_start(from_run, from_epoch, cfg)  # checked before anything is created
    elif from_epoch is not None:
        raise ConfigError("from_epoch names a checkpoint of from_run; give from_run as well")
    data = cfg.task.dataset()
    split = {"train_idx": torch.from_numpy(data.train_idx), "test_idx": torch.from_numpy(data.test_idx)}
    writer = RunWriter.create(Path(path), cfg, split, data.split_sha256(),
                              parent=start.record if start is not None else None)
    return _run(cfg, data, writer, resumed=False, progress=progress, on_eval=on_eval,
                threads=threads, start_state=start.state if start is not None else None)


def resume(path: str | Path, *, progress: bool | None = None,
           on_eval: Callable[[dict[str, Any]], None] | None = None,
           threads: int | None = None) -> TrainResult:
    """Continue an interrupted run from its last checkpoint.

    A run that has ended (:func:`~mechgrok.store.is_final`: finished, grokked, diverged) is not
    trained further (``status="already-finished"``). A run killed before its first checkpoint
    is started again from its saved config. ``threads`` overrides the run's ``train.threads`` for
    this process (a machine setting: the config is not changed; the result is bit-identical to an
    uninterrupted run only with the same thread count)."""
    from mechgrok.store import existing_run, read_saved_config

    path = Path(path)
    cfg_before = read_saved_config(path)  # None when there is none (or no folder)
    run = existing_run(path)
    if run is None:
        if cfg_before is None:
            raise RunDirError(f"{path} holds no run to resume (no {CONFIG_FILE}); start it with "
                              f"`mechgrok train`")
        return train(cfg_before, path, progress=progress, on_eval=on_eval, threads=threads)
    if run.is_final:
        return TrainResult.already_finished(run)
    if not run.checkpoints():
        raise RunDirError(f"run {run.path} has no checkpoint to resume from; start it again")
    writer = RunWriter.reopen(run.path)
    try:
        data = run.dataset()
    except BaseException:
        writer.close()
        raise
    return _run(run.config, data, writer, resumed=True, progress=progress, on_eval=on_eval,
                threads=threads)


def _run(cfg: RunConfig, data: TaskData, writer: RunWriter, *, resumed: bool,
         progress: bool | None, on_eval: Callable[[dict[str, Any]], None] | None,
         threads: int | None = None,
         start_state: dict[str, torch.Tensor] | None = None) -> TrainResult:
    from mechgrok.errors import DiskFullError
    from mechgrok.training.single import SingleStepper

    def interrupted(epoch: int) -> str:
        cks = writer.manifest["checkpoints"]
        last_ck = cks[-1]["epoch"] if cks else None
        return (f"interrupted at epoch {epoch}; checkpoints up to epoch {last_ck} are intact: "
                f"continue with `mechgrok train --resume {writer.path}`")

    with torch_threads(threads or cfg.train.threads):
        try:
            stepper = SingleStepper(cfg, data, writer, resumed, start_state)
            return run_loop(stepper, [writer], cfg.train, resumed=resumed, progress=progress,
                            desc=writer.path.name[:40], postfix=_postfix, interrupted=interrupted,
                            on_eval=on_eval)[0]
        except DiskFullError as e:
            writer.stop_after_disk_full()
            cks = writer.manifest["checkpoints"]
            upto = f"up to epoch {cks[-1]['epoch']} " if cks else ""
            raise DiskFullError(f"{str(e).split('; ')[0]}; the run's checkpoints {upto}are "
                                f"intact: free some space, then continue with "
                                f"`mechgrok train --resume {writer.path}`") from None
        finally:
            writer.close()


def _postfix(live: list[dict[str, Any]]) -> str:
    m = live[0]
    return (f"loss {m['train_loss']:.2e}/{m['test_loss']:.2e} "
            f"acc {m['train_acc']:.3f}/{m['test_acc']:.3f}")


def run_loop(stepper: Stepper, writers: Sequence[RunWriter], tc: TrainConfig, *, resumed: bool,
             progress: bool | None, desc: str, postfix: Callable[[list[dict[str, Any]]], str],
             interrupted: Callable[[int], str],
             on_eval: Callable[[dict[str, Any]], None] | None = None) -> list[TrainResult]:
    """Train ``stepper``'s K models to ``tc.epochs``, model k into ``writers[k]``; one
    :class:`TrainResult` per model.

    A new run (``resumed`` false) is evaluated and checkpointed at epoch 0 first; a resumed one
    starts at ``stepper.start`` with its metrics past that checkpoint dropped. ``progress``
    shows a bar (None: when stderr is a terminal) named ``desc``, its postfix ``postfix(the
    latest records of the models still training)``. Ctrl-C marks every open run interrupted and
    raises :class:`TrainingInterrupted` with the message ``interrupted(epoch)``. ``on_eval`` is
    called with each metrics record written."""
    loop = _Loop(stepper, writers, tc, on_eval)
    loop.begin(resumed)
    show = sys.stderr.isatty() if progress is None else progress
    bar = None
    if show:
        from tqdm import tqdm

        bar = tqdm(total=tc.epochs, initial=loop.epoch, unit="ep", dynamic_ncols=True,
                   mininterval=0.5, desc=desc, file=sys.stderr)
    loop.flush_at = time.monotonic() + 5.0
    loop.t0 = time.perf_counter()
    try:
        while loop.epoch < tc.epochs and any(loop.open):
            loop.step = stepper.train_epoch(loop.step)
            loop.epoch += 1
            live = loop.after_epoch()
            if live and bar is not None:
                bar.set_postfix_str(postfix(live), refresh=False)
            if bar is not None:
                bar.update(1)
    except KeyboardInterrupt:
        loop.interrupt()
        raise TrainingInterrupted(interrupted(loop.epoch)) from None
    finally:
        if bar is not None:
            bar.close()
    return loop.finish()


class _Loop:
    """:func:`run_loop`'s state: the epoch and step, and per model its writer, whether it is
    still training (its writer open), status, grok streak, elapsed time and latest record."""

    def __init__(self, stepper: Stepper, writers: Sequence[RunWriter], tc: TrainConfig,
                 on_eval: Callable[[dict[str, Any]], None] | None):
        self.stepper, self.writers, self.tc, self.on_eval = stepper, list(writers), tc, on_eval
        self.k = k = len(self.writers)
        start = stepper.start
        self.epoch, self.step = start.epoch, start.step
        self.streaks, self.spent = list(start.streaks), list(start.spent)
        self.elapsed = list(self.spent)
        self.open = [True] * k
        self.status = ["finished"] * k
        self.stopped_at = [0] * k
        self.last: list[dict[str, Any]] = [{} for _ in writers]  # each model's latest record
        self.flush_at = self.t0 = 0.0

    def begin(self, resumed: bool) -> None:
        """New runs are evaluated and checkpointed at epoch 0; resumed ones have their metrics
        past the checkpoint dropped, stray files removed and their status set to running."""
        if resumed:
            for w in self.writers:
                w.metrics = [m for m in w.metrics if m["epoch"] <= self.epoch]
                w.remove_strays()
                w.set_status("running")
        else:
            self.record()
            self.checkpoint(list(range(self.k)))
        self.last = [w.metrics[-1] if w.metrics else {} for w in self.writers]

    def record(self) -> list[dict[str, Any]]:
        """Every model's metrics record now; the open runs' are appended to their metrics."""
        scores = self.stepper.evaluate()
        out = []
        for k, s in enumerate(scores):
            m = {"epoch": self.epoch, "step": self.step, "train_loss": s.train_loss,
                 "train_acc": s.train_acc, "test_loss": s.test_loss, "test_acc": s.test_acc,
                 "sum_sq_weights": s.sum_sq_weights, "lr": lr_at(max(self.step - 1, 0), self.tc),
                 "elapsed_s": round(self.elapsed[k], 3)}
            out.append(m)
            if self.open[k]:
                self.writers[k].metrics.append(m)
                if self.on_eval is not None:
                    self.on_eval(m)
        return out

    def checkpoint(self, which: list[int]) -> None:
        if not which:
            return
        for k, (state, rstate) in zip(which, self.stepper.saved(which)):
            meta = {"epoch": self.epoch, "step": self.step, "grok_streak": self.streaks[k],
                    "elapsed_s": self.elapsed[k]}
            self.writers[k].write_checkpoint(self.epoch, self.step, state, rstate, meta)

    def after_epoch(self) -> list[dict[str, Any]]:
        """Evaluate and checkpoint where the schedule says; the new records of the models that
        were training (none when this epoch is not evaluated). A model that diverged or grokked
        gets its final checkpoint and status, and its writer is closed."""
        now = time.perf_counter() - self.t0
        self.elapsed = [s + now if self.open[k] else self.elapsed[k]
                        for k, s in enumerate(self.spent)]
        tc, epoch = self.tc, self.epoch
        is_ck = tc.is_checkpoint_epoch(epoch)
        if not (epoch % tc.eval_every == 0 or is_ck):
            return []
        ms = self.record()
        live = [k for k in range(self.k) if self.open[k]]
        to_write, stopping = [], []
        for k in live:
            self.last[k] = m = ms[k]
            if not math.isfinite(m["train_loss"]):
                self.status[k] = "diverged"
            self.streaks[k] = self.streaks[k] + 1 if m["test_acc"] >= GROK_ACC else 0
            if tc.stop_after_grok is not None and self.streaks[k] >= tc.stop_after_grok:
                self.status[k] = "grokked"
            if self.status[k] != "finished":
                stopping.append(k)
            if is_ck or self.status[k] != "finished":
                to_write.append(k)
        if to_write:
            self.checkpoint(to_write)
            self.flush_at = time.monotonic() + 5.0
        elif time.monotonic() >= self.flush_at:
            for k in live:
                self.writers[k].write_metrics()
            self.flush_at = time.monotonic() + 5.0
        for k in stopping:
            self.writers[k].set_status(self.status[k], epochs_done=epoch)
            self.writers[k].close()
            self.open[k] = False
            self.stopped_at[k] = epoch
        return [ms[k] for k in live]

    def interrupt(self) -> None:
        for k in range(self.k):
            if self.open[k]:
                try:
                    self.writers[k].set_status("interrupted")
                except MechgrokError:
                    pass

    def finish(self) -> list[TrainResult]:
        out = []
        for k, w in enumerate(self.writers):
            if self.open[k]:
                w.set_status(self.status[k], epochs_done=self.epoch)
                self.stopped_at[k] = self.epoch
            out.append(TrainResult(w.path, self.status[k], self.stopped_at[k], self.last[k],
                                   self.elapsed[k]))
        return out
