"""What :func:`~mechgrok.training.vmap.train_seeds` will do with each of its paths, decided (and
foreign directories refused) before anything is trained: :func:`plan_seeds`."""

from __future__ import annotations

import dataclasses
import operator
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

from mechgrok.config import RunConfig
from mechgrok.errors import ConfigError, RunDirError
from mechgrok.store import Run, existing_run
from mechgrok.training.loop import TrainResult

__all__ = ["SeedPlan", "check_seeds", "plan_seeds"]


@dataclass
class SeedPlan:
    """Per seed k its config ``cfgs[k]`` and path ``paths[k]``; the seeds to train from scratch
    (``new``); the unfinished runs (``runs[k]``), grouped by the epoch of their last checkpoint
    (``groups``, in epoch order); the results of the runs that had ended (``results[k]``)."""

    cfgs: list[RunConfig]
    paths: list[Path]
    results: list[TrainResult | None]
    new: list[int] = field(default_factory=list)
    groups: list[list[int]] = field(default_factory=list)
    runs: dict[int, Run] = field(default_factory=dict)


def plan_seeds(cfg: RunConfig, seeds: Sequence[int], where: Sequence[str | Path]) -> SeedPlan:
    """New (missing or empty) paths are trained from scratch, unfinished runs of the same config
    resumed, finished ones skipped (``already-finished``, as :func:`~mechgrok.training.resume`
    says); a directory holding a run of another config is refused."""
    if len(seeds) != len(where):
        raise ConfigError(f"train_seeds needs one path per seed, got {len(seeds)} seeds and "
                          f"{len(where)} paths")
    paths = [Path(p) for p in where]
    resolved = [p.resolve() for p in paths]
    if len(set(resolved)) != len(resolved):
        raise ConfigError("train_seeds needs a distinct path per seed, but a path is repeated")
    cfgs = [dataclasses.replace(cfg, train=cfg.train.replace(seed=s)) for s in seeds]
    plan = SeedPlan(cfgs, paths, [None] * len(seeds))
    unfinished: dict[int, list[int]] = {}  # last checkpoint epoch -> indices
    for k, (c, path) in enumerate(zip(cfgs, paths)):
        run = existing_run(path)
        if run is None:
            plan.new.append(k)
            continue
        if run.config.to_dict() != c.to_dict():
            raise RunDirError(f"{path} holds a run of another config "
                              f"({_config_difference(run.config, c)}) than seed {seeds[k]} of "
                              f"this one; choose another path or move that run away")
        if run.is_final:
            plan.results[k] = TrainResult.already_finished(run)
            continue
        cks = run.checkpoints()
        if not cks:
            raise RunDirError(f"run {run.path} has no checkpoint to resume from; start it again")
        plan.runs[k] = run
        unfinished.setdefault(cks[-1].epoch, []).append(k)
    plan.groups = [group for _, group in sorted(unfinished.items())]
    return plan


def check_seeds(seeds: Sequence[int]) -> list[int]:
    """``seeds`` as a list of distinct ints (at least one), or a :class:`ConfigError`."""
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
