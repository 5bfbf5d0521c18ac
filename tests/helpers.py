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
