"""Attention that depends on n_t, the number of positions query t sees (`model.arch: attention_scaling`).

Softmax weights over the n_t visible positions sum to 1, whatever n_t is, so a head's output is
an average that flattens as the context grows ("attention fading", Nakanishi 2025). Two ways to
make attention depend on n_t, each one class here and one line in `SCALINGS`, chosen by
`model.attn_scaling` (default `sum_power`):

- `sum_power` (the reading group's idea): the weights sum to n_t ** p instead of 1,
  out_t = n_t ** p * sum_j softmax(q_t . k_j / sqrt(d))_j v_j, with p = `model.attn_sum_power`
  (0 is standard softmax, 1 a sum rather than an average), or one learned p per head initialised
  there (`model.attn_sum_power_learned`). The factor multiplies the attention output, so it
  needs no change to the kernel.
- `log_n` (Scalable-Softmax, Nakanishi 2025; the fixed log n factor of Chiang & Cholak 2022):
  the logits are multiplied by s_h * log(n_t), one learned s_h per head, so the softmax can stay
  as peaked at long contexts as at short ones. Implemented as a scaling of each query row, as
  the paper does, so it too leaves the kernel alone. s_h starts at 1 / log(block_size): standard
  softmax at the training length, sharper beyond it.

n_t is the count of keys query t may attend to: t + 1 for causal attention, min(t + 1, w) for
a layer with window w. Both scalings act on the queries before, and the output after, whatever
kernel `research.models.window_attention` picks (flash SDPA, FlexAttention, or SDPA with a band
mask on CPU), so every path computes the same function.

The variant is the baseline GPT with its attention replaced by `ScaledAttention`; with per-layer
windows it is `attention_scaling_windowed` (research.models.combined). Everything else, the
state dict included, is the baseline's: the learned p or s_h sit at `blocks.<i>.attn.scaling`.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
from torch import nn

from research.checks import ranged
from research.models.gpt import GPT, GPTConfig
from research.models.variant import LayerAttention
from research.registry import Registry


def visible_counts(T: int, window: int | None, device, dtype=torch.float32) -> torch.Tensor:
    """(T,) n_t = number of keys query t sees: t + 1, capped at the window."""
    n = torch.arange(1, T + 1, device=device, dtype=dtype)
    return n if window is None else n.clamp(max=window)


class SumPower(nn.Module):
    """Weights that sum to n_t ** p: the attention output multiplied by n_t ** p, per head."""

    def __init__(self, cfg, n_head: int):
        super().__init__()
        p = float(cfg.attn_sum_power)
        if cfg.attn_sum_power_learned:
            self.power = nn.Parameter(torch.full((n_head,), p))
        else:
            self.register_buffer("power", torch.full((n_head,), p), persistent=False)

    def queries(self, q: torch.Tensor, window: int | None) -> torch.Tensor:
        return q

    def output(self, y: torch.Tensor, window: int | None) -> torch.Tensor:  # y: (B, H, T, hd)
        log_n = visible_counts(y.shape[-2], window, y.device).log()  # (T,)
        factor = torch.exp(self.power.float()[:, None] * log_n[None, :])  # (H, T)
        return y * factor[None, :, :, None].to(y.dtype)


class LogNLogits(nn.Module):
    """Scalable-Softmax: logits times s_h * log(n_t), applied to the queries."""

    def __init__(self, cfg, n_head: int):
        super().__init__()
        self.scale = nn.Parameter(torch.full((n_head,), 1.0 / math.log(max(cfg.block_size, 2))))

    def queries(self, q: torch.Tensor, window: int | None) -> torch.Tensor:  # q: (B, H, T, hd)
        log_n = visible_counts(q.shape[-2], window, q.device).log()  # (T,); 0 at t = 0, one key anyway
        factor = self.scale.float()[:, None] * log_n[None, :]  # (H, T)
        return q * factor[None, :, :, None].to(q.dtype)

    def output(self, y: torch.Tensor, window: int | None) -> torch.Tensor:
        return y


SCALINGS = Registry("attention scaling", {
    "sum_power": "research.models.attention_scaling:SumPower",
    "log_n": "research.models.attention_scaling:LogNLogits",
})


@dataclass
class AttentionScalingConfig(GPTConfig):
    arch: str = "attention_scaling"
    # how attention depends on the visible count n_t: sum_power | log_n
    attn_scaling: str = ranged("sum_power", choices=lambda: SCALINGS.names(), kind="attention scaling")
    # sum_power: the weights over the n_t visible positions sum to n_t ** p (0: standard softmax)
    attn_sum_power: float = ranged(0.0, ge=-1.0, le=1.0)
    attn_sum_power_learned: bool = False  # sum_power: one learned p per head, initialised at attn_sum_power

    def validate(self) -> None:
        super().validate()
        if self.attn_scaling != "sum_power" and (self.attn_sum_power != 0.0 or self.attn_sum_power_learned):
            raise ValueError(f"attn_sum_power: applies to attn_scaling sum_power, not '{self.attn_scaling}'; "
                             "remove attn_sum_power and attn_sum_power_learned")


class ScaledAttention(LayerAttention):
    """A layer's attention with its queries and its output scaled by the layer's `scaling` module."""

    def __init__(self, cfg: AttentionScalingConfig, dim: int, **layer):
        super().__init__(cfg, dim, **layer)
        self.scaling = SCALINGS.get(cfg.attn_scaling, key="model.attn_scaling")(cfg, self.n_head)

    def split_heads(self, x: torch.Tensor, source: torch.Tensor, pos: torch.Tensor | None = None
                    ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        q, k, v = super().split_heads(x, source, pos)
        return self.scaling.queries(q, self.window), k, v

    def attend(self, q: torch.Tensor, k: torch.Tensor, v: torch.Tensor) -> torch.Tensor:
        return self.scaling.output(super().attend(q, k, v), self.window)


class AttentionScalingGPT(GPT):
    Config = AttentionScalingConfig

    @classmethod
    def tiny_config(cls) -> AttentionScalingConfig:
        return cls.Config(n_layer=2, n_head=2, n_embd=32, block_size=32, attn_sum_power=0.5)

    def make_attention(self, layer: int) -> nn.Module:
        return ScaledAttention(self.cfg, self.cfg.n_embd)
