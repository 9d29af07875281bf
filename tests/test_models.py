"""Models: shapes, the pinned hook names, TransformerLens types, and the fast path."""

from __future__ import annotations

import pytest
import torch
from transformer_lens.ActivationCache import ActivationCache
from transformer_lens.hook_points import HookPoint
from transformer_lens.HookedRootModule import HookedRootModule

from mechgrok.models import build_model
from mechgrok.tasks import make_dataset
from mechgrok.training.loop import dataset_tensors
from tests.conftest import tiny_config, tiny_mlp_config

TRANSFORMER_HOOKS = [
    "hook_embed", "hook_pos_embed",
    "blocks.0.hook_resid_pre",
    "blocks.0.attn.hook_q", "blocks.0.attn.hook_k", "blocks.0.attn.hook_v",
    "blocks.0.attn.hook_attn_scores", "blocks.0.attn.hook_pattern", "blocks.0.attn.hook_z",
    "blocks.0.hook_attn_out", "blocks.0.hook_resid_mid",
    "blocks.0.mlp.hook_pre", "blocks.0.mlp.hook_post",
    "blocks.0.hook_mlp_out", "blocks.0.hook_resid_post",
]
LN_HOOKS = ["blocks.0.ln1.hook_scale", "blocks.0.ln1.hook_normalized",
            "blocks.0.ln2.hook_scale", "blocks.0.ln2.hook_normalized",
            "ln_final.hook_scale", "ln_final.hook_normalized"]
MLP_HOOKS = ["hook_embed", "hook_in", "layers.0.hook_pre", "layers.0.hook_post",
             "layers.1.hook_pre", "layers.1.hook_post"]


def all_tokens(p: int) -> torch.Tensor:
    xy = torch.cartesian_prod(torch.arange(p), torch.arange(p))
    return torch.cat([xy, torch.full((p * p, 1), p)], 1)


def test_transformer_hook_names_are_pinned() -> None:
    model = build_model(tiny_config())
    assert isinstance(model, HookedRootModule)
    assert list(model.hook_dict) == TRANSFORMER_HOOKS
    assert all(isinstance(h, HookPoint) for h in model.hook_dict.values())
    ln = build_model(tiny_config(**{"model.layernorm": True}))
    assert sorted(ln.hook_dict) == sorted(TRANSFORMER_HOOKS + LN_HOOKS)
    two = build_model(tiny_config(**{"model.n_layers": 2}))
    assert [h.replace("blocks.1.", "blocks.0.") for h in two.hook_dict if "blocks.1." in h] == \
        TRANSFORMER_HOOKS[2:]


def test_mlp_hook_names_are_pinned() -> None:
    model = build_model(tiny_mlp_config(**{"model.hidden": [24, 12]}))
    assert list(model.hook_dict) == MLP_HOOKS
    assert model.neuron_hook == "layers.1.hook_post"


def test_transformer_shapes_and_cache() -> None:
    cfg = tiny_config()
    model = build_model(cfg)
    toks = all_tokens(11)
    logits, cache = model.run_with_cache(toks)
    assert isinstance(cache, ActivationCache)
    b, m = cfg.model, toks.shape[0]
    assert logits.shape == (m, 3, 11)
    assert cache["hook_embed"].shape == (m, 3, b.d_model)
    assert cache["blocks.0.attn.hook_q"].shape == (m, 3, b.n_heads, b.d_head)
    assert cache["blocks.0.attn.hook_pattern"].shape == (m, b.n_heads, 3, 3)
    assert cache["blocks.0.mlp.hook_post"].shape == (m, 3, b.d_mlp)
    assert cache["blocks.0.hook_resid_post"].shape == (m, 3, b.d_model)
    # causal: the first position attends only to itself, every row sums to one
    pat = cache["blocks.0.attn.hook_pattern"]
    assert torch.allclose(pat.sum(-1), torch.ones(()))
    assert (pat[:, :, 0, 1:] == 0).all()
    # parameter shapes follow TransformerLens
    sd = model.state_dict()
    assert sd["embed.W_E"].shape == (12, b.d_model) and sd["unembed.W_U"].shape == (b.d_model, 11)
    assert sd["blocks.0.attn.W_Q"].shape == (b.n_heads, b.d_model, b.d_head)
    assert sd["blocks.0.attn.W_O"].shape == (b.n_heads, b.d_head, b.d_model)
    assert sd["blocks.0.mlp.W_in"].shape == (b.d_model, b.d_mlp)


def test_attention_rate_zero_is_uniform_over_visible_keys() -> None:
    model = build_model(tiny_config(**{"model.attn_alpha": 0.0}))
    _, cache = model.run_with_cache(all_tokens(11)[:5])
    pat = cache["blocks.0.attn.hook_pattern"]
    want = torch.tensor([[1, 0, 0], [0.5, 0.5, 0], [1 / 3, 1 / 3, 1 / 3]])
    assert torch.allclose(pat, want.expand_as(pat))


