"""`python -m ablations.reproduce`: published numbers beside ours.

    python -m ablations.reproduce                          # report every recipe from results on disk
    python -m ablations.reproduce shakespeare_char_cpu --set data.path=input.txt   # train (resumes), then report
    python -m ablations.reproduce --report-only ptb_lstm_small

A recipe is a grid file in `ablations/grids/reproduce/` with a top-level `reproduces:` block:

    reproduces:
      metric: val_loss            # a key of the cells' metrics.json
      unit: nats/token
      published: 1.8857           # the source's own figure
      source: nanoGPT README, CPU recipe ...
      tolerance: {max: 1.89}      # ours <= max; or {min: x}, or {relative: 0.02}: |ours - published| <= 2%;
                                  # none: a point of comparison, reported as "measured"

With names, the recipes are trained first through the grid runner (finished cells are read, not
retrained); with none, every recipe is reported from what is on disk. Several seeds give mean and
standard deviation; pass or fail is judged on the mean. The table also lands, atomically, in
`<results>/reproduce.csv`.
"""

from __future__ import annotations

import argparse
import math
import statistics
from dataclasses import dataclass
from pathlib import Path

from ablations.text_table import text_table
from research.errors import ConfigError, UserError, did_you_mean, run_main

RECIPES = Path(__file__).parent / "grids" / "reproduce"
TOLERANCE_KINDS = ("max", "min", "relative")
COLUMNS = ["recipe", "metric", "unit", "published", "ours", "ours_std", "seeds", "tolerance", "status", "wall_s",
           "source"]


@dataclass(frozen=True)
class Target:
    metric: str
    published: float | None
    source: str
    tolerance: dict
    unit: str = ""

    def bound(self) -> str:
        if not self.tolerance:
            return "-"
        kind, value = next(iter(self.tolerance.items()))
        return {"max": f"<= {value:g}", "min": f">= {value:g}"}.get(kind, f"within {value:.0%} of published")

    def passes(self, ours: float) -> bool:
        kind, value = next(iter(self.tolerance.items()))
        if kind == "max":
            return ours <= value
        if kind == "min":
            return ours >= value
        return abs(ours - self.published) <= value * abs(self.published)


def parse_target(raw, where: str) -> Target:
    """Validate a grid's `reproduces:` block; every problem is one line naming the key."""
    if not isinstance(raw, dict):
        raise ConfigError(f"{where}: a recipe needs a 'reproduces:' mapping (metric, published, source, tolerance)")
    for key in ("metric", "source"):
        if key not in raw:
            raise ConfigError(f"{where}: reproduces.{key} is missing")
    unknown = set(raw) - {"metric", "published", "source", "tolerance", "unit", "note"}
    if unknown:
        key = sorted(unknown)[0]
        raise ConfigError(f"{where}: unknown key reproduces.{key}"
                          f"{did_you_mean(key, ['metric', 'published', 'source', 'tolerance', 'unit', 'note'])}")
    tol = raw.get("tolerance")
    if tol is None:  # a point of comparison without a published figure: measured, never pass/fail
        return Target(str(raw["metric"]), None, str(raw["source"]).strip(), {}, str(raw.get("unit", "")))
    if not isinstance(tol, dict) or len(tol) != 1 or next(iter(tol)) not in TOLERANCE_KINDS:
        raise ConfigError(f"{where}: reproduces.tolerance must be one of {{max: x}}, {{min: x}}, {{relative: r}}")
    if not isinstance(next(iter(tol.values())), (int, float)):
        raise ConfigError(f"{where}: reproduces.tolerance needs a number, got {tol!r}")
    published = raw.get("published")
    if published is not None and not isinstance(published, (int, float)):
        raise ConfigError(f"{where}: reproduces.published must be a number, got {published!r}")
    if "relative" in tol and published is None:
        raise ConfigError(f"{where}: a relative tolerance needs reproduces.published")
    return Target(str(raw["metric"]), published, str(raw["source"]).strip(), dict(tol), str(raw.get("unit", "")))


def recipe_path(name: str) -> Path:
    path = Path(name)
    if path.suffix in (".yaml", ".yml") and path.exists():
        return path
    path = RECIPES / f"{name}.yaml"
    if not path.exists():
        names = recipe_names()
        raise UserError(f"no recipe '{name}' in {RECIPES}{did_you_mean(name, names)}; recipes: {', '.join(names)}")
    return path


