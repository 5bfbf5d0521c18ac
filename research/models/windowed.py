"""Per-layer attention windows: position i in layer l attends exactly to positions i-w_l+1 .. i.

Local attention layers interleaved with wider ones (Beltagy et al. 2020, Longformer; Gemma 2's
local/global alternation, Gemma Team 2024) trade context for compute: a layer with window w costs
min(T, w) instead of T per query. Stacked, the last layer can still see 1 + sum_l (w_l - 1)
positions back (the receptive field, reported by `receptive_field()`).

`windows` is a list (one window per block, in tokens; a window >= block_size is plain causal) or a named shape from
`research.models.layer_schedules` interpolated between `window_min` and `window_max` (default block_size).
The attention kernel path (FlexAttention on GPU, a cached band mask on CPU) lives in
`research.models.window_attention`.
"""

from __future__ import annotations

from dataclasses import dataclass

from research.models.layer_schedules import check_spec, layer_values
from research.models.variant import VariantConfig, VariantGPT


@dataclass
class WindowedConfig(VariantConfig):
    arch: str = "windowed"
    windows: list[int] | str = "small-large-small"
    window_min: int = 16  # smallest window of a named shape, in tokens
    window_max: int | None = None  # largest window of a named shape; None = block_size

    def validate(self) -> None:
        super().validate()
        check_spec(self.windows, self.unique_layers(), "windows")
        if self.window_min < 1:
            raise ValueError("window_min must be at least 1")
        if self.window_max is not None and self.window_max < self.window_min:
            raise ValueError(f"window_max ({self.window_max}) must be at least window_min ({self.window_min})")

    def layer_windows(self) -> list[int]:
        hi = self.window_max or self.block_size
        return layer_values(self.windows, self.unique_layers(), self.window_min, hi)


class WindowedGPT(VariantGPT):
    Config = WindowedConfig

    @classmethod
    def tiny_config(cls) -> WindowedConfig:
        return cls.Config(n_layer=3, n_head=2, n_embd=32, block_size=32, windows=[4, 32, 8])

    def attention_kwargs(self, layer: int) -> dict:
        window = self.cfg.layer_windows()[layer]
        return {**super().attention_kwargs(layer), "window": None if window >= self.cfg.block_size else window}
