"""Cross-corpus loss: one cell scored on the validation split of several corpora, in bits per byte.

Dataset-quality experiments train one model on each corpus and score every model on every corpus
(the train x eval matrix of `ablations/grids/dataset_quality.yaml`). Cells with different
tokenizers (a char vocabulary fitted on PTB, another on Shakespeare) only compare per byte, so the
unit is bits per UTF-8 byte.

    eval:
      tasks: [cross_corpus]
      options:
        cross_corpus:
          corpora:                       # name -> a data config, checked like the cell's own `data`
            ptb: {source: ptb, path: ~/data/ptb}
            shakespeare: {source: shakespeare}
          max_bytes: 20000               # score the first 20,000 bytes of each validation split

For each corpus the validation documents are taken in order until `max_bytes` UTF-8 bytes (the
last one cut at a character boundary; every cell scores the same text), each closed by the
end-of-text token as in training, and the stream starts from end-of-text, so every token
including the first is predicted. Bytes are the documents' UTF-8 bytes plus 1 per end-of-text
(a cut last document has no end-of-text and is not charged one). The loss is
`research.evaluation.split_loss` with the cell's training sequence length (recurrent models
carry their state along the stream), so a cell scored on its own corpus reproduces its `val_bpb`
up to the byte cap.

Text the tokenizer cannot encode is scored, not dropped: a character (or word) outside the
cell's vocabulary becomes `<unk>`, whose probability the model has to predict like any token.
Each such token stands for at least one byte, so the figure stays a fair charge per byte, but a
model never trained on `<unk>` pays a high price for it. `<name>_unk_share` (share of the
corpus's tokens that are `<unk>`) says how much of a number comes from unencodable text, and
`details.<name>.unseen` lists the unseen characters. A corpus that cannot be loaded (file gone)
is recorded in `details.<name>.error` and counted in `n_failed`; the others are still scored.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from types import SimpleNamespace

import numpy as np

from evals.base import EvalContext, EvalResult
from research.checks import ranged
from research.config import DataConfig, build
from research.errors import ConfigError, UserError

NAME = "cross_corpus"
VERSION = 1
MAX_UNSEEN_LISTED = 20


@dataclass
class CrossCorpusOptions:
    # name -> data config (the keys of the cell's own `data` section)
    corpora: dict[str, dict] = ranged(factory=dict, free="each corpus is checked as a data config")
    max_bytes: int | None = ranged(None, ge=1)  # UTF-8 bytes scored per corpus; None: the whole split
    batch_size: int = ranged(16, ge=1)

    def validate(self) -> None:
        if not self.corpora:
            raise ValueError("corpora: name at least one corpus, e.g. corpora: {ptb: {source: ptb, path: DIR}}")


OPTIONS = CrossCorpusOptions


def check_options(options: dict, where: str = "") -> CrossCorpusOptions:
    """The options and every corpus's data config, checked before training (one line per problem)."""
    from research.checks import check_runnable

    opts = build(CrossCorpusOptions, options or {}, f"{where}eval.options.{NAME}")
    for name, raw in opts.corpora.items():
        key = f"{where}eval.options.{NAME}.corpora.{name}"
        data = build(DataConfig, raw if isinstance(raw, dict) else _not_mapping(key, raw), key)
        if data.path is not None:  # the same file checks as the cell's own data
            check_runnable(SimpleNamespace(data=data, train=SimpleNamespace(logger="csv")), key)
    return opts


def _not_mapping(key: str, raw) -> dict:
    raise ConfigError(f"{key}: expected a data config mapping such as {{source: ptb, path: DIR}}, got {raw!r}")


def take_bytes(docs: list[str], max_bytes: int | None) -> tuple[list[str], bool]:
    """Documents in order up to `max_bytes` UTF-8 bytes (+1 per closing end-of-text); the last cut
    at a character boundary. Returns (docs, whether the last one was cut)."""
    if max_bytes is None:
        return list(docs), False
    out, used = [], 0
    for doc in docs:
        size = len(doc.encode("utf-8"))
        if used + size + 1 <= max_bytes:
            out.append(doc)
            used += size + 1
            continue
        room = max_bytes - used
        if room > 0:
            piece = doc.encode("utf-8")[:room].decode("utf-8", errors="ignore")
            if piece:
                out.append(piece)
                return out, True
        break
    return out, False


