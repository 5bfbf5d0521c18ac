"""The modern GPT of llama2.c (Karpathy 2023, after Touvron et al. 2023): `GPT` with other defaults.

Pre-norm RMSNorm, rotary positions, SwiGLU feed-forward, no biases, tied input/output embeddings
and optional grouped-query attention (`n_kv_head`). The feed-forward width follows llama2.c's
rule: int(2/3 * 4 * n_embd) rounded up to a multiple of `multiple_of` (llama2.c's train.py uses
32). Two harmless differences from llama2.c: RoPE rotates channel pairs (i, i + d/2) rather than
adjacent pairs (a fixed permutation of the learned q/k channels), and RMSNorm's epsilon is 1e-6
rather than 1e-5.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

from research.models.gpt import GPT, GPTConfig


@dataclass
class LlamaConfig(GPTConfig):
    arch: str = "llama"
    pos: Literal["learned", "sinusoidal", "rope", "none"] = "rope"
    norm: Literal["layernorm", "rmsnorm"] = "rmsnorm"
    mlp: Literal["gelu", "swiglu"] = "swiglu"
    bias: bool = False
    tie_embeddings: bool = True
    multiple_of: int = 32  # SwiGLU width rounding (llama2.c ModelArgs.multiple_of as set in its train.py)

    def validate(self) -> None:
        super().validate()
        if self.multiple_of < 1:
            raise ValueError("multiple_of must be at least 1")

    @property
    def ff_width(self) -> int:
        if self.d_ff is not None or self.mlp != "swiglu":
            return super().ff_width
        hidden = int(2 * 4 * self.n_embd / 3)
        return self.multiple_of * ((hidden + self.multiple_of - 1) // self.multiple_of)


class Llama(GPT):
    Config = LlamaConfig
