"""The one rolling loss (research.evaluation.split_loss) against the strided loop of the Hugging
Face perplexity guide, written out here token by token."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from research.evaluation import split_loss
from research.models.gpt import GPT

VOCAB = 11


def tiny_gpt(block_size: int = 16) -> GPT:
    torch.manual_seed(0)
    cfg = GPT.tiny_config()
    cfg.block_size = block_size
    return GPT(cfg, VOCAB).eval()


def guide_loss(model, tokens, window: int, stride: int) -> tuple[float, int]:
    """huggingface.co/docs/transformers/perplexity: windows begin at multiples of the stride and
    end `window` tokens later or at the stream's end; each scores the targets after the previous
    window's end. Written with explicit next-token targets, so no token is skipped."""
    last = len(tokens) - 1
    nats, count, prev_end = 0.0, 0, 0
    for begin in range(0, last, stride):
        end = min(begin + window, last)
        x = torch.as_tensor(tokens[begin:end], dtype=torch.long)[None]
        y = torch.as_tensor(tokens[begin + 1 : end + 1], dtype=torch.long)
        logp = torch.log_softmax(model(x)[0].double(), dim=-1)
        nll = -logp[torch.arange(len(y)), y]
        n = end - prev_end
        nats += nll[-n:].sum().item()
        count += n
        prev_end = end
        if end == last:
            break
    return nats, count


@pytest.mark.parametrize("length,stride", [(193, 16), (150, 16), (150, 5), (150, 1), (12, 16), (17, 16), (70, 15)])
def test_split_loss_is_the_guides_strided_loss_with_a_short_last_window(length, stride):
    m = tiny_gpt()
    stream = np.random.default_rng(length).integers(0, VOCAB, length)
    want_nats, want_count = guide_loss(m, stream, 16, stride)
    for batch_size in (1, 3, 64):  # batching changes nothing but float rounding
        got = split_loss(m, stream.astype(np.uint16), 16, batch_size=batch_size, stride=stride)
        assert got.tokens == want_count == length - 1  # every token after the first, once
        assert got.nats == pytest.approx(want_nats, rel=1e-5)


def test_the_ragged_tail_keeps_the_context_of_its_own_window():
    """The last 5 of 149 targets are scored from a 5-token window starting at 144 (the guide's
    rule), not from a window slid back to 16 tokens of context (lm-eval's rolling windows)."""
    m = tiny_gpt()
    stream = np.random.default_rng(3).integers(0, VOCAB, 150)
    got = split_loss(m, stream, 16)
    head = split_loss(m, stream[:145], 16)  # the 9 full windows
    x = torch.as_tensor(stream[144:149])[None]
    tail = -torch.log_softmax(m(x)[0].double(), -1)[torch.arange(5), torch.as_tensor(stream[145:150])].sum().item()
    assert got.nats == pytest.approx(head.nats + tail, rel=1e-5)
    slid = torch.as_tensor(stream[133:149])[None]
    slid_tail = -torch.log_softmax(m(slid)[0].double(), -1)[torch.arange(11, 16), torch.as_tensor(stream[145:150])]
    assert abs(slid_tail.sum().item() - tail) > 1e-4  # the two rules do differ here


def test_stride_and_max_tokens_are_checked_and_applied():
    m = tiny_gpt()
    stream = np.random.default_rng(1).integers(0, VOCAB, 193)
    assert split_loss(m, stream, 16, max_tokens=50).tokens == 50
    assert split_loss(m, stream, 16, max_tokens=50).nats == pytest.approx(split_loss(m, stream[:51], 16).nats)
    assert split_loss(m, stream[:1], 16).tokens == 0
    with pytest.raises(ValueError, match="stride"):
        split_loss(m, stream, 16, stride=17)
    with pytest.raises(ValueError, match="stride"):
        split_loss(m, stream, 16, stride=0)
