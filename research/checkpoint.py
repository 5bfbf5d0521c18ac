"""Loading a finished cell back: its model weights, tokenizer and resolved config.

Where they live is `research.cell`'s business. Weights are stored as a plain state dict and
loaded with `weights_only=True`, so a results folder from elsewhere cannot run code on load.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import torch

from research import cell as cell_files
from research.config import RunConfig
from research.errors import UserError
from research.models import build_model
from research.tokenizers import load_tokenizer


@dataclass
class LoadedCell:
    model: torch.nn.Module
    tokenizer: object
    config: RunConfig
    cell_dir: Path


def save_weights(model: torch.nn.Module, cell_dir: Path) -> None:
    import io

    from research.io import atomic_write_bytes

    buf = io.BytesIO()
    torch.save({"state_dict": model.state_dict()}, buf)
    atomic_write_bytes(cell_files.weights_path(cell_dir), buf.getvalue())


def load_run_config(cell_dir: Path) -> RunConfig:
    """The cell's stored config as a checked RunConfig (`research.cell.read_config` gives the dict)."""
    return RunConfig.from_dict(cell_files.read_config(cell_dir, required=True), where="")


def load_cell(cell_dir, device: str = "cpu") -> LoadedCell:
    cell_dir = Path(cell_dir)
    config = load_run_config(cell_dir)
    weights = cell_files.weights_path(cell_dir)
    if not weights.exists():
        raise UserError(f"{weights}: no trained weights; the cell has not finished (re-run its grid)")
    tokenizer = load_tokenizer(cell_files.tokenizer_dir(cell_dir))
    model = build_model(config.model, tokenizer.vocab_size)
    state = torch.load(weights, map_location=device, weights_only=True)["state_dict"]
    if not model.trainable:
        model.load_fitted(state)
    else:
        model.load_state_dict(state)
    return LoadedCell(model.to(device).eval(), tokenizer, config, cell_dir)
