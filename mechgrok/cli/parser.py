"""The command line's grammar: :func:`build_parser`, one ``_add_*`` per command. The config's
settings are not listed here: :mod:`mechgrok.cli.flags` derives them from the config's fields, so
``train``, ``run`` and ``sweep`` take the same ones. Abbreviated flags are refused (``--pre`` is
not ``--preset``): every flag is spelled out, so a new flag never makes an old spelling
ambiguous."""

from __future__ import annotations

import argparse
from typing import Any, NoReturn

from mechgrok.cli.analysis import cmd_analyze, cmd_compare, cmd_probes, cmd_report
from mechgrok.cli.flags import add_settings_flags
from mechgrok.cli.interop import cmd_export, cmd_import
from mechgrok.cli.listings import cmd_presets, cmd_tasks
from mechgrok.cli.reproduce import cmd_reproduce
from mechgrok.cli.sweep import cmd_sweep
from mechgrok.cli.train import cmd_run, cmd_train

__all__ = ["DEFAULT_CHECKPOINTS", "Parser", "build_parser"]

DEFAULT_CHECKPOINTS = "checkpoints"


class Parser(argparse.ArgumentParser):
    """An argument parser whose errors are one line, not usage + message; no abbreviations."""

    def __init__(self, *args: Any, **kw: Any) -> None:
        kw.setdefault("allow_abbrev", False)
        super().__init__(*args, **kw)

    def error(self, message: str) -> NoReturn:
        self.exit(2, f"{self.prog}: error: {message} (see `{self.prog} --help`)\n")


def _version() -> str:
    from mechgrok import __version__

    return __version__


def _add_progress(s: argparse.ArgumentParser, helps: bool = False) -> None:
    g = s.add_mutually_exclusive_group()
    g.add_argument("--progress", dest="progress", action="store_true", default=None,
                   help="always show the progress bar" if helps else None)
    g.add_argument("--no-progress", dest="progress", action="store_false",
                   help="never show the progress bar (default: only on a terminal)"
                   if helps else None)


def _add_train(sub: argparse._SubParsersAction) -> None:
    s = sub.add_parser(
        "train", help="train one run into a run directory",
        description="Train one run. Settings layer as: preset (default quick) ← --config file ← "
                    "flags and --set. The run directory is checkpoints/<run-id>/ unless --name "
                    "or --out-dir say otherwise.")
    s.add_argument("--config", metavar="FILE", help="a run.toml (or .json) with [task], [model], "
                                                    "[train] tables")
    add_settings_flags(s, "default quick")
    s.add_argument("--name", help="run directory name (default: derived from the config)")
    s.add_argument("--out-dir", default=DEFAULT_CHECKPOINTS,
                   help="where run directories go (default checkpoints/)")
    s.add_argument("--overwrite", action="store_true", help="replace an existing run directory")
    s.add_argument("--resume", metavar="RUN", help="continue an interrupted run (path or id)")
    s.add_argument("--from", dest="from_run", metavar="RUN[@EPOCH]",
                   help="a new run starting from RUN's checkpoint at EPOCH (default: its last), "
                        "with RUN's config under the --config file, flags and --set (e.g. "
                        "--frac-train 0.1); the optimiser starts fresh; the new run records RUN "
                        "as its parent")
    _add_progress(s, helps=True)
    s.set_defaults(func=cmd_train)


def _add_run(sub: argparse._SubParsersAction) -> None:
    s = sub.add_parser(
        "run", help="train, analyse and report in one command (default: the quick preset)",
        description="Train a run (or pick up the one already there with the same config), run "
                    "every probe over its checkpoints, and write its HTML report; prints the "
                    "report's path. With no arguments: the quick preset, a few minutes on a "
                    "laptop CPU. Takes the settings train takes.")
    s.add_argument("--config", metavar="FILE", help="a run.toml (or .json)")
    add_settings_flags(s, "default quick")
    s.add_argument("--name", help="run directory name (default: derived from the config)")
    s.add_argument("--out-dir", default=DEFAULT_CHECKPOINTS, help="where run directories go")
    s.add_argument("--reports-dir", default="reports", help="where the report goes")
    s.add_argument("--overwrite", action="store_true", help="start the run again from scratch")
    _add_progress(s)
    s.set_defaults(func=cmd_run)


