"""The common base of the architecture variants: a GPT whose layers may differ from each other.

`VariantGPT` with no hook overridden is `GPT` (the same attention class, so the same state dict,
parameter count and FLOPs), but it
routes every per-layer choice through a small hook, so one variant is one file that overrides one
hook and variants compose by multiple inheritance (each hook calls `super()`):

- `layer_width(i)`, `layer_ff(i)`: residual width and feed-forward width of layer i (tapered);
- `attention_kwargs(i)`: the arguments of layer i's `LayerAttention`, e.g. its window (windowed)
  or head count (layer-wise scaling);
- `cfg.unique_layers()` and `make_block(i)`: how many distinct blocks exist; `self.blocks` holds
  one entry per applied layer, and a shared block appears several times (shared);
- `step_input(i, x)`: what happens to the stream before application i (a step embedding, a width
  projection); `stream_out(x)`: back to the embedding width before the final norm;
- `embed(idx)`, `run_blocks(x)`: where the residual stream starts (residual_root).

Parameter counts come from the base class (a shared tensor counts once). `flops_per_token` walks
the applied layers, so a block applied twice costs twice and a windowed layer attends over
min(T, w) positions.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import nn

from research.models.gpt import GPT, MLP, Block, CausalSelfAttention, GPTConfig
from research.models.window_attention import band_mask, window_attention


@dataclass
class VariantConfig(GPTConfig):
    def unique_layers(self) -> int:
        """Number of distinct blocks (per-layer lists such as windows have this many entries)."""
        return self.n_layer


class LayerAttention(CausalSelfAttention):
    """The attention of one layer of a variant: the baseline's, with the layer's own sizes and reach.

    `dim` is the layer's residual width; `n_head` / `head_dim` give an inner width n_head * head_dim
    other than `dim` (OpenELM's layer-wise head scaling; plain multi-head then); with `window` each
    query sees only the last `window` positions; with `kv_dim` keys and values read another stream
    of that width, given to `forward` as `memory` (residual_root's read-in block). With none of
    them it computes what the baseline's attention does, with the same parameters.
    """

    def __init__(self, cfg: GPTConfig, dim: int, n_head: int | None = None, head_dim: int | None = None,
                 window: int | None = None, kv_dim: int | None = None):
        nn.Module.__init__(self)  # not the baseline's __init__, which would build the baseline's sizes
        self.build(cfg, dim=dim, n_head=n_head or cfg.n_head, n_kv_head=n_head or cfg.n_kv_head or cfg.n_head,
                   head_dim=head_dim or dim // cfg.n_head, kv_dim=kv_dim or dim)
        self.window = window

    def attend(self, q: torch.Tensor, k: torch.Tensor, v: torch.Tensor) -> torch.Tensor:
        """Causal attention, limited to the layer's window when it has one."""
        return window_attention(q, k, v, self.window, self.dropout if self.training else 0.0,
                                enable_gqa=self.n_kv_head != self.n_head)

    def visible(self, T: int, device) -> torch.Tensor:
        return super().visible(T, device) if self.window is None else band_mask(T, self.window, device)

    def forward(self, x: torch.Tensor, memory: torch.Tensor | None = None) -> torch.Tensor:
        """Self-attention, or with `memory` (same length as x) keys and values come from it."""
        B, T, _ = x.shape
        y = self.attend(*self.split_heads(x, x if memory is None else memory))  # (B, H, T, hd)
        return self.resid_drop(self.proj(y.transpose(1, 2).reshape(B, T, self.inner)))


class VariantGPT(GPT):
    Config = VariantConfig
    #: whether `add_stream_modules` has run (GPT's own init runs before it)
    stream_built: bool = False

    def __init__(self, cfg: VariantConfig, vocab_size: int):
        super().__init__(cfg, vocab_size)
        self.add_stream_modules()
        self.stream_built = True
        self.init_weights_()  # again: stream modules are added after GPT's own init

    # -- per-layer hooks -------------------------------------------------------------------------
    def layer_width(self, layer: int) -> int:
        return self.cfg.n_embd

    def layer_ff(self, layer: int) -> int:
        return round(self.cfg.ff_width * self.layer_width(layer) / self.cfg.n_embd)

    def attention_kwargs(self, layer: int) -> dict:
        return {"dim": self.layer_width(layer)}

    def make_attention(self, layer: int) -> nn.Module:
        return LayerAttention(self.cfg, **self.attention_kwargs(layer))

    def make_mlp(self, layer: int) -> nn.Module:
        return MLP(self.cfg, dim=self.layer_width(layer), hidden=self.layer_ff(layer))

    def make_block(self, layer: int) -> nn.Module:
        return Block(self.cfg, self.make_attention(layer), self.make_mlp(layer), dim=self.layer_width(layer))

    def add_stream_modules(self) -> None:
        """Modules outside the blocks (projections, step embeddings); built after the blocks."""

    def step_input(self, step: int, x: torch.Tensor) -> torch.Tensor:
        return x

    def stream_out(self, x: torch.Tensor) -> torch.Tensor:
        return x

    def run_blocks(self, x: torch.Tensor) -> torch.Tensor:
        for step, block in enumerate(self.blocks):
            x = block(self.step_input(step, x))
        return x

    # ---------------------------------------------------------------------------------------------
    def forward(self, idx: torch.Tensor) -> torch.Tensor:
        if idx.shape[1] > self.block_size:
            raise ValueError(f"sequence of {idx.shape[1]} tokens exceeds block_size {self.block_size}")
        x = self.run_blocks(self.embed(idx))
        return self.lm_head(self.norm_f(self.stream_out(x)))

    def windows(self) -> list[int | None]:
        """The attention window of each applied layer (None: the whole context)."""
        return [block.attn.window for block in self.blocks]

    def receptive_field(self) -> int:
        """How far back the last layer's output can see: 1 + sum of (w_l - 1), capped at block_size."""
        reach = sum((w or self.block_size) - 1 for w in self.windows())
        return min(self.block_size, 1 + reach)

    def architecture_metrics(self) -> dict:
        """Facts about the built model a results table wants next to the parameter count."""
        return {
            "layers_applied": len(self.blocks),
            "unique_blocks": len({id(b) for b in self.blocks}),
            "receptive_field_tokens": self.receptive_field(),
            "n_embd": self.cfg.n_embd,
        }

    def flops_per_token(self, seq_len: int) -> float:
        """6 N_applied + 12 sum_l (attention inner width_l * min(T, w_l)), as GPT.flops_per_token.

        N_applied counts the unique parameters outside the lookups (as GPT), plus each block's
        parameters once more for every extra time that block is applied.
        """
        n = self.num_params() - sum(p.numel() for p in {id(p): p for p in self.lookup_parameters()}.values())
        unique = {id(b): b for b in self.blocks}
        per_block = {k: sum(p.numel() for p in b.parameters()) for k, b in unique.items()}
        n += sum(per_block[id(b)] for b in self.blocks) - sum(per_block.values())
        attn = sum(b.attn.inner * min(seq_len, b.attn.window or seq_len) for b in self.blocks)
        return 6.0 * n + 12.0 * attn

    def lookup_parameters(self) -> list[nn.Parameter]:
        """Tables that are indexed or added, never multiplied: out of FLOPs and of non-embedding N."""
        params = [self.pos_emb.weight] if self.pos_emb is not None else []
        if not self.cfg.tie_embeddings:
            params.append(self.tok_emb.weight)
        return params

    def embedding_parameters(self) -> list[nn.Parameter]:
        return super().embedding_parameters() + self.lookup_parameters()

    def stream_parameters(self) -> list[nn.Parameter]:
        """Tensors a variant adds to the stream itself (a root vector, per-step embeddings), drawn
        from N(0, 0.02) at initialisation like the embeddings; none here."""
        return []

    @torch.no_grad()
    def init_weights_(self) -> None:
        super().init_weights_()
        for p in self.stream_parameters() if self.stream_built else []:
            nn.init.normal_(p, mean=0.0, std=0.02)
