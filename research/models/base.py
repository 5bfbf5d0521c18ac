"""What every registered model provides, so the trainer, evals and tables never branch on names.

A model maps token ids (B, T) to next-token logits (B, T, V) and never sees a loss. It reports
its parameter counts (shared tensors counted once) and its training FLOPs per token, so grids
can compare architectures at equal size and equal compute.

Everything the trainer and the evals ask of a model is declared here with the default of a plain
feed-forward decoder (not recurrent, trained by gradient steps, no extra metrics, attention
weights recomputed from its layers); a model overrides what differs, and callers read the
attributes directly instead of probing for them.
"""

from __future__ import annotations

import torch
from torch import nn

from research.models.config import ModelConfig


class LanguageModel(nn.Module):
    Config: type[ModelConfig] = ModelConfig
    #: the resolved config the model was built from (model.match_params already turned into a width)
    cfg: ModelConfig
    #: longest context the model can attend to; None for models without a limit (RNNs, n-grams)
    block_size: int | None = None
    #: True: trained on contiguous streams with truncated back-propagation through time, scored
    #: through `step(idx, state, reset_mask)`, which carries the hidden state from batch to batch
    recurrent: bool = False
    #: False: fitted by one pass over the training tokens (`fit`) instead of gradient steps, and
    #: restored from its stored tensors with `load_fitted`
    trainable: bool = True
    #: True: `research.attention.attention_maps` can draw its attention (attention layers, or its
    #: own `attention_weights`), so the paper's attention figure may pick it
    has_attention_maps: bool = False

    @property
    def resets_at_eot(self) -> bool:
        """Whether a recurrent model's state is zeroed after each end-of-text token."""
        return self.recurrent and bool(self.cfg.reset_at_eot)

    def step(self, idx: torch.Tensor, state=None, reset_mask: torch.Tensor | None = None):
        """Recurrent models: (logits, new state) for `idx` continuing from `state`."""
        raise NotImplementedError(f"{type(self).__name__} is not recurrent")

    def fit(self, train_tokens) -> None:
        """Models that are not `trainable`: estimate the parameters from the training tokens."""
        raise NotImplementedError(f"{type(self).__name__} trains by gradient steps")

    def load_fitted(self, state: dict[str, torch.Tensor]) -> None:
        """Models that are not `trainable`: restore what `fit` estimated from a stored state dict."""
        raise NotImplementedError(f"{type(self).__name__} loads with load_state_dict")

    def architecture_metrics(self) -> dict:
        """Facts about the built model a results table shows next to its size (layers applied,
        receptive field, ...); merged into the cell's metrics.json."""
        return {}

    def extend_context(self, length: int) -> None:
        """Accept sequences of `length` tokens beyond `block_size` (length-generalisation evals);
        models whose positions stop at block_size refuse."""
        if self.block_size is not None and length > self.block_size:
            from research.errors import ConfigError

            raise ConfigError(f"model.arch: {type(self).__name__} cannot run beyond block_size {self.block_size} "
                              f"(asked {length}); evaluate at a length <= {self.block_size}")

    def read_prefix(self, idx: torch.Tensor, lengths: torch.Tensor):
        """Read the prefixes `idx` (G, P), right-padded to `lengths` (G,), once, and keep what a
        continuation needs (an attention model's keys and values, a recurrent model's state)
        for `read_after`.

        Multiple-choice scoring runs a shared context once this way and then all its endings
        against it. None (the default): the model keeps no such state, and callers run each
        context and continuation together through `forward`.
        """
        return None

    def read_after(self, cache, rows: torch.Tensor, idx: torch.Tensor,
                   offsets: torch.Tensor | None = None) -> torch.Tensor:
        """Final hidden states (the input of `lm_head`), (N, T, C), of `idx` (N, T) read right
        after prefix `rows[n]` of a `read_prefix` cache.

        A row may hold several continuations of its prefix back to back (no padding between
        them): `offsets` (N, T) gives each token's position after the prefix, and an offset of 0
        starts a new continuation, which sees only the prefix and its own earlier tokens; an
        offset of -1 marks padding at the end of a row, whose states are never read. None: one
        continuation per row (0, 1, 2, ...)."""
        raise NotImplementedError(f"{type(self).__name__} keeps no prefix cache (read_prefix returned None)")

    def attention_weights(self, idx: torch.Tensor) -> list[torch.Tensor] | torch.Tensor | None:
        """Attention weights for figures, from models that compute attention their own way; None
        (the default) has research.attention recompute them from the layers' queries and keys."""
        return None

    @classmethod
    def tiny_config(cls) -> ModelConfig:
        """A debug size that builds and runs in milliseconds; every model test uses it."""
        return cls.Config()

    def embedding_parameters(self) -> list[nn.Parameter]:
        """Parameters that are lookup tables or score one token at a time: token/position
        embeddings and the output projection (`lm_head`, tied or not)."""
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