def _add_analyze(sub: argparse._SubParsersAction) -> None:
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
    _add_progress(s)
    s.set_defaults(func=cmd_analyze)


def _add_report_and_compare(sub: argparse._SubParsersAction) -> None:
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


def _add_sweep(sub: argparse._SubParsersAction) -> None:
    s = sub.add_parser(
        "sweep", help="train and analyse a grid of runs (locally or on Ray); phase diagrams",
        description="Expand SWEEP.toml's grid (any config fields × seeds) into runs, train and "
                    "analyse every run not already done into <out-dir>/<name>/runs/, and write "
                    "the sweep's report (phase diagrams). Relaunching the same command skips "
                    "finished runs and resumes interrupted ones. The settings flags apply to "
                    "every run, over the file's own; they may not name a grid axis.")
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
    add_settings_flags(s, "default: the file's preset, else quick")
    s.set_defaults(func=cmd_sweep)


def _add_import(sub: argparse._SubParsersAction) -> None:
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


def _add_export(sub: argparse._SubParsersAction) -> None:
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


def _add_reproduce(sub: argparse._SubParsersAction) -> None:
    s = sub.add_parser(
        "reproduce", help="run a paper's experiment and set its claims beside mechgrok's numbers",
        description="With no NAME, list the catalogue: each paper, the claims it checks and how "
                    "long each budget takes here. With NAME, train and analyse what the paper's "
                    "experiment needs (as sweeps: relaunching resumes), judge every claim by its "
                    "written rule, and write reports/reproduce-NAME.html. quick: minutes, at "
                    "settings that are not the paper's; paper: the paper's settings and epochs.")
    s.add_argument("name", metavar="NAME", nargs="?", help="the entry (default: list them)")
    s.add_argument("--budget", choices=["quick", "paper"], default="quick",
                   help="quick (default): minutes on a laptop CPU; paper: the paper's settings")
    s.add_argument("--backend", choices=["local", "ray"], default="local",
                   help="local: worker processes here (default); ray: one Ray task per run")
    s.add_argument("--workers", type=int, metavar="N",
                   help="worker processes, one torch thread each (default: the CPU count)")
    s.add_argument("--address", metavar="ADDR",
                   help="Ray cluster: 'auto' or host:port (default: start a local Ray instance)")
    s.add_argument("--out-dir", default=DEFAULT_CHECKPOINTS,
                   help="where the sweeps go (default checkpoints/)")
    s.add_argument("--reports-dir", default="reports", help="where the report goes")
    s.set_defaults(func=cmd_reproduce)


def build_parser() -> argparse.ArgumentParser:
    p = Parser(prog="mechgrok", description="Train, probe and report on grokking.")
    p.add_argument("--version", action="version", version=f"mechgrok {_version()}")
    sub = p.add_subparsers(dest="command", metavar="COMMAND", parser_class=Parser)
    s = sub.add_parser("tasks", help="list the tasks (Power et al.'s twelve operations and x·y), their algebra and basis")
    s.set_defaults(func=cmd_tasks)
    s = sub.add_parser("presets", help="list the named training presets")
    s.set_defaults(func=cmd_presets)
    _add_train(sub)
    s = sub.add_parser("probes", help="list the probes (built-in and installed)")
    s.set_defaults(func=cmd_probes)
    _add_analyze(sub)
    _add_report_and_compare(sub)
    _add_sweep(sub)
    _add_import(sub)
    _add_export(sub)
    _add_run(sub)
    _add_reproduce(sub)
    return p
