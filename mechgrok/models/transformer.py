"""Nanda et al.'s modular-arithmetic transformer, with Zhong et al.'s attention rate α.

Input tokens ``[x, y, =]``; learned token and position embeddings; ``n_layers`` blocks of causal
multi-head attention (no biases) then an MLP (with biases); optional pre-LayerNorm; an untied
unembedding to the ``n`` answer classes (the ``=`` token is never an answer). Logits are read at the
last position.

Parameter shapes follow TransformerLens (``W_E: (d_vocab, d_model)``, ``W_Q: (n_heads, d_model,
d_head)``, ``W_O: (n_heads, d_head, d_model)``, ``W_in: (d_model, d_mlp)``, ``W_U: (d_model, n)``)
and so do hook names (``hook_embed``, ``blocks.0.attn.hook_pattern``, ``blocks.0.mlp.hook_post`` …).

Initialisation (Nanda): every weight ~ N(0, 1/d_model) except ``W_U`` ~ N(0, 1/n) (Nanda's code
divides by √d_vocab = √(p + 1); mechgrok's unembedding has n = p outputs, so it uses √n); biases 0;
LayerNorm weights 1. ``init_scale`` multiplies every weight.

Attention rate (Zhong): ``pattern = α · softmax(scores) + (1 − α) · uniform`` where ``uniform`` is
uniform over the causally visible keys. α = 1 is the standard transformer, α = 0 constant attention.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from typing import cast

import torch
import torch.nn.functional as F
from torch import Tensor, nn
from transformer_lens.hook_points import HookPoint

from mechgrok.config import TransformerConfig
from mechgrok.models.base import Embed, HookedModel, Unembed, init_normal_
from mechgrok.tasks import N_CTX

__all__ = ["MLP", "N_CTX", "Attention", "LayerNorm", "PosEmbed", "Transformer", "TransformerBlock"]


class LayerNorm(nn.Module):
    """LayerNorm with learned ``w`` and ``b`` and TransformerLens's two hooks."""

    def __init__(self, d_model: int, eps: float = 1e-5):
        super().__init__()
        self.eps = eps
        self.w = nn.Parameter(torch.ones(d_model))
        self.b = nn.Parameter(torch.zeros(d_model))
        self.hook_scale = HookPoint()  # (..., 1)
        self.hook_normalized = HookPoint()  # (..., d_model)

    def forward(self, x: Tensor, hooked: bool = True) -> Tensor:
        x = x - x.mean(-1, keepdim=True)
        scale = (x.pow(2).mean(-1, keepdim=True) + self.eps).sqrt()
        if hooked:
            scale = self.hook_scale(scale)
            return self.hook_normalized(x / scale) * self.w + self.b
        return (x / scale) * self.w + self.b


class Attention(nn.Module):
    """Causal multi-head attention without biases, with Zhong et al.'s attention rate α."""

    mask: Tensor  # (N_CTX, N_CTX) bool, lower triangular: a buffer

    def __init__(self, cfg: TransformerConfig):
        super().__init__()
        h, d, e = cfg.n_heads, cfg.d_model, cfg.d_head
        self.alpha = float(cfg.attn_alpha)
        self.scale = 1.0 / math.sqrt(e)
        self.W_Q = nn.Parameter(torch.empty(h, d, e))
        self.W_K = nn.Parameter(torch.empty(h, d, e))
        self.W_V = nn.Parameter(torch.empty(h, d, e))
        self.W_O = nn.Parameter(torch.empty(h, e, d))
        self.register_buffer("mask", torch.tril(torch.ones(N_CTX, N_CTX, dtype=torch.bool)),
                             persistent=False)
        self.hook_q = HookPoint()  # (batch, pos, head, d_head)
        self.hook_k = HookPoint()
        self.hook_v = HookPoint()
        self.hook_attn_scores = HookPoint()  # (batch, head, query_pos, key_pos)
        self.hook_pattern = HookPoint()  # (batch, head, query_pos, key_pos)
        self.hook_z = HookPoint()  # (batch, pos, head, d_head)

    def _project(self, x: Tensor, W: Tensor) -> Tensor:
        """x (batch, pos, d_model) @ W (head, d_model, d_head) → (batch, pos, head, d_head)."""
        h, d, e = W.shape
        return (x @ W.transpose(0, 1).reshape(d, h * e)).unflatten(-1, (h, e))

    def forward(self, x: Tensor) -> Tensor:
        # x: (batch, pos, d_model). Plain matmuls on views: einsum's batched tiny matmuls and
        # permute copies cost twice as much on CPU for three positions.
        q = self.hook_q(self._project(x, self.W_Q))  # (batch, pos, head, d_head)
        k = self.hook_k(self._project(x, self.W_K))
        v = self.hook_v(self._project(x, self.W_V))
        n = x.shape[1]
        mask = self.mask[:n, :n]
        scores = (q.transpose(1, 2) @ k.permute(0, 2, 3, 1)) * self.scale  # (batch, head, q, k)
        scores = self.hook_attn_scores(scores.masked_fill(~mask, float("-inf")))
        pattern = scores.softmax(dim=-1)
        if self.alpha != 1.0:
            uniform = mask.to(x.dtype) / mask.sum(-1, keepdim=True).to(x.dtype)  # (q, k)
            pattern = self.alpha * pattern + (1.0 - self.alpha) * uniform
        pattern = self.hook_pattern(pattern)
        z = self.hook_z((pattern @ v.transpose(1, 2)).transpose(1, 2))  # (batch, pos, head, d_head)
        return z.flatten(-2) @ self.W_O.flatten(0, 1)  # (batch, pos, d_model)


