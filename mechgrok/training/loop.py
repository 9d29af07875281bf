"""The training loop: dense checkpoints, metrics, resume, and a progress bar.

One function does the work for a new run (:func:`train`) and a resumed one (:func:`resume`). The
loop uses the model's fast path (``forward_last``); metrics are computed on the model *after*
``epoch`` epochs, with a no-grad pass over the train and test sets, every ``eval_every`` epochs and
at every checkpoint.

Resuming restores the last checkpoint's parameters, the optimiser state and the minibatch
shuffling generator, so on the same machine (same thread count) a resumed run ends bit-identical
to one that was never interrupted.
"""

from __future__ import annotations

import math
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from mechgrok.config import RunConfig
from mechgrok.errors import MechgrokError, RunDirError
from mechgrok.models import HookedModel, build_model
from mechgrok.resources import check_memory
from mechgrok.stability import GrokfastEMA, GrokfastMA, OrthoGrad
from mechgrok.store import CONFIG_FILE, FINAL_STATUSES, RunWriter
from mechgrok.tasks import TaskData, make_dataset
from mechgrok.training.losses import cross_entropy, loss_function
from mechgrok.training.optim import (
    load_optimizer_state,
    lr_at,
    make_optimizer,
    optimizer_state_tensors,
    set_lr,
)

GROK_ACC = 0.99


class TrainingInterrupted(MechgrokError):
    exit_code = 130


@dataclass
class TrainResult:
    path: Path
    status: str  # finished | grokked (stopped early) | already-finished
    epochs: int
    final: dict[str, Any]
    seconds: float


def dataset_tensors(data: TaskData) -> dict[str, torch.Tensor]:
    """Token tensors ``[x, y, =]`` and labels, split. The MLP reads only the first two columns."""
    pairs = torch.from_numpy(data.pairs)
    tokens = torch.cat([pairs, torch.full((len(pairs), 1), data.eq_token, dtype=torch.int64)], 1)
    labels = torch.from_numpy(data.labels)
    tr = torch.from_numpy(data.train_idx)
    te = torch.from_numpy(data.test_idx)
    return {"train_x": tokens[tr], "train_y": labels[tr], "test_x": tokens[te],
            "test_y": labels[te]}


@torch.no_grad()
def evaluate(model: HookedModel, x: torch.Tensor, y: torch.Tensor, loss_dtype: str,
             chunk: int = 1 << 15) -> tuple[float, float]:
    """(mean loss, accuracy) of the fast path on (x, y)."""
    total_loss = 0.0
    correct = 0
    for i in range(0, len(x), chunk):
        logits = model.forward_last(x[i : i + chunk])
        yy = y[i : i + chunk]
        total_loss += float(cross_entropy(logits, yy, loss_dtype)) * len(yy)
        correct += int((logits.argmax(-1) == yy).sum())
    return total_loss / len(x), correct / len(x)


def _freeze_biases(model: HookedModel) -> None:
    for name, p in model.named_parameters():
        leaf = name.rsplit(".", 1)[-1]
        if leaf.startswith("b_") or leaf == "b":
            with torch.no_grad():
                p.zero_()
            p.requires_grad_(False)


def train(cfg: RunConfig, path: str | Path, *, progress: bool | None = None,
          on_eval: Callable[[dict[str, Any]], None] | None = None,
          threads: int | None = None) -> TrainResult:
    """Train a new run into ``path`` (which must not exist, be empty, or hold a run killed before
    its first manifest, which is started again)."""
    check_memory(cfg)  # refuse what this machine cannot hold before anything is created
    data = make_dataset(cfg.task.name, cfg.task.p, cfg.task.frac_train, cfg.task.data_seed)
    split = {"train_idx": torch.from_numpy(data.train_idx), "test_idx": torch.from_numpy(data.test_idx)}
    writer = RunWriter.create(Path(path), cfg, split, data.split_sha256())
    return _run(cfg, data, writer, resumed=False, progress=progress, on_eval=on_eval,
                threads=threads)


