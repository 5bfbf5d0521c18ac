"""The cleaned text of one data config, split into documents."""

from __future__ import annotations

from dataclasses import dataclass, field


@dataclass
class Corpus:
    train: list[str]
    val: list[str]
    test: list[str] | None = None
    #: facts recorded with the cell: source, cleaning counts, the grammar's exact entropy, ...
    meta: dict = field(default_factory=dict)

    def split(self, name: str) -> list[str]:
        docs = getattr(self, name)
        if docs is None:
            raise KeyError(f"this corpus has no {name} split")
        return docs
