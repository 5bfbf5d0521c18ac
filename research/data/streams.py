"""Documents read as a stream, one input file at a time, never the whole corpus at once.

A source (research.data.sources) describes its splits as lists of `Part`s; a part yields raw
documents lazily. Formats are a registry: plain text split on `data.separator`, JSON Lines, a JSON
array (llama2.c's `TinyStories_all_data/data*.json`, a list of `{"story": ...}`), and Parquet.
Text is read in 16 MiB blocks and split on the separator's bytes, so memory is one block plus
one document. A JSON array shard is parsed whole (one shard, not the corpus, is held).

Every problem in an input names the file (and the line or byte) and the fix, in one line.
"""

from __future__ import annotations

import gzip
import hashlib
import json
import os
import zlib
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path

from research.data.spans import with_context
from research.errors import DataError
from research.registry import Registry

BLOCK = 1 << 24

FORMATS = Registry(
    "data format",
    {
        "text": "research.data.streams:text_docs",
        "jsonl": "research.data.streams:jsonl_docs",
        "json": "research.data.streams:json_docs",
        "parquet": "research.data.streams:parquet_docs",
    },
)


@dataclass
class Part:
    """One input of a split: a file read by its format, or documents made in memory."""

    name: str  # the file (or what made the documents), as errors and progress show it
    docs: Callable[[], Iterator[str]]
    path: Path | None = None
    nbytes: int = 0  # input size for progress and the tokenizer sample (0 when unknown)


@dataclass
class DocStreams:
    """A source's splits. `val` None: held out of train by a seeded share of documents."""

    train: list[Part]
    val: list[Part] | None = None
    test: list[Part] | None = None
    meta: dict = field(default_factory=dict)

    def files(self) -> list[Path]:
        return [p.path for parts in (self.train, self.val or [], self.test or []) for p in parts if p.path]


def memory_part(name: str, docs: list[str]) -> Part:
    return Part(name, lambda: iter(docs), None, sum(len(d) for d in docs))


def format_of(path: Path, fmt: str) -> str:
    if fmt != "auto":
        return fmt
    name = path.name[:-3] if path.name.endswith(".gz") else path.name
    if name.endswith(".jsonl"):
        return "jsonl"
    if name.endswith(".json"):  # llama2.c's shards are one JSON array; other .json files are JSON Lines
        with _open(path) as f:
            head = f.read(64).lstrip()
        return "json" if head[:1] == b"[" else "jsonl"
    if name.endswith(".parquet"):
        return "parquet"
    return "text"


def file_part(path: Path, cfg) -> Part:
    path = Path(path)
    if not path.exists():
        raise DataError(f"{path}: no such file (check data.path)")
    size = path.stat().st_size
    if size == 0:
        raise DataError(f"{path}: empty file (0 bytes); re-download it or remove it from data.path")
    reader = FORMATS.get(format_of(path, cfg.format), key="data.format")
    return Part(str(path), lambda: reader(path, cfg), path, size)


def _open(path: Path):
    return gzip.open(path, "rb") if path.name.endswith(".gz") else open(path, "rb")


def _decode(raw: bytes, path: Path, cfg, where: str) -> str:
    try:
        return raw.decode("utf-8")
    except UnicodeDecodeError as e:
        if cfg.clean.invalid_utf8 == "replace":
            return raw.decode("utf-8", errors="replace")
        raise DataError(f"{path}: invalid UTF-8 in {where} (byte {e.start} of it: {raw[e.start:e.start + 4]!r}); "
                        "fix the file or set data.clean.invalid_utf8: replace") from None


def _blocks(path: Path) -> Iterator[bytes]:
    try:
        with _open(path) as f:
            while block := f.read(BLOCK):
                yield block
    except (EOFError, gzip.BadGzipFile, zlib.error) as e:
        raise DataError(f"{path}: the gzip stream is cut short or damaged ({e}); re-download the file") from None


def text_docs(path: Path, cfg) -> Iterator[str]:
    """Text split on the separator's UTF-8 bytes (the same documents as splitting the decoded text)."""
    if not cfg.separator:  # one document: read whole
        yield _decode(b"".join(_blocks(path)), path, cfg, "the file")
        return
    sep = cfg.separator.encode("utf-8")
    carry, n = b"", 0
    for block in _blocks(path):
        pieces = (carry + block).split(sep)
        carry = pieces.pop()
        for piece in pieces:
            n += 1
            yield _decode(piece, path, cfg, f"document {n}")
    yield _decode(carry, path, cfg, f"document {n + 1}")


