"""TransformerLens ``HookedTransformer`` checkpoints and configs, both ways.

mechgrok's transformer (:mod:`mechgrok.models.transformer`) already uses TransformerLens's
parameter names and shapes (``embed.W_E (d_vocab, d_model)``, ``blocks.0.attn.W_Q (n_heads,
d_model, d_head)``, ``blocks.0.mlp.W_in (d_model, d_mlp)``, ``unembed.W_U (d_model, n)`` …), so the
conversion is mostly about what one side has and the other lacks:

* **Attention biases.** ``HookedTransformer`` always has ``b_Q, b_K, b_V, b_O``; mechgrok's
  transformer has none (Nanda et al. and the grokking demo freeze them at zero). Importing needs
  them to be exactly zero; exporting writes zeros.
* **Unembedding bias.** ``unembed.b_U`` is kept (``model.unembed_bias = true``) when it is non-zero
  and dropped when it is zero; exporting writes zeros when mechgrok has none.
* **LayerNorm.** ``normalization_type`` ``None`` and ``"LN"`` map to ``model.layernorm`` false and
  true (same names ``ln1.w``, ``ln1.b``, …; ε = 1e-5); ``"LNPre"`` (no learned weights) maps to
  LayerNorm with weights 1 and biases 0.
* **Buffers** (``attn.mask``, ``attn.IGNORE``) carry no learned values and are dropped.
* **Vocabulary.** ``d_vocab`` must be ``n + 1`` (the n elements and ``=``, which is token n) and
  ``d_vocab_out`` must be ``n``; ``n_ctx`` must be 3 (``[x, y, =]``).

What mechgrok cannot express is refused with one line naming the setting: other activations
than ReLU/GELU, rotary or other positional embeddings, attention-only or parallel blocks, grouped
or local attention, soft caps, RMS norms, a non-standard attention scale. In the other direction,
TransformerLens cannot express Zhong et al.'s attention rate α < 1 (a mix of softmax and uniform
attention) nor mechgrok's MLP-on-operands model, so :func:`export_config` refuses those.
"""

from __future__ import annotations

import json
import math
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from mechgrok.config import RunConfig, TransformerConfig
from mechgrok.errors import CheckpointError, ConfigError, RunDirError
from mechgrok.tasks import N_CTX

__all__ = ["EXPORT_CONFIG_FILE", "EXPORT_INFO_FILE", "EXPORT_KIND", "EXPORT_WEIGHTS_FILE", "LN_EPS",
           "N_CTX", "export_config", "export_run", "has_unembed_bias", "load_bridge",
           "looks_like_tl_state", "model_config_from_tl", "state_from_tl", "state_to_tl",
           "tl_config_from_state"]

LN_EPS = 1e-5
_ATTN_BIASES = ("b_Q", "b_K", "b_V", "b_O")
_BUFFERS = (".mask", ".IGNORE")
#: TransformerLens settings mechgrok's transformer does not have, with the value it must keep
_MUST_BE = {
    "attn_only": False, "parallel_attn_mlp": False, "gated_mlp": False, "final_rms": False,
    "use_local_attn": False, "post_embedding_ln": False, "use_qk_norm": False,
    "scale_attn_by_inverse_layer_idx": False, "use_normalization_before_and_after": False,
    "n_key_value_heads": None, "use_attention_sinks": False, "num_experts": None,
}


def _describe(value: Any) -> str:
    r = repr(value)
    return r if len(r) <= 40 else r[:39] + "…"


