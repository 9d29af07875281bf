"""Run configuration: small frozen dataclasses, validated on construction, with named presets.

A :class:`RunConfig` holds a :class:`TaskConfig`, a model config (:class:`TransformerConfig` or
:class:`MLPConfig`) and a :class:`TrainConfig`. Each validates itself in ``__post_init__`` with a
message saying what is wrong and what is allowed; unknown keys are rejected; derived values are
properties. Configs round-trip through plain dicts (``to_dict`` / ``from_dict``), JSON (the run
directory's ``config.json`` names its kind and schema version) and TOML (``--config run.toml``).

Layering, lowest first: a preset (``quick`` by default), then a TOML file, then ``section.field``
overrides (the CLI's flags). See :func:`resolve_config`.

What lives where: :mod:`~mechgrok.config.fields` (the limits, the value checks, the
:class:`~mechgrok.config.fields.Section` mixin), :mod:`~mechgrok.config.sections` (the task and
model sections; :data:`MODEL_KINDS`, the registry of model kinds), :mod:`~mechgrok.config.train`
(the training section and its checkpoint schedule), :mod:`~mechgrok.config.run` (:class:`RunConfig`
and the layering); the presets' tables are :mod:`mechgrok.presets`. Every name is importable from
``mechgrok.config``.
"""

from __future__ import annotations

from mechgrok.config.fields import MAX_SEED, MAX_SIZE, MAX_THREADS, SECTIONS, Dtype
from mechgrok.config.run import (
    CONFIG_KIND,
    CONFIG_SCHEMA_VERSION,
    RunConfig,
    load_config_file,
    preset,
    replace,
    resolve_config,
)
from mechgrok.config.sections import (
    MODEL_KINDS,
    MLPConfig,
    ModelConfig,
    TaskConfig,
    TransformerConfig,
)
from mechgrok.config.train import (
    ADDED_FIELDS,
    SWEEP_CHECKPOINTS,
    TrainConfig,
    log_checkpoint_epochs,
)
from mechgrok.presets import PRESETS

__all__ = [
    "ADDED_FIELDS",
    "CONFIG_KIND",
    "CONFIG_SCHEMA_VERSION",
    "MAX_SEED",
    "MAX_SIZE",
    "MAX_THREADS",
    "MODEL_KINDS",
    "PRESETS",
    "SECTIONS",
    "SWEEP_CHECKPOINTS",
    "Dtype",
    "MLPConfig",
    "ModelConfig",
    "RunConfig",
    "TaskConfig",
    "TrainConfig",
    "TransformerConfig",
    "load_config_file",
    "log_checkpoint_epochs",
    "preset",
    "replace",
    "resolve_config",
]