def _lines(path: Path) -> Iterator[bytes]:
    carry = b""
    for block in _blocks(path):
        lines = (carry + block).split(b"\n")
        carry = lines.pop()
        yield from lines
    if carry:
        yield carry


def _field(row, path: Path, where: str, cfg) -> str:
    if isinstance(row, str):
        return row
    if not isinstance(row, dict) or cfg.text_field not in row:
        raise DataError(f"{path}{where}: no field '{cfg.text_field}' (set data.text_field)")
    return row[cfg.text_field]


def jsonl_docs(path: Path, cfg) -> Iterator[str]:
    for n, raw in enumerate(_lines(path), 1):
        line = _decode(raw, path, cfg, f"line {n}")
        if not line.strip():
            continue
        try:
            row = json.loads(line)
        except json.JSONDecodeError as e:
            raise DataError(f"{path}:{n}: not valid JSON ({e.msg}); a cut-off last line means a truncated "
                            "download: re-download the file or delete that line") from None
        text = _field(row, path, f":{n}", cfg)
        yield with_context(row, text, cfg.context_field) if isinstance(row, dict) else text


def json_docs(path: Path, cfg) -> Iterator[str]:
    """One JSON array per shard (llama2.c's TinyStories): parsed whole, so memory is one shard."""
    text = _decode(b"".join(_blocks(path)), path, cfg, "the file")
    try:
        rows = json.loads(text)
    except json.JSONDecodeError as e:
        raise DataError(f"{path}: not valid JSON at line {e.lineno} column {e.colno} ({e.msg}); the shard looks "
                        "truncated: re-download it or remove it from the folder") from None
    del text
    if not isinstance(rows, list):
        raise DataError(f"{path}: expected a JSON array of documents (as llama2.c's data*.json), "
                        f"got {type(rows).__name__}; set data.format: jsonl for one object per line")
    for i, row in enumerate(rows):
        yield _field(row, path, f" item {i}", cfg)


def parquet_docs(path: Path, cfg) -> Iterator[str]:
    import pyarrow.parquet as pq

    try:
        pf = pq.ParquetFile(path)
    except Exception as e:
        raise DataError(f"{path}: not a readable Parquet file ({e}); re-download it") from None
    if cfg.text_field not in pf.schema_arrow.names:
        raise DataError(f"{path}: no column '{cfg.text_field}' (set data.text_field; columns: {pf.schema_arrow.names})")
    for batch in pf.iter_batches(batch_size=1024, columns=[cfg.text_field]):
        for t in batch.column(0).to_pylist():
            yield str(t)


# -- file identity --------------------------------------------------------------------------------

#: blocks hashed per file: the first, the last and evenly spaced ones between (64 KiB each)
SAMPLED_BLOCKS, SAMPLED_BLOCK = 16, 1 << 16


def file_identity(path: Path) -> dict:
    """Size, modification time and a SHA-256 of 16 sampled 64 KiB blocks (1 MiB read, any file size).

    A file rewritten in place changes its mtime (and usually its size and sampled bytes), so the
    token cache key changes and the cache is rebuilt. Hashing sampled blocks instead of the whole
    file keeps a cached start at milliseconds for a 2 GB corpus.
    """
    st = path.stat()
    h = hashlib.sha256()
    with open(path, "rb") as f:
        if st.st_size <= SAMPLED_BLOCKS * SAMPLED_BLOCK:
            h.update(f.read())
        else:
            step = (st.st_size - SAMPLED_BLOCK) // (SAMPLED_BLOCKS - 1)
            for i in range(SAMPLED_BLOCKS):
                f.seek(i * step)
                h.update(f.read(SAMPLED_BLOCK))
    return {"path": str(path.resolve()), "size": st.st_size, "mtime_ns": st.st_mtime_ns,
            "sampled_sha256": h.hexdigest()[:16]}


def free_bytes(folder: Path) -> int:
    st = os.statvfs(folder)
    return st.f_bavail * st.f_frsize
