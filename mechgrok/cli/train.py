"""``mechgrok train`` (one run into a run directory, or ``--resume`` one) and ``mechgrok run``
(train or pick up a run, analyse it, write its report), with what they print."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import Any

from mechgrok.cli.flags import given_config_keys, overrides
from mechgrok.errors import MechgrokError

__all__ = ["cmd_run", "cmd_train", "grokking_epochs"]


def grokking_epochs(metrics: list[dict[str, Any]], acc: float = 0.99) -> dict[str, int | None]:
    """First epochs at which train and test accuracy reach ``acc`` and stay there to the end."""
    from mechgrok.probes.phases import grokking_epochs as held

    return held(metrics, acc)


def _print_result(res: Any) -> None:
    from mechgrok.store import Run

    run = Run(res.path)
    metrics = run.metrics()
    final = metrics[-1] if metrics else {}
    grok = grokking_epochs(metrics)
    print(f"run: {res.path}")
    print(f"status: {res.status} after {final.get('epoch', res.epochs)} epochs "
          f"({res.seconds:.1f} s), {len(run.checkpoints())} checkpoints")
    if final:
        print(f"final: train acc {final['train_acc']:.3f} loss {final['train_loss']:.3g}; "
              f"test acc {final['test_acc']:.3f} loss {final['test_loss']:.3g}")
    if grok["train_99"] is not None:
        line = f"memorised (train acc ≥ 99 %) at epoch {grok['train_99']}"
        if grok["test_99"] is not None:
            line += (f"; generalised (test acc ≥ 99 %, held) at epoch {grok['test_99']}: "
                     f"grokking delay {grok['test_99'] - grok['train_99']} epochs")
        else:
            line += "; has not generalised yet (test acc < 99 %)"
        print(line)


def _run_path(args: argparse.Namespace, cfg: Any, default: str | None = None,
              keep: Path | None = None) -> Path:
    """The run directory a train/run command writes: ``--out-dir/--name`` (one folder name,
    always inside --out-dir) or ``default`` (the config's id when None); with ``--overwrite``,
    the mechgrok run that was there is removed first (and what was removed is said), unless it
    is ``keep`` (the run ``--from`` starts from), which is refused."""
    from mechgrok.store import remove_run_dir, run_dir

    name = args.name if args.name is not None else default or cfg.run_id()
    path = run_dir(args.out_dir, name)
    if keep is not None and path.resolve() == keep.resolve():
        raise MechgrokError(f"the new run's directory {path} is the run --from starts from; "
                            f"choose another --name")
    if args.overwrite:
        removed = remove_run_dir(path)
        if removed:
            print(f"--overwrite: removed the run directory {path} ({len(removed)} files)")
    return path


def _check_diverged(res: Any) -> int:
    """Exit status of a training command: 1 (with one line) when the run diverged."""
    from mechgrok.store import Run

    run = Run(res.path)
    if run.status != "diverged":
        return 0
    print(f"mechgrok: error: run {res.path} diverged (a non-finite training loss) at epoch "
          f"{run.manifest.get('epochs_done', '?')}; it is kept as it is and will not be trained "
          f"further: lower train.lr, or use train.loss_dtype=float64, and start a new run",
          file=sys.stderr)
    return 1


def _resume(args: argparse.Namespace) -> int:
    """``train --resume RUN``: continue a run with its own saved config."""
    from mechgrok.store import resolve_run_path

    given = [k for k in given_config_keys(args) if k != "train.threads"]
    if given or args.set or args.config or args.preset or args.name or args.overwrite:
        raise MechgrokError("--resume continues a run with its own saved config; "
                            "drop the other settings (only --threads may change: the result "
                            "is bit-identical to an uninterrupted run only with the same "
                            "thread count)")
    path = resolve_run_path(args.resume, args.out_dir)
    from mechgrok.training import resume

    res = resume(path, progress=args.progress, threads=getattr(args, "train.threads", None))
    if res.status == "already-finished":
        print(f"run {path} had already finished; nothing to do")
        return _check_diverged(res)
    _print_result(res)
    return _check_diverged(res)


def _resolve(args: argparse.Namespace, analysis: bool) -> Any:
    """The run's config from the command line, checked (values, then this machine's memory:
    for training, and with ``analysis`` the probes' too) before torch loads or anything is
    created."""
    from mechgrok.config import resolve_config
    from mechgrok.resources import check_memory

    cfg = resolve_config(args.preset, args.config, overrides(args))
    check_memory(cfg, analysis=analysis)
    return cfg


def _from_spec(spec: str) -> tuple[str, int | None]:
    """``--from RUN`` or ``RUN@EPOCH``: (the run, the epoch or None for its last)."""
    if "@" not in spec or Path(spec).exists():
        return spec, None
    run, _, epoch = spec.rpartition("@")
    if not run or not (epoch.isascii() and epoch.isdigit()):
        raise MechgrokError(f"--from {spec!r} must be RUN or RUN@EPOCH, with EPOCH the epoch of "
                            f"one of RUN's checkpoints (a non-negative integer)")
    return run, int(epoch)


def _from_layers(parent_cfg: Any, file: str | None) -> dict[str, Any]:
    """The parent's config with the ``--config`` file's sections layered over it (a file that
    names another preset, or another model kind, replaces what it names)."""
    from mechgrok.config import load_config_file

    base = parent_cfg.to_dict()
    if file is None:
        return base
    over = load_config_file(file)
    if over.get("preset", base["preset"]) != base["preset"]:
        raise MechgrokError(f"--from takes its settings from the parent run's config (preset "
                            f"{base['preset']}); the --config file's preset "
                            f"{over['preset']!r} cannot apply: drop it")
    for k, v in over.items():
        if isinstance(v, dict) and isinstance(base.get(k), dict) and v.get(
                "kind", base[k].get("kind")) == base[k].get("kind"):
            base[k] = {**base[k], **v}
        else:
            base[k] = v
    return base


def _train_from(args: argparse.Namespace) -> int:
    """``train --from RUN[@EPOCH]``: a new run whose weights start from RUN's checkpoint, with
    RUN's config under the command line's settings; a fresh optimiser."""
    from mechgrok.config import resolve_config
    from mechgrok.resources import check_memory
    from mechgrok.store import Run, resolve_run_path

    if args.resume or args.preset:
        raise MechgrokError(f"--from starts a new run from RUN's config.json and checkpoint; "
                            f"drop --{'resume' if args.resume else 'preset'} (change settings "
                            f"with flags, --set or --config)")
    spec, epoch = _from_spec(args.from_run)
    parent = Run(resolve_run_path(spec, args.out_dir))
    ck = parent.checkpoint(epoch)
    cfg = resolve_config(None, _from_layers(parent.config, args.config), overrides(args))
    check_memory(cfg)
    path = _run_path(args, cfg, f"{cfg.run_id()}-from-e{ck.epoch}-{ck.sha256[:8]}", parent.path)
    from mechgrok.training import train

    res = train(cfg, path, progress=args.progress, from_run=parent, from_epoch=ck.epoch)
    print(f"started from run {parent.id} at epoch {ck.epoch} (checkpoint sha256 "
          f"{ck.sha256[:12]}…), with a fresh optimiser state")
    _print_result(res)
    return _check_diverged(res)


def cmd_train(args: argparse.Namespace) -> int:
    if args.from_run:
        return _train_from(args)
    if args.resume:
        return _resume(args)
    cfg = _resolve(args, analysis=False)
    path = _run_path(args, cfg)
    from mechgrok.training import train

    res = train(cfg, path, progress=args.progress)
    _print_result(res)
    return _check_diverged(res)


def _train_or_pick_up(cfg: Any, path: Path, progress: bool | None) -> Any:
    """``run``: train the run into ``path``, or continue (or take as it is) the run with the
    same config that is already there."""
    from mechgrok.store import existing_run
    from mechgrok.training import resume, train

    run = existing_run(path)
    if run is None:
        res = train(cfg, path, progress=progress)
        _print_result(res)
        return res
    if run.config.to_dict() != cfg.to_dict():
        raise MechgrokError(f"{path} holds a run with a different config; pick another "
                            f"--name, or --overwrite to replace it")
    res = resume(path, progress=progress)
    if res.status == "already-finished":
        print(f"run {path} is already trained; analysing and reporting it")
    else:
        _print_result(res)
    return res


def cmd_run(args: argparse.Namespace) -> int:
    """Train (or pick up) a run, analyse it, write its report: the main job in one command."""
    cfg = _resolve(args, analysis=True)
    path = _run_path(args, cfg)
    if _check_diverged(_train_or_pick_up(cfg, path, args.progress)):
        return 1
    from mechgrok.analysis import analyze
    from mechgrok.cli.analysis import print_analysis
    from mechgrok.report import write_report
    from mechgrok.resources import available_cores

    res = analyze(path, progress=args.progress, workers=available_cores())
    print_analysis(res)
    report = write_report(res.run, reports_dir=args.reports_dir)
    print(f"report: {report}")
    return 1 if res.errors else 0
