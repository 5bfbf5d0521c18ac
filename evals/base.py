"""What every eval receives and returns.

An eval is a module with `NAME`, `VERSION` and `evaluate(ctx, options) -> EvalResult`. Results
are written to the cell's folder through `research.cell` (`evals/<name>.json`); the grid summary
turns `metrics` into columns named `<name>/<metric>`. A result whose status is not "ok" keeps
its reason, so tables show the metric as missing (with why), never as zero.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from research import cell


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
