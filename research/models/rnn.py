"""Recurrent language models: vanilla (tanh) RNN, GRU and LSTM, regularised as Zaremba et al. (2014).

Token embedding -> dropout -> a stack of `n_layer` recurrent layers (dropout between layers, as
`nn.LSTM`/`nn.GRU`/`nn.RNN` apply it) -> dropout -> `lm_head`. Dropout sits on the non-recurrent
connections only, which is Zaremba et al.'s regularisation. Tied input and output embeddings
(Press & Wolf 2017; Inan et al. 2017) need the embedding size to equal the hidden size.

Initialisation depends on the optimiser, so the default is the one that works with Adam(W), the
harness's default optimiser: each layer's PyTorch default (recurrent and output weights uniform in
+-1/sqrt(fan), embeddings N(0, 1)), as AWD-LSTM (Merity et al. 2018) and PyTorch's
word_language_model keep for their recurrent layers, and an LSTM forget-gate bias of 1
(Gers et al. 2000; Jozefowicz et al. 2015), so early gradients flow through the cell state.
Zaremba et al.'s recipe for plain SGD at lr 1, every weight uniform in [-init_range, init_range]
(0.1 / 0.05 / 0.04 for their small / medium / large models) and no forget-gate offset, is set by
its recipe file (`ablations/grids/reproduce/ptb_lstm_*.yaml`). Under AdamW it trains far slower:
in tests/models/test_reference.py's setting it ends 0.67 nats/char above a plain PyTorch loop.

Training uses truncated back-propagation through time (`research.lightning_module`): the trainer
calls `step(idx, state, reset_mask)` on consecutive chunks of parallel streams and detaches the
returned state between chunks. `reset_mask[b, t]` is True where input token t is end-of-text; the
state of row b is zeroed right after that token, so the next document starts from the same zero
state as `forward`. The chunk is cut at those positions and every piece still runs through the
fused cuDNN/oneDNN kernel; there is no per-token Python loop.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import nn

from research.models.base import LanguageModel
from research.models.config import ModelConfig

State = torch.Tensor | tuple[torch.Tensor, torch.Tensor]


@dataclass
class RNNConfig(ModelConfig):
    arch: str = "rnn"
    n_layer: int = 2
    n_embd: int = 200  # embedding size (Zaremba et al.'s small model: 200)
    n_hidden: int | None = None  # recurrent state size; None = n_embd
    dropout: float = 0.0  # on embeddings, between layers and before lm_head
    tie_embeddings: bool = False
    init_range: float | None = None  # every weight uniform in +-init_range (Zaremba et al.); None: PyTorch's
    forget_bias: float | None = 1.0  # LSTM forget-gate bias at init; None: leave what the init drew
    reset_at_eot: bool = True  # zero the state after each end-of-text token (false for one-stream PTB)

    @property
    def hidden(self) -> int:
        return self.n_hidden or self.n_embd

    def validate(self) -> None:
        for name in ("n_layer", "n_embd"):
            if getattr(self, name) < 1:
                raise ValueError(f"{name} must be at least 1")
        if self.n_hidden is not None and self.n_hidden < 1:
            raise ValueError("n_hidden must be at least 1")
        if not 0.0 <= self.dropout < 1.0:
            raise ValueError("dropout must be in [0, 1)")
        if self.init_range is not None and self.init_range <= 0:
            raise ValueError("init_range must be positive (or null for PyTorch's default init)")
        if self.tie_embeddings and self.hidden != self.n_embd:
            raise ValueError(f"tie_embeddings needs n_hidden ({self.hidden}) equal to n_embd ({self.n_embd})")


@dataclass
class GRUConfig(RNNConfig):
    arch: str = "gru"


@dataclass
class LSTMConfig(RNNConfig):
    arch: str = "lstm"


def zero_rows(state: State, keep: torch.Tensor) -> State:
    """Zero the state of the batch rows where `keep` (B,) is False; the state is (layers, B, H)."""
    mask = keep.to(state[0].dtype if isinstance(state, tuple) else state.dtype).view(1, -1, 1)
    if isinstance(state, tuple):
        return tuple(s * mask for s in state)
    return state * mask


def run_with_resets(rnn: nn.Module, x: torch.Tensor, state: State | None,
                    reset_mask: torch.Tensor | None) -> tuple[torch.Tensor, State]:
    """Run a batch-first `nn.RNN/GRU/LSTM` over x (B, T, C), zeroing a row's state after each
    position where `reset_mask` is True. The sequence is cut after every time step at which some
    row resets; each piece is one fused call."""
    if reset_mask is None or not bool(reset_mask.any()):
        return rnn(x, state)
    cuts = torch.nonzero(reset_mask.any(0)).flatten().tolist()
    outs, start = [], 0
    for t in cuts:
        out, state = rnn(x[:, start : t + 1], state)
        outs.append(out)
        state = zero_rows(state, ~reset_mask[:, t])
        start = t + 1
    if start < x.shape[1]:
        out, state = rnn(x[:, start:], state)
        outs.append(out)
    return torch.cat(outs, dim=1), state


def select_rows(state, rows: torch.Tensor):
    """The batch rows `rows` of a recurrent state: (layers, B, H), or the LSTM's (h, c)."""
    if isinstance(state, tuple):
        return tuple(s[:, rows] for s in state)
    return state[:, rows]


