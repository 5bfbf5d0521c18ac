"""Figures (matplotlib, PDF + PNG preview) from results folders; nothing is retrained.

Each function takes collected grids and returns the figure's file stem, or None when the results
hold nothing to draw (e.g. no cell ran the novelty eval); the build lists what it skipped and why.
Files are deterministic: PDF and PNG metadata carry no dates or versions.
"""

from __future__ import annotations

import math
import textwrap
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402

from paper.collect import GridRecord, read_curve, read_per_position  # noqa: E402

SAMPLE_SENTENCE = "Once upon a time, there was a little girl named Lily. She liked to play."



def wrap(label: str, width: int = 48) -> str:
    """Long configuration names (one per panel) on several lines, so neighbouring titles never overlap."""
    return "\n".join(textwrap.wrap(label, width, break_on_hyphens=True)) or label

def save(fig, out_dir: Path, stem: str) -> str:
    out_dir.mkdir(parents=True, exist_ok=True)
    fig.savefig(out_dir / f"{stem}.pdf", metadata={"CreationDate": None, "ModDate": None, "Producer": None,
                                                    "Creator": None})
    fig.savefig(out_dir / f"{stem}.png", dpi=110, metadata={"Software": None})
    plt.close(fig)
    return stem


def _style():
    plt.rcParams.update({"font.size": 8, "axes.spines.top": False, "axes.spines.right": False,
                         "figure.dpi": 100, "legend.fontsize": 7, "pdf.fonttype": 42})


def loss_curves(grid: GridRecord, out_dir: Path) -> str | None:
    """Training (thin) and validation (thick) loss against step, mean over seeds per configuration."""
    _style()
    fig, ax = plt.subplots(figsize=(5, 3.2))
    drawn = False
    for i, config in enumerate(grid.configs()):
        cells = [c for c in grid.cells if c.config == config and c.status == "done"]
        color = f"C{i % 10}"
        for key, width, alpha in (("train/loss", 0.8, 0.45), ("val/loss", 1.8, 1.0)):
            series = [dict(read_curve(c.path).get(key, [])) for c in cells]
            steps = sorted(set.intersection(*(set(s) for s in series))) if series and all(series) else []
            if not steps:
                continue
            mean = np.array([np.mean([s[t] for s in series]) for t in steps])
            label = config if key == "val/loss" else None
            ax.plot(steps, mean, color=color, lw=width, alpha=alpha, label=label)
            drawn = True
    if not drawn:
        plt.close(fig)
        return None
    ax.set_xlabel("step")
    ax.set_ylabel("loss (nats/token)")
    ax.set_title(f"{grid.name}: training (thin) and validation (thick) loss")
    ax.legend(frameon=False)
    fig.tight_layout()
    return save(fig, out_dir, f"{grid.name}_loss_curves")


def per_position(grid: GridRecord, out_dir: Path) -> str | None:
    """Loss at each context position, at several training steps (one panel per configuration)."""
    _style()
    configs = []
    for config in grid.configs():
        cell = next((c for c in grid.cells if c.config == config and c.status == "done"), None)
        records = read_per_position(cell.path) if cell else []
        if records:
            configs.append((config, records))
    if not configs:
        return None
    cols = min(3, len(configs))
    rows = math.ceil(len(configs) / cols)
    fig, axes = plt.subplots(rows, cols, figsize=(3.2 * cols, 2.6 * rows), squeeze=False, sharey=True)
    for ax, (config, records) in zip(axes.flat, configs):
        cmap = plt.get_cmap("viridis")
        for j, rec in enumerate(records):
            losses = rec["loss_by_position"]
            ax.plot(np.arange(1, len(losses) + 1), losses, color=cmap(j / max(1, len(records) - 1)), lw=1,
                    label=f"step {rec['step']}")
        ax.set_xscale("log")
        ax.set_title(wrap(config), fontsize=7)
        ax.set_xlabel("context position")
        ax.legend(frameon=False, fontsize=6)
    for ax in list(axes.flat)[len(configs):]:
        ax.axis("off")
    axes[0, 0].set_ylabel("loss (nats/token)")
    fig.tight_layout()
    return save(fig, out_dir, f"{grid.name}_per_position")


