"""The task and model sections of a run's config: :class:`TaskConfig`, and one config class per
model kind (:class:`TransformerConfig`, :class:`MLPConfig`), registered in :data:`MODEL_KINDS`."""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Literal

from mechgrok.config.fields import (
    MAX_SEED,
    MAX_SIZE,
    Section,
    check,
    is_int,
    is_num,
    short,
    type_name,
)

if TYPE_CHECKING:
    from mechgrok.tasks import TaskData

__all__ = ["MODEL_KINDS", "MLPConfig", "ModelConfig", "TaskConfig", "TransformerConfig"]


@dataclass(frozen=True)
class TaskConfig(Section):
    """Which operation, its size and the split. The size is the modulus ``p`` of a modular task
    (``p`` is ignored, set to None, for the symmetric tasks) or the ``degree`` n of S_n of a
    symmetric one (3 … 6; a modular task refuses it). ``degree = None`` means 5, and 5 is stored
    as None and left out of :meth:`to_dict`: the id and ``config.json`` of every S5 run are those
    it had before the degree was a setting. :attr:`size` is the one parameter, :meth:`dataset`
    the data."""

    section = "task"
    name: str = "add"
    p: int | None = 113
    degree: int | None = None
    frac_train: float = 0.3
    data_seed: int = 0

    def __post_init__(self) -> None:
        from mechgrok.tasks import DEFAULT_DEGREE, get_task

        check(isinstance(self.name, str),
              f"task.name must be a string (a task name; see `mechgrok tasks`), got "
              f"{type_name(self.name)}: {short(self.name)}")
        task = get_task(self.name)
        if not task.modular and self.p is not None:
            object.__setattr__(self, "p", None)
        task.validate_modulus(self.p, self.degree)
        if self.degree is not None and task.degree_of(self.degree) == DEFAULT_DEGREE:
            object.__setattr__(self, "degree", None)  # one spelling of S5: the one ids know
        elif self.degree is not None:
            object.__setattr__(self, "degree", int(self.degree))  # numpy ints from a grid
        check(
            is_num(self.frac_train) and 0.0 < self.frac_train < 1.0,
            f"task.frac_train must be strictly between 0 and 1, got {self.frac_train!r}",
        )
        check(is_int(self.data_seed) and 0 <= self.data_seed <= MAX_SEED,
              f"task.data_seed must be an integer from 0 to 2**63 - 1 ({MAX_SEED}), "
              f"got {short(self.data_seed)}")

    def to_dict(self) -> dict[str, Any]:
        """The settings as a table, ``degree`` only when it is set (S_n with n ≠ 5): without it
        a config says what every config written before the degree existed says (a modular task,
        or S5), so those runs' ``config.json``, ids and analysis records stay as they are."""
        out = super().to_dict()
        if out["degree"] is None:
            del out["degree"]
        return out

    @property
    def n(self) -> int:
        """Number of elements (= answer classes): p, or n! for S_n (120 for S5)."""
        from mechgrok.tasks import get_task

        return get_task(self.name).n_elements(self.p, self.degree)

    @property
    def n_pairs(self) -> int:
        """Number of valid (x, y) pairs: n² but for ``div`` (no y = 0: p(p − 1))."""
        from mechgrok.tasks import get_task

        return len(get_task(self.name).pairs(self.p, self.degree))

    @property
    def size(self) -> int:
        """The task's one size parameter: the modulus p, or the degree n of S_n (5 for S5)."""
        from mechgrok.tasks import get_task

        return get_task(self.name).size(self.p, self.degree)

    @property
    def size_label(self) -> str:
        """The size as the run id spells it: ``p113``, or ``s<n>`` for S_n (``s5``, ``s4``)."""
        from mechgrok.tasks import get_task

        return f"p{self.p}" if get_task(self.name).modular else f"s{self.size}"

    @property
    def title(self) -> str:
        """The task in words: ``add mod 113``, ``s5`` (in S5), ``s5conj in S4``."""
        from mechgrok.tasks import get_task

        if get_task(self.name).modular:
            return f"{self.name} mod {self.p}"
        return self.name if self.degree is None else f"{self.name} in S{self.degree}"

    def dataset(self) -> TaskData:
        """The task's dataset with its seeded split (:func:`mechgrok.tasks.make_dataset`)."""
        from mechgrok.tasks import make_dataset

        return make_dataset(self.name, self.p, self.frac_train, self.data_seed,
                            degree=self.degree)


