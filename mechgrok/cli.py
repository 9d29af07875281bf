"""``mechgrok``: thin commands over the library. Heavy imports (torch, TransformerLens, plotly)
happen inside the commands, so ``mechgrok --help`` and ``mechgrok tasks`` start instantly.

Every user error is one line on stderr (``mechgrok: error: …``) and a non-zero exit, never a
traceback.
"""

from __future__ import annotations

import argparse
import os
import sys
from collections.abc import Sequence
from typing import Any, NoReturn

from mechgrok.errors import MechgrokError

DEFAULT_CHECKPOINTS = "checkpoints"


class _Parser(argparse.ArgumentParser):
    def error(self, message: str) -> NoReturn:  # one line, not usage + message
        self.exit(2, f"{self.prog}: error: {message} (see `{self.prog} --help`)\n")


# --------------------------------------------------------------------------------------------
# Commands
# --------------------------------------------------------------------------------------------
def cmd_tasks(args: argparse.Namespace) -> int:
    from mechgrok.tasks import TASKS

    w = max(len(n) for n in TASKS)
    rw = max(len(t.rule) for t in TASKS.values())
    print(f"{'task':<{w}}  {'rule':<{rw}}  domain")
    for t in TASKS.values():
        print(f"{t.name:<{w}}  {t.rule:<{rw}}  {t.domain}")
    return 0


def cmd_presets(args: argparse.Namespace) -> int:
    from mechgrok.config import PRESETS, preset

    for name in PRESETS:
        c = preset(name)
        m = c.model
        if m.kind == "transformer":
            model = (f"transformer L{m.n_layers} d{m.d_model} h{m.n_heads} mlp{m.d_mlp} "
                     f"α={m.attn_alpha:g}")
        else:
            model = f"mlp {m.embed}/{m.combine} {list(m.hidden)} bias={m.bias}"
        t = c.train
        bs = t.batch_size or "full"
        print(f"{name:<12} {c.task.name} p={c.task.p} frac={c.task.frac_train:g}  {model}  "
              f"{t.optimizer} lr={t.lr:g} wd={t.weight_decay:g} batch={bs} epochs={t.epochs} "
              f"checkpoints={len(t.checkpoint_epochs())}")
    return 0


_SHORTCUTS = {
    # flag dest -> config key
    "task": "task.name", "p": "task.p", "frac_train": "task.frac_train",
    "data_seed": "task.data_seed", "model": "model.kind", "epochs": "train.epochs",
    "lr": "train.lr", "weight_decay": "train.weight_decay", "batch_size": "train.batch_size",
    "seed": "train.seed", "loss_dtype": "train.loss_dtype", "model_dtype": "train.model_dtype",
    "eval_every": "train.eval_every", "checkpoint_every": "train.checkpoint_every",
    "stop_after_grok": "train.stop_after_grok", "threads": "train.threads",
    "loss": "train.loss", "grokfast": "train.grokfast", "grokfast_alpha": "train.grokfast_alpha",
    "grokfast_lamb": "train.grokfast_lamb", "grokfast_window": "train.grokfast_window",
}


def _add_stability_flags(s: argparse.ArgumentParser) -> None:
    g = s.add_argument_group("numerical stability (Prieto et al.; Grokfast, Lee et al.)")
    g.add_argument("--loss", choices=["cross_entropy", "stablemax"],
                   help="training loss (default cross_entropy)")
    g.add_argument("--orthograd", action="store_true",
                   help="⊥Grad: remove the gradient's component along the weights, per tensor, "
                        "before the optimiser's own step")
    g.add_argument("--grokfast", choices=["ema", "ma"],
                   help="Grokfast gradient filter: amplify the slow gradient component")
    g.add_argument("--grokfast-alpha", type=float, metavar="A",
                   help="EMA momentum α in (0, 1) (default 0.98)")
    g.add_argument("--grokfast-lamb", type=float, metavar="L",
                   help="amplification λ (default 2 for ema, 5 for ma)")
    g.add_argument("--grokfast-window", type=int, metavar="W",
                   help="MA window in steps (default 100)")


