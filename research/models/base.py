"""What every registered model provides, so the trainer, evals and tables never branch on names.

A model maps token ids (B, T) to next-token logits (B, T, V) and never sees a loss. It reports
its parameter counts (shared tensors counted once) and its training FLOPs per token, so grids
can compare architectures at equal size and equal compute.
"""

from __future__ import annotations

import torch
from torch import nn

from research.config import ModelConfig


class LanguageModel(nn.Module):
    Config: type[ModelConfig] = ModelConfig
    #: longest context the model can attend to; None for models without a limit (RNNs, n-grams)
    block_size: int | None = None

    @classmethod
    def tiny_config(cls) -> ModelConfig:
        """A debug size that builds and runs in milliseconds; every model test uses it."""
        return cls.Config()

    def embedding_parameters(self) -> list[nn.Parameter]:
        """Parameters that are lookup tables (token/position embeddings, an untied unembedding)."""
        return []

    def num_params(self, non_embedding: bool = False) -> int:
        """Unique parameters (a tensor shared by several layers counts once).

        non_embedding=True leaves out token and position embeddings and an untied output
        projection, as Kaplan et al. (2020) count N.
        """
        seen = {id(p): p for p in self.parameters()}
        if non_embedding:
            for p in self.embedding_parameters():
                seen.pop(id(p), None)
        return sum(p.numel() for p in seen.values())

    def flops_per_token(self, seq_len: int) -> float:
        """Training FLOPs per token (forward + backward), 6N for a dense model by default."""
        return 6.0 * self.num_params(non_embedding=True)

    @torch.no_grad()
    def init_weights_(self) -> None:  # pragma: no cover - overridden where it matters
        pass
