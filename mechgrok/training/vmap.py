"""Train K seeds of one config in one process as one batched model (``torch.func.vmap``).

:func:`train_seeds` trains the runs ``cfg`` with ``train.seed = seeds[k]`` into ``paths[k]``.
Every run directory it writes has the format of a normal run (the same ``config.json`` as
``mechgrok train`` writes for that seed, the same manifest keys, checkpoint tensor names, metrics
keys and resume file keys), so :class:`~mechgrok.store.Run` reads it, the probes analyse it and
the normal :func:`mechgrok.training.resume` continues it.

Design
------
* **Model.** Each seed's model is built with ``build_model(cfg_k)`` (the same initialisation as a
  separate run), then the K models' parameters are stacked with
  ``torch.func.stack_module_state``: one leaf tensor ``(K, *shape)`` per parameter. The logits of
  all seeds come from ``torch.func.vmap`` over ``functional_call`` of one base model's fast path
  (``forward_last(tokens, same_query=True)``: the last token is always ``=``, and the data
  dependent check it skips cannot run under vmap). The loss is the sum over seeds of each seed's
  mean loss (``loss_function(train)``: loss dtype and StableMax respected), so ``backward()``
  gives each seed's slice exactly its own gradient.
* **Optimiser.** One optimiser (``make_optimizer``) on the stacked tensors. AdamW, Adam and SGD
  are element-wise, so this is K independent optimisers (per-element state; the step count is
  shared, and every seed steps together). The learning rate follows ``lr_at(step)`` as in the
  loop. ``freeze_biases`` zeroes the biases and leaves them out of the optimiser, so the
  optimiser's parameter indices are those of a normal run. ⊥Grad is applied per seed (each slice
  ``grad[k]`` is orthogonalised against ``param[k]``, vectorised over the seeds, with the maths
  of :func:`mechgrok.stability.orthogonalize_`); Grokfast EMA and MA are element-wise, so the
  library filters on the stacked tensors are per seed.
* **Minibatches.** Seed k shuffles with its own ``Generator().manual_seed(seed + 1_000_003)``,
  drawing one ``randperm`` per epoch as the loop does, so its batch order is a separate run's;
  the vmap then runs over (parameters, tokens, labels).
* **Evaluations, checkpoints, stopping** happen at the loop's epochs, per seed, with the loop's
  metric keys. ``elapsed_s`` is the wall-clock time of the batched training (all K seeds
  together), added to what a resumed run had already spent. ``stop_after_grok`` and divergence
  are per seed: a seed that stops gets its final checkpoint and status and its writer is closed;
  its slice keeps being computed (nothing more is written for it) until every seed has stopped
  or ``train.epochs`` is reached. A checkpoint's resume file holds that seed's slice of the
  optimiser state (``optim.{idx}.{key}``, the scalar ``step`` copied), its shuffling generator
  and its slice of the Grokfast state, exactly as a single-seed run stores them.
* **Existing directories.** A finished (or grokked) run is skipped (``already-finished``), as
  :func:`~mechgrok.training.resume` does. Unfinished runs are grouped by the epoch of their last
  checkpoint and each group is resumed as one batched model (parameters from the last checkpoint,
  optimiser state, shuffling generators, Grokfast state, epoch, step, grok streak and elapsed
  time restored; metrics past the checkpoint dropped). When all unfinished runs stopped at the
  same checkpoint, which is the usual case, that is one batched resume; when a kill landed
  between two seeds' checkpoints they form two groups, trained one after the other (a group of
  one is a batched model of one seed). New runs form one group starting at epoch 0. A directory
  holding a run of another config is refused before anything is trained.

How close to separate runs
--------------------------
The batched model does, per seed, the same arithmetic as a separate run, but through vmap's
batched kernels (``bmm`` instead of ``mm``, batched gathers, one fused AdamW kernel over K times
the elements, ⊥Grad's dot products as batched sums): results agree up to floating-point rounding,
and are not guaranteed to be bit for bit the same. Measured by ``tests/test_vmap.py`` (tiny
configs, one thread, 40 epochs, 3 seeds; max abs difference over every tensor of every
checkpoint of every seed, against ``loop.train`` of that seed):

* float64 model and loss: 2.2e-16 (transformer, full batch), 4.4e-16 (MLP, minibatches of 8),
  3.3e-16 (⊥Grad), 3.2e-15 (Grokfast EMA), 0 (MLP, frozen biases, Grokfast MA); accuracies in the
  metrics identical, losses within 4.4e-16. The tests assert 1e-9.
* float32 model (float64 loss, the defaults): 0 for the full-batch transformer (the same values
  bit for bit) and 2.4e-7 for the MLP with minibatches, a few float32 ulps; the tests assert 1e-4.

Grokking dynamics amplify any rounding difference, exactly as a change of thread count does in
a single run: at lr 1e-2 on add mod 23, a relative difference of 1e-15 in the train loss grows to
1e-8 by epoch ~750 and 1e-3 by epoch ~850 (the same for a one-seed batched model), after which
two seeds can grok a few evaluations apart. A long batched run is therefore a faithful sample of
its seed, equal to the separate run at first and statistically equivalent later, not a bitwise
copy of it.

Resuming a killed :func:`train_seeds` with the same arguments continues each seed from its last
checkpoint with the restored state. When the resumed group has the K of the interrupted one (all
seeds stopped at the same checkpoint), the continuation is bit-identical to an uninterrupted
:func:`train_seeds` (same kernels on the same numbers; tested, including Grokfast, ⊥Grad and
minibatch orders). With another K it is close but not guaranteed bitwise (batched kernels may
round a slice differently at another batch size; seen once, 1.8e-7, for the MLP in float32). A
vmapped run's directory resumed by the normal :func:`~mechgrok.training.resume` continues as a
single-seed run, within the closeness above.

When it pays
------------
The per-step work of the small models of grokking research is a few dozen small kernels plus
Python and dispatch overhead. A batched model pays the overhead once for K seeds; it saves none
of the arithmetic, and vmap adds layout copies and larger working sets. So it pays where the
overhead dominates (tiny models on a CPU; any small model on a GPU, where a step is mostly kernel
launches) and not where the arithmetic does. Measured on this 2-core CPU, one thread, with
evaluations and checkpoints (``benchmarks/seeds_throughput.py``), per-seed epochs per second,
batched vs K separate runs one after another:

* a small transformer (add mod 23, 211 train examples, d_model 32, 2 heads, d_mlp 64, 400
  epochs; ``--set task.p=23 --set model.d_model=32 --set model.d_mlp=64 --set model.n_heads=2
  --set model.d_head=16 --epochs 400``): K = 1 446 vs 687 (0.65×), **K = 4 944 vs 682 (1.38×),
  K = 16 1120 vs 653 (1.72×)**;
* the ``quick`` preset (add mod 53, 1124 examples, d_model 64, d_mlp 256, 200 epochs): K = 1
  138 vs 150 (0.92×), K = 4 141 vs 157 (0.90×), K = 16 114 vs 157 (0.72×): arithmetic-bound, so
  separate processes on separate cores (the sweep's default) are the faster way.

On a GPU it should pay for every preset (not measured here: no GPU was available;
``benchmarks/seeds_throughput.py`` times the step loop on one where there is one). Memory grows
K-fold (parameters, optimiser state and activations of K models).
"""

