"""The baseline decoder-only transformer, readable in one sitting.

Pre-norm blocks (attention, then a feed-forward network), each adding into a residual stream that
starts from the token embedding (plus a positional embedding where `pos` asks for one). Choices
that the literature varies are config keys: positional encoding (learned as GPT-2, sinusoidal as
Vaswani et al. 2017, rotary as Su et al. 2021), LayerNorm or RMSNorm, GELU or SwiGLU feed-forward,
grouped-query attention, biases, tied input/output embeddings.

Variants subclass `GPT` and override one piece (`make_block`, `make_attention`, ...); the
training loop never branches on the architecture.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Literal

import torch
import torch.nn.functional as F
from torch import nn

from research.errors import ConfigError
from research.models.base import LanguageModel
from research.models.config import ModelConfig


@dataclass
class GPTConfig(ModelConfig):
    arch: str = "gpt"
    n_layer: int = 4
    n_head: int = 4
    n_kv_head: int | None = None  # grouped-query attention; None = n_head (plain multi-head)
    n_embd: int = 128
    d_ff: int | None = None  # feed-forward width; None = 4 * n_embd (GELU) or 8/3 * n_embd (SwiGLU)
    block_size: int = 128  # the context length (ModelConfig.context_length)
    dropout: float = 0.0
    pos: Literal["learned", "sinusoidal", "rope", "none"] = "learned"
    norm: Literal["layernorm", "rmsnorm"] = "layernorm"
    mlp: Literal["gelu", "swiglu"] = "gelu"
    bias: bool = False
    tie_embeddings: bool = True
    rope_base: float = 10000.0

    @property
    def context_length(self) -> int:
        return self.block_size

    def head_multiple(self) -> int:
        """Widths are multiples of this, so every layer splits into whole (even, for RoPE) heads;
        `research.sizing` steps the width by it too."""
        return self.n_head * (2 if self.pos == "rope" else 1)

    def validate(self) -> None:
        kv = self.n_kv_head or self.n_head
        if self.n_embd % self.n_head:
            raise ValueError(f"n_embd ({self.n_embd}) must be divisible by n_head ({self.n_head})")
        if self.n_head % kv:
            raise ValueError(f"n_head ({self.n_head}) must be divisible by n_kv_head ({kv})")
        if self.pos == "rope" and (self.n_embd // self.n_head) % 2:
            raise ValueError("rope needs an even head size (n_embd / n_head)")
        for name in ("n_layer", "n_head", "n_embd", "block_size"):
            if getattr(self, name) < 1:
                raise ValueError(f"{name} must be at least 1")
        if not 0.0 <= self.dropout < 1.0:
            raise ValueError("dropout must be in [0, 1)")

    @property
    def ff_width(self) -> int:
        if self.d_ff is not None:
            return self.d_ff
        if self.mlp == "swiglu":  # keeps the parameter count of a 4x GELU MLP (Shazeer 2020)
            return 64 * math.ceil(8 * self.n_embd / 3 / 64)
        return 4 * self.n_embd


class RMSNorm(nn.Module):
    def __init__(self, dim: int, eps: float = 1e-6):
        super().__init__()
        self.eps = eps
        self.weight = nn.Parameter(torch.ones(dim))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return F.rms_norm(x, (x.shape[-1],), self.weight, self.eps)


def make_norm(kind: str, dim: int, bias: bool) -> nn.Module:
    return RMSNorm(dim) if kind == "rmsnorm" else nn.LayerNorm(dim, bias=bias)


def sinusoidal_table(n_pos: int, dim: int) -> torch.Tensor:
    """Vaswani et al. (2017), section 3.5: sin on even, cos on odd channels."""
    pos = torch.arange(n_pos, dtype=torch.float32)[:, None]
    inv = torch.exp(torch.arange(0, dim, 2, dtype=torch.float32) * (-math.log(10000.0) / dim))
    table = torch.zeros(n_pos, dim)
    table[:, 0::2] = torch.sin(pos * inv)
    table[:, 1::2] = torch.cos(pos * inv)[:, : dim // 2]
    return table


class Rotary(nn.Module):
    """Rotary position embedding (Su et al. 2021), rotating channel pairs (i, i + d/2)."""

    def __init__(self, head_dim: int, max_len: int, base: float):
        super().__init__()
        inv = 1.0 / base ** (torch.arange(0, head_dim, 2, dtype=torch.float32) / head_dim)
        self.register_buffer("inv", inv, persistent=False)
        self.register_buffer("cos", torch.empty(0), persistent=False)
        self.register_buffer("sin", torch.empty(0), persistent=False)
        self.extend(max_len)

    def extend(self, max_len: int) -> None:
        """Angles for positions 0..max_len-1 (rotations are defined at every position)."""
        angles = torch.outer(torch.arange(max_len, dtype=torch.float32, device=self.inv.device), self.inv)  # (T, hd/2)
        self.cos, self.sin = angles.cos(), angles.sin()

    def forward(self, x: torch.Tensor, pos: torch.Tensor | None = None) -> torch.Tensor:  # x: (B, H, T, hd)
        """Rotate x at positions 0..T-1, or at `pos` (B, T) (a continuation after a cached prefix)."""
        if pos is None:
            T = x.shape[-2]
            cos, sin = self.cos[:T].to(x.dtype), self.sin[:T].to(x.dtype)
        else:
            cos, sin = self.cos[pos][:, None].to(x.dtype), self.sin[pos][:, None].to(x.dtype)
        x1, x2 = x.chunk(2, dim=-1)
        return torch.cat([x1 * cos - x2 * sin, x1 * sin + x2 * cos], dim=-1)


class CausalSelfAttention(nn.Module):
    """Causal self-attention over the residual stream: `cfg.n_head` query heads, grouped-query with
    `cfg.n_kv_head` key/value heads, rotary positions when `cfg.pos` asks for them.

    Queries and keys/values are separate projections. A variant's attention subclasses this one,
    building its own sizes through `build` (research.models.variant.LayerAttention) and overriding
    `split_heads`, `attend` or `forward`.
    """

    def __init__(self, cfg: GPTConfig):
        super().__init__()
        self.build(cfg, dim=cfg.n_embd, n_head=cfg.n_head, n_kv_head=cfg.n_kv_head or cfg.n_head,
                   head_dim=cfg.n_embd // cfg.n_head, kv_dim=cfg.n_embd)

    def build(self, cfg: GPTConfig, dim: int, n_head: int, n_kv_head: int, head_dim: int, kv_dim: int) -> None:
        """`n_head` query heads of `head_dim` channels reading a stream of width `dim`, and `n_kv_head`
        key/value heads reading a stream of width `kv_dim`; the output adds back into width `dim`."""
        self.n_head, self.n_kv_head, self.head_dim = n_head, n_kv_head, head_dim
        self.inner = n_head * head_dim
        self.q = nn.Linear(dim, self.inner, bias=cfg.bias)
        self.kv = nn.Linear(kv_dim, 2 * n_kv_head * head_dim, bias=cfg.bias)
        self.proj = nn.Linear(self.inner, dim, bias=cfg.bias)  # adds to the residual stream
        self.dropout = cfg.dropout
        self.resid_drop = nn.Dropout(cfg.dropout)
        self.rotary = Rotary(head_dim, cfg.block_size, cfg.rope_base) if cfg.pos == "rope" else None
        self.register_load_state_dict_pre_hook(_split_fused_qkv)

    def split_heads(self, x: torch.Tensor, source: torch.Tensor, pos: torch.Tensor | None = None
                    ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """Queries from x (B, T, dim), keys and values from `source` (B, T, kv_dim; x itself for
        self-attention), rotated at positions 0..T-1 or at `pos` (B, T)."""
        B, T, _ = x.shape
        q = self.q(x).view(B, T, self.n_head, self.head_dim).transpose(1, 2)  # (B, H, T, hd)
        kv = self.kv(source).view(B, T, 2 * self.n_kv_head, self.head_dim).transpose(1, 2)  # (B, 2Hkv, T, hd)
        k, v = kv.chunk(2, dim=1)
        if self.rotary is not None:
            q, k = self.rotary(q, pos), self.rotary(k, pos)
        return q, k, v

    def attend(self, q: torch.Tensor, k: torch.Tensor, v: torch.Tensor) -> torch.Tensor:
        """Causal attention (B, H, T, hd); `research.attention` wraps it to record the weights."""
        return F.scaled_dot_product_attention(q, k, v, is_causal=True, dropout_p=self.dropout if self.training else 0.0,
                                              enable_gqa=self.n_kv_head != self.n_head)

    def visible(self, T: int, device) -> torch.Tensor:
        """(T, T) bool, True where query i may attend to key j (here j <= i): the mask `attend` applies."""
        return torch.ones(T, T, dtype=torch.bool, device=device).tril()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        B, T, _ = x.shape
        y = self.attend(*self.split_heads(x, x))  # (B, H, T, hd)
        return self.resid_drop(self.proj(y.transpose(1, 2).reshape(B, T, self.inner)))

    def cached(self, x: torch.Tensor, pos: torch.Tensor, mask: torch.Tensor,
               past: tuple[torch.Tensor, torch.Tensor] | None = None
               ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """Inference attention of x (B, T, C) at positions `pos` (B, T) over the `past` keys and
        values (B, Hkv, P, hd) followed by x's own; `mask` (B, 1, T, P + T) is True where a key is
        visible. Returns the output and x's own keys and values (what a cache keeps)."""
        B, T, _ = x.shape
        q, k, v = self.split_heads(x, x, pos=pos)
        k_all, v_all = (k, v) if past is None else (torch.cat([past[0], k], 2), torch.cat([past[1], v], 2))
        y = F.scaled_dot_product_attention(q, k_all, v_all, attn_mask=mask, enable_gqa=self.n_kv_head != self.n_head)
        return self.proj(y.transpose(1, 2).reshape(B, T, self.inner)), k, v