def _parse_value(text: str) -> Any:
    """A ``--set`` value as TOML (numbers, booleans, lists, quoted strings), else a bare string."""
    import tomllib

    try:
        return tomllib.loads(f"v = {text}")["v"]
    except tomllib.TOMLDecodeError:
        return text


def _overrides(args: argparse.Namespace) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for dest, key in _SHORTCUTS.items():
        v = getattr(args, dest, None)
        if v is not None:
            out[key] = v
    if getattr(args, "freeze_biases", False):
        out["train.freeze_biases"] = True
    if getattr(args, "orthograd", False):
        out["train.orthograd"] = True
    for item in args.set or []:
        key, eq, value = item.partition("=")
        if not eq or "." not in key:
            raise MechgrokError(f"--set {item!r} must look like section.field=value "
                                f"(e.g. --set train.lr=3e-4)")
        out[key.strip()] = _parse_value(value.strip())
    return out


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


def grokking_epochs(metrics: list[dict[str, Any]], acc: float = 0.99) -> dict[str, int | None]:
    """First epochs at which train and test accuracy reach ``acc`` and stay there to the end."""
    from mechgrok.probes.phases import grokking_epochs as held

    return held(metrics, acc)


def _run_path(args: argparse.Namespace, cfg: Any) -> Any:
    """The run directory a train/run command writes: ``--out-dir/--name`` (one folder name,
    always inside --out-dir) or the config's id; with ``--overwrite``, the mechgrok run that
    was there is removed first (and what was removed is said)."""
    from mechgrok.store import remove_run_dir, run_dir

    path = run_dir(args.out_dir, cfg.run_id() if args.name is None else args.name)
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


def cmd_train(args: argparse.Namespace) -> int:
    progress = None if args.progress is None else args.progress
    if args.resume:
        from mechgrok.store import resolve_run_path

        given = [k for k in _SHORTCUTS if k != "threads" and getattr(args, k, None) is not None]
        if given or args.set or args.config or args.preset or args.name or args.overwrite:
            raise MechgrokError("--resume continues a run with its own saved config; "
                                "drop the other settings (only --threads may change: the result "
                                "is bit-identical to an uninterrupted run only with the same "
                                "thread count)")
        path = resolve_run_path(args.resume, args.out_dir)
        from mechgrok.training import resume

        res = resume(path, progress=progress, threads=args.threads)
        if res.status == "already-finished":
            print(f"run {path} had already finished; nothing to do")
            return _check_diverged(res)
        _print_result(res)
        return _check_diverged(res)

    from mechgrok.config import resolve_config
    from mechgrok.resources import check_memory

    cfg = resolve_config(args.preset, args.config, _overrides(args))  # validate before torch loads
    check_memory(cfg)  # and refuse what this machine cannot hold, before anything is created
    path = _run_path(args, cfg)
    from mechgrok.training import train

    res = train(cfg, path, progress=progress)
    _print_result(res)
    return _check_diverged(res)


def cmd_probes(args: argparse.Namespace) -> int:
    from mechgrok.probes import registry, registry_problems

    reg = registry()
    w = max(len(n) for n in reg)
    for name, p in reg.items():
        needs = f" [needs: {', '.join(p.needs)}]" if p.needs else ""
        origin = "" if p.builtin else " (installed)"
        print(f"{name:<{w}}  {p.description}{needs}{origin}")
    for line in registry_problems():
        print(f"mechgrok: warning: {line}", file=sys.stderr)
    return 0


def _fmt_freqs(v: Any) -> str:
    return "[" + ", ".join(str(k) for k in v) + "]" if isinstance(v, list) else str(v)