def model_config_from_tl(tl: Mapping[str, Any], *, unembed_bias: bool, where: str
                         ) -> tuple[TransformerConfig, int]:
    """mechgrok's :class:`TransformerConfig` and the number of answer classes n for a
    TransformerLens config (``HookedTransformerConfig`` fields as a mapping). Anything mechgrok's
    transformer cannot compute is a :class:`ConfigError` naming the setting and ``where``."""

    def need(key: str) -> Any:
        if key not in tl or tl[key] is None:
            raise ConfigError(f"{where}: the TransformerLens config has no {key}")
        return tl[key]

    for key, want in _MUST_BE.items():
        got = tl.get(key)
        if got not in (None, False, 0):
            raise ConfigError(f"{where}: TransformerLens setting {key} = {_describe(got)} has no "
                              f"counterpart in mechgrok's transformer (it needs {want!r})")
    pos = tl.get("positional_embedding_type", "standard") or "standard"
    if pos != "standard":
        raise ConfigError(f"{where}: positional_embedding_type {pos!r} is not supported; mechgrok's "
                          f"transformer has learned (standard) position embeddings")
    if tl.get("attention_dir", "causal") not in ("causal", None):
        raise ConfigError(f"{where}: attention_dir {tl.get('attention_dir')!r} is not supported; "
                          f"mechgrok's attention is causal")
    for cap in ("attn_scores_soft_cap", "output_logits_soft_cap"):
        v = tl.get(cap, -1.0)
        if v is not None and float(v) > 0:
            raise ConfigError(f"{where}: {cap} = {v} is not supported by mechgrok's transformer")
    act = need("act_fn")
    if act not in ("relu", "gelu"):
        raise ConfigError(f"{where}: act_fn {act!r} is not supported; mechgrok's transformer "
                          f"uses relu or gelu (exact)")
    norm = tl.get("normalization_type")
    if norm not in (None, "LN", "LNPre"):
        raise ConfigError(f"{where}: normalization_type {norm!r} is not supported; mechgrok's "
                          f"transformer has none or LayerNorm (LN, LNPre)")
    if norm is not None and not math.isclose(float(tl.get("eps", LN_EPS)), LN_EPS):
        raise ConfigError(f"{where}: LayerNorm eps {tl.get('eps')} differs from mechgrok's "
                          f"{LN_EPS}")
    d_head = int(need("d_head"))
    if tl.get("use_attn_scale", True) is False:
        raise ConfigError(f"{where}: use_attn_scale = false is not supported; mechgrok scales "
                          f"attention scores by 1/sqrt(d_head)")
    scale = tl.get("attn_scale")
    if scale is not None and float(scale) > 0 and not math.isclose(float(scale),
                                                                   math.sqrt(d_head)):
        raise ConfigError(f"{where}: attn_scale {float(scale):g} is not sqrt(d_head) = "
                          f"{math.sqrt(d_head):g}, the only scale mechgrok's attention uses")
    n_ctx = int(need("n_ctx"))
    if n_ctx != N_CTX:
        raise ConfigError(f"{where}: n_ctx is {n_ctx}; mechgrok's inputs are [x, y, =], so n_ctx "
                          f"must be {N_CTX}")
    d_vocab = int(need("d_vocab"))
    d_out = int(tl.get("d_vocab_out") or -1)
    n = d_out if d_out > 0 else d_vocab - 1
    if d_vocab != n + 1:
        raise ConfigError(f"{where}: d_vocab {d_vocab} and d_vocab_out {d_out} do not fit "
                          f"mechgrok's layout (n answer classes, and n + 1 input tokens: the "
                          f"elements and '=')")
    try:
        cfg = TransformerConfig(
            n_layers=int(need("n_layers")), n_heads=int(need("n_heads")),
            d_model=int(need("d_model")), d_head=d_head, d_mlp=int(need("d_mlp")), act=act,
            layernorm=norm is not None, attn_alpha=1.0, unembed_bias=unembed_bias)
    except ConfigError as e:
        raise ConfigError(f"{where}: {e}") from None
    return cfg, n


def tl_config_from_state(state: Mapping[str, Any]) -> dict[str, Any]:
    """What a ``HookedTransformer`` state dict's shapes say about its config (everything but the
    activation function, which leaves no trace in the weights)."""
    try:
        n_layers = 1 + max(int(k.split(".")[1]) for k in state if k.startswith("blocks."))
        W_Q = state["blocks.0.attn.W_Q"]
        W_in = state["blocks.0.mlp.W_in"]
        W_E, W_U, W_pos = state["embed.W_E"], state["unembed.W_U"], state["pos_embed.W_pos"]
    except (KeyError, ValueError, IndexError) as e:
        raise CheckpointError(f"not a TransformerLens HookedTransformer state dict (no {e})"
                              ) from None
    return {"n_layers": n_layers, "n_heads": int(W_Q.shape[0]), "d_model": int(W_Q.shape[1]),
            "d_head": int(W_Q.shape[2]), "d_mlp": int(W_in.shape[1]), "d_vocab": int(W_E.shape[0]),
            "d_vocab_out": int(W_U.shape[1]), "n_ctx": int(W_pos.shape[0]),
            "normalization_type": "LN" if "blocks.0.ln1.w" in state else None}


def looks_like_tl_state(state: Mapping[str, Any]) -> bool:
    """Whether ``state``'s names are a ``HookedTransformer``'s."""
    return "embed.W_E" in state and "blocks.0.attn.W_Q" in state and "unembed.W_U" in state


