"""Small builders the tests share: a tiny grid file and a CLI runner."""

from __future__ import annotations

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