def print_analysis(res: Any) -> None:
    s = res.summary
    workers = f", {res.workers} worker processes" if res.workers > 1 else ""
    print(f"analysed {res.run.path}: {res.checkpoints} checkpoints × {len(res.probes)} probes "
          f"({res.computed} computed{f', {res.stale} of them stale' if res.stale else ''}, "
          f"{res.reused} already there) in {res.seconds:.1f} s{workers}")
    if res.workers_note:
        print(f"note: {res.workers_note}")
    kf = s.get("key_frequencies", {})
    if "not_applicable" in kf:
        print(f"key frequencies: n/a ({kf['not_applicable']})")
    elif "error" in kf:
        print(f"key frequencies: error ({kf['error']})")
    elif kf:
        print(f"key frequencies at epoch {kf['epoch']}: neuron clusters {_fmt_freqs(kf['neurons'])}"
              f" | embedding {_fmt_freqs(kf['embedding'])} | logit map {_fmt_freqs(kf['logit_map'])}")
    ph = s.get("phases")
    if ph:
        def ep(k: str) -> str:
            return "—" if ph.get(k) is None else str(ph[k])

        print(f"phases: memorisation ends {ep('memorisation_end')}, circuit formation ends "
              f"{ep('circuit_formation_end')}, cleanup ends {ep('cleanup_end')}; grokked at "
              f"{ep('grokking_epoch')} (delay {ep('grokking_delay')} epochs); "
              f"Liu et al. label: {s.get('liu_label')}")
        for note in ph.get("notes", []):
            print(f"  note: {note}")
    cp = s.get("clock_pizza")
    if cp:
        def num(k: str) -> str:
            return "nan" if cp.get(k) is None else f"{cp[k]:.3f}"

        print(f"clock or pizza at epoch {cp['epoch']}: {cp['verdict']} (gradient symmetricity "
              f"{num('gradient_symmetricity')}, distance irrelevance "
              f"{num('distance_irrelevance')}, circularity {num('circularity')})")
    col = s.get("collapse")
    if col and col.get("status"):
        print(f"softmax collapse at epoch {col['epoch']}: {col['status']}")
    reasons: dict[str, list[str]] = {}
    for name, why in res.not_applicable.items():
        reasons.setdefault(why, []).append(name)
    for why, names in reasons.items():
        print(f"n/a: {', '.join(names)}: {why}")
    by_probe: dict[str, list[dict]] = {}
    for e in res.errors:
        by_probe.setdefault(e["probe"], []).append(e)
    for name, errs in by_probe.items():
        first = errs[0]
        where = f"epoch {first['epoch']}" if first["epoch"] is not None else "setup"
        print(f"mechgrok: error: probe {name!r} failed on {len(errs)} checkpoint"
              f"{'s' if len(errs) > 1 else ''} of run {res.run.id} (first at {where}: "
              f"{first['error']}); the other probes and checkpoints were analysed",
              file=sys.stderr)
    print(f"measures: {res.run.path / 'analysis' / 'measures.jsonl'}")


def cmd_analyze(args: argparse.Namespace) -> int:
    from mechgrok.store import Run, resolve_run_path

    run = Run(resolve_run_path(args.run, args.out_dir))  # validate before torch loads
    from mechgrok.analysis import analyze
    from mechgrok.probes.clockpizza import VerdictRules
    from mechgrok.resources import available_cores

    rules = VerdictRules(**{k: getattr(args, k) for k in ("pizza_gs", "pizza_di", "clock_gs",
                                                          "clock_di", "circ_min")
                            if getattr(args, k) is not None})
    res = analyze(run, args.probe or None, force=args.force, progress=args.progress,
                  verdict_rules=rules,
                  workers=available_cores() if args.workers is None else args.workers)
    print_analysis(res)
    return 1 if res.errors else 0


def cmd_report(args: argparse.Namespace) -> int:
    from mechgrok.store import Run, resolve_run_path
    from mechgrok.sweep import is_sweep_dir

    where = resolve_run_path(args.run, args.out_dir)
    if is_sweep_dir(where):
        from mechgrok.report import write_sweep_report

        axes = [a.strip() for a in args.axes.split(",")] if args.axes else None
        path = write_sweep_report(where, args.out, reports_dir=args.reports_dir, axes=axes)
        print(f"sweep report: {path}")
        return 0
    if args.axes:
        raise MechgrokError("--axes is for a sweep directory")
    run = Run(where)  # one line for a missing/foreign dir
    from mechgrok.report import write_report

    path = write_report(run, args.out, reports_dir=args.reports_dir)
    print(f"report: {path}")
    return 0


