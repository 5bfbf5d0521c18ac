"""What every eval receives and returns.

An eval is a module with `NAME`, `VERSION` and `evaluate(ctx, options) -> EvalResult`. Results
are written to the cell's folder through `research.cell` (`evals/<name>.json`); the grid summary
turns `metrics` into columns named `<name>/<metric>`. A result whose status is not "ok" keeps
its reason, so tables show the metric as missing (with why), never as zero.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from research import cell
from research.errors import ConfigError, UserError

log = logging.getLogger(__name__)


@dataclass
class EvalContext:
    model: Any  # a research.models.base.LanguageModel, in eval mode, on `device`
    tokenizer: Any  # a research.tokenizers.base.Tokenizer
    config: Any  # the cell's research.config.RunConfig
    device: str = "cpu"
    cell_dir: Path | None = None
    #: loads the cell's cleaned corpus (research.data.corpus.Corpus) on first use
    load_corpus: Callable[[], Any] | None = None
    #: shared scratch space (embedding caches, judge caches): <results>/_cache
    cache_dir: Path | None = None
    #: token streams of the cell's splits, flat numpy arrays with EOT between documents
    load_tokens: Callable[[str], Any] | None = None
    #: per split, the token cache's counts (meta.json): docs, tokens, UTF-8 bytes, words
    split_sizes: dict[str, dict] | None = None


@dataclass
class EvalResult:
    name: str
    version: int
    metrics: dict[str, float] = field(default_factory=dict)
    stderr: dict[str, float] = field(default_factory=dict)
    n: int = 0
    status: str = "ok"  # ok | skipped | failed
    reason: str | None = None
    details: dict[str, Any] = field(default_factory=dict)  # small extras kept in the JSON

    def to_dict(self) -> dict:
        return asdict(self)


def write_result(cell_dir: Path, result: EvalResult) -> Path:
    return cell.write_eval(cell_dir, result.name, result.to_dict())


def run_isolated(ctx: EvalContext, name: str, resolve: Callable[[], tuple[Callable, int]],
                 options: dict | None) -> EvalResult:
    """Run one eval so that nothing it raises escapes: a failure becomes its result (status
    "failed" with why), and the result is written to the cell when the context has one.
    `resolve()` gives the eval's function and VERSION (it may fail too: a missing package)."""
    started = time.time()
    version = 0
    try:
        fn, version = resolve()
        result = fn(ctx, dict(options or {}))
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
    return result


def cell_context(cell_dir: Path, device: str, overrides: dict,
                 check: Callable[[Any], None] | None = None) -> tuple[EvalContext, dict]:
    """Load a cell and build its EvalContext; `overrides` are dotted `eval.*` keys (--set).
    `check(cfg.eval)` runs before the (slow) model load (evals.run checks the eval names)."""
    from research.checkpoint import load_cell, load_run_config
    from research.config import RunConfig, set_dotted
    from research.data import load_corpus
    from research.data.tokens import prepare_tokens

    raw = load_run_config(cell_dir).to_dict()
    for key, value in overrides.items():
        if not key.startswith("eval."):
            raise ConfigError(f"--set {key}: only eval.* keys can change after training")
        set_dotted(raw, key, value)
    cfg = RunConfig.from_dict(raw)  # every range checked before the (slow) model load
    if check is not None:
        check(cfg.eval)
    loaded = load_cell(cell_dir, device=device)
    corpus_cache: dict = {}
    cache_dir = Path(cell_dir).resolve().parent.parent / "_cache"

    def corpus():
        if "corpus" not in corpus_cache:
            corpus_cache["corpus"] = load_corpus(cfg.data)
        return corpus_cache["corpus"]

    # the grid's token cache (memory-mapped), built again from the data if it was deleted
    cached = prepare_tokens(cfg.data, cfg.tokenizer, cache_dir)

    def tokens(split: str):
        return cached.splits[split]  # KeyError when the corpus has no such split

    ctx = EvalContext(model=loaded.model, tokenizer=loaded.tokenizer, config=cfg, device=device,
                      cell_dir=Path(cell_dir), load_corpus=corpus, cache_dir=cache_dir, load_tokens=tokens,
                      split_sizes=cached.meta["splits"])
    return ctx, cfg.eval.options
