"""The Rate page's API: blind pairwise ratings of stored stories (evals.human holds the pairs, the
ratings files and their statistics).

    GET  /api/rate/<grid>?rater=NAME   the rater's next pair not yet rated: {pair, prompt, left, right}
                                        (no cell names), or {done: true} when every pair is rated
    POST /api/rate/<grid>  {rater, pair, choices: {dimension: left|right|tie}, note?}

Pairs compare cells of different configurations (the axis values recorded in grid.json), so seeds
of one configuration are not rated against each other.
"""

from __future__ import annotations

import threading
import time
from http import HTTPStatus
from pathlib import Path

from ablations import records
from app.web import NAME, ApiError
from evals import human
from paper.labels import canonical
from research.errors import UserError

MAX_NOTE = 2000  # characters
MAX_RATER = 64


class Rating:
    """The rating side of `App` (needs `grid_dir`)."""

    def __init__(self):
        self._rate_lock = threading.Lock()  # check "not rated yet" and append as one step

    def _pairs(self, grid: str) -> tuple[Path, list[human.Pair]]:
        grid_dir = self.grid_dir(grid)
        try:
            spec = records.read_grid(grid_dir, required=False) or {}
        except UserError:
            spec = {}
        listed = [c for c in spec.get("cells", []) if isinstance(c, dict) and NAME.fullmatch(str(c.get("id", "")))]
        cells = {c["id"]: grid_dir / c["id"] for c in listed
                 if records.cell_status(grid_dir / c["id"]) == "done"}
        groups = {c["id"]: canonical(c.get("axes", {})) for c in listed}
        return grid_dir, human.make_pairs(cells, groups)

    @staticmethod
    def _rater(rater) -> str:
        if not isinstance(rater, str) or len(rater) > MAX_RATER or not NAME.fullmatch(rater):
            raise ApiError(HTTPStatus.BAD_REQUEST, f"rater {rater!r}: give a name of letters, digits, '.', '_', "
                                                   f"'-' (at most {MAX_RATER} characters)")
        return rater

    def next_pair(self, grid: str, rater: str) -> dict:
        rater = self._rater(rater)
        grid_dir, pairs = self._pairs(grid)
        if not pairs:
            raise ApiError(HTTPStatus.CONFLICT, f"grid '{grid}' has no two finished cells of different "
                                                "configurations with stories on a common prompt "
                                                "(run the generation eval)")
        rated = {r.get("pair") for r in human.read_ratings(human.ratings_path(grid_dir, rater))}
        todo = [p for p in human.order_for(rater, pairs) if p.key not in rated]
        base = {"grid": grid, "rater": rater, "rated": len(pairs) - len(todo), "total": len(pairs),
                "dimensions": list(human.DIMENSIONS)}
        if not todo:
            return {**base, "done": True}
        pair = todo[0]
        left, right = pair.sides(rater)
        return {**base, "done": False, "pair": pair.key, "prompt": pair.prompt,
                "left": left.story.completion, "right": right.story.completion}

    def rate(self, grid: str, body: dict) -> dict:
        rater = self._rater(body.get("rater"))
        choices, note = body.get("choices"), body.get("note") or ""
        if not isinstance(choices, dict) or set(choices) != set(human.DIMENSIONS) or \
                any(v not in human.CHOICES for v in choices.values()):
            raise ApiError(HTTPStatus.BAD_REQUEST, f"choices: pick one of {', '.join(human.CHOICES)} for each of "
                                                   f"{', '.join(human.DIMENSIONS)}")
        if not isinstance(note, str) or len(note) > MAX_NOTE:
            raise ApiError(HTTPStatus.BAD_REQUEST, f"note: text of at most {MAX_NOTE} characters")
        grid_dir, pairs = self._pairs(grid)
        pair = next((p for p in pairs if p.key == body.get("pair")), None)
        if pair is None:
            raise ApiError(HTTPStatus.NOT_FOUND, f"pair {body.get('pair')!r} is not a pair of grid '{grid}'")
        left, right = pair.sides(rater)
        path = human.ratings_path(grid_dir, rater)
        with self._rate_lock:
            if any(r.get("pair") == pair.key for r in human.read_ratings(path)):
                raise ApiError(HTTPStatus.CONFLICT, f"{rater} has already rated this pair")
            human.append_rating(path, {
                "rater": rater, "pair": pair.key, "prompt": pair.prompt, "time": time.time(),
                "left": {"cell": left.cell, "sample": left.sample},
                "right": {"cell": right.cell, "sample": right.sample},
                "choices": {d: choices[d] for d in human.DIMENSIONS}, "note": note})
        return {"ok": True, "pair": pair.key}