def cmd_compare(args: argparse.Namespace) -> int:
    from mechgrok.store import Run, resolve_run_path
    from mechgrok.sweep import is_sweep_dir, load_sweep

    runs = []
    for r in args.runs:  # a sweep directory stands for its runs that exist
        where = resolve_run_path(r, args.out_dir)
        if is_sweep_dir(where):
            runs += [Run(x["path"]) for x in load_sweep(where)["runs"]
                     if (x["path"] / "manifest.json").is_file()]
        else:
            runs.append(Run(where))
    from mechgrok.report import write_comparison

    path = write_comparison(runs, args.out, reports_dir=args.reports_dir)
    print(f"comparison of {len(runs)} runs: {path}")
    return 0


def cmd_run(args: argparse.Namespace) -> int:
    """Train (or pick up) a run, analyse it, write its report: the main job in one command."""

    from mechgrok.config import resolve_config
    from mechgrok.resources import check_memory

    cfg = resolve_config(args.preset, args.config, _overrides(args))  # validate before torch loads
    check_memory(cfg, analysis=True)  # training and the analysis, before anything is created
    path = _run_path(args, cfg)
    progress = None if args.progress is None else args.progress
    from mechgrok.store import existing_run
    from mechgrok.training import resume, train

    run = existing_run(path)
    if run is not None:
        if run.config.to_dict() != cfg.to_dict():
            raise MechgrokError(f"{path} holds a run with a different config; pick another "
                                f"--name, or --overwrite to replace it")
        res = resume(path, progress=progress)
        if res.status == "already-finished":
            print(f"run {path} is already trained; analysing and reporting it")
        else:
            _print_result(res)
    else:
        res = train(cfg, path, progress=progress)
        _print_result(res)
    if _check_diverged(res):
        return 1
    from mechgrok.analysis import analyze
    from mechgrok.report import write_report
    from mechgrok.resources import available_cores

    res = analyze(path, progress=progress, workers=available_cores())
    print_analysis(res)
    report = write_report(res.run, reports_dir=args.reports_dir)
    print(f"report: {report}")
    return 1 if res.errors else 0


def _fmt_result(r: dict[str, Any]) -> str:
    if not r.get("ok"):
        return f"FAILED {r['run_id']}: {r.get('error', 'failed')}"
    fin, g = r.get("final") or {}, r.get("grok") or {}
    acc = fin.get("test_acc")
    line = (f"{'trained' if r.get('trained') else 'analysed'} {r['run_id']}: {r.get('status')} "
            f"at epoch {fin.get('epoch')}, test acc {'—' if acc is None else f'{acc:.3f}'}")
    if g.get("test_99") is not None:
        delay = g["test_99"] - g["train_99"] if g.get("train_99") is not None else None
        line += f", generalised at {g['test_99']} (delay {delay})"
    elif g.get("train_99") is not None:
        line += f", memorised at {g['train_99']}, not generalised"
    return line + f" ({r.get('seconds', 0):.1f} s)"


def cmd_sweep(args: argparse.Namespace) -> int:
    """Expand a grid, train and analyse every run not yet done, write the phase-diagram report."""
    from mechgrok.sweep import load_sweep_spec, run_sweep, settle_checkpoints, validate_sweep

    spec = settle_checkpoints(load_sweep_spec(args.file, name=args.name), args.out_dir)
    if args.dry_run:  # every check run_sweep makes before creating anything, probes included
        points = validate_sweep(spec, args.max_runs, backend=args.backend, workers=args.workers,
                                address=args.address, retries=args.retries,
                                analyse=not args.no_analyze, vmap_seeds=args.vmap_seeds)
        axes = " × ".join(f"{k} ({len(v)})" for k, v in spec.axes) or "no axes"
        seeds = f" × {len(spec.seeds)} seeds" if spec.seeds else ""
        print(f"sweep {spec.name}: {axes}{seeds} = {len(points)} runs")
        for pt in points:
            where = ", ".join(f"{k}={v}" for k, v in pt.point.items())
            print(f"  {pt.run_id}  {where} seed={pt.seed}")
        return 0

    def on_result(r: dict[str, Any], i: int, n: int) -> None:
        print(f"[{i}/{n}] {_fmt_result(r)}", flush=True)

    res = run_sweep(spec, args.out_dir, backend=args.backend, workers=args.workers,
                    address=args.address, max_runs=args.max_runs, retries=args.retries,
                    analyse=not args.no_analyze, vmap_seeds=args.vmap_seeds,
                    on_result=on_result)
    print(f"sweep {spec.name}: {len(res.runs)} runs: {len(res.trained)} trained now, "
          f"{len(res.skipped)} already done, {len(res.failed)} failed ({res.seconds:.1f} s); "
          f"{res.sweep_dir}")
    if not args.no_report:
        from mechgrok.report import write_sweep_report

        print(f"report: {write_sweep_report(res.sweep_dir, reports_dir=args.reports_dir)}")
    if res.failed:
        first = next(iter(res.failed.items()))
        print(f"mechgrok: error: {len(res.failed)} of {len(res.runs)} runs failed (first: "
              f"{first[0]}: {first[1]}); the others are done: fix the cause and relaunch the "
              f"same command to retry the failed ones", file=sys.stderr)
        return 1
    return 0


