"""A grid file -> a validated list of cells.

A grid YAML has `name`, `base` (a nested run config), `grid` (dotted key -> list of values; the
cells are the cartesian product, in file order), and `seeds`. Optional: `description`,
`reproduces` (the published number a recipe reproduces; see ablations.reproduce), `resources`
(per-cell hardware requests for cluster launchers), `labels` (a display name for each value of
an axis, `labels: {model: [GPT, "Windows small-large-small"]}`, which the paper's tables and
figures use instead of names built from the values) and `select` (pick one axis's best value per
group of the other axes on validation; see ablations.select). A value that is a mapping replaces the whole
section it names, so `grid: {model: [{arch: gpt, ...}, {arch: lstm, ...}]}` compares families.

Every cell is built and checked before the first one trains, so a typo in the last cell cannot
waste the hours spent on the first ones. The cell id is readable (the axis values and the seed)
and ends with a short hash of the cell's own config, so it is stable across runs and changes when
the config does.
"""

from __future__ import annotations

import copy
import hashlib
import itertools
import json
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml

from ablations.select import check_select
from evals.run import check_eval_config
from research.cell import flat_train_options
from research.checks import check_runnable
from research.config import RunConfig, get_dotted, set_dotted
from research.errors import ConfigError, UserError, did_you_mean

TOP_LEVEL = ("name", "description", "base", "grid", "seeds", "reproduces", "resources", "labels", "select")


@dataclass
class Cell:
    id: str
    index: int
    seed: int
    axes: dict[str, Any]  # dotted key -> value for this cell (the grid axes only)
    config: RunConfig
    raw: dict  # the user-level config (base + axes + overrides + seed) before defaults


@dataclass
class Grid:
    name: str
    description: str
    cells: list[Cell]
    axes: list[str]
    source: Path | None = None
    reproduces: dict | None = None
    resources: dict | None = None
    labels: dict[str, list[str]] | None = None  # axis -> display name of each of its values
    select: dict | None = None

    def datasets(self) -> list:
        """The (data, tokenizer) configs of the grid, once each, in cell order: what to tokenize
        (compared as configs, so no source is opened to tell two apart)."""
        seen, out = set(), []
        for cell in self.cells:
            key = repr((cell.config.data, cell.config.tokenizer))
            if key not in seen:
                seen.add(key)
                out.append((cell.config.data, cell.config.tokenizer))
        return out


def read_grid_file(path: Path) -> dict:
    path = Path(path)
    if not path.exists():
        raise UserError(f"{path}: grid file not found")
    return parse_grid_text(path.read_text(), f"{path}: ")


def parse_grid_text(text: str, where: str = "") -> dict:
    """A grid's YAML text (a file's, or the web app's editor's) -> its mapping; a syntax error is one
    line with its position, prefixed by `where`."""
    try:
        raw = yaml.safe_load(text)
    except yaml.YAMLError as e:
        mark = getattr(e, "problem_mark", None)
        at = f"line {mark.line + 1}, column {mark.column + 1}: " if mark else ""
        problem = getattr(e, "problem", None) or str(e).splitlines()[0]
        raise ConfigError(f"{where}{at}not valid YAML ({problem})") from None
    if not isinstance(raw, dict):
        raise ConfigError(f"{where}a grid is a YAML mapping with keys {', '.join(TOP_LEVEL)}")
    return raw


def load_grid(path: Path | None, overrides: dict[str, Any] | None = None, raw: dict | None = None) -> Grid:
    raw = read_grid_file(path) if raw is None else raw
    where = str(path) if path else "grid"
    for key in raw:
        if key not in TOP_LEVEL:
            raise ConfigError(f"{where}: unknown top-level key '{key}'{did_you_mean(key, TOP_LEVEL)}")
    name = raw.get("name")
    if not isinstance(name, str) or not re.fullmatch(r"[A-Za-z0-9][A-Za-z0-9_.-]*", name or ""):
        raise ConfigError(f"{where}: 'name' must be a folder-safe string (letters, digits, _ . -), got {name!r}")
    base = raw.get("base") or {}
    if not isinstance(base, dict):
        raise ConfigError(f"{where}: 'base' must be a mapping (a run config with data/tokenizer/model/train/eval)")
    axes = raw.get("grid") or {}
    if not isinstance(axes, dict):
        raise ConfigError(f"{where}: 'grid' must map dotted keys to lists of values")
    for key, values in axes.items():
        if not isinstance(values, list) or not values:
            raise ConfigError(f"{where}: grid.{key} must be a non-empty list of values")
    seeds = raw.get("seeds", [0])
    if not isinstance(seeds, list) or not seeds or not all(isinstance(s, int) for s in seeds):
        raise ConfigError(f"{where}: 'seeds' must be a non-empty list of integers, got {seeds!r}")
    if len(set(seeds)) != len(seeds):
        raise ConfigError(f"{where}: 'seeds' has duplicates: {seeds}")

    display = check_labels(raw.get("labels"), axes, where)
    overrides = overrides or {}
    keys = list(axes)
    labels = {k: value_labels(axes[k]) for k in keys}
    cells: list[Cell] = []
    for combo_idx in itertools.product(*(range(len(axes[k])) for k in keys)):
        combo = [axes[k][i] for k, i in zip(keys, combo_idx)]
        for seed in seeds:
            cell_raw = copy.deepcopy(base)
            point = dict(zip(keys, combo))
            label = cell_label({k: labels[k][i] for k, i in zip(keys, combo_idx)}, seed)
            for key, value in point.items():
                _set(cell_raw, key, copy.deepcopy(value), f"{where}: grid.{key}")
            for key, value in overrides.items():
                _set(cell_raw, key, copy.deepcopy(value), f"--set {key}")
            _set(cell_raw, "train.seed", seed, f"{where}: seeds")
            try:
                config = RunConfig.from_dict(cell_raw)
            except ConfigError as e:
                raise ConfigError(f"{where}: cell {label}: {e}") from None
            check_eval_config(config.eval, f"{where}: cell {label}: ")
            check_runnable(config, f"{where}: cell {label}")
            cell_id = f"{label}__{config_hash(cell_raw)}"
            cells.append(Cell(cell_id, len(cells), seed, point, config, cell_raw))
    ids = [c.id for c in cells]
    if len(set(ids)) != len(ids):
        dup = next(i for i in ids if ids.count(i) > 1)
        raise ConfigError(f"{where}: two cells resolve to the same config ({dup}); remove the repeated grid value")
    select = check_select(raw.get("select"), keys, where)
    return Grid(name, raw.get("description", ""), cells, keys, Path(path) if path else None,
                raw.get("reproduces"), raw.get("resources"), display, select)


