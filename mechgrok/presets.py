"""The named presets: the settings of the runs the literature made, as plain config tables.

Each preset is a ``{"task": {...}, "model": {...}, "train": {...}}`` table in the shape of a run
file; :func:`mechgrok.config.preset` turns one into a :class:`~mechgrok.config.RunConfig`, and
:func:`mechgrok.config.resolve_config` layers a file and flags over one (``quick`` by default).
This module is plain data: it imports nothing of mechgrok's but its errors, so the config can
check a preset's name without a cycle.
"""

from __future__ import annotations

import copy
from typing import Any

from mechgrok.errors import ConfigError

__all__ = ["DEFAULT_PRESET", "PRESETS", "check_preset_name", "preset_table"]

#: the preset a config starts from when neither the command line nor the file names one
DEFAULT_PRESET = "quick"

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
    # Power et al. 2022's division x · y⁻¹ mod 97 on a Nanda-style one-layer transformer, shrunk
    # to quick's widths to grok on a CPU: 40 % train (Power: 30-50 %), AdamW(3e-3, wd 1,
    # (0.9, 0.98)), full batch. Measured here (one thread, seed 0): train acc ≥ 99 % at epoch
    # 160, test ≥ 99 % at 1840 (2.8 min; 1.5 min on an idle CPU), stopped at 3330 (193
    # checkpoints; the weight norm falls from 1820 to 820 after grokking). The same on mul: 130,
    # 600. At 30 % (lr 3e-3 or 1e-3) no sign of grokking by 6.5k / 3k epochs.
    "div": {
        "task": {"name": "div", "p": 97, "frac_train": 0.4},
        "model": {"kind": "transformer", "d_model": 64, "n_heads": 4, "d_head": 16, "d_mlp": 256},
        "train": {"epochs": 12_000, "lr": 3e-3, "weight_decay": 1.0, "betas": [0.9, 0.98],
                  "warmup_steps": 10, "loss_dtype": "float64", "eval_every": 10,
                  "checkpoint_every": 20, "dense_until": 500, "dense_every": 10,
                  "stop_after_grok": 150},
    },
    # Chughtai, Chan & Nanda 2023's S5 MLP: x and y embedded (256), concatenated, one ReLU layer
    # of 128, unembedding, no biases; 40 %, AdamW(1e-3, wd 1, (0.9, 0.98)), full batch. Their
    # run memorises by epoch 337 and groks at 161,742 (GPU). mechgrok's MLP shares one embedding
    # between x and y (theirs are separate). Here lr 3e-3 and wd 3 (9× their lr·wd). Measured
    # here (one thread, seeds 0-3): memorised by 180-200; test ≥ 99 % at 6650, 6100, 3850
    # (2-5 min), but seed 3 stalls (test acc 0.90 at 25k, 0.93 at the 30k cap, 12 min). Tried:
    # wd 1 or lr 1e-3 (no grokking by 4k / 13k), one-hot inputs (stall at 0.08, wd 2), and for
    # seed 3 wd 4 (0.96 at 9k), hidden 256 (0.955 at 14k), 50 % train (groks at 1950, but
    # seed 0 then stalls at 0.87). Stops 3000 epochs after grokking: about 230 checkpoints.
    "s5": {
        "task": {"name": "s5", "frac_train": 0.4},
        "model": {"kind": "mlp", "embed": "learned", "d_embed": 256, "combine": "concat",
                  "hidden": [128], "bias": False},
        "train": {"epochs": 30_000, "lr": 3e-3, "weight_decay": 3.0, "betas": [0.9, 0.98],
                  "warmup_steps": 10, "loss_dtype": "float64", "eval_every": 50,
                  "checkpoint_every": 50, "dense_until": 1000, "dense_every": 20,
                  "stop_after_grok": 60},
    },
}


def _shown(v: Any) -> str:
    """What a wrong preset value is, and the value itself cut to one readable line."""
    kind = {list: "a list", dict: "a table", str: "a string", bool: "a boolean",
            int: "an integer", float: "a number", type(None): "none"}.get(type(v), type(v).__name__)
    r = repr(list(v) if isinstance(v, tuple) else v)
    return f"{kind}: {r if len(r) <= 60 else r[:59] + '…'}"


def check_preset_name(name: Any, allow_none: bool = False) -> None:
    """Refuse anything but a preset's name (or None, with ``allow_none``): one line saying which
    presets there are."""
    if name is None and allow_none:
        return
    if not isinstance(name, str):
        raise ConfigError(f"preset must be a preset's name (a string: {', '.join(PRESETS)}), "
                          f"got {_shown(name)}")
    if name not in PRESETS:
        r = repr(name)
        raise ConfigError(f"unknown preset {r if len(r) <= 60 else r[:59] + '…'}; choose one of: "
                          f"{', '.join(PRESETS)}")


def preset_table(name: str) -> dict[str, Any]:
    """A fresh copy of a preset's table (``task``, ``model``, ``train``), its name checked."""
    check_preset_name(name)
    return copy.deepcopy(PRESETS[name])
