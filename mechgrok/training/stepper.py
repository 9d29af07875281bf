"""What a trainer gives the training loop: a :class:`Stepper` (K ≥ 1 models stepping together)
and where it starts (:class:`Start`); what it reports per model and evaluation (:class:`Scores`).

:func:`mechgrok.training.loop.run_loop` owns everything between the steps (evaluations, metrics,
checkpoints, stopping, the progress bar, interrupts); a stepper owns the steps themselves. Two
implement it: :class:`mechgrok.training.single.SingleStepper` (one model) and the batched K-seed
stepper of :mod:`mechgrok.training.vmap`.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from typing import NamedTuple, Protocol

from torch import Tensor

__all__ = ["Scores", "Start", "Stepper"]


class Scores(NamedTuple):
    """One model's evaluation: mean loss and accuracy on the train and test sets, and the sum
    of its squared parameters."""

    train_loss: float
    train_acc: float
    test_loss: float
    test_acc: float
    sum_sq_weights: float


@dataclass
class Start:
    """Where training starts: the epoch and optimiser step, and per model its grok streak (the
    evaluations in a row at test accuracy ≥ GROK_ACC) and the seconds it trained before."""

    epoch: int
    step: int
    streaks: list[int]
    spent: list[float]

    @classmethod
    def new(cls, n_models: int) -> Start:
        """The start of new runs: epoch 0, nothing trained yet."""
        return cls(0, 0, [0] * n_models, [0.0] * n_models)


class Stepper(Protocol):
    """K ≥ 1 models trained together (the same epochs and steps), model k writing run k."""

    @property
    def start(self) -> Start:
        """Where the models are: epoch 0, or what a resumed run's last checkpoint restored."""
        ...

    def train_epoch(self, step: int) -> int:
        """One epoch of optimiser steps, the first of them global step ``step``; the step
        count after it."""
        ...

    def evaluate(self) -> list[Scores]:
        """Every model's scores (index k: model k), from a no-grad pass in eval mode."""
        ...

    def saved(self, which: Sequence[int]) -> Iterator[tuple[dict[str, Tensor], dict[str, Tensor]]]:
        """For each model k of ``which``, in order: the state dict of its checkpoint and the
        tensors of its resume file (optimiser state, ``rng.shuffle``, Grokfast state)."""
        ...
