"""Small builders the tests share: a tiny grid file and a CLI runner."""

from __future__ import annotations

import contextlib
import subprocess
import sys
from pathlib import Path

import yaml

REPO = Path(__file__).resolve().parents[1]

TINY_BASE = {
    "data": {"source": "builtin", "n_docs": 300},
    "tokenizer": {"kind": "char"},
    "model": {"arch": "gpt", "n_layer": 1, "n_head": 2, "n_embd": 16, "block_size": 32},
    "train": {"max_steps": 12, "batch_size": 4, "eval_every": 6, "eval_batches": 2, "log_every": 3,
              "warmup_steps": 2},
    "eval": {"samples": 1, "sample_tokens": 20, "val_max_tokens": 2000, "per_position_windows": 64},
}


def write_grid(path: Path, name: str = "tiny", grid: dict | None = None, seeds=(0,), **base_updates) -> Path:
    base = yaml.safe_load(yaml.safe_dump(TINY_BASE))
    for section, values in base_updates.items():
        base.setdefault(section, {}).update(values)
    doc = {"name": name, "base": base, "grid": grid if grid is not None else {"model.n_embd": [16, 24]},
           "seeds": list(seeds)}
    path.write_text(yaml.safe_dump(doc, sort_keys=False))
    return path


def run_cli(*args: str, module: str = "ablations.run", timeout: float = 300) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", module, *map(str, args)], cwd=REPO, capture_output=True,
                          text=True, timeout=timeout)


def store_untrained_cell(root: Path, config: dict):
    """A cell folder as the grid runner stores it (config.yaml, tokenizer/, model.pt) holding an
    untrained model of `config`, for tests of the tools that read stored cells.
    Returns (cell_dir, model, tokenizer, corpus)."""
    import torch

    from research import cell as cell_files
    from research.checkpoint import save_weights
    from research.config import RunConfig
    from research.data import load_corpus
    from research.models import build_model
    from research.tokenizers import train_tokenizer

    cfg = RunConfig.from_dict(config)
    corpus = load_corpus(cfg.data)
    tok = train_tokenizer(cfg.tokenizer, corpus.train)
    torch.manual_seed(0)
    model = build_model(cfg.model, tok.vocab_size)
    cell_dir = Path(root) / "grid" / "cell"
    cell_dir.mkdir(parents=True)
    cell_files.write_config(cell_dir, cfg.to_dict())
    tok.save(cell_files.tokenizer_dir(cell_dir))
    save_weights(model, cell_dir)
    return cell_dir, model, tok, corpus


def store_grid(results: Path, grid_file: Path, stories: bool = True, judge: bool = True) -> Path:
    """A finished grid as the runner stores it, without training: grid.json from the real grid file
    (real cell ids, axes and labels) and per cell its config, a loss log falling from ln(vocab) with
    a per-configuration rate and a per-seed offset, metrics.json, DONE and, optionally, stories
    (samples/generation.jsonl, two prompts) and a judge result. For tests of what reads results
    (the app, evals.human); the numbers are made up and say nothing about the models."""
    import json
    import math
    import random

    from ablations import records
    from ablations.grid import load_grid

    grid = load_grid(Path(grid_file))
    grid_dir = Path(results) / grid.name
    records.write_grid(grid_dir, {"name": grid.name, "description": grid.description, "source": str(grid_file),
                                  "axes": grid.axes, "overrides": [], "reproduces": grid.reproduces,
                                  "labels": grid.labels,
                                  "cells": [{"id": c.id, "seed": c.seed, "axes": c.axes} for c in grid.cells]})
    configs: dict[str, int] = {}
    for cell in grid.cells:
        k = configs.setdefault(json.dumps(cell.axes, sort_keys=True, default=str), len(configs))
        rng = random.Random(f"{cell.id}")
        cell_dir = grid_dir / cell.id
        cell_dir.mkdir(parents=True)
        records.write_config(cell_dir, cell.config.to_dict())
        steps = cell.config.train.max_steps
        every, evals = max(1, cell.config.train.log_every), max(1, cell.config.train.eval_every)
        rate, offset = 0.004 + 0.001 * k, 0.03 * rng.random()
        lines = ["step,train/loss,val/loss"]
        for step in sorted(set(range(every - 1, steps, every)) | set(range(evals - 1, steps, evals))):
            loss = 1.5 + 2.5 * math.exp(-rate * step) + offset
            train = f"{loss:.4f}" if (step + 1) % every == 0 else ""
            val = f"{loss + 0.05:.4f}" if (step + 1) % evals == 0 else ""
            lines.append(f"{step},{train},{val}")
        (cell_dir / records.LOG).write_text("\n".join(lines) + "\n")
        final = 1.55 + 2.5 * math.exp(-rate * steps) + offset
        records.write_metrics(cell_dir, {"params": 60000 + 37 * k, "val_loss": final, "val_bpb": final / math.log(2),
                                         "val_ppl": math.exp(final), "wall_s": 20.0 + rng.random(),
                                         "tokens_per_s": 9000.0 + 100 * rng.random()})
        if stories:
            (cell_dir / "samples").mkdir()
            rows = [{"prompt": p, "sample": 0, "completion": f" story {i} by configuration {k}, seed {cell.seed}.",
                     "text": f"{p} story {i} by configuration {k}, seed {cell.seed}.", "n_tokens": 9,
                     "stopped_at_eot": True} for i, p in enumerate(["Once upon a time", "Tom had a dog."])]
            (cell_dir / "samples" / "generation.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
        if judge:
            (cell_dir / "evals").mkdir()
            scores = {d: 3.0 + k * 0.5 + rng.random() for d in ("grammar", "creativity", "consistency", "plot")}
            (cell_dir / "evals" / "judge.json").write_text(json.dumps({
                "eval": "judge", "version": 1, "status": "ok", "n": 2, "metrics": scores,
                "details": {"judge_model": "test-judge", "temperature": 0.0}}))
        records.mark_done(cell_dir)
    return grid_dir


CHROMIUM = Path("/usr/bin/chromium")
CHROMIUM_ARGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
                 "--disable-background-networking", "--disable-component-update", "--disable-sync"]


@contextlib.contextmanager
def chromium():
    """Debian's Chromium driven by playwright (never a downloaded browser), or the test skips."""
    import pytest

    if not CHROMIUM.exists():
        pytest.skip("/usr/bin/chromium is not installed (apt-get install chromium)")
    sync_api = pytest.importorskip("playwright.sync_api", reason="pip install playwright (no browser download)")
    with sync_api.sync_playwright() as pw:
        browser = pw.chromium.launch(executable_path=str(CHROMIUM), args=CHROMIUM_ARGS)
        try:
            yield browser
        finally:
            browser.close()
