"""The original transformer (Vaswani et al. 2017) as a decoder-only language model.

What differs from the pre-norm baseline `GPT`:
- post-norm blocks: x = LayerNorm(x + Dropout(Attention(x))), then x = LayerNorm(x + Dropout(FFN(x)))
  (section 3.1, "LayerNorm(x + Sublayer(x))"), and so no final norm before `lm_head`;
- fixed sinusoidal positions (section 3.5) added to token embeddings scaled by sqrt(d_model)
  (section 3.4);
- biases in every linear layer and LayerNorm, dropout 0.1 (section 5.4, P_drop = 0.1).
The feed-forward network uses GELU rather than the paper's ReLU (the MLP shared with GPT). Post-norm
needs a learning-rate warm-up to train stably (Xiong et al. 2020), so keep `train.warmup_steps`.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Literal

import torch
from torch import nn

from research.models.gpt import GPT, Block, CausalSelfAttention, GPTConfig


@dataclass
class TransformerConfig(GPTConfig):
    arch: str = "transformer"
    pos: Literal["learned", "sinusoidal", "rope", "none"] = "sinusoidal"
    dropout: float = 0.1
    bias: bool = True


class PostNormBlock(Block):
    """x = norm1(x + attn(x)); x = norm2(x + mlp(x)). Dropout is inside attn and mlp (residual dropout)."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.norm1(x + self.attn(x))
        return self.norm2(x + self.mlp(x))


class Transformer(GPT):
    Config = TransformerConfig

    def __init__(self, cfg: TransformerConfig, vocab_size: int):
        super().__init__(cfg, vocab_size)
        self.norm_f = nn.Identity()  # every block already ends in a LayerNorm

    @torch.no_grad()
    def init_weights_(self) -> None:
        """Vaswani et al.'s initialisation (tensor2tensor, fairseq): linear weights Xavier-uniform (Q, K
        and V each as its own projection), biases zero, embeddings N(0, 1/d_model), so that the token
        embedding times sqrt(d_model) has unit scale, as the sinusoidal positions it is added to.
        GPT-2's N(0, 0.02) would leave tokens at 0.02 * sqrt(d_model) against positions of amplitude 1."""
        for module in self.modules():
            if isinstance(module, nn.Linear):
                nn.init.xavier_uniform_(module.weight)
                if module.bias is not None:
                    nn.init.zeros_(module.bias)
            elif isinstance(module, nn.Embedding):
                nn.init.normal_(module.weight, mean=0.0, std=self.cfg.n_embd ** -0.5)
        for module in self.modules():  # K and V are two projections, each Xavier over its own fan-out
            if isinstance(module, CausalSelfAttention):
                for half in module.kv.weight.chunk(2, dim=0):
                    nn.init.xavier_uniform_(half)

    def make_block(self, layer: int) -> nn.Module:
        return PostNormBlock(self.cfg, self.make_attention(layer), self.make_mlp(layer))

    def embed(self, idx: torch.Tensor) -> torch.Tensor:
        T = idx.shape[1]
        x = self.tok_emb(idx) * math.sqrt(self.cfg.n_embd)
        if self.pos_emb is not None:
            x = x + self.pos_emb(torch.arange(T, device=idx.device))
        elif self.cfg.pos == "sinusoidal":
            x = x + self.pos_table[:T].to(x.dtype)
        return self.drop(x)
