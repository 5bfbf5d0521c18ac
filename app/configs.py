"""A grid's cells grouped by configuration, as the paper groups them: cells whose axis values
recorded in grid.json are equal are the seeds of one configuration, named with the grid's `labels`
(or the axis values that differ: paper.labels), with each metric's mean, sample std, range and n
over the finished seeds, and one loss curve per configuration (mean, min and max over its seeds).
"""

from __future__ import annotations

import statistics

from paper.labels import canonical, config_names


def group_rows(rows: list[dict], listed: dict[str, dict], axes: list[str], labels: dict | None) -> list[dict]:
    """The configurations of `rows` in grid order; each row gets its `config` label. `listed` maps
    a cell id to its grid.json entry (axes); a cell on disk but not listed is its own group."""
    points: dict[str, dict] = {}
    order: dict[str, dict[str, object]] = {a: {} for a in axes}
    for row in rows:
        entry = listed.get(row["cell"])
        if entry is None:
            continue
        point = entry.get("axes") or {}
        points.setdefault(canonical(point), point)
        for a in axes:
            order[a].setdefault(canonical(point.get(a)), point.get(a))
    keys = list(points)
    named = dict(zip(keys, zip(*config_names([points[k] for k in keys], axes, labels or {},
                                             {a: list(v.values()) for a, v in order.items()})))) if keys else {}
    groups: dict[str, dict] = {}
    for row in rows:
        entry = listed.get(row["cell"])
        label, long = named[canonical(entry.get("axes") or {})] if entry is not None else (row["cell"], row["cell"])
        row["config"] = label
        groups.setdefault(label, {"config": label, "long": long, "cells": []})["cells"].append(row)
    return [summarize(g) for g in groups.values()]


def summarize(group: dict) -> dict:
    rows = sorted(group["cells"], key=lambda r: (r["seed"] is None, r["seed"], r["cell"]))
    done = [r for r in rows if r["status"] == "done"]
    metrics = {}
    for key in dict.fromkeys(k for r in done for k in r["metrics"]):
        values = [r["metrics"][key] for r in done if r["metrics"].get(key) is not None]
        if values:
            metrics[key] = {"mean": statistics.fmean(values), "n": len(values), "min": min(values), "max": max(values),
                            "std": statistics.stdev(values) if len(values) >= 2 else None}
    counts: dict[str, int] = {}
    for r in rows:
        counts[r["status"]] = counts.get(r["status"], 0) + 1
    progress = [r["progress"] or 0.0 for r in rows]
    etas = [r["eta_s"] for r in rows if r["eta_s"] is not None]
    return {"config": group["config"], "long": group["long"], "cells": [r["cell"] for r in rows],
            "seeds": [r["seed"] for r in rows], "n": len(done), "metrics": metrics, "statuses": counts,
            "progress": sum(progress) / len(progress) if progress else None, "eta_s": max(etas) if etas else None,
            "elapsed_s": max((r["elapsed_s"] for r in rows if r["elapsed_s"] is not None), default=None),
            "wall_s": metrics.get("wall_s", {}).get("mean")}


def band(curves: list[list[list[float]]]) -> list[list[float]]:
    """[[step, mean, min, max], ...] at the steps every curve with points logged (seeds that have
    not logged yet are left out rather than emptying the band)."""
    series = [dict((int(s), v) for s, v in c) for c in curves if c]
    if not series:
        return []
    steps = sorted(set.intersection(*(set(s) for s in series)))
    out = []
    for step in steps:
        values = [s[step] for s in series]
        out.append([step, statistics.fmean(values), min(values), max(values)])
    return out