def has_unembed_bias(state: Mapping[str, Any]) -> bool:
    b = state.get("unembed.b_U")
    return b is not None and bool((b != 0).any())


def state_from_tl(state: Mapping[str, Any], model_cfg: TransformerConfig, where: str
                  ) -> dict[str, Any]:
    """A ``HookedTransformer`` state dict as mechgrok's transformer's: buffers dropped, attention
    biases checked to be zero and dropped, ``b_U`` kept or dropped per ``model_cfg``, LNPre's
    missing LayerNorm weights filled with 1 and 0. Names and shapes are checked by the caller
    (:func:`mechgrok.store.check_tensors` against the model the config builds)."""
    import torch

    out: dict[str, Any] = {}
    for name, t in state.items():
        if not hasattr(t, "shape"):
            raise CheckpointError(f"{where}: {name} is a {type(t).__name__}, not a tensor")
        if name.endswith(_BUFFERS):
            continue
        leaf = name.rsplit(".", 1)[-1]
        if ".attn." in name and leaf in _ATTN_BIASES:
            if bool((t != 0).any()):
                raise CheckpointError(
                    f"{where}: {name} is not zero; mechgrok's transformer has no attention "
                    f"biases (the grokking demo freezes them at zero), so this model cannot be "
                    f"imported exactly")
            continue
        if name == "unembed.b_U" and not model_cfg.unembed_bias:
            if bool((t != 0).any()):
                raise CheckpointError(f"{where}: unembed.b_U is not zero but the config has "
                                      f"model.unembed_bias = false")
            continue
        out[name] = t
    if model_cfg.layernorm:
        lns = [f"blocks.{i}.{ln}" for i in range(model_cfg.n_layers) for ln in ("ln1", "ln2")]
        for ln in [*lns, "ln_final"]:
            if f"{ln}.w" not in out and f"{ln}.b" not in out:  # LNPre: no learned weights
                like = out["embed.W_E"] if "embed.W_E" in out else None
                dtype = like.dtype if like is not None else torch.float32
                out[f"{ln}.w"] = torch.ones(model_cfg.d_model, dtype=dtype)
                out[f"{ln}.b"] = torch.zeros(model_cfg.d_model, dtype=dtype)
    return out


def export_config(cfg: RunConfig, name: str = "mechgrok") -> dict[str, Any]:
    """The ``HookedTransformerConfig`` / ``TransformerBridgeConfig`` fields of a mechgrok
    transformer run. Refuses what TransformerLens cannot compute (one line saying why)."""
    m = cfg.model
    if not isinstance(m, TransformerConfig):
        raise ConfigError("this run's model is an MLP on the two operands; TransformerLens has no "
                          "such model, so only transformer runs can be exported to it")
    if m.attn_alpha != 1.0:
        raise ConfigError(f"this run's attention rate is α = {m.attn_alpha:g} (a mix of softmax and "
                          f"uniform attention, Zhong et al.); TransformerLens's attention is "
                          f"softmax only (α = 1), so its logits could not match: not exported")
    n = cfg.task.n
    return {
        "model_name": name, "n_layers": m.n_layers, "n_heads": m.n_heads, "d_model": m.d_model,
        "d_head": m.d_head, "d_mlp": m.d_mlp, "d_vocab": n + 1, "d_vocab_out": n, "n_ctx": N_CTX,
        "act_fn": m.act, "normalization_type": "LN" if m.layernorm else None, "eps": LN_EPS,
        "positional_embedding_type": "standard", "attn_only": False,
        "dtype": cfg.train.model_dtype,
    }


def state_to_tl(state: Mapping[str, Any], model_cfg: TransformerConfig) -> dict[str, Any]:
    """mechgrok's transformer state as a ``HookedTransformer`` state dict: zero attention biases
    and (when mechgrok has none) a zero ``unembed.b_U`` added; no buffers."""
    import torch

    out = {k: v.detach().clone().contiguous() for k, v in state.items()}
    dtype = out["embed.W_E"].dtype
    h, e, d = model_cfg.n_heads, model_cfg.d_head, model_cfg.d_model
    for i in range(model_cfg.n_layers):
        for b in ("b_Q", "b_K", "b_V"):
            out[f"blocks.{i}.attn.{b}"] = torch.zeros(h, e, dtype=dtype)
        out[f"blocks.{i}.attn.b_O"] = torch.zeros(d, dtype=dtype)
    if "unembed.b_U" not in out:
        out["unembed.b_U"] = torch.zeros(out["unembed.W_U"].shape[1], dtype=dtype)
    return dict(sorted(out.items()))