def _config_points(grids: list[GridRecord], x_key: str, y_key: str):
    points = []
    for grid in grids:
        for config in grid.configs():
            cells = [c for c in grid.cells if c.config == config and c.status == "done"]
            xs = [c.metrics[x_key] for c in cells if x_key in c.metrics]
            ys = [c.metrics[y_key] for c in cells if y_key in c.metrics]
            if xs and ys:
                points.append((f"{grid.name}: {config}", np.mean(xs), np.mean(ys),
                               np.std(ys, ddof=1) if len(ys) > 1 else 0.0))
    return points


def novelty_vs_perplexity(grids: list[GridRecord], out_dir: Path) -> str | None:
    _style()
    key = next((k for k in ("novelty/novelty_mean", "novelty/mean")
                if any(k in c.metrics for g in grids for c in g.cells)), None)
    if key is None:
        return None
    points = _config_points(grids, "val_ppl", key)
    if not points:
        return None
    fig, ax = plt.subplots(figsize=(4.2, 3.2))
    for i, (label, x, y, err) in enumerate(points):
        ax.errorbar([x], [y], yerr=[err], fmt="o", color=f"C{i % 10}", label=label, ms=4, capsize=2)
    ax.set_xlabel("validation perplexity (per token)")
    ax.set_ylabel("novelty (1 - max cosine to training set)")
    ax.legend(frameon=False, fontsize=6)
    fig.tight_layout()
    return save(fig, out_dir, "novelty_vs_perplexity")


def loss_vs_params(grids: list[GridRecord], out_dir: Path) -> str | None:
    _style()
    points = _config_points(grids, "params", "val_bpb")
    if not points:
        return None
    fig, ax = plt.subplots(figsize=(4.2, 3.2))
    for i, (label, x, y, err) in enumerate(points):
        ax.errorbar([x], [y], yerr=[err], fmt="o", color=f"C{i % 10}", label=label, ms=4, capsize=2)
    floors = {c.metrics.get("floor_bpb") for g in grids for c in g.cells if c.metrics.get("floor_bpb")}
    for floor in sorted(floors):
        ax.axhline(floor, color="0.5", ls=":", lw=1)
        ax.text(ax.get_xlim()[0], floor, " grammar entropy", va="bottom", fontsize=6, color="0.4")
    ax.set_xscale("log")
    ax.set_xlabel("parameters")
    ax.set_ylabel("validation bits per byte")
    ax.legend(frameon=False, fontsize=6)
    fig.tight_layout()
    return save(fig, out_dir, "loss_vs_params")


def attention_figure(grids: list[GridRecord], out_dir: Path) -> str | None:
    """Attention maps for one sample sentence: the RNN with attention and a transformer, when present."""
    import torch

    from research.attention import attention_maps
    from research.checkpoint import load_cell

    picks = []
    for want in ("rnn_attention", None):  # None: any attention-based transformer
        for grid in grids:
            cell = next((c for c in grid.cells if c.status == "done" and (
                c.run_config.get("model", {}).get("arch") == want if want else
                c.run_config.get("model", {}).get("arch") not in ("rnn", "gru", "lstm", "ngram", "rnn_attention"))),
                None)
            if cell is not None:
                picks.append(cell)
                break
    maps = []
    for cell in picks:
        loaded = load_cell(cell.path)
        ids = loaded.tokenizer.encode(SAMPLE_SENTENCE)
        limit = loaded.model.block_size or 64
        ids = ids[: min(limit, 64)]
        try:
            layers = attention_maps(loaded.model, torch.tensor([ids]))
        except ValueError:
            continue
        last = layers[-1]
        weights = last.mean(0) if last.dim() == 3 else last  # average over heads
        labels = [loaded.tokenizer.decode([i]) or "␣" for i in ids]
        maps.append((f"{cell.run_config['model']['arch']} ({cell.grid}: {cell.config}), last layer", weights, labels))
    if not maps:
        return None
    _style()
    fig, axes = plt.subplots(1, len(maps), figsize=(4.2 * len(maps), 4), squeeze=False)
    for ax, (title, weights, labels) in zip(axes[0], maps):
        ax.imshow(weights.numpy(), cmap="Blues", vmin=0)
        step = max(1, len(labels) // 24)
        ticks = list(range(0, len(labels), step))
        ax.set_xticks(ticks, [labels[t].replace(" ", "␣") for t in ticks], fontsize=5)
        ax.set_yticks(ticks, [labels[t].replace(" ", "␣") for t in ticks], fontsize=5)
        ax.set_xlabel("attended position")
        ax.set_ylabel("query position")
        ax.set_title(wrap(title), fontsize=7)
    fig.tight_layout()
    return save(fig, out_dir, "attention_maps")
