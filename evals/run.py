"""`python -m evals.run CELL_DIR`: run registered evals on a finished cell and store their results.

    python -m evals.run results/demo/<cell>                         # the cell's own eval.tasks
    python -m evals.run results/demo/<cell> --evals hellaswag,blimp
    python -m evals.run results/demo/<cell> --evals hellaswag --set eval.options.hellaswag.path=hs.jsonl

Each eval writes `<cell>/evals/<name>.json` (evals.base.EvalResult), so the grid summary gains its
`<name>/<metric>` columns. The grid runner calls `run_evals` the same way right after training.
"""

from __future__ import annotations

import argparse
import dataclasses
import importlib
import logging
import sys
from pathlib import Path

from evals import EVALS
from evals.base import EvalContext, EvalResult, cell_context, run_isolated
from research.config import build
from research.errors import ConfigError, did_you_mean, run_main

log = logging.getLogger(__name__)


def eval_module(name: str, key: str = "--evals / eval.tasks"):
    """The module of a registered eval, checked for the contract every eval keeps: `NAME` (its
    registry name), `VERSION` (an int, bumped when scoring changes), `OPTIONS` (the dataclass of
    its `eval.options.<name>` keys) and `evaluate(ctx, options)`."""
    target = EVALS.get(name, key=key)
    fn = getattr(target, "evaluate", target)  # an entry may name the module or its function
    module = importlib.import_module(fn.__module__)
    version, options = getattr(module, "VERSION", None), getattr(module, "OPTIONS", None)
    if not isinstance(version, int) or isinstance(version, bool):
        raise ConfigError(f"eval '{name}' ({module.__name__}): declares no VERSION; add `VERSION = 1` "
                          "(bump it whenever its prompt or scoring changes)")
    if not (isinstance(options, type) and dataclasses.is_dataclass(options)):
        raise ConfigError(f"eval '{name}' ({module.__name__}): declares no OPTIONS; add `OPTIONS = <its options "
                          "dataclass>` (an empty @dataclass when it takes none)")
    return module


def resolve(name: str):
    """The eval's `evaluate` function and its VERSION."""
    module = eval_module(name)
    target = EVALS.get(name)
    return getattr(target, "evaluate", target), module.VERSION


def build_options(name: str, options: dict | None, where: str = ""):
    """`eval.options.<name>` built into the eval's OPTIONS: a typo ("did you mean") or a value out
    of range is refused with its dotted key, before anything trains or loads."""
    return build(eval_module(name).OPTIONS, options or {}, f"{where}eval.options.{name}")


def check_names(names: list[str]) -> None:
    for name in names:
        if name not in EVALS:
            raise ConfigError(f"unknown eval '{name}'{did_you_mean(name, EVALS.names())} "
                              f"(valid: {', '.join(EVALS.names())})")


def check_eval_config(cfg, where: str = "") -> None:
    """Every name in `eval.tasks` and every key of `eval.options` is a registered eval, and each
    eval's options build into its OPTIONS, so a typo is refused before training rather than
    skipped (or failed) after it."""
    for i, name in enumerate(cfg.tasks):
        if name not in EVALS:
            raise ConfigError(f"{where}eval.tasks[{i}]: unknown eval '{name}'{did_you_mean(name, EVALS.names())} "
                              f"(valid: {', '.join(EVALS.names())})")
    for key in cfg.options:
        if key not in EVALS:
            raise ConfigError(f"{where}eval.options.{key}: unknown eval '{key}'{did_you_mean(key, EVALS.names())} "
                              f"(valid: {', '.join(EVALS.names())})")
    for name in dict.fromkeys([*cfg.tasks, *cfg.options]):
        options = cfg.options.get(name)
        if options is not None and not isinstance(options, dict):
            raise ConfigError(f"{where}eval.options.{name}: expected a mapping of the eval's options, got {options!r}")
        build_options(name, options, where)
        check = getattr(importlib.import_module(resolve(name)[0].__module__), "check_options", None)
        if check is not None:  # an eval whose options name files or data configs checks them now
            check(dict(options or {}), where)


def run_evals(ctx: EvalContext, names: list[str], options: dict | None = None) -> list[EvalResult]:
    """Run each eval in isolation: one that raises is recorded as failed with why, the rest still run.

    Names are checked before anything runs (an unknown one is a ConfigError listing the valid
    ones). Results are written to `ctx.cell_dir/evals/<name>.json` when a cell folder is set.
    """
    check_names(names)
    options = options or {}
    results = []
    for name in names:
        results.append(run_isolated(ctx, name, lambda name=name: resolve(name), options.get(name)))
    return results


def parse_args(argv):
    p = argparse.ArgumentParser(prog="python -m evals.run", description=__doc__.splitlines()[0])
    p.add_argument("cell_dir", type=Path, help="a finished cell folder, results/<grid>/<cell>")
    p.add_argument("--evals", default=None, help="comma-separated eval names (default: the cell's eval.tasks); "
                   f"registered: {', '.join(EVALS.names())}")
    p.add_argument("--set", action="append", default=[], metavar="KEY=VALUE",
                   help="override an eval.* key, e.g. --set eval.options.blimp.limit=100 (repeatable)")
    p.add_argument("--device", default="auto", help="cpu, cuda, or auto (cuda when available)")
    return p.parse_args(argv)


def main(argv=None) -> int:
    from research.config import parse_overrides

    args = parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    overrides = parse_overrides(args.set)
    names = [n.strip() for n in args.evals.split(",") if n.strip()] if args.evals is not None else None
    if names is not None:
        check_names(names)  # before the (slow) model load
    device = args.device
    if device == "auto":
        import torch

        device = "cuda" if torch.cuda.is_available() else "cpu"
    ctx, options = cell_context(args.cell_dir, device, overrides, check=check_eval_config)
    names = names if names is not None else list(ctx.config.eval.tasks)
    if not names:
        raise ConfigError(f"{args.cell_dir}: the cell lists no eval.tasks; pass --evals "
                          f"(valid: {', '.join(EVALS.names())})")
    results = run_evals(ctx, names, options)
    for r in results:
        shown = ", ".join(f"{k}={v:.4g}" for k, v in list(r.metrics.items())[:8])
        print(f"{r.name}: {r.status}" + (f" ({r.reason})" if r.reason else "") + (f"  {shown}" if shown else ""))
    return 0 if all(r.status == "ok" for r in results) else 1


if __name__ == "__main__":
    sys.exit(run_main(main))
