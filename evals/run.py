"""`python -m evals.run CELL_DIR`: run registered evals on a finished cell and store their results.

    python -m evals.run results/demo/<cell>                         # the cell's own eval.tasks
    python -m evals.run results/demo/<cell> --evals hellaswag,blimp
    python -m evals.run results/demo/<cell> --evals hellaswag --set eval.options.hellaswag.path=hs.jsonl

Each eval writes `<cell>/evals/<name>.json` (evals.base.EvalResult), so the grid summary gains its
`<name>/<metric>` columns. The grid runner calls `run_evals` the same way right after training.
"""

from __future__ import annotations

import argparse
import importlib
import logging
import sys
import time
from pathlib import Path

from evals import EVALS
from evals.base import EvalContext, EvalResult, write_result
from research.errors import ConfigError, UserError, did_you_mean, run_main

log = logging.getLogger(__name__)


def resolve(name: str):
    """The eval's `evaluate` function and its VERSION (0 when the module declares none)."""
    target = EVALS.get(name, key="--evals / eval.tasks")
    fn = getattr(target, "evaluate", target)  # an entry may name the module or its function
    module = importlib.import_module(fn.__module__)
    return fn, getattr(module, "VERSION", 0)


def check_names(names: list[str]) -> None:
    for name in names:
        if name not in EVALS:
            raise ConfigError(f"unknown eval '{name}'{did_you_mean(name, EVALS.names())} "
                              f"(valid: {', '.join(EVALS.names())})")


def check_eval_config(cfg, where: str = "") -> None:
    """Every name in `eval.tasks` and every key of `eval.options` is a registered eval, so a typo
    is refused before training rather than skipped after it."""
    for i, name in enumerate(cfg.tasks):
        if name not in EVALS:
            raise ConfigError(f"{where}eval.tasks[{i}]: unknown eval '{name}'{did_you_mean(name, EVALS.names())} "
                              f"(valid: {', '.join(EVALS.names())})")
    for key in cfg.options:
        if key not in EVALS:
            raise ConfigError(f"{where}eval.options.{key}: unknown eval '{key}'{did_you_mean(key, EVALS.names())} "
                              f"(valid: {', '.join(EVALS.names())})")


def run_evals(ctx: EvalContext, names: list[str], options: dict | None = None) -> list[EvalResult]:
    """Run each eval in isolation: one that raises is recorded as failed with why, the rest still run.

    Names are checked before anything runs (an unknown one is a ConfigError listing the valid
    ones). Results are written to `ctx.cell_dir/evals/<name>.json` when a cell folder is set.
    """
    check_names(names)
    options = options or {}
    results = []
    for name in names:
        started = time.time()
        version = 0
        try:
            fn, version = resolve(name)
            result = fn(ctx, dict(options.get(name) or {}))
        except Exception as e:  # isolation is the point: any failure becomes this eval's status
            if isinstance(e, UserError):
                reason = str(e)
            else:
                reason = f"{type(e).__name__}: {e}"
                log.exception("eval %s failed", name)
            result = EvalResult(name, version, status="failed", reason=reason.splitlines()[0] if reason else None)
        result.details.setdefault("wall_s", round(time.time() - started, 3))
        if result.status == "ok":
            log.info("eval %s: %s", name, {k: round(v, 4) for k, v in list(result.metrics.items())[:6]})
        else:
            log.warning("eval %s %s: %s", name, result.status, result.reason)
        if ctx.cell_dir is not None:
            write_result(ctx.cell_dir, result)
        results.append(result)
    return results


def cell_context(cell_dir: Path, device: str, overrides: dict) -> tuple[EvalContext, dict]:
    """Load a cell and build its EvalContext; `overrides` are dotted `eval.*` keys (--set)."""
    from research.checkpoint import load_cell, load_run_config
    from research.config import RunConfig, set_dotted
    from research.data import load_corpus

    raw = load_run_config(cell_dir).to_dict()
    for key, value in overrides.items():
        if not key.startswith("eval."):
            raise ConfigError(f"--set {key}: only eval.* keys can change after training")
        set_dotted(raw, key, value)
    cfg = RunConfig.from_dict(raw)  # every range checked before the (slow) model load
    check_eval_config(cfg.eval)
    cell = load_cell(cell_dir, device=device)
    corpus_cache: dict = {}

    def corpus():
        if "corpus" not in corpus_cache:
            corpus_cache["corpus"] = load_corpus(cfg.data)
        return corpus_cache["corpus"]

    def tokens(split: str):
        docs = corpus().split(split)  # KeyError when the corpus has no such split
        return cell.tokenizer.encode_docs(docs)

    ctx = EvalContext(model=cell.model, tokenizer=cell.tokenizer, config=cfg, device=device, cell_dir=Path(cell_dir),
                      load_corpus=corpus, cache_dir=Path(cell_dir).resolve().parent.parent / "_cache",
                      load_tokens=tokens)
    return ctx, cfg.eval.options


def parse_args(argv):
    p = argparse.ArgumentParser(prog="python -m evals.run", description=__doc__.splitlines()[0])
    p.add_argument("cell_dir", type=Path, help="a finished cell folder, results/<grid>/<cell>")
    p.add_argument("--evals", default=None, help="comma-separated eval names (default: the cell's eval.tasks)")
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
    ctx, options = cell_context(args.cell_dir, device, overrides)
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
