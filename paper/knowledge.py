"""The reason-vs-knowledge figure: the knowledge eval's four scores against parameters.

One panel per score (closed-book recall, open-book on held-out people, counterfactual-following,
multi-hop open-book on held-out people), one line per setting of the grid's other axes (regime,
forgetting term), each point the mean over seeds with a bar from the lowest to the highest seed.
The model-size axes (`model.*`) are what moves along x; chance (1/8) is the dotted line.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from paper.collect import GridRecord
from paper.figures import _size_axis, _style, legend_below, plt, save

SCORES = (
    ("knowledge/closed_book", "closed-book (trained people)"),
    ("knowledge/open_book_held_out", "open-book, held-out people"),
    ("knowledge/counterfactual_follow", "follows a counterfactual context"),
    ("knowledge/multihop_open_held_out", "multi-hop open-book, held-out"),
)
CHANCE = 1 / 8


def _setting(grid: GridRecord, cell) -> str:
    """The cell's label without its model-size axes: the line it belongs to."""
    parts = []
    for axis in grid.axes:
        if axis.startswith("model."):
            continue
        value = cell.axes.get(axis)
        names = grid.labels.get(axis)
        if names is not None and axis in cell.axes:
            parts.append(f"{axis.split('.')[-1]}={names[_index(grid, axis, value)]}")
        else:
            parts.append(f"{axis.split('.')[-1]}={value}")
    return ", ".join(parts) or grid.name


def _index(grid: GridRecord, axis: str, value) -> int:
    seen = []
    for c in grid.cells:
        v = c.axes.get(axis)
        if v not in seen:
            seen.append(v)
    return seen.index(value)


def knowledge_vs_params(grids: list[GridRecord], out_dir: Path) -> str | None:
    _style()
    lines: dict[str, dict[float, list]] = {}  # setting -> params -> cells
    for grid in grids:
        for c in grid.cells:
            if c.status == "done" and SCORES[0][0] in c.metrics and "params" in c.metrics:
                label = _setting(grid, c) if len(grids) == 1 else f"{grid.name}: {_setting(grid, c)}"
                lines.setdefault(label, {}).setdefault(float(c.metrics["params"]), []).append(c)
    if not lines:
        return None
    fig, axes = plt.subplots(1, 4, figsize=(8.4, 2.9), sharey=True)
    for i, (label, points) in enumerate(lines.items()):
        xs = sorted(points)
        n = min(len(points[x]) for x in xs)
        for ax, (key, _) in zip(axes, SCORES):
            vals = [np.array([c.metrics[key] for c in points[x] if key in c.metrics]) for x in xs]
            mean = np.array([v.mean() if v.size else np.nan for v in vals])
            lo = np.array([v.min() if v.size else np.nan for v in vals])
            hi = np.array([v.max() if v.size else np.nan for v in vals])
            ax.errorbar(xs, mean, yerr=[mean - lo, hi - mean], color=f"C{i % 10}", marker="os^Dv"[i // 10 % 5],
                        ms=3.5, lw=1.1, capsize=2, label=f"{label} (n={n})" if ax is axes[0] else None)
    for ax, (_, title) in zip(axes, SCORES):
        ax.axhline(CHANCE, color="0.5", ls=":", lw=1)
        ax.set_title(title, fontsize=7.5)
        ax.set_ylim(-0.03, 1.03)
        _size_axis(ax)
        ax.set_xlabel("parameters")
    axes[0].set_ylabel("share of questions answered")
    axes[0].text(0.02, CHANCE + 0.01, "chance", fontsize=6, color="0.4", transform=axes[0].get_yaxis_transform())
    handles, labels = axes[0].get_legend_handles_labels()
    bottom = legend_below(fig, handles, labels, fontsize=6.5)
    fig.tight_layout(rect=(0, bottom, 1, 1))
    return save(fig, out_dir, "knowledge_vs_params")