# --------------------------------------------------------------------------------------------
# Parser
# --------------------------------------------------------------------------------------------
def cmd_import(args: argparse.Namespace) -> int:
    from mechgrok.interop.importer import import_run

    task = {"name": args.task, "p": args.p, "frac_train": args.frac_train,
            "data_seed": args.data_seed}
    model: dict[str, Any] = {}
    for key, value in _overrides(argparse.Namespace(set=args.set)).items():
        section, _, fld = key.partition(".")
        if section == "task":
            task[fld] = value
        elif section == "model":
            model[fld] = value
        else:
            raise MechgrokError(f"--set {key}: import takes task.* and model.* settings only "
                                f"(an imported run's training settings are not known)")
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


def build_parser() -> argparse.ArgumentParser:
    p = _Parser(prog="mechgrok", description="Train, probe and report on grokking.")
    p.add_argument("--version", action="version", version=f"mechgrok {_version()}")
    sub = p.add_subparsers(dest="command", metavar="COMMAND", parser_class=_Parser)

    s = sub.add_parser("tasks", help="list the twelve Power et al. operations")
    s.set_defaults(func=cmd_tasks)
    s = sub.add_parser("presets", help="list the named training presets")
    s.set_defaults(func=cmd_presets)

    s = sub.add_parser(
        "train", help="train one run into a run directory",
        description="Train one run. Settings layer as: preset (default quick) ← --config file ← "
                    "flags and --set. The run directory is checkpoints/<run-id>/ unless --name "
                    "or --out-dir say otherwise.")
    s.add_argument("--preset", help="nanda, zhong-clock, zhong-pizza, prieto, mlp-circle, quick "
                                    "(default quick; see `mechgrok presets`)")
    s.add_argument("--config", metavar="FILE", help="a run.toml (or .json) with [task], [model], "
                                                    "[train] tables")
    s.add_argument("--set", action="append", metavar="SECTION.FIELD=VALUE",
                   help="any config field, e.g. --set model.d_mlp=256 --set train.betas=[0.9,0.99]")
    s.add_argument("--task", help="task name (see `mechgrok tasks`)")
    s.add_argument("--p", type=int, help="modulus")
    s.add_argument("--frac-train", type=float, help="fraction of pairs in the train split")
    s.add_argument("--data-seed", type=int, help="seed of the split")
    s.add_argument("--model", choices=["transformer", "mlp"], help="model kind")
    s.add_argument("--epochs", type=int)
    s.add_argument("--lr", type=float)
    s.add_argument("--weight-decay", type=float)
    s.add_argument("--batch-size", type=int, help="minibatch size (default: full batch)")
    s.add_argument("--seed", type=int, help="model initialisation seed")
    s.add_argument("--loss-dtype", choices=["float32", "float64"])
    s.add_argument("--model-dtype", choices=["float32", "float64"])
    s.add_argument("--freeze-biases", action="store_true", help="zero and freeze every bias")
    s.add_argument("--eval-every", type=int, metavar="N", help="evaluate every N epochs")
    s.add_argument("--checkpoint-every", type=int, metavar="N", help="checkpoint every N epochs")
    s.add_argument("--stop-after-grok", type=int, metavar="K",
                   help="stop once test accuracy has been ≥ 99 %% at K evaluations in a row")
    s.add_argument("--threads", type=int, help="torch threads (default: torch's own choice)")
    _add_stability_flags(s)
    s.add_argument("--name", help="run directory name (default: derived from the config)")
    s.add_argument("--out-dir", default=DEFAULT_CHECKPOINTS,
                   help="where run directories go (default checkpoints/)")
    s.add_argument("--overwrite", action="store_true", help="replace an existing run directory")
    s.add_argument("--resume", metavar="RUN", help="continue an interrupted run (path or id)")
    g = s.add_mutually_exclusive_group()
    g.add_argument("--progress", dest="progress", action="store_true", default=None,
                   help="always show the progress bar")
    g.add_argument("--no-progress", dest="progress", action="store_false",
                   help="never show the progress bar (default: only on a terminal)")
    s.set_defaults(func=cmd_train)

    s = sub.add_parser("probes", help="list the probes (built-in and installed)")
    s.set_defaults(func=cmd_probes)

    s = sub.add_parser(
        "analyze", aliases=["analyse"], help="run probes over every checkpoint of a run",
        description="Run every applicable probe over every checkpoint of RUN and write the "
                    "measures table to RUN/analysis/. Only what is missing is computed.")
    s.add_argument("run", metavar="RUN", help="run directory (path or id under --out-dir)")
    s.add_argument("--probe", action="append", metavar="NAME|module:Name",
                   help="run only these probes (repeatable); module:Name runs your own")
    s.add_argument("--force", action="store_true", help="recompute what is already there")
    s.add_argument("--workers", type=int, metavar="N",
                   help="worker processes, one torch thread each (default: the cores available); "
                        "the results are the same, byte for byte, for any N")
    s.add_argument("--pizza-gs", type=float, metavar="X",
                   help="clock/pizza verdict: pizza needs gradient symmetricity > X (0.98)")
    s.add_argument("--pizza-di", type=float, metavar="X",
                   help="… and distance irrelevance < X (0.5)")
    s.add_argument("--clock-gs", type=float, metavar="X",
                   help="clock needs gradient symmetricity < X (0.9)")
    s.add_argument("--clock-di", type=float, metavar="X",
                   help="… and distance irrelevance > X (0.6)")
    s.add_argument("--circ-min", type=float, metavar="X",
                   help="below this circularity the verdict is non-circular (0.5)")
    s.add_argument("--out-dir", default=DEFAULT_CHECKPOINTS, help="where run ids are looked up")
    g = s.add_mutually_exclusive_group()
    g.add_argument("--progress", dest="progress", action="store_true", default=None)
    g.add_argument("--no-progress", dest="progress", action="store_false")
    s.set_defaults(func=cmd_analyze)

    s = sub.add_parser("report", help="write a run's (or a sweep's) self-contained HTML report",
                       description="Write RUN's interactive report, one HTML file that opens "
                                   "offline (reports/<run-id>.html unless --out says otherwise). "
                                   "Given a sweep directory, write its phase diagrams "
                                   "(reports/sweep-<name>.html).")
    s.add_argument("run", metavar="RUN|SWEEP", help="run or sweep directory (path or id under "
                                                    "--out-dir)")
    s.add_argument("--axes", metavar="A,B", help="a sweep's two axes to draw (default: the "
                                                 "grid's first two)")
    s.add_argument("--out", metavar="FILE", help="where to write the report")
    s.add_argument("--reports-dir", default="reports", help="default folder (reports/)")
    s.add_argument("--out-dir", default=DEFAULT_CHECKPOINTS, help="where run ids are looked up")
    s.set_defaults(func=cmd_report)

    s = sub.add_parser("compare", help="one report overlaying several runs",
                       description="Overlay the curves and tabulate the summaries of several "
                                   "runs (seeds, presets, recipes) in one HTML file.")
    s.add_argument("runs", metavar="RUN", nargs="+", help="run directories (paths or ids)")
    s.add_argument("--out", metavar="FILE", help="where to write the report")
    s.add_argument("--reports-dir", default="reports", help="default folder (reports/)")
    s.add_argument("--out-dir", default=DEFAULT_CHECKPOINTS, help="where run ids are looked up")
    s.set_defaults(func=cmd_compare)

    s = sub.add_parser(
        "sweep", help="train and analyse a grid of runs (locally or on Ray); phase diagrams",
        description="Expand SWEEP.toml's grid (any config fields × seeds) into runs, train and "
                    "analyse every run not already done into <out-dir>/<name>/runs/, and write "
                    "the sweep's report (phase diagrams). Relaunching the same command skips "
                    "finished runs and resumes interrupted ones.")
    s.add_argument("file", metavar="SWEEP.toml", help="a run file plus a [sweep] table")
    s.add_argument("--backend", choices=["local", "ray"], default="local",
                   help="local: worker processes here (default); ray: one Ray task per run")
    s.add_argument("--workers", type=int, metavar="N",
                   help="local worker processes, one torch thread each (default: the CPU "
                        "count); with --backend ray and no --address, the local instance's CPUs")
    s.add_argument("--address", metavar="ADDR",
                   help="Ray cluster: 'auto' or host:port (default: start a local Ray instance)")
    s.add_argument("--max-runs", type=int, default=1000, metavar="N",
                   help="refuse a grid of more than N runs (default 1000)")
    s.add_argument("--retries", type=int, default=2, metavar="N",
                   help="retry a run whose worker died up to N times (default 2)")
    s.add_argument("--vmap-seeds", type=int, default=1, metavar="K",
                   help="train K seeds of one grid point in one process as a batched model")
    s.add_argument("--name", help="sweep name (default: [sweep] name, else the file's stem)")
    s.add_argument("--no-analyze", action="store_true", help="train only; skip the probes")
    s.add_argument("--no-report", action="store_true", help="do not write the sweep report")
    s.add_argument("--dry-run", action="store_true", help="list the runs and stop")
    s.add_argument("--out-dir", default=DEFAULT_CHECKPOINTS,
                   help="where the sweep directory goes (default checkpoints/)")
    s.add_argument("--reports-dir", default="reports", help="where the report goes")
    s.set_defaults(func=cmd_sweep)

    s = sub.add_parser(
        "import", help="turn checkpoints from other tools into a mechgrok run directory",
        description="Read SOURCE (the TransformerLens grokking-demo file, HookedTransformer state "
                    "dicts, or any loop's state dicts with a mapping file) and write an ordinary "
                    "run directory <out-dir>/NAME that analyze, report, compare and sweeps read. "
                    "The format is detected when --format is left out. torch.save files are "
                    "pickles: they are read only with --allow-pickle, through "
                    "torch.load(weights_only=True). See docs/import.md.")
    s.add_argument("source", metavar="SOURCE", help="a file or a folder of per-epoch files")
    s.add_argument("--as", dest="as_name", required=True, metavar="NAME",
                   help="the run's name (a folder under --out-dir)")
    s.add_argument("--format", choices=["tl-demo", "tl-state", "state-dicts"],
                   help="tl-demo: the TransformerLens grokking-demo file; tl-state: "
                        "HookedTransformer state dict(s); state-dicts: any names, with --mapping")
    s.add_argument("--allow-pickle", action="store_true",
                   help="read torch.save (pickle) files, with torch.load(weights_only=True): "
                        "tensors and plain data only")
    s.add_argument("--mapping", metavar="FILE",
                   help="TOML/JSON: your parameter names → mechgrok's, and the [model] they fill")
    s.add_argument("--tl-config", metavar="FILE",
                   help="a TransformerLens config as JSON (default: <stem>.json or config.json "
                        "beside the weights, else the weights' shapes)")
    s.add_argument("--split", metavar="FILE",
                   help="the train/test indices (safetensors train_idx/test_idx, or JSON "
                        "{\"train\": [...], \"test\": [...]}) when the source has none")
    s.add_argument("--task", help="the task the model was trained on (default: the source's, "
                                  "else add)")
    s.add_argument("--p", type=int, help="modulus (default: the model's number of classes)")
    s.add_argument("--frac-train", type=float,
                   help="with no indices anywhere: the fraction of mechgrok's own split")
    s.add_argument("--data-seed", type=int, help="with no indices anywhere: its seed")
    s.add_argument("--set", action="append", metavar="SECTION.FIELD=VALUE",
                   help="a task.* or model.* setting, e.g. --set model.act=gelu")
    s.add_argument("--epoch", type=int, help="the epoch of a single state-dict file (default: "
                                             "the number in its name, else 0)")
    s.add_argument("--epoch-offset", type=int, metavar="N",
                   help="add N to every source epoch (default 1 for tl-demo, whose epochs are "
                        "0-based indices of the epoch just finished; 0 otherwise)")
    s.add_argument("--out-dir", default=DEFAULT_CHECKPOINTS, help="where the run goes")
    s.add_argument("--overwrite", action="store_true",
                   help="replace an existing mechgrok run of that name")
    s.set_defaults(func=cmd_import)

    s = sub.add_parser(
        "export", help="write a run's checkpoint as a folder TransformerLens loads",
        description="Write RUN's checkpoint (the last unless --epoch) to DIR: config.json "
                    "(TransformerLens config), model.safetensors (HookedTransformer weights), the "
                    "split, and mechgrok.json. TransformerLens 4 loads it with "
                    "TransformerBridge.boot_native; mechgrok import reads it back.")
    s.add_argument("run", metavar="RUN", help="run directory (path or id under --out-dir)")
    s.add_argument("--to", required=True, choices=["transformer-lens"], help="the target format")
    s.add_argument("dest", metavar="DIR", help="the folder to create")
    s.add_argument("--epoch", type=int, help="the checkpoint to export (default: the last)")
    s.add_argument("--out-dir", default=DEFAULT_CHECKPOINTS, help="where run ids are looked up")
    s.set_defaults(func=cmd_export)

    s = sub.add_parser(
        "run", help="train, analyse and report in one command (default: the quick preset)",
        description="Train a run (or pick up the one already there with the same config), run "
                    "every probe over its checkpoints, and write its HTML report; prints the "
                    "report's path. With no arguments: the quick preset, a few minutes on a "
                    "laptop CPU.")
    s.add_argument("--preset", help="a named preset (default quick; see `mechgrok presets`)")
    s.add_argument("--config", metavar="FILE", help="a run.toml (or .json)")
    s.add_argument("--set", action="append", metavar="SECTION.FIELD=VALUE",
                   help="any config field, e.g. --set train.epochs=3000")
    for flag, kw in (("--epochs", {"type": int}), ("--seed", {"type": int}),
                     ("--lr", {"type": float}), ("--weight-decay", {"type": float}),
                     ("--threads", {"type": int})):
        s.add_argument(flag, **kw)
    s.add_argument("--loss-dtype", choices=["float32", "float64"])
    s.add_argument("--model-dtype", choices=["float32", "float64"])
    _add_stability_flags(s)
    s.add_argument("--name", help="run directory name (default: derived from the config)")
    s.add_argument("--out-dir", default=DEFAULT_CHECKPOINTS, help="where run directories go")
    s.add_argument("--reports-dir", default="reports", help="where the report goes")
    s.add_argument("--overwrite", action="store_true", help="start the run again from scratch")
    g = s.add_mutually_exclusive_group()
    g.add_argument("--progress", dest="progress", action="store_true", default=None)
    g.add_argument("--no-progress", dest="progress", action="store_false")
    s.set_defaults(func=cmd_run)
    return p


def _printable(text: str) -> str:
    """One line, with control characters (a hostile file name's newlines or terminal escapes)
    shown escaped instead of acting on the terminal."""
    return "".join(c if c.isprintable() else repr(c)[1:-1] for c in text)


def _version() -> str:
    from mechgrok import __version__

    return __version__


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    if not getattr(args, "func", None):
        parser.print_help()
        return 0
    try:
        return int(args.func(args) or 0)
    except MechgrokError as e:
        print(f"mechgrok: error: {_printable(str(e))}", file=sys.stderr)
        return e.exit_code
    except KeyboardInterrupt:
        print("mechgrok: interrupted", file=sys.stderr)
        return 130
    except OSError as e:  # permissions, read-only disks, …: say which file and why
        where = f"{e.filename}: " if e.filename else ""
        print(f"mechgrok: error: {_printable(where + str(e.strerror or e))}", file=sys.stderr)
        return 1


if __name__ == "__main__":  # pragma: no cover
    os.environ.setdefault("PYTHONUNBUFFERED", "1")
    sys.exit(main())