def continuation_batch(idx: torch.Tensor, rows: torch.Tensor, offsets: torch.Tensor | None
                       ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, tuple[torch.Tensor, torch.Tensor]]:
    """Unpack rows holding continuations back to back into one continuation per row.

    `idx` (N, T) with `offsets` (N, T) that restart at 0 where a continuation starts and are -1
    on padding (None: one continuation per row). Returns the continuations right-padded (S, L),
    their lengths (S,), the cache row each continues (`rows` of its source row), and the index
    pair that puts their outputs back as (N, T) (padding reads a continuation's first position)."""
    N, T = idx.shape
    if offsets is None:
        offsets = torch.arange(T, device=idx.device).expand(N, T)
    segment = torch.cumsum(offsets == 0, dim=1) - 1  # (N, T): which continuation of its row
    counts = segment[:, -1] + 1
    first = torch.cumsum(counts, 0) - counts  # global index of each row's first continuation
    gid = first[:, None] + segment  # (N, T)
    real = offsets >= 0
    S = int(counts.sum())
    seq = idx.new_zeros(S, int(offsets.max()) + 1)
    seq[gid[real], offsets[real]] = idx[real]
    lengths = torch.bincount(gid[real], minlength=S)
    return seq, lengths, torch.repeat_interleave(rows, counts), (gid, offsets.clamp(min=0))


