"""Readable names for a grid's configurations, from the axis values recorded in grid.json.

A row called `model=windowed-n_layer_4-window_min_8-windows_small-large-small` tells a reader
nothing the cell id did not. A grid may name each value of an axis (`labels: {model: [GPT, ...]}`
in the grid file, kept in grid.json); otherwise the name is built from what differs between the
values of each axis (`windowed (windows=small-large-small, window_min=8)`, `lr=0.003`), never from
the cell id. The long form (every axis key and value) goes to the provenance file.
"""

from __future__ import annotations

import json
from typing import Any

HEAD_KEYS = ("arch", "kind", "source")  # what names a whole section (model, tokenizer, data)
MAX_VALUE_CHARS = 24
ABSENT = "\0absent"  # a key one section sets and another leaves to its default


def canonical(value: Any) -> str:
    """A stable text form of an axis value, for grouping cells and matching label lists."""
    return json.dumps(value, sort_keys=True, default=str)


def show(value: Any) -> str:
    """A short display form of one value: floats as %g, lists joined by '/', long strings cut."""
    if isinstance(value, bool) or value is None:
        text = str(value).lower()
    elif isinstance(value, float):
        text = f"{value:g}"
    elif isinstance(value, list):
        text = "/".join(show(v) for v in value)
    elif isinstance(value, dict):
        text = "{" + ", ".join(f"{k}={show(v)}" for k, v in sorted(value.items())) + "}"
    else:
        text = str(value)
    return text if len(text) <= MAX_VALUE_CHARS else text[: MAX_VALUE_CHARS - 1] + "…"


def flatten(tree: Any, prefix: str = "") -> dict[str, Any]:
    if not isinstance(tree, dict) or not tree:
        return {prefix: tree} if prefix else {"": tree}
    out: dict[str, Any] = {}
    for k, v in tree.items():
        out.update(flatten(v, f"{prefix}.{k}" if prefix else str(k)))
    return out


def axis_value_names(values: list[Any]) -> list[str]:
    """One name per distinct value of an axis: its arch (or kind/source) and the keys in which it
    departs from the axis's most common setting, e.g. `shared (n_layer=8, sharing=repeat)`."""
    if not all(isinstance(v, dict) for v in values):
        return [show(v) for v in values]
    flat = [flatten(v) for v in values]
    keys = list(dict.fromkeys(k for f in flat for k in f))
    differ = [k for k in keys if len({canonical(f.get(k, ABSENT)) for f in flat}) > 1]
    usual = {k: _mode([canonical(f.get(k, ABSENT)) for f in flat]) for k in differ}
    names = []
    for f in flat:
        head = next((show(f[k]) for k in HEAD_KEYS if k in f and k in differ), None)
        own = [k for k in differ if k in f and k not in HEAD_KEYS]
        parts = [f"{k}={show(f[k])}" for k in own if canonical(f[k]) != usual[k]]
        if not head and not parts:  # the usual setting itself: name it by its values
            parts = [f"{k}={show(f[k])}" for k in own]
        if head and parts:
            names.append(f"{head} ({', '.join(parts)})")
        else:
            names.append(head or ", ".join(parts) or "base")
    return names


def _mode(items: list[str]) -> str | None:
    """The most common item when one is strictly most common, else None."""
    counts = sorted(((items.count(i), i) for i in set(items)), reverse=True)
    return counts[0][1] if len(counts) == 1 or counts[0][0] > counts[1][0] else None


def config_names(points: list[dict[str, Any]], axes: list[str], given: dict[str, list[str]] | None,
                 axis_order: dict[str, list[Any]]) -> tuple[list[str], list[str]]:
    """(short label, long form) for each configuration `points[i]` (axis -> value).

    `axis_order[axis]` lists the axis's values in grid-file order, which is the order of the
    names in `given[axis]`. An axis with one value across the table is left out of the short label.
    """
    given = given or {}
    varied = [a for a in axes if len({canonical(p.get(a)) for p in points}) > 1] or axes[:1]
    short_keys = {a: a.rsplit(".", 1)[-1] for a in varied}
    if len(set(short_keys.values())) < len(short_keys):
        short_keys = {a: a for a in varied}
    names: dict[str, dict[str, str]] = {}
    for axis in varied:
        order = axis_order[axis]
        keyed = [canonical(v) for v in order]
        if axis in given and len(given[axis]) == len(order):
            names[axis] = dict(zip(keyed, given[axis]))
        elif all(isinstance(v, dict) for v in order):
            names[axis] = dict(zip(keyed, axis_value_names(order)))
        else:
            names[axis] = {k: f"{short_keys[axis]}={show(v)}" for k, v in zip(keyed, order)}
    short, long = [], []
    for p in points:
        parts = [names[a][canonical(p.get(a))] for a in varied if a in p]
        short.append(", ".join(parts) or "base")
        long.append(", ".join(f"{k}={v}" for a in axes if a in p
                              for k, v in sorted(flatten(p[a], a).items())) or "base")
    seen: dict[str, int] = {}
    for i, name in enumerate(short):  # two values cut to the same text: tell them apart
        seen[name] = seen.get(name, 0) + 1
    return [s if seen[s] == 1 else long[i] for i, s in enumerate(short)], long
