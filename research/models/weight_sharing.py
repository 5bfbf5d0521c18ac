"""Shared and recursive weights: n_layer applied layers built from fewer distinct blocks.

`n_layer` is the depth (blocks applied per token); `n_unique` distinct blocks supply it, in the
order `sharing` names:

- `all`: one block applied n_layer times (ALBERT's cross-layer sharing, Lan et al. 2020);
- `repeat`: each block applied n_layer / n_unique times in a row, [0, 0, 1, 1, ...] (MobileLLM's
  immediate block-wise sharing, Liu et al. 2024, section 2.3); default n_unique = n_layer / 2;
- `cycle`: the n_unique blocks cycled to depth n_layer, [0, 1, ..., k-1, 0, 1, ...] (Takase & Kiyono
  2021, "cycle" sharing); n_unique is required;
- `recursive`: like cycle (default one block), and before application s a learned step embedding
  t_s is added to the stream, x <- x + t_s, so a block can act differently at each step (the
  timestep coordinate of the Universal Transformer, Dehghani et al. 2019).

`self.blocks` holds one entry per application, the same module object where weights are shared,
so parameters are literally the same tensors and their gradients add up over applications.
`num_params()` counts each tensor once; `flops_per_token` counts every application.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

import torch
from torch import nn

from research.models.variant import VariantConfig, VariantGPT

DEFAULT_UNIQUE = {"all": lambda L: 1, "repeat": lambda L: max(1, L // 2), "recursive": lambda L: 1}


@dataclass
class SharedConfig(VariantConfig):
    arch: str = "shared"
    sharing: Literal["all", "repeat", "cycle", "recursive"] = "all"
    n_unique: int | None = None  # distinct blocks; default 1 (all, recursive) or n_layer / 2 (repeat)

    def unique_layers(self) -> int:
        if self.n_unique is not None:
            return self.n_unique
        return DEFAULT_UNIQUE[self.sharing](self.n_layer) if self.sharing in DEFAULT_UNIQUE else self.n_layer

    def schedule(self) -> list[int]:
        """Which distinct block runs at each depth."""
        k = self.unique_layers()
        if self.sharing == "repeat":
            return [i // (self.n_layer // k) for i in range(self.n_layer)]
        return [i % k for i in range(self.n_layer)]

    def validate(self) -> None:
        super().validate()
        k = self.unique_layers()
        if self.sharing == "cycle" and self.n_unique is None:
            raise ValueError("sharing 'cycle' needs n_unique (the number of distinct blocks cycled)")
        if self.sharing == "all" and k != 1:
            raise ValueError(f"sharing 'all' uses one block; n_unique is {k} (use sharing: cycle)")
        if not 1 <= k <= self.n_layer:
            raise ValueError(f"n_unique ({k}) must be between 1 and n_layer ({self.n_layer})")
        if self.sharing == "repeat" and self.n_layer % k:
            raise ValueError(f"sharing 'repeat' needs n_layer ({self.n_layer}) divisible by n_unique ({k})")


class SharedGPT(VariantGPT):
    Config = SharedConfig

    @classmethod
    def tiny_config(cls) -> SharedConfig:
        return cls.Config(n_layer=4, n_head=2, n_embd=32, block_size=32, sharing="cycle", n_unique=2)

    def make_block(self, layer: int) -> nn.Module:
        built = self.__dict__.setdefault("_built", {})  # plain dict: only used while GPT.__init__ runs
        unique = self.cfg.schedule()[layer]
        if unique not in built:
            built[unique] = super().make_block(unique)
        return built[unique]

    def add_stream_modules(self) -> None:
        super().add_stream_modules()
        self.__dict__.pop("_built", None)
        if self.cfg.sharing == "recursive":
            self.step_emb = nn.Parameter(torch.zeros(self.cfg.n_layer, self.cfg.n_embd))

    def stream_parameters(self) -> list[nn.Parameter]:
        extra = [self.step_emb] if self.cfg.sharing == "recursive" else []
        return [*super().stream_parameters(), *extra]

    def step_input(self, step: int, x: torch.Tensor) -> torch.Tensor:
        x = super().step_input(step, x)
        if self.cfg.sharing == "recursive":
            x = x + self.step_emb[step].to(x.dtype)
        return x

    def lookup_parameters(self) -> list[nn.Parameter]:
        extra = [self.step_emb] if self.cfg.sharing == "recursive" else []
        return super().lookup_parameters() + extra
