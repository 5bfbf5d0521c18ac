"""Attention weights of a trained model for one input, for figures.

Fused attention kernels (SDPA, FlexAttention) never materialise the weights, so they are
recomputed here from each layer's own queries and keys: softmax(q k^T / sqrt(d) + mask), with the
layer's mask (its `visible`: causal, and its window when the layer has one). Models that compute attention
differently (the RNN with attention) expose `attention_weights(idx)` themselves and are asked
directly.
"""

from __future__ import annotations

import math

import torch

from research.models.gpt import CausalSelfAttention


@torch.no_grad()
def attention_maps(model, idx: torch.Tensor) -> list[torch.Tensor]:
    """Per layer, a (heads, T, T) tensor of attention weights for the single sequence `idx` (1, T)."""
    weights = model.attention_weights(idx)
    if weights is not None:
        weights = weights if isinstance(weights, (list, tuple)) else [weights]
        return [w[0] if w.dim() == 4 else w for w in weights]
    layers = [m for m in model.modules() if isinstance(m, CausalSelfAttention)]
    if not layers:
        raise ValueError(f"{type(model).__name__} has no attention layers to show")
    captured: list[torch.Tensor] = []
    originals = {}

    def recorder(layer):
        original = layer.attend

        def attend(q, k, v):
            if k.shape[1] != q.shape[1]:  # grouped-query attention: repeat the shared heads
                rep = q.shape[1] // k.shape[1]
                k_full = k.repeat_interleave(rep, dim=1)
            else:
                k_full = k
            scores = (q.float() @ k_full.float().transpose(-2, -1)) / math.sqrt(q.shape[-1])
            allowed = layer.visible(q.shape[-2], q.device)
            captured.append(scores.masked_fill(~allowed, float("-inf")).softmax(-1)[0].cpu())
            return original(q, k, v)

        return attend

    was_training = model.training
    model.eval()
    try:
        for layer in layers:
            originals[layer] = layer.attend
            layer.attend = recorder(layer)
        model(idx)
    finally:
        for layer, fn in originals.items():
            del layer.attend
            if layer.attend != fn:  # the method was an instance attribute already
                layer.attend = fn
        model.train(was_training)
    return captured
