"""Prompting a trained cell: the model cache, the request's parameters, and the token stream
(Server-Sent Events, one `token` event per sampled token, then `done`)."""

from __future__ import annotations

import json
import logging
import math
import queue
import threading
import time
from collections import OrderedDict
from collections.abc import Iterator
from dataclasses import dataclass
from http import HTTPStatus
from pathlib import Path
from typing import Any

import torch

from ablations import records
from app.web import ApiError
from research.errors import UserError

log = logging.getLogger(__name__)

#: the most tokens one request may ask for; the page's default is 300
MAX_NEW_TOKENS = 4000


class ModelCache:
    """The last few loaded cells, most recent last. Keyed by the weights file and its mtime, so a
    cell trained again is reloaded rather than served stale."""

    def __init__(self, size: int):
        self.size = size
        self._items: OrderedDict[tuple, Any] = OrderedDict()
        self._lock = threading.Lock()

    def get(self, cell_dir: Path):
        from research.checkpoint import load_cell

        weights = records.weights_path(cell_dir)
        key = (str(cell_dir), weights.stat().st_mtime_ns if weights.exists() else 0)
        with self._lock:
            if key in self._items:
                self._items.move_to_end(key)
                return self._items[key]
            loaded = load_cell(cell_dir)  # raises UserError for an unfinished cell
            self._items[key] = loaded
            while len(self._items) > self.size:
                self._items.popitem(last=False)
            return loaded

    def __len__(self) -> int:
        return len(self._items)



@dataclass
class GenerateRequest:
    grid: str
    cell: str
    prompt: str = ""
    max_tokens: int = 300
    temperature: float = 0.8
    top_k: int | None = None
    top_p: float | None = None
    seed: int | None = None

    @classmethod
    def parse(cls, params: dict[str, Any]) -> GenerateRequest:
        unknown = set(params) - set(cls.__dataclass_fields__)
        if unknown:
            raise ApiError(HTTPStatus.BAD_REQUEST, f"unknown generate parameter '{sorted(unknown)[0]}'; "
                                                   f"expected {', '.join(cls.__dataclass_fields__)}")
        for key in ("grid", "cell"):
            if not params.get(key):
                raise ApiError(HTTPStatus.BAD_REQUEST, f"'{key}' is required: name the checkpoint as grid and cell")
        req = cls(grid=str(params["grid"]), cell=str(params["cell"]), prompt=str(params.get("prompt") or ""))
        req.max_tokens = _number(params, "max_tokens", int, req.max_tokens, 1, MAX_NEW_TOKENS)
        req.temperature = _number(params, "temperature", float, req.temperature, 0.0, 100.0)
        req.top_k = _number(params, "top_k", int, None, 0, None) or None  # 0 means no top-k filter
        top_p = _number(params, "top_p", float, None, 0.0, 1.0)
        req.top_p = top_p if top_p is not None and 0.0 < top_p < 1.0 else None  # 1 (or 0) means off
        req.seed = _number(params, "seed", int, None, 0, None)
        return req


def _number(params: dict, key: str, kind: type, default, low, high):
    value = params.get(key)
    if value is None or value == "":
        return default
    try:
        out = kind(value)
        if kind is int and isinstance(value, float) and value != out:
            raise ValueError
    except (TypeError, ValueError):
        raise ApiError(HTTPStatus.BAD_REQUEST, f"{key}: expected {kind.__name__}, got {value!r}") from None
    if (isinstance(out, float) and not math.isfinite(out)) or out < low or (high is not None and out > high):
        bounds = f"between {low} and {high}" if high is not None else f">= {low}"
        raise ApiError(HTTPStatus.BAD_REQUEST, f"{key}: must be {bounds}, got {value!r}")
    return out



class Generation:
    """The generation side of `App` (needs `cell_dir`)."""

    def __init__(self, cache_size: int):
        self.models = ModelCache(cache_size)

    def load(self, req: GenerateRequest):
        cell_dir = self.cell_dir(req.grid, req.cell)
        try:
            return self.models.get(cell_dir)
        except UserError as e:
            raise ApiError(HTTPStatus.CONFLICT, str(e)) from None

    def stream(self, loaded, req: GenerateRequest, emit) -> dict:
        """Sample from `loaded`, calling `emit(event, data)` per token and once at the end.

        Each token event carries the new suffix of the decoded completion (decoding the growing id
        list, not the lone token, keeps word-level spacing and multi-byte BPE pieces right). While the
        completion ends in U+FFFD (half a UTF-8 character) the text is held back for the next token.
        """
        from research.generate import generate

        tok = loaded.tokenizer
        prompt_ids = tok.encode(req.prompt) if req.prompt else []
        head = tok.decode(prompt_ids)
        ids: list[int] = []
        sent = ""
        gen = torch.Generator().manual_seed(req.seed) if req.seed is not None else None

        def on_token(token: int) -> None:
            nonlocal sent
            ids.append(token)
            full = tok.decode(prompt_ids + ids)
            text = full[len(head):] if full.startswith(head) else tok.decode(ids)
            if text.endswith("\ufffd"):
                emit("token", {"token": token, "delta": ""})
            elif text.startswith(sent):
                emit("token", {"token": token, "delta": text[len(sent):]})
                sent = text
            else:  # an earlier piece decoded differently once completed: resend the whole completion
                emit("token", {"token": token, "delta": "", "text": text})
                sent = text

        t0 = time.perf_counter()
        out = generate(loaded.model, prompt_ids, req.max_tokens, tok.eot_id, temperature=req.temperature,
                       top_k=req.top_k, top_p=req.top_p, generator=gen, stream=on_token)
        seconds = time.perf_counter() - t0
        final = tok.decode(prompt_ids + out)
        text = final[len(head):] if final.startswith(head) else tok.decode(out)
        done = {"tokens": len(out), "stop": "max_tokens" if len(out) >= req.max_tokens else "eot",
                "text": text, "prompt": head, "seconds": seconds,
                "tokens_per_s": len(out) / seconds if seconds > 0 else None}
        emit("done", done)
        return done



def event_stream(core: Generation, loaded, req: GenerateRequest) -> Iterator[str]:
    """Server-Sent Events from a sampling thread: each `token`, then `done` (or `error`). When the
    client goes away Starlette closes this generator, which stops the sampling at the next token."""
    events: queue.Queue = queue.Queue(maxsize=256)
    cancelled = threading.Event()

    def put(item) -> None:
        while not cancelled.is_set():  # a full queue (a reader that went away) must not block for ever
            try:
                return events.put(item, timeout=0.5)
            except queue.Full:
                continue
        raise GenerationCancelled

    def work() -> None:
        try:
            core.stream(loaded, req, lambda event, data: put((event, data)))
            put(None)
        except GenerationCancelled:
            return
        except Exception as e:  # noqa: BLE001 - the headers are sent: report in the stream, keep the server up
            log.exception("generation failed for %s/%s", req.grid, req.cell)
            try:
                put(("error", {"error": f"{type(e).__name__}: {e}".splitlines()[0]}))
                put(None)
            except GenerationCancelled:
                return

    threading.Thread(target=work, daemon=True, name="generate").start()
    try:
        while (item := events.get()) is not None:
            event, data = item
            yield f"event: {event}\ndata: {json.dumps(data)}\n\n"
    finally:
        cancelled.set()


class GenerationCancelled(Exception):
    """The client closed the stream: sampling stops."""

