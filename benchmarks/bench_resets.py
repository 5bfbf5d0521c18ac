"""Training-step time of the harness's LSTM with state resets at end-of-text, against a plain loop.

    python -m benchmarks.bench_resets --steps 30 --repeats 5

Three sides, same shapes (the baselines_cpu LSTM: 2 x 76 units, 64-wide embeddings, batch 32 x 64
characters), the same built-in-corpus streams and the same AdamW step:
- `plain`: `nn.Embedding` + `nn.LSTM` + `nn.Linear` written here, the state carried with no
  resets (one fused call per step: the speed to match);
- `harness`: the harness's `LSTM.step` with a reset after every end-of-text (`run_with_resets`:
  two fused calls per chunk);
- `harness_no_reset`: the same model with `reset_at_eot: false`.
The sides alternate within each repeat, so a shared machine's load falls on all of them alike;
the table holds the median seconds per step and each side's ratio to `plain`.
"""

from __future__ import annotations

import argparse
import statistics
import time
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from research.config import DataConfig, RunConfig, TokenizerConfig
from research.data import load_corpus
from research.data.batches import ContiguousStreams
from research.errors import run_main
from research.io import atomic_write_csv
from research.models import build_model
from research.tokenizers import train_tokenizer

OUT = Path(__file__).parent / "results" / "cpu_resets.csv"
SHAPE = {"n_layer": 2, "n_embd": 64, "n_hidden": 76}


class PlainLSTM(nn.Module):
    def __init__(self, vocab: int):
        super().__init__()
        self.emb = nn.Embedding(vocab, SHAPE["n_embd"])
        self.lstm = nn.LSTM(SHAPE["n_embd"], SHAPE["n_hidden"], SHAPE["n_layer"], batch_first=True)
        self.head = nn.Linear(SHAPE["n_hidden"], vocab)

    def step(self, x, state, reset):
        out, state = self.lstm(self.emb(x), state)
        return self.head(out), state


def time_side(model, data: ContiguousStreams, steps: int, eot: int, resets: bool) -> float:
    opt = torch.optim.AdamW(model.parameters(), lr=3e-3)
    state = None
    t0 = time.perf_counter()
    for step in range(steps):
        x, y, _ = data.batch(step)
        logits, state = model.step(x, state, (x == eot) if resets else None)
        state = tuple(s.detach() for s in state)
        loss = F.cross_entropy(logits.flatten(0, 1), y.flatten())
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
    return (time.perf_counter() - t0) / steps


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--steps", type=int, default=30)
    p.add_argument("--repeats", type=int, default=5)
    p.add_argument("--out", type=Path, default=OUT)
    args = p.parse_args(argv)
    docs = load_corpus(DataConfig(source="builtin", n_docs=3000))
    tok = train_tokenizer(TokenizerConfig(kind="char"), docs.train)
    train = tok.encode_docs(docs.train)
    data = ContiguousStreams(train, 32, 64)
    resets_per_chunk = float(np.mean([(data.batch(s)[0] == tok.eot_id).sum().item() for s in range(100)]))

    def harness(reset: bool):
        torch.manual_seed(0)
        cfg = RunConfig.from_dict({"model": {"arch": "lstm", "reset_at_eot": reset, **SHAPE}}).model
        return build_model(cfg, tok.vocab_size)

    sides = {
        "plain": lambda: (PlainLSTM(tok.vocab_size), False),
        "harness": lambda: (harness(True), True),
        "harness_no_reset": lambda: (harness(False), False),
    }
    times: dict[str, list[float]] = {k: [] for k in sides}
    for _ in range(args.repeats):
        for name, make in sides.items():
            model, resets = make()
            times[name].append(time_side(model, data, args.steps, tok.eot_id, resets))
    base = statistics.median(times["plain"])
    rows = [{"side": name, "median_s_per_step": f"{statistics.median(t):.5f}",
             "ratio_to_plain": f"{statistics.median(t) / base:.3f}", "repeats": args.repeats, "steps": args.steps,
             "threads": torch.get_num_threads(), "resets_per_chunk": f"{resets_per_chunk:.1f}"}
            for name, t in times.items()]
    atomic_write_csv(args.out, rows, list(rows[0]))
    for row in rows:
        print(row)
    return 0


if __name__ == "__main__":
    raise SystemExit(run_main(main))
