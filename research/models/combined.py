"""Variants composed: each class below is its parents' hooks chained through `super()`.

Per-layer windows combine with every other variant because a window is a property of one
attention module:

- `shared_windowed`: windows are given per distinct block (`n_unique` entries), so a cycled pair
  [local, global] repeats the pattern to depth n_layer (Gemma 2's alternation with shared weights);
- `tapered_windowed`: per-layer widths and per-layer windows;
- `residual_root_windowed`: the read-in block honours the first window as well;
- `attention_scaling_windowed`: n_t-dependent attention in windowed layers, where n_t is capped
  at the layer's window.
"""

from __future__ import annotations

from dataclasses import dataclass

from torch import nn

from research.models.attention_scaling import AttentionScalingConfig, ScaledAttention
from research.models.residual_root import ResidualRootConfig, ResidualRootGPT
from research.models.tapered import TaperedConfig, TaperedGPT
from research.models.weight_sharing import SharedConfig, SharedGPT
from research.models.windowed import WindowedConfig, WindowedGPT


@dataclass
class SharedWindowedConfig(WindowedConfig, SharedConfig):
    arch: str = "shared_windowed"


class SharedWindowedGPT(WindowedGPT, SharedGPT):
    Config = SharedWindowedConfig

    @classmethod
    def tiny_config(cls) -> SharedWindowedConfig:
        return cls.Config(n_layer=4, n_head=2, n_embd=32, block_size=32, sharing="cycle", n_unique=2, windows=[4, 32])


@dataclass
class TaperedWindowedConfig(WindowedConfig, TaperedConfig):
    arch: str = "tapered_windowed"


class TaperedWindowedGPT(WindowedGPT, TaperedGPT):
    Config = TaperedWindowedConfig

    @classmethod
    def tiny_config(cls) -> TaperedWindowedConfig:
        return cls.Config(n_layer=3, n_head=2, n_embd=32, block_size=32, widths=[32, 16, 24], windows=[4, 32, 8])


@dataclass
class ResidualRootWindowedConfig(WindowedConfig, ResidualRootConfig):
    arch: str = "residual_root_windowed"


class ResidualRootWindowedGPT(WindowedGPT, ResidualRootGPT):
    Config = ResidualRootWindowedConfig

    @classmethod
    def tiny_config(cls) -> ResidualRootWindowedConfig:
        return cls.Config(n_layer=3, n_head=2, n_embd=32, block_size=32, stream_ratio=1.5, windows=[4, 32, 8])


@dataclass
class AttentionScalingWindowedConfig(WindowedConfig, AttentionScalingConfig):
    arch: str = "attention_scaling_windowed"


class AttentionScalingWindowedGPT(WindowedGPT):
    Config = AttentionScalingWindowedConfig

    @classmethod
    def tiny_config(cls) -> AttentionScalingWindowedConfig:
        return cls.Config(n_layer=3, n_head=2, n_embd=32, block_size=32, windows=[4, 32, 8], attn_sum_power=1.0)

    def make_attention(self, layer: int) -> nn.Module:
        return ScaledAttention(self.cfg, **self.attention_kwargs(layer))