class RNN(LanguageModel):
    """The vanilla tanh RNN; `GRU` and `LSTM` differ only in the recurrent module."""

    Config = RNNConfig
    cell: type[nn.Module] = nn.RNN
    recurrent = True
    block_size = None

    def __init__(self, cfg: RNNConfig, vocab_size: int):
        super().__init__()
        self.cfg = cfg
        self.vocab_size = vocab_size
        self.tok_emb = nn.Embedding(vocab_size, cfg.n_embd)
        self.drop = nn.Dropout(cfg.dropout)
        self.rnn = self.cell(cfg.n_embd, cfg.hidden, num_layers=cfg.n_layer, batch_first=True,
                             dropout=cfg.dropout if cfg.n_layer > 1 else 0.0)
        self.lm_head = nn.Linear(self.head_width(), vocab_size, bias=True)
        self.init_weights_()
        if cfg.tie_embeddings:
            self.lm_head.weight = self.tok_emb.weight

    @classmethod
    def tiny_config(cls) -> RNNConfig:
        return cls.Config(n_layer=1, n_embd=128)  # narrower RNNs learn too slowly for the few-step tests

    def head_width(self) -> int:
        return self.cfg.hidden

    @torch.no_grad()
    def init_weights_(self) -> None:
        """Uniform in +-init_range when set; otherwise the layers keep the defaults they were built with."""
        if self.cfg.init_range is not None:
            for p in self.parameters():
                nn.init.uniform_(p, -self.cfg.init_range, self.cfg.init_range)

    def step(self, idx: torch.Tensor, state: State | None = None,
             reset_mask: torch.Tensor | None = None) -> tuple[torch.Tensor, State]:
        """Logits (B, T, V) for one chunk and the state after it (None in: zeros)."""
        out, state = run_with_resets(self.rnn, self.drop(self.tok_emb(idx)), state, reset_mask)
        return self.lm_head(self.drop(out)), state

    def forward(self, idx: torch.Tensor) -> torch.Tensor:
        return self.step(idx)[0]

    # -- the recurrent state as the prefix cache for scoring many continuations of one context ----
    def read_prefix(self, idx: torch.Tensor, lengths: torch.Tensor):
        """The state after each prefix, as `forward` leaves it (from zeros, no resets inside):
        a recurrent model's whole cache. The prefixes are packed, so right padding never reaches
        the state. A subclass that changes `step` or `forward` keeps the uncached path."""
        if type(self).step is not RNN.step or type(self).forward is not RNN.forward:
            return None
        packed = nn.utils.rnn.pack_padded_sequence(self.tok_emb(idx), lengths.cpu(), batch_first=True,
                                                   enforce_sorted=False)
        return self.rnn(packed)[1]  # (layers, G, H), or (h, c), in the order of `idx`

    def read_after(self, cache, rows: torch.Tensor, idx: torch.Tensor,
                   offsets: torch.Tensor | None = None) -> torch.Tensor:
        """Each continuation of a row (`offsets` counting 0, 1, 2, ... from its start) runs as its
        own sequence from its prefix's state; all of them are one batched call."""
        seq, lengths, owner, where = continuation_batch(idx, rows, offsets)
        out = self.continue_from(seq, lengths, self.cache_rows(cache, owner))
        return out[where]  # (N, T, H)

    def cache_rows(self, cache, rows: torch.Tensor):
        """The `read_prefix` cache of the prefixes `rows` (repeats allowed)."""
        return select_rows(cache, rows)

    def continue_from(self, idx: torch.Tensor, lengths: torch.Tensor, state) -> torch.Tensor:
        """Final hidden states (the input of `lm_head`) of `idx` (S, L), right-padded to `lengths`,
        run on from `state`; packed, so the padding costs nothing (endings differ in length)."""
        packed = nn.utils.rnn.pack_padded_sequence(self.tok_emb(idx), lengths.cpu(), batch_first=True,
                                                   enforce_sorted=False)
        out = self.rnn(packed, state)[0]
        return nn.utils.rnn.pad_packed_sequence(out, batch_first=True, total_length=idx.shape[1])[0]

    def embedding_parameters(self) -> list[nn.Parameter]:
        return [self.tok_emb.weight, self.lm_head.weight]

    def flops_per_token(self, seq_len: int) -> float:
        """6N over every matmul weight (recurrent layers and lm_head, each used once per token);
        the input embedding is a lookup and is left out unless it is the tied lm_head."""
        n = self.num_params()
        if not self.cfg.tie_embeddings:
            n -= self.tok_emb.weight.numel()
        return 6.0 * n


class GRU(RNN):
    Config = GRUConfig
    cell = nn.GRU


class LSTM(RNN):
    Config = LSTMConfig
    cell = nn.LSTM

    @torch.no_grad()
    def init_weights_(self) -> None:
        """Then the forget gate: PyTorch orders the gates (input, forget, cell, output) and adds two
        biases, so b_ih's forget slice takes `forget_bias` and b_hh's is zeroed."""
        super().init_weights_()
        if self.cfg.forget_bias is None:
            return
        h = self.cfg.hidden
        for name, p in self.rnn.named_parameters():
            if name.startswith("bias_"):
                p[h : 2 * h] = self.cfg.forget_bias if name.startswith("bias_ih") else 0.0