def resume(path: str | Path, *, progress: bool | None = None,
           on_eval: Callable[[dict[str, Any]], None] | None = None,
           threads: int | None = None) -> TrainResult:
    """Continue an interrupted run from its last checkpoint.

    A run that has ended (:data:`~mechgrok.store.FINAL_STATUSES`: finished, grokked, diverged) is
    not trained further (``status="already-finished"``). A run killed before its first checkpoint
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
    if run.status in FINAL_STATUSES:
        cks = run.checkpoints()
        return TrainResult(run.path, "already-finished", cks[-1].epoch if cks else 0,
                           run.metrics()[-1] if run.metrics() else {}, 0.0)
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
         threads: int | None = None) -> TrainResult:
    from mechgrok.errors import DiskFullError

    tc = cfg.train
    prev_threads = torch.get_num_threads()
    if threads or tc.threads:
        torch.set_num_threads(threads or tc.threads)
    try:
        return _loop(cfg, data, writer, resumed, progress, on_eval)
    except DiskFullError as e:
        writer.stop_after_disk_full()
        cks = writer.manifest["checkpoints"]
        upto = f"up to epoch {cks[-1]['epoch']} " if cks else ""
        raise DiskFullError(f"{str(e).split('; ')[0]}; the run's checkpoints {upto}are intact: "
                            f"free some space, then continue with "
                            f"`mechgrok train --resume {writer.path}`") from None
    finally:
        writer.close()
        torch.set_num_threads(prev_threads)


def batch_geometry(tc: Any, n_train: int) -> tuple[int, int, bool]:
    """(batch size, optimiser steps per epoch, full batch?) for ``n_train`` training examples."""
    batch = tc.batch_size or n_train
    return batch, math.ceil(n_train / batch), batch >= n_train


def make_grokfast(params: list[torch.Tensor], tc: Any) -> GrokfastEMA | GrokfastMA | None:
    """The Grokfast gradient filter ``tc`` asks for, on ``params`` (None when off)."""
    if tc.grokfast == "ema":
        return GrokfastEMA(params, alpha=tc.grokfast_alpha, lamb=tc.grokfast_lambda())
    if tc.grokfast == "ma":
        return GrokfastMA(params, window=tc.grokfast_window, lamb=tc.grokfast_lambda())
    return None


def read_resume_checked(writer: RunWriter, cfg: RunConfig
                        ) -> tuple[dict[str, torch.Tensor], dict[str, torch.Tensor], dict[str, Any]]:
    """The last checkpoint's parameters and the resume state of ``writer``'s run: (state,
    resume tensors, resume metadata), every tensor's name, shape and dtype checked against what
    ``cfg`` builds before any of it reaches a kernel. Damage is one :class:`CheckpointError`
    naming the file."""
    from mechgrok.errors import CheckpointError, ConfigError
    from mechgrok.store import EXACT_PREFIX, check_tensors, read_verified
    from mechgrok.training.optim import check_optimizer_state

    tc = cfg.train
    model = build_model(cfg)
    if tc.freeze_biases:
        _freeze_biases(model)
    params = [p for p in model.parameters() if p.requires_grad]
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
    check_optimizer_state(rstate, params, tc, str(rfile))
    rng = rstate["rng.shuffle"]
    want = torch.Generator().get_state()
    if rng.dtype != want.dtype or tuple(rng.shape) != tuple(want.shape):
        raise CheckpointError(f"{rfile}: rng.shuffle is {tuple(rng.shape)} {rng.dtype}, not a "
                              f"generator state ({tuple(want.shape)} {want.dtype})")
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
    return state, rstate, meta


def _loop(cfg: RunConfig, data: TaskData, writer: RunWriter, resumed: bool,
          progress: bool | None, on_eval: Callable[[dict[str, Any]], None] | None) -> TrainResult:
    tc = cfg.train
    t = dataset_tensors(data)
    train_x, train_y, test_x, test_y = t["train_x"], t["train_y"], t["test_x"], t["test_y"]
    n_train = len(train_x)
    batch, steps_per_epoch, full_batch = batch_geometry(tc, n_train)

    model = build_model(cfg)
    if tc.freeze_biases:
        _freeze_biases(model)
    params = [p for p in model.parameters() if p.requires_grad]
    opt = make_optimizer(params, tc)
    if tc.orthograd:  # ⊥Grad around the optimiser, which keeps its own betas and eps
        opt = OrthoGrad(opt)
    gfilter = make_grokfast(params, tc)
    loss_fn = loss_function(tc)
    shuffle = torch.Generator().manual_seed(tc.seed + 1_000_003)
    epoch = step = 0
    grok_streak = 0
    elapsed = 0.0

    if resumed:
        state, rstate, meta = read_resume_checked(writer, cfg)
        model.load_state_dict(state)
        load_optimizer_state(opt, rstate)
        if gfilter is not None:
            gfilter.load_tensors({k[len("grokfast."):]: v for k, v in rstate.items()
                                  if k.startswith("grokfast.")})
        shuffle.set_state(rstate["rng.shuffle"])
        epoch, step = int(meta["epoch"]), int(meta["step"])
        grok_streak, elapsed = int(meta["grok_streak"]), float(meta["elapsed_s"])
        writer.metrics = [m for m in writer.metrics if m["epoch"] <= epoch]
        writer.remove_strays()
        writer.set_status("running")
    model.train()

    def record() -> dict[str, Any]:
        model.eval()
        tr_loss, tr_acc = evaluate(model, train_x, train_y, tc.loss_dtype)
        te_loss, te_acc = evaluate(model, test_x, test_y, tc.loss_dtype)
        model.train()
        m = {"epoch": epoch, "step": step, "train_loss": tr_loss, "train_acc": tr_acc,
             "test_loss": te_loss, "test_acc": te_acc, "sum_sq_weights": model.sum_sq_weights(),
             "lr": lr_at(max(step - 1, 0), tc), "elapsed_s": round(elapsed, 3)}
        writer.metrics.append(m)
        if on_eval is not None:
            on_eval(m)
        return m

    def checkpoint() -> None:
        rstate = optimizer_state_tensors(opt)
        rstate["rng.shuffle"] = shuffle.get_state()
        if gfilter is not None:
            rstate.update({f"grokfast.{k}": v for k, v in gfilter.tensors().items()})
        meta = {"epoch": epoch, "step": step, "grok_streak": grok_streak, "elapsed_s": elapsed}
        writer.write_checkpoint(epoch, step, model.state_dict(), rstate, meta)

    if not resumed:
        record()
        checkpoint()
    last_metrics = writer.metrics[-1] if writer.metrics else {}

    show = sys.stderr.isatty() if progress is None else progress
    bar = None
    if show:
        from tqdm import tqdm

        bar = tqdm(total=tc.epochs, initial=epoch, unit="ep", dynamic_ncols=True, mininterval=0.5,
                   desc=writer.path.name[:40], file=sys.stderr)
    status = "finished"
    flush_at = time.monotonic() + 5.0
    t0 = time.perf_counter() - elapsed
    try:
        while epoch < tc.epochs:
            order = None if full_batch else torch.randperm(n_train, generator=shuffle)
            for i in range(steps_per_epoch):
                if order is None:
                    xb, yb = train_x, train_y
                else:
                    idx = order[i * batch : (i + 1) * batch]
                    xb, yb = train_x[idx], train_y[idx]
                set_lr(opt, lr_at(step, tc))
                opt.zero_grad(set_to_none=True)
                loss = loss_fn(model.forward_last(xb), yb)
                loss.backward()
                if gfilter is not None:
                    gfilter.apply()
                opt.step()
                step += 1
            epoch += 1
            elapsed = time.perf_counter() - t0
            is_ck = tc.is_checkpoint_epoch(epoch)
            if epoch % tc.eval_every == 0 or is_ck:
                last_metrics = record()
                if not math.isfinite(last_metrics["train_loss"]):
                    status = "diverged"
                grok_streak = grok_streak + 1 if last_metrics["test_acc"] >= GROK_ACC else 0
                if bar is not None:
                    bar.set_postfix_str(
                        f"loss {last_metrics['train_loss']:.2e}/{last_metrics['test_loss']:.2e} "
                        f"acc {last_metrics['train_acc']:.3f}/{last_metrics['test_acc']:.3f}",
                        refresh=False)
                stop = tc.stop_after_grok is not None and grok_streak >= tc.stop_after_grok
                if stop:
                    status = "grokked"
                if (is_ck or stop or status == "diverged"):
                    checkpoint()
                    flush_at = time.monotonic() + 5.0
                elif time.monotonic() >= flush_at:
                    writer.write_metrics()
                    flush_at = time.monotonic() + 5.0
                if stop or status == "diverged":
                    break
            if bar is not None:
                bar.update(1)
    except KeyboardInterrupt:
        cks = writer.manifest["checkpoints"]
        last_ck = cks[-1]["epoch"] if cks else None
        try:
            writer.set_status("interrupted")
        except MechgrokError:
            pass
        raise TrainingInterrupted(
            f"interrupted at epoch {epoch}; checkpoints up to epoch {last_ck} are intact: "
            f"continue with `mechgrok train --resume {writer.path}`"
        ) from None
    finally:
        if bar is not None:
            bar.close()
    writer.set_status(status, epochs_done=epoch)
    return TrainResult(writer.path, status, epoch, last_metrics, elapsed)
