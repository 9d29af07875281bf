"""Probes on any model object that offers the :class:`~mechgrok.models.protocol.GrokModel`
protocol, with no run directory (:func:`analyze_model`); nothing is stored."""

from __future__ import annotations

import contextlib
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, cast

from mechgrok.analysis.compute import ask_applies, resolve_probes, run_one
from mechgrok.analysis.context import AnalysisRunContext
from mechgrok.errors import ConfigError
from mechgrok.probes import Probe
from mechgrok.probes.base import CheckpointContext
from mechgrok.store import CheckpointInfo

if TYPE_CHECKING:  # pragma: no cover
    from mechgrok.config import TaskConfig, TrainConfig
    from mechgrok.store import Run
    from mechgrok.tasks import TaskData

__all__ = ["analyze_model"]


@dataclass(frozen=True)
class _ModelRun:
    """What a probe's run context needs of a :class:`Run` when there is no run directory: the
    config :func:`analyze_model` builds from its arguments."""

    config: Any
    id: str = "<model>"


@contextlib.contextmanager
def _eval_mode(*models: Any) -> Iterator[None]:
    """Every module of ``models`` in eval mode for the block, each put back as it was."""
    import torch

    modes = [(m, m.training) for model in models if isinstance(model, torch.nn.Module)
             for m in model.modules()]
    for m, _ in modes:
        m.training = False
    try:
        yield
    finally:
        for m, training in modes:
            m.training = training


def _probe_on_model(p: Probe, ctx: CheckpointContext, model: Any) -> dict[str, Any]:
    """One probe on an in-memory model, as :func:`_compute` runs it on a checkpoint: its dict,
    ``{"n/a": reason}`` or ``{"error": text}``."""

    from mechgrok.models.protocol import MEMBERS, OPTIONAL_MEMBERS, PROBE_MEMBERS

    reason, error = ask_applies(p, ctx.run)
    if error is not None:
        return {"error": error}
    if reason is not None:
        return {"n/a": reason}
    if getattr(p, "builtin", False):
        lacking = [m for m in PROBE_MEMBERS.get(p.name, ())
                   if m in OPTIONAL_MEMBERS and not callable(getattr(model, m, None))]
        if lacking:
            return {"n/a": f"the model has no {', '.join(lacking)} "
                           f"({'; '.join(MEMBERS[m] for m in lacking)})"}
    status, out = run_one(p, ctx)
    return {**out.scalars, **out.arrays} if status == "ok" else {status: out}


def _task_data(task: str, p: int | None, frac_train: float, data_seed: int,
               split: tuple[Any, Any] | None, degree: int | None = None
               ) -> tuple[TaskConfig, TaskData]:
    """The task's config and dataset, with ``split`` (train_idx, test_idx) when given."""
    import dataclasses

    from mechgrok.config import TaskConfig
    from mechgrok.tasks import checked_split

    tcfg = TaskConfig(name=task, p=p, degree=degree, frac_train=frac_train, data_seed=data_seed)
    data = tcfg.dataset()
    if split is not None:
        if not isinstance(split, (tuple, list)) or len(split) != 2:
            raise ConfigError("split must be a pair (train_idx, test_idx)")
        n_pairs = len(data.pairs)
        train_idx, test_idx = checked_split(split[0], split[1], n_pairs, complete=False)
        data = dataclasses.replace(data, train_idx=train_idx, test_idx=test_idx)
        tcfg = tcfg.replace(frac_train=len(train_idx) / n_pairs)
    return tcfg, data


def _train_config(train_config: Any) -> TrainConfig:
    from mechgrok.config import TrainConfig

    if train_config is None:
        return TrainConfig()
    if not isinstance(train_config, TrainConfig):
        raise ConfigError(f"train_config must be a mechgrok.config.TrainConfig, got "
                          f"{type(train_config).__name__}")
    return train_config


def analyze_model(model: Any, task: str = "add", p: int | None = 113, *, frac_train: float = 0.3,
                  data_seed: int = 0, split: tuple[Any, Any] | None = None,
                  probes: Sequence[str | Probe] | None = None, final_model: Any = None,
                  epoch: int = 0, train_config: Any = None, degree: int | None = None
                  ) -> dict[str, dict[str, Any]]:
    """Run probes on one model object that offers the
    :class:`~mechgrok.models.protocol.GrokModel` protocol (your own class, or a mechgrok model),
    with no run directory; nothing is stored.

    * ``task``, ``p``: the task the model computes (``mechgrok tasks``), ``degree`` the n of
      S_n for a symmetric task (default 5); ``model.n_classes`` must be its number of elements.
    * The train/test split (the ``loss``, ``restricted`` and ``collapse`` probes use it):
      ``split = (train_idx, test_idx)``, indices into the task's pairs in row-major order
      (pair ``(x, y)`` is ``x·p + y`` for the modular tasks), or else drawn as training does
      from ``frac_train`` and ``data_seed``.
    * ``probes``: names, ``module:Name`` specs or Probe objects (default: every registered probe).
    * ``final_model``: the model the key frequencies are taken from (the restricted/excluded
      loss use the final checkpoint's; default ``model`` itself). ``epoch`` is the checkpoint's
      epoch probes see (``ctx.epoch``).
    * ``train_config``: a :class:`~mechgrok.config.TrainConfig`, for the probes that read the
      training settings (``collapse``: the loss and its dtype); default ``TrainConfig()``.
      ``ctx.config.model`` is mechgrok's default model config: it does not describe ``model``.

    The models are put in eval mode for the call (and back as they were after). Probes run as
    ``mechgrok analyze`` runs them (the same probe objects, contexts, key-frequency finder and
    result checks). Returns ``{probe: results}`` in the probes' order, where ``results`` is the
    probe's ``{name: number or numpy array}``; ``{"n/a": reason}`` for a probe that does not apply
    (the task is not add or sub for the Fourier probes; ``collapse`` on a model without
    ``forward_last``); ``{"error": "<what it raised>"}`` for a probe that failed. A model that
    does not offer the protocol is a :class:`MechgrokError` naming what it lacks.
    """
    from mechgrok.config import RunConfig
    from mechgrok.models.protocol import check_model
    from mechgrok.probes.builtin import final_key_frequency_finder

    final_model = model if final_model is None else final_model
    check_model(model)
    check_model(final_model)
    tcfg, data = _task_data(task, p, frac_train, data_seed, split, degree)
    for m in (model, final_model):
        if m.n_classes != data.n:
            raise ConfigError(f"{type(m).__name__} has n_classes = {m.n_classes}, but task "
                              f"{tcfg.title!r} has "
                              f"{data.n} answer classes")
    config = RunConfig(task=tcfg, train=_train_config(train_config))
    selected = resolve_probes(probes)

    def finder() -> dict[str, Any]:
        return final_key_frequency_finder(run_ctx, final_model)

    # a RunContext reads only .config and .id of its Run: _ModelRun has both
    run_ctx = AnalysisRunContext(cast("Run", _ModelRun(config)), data, finder)
    ck = CheckpointInfo(epoch=epoch, step=epoch, file="", size=0, sha256="")
    ctx = CheckpointContext(run_ctx, ck, model)
    with _eval_mode(model, final_model):
        return {pr.name: _probe_on_model(pr, ctx, model) for pr in selected}
