"""The token cache: each (data, tokenizer) config is tokenized once into flat arrays on disk.

Cells that share data and tokenizer (every seed, every model size) reuse the same folder
`<cache>/tokens/<key>/`: `{train,val,test}.npy` (uint16 when the vocabulary allows), the trained
tokenizer, and `meta.json` (bytes, documents and tokens per split, cleaning counts, the tokenizer's
training sample, the inputs' identities, the build's wall time and peak memory). The key covers
the config and each input file's size, modification time and sampled-block hash, so a file
rewritten in place is tokenized again. The folder is built under a temporary name and renamed into
place under a lock, so a killed run never leaves half a cache and two runners build it once.
"""

from __future__ import annotations

import contextlib
import dataclasses
import hashlib
import json
import os
import shutil
import sys
import tempfile
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from research.errors import DataError
from research.io import atomic_write_json

#: bump when tokenization or cleaning changes meaning, so stale caches are not reused
CACHE_VERSION = 2


@dataclass
class TokenData:
    tokenizer: object
    splits: dict[str, np.ndarray]  # name -> flat token stream (memory-mapped), EOT after each doc
    meta: dict
    path: Path
    #: split -> uint8 mask parallel to its tokens (1: may be scored), for corpora with context spans
    scored: dict[str, np.ndarray] = field(default_factory=dict)

    def bytes_per_token(self, split: str) -> float:
        return self.meta["splits"][split]["bytes"] / max(1, self.meta["splits"][split]["tokens"])


def cache_key(data_cfg, tok_cfg, streams=None) -> str:
    """Config (less `num_proc`, which cannot change the output) plus each input file's identity."""
    from research.data.sources import open_streams
    from research.data.streams import file_identity

    streams = streams if streams is not None else open_streams(data_cfg)
    data = {k: v for k, v in dataclasses.asdict(data_cfg).items() if k != "num_proc"}
    blob = json.dumps(
        {"v": CACHE_VERSION, "data": data, "tokenizer": dataclasses.asdict(tok_cfg),
         "inputs": [file_identity(p) for p in streams.files()]},
        sort_keys=True,
    )
    return hashlib.sha256(blob.encode()).hexdigest()[:16]


#: inputs above this size are built in a child process, so the parent trains at a cached run's memory
CHILD_BUILD_BYTES = 64 << 20


def prepare_tokens(data_cfg, tok_cfg, cache_root: Path, progress: bool = False, build: bool = True) -> TokenData:
    """Open the cached tokens of a (data, tokenizer) config, building them first if needed.

    Concurrent callers (two runners, two SLURM tasks) take a lock on `<key>.lock`: one builds,
    the others wait and open its result. The build writes into a temporary folder renamed into
    place, so a killed build never leaves a cache that looks finished. `build=False` refuses to
    tokenize (a training job that should start from a cache prepared beforehand).
    """
    from research.data.sources import open_streams

    streams = open_streams(data_cfg)
    folder = Path(cache_root) / "tokens" / cache_key(data_cfg, tok_cfg, streams)
    if not (folder / "meta.json").exists():
        if not build:
            raise DataError(f"{folder}: no token cache for data.source '{data_cfg.source}' ({data_cfg.path}); "
                            "build it first with python -m ablations.prepare GRID.yaml")
        folder.parent.mkdir(parents=True, exist_ok=True)
        with _locked(folder.with_suffix(".lock")):
            if not (folder / "meta.json").exists():
                size = sum(p.nbytes for p in (*streams.train, *(streams.val or []), *(streams.test or [])))
                if size > CHILD_BUILD_BYTES:
                    _build_in_child(data_cfg, tok_cfg, folder, progress)
                else:
                    build_cache(data_cfg, tok_cfg, folder, progress, streams)
    return open_tokens(folder)


@contextlib.contextmanager
def _locked(path: Path):
    import fcntl

    with open(path, "a") as f:
        fcntl.flock(f, fcntl.LOCK_EX)  # released when the file closes, or when its process dies
        try:
            yield
        finally:
            fcntl.flock(f, fcntl.LOCK_UN)


def _build_in_child(data_cfg, tok_cfg, folder: Path, progress: bool) -> None:
    import multiprocessing
    from concurrent.futures import ProcessPoolExecutor
    from concurrent.futures.process import BrokenProcessPool

    with ProcessPoolExecutor(1, mp_context=multiprocessing.get_context("spawn")) as ex:
        try:
            ex.submit(build_cache, data_cfg, tok_cfg, folder, progress).result()
        except BrokenProcessPool:
            raise DataError(f"{folder}: the process building the token cache died (out of memory?); lower "
                            "data.num_proc or tokenizer.train_bytes, or build on a machine with more memory") from None


def open_tokens(folder: Path) -> TokenData:
    from research.tokenizers import load_tokenizer

    meta = json.loads((folder / "meta.json").read_text())
    splits = {s: np.load(folder / f"{s}.npy", mmap_mode="r") for s in meta["splits"]}
    scored = {s: np.load(folder / f"{s}.scored.npy", mmap_mode="r") for s in meta["splits"]
              if (folder / f"{s}.scored.npy").exists()}
    return TokenData(load_tokenizer(folder / "tokenizer"), splits, meta, folder, scored)


def build_cache(data_cfg, tok_cfg, folder: Path, progress: bool = False, streams=None) -> None:
    """Build into `.<key>.<random>/` next to `folder`, then rename it into place (the caller holds the lock)."""
    from research.data.build import build_into

    for stale in folder.parent.glob(f".{folder.name}.*"):  # left by a killed build: we hold the lock
        shutil.rmtree(stale, ignore_errors=True)
    tmp = Path(tempfile.mkdtemp(dir=folder.parent, prefix=f".{folder.name}."))
    try:
        meta = build_into(data_cfg, tok_cfg, tmp, streams, progress_bars if progress else None)
        if streams is None:
            from research.data.sources import open_streams

            streams = open_streams(data_cfg)
        from research.data.streams import file_identity

        meta["inputs"] = [file_identity(p) for p in streams.files()]
        atomic_write_json(tmp / "meta.json", meta)
        os.rename(tmp, folder)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise


def progress_bars(stage: str, total: int):
    """A tqdm bar on stderr (bytes, MB/s, ETA) for one stage of a build."""
    from tqdm import tqdm

    bar = tqdm(total=total or None, desc=stage, unit="B", unit_scale=True,
               file=sys.stderr, mininterval=1.0, dynamic_ncols=True)

    def update(n: int) -> None:
        bar.update(n)
        if total and bar.n >= total:
            bar.close()

    return update
