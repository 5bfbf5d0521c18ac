"""An n-gram language model with interpolated Kneser-Ney smoothing, fitted by counting.

Chen & Goodman (1998), "An empirical study of smoothing techniques for language modeling",
modified Kneser-Ney (also Jurafsky & Martin, Speech and Language Processing, 3rd ed., ch. 3):

    P_k(w | h) = max(c_k(h w) - D_k(c_k(h w)), 0) / sum_v c_k(h v)  +  gamma_k(h) * P_{k-1}(w | h')
    gamma_k(h) = (D_k1 N_1(h .) + D_k2 N_2(h .) + D_k3 N_3+(h .)) / sum_v c_k(h v)

where h' drops the oldest token of h, c_n are raw counts at the highest order n, c_k for k < n
are continuation counts N_1+(. h w) (how many distinct tokens precede h w), and P_0 is uniform
over the vocabulary, so no token ever gets zero probability. A context never seen at order k
passes P_{k-1} through unchanged. `discount: null` (default) is modified Kneser-Ney: three
discounts per order from that order's counts of counts n_1..n_4, Y = n_1 / (n_1 + 2 n_2),
D_1 = 1 - 2Y n_2/n_1, D_2 = 2 - 3Y n_3/n_2, D_3+ = 3 - 4Y n_4/n_3; an order whose counts
of counts cannot give valid discounts (tiny corpora) falls back to D = 0.75. A number sets one
absolute discount D for every count and order (interpolated Kneser-Ney as in Jurafsky & Martin).

By default the end-of-text token is an ordinary token and contexts span document boundaries.
`reset_at_eot: true` makes each document its own sentence, as SRILM's `ngram-count` / `ngram -ppl`
treat one sentence per line (the setting of Mikolov et al. 2011's Penn Treebank figures): the
end-of-text token then plays both `</s>` (predicted, ending a sentence) and `<s>` (the context of a
sentence's first word), an n-gram is counted only when end-of-text is at most its first or last
token, and a context never reaches back past the last end-of-text. The lower-order counts of
n-grams that begin with `<s>` stay raw counts rather than continuation counts (nothing precedes a
sentence start), as in SRILM. Positions near the start of an input have shorter contexts and use
the highest order their context allows.

Storage: for each order k the distinct k-grams seen, sorted by (context id, token), where a
context id is the index of the (k-1)-gram in order k-1's table; so the k-grams of one context
are one contiguous slice (CSR), and `forward` adds each position's slice into a dense
(positions, V) block with no loop over the vocabulary (per-context denominators and gamma
numerators are segment sums, derived on load). `num_params` reports the number of stored
n-grams (entries over all orders), the model's size in the sense of a count table.
`forward` returns log-probabilities as logits, so cross-entropy is exactly the model's loss.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass

import numpy as np
import torch
from torch import nn

from research.models.base import LanguageModel
from research.models.config import ModelConfig

log = logging.getLogger(__name__)

FALLBACK_DISCOUNT = 0.75  # the usual single absolute discount (Jurafsky & Martin ch. 3)
#: the end-of-text token's id: every tokenizer (research.tokenizers) gives it id 0
EOT_ID = 0
#: positions x vocabulary entries per dense block in `forward` (bounds memory for large vocabularies)
BLOCK_ELEMENTS = 1 << 22


@dataclass
class NGramConfig(ModelConfig):
    arch: str = "ngram"
    order: int = 3  # n: the longest n-gram (context of n - 1 tokens)
    discount: float | None = None  # None: modified KN (D1, D2, D3+ per order); a number: one absolute discount
    reset_at_eot: bool = False  # each document a sentence: no context reaches back past end-of-text

    def validate(self) -> None:
        if self.order < 1:
            raise ValueError("order must be at least 1")
        if self.discount is not None and not 0.0 < self.discount <= 1.0:
            raise ValueError("discount must be in (0, 1]")


def modified_discounts(counts: np.ndarray) -> np.ndarray | None:
    """Chen & Goodman (1998) discounts from the counts of counts; None where they give no valid set."""
    n = [int((counts == i).sum()) for i in (1, 2, 3, 4)]
    if min(n) == 0:
        return None
    y = n[0] / (n[0] + 2 * n[1])
    d = np.array([1 - 2 * y * n[1] / n[0], 2 - 3 * y * n[2] / n[1], 3 - 4 * y * n[3] / n[2]])
    return d if np.all((d > 0) & (d <= np.array([1, 2, 3]))) else None


@dataclass
class NGramCounts:
    """One order's distinct n-grams, sorted by key, with what `fit` needs of each."""

    keys: np.ndarray  # (context id) * V + token, sorted
    counts: np.ndarray  # occurrences
    suffix: np.ndarray  # id of its last k-1 tokens in order k-1's table
    starts_sentence: np.ndarray  # its first token is end-of-text

    @classmethod
    def empty(cls) -> NGramCounts:
        return cls(np.zeros(0, np.int64), np.zeros(0, np.int64), np.zeros(0, np.int64), np.zeros(0, bool))

    def merge(self, other: NGramCounts) -> None:
        """Add `other`'s counts in (suffix and sentence start are functions of the n-gram)."""
        keys, first, inverse = np.unique(np.concatenate([self.keys, other.keys]), return_index=True,
                                         return_inverse=True)
        counts = np.bincount(inverse, weights=np.concatenate([self.counts, other.counts]), minlength=keys.size)
        self.keys, self.counts = keys, counts.astype(np.int64)
        self.suffix = np.concatenate([self.suffix, other.suffix])[first]
        self.starts_sentence = np.concatenate([self.starts_sentence, other.starts_sentence])[first]