# --------------------------------------------------------------------------------------------
# mechgrok export RUN --to transformer-lens DIR
# --------------------------------------------------------------------------------------------
EXPORT_CONFIG_FILE = "config.json"
EXPORT_WEIGHTS_FILE = "model.safetensors"
EXPORT_INFO_FILE = "mechgrok.json"
EXPORT_KIND = "mechgrok.export"


def export_run(run: Any, out: str | Path, epoch: int | None = None) -> Path:
    """Write a run's checkpoint (the last when ``epoch`` is None) as a folder TransformerLens
    loads: ``config.json`` (``HookedTransformerConfig`` / ``TransformerBridgeConfig`` fields),
    ``model.safetensors`` (the ``HookedTransformer`` state dict), ``split.safetensors`` (the run's
    train/test indices) and ``mechgrok.json`` (task, epoch, source run and checkpoint hash, so
    ``mechgrok import`` reads the folder back as it was). The folder appears whole or not at all;
    an existing ``out`` is refused."""
    import contextlib
    import os
    import shutil
    import tempfile

    from mechgrok.store import (
        SPLIT_FILE,
        Run,
        atomic_write_bytes,
        atomic_write_json,
        package_versions,
        tensors_to_bytes,
    )

    run = run if isinstance(run, Run) else Run(run)
    cfg = run.config
    tl_cfg = export_config(cfg, name=run.id)  # refuses what TransformerLens cannot compute
    ck = run.checkpoint(epoch)
    model = run.load_model(ck)
    state = state_to_tl(model.state_dict(), cfg.model)
    out = Path(out)
    if out.exists() or out.is_symlink():
        raise RunDirError(f"{out} already exists; export writes a new folder: choose another "
                          f"path or remove it first")
    out.parent.mkdir(parents=True, exist_ok=True)
    build = Path(tempfile.mkdtemp(prefix=f".{out.name}.new-", dir=out.parent))
    try:
        atomic_write_json(build / EXPORT_CONFIG_FILE, tl_cfg)
        atomic_write_bytes(build / EXPORT_WEIGHTS_FILE, tensors_to_bytes(
            state, {"format": "transformer_lens.HookedTransformer.state_dict"}))
        train_idx, test_idx = run.split()
        atomic_write_bytes(build / SPLIT_FILE, tensors_to_bytes(
            {"train_idx": train_idx, "test_idx": test_idx}))
        atomic_write_json(build / EXPORT_INFO_FILE, {
            "kind": EXPORT_KIND, "run_id": run.id, "epoch": ck.epoch,
            "checkpoint_sha256": ck.sha256, "task": cfg.task.to_dict(),
            "model": cfg.model.to_dict(), "versions": package_versions(),
            "load_with": "mechgrok.interop.transformer_lens.load_bridge(folder), or "
                         "TransformerBridge.boot_native(config) + convert_tl_checkpoint"})
        os.rename(build, out)
    except BaseException:
        with contextlib.suppress(OSError):
            shutil.rmtree(build)
        raise
    return out


def load_bridge(folder: str | Path) -> Any:
    """The exported model as a TransformerLens 4 ``TransformerBridge`` (``boot_native`` with the
    folder's config, then the weights through TransformerLens's own ``convert_tl_checkpoint``)."""
    import torch
    from transformer_lens.config import TransformerBridgeConfig
    from transformer_lens.model_bridge import TransformerBridge
    from transformer_lens.utilities.tl_checkpoint_conversion import convert_tl_checkpoint

    from mechgrok.store import tensors_from_bytes

    folder = Path(folder)
    cfg_d = json.loads((folder / EXPORT_CONFIG_FILE).read_text())
    dtype = getattr(torch, str(cfg_d.pop("dtype", "float32")))
    cfg = TransformerBridgeConfig.from_dict(cfg_d)
    state = tensors_from_bytes((folder / EXPORT_WEIGHTS_FILE).read_bytes(),
                               str(folder / EXPORT_WEIGHTS_FILE))[0]
    # boot_native is attached to the class at import time (setattr in
    # transformer_lens.model_bridge.sources.native), so type checkers cannot see it
    bridge = TransformerBridge.boot_native(cfg, dtype=dtype)  # type: ignore[attr-defined]
    result = bridge.load_state_dict(convert_tl_checkpoint(state, cfg), strict=True)
    if result.missing_keys or result.unexpected_keys:  # pragma: no cover - strict raises
        raise CheckpointError(f"{folder}: TransformerLens did not take every weight")
    return bridge.eval()