@dataclass
class KVCache:
    """Per layer, the keys and values (G, Hkv, P, hd) of G right-padded prefixes of `lengths` tokens."""

    keys: list[torch.Tensor]
    values: list[torch.Tensor]
    lengths: torch.Tensor  # (G,)


def _split_fused_qkv(module, state_dict, prefix, *args) -> None:
    """Weights saved when GPT's attention had one fused `qkv` projection (rows: q, then k, then v)
    load into the separate `q` and `kv` projections, so earlier cells' model.pt still load."""
    for kind in ("weight", "bias"):
        fused = state_dict.pop(f"{prefix}qkv.{kind}", None)
        if fused is not None:
            state_dict[f"{prefix}q.{kind}"], state_dict[f"{prefix}kv.{kind}"] = fused.split(
                [module.inner, fused.shape[0] - module.inner])


class MLP(nn.Module):
    def __init__(self, cfg: GPTConfig, dim: int | None = None, hidden: int | None = None):
        super().__init__()
        dim = dim or cfg.n_embd
        hidden = hidden or cfg.ff_width
        self.swiglu = cfg.mlp == "swiglu"
        self.up = nn.Linear(dim, 2 * hidden if self.swiglu else hidden, bias=cfg.bias)
        self.down = nn.Linear(hidden, dim, bias=cfg.bias)  # adds to the residual stream
        self.drop = nn.Dropout(cfg.dropout)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = self.up(x)
        if self.swiglu:
            gate, val = h.chunk(2, dim=-1)
            h = F.silu(gate) * val
        else:
            h = F.gelu(h)
        return self.drop(self.down(h))