from __future__ import annotations

import dataclasses
import math
import operator
import sys
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import torch
from torch import Tensor, nn
from torch.func import functional_call, stack_module_state, vmap

from mechgrok.config import RunConfig
from mechgrok.errors import CheckpointError, ConfigError, MechgrokError, RunDirError
from mechgrok.models import HookedModel, build_model
from mechgrok.resources import check_memory
from mechgrok.store import FINAL_STATUSES, Run, RunWriter, existing_run
from mechgrok.tasks import TaskData, make_dataset
from mechgrok.training.loop import (
    GROK_ACC,
    TrainingInterrupted,
    TrainResult,
    _freeze_biases,
    batch_geometry,
    dataset_tensors,
    make_grokfast,
    read_resume_checked,
)
from mechgrok.training.losses import cross_entropy, loss_function
from mechgrok.training.optim import (
    load_optimizer_state,
    lr_at,
    make_optimizer,
    optimizer_state_tensors,
    set_lr,
)

__all__ = ["orthogonalize_stacked_", "train_seeds"]

EVAL_CHUNK = 1 << 15  # rows per seed per evaluation forward, as loop.evaluate


def train_seeds(cfg: RunConfig, seeds: Sequence[int], paths: Sequence[str | Path], *,
                progress: bool | None = None) -> list[TrainResult]:
    """Train ``cfg`` with ``train.seed = seeds[k]`` into ``paths[k]``, all seeds as one batched
    model; return one :class:`~mechgrok.training.loop.TrainResult` per path, in order.

    New (missing or empty) paths are trained from scratch, unfinished runs of the same config are
    resumed, finished ones are skipped (``already-finished``); see the module docstring.
    """
    seeds = _check_seeds(seeds)
    check_memory(cfg, n_models=len(seeds))  # K models at once; before anything is created
    if len(seeds) != len(paths):
        raise ConfigError(f"train_seeds needs one path per seed, got {len(seeds)} seeds and "
                          f"{len(paths)} paths")
    paths = [Path(p) for p in paths]
    resolved = [p.resolve() for p in paths]
    if len(set(resolved)) != len(resolved):
        raise ConfigError("train_seeds needs a distinct path per seed, but a path is repeated")
    cfgs = [dataclasses.replace(cfg, train=cfg.train.replace(seed=s)) for s in seeds]

    # plan everything (and refuse foreign directories) before training anything
    results: list[TrainResult | None] = [None] * len(seeds)
    new: list[int] = []
    unfinished: dict[int, list[int]] = {}  # last checkpoint epoch -> indices
    runs: dict[int, Run] = {}
    for k, (c, path) in enumerate(zip(cfgs, paths)):
        run = existing_run(path)
        if run is None:
            new.append(k)
            continue
        if run.config.to_dict() != c.to_dict():
            raise RunDirError(f"{path} holds a run of another config "
                              f"({_config_difference(run.config, c)}) than seed {seeds[k]} of "
                              f"this one; choose another path or move that run away")
        if run.status in FINAL_STATUSES:
            cks = run.checkpoints()
            results[k] = TrainResult(run.path, "already-finished", cks[-1].epoch if cks else 0,
                                     run.metrics()[-1] if run.metrics() else {}, 0.0)
            continue
        cks = run.checkpoints()
        if not cks:
            raise RunDirError(f"run {run.path} has no checkpoint to resume from; start it again")
        runs[k] = run
        unfinished.setdefault(cks[-1].epoch, []).append(k)

    tc = cfg.train
    prev_threads = torch.get_num_threads()
    if tc.threads:
        torch.set_num_threads(tc.threads)
    try:
        if new:
            data = make_dataset(cfg.task.name, cfg.task.p, cfg.task.frac_train, cfg.task.data_seed)
            split = {"train_idx": torch.from_numpy(data.train_idx),
                     "test_idx": torch.from_numpy(data.test_idx)}
            writers: list[RunWriter] = []
            try:
                for k in new:
                    writers.append(RunWriter.create(paths[k], cfgs[k], split,
                                                    data.split_sha256()))
                res = _train_group([cfgs[k] for k in new], writers, data, False, progress)
            finally:
                for w in writers:
                    w.close()
            for k, r in zip(new, res):
                results[k] = r
        for _, group in sorted(unfinished.items()):
            writers = []
            try:
                datas = []
                for k in group:
                    writers.append(RunWriter.reopen(paths[k]))
                    datas.append(runs[k].dataset())
                if len({d.split_sha256() for d in datas}) != 1:
                    raise RunDirError(f"runs {', '.join(str(paths[k]) for k in group)} have "
                                      f"different train/test splits and cannot train together; "
                                      f"resume them one by one with `mechgrok train --resume`")
                res = _train_group([cfgs[k] for k in group], writers, datas[0], True, progress)
            finally:
                for w in writers:
                    w.close()
            for k, r in zip(group, res):
                results[k] = r
    finally:
        torch.set_num_threads(prev_threads)
    assert all(r is not None for r in results)
    return results  # type: ignore[return-value]


