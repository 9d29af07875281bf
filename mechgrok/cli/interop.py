"""``mechgrok import`` (other tools' checkpoints into a run directory) and ``mechgrok export``
(a run's checkpoint as a folder TransformerLens loads)."""

from __future__ import annotations

import argparse
from typing import Any

from mechgrok.cli.flags import overrides
from mechgrok.errors import MechgrokError

__all__ = ["cmd_export", "cmd_import"]


def _import_settings(args: argparse.Namespace) -> tuple[dict[str, Any], dict[str, Any]]:
    """The ``[task]`` and ``[model]`` settings given to ``import`` (its flags, then ``--set``)."""
    task = {"name": args.task, "p": args.p, "frac_train": args.frac_train,
            "data_seed": args.data_seed}
    model: dict[str, Any] = {}
    for key, value in overrides(argparse.Namespace(set=args.set)).items():
        section, _, fld = key.partition(".")
        if section == "task":
            task[fld] = value
        elif section == "model":
            model[fld] = value
        else:
            raise MechgrokError(f"--set {key}: import takes task.* and model.* settings only "
                                f"(an imported run's training settings are not known)")
    return task, model


def cmd_import(args: argparse.Namespace) -> int:
    from mechgrok.interop.importer import import_run

    task, model = _import_settings(args)
    res = import_run(args.source, args.out_dir, args.as_name, fmt=args.format,
                     allow_pickle=args.allow_pickle, mapping=args.mapping,
                     tl_config=args.tl_config, split=args.split, task=task, model=model,
                     epoch=args.epoch, epoch_offset=args.epoch_offset, overwrite=args.overwrite)
    eps = res.epochs
    print(f"imported {args.source} ({res.format}) as {res.path}: {len(eps)} checkpoint"
          f"{'s' if len(eps) != 1 else ''}, epochs {eps[0]}–{eps[-1]}, in {res.seconds:.1f} s")
    print(f"split: {res.split_from}")
    for note in res.notes:
        print(f"note: {note}")
    f = res.final
    print(f"final (mechgrok's evaluation): train acc {f['train_acc']:.3f} loss "
          f"{f['train_loss']:.3g}; test acc {f['test_acc']:.3f} loss {f['test_loss']:.3g}")
    print(f"size: {res.run_bytes / 1e6:.2f} MB (source {res.source_bytes / 1e6:.2f} MB); next: "
          f"mechgrok analyze {res.path}")
    return 0


def cmd_export(args: argparse.Namespace) -> int:
    from mechgrok.interop.transformer_lens import export_run
    from mechgrok.store import resolve_run_path

    if args.to != "transformer-lens":  # pragma: no cover - argparse choices
        raise MechgrokError(f"unknown export target {args.to!r}")
    out = export_run(resolve_run_path(args.run, args.out_dir), args.dest, args.epoch)
    print(f"wrote {out} (TransformerLens HookedTransformer weights and config); load it with "
          f"mechgrok.interop.transformer_lens.load_bridge({str(out)!r})")
    return 0
