"""Run configuration: small frozen dataclasses, validated on construction, with named presets.

A :class:`RunConfig` holds a :class:`TaskConfig`, a model config (:class:`TransformerConfig` or
:class:`MLPConfig`) and a :class:`TrainConfig`. Each validates itself in ``__post_init__`` with a
message saying what is wrong and what is allowed; unknown keys are rejected; derived values are
properties. Configs round-trip through plain dicts (``to_dict`` / ``from_dict``), JSON (the run
directory's ``config.json`` names its kind and schema version) and TOML (``--config run.toml``).

Layering, lowest first: a preset (``quick`` by default), then a TOML file, then ``section.field``
overrides (the CLI's flags). See :func:`resolve_config`.
"""

from __future__ import annotations

import dataclasses
import functools
import json
import math
import os
import re
from collections.abc import Mapping
from dataclasses import dataclass, field, fields
from pathlib import Path
from typing import Any, Literal, get_args, get_origin, get_type_hints

from mechgrok.errors import ConfigError

__all__ = [
    "CONFIG_KIND",
    "CONFIG_SCHEMA_VERSION",
    "MODEL_KINDS",
    "PRESETS",
    "MLPConfig",
    "RunConfig",
    "TaskConfig",
    "TrainConfig",
    "TransformerConfig",
    "load_config_file",
    "preset",
    "resolve_config",
]

CONFIG_KIND = "mechgrok.run_config"
CONFIG_SCHEMA_VERSION = 1

#: seeds (``train.seed``, ``task.data_seed``) are 0 … MAX_SEED: an int64 that torch's
#: ``Generator.manual_seed`` takes, also after the loop adds 1_000_003 for its shuffling generator,
#: and that TOML can write
MAX_SEED = 2**63 - 1
#: ``train.threads`` above this is refused (torch accepts more, then OpenMP crashes: 100000 segfaults)
MAX_THREADS = 1024
#: sizes and counts (widths, layers, epochs, intervals, batch size) stay below int32 overflow;
#: whether the run fits in memory is :mod:`mechgrok.resources`' question
MAX_SIZE = 2**31 - 1
SECTIONS = ("task", "model", "train")

Dtype = Literal["float32", "float64"]


def _check(cond: bool, msg: str) -> None:
    if not cond:
        raise ConfigError(msg)


def _is_int(v: Any) -> bool:
    return isinstance(v, int) and not isinstance(v, bool)


def _is_num(v: Any) -> bool:
    return isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(v)


def _short(v: Any, limit: int = 60) -> str:
    """``repr(v)``, cut to ``limit`` characters (a message stays one readable line)."""
    r = repr(list(v) if isinstance(v, tuple) else v)
    return r if len(r) <= limit else r[: limit - 1] + "…"


def _type_name(v: Any) -> str:
    return {list: "a list", dict: "a table", str: "a string", bool: "a boolean", int: "an integer",
            float: "a number", type(None): "none"}.get(type(v), type(v).__name__)


def _check_type(hint: Any, value: Any, name: str, shown: Any) -> None:
    """Refuse a value of the wrong type for a field, naming the field (ranges come later).
    ``shown`` is the value as the user wrote it."""
    if not _fits(hint, value):
        raise ConfigError(f"{name} must be {_describe(hint)}, got {_type_name(shown)}: "
                          f"{_short(shown)}")


def _fits(hint: Any, value: Any) -> bool:
    origin, args = get_origin(hint), get_args(hint)
    if origin is Literal:
        return isinstance(value, str)
    if hint is str:
        return isinstance(value, str)
    if hint is bool:
        return isinstance(value, bool)
    if hint is int:
        return _is_int(value)
    if hint is float:
        return isinstance(value, (int, float)) and not isinstance(value, bool)
    if origin is tuple:
        if not isinstance(value, tuple):
            return False
        if len(args) == 2 and args[1] is Ellipsis:
            return all(_fits(args[0], v) for v in value)
        if len(args) != len(value):
            return True  # a wrong length is the section's own check, with its own message
        return all(_fits(a, v) for a, v in zip(args, value))
    if type(None) in args:  # X | None
        return value is None or any(_fits(a, value) for a in args if a is not type(None))
    return True


