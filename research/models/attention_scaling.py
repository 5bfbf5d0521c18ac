"""How attention scales with n_t, the number of positions query t sees (`model.attn_scaling`).

Softmax weights over the n_t visible positions sum to 1, whatever n_t is, so a head's output is
an average that flattens as the context grows ("attention fading", Nakanishi 2025). Two ways to
make attention depend on n_t, each one class here and one line in `SCALINGS`:

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
"""

from __future__ import annotations

import math

import torch
from torch import nn

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


def make_scaling(cfg, n_head: int) -> nn.Module | None:
    """The layer's scaling module, or None for standard softmax (sum_power with p = 0, fixed), so
    the baseline keeps its state dict, its parameter count and its kernel call untouched."""
    kind = getattr(cfg, "attn_scaling", "sum_power")
    if kind == "sum_power" and cfg.attn_sum_power == 0.0 and not cfg.attn_sum_power_learned:
        return None
    return SCALINGS.get(kind, key="model.attn_scaling")(cfg, n_head)
