"""An LSTM language model that attends over its own recent hidden states.

At step t the top LSTM layer's output h_t is the query; the keys and values are the outputs
h_s of the last `attn_window` positions s <= t of the same document (t itself included, so every
position has something to attend to and each row of weights sums to 1). This is close to the
attention baseline of Daniluk et al. (2017), which attends over the previous L outputs only,
combined as in Luong et al. (2015):

    a_ts = softmax_s(score(h_t, h_s)),   c_t = sum_s a_ts h_s,   o_t = tanh(W_c [c_t; h_t])

and `lm_head` reads o_t. `attn_score` picks the score: "additive" is Bahdanau et al. (2015),
v^T tanh(W_q h_t + W_k h_s); "multiplicative" is Luong et al.'s "general" form, h_t^T W_a h_s.

For truncated back-propagation through time the state carries, besides the LSTM's (h, c), the
last `attn_window - 1` outputs and whether each still belongs to the current document, so a
stream processed in chunks gives the same logits as one long pass. `attention_weights(idx)`
returns the (B, T, T) weights of one pass from a zero state, for figures.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

import torch
from torch import nn

from research.models.rnn import LSTM, LSTMConfig, run_with_resets, select_rows


@dataclass
class RNNAttentionConfig(LSTMConfig):
    arch: str = "rnn_attention"
    attn_score: Literal["additive", "multiplicative"] = "multiplicative"
    attn_window: int = 32  # hidden states attended per step, the current one included
    attn_dim: int | None = None  # additive scoring's inner width; None = the hidden size

    def validate(self) -> None:
        super().validate()
        if self.attn_window < 1:
            raise ValueError("attn_window must be at least 1")
        if self.attn_dim is not None and self.attn_dim < 1:
            raise ValueError("attn_dim must be at least 1")


class StateAttention(nn.Module):
    """Attention of each LSTM output over the recent outputs of the same document."""

    def __init__(self, cfg: RNNAttentionConfig):
        super().__init__()
        h = cfg.hidden
        self.kind, self.window = cfg.attn_score, cfg.attn_window
        if cfg.attn_score == "additive":
            a = cfg.attn_dim or h
            self.query = nn.Linear(h, a, bias=False)
            self.key = nn.Linear(h, a, bias=False)
            self.score_v = nn.Linear(a, 1, bias=False)
        else:
            self.key = nn.Linear(h, h, bias=False)  # W_a of h_t^T W_a h_s
        self.combine = nn.Linear(2 * h, h, bias=False)  # W_c

    def scores(self, q: torch.Tensor, k: torch.Tensor) -> torch.Tensor:
        """(B, T, H) queries and (B, S, H) keys -> (B, T, S) unnormalised scores."""
        if self.kind == "additive":
            return self.score_v(torch.tanh(self.query(q)[:, :, None] + self.key(k)[:, None])).squeeze(-1)
        return q @ self.key(k).transpose(1, 2)

    def forward(self, out: torch.Tensor, memory: tuple[torch.Tensor, torch.Tensor] | None,
                reset_mask: torch.Tensor | None):
        """Attention over memory + this chunk; returns (o, weights over memory + chunk, new memory).

        `memory` is the previous chunk's last outputs (B, M, H) and whether each belongs to the
        document still running (B, M); positions after a reset only see their own document.
        """
        B, T, H = out.shape
        dev = out.device
        if memory is None:
            memory = (out.new_zeros(B, 0, H), torch.zeros(B, 0, dtype=torch.bool, device=dev))
        mem, mem_ok = memory
        M = mem.shape[1]
        resets = reset_mask.long() if reset_mask is not None else torch.zeros(B, T, dtype=torch.long, device=dev)
        seg = torch.cumsum(resets, 1) - resets  # (B, T): resets before each position in this chunk
        t = torch.arange(T, device=dev)
        s = torch.arange(-M, T, device=dev)  # key positions relative to the chunk start, memory first
        near = (s[None, :] <= t[:, None]) & (s[None, :] > t[:, None] - self.window)  # (T, M + T)
        key_seg = torch.cat([torch.zeros(B, M, dtype=torch.long, device=dev), seg], 1)  # (B, M + T)
        key_ok = torch.cat([mem_ok, torch.ones(B, T, dtype=torch.bool, device=dev)], 1)
        allowed = near[None] & key_ok[:, None, :] & (key_seg[:, None, :] == seg[:, :, None])
        keys = torch.cat([mem, out], 1)
        weights = self.scores(out, keys).masked_fill(~allowed, float("-inf")).softmax(-1)
        o = torch.tanh(self.combine(torch.cat([weights @ keys, out], -1)))
        keep = min(self.window - 1, keys.shape[1])
        still_ok = key_ok & (key_seg == resets.sum(1, keepdim=True))  # in the document the next chunk continues
        new_memory = (keys[:, keys.shape[1] - keep :], still_ok[:, still_ok.shape[1] - keep :])
        return o, weights, new_memory


class RNNAttention(LSTM):
    Config = RNNAttentionConfig
    has_attention_maps = True

    def __init__(self, cfg: RNNAttentionConfig, vocab_size: int):
        super().__init__(cfg, vocab_size)
        self.attention = StateAttention(cfg)
        if cfg.init_range is not None:
            for p in self.attention.parameters():
                nn.init.uniform_(p, -cfg.init_range, cfg.init_range)

    @classmethod
    def tiny_config(cls) -> RNNAttentionConfig:
        return cls.Config(n_layer=1, n_embd=128, attn_window=8)

    def run(self, idx: torch.Tensor, state, reset_mask: torch.Tensor | None):
        """(logits, new state, attention weights (B, T, memory + T)) for one chunk."""
        o, state, weights = self.hidden(idx, state, reset_mask)
        return self.lm_head(self.drop(o)), state, weights

    def hidden(self, idx: torch.Tensor, state, reset_mask: torch.Tensor | None):
        """`run` up to `lm_head`: (the attention's output o, new state, attention weights)."""
        lstm_state, memory = state if state is not None else (None, None)
        out, lstm_state = run_with_resets(self.rnn, self.drop(self.tok_emb(idx)), lstm_state, reset_mask)
        o, weights, memory = self.attention(out, memory, reset_mask)
        return o, (lstm_state, memory), weights

    def step(self, idx: torch.Tensor, state=None, reset_mask: torch.Tensor | None = None):
        """Logits (B, T, V) and the state ((h, c), (memory, memory_valid)) after the chunk."""
        logits, state, _ = self.run(idx, state, reset_mask)
        return logits, state

    def read_prefix(self, idx: torch.Tensor, lengths: torch.Tensor):
        """The state `step` carries after each prefix: the LSTM's (h, c) and the prefix's last
        `attn_window - 1` LSTM outputs, left-padded (marked invalid) for shorter prefixes so each
        kept output sits at its own distance from the continuation."""
        if type(self).run is not RNNAttention.run or type(self).hidden is not RNNAttention.hidden:
            return None
        G, P = idx.shape
        lengths = lengths.to(idx.device)
        packed = nn.utils.rnn.pack_padded_sequence(self.tok_emb(idx), lengths.cpu(), batch_first=True,
                                                   enforce_sorted=False)
        out, lstm_state = self.rnn(packed)
        out = nn.utils.rnn.pad_packed_sequence(out, batch_first=True, total_length=P)[0]  # (G, P, H)
        keep = min(self.cfg.attn_window - 1, P)
        back = torch.arange(keep, 0, -1, device=idx.device)  # distance before the prefix end
        at = lengths[:, None] - back[None, :]  # (G, keep) positions of the kept outputs
        ok = at >= 0
        memory = out[torch.arange(G, device=idx.device)[:, None], at.clamp(min=0)] * ok[..., None]
        return lstm_state, (memory, ok)

    def cache_rows(self, cache, rows: torch.Tensor):
        lstm_state, (memory, ok) = cache
        return select_rows(lstm_state, rows), (memory[rows], ok[rows])

    def continue_from(self, idx: torch.Tensor, lengths: torch.Tensor, state) -> torch.Tensor:
        """Unpacked: attention needs the outputs as one (S, L) block; the padding comes after
        every real token, so it changes none of their states."""
        return self.hidden(idx, state, None)[0]

    def flops_per_token(self, seq_len: int) -> float:
        """6N, plus scores and context over min(window, seq_len) states of width H: 2 * 2 * W * H
        forward, times 3 with the backward pass (the additive score's tanh is not counted)."""
        return super().flops_per_token(seq_len) + 12.0 * min(self.cfg.attn_window, seq_len) * self.cfg.hidden

    @torch.no_grad()
    def attention_weights(self, idx: torch.Tensor) -> torch.Tensor:
        """(B, T, T) causal attention weights of one pass over `idx` from a zero state."""
        return self.run(idx, None, None)[2]