class Block(nn.Module):
    """Pre-norm: x + attn(norm(x)), then x + mlp(norm(x))."""

    def __init__(self, cfg: GPTConfig, attention: nn.Module, mlp: nn.Module, dim: int | None = None):
        super().__init__()
        dim = dim or cfg.n_embd
        self.norm1 = make_norm(cfg.norm, dim, cfg.bias)
        self.attn = attention
        self.norm2 = make_norm(cfg.norm, dim, cfg.bias)
        self.mlp = mlp

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = x + self.attn(self.norm1(x))
        return x + self.mlp(self.norm2(x))


class GPT(LanguageModel):
    Config = GPTConfig
    has_attention_maps = True

    def __init__(self, cfg: GPTConfig, vocab_size: int):
        super().__init__()
        self.cfg = cfg
        self.vocab_size = vocab_size
        self.block_size = cfg.block_size
        self.tok_emb = nn.Embedding(vocab_size, cfg.n_embd)
        self.pos_emb = nn.Embedding(cfg.block_size, cfg.n_embd) if cfg.pos == "learned" else None
        if cfg.pos == "sinusoidal":
            self.register_buffer("pos_table", sinusoidal_table(cfg.block_size, cfg.n_embd), persistent=False)
        self.drop = nn.Dropout(cfg.dropout)
        self.blocks = nn.ModuleList(self.make_block(i) for i in range(cfg.n_layer))
        self.norm_f = make_norm(cfg.norm, cfg.n_embd, cfg.bias)
        self.lm_head = nn.Linear(cfg.n_embd, vocab_size, bias=False)
        if cfg.tie_embeddings:
            self.lm_head.weight = self.tok_emb.weight
        self.init_weights_()

    @classmethod
    def tiny_config(cls) -> GPTConfig:
        return cls.Config(n_layer=2, n_head=2, n_embd=32, block_size=32)

    # -- pieces a variant may override ---------------------------------------------------------
    def make_attention(self, layer: int) -> nn.Module:
        return CausalSelfAttention(self.cfg)

    def make_mlp(self, layer: int) -> nn.Module:
        return MLP(self.cfg)

    def make_block(self, layer: int) -> nn.Module:
        return Block(self.cfg, self.make_attention(layer), self.make_mlp(layer))

    def embed(self, idx: torch.Tensor) -> torch.Tensor:
        T = idx.shape[1]
        x = self.tok_emb(idx)  # (B, T, C)
        if self.pos_emb is not None:
            x = x + self.pos_emb(torch.arange(T, device=idx.device))
        elif self.cfg.pos == "sinusoidal":
            x = x + self.pos_table[:T].to(x.dtype)
        return self.drop(x)

    def extend_context(self, length: int) -> None:
        """Accept sequences up to `length` tokens (beyond the training block_size), for evaluating
        length generalisation. Rotary and sinusoidal positions, and no positions, are defined at
        every position; a learned position table has no rows beyond block_size, so it is refused."""
        if length <= self.block_size:
            return
        if self.cfg.pos == "learned":
            raise ConfigError(f"model.pos: learned absolute positions stop at block_size {self.block_size}, so the "
                              f"model cannot be evaluated at {length} tokens; use pos rope, sinusoidal or none, or a "
                              f"length <= {self.block_size}")
        for module in self.modules():
            if isinstance(module, Rotary):
                module.extend(length)
        if self.cfg.pos == "sinusoidal":
            self.pos_table = sinusoidal_table(length, self.cfg.n_embd).to(self.pos_table.device)
        self.block_size = length

    # -------------------------------------------------------------------------------------------
    def forward(self, idx: torch.Tensor) -> torch.Tensor:
        if idx.shape[1] > self.block_size:
            raise ValueError(f"sequence of {idx.shape[1]} tokens exceeds block_size {self.block_size}")
        x = self.embed(idx)
        for block in self.blocks:
            x = block(x)
        return self.lm_head(self.norm_f(x))  # (B, T, V)

    def residual_projections(self) -> list[nn.Linear]:
        """The layers whose output is added to the residual stream: each attention's output
        projection and each MLP's down projection (GPT-2 scales their initialisation)."""
        return [m.proj for m in self.modules() if isinstance(m, CausalSelfAttention)] + \
            [m.down for m in self.modules() if isinstance(m, MLP)]

    # -- prefix cache for scoring many continuations of one context ------------------------------
    def plain_layers(self) -> bool:
        """Whether this model's forward is GPT's own over plain pre-norm blocks with the baseline's
        attention: the cached path below re-implements exactly that computation, so a variant that
        changes the forward, the blocks, the embedding or the attention keeps the uncached path (the
        base class's default) instead of silently computing something else."""
        return (type(self).forward is GPT.forward and type(self).embed is GPT.embed
                and all(type(b) is Block and type(b.attn) is CausalSelfAttention for b in self.blocks))

    def read_prefix(self, idx: torch.Tensor, lengths: torch.Tensor) -> KVCache | None:
        if not self.plain_layers():
            return None
        G, T = idx.shape
        pos = torch.arange(T, device=idx.device).expand(G, T)
        causal = torch.ones(T, T, dtype=torch.bool, device=idx.device).tril()
        _, keys, values = self.cached_blocks(idx, pos, causal, None)
        return KVCache(keys, values, lengths.to(idx.device))

    def read_after(self, cache: KVCache, rows: torch.Tensor, idx: torch.Tensor,
                   offsets: torch.Tensor | None = None) -> torch.Tensor:
        N, T = idx.shape
        P = cache.keys[0].shape[2]
        if offsets is None:
            offsets = torch.arange(T, device=idx.device).expand(N, T)
        start = cache.lengths[rows]  # (N,) each row's first position
        # a row's padding (offset -1) is never read, so any valid position will do
        pos = (start[:, None] + offsets).clamp(0, self.block_size - 1)
        seen = torch.arange(P, device=idx.device)[None, :] < start[:, None]  # its own prefix, not the padding
        segment = torch.cumsum(offsets == 0, dim=1)  # which continuation of the row each token is in
        causal = torch.ones(T, T, dtype=torch.bool, device=idx.device).tril()
        own = (segment[:, :, None] == segment[:, None, :]) & causal
        mask = torch.cat([seen[:, None, :].expand(N, T, P), own], dim=-1)[:, None]
        past = [(k[rows], v[rows]) for k, v in zip(cache.keys, cache.values)]
        x, _, _ = self.cached_blocks(idx, pos, mask, past)
        return x

    def cached_blocks(self, idx: torch.Tensor, pos: torch.Tensor, mask: torch.Tensor, past
                      ) -> tuple[torch.Tensor, list[torch.Tensor], list[torch.Tensor]]:
        """`forward` up to `lm_head` at explicit positions over cached keys (inference only:
        no dropout), returning the final hidden states and each layer's new keys and values."""
        x = self.tok_emb(idx)
        if self.pos_emb is not None:
            x = x + self.pos_emb(pos)
        elif self.cfg.pos == "sinusoidal":
            x = x + self.pos_table[pos].to(x.dtype)
        keys, values = [], []
        for i, block in enumerate(self.blocks):
            y, k, v = block.attn.cached(block.norm1(x), pos, mask, None if past is None else past[i])
            x = x + y
            x = x + block.mlp(block.norm2(x))
            keys.append(k)
            values.append(v)
        return self.norm_f(x), keys, values

    @torch.no_grad()
    def init_weights_(self) -> None:
        """GPT-2 init: N(0, 0.02), residual output projections scaled by 1/sqrt(2 * n_layer)."""
        resid_std = 0.02 / math.sqrt(2 * self.cfg.n_layer)
        residual = {id(m) for m in self.residual_projections()}
        for module in self.modules():
            if isinstance(module, nn.Linear):
                std = resid_std if id(module) in residual else 0.02
                nn.init.normal_(module.weight, mean=0.0, std=std)
                if module.bias is not None:
                    nn.init.zeros_(module.bias)
            elif isinstance(module, nn.Embedding):
                nn.init.normal_(module.weight, mean=0.0, std=0.02)

    def embedding_parameters(self) -> list[nn.Parameter]:
        params = [self.tok_emb.weight, self.lm_head.weight]
        if self.pos_emb is not None:
            params.append(self.pos_emb.weight)
        return params

    def flops_per_token(self, seq_len: int) -> float:
        """6N + 12 L d T (Kaplan et al. 2020 / PaLM appendix B, as nanoGPT's MFU estimate).

        N counts every matmul weight, the unembedding included, but not lookups (position
        embeddings, an untied input embedding). The second term is attention over T tokens.
        """
        n = self.num_params()
        if self.pos_emb is not None:
            n -= self.pos_emb.weight.numel()
        if not self.cfg.tie_embeddings:
            n -= self.tok_emb.weight.numel()
        return 6.0 * n + 12.0 * self.cfg.n_layer * self.cfg.n_embd * seq_len
