"""Where each row of a table comes from: its cells, seeds, commits, dirty flags and diffs.

A mean over seeds means something only if the seeds ran the same code and the same config up to
the seed. `row_problems` finds rows that mix commits (or dirty trees with different diffs) or
configs that differ in more than `train.seed`; `check_rows` refuses such a table with one line
naming the cells, unless the user allows it (the caption then says so). `provenance` is the
machine-readable file written beside each table, and `generated_header` the first line of every
generated `.tex`.
"""

from __future__ import annotations

from paper.collect import GridRecord, PaperCell
from paper.labels import canonical, flatten
from research.errors import UserError

SEED_KEY = "train.seed"
ALLOW_FLAG = "--allow-mixed"


def code_version(cell: PaperCell) -> dict:
    git = cell.manifest.get("git") or {}
    return {"commit": git.get("commit"), "dirty": git.get("dirty"), "diff": git.get("diff"),
            "diff_sha256": git.get("diff_sha256")}


def _code_name(version: dict) -> str:
    commit = (version["commit"] or "no commit recorded")[:10]
    if version["dirty"]:
        sha = version["diff_sha256"]
        return f"{commit} + diff {sha[:8] if sha else '(not recorded)'}"
    return commit


def row_problems(cells: list[PaperCell]) -> list[str]:
    """Why the finished cells of one row must not be averaged: mixed code or configs (empty when fine)."""
    done = [c for c in cells if c.status == "done"]
    problems = []
    versions: dict[str, list[str]] = {}
    for c in done:
        v = code_version(c)
        versions.setdefault(_code_name(v), []).append(c.cell)
    if len(versions) > 1:
        problems.append("mixes code versions: " + "; ".join(f"{', '.join(ids)} at {name}"
                                                           for name, ids in sorted(versions.items())))
    flat = {c.cell: {k: canonical(v) for k, v in flatten(c.run_config).items() if k != SEED_KEY}
            for c in done if c.run_config}
    if len(flat) > 1:
        first_id, first = next(iter(flat.items()))
        for cid, f in list(flat.items())[1:]:
            keys = sorted(k for k in set(first) | set(f) if first.get(k) != f.get(k))
            if keys:
                shown = ", ".join(keys[:4]) + (f" and {len(keys) - 4} more" if len(keys) > 4 else "")
                problems.append(f"mixes configs: {first_id} and {cid} differ in {shown}")
    return problems


def check_rows(grid: GridRecord, allow_mixed: bool) -> dict[str, list[str]]:
    """Row label -> its problems. Raises (one line, naming the cells) unless `allow_mixed`."""
    found = {}
    for name in grid.configs():
        problems = row_problems([c for c in grid.cells if c.config == name])
        if problems:
            found[name] = problems
    if found and not allow_mixed:
        name, problems = next(iter(found.items()))
        more = f" (and {len(found) - 1} more row(s))" if len(found) > 1 else ""
        raise UserError(f"{grid.path}: row '{name}' {problems[0]}{more}; rerun those cells at one commit and "
                        f"config, or pass {ALLOW_FLAG} to build anyway (the caption will say so)")
    return found


def provenance(grid: GridRecord, command: str, table: str, mixed: dict[str, list[str]], extra: dict) -> dict:
    """The provenance file of one results table: for every row, the cells, seeds and code behind it."""
    rows = []
    for name in grid.configs():
        cells = [c for c in grid.cells if c.config == name]
        versions = {canonical(code_version(c)): code_version(c) for c in cells if c.status == "done"}
        rows.append({
            "label": name,
            "long_label": cells[0].long_config,
            "axes": cells[0].axes,
            "seeds": sorted(c.seed for c in cells if c.status == "done"),
            "code_versions": list(versions.values()),
            "mixed": mixed.get(name, []),
            "cells": [{"id": c.cell, "seed": c.seed, "status": c.status, "path": f"{grid.path.name}/{c.cell}",
                       **code_version(c)} for c in cells],
        })
    return {"generated_by": command, "table": table, "grid": grid.name, "results": str(grid.path),
            "overrides": grid.overrides, **extra, "rows": rows}


def generated_header(command: str, grids: list[GridRecord]) -> str:
    """The first line of a generated .tex: that it is generated, from which results, by which command."""
    sources = ", ".join(f"{g.path} ({sum(c.status == 'done' for c in g.cells)} finished cells)" for g in grids)
    return f"% Generated from {sources} by `{command}`; do not edit."