class MLP(nn.Module):
    """The block's MLP, ``act(x @ W_in + b_in) @ W_out + b_out``."""

    def __init__(self, cfg: TransformerConfig):
        super().__init__()
        self.W_in = nn.Parameter(torch.empty(cfg.d_model, cfg.d_mlp))
        self.b_in = nn.Parameter(torch.zeros(cfg.d_mlp))
        self.W_out = nn.Parameter(torch.empty(cfg.d_mlp, cfg.d_model))
        self.b_out = nn.Parameter(torch.zeros(cfg.d_model))
        self.act: Callable[[Tensor], Tensor] = F.relu if cfg.act == "relu" else F.gelu
        self.hook_pre = HookPoint()  # (batch, pos, d_mlp)
        self.hook_post = HookPoint()  # (batch, pos, d_mlp)

    def forward(self, x: Tensor, hooked: bool = True) -> Tensor:
        pre = torch.addmm(self.b_in, x.reshape(-1, x.shape[-1]), self.W_in).view(*x.shape[:-1], -1)
        if hooked:
            post = self.hook_post(self.act(self.hook_pre(pre)))
        elif self.act is F.relu:
            post = pre.relu_()  # in place: addmm's backward does not need its output
        else:
            post = self.act(pre)
        out = torch.addmm(self.b_out, post.reshape(-1, post.shape[-1]), self.W_out)
        return out.view(*x.shape[:-1], -1)


class TransformerBlock(nn.Module):
    """Attention then MLP, each added to the residual stream (pre-LayerNorm when enabled)."""

    def __init__(self, cfg: TransformerConfig):
        super().__init__()
        # registered in forward order, so hook_dict lists the hooks in the order they fire
        self.hook_resid_pre = HookPoint()  # (batch, pos, d_model)
        self.ln1 = LayerNorm(cfg.d_model) if cfg.layernorm else None
        self.attn = Attention(cfg)
        self.hook_attn_out = HookPoint()
        self.hook_resid_mid = HookPoint()
        self.ln2 = LayerNorm(cfg.d_model) if cfg.layernorm else None
        self.mlp = MLP(cfg)
        self.hook_mlp_out = HookPoint()
        self.hook_resid_post = HookPoint()

    def forward(self, resid: Tensor) -> Tensor:
        resid = self.hook_resid_pre(resid)
        x = self.ln1(resid) if self.ln1 is not None else resid
        resid = self.hook_resid_mid(resid + self.hook_attn_out(self.attn(x)))
        x = self.ln2(resid) if self.ln2 is not None else resid
        return self.hook_resid_post(resid + self.hook_mlp_out(self.mlp(x)))


