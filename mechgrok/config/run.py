"""A whole run's config (:class:`RunConfig`: task, model and training sections, the preset it
came from, its id) and how one is put together: preset ← config file ← ``section.field``
overrides (:func:`resolve_config`)."""

from __future__ import annotations

import dataclasses
import json
import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from mechgrok.config.fields import SECTIONS, check, is_int, short, type_name
from mechgrok.config.sections import MODEL_KINDS, ModelConfig, TaskConfig, TransformerConfig
from mechgrok.config.train import ADDED_FIELDS, TrainConfig
from mechgrok.errors import ConfigError
from mechgrok.presets import DEFAULT_PRESET, check_preset_name, preset_table

__all__ = [
    "CONFIG_KIND",
    "CONFIG_SCHEMA_VERSION",
    "RunConfig",
    "load_config_file",
    "preset",
    "replace",
    "resolve_config",
]

CONFIG_KIND = "mechgrok.run_config"
CONFIG_SCHEMA_VERSION = 1


@dataclass(frozen=True)
class RunConfig:
    """Everything that determines a run."""

    task: TaskConfig = field(default_factory=TaskConfig)
    model: ModelConfig = field(default_factory=TransformerConfig)
    train: TrainConfig = field(default_factory=TrainConfig)
    preset: str | None = None

    def __post_init__(self) -> None:
        check(isinstance(self.task, TaskConfig), "task must be a TaskConfig")
        check(isinstance(self.model, tuple(MODEL_KINDS.values())),
              f"model must be a model config ({' or '.join(c.__name__ for c in MODEL_KINDS.values())})")
        check(isinstance(self.train, TrainConfig), "train must be a TrainConfig")
        check_preset_name(self.preset, allow_none=True)

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
            raise ConfigError(f"a run config must be a table, got {type_name(data)}")
        data = dict(data)
        kind = data.pop("kind", CONFIG_KIND)
        version = data.pop("schema_version", CONFIG_SCHEMA_VERSION)
        if kind != CONFIG_KIND:
            raise ConfigError(f"not a mechgrok run config (kind {short(kind)})")
        if not is_int(version) or version > CONFIG_SCHEMA_VERSION:
            raise ConfigError(
                f"run config schema version {short(version)} is newer than this mechgrok "
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
            raise ConfigError(f"model.kind must be {' or '.join(map(repr, MODEL_KINDS))}, got "
                              f"{short(model_kind)}")
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
            raise ConfigError(f"a saved run config must be a JSON object, got {type_name(data)}")
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
        """A readable id derived from the config:
        ``<preset|task>-<task>-<model>-<size>-s<seed>-<hash>``, the size ``p<p>`` for a modular
        task and ``s<n>`` for S_n (``s5`` as ever, ``s4``). Fields added later
        (:data:`ADDED_FIELDS`) enter the hash only when they differ from what runs saved before
        them did (``task.degree`` only for a degree other than 5), so old ids stay as they were."""
        import hashlib

        body = {k: v for k, v in self.to_dict().items() if k != "preset"}
        for section, fields_ in ADDED_FIELDS.items():  # ids of runs saved before they existed
            body[section] = {k: v for k, v in body[section].items()
                             if k not in fields_ or v != fields_[k]}
        digest = hashlib.sha256(json.dumps(body, sort_keys=True).encode()).hexdigest()[:8]
        head = self.preset or self.task.name
        size = self.task.size_label
        rid = f"{head}-{self.task.name}-{self.model.kind}-{size}-s{self.train.seed}-{digest}"
        # every part is validated (a known preset and task); this keeps the id a plain file name
        # whatever a future preset or task is called
        return _UNSAFE_ID.sub("_", rid)


_UNSAFE_ID = re.compile(r"[^A-Za-z0-9._-]")


def _check_table(section: str, value: Any) -> None:
    if not isinstance(value, Mapping):
        raise ConfigError(f"[{section}] must be a table of settings ({section}.field = value), "
                          f"got {type_name(value)}: {short(value)}")


def preset(name: str) -> RunConfig:
    """The named preset's config (see :data:`~mechgrok.presets.PRESETS`)."""
    d = preset_table(name)
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
                          f"[task], [model], [train]), got {type_name(data)}")
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
        check_preset_name(preset_name)
    if "preset" in file_d:
        check_preset_name(file_d["preset"], allow_none=True)
    name = preset_name or file_d.get("preset") or DEFAULT_PRESET
    base = preset(name).to_dict()
    preset_model = dict(base["model"])
    layered: dict[str, Any] = {}
    for k, v in (overrides or {}).items():
        section, _, key = str(k).partition(".")
        if section not in SECTIONS:
            what = ("preset is not a section: choose it with --preset NAME or preset = \"NAME\" "
                    "in a config file" if section == "preset" else
                    f"{section!r} is not a section (task, model or train)")
            raise ConfigError(f"override {short(k)} must look like section.field "
                              f"(e.g. train.lr): {what}")
        if not key or "." in key:
            raise ConfigError(f"override {short(k)} must look like section.field (e.g. "
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