def _check_seeds(seeds: Sequence[int]) -> list[int]:
    out: list[int] = []
    for s in seeds:
        try:
            if isinstance(s, bool):
                raise TypeError
            out.append(operator.index(s))
        except TypeError:
            raise ConfigError(f"seeds must be integers, got {s!r}") from None
    if not out:
        raise ConfigError("train_seeds needs at least one seed, got none")
    if len(set(out)) != len(out):
        dup = sorted({s for s in out if out.count(s) > 1})
        raise ConfigError(f"seeds must be distinct, but {', '.join(map(str, dup))} "
                          f"{'is' if len(dup) == 1 else 'are'} repeated")
    return out


def _config_difference(a: RunConfig, b: RunConfig) -> str:
    da, db = a.to_dict(), b.to_dict()
    diff = []
    for section in ("task", "model", "train"):
        sa, sb = da.get(section, {}), db.get(section, {})
        diff += [f"{section}.{k}" for k in sorted(set(sa) | set(sb)) if sa.get(k) != sb.get(k)]
    if da.get("preset") != db.get("preset"):
        diff.append("preset")
    return "differs in " + ", ".join(diff[:4]) + (" …" if len(diff) > 4 else "")


# --------------------------------------------------------------------------------------------
# ⊥Grad per seed
# --------------------------------------------------------------------------------------------
@torch.no_grad()
def orthogonalize_stacked_(params: Sequence[Tensor], eps: float = 1e-30) -> None:
    """:func:`mechgrok.stability.orthogonalize_` applied to every slice ``[k]`` of stacked
    parameters ``(K, *shape)``: ``grad[k]`` becomes its component orthogonal to ``param[k]``,
    rescaled to ``‖grad[k]‖`` (float64 maths; unchanged where ``param[k] = 0`` or the projection
    is 0), for all k at once."""
    for p in params:
        if p.grad is None:
            continue
        k = p.shape[0]
        w = p.detach().reshape(k, -1).to(torch.float64)
        g = p.grad.reshape(k, -1).to(torch.float64)
        ww = (w * w).sum(1)
        g_orth = g - ((w * g).sum(1) / (ww + eps)).unsqueeze(1) * w
        n_orth = torch.linalg.vector_norm(g_orth, dim=1)
        ok = (ww > 0) & (n_orth > 0)
        scale = torch.where(ok, torch.linalg.vector_norm(g, dim=1) / torch.where(ok, n_orth, 1.0),
                            1.0)
        new = torch.where(ok.unsqueeze(1), g_orth * scale.unsqueeze(1), g)
        p.grad.copy_(new.view_as(p.grad))


