"""A language model whose next-token distribution is an explicit table of the previous token.

log p(next = j | prev = i) = log_softmax(table[i])[j], so any score can be computed by hand. The
final projection is an `nn.Linear` named `lm_head` over one-hot features, as the model contract
asks (features of position t are the one-hot vector of token t).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from research.models.base import LanguageModel


class LookupModel(LanguageModel):
    def __init__(self, table: torch.Tensor, block_size: int | None = None):
        super().__init__()
        V = table.shape[0]
        self.vocab_size = V
        self.block_size = block_size
        self.lm_head = nn.Linear(V, V, bias=False)
        with torch.no_grad():
            self.lm_head.weight.copy_(table.T)
        self.calls: list[tuple[int, int]] = []  # (batch, length) of every forward, for tests

    def forward(self, idx: torch.Tensor) -> torch.Tensor:
        if self.block_size is not None and idx.shape[1] > self.block_size:
            raise ValueError(f"sequence of {idx.shape[1]} tokens exceeds block_size {self.block_size}")
        self.calls.append(tuple(idx.shape))
        return self.lm_head(F.one_hot(idx, self.vocab_size).float())

    def logp(self, prev: int, nxt: int) -> float:
        """log p(nxt | prev), for hand computations in tests."""
        return F.log_softmax(self.lm_head.weight.T[prev].detach(), -1)[nxt].item()


def random_table(vocab_size: int, seed: int = 0) -> torch.Tensor:
    return torch.randn(vocab_size, vocab_size, generator=torch.Generator().manual_seed(seed)) * 2
