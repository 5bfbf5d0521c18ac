"""Valid ranges of config fields, declared beside each field and checked when a config is built.

A field says what it accepts with `ranged(default, ge=..., lt=..., choices=...)`, so the rule is
read where the field is read, and one generic loop (`research.config.build`) enforces every rule
with the same one-line message naming the dotted path. A field whose every value of its type is
valid says why with `free=`; the test in tests/test_config_ranges.py walks every field of every
section and fails for a field that declares neither, so a new field cannot skip its range.

Checks that need the machine rather than the config (a data file exists and is a regular file, an
optional logger's package is installed) are in `check_runnable`: a stored cell's config must
still load on a machine that lacks them, so they run only before training.
"""

from __future__ import annotations

import dataclasses
import importlib
import importlib.util
import math
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from research import cell as cell_files
from research.errors import ConfigError, UserError, did_you_mean


@dataclass(frozen=True)
class Check:
    """What one field accepts. Bounds apply to numbers (and to each item of a list of numbers);
    `choices` is called only for a value other than the field's default, so a registry (or
    Lightning's) is imported only when the user names something."""

    ge: float | None = None
    gt: float | None = None
    le: float | None = None
    lt: float | None = None
    choices: Callable[[], Iterable[str]] | None = None
    kind: str = "value"  # what the choices are, for the message: "unknown optimizer 'adamv'"
    nonempty: bool = False
    free: str | None = None  # why every value of the field's type is valid

    def problem(self, value: Any, default: Any) -> str | None:
        """Why `value` is refused (the text after 'path: '), or None when it is valid."""
        if value is None:
            return None
        if isinstance(value, float) and not math.isfinite(value):
            return f"must be a finite number, got {value}"
        if isinstance(value, (int, float)) and not isinstance(value, bool):
            return self._bounds(value)
        if isinstance(value, str):
            if self.nonempty and not value:
                return "must not be empty"
            if self.choices is not None and value != default:
                names = sorted(self.choices())
                if value not in names:
                    return f"unknown {self.kind} '{value}'{did_you_mean(value, names)} (valid: {', '.join(names)})"
        return None

    def _bounds(self, value: float) -> str | None:
        if self.ge is not None and value < self.ge:
            return f"must be >= {self.ge:g}, got {value:g}"
        if self.gt is not None and value <= self.gt:
            return f"must be {'positive' if self.gt == 0 else f'> {self.gt:g}'}, got {value:g}"
        if self.le is not None and value > self.le:
            return f"must be <= {self.le:g}, got {value:g}"
        if self.lt is not None and value >= self.lt:
            return f"must be < {self.lt:g}, got {value:g}"
        return None


def ranged(default: Any = dataclasses.MISSING, *, factory: Any = dataclasses.MISSING, **check) -> Any:
    """A dataclass field carrying its `Check` (keyword arguments as `Check`'s)."""
    return field(default=default, default_factory=factory, metadata={"check": Check(**check)})


def check_fields(obj: Any, path: str) -> None:
    """Apply every field's declared `Check` to a built dataclass; the first problem is raised."""
    for f in dataclasses.fields(obj):
        check = f.metadata.get("check")
        if check is None:
            continue
        default = f.default if f.default is not dataclasses.MISSING else None
        value = getattr(obj, f.name)
        items = enumerate(value) if isinstance(value, list) else [(None, value)]
        for i, item in items:
            problem = check.problem(item, default)
            if problem:
                where = f"{path + '.' if path else ''}{f.name}{'' if i is None else f'[{i}]'}"
                raise ConfigError(f"{where}: {problem}")


def registry_names(module: str, attr: str) -> Callable[[], list[str]]:
    """Names of a registry, imported on first use (the registries import torch, tokenizers, ...)."""
    return lambda: getattr(importlib.import_module(module), attr).names()


def lightning_precisions() -> list[str]:
    import typing

    from lightning.fabric.connector import _PRECISION_INPUT_STR

    return ["auto", *typing.get_args(_PRECISION_INPUT_STR)]


def lightning_accelerators() -> list[str]:
    from lightning.pytorch.accelerators import AcceleratorRegistry

    return ["auto", "gpu", *AcceleratorRegistry.available_accelerators()]


def lightning_strategies() -> list[str]:
    from lightning.pytorch.strategies import StrategyRegistry

    return ["auto", *StrategyRegistry.available_strategies()]


#: optional loggers and the packages that provide them (any one is enough)
LOGGER_PACKAGES = {"tensorboard": ("tensorboard", "tensorboardX"), "wandb": ("wandb",)}


def check_runnable(config: Any, where: str) -> None:
    """What training this config needs from this machine: its data path is a regular file or a
    folder (not a device such as /dev/zero, not a missing path), its logger's package is installed."""
    path = config.data.path
    if path is not None:
        p = Path(path).expanduser()
        if not p.exists():
            raise UserError(f"{where}: data.path '{path}' does not exist; point data.path at a local file or folder")
        if not (p.is_file() or p.is_dir()):
            raise UserError(f"{where}: data.path '{path}' is not a regular file or a folder; "
                            "point data.path at a text, JSONL or Parquet file or a folder")
    forget = getattr(config.train, "forget", None)
    teacher = None if forget is None or forget.teacher is None else Path(forget.teacher).expanduser()
    if teacher is not None and cell_files.cell_status(teacher) != "done":
        raise UserError(f"{where}: train.forget.teacher '{forget.teacher}' is not a finished cell folder "
                        "(results/<grid>/<cell>); train the teacher's grid first")
    needs = LOGGER_PACKAGES.get(config.train.logger, ())
    if needs and not any(importlib.util.find_spec(m) for m in needs):
        raise UserError(f"{where}: train.logger '{config.train.logger}' needs the package '{needs[0]}': "
                        f"pip install {needs[0]} (or set train.logger: csv)")
