"""Sliced per-token NLL: the same numbers as one cross-entropy over the whole batch."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

from research.loss import token_nats


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
@pytest.mark.parametrize("max_elements", [7, 50 * 13, 10**9])  # below one row, several slices, one slice
def test_token_nats_matches_one_cross_entropy_over_the_batch(dtype, max_elements):
    g = torch.Generator().manual_seed(0)
    logits = (torch.randn(3, 17, 50, generator=g) * 4).to(dtype)
    targets = torch.randint(0, 50, (3, 17), generator=g)
    ref = F.cross_entropy(logits.float().transpose(1, 2), targets, reduction="none")
    got = token_nats(logits, targets, max_elements=max_elements)
    assert got.shape == targets.shape and got.dtype == torch.float32
    torch.testing.assert_close(got, ref, rtol=1e-6, atol=1e-6)  # float32 rounding only


def test_token_nats_never_upcasts_more_than_one_slice():
    """The largest float32 tensor allocated is one slice of rows, not (tokens x vocabulary)."""
    logits = torch.randn(64, 32, 1000, dtype=torch.bfloat16)
    targets = torch.randint(0, 1000, (64, 32))
    with torch.profiler.profile(profile_memory=True) as prof:
        token_nats(logits, targets, max_elements=100_000)
    biggest = max(e.cpu_memory_usage for e in prof.events() if e.cpu_memory_usage > 0)
    assert biggest <= 100 * 1000 * 4  # one slice of 100 rows in float32
    with torch.profiler.profile(profile_memory=True) as prof:
        F.cross_entropy(logits.float().view(-1, 1000), targets.view(-1), reduction="none")
    assert max(e.cpu_memory_usage for e in prof.events()) >= 64 * 32 * 1000 * 4  # what slicing avoids
