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
from matplotlib.ticker import FormatStrFormatter  # noqa: E402

from paper.collect import GridRecord, read_curve, read_per_position  # noqa: E402

SAMPLE_SENTENCE = "Once upon a time, there was a little girl named Lily. She liked to play."
#: figure stem -> a sentence (LaTeX) its caption adds: what the figure left out, or found worth saying
NOTES: dict[str, str] = {}
#: parameter counts within this relative range of each other are "matched"; plotting against them says nothing
MATCHED_PARAMS = 0.05



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


def legend_below(fig, handles, labels, fontsize: float = 7) -> float:
    """A legend under the axes in as many columns as fit the figure's width; returns the height
    (a fraction of the figure) that tight_layout must leave free for it."""
    width_chars = fig.get_figwidth() * 72 / (0.62 * fontsize)  # about 0.62 em per character
    ncol = max(1, min(3, len(labels), int(width_chars // (max(map(len, labels), default=1) + 6))))
    fig.legend(handles, labels, loc="lower center", ncol=ncol, frameon=False, fontsize=fontsize)
    rows = math.ceil(len(labels) / ncol)
    return min(0.5, (rows * fontsize * 1.5 + 6) / (fig.get_figheight() * 72))


def _style():
    plt.rcParams.update({"font.size": 8, "axes.spines.top": False, "axes.spines.right": False,
                         "figure.dpi": 100, "legend.fontsize": 7, "pdf.fonttype": 42})


def _band(cells, key: str):
    """(steps, mean, min, max) over the seeds of one configuration, at the steps every seed logged."""
    series = [dict(read_curve(c.path).get(key, [])) for c in cells]
    steps = sorted(set.intersection(*(set(s) for s in series))) if series and all(series) else []
    if not steps:
        return None
    values = np.array([[s[t] for t in steps] for s in series])  # (seeds, steps)
    return np.array(steps), values.mean(0), values.min(0), values.max(0)


def _done(grid: GridRecord, config: str):
    return [c for c in grid.cells if c.config == config and c.status == "done"]


def loss_curves(grid: GridRecord, out_dir: Path) -> str | None:
    """Training and validation loss against step: per configuration the mean over seeds (line)
    and the range over seeds (shaded, min to max); log-scaled loss when it spans a factor of 2."""
    _style()
    fig, axes = plt.subplots(1, 2, figsize=(7.2, 3.2), sharey=True)
    drawn, span = False, []
    for i, config in enumerate(grid.configs()):
        cells = _done(grid, config)
        color = f"C{i % 10}"
        for ax, key in zip(axes, ("train/loss", "val/loss")):
            band = _band(cells, key)
            if band is None:
                continue
            steps, mean, lo, hi = band
            ax.plot(steps, mean, color=color, lw=1.4, label=f"{config} (n={len(cells)})")
            if len(cells) > 1:
                ax.fill_between(steps, lo, hi, color=color, alpha=0.2, lw=0)
            span += [lo.min(), hi.max()]
            drawn = True
    if not drawn:
        plt.close(fig)
        return None
    for ax, title in zip(axes, ("training loss", "validation loss (logged batches)")):
        if min(span) > 0 and max(span) / min(span) > 2:
            ax.set_yscale("log")
        ax.set_xlabel("step")
        ax.set_title(title)
    axes[0].set_ylabel("loss (nats/token)")
    handles, labels = axes[1].get_legend_handles_labels()
    if not handles:
        handles, labels = axes[0].get_legend_handles_labels()
    bottom = legend_below(fig, handles, labels)
    fig.suptitle(f"{grid.name}: mean over seeds, shaded: min to max over seeds", fontsize=8)
    fig.tight_layout(rect=(0, bottom, 1, 1))
    from paper.convergence import still_falling

    stem = f"{grid.name}_loss_curves"
    NOTES[stem] = still_falling(grid)
    return save(fig, out_dir, stem)


PER_POSITION_STEPS = 3  # training points drawn: the first record after initialisation, the middle, the last


def per_position(grid: GridRecord, out_dir: Path) -> str | None:
    """Loss at each context position (log-scaled), one panel per training point, every configuration
    in each panel (colours as in the loss curves). Each curve is the mean over the configuration's
    seeds of records that each average `eval.per_position_windows` seeded validation windows."""
    _style()
    curves: dict[int, list] = {}  # step -> [(colour index, label, losses)]
    windows = set()
    for i, config in enumerate(grid.configs()):
        cells = _done(grid, config)
        per_cell = [r for r in ({r["step"]: r["loss_by_position"] for r in read_per_position(c.path)} for c in cells)
                    if r]
        if not per_cell:
            continue
        windows |= {c.run_config.get("eval", {}).get("per_position_windows") for c in cells}
        for step in set.intersection(*(set(r) for r in per_cell)):
            curves.setdefault(step, []).append((i, f"{config} (n={len(per_cell)})",
                                                np.mean([r[step] for r in per_cell], axis=0)))
    if not curves:
        return None
    trained = sorted(s for s in curves if s > 0) or sorted(curves)
    k = min(PER_POSITION_STEPS, len(trained))
    steps = sorted({trained[round(j * (len(trained) - 1) / max(1, k - 1))] for j in range(k)})
    fig, axes = plt.subplots(1, len(steps), figsize=(2.6 * len(steps) + 0.8, 3.0), squeeze=False, sharey=True)
    for ax, step in zip(axes[0], steps):
        for i, label, losses in curves[step]:
            ax.plot(np.arange(1, len(losses) + 1), losses, color=f"C{i % 10}", lw=1.2, label=label)
        ax.set_xscale("log")
        ax.xaxis.set_major_formatter(FormatStrFormatter("%g"))
        ax.set_title(f"step {step}")
        ax.set_xlabel("context position (tokens seen)")
    axes[0, 0].set_ylabel("loss (nats/token)")
    handles, labels = axes[0, -1].get_legend_handles_labels()
    bottom = legend_below(fig, handles, labels)
    shown = ", ".join(str(w) for w in sorted(w for w in windows if w)) or "the eval's"
    fig.suptitle(f"{grid.name}: loss by position, mean over seeds of {shown} validation windows each", fontsize=8)
    fig.tight_layout(rect=(0, bottom, 1, 1))
    return save(fig, out_dir, f"{grid.name}_per_position")


def _config_points(grids: list[GridRecord], x_key: str, y_key: str):
    points = []
    for grid in grids:
        for config in grid.configs():
            cells = _done(grid, config)
            xs = [c.metrics[x_key] for c in cells if x_key in c.metrics]
            ys = [c.metrics[y_key] for c in cells if y_key in c.metrics]
            if xs and ys:
                points.append((_prefixed(grids, grid, config), np.mean(xs), np.mean(ys),
                               np.std(ys, ddof=1) if len(ys) > 1 else 0.0))
    return points


def _prefixed(grids: list[GridRecord], grid: GridRecord, config: str) -> str:
    return f"{grid.name}: {config}" if len(grids) > 1 else config


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


def training_flops(cell) -> float | None:
    """Training FLOPs of a cell: FLOPs per token (each application of a shared block counted) x
    training tokens."""
    f, t = cell.metrics.get("flops_per_token"), cell.metrics.get("train_tokens")
    return float(f) * float(t) if f and t else None


def _size_axis(ax) -> None:
    """Log scale when the sizes span more than a decade (else linear), counts written 40k, 1.2M, 3G."""
    from matplotlib.ticker import EngFormatter, LogLocator, MaxNLocator

    lo, hi = ax.dataLim.intervalx
    if lo > 0 and hi / lo > 10:  # at least a decade: 1-2-5 ticks, so several fall inside the data
        ax.set_xscale("log")
        ax.xaxis.set_major_locator(LogLocator(base=10, subs=(1.0, 2.0, 5.0)))
        ax.xaxis.set_minor_formatter(plt.NullFormatter())
    else:  # within a decade a log axis may hold no major tick at all, hence no label: linear
        ax.xaxis.set_major_locator(MaxNLocator(4))
    ax.xaxis.set_major_formatter(EngFormatter(sep=""))
    ax.margins(x=0.08)


def bpb_vs_size(grids: list[GridRecord], out_dir: Path) -> str | None:
    """The architecture comparison: validation bits per byte against parameters and against
    training FLOPs, each seed a small point, each configuration's mean a large marker."""
    _style()
    series = []
    for grid in grids:
        for config in grid.configs():
            cells = [c for c in _done(grid, config) if "val_bpb" in c.metrics and "params" in c.metrics]
            if cells:
                series.append((_prefixed(grids, grid, config), cells))
    if not series:
        return None
    stem = "bpb_vs_params_and_flops"
    params = [float(np.mean([c.metrics["params"] for c in cells])) for _, cells in series]
    matched = len(series) > 1 and (max(params) - min(params)) <= MATCHED_PARAMS * float(np.mean(params))
    NOTES[stem] = (f"Parameters are not drawn: every configuration has {_count(min(params))}--"
                   f"{_count(max(params))} parameters (matched within {MATCHED_PARAMS:.0%}), so bits per byte "
                   "against parameters would show no trend.").replace("%", "\\%") if matched else ""
    fig, axes = plt.subplots(1, 1 if matched else 2, figsize=(4.4 if matched else 7.2, 3.4), sharey=True,
                             squeeze=False)
    axes = axes[0]
    panels = ["flops"] if matched else ["params", "flops"]
    markers = "osD^vP*Xh<>"
    for i, (label, cells) in enumerate(series):
        color, marker = f"C{i % 10}", markers[(i // 10) % len(markers)]
        ys = np.array([c.metrics["val_bpb"] for c in cells])
        for ax, panel in zip(axes, panels):
            xs = [float(c.metrics["params"]) if panel == "params" else training_flops(c) for c in cells]
            if any(x is None for x in xs):
                continue
            ax.scatter(xs, ys, s=9, color=color, alpha=0.45, lw=0, marker=marker)
            ax.scatter([np.mean(xs)], [ys.mean()], s=55, color=color, marker=marker, edgecolor="black", lw=0.6,
                       label=f"{label} (n={len(cells)})" if ax is axes[0] else None, zorder=3)
    all_y = [c.metrics["val_bpb"] for _, cells in series for c in cells]
    low, high = min(all_y), max(all_y)
    floors = sorted({c.metrics.get("floor_bpb") for g in grids for c in g.cells if c.metrics.get("floor_bpb")})
    for ax in axes:
        _size_axis(ax)
        for floor in floors:  # drawn only near the data: far below, it would flatten every difference
            if floor >= low - 0.5 * (high - low):
                ax.axhline(floor, color="0.5", ls=":", lw=1)
                ax.text(0.01, floor, " grammar entropy", va="bottom", fontsize=6, color="0.4",
                        transform=ax.get_yaxis_transform())
    far = [f for f in floors if f < low - 0.5 * (high - low)]
    if far:
        axes[0].text(0.01, 0.01, "grammar entropy (floor): " + ", ".join(f"{f:.3f}" for f in far) + " bpb, below",
                     transform=axes[0].transAxes, fontsize=6, color="0.4")
    for ax, panel in zip(axes, panels):
        ax.set_xlabel("parameters (unique)" if panel == "params" else "training FLOPs (FLOPs/token x training tokens)")
    axes[0].set_ylabel("validation bits per byte")
    handles, labels = axes[0].get_legend_handles_labels()
    bottom = legend_below(fig, handles, labels, fontsize=6)
    fig.suptitle("small points: seeds; large markers: mean over seeds", fontsize=8)
    fig.tight_layout(rect=(0, bottom, 1, 1))
    return save(fig, out_dir, stem)


def _count(value: float) -> str:
    for scale, suffix in ((1e9, "G"), (1e6, "M"), (1e3, "k")):
        if abs(value) >= scale:
            return f"{value / scale:.1f}{suffix}"
    return f"{value:.0f}"


def attention_figure(grids: list[GridRecord], out_dir: Path) -> str | None:
    """Attention maps for one sample sentence: the RNN with attention and a transformer, when present."""
    import torch

    from research.attention import attention_maps
    from research.checkpoint import load_cell
    from research.models import MODELS

    def model_class(cell):
        arch = cell.run_config.get("model", {}).get("arch")
        return MODELS.get(arch) if arch in MODELS else None

    picks = []
    for recurrent in (True, False):  # a recurrent model with attention, then a transformer
        for grid in grids:
            cell = next((c for c in grid.cells if c.status == "done" and (cls := model_class(c)) is not None
                         and cls.has_attention_maps and cls.recurrent == recurrent), None)
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
        ticks = list(range(len(labels)))  # every position labelled with its token
        names = [labels[t].replace(" ", "␣").replace("\n", "↵") for t in ticks]
        size = max(3.5, min(6.0, 260 / max(1, len(labels))))
        ax.set_xticks(ticks, names, fontsize=size, rotation=90 if max(map(len, names)) > 1 else 0)
        ax.set_yticks(ticks, names, fontsize=size)
        ax.set_xlabel("attended position")
        ax.set_ylabel("query position")
        ax.set_title(wrap(title), fontsize=7)
    fig.tight_layout()
    return save(fig, out_dir, "attention_maps")