def _describe(hint: Any) -> str:
    origin, args = get_origin(hint), get_args(hint)
    if origin is Literal:
        return "one of " + ", ".join(str(a) for a in args)
    if origin is tuple:
        inner = args[0] if args else Any
        return f"a list of {'integers' if inner is int else 'numbers'}"
    if type(None) in args:
        return " or ".join(_describe(a) for a in args if a is not type(None)) + " or none"
    return {str: "a string", bool: "true or false", int: "an integer", float: "a number"}.get(
        hint, str(hint))


@functools.cache
def _hints(cls: type) -> dict[str, Any]:
    return get_type_hints(cls)


class _Section:
    """Mixin: dict round trip with unknown-key rejection and type coercion from TOML/JSON."""

    section: str = ""

    def to_dict(self) -> dict[str, Any]:
        out = {}
        for f in fields(self):  # type: ignore[arg-type]
            v = getattr(self, f.name)
            out[f.name] = list(v) if isinstance(v, tuple) else v
        return out

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]):
        if not isinstance(data, Mapping):
            raise ConfigError(f"[{cls.section}] must be a table of settings "
                              f"({cls.section}.field = value), got {_type_name(data)}: "
                              f"{_short(data)}")
        hints = _hints(cls)
        known = {f.name for f in fields(cls)}  # type: ignore[arg-type]
        unknown = sorted(set(data) - known)
        if unknown:
            raise ConfigError(
                f"unknown setting{'s' if len(unknown) > 1 else ''} "
                f"{', '.join(f'{cls.section}.{k}' for k in unknown)}; "
                f"allowed in [{cls.section}]: {', '.join(sorted(known))}"
            )
        kwargs = {k: _coerce(hints[k], v, f"{cls.section}.{k}") for k, v in data.items()}
        for k, v in kwargs.items():
            _check_type(hints[k], v, f"{cls.section}.{k}", data[k])
        return cls(**kwargs)

    @classmethod
    def field_names(cls) -> list[str]:
        return [f.name for f in fields(cls)]  # type: ignore[arg-type]

    def replace(self, **changes: Any):
        return self.from_dict({**self.to_dict(), **changes})


def _coerce(hint: Any, value: Any, name: str) -> Any:
    """Make TOML/JSON/CLI values fit a field's type: lists → tuples, ints → floats, 'none' → None."""
    origin = get_origin(hint)
    args = get_args(hint)
    if isinstance(value, str) and value.lower() in ("none", "null") and type(None) in args:
        return None
    if origin is tuple or hint is tuple:
        if isinstance(value, (list, tuple)):
            inner = args[0] if args else Any
            return tuple(_coerce(inner, v, name) for v in value)
        return value
    if hint is float and _is_int(value):
        return float(value)
    if origin is not None and type(None) in args:  # Optional[X]
        inner = [a for a in args if a is not type(None)]
        if value is not None and len(inner) == 1:
            return _coerce(inner[0], value, name)
    return value


# --------------------------------------------------------------------------------------------
# Sections
# --------------------------------------------------------------------------------------------
@dataclass(frozen=True)
class TaskConfig(_Section):
    """Which operation, modulus and split. ``p`` is ignored (set to None) for the S5 tasks."""

    section = "task"
    name: str = "add"
    p: int | None = 113
    frac_train: float = 0.3
    data_seed: int = 0

    def __post_init__(self) -> None:
        from mechgrok.tasks import get_task

        _check(isinstance(self.name, str),
               f"task.name must be a string (a task name; see `mechgrok tasks`), got "
               f"{_type_name(self.name)}: {_short(self.name)}")
        task = get_task(self.name)
        if not task.modular and self.p is not None:
            object.__setattr__(self, "p", None)
        task.validate_modulus(self.p)
        _check(
            _is_num(self.frac_train) and 0.0 < self.frac_train < 1.0,
            f"task.frac_train must be strictly between 0 and 1, got {self.frac_train!r}",
        )
        _check(_is_int(self.data_seed) and 0 <= self.data_seed <= MAX_SEED,
               f"task.data_seed must be an integer from 0 to 2**63 - 1 ({MAX_SEED}), "
               f"got {_short(self.data_seed)}")

    @property
    def n(self) -> int:
        """Number of elements (= answer classes): p, or 120 for S5."""
        from mechgrok.tasks import get_task

        return get_task(self.name).n_elements(self.p)