def recipe_names() -> list[str]:
    return sorted(p.stem for p in RECIPES.glob("*.yaml"))


def report_row(path: Path, root: Path, overrides: dict) -> dict:
    from ablations import records
    from ablations.grid import load_grid, read_grid_file
    from research.config import parse_overrides

    name = read_grid_file(path).get("name")
    recorded = records.read_grid(root / str(name), required=False)
    if not overrides and recorded:  # the same --set as training, so the cell ids match
        overrides = parse_overrides(recorded.get("overrides"))
    grid = load_grid(path, overrides)
    target = parse_target(grid.reproduces, str(path))
    row = {"recipe": path.stem, "metric": target.metric, "unit": target.unit, "published": target.published,
           "tolerance": target.bound(), "source": target.source, "seeds": 0}
    values, walls, states = [], [], []
    for cell in grid.cells:
        cell_dir = root / grid.name / cell.id
        state = records.cell_status(cell_dir)
        states.append(state)
        if state != "done":
            continue
        metrics = records.read_metrics(cell_dir)
        if target.metric not in metrics:
            raise UserError(f"{cell_dir / records.METRICS}: no '{target.metric}' (reproduces.metric of {path}); "
                            f"it has {', '.join(sorted(metrics))}")
        values.append(float(metrics[target.metric]))
        walls.append(float(metrics.get("wall_s", math.nan)))
    if values:
        mean = statistics.fmean(values)
        row.update(ours=mean, ours_std=statistics.stdev(values) if len(values) > 1 else None, seeds=len(values),
                   wall_s=statistics.fmean(walls),
                   status="measured" if not target.tolerance else "pass" if target.passes(mean) else "fail")
        if len(values) < len(grid.cells):
            row["status"] += f" ({len(values)}/{len(grid.cells)} cells)"
    else:
        row["status"] = "failed" if "failed" in states else "not run"
    return row


def format_rows(rows: list[dict]) -> str:
    cols = [c for c in COLUMNS if c != "source"]
    return text_table(cols, [[_show(r.get(c)) for c in cols] for r in rows])


def _show(value) -> str:
    if value is None:
        return "-"
    if isinstance(value, float):
        return f"{value:.4f}" if abs(value) < 1000 else f"{value:.0f}"
    return str(value)


def write_csv(rows: list[dict], path: Path) -> None:
    from research.io import atomic_write_csv

    atomic_write_csv(path, ({k: "" if row.get(k) is None else row[k] for k in COLUMNS} for row in rows), COLUMNS)


def main(argv=None) -> int:
    from ablations import run as grid_run
    from research.config import parse_overrides

    p = argparse.ArgumentParser(prog="python -m ablations.reproduce", description=__doc__.splitlines()[0])
    p.add_argument("recipes", nargs="*", help=f"recipe names ({', '.join(recipe_names())}); none: report all")
    p.add_argument("--set", action="append", default=[], metavar="KEY=VALUE", help="override a key in every cell")
    p.add_argument("--results-dir", type=Path, default=None, help="results root (default: results/)")
    p.add_argument("--report-only", action="store_true", help="read finished results; train nothing")
    p.add_argument("--csv", type=Path, default=None, help="where the table goes (default <results>/reproduce.csv)")
    args = p.parse_args(argv)

    overrides = parse_overrides(args.set)
    paths = [recipe_path(n) for n in args.recipes] or [RECIPES / f"{n}.yaml" for n in recipe_names()]
    root = grid_run.results_root(args.results_dir)
    if args.recipes and not args.report_only:
        for path in paths:
            extra = ["--results-dir", str(root), *sum((["--set", s] for s in args.set), [])]
            code = grid_run.main([str(path), *extra])
            if code not in (0, 1):
                return code
    rows = [report_row(path, root, overrides) for path in paths]
    print(format_rows(rows))
    out = args.csv or root / "reproduce.csv"
    write_csv(rows, out)
    print(f"[reproduce] table written to {out}")
    judged = [r["status"] for r in rows if r["status"] not in ("not run", "measured")]
    return 0 if all(s.startswith("pass") and "cells)" not in s for s in judged) else 1


if __name__ == "__main__":
    raise SystemExit(run_main(main))