def stream(tokenizer, docs: list[str], cut: bool) -> np.ndarray:
    """EOT, doc, EOT, doc, EOT ... (no EOT after a cut last document)."""
    body = tokenizer.encode_docs(docs)
    if cut and len(body):
        body = body[:-1]
    return np.concatenate([np.array([tokenizer.eot_id], dtype=body.dtype), body])


def unseen_characters(tokenizer, docs: list[str]) -> list[str]:
    """Characters of `docs` a char tokenizer has no id for (empty for other tokenizers)."""
    stoi = getattr(tokenizer, "stoi", None)
    if getattr(tokenizer, "kind", "") != "char" or stoi is None:
        return []
    seen: set[str] = set()
    for d in docs:
        seen.update(d.lower() if tokenizer.lowercase else d)
    return sorted(c for c in seen if c not in stoi)


def score_corpus(ctx: EvalContext, data: DataConfig, opts: CrossCorpusOptions, seq_len: int) -> dict:
    from research.data import load_corpus
    from research.evaluation import split_loss

    docs, cut = take_bytes(load_corpus(data).val, opts.max_bytes)
    if not docs:
        raise UserError("the validation split is empty")
    tok = ctx.tokenizer
    ids = stream(tok, docs, cut)
    res = split_loss(ctx.model, ids, seq_len, opts.batch_size, ctx.device, eot_id=tok.eot_id)
    n_bytes = sum(len(d.encode("utf-8")) for d in docs) + len(docs) - int(cut)
    predicted = len(ids) - 1  # every token after the leading end-of-text
    unk_id = getattr(tok, "unk_id", None)
    n_unk = int((ids[1:] == unk_id).sum()) if unk_id is not None else 0
    # recurrent models leave the last few tokens of the stream unscored: charge the mean loss to them
    bpb = res.loss * predicted / n_bytes / math.log(2)
    return {"bpb": bpb, "loss": res.loss, "tokens": predicted, "bytes": n_bytes, "docs": len(docs), "cut": cut,
            "unk_tokens": n_unk, "unk_share": n_unk / max(1, predicted),
            "unseen": unseen_characters(tok, docs)[:MAX_UNSEEN_LISTED]}


def evaluate(ctx: EvalContext, options: dict) -> EvalResult:
    opts = check_options(options)
    cfg = ctx.config
    seq_len = cfg.train.seq_len or ctx.model.block_size or 64
    metrics: dict[str, float] = {}
    details: dict = {"units": "bpb: bits per UTF-8 byte (+1 byte per end-of-text); unk_share: share of tokens "
                              "that are <unk> (text outside the cell's vocabulary, scored as <unk>)",
                     "max_bytes": opts.max_bytes, "seq_len": seq_len, "corpora": {}}
    failed = 0
    n_tokens = 0
    for name, raw in opts.corpora.items():
        data = build(DataConfig, raw, f"eval.options.{NAME}.corpora.{name}")
        try:
            row = score_corpus(ctx, data, opts, seq_len)
        except UserError as e:  # a corpus that cannot be read: counted, the others still scored
            failed += 1
            details["corpora"][name] = {"error": str(e).splitlines()[0]}
            continue
        metrics[f"{name}_bpb"] = row["bpb"]
        metrics[f"{name}_unk_share"] = row["unk_share"]
        details["corpora"][name] = {k: v for k, v in row.items() if k not in ("bpb", "unk_share")}
        n_tokens += row["tokens"]
    metrics["n_failed"] = float(failed)
    with_unk = [n for n, r in details["corpora"].items() if r.get("unk_tokens")]
    if with_unk:
        details["note"] = (f"{', '.join(with_unk)}: text outside the vocabulary scored as <unk> "
                           f"(see <name>_unk_share and details.corpora.<name>.unseen)")
    if failed == len(opts.corpora):
        first = next(iter(details["corpora"].values()))["error"]
        return EvalResult(NAME, VERSION, status="failed", details=details,
                          reason=f"no corpus could be scored (first: {first})")
    return EvalResult(NAME, VERSION, metrics=metrics, n=n_tokens, details=details)