@dataclass(frozen=True)
class TransformerConfig(_Section):
    """Nanda's one-layer transformer, generalised (MEASURES.md §2).

    ``attn_alpha`` is Zhong et al.'s attention rate: pattern = α·softmax + (1 − α)·uniform, where
    mechgrok's uniform part is uniform over the *causally visible* positions (the public clock/pizza
    code never applied its mask; at the last position, the only one read out, all three tokens are
    visible, so a one-layer model is identical either way).
    """

    section = "model"
    kind: Literal["transformer"] = "transformer"
    n_layers: int = 1
    n_heads: int = 4
    d_model: int = 128
    d_head: int = 32
    d_mlp: int = 512
    act: Literal["relu", "gelu"] = "relu"
    layernorm: bool = False
    attn_alpha: float = 1.0
    unembed_bias: bool = False
    init_scale: float = 1.0

    def __post_init__(self) -> None:
        _check(self.kind == "transformer", f"model.kind must be 'transformer' here, got "
                                           f"{_short(self.kind)}")
        for k in ("n_layers", "n_heads", "d_model", "d_head", "d_mlp"):
            v = getattr(self, k)
            _check(_is_int(v) and v >= 1, f"model.{k} must be a positive integer, got {_short(v)}")
            _check(v <= MAX_SIZE, f"model.{k} = {v} is beyond any model mechgrok can build "
                                  f"(at most {MAX_SIZE})")
        _check(self.act in ("relu", "gelu"), f"model.act must be 'relu' or 'gelu', got {self.act!r}")
        _check(_is_num(self.attn_alpha) and 0.0 <= self.attn_alpha <= 1.0,
               f"model.attn_alpha must be in [0, 1], got {self.attn_alpha!r}")
        _check(_is_num(self.init_scale) and self.init_scale > 0,
               f"model.init_scale must be positive, got {self.init_scale!r}")
        _check(isinstance(self.layernorm, bool), "model.layernorm must be true or false")
        _check(isinstance(self.unembed_bias, bool), "model.unembed_bias must be true or false")


@dataclass(frozen=True)
class MLPConfig(_Section):
    """An MLP on the two operands (MEASURES.md §2).

    ``embed='learned'``: a learned embedding of width ``d_embed`` per operand; ``'onehot'``: the
    one-hot vectors themselves (Prieto's homogeneous MLP). ``combine`` concatenates the two
    operand vectors or sums them (Zhong's linear models). ``init_scale`` multiplies every weight at
    initialisation (Omnigrok's α).
    """

    section = "model"
    kind: Literal["mlp"] = "mlp"
    embed: Literal["learned", "onehot"] = "learned"
    d_embed: int = 128
    combine: Literal["concat", "sum"] = "concat"
    hidden: tuple[int, ...] = (256,)
    act: Literal["relu", "gelu"] = "relu"
    bias: bool = True
    init_scale: float = 1.0

    def __post_init__(self) -> None:
        _check(self.embed in ("learned", "onehot"),
               f"model.embed must be 'learned' or 'onehot', got {self.embed!r}")
        _check(self.combine in ("concat", "sum"),
               f"model.combine must be 'concat' or 'sum', got {self.combine!r}")
        _check(self.kind == "mlp", f"model.kind must be 'mlp' here, got {_short(self.kind)}")
        _check(_is_int(self.d_embed) and 1 <= self.d_embed <= MAX_SIZE,
               f"model.d_embed must be a positive integer (at most {MAX_SIZE}), "
               f"got {_short(self.d_embed)}")
        _check(isinstance(self.hidden, tuple) and 1 <= len(self.hidden) <= 10_000
               and all(_is_int(h) and 1 <= h <= MAX_SIZE for h in self.hidden),
               f"model.hidden must be a non-empty list of positive widths (each at most "
               f"{MAX_SIZE}), got {_short(self.hidden)}")
        _check(self.act in ("relu", "gelu"), f"model.act must be 'relu' or 'gelu', got {self.act!r}")
        _check(isinstance(self.bias, bool), "model.bias must be true or false")
        _check(_is_num(self.init_scale) and self.init_scale > 0,
               f"model.init_scale must be positive, got {self.init_scale!r}")


ModelConfig = TransformerConfig | MLPConfig
# The model kinds: `model.kind` → its config class (one registry; models/ maps kinds to builders).
MODEL_KINDS: dict[str, type] = {"transformer": TransformerConfig, "mlp": MLPConfig}


