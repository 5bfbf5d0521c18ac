"""Learned residual-stream root: the stream starts from a learned vector, not the token embedding.

In a GPT the residual stream at position t starts as the token's embedding, so the stream width
is tied to the embedding width. Here it starts from one learned vector r, the same at every
position, and token information enters only through the first block, whose attention reads the
token embeddings. With d the residual width (`stream_ratio * n_embd`, rounded to whole heads)
and e the embedding width (`n_embd`):

    e_j   = E[x_j] (+ P[j], the position embedding, when pos is learned or sinusoidal)   in R^e
    h_0,t = r                                                                           in R^d
    a_t   = sum_{j <= t} softmax_j(q_t . k_j / sqrt(d_h)) v_j,
            q_t = W_q LN(h_0,t),  k_j = W_k LN_e(e_j),  v_j = W_v LN_e(e_j)    (per head; RoPE on q, k)
    h_1,t = h_0,t + W_o a_t,   then h_1 += MLP(LN(h_1))                                  (block 1)
    h_l   = Block_l(h_(l-1))  for l = 2 .. L                   (ordinary self-attention blocks, width d)
    logits_t = W_U LN_f(P_out h_L,t),   P_out in R^{e x d} (identity when d = e), W_U = E^T if tied

Because every query of the first block is the same vector, position information reaches the
attention scores through the keys (a learned position embedding) or through RoPE's relative
rotation; with `pos: none` the first block can only average the tokens it sees. Attention is
causal (j <= t) and honours a window when composed with `windowed`.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import nn

from research.models.gpt import Block, make_norm
from research.models.layer_schedules import round_to
from research.models.variant import LayerAttention, VariantConfig, VariantGPT


@dataclass
class ResidualRootConfig(VariantConfig):
    arch: str = "residual_root"
    stream_ratio: float = 1.0  # residual width / embedding width (n_embd); rounded to whole heads

    def validate(self) -> None:
        super().validate()
        if self.stream_ratio <= 0:
            raise ValueError(f"stream_ratio must be positive, got {self.stream_ratio}")

    @property
    def d_model(self) -> int:
        return round_to(self.stream_ratio * self.n_embd, self.head_multiple())


class ReadInBlock(Block):
    """The first block: attention whose keys and values come from the token embeddings."""

    def __init__(self, cfg, attention: LayerAttention, mlp: nn.Module, dim: int, memory_dim: int):
        super().__init__(cfg, attention, mlp, dim=dim)
        self.norm_mem = make_norm(cfg.norm, memory_dim, cfg.bias)

    def forward(self, x: torch.Tensor, memory: torch.Tensor) -> torch.Tensor:
        x = x + self.attn(self.norm1(x), self.norm_mem(memory))
        return x + self.mlp(self.norm2(x))


class ResidualRootGPT(VariantGPT):
    Config = ResidualRootConfig

    @classmethod
    def tiny_config(cls) -> ResidualRootConfig:
        return cls.Config(n_layer=2, n_head=2, n_embd=32, block_size=32, stream_ratio=1.5)

    def layer_width(self, layer: int) -> int:
        return self.cfg.d_model

    def make_block(self, layer: int) -> nn.Module:
        if layer > 0:
            return super().make_block(layer)
        attention = LayerAttention(self.cfg, **self.attention_kwargs(0), kv_dim=self.cfg.n_embd)
        return ReadInBlock(self.cfg, attention, self.make_mlp(0), self.cfg.d_model, self.cfg.n_embd)

    def add_stream_modules(self) -> None:
        super().add_stream_modules()
        self.root = nn.Parameter(torch.zeros(self.cfg.d_model))
        d, e = self.cfg.d_model, self.cfg.n_embd
        self.resize_out = nn.Identity() if d == e else nn.Linear(d, e, bias=False)

    def stream_parameters(self) -> list[nn.Parameter]:
        return [*super().stream_parameters(), self.root]

    def run_blocks(self, tokens: torch.Tensor) -> torch.Tensor:
        """`tokens` is the embedding output e; the stream itself starts at the root vector."""
        x = self.root.to(tokens.dtype).expand(tokens.shape[0], tokens.shape[1], -1)
        for step, block in enumerate(self.blocks):
            x = self.step_input(step, x)
            x = block(x, tokens) if step == 0 else block(x)
        return x

    def stream_out(self, x: torch.Tensor) -> torch.Tensor:
        return self.resize_out(super().stream_out(x))

    def lookup_parameters(self) -> list[nn.Parameter]:
        return super().lookup_parameters() + [self.root]