@dataclass(frozen=True)
class TransformerConfig(Section):
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
        check(self.kind == "transformer", f"model.kind must be 'transformer' here, got "
                                           f"{short(self.kind)}")
        for k in ("n_layers", "n_heads", "d_model", "d_head", "d_mlp"):
            v = getattr(self, k)
            check(is_int(v) and v >= 1, f"model.{k} must be a positive integer, got {short(v)}")
            check(v <= MAX_SIZE, f"model.{k} = {v} is beyond any model mechgrok can build "
                                  f"(at most {MAX_SIZE})")
        check(self.act in ("relu", "gelu"), f"model.act must be 'relu' or 'gelu', got {self.act!r}")
        check(is_num(self.attn_alpha) and 0.0 <= self.attn_alpha <= 1.0,
              f"model.attn_alpha must be in [0, 1], got {self.attn_alpha!r}")
        check(is_num(self.init_scale) and self.init_scale > 0,
              f"model.init_scale must be positive, got {self.init_scale!r}")
        check(isinstance(self.layernorm, bool), "model.layernorm must be true or false")
        check(isinstance(self.unembed_bias, bool), "model.unembed_bias must be true or false")


@dataclass(frozen=True)
class MLPConfig(Section):
    """An MLP on the two operands (MEASURES.md §2).

    ``embed='learned'``: a learned embedding of width ``d_embed`` per operand; ``'onehot'``: the
    one-hot vectors themselves (Prieto's homogeneous MLP). ``combine`` concatenates the two
    operand vectors or sums them (Zhong's linear models). ``init`` draws the initial parameters:
    ``'normal'`` weights N(0, 1/fan_in) and biases 0 (mechgrok's own), ``'torch'`` what PyTorch's
    default ``nn.Linear`` draws, weight and bias uniform(±1/√fan_in) (Prieto et al.'s code); the
    learned embedding is N(0, 1) either way, as ``nn.Embedding``'s. ``init_scale`` multiplies
    every parameter drawn at random (Omnigrok's α).
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
    init: Literal["normal", "torch"] = "normal"

    def __post_init__(self) -> None:
        check(self.embed in ("learned", "onehot"),
              f"model.embed must be 'learned' or 'onehot', got {self.embed!r}")
        check(self.combine in ("concat", "sum"),
              f"model.combine must be 'concat' or 'sum', got {self.combine!r}")
        check(self.kind == "mlp", f"model.kind must be 'mlp' here, got {short(self.kind)}")
        check(is_int(self.d_embed) and 1 <= self.d_embed <= MAX_SIZE,
              f"model.d_embed must be a positive integer (at most {MAX_SIZE}), "
              f"got {short(self.d_embed)}")
        check(isinstance(self.hidden, tuple) and 1 <= len(self.hidden) <= 10_000
              and all(is_int(h) and 1 <= h <= MAX_SIZE for h in self.hidden),
              f"model.hidden must be a non-empty list of positive widths (each at most "
              f"{MAX_SIZE}), got {short(self.hidden)}")
        check(self.act in ("relu", "gelu"), f"model.act must be 'relu' or 'gelu', got {self.act!r}")
        check(isinstance(self.bias, bool), "model.bias must be true or false")
        check(is_num(self.init_scale) and self.init_scale > 0,
              f"model.init_scale must be positive, got {self.init_scale!r}")
        check(self.init in ("normal", "torch"),
              f"model.init must be 'normal' or 'torch', got {short(self.init)}")

    def to_dict(self) -> dict[str, Any]:
        """The settings as a table, ``init`` only when it is not ``'normal'``: without it a
        config says what every config written before the setting existed says, so those runs'
        ``config.json`` and analysis records stay as they are."""
        out = super().to_dict()
        if out["init"] == "normal":
            del out["init"]
        return out


ModelConfig = TransformerConfig | MLPConfig
# The model kinds: `model.kind` → its config class (one registry; models/ maps kinds to builders).
MODEL_KINDS: dict[str, type[TransformerConfig] | type[MLPConfig]] = {"transformer": TransformerConfig, "mlp": MLPConfig}
