"""The training section of a run's config (:class:`TrainConfig`: optimiser, precision, stability
options, the schedule of evaluations and checkpoints), and the checkpoint settings that sweeps
use and that runs saved before a field existed keep."""

from __future__ import annotations

import functools
import math
import os
from dataclasses import dataclass
from typing import Any, Literal

from mechgrok.config.fields import (
    MAX_SEED,
    MAX_SIZE,
    MAX_THREADS,
    Dtype,
    Section,
    check,
    is_int,
    is_num,
    short,
)

__all__ = ["ADDED_FIELDS", "SWEEP_CHECKPOINTS", "TrainConfig", "log_checkpoint_epochs"]


@dataclass(frozen=True)
class TrainConfig(Section):
    """Optimiser, precision, schedule of evaluations and checkpoints.

    Epochs count passes over the training set; with ``batch_size = None`` (full batch) an epoch is
    one optimiser step. Checkpoints are written every ``checkpoint_every`` epochs, every
    ``dense_every`` epochs before ``dense_until``, at epoch 0 (the initialisation) and at the end.
    ``stop_after_grok = k`` stops once test accuracy has been ≥ 99 % at k evaluations in a row.

    ``fixed_weight_norm`` trains at a fixed total weight norm (Liu et al. 2023, Omnigrok's
    constrained runs): after every optimiser step all parameters are multiplied by one number so
    that their total L2 norm √(Σ_tensors ‖θ‖²) is ``weight_norm_target``, or, when that is none,
    the norm of the run's own weights at epoch 0 (its initialisation with ``model.init_scale``,
    or the checkpoint a ``train --from`` run starts from). Epoch 0 itself is not rescaled.
    """

    section = "train"
    epochs: int = 25_000
    optimizer: Literal["adamw", "adam", "sgd"] = "adamw"
    lr: float = 1e-3
    weight_decay: float = 1.0
    betas: tuple[float, float] = (0.9, 0.98)
    eps: float = 1e-8
    momentum: float = 0.0
    warmup_steps: int = 10
    batch_size: int | None = None
    loss_dtype: Dtype = "float64"
    model_dtype: Dtype = "float32"
    freeze_biases: bool = False
    seed: int = 0
    eval_every: int = 20
    checkpoint_every: int = 100
    dense_until: int = 1000
    dense_every: int = 20
    stop_after_grok: int | None = None
    threads: int | None = None
    # numerical stability (Prieto et al. 2025; Lee et al. 2024): see mechgrok.stability
    loss: Literal["cross_entropy", "stablemax"] = "cross_entropy"
    orthograd: bool = False
    grokfast: Literal["ema", "ma"] | None = None
    grokfast_alpha: float = 0.98
    grokfast_lamb: float | None = None  # None: 2.0 for ema, 5.0 for ma (Lee et al.'s defaults)
    grokfast_window: int = 100
    # Omnigrok's constrained training: the total weight norm held fixed after every step
    fixed_weight_norm: bool = False
    weight_norm_target: float | None = None  # None: the norm at epoch 0
    # checkpoint economy, for sweeps of hundreds of runs (docs/benchmarks.md measures both):
    # "log" puts checkpoints_per_decade checkpoints in each decade of epochs (snapped up to
    # multiples of dense_every) instead of one every checkpoint_every; "float16"/"bfloat16" store
    # the weights of every checkpoint but the first and the last at that precision (training,
    # resuming and the final analysis stay exact)
    checkpoint_schedule: Literal["linear", "log"] = "linear"
    checkpoints_per_decade: int = 40
    checkpoint_precision: Literal["exact", "float16", "bfloat16"] = "exact"

    def to_dict(self) -> dict[str, Any]:
        """The settings as a table; ``fixed_weight_norm`` and ``weight_norm_target`` only when
        the norm is fixed: without them a config says what every config written before they
        existed says, so those runs' ``config.json`` and analysis records stay as they are."""
        out = super().to_dict()
        if not out["fixed_weight_norm"]:
            del out["fixed_weight_norm"]
        if out["weight_norm_target"] is None:
            del out["weight_norm_target"]
        return out

    def grokfast_lambda(self) -> float:
        if self.grokfast_lamb is not None:
            return float(self.grokfast_lamb)
        return 5.0 if self.grokfast == "ma" else 2.0

    def __post_init__(self) -> None:
        check(self.loss in ("cross_entropy", "stablemax"),
              f"train.loss must be cross_entropy or stablemax, got {self.loss!r}")
        check(isinstance(self.orthograd, bool), "train.orthograd must be true or false")
        check(self.grokfast in (None, "ema", "ma"),
              f"train.grokfast must be ema, ma or none, got {self.grokfast!r}")
        check(is_num(self.grokfast_alpha) and 0.0 < self.grokfast_alpha < 1.0,
              f"train.grokfast_alpha must be in the open interval (0, 1), "
              f"got {self.grokfast_alpha!r}")
        check(self.grokfast_lamb is None or (is_num(self.grokfast_lamb)
                                             and math.isfinite(self.grokfast_lamb)
                                             and self.grokfast_lamb >= 0),
              f"train.grokfast_lamb must be a finite number ≥ 0, got {self.grokfast_lamb!r}")
        check(is_int(self.grokfast_window) and 1 <= self.grokfast_window <= MAX_SIZE,
              f"train.grokfast_window must be a positive integer (a number of steps), "
              f"got {self.grokfast_window!r}")
        check(isinstance(self.fixed_weight_norm, bool),
              "train.fixed_weight_norm must be true or false")
        check(self.weight_norm_target is None or (is_num(self.weight_norm_target)
                                                   and self.weight_norm_target > 0),
              f"train.weight_norm_target must be a positive number (a total L2 norm) or none "
              f"(the norm at epoch 0), got {short(self.weight_norm_target)}")
        check(self.weight_norm_target is None or self.fixed_weight_norm,
              "train.weight_norm_target is the norm train.fixed_weight_norm holds; set "
              "train.fixed_weight_norm = true as well, or leave the target out")
        check(is_int(self.epochs) and 1 <= self.epochs <= MAX_SIZE,
              f"train.epochs must be a positive integer (at most {MAX_SIZE}), "
              f"got {short(self.epochs)}")
        check(self.optimizer in ("adamw", "adam", "sgd"),
              f"train.optimizer must be one of adamw, adam, sgd, got {self.optimizer!r}")
        check(is_num(self.lr) and self.lr > 0, f"train.lr must be positive, got {self.lr!r}")
        check(is_num(self.weight_decay) and self.weight_decay >= 0,
              f"train.weight_decay must be ≥ 0, got {self.weight_decay!r}")
        check(isinstance(self.betas, tuple) and len(self.betas) == 2
              and all(is_num(b) and 0.0 <= b < 1.0 for b in self.betas),
              f"train.betas must be two numbers in [0, 1), got {self.betas!r}")
        check(is_num(self.eps) and self.eps > 0, f"train.eps must be positive, got {self.eps!r}")
        check(is_num(self.momentum) and 0 <= self.momentum < 1,
              f"train.momentum must be in [0, 1), got {self.momentum!r}")
        check(is_int(self.warmup_steps) and 0 <= self.warmup_steps <= MAX_SIZE,
              f"train.warmup_steps must be a non-negative integer, got {self.warmup_steps!r}")
        check(self.batch_size is None or (is_int(self.batch_size)
                                          and 1 <= self.batch_size <= MAX_SIZE),
              f"train.batch_size must be a positive integer or none (full batch), "
              f"got {self.batch_size!r}")
        for k in ("loss_dtype", "model_dtype"):
            v = getattr(self, k)
            check(v in ("float32", "float64"), f"train.{k} must be float32 or float64, got {v!r}")
        check(isinstance(self.freeze_biases, bool), "train.freeze_biases must be true or false")
        check(is_int(self.seed) and 0 <= self.seed <= MAX_SEED,
              f"train.seed must be an integer from 0 to 2**63 - 1 ({MAX_SEED}), "
              f"got {short(self.seed)}")
        for k in ("eval_every", "checkpoint_every", "dense_every"):
            v = getattr(self, k)
            check(is_int(v) and 1 <= v <= MAX_SIZE,
                  f"train.{k} must be a positive integer (at most {MAX_SIZE}), got {short(v)}")
        check(is_int(self.dense_until) and 0 <= self.dense_until <= MAX_SIZE,
              f"train.dense_until must be a non-negative integer, got {self.dense_until!r}")
        check(self.stop_after_grok is None or (is_int(self.stop_after_grok)
                                               and 1 <= self.stop_after_grok <= MAX_SIZE),
              f"train.stop_after_grok must be a positive number of evaluations or none, "
              f"got {self.stop_after_grok!r}")
        check(self.checkpoint_schedule in ("linear", "log"),
              f"train.checkpoint_schedule must be linear or log, got "
              f"{short(self.checkpoint_schedule)}")
        check(is_int(self.checkpoints_per_decade) and 1 <= self.checkpoints_per_decade <= 10_000,
              f"train.checkpoints_per_decade must be an integer from 1 to 10000, got "
              f"{short(self.checkpoints_per_decade)}")
        check(self.checkpoint_precision in ("exact", "float16", "bfloat16"),
              f"train.checkpoint_precision must be exact, float16 or bfloat16, got "
              f"{short(self.checkpoint_precision)}")
        check(self.threads is None or (is_int(self.threads)
                                       and 1 <= self.threads <= MAX_THREADS),
              f"train.threads must be a number of torch threads from 1 to {MAX_THREADS}, or "
              f"none (torch's own choice; this machine has {os.cpu_count()} CPUs), "
              f"got {short(self.threads)}")

    def is_checkpoint_epoch(self, epoch: int) -> bool:
        """Whether the state *after* ``epoch`` epochs is checkpointed (0 = the initialisation)."""
        if epoch == 0 or epoch == self.epochs:
            return True
        if self.checkpoint_schedule == "log":
            return epoch in log_checkpoint_epochs(self.epochs, self.checkpoints_per_decade,
                                                  self.dense_every)
        if epoch % self.checkpoint_every == 0:
            return True
        return epoch < self.dense_until and epoch % self.dense_every == 0

    def stores_exact(self, epoch: int) -> bool:
        """Whether the checkpoint after ``epoch`` epochs is stored at the model's own precision
        (always the first and the last; every one unless ``checkpoint_precision`` says
        otherwise). A run stopped early makes its last checkpoint exact when it finishes."""
        return self.checkpoint_precision == "exact" or epoch in (0, self.epochs)

    def checkpoint_epochs(self) -> list[int]:
        return [e for e in range(self.epochs + 1) if self.is_checkpoint_epoch(e)]


