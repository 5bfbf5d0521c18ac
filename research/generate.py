"""Sampling from any registered model: temperature, top-k, top-p, stop at end-of-text."""

from __future__ import annotations

import torch


def filter_logits(logits: torch.Tensor, top_k: int | None = None, top_p: float | None = None) -> torch.Tensor:
    """Mask logits (.., V) outside the top-k and outside the smallest set with mass >= top_p."""
    if top_k is not None and 0 < top_k < logits.shape[-1]:
        kth = torch.topk(logits, top_k, dim=-1).values[..., -1:]
        logits = logits.masked_fill(logits < kth, float("-inf"))
    if top_p is not None and 0.0 < top_p < 1.0:
        sorted_logits, order = torch.sort(logits, descending=True, dim=-1)
        cum = sorted_logits.softmax(-1).cumsum(-1)
        drop = cum - sorted_logits.softmax(-1) >= top_p  # keep the token that crosses top_p
        sorted_logits = sorted_logits.masked_fill(drop, float("-inf"))
        logits = torch.full_like(logits, float("-inf")).scatter(-1, order, sorted_logits)
    return logits


@torch.no_grad()
def generate(
    model,
    prompt_ids: list[int],
    max_new_tokens: int,
    eot_id: int,
    temperature: float = 1.0,
    top_k: int | None = None,
    top_p: float | None = None,
    generator: torch.Generator | None = None,
    stream=None,
) -> list[int]:
    """Sample up to `max_new_tokens` after `prompt_ids`, stopping at (and dropping) end-of-text.

    An empty prompt starts from the end-of-text token, i.e. at a document boundary as in training.
    `stream`, if given, is called with each new token id as it is sampled.
    """
    was_training = model.training
    model.eval()
    device = next(model.parameters()).device
    ids = list(prompt_ids) or [eot_id]
    out: list[int] = []
    ctx = model.block_size
    try:
        for _ in range(max_new_tokens):
            window = ids[-ctx:] if ctx else ids
            logits = model(torch.tensor([window], device=device))[0, -1].float()
            if temperature <= 0:
                nxt = int(logits.argmax())
            else:
                probs = filter_logits(logits / temperature, top_k, top_p).softmax(-1)
                nxt = int(torch.multinomial(probs.cpu(), 1, generator=generator))
            if nxt == eot_id:
                break
            ids.append(nxt)
            out.append(nxt)
            if stream is not None:
                stream(nxt)
    finally:
        model.train(was_training)
    return out


@torch.no_grad()
def generate_batch(
    model,
    prompt_ids: list[int],
    n: int,
    max_new_tokens: int,
    eot_id: int,
    temperature: float = 1.0,
    top_k: int | None = None,
    top_p: float | None = None,
    generator: torch.Generator | None = None,
) -> list[tuple[list[int], bool]]:
    """`n` independent samples after the same prompt, sampled as one batch: (new ids, stopped at EOT).

    Same rules as `generate` (empty prompt starts from end-of-text; the EOT is dropped), but the n
    rows share every forward pass, so n samples cost about one. A row that has produced EOT keeps
    being computed (the batch stays rectangular) but its later tokens are discarded.
    """
    if n <= 0:
        return []
    was_training = model.training
    model.eval()
    device = next(model.parameters()).device
    ids = torch.tensor([list(prompt_ids) or [eot_id]] * n, dtype=torch.long)
    done = torch.zeros(n, dtype=torch.bool)
    outs: list[list[int]] = [[] for _ in range(n)]
    ctx = model.block_size
    try:
        for _ in range(max_new_tokens):
            window = ids[:, -ctx:] if ctx else ids
            logits = model(window.to(device))[:, -1].float().cpu()
            if temperature <= 0:
                nxt = logits.argmax(-1)
            else:
                probs = filter_logits(logits / temperature, top_k, top_p).softmax(-1)
                nxt = torch.multinomial(probs, 1, generator=generator)[:, 0]
            for row in (~done).nonzero()[:, 0].tolist():
                token = int(nxt[row])
                if token == eot_id:
                    done[row] = True
                else:
                    outs[row].append(token)
            if bool(done.all()):
                break
            ids = torch.cat([ids, nxt[:, None]], dim=1)
    finally:
        model.train(was_training)
    return [(out, bool(stopped)) for out, stopped in zip(outs, done.tolist())]
