"""mechgrok: train, probe and report on grokking.

The public API for notebooks and scripts, in one namespace::

    import mechgrok as mg

    cfg = mg.resolve_config("quick", overrides={"train.epochs": 2000})
    result = mg.train(cfg, "checkpoints/" + cfg.run_id())
    mg.analyze(result.run)
    mg.measures_dataframe(result.run)      # one row per (checkpoint, probe)
    mg.figures.fourier_final(result.run)   # any report figure, as a plotly Figure
    mg.write_report(result.run)            # reports/<run-id>.html

Names are imported on first use (PEP 562), so ``import mechgrok`` loads neither torch nor plotly;
each name lives in one module (shown by ``mechgrok.api_module(name)``), which stays the place to
read its documentation.
"""

from __future__ import annotations

import importlib
from typing import Any

__version__ = "0.1.0"

# name → the module that is its one home.
_HOMES: dict[str, str] = {
    # configuration
    "RunConfig": "mechgrok.config",
    "TaskConfig": "mechgrok.config",
    "TransformerConfig": "mechgrok.config",
    "MLPConfig": "mechgrok.config",
    "TrainConfig": "mechgrok.config",
    "MODEL_KINDS": "mechgrok.config",
    "resolve_config": "mechgrok.config",
    "load_config_file": "mechgrok.config",
    "preset": "mechgrok.config",
    "PRESETS": "mechgrok.presets",
    # tasks
    "TASKS": "mechgrok.tasks",
    "get_task": "mechgrok.tasks",
    "make_dataset": "mechgrok.tasks",
    # models
    "build_model": "mechgrok.models",
    "GrokModel": "mechgrok.models",
    "HookedModel": "mechgrok.models",
    "check_model": "mechgrok.models",
    # training
    "train": "mechgrok.training",
    "resume": "mechgrok.training",
    "TrainResult": "mechgrok.training",
    # run directories
    "Run": "mechgrok.store",
    "resolve_run_path": "mechgrok.store",
    # probes and analysis
    "probe": "mechgrok.probes",
    "Probe": "mechgrok.probes",
    "NotApplicable": "mechgrok.probes",
    "get_probe": "mechgrok.probes",
    "register": "mechgrok.probes",
    "registry": "mechgrok.probes",
    "analyze": "mechgrok.analysis",
    "analyze_model": "mechgrok.analysis",
    "run_probe": "mechgrok.analysis",
    "AnalysisResult": "mechgrok.analysis",
    "measures_table": "mechgrok.analysis",
    "measures_dataframe": "mechgrok.analysis",
    "load_arrays": "mechgrok.analysis",
    "load_summary": "mechgrok.analysis",
    "detect_phases": "mechgrok.probes.phases",
    "grokking_epochs": "mechgrok.probes.phases",
    # reports
    "write_report": "mechgrok.report",
    "write_comparison": "mechgrok.report",
    "write_sweep_report": "mechgrok.report",
    "RunData": "mechgrok.report",
    # sweeps
    "run_sweep": "mechgrok.sweep",
    "load_sweep_spec": "mechgrok.sweep",
    # other tools' checkpoints
    "import_run": "mechgrok.interop.importer",
    "export_run": "mechgrok.interop.transformer_lens",
    # errors
    "MechgrokError": "mechgrok.errors",
}
# whole modules offered as attributes: `mechgrok.figures.fourier_final(run)`.
# `mechgrok.reproduce.reproduce("nanda")`, `mechgrok.reproduce.CATALOGUE`: a package, offered
# whole (a function of the same name would be shadowed by the subpackage once it is imported).
_MODULES: dict[str, str] = {"figures": "mechgrok.report.figures",
                            "reproduce": "mechgrok.reproduce"}

__all__ = ["__version__", "api_module", *sorted(_HOMES), *sorted(_MODULES)]


def api_module(name: str) -> str:
    """The module where a public name of ``mechgrok`` lives."""
    if name in _MODULES:
        return _MODULES[name]
    try:
        return _HOMES[name]
    except KeyError:
        raise AttributeError(f"mechgrok has no public name {name!r}") from None


def __getattr__(name: str) -> Any:
    if name in _MODULES:
        value: Any = importlib.import_module(_MODULES[name])
    elif name in _HOMES:
        value = getattr(importlib.import_module(_HOMES[name]), name)
    else:
        raise AttributeError(f"module 'mechgrok' has no attribute {name!r}")
    globals()[name] = value  # later lookups skip __getattr__
    return value


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(__all__))
