"""Non-uniform layers: per-layer residual widths, and OpenELM's layer-wise scaling.

Widths. `widths` gives each layer's residual width d_l, as a list or a named shape from
`research.models.layer_schedules` between `taper * n_embd` and `n_embd` (rounded to whole, even-for-RoPE
heads). The embedding, final norm and (tied) unembedding stay at n_embd. Where the width changes
the stream is carried over by a learned projection, x <- P_l x with P_l in R^{d_l x d_(l-1)}
(d_(-1) = n_embd), and after the last layer x <- P_out x back to n_embd. Layer l has n_head heads
of size d_l / n_head and a feed-forward width scaled like its residual width.

Layer-wise scaling (Mehta et al. 2024, OpenELM, section 2.1, eq. 1): at a fixed width, layer l of
N gets alpha_l * n_head heads and a feed-forward width beta_l * d_l, with alpha_l and beta_l
linear from [min, max] given by `head_scale` and `ff_scale` (OpenELM uses alpha in [0.5, 1.0],
beta in [0.5, 4.0]). beta is in units of a GELU network's 4x: beta = 4 gives the model's own
feed-forward width (d_ff, or its default), so `d_ff` still sets the overall size and
`model.match_params` can tune it.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import nn

from research.models.layer_schedules import check_spec, layer_values, linear_ramp
from research.models.variant import VariantConfig, VariantGPT

#: beta that reproduces the model's own feed-forward width (a GELU network's 4 x d)
FF_UNIT = 4.0


@dataclass
class TaperedConfig(VariantConfig):
    arch: str = "tapered"
    widths: list[int] | str | None = None  # residual width per layer, or a shape name; None: n_embd everywhere
    taper: float = 0.5  # named shapes: the smallest width is taper * n_embd, the largest n_embd
    head_scale: list[float] | None = None  # OpenELM [alpha_min, alpha_max]: heads of layer l = alpha_l * n_head
    ff_scale: list[float] | None = None  # OpenELM [beta_min, beta_max]: feed-forward of layer l = beta_l * d_l

    def validate(self) -> None:
        super().validate()
        if self.widths is not None:
            check_spec(self.widths, self.n_layer, "widths")
            if not isinstance(self.widths, str):
                bad = [w for w in self.widths if w % self.head_multiple()]
                if bad:
                    raise ValueError(f"widths {bad} must be multiples of {self.head_multiple()} (whole heads)")
        if not 0.0 < self.taper <= 1.0:
            raise ValueError(f"taper must be in (0, 1], got {self.taper}")
        for name in ("head_scale", "ff_scale"):
            scale = getattr(self, name)
            if scale is not None and (len(scale) != 2 or min(scale) <= 0):
                raise ValueError(f"{name} must be [min, max] with positive values, got {scale}")
        if self.head_scale is not None and self.n_kv_head is not None:
            raise ValueError("head_scale varies the head count per layer; leave n_kv_head unset")

    def layer_widths(self) -> list[int]:
        if self.widths is None:
            return [self.n_embd] * self.n_layer
        return layer_values(self.widths, self.n_layer, self.taper * self.n_embd, self.n_embd, self.head_multiple())


class TaperedGPT(VariantGPT):
    Config = TaperedConfig

    @classmethod
    def tiny_config(cls) -> TaperedConfig:
        return cls.Config(n_layer=3, n_head=2, n_embd=32, block_size=32, widths=[32, 16, 24])

    def layer_width(self, layer: int) -> int:
        return self.cfg.layer_widths()[layer]

    def layer_ff(self, layer: int) -> int:
        ff = super().layer_ff(layer)
        if self.cfg.ff_scale is not None:
            ff = max(1, round(ff * linear_ramp(*self.cfg.ff_scale, self.cfg.n_layer)[layer] / FF_UNIT))
        return ff

    def attention_kwargs(self, layer: int) -> dict:
        kwargs = super().attention_kwargs(layer)
        if self.cfg.head_scale is not None:
            alpha = linear_ramp(*self.cfg.head_scale, self.cfg.n_layer)[layer]
            kwargs["n_head"] = max(1, round(alpha * self.cfg.n_head))
            kwargs["head_dim"] = self.layer_width(layer) // self.cfg.n_head
        return kwargs

    def add_stream_modules(self) -> None:
        super().add_stream_modules()
        widths = self.cfg.layer_widths()
        ins = [self.cfg.n_embd] + widths[:-1]
        self.resize = nn.ModuleList(self._projection(a, b) for a, b in zip(ins, widths))
        self.resize_out = self._projection(widths[-1], self.cfg.n_embd)

    @staticmethod
    def _projection(d_in: int, d_out: int) -> nn.Module:
        return nn.Identity() if d_in == d_out else nn.Linear(d_in, d_out, bias=False)

    def step_input(self, step: int, x: torch.Tensor) -> torch.Tensor:
        return self.resize[step](super().step_input(step, x))

    def stream_out(self, x: torch.Tensor) -> torch.Tensor:
        return self.resize_out(super().stream_out(x))