class PosEmbed(nn.Module):
    """The learned position embedding, ``W_pos (n_ctx, d_model)``."""

    def __init__(self, n_ctx: int, d_model: int):
        super().__init__()
        self.W_pos = nn.Parameter(torch.empty(n_ctx, d_model))


class Transformer(HookedModel):
    """The hooked transformer. ``forward(tokens) -> (batch, pos, n_classes)`` logits."""

    def __init__(self, cfg: TransformerConfig, n_classes: int, seed: int = 0):
        super().__init__()
        self.cfg = cfg
        self.n_classes = n_classes
        self.d_vocab = n_classes + 1  # the n elements and `=`
        self.embed = Embed(self.d_vocab, cfg.d_model)
        self.pos_embed = PosEmbed(N_CTX, cfg.d_model)
        self.hook_embed = HookPoint()  # (batch, pos, d_model)
        self.hook_pos_embed = HookPoint()
        self.blocks = nn.ModuleList([TransformerBlock(cfg) for _ in range(cfg.n_layers)])
        self.ln_final = LayerNorm(cfg.d_model) if cfg.layernorm else None
        self.unembed = Unembed(cfg.d_model, n_classes, cfg.unembed_bias)
        self.neuron_hook = f"blocks.{cfg.n_layers - 1}.mlp.hook_post"
        self.reset_parameters(seed)
        self.setup()

    def block_list(self) -> list[TransformerBlock]:
        """The blocks, in order (``self.blocks`` as the type checker should see it)."""
        return cast("list[TransformerBlock]", list(self.blocks))

    def reset_parameters(self, seed: int) -> None:
        gen = torch.Generator().manual_seed(seed)
        s = self.cfg.init_scale
        std = s / math.sqrt(self.cfg.d_model)
        for name, p in self.named_parameters():  # a fixed order: the same seed, the same model
            if name.endswith(("W_E", "W_pos", "W_Q", "W_K", "W_V", "W_O", "W_in", "W_out")):
                init_normal_(p, std, gen)
            elif name.endswith("W_U"):
                init_normal_(p, s / math.sqrt(self.n_classes), gen)
            elif name.endswith(".w"):
                nn.init.ones_(p)
            else:
                nn.init.zeros_(p)

    def token_embedding(self) -> Tensor:
        """W_E rows of the n elements (the `=` row left out). (n, d_model)"""
        return self.embed.W_E[: self.n_classes]

    def neuron_logit_map(self) -> Tensor:
        """W_L = W_out @ W_U of the last block (the direct path; LayerNorm ignored). (d_mlp, n)"""
        return self.block_list()[-1].mlp.W_out @ self.unembed.W_U

    # -- hooked forward ------------------------------------------------------------------------
    def forward(self, tokens: Tensor) -> Tensor:
        # tokens: (batch, pos) int64
        embed = self.hook_embed(F.embedding(tokens, self.embed.W_E))  # (batch, pos, d_model)
        pos = self.hook_pos_embed(self.pos_embed.W_pos[: tokens.shape[1]].expand_as(embed))
        resid = embed + pos
        for block in self.blocks:
            resid = block(resid)
        if self.ln_final is not None:
            resid = self.ln_final(resid)
        return self.unembed(resid)  # (batch, pos, n_classes)

    # -- fast path -----------------------------------------------------------------------------
    #: above this many entries (d_vocab² · pos · heads) the score table is not worth building
    SCORE_TABLE_MAX = 1 << 22

    def forward_last(self, tokens: Tensor, *, same_query: bool | None = None) -> Tensor:
        """Logits at the last position only, without hooks. (batch, n_classes)

        One layer: the residual stream before the block depends on one token per position, so
        every per-position quantity comes from a table of d_vocab rows, gathered per example with
        ``F.embedding`` (whose backward is a fast, deterministic index-add, unlike advanced
        indexing's scatter): the values ``(pos·d_vocab, head·d_head)``, and the attention scores
        of the last query against every key, ``(d_vocab · pos · d_vocab, head)``. Only the last
        position goes through W_O, the MLP and the unembedding.
        More layers: the first L − 1 blocks run on all positions, the last on the last position.

        ``same_query``: whether every example has the same last token (in training it is always
        ``=``). None (the default) checks it on the data; True or False is taken as given (True on
        tokens whose last columns differ gives wrong logits) and skips that check, whose
        ``bool(...)`` of a tensor cannot run under ``torch.func.vmap`` with batched tokens
        (:mod:`mechgrok.training.vmap` passes True). Only the one-layer path reads it.
        """
        W_E, W_pos = self.embed.W_E, self.pos_embed.W_pos
        batch, n_pos = tokens.shape
        *earlier, last = self.block_list()
        attn = last.attn
        h, e = attn.W_Q.shape[0], attn.W_Q.shape[2]
        if not earlier:
            n_vocab = W_E.shape[0]
            table = W_E.unsqueeze(0) + W_pos[:n_pos].unsqueeze(1)  # (pos, d_vocab, d_model)
            x = last.ln1(table, hooked=False) if last.ln1 is not None else table
            flat = tokens + torch.arange(n_pos, device=tokens.device) * n_vocab  # (batch, pos)
            k_tab = torch.einsum("pvd,hde->pvhe", x, attn.W_K)  # (pos, d_vocab, head, d_head)
            q_tab = torch.einsum("vd,hde->vhe", x[-1], attn.W_Q)  # (d_vocab, head, d_head)
            last_tok = tokens[:, -1]
            if same_query is None:
                same_query = bool((last_tok == last_tok[0]).all())  # always, in training: `=`
            if same_query:
                # one query row: scores from a (pos·d_vocab, head) table, residual broadcast
                q0 = q_tab[last_tok[0]]  # (head, d_head)
                s_tab = torch.einsum("he,pvhe->pvh", q0, k_tab) * attn.scale
                scores = F.embedding(flat, s_tab.reshape(-1, h))  # (batch, pos, head)
            elif n_vocab * n_vocab * n_pos * h <= self.SCORE_TABLE_MAX:
                s_tab = torch.einsum("the,pvhe->tpvh", q_tab, k_tab) * attn.scale
                s_idx = flat + tokens[:, -1:] * (n_pos * n_vocab)
                scores = F.embedding(s_idx, s_tab.reshape(-1, h))  # (batch, pos, head)
            else:
                q = F.embedding(tokens[:, -1], q_tab.reshape(n_vocab, h * e)).view(batch, 1, h, e)
                k = F.embedding(flat, k_tab.reshape(n_pos * n_vocab, h * e)).view(batch, n_pos, h, e)
                scores = (q * k).sum(-1) * attn.scale
            v_tab = torch.einsum("pvd,hde->pvhe", x, attn.W_V).reshape(n_pos * n_vocab, h * e)
            v = F.embedding(flat, v_tab).view(batch, n_pos, h, e)
            if same_query:
                resid_last = table[-1, last_tok[0]].expand(batch, -1)  # (batch, d_model)
            else:
                resid_last = F.embedding(flat[:, -1], table.reshape(n_pos * n_vocab, -1))
        else:
            resid = F.embedding(tokens, W_E) + W_pos[:n_pos]
            for block in earlier:
                resid = block(resid)
            x = last.ln1(resid, hooked=False) if last.ln1 is not None else resid
            q = (x[:, -1] @ attn.W_Q.transpose(0, 1).reshape(-1, h * e)).view(batch, 1, h, e)
            k = (x @ attn.W_K.transpose(0, 1).reshape(-1, h * e)).view(batch, n_pos, h, e)
            v = (x @ attn.W_V.transpose(0, 1).reshape(-1, h * e)).view(batch, n_pos, h, e)
            scores = (q * k).sum(-1) * attn.scale
            resid_last = resid[:, -1]
        pattern = scores.softmax(dim=1)  # (batch, pos, head): the last query, all keys visible
        if attn.alpha != 1.0:
            pattern = attn.alpha * pattern + (1.0 - attn.alpha) / n_pos
        z = (pattern.unsqueeze(-1) * v).sum(1).reshape(batch, h * e)  # (batch, head·d_head)
        resid_last = resid_last + z @ attn.W_O.reshape(h * e, -1)
        mlp_in = last.ln2(resid_last, hooked=False) if last.ln2 is not None else resid_last
        resid_last = resid_last + last.mlp(mlp_in, hooked=False)
        if self.ln_final is not None:
            resid_last = self.ln_final(resid_last, hooked=False)
        return self.unembed(resid_last)