def test_hooks_removed_even_when_a_hook_raises() -> None:
    model = build_model(tiny_config())

    def boom(act, hook):
        raise RuntimeError("boom")

    with pytest.raises(RuntimeError, match="boom"):
        model.run_with_hooks(all_tokens(11)[:3], fwd_hooks=[("blocks.0.mlp.hook_post", boom)])
    assert all(not h._forward_hooks for h in model.hook_dict.values())
    model(all_tokens(11)[:3])  # runs clean afterwards


def test_init_is_seeded() -> None:
    a = build_model(tiny_config(**{"train.seed": 3})).state_dict()
    b = build_model(tiny_config(**{"train.seed": 3})).state_dict()
    c = build_model(tiny_config(**{"train.seed": 4})).state_dict()
    assert all(torch.equal(a[k], b[k]) for k in a)
    assert not torch.equal(a["embed.W_E"], c["embed.W_E"])


def test_nanda_init_scales() -> None:
    model = build_model(tiny_config(**{"model.d_model": 128, "model.d_mlp": 512,
                                       "model.d_head": 32, "model.n_heads": 4, "task.p": 113}))
    sd = model.state_dict()
    assert abs(sd["embed.W_E"].std().item() - 128**-0.5) < 0.01
    assert abs(sd["blocks.0.mlp.W_in"].std().item() - 128**-0.5) < 0.005
    assert abs(sd["unembed.W_U"].std().item() - 113**-0.5) < 0.01
    assert (sd["blocks.0.mlp.b_in"] == 0).all()


CASES = {
    "transformer": {},
    "alpha-0.3": {"model.attn_alpha": 0.3},
    "alpha-0": {"model.attn_alpha": 0.0},
    "layernorm+bias+gelu": {"model.layernorm": True, "model.unembed_bias": True, "model.act": "gelu"},
    "two-layers": {"model.n_layers": 2},
    "mlp-concat": {"model.kind": "mlp", "model.d_embed": 8, "model.hidden": [24]},
    "mlp-sum-gelu": {"model.kind": "mlp", "model.d_embed": 8, "model.hidden": [24, 16],
                     "model.combine": "sum", "model.act": "gelu"},
    "mlp-onehot-nobias": {"model.kind": "mlp", "model.embed": "onehot", "model.hidden": [20, 20],
                          "model.bias": False},
}


@pytest.mark.parametrize("dtype", ["float32", "float64"])
@pytest.mark.parametrize("case", list(CASES))
def test_fast_path_equals_hooked_forward(case: str, dtype: str) -> None:
    """The trainer's fast path gives the hooked forward's logits and gradients."""
    cfg = tiny_config(**CASES[case], **{"train.model_dtype": dtype, "train.seed": 1})
    model = build_model(cfg)
    toks = all_tokens(11)
    # train briefly so the weights are not at their symmetric initialisation
    with torch.no_grad():
        for p in model.parameters():
            p.add_(torch.randn(p.shape, generator=torch.Generator().manual_seed(p.numel()),
                               dtype=p.dtype) * 0.05)
    labels = (toks[:, 0] + toks[:, 1]) % 11
    hooked = model.last_logits(toks)
    fast = model.forward_last(toks)
    rtol, atol = (1e-5, 1e-5) if dtype == "float32" else (1e-12, 1e-12)
    torch.testing.assert_close(fast, hooked, rtol=rtol, atol=atol)
    params = list(model.parameters())
    g_hooked = torch.autograd.grad(torch.nn.functional.cross_entropy(hooked, labels), params)
    g_fast = torch.autograd.grad(torch.nn.functional.cross_entropy(fast, labels), params)
    for (name, _), a, b in zip(model.named_parameters(), g_fast, g_hooked):
        scale = b.abs().max().clamp_min(1e-30)
        assert ((a - b).abs().max() / scale) < (1e-4 if dtype == "float32" else 1e-10), name


def test_mlp_ignores_equals_token_column() -> None:
    model = build_model(tiny_mlp_config())
    d = dataset_tensors(make_dataset("add", 11, 0.5, 0))
    x = d["train_x"]
    torch.testing.assert_close(model(x), model(x[:, :2]))


@pytest.mark.parametrize("score_table", [True, False])
@pytest.mark.parametrize("case", ["transformer", "alpha-0.3", "layernorm+bias+gelu"])
def test_fast_path_with_varied_last_token(case: str, score_table: bool,
                                          monkeypatch: pytest.MonkeyPatch) -> None:
    """Inputs whose last token is not always `=` take the general table branches."""
    from mechgrok.models.transformer import Transformer

    if not score_table:
        monkeypatch.setattr(Transformer, "SCORE_TABLE_MAX", 0)
    model = build_model(tiny_config(**CASES[case], **{"train.model_dtype": "float64"}))
    toks = torch.randint(0, 12, (300, 3), generator=torch.Generator().manual_seed(0))
    hooked = model.last_logits(toks)
    fast = model.forward_last(toks)
    torch.testing.assert_close(fast, hooked, rtol=1e-12, atol=1e-12)
    params = list(model.parameters())
    ga = torch.autograd.grad(hooked.square().sum(), params)
    gb = torch.autograd.grad(fast.square().sum(), params)
    for a, b in zip(ga, gb):
        torch.testing.assert_close(a, b, rtol=1e-10, atol=1e-10)