# --------------------------------------------------------------------------------------------
# The batched trainer
# --------------------------------------------------------------------------------------------
class _FastPath(nn.Module):
    """``forward`` = the wrapped model's ``forward_last(tokens, same_query=True)``, so that
    ``functional_call`` can run the fast path with substituted parameters."""

    def __init__(self, model: HookedModel):
        super().__init__()
        self.m = model

    def forward(self, tokens: Tensor) -> Tensor:
        return self.m.forward_last(tokens, same_query=True)


def _slice_state(tensors: dict[str, Tensor], params: Sequence[Tensor], k: int,
                 prefix: str) -> dict[str, Tensor]:
    """Seed k's part of stacked optimiser state ``{prefix}{idx}.{key}``: tensors shaped like
    parameter ``idx`` are sliced, scalars (``step``) copied."""
    out = {}
    for name, t in tensors.items():
        idx = int(name[len(prefix):].split(".", 1)[0])
        out[name] = (t[k] if t.shape == params[idx].shape else t).detach().clone()
    return out


def _stack_optimizer_state(rstates: list[dict[str, Tensor]], params: Sequence[Tensor],
                           where: list[Path]) -> dict[str, Tensor]:
    keys = sorted({n for r in rstates for n in r if n.startswith("optim.")})
    out: dict[str, Tensor] = {}
    for name in keys:
        missing = [str(w) for w, r in zip(where, rstates) if name not in r]
        if missing:
            raise CheckpointError(f"resume state of {missing[0]} has no {name!r} while the other "
                                  f"runs' have it; resume the runs one by one")
        ts = [r[name] for r in rstates]
        idx = int(name.split(".")[1])
        if idx >= len(params):
            raise CheckpointError(f"resume state {name!r} of {where[0]} names parameter {idx}, "
                                  f"but the model has {len(params)} trained parameters")
        if tuple(ts[0].shape) == tuple(params[idx].shape[1:]) and ts[0].ndim > 0:
            out[name] = torch.stack(ts)
        else:
            if any(not torch.equal(t, ts[0]) for t in ts[1:]):
                raise CheckpointError(f"resume states of {where[0]} and others differ in "
                                      f"{name!r}; resume the runs one by one")
            out[name] = ts[0]
    return out