@dataclass(frozen=True)
class TrainConfig(_Section):
    """Optimiser, precision, schedule of evaluations and checkpoints.

    Epochs count passes over the training set; with ``batch_size = None`` (full batch) an epoch is
    one optimiser step. Checkpoints are written every ``checkpoint_every`` epochs, every
    ``dense_every`` epochs before ``dense_until``, at epoch 0 (the initialisation) and at the end.
    ``stop_after_grok = k`` stops once test accuracy has been ≥ 99 % at k evaluations in a row.
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
    # checkpoint economy, for sweeps of hundreds of runs (docs/benchmarks.md measures both):
    # "log" puts checkpoints_per_decade checkpoints in each decade of epochs (snapped up to
    # multiples of dense_every) instead of one every checkpoint_every; "float16"/"bfloat16" store
    # the weights of every checkpoint but the first and the last at that precision (training,
    # resuming and the final analysis stay exact)
    checkpoint_schedule: Literal["linear", "log"] = "linear"
    checkpoints_per_decade: int = 40
    checkpoint_precision: Literal["exact", "float16", "bfloat16"] = "exact"

    def grokfast_lambda(self) -> float:
        if self.grokfast_lamb is not None:
            return float(self.grokfast_lamb)
        return 5.0 if self.grokfast == "ma" else 2.0

    def __post_init__(self) -> None:
        _check(self.loss in ("cross_entropy", "stablemax"),
               f"train.loss must be cross_entropy or stablemax, got {self.loss!r}")
        _check(isinstance(self.orthograd, bool), "train.orthograd must be true or false")
        _check(self.grokfast in (None, "ema", "ma"),
               f"train.grokfast must be ema, ma or none, got {self.grokfast!r}")
        _check(_is_num(self.grokfast_alpha) and 0.0 < self.grokfast_alpha < 1.0,
               f"train.grokfast_alpha must be in the open interval (0, 1), "
               f"got {self.grokfast_alpha!r}")
        _check(self.grokfast_lamb is None or (_is_num(self.grokfast_lamb)
                                              and math.isfinite(self.grokfast_lamb)
                                              and self.grokfast_lamb >= 0),
               f"train.grokfast_lamb must be a finite number ≥ 0, got {self.grokfast_lamb!r}")
        _check(_is_int(self.grokfast_window) and 1 <= self.grokfast_window <= MAX_SIZE,
               f"train.grokfast_window must be a positive integer (a number of steps), "
               f"got {self.grokfast_window!r}")
        _check(_is_int(self.epochs) and 1 <= self.epochs <= MAX_SIZE,
               f"train.epochs must be a positive integer (at most {MAX_SIZE}), "
               f"got {_short(self.epochs)}")
        _check(self.optimizer in ("adamw", "adam", "sgd"),
               f"train.optimizer must be one of adamw, adam, sgd, got {self.optimizer!r}")
        _check(_is_num(self.lr) and self.lr > 0, f"train.lr must be positive, got {self.lr!r}")
        _check(_is_num(self.weight_decay) and self.weight_decay >= 0,
               f"train.weight_decay must be ≥ 0, got {self.weight_decay!r}")
        _check(isinstance(self.betas, tuple) and len(self.betas) == 2
               and all(_is_num(b) and 0.0 <= b < 1.0 for b in self.betas),
               f"train.betas must be two numbers in [0, 1), got {self.betas!r}")
        _check(_is_num(self.eps) and self.eps > 0, f"train.eps must be positive, got {self.eps!r}")
        _check(_is_num(self.momentum) and 0 <= self.momentum < 1,
               f"train.momentum must be in [0, 1), got {self.momentum!r}")
        _check(_is_int(self.warmup_steps) and 0 <= self.warmup_steps <= MAX_SIZE,
               f"train.warmup_steps must be a non-negative integer, got {self.warmup_steps!r}")
        _check(self.batch_size is None or (_is_int(self.batch_size)
                                           and 1 <= self.batch_size <= MAX_SIZE),
               f"train.batch_size must be a positive integer or none (full batch), "
               f"got {self.batch_size!r}")
        for k in ("loss_dtype", "model_dtype"):
            v = getattr(self, k)
            _check(v in ("float32", "float64"), f"train.{k} must be float32 or float64, got {v!r}")
        _check(isinstance(self.freeze_biases, bool), "train.freeze_biases must be true or false")
        _check(_is_int(self.seed) and 0 <= self.seed <= MAX_SEED,
               f"train.seed must be an integer from 0 to 2**63 - 1 ({MAX_SEED}), "
               f"got {_short(self.seed)}")
        for k in ("eval_every", "checkpoint_every", "dense_every"):
            v = getattr(self, k)
            _check(_is_int(v) and 1 <= v <= MAX_SIZE,
                   f"train.{k} must be a positive integer (at most {MAX_SIZE}), got {_short(v)}")
        _check(_is_int(self.dense_until) and 0 <= self.dense_until <= MAX_SIZE,
               f"train.dense_until must be a non-negative integer, got {self.dense_until!r}")
        _check(self.stop_after_grok is None or (_is_int(self.stop_after_grok)
                                                and 1 <= self.stop_after_grok <= MAX_SIZE),
               f"train.stop_after_grok must be a positive number of evaluations or none, "
               f"got {self.stop_after_grok!r}")
        _check(self.checkpoint_schedule in ("linear", "log"),
               f"train.checkpoint_schedule must be linear or log, got "
               f"{_short(self.checkpoint_schedule)}")
        _check(_is_int(self.checkpoints_per_decade) and 1 <= self.checkpoints_per_decade <= 10_000,
               f"train.checkpoints_per_decade must be an integer from 1 to 10000, got "
               f"{_short(self.checkpoints_per_decade)}")
        _check(self.checkpoint_precision in ("exact", "float16", "bfloat16"),
               f"train.checkpoint_precision must be exact, float16 or bfloat16, got "
               f"{_short(self.checkpoint_precision)}")
        _check(self.threads is None or (_is_int(self.threads)
                                        and 1 <= self.threads <= MAX_THREADS),
               f"train.threads must be a number of torch threads from 1 to {MAX_THREADS}, or "
               f"none (torch's own choice; this machine has {os.cpu_count()} CPUs), "
               f"got {_short(self.threads)}")

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
#: out of the run id while they have that value (so ids of runs written before stay the same)
ADDED_FIELDS: dict[str, dict[str, Any]] = {
    "train": {"checkpoint_schedule": "linear", "checkpoints_per_decade": 40,
              "checkpoint_precision": "exact"},
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


@dataclass(frozen=True)
class RunConfig:
    """Everything that determines a run."""

    task: TaskConfig = field(default_factory=TaskConfig)
    model: TransformerConfig | MLPConfig = field(default_factory=TransformerConfig)
    train: TrainConfig = field(default_factory=TrainConfig)
    preset: str | None = None

    def __post_init__(self) -> None:
        _check(isinstance(self.task, TaskConfig), "task must be a TaskConfig")
        _check(isinstance(self.model, (TransformerConfig, MLPConfig)),
               "model must be a TransformerConfig or an MLPConfig")
        _check(isinstance(self.train, TrainConfig), "train must be a TrainConfig")
        _check_preset_name(self.preset, allow_none=True)

    def to_dict(self) -> dict[str, Any]:
        return {
            "kind": CONFIG_KIND,
            "schema_version": CONFIG_SCHEMA_VERSION,
            "preset": self.preset,
            "task": self.task.to_dict(),
            "model": self.model.to_dict(),
            "train": self.train.to_dict(),
        }

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> RunConfig:
        """A config from a dict of sections; a missing section or field takes its default.

        For a run's saved ``config.json`` use :meth:`from_saved`, which refuses missing fields.
        """
        if not isinstance(data, Mapping):
            raise ConfigError(f"a run config must be a table, got {_type_name(data)}")
        data = dict(data)
        kind = data.pop("kind", CONFIG_KIND)
        version = data.pop("schema_version", CONFIG_SCHEMA_VERSION)
        if kind != CONFIG_KIND:
            raise ConfigError(f"not a mechgrok run config (kind {_short(kind)})")
        if not _is_int(version) or version > CONFIG_SCHEMA_VERSION:
            raise ConfigError(
                f"run config schema version {_short(version)} is newer than this mechgrok "
                f"understands ({CONFIG_SCHEMA_VERSION}); upgrade mechgrok"
            )
        unknown = sorted(map(str, set(data) - {*SECTIONS, "preset"}))
        if unknown:
            raise ConfigError(f"unknown config section{'s' if len(unknown) > 1 else ''} "
                              f"{', '.join(unknown)}; allowed: task, model, train, preset")
        for section in SECTIONS:
            _check_table(section, data.get(section, {}))
        model_d = dict(data.get("model", {}))
        model_kind = model_d.get("kind", "transformer")
        if not isinstance(model_kind, str) or model_kind not in MODEL_KINDS:
            raise ConfigError(f"model.kind must be 'transformer' or 'mlp', got "
                              f"{_short(model_kind)}")
        return cls(
            task=TaskConfig.from_dict(data.get("task", {})),
            model=MODEL_KINDS[model_kind].from_dict(model_d),
            train=TrainConfig.from_dict(data.get("train", {})),
            preset=data.get("preset"),
        )

    @classmethod
    def from_saved(cls, data: Any) -> RunConfig:
        """A run directory's saved ``config.json``, strictly: its kind and schema version, every
        section and every field of today's schema must be there.

        :meth:`from_dict` fills what is missing with defaults, which is right for a user's config
        file but wrong for a saved run: a run written by an older mechgrok whose schema lacked a
        field was trained without whatever that field does now, and today's default may not say
        what it did. Such a config is refused, naming the missing fields.
        """
        if not isinstance(data, Mapping):
            raise ConfigError(f"a saved run config must be a JSON object, got {_type_name(data)}")
        missing = [k for k in ("kind", "schema_version", "preset", *SECTIONS) if k not in data]
        if "kind" in missing or "schema_version" in missing:
            raise ConfigError("not a saved mechgrok run config (it has no kind and schema_version;"
                              " `mechgrok train` writes them)")
        cfg = cls.from_dict(data)  # kind, version, unknown fields and every value checked here
        for section in SECTIONS:
            if section in data:
                got = data[section]
                want = getattr(cfg, section).field_names()
                later = ADDED_FIELDS.get(section, {})
                missing += [f"{section}.{k}" for k in want if k not in got and k not in later]
        if missing:
            raise ConfigError(
                f"the saved run config lacks {', '.join(missing[:6])}"
                f"{f' and {len(missing) - 6} more' if len(missing) > 6 else ''}: it was written "
                f"by an older mechgrok (schema version {data['schema_version']}) whose settings "
                f"this one does not fill in with today's defaults; retrain the run, or add those "
                f"fields to its config.json with the values it was trained with")
        return cfg

    def to_json(self) -> str:
        return json.dumps(self.to_dict(), indent=2, sort_keys=False)

    def run_id(self) -> str:
        """A readable id derived from the config: ``<preset|task>-<model>-p<p>-s<seed>-<hash>``."""
        import hashlib

        body = {k: v for k, v in self.to_dict().items() if k != "preset"}
        for section, fields_ in ADDED_FIELDS.items():  # ids of runs saved before they existed
            body[section] = {k: v for k, v in body[section].items()
                             if k not in fields_ or v != fields_[k]}
        digest = hashlib.sha256(json.dumps(body, sort_keys=True).encode()).hexdigest()[:8]
        head = self.preset or self.task.name
        p = f"p{self.task.p}" if self.task.p is not None else "s5"
        rid = f"{head}-{self.task.name}-{self.model.kind}-{p}-s{self.train.seed}-{digest}"
        # every part is validated (a known preset and task); this keeps the id a plain file name
        # whatever a future preset or task is called
        return _UNSAFE_ID.sub("_", rid)


# --------------------------------------------------------------------------------------------
# Presets
# --------------------------------------------------------------------------------------------
PRESETS: dict[str, dict[str, Any]] = {
    # Nanda et al. 2023: add mod 113, 30 %, one-layer transformer, AdamW(1e-3, wd 1, (0.9, 0.98)),
    # full batch, float64 loss. 25k epochs with a checkpoint every 100 (dense every 20 before 1k):
    # 290 checkpoints; the paper's run groks near 10k epochs and cleans up by about 14k.
    "nanda": {
        "task": {"name": "add", "p": 113, "frac_train": 0.3},
        "model": {"kind": "transformer"},
        "train": {"epochs": 25_000, "lr": 1e-3, "weight_decay": 1.0, "betas": [0.9, 0.98],
                  "warmup_steps": 10, "loss_dtype": "float64", "eval_every": 20,
                  "checkpoint_every": 100, "dense_until": 1000, "dense_every": 20},
    },
    # Zhong et al. 2023, "Model B" (standard attention, α = 1): tends to the clock algorithm.
    "zhong-clock": {
        "task": {"name": "add", "p": 59, "frac_train": 0.8},
        "model": {"kind": "transformer", "attn_alpha": 1.0},
        "train": {"epochs": 5000, "lr": 1e-3, "weight_decay": 2.0, "eval_every": 20,
                  "checkpoint_every": 50, "dense_until": 500, "dense_every": 10},
    },
    # Zhong et al. 2023, "Model A" (constant attention, α = 0): tends to the pizza algorithm.
    "zhong-pizza": {
        "task": {"name": "add", "p": 59, "frac_train": 0.8},
        "model": {"kind": "transformer", "attn_alpha": 0.0},
        "train": {"epochs": 5000, "lr": 1e-3, "weight_decay": 2.0, "eval_every": 20,
                  "checkpoint_every": 50, "dense_until": 500, "dense_every": 10},
    },
    # Prieto et al. 2025: bias-free MLP [200, 200] on one-hot inputs, add mod 113, 40 %,
    # no weight decay, lr 0.01, float32: softmax collapse stalls it.
    "prieto": {
        "task": {"name": "add", "p": 113, "frac_train": 0.4},
        "model": {"kind": "mlp", "embed": "onehot", "combine": "concat", "hidden": [200, 200],
                  "bias": False},
        "train": {"epochs": 3000, "lr": 0.01, "weight_decay": 0.0, "betas": [0.9, 0.99],
                  "warmup_steps": 0, "loss_dtype": "float32", "eval_every": 10,
                  "checkpoint_every": 50, "dense_until": 500, "dense_every": 10},
    },
    # scienceetonnante-style MLP: p 53, 50 %, embedding 128 concatenated → 256 → p,
    # AdamW 3e-4, wd 1, batch 64. PCA of the embedding draws a circle once it generalises.
    "mlp-circle": {
        "task": {"name": "add", "p": 53, "frac_train": 0.5},
        "model": {"kind": "mlp", "embed": "learned", "d_embed": 128, "combine": "concat",
                  "hidden": [256]},
        "train": {"epochs": 1500, "lr": 3e-4, "weight_decay": 1.0, "betas": [0.9, 0.999],
                  "batch_size": 64, "warmup_steps": 0, "loss_dtype": "float32", "eval_every": 10,
                  "checkpoint_every": 25, "dense_until": 300, "dense_every": 5},
    },
    # The built-in default: a small transformer that memorises, waits, then groks, in about a
    # minute on a 2-core CPU.
    "quick": {
        "task": {"name": "add", "p": 53, "frac_train": 0.4},
        "model": {"kind": "transformer", "d_model": 64, "n_heads": 4, "d_head": 16, "d_mlp": 256},
        "train": {"epochs": 2000, "lr": 3e-3, "weight_decay": 1.0, "betas": [0.9, 0.98],
                  "warmup_steps": 10, "loss_dtype": "float64", "eval_every": 10,
                  "checkpoint_every": 50, "dense_until": 500, "dense_every": 10,
                  "stop_after_grok": None},
    },
}


_UNSAFE_ID = re.compile(r"[^A-Za-z0-9._-]")


def _check_preset_name(name: Any, allow_none: bool = False) -> None:
    if name is None and allow_none:
        return
    if not isinstance(name, str):
        raise ConfigError(f"preset must be a preset's name (a string: {', '.join(PRESETS)}), "
                          f"got {_type_name(name)}: {_short(name)}")
    if name not in PRESETS:
        raise ConfigError(f"unknown preset {_short(name)}; choose one of: {', '.join(PRESETS)}")


def _check_table(section: str, value: Any) -> None:
    if not isinstance(value, Mapping):
        raise ConfigError(f"[{section}] must be a table of settings ({section}.field = value), "
                          f"got {_type_name(value)}: {_short(value)}")


def preset(name: str) -> RunConfig:
    _check_preset_name(name)
    d = json.loads(json.dumps(PRESETS[name]))
    d["preset"] = name
    return RunConfig.from_dict(d)


def load_config_file(path: str | Path) -> dict[str, Any]:
    """Read a TOML (or JSON) config file into a plain dict (validated later, when merged).

    The top level must be a table (a JSON object): a JSON array or number is refused here.
    """
    path = Path(path)
    if not path.is_file():
        raise ConfigError(f"config file {str(path)!r} does not exist")
    text = path.read_bytes()
    try:
        if path.suffix == ".json":
            data = json.loads(text)
        else:
            import tomllib

            data = tomllib.loads(text.decode("utf-8"))
    except (ValueError, UnicodeDecodeError, RecursionError) as e:
        why = str(e).splitlines()[0] if str(e) else type(e).__name__
        raise ConfigError(f"cannot parse config file {str(path)!r}: {why}") from None
    if not isinstance(data, dict):
        raise ConfigError(f"config file {str(path)!r} must hold a table of settings (preset, "
                          f"[task], [model], [train]), got {_type_name(data)}")
    return data


def _plain(v: Any) -> Any:
    """A deep copy of parsed TOML/JSON: dicts and lists copied, tuples made lists."""
    if isinstance(v, Mapping):
        return {k: _plain(x) for k, x in v.items()}
    if isinstance(v, (list, tuple)):
        return [_plain(x) for x in v]
    return v


def _merge(base: dict[str, Any], over: Mapping[str, Any]) -> dict[str, Any]:
    out = dict(base)
    for k, v in over.items():
        if isinstance(v, Mapping) and isinstance(out.get(k), dict):
            out[k] = _merge(out[k], v)
        else:
            out[k] = v
    return out


def resolve_config(
    preset_name: str | None = None,
    file: str | Path | Mapping[str, Any] | None = None,
    overrides: Mapping[str, Any] | None = None,
) -> RunConfig:
    """Preset (default ``quick``) ← TOML file ← ``{"section.field": value}`` overrides.

    ``file`` is a path, or the content of such a file as a dict. The preset is ``preset_name``,
    else the file's ``preset``, else ``quick``; the config records the one used (a file's
    explicit ``preset = null``, as in a saved config of a run without a preset, is kept).

    Every layer is checked before it is merged: a section must be a table (a file's
    ``model = "mlp"`` or ``train = 5`` is refused, never merged over the preset's section), an
    override must name ``task``, ``model`` or ``train`` and one field.

    Changing ``model.kind`` drops the model settings of the other kind; switching back to the
    preset's kind (say a file makes it an MLP and ``--model transformer`` undoes that) restores the
    preset's model settings rather than silently falling back to the defaults.
    """
    if isinstance(file, Mapping):
        file_d: dict[str, Any] = _plain(file)
    else:
        file_d = load_config_file(file) if file is not None else {}
    for section in SECTIONS:
        if section in file_d:
            _check_table(section, file_d[section])
    if preset_name is not None:
        _check_preset_name(preset_name)
    if "preset" in file_d:
        _check_preset_name(file_d["preset"], allow_none=True)
    name = preset_name or file_d.get("preset") or "quick"
    base = preset(name).to_dict()
    preset_model = dict(base["model"])
    layered: dict[str, Any] = {}
    for k, v in (overrides or {}).items():
        section, _, key = str(k).partition(".")
        if section not in SECTIONS:
            what = ("preset is not a section: choose it with --preset NAME or preset = \"NAME\" "
                    "in a config file" if section == "preset" else
                    f"{section!r} is not a section (task, model or train)")
            raise ConfigError(f"override {_short(k)} must look like section.field "
                              f"(e.g. train.lr): {what}")
        if not key or "." in key:
            raise ConfigError(f"override {_short(k)} must look like section.field (e.g. "
                              f"train.lr), with one field of [task], [model] or [train]")
        layered.setdefault(section, {})[key] = _plain(v)
    for over in (file_d, layered):
        model_over = over.get("model")
        new_kind = model_over.get("kind") if isinstance(model_over, Mapping) else None
        if new_kind is not None and new_kind != base["model"].get("kind"):
            base["model"] = (dict(preset_model) if new_kind == preset_model.get("kind")
                             else {"kind": new_kind})
        base = _merge(base, over)
    base["preset"] = preset_name if preset_name is not None else file_d.get("preset", name)
    return RunConfig.from_dict(base)


def replace(cfg: RunConfig, **sections: Any) -> RunConfig:
    """A copy of ``cfg`` with whole sections replaced."""
    return dataclasses.replace(cfg, **sections)
