"""Per-token negative log-likelihood for evaluation, without a full-precision copy of the logits.

`F.cross_entropy(logits.float(), ...)` on a (tokens x vocabulary) tensor first copies the logits
to float32 and then writes a log-softmax of the same size: with a 32k vocabulary and a batch of
128 x 256 tokens that is two 4.2 GB tensors on top of the (bf16) logits themselves, so evaluating
needed more than twice the memory of a compiled training step, whose loss is fused. Scoring a
slice of rows at a time bounds the float32 work to `max_elements` per slice; the values are the
same up to float rounding (each row's log-softmax is independent of the others).

Training keeps `F.cross_entropy` over the whole batch: there the compiled graph fuses the upcast
into the loss kernel, and without compilation autograd would keep every slice's log-softmax anyway.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

#: float32 elements per slice: 2**24 is 64 MiB, large enough that slicing costs nothing measurable
MAX_ELEMENTS = 2**24


def token_nats(logits: torch.Tensor, targets: torch.Tensor, max_elements: int = MAX_ELEMENTS) -> torch.Tensor:
    """-log p(target) in nats (float32) for each position: shape of `targets`, logits (..., V)."""
    vocab = logits.size(-1)
    flat, flat_targets = logits.reshape(-1, vocab), targets.reshape(-1)
    rows = max(1, max_elements // vocab)
    if flat.size(0) <= rows:
        return F.cross_entropy(flat.float(), flat_targets, reduction="none").view(targets.shape)
    out = torch.empty(flat.size(0), dtype=torch.float32, device=logits.device)
    for i in range(0, flat.size(0), rows):
        out[i : i + rows] = F.cross_entropy(flat[i : i + rows].float(), flat_targets[i : i + rows], reduction="none")
    return out.view(targets.shape)