@functools.cache
def log_checkpoint_epochs(epochs: int, per_decade: int, snap: int) -> frozenset[int]:
    """The ``log`` schedule: 10^(i / per_decade) for i = 0, 1, …, each rounded up to a multiple
    of ``snap`` (``dense_every``), up to ``epochs``; 0 and ``epochs`` are always checkpointed."""
    out = set()
    i = 0
    while (t := 10 ** (i / per_decade)) <= epochs:
        e = snap * math.ceil(t / snap)
        if e <= epochs:
            out.add(e)
        i += 1
    return frozenset(out)


#: fields added to the saved config after schema version 1 was fixed, with the value that says
#: exactly what a run saved without them did: filled in when a saved config lacks them, and left
#: out of the run id while they have that value (so ids of runs written before stay the same).
#: ``task.degree``, ``model.init`` and the fixed weight norm's fields are also left out of
#: ``to_dict`` (so of ``config.json``) at that value; the checkpoint fields are written
ADDED_FIELDS: dict[str, dict[str, Any]] = {
    "task": {"degree": None},  # S_n's n for the symmetric tasks; None: 5, all there was before
    "model": {"init": "normal"},  # the MLP's initialisation (issue 14); the transformer has none
    "train": {"checkpoint_schedule": "linear", "checkpoints_per_decade": 40,
              "checkpoint_precision": "exact", "fixed_weight_norm": False,
              "weight_norm_target": None},
}


#: what a sweep's runs use unless the sweep file sets these fields (``[sweep] checkpoints =
#: "full"`` turns it off); single runs keep the defaults above. Measured on a real nanda run
#: (docs/benchmarks.md, "Checkpoint economy"): 47 checkpoints instead of 161 for 12,000 epochs
#: (49.5 MB a run, 24.7 GB for 500), every probe's value unchanged at the epochs kept, the phase
#: boundaries within one checkpoint of the dense run's (memorisation end 20 epochs earlier).
#: float16 storage would halve the bytes again but moves the collapse probe's per-parameter
#: gradient cosines by up to 13 %, so it stays opt-in.
SWEEP_CHECKPOINTS: dict[str, Any] = {
    "train.checkpoint_schedule": "log", "train.checkpoints_per_decade": 20,
}