def _grokfast_slice(tensors: dict[str, Tensor], k: int) -> dict[str, Tensor]:
    out = {}
    for name, t in tensors.items():
        if name.startswith("mu."):  # EMA: (K, *shape)
            t = t[k]
        elif name.startswith("grads."):  # MA: (n, K, *shape), oldest first
            t = t[:, k]
        out[f"grokfast.{name}"] = t.detach().clone()
    return out


def _grokfast_stack(rstates: list[dict[str, Tensor]], where: list[Path]) -> dict[str, Tensor]:
    names = sorted({n for r in rstates for n in r if n.startswith("grokfast.")})
    out: dict[str, Tensor] = {}
    for full in names:
        name = full[len("grokfast."):]
        try:
            ts = [r[full] for r in rstates]
            if name.startswith("mu."):
                out[name] = torch.stack(ts)
            elif name.startswith("grads."):
                out[name] = torch.stack(ts, dim=1)
            else:
                out[name] = ts[0]
        except (KeyError, RuntimeError):
            raise CheckpointError(f"the Grokfast states of {', '.join(map(str, where))} do not "
                                  f"match ({full!r}); resume the runs one by one") from None
    return out


def _train_group(cfgs: list[RunConfig], writers: list[RunWriter], data: TaskData, resumed: bool,
                 progress: bool | None) -> list[TrainResult]:
    """Train the K runs ``cfgs`` (same config but the seed) as one batched model."""
    K = len(cfgs)
    tc = cfgs[0].train
    t = dataset_tensors(data)
    train_x, train_y, test_x, test_y = t["train_x"], t["train_y"], t["test_x"], t["test_y"]
    n_train = len(train_x)
    batch, steps_per_epoch, full_batch = batch_geometry(tc, n_train)

    models = [build_model(c) for c in cfgs]
    if tc.freeze_biases:
        for m in models:
            _freeze_biases(m)
    base = models[0]
    all_names = [n for n, _ in base.named_parameters()]
    grad_names = [n for n, p in base.named_parameters() if p.requires_grad]
    stacked, stacked_bufs = stack_module_state(models)  # type: ignore[arg-type]
    del models
    state_keys = list(base.state_dict())
    persistent = {n: b for n, b in stacked_bufs.items() if n in state_keys}
    source = {**stacked, **persistent}  # what a checkpoint holds, stacked
    absent = [n for n in state_keys if n not in source]
    if absent:  # pragma: no cover - every model's state is parameters and persistent buffers
        raise RuntimeError(f"cannot batch the model: state {absent[:3]} is not stacked")
    params = [stacked[n] for n in grad_names]  # a normal run's optimiser order
    opt = make_optimizer(params, tc)
    gfilter = make_grokfast(params, tc)
    loss_fn = loss_function(tc)
    shuffles = [torch.Generator().manual_seed(c.train.seed + 1_000_003) for c in cfgs]
    epoch = step = 0
    streaks = [0] * K
    spent = [0.0] * K  # elapsed seconds before this process (resumed runs)

    if resumed:
        rstates = []
        metas = []
        for k, w in enumerate(writers):
            state, rstate, meta = read_resume_checked(w, cfgs[k])
            with torch.no_grad():
                for n in state_keys:
                    source[n][k].copy_(state[n])
            rstates.append(rstate)
            metas.append(meta)
        if len({(int(m["epoch"]), int(m["step"])) for m in metas}) != 1:
            raise RunDirError(f"runs {', '.join(str(w.path) for w in writers)} stopped at "
                              f"different steps and cannot resume together; resume them one by "
                              f"one with `mechgrok train --resume`")
        where = [w.path for w in writers]
        load_optimizer_state(opt, _stack_optimizer_state(rstates, params, where))
        if gfilter is not None:
            gfilter.load_tensors(_grokfast_stack(rstates, where))
        for k, (rstate, meta) in enumerate(zip(rstates, metas)):
            shuffles[k].set_state(rstate["rng.shuffle"])
            streaks[k], spent[k] = int(meta["grok_streak"]), float(meta["elapsed_s"])
        epoch, step = int(metas[0]["epoch"]), int(metas[0]["step"])
        for w in writers:
            w.metrics = [m for m in w.metrics if m["epoch"] <= epoch]
            w.remove_strays()
            w.set_status("running")

    fast = _FastPath(base)
    call_params = {f"m.{n}": v for n, v in {**stacked, **persistent}.items()}

    def seed_loss(p: dict[str, Tensor], x: Tensor, y: Tensor) -> Tensor:
        return loss_fn(functional_call(fast, p, (x,)), y)

    def seed_logits(p: dict[str, Tensor], x: Tensor) -> Tensor:
        return functional_call(fast, p, (x,))

    loss_shared = vmap(seed_loss, in_dims=(0, None, None))  # full batch: the same tokens
    loss_batched = vmap(seed_loss, in_dims=(0, 0, 0))  # minibatches: each seed its own
    logits_shared = vmap(seed_logits, in_dims=(0, None))

    @torch.no_grad()
    def evaluate(x: Tensor, y: Tensor) -> list[tuple[float, float]]:
        loss = [0.0] * K
        correct = [0] * K
        for i in range(0, len(x), EVAL_CHUNK):
            logits = logits_shared(call_params, x[i : i + EVAL_CHUNK])  # (K, rows, classes)
            yy = y[i : i + EVAL_CHUNK]
            hits = (logits.argmax(-1) == yy).sum(1).tolist()
            for k in range(K):
                loss[k] += float(cross_entropy(logits[k], yy, tc.loss_dtype)) * len(yy)
                correct[k] += int(hits[k])
        return [(loss[k] / len(x), correct[k] / len(x)) for k in range(K)]

    open_ = [True] * K  # still training (writer open)
    status = ["finished"] * K
    last_metrics: list[dict[str, Any]] = [w.metrics[-1] if w.metrics else {} for w in writers]
    stopped_at = [0] * K
    elapsed = list(spent)

    def record() -> list[dict[str, Any]]:
        base.eval()
        tr = evaluate(train_x, train_y)
        te = evaluate(test_x, test_y)
        base.train()
        out = []
        with torch.no_grad():
            for k in range(K):
                ssw = float(sum((stacked[n][k].detach().double() ** 2).sum() for n in all_names))
                m = {"epoch": epoch, "step": step, "train_loss": tr[k][0], "train_acc": tr[k][1],
                     "test_loss": te[k][0], "test_acc": te[k][1], "sum_sq_weights": ssw,
                     "lr": lr_at(max(step - 1, 0), tc), "elapsed_s": round(elapsed[k], 3)}
                out.append(m)
                if open_[k]:
                    writers[k].metrics.append(m)
        return out

    def checkpoint(which: list[int]) -> None:
        if not which:
            return
        opt_state = optimizer_state_tensors(opt)
        gf_state = gfilter.tensors() if gfilter is not None else {}
        for k in which:
            state = {n: source[n][k].detach().clone() for n in state_keys}
            rstate = _slice_state(opt_state, params, k, "optim.")
            rstate["rng.shuffle"] = shuffles[k].get_state()
            rstate.update(_grokfast_slice(gf_state, k))
            meta = {"epoch": epoch, "step": step, "grok_streak": streaks[k],
                    "elapsed_s": elapsed[k]}
            writers[k].write_checkpoint(epoch, step, state, rstate, meta)

    base.train()
    if not resumed:
        last_metrics = record()
        checkpoint(list(range(K)))

    show = sys.stderr.isatty() if progress is None else progress
    bar = None
    if show:
        from tqdm import tqdm

        bar = tqdm(total=tc.epochs, initial=epoch, unit="ep", dynamic_ncols=True, mininterval=0.5,
                   desc=f"{K} seed{'s' if K > 1 else ''}", file=sys.stderr)
    flush_at = time.monotonic() + 5.0
    t0 = time.perf_counter()
    try:
        while epoch < tc.epochs and any(open_):
            if full_batch:
                orders = None
            else:
                orders = torch.stack([torch.randperm(n_train, generator=g) for g in shuffles])
            for i in range(steps_per_epoch):
                set_lr(opt, lr_at(step, tc))
                opt.zero_grad(set_to_none=True)
                if orders is None:
                    losses = loss_shared(call_params, train_x, train_y)
                else:
                    idx = orders[:, i * batch : (i + 1) * batch]  # (K, batch)
                    losses = loss_batched(call_params, train_x[idx], train_y[idx])
                losses.sum().backward()
                if gfilter is not None:
                    gfilter.apply()
                if tc.orthograd:  # as OrthoGrad.step: project, then the base optimiser's step
                    orthogonalize_stacked_(params)
                opt.step()
                step += 1
            epoch += 1
            now = time.perf_counter() - t0
            elapsed = [s + now if open_[k] else elapsed[k] for k, s in enumerate(spent)]
            is_ck = tc.is_checkpoint_epoch(epoch)
            if epoch % tc.eval_every == 0 or is_ck:
                ms = record()
                to_write = []
                stopping = []
                for k in range(K):
                    if not open_[k]:
                        continue
                    last_metrics[k] = m = ms[k]
                    if not math.isfinite(m["train_loss"]):
                        status[k] = "diverged"
                    streaks[k] = streaks[k] + 1 if m["test_acc"] >= GROK_ACC else 0
                    if tc.stop_after_grok is not None and streaks[k] >= tc.stop_after_grok:
                        status[k] = "grokked"
                    if status[k] != "finished":
                        stopping.append(k)
                    if is_ck or status[k] != "finished":
                        to_write.append(k)
                if bar is not None:
                    live = [ms[k] for k in range(K) if open_[k]]
                    bar.set_postfix_str(
                        f"train loss {min(m['train_loss'] for m in live):.2e}…"
                        f"{max(m['train_loss'] for m in live):.2e} test acc "
                        f"{min(m['test_acc'] for m in live):.3f}…"
                        f"{max(m['test_acc'] for m in live):.3f}", refresh=False)
                if to_write:
                    checkpoint(to_write)
                    flush_at = time.monotonic() + 5.0
                elif time.monotonic() >= flush_at:
                    for k in range(K):
                        if open_[k]:
                            writers[k].write_metrics()
                    flush_at = time.monotonic() + 5.0
                for k in stopping:
                    writers[k].set_status(status[k], epochs_done=epoch)
                    writers[k].close()
                    open_[k] = False
                    stopped_at[k] = epoch
            if bar is not None:
                bar.update(1)
    except KeyboardInterrupt:
        for k in range(K):
            if open_[k]:
                try:
                    writers[k].set_status("interrupted")
                except MechgrokError:
                    pass
        raise TrainingInterrupted(
            f"interrupted at epoch {epoch}; the checkpoints of the {K} runs are intact: "
            f"continue with train_seeds and the same seeds and paths, or with "
            f"`mechgrok train --resume DIR` for each run"
        ) from None
    finally:
        if bar is not None:
            bar.close()
    out = []
    for k in range(K):
        if open_[k]:
            writers[k].set_status(status[k], epochs_done=epoch)
            stopped_at[k] = epoch
        out.append(TrainResult(writers[k].path, status[k], stopped_at[k], last_metrics[k],
                               elapsed[k]))
    return out
