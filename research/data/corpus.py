"""The cleaned text of one data config, split into documents."""

from __future__ import annotations

from dataclasses import dataclass, field

#: Marks the end of a document's context span: the text before it is input that
#: `train.loss_on: continuation` does not score. Tokenization encodes the two parts separately and
#: drops the mark (research.data.spans), so no model ever sees it. A private-use character: no
#: corpus text uses it.
CONTEXT_END = "\ue000"


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