class NGram(LanguageModel):
    Config = NGramConfig
    trainable = False
    block_size = None
    lm_head = None  # no hidden features: evals that probe lm_head's input do not apply

    def __init__(self, cfg: NGramConfig, vocab_size: int):
        super().__init__()
        self.cfg = cfg
        self.vocab_size = vocab_size
        # No trainable weights; this empty tensor gives `next(model.parameters()).device` (sampling).
        self.anchor = nn.Parameter(torch.zeros(0), requires_grad=False)
        self.fitted = False

    @classmethod
    def tiny_config(cls) -> NGramConfig:
        return cls.Config(order=3)

    # -- fitting -------------------------------------------------------------------------------
    def fit(self, train_tokens: np.ndarray, chunk_tokens: int = 1 << 20) -> None:
        """Count every order over the flat training stream (documents separated by end-of-text).

        Memory is proportional to the distinct n-grams, not to the stream: `train_tokens` (any
        integer array, a memory map included) is read `chunk_tokens` positions at a time, once per
        order; each chunk's n-grams are counted and merged into the order's sorted table. A
        position's (k-1)-gram id is found by looking its tokens up in the finished lower-order
        tables, so no per-position array of the whole stream is kept.
        """
        V, n = self.vocab_size, self.cfg.order
        size = len(train_tokens)
        if size < n:
            raise ValueError(f"{size} training tokens are fewer than the order {n}")
        lo = min(int(train_tokens[i : i + chunk_tokens].min()) for i in range(0, size, chunk_tokens))
        hi = max(int(train_tokens[i : i + chunk_tokens].max()) for i in range(0, size, chunk_tokens))
        if lo < 0 or hi >= V:
            raise ValueError(f"token ids must be in [0, {V}); found {lo}..{hi}")
        tables: dict[str, torch.Tensor] = {}
        done: list[np.ndarray] = []  # done[j - 1]: order j's sorted keys
        prev: NGramCounts | None = None
        n_contexts = [1]  # n_contexts[k - 1]: distinct (k-1)-grams, the contexts of order k
        for k in range(1, n + 1):
            grams = NGramCounts.empty()
            for start in range(0, size, chunk_tokens):
                left = max(0, start - (k - 1))  # the k - 1 tokens before the chunk complete its first k-grams
                t = np.asarray(train_tokens[left : start + chunk_tokens], dtype=np.int64)
                grams.merge(self.chunk_grams(t, np.arange(max(start, k - 1) - left, t.size), k, done))
            if k > 1:  # order k-1 smooths continuation counts: distinct tokens preceding each (k-1)-gram
                continuation = np.bincount(grams.suffix, minlength=prev.keys.size)
                if self.cfg.reset_at_eot and k > 2:  # a (k-1)-gram opening a sentence keeps its raw count
                    continuation = np.where(prev.starts_sentence, prev.counts, continuation)
                self._store(tables, k - 1, prev.keys, continuation, n_contexts[k - 2])
            n_contexts.append(grams.keys.size)
            done.append(grams.keys)
            prev = grams
        self._store(tables, n, prev.keys, prev.counts, n_contexts[n - 1])
        self.load_fitted(tables)

    def chunk_grams(self, t: np.ndarray, pos: np.ndarray, k: int, done: list[np.ndarray]) -> NGramCounts:
        """The distinct k-grams ending at positions `pos` of the token run `t`, with their counts.

        A k-gram's key is (id of its first k-1 tokens in order k-1's table) * V + its last token;
        `suffix` is the id of its last k-1 tokens (whose continuation count it adds to). With
        reset_at_eot a k-gram counts only when end-of-text is at most its first or last token.
        """
        V = self.vocab_size
        if self.cfg.reset_at_eot and k > 2:
            eots = np.concatenate([[0], np.cumsum(t == EOT_ID)])
            pos = pos[eots[pos] - eots[pos - k + 2] == 0]  # no end-of-text among tokens p-k+2 .. p-1
        ids = self.gram_ids(t, done)  # ids[j - 1]: order j's id of the j-gram ending at each position
        prefix = ids[k - 2][pos - 1] if k > 1 else np.zeros(pos.size, dtype=np.int64)
        keys, first, counts = np.unique(prefix * V + t[pos], return_index=True, return_counts=True)
        at = pos[first]
        suffix = ids[k - 2][at] if k > 1 else np.zeros(keys.size, dtype=np.int64)
        return NGramCounts(keys, counts, suffix, t[at - (k - 1)] == EOT_ID)

    def gram_ids(self, t: np.ndarray, done: list[np.ndarray]) -> list[np.ndarray]:
        """For each finished order j, the table id of the j-gram ending at each position of `t`
        (-1 where it is not in the table or would start before `t`)."""
        ids = []
        prefix = np.zeros(t.size, dtype=np.int64)
        for keys in done:
            query = prefix * self.vocab_size + t
            at = np.searchsorted(keys, query).clip(max=keys.size - 1)
            found = np.where((prefix >= 0) & (keys[at] == query), at, -1)
            ids.append(found)
            prefix = np.concatenate([[-1], found[:-1]])
        return ids

    def _store(self, tables: dict, k: int, keys: np.ndarray, counts: np.ndarray, n_contexts: int) -> None:
        """Order k's table: sorted keys, the counts it smooths, each context's slice, the discounts."""
        if self.cfg.discount is not None:
            d = np.full(3, self.cfg.discount)
        else:
            d = modified_discounts(counts)
            if d is None:
                log.info("order %d: counts of counts give no valid modified-KN discounts; using D = %s",
                         k, FALLBACK_DISCOUNT)
                d = np.full(3, FALLBACK_DISCOUNT)
        tables[f"keys_{k}"] = torch.from_numpy(keys)
        tables[f"counts_{k}"] = torch.from_numpy(counts.astype(np.float64))
        tables[f"indptr_{k}"] = torch.from_numpy(np.searchsorted(keys, np.arange(n_contexts + 1) * self.vocab_size))
        tables[f"discounts_{k}"] = torch.from_numpy(d.astype(np.float64))

    def load_fitted(self, state: dict[str, torch.Tensor]) -> None:
        """Install count tables (from `fit` or a saved state dict), whatever their sizes.

        Per context it also derives (not saved) the denominator sum_v c_k(h v) and the numerator
        of gamma_k(h), D_1 N_1(h .) + D_2 N_2(h .) + D_3 N_3+(h .), as segment sums over the slices.
        """
        device = self.anchor.device
        for k in range(1, self.cfg.order + 1):
            for name in ("keys", "counts", "indptr", "discounts"):
                key = f"{name}_{k}"
                if key not in state:
                    raise ValueError(f"n-gram state has no '{key}'; was it saved from an order-{self.cfg.order} model?")
                self.register_buffer(key, state[key].to(device))
            _, counts, indptr, _ = self.table(k)
            for name, values in (("denom", counts), ("gamma_num", self.discount_of(k, counts))):
                cums = torch.cat([values.new_zeros(1), torch.cumsum(values, 0)])
                self.register_buffer(f"{name}_{k}", cums[indptr[1:]] - cums[indptr[:-1]], persistent=False)
        self.fitted = True

    # -- scoring -------------------------------------------------------------------------------
    def table(self, k: int) -> tuple[torch.Tensor, ...]:
        return tuple(getattr(self, f"{name}_{k}") for name in ("keys", "counts", "indptr", "discounts"))

    def discount_of(self, k: int, counts: torch.Tensor) -> torch.Tensor:
        """D_k(c): D_1 for c = 1, D_2 for c = 2, D_3+ for c >= 3, and 0 for c = 0."""
        d = getattr(self, f"discounts_{k}")
        return torch.where(counts >= 3, d[2], torch.where(counts >= 2, d[1], d[0])) * (counts > 0)

    def forward(self, idx: torch.Tensor) -> torch.Tensor:
        """Log-probabilities (B, T, V) of the next token at every position."""
        if not self.fitted:
            raise RuntimeError("the n-gram model has no counts: call fit(train_tokens) first")
        B, T = idx.shape
        ctx_ids = self.context_ids(idx)  # per order k: (B, T) id of the (k-1)-gram ending at t, -1 if unseen
        rows = max(1, BLOCK_ELEMENTS // self.vocab_size)
        flat = [c.reshape(-1) for c in ctx_ids]
        out = [self.log_probs([c[i : i + rows] for c in flat]) for i in range(0, B * T, rows)]
        return torch.cat(out).view(B, T, self.vocab_size).float()

    def context_ids(self, idx: torch.Tensor) -> list[torch.Tensor]:
        """For k = 1..n, order k's context at each position: the table id of the k-1 tokens ending
        there (order 1: the empty context, id 0), or -1 where those tokens were never seen."""
        idx = idx.long()
        ids = [torch.zeros_like(idx)]
        # the longest context allowed at each position: reaching back at most to the last end-of-text
        if self.cfg.reset_at_eot:
            t = torch.arange(idx.shape[1], device=idx.device)
            last = torch.where(idx == EOT_ID, t, -1).cummax(dim=1).values
            history = torch.where(last >= 0, t - last + 1, t + 1)
        else:
            history = (torch.arange(idx.shape[1], device=idx.device) + 1).expand_as(idx)
        for j in range(1, self.cfg.order):
            keys = self.table(j)[0]
            prefix = torch.zeros_like(idx)
            if j > 1:  # the (j-1)-gram ending one position earlier; none before the input starts
                prefix.fill_(-1)
                prefix[:, 1:] = ids[-1][:, :-1]
            query = prefix * self.vocab_size + idx
            pos = torch.searchsorted(keys, query).clamp(max=keys.numel() - 1)
            ids.append(torch.where((prefix >= 0) & (keys[pos] == query) & (history >= j), pos, -1))
        return ids

    def log_probs(self, ctx_ids: list[torch.Tensor]) -> torch.Tensor:
        """Interpolated KN for M positions given their context id per order -> (M, V) log-probs.

        P_1 (empty context) is the same row for every position and is computed once; each higher
        order scales P_{k-1} by gamma_k (1 for an unseen context) and adds the discounted counts
        of the n-grams its contexts have seen.
        """
        V = self.vocab_size
        p1 = torch.full((1, V), 1.0 / V, dtype=torch.float64, device=ctx_ids[0].device)  # P_0: uniform
        self.interpolate(p1, 1, ctx_ids[0][:1])
        p = p1.expand(ctx_ids[0].shape[0], V).clone()
        for k in range(2, self.cfg.order + 1):
            self.interpolate(p, k, ctx_ids[k - 1])
        return p.log()

    def interpolate(self, p: torch.Tensor, k: int, ctx: torch.Tensor) -> None:
        """In place: p (M, V) holding P_{k-1} becomes P_k for the order-k context ids `ctx` (M,)."""
        keys, counts, indptr, _ = self.table(k)
        M, V = p.shape
        safe = ctx.clamp(min=0)
        denom = torch.where(ctx >= 0, getattr(self, f"denom_{k}")[safe], 0.0)
        seen = denom > 0
        p *= torch.where(seen, getattr(self, f"gamma_num_{k}")[safe] / denom.clamp(min=1e-300), 1.0)[:, None]
        start = indptr[safe]
        length = torch.where(seen, indptr[safe + 1] - start, 0)
        total = int(length.sum())
        if total:
            row = torch.repeat_interleave(torch.arange(M, device=p.device), length)
            entry = torch.repeat_interleave(start - (torch.cumsum(length, 0) - length), length)
            entry = entry + torch.arange(total, device=p.device)
            c = counts[entry]
            p[row, keys[entry] % V] += (c - self.discount_of(k, c)).clamp(min=0) / denom[row]

    def num_params(self, non_embedding: bool = False) -> int:
        """Stored n-gram entries over all orders (there are no embeddings)."""
        if not self.fitted:
            return 0
        return sum(self.table(k)[0].numel() for k in range(1, self.cfg.order + 1))

    def flops_per_token(self, seq_len: int) -> float:
        """Counting has no multiply-accumulates per token; reported as 0."""
        return 0.0