def check_labels(labels: Any, axes: dict, where: str) -> dict[str, list[str]] | None:
    """`labels: {axis: [name per value]}`: one distinct string per value of an existing axis."""
    if labels is None:
        return None
    if not isinstance(labels, dict):
        raise ConfigError(f"{where}: 'labels' must map grid axes to lists of names, e.g. labels: {{model: [GPT, ...]}}")
    for key, names in labels.items():
        if key not in axes:
            raise ConfigError(f"{where}: labels.{key}: not a grid axis{did_you_mean(str(key), list(axes))}")
        if (not isinstance(names, list) or len(names) != len(axes[key])
                or not all(isinstance(n, str) and n.strip() for n in names)):
            raise ConfigError(f"{where}: labels.{key} must be a list of {len(axes[key])} non-empty names, "
                              f"one per value of grid.{key}")
        if len(set(names)) != len(names):
            raise ConfigError(f"{where}: labels.{key} repeats a name: {names}; give each value its own name")
    return {k: list(v) for k, v in labels.items()}


def _set(tree: dict, dotted: str, value: Any, where: str) -> None:
    try:
        set_dotted(tree, dotted, value)
    except (TypeError, ValueError, KeyError) as e:
        raise ConfigError(f"{where}: cannot set '{dotted}' ({e})") from None


def config_hash(raw: dict) -> str:
    """Hash of what the user wrote for this cell (not the defaults), so adding a field with a
    default to the code does not rename every finished cell. Optimizer and schedule settings that
    moved under `train.options` are hashed under their former flat names, so those cells keep theirs."""
    blob = json.dumps(flat_train_options(raw), sort_keys=True, default=str)
    return hashlib.sha256(blob.encode()).hexdigest()[:6]


def value_labels(values: list) -> list[str]:
    """Readable labels for one axis's values. A mapping (a whole section) is named by its arch (or
    kind/source) plus the keys in which it differs from the axis's other mappings."""
    dicts = [v for v in values if isinstance(v, dict)]
    common = {k for k in set().union(*dicts) if len({_safe(str(d.get(k))) for d in dicts}) == 1} if dicts else set()
    out = []
    for v in values:
        if not isinstance(v, dict):
            out.append(_short_value(v))
            continue
        parts = [_short_value(v)]
        for k in sorted(v):
            if k not in common and k not in ("arch", "kind", "source"):
                parts.append(f"{k}_{_short_value(v[k])}")
        out.append("-".join(parts)[:60])
    return out


def cell_label(labels: dict[str, str], seed: int) -> str:
    parts = [f"{_short_key(k)}-{v}" for k, v in labels.items()]
    parts.append(f"s{seed}")
    return "__".join(parts)


def _short_key(dotted: str) -> str:
    return dotted.rsplit(".", 1)[-1]


def _short_value(value: Any) -> str:
    if isinstance(value, dict):  # a whole section: name it by its arch/kind/source when it has one
        head = value.get("arch") or value.get("kind") or value.get("source") or "cfg"
        return _safe(str(head))
    if isinstance(value, list):
        return "-".join(_safe(str(v)) for v in value)[:40]
    if isinstance(value, float):
        return _safe(f"{value:g}")
    return _safe(str(value))[:40]


def _safe(text: str) -> str:
    return re.sub(r"[^A-Za-z0-9.+-]+", "_", text).strip("_") or "x"


def axis_value(cell: Cell, key: str) -> Any:
    value = cell.axes.get(key, get_dotted(cell.raw, key))
    if isinstance(value, (dict, list)):
        return _short_value(value)
    return value
